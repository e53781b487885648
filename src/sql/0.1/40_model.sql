-- streamkpi 0.1: the data model of docs/contract.md §4 (listens, tracks, users).

-- Dimensions.  Keyed by their natural ids so that upsert pipelines over
-- compacted Kafka topics (INSERT ... ON CONFLICT DO UPDATE) just work.
CREATE TABLE streamkpi.tracks (
	track_id	text PRIMARY KEY,
	track_name	text,
	artists		text,
	album		text,
	genre		text,		-- NULL or '' counts as genre 'unknown' in KPIs
	duration_ms	int
);

COMMENT ON TABLE streamkpi.tracks IS
	'track dimension; events of tracks missing here count under genre ''unknown''';

CREATE TABLE streamkpi.users (
	user_id		text PRIMARY KEY,
	user_name	text,
	age			int,
	gender		text,
	country		text,
	subscription text,
	created_at	date
);

COMMENT ON TABLE streamkpi.users IS 'user dimension';

-- Raw listen events, range-partitioned by listened_at, one partition per UTC
-- day.  Partitions follow UTC days rather than streamkpi.kpi_timezone days on
-- purpose: partition bounds must never depend on a setting that can change,
-- and a local day simply prunes to the two UTC partitions it overlaps.
--
-- Beyond docs/contract.md §4:
--  * event_id defaults to a random UUID so that pipelines may omit it; it is
--    not unique-constrained (a unique index on a partitioned table must
--    contain the partition key, which would not make event_id unique).
--  * ingested_at defaults to the inserting transaction's start time.
--  * ingest_xid records the inserting transaction.  The incremental KPI worker
--    uses it to find exactly the events committed since the snapshot it last
--    processed (pg_visible_in_snapshot), which is correct with any number of
--    pipelines committing concurrently and out of order, unlike a timestamp
--    or a sequence whose values become visible out of order.
CREATE TABLE streamkpi.listens (
	event_id	text NOT NULL DEFAULT pg_catalog.gen_random_uuid()::text,
	user_id		text NOT NULL,
	track_id	text NOT NULL,
	listened_at	timestamptz NOT NULL,
	ms_played	int,			-- NULL: the track's duration_ms counts instead
	action		text NOT NULL DEFAULT 'play',
	region		text,
	device		text,
	ingested_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	ingest_xid	xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
	CONSTRAINT listens_action_check CHECK (action IN ('play', 'skip', 'like'))
) PARTITION BY RANGE (listened_at);

COMMENT ON TABLE streamkpi.listens IS
	'raw listen events, one partition per UTC day (see streamkpi.ensure_listens_partitions)';

-- Indexes are created per partition (see _create_listens_partition), not as
-- partitioned indexes on listens: a partitioned index would be an extension
-- member, so pg_dump would not recreate it, while ATTACH PARTITION on restore
-- would auto-create partition indexes that collide with the ones pg_dump
-- emits for the (non-member) day partitions.  Per partition:
--  * BRIN on listened_at: events arrive roughly in time order, so a tiny index
--    lets window recomputation (trending, track_windows) read minutes, not
--    whole days;
--  * btree on ingest_xid: the KPI worker's "what is new since my last
--    snapshot" lookup.

-- Safety net: an INSERT never fails for lack of a day partition.  Rows that
-- land here are moved into their day partition by
-- streamkpi.ensure_listens_partitions() (when it creates that day) and by
-- streamkpi.drain_listens_default().  Keep it empty: attaching a partition
-- scans it.
CREATE TABLE streamkpi.listens_default PARTITION OF streamkpi.listens DEFAULT;
CREATE INDEX listens_default_listened_at_brin ON streamkpi.listens_default
	USING brin (listened_at);
CREATE INDEX listens_default_ingest_xid_idx ON streamkpi.listens_default (ingest_xid);

-- Create the partition for one UTC day, moving the rows of that day out of
-- the default partition first.  Returns the number of rows moved.  The caller
-- holds the locks (see ensure_listens_partitions).
CREATE FUNCTION streamkpi._create_listens_partition(p_day date)
	RETURNS bigint
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	SET TimeZone = 'UTC'
	SET DateStyle = 'ISO, YMD'
	AS $fn$
