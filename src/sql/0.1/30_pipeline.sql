-- Pipelines: a SQL statement over one Kafka foreign table, run by a
-- background worker per batch of new messages.  The rows it writes, the new
-- offsets and the dead letters of a batch commit in one transaction.

CREATE TABLE streamkpi.pipelines (
	name text PRIMARY KEY
		CONSTRAINT pipeline_name_valid CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,62}$'),
	owner regrole NOT NULL,
	statement text NOT NULL,
	search_path text NOT NULL,		-- the creator's, for resolving the statement's names
	source regclass NOT NULL,		-- the streamkpi_kafka foreign table it reads
	batch_size int NOT NULL DEFAULT 10000
		CONSTRAINT pipeline_batch_size_valid CHECK (batch_size BETWEEN 1 AND 1000000),
	batch_ms int NOT NULL DEFAULT 100
		CONSTRAINT pipeline_batch_ms_valid CHECK (batch_ms BETWEEN 1 AND 3600000),
	group_id text
		CONSTRAINT pipeline_group_id_valid CHECK (group_id <> ''),
	parallelism int NOT NULL DEFAULT 1
		CONSTRAINT pipeline_parallelism_valid CHECK (parallelism BETWEEN 1 AND 64),
	enabled boolean NOT NULL DEFAULT false,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE streamkpi.pipelines IS 'pipeline definitions; manage them with streamkpi.create_pipeline() and friends';

-- next_offset is the first offset not yet processed: a restarted worker
-- resumes exactly there.
CREATE TABLE streamkpi.pipeline_offsets (
	pipeline text NOT NULL
		REFERENCES streamkpi.pipelines (name) ON DELETE CASCADE,
	topic text NOT NULL,
	partition int NOT NULL,
	next_offset bigint NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (pipeline, topic, partition)
);
COMMENT ON TABLE streamkpi.pipeline_offsets IS 'per pipeline and partition, the next Kafka offset to process';

CREATE TABLE streamkpi.dead_letters (
	id bigserial PRIMARY KEY,
	pipeline text NOT NULL,			-- 'kpi': a late event the KPI worker refused
	topic text,						-- NULL when the event did not come from Kafka
	partition int,
	"offset" bigint,
	key bytea,
	payload bytea,
	error text NOT NULL,
	sqlstate text,
	seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_pipeline_seen_at ON streamkpi.dead_letters (pipeline, seen_at);
COMMENT ON TABLE streamkpi.dead_letters IS 'messages a pipeline could not process, with the reason';

SELECT pg_catalog.pg_extension_config_dump('streamkpi.pipelines', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.pipeline_offsets', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.dead_letters_id_seq', '');

CREATE FUNCTION streamkpi._pipeline_check(name text, statement text, owner regrole, search_path text)
	RETURNS regclass
	AS 'MODULE_PATHNAME', 'streamkpi_pipeline_check'
	LANGUAGE C STRICT VOLATILE;

-- The role a pipeline function acts for: each public pipeline function is
-- a SECURITY INVOKER wrapper that notes current_user with _note_caller()
-- and calls a SECURITY DEFINER function, which takes it with _caller().
CREATE FUNCTION streamkpi._note_caller() RETURNS void
	AS 'MODULE_PATHNAME', 'streamkpi_note_caller'
	LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION streamkpi._caller() RETURNS regrole
	AS 'MODULE_PATHNAME', 'streamkpi_caller'
	LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION streamkpi._wake_launcher() RETURNS void
	AS 'MODULE_PATHNAME', 'streamkpi_wake_launcher'
	LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION streamkpi._pipeline_slots(
	OUT pipeline text, OUT worker int, OUT state text, OUT pid int,
	OUT partition int, OUT committed_offset bigint, OUT high_watermark bigint,
	OUT lag bigint, OUT rows_per_sec_10s float8, OUT rows_per_sec_total float8,
	OUT rows bigint, OUT batches bigint, OUT last_batch_ms int,
	OUT last_latency_ms int, OUT dead_letters bigint,
	OUT last_error text, OUT last_error_at timestamptz, OUT last_sqlstate text,
	OUT restarts int, OUT failures int, OUT retry_at timestamptz)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'streamkpi_pipeline_slots'
	LANGUAGE C STRICT VOLATILE;

-- The pipeline row the caller may act on, locked.  Its owner's members
-- may do anything with it; streamkpi_admin may start and stop any pipeline
-- but redefine (alter, drop) only its own, as with ALTER TABLE: the worker
-- runs the statement with its owner's rights, so whoever changes it must
-- hold them.  A pipeline whose owner role was dropped cannot run again;
-- streamkpi_admin may drop it.
CREATE FUNCTION streamkpi._pipeline_for_caller(pipeline_name text, redefine boolean)
	RETURNS streamkpi.pipelines
	LANGUAGE plpgsql SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p streamkpi.pipelines;
	caller regrole := streamkpi._caller();
	is_admin boolean := pg_catalog.pg_has_role(caller, 'streamkpi_admin', 'MEMBER');
	owner_gone boolean;
BEGIN
	SELECT * INTO p FROM streamkpi.pipelines WHERE name = pipeline_name FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'pipeline "%" does not exist', pipeline_name
			USING ERRCODE = 'undefined_object';
	END IF;
	IF pg_catalog.pg_has_role(caller, p.owner, 'USAGE') THEN
		RETURN p;
	END IF;
	owner_gone := NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid = p.owner);
	IF is_admin AND (NOT redefine OR owner_gone) THEN
		RETURN p;
	END IF;
	IF is_admin THEN
		RAISE EXCEPTION 'permission denied to redefine pipeline "%"', pipeline_name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = pg_catalog.format('Pipeline "%s" is owned by role %s, and its statement runs with that role''s rights.',
											 pipeline_name, p.owner),
				  HINT = pg_catalog.format('Only members of role %s may alter or drop it; streamkpi_admin may start and stop it.',
										   p.owner);
	END IF;
	RAISE EXCEPTION 'permission denied for pipeline "%"', pipeline_name
		USING ERRCODE = 'insufficient_privilege',
			  DETAIL = pg_catalog.format('Only members of its owner %s may manage it; members of streamkpi_admin may start and stop it.',
										 p.owner);
