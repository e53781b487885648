/*-------------------------------------------------------------------------
 *
 * sketch_topn.c
 *	  streamkpi.topn: a mergeable heavy-hitters summary (Space-Saving,
 *	  Metwally et al. 2005, merged as in Agarwal et al., "Mergeable
 *	  Summaries", 2012).
 *
 *	  A summary of capacity k keeps at most k items, each with a count and
 *	  an error, and a floor:
 *
 *	    count - error <= true count <= count	for every kept item
 *	    true count <= floor						for every other item
 *
 *	  While at most k distinct items were seen, floor and every error are 0
 *	  and the counts are exact.  Merging adds the floor of the side that
 *	  lacks an item to that item's count and error, then keeps the k
 *	  largest counts; the largest count dropped raises the floor.  So the
 *	  union of per-day summaries keeps the same guarantees as one summary
 *	  over all the days.
 *
 *	  Stored format, version 1 (integers big-endian, no alignment):
 *	    uint8  version, uint8 flags (0), uint32 capacity, uint32 nitems,
 *	    int64  floor, int64 total,
 *	    nitems x (int64 count, int64 error, uint32 length, bytes)
 *	  Items are ordered by count descending, then by their bytes ascending,
 *	  and are unique.  Every input path validates every field.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "common/int.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "port/pg_bitutils.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "sketch.h"

#define TOPN_VERSION		1
#define TOPN_HEADER_SIZE	26
#define TOPN_ITEM_OVERHEAD	20
#define TOPN_MAX_CAPACITY	100000
/* merges keep up to this many times the capacity before trimming */
#define TOPN_SLACK			2

typedef struct TopnItem
{
	int64		count;
	int64		error;
	uint32		hash;
	uint32		len;
	uint32		alloc;
	int32		heappos;		/* -1 when the heap is not valid */
	uint32		mark;			/* merge epoch that last matched it */
	char	   *data;
} TopnItem;

/* A heap entry carries its count so that sifting stays in one array. */
typedef struct TopnHeapEntry
{
	int64		count;
	int32		idx;
} TopnHeapEntry;

/* Aggregate state; everything lives in cxt (the aggregate context). */
typedef struct TopnState
{
	int32		capacity;
	int32		nitems;
	int32		maxitems;		/* allocated entries of items[] */
	int64		floor;
	int64		total;
	TopnItem   *items;
	uint64	   *table;			/* open addressing, see SLOT_MAKE */
	uint32		tmask;
	TopnHeapEntry *heap;		/* min-heap by count, for evictions */
	bool		heap_valid;
	uint32		epoch;			/* number of the current merge */
	MemoryContext cxt;
} TopnState;

/* A validated stored value, read in place. */
typedef struct TopnView
{
	int32		capacity;
	int32		nitems;
	int64		floor;
	int64		total;
	const uint8 *items;			/* first item */
	const uint8 *end;
} TopnView;

/* ----------------------------------------------------------------
 * Byte order helpers
 * ----------------------------------------------------------------
 */
static inline void
put_u32(uint8 *p, uint32 v)
{
	for (int i = 3; i >= 0; i--)
	{
		p[i] = (uint8) v;
		v >>= 8;
	}
}

static inline void
put_i64(uint8 *p, int64 v)
{
	uint64		u = (uint64) v;

	for (int i = 7; i >= 0; i--)
	{
		p[i] = (uint8) u;
		u >>= 8;
	}
}

static inline uint32
get_u32(const uint8 *p)
{
	return ((uint32) p[0] << 24) | ((uint32) p[1] << 16) |
		((uint32) p[2] << 8) | (uint32) p[3];
}

static inline int64
get_i64(const uint8 *p)
{
	uint64		u = 0;

	for (int i = 0; i < 8; i++)
		u = (u << 8) | p[i];
	return (int64) u;
}

/* ----------------------------------------------------------------
 * Errors
 * ----------------------------------------------------------------
 */
static void
topn_bad(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("invalid topn value"),
			 errdetail("%s", detail)));
}

static void
topn_check_capacity(int64 capacity)
{
	if (capacity < 1 || capacity > TOPN_MAX_CAPACITY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("topn capacity must be between 1 and %d",
						TOPN_MAX_CAPACITY),
				 errdetail("The capacity given was " INT64_FORMAT ".", capacity)));
}

static int64
add_checked(int64 a, int64 b)
{
	int64		r;

	if (pg_add_s64_overflow(a, b, &r))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("topn count is out of range")));
	return r;
}

/* ----------------------------------------------------------------
 * Item order: count descending, then bytes ascending
 * ----------------------------------------------------------------
 */
static inline int
bytes_cmp(const char *a, uint32 alen, const char *b, uint32 blen)
{
	int			c = memcmp(a, b, Min(alen, blen));

	if (c != 0)
		return c;
	return (alen > blen) - (alen < blen);
}

