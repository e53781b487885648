/*-------------------------------------------------------------------------
 *
 * synthetic_sparkify.c
 *	  Synthetic Sparkify traffic (DESIGN §8): the app's page events and a
 *	  song catalogue shaped like the Million Song Dataset's, deterministic
 *	  by seed.
 *
 *	  The model:
 *	  - songs 1..S: title, artist (four songs each), duration and year
 *		depend on the song number only, so the plays of any seed match a
 *		catalogue of any size that holds them; popularity is Zipf(1.1).
 *	  - users "1".."U": name, gender, location, browser, first level,
 *		registration and a churn risk in [0, 1) depend on (seed, user).  A
 *		risky user plays fewer songs per session, gives more Thumbs Down,
 *		sees more adverts when free, downgrades and cancels more often.
 *	  - each user's sessions are a Poisson process over [start, start +
 *		duration), at a rate skewed by user and scaled so that the window
 *		holds about n events.  A session is a run of pages, NextSong most,
 *		each song lasting its duration, other pages 5-60 s; 30% begin
 *		logged out (Home, Login), half end with Logout.
 *	  - Upgrade and Downgrade pages sometimes lead to Submit Upgrade or
 *		Submit Downgrade; the level changes from the next event on.
 *	  - cancel_share of the users (the risky ones more likely) cancel at an
 *		instant of the window: a session then ends with Cancel and
 *		Cancellation Confirmation, and the user never comes back.
 *	  - new_user_share of the users register inside the window and start
 *		their first session then; the others registered 1-120 days before.
 *	  Events come out in event-time order (ties by user number) and stop
 *	  after n; each user draws from a random stream of its own, so the rows
 *	  depend on the arguments only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "synthetic.h"

PG_FUNCTION_INFO_V1(streamkpi_synthetic_sparkify_events);
PG_FUNCTION_INFO_V1(streamkpi_synthetic_sparkify_lines);
PG_FUNCTION_INFO_V1(streamkpi_synthetic_sparkify_songs);

/* ---------------------------------------------------------------------
 * The model's constants
 */

typedef enum SpkPage
{
	P_NEXT_SONG,
	P_HOME,
	P_THUMBS_UP,
	P_THUMBS_DOWN,
	P_ADD_TO_PLAYLIST,
	P_ADD_FRIEND,
	P_ROLL_ADVERT,
	P_UPGRADE,
	P_SUBMIT_UPGRADE,
	P_DOWNGRADE,
	P_SUBMIT_DOWNGRADE,
	P_SETTINGS,
	P_SAVE_SETTINGS,
	P_HELP,
	P_ABOUT,
	P_ERROR,
	P_LOGOUT,
	P_LOGIN,
	P_CANCEL,
	P_CANCELLATION_CONFIRMATION,
	NPAGES,
	P_NONE = -1
} SpkPage;

typedef struct SpkPageInfo
{
	const char *name;
	const char *method;
	int			status;
} SpkPageInfo;

static const SpkPageInfo page_info[NPAGES] = {
	{"NextSong", "PUT", 200}, {"Home", "GET", 200},
	{"Thumbs Up", "PUT", 307}, {"Thumbs Down", "PUT", 307},
	{"Add to Playlist", "PUT", 200}, {"Add Friend", "PUT", 307},
	{"Roll Advert", "GET", 200}, {"Upgrade", "GET", 200},
	{"Submit Upgrade", "PUT", 307}, {"Downgrade", "GET", 200},
	{"Submit Downgrade", "PUT", 307}, {"Settings", "GET", 200},
	{"Save Settings", "PUT", 307}, {"Help", "GET", 200},
	{"About", "GET", 200}, {"Error", "GET", 404},
	{"Logout", "PUT", 307}, {"Login", "PUT", 307},
	{"Cancel", "PUT", 307}, {"Cancellation Confirmation", "GET", 200}
};

#define AUTH_IN		0
#define AUTH_OUT	1
#define AUTH_CANCELLED 2
static const char *const auth_names[3] = {"Logged In", "Logged Out", "Cancelled"};
static const char *const level_names[2] = {"free", "paid"};

