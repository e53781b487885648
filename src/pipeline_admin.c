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

	/*
	 * Planning may run the owner's code (immutable functions are folded) in
	 * the session of whoever asked, a superuser perhaps: as for maintenance
	 * commands, a security-restricted operation, so that it cannot leave
	 * temporary objects behind that the session would later use.
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", search_path, PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, ERROR, false);
	relid = pipeline_check_statement(sql);
	/* planning may run the owner's functions: undo any setting they made */
	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);

	PG_RETURN_OID(relid);
}

/* ---- the role a pipeline function acts for ---- */

/*
 * Set by _note_caller(), taken by _caller(); forgotten at transaction end.
 * The launcher is woken when the transaction that started a pipeline
 * commits: it reads the pipelines table, so waking it earlier would make it
 * wait for its next periodic look (up to a second).
 */
static Oid	noted_caller = InvalidOid;
static bool wake_launcher_at_commit = false;

static void
pipeline_admin_xact_callback(XactEvent event, void *arg)
{
	bool		commit = event == XACT_EVENT_COMMIT ||
		event == XACT_EVENT_PARALLEL_COMMIT;

	if (!commit && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_ABORT)
		return;
	if (commit && wake_launcher_at_commit)
		pipeline_launcher_wake();
	wake_launcher_at_commit = false;
	noted_caller = InvalidOid;
}

static void
register_xact_callback(void)
{
	static bool registered = false;

	if (!registered)
	{
		RegisterXactCallback(pipeline_admin_xact_callback, NULL);
		registered = true;
	}
}

PG_FUNCTION_INFO_V1(streamkpi_note_caller);

/*
 * streamkpi._note_caller(): note current_user for the next _caller().  The
 * pipeline functions' SECURITY INVOKER wrappers call it, where current_user
 * is the role that asked.  Anyone may call it: it only ever notes the
 * calling role itself.
 */
Datum
streamkpi_note_caller(PG_FUNCTION_ARGS)
{
	register_xact_callback();
	noted_caller = GetUserId();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(streamkpi_caller);

/*
 * streamkpi._caller() -> regrole: the role noted by _note_caller(), taken
 * once by the SECURITY DEFINER functions behind create_pipeline() & co,
 * before they run any user code.  Neither current_user there (the
 * extension's owner) nor the SET ROLE level is that role: a superuser
 * calling an admin's SECURITY DEFINER function that manages pipelines
 * would lend it his rights.
 */
Datum
streamkpi_caller(PG_FUNCTION_ARGS)
{
	Oid			caller = noted_caller;

	noted_caller = InvalidOid;
	if (!OidIsValid(caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("streamkpi's internal pipeline functions cannot be called directly"),
				 errhint("Call streamkpi.create_pipeline(), start_pipeline(), stop_pipeline(), alter_pipeline() or drop_pipeline().")));
	PG_RETURN_OID(caller);
}

PG_FUNCTION_INFO_V1(streamkpi_wake_launcher);

/*
 * streamkpi._wake_launcher(): make the launcher look at the pipelines as
 * soon as the calling transaction commits.
 */
Datum
streamkpi_wake_launcher(PG_FUNCTION_ARGS)
{
	streamkpi_require_preload("starting a pipeline");
	register_xact_callback();
	wake_launcher_at_commit = true;
	PG_RETURN_VOID();
}
