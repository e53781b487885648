/*-------------------------------------------------------------------------
 *
 * sketch_hll.c
 *	  HyperLogLog aggregates that produce postgresql-hll's own storage
 *	  format, and a less biased estimator over that format.
 *
 *	  streamkpi.hll_agg(x [, log2m [, regwidth [, expthresh [, sparseon]]]])
 *	  is byte-identical to hll_add_agg(hll_hash_text(x), ...) (or
 *	  hll_hash_bigint) with the same parameters, so its result works with
 *	  every function postgresql-hll offers.  postgresql-hll ships no headers,
 *	  so the hash (MurmurHash3 x64 128, seed 0, first half) is implemented
 *	  here and the storage format (version 1) in sketch_hll_format.c, from
 *	  their specifications.
 *
 *	  Two session settings of postgresql-hll are deliberately not followed:
 *	  hll_set_defaults() (the one-argument form always uses log2m 11,
 *	  regwidth 5, expthresh -1, sparseon 1) and hll_set_max_sparse() (the
 *	  sparse form is chosen whenever it is smaller, hll's default).  A
 *	  sketch's result depends only on the call.
 *
 *	  streamkpi.hll_estimate(hll) reads any hll value and applies Ertl's
 *	  improved raw estimator (sketch_hll_format.c), which has no bias bump
 *	  where the classic estimator switches from linear counting.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "port/pg_bitutils.h"
#include "port/pg_bswap.h"
#include "utils/builtins.h"
#include "utils/float.h"

#include "sketch.h"

/* the parameters of hll_add_agg's one-argument form */
#define HLL_DEFAULT_LOG2M		11
#define HLL_DEFAULT_REGWIDTH	5
#define HLL_DEFAULT_EXPTHRESH	(-1)
#define HLL_DEFAULT_SPARSEON	1

/*
 * First size of the explicit-mode hash set.  Small: a hash aggregate keeps
 * one state per group, and most groups (a track in a minute) see a user or
 * two.
 */
#define HLL_SET_INITIAL_SIZE	8

/* approx_count_distinct: about 0.8% standard error */
#define ACD_LOG2M			14

typedef enum HllMode
{
	HLL_MODE_EMPTY,				/* only NULLs seen so far */
	HLL_MODE_EXPLICIT,			/* exact set of hashes */
	HLL_MODE_REGISTERS			/* HyperLogLog registers */
} HllMode;

/* Aggregate state; lives in the aggregate memory context. */
typedef struct HllState
{
	HllParams	p;
	int32		explimit;		/* hashes kept exactly before registers */
	HllMode		mode;
	/* explicit mode: open-addressing set, 0 marks a free slot */
	int32		nexplicit;
	uint32		setmask;
	bool		has_zero;		/* hash value 0 cannot live in the set */
	uint64	   *set;
	/* register mode */
	uint8	   *regs;
	MemoryContext cxt;
} HllState;

/* ----------------------------------------------------------------
 * MurmurHash3 x64 128 (Austin Appleby's public-domain algorithm),
 * written for this file.  Blocks are read as little-endian words, the way
 * postgresql-hll reads them on the platforms it supports.
 * ----------------------------------------------------------------
 */