#define NLOCATIONS	16
static const char *const locations[NLOCATIONS] = {
	"New York-Newark-Jersey City, NY-NJ-PA", "Los Angeles-Long Beach-Anaheim, CA",
	"Chicago-Naperville-Elgin, IL-IN-WI", "Dallas-Fort Worth-Arlington, TX",
	"Houston-The Woodlands-Sugar Land, TX", "Atlanta-Sandy Springs-Roswell, GA",
	"San Francisco-Oakland-Hayward, CA", "Phoenix-Mesa-Scottsdale, AZ",
	"Seattle-Tacoma-Bellevue, WA", "Boston-Cambridge-Newton, MA-NH",
	"Miami-Fort Lauderdale-West Palm Beach, FL", "Denver-Aurora-Lakewood, CO",
	"Portland-Vancouver-Hillsboro, OR-WA", "Detroit-Warren-Dearborn, MI",
	"Minneapolis-St. Paul-Bloomington, MN-WI", "Tampa-St. Petersburg-Clearwater, FL"
};
static const double location_lat[NLOCATIONS] = {
	40.71, 34.05, 41.88, 32.78, 29.76, 33.75, 37.77, 33.45,
	47.61, 42.36, 25.76, 39.74, 45.52, 42.33, 44.98, 27.95
};
static const double location_lon[NLOCATIONS] = {
	-74.01, -118.24, -87.63, -96.80, -95.37, -84.39, -122.42, -112.07,
	-122.33, -71.06, -80.19, -104.99, -122.68, -83.05, -93.27, -82.46
};

#define NAGENTS		6
static const char *const agents[NAGENTS] = {
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_4) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.143 Safari/537.36",
	"Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.143 Safari/537.36",
	"Mozilla/5.0 (Windows NT 6.1; WOW64; rv:31.0) Gecko/20100101 Firefox/31.0",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 7_1_2 like Mac OS X) AppleWebKit/537.51.2 (KHTML, like Gecko) Version/7.0 Mobile/11D257 Safari/9537.53",
	"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Ubuntu Chromium/36.0.1985.125 Chrome/36.0.1985.125 Safari/537.36",
	"Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; WOW64; Trident/6.0)"
};

/* events of an average session, for scaling the session rate to n */
#define EVENTS_PER_SESSION	22.0
#define SONGS_PER_ARTIST	4
#define MS_PER_DAY			INT64CONST(86400000)

/* ---------------------------------------------------------------------
 * Songs: everything depends on the song number only
 */

typedef struct SpkSong
{
	int64		artist;
	int32		duration_ms;
	int			year;			/* 0: unknown, as in the catalogue */
	int			title_a;
	int			title_b;
} SpkSong;

static void
song_of(int64 k, SpkSong *s)
{
	Rng			r;

	rng_init(&r, 0, KIND_SPARKIFY_SONG, (uint64) k);
	s->artist = (k - 1) / SONGS_PER_ARTIST + 1;
	s->duration_ms = 90000 + (int32) ((rng_unit(&r) + rng_unit(&r)) * 165000.0);
	s->year = rng_unit(&r) < 0.4 ? 0 : 1960 + (int) rng_below(&r, 59);
	s->title_a = (int) rng_below(&r, 32);
	s->title_b = (int) rng_below(&r, 32);
}

static void
tb_song_title(TextBuf *b, const SpkSong *s)
{
	tb_reset(b);
	tb_str(b, title_a[s->title_a]);
	tb_char(b, ' ');
	tb_str(b, title_b[s->title_b]);
}

static void
tb_song_artist(TextBuf *b, const SpkSong *s)
{
	tb_reset(b);
	tb_artist(b, 0, s->artist);
}

/* "SOSPK0000000000042", "ARSPK0000000000011": 18 characters like MSD ids */
static void
tb_msd_id(TextBuf *b, const char *prefix, int64 k)
{
	tb_reset(b);
	tb_str(b, prefix);
	tb_uint(b, (uint64) k, 13);
}

/* ---------------------------------------------------------------------
 * Users and the event generator
 */

typedef struct SpkUser
{
	Rng			rng;			/* the user's own stream */
	int64		next_ms;		/* when the next event or session happens */
	int64		cancel_ms;		/* -1: never cancels */
	int64		registered_ms;
	int64		session_id;
	double		gap_ms;			/* mean time between sessions */
	float		risk;
	int32		item;			/* next itemInSession; -1 between sessions */
	int32		songs_left;
	int8		pending;		/* the page that must come next, or P_NONE */
	bool		paid;
	bool		logged_in;
	bool		cancelling;		/* this session ends with a cancellation */
	uint8		first,
				last,
				location,
				agent;
	char		gender;
} SpkUser;

