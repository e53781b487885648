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
 *	  Values are stored in format version 2, items in byte order, so that
 *	  a merge walks two sorted lists once; sketch_topn_format.c has the
 *	  formats.  A union state keeps its items in byte order with their
 *	  bytes in an arena; topn_agg's state is Space-Saving's hash table and
 *	  min-heap.
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

/* merges keep up to this many times the capacity before trimming */
#define TOPN_SLACK			2
/* item bytes of merged states live in blocks of at least this size */
#define TOPN_ARENA_BLOCK	65536
/* trims find their cut with a histogram of this many counts */
#define TOPN_HIST_BUCKETS	2048

typedef struct TopnItem
{
	int64		count;
	int64		error;
	uint32		hash;
	uint32		len;
	uint32		alloc;
	int32		heappos;		/* -1 when the heap is not valid */
	char	   *data;
	/* merge form: the first 16 bytes, big-endian, zero-padded (topn_key) */
	uint64		key0;
	uint64		key1;
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
	MemoryContext cxt;

	/*
	 * Merging: items[] sorted by bytes, no hash table, heap or per-item
	 * allocations (items' hash, alloc and heappos are unused); item bytes
	 * live in arena blocks, compacted after trims.
	 */
	bool		sorted;
	TopnItem   *items2;			/* output of the next merge */
	int64	   *scratch;		/* counts, for trims */
	uint32	   *hist;			/* TOPN_HIST_BUCKETS, for trims */
	char	  **blocks;
	int32		nblocks;
	int32		maxblocks;
	size_t		block_used;		/* in the last block */
	size_t		block_size;
	size_t		arena_bytes;	/* all blocks */
	size_t		first_size;		/* of blocks[0] */
	char	   *spare;			/* the next compaction's target */
	size_t		spare_size;
	int32		max2;			/* entries of items2[] and scratch[] */
} TopnState;

static void topn_state_to_hashed(TopnState *st);

/* ----------------------------------------------------------------
 * Errors
 * ----------------------------------------------------------------
 */
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
static int
item_order_cmp(const void *x, const void *y)
{
	const TopnItem *a = (const TopnItem *) x;
	const TopnItem *b = (const TopnItem *) y;

	if (a->count != b->count)
		return a->count > b->count ? -1 : 1;
	return bytes_cmp(a->data, a->len, b->data, b->len);
}

/*
 * The first 16 bytes of an item as two big-endian words, zero past its
 * length, so that merges order most items by two integer comparisons.
 * p must be readable for 16 bytes, whatever len is.
 */
static pg_attribute_always_inline void
topn_key(const char *p, uint32 len, uint64 *k0, uint64 *k1)
{
	uint64		x;
	uint64		y;

	memcpy(&x, p, 8);
	memcpy(&y, p + 8, 8);
	x = pg_hton64(x);
	y = pg_hton64(y);
	if (len < 16)
	{
		if (len > 8)
			y &= ~UINT64CONST(0) << (8 * (16 - len));
		else
		{
			y = 0;
			if (len == 0)
				x = 0;
			else if (len < 8)
				x &= ~UINT64CONST(0) << (8 * (8 - len));
		}
	}
	*k0 = x;
	*k1 = y;
}

/*
 * Byte order from the keys: equal keys mean equal first 16 bytes (zeros
 * past the shorter length), so the lengths decide unless both are longer.
 */
