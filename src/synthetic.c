/*-------------------------------------------------------------------------
 *
 * synthetic.c
 *	  Synthetic music traffic: listen events, a tracks catalog and users,
 *	  deterministic by seed, generated in C without SPI and without a
 *	  palloc per row.
 *
 *	  Every row is a pure function of (seed, row number): its random numbers
 *	  come from a splitmix64 stream started at a hash of both, so a row never
 *	  depends on the rows before it and the same arguments always give the
 *	  same rows, on any server.
 *
 *	  The model:
 *	  - tracks 't1'..'tN': popularity is Zipf(1.1) by number, t1 the most
 *		played (rejection-inversion sampling, O(1), no table);
 *		duration_ms depends on the track number only, so events of any seed
 *		agree with a catalog of any seed.
 *	  - users 'u1'..'uN': user k belongs to region US, EU, APAC or LATAM by
 *		(k - 1) mod 20 (7/6/4/3 of 20); country and subscription depend on k
 *		only, so they line up with the events whatever the seeds.  Activity
 *		is skewed: low user numbers of a region listen more.
 *	  - time: listens spread over [start, start + duration) with an
 *		intensity that follows each region's share times a daily rhythm by
 *		the region's local hour (America/New_York, Europe/Berlin,
 *		Asia/Tokyo, America/Sao_Paulo): quiet nights, evening peaks.  Rows
 *		come out in event-time order; the region of a row is drawn by the
 *		regions' intensities at its instant.
 *	  - action: play/skip/like about 78/15/7, premium tiers like more and
 *		skip less; ms_played: plays mostly complete (car and tv more than
 *		web), skips stop after 1-30 s, likes complete.
 *	  - late events (late_share): listened_at moved 1 h .. 6 days back.
 *	  - malformed lines (synthetic_listen_lines, malformed_share): broken
 *		JSON, text, a bad timestamp, a non-numeric ms_played, invalid UTF-8.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "synthetic.h"

PG_FUNCTION_INFO_V1(streamkpi_synthetic_listens);
PG_FUNCTION_INFO_V1(streamkpi_synthetic_listen_lines);
PG_FUNCTION_INFO_V1(streamkpi_synthetic_tracks);
PG_FUNCTION_INFO_V1(streamkpi_synthetic_users);



/* ---------------------------------------------------------------------
 * The model's constants
 */

#define NREGIONS	4
static const char *const region_names[NREGIONS] = {"US", "EU", "APAC", "LATAM"};
static const char *const region_zones[NREGIONS] = {
	"America/New_York", "Europe/Berlin", "Asia/Tokyo", "America/Sao_Paulo"
};

/* share of traffic */
static const double region_share[NREGIONS] = {0.35, 0.30, 0.20, 0.15};

/* user k belongs to region region_of_slot[(k - 1) % 20]: 7, 6, 4, 3 slots */
#define USER_SLOTS	20
static const int region_slot_first[NREGIONS + 1] = {0, 7, 13, 17, 20};

/* relative listening intensity by local hour */
static const double hour_rhythm[24] = {
	0.30, 0.20, 0.13, 0.10, 0.09, 0.11, 0.20, 0.38,
	0.55, 0.60, 0.62, 0.65, 0.70, 0.68, 0.66, 0.70,
	0.78, 0.88, 0.96, 1.00, 1.00, 0.92, 0.72, 0.48
};

#define NDEVICES	5
static const char *const device_names[NDEVICES] = {"mobile", "desktop", "web", "tv", "car"};
static const double device_cum[NDEVICES] = {0.55, 0.73, 0.85, 0.93, 1.00};
/* share of plays that run to the end */
static const double device_complete[NDEVICES] = {0.62, 0.66, 0.52, 0.80, 0.84};

#define NACTIONS	3
static const char *const action_names[NACTIONS] = {"play", "skip", "like"};

