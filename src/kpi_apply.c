/*-------------------------------------------------------------------------
 *
 * kpi_apply.c
 *	  The two ways events enter the KPI engine, both SQL-callable:
 *
 *	  streamkpi.kpi_apply_new()  a round: the listens committed since the
 *	      snapshot stored in streamkpi.kpi_state, exactly once (see
 *	      src/sql/0.1/60_kpi_incremental.sql for the argument).
 *	  streamkpi._kpi_refresh_apply(...)  the events of a refresh_kpis()
 *	      range (50_kpi.sql deletes the range's rows first).
 *
 *	  Both stream a query over streamkpi.listens through the same
 *	  accumulation (kpi_accumulate.c, which completes each event with its
 *	  track and user, kpi_dims.c) and merge and derive with the same
 *	  code (kpi_merge.c, kpi_window.c): one definition of every KPI.  The
 *	  events are fetched in chunks; when the deltas outgrow
 *	  KPI_FLUSH_BYTES they are merged before the next chunk, so that a
 *	  catch-up of millions of events needs no more memory than a round of
 *	  a few hundred thousand.  All of it is one transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "tcop/pquery.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "kpi.h"

/* rows per fetch, and the delta size that makes a flush */
#define KPI_FETCH_ROWS		20000
#define KPI_FLUSH_BYTES		(64 * 1024 * 1024)

