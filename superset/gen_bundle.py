#!/usr/bin/env python3
"""Write the Superset dashboard bundle (Superset 4.1 export format) into this
directory: metadata.yaml, databases/, datasets/, charts/, dashboards/.  Two
dashboards: "Music streaming KPIs" (defined here) and "Sparkify engagement
and churn" (bundle_sparkify.py).  Both refresh every 30 seconds.

The YAML files are committed; this script is how they are made, so edit the
CHARTS list here and rerun it rather than editing the YAML by hand:

    python3 superset/gen_bundle.py [DIR]     (DIR: default this directory)

test/superset/run checks that the committed YAML is what this script makes.

Each chart carries the form data the dashboard renders (params) and a
query_context: the query its chart-data API runs (GET /api/v1/chart/<id>/data/).
The query_context has no post-processing, so the API returns plain rows:
the grouping columns and the metric, which test/superset/run compares with
SQL over the KPI tables.  Datasource ids inside a query_context are set after
import by superset/setup (an export cannot know them).

Needs PyYAML (the Superset virtualenv has it).
"""
import json
import os
import shutil
import uuid

import yaml

import bundle_sparkify

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = HERE          # where the bundle is written (argv[1] overrides)
NS = uuid.UUID("6f1c3c4e-6a8e-4a59-9a55-2f6a1d0c7b11")


def uid(name):
    return str(uuid.uuid5(NS, name))


DATABASE = {
    "database_name": "streamkpi",
    # host, port, database and password are set at import (superset/setup)
    "sqlalchemy_uri": "postgresql+psycopg2://streamkpi_reader:XXXXXXXXXX@127.0.0.1:5432/streamkpi",
    "cache_timeout": None,
    "expose_in_sqllab": True,
    "allow_run_async": False,
    "allow_ctas": False,
    "allow_cvas": False,
    "allow_dml": False,
    "allow_file_upload": False,
    "extra": {"allows_virtual_table_explore": True},
    "uuid": uid("database"),
    "version": "1.0.0",
}

# table -> (main temporal column, [(column, type, is_dttm)], {metric: (sql, label, d3format)})
DATASETS = {
    "daily_genre_kpis": (
        "day",
        [("day", "DATE", True), ("genre", "TEXT", False),
         ("listen_count", "BIGINT", False), ("unique_listeners", "BIGINT", False),
         ("total_listen_ms", "BIGINT", False),
         ("avg_listen_ms_per_user", "NUMERIC", False),
         ("updated_at", "TIMESTAMP WITH TIME ZONE", True)],
        {
            "listens": ("SUM(listen_count)", "Listens", ",d"),
            "unique_listeners": ("SUM(unique_listeners)", "Unique listeners", ",d"),
            "listening_hours": ("SUM(total_listen_ms) / 3600000.0", "Listening time (hours)", ",.1f"),
            "avg_listen_min_per_user": ("MAX(avg_listen_ms_per_user) / 60000.0",
                                        "Average listening time per listener (min)", ",.2f"),
        },
    ),
    "daily_genre_top_tracks": (
        "day",
        [("day", "DATE", True), ("genre", "TEXT", False), ("rank", "INTEGER", False),
         ("track_id", "TEXT", False), ("track_name", "TEXT", False),
         ("listen_count", "BIGINT", False)],
        {"listens": ("SUM(listen_count)", "Listens", ",d")},
    ),
    "daily_top_genres": (
        "day",
        [("day", "DATE", True), ("rank", "INTEGER", False), ("genre", "TEXT", False),
         ("listen_count", "BIGINT", False)],
        {"listens": ("SUM(listen_count)", "Listens", ",d")},
    ),
    # a virtual dataset: Superset refuses sub-queries in ad-hoc filters
    "trending_latest": (
        "window_start",
        [("window_size", "INTERVAL", False),
         ("window_start", "TIMESTAMP WITH TIME ZONE", True),
         ("region", "TEXT", False), ("rank", "INTEGER", False),
         ("window_end", "TIMESTAMP WITH TIME ZONE", True), ("track_id", "TEXT", False),
         ("plays", "BIGINT", False), ("skips", "BIGINT", False), ("likes", "BIGINT", False)],
        {"plays": ("SUM(plays)", "Plays", ",d")},
    ),
    "track_windows": (
        "window_start",
        [("window_size", "INTERVAL", False),
         ("window_start", "TIMESTAMP WITH TIME ZONE", True),
         ("track_id", "TEXT", False),
         ("window_end", "TIMESTAMP WITH TIME ZONE", True),
         ("total_listens", "BIGINT", False), ("unique_users", "BIGINT", False),
         ("avg_listen_ms", "NUMERIC", False)],
        {"listens": ("SUM(total_listens)", "Listens", ",d")},
    ),
    "daily_engagement": (
        "day",
        [("day", "DATE", True), ("dimension", "TEXT", False), ("value", "TEXT", False),
         ("streams", "BIGINT", False), ("skips", "BIGINT", False), ("likes", "BIGINT", False),
         ("unique_users", "BIGINT", False), ("skip_rate", "NUMERIC", False),
         ("like_rate", "NUMERIC", False), ("completion_rate", "NUMERIC", False),
         ("avg_listen_ms", "NUMERIC", False)],
        {
            "streams": ("SUM(streams)", "Streams", ",d"),
            "skip_rate": ("SUM(skips)::numeric / NULLIF(SUM(streams) + SUM(skips), 0)",
                          "Skip rate", ".1%"),
            "like_rate": ("SUM(likes)::numeric / NULLIF(SUM(streams), 0)", "Like rate", ".1%"),
            "completion_rate": ("SUM(completion_rate * streams) / NULLIF(SUM(streams), 0)",
                                "Completion rate", ".1%"),
        },
    ),
}

