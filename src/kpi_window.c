/*-------------------------------------------------------------------------
 *
 * kpi_window.c
 *	  The window step of the KPI engine.  The state of one window (a size
 *	  of streamkpi.trending_windows and a start) is one row of
 *	  streamkpi.window_state: its tracks, each with the hll of the users
 *	  who played it and the counters of each region, packed into one bytea
 *	  (strings as a varint length and their bytes, sorted by bytes):
 *
 *	    version byte 1, varint tracks, then per track:
 *	    track, its players' hll value (length 0: nobody played), varint
 *	    regions, then per region:
 *	    region, varint plays, varint skips, varint likes, zigzag varint
 *	    listen_ms
 *
 *	  A round puts its window deltas in merge order (one radix sort; the
 *	  larger windows summed from the smallest ones when the delta counted
 *	  those only, KpiDelta.rollup), reads the rows of the windows its
 *	  events fall in, merges the deltas in (one pass over two sorted lists), writes each row back in
 *	  one statement, and derives from the merged entries the trending rows
 *	  of the touched (window, region) keys.  One row per window instead of
 *	  one per (window, region, track) is what makes a round's writes scale
 *	  with the windows it touches rather than with its events.
 *
 *	  streamkpi.track_windows is a view over these rows
 *	  (streamkpi._window_track_rows()): a round writes no row per (window,
 *	  track), and what the view shows is the state the round committed.
 *	  streamkpi.window_track_state shows the entries as rows.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/int.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/timestamp.h"

#include "kpi.h"

#define WINDOW_STATE_VERSION 1

/* A region's counters of a track in a window. */
typedef struct WinRegion
{
	const char *name;
	uint32		len;
	int64		plays;
	int64		skips;
	int64		likes;
	int64		listen_ms;
	bool		touched;
} WinRegion;

/* A track of a window. */
typedef struct WinTrack
{
	const char *name;
	uint32		len;
	const uint8 *packed;		/* the stored players' sketch, or NULL */
	uint32		packed_len;
	SketchHll  *users;			/* or the delta's or merged one */
	WinRegion  *regions;		/* sorted by name */
	int			nregions;
	bool		touched;		/* the delta has it */
} WinTrack;

/* A window the delta touched. */
typedef struct Win
{
	int			size;			/* index into KpiDelta.sizes */
	TimestampTz start;
	WinTrack   *delta;			/* sorted by name */
	int			ndelta;
	const uint8 *stored;		/* the state row's bytes, or NULL */
	uint32		stored_len;
	WinTrack   *merged;			/* sorted by name */
	int			nmerged;
} Win;

/* ---- the packed form ---- */

/* at p, which has room for 10 bytes; returns the end */
static inline char *
put_varint_at(char *p, uint64 v)
{
	while (v >= 0x80)
	{
		*p++ = (char) ((v & 0x7f) | 0x80);
		v >>= 7;
	}
	*p++ = (char) v;
	return p;
}

/*
 * Written in place, not through appendStringInfoChar: a round packs
 * several varints per (window, track, region).
 */
static inline void
put_varint(StringInfo buf, uint64 v)
{
	enlargeStringInfo(buf, 10);
	buf->len = put_varint_at(buf->data + buf->len, v) - buf->data;
	buf->data[buf->len] = '\0';
}

static inline void
put_bytes(StringInfo buf, const void *p, uint32 len)
{
	char	   *end;

	enlargeStringInfo(buf, 10 + len);
	end = put_varint_at(buf->data + buf->len, len);
	memcpy(end, p, len);
	buf->len = end + len - buf->data;
	buf->data[buf->len] = '\0';
}

static void
window_state_corrupt(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("corrupt row in streamkpi.window_state"),
			 errhint("Recompute the days it covers with streamkpi.refresh_kpis().")));
}

static uint64
take_varint(const uint8 **p, const uint8 *end)
{
	uint64		v = 0;
	int			shift = 0;

	for (;;)
	{
		if (*p >= end || shift > 63)
			window_state_corrupt();
		v |= (uint64) (**p & 0x7f) << shift;
		if ((*(*p)++ & 0x80) == 0)
			return v;
		shift += 7;
	}
}

static const uint8 *
take_bytes(const uint8 **p, const uint8 *end, uint32 *len)
{
	uint64		n = take_varint(p, end);
	const uint8 *start = *p;

	if (n > (uint64) (end - *p))
		window_state_corrupt();
	*len = (uint32) n;
	*p += n;
	return start;
}