static inline uint64
rotl64(uint64 x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static inline uint64
fmix64(uint64 k)
{
	k ^= k >> 33;
	k *= UINT64CONST(0xff51afd7ed558ccd);
	k ^= k >> 33;
	k *= UINT64CONST(0xc4ceb9fe1a85ec53);
	k ^= k >> 33;
	return k;
}

static inline uint64
load_le64(const uint8 *p)
{
	uint64		v;

	memcpy(&v, p, sizeof(v));
#ifdef WORDS_BIGENDIAN
	v = pg_bswap64(v);
#endif
	return v;
}

/*
 * The n (0..8) bytes at p as a little-endian integer, without reading
 * past them: two overlapping loads instead of a byte-by-byte switch.
 */
static inline uint64
load_le_partial(const uint8 *p, size_t n)
{
	uint32		lo;
	uint32		hi;

	if (n >= 4)
	{
		memcpy(&lo, p, sizeof(lo));
		memcpy(&hi, p + n - 4, sizeof(hi));
#ifdef WORDS_BIGENDIAN
		lo = pg_bswap32(lo);
		hi = pg_bswap32(hi);
#endif
		/* the overlapping bytes agree, so OR joins the halves */
		return (uint64) lo | ((uint64) hi << (8 * (n - 4)));
	}
	if (n == 0)
		return 0;
	return (uint64) p[0] | ((uint64) p[n / 2] << (8 * (n / 2))) |
		((uint64) p[n - 1] << (8 * (n - 1)));
}

/*
 * The first 64-bit half of MurmurHash3_x64_128(key, len, seed).  Inline,
 * so that the transition functions hash without a call.
 */
static pg_attribute_always_inline uint64
murmur3_64_inline(const void *key, size_t len, uint32 seed)
{
	const uint8 *data = (const uint8 *) key;
	const uint64 c1 = UINT64CONST(0x87c37b91114253d5);
	const uint64 c2 = UINT64CONST(0x4cf5ad432745937f);
	size_t		nblocks = len / 16;
	size_t		rest = len & 15;
	uint64		h1 = seed;
	uint64		h2 = seed;
	uint64		k1;
	uint64		k2;
	const uint8 *tail;

	for (size_t i = 0; i < nblocks; i++)
	{
		k1 = load_le64(data + i * 16);
		k2 = load_le64(data + i * 16 + 8);

		k1 *= c1;
		k1 = rotl64(k1, 31);
		k1 *= c2;
		h1 ^= k1;
		h1 = rotl64(h1, 27);
		h1 += h2;
		h1 = h1 * 5 + 0x52dce729;

		k2 *= c2;
		k2 = rotl64(k2, 33);
		k2 *= c1;
		h2 ^= k2;
		h2 = rotl64(h2, 31);
		h2 += h1;
		h2 = h2 * 5 + 0x38495ab5;
	}

	/* the tail: bytes 8..14 feed k2, bytes 0..7 feed k1 */
	tail = data + nblocks * 16;
	if (rest > 8)
	{
		k2 = load_le_partial(tail + 8, rest - 8);
		k2 *= c2;
		k2 = rotl64(k2, 33);
		k2 *= c1;
		h2 ^= k2;
	}
	if (rest > 0)
	{
		k1 = rest >= 8 ? load_le64(tail) : load_le_partial(tail, rest);
		k1 *= c1;
		k1 = rotl64(k1, 31);
		k1 *= c2;
		h1 ^= k1;
	}

	h1 ^= (uint64) len;
	h2 ^= (uint64) len;
	h1 += h2;
	h2 += h1;
	h1 = fmix64(h1);
	h2 = fmix64(h2);
	h1 += h2;
	return h1;
}

/* Returns the first 64-bit half of MurmurHash3_x64_128(key, len, seed). */
uint64
sketch_murmur3_64(const void *key, size_t len, uint32 seed)
{
	return murmur3_64_inline(key, len, seed);
}

/*
 * hll_hash_bigint hashes the 8 bytes of the value as they sit in memory;
 * for one 8-byte key the algorithm reduces to this.
 */
static inline uint64
murmur3_int64(int64 value)
{
	const uint64 c1 = UINT64CONST(0x87c37b91114253d5);
	const uint64 c2 = UINT64CONST(0x4cf5ad432745937f);
	uint64		k1;
	uint64		h1;
	uint64		h2;

	memcpy(&k1, &value, sizeof(k1));
#ifdef WORDS_BIGENDIAN
	k1 = pg_bswap64(k1);
#endif
	k1 *= c1;
	k1 = rotl64(k1, 31);
	k1 *= c2;
	h1 = k1 ^ 8;
	h2 = 8;
	h1 += h2;
	h2 += h1;
	h1 = fmix64(h1);
	h2 = fmix64(h2);
	return h1 + h2;
}

/* ----------------------------------------------------------------
 * Parameters
 * ----------------------------------------------------------------
 */
static int32
explicit_limit(const HllParams *p)
{
	size_t		fullbytes;

	if (p->expthresh != -1)
		return (int32) p->expthresh;
	/* automatic: as many 8-byte hashes as fit in the full form's size */
	fullbytes = (((size_t) p->regwidth << p->log2m) + 7) / 8;
	return (int32) (fullbytes / 8);
}

static void
hll_check_params(const HllParams *p)
{
	if (p->log2m < 0 || p->log2m > HLL_MAX_LOG2M)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("log2m must be between 0 and %d", HLL_MAX_LOG2M)));
	/* hll accepts 0, but a 0-bit register cannot count anything */
	if (p->regwidth < 1 || p->regwidth > HLL_MAX_REGWIDTH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("regwidth must be between 1 and %d", HLL_MAX_REGWIDTH)));
	if (p->expthresh < -1 || p->expthresh > HLL_MAX_EXPTHRESH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expthresh must be between -1 and %d",
						HLL_MAX_EXPTHRESH)));
	if (p->expthresh > 0 && (p->expthresh & (p->expthresh - 1)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expthresh must be -1, 0 or a power of 2")));
	if (p->sparseon != 0 && p->sparseon != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sparseon must be 0 or 1")));
}

/*
 * Read the optional parameters of an aggregate call: arguments 2.. of the
 * transition function, in hll_add_agg's order.
 */
static void
hll_params_from_args(FunctionCallInfo fcinfo, HllParams *p)
{
	int			nargs = PG_NARGS();

	p->log2m = HLL_DEFAULT_LOG2M;
	p->regwidth = HLL_DEFAULT_REGWIDTH;
	p->expthresh = HLL_DEFAULT_EXPTHRESH;
	p->sparseon = HLL_DEFAULT_SPARSEON;

	for (int i = 2; i < nargs; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("hll parameters must not be NULL")));

	if (nargs > 2)
		p->log2m = PG_GETARG_INT32(2);
	if (nargs > 3)
		p->regwidth = PG_GETARG_INT32(3);
	if (nargs > 4)
		p->expthresh = PG_GETARG_INT64(4);
	if (nargs > 5)
		p->sparseon = PG_GETARG_INT32(5);
}

static bool
hll_params_equal(const HllParams *a, const HllParams *b)
{
	return a->log2m == b->log2m && a->regwidth == b->regwidth &&
		a->expthresh == b->expthresh && a->sparseon == b->sparseon;
}

static void
hll_params_must_match(const HllParams *a, const HllParams *b)
{
	if (!hll_params_equal(a, b))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("hll parameters must be the same for every row of an aggregate"),
				 errdetail("Got (%d, %d, " INT64_FORMAT ", %d) and (%d, %d, " INT64_FORMAT ", %d).",
						   a->log2m, a->regwidth, a->expthresh, a->sparseon,
						   b->log2m, b->regwidth, b->expthresh, b->sparseon)));
}

