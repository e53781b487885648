/*-------------------------------------------------------------------------
 *
 * kpi_window.c
 *	  The window step of the KPI engine.  A round puts its window deltas in
 *	  merge order (one radix sort; the larger windows summed from the
 *	  smallest ones when the delta counted those only, KpiDelta.rollup),
 *	  reads part 0 of the windows its events fall in (their counters; the
 *	  stored rows are described in kpi_window_state.c), merges the deltas
 *	  in (one pass over two sorted lists), and writes, each kind in one
 *	  statement: part 0 again, a players part per window with the players
 *	  the round saw (of the smallest windows only, when the larger are
 *	  summed from them: their players are those of the windows inside
 *	  them), and the trending rows of the touched (window, region) keys,
 *	  derived from the merged counters.  A window with
 *	  WINDOW_PLAYERS_PARTS_MAX players parts has its small ones merged into
 *	  one by the round that finds them (or a little earlier, one window per
 *	  round, so that windows do not all merge in the same round); a large
 *	  part stays until the small ones add up to it (compact_count()).
 *
 *	  So a round writes what its events changed: counters of the tracks of
 *	  its windows and the players it saw, not the players sketches its
 *	  windows gathered before (rewritten in every round, they made the
 *	  rounds of a busy minute slower and slower).  streamkpi.track_windows
 *	  and streamkpi.window_track_state are views over these rows: a round
 *	  writes no row per (window, track).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/pg_bitutils.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/timestamp.h"

#include "kpi.h"
#include "kpi_window.h"

/* A window the delta touched. */
typedef struct Win
{
	int			size;			/* index into KpiDelta.sizes */
	TimestampTz start;
	WinTrack   *delta;			/* sorted by name */
	int			ndelta;
	const uint8 *stored;		/* its part 0's bytes, or NULL */
	uint32		stored_len;
	int			nparts;			/* its players parts */
	int32		last_part;		/* their highest number (0: none) */
	WinTrack   *merged;			/* sorted by name */
	int			nmerged;
} Win;

/*
 * A round that finds this many players parts of a window merges some of
 * them, with its own players, into one: readers merge at most this many
 * per window (and WINDOW_PLAYERS_INSIDE_MAX windows), and a round writes
 * its own players, not all of the window's.
 */
#define WINDOW_PLAYERS_PARTS_MAX 16

/* a compaction keeps at most this many parts (compact_count()) */
#define WINDOW_COMPACT_KEEP 3

/*
 * A round that compacts no window yet may compact one this close to the
 * limit: the windows of a busy minute gain a part in every round, and
 * compacting them all in one round made it the p99 of the latency (500 ms
 * at 100,000 events/s, when the 1-, 5- and 10-minute windows all had
 * players parts).
 */
#define WINDOW_PLAYERS_PARTS_EARLY 2

/* ---- merging ---- */

/* old's regions plus delta's, both sorted, into m */
static void
merge_regions(WinTrack *m, const WinTrack *old, const WinTrack *delta)
{
	int			i = 0;
	int			j = 0;

	m->regions = palloc((old->nregions + delta->nregions) * sizeof(WinRegion));
	m->nregions = 0;
	while (i < old->nregions || j < delta->nregions)
	{
		int			c = i >= old->nregions ? 1 : j >= delta->nregions ? -1
		: bytes_cmp(old->regions[i].name, old->regions[i].len,
					delta->regions[j].name, delta->regions[j].len);
		WinRegion  *r = &m->regions[m->nregions++];

		if (c < 0)
			*r = old->regions[i++];
		else if (c > 0)
			*r = delta->regions[j++];
		else
		{
			*r = old->regions[i++];
			r->plays += delta->regions[j].plays;
			r->skips += delta->regions[j].skips;
			r->likes += delta->regions[j].likes;
			r->listen_ms += delta->regions[j].listen_ms;
			r->touched = true;
			j++;
		}
	}
}

/* part 0's track plus the delta's: counters summed, the round's players */
static void
merge_track(WinTrack *m, WinTrack *old, const WinTrack *delta)
{
	*m = *old;
	m->touched = true;
	merge_regions(m, old, delta);
	m->users = delta->users;
}

/* part 0 + delta, both sorted, into merged */
static void
window_merge(Win *w)
{
	WinTrack   *old = NULL;
	int			nold = 0;
	int			i = 0;
	int			j = 0;

	if (w->stored != NULL)
		old = window_unpack(w->stored, w->stored_len, &nold);
	w->merged = palloc((nold + w->ndelta + 1) * sizeof(WinTrack));
	w->nmerged = 0;
	while (i < nold || j < w->ndelta)
	{
		int			c = i >= nold ? 1 : j >= w->ndelta ? -1
		: bytes_cmp(old[i].name, old[i].len, w->delta[j].name, w->delta[j].len);
		WinTrack   *m = &w->merged[w->nmerged++];

		if (c < 0)
			*m = old[i++];
		else if (c > 0)
			*m = w->delta[j++];
		else
			merge_track(m, &old[i++], &w->delta[j++]);
	}
}

