-- streamkpi.kpi_events: the event-level rules (docs/kpis.md, Definitions)
-- as the engine's C code applies them (src/kpi_dims.c), against the same
-- rules written independently in SQL, on every edge: a missing track, NULL
-- and empty genres, NULL and zero durations, NULL ms_played, the 90 %
-- completion threshold, a missing user, NULL attributes, every age group
-- boundary, NULL region and device.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
RESET client_min_messages;
SET TimeZone = 'UTC';

TRUNCATE streamkpi.listens, streamkpi.tracks, streamkpi.users;
INSERT INTO streamkpi.tracks (track_id, genre, duration_ms) VALUES
	('t_rock', 'rock', 200000), ('t_empty', '', 100000), ('t_null', NULL, NULL),
	('t_zero', 'pop', 0);
INSERT INTO streamkpi.users (user_id, age, country, subscription) VALUES
	('u17', 17, 'DE', 'free'), ('u18', 18, NULL, 'premium'), ('u24', 24, 'GH', NULL),
	('u25', 25, 'US', 'free'), ('u34', 34, '', 'free'), ('u35', 35, 'FR', 'free'),
	('u44', 44, 'NG', 'free'), ('u45', 45, 'DE', 'free'), ('u54', 54, 'DE', 'free'),
	('u55', 55, 'DE', 'free'), ('u_null', NULL, NULL, NULL);
INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played,
							   action, region, device)
SELECT 'e' || row_number() OVER (), u, t, '2025-03-01 12:00+00', ms, 'play', r, dv
  FROM unnest(ARRAY['u17', 'u18', 'u24', 'u25', 'u34', 'u35', 'u44', 'u45', 'u54',
					'u55', 'u_null', 'u_missing']) u,
	   unnest(ARRAY['t_rock', 't_empty', 't_null', 't_zero', 't_missing']) t,
	   unnest(ARRAY[NULL, 0, 89999, 90000, 179999, 180000, 250000]::int[]) ms,
	   (VALUES ('eu', 'tv'), (NULL, NULL)) x(r, dv);

-- Rows that differ between the view and the independent SQL: none.
SELECT count(*) AS events,
	   count(*) FILTER (WHERE k.event_id IS NULL OR (k.*) IS DISTINCT FROM (x.*)) AS different
  FROM (SELECT l.event_id, l.listened_at, l.ingest_xid, l.ingested_at, l.user_id,
			   l.track_id, l.action,
			   CASE WHEN l.region IS NULL THEN 'unknown' ELSE l.region END AS region,
			   CASE WHEN l.device IS NULL THEN 'unknown' ELSE l.device END AS device,
			   CASE WHEN t.genre IS NULL OR t.genre = '' THEN 'unknown' ELSE t.genre END AS genre,
			   CASE WHEN l.ms_played IS NOT NULL THEN l.ms_played
					WHEN t.duration_ms IS NOT NULL THEN t.duration_ms ELSE 0 END::bigint AS listen_ms,
			   CASE WHEN t.duration_ms IS NULL OR t.duration_ms <= 0 THEN false
					WHEN l.ms_played IS NULL THEN true
					ELSE l.ms_played::numeric / t.duration_ms >= 0.9 END AS completed,
			   CASE WHEN u.subscription IS NULL THEN 'unknown' ELSE u.subscription END AS subscription,
			   CASE WHEN u.country IS NULL THEN 'unknown' ELSE u.country END AS country,
			   CASE WHEN u.age IS NULL THEN 'unknown'
					WHEN u.age <= 17 THEN '<18' WHEN u.age <= 24 THEN '18-24'
					WHEN u.age <= 34 THEN '25-34' WHEN u.age <= 44 THEN '35-44'
					WHEN u.age <= 54 THEN '45-54' ELSE '55+' END AS age_group
		  FROM streamkpi.listens l
		  LEFT JOIN streamkpi.tracks t USING (track_id)
		  LEFT JOIN streamkpi.users u USING (user_id)) x
  LEFT JOIN streamkpi.kpi_events k USING (event_id);

-- A few of them as the view shows them.
SELECT k.user_id, k.track_id, l.ms_played, k.region, k.device, k.genre, k.listen_ms,
	   k.completed, k.subscription, k.country, k.age_group
  FROM streamkpi.kpi_events k
  JOIN streamkpi.listens l USING (event_id)
 WHERE (k.user_id, k.track_id) IN (('u17', 't_rock'), ('u_missing', 't_missing'),
								   ('u_null', 't_empty'), ('u34', 't_zero'), ('u55', 't_null'))
   AND (l.ms_played IS NULL OR l.ms_played IN (179999, 180000))
   AND l.region IS NULL
 ORDER BY 1, 2, 3 NULLS FIRST;

-- Not for PUBLIC: it reads tracks and users.
SELECT pg_catalog.has_function_privilege('public',
	'streamkpi._kpi_event_attributes(text, text, int, text, text)', 'EXECUTE') AS public_may_call;

TRUNCATE streamkpi.listens, streamkpi.tracks, streamkpi.users;
