-- kpi_apply_new(): applied in several rounds with inserts in between, it
-- gives exactly the rows refresh_kpis() gives, table by table; refreshes in
-- between rounds count nothing twice; late events become dead letters;
-- unknown tracks move to their genre at the next correction; data checks;
-- archiving; pg_cron jobs.  (The worker itself is off here, see
-- test/regress.conf; test/t/300_kpi_worker.pl runs it.)
-- errors without CONTEXT: it would name lines of PL/pgSQL functions
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
DROP EXTENSION IF EXISTS pg_cron;
RESET client_min_messages;
SET TimeZone = 'UTC';
SET streamkpi.kpi_timezone = 'Europe/Berlin';
SET streamkpi.late_horizon = '7 days';

TRUNCATE streamkpi.listens, streamkpi.tracks, streamkpi.users,
	streamkpi.daily_genre_track_counts, streamkpi.daily_genre_users,
	streamkpi.daily_genre_track_topn, streamkpi.daily_engagement_state,
	streamkpi.window_state, streamkpi.daily_genre_kpis,
	streamkpi.daily_genre_top_tracks, streamkpi.daily_top_genres,
	streamkpi.trending, streamkpi.daily_engagement,
	streamkpi.kpi_refreshed, streamkpi.data_checks;
DELETE FROM streamkpi.dead_letters WHERE pipeline = 'kpi';
UPDATE streamkpi.kpi_state SET snapshot = pg_current_snapshot();
DO $$
DECLARE r record;
BEGIN
	FOR r IN SELECT c.oid::regclass AS part FROM pg_catalog.pg_inherits i
			   JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
			  WHERE i.inhparent = 'streamkpi.listens'::regclass
				AND (c.relname LIKE 'listens_p202610%' OR c.relname LIKE 'listens_p1990%')
	LOOP
		EXECUTE format('DROP TABLE %s', r.part);
	END LOOP;
END $$;
DROP TABLE IF EXISTS streamkpi_archive.listens_p19900101;

-- 12 known tracks in four genres ('' counts as unknown); t13, t14 arrive late.
INSERT INTO streamkpi.tracks (track_id, track_name, genre, duration_ms)
SELECT 't' || i, 'track ' || i,
	   (ARRAY['rock', 'pop', 'jazz', ''])[1 + i % 4],
	   CASE WHEN i % 5 = 0 THEN NULL ELSE 120000 + i * 1000 END
  FROM generate_series(1, 12) i;
INSERT INTO streamkpi.users (user_id, age, country, subscription)
SELECT 'u' || i, 12 + i * 2, (ARRAY['GH', 'DE', NULL])[1 + i % 3],
	   CASE WHEN i % 4 = 0 THEN 'premium' ELSE 'free' END
  FROM generate_series(1, 29) i;	-- u30 is unknown

-- Events of 2026-10-24..26 (Berlin: the 25th has 25 hours), ingested on the
-- 26th at noon unless said otherwise.
CREATE FUNCTION pg_temp.add_events(p_from int, p_to int,
								   p_ingested timestamptz DEFAULT '2026-10-26 12:00+00')
	RETURNS bigint LANGUAGE sql AS $$
	INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at,
								   ms_played, action, region, device, ingested_at)
	SELECT 'e' || i, 'u' || (1 + (i * 7) % 30), 't' || (1 + (i * i / 7) % 14),
		   timestamptz '2026-10-23 21:00+00' + (i % 2000) * interval '97 s',
		   CASE WHEN i % 6 = 0 THEN NULL ELSE 30000 + (i * 13) % 200000 END,
		   (ARRAY['play', 'play', 'play', 'skip', 'like'])[1 + i % 5],
		   (ARRAY['eu', 'us', NULL])[1 + i % 3],
		   (ARRAY['mobile', 'web'])[1 + i % 2],
		   p_ingested
	  FROM generate_series(p_from, p_to) i;
	SELECT count(*) FROM streamkpi.listens WHERE event_id IN
		(SELECT 'e' || i FROM generate_series(p_from, p_to) i)
$$;

