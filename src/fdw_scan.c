/*-------------------------------------------------------------------------
 *
 * fdw_scan.c
 *	  Scanning a Kafka topic: every selected partition from its start
 *	  offset to the high watermark read when the scan starts, so a scan
 *	  always ends, by offsets and never by a timeout.  Messages are taken
 *	  from librdkafka in batches and decoded straight into the slot.
 *
 *	  A parallel scan shares the partitions out: the leader computes the
 *	  ranges once and puts them in shared memory, and every participant
 *	  takes the next unread range from an atomic counter, so that each
 *	  partition is read by exactly one of them.  A pipeline batch is never
 *	  read in parallel: its messages are in the leader's memory only.
 *
 *	  Also the SQL functions kafka_watermarks() and kafka_topics(), and the
 *	  interface that lets a pipeline worker choose the exact offsets a scan
 *	  reads.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/parallel.h"
#include "access/stratnum.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "foreign/foreign.h"
#include "funcapi.h"
#include "nodes/nodeFuncs.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "mb/pg_wchar.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "fdw.h"
#include "pipeline_batch.h"

/* shared by the participants of a parallel scan, in its DSM segment */
typedef struct KafkaParallelScan
{
	pg_atomic_uint32 next;		/* the next range to hand out */
	bool		leader_only;	/* pipeline mode: the leader reads alone */
	int			queue_kb;		/* prefetch per partition of a participant */
	int			capacity;		/* room in ranges[] */
	int			nranges;
	KafkaRange	ranges[FLEXIBLE_ARRAY_MEMBER];
} KafkaParallelScan;

typedef struct KafkaScanState
{
	KafkaTable *table;
	KafkaDecoder *dec;
	KafkaHandle *h;
	bool		own_handle;
	KafkaBadMessageHook hook;
	MemoryContext scan_cxt;		/* owns the handle */
	MemoryContext tuple_cxt;	/* reset for every message */

	List	   *kinds;
	List	   *strategies;
	List	   *exprstates;
	ExprContext *econtext;

	bool		started;
	int			batch_pos;		/* pipeline batch mode: next message */
	bool		header_done;
	int32		npartitions;	/* of the topic, 0 until known */
	int64	   *low;			/* watermarks by partition, at first start */
	int64	   *high;
	int			nranges;		/* what the whole scan reads */
	KafkaRange *ranges;
	int			nact;			/* what this participant reads now */
	KafkaRange *act;
	bool	   *done;
	int			nremaining;
	int		   *range_of;		/* partition -> act index, -1 none */
	int32		max_partition;
	KafkaParallelScan *pscan;	/* NULL unless parallel */
	int			pcapacity;		/* ranges the DSM segment has room for */
	int			queue_kb;		/* prefetch per partition of our handle */

	/* where we are, for error context */
	int32		cur_partition;
	int64		cur_offset;
	ErrorContextCallback errcb;

	int64		nrows;
	int64		nerrors;
} KafkaScanState;

/* set by a pipeline worker, see fdw.h */
static Oid	override_relid = InvalidOid;
static List *override_ranges = NIL;
static KafkaHandle *override_handle = NULL;
static KafkaBadMessageHook override_hook = NULL;
static List *last_ranges = NIL; /* in TopMemoryContext */

void
kafka_scan_set_ranges(Oid relid, List *ranges, KafkaHandle *h,
					  KafkaBadMessageHook hook)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	ListCell   *lc;

	kafka_scan_clear_ranges();
	override_relid = relid;
	foreach(lc, ranges)
	{
		KafkaRange *r = palloc(sizeof(KafkaRange));

		*r = *(KafkaRange *) lfirst(lc);
		override_ranges = lappend(override_ranges, r);
	}
	override_handle = h;
	override_hook = hook;
	MemoryContextSwitchTo(old);
}

void
kafka_scan_clear_ranges(void)
{
	list_free_deep(override_ranges);
	override_ranges = NIL;
	override_relid = InvalidOid;
	override_handle = NULL;
	override_hook = NULL;
}

