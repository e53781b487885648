-- streamkpi 0.1: core objects.  Every object lives in schema streamkpi.
\echo Use "CREATE EXTENSION streamkpi" to load this file. \quit

CREATE FUNCTION streamkpi.version() RETURNS text
	AS 'MODULE_PATHNAME', 'streamkpi_version'
	LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION streamkpi.version() IS
	'streamkpi version and the librdkafka it is linked with';

CREATE FUNCTION streamkpi.workers(
	OUT kind text, OUT pid int, OUT started_at timestamptz)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'streamkpi_workers'
	LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION streamkpi.workers() IS
	'streamkpi background workers that are running (needs shared_preload_libraries)';

-- Who may manage Kafka servers and pipelines, and who may only read KPIs.
DO $roles$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'streamkpi_admin') THEN
		CREATE ROLE streamkpi_admin NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'streamkpi_reader') THEN
		CREATE ROLE streamkpi_reader NOLOGIN;
	END IF;
END
$roles$;

GRANT USAGE ON SCHEMA streamkpi TO streamkpi_admin, streamkpi_reader;
