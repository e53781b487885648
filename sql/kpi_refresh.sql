-- refresh_kpis(): every KPI table equals an independent SQL computation over
-- raw events, on a synthetic data set with both DST days of Europe/Berlin,
-- several regions, unknown tracks, skips, likes and NULL ms_played; rollups
-- equal the union of day sketches.
-- errors without CONTEXT: it would name lines of PL/pgSQL functions
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
RESET client_min_messages;
SET TimeZone = 'UTC';
-- The events are ingested now but happened months ago: a backfill, not
-- late events (kpi_incremental tests those).
SET streamkpi.late_horizon = '100 years';

TRUNCATE streamkpi.listens, streamkpi.tracks, streamkpi.users,
	streamkpi.daily_genre_track_counts, streamkpi.daily_genre_users,
	streamkpi.daily_engagement_state, streamkpi.window_state,
	streamkpi.daily_genre_kpis, streamkpi.daily_genre_top_tracks,
	streamkpi.daily_top_genres, streamkpi.trending,
	streamkpi.daily_engagement;
-- Start without this test's day partitions (2026), so that creating them is
-- part of the test whatever ran before.
DO $$
DECLARE r record;
BEGIN
	FOR r IN SELECT c.oid::regclass AS part FROM pg_catalog.pg_inherits i
			   JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
			  WHERE i.inhparent = 'streamkpi.listens'::regclass
				AND c.relname LIKE 'listens_p2026%'
	LOOP
		EXECUTE format('DROP TABLE %s', r.part);
	END LOOP;
END $$;

-- 16 tracks: six genres, '' and NULL genres (both 'unknown'), every fifth
-- without duration.  Events also name tracks x0..x2 that do not exist.
INSERT INTO streamkpi.tracks (track_id, track_name, artists, album, genre, duration_ms)
SELECT 't' || lpad(i::text, 2, '0'), 'Track ' || i, 'Artist ' || i % 4, 'Album ' || i % 3,
	   (ARRAY['rock', 'pop', 'jazz', 'hiphop', 'classical', 'electronic', '', NULL])[1 + i % 8],
	   CASE WHEN i % 5 = 0 THEN NULL ELSE 120000 + i * 10000 END
  FROM generate_series(1, 16) i;
-- 30 users with ages on every age-group boundary; u31..u36 are unknown.
INSERT INTO streamkpi.users (user_id, user_name, age, gender, country, subscription, created_at)
SELECT 'u' || lpad(i::text, 2, '0'), 'User ' || i,
	   (ARRAY[15, 17, 18, 24, 25, 34, 35, 44, 45, 54, 55, 70, NULL])[1 + i % 13],
	   (ARRAY['f', 'm', 'x'])[1 + i % 3],
	   (ARRAY['DE', 'US', 'FR', 'JP', NULL])[1 + i % 5],
	   (ARRAY['free', 'premium', 'family'])[1 + i % 4 % 3],
	   date '2020-01-01' + i
  FROM generate_series(1, 30) i;

-- Events, deterministic.  Batches arrive out of time order and partly
-- without partitions.
CREATE TEMP TABLE gen AS
SELECT i, 'u' || lpad((1 + (i * 7) % 36)::text, 2, '0') AS user_id,
	   CASE WHEN i % 13 = 0 THEN 'x' || i % 3
			ELSE 't' || lpad((1 + (i * 5 + i / 7) % 16)::text, 2, '0') END AS track_id,
	   CASE WHEN i % 11 = 0 THEN NULL ELSE 20000 + (i * 7919) % 250000 END AS ms_played,
	   (ARRAY['play', 'play', 'play', 'skip', 'play', 'like', 'play', 'skip', 'play', 'play'])[1 + (i * 3 + i / 4) % 10] AS action,
	   (ARRAY['eu', 'us', 'apac', NULL])[1 + i % 4] AS region,
	   (ARRAY['ios', 'android', 'web', NULL])[1 + (i / 3) % 4] AS device
  FROM generate_series(0, 999) i;

