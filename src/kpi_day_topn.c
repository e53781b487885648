/*-------------------------------------------------------------------------
 *
 * kpi_day_topn.c
 *	  The listens of each track of a day and genre, and the top tracks they
 *	  give, kept from round to round without reading the genre's other
 *	  tracks.  Two state tables hold the exact count of every track:
 *
 *	    daily_genre_track_topn    per (day, genre), a streamkpi.topn
 *	        summary: the KPI_DAY_TOPN_CAPACITY tracks with the most listens
 *	        (ties: byte order), each with its exact count (error 0); the
 *	        floor is the largest count of a track left out, the total every
 *	        listen of the genre.  The top three of it are the day's top
 *	        tracks.
 *	    daily_genre_track_counts  the tracks left out of their summary, with
 *	        their counts: none while a genre has fewer tracks than that.
 *
 *	  A round reads the touched genres' summaries.  A touched track in its
 *	  summary gets its new count there; one outside a full summary has it
 *	  from the upsert of its daily_genre_track_counts row (RETURNING); one
 *	  outside a summary that is not full has no row yet (its genre has no
 *	  tracks left out) and counts the round's listens.  So a round writes
 *	  a row per track only for the tail of a long catalogue; before, every
 *	  touched track had its row upserted, 9 us each and a third of the day
 *	  step at 10,000 events/s.
 *
 *	  A track's count only grows between two refreshes of its day, so the
 *	  next summary is the top of (the kept tracks, with new counts where
 *	  the round touched them) and (the touched tracks): an untouched track
 *	  left out ranks below every kept one before the round and so after
 *	  it.  The floor is the larger of the old floor and the largest count
 *	  dropped: when a track from outside enters, it evicts a kept track
 *	  whose count is at least the old floor; when the track holding the
 *	  floor is touched and stays outside, its new count is among the
 *	  dropped.  Tracks that leave the summary get their row, and tracks
 *	  that enter it lose theirs.  So the state kept round by round is the
 *	  state of all the counts at once, which is what a refresh (from
 *	  empty, every track touched) writes: the incremental rows equal
 *	  refresh_kpis()'s.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_type.h"
#include "utils/builtins.h"

#include "kpi.h"

/*
 * A touched track of a (day, genre), with its listens after the round.  e
 * comes first: arrays of them sort and search with TopnEntry's comparators.
 */
typedef struct DayTrack
{
	TopnEntry	e;				/* data, len: the track; count */
	bool		has_row;		/* its daily_genre_track_counts row was
								 * upserted by the round */
} DayTrack;

/* A touched (day, genre): its stored summary and the round's tracks. */
typedef struct DayGenre
{
	TopnView	h;				/* the summary's header (empty: none) */
	TopnEntry  *items;			/* its items, by bytes */
	DayTrack   *tracks;			/* by bytes once all are in */
	int32		ntracks;
	int32		maxtracks;
} DayGenre;

/* The rows of the tracks that leave or enter a summary. */
typedef struct DayRowChanges
{
	KpiArray	left[4];		/* day, genre, track_id, listens: new rows */
	KpiArray	entered[3];		/* day, genre, track_id: rows to delete */
} DayRowChanges;

/* Collects the upsert's (day, genre, track_id, listens) rows. */
typedef struct KpiCountsReceiver
{
	DestReceiver pub;
	KpiDelta   *d;
	KpiEntry  **gs;				/* the round's (day, genre) keys, sorted */
	uint32		ng;
	DayGenre   *genres;			/* of gs */
} KpiCountsReceiver;

/* ---- the touched genres ---- */

/* the order of kpi_merge_days()'s (day, genre) keys */
static int
day_genre_cmp(DateADT day, uint32 genre, const KpiKey *k)
{
	if (day != k->a)
		return day < k->a ? -1 : 1;
	return (genre > k->b) - (genre < k->b);
}