static bytea *
window_pack(const WinTrack *ts, int n)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoSpaces(&buf, VARHDRSZ);
	appendStringInfoChar(&buf, WINDOW_STATE_VERSION);
	put_varint(&buf, n);
	for (int i = 0; i < n; i++)
	{
		const WinTrack *t = &ts[i];

		put_bytes(&buf, t->name, t->len);
		if (t->users != NULL)
		{
			bytea	   *u = sketch_hll_pack(t->users);

			put_bytes(&buf, VARDATA(u), VARSIZE(u) - VARHDRSZ);
		}
		else
			put_bytes(&buf, t->packed, t->packed_len);
		put_varint(&buf, t->nregions);
		for (int j = 0; j < t->nregions; j++)
		{
			const WinRegion *r = &t->regions[j];

			put_bytes(&buf, r->name, r->len);
			put_varint(&buf, r->plays);
			put_varint(&buf, r->skips);
			put_varint(&buf, r->likes);
			put_varint(&buf, ((uint64) r->listen_ms << 1) ^ (uint64) (r->listen_ms >> 63));
		}
	}
	SET_VARSIZE(buf.data, buf.len);
	return (bytea *) buf.data;
}

static void
unpack_regions(const uint8 **p, const uint8 *end, WinTrack *t)
{
	uint64		n = take_varint(p, end);

	if (n > (uint64) (end - *p))
		window_state_corrupt();
	t->nregions = (int) n;
	t->regions = palloc0(Max(n, 1) * sizeof(WinRegion));
	for (int j = 0; j < t->nregions; j++)
	{
		WinRegion  *r = &t->regions[j];
		uint64		zz;

		r->name = (const char *) take_bytes(p, end, &r->len);
		r->plays = (int64) take_varint(p, end);
		r->skips = (int64) take_varint(p, end);
		r->likes = (int64) take_varint(p, end);
		zz = take_varint(p, end);
		r->listen_ms = (int64) (zz >> 1) ^ -(int64) (zz & 1);
	}
}

/* The tracks of a packed state, pointing into it. */
static WinTrack *
window_unpack(const uint8 *p, uint32 len, int *n)
{
	const uint8 *end = p + len;
	WinTrack   *ts;
	uint64		count;

	if (len < 1 || *p++ != WINDOW_STATE_VERSION)
		window_state_corrupt();
	count = take_varint(&p, end);
	if (count > len)
		window_state_corrupt();
	ts = palloc0(Max(count, 1) * sizeof(WinTrack));
	for (uint64 i = 0; i < count; i++)
	{
		WinTrack   *t = &ts[i];

		t->name = (const char *) take_bytes(&p, end, &t->len);
		t->packed = take_bytes(&p, end, &t->packed_len);
		if (t->packed_len == 0)
			t->packed = NULL;
		unpack_regions(&p, end, t);
	}
	if (p != end)
		window_state_corrupt();
	*n = (int) count;
	return ts;
}

/* ---- merging ---- */

static int
bytes_order(const char *a, uint32 alen, const char *b, uint32 blen)
{
	int			c = memcmp(a, b, Min(alen, blen));

	if (c != 0)
		return c;
	return (alen > blen) - (alen < blen);
}

/* a stored sketch as a value of its own */
static bytea *
window_value(const uint8 *p, uint32 len)
{
	bytea	   *v = palloc(VARHDRSZ + len);

	SET_VARSIZE(v, VARHDRSZ + len);
	memcpy(VARDATA(v), p, len);
	return v;
}

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
		: bytes_order(old->regions[i].name, old->regions[i].len,
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

static void
merge_track(WinTrack *m, WinTrack *old, const WinTrack *delta)
{
	*m = *old;
	m->touched = true;
	merge_regions(m, old, delta);
	if (delta->users == NULL)
		return;
	if (m->packed == NULL)
		m->users = delta->users;
	else
	{
		bytea	   *v = sketch_hll_merge_into(m->packed, m->packed_len,
											  delta->users, NULL);

		m->packed = (const uint8 *) VARDATA(v);
		m->packed_len = VARSIZE(v) - VARHDRSZ;
	}
}

/* stored + delta, both sorted, into merged */
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
		: bytes_order(old[i].name, old[i].len, w->delta[j].name, w->delta[j].len);
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
	KpiArray	state[3];		/* start, size, tracks */
	KpiArray	region_keys[3];	/* size, start, region: trending to replace */
	KpiArray	trending[8];	/* size, start, region, rank, track, plays,
								 * skips, likes */
} WinOutput;