List *
kafka_scan_last_ranges(void)
{
	List	   *result = NIL;
	ListCell   *lc;

	foreach(lc, last_ranges)
	{
		KafkaRange *r = palloc(sizeof(KafkaRange));

		*r = *(KafkaRange *) lfirst(lc);
		result = lappend(result, r);
	}
	return result;
}

static void
remember_ranges(KafkaScanState *st)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	list_free_deep(last_ranges);
	last_ranges = NIL;
	for (int i = 0; i < st->nranges; i++)
	{
		KafkaRange *r = palloc(sizeof(KafkaRange));

		*r = st->ranges[i];
		last_ranges = lappend(last_ranges, r);
	}
	MemoryContextSwitchTo(old);
}

static void
scan_error_context(void *arg)
{
	KafkaScanState *st = (KafkaScanState *) arg;

	if (st->cur_partition >= 0)
		kafka_errcontext_location(st->table->topic, st->cur_partition,
								  st->cur_offset);
	else
		kafka_errcontext_location(st->table->topic, -1, -1);
}

static void
kafkaBeginForeignScan(ForeignScanState *node, int eflags)
{
	ForeignScan *plan = (ForeignScan *) node->ss.ps.plan;
	EState	   *estate = node->ss.ps.state;
	KafkaScanState *st;
	MemoryContext old;

	st = palloc0(sizeof(KafkaScanState));
	node->fdw_state = st;
	st->table = kafka_table_load(RelationGetRelid(node->ss.ss_currentRelation), true);
	st->cur_partition = -1;
	st->cur_offset = -1;
	if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
		return;

	st->kinds = linitial(plan->fdw_private);
	st->strategies = lsecond(plan->fdw_private);
	st->exprstates = ExecInitExprList(plan->fdw_exprs, (PlanState *) node);
	st->econtext = node->ss.ps.ps_ExprContext;
	st->scan_cxt = AllocSetContextCreate(estate->es_query_cxt,
										 "streamkpi kafka scan",
										 ALLOCSET_DEFAULT_SIZES);
	st->tuple_cxt = AllocSetContextCreate(estate->es_query_cxt,
										  "streamkpi kafka tuple",
										  ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(st->scan_cxt);
	st->dec = kafka_decoder_create(st->table);
	MemoryContextSwitchTo(old);
}

/* pipeline mode: a pipeline worker chooses what the scan reads */
static bool
pipeline_mode(void)
{
	return pipeline_current_batch != NULL || OidIsValid(override_relid);
}

/* the scan's own consumer, or the pipeline worker's */
static void
ensure_handle(KafkaScanState *st, int queue_kb)
{
	KafkaTable *t = st->table;
	bool		use_override = OidIsValid(override_relid) && override_relid == t->relid;

	if (st->h != NULL)
		return;
	if (use_override && override_handle)
		st->h = override_handle;
	else
	{
		st->h = kafka_handle_create_ex(RD_KAFKA_CONSUMER, t->props, t->topic,
									   queue_kb, st->scan_cxt);
		st->own_handle = true;
		st->queue_kb = queue_kb;
	}
	st->hook = use_override ? override_hook : NULL;
}

/*
 * Our consumer again, with a shallower prefetch, unless the server or user
 * mapping sets it.  Only before consuming: that is when the number of
 * partitions read at once is known.  Never deeper, so that rescans do not
 * reconnect.
 */
static void
fit_handle(KafkaScanState *st, int queue_kb)
{
	KafkaTable *t = st->table;

	if (!st->own_handle || st->h == NULL || queue_kb >= st->queue_kb ||
		kafka_props_set(t->props, "queued.max.messages.kbytes"))
		return;
	kafka_handle_destroy(st->h);
	st->h = kafka_handle_create_ex(RD_KAFKA_CONSUMER, t->props, t->topic,
								   queue_kb, st->scan_cxt);
	st->queue_kb = queue_kb;
}

/* the pipeline worker's ranges, the empty ones left out */
static int
override_ranges_copy(KafkaScanState *st)
{
	ListCell   *lc;
	int			n = 0;

	st->ranges = palloc0(sizeof(KafkaRange) * Max(list_length(override_ranges), 1));
	foreach(lc, override_ranges)
	{
		KafkaRange *r = lfirst(lc);

		if (r->start < r->end)
			st->ranges[n++] = *r;
	}
	return n;
}

/* the topic's partitions and their watermarks, at the first start only */
static void
read_watermarks(KafkaScanState *st)
{
	int32	   *all;
	int64	   *stamps;

	if (st->npartitions != 0)
		return;
	st->npartitions = kafka_partition_count(st->h);
	all = palloc(sizeof(int32) * st->npartitions);
	stamps = palloc(sizeof(int64) * st->npartitions);
	st->low = palloc(sizeof(int64) * st->npartitions);
	st->high = palloc(sizeof(int64) * st->npartitions);
	for (int i = 0; i < st->npartitions; i++)
	{
		all[i] = i;
		stamps[i] = RD_KAFKA_OFFSET_BEGINNING;
	}
	kafka_get_offsets(st->h, st->npartitions, all, stamps, st->low);
	for (int i = 0; i < st->npartitions; i++)
		stamps[i] = RD_KAFKA_OFFSET_END;
	kafka_get_offsets(st->h, st->npartitions, all, stamps, st->high);
}

/* evaluate the pushed-down values and what they allow */
static void
evaluate_pushdown(KafkaScanState *st, ForeignScan *plan, KafkaPushdown *pd)
{
	ListCell   *lk,
			   *ls,
			   *le,
			   *lx;

	kafka_pushdown_init(pd, st->npartitions);
	lx = list_head(plan->fdw_exprs);
	forthree(lk, st->kinds, ls, st->strategies, le, st->exprstates)
	{
		Oid			type = exprType(lfirst(lx));
		bool		isnull;
		Datum		value = ExecEvalExpr(lfirst(le), st->econtext, &isnull);

		lx = lnext(plan->fdw_exprs, lx);
		kafka_pushdown_apply(pd, lfirst_int(lk), lfirst_int(ls), type, value, isnull);
	}
}

/*
 * The ranges the pushdown allows: the wanted partitions between their
 * watermarks, and from the first offset at the timestamp asked for.
 */
static int
pushdown_ranges(KafkaScanState *st, KafkaPushdown *pd)
{
	int32	   *parts = palloc(sizeof(int32) * Max(st->npartitions, 1));
	int			nparts = kafka_pushdown_partitions(pd, parts);
	int64	   *ts_off = NULL;
	int			n = 0;

	if (pd->first_ms != PG_INT64_MIN && nparts > 0)
	{
		int64	   *stamps = palloc(sizeof(int64) * nparts);

		ts_off = palloc(sizeof(int64) * nparts);
		for (int i = 0; i < nparts; i++)
			stamps[i] = pd->first_ms;
		kafka_get_offsets(st->h, nparts, parts, stamps, ts_off);
	}
	st->ranges = palloc0(sizeof(KafkaRange) * Max(nparts, 1));
	for (int i = 0; i < nparts; i++)
	{
		int32		p = parts[i];

		if (kafka_pushdown_range(pd, p, st->low[p], st->high[p],
								 ts_off ? ts_off[i] : -1, &st->ranges[n]))
			n++;
	}
	return n;
}

/*
 * The ranges of the whole scan, from the pipeline worker's choice or from
 * pushed-down values and the topic's watermarks (asked at the first start
 * only, so that rescans read the same messages).
 */
static void
compute_ranges(ForeignScanState *node)
{
	KafkaScanState *st = node->fdw_state;
	MemoryContext old = MemoryContextSwitchTo(st->scan_cxt);

	ensure_handle(st, kafka_queue_kbytes(1));
	if (OidIsValid(override_relid) && override_relid == st->table->relid)
		st->nranges = override_ranges_copy(st);
	else
	{
		KafkaPushdown pd;

		read_watermarks(st);
		evaluate_pushdown(st, (ForeignScan *) node->ss.ps.plan, &pd);
		st->nranges = pushdown_ranges(st, &pd);
	}
	remember_ranges(st);
	MemoryContextSwitchTo(old);
}

/*
 * A format with a header message (CSV with header 'true'): the first
 * message of partition 0 names the fields.
 */
static void
read_header(KafkaScanState *st)
{
	KafkaTable *t = st->table;
	int32		p0 = 0;
	int64		b = RD_KAFKA_OFFSET_BEGINNING;

	if (t->codec->read_header == NULL || !t->header || st->header_done)
		return;
	kafka_consume_start(st->h, 1, &p0, &b);
	for (;;)
	{
		rd_kafka_message_t *m = kafka_consume_next(st->h, NULL);

		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_ERROR),
					 errmsg("CSV topic \"%s\" has no header message", t->topic),
					 errdetail("With header 'true' the first message of partition 0 names the fields.")));
		if (m->err)
			kafka_report_error(m->err, "read the CSV header");
		t->codec->read_header(st->dec, m->payload, m->len);
		break;
	}
	kafka_consume_stop(st->h);
	st->header_done = true;
}

