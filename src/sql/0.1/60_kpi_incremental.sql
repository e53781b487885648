-- streamkpi 0.1: incremental KPI maintenance, what the KPI worker runs
-- (src/kpi_worker.c calls streamkpi.kpi_apply_new() every
-- streamkpi.kpi_naptime).
--
-- Exactly once.  Every listen carries ingest_xid, the id of the transaction
-- that inserted it.  streamkpi.kpi_state holds the snapshot
-- (pg_current_snapshot()) up to which events have been applied.  A round,
-- in ONE transaction under the KPI lock:
--   1. takes a new snapshot S_new;
--   2. the new events are those whose ingest_xid is visible in S_new and
--      not in the stored S_old (found through the per-partition ingest_xid
--      index from S_old's xmin to S_new's xmax);
--   3. moves the too late ones to dead letters, adds the others to the
--      state tables (counts add, hll sketches union), re-derives the KPI
--      rows of the days and windows they touched;
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

-- Apply the events committed since the last round.  Returns how many events
-- it counted (late ones excluded).
CREATE FUNCTION streamkpi.kpi_apply_new()
	RETURNS bigint
	LANGUAGE plpgsql
	SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	SET DateStyle = 'ISO, YMD'		-- dead-letter reasons read the same everywhere
	SET IntervalStyle = 'postgres'
	SET work_mem = '64MB'			-- the hash aggregates of step 2
	SET jit = off					-- compiling costs more than a round runs
	AS $fn$
DECLARE
	tz		text := streamkpi.kpi_timezone();
	horizon	interval := streamkpi.late_horizon();
	s_old	pg_snapshot;
	s_new	pg_snapshot;
	n_late	bigint;
	n_events bigint;
	refreshed boolean;
	-- touched keys, as parallel arrays
	dg_day	date[];			-- (day, genre)
	dg_genre text[];
	td		date[];			-- days
	en_day	date[];			-- (day, dimension, value)
	en_dim	text[];
	en_val	text[];
	wr_size	interval[];		-- (window_size, window_start, region)
	wr_start timestamptz[];
	wr_region text[];
	wt_size	interval[];		-- (window_size, window_start, track_id)
	wt_start timestamptz[];
	wt_track text[];
	ws_lo	timestamptz;	-- range of the touched window starts
	ws_hi	timestamptz;
	-- step 2 plans with these off; step 3 gets the caller's settings back
	hash_join_min bigint;
	nestloop_was text := current_setting('enable_nestloop');
	sort_was text := current_setting('enable_sort');
	incsort_was text := current_setting('enable_incremental_sort');
