/*-------------------------------------------------------------------------
 *
 * sketch_topn.c
 *	  streamkpi.topn: a mergeable heavy-hitters summary (Space-Saving,
 *	  Metwally et al. 2005, merged as in Agarwal et al., "Mergeable
 *	  Summaries", 2012).
 *
 *	  A summary of capacity k keeps at most k items, each with a count and
 *	  an error, and a floor:
 *
 *	    count - error <= true count <= count	for every kept item
 *	    true count <= floor						for every other item
 *
 *	  While at most k distinct items were seen, floor and every error are 0
 *	  and the counts are exact.  Merging adds the floor of the side that
 *	  lacks an item to that item's count and error, then keeps the k
 *	  largest counts; the largest count dropped raises the floor.  So the
 *	  union of per-day summaries keeps the same guarantees as one summary
 *	  over all the days.
 *
 *	  Values are stored in format version 2, items in byte order, so that
 *	  a merge walks two sorted lists once.  This file has the text form
 *	  and the SQL functions; sketch_topn_state.c the state of topn_agg
 *	  (Space-Saving's hash table and min-heap), sketch_topn_merge.c the
 *	  merge form of union states and merging, sketch_topn_format.c the
 *	  stored formats.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "sketch.h"

/* ----------------------------------------------------------------
 * Text form: {"capacity":k,"floor":f,"total":t,"items":[["a",10,0],...]}
 * ----------------------------------------------------------------
 */
static int64
json_int8(JsonbValue *jv, const char *what)
{
	if (jv == NULL || jv->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type topn"),
				 errdetail("\"%s\" must be an integer.", what)));
	return DatumGetInt64(DirectFunctionCall1(numeric_int8,
											 NumericGetDatum(jv->val.numeric)));
}

static void
topn_syntax(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid input syntax for type topn"),
			 errdetail("%s", detail)));
}

/* Build the stored bytes from the text form, unvalidated. */
static bytea *
topn_from_json(const char *str)
{
	Jsonb	   *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
														CStringGetDatum(str)));
	JsonbValue	kv;
	JsonbValue *items;
	int64		capacity;
	int64		floor;
	int64		total;
	uint32		n;
	StringInfoData buf;
	uint8		hdr[TOPN_HEADER_SIZE];
	bytea	   *result;

	if (!JB_ROOT_IS_OBJECT(jb))
		topn_syntax("A topn is a JSON object with capacity, floor, total and items.");
	capacity = json_int8(getKeyJsonValueFromContainer(&jb->root, "capacity", 8, &kv), "capacity");
	floor = json_int8(getKeyJsonValueFromContainer(&jb->root, "floor", 5, &kv), "floor");
	total = json_int8(getKeyJsonValueFromContainer(&jb->root, "total", 5, &kv), "total");
	items = getKeyJsonValueFromContainer(&jb->root, "items", 5, &kv);
	if (items == NULL || items->type != jbvBinary ||
		!JsonContainerIsArray(items->val.binary.data))
		topn_syntax("\"items\" must be an array.");
	sketch_topn_check_capacity(capacity);
	n = JsonContainerSize(items->val.binary.data);
	if (n > (uint32) capacity)
		topn_syntax("There are more items than the capacity.");

	initStringInfo(&buf);
	hdr[0] = TOPN_VERSION;
	hdr[1] = 0;
	put_u32(hdr + 2, (uint32) capacity);
	put_u32(hdr + 6, n);
	put_i64(hdr + 10, floor);
	put_i64(hdr + 18, total);
	appendBinaryStringInfo(&buf, (char *) hdr, TOPN_HEADER_SIZE);
	for (uint32 i = 0; i < n; i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(items->val.binary.data, i);
		JsonbValue *name;
		uint8		ih[TOPN_ITEM_OVERHEAD];

		if (e == NULL || e->type != jbvBinary ||
			!JsonContainerIsArray(e->val.binary.data) ||
			JsonContainerSize(e->val.binary.data) != 3)
			topn_syntax("Each item must be an array [item, count, error].");
		name = getIthJsonbValueFromContainer(e->val.binary.data, 0);
		if (name == NULL || name->type != jbvString)
			topn_syntax("An item must be a string.");
		put_i64(ih, json_int8(getIthJsonbValueFromContainer(e->val.binary.data, 1), "count"));
		put_i64(ih + 8, json_int8(getIthJsonbValueFromContainer(e->val.binary.data, 2), "error"));
		put_u32(ih + 16, (uint32) name->val.string.len);
		appendBinaryStringInfo(&buf, (char *) ih, TOPN_ITEM_OVERHEAD);
		appendBinaryStringInfo(&buf, name->val.string.val, name->val.string.len);
	}

	result = (bytea *) palloc(VARHDRSZ + buf.len);
	SET_VARSIZE(result, VARHDRSZ + buf.len);
	memcpy(VARDATA(result), buf.data, buf.len);
	pfree(buf.data);
	return result;
}

/* ----------------------------------------------------------------
 * SQL-callable functions
 * ----------------------------------------------------------------
 */