-- 1. Fall-back day (2026-10-25, 03:00 CEST -> 02:00 CET), 30 hours of events.
SELECT streamkpi.ensure_listens_partitions('2026-10-24 21:00+00', '2026-10-26 03:00+00');
INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played, action, region, device)
SELECT 'o' || i, user_id, track_id, timestamptz '2026-10-24 21:00+00' + i * interval '9 min 1 s',
	   ms_played, action, region, device
  FROM gen WHERE i < 200;
-- 2. A burst on 2026-03-30 (every 2.9 s for 10 minutes) before any March
-- partition exists: it lands in the default partition.
INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played, action, region, device)
SELECT 'b' || i, user_id, track_id, timestamptz '2026-03-30 12:00+00' + i * interval '2.9 s',
	   ms_played, action, region, device
  FROM gen WHERE i < 200;
-- 3. Spring-forward day (2026-03-29, 02:00 CET -> 03:00 CEST) and its
-- neighbours; the pipeline ensured only Mar 29 and 30, so Mar 28 and 31 go to
-- the default partition, and creating Mar 30 moved the burst out of it.
SELECT streamkpi.ensure_listens_partitions('2026-03-29 00:00+00', '2026-03-30 23:00+00');
INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played, action, region, device)
SELECT 'm' || i, user_id, track_id, timestamptz '2026-03-28 20:00+00' + i * interval '6 min 7 s',
	   ms_played, action, region, device
  FROM gen WHERE i < 800;
SELECT (SELECT relname FROM pg_catalog.pg_class c WHERE c.oid = l.tableoid) AS part,
	   count(*), min(listened_at), max(listened_at)
  FROM streamkpi.listens l GROUP BY 1 ORDER BY 1;
SELECT streamkpi.drain_listens_default() AS moved;
SELECT (SELECT relname FROM pg_catalog.pg_class c WHERE c.oid = l.tableoid) AS part, count(*)
  FROM streamkpi.listens l GROUP BY 1 ORDER BY 1;

-- Without streamkpi.kpi_timezone, days are UTC days.
SELECT streamkpi.kpi_timezone();
SELECT streamkpi.refresh_kpis('2026-03-28', '2026-03-31');
SELECT day, sum(listen_count) AS listens,
	   (SELECT count(*) FROM streamkpi.listens
		 WHERE action = 'play' AND listened_at >= day::timestamp AT TIME ZONE 'UTC'
		   AND listened_at < (day + 1)::timestamp AT TIME ZONE 'UTC') AS raw_listens
  FROM streamkpi.daily_genre_kpis GROUP BY day ORDER BY day;

-- A new session: the setting must be settable before anything loads the
-- library (while the GUC is not yet defined in C, the prefix is reserved
-- once it is loaded).
\c -
SET TimeZone = 'UTC';
SET client_min_messages = warning;
SET streamkpi.kpi_timezone = 'Europe/Berlin';
SET streamkpi.late_horizon = '100 years';
SELECT streamkpi.kpi_timezone();

-- Bad calls.
SELECT streamkpi.refresh_kpis(NULL, '2026-03-31');
SELECT streamkpi.refresh_kpis('2026-03-31', '2026-03-30');
SET streamkpi.kpi_timezone = 'Mars/Olympus_Mons';
SELECT streamkpi.refresh_kpis('2026-03-28', '2026-03-31');
SET streamkpi.kpi_timezone = 'Europe/Berlin';

SELECT streamkpi.refresh_kpis('2026-03-28', '2026-10-26');