static Datum
bytes_text(const char *p, uint32 len)
{
	return PointerGetDatum(cstring_to_text_with_len(p, len));
}

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
				if (bytes_order(tops[k].region, tops[k].len, r->name, r->len) == 0)
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
				if (bytes_order(tops[k].region, tops[k].len, r->name, r->len) == 0)
				{
					top_offer(&tops[k], top_n, &w->merged[i], r);
					break;
				}
		}
	for (int k = 0; k < ntops; k++)
	{
		Datum		region = bytes_text(tops[k].region, tops[k].len);

		kpi_array_add(&out->region_keys[0], size);
		kpi_array_add(&out->region_keys[1], start);
		kpi_array_add(&out->region_keys[2], region);
		for (int rank = 0; rank < tops[k].n; rank++)
		{
			kpi_array_add(&out->trending[0], size);
			kpi_array_add(&out->trending[1], start);
			kpi_array_add(&out->trending[2], region);
			kpi_array_add(&out->trending[3], Int32GetDatum(rank + 1));
			kpi_array_add(&out->trending[4], bytes_text(tops[k].tracks[rank]->name,
														tops[k].tracks[rank]->len));
			kpi_array_add(&out->trending[5], Int64GetDatum(tops[k].entries[rank]->plays));
			kpi_array_add(&out->trending[6], Int64GetDatum(tops[k].entries[rank]->skips));
			kpi_array_add(&out->trending[7], Int64GetDatum(tops[k].entries[rank]->likes));
		}
	}
}

/* ---- the step ---- */

/*
 * A delta entry with its place in merge order (window start and size, track,
 * region) as one number: the window's ordinal among the touched windows,
 * then the ranks of the track's and the region's interned strings.
 */
typedef struct WinSortItem
{
	uint64		key;
	KpiEntry   *entry;
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
 * summed from the smallest ones, the union of theirs.
 */
static SketchHll *
delta_track_users(KpiDelta *d, Win *w, uint32 track)
{
	SketchHll  *u = NULL;
	int64		step = d->sizes[0].usecs;

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
add_delta_region(KpiDelta *d, Win *w, KpiEntry *e, bool new_track, bool new_region)
{
	uint32		track = e->key.c & 0xffffffff;
	KpiString  *region = &d->strs[(uint64) e->key.c >> 32];
	WinTrack   *t;
	WinRegion  *r;

	if (new_track)
	{
		t = &w->delta[w->ndelta++];
		memset(t, 0, sizeof(WinTrack));
		t->name = d->strs[track].data;
		t->len = d->strs[track].len;
		t->users = delta_track_users(d, w, track);
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
	r->plays += e->counts.plays;
	r->skips += e->counts.skips;
	r->likes += e->counts.likes;
	r->listen_ms += e->counts.listen_ms;
}

/*
 * The delta's entries as items in merge order: one per window each counts
 * in (window ordinal, track rank, region rank).
 */
static WinSortItem *
win_items(KpiDelta *d, KpiEntry **es, uint32 n, struct win_keys_hash *src,
		  uint64 nstrs, uint32 *nitems)
{
	uint32	   *rank = kpi_string_ranks(d);
	WinSortItem *items = palloc(Max((Size) n * d->nsizes, 1) * sizeof(WinSortItem));
	uint32		m = 0;

	for (uint32 i = 0; i < n; i++)
	{
		KpiKey		key = {es[i]->key.a, es[i]->key.b, 0};
		int32	   *ordinals = win_keys_lookup(src, key)->ordinals;
		uint64		tr = (uint64) rank[es[i]->key.c & 0xffffffff] * nstrs
			+ rank[(uint64) es[i]->key.c >> 32];

		for (int size = 0; size < d->nsizes; size++)
		{
			if (ordinals[size] < 0)
				continue;
			items[m].key = (uint64) ordinals[size] * nstrs * nstrs + tr;
			items[m].entry = es[i];
			m++;
		}
	}
	pfree(rank);
	*nitems = m;
	return items;
}

/* The touched windows with their delta tracks, sorted. */
static Win *
collect_windows(KpiDelta *d, int *nwins)
{
	uint32		n;
	KpiEntry  **es = kpi_table_entries(d->windows, &n);
	uint64		nstrs = Max(d->nstrs, 1);
	struct win_keys_hash *tb = win_keys_create(CurrentMemoryContext, 64, NULL);
	int			nw;
	WinKeyEntry **keys = win_keys_ordered(d, tb, es, n, &nw);
	uint64		limit;
	WinSortItem *items;
	Win		   *wins = palloc0((nw + 1) * sizeof(Win));

	if (pg_mul_u64_overflow(nstrs, nstrs, &limit) ||
		pg_mul_u64_overflow(limit, (uint64) nw, &limit))
		elog(ERROR, "too many KPI window keys to sort (%d windows, %u strings)",
			 nw, d->nstrs);
	items = win_items(d, es, n, tb, nstrs, &n);
	items = win_radix_sort(items, n, limit);
	for (int k = 0; k < nw; k++)
	{
		wins[k].start = keys[k]->key.a;
		wins[k].size = (int) keys[k]->key.b;
	}
	for (uint32 i = 0; i < n; i++)
	{
		uint64		track = items[i].key / nstrs;
		bool		new_window = i == 0 || track / nstrs != items[i - 1].key / nstrs / nstrs;
		bool		new_track = new_window || track != items[i - 1].key / nstrs;
		Win		   *w = &wins[track / nstrs];

		if (new_window)
			w->delta = palloc((n - i) * sizeof(WinTrack));
		add_delta_region(d, w, items[i].entry, new_track,
						 new_track || items[i].key != items[i - 1].key);
	}
	pfree(es);
	pfree(items);
	pfree(keys);
	win_keys_destroy(tb);
	*nwins = nw;
	return wins;
}

/* Read the stored state rows of the windows, in one statement. */
static void
load_windows(KpiDelta *d, Win *wins, int nw)
{
	KpiArray	args[3];

	kpi_array_init(&args[0], TIMESTAMPTZOID, nw);
	kpi_array_init(&args[1], INTERVALOID, nw);
	kpi_array_init(&args[2], INT4OID, nw);
	for (int k = 0; k < nw; k++)
	{
		kpi_array_add(&args[0], TimestampTzGetDatum(wins[k].start));
		kpi_array_add(&args[1], IntervalPGetDatum(&d->sizes[wins[k].size].size));
		kpi_array_add(&args[2], Int32GetDatum(k));
	}
	kpi_run("SELECT k.i, w.tracks"
			" FROM unnest($1, $2, $3) k(st, sz, i)"
			" JOIN streamkpi.window_state w"
			" ON w.window_start OPERATOR(pg_catalog.=) k.st"
			" AND w.window_size OPERATOR(pg_catalog.=) k.sz",
			3, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int			k = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r],
													SPI_tuptable->tupdesc, 1, &isnull));
		bytea	   *b = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[r],
													  SPI_tuptable->tupdesc, 2, &isnull));

		wins[k].stored = (const uint8 *) VARDATA_ANY(b);
		wins[k].stored_len = VARSIZE_ANY_EXHDR(b);
	}
}

