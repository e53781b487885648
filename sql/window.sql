-- Event-time windows: tumble, hop, day_bucket.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
RESET client_min_messages;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

-- tumble: window starts, default origin 2000-01-03 00:00 UTC (a Monday)
SELECT ts, streamkpi.tumble(ts, '1 hour') AS h1,
       streamkpi.tumble(ts, '15 minutes') AS m15,
       streamkpi.tumble(ts, '1 day') AS d1,
       streamkpi.tumble(ts, '7 days') AS w1
  FROM (VALUES ('2025-03-30 01:30:00+00'::timestamptz),
               ('2025-03-30 01:00:00+00'), ('2025-03-30 00:59:59.999999+00'),
               ('1999-12-31 23:59:59+00'), ('1970-01-01 00:00:00+00')) v(ts)
 ORDER BY ts;
-- every timestamp lies in [start, start + size)
SELECT bool_and(streamkpi.tumble(ts, '7 minutes') <= ts AND
                ts < streamkpi.tumble(ts, '7 minutes') + '7 minutes') AS inside,
       count(DISTINCT streamkpi.tumble(ts, '7 minutes')) AS windows
  FROM generate_series('2025-01-01 00:00+00'::timestamptz,
                       '2025-01-01 01:09:59+00', '1 second') ts;
-- an explicit origin
SELECT streamkpi.tumble('2025-03-30 01:30:00+00', '1 hour', '2000-01-01 00:20:00+00') AS o1,
       streamkpi.tumble('2025-03-30 01:10:00+00', '1 hour', '2030-01-01 00:20:00+00') AS o_future;
-- windows of one day follow UTC, not a local clock
SELECT streamkpi.tumble('2025-03-30 12:00:00+02', '1 day') AS utc_day;
SELECT streamkpi.tumble(NULL, '1 hour') AS null_ts;
-- bad sizes and timestamps
SELECT streamkpi.tumble(now(), '0 seconds');
SELECT streamkpi.tumble(now(), '-1 hour');
SELECT streamkpi.tumble(now(), '1 month');
SELECT streamkpi.tumble(now(), '1 day -24 hours');
SELECT streamkpi.tumble('infinity', '1 hour');
SELECT streamkpi.tumble(now(), '1 hour', '-infinity');
SELECT streamkpi.tumble('294276-12-31 23:59:59+00', '1000 days');

-- hop: every window [start, start + size) holding ts, oldest first
SELECT streamkpi.hop('2025-03-30 01:30:00+00', '1 hour', '15 minutes');
SELECT streamkpi.hop('2025-03-30 01:30:00+00', '1 hour', '1 hour') AS tumbling;
SELECT streamkpi.hop('2025-03-30 01:30:00+00', '1 hour', '20 minutes', '2025-01-01 00:05:00+00');
SELECT streamkpi.hop('2025-03-30 01:30:00+00', '50 minutes', '20 minutes') AS size_not_multiple;
-- each timestamp lands in size/slide windows, each of which holds it
SELECT count(*) AS pairs, count(DISTINCT ts) AS stamps,
       bool_and(w <= ts AND ts < w + '10 minutes') AS inside
  FROM generate_series('2025-01-01 00:00+00'::timestamptz,
                       '2025-01-01 00:59:59+00', '1 second') ts,
       streamkpi.hop(ts, '10 minutes', '2 minutes') w;
-- hop agrees with tumble when slide = size
SELECT bool_and(streamkpi.tumble(ts, '5 minutes') =
                (SELECT w FROM streamkpi.hop(ts, '5 minutes', '5 minutes') w)) AS agrees
  FROM generate_series('2025-01-01 00:00+00'::timestamptz,
                       '2025-01-01 01:00:00+00', '17 seconds') ts;
-- bad arguments
SELECT streamkpi.hop(now(), '1 hour', '2 hours');
SELECT streamkpi.hop(now(), '1 hour', '0 seconds');
SELECT streamkpi.hop(now(), '0 hours', '1 minute');
SELECT streamkpi.hop(now(), '1 day', '1 microsecond');
SELECT streamkpi.hop(now(), '1 mon', '1 day');
SELECT streamkpi.hop('infinity', '1 hour', '1 minute');
SELECT count(*) FROM streamkpi.hop(NULL, '1 hour', '1 minute');

-- day_bucket: the local calendar date, through the time zone database
SELECT streamkpi.day_bucket('2025-03-29 22:59:59+00', 'Europe/Berlin') AS before_midnight,
       streamkpi.day_bucket('2025-03-29 23:00:00+00', 'Europe/Berlin') AS at_midnight,
       streamkpi.day_bucket('2025-03-30 21:59:59+00', 'Europe/Berlin') AS end_of_short_day,
       streamkpi.day_bucket('2025-03-30 22:00:00+00', 'Europe/Berlin') AS next_day;
-- DST change days have 23 or 25 hours; their neighbours 24
SELECT tz, d, count(*) AS hours
  FROM (VALUES ('Europe/Berlin', '2025-03-30'::date), ('Europe/Berlin', '2025-10-26'),
               ('America/New_York', '2025-03-09'), ('America/New_York', '2025-11-02')) v(tz, day),
       generate_series(day - 2 - interval '14 hours', day + 2 + interval '14 hours', '1 hour') ts,
       streamkpi.day_bucket(ts, tz) d
 WHERE d BETWEEN day - 1 AND day + 1
 GROUP BY tz, d ORDER BY tz, d;
-- agrees with AT TIME ZONE over a year of half hours
SELECT bool_and(streamkpi.day_bucket(ts, 'America/New_York') = (ts AT TIME ZONE 'America/New_York')::date) AS agrees
  FROM generate_series('2025-01-01 00:00+00'::timestamptz, '2026-01-01 00:00+00', '30 minutes') ts;
SELECT streamkpi.day_bucket('2025-06-01 23:30:00+00', 'UTC') AS utc,
       streamkpi.day_bucket('2025-06-01 23:30:00+00', 'Asia/Kolkata') AS kolkata,
       streamkpi.day_bucket('2025-06-01 03:30:00+00', 'Pacific/Honolulu') AS honolulu;
SELECT streamkpi.day_bucket(NULL, 'UTC') AS null_ts, streamkpi.day_bucket(now(), NULL) AS null_tz;
SELECT streamkpi.day_bucket(now(), 'Mars/Olympus_Mons');
SELECT streamkpi.day_bucket(now(), '');
SELECT streamkpi.day_bucket('-infinity', 'UTC');
