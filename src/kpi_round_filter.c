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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/stratnum.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "nodes/pathnodes.h"
#include "nodes/supportnodes.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"

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
