/*-------------------------------------------------------------------------
 *
 * fdw_plan.c
 *	  The streamkpi_kafka handler and planning: which restrictions on the
 *	  partition, offset and timestamp meta columns narrow the offsets a
 *	  scan reads, and how EXPLAIN shows them.
 *
 *	  Only when a parallel plan is possible does planning ask the broker
 *	  for the topic's size (partitions, messages between the watermarks),
 *	  briefly and without ever failing: with no answer the plan is serial,
 *	  so plain EXPLAIN works without a broker.  A backend remembers the
 *	  answer for a minute.  Large topics get a Parallel
 *	  Foreign Scan whose participants share out the partitions.
 *
 *	  Pushed-down restrictions are still checked on every row: they only
 *	  decide where reading starts and stops.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/stratnum.h"
#include "catalog/pg_opfamily.h"
#include "catalog/pg_opclass.h"
#include "catalog/pg_type.h"
#include "foreign/fdwapi.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/planmain.h"
#include "optimizer/restrictinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "miscadmin.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/timestamp.h"

#include "fdw.h"
#include "streamkpi.h"

/* a scan connects to the broker and asks for metadata and watermarks */
#define KAFKA_STARTUP_COST 100.0
/* decoding a message costs about as much as four heap tuples */
#define KAFKA_MESSAGE_COST (cpu_tuple_cost * 4)
/* longest wait for the broker while planning, in ms */
#define KAFKA_PLAN_BUDGET_MS 1000
/* how long a backend trusts a topic's size, in ms, and for how many topics */
#define KAFKA_SIZE_TTL_MS 60000
#define KAFKA_SIZE_CACHE 16

PG_FUNCTION_INFO_V1(streamkpi_kafka_handler);

typedef struct KafkaPlanInfo
{
	int			meta_attno[KAFKA_META_PAYLOAD + 1];
	bool		ts_pushable;	/* timestamp column is timestamptz */
	List	   *kinds;			/* KafkaPushKind per pushed qual */
	List	   *strategies;		/* btree strategy (or 0 for IN) */
	List	   *exprs;			/* the comparison value */
	List	   *descs;			/* text for EXPLAIN */
	bool		sized;			/* the broker told us the topic's size */
	int32		npartitions;
	int64		messages;		/* between the watermarks, all partitions */
} KafkaPlanInfo;

/*
 * Topic sizes this backend asked for lately: an estimate need not be
 * fresh, and asking costs a connection to the broker on every plan.
 */
typedef struct KafkaSizeEntry
{
	Oid			serverid;
	Oid			userid;
	char	   *topic;			/* in TopMemoryContext; NULL when free */
	TimestampTz asked_at;
	bool		sized;
	int32		npartitions;
	int64		messages;
} KafkaSizeEntry;

static KafkaSizeEntry size_cache[KAFKA_SIZE_CACHE];

/* the size of t's topic, from the cache or the broker */
static bool
topic_size(KafkaTable *t, int32 *npartitions, int64 *messages)
{
	TimestampTz now = GetCurrentTimestamp();
	Oid			userid = GetUserId();
	KafkaSizeEntry *e = &size_cache[0];

	for (int i = 0; i < KAFKA_SIZE_CACHE; i++)
	{
		KafkaSizeEntry *c = &size_cache[i];

		if (c->topic && c->serverid == t->serverid && c->userid == userid &&
			strcmp(c->topic, t->topic) == 0 &&
			!TimestampDifferenceExceeds(c->asked_at, now, KAFKA_SIZE_TTL_MS))
		{
			*npartitions = c->npartitions;
			*messages = c->messages;
			return c->sized;
		}
		/* else replace a free or the oldest entry */
		if (e->topic && (c->topic == NULL || c->asked_at < e->asked_at))
			e = c;
	}
	if (e->topic)
		pfree(e->topic);
	e->topic = NULL;
	e->sized = kafka_topic_size(t->props, t->topic,
								Min(streamkpi_kafka_timeout_ms, KAFKA_PLAN_BUDGET_MS),
								&e->npartitions, &e->messages);
	e->serverid = t->serverid;
	e->userid = userid;
	e->asked_at = now;
	e->topic = MemoryContextStrdup(TopMemoryContext, t->topic);
	*npartitions = e->npartitions;
	*messages = e->messages;
	return e->sized;
}

