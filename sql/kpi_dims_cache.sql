-- The tracks and users that kpi_apply_new() keeps from round to round
-- (src/kpi_dims_cache.c) are exactly those of the round's snapshot: after
-- every kind of write to streamkpi.tracks and streamkpi.users between
-- rounds, each round's KPI rows match the events joined with the tables as
-- they are then.  Every round counts the events of a day of its own.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
DROP EXTENSION IF EXISTS pg_cron;
RESET client_min_messages;
SET TimeZone = 'UTC';
SET streamkpi.kpi_timezone = 'UTC';
SET streamkpi.late_horizon = '7 days';

TRUNCATE streamkpi.listens, streamkpi.tracks, streamkpi.users,
	streamkpi.daily_genre_track_counts, streamkpi.daily_genre_users,
	streamkpi.daily_genre_track_topn, streamkpi.daily_engagement_state,
	streamkpi.window_state, streamkpi.daily_genre_kpis,
	streamkpi.daily_genre_top_tracks, streamkpi.daily_top_genres,
	streamkpi.trending, streamkpi.daily_engagement,
	streamkpi.kpi_refreshed, streamkpi.data_checks;
UPDATE streamkpi.kpi_state SET snapshot = pg_current_snapshot();
CREATE TEMP TABLE saved_state AS SELECT rounds, events, late_events FROM streamkpi.kpi_state;
SELECT streamkpi.ensure_listens_partitions('2026-10-01 00:00+00', '2026-10-12 00:00+00');

INSERT INTO streamkpi.tracks (track_id, track_name, genre, duration_ms)
SELECT 't' || i, 'track ' || i, (ARRAY['rock', 'pop', 'jazz', 'folk'])[1 + i % 4],
	   150000 + i * 1000
  FROM generate_series(1, 20) i;
INSERT INTO streamkpi.users (user_id, age, country, subscription)
SELECT 'u' || i, 15 + i, (ARRAY['DE', 'GH', 'US'])[1 + i % 3],
	   CASE WHEN i % 4 = 0 THEN 'premium' ELSE 'free' END
  FROM generate_series(1, 50) i;

-- n events on 2026-10-<day>, of the given tracks and users in turn
CREATE FUNCTION pg_temp.add_events(p_day int, p_n int, p_tracks text[], p_users text[])
	RETURNS void LANGUAGE sql AS $$
	INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at,
								   ms_played, action, region, device, ingested_at)
	SELECT 'd' || p_day || 'e' || i,
		   p_users[1 + (i * 7) % cardinality(p_users)],
		   p_tracks[1 + i % cardinality(p_tracks)],
		   make_timestamptz(2026, 10, p_day, i % 24, i % 60, 0, 'UTC'),
		   CASE WHEN i % 5 = 0 THEN NULL ELSE 100000 + i * 997 % 100000 END,
		   (ARRAY['play', 'play', 'skip', 'like'])[1 + i % 4], 'eu', 'web',
		   make_timestamptz(2026, 10, p_day, 23, 59, 0, 'UTC')
	  FROM generate_series(1, p_n) i
$$;

