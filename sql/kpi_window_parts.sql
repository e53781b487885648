-- Windows stored in parts (src/kpi_window_state.c): part 0 holds the
-- counters, each round adds a players part with the players it saw to the
-- 1-minute window (the 5- and 10-minute windows, summed from it, get none:
-- their players are those of the 1-minute windows inside them), and a
-- round that finds 16 players parts merges some of them into one: all but
-- the 3 largest, and each of those while what it merges is at least its
-- size (one window per round may merge from 14 parts, so the window
-- merges in round 15, all its parts alike).  Forty rounds play into
-- the same windows, then 32 small ones (below): one track gains
-- thousands of players (its sketch goes explicit, sparse, full), one 1,600
-- (explicit into sparse), the others the same few players each round.
-- After rounds 1, 17 (the window merged once), 40, 72, 73 and 75, every (window,
-- track) must equal what raw listens give: plays and listen ms, and the
-- players' sketch byte for byte with hll_add_agg(); no window may keep
-- more than 16 players parts; and refresh_kpis() gives the same rows.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/kpi_begin.sql

INSERT INTO streamkpi.tracks (track_id, track_name, genre, duration_ms)
SELECT 'w' || i, 'track ' || i, 'rock', 180000 FROM generate_series(1, 12) i;

-- Round r's listens, all in the minute from 10:00 yesterday (UTC): w1 gets
-- 150 new players, w2 40, the others the same three players again; every
-- fifth listen of w3..w12 is a skip or a like; two regions.
SELECT current_date - 1 AS day \gset
CREATE FUNCTION pg_temp.add_round(p_round int, p_day date) RETURNS void LANGUAGE sql AS $$
	INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at,
								   ms_played, action, region, device)
	SELECT format('p%s-%s-%s', p_round, t, j),
		   CASE t WHEN 1 THEN 'a' || (p_round * 150 + j)
				  WHEN 2 THEN 'b' || (p_round * 40 + j)
				  ELSE 'c' || (j % 3) END,
		   'w' || t, p_day + interval '10 hours' + ((t * 7 + j) % 60) * interval '1 s',
		   1000 * (1 + j % 5),
		   CASE WHEN t > 2 AND j % 5 = 0 THEN (ARRAY['skip', 'like'])[1 + j % 2]
				ELSE 'play' END,
		   (ARRAY['eu', 'us'])[1 + j % 2], 'web'
	  FROM generate_series(1, 12) t
	 CROSS JOIN LATERAL generate_series(1, CASE t WHEN 1 THEN 150 WHEN 2 THEN 40 ELSE 6 END) j $$;

\i :abs_srcdir/sql/include/kpi_rounds.sql

-- (window, track) rows of track_windows and the players' sketches that
-- differ from raw listens; and the windows' players parts
CREATE FUNCTION pg_temp.check_windows()
	RETURNS TABLE (what text, expected bigint, mismatches bigint)
	LANGUAGE sql AS $$
	WITH x AS (
		SELECT w.window_size, date_bin(w.window_size, l.listened_at, 'epoch') AS window_start,
			   l.track_id, count(*) AS plays, sum(l.ms_played) AS ms,
			   hll_add_agg(hll_hash_text(l.user_id), 14) AS users
		  FROM streamkpi.listens l CROSS JOIN streamkpi.trending_windows w
		 WHERE l.action = 'play'
		 GROUP BY 1, 2, 3),
	tw AS (
		SELECT x.*, t.window_size IS NULL AS missing,
			   t.total_listens IS DISTINCT FROM x.plays
			   OR t.unique_users IS DISTINCT FROM round(hll_cardinality(x.users))::bigint
			   OR t.avg_listen_ms IS DISTINCT FROM round(x.ms::numeric / x.plays, 3) AS differs
		  FROM x LEFT JOIN streamkpi.track_windows t USING (window_size, window_start, track_id)),
	sk AS (
		SELECT DISTINCT window_size, window_start, track_id, users::text AS users
		  FROM streamkpi.window_track_state WHERE users IS NOT NULL)
	SELECT 'track_windows rows', count(*),
		   count(*) FILTER (WHERE missing OR differs)
			 + (SELECT count(*) FROM streamkpi.track_windows) - count(*)
	  FROM tw
	UNION ALL
	SELECT 'players sketches', count(*),
		   count(*) FILTER (WHERE sk.users IS DISTINCT FROM x.users::text)
			 + (SELECT count(*) FROM sk) - count(*)
	  FROM x LEFT JOIN sk USING (window_size, window_start, track_id)
	UNION ALL
	SELECT 'windows with more than 16 players parts',
		   0, count(*) FILTER (WHERE n > 16)
	  FROM (SELECT window_start, window_size, count(*) FILTER (WHERE part > 0) AS n
			  FROM streamkpi.window_state GROUP BY 1, 2) p $$;

CALL pg_temp.rounds(1, 1, :'day');
SELECT * FROM pg_temp.check_windows();
SELECT window_size, count(*) FILTER (WHERE part > 0) AS players_parts, max(part) AS last_part
  FROM streamkpi.window_state GROUP BY 1 ORDER BY 1;