#define NSUBS		4
static const char *const sub_names[NSUBS] = {"free", "premium", "family", "student"};
static const double sub_cum[NSUBS] = {0.45, 0.85, 0.95, 1.00};
static const double sub_skip[NSUBS] = {0.17, 0.13, 0.14, 0.15};
static const double sub_like[NSUBS] = {0.05, 0.085, 0.08, 0.09};

#define NGENRES		15
static const char *const genre_names[NGENRES] = {
	"pop", "hip-hop", "rock", "latin", "electronic", "r&b", "indie", "k-pop",
	"country", "reggaeton", "metal", "jazz", "classical", "folk", "soul"
};
static const double genre_cum[NGENRES] = {
	18, 33, 44, 53, 61, 68, 74, 79, 84, 88, 91, 94, 96, 98, 100
};

/* countries of each region with cumulative weights */
typedef struct CountryMix
{
	int			n;
	const char *const *codes;
	const double *cum;
} CountryMix;

static const char *const us_codes[] = {"US", "CA"};
static const double us_cum[] = {0.86, 1.0};
static const char *const eu_codes[] = {"DE", "GB", "FR", "ES", "IT", "NL", "SE", "PL"};
static const double eu_cum[] = {0.20, 0.39, 0.54, 0.66, 0.77, 0.85, 0.92, 1.0};
static const char *const apac_codes[] = {"JP", "KR", "AU", "IN", "ID", "PH"};
static const double apac_cum[] = {0.28, 0.44, 0.58, 0.80, 0.91, 1.0};
static const char *const latam_codes[] = {"BR", "MX", "AR", "CO", "CL"};
static const double latam_cum[] = {0.42, 0.72, 0.84, 0.94, 1.0};

static const CountryMix region_countries[NREGIONS] = {
	{2, us_codes, us_cum}, {8, eu_codes, eu_cum},
	{6, apac_codes, apac_cum}, {5, latam_codes, latam_cum}
};


/* duration of track k: 2-6 minutes, triangular around 4; no seed */
static int32
track_duration_ms(int64 k)
{
	Rng			r;

	rng_init(&r, 0, KIND_TRACK_FIXED, (uint64) k);
	return 120000 + (int32) ((rng_unit(&r) + rng_unit(&r)) * 120000.0);
}

/* region, country and subscription of user k; no seed */
static void
user_fixed(int64 k, int *region, const char **country, int *sub)
{
	int			slot = (int) ((k - 1) % USER_SLOTS);
	int			reg = 0;
	Rng			r;
	const CountryMix *cm;

	while (slot >= region_slot_first[reg + 1])
		reg++;
	rng_init(&r, 0, KIND_USER_FIXED, (uint64) k);
	cm = &region_countries[reg];
	*region = reg;
	*country = cm->codes[pick_cum(cm->cum, cm->n, rng_unit(&r))];
	*sub = pick_cum(sub_cum, NSUBS, rng_unit(&r));
}

/* number of users of region reg among users 1..nusers */
static int64
region_user_count(int64 nusers, int reg)
{
	int64		count = 0;
	int			s;

	for (s = region_slot_first[reg]; s < region_slot_first[reg + 1]; s++)
		if (nusers > s)
			count += (nusers - 1 - s) / USER_SLOTS + 1;
	return count;
}

/* the j-th user (0-based) of region reg: users ordered by (k-1)/20, slot */
static int64
region_user(int reg, int64 j, int64 nusers)
{
	int			nslots = region_slot_first[reg + 1] - region_slot_first[reg];

	for (;;)
	{
		int64		q = j / nslots;
		int			s = region_slot_first[reg] + (int) (j % nslots);
		int64		k = q * USER_SLOTS + s + 1;

		if (k <= nusers)
			return k;
		/* the last round is incomplete: fold back into the complete part */
		j = j % (q * nslots > 0 ? q * nslots : 1);
	}
}


/* ---------------------------------------------------------------------
 * Listen events
 */

/* at most this many intensity segments (1 minute each when they suffice) */
#define MAX_SEGMENTS	200000