static pg_attribute_always_inline int
topn_key_cmp(const TopnItem *a, uint64 k0, uint64 k1, const char *data, uint32 len)
{
	if (a->key0 != k0)
		return a->key0 < k0 ? -1 : 1;
	if (a->key1 != k1)
		return a->key1 < k1 ? -1 : 1;
	if (a->len <= 16 || len <= 16)
		return (a->len > len) - (a->len < len);
	return bytes_cmp(a->data + 16, a->len - 16, data + 16, len - 16);
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
	uint32		hash;
	int32		idx;
	TopnItem   *it;

	if (unlikely(st->sorted))
		topn_state_to_hashed(st);
	hash = hash_bytes((const unsigned char *) data, (int) len);
	idx = topn_find(st, data, len, hash);
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
 * raises the floor.  Among items tied at the cut, the smallest bytes stay,
 * so that results are canonical.
 */
static void
topn_state_trim(TopnState *st, int32 keep)
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
 * State in merge form: items in byte order, their bytes in an arena
 * ----------------------------------------------------------------
 */
static int
item_data_cmp(const void *x, const void *y)
{
	const TopnItem *a = (const TopnItem *) x;
	const TopnItem *b = (const TopnItem *) y;

	return bytes_cmp(a->data, a->len, b->data, b->len);
}

static pg_noinline void
topn_arena_new_block(TopnState *st, uint32 len)
{
	{
		size_t		size = Max(TOPN_ARENA_BLOCK, len);

		if (st->nblocks == st->maxblocks)
		{
			st->maxblocks = Max(8, st->maxblocks * 2);
			st->blocks = st->blocks == NULL ?
				(char **) MemoryContextAlloc(st->cxt, st->maxblocks * sizeof(char *)) :
				(char **) repalloc(st->blocks, st->maxblocks * sizeof(char *));
		}
		if (st->nblocks == 0)
			st->first_size = size;
		st->blocks[st->nblocks++] = MemoryContextAlloc(st->cxt, size);
		st->block_size = size;
		st->block_used = 0;
		st->arena_bytes += size;
	}
}

/* Room for len bytes, rounded up to whole 8-byte words. */
static inline char *
topn_arena_alloc(TopnState *st, uint32 len)
{
	char	   *p;

	len = TYPEALIGN(8, len);
	if (st->nblocks == 0 || st->block_size - st->block_used < len)
		topn_arena_new_block(st, len);
	p = st->blocks[st->nblocks - 1] + st->block_used;
	st->block_used += len;
	return p;
}

static void
topn_arena_free(TopnState *st)
{
	for (int32 i = 0; i < st->nblocks; i++)
		pfree(st->blocks[i]);
	if (st->spare != NULL)
		pfree(st->spare);
	st->spare = NULL;
	st->nblocks = 0;
	st->block_size = 0;
	st->block_used = 0;
	st->arena_bytes = 0;
}

/*
 * After a trim: copy the live bytes into one block, in the items' order,
 * so that the bytes of dropped items are given back.  Two blocks take
 * turns, so that compactions do not allocate.
 */
static void
topn_arena_compact(TopnState *st, size_t live)
{
	size_t		need = Max(live * 2, TOPN_ARENA_BLOCK);
	char	   *target;
	size_t		tsize;

	if (st->spare != NULL && st->spare_size < need)
	{
		pfree(st->spare);
		st->spare = NULL;
	}
	if (st->spare == NULL)
	{
		st->spare = MemoryContextAlloc(st->cxt, need);
		st->spare_size = need;
	}
	if (st->nblocks == 0)
		return;
	target = st->spare;
	tsize = st->spare_size;
	st->block_used = 0;
	for (int32 i = 0; i < st->nitems; i++)
	{
		uint32		len = st->items[i].len;

		memcpy(target + st->block_used, st->items[i].data, len);
		st->items[i].data = target + st->block_used;
		st->block_used += TYPEALIGN(8, len);
	}
	/* the first old block is the next target; the others go */
	st->spare = st->blocks[0];
	st->spare_size = st->first_size;
	for (int32 i = 1; i < st->nblocks; i++)
		pfree(st->blocks[i]);
	st->blocks[0] = target;
	st->nblocks = 1;
	st->block_size = tsize;
	st->first_size = tsize;
	st->arena_bytes = tsize;
}

/* Room for a merge: the state's items plus a whole other summary. */
static void
topn_sorted_arrays(TopnState *st)
{
	int32		need = st->capacity * (TOPN_SLACK + 1) + 1;

	if (st->maxitems < need)
	{
		st->items = (TopnItem *) repalloc(st->items, need * sizeof(TopnItem));
		st->maxitems = need;
	}
	if (st->items2 == NULL || st->max2 < need)
	{
		if (st->items2 != NULL)
		{
			pfree(st->items2);
			pfree(st->scratch);
		}
		st->items2 = (TopnItem *) MemoryContextAlloc(st->cxt, need * sizeof(TopnItem));
		st->scratch = (int64 *) MemoryContextAlloc(st->cxt, need * sizeof(int64));
		if (st->hist == NULL)
			st->hist = (uint32 *)
				MemoryContextAlloc(st->cxt, TOPN_HIST_BUCKETS * sizeof(uint32));
		st->max2 = need;
	}
}

/* Switch a state to merge form (once: a union stays in it). */
static void
topn_state_to_sorted(TopnState *st)
{
	topn_sorted_arrays(st);
	if (st->sorted)
		return;
	qsort(st->items, st->nitems, sizeof(TopnItem), item_data_cmp);
	for (int32 i = 0; i < st->nitems; i++)
	{
		TopnItem   *it = &st->items[i];
		char	   *d = topn_arena_alloc(st, it->len);

		/* hashed items' bytes have room for 16 (topn_set_data) */
		topn_key(it->data, it->len, &it->key0, &it->key1);
		memcpy(d, it->data, it->len);
		pfree(it->data);
		it->data = d;
		it->alloc = it->len;
	}
	st->sorted = true;
	st->heap_valid = false;
}

/*
 * Back to Space-Saving's form, for a row of topn_agg after a merge (a
 * combine or a final call, in window aggregates).
 */
static pg_noinline void
topn_state_to_hashed(TopnState *st)
{
	for (int32 i = 0; i < st->nitems; i++)
	{
		TopnItem   *it = &st->items[i];
		uint32		alloc = Max(it->len, 16);
		char	   *d = MemoryContextAlloc(st->cxt, alloc);

		memcpy(d, it->data, it->len);
		it->data = d;
		it->alloc = alloc;
		it->hash = hash_bytes((const unsigned char *) d, (int) it->len);
		it->heappos = -1;
	}
	topn_arena_free(st);
	st->sorted = false;
	topn_table_rebuild(st);
	st->heap_valid = false;
}

/*
 * The keep-th largest of the counts of st->items, and how many counts lie
 * above it.  The counts of a merged state crowd just above the smallest,
 * so a histogram of the lowest 2048 values finds the cut in two passes;
 * quickselect when the cut lies higher.
 */
static int64
topn_find_cut(TopnState *st, int32 keep, int32 *above)
{
	const TopnItem *items = st->items;
	int32		n = st->nitems;
	uint32	   *h = st->hist;
	int64		lo = items[0].count;
	int64	   *a;
	int64		cut;
	int32		acc;

	Assert(n > keep && keep >= 1);
	for (int32 i = 1; i < n; i++)
		lo = Min(lo, items[i].count);
	memset(h, 0, TOPN_HIST_BUCKETS * sizeof(uint32));
	for (int32 i = 0; i < n; i++)
	{
		uint64		d = (uint64) (items[i].count - lo);

		h[d < TOPN_HIST_BUCKETS - 1 ? d : TOPN_HIST_BUCKETS - 1]++;
	}

	/*
	 * From the bottom, where the counts crowd: the cut is the bucket where
	 * more than n - keep counts lie at or below it.  In the last bucket,
	 * which holds all the high counts, the cut needs a selection.
	 */
	acc = 0;
	for (int32 b = 0; b < TOPN_HIST_BUCKETS - 1; b++)
	{
		acc += (int32) h[b];
		if (acc > n - keep)
		{
			*above = n - acc;
			return lo + b;
		}
	}
	a = st->scratch;
	for (int32 i = 0; i < n; i++)
		a[i] = items[i].count;
	cut = select_kth_largest(a, n, keep - 1);
	/* the selection left every count above the cut before position keep - 1 */
	acc = 0;
	for (int32 i = 0; i < keep - 1; i++)
		acc += a[i] > cut;
	*above = acc;
	return cut;
}

/*
 * topn_state_trim for the merge form: the same items survive, and of
 * those tied at the cut the smallest bytes, here the first ones.
 */
static void
topn_sorted_trim(TopnState *st, int32 keep)
{
	int64		cut;
	int64		dropped_max = 0;
	int32		above = 0;
	int32		tied_kept;
	int32		tied_seen = 0;
	int32		out = 0;
	size_t		live = 0;

	if (st->nitems <= keep)
		return;
	cut = topn_find_cut(st, keep, &above);
	tied_kept = keep - above;
	/* without branches: which items stay is a coin toss at the cut */
	for (int32 i = 0; i < st->nitems; i++)
	{
		const TopnItem *it = &st->items[i];
		int64		c = it->count;
		int32		stays = (c > cut) | ((c == cut) & (tied_seen < tied_kept));

		tied_seen += c == cut;
		st->items[out] = *it;	/* out <= i: the same item or a free one */
		out += stays;
		live += TYPEALIGN(8, it->len) & -(size_t) stays;
		dropped_max = Max(dropped_max, c & (stays - (int64) 1));
	}
	Assert(out == keep);
	st->floor = Max(st->floor, dropped_max);
	st->nitems = out;
	/* compact only once dropped bytes dominate: merges compare keys, not bytes */
	if (st->arena_bytes > 4 * Max(live, (size_t) TOPN_ARENA_BLOCK))
		topn_arena_compact(st, live);
}

/*
 * Serialize a state (trimmed to its capacity) as a version 2 value.  A
 * state built by topn_agg keeps its own order, count descending, as it
 * always has, so that rows added after a final call see the same state.
 */
static bytea *
topn_state_pack(TopnState *st)
{
	TopnView	h;
	TopnEntry  *e;
	bytea	   *result;

	if (st->sorted)
		topn_sorted_trim(st, st->capacity);
	else
	{
		topn_state_trim(st, st->capacity);
		qsort(st->items, st->nitems, sizeof(TopnItem), item_order_cmp);
		topn_table_rebuild(st);
		st->heap_valid = false;
	}

	h.capacity = st->capacity;
	h.nitems = st->nitems;
	h.floor = st->floor;
	h.total = st->total;
	e = (TopnEntry *) palloc(Max(st->nitems, 1) * sizeof(TopnEntry));
	for (int32 i = 0; i < st->nitems; i++)
	{
		e[i].count = st->items[i].count;
		e[i].error = st->items[i].error;
		e[i].data = st->items[i].data;
		e[i].len = st->items[i].len;
	}
	if (!st->sorted)
		qsort(e, st->nitems, sizeof(TopnEntry), sketch_entry_bytes_cmp);
	result = sketch_topn_write_v2(&h, e);
	pfree(e);
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
	/* the merge form has no hash table to fill */
	if (!st->sorted)
		topn_table_rebuild(st);
	if (st->heap != NULL)
		pfree(st->heap);
	st->heap = NULL;
	st->heap_valid = false;
}

/*
 * A state item, with counts added.  No overflow checks: every count is at
 * most its side's total, and the merge checked the sum of the totals.
 */
static pg_attribute_always_inline void
topn_item_copy(TopnItem *to, const TopnItem *from, int64 count, int64 error)
{
	*to = *from;
	to->count += count;
	to->error += error;
}

/* An item of the other side only, with this side's floor added. */
static pg_attribute_always_inline void
topn_item_from_source(TopnState *st, TopnItem *it, const TopnCursor2 *src,
					  uint64 k0, uint64 k1, int64 floor)
{
	/* both buffers have room for whole words (topn_arena_alloc, cursor) */
	it->data = topn_arena_alloc(st, src->len);
	for (uint32 k = 0; k < src->len; k += 8)
		memcpy(it->data + k, src->buf + k, 8);
	it->len = src->len;
	it->key0 = k0;
	it->key1 = k1;
	it->count = src->count + floor;
	it->error = src->error + floor;
}

/*
 * Merge a stored value into a state.  An item missing on one side gets
 * that side's floor added to its count and error; counts stay upper
 * bounds and count - error stays a lower bound.  Both sides are in byte
 * order, so one walk over both finds the common items and writes the
 * merged list, in byte order again, without hashing.
 */
static void
topn_state_merge_view(TopnState *st, const TopnView *v)
{
	TopnCursor2 src;
	bytea	   *converted = NULL;
	TopnView	v2;
	TopnItem   *in;
	TopnItem   *out;
	int32		n;
	int32		i = 0;
	int32		o = 0;
	int64		sfloor = st->floor;
	int64		vfloor;
	int64		total;
	uint64		k0 = 0;
	uint64		k1 = 0;
	bool		more;

	CHECK_FOR_INTERRUPTS();
	if (v->capacity > st->capacity)
		topn_state_grow(st, v->capacity);
	topn_state_to_sorted(st);
	in = st->items;
	out = st->items2;
	n = st->nitems;

	/* a version 1 value (stored by 0.1) is first put in byte order */
	if (v->version == TOPN_VERSION)
	{
		converted = sketch_topn_v1_to_v2(v->start, v->end - v->start);
		sketch_topn_view_v2((const uint8 *) VARDATA(converted),
							VARSIZE(converted) - VARHDRSZ, &v2);
		v = &v2;
	}
	vfloor = v->floor;
	/* bounds every count and error below, so the loops add unchecked */
	total = add_checked(st->total, v->total);
	sketch_topn_cursor2_init(&src, v);
	more = topn_cursor2_next(&src);
	if (more)
		topn_key(src.buf, src.len, &k0, &k1);
	/* n + v->nitems fit: n <= capacity * slack, v->nitems <= capacity */
	Assert(n + v->nitems <= st->max2);
	while (i < n && more)
	{
		int			c = topn_key_cmp(&in[i], k0, k1, src.buf, src.len);

		if (c < 0)
		{
			topn_item_copy(&out[o], &in[i], vfloor, vfloor);
			i++;
		}
		else
		{
			if (c > 0)
				topn_item_from_source(st, &out[o], &src, k0, k1, sfloor);
			else
			{
				topn_item_copy(&out[o], &in[i], src.count, src.error);
				i++;
			}
			more = topn_cursor2_next(&src);
			/* the cursor buffer is at least 64 bytes (cursor2_init) */
			if (more)
				topn_key(src.buf, src.len, &k0, &k1);
		}
		o++;
	}
	for (; i < n; i++, o++)
		topn_item_copy(&out[o], &in[i], vfloor, vfloor);
	for (; more; more = topn_cursor2_next(&src), o++)
	{
		topn_key(src.buf, src.len, &k0, &k1);
		topn_item_from_source(st, &out[o], &src, k0, k1, sfloor);
	}
	pfree(src.buf);
	if (converted != NULL)
		pfree(converted);

	st->items = out;
	st->items2 = in;
	{
		int32		m = st->maxitems;

		st->maxitems = st->max2;
		st->max2 = m;
	}
	st->nitems = o;
	st->floor = add_checked(st->floor, v->floor);
	st->total = total;
	if (st->nitems > st->capacity * TOPN_SLACK)
		topn_sorted_trim(st, st->capacity);
}

/* Merge state b into state a by way of b's stored form. */
static void
topn_state_merge_state(TopnState *a, TopnState *b)
{
	bytea	   *packed = topn_state_pack(b);
	TopnView	v;

	sketch_topn_view((const uint8 *) VARDATA(packed), VARSIZE(packed) - VARHDRSZ, &v);
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
	sketch_topn_view((const uint8 *) VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b), v);
}

