/*-------------------------------------------------------------------------
 *
 * pipeline_worker.c
 *	  The "streamkpi pipeline" background worker: one per pipeline (and per
 *	  unit of parallelism).  Each batch is one transaction:
 *
 *	    lock the pipeline's row (FOR SHARE: a stop or alter waits for us)
 *	    run the statement over the batch, in a subtransaction
 *	      - a message that does not decode becomes a dead letter
 *	      - if a row makes the statement fail with a data error, split the
 *	        batch in halves and retry, until the failing message is alone;
 *	        it becomes a dead letter, its neighbours commit
 *	    store the next offsets and the dead letters
 *	    commit
 *
 *	  A crash before the commit loses nothing: the restarted worker resumes
 *	  from the stored offsets.  A crash after it duplicates nothing: the
 *	  offsets moved in the same transaction as the rows.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "fdw.h"
#include "kpi.h"
#include "pipeline.h"
#include "pipeline_batch.h"
#include "streamkpi.h"

/* How often an idle worker checks whether it was stopped or altered. */
#define IDLE_CHECK_MS 1000

typedef struct PipelineDef
{
	char		name[PIPELINE_NAME_LEN];
	Oid			owner;
	char	   *statement;
	char	   *search_path;
	Oid			source;
	int			batch_size;
	int			batch_ms;
	char	   *group_id;
	int			parallelism;
	TimestampTz updated_at;
} PipelineDef;

/* What the launcher passes in bgw_extra. */
typedef struct PipelineWorkerArgs
{
	Oid			dboid;
	int			worker_index;
	char		name[PIPELINE_NAME_LEN];
} PipelineWorkerArgs;

static PipelineSlot *my_slot = NULL;
static bool clean_exit = false;

/*
 * A pipeline runs with its owner's rights, so it cannot run once that role
 * is dropped.  Roles have no dependency on our rows (pg_shdepend holds only
 * catalog objects), so DROP ROLE succeeds, and this is where it shows: at
 * the worker's start and batches, and when the statement is redefined.
 */
void
pipeline_require_owner(const char *name, Oid owner)
{
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the owner role of pipeline \"%s\" was dropped", name),
				 errdetail("A pipeline runs with its owner's rights; role %u no longer exists.",
						   owner),
				 errhint("Drop the pipeline with streamkpi.drop_pipeline() and create it again as another role.")));
}

/* ---- the slot ---- */

static void
slot_detach(int code, Datum arg)
{
	if (my_slot == NULL)
		return;
	LWLockAcquire(pipeline_shared->lock, LW_EXCLUSIVE);
	if (my_slot->pid == MyProcPid)
	{
		my_slot->pid = 0;
		if (clean_exit)
		{
			my_slot->state = PIPELINE_STOPPED;
			my_slot->failures = 0;
		}
		else
		{
			/* the launcher retries after 1, 2, 4 ... 60 seconds */
			my_slot->state = PIPELINE_FAILED;
			my_slot->failures++;
			my_slot->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															1000 * Min(1 << Min(my_slot->failures - 1, 6), 60));
		}
	}
	LWLockRelease(pipeline_shared->lock);
}

static bool
slot_attach(const PipelineWorkerArgs *args)
{
	PipelineSlot *slot;

	LWLockAcquire(pipeline_shared->lock, LW_EXCLUSIVE);
	slot = pipeline_slot_acquire(args->name, args->worker_index, args->dboid);
	if (slot == NULL || (slot->pid != 0 && slot->pid != MyProcPid))
	{
		LWLockRelease(pipeline_shared->lock);
		return false;
	}
	slot->pid = MyProcPid;
	slot->starts++;
	slot->state = PIPELINE_STARTING;
	slot->started_at = GetCurrentTimestamp();
	slot->rows = slot->batches = slot->dead_letters = 0;
	memset(slot->rate_rows, 0, sizeof(slot->rate_rows));
	memset(slot->rate_second, 0, sizeof(slot->rate_second));
	LWLockRelease(pipeline_shared->lock);
	my_slot = slot;
	before_shmem_exit(slot_detach, (Datum) 0);
	return true;
}

static void
slot_set_state(PipelineState state)
{
	LWLockAcquire(pipeline_shared->lock, LW_EXCLUSIVE);
	my_slot->state = state;
	LWLockRelease(pipeline_shared->lock);
}

