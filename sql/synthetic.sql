-- synthetic_listens / synthetic_listen_lines / synthetic_tracks /
-- synthetic_users: determinism, distributions within tolerances, ids that
-- line up, late and malformed events, argument errors.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
RESET client_min_messages;
SET TimeZone = 'UTC';

-- Determinism: same arguments, same rows; another seed, other rows.
SELECT (SELECT md5(string_agg(l::text, E'\n'))
		  FROM streamkpi.synthetic_listens(20000, '2026-03-01 00:00+00', seed => 7) l)
	 = (SELECT md5(string_agg(l::text, E'\n'))
		  FROM streamkpi.synthetic_listens(20000, '2026-03-01 00:00+00', seed => 7) l)
	AS listens_same_seed_same_rows,
	   (SELECT md5(string_agg(l::text, E'\n'))
		  FROM streamkpi.synthetic_listens(20000, '2026-03-01 00:00+00', seed => 7) l)
	<> (SELECT md5(string_agg(l::text, E'\n'))
		  FROM streamkpi.synthetic_listens(20000, '2026-03-01 00:00+00', seed => 8) l)
	AS listens_other_seed_other_rows,
	   (SELECT md5(string_agg(t::text, E'\n')) FROM streamkpi.synthetic_tracks(3000, 5) t)
	 = (SELECT md5(string_agg(t::text, E'\n')) FROM streamkpi.synthetic_tracks(3000, 5) t)
	AS tracks_deterministic,
	   (SELECT md5(string_agg(u::text, E'\n')) FROM streamkpi.synthetic_users(3000, 5) u)
	 = (SELECT md5(string_agg(u::text, E'\n')) FROM streamkpi.synthetic_users(3000, 5) u)
	AS users_deterministic,
	   (SELECT md5(string_agg(encode(payload, 'escape'), E'\n'))
		  FROM streamkpi.synthetic_listen_lines(5000, '2026-03-01', seed => 3, malformed_share => 0.2))
	 = (SELECT md5(string_agg(encode(payload, 'escape'), E'\n'))
		  FROM streamkpi.synthetic_listen_lines(5000, '2026-03-01', seed => 3, malformed_share => 0.2))
	AS lines_deterministic;

-- Two days of traffic over a 5000-track catalog and 100000 users.
CREATE TEMP TABLE syn AS
SELECT * FROM streamkpi.synthetic_listens(200000, '2026-03-01 00:00+00', seed => 42,
										  duration => '2 days');
CREATE TEMP TABLE syn_tracks AS SELECT * FROM streamkpi.synthetic_tracks(5000, 42);
CREATE TEMP TABLE syn_users AS SELECT * FROM streamkpi.synthetic_users(100000, 9);

SELECT count(*) AS events,
	   count(DISTINCT event_id) = count(*) AS event_ids_unique,
	   bool_and(listened_at >= '2026-03-01 00:00+00'
				AND listened_at < '2026-03-03 00:00+00') AS all_in_range,
	   bool_and(ms_played > 0) AS ms_positive
  FROM syn;

-- Event-time order when no late events are asked for.
SELECT bool_and(ordered) AS in_event_time_order
  FROM (SELECT listened_at >= lag(listened_at, 1, '-infinity')
				   OVER (ORDER BY split_part(event_id, '-', 2)::bigint) AS ordered
		  FROM syn) s;

-- Action mix ~78/15/7, within 1.5 points.
SELECT action, abs(100.0 * count(*) / 200000 - CASE action WHEN 'play' THEN 78
		   WHEN 'skip' THEN 15 ELSE 7 END) < 1.5 AS share_ok
  FROM syn GROUP BY action ORDER BY action;

-- Regions 35/30/20/15 over whole days, within 1.5 points.
SELECT region, abs(100.0 * count(*) / 200000 - CASE region WHEN 'US' THEN 35
		   WHEN 'EU' THEN 30 WHEN 'APAC' THEN 20 ELSE 15 END) < 1.5 AS share_ok
  FROM syn GROUP BY region ORDER BY region;

-- Devices: mobile first, every device present.
SELECT device, rank() OVER (ORDER BY count(*) DESC) AS rank
  FROM syn GROUP BY device ORDER BY rank;

-- Zipf(1.1): t1 is the most played and its share is 1/H(5000, 1.1) within
-- 1 point; t2 gets about 2^-1.1 of t1's plays; the top 1% of tracks (50)
-- get more than half of all events.
WITH c AS (SELECT track_id, count(*) AS n FROM syn GROUP BY track_id),
	 h AS (SELECT sum(power(k, -1.1)) AS h FROM generate_series(1, 5000) k)
SELECT (SELECT track_id FROM c ORDER BY n DESC, track_id LIMIT 1) AS top_track,
	   abs(100.0 * (SELECT n FROM c WHERE track_id = 't1') / 200000 - 100.0 / h) < 1.0
		   AS top_share_ok,
	   abs((SELECT n FROM c WHERE track_id = 't2')::numeric
		   / (SELECT n FROM c WHERE track_id = 't1') - power(2, -1.1)) < 0.03 AS t2_ratio_ok,
	   (SELECT sum(n) FROM (SELECT n FROM c ORDER BY n DESC LIMIT 50) t) > 100000
		   AS head_heavy,
	   (SELECT bool_and(substr(track_id, 2)::int BETWEEN 1 AND 5000) FROM c) AS ids_in_catalog
  FROM h;