static int
item_order_cmp(const void *x, const void *y)
{
	const TopnItem *a = (const TopnItem *) x;
	const TopnItem *b = (const TopnItem *) y;

	if (a->count != b->count)
		return a->count > b->count ? -1 : 1;
	return bytes_cmp(a->data, a->len, b->data, b->len);
}

/* ----------------------------------------------------------------
 * State: hash table of items
 *
 * Each slot holds the item's hash in the high half and its index + 1 in
 * the low half (0 = free), so most probes never touch the items.
 * ----------------------------------------------------------------
 */
#define SLOT_EMPTY			UINT64CONST(0)
#define SLOT_MAKE(hash, idx)	(((uint64) (hash) << 32) | (uint32) ((idx) + 1))
#define SLOT_IDX(slot)		((int32) ((uint32) (slot)) - 1)
#define SLOT_HASH(slot)		((uint32) ((slot) >> 32))

static void
topn_table_alloc(TopnState *st, int32 capacity)
{
	/* room for the slack of a merge at a load factor of at most 1/2 */
	uint32		tsize = pg_nextpower2_32((uint32) capacity * (TOPN_SLACK + 1) * 2 + 2);

	st->table = (uint64 *) MemoryContextAllocZero(st->cxt, tsize * sizeof(uint64));
	st->tmask = tsize - 1;
}

static TopnState *
topn_state_create(MemoryContext cxt, int32 capacity)
{
	TopnState  *st;

	topn_check_capacity(capacity);
	st = (TopnState *) MemoryContextAllocZero(cxt, sizeof(TopnState));
	st->capacity = capacity;
	st->cxt = cxt;
	topn_table_alloc(st, capacity);
	st->maxitems = Min(capacity, 64);
	st->items = (TopnItem *) MemoryContextAlloc(cxt,
												st->maxitems * sizeof(TopnItem));
	return st;
}

static int32
topn_find(const TopnState *st, const char *data, uint32 len, uint32 hash)
{
	uint32		i = hash & st->tmask;

	for (;;)
	{
		uint64		slot = st->table[i];

		if (slot == SLOT_EMPTY)
			return -1;
		if (SLOT_HASH(slot) == hash)
		{
			int32		idx = SLOT_IDX(slot);

			if (st->items[idx].len == len &&
				memcmp(st->items[idx].data, data, len) == 0)
				return idx;
		}
		i = (i + 1) & st->tmask;
	}
}

static void
topn_table_insert(TopnState *st, int32 idx)
{
	uint32		hash = st->items[idx].hash;
	uint32		i = hash & st->tmask;

	while (st->table[i] != SLOT_EMPTY)
		i = (i + 1) & st->tmask;
	st->table[i] = SLOT_MAKE(hash, idx);
}

/* Remove item idx from the table, shifting later entries back. */
static void
topn_table_delete(TopnState *st, int32 idx)
{
	uint64		target = SLOT_MAKE(st->items[idx].hash, idx);
	uint32		i = st->items[idx].hash & st->tmask;
	uint32		j;

	while (st->table[i] != target)
		i = (i + 1) & st->tmask;
	j = i;
	for (;;)
	{
		uint32		home;

		j = (j + 1) & st->tmask;
		if (st->table[j] == SLOT_EMPTY)
			break;
		home = SLOT_HASH(st->table[j]) & st->tmask;
		/* move the entry back unless its home lies cyclically in (i, j] */
		if ((i <= j) ? (home <= i || home > j) : (home <= i && home > j))
		{
			st->table[i] = st->table[j];
			i = j;
		}
	}
	st->table[i] = SLOT_EMPTY;
}

static void
topn_table_rebuild(TopnState *st)
{
	memset(st->table, 0, (st->tmask + 1) * sizeof(uint64));
	for (int32 i = 0; i < st->nitems; i++)
		topn_table_insert(st, i);
}

static void
topn_set_data(TopnState *st, TopnItem *it, const char *data, uint32 len)
{
	if (it->data == NULL || it->alloc < len)
	{
		uint32		alloc = Max(len, 16);

		if (it->data != NULL)
			pfree(it->data);
		it->data = MemoryContextAlloc(st->cxt, alloc);
		it->alloc = alloc;
	}
	memcpy(it->data, data, len);
	it->len = len;
}

/* Append a new item; the caller checked that it is not present. */
static int32
topn_append(TopnState *st, const char *data, uint32 len, uint32 hash,
			int64 count, int64 error)
{
	TopnItem   *it;
	int32		idx;

	if (st->nitems == st->maxitems)
	{
		int32		newmax = Min(st->maxitems * 2,
								 st->capacity * (TOPN_SLACK + 1) + 1);

		st->items = (TopnItem *) repalloc(st->items, newmax * sizeof(TopnItem));
		st->maxitems = newmax;
	}
	idx = st->nitems++;
	it = &st->items[idx];
	memset(it, 0, sizeof(TopnItem));
	topn_set_data(st, it, data, len);
	it->hash = hash;
	it->count = count;
	it->error = error;
	it->heappos = -1;
	topn_table_insert(st, idx);
	st->heap_valid = false;
	return idx;
}

