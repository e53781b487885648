#!/usr/bin/env python3
"""Superset end-to-end checks (run by test/superset/run in Superset's
virtualenv, which has psycopg2):

  1. every chart of the dashboards "Music streaming KPIs" and "Sparkify
     engagement and churn": the rows its
     chart-data API returned (GET /api/v1/chart/<id>/data/, api.json) equal
     an independent SQL query over the KPI tables;
  2. the chart-data responses the browser received while rendering the
     dashboard (browser.json, post-processed by Superset: pivoted time
     series) carry the same numbers;
  3. every chart tile rendered a visualization and no tile shows an error.

Every number must be exactly equal: counts as integers, ratios and averages
as the double nearest to SQL's exact numeric result (JSON carries doubles).

    check.py --dsn DSN --api api.json --browser browser.json --bundle superset/
"""
import argparse
import datetime as dt
import decimal
import json
import os
import sys

import psycopg2

# chart key -> (kind, SQL).  kind "keyed": the last column is the value, the
# others the key; "rows": whole rows in order.  Written independently of the
# bundle's metric definitions, straight from docs/contract.md §5.
ENG = "FROM streamkpi.daily_engagement WHERE dimension = '%s' GROUP BY value"
EXPECTED = {
    "listens_total": ("keyed", "SELECT sum(listen_count) FROM streamkpi.daily_genre_kpis"),
    "listening_hours": ("keyed", "SELECT sum(total_listen_ms) / 3600000.0 FROM streamkpi.daily_genre_kpis"),
    "listens_by_genre": ("keyed", "SELECT day, genre, sum(listen_count) FROM streamkpi.daily_genre_kpis GROUP BY 1, 2"),
    "listeners_by_genre": ("keyed", "SELECT day, genre, sum(unique_listeners) FROM streamkpi.daily_genre_kpis GROUP BY 1, 2"),
    "avg_listening": ("keyed", "SELECT day, genre, avg_listen_ms_per_user / 60000.0 FROM streamkpi.daily_genre_kpis"),
    "top_tracks": ("rows", "SELECT day, genre, rank, track_name, track_id, listen_count"
                           " FROM streamkpi.daily_genre_top_tracks ORDER BY day DESC, genre, rank"),
    "top_genres": ("rows", "SELECT day, rank, genre, listen_count FROM streamkpi.daily_top_genres"
                           " ORDER BY day DESC, rank"),
    "trending": ("rows", "SELECT region, rank, track_id, plays, skips, likes, window_start"
                         " FROM streamkpi.trending WHERE window_size = interval '5 minutes'"
                         " AND window_start = (SELECT max(window_start) FROM streamkpi.trending"
                         " WHERE window_size = interval '5 minutes') ORDER BY region, rank"),
    "window_listens": ("keyed", "SELECT window_start, sum(total_listens) FROM streamkpi.track_windows"
                                " WHERE window_size = interval '5 minutes' GROUP BY 1"),
    "skip_rate_genre": ("keyed", "SELECT value, sum(skips)::numeric / nullif(sum(streams) + sum(skips), 0) "
                        + ENG % "genre"),
    "like_rate_subscription": ("keyed", "SELECT value, sum(likes)::numeric / nullif(sum(streams), 0) "
                               + ENG % "subscription"),
    "activity_hour": ("keyed", "SELECT value, sum(streams) " + ENG % "hour"),
    "activity_country": ("keyed", "SELECT value, sum(streams) " + ENG % "country"),
    "activity_device": ("keyed", "SELECT value, sum(streams) " + ENG % "device"),
    "completion_device": ("keyed", "SELECT value, sum(completion_rate * streams) / nullif(sum(streams), 0) "
                          + ENG % "device"),
    # Sparkify engagement and churn (docs/sparkify.md)
    "sp_cancellations": ("keyed", "SELECT sum(cancellations) FROM streamkpi.daily_churn"),
    "sp_churn_total": ("keyed", "SELECT sum(cancellations)::numeric / sum(active_users) FROM streamkpi.daily_churn"),
    "sp_active_by_level": ("keyed", "SELECT day, 'paid', paid_users FROM streamkpi.daily_churn"
                                    " UNION ALL SELECT day, 'free', free_users FROM streamkpi.daily_churn"),
    "sp_churn_rate": ("keyed", "SELECT day, cancellations::numeric / active_users FROM streamkpi.daily_churn"),
    "sp_level_changes": ("keyed", "SELECT day, c, n FROM streamkpi.daily_churn, LATERAL (VALUES"
                                  " ('upgrades', upgrades), ('downgrades', downgrades),"
                                  " ('cancellations', cancellations)) v(c, n)"),
    "sp_songs_per_session": ("keyed", "SELECT level, sum(songs_played)::numeric / sum(sessions)"
                                      " FROM streamkpi.user_churn_signals GROUP BY level"),
    "sp_at_risk": ("rows", "SELECT user_id, level, thumbs_down, roll_advert, songs_per_session,"
                           " sessions, days_registered FROM streamkpi.user_churn_signals"
                           " WHERE NOT churned"
                           " ORDER BY thumbs_down DESC, roll_advert DESC, songs_per_session, user_id"
                           " LIMIT 25"),
}

