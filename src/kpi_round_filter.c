/*-------------------------------------------------------------------------
 *
 * kpi_round_filter.c
 *	  streamkpi._kpi_in_round(ingest_xid, s_old, s_new, events): is a listen
 *	  one of a round's, committed as of s_new and not as of s_old?  It is
 *	  pg_visible_in_snapshot(ingest_xid, s_new) AND NOT
 *	  pg_visible_in_snapshot(ingest_xid, s_old), with a planner support
 *	  function that tells the planner what that SQL cannot:
 *
 *	  - the ingest_xid range [pg_snapshot_xmin(s_old), pg_snapshot_xmax(s_new))
 *	    as an index condition (lossy: the test itself filters the rows);
 *	  - that about "events" rows pass (the engine counted them, up to a
 *	    bound), where the statistics of listens, older than the round's
 *	    transactions, give a few dozen: a plan for a few dozen rows is
 *	    not the plan for a round of a hundred thousand.
 *
 *	  and kpi_round_count(), that count of events: the entries of the
 *	  ingest_xid btrees in that range, read from the indexes alone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/pathnodes.h"
#include "nodes/supportnodes.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "kpi.h"

PG_FUNCTION_INFO_V1(streamkpi_kpi_in_round);

Datum
streamkpi_kpi_in_round(PG_FUNCTION_ARGS)
{
	Datum		xid = PG_GETARG_DATUM(0);

	PG_RETURN_BOOL(DatumGetBool(DirectFunctionCall2(pg_visible_in_snapshot, xid,
													PG_GETARG_DATUM(2))) &&
				   !DatumGetBool(DirectFunctionCall2(pg_visible_in_snapshot, xid,
													 PG_GETARG_DATUM(1))));
}

/* argument i of the call as a non-null constant, or NULL */
static Const *
const_arg(List *args, int i)
{
	Node	   *arg = list_length(args) > i ? list_nth(args, i) : NULL;

	if (arg == NULL || !IsA(arg, Const) || ((Const *) arg)->constisnull)
		return NULL;
	return (Const *) arg;
}

/* the share of the relation's rows that the counted events are */
static Node *
in_round_selectivity(SupportRequestSelectivity *req)
{
	Const	   *events = const_arg(req->args, 3);
	Node	   *xid = linitial(req->args);
	RelOptInfo *rel;

	if (req->is_join || events == NULL || !IsA(xid, Var) ||
		((Var *) xid)->varno >= req->root->simple_rel_array_size)
		return NULL;
	rel = req->root->simple_rel_array[((Var *) xid)->varno];
	if (rel == NULL)
		return NULL;
	req->selectivity = rel->tuples > (double) DatumGetInt64(events->constvalue)
		? (double) DatumGetInt64(events->constvalue) / rel->tuples : 1.0;
	return (Node *) req;
}

/* xid <op> bound, an index clause */
static Expr *
xid_clause(Oid op, Node *xid, Datum bound)
{
	return make_opclause(op, BOOLOID, false, (Expr *) copyObject(xid),
						 (Expr *) makeConst(XID8OID, -1, InvalidOid, sizeof(uint64),
											bound, false, FLOAT8PASSBYVAL),
						 InvalidOid, InvalidOid);
}

/* ingest_xid >= xmin(s_old) AND ingest_xid < xmax(s_new) on a btree */
static Node *
in_round_index_condition(SupportRequestIndexCondition *req)
{
	List	   *args = IsA(req->node, FuncExpr) ? ((FuncExpr *) req->node)->args : NIL;
	Const	   *s_old = const_arg(args, 1);
	Const	   *s_new = const_arg(args, 2);
	Oid			ge;
	Oid			lt;

	if (req->indexarg != 0 || s_old == NULL || s_new == NULL ||
		req->index->relam != BTREE_AM_OID)
		return NULL;
	ge = get_opfamily_member(req->opfamily, XID8OID, XID8OID,
							 BTGreaterEqualStrategyNumber);
	lt = get_opfamily_member(req->opfamily, XID8OID, XID8OID,
							 BTLessStrategyNumber);
	if (!OidIsValid(ge) || !OidIsValid(lt))
		return NULL;
	req->lossy = true;
	return (Node *) list_make2(xid_clause(ge, linitial(args),
										  DirectFunctionCall1(pg_snapshot_xmin,
															  s_old->constvalue)),
							   xid_clause(lt, linitial(args),
										  DirectFunctionCall1(pg_snapshot_xmax,
															  s_new->constvalue)));
}

PG_FUNCTION_INFO_V1(streamkpi_kpi_in_round_support);

Datum
streamkpi_kpi_in_round_support(PG_FUNCTION_ARGS)
{
	Node	   *req = (Node *) PG_GETARG_POINTER(0);

	if (IsA(req, SupportRequestSelectivity))
		PG_RETURN_POINTER(in_round_selectivity((SupportRequestSelectivity *) req));
	if (IsA(req, SupportRequestIndexCondition))
		PG_RETURN_POINTER(in_round_index_condition((SupportRequestIndexCondition *) req));
	PG_RETURN_POINTER(NULL);
}

/* ---- the count of a round's events ---- */

