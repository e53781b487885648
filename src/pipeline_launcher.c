/*-------------------------------------------------------------------------
 *
 * pipeline_launcher.c
 *	  The static "streamkpi launcher" background worker, registered when the
 *	  library is preloaded.  Connected to streamkpi.database, it starts a
 *	  dynamic worker for every enabled pipeline (parallelism workers each),
 *	  and starts failed ones again after the backoff their slot asks for.
 *	  Stopped, dropped or altered pipelines are noticed by their workers.
 *
 *	  streamkpi.workers() reports the workers that shared memory knows of.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "kpi.h"
#include "pipeline.h"
#include "streamkpi.h"

/* How long the launcher sleeps when nothing wakes it. */
#define LAUNCHER_NAP_MS 1000L

/* Restart delay after the launcher exits with an error. */
#define LAUNCHER_RESTART_S 5

PGDLLEXPORT void StreamkpiLauncherMain(Datum main_arg);

/* A worker this launcher registered (handles are valid only here). */
typedef struct LaunchedWorker
{
	char		name[PIPELINE_NAME_LEN];
	int			worker_index;
	BackgroundWorkerHandle *handle;
} LaunchedWorker;

/* A worker an enabled pipeline needs. */
typedef struct WantedWorker
{
	char		name[PIPELINE_NAME_LEN];
	int			worker_index;
} WantedWorker;

static List *launched = NIL;	/* LaunchedWorker *, in TopMemoryContext */
static bool warned_no_slots = false;

/* Register the launcher; from _PG_init when preloaded. */
void
StreamkpiLauncherInit(void)
{
	BackgroundWorker worker;

	streamkpi_worker_fill(&worker, "StreamkpiLauncherMain", "streamkpi launcher",
						  LAUNCHER_RESTART_S, (Datum) 0);
	RegisterBackgroundWorker(&worker);
}

/* Clear our slot on any exit so a stale pid is never reported. */
static void
launcher_detach(int code, Datum arg)
{
	LWLockAcquire(pipeline_shared->lock, LW_EXCLUSIVE);
	if (pipeline_shared->launcher_pid == MyProcPid)
		pipeline_shared->launcher_pid = 0;
	LWLockRelease(pipeline_shared->lock);
}

static void
launcher_attach(void)
{
	LWLockAcquire(pipeline_shared->lock, LW_EXCLUSIVE);
	pipeline_shared->launcher_pid = MyProcPid;
	pipeline_shared->launcher_started_at = GetCurrentTimestamp();
	pipeline_shared->launcher_latch = MyLatch;
	LWLockRelease(pipeline_shared->lock);
	before_shmem_exit(launcher_detach, (Datum) 0);
}

/* Called by backends: look at the pipelines now rather than within 1 s. */
void
pipeline_launcher_wake(void)
{
	Latch	   *latch;

	LWLockAcquire(pipeline_shared->lock, LW_SHARED);
	latch = pipeline_shared->launcher_pid != 0 ? pipeline_shared->launcher_latch : NULL;
	LWLockRelease(pipeline_shared->lock);
	if (latch)
		SetLatch(latch);
}

/* Drop the handles of workers that have exited. */
static void
forget_exited_workers(void)
{
	ListCell   *lc;

	foreach(lc, launched)
	{
		LaunchedWorker *w = lfirst(lc);
		pid_t		pid;

		if (GetBackgroundWorkerPid(w->handle, &pid) == BGWH_STOPPED)
		{
			launched = foreach_delete_current(launched, lc);
			pfree(w->handle);
			pfree(w);
		}
	}
}

/* The workers enabled pipelines need, read in a short transaction. */
static List *
wanted_workers(MemoryContext cxt)
{
	List	   *wanted = NIL;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (OidIsValid(get_extension_oid("streamkpi", true)))
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_execute("SELECT name, parallelism FROM streamkpi.pipelines WHERE enabled ORDER BY name",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read streamkpi.pipelines");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			int			parallelism = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
																  SPI_tuptable->tupdesc, 2, &isnull));

			for (int k = 0; k < parallelism; k++)
			{
				WantedWorker *w = MemoryContextAllocZero(cxt, sizeof(WantedWorker));

				strlcpy(w->name, name, PIPELINE_NAME_LEN);
				w->worker_index = k;
				wanted = lappend(wanted, w);
			}
		}
		SPI_finish();
		PopActiveSnapshot();
	}
	CommitTransactionCommand();
	return wanted;
}

