/*-------------------------------------------------------------------------
 *
 * pipeline_launcher.c
 *	  The static "streamkpi launcher" background worker, registered when the
 *	  library is preloaded.  It announces itself in shared memory and is
 *	  the supervisor that starts the dynamic pipeline and KPI workers.
 *
 *	  streamkpi.workers() reports the workers that shared memory knows of.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

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
#include "utils/timestamp.h"

#include "streamkpi.h"

/* How long the launcher sleeps when nothing wakes it. */
#define LAUNCHER_NAP_MS 1000L

/* Restart delay after the launcher exits with an error. */
#define LAUNCHER_RESTART_S 5

PGDLLEXPORT void StreamkpiLauncherMain(Datum main_arg);

void
StreamkpiLauncherInit(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = LAUNCHER_RESTART_S;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "streamkpi");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "StreamkpiLauncherMain");
	snprintf(worker.bgw_name, BGW_MAXLEN, "streamkpi launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "streamkpi launcher");
	RegisterBackgroundWorker(&worker);
}

/* Clear our slot on any exit so a stale pid is never reported. */
static void
launcher_detach(int code, Datum arg)
{
	LWLockAcquire(streamkpi_shared->lock, LW_EXCLUSIVE);
	if (streamkpi_shared->launcher_pid == MyProcPid)
		streamkpi_shared->launcher_pid = 0;
	LWLockRelease(streamkpi_shared->lock);
}

static void
launcher_attach(void)
{
	LWLockAcquire(streamkpi_shared->lock, LW_EXCLUSIVE);
	streamkpi_shared->launcher_pid = MyProcPid;
	streamkpi_shared->launcher_started_at = GetCurrentTimestamp();
	LWLockRelease(streamkpi_shared->lock);
	before_shmem_exit(launcher_detach, (Datum) 0);
}

void
StreamkpiLauncherMain(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/*
	 * Connected to no particular database, like PostgreSQL's logical
	 * replication launcher: it stays up even before the database holding
	 * the pipelines exists, and it shows in pg_stat_activity.
	 */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("streamkpi launcher");

	launcher_attach();
	ereport(LOG, (errmsg("streamkpi launcher started")));

	for (;;)
	{
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

/*
 * streamkpi.workers() -> setof (kind text, pid int, started_at timestamptz)
 */
Datum
streamkpi_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	pid_t		launcher_pid;
	TimestampTz launcher_started_at;

	streamkpi_require_preload("streamkpi.workers()");
	InitMaterializedSRF(fcinfo, 0);

	LWLockAcquire(streamkpi_shared->lock, LW_SHARED);
	launcher_pid = streamkpi_shared->launcher_pid;
	launcher_started_at = streamkpi_shared->launcher_started_at;
	LWLockRelease(streamkpi_shared->lock);

	if (launcher_pid != 0)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = CStringGetTextDatum("launcher");
		values[1] = Int32GetDatum(launcher_pid);
		values[2] = TimestampTzGetDatum(launcher_started_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}

	return (Datum) 0;
}