/* Fetch the given ranges (kept by the caller) until each one is done. */
static void
begin_consuming(KafkaScanState *st, KafkaRange *ranges, int n)
{
	MemoryContext old = MemoryContextSwitchTo(st->scan_cxt);
	int32	   *parts = palloc(sizeof(int32) * Max(n, 1));
	int64	   *starts = palloc(sizeof(int64) * Max(n, 1));

	st->act = ranges;
	st->nact = n;
	st->done = palloc0(sizeof(bool) * Max(n, 1));
	st->nremaining = n;
	st->max_partition = 0;
	for (int i = 0; i < n; i++)
		st->max_partition = Max(st->max_partition, ranges[i].partition);
	st->range_of = palloc(sizeof(int) * (st->max_partition + 1));
	for (int i = 0; i <= st->max_partition; i++)
		st->range_of[i] = -1;
	for (int i = 0; i < n; i++)
	{
		st->range_of[ranges[i].partition] = i;
		parts[i] = ranges[i].partition;
		starts[i] = ranges[i].start;
	}
	if (n > 0)
		kafka_consume_start(st->h, n, parts, starts);
	MemoryContextSwitchTo(old);
}

/* A serial scan reads all its ranges at once. */
static void
start_scan(ForeignScanState *node)
{
	KafkaScanState *st = node->fdw_state;

	compute_ranges(node);
	if (st->nranges > 0)
	{
		fit_handle(st, kafka_queue_kbytes(st->nranges));
		read_header(st);
	}
	begin_consuming(st, st->ranges, st->nranges);
	st->started = true;
}