/* ---- deriving trending ---- */

/* The statements' parameters, one set per flush. */
typedef struct WinOutput
{
	KpiArray	state[3];		/* start, size, part 0's tracks */
	int64	   *state_usecs;	/* per part 0 written, the window's size */
	KpiArray	players[4];		/* start, size, part, its tracks */
	KpiArray	region_keys[4];	/* size, start, region: trending to replace,
								 * and its ranks */
	KpiArray	trending[8];	/* size, start, region, rank, track, plays,
								 * skips, likes */
} WinOutput;

/* The best top_n (track, region) entries of one region. */
typedef struct WinTop
{
	const char *region;
	uint32		len;
	int			n;
	WinTrack  **tracks;
	WinRegion **entries;
} WinTop;

/* Offer an entry: plays desc, then track ascending (tracks come in order). */
static void
top_offer(WinTop *top, int top_n, WinTrack *t, WinRegion *r)
{
	int			pos = top->n;

	while (pos > 0 && top->entries[pos - 1]->plays < r->plays)
		pos--;
	if (pos >= top_n)
		return;
	if (top->n < top_n)
		top->n++;
	memmove(&top->tracks[pos + 1], &top->tracks[pos], (top->n - 1 - pos) * sizeof(WinTrack *));
	memmove(&top->entries[pos + 1], &top->entries[pos], (top->n - 1 - pos) * sizeof(WinRegion *));
	top->tracks[pos] = t;
	top->entries[pos] = r;
}

/* The regions to rank again: the delta's, or all in a refresh. */
static WinTop *
touched_regions(KpiDelta *d, Win *w, int *ntops)
{
	int			cap = 8;
	int			n = 0;
	WinTop	   *tops = palloc0(cap * sizeof(WinTop));
	int			top_n = d->sizes[w->size].top_n;

	for (int i = 0; i < w->nmerged; i++)
		for (int j = 0; j < w->merged[i].nregions; j++)
		{
			WinRegion  *r = &w->merged[i].regions[j];
			int			k;

			if (!d->refresh && !r->touched)
				continue;
			for (k = 0; k < n; k++)
				if (bytes_cmp(tops[k].region, tops[k].len, r->name, r->len) == 0)
					break;
			if (k < n)
				continue;
			if (n == cap)
			{
				cap *= 2;
				tops = repalloc(tops, cap * sizeof(WinTop));
			}
			tops[n].region = r->name;
			tops[n].len = r->len;
			tops[n].n = 0;
			tops[n].tracks = palloc(top_n * sizeof(WinTrack *));
			tops[n].entries = palloc(top_n * sizeof(WinRegion *));
			n++;
		}
	*ntops = n;
	return tops;
}

/* The touched regions of w get new rankings. */
static void
derive_trending(KpiDelta *d, Win *w, WinOutput *out)
{
	Datum		size = IntervalPGetDatum(&d->sizes[w->size].size);
	Datum		start = TimestampTzGetDatum(w->start);
	int			top_n = d->sizes[w->size].top_n;
	int			ntops;
	WinTop	   *tops = touched_regions(d, w, &ntops);

	for (int i = 0; i < w->nmerged; i++)
		for (int j = 0; j < w->merged[i].nregions; j++)
		{
			WinRegion  *r = &w->merged[i].regions[j];

			if (r->plays == 0)
				continue;
			for (int k = 0; k < ntops; k++)
				if (bytes_cmp(tops[k].region, tops[k].len, r->name, r->len) == 0)
				{
					top_offer(&tops[k], top_n, &w->merged[i], r);
					break;
				}
		}
	for (int k = 0; k < ntops; k++)
	{
		Datum		region = window_bytes_text(tops[k].region, tops[k].len);

		kpi_array_add(&out->region_keys[0], size);
		kpi_array_add(&out->region_keys[1], start);
		kpi_array_add(&out->region_keys[2], region);
		kpi_array_add(&out->region_keys[3], Int32GetDatum(tops[k].n));
		for (int rank = 0; rank < tops[k].n; rank++)
		{
			kpi_array_add(&out->trending[0], size);
			kpi_array_add(&out->trending[1], start);
			kpi_array_add(&out->trending[2], region);
			kpi_array_add(&out->trending[3], Int32GetDatum(rank + 1));
			kpi_array_add(&out->trending[4],
						  window_bytes_text(tops[k].tracks[rank]->name,
											tops[k].tracks[rank]->len));
			kpi_array_add(&out->trending[5], Int64GetDatum(tops[k].entries[rank]->plays));
			kpi_array_add(&out->trending[6], Int64GetDatum(tops[k].entries[rank]->skips));
			kpi_array_add(&out->trending[7], Int64GetDatum(tops[k].entries[rank]->likes));
		}
	}
}