typedef struct ListenGen
{
	int32		seed;
	int64		n;
	TimestampTz start;
	int64		duration;		/* microseconds */
	int64		ntracks;
	int64		nusers;
	double		late_share;
	Zipf		zipf;
	int64		region_users[NREGIONS];
	/* intensity: segment i covers [start + i*seglen, start + (i+1)*seglen) */
	int			nseg;
	double		seglen;
	double	   *cum;			/* cumulative intensity up to segment end */
	double	   *regcum;			/* per segment, cumulative region weights */
} ListenGen;

typedef struct ListenEvent
{
	int64		user;
	int64		track;
	TimestampTz ts;
	int32		ms_played;
	int			action;
	int			region;
	int			device;
} ListenEvent;

/* the UTC offset in seconds of a zone at an instant */
static long
zone_offset(pg_tz *tz, TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			offset;

	if (timestamp2tm(ts, &offset, &tm, &fsec, NULL, tz) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	return -(long) offset;		/* timestamp2tm gives seconds west of UTC */
}

static void
listen_gen_init(ListenGen *g, int32 seed, int64 n, TimestampTz start,
				Interval *duration, int64 ntracks, int64 nusers,
				double late_share)
{
	pg_tz	   *zones[NREGIONS];
	long		offsets[NREGIONS] = {0};
	int64		cached_hour = PG_INT64_MIN;
	double		total = 0.0;
	int			i,
				r;

	check_count(n, "n", 0);
	check_count(ntracks, "tracks", 1);
	check_count(nusers, "users", 1);
	check_share(late_share, "late_share");
	g->duration = check_window(start, duration);

	g->seed = seed;
	g->n = n;
	g->start = start;
	g->ntracks = ntracks;
	g->nusers = nusers;
	g->late_share = late_share;
	zipf_init(&g->zipf, ntracks, 1.1);
	for (r = 0; r < NREGIONS; r++)
	{
		g->region_users[r] = region_user_count(nusers, r);
		zones[r] = pg_tzset(region_zones[r]);
		if (zones[r] == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("time zone \"%s\" is not known to this server",
							region_zones[r])));
	}

	g->nseg = (int) Min((int64) MAX_SEGMENTS,
						Max((int64) 1, g->duration / USECS_PER_MINUTE));
	g->seglen = (double) g->duration / g->nseg;
	g->cum = palloc(sizeof(double) * g->nseg);
	g->regcum = palloc(sizeof(double) * g->nseg * NREGIONS);

	for (i = 0; i < g->nseg; i++)
	{
		TimestampTz mid = start + (int64) (g->seglen * (i + 0.5));
		int64		utc_hour = mid / USECS_PER_HOUR - (mid % USECS_PER_HOUR < 0);
		double		acc = 0.0;

		/* the zones here change offset on whole UTC hours only */
		if (utc_hour != cached_hour)
		{
			for (r = 0; r < NREGIONS; r++)
				offsets[r] = zone_offset(zones[r], mid);
			cached_hour = utc_hour;
		}
		for (r = 0; r < NREGIONS; r++)
		{
			int64		local = mid / USECS_PER_SEC + offsets[r];
			int			hour = (int) (((local / SECS_PER_HOUR) % 24 + 24) % 24);

			if (g->region_users[r] > 0)
				acc += region_share[r] * hour_rhythm[hour];
			g->regcum[i * NREGIONS + r] = acc;
		}
		total += acc;
		g->cum[i] = total;
	}
}