static void
write_windows(WinOutput *out)
{
	kpi_run("INSERT INTO streamkpi.window_state AS s (window_start, window_size, tracks)"
			" SELECT unnest($1), unnest($2), unnest($3)"
			" ON CONFLICT (window_start, window_size) DO UPDATE SET tracks = excluded.tracks",
			3, out->state, SPI_OK_INSERT);
	if (out->region_keys[0].n > 0)
		kpi_run("DELETE FROM streamkpi.trending t"
				" USING unnest($1, $2, $3) k(sz, st, r)"
				" WHERE t.window_size OPERATOR(pg_catalog.=) k.sz"
				" AND t.window_start OPERATOR(pg_catalog.=) k.st"
				" AND t.region OPERATOR(pg_catalog.=) k.r",
				3, out->region_keys, SPI_OK_DELETE);
	if (out->trending[0].n > 0)
		kpi_run("INSERT INTO streamkpi.trending (window_size, window_start, region, rank,"
				" window_end, track_id, plays, skips, likes)"
				" SELECT sz, st, r, rk, st OPERATOR(pg_catalog.+) sz, tr, p, sk, lk"
				" FROM (SELECT unnest($1) sz, unnest($2) st, unnest($3) r, unnest($4) rk,"
				" unnest($5) tr, unnest($6) p, unnest($7) sk, unnest($8) lk) x",
				8, out->trending, SPI_OK_INSERT);
}

