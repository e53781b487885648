/*-------------------------------------------------------------------------
 *
 * kpi_worker.c
 *	  The "streamkpi kpi" background worker.  Every streamkpi.kpi_naptime, or
 *	  sooner when a pipeline's backlog has drained (kpi_worker_wake()), it
 *	  runs one round, one transaction:
 *
 *	    SELECT streamkpi.kpi_apply_new()
 *
 *	  which applies the listens committed since the previous round to the
 *	  KPI state and KPI tables and stores the snapshot it got to, in that
 *	  same transaction (see src/sql/0.1/60_kpi_incremental.sql).  Killed at
 *	  any moment, the worker loses at most an uncommitted round, which the
 *	  next worker repeats from the stored snapshot: exactly once.  Every
 *	  10 s it also keeps the day partitions of streamkpi.listens ready
 *	  (streamkpi.maintain_listens_partitions()).
 *
 *	  The launcher (pipeline_launcher.c) calls kpi_worker_ensure_running()
 *	  once per loop: it starts the worker in streamkpi.database when the
 *	  extension exists there and streamkpi.kpi_worker is on, and starts it
 *	  again after a failed exit with a backoff of 1, 2, 4 ... 60 seconds.
 *	  The worker's pid and backoff live in shared memory so that a restarted
 *	  launcher neither starts a second worker nor forgets the backoff.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "access/xact.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "kpi.h"
#include "streamkpi.h"

#define KPI_APPLY_SQL "SELECT streamkpi.kpi_apply_new()"
#define KPI_PARTITIONS_SQL "SELECT streamkpi.maintain_listens_partitions()"

/* How often the worker looks after the day partitions of listens. */
#define KPI_PARTITIONS_INTERVAL_MS 10000

/* The shortest time from a round's start to the next one's. */
#define KPI_MIN_ROUND_GAP_MS 20

#ifdef __GLIBC__
/* allocations from this size up get their own mapping (glibc's maximum) */
#define KPI_MMAP_THRESHOLD (32 * 1024 * 1024)
/* free memory at the heap's top that free() leaves for the next round */
#define KPI_TRIM_THRESHOLD (512 * 1024 * 1024)
#endif

/* Delay before the next start after a clean exit (worker turned off etc.). */
#define KPI_CLEAN_RESTART_MS 1000

/* Longest backoff after failed exits. */
#define KPI_MAX_BACKOFF_S 60

/* Shared memory "streamkpi kpi worker": the worker's pid and backoff. */
typedef struct KpiShared
{
	LWLock	   *lock;			/* protects everything below */
	pid_t		pid;			/* 0 while no KPI worker runs */
	TimestampTz started_at;
	int			failures;		/* consecutive failed exits */
	TimestampTz retry_at;		/* the launcher waits until then */
	Latch	   *latch;			/* the running worker's, for kpi_worker_wake() */
} KpiShared;

static KpiShared *kpi_shared = NULL;

static Size
kpi_shmem_size(void)
{
	return sizeof(KpiShared);
}

static const StreamkpiShmemPart kpi_shmem = {
	.name = "streamkpi kpi worker",
	.size = kpi_shmem_size,
	.ptr = (void **) &kpi_shared,
};

/* Register the KPI worker's shared memory; from _PG_init when preloaded. */
void
KpiShmemInit(void)
{
	streamkpi_shmem_register(&kpi_shmem);
}

/* The running KPI worker's pid and start, or 0 (for streamkpi.workers()). */
pid_t
kpi_worker_pid(TimestampTz *started_at)
{
	pid_t		pid;

	LWLockAcquire(kpi_shared->lock, LW_SHARED);
	pid = kpi_shared->pid;
	*started_at = kpi_shared->started_at;
	LWLockRelease(kpi_shared->lock);
	return pid;
}

/*
 * Start the KPI worker's next round now rather than after its nap: a
 * pipeline whose backlog has just drained (full batches, then one that is
 * not) calls this after its commit, so that a burst's last events reach
 * the KPIs without waiting for streamkpi.kpi_naptime.  While pipelines
 * work through a backlog, or keep up with a steady rate, they do not call
 * it and rounds keep their pace.
 */
