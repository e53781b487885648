-- streamkpi 0.1: the nightly work and its pg_cron schedule.
--
--   streamkpi.kpi_nightly_correction()  refresh_kpis() of the days late
--       events can still reach (late_horizon + 1 days up to today): unknown
--       tracks that arrived since move to their genre, dimension changes
--       apply.
--   streamkpi.archive_listens()  day partitions of listens older than
--       streamkpi.retention are detached into schema streamkpi_archive.
--   streamkpi.run_data_checks()  per day raw listens vs KPI listen_count,
--       dead-letter rate, KPI worker lag; findings in streamkpi.data_checks.
--   streamkpi.schedule_jobs() / unschedule_jobs()  register them with
--       pg_cron (1.4: UTC schedules, at most once a minute), idempotently.

CREATE SCHEMA streamkpi_archive;
COMMENT ON SCHEMA streamkpi_archive IS
	'listens day partitions older than streamkpi.retention, detached by streamkpi.archive_listens()';
GRANT USAGE ON SCHEMA streamkpi_archive TO streamkpi_admin;

CREATE FUNCTION streamkpi.retention()
	RETURNS interval
	LANGUAGE sql STABLE PARALLEL SAFE
	AS $$ SELECT COALESCE(NULLIF(
			  pg_catalog.current_setting('streamkpi.retention', true), ''),
			  '90 days')::interval $$;

COMMENT ON FUNCTION streamkpi.retention() IS
	'age after which listens partitions are archived: setting streamkpi.retention, default 90 days';

CREATE TABLE streamkpi.data_checks (
	id			bigserial PRIMARY KEY,
	checked_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	check_name	text NOT NULL,		-- raw_vs_kpi | dead_letters | kpi_lag
	day			date,				-- raw_vs_kpi: the local day checked
	ok			boolean NOT NULL,
	expected	numeric,
	actual		numeric,
	detail		text
);
CREATE INDEX data_checks_checked_at_idx ON streamkpi.data_checks (checked_at);

COMMENT ON TABLE streamkpi.data_checks IS
	'findings of streamkpi.run_data_checks(): ok is false where something needs a look';