failures = []


def fail(msg):
    failures.append(msg)
    print("not ok - " + msg)


def ok(msg):
    print("ok - " + msg)


def norm_key(v):
    """dates and timestamps as epoch milliseconds (how Superset's JSON has them)"""
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.timezone.utc)
        return int(round(v.timestamp() * 1000))
    if isinstance(v, dt.date):
        return int(round(dt.datetime(v.year, v.month, v.day, tzinfo=dt.timezone.utc).timestamp() * 1000))
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
            try:
                d = dt.datetime.strptime(v, fmt)
                return norm_key(d)
            except ValueError:
                pass
    return v


def same_number(expected, got):
    """exact: a count equals the integer, any other number equals the double
    nearest to SQL's exact numeric value (JSON carries doubles)"""
    if expected is None or got is None:
        return expected is None and got is None
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return False
    e = expected if isinstance(expected, decimal.Decimal) else decimal.Decimal(expected)
    if e == e.to_integral_value():
        return got == int(e)
    return isinstance(got, float) and got == float(e)


def same_value(expected, got):
    if isinstance(expected, (int, float, decimal.Decimal)) and not isinstance(expected, bool):
        return same_number(expected, got)
    return norm_key(expected) == norm_key(got)


def query_expected(cur, sql):
    cur.execute(sql)
    return cur.fetchall()


def compare_keyed(name, expected_rows, got, source):
    """expected {key tuple: value} against got {key tuple: value}"""
    exp = {tuple(norm_key(k) for k in r[:-1]): r[-1] for r in expected_rows}
    if not exp:
        fail("%s: SQL over the KPI tables returned no rows; the test data set is broken" % name)
        return
    missing = [k for k in exp if k not in got]
    extra = [k for k in got if k not in exp]
    wrong = [(k, exp[k], got[k]) for k in exp if k in got and not same_number(exp[k], got[k])]
    if missing or extra or wrong:
        fail("%s (%s): %d values, %d missing, %d unexpected, %d different; e.g. missing %s, unexpected %s, different %s"
             % (name, source, len(exp), len(missing), len(extra), len(wrong),
                missing[:3], extra[:3], wrong[:3]))
    else:
        ok("%s (%s): %d values equal SQL over the KPI tables" % (name, source, len(exp)))


def api_keyed(chart):
    """{key: value} from a chart-data API result without post-processing"""
    q = chart["query"]
    cols = [c if isinstance(c, str) else c["label"] for c in q.get("columns") or []]
    metric = q["metrics"][0]
    return {tuple(norm_key(r[c]) for c in cols): r[metric] for r in chart["data"]}