/* ---- the step ---- */

/*
 * What the merge needs of a delta entry, copied out of the hash table in
 * its order: the sorted items read this dense array, not the table.
 */
typedef struct WinDeltaEntry
{
	uint32		track;			/* interned strings */
	uint32		region;
	int64		plays;
	int64		skips;
	int64		likes;
	int64		listen_ms;
} WinDeltaEntry;

/*
 * A delta entry with its place in merge order (window start and size, track,
 * region) as one number: the window's ordinal among the touched windows,
 * then the ranks of the track's and the region's interned strings.
 */
typedef struct WinSortItem
{
	uint64		key;
	uint32		entry;			/* into the WinDeltaEntry array */
} WinSortItem;

/*
 * A window: (start, size).  In the table of the windows the entries were
 * counted in, the ordinals (in merge order) of the windows they count in,
 * by size (-1: none); in the table of those, its own ordinal.
 */
typedef struct WinKeyEntry
{
	KpiKey		key;			/* start, size, 0 */
	uint32		ordinal;
	int32	   *ordinals;
	char		status;
} WinKeyEntry;

static inline uint32
win_key_hash(KpiKey k)
{
	uint64		h = ((uint64) k.a ^ ((uint64) k.b << 56)) * UINT64CONST(0x9E3779B97F4A7C15);

	return (uint32) (h >> 32);
}

#define SH_PREFIX win_keys
#define SH_ELEMENT_TYPE WinKeyEntry
#define SH_KEY_TYPE KpiKey
#define SH_KEY key
#define SH_HASH_KEY(tb, k) win_key_hash(k)
#define SH_EQUAL(tb, x, y) ((x).a == (y).a && (x).b == (y).b)
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

static int
win_key_order(const void *a, const void *b)
{
	const WinKeyEntry *x = *(WinKeyEntry *const *) a;
	const WinKeyEntry *y = *(WinKeyEntry *const *) b;

	if (x->key.a != y->key.a)
		return x->key.a < y->key.a ? -1 : 1;
	return (x->key.b > y->key.b) - (x->key.b < y->key.b);
}

/*
 * The window of size k that the entries of window src count in, or false:
 * their own window, or, when the delta counted the smallest windows only
 * (d->rollup), the window of every size that src falls in (that a refresh
 * range counts).
 */
static inline bool
win_counts_in(KpiDelta *d, const KpiKey *src, int k, TimestampTz *start)
{
	if (!d->rollup)
	{
		*start = src->a;
		return k == src->b;
	}
	*start = kpi_window_start(src->a, d->sizes[k].usecs);
	return !d->refresh || (*start >= d->lo && *start < d->hi);
}

/* the entries of a table, in merge order (start, then size) */
static WinKeyEntry **
win_keys_sorted(struct win_keys_hash *tb)
{
	WinKeyEntry **keys = palloc(Max(tb->members, 1) * sizeof(WinKeyEntry *));
	win_keys_iterator it;
	WinKeyEntry *e;
	int			k = 0;

	win_keys_start_iterate(tb, &it);
	while ((e = win_keys_iterate(tb, &it)) != NULL)
		keys[k++] = e;
	qsort(keys, k, sizeof(WinKeyEntry *), win_key_order);
	return keys;
}

/*
 * The windows the entries count in (*nw of them), in merge order with
 * their ordinals set; src gets the windows the entries were counted in,
 * each with the ordinals of the windows its entries count in.
 */
static WinKeyEntry **
win_keys_ordered(KpiDelta *d, struct win_keys_hash *src, KpiEntry **es, uint32 n,
				 int *nw)
{
	struct win_keys_hash *tb = win_keys_create(CurrentMemoryContext, 64, NULL);
	WinKeyEntry **keys;
	win_keys_iterator it;
	WinKeyEntry *e;
	bool		found;

	for (uint32 i = 0; i < n; i++)
	{
		KpiKey		key = {es[i]->key.a, es[i]->key.b, 0};

		win_keys_insert(src, key, &found);
	}
	win_keys_start_iterate(src, &it);
	while ((e = win_keys_iterate(src, &it)) != NULL)
		for (int size = 0; size < d->nsizes; size++)
		{
			KpiKey		key = {0, size, 0};

			if (win_counts_in(d, &e->key, size, &key.a))
				win_keys_insert(tb, key, &found);
		}
	keys = win_keys_sorted(tb);
	for (uint32 i = 0; i < tb->members; i++)
		keys[i]->ordinal = i;
	win_keys_start_iterate(src, &it);
	while ((e = win_keys_iterate(src, &it)) != NULL)
	{
		e->ordinals = palloc(d->nsizes * sizeof(int32));
		for (int size = 0; size < d->nsizes; size++)
		{
			KpiKey		key = {0, size, 0};

			e->ordinals[size] = win_counts_in(d, &e->key, size, &key.a)
				? (int32) win_keys_lookup(tb, key)->ordinal : -1;
		}
	}
	*nw = (int) tb->members;
	return keys;
}

