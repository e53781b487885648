-- Rankings updated in place: a round updates the ranks of the trending
-- windows, top tracks and top genres it touched and deletes only ranks
-- beyond a ranking's new length.  Over rounds into one minute and day whose
-- leaders change, every ranking must equal what raw listens give; after
-- the 1-minute windows' top_n is lowered, the next round into that minute
-- leaves only the ranks within it.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/kpi_begin.sql
-- the window sizes, put back at the end
CREATE TEMP TABLE sizes AS SELECT window_size, top_n FROM streamkpi.trending_windows;

-- ten ranks in the 1-minute windows (default three)
UPDATE streamkpi.trending_windows SET top_n = 10 WHERE window_size = interval '1 minute';

-- 14 tracks in 6 genres
INSERT INTO streamkpi.tracks (track_id, track_name, genre, duration_ms)
SELECT 'k' || lpad(i::text, 2, '0'), 'track ' || i,
	   (ARRAY['rock', 'pop', 'jazz', 'folk', 'soul', 'metal'])[1 + i % 6], 180000
  FROM generate_series(1, 14) i;

-- Round r: track t gets 1 + (5t + 3r) mod 11 plays in each of two regions
-- (so the leaders change from round to round), every third track one skip
-- and one like; all in the minute from 10:00 yesterday.
SELECT current_date - 1 AS day \gset
CREATE FUNCTION pg_temp.add_round(p_round int, p_day date) RETURNS void LANGUAGE sql AS $$
	INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at,
								   ms_played, action, region, device)
	SELECT format('r%s-%s-%s-%s', p_round, t, g, j), 'u' || j,
		   'k' || lpad(t::text, 2, '0'),
		   p_day + interval '10 hours' + ((t + j) % 60) * interval '1 s',
		   1000, a, g, 'web'
	  FROM generate_series(1, 14) t
	 CROSS JOIN unnest(ARRAY['eu', 'us']) g
	 CROSS JOIN LATERAL (SELECT j, 'play' AS a FROM generate_series(1, 1 + (5 * t + 3 * p_round) % 11) j
						 UNION ALL
						 SELECT 100 + j, (ARRAY['skip', 'like'])[j] FROM generate_series(1, 2) j
						  WHERE t % 3 = 0) e $$;

\i :abs_srcdir/sql/include/kpi_rounds.sql

-- each ranking's expected rows from raw listens, and how many of them and
-- of the stored rows differ (either way)
CREATE FUNCTION pg_temp.check_rankings()
	RETURNS TABLE (ranking text, expected bigint, mismatches bigint)
	LANGUAGE sql AS $$
	WITH w AS (
		SELECT s.window_size, date_bin(s.window_size, l.listened_at, 'epoch') AS window_start,
			   l.region, l.track_id, s.top_n,
			   count(*) FILTER (WHERE l.action = 'play') AS plays,
			   count(*) FILTER (WHERE l.action = 'skip') AS skips,
			   count(*) FILTER (WHERE l.action = 'like') AS likes
		  FROM streamkpi.listens l CROSS JOIN streamkpi.trending_windows s
		 GROUP BY 1, 2, 3, 4, 5),
	tr AS (
		SELECT window_size, window_start, region, rank::int, track_id, plays, skips, likes
		  FROM (SELECT w.*, row_number() OVER (PARTITION BY window_size, window_start, region
											   ORDER BY plays DESC, track_id COLLATE "C") AS rank
				  FROM w WHERE plays > 0) r
		 WHERE rank <= top_n),
	d AS (
		SELECT l.listened_at::date AS day, t.genre, l.track_id, t.track_name, count(*) AS listens
		  FROM streamkpi.listens l JOIN streamkpi.tracks t USING (track_id)
		 WHERE l.action = 'play'
		 GROUP BY 1, 2, 3, 4),
	tt AS (
		SELECT day, genre, rank::int, track_id, track_name, listens
		  FROM (SELECT d.*, row_number() OVER (PARTITION BY day, genre
											   ORDER BY listens DESC, track_id COLLATE "C") AS rank
				  FROM d) r
		 WHERE rank <= 3),
	tg AS (
		SELECT day, rank::int, genre, listens
		  FROM (SELECT day, genre, sum(listens) AS listens,
					   row_number() OVER (PARTITION BY day
										  ORDER BY sum(listens) DESC, genre COLLATE "C") AS rank
				  FROM d GROUP BY 1, 2) r
		 WHERE rank <= 5)
	SELECT 'trending', (SELECT count(*) FROM tr),
		   (SELECT count(*) FROM ((SELECT * FROM tr
								   EXCEPT SELECT window_size, window_start, region, rank, track_id,
												 plays, skips, likes FROM streamkpi.trending)
								  UNION ALL
								  (SELECT window_size, window_start, region, rank, track_id,
										  plays, skips, likes FROM streamkpi.trending
								   EXCEPT SELECT * FROM tr)) x)
	UNION ALL
	SELECT 'daily_genre_top_tracks', (SELECT count(*) FROM tt),
		   (SELECT count(*) FROM ((SELECT * FROM tt
								   EXCEPT SELECT day, genre, rank, track_id, track_name,
												 listen_count FROM streamkpi.daily_genre_top_tracks)
								  UNION ALL
								  (SELECT day, genre, rank, track_id, track_name, listen_count
									 FROM streamkpi.daily_genre_top_tracks
								   EXCEPT SELECT * FROM tt)) x)
	UNION ALL
	SELECT 'daily_top_genres', (SELECT count(*) FROM tg),
		   (SELECT count(*) FROM ((SELECT * FROM tg
								   EXCEPT SELECT day, rank, genre, listen_count
											FROM streamkpi.daily_top_genres)
								  UNION ALL
								  (SELECT day, rank, genre, listen_count FROM streamkpi.daily_top_genres
								   EXCEPT SELECT * FROM tg)) x) $$;

CALL pg_temp.rounds(1, 1, :'day');
SELECT * FROM pg_temp.check_rankings();
-- the leaders changed, rows were updated
CALL pg_temp.rounds(2, 4, :'day');
SELECT * FROM pg_temp.check_rankings();
SELECT window_size, region, count(*) AS ranks FROM streamkpi.trending
 GROUP BY 1, 2 ORDER BY 1, 2;

-- top_n lowered: the next round into the minute leaves ranks 1..2 there
UPDATE streamkpi.trending_windows SET top_n = 2 WHERE window_size = interval '1 minute';
CALL pg_temp.rounds(5, 5, :'day');
SELECT * FROM pg_temp.check_rankings();
SELECT window_size, region, count(*) AS ranks, max(rank) AS last FROM streamkpi.trending
 GROUP BY 1, 2 ORDER BY 1, 2;

UPDATE streamkpi.trending_windows w SET top_n = s.top_n FROM sizes s
 WHERE s.window_size = w.window_size;
\i :abs_srcdir/sql/include/kpi_end.sql
