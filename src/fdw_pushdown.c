/*-------------------------------------------------------------------------
 *
 * fdw_pushdown.c
 *	  What a restriction on a meta column means for the offsets a scan
 *	  reads, shared by the planner (fdw_plan.c, which picks the pushable
 *	  clauses) and the executor (fdw_scan.c, which evaluates them when the
 *	  scan starts): integer values of any width, the base relation's Var
 *	  in a clause, the narrowing of a partition set and an offset range,
 *	  and the first Kafka millisecond timestamp a comparison lets through.
 *
 *	  Nothing here talks to a broker or evaluates an expression.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/stratnum.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "fdw.h"

/* the value of a smallint, integer or bigint Datum */
int64
datum_to_int64(Datum d, Oid type)
{
	switch (type)
	{
		case INT2OID:
			return DatumGetInt16(d);
		case INT4OID:
			return DatumGetInt32(d);
		default:
			return DatumGetInt64(d);
	}
}

bool
kafka_is_integer_type(Oid type)
{
	return type == INT2OID || type == INT4OID || type == INT8OID;
}

/*
 * The elements of a smallint[], integer[] or bigint[] value as int64;
 * nulls[i] marks NULL elements.  Returns how many there are.
 */
int
kafka_int_array_elements(Datum array, int64 **values, bool **nulls)
{
	ArrayType  *arr = DatumGetArrayTypeP(array);
	Oid			et = ARR_ELEMTYPE(arr);
	int16		elen;
	bool		ebyval;
	char		ealign;
	Datum	   *elems;
	int			n;

	get_typlenbyvalalign(et, &elen, &ebyval, &ealign);
	deconstruct_array(arr, et, elen, ebyval, ealign, &elems, nulls, &n);
	*values = palloc(sizeof(int64) * Max(n, 1));
	for (int i = 0; i < n; i++)
		(*values)[i] = (*nulls)[i] ? 0 : datum_to_int64(elems[i], et);
	return n;
}

/*
 * The Var of the scanned relation that n is (through a binary-compatible
 * cast), or NULL.
 */
Var *
kafka_base_var(Node *n, Index relid)
{
	if (n != NULL && IsA(n, RelabelType))
		n = (Node *) ((RelabelType *) n)->arg;
	if (n == NULL || !IsA(n, Var))
		return NULL;
	if (((Var *) n)->varno != relid || ((Var *) n)->varlevelsup != 0 ||
		((Var *) n)->varattno <= 0)
		return NULL;
	return (Var *) n;
}

/* the strategy of "b op a" given that of "a op b" */
int
kafka_commute_strategy(int strategy)
{
	switch (strategy)
	{
		case BTLessStrategyNumber:
			return BTGreaterStrategyNumber;
		case BTLessEqualStrategyNumber:
			return BTGreaterEqualStrategyNumber;
		case BTGreaterStrategyNumber:
			return BTLessStrategyNumber;
		case BTGreaterEqualStrategyNumber:
			return BTLessEqualStrategyNumber;
		default:
			return strategy;
	}
}

/* no restriction yet: every partition, every offset, any timestamp */
void
kafka_pushdown_init(KafkaPushdown *pd, int32 npartitions)
{
	pd->npartitions = npartitions;
	pd->want = palloc(sizeof(bool) * Max(npartitions, 1));
	memset(pd->want, true, npartitions);
	pd->impossible = false;
	pd->lo = 0;
	pd->hi = PG_INT64_MAX;
	pd->first_ms = PG_INT64_MIN;
}

/* partition IN (array): keep the listed partitions */
static void
narrow_partitions_in(KafkaPushdown *pd, Datum array)
{
	bool	   *in = palloc0(sizeof(bool) * Max(pd->npartitions, 1));
	int64	   *values;
	bool	   *nulls;
	int			n = kafka_int_array_elements(array, &values, &nulls);

	for (int i = 0; i < n; i++)
		if (!nulls[i] && values[i] >= 0 && values[i] < pd->npartitions)
			in[values[i]] = true;
	for (int i = 0; i < pd->npartitions; i++)
		pd->want[i] = pd->want[i] && in[i];
}