/* ----------------------------------------------------------------
 * State: min-heap by count, for Space-Saving's evictions
 * ----------------------------------------------------------------
 */
/*
 * Move the entry at pos down to its place.  The heap is 4-ary and carries
 * the counts, so the four children of a node share one cache line.
 */
static void
heap_sift_down(TopnState *st, int32 pos)
{
	TopnHeapEntry *h = st->heap;
	int32		n = st->nitems;
	TopnHeapEntry e = h[pos];

	for (;;)
	{
		int32		first = 4 * pos + 1;
		int32		last = Min(first + 4, n);
		int32		c;

		if (first >= n)
			break;
		c = first;
		for (int32 j = first + 1; j < last; j++)
			if (h[j].count < h[c].count)
				c = j;
		if (h[c].count >= e.count)
			break;
		h[pos] = h[c];
		st->items[h[pos].idx].heappos = pos;
		pos = c;
	}
	h[pos] = e;
	st->items[e.idx].heappos = pos;
}

static void
heap_build(TopnState *st)
{
	if (st->heap == NULL)
		st->heap = (TopnHeapEntry *)
			MemoryContextAlloc(st->cxt, st->capacity * sizeof(TopnHeapEntry));
	Assert(st->nitems <= st->capacity);
	for (int32 i = 0; i < st->nitems; i++)
	{
		st->heap[i].count = st->items[i].count;
		st->heap[i].idx = i;
		st->items[i].heappos = i;
	}
	for (int32 i = st->nitems / 4; i >= 0 && st->nitems > 0; i--)
		heap_sift_down(st, i);
	st->heap_valid = true;
}

/* ----------------------------------------------------------------
 * State: Space-Saving update and trimming
 * ----------------------------------------------------------------
 */
static void
topn_state_add(TopnState *st, const char *data, uint32 len, int64 weight)
{
	uint32		hash = hash_bytes((const unsigned char *) data, (int) len);
	int32		idx = topn_find(st, data, len, hash);
	TopnItem   *it;

	st->total = add_checked(st->total, weight);
	if (idx >= 0)
	{
		it = &st->items[idx];
		it->count = add_checked(it->count, weight);
		if (st->heap_valid)
		{
			st->heap[it->heappos].count = it->count;
			heap_sift_down(st, it->heappos);
		}
		return;
	}
	if (st->nitems < st->capacity)
	{
		idx = topn_append(st, data, len, hash, weight, 0);
		return;
	}

	/* full: the new item takes the place of the smallest count */
	if (!st->heap_valid)
		heap_build(st);
	idx = st->heap[0].idx;
	it = &st->items[idx];
	st->floor = Max(st->floor, it->count);
	topn_table_delete(st, idx);
	topn_set_data(st, it, data, len);
	it->hash = hash;
	it->error = it->count;
	it->count = add_checked(it->count, weight);
	topn_table_insert(st, idx);
	st->heap[0].count = it->count;
	heap_sift_down(st, 0);
}

/* The k-th largest value (k counted from 0) of a[0..n-1]; reorders a. */
static int64
select_kth_largest(int64 *a, int32 n, int32 k)
{
	int32		lo = 0;
	int32		hi = n - 1;

	while (lo < hi)
	{
		int64		pivot = a[lo + (hi - lo) / 2];
		int32		i = lo;
		int32		j = hi;

		/* Hoare partition, descending */
		while (i <= j)
		{
			while (a[i] > pivot)
				i++;
			while (a[j] < pivot)
				j--;
			if (i <= j)
			{
				int64		t = a[i];

				a[i] = a[j];
				a[j] = t;
				i++;
				j--;
			}
		}
		if (k <= j)
			hi = j;
		else if (k >= i)
			lo = i;
		else
			return a[k];
	}
	return a[k];
}

static int
item_bytes_cmp(const void *x, const void *y)
{
	const TopnItem *a = *(TopnItem *const *) x;
	const TopnItem *b = *(TopnItem *const *) y;

	return bytes_cmp(a->data, a->len, b->data, b->len);
}

/*
 * Keep the `keep` items with the largest counts; the largest count dropped
 * raises the floor.  Among items tied at the cut, the final trim keeps the
 * smallest bytes so that results are canonical; the trims between merges
 * keep the first ones, which bounds just as well and avoids sorting.
 */