static const char *const strategy_ops[] = {"", "<", "<=", "=", ">=", ">"};

/* an expression we can evaluate once when the scan starts */
static bool
is_scan_constant(Node *n)
{
	return !contain_var_clause(n) && !contain_volatile_functions(n) &&
		!contain_subplans(n);
}

static char *
describe_value(Node *expr, List *dpcxt)
{
	return deparse_expression(expr, dpcxt, false, false);
}

static void
push(KafkaPlanInfo *pi, KafkaPushKind kind, int strategy, Node *expr,
	 char *desc)
{
	pi->kinds = lappend_int(pi->kinds, kind);
	pi->strategies = lappend_int(pi->strategies, strategy);
	pi->exprs = lappend(pi->exprs, expr);
	pi->descs = lappend(pi->descs, makeString(desc));
}

/* the kind of pushdown a restriction on column attno could be, or 0 */
static KafkaPushKind
push_kind(KafkaPlanInfo *pi, AttrNumber attno)
{
	if (attno == pi->meta_attno[KAFKA_META_PARTITION])
		return KAFKA_PUSH_PARTITION;
	if (attno == pi->meta_attno[KAFKA_META_OFFSET])
		return KAFKA_PUSH_OFFSET;
	if (attno == pi->meta_attno[KAFKA_META_TIMESTAMP] && pi->ts_pushable)
		return KAFKA_PUSH_TIMESTAMP;
	return 0;
}

/*
 * column op value or value op column: partition =, offset comparisons,
 * timestamp > and >=.
 */
static bool
classify_opexpr(RelOptInfo *baserel, KafkaPlanInfo *pi, OpExpr *op,
				List *dpcxt)
{
	Node	   *l = linitial(op->args);
	Node	   *r = lsecond(op->args);
	Var		   *var;
	Node	   *other;
	bool		commuted = false;
	Oid			family;
	int			strategy;
	KafkaPushKind kind;

	if (IsA(l, RelabelType))
		l = (Node *) ((RelabelType *) l)->arg;
	if (IsA(r, RelabelType))
		r = (Node *) ((RelabelType *) r)->arg;
	if ((var = kafka_base_var(l, baserel->relid)) != NULL)
		other = r;
	else if ((var = kafka_base_var(r, baserel->relid)) != NULL)
	{
		other = l;
		commuted = true;
	}
	else
		return false;
	if (!is_scan_constant(other) || (kind = push_kind(pi, var->varattno)) == 0)
		return false;

	if (kind == KAFKA_PUSH_TIMESTAMP)
	{
		if (exprType(other) != TIMESTAMPTZOID)
			return false;
		family = get_opclass_family(TIMESTAMPTZ_BTREE_OPS_OID);
	}
	else
	{
		if (!kafka_is_integer_type(exprType(other)))
			return false;
		family = INTEGER_BTREE_FAM_OID;
	}
	strategy = get_op_opfamily_strategy(op->opno, family);
	if (strategy == 0)
		return false;
	if (commuted)
		strategy = kafka_commute_strategy(strategy);
	if (kind == KAFKA_PUSH_PARTITION && strategy != BTEqualStrategyNumber)
		return false;
	if (kind == KAFKA_PUSH_TIMESTAMP &&
		strategy != BTGreaterStrategyNumber &&
		strategy != BTGreaterEqualStrategyNumber)
		return false;
	push(pi, kind, strategy, other,
		 psprintf("%s %s", strategy_ops[strategy], describe_value(other, dpcxt)));
	return true;
}