static void
init_output(WinOutput *out, int nw)
{
	Oid			trending_types[8] = {INTERVALOID, TIMESTAMPTZOID, TEXTOID, INT4OID,
	TEXTOID, INT8OID, INT8OID, INT8OID};

	kpi_array_init(&out->state[0], TIMESTAMPTZOID, nw);
	kpi_array_init(&out->state[1], INTERVALOID, nw);
	kpi_array_init(&out->state[2], BYTEAOID, nw);
	kpi_array_init(&out->region_keys[0], INTERVALOID, nw);
	kpi_array_init(&out->region_keys[1], TIMESTAMPTZOID, nw);
	kpi_array_init(&out->region_keys[2], TEXTOID, nw);
	for (int i = 0; i < 8; i++)
		kpi_array_init(&out->trending[i], trending_types[i], nw * 4);
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

	if (kpi_table_count(d->windows) == 0)
		return;
	wins = collect_windows(d, &nw);
	load_windows(d, wins, nw);
	init_output(&out, nw);
	t1 = GetCurrentTimestamp();
	for (int k = 0; k < nw; k++)
	{
		Win		   *w = &wins[k];
		bytea	   *packed;

		window_merge(w);
		packed = window_pack(w->merged, w->nmerged);
		bytes += VARSIZE(packed);
		kpi_array_add(&out.state[0], TimestampTzGetDatum(w->start));
		kpi_array_add(&out.state[1], IntervalPGetDatum(&d->sizes[w->size].size));
		kpi_array_add(&out.state[2], PointerGetDatum(packed));
		derive_trending(d, w, &out);
	}
	t2 = GetCurrentTimestamp();
	write_windows(&out);
	elog(DEBUG1, "KPI windows: %d windows (%zu bytes of state);"
		 " read %.1f ms, merge %.1f ms, write %.1f ms",
		 nw, bytes, (t1 - t0) / 1000.0,
		 (t2 - t1) / 1000.0, (GetCurrentTimestamp() - t2) / 1000.0);
}

/* ---- SQL functions over one window_state row ---- */

/*
 * The start of both SQL functions below: a materialized result set, and
 * the tracks of the window_state row in argument 0.
 */
static WinTrack *
window_srf_tracks(FunctionCallInfo fcinfo, int *n)
{
	bytea	   *b = PG_GETARG_BYTEA_PP(0);

	InitMaterializedSRF(fcinfo, 0);
	return window_unpack((const uint8 *) VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b), n);
}

/* ---- streamkpi._window_state_entries(bytea) ---- */

PG_FUNCTION_INFO_V1(streamkpi_window_state_entries);

/*
 * The entries of a window_state row as rows (region, track_id, plays,
 * skips, likes, listen_ms, users), for streamkpi.window_track_state.
 */
Datum
streamkpi_window_state_entries(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			n;
	WinTrack   *ts = window_srf_tracks(fcinfo, &n);

	for (int i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		for (int j = 0; j < ts[i].nregions; j++)
		{
			WinRegion  *r = &ts[i].regions[j];
			Datum		values[7];
			bool		nulls[7] = {0};

			values[0] = bytes_text(r->name, r->len);
			values[1] = bytes_text(ts[i].name, ts[i].len);
			values[2] = Int64GetDatum(r->plays);
			values[3] = Int64GetDatum(r->skips);
			values[4] = Int64GetDatum(r->likes);
			values[5] = Int64GetDatum(r->listen_ms);
			if (ts[i].packed == NULL)
				nulls[6] = true;
			else
				values[6] = PointerGetDatum(window_value(ts[i].packed, ts[i].packed_len));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	PG_RETURN_VOID();
}

/* ---- streamkpi._window_track_rows(bytea) ---- */

PG_FUNCTION_INFO_V1(streamkpi_window_track_rows);

/*
 * The tracks of a window_state row that were played, all regions together
 * (track_id, plays, listen_ms, users, sketch), for streamkpi.track_windows:
 * users is the count of distinct players while the sketch holds them
 * exactly (sketch NULL), else NULL and the sketch for hll_cardinality().
 */
Datum
streamkpi_window_track_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			n;
	WinTrack   *ts = window_srf_tracks(fcinfo, &n);

	for (int i = 0; i < n; i++)
	{
		Datum		values[5];
		bool		nulls[5] = {0};
		int64		plays = 0;
		int64		listen_ms = 0;
		int64		exact = 0;

		CHECK_FOR_INTERRUPTS();
		for (int j = 0; j < ts[i].nregions; j++)
		{
			plays += ts[i].regions[j].plays;
			listen_ms += ts[i].regions[j].listen_ms;
		}
		if (plays <= 0)
			continue;
		if (ts[i].packed != NULL)
			exact = sketch_hll_value_exact_count(ts[i].packed, ts[i].packed_len);
		values[0] = bytes_text(ts[i].name, ts[i].len);
		values[1] = Int64GetDatum(plays);
		values[2] = Int64GetDatum(listen_ms);
		values[3] = Int64GetDatum(exact);
		nulls[3] = exact < 0;
		nulls[4] = exact >= 0;
		if (exact < 0)
			values[4] = PointerGetDatum(window_value(ts[i].packed, ts[i].packed_len));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}
