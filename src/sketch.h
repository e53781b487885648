/*-------------------------------------------------------------------------
 *
 * sketch.h
 *	  Sketch aggregates (HyperLogLog on postgresql-hll's format, the topn
 *	  heavy-hitters type) and event-time window functions.
 *
 *	  Nothing here keeps session state: every parameter that changes a
 *	  sketch's result is an argument of the call.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_SKETCH_H
#define STREAMKPI_SKETCH_H

#include "postgres.h"

#include "common/int.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "port/pg_bswap.h"
#include "utils/date.h"

/* in sketch_hll.c */
extern uint64 sketch_murmur3_64(const void *key, size_t len, uint32 seed);

/*
 * hll states for C callers, on hll_agg's parameters (regwidth 5, automatic
 * explicit threshold, sparse on): a state packs to the bytes hll_agg gives
 * for the same hashes.
 */
typedef struct HllState SketchHll;
extern SketchHll *sketch_hll_create(MemoryContext cxt, int log2m);
extern uint64 sketch_hll_hash_text(const char *data, size_t len);
extern void sketch_hll_add(SketchHll *st, uint64 hash);
extern void sketch_hll_merge(SketchHll *into, const SketchHll *from);
extern bool sketch_hll_merge_changed(SketchHll *into, const SketchHll *from);
extern SketchHll *sketch_hll_copy(MemoryContext cxt, const SketchHll *st);
extern bytea *sketch_hll_pack(const SketchHll *st);
extern SketchHll *sketch_hll_unpack(MemoryContext cxt, const uint8 *data, size_t len);
extern int64 sketch_hll_cardinality(const SketchHll *st);
extern bytea *sketch_hll_merge_into(const uint8 *in, size_t len, const SketchHll *b,
									int64 *count);
extern int64 sketch_hll_value_exact_count(const uint8 *in, size_t len);

/*
 * in window.c: a wall clock of a time zone for many instants, giving what
 * "ts AT TIME ZONE zone" gives without asking the time zone database again
 * while the zone's offset cannot change
 */
typedef struct WindowClock
{
	text	   *zone;
	bool		fixed;			/* a fixed-offset abbreviation */
	struct pg_tz *tz;			/* a zone of the database, or NULL */
	TimestampTz lo;				/* offset holds for [lo, hi) */
	TimestampTz hi;
	int64		offset;			/* local minus UTC, microseconds */
} WindowClock;

extern void window_clock_init(WindowClock *c, const char *zone);
extern Timestamp window_clock_local(WindowClock *c, TimestampTz ts);
extern DateADT window_clock_day(WindowClock *c, TimestampTz ts);

/*
 * in sketch_hll_format.c: postgresql-hll's storage format, version 1
 */
#define HLL_VERSION			1
#define HLL_HEADER_SIZE		3
#define HLL_T_UNDEFINED		0
#define HLL_T_EMPTY			1
#define HLL_T_EXPLICIT		2
#define HLL_T_SPARSE		3
#define HLL_T_FULL			4

/* parameter limits, as postgresql-hll enforces them */
#define HLL_MAX_LOG2M		17
#define HLL_MAX_REGWIDTH	7
#define HLL_MAX_EXPTHRESH	16383

typedef struct HllParams
{
	int32		log2m;
	int32		regwidth;
	int64		expthresh;		/* -1 = automatic */
	int32		sparseon;
} HllParams;

/* A parsed, validated hll value (points into the datum). */
typedef struct HllValue
{
	int			type;
	HllParams	p;
	const uint8 *data;			/* after the header */
	size_t		len;			/* bytes after the header */
	size_t		count;			/* explicit elements or sparse entries */
} HllValue;

extern bytea *sketch_hll_pack_empty(const HllParams *p);
extern bytea *sketch_hll_pack_explicit(const HllParams *p, const int64 *elems,
									   int32 n);
