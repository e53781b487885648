/*-------------------------------------------------------------------------
 *
 * sketch_hll_format.c
 *	  postgresql-hll's storage format, version 1, written and read from
 *	  its specification (postgresql-hll ships no headers): the header
 *	  byte layout, empty, explicit, sparse and full values as big-endian
 *	  bit streams, every field validated on the way in; and Ertl's
 *	  improved raw estimator over a value's registers ("New cardinality
 *	  estimation algorithms for HyperLogLog sketches", 2017).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "port/pg_bitutils.h"
#include "utils/float.h"

#include "sketch.h"

static int
expthresh_encode(int64 expthresh)
{
	if (expthresh == -1)
		return 63;
	if (expthresh == 0)
		return 0;
	return pg_leftmost_one_pos64((uint64) expthresh) + 1;
}

/* ----------------------------------------------------------------
 * Bit streams: big-endian, most significant bit first
 * ----------------------------------------------------------------
 */
typedef struct BitWriter
{
	uint8	   *out;
	size_t		pos;
	uint64		acc;
	int			nacc;
} BitWriter;

static inline void
bits_put(BitWriter *w, uint32 value, int nbits)
{
	w->acc = (w->acc << nbits) | value;
	w->nacc += nbits;
	while (w->nacc >= 8)
	{
		w->nacc -= 8;
		w->out[w->pos++] = (uint8) (w->acc >> w->nacc);
	}
	w->acc &= (UINT64CONST(1) << w->nacc) - 1;
}

static inline void
bits_flush(BitWriter *w)
{
	if (w->nacc > 0)
		w->out[w->pos++] = (uint8) (w->acc << (8 - w->nacc));
	w->nacc = 0;
}

/* Read nbits (<= 32) at bit offset pos; the caller checked the bounds. */
static inline uint32
bits_get(const uint8 *in, size_t pos, int nbits)
{
	size_t		byte = pos / 8;
	int			skip = pos % 8;
	int			nbytes = (skip + nbits + 7) / 8;
	uint64		acc = 0;

	for (int i = 0; i < nbytes; i++)
		acc = (acc << 8) | in[byte + i];
	acc >>= nbytes * 8 - skip - nbits;
	return (uint32) (acc & ((UINT64CONST(1) << nbits) - 1));
}

/*
 * Full values: eight registers of width bits are width whole bytes, so
 * registers are read and written eight at a time through a 64-bit word
 * (width <= 8) rather than one bit-stream call each, when m is a multiple
 * of 8 (log2m >= 3; smaller sketches take the bit-stream path).  Dense day sketches are decoded and encoded by every KPI
 * round: this was ~20 instructions per register each way.
 */
static void
full_registers_unpack(const uint8 *in, int width, size_t m, uint8 *regs)
{
	uint64		mask = (UINT64CONST(1) << width) - 1;

	for (size_t g = 0; g < m; g += 8, in += width)
	{
		uint64		acc = 0;

		for (int b = 0; b < width; b++)
			acc = (acc << 8) | in[b];
		for (int k = 0; k < 8; k++)
			regs[g + k] = (uint8) ((acc >> (width * (7 - k))) & mask);
	}
}

static void
full_registers_pack(const uint8 *regs, int width, size_t m, uint8 *out)
{
	uint64		mask = (UINT64CONST(1) << width) - 1;

	for (size_t g = 0; g < m; g += 8, out += width)
	{
		uint64		acc = 0;

		for (int k = 0; k < 8; k++)
			acc = (acc << width) | (regs[g + k] & mask);
		for (int b = width - 1; b >= 0; b--)
		{
			out[b] = (uint8) acc;
			acc >>= 8;
		}
	}
}

/*
 * Raise register idx of a full value's data (m a multiple of 8) to val if
 * it is lower: the same bytes full_registers_pack() would write.
 */
