-- The distinct users of the day KPI rows are what round(hll_cardinality())
-- gives for the stored day sketches: the engine computes them in C from the
-- merged registers (sketch_hll_classic_estimate), so they are compared here
-- with postgresql-hll's own function over the stored sketches, for sketches
-- held exactly (explicit), sparse and full, after a first round and after a
-- second round that merges into the stored ones.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/kpi_begin.sql

-- 30 tracks in three genres; 100,000 users in five countries: groups of a
-- few hundred users (explicit sketches), thousands (sparse, full, and the
-- estimate's linear counting) and more than 2.5 x 2^14 (its raw estimate)
INSERT INTO streamkpi.tracks (track_id, track_name, genre, duration_ms)
SELECT 't' || i, 'track ' || i, (ARRAY['rock', 'pop', 'jazz'])[1 + i % 3], 180000
  FROM generate_series(1, 30) i;
INSERT INTO streamkpi.users (user_id, age, country, subscription)
SELECT 'u' || i, 15 + i % 60, (ARRAY['GH', 'DE', 'US', 'NG', 'FR'])[1 + i % 5],
	   CASE WHEN i % 7 = 0 THEN 'premium' ELSE 'free' END
  FROM generate_series(1, 100000) i;

-- events of yesterday (UTC): within the late horizon, in one day
SELECT current_date - 1 AS day \gset
CREATE FUNCTION pg_temp.add_events(p_from int, p_to int, p_day date) RETURNS void LANGUAGE sql AS $$
	INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at,
								   ms_played, action, region, device)
	SELECT 'c' || i, 'u' || (1 + (i * 7919) % 100000), 't' || (1 + i % 30),
		   p_day + (i % 5000) * interval '17 s',
		   60000, (ARRAY['play', 'play', 'skip', 'like'])[1 + i % 4],
		   (ARRAY['eu', 'us'])[1 + i % 2], (ARRAY['mobile', 'web', 'tv'])[1 + i % 3]
	  FROM generate_series(p_from, p_to) i $$;

-- mismatches between the KPI rows and round(hll_cardinality()) of the
-- stored sketches, and how many sketches of each hll type were compared
CREATE FUNCTION pg_temp.check_users()
	RETURNS TABLE (kpi text, mismatches bigint, types text, max_users bigint)
	LANGUAGE sql AS $$
	SELECT 'daily_genre_kpis',
		   count(*) FILTER (WHERE k.unique_listeners <> round(hll_cardinality(s.users))::bigint),
		   string_agg(DISTINCT hll_type(s.users)::text, ',' ORDER BY hll_type(s.users)::text),
		   max(k.unique_listeners)
	  FROM streamkpi.daily_genre_kpis k
	  JOIN streamkpi.daily_genre_users s USING (day, genre)
	UNION ALL
	SELECT 'daily_engagement',
		   count(*) FILTER (WHERE k.unique_users <> round(hll_cardinality(s.users))::bigint),
		   string_agg(DISTINCT hll_type(s.users)::text, ',' ORDER BY hll_type(s.users)::text),
		   max(k.unique_users)
	  FROM streamkpi.daily_engagement k
	  JOIN streamkpi.daily_engagement_state s USING (day, dimension, value) $$;

-- stored day sketches that differ, byte for byte, from hll_add_agg() over
-- the raw listens (the engine merges each round's users into the stored
-- sketch in C, a full one in place)
CREATE FUNCTION pg_temp.check_sketch_bytes()
	RETURNS TABLE (state text, sketches bigint, different bigint, types text)
	LANGUAGE sql AS $$
	SELECT 'daily_genre_users', count(*),
		   count(*) FILTER (WHERE s.users::text IS DISTINCT FROM x.users::text),
		   string_agg(DISTINCT hll_type(s.users)::text, ',' ORDER BY hll_type(s.users)::text)
	  FROM streamkpi.daily_genre_users s
	  FULL JOIN (SELECT date(l.listened_at) AS day, t.genre,
						hll_add_agg(hll_hash_text(l.user_id), 14) AS users
				   FROM streamkpi.listens l JOIN streamkpi.tracks t USING (track_id)
				  WHERE l.action = 'play' GROUP BY 1, 2) x USING (day, genre)
	UNION ALL
	SELECT 'daily_engagement_state country', count(*),
		   count(*) FILTER (WHERE s.users::text IS DISTINCT FROM x.users::text),
		   string_agg(DISTINCT hll_type(s.users)::text, ',' ORDER BY hll_type(s.users)::text)
	  FROM (SELECT * FROM streamkpi.daily_engagement_state WHERE dimension = 'country') s
	  FULL JOIN (SELECT date(l.listened_at) AS day, u.country AS value,
						hll_add_agg(hll_hash_text(l.user_id), 14) AS users
				   FROM streamkpi.listens l JOIN streamkpi.users u USING (user_id)
				  GROUP BY 1, 2) x USING (day, value) $$;

SELECT pg_temp.add_events(1, 9000, :'day');
SELECT streamkpi.kpi_apply_new();
SELECT * FROM pg_temp.check_users();
SELECT * FROM pg_temp.check_sketch_bytes();
-- a round of a few hundred users into the sparse sketches: they stay sparse
SELECT pg_temp.add_events(9001, 9500, :'day');
SELECT streamkpi.kpi_apply_new();
SELECT * FROM pg_temp.check_users();
SELECT * FROM pg_temp.check_sketch_bytes();
SELECT pg_temp.add_events(9501, 120000, :'day');
SELECT streamkpi.kpi_apply_new();
SELECT * FROM pg_temp.check_users();
SELECT * FROM pg_temp.check_sketch_bytes();
-- two more rounds into the full sketches: one with thousands of users (its
-- delta holds registers), one with a few (its delta holds their hashes)
SELECT pg_temp.add_events(120001, 130000, :'day');
SELECT streamkpi.kpi_apply_new();
SELECT * FROM pg_temp.check_users();
SELECT * FROM pg_temp.check_sketch_bytes();
SELECT pg_temp.add_events(130001, 130020, :'day');
SELECT streamkpi.kpi_apply_new();
SELECT * FROM pg_temp.check_users();
SELECT * FROM pg_temp.check_sketch_bytes();
-- and refresh_kpis() computes the same rows
CREATE TEMP TABLE before AS
SELECT day, genre, unique_listeners FROM streamkpi.daily_genre_kpis
UNION ALL SELECT day, dimension || '=' || value, unique_users FROM streamkpi.daily_engagement;
SELECT streamkpi.refresh_kpis(:'day', :'day');
SELECT count(*) AS rows,
	   count(*) FILTER (WHERE b.unique_listeners IS DISTINCT FROM a.unique_listeners) AS changed
  FROM before b
  FULL JOIN (SELECT day, genre, unique_listeners FROM streamkpi.daily_genre_kpis
			 UNION ALL SELECT day, dimension || '=' || value, unique_users
			   FROM streamkpi.daily_engagement) a USING (day, genre);
SELECT * FROM pg_temp.check_users();

\i :abs_srcdir/sql/include/kpi_end.sql