DATASETS.update(bundle_sparkify.DATASETS)

# datasets defined by SQL instead of a table of the same name
VIRTUAL = {**bundle_sparkify.VIRTUAL,
    "trending_latest": (
        "SELECT t.*\n"
        "  FROM streamkpi.trending t\n"
        " WHERE t.window_size = interval '5 minutes'\n"
        "   AND t.window_start = (SELECT max(l.window_start) FROM streamkpi.trending l\n"
        "                          WHERE l.window_size = interval '5 minutes')"
    ),
}

NO_FILTER = {"clause": "WHERE", "subject": "day", "operator": "TEMPORAL_RANGE",
             "comparator": "No filter", "expressionType": "SIMPLE"}


def eq_filter(col, val):
    return {"clause": "WHERE", "subject": col, "operator": "==", "comparator": val,
            "expressionType": "SIMPLE"}


def sql_filter(sql):
    return {"clause": "WHERE", "expressionType": "SQL", "sqlExpression": sql}


def query_filters(adhoc):
    """form-data adhoc filters -> (query filters, extras.where)"""
    filters, where = [], []
    for f in adhoc:
        if f["expressionType"] == "SQL":
            where.append("(%s)" % f["sqlExpression"])
        else:
            filters.append({"col": f["subject"], "op": f["operator"], "val": f["comparator"]})
    return filters, " AND ".join(where)


