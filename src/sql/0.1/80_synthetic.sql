-- streamkpi 0.1: synthetic music traffic (C, synthetic.c).
--
-- Deterministic by seed: the same arguments give the same rows on any
-- server.  Ids line up across the three functions whatever their seeds:
-- tracks 't1'..'tN' (t1 the most played, Zipf 1.1), users 'u1'..'uN' (a
-- user's region, country and subscription depend on its number only), and a
-- track's duration_ms depends on its number only, so ms_played fits it.
--
--   INSERT INTO streamkpi.tracks SELECT * FROM streamkpi.synthetic_tracks(5000);
--   INSERT INTO streamkpi.users SELECT * FROM streamkpi.synthetic_users(100000);
--   INSERT INTO kafka_listens (event_id, user_id, track_id, listened_at,
--                              ms_played, action, region, device)
--   SELECT * FROM streamkpi.synthetic_listens(2000000, now() - interval '1 hour', seed => 42);
--   -- raw JSON payloads, 1% of them malformed, into a topic as they are:
--   INSERT INTO kafka_listens (kkey, kpayload)
--   SELECT key, payload FROM streamkpi.synthetic_listen_lines(10000, now(), malformed_share => 0.01);

CREATE FUNCTION streamkpi.synthetic_listens(
	n bigint, start timestamptz, seed int DEFAULT 1,
	duration interval DEFAULT '1 hour', tracks int DEFAULT 5000,
	users int DEFAULT 100000, late_share float8 DEFAULT 0,
	OUT event_id text, OUT user_id text, OUT track_id text,
	OUT listened_at timestamptz, OUT ms_played int, OUT action text,
	OUT region text, OUT device text)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'streamkpi_synthetic_listens'
	LANGUAGE C STRICT STABLE PARALLEL SAFE ROWS 100000;

COMMENT ON FUNCTION streamkpi.synthetic_listens(bigint, timestamptz, int, interval, int, int, float8) IS
	'n synthetic listen events in event-time order over [start, start + duration), deterministic by seed';

CREATE FUNCTION streamkpi.synthetic_listen_lines(
	n bigint, start timestamptz, seed int DEFAULT 1,
	duration interval DEFAULT '1 hour', tracks int DEFAULT 5000,
	users int DEFAULT 100000, late_share float8 DEFAULT 0,
	malformed_share float8 DEFAULT 0,
	OUT key text, OUT payload bytea)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'streamkpi_synthetic_listen_lines'
	LANGUAGE C STRICT STABLE PARALLEL SAFE ROWS 100000;

COMMENT ON FUNCTION streamkpi.synthetic_listen_lines(bigint, timestamptz, int, interval, int, int, float8, float8) IS
	'the events of synthetic_listens as JSON payloads keyed by user_id, a malformed_share of them malformed';

CREATE FUNCTION streamkpi.synthetic_tracks(
	n int, seed int DEFAULT 1,
	OUT track_id text, OUT track_name text, OUT artists text, OUT album text,
	OUT genre text, OUT duration_ms int)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'streamkpi_synthetic_tracks'
	LANGUAGE C STRICT STABLE PARALLEL SAFE ROWS 5000;

COMMENT ON FUNCTION streamkpi.synthetic_tracks(int, int) IS
	'a synthetic catalog of tracks t1..tn over 15 genres, deterministic by seed';

CREATE FUNCTION streamkpi.synthetic_users(
	n int, seed int DEFAULT 1,
	OUT user_id text, OUT user_name text, OUT age int, OUT gender text,
	OUT country text, OUT subscription text, OUT created_at date)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'streamkpi_synthetic_users'
	LANGUAGE C STRICT STABLE PARALLEL SAFE ROWS 100000;

COMMENT ON FUNCTION streamkpi.synthetic_users(int, int) IS
	'synthetic users u1..un with countries of regions US, EU, APAC, LATAM, deterministic by seed';