/* ----------------------------------------------------------------
 * Aggregate state
 * ----------------------------------------------------------------
 */
static HllState *
hll_state_create(MemoryContext cxt, const HllParams *p)
{
	HllState   *st;

	hll_check_params(p);
	st = (HllState *) MemoryContextAllocZero(cxt, sizeof(HllState));
	st->p = *p;
	st->explimit = explicit_limit(p);
	st->mode = HLL_MODE_EMPTY;
	st->cxt = cxt;
	return st;
}

/* The register a hash falls in, and the rank it gives: its value. */
static pg_attribute_always_inline uint8
hll_hash_register(const HllParams *p, uint64 hash, uint32 *idx)
{
	uint64		rest = hash >> p->log2m;
	uint32		rho;
	uint32		regmax = (1U << p->regwidth) - 1;

	*idx = (uint32) (hash & ((UINT64CONST(1) << p->log2m) - 1));
	/* as hll does: a zero remainder counts as rank 0 */
	rho = rest == 0 ? 0 : pg_rightmost_one_pos64(rest) + 1;
	return (uint8) Min(rho, regmax);
}

static pg_attribute_always_inline void
hll_register_add(HllState *st, uint64 hash)
{
	uint32		idx;
	uint8		rho = hll_hash_register(&st->p, hash, &idx);

	if (st->regs[idx] < rho)
		st->regs[idx] = rho;
}

static void
hll_to_registers(HllState *st)
{
	st->regs = (uint8 *) MemoryContextAllocZero(st->cxt,
												(Size) 1 << st->p.log2m);
	if (st->set != NULL)
	{
		for (uint32 i = 0; i <= st->setmask; i++)
			if (st->set[i] != 0)
				hll_register_add(st, st->set[i]);
		pfree(st->set);
		st->set = NULL;
	}
	if (st->has_zero)
		hll_register_add(st, 0);
	st->nexplicit = 0;
	st->has_zero = false;
	st->mode = HLL_MODE_REGISTERS;
}