-- The KPI tables as comparable rows (updated_at left out, topn as items).
CREATE FUNCTION pg_temp.kpi_rows()
	RETURNS TABLE (tab text, row_text text) LANGUAGE sql AS $$
	SELECT 'daily_genre_kpis', ROW(day, genre, listen_count, unique_listeners,
				total_listen_ms, avg_listen_ms_per_user)::text FROM streamkpi.daily_genre_kpis
	UNION ALL SELECT 'daily_genre_top_tracks', t::text FROM streamkpi.daily_genre_top_tracks t
	UNION ALL SELECT 'daily_top_genres', t::text FROM streamkpi.daily_top_genres t
	UNION ALL SELECT 'trending', t::text FROM streamkpi.trending t
	UNION ALL SELECT 'track_windows', t::text FROM streamkpi.track_windows t
	UNION ALL SELECT 'daily_engagement', t::text FROM streamkpi.daily_engagement t
	UNION ALL SELECT 'daily_genre_track_listens', t::text FROM streamkpi.daily_genre_track_listens t
	UNION ALL SELECT 'daily_genre_track_counts', t::text FROM streamkpi.daily_genre_track_counts t
	UNION ALL SELECT 'daily_genre_users', ROW(day, genre, hll_cardinality(users))::text
				FROM streamkpi.daily_genre_users
	UNION ALL SELECT 'daily_engagement_state', ROW(day, dimension, value, plays, skips, likes,
				completed_plays, listen_ms, hll_cardinality(users))::text
				FROM streamkpi.daily_engagement_state
	UNION ALL SELECT 'window_track_state', ROW(window_size, window_start, region, track_id,
				plays, skips, likes, listen_ms, hll_cardinality(users))::text
				FROM streamkpi.window_track_state
	UNION ALL SELECT 'daily_genre_track_topn', ROW(d.day, d.genre, i.item, i.count, i.max_error)::text
				FROM streamkpi.daily_genre_track_topn d
				CROSS JOIN LATERAL streamkpi.topn_items(d.tracks, 1000) i