static void
range_done(KafkaScanState *st, int idx)
{
	if (!st->done[idx])
	{
		st->done[idx] = true;
		st->nremaining--;
	}
}

static void
set_int_meta(KafkaColumn *c, Datum *v, int64 x)
{
	if (c->typid == INT2OID)
		*v = Int16GetDatum((int16) x);
	else if (c->typid == INT4OID)
		*v = Int32GetDatum((int32) x);
	else
		*v = Int64GetDatum(x);
}

static bool
set_bytes_meta(KafkaColumn *c, Datum *v, const void *p, size_t len)
{
	if (p == NULL)
		return false;
	if (c->typid == BYTEAOID)
	{
		bytea	   *b = palloc(len + VARHDRSZ);

		SET_VARSIZE(b, len + VARHDRSZ);
		memcpy(VARDATA(b), p, len);
		*v = PointerGetDatum(b);
		return true;
	}
	if (pg_verify_mbstr_len(PG_UTF8, p, len, true) < 0)
		return false;
	*v = PointerGetDatum(cstring_to_text_with_len(p, len));
	return true;
}

/* Fill meta columns; error is NULL for a good message. */
static void
fill_meta(KafkaTable *t, rd_kafka_message_t *m, Datum *values, bool *nulls,
		  const char *error)
{
	int			a;

	if ((a = t->meta_attno[KAFKA_META_PARTITION]) != 0)
	{
		set_int_meta(&t->cols[a - 1], &values[a - 1], m->partition);
		nulls[a - 1] = false;
	}
	if ((a = t->meta_attno[KAFKA_META_OFFSET]) != 0)
	{
		set_int_meta(&t->cols[a - 1], &values[a - 1], m->offset);
		nulls[a - 1] = false;
	}
	if ((a = t->meta_attno[KAFKA_META_TIMESTAMP]) != 0)
	{
		rd_kafka_timestamp_type_t tstype;
		int64		ms = rd_kafka_message_timestamp(m, &tstype);

		if (ms >= 0)
		{
			if (t->cols[a - 1].typid == INT8OID)
				values[a - 1] = Int64GetDatum(ms);
			else
				values[a - 1] = TimestampTzGetDatum(ms * 1000 - UNIX_TO_PG_USECS);
			nulls[a - 1] = false;
		}
	}
	if ((a = t->meta_attno[KAFKA_META_KEY]) != 0)
		nulls[a - 1] = !set_bytes_meta(&t->cols[a - 1], &values[a - 1], m->key, m->key_len);
	if ((a = t->meta_attno[KAFKA_META_PAYLOAD]) != 0)
		nulls[a - 1] = !set_bytes_meta(&t->cols[a - 1], &values[a - 1],
									   m->payload ? m->payload : "", m->len);
	if ((a = t->meta_attno[KAFKA_META_ERROR]) != 0)
	{
		nulls[a - 1] = error == NULL;
		if (error)
			values[a - 1] = PointerGetDatum(cstring_to_text(error));
	}
}