extern bytea *sketch_hll_pack_registers(const HllParams *p, const uint8 *regs);
extern void sketch_hll_bad(const char *detail);
extern void sketch_hll_parse(const uint8 *in, size_t len, HllValue *v);
extern uint64 sketch_hll_explicit_element(const HllValue *v, size_t i);
extern void sketch_hll_value_registers(const HllValue *v, uint8 *regs);
extern double sketch_hll_classic_estimate(const uint8 *regs, int log2m, int regwidth);
extern double sketch_hll_classic_estimate_histogram(const uint32 *hist, int log2m,
													int regwidth);

/* a register and its value, to merge into a stored value */
typedef struct HllRegister
{
	uint32		idx;
	uint8		val;
} HllRegister;

extern bytea *sketch_hll_explicit_merge(const HllValue *v, const int64 *b, int32 nb,
										int32 limit, int64 *count);
extern bytea *sketch_hll_full_merge(const HllValue *v, const uint8 *in, size_t len,
									const HllRegister *d, int32 nd, double *estimate);
extern bytea *sketch_hll_sparse_merge(const HllValue *v, const HllRegister *d, int32 nd,
									  double *estimate);
extern double sketch_hll_estimate_registers(const uint8 *regs, int log2m,
											int regwidth);

/*
 * in sketch_topn_format.c: the stored forms of streamkpi.topn (format
 * versions 1 and 2, described there).  The readers that merges call for
 * every item are inline here.
 */
#define TOPN_VERSION		1
#define TOPN_VERSION_2		2
#define TOPN_HEADER_SIZE	26
#define TOPN_ITEM_OVERHEAD	20
#define TOPN_MAX_CAPACITY	100000

/* A validated stored value, read in place. */
typedef struct TopnView
{
	int			version;
	const uint8 *start;			/* the version byte */
	int32		capacity;
	int32		nitems;
	int64		floor;
	int64		total;
	const uint8 *items;			/* first item */
	const uint8 *end;
} TopnView;

/* An item of a value, for printing, sending and rewriting. */
typedef struct TopnEntry
{
	int64		count;
	int64		error;
	const char *data;
	uint32		len;
} TopnEntry;

/* Reads the items of a version 2 value in order, checking each. */
typedef struct TopnCursor2
{
	const uint8 *p;
	const uint8 *end;
	int64		floor;
	int64		total;
	int32		left;			/* items not read yet */
	bool		first;
	char	   *buf;			/* the current item */
	uint32		len;
	size_t		bufsize;
	int64		count;
	int64		error;
} TopnCursor2;

extern void sketch_topn_bad(const char *detail);
extern void sketch_topn_view_v1(const uint8 *in, size_t len, TopnView *v);
extern void sketch_topn_view_v2(const uint8 *in, size_t len, TopnView *v);
extern void sketch_topn_view(const uint8 *in, size_t len, TopnView *v);
extern void sketch_topn_validate(const uint8 *in, size_t len);
extern void sketch_topn_cursor2_init(TopnCursor2 *c, const TopnView *v);
extern void sketch_topn_cursor2_grow(TopnCursor2 *c, size_t need);
extern uint64 sketch_get_varint_slow(const uint8 **pp, const uint8 *end);
extern int	sketch_entry_order_cmp(const void *x, const void *y);
extern int	sketch_entry_bytes_cmp(const void *x, const void *y);
extern TopnEntry *sketch_topn_entries(const TopnView *v);
extern TopnEntry *sketch_topn_entries_ordered(const TopnView *v);
extern bytea *sketch_topn_write_v1(const TopnView *h, const TopnEntry *e);
extern bytea *sketch_topn_write_v2(const TopnView *h, const TopnEntry *e);
extern bytea *sketch_topn_v1_to_v2(const uint8 *in, size_t len);

/* big-endian integers of format version 1 */
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

/*
 * Byte order of strings, shorter first on a common prefix: topn items, and
 * the names of the KPI windows' tracks and regions (inline: merging a round
 * into its windows compares names a few million times).
 */
static inline int
bytes_cmp(const char *a, uint32 alen, const char *b, uint32 blen)
{
	int			c = memcmp(a, b, Min(alen, blen));

	if (c != 0)
		return c;
	return (alen > blen) - (alen < blen);
}