/* Insert into the open-addressing set; returns false if already there. */
static bool
hll_set_insert(HllState *st, uint64 hash)
{
	uint32		i;

	if (hash == 0)
	{
		if (st->has_zero)
			return false;
		st->has_zero = true;
		st->nexplicit++;
		return true;
	}

	/* keep the load factor at most one half */
	if (st->set == NULL || (uint32) (st->nexplicit + 1) * 2 > st->setmask + 1)
	{
		uint32		newsize = st->set == NULL ? HLL_SET_INITIAL_SIZE : (st->setmask + 1) * 2;
		uint64	   *old = st->set;
		uint32		oldmask = st->setmask;

		st->set = (uint64 *) MemoryContextAllocZero(st->cxt,
													newsize * sizeof(uint64));
		st->setmask = newsize - 1;
		if (old != NULL)
		{
			for (uint32 j = 0; j <= oldmask; j++)
			{
				if (old[j] == 0)
					continue;
				i = (uint32) old[j] & st->setmask;
				while (st->set[i] != 0)
					i = (i + 1) & st->setmask;
				st->set[i] = old[j];
			}
			pfree(old);
		}
	}

	i = (uint32) hash & st->setmask;
	while (st->set[i] != 0)
	{
		if (st->set[i] == hash)
			return false;
		i = (i + 1) & st->setmask;
	}
	st->set[i] = hash;
	st->nexplicit++;
	return true;
}

static bool
hll_set_contains(const HllState *st, uint64 hash)
{
	uint32		i;

	if (hash == 0)
		return st->has_zero;
	if (st->set == NULL)
		return false;
	i = (uint32) hash & st->setmask;
	while (st->set[i] != 0)
	{
		if (st->set[i] == hash)
			return true;
		i = (i + 1) & st->setmask;
	}
	return false;
}

/* Add one hash before the registers exist: hll's explicit-form rules. */
static pg_noinline void
hll_state_add_explicit(HllState *st, uint64 hash)
{
	if (st->explimit == 0)
	{
		hll_to_registers(st);
		hll_register_add(st, hash);
		return;
	}
	st->mode = HLL_MODE_EXPLICIT;
	if (st->nexplicit >= st->explimit)
	{
		if (hll_set_contains(st, hash))
			return;
		hll_to_registers(st);
		hll_register_add(st, hash);
		return;
	}
	hll_set_insert(st, hash);
}

/* Add one hash; the register update, taken by almost every row, inline. */
static pg_attribute_always_inline void
hll_state_add(HllState *st, uint64 hash)
{
	if (likely(st->mode == HLL_MODE_REGISTERS))
		hll_register_add(st, hash);
	else
		hll_state_add_explicit(st, hash);
}

/* a sort of int64 with the comparison inlined: a pack sorts every set */
#define ST_SORT sort_int64
#define ST_ELEMENT_TYPE int64
#define ST_COMPARE(a, b) ((*(a) > *(b)) - (*(a) < *(b)))
#define ST_SCOPE static
#define ST_DECLARE
#define ST_DEFINE
#include "lib/sort_template.h"

/* The explicit hashes, sorted as signed integers (hll's order). */
static int64 *
hll_sorted_explicit(const HllState *st)
{
	int64	   *out = (int64 *) palloc(Max(st->nexplicit, 1) * sizeof(int64));
	int32		n = 0;

	if (st->has_zero)
		out[n++] = 0;
	if (st->set != NULL)
		for (uint32 i = 0; i <= st->setmask; i++)
			if (st->set[i] != 0)
				out[n++] = (int64) st->set[i];
	Assert(n == st->nexplicit);
	sort_int64(out, n);
	return out;
}

/* ----------------------------------------------------------------
 * Packing a state into hll's storage format
 * ----------------------------------------------------------------
 */
static bytea *
hll_state_pack(const HllState *st)
{
	bytea	   *result;
	int64	   *elems;

	switch (st->mode)
	{
		case HLL_MODE_REGISTERS:
			return sketch_hll_pack_registers(&st->p, st->regs);
		case HLL_MODE_EMPTY:
			return sketch_hll_pack_empty(&st->p);
		case HLL_MODE_EXPLICIT:
			break;
	}
	elems = hll_sorted_explicit(st);
	result = sketch_hll_pack_explicit(&st->p, elems, st->nexplicit);
	pfree(elems);
	return result;
}

static double
hll_state_estimate(const HllState *st)
{
	switch (st->mode)
	{
		case HLL_MODE_EMPTY:
			return 0.0;
		case HLL_MODE_EXPLICIT:
			return (double) st->nexplicit;
		case HLL_MODE_REGISTERS:
			break;
	}
	return sketch_hll_estimate_registers(st->regs, st->p.log2m, st->p.regwidth);
}

/* ----------------------------------------------------------------
 * SQL-callable functions
 * ----------------------------------------------------------------
 */
static MemoryContext
hll_agg_context(FunctionCallInfo fcinfo, const char *fname)
{
	MemoryContext aggcxt;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "%s called in non-aggregate context", fname);
	return aggcxt;
}