$$;
-- The six KPI tables computed directly from raw events with exact distinct
-- counts (hll is exact at these sizes), written without the extension's
-- views, state tables or functions.
CREATE FUNCTION pg_temp.independent_rows()
	RETURNS TABLE (tab text, row_text text) LANGUAGE sql AS $$
	WITH ev AS (
		SELECT l.event_id, l.user_id, l.track_id, l.action, l.listened_at,
			   coalesce(l.region, 'unknown') AS region, coalesce(l.device, 'unknown') AS device,
			   date(timezone(current_setting('streamkpi.kpi_timezone'), l.listened_at)) AS d,
			   lpad(extract(hour FROM timezone(current_setting('streamkpi.kpi_timezone'), l.listened_at))::int::text, 2, '0') AS hr,
			   CASE WHEN t.genre IS NULL OR t.genre = '' THEN 'unknown' ELSE t.genre END AS g,
			   CASE WHEN l.ms_played IS NOT NULL THEN l.ms_played
					WHEN t.duration_ms IS NOT NULL THEN t.duration_ms ELSE 0 END AS ms,
			   t.duration_ms AS dur, t.track_name,
			   coalesce(u.subscription, 'unknown') AS sub, coalesce(u.country, 'unknown') AS country,
			   CASE WHEN u.age IS NULL THEN 'unknown' WHEN u.age <= 17 THEN '<18'
					WHEN u.age <= 24 THEN '18-24' WHEN u.age <= 34 THEN '25-34'
					WHEN u.age <= 44 THEN '35-44' WHEN u.age <= 54 THEN '45-54'
					ELSE '55+' END AS age_group
		  FROM streamkpi.listens l
		  LEFT JOIN streamkpi.tracks t ON t.track_id = l.track_id
		  LEFT JOIN streamkpi.users u ON u.user_id = l.user_id),
	gd AS (
		SELECT d, g, count(*) AS n, count(DISTINCT user_id) AS users, sum(ms) AS ms
		  FROM ev WHERE action = 'play' GROUP BY d, g),
	td AS (
		SELECT d, g, track_id, min(track_name) AS track_name, count(*) AS n
		  FROM ev WHERE action = 'play' GROUP BY d, g, track_id),
	win AS (
		SELECT w.window_size,
			   to_timestamp(floor(extract(epoch FROM e.listened_at) / extract(epoch FROM w.window_size))
							* extract(epoch FROM w.window_size)) AS ws,
			   e.*
		  FROM ev e CROSS JOIN streamkpi.trending_windows w),
	wrt AS (
		SELECT window_size, ws, region, track_id,
			   count(*) FILTER (WHERE action = 'play') AS plays,
			   count(*) FILTER (WHERE action = 'skip') AS skips,
			   count(*) FILTER (WHERE action = 'like') AS likes
		  FROM win GROUP BY 1, 2, 3, 4)
	SELECT 'daily_genre_kpis', ROW(d, g, n, users, ms, round(ms::numeric / users, 3))::text FROM gd
	UNION ALL
	SELECT 'daily_genre_top_tracks', ROW(d, g, r, track_id, track_name, n)::text
	  FROM (SELECT td.*, row_number() OVER (PARTITION BY d, g
					ORDER BY n DESC, track_id COLLATE "C") AS r FROM td) x
	 WHERE r <= 3
	UNION ALL
	SELECT 'daily_top_genres', ROW(d, r, g, n)::text
	  FROM (SELECT gd.*, row_number() OVER (PARTITION BY d
					ORDER BY n DESC, g COLLATE "C") AS r FROM gd) x
	 WHERE r <= 5
	UNION ALL
	SELECT 'daily_engagement', ROW(d, dim, val, plays, skips, likes, users,
			round(skips::numeric / nullif(plays + skips, 0), 6),
			round(likes::numeric / nullif(plays, 0), 6),
			round(completed::numeric / nullif(plays, 0), 6),
			round(ms::numeric / nullif(plays, 0), 3))::text
	  FROM (SELECT d, dim, val,
				   count(*) FILTER (WHERE action = 'play') AS plays,
				   count(*) FILTER (WHERE action = 'skip') AS skips,
				   count(*) FILTER (WHERE action = 'like') AS likes,
				   count(DISTINCT user_id) AS users,
				   count(*) FILTER (WHERE action = 'play' AND dur > 0 AND ms >= 0.9 * dur) AS completed,
				   coalesce(sum(ms) FILTER (WHERE action = 'play'), 0) AS ms
			  FROM ev, LATERAL (VALUES ('genre', g), ('subscription', sub), ('age_group', age_group),
									   ('hour', hr), ('country', country), ('device', device),
									   ('region', region)) v(dim, val)
			 GROUP BY 1, 2, 3) e
	UNION ALL
	SELECT 'trending', ROW(window_size, ws, region, r, ws + window_size, track_id,
			plays, skips, likes)::text
	  FROM (SELECT wrt.*, row_number() OVER (PARTITION BY window_size, ws, region
					ORDER BY plays DESC, track_id COLLATE "C") AS r
			  FROM wrt WHERE plays > 0) x
	 WHERE r <= 3
	UNION ALL
	SELECT 'track_windows', ROW(window_size, ws, track_id, ws + window_size, count(*),
			count(DISTINCT user_id), round(sum(ms)::numeric / count(*), 3))::text
	  FROM win WHERE action = 'play' GROUP BY window_size, ws, track_id
$$;
-- Rows of the KPI tables that differ from the independent computation.
CREATE VIEW pg_temp.wrong AS
SELECT tab, count(*) AS differing_rows
  FROM ((SELECT * FROM pg_temp.independent_rows()
		 EXCEPT ALL SELECT * FROM pg_temp.kpi_rows())
		UNION ALL
		(SELECT * FROM pg_temp.kpi_rows() WHERE tab IN ('daily_genre_kpis',
				'daily_genre_top_tracks', 'daily_top_genres', 'daily_engagement',
				'trending', 'track_windows')
		 EXCEPT ALL SELECT * FROM pg_temp.independent_rows())) d
 GROUP BY tab ORDER BY tab;
CREATE TEMP TABLE saved (tab text, row_text text);
-- Differences between the saved rows and the current ones, per table.
CREATE VIEW pg_temp.differences AS
SELECT tab, count(*) AS differing_rows
  FROM ((SELECT * FROM saved EXCEPT ALL SELECT * FROM pg_temp.kpi_rows())
		UNION ALL
		(SELECT * FROM pg_temp.kpi_rows() EXCEPT ALL SELECT * FROM saved)) d
 GROUP BY tab ORDER BY tab;
CREATE VIEW pg_temp.row_counts AS
SELECT tab, count(*) FROM pg_temp.kpi_rows() GROUP BY tab ORDER BY tab;

-- (partitions first: a SQL function plans its statements before running them)
SELECT streamkpi.ensure_listens_partitions('2026-10-23 00:00+00', '2026-10-27 00:00+00');