# The charts.  kind: timeseries (x = a temporal column, one metric, optional
# series column), category (x = a text column, one metric), pie, big_number,
# table (raw rows).
CHARTS = [
    dict(key="listens_total", name="Listens", kind="big_number", table="daily_genre_kpis",
         metric="listens", filters=[]),
    dict(key="listening_hours", name="Total listening time (hours)", kind="big_number",
         table="daily_genre_kpis", metric="listening_hours", filters=[]),
    dict(key="listens_by_genre", name="Listens by genre per day", kind="timeseries",
         viz="echarts_timeseries_bar", table="daily_genre_kpis", x="day", grain="P1D",
         metric="listens", series="genre", filters=[NO_FILTER], stack=True),
    dict(key="listeners_by_genre", name="Unique listeners by genre per day", kind="timeseries",
         viz="echarts_timeseries_line", table="daily_genre_kpis", x="day", grain="P1D",
         metric="unique_listeners", series="genre", filters=[NO_FILTER]),
    dict(key="avg_listening", name="Average listening time per listener (min) by genre",
         kind="timeseries", viz="echarts_timeseries_line", table="daily_genre_kpis", x="day",
         grain="P1D", metric="avg_listen_min_per_user", series="genre", filters=[NO_FILTER]),
    dict(key="top_tracks", name="Top tracks per genre", kind="table",
         table="daily_genre_top_tracks",
         columns=["day", "genre", "rank", "track_name", "track_id", "listen_count"],
         orderby=[["day", False], ["genre", True], ["rank", True]], filters=[NO_FILTER]),
    dict(key="top_genres", name="Top genres", kind="table", table="daily_top_genres",
         columns=["day", "rank", "genre", "listen_count"],
         orderby=[["day", False], ["rank", True]], filters=[NO_FILTER]),
    dict(key="trending", name="Now trending by region (latest 5-minute window)", kind="table",
         table="trending_latest",
         columns=["region", "rank", "track_id", "plays", "skips", "likes", "window_start"],
         orderby=[["region", True], ["rank", True]], filters=[]),
    dict(key="window_listens", name="Listens per 5-minute window", kind="timeseries",
         viz="echarts_timeseries_line", table="track_windows", x="window_start", grain=None,
         metric="listens", series=None,
         filters=[{**NO_FILTER, "subject": "window_start"},
                  sql_filter("window_size = interval '5 minutes'")]),
    dict(key="skip_rate_genre", name="Skip rate by genre", kind="category",
         table="daily_engagement", metric="skip_rate", dimension="genre", sort="metric"),
    dict(key="like_rate_subscription", name="Like rate by subscription", kind="category",
         table="daily_engagement", metric="like_rate", dimension="subscription", sort="metric"),
    dict(key="activity_hour", name="Activity by hour of day", kind="category",
         table="daily_engagement", metric="streams", dimension="hour", sort="x"),
    dict(key="activity_country", name="Activity by country", kind="category",
         table="daily_engagement", metric="streams", dimension="country", sort="metric"),
    dict(key="activity_device", name="Activity by device", kind="pie",
         table="daily_engagement", metric="streams", dimension="device"),
    dict(key="completion_device", name="Completion rate by device", kind="category",
         table="daily_engagement", metric="completion_rate", dimension="device", sort="metric"),
]

MUSIC_CHARTS = list(CHARTS)
CHARTS += bundle_sparkify.CHARTS

# dashboard rows: (chart key, width of 12)
LAYOUT = [
    [("listens_total", 3), ("listening_hours", 3), ("activity_device", 6)],
    [("listens_by_genre", 6), ("listeners_by_genre", 6)],
    [("avg_listening", 6), ("window_listens", 6)],
    [("top_tracks", 6), ("top_genres", 3), ("trending", 3)],
    [("skip_rate_genre", 6), ("like_rate_subscription", 3), ("completion_device", 3)],
    [("activity_hour", 6), ("activity_country", 6)],
]

# (title, slug, uuid name, layout); "now trending" moves without a reload
DASHBOARDS = [
    ("Music streaming KPIs", "music-streaming-kpis", "dashboard", LAYOUT),
    (bundle_sparkify.TITLE, bundle_sparkify.SLUG, "dashboard/sparkify", bundle_sparkify.LAYOUT),
]
REFRESH_SECONDS = 30