/*
 * The JSON text form, fully validated by way of the version 1 form, then
 * stored as version 2.
 */
static bytea *
topn_from_text(const char *str)
{
	bytea	   *raw = topn_from_json(str);
	TopnView	v;
	TopnEntry  *e;
	bytea	   *result;

	/* sort the items into canonical order, then check every rule */
	sketch_topn_view_v1((const uint8 *) VARDATA(raw), VARSIZE(raw) - VARHDRSZ, &v);
	e = sketch_topn_entries(&v);
	qsort(e, v.nitems, sizeof(TopnEntry), sketch_entry_bytes_cmp);
	for (int32 i = 1; i < v.nitems; i++)
		if (sketch_entry_bytes_cmp(&e[i - 1], &e[i]) == 0)
			topn_syntax("An item appears twice.");
	qsort(e, v.nitems, sizeof(TopnEntry), sketch_entry_order_cmp);
	result = sketch_topn_write_v1(&v, e);
	sketch_topn_validate((const uint8 *) VARDATA(result), VARSIZE(result) - VARHDRSZ);
	return sketch_topn_v1_to_v2((const uint8 *) VARDATA(result),
								VARSIZE(result) - VARHDRSZ);
}

/*
 * topn_in(cstring).  Whatever is wrong with the text (a rule of the binary
 * format, a number out of range, a character JSON cannot hold) is invalid
 * text representation, as for every input function; what was wrong
 * becomes the detail.  Errors of other classes pass through unchanged.
 */