-- Daily rhythm: in each region, local evenings (19-21 h) have at least three
-- times the listens of local nights (3-5 h).
SELECT region,
	   count(*) FILTER (WHERE extract(hour FROM listened_at AT TIME ZONE z) BETWEEN 19 AND 21)
	   > 3 * count(*) FILTER (WHERE extract(hour FROM listened_at AT TIME ZONE z) BETWEEN 3 AND 5)
		   AS evening_peak
  FROM syn
  JOIN (VALUES ('US', 'America/New_York'), ('EU', 'Europe/Berlin'),
			   ('APAC', 'Asia/Tokyo'), ('LATAM', 'America/Sao_Paulo')) r(region, z)
 USING (region)
 GROUP BY region ORDER BY region;

-- ms_played fits the catalog's durations (whatever the catalog's seed):
-- skips stop within 31 s, likes are complete, plays at most complete and
-- mostly complete; cars complete more often than the web.
SELECT s.action,
	   bool_and(CASE s.action WHEN 'skip' THEN s.ms_played <= 31000 AND s.ms_played < t.duration_ms
			WHEN 'like' THEN s.ms_played = t.duration_ms
			ELSE s.ms_played <= t.duration_ms AND s.ms_played >= 0.3 * t.duration_ms END)
		   AS ms_played_fits,
	   bool_and(t.duration_ms BETWEEN 120000 AND 360000) AS durations_2_to_6_min
  FROM syn s JOIN syn_tracks t USING (track_id)
 GROUP BY s.action ORDER BY s.action;
SELECT avg((ms_played = t.duration_ms)::int) FILTER (WHERE device = 'car')
	 > avg((ms_played = t.duration_ms)::int) FILTER (WHERE device = 'web') + 0.2
		   AS cars_complete_more,
	   avg((ms_played = t.duration_ms)::int) FILTER (WHERE action = 'play')
		   BETWEEN 0.5 AND 0.8 AS plays_mostly_complete
  FROM syn s JOIN syn_tracks t USING (track_id);

-- Users: every event's user exists and lives in the event's region.
SELECT count(*) FILTER (WHERE u.user_id IS NULL) AS unknown_users,
	   count(*) FILTER (WHERE u.country IS NOT NULL AND
		   CASE WHEN u.country IN ('US', 'CA') THEN 'US'
				WHEN u.country IN ('DE', 'GB', 'FR', 'ES', 'IT', 'NL', 'SE', 'PL') THEN 'EU'
				WHEN u.country IN ('JP', 'KR', 'AU', 'IN', 'ID', 'PH') THEN 'APAC'
				WHEN u.country IN ('BR', 'MX', 'AR', 'CO', 'CL') THEN 'LATAM' END
		   IS DISTINCT FROM s.region) AS region_mismatches
  FROM syn s LEFT JOIN syn_users u USING (user_id);

-- Premium tiers like more than free users.
SELECT avg((action = 'like')::int) FILTER (WHERE u.subscription = 'premium')
	 > avg((action = 'like')::int) FILTER (WHERE u.subscription = 'free') AS premium_likes_more
  FROM syn s JOIN syn_users u USING (user_id);

-- Catalog: 15 genres with skewed popularity, unique ids t1..tN.
SELECT count(*) AS tracks, count(DISTINCT track_id) AS ids,
	   count(DISTINCT genre) AS genres,
	   bool_and(track_id = 't' || substr(track_id, 2)::int) AS id_format,
	   count(*) FILTER (WHERE track_name IS NULL OR artists IS NULL OR album IS NULL) AS missing
  FROM syn_tracks;
SELECT (SELECT count(*) FROM syn_tracks WHERE genre = 'pop')
	 > 4 * (SELECT count(*) FROM syn_tracks WHERE genre = 'jazz') AS genres_skewed;

-- Users: ages, genders, subscriptions, creation dates.
SELECT count(*) AS users, count(DISTINCT user_id) AS ids,
	   bool_and(age BETWEEN 13 AND 75) AS ages_ok, count(*) FILTER (WHERE age < 18) BETWEEN 5000 AND 7000 AS some_minors,
	   avg((age BETWEEN 18 AND 34)::int) BETWEEN 0.45 AND 0.65 AS mostly_young,
	   count(DISTINCT gender) AS genders,
	   count(DISTINCT country) AS countries,
	   bool_and(created_at BETWEEN '2015-01-01' AND '2025-12-31') AS created_ok
  FROM syn_users;
SELECT subscription, abs(100.0 * count(*) / 100000 - CASE subscription WHEN 'free' THEN 45
		   WHEN 'premium' THEN 40 WHEN 'family' THEN 10 ELSE 5 END) < 1.0 AS share_ok
  FROM syn_users GROUP BY subscription ORDER BY subscription;

