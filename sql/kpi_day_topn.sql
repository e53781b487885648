-- The day top-tracks summaries (daily_genre_track_topn) of a genre with more
-- tracks than their capacity (1000): the engine keeps them from the counts
-- each round changes (src/kpi_day_topn.c), so after every round they must
-- equal the summary of all the counts at once, computed here from raw
-- listens: the 1000 tracks with the most listens (ties by track_id), exact
-- counts, the floor the largest count left out, the total every listen.
-- The rounds move tracks in and out of the 1000, and back in; the daily top
-- tracks and listen counts follow, every track's listens are exact, and
-- the tracks left out, only they, have their rows in
-- daily_genre_track_counts; refresh_kpis() gives the same.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/kpi_begin.sql

-- 1501 rock tracks, 200 pop tracks
INSERT INTO streamkpi.tracks (track_id, track_name, genre, duration_ms)
SELECT 'r' || i, 'rock ' || i, 'rock', 180000 FROM generate_series(1, 1501) i
UNION ALL
SELECT 'p' || i, 'pop ' || i, 'pop', 180000 FROM generate_series(1, 200) i;

-- events of yesterday (UTC): within the late horizon, in one day.  Round 1
-- spreads plays over every track; round 2 lifts r1101..r1500 into the top
-- 1000; round 3 brings r1..r300 back; round 4 touches a few tracks only,
-- among them ones left out; round 5 plays r1501 once, the first play of a
-- track that stays out, far below the floor.  Every ninth event of a track
-- is a skip.
SELECT current_date - 1 AS day \gset
CREATE FUNCTION pg_temp.add_round(p_round int, p_day date) RETURNS bigint LANGUAGE sql AS $$
	WITH t AS (
		SELECT 'r' || i AS id, i FROM generate_series(1, 1501) i
		UNION ALL SELECT 'p' || i, i FROM generate_series(1, 200) i),
	ins AS (
		INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at,
									   ms_played, action, region, device)
		SELECT format('k%s-%s-%s', p_round, t.id, j), 'u' || (t.i * 31 + j) % 400, t.id,
			   p_day + ((t.i * 97 + j * 13) % 86000) * interval '1 s', 1000 * j,
			   CASE WHEN j % 9 = 0 THEN 'skip' ELSE 'play' END, 'eu', 'web'
		  FROM t
		 CROSS JOIN LATERAL generate_series(1, CASE
				WHEN t.i = 1501 THEN (p_round = 5)::int
				WHEN p_round = 5 THEN 0
				WHEN p_round = 1 THEN (t.i * 7) % 11
				WHEN p_round = 2 THEN CASE WHEN t.i > 1100 THEN 6 ELSE t.i % 2 END
				WHEN p_round = 3 THEN CASE WHEN t.i <= 300 THEN 12 ELSE 0 END
				ELSE CASE WHEN t.i % 250 = 0 OR t.i = 1499 THEN 3 ELSE 0 END END) j
		RETURNING 1)
	SELECT count(*) FROM ins $$;