def browser_keyed(resp, chart, has_series):
    """{key: value} from the browser's (post-processed, pivoted) chart data"""
    q = chart["query"]
    cols = [c if isinstance(c, str) else c["label"] for c in q.get("columns") or []]
    out = {}
    data = resp["result"][0]["data"]
    if not cols:                        # big number: one row, one metric
        metric = q["metrics"][0]
        for r in data:
            out[()] = r.get(metric)
        return out
    x = cols[0]
    for r in data:
        for k, v in r.items():
            if k == x or v is None:
                continue
            key = (norm_key(r[x]), k) if has_series else (norm_key(r[x]),)
            out[key] = v
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dsn", required=True)
    p.add_argument("--api", required=True)
    p.add_argument("--browser", required=True)
    p.add_argument("--bundle", required=True)
    args = p.parse_args()

    sys.path.insert(0, os.path.abspath(args.bundle))
    import gen_bundle  # the chart list the bundle was made from
    charts_spec = {c["key"]: c for c in gen_bundle.CHARTS}
    if set(charts_spec) != set(EXPECTED):
        fail("charts without an expected SQL query: %s" % sorted(set(charts_spec) ^ set(EXPECTED)))

    with open(args.api) as f:
        api = json.load(f)
    with open(args.browser) as f:
        browser = json.load(f)

    conn = psycopg2.connect(args.dsn)
    conn.set_session(readonly=True)
    cur = conn.cursor()

    by_name = {c["name"]: k for k, c in charts_spec.items()}
    seen = set()
    for _, chart in sorted(api.items(), key=lambda kv: kv[1]["name"]):
        key = by_name.get(chart["name"])
        if key is None:
            fail("chart %r is not in the bundle" % chart["name"])
            continue
        seen.add(key)
        name = chart["name"]
        if chart.get("error") or chart.get("status") not in (None, "success"):
            fail("%s: chart-data API status %s, error %s" % (name, chart.get("status"), chart.get("error")))
            continue
        kind, sql = EXPECTED[key]
        expected_rows = query_expected(cur, sql)
        spec = charts_spec[key]
        if kind == "keyed":
            compare_keyed(name, expected_rows, api_keyed(chart), "chart-data API")
        else:
            cols = chart["query"]["columns"]
            got = [tuple(r[c] for c in cols) for r in chart["data"]]
            if not expected_rows:
                fail("%s: SQL over the KPI tables returned no rows; the test data set is broken" % name)
            elif len(got) != len(expected_rows) or not all(
                    all(same_value(e, g) for e, g in zip(er, gr)) for er, gr in zip(expected_rows, got)):
                bad = next((i for i, (er, gr) in enumerate(zip(expected_rows, got))
                            if not all(same_value(e, g) for e, g in zip(er, gr))), None)
                fail("%s (chart-data API): %d rows, SQL has %d; first difference at row %s: %s vs %s"
                     % (name, len(got), len(expected_rows), bad,
                        got[bad] if bad is not None else None,
                        expected_rows[bad] if bad is not None else None))
            else:
                ok("%s (chart-data API): %d rows equal SQL over the KPI tables, in order" % (name, len(got)))

        # what the browser received for the same chart
        resp = browser["responses"].get(str(chart["id"]))
        if resp is None:
            fail("%s: the dashboard did not request its data in the browser" % name)
            continue
        if resp["status"] != 200:
            fail("%s: browser chart-data request failed with HTTP %s" % (name, resp["status"]))
            continue
        if kind == "keyed":
            has_series = bool(spec.get("series"))
            compare_keyed(name, expected_rows, browser_keyed(resp["body"], chart, has_series),
                          "rendered dashboard")
        else:
            data = resp["body"]["result"][0]["data"]
            cols = chart["query"]["columns"]
            got = [tuple(r.get(c) for c in cols) for r in data]
            if len(got) == len(expected_rows) and all(
                    all(same_value(e, g) for e, g in zip(er, gr)) for er, gr in zip(expected_rows, got)):
                ok("%s (rendered dashboard): %d rows equal SQL" % (name, len(got)))
            else:
                fail("%s (rendered dashboard): rows differ from SQL (%d vs %d rows)"
                     % (name, len(got), len(expected_rows)))

    for key in sorted(set(charts_spec) - seen):
        fail("chart %r of the bundle is not on the imported dashboard" % charts_spec[key]["name"])

    # tiles
    tiles = browser["tiles"]
    if len(tiles) != len(charts_spec):
        fail("the dashboard shows %d chart tiles, the bundle has %d charts" % (len(tiles), len(charts_spec)))
    else:
        ok("the dashboard shows all %d chart tiles" % len(tiles))
    for t in tiles:
        if t["error"]:
            fail("tile %r shows an error: %s" % (t["title"], t["text"][:300]))
        elif not t["viz"]:
            fail("tile %r rendered no chart (no svg, canvas or table): %s" % (t["title"], t["text"][:300]))
    if all(not t["error"] and t["viz"] for t in tiles):
        ok("no tile shows an error; every tile rendered its chart")
    if browser.get("external"):
        fail("the browser tried to reach other hosts: %s" % browser["external"][:10])
    else:
        ok("the dashboard needed no host but Superset's")
    if browser.get("console_errors"):
        print("# browser console errors (not failures): %s" % browser["console_errors"][:5])

    if failures:
        print("FAILED: %d check(s)" % len(failures))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
