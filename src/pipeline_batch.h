/*-------------------------------------------------------------------------
 *
 * pipeline_batch.h
 *	  The batch a pipeline worker hands to the Kafka foreign scan, and the
 *	  long-lived consumer that fills it.
 *
 *	  While a pipeline statement runs, a scan of the batch's foreign table
 *	  reads msgs[first .. last) instead of contacting the broker, and puts
 *	  messages it cannot decode on decode_failures instead of failing: they
 *	  become dead letters, and the rest of the batch goes on.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_PIPELINE_BATCH_H
#define STREAMKPI_PIPELINE_BATCH_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "nodes/pg_list.h"
#include "utils/palloc.h"

/* A message that did not become a row, and why. */
typedef struct PipelineFailure
{
	int			msg_index;		/* into PipelineBatch.msgs */
	int			sqlstate;
	char	   *message;
} PipelineFailure;

typedef struct PipelineBatch
{
	Oid			relid;			/* the foreign table this batch is for */
	rd_kafka_message_t **msgs;
	int			nmsgs;
	int			first;			/* a statement run reads msgs[first .. last) */
	int			last;
	List	   *decode_failures;	/* PipelineFailure *, from the scan */
	MemoryContext cxt;			/* where decode_failures live */
} PipelineBatch;

/* set by the pipeline worker while its statement runs; NULL otherwise */
extern PGDLLIMPORT PipelineBatch *pipeline_current_batch;

/* in fdw_scan.c (batch mode) and pipeline_worker.c */
extern void pipeline_batch_add_failure(PipelineBatch *batch, int msg_index,
									   int sqlstate, const char *message);

/* in pipeline_consumer.c */
typedef struct PipelineConsumer PipelineConsumer;

extern PipelineConsumer *pipeline_consumer_create(const char *pipeline,
												  const char *topic,
												  List *props,
												  const char *group_id,
												  int worker_index,
												  int parallelism,
												  MemoryContext cxt);
extern void pipeline_consumer_set_offset(PipelineConsumer *c, int32 partition,
										 int64 next_offset);
/* asked between attempts while waiting for the broker */
typedef bool (*PipelineStillWanted) (void *arg);

extern bool pipeline_consumer_start(PipelineConsumer *c,
									PipelineStillWanted still_wanted,
									void *arg);
extern int	pipeline_consumer_fill(PipelineConsumer *c, PipelineBatch *batch,
								   int batch_size, int batch_ms);
extern void pipeline_consumer_release(PipelineConsumer *c, PipelineBatch *batch);
extern void pipeline_consumer_committed(PipelineConsumer *c,
										PipelineBatch *batch);
extern int	pipeline_consumer_partitions(PipelineConsumer *c, int32 *parts,
										 int64 *next, int64 *high, int max);
extern const char *pipeline_consumer_error(PipelineConsumer *c, int *sqlstate);
extern char *pipeline_consumer_positions(PipelineConsumer *c);

#endif							/* STREAMKPI_PIPELINE_BATCH_H */
