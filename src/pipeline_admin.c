/*-------------------------------------------------------------------------
 *
 * pipeline_admin.c
 *	  Checks behind create_pipeline and alter_pipeline: the statement must
 *	  parse, analyze and plan for its owner, and read exactly one
 *	  streamkpi_kafka foreign table.  Errors surface at creation, not later
 *	  in a worker's log.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_class.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "parser/parser.h"
#include "tcop/cmdtag.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "pipeline.h"
#include "streamkpi.h"

#define KAFKA_FDW_NAME "streamkpi_kafka"

/* Collect the OIDs of streamkpi_kafka foreign tables a query reads. */
static bool
kafka_tables_walker(Node *node, List **relids)
{
	if (node == NULL)
		return false;
	if (IsA(node, RangeTblEntry))
	{
		RangeTblEntry *rte = (RangeTblEntry *) node;

		if (rte->rtekind == RTE_RELATION &&
			rte->relkind == RELKIND_FOREIGN_TABLE)
		{
			ForeignTable *ft = GetForeignTable(rte->relid);
			ForeignServer *server = GetForeignServer(ft->serverid);
			ForeignDataWrapper *fdw = GetForeignDataWrapper(server->fdwid);

			if (strcmp(fdw->fdwname, KAFKA_FDW_NAME) == 0)
				*relids = list_append_unique_oid(*relids, rte->relid);
		}
		return false;
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, kafka_tables_walker, relids,
								 QTW_EXAMINE_RTES_BEFORE);
	return expression_tree_walker(node, kafka_tables_walker, relids);
}

/*
 * Parse, analyze and plan the statement; return the Kafka foreign table it
 * reads.  Runs as the current user, so privileges are checked for the
 * pipeline's owner.
 */
static Oid
pipeline_check_statement(const char *sql)
{
	List	   *raw = pg_parse_query(sql);
	RawStmt    *stmt;
	List	   *queries;
	List	   *relids = NIL;
	ListCell   *lc;

	if (list_length(raw) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a pipeline runs exactly one SQL statement, not %d",
						list_length(raw))));
	stmt = linitial_node(RawStmt, raw);
	queries = pg_analyze_and_rewrite_fixedparams(stmt, sql, NULL, 0, NULL);

	foreach(lc, queries)
	{
		Query	   *query = lfirst_node(Query, lc);

		if (query->commandType == CMD_UTILITY)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a pipeline statement must be SELECT, INSERT, UPDATE, DELETE or MERGE"),
					 errdetail("Utility statements such as %s cannot run per batch.",
							   CreateCommandName(query->utilityStmt))));
		(void) kafka_tables_walker((Node *) query, &relids);
	}

	if (list_length(relids) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a pipeline statement must read exactly one %s foreign table, not %d",
						KAFKA_FDW_NAME, list_length(relids)),
				 errhint("Read the topic through a foreign table created with SERVER ... FOREIGN DATA WRAPPER %s.",
						 KAFKA_FDW_NAME)));

	/* planning errors belong to creation time too */
	(void) pg_plan_queries(queries, sql, CURSOR_OPT_PARALLEL_OK, NULL);

	return linitial_oid(relids);
}

PG_FUNCTION_INFO_V1(streamkpi_pipeline_check);

/*
 * streamkpi._pipeline_check(name text, statement text, owner regrole,
 *							 search_path text) -> regclass
 *
 * Checked as the owner, who is the role the worker will run it as, with
 * the search_path the worker will use.
 */
Datum
streamkpi_pipeline_check(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *sql = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Oid			owner = PG_GETARG_OID(2);
	char	   *search_path = text_to_cstring(PG_GETARG_TEXT_PP(3));
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	Oid			relid;

	pipeline_require_owner(name, owner);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", search_path, PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, ERROR, false);
	relid = pipeline_check_statement(sql);
	/* planning may run the owner's functions: undo any setting they made */
	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);

	PG_RETURN_OID(relid);
}

PG_FUNCTION_INFO_V1(streamkpi_caller);

/*
 * streamkpi._caller() -> regrole: the role that called into a SECURITY
 * DEFINER function (the SET ROLE level), which current_user no longer is.
 */
Datum
streamkpi_caller(PG_FUNCTION_ARGS)
{
	PG_RETURN_OID(GetOuterUserId());
}

PG_FUNCTION_INFO_V1(streamkpi_wake_launcher);

static bool wake_launcher_at_commit = false;

/*
 * The launcher reads the pipelines table, so waking it before our change is
 * committed would make it wait for its next periodic look (up to a second).
 */
static void
wake_launcher_xact_callback(XactEvent event, void *arg)
{
	if (!wake_launcher_at_commit)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		pipeline_launcher_wake();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		wake_launcher_at_commit = false;
}

/*
 * streamkpi._wake_launcher(): make the launcher look at the pipelines as
 * soon as the calling transaction commits.
 */
Datum
streamkpi_wake_launcher(PG_FUNCTION_ARGS)
{
	static bool callback_registered = false;

	streamkpi_require_preload("starting a pipeline");
	if (!callback_registered)
	{
		RegisterXactCallback(wake_launcher_xact_callback, NULL);
		callback_registered = true;
	}
	wake_launcher_at_commit = true;
	PG_RETURN_VOID();
}