/* "IN (1, 2)" for EXPLAIN, from a constant integer array */
static char *
describe_int_array(Const *c)
{
	int64	   *values;
	bool	   *nulls;
	int			n = kafka_int_array_elements(c->constvalue, &values, &nulls);
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
		appendStringInfo(&buf, "%s%s", i > 0 ? ", " : "IN (",
						 nulls[i] ? "NULL" : psprintf(INT64_FORMAT, values[i]));
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/* partition = ANY (array) and partition IN (...) */
static bool
classify_in(RelOptInfo *baserel, KafkaPlanInfo *pi, ScalarArrayOpExpr *sa,
			List *dpcxt)
{
	Var		   *var = kafka_base_var(linitial(sa->args), baserel->relid);
	Node	   *r = lsecond(sa->args);

	if (!sa->useOr || var == NULL ||
		var->varattno != pi->meta_attno[KAFKA_META_PARTITION])
		return false;
	if (!is_scan_constant(r) ||
		!kafka_is_integer_type(get_element_type(exprType(r))))
		return false;
	if (get_op_opfamily_strategy(sa->opno, INTEGER_BTREE_FAM_OID) !=
		BTEqualStrategyNumber)
		return false;
	if (IsA(r, Const) && !((Const *) r)->constisnull)
		push(pi, KAFKA_PUSH_PARTITION, 0, r, describe_int_array((Const *) r));
	else
		push(pi, KAFKA_PUSH_PARTITION, 0, r,
			 psprintf("IN %s", describe_value(r, dpcxt)));
	return true;
}

/*
 * Try one restriction clause; true when it narrows the scan.
 */
static bool
classify_clause(PlannerInfo *root, RelOptInfo *baserel, KafkaPlanInfo *pi,
				Expr *clause, List *dpcxt)
{
	if (IsA(clause, OpExpr) && list_length(((OpExpr *) clause)->args) == 2)
		return classify_opexpr(baserel, pi, (OpExpr *) clause, dpcxt);
	if (IsA(clause, ScalarArrayOpExpr))
		return classify_in(baserel, pi, (ScalarArrayOpExpr *) clause, dpcxt);
	return false;
}

static void
kafkaGetForeignRelSize(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	KafkaPlanInfo *pi = palloc0(sizeof(KafkaPlanInfo));
	KafkaTable *t = kafka_table_load(foreigntableid, false);
	List	   *dpcxt = deparse_context_for(t->relname, foreigntableid);
	ListCell   *lc;
	double		rows = 100000;
	double		sel = 1.0;

	memcpy(pi->meta_attno, t->meta_attno, sizeof(pi->meta_attno));
	pi->ts_pushable = t->meta_attno[KAFKA_META_TIMESTAMP] != 0 &&
		t->cols[t->meta_attno[KAFKA_META_TIMESTAMP] - 1].typid == TIMESTAMPTZOID;

	foreach(lc, baserel->baserestrictinfo)
	{
		RestrictInfo *ri = lfirst_node(RestrictInfo, lc);

		if (classify_clause(root, baserel, pi, ri->clause, dpcxt))
			sel *= 0.1;
	}

	/* the broker is asked only when the answer could matter */
	if (baserel->consider_parallel && max_parallel_workers_per_gather > 0)
		pi->sized = topic_size(t, &pi->npartitions, &pi->messages);
	if (pi->sized)
		rows = (double) pi->messages;
	baserel->tuples = rows;
	baserel->rows = clamp_row_est(rows * sel);
	baserel->fdw_private = pi;
}

/*
 * Workers for a parallel scan: every participant reads whole partitions,
 * so more participants than partitions would idle.
 */
static int
parallel_workers_for(KafkaPlanInfo *pi)
{
	int			n = pi->npartitions - (parallel_leader_participation ? 1 : 0);

	return Min(n, max_parallel_workers_per_gather);
}

/* the share of the work one participant does, as costsize.c counts it */
static double
parallel_divisor(int workers)
{
	double		d = workers;

	if (parallel_leader_participation && 1.0 - 0.3 * workers > 0)
		d += 1.0 - 0.3 * workers;
	return d;
}

static void
kafkaGetForeignPaths(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	KafkaPlanInfo *pi = (KafkaPlanInfo *) baserel->fdw_private;
	Cost		startup = KAFKA_STARTUP_COST;
	Cost		run = baserel->rows * KAFKA_MESSAGE_COST;
	int			workers;

	add_path(baserel, (Path *)
			 create_foreignscan_path(root, baserel, NULL, baserel->rows,
									 startup, startup + run, NIL, NULL, NULL, NIL));

	/*
	 * A partial path only for a topic of known size with partitions to
	 * share; Gather's setup and per-tuple costs then keep small topics
	 * serial.
	 */
	if (!pi->sized || !baserel->consider_parallel || pi->npartitions < 2)
		return;
	workers = parallel_workers_for(pi);
	if (workers < 1)
		return;
	{
		double		divisor = parallel_divisor(workers);
		ForeignPath *path;

		path = create_foreignscan_path(root, baserel, NULL,
									   clamp_row_est(baserel->rows / divisor),
									   startup, startup + run / divisor,
									   NIL, NULL, NULL, NIL);
		path->path.parallel_aware = true;
		path->path.parallel_safe = true;
		path->path.parallel_workers = workers;
		add_partial_path(baserel, (Path *) path);
	}
}

static ForeignScan *
kafkaGetForeignPlan(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid,
					ForeignPath *best_path, List *tlist, List *scan_clauses,
					Plan *outer_plan)
{
	KafkaPlanInfo *pi = (KafkaPlanInfo *) baserel->fdw_private;
	List	   *fdw_private;

	/* every clause is rechecked locally; pushdown only bounds offsets */
	scan_clauses = extract_actual_clauses(scan_clauses, false);
	fdw_private = list_make3(pi->kinds, pi->strategies, pi->descs);
	return make_foreignscan(tlist, scan_clauses, baserel->relid,
							pi->exprs, fdw_private, NIL, NIL, outer_plan);
}

/* EXPLAIN: topic, pushed-down bounds; with ANALYZE the ranges read */
static void
kafkaExplainForeignScan(ForeignScanState *node, ExplainState *es)
{
	ForeignScan *plan = (ForeignScan *) node->ss.ps.plan;
	List	   *kinds = linitial(plan->fdw_private);
	KafkaTable *t = kafka_table_load(RelationGetRelid(node->ss.ss_currentRelation), false);
	List	   *descs = lthird(plan->fdw_private);
	StringInfoData parts,
				offs,
				stamps;
	ListCell   *lk,
			   *ld;

	if (!es->verbose)
	{
		kafka_explain_ranges(node, es);
		return;
	}
	initStringInfo(&parts);
	initStringInfo(&offs);
	initStringInfo(&stamps);
	forboth(lk, kinds, ld, descs)
	{
		StringInfo	s = lfirst_int(lk) == KAFKA_PUSH_PARTITION ? &parts :
		lfirst_int(lk) == KAFKA_PUSH_OFFSET ? &offs : &stamps;

		appendStringInfo(s, "%s%s", s->len > 0 ? " AND " : "", strVal(lfirst(ld)));
	}
	ExplainPropertyText("Kafka Topic", t->topic, es);
	ExplainPropertyText("Kafka Partitions", parts.len ? parts.data : "all", es);
	ExplainPropertyText("Kafka Offsets",
						offs.len ? psprintf("%s (within watermarks)", offs.data) :
						"low watermark to high watermark", es);
	if (stamps.len)
		ExplainPropertyText("Kafka Timestamps", stamps.data, es);
	kafka_explain_ranges(node, es);
}

Datum
streamkpi_kafka_handler(PG_FUNCTION_ARGS)
{
	FdwRoutine *r = makeNode(FdwRoutine);

	r->GetForeignRelSize = kafkaGetForeignRelSize;
	r->GetForeignPaths = kafkaGetForeignPaths;
	r->GetForeignPlan = kafkaGetForeignPlan;
	r->ExplainForeignScan = kafkaExplainForeignScan;
	kafka_scan_routines(r);
	kafka_modify_routines(r);
	PG_RETURN_POINTER(r);
}