def chart_params_and_query(c):
    """(form data, query object) of a chart"""
    kind = c["kind"]
    fd = {"viz_type": None, "datasource": "__DATASOURCE__", "adhoc_filters": [],
          "extra_form_data": {}, "dashboards": []}
    q = {"extras": {"having": "", "where": ""}, "applied_time_extras": {},
         "annotation_layers": [], "url_params": {}, "custom_params": {},
         "custom_form_data": {}, "time_offsets": [], "post_processing": []}
    filters = list(c.get("filters", []))
    if "dimension" in c:
        filters = [eq_filter("dimension", c["dimension"])]
    fd["adhoc_filters"] = filters
    qf, where = query_filters(filters)
    q["filters"] = qf
    q["extras"]["where"] = where

    if kind == "big_number":
        fd.update(viz_type="big_number_total", metric=c["metric"], header_font_size=0.3,
                  subheader_font_size=0.125, y_axis_format="SMART_NUMBER",
                  time_format="smart_date")
        q.update(columns=[], metrics=[c["metric"]], orderby=[], row_limit=1,
                 series_limit=0, order_desc=True)
    elif kind == "timeseries":
        axis = {"columnType": "BASE_AXIS", "sqlExpression": c["x"], "label": c["x"],
                "expressionType": "SQL"}
        if c["grain"]:
            axis["timeGrain"] = c["grain"]
        series = [c["series"]] if c["series"] else []
        fd.update(viz_type=c["viz"], x_axis=c["x"], time_grain_sqla=c["grain"],
                  x_axis_sort_asc=True, x_axis_sort_series="name",
                  x_axis_sort_series_ascending=True, metrics=[c["metric"]], groupby=series,
                  order_desc=True, row_limit=10000, truncate_metric=True,
                  show_legend=True, legendType="scroll", legendOrientation="top",
                  rich_tooltip=True, tooltipTimeFormat="smart_date",
                  y_axis_format="SMART_NUMBER", x_axis_time_format="smart_date",
                  stack="Stack" if c.get("stack") else None, only_total=True,
                  markerEnabled=False, zoomable=False, comparison_type="values",
                  annotation_layers=[], forecastEnabled=False, color_scheme="supersetColors",
                  sort_series_type="sum", sort_series_ascending=False)
        q.update(columns=[axis] + series, metrics=[c["metric"]],
                 orderby=[[c["metric"], False]], row_limit=10000,
                 series_columns=series, series_limit=0, order_desc=True)
    elif kind == "category":
        x = c.get("x", "value")
        axis = {"columnType": "BASE_AXIS", "sqlExpression": x, "label": x,
                "expressionType": "SQL"}
        asc = c["sort"] == "x"
        sort_by = x if asc else c["metric"]
        fd.update(viz_type="echarts_timeseries_bar", x_axis=x, metrics=[c["metric"]],
                  groupby=[], x_axis_sort=sort_by, x_axis_sort_asc=asc,
                  row_limit=1000, truncate_metric=True, show_legend=False,
                  rich_tooltip=True, y_axis_format=DATASETS[c["table"]][2][c["metric"]][2],
                  orientation="vertical", order_desc=True, color_scheme="supersetColors",
                  only_total=True, annotation_layers=[], comparison_type="values",
                  x_axis_title_margin=15, y_axis_title_margin=15, zoomable=False)
        q.update(columns=[axis], metrics=[c["metric"]],
                 orderby=[[sort_by, asc]], row_limit=1000, series_columns=[],
                 series_limit=0, order_desc=True)
    elif kind == "pie":
        fd.update(viz_type="pie", groupby=["value"], metric=c["metric"], row_limit=100,
                  sort_by_metric=True, show_labels=True, labels_outside=True,
                  label_type="key_percent", show_legend=True, legendType="scroll",
                  legendOrientation="top", number_format="SMART_NUMBER", donut=True,
                  innerRadius=30, outerRadius=70, color_scheme="supersetColors",
                  show_labels_threshold=5, date_format="smart_date")
        q.update(columns=["value"], metrics=[c["metric"]], orderby=[[c["metric"], False]],
                 row_limit=100, series_limit=0, order_desc=True)
    elif kind == "table":
        fd.update(viz_type="table", query_mode="raw", all_columns=c["columns"],
                  order_by_cols=[json.dumps(o) for o in c["orderby"]],
                  row_limit=c.get("limit", 1000),
                  server_pagination=False, server_page_length=10, include_search=False,
                  show_cell_bars=True, color_pn=True, table_timestamp_format="smart_date",
                  percent_metrics=[], metrics=[], groupby=[], temporal_columns_lookup={})
        q.update(columns=c["columns"], metrics=[], orderby=c["orderby"],
                 row_limit=c.get("limit", 1000), series_limit=0, order_desc=True)
    else:
        raise ValueError(kind)
    return fd, q


