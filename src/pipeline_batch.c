/*-------------------------------------------------------------------------
 *
 * pipeline_batch.c
 *	  The batch a pipeline worker hands to the Kafka foreign scan (see
 *	  pipeline_batch.h): the worker sets it while its statement runs, the
 *	  scan reads its messages and records the ones it cannot decode.  Both
 *	  sides use this file; neither reaches into the other.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pipeline_batch.h"

PipelineBatch *pipeline_current_batch = NULL;

/* A message of the batch that did not decode, with its SQLSTATE and why. */
void
pipeline_batch_add_failure(PipelineBatch *batch, int msg_index, int sqlstate,
						   const char *message)
{
	MemoryContext old = MemoryContextSwitchTo(batch->cxt);
	PipelineFailure *f = palloc(sizeof(PipelineFailure));

	f->msg_index = msg_index;
	f->sqlstate = sqlstate;
	f->message = pstrdup(message);
	batch->decode_failures = lappend(batch->decode_failures, f);
	MemoryContextSwitchTo(old);
}