Datum
streamkpi_topn_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);
	MemoryContext cxt = CurrentMemoryContext;
	bytea	   *volatile result = NULL;

	PG_TRY();
	{
		result = topn_from_text(str);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_INVALID_TEXT_REPRESENTATION ||
			ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_DATA_EXCEPTION)
			PG_RE_THROW();
		FlushErrorState();
		/* a rule of the format says what it is in its detail */
		if (edata->sqlerrcode == ERRCODE_INVALID_BINARY_REPRESENTATION)
			topn_syntax(edata->detail);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type topn"),
				 errdetail("%s%s%s", edata->message,
						   edata->detail ? ": " : "",
						   edata->detail ? edata->detail : "")));
	}
	PG_END_TRY();
	PG_RETURN_BYTEA_P(result);
}

Datum
streamkpi_topn_out(PG_FUNCTION_ARGS)
{
	bytea	   *b = PG_GETARG_BYTEA_PP(0);
	TopnView	v;
	TopnEntry  *e;
	StringInfoData buf;

	topn_view_datum(b, &v);
	e = sketch_topn_entries_ordered(&v);
	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "{\"capacity\": %d, \"floor\": " INT64_FORMAT ", \"total\": " INT64_FORMAT ", \"items\": [",
					 v.capacity, v.floor, v.total);
	for (int32 i = 0; i < v.nitems; i++)
	{
		char	   *s = pnstrdup(e[i].data, e[i].len);

		appendStringInfoString(&buf, i == 0 ? "[" : ", [");
		escape_json(&buf, s);
		appendStringInfo(&buf, ", " INT64_FORMAT ", " INT64_FORMAT "]",
						 e[i].count, e[i].error);
		pfree(s);
	}
	appendStringInfoString(&buf, "]}");
	PG_RETURN_CSTRING(buf.data);
}