/* pg_class.reltuples of streamkpi.<name>, -1 when unknown */
static double
kpi_reltuples(Oid nsp, const char *name)
{
	Oid			relid = get_relname_relid(name, nsp);
	HeapTuple	tup;
	double		tuples;

	if (!OidIsValid(relid))
		return -1;
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		return -1;
	tuples = ((Form_pg_class) GETSTRUCT(tup))->reltuples;
	ReleaseSysCache(tup);
	return tuples;
}

/*
 * The btree of a leaf partition whose first column is ingest_xid (xid8
 * opclass), complete and valid, opened; or NULL.  *ge and *lt get the
 * functions of its >= and < operators.
 */
static Relation
kpi_xid_index(Relation heap, RegProcedure *ge, RegProcedure *lt)
{
	AttrNumber	attno = get_attnum(RelationGetRelid(heap), "ingest_xid");
	List	   *indexes = RelationGetIndexList(heap);
	ListCell   *lc;

	foreach(lc, indexes)
	{
		Relation	index = index_open(lfirst_oid(lc), AccessShareLock);
		Oid			ge_op = InvalidOid;
		Oid			lt_op = InvalidOid;

		if (index->rd_rel->relam == BTREE_AM_OID &&
			index->rd_index->indisvalid &&
			index->rd_index->indkey.values[0] == attno &&
			index->rd_opcintype[0] == XID8OID &&
			heap_attisnull(index->rd_indextuple, Anum_pg_index_indpred, NULL))
		{
			ge_op = get_opfamily_member(index->rd_opfamily[0], XID8OID, XID8OID,
										BTGreaterEqualStrategyNumber);
			lt_op = get_opfamily_member(index->rd_opfamily[0], XID8OID, XID8OID,
										BTLessStrategyNumber);
		}
		if (OidIsValid(ge_op) && OidIsValid(lt_op))
		{
			*ge = get_opcode(ge_op);
			*lt = get_opcode(lt_op);
			list_free(indexes);
			return index;
		}
		index_close(index, AccessShareLock);
	}
	list_free(indexes);
	return NULL;
}

/*
 * The index entries of one leaf in [xmin, xmax), counted up to limit;
 * -1 when the leaf has no ingest_xid btree.
 */
static int64
kpi_count_leaf(Oid leaf, Datum xmin, Datum xmax, int64 limit)
{
	Relation	heap = table_open(leaf, NoLock);	/* locked by the caller */
	RegProcedure ge;
	RegProcedure lt;
	Relation	index = kpi_xid_index(heap, &ge, &lt);
	IndexScanDesc scan;
	ScanKeyData keys[2];
	int64		n = 0;

	if (index == NULL)
	{
		table_close(heap, NoLock);
		return -1;
	}
	ScanKeyInit(&keys[0], 1, BTGreaterEqualStrategyNumber, ge, xmin);
	ScanKeyInit(&keys[1], 1, BTLessStrategyNumber, lt, xmax);
	scan = index_beginscan(heap, index, GetActiveSnapshot(), 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	while (n < limit && index_getnext_tid(scan, ForwardScanDirection) != NULL)
	{
		CHECK_FOR_INTERRUPTS();
		n++;
	}
	index_endscan(scan);
	index_close(index, AccessShareLock);
	table_close(heap, NoLock);
	return n;
}

/*
 * How many new events are there, counted up to twice the larger of users
 * and tracks (at least 2,000)?  The planner's estimate of the round's rows
 * (_kpi_in_round's "events"), and what decides how the round finds tracks
 * and users (kpi_dims_cache_choose()).
 *
 * An estimate: the index entries of the round's xid range in every
 * partition, without visiting the heap, where the rows of a round are on
 * pages not yet vacuumed.  Entries of aborted or deleted rows and of
 * transactions still running count too.  -1 when a partition has no
 * btree on ingest_xid: the caller counts another way.
 */
int64
kpi_round_count(Datum s_old, Datum s_new)
{
	Oid			nsp = get_namespace_oid("streamkpi", false);
	Oid			listens = get_relname_relid("listens", nsp);
	Datum		xmin = DirectFunctionCall1(pg_snapshot_xmin, s_old);
	Datum		xmax = DirectFunctionCall1(pg_snapshot_xmax, s_new);
	int64		limit = 2 * (int64) Max(1000.0, Max(kpi_reltuples(nsp, "users"),
													 kpi_reltuples(nsp, "tracks")));
	int64		count = 0;
	List	   *parts;
	ListCell   *lc;

	if (!OidIsValid(listens))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"streamkpi.listens\" does not exist")));
	parts = find_all_inheritors(listens, AccessShareLock, NULL);
	foreach(lc, parts)
	{
		int64		n;

		if (get_rel_relkind(lfirst_oid(lc)) == RELKIND_PARTITIONED_TABLE)
			continue;
		if (get_rel_relkind(lfirst_oid(lc)) != RELKIND_RELATION)
			return -1;
		n = kpi_count_leaf(lfirst_oid(lc), xmin, xmax, limit - count);
		if (n < 0)
			return -1;
		count += n;
		if (count >= limit)
			break;
	}
	list_free(parts);
	return count;
}