/*
 * The state for a transition call when hll_trans_fast cannot give it:
 * the first row, or a form with parameters (checked on every row).
 */
static pg_noinline HllState *
hll_trans_state(FunctionCallInfo fcinfo, const char *fname)
{
	MemoryContext aggcxt = hll_agg_context(fcinfo, fname);
	HllParams	p;
	HllState   *st;

	hll_params_from_args(fcinfo, &p);
	if (PG_ARGISNULL(0))
		return hll_state_create(aggcxt, &p);
	st = (HllState *) PG_GETARG_POINTER(0);
	if (PG_NARGS() > 2)
		hll_params_must_match(&st->p, &p);
	return st;
}

/*
 * Only the aggregate executor can pass an internal argument, and the
 * first row checked the aggregate context when it created the state, so
 * later rows of the one-argument form take the state as it is: the checks
 * would cost a call on every row.
 */
#define hll_trans_fast(fcinfo) \
	(PG_NARGS() == 2 && !PG_ARGISNULL(0))

/*
 * Hash a text datum the way hll_hash_text(x, 0) does.  Short and plain
 * values, nearly all rows, are read in place without a detoast call.
 */
static pg_attribute_always_inline uint64
hll_hash_text_datum(Datum d)
{
	struct varlena *t = (struct varlena *) DatumGetPointer(d);

	if (unlikely(VARATT_IS_EXTERNAL(t) || VARATT_IS_COMPRESSED(t)))
		t = pg_detoast_datum_packed(t);
	return murmur3_64_inline(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), 0);
}

PG_FUNCTION_INFO_V1(streamkpi_hll_trans_text);
PG_FUNCTION_INFO_V1(streamkpi_hll_trans_int8);
PG_FUNCTION_INFO_V1(streamkpi_hll_combine);
PG_FUNCTION_INFO_V1(streamkpi_hll_serialize);
PG_FUNCTION_INFO_V1(streamkpi_hll_deserialize);
PG_FUNCTION_INFO_V1(streamkpi_hll_final);
PG_FUNCTION_INFO_V1(streamkpi_hll_final_count);
PG_FUNCTION_INFO_V1(streamkpi_acd_trans_text);
PG_FUNCTION_INFO_V1(streamkpi_acd_trans_int8);
PG_FUNCTION_INFO_V1(streamkpi_hll_estimate);

/* hll_agg(text [, log2m ...]) transition: NULL rows still create a state */
Datum
streamkpi_hll_trans_text(PG_FUNCTION_ARGS)
{
	HllState   *st;

	if (likely(hll_trans_fast(fcinfo)))
		st = (HllState *) PG_GETARG_POINTER(0);
	else
		st = hll_trans_state(fcinfo, "streamkpi_hll_trans_text");
	if (!PG_ARGISNULL(1))
		hll_state_add(st, hll_hash_text_datum(PG_GETARG_DATUM(1)));
	PG_RETURN_POINTER(st);
}

Datum
streamkpi_hll_trans_int8(PG_FUNCTION_ARGS)
{
	HllState   *st;

	if (likely(hll_trans_fast(fcinfo)))
		st = (HllState *) PG_GETARG_POINTER(0);
	else
		st = hll_trans_state(fcinfo, "streamkpi_hll_trans_int8");
	if (!PG_ARGISNULL(1))
		hll_state_add(st, murmur3_int64(PG_GETARG_INT64(1)));
	PG_RETURN_POINTER(st);
}

/* approx_count_distinct always uses log2m 14 and hll's other defaults */
static pg_noinline HllState *
acd_trans_state(FunctionCallInfo fcinfo, const char *fname)
{
	HllParams	p = {ACD_LOG2M, HLL_DEFAULT_REGWIDTH, HLL_DEFAULT_EXPTHRESH,
	HLL_DEFAULT_SPARSEON};

	return hll_state_create(hll_agg_context(fcinfo, fname), &p);
}

/* as hll_trans_fast: only the first row checks the aggregate context */
Datum
streamkpi_acd_trans_text(PG_FUNCTION_ARGS)
{
	HllState   *st;

	if (likely(!PG_ARGISNULL(0)))
		st = (HllState *) PG_GETARG_POINTER(0);
	else
		st = acd_trans_state(fcinfo, "streamkpi_acd_trans_text");
	if (!PG_ARGISNULL(1))
		hll_state_add(st, hll_hash_text_datum(PG_GETARG_DATUM(1)));
	PG_RETURN_POINTER(st);
}

