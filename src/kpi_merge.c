/*-------------------------------------------------------------------------
 *
 * kpi_merge.c
 *	  The day step of the KPI engine: the day deltas of kpi_accumulate.c
 *	  are added to the day state tables (daily_genre_track_counts,
 *	  daily_genre_users, daily_engagement_state), one multi-row upsert per
 *	  table with the deltas as arrays; the touched genres' top tracks
 *	  (daily_genre_track_topn) follow from the new counts the upsert
 *	  returns (kpi_day_topn.c); and the day KPI rows of the touched keys
 *	  are derived again by streamkpi._kpi_derive_days(), the one SQL
 *	  definition of the day KPIs.  Nothing reads a genre's untouched
 *	  tracks.
 *
 *	  Also the small helpers the window step shares: parameter arrays and
 *	  running a statement with them.  The statements that write rows read
 *	  the arrays with unnest() in the select list: in FROM, a function scan
 *	  first copies every row into a tuplestore.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_type.h"
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

/* ---- the day state ---- */

/*
 * Add the (day, genre, track) deltas to daily_genre_track_counts; returns
 * the keys' listens after the round, sorted by (day, genre), for the top
 * tracks (kpi_day_topn.c).
 */
static KpiDayCount *
kpi_merge_day_tracks(KpiDelta *d, uint32 *nrows)
{
	uint32		n;
	KpiEntry  **es = kpi_table_entries(d->day_tracks, &n);
	KpiArray	args[5];
	DestReceiver *counts;

	*nrows = 0;
	if (n == 0)
		return NULL;
	kpi_array_init(&args[0], DATEOID, n);
	kpi_array_init(&args[1], TEXTOID, n);
	kpi_array_init(&args[2], TEXTOID, n);
	kpi_array_init(&args[3], INT8OID, n);
	kpi_array_init(&args[4], INT8OID, n);
	for (uint32 i = 0; i < n; i++)
	{
		kpi_array_add(&args[0], DateADTGetDatum((DateADT) es[i]->key.a));
		kpi_array_add(&args[1], kpi_text_datum(d, es[i]->key.b));
		kpi_array_add(&args[2], kpi_text_datum(d, es[i]->key.c));
		kpi_array_add(&args[3], Int64GetDatum(es[i]->counts.plays));
		kpi_array_add(&args[4], Int64GetDatum(es[i]->counts.listen_ms));
	}
	counts = kpi_day_counts_receiver(d, n);
	kpi_run_into("INSERT INTO streamkpi.daily_genre_track_counts AS s"
				 " (day, genre, track_id, listens, listen_ms)"
				 " SELECT unnest($1), unnest($2), unnest($3), unnest($4), unnest($5)"
				 " ON CONFLICT (day, genre, track_id) DO UPDATE"
				 " SET listens = s.listens OPERATOR(pg_catalog.+) excluded.listens,"
				 " listen_ms = s.listen_ms OPERATOR(pg_catalog.+) excluded.listen_ms"
				 " RETURNING s.day, s.genre, s.track_id, s.listens",
				 5, args, SPI_OK_INSERT_RETURNING, counts);
	return kpi_day_counts_rows(counts, nrows);
}

/*
 * The sketches of n keys after this delta, packed, with their distinct
 * counts as round(hll_cardinality()) gives them (sketch_hll_cardinality();
 * NULL: left to hll_cardinality() in SQL): the stored sketch of each key that has one
 * with the delta's hashes added in C (cheaper than hll_union() in the
 * upsert), else the delta's.  sql returns (ordinal, sketch) for the keys
 * given as arrays, the ordinals as the last array.
 */