#define WIN_RADIX_BITS	11
#define WIN_RADIX_SIZE	(1 << WIN_RADIX_BITS)

/*
 * Sort items by key, keys below limit: an LSD radix sort, a few passes of
 * 11 bits over a delta that has an entry per few events (a comparison
 * sort cost ten times more).
 */
static WinSortItem *
win_radix_sort(WinSortItem *items, uint32 n, uint64 limit)
{
	WinSortItem *tmp = palloc(Max(n, 1) * sizeof(WinSortItem));
	uint32	   *count = palloc(WIN_RADIX_SIZE * sizeof(uint32));

	for (int shift = 0; shift < 64 && (limit - 1) >> shift != 0; shift += WIN_RADIX_BITS)
	{
		uint32		sum = 0;
		WinSortItem *swap;

		CHECK_FOR_INTERRUPTS();
		memset(count, 0, WIN_RADIX_SIZE * sizeof(uint32));
		for (uint32 i = 0; i < n; i++)
			count[(items[i].key >> shift) & (WIN_RADIX_SIZE - 1)]++;
		for (int b = 0; b < WIN_RADIX_SIZE; b++)
		{
			uint32		c = count[b];

			count[b] = sum;
			sum += c;
		}
		for (uint32 i = 0; i < n; i++)
			tmp[count[(items[i].key >> shift) & (WIN_RADIX_SIZE - 1)]++] = items[i];
		swap = items;
		items = tmp;
		tmp = swap;
	}
	pfree(tmp);
	pfree(count);
	return items;
}

/*
 * The players of a track in a window: its entry's, or, for a larger window
 * summed from the smallest ones, the union of theirs, but none in a round
 * for one up to WINDOW_PLAYERS_INSIDE_MAX times the smallest: its players
 * are those of the smallest windows inside it
 * (streamkpi._window_track_players), whose parts the round writes anyway.
 * Writing them again, and compacting them, was a fifth of the worker in
 * kpi_throughput.sh.  A refresh writes them, as a window it counts may
 * reach past its range into windows it does not rewrite.
 */
static SketchHll *
delta_track_users(KpiDelta *d, Win *w, uint32 track)
{
	SketchHll  *u = NULL;
	int64		step = d->sizes[0].usecs;

	if (d->rollup && w->size > 0 && !d->refresh &&
		d->sizes[w->size].usecs / step <= WINDOW_PLAYERS_INSIDE_MAX)
		return NULL;
	if (!d->rollup || w->size == 0)
	{
		KpiCounts  *c = kpi_table_find(d->window_users, w->start, w->size, track);

		return c != NULL ? kpi_counts_users(d, c) : NULL;
	}
	for (TimestampTz s = w->start; s < w->start + d->sizes[w->size].usecs; s += step)
	{
		KpiCounts  *c = kpi_table_find(d->window_users, s, 0, track);
		SketchHll  *cu = c != NULL ? kpi_counts_users(d, c) : NULL;

		if (cu == NULL)
			continue;
		if (u == NULL)
			u = sketch_hll_create(CurrentMemoryContext, KPI_HLL_LOG2M);
		sketch_hll_merge(u, cu);
	}
	return u;
}

/*
 * Add a delta entry to its window w: a new track, a new region of the last
 * track, or (a larger window summed from the smallest) more of the last
 * region.
 */
static void
add_delta_region(KpiDelta *d, Win *w, const WinDeltaEntry *e, bool new_track,
				 bool new_region)
{
	KpiString  *region = &d->strs[e->region];
	WinTrack   *t;
	WinRegion  *r;

	if (new_track)
	{
		t = &w->delta[w->ndelta++];
		memset(t, 0, sizeof(WinTrack));
		t->name = d->strs[e->track].data;
		t->len = d->strs[e->track].len;
		t->users = delta_track_users(d, w, e->track);
		t->touched = true;
	}
	t = &w->delta[w->ndelta - 1];
	if (new_region)
	{
		if (t->nregions % 4 == 0)
			t->regions = t->nregions == 0 ? palloc(4 * sizeof(WinRegion))
				: repalloc(t->regions, (t->nregions + 4) * sizeof(WinRegion));
		r = &t->regions[t->nregions++];
		memset(r, 0, sizeof(WinRegion));
		r->name = region->data;
		r->len = region->len;
		r->touched = true;
	}
	r = &t->regions[t->nregions - 1];
	r->plays += e->plays;
	r->skips += e->skips;
	r->likes += e->likes;
	r->listen_ms += e->listen_ms;
}