typedef struct SpkGen
{
	int32		seed;
	int64		n;
	int64		start_ms;
	int64		end_ms;
	int64		nusers;
	int64		nsongs;
	double		cancel_share;
	double		new_user_share;
	Zipf		zipf;
	SpkUser    *users;			/* users[0] is user "1" */
	int64	   *heap;			/* user indexes, earliest next_ms first */
	int64		heap_len;
	int64		emitted;
} SpkGen;

typedef struct SpkEvent
{
	int64		ts_ms;
	int64		user;			/* index into users */
	int64		session_id;
	int32		item;
	int			page;
	int			auth;
	bool		paid;
	int64		song;			/* 0: none */
} SpkEvent;

static inline bool
heap_before(const SpkGen *g, int64 a, int64 b)
{
	return g->users[a].next_ms < g->users[b].next_ms ||
		(g->users[a].next_ms == g->users[b].next_ms && a < b);
}

/* restore the heap order from position i downwards */
static void
heap_sift_down(SpkGen *g, int64 i)
{
	for (;;)
	{
		int64		l = 2 * i + 1;
		int64		m = i;
		int64		t;

		if (l < g->heap_len && heap_before(g, g->heap[l], g->heap[m]))
			m = l;
		if (l + 1 < g->heap_len && heap_before(g, g->heap[l + 1], g->heap[m]))
			m = l + 1;
		if (m == i)
			return;
		t = g->heap[i];
		g->heap[i] = g->heap[m];
		g->heap[m] = t;
		i = m;
	}
}

/* exponential with the given mean */
static inline double
rng_exp(Rng *r, double mean)
{
	return -mean * log(1.0 - rng_unit(r));
}

/* schedule the user's next session after end_ms, or its cancellation */
static void
user_next_session(SpkUser *u, int64 after_ms)
{
	u->item = -1;
	u->next_ms = after_ms + (int64) rng_exp(&u->rng, u->gap_ms);
	if (u->cancel_ms >= 0 && u->next_ms >= u->cancel_ms)
		u->next_ms = Max(u->cancel_ms, after_ms + 1000);
}

/* user k's fixed attributes and first session; returns its session weight */
static double
user_init(SpkGen *g, int64 k, SpkUser *u)
{
	double		weight;

	rng_init(&u->rng, g->seed, KIND_SPARKIFY_USER, (uint64) k);
	u->first = (uint8) rng_below(&u->rng, 32);
	u->last = (uint8) rng_below(&u->rng, 32);
	u->gender = rng_unit(&u->rng) < 0.5 ? 'F' : 'M';
	u->location = (uint8) rng_below(&u->rng, NLOCATIONS);
	u->agent = (uint8) rng_below(&u->rng, NAGENTS);
	u->risk = (float) rng_unit(&u->rng);
	u->paid = rng_unit(&u->rng) < 0.65 - 0.3 * u->risk;
	u->pending = P_NONE;
	u->item = -1;
	/* a few heavy users, many light ones */
	weight = 0.15 + 3.0 * pow(rng_unit(&u->rng), 3.0);

	if (rng_unit(&u->rng) < g->new_user_share)
		u->registered_ms = g->start_ms +
			(int64) (rng_unit(&u->rng) * (double) (g->end_ms - g->start_ms));
	else
		u->registered_ms = g->start_ms - MS_PER_DAY -
			(int64) (rng_unit(&u->rng) * 119.0 * (double) MS_PER_DAY);
	u->cancel_ms = -1;
	if (rng_unit(&u->rng) < Min(1.0, g->cancel_share * 2.0 * u->risk))
		u->cancel_ms = Max(u->registered_ms, g->start_ms) +
			(int64) (rng_unit(&u->rng) *
					 (double) (g->end_ms - Max(u->registered_ms, g->start_ms)));
	return weight;
}

