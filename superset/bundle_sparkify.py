"""The dashboard "Sparkify engagement and churn" of the bundle: its datasets
and charts, in the form gen_bundle.py writes (see there).  Reads the Sparkify
tables of docs/sparkify.md as streamkpi_reader, never names."""

TITLE = "Sparkify engagement and churn"
SLUG = "sparkify-engagement-and-churn"

# table -> (main temporal column, [(column, type, is_dttm)], {metric: (sql, label, d3format)})
DATASETS = {
    "daily_churn": (
        "day",
        [("day", "DATE", True), ("active_users", "BIGINT", False),
         ("paid_users", "BIGINT", False), ("free_users", "BIGINT", False),
         ("new_users", "BIGINT", False), ("upgrades", "BIGINT", False),
         ("downgrades", "BIGINT", False), ("cancellations", "BIGINT", False),
         ("churn_rate", "NUMERIC", False)],
        {
            "churn_rate": ("SUM(cancellations)::numeric / NULLIF(SUM(active_users), 0)",
                           "Churn rate", ".2%"),
            "cancellations": ("SUM(cancellations)", "Cancellations", ",d"),
            "active_users": ("SUM(active_users)", "Active users", ",d"),
        },
    ),
    # virtual: one row per day and level, so that levels are a series
    "daily_active_by_level": (
        "day",
        [("day", "DATE", True), ("level", "TEXT", False), ("users", "BIGINT", False)],
        {"users": ("SUM(users)", "Active users", ",d")},
    ),
    # virtual: one row per day and kind of level change
    "daily_level_changes": (
        "day",
        [("day", "DATE", True), ("change", "TEXT", False), ("events", "BIGINT", False)],
        {"events": ("SUM(events)", "Events", ",d")},
    ),
    "user_churn_signals": (
        "last_event_at",
        [("user_id", "TEXT", False), ("level", "TEXT", False),
         ("last_event_at", "TIMESTAMP WITH TIME ZONE", True),
         ("days_registered", "INTEGER", False), ("sessions", "BIGINT", False),
         ("songs_played", "BIGINT", False), ("songs_per_session", "NUMERIC", False),
         ("thumbs_up", "BIGINT", False), ("thumbs_down", "BIGINT", False),
         ("roll_advert", "BIGINT", False), ("downgrades", "BIGINT", False),
         ("churned", "BOOLEAN", False)],
        {"songs_per_session": ("SUM(songs_played)::numeric / NULLIF(SUM(sessions), 0)",
                               "Songs per session", ",.2f")},
    ),
}

VIRTUAL = {
    "daily_active_by_level": (
        "SELECT day, 'paid' AS level, paid_users AS users FROM streamkpi.daily_churn\n"
        "UNION ALL\n"
        "SELECT day, 'free', free_users FROM streamkpi.daily_churn"
    ),
    "daily_level_changes": (
        "SELECT day, 'upgrades' AS change, upgrades AS events FROM streamkpi.daily_churn\n"
        "UNION ALL\n"
        "SELECT day, 'downgrades', downgrades FROM streamkpi.daily_churn\n"
        "UNION ALL\n"
        "SELECT day, 'cancellations', cancellations FROM streamkpi.daily_churn"
    ),
}

NO_FILTER = {"clause": "WHERE", "subject": "day", "operator": "TEMPORAL_RANGE",
             "comparator": "No filter", "expressionType": "SIMPLE"}

CHARTS = [
    dict(key="sp_cancellations", name="Cancellations", kind="big_number",
         table="daily_churn", metric="cancellations", filters=[]),
    dict(key="sp_churn_total", name="Churn rate (all days)", kind="big_number",
         table="daily_churn", metric="churn_rate", filters=[]),
    dict(key="sp_active_by_level", name="Active users per day by level", kind="timeseries",
         viz="echarts_timeseries_bar", table="daily_active_by_level", x="day", grain="P1D",
         metric="users", series="level", filters=[NO_FILTER], stack=True),
    dict(key="sp_churn_rate", name="Churn rate per day", kind="timeseries",
         viz="echarts_timeseries_line", table="daily_churn", x="day", grain="P1D",
         metric="churn_rate", series=None, filters=[NO_FILTER]),
    dict(key="sp_level_changes", name="Upgrades, downgrades and cancellations per day",
         kind="timeseries", viz="echarts_timeseries_bar", table="daily_level_changes", x="day",
         grain="P1D", metric="events", series="change", filters=[NO_FILTER]),
    dict(key="sp_songs_per_session", name="Songs per session by level", kind="category",
         table="user_churn_signals", metric="songs_per_session", x="level", sort="x",
         filters=[]),
    dict(key="sp_at_risk", name="Users most at risk (most Thumbs Down and adverts, fewest songs per session)",
         kind="table", table="user_churn_signals",
         columns=["user_id", "level", "thumbs_down", "roll_advert", "songs_per_session",
                  "sessions", "days_registered"],
         orderby=[["thumbs_down", False], ["roll_advert", False], ["songs_per_session", True],
                  ["user_id", True]],
         filters=[{"clause": "WHERE", "expressionType": "SQL", "sqlExpression": "NOT churned"}],
         limit=25),
]

LAYOUT = [
    [("sp_cancellations", 3), ("sp_churn_total", 3), ("sp_songs_per_session", 6)],
    [("sp_active_by_level", 6), ("sp_churn_rate", 6)],
    [("sp_level_changes", 6), ("sp_at_risk", 6)],
]