END
$$;

CREATE FUNCTION streamkpi._create_pipeline(
	name text, statement text, batch_size int, batch_ms int, group_id text,
	parallelism int, search_path text)
	RETURNS void
	LANGUAGE plpgsql SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	caller regrole := streamkpi._caller();
	source regclass;
BEGIN
	IF NOT pg_catalog.pg_has_role(caller, 'streamkpi_admin', 'MEMBER') THEN
		RAISE EXCEPTION 'permission denied to create pipeline "%"', name
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Pipelines are created by members of streamkpi_admin.';
	END IF;
	IF EXISTS (SELECT FROM streamkpi.pipelines p WHERE p.name = _create_pipeline.name) THEN
		RAISE EXCEPTION 'pipeline "%" already exists', name
			USING ERRCODE = 'duplicate_object';
	END IF;
	source := streamkpi._pipeline_check(name, statement, caller, search_path);
	INSERT INTO streamkpi.pipelines
		(name, owner, statement, search_path, source, batch_size, batch_ms,
		 group_id, parallelism)
	VALUES (_create_pipeline.name, caller, _create_pipeline.statement,
			_create_pipeline.search_path, source, _create_pipeline.batch_size,
			_create_pipeline.batch_ms, _create_pipeline.group_id,
			_create_pipeline.parallelism);
END
$$;

-- Runs as the caller, so that the statement's names resolve in the
-- caller's search_path; that search_path is kept with the pipeline.
CREATE FUNCTION streamkpi.create_pipeline(
	name text,
	statement text,
	batch_size int DEFAULT 10000,
	batch_ms int DEFAULT 100,
	group_id text DEFAULT NULL,
	parallelism int DEFAULT 1)
	RETURNS void
	LANGUAGE sql
AS $$
	SELECT streamkpi._note_caller();
	SELECT streamkpi._create_pipeline(name, statement, batch_size, batch_ms,
		group_id, parallelism, pg_catalog.current_setting('search_path'))
$$;

CREATE FUNCTION streamkpi._start_pipeline(name text) RETURNS void
	LANGUAGE plpgsql SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM streamkpi._pipeline_for_caller(name, false);
	-- checked before enabling, so a server without preloading says so
	PERFORM streamkpi._wake_launcher();
	UPDATE streamkpi.pipelines p SET enabled = true, updated_at = now()
	 WHERE p.name = _start_pipeline.name;
END
$$;

CREATE FUNCTION streamkpi.start_pipeline(name text) RETURNS void
	LANGUAGE sql
AS $$
	SELECT streamkpi._note_caller();
	SELECT streamkpi._start_pipeline(name)
$$;

-- The worker notices at its next batch (it holds a share lock on its row
-- while a batch runs, so this waits for the batch in flight to commit).
CREATE FUNCTION streamkpi._stop_pipeline(name text) RETURNS void
	LANGUAGE plpgsql SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM streamkpi._pipeline_for_caller(name, false);
	UPDATE streamkpi.pipelines p SET enabled = false, updated_at = now()
	 WHERE p.name = _stop_pipeline.name;
END
$$;

CREATE FUNCTION streamkpi.stop_pipeline(name text) RETURNS void
	LANGUAGE sql
AS $$
	SELECT streamkpi._note_caller();
	SELECT streamkpi._stop_pipeline(name)
$$;