---------------------------------------------------------------------------
-- Independent computations, written differently from the extension: exact
-- count(DISTINCT) (the HLL is exact at this size), correlated subqueries,
-- epoch arithmetic for windows, rank by counting, one query per dimension.
CREATE TEMP VIEW x_ev AS
SELECT l.event_id, l.user_id, l.track_id, l.action, l.listened_at, l.ms_played,
	   date(timezone('Europe/Berlin', l.listened_at)) AS d,
	   CASE WHEN l.region IS NULL THEN 'unknown' ELSE l.region END AS reg,
	   CASE WHEN l.device IS NULL THEN 'unknown' ELSE l.device END AS dev,
	   CASE WHEN (SELECT t.genre FROM streamkpi.tracks t WHERE t.track_id = l.track_id) <> ''
			THEN (SELECT t.genre FROM streamkpi.tracks t WHERE t.track_id = l.track_id)
			ELSE 'unknown' END AS g,
	   (SELECT t.duration_ms FROM streamkpi.tracks t WHERE t.track_id = l.track_id) AS dur
  FROM streamkpi.listens l;

CREATE TEMP VIEW x_ev2 AS
SELECT e.*,
	   CASE WHEN e.ms_played IS NOT NULL THEN e.ms_played
			WHEN e.dur IS NOT NULL THEN e.dur ELSE 0 END AS ms,
	   lpad(extract(hour FROM timezone('Europe/Berlin', e.listened_at))::int::text, 2, '0') AS hr,
	   CASE WHEN u.user_id IS NULL OR u.age IS NULL THEN 'unknown'
			WHEN u.age >= 55 THEN '55+' WHEN u.age >= 45 THEN '45-54'
			WHEN u.age >= 35 THEN '35-44' WHEN u.age >= 25 THEN '25-34'
			WHEN u.age >= 18 THEN '18-24' ELSE '<18' END AS ag,
	   CASE WHEN u.country IS NULL THEN 'unknown' ELSE u.country END AS ctry,
	   CASE WHEN u.subscription IS NULL THEN 'unknown' ELSE u.subscription END AS sub
  FROM x_ev e LEFT JOIN streamkpi.users u ON u.user_id = e.user_id;

-- The expected KPI tables are materialised by pg_temp.kpi_check(), which then
-- compares each with its KPI table: rows missing from the table, rows the
-- table has in excess, and its size (so that "both empty" cannot pass).
CREATE FUNCTION pg_temp.kpi_check()
	RETURNS TABLE (kpi text, missing bigint, extra bigint, rows bigint)
	LANGUAGE plpgsql AS $check$