static void
kpi_merged_users(KpiDelta *d, KpiEntry **es, uint32 n, const char *sql,
				 int nargs, KpiArray *args, KpiArray *packed, KpiArray *exact)
{
	bytea	  **merged = palloc0(Max(n, 1) * sizeof(bytea *));
	int64	   *counts = palloc(Max(n, 1) * sizeof(int64));

	kpi_run(sql, nargs, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int			i = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r],
													SPI_tuptable->tupdesc, 1, &isnull));
		struct varlena *v = (struct varlena *)
			PG_DETOAST_DATUM_PACKED(SPI_getbinval(SPI_tuptable->vals[r],
												  SPI_tuptable->tupdesc, 2, &isnull));

		merged[i] = sketch_hll_merge_into((const uint8 *) VARDATA_ANY(v),
										  VARSIZE_ANY_EXHDR(v),
										  kpi_counts_users(d, &es[i]->counts),
										  &counts[i]);
	}
	for (uint32 i = 0; i < n; i++)
	{
		if (merged[i] == NULL)
		{
			SketchHll  *users = kpi_counts_users(d, &es[i]->counts);

			merged[i] = sketch_hll_pack(users);
			counts[i] = sketch_hll_cardinality(users);
		}
		kpi_array_add(packed, PointerGetDatum(merged[i]));
		if (counts[i] >= 0)
			kpi_array_add(exact, Int64GetDatum(counts[i]));
		else
			kpi_array_add_null(exact);
	}
}

/*
 * The (day, genre) keys gs as parameter arrays: days, genres and, unless
 * ords is NULL, each key's ordinal in gs.
 */
static void
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

static void
kpi_merge_day_genres(KpiDelta *d, KpiEntry **es, uint32 n, KpiArray *exact)
{
	KpiArray	args[3];
	KpiArray	packed;

	kpi_genre_key_arrays(d, es, n, &args[0], &args[1], &args[2]);
	kpi_array_init(&packed, BYTEAOID, n);
	kpi_merged_users(d, es, n,
					 "SELECT k.i, s.users FROM unnest($1, $2, $3) k(d, g, i)"
					 " JOIN streamkpi.daily_genre_users s"
					 " ON s.day OPERATOR(pg_catalog.=) k.d"
					 " AND s.genre OPERATOR(pg_catalog.=) k.g", 3, args, &packed, exact);
	args[2] = packed;
	kpi_run(psprintf("INSERT INTO streamkpi.daily_genre_users AS s (day, genre, users)"
					 " SELECT unnest($1), unnest($2), unnest($3)::%s.hll"
					 " ON CONFLICT (day, genre) DO UPDATE SET users = excluded.users",
					 d->hll),
			3, args, SPI_OK_INSERT);
}

static void
kpi_merge_engagement(KpiDelta *d, KpiEntry **es, uint32 n, KpiArray *exact)
{
	KpiArray	args[9];

	kpi_array_init(&args[0], DATEOID, n);
	kpi_array_init(&args[1], TEXTOID, n);
	kpi_array_init(&args[2], TEXTOID, n);
	kpi_array_init(&args[3], INT4OID, n);
	for (uint32 i = 0; i < n; i++)
	{
		kpi_array_add(&args[0], DateADTGetDatum((DateADT) es[i]->key.a));
		kpi_array_add(&args[1], CStringGetTextDatum(kpi_dimension_names[es[i]->key.b]));
		kpi_array_add(&args[2], kpi_text_datum(d, es[i]->key.c));
		kpi_array_add(&args[3], Int32GetDatum(i));
	}
	kpi_array_init(&args[8], BYTEAOID, n);
	kpi_merged_users(d, es, n,
					 "SELECT k.i, s.users FROM unnest($1, $2, $3, $4) k(d, dim, val, i)"
					 " JOIN streamkpi.daily_engagement_state s"
					 " ON s.day OPERATOR(pg_catalog.=) k.d"
					 " AND s.dimension OPERATOR(pg_catalog.=) k.dim"
					 " AND s.value OPERATOR(pg_catalog.=) k.val", 4, args, &args[8], exact);
	for (int i = 3; i < 8; i++)
		kpi_array_init(&args[i], INT8OID, n);
	for (uint32 i = 0; i < n; i++)
	{
		KpiCounts  *c = &es[i]->counts;

		kpi_array_add(&args[3], Int64GetDatum(c->plays));
		kpi_array_add(&args[4], Int64GetDatum(c->skips));
		kpi_array_add(&args[5], Int64GetDatum(c->likes));
		kpi_array_add(&args[6], Int64GetDatum(c->completed));
		kpi_array_add(&args[7], Int64GetDatum(c->listen_ms));
	}
	kpi_run(psprintf("INSERT INTO streamkpi.daily_engagement_state AS s"
					 " (day, dimension, value, plays, skips, likes, completed_plays, listen_ms, users)"
					 " SELECT unnest($1), unnest($2), unnest($3), unnest($4), unnest($5),"
					 " unnest($6), unnest($7), unnest($8), unnest($9)::%s.hll"
					 " ON CONFLICT (day, dimension, value) DO UPDATE"
					 " SET plays = s.plays OPERATOR(pg_catalog.+) excluded.plays,"
					 " skips = s.skips OPERATOR(pg_catalog.+) excluded.skips,"
					 " likes = s.likes OPERATOR(pg_catalog.+) excluded.likes,"
					 " completed_plays = s.completed_plays OPERATOR(pg_catalog.+) excluded.completed_plays,"
					 " listen_ms = s.listen_ms OPERATOR(pg_catalog.+) excluded.listen_ms,"
					 " users = excluded.users", d->hll),
			9, args, SPI_OK_INSERT);
}