CREATE FUNCTION streamkpi._drop_pipeline(name text) RETURNS void
	LANGUAGE plpgsql SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM streamkpi._pipeline_for_caller(name, true);
	DELETE FROM streamkpi.pipelines p WHERE p.name = _drop_pipeline.name;
END
$$;

CREATE FUNCTION streamkpi.drop_pipeline(name text) RETURNS void
	LANGUAGE sql
AS $$
	SELECT streamkpi._note_caller();
	SELECT streamkpi._drop_pipeline(name)
$$;

CREATE FUNCTION streamkpi._alter_pipeline(
	name text, statement text, batch_size int, batch_ms int, group_id text,
	parallelism int, search_path text)
	RETURNS void
	LANGUAGE plpgsql SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p streamkpi.pipelines := streamkpi._pipeline_for_caller(name, true);
	new_source regclass := p.source;
BEGIN
	IF statement IS NOT NULL THEN
		new_source := streamkpi._pipeline_check(name, statement, p.owner, search_path);
	END IF;
	UPDATE streamkpi.pipelines q
	   SET statement = coalesce(_alter_pipeline.statement, q.statement),
		   search_path = CASE WHEN _alter_pipeline.statement IS NULL THEN q.search_path
							  ELSE _alter_pipeline.search_path END,
		   source = new_source,
		   batch_size = coalesce(_alter_pipeline.batch_size, q.batch_size),
		   batch_ms = coalesce(_alter_pipeline.batch_ms, q.batch_ms),
		   group_id = coalesce(_alter_pipeline.group_id, q.group_id),
		   parallelism = coalesce(_alter_pipeline.parallelism, q.parallelism),
		   updated_at = now()
	 WHERE q.name = _alter_pipeline.name;
END
$$;

-- NULL arguments keep the current value.  A running worker restarts with
-- the new definition at its next batch, from the committed offsets.
CREATE FUNCTION streamkpi.alter_pipeline(
	name text,
	statement text DEFAULT NULL,
	batch_size int DEFAULT NULL,
	batch_ms int DEFAULT NULL,
	group_id text DEFAULT NULL,
	parallelism int DEFAULT NULL)
	RETURNS void
	LANGUAGE sql
AS $$
	SELECT streamkpi._note_caller();
	SELECT streamkpi._alter_pipeline(name, statement, batch_size, batch_ms,
		group_id, parallelism, pg_catalog.current_setting('search_path'))
$$;

CREATE VIEW streamkpi.pipeline_status AS
SELECT p.name AS pipeline,
	   coalesce(s.state, CASE WHEN p.enabled THEN 'starting' ELSE 'stopped' END) AS state,
	   p.enabled,
	   s.worker, s.pid, s.partition, s.committed_offset, s.high_watermark, s.lag,
	   s.rows_per_sec_10s, s.rows_per_sec_total, s.rows, s.batches,
	   s.last_batch_ms, s.last_latency_ms,
	   (SELECT count(*) FROM streamkpi.dead_letters d WHERE d.pipeline = p.name) AS dead_letters,
	   s.last_error, s.last_error_at, s.last_sqlstate,
	   s.restarts, s.failures, s.retry_at
  FROM streamkpi.pipelines p
  LEFT JOIN streamkpi._pipeline_slots() s ON s.pipeline = p.name;
COMMENT ON VIEW streamkpi.pipeline_status IS
	'per pipeline, worker and partition: state, committed offset, lag, rates, last error with its SQLSTATE, restarts and backoff';

REVOKE ALL ON FUNCTION streamkpi._pipeline_check(text, text, regrole, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi._create_pipeline(text, text, int, int, text, int, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi._alter_pipeline(text, text, int, int, text, int, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi._pipeline_for_caller(text, boolean) FROM PUBLIC;
-- last errors may quote message data: for those who may inspect pipelines
REVOKE ALL ON FUNCTION streamkpi._pipeline_slots() FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi.create_pipeline(text, text, int, int, text, int) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi.start_pipeline(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi._start_pipeline(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi._stop_pipeline(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi._drop_pipeline(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi.stop_pipeline(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi.drop_pipeline(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi.alter_pipeline(text, text, int, int, text, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION streamkpi.create_pipeline(text, text, int, int, text, int),
	streamkpi.start_pipeline(text), streamkpi.stop_pipeline(text),
	streamkpi.drop_pipeline(text),
	streamkpi.alter_pipeline(text, text, int, int, text, int),
	streamkpi._create_pipeline(text, text, int, int, text, int, text),
	streamkpi._alter_pipeline(text, text, int, int, text, int, text),
	streamkpi._start_pipeline(text), streamkpi._stop_pipeline(text),
	streamkpi._drop_pipeline(text), streamkpi._pipeline_slots()
	TO streamkpi_admin;
GRANT SELECT ON streamkpi.pipelines, streamkpi.pipeline_offsets,
	streamkpi.dead_letters, streamkpi.pipeline_status TO streamkpi_admin;