BEGIN
	DROP TABLE IF EXISTS x_e, x_daily_genre_kpis, x_track_counts, x_daily_genre_top_tracks,
		x_daily_top_genres, x_win, x_win_counts, x_trending, x_track_windows,
		x_daily_engagement;

	CREATE TEMP TABLE x_e AS SELECT * FROM x_ev2;
	ANALYZE x_e;

	CREATE TEMP TABLE x_daily_genre_kpis AS
	SELECT d AS day, g AS genre, count(*) AS listen_count,
		   count(DISTINCT user_id) AS unique_listeners, sum(ms) AS total_listen_ms,
		   round(sum(ms) * 1.0 / count(DISTINCT user_id), 3) AS avg_listen_ms_per_user
	  FROM x_e WHERE action = 'play' GROUP BY d, g;
	ANALYZE x_daily_genre_kpis;

	CREATE TEMP TABLE x_track_counts AS
	SELECT d, g, track_id, count(*) AS n FROM x_e WHERE action = 'play' GROUP BY d, g, track_id;

	-- rank = 1 + number of better rows, by a self-join
	CREATE TEMP TABLE x_daily_genre_top_tracks AS
	SELECT a.d AS day, a.g AS genre, 1 + count(b.track_id) AS rank, a.track_id,
		   (SELECT t.track_name FROM streamkpi.tracks t WHERE t.track_id = a.track_id) AS track_name,
		   a.n AS listen_count
	  FROM x_track_counts a
	  LEFT JOIN x_track_counts b
		ON b.d = a.d AND b.g = a.g
	   AND (b.n > a.n OR (b.n = a.n AND b.track_id < a.track_id))
	 GROUP BY a.d, a.g, a.track_id, a.n
	HAVING count(b.track_id) < 3;

	CREATE TEMP TABLE x_daily_top_genres AS
	SELECT a.day, 1 + count(b.genre) AS rank, a.genre, a.listen_count
	  FROM x_daily_genre_kpis a
	  LEFT JOIN x_daily_genre_kpis b
		ON b.day = a.day
	   AND (b.listen_count > a.listen_count
			OR (b.listen_count = a.listen_count AND b.genre < a.genre))
	 GROUP BY a.day, a.genre, a.listen_count
	HAVING count(b.genre) < 5;

	-- windows by epoch arithmetic (1, 5 and 10 minutes divide a day, so the
	-- 1970 and 2000 origins agree)
	CREATE TEMP TABLE x_win AS
	SELECT e.*, w.window_size,
		   to_timestamp(floor(extract(epoch FROM e.listened_at) / extract(epoch FROM w.window_size))
						* extract(epoch FROM w.window_size)) AS ws
	  FROM x_e e,
		   (VALUES (interval '1 minute'), (interval '5 minutes'), (interval '10 minutes')) w(window_size);
	ANALYZE x_win;

	CREATE TEMP TABLE x_win_counts AS
	SELECT window_size, ws, reg, track_id,
		   sum(CASE WHEN action = 'play' THEN 1 ELSE 0 END) AS plays,
		   sum(CASE WHEN action = 'skip' THEN 1 ELSE 0 END) AS skips,
		   sum(CASE WHEN action = 'like' THEN 1 ELSE 0 END) AS likes
	  FROM x_win GROUP BY window_size, ws, reg, track_id;
	ANALYZE x_win_counts;

	CREATE TEMP TABLE x_trending AS
	SELECT a.window_size, a.ws AS window_start, a.reg AS region, 1 + count(b.track_id) AS rank,
		   a.ws + a.window_size AS window_end, a.track_id, a.plays, a.skips, a.likes
	  FROM x_win_counts a
	  LEFT JOIN x_win_counts b
		ON b.window_size = a.window_size AND b.ws = a.ws AND b.reg = a.reg
	   AND (b.plays > a.plays OR (b.plays = a.plays AND b.track_id < a.track_id))
	 WHERE a.plays > 0
	 GROUP BY a.window_size, a.ws, a.reg, a.track_id, a.plays, a.skips, a.likes
	HAVING count(b.track_id) < 3;

	CREATE TEMP TABLE x_track_windows AS
	SELECT window_size, ws AS window_start, track_id, ws + window_size AS window_end,
		   count(*) AS total_listens, count(DISTINCT user_id) AS unique_users,
		   round(avg(ms), 3) AS avg_listen_ms
	  FROM x_win WHERE action = 'play' GROUP BY window_size, ws, track_id;

	-- one aggregate per dimension instead of one pass over all of them
	CREATE TEMP TABLE x_daily_engagement AS
	SELECT d AS day, dimension, value, plays AS streams, skips, likes, users AS unique_users,
		   CASE WHEN plays + skips = 0 THEN NULL ELSE round(skips::numeric / (plays + skips), 6) END AS skip_rate,
		   CASE WHEN plays = 0 THEN NULL ELSE round(likes::numeric / plays, 6) END AS like_rate,
		   CASE WHEN plays = 0 THEN NULL ELSE round(completed::numeric / plays, 6) END AS completion_rate,
		   CASE WHEN plays = 0 THEN NULL ELSE round(play_ms::numeric / plays, 3) END AS avg_listen_ms
	  FROM (SELECT d, dimension, value,
				   count(*) FILTER (WHERE action = 'play') AS plays,
				   count(*) FILTER (WHERE action = 'skip') AS skips,
				   count(*) FILTER (WHERE action = 'like') AS likes,
				   count(DISTINCT user_id) AS users,
				   count(*) FILTER (WHERE action = 'play' AND dur > 0 AND ms >= 0.9 * dur) AS completed,
				   coalesce(sum(ms) FILTER (WHERE action = 'play'), 0) AS play_ms
			  FROM (		  SELECT d, 'genre' AS dimension, g AS value, action, user_id, ms, dur FROM x_e
					UNION ALL SELECT d, 'subscription', sub, action, user_id, ms, dur FROM x_e
					UNION ALL SELECT d, 'age_group', ag, action, user_id, ms, dur FROM x_e
					UNION ALL SELECT d, 'hour', hr, action, user_id, ms, dur FROM x_e
					UNION ALL SELECT d, 'country', ctry, action, user_id, ms, dur FROM x_e
					UNION ALL SELECT d, 'device', dev, action, user_id, ms, dur FROM x_e
					UNION ALL SELECT d, 'region', reg, action, user_id, ms, dur FROM x_e) base
			 GROUP BY d, dimension, value) s;

	RETURN QUERY
	SELECT 'daily_genre_kpis',
		   (SELECT count(*) FROM (TABLE x_daily_genre_kpis EXCEPT
				SELECT k.day, k.genre, k.listen_count, k.unique_listeners, k.total_listen_ms, k.avg_listen_ms_per_user
				  FROM streamkpi.daily_genre_kpis k) m),
		   (SELECT count(*) FROM (SELECT k.day, k.genre, k.listen_count, k.unique_listeners, k.total_listen_ms,
						k.avg_listen_ms_per_user
				  FROM streamkpi.daily_genre_kpis k EXCEPT TABLE x_daily_genre_kpis) m),
		   (SELECT count(*) FROM streamkpi.daily_genre_kpis)
	UNION ALL
	SELECT 'daily_genre_top_tracks',
		   (SELECT count(*) FROM (TABLE x_daily_genre_top_tracks EXCEPT
				SELECT k.day, k.genre, k.rank, k.track_id, k.track_name, k.listen_count
				  FROM streamkpi.daily_genre_top_tracks k) m),
		   (SELECT count(*) FROM (SELECT k.day, k.genre, k.rank, k.track_id, k.track_name, k.listen_count
				  FROM streamkpi.daily_genre_top_tracks k EXCEPT TABLE x_daily_genre_top_tracks) m),
		   (SELECT count(*) FROM streamkpi.daily_genre_top_tracks)
	UNION ALL
	SELECT 'daily_top_genres',
		   (SELECT count(*) FROM (TABLE x_daily_top_genres EXCEPT
				SELECT k.day, k.rank, k.genre, k.listen_count FROM streamkpi.daily_top_genres k) m),
		   (SELECT count(*) FROM (SELECT k.day, k.rank, k.genre, k.listen_count
				  FROM streamkpi.daily_top_genres k EXCEPT TABLE x_daily_top_genres) m),
		   (SELECT count(*) FROM streamkpi.daily_top_genres)
	UNION ALL
	SELECT 'trending',
		   (SELECT count(*) FROM (TABLE x_trending EXCEPT
				SELECT k.window_size, k.window_start, k.region, k.rank, k.window_end, k.track_id,
					   k.plays, k.skips, k.likes
				  FROM streamkpi.trending k) m),
		   (SELECT count(*) FROM (SELECT k.window_size, k.window_start, k.region, k.rank, k.window_end,
						k.track_id, k.plays, k.skips, k.likes
				  FROM streamkpi.trending k EXCEPT TABLE x_trending) m),
		   (SELECT count(*) FROM streamkpi.trending)
	UNION ALL
	SELECT 'track_windows',
		   (SELECT count(*) FROM (TABLE x_track_windows EXCEPT
				SELECT k.window_size, k.window_start, k.track_id, k.window_end, k.total_listens,
					   k.unique_users, k.avg_listen_ms
				  FROM streamkpi.track_windows k) m),
		   (SELECT count(*) FROM (SELECT k.window_size, k.window_start, k.track_id, k.window_end,
						k.total_listens, k.unique_users, k.avg_listen_ms
				  FROM streamkpi.track_windows k EXCEPT TABLE x_track_windows) m),
		   (SELECT count(*) FROM streamkpi.track_windows)
	UNION ALL
	SELECT 'daily_engagement',
		   (SELECT count(*) FROM (TABLE x_daily_engagement EXCEPT
				SELECT k.day, k.dimension, k.value, k.streams, k.skips, k.likes, k.unique_users,
					   k.skip_rate, k.like_rate, k.completion_rate, k.avg_listen_ms
				  FROM streamkpi.daily_engagement k) m),
		   (SELECT count(*) FROM (SELECT k.day, k.dimension, k.value, k.streams, k.skips, k.likes,
						k.unique_users, k.skip_rate, k.like_rate, k.completion_rate, k.avg_listen_ms
				  FROM streamkpi.daily_engagement k EXCEPT TABLE x_daily_engagement) m),
		   (SELECT count(*) FROM streamkpi.daily_engagement);