/* by key: a round's (day, genre) keys in the order kpi_day_counts_rows() gives */
static int
kpi_entry_key_cmp(const void *x, const void *y)
{
	const KpiKey *a = &(*(KpiEntry *const *) x)->key;
	const KpiKey *b = &(*(KpiEntry *const *) y)->key;

	if (a->a != b->a)
		return a->a < b->a ? -1 : 1;
	return (a->b > b->b) - (a->b < b->b);
}

static Oid
kpi_topn_type(void)
{
	return typenameTypeId(NULL, makeTypeNameFromNameList(list_make2(makeString("streamkpi"),
																	 makeString("topn"))));
}

/* The stored top-tracks summaries of the (day, genre) keys gs, or NULLs. */
static struct varlena **
kpi_old_topn(KpiDelta *d, KpiEntry **gs, uint32 ng)
{
	struct varlena **old = palloc0(ng * sizeof(struct varlena *));
	KpiArray	args[3];

	kpi_genre_key_arrays(d, gs, ng, &args[0], &args[1], &args[2]);
	kpi_run("SELECT k.i, s.tracks FROM unnest($1, $2, $3) k(d, g, i)"
			" JOIN streamkpi.daily_genre_track_topn s"
			" ON s.day OPERATOR(pg_catalog.=) k.d"
			" AND s.genre OPERATOR(pg_catalog.=) k.g", 3, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int			i = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r],
													SPI_tuptable->tupdesc, 1, &isnull));

		old[i] = PG_DETOAST_DATUM_PACKED(SPI_getbinval(SPI_tuptable->vals[r],
													   SPI_tuptable->tupdesc, 2, &isnull));
	}
	return old;
}

/*
 * The top tracks of the touched (day, genre) keys gs, sorted like rows, the
 * tracks' listens after the round: each summary of daily_genre_track_topn
 * after the round (kpi_day_topn.c), written, and its first tracks into top
 * (day, genre, rank, track_id, listens) for the derivation.
 */
static void
kpi_merge_day_topn(KpiDelta *d, KpiEntry **gs, uint32 ng, KpiDayCount *rows,
				   uint32 nrows, KpiArray *top)
{
	struct varlena **old = kpi_old_topn(d, gs, ng);
	TopnEntry  *touched = palloc(Max(nrows, 1) * sizeof(TopnEntry));
	KpiArray	args[3];
	uint32		r = 0;

	kpi_genre_key_arrays(d, gs, ng, &args[0], &args[1], NULL);
	kpi_array_init(&args[2], kpi_topn_type(), ng);
	for (uint32 i = 0; i < ng; i++)
	{
		TopnEntry	first[KPI_DAY_TOP_TRACKS];
		int			nfirst;
		int32		n = 0;
		bytea	   *next;

		CHECK_FOR_INTERRUPTS();
		for (; r < nrows && rows[r].day == gs[i]->key.a && rows[r].genre == gs[i]->key.b; r++)
		{
			touched[n].data = d->strs[rows[r].track].data;
			touched[n].len = d->strs[rows[r].track].len;
			touched[n].count = rows[r].listens;
			touched[n].error = 0;
			n++;
		}
		next = kpi_day_topn_next(old[i], touched, n, gs[i]->counts.plays, first, &nfirst);
		kpi_array_add(&args[2], PointerGetDatum(next));
		for (int k = 0; k < nfirst; k++)
		{
			kpi_array_add(&top[0], DateADTGetDatum((DateADT) gs[i]->key.a));
			kpi_array_add(&top[1], kpi_text_datum(d, gs[i]->key.b));
			kpi_array_add(&top[2], Int32GetDatum(k + 1));
			kpi_array_add(&top[3], PointerGetDatum(cstring_to_text_with_len(first[k].data,
																			first[k].len)));
			kpi_array_add(&top[4], Int64GetDatum(first[k].count));
		}
	}
	if (r != nrows)
		elog(ERROR, "a track count of day %d has no (day, genre) key in the round",
			 (int) rows[r].day);
	kpi_run("INSERT INTO streamkpi.daily_genre_track_topn AS s (day, genre, tracks)"
			" SELECT unnest($1), unnest($2), unnest($3)"
			" ON CONFLICT (day, genre) DO UPDATE SET tracks = excluded.tracks",
			3, args, SPI_OK_INSERT);
}