static void
topn_state_trim(TopnState *st, int32 keep, bool sort_ties)
{
	int64	   *counts;
	int64		cut;
	int64		dropped_max = 0;
	int32		above = 0;
	int32		ntied = 0;
	int32		tied_kept;
	TopnItem  **tied;
	int32		out = 0;

	if (st->nitems <= keep)
		return;

	counts = (int64 *) palloc(st->nitems * sizeof(int64));
	for (int32 i = 0; i < st->nitems; i++)
		counts[i] = st->items[i].count;
	cut = select_kth_largest(counts, st->nitems, keep - 1);
	pfree(counts);

	/* items above the cut stay; of those at the cut, the smallest bytes */
	tied = (TopnItem **) palloc(st->nitems * sizeof(TopnItem *));
	for (int32 i = 0; i < st->nitems; i++)
	{
		if (st->items[i].count > cut)
			above++;
		else if (st->items[i].count == cut)
			tied[ntied++] = &st->items[i];
	}
	tied_kept = keep - above;
	if (ntied > tied_kept)
	{
		if (sort_ties)
			qsort(tied, ntied, sizeof(TopnItem *), item_bytes_cmp);
		dropped_max = cut;
	}
	for (int32 i = tied_kept; i < ntied; i++)
		tied[i]->count = -1;	/* marks a dropped tie */

	for (int32 i = 0; i < st->nitems; i++)
	{
		TopnItem   *it = &st->items[i];

		if (it->count >= cut)
			st->items[out++] = *it;
		else
		{
			dropped_max = Max(dropped_max, it->count);
			pfree(it->data);
		}
	}
	pfree(tied);
	Assert(out == keep);

	st->floor = Max(st->floor, dropped_max);
	st->nitems = out;
	topn_table_rebuild(st);
	st->heap_valid = false;
}

/* ----------------------------------------------------------------
 * Stored format
 * ----------------------------------------------------------------
 */

/* Structural checks: every length fits, so reading cannot overrun. */
static void
topn_view(const uint8 *in, size_t len, TopnView *v)
{
	const uint8 *p;

	if (len < TOPN_HEADER_SIZE)
		topn_bad("The value is shorter than the 26-byte header.");
	if (in[0] != TOPN_VERSION)
		topn_bad("Only format version 1 is known.");
	if (in[1] != 0)
		topn_bad("The reserved flags byte is not zero.");
	if (get_u32(in + 2) < 1 || get_u32(in + 2) > TOPN_MAX_CAPACITY)
		topn_bad("The capacity is not between 1 and 100000.");
	v->capacity = (int32) get_u32(in + 2);
	if (get_u32(in + 6) > (uint32) v->capacity)
		topn_bad("The value holds more items than its capacity.");
	v->nitems = (int32) get_u32(in + 6);
	v->floor = get_i64(in + 10);
	v->total = get_i64(in + 18);
	if (v->floor < 0 || v->total < 0 || v->floor > v->total)
		topn_bad("The floor and total must satisfy 0 <= floor <= total.");
	v->items = in + TOPN_HEADER_SIZE;
	v->end = in + len;

	p = v->items;
	for (int32 i = 0; i < v->nitems; i++)
	{
		uint32		ilen;

		if ((size_t) (v->end - p) < TOPN_ITEM_OVERHEAD)
			topn_bad("An item header runs past the end of the value.");
		ilen = get_u32(p + 16);
		if ((size_t) (v->end - p) - TOPN_ITEM_OVERHEAD < ilen)
			topn_bad("An item runs past the end of the value.");
		p += TOPN_ITEM_OVERHEAD + ilen;
	}
	if (p != v->end)
		topn_bad("The value has bytes after its last item.");
}

/* Read item i of a view walked with a cursor. */
typedef struct TopnCursor
{
	const uint8 *p;
	int64		count;
	int64		error;
	uint32		len;
	const char *data;
} TopnCursor;

static inline void
topn_cursor_next(TopnCursor *c)
{
	c->count = get_i64(c->p);
	c->error = get_i64(c->p + 8);
	c->len = get_u32(c->p + 16);
	c->data = (const char *) c->p + TOPN_ITEM_OVERHEAD;
	c->p += TOPN_ITEM_OVERHEAD + c->len;
}

typedef struct ItemRef
{
	const char *data;
	uint32		len;
} ItemRef;

static int
itemref_cmp(const void *x, const void *y)
{
	const ItemRef *a = (const ItemRef *) x;
	const ItemRef *b = (const ItemRef *) y;

	return bytes_cmp(a->data, a->len, b->data, b->len);
}