-- KPI rows of a day that differ from the day's events joined with the
-- tables now, written without the extension's functions
CREATE FUNCTION pg_temp.wrong(p_day int)
	RETURNS TABLE (tab text, differing_rows bigint) LANGUAGE sql AS $$
	WITH ev AS (
		SELECT l.user_id, l.action,
			   CASE WHEN t.genre IS NULL OR t.genre = '' THEN 'unknown' ELSE t.genre END AS g,
			   CASE WHEN l.ms_played IS NOT NULL THEN l.ms_played
					ELSE coalesce(t.duration_ms, 0) END AS ms,
			   coalesce(u.subscription, 'unknown') AS sub,
			   coalesce(u.country, 'unknown') AS country,
			   CASE WHEN u.age IS NULL THEN 'unknown' WHEN u.age <= 17 THEN '<18'
					WHEN u.age <= 24 THEN '18-24' WHEN u.age <= 34 THEN '25-34'
					WHEN u.age <= 44 THEN '35-44' WHEN u.age <= 54 THEN '45-54'
					ELSE '55+' END AS age_group
		  FROM streamkpi.listens l
		  LEFT JOIN streamkpi.tracks t ON t.track_id = l.track_id
		  LEFT JOIN streamkpi.users u ON u.user_id = l.user_id
		 WHERE l.listened_at >= make_timestamptz(2026, 10, p_day, 0, 0, 0, 'UTC')
		   AND l.listened_at < make_timestamptz(2026, 10, p_day + 1, 0, 0, 0, 'UTC')),
	expected AS (
		SELECT 'daily_genre_kpis' AS tab, ROW(g, count(*), count(DISTINCT user_id), sum(ms))::text AS r
		  FROM ev WHERE action = 'play' GROUP BY g
		UNION ALL
		SELECT 'daily_engagement', ROW(dim, val, count(*) FILTER (WHERE action = 'play'),
				count(*) FILTER (WHERE action = 'skip'), count(*) FILTER (WHERE action = 'like'),
				count(DISTINCT user_id))::text
		  FROM ev, LATERAL (VALUES ('genre', g), ('subscription', sub),
								   ('age_group', age_group), ('country', country)) v(dim, val)
		 GROUP BY dim, val),
	actual AS (
		SELECT 'daily_genre_kpis' AS tab,
			   ROW(genre, listen_count, unique_listeners, total_listen_ms)::text AS r
		  FROM streamkpi.daily_genre_kpis WHERE day = make_date(2026, 10, p_day)
		UNION ALL
		SELECT 'daily_engagement', ROW(dimension, value, streams, skips, likes, unique_users)::text
		  FROM streamkpi.daily_engagement
		 WHERE day = make_date(2026, 10, p_day)
		   AND dimension IN ('genre', 'subscription', 'age_group', 'country'))
	SELECT tab, count(*) FROM ((TABLE expected EXCEPT ALL TABLE actual)
							   UNION ALL (TABLE actual EXCEPT ALL TABLE expected)) d
	 GROUP BY tab ORDER BY tab
$$;

-- a day's genres and countries as counted, for the record
CREATE FUNCTION pg_temp.counted(p_day int)
	RETURNS TABLE (dimension text, value text, streams bigint) LANGUAGE sql AS $$
	SELECT dimension, value, streams FROM streamkpi.daily_engagement
	 WHERE day = make_date(2026, 10, p_day) AND dimension IN ('genre', 'country')
	 ORDER BY 1, 2
$$;

-- ---- a large round reads both tables whole; the cache keeps them ----
SELECT pg_temp.add_events(1, 1200,
						  ARRAY(SELECT 't' || i FROM generate_series(1, 20) i),
						  ARRAY(SELECT 'u' || i FROM generate_series(1, 50) i));
SELECT streamkpi.kpi_apply_new() AS applied;
SELECT * FROM pg_temp.wrong(1);
SELECT count(*) AS caches FROM pg_backend_memory_contexts
 WHERE name = 'streamkpi KPI dims cache' AND total_bytes > 65536;

-- ---- writes in transactions of their own ----
UPDATE streamkpi.tracks SET genre = 'blues' WHERE track_id = 't1';
INSERT INTO streamkpi.tracks (track_id, track_name, genre, duration_ms)
VALUES ('t21', 'track 21', 'ska', 200000);
UPDATE streamkpi.users SET country = 'FR' WHERE user_id = 'u1';
DELETE FROM streamkpi.users WHERE user_id = 'u2';
INSERT INTO streamkpi.users (user_id, age, country, subscription)
VALUES ('u51', 70, 'NG', 'family');
SELECT pg_temp.add_events(2, 40, ARRAY['t1', 't2', 't21'], ARRAY['u1', 'u2', 'u3', 'u51']);
SELECT streamkpi.kpi_apply_new() AS applied;
SELECT * FROM pg_temp.wrong(2);
SELECT * FROM pg_temp.counted(2);

-- ---- a write rolled back changes nothing ----
BEGIN;
UPDATE streamkpi.tracks SET genre = 'never' WHERE track_id IN ('t1', 't2');
UPDATE streamkpi.users SET country = 'XX';
ROLLBACK;
SELECT pg_temp.add_events(3, 40, ARRAY['t1', 't2', 't21'], ARRAY['u1', 'u3', 'u51']);
SELECT streamkpi.kpi_apply_new() AS applied;
SELECT * FROM pg_temp.wrong(3);

-- ---- a round in the transaction that wrote: its own writes count ----
SELECT pg_temp.add_events(4, 40, ARRAY['t1', 't2', 't3'], ARRAY['u1', 'u3', 'u4']);
BEGIN;
UPDATE streamkpi.tracks SET genre = 'punk' WHERE track_id = 't2';
UPDATE streamkpi.users SET country = 'SE' WHERE user_id = 'u3';
SELECT streamkpi.kpi_apply_new() AS applied;
SELECT * FROM pg_temp.wrong(4);
COMMIT;
-- and the next round, in a transaction of its own, caches t3 and u4
SELECT pg_temp.add_events(5, 40, ARRAY['t2', 't3'], ARRAY['u3', 'u4']);
SELECT streamkpi.kpi_apply_new() AS applied;
SELECT * FROM pg_temp.wrong(5);