/* Merge the deltas into the state and derive; they are empty afterwards. */
static void
kpi_flush(KpiDelta *d)
{
	TimestampTz t0 = GetCurrentTimestamp();
	TimestampTz t1;
	int			nestlevel;
	Size		bytes;

	if (kpi_delta_empty(d))
		return;
	/* a level of its own: whatever the merge allocates goes with it */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/*
	 * The statements join key arrays with the tables; the planner cannot
	 * know how many keys there are and may read whole tables to hash them.
	 * Lookups per key are what these joins want, as bitmap index scans:
	 * fewer instructions per key than plain index scans (measured,
	 * docs/benchmarks.md).  The statements' generic plans keep this.
	 */
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("enable_hashjoin", "off", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_mergejoin", "off", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_indexscan", "off", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	kpi_merge_days(d);
	t1 = GetCurrentTimestamp();
	kpi_merge_windows(d);
	AtEOXact_GUC(true, nestlevel);
	SPI_finish();
	bytes = kpi_delta_memory(d);
	elog(DEBUG1, "KPI flush: %zu bytes of deltas, days %.1f ms, windows %.1f ms",
		 bytes, (t1 - t0) / 1000.0, (GetCurrentTimestamp() - t1) / 1000.0);
	kpi_delta_reset(d);
	/* a full delta (a catch-up) freed tens of MB: give them back now */
	if (bytes > KPI_FLUSH_BYTES)
		kpi_worker_release_memory();
}

/* The window sizes of streamkpi.trending_windows. */
static void
kpi_load_sizes(KpiDelta *d)
{
	if (SPI_execute("SELECT window_size, top_n FROM streamkpi.trending_windows"
					" ORDER BY window_size", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read streamkpi.trending_windows");
	d->nsizes = (int) SPI_processed;
	d->sizes = palloc0((d->nsizes + 1) * sizeof(KpiWindowSize));
	for (int i = 0; i < d->nsizes; i++)
	{
		bool		isnull;
		Interval   *iv = DatumGetIntervalP(SPI_getbinval(SPI_tuptable->vals[i],
														 SPI_tuptable->tupdesc, 1, &isnull));

		d->sizes[i].size = *iv;
		/* the table's CHECK rules out months */
		d->sizes[i].usecs = iv->day * USECS_PER_DAY + iv->time;
		d->sizes[i].top_n = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
														SPI_tuptable->tupdesc, 2, &isnull));
	}
}

/*
 * The ranges refresh_kpis() counted since the last round.  Not read-only:
 * a snapshot of its own, taken after _kpi_round_begin() got the KPI lock.
 * The snapshot of the statement that runs the round is older; a refresh
 * that committed while the round waited for the lock is not in it, and its
 * events would be counted twice.
 */
static void
kpi_load_refreshed(KpiDelta *d)
{
	if (SPI_execute("SELECT from_day, to_day, lo, hi, snapshot::text"
					" FROM streamkpi.kpi_refreshed", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read streamkpi.kpi_refreshed");
	d->nrefreshed = (int) SPI_processed;
	d->refreshed = palloc0((d->nrefreshed + 1) * sizeof(KpiRefreshed));
	for (int i = 0; i < d->nrefreshed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		KpiRefreshed *r = &d->refreshed[i];
		bool		isnull;

		r->from_day = DatumGetDateADT(SPI_getbinval(t, td, 1, &isnull));
		r->to_day = DatumGetDateADT(SPI_getbinval(t, td, 2, &isnull));
		r->lo = DatumGetTimestampTz(SPI_getbinval(t, td, 3, &isnull));
		r->hi = DatumGetTimestampTz(SPI_getbinval(t, td, 4, &isnull));
		kpi_snapshot_parse(SPI_getvalue(t, td, 5), &r->snapshot);
	}
}

/*
 * Stream the rows of sql through the accumulation, flushing whenever the
 * deltas grow large, and flush at the end.  The plan is made for the
 * values given (streamkpi._kpi_in_round() turns them into an index
 * condition and an estimate, kpi_round_filter.c), even where plan_cache_mode
 * asks for generic plans.  Tracks and users are open meanwhile, and their
 * cache is checked around the snapshot the cursor takes (kpi_dims_cache.c);
 * a round keeps it for the next round.
 */
static void
kpi_scan(KpiDelta *d, const char *sql, int nargs, Oid *types, Datum *values)
{
	int			nestlevel = NewGUCNestLevel();
	Portal		portal;
	DestReceiver *dest = kpi_delta_receiver(d);
	KpiDims		dims;

	(void) set_config_option("plan_cache_mode", "force_custom_plan", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);

	/*
	 * A round's events lie together at the end of their partitions: a
	 * bitmap scan reads each of their pages once, where an index scan
	 * visits a page per event (4% of a round of 60,000 in instructions).
	 */
	if (!d->refresh)
		(void) set_config_option("enable_indexscan", "off", PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	kpi_dims_open(&dims);
	d->dims = &dims;
	d->dims_cache = kpi_dims_cache_begin(&dims);
	/* not read-only: in READ COMMITTED, a snapshot of its own */
	portal = SPI_cursor_open_with_args(NULL, sql, nargs, types, values, NULL,
									   false, 0);
	kpi_dims_cache_check(d->dims_cache, &dims);
	AtEOXact_GUC(true, nestlevel);
	for (;;)
	{
		TimestampTz t0 = GetCurrentTimestamp();
		uint64		fetched = PortalRunFetch(portal, FETCH_FORWARD,
											 KPI_FETCH_ROWS, dest);

		elog(DEBUG2, "KPI fetch: " UINT64_FORMAT " events in %.1f ms",
			 fetched, (GetCurrentTimestamp() - t0) / 1000.0);
		CHECK_FOR_INTERRUPTS();
		if (fetched < KPI_FETCH_ROWS)
			break;
		if (kpi_delta_memory(d) > KPI_FLUSH_BYTES)
			kpi_flush(d);
	}
	SPI_cursor_close(portal);
	kpi_dims_cache_end(d->dims_cache, !d->refresh);
	d->dims_cache = NULL;
	d->dims = NULL;
	kpi_dims_close(&dims);
	kpi_flush(d);
}

/* ---- a round ---- */

typedef struct KpiRound
{
	Datum		s_old;			/* pg_snapshot */
	Datum		s_new;
	Datum		horizon;		/* interval */
	bool		refreshed;
} KpiRound;

/* checks, the KPI lock and the snapshots: streamkpi._kpi_round_begin() */
static void
kpi_round_begin(KpiRound *r)
{
	HeapTuple	t;
	TupleDesc	td;
	bool		isnull;

	if (SPI_execute("SELECT s_old, s_new, horizon, refreshed"
					" FROM streamkpi._kpi_round_begin()", false, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "streamkpi._kpi_round_begin() failed");
	t = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	r->s_old = datumCopy(SPI_getbinval(t, td, 1, &isnull), false, -1);
	r->s_new = datumCopy(SPI_getbinval(t, td, 2, &isnull), false, -1);
	r->horizon = datumCopy(SPI_getbinval(t, td, 3, &isnull), false, sizeof(Interval));
	r->refreshed = DatumGetBool(SPI_getbinval(t, td, 4, &isnull));
}

/*
 * kpi_round_count() (kpi_round_filter.c) with SQL, visiting the heap: for
 * a partition without a btree on ingest_xid.
 */
static int64
kpi_round_count_sql(KpiRound *r)
{
	Oid			types[2] = {PG_SNAPSHOTOID, PG_SNAPSHOTOID};
	Datum		values[2] = {r->s_old, r->s_new};
	bool		isnull;
	int64		count;

	if (SPI_execute_with_args(
							  "WITH b AS (SELECT GREATEST(1000, pg_catalog.max(c.reltuples)::bigint) AS n"
							  "  FROM pg_catalog.pg_class c"
							  " WHERE c.oid IN ('streamkpi.users'::pg_catalog.regclass,"
							  "                 'streamkpi.tracks'::pg_catalog.regclass))"
							  " SELECT (SELECT pg_catalog.count(*) FROM (SELECT FROM streamkpi.listens l"
							  "   WHERE l.ingest_xid >= pg_catalog.pg_snapshot_xmin($1)"
							  "     AND l.ingest_xid < pg_catalog.pg_snapshot_xmax($2)"
							  "   LIMIT (SELECT 2 * n FROM b)) c)",
							  2, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not count the new events");
	count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 1, &isnull));
	return count;
}

/* Too late events: out of listens into dead letters; returns how many. */
static int64
kpi_move_late(KpiRound *r)
{
	Oid			types[3] = {PG_SNAPSHOTOID, PG_SNAPSHOTOID, INTERVALOID};
	Datum		values[3] = {r->s_old, r->s_new, r->horizon};

	if (SPI_execute_with_args(
							  "WITH late AS ("
							  " DELETE FROM streamkpi.listens l"
							  "  WHERE l.ingest_xid >= pg_catalog.pg_snapshot_xmin($1)"
							  "    AND l.ingest_xid < pg_catalog.pg_snapshot_xmax($2)"
							  "    AND pg_catalog.pg_visible_in_snapshot(l.ingest_xid, $2)"
							  "    AND NOT pg_catalog.pg_visible_in_snapshot(l.ingest_xid, $1)"
							  "    AND l.listened_at < l.ingested_at - $3"
							  " RETURNING l.*)"
							  " INSERT INTO streamkpi.dead_letters"
							  " (pipeline, topic, partition, \"offset\", key, payload, error, sqlstate)"
							  " SELECT 'kpi', NULL, NULL, NULL, pg_catalog.convert_to(late.event_id, 'UTF8'),"
							  " pg_catalog.convert_to(pg_catalog.row_to_json(late.*)::text, 'UTF8'),"
							  " pg_catalog.format('late event: listened at %s, ingested at %s, later than"
							  " streamkpi.late_horizon (%s); not counted',"
							  " late.listened_at, late.ingested_at, $3),"
							  " NULL FROM late",
							  3, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not move late events to streamkpi.dead_letters");
	return (int64) SPI_processed;
}

/* Done up to s_new: store it, with the counters. */
static void
kpi_round_end(KpiRound *r, int64 events, int64 late)
{
	Oid			types[3] = {PG_SNAPSHOTOID, INT8OID, INT8OID};
	Datum		values[3] = {r->s_new, Int64GetDatum(events), Int64GetDatum(late)};

	if (SPI_execute_with_args("UPDATE streamkpi.kpi_state"
							  " SET snapshot = $1, applied_at = pg_catalog.now(),"
							  " rounds = rounds + 1, events = events + $2,"
							  " late_events = late_events + $3",
							  3, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update streamkpi.kpi_state");
	if (r->refreshed &&
		SPI_execute("DELETE FROM streamkpi.kpi_refreshed", false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not empty streamkpi.kpi_refreshed");
}

PG_FUNCTION_INFO_V1(streamkpi_kpi_apply_new);

/*
 * streamkpi.kpi_apply_new() -> bigint: apply the listens committed since
 * the last round; returns how many it counted (too late ones not).
 */
Datum
streamkpi_kpi_apply_new(PG_FUNCTION_ARGS)
{
	KpiRound	r;
	KpiDelta   *d;
	int64		late = 0;
	int64		events;
	Oid			types[3] = {PG_SNAPSHOTOID, PG_SNAPSHOTOID, INT8OID};
	Datum		values[3];

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	kpi_round_begin(&r);
	d = kpi_delta_create(CurrentMemoryContext, DatumGetIntervalP(r.horizon));
	d->hll = kpi_hll_schema();
	kpi_load_sizes(d);
	if (r.refreshed)
		kpi_load_refreshed(d);
	values[0] = r.s_old;
	values[1] = r.s_new;
	d->expected_events = kpi_round_count(r.s_old, r.s_new);
	if (d->expected_events < 0)
		d->expected_events = kpi_round_count_sql(&r);
	values[2] = Int64GetDatum(d->expected_events);
	kpi_scan(d,
			 "SELECT " KPI_EVENT_COLUMNS
			 "  FROM streamkpi.listens l"
			 " WHERE streamkpi._kpi_in_round(l.ingest_xid, $1, $2, $3)",
			 3, types, values);
	if (d->late > 0)
		late = kpi_move_late(&r);
	events = d->events;
	/* nothing new: no write, no transaction id; the next round starts here */
	if (events > 0 || late > 0 || r.refreshed)
		kpi_round_end(&r, events, late);
	SPI_finish();
	PG_RETURN_INT64(events);
}

PG_FUNCTION_INFO_V1(streamkpi_kpi_refresh_apply);

/*
 * streamkpi._kpi_refresh_apply(p_from date, p_to date, p_lo timestamptz,
 * p_hi timestamptz, p_snapshot pg_snapshot, p_horizon interval): count the
 * events of the local days p_from..p_to ([p_lo, p_hi)) and of the windows
 * starting in [p_lo, p_hi) that p_snapshot sees and that are not too late.
 * The caller emptied the range and holds the KPI lock.
 */
Datum
streamkpi_kpi_refresh_apply(PG_FUNCTION_ARGS)
{
	KpiDelta   *d;
	int64		max_window = 0;
	Oid			types[3] = {TIMESTAMPTZOID, TIMESTAMPTZOID, PG_SNAPSHOTOID};
	Datum		values[3];

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	d = kpi_delta_create(CurrentMemoryContext, PG_GETARG_INTERVAL_P(5));
	d->hll = kpi_hll_schema();
	kpi_load_sizes(d);
	d->refresh = true;
	d->expected_events = PG_INT64_MAX;	/* a range is days of events */
	d->from_day = PG_GETARG_DATEADT(0);
	d->to_day = PG_GETARG_DATEADT(1);
	d->lo = PG_GETARG_TIMESTAMPTZ(2);
	d->hi = PG_GETARG_TIMESTAMPTZ(3);
	for (int k = 0; k < d->nsizes; k++)
		max_window = Max(max_window, d->sizes[k].usecs);
	/* windows starting before hi may hold events up to hi + the largest size */
	values[0] = TimestampTzGetDatum(d->lo);
	values[1] = TimestampTzGetDatum(d->hi + max_window);
	values[2] = PG_GETARG_DATUM(4);
	/* too late events are not counted: the accumulation skips them */
	kpi_scan(d,
			 "SELECT " KPI_EVENT_COLUMNS
			 "  FROM streamkpi.listens l"
			 " WHERE l.listened_at >= $1 AND l.listened_at < $2"
			 "   AND pg_catalog.pg_visible_in_snapshot(l.ingest_xid, $3)",
			 3, types, values);
	SPI_finish();
	PG_RETURN_VOID();
}