/*
 * Pipeline batch mode: read the messages a pipeline worker fetched instead
 * of the broker.  A message that does not decode becomes a dead letter of
 * the batch, and the scan goes on with the next one.
 */
static TupleTableSlot *
iterate_pipeline_batch(KafkaScanState *st, TupleTableSlot *slot,
					   PipelineBatch *batch)
{
	KafkaTable *t = st->table;

	if (!st->started)
	{
		st->batch_pos = batch->first;
		st->started = true;
	}
	while (st->batch_pos < batch->last)
	{
		int			i = st->batch_pos++;
		rd_kafka_message_t *m = batch->msgs[i];
		MemoryContext old;
		bool		decoded;

		CHECK_FOR_INTERRUPTS();
		st->cur_partition = m->partition;
		st->cur_offset = m->offset;
		MemoryContextReset(st->tuple_cxt);
		old = MemoryContextSwitchTo(st->tuple_cxt);
		memset(slot->tts_isnull, true, sizeof(bool) * t->natts);
		decoded = kafka_decode_message(st->dec, m->payload, m->len,
									   slot->tts_values, slot->tts_isnull);
		if (decoded)
			fill_meta(t, m, slot->tts_values, slot->tts_isnull, NULL);
		MemoryContextSwitchTo(old);
		if (decoded)
		{
			st->nrows++;
			return ExecStoreVirtualTuple(slot);
		}
		pipeline_batch_add_failure(batch, i, st->dec->errcode, st->dec->errmsg);
	}
	return slot;
}

static void
stop_consuming(KafkaScanState *st)
{
	if (st->h && st->h->rk)
		kafka_consume_stop(st->h);
}

/* A participant of a parallel scan: ranges come from shared memory. */
static void
start_parallel(KafkaScanState *st)
{
	KafkaParallelScan *ps = st->pscan;

	ensure_handle(st, ps->queue_kb);
	fit_handle(st, ps->queue_kb);
	if (ps->nranges > 0)
		read_header(st);
	st->nremaining = 0;			/* the first claim follows */
	st->started = true;
}