-- Late events: the same events, about late_share of them moved back by
-- 1 hour to 6 days.
WITH late AS (
	SELECT l.listened_at AS late_at, s.listened_at AS on_time,
		   l.event_id, l.user_id = s.user_id AND l.track_id = s.track_id
			   AND l.action = s.action AND l.ms_played = s.ms_played AS same_event
	  FROM streamkpi.synthetic_listens(200000, '2026-03-01 00:00+00', seed => 42,
									   duration => '2 days', late_share => 0.1) l
	  JOIN syn s USING (event_id))
SELECT count(*) AS events, bool_and(same_event) AS same_events,
	   abs(avg((late_at <> on_time)::int) - 0.1) < 0.005 AS late_share_ok,
	   bool_and(late_at = on_time OR on_time - late_at BETWEEN interval '1 hour' AND interval '6 days')
		   AS shifted_1h_to_6d,
	   count(*) FILTER (WHERE on_time - late_at > interval '2 days') > 0 AS some_days_late
  FROM late;

-- Lines: the valid ones are the events of synthetic_listens as JSON, keyed
-- by user_id; about malformed_share of them are malformed.
CREATE FUNCTION pg_temp.as_json(b bytea) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
	RETURN convert_from(b, 'UTF8')::json;
EXCEPTION WHEN OTHERS THEN
	RETURN NULL;
END $$;
CREATE TEMP TABLE lines AS
SELECT row_number() OVER () - 1 AS i, key, payload, pg_temp.as_json(payload) AS j
  FROM streamkpi.synthetic_listen_lines(20000, '2026-03-01 00:00+00', seed => 42,
										duration => '2 days', malformed_share => 0.05);
CREATE TEMP TABLE syn20k AS
SELECT * FROM streamkpi.synthetic_listens(20000, '2026-03-01 00:00+00', seed => 42,
										  duration => '2 days');
SELECT count(*) AS lines,
	   abs(avg((j IS NULL OR j->>'event_id' IS NULL)::int) - 0.05) < 0.01 AS malformed_share_ok,
	   count(*) FILTER (WHERE j IS NULL) > 0 AS some_not_json,
	   count(*) FILTER (WHERE j IS NOT NULL AND j->>'event_id' IS NULL
						AND j->>'listened_at' = 'yesterday at noonish') > 0 AS some_bad_timestamps,
	   count(*) FILTER (WHERE j->>'ms_played' = 'three minutes') > 0 AS some_bad_numbers
  FROM lines;
SELECT count(*) AS valid_lines,
	   count(*) FILTER (WHERE s.event_id IS NULL
		   OR (l.j->>'user_id', l.j->>'track_id', (l.j->>'listened_at')::timestamptz,
			   (l.j->>'ms_played')::int, l.j->>'action', l.j->>'region', l.j->>'device', l.key)
		   IS DISTINCT FROM
			  (s.user_id, s.track_id, s.listened_at, s.ms_played, s.action, s.region,
			   s.device, s.user_id)) AS differing_from_listens
  FROM lines l LEFT JOIN syn20k s ON s.event_id = l.j->>'event_id'
 WHERE l.j->>'event_id' IS NOT NULL;
SELECT count(*) AS lines_without_malformed,
	   count(*) FILTER (WHERE pg_temp.as_json(payload)->>'event_id' IS NULL) AS invalid
  FROM streamkpi.synthetic_listen_lines(2000, '2026-03-01', seed => 42);

-- Tiny inputs: no rows, one user, one track.
SELECT count(*) FROM streamkpi.synthetic_listens(0, '2026-03-01');
SELECT user_id, track_id, region FROM streamkpi.synthetic_listens(3, '2026-03-01', tracks => 1, users => 1);
SELECT count(*) FROM streamkpi.synthetic_tracks(0);

-- Bad arguments.
SELECT * FROM streamkpi.synthetic_listens(-1, '2026-03-01');
SELECT * FROM streamkpi.synthetic_listens(10, 'infinity');
SELECT * FROM streamkpi.synthetic_listens(10, '2026-03-01', duration => '-1 hour');
SELECT * FROM streamkpi.synthetic_listens(10, '2026-03-01', duration => '0');
SELECT * FROM streamkpi.synthetic_listens(10, '2026-03-01', duration => '1 month');
SELECT * FROM streamkpi.synthetic_listens(10, '2026-03-01', tracks => 0);
SELECT * FROM streamkpi.synthetic_listens(10, '2026-03-01', users => -5);
SELECT * FROM streamkpi.synthetic_listens(10, '2026-03-01', late_share => 1.5);
SELECT * FROM streamkpi.synthetic_listens(10, '2026-03-01', late_share => 'NaN');
SELECT * FROM streamkpi.synthetic_listen_lines(10, '2026-03-01', malformed_share => -0.1);
SELECT * FROM streamkpi.synthetic_tracks(-3);
SELECT * FROM streamkpi.synthetic_users(-3);
SELECT count(*) FROM streamkpi.synthetic_listens(NULL, '2026-03-01');

DROP TABLE syn, syn_tracks, syn_users, lines, syn20k;
