-- streamkpi 0.1: incremental KPI maintenance, what the KPI worker runs
-- (src/kpi_worker.c calls streamkpi.kpi_apply_new() every
-- streamkpi.kpi_naptime; the round itself is C, src/kpi_apply.c, on the
-- engine that refresh_kpis() uses too, see 50_kpi.sql).
--
-- Exactly once.  Every listen carries ingest_xid, the id of the transaction
-- that inserted it.  streamkpi.kpi_state holds the snapshot
-- (pg_current_snapshot()) up to which events have been applied.  A round,
-- in ONE transaction under the KPI lock:
--   1. takes a new snapshot S_new;
--   2. the new events are those whose ingest_xid is visible in S_new and
--      not in the stored S_old (found through the per-partition ingest_xid
--      index from S_old's xmin to S_new's xmax);
--   3. streams them through the engine: adds them to the state (counts
--      add, hll sketches union), re-derives the KPI rows of the days and
--      windows they touched; moves the too late ones to dead letters;
--   4. stores S_new.
-- Snapshots only grow (a transaction visible in one stays visible in every
-- later one), so each committed transaction falls into exactly one round,
-- however many pipelines commit concurrently and in whatever order.  A
-- crash before the commit loses the whole round, including step 4; after
-- it, the round is complete.  Either way nothing is missed or doubled.
--
-- refresh_kpis() counts the events visible in a snapshot it takes under the
-- same lock and records it with its range in streamkpi.kpi_refreshed; the
-- next round skips those events for those days and windows, then forgets
-- the record (S_new is later, so it covers it).
--
-- Late events.  An event is too late when it was ingested more than
-- streamkpi.late_horizon after it happened (listened_at < ingested_at -
-- late_horizon).  Using ingestion time, not the worker's clock, makes the
-- decision independent of when the worker gets to it.  A too late event is
-- moved from streamkpi.listens to streamkpi.dead_letters (pipeline 'kpi',
-- payload: the event as JSON, error: the reason) by the next round;
-- refresh_kpis() applies the same test, so it never counts one either, even
-- before the worker has moved it.  Later events correct their day and windows.

-- streamkpi.late_horizon as an interval (the GUC is defined in C; until a
-- backend has loaded the library it may be absent, hence the default).
CREATE FUNCTION streamkpi.late_horizon()
	RETURNS interval
	LANGUAGE sql STABLE PARALLEL SAFE
	AS $$ SELECT COALESCE(NULLIF(
			  pg_catalog.current_setting('streamkpi.late_horizon', true), ''),
			  '7 days')::interval $$;

COMMENT ON FUNCTION streamkpi.late_horizon() IS
	'events ingested later than this after they happened are dead letters: setting streamkpi.late_horizon, default 7 days';

-- One row: the snapshot up to which events have been applied, and counters.
-- Not dumped by pg_dump: a restored database starts from its own snapshot.
CREATE TABLE streamkpi.kpi_state (
	id			boolean PRIMARY KEY DEFAULT true CONSTRAINT kpi_state_one_row CHECK (id),
	snapshot	pg_snapshot NOT NULL,
	applied_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	rounds		bigint NOT NULL DEFAULT 0,
	events		bigint NOT NULL DEFAULT 0,
	late_events	bigint NOT NULL DEFAULT 0
);

COMMENT ON TABLE streamkpi.kpi_state IS
	'snapshot up to which the KPI worker has applied events, with counters';

-- listens is created by this same script, so nothing exists before this
-- snapshot.
INSERT INTO streamkpi.kpi_state (snapshot) VALUES (pg_catalog.pg_current_snapshot());