/* event number i (0-based) */
static void
listen_gen_event(const ListenGen *g, int64 i, ListenEvent *ev)
{
	Rng			rng;
	double		target;
	int			lo,
				hi,
				seg;
	double		segstart,
				frac;
	const double *rc;
	int64		j;
	int			sub;
	const char *country;
	int			ureg;
	double		u;
	int32		dur;

	rng_init(&rng, g->seed, KIND_LISTEN, (uint64) i);

	/* instant: inverse of the cumulative intensity at (i + jitter) / n */
	target = ((double) i + rng_unit(&rng)) / (double) g->n * g->cum[g->nseg - 1];
	lo = 0;
	hi = g->nseg - 1;
	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (g->cum[mid] <= target)
			lo = mid + 1;
		else
			hi = mid;
	}
	seg = lo;
	segstart = seg > 0 ? g->cum[seg - 1] : 0.0;
	frac = (target - segstart) / (g->cum[seg] - segstart);
	if (frac < 0.0)
		frac = 0.0;
	else if (frac >= 1.0)
		frac = 0.999999;
	ev->ts = g->start + (int64) (g->seglen * (seg + frac));

	/* region by the regions' intensities in that segment, then a user */
	rc = &g->regcum[seg * NREGIONS];
	ev->region = pick_cum(rc, NREGIONS, rng_unit(&rng));
	u = rng_unit(&rng);
	j = (int64) (u * u * (double) g->region_users[ev->region]);
	ev->user = region_user(ev->region, j, g->nusers);
	user_fixed(ev->user, &ureg, &country, &sub);

	ev->track = zipf_sample(&g->zipf, &rng);
	ev->device = pick_cum(device_cum, NDEVICES, rng_unit(&rng));

	u = rng_unit(&rng);
	if (u < sub_skip[sub])
		ev->action = 1;
	else if (u < sub_skip[sub] + sub_like[sub])
		ev->action = 2;
	else
		ev->action = 0;

	dur = track_duration_ms(ev->track);
	u = rng_unit(&rng);
	if (ev->action == 1)
		ev->ms_played = Min(dur - 1, 1000 + (int32) (u * 29000.0));
	else if (ev->action == 2)
		ev->ms_played = dur;
	else if (u < device_complete[ev->device])
		ev->ms_played = dur;
	else
		ev->ms_played = (int32) (dur * (0.3 + 0.6 * rng_unit(&rng)));

	/* late: 60% 1-6 hours, 30% 6-48 hours, 10% 2-6 days back */
	if (g->late_share > 0.0 && rng_unit(&rng) < g->late_share)
	{
		double		v = rng_unit(&rng);
		double		w = rng_unit(&rng);
		double		hours;

		if (v < 0.6)
			hours = 1.0 + 5.0 * w;
		else if (v < 0.9)
			hours = 6.0 + 42.0 * w;
		else
			hours = 48.0 + 96.0 * w;
		ev->ts -= (int64) (hours * USECS_PER_HOUR);
	}
}


/* ISO 8601 in UTC with microseconds: 2026-11-22T01:02:03.456789Z */
static void
tb_timestamp(TextBuf *b, TimestampTz ts)
{
	int64		days = ts / USECS_PER_DAY;
	int64		rest = ts % USECS_PER_DAY;
	int			year,
				month,
				day;

	if (rest < 0)
	{
		rest += USECS_PER_DAY;
		days--;
	}
	j2date((int) days + POSTGRES_EPOCH_JDATE, &year, &month, &day);
	tb_uint(b, year, 4);
	tb_char(b, '-');
	tb_uint(b, month, 2);
	tb_char(b, '-');
	tb_uint(b, day, 2);
	tb_char(b, 'T');
	tb_uint(b, rest / USECS_PER_HOUR, 2);
	tb_char(b, ':');
	tb_uint(b, (rest / USECS_PER_MINUTE) % 60, 2);
	tb_char(b, ':');
	tb_uint(b, (rest / USECS_PER_SEC) % 60, 2);
	tb_char(b, '.');
	tb_uint(b, rest % USECS_PER_SEC, 6);
	tb_char(b, 'Z');
}

static void
tb_event_id(TextBuf *b, int32 seed, int64 i)
{
	tb_reset(b);
	tb_char(b, 'e');
	tb_int(b, seed);
	tb_char(b, '-');
	tb_uint(b, (uint64) i, 0);
}