/* Read a varint, never past end; one-byte numbers, the most, inline. */
static inline uint64
get_varint(const uint8 **pp, const uint8 *end)
{
	if (likely(*pp < end && **pp < 0x80))
		return *(*pp)++;
	return sketch_get_varint_slow(pp, end);
}

static inline int64
get_varint_i64(const uint8 **pp, const uint8 *end)
{
	uint64		v = get_varint(pp, end);

	if (v > (uint64) PG_INT64_MAX)
		sketch_topn_bad("A number is out of range.");
	return (int64) v;
}

/* The next item into c->buf; false after the last, which checks the end. */
static pg_attribute_always_inline bool
topn_cursor2_next(TopnCursor2 *c)
{
	uint64		prefix;
	uint64		suffix;

	if (c->left == 0)
	{
		if (c->p != c->end)
			sketch_topn_bad("The value has bytes after its last item.");
		return false;
	}
	c->left--;
	prefix = get_varint(&c->p, c->end);
	suffix = get_varint(&c->p, c->end);
	if (prefix > c->len)
		sketch_topn_bad("An item shares more bytes with the previous item than it has.");
	if (suffix > (uint64) (c->end - c->p))
		sketch_topn_bad("An item runs past the end of the value.");
	/* strictly ascending: the first new byte is larger, or it extends */
	if (!c->first &&
		(suffix == 0 || (prefix < c->len && c->p[0] <= (uint8) c->buf[prefix])))
		sketch_topn_bad("The items are not in ascending byte order.");
	/* 8 bytes of slack: short suffixes and items move as whole words */
	if (prefix + suffix + 8 > c->bufsize)
		sketch_topn_cursor2_grow(c, prefix + suffix + 8);
	if (suffix <= 8 && c->end - c->p >= 8)
		memcpy(c->buf + prefix, c->p, 8);
	else
		memcpy(c->buf + prefix, c->p, suffix);
	c->p += suffix;
	c->len = (uint32) (prefix + suffix);
	c->first = false;
	c->count = get_varint_i64(&c->p, c->end);
	c->error = get_varint_i64(&c->p, c->end);
	if (c->count < 1 || c->count > c->total)
		sketch_topn_bad("An item count is not between 1 and the total.");
	if (c->error > c->count || c->error > c->floor)
		sketch_topn_bad("An item error is not between 0 and both its count and the floor.");
	return true;
}

/*
 * The aggregate state of streamkpi.topn (sketch_topn_state.c, merged in
 * sketch_topn_merge.c).
 */
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

/* in sketch_topn_state.c */
extern void sketch_topn_check_capacity(int64 capacity);
extern int	sketch_topn_item_order_cmp(const void *x, const void *y);
extern void sketch_topn_table_alloc(TopnState *st, int32 capacity);
extern void sketch_topn_table_rebuild(TopnState *st);
extern TopnState *sketch_topn_state_create(MemoryContext cxt, int32 capacity);
extern int64 sketch_select_kth_largest(int64 *a, int32 n, int32 k);
extern void sketch_topn_state_trim(TopnState *st, int32 keep);
extern void sketch_topn_arena_free(TopnState *st);
extern void sketch_topn_state_to_hashed(TopnState *st);

/* in sketch_topn_merge.c */
extern bytea *sketch_topn_state_pack(TopnState *st);
extern void sketch_topn_state_merge_view(TopnState *st, const TopnView *v);
extern void sketch_topn_state_merge_state(TopnState *a, TopnState *b);
extern TopnState *sketch_topn_state_from_view(MemoryContext cxt,
											  const TopnView *v);

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

/* the aggregate memory context of an aggregate support function */
static inline MemoryContext
topn_agg_context(FunctionCallInfo fcinfo, const char *fname)
{
	MemoryContext aggcxt;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "%s called in non-aggregate context", fname);
	return aggcxt;
}

/* a + b for counts and totals, an ERROR when it overflows */
static inline int64
topn_add_checked(int64 a, int64 b)
{
	int64		r;

	if (unlikely(pg_add_s64_overflow(a, b, &r)))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("topn count is out of range")));
	return r;
}

#endif							/* STREAMKPI_SKETCH_H */