-- Ranges refresh_kpis() recomputed since the last round, with the snapshot
-- whose events it counted.
CREATE TABLE streamkpi.kpi_refreshed (
	from_day	date NOT NULL,
	to_day		date NOT NULL,
	lo			timestamptz NOT NULL,	-- windows starting in [lo, hi)
	hi			timestamptz NOT NULL,
	snapshot	pg_snapshot NOT NULL,
	refreshed_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE streamkpi.kpi_refreshed IS
	'ranges refresh_kpis() recomputed that the KPI worker has not yet passed';

-- Exactly once needs a fresh snapshot per statement: taken after the KPI
-- lock, it covers everything the previous holder applied.  A REPEATABLE READ
-- or SERIALIZABLE transaction would keep an older one and, in refresh_kpis(),
-- drop events the worker had already applied.
CREATE FUNCTION streamkpi._kpi_require_read_committed(p_caller text)
	RETURNS void
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	AS $fn$
BEGIN
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION '% must run in a READ COMMITTED transaction', p_caller
			USING ERRCODE = 'active_sql_transaction',
				  DETAIL = format('This transaction is %s.', upper(current_setting('transaction_isolation'))),
				  HINT = 'Call it outside an explicit transaction, or after BEGIN ISOLATION LEVEL READ COMMITTED.';
	END IF;
END
$fn$;

-- Is a listen one of a round's (committed as of p_new, not as of p_old)?
-- Its planner support (kpi_round_filter.c) gives the ingest_xid range as an
-- index condition and p_events, the engine's count, as the estimate.
CREATE FUNCTION streamkpi._kpi_in_round_support(internal)
	RETURNS internal
	AS 'MODULE_PATHNAME', 'streamkpi_kpi_in_round_support'
	LANGUAGE C STRICT;

CREATE FUNCTION streamkpi._kpi_in_round(p_xid xid8, p_old pg_snapshot,
										p_new pg_snapshot, p_events bigint)
	RETURNS boolean
	AS 'MODULE_PATHNAME', 'streamkpi_kpi_in_round'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
	SUPPORT streamkpi._kpi_in_round_support;

REVOKE ALL ON FUNCTION streamkpi._kpi_in_round_support(internal) FROM PUBLIC;

-- Called by refresh_kpis() under the KPI lock: record the range and return
-- the snapshot whose events the refresh counts.
CREATE FUNCTION streamkpi._kpi_refresh_begin(p_from date, p_to date,
											 p_lo timestamptz, p_hi timestamptz)
	RETURNS pg_snapshot
	LANGUAGE sql
	SET search_path = pg_catalog, pg_temp
	AS $$
	SELECT streamkpi._kpi_require_read_committed('streamkpi.refresh_kpis()');
	INSERT INTO streamkpi.kpi_refreshed (from_day, to_day, lo, hi, snapshot)
	VALUES (p_from, p_to, p_lo, p_hi, pg_catalog.pg_current_snapshot())
	RETURNING snapshot
$$;

-- The start of a round (called by kpi_apply_new()): the checks, the KPI
-- lock, the stored snapshot and a new one, and whether refresh_kpis() ran
-- since the last round.
CREATE FUNCTION streamkpi._kpi_round_begin(OUT s_old pg_snapshot,
										   OUT s_new pg_snapshot,
										   OUT horizon interval,
										   OUT refreshed boolean)
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	AS $fn$
BEGIN
	PERFORM streamkpi._kpi_check_timezone(streamkpi.kpi_timezone());
	PERFORM streamkpi._kpi_require_read_committed('streamkpi.kpi_apply_new()');
	PERFORM pg_advisory_xact_lock(streamkpi.kpi_lock_key());

	-- Every writer of kpi_state holds the lock, so a plain read is current
	-- (in READ COMMITTED, the isolation level this must run in).
	SELECT snapshot INTO s_old FROM streamkpi.kpi_state;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'streamkpi.kpi_state has no row'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Recreate the extension, or insert the current snapshot: INSERT INTO streamkpi.kpi_state (snapshot) VALUES (pg_current_snapshot()).';
	END IF;
	s_new := pg_current_snapshot();
	IF pg_snapshot_xmax(s_new) < pg_snapshot_xmax(s_old)
	   OR pg_snapshot_xmin(s_new) < pg_snapshot_xmin(s_old) THEN
		RAISE EXCEPTION 'the snapshot of this transaction is older than the last applied one'
			USING ERRCODE = 'serialization_failure',
				  HINT = 'Call streamkpi.kpi_apply_new() in a READ COMMITTED transaction.';
	END IF;
	horizon := streamkpi.late_horizon();
	refreshed := EXISTS (SELECT FROM streamkpi.kpi_refreshed);
END
$fn$;

-- Apply the events committed since the last round.  Returns how many events
-- it counted (late ones excluded).
CREATE FUNCTION streamkpi.kpi_apply_new()
	RETURNS bigint
	AS 'MODULE_PATHNAME', 'streamkpi_kpi_apply_new'
	LANGUAGE C
	SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	SET DateStyle = 'ISO, YMD'		-- dead-letter reasons read the same everywhere
	SET IntervalStyle = 'postgres'
	SET work_mem = '64MB'
	SET jit = off;					-- compiling costs more than a round runs

COMMENT ON FUNCTION streamkpi.kpi_apply_new() IS
	'apply the listens committed since the last call to the KPI tables, exactly once; returns the events counted';

REVOKE ALL ON FUNCTION streamkpi._kpi_require_read_committed(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi._kpi_refresh_begin(date, date, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi._kpi_round_begin() FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi.kpi_apply_new() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION streamkpi.kpi_apply_new() TO streamkpi_admin;
GRANT SELECT ON streamkpi.kpi_state TO streamkpi_admin;