-- ---- a write with session_replication_role = replica ----
SET session_replication_role = replica;
UPDATE streamkpi.tracks SET genre = 'grunge' WHERE track_id = 't3';
UPDATE streamkpi.users SET country = 'NO' WHERE user_id = 'u4';
RESET session_replication_role;
SELECT pg_temp.add_events(6, 40, ARRAY['t2', 't3'], ARRAY['u3', 'u4']);
SELECT streamkpi.kpi_apply_new() AS applied;
SELECT * FROM pg_temp.wrong(6);
SELECT * FROM pg_temp.counted(6);

-- ---- a write while the triggers were disabled ----
ALTER TABLE streamkpi.tracks DISABLE TRIGGER kpi_dims_cache,
	DISABLE TRIGGER kpi_dims_cache_rows;
UPDATE streamkpi.tracks SET genre = 'swing' WHERE track_id = 't3';
ALTER TABLE streamkpi.tracks ENABLE ALWAYS TRIGGER kpi_dims_cache,
	ENABLE ALWAYS TRIGGER kpi_dims_cache_rows;
SELECT pg_temp.add_events(7, 40, ARRAY['t2', 't3'], ARRAY['u3', 'u4']);
SELECT streamkpi.kpi_apply_new() AS applied;
SELECT * FROM pg_temp.wrong(7);
SELECT * FROM pg_temp.counted(7);

-- ---- a write while the trigger function was replaced by one that does
-- nothing, put back before the next round ----
CREATE OR REPLACE FUNCTION streamkpi._kpi_dims_changed() RETURNS trigger
	LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
UPDATE streamkpi.tracks SET genre = 'bebop' WHERE track_id = 't3';
CREATE OR REPLACE FUNCTION streamkpi._kpi_dims_changed() RETURNS trigger
	AS '$libdir/streamkpi', 'streamkpi_kpi_dims_changed' LANGUAGE C;
SELECT pg_temp.add_events(11, 40, ARRAY['t2', 't3'], ARRAY['u3', 'u4']);
SELECT streamkpi.kpi_apply_new() AS applied;
SELECT * FROM pg_temp.wrong(11);
SELECT * FROM pg_temp.counted(11);

-- ---- TRUNCATE, then other users ----
TRUNCATE streamkpi.users;
INSERT INTO streamkpi.users (user_id, age, country, subscription)
SELECT 'u' || i, 30, 'IT', 'student' FROM generate_series(1, 30) i;
SELECT pg_temp.add_events(8, 40, ARRAY['t2', 't3'], ARRAY['u3', 'u4', 'u40']);
SELECT streamkpi.kpi_apply_new() AS applied;
SELECT * FROM pg_temp.wrong(8);
SELECT * FROM pg_temp.counted(8);

-- ---- a large round again, then a column changed by ALTER TABLE ----
SELECT pg_temp.add_events(9, 1200,
						  ARRAY(SELECT 't' || i FROM generate_series(1, 21) i),
						  ARRAY(SELECT 'u' || i FROM generate_series(1, 50) i));
SELECT streamkpi.kpi_apply_new() AS applied;
SELECT * FROM pg_temp.wrong(9);
ALTER TABLE streamkpi.users ALTER COLUMN country TYPE text USING lower(country);
SELECT pg_temp.add_events(10, 40, ARRAY['t2'], ARRAY['u5', 'u6']);
SELECT streamkpi.kpi_apply_new() AS applied;
SELECT * FROM pg_temp.wrong(10);
SELECT * FROM pg_temp.counted(10);
UPDATE streamkpi.users SET country = upper(country);

-- the trigger writes nothing and checks nothing; it cannot be called
SELECT streamkpi._kpi_dims_changed();

-- leave the state as found
TRUNCATE streamkpi.listens, streamkpi.tracks, streamkpi.users,
	streamkpi.daily_genre_track_counts, streamkpi.daily_genre_users,
	streamkpi.daily_genre_track_topn, streamkpi.daily_engagement_state,
	streamkpi.window_state, streamkpi.daily_genre_kpis,
	streamkpi.daily_genre_top_tracks, streamkpi.daily_top_genres,
	streamkpi.trending, streamkpi.daily_engagement;
UPDATE streamkpi.kpi_state k SET rounds = s.rounds, events = s.events,
	late_events = s.late_events, snapshot = pg_current_snapshot()
  FROM saved_state s;