END
$check$;

SELECT * FROM pg_temp.kpi_check();

-- The check can fail: one wrong count shows as one missing and one extra row.
UPDATE streamkpi.daily_genre_kpis SET listen_count = listen_count + 1
 WHERE day = '2026-03-29' AND genre = 'rock';
SELECT * FROM pg_temp.kpi_check() WHERE kpi = 'daily_genre_kpis';

---------------------------------------------------------------------------
-- Some literal values.
-- DST: 2026-03-29 has 23 local hours (no '02'), 2026-10-25 has 25 hours of
-- which '02' holds two.
SELECT day, count(*) AS hours, string_agg(value, ',' ORDER BY value) FILTER (WHERE value IN ('01', '02', '03')) AS around_2am,
	   sum(streams + skips + likes) AS events
  FROM streamkpi.daily_engagement
 WHERE dimension = 'hour' AND day IN ('2026-03-29', '2026-10-25')
 GROUP BY day ORDER BY day;
SELECT count(*) FILTER (WHERE listened_at >= '2026-03-28 23:00+00' AND listened_at < '2026-03-29 22:00+00') AS mar29_23h,
	   count(*) FILTER (WHERE listened_at >= '2026-10-24 22:00+00' AND listened_at < '2026-10-25 23:00+00') AS oct25_25h
  FROM streamkpi.listens;
