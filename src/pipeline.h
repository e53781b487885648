/*-------------------------------------------------------------------------
 *
 * pipeline.h
 *	  Pipelines: a SQL statement over one Kafka foreign table, run by a
 *	  background worker on each batch of new messages, exactly once.
 *
 *	  Each running worker owns one slot in shared memory ("streamkpi
 *	  pipelines") where it publishes its state for streamkpi.pipeline_status;
 *	  the launcher reads the slots to restart failed workers with backoff.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_PIPELINE_H
#define STREAMKPI_PIPELINE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#define PIPELINE_NAME_LEN 64
#define PIPELINE_MAX_PARTITIONS 64
#define PIPELINE_RATE_SECONDS 10
#define PIPELINE_ERROR_LEN 256

typedef enum PipelineState
{
	PIPELINE_FREE = 0,			/* slot unused */
	PIPELINE_STARTING,
	PIPELINE_RUNNING,
	PIPELINE_ERROR,				/* running, but the last attempt failed */
	PIPELINE_STOPPED,			/* exited cleanly */
	PIPELINE_FAILED				/* exited with an error; the launcher retries */
} PipelineState;

typedef struct PipelinePartitionStatus
{
	int32		partition;
	int64		committed;		/* next offset to read, as committed */
	int64		high;			/* high watermark last seen, -1 unknown */
} PipelinePartitionStatus;

typedef struct PipelineSlot
{
	char		name[PIPELINE_NAME_LEN];
	int			worker_index;	/* 0 .. parallelism - 1 */
	Oid			dboid;
	PipelineState state;
	pid_t		pid;
	TimestampTz started_at;
	int			starts;			/* workers attached since shared memory began */
	int			failures;		/* consecutive failed exits */
	TimestampTz retry_at;		/* launcher waits until then after a failure */
	int64		rows;
	int64		batches;
	int64		dead_letters;
	int32		last_batch_ms;
	int32		last_latency_ms;
	/* rows per second over the last PIPELINE_RATE_SECONDS, a ring by second */
	int64		rate_rows[PIPELINE_RATE_SECONDS];
	int64		rate_second[PIPELINE_RATE_SECONDS];
	char		last_error[PIPELINE_ERROR_LEN];
	int			last_sqlstate;	/* of last_error, encoded */
	TimestampTz last_error_at;
	int			npartitions;
	PipelinePartitionStatus partitions[PIPELINE_MAX_PARTITIONS];
} PipelineSlot;

/*
 * Shared memory "streamkpi pipelines": the launcher and the worker slots,
 * all under one lock.
 */
typedef struct PipelineShared
{
	LWLock	   *lock;			/* protects everything below */
	pid_t		launcher_pid;	/* 0 while no launcher runs */
	TimestampTz launcher_started_at;
	Latch	   *launcher_latch; /* set to wake the launcher */
	PipelineSlot slots[FLEXIBLE_ARRAY_MEMBER];	/* max_pipeline_workers */
} PipelineShared;

/* in pipeline_status.c */
extern PipelineShared *pipeline_shared;
extern void PipelineShmemInit(void);
extern PipelineSlot *pipeline_slot_find(const char *name, int worker_index,
										Oid dboid);
extern PipelineSlot *pipeline_slot_acquire(const char *name, int worker_index,
										   Oid dboid);
extern void pipeline_slot_set_error(PipelineSlot *slot, int sqlstate,
									const char *message);
extern void pipeline_slot_record_batch(PipelineSlot *slot, int64 rows,
									   int64 dead_letters, int32 batch_ms,
									   int32 latency_ms);

/* in pipeline_launcher.c */
extern void StreamkpiLauncherInit(void);
extern void pipeline_launcher_wake(void);

/* in pipeline_worker.c */
extern void pipeline_require_owner(const char *name, Oid owner);
extern PGDLLEXPORT void StreamkpiPipelineMain(Datum main_arg);
extern void pipeline_worker_prepare(BackgroundWorker *worker, const char *name,
									int worker_index, Oid dboid);

#endif							/* STREAMKPI_PIPELINE_H */