static bool
is_launched(const WantedWorker *w)
{
	ListCell   *lc;

	foreach(lc, launched)
	{
		LaunchedWorker *l = lfirst(lc);

		if (l->worker_index == w->worker_index && strcmp(l->name, w->name) == 0)
			return true;
	}
	return false;
}

/* Running already (maybe started by a previous launcher), or backing off? */
static bool
should_wait(const WantedWorker *w, TimestampTz now)
{
	PipelineSlot *slot;
	bool		wait = false;

	LWLockAcquire(pipeline_shared->lock, LW_SHARED);
	slot = pipeline_slot_find(w->name, w->worker_index, MyDatabaseId);
	if (slot && (slot->pid != 0 ||
				 (slot->state == PIPELINE_FAILED && now < slot->retry_at)))
		wait = true;
	LWLockRelease(pipeline_shared->lock);
	return wait;
}

static void
launch_worker(const WantedWorker *w)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	LaunchedWorker *l;

	pipeline_worker_prepare(&worker, w->name, w->worker_index, MyDatabaseId);
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		if (!warned_no_slots)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("could not start a worker for pipeline \"%s\"", w->name),
					 errhint("Raise max_worker_processes.")));
		warned_no_slots = true;
		return;
	}
	warned_no_slots = false;
	l = MemoryContextAllocZero(TopMemoryContext, sizeof(LaunchedWorker));
	strlcpy(l->name, w->name, PIPELINE_NAME_LEN);
	l->worker_index = w->worker_index;
	l->handle = handle;
	launched = lappend(launched, l);
}

/* Start what enabled pipelines need and is neither running nor waiting. */
static void
reconcile(MemoryContext cxt)
{
	TimestampTz now = GetCurrentTimestamp();
	ListCell   *lc;
	List	   *wanted;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	forget_exited_workers();
	MemoryContextSwitchTo(old);
	wanted = wanted_workers(cxt);
	old = MemoryContextSwitchTo(TopMemoryContext);
	foreach(lc, wanted)
	{
		WantedWorker *w = lfirst(lc);

		if (!is_launched(w) && !should_wait(w, now))
			launch_worker(w);
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(cxt);
}

void
StreamkpiLauncherMain(Datum main_arg)
{
	MemoryContext cxt;

	/* a missing database is an error exit; the postmaster retries in 5 s */
	streamkpi_worker_connect(streamkpi_database, InvalidOid, "streamkpi launcher");

	launcher_attach();
	ereport(LOG, (errmsg("streamkpi launcher started in database \"%s\"",
						 streamkpi_database)));
	cxt = AllocSetContextCreate(TopMemoryContext, "streamkpi launcher",
								ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		reconcile(cxt);
		kpi_worker_ensure_running();	/* see kpi_worker.c */

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LAUNCHER_NAP_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}

PG_FUNCTION_INFO_V1(streamkpi_workers);

/* one row of streamkpi.workers(), for a worker that runs (pid not 0) */
static void
put_worker_row(ReturnSetInfo *rsinfo, const char *kind, pid_t pid,
			   TimestampTz started_at)
{
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (pid == 0)
		return;
	values[0] = CStringGetTextDatum(kind);
	values[1] = Int32GetDatum(pid);
	values[2] = TimestampTzGetDatum(started_at);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * streamkpi.workers() -> setof (kind text, pid int, started_at timestamptz)
 */
Datum
streamkpi_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	pid_t		launcher_pid;
	TimestampTz launcher_started_at;
	pid_t		kpi_pid;
	TimestampTz kpi_started_at;

	streamkpi_require_preload("streamkpi.workers()");
	InitMaterializedSRF(fcinfo, 0);

	LWLockAcquire(pipeline_shared->lock, LW_SHARED);
	launcher_pid = pipeline_shared->launcher_pid;
	launcher_started_at = pipeline_shared->launcher_started_at;
	LWLockRelease(pipeline_shared->lock);
	kpi_pid = kpi_worker_pid(&kpi_started_at);

	put_worker_row(rsinfo, "launcher", launcher_pid, launcher_started_at);
	put_worker_row(rsinfo, "kpi", kpi_pid, kpi_started_at);
	return (Datum) 0;
}
