/*-------------------------------------------------------------------------
 *
 * streamkpi.h
 *	  Declarations shared by every streamkpi subsystem: the preload flag,
 *	  settings, shared-memory parts, and the inits _PG_init calls.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_H
#define STREAMKPI_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "postmaster/bgworker.h"
#include "storage/lwlock.h"

#define STREAMKPI_VERSION "0.1"

/*
 * The search_path of our background workers' sessions: their own queries
 * never resolve a name in a schema a user chose (ALTER DATABASE ... SET
 * search_path included).
 */
#define STREAMKPI_WORKER_SEARCH_PATH "pg_catalog, pg_temp"

/* in preload.c */
extern bool streamkpi_preloaded;
extern void streamkpi_require_preload(const char *feature);
extern void streamkpi_worker_fill(BackgroundWorker *worker,
								  const char *function, const char *type,
								  int restart_s, Datum main_arg);
extern void streamkpi_worker_connect(const char *dbname, Oid dboid,
									 const char *appname);

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

/*
 * in shmem.c: a part of shared memory that a subsystem owns.  It begins
 * with its LWLock pointer; the rest starts zeroed.
 */
typedef struct StreamkpiShmemPart
{
	const char *name;			/* of the ShmemInitStruct and of its LWLock */
	Size		(*size) (void);
	void	  **ptr;			/* where the part's address goes */
} StreamkpiShmemPart;

extern void streamkpi_shmem_register(const StreamkpiShmemPart *part);
extern bool streamkpi_shmem_attached(void);

#endif							/* STREAMKPI_H */
