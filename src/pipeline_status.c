/*-------------------------------------------------------------------------
 *
 * pipeline_status.c
 *	  Pipeline worker slots in shared memory, and streamkpi.pipeline_status.
 *
 *	  The slots, with the launcher's pid and latch, are the shared memory
 *	  "streamkpi pipelines", which this file registers and owns.
 *
 *	  A worker publishes its state once per batch, under its lock;
 *	  readers copy a slot under the same lock.  A slot outlives its worker
 *	  so that the last error and state stay visible after an exit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "pipeline.h"
#include "streamkpi.h"

PipelineShared *pipeline_shared = NULL;

static Size
pipeline_shmem_size(void)
{
	return add_size(offsetof(PipelineShared, slots),
					mul_size(sizeof(PipelineSlot), streamkpi_max_pipeline_workers));
}

static const StreamkpiShmemPart pipeline_shmem = {
	.name = "streamkpi pipelines",
	.size = pipeline_shmem_size,
	.ptr = (void **) &pipeline_shared,
};

/* Register the pipelines' shared memory; from _PG_init when preloaded. */
void
PipelineShmemInit(void)
{
	streamkpi_shmem_register(&pipeline_shmem);
}

/* Caller holds the shared lock. */
PipelineSlot *
pipeline_slot_find(const char *name, int worker_index, Oid dboid)
{
	for (int i = 0; i < streamkpi_max_pipeline_workers; i++)
	{
		PipelineSlot *slot = &pipeline_shared->slots[i];

		if (slot->state != PIPELINE_FREE && slot->dboid == dboid &&
			slot->worker_index == worker_index &&
			strcmp(slot->name, name) == 0)
			return slot;
	}
	return NULL;
}

/*
 * The slot of (name, worker_index), claimed if it does not exist yet; NULL
 * when every slot is taken.  Caller holds the shared lock exclusively.
 */
PipelineSlot *
pipeline_slot_acquire(const char *name, int worker_index, Oid dboid)
{
	PipelineSlot *slot = pipeline_slot_find(name, worker_index, dboid);
	PipelineSlot *reusable = NULL;

	if (slot)
		return slot;

	/* a free slot, else the slot of a pipeline that is not running */
	for (int i = 0; i < streamkpi_max_pipeline_workers; i++)
	{
		if (pipeline_shared->slots[i].state == PIPELINE_FREE)
		{
			reusable = &pipeline_shared->slots[i];
			break;
		}
		if (reusable == NULL && pipeline_shared->slots[i].pid == 0 &&
			pipeline_shared->slots[i].state == PIPELINE_STOPPED)
			reusable = &pipeline_shared->slots[i];
	}
	if (reusable == NULL)
		return NULL;

	memset(reusable, 0, sizeof(PipelineSlot));
	strlcpy(reusable->name, name, PIPELINE_NAME_LEN);
	reusable->worker_index = worker_index;
	reusable->dboid = dboid;
	reusable->state = PIPELINE_STOPPED;
	return reusable;
}

void
pipeline_slot_set_error(PipelineSlot *slot, int sqlstate, const char *message)
{
	LWLockAcquire(pipeline_shared->lock, LW_EXCLUSIVE);
	strlcpy(slot->last_error, message, PIPELINE_ERROR_LEN);
	slot->last_sqlstate = sqlstate;
	slot->last_error_at = GetCurrentTimestamp();
	LWLockRelease(pipeline_shared->lock);
}

/* Account one committed batch; the rate ring is indexed by epoch second. */
void
pipeline_slot_record_batch(PipelineSlot *slot, int64 rows, int64 dead_letters,
						   int32 batch_ms, int32 latency_ms)
{
	int64		second = (int64) (GetCurrentTimestamp() / USECS_PER_SEC);
	int			bucket = (int) (second % PIPELINE_RATE_SECONDS);

	LWLockAcquire(pipeline_shared->lock, LW_EXCLUSIVE);
	slot->rows += rows;
	slot->batches++;
	slot->dead_letters += dead_letters;
	slot->last_batch_ms = batch_ms;
	slot->last_latency_ms = latency_ms;
	if (slot->rate_second[bucket] != second)
	{
		slot->rate_second[bucket] = second;
		slot->rate_rows[bucket] = 0;
	}
	slot->rate_rows[bucket] += rows;
	if (slot->state == PIPELINE_ERROR)
		slot->state = PIPELINE_RUNNING;
	LWLockRelease(pipeline_shared->lock);
}

