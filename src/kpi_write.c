/*-------------------------------------------------------------------------
 *
 * kpi_write.c
 *	  Many new rows into a KPI table the way COPY FROM writes them: the heap
 *	  in batches (heap_multi_insert: one WAL record per page, not per row),
 *	  then each row's index entries, with no plan, no tuple store of the
 *	  parameters and no expression per row.  The engine writes the new rows
 *	  of track_windows this way, the most numerous rows of a catch-up.
 *
 *	  A table with triggers, CHECK constraints or row security takes SQL
 *	  instead (kpi_insert_direct() says so), so that nothing a user added to
 *	  a KPI table is bypassed.  A duplicate key raises unique_violation as
 *	  an INSERT would.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "utils/resowner.h"
#include "catalog/namespace.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "kpi.h"

/* rows per heap_multi_insert call, as COPY FROM batches them */
#define KPI_INSERT_BATCH	1000

/* Does writing rel around the executor skip anything a user added? */
static bool
kpi_needs_executor(Relation rel, int natts)
{
	TupleConstr *constr = RelationGetDescr(rel)->constr;

	return rel->trigdesc != NULL || rel->rd_rel->relrowsecurity ||
		(constr != NULL && constr->num_check > 0) ||
		RelationGetDescr(rel)->natts != natts;
}

/*
 * Insert nrows rows into streamkpi.<table>, column a of row i being
 * cols[a].elems[i] (cols[a] may have nulls).  Returns false, having written
 * nothing, when the table must be written through SQL.
 */
bool
kpi_insert_direct(const char *table, int natts, KpiArray *cols)
{
	Oid			relid = get_relname_relid(table, get_namespace_oid("streamkpi", false));
	Relation	rel = table_open(relid, RowExclusiveLock);
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slots[KPI_INSERT_BATCH];
	CommandId	cid = GetCurrentCommandId(true);
	int			nrows = cols[0].n;

	if (kpi_needs_executor(rel, natts))
	{
		table_close(rel, RowExclusiveLock);
		return false;
	}
	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	for (int i = 0; i < Min(nrows, KPI_INSERT_BATCH); i++)
		slots[i] = table_slot_create(rel, NULL);

	for (int first = 0; first < nrows; first += KPI_INSERT_BATCH)
	{
		int			n = Min(KPI_INSERT_BATCH, nrows - first);

		for (int i = 0; i < n; i++)
		{
			ExecClearTuple(slots[i]);
			for (int a = 0; a < natts; a++)
			{
				slots[i]->tts_values[a] = cols[a].elems[first + i];
				slots[i]->tts_isnull[a] = cols[a].nulls != NULL && cols[a].nulls[first + i];
			}
			ExecStoreVirtualTuple(slots[i]);
		}
		table_multi_insert(rel, slots, n, cid, 0, NULL);
		for (int i = 0; i < n; i++)
		{
			if (rri->ri_NumIndices > 0)
				(void) ExecInsertIndexTuples(rri, slots[i], estate, false, false,
											 NULL, NIL);
			ResetPerTupleExprContext(estate);
		}
		CHECK_FOR_INTERRUPTS();
	}

	for (int i = 0; i < Min(nrows, KPI_INSERT_BATCH); i++)
		ExecDropSingleTupleTableSlot(slots[i]);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	return true;
}

/*
 * Run write(arg) in a subtransaction; false when it violated a unique
 * constraint (then it changed nothing), else what it returned.  Other
 * errors propagate.
 */
bool
kpi_unless_duplicate(bool (*write) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		ok = write(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		if (edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION)
			ReThrowError(edata);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return ok;
}