/*
 * The delta's entries as items in merge order: one per window each counts
 * in, keyed (window ordinal, track rank, region rank) in bit fields of
 * strbits bits for the ranks (shifts, not divisions, take them apart),
 * their fields copied to *data.
 */
static WinSortItem *
win_items(KpiDelta *d, KpiEntry **es, uint32 n, struct win_keys_hash *src,
		  int strbits, WinDeltaEntry **data, uint32 *nitems)
{
	uint32	   *rank = kpi_string_ranks(d);
	WinSortItem *items = palloc(Max((Size) n * d->nsizes, 1) * sizeof(WinSortItem));
	WinDeltaEntry *de = palloc(Max(n, 1) * sizeof(WinDeltaEntry));
	uint32		m = 0;

	for (uint32 i = 0; i < n; i++)
	{
		KpiKey		key = {es[i]->key.a, es[i]->key.b, 0};
		int32	   *ordinals = win_keys_lookup(src, key)->ordinals;
		uint32		track = es[i]->key.c & 0xffffffff;
		uint32		region = (uint64) es[i]->key.c >> 32;
		uint64		tr = (uint64) rank[track] << strbits | rank[region];

		de[i].track = track;
		de[i].region = region;
		de[i].plays = es[i]->counts.plays;
		de[i].skips = es[i]->counts.skips;
		de[i].likes = es[i]->counts.likes;
		de[i].listen_ms = es[i]->counts.listen_ms;
		for (int size = 0; size < d->nsizes; size++)
		{
			if (ordinals[size] < 0)
				continue;
			items[m].key = (uint64) ordinals[size] << (2 * strbits) | tr;
			items[m].entry = i;
			m++;
		}
	}
	pfree(rank);
	*data = de;
	*nitems = m;
	return items;
}

/* The touched windows with their delta tracks, sorted. */
static Win *
collect_windows(KpiDelta *d, int *nwins)
{
	uint32		n;
	KpiEntry  **es = kpi_table_entries(d->windows, &n);
	int			strbits = pg_ceil_log2_32(Max(d->nstrs, 2));
	struct win_keys_hash *tb = win_keys_create(CurrentMemoryContext, 64, NULL);
	int			nw;
	WinKeyEntry **keys = win_keys_ordered(d, tb, es, n, &nw);
	WinDeltaEntry *data;
	WinSortItem *items;
	Win		   *wins = palloc0((nw + 1) * sizeof(Win));

	if (2 * strbits + pg_ceil_log2_32(Max(nw, 2)) > 63)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many KPI window keys to sort in one round: %d windows, %u strings",
						nw, d->nstrs)));
	items = win_items(d, es, n, tb, strbits, &data, &n);
	items = win_radix_sort(items, n, (uint64) Max(nw, 1) << (2 * strbits));
	for (int k = 0; k < nw; k++)
	{
		wins[k].start = keys[k]->key.a;
		wins[k].size = (int) keys[k]->key.b;
	}
	for (uint32 i = 0; i < n; i++)
	{
		uint64		window = items[i].key >> (2 * strbits);
		uint64		track = items[i].key >> strbits;
		bool		new_window = i == 0 || window != items[i - 1].key >> (2 * strbits);
		bool		new_track = new_window || track != items[i - 1].key >> strbits;
		Win		   *w = &wins[window];

		CHECK_FOR_INTERRUPTS();
		if (new_window)
			w->delta = palloc((n - i) * sizeof(WinTrack));
		add_delta_region(d, w, &data[items[i].entry], new_track,
						 new_track || items[i].key != items[i - 1].key);
	}
	pfree(es);
	pfree(items);
	pfree(data);
	pfree(keys);
	win_keys_destroy(tb);
	*nwins = nw;
	return wins;
}

/* the windows' starts, sizes and ordinals, the parameters of a statement */
static void
window_key_args(KpiDelta *d, Win *wins, int nw, KpiArray *args)
{
	kpi_array_init(&args[0], TIMESTAMPTZOID, nw);
	kpi_array_init(&args[1], INTERVALOID, nw);
	kpi_array_init(&args[2], INT4OID, nw);
	for (int k = 0; k < nw; k++)
	{
		kpi_array_add(&args[0], TimestampTzGetDatum(wins[k].start));
		kpi_array_add(&args[1], IntervalPGetDatum(&d->sizes[wins[k].size].size));
		kpi_array_add(&args[2], Int32GetDatum(k));
	}
}