SELECT value, streams + skips + likes AS events FROM streamkpi.daily_engagement
 WHERE day = '2026-10-25' AND dimension = 'hour' AND value IN ('01', '02', '03') ORDER BY value;

SELECT * FROM streamkpi.daily_top_genres WHERE day = '2026-03-29' ORDER BY rank;
SELECT genre, listen_count, unique_listeners, total_listen_ms, avg_listen_ms_per_user
  FROM streamkpi.daily_genre_kpis WHERE day = '2026-03-29' ORDER BY genre;
SELECT * FROM streamkpi.daily_genre_top_tracks WHERE day = '2026-03-29' AND genre IN ('pop', 'unknown')
 ORDER BY genre, rank;
SELECT region, rank, track_id, plays, skips, likes FROM streamkpi.trending
 WHERE window_size = '10 minutes' AND window_start = '2026-03-30 12:00+00' ORDER BY region, rank;
SELECT dimension, value, streams, skips, likes, unique_users, skip_rate, like_rate, completion_rate, avg_listen_ms
  FROM streamkpi.daily_engagement
 WHERE day = '2026-03-30' AND dimension IN ('age_group', 'region') ORDER BY dimension, value;

---------------------------------------------------------------------------
-- Rollups: weekly and monthly unique listeners equal the hll union of the
-- day sketches and the exact distinct count of raw listeners.
SELECT 'weekly' AS rollup,
	   (SELECT count(*) FROM (
			(SELECT week, genre, unique_listeners FROM streamkpi.weekly_genre_listeners
			 EXCEPT
			 SELECT date_trunc('week', day)::date, genre,
					round(hll_cardinality(hll_union_agg(users)))::bigint
			   FROM streamkpi.daily_genre_users GROUP BY 1, 2)
			UNION ALL
			(SELECT date_trunc('week', d)::date, g, count(DISTINCT user_id)
			   FROM x_ev2 WHERE action = 'play' GROUP BY 1, 2
			 EXCEPT
			 SELECT week, genre, unique_listeners FROM streamkpi.weekly_genre_listeners)) m) AS differences,
	   (SELECT count(*) FROM streamkpi.weekly_genre_listeners) AS rows
