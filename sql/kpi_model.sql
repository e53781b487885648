-- Data model: day partitions of streamkpi.listens created in any order, the
-- default partition as safety net, draining it, roles and pg_dump marks.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
RESET client_min_messages;
SET TimeZone = 'UTC';

TRUNCATE streamkpi.listens, streamkpi.tracks, streamkpi.users;
-- This test's days are January 2025; start from none of them.
CREATE PROCEDURE pg_temp.drop_test_partitions() LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
	FOR r IN SELECT c.oid::regclass AS part FROM pg_catalog.pg_inherits i
			   JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
			  WHERE i.inhparent = 'streamkpi.listens'::regclass
				AND c.relname LIKE 'listens_p202501%'
	LOOP
		EXECUTE format('DROP TABLE %s', r.part);
	END LOOP;
END $$;
CALL pg_temp.drop_test_partitions();

-- The partitions this test looks at (other tests may have made others).
CREATE TEMP VIEW parts AS
SELECT c.relname, pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound
  FROM pg_catalog.pg_inherits i
  JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'streamkpi.listens'::regclass
   AND (c.relname LIKE 'listens_p202501%' OR c.relname = 'listens_default')
 ORDER BY c.relname;

-- Created out of order: a later day first, then a range, then an earlier day.
SELECT streamkpi.ensure_listens_partitions('2025-01-10 12:00+00', '2025-01-10 13:00+00');
SELECT streamkpi.ensure_listens_partitions('2025-01-05 00:00+00', '2025-01-06 23:59:59+00');
-- Boundaries are UTC days whatever the session time zone: 23:30 in New York
-- on Jan 2 is Jan 3 UTC.
SET TimeZone = 'America/New_York';
SELECT streamkpi.ensure_listens_partitions('2025-01-02 23:30', '2025-01-02 23:30');
SET TimeZone = 'UTC';
-- Existing days: nothing to do.
SELECT streamkpi.ensure_listens_partitions('2025-01-05 03:00+00', '2025-01-06 03:00+00');
SELECT * FROM parts;

-- No partition for Jan 1, 8 or 9: those rows land in the default partition,
-- the INSERT does not fail.
INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played, action)
VALUES ('a', 'u1', 't1', '2025-01-05 10:00+00', 1000, 'play'),
	   ('b', 'u1', 't1', '2025-01-08 00:00+00', NULL, 'play'),
	   ('c', 'u2', 't2', '2025-01-08 23:59:59.999999+00', 5, 'skip'),
	   ('d', 'u2', 't2', '2025-01-01 07:00+00', 7, 'like'),
	   ('e', 'u3', 't1', '2025-01-03 00:00+00', 9, 'play'),
	   ('f', 'u3', 't1', '2025-01-09 00:00+00', 9, 'play');
SELECT (SELECT relname FROM pg_catalog.pg_class c WHERE c.oid = l.tableoid) AS part, event_id
  FROM streamkpi.listens l ORDER BY event_id;

-- Defaults of the columns beyond the input.
BEGIN;
INSERT INTO streamkpi.listens (user_id, track_id, listened_at)
VALUES ('u9', 't9', '2025-01-05 11:00+00');
SELECT action, length(event_id) AS event_id_len, ingested_at = now() AS ingested_now,
	   ingest_xid = pg_current_xact_id() AS inserting_xid
  FROM streamkpi.listens WHERE user_id = 'u9';
ROLLBACK;

-- Creating Jan 7..8 moves the two rows of Jan 8 out of the default
-- partition first.
SELECT streamkpi.ensure_listens_partitions('2025-01-07 05:00+00', '2025-01-08 06:00+00');
SELECT (SELECT relname FROM pg_catalog.pg_class c WHERE c.oid = l.tableoid) AS part, event_id
  FROM streamkpi.listens l ORDER BY event_id;

-- The maintenance function empties the default partition.
SELECT streamkpi.drain_listens_default() AS moved;
SELECT streamkpi.drain_listens_default() AS moved_again;
SELECT count(*) AS left_in_default FROM streamkpi.listens_default;
SELECT (SELECT relname FROM pg_catalog.pg_class c WHERE c.oid = l.tableoid) AS part, event_id
  FROM streamkpi.listens l ORDER BY event_id;
SELECT * FROM parts;
-- Each row sits in the partition of its UTC day.
SELECT count(*) AS misplaced FROM streamkpi.listens l
 WHERE (SELECT relname FROM pg_catalog.pg_class c WHERE c.oid = l.tableoid)
	   <> 'listens_p' || to_char(listened_at AT TIME ZONE 'UTC', 'YYYYMMDD');
-- Partitions carry their two indexes and no leftover bounds constraint.
SELECT count(*) AS indexes FROM pg_catalog.pg_index
 WHERE indrelid = 'streamkpi.listens_p20250108'::regclass;
SELECT conname FROM pg_catalog.pg_constraint
 WHERE conrelid = 'streamkpi.listens_p20250108'::regclass ORDER BY 1;
-- Queries on a day prune to its partition.
EXPLAIN (COSTS OFF) SELECT count(*) FROM streamkpi.listens
 WHERE listened_at >= '2025-01-08 00:00+00' AND listened_at < '2025-01-09 00:00+00';