/* Every semantic rule of the format; for input from outside. */
static void
topn_validate(const uint8 *in, size_t len)
{
	TopnView	v;
	TopnCursor	c;
	ItemRef    *refs;
	int64		prevcount = PG_INT64_MAX;
	const char *prevdata = NULL;
	uint32		prevlen = 0;

	topn_view(in, len, &v);
	CHECK_FOR_INTERRUPTS();
	refs = (ItemRef *) palloc(Max(v.nitems, 1) * sizeof(ItemRef));
	c.p = v.items;
	for (int32 i = 0; i < v.nitems; i++)
	{
		topn_cursor_next(&c);
		if (c.count < 1 || c.count > v.total)
			topn_bad("An item count is not between 1 and the total.");
		if (c.error < 0 || c.error > c.count || c.error > v.floor)
			topn_bad("An item error is not between 0 and both its count and the floor.");
		if (memchr(c.data, '\0', c.len) != NULL ||
			!pg_verify_mbstr(GetDatabaseEncoding(), c.data, (int) c.len, true))
			topn_bad("An item is not valid text in the database encoding.");
		if (c.count > prevcount ||
			(c.count == prevcount &&
			 bytes_cmp(prevdata, prevlen, c.data, c.len) >= 0))
			topn_bad("The items are not ordered by count descending, then item ascending.");
		prevcount = c.count;
		prevdata = c.data;
		prevlen = c.len;
		refs[i].data = c.data;
		refs[i].len = c.len;
	}
	qsort(refs, v.nitems, sizeof(ItemRef), itemref_cmp);
	for (int32 i = 1; i < v.nitems; i++)
		if (itemref_cmp(&refs[i - 1], &refs[i]) == 0)
			topn_bad("An item appears twice.");
	pfree(refs);
}

/* Serialize a state (trimmed to its capacity) in canonical order. */
static bytea *
topn_state_pack(TopnState *st)
{
	size_t		size = VARHDRSZ + TOPN_HEADER_SIZE;
	bytea	   *result;
	uint8	   *p;

	topn_state_trim(st, st->capacity, true);
	qsort(st->items, st->nitems, sizeof(TopnItem), item_order_cmp);
	topn_table_rebuild(st);
	st->heap_valid = false;

	for (int32 i = 0; i < st->nitems; i++)
		size += TOPN_ITEM_OVERHEAD + st->items[i].len;
	if (size > MaxAllocSize)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("topn value would be larger than 1 GB"),
				 errhint("Use a smaller capacity or shorter items.")));
	result = (bytea *) palloc(size);
	SET_VARSIZE(result, size);
	p = (uint8 *) VARDATA(result);
	p[0] = TOPN_VERSION;
	p[1] = 0;
	put_u32(p + 2, (uint32) st->capacity);
	put_u32(p + 6, (uint32) st->nitems);
	put_i64(p + 10, st->floor);
	put_i64(p + 18, st->total);
	p += TOPN_HEADER_SIZE;
	for (int32 i = 0; i < st->nitems; i++)
	{
		const TopnItem *it = &st->items[i];

		put_i64(p, it->count);
		put_i64(p + 8, it->error);
		put_u32(p + 16, it->len);
		memcpy(p + TOPN_ITEM_OVERHEAD, it->data, it->len);
		p += TOPN_ITEM_OVERHEAD + it->len;
	}
	return result;
}

/* ----------------------------------------------------------------
 * Merging
 * ----------------------------------------------------------------
 */

/* A merge keeps the larger capacity of its inputs. */
static void
topn_state_grow(TopnState *st, int32 capacity)
{
	pfree(st->table);
	topn_table_alloc(st, capacity);
	st->capacity = capacity;
	topn_table_rebuild(st);
	if (st->heap != NULL)
		pfree(st->heap);
	st->heap = NULL;
	st->heap_valid = false;
}

/*
 * Merge a stored value into a state.  An item missing on one side gets
 * that side's floor added to its count and error; counts stay upper
 * bounds and count - error stays a lower bound.
 */
static void
topn_state_merge_view(TopnState *st, const TopnView *v)
{
	TopnCursor	c;
	int32		before = st->nitems;
	uint32		epoch = ++st->epoch;

	CHECK_FOR_INTERRUPTS();
	if (v->capacity > st->capacity)
		topn_state_grow(st, v->capacity);

	c.p = v->items;
	for (int32 i = 0; i < v->nitems; i++)
	{
		uint32		hash;
		int32		idx;

		topn_cursor_next(&c);
		hash = hash_bytes((const unsigned char *) c.data, (int) c.len);
		idx = topn_find(st, c.data, c.len, hash);
		if (idx >= 0)
		{
			if (idx >= before || st->items[idx].mark == epoch)
				topn_bad("An item appears twice.");
			st->items[idx].mark = epoch;
			st->items[idx].count = add_checked(st->items[idx].count, c.count);
			st->items[idx].error = add_checked(st->items[idx].error, c.error);
		}
		else
			topn_append(st, c.data, c.len, hash,
						add_checked(c.count, st->floor),
						add_checked(c.error, st->floor));
	}
	for (int32 i = 0; i < before; i++)
	{
		if (st->items[i].mark == epoch)
			continue;
		st->items[i].count = add_checked(st->items[i].count, v->floor);
		st->items[i].error = add_checked(st->items[i].error, v->floor);
	}
	st->floor = add_checked(st->floor, v->floor);
	st->total = add_checked(st->total, v->total);
	st->heap_valid = false;
	if (st->nitems > st->capacity * TOPN_SLACK)
		topn_state_trim(st, st->capacity, false);
}

/* Merge state b into state a by way of b's stored form. */
static void
topn_state_merge_state(TopnState *a, TopnState *b)
{
	bytea	   *packed = topn_state_pack(b);
	TopnView	v;

	topn_view((const uint8 *) VARDATA(packed), VARSIZE(packed) - VARHDRSZ, &v);
	topn_state_merge_view(a, &v);
	pfree(packed);
}

