/*-------------------------------------------------------------------------
 *
 * sketch_topn_format.c
 *	  The stored forms of streamkpi.topn, and their validation.
 *
 *	  Format version 1 (integers big-endian, no alignment) is the binary
 *	  form of send and recv, and what streamkpi 0.1 first stored:
 *	    uint8  version, uint8 flags (0), uint32 capacity, uint32 nitems,
 *	    int64  floor, int64 total,
 *	    nitems x (int64 count, int64 error, uint32 length, bytes)
 *	  Items are ordered by count descending, then by their bytes ascending,
 *	  and are unique.  Every input path validates every field.
 *
 *	  Format version 2 is what values are stored in now (version 1 values
 *	  are still read).  It is about a fifth of the size, so that a summary
 *	  of 1000 short items is read without decompression, and its items are
 *	  in byte order, so that merges walk two sorted lists instead of
 *	  hashing (integers are unsigned LEB128 varints):
 *	    uint8  version (2), uint8 flags (0), capacity, nitems, floor, total,
 *	    nitems x (prefix, suffix length, suffix bytes, count, error)
 *	  An item is the first `prefix` bytes of the previous item followed
 *	  by the suffix; items ascend strictly in byte order.  Every reader
 *	  checks each item as it reads it (topn_cursor2_next, sketch.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "sketch.h"

void
sketch_topn_bad(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("invalid topn value"),
			 errdetail("%s", detail)));
}

/* ----------------------------------------------------------------
 * Stored format
 * ----------------------------------------------------------------
 */

/* Structural checks: every length fits, so reading cannot overrun. */
void
sketch_topn_view_v1(const uint8 *in, size_t len, TopnView *v)
{
	const uint8 *p;

	if (len < TOPN_HEADER_SIZE)
		sketch_topn_bad("The value is shorter than the 26-byte header.");
	if (in[0] != TOPN_VERSION)
		sketch_topn_bad("Only format version 1 is known.");
	if (in[1] != 0)
		sketch_topn_bad("The reserved flags byte is not zero.");
	if (get_u32(in + 2) < 1 || get_u32(in + 2) > TOPN_MAX_CAPACITY)
		sketch_topn_bad("The capacity is not between 1 and 100000.");
	v->capacity = (int32) get_u32(in + 2);
	if (get_u32(in + 6) > (uint32) v->capacity)
		sketch_topn_bad("The value holds more items than its capacity.");
	v->nitems = (int32) get_u32(in + 6);
	v->version = TOPN_VERSION;
	v->start = in;
	v->floor = get_i64(in + 10);
	v->total = get_i64(in + 18);
	if (v->floor < 0 || v->total < 0 || v->floor > v->total)
		sketch_topn_bad("The floor and total must satisfy 0 <= floor <= total.");
	v->items = in + TOPN_HEADER_SIZE;
	v->end = in + len;

	p = v->items;
	for (int32 i = 0; i < v->nitems; i++)
	{
		uint32		ilen;

		if ((size_t) (v->end - p) < TOPN_ITEM_OVERHEAD)
			sketch_topn_bad("An item header runs past the end of the value.");
		ilen = get_u32(p + 16);
		if ((size_t) (v->end - p) - TOPN_ITEM_OVERHEAD < ilen)
			sketch_topn_bad("An item runs past the end of the value.");
		p += TOPN_ITEM_OVERHEAD + ilen;
	}
	if (p != v->end)
		sketch_topn_bad("The value has bytes after its last item.");
}

/* ----------------------------------------------------------------
 * Format version 2: varints, items in byte order, shared prefixes
 * ----------------------------------------------------------------
 */
#define VARINT_MAX_BYTES	10