/* the index of (day, genre) in the round's keys gs */
static uint32
day_genre_index(KpiEntry **gs, uint32 ng, DateADT day, uint32 genre)
{
	uint32		lo = 0;
	uint32		hi = ng;

	while (lo < hi)
	{
		uint32		mid = lo + (hi - lo) / 2;
		int			c = day_genre_cmp(day, genre, &gs[mid]->key);

		if (c == 0)
			return mid;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	elog(ERROR, "a track of day %d has no (day, genre) key in the round", (int) day);
	return 0;					/* keep the compiler quiet */
}

static void
day_genre_add(DayGenre *g, const KpiString *track, int64 count, bool has_row)
{
	DayTrack   *t;

	if (g->ntracks == g->maxtracks)
	{
		g->maxtracks = Max(8, g->maxtracks * 2);
		g->tracks = g->tracks == NULL ? palloc(g->maxtracks * sizeof(DayTrack))
			: repalloc(g->tracks, g->maxtracks * sizeof(DayTrack));
	}
	t = &g->tracks[g->ntracks++];
	t->e.data = track->data;
	t->e.len = track->len;
	t->e.count = count;
	t->e.error = 0;
	t->has_row = has_row;
}

static bool
day_genre_full(const DayGenre *g)
{
	return g->h.nitems >= KPI_DAY_TOPN_CAPACITY;
}

/* a track's item in the stored summary, or NULL */
static TopnEntry *
day_genre_item(const DayGenre *g, const char *data, uint32 len)
{
	TopnEntry	key = {0, 0, data, len};

	if (g->h.nitems == 0)
		return NULL;
	return bsearch(&key, g->items, g->h.nitems, sizeof(TopnEntry), sketch_entry_bytes_cmp);
}

/*
 * The stored summaries of the (day, genre) keys gs, their items by bytes;
 * empty for a key without one.
 */
static DayGenre *
read_summaries(KpiDelta *d, KpiEntry **gs, uint32 ng)
{
	DayGenre   *genres = palloc0(Max(ng, 1) * sizeof(DayGenre));
	KpiArray	args[3];

	for (uint32 i = 0; i < ng; i++)
		genres[i].h.capacity = KPI_DAY_TOPN_CAPACITY;
	kpi_genre_key_arrays(d, gs, ng, &args[0], &args[1], &args[2]);
	kpi_run("SELECT k.i, s.tracks FROM unnest($1, $2, $3) k(d, g, i)"
			" JOIN streamkpi.daily_genre_track_topn s"
			" ON s.day OPERATOR(pg_catalog.=) k.d"
			" AND s.genre OPERATOR(pg_catalog.=) k.g", 3, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		DayGenre   *g = &genres[DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r],
															SPI_tuptable->tupdesc, 1, &isnull))];
		struct varlena *v = PG_DETOAST_DATUM_PACKED(SPI_getbinval(SPI_tuptable->vals[r],
																  SPI_tuptable->tupdesc, 2, &isnull));

		CHECK_FOR_INTERRUPTS();
		sketch_topn_view((const uint8 *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v), &g->h);
		g->items = sketch_topn_entries(&g->h);
		/* version 1 keeps its items by count */
		if (g->h.version == TOPN_VERSION)
			qsort(g->items, g->h.nitems, sizeof(TopnEntry), sketch_entry_bytes_cmp);
		g->h.capacity = KPI_DAY_TOPN_CAPACITY;
	}
	return genres;
}

/* ---- the tracks' new counts ---- */

/* the interned id of a text column, which the delta must know */
static uint32
kpi_returned_string(KpiDelta *d, Datum text)
{
	struct varlena *t = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(text));
	uint32		id = kpi_string_find(d, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));

	if (id == PG_UINT32_MAX)
		elog(ERROR, "the upsert of daily_genre_track_counts returned a key the round did not write");
	return id;
}

static bool
kpi_counts_receive(TupleTableSlot *slot, DestReceiver *self)
{
	KpiCountsReceiver *r = (KpiCountsReceiver *) self;
	DateADT		day;
	uint32		genre;
	uint32		track;

	slot_getallattrs(slot);
	day = DatumGetDateADT(slot->tts_values[0]);
	genre = kpi_returned_string(r->d, slot->tts_values[1]);
	track = kpi_returned_string(r->d, slot->tts_values[2]);
	day_genre_add(&r->genres[day_genre_index(r->gs, r->ng, day, genre)],
				  &r->d->strs[track], DatumGetInt64(slot->tts_values[3]), true);
	return true;
}

static void
kpi_counts_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	if (typeinfo->natts != 4)
		elog(ERROR, "the upsert of daily_genre_track_counts returns %d columns, not 4",
			 typeinfo->natts);
}

static void
kpi_counts_shutdown(DestReceiver *self)
{
}

static void
kpi_counts_destroy(DestReceiver *self)
{
}

/*
 * Each touched track's listens after the round, into its genre: from the
 * summary, from the upsert of its row, or the round's own.
 */