Datum
streamkpi_acd_trans_int8(PG_FUNCTION_ARGS)
{
	HllState   *st;

	if (likely(!PG_ARGISNULL(0)))
		st = (HllState *) PG_GETARG_POINTER(0);
	else
		st = acd_trans_state(fcinfo, "streamkpi_acd_trans_int8");
	if (!PG_ARGISNULL(1))
		hll_state_add(st, murmur3_int64(PG_GETARG_INT64(1)));
	PG_RETURN_POINTER(st);
}

static HllState *
hll_state_copy(MemoryContext cxt, const HllState *src)
{
	HllState   *st = (HllState *) MemoryContextAlloc(cxt, sizeof(HllState));

	*st = *src;
	st->cxt = cxt;
	if (src->set != NULL)
	{
		Size		sz = (src->setmask + 1) * sizeof(uint64);

		st->set = (uint64 *) MemoryContextAlloc(cxt, sz);
		memcpy(st->set, src->set, sz);
	}
	if (src->regs != NULL)
	{
		Size		sz = (Size) 1 << src->p.log2m;

		st->regs = (uint8 *) MemoryContextAlloc(cxt, sz);
		memcpy(st->regs, src->regs, sz);
	}
	return st;
}

/* Merge b into a; the result equals one state that saw both inputs. */
static void
hll_state_merge(HllState *a, const HllState *b)
{
	hll_params_must_match(&a->p, &b->p);
	if (b->mode == HLL_MODE_EMPTY)
		return;
	if (b->mode == HLL_MODE_REGISTERS)
	{
		size_t		m = (size_t) 1 << a->p.log2m;

		if (a->mode != HLL_MODE_REGISTERS)
			hll_to_registers(a);
		for (size_t i = 0; i < m; i++)
			if (a->regs[i] < b->regs[i])
				a->regs[i] = b->regs[i];
		return;
	}
	if (b->has_zero)
		hll_state_add(a, 0);
	if (b->set != NULL)
		for (uint32 i = 0; i <= b->setmask; i++)
			if (b->set[i] != 0)
				hll_state_add(a, b->set[i]);
}

Datum
streamkpi_hll_combine(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt = hll_agg_context(fcinfo, "streamkpi_hll_combine");
	HllState   *a = PG_ARGISNULL(0) ? NULL : (HllState *) PG_GETARG_POINTER(0);
	HllState   *b = PG_ARGISNULL(1) ? NULL : (HllState *) PG_GETARG_POINTER(1);

	if (b == NULL)
	{
		if (a == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(a);
	}
	if (a == NULL)
		PG_RETURN_POINTER(hll_state_copy(aggcxt, b));
	hll_state_merge(a, b);
	PG_RETURN_POINTER(a);
}

/* A partial state travels as its hll value: no second format to keep. */
Datum
streamkpi_hll_serialize(PG_FUNCTION_ARGS)
{
	HllState   *st = (HllState *) PG_GETARG_POINTER(0);

	PG_RETURN_BYTEA_P(hll_state_pack(st));
}

/* A state from a stored hll value (an aggregate state or a KPI sketch). */
static HllState *
hll_state_from_value(MemoryContext cxt, const uint8 *in, size_t len)
{
	HllValue	v;
	HllState   *st;

	sketch_hll_parse(in, len, &v);
	if (v.type == HLL_T_UNDEFINED || v.p.regwidth > HLL_MAX_REGWIDTH)
		sketch_hll_bad("An aggregate state is never undefined and has at most 7-bit registers.");
	st = hll_state_create(cxt, &v.p);
	if (v.type == HLL_T_EXPLICIT)
	{
		st->mode = HLL_MODE_EXPLICIT;
		for (size_t i = 0; i < v.count; i++)
			hll_state_add(st, sketch_hll_explicit_element(&v, i));
	}
	else if (v.type == HLL_T_SPARSE || v.type == HLL_T_FULL)
	{
		hll_to_registers(st);
		sketch_hll_value_registers(&v, st->regs);
	}
	return st;
}

Datum
streamkpi_hll_deserialize(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt = hll_agg_context(fcinfo, "streamkpi_hll_deserialize");
	bytea	   *b = PG_GETARG_BYTEA_PP(0);

	PG_RETURN_POINTER(hll_state_from_value(aggcxt, (const uint8 *) VARDATA_ANY(b),
										   VARSIZE_ANY_EXHDR(b)));
}

/* hll_agg final: no rows at all gives NULL, as hll_add_agg does */
Datum
streamkpi_hll_final(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(hll_state_pack((HllState *) PG_GETARG_POINTER(0)));
}

/* approx_count_distinct final: like count(DISTINCT), 0 for no rows */
Datum
streamkpi_hll_final_count(PG_FUNCTION_ARGS)
{
	double		est;

	if (PG_ARGISNULL(0))
		PG_RETURN_INT64(0);
	est = hll_state_estimate((HllState *) PG_GETARG_POINTER(0));
	if (!isfinite(est) || est >= (double) PG_INT64_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("cardinality estimate is out of range"),
				 errdetail("Every register of the sketch is saturated.")));
	PG_RETURN_INT64((int64) llround(est));
}