-- ---- rounds with inserts in between ----
SELECT pg_temp.add_events(1, 1500) AS inserted;
SELECT streamkpi.kpi_apply_new() AS applied;
SELECT streamkpi.kpi_apply_new() AS applied_again;	-- nothing new
SELECT pg_temp.add_events(1501, 2600) AS inserted;
-- inserted and applied in one transaction: whether the round sees the
-- transaction's own events depends on whether another transaction with a
-- later xid has completed (the snapshot's xmax); either way each event is
-- counted once, by this round or the next
BEGIN;
SELECT pg_temp.add_events(2601, 3000) AS inserted;
SELECT streamkpi.kpi_apply_new() IN (1100, 1500) AS applied_1100_or_1500;
COMMIT;
-- applied and rolled back: the next round applies these events
BEGIN;
SELECT pg_temp.add_events(3001, 3400) AS inserted;
SELECT streamkpi.kpi_apply_new() IN (0, 400, 800) AS applied_0_400_or_800;
ROLLBACK;
SELECT pg_temp.add_events(3001, 3400) AS inserted;
-- an insert that rolls back is never counted
BEGIN;
SELECT pg_temp.add_events(9001, 9100) AS inserted;
ROLLBACK;
SELECT streamkpi.kpi_apply_new() IN (400, 800) AS applied_400_or_800;
SELECT streamkpi.kpi_apply_new() AS applied_nothing_left;
SELECT events, late_events FROM streamkpi.kpi_state;

-- the incremental rows equal an independent computation over raw events
SELECT * FROM pg_temp.wrong;			-- no rows
SELECT tab, count(*) AS independent_rows FROM pg_temp.independent_rows() GROUP BY tab ORDER BY tab;
-- the comparison can fail: one wrong value is one row each way
BEGIN;
UPDATE streamkpi.daily_engagement SET completion_rate = completion_rate + 0.000001
 WHERE (day, dimension, value) = ('2026-10-25', 'hour', '02');
UPDATE streamkpi.trending SET likes = likes + 1
 WHERE (window_size, window_start, region, rank) =
	   (SELECT window_size, window_start, region, rank FROM streamkpi.trending
		 WHERE window_size = '5 minutes' ORDER BY window_start, region, rank LIMIT 1);
SELECT * FROM pg_temp.wrong;
ROLLBACK;
-- and the rows of refresh_kpis() on the same events
INSERT INTO saved SELECT * FROM pg_temp.kpi_rows();
SELECT * FROM pg_temp.row_counts;
SELECT streamkpi.refresh_kpis('2026-10-23', '2026-10-27');
SELECT * FROM pg_temp.differences;		-- no rows
-- and listen counts equal the raw events'
SELECT k.day, k.n AS kpi_listens, r.n AS raw_listens
  FROM (SELECT day, sum(listen_count) AS n FROM streamkpi.daily_genre_kpis GROUP BY day) k
  FULL JOIN (SELECT (listened_at AT TIME ZONE 'Europe/Berlin')::date AS day, count(*) AS n
			   FROM streamkpi.listens WHERE action = 'play' GROUP BY 1) r USING (day)
 ORDER BY day;

-- ---- a refresh between rounds counts nothing twice ----
-- events inserted before a refresh are counted by it and skipped by the
-- next round; events inserted after it are counted by that round
SELECT pg_temp.add_events(3401, 3700) AS inserted;
SELECT streamkpi.refresh_kpis('2026-10-25', '2026-10-25');
SELECT from_day, to_day FROM streamkpi.kpi_refreshed;
SELECT pg_temp.add_events(3701, 3900) AS inserted;
SELECT streamkpi.kpi_apply_new() AS applied;
SELECT count(*) AS refreshed_ranges_left FROM streamkpi.kpi_refreshed;
TRUNCATE saved;
INSERT INTO saved SELECT * FROM pg_temp.kpi_rows();
SELECT streamkpi.refresh_kpis('2026-10-23', '2026-10-27');
SELECT * FROM pg_temp.differences;		-- no rows
SELECT streamkpi.kpi_apply_new() AS applied;	-- the refresh's range is forgotten: nothing

-- ---- late events ----
-- 2026-10-24 events ingested 6 days later are counted; ingested 8 days
-- later they are dead letters, gone from listens
SELECT sum(listen_count) AS oct24_listens FROM streamkpi.daily_genre_kpis WHERE day = '2026-10-24';
SELECT pg_temp.add_events(4001, 4100, '2026-10-30 21:00+00') AS inserted;	-- in time
SELECT pg_temp.add_events(4101, 4300, '2026-11-01 20:00+00') AS inserted;	-- some too late
SELECT count(*) FILTER (WHERE listened_at < ingested_at - interval '7 days') AS too_late,
	   count(*) FILTER (WHERE listened_at < ingested_at - interval '7 days' AND action = 'play') AS too_late_plays,
	   count(*) FILTER (WHERE listened_at >= ingested_at - interval '7 days' AND action = 'play'
						  AND (listened_at AT TIME ZONE 'Europe/Berlin')::date = '2026-10-24') AS oct24_plays_in_time
  FROM streamkpi.listens WHERE event_id IN (SELECT 'e' || i FROM generate_series(4001, 4300) i);
SELECT streamkpi.kpi_apply_new() AS applied;
SELECT late_events FROM streamkpi.kpi_state;
SELECT sum(listen_count) AS oct24_listens FROM streamkpi.daily_genre_kpis WHERE day = '2026-10-24';
SELECT pipeline, topic, partition, "offset", count(*),
	   bool_and(error LIKE 'late event: listened at 2026-10-2% ingested at 2026-11-01 %, later than streamkpi.late_horizon (7 days); not counted') AS reason_given,
	   bool_and(convert_from(payload, 'UTF8')::jsonb ->> 'event_id' = convert_from(key, 'UTF8')) AS payload_is_the_event,
	   bool_and(NOT EXISTS (SELECT FROM streamkpi.listens l
							 WHERE l.event_id = convert_from(d.key, 'UTF8'))) AS gone_from_listens
  FROM streamkpi.dead_letters d WHERE pipeline = 'kpi' GROUP BY 1, 2, 3, 4;
TRUNCATE saved;
INSERT INTO saved SELECT * FROM pg_temp.kpi_rows();
SELECT streamkpi.refresh_kpis('2026-10-23', '2026-10-27');
SELECT * FROM pg_temp.differences;		-- no rows: refresh does not count them either
SELECT * FROM pg_temp.wrong;			-- no rows

-- ---- unknown tracks move to their genre at the next correction ----
SELECT genre, sum(listen_count) FROM streamkpi.daily_genre_kpis
 WHERE day = '2026-10-25' GROUP BY genre ORDER BY genre;
INSERT INTO streamkpi.tracks (track_id, track_name, genre, duration_ms)
VALUES ('t13', 'track 13', 'rock', 200000), ('t14', 'track 14', 'folk', 180000);
SELECT pg_temp.add_events(5001, 5200) AS inserted;
SELECT streamkpi.kpi_apply_new() AS applied;	-- new events of t13/t14 count under their genre
SELECT genre, sum(listen_count) FROM streamkpi.daily_genre_kpis
 WHERE day = '2026-10-25' GROUP BY genre ORDER BY genre;
SELECT streamkpi.refresh_kpis('2026-10-23', '2026-10-27');	-- what the nightly correction does
SELECT genre, sum(listen_count) FROM streamkpi.daily_genre_kpis
 WHERE day = '2026-10-25' GROUP BY genre ORDER BY genre;
SELECT count(*) AS unknown_t13_t14 FROM streamkpi.daily_genre_track_listens
 WHERE genre = 'unknown' AND track_id IN ('t13', 't14');
SELECT * FROM pg_temp.wrong;			-- no rows

-- ---- weekly and monthly unique listeners come from the day sketches ----
-- (exact here: hll's explicit representation holds 30 users)
SELECT w.week, w.genre, w.unique_listeners, x.exact
  FROM streamkpi.weekly_genre_listeners w
  FULL JOIN (SELECT date_trunc('week', date(timezone('Europe/Berlin', l.listened_at)))::date AS week,
					CASE WHEN t.genre IS NULL OR t.genre = '' THEN 'unknown' ELSE t.genre END AS genre,
					count(DISTINCT l.user_id) AS exact
			   FROM streamkpi.listens l LEFT JOIN streamkpi.tracks t USING (track_id)
			  WHERE l.action = 'play' GROUP BY 1, 2) x USING (week, genre)
 ORDER BY 1, 2;
SELECT m.month, m.genre, m.unique_listeners, x.exact
  FROM streamkpi.monthly_genre_listeners m
  FULL JOIN (SELECT date_trunc('month', date(timezone('Europe/Berlin', l.listened_at)))::date AS month,
					CASE WHEN t.genre IS NULL OR t.genre = '' THEN 'unknown' ELSE t.genre END AS genre,
					count(DISTINCT l.user_id) AS exact
			   FROM streamkpi.listens l LEFT JOIN streamkpi.tracks t USING (track_id)
			  WHERE l.action = 'play' GROUP BY 1, 2) x USING (month, genre)
 ORDER BY 1, 2;
-- the rollups read day sketches, not listens: without them they are empty
BEGIN;
DELETE FROM streamkpi.daily_genre_users;
SELECT (SELECT count(*) FROM streamkpi.weekly_genre_listeners) AS weekly_rows,
	   (SELECT count(*) FROM streamkpi.monthly_genre_listeners) AS monthly_rows;
ROLLBACK;

-- ---- isolation: a snapshot older than the stored one would miss events ----
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT streamkpi.kpi_apply_new();
ROLLBACK;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT streamkpi.refresh_kpis('2026-10-25', '2026-10-25');
ROLLBACK;
SELECT streamkpi.kpi_nightly_correction();	-- today's range: runs, no error

-- ---- data checks ----
SELECT streamkpi.run_data_checks(100000) AS not_ok;
SELECT check_name, day, ok, expected, actual FROM streamkpi.data_checks
 WHERE check_name IN ('raw_vs_kpi', 'kpi_lag') ORDER BY check_name, day;
UPDATE streamkpi.daily_genre_kpis SET listen_count = listen_count + 1
 WHERE day = '2026-10-25' AND genre = 'rock';
SELECT streamkpi.run_data_checks(100000) AS not_ok;
SELECT day, ok, expected, actual, detail FROM streamkpi.data_checks
 WHERE check_name = 'raw_vs_kpi' AND NOT ok;
-- the 200 dead letters were written now, the listens ingested weeks ago
SELECT ok, expected, actual FROM streamkpi.data_checks WHERE check_name = 'dead_letters';

-- ---- settings ----
SET streamkpi.late_horizon = 'soon';
SET streamkpi.late_horizon = '-1 day';
SET streamkpi.retention = '0';
SET streamkpi.late_horizon = '36 hours';
SELECT streamkpi.late_horizon();
RESET streamkpi.late_horizon;

-- ---- another time zone: Asia/Kathmandu (UTC+5:45) ----
-- Local midnight falls inside 10-minute windows.  Everything applied again
-- from scratch, in one round, under the new zone.
SET streamkpi.kpi_timezone = 'Asia/Kathmandu';
TRUNCATE streamkpi.daily_genre_track_counts, streamkpi.daily_genre_users,
	streamkpi.daily_genre_track_topn, streamkpi.daily_engagement_state,
	streamkpi.window_state, streamkpi.daily_genre_kpis,
	streamkpi.daily_genre_top_tracks, streamkpi.daily_top_genres,
	streamkpi.trending, streamkpi.daily_engagement,
	streamkpi.kpi_refreshed;
UPDATE streamkpi.kpi_state SET snapshot = '1:1:';	-- no transaction applied yet
SELECT streamkpi.kpi_apply_new() = (SELECT count(*) FROM streamkpi.listens) AS all_applied;
SELECT * FROM pg_temp.wrong;			-- no rows
SELECT day, sum(listen_count) AS listens FROM streamkpi.daily_genre_kpis GROUP BY day ORDER BY day;
TRUNCATE saved;
INSERT INTO saved SELECT * FROM pg_temp.kpi_rows();
SELECT streamkpi.refresh_kpis('2026-10-24', '2026-10-25');	-- part of the range
SELECT * FROM pg_temp.differences;		-- no rows
SELECT streamkpi.refresh_kpis('2026-10-20', '2026-10-30');
SELECT * FROM pg_temp.differences;		-- no rows
RESET streamkpi.kpi_timezone;
SET streamkpi.kpi_timezone = 'Europe/Berlin';

-- ---- archiving ----
SELECT streamkpi.ensure_listens_partitions('1990-01-01 10:00+00', '1990-01-01 10:00+00');
INSERT INTO streamkpi.listens (user_id, track_id, listened_at) VALUES ('u1', 't1', '1990-01-01 10:00+00');
SET streamkpi.retention = '20 years';
SELECT * FROM streamkpi.archive_listens();
SELECT * FROM streamkpi.archive_listens();	-- nothing more
SELECT count(*) AS archived_rows FROM streamkpi_archive.listens_p19900101;
SELECT count(*) AS left_in_listens FROM streamkpi.listens WHERE listened_at < '2000-01-01';
RESET streamkpi.retention;
DROP TABLE streamkpi_archive.listens_p19900101;

-- ---- pg_cron jobs ----
SELECT * FROM streamkpi.schedule_jobs();	-- pg_cron is preloaded but not created here
SELECT streamkpi.unschedule_jobs();
SET client_min_messages = warning;
CREATE EXTENSION pg_cron;
RESET client_min_messages;
CREATE TEMP TABLE first_ids AS SELECT jobid, jobname FROM streamkpi.schedule_jobs();
SELECT jobname, schedule, command FROM streamkpi.schedule_jobs() ORDER BY jobname;
SELECT j.jobname, j.schedule, j.command, j.database = current_database() AS here,
	   j.jobid = f.jobid AS same_job
  FROM cron.job j JOIN first_ids f USING (jobname) ORDER BY j.jobname;
SELECT count(*) AS jobs FROM cron.job;
SELECT streamkpi.unschedule_jobs() AS removed;
SELECT streamkpi.unschedule_jobs() AS removed;
SELECT count(*) AS jobs FROM cron.job;
DROP EXTENSION pg_cron;

-- ---- the round's event test ----
-- streamkpi._kpi_in_round() is the SQL snapshot test, whatever the
-- transaction ids and snapshots; through an index (its support function
-- gives the ingest_xid range as a lossy index condition) it finds the same
-- rows as a sequential scan does.
CREATE TEMP TABLE x_round (xid xid8, s_old pg_snapshot, s_new pg_snapshot);
INSERT INTO x_round
SELECT x::text::xid8, o::pg_snapshot, n::pg_snapshot
  FROM generate_series(1, 40) x,
	   (VALUES ('10:20:12,15'), ('5:5:'), ('25:30:26')) o(o),
	   (VALUES ('18:30:18,25'), ('20:20:'), ('35:41:36,40')) n(n);
SELECT count(*) AS cases,
	   count(*) FILTER (WHERE streamkpi._kpi_in_round(xid, s_old, s_new, 100)
						IS DISTINCT FROM (pg_visible_in_snapshot(xid, s_new)
										  AND NOT pg_visible_in_snapshot(xid, s_old))) AS differ,
	   count(*) FILTER (WHERE streamkpi._kpi_in_round(xid, s_old, s_new, 100)) AS in_round
  FROM x_round;
CREATE TEMP TABLE x_xids AS SELECT x::text::xid8 AS xid FROM generate_series(1, 40) x;
CREATE INDEX ON x_xids (xid);
ANALYZE x_xids;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT xid FROM x_xids
 WHERE streamkpi._kpi_in_round(xid, '10:20:12,15', '35:41:36,40', 20);
SELECT array_agg(xid ORDER BY xid) AS by_index FROM x_xids
 WHERE streamkpi._kpi_in_round(xid, '10:20:12,15', '35:41:36,40', 20);
RESET enable_seqscan;
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SELECT array_agg(xid ORDER BY xid) AS by_scan FROM x_xids
 WHERE streamkpi._kpi_in_round(xid, '10:20:12,15', '35:41:36,40', 20);
RESET enable_indexscan;
RESET enable_bitmapscan;
DROP TABLE x_round, x_xids;

-- ---- clean up for the tests that follow ----
TRUNCATE streamkpi.listens, streamkpi.tracks, streamkpi.users,
	streamkpi.daily_genre_track_counts, streamkpi.daily_genre_users,
	streamkpi.daily_genre_track_topn, streamkpi.daily_engagement_state,
	streamkpi.window_state, streamkpi.daily_genre_kpis,
	streamkpi.daily_genre_top_tracks, streamkpi.daily_top_genres,
	streamkpi.trending, streamkpi.daily_engagement,
	streamkpi.kpi_refreshed, streamkpi.data_checks;
DELETE FROM streamkpi.dead_letters WHERE pipeline = 'kpi';