static void
count_tracks(KpiDelta *d, KpiEntry **gs, uint32 ng, DayGenre *genres)
{
	uint32		n;
	KpiEntry  **es = kpi_table_entries(d->day_tracks, &n);
	KpiArray	args[4];
	KpiCountsReceiver r = {
		.pub = {.receiveSlot = kpi_counts_receive, .rStartup = kpi_counts_startup,
			.rShutdown = kpi_counts_shutdown, .rDestroy = kpi_counts_destroy,
		.mydest = DestNone},
		.d = d, .gs = gs, .ng = ng, .genres = genres
	};

	kpi_array_init(&args[0], DATEOID, 64);
	kpi_array_init(&args[1], TEXTOID, 64);
	kpi_array_init(&args[2], TEXTOID, 64);
	kpi_array_init(&args[3], INT8OID, 64);
	for (uint32 i = 0; i < n; i++)
	{
		KpiEntry   *e = es[i];
		DayGenre   *g = &genres[day_genre_index(gs, ng, (DateADT) e->key.a,
												(uint32) e->key.b)];
		const KpiString *track = &d->strs[e->key.c];
		TopnEntry  *item = day_genre_item(g, track->data, track->len);

		CHECK_FOR_INTERRUPTS();
		if (item != NULL)
			day_genre_add(g, track, item->count + e->counts.plays, false);
		else if (!day_genre_full(g))
			day_genre_add(g, track, e->counts.plays, false);
		else
		{
			kpi_array_add(&args[0], DateADTGetDatum((DateADT) e->key.a));
			kpi_array_add(&args[1], kpi_text_datum(d, e->key.b));
			kpi_array_add(&args[2], kpi_text_datum(d, e->key.c));
			kpi_array_add(&args[3], Int64GetDatum(e->counts.plays));
		}
	}
	if (args[0].n > 0)
		kpi_run_into("INSERT INTO streamkpi.daily_genre_track_counts AS s"
					 " (day, genre, track_id, listens)"
					 " SELECT unnest($1), unnest($2), unnest($3), unnest($4)"
					 " ON CONFLICT (day, genre, track_id) DO UPDATE"
					 " SET listens = s.listens OPERATOR(pg_catalog.+) excluded.listens"
					 " RETURNING s.day, s.genre, s.track_id, s.listens",
					 4, args, SPI_OK_INSERT_RETURNING, &r.pub);
}

/* ---- the next summaries ---- */

/*
 * The old summary's items merged with the touched tracks' new counts, both
 * in byte order: a touched track's count replaces its old one.
 */
static TopnEntry *
kpi_topn_union(TopnEntry *old, int32 nold, TopnEntry *touched, int32 ntouched,
			   int32 *n)
{
	TopnEntry  *u = palloc((nold + ntouched + 1) * sizeof(TopnEntry));
	int32		i = 0,
				j = 0,
				k = 0;

	while (i < nold || j < ntouched)
	{
		int			c = i == nold ? 1 : j == ntouched ? -1
			: sketch_entry_bytes_cmp(&old[i], &touched[j]);

		if (c < 0)
			u[k++] = old[i++];
		else
		{
			if (c == 0)
				i++;
			u[k++] = touched[j++];
		}
	}
	*n = k;
	return u;
}

/*
 * The summary of genre g after the round, which added listens of the
 * genre; touched: its tracks' new counts, by bytes.  top receives the
 * first three items by count, then bytes (fewer when the genre has fewer
 * tracks), *ntop how many; *left the items that do not fit (by bytes,
 * *nleft of them).
 */
static bytea *
next_summary(DayGenre *g, TopnEntry *touched, int64 added, TopnEntry *top, int *ntop,
			 TopnEntry **left, int32 *nleft)
{
	TopnView	h = g->h;
	int32		n;
	TopnEntry  *u = kpi_topn_union(g->items, g->h.nitems, touched, g->ntracks, &n);

	h.total += added;
	/* by count, to choose the kept items and the top three */
	qsort(u, n, sizeof(TopnEntry), sketch_entry_order_cmp);
	*nleft = Max(n - h.capacity, 0);
	*left = u + (n - *nleft);
	if (*nleft > 0)
	{
		h.floor = Max(h.floor, (*left)[0].count);
		n = h.capacity;
	}
	*ntop = Min(n, KPI_DAY_TOP_TRACKS);
	memcpy(top, u, *ntop * sizeof(TopnEntry));
	qsort(u, n, sizeof(TopnEntry), sketch_entry_bytes_cmp);
	qsort(*left, *nleft, sizeof(TopnEntry), sketch_entry_bytes_cmp);
	h.nitems = n;
	return sketch_topn_write_v2(&h, u);
}

/*
 * The rows daily_genre_track_counts gains and loses for genre key gk: a
 * track that left the summary gets one unless the round upserted it, a
 * track upserted by the round that entered it loses it.
 */
