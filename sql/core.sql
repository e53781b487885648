-- The extension loads, says what it is, and guards its settings.
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;

SELECT extname, extversion, n.nspname AS schema, extrelocatable
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname IN ('streamkpi', 'hll') ORDER BY extname;

SELECT streamkpi.version() ~ '^streamkpi 0\.1, librdkafka [0-9]+\.[0-9]+\.[0-9]+' AS version_ok;

-- settings: defaults, units, and the reserved prefix
SHOW streamkpi.kafka_timeout;
SET streamkpi.kafka_timeout = '2s';
SHOW streamkpi.kafka_timeout;
SET streamkpi.kafka_timeout = 0;
RESET streamkpi.kafka_timeout;
SET streamkpi.no_such_setting = 1;

-- the launcher runs (the instance preloads streamkpi); wait up to 10 s for it
DO $$
BEGIN
	FOR i IN 1..100 LOOP
		EXIT WHEN EXISTS (SELECT FROM streamkpi.workers() WHERE kind = 'launcher');
		PERFORM pg_sleep(0.1);
	END LOOP;
END $$;
SELECT kind, pid > 0 AS has_pid, started_at <= now() AS started
  FROM streamkpi.workers();
SELECT backend_type FROM pg_stat_activity
 WHERE backend_type LIKE 'streamkpi%' ORDER BY 1;

-- roles for managing pipelines and for read-only dashboards
SELECT rolname, rolcanlogin FROM pg_roles
 WHERE rolname IN ('streamkpi_admin', 'streamkpi_reader') ORDER BY 1;