static const char *
pipeline_state_name(PipelineState state)
{
	switch (state)
	{
		case PIPELINE_FREE:
			return "free";
		case PIPELINE_STARTING:
			return "starting";
		case PIPELINE_RUNNING:
			return "running";
		case PIPELINE_ERROR:
			return "error";
		case PIPELINE_STOPPED:
			return "stopped";
		case PIPELINE_FAILED:
			return "failed";
	}
	return "unknown";
}

/* rows per second over the complete seconds of the last ten */
static double
slot_recent_rate(const PipelineSlot *slot, int64 now_second)
{
	int64		rows = 0;

	for (int i = 0; i < PIPELINE_RATE_SECONDS; i++)
		if (slot->rate_second[i] > now_second - PIPELINE_RATE_SECONDS &&
			slot->rate_second[i] < now_second)
			rows += slot->rate_rows[i];
	return (double) rows / (PIPELINE_RATE_SECONDS - 1);
}

#define PIPELINE_STATUS_COLS 21

static void
put_slot_rows(ReturnSetInfo *rsinfo, const PipelineSlot *slot,
			  TimestampTz now)
{
	Datum		values[PIPELINE_STATUS_COLS];
	bool		nulls[PIPELINE_STATUS_COLS];
	double		uptime_s = 0;
	int			nrows = Max(slot->npartitions, 1);

	if (slot->started_at != 0)
		uptime_s = (double) (now - slot->started_at) / USECS_PER_SEC;

	for (int p = 0; p < nrows; p++)
	{
		const PipelinePartitionStatus *part =
			slot->npartitions > 0 ? &slot->partitions[p] : NULL;

		memset(nulls, 0, sizeof(nulls));
		values[0] = CStringGetTextDatum(slot->name);
		values[1] = Int32GetDatum(slot->worker_index);
		values[2] = CStringGetTextDatum(pipeline_state_name(slot->state));
		values[3] = Int32GetDatum(slot->pid);
		nulls[3] = slot->pid == 0;
		if (part)
		{
			values[4] = Int32GetDatum(part->partition);
			values[5] = Int64GetDatum(part->committed);
			values[6] = Int64GetDatum(part->high);
			values[7] = Int64GetDatum(Max(part->high - part->committed, 0));
			nulls[6] = nulls[7] = part->high < 0;
		}
		else
			nulls[4] = nulls[5] = nulls[6] = nulls[7] = true;
		values[8] = Float8GetDatum(slot_recent_rate(slot, now / USECS_PER_SEC));
		values[9] = Float8GetDatum(uptime_s > 0 ? slot->rows / uptime_s : 0);
		values[10] = Int64GetDatum(slot->rows);
		values[11] = Int64GetDatum(slot->batches);
		values[12] = Int32GetDatum(slot->last_batch_ms);
		values[13] = Int32GetDatum(slot->last_latency_ms);
		nulls[12] = nulls[13] = slot->batches == 0;
		values[14] = Int64GetDatum(slot->dead_letters);
		values[15] = CStringGetTextDatum(slot->last_error);
		values[16] = TimestampTzGetDatum(slot->last_error_at);
		values[17] = CStringGetTextDatum(unpack_sql_state(slot->last_sqlstate));
		nulls[15] = nulls[16] = nulls[17] = slot->last_error_at == 0;
		/* restarts and backoff, the launcher's view of this worker */
		values[18] = Int32GetDatum(Max(slot->starts - 1, 0));
		values[19] = Int32GetDatum(slot->failures);
		values[20] = TimestampTzGetDatum(slot->retry_at);
		nulls[20] = slot->state != PIPELINE_FAILED || slot->retry_at == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

PG_FUNCTION_INFO_V1(streamkpi_pipeline_slots);

/*
 * streamkpi._pipeline_slots(): one row per worker and partition of this
 * database's pipelines, from shared memory.
 */
Datum
streamkpi_pipeline_slots(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz now = GetCurrentTimestamp();
	PipelineSlot *copy;
	int			ncopied = 0;

	streamkpi_require_preload("streamkpi.pipeline_status");
	InitMaterializedSRF(fcinfo, 0);

	/* copy under the lock, build rows outside it */
	copy = palloc(sizeof(PipelineSlot) * streamkpi_max_pipeline_workers);
	LWLockAcquire(pipeline_shared->lock, LW_SHARED);
	for (int i = 0; i < streamkpi_max_pipeline_workers; i++)
	{
		PipelineSlot *slot = &pipeline_shared->slots[i];

		if (slot->state != PIPELINE_FREE && slot->dboid == MyDatabaseId)
			copy[ncopied++] = *slot;
	}
	LWLockRelease(pipeline_shared->lock);

	for (int i = 0; i < ncopied; i++)
		put_slot_rows(rsinfo, &copy[i], now);

	return (Datum) 0;
}