static inline size_t
put_varint(uint8 *p, uint64 v)
{
	size_t		n = 0;

	while (v >= 0x80)
	{
		p[n++] = (uint8) (v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8) v;
	return n;
}

pg_noinline uint64
sketch_get_varint_slow(const uint8 **pp, const uint8 *end)
{
	const uint8 *p = *pp;
	uint64		r = 0;

	for (int shift = 0;; shift += 7)
	{
		uint8		b;

		if (p >= end)
			sketch_topn_bad("A number runs past the end of the value.");
		b = *p++;
		/* the tenth byte holds bit 63 only */
		if (shift == 63 && b > 1)
			sketch_topn_bad("A number is larger than 64 bits.");
		r |= (uint64) (b & 0x7f) << shift;
		if ((b & 0x80) == 0)
			break;
	}
	*pp = p;
	return r;
}

/*
 * The header of a version 2 value.  Items are checked while they are read
 * (topn_cursor2_next), which every reader of a version 2 value does.
 */
void
sketch_topn_view_v2(const uint8 *in, size_t len, TopnView *v)
{
	const uint8 *p = in + 2;
	const uint8 *end = in + len;
	uint64		capacity;
	uint64		nitems;

	if (len < 2)
		sketch_topn_bad("The value is shorter than its header.");
	if (in[1] != 0)
		sketch_topn_bad("The reserved flags byte is not zero.");
	capacity = get_varint(&p, end);
	if (capacity < 1 || capacity > TOPN_MAX_CAPACITY)
		sketch_topn_bad("The capacity is not between 1 and 100000.");
	nitems = get_varint(&p, end);
	if (nitems > capacity)
		sketch_topn_bad("The value holds more items than its capacity.");
	v->version = TOPN_VERSION_2;
	v->start = in;
	v->capacity = (int32) capacity;
	v->nitems = (int32) nitems;
	v->floor = get_varint_i64(&p, end);
	v->total = get_varint_i64(&p, end);
	if (v->floor > v->total)
		sketch_topn_bad("The floor and total must satisfy 0 <= floor <= total.");
	v->items = p;
	v->end = end;
}

/* A stored value of either version. */
void
sketch_topn_view(const uint8 *in, size_t len, TopnView *v)
{
	if (len > 0 && in[0] == TOPN_VERSION_2)
		sketch_topn_view_v2(in, len, v);
	else
		sketch_topn_view_v1(in, len, v);
}

void
sketch_topn_cursor2_init(TopnCursor2 *c, const TopnView *v)
{
	Assert(v->version == TOPN_VERSION_2);
	c->p = v->items;
	c->end = v->end;
	c->floor = v->floor;
	c->total = v->total;
	c->left = v->nitems;
	c->first = true;
	c->bufsize = 64;
	c->buf = palloc(c->bufsize);
	c->len = 0;
}

pg_noinline void
sketch_topn_cursor2_grow(TopnCursor2 *c, size_t need)
{
	if (need > MaxAllocSize)
		sketch_topn_bad("An item is too long.");
	c->bufsize = Max(need, Min(c->bufsize * 2, MaxAllocSize));
	c->buf = repalloc(c->buf, c->bufsize);
}

/* Read item i of a version 1 view walked with a cursor. */
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
void
sketch_topn_validate(const uint8 *in, size_t len)
{
	TopnView	v;
	TopnCursor	c;
	ItemRef    *refs;
	int64		prevcount = PG_INT64_MAX;
	const char *prevdata = NULL;
	uint32		prevlen = 0;

	sketch_topn_view_v1(in, len, &v);
	CHECK_FOR_INTERRUPTS();
	refs = (ItemRef *) palloc(Max(v.nitems, 1) * sizeof(ItemRef));
	c.p = v.items;
	for (int32 i = 0; i < v.nitems; i++)
	{
		topn_cursor_next(&c);
		if (c.count < 1 || c.count > v.total)
			sketch_topn_bad("An item count is not between 1 and the total.");
		if (c.error < 0 || c.error > c.count || c.error > v.floor)
			sketch_topn_bad("An item error is not between 0 and both its count and the floor.");
		if (memchr(c.data, '\0', c.len) != NULL ||
			!pg_verify_mbstr(GetDatabaseEncoding(), c.data, (int) c.len, true))
			sketch_topn_bad("An item is not valid text in the database encoding.");
		if (c.count > prevcount ||
			(c.count == prevcount &&
			 bytes_cmp(prevdata, prevlen, c.data, c.len) >= 0))
			sketch_topn_bad("The items are not ordered by count descending, then item ascending.");
		prevcount = c.count;
		prevdata = c.data;
		prevlen = c.len;
		refs[i].data = c.data;
		refs[i].len = c.len;
	}
	qsort(refs, v.nitems, sizeof(ItemRef), itemref_cmp);
	for (int32 i = 1; i < v.nitems; i++)
		if (itemref_cmp(&refs[i - 1], &refs[i]) == 0)
			sketch_topn_bad("An item appears twice.");
	pfree(refs);
}

/* ----------------------------------------------------------------
 * Items of a value as an array, and the writers of both versions
 * ----------------------------------------------------------------
 */
int
sketch_entry_order_cmp(const void *x, const void *y)
{
	const TopnEntry *a = (const TopnEntry *) x;
	const TopnEntry *b = (const TopnEntry *) y;

	if (a->count != b->count)
		return a->count > b->count ? -1 : 1;
	return bytes_cmp(a->data, a->len, b->data, b->len);
}

int
sketch_entry_bytes_cmp(const void *x, const void *y)
{
	const TopnEntry *a = (const TopnEntry *) x;
	const TopnEntry *b = (const TopnEntry *) y;

	return bytes_cmp(a->data, a->len, b->data, b->len);
}

/*
 * Every item of a value, in the value's own order (version 1: count
 * descending; version 2: bytes ascending).  Version 1 entries point into
 * the value; version 2 items are copied into one buffer.
 */
TopnEntry *
sketch_topn_entries(const TopnView *v)
{
	TopnEntry  *e = (TopnEntry *) palloc(Max(v->nitems, 1) * sizeof(TopnEntry));

	if (v->version == TOPN_VERSION)
	{
		TopnCursor	c;

		c.p = v->items;
		for (int32 i = 0; i < v->nitems; i++)
		{
			topn_cursor_next(&c);
			e[i].count = c.count;
			e[i].error = c.error;
			e[i].data = c.data;
			e[i].len = c.len;
		}
	}
	else
	{
		TopnCursor2 c;
		StringInfoData buf;
		int32		n = 0;

		initStringInfo(&buf);
		sketch_topn_cursor2_init(&c, v);
		while (topn_cursor2_next(&c))
		{
			/* offsets now, pointers once the buffer stops moving */
			e[n].count = c.count;
			e[n].error = c.error;
			e[n].data = (const char *) (uintptr_t) buf.len;
			e[n].len = c.len;
			appendBinaryStringInfo(&buf, c.buf, c.len);
			n++;
		}
		for (int32 i = 0; i < n; i++)
			e[i].data = buf.data + (uintptr_t) e[i].data;
		pfree(c.buf);
	}
	return e;
}

/* Every item, count descending, then bytes ascending. */
TopnEntry *
sketch_topn_entries_ordered(const TopnView *v)
{
	TopnEntry  *e = sketch_topn_entries(v);

	if (v->version != TOPN_VERSION)
		qsort(e, v->nitems, sizeof(TopnEntry), sketch_entry_order_cmp);
	return e;
}

static void
topn_check_size(size_t size)
{
	if (size > MaxAllocSize)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("topn value would be larger than 1 GB"),
				 errhint("Use a smaller capacity or shorter items.")));
}