BEGIN
	BEGIN
		PERFORM now() AT TIME ZONE tz;
	EXCEPTION WHEN invalid_parameter_value OR feature_not_supported THEN
		RAISE EXCEPTION 'invalid streamkpi.kpi_timezone "%"', tz
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Set it to a time zone name from pg_timezone_names.';
	END;

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
	SELECT pg_current_snapshot() INTO s_new;
	IF pg_snapshot_xmax(s_new) < pg_snapshot_xmax(s_old)
	   OR pg_snapshot_xmin(s_new) < pg_snapshot_xmin(s_old) THEN
		RAISE EXCEPTION 'the snapshot of this transaction is older than the last applied one'
			USING ERRCODE = 'serialization_failure',
				  HINT = 'Call streamkpi.kpi_apply_new() in a READ COMMITTED transaction.';
	END IF;
	refreshed := EXISTS (SELECT FROM streamkpi.kpi_refreshed);

	-- 1. Too late: out of listens into dead letters.  refresh_kpis() skips
	-- them by the same test, so whether a refresh ran first does not matter.
	WITH late AS (
		DELETE FROM streamkpi.listens l
		 WHERE l.ingest_xid >= pg_snapshot_xmin(s_old)
		   AND l.ingest_xid < pg_snapshot_xmax(s_new)
		   AND pg_visible_in_snapshot(l.ingest_xid, s_new)
		   AND NOT pg_visible_in_snapshot(l.ingest_xid, s_old)
		   AND l.listened_at < l.ingested_at - horizon
		RETURNING l.*)
	INSERT INTO streamkpi.dead_letters
		(pipeline, topic, partition, "offset", key, payload, error, sqlstate)
	SELECT 'kpi', NULL, NULL, NULL, convert_to(late.event_id, 'UTF8'),
		   convert_to(row_to_json(late.*)::text, 'UTF8'),
		   format('late event: listened at %s, ingested at %s, later than streamkpi.late_horizon (%s); not counted',
				  late.listened_at, late.ingested_at, horizon),
		   NULL
	  FROM late;
	GET DIAGNOSTICS n_late = ROW_COUNT;

	-- 2. Add the new events into the state tables, in one statement (one
	-- scan of the new events); collect the keys they touched.
	-- The planner sees a few dozen new rows however many there are (it
	-- cannot estimate the snapshot tests), so it sorts every aggregate's
	-- input and looks users and tracks up one event at a time.  Hash
	-- aggregates (streamkpi.hll_agg keeps a small state per group, so tens
	-- of thousands of window groups fit in work_mem; more spill) are faster
	-- for rounds of any size.  Hash joins read all of users and tracks, so
	-- they pay off only for a round with more events than about an eighth
	-- of the larger table: count the candidates up to that bound.
	SELECT greatest(1000, max(c.reltuples)::bigint / 8) INTO hash_join_min
	  FROM pg_class c
	 WHERE c.oid IN ('streamkpi.users'::regclass, 'streamkpi.tracks'::regclass);
	IF (SELECT count(*)
		  FROM (SELECT FROM streamkpi.listens l
				 WHERE l.ingest_xid >= pg_snapshot_xmin(s_old)
				   AND l.ingest_xid < pg_snapshot_xmax(s_new)
				 LIMIT hash_join_min) c) >= hash_join_min THEN
		PERFORM set_config('enable_nestloop', 'off', true);
	END IF;
	PERFORM set_config('enable_sort', 'off', true),
			set_config('enable_incremental_sort', 'off', true);
	WITH arrived AS MATERIALIZED (
		-- only what the statements below read: every column is copied
		SELECT e.listened_at, e.ingest_xid, e.day, e.hour, e.user_id,
			   e.track_id, e.action, e.region, e.device, e.genre, e.listen_ms,
			   e.completed, e.subscription, e.country, e.age_group
		  FROM streamkpi.kpi_events e
		 WHERE e.ingest_xid >= pg_snapshot_xmin(s_old)
		   AND e.ingest_xid < pg_snapshot_xmax(s_new)
		   AND pg_visible_in_snapshot(e.ingest_xid, s_new)
		   AND NOT pg_visible_in_snapshot(e.ingest_xid, s_old)
		   -- step 1 moved the late ones; one that a concurrent move out of
		   -- listens_default hid from it is still not counted
		   AND e.listened_at >= e.ingested_at - horizon),
	day_new AS MATERIALIZED (
		SELECT n.*
		  FROM arrived n
		 WHERE NOT (refreshed AND EXISTS (
				SELECT FROM streamkpi.kpi_refreshed r
				 WHERE n.day BETWEEN r.from_day AND r.to_day
				   AND pg_visible_in_snapshot(n.ingest_xid, r.snapshot)))),
	counts AS (
		INSERT INTO streamkpi.daily_genre_track_counts AS s
			(day, genre, track_id, listens, listen_ms)
		SELECT day, genre, track_id, count(*), sum(listen_ms)
		  FROM day_new
		 WHERE action = 'play'
		 GROUP BY day, genre, track_id
		ON CONFLICT (day, genre, track_id) DO UPDATE
		   SET listens = s.listens + excluded.listens,
			   listen_ms = s.listen_ms + excluded.listen_ms
		RETURNING s.day, s.genre),
	users AS (
		INSERT INTO streamkpi.daily_genre_users AS s (day, genre, users)
		SELECT day, genre, streamkpi.hll_agg(user_id, 14)
		  FROM day_new
		 WHERE action = 'play'
		 GROUP BY day, genre
		ON CONFLICT (day, genre) DO UPDATE
		   SET users = hll_union(s.users, excluded.users)
		RETURNING s.day),
	eng AS (
		-- one pass: a hash table per dimension (GROUPING SETS), not seven
		-- copies of every event sorted together
		INSERT INTO streamkpi.daily_engagement_state AS s
			(day, dimension, value, plays, skips, likes, completed_plays, listen_ms, users)
		SELECT e.day,
			   CASE WHEN GROUPING(e.genre) = 0 THEN 'genre'
					WHEN GROUPING(e.subscription) = 0 THEN 'subscription'
					WHEN GROUPING(e.age_group) = 0 THEN 'age_group'
					WHEN GROUPING(e.hour) = 0 THEN 'hour'
					WHEN GROUPING(e.country) = 0 THEN 'country'
					WHEN GROUPING(e.device) = 0 THEN 'device'
					ELSE 'region' END,
			   -- the view never gives NULL: only the grouped column is set
			   COALESCE(e.genre, e.subscription, e.age_group, e.hour,
						e.country, e.device, e.region),
			   count(*) FILTER (WHERE e.action = 'play'),
			   count(*) FILTER (WHERE e.action = 'skip'),
			   count(*) FILTER (WHERE e.action = 'like'),
			   count(*) FILTER (WHERE e.action = 'play' AND e.completed),
			   coalesce(sum(e.listen_ms) FILTER (WHERE e.action = 'play'), 0),
			   streamkpi.hll_agg(e.user_id, 14)
		  FROM day_new e
		 GROUP BY GROUPING SETS ((e.day, e.genre), (e.day, e.subscription),
								 (e.day, e.age_group), (e.day, e.hour),
								 (e.day, e.country), (e.day, e.device),
								 (e.day, e.region))
		ON CONFLICT (day, dimension, value) DO UPDATE
		   SET plays = s.plays + excluded.plays,
			   skips = s.skips + excluded.skips,
			   likes = s.likes + excluded.likes,
			   completed_plays = s.completed_plays + excluded.completed_plays,
			   listen_ms = s.listen_ms + excluded.listen_ms,
			   users = hll_union(s.users, excluded.users)
		RETURNING s.day, s.dimension, s.value),
	win AS (
		INSERT INTO streamkpi.window_track_state AS s
			(window_size, window_start, region, track_id, plays, skips, likes,
			 listen_ms, users)
		SELECT window_size, window_start, region, track_id,
			   count(*) FILTER (WHERE action = 'play'),
			   count(*) FILTER (WHERE action = 'skip'),
			   count(*) FILTER (WHERE action = 'like'),
			   coalesce(sum(listen_ms) FILTER (WHERE action = 'play'), 0),
			   streamkpi.hll_agg(user_id, 14) FILTER (WHERE action = 'play')
		  FROM (SELECT w.window_size,
					   date_bin(w.window_size, n.listened_at,
								timestamptz '2000-01-01 00:00:00+00') AS window_start,
					   n.region, n.track_id, n.action, n.listen_ms, n.user_id,
					   n.ingest_xid
				  FROM arrived n
				 CROSS JOIN streamkpi.trending_windows w) b
		 WHERE NOT (refreshed AND EXISTS (
				SELECT FROM streamkpi.kpi_refreshed r
				 WHERE b.window_start >= r.lo AND b.window_start < r.hi
				   AND pg_visible_in_snapshot(b.ingest_xid, r.snapshot)))
		 GROUP BY window_size, window_start, region, track_id
		ON CONFLICT (window_size, window_start, region, track_id) DO UPDATE
		   SET plays = s.plays + excluded.plays,
			   skips = s.skips + excluded.skips,
			   likes = s.likes + excluded.likes,
			   listen_ms = s.listen_ms + excluded.listen_ms,
			   users = CASE WHEN s.users IS NULL THEN excluded.users
							WHEN excluded.users IS NULL THEN s.users
							ELSE hll_union(s.users, excluded.users) END
		RETURNING s.window_size, s.window_start, s.region, s.track_id)
	-- Each key set is read once: the arrays of one aggregate query line up.
	-- Window keys in index order, so that step 3 walks the indexes in order.
	SELECT n.n, dg.day, dg.genre, dg.days, en.day, en.dimension, en.value,
		   wr.size, wr.start, wr.region, wt.size, wt.start, wt.track
	  FROM (SELECT count(*) AS n FROM arrived) n,
		   (SELECT array_agg(day) AS day, array_agg(genre) AS genre,
				   array_agg(DISTINCT day) AS days
			  FROM (SELECT DISTINCT day, genre FROM counts) k) dg,
		   (SELECT array_agg(day) AS day, array_agg(dimension) AS dimension,
				   array_agg(value) AS value
			  FROM eng) en,
		   (SELECT array_agg(window_size) AS size, array_agg(window_start) AS start,
				   array_agg(region) AS region
			  FROM (SELECT DISTINCT window_size, window_start, region FROM win
					 ORDER BY 1, 2, 3) k) wr,
		   (SELECT array_agg(window_size) AS size, array_agg(window_start) AS start,
				   array_agg(track_id) AS track
			  FROM (SELECT DISTINCT window_size, window_start, track_id FROM win
					 ORDER BY 1, 2, 3) k) wt
	  INTO n_events, dg_day, dg_genre, td, en_day, en_dim, en_val,
		   wr_size, wr_start, wr_region, wt_size, wt_start, wt_track;
	PERFORM set_config('enable_nestloop', nestloop_was, true),
			set_config('enable_sort', sort_was, true),
			set_config('enable_incremental_sort', incsort_was, true);

	-- 3. Re-derive the KPI rows of the touched keys, with the formulas of
	-- derive_daily_kpis() and derive_window_kpis() (the regression test
	-- kpi_incremental compares the two paths table by table).
	IF dg_day IS NOT NULL THEN
		DELETE FROM streamkpi.daily_genre_track_topn s
		 USING unnest(dg_day, dg_genre) t(day, genre)
		 WHERE s.day = t.day AND s.genre = t.genre AND s.day = ANY (td);
		INSERT INTO streamkpi.daily_genre_track_topn (day, genre, tracks)
		SELECT c.day, c.genre, streamkpi.topn_agg(c.track_id, 1000, c.listens)
		  FROM streamkpi.daily_genre_track_counts c
		  JOIN unnest(dg_day, dg_genre) t(day, genre)
			ON c.day = t.day AND c.genre = t.genre
		 WHERE c.day = ANY (td)
		 GROUP BY c.day, c.genre;

		DELETE FROM streamkpi.daily_genre_kpis s
		 USING unnest(dg_day, dg_genre) t(day, genre)
		 WHERE s.day = t.day AND s.genre = t.genre AND s.day = ANY (td);
		INSERT INTO streamkpi.daily_genre_kpis
			(day, genre, listen_count, unique_listeners, total_listen_ms,
			 avg_listen_ms_per_user, updated_at)
		SELECT c.day, c.genre, c.listens, u.n, c.ms,
			   round(c.ms::numeric / nullif(u.n, 0), 3), now()
		  FROM (SELECT c.day, c.genre, sum(c.listens)::bigint AS listens,
					   sum(c.listen_ms)::bigint AS ms
				  FROM streamkpi.daily_genre_track_counts c
				  JOIN unnest(dg_day, dg_genre) t(day, genre)
					ON c.day = t.day AND c.genre = t.genre
				 WHERE c.day = ANY (td)
				 GROUP BY c.day, c.genre) c
		  JOIN (SELECT g.day, g.genre, round(hll_cardinality(g.users))::bigint AS n
				  FROM streamkpi.daily_genre_users g
				  JOIN unnest(dg_day, dg_genre) t(day, genre)
					ON g.day = t.day AND g.genre = t.genre
				 WHERE g.day = ANY (td)) u
			ON u.day = c.day AND u.genre = c.genre;

		DELETE FROM streamkpi.daily_genre_top_tracks s
		 USING unnest(dg_day, dg_genre) t(day, genre)
		 WHERE s.day = t.day AND s.genre = t.genre AND s.day = ANY (td);
		INSERT INTO streamkpi.daily_genre_top_tracks
			(day, genre, rank, track_id, track_name, listen_count)
		SELECT r.day, r.genre, r.rank, r.track_id, tr.track_name, r.listens
		  FROM (SELECT c.day, c.genre, c.track_id, c.listens,
					   row_number() OVER (PARTITION BY c.day, c.genre
										  ORDER BY c.listens DESC, c.track_id COLLATE "C") AS rank
				  FROM streamkpi.daily_genre_track_counts c
				  JOIN unnest(dg_day, dg_genre) t(day, genre)
					ON c.day = t.day AND c.genre = t.genre
				 WHERE c.day = ANY (td)) r
		  LEFT JOIN streamkpi.tracks tr ON tr.track_id = r.track_id
		 WHERE r.rank <= 3;

		DELETE FROM streamkpi.daily_top_genres WHERE day = ANY (td);
		INSERT INTO streamkpi.daily_top_genres (day, rank, genre, listen_count)
		SELECT day, rank, genre, listen_count
		  FROM (SELECT day, genre, listen_count,
					   row_number() OVER (PARTITION BY day
										  ORDER BY listen_count DESC, genre COLLATE "C") AS rank
				  FROM streamkpi.daily_genre_kpis
				 WHERE day = ANY (td)) r
		 WHERE rank <= 5;
	END IF;

	IF en_day IS NOT NULL THEN
		DELETE FROM streamkpi.daily_engagement s
		 USING unnest(en_day, en_dim, en_val) t(day, dimension, value)
		 WHERE s.day = t.day AND s.dimension = t.dimension AND s.value = t.value
		   AND s.day = ANY (en_day);
		INSERT INTO streamkpi.daily_engagement
			(day, dimension, value, streams, skips, likes, unique_users,
			 skip_rate, like_rate, completion_rate, avg_listen_ms)
		SELECT s.day, s.dimension, s.value, s.plays, s.skips, s.likes,
			   round(hll_cardinality(s.users))::bigint,
			   round(s.skips::numeric / nullif(s.plays + s.skips, 0), 6),
			   round(s.likes::numeric / nullif(s.plays, 0), 6),
			   round(s.completed_plays::numeric / nullif(s.plays, 0), 6),
			   round(s.listen_ms::numeric / nullif(s.plays, 0), 3)
		  FROM streamkpi.daily_engagement_state s
		  JOIN unnest(en_day, en_dim, en_val) t(day, dimension, value)
			ON s.day = t.day AND s.dimension = t.dimension AND s.value = t.value
		 WHERE s.day = ANY (en_day);
	END IF;

	IF wr_size IS NOT NULL THEN
		-- The range of touched window starts lets the deletes use the
		-- window_start indexes; the inserts look every key up through the
		-- primary key of window_track_state (a join of the key arrays with
		-- the state table can get a plan that is quadratic in window size).
		SELECT min(x), max(x) INTO ws_lo, ws_hi FROM unnest(wr_start) x;

		DELETE FROM streamkpi.trending s
		 USING unnest(wr_size, wr_start, wr_region) t(window_size, window_start, region)
		 WHERE s.window_size = t.window_size AND s.window_start = t.window_start
		   AND s.region = t.region
		   AND s.window_start BETWEEN ws_lo AND ws_hi;
		INSERT INTO streamkpi.trending
			(window_size, window_start, region, rank, window_end, track_id,
			 plays, skips, likes)
		SELECT t.window_size, t.window_start, t.region, r.rank,
			   t.window_start + t.window_size, r.track_id, r.plays, r.skips, r.likes
		  FROM unnest(wr_size, wr_start, wr_region) t(window_size, window_start, region)
		  LEFT JOIN streamkpi.trending_windows w ON w.window_size = t.window_size
		 CROSS JOIN LATERAL
			   (SELECT s.track_id, s.plays, s.skips, s.likes,
					   row_number() OVER (ORDER BY s.plays DESC, s.track_id COLLATE "C") AS rank
				  FROM streamkpi.window_track_state s
				 WHERE s.window_size = t.window_size AND s.window_start = t.window_start
				   AND s.region = t.region AND s.plays > 0
				 ORDER BY s.plays DESC, s.track_id COLLATE "C"
				 LIMIT coalesce(w.top_n, 3)) r;

		DELETE FROM streamkpi.track_windows s
		 USING unnest(wt_size, wt_start, wt_track) t(window_size, window_start, track_id)
		 WHERE s.window_size = t.window_size AND s.window_start = t.window_start
		   AND s.track_id = t.track_id
		   AND s.window_start BETWEEN ws_lo AND ws_hi;
		INSERT INTO streamkpi.track_windows
			(window_size, window_start, track_id, window_end, total_listens,
			 unique_users, avg_listen_ms)
		SELECT t.window_size, t.window_start, t.track_id, t.window_start + t.window_size,
			   a.plays, round(hll_cardinality(a.users))::bigint,
			   round(a.listen_ms::numeric / nullif(a.plays, 0), 3)
		  FROM unnest(wt_size, wt_start, wt_track) t(window_size, window_start, track_id)
		 CROSS JOIN LATERAL
			   (SELECT sum(s.plays)::bigint AS plays, hll_union_agg(s.users) AS users,
					   sum(s.listen_ms) AS listen_ms
				  FROM streamkpi.window_track_state s
				 WHERE s.window_size = t.window_size AND s.window_start = t.window_start
				   AND s.track_id = t.track_id) a
		 WHERE a.plays > 0;
	END IF;

	-- 4. Done up to s_new.  Nothing new: leave the state as it is (no write,
	-- no transaction id); the next round starts from the same snapshot.
	IF n_events > 0 OR n_late > 0 OR refreshed THEN
		UPDATE streamkpi.kpi_state
		   SET snapshot = s_new, applied_at = now(), rounds = rounds + 1,
			   events = events + n_events, late_events = late_events + n_late;
		IF refreshed THEN
			DELETE FROM streamkpi.kpi_refreshed;
		END IF;
	END IF;
	RETURN n_events;
END
$fn$;

COMMENT ON FUNCTION streamkpi.kpi_apply_new() IS
	'apply the listens committed since the last call to the KPI tables, exactly once; returns the events counted';

-- hll functions resolve in hll's schema (see 50_kpi.sql).
DO $hll$
DECLARE
	hll_schema text;
BEGIN
	SELECT n.nspname INTO STRICT hll_schema
	  FROM pg_catalog.pg_extension e
	  JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
	 WHERE e.extname = 'hll';
	EXECUTE pg_catalog.format('ALTER FUNCTION streamkpi.kpi_apply_new() SET search_path = pg_catalog, %I, pg_temp',
							  hll_schema);
END
$hll$;

REVOKE ALL ON FUNCTION streamkpi._kpi_require_read_committed(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi._kpi_refresh_begin(date, date, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi.kpi_apply_new() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION streamkpi.kpi_apply_new() TO streamkpi_admin;
GRANT SELECT ON streamkpi.kpi_state TO streamkpi_admin;