void
kpi_worker_wake(void)
{
	Latch	   *latch;

	LWLockAcquire(kpi_shared->lock, LW_SHARED);
	latch = kpi_shared->latch;
	LWLockRelease(kpi_shared->lock);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * Give the KPI worker's free heap pages back to the system.  Elsewhere,
 * glibc does that as memory is freed.
 */
void
kpi_worker_release_memory(void)
{
#ifdef __GLIBC__
	if (kpi_in_worker)
		(void) malloc_trim(0);
#endif
}

/* ---- launcher side ---- */

static BackgroundWorkerHandle *kpi_handle = NULL;	/* in TopMemoryContext */
static bool kpi_warned_no_slot = false;

/*
 * Start the KPI worker unless it runs, is starting, is backing off, is
 * turned off, or the extension does not exist in the launcher's database.
 * Called in the launcher, outside any transaction.
 */
void
kpi_worker_ensure_running(void)
{
	BackgroundWorker worker;
	MemoryContext old;
	TimestampTz now = GetCurrentTimestamp();
	pid_t		pid;
	bool		wait;
	bool		exists;

	if (kpi_handle != NULL)
	{
		if (GetBackgroundWorkerPid(kpi_handle, &pid) != BGWH_STOPPED)
			return;
		pfree(kpi_handle);
		kpi_handle = NULL;
	}
	if (!streamkpi_kpi_worker)
		return;

	LWLockAcquire(kpi_shared->lock, LW_SHARED);
	wait = kpi_shared->pid != 0 || now < kpi_shared->retry_at;
	LWLockRelease(kpi_shared->lock);
	if (wait)
		return;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	exists = OidIsValid(get_extension_oid("streamkpi", true));
	CommitTransactionCommand();
	if (!exists)
		return;

	streamkpi_worker_fill(&worker, "StreamkpiKpiMain", "streamkpi kpi",
						  BGW_NEVER_RESTART, ObjectIdGetDatum(MyDatabaseId));

	old = MemoryContextSwitchTo(TopMemoryContext);
	if (!RegisterDynamicBackgroundWorker(&worker, &kpi_handle))
	{
		kpi_handle = NULL;
		if (!kpi_warned_no_slot)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("could not start the streamkpi KPI worker"),
					 errhint("Raise max_worker_processes.")));
		kpi_warned_no_slot = true;
	}
	else
		kpi_warned_no_slot = false;
	MemoryContextSwitchTo(old);
}

/* ---- worker side ---- */

static bool kpi_clean_exit = false;

bool		kpi_in_worker = false;

/* On any exit: free the slot and set the launcher's backoff. */
static void
kpi_detach(int code, Datum arg)
{
	TimestampTz now = GetCurrentTimestamp();

	LWLockAcquire(kpi_shared->lock, LW_EXCLUSIVE);
	if (kpi_shared->pid == MyProcPid)
	{
		kpi_shared->pid = 0;
		kpi_shared->latch = NULL;
		if (kpi_clean_exit)
		{
			kpi_shared->failures = 0;
			kpi_shared->retry_at =
				TimestampTzPlusMilliseconds(now, KPI_CLEAN_RESTART_MS);
		}
		else
		{
			int			failures = ++kpi_shared->failures;

			kpi_shared->retry_at =
				TimestampTzPlusMilliseconds(now,
											1000 * Min(1 << Min(failures - 1, 6),
													   KPI_MAX_BACKOFF_S));
		}
	}
	LWLockRelease(kpi_shared->lock);
}

/* Claim the single KPI worker slot; false when another worker has it. */
static bool
kpi_attach(void)
{
	bool		ok;

	LWLockAcquire(kpi_shared->lock, LW_EXCLUSIVE);
	ok = kpi_shared->pid == 0;
	if (ok)
	{
		kpi_shared->pid = MyProcPid;
		kpi_shared->started_at = GetCurrentTimestamp();
		kpi_shared->latch = MyLatch;
	}
	LWLockRelease(kpi_shared->lock);
	if (ok)
		before_shmem_exit(kpi_detach, (Datum) 0);
	return ok;
}

/*
 * Run one SELECT returning one bigint in a transaction of its own.
 * Returns the value, or -1 when the extension is gone from the database.
 */
