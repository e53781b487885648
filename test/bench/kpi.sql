-- Incremental KPI update vs refresh_kpis(), see kpi.sh.  :rows events of
-- history over 2026-01-01 .. 2026-01-10 (20,000 tracks in 8 genres, 100,000
-- users, 3 regions); then three times: 10,000 new events on 2026-01-10,
-- applied by kpi_apply_new(); and refresh_kpis() of 2026-01-10.  Medians.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION streamkpi CASCADE;

INSERT INTO streamkpi.tracks (track_id, track_name, genre, duration_ms)
SELECT 't' || i, 'track ' || i,
	   (ARRAY['rock', 'pop', 'jazz', 'folk', 'metal', 'hiphop', 'classical', 'soul'])[1 + i % 8],
	   120000 + i % 100000
  FROM generate_series(1, 20000) i;
INSERT INTO streamkpi.users (user_id, age, country, subscription)
SELECT 'u' || i, 15 + i % 60, (ARRAY['GH', 'DE', 'US', 'NG', 'FR'])[1 + i % 5],
	   CASE WHEN i % 3 = 0 THEN 'premium' ELSE 'free' END
  FROM generate_series(1, 100000) i;

CREATE FUNCTION pg_temp.events(p_prefix text, p_n bigint, p_from timestamptz, p_span interval)
	RETURNS bigint LANGUAGE sql AS $$
	INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played,
								   action, region, device)
	SELECT p_prefix || i, 'u' || (1 + (i * 7919) % 100000),
		   -- skewed: low track numbers are popular
		   't' || (1 + ((i * 104729) % 20000) * ((i * 31) % 20000) / 20000),
		   p_from + ((i - 1)::float8 / p_n) * p_span,
		   CASE WHEN i % 9 = 0 THEN NULL ELSE 5000 + (i * 13) % 200000 END,
		   (ARRAY['play', 'play', 'play', 'play', 'skip', 'like'])[1 + i % 6],
		   (ARRAY['eu', 'us', 'af'])[1 + i % 3],
		   (ARRAY['mobile', 'web', 'tv'])[1 + i % 3]
	  FROM generate_series(1, p_n) i;
	SELECT p_n
$$;

\echo loading :rows events of history
SELECT streamkpi.ensure_listens_partitions('2026-01-01 00:00+00', '2026-01-10 23:59+00') AS partitions;
SELECT pg_temp.events('h', :rows, '2026-01-01 00:00+00', interval '10 days') AS history;
SELECT streamkpi.refresh_kpis('2026-01-01', '2026-01-10');
-- the history is in the state; the incremental path starts after it
UPDATE streamkpi.kpi_state SET snapshot = pg_current_snapshot();
TRUNCATE streamkpi.kpi_refreshed;
VACUUM ANALYZE;

CREATE TEMP TABLE timing (what text, ms float8);
CREATE PROCEDURE pg_temp.round(p_round int) LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz;
BEGIN
	PERFORM pg_temp.events('n' || p_round || '-', 10000,
						   timestamptz '2026-01-10 12:00+00' + p_round * interval '10 min',
						   interval '10 min');
	COMMIT;
	t0 := clock_timestamp();
	PERFORM streamkpi.kpi_apply_new();
	INSERT INTO timing VALUES ('incremental', extract(epoch FROM clock_timestamp() - t0) * 1000);
	COMMIT;
	t0 := clock_timestamp();
	PERFORM streamkpi.refresh_kpis('2026-01-10', '2026-01-10');
	INSERT INTO timing VALUES ('refresh', extract(epoch FROM clock_timestamp() - t0) * 1000);
	COMMIT;
	-- the next round must not skip its events for the refreshed day
	PERFORM streamkpi.kpi_apply_new();
	COMMIT;
END $$;
CALL pg_temp.round(1);
CALL pg_temp.round(2);
CALL pg_temp.round(3);

SELECT (SELECT count(*) FROM streamkpi.listens WHERE listened_at >= '2026-01-10' AND listened_at < '2026-01-11') AS events_that_day,
	   round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FILTER (WHERE what = 'incremental')::numeric, 1)
		   AS incremental_10k_ms,
	   round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FILTER (WHERE what = 'refresh')::numeric, 1)
		   AS refresh_day_ms,
	   round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FILTER (WHERE what = 'refresh')
			 / percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FILTER (WHERE what = 'incremental'))::numeric, 1)
		   AS ratio_target_20
  FROM timing;
-- sanity: incremental state equals a refresh (both counted each event once)
SELECT sum(listen_count) = (SELECT count(*) FROM streamkpi.listens WHERE action = 'play') AS every_play_once
  FROM streamkpi.daily_genre_kpis;
