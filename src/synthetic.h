/*-------------------------------------------------------------------------
 *
 * synthetic.h
 *	  What the synthetic generators share: random number streams, Zipf
 *	  sampling, text buffers without a palloc per row, argument checks and
 *	  the name lists of catalogs and users.
 *
 *	  in synthetic_common.c: Zipf sampling, checks, names; in synthetic.c:
 *	  listens, tracks, users; in synthetic_sparkify.c: Sparkify events and
 *	  songs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_SYNTHETIC_H
#define STREAMKPI_SYNTHETIC_H

#include "postgres.h"

#include "datatype/timestamp.h"

/* ---------------------------------------------------------------------
 * Random numbers
 */

static inline uint64
mix64(uint64 z)
{
	z = (z ^ (z >> 30)) * UINT64CONST(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64CONST(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

typedef struct Rng
{
	uint64		state;
} Rng;

/* the stream of row "row" in stream family "kind" of seed "seed" */
static inline void
rng_init(Rng *r, int32 seed, uint32 kind, uint64 row)
{
	r->state = mix64(mix64(((uint64) (uint32) seed << 8) ^ kind) + row);
}

static inline uint64
rng_next(Rng *r)
{
	r->state += UINT64CONST(0x9e3779b97f4a7c15);
	return mix64(r->state);
}

/* uniform in [0, 1) with 53 bits */
static inline double
rng_unit(Rng *r)
{
	return (rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* uniform integer in [0, n) */
static inline uint64
rng_below(Rng *r, uint64 n)
{
	return (uint64) (rng_unit(r) * (double) n);
}

/* index drawn from cumulative weights cum[0..n-1] (cum[n-1] = total) */
static inline int
pick_cum(const double *cum, int n, double u)
{
	double		x = u * cum[n - 1];
	int			i;

	for (i = 0; i < n - 1; i++)
		if (x < cum[i])
			return i;
	return n - 1;
}

/* ---------------------------------------------------------------------
 * Zipf sampling by rejection-inversion (Hörmann and Derflinger 1996), as in
 * Apache Commons RNG: expected O(1) per sample, no table.
 */
typedef struct Zipf
{
	double		n;
	double		s;
	double		h_x1;
	double		h_n;
	double		cut;
} Zipf;

extern void zipf_init(Zipf *z, int64 n, double s);
extern int64 zipf_sample(const Zipf *z, Rng *r);

/* stream families, so that each attribute has its own random numbers */
#define KIND_LISTEN		1
#define KIND_MALFORMED	2
#define KIND_TRACK		3
#define KIND_USER		4
#define KIND_TRACK_FIXED 5
#define KIND_USER_FIXED	6
#define KIND_ARTIST		7
#define KIND_SPARKIFY_USER	8
#define KIND_SPARKIFY_SONG	9
#define KIND_SPARKIFY_LINE	10

#define INTERRUPT_EVERY	65536

/* ---------------------------------------------------------------------
 * Text without palloc: fixed buffers reused for every row; longer text is
 * cut at TEXTBUF_CAP bytes
 */

#define TEXTBUF_CAP	1024

typedef struct TextBuf
{
	char		data[VARHDRSZ + TEXTBUF_CAP];
	int			len;
} TextBuf;

static inline void
tb_reset(TextBuf *b)
{
	b->len = 0;
}

static inline void
tb_str(TextBuf *b, const char *s)
{
	while (*s && b->len < TEXTBUF_CAP)
		b->data[VARHDRSZ + b->len++] = *s++;
}

static inline void
tb_char(TextBuf *b, char c)
{
	if (b->len < TEXTBUF_CAP)
		b->data[VARHDRSZ + b->len++] = c;
}

static inline void
tb_uint(TextBuf *b, uint64 v, int width)
{
	char		tmp[24];
	int			n = 0;

	do
	{
		tmp[n++] = '0' + (char) (v % 10);
		v /= 10;
	} while (v > 0);
	while (n < width)
		tmp[n++] = '0';
	while (n > 0)
		tb_char(b, tmp[--n]);
}

static inline void
tb_int(TextBuf *b, int64 v)
{
	if (v < 0)
	{
		tb_char(b, '-');
		tb_uint(b, (uint64) (-(v + 1)) + 1, 0);
	}
	else
		tb_uint(b, (uint64) v, 0);
}

static inline Datum
tb_datum(TextBuf *b)
{
	SET_VARSIZE(b->data, VARHDRSZ + b->len);
	return PointerGetDatum(b->data);
}

static inline void
tb_id(TextBuf *b, char prefix, int64 k)
{
	tb_reset(b);
	tb_char(b, prefix);
	tb_uint(b, (uint64) k, 0);
}

/* in synthetic_common.c */
extern void check_share(double v, const char *name);
extern void check_count(int64 v, const char *name, int64 min);
extern int64 check_window(TimestampTz start, Interval *duration);
extern Datum *text_datums(const char *const *names, int n);
extern const char *const title_a[32];
extern const char *const title_b[32];
extern const char *const first_names[32];
extern const char *const last_names[32];
extern void tb_artist(TextBuf *b, int32 seed, int64 j);

#endif							/* STREAMKPI_SYNTHETIC_H */
