/*-------------------------------------------------------------------------
 *
 * kpi_sql.c
 *	  How the KPI engine's steps (kpi_merge.c, kpi_day_topn.c, kpi_window.c)
 *	  run their statements: parameters as arrays, one statement for many
 *	  keys, with plans kept for the life of the backend.  The statements
 *	  that write rows read the arrays with unnest() in the select list: in
 *	  FROM, a function scan first copies every row into a tuplestore.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "kpi.h"

/* ---- parameter arrays ---- */

void
kpi_array_init(KpiArray *a, Oid elemtype, int cap)
{
	a->elemtype = elemtype;
	a->n = 0;
	a->cap = Max(cap, 8);
	a->elems = palloc(a->cap * sizeof(Datum));
	a->nulls = NULL;
}

void
kpi_array_add(KpiArray *a, Datum v)
{
	if (a->n == a->cap)
	{
		a->cap *= 2;
		a->elems = repalloc(a->elems, a->cap * sizeof(Datum));
		if (a->nulls != NULL)
			a->nulls = repalloc(a->nulls, a->cap * sizeof(bool));
	}
	if (a->nulls != NULL)
		a->nulls[a->n] = false;
	a->elems[a->n++] = v;
}

void
kpi_array_add_null(KpiArray *a)
{
	kpi_array_add(a, (Datum) 0);
	if (a->nulls == NULL)
		a->nulls = palloc0(a->cap * sizeof(bool));
	a->nulls[a->n - 1] = true;
}

/* a text datum of an interned string */
Datum
kpi_text_datum(KpiDelta *d, int64 id)
{
	return PointerGetDatum(cstring_to_text_with_len(d->strs[id].data,
													d->strs[id].len));
}

/*
 * The statements' plans, kept for the life of the backend: the KPI worker
 * runs the same dozen statements every round, and parsing and planning
 * them was 3% of a round.  Keyed by the statement's text (the hll schema
 * is part of some); the plan cache replans when a table changes.
 */
typedef struct KpiPlan
{
	char		sql[NAMEDATALEN];	/* hash key: the text's first bytes */
	const char *text;			/* the whole text, in CacheMemoryContext */
	SPIPlanPtr	plan;
	struct KpiPlan *next;		/* other texts with the same first bytes */
} KpiPlan;

static HTAB *kpi_plans = NULL;

static SPIPlanPtr
kpi_plan(const char *sql, int nargs, Oid *types)
{
	char		key[NAMEDATALEN] = {0};
	KpiPlan    *entry;
	KpiPlan    *p;
	bool		found;

	if (kpi_plans == NULL)
	{
		HASHCTL		ctl = {.keysize = NAMEDATALEN, .entrysize = sizeof(KpiPlan)};

		kpi_plans = hash_create("streamkpi KPI plans", 32, &ctl, HASH_ELEM | HASH_STRINGS);
	}
	strlcpy(key, sql, NAMEDATALEN);
	entry = hash_search(kpi_plans, key, HASH_ENTER, &found);
	if (!found)
	{
		entry->text = NULL;
		entry->next = NULL;
	}
	for (p = entry; p != NULL; p = p->next)
		if (p->text != NULL && strcmp(p->text, sql) == 0)
			return p->plan;
	p = entry->text == NULL ? entry
		: MemoryContextAllocZero(CacheMemoryContext, sizeof(KpiPlan));
	/* generic: the arrays' lengths do not change the plans' shapes */
	p->plan = SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
	if (p->plan == NULL)
		elog(ERROR, "could not prepare KPI statement: %s: %s",
			 SPI_result_code_string(SPI_result), sql);
	if (SPI_keepplan(p->plan) != 0)
		elog(ERROR, "could not keep the plan of KPI statement: %s", sql);
	p->text = MemoryContextStrdup(CacheMemoryContext, sql);
	if (p != entry)
	{
		p->next = entry->next;
		entry->next = p;
	}
	return p->plan;
}

/*
 * Run sql with the arrays as parameters $1..$nargs, its rows (if any) to
 * dest, or to SPI_tuptable when dest is NULL.  The SPI result code must be
 * expected.
 */
void
kpi_run_into(const char *sql, int nargs, KpiArray *args, int expected,
			 DestReceiver *dest)
{
	Oid		   *types = palloc(nargs * sizeof(Oid));
	ParamListInfo params = makeParamList(nargs);
	SPIExecuteOptions options = {.params = params, .dest = dest};
	int			rc;

	for (int i = 0; i < nargs; i++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;

		int			dims[1] = {args[i].n};
		int			lbs[1] = {1};

		get_typlenbyvalalign(args[i].elemtype, &typlen, &typbyval, &typalign);
		types[i] = get_array_type(args[i].elemtype);
		params->params[i].value =
			PointerGetDatum(construct_md_array(args[i].elems, args[i].nulls,
											   1, dims, lbs,
											   args[i].elemtype, typlen,
											   typbyval, typalign));
		params->params[i].isnull = false;
		params->params[i].pflags = PARAM_FLAG_CONST;
		params->params[i].ptype = types[i];
	}
	rc = SPI_execute_plan_extended(kpi_plan(sql, nargs, types), &options);
	if (rc != expected)
		elog(ERROR, "KPI statement failed: SPI result %d: %s", rc, sql);
}

void
kpi_run(const char *sql, int nargs, KpiArray *args, int expected)
{
	kpi_run_into(sql, nargs, args, expected, NULL);
}

/*
 * The schema of the hll extension, quoted: the statements name its
 * functions and type there, whatever the caller's search_path.
 */
const char *
kpi_hll_schema(void)
{
	if (SPI_execute("SELECT pg_catalog.quote_ident(n.nspname)"
					"  FROM pg_catalog.pg_extension e"
					"  JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
					" WHERE e.extname = 'hll'", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up extension hll");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"hll\" is not installed"),
				 errhint("CREATE EXTENSION streamkpi CASCADE installs it.")));
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * The (day, genre) keys gs as parameter arrays: days, genres and, unless
 * ords is NULL, each key's ordinal in gs.
 */
void
kpi_genre_key_arrays(KpiDelta *d, KpiEntry **gs, uint32 ng, KpiArray *days,
					 KpiArray *genres, KpiArray *ords)
{
	kpi_array_init(days, DATEOID, ng);
	kpi_array_init(genres, TEXTOID, ng);
	if (ords != NULL)
		kpi_array_init(ords, INT4OID, ng);
	for (uint32 i = 0; i < ng; i++)
	{
		kpi_array_add(days, DateADTGetDatum((DateADT) gs[i]->key.a));
		kpi_array_add(genres, kpi_text_datum(d, gs[i]->key.b));
		if (ords != NULL)
			kpi_array_add(ords, Int32GetDatum(i));
	}
}
