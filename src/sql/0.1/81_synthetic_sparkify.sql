-- streamkpi 0.1: synthetic Sparkify traffic (C, synthetic_sparkify.c).
--
-- Deterministic by seed.  Songs line up across the functions whatever the
-- seed: song k has the same title, artist and duration in the catalogue and
-- in the plays, so a catalogue of m songs matches the plays of songs 1..m.
--
--   INSERT INTO streamkpi.kafka_sparkify_songs (song_id, title, artist_id, artist_name,
--       artist_location, artist_latitude, artist_longitude, year, duration)
--   SELECT * FROM streamkpi.synthetic_sparkify_songs(5000);
--   -- raw log lines, keyed by userId, as the app writes them:
--   INSERT INTO streamkpi.kafka_sparkify_events (kkey, kpayload)
--   SELECT key, payload FROM streamkpi.synthetic_sparkify_lines(100000, now() - interval '1 day');

CREATE FUNCTION streamkpi.synthetic_sparkify_events(
	n bigint, start timestamptz, seed int DEFAULT 1,
	duration interval DEFAULT '1 day', users int DEFAULT 1000,
	songs int DEFAULT 5000, cancel_share float8 DEFAULT 0.05,
	new_user_share float8 DEFAULT 0.1,
	OUT ts timestamptz, OUT user_id text, OUT session_id bigint,
	OUT item_in_session int, OUT page text, OUT auth text, OUT level text,
	OUT method text, OUT status int, OUT location text, OUT user_agent text,
	OUT song text, OUT artist text, OUT length float8, OUT first_name text,
	OUT last_name text, OUT gender text, OUT registration timestamptz)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'streamkpi_synthetic_sparkify_events'
	LANGUAGE C STRICT STABLE PARALLEL SAFE ROWS 100000;

COMMENT ON FUNCTION streamkpi.synthetic_sparkify_events(bigint, timestamptz, int, interval, int, int, float8, float8) IS
	'at most n Sparkify app events over [start, start + duration) in event-time order, deterministic by seed';

CREATE FUNCTION streamkpi.synthetic_sparkify_lines(
	n bigint, start timestamptz, seed int DEFAULT 1,
	duration interval DEFAULT '1 day', users int DEFAULT 1000,
	songs int DEFAULT 5000, cancel_share float8 DEFAULT 0.05,
	new_user_share float8 DEFAULT 0.1, malformed_share float8 DEFAULT 0,
	OUT key text, OUT payload bytea)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'streamkpi_synthetic_sparkify_lines'
	LANGUAGE C STRICT STABLE PARALLEL SAFE ROWS 100000;

COMMENT ON FUNCTION streamkpi.synthetic_sparkify_lines(bigint, timestamptz, int, interval, int, int, float8, float8, float8) IS
	'the events of synthetic_sparkify_events as the app''s JSON lines keyed by userId, a malformed_share of them malformed';

CREATE FUNCTION streamkpi.synthetic_sparkify_songs(
	n int,
	OUT song_id text, OUT title text, OUT artist_id text, OUT artist_name text,
	OUT artist_location text, OUT artist_latitude float8,
	OUT artist_longitude float8, OUT year int, OUT duration float8)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'streamkpi_synthetic_sparkify_songs'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE ROWS 5000;

COMMENT ON FUNCTION streamkpi.synthetic_sparkify_songs(int) IS
	'Sparkify songs 1..n as a Million-Song-Dataset catalogue, the songs synthetic_sparkify_events plays';
