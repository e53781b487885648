/*-------------------------------------------------------------------------
 *
 * sketch_topn_state.c
 *	  The aggregate state of streamkpi.topn in Space-Saving's form: items
 *	  in a hash table, a min-heap by count for evictions, the update of
 *	  one row and the trim to a capacity (Metwally et al. 2005), and
 *	  topn_agg's transition function, so that the per-row path stays in
 *	  one file; also the
 *	  arena that holds item bytes once a state is in merge form
 *	  (sketch_topn_merge.c), and the way back from it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "common/int.h"
#include "fmgr.h"
#include "port/pg_bitutils.h"

#include "sketch.h"

/* ----------------------------------------------------------------
 * Errors
 * ----------------------------------------------------------------
 */
void
sketch_topn_check_capacity(int64 capacity)
{
	if (capacity < 1 || capacity > TOPN_MAX_CAPACITY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("topn capacity must be between 1 and %d",
						TOPN_MAX_CAPACITY),
				 errdetail("The capacity given was " INT64_FORMAT ".", capacity)));
}

/* ----------------------------------------------------------------
 * Item order: count descending, then bytes ascending
 * ----------------------------------------------------------------
 */
int
sketch_topn_item_order_cmp(const void *x, const void *y)
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

void
sketch_topn_table_alloc(TopnState *st, int32 capacity)
{
	/* room for the slack of a merge at a load factor of at most 1/2 */
	uint32		tsize = pg_nextpower2_32((uint32) capacity * (TOPN_SLACK + 1) * 2 + 2);

	st->table = (uint64 *) MemoryContextAllocZero(st->cxt, tsize * sizeof(uint64));
	st->tmask = tsize - 1;
}

TopnState *
sketch_topn_state_create(MemoryContext cxt, int32 capacity)
{
	TopnState  *st;

	sketch_topn_check_capacity(capacity);
	st = (TopnState *) MemoryContextAllocZero(cxt, sizeof(TopnState));
	st->capacity = capacity;
	st->cxt = cxt;
	sketch_topn_table_alloc(st, capacity);
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

void
sketch_topn_table_rebuild(TopnState *st)
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
		sketch_topn_state_to_hashed(st);
	hash = hash_bytes((const unsigned char *) data, (int) len);
	idx = topn_find(st, data, len, hash);
	st->total = topn_add_checked(st->total, weight);
	if (idx >= 0)
	{
		it = &st->items[idx];
		it->count = topn_add_checked(it->count, weight);
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
	it->count = topn_add_checked(it->count, weight);
	topn_table_insert(st, idx);
	st->heap[0].count = it->count;
	heap_sift_down(st, 0);
}

/* The k-th largest value (k counted from 0) of a[0..n-1]; reorders a. */
int64
sketch_select_kth_largest(int64 *a, int32 n, int32 k)
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
void
sketch_topn_state_trim(TopnState *st, int32 keep)
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
	cut = sketch_select_kth_largest(counts, st->nitems, keep - 1);
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
	sketch_topn_table_rebuild(st);
	st->heap_valid = false;
}

/* ----------------------------------------------------------------
 * Leaving the merge form (sketch_topn_merge.c)
 * ----------------------------------------------------------------
 */
/* Give back the arena of item bytes. */
void
sketch_topn_arena_free(TopnState *st)
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
 * Back to Space-Saving's form, for a row of topn_agg after a merge (a
 * combine or a final call, in window aggregates).
 */
pg_noinline void
sketch_topn_state_to_hashed(TopnState *st)
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
	sketch_topn_arena_free(st);
	st->sorted = false;
	sketch_topn_table_rebuild(st);
	st->heap_valid = false;
}

/* ----------------------------------------------------------------
 * The transition function of topn_agg
 * ----------------------------------------------------------------
 */
PG_FUNCTION_INFO_V1(streamkpi_topn_trans);

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
		st = sketch_topn_state_create(aggcxt, capacity);
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
