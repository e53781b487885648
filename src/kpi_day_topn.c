/*-------------------------------------------------------------------------
 *
 * kpi_day_topn.c
 *	  The top tracks of a day and genre, kept from round to round without
 *	  reading the genre's other tracks.
 *
 *	  streamkpi.daily_genre_track_topn holds, per (day, genre), the
 *	  KPI_DAY_TOPN_CAPACITY tracks with the most listens (ties: byte
 *	  order), each with its exact count (error 0); the floor is the largest
 *	  count of a track left out, the total every listen of the genre.  The
 *	  top three of it are the day's top tracks.
 *
 *	  A track's count only grows between two refreshes of its day, so the
 *	  next summary is the top of (the kept tracks, with new counts where
 *	  the round touched them) and (the touched tracks): an untouched track
 *	  left out ranks below every kept one before the round and so after
 *	  it.  The floor is the larger of the old floor and the largest count
 *	  dropped: when a track from outside enters, it evicts a kept track
 *	  whose count is at least the old floor; when the track holding the
 *	  floor is touched and stays outside, its new count is among the
 *	  dropped.  So a summary kept round by round is the summary of all the
 *	  counts at once, which is what a refresh (from empty, every track
 *	  touched) writes: the incremental rows equal refresh_kpis()'s.
 *
 *	  The new counts come back from the upsert of daily_genre_track_counts
 *	  (RETURNING, into kpi_day_counts_receiver()), so nothing but the
 *	  touched rows is read.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/tuptable.h"

#include "kpi.h"

/* Collects the upsert's (day, genre, track_id, listens) rows. */
typedef struct KpiCountsReceiver
{
	DestReceiver pub;
	KpiDelta   *d;
	KpiDayCount *rows;
	uint32		n;
	uint32		cap;
} KpiCountsReceiver;

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
	KpiDayCount *row;

	slot_getallattrs(slot);
	if (r->n == r->cap)
	{
		r->cap *= 2;
		r->rows = repalloc_huge(r->rows, r->cap * sizeof(KpiDayCount));
	}
	row = &r->rows[r->n++];
	row->day = DatumGetDateADT(slot->tts_values[0]);
	row->genre = kpi_returned_string(r->d, slot->tts_values[1]);
	row->track = kpi_returned_string(r->d, slot->tts_values[2]);
	row->listens = DatumGetInt64(slot->tts_values[3]);
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

/* A receiver for about n rows; kpi_day_counts_rows() gives them. */
DestReceiver *
kpi_day_counts_receiver(KpiDelta *d, uint32 n)
{
	KpiCountsReceiver *r = palloc0(sizeof(KpiCountsReceiver));

	r->pub.receiveSlot = kpi_counts_receive;
	r->pub.rStartup = kpi_counts_startup;
	r->pub.rShutdown = kpi_counts_shutdown;
	r->pub.rDestroy = kpi_counts_destroy;
	r->pub.mydest = DestNone;
	r->d = d;
	r->cap = Max(n, 8);
	r->rows = palloc_extended(r->cap * sizeof(KpiDayCount), MCXT_ALLOC_HUGE);
	return &r->pub;
}

/* by (day, genre): the order of a round's (day, genre) keys */
static int
kpi_day_count_cmp(const void *x, const void *y)
{
	const KpiDayCount *a = (const KpiDayCount *) x;
	const KpiDayCount *b = (const KpiDayCount *) y;

	if (a->day != b->day)
		return a->day < b->day ? -1 : 1;
	return (a->genre > b->genre) - (a->genre < b->genre);
}

/* The rows received, sorted by (day, genre). */
KpiDayCount *
kpi_day_counts_rows(DestReceiver *self, uint32 *n)
{
	KpiCountsReceiver *r = (KpiCountsReceiver *) self;

	qsort(r->rows, r->n, sizeof(KpiDayCount), kpi_day_count_cmp);
	*n = r->n;
	return r->rows;
}

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
 * The summary after a round: old (NULL for none) with the touched tracks'
 * new counts (ntouched of them, any order) and added listens of the genre.
 * top receives the first three items by count, then bytes (fewer when the
 * genre has fewer tracks); returns how many.
 */
bytea *
kpi_day_topn_next(const struct varlena *old, TopnEntry *touched, int32 ntouched,
				  int64 added, TopnEntry *top, int *ntop)
{
	TopnView	h = {.capacity = KPI_DAY_TOPN_CAPACITY};
	TopnEntry  *olds = NULL;
	TopnEntry  *u;
	int32		n;

	if (old != NULL)
	{
		sketch_topn_view((const uint8 *) VARDATA_ANY(old), VARSIZE_ANY_EXHDR(old), &h);
		olds = sketch_topn_entries(&h);
		if (h.version == TOPN_VERSION)
			qsort(olds, h.nitems, sizeof(TopnEntry), sketch_entry_bytes_cmp);
		h.capacity = KPI_DAY_TOPN_CAPACITY;
	}
	qsort(touched, ntouched, sizeof(TopnEntry), sketch_entry_bytes_cmp);
	u = kpi_topn_union(olds, old != NULL ? h.nitems : 0, touched, ntouched, &n);
	h.total += added;
	/* by count, to choose the kept items and the top three */
	qsort(u, n, sizeof(TopnEntry), sketch_entry_order_cmp);
	if (n > h.capacity)
	{
		h.floor = Max(h.floor, u[h.capacity].count);
		n = h.capacity;
	}
	*ntop = Min(n, KPI_DAY_TOP_TRACKS);
	memcpy(top, u, *ntop * sizeof(TopnEntry));
	qsort(u, n, sizeof(TopnEntry), sketch_entry_bytes_cmp);
	h.nitems = n;
	return sketch_topn_write_v2(&h, u);
}