/* A version 1 value; the entries are in count order. */
bytea *
sketch_topn_write_v1(const TopnView *h, const TopnEntry *e)
{
	size_t		size = VARHDRSZ + TOPN_HEADER_SIZE;
	bytea	   *result;
	uint8	   *p;

	for (int32 i = 0; i < h->nitems; i++)
		size += TOPN_ITEM_OVERHEAD + e[i].len;
	topn_check_size(size);
	result = (bytea *) palloc(size);
	SET_VARSIZE(result, size);
	p = (uint8 *) VARDATA(result);
	p[0] = TOPN_VERSION;
	p[1] = 0;
	put_u32(p + 2, (uint32) h->capacity);
	put_u32(p + 6, (uint32) h->nitems);
	put_i64(p + 10, h->floor);
	put_i64(p + 18, h->total);
	p += TOPN_HEADER_SIZE;
	for (int32 i = 0; i < h->nitems; i++)
	{
		put_i64(p, e[i].count);
		put_i64(p + 8, e[i].error);
		put_u32(p + 16, e[i].len);
		memcpy(p + TOPN_ITEM_OVERHEAD, e[i].data, e[i].len);
		p += TOPN_ITEM_OVERHEAD + e[i].len;
	}
	return result;
}

/* A version 2 value; the entries are in byte order. */
bytea *
sketch_topn_write_v2(const TopnView *h, const TopnEntry *e)
{
	size_t		size = VARHDRSZ + 2 + 4 * VARINT_MAX_BYTES;
	bytea	   *result;
	uint8	   *start;
	uint8	   *p;
	const char *prev = NULL;
	uint32		prevlen = 0;

	for (int32 i = 0; i < h->nitems; i++)
		size += 4 * VARINT_MAX_BYTES + e[i].len;
	topn_check_size(size);
	result = (bytea *) palloc(size);
	start = p = (uint8 *) VARDATA(result);
	*p++ = TOPN_VERSION_2;
	*p++ = 0;
	p += put_varint(p, (uint64) h->capacity);
	p += put_varint(p, (uint64) h->nitems);
	p += put_varint(p, (uint64) h->floor);
	p += put_varint(p, (uint64) h->total);
	for (int32 i = 0; i < h->nitems; i++)
	{
		uint32		common = 0;
		uint32		most = Min(prevlen, e[i].len);

		while (common < most && prev[common] == e[i].data[common])
			common++;
		p += put_varint(p, common);
		p += put_varint(p, e[i].len - common);
		memcpy(p, e[i].data + common, e[i].len - common);
		p += e[i].len - common;
		p += put_varint(p, (uint64) e[i].count);
		p += put_varint(p, (uint64) e[i].error);
		prev = e[i].data;
		prevlen = e[i].len;
	}
	SET_VARSIZE(result, VARHDRSZ + (p - start));
	return result;
}

/* A validated version 1 value in the stored form, version 2. */
bytea *
sketch_topn_v1_to_v2(const uint8 *in, size_t len)
{
	TopnView	v;
	TopnEntry  *e;

	sketch_topn_view_v1(in, len, &v);
	e = sketch_topn_entries(&v);
	qsort(e, v.nitems, sizeof(TopnEntry), sketch_entry_bytes_cmp);
	return sketch_topn_write_v2(&v, e);
}
