/*-------------------------------------------------------------------------
 *
 * synthetic_common.c
 *	  Helpers of the synthetic generators (synthetic.c, synthetic_sparkify.c):
 *	  Zipf sampling, argument checks, constant text datums and the names of
 *	  songs, artists and people.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "datatype/timestamp.h"
#include "utils/builtins.h"

#include "synthetic.h"


static double
zipf_helper1(double x)
{
	return fabs(x) > 1e-8 ? log1p(x) / x : 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
}

static double
zipf_helper2(double x)
{
	return fabs(x) > 1e-8 ? expm1(x) / x : 1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x));
}

static double
zipf_hint(const Zipf *z, double x)
{
	double		lx = log(x);

	return zipf_helper2((1.0 - z->s) * lx) * lx;
}

static double
zipf_h(const Zipf *z, double x)
{
	return exp(-z->s * log(x));
}

static double
zipf_hinv(const Zipf *z, double x)
{
	double		t = x * (1.0 - z->s);

	if (t < -1.0)
		t = -1.0;
	return exp(zipf_helper1(t) * x);
}

void
zipf_init(Zipf *z, int64 n, double s)
{
	z->n = (double) n;
	z->s = s;
	z->h_x1 = zipf_hint(z, 1.5) - 1.0;
	z->h_n = zipf_hint(z, z->n + 0.5);
	z->cut = 2.0 - zipf_hinv(z, zipf_hint(z, 2.5) - zipf_h(z, 2.0));
}

int64
zipf_sample(const Zipf *z, Rng *r)
{
	for (;;)
	{
		double		u = z->h_n + rng_unit(r) * (z->h_x1 - z->h_n);
		double		x = zipf_hinv(z, u);
		int64		k = (int64) (x + 0.5);

		if (k < 1)
			k = 1;
		else if (k > (int64) z->n)
			k = (int64) z->n;
		if (k - x <= z->cut || u >= zipf_hint(z, k + 0.5) - zipf_h(z, (double) k))
			return k;
	}
}

/* ---------------------------------------------------------------------
 * Argument checks
 */

void
check_share(double v, const char *name)
{
	if (isnan(v) || v < 0.0 || v > 1.0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be between 0 and 1", name),
				 errdetail("The value given was %g.", v)));
}

void
check_count(int64 v, const char *name, int64 min)
{
	if (v < min)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be at least " INT64_FORMAT, name, min),
				 errdetail("The value given was " INT64_FORMAT ".", v)));
}

/*
 * The window [start, start + duration) of generated events: start finite,
 * duration positive, without months (no fixed length), at most 3660 days.
 * Returns the duration in microseconds.
 */
int64
check_window(TimestampTz start, Interval *duration)
{
	int64		usecs;

	if (TIMESTAMP_NOT_FINITE(start))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("start must be a finite timestamp")));
	if (duration->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("duration must not contain months or years"),
				 errdetail("A month has no fixed length."),
				 errhint("Give the duration in days, for example '30 days'.")));
	usecs = (int64) duration->day * USECS_PER_DAY + duration->time;
	if (duration->day < 0 || duration->time < 0 || usecs <= 0 ||
		duration->day > 3660)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("duration must be positive and at most 3660 days")));

	return usecs;
}

/* constant text datums, made once per call */
Datum *
text_datums(const char *const *names, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * n);
	int			i;

	for (i = 0; i < n; i++)
		d[i] = CStringGetTextDatum(names[i]);
	return d;
}

/* ---------------------------------------------------------------------
 * Dimensions
 */

const char *const title_a[32] = {
	"Midnight", "Golden", "Electric", "Silent", "Broken", "Neon", "Wild",
	"Lonely", "Crystal", "Velvet", "Burning", "Falling", "Endless", "Summer",
	"Paper", "Hollow", "Sweet", "Restless", "Crimson", "Distant", "Frozen",
	"Little", "Secret", "Shining", "Blue", "Northern", "Dancing", "Faded",
	"Sacred", "Runaway", "Dusty", "Cosmic"
};
const char *const title_b[32] = {
	"Hearts", "Highway", "Dreams", "River", "Lights", "City", "Ocean", "Fire",
	"Rain", "Roses", "Sky", "Shadows", "Echoes", "Stars", "Waves", "Thunder",
	"Garden", "Mirror", "Horizon", "Satellite", "Letters", "Streets", "Moon",
	"Signals", "Wolves", "Paradise", "Memories", "Island", "Machine", "Harbor",
	"Canyon", "Parade"
};
const char *const first_names[32] = {
	"Ava", "Liam", "Sofia", "Noah", "Mia", "Lucas", "Yuki", "Mateo", "Emma",
	"Kenji", "Lea", "Diego", "Chloe", "Arjun", "Isabella", "Min-jun", "Olivia",
	"Hugo", "Camila", "Finn", "Hana", "Leon", "Valentina", "Omar", "Nora",
	"Ravi", "Elena", "Jonas", "Lucia", "Ethan", "Sakura", "Gabriel"
};
const char *const last_names[32] = {
	"Smith", "Garcia", "Müller", "Tanaka", "Silva", "Rossi", "Kim", "Martin",
	"Nowak", "Johnson", "Santos", "Dubois", "Schmidt", "Lopez", "Sato", "Brown",
	"Fernandez", "Jensen", "Patel", "Costa", "Novak", "Wilson", "Park",
	"Moreau", "Lee", "Hernandez", "Wagner", "Gomez", "Nakamura", "Taylor",
	"Oliveira", "Berg"
};

/* artist j of a catalog of a given seed: "Ava Garcia" or "The Neon Wolves" */
void
tb_artist(TextBuf *b, int32 seed, int64 j)
{
	Rng			r;

	rng_init(&r, seed, KIND_ARTIST, (uint64) j);
	if (rng_unit(&r) < 0.6)
	{
		tb_str(b, first_names[rng_below(&r, 32)]);
		tb_char(b, ' ');
		tb_str(b, last_names[rng_below(&r, 32)]);
	}
	else
	{
		tb_str(b, "The ");
		tb_str(b, title_a[rng_below(&r, 32)]);
		tb_char(b, ' ');
		tb_str(b, title_b[rng_below(&r, 32)]);
	}
}