/* Take the next range nobody has read; false when none is left. */
static bool
claim_range(KafkaScanState *st)
{
	KafkaParallelScan *ps = st->pscan;
	uint32		i;

	stop_consuming(st);
	i = pg_atomic_fetch_add_u32(&ps->next, 1);
	if (i >= (uint32) ps->nranges)
		return false;
	begin_consuming(st, &ps->ranges[i], 1);
	return true;
}

static TupleTableSlot *
kafkaIterateForeignScan(ForeignScanState *node)
{
	KafkaScanState *st = node->fdw_state;
	KafkaTable *t = st->table;
	TupleTableSlot *slot = node->ss.ss_ScanTupleSlot;
	TupleTableSlot *result = NULL;

	st->errcb.callback = scan_error_context;
	st->errcb.arg = st;
	st->errcb.previous = error_context_stack;
	error_context_stack = &st->errcb;

	ExecClearTuple(slot);
	if (pipeline_current_batch != NULL && pipeline_current_batch->relid == t->relid)
	{
		result = iterate_pipeline_batch(st, slot, pipeline_current_batch);
		st->cur_partition = -1;
		error_context_stack = st->errcb.previous;
		return result;
	}
	if (!st->started)
	{
		if (st->pscan && !st->pscan->leader_only)
			start_parallel(st);
		else if (st->pscan && IsParallelWorker())
			st->started = true; /* the leader reads alone: nothing here */
		else
			start_scan(node);
	}

	while (result == NULL)
	{
		rd_kafka_message_t *m;
		int			idx;
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		if (st->nremaining == 0)
		{
			if (st->pscan && !st->pscan->leader_only && claim_range(st))
				continue;
			break;
		}
		m = kafka_consume_next(st->h, NULL);
		if (m->partition < 0 || m->partition > st->max_partition ||
			(idx = st->range_of[m->partition]) < 0)
			continue;
		st->cur_partition = m->partition;
		st->cur_offset = m->offset;
		if (m->err)
		{
			if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
			{
				range_done(st, idx);
				continue;
			}
			kafka_report_error(m->err, "consume from Kafka");
		}
		if (st->done[idx] || m->offset < st->act[idx].start)
			continue;
		if (m->offset >= st->act[idx].end)
		{
			range_done(st, idx);
			continue;
		}
		if (m->offset + 1 >= st->act[idx].end)
			range_done(st, idx);

		if (kafka_is_header_message(st->dec, m->payload, m->len))
			continue;

		MemoryContextReset(st->tuple_cxt);
		old = MemoryContextSwitchTo(st->tuple_cxt);
		memset(slot->tts_isnull, true, sizeof(bool) * t->natts);
		if (kafka_decode_message(st->dec, m->payload, m->len,
								 slot->tts_values, slot->tts_isnull))
			fill_meta(t, m, slot->tts_values, slot->tts_isnull, NULL);
		else if (st->hook)
		{
			st->hook(t->relid, m, st->dec->errcode, st->dec->errmsg);
			MemoryContextSwitchTo(old);
			continue;
		}
		else if (t->meta_attno[KAFKA_META_ERROR] != 0)
		{
			fill_meta(t, m, slot->tts_values, slot->tts_isnull, st->dec->errmsg);
			st->nerrors++;
		}
		else
			ereport(ERROR,
					(errcode(st->dec->errcode),
					 errmsg("could not decode Kafka message: %s", st->dec->errmsg),
					 errhint("Add a column with OPTIONS (meta 'error') to the foreign table to "
							 "receive bad messages as rows.")));
		MemoryContextSwitchTo(old);
		st->nrows++;
		result = ExecStoreVirtualTuple(slot);
	}

	st->cur_partition = -1;
	error_context_stack = st->errcb.previous;
	return result ? result : slot;
}

static void
kafkaReScanForeignScan(ForeignScanState *node)
{
	KafkaScanState *st = node->fdw_state;

	stop_consuming(st);
	st->started = false;
}

static void
kafkaEndForeignScan(ForeignScanState *node)
{
	KafkaScanState *st = node->fdw_state;

	if (st == NULL || st->scan_cxt == NULL)
		return;
	stop_consuming(st);
	if (st->own_handle && st->h)
		kafka_handle_destroy(st->h);
	st->h = NULL;
}