static void
slot_publish_partitions(PipelineConsumer *consumer)
{
	int32		parts[PIPELINE_MAX_PARTITIONS];
	int64		next[PIPELINE_MAX_PARTITIONS];
	int64		high[PIPELINE_MAX_PARTITIONS];
	int			n = pipeline_consumer_partitions(consumer, parts, next, high,
												 PIPELINE_MAX_PARTITIONS);

	LWLockAcquire(pipeline_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		my_slot->partitions[i].partition = parts[i];
		my_slot->partitions[i].committed = next[i];
		my_slot->partitions[i].high = high[i];
	}
	my_slot->npartitions = n;
	LWLockRelease(pipeline_shared->lock);
}

/* ---- the definition ---- */

/*
 * Read the pipeline's row inside the current transaction; with lock, hold
 * a share lock on it until commit.  False when it is gone or disabled.
 */
static bool
read_definition(const char *name, PipelineDef *def, bool lock,
				MemoryContext cxt)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(name)};
	bool		isnull;
	TupleDesc	desc;
	HeapTuple	tup;
	MemoryContext old;
	int			rc;

	rc = SPI_execute_with_args(lock ?
							   "SELECT owner, statement, source, batch_size, batch_ms, group_id, "
							   "parallelism, updated_at, search_path FROM streamkpi.pipelines "
							   "WHERE name OPERATOR(pg_catalog.=) $1 AND enabled FOR SHARE" :
							   "SELECT owner, statement, source, batch_size, batch_ms, group_id, "
							   "parallelism, updated_at, search_path FROM streamkpi.pipelines "
							   "WHERE name OPERATOR(pg_catalog.=) $1 AND enabled",
							   1, argtypes, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read pipeline \"%s\": SPI result %d", name, rc);
	if (SPI_processed == 0)
		return false;

	desc = SPI_tuptable->tupdesc;
	tup = SPI_tuptable->vals[0];
	old = MemoryContextSwitchTo(cxt);
	strlcpy(def->name, name, PIPELINE_NAME_LEN);
	def->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
	def->statement = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	def->source = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
	def->batch_size = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
	def->batch_ms = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
	def->group_id = SPI_getvalue(tup, desc, 6);
	def->parallelism = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
	def->updated_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 8, &isnull));
	def->search_path = TextDatumGetCString(SPI_getbinval(tup, desc, 9, &isnull));
	MemoryContextSwitchTo(old);
	return true;
}