UNION ALL
SELECT 'monthly',
	   (SELECT count(*) FROM (
			(SELECT month, genre, unique_listeners FROM streamkpi.monthly_genre_listeners
			 EXCEPT
			 SELECT date_trunc('month', day)::date, genre,
					round(hll_cardinality(hll_union_agg(users)))::bigint
			   FROM streamkpi.daily_genre_users GROUP BY 1, 2)
			UNION ALL
			(SELECT date_trunc('month', d)::date, g, count(DISTINCT user_id)
			   FROM x_ev2 WHERE action = 'play' GROUP BY 1, 2
			 EXCEPT
			 SELECT month, genre, unique_listeners FROM streamkpi.monthly_genre_listeners)) m),
	   (SELECT count(*) FROM streamkpi.monthly_genre_listeners);
-- Weekly and monthly top tracks come from merged day topn summaries; at this
-- size they are exact (max_error 0) and equal a ranking of raw listens.
CREATE TEMP VIEW x_period_top AS
SELECT * FROM (
	SELECT p, period, g, track_id, n,
		   rank() OVER (PARTITION BY p, period, g ORDER BY n DESC, track_id COLLATE "C") AS rank
	  FROM (SELECT 'week' AS p, date_trunc('week', d)::date AS period, g, track_id, count(*) AS n
			  FROM x_ev2 WHERE action = 'play' GROUP BY 1, 2, 3, 4
			UNION ALL
			SELECT 'month', date_trunc('month', d)::date, g, track_id, count(*)
			  FROM x_ev2 WHERE action = 'play' GROUP BY 1, 2, 3, 4) c) r
 WHERE rank <= 3;
CREATE TEMP VIEW v_period_top AS
SELECT 'week' AS p, week AS period, genre, rank, track_id, listen_count, max_error
  FROM streamkpi.weekly_genre_top_tracks
UNION ALL
SELECT 'month', month, genre, rank, track_id, listen_count, max_error
  FROM streamkpi.monthly_genre_top_tracks;
WITH x AS MATERIALIZED (SELECT * FROM x_period_top),
	 v AS MATERIALIZED (SELECT * FROM v_period_top)
SELECT p AS rollup,
	   (SELECT count(*) FROM (SELECT period, g, rank, track_id, n FROM x WHERE x.p = o.p
							  EXCEPT
							  SELECT period, genre, rank, track_id, listen_count FROM v
							   WHERE v.p = o.p) m) AS missing,
	   (SELECT count(*) FROM (SELECT period, genre, rank, track_id, listen_count FROM v
							   WHERE v.p = o.p
							  EXCEPT
							  SELECT period, g, rank, track_id, n FROM x WHERE x.p = o.p) m) AS extra,
	   count(*) AS rows, max(max_error) AS max_error
  FROM v o GROUP BY p ORDER BY p DESC;
SELECT * FROM streamkpi.weekly_genre_top_tracks
 WHERE genre = 'rock' AND week = '2026-03-30' ORDER BY rank;
-- The week of Mon 2026-03-23 holds Sat 28 and Sun 29; Mon 30 starts the next.
SELECT * FROM streamkpi.weekly_genre_listeners WHERE genre = 'rock' ORDER BY week;
SELECT * FROM streamkpi.monthly_genre_listeners WHERE genre = 'rock' ORDER BY month;