/*
 * hll_estimate(hll) -> float8: exact for empty and explicit values, Ertl's
 * estimator for sparse and full ones, NULL for an undefined value.
 */
Datum
streamkpi_hll_estimate(PG_FUNCTION_ARGS)
{
	bytea	   *b = PG_GETARG_BYTEA_PP(0);
	HllValue	v;
	uint8	   *regs;
	double		est;

	sketch_hll_parse((const uint8 *) VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b), &v);
	switch (v.type)
	{
		case HLL_T_UNDEFINED:
			PG_RETURN_NULL();
		case HLL_T_EMPTY:
			PG_RETURN_FLOAT8(0.0);
		case HLL_T_EXPLICIT:
			PG_RETURN_FLOAT8((double) v.count);
		default:
			break;
	}
	regs = (uint8 *) palloc((Size) 1 << v.p.log2m);
	sketch_hll_value_registers(&v, regs);
	est = sketch_hll_estimate_registers(regs, v.p.log2m, v.p.regwidth);
	pfree(regs);
	PG_RETURN_FLOAT8(est);
}

/* ----------------------------------------------------------------
 * States for C callers: the KPI engine keeps one per key and adds
 * hashes in place (see kpi_accumulate.c)
 * ----------------------------------------------------------------
 */
SketchHll *
sketch_hll_create(MemoryContext cxt, int log2m)
{
	HllParams	p = {log2m, HLL_DEFAULT_REGWIDTH, HLL_DEFAULT_EXPTHRESH,
	HLL_DEFAULT_SPARSEON};

	return hll_state_create(cxt, &p);
}

/* the hash hll_hash_text() gives the text */
uint64
sketch_hll_hash_text(const char *data, size_t len)
{
	return murmur3_64_inline(data, len, 0);
}

void
sketch_hll_add(SketchHll *st, uint64 hash)
{
	hll_state_add(st, hash);
}

void
sketch_hll_merge(SketchHll *into, const SketchHll *from)
{
	hll_state_merge(into, from);
}

/*
 * Merge from into into, as sketch_hll_merge(); true when into changed (a
 * state that did not packs to the same value and has the same count).
 */
bool
sketch_hll_merge_changed(SketchHll *into, const SketchHll *from)
{
	HllMode		mode = into->mode;
	int32		n = into->nexplicit;
	size_t		m = (size_t) 1 << into->p.log2m;
	uint8	   *before = mode == HLL_MODE_REGISTERS ? palloc(m) : NULL;
	bool		changed;

	if (before != NULL)
		memcpy(before, into->regs, m);
	hll_state_merge(into, from);
	changed = into->mode != mode || into->nexplicit != n ||
		(before != NULL && memcmp(before, into->regs, m) != 0);
	if (before != NULL)
		pfree(before);
	return changed;
}

SketchHll *
sketch_hll_copy(MemoryContext cxt, const SketchHll *st)
{
	return hll_state_copy(cxt, st);
}

bytea *
sketch_hll_pack(const SketchHll *st)
{
	return hll_state_pack(st);
}

SketchHll *
sketch_hll_unpack(MemoryContext cxt, const uint8 *data, size_t len)
{
	return hll_state_from_value(cxt, data, len);
}

/* a classic estimate as round() gives it, or -1 (left to hll_cardinality()) */
static int64
hll_estimate_count(double estimate)
{
	return estimate < 0 || estimate >= (double) PG_INT64_MAX ? -1 : (int64) rint(estimate);
}

/*
 * round(hll_cardinality()) of the packed sketch: exact while it holds its
 * hashes, else the classic estimate of its registers; -1 where that is
 * left to hll_cardinality() (sketch_hll_classic_estimate()).
 */
int64
sketch_hll_cardinality(const SketchHll *st)
{
	double		estimate;

	if (st->mode != HLL_MODE_REGISTERS)
		return st->nexplicit;
	estimate = sketch_hll_classic_estimate(st->regs, st->p.log2m, st->p.regwidth);
	return hll_estimate_count(estimate);
}

