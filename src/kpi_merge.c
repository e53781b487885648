/*-------------------------------------------------------------------------
 *
 * kpi_merge.c
 *	  The day step of the KPI engine: the day deltas of kpi_accumulate.c
 *	  are added to the day state, one multi-row statement per table with
 *	  the deltas as arrays (kpi_sql.c): the tracks' listens and the top
 *	  tracks of the touched genres (kpi_day_topn.c), the genres' users
 *	  (daily_genre_users) and the engagement counters and users
 *	  (daily_engagement_state); then the day KPI rows of the touched keys
 *	  are derived again by streamkpi._kpi_derive_days(), the one SQL
 *	  definition of the day KPIs.  Nothing reads a genre's untouched
 *	  tracks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "kpi.h"

/* ---- the day state ---- */

/*
 * The sketches of n keys after this delta, packed, with their distinct
 * counts as round(hll_cardinality()) gives them (sketch_hll_cardinality();
 * NULL: left to hll_cardinality() in SQL): the stored sketch of each key that has one
 * with the delta's hashes added in C (cheaper than hll_union() in the
 * upsert), else the delta's.  sql returns (ordinal, sketch, xmin) for the
 * keys given as arrays, the ordinals as the last array.  changed[i] tells
 * whether key i needs its sketch written: false when it has a stored one
 * that the delta left as it was.  Once a day has seen its regular users,
 * that is most keys of a round (the delta's users raise no register), and
 * rewriting them was a toasted value and its WAL per key and round.  The
 * KPI worker merges into the states it keeps (kpi_users_cache.c, keys[i]
 * naming key i there), which spares reading the stored sketches and
 * counting the unchanged ones again.
 */
static void
kpi_merged_users(KpiDelta *d, KpiEntry **es, uint32 n, const KpiText *keys,
				 const char *sql, int nargs, KpiArray *args, KpiArray *packed,
				 KpiArray *exact, bool *changed)
{
	bytea	  **merged = palloc0(Max(n, 1) * sizeof(bytea *));
	int64	   *counts = palloc(Max(n, 1) * sizeof(int64));
	bool	   *stored = palloc0(Max(n, 1) * sizeof(bool));

	kpi_run(sql, nargs, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int			i = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		Datum		value = SPI_getbinval(tup, desc, 2, &isnull);
		struct varlena *v;
		uint32		len;

		stored[i] = true;
		if (kpi_in_worker)
		{
			kpi_users_cache_merge(keys[i], true, value,
								  DatumGetTransactionId(SPI_getbinval(tup, desc, 3, &isnull)),
								  kpi_counts_users(d, &es[i]->counts), &merged[i], &counts[i]);
			changed[i] = merged[i] != NULL;
			continue;
		}
		v = (struct varlena *) PG_DETOAST_DATUM_PACKED(value);
		len = VARSIZE_ANY_EXHDR(v);
		merged[i] = sketch_hll_merge_into((const uint8 *) VARDATA_ANY(v), len,
										  kpi_counts_users(d, &es[i]->counts),
										  &counts[i]);
		changed[i] = VARSIZE(merged[i]) - VARHDRSZ != len ||
			memcmp(VARDATA(merged[i]), VARDATA_ANY(v), len) != 0;
	}
	for (uint32 i = 0; i < n; i++)
	{
		SketchHll  *users = kpi_counts_users(d, &es[i]->counts);

		if (!stored[i] && kpi_in_worker)
			kpi_users_cache_merge(keys[i], false, (Datum) 0, InvalidTransactionId,
								  users, &merged[i], &counts[i]);
		else if (!stored[i])
		{
			merged[i] = sketch_hll_pack(users);
			counts[i] = sketch_hll_cardinality(users);
		}
		if (!stored[i])
			changed[i] = true;
		if (merged[i] != NULL)
			kpi_array_add(packed, PointerGetDatum(merged[i]));
		else
			kpi_array_add_null(packed);
		if (counts[i] >= 0)
			kpi_array_add(exact, Int64GetDatum(counts[i]));
		else
			kpi_array_add_null(exact);
	}
}

/*
 * The key of a day users sketch in the worker's cache: the table (kind),
 * the day, the dimension (engagement) and the value (genre or dimension
 * value).
 */
static KpiText
kpi_users_key(char kind, DateADT day, int dimension, const KpiString *value)
{
	StringInfoData buf;
	KpiText		key;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, kind);
	appendBinaryStringInfo(&buf, (const char *) &day, sizeof(day));
	appendBinaryStringInfo(&buf, (const char *) &dimension, sizeof(dimension));
	appendBinaryStringInfo(&buf, value->data, value->len);
	key.data = buf.data;
	key.len = buf.len;
	return key;
}

/* the cache entries of keys whose rows the round wrote (all: NULL) */
static void
kpi_users_written(const KpiText *keys, uint32 n, const bool *written)
{
	if (!kpi_in_worker)
		return;
	for (uint32 i = 0; i < n; i++)
		if (written == NULL || written[i])
			kpi_users_cache_written(keys[i]);
}

/* The elements i of a with changed[i] == want, in b (initialised here). */
static void
kpi_array_pick(KpiArray *b, const KpiArray *a, const bool *changed, bool want)
{
	kpi_array_init(b, a->elemtype, a->n);
	for (int i = 0; i < a->n; i++)
	{
		if (changed[i] != want)
			continue;
		if (a->nulls != NULL && a->nulls[i])
			kpi_array_add_null(b);
		else
			kpi_array_add(b, a->elems[i]);
	}
}

