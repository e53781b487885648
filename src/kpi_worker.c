/*-------------------------------------------------------------------------
 *
 * kpi_worker.c
 *	  The "streamkpi kpi" background worker.  Every streamkpi.kpi_naptime it
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
 *	  The worker's pid and backoff live in shared memory of their own
 *	  ("streamkpi kpi worker", set up by KpiWorkerInit()) so that a
 *	  restarted launcher neither starts a second worker nor forgets the
 *	  backoff.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

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
#include "storage/shmem.h"
#include "storage/spin.h"
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

/* Delay before the next start after a clean exit (worker turned off etc.). */
#define KPI_CLEAN_RESTART_MS 1000

/* Longest backoff after failed exits. */
#define KPI_MAX_BACKOFF_S 60

/* ---- shared memory ---- */

#define KPI_SHMEM_NAME "streamkpi kpi worker"

typedef struct KpiWorkerShared
{
	slock_t		mutex;			/* protects everything below */
	pid_t		pid;			/* 0 while no KPI worker runs */
	TimestampTz started_at;
	int			failures;		/* consecutive failed exits */
	TimestampTz retry_at;		/* the launcher waits until then */
} KpiWorkerShared;

static KpiWorkerShared *kpi_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
kpi_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(KpiWorkerShared)));
}

static void
kpi_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	kpi_shared = ShmemInitStruct(KPI_SHMEM_NAME, sizeof(KpiWorkerShared), &found);
	if (!found)
	{
		memset(kpi_shared, 0, sizeof(KpiWorkerShared));
		SpinLockInit(&kpi_shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* From _PG_init when preloaded: the worker's shared memory. */
void
KpiWorkerInit(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = kpi_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = kpi_shmem_startup;
}

/* The running KPI worker's pid and start, for streamkpi.workers(). */
bool
kpi_worker_status(pid_t *pid, TimestampTz *started_at)
{
	SpinLockAcquire(&kpi_shared->mutex);
	*pid = kpi_shared->pid;
	*started_at = kpi_shared->started_at;
	SpinLockRelease(&kpi_shared->mutex);
	return *pid != 0;
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

	SpinLockAcquire(&kpi_shared->mutex);
	wait = kpi_shared->pid != 0 || now < kpi_shared->retry_at;
	SpinLockRelease(&kpi_shared->mutex);
	if (wait)
		return;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	exists = OidIsValid(get_extension_oid("streamkpi", true));
	CommitTransactionCommand();
	if (!exists)
		return;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "streamkpi");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "StreamkpiKpiMain");
	snprintf(worker.bgw_name, BGW_MAXLEN, "streamkpi kpi");
	snprintf(worker.bgw_type, BGW_MAXLEN, "streamkpi kpi");
	worker.bgw_main_arg = ObjectIdGetDatum(MyDatabaseId);
	worker.bgw_notify_pid = MyProcPid;

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

/* On any exit: free the slot and set the launcher's backoff. */
static void
kpi_detach(int code, Datum arg)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&kpi_shared->mutex);
	if (kpi_shared->pid == MyProcPid)
	{
		kpi_shared->pid = 0;
		if (kpi_clean_exit)
			kpi_shared->failures = 0;
		else
			kpi_shared->failures++;
		kpi_shared->retry_at = TimestampTzPlusMilliseconds(now,
														   kpi_clean_exit ? KPI_CLEAN_RESTART_MS
														   : 1000 * Min(1 << Min(kpi_shared->failures - 1, 6),
																		KPI_MAX_BACKOFF_S));
	}
	SpinLockRelease(&kpi_shared->mutex);
}

/* Claim the single KPI worker slot; false when another worker has it. */
static bool
kpi_attach(void)
{
	bool		ok;

	SpinLockAcquire(&kpi_shared->mutex);
	ok = kpi_shared->pid == 0;
	if (ok)
	{
		kpi_shared->pid = MyProcPid;
		kpi_shared->started_at = GetCurrentTimestamp();
	}
	SpinLockRelease(&kpi_shared->mutex);
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

void
StreamkpiKpiMain(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	TimestampTz partitions_checked_at = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	SetConfigOption("search_path", STREAMKPI_WORKER_SEARCH_PATH, PGC_USERSET,
					PGC_S_SESSION);
	pgstat_report_appname("streamkpi kpi");
	/* its SQL names every object by schema; nothing resolves elsewhere */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

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
		}
		if (kpi_round() < 0)
			break;
		TimestampDifference(started, GetCurrentTimestamp(), &secs, &usecs);
		elapsed_ms = secs * 1000 + usecs / 1000;

		/* a round longer than the nap starts the next one at once */
		if (elapsed_ms < streamkpi_kpi_naptime_ms)
			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 streamkpi_kpi_naptime_ms - elapsed_ms,
							 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	kpi_clean_exit = true;
	proc_exit(0);
}
