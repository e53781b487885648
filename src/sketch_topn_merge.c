/*-------------------------------------------------------------------------
 *
 * sketch_topn_merge.c
 *	  Merging streamkpi.topn summaries (Agarwal et al., "Mergeable
 *	  Summaries", 2012): a state in merge form keeps its items in byte
 *	  order with their bytes in an arena, so that merging a stored value
 *	  walks two sorted lists once; trims find their cut with a histogram.
 *	  Also packing a state into its stored form (format version 2).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "sketch.h"

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
	cut = sketch_select_kth_largest(a, n, keep - 1);
	/* the selection left every count above the cut before position keep - 1 */
	acc = 0;
	for (int32 i = 0; i < keep - 1; i++)
		acc += a[i] > cut;
	*above = acc;
	return cut;
}

/*
 * sketch_topn_state_trim for the merge form: the same items survive, and of
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
bytea *
sketch_topn_state_pack(TopnState *st)
{
	TopnView	h;
	TopnEntry  *e;
	bytea	   *result;

	if (st->sorted)
		topn_sorted_trim(st, st->capacity);
	else
	{
		sketch_topn_state_trim(st, st->capacity);
		qsort(st->items, st->nitems, sizeof(TopnItem), sketch_topn_item_order_cmp);
		sketch_topn_table_rebuild(st);
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
	sketch_topn_table_alloc(st, capacity);
	st->capacity = capacity;
	/* the merge form has no hash table to fill */
	if (!st->sorted)
		sketch_topn_table_rebuild(st);
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
void
sketch_topn_state_merge_view(TopnState *st, const TopnView *v)
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
	total = topn_add_checked(st->total, v->total);
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
	st->floor = topn_add_checked(st->floor, v->floor);
	st->total = total;
	if (st->nitems > st->capacity * TOPN_SLACK)
		topn_sorted_trim(st, st->capacity);
}

/* Merge state b into state a by way of b's stored form. */
void
sketch_topn_state_merge_state(TopnState *a, TopnState *b)
{
	bytea	   *packed = sketch_topn_state_pack(b);
	TopnView	v;

	sketch_topn_view((const uint8 *) VARDATA(packed), VARSIZE(packed) - VARHDRSZ, &v);
	sketch_topn_state_merge_view(a, &v);
	pfree(packed);
}

TopnState *
sketch_topn_state_from_view(MemoryContext cxt, const TopnView *v)
{
	TopnState  *st = sketch_topn_state_create(cxt, v->capacity);

	sketch_topn_state_merge_view(st, v);
	return st;
}