/* Users, their session rates and the heap of their first events. */
static void
spk_gen_users(SpkGen *g)
{
	double	   *weights = palloc(sizeof(double) * g->nusers);
	double		total = 0.0;
	double		sessions = (double) g->n * 1.15 / EVENTS_PER_SESSION;
	double		window = (double) (g->end_ms - g->start_ms);

	g->users = palloc0(sizeof(SpkUser) * g->nusers);
	g->heap = palloc(sizeof(int64) * g->nusers);
	for (int64 i = 0; i < g->nusers; i++)
	{
		if ((i % INTERRUPT_EVERY) == 0)
			CHECK_FOR_INTERRUPTS();
		weights[i] = user_init(g, i + 1, &g->users[i]);
		total += weights[i];
	}
	for (int64 i = 0; i < g->nusers; i++)
	{
		SpkUser    *u = &g->users[i];

		u->gap_ms = window * total / (Max(sessions, 1.0) * weights[i]);
		if (u->registered_ms >= g->start_ms)
			u->next_ms = u->registered_ms;	/* a new user starts at once */
		else
			user_next_session(u, g->start_ms);
		if (u->next_ms < g->end_ms)
			g->heap[g->heap_len++] = i;
	}
	for (int64 i = g->heap_len / 2; i >= 0; i--)
		heap_sift_down(g, i);
	pfree(weights);
}