static void
listen_gen_from_args(FunctionCallInfo fcinfo, ListenGen *g)
{
	listen_gen_init(g, PG_GETARG_INT32(2), PG_GETARG_INT64(0),
					PG_GETARG_TIMESTAMPTZ(1), PG_GETARG_INTERVAL_P(3),
					PG_GETARG_INT32(4), PG_GETARG_INT32(5),
					PG_GETARG_FLOAT8(6));
}

/*
 * synthetic_listens(n, start, seed, duration, tracks, users, late_share)
 *	  → (event_id, user_id, track_id, listened_at, ms_played, action,
 *		 region, device)
 */
Datum
streamkpi_synthetic_listens(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ListenGen	g;
	ListenEvent ev;
	Datum	   *actions,
			   *regions,
			   *devices;
	TextBuf    *eid,
			   *uid,
			   *tid;
	Datum		values[8];
	bool		nulls[8] = {false};
	int64		i;

	listen_gen_from_args(fcinfo, &g);
	InitMaterializedSRF(fcinfo, 0);

	actions = text_datums(action_names, NACTIONS);
	regions = text_datums(region_names, NREGIONS);
	devices = text_datums(device_names, NDEVICES);
	eid = palloc(sizeof(TextBuf));
	uid = palloc(sizeof(TextBuf));
	tid = palloc(sizeof(TextBuf));

	for (i = 0; i < g.n; i++)
	{
		if ((i % INTERRUPT_EVERY) == 0)
			CHECK_FOR_INTERRUPTS();
		listen_gen_event(&g, i, &ev);
		tb_event_id(eid, g.seed, i);
		tb_id(uid, 'u', ev.user);
		tb_id(tid, 't', ev.track);
		values[0] = tb_datum(eid);
		values[1] = tb_datum(uid);
		values[2] = tb_datum(tid);
		values[3] = TimestampTzGetDatum(ev.ts);
		values[4] = Int32GetDatum(ev.ms_played);
		values[5] = actions[ev.action];
		values[6] = regions[ev.region];
		values[7] = devices[ev.device];
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* one valid event as a JSON object */
static void
tb_event_json(TextBuf *b, int32 seed, int64 i, const ListenEvent *ev)
{
	tb_reset(b);
	tb_str(b, "{\"event_id\":\"e");
	tb_int(b, seed);
	tb_char(b, '-');
	tb_uint(b, (uint64) i, 0);
	tb_str(b, "\",\"user_id\":\"u");
	tb_uint(b, (uint64) ev->user, 0);
	tb_str(b, "\",\"track_id\":\"t");
	tb_uint(b, (uint64) ev->track, 0);
	tb_str(b, "\",\"listened_at\":\"");
	tb_timestamp(b, ev->ts);
	tb_str(b, "\",\"ms_played\":");
	tb_int(b, ev->ms_played);
	tb_str(b, ",\"action\":\"");
	tb_str(b, action_names[ev->action]);
	tb_str(b, "\",\"region\":\"");
	tb_str(b, region_names[ev->region]);
	tb_str(b, "\",\"device\":\"");
	tb_str(b, device_names[ev->device]);
	tb_str(b, "\"}");
}

/*
 * Replace a valid line by a malformed one of kind 0..4:
 * truncated JSON, not JSON, bad timestamp, non-numeric ms_played, bad UTF-8.
 */
static void
tb_malform(TextBuf *b, int kind, const ListenEvent *ev)
{
	switch (kind)
	{
		case 0:
			b->len = b->len / 2;
			break;
		case 1:
			tb_reset(b);
			tb_str(b, "user=u");
			tb_uint(b, (uint64) ev->user, 0);
			tb_str(b, " track=t");
			tb_uint(b, (uint64) ev->track, 0);
			tb_str(b, " action=");
			tb_str(b, action_names[ev->action]);
			break;
		case 2:
			tb_reset(b);
			tb_str(b, "{\"user_id\":\"u");
			tb_uint(b, (uint64) ev->user, 0);
			tb_str(b, "\",\"track_id\":\"t");
			tb_uint(b, (uint64) ev->track, 0);
			tb_str(b, "\",\"listened_at\":\"yesterday at noonish\",\"action\":\"play\"}");
			break;
		case 3:
			tb_reset(b);
			tb_str(b, "{\"user_id\":\"u");
			tb_uint(b, (uint64) ev->user, 0);
			tb_str(b, "\",\"track_id\":\"t");
			tb_uint(b, (uint64) ev->track, 0);
			tb_str(b, "\",\"listened_at\":\"");
			tb_timestamp(b, ev->ts);
			tb_str(b, "\",\"ms_played\":\"three minutes\",\"action\":\"play\"}");
			break;
		default:
			tb_reset(b);
			tb_str(b, "{\"user_id\":\"u");
			tb_uint(b, (uint64) ev->user, 0);
			tb_str(b, "\",\"track_id\":\"t");
			tb_uint(b, (uint64) ev->track, 0);
			tb_str(b, "\",\"device\":\"\xff\xfe\",\"listened_at\":\"");
			tb_timestamp(b, ev->ts);
			tb_str(b, "\"}");
			break;
	}
}

/*
 * synthetic_listen_lines(n, start, seed, duration, tracks, users,
 *						  late_share, malformed_share) → (key, payload)
 *	  The same events as synthetic_listens with the same arguments, as JSON
 *	  payloads keyed by user_id; a malformed_share of them replaced by
 *	  malformed payloads (key NULL for those that are not JSON at all).
 */
Datum
streamkpi_synthetic_listen_lines(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ListenGen	g;
	ListenEvent ev;
	double		malformed_share = PG_GETARG_FLOAT8(7);
	TextBuf    *key,
			   *line;
	Datum		values[2];
	bool		nulls[2] = {false};
	int64		i;

	listen_gen_from_args(fcinfo, &g);
	check_share(malformed_share, "malformed_share");
	InitMaterializedSRF(fcinfo, 0);

	key = palloc(sizeof(TextBuf));
	line = palloc(sizeof(TextBuf));

	for (i = 0; i < g.n; i++)
	{
		if ((i % INTERRUPT_EVERY) == 0)
			CHECK_FOR_INTERRUPTS();
		listen_gen_event(&g, i, &ev);
		tb_id(key, 'u', ev.user);
		tb_event_json(line, g.seed, i, &ev);
		nulls[0] = false;
		if (malformed_share > 0.0)
		{
			Rng			r;

			rng_init(&r, g.seed, KIND_MALFORMED, (uint64) i);
			if (rng_unit(&r) < malformed_share)
			{
				int			kind = (int) rng_below(&r, 5);

				tb_malform(line, kind, &ev);
				nulls[0] = (kind == 1);
			}
		}
		values[0] = tb_datum(key);
		values[1] = tb_datum(line);		/* bytea has text's layout */
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}


/*
 * synthetic_tracks(n, seed) → (track_id, track_name, artists, album, genre,
 *								duration_ms)
 *	  An artist has about eight tracks and one genre; a track has one or two
 *	  artists.
 */
Datum
streamkpi_synthetic_tracks(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		n = PG_GETARG_INT32(0);
	int32		seed = PG_GETARG_INT32(1);
	int64		nartists;
	Datum	   *genres;
	TextBuf    *tid,
			   *name,
			   *artists,
			   *album;
	Datum		values[6];
	bool		nulls[6] = {false};
	int64		k;

	check_count(n, "n", 0);
	InitMaterializedSRF(fcinfo, 0);
	nartists = Max((int64) 1, n / 8);
	genres = text_datums(genre_names, NGENRES);
	tid = palloc(sizeof(TextBuf));
	name = palloc(sizeof(TextBuf));
	artists = palloc(sizeof(TextBuf));
	album = palloc(sizeof(TextBuf));

	for (k = 1; k <= n; k++)
	{
		Rng			r;
		Rng			ar;
		int64		artist;
		int			genre;

		if ((k % INTERRUPT_EVERY) == 0)
			CHECK_FOR_INTERRUPTS();
		rng_init(&r, seed, KIND_TRACK, (uint64) k);
		artist = (int64) rng_below(&r, (uint64) nartists);
		/* the artist's genre */
		rng_init(&ar, seed, KIND_ARTIST + 100, (uint64) artist);
		genre = pick_cum(genre_cum, NGENRES, rng_unit(&ar));

		tb_id(tid, 't', k);
		tb_reset(name);
		tb_str(name, title_a[rng_below(&r, 32)]);
		tb_char(name, ' ');
		tb_str(name, title_b[rng_below(&r, 32)]);
		tb_reset(artists);
		tb_artist(artists, seed, artist);
		if (rng_unit(&r) < 0.15)
		{
			int64		featured = (int64) rng_below(&r, (uint64) nartists);

			if (featured != artist)
			{
				tb_str(artists, ", ");
				tb_artist(artists, seed, featured);
			}
		}
		tb_reset(album);
		tb_str(album, title_b[rng_below(&r, 32)]);
		tb_str(album, " of ");
		tb_str(album, title_a[rng_below(&r, 32)]);
		tb_char(album, ' ');
		tb_str(album, title_b[rng_below(&r, 32)]);

		values[0] = tb_datum(tid);
		values[1] = tb_datum(name);
		values[2] = tb_datum(artists);
		values[3] = tb_datum(album);
		values[4] = genres[genre];
		values[5] = Int32GetDatum(track_duration_ms(k));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * synthetic_users(n, seed) → (user_id, user_name, age, gender, country,
 *							   subscription, created_at)
 */
Datum
streamkpi_synthetic_users(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		n = PG_GETARG_INT32(0);
	int32		seed = PG_GETARG_INT32(1);
	Datum	   *subs;
	Datum		genders[3];
	TextBuf    *uid,
			   *name,
			   *country;
	Datum		values[7];
	bool		nulls[7] = {false};
	int			first_day = date2j(2015, 1, 1) - POSTGRES_EPOCH_JDATE;
	int			last_day = date2j(2025, 12, 31) - POSTGRES_EPOCH_JDATE;
	int64		k;

	check_count(n, "n", 0);
	InitMaterializedSRF(fcinfo, 0);
	subs = text_datums(sub_names, NSUBS);
	genders[0] = CStringGetTextDatum("female");
	genders[1] = CStringGetTextDatum("male");
	genders[2] = CStringGetTextDatum("non-binary");
	uid = palloc(sizeof(TextBuf));
	name = palloc(sizeof(TextBuf));
	country = palloc(sizeof(TextBuf));

	for (k = 1; k <= n; k++)
	{
		Rng			r;
		int			region,
					sub;
		const char *cc;
		double		u;

		if ((k % INTERRUPT_EVERY) == 0)
			CHECK_FOR_INTERRUPTS();
		user_fixed(k, &region, &cc, &sub);
		rng_init(&r, seed, KIND_USER, (uint64) k);

		tb_id(uid, 'u', k);
		tb_reset(name);
		tb_str(name, first_names[rng_below(&r, 32)]);
		tb_char(name, ' ');
		tb_str(name, last_names[rng_below(&r, 32)]);
		tb_reset(country);
		tb_str(country, cc);

		values[0] = tb_datum(uid);
		values[1] = tb_datum(name);
		/* 6% 13..17, the others 18..75, most of them under 35 */
		u = rng_unit(&r);
		if (u < 0.06)
			values[2] = Int32GetDatum(13 + (int32) (u / 0.06 * 5.0));
		else
			values[2] = Int32GetDatum(18 + (int32) (pow((u - 0.06) / 0.94, 2.2) * 58.0));
		u = rng_unit(&r);
		values[3] = genders[u < 0.48 ? 0 : u < 0.96 ? 1 : 2];
		values[4] = tb_datum(country);
		values[5] = subs[sub];
		values[6] = DateADTGetDatum(first_day +
									(int) rng_below(&r, (uint64) (last_day - first_day + 1)));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