/* offset op v: narrow [lo, hi) */
static void
narrow_offsets(KafkaPushdown *pd, int strategy, int64 v)
{
	int64		next = v == PG_INT64_MAX ? v : v + 1;

	switch (strategy)
	{
		case BTEqualStrategyNumber:
			pd->lo = Max(pd->lo, v);
			pd->hi = Min(pd->hi, next);
			break;
		case BTGreaterEqualStrategyNumber:
			pd->lo = Max(pd->lo, v);
			break;
		case BTGreaterStrategyNumber:
			pd->lo = Max(pd->lo, next);
			break;
		case BTLessStrategyNumber:
			pd->hi = Min(pd->hi, v);
			break;
		case BTLessEqualStrategyNumber:
			pd->hi = Min(pd->hi, next);
			break;
	}
}

/*
 * timestamp > ts or >= ts: Kafka stamps are milliseconds since 1970, so
 * reading starts at the first millisecond that qualifies.
 */
static void
narrow_timestamp(KafkaPushdown *pd, int strategy, TimestampTz ts)
{
	int64		us;
	int64		ms;

	if (TIMESTAMP_IS_NOBEGIN(ts))
		return;
	if (TIMESTAMP_IS_NOEND(ts))
	{
		pd->impossible = true;
		return;
	}
	us = ts + UNIX_TO_PG_USECS;
	if (strategy == BTGreaterStrategyNumber)
		ms = (us >= 0 ? us / 1000 : -((-us + 999) / 1000)) + 1;
	else
		ms = us >= 0 ? (us + 999) / 1000 : -((-us) / 1000);
	pd->first_ms = Max(pd->first_ms, Max(ms, 0));
}

/*
 * Apply one pushed-down restriction whose value, of type type, is value
 * (isnull: the comparison is never true).
 */
void
kafka_pushdown_apply(KafkaPushdown *pd, KafkaPushKind kind, int strategy,
					 Oid type, Datum value, bool isnull)
{
	if (isnull)
	{
		pd->impossible = true;
		return;
	}
	if (kind == KAFKA_PUSH_PARTITION && strategy == 0)
		narrow_partitions_in(pd, value);
	else if (kind == KAFKA_PUSH_PARTITION)
	{
		int64		p = datum_to_int64(value, type);

		for (int i = 0; i < pd->npartitions; i++)
			pd->want[i] = pd->want[i] && i == p;
	}
	else if (kind == KAFKA_PUSH_TIMESTAMP)
		narrow_timestamp(pd, strategy, DatumGetTimestampTz(value));
	else
		narrow_offsets(pd, strategy, datum_to_int64(value, type));
}

/*
 * The partitions still wanted, into parts (room for npartitions); returns
 * how many.
 */
int
kafka_pushdown_partitions(KafkaPushdown *pd, int32 *parts)
{
	int			n = 0;

	if (pd->impossible)
		return 0;
	for (int i = 0; i < pd->npartitions; i++)
		if (pd->want[i])
			parts[n++] = i;
	return n;
}

/*
 * The range of partition p to read, between its watermarks low and high
 * and, with a timestamp restriction, from ts_offset (the first offset at
 * or after first_ms; negative when there is none).  False when empty.
 */
bool
kafka_pushdown_range(KafkaPushdown *pd, int32 p, int64 low, int64 high,
					 int64 ts_offset, KafkaRange *r)
{
	r->partition = p;
	r->start = Max(low, pd->lo);
	r->end = Min(high, pd->hi);
	if (pd->first_ms != PG_INT64_MIN)
		r->start = Max(r->start, ts_offset < 0 ? high : ts_offset);
	return r->start < r->end;
}