static int64
run_in_transaction(const char *sql)
{
	int64		value;
	bool		isnull;
	int			rc;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!OidIsValid(get_extension_oid("streamkpi", true)))
	{
		CommitTransactionCommand();
		return -1;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, sql);

	rc = SPI_execute(sql, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "\"%s\" failed: SPI result %d", sql, rc);
	value = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		value = 0;

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return value;
}

/* One round: the listens committed since the last one, exactly once. */
static int64
kpi_round(void)
{
	return run_in_transaction(KPI_APPLY_SQL);
}

/*
 * Day partitions of streamkpi.listens around today, and rows of other days
 * moved out of the default partition.  A failure (a lock it waited for too
 * long, say) is logged and retried later; it must not stop the KPI rounds.
 */
static void
maintain_partitions(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		int64		moved = run_in_transaction(KPI_PARTITIONS_SQL);

		if (moved > 0)
			ereport(LOG,
					(errmsg("streamkpi moved %lld listens from the default partition into day partitions",
							(long long) moved)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	PG_END_TRY();
}

/*
 * Wait for the next round: streamkpi.kpi_naptime from the start of the
 * last one, less when a pipeline wakes us (kpi_worker_wake()), but never
 * sooner than KPI_MIN_ROUND_GAP_MS (or the nap, if shorter) after it
 * started: wake-ups cannot make the rounds' fixed cost the worker's main
 * work.  A round longer than the nap starts
 * the next one at once.
 */
static void
kpi_nap(long elapsed_ms)
{
	long		min_gap = Min(KPI_MIN_ROUND_GAP_MS, streamkpi_kpi_naptime_ms);

	if (elapsed_ms < min_gap)
		(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 min_gap - elapsed_ms, PG_WAIT_EXTENSION);
	/* never a timeout <= 0: WaitLatch() would wait without one */
	if (streamkpi_kpi_naptime_ms > Max(elapsed_ms, min_gap))
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 streamkpi_kpi_naptime_ms - Max(elapsed_ms, min_gap),
						 PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

void
StreamkpiKpiMain(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	TimestampTz partitions_checked_at = 0;

	streamkpi_worker_connect(NULL, dboid, "streamkpi kpi");
	kpi_in_worker = true;
#ifdef __GLIBC__

	/*
	 * Every round allocates and frees its deltas, tens of megabytes.  With
	 * glibc's defaults the large blocks are mapped and unmapped each round
	 * and the top of the heap is trimmed on free, so every round faulted
	 * its pages in again, zeroed: 14% of a busy worker's time (perf, in
	 * kpi_throughput.sh), 9% with these settings.  Keep them in the heap;
	 * the loop below trims it when traffic stops.
	 */
	(void) mallopt(M_MMAP_THRESHOLD, KPI_MMAP_THRESHOLD);
	(void) mallopt(M_TRIM_THRESHOLD, KPI_TRIM_THRESHOLD);
#endif

	if (!kpi_attach())
	{
		ereport(LOG,
				(errmsg("streamkpi KPI worker is already running")));
		proc_exit(0);
	}

	for (;;)
	{
		TimestampTz started;
		long		secs;
		int			usecs;
		long		elapsed_ms;
		int64		applied;
		bool		maintained = false;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!streamkpi_kpi_worker)
			break;

		started = GetCurrentTimestamp();
		if (TimestampDifferenceExceeds(partitions_checked_at, started,
									   KPI_PARTITIONS_INTERVAL_MS))
		{
			maintain_partitions();
			partitions_checked_at = started;
			maintained = true;
		}
		applied = kpi_round();
		if (applied < 0)
			break;

		/*
		 * A round's deltas are freed at its end.  Their pages go back to the
		 * system once the traffic stops (a round that found nothing) and
		 * with the partitions check, not after every round: the next round
		 * would fault them in again.  A catch-up gives them back after each
		 * full delta (kpi_apply.c).
		 */
		if (applied == 0 || maintained)
			kpi_worker_release_memory();
		TimestampDifference(started, GetCurrentTimestamp(), &secs, &usecs);
		elapsed_ms = secs * 1000 + usecs / 1000;

		kpi_nap(elapsed_ms);
	}

	kpi_clean_exit = true;
	proc_exit(0);
}