/*
 * Read the windows' part 0 and how many players parts they have, in one
 * statement (the players parts themselves stay on disk).  In the KPI
 * worker, a part 0 it wrote last is taken from its cache instead.
 */
static int
load_windows(KpiDelta *d, Win *wins, int nw)
{
	KpiArray	args[3];
	int			cached = 0;

	window_key_args(d, wins, nw, args);
	kpi_run("SELECT k.i, w.tracks, p.n, p.last, w.xmin"
			" FROM unnest($1, $2, $3) k(st, sz, i)"
			" LEFT JOIN streamkpi.window_state w"
			" ON w.window_start OPERATOR(pg_catalog.=) k.st"
			" AND w.window_size OPERATOR(pg_catalog.=) k.sz"
			" AND w.part OPERATOR(pg_catalog.=) 0"
			" CROSS JOIN LATERAL (SELECT pg_catalog.count(*)::int4 AS n,"
			"   coalesce(pg_catalog.max(u.part), 0) AS last"
			"  FROM streamkpi.window_state u"
			" WHERE u.window_start OPERATOR(pg_catalog.=) k.st"
			"   AND u.window_size OPERATOR(pg_catalog.=) k.sz"
			"   AND u.part OPERATOR(pg_catalog.>) 0) p",
			3, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Win		   *w = &wins[DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull))];
		Datum		tracks = SPI_getbinval(tup, desc, 2, &isnull);

		if (!isnull)
		{
			bool		xnull;
			TransactionId xmin = DatumGetTransactionId(SPI_getbinval(tup, desc, 5, &xnull));
			const bytea *b = NULL;

			if (kpi_in_worker)
				b = window_cache_find(d->sizes[w->size].usecs, w->start, xmin);
			if (b != NULL)
				cached++;
			else
				b = DatumGetByteaPP(tracks);
			w->stored = (const uint8 *) VARDATA_ANY(b);
			w->stored_len = VARSIZE_ANY_EXHDR(b);
		}
		w->nparts = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		w->last_part = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
	}
	return cached;
}

/*
 * How many of a window's players parts (sizes ascending) a compaction
 * merges: all but the WINDOW_COMPACT_KEEP largest, and each of those while
 * what is merged is at least its size.  A large part stays until the small
 * ones add up to it, so a player's bytes are rewritten a few times over
 * the window's life, not at every compaction (at 100,000 events/s that
 * rewrote megabytes of a 10-minute window every 16 rounds); and a window
 * keeps at most 4 parts, so its compactions stay at least 10 rounds apart.
 */
static int
compact_count(const int64 *sizes, int n)
{
	int			k = Max(n - WINDOW_COMPACT_KEEP, Min(n, 2));
	int64		sum = 0;

	for (int i = 0; i < k; i++)
		sum += sizes[i];
	while (k < n && sum >= sizes[k])
		sum += sizes[k++];
	return k;
}

/*
 * Compact window w: the players parts compact_count() picks (only those
 * detoasted) and the round's players merged into one part, which replaces
 * them.  Each window is done in a context freed before the next: a round
 * holds one window's players at a time, however many it compacts (with
 * events spread over an hour, all reach the limit in the same round).
 */