/* Derive the day KPI rows of every key the delta touched. */
static void
kpi_derive_days(KpiDelta *d, KpiEntry **gs, uint32 ng, KpiArray *g_exact,
				KpiArray *top, KpiEntry **es, uint32 ne, KpiArray *e_exact)
{
	KpiArray	args[12];

	kpi_genre_key_arrays(d, gs, ng, &args[0], &args[1], NULL);
	args[2] = *g_exact;
	for (int i = 0; i < 5; i++)
		args[3 + i] = top[i];
	kpi_array_init(&args[8], DATEOID, ne);
	kpi_array_init(&args[9], TEXTOID, ne);
	kpi_array_init(&args[10], TEXTOID, ne);
	for (uint32 i = 0; i < ne; i++)
	{
		kpi_array_add(&args[8], DateADTGetDatum((DateADT) es[i]->key.a));
		kpi_array_add(&args[9], CStringGetTextDatum(kpi_dimension_names[es[i]->key.b]));
		kpi_array_add(&args[10], kpi_text_datum(d, es[i]->key.c));
	}
	args[11] = *e_exact;
	kpi_run("SELECT streamkpi._kpi_derive_days($1, $2, $3, $4, $5, $6, $7, $8,"
			" $9, $10, $11, $12)", 12, args, SPI_OK_SELECT);
}

/* Add the day deltas to the day state and derive their KPI rows. */
void
kpi_merge_days(KpiDelta *d)
{
	uint32		ng;
	uint32		ne;
	uint32		nrows;
	KpiEntry  **gs = kpi_table_entries(d->day_genres, &ng);
	KpiEntry  **es = kpi_table_entries(d->engagement, &ne);
	KpiDayCount *rows;
	KpiArray	g_exact;
	KpiArray	e_exact;
	KpiArray	top[5];

	if (ne == 0)
		return;
	qsort(gs, ng, sizeof(KpiEntry *), kpi_entry_key_cmp);
	kpi_array_init(&g_exact, INT8OID, ng);
	kpi_array_init(&e_exact, INT8OID, ne);
	kpi_array_init(&top[0], DATEOID, ng * KPI_DAY_TOP_TRACKS);
	kpi_array_init(&top[1], TEXTOID, ng * KPI_DAY_TOP_TRACKS);
	kpi_array_init(&top[2], INT4OID, ng * KPI_DAY_TOP_TRACKS);
	kpi_array_init(&top[3], TEXTOID, ng * KPI_DAY_TOP_TRACKS);
	kpi_array_init(&top[4], INT8OID, ng * KPI_DAY_TOP_TRACKS);
	rows = kpi_merge_day_tracks(d, &nrows);
	if (ng > 0)
	{
		kpi_merge_day_genres(d, gs, ng, &g_exact);
		kpi_merge_day_topn(d, gs, ng, rows, nrows, top);
	}
	kpi_merge_engagement(d, es, ne, &e_exact);
	kpi_derive_days(d, gs, ng, &g_exact, top, es, ne, &e_exact);
}