static TopnState *
topn_state_from_view(MemoryContext cxt, const TopnView *v)
{
	TopnState  *st = topn_state_create(cxt, v->capacity);

	topn_state_merge_view(st, v);
	return st;
}

/* ----------------------------------------------------------------
 * Text form: {"capacity":k,"floor":f,"total":t,"items":[["a",10,0],...]}
 * ----------------------------------------------------------------
 */
static int64
json_int8(JsonbValue *jv, const char *what)
{
	if (jv == NULL || jv->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type topn"),
				 errdetail("\"%s\" must be an integer.", what)));
	return DatumGetInt64(DirectFunctionCall1(numeric_int8,
											 NumericGetDatum(jv->val.numeric)));
}

static void
topn_syntax(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid input syntax for type topn"),
			 errdetail("%s", detail)));
}

/* Build the stored bytes from the text form, unvalidated. */
static bytea *
topn_from_json(const char *str)
{
	Jsonb	   *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
														CStringGetDatum(str)));
	JsonbValue	kv;
	JsonbValue *items;
	int64		capacity;
	int64		floor;
	int64		total;
	uint32		n;
	StringInfoData buf;
	uint8		hdr[TOPN_HEADER_SIZE];
	bytea	   *result;

	if (!JB_ROOT_IS_OBJECT(jb))
		topn_syntax("A topn is a JSON object with capacity, floor, total and items.");
	capacity = json_int8(getKeyJsonValueFromContainer(&jb->root, "capacity", 8, &kv), "capacity");
	floor = json_int8(getKeyJsonValueFromContainer(&jb->root, "floor", 5, &kv), "floor");
	total = json_int8(getKeyJsonValueFromContainer(&jb->root, "total", 5, &kv), "total");
	items = getKeyJsonValueFromContainer(&jb->root, "items", 5, &kv);
	if (items == NULL || items->type != jbvBinary ||
		!JsonContainerIsArray(items->val.binary.data))
		topn_syntax("\"items\" must be an array.");
	topn_check_capacity(capacity);
	n = JsonContainerSize(items->val.binary.data);
	if (n > (uint32) capacity)
		topn_syntax("There are more items than the capacity.");

	initStringInfo(&buf);
	hdr[0] = TOPN_VERSION;
	hdr[1] = 0;
	put_u32(hdr + 2, (uint32) capacity);
	put_u32(hdr + 6, n);
	put_i64(hdr + 10, floor);
	put_i64(hdr + 18, total);
	appendBinaryStringInfo(&buf, (char *) hdr, TOPN_HEADER_SIZE);
	for (uint32 i = 0; i < n; i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(items->val.binary.data, i);
		JsonbValue *name;
		uint8		ih[TOPN_ITEM_OVERHEAD];

		if (e == NULL || e->type != jbvBinary ||
			!JsonContainerIsArray(e->val.binary.data) ||
			JsonContainerSize(e->val.binary.data) != 3)
			topn_syntax("Each item must be an array [item, count, error].");
		name = getIthJsonbValueFromContainer(e->val.binary.data, 0);
		if (name == NULL || name->type != jbvString)
			topn_syntax("An item must be a string.");
		put_i64(ih, json_int8(getIthJsonbValueFromContainer(e->val.binary.data, 1), "count"));
		put_i64(ih + 8, json_int8(getIthJsonbValueFromContainer(e->val.binary.data, 2), "error"));
		put_u32(ih + 16, (uint32) name->val.string.len);
		appendBinaryStringInfo(&buf, (char *) ih, TOPN_ITEM_OVERHEAD);
		appendBinaryStringInfo(&buf, name->val.string.val, name->val.string.len);
	}

	result = (bytea *) palloc(VARHDRSZ + buf.len);
	SET_VARSIZE(result, VARHDRSZ + buf.len);
	memcpy(VARDATA(result), buf.data, buf.len);
	pfree(buf.data);
	return result;
}

/* ----------------------------------------------------------------
 * SQL-callable functions
 * ----------------------------------------------------------------
 */
PG_FUNCTION_INFO_V1(streamkpi_topn_in);
PG_FUNCTION_INFO_V1(streamkpi_topn_out);
PG_FUNCTION_INFO_V1(streamkpi_topn_recv);
PG_FUNCTION_INFO_V1(streamkpi_topn_send);
PG_FUNCTION_INFO_V1(streamkpi_topn_trans);
PG_FUNCTION_INFO_V1(streamkpi_topn_union_trans);
PG_FUNCTION_INFO_V1(streamkpi_topn_combine);
PG_FUNCTION_INFO_V1(streamkpi_topn_serialize);
PG_FUNCTION_INFO_V1(streamkpi_topn_deserialize);
PG_FUNCTION_INFO_V1(streamkpi_topn_final);
PG_FUNCTION_INFO_V1(streamkpi_topn_union);
PG_FUNCTION_INFO_V1(streamkpi_topn_items);
PG_FUNCTION_INFO_V1(streamkpi_topn_info);

