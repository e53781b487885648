/*-------------------------------------------------------------------------
 *
 * fdw_modify.c
 *	  INSERT and COPY FROM into a Kafka foreign table produce messages:
 *	  the data columns encoded as JSON or CSV (or the payload column sent
 *	  verbatim), key, partition and timestamp from the meta columns.  The
 *	  statement ends only when every delivery report is in; any failed
 *	  delivery is an ERROR that says how many failed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "fdw.h"

typedef struct KafkaModifyState
{
	KafkaTable *table;
	KafkaHandle *h;
	MemoryContext cxt;			/* owns the producer */
	MemoryContext row_cxt;
	StringInfoData buf;
	int64		nrows;
} KafkaModifyState;

static int
kafkaIsForeignRelUpdatable(Relation rel)
{
	return (1 << CMD_INSERT);
}

static List *
kafkaPlanForeignModify(PlannerInfo *root, ModifyTable *plan, Index rti,
					   int subplan_index)
{
	return NIL;
}

static KafkaModifyState *
begin_produce(EState *estate, ResultRelInfo *rinfo)
{
	KafkaModifyState *ms = palloc0(sizeof(KafkaModifyState));

	ms->table = kafka_table_load(RelationGetRelid(rinfo->ri_RelationDesc), false);
	ms->cxt = AllocSetContextCreate(estate->es_query_cxt, "streamkpi kafka produce",
									ALLOCSET_DEFAULT_SIZES);
	ms->row_cxt = AllocSetContextCreate(estate->es_query_cxt, "streamkpi kafka row",
										ALLOCSET_DEFAULT_SIZES);
	ms->h = kafka_handle_create(RD_KAFKA_PRODUCER, ms->table->props,
								ms->table->topic, ms->cxt);
	/* fail early, within the timeout, when the topic or broker is missing */
	(void) kafka_partition_count(ms->h);
	initStringInfo(&ms->buf);
	rinfo->ri_FdwState = ms;
	return ms;
}

static void
kafkaBeginForeignModify(ModifyTableState *mtstate, ResultRelInfo *rinfo,
						List *fdw_private, int subplan_index, int eflags)
{
	if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
		return;
	begin_produce(mtstate->ps.state, rinfo);
}

static void
kafkaBeginForeignInsert(ModifyTableState *mtstate, ResultRelInfo *rinfo)
{
	begin_produce(mtstate->ps.state, rinfo);
}

static bool
datum_bytes(KafkaColumn *c, Datum v, const char **p, size_t *len)
{
	struct varlena *b = PG_DETOAST_DATUM_PACKED(v);

	*p = VARDATA_ANY(b);
	*len = VARSIZE_ANY_EXHDR(b);
	return true;
}

static TupleTableSlot *
kafkaExecForeignInsert(EState *estate, ResultRelInfo *rinfo,
					   TupleTableSlot *slot, TupleTableSlot *planSlot)
{
	KafkaModifyState *ms = rinfo->ri_FdwState;
	KafkaTable *t = ms->table;
	MemoryContext old;
	Datum	   *values;
	bool	   *nulls;
	const char *payload;
	size_t		len;
	const char *key = NULL;
	size_t		keylen = 0;
	int32		partition = RD_KAFKA_PARTITION_UA;
	int64		ts = 0;
	int			a;

	CHECK_FOR_INTERRUPTS();
	MemoryContextReset(ms->row_cxt);
	old = MemoryContextSwitchTo(ms->row_cxt);
	slot_getallattrs(slot);
	values = slot->tts_values;
	nulls = slot->tts_isnull;

	if ((a = t->meta_attno[KAFKA_META_PAYLOAD]) != 0 && !nulls[a - 1])
		datum_bytes(&t->cols[a - 1], values[a - 1], &payload, &len);
	else
	{
		resetStringInfo(&ms->buf);
		kafka_encode_message(t, values, nulls, &ms->buf);
		payload = ms->buf.data;
		len = ms->buf.len;
	}
	if ((a = t->meta_attno[KAFKA_META_KEY]) != 0 && !nulls[a - 1])
		datum_bytes(&t->cols[a - 1], values[a - 1], &key, &keylen);
	if ((a = t->meta_attno[KAFKA_META_PARTITION]) != 0 && !nulls[a - 1])
	{
		int64		p = datum_to_int64(values[a - 1], t->cols[a - 1].typid);

		if (p < 0 || p > PG_INT32_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("Kafka partition " INT64_FORMAT " is out of range", p)));
		partition = (int32) p;
	}
	if ((a = t->meta_attno[KAFKA_META_TIMESTAMP]) != 0 && !nulls[a - 1])
	{
		if (t->cols[a - 1].typid == INT8OID)
			ts = DatumGetInt64(values[a - 1]);
		else
			ts = (DatumGetTimestampTz(values[a - 1]) + UNIX_TO_PG_USECS) / 1000;
		if (ts <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("Kafka message timestamps must be after 1970-01-01")));
	}
	MemoryContextSwitchTo(old);

	kafka_produce(ms->h, partition, payload, len, key, keylen, ts);
	if ((++ms->nrows & 1023) == 0)
		kafka_handle_poll(ms->h);
	return slot;
}

static void
end_produce(KafkaModifyState *ms)
{
	if (ms == NULL || ms->h == NULL)
		return;
	kafka_flush(ms->h);
	if (ms->h->failed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg(INT64_FORMAT " of " INT64_FORMAT " messages could not be delivered to Kafka topic \"%s\"",
						ms->h->failed, ms->nrows, ms->table->topic),
				 errdetail("First failure: %s.", ms->h->first_failure)));
	kafka_handle_destroy(ms->h);
	ms->h = NULL;
}

static void
kafkaEndForeignModify(EState *estate, ResultRelInfo *rinfo)
{
	end_produce(rinfo->ri_FdwState);
}

static void
kafkaEndForeignInsert(EState *estate, ResultRelInfo *rinfo)
{
	end_produce(rinfo->ri_FdwState);
}

void
kafka_modify_routines(FdwRoutine *r)
{
	r->IsForeignRelUpdatable = kafkaIsForeignRelUpdatable;
	r->PlanForeignModify = kafkaPlanForeignModify;
	r->BeginForeignModify = kafkaBeginForeignModify;
	r->ExecForeignInsert = kafkaExecForeignInsert;
	r->EndForeignModify = kafkaEndForeignModify;
	r->BeginForeignInsert = kafkaBeginForeignInsert;
	r->EndForeignInsert = kafkaEndForeignInsert;
}