static void
full_register_raise(uint8 *data, int width, uint32 idx, uint8 val)
{
	uint8	   *g = data + (size_t) (idx / 8) * width;
	int			shift = width * (7 - idx % 8);
	uint64		mask = (UINT64CONST(1) << width) - 1;
	uint64		acc = 0;

	for (int b = 0; b < width; b++)
		acc = (acc << 8) | g[b];
	if (((acc >> shift) & mask) >= val)
		return;
	acc = (acc & ~(mask << shift)) | ((uint64) val << shift);
	for (int b = width - 1; b >= 0; b--)
	{
		g[b] = (uint8) acc;
		acc >>= 8;
	}
}

/*
 * How many registers of a full value's data (m a multiple of 8) hold each
 * value: hist has 2^width entries.
 */
static void
full_histogram(const uint8 *data, int width, size_t m, uint32 *hist)
{
	uint64		mask = (UINT64CONST(1) << width) - 1;

	memset(hist, 0, sizeof(uint32) << width);
	for (size_t g = 0; g < m; g += 8, data += width)
	{
		uint64		acc = 0;

		for (int b = 0; b < width; b++)
			acc = (acc << 8) | data[b];
		for (int k = 0; k < 8; k++)
			hist[(acc >> (width * (7 - k))) & mask]++;
	}
}

/* How many registers are not zero, eight at a time. */
static size_t
registers_filled(const uint8 *regs, size_t m)
{
	size_t		n = 0;
	size_t		i = 0;

	for (; i + 8 <= m; i += 8)
	{
		uint64		x;

		memcpy(&x, regs + i, 8);
		/* the top bit of each byte: set when that byte is not zero */
		n += pg_popcount64((((x & UINT64CONST(0x7f7f7f7f7f7f7f7f)) +
							 UINT64CONST(0x7f7f7f7f7f7f7f7f)) | x) &
						   UINT64CONST(0x8080808080808080));
	}
	for (; i < m; i++)
		n += regs[i] != 0;
	return n;
}

/* ----------------------------------------------------------------
 * Writing hll values
 * ----------------------------------------------------------------
 */
static void
hll_put_header(uint8 *out, int type, const HllParams *p)
{
	out[0] = (uint8) ((HLL_VERSION << 4) | type);
	out[1] = (uint8) (((p->regwidth - 1) << 5) | p->log2m);
	out[2] = (uint8) ((p->sparseon << 6) | expthresh_encode(p->expthresh));
}

/* An empty value: no rows, or only NULLs. */
bytea *
sketch_hll_pack_empty(const HllParams *p)
{
	bytea	   *result = (bytea *) palloc(VARHDRSZ + HLL_HEADER_SIZE);

	SET_VARSIZE(result, VARHDRSZ + HLL_HEADER_SIZE);
	hll_put_header((uint8 *) VARDATA(result), HLL_T_EMPTY, p);
	return result;
}

/* An explicit value of n hashes, sorted as signed integers (hll's order). */
bytea *
sketch_hll_pack_explicit(const HllParams *p, const int64 *elems, int32 n)
{
	size_t		len = HLL_HEADER_SIZE + (size_t) n * 8;
	bytea	   *result = (bytea *) palloc(VARHDRSZ + len);
	uint8	   *out;

	SET_VARSIZE(result, VARHDRSZ + len);
	out = (uint8 *) VARDATA(result);
	hll_put_header(out, HLL_T_EXPLICIT, p);
	out += HLL_HEADER_SIZE;
	for (int32 i = 0; i < n; i++)
	{
		uint64		v = (uint64) elems[i];

		for (int b = 7; b >= 0; b--)
			*out++ = (uint8) (v >> (b * 8));
	}
	return result;
}