static void
begin_transaction(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
end_transaction(bool commit)
{
	SPI_finish();
	PopActiveSnapshot();
	if (commit)
		CommitTransactionCommand();
	else
		AbortCurrentTransaction();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Is the definition the worker runs still the current, enabled one?  Its
 * owner dropped is an error: the worker stops and says so.
 */
static bool
definition_current(const PipelineDef *def, bool lock)
{
	PipelineDef now;

	if (!read_definition(def->name, &now, lock, CurrentMemoryContext))
		return false;
	pipeline_require_owner(def->name, def->owner);
	return now.updated_at == def->updated_at;
}

/* In a transaction of its own: is the definition still the current one? */
static bool
still_wanted(void *arg)
{
	const PipelineDef *def = (const PipelineDef *) arg;
	bool		current;

	begin_transaction();
	current = definition_current(def, false);
	end_transaction(true);
	return current;
}

/* While the consumer waits for the broker: show why, and notice a stop. */
typedef struct StartingWorker
{
	const PipelineDef *def;
	PipelineConsumer *consumer;
} StartingWorker;

static bool
still_wanted_starting(void *arg)
{
	StartingWorker *w = (StartingWorker *) arg;
	int			sqlstate;
	const char *kafka_error = pipeline_consumer_error(w->consumer, &sqlstate);

	if (kafka_error)
	{
		pipeline_slot_set_error(my_slot, sqlstate, kafka_error);
		slot_set_state(PIPELINE_ERROR);
	}
	return still_wanted((void *) w->def);
}

/* ---- where user-defined code runs ---- */

/*
 * Everything user-defined (the statement's functions, the foreign table's
 * types and server options, planning) runs as the pipeline's owner, under
 * the search_path stored with the statement, in a GUC nest level: settings
 * the statement changes, even with set_config(..., false), are rolled back
 * when the scope is left.  SECURITY_LOCAL_USERID_CHANGE keeps the owner's
 * code from SET ROLE or SET SESSION AUTHORIZATION back to the worker's
 * superuser, as for a SECURITY DEFINER function.  An error inside needs no
 * leaving: the (sub)transaction's abort restores user and settings.
 */
typedef struct OwnerScope
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} OwnerScope;

static void
owner_scope_enter(const PipelineDef *def, OwnerScope *scope)
{
	GetUserIdAndSecContext(&scope->save_userid, &scope->save_sec_context);
	SetUserIdAndSecContext(def->owner,
						   scope->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	scope->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", def->search_path, PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

static void
owner_scope_leave(OwnerScope *scope)
{
	AtEOXact_GUC(false, scope->save_nestlevel);
	SetUserIdAndSecContext(scope->save_userid, scope->save_sec_context);
}

/* ---- running the statement over a batch ---- */

/*
 * Errors caused by one row's data, which splitting a batch can isolate.
 * A cardinality violation is usually two versions of one key in a batch of
 * an upsert pipeline (ON CONFLICT DO UPDATE cannot touch a row twice):
 * the halves run in offset order, so the newer version wins, as it would
 * have message by message.
 */
static bool
is_row_error(int sqlstate)
{
	char	   *code = unpack_sql_state(sqlstate);

	return strncmp(code, "21", 2) == 0 ||	/* cardinality violation */
		strncmp(code, "22", 2) == 0 ||	/* data exception */
		strncmp(code, "23", 2) == 0 ||	/* integrity constraint violation */
		strncmp(code, "P0", 2) == 0;	/* raised by a trigger or function */
}

typedef struct BatchRun
{
	PipelineBatch *batch;
	SPIPlanPtr	plan;
	int64		rows;
	List	   *row_failures;	/* PipelineFailure *, statement errors */
} BatchRun;

/*
 * Run the statement over msgs[first .. last) in a subtransaction.  On a row
 * error, split; a single failing message becomes a dead letter.  Any other
 * error is re-thrown: the batch is not done and will be retried whole.
 */
static void
run_range(BatchRun *run, int first, int last)
{
	PipelineBatch *batch = run->batch;
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	int			nfailures = list_length(batch->decode_failures);
	ErrorData  *volatile edata = NULL;

	CHECK_FOR_INTERRUPTS();
	if (first >= last)
		return;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);

	PG_TRY();
	{
		int			rc;

		batch->first = first;
		batch->last = last;
		rc = SPI_execute_plan(run->plan, NULL, NULL, false, 0);
		if (rc < 0)
			elog(ERROR, "pipeline statement failed: SPI result %d", rc);
		run->rows += SPI_processed;
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;

		/*
		 * No return here: it would leave PG_exception_stack pointing into
		 * this frame, and an error in the next range would jump to it.
		 */
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_END_TRY();
	if (edata == NULL)
		return;

	/* what the failed attempt decoded is decoded again by the retries */
	batch->decode_failures = list_truncate(batch->decode_failures, nfailures);

	if (!is_row_error(edata->sqlerrcode))
		ReThrowError(edata);

	if (last - first == 1)
	{
		PipelineFailure *f = palloc(sizeof(PipelineFailure));

		f->msg_index = first;
		f->sqlstate = edata->sqlerrcode;
		f->message = pstrdup(edata->message);
		run->row_failures = lappend(run->row_failures, f);
		return;
	}
	run_range(run, first, first + (last - first) / 2);
	run_range(run, first + (last - first) / 2, last);
}

static Datum
bytea_datum(const void *data, size_t len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	if (len > 0)
		memcpy(VARDATA(b), data, len);
	return PointerGetDatum(b);
}

/* Insert the batch's dead letters: decode failures and row failures. */
static void
store_dead_letters(const PipelineDef *def, const char *topic,
				   PipelineBatch *batch, List *failures)
{
	int			n = list_length(failures);
	Datum	   *parts = palloc(sizeof(Datum) * n);
	Datum	   *offsets = palloc(sizeof(Datum) * n);
	Datum	   *keys = palloc(sizeof(Datum) * n);
	bool	   *key_nulls = palloc(sizeof(bool) * n);
	Datum	   *payloads = palloc(sizeof(Datum) * n);
	bool	   *payload_nulls = palloc(sizeof(bool) * n);
	Datum	   *errors = palloc(sizeof(Datum) * n);
	Datum	   *states = palloc(sizeof(Datum) * n);
	int			dims[1] = {n};
	int			lbs[1] = {1};
	Oid			argtypes[8] = {TEXTOID, TEXTOID, INT4ARRAYOID, INT8ARRAYOID,
	BYTEAARRAYOID, BYTEAARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		args[8];
	ListCell   *lc;
	int			i = 0;

	if (n == 0)
		return;
	foreach(lc, failures)
	{
		PipelineFailure *f = lfirst(lc);
		rd_kafka_message_t *m = batch->msgs[f->msg_index];

		parts[i] = Int32GetDatum(m->partition);
		offsets[i] = Int64GetDatum(m->offset);
		key_nulls[i] = m->key == NULL;
		keys[i] = m->key ? bytea_datum(m->key, m->key_len) : (Datum) 0;
		payload_nulls[i] = m->payload == NULL;
		payloads[i] = m->payload ? bytea_datum(m->payload, m->len) : (Datum) 0;
		errors[i] = CStringGetTextDatum(f->message);
		states[i] = CStringGetTextDatum(unpack_sql_state(f->sqlstate));
		i++;
	}
	args[0] = CStringGetTextDatum(def->name);
	args[1] = CStringGetTextDatum(topic);
	args[2] = PointerGetDatum(construct_array(parts, n, INT4OID, 4, true, TYPALIGN_INT));
	args[3] = PointerGetDatum(construct_array(offsets, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[4] = PointerGetDatum(construct_md_array(keys, key_nulls, 1, dims, lbs, BYTEAOID, -1, false, TYPALIGN_INT));
	args[5] = PointerGetDatum(construct_md_array(payloads, payload_nulls, 1, dims, lbs, BYTEAOID, -1, false, TYPALIGN_INT));
	args[6] = PointerGetDatum(construct_array(errors, n, TEXTOID, -1, false, TYPALIGN_INT));
	args[7] = PointerGetDatum(construct_array(states, n, TEXTOID, -1, false, TYPALIGN_INT));

	if (SPI_execute_with_args("INSERT INTO streamkpi.dead_letters "
							  "(pipeline, topic, partition, \"offset\", key, payload, error, sqlstate) "
							  "SELECT $1, $2, u.* FROM ROWS FROM (pg_catalog.unnest($3), "
							  "pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), "
							  "pg_catalog.unnest($7), pg_catalog.unnest($8)) AS u",
							  8, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not store dead letters");
}

/*
 * One log line per batch with dead letters, naming the first: a flood of
 * bad messages stays readable.  Called after the commit, so failures must
 * live in the batch's context.
 */
static void
log_dead_letters(const PipelineDef *def, const char *topic,
				 PipelineBatch *batch, int nfailures, int first_index,
				 int first_sqlstate, const char *first_message)
{
	rd_kafka_message_t *m;

	if (nfailures == 0)
		return;
	m = batch->msgs[first_index];
	ereport(LOG,
			(errmsg("pipeline \"%s\": %d %s of Kafka topic \"%s\" went to streamkpi.dead_letters, the first at partition %d offset %lld: %s: %s",
					def->name, nfailures, nfailures == 1 ? "message" : "messages",
					topic, (int) m->partition, (long long) m->offset,
					unpack_sql_state(first_sqlstate), first_message)));
}

/* Store, per partition in the batch, the offset after its last message. */
static void
store_offsets(const PipelineDef *def, const char *topic, PipelineBatch *batch)
{
	Datum	   *parts = palloc(sizeof(Datum) * batch->nmsgs);
	Datum	   *next = palloc(sizeof(Datum) * batch->nmsgs);
	Oid			argtypes[4] = {TEXTOID, TEXTOID, INT4ARRAYOID, INT8ARRAYOID};
	Datum		args[4];
	int			n = 0;

	for (int i = 0; i < batch->nmsgs; i++)
	{
		rd_kafka_message_t *m = batch->msgs[i];
		int			j;

		for (j = 0; j < n; j++)
			if (DatumGetInt32(parts[j]) == m->partition)
				break;
		if (j == n)
		{
			parts[n] = Int32GetDatum(m->partition);
			next[n++] = Int64GetDatum(m->offset + 1);
		}
		else if (DatumGetInt64(next[j]) < m->offset + 1)
			next[j] = Int64GetDatum(m->offset + 1);
	}
	args[0] = CStringGetTextDatum(def->name);
	args[1] = CStringGetTextDatum(topic);
	args[2] = PointerGetDatum(construct_array(parts, n, INT4OID, 4, true, TYPALIGN_INT));
	args[3] = PointerGetDatum(construct_array(next, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	if (SPI_execute_with_args("INSERT INTO streamkpi.pipeline_offsets AS o "
							  "(pipeline, topic, partition, next_offset) "
							  "SELECT $1, $2, u.p, u.n "
							  "FROM ROWS FROM (pg_catalog.unnest($3), pg_catalog.unnest($4)) AS u(p, n) "
							  "ON CONFLICT (pipeline, topic, partition) DO UPDATE "
							  "SET next_offset = excluded.next_offset, updated_at = pg_catalog.now()",
							  4, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not store pipeline offsets");
}

/* Oldest Kafka timestamp in the batch, in ms since the epoch; -1 if none. */
static int64
batch_oldest_timestamp(PipelineBatch *batch)
{
	int64		oldest = -1;

	for (int i = 0; i < batch->nmsgs; i++)
	{
		rd_kafka_timestamp_type_t type;
		int64		ts = rd_kafka_message_timestamp(batch->msgs[i], &type);

		if (ts >= 0 && (oldest < 0 || ts < oldest))
			oldest = ts;
	}
	return oldest;
}

/*
 * Process one filled batch in one transaction.  False when the pipeline was
 * stopped, dropped or altered: then nothing of the batch is committed.
 */
static bool
process_batch(const PipelineDef *def, const char *topic, SPIPlanPtr plan,
			  PipelineBatch *batch, PipelineConsumer *consumer)
{
	TimestampTz started = GetCurrentTimestamp();
	BatchRun	run = {0};
	OwnerScope	scope;
	List	   *failures;
	int			nfailures;
	int			first_index = 0;
	int			first_sqlstate = 0;
	char	   *first_message = NULL;
	int64		oldest_ms;
	int64		latency_ms = 0;
	long		secs;
	int			usecs;

	begin_transaction();
	pgstat_report_activity(STATE_RUNNING, def->statement);
	if (!definition_current(def, true))
	{
		end_transaction(false);
		return false;
	}

	run.batch = batch;
	run.plan = plan;
	batch->decode_failures = NIL;
	pipeline_current_batch = batch;
	owner_scope_enter(def, &scope);
	PG_TRY();
	{
		run_range(&run, 0, batch->nmsgs);
	}
	PG_FINALLY();
	{
		pipeline_current_batch = NULL;
	}
	PG_END_TRY();
	owner_scope_leave(&scope);

	failures = list_concat_copy(batch->decode_failures, run.row_failures);
	nfailures = list_length(failures);
	store_dead_letters(def, topic, batch, failures);
	store_offsets(def, topic, batch);
	if (nfailures > 0)
	{
		PipelineFailure *first = linitial(failures);

		first_index = first->msg_index;
		first_sqlstate = first->sqlstate;
		first_message = MemoryContextStrdup(batch->cxt, first->message);
	}
	end_transaction(true);
	log_dead_letters(def, topic, batch, nfailures, first_index, first_sqlstate,
					 first_message);

	pipeline_consumer_committed(consumer, batch);
	oldest_ms = batch_oldest_timestamp(batch);
	if (oldest_ms >= 0)
		latency_ms = (GetCurrentTimestamp() - (oldest_ms * 1000 -
											  ((POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY))) / 1000;
	TimestampDifference(started, GetCurrentTimestamp(), &secs, &usecs);
	pipeline_slot_record_batch(my_slot, run.rows, nfailures,
							   (int32) (secs * 1000 + usecs / 1000),
							   (int32) Max(latency_ms, 0));
	slot_publish_partitions(consumer);
	MemoryContextReset(batch->cxt);
	batch->decode_failures = NIL;
	return true;
}

/* ---- Kafka errors: shown in pipeline_status, logged when they start and end ---- */

static bool kafka_failing = false;

static void
note_kafka_error(const PipelineDef *def, const char *topic,
				 PipelineConsumer *consumer)
{
	int			sqlstate;
	const char *kafka_error = pipeline_consumer_error(consumer, &sqlstate);
	char	   *where;

	if (kafka_error == NULL)
		return;
	pipeline_slot_set_error(my_slot, sqlstate, kafka_error);
	slot_set_state(PIPELINE_ERROR);
	if (kafka_failing)
		return;
	kafka_failing = true;
	where = pipeline_consumer_positions(consumer);
	ereport(WARNING,
			(errcode(sqlstate),
			 errmsg("pipeline \"%s\" cannot consume Kafka topic \"%s\" at %s",
					def->name, topic, where),
			 errdetail("%s", kafka_error),
			 errhint("The worker keeps trying; pipeline_status shows the last error.")));
	pfree(where);
}

static void
note_kafka_recovery(const PipelineDef *def, const char *topic,
					PipelineConsumer *consumer)
{
	char	   *where;

	if (!kafka_failing)
		return;
	kafka_failing = false;
	where = pipeline_consumer_positions(consumer);
	ereport(LOG,
			(errmsg("pipeline \"%s\" consumes Kafka topic \"%s\" again at %s",
					def->name, topic, where)));
	pfree(where);
}

/*
 * After a batch of filled messages (0: none came): when a backlog (full
 * batches) has just drained, the KPI worker's next round need not wait for
 * its nap, so a burst's last events reach the KPIs sooner.  Not after every
 * batch at a steady rate below capacity: that would multiply the rounds
 * and their fixed cost.
 */
static void
note_backlog(bool *backlog, int filled, int batch_size)
{
	if (*backlog && filled < batch_size)
		kpi_worker_wake();
	*backlog = filled == batch_size;
}

/* ---- setup and the main loop ---- */

static void
load_offsets(const PipelineDef *def, const char *topic,
			 PipelineConsumer *consumer)
{
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		args[2] = {CStringGetTextDatum(def->name), CStringGetTextDatum(topic)};

	if (SPI_execute_with_args("SELECT partition, next_offset FROM streamkpi.pipeline_offsets "
							  "WHERE pipeline OPERATOR(pg_catalog.=) $1 "
							  "AND topic OPERATOR(pg_catalog.=) $2",
							  2, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read pipeline offsets");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int32		partition = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
															SPI_tuptable->tupdesc, 1, &isnull));
		int64		next = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
													   SPI_tuptable->tupdesc, 2, &isnull));

		pipeline_consumer_set_offset(consumer, partition, next);
	}
}

static void
run_pipeline(const PipelineWorkerArgs *args)
{
	MemoryContext worker_cxt = AllocSetContextCreate(TopMemoryContext,
													 "streamkpi pipeline",
													 ALLOCSET_DEFAULT_SIZES);
	PipelineDef def;
	KafkaTable *table;
	PipelineConsumer *consumer;
	PipelineBatch batch = {0};
	SPIPlanPtr	plan;
	char	   *topic;
	OwnerScope	scope;
	StartingWorker starting;
	TimestampTz last_check = GetCurrentTimestamp();
	bool		backlog;		/* the last batch was full */

	begin_transaction();
	if (!read_definition(args->name, &def, false, worker_cxt))
	{
		end_transaction(true);
		clean_exit = true;
		return;
	}

	pipeline_require_owner(def.name, def.owner);

	/* the table, its server's properties and the plan, as the owner sees them */
	owner_scope_enter(&def, &scope);
	{
		MemoryContext old = MemoryContextSwitchTo(worker_cxt);

		table = kafka_table_load(def.source, true);
		topic = pstrdup(table->topic);
		MemoryContextSwitchTo(old);
	}
	plan = SPI_prepare(def.statement, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "could not prepare the statement of pipeline \"%s\": %s",
			 def.name, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	owner_scope_leave(&scope);

	consumer = pipeline_consumer_create(def.name, topic, table->props,
										def.group_id, args->worker_index,
										def.parallelism, worker_cxt);
	load_offsets(&def, topic, consumer);
	end_transaction(true);

	starting.def = &def;
	starting.consumer = consumer;
	if (!pipeline_consumer_start(consumer, still_wanted_starting, &starting))
	{
		clean_exit = true;
		MemoryContextDelete(worker_cxt);
		return;
	}
	slot_set_state(PIPELINE_RUNNING);
	slot_publish_partitions(consumer);
	/* after a crash or a kill, where it resumed */
	ereport(LOG,
			(errmsg("pipeline \"%s\" worker %d consumes Kafka topic \"%s\" from %s",
					def.name, args->worker_index, topic,
					pipeline_consumer_positions(consumer))));

	batch.relid = def.source;
	batch.msgs = MemoryContextAlloc(worker_cxt, sizeof(rd_kafka_message_t *) * def.batch_size);
	batch.cxt = AllocSetContextCreate(worker_cxt, "streamkpi pipeline batch",
									  ALLOCSET_DEFAULT_SIZES);
	backlog = false;

	for (;;)
	{
		int			filled;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		filled = pipeline_consumer_fill(consumer, &batch, def.batch_size,
										def.batch_ms);
		if (filled > 0)
		{
			note_kafka_recovery(&def, topic, consumer);
			if (!process_batch(&def, topic, plan, &batch, consumer))
				break;
			pipeline_consumer_release(consumer, &batch);
			note_backlog(&backlog, filled, def.batch_size);
			last_check = GetCurrentTimestamp();
			continue;
		}
		note_backlog(&backlog, 0, def.batch_size);

		note_kafka_error(&def, topic, consumer);
		slot_publish_partitions(consumer);

		/* idle: notice a stop, drop or alter without waiting for data */
		if (TimestampDifferenceExceeds(last_check, GetCurrentTimestamp(), IDLE_CHECK_MS))
		{
			if (!still_wanted(&def))
				break;
			last_check = GetCurrentTimestamp();
		}
	}

	pipeline_consumer_release(consumer, &batch);
	clean_exit = true;
	/* closes the consumer, so another server in the group takes over */
	MemoryContextDelete(worker_cxt);
}

void
StreamkpiPipelineMain(Datum main_arg)
{
	PipelineWorkerArgs args;

	memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));

	/*
	 * As the bootstrap superuser, to read the pipeline whatever its owner;
	 * the owner may be a role that cannot log in.  User-defined code runs
	 * only in an owner scope; the worker's own queries (definition, offsets,
	 * dead letters) are schema-qualified and run under the worker's path.
	 */
	streamkpi_worker_connect(NULL, args.dboid,
							 psprintf("streamkpi pipeline %s", args.name));

	if (!slot_attach(&args))
	{
		ereport(LOG,
				(errmsg("streamkpi pipeline \"%s\" worker %d is already running or no slot is free",
						args.name, args.worker_index),
				 errhint("Raise streamkpi.max_pipeline_workers if pipelines need more workers.")));
		proc_exit(0);
	}

	PG_TRY();
	{
		run_pipeline(&args);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* keep the reason where pipeline_status shows it, then exit 1 */
		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		pipeline_slot_set_error(my_slot, edata->sqlerrcode, edata->message);
		PG_RE_THROW();
	}
	PG_END_TRY();

	proc_exit(0);
}

/* Size of what the launcher packs into bgw_extra. */
StaticAssertDecl(sizeof(PipelineWorkerArgs) <= BGW_EXTRALEN,
				 "pipeline worker arguments must fit in bgw_extra");

/* Fill a BackgroundWorker for pipeline name, worker worker_index. */
void
pipeline_worker_prepare(BackgroundWorker *worker, const char *name,
						int worker_index, Oid dboid)
{
	PipelineWorkerArgs args;

	memset(&args, 0, sizeof(args));
	args.dboid = dboid;
	args.worker_index = worker_index;
	strlcpy(args.name, name, PIPELINE_NAME_LEN);

	streamkpi_worker_fill(worker, "StreamkpiPipelineMain", "streamkpi pipeline",
						  BGW_NEVER_RESTART, (Datum) 0);
	snprintf(worker->bgw_name, BGW_MAXLEN, "streamkpi pipeline %s/%d", name, worker_index);
	memcpy(worker->bgw_extra, &args, sizeof(args));
}