static Size
compact_window(KpiDelta *d, Win *w)
{
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext cxt = AllocSetContextCreate(outer, "streamkpi window compaction",
											  ALLOCSET_DEFAULT_SIZES);
	KpiArray	args[4];
	WinTrack  **parts;
	int		   *nparts;
	int64	   *sizes;
	int			np;
	KpiArray	merged_parts[3];	/* start, size, the parts merged */
	bytea	   *packed;
	Size		bytes;

	MemoryContextSwitchTo(cxt);
	window_key_args(d, w, 1, args);
	kpi_run("SELECT u.part, pg_catalog.pg_column_size(u.tracks)::int8, u.tracks"
			" FROM unnest($1, $2, $3) k(st, sz, i)"
			" JOIN streamkpi.window_state u"
			" ON u.window_start OPERATOR(pg_catalog.=) k.st"
			" AND u.window_size OPERATOR(pg_catalog.=) k.sz"
			" AND u.part OPERATOR(pg_catalog.>) 0"
			" ORDER BY 2, 1",
			3, args, SPI_OK_SELECT);
	parts = palloc(Max(SPI_processed, 1) * sizeof(WinTrack *));
	nparts = palloc(Max(SPI_processed, 1) * sizeof(int));
	sizes = palloc(Max(SPI_processed, 1) * sizeof(int64));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;

		sizes[r] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
											   SPI_tuptable->tupdesc, 2, &isnull));
	}
	np = compact_count(sizes, (int) SPI_processed);
	kpi_array_init(&merged_parts[2], INT4OID, np);
	for (int r = 0; r < np; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		bool		isnull;
		bytea	   *b = DatumGetByteaPP(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3,
													  &isnull));

		CHECK_FOR_INTERRUPTS();
		kpi_array_add(&merged_parts[2], SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
		parts[r] = window_unpack((const uint8 *) VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b),
								 &nparts[r]);
	}
	window_players_union(w->merged, w->nmerged, parts, nparts, np);
	packed = window_pack(w->merged, w->nmerged, true);
	bytes = VARSIZE(packed);
	SPI_freetuptable(SPI_tuptable);

	/* the parts merged give way to the one part last + 1 */
	window_key_args(d, w, 1, args);
	merged_parts[0] = args[0];
	merged_parts[1] = args[1];
	kpi_run("DELETE FROM streamkpi.window_state s"
			" USING unnest($1, $2) k(st, sz)"
			" WHERE s.window_start OPERATOR(pg_catalog.=) k.st"
			" AND s.window_size OPERATOR(pg_catalog.=) k.sz"
			" AND s.part OPERATOR(pg_catalog.=) ANY ($3)",
			3, merged_parts, SPI_OK_DELETE);
	args[2].elems[0] = Int32GetDatum(w->last_part + 1);
	kpi_array_init(&args[3], BYTEAOID, 1);
	kpi_array_add(&args[3], PointerGetDatum(packed));
	kpi_run("INSERT INTO streamkpi.window_state (window_start, window_size, part, tracks)"
			" SELECT unnest($1), unnest($2), unnest($3), unnest($4)",
			4, args, SPI_OK_INSERT);

	MemoryContextSwitchTo(outer);
	MemoryContextDelete(cxt);
	/* the union pointed into the parts, freed now */
	for (int i = 0; i < w->nmerged; i++)
		w->merged[i].packed = NULL;
	return bytes;
}

/*
 * Write part 0 of the windows, add the round's players parts (of the
 * windows not compacted), and replace the trending rows of the touched
 * (window, region) keys.
 */
static void
write_windows(WinOutput *out)
{
	kpi_run("INSERT INTO streamkpi.window_state AS s (window_start, window_size, part, tracks)"
			" SELECT unnest($1), unnest($2), 0, unnest($3)"
			" ON CONFLICT (window_start, window_size, part)"
			" DO UPDATE SET tracks = excluded.tracks",
			3, out->state, SPI_OK_INSERT);
	if (kpi_in_worker)
		window_cache_update(out->state_usecs, out->state[0].elems,
							out->state[2].elems, out->state[2].n);
	if (out->players[0].n > 0)
		kpi_run("INSERT INTO streamkpi.window_state (window_start, window_size, part, tracks)"
				" SELECT unnest($1), unnest($2), unnest($3), unnest($4)",
				4, out->players, SPI_OK_INSERT);

	/*
	 * The rankings' rows are updated in place and only ranks beyond a new
	 * ranking's length deleted: deleted and inserted each round, they left
	 * index entries of dead rows that every later round's bitmap scans
	 * read until a vacuum.  A rank whose row is already right is left as
	 * it is: most ranks of a touched region keep their track and counts.
	 */
	if (out->trending[0].n > 0)
		kpi_run("INSERT INTO streamkpi.trending AS t (window_size, window_start, region, rank,"
				" window_end, track_id, plays, skips, likes)"
				" SELECT sz, st, r, rk, streamkpi._window_end(st, sz), tr, p, sk, lk"
				" FROM (SELECT unnest($1) sz, unnest($2) st, unnest($3) r, unnest($4) rk,"
				" unnest($5) tr, unnest($6) p, unnest($7) sk, unnest($8) lk) x"
				" ON CONFLICT (window_start, window_size, region, rank) DO UPDATE"
				" SET track_id = excluded.track_id, plays = excluded.plays,"
				" skips = excluded.skips, likes = excluded.likes"
				" WHERE (t.track_id, t.plays, t.skips, t.likes)"
				" IS DISTINCT FROM (excluded.track_id, excluded.plays,"
				" excluded.skips, excluded.likes)",
				8, out->trending, SPI_OK_INSERT);
	if (out->region_keys[0].n > 0)
		kpi_run("DELETE FROM streamkpi.trending t"
				" USING unnest($1, $2, $3, $4) k(sz, st, r, n)"
				" WHERE t.window_size OPERATOR(pg_catalog.=) k.sz"
				" AND t.window_start OPERATOR(pg_catalog.=) k.st"
				" AND t.region OPERATOR(pg_catalog.=) k.r"
				" AND t.rank OPERATOR(pg_catalog.>) k.n",
				4, out->region_keys, SPI_OK_DELETE);
}