/* Registers as a sparse or a full value, whichever is smaller (sparseon). */
bytea *
sketch_hll_pack_registers(const HllParams *p, const uint8 *regs)
{
	size_t		m = (size_t) 1 << p->log2m;
	size_t		nfilled = 0;
	size_t		sparsebits;
	size_t		fullbits = m * p->regwidth;
	bool		sparse;
	size_t		datalen;
	bytea	   *result;
	BitWriter	w = {0};

	nfilled = registers_filled(regs, m);
	sparsebits = nfilled * (p->log2m + p->regwidth);
	sparse = p->sparseon && sparsebits < fullbits;
	datalen = ((sparse ? sparsebits : fullbits) + 7) / 8;

	result = (bytea *) palloc0(VARHDRSZ + HLL_HEADER_SIZE + datalen);
	SET_VARSIZE(result, VARHDRSZ + HLL_HEADER_SIZE + datalen);
	hll_put_header((uint8 *) VARDATA(result),
				   sparse ? HLL_T_SPARSE : HLL_T_FULL, p);
	w.out = (uint8 *) VARDATA(result) + HLL_HEADER_SIZE;

	if (!sparse && m % 8 == 0)
	{
		full_registers_pack(regs, p->regwidth, m, w.out);
		return result;
	}
	for (size_t i = 0; i < m; i++)
	{
		if (!sparse)
			bits_put(&w, regs[i], p->regwidth);
		else if (regs[i] != 0)
			bits_put(&w, ((uint32) i << p->regwidth) | regs[i],
					 p->log2m + p->regwidth);
	}
	bits_flush(&w);
	Assert(w.pos == datalen);
	return result;
}

/* ----------------------------------------------------------------
 * Reading hll values, with every field validated
 * ----------------------------------------------------------------
 */
void
sketch_hll_bad(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("invalid hll value"),
			 errdetail("%s", detail)));
}