-- Mismatches between the stored summaries, top tracks and listen counts
-- and the same computed from raw listens.
CREATE FUNCTION pg_temp.check_topn()
	RETURNS TABLE (what text, expected bigint, mismatches bigint)
	LANGUAGE sql AS $$
	WITH c AS (
		SELECT date(l.listened_at) AS day, t.genre, l.track_id, count(*) AS n,
			   sum(l.ms_played) AS ms
		  FROM streamkpi.listens l JOIN streamkpi.tracks t USING (track_id)
		 WHERE l.action = 'play' GROUP BY 1, 2, 3),
	r AS (
		SELECT *, row_number() OVER (PARTITION BY day, genre
									 ORDER BY n DESC, track_id COLLATE "C") AS rk
		  FROM c),
	exp_items AS (
		SELECT day, genre, track_id AS item, n AS count, 0::bigint AS max_error
		  FROM r WHERE rk <= 1000),
	got_items AS (
		SELECT d.day, d.genre::text, i.item, i.count, i.max_error
		  FROM streamkpi.daily_genre_track_topn d
		 CROSS JOIN LATERAL streamkpi.topn_items(d.tracks) i),
	exp_info AS (
		SELECT day, genre, 1000 AS capacity, count(*) FILTER (WHERE rk <= 1000)::int AS items,
			   coalesce(max(n) FILTER (WHERE rk > 1000), 0)::bigint AS floor,
			   sum(n)::bigint AS total
		  FROM r GROUP BY 1, 2),
	got_info AS (
		SELECT d.day, d.genre::text, (streamkpi.topn_info(d.tracks)).*
		  FROM streamkpi.daily_genre_track_topn d),
	exp_top AS (
		SELECT day, genre, rk::int AS rank, track_id, 'rock ' || substr(track_id, 2) AS name, n
		  FROM r WHERE rk <= 3 AND genre = 'rock'
		UNION ALL
		SELECT day, genre, rk::int, track_id, 'pop ' || substr(track_id, 2), n
		  FROM r WHERE rk <= 3 AND genre = 'pop'),
	got_top AS (
		SELECT day, genre::text, rank, track_id::text, track_name, listen_count
		  FROM streamkpi.daily_genre_top_tracks),
	exp_kpi AS (
		SELECT day, genre, sum(n)::bigint AS n, sum(ms)::bigint AS ms FROM c GROUP BY 1, 2),
	got_kpi AS (
		SELECT day, genre::text, listen_count, total_listen_ms FROM streamkpi.daily_genre_kpis),
	exp_listens AS (SELECT day, genre, track_id, n FROM c),
	got_listens AS (
		SELECT day, genre::text, track_id::text, listens FROM streamkpi.daily_genre_track_listens),
	exp_rows AS (SELECT day, genre, track_id, n FROM r WHERE rk > 1000),
	got_rows AS (
		SELECT day, genre::text, track_id::text, listens FROM streamkpi.daily_genre_track_counts)
	SELECT 'topn items', (SELECT count(*) FROM exp_items),
		   (SELECT count(*) FROM ((TABLE exp_items EXCEPT TABLE got_items)
								  UNION ALL (TABLE got_items EXCEPT TABLE exp_items)) m)
	UNION ALL
	SELECT 'topn capacity, items, floor, total', (SELECT count(*) FROM exp_info),
		   (SELECT count(*) FROM ((TABLE exp_info EXCEPT TABLE got_info)
								  UNION ALL (TABLE got_info EXCEPT TABLE exp_info)) m)
	UNION ALL
	SELECT 'daily_genre_top_tracks', (SELECT count(*) FROM exp_top),
		   (SELECT count(*) FROM ((TABLE exp_top EXCEPT TABLE got_top)
								  UNION ALL (TABLE got_top EXCEPT TABLE exp_top)) m)
	UNION ALL
	SELECT 'daily_genre_kpis listens and ms', (SELECT count(*) FROM exp_kpi),
		   (SELECT count(*) FROM ((TABLE exp_kpi EXCEPT TABLE got_kpi)
								  UNION ALL (TABLE got_kpi EXCEPT TABLE exp_kpi)) m)
	UNION ALL
	SELECT 'every track''s listens', (SELECT count(*) FROM exp_listens),
		   (SELECT count(*) FROM ((TABLE exp_listens EXCEPT ALL TABLE got_listens)
								  UNION ALL (TABLE got_listens EXCEPT ALL TABLE exp_listens)) m)
	UNION ALL
	SELECT 'rows of the tracks left out', (SELECT count(*) FROM exp_rows),
		   (SELECT count(*) FROM ((TABLE exp_rows EXCEPT TABLE got_rows)
								  UNION ALL (TABLE got_rows EXCEPT TABLE exp_rows)) m) $$;

-- what the rock summary holds (it is over capacity from round 1 on)
CREATE FUNCTION pg_temp.rock_info() RETURNS TABLE (items int, floor bigint, total bigint)
	LANGUAGE sql AS $$
	SELECT i.items, i.floor, i.total
	  FROM streamkpi.daily_genre_track_topn d, streamkpi.topn_info(d.tracks) i
	 WHERE d.genre = 'rock' $$;

SELECT pg_temp.add_round(1, :'day');
SELECT streamkpi.kpi_apply_new();
SELECT * FROM pg_temp.check_topn();
SELECT * FROM pg_temp.rock_info();
SELECT pg_temp.add_round(2, :'day');
SELECT streamkpi.kpi_apply_new();
SELECT * FROM pg_temp.check_topn();
SELECT * FROM pg_temp.rock_info();
SELECT pg_temp.add_round(3, :'day');
SELECT streamkpi.kpi_apply_new();
SELECT * FROM pg_temp.check_topn();
SELECT * FROM pg_temp.rock_info();
SELECT pg_temp.add_round(4, :'day');
SELECT streamkpi.kpi_apply_new();
SELECT * FROM pg_temp.check_topn();
SELECT * FROM pg_temp.rock_info();
SELECT pg_temp.add_round(5, :'day');
SELECT streamkpi.kpi_apply_new();
SELECT * FROM pg_temp.check_topn();
SELECT * FROM pg_temp.rock_info();

-- refresh_kpis() writes the same summaries, in one step from all counts
CREATE TEMP TABLE before AS
SELECT day, genre, tracks::text AS tracks FROM streamkpi.daily_genre_track_topn;
SELECT streamkpi.refresh_kpis(:'day', :'day');
SELECT count(*) AS summaries,
	   count(*) FILTER (WHERE b.tracks IS DISTINCT FROM a.tracks::text) AS changed
  FROM before b
  FULL JOIN streamkpi.daily_genre_track_topn a USING (day, genre);
SELECT * FROM pg_temp.check_topn();

\i :abs_srcdir/sql/include/kpi_end.sql