/* topn_recv(internal): format version 1, every field checked */
Datum
streamkpi_topn_recv(PG_FUNCTION_ARGS)
{
	StringInfo	msg = (StringInfo) PG_GETARG_POINTER(0);
	int			len = msg->len - msg->cursor;
	const uint8 *in = (const uint8 *) pq_getmsgbytes(msg, len);

	sketch_topn_validate(in, len);
	PG_RETURN_BYTEA_P(sketch_topn_v1_to_v2(in, len));
}

Datum
streamkpi_topn_send(PG_FUNCTION_ARGS)
{
	bytea	   *b = PG_GETARG_BYTEA_PP(0);
	TopnView	v;
	bytea	   *v1;
	StringInfoData buf;

	/* the binary form stays version 1 */
	topn_view_datum(b, &v);
	v1 = v.version == TOPN_VERSION ? b : sketch_topn_write_v1(&v, sketch_topn_entries_ordered(&v));
	pq_begintypsend(&buf);
	pq_sendbytes(&buf, VARDATA_ANY(v1), VARSIZE_ANY_EXHDR(v1));
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
	TopnEntry  *e;
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
	e = sketch_topn_entries_ordered(&v);
	threshold = v.floor;
	if (n < v.nitems)
		threshold = Max(threshold, e[n].count);

	InitMaterializedSRF(fcinfo, 0);
	for (int32 i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = PointerGetDatum(cstring_to_text_with_len(e[i].data, e[i].len));
		values[1] = Int64GetDatum(e[i].count);
		values[2] = Int64GetDatum(e[i].error);
		values[3] = BoolGetDatum(e[i].count - e[i].error >= threshold);
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