static uint64
load_be64(const uint8 *p)
{
	uint64		v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

/* element i of a parsed explicit value */
uint64
sketch_hll_explicit_element(const HllValue *v, size_t i)
{
	return load_be64(v->data + i * 8);
}

void
sketch_hll_parse(const uint8 *in, size_t len, HllValue *v)
{
	int			expcode;

	if (len < HLL_HEADER_SIZE)
		sketch_hll_bad("The value is shorter than the 3-byte header.");
	if ((in[0] >> 4) != HLL_VERSION)
		sketch_hll_bad("Only storage format version 1 is known.");
	v->type = in[0] & 0x0f;
	if (v->type > HLL_T_FULL)
		sketch_hll_bad("The type field is not one of undefined, empty, explicit, sparse or full.");
	v->p.regwidth = (in[1] >> 5) + 1;
	v->p.log2m = in[1] & 0x1f;
	if (v->p.log2m > HLL_MAX_LOG2M)
		sketch_hll_bad("log2m is larger than 17.");
	if (in[2] & 0x80)
		sketch_hll_bad("The reserved bit of the parameter byte is set.");
	v->p.sparseon = (in[2] >> 6) & 1;
	expcode = in[2] & 0x3f;
	if (expcode == 63)
		v->p.expthresh = -1;
	else if (expcode == 0)
		v->p.expthresh = 0;
	else if (expcode <= 14)
		v->p.expthresh = INT64CONST(1) << (expcode - 1);
	else
		sketch_hll_bad("The explicit threshold field is out of range.");

	v->data = in + HLL_HEADER_SIZE;
	v->len = len - HLL_HEADER_SIZE;
	v->count = 0;

	switch (v->type)
	{
		case HLL_T_UNDEFINED:
		case HLL_T_EMPTY:
			if (v->len != 0)
				sketch_hll_bad("An empty or undefined value has data after its header.");
			break;
		case HLL_T_EXPLICIT:
			if (v->len % 8 != 0)
				sketch_hll_bad("The explicit data is not a whole number of 8-byte values.");
			v->count = v->len / 8;
			if (v->count > HLL_MAX_EXPTHRESH)
				sketch_hll_bad("The explicit value holds more than 16383 elements.");
			for (size_t i = 1; i < v->count; i++)
				if ((int64) load_be64(v->data + (i - 1) * 8) >=
					(int64) load_be64(v->data + i * 8))
					sketch_hll_bad("The explicit elements are not strictly ascending.");
			break;
		case HLL_T_SPARSE:
			{
				size_t		chunk = v->p.log2m + v->p.regwidth;

				v->count = v->len * 8 / chunk;
				if (v->len * 8 - v->count * chunk >= 8)
					sketch_hll_bad("The sparse data has inconsistent padding.");
				break;
			}
		case HLL_T_FULL:
			if (v->len != ((((size_t) v->p.regwidth) << v->p.log2m) + 7) / 8)
				sketch_hll_bad("The full data does not have one register per bucket.");
			break;
	}
}

/* Fill m registers from a parsed sparse or full value. */
void
sketch_hll_value_registers(const HllValue *v, uint8 *regs)
{
	size_t		m = (size_t) 1 << v->p.log2m;

	if (v->type == HLL_T_FULL && m % 8 == 0)
	{
		full_registers_unpack(v->data, v->p.regwidth, m, regs);
		return;
	}
	if (v->type == HLL_T_FULL)
	{
		for (size_t i = 0; i < m; i++)
			regs[i] = (uint8) bits_get(v->data, i * v->p.regwidth,
									   v->p.regwidth);
		return;
	}

	memset(regs, 0, m);
	for (size_t i = 0; i < v->count; i++)
	{
		int			chunk = v->p.log2m + v->p.regwidth;
		uint32		entry = bits_get(v->data, i * chunk, chunk);
		uint32		idx = entry >> v->p.regwidth;
		uint8		val = (uint8) (entry & ((1U << v->p.regwidth) - 1));

		/* idx < m by construction: it has log2m bits */
		if (regs[idx] < val)
			regs[idx] = val;
	}
}

/*
 * What postgresql-hll's hll_cardinality() gives for registers whose
 * 2^-register add up to sum, zeros of them 0: the classic estimator (alpha m^2 over the sum of 2^-register) with linear
 * counting for small and the log correction for large counts, computed
 * with the same operations in the same order, so that it is the same
 * double.  -1 where hll's arithmetic would overflow (2^regwidth - 2 +
 * log2m >= 63), which the KPI engine leaves to hll_cardinality() itself.
 * The KPI day rows use it (rounded) for their distinct users.
 */
static double
classic_estimate_from_sum(double sum, int zeros, int log2m, int regwidth)
{
	size_t		m = (size_t) 1 << log2m;
	uint64		two_to_l = UINT64CONST(1) << (((UINT64CONST(1) << regwidth) - 2) + log2m);
	double		alpha_mm;
	double		estimator;

	if (m == 16)
		alpha_mm = 0.673 * m * m;
	else if (m == 32)
		alpha_mm = 0.697 * m * m;
	else if (m == 64)
		alpha_mm = 0.709 * m * m;
	else
		alpha_mm = (0.7213 / (1.0 + 1.079 / m)) * m * m;
	estimator = alpha_mm / sum;
	if (zeros != 0 && estimator < (5.0 * m / 2.0))
		return m * log((double) m / zeros);
	if (estimator <= (double) two_to_l / 30.0)
		return estimator;
	return (-1 * (int64) two_to_l) * log(1.0 - (estimator / two_to_l));
}

/* hll's arithmetic overflows (2^regwidth - 2 + log2m >= 63), or m <= 8 */
static bool
classic_estimate_defined(int log2m, int regwidth)
{
	return ((UINT64CONST(1) << regwidth) - 2) + log2m < 63 && log2m > 3;
}

/* the same for the m = 2^log2m registers regs */
double
sketch_hll_classic_estimate(const uint8 *regs, int log2m, int regwidth)
{
	size_t		m = (size_t) 1 << log2m;
	double		sum = 0.0;
	int			zeros = 0;
	double		inverse_powers[64];

	if (!classic_estimate_defined(log2m, regwidth))
		return -1.0;
	/* 2^-r exactly, as 1.0 / (1 << r) gives it: the same sum */
	for (int r = 0; r < lengthof(inverse_powers); r++)
		inverse_powers[r] = ldexp(1.0, -r);
	for (size_t i = 0; i < m; i++)
	{
		sum += inverse_powers[regs[i] & 63];
		zeros += regs[i] == 0;
	}
	return classic_estimate_from_sum(sum, zeros, log2m, regwidth);
}

/*
 * sketch_hll_classic_estimate() from how many registers hold each value
 * (sketch_hll_full_histogram()), for registers of at most 5 bits: the sum
 * of 2^-register is then exact in a double whatever the order (at most
 * 2^17 terms of 2^-31 or more need 48 bits), so it is the same double.
 * -1 for wider registers, and where the estimate itself is -1.
 */
double
sketch_hll_classic_estimate_histogram(const uint32 *hist, int log2m, int regwidth)
{
	double		sum = 0.0;

	if (regwidth > 5 || !classic_estimate_defined(log2m, regwidth))
		return -1.0;
	for (int r = 0; r < (1 << regwidth); r++)
		sum += hist[r] * ldexp(1.0, -r);
	return classic_estimate_from_sum(sum, (int) hist[0], log2m, regwidth);
}

/* ----------------------------------------------------------------
 * Ertl's improved raw estimator
 * ----------------------------------------------------------------
 */
static double
ertl_sigma(double x)
{
	double		y = 1.0;
	double		z = x;
	double		zprev;

	if (x == 1.0)
		return get_float8_infinity();
	do
	{
		x *= x;
		zprev = z;
		z += x * y;
		y += y;
	} while (z != zprev);
	return z;
}

static double
ertl_tau(double x)
{
	double		y = 1.0;
	double		z;
	double		zprev;

	if (x == 0.0 || x == 1.0)
		return 0.0;
	z = 1.0 - x;
	do
	{
		x = sqrt(x);
		zprev = z;
		y *= 0.5;
		z -= (1.0 - x) * (1.0 - x) * y;
	} while (z != zprev);
	return z / 3.0;
}

double
sketch_hll_estimate_registers(const uint8 *regs, int log2m, int regwidth)
{
	size_t		m = (size_t) 1 << log2m;
	int			regmax = (1 << regwidth) - 1;
	int			q = Min(regmax - 1, 64 - log2m);
	double		hist[256] = {0};
	double		z;
	double		dm = (double) m;

	/* a register at regmax is saturated: hll caps larger ranks there */
	for (size_t i = 0; i < m; i++)
		hist[Min((int) regs[i], q + 1)] += 1.0;

	if (hist[0] == dm)
		return 0.0;
	z = dm * ertl_tau((dm - hist[q + 1]) / dm);
	for (int k = q; k >= 1; k--)
		z = 0.5 * (z + hist[k]);
	z += dm * ertl_sigma(hist[0] / dm);
	return dm * dm / (2.0 * M_LN2 * z);
}

/* ----------------------------------------------------------------
 * Merging a few registers into a stored value, in its own form
 * ----------------------------------------------------------------
 */

/*
 * The explicit value holding the sorted hashes of v and b, or NULL when
 * their union holds more than limit.
 */
bytea *
sketch_hll_explicit_merge(const HllValue *v, const int64 *b, int32 nb, int32 limit,
						  int64 *count)
{
	size_t		na = v->count;
	int64	   *out = palloc((na + nb + 1) * sizeof(int64));
	size_t		i = 0;
	int32		j = 0;
	int32		n = 0;

	while (i < na || j < nb)
	{
		int64		x = i < na ? (int64) sketch_hll_explicit_element(v, i) : 0;

		if (i < na && (j >= nb || x <= b[j]))
		{
			if (j < nb && x == b[j])
				j++;
			out[n++] = x;
			i++;
		}
		else
			out[n++] = b[j++];
	}
	if (n > limit)
		return NULL;
	*count = n;
	return sketch_hll_pack_explicit(&v->p, out, n);
}

/*
 * The full value v (stored as in, len) with the registers d raised in a
 * copy of its bytes: what unpacking, merging and packing give.  *estimate
 * gets sketch_hll_classic_estimate() of the result, from one pass over it.
 * NULL where that path does not apply: registers wider than 5 bits, m not
 * a multiple of 8, or a result so sparse that packing would store it
 * sparse.
 */
bytea *
sketch_hll_full_merge(const HllValue *v, const uint8 *in, size_t len,
					  const HllRegister *d, int32 nd, double *estimate)
{
	size_t		m = (size_t) 1 << v->p.log2m;
	uint32		hist[1 << 5];
	bytea	   *out;
	uint8	   *data;

	if (v->type != HLL_T_FULL || v->p.regwidth > 5 || m % 8 != 0)
		return NULL;
	out = (bytea *) palloc(VARHDRSZ + len);
	SET_VARSIZE(out, VARHDRSZ + len);
	memcpy(VARDATA(out), in, len);
	data = (uint8 *) VARDATA(out) + HLL_HEADER_SIZE;
	for (int32 i = 0; i < nd; i++)
		full_register_raise(data, v->p.regwidth, d[i].idx, d[i].val);
	full_histogram(data, v->p.regwidth, m, hist);
	if (v->p.sparseon &&
		(m - hist[0]) * (v->p.log2m + v->p.regwidth) < m * v->p.regwidth)
	{
		pfree(out);
		return NULL;
	}
	*estimate = sketch_hll_classic_estimate_histogram(hist, v->p.log2m, v->p.regwidth);
	return out;
}

/*
 * The sparse value v with the registers d (ascending, values > 0) merged
 * into its entries, one pass over both, written as sketch_hll_pack_registers()
 * writes a sparse value; *estimate as above.  NULL where that path does not
 * apply: registers wider than 5 bits, entries not in ascending order, or a
 * result that packing would store full.
 */
bytea *
sketch_hll_sparse_merge(const HllValue *v, const HllRegister *d, int32 nd,
						double *estimate)
{
	size_t		m = (size_t) 1 << v->p.log2m;
	int			chunk = v->p.log2m + v->p.regwidth;
	HllRegister *merged = palloc((v->count + nd + 1) * sizeof(HllRegister));
	uint32		hist[1 << 5] = {0};
	size_t		n = 0;
	size_t		i = 0;
	int32		j = 0;
	uint32		last_old = 0;
	size_t		datalen;
	bytea	   *result;
	BitWriter	w = {0};

	if (v->type != HLL_T_SPARSE || v->p.regwidth > 5)
		return NULL;
	while (i < v->count || j < nd)
	{
		HllRegister o = {0, 0};
		HllRegister r;
		bool		has_old = i < v->count;

		if (has_old)
		{
			uint32		entry = bits_get(v->data, i * chunk, chunk);

			o.idx = entry >> v->p.regwidth;
			o.val = (uint8) (entry & ((1U << v->p.regwidth) - 1));
			/* not written by a packer we know: let the general path read it */
			if (i > 0 && o.idx <= last_old)
				return NULL;
		}
		if (has_old && (j == nd || o.idx <= d[j].idx))
		{
			r = o;
			if (j < nd && d[j].idx == o.idx)
			{
				r.val = Max(o.val, d[j].val);
				j++;
			}
			last_old = o.idx;
			i++;
		}
		else
			r = d[j++];
		if (r.val != 0)
			merged[n++] = r;
	}
	if (!v->p.sparseon || n * chunk >= m * v->p.regwidth)
		return NULL;
	datalen = (n * chunk + 7) / 8;
	result = (bytea *) palloc0(VARHDRSZ + HLL_HEADER_SIZE + datalen);
	SET_VARSIZE(result, VARHDRSZ + HLL_HEADER_SIZE + datalen);
	hll_put_header((uint8 *) VARDATA(result), HLL_T_SPARSE, &v->p);
	w.out = (uint8 *) VARDATA(result) + HLL_HEADER_SIZE;
	hist[0] = m - n;
	for (size_t k = 0; k < n; k++)
	{
		bits_put(&w, (merged[k].idx << v->p.regwidth) | merged[k].val, chunk);
		hist[merged[k].val]++;
	}
	bits_flush(&w);
	*estimate = sketch_hll_classic_estimate_histogram(hist, v->p.log2m, v->p.regwidth);
	return result;
}