---------------------------------------------------------------------------
-- An unknown track arrives: a refresh re-attributes its events from
-- 'unknown' to its genre.
INSERT INTO streamkpi.tracks VALUES ('x1', 'Late Arrival', 'Someone', 'Later', 'jazz', 180000);
SELECT genre, listen_count FROM streamkpi.daily_genre_kpis
 WHERE day = '2026-03-29' AND genre IN ('jazz', 'unknown') ORDER BY genre;
SELECT streamkpi.refresh_kpis('2026-03-28', '2026-10-26');
SELECT genre, listen_count FROM streamkpi.daily_genre_kpis
 WHERE day = '2026-03-29' AND genre IN ('jazz', 'unknown') ORDER BY genre;
SELECT * FROM pg_temp.kpi_check();

-- Refreshing one day rewrites that day only: change events in the middle of
-- Mar 30 (away from midnight, so no window crosses into another day).
DELETE FROM streamkpi.listens
 WHERE listened_at >= '2026-03-30 08:00+00' AND listened_at < '2026-03-30 09:00+00';
INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played, action, region)
SELECT 'n' || i, 'u' || lpad(i::text, 2, '0'), CASE WHEN i = 12 THEN 'x9' ELSE 't02' END,
	   timestamptz '2026-03-30 12:03:00+00' + i * interval '1 s',
	   CASE WHEN i % 2 = 0 THEN NULL ELSE 1000 END,
	   CASE WHEN i = 11 THEN 'like' ELSE 'play' END, 'eu'
  FROM generate_series(1, 12) i;
SELECT * FROM pg_temp.kpi_check();
SELECT streamkpi.refresh_kpis('2026-03-30', '2026-03-30');
SELECT * FROM pg_temp.kpi_check();
SELECT region, rank, track_id, plays, skips, likes FROM streamkpi.trending
 WHERE window_size = '10 minutes' AND window_start = '2026-03-30 12:00+00' AND region = 'eu'
 ORDER BY rank;
SELECT bool_and(updated_at < (SELECT min(updated_at) FROM streamkpi.daily_genre_kpis
							   WHERE day = '2026-03-30')) AS other_days_untouched
  FROM streamkpi.daily_genre_kpis WHERE day <> '2026-03-30';

-- Refreshing a range without events empties it.
DELETE FROM streamkpi.listens WHERE listened_at < '2026-03-29 22:00+00';
SELECT streamkpi.refresh_kpis('2026-03-20', '2026-03-29');
SELECT * FROM pg_temp.kpi_check();
SELECT count(*) AS rows_before_mar30 FROM streamkpi.daily_engagement WHERE day < '2026-03-30';

-- The functions that call hll name its schema and search only pg_catalog:
-- no function planted in another schema can stand in for an hll function.
SELECT p.oid::regprocedure AS function, p.proconfig,
	   regexp_count(p.prosrc, '(?<![."])hll_[a-z_]+\(') AS unqualified_hll_calls,
	   regexp_count(p.prosrc, quote_ident(n.nspname) || '\.hll_cardinality\(') AS qualified_hll_calls
  FROM pg_proc p, pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'hll'
   AND p.oid IN ('streamkpi.refresh_kpis(date, date)'::regprocedure,
				 'streamkpi._kpi_derive_days(date[], text[], bigint[], date[], text[], int[], text[], bigint[], date[], text[], text[], bigint[])'::regprocedure)
 ORDER BY 1::text;

-- The reader sees the result.
SET ROLE streamkpi_reader;
SELECT count(*) > 0 AS reader_sees_kpis FROM streamkpi.daily_genre_kpis;
RESET ROLE;

DROP TABLE x_e, x_daily_genre_kpis, x_track_counts, x_daily_genre_top_tracks,
	x_daily_top_genres, x_win, x_win_counts, x_trending, x_track_windows,
	x_daily_engagement;
DROP VIEW x_period_top, v_period_top, x_ev2, x_ev;