static void
kpi_merge_day_genres(KpiDelta *d, KpiEntry **es, uint32 n, KpiArray *exact)
{
	KpiArray	args[3];
	KpiArray	packed;
	KpiArray	write[3];
	bool	   *changed = palloc(Max(n, 1) * sizeof(bool));
	KpiText    *keys = palloc(Max(n, 1) * sizeof(KpiText));

	for (uint32 i = 0; kpi_in_worker && i < n; i++)
		keys[i] = kpi_users_key('g', (DateADT) es[i]->key.a, 0, &d->strs[es[i]->key.b]);
	kpi_genre_key_arrays(d, es, n, &args[0], &args[1], &args[2]);
	kpi_array_init(&packed, BYTEAOID, n);
	kpi_merged_users(d, es, n, keys,
					 "SELECT k.i, s.users, s.xmin FROM unnest($1, $2, $3) k(d, g, i)"
					 " JOIN streamkpi.daily_genre_users s"
					 " ON s.day OPERATOR(pg_catalog.=) k.d"
					 " AND s.genre OPERATOR(pg_catalog.=) k.g", 3, args, &packed, exact,
					 changed);
	kpi_array_pick(&write[0], &args[0], changed, true);
	kpi_array_pick(&write[1], &args[1], changed, true);
	kpi_array_pick(&write[2], &packed, changed, true);
	if (write[0].n > 0)
		kpi_run(psprintf("INSERT INTO streamkpi.daily_genre_users AS s (day, genre, users)"
						 " SELECT unnest($1), unnest($2), unnest($3)::%s.hll"
						 " ON CONFLICT (day, genre) DO UPDATE SET users = excluded.users",
						 d->hll),
				3, write, SPI_OK_INSERT);
	kpi_users_written(keys, n, changed);
}

/*
 * The engagement counters added, and the users sketches that changed
 * written: keys whose sketch did not change keep their stored one (an
 * update that does not assign the column keeps its toasted value).
 */
static void
kpi_write_engagement(KpiDelta *d, KpiArray *args, const bool *changed)
{
	KpiArray	upsert[9];
	KpiArray	update[8];

	for (int k = 0; k < 9; k++)
		kpi_array_pick(&upsert[k], &args[k], changed, true);
	for (int k = 0; k < 8; k++)
		kpi_array_pick(&update[k], &args[k], changed, false);
	if (upsert[0].n > 0)
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
				9, upsert, SPI_OK_INSERT);
	if (update[0].n > 0)
		kpi_run("UPDATE streamkpi.daily_engagement_state s"
				" SET plays = s.plays OPERATOR(pg_catalog.+) k.p,"
				" skips = s.skips OPERATOR(pg_catalog.+) k.sk,"
				" likes = s.likes OPERATOR(pg_catalog.+) k.lk,"
				" completed_plays = s.completed_plays OPERATOR(pg_catalog.+) k.c,"
				" listen_ms = s.listen_ms OPERATOR(pg_catalog.+) k.ms"
				" FROM unnest($1, $2, $3, $4, $5, $6, $7, $8) k(d, dim, val, p, sk, lk, c, ms)"
				" WHERE s.day OPERATOR(pg_catalog.=) k.d"
				" AND s.dimension OPERATOR(pg_catalog.=) k.dim"
				" AND s.value OPERATOR(pg_catalog.=) k.val",
				8, update, SPI_OK_UPDATE);
}

static void
kpi_merge_engagement(KpiDelta *d, KpiEntry **es, uint32 n, KpiArray *exact)
{
	KpiArray	args[9];
	bool	   *changed = palloc(Max(n, 1) * sizeof(bool));
	KpiText    *keys = palloc(Max(n, 1) * sizeof(KpiText));

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
		if (kpi_in_worker)
			keys[i] = kpi_users_key('e', (DateADT) es[i]->key.a, (int) es[i]->key.b,
									&d->strs[es[i]->key.c]);
	}
	kpi_array_init(&args[8], BYTEAOID, n);
	kpi_merged_users(d, es, n, keys,
					 "SELECT k.i, s.users, s.xmin FROM unnest($1, $2, $3, $4) k(d, dim, val, i)"
					 " JOIN streamkpi.daily_engagement_state s"
					 " ON s.day OPERATOR(pg_catalog.=) k.d"
					 " AND s.dimension OPERATOR(pg_catalog.=) k.dim"
					 " AND s.value OPERATOR(pg_catalog.=) k.val", 4, args, &args[8], exact,
					 changed);
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
	kpi_write_engagement(d, args, changed);
	kpi_users_written(keys, n, NULL);
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
	KpiEntry  **gs = kpi_table_entries(d->day_genres, &ng);
	KpiEntry  **es = kpi_table_entries(d->engagement, &ne);
	KpiArray	g_exact;
	KpiArray	e_exact;
	KpiArray	top[5];

	if (ne == 0)
		return;
	if (kpi_in_worker)
		kpi_users_cache_round();
	qsort(gs, ng, sizeof(KpiEntry *), kpi_entry_key_cmp);
	kpi_array_init(&g_exact, INT8OID, ng);
	kpi_array_init(&e_exact, INT8OID, ne);
	kpi_array_init(&top[0], DATEOID, ng * KPI_DAY_TOP_TRACKS);
	kpi_array_init(&top[1], TEXTOID, ng * KPI_DAY_TOP_TRACKS);
	kpi_array_init(&top[2], INT4OID, ng * KPI_DAY_TOP_TRACKS);
	kpi_array_init(&top[3], TEXTOID, ng * KPI_DAY_TOP_TRACKS);
	kpi_array_init(&top[4], INT8OID, ng * KPI_DAY_TOP_TRACKS);
	if (ng > 0)
	{
		kpi_merge_day_tracks(d, gs, ng, top);
		kpi_merge_day_genres(d, gs, ng, &g_exact);
	}
	kpi_merge_engagement(d, es, ne, &e_exact);
	kpi_derive_days(d, gs, ng, &g_exact, top, es, ne, &e_exact);
}