DECLARE
	part	text := 'listens_p' || to_char(p_day, 'YYYYMMDD');
	lo		timestamptz := p_day::timestamp AT TIME ZONE 'UTC';
	hi		timestamptz := (p_day + 1)::timestamp AT TIME ZONE 'UTC';
	moved	bigint;
BEGIN
	-- CREATE TABLE ... PARTITION OF would take ACCESS EXCLUSIVE on listens
	-- and block every pipeline; CREATE + ATTACH needs only SHARE UPDATE
	-- EXCLUSIVE on the parent.  It also lets us move rows of this day out of
	-- the default partition before the bounds exist, which ATTACH requires.
	EXECUTE format('CREATE TABLE streamkpi.%I (LIKE streamkpi.listens'
				   ' INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)',
				   part);
	-- The CHECK lets ATTACH skip validating the new table by a scan.
	EXECUTE format('ALTER TABLE streamkpi.%I ADD CONSTRAINT %I'
				   ' CHECK (listened_at >= %L AND listened_at < %L)',
				   part, part || '_bounds', lo, hi);
	EXECUTE format('WITH moved AS (DELETE FROM streamkpi.listens_default'
				   ' WHERE listened_at >= $1 AND listened_at < $2 RETURNING *)'
				   ' INSERT INTO streamkpi.%I SELECT * FROM moved', part)
		USING lo, hi;
	GET DIAGNOSTICS moved = ROW_COUNT;
	EXECUTE format('CREATE INDEX %I ON streamkpi.%I USING brin (listened_at)',
				   part || '_listened_at_brin', part);
	EXECUTE format('CREATE INDEX %I ON streamkpi.%I (ingest_xid)',
				   part || '_ingest_xid_idx', part);
	EXECUTE format('ALTER TABLE streamkpi.listens ATTACH PARTITION streamkpi.%I'
				   ' FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
	EXECUTE format('ALTER TABLE streamkpi.%I DROP CONSTRAINT %I',
				   part, part || '_bounds');
	RETURN moved;
END
$fn$;

REVOKE ALL ON FUNCTION streamkpi._create_listens_partition(date) FROM PUBLIC;

-- Make sure a day partition exists for every UTC day that [p_from, p_to]
-- touches; returns how many were created.  Pipelines call it before inserting
-- a batch (min and max listened_at of the batch); a no-op costs one catalog
-- lookup per day.  It is SECURITY DEFINER so that a pipeline role needs only
-- INSERT on listens, not ownership.
CREATE FUNCTION streamkpi.ensure_listens_partitions(p_from timestamptz, p_to timestamptz)
	RETURNS integer
	LANGUAGE plpgsql
	SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	d		date;
	last_day date;
	created	integer := 0;
	locked	boolean := false;
BEGIN
	IF p_from IS NULL OR p_to IS NULL THEN
		RAISE EXCEPTION 'partition range bounds must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF p_to < p_from THEN
		RAISE EXCEPTION 'partition range end % is before its start %', p_to, p_from
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	d := (p_from AT TIME ZONE 'UTC')::date;
	last_day := (p_to AT TIME ZONE 'UTC')::date;
	-- One absurd timestamp in a batch must not create thousands of tables.
	IF last_day - d > 366 THEN
		RAISE EXCEPTION 'partition range spans % days', last_day - d + 1
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'At most 367 day partitions are created per call.',
				  HINT = 'Call it for the days really present; other rows go to streamkpi.listens_default.';
	END IF;
	WHILE d <= last_day LOOP
		IF to_regclass('streamkpi.listens_p' || to_char(d, 'YYYYMMDD')) IS NULL THEN
			IF NOT locked THEN
				-- SHARE UPDATE EXCLUSIVE conflicts with itself but not with
				-- INSERTs, so creators queue up while pipelines keep writing.
				-- Then ACCESS EXCLUSIVE on the default partition (ATTACH would
				-- take it anyway): no row can slip into it for the day being
				-- created.  Always this order, so creators cannot deadlock.
				LOCK TABLE streamkpi.listens IN SHARE UPDATE EXCLUSIVE MODE;
				LOCK TABLE streamkpi.listens_default IN ACCESS EXCLUSIVE MODE;
				locked := true;
			END IF;
			-- Re-check under the lock (taking it processed invalidations).
			IF to_regclass('streamkpi.listens_p' || to_char(d, 'YYYYMMDD')) IS NULL THEN
				PERFORM streamkpi._create_listens_partition(d);
				created := created + 1;
			END IF;
		END IF;
		d := d + 1;
	END LOOP;
	RETURN created;
END
$fn$;

COMMENT ON FUNCTION streamkpi.ensure_listens_partitions(timestamptz, timestamptz) IS
	'create the missing UTC-day partitions of streamkpi.listens for a time range';

-- Maintenance: move every row of the default partition into its day
-- partition, creating the partitions.  Returns the number of rows moved.
CREATE FUNCTION streamkpi.drain_listens_default()
	RETURNS bigint
	LANGUAGE plpgsql
	SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	d		date;
	moved	bigint := 0;
BEGIN
	LOCK TABLE streamkpi.listens IN SHARE UPDATE EXCLUSIVE MODE;
	LOCK TABLE streamkpi.listens_default IN ACCESS EXCLUSIVE MODE;
	FOR d IN SELECT DISTINCT (listened_at AT TIME ZONE 'UTC')::date
			   FROM streamkpi.listens_default ORDER BY 1
	LOOP
		-- A day in the default partition never has a partition yet: creating
		-- one always empties the default of that day first.
		moved := moved + streamkpi._create_listens_partition(d);
	END LOOP;
	RETURN moved;
END
$fn$;

COMMENT ON FUNCTION streamkpi.drain_listens_default() IS
	'move rows out of streamkpi.listens_default into day partitions; returns rows moved';

-- Partitions as data arrives, without anyone calling the two functions
-- above: the KPI worker calls this every few seconds.  It keeps the UTC days
-- from yesterday to tomorrow created ahead of the data, and gives the rows
-- that landed in the default partition (events of other days) day partitions
-- of their own.  When there is nothing to do it costs three catalog lookups
-- and one probe of an empty table, and takes no lock that blocks inserts.
CREATE FUNCTION streamkpi.maintain_listens_partitions()
	RETURNS bigint
	LANGUAGE plpgsql
	SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS $fn$
BEGIN
	PERFORM streamkpi.ensure_listens_partitions(now() - interval '1 day',
												now() + interval '1 day');
	IF EXISTS (SELECT FROM streamkpi.listens_default) THEN
		RETURN streamkpi.drain_listens_default();
	END IF;
	RETURN 0;
END
$fn$;

COMMENT ON FUNCTION streamkpi.maintain_listens_partitions() IS
	'create the day partitions around today and drain streamkpi.listens_default; returns rows moved';

REVOKE ALL ON FUNCTION streamkpi.ensure_listens_partitions(timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi.drain_listens_default() FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi.maintain_listens_partitions() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION streamkpi.ensure_listens_partitions(timestamptz, timestamptz)
	TO streamkpi_admin;
GRANT EXECUTE ON FUNCTION streamkpi.drain_listens_default(),
	streamkpi.maintain_listens_partitions() TO streamkpi_admin;

-- Pipelines run as their owner, typically streamkpi_admin: they write events
-- and dimensions.  streamkpi_reader sees none of this (docs/contract.md §6).
GRANT SELECT, INSERT, UPDATE, DELETE ON streamkpi.listens, streamkpi.tracks,
	streamkpi.users TO streamkpi_admin;

-- pg_dump keeps user data.  Day partitions are created at run time, so they
-- are not extension members and pg_dump dumps them (definition and data) like
-- any table; the default partition is a member and is marked here.
SELECT pg_catalog.pg_extension_config_dump('streamkpi.tracks', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.users', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.listens', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.listens_default', '');