static void
topn_view_datum(bytea *b, TopnView *v)
{
	topn_view((const uint8 *) VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b), v);
}

/* topn_in(cstring): the JSON text form, fully validated */
Datum
streamkpi_topn_in(PG_FUNCTION_ARGS)
{
	bytea	   *result = topn_from_json(PG_GETARG_CSTRING(0));
	TopnView	v;
	MemoryContext cxt;
	TopnState  *st;

	/* sort the items into canonical order, then check every rule */
	topn_view((const uint8 *) VARDATA(result), VARSIZE(result) - VARHDRSZ, &v);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "topn input",
								ALLOCSET_DEFAULT_SIZES);
	st = topn_state_create(cxt, v.capacity);
	{
		TopnCursor	c;

		c.p = v.items;
		for (int32 i = 0; i < v.nitems; i++)
		{
			uint32		hash;

			topn_cursor_next(&c);
			hash = hash_bytes((const unsigned char *) c.data, (int) c.len);
			if (topn_find(st, c.data, c.len, hash) >= 0)
				topn_syntax("An item appears twice.");
			topn_append(st, c.data, c.len, hash, c.count, c.error);
		}
	}
	st->floor = v.floor;
	st->total = v.total;
	result = topn_state_pack(st);
	MemoryContextDelete(cxt);
	topn_validate((const uint8 *) VARDATA(result), VARSIZE(result) - VARHDRSZ);
	PG_RETURN_BYTEA_P(result);
}

Datum
streamkpi_topn_out(PG_FUNCTION_ARGS)
{
	bytea	   *b = PG_GETARG_BYTEA_PP(0);
	TopnView	v;
	TopnCursor	c;
	StringInfoData buf;

	topn_view_datum(b, &v);
	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "{\"capacity\": %d, \"floor\": " INT64_FORMAT ", \"total\": " INT64_FORMAT ", \"items\": [",
					 v.capacity, v.floor, v.total);
	c.p = v.items;
	for (int32 i = 0; i < v.nitems; i++)
	{
		char	   *s;

		topn_cursor_next(&c);
		s = pnstrdup(c.data, c.len);
		appendStringInfoString(&buf, i == 0 ? "[" : ", [");
		escape_json(&buf, s);
		appendStringInfo(&buf, ", " INT64_FORMAT ", " INT64_FORMAT "]",
						 c.count, c.error);
		pfree(s);
	}
	appendStringInfoString(&buf, "]}");
	PG_RETURN_CSTRING(buf.data);
}

/* topn_recv(internal): the stored format, every field checked */
Datum
streamkpi_topn_recv(PG_FUNCTION_ARGS)
{
	StringInfo	msg = (StringInfo) PG_GETARG_POINTER(0);
	int			len = msg->len - msg->cursor;
	bytea	   *result = (bytea *) palloc(VARHDRSZ + len);

	SET_VARSIZE(result, VARHDRSZ + len);
	pq_copymsgbytes(msg, VARDATA(result), len);
	topn_validate((const uint8 *) VARDATA(result), len);
	PG_RETURN_BYTEA_P(result);
}

Datum
streamkpi_topn_send(PG_FUNCTION_ARGS)
{
	bytea	   *b = PG_GETARG_BYTEA_PP(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendbytes(&buf, VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

static MemoryContext
topn_agg_context(FunctionCallInfo fcinfo, const char *fname)
{
	MemoryContext aggcxt;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "%s called in non-aggregate context", fname);
	return aggcxt;
}

/*
 * topn_agg(item text, capacity int [, weight bigint]) transition.  NULL
 * items and zero weights are skipped; the capacity must not change.
 */
Datum
streamkpi_topn_trans(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt = topn_agg_context(fcinfo, "streamkpi_topn_trans");
	TopnState  *st;
	int32		capacity;
	int64		weight = 1;

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("topn capacity must not be NULL")));
	capacity = PG_GETARG_INT32(2);
	if (PG_ARGISNULL(0))
		st = topn_state_create(aggcxt, capacity);
	else
	{
		st = (TopnState *) PG_GETARG_POINTER(0);
		if (st->capacity != capacity)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("topn capacity must be the same for every row of an aggregate")));
	}

	if (PG_NARGS() > 3)
	{
		if (PG_ARGISNULL(3))
			PG_RETURN_POINTER(st);
		weight = PG_GETARG_INT64(3);
		if (weight < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("topn weight must not be negative"),
					 errdetail("The weight given was " INT64_FORMAT ".", weight)));
	}
	if (!PG_ARGISNULL(1) && weight > 0)
	{
		text	   *t = PG_GETARG_TEXT_PP(1);

		topn_state_add(st, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), weight);
	}
	PG_RETURN_POINTER(st);
}

