/*-------------------------------------------------------------------------
 *
 * preload.c
 *	  What exists only when streamkpi is loaded through
 *	  shared_preload_libraries: the flag that says so, the error a feature
 *	  that needs it raises otherwise, and what all our background workers
 *	  (launcher, pipeline workers, KPI worker) share: how they are
 *	  described to the postmaster and how their main starts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"

#include "streamkpi.h"

/* true when loaded through shared_preload_libraries; set by _PG_init */
bool		streamkpi_preloaded = false;

/*
 * Raise a clear error for a feature that needs shared memory or background
 * workers when the library was loaded on demand instead of preloaded.
 */
void
streamkpi_require_preload(const char *feature)
{
	if (!streamkpi_preloaded || !streamkpi_shmem_attached())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s requires streamkpi to be loaded via shared_preload_libraries",
						feature),
				 errhint("Add streamkpi to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/*
 * A background worker of ours: connected to a database, started once
 * recovery is over, running function of this library, shown as type in
 * pg_stat_activity (and named so unless the caller names it).  The
 * postmaster restarts it after restart_s seconds, or never
 * (BGW_NEVER_RESTART).  A worker registered by a backend (a dynamic one)
 * tells that backend when it starts and stops.
 */
void
streamkpi_worker_fill(BackgroundWorker *worker, const char *function,
					  const char *type, int restart_s, Datum main_arg)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = restart_s;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "streamkpi");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker->bgw_name, BGW_MAXLEN, "%s", type);
	snprintf(worker->bgw_type, BGW_MAXLEN, "%s", type);
	worker->bgw_main_arg = main_arg;
	worker->bgw_notify_pid = IsUnderPostmaster ? MyProcPid : 0;
}

/*
 * The start of each worker's main: the stock signal handlers, a connection
 * to the database named dbname (or, when NULL, to dboid) as the bootstrap
 * superuser, our own search_path, and the name pg_stat_activity shows as
 * application_name.
 */
void
streamkpi_worker_connect(const char *dbname, Oid dboid, const char *appname)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	if (dbname != NULL)
		BackgroundWorkerInitializeConnection(dbname, NULL, 0);
	else
		BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	SetConfigOption("search_path", STREAMKPI_WORKER_SEARCH_PATH, PGC_USERSET,
					PGC_S_SESSION);
	pgstat_report_appname(appname);
}