/* EXPLAIN ANALYZE: the ranges that were read */
void
kafka_explain_ranges(ForeignScanState *node, ExplainState *es)
{
	KafkaScanState *st = node->fdw_state;
	StringInfoData s;

	if (st == NULL || st->ranges == NULL || !es->analyze)
		return;
	initStringInfo(&s);
	for (int i = 0; i < st->nranges; i++)
		appendStringInfo(&s, "%s%d:[" INT64_FORMAT "," INT64_FORMAT ")",
						 i > 0 ? " " : "", st->ranges[i].partition,
						 st->ranges[i].start, st->ranges[i].end);
	ExplainPropertyText("Kafka Ranges", s.len ? s.data : "none", es);
	if (es->verbose)
	{
		ExplainPropertyInteger("Kafka Messages", NULL, st->nrows, es);
		ExplainPropertyInteger("Kafka Error Rows", NULL, st->nerrors, es);
	}
}

/* ----------------------------------------------------------------
 * Parallel scans
 * ----------------------------------------------------------------
 */

/* A pipeline batch lives in the leader's memory only. */
static bool
kafkaIsForeignScanParallelSafe(PlannerInfo *root, RelOptInfo *rel,
							   RangeTblEntry *rte)
{
	return !pipeline_mode();
}

/*
 * The leader computes the ranges now, so that the segment has room for
 * one per partition: rescans never read more partitions than the first
 * start saw.
 */
static Size
kafkaEstimateDSMForeignScan(ForeignScanState *node, ParallelContext *pcxt)
{
	KafkaScanState *st = node->fdw_state;

	st->pcapacity = 0;
	if (!pipeline_mode())
	{
		compute_ranges(node);
		st->pcapacity = Max(st->npartitions, st->nranges);
	}
	return add_size(offsetof(KafkaParallelScan, ranges),
					mul_size(sizeof(KafkaRange), Max(st->pcapacity, 1)));
}

/* copy the leader's ranges to the segment and hand them out from 0 */
static void
publish_ranges(KafkaScanState *st)
{
	KafkaParallelScan *ps = st->pscan;

	if (st->nranges > ps->capacity)
		elog(ERROR, "Kafka scan has %d ranges, room for %d",
			 st->nranges, ps->capacity);
	memcpy(ps->ranges, st->ranges, sizeof(KafkaRange) * st->nranges);
	ps->nranges = st->nranges;
	pg_atomic_write_u32(&ps->next, 0);
}

static void
kafkaInitializeDSMForeignScan(ForeignScanState *node, ParallelContext *pcxt,
							  void *coordinate)
{
	KafkaScanState *st = node->fdw_state;
	KafkaParallelScan *ps = (KafkaParallelScan *) coordinate;

	pg_atomic_init_u32(&ps->next, 0);
	ps->leader_only = pipeline_mode();
	ps->capacity = st->pcapacity;
	ps->nranges = 0;
	/* participants read one partition at a time each */
	ps->queue_kb = kafka_queue_kbytes(Min(Max(st->nranges, 1),
										  pcxt->nworkers + 1));
	st->pscan = ps;
	if (!ps->leader_only)
		publish_ranges(st);
}

/* a rescan: new ranges (parameters may have changed), handed out anew */
static void
kafkaReInitializeDSMForeignScan(ForeignScanState *node, ParallelContext *pcxt,
								void *coordinate)
{
	KafkaScanState *st = node->fdw_state;
	KafkaParallelScan *ps = (KafkaParallelScan *) coordinate;

	stop_consuming(st);
	st->started = false;
	st->nremaining = 0;
	if (!ps->leader_only)
	{
		compute_ranges(node);
		publish_ranges(st);
	}
}

static void
kafkaInitializeWorkerForeignScan(ForeignScanState *node, shm_toc *toc,
								 void *coordinate)
{
	KafkaScanState *st = node->fdw_state;

	st->pscan = (KafkaParallelScan *) coordinate;
}