PG_FUNCTION_INFO_V1(streamkpi_topn_in);
PG_FUNCTION_INFO_V1(streamkpi_topn_out);
PG_FUNCTION_INFO_V1(streamkpi_topn_recv);
PG_FUNCTION_INFO_V1(streamkpi_topn_send);
PG_FUNCTION_INFO_V1(streamkpi_topn_union_trans);
PG_FUNCTION_INFO_V1(streamkpi_topn_combine);
PG_FUNCTION_INFO_V1(streamkpi_topn_serialize);
PG_FUNCTION_INFO_V1(streamkpi_topn_deserialize);
PG_FUNCTION_INFO_V1(streamkpi_topn_final);
PG_FUNCTION_INFO_V1(streamkpi_topn_union);
PG_FUNCTION_INFO_V1(streamkpi_topn_items);
PG_FUNCTION_INFO_V1(streamkpi_topn_info);

static void
topn_view_datum(bytea *b, TopnView *v)
{
	sketch_topn_view((const uint8 *) VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b), v);
}

/*
 * The JSON text form, fully validated by way of the version 1 form, then
 * stored as version 2.
 */
static bytea *
topn_from_text(const char *str)
{
	bytea	   *raw = topn_from_json(str);
	TopnView	v;
	TopnEntry  *e;
	bytea	   *result;

	/* sort the items into canonical order, then check every rule */
	sketch_topn_view_v1((const uint8 *) VARDATA(raw), VARSIZE(raw) - VARHDRSZ, &v);
	e = sketch_topn_entries(&v);
	qsort(e, v.nitems, sizeof(TopnEntry), sketch_entry_bytes_cmp);
	for (int32 i = 1; i < v.nitems; i++)
		if (sketch_entry_bytes_cmp(&e[i - 1], &e[i]) == 0)
			topn_syntax("An item appears twice.");
	qsort(e, v.nitems, sizeof(TopnEntry), sketch_entry_order_cmp);
	result = sketch_topn_write_v1(&v, e);
	sketch_topn_validate((const uint8 *) VARDATA(result), VARSIZE(result) - VARHDRSZ);
	return sketch_topn_v1_to_v2((const uint8 *) VARDATA(result),
								VARSIZE(result) - VARHDRSZ);
}

/*
 * topn_in(cstring).  Whatever is wrong with the text (a rule of the binary
 * format, a number out of range, a character JSON cannot hold) is invalid
 * text representation, as for every input function; what was wrong
 * becomes the detail.  Errors of other classes pass through unchanged.
 */
Datum
streamkpi_topn_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);
	MemoryContext cxt = CurrentMemoryContext;
	bytea	   *volatile result = NULL;

	PG_TRY();
	{
		result = topn_from_text(str);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_INVALID_TEXT_REPRESENTATION ||
			ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_DATA_EXCEPTION)
			PG_RE_THROW();
		FlushErrorState();
		/* a rule of the format says what it is in its detail */
		if (edata->sqlerrcode == ERRCODE_INVALID_BINARY_REPRESENTATION)
			topn_syntax(edata->detail);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type topn"),
				 errdetail("%s%s%s", edata->message,
						   edata->detail ? ": " : "",
						   edata->detail ? edata->detail : "")));
	}
	PG_END_TRY();
	PG_RETURN_BYTEA_P(result);
}

Datum
streamkpi_topn_out(PG_FUNCTION_ARGS)
{
	bytea	   *b = PG_GETARG_BYTEA_PP(0);
	TopnView	v;
	TopnEntry  *e;
	StringInfoData buf;

	topn_view_datum(b, &v);
	e = sketch_topn_entries_ordered(&v);
	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "{\"capacity\": %d, \"floor\": " INT64_FORMAT ", \"total\": " INT64_FORMAT ", \"items\": [",
					 v.capacity, v.floor, v.total);
	for (int32 i = 0; i < v.nitems; i++)
	{
		char	   *s = pnstrdup(e[i].data, e[i].len);

		appendStringInfoString(&buf, i == 0 ? "[" : ", [");
		escape_json(&buf, s);
		appendStringInfo(&buf, ", " INT64_FORMAT ", " INT64_FORMAT "]",
						 e[i].count, e[i].error);
		pfree(s);
	}
	appendStringInfoString(&buf, "]}");
	PG_RETURN_CSTRING(buf.data);
}

/* topn_recv(internal): format version 1, every field checked */
Datum
streamkpi_topn_recv(PG_FUNCTION_ARGS)
{
	StringInfo	msg = (StringInfo) PG_GETARG_POINTER(0);
	int			len = msg->len - msg->cursor;
	const uint8 *in = (const uint8 *) pq_getmsgbytes(msg, len);

	sketch_topn_validate(in, len);
	PG_RETURN_BYTEA_P(sketch_topn_v1_to_v2(in, len));
}