static void
spk_gen_init(SpkGen *g, FunctionCallInfo fcinfo)
{
	TimestampTz start = PG_GETARG_TIMESTAMPTZ(1);
	int64		duration_us;

	memset(g, 0, sizeof(*g));
	g->n = PG_GETARG_INT64(0);
	g->seed = PG_GETARG_INT32(2);
	duration_us = check_window(start, PG_GETARG_INTERVAL_P(3));
	g->nusers = PG_GETARG_INT32(4);
	g->nsongs = PG_GETARG_INT32(5);
	g->cancel_share = PG_GETARG_FLOAT8(6);
	g->new_user_share = PG_GETARG_FLOAT8(7);
	check_count(g->n, "n", 0);
	check_count(g->nusers, "users", 1);
	check_count(g->nsongs, "songs", 1);
	check_share(g->cancel_share, "cancel_share");
	check_share(g->new_user_share, "new_user_share");

	/* Sparkify's times are epoch milliseconds */
	g->start_ms = start / 1000 + (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * MS_PER_DAY;
	g->end_ms = g->start_ms + duration_us / 1000;
	zipf_init(&g->zipf, g->nsongs, 1.1);
	spk_gen_users(g);
}

/* a page other than NextSong, drawn by the user's level and risk */
static int
draw_other_page(SpkUser *u)
{
	double		risk = u->risk;
	double		w[NPAGES] = {0};
	double		total = 0.0;
	double		x;
	int			p;

	w[P_HOME] = 0.25;
	w[P_THUMBS_UP] = 0.35 - 0.25 * risk;
	w[P_THUMBS_DOWN] = 0.03 + 0.25 * risk;
	w[P_ADD_TO_PLAYLIST] = 0.20 - 0.1 * risk;
	w[P_ADD_FRIEND] = 0.12 - 0.08 * risk;
	w[P_ROLL_ADVERT] = u->paid ? 0.01 : 0.25 + 0.35 * risk;
	w[P_UPGRADE] = u->paid ? 0.0 : 0.05 - 0.03 * risk;
	w[P_DOWNGRADE] = u->paid ? 0.02 + 0.1 * risk : 0.0;
	w[P_SETTINGS] = 0.04;
	w[P_HELP] = 0.03 + 0.04 * risk;
	w[P_ABOUT] = 0.02;
	w[P_ERROR] = 0.008;
	for (p = 0; p < NPAGES; p++)
		total += w[p];
	x = rng_unit(&u->rng) * total;
	for (p = 0; p < NPAGES - 1; p++)
	{
		if (x < w[p])
			return p;
		x -= w[p];
	}
	return P_HOME;
}

/* start a session at u->next_ms: its first page */
static int
session_start(SpkUser *u, int64 user)
{
	u->item = 0;
	u->session_id = (u->next_ms / 1000) * 10000 + user % 10000;
	u->cancelling = u->cancel_ms >= 0 && u->next_ms >= u->cancel_ms;
	u->songs_left = 1 + (int32) rng_exp(&u->rng, 23.0 - 16.0 * u->risk);
	u->logged_in = u->cancelling || rng_unit(&u->rng) >= 0.3;
	if (!u->logged_in)
		u->pending = P_LOGIN;
	return P_HOME;
}

/* the page of the user's next event in the session; P_NONE: it just ends */
static int
session_page(SpkUser *u)
{
	int			p = u->pending;

	if (p != P_NONE)
	{
		u->pending = P_NONE;
		return p;
	}
	if (u->cancelling)
		return P_CANCEL;
	if (u->songs_left <= 0)
		return rng_unit(&u->rng) < 0.5 ? P_LOGOUT : P_NONE;
	if (rng_unit(&u->rng) < 0.8)
		return P_NEXT_SONG;
	return draw_other_page(u);
}

/* what follows a page: the time to the next event, forced pages, level */
static void
after_page(SpkGen *g, SpkUser *u, int page, int64 song)
{
	double		risk = u->risk;

	switch (page)
	{
		case P_NEXT_SONG:
			{
				SpkSong		s;

				song_of(song, &s);
				u->songs_left--;
				u->next_ms += s.duration_ms;
				return;
			}
		case P_LOGIN:
			u->logged_in = true;
			u->pending = P_HOME;
			break;
		case P_UPGRADE:
			if (rng_unit(&u->rng) < 0.5 - 0.3 * risk)
				u->pending = P_SUBMIT_UPGRADE;
			break;
		case P_SUBMIT_UPGRADE:
			u->paid = true;
			break;
		case P_DOWNGRADE:
			if (rng_unit(&u->rng) < 0.1 + 0.4 * risk)
				u->pending = P_SUBMIT_DOWNGRADE;
			break;
		case P_SUBMIT_DOWNGRADE:
			u->paid = false;
			break;
		case P_SETTINGS:
			if (rng_unit(&u->rng) < 0.3)
				u->pending = P_SAVE_SETTINGS;
			break;
		case P_CANCEL:
			u->pending = P_CANCELLATION_CONFIRMATION;
			break;
		case P_CANCELLATION_CONFIRMATION:
			u->next_ms = g->end_ms;		/* gone for good */
			return;
		case P_LOGOUT:
			user_next_session(u, u->next_ms);
			return;
		default:
			break;
	}
	u->next_ms += 5000 + (int64) rng_below(&u->rng, 55000);
}

/*
 * Advance the earliest user by one step.  True when that step is an event
 * (filled into ev); a session may also just end, without an event.
 */
static bool
spk_step(SpkGen *g, SpkEvent *ev)
{
	int64		i = g->heap[0];
	SpkUser    *u = &g->users[i];
	int			page;
	bool		produced = false;

	page = u->item < 0 ? session_start(u, i + 1) : session_page(u);
	if (page == P_NONE)
		user_next_session(u, u->next_ms);
	else
	{
		ev->ts_ms = u->next_ms;
		ev->user = i;
		ev->session_id = u->session_id;
		ev->item = u->item++;
		ev->page = page;
		ev->auth = page == P_CANCELLATION_CONFIRMATION ? AUTH_CANCELLED :
			u->logged_in ? AUTH_IN : AUTH_OUT;
		ev->paid = u->paid;
		ev->song = page == P_NEXT_SONG ? zipf_sample(&g->zipf, &u->rng) : 0;
		after_page(g, u, page, ev->song);
		produced = true;
	}

	if (u->next_ms >= g->end_ms)
		g->heap[0] = g->heap[--g->heap_len];
	heap_sift_down(g, 0);
	return produced;
}

/* the next event in event-time order; false when there is none */
static bool
spk_next(SpkGen *g, SpkEvent *ev)
{
	while (g->emitted < g->n && g->heap_len > 0)
	{
		if (spk_step(g, ev))
		{
			if ((g->emitted++ % INTERRUPT_EVERY) == 0)
				CHECK_FOR_INTERRUPTS();
			return true;
		}
	}
	return false;
}

static TimestampTz
ms_timestamptz(int64 ms)
{
	return ms * 1000 - (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
}

/* ---------------------------------------------------------------------
 * Typed rows: synthetic_sparkify_events
 */

/* constant datums, made once per call; user agents keep the app's quotes */
typedef struct SpkDatums
{
	Datum	   *pages;
	Datum	   *methods;
	Datum	   *auths;
	Datum	   *levels;
	Datum	   *locations;
	Datum	   *agents;
	Datum	   *first_names;
	Datum	   *last_names;
	Datum		female;
	Datum		male;
	Datum		empty;
	TextBuf    *uid;
	TextBuf    *song;
	TextBuf    *artist;
} SpkDatums;

static void
spk_datums_init(SpkDatums *d)
{
	const char *names[NPAGES];

	for (int p = 0; p < NPAGES; p++)
		names[p] = page_info[p].name;
	d->pages = text_datums(names, NPAGES);
	for (int p = 0; p < NPAGES; p++)
		names[p] = page_info[p].method;
	d->methods = text_datums(names, NPAGES);
	d->auths = text_datums(auth_names, 3);
	d->levels = text_datums(level_names, 2);
	d->locations = text_datums(locations, NLOCATIONS);
	d->agents = palloc(sizeof(Datum) * NAGENTS);
	for (int a = 0; a < NAGENTS; a++)
		d->agents[a] = CStringGetTextDatum(psprintf("\"%s\"", agents[a]));
	d->first_names = text_datums(first_names, 32);
	d->last_names = text_datums(last_names, 32);
	d->female = CStringGetTextDatum("F");
	d->male = CStringGetTextDatum("M");
	d->empty = CStringGetTextDatum("");
	d->uid = palloc(sizeof(TextBuf));
	d->song = palloc(sizeof(TextBuf));
	d->artist = palloc(sizeof(TextBuf));
}

/* the 18 columns of an event, in the order of the foreign table's columns */
static void
spk_event_values(const SpkGen *g, const SpkEvent *ev, SpkDatums *d,
				 Datum *values, bool *nulls)
{
	const SpkUser *u = &g->users[ev->user];
	bool		known = ev->auth != AUTH_OUT;

	memset(nulls, 0, sizeof(bool) * 18);
	values[0] = TimestampTzGetDatum(ms_timestamptz(ev->ts_ms));
	tb_reset(d->uid);
	if (known)
		tb_uint(d->uid, (uint64) (ev->user + 1), 0);
	values[1] = tb_datum(d->uid);	/* "" when logged out, as the app writes it */
	values[2] = Int64GetDatum(ev->session_id);
	values[3] = Int32GetDatum(ev->item);
	values[4] = d->pages[ev->page];
	values[5] = d->auths[ev->auth];
	values[6] = d->levels[ev->paid ? 1 : 0];
	values[7] = d->methods[ev->page];
	values[8] = Int32GetDatum(page_info[ev->page].status);
	values[9] = d->locations[u->location];
	values[10] = d->agents[u->agent];
	nulls[11] = nulls[12] = nulls[13] = ev->song == 0;
	if (ev->song != 0)
	{
		SpkSong		s;

		song_of(ev->song, &s);
		tb_song_title(d->song, &s);
		tb_song_artist(d->artist, &s);
		values[11] = tb_datum(d->song);
		values[12] = tb_datum(d->artist);
		values[13] = Float8GetDatum(s.duration_ms / 1000.0);
	}
	values[14] = d->first_names[u->first];
	values[15] = d->last_names[u->last];
	values[16] = u->gender == 'F' ? d->female : d->male;
	values[17] = TimestampTzGetDatum(ms_timestamptz(u->registered_ms));
	/* logged out: no user, as the app logs it */
	nulls[9] = nulls[10] = nulls[14] = nulls[15] = nulls[16] = nulls[17] = !known;
}

/*
 * synthetic_sparkify_events(n, start, seed, duration, users, songs,
 *							 cancel_share, new_user_share)
 *	  → the 18 fields of Sparkify's log lines, typed as the foreign table of
 *		create_sparkify_pipelines reads them
 */
Datum
streamkpi_synthetic_sparkify_events(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SpkGen		g;
	SpkEvent	ev;
	SpkDatums	d;
	Datum		values[18];
	bool		nulls[18];

	spk_gen_init(&g, fcinfo);
	InitMaterializedSRF(fcinfo, 0);
	spk_datums_init(&d);
	while (spk_next(&g, &ev))
	{
		spk_event_values(&g, &ev, &d, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* ---------------------------------------------------------------------
 * JSON lines: synthetic_sparkify_lines
 */

/* a JSON string; the texts here hold no control characters */
static void
tb_json_str(TextBuf *b, const char *s)
{
	tb_char(b, '"');
	for (; *s; s++)
	{
		if (*s == '"' || *s == '\\')
			tb_char(b, '\\');
		tb_char(b, *s);
	}
	tb_char(b, '"');
}

static void
tb_key(TextBuf *b, const char *key)
{
	if (b->len > 1)
		tb_char(b, ',');
	tb_json_str(b, key);
	tb_char(b, ':');
}

/* milliseconds as seconds with three decimals: 245123 -> 245.123 */
static void
tb_seconds(TextBuf *b, int64 ms)
{
	tb_uint(b, (uint64) (ms / 1000), 0);
	tb_char(b, '.');
	tb_uint(b, (uint64) (ms % 1000), 3);
}

/* a JSON string, or null for NULL */
static void
tb_json_opt(TextBuf *b, const char *s)
{
	if (s == NULL)
		tb_str(b, "null");
	else
		tb_json_str(b, s);
}

/*
 * One event as the app logs it: its 18 keys in the app's order.  Song
 * titles and artist names are written unescaped: the name lists hold no
 * character JSON escapes.
 */
static void
tb_event_line(TextBuf *b, const SpkGen *g, const SpkEvent *ev)
{
	const SpkUser *u = &g->users[ev->user];
	bool		known = ev->auth != AUTH_OUT;
	SpkSong		s;
	char		quoted[256];

	if (ev->song != 0)
		song_of(ev->song, &s);
	snprintf(quoted, sizeof(quoted), "\"%s\"", agents[u->agent]);
	tb_reset(b);
	tb_char(b, '{');
	tb_key(b, "artist");
	if (ev->song != 0)
	{
		tb_char(b, '"');
		tb_artist(b, 0, s.artist);
		tb_char(b, '"');
	}
	else
		tb_str(b, "null");
	tb_key(b, "auth");
	tb_json_str(b, auth_names[ev->auth]);
	tb_key(b, "firstName");
	tb_json_opt(b, known ? first_names[u->first] : NULL);
	tb_key(b, "gender");
	tb_json_opt(b, !known ? NULL : u->gender == 'F' ? "F" : "M");
	tb_key(b, "itemInSession");
	tb_int(b, ev->item);
	tb_key(b, "lastName");
	tb_json_opt(b, known ? last_names[u->last] : NULL);
	tb_key(b, "length");
	if (ev->song != 0)
		tb_seconds(b, s.duration_ms);
	else
		tb_str(b, "null");
	tb_key(b, "level");
	tb_json_str(b, level_names[ev->paid ? 1 : 0]);
	tb_key(b, "location");
	tb_json_opt(b, known ? locations[u->location] : NULL);
	tb_key(b, "method");
	tb_json_str(b, page_info[ev->page].method);
	tb_key(b, "page");
	tb_json_str(b, page_info[ev->page].name);
	tb_key(b, "registration");
	if (known)
	{
		tb_int(b, u->registered_ms);
		tb_str(b, ".0");
	}
	else
		tb_str(b, "null");
	tb_key(b, "sessionId");
	tb_int(b, ev->session_id);
	tb_key(b, "song");
	if (ev->song != 0)
	{
		tb_char(b, '"');
		tb_str(b, title_a[s.title_a]);
		tb_char(b, ' ');
		tb_str(b, title_b[s.title_b]);
		tb_char(b, '"');
	}
	else
		tb_str(b, "null");
	tb_key(b, "status");
	tb_int(b, page_info[ev->page].status);
	tb_key(b, "ts");
	tb_int(b, ev->ts_ms);
	tb_key(b, "userAgent");
	tb_json_opt(b, known ? quoted : NULL);
	tb_key(b, "userId");
	tb_char(b, '"');
	if (known)
		tb_uint(b, (uint64) (ev->user + 1), 0);
	tb_str(b, "\"}");
}

/*
 * Replace a line by a malformed one of kind 0..4: truncated JSON, not JSON,
 * a ts that is no number, no page, a sessionId that is no integer.
 */
static void
tb_malform(TextBuf *b, int kind, const SpkEvent *ev)
{
	if (kind == 0)
	{
		b->len = b->len / 2;
		return;
	}
	tb_reset(b);
	if (kind == 1)
	{
		tb_str(b, "page=");
		tb_str(b, page_info[ev->page].name);
		tb_str(b, " ts=");
		tb_int(b, ev->ts_ms);
		return;
	}
	tb_str(b, "{\"userId\":\"");
	tb_uint(b, (uint64) (ev->user + 1), 0);
	tb_str(b, kind == 3 ? "\",\"ts\":" : "\",\"page\":\"Home\",\"ts\":");
	if (kind == 2)
		tb_str(b, "\"in a minute\"");
	else
		tb_int(b, ev->ts_ms);
	if (kind == 4)
		tb_str(b, ",\"sessionId\":\"forty-two\"");
	tb_char(b, '}');
}

/*
 * synthetic_sparkify_lines(n, start, seed, duration, users, songs,
 *							cancel_share, new_user_share, malformed_share)
 *	  → (key, payload): the events of synthetic_sparkify_events with the
 *		same arguments as the app's JSON lines, keyed by userId (by
 *		"s" || sessionId when logged out); a malformed_share of them replaced
 *		by malformed lines.
 */
Datum
streamkpi_synthetic_sparkify_lines(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	double		malformed_share = PG_GETARG_FLOAT8(8);
	SpkGen		g;
	SpkEvent	ev;
	TextBuf    *key = palloc(sizeof(TextBuf));
	TextBuf    *line = palloc(sizeof(TextBuf));
	Datum		values[2];
	bool		nulls[2] = {false};

	spk_gen_init(&g, fcinfo);
	check_share(malformed_share, "malformed_share");
	InitMaterializedSRF(fcinfo, 0);
	while (spk_next(&g, &ev))
	{
		tb_reset(key);
		if (ev.auth == AUTH_OUT)
			tb_char(key, 's');
		tb_uint(key, (uint64) (ev.auth == AUTH_OUT ? ev.session_id : ev.user + 1), 0);
		tb_event_line(line, &g, &ev);
		if (malformed_share > 0.0)
		{
			Rng			r;

			rng_init(&r, g.seed, KIND_SPARKIFY_LINE, (uint64) g.emitted);
			if (rng_unit(&r) < malformed_share)
				tb_malform(line, (int) rng_below(&r, 5), &ev);
		}
		values[0] = tb_datum(key);
		values[1] = tb_datum(line);		/* bytea has text's layout */
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* ---------------------------------------------------------------------
 * The catalogue: synthetic_sparkify_songs
 */

/*
 * synthetic_sparkify_songs(n) → (song_id, title, artist_id, artist_name,
 *		artist_location, artist_latitude, artist_longitude, year, duration)
 *	  Songs 1..n as the plays of synthetic_sparkify_events name them.  Like
 *	  the Million Song Dataset: year 0 when unknown, an empty location and no
 *	  coordinates for two artists in five.
 */
Datum
streamkpi_synthetic_sparkify_songs(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		n = PG_GETARG_INT32(0);
	TextBuf    *bufs[4];
	Datum	   *places;
	Datum		empty = CStringGetTextDatum("");
	Datum		values[9];
	bool		nulls[9] = {false};

	check_count(n, "n", 0);
	InitMaterializedSRF(fcinfo, 0);
	places = text_datums(locations, NLOCATIONS);
	for (int i = 0; i < 4; i++)
		bufs[i] = palloc(sizeof(TextBuf));

	for (int64 k = 1; k <= n; k++)
	{
		SpkSong		s;
		Rng			ar;
		int			place = -1;

		if ((k % INTERRUPT_EVERY) == 0)
			CHECK_FOR_INTERRUPTS();
		song_of(k, &s);
		rng_init(&ar, 0, KIND_SPARKIFY_SONG + 100, (uint64) s.artist);
		if (rng_unit(&ar) >= 0.4)
			place = (int) rng_below(&ar, NLOCATIONS);

		tb_msd_id(bufs[0], "SOSPK", k);
		tb_song_title(bufs[1], &s);
		tb_msd_id(bufs[2], "ARSPK", s.artist);
		tb_song_artist(bufs[3], &s);
		values[0] = tb_datum(bufs[0]);
		values[1] = tb_datum(bufs[1]);
		values[2] = tb_datum(bufs[2]);
		values[3] = tb_datum(bufs[3]);
		values[4] = place >= 0 ? places[place] : empty;
		nulls[5] = nulls[6] = place < 0;
		values[5] = Float8GetDatum(place >= 0 ? location_lat[place] : 0.0);
		values[6] = Float8GetDatum(place >= 0 ? location_lon[place] : 0.0);
		values[7] = Int32GetDatum(s.year);
		values[8] = Float8GetDatum(s.duration_ms / 1000.0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