-- round 15 merges the 1-minute window from 14 parts (the round's first)
-- with its own round's players into one part; 16 and 17 add a part each
CALL pg_temp.rounds(2, 17, :'day');
SELECT * FROM pg_temp.check_windows();
SELECT window_size, count(*) FILTER (WHERE part > 0) AS players_parts, max(part) AS last_part
  FROM streamkpi.window_state GROUP BY 1 ORDER BY 1;
CALL pg_temp.rounds(18, 40, :'day');
SELECT * FROM pg_temp.check_windows();
SELECT window_size, count(*) FILTER (WHERE part > 0) AS players_parts, max(part) AS last_part
  FROM streamkpi.window_state GROUP BY 1 ORDER BY 1;
-- w1's players went explicit -> sparse -> full, w2's explicit -> sparse
SELECT track_id, hll_type(users) AS type, round(hll_cardinality(users)) AS players
  FROM (SELECT DISTINCT ON (track_id) track_id, users FROM streamkpi.window_track_state
		 WHERE window_size = '1 minute' AND track_id IN ('w1', 'w2', 'w3')) s
 ORDER BY 1;

-- Rounds 41..72 play only w3..w12, the same three players: small parts.
-- A compaction merges all but the 3 largest parts, and each of those
-- while what it merges is at least that part's size, so the large part of
-- the window (written by a compaction before round 45) outlives the
-- compactions of these rounds, which merge the small ones around it; the
-- windows still equal raw listens.
CREATE OR REPLACE FUNCTION pg_temp.add_round(p_round int, p_day date) RETURNS void LANGUAGE sql AS $$
	INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at,
								   ms_played, action, region, device)
	SELECT format('p%s-%s-%s', p_round, t, j), 'c' || (j % 3), 'w' || t,
		   p_day + interval '10 hours' + ((t * 7 + j) % 60) * interval '1 s',
		   1000, 'play', 'eu', 'web'
	  FROM generate_series(3, 12) t CROSS JOIN generate_series(1, 3) j $$;
CALL pg_temp.rounds(41, 72, :'day');
SELECT * FROM pg_temp.check_windows();
SELECT window_size, count(*) AS players_parts,
	   (array_agg(part ORDER BY pg_column_size(tracks) DESC))[1] AS largest_part,
	   round(max(pg_column_size(tracks)) / sum(pg_column_size(tracks))::numeric, 1) AS its_share
  FROM streamkpi.window_state WHERE part > 0 GROUP BY 1 ORDER BY 1;

-- One round over ten minutes: the players of the 5- and 10-minute windows
-- are the union of those of the ten 1-minute windows inside them, which
-- must still equal hll_add_agg() over raw listens byte for byte.
CREATE OR REPLACE FUNCTION pg_temp.add_round(p_round int, p_day date) RETURNS void LANGUAGE sql AS $$
	INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at,
								   ms_played, action, region, device)
	SELECT format('p%s-%s', p_round, j), 'd' || (j % 50), 'w' || (1 + j % 4),
		   p_day + interval '10 hours' + j * interval '7 s', 1000, 'play', 'eu', 'web'
	  FROM generate_series(1, 85) j $$;
CALL pg_temp.rounds(73, 73, :'day');
SELECT * FROM pg_temp.check_windows();
SELECT window_size, count(*) AS windows, count(*) FILTER (WHERE part > 0) AS players_parts
  FROM streamkpi.window_state GROUP BY 1 ORDER BY 1;

-- refresh_kpis() computes the same rows, in one players part per window:
-- it writes the larger windows' players too, as a window it counts may
-- reach past its range into windows it does not rewrite
CREATE TEMP TABLE before AS SELECT * FROM streamkpi.track_windows;
SELECT streamkpi.refresh_kpis(:'day', :'day');
SELECT (SELECT count(*) FROM before) AS rows,
	   (SELECT count(*) FROM (TABLE before EXCEPT SELECT * FROM streamkpi.track_windows) a)
	   + (SELECT count(*) FROM (SELECT * FROM streamkpi.track_windows EXCEPT TABLE before) b)
		 AS differ;
SELECT * FROM pg_temp.check_windows();
SELECT window_size, count(*) FILTER (WHERE part > 0) AS players_parts
  FROM streamkpi.window_state GROUP BY 1 ORDER BY 1;

-- A 20-minute size, more than 10 times the smallest, keeps players parts
-- of its own, so that reading it never unions 20 minute windows; the
-- 5- and 10-minute windows still take theirs from the minute windows.
-- The round after the refresh counts every size itself, the next one
-- sums them from the minute windows again.
INSERT INTO streamkpi.trending_windows (window_size) VALUES ('20 minutes');
SELECT streamkpi.refresh_kpis(:'day', :'day');
CALL pg_temp.rounds(74, 75, :'day');
SELECT * FROM pg_temp.check_windows();
SELECT window_size, count(*) FILTER (WHERE part > 0) AS players_parts, max(part) AS last_part
  FROM streamkpi.window_state GROUP BY 1 ORDER BY 1;
DELETE FROM streamkpi.trending_windows WHERE window_size = '20 minutes';
SELECT streamkpi.refresh_kpis(:'day', :'day');

-- a query that asks for no players never reads a players part: the planner
-- drops the join to streamkpi._window_track_players
CREATE FUNCTION pg_temp.reads_players(q text) RETURNS bool LANGUAGE plpgsql AS $$
DECLARE line text;
BEGIN
	FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
		IF line LIKE '%_window_players_rows%' THEN
			RETURN true;
		END IF;
	END LOOP;
	RETURN false;
END $$;
SELECT q, pg_temp.reads_players(q)
  FROM unnest(ARRAY['SELECT window_start, sum(total_listens) FROM streamkpi.track_windows GROUP BY 1',
					'SELECT track_id, avg_listen_ms FROM streamkpi.track_windows WHERE window_size = ''1 minute''',
					'SELECT region, plays FROM streamkpi.window_track_state',
					'SELECT track_id, unique_users FROM streamkpi.track_windows',
					'SELECT users FROM streamkpi.window_track_state']) q;

\i :abs_srcdir/sql/include/kpi_end.sql