Datum
streamkpi_topn_send(PG_FUNCTION_ARGS)
{
	bytea	   *b = PG_GETARG_BYTEA_PP(0);
	TopnView	v;
	bytea	   *v1;
	StringInfoData buf;

	/* the binary form stays version 1 */
	topn_view_datum(b, &v);
	v1 = v.version == TOPN_VERSION ? b : sketch_topn_write_v1(&v, sketch_topn_entries_ordered(&v));
	pq_begintypsend(&buf);
	pq_sendbytes(&buf, VARDATA_ANY(v1), VARSIZE_ANY_EXHDR(v1));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* topn_union_agg(topn) transition; the result has the largest capacity seen */
Datum
streamkpi_topn_union_trans(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt = topn_agg_context(fcinfo, "streamkpi_topn_union_trans");
	TopnState  *st = PG_ARGISNULL(0) ? NULL : (TopnState *) PG_GETARG_POINTER(0);
	TopnView	v;

	if (PG_ARGISNULL(1))
	{
		if (st == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(st);
	}
	topn_view_datum(PG_GETARG_BYTEA_PP(1), &v);
	if (st == NULL)
		st = sketch_topn_state_from_view(aggcxt, &v);
	else
		sketch_topn_state_merge_view(st, &v);
	PG_RETURN_POINTER(st);
}

Datum
streamkpi_topn_combine(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt = topn_agg_context(fcinfo, "streamkpi_topn_combine");
	TopnState  *a = PG_ARGISNULL(0) ? NULL : (TopnState *) PG_GETARG_POINTER(0);
	TopnState  *b = PG_ARGISNULL(1) ? NULL : (TopnState *) PG_GETARG_POINTER(1);

	if (b == NULL)
	{
		if (a == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(a);
	}
	/* copy b into the aggregate context by way of its stored form */
	if (a == NULL)
		a = sketch_topn_state_create(aggcxt, b->capacity);
	sketch_topn_state_merge_state(a, b);
	PG_RETURN_POINTER(a);
}

Datum
streamkpi_topn_serialize(PG_FUNCTION_ARGS)
{
	PG_RETURN_BYTEA_P(sketch_topn_state_pack((TopnState *) PG_GETARG_POINTER(0)));
}

Datum
streamkpi_topn_deserialize(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt = topn_agg_context(fcinfo, "streamkpi_topn_deserialize");
	TopnView	v;

	topn_view_datum(PG_GETARG_BYTEA_PP(0), &v);
	PG_RETURN_POINTER(sketch_topn_state_from_view(aggcxt, &v));
}

Datum
streamkpi_topn_final(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(sketch_topn_state_pack((TopnState *) PG_GETARG_POINTER(0)));
}

/* topn_union(a, b) -> topn, with the larger of the two capacities */
Datum
streamkpi_topn_union(PG_FUNCTION_ARGS)
{
	TopnView	va;
	TopnView	vb;
	MemoryContext cxt;
	TopnState  *st;
	bytea	   *result;
	MemoryContext old;

	topn_view_datum(PG_GETARG_BYTEA_PP(0), &va);
	topn_view_datum(PG_GETARG_BYTEA_PP(1), &vb);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "topn union",
								ALLOCSET_DEFAULT_SIZES);
	st = sketch_topn_state_from_view(cxt, va.capacity >= vb.capacity ? &va : &vb);
	sketch_topn_state_merge_view(st, va.capacity >= vb.capacity ? &vb : &va);
	old = MemoryContextSwitchTo(cxt);
	result = sketch_topn_state_pack(st);
	MemoryContextSwitchTo(old);
	result = (bytea *) PG_DETOAST_DATUM_COPY(PointerGetDatum(result));
	MemoryContextDelete(cxt);
	PG_RETURN_BYTEA_P(result);
}

/*
 * topn_items(topn [, n]) -> setof (item, count, max_error, guaranteed).
 * guaranteed: the item's lower bound reaches the upper bound of every
 * item not listed, so it surely belongs in the top n.
 */
Datum
streamkpi_topn_items(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bytea	   *b = PG_GETARG_BYTEA_PP(0);
	TopnView	v;
	TopnEntry  *e;
	int32		n;
	int64		threshold;

	topn_view_datum(b, &v);
	n = v.nitems;
	if (PG_NARGS() > 1)
	{
		if (PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("number of items must not be NULL")));
		if (PG_GETARG_INT32(1) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("number of items must not be negative")));
		n = Min(n, PG_GETARG_INT32(1));
	}

	/* the largest count any unlisted item can have */
	e = sketch_topn_entries_ordered(&v);
	threshold = v.floor;
	if (n < v.nitems)
		threshold = Max(threshold, e[n].count);

	InitMaterializedSRF(fcinfo, 0);
	for (int32 i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = PointerGetDatum(cstring_to_text_with_len(e[i].data, e[i].len));
		values[1] = Int64GetDatum(e[i].count);
		values[2] = Int64GetDatum(e[i].error);
		values[3] = BoolGetDatum(e[i].count - e[i].error >= threshold);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* topn_info(topn) -> (capacity, items, floor, total) */
Datum
streamkpi_topn_info(PG_FUNCTION_ARGS)
{
	TopnView	v;
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	topn_view_datum(PG_GETARG_BYTEA_PP(0), &v);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int32GetDatum(v.capacity);
	values[1] = Int32GetDatum(v.nitems);
	values[2] = Int64GetDatum(v.floor);
	values[3] = Int64GetDatum(v.total);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