SELECT pg_catalog.pg_extension_config_dump('streamkpi.data_checks', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.data_checks_id_seq', '');

-- Recompute the days late events can still change.
CREATE FUNCTION streamkpi.kpi_nightly_correction()
	RETURNS void
	LANGUAGE plpgsql
	SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	today	date := (now() AT TIME ZONE streamkpi.kpi_timezone())::date;
	back	int := ceil(extract(epoch FROM streamkpi.late_horizon()) / 86400)::int + 1;
BEGIN
	PERFORM streamkpi.refresh_kpis(today - back, today);
END
$fn$;

COMMENT ON FUNCTION streamkpi.kpi_nightly_correction() IS
	'refresh_kpis() of the last late_horizon + 1 days: late corrections, unknown tracks that arrived';

-- Detach day partitions whose whole UTC day is older than retention into
-- streamkpi_archive.  Returns the partitions archived.
CREATE FUNCTION streamkpi.archive_listens()
	RETURNS SETOF regclass
	LANGUAGE plpgsql
	SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	cutoff	timestamptz := now() - streamkpi.retention();
	r		record;
BEGIN
	FOR r IN SELECT c.relname
			   FROM pg_inherits i
			   JOIN pg_class c ON c.oid = i.inhrelid
			  WHERE i.inhparent = 'streamkpi.listens'::regclass
				AND c.relname ~ '^listens_p[0-9]{8}$'
				AND (to_date(substr(c.relname, 10), 'YYYYMMDD') + 1)::timestamp
					AT TIME ZONE 'UTC' <= cutoff
			  ORDER BY c.relname
	LOOP
		IF to_regclass('streamkpi_archive.' || quote_ident(r.relname)) IS NOT NULL THEN
			RAISE EXCEPTION 'streamkpi_archive.% already exists', r.relname
				USING ERRCODE = 'duplicate_table',
					  HINT = 'Drop or rename the archived table, then run streamkpi.archive_listens() again.';
		END IF;
		EXECUTE format('ALTER TABLE streamkpi.listens DETACH PARTITION streamkpi.%I', r.relname);
		EXECUTE format('ALTER TABLE streamkpi.%I SET SCHEMA streamkpi_archive', r.relname);
		RETURN NEXT format('streamkpi_archive.%I', r.relname)::regclass;
	END LOOP;
END
$fn$;

COMMENT ON FUNCTION streamkpi.archive_listens() IS
	'detach listens day partitions older than streamkpi.retention into schema streamkpi_archive';

-- Record findings: per local day with events in the last p_days days, raw
-- listens (committed up to the KPI worker's snapshot) against the KPI
-- listen_count; dead letters of the last 24 hours against listens ingested
-- in them (ok up to 1%); KPI worker lag (ok up to 1 minute behind).
-- Returns the number of findings that are not ok.
CREATE FUNCTION streamkpi.run_data_checks(p_days int DEFAULT 8)
	RETURNS bigint
	LANGUAGE plpgsql
	SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	tz		text := streamkpi.kpi_timezone();
	today	date := (now() AT TIME ZONE tz)::date;
	snap	pg_snapshot;
	run_at	timestamptz := now();
	dead	bigint;
	ingested bigint;
	lag		interval;
	pending	bigint;
BEGIN
	-- Under the KPI lock the KPI tables and the stored snapshot agree.
	PERFORM pg_advisory_xact_lock(streamkpi.kpi_lock_key());
	SELECT snapshot INTO snap FROM streamkpi.kpi_state;

	INSERT INTO streamkpi.data_checks (checked_at, check_name, day, ok, expected, actual, detail)
	WITH raw AS (
		SELECT (l.listened_at AT TIME ZONE tz)::date AS day, count(*) AS n
		  FROM streamkpi.listens l
		 WHERE l.listened_at >= (today - p_days)::timestamp AT TIME ZONE tz
		   AND l.action = 'play'
		   AND pg_visible_in_snapshot(l.ingest_xid, snap)
		 GROUP BY 1),
	kpi AS (
		SELECT k.day, sum(k.listen_count) AS n
		  FROM streamkpi.daily_genre_kpis k
		 WHERE k.day >= today - p_days
		 GROUP BY 1)
	SELECT run_at, 'raw_vs_kpi', day, coalesce(raw.n, 0) = coalesce(kpi.n, 0),
		   coalesce(raw.n, 0), coalesce(kpi.n, 0),
		   format('%s listens in streamkpi.listens, %s in daily_genre_kpis',
				  coalesce(raw.n, 0), coalesce(kpi.n, 0))
	  FROM raw FULL JOIN kpi USING (day)
	 ORDER BY day;

	SELECT count(*) INTO dead FROM streamkpi.dead_letters
	 WHERE seen_at > run_at - interval '1 day';
	SELECT count(*) INTO ingested FROM streamkpi.listens
	 WHERE ingested_at > run_at - interval '1 day'
	   AND listened_at > run_at - interval '1 day' - streamkpi.late_horizon();
	INSERT INTO streamkpi.data_checks (checked_at, check_name, ok, expected, actual, detail)
	VALUES (run_at, 'dead_letters', dead * 100 <= ingested + dead,
			round((ingested + dead) / 100.0, 2), dead,
			format('%s dead letters and %s listens in the last 24 hours (ok up to 1%%)',
				   dead, ingested));

	-- Events committed but not applied yet, and the age of the oldest.
	SELECT count(*), max(now() - l.ingested_at) INTO pending, lag
	  FROM streamkpi.listens l
	 WHERE l.ingest_xid >= pg_snapshot_xmin(snap)
	   AND NOT pg_visible_in_snapshot(l.ingest_xid, snap);
	INSERT INTO streamkpi.data_checks (checked_at, check_name, ok, expected, actual, detail)
	VALUES (run_at, 'kpi_lag', pending = 0 OR lag <= interval '1 minute',
			0, pending,
			format('%s committed listens not yet applied, the oldest ingested %s ago',
				   pending, coalesce(lag, interval '0')));

	RETURN (SELECT count(*) FROM streamkpi.data_checks
			 WHERE checked_at = run_at AND NOT ok);
END
$fn$;

COMMENT ON FUNCTION streamkpi.run_data_checks(int) IS
	'check raw listens vs KPIs per day, dead-letter rate and KPI worker lag into streamkpi.data_checks; returns findings not ok';

-- The jobs, by name.  Times are UTC (pg_cron 1.4 has no cron.timezone).
CREATE FUNCTION streamkpi._jobs(OUT jobname text, OUT schedule text, OUT command text)
	RETURNS SETOF record
	LANGUAGE sql IMMUTABLE
	AS $$ VALUES
	('streamkpi-nightly-correction', '15 0 * * *', 'SELECT streamkpi.kpi_nightly_correction()'),
	('streamkpi-retention', '45 0 * * *', 'SELECT count(*) FROM streamkpi.archive_listens()'),
	('streamkpi-data-checks', '30 * * * *', 'SELECT streamkpi.run_data_checks()')
$$;

CREATE FUNCTION streamkpi._require_pg_cron()
	RETURNS void
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	AS $fn$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron') THEN
		RAISE EXCEPTION 'pg_cron is not installed in database "%"', current_database()
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'streamkpi.schedule_jobs() registers its jobs with pg_cron.',
				  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, then CREATE EXTENSION pg_cron.';
	END IF;
END
$fn$;

-- Register (or update) the jobs; returns them with their pg_cron job ids.
-- Jobs run as the caller.
CREATE FUNCTION streamkpi.schedule_jobs()
	RETURNS TABLE (jobid bigint, jobname text, schedule text, command text)
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	j		record;
BEGIN
	PERFORM streamkpi._require_pg_cron();
	FOR j IN SELECT * FROM streamkpi._jobs() LOOP
		-- pg_cron updates a job of the same name and user instead of adding one
		jobid := cron.schedule(j.jobname, j.schedule, j.command);
		jobname := j.jobname;
		schedule := j.schedule;
		command := j.command;
		RETURN NEXT;
	END LOOP;
END
$fn$;

COMMENT ON FUNCTION streamkpi.schedule_jobs() IS
	'register the nightly correction, retention and data-check jobs with pg_cron (idempotent)';

-- Remove the caller's streamkpi jobs; returns how many.
CREATE FUNCTION streamkpi.unschedule_jobs()
	RETURNS integer
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	id		bigint;
	n		integer := 0;
BEGIN
	PERFORM streamkpi._require_pg_cron();
	FOR id IN SELECT c.jobid FROM cron.job c
			   WHERE c.jobname IN (SELECT jobname FROM streamkpi._jobs())
				 AND c.username = current_user
	LOOP
		PERFORM cron.unschedule(id);
		n := n + 1;
	END LOOP;
	RETURN n;
END
$fn$;

COMMENT ON FUNCTION streamkpi.unschedule_jobs() IS
	'remove the jobs streamkpi.schedule_jobs() registered for the current user';

REVOKE ALL ON FUNCTION streamkpi.kpi_nightly_correction() FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi.archive_listens() FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi.run_data_checks(int) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi.schedule_jobs() FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi.unschedule_jobs() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION streamkpi.kpi_nightly_correction(), streamkpi.archive_listens(),
	streamkpi.run_data_checks(int), streamkpi.schedule_jobs(), streamkpi.unschedule_jobs()
	TO streamkpi_admin;
GRANT SELECT ON streamkpi.data_checks TO streamkpi_admin;