def dump(path, obj):
    full = os.path.join(OUT, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        yaml.safe_dump(obj, f, sort_keys=False, allow_unicode=True, width=1000)


def main():
    for d in ("databases", "datasets", "charts", "dashboards"):
        shutil.rmtree(os.path.join(OUT, d), ignore_errors=True)
    dump("metadata.yaml", {"version": "1.0.0", "type": "Dashboard",
                           "timestamp": "2026-11-22T00:00:00+00:00"})
    dump("databases/streamkpi.yaml", DATABASE)

    for table, (dttm, columns, metrics) in DATASETS.items():
        dump("datasets/streamkpi/%s.yaml" % table, {
            "table_name": table, "main_dttm_col": dttm, "description": None,
            "default_endpoint": None, "offset": 0, "cache_timeout": None,
            "catalog": None, "schema": "streamkpi", "sql": VIRTUAL.get(table), "params": None,
            "template_params": None, "filter_select_enabled": True,
            "fetch_values_predicate": None, "extra": None, "normalize_columns": False,
            "always_filter_main_dttm": False, "uuid": uid("dataset/" + table),
            "metrics": [{"metric_name": m, "verbose_name": label, "metric_type": None,
                         "expression": sql, "description": None, "d3format": fmt,
                         "currency": None, "extra": {}, "warning_text": None}
                        for m, (sql, label, fmt) in metrics.items()],
            "columns": [{"column_name": name, "verbose_name": None, "is_dttm": dt,
                         "is_active": True, "type": typ, "advanced_data_type": None,
                         "groupby": True, "filterable": True, "expression": None,
                         "description": None, "python_date_format": None, "extra": {}}
                        for name, typ, dt in columns],
            "version": "1.0.0", "database_uuid": DATABASE["uuid"],
        })

    by_key = {}
    for c in CHARTS:
        fd, q = chart_params_and_query(c)
        qc = {"datasource": {"id": 0, "type": "table"}, "force": False, "queries": [q],
              "form_data": fd, "result_format": "json", "result_type": "full"}
        by_key[c["key"]] = c
        dump("charts/%s.yaml" % c["key"], {
            "slice_name": c["name"], "description": None, "certified_by": None,
            "certification_details": None, "viz_type": fd["viz_type"], "params": fd,
            "query_context": json.dumps(qc, sort_keys=True), "cache_timeout": None,
            "uuid": uid("chart/" + c["key"]), "version": "1.0.0",
            "dataset_uuid": uid("dataset/" + c["table"]),
        })

    placed = set()
    for title, slug, uuid_name, layout in DASHBOARDS:
        placed |= write_dashboard(title, slug, uuid_name, layout, by_key)
    assert placed == set(by_key), "every chart must be on a dashboard"


def write_dashboard(title, slug, uuid_name, layout, by_key):
    """dashboards/<title>.yaml; returns the keys of the charts it places"""
    position = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
        "HEADER_ID": {"id": "HEADER_ID", "type": "HEADER", "meta": {"text": title}},
    }
    placed = set()
    for r, row in enumerate(layout, 1):
        row_id = "ROW-%d" % r
        position["GRID_ID"]["children"].append(row_id)
        position[row_id] = {"type": "ROW", "id": row_id, "children": [],
                            "parents": ["ROOT_ID", "GRID_ID"],
                            "meta": {"background": "BACKGROUND_TRANSPARENT"}}
        for key, width in row:
            cid = "CHART-" + key
            placed.add(key)
            position[row_id]["children"].append(cid)
            position[cid] = {"type": "CHART", "id": cid, "children": [],
                             "parents": ["ROOT_ID", "GRID_ID", row_id],
                             # chartId: a placeholder, distinct per chart;
                             # the importer maps it to the new id by uuid
                             "meta": {"width": width, "height": 50,
                                      "chartId": CHARTS.index(by_key[key]) + 1,
                                      "sliceName": by_key[key]["name"],
                                      "uuid": uid("chart/" + key)}}
    dump("dashboards/%s.yaml" % title.replace(" ", "_"), {
        "dashboard_title": title, "description": None, "css": "",
        "slug": slug, "certified_by": None,
        "certification_details": None, "published": True,
        "uuid": uid(uuid_name), "position": position,
        "metadata": {"color_scheme": "supersetColors", "refresh_frequency": REFRESH_SECONDS,
                     "shared_label_colors": {}, "color_scheme_domain": [],
                     "expanded_slices": {}, "label_colors": {},
                     "timed_refresh_immune_slices": [], "cross_filters_enabled": False,
                     "default_filters": "{}", "chart_configuration": {},
                     "global_chart_configuration": {"scope": {"rootPath": ["ROOT_ID"],
                                                              "excluded": []},
                                                    "chartsInScope": []},
                     "native_filter_configuration": []},
        "version": "1.0.0",
    })
    return placed


if __name__ == "__main__":
    import sys
    if len(sys.argv) > 1:
        OUT = os.path.abspath(sys.argv[1])
    main()