static void
init_output(WinOutput *out, int nw)
{
	Oid			trending_types[8] = {INTERVALOID, TIMESTAMPTZOID, TEXTOID, INT4OID,
	TEXTOID, INT8OID, INT8OID, INT8OID};

	kpi_array_init(&out->state[0], TIMESTAMPTZOID, nw);
	kpi_array_init(&out->state[1], INTERVALOID, nw);
	kpi_array_init(&out->state[2], BYTEAOID, nw);
	out->state_usecs = palloc(Max(nw, 1) * sizeof(int64));
	kpi_array_init(&out->players[0], TIMESTAMPTZOID, nw);
	kpi_array_init(&out->players[1], INTERVALOID, nw);
	kpi_array_init(&out->players[2], INT4OID, nw);
	kpi_array_init(&out->players[3], BYTEAOID, nw);
	kpi_array_init(&out->region_keys[0], INTERVALOID, nw);
	kpi_array_init(&out->region_keys[1], TIMESTAMPTZOID, nw);
	kpi_array_init(&out->region_keys[2], TEXTOID, nw);
	kpi_array_init(&out->region_keys[3], INT4OID, nw);
	for (int i = 0; i < 8; i++)
		kpi_array_init(&out->trending[i], trending_types[i], nw * 4);
}

/*
 * The rows of window w: its part 0, and its players part: the round's
 * players, or, when it compacts the window, those merged with all of its
 * stored parts, which it replaces.  Returns the bytes packed.
 */
static Size
window_output(KpiDelta *d, Win *w, WinOutput *out, int *ncompacted)
{
	Datum		start = TimestampTzGetDatum(w->start);
	Datum		size = IntervalPGetDatum(&d->sizes[w->size].size);
	bytea	   *part0 = window_pack(w->merged, w->nmerged, false);
	bytea	   *players = NULL;
	Size		bytes = VARSIZE(part0);

	out->state_usecs[out->state[0].n] = d->sizes[w->size].usecs;
	kpi_array_add(&out->state[0], start);
	kpi_array_add(&out->state[1], size);
	kpi_array_add(&out->state[2], PointerGetDatum(part0));
	if (w->nparts >= WINDOW_PLAYERS_PARTS_MAX ||
		(w->nparts >= WINDOW_PLAYERS_PARTS_MAX - WINDOW_PLAYERS_PARTS_EARLY &&
		 *ncompacted == 0))
	{
		(*ncompacted)++;
		return bytes + compact_window(d, w);
	}
	if (window_count_players(w->merged, w->nmerged) > 0)
		players = window_pack(w->merged, w->nmerged, true);
	if (players != NULL)
	{
		if (w->last_part == PG_INT32_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("too many players parts of a window in streamkpi.window_state")));
		kpi_array_add(&out->players[0], start);
		kpi_array_add(&out->players[1], size);
		kpi_array_add(&out->players[2], Int32GetDatum(w->last_part + 1));
		kpi_array_add(&out->players[3], PointerGetDatum(players));
		bytes += VARSIZE(players);
	}
	return bytes;
}

/*
 * Merge the window deltas into streamkpi.window_state and derive the
 * trending rows they change (track_windows shows the state as it is).
 */
void
kpi_merge_windows(KpiDelta *d)
{
	int			nw;
	Win		   *wins;
	WinOutput	out;
	TimestampTz t0 = GetCurrentTimestamp();
	TimestampTz t1;
	TimestampTz t2;
	Size		bytes = 0;
	int			ncompacted = 0;
	int			ncached;

	if (kpi_table_count(d->windows) == 0)
		return;
	wins = collect_windows(d, &nw);
	ncached = load_windows(d, wins, nw);
	init_output(&out, nw);
	t1 = GetCurrentTimestamp();
	for (int k = 0; k < nw; k++)
	{
		Win		   *w = &wins[k];

		window_merge(w);
		bytes += window_output(d, w, &out, &ncompacted);
		derive_trending(d, w, &out);
	}
	t2 = GetCurrentTimestamp();
	write_windows(&out);
	elog(DEBUG1, "KPI windows: %d windows (part 0 of %d from the cache), %d compacted"
		 " (%zu bytes written); read %.1f ms, merge %.1f ms, write %.1f ms",
		 nw, ncached, ncompacted, bytes, (t1 - t0) / 1000.0,
		 (t2 - t1) / 1000.0, (GetCurrentTimestamp() - t2) / 1000.0);
}