static int
hll_register_cmp(const void *x, const void *y)
{
	const HllRegister *a = (const HllRegister *) x;
	const HllRegister *b = (const HllRegister *) y;

	if (a->idx != b->idx)
		return a->idx < b->idx ? -1 : 1;
	return (a->val < b->val) - (a->val > b->val);	/* the largest first */
}

/* The registers b raises, ascending, each once with its largest value. */
static HllRegister *
hll_delta_registers(const HllState *b, int32 *n)
{
	size_t		m = (size_t) 1 << b->p.log2m;
	HllRegister *d;
	int32		k = 0;
	int32		out = 0;

	if (b->mode == HLL_MODE_REGISTERS)
	{
		d = palloc(m * sizeof(HllRegister));
		for (uint32 i = 0; i < m; i++)
			if (b->regs[i] != 0)
				d[out++] = (HllRegister) {i, b->regs[i]};
		*n = out;
		return d;
	}
	d = palloc((b->nexplicit + 1) * sizeof(HllRegister));
	/* a zero hash (b->has_zero) has rank 0: it raises no register */
	for (uint32 i = 0; b->set != NULL && i <= b->setmask; i++)
		if (b->set[i] != 0)
		{
			d[k].val = hll_hash_register(&b->p, b->set[i], &d[k].idx);
			k++;
		}
	qsort(d, k, sizeof(HllRegister), hll_register_cmp);
	for (int32 i = 0; i < k; i++)
		if (d[i].val != 0 && (out == 0 || d[out - 1].idx != d[i].idx))
			d[out++] = d[i];
	*n = out;
	return d;
}

/*
 * A sparse or full value v (stored as in, len) with b merged in its own
 * form (sketch_hll_full_merge, sketch_hll_sparse_merge), or NULL where
 * unpacking, merging and packing must do it.
 */
static bytea *
hll_merge_in_place(const HllValue *v, const uint8 *in, size_t len, const SketchHll *b,
				   int64 *count)
{
	HllRegister *d;
	int32		nd;
	bytea	   *merged;
	double		estimate;

	if (!hll_params_equal(&v->p, &b->p) || b->mode == HLL_MODE_EMPTY)
		return NULL;
	d = hll_delta_registers(b, &nd);
	merged = v->type == HLL_T_FULL
		? sketch_hll_full_merge(v, in, len, d, nd, &estimate)
		: sketch_hll_sparse_merge(v, d, nd, &estimate);
	pfree(d);
	if (merged != NULL && count != NULL)
		*count = hll_estimate_count(estimate);
	return merged;
}

/*
 * The stored hll value (in, len) with the hashes of b added, as a stored
 * value; *count (unless NULL) gets round(hll_cardinality()) of it
 * (sketch_hll_cardinality()).  A few hashes added to a large explicit,
 * sparse or full value cost one pass over its bytes, not a state rebuilt
 * (and sorted, or unpacked and packed) again.
 */
bytea *
sketch_hll_merge_into(const uint8 *in, size_t len, const SketchHll *b, int64 *count)
{
	HllValue	v;
	HllState   *st;

	sketch_hll_parse(in, len, &v);
	if (v.type == HLL_T_EXPLICIT && b->mode != HLL_MODE_REGISTERS &&
		hll_params_equal(&v.p, &b->p) && v.p.expthresh != 0)
	{
		int64	   *hashes = hll_sorted_explicit(b);
		int64		exact;
		bytea	   *merged = sketch_hll_explicit_merge(&v, hashes, b->nexplicit,
													   explicit_limit(&v.p), &exact);

		pfree(hashes);
		if (merged != NULL)
		{
			if (count != NULL)
				*count = exact;
			return merged;
		}
	}
	if (v.type == HLL_T_FULL || v.type == HLL_T_SPARSE)
	{
		bytea	   *merged = hll_merge_in_place(&v, in, len, b, count);

		if (merged != NULL)
			return merged;
	}
	st = hll_state_from_value(CurrentMemoryContext, in, len);
	hll_state_merge(st, b);
	if (count != NULL)
		*count = sketch_hll_cardinality(st);
	return hll_state_pack(st);
}

/* The distinct count of a stored explicit or empty value, else -1. */
int64
sketch_hll_value_exact_count(const uint8 *in, size_t len)
{
	HllValue	v;

	sketch_hll_parse(in, len, &v);
	if (v.type == HLL_T_EMPTY)
		return 0;
	return v.type == HLL_T_EXPLICIT ? (int64) v.count : -1;
}