void
kafka_scan_routines(FdwRoutine *r)
{
	r->IsForeignScanParallelSafe = kafkaIsForeignScanParallelSafe;
	r->EstimateDSMForeignScan = kafkaEstimateDSMForeignScan;
	r->InitializeDSMForeignScan = kafkaInitializeDSMForeignScan;
	r->ReInitializeDSMForeignScan = kafkaReInitializeDSMForeignScan;
	r->InitializeWorkerForeignScan = kafkaInitializeWorkerForeignScan;
	r->BeginForeignScan = kafkaBeginForeignScan;
	r->IterateForeignScan = kafkaIterateForeignScan;
	r->ReScanForeignScan = kafkaReScanForeignScan;
	r->EndForeignScan = kafkaEndForeignScan;
}

/* ----------------------------------------------------------------
 * SQL functions
 * ----------------------------------------------------------------
 */

PG_FUNCTION_INFO_V1(streamkpi_kafka_watermarks);
PG_FUNCTION_INFO_V1(streamkpi_kafka_topics);

/*
 * kafka_watermarks(regclass) -> (partition int, low bigint, high bigint)
 */
Datum
streamkpi_kafka_watermarks(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			relid = PG_GETARG_OID(0);
	KafkaTable *t;
	KafkaHandle *h;
	MemoryContext cxt;
	int32		n;
	int32	   *parts;
	int64	   *stamps,
			   *low,
			   *high;

	if (get_rel_relkind(relid) != RELKIND_FOREIGN_TABLE ||
		strcmp(GetForeignDataWrapper(GetForeignServer(GetForeignTable(relid)->serverid)->fdwid)->fdwname,
			   "streamkpi_kafka") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a Kafka foreign table", get_rel_name(relid))));
	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FOREIGN_TABLE, get_rel_name(relid));

	InitMaterializedSRF(fcinfo, 0);
	t = kafka_table_load(relid, true);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "streamkpi watermarks",
								ALLOCSET_SMALL_SIZES);
	h = kafka_handle_create(RD_KAFKA_CONSUMER, t->props, t->topic, cxt);
	n = kafka_partition_count(h);
	parts = palloc(sizeof(int32) * n);
	stamps = palloc(sizeof(int64) * n);
	low = palloc(sizeof(int64) * n);
	high = palloc(sizeof(int64) * n);
	for (int i = 0; i < n; i++)
	{
		parts[i] = i;
		stamps[i] = RD_KAFKA_OFFSET_BEGINNING;
	}
	kafka_get_offsets(h, n, parts, stamps, low);
	for (int i = 0; i < n; i++)
		stamps[i] = RD_KAFKA_OFFSET_END;
	kafka_get_offsets(h, n, parts, stamps, high);
	MemoryContextDelete(cxt);

	for (int i = 0; i < n; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = Int32GetDatum(i);
		values[1] = Int64GetDatum(low[i]);
		values[2] = Int64GetDatum(high[i]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * kafka_topics(server name) -> (topic text, partitions int)
 */
Datum
streamkpi_kafka_topics(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ForeignServer *server = GetForeignServerByName(NameStr(*PG_GETARG_NAME(0)), false);
	MemoryContext cxt;
	KafkaHandle *h;
	List	   *names;
	List	   *counts;
	ListCell   *ln,
			   *lp;

	if (pg_foreign_server_aclcheck(server->serverid, GetUserId(), ACL_USAGE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FOREIGN_SERVER, server->servername);

	InitMaterializedSRF(fcinfo, 0);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "streamkpi topics",
								ALLOCSET_SMALL_SIZES);
	h = kafka_handle_create(RD_KAFKA_CONSUMER,
							kafka_server_props(server->serverid, GetUserId()),
							NULL, cxt);
	names = kafka_list_topics(h, &counts);
	MemoryContextDelete(cxt);
	forboth(ln, names, lp, counts)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = CStringGetTextDatum((char *) lfirst(ln));
		values[1] = Int32GetDatum(lfirst_int(lp));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