-- Bad input.
-- errors without their PL/pgSQL line numbers, so the function can be laid out freely
\set SHOW_CONTEXT never
SELECT streamkpi.ensure_listens_partitions(NULL, now());
SELECT streamkpi.ensure_listens_partitions('2025-01-02', '2025-01-01');
SELECT streamkpi.ensure_listens_partitions('1970-01-01', '2025-01-01');
\set SHOW_CONTEXT errors
\set VERBOSITY terse
INSERT INTO streamkpi.listens (user_id, track_id, listened_at, action)
VALUES ('u1', 't1', '2025-01-05 10:00+00', 'pause');
\set VERBOSITY default
-- Windows must be bin-able.
INSERT INTO streamkpi.trending_windows VALUES (interval '1 month');
INSERT INTO streamkpi.trending_windows VALUES (interval '0');
SELECT window_size, top_n FROM streamkpi.trending_windows ORDER BY 1;

-- Roles: the reader sees KPI tables and rollups and nothing else.
SELECT c.relname
  FROM pg_catalog.pg_class c
 WHERE c.relnamespace = 'streamkpi'::regnamespace
   AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND pg_catalog.has_table_privilege('streamkpi_reader', c.oid, 'SELECT')
 ORDER BY 1;
SELECT pg_catalog.has_table_privilege('streamkpi_reader', 'streamkpi.listens', 'SELECT') AS listens,
	   pg_catalog.has_table_privilege('streamkpi_reader', 'streamkpi.daily_genre_users', 'SELECT') AS sketches,
	   pg_catalog.has_table_privilege('streamkpi_reader', 'streamkpi.daily_genre_kpis', 'INSERT') AS kpi_insert,
	   pg_catalog.has_function_privilege('streamkpi_reader', 'streamkpi.refresh_kpis(date,date)', 'EXECUTE') AS refresh,
	   pg_catalog.has_function_privilege('streamkpi_admin', 'streamkpi.refresh_kpis(date,date)', 'EXECUTE') AS admin_refresh,
	   pg_catalog.has_function_privilege('streamkpi_admin', 'streamkpi.ensure_listens_partitions(timestamptz,timestamptz)', 'EXECUTE') AS admin_ensure;
SET ROLE streamkpi_reader;
SELECT count(*) >= 0 AS reads_kpis FROM streamkpi.daily_genre_kpis;
SELECT count(*) >= 0 AS reads_rollup FROM streamkpi.weekly_genre_listeners;
SELECT count(*) FROM streamkpi.listens;
RESET ROLE;

-- A pipeline role with only INSERT on listens can still create partitions.
SET ROLE streamkpi_admin;
SELECT streamkpi.ensure_listens_partitions('2025-01-11 00:00+00', '2025-01-11 00:00+00');
INSERT INTO streamkpi.listens (user_id, track_id, listened_at)
VALUES ('u5', 't5', '2025-01-11 08:00+00');
RESET ROLE;
SELECT (SELECT relname FROM pg_catalog.pg_class c WHERE c.oid = l.tableoid) AS part
  FROM streamkpi.listens l WHERE user_id = 'u5';

-- pg_dump keeps the data of these (docs/contract.md §4); track_windows is
-- a view of window_state and comes back with it.
SELECT c.relname, x.cond
  FROM pg_catalog.pg_extension e,
	   unnest(e.extconfig, e.extcondition) AS x(oid, cond)
  JOIN pg_catalog.pg_class c ON c.oid = x.oid
 WHERE e.extname = 'streamkpi'
   AND c.relname IN ('listens', 'listens_default', 'tracks', 'users',
					 'daily_genre_track_counts', 'daily_genre_track_topn', 'daily_genre_users',
					 'daily_engagement_state', 'window_state',
					 'daily_genre_kpis', 'daily_genre_top_tracks',
					 'daily_top_genres', 'trending',
					 'daily_engagement', 'trending_windows')
 ORDER BY 1;

DROP VIEW parts;
CALL pg_temp.drop_test_partitions();
TRUNCATE streamkpi.listens;

-- Partitions as data arrives (the KPI worker calls this every few seconds):
-- yesterday, today and tomorrow exist ahead of the data, and a row of
-- another day moves from the default partition into a day of its own.
BEGIN;
INSERT INTO streamkpi.listens (user_id, track_id, listened_at)
VALUES ('u1', 't1', '2024-06-01 10:00+00');
SELECT count(*) AS in_default FROM streamkpi.listens_default;
SELECT streamkpi.maintain_listens_partitions() AS moved;
SELECT count(*) AS left_in_default FROM streamkpi.listens_default;
SELECT (SELECT relname FROM pg_catalog.pg_class c WHERE c.oid = l.tableoid) AS part
  FROM streamkpi.listens l;
SELECT count(*) AS days_around_today FROM pg_catalog.pg_class
 WHERE relnamespace = 'streamkpi'::regnamespace
   AND relname IN (SELECT 'listens_p' || to_char(d, 'YYYYMMDD')
					 FROM generate_series((now() AT TIME ZONE 'UTC')::date - 1,
										  (now() AT TIME ZONE 'UTC')::date + 1,
										  interval '1 day') d);
SELECT streamkpi.maintain_listens_partitions() AS moved_again;
ROLLBACK;
