/*-------------------------------------------------------------------------
 *
 * streamkpi.h
 *	  Declarations shared by every streamkpi subsystem: the per-subsystem
 *	  init functions called from _PG_init, settings, and shared state.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_H
#define STREAMKPI_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#define STREAMKPI_VERSION "0.1"

/*
 * The search_path of our background workers' sessions: their own queries
 * never resolve a name in a schema a user chose (ALTER DATABASE ... SET
 * search_path included).
 */
#define STREAMKPI_WORKER_SEARCH_PATH "pg_catalog, pg_temp"

/* in streamkpi.c */
extern bool streamkpi_preloaded;
extern void streamkpi_require_preload(const char *feature);

/* in guc.c */
extern int	streamkpi_kafka_timeout_ms;
extern char *streamkpi_database;
extern char *streamkpi_kpi_timezone;
extern int	streamkpi_max_pipeline_workers;
extern bool streamkpi_kpi_worker;
extern int	streamkpi_kpi_naptime_ms;
extern char *streamkpi_late_horizon;
extern char *streamkpi_retention;
extern void StreamkpiGucInit(void);

/* in shmem.c */
typedef struct StreamkpiSharedState
{
	LWLock	   *lock;			/* protects everything below */
	pid_t		launcher_pid;	/* 0 while no launcher runs */
	TimestampTz launcher_started_at;
	Latch	   *launcher_latch; /* set to wake the launcher */
	/* pipeline worker slots follow, see pipeline_status.c */
} StreamkpiSharedState;

extern StreamkpiSharedState *streamkpi_shared;
extern void StreamkpiShmemInit(void);

/* in pipeline_launcher.c */
extern void StreamkpiLauncherInit(void);

#endif							/* STREAMKPI_H */