/* topn_union_agg(topn) transition; the result has the largest capacity seen */
Datum
streamkpi_topn_union_trans(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt = topn_agg_context(fcinfo, "streamkpi_topn_union_trans");
	TopnState  *st = PG_ARGISNULL(0) ? NULL : (TopnState *) PG_GETARG_POINTER(0);
	TopnView	v;

	if (PG_ARGISNULL(1))
	{
		if (st == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(st);
	}
	topn_view_datum(PG_GETARG_BYTEA_PP(1), &v);
	if (st == NULL)
		st = topn_state_from_view(aggcxt, &v);
	else
		topn_state_merge_view(st, &v);
	PG_RETURN_POINTER(st);
}

Datum
streamkpi_topn_combine(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt = topn_agg_context(fcinfo, "streamkpi_topn_combine");
	TopnState  *a = PG_ARGISNULL(0) ? NULL : (TopnState *) PG_GETARG_POINTER(0);
	TopnState  *b = PG_ARGISNULL(1) ? NULL : (TopnState *) PG_GETARG_POINTER(1);

	if (b == NULL)
	{
		if (a == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(a);
	}
	/* copy b into the aggregate context by way of its stored form */
	if (a == NULL)
		a = topn_state_create(aggcxt, b->capacity);
	topn_state_merge_state(a, b);
	PG_RETURN_POINTER(a);
}

Datum
streamkpi_topn_serialize(PG_FUNCTION_ARGS)
{
	PG_RETURN_BYTEA_P(topn_state_pack((TopnState *) PG_GETARG_POINTER(0)));
}

Datum
streamkpi_topn_deserialize(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt = topn_agg_context(fcinfo, "streamkpi_topn_deserialize");
	TopnView	v;

	topn_view_datum(PG_GETARG_BYTEA_PP(0), &v);
	PG_RETURN_POINTER(topn_state_from_view(aggcxt, &v));
}

Datum
streamkpi_topn_final(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(topn_state_pack((TopnState *) PG_GETARG_POINTER(0)));
}

/* topn_union(a, b) -> topn, with the larger of the two capacities */
Datum
streamkpi_topn_union(PG_FUNCTION_ARGS)
{
	TopnView	va;
	TopnView	vb;
	MemoryContext cxt;
	TopnState  *st;
	bytea	   *result;
	MemoryContext old;

	topn_view_datum(PG_GETARG_BYTEA_PP(0), &va);
	topn_view_datum(PG_GETARG_BYTEA_PP(1), &vb);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "topn union",
								ALLOCSET_DEFAULT_SIZES);
	st = topn_state_from_view(cxt, va.capacity >= vb.capacity ? &va : &vb);
	topn_state_merge_view(st, va.capacity >= vb.capacity ? &vb : &va);
	old = MemoryContextSwitchTo(cxt);
	result = topn_state_pack(st);
	MemoryContextSwitchTo(old);
	result = (bytea *) PG_DETOAST_DATUM_COPY(PointerGetDatum(result));
	MemoryContextDelete(cxt);
	PG_RETURN_BYTEA_P(result);
}

/*
 * topn_items(topn [, n]) -> setof (item, count, max_error, guaranteed).
 * guaranteed: the item's lower bound reaches the upper bound of every
 * item not listed, so it surely belongs in the top n.
 */
Datum
streamkpi_topn_items(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bytea	   *b = PG_GETARG_BYTEA_PP(0);
	TopnView	v;
	TopnCursor	c;
	int32		n;
	int64		threshold;

	topn_view_datum(b, &v);
	n = v.nitems;
	if (PG_NARGS() > 1)
	{
		if (PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("number of items must not be NULL")));
		if (PG_GETARG_INT32(1) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("number of items must not be negative")));
		n = Min(n, PG_GETARG_INT32(1));
	}

	/* the largest count any unlisted item can have */
	threshold = v.floor;
	c.p = v.items;
	for (int32 i = 0; i <= n && i < v.nitems; i++)
	{
		topn_cursor_next(&c);
		if (i == n)
			threshold = Max(threshold, c.count);
	}

	InitMaterializedSRF(fcinfo, 0);
	c.p = v.items;
	for (int32 i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		topn_cursor_next(&c);
		values[0] = PointerGetDatum(cstring_to_text_with_len(c.data, c.len));
		values[1] = Int64GetDatum(c.count);
		values[2] = Int64GetDatum(c.error);
		values[3] = BoolGetDatum(c.count - c.error >= threshold);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* topn_info(topn) -> (capacity, items, floor, total) */
Datum
streamkpi_topn_info(PG_FUNCTION_ARGS)
{
	TopnView	v;
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	topn_view_datum(PG_GETARG_BYTEA_PP(0), &v);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int32GetDatum(v.capacity);
	values[1] = Int32GetDatum(v.nitems);
	values[2] = Int64GetDatum(v.floor);
	values[3] = Int64GetDatum(v.total);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
