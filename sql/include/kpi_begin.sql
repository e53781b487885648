-- Start of a KPI regression test (sql/kpi_*.sql, through \i): the
-- extension, UTC days, no events, tracks, users or KPI rows, the worker's
-- snapshot at now, and its counters saved for sql/include/kpi_end.sql.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
RESET client_min_messages;
SET TimeZone = 'UTC';
SET streamkpi.kpi_timezone = 'UTC';
SET streamkpi.late_horizon = '7 days';

-- no events, tracks, users or KPI rows: at the start, and left so at the end
CREATE FUNCTION pg_temp.empty_kpis() RETURNS void LANGUAGE sql AS $$
TRUNCATE streamkpi.listens, streamkpi.tracks, streamkpi.users,
	streamkpi.daily_genre_track_counts, streamkpi.daily_genre_users,
	streamkpi.daily_genre_track_topn, streamkpi.daily_engagement_state,
	streamkpi.window_state, streamkpi.daily_genre_kpis,
	streamkpi.daily_genre_top_tracks, streamkpi.daily_top_genres,
	streamkpi.trending, streamkpi.daily_engagement, streamkpi.kpi_refreshed $$;
SELECT pg_temp.empty_kpis();
UPDATE streamkpi.kpi_state SET snapshot = pg_current_snapshot();
-- the worker's counters, put back at the end (other tests read them)
CREATE TEMP TABLE counters AS SELECT rounds, events, late_events FROM streamkpi.kpi_state;