static void
row_changes(KpiDelta *d, KpiEntry *gk, DayGenre *g, TopnEntry *left, int32 nleft,
			DayRowChanges *out)
{
	for (int32 i = 0; i < nleft; i++)
	{
		DayTrack	key = {left[i], false};
		DayTrack   *t = bsearch(&key, g->tracks, g->ntracks, sizeof(DayTrack),
								sketch_entry_bytes_cmp);

		if (t != NULL && t->has_row)
			continue;
		kpi_array_add(&out->left[0], DateADTGetDatum((DateADT) gk->key.a));
		kpi_array_add(&out->left[1], kpi_text_datum(d, gk->key.b));
		kpi_array_add(&out->left[2],
					  PointerGetDatum(cstring_to_text_with_len(left[i].data, left[i].len)));
		kpi_array_add(&out->left[3], Int64GetDatum(left[i].count));
	}
	for (int32 i = 0; i < g->ntracks; i++)
	{
		DayTrack   *t = &g->tracks[i];

		if (!t->has_row ||
			bsearch(&t->e, left, nleft, sizeof(TopnEntry), sketch_entry_bytes_cmp) != NULL)
			continue;
		kpi_array_add(&out->entered[0], DateADTGetDatum((DateADT) gk->key.a));
		kpi_array_add(&out->entered[1], kpi_text_datum(d, gk->key.b));
		kpi_array_add(&out->entered[2],
					  PointerGetDatum(cstring_to_text_with_len(t->e.data, t->e.len)));
	}
}

static Oid
kpi_topn_type(void)
{
	return typenameTypeId(NULL, makeTypeNameFromNameList(list_make2(makeString("streamkpi"),
																	 makeString("topn"))));
}

static void
write_rows(DayRowChanges *rows, KpiArray *summaries)
{
	kpi_run("INSERT INTO streamkpi.daily_genre_track_topn AS s (day, genre, tracks)"
			" SELECT unnest($1), unnest($2), unnest($3)"
			" ON CONFLICT (day, genre) DO UPDATE SET tracks = excluded.tracks",
			3, summaries, SPI_OK_INSERT);
	if (rows->left[0].n > 0)
		kpi_run("INSERT INTO streamkpi.daily_genre_track_counts AS s"
				" (day, genre, track_id, listens)"
				" SELECT unnest($1), unnest($2), unnest($3), unnest($4)",
				4, rows->left, SPI_OK_INSERT);
	if (rows->entered[0].n > 0)
		kpi_run("DELETE FROM streamkpi.daily_genre_track_counts s"
				" USING unnest($1, $2, $3) k(d, g, t)"
				" WHERE s.day OPERATOR(pg_catalog.=) k.d"
				" AND s.genre OPERATOR(pg_catalog.=) k.g"
				" AND s.track_id OPERATOR(pg_catalog.=) k.t",
				3, rows->entered, SPI_OK_DELETE);
}

/*
 * Add the (day, genre, track) deltas to the track counts of the touched
 * (day, genre) keys gs (sorted by key) and write their summaries; the
 * first tracks of each go into top (day, genre, rank, track_id, listens)
 * for the derivation.
 */
void
kpi_merge_day_tracks(KpiDelta *d, KpiEntry **gs, uint32 ng, KpiArray *top)
{
	DayGenre   *genres = read_summaries(d, gs, ng);
	KpiArray	summaries[3];
	DayRowChanges rows;

	count_tracks(d, gs, ng, genres);
	kpi_genre_key_arrays(d, gs, ng, &summaries[0], &summaries[1], NULL);
	kpi_array_init(&summaries[2], kpi_topn_type(), ng);
	kpi_array_init(&rows.left[0], DATEOID, 8);
	kpi_array_init(&rows.left[1], TEXTOID, 8);
	kpi_array_init(&rows.left[2], TEXTOID, 8);
	kpi_array_init(&rows.left[3], INT8OID, 8);
	kpi_array_init(&rows.entered[0], DATEOID, 8);
	kpi_array_init(&rows.entered[1], TEXTOID, 8);
	kpi_array_init(&rows.entered[2], TEXTOID, 8);
	for (uint32 i = 0; i < ng; i++)
	{
		DayGenre   *g = &genres[i];
		TopnEntry  *touched = palloc(Max(g->ntracks, 1) * sizeof(TopnEntry));
		TopnEntry	first[KPI_DAY_TOP_TRACKS];
		int			nfirst;
		TopnEntry  *left;
		int32		nleft;

		CHECK_FOR_INTERRUPTS();
		qsort(g->tracks, g->ntracks, sizeof(DayTrack), sketch_entry_bytes_cmp);
		for (int32 k = 0; k < g->ntracks; k++)
			touched[k] = g->tracks[k].e;
		kpi_array_add(&summaries[2],
					  PointerGetDatum(next_summary(g, touched, gs[i]->counts.plays,
												   first, &nfirst, &left, &nleft)));
		row_changes(d, gs[i], g, left, nleft, &rows);
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
	write_rows(&rows, summaries);
}
