/*-------------------------------------------------------------------------
 *
 * kpi_accumulate.c
 *	  The first step of the KPI engine: events, as the query over
 *	  streamkpi.listens gives them, stream into a DestReceiver that
 *	  completes each one with its track's and user's attributes (kpi_dims.c,
 *	  through the cache of kpi_dims_cache.c) and adds it to hash
 *	  tables in memory.  Strings are interned once per delta, so that every
 *	  key is three machine words:
 *
 *	    day_tracks  (day, genre, track)           plays
 *	    day_genres  (day, genre, 0)               plays, users who played
 *	    engagement  (day, dimension, value)       plays, skips, likes,
 *	                                              completed plays, listen_ms,
 *	                                              users with any event
 *	    windows     (window start, size index,    plays, skips, likes,
 *	                 region << 32 | track)        listen_ms
 *	    window_users (window start, size index,   users who played
 *	                 track)
 *
 *	  The windows tables hold the smallest size only when the merge can sum
 *	  the larger ones from it (kpi_rollup_possible); the day tables have a
 *	  memo in front (KpiMemo).
 *
 *	  User sketches are postgresql-hll states (log2m 14) that hashes are
 *	  added to in place; each user_id is hashed once per event.
 *
 *	  Which events count where: a round (the KPI worker) counts every event
 *	  that is not too late, except for the days and windows a refresh_kpis()
 *	  since the last round has already counted it in; a refresh range counts
 *	  its days and the windows starting in it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "kpi.h"

const char *const kpi_dimension_names[KPI_NUM_DIMENSIONS] = {
	"genre", "subscription", "age_group", "hour", "country", "device", "region"
};

/* ---- interned strings ---- */

typedef struct KpiStringKey
{
	const char *data;
	uint32		len;
} KpiStringKey;

typedef struct KpiStringEntry
{
	KpiStringKey key;
	uint32		id;
	uint32		hash;
	char		status;
} KpiStringEntry;

#define SH_PREFIX kpi_strings
#define SH_ELEMENT_TYPE KpiStringEntry
#define SH_KEY_TYPE KpiStringKey
#define SH_KEY key
#define SH_HASH_KEY(tb, k) hash_bytes((const unsigned char *) (k).data, (k).len)
#define SH_EQUAL(tb, x, y) ((x).len == (y).len && memcmp((x).data, (y).data, (x).len) == 0)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, e) ((e)->hash)
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* ---- the tables ---- */

static inline uint32
kpi_key_hash(KpiKey k)
{
	uint64		h = (uint64) k.a * UINT64CONST(0x9E3779B97F4A7C15);

	h = (h ^ (h >> 32)) + (uint64) k.b * UINT64CONST(0xC2B2AE3D27D4EB4F);
	h = (h ^ (h >> 29)) + (uint64) k.c * UINT64CONST(0x165667B19E3779F9);
	h ^= h >> 32;
	h *= UINT64CONST(0x9E3779B97F4A7C15);
	h ^= h >> 29;
	return (uint32) h;
}

#define SH_PREFIX kpi_table
#define SH_ELEMENT_TYPE KpiEntry
#define SH_KEY_TYPE KpiKey
#define SH_KEY key
#define SH_HASH_KEY(tb, k) kpi_key_hash(k)
#define SH_EQUAL(tb, x, y) ((x).a == (y).a && (x).b == (y).b && (x).c == (y).c)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, e) ((e)->hash)
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

static uint32 kpi_intern_bytes(KpiDelta *d, const char *data, uint32 len);
static KpiMemo *kpi_memo_create(KpiDelta *d, uint32 nslots);

/*
 * engagement's memo: 64 slots per dimension (8 >= KPI_NUM_DIMENSIONS), by
 * the value's interned id
 */
#define KPI_MEMO_DIM_BITS	6
#define KPI_MEMO_DIM_MASK	((1 << KPI_MEMO_DIM_BITS) - 1)

/*
 * First sizes; the first event grows the tables to what the events the
 * scan expects need (kpi_delta_presize).
 */
#define KPI_STRINGS_INITIAL		256
#define KPI_TABLE_INITIAL		256
#define KPI_DAY_TRACKS_INITIAL	1024

static void
kpi_delta_init_tables(KpiDelta *d)
{
	for (int h = 0; h < 24; h++)
		d->hours[h] = PG_UINT32_MAX;
	memset(d->recent, 0, sizeof(d->recent));
	d->strings = kpi_strings_create(d->cxt, KPI_STRINGS_INITIAL, NULL);
	d->maxstrs = KPI_STRINGS_INITIAL;
	d->strs = MemoryContextAlloc(d->cxt, d->maxstrs * sizeof(KpiString));
	d->nstrs = 0;
	d->day_tracks = kpi_table_create(d->cxt, KPI_DAY_TRACKS_INITIAL, NULL);
	d->day_genres = kpi_table_create(d->cxt, 64, NULL);
	d->engagement = kpi_table_create(d->cxt, 256, NULL);
	d->windows = kpi_table_create(d->cxt, KPI_TABLE_INITIAL, NULL);
	d->window_users = kpi_table_create(d->cxt, KPI_TABLE_INITIAL, NULL);
	d->day_tracks_memo = kpi_memo_create(d, 4096);
	d->day_genres_memo = kpi_memo_create(d, 64);
	d->engagement_memo = kpi_memo_create(d, 8 << KPI_MEMO_DIM_BITS);
	d->track_attrs = NULL;
	d->ntrack_attrs = 0;
	d->dim_ids = NULL;
	d->ndim_ids = 0;
	d->unknown = kpi_intern_bytes(d, "unknown", 7);
	d->dims_chosen = false;
}

/*
 * An empty delta on the clock of streamkpi.kpi_timezone; the caller sets
 * the sizes and filters.
 */
KpiDelta *
kpi_delta_create(MemoryContext parent, const Interval *horizon)
{
	KpiDelta   *d = MemoryContextAllocZero(parent, sizeof(KpiDelta));
	const char *zone = GetConfigOption("streamkpi.kpi_timezone", true, false);

	d->cxt = AllocSetContextCreate(parent, "streamkpi KPI delta",
								   ALLOCSET_DEFAULT_SIZES);
	window_clock_init(&d->clock, zone == NULL || zone[0] == '\0' ? "UTC" : zone);
	d->horizon = *horizon;
	d->late_ingested = DT_NOBEGIN;
	kpi_delta_init_tables(d);
	return d;
}

/* Forget the deltas (after they were merged); settings and counts stay. */
void
kpi_delta_reset(KpiDelta *d)
{
	MemoryContextReset(d->cxt);
	/* nothing maps the dims cache's values now: it may be emptied */
	if (d->dims_cache != NULL)
		kpi_dims_cache_trim(d->dims_cache);
	kpi_delta_init_tables(d);
}

Size
kpi_delta_memory(KpiDelta *d)
{
	return MemoryContextMemAllocated(d->cxt, true);
}

bool
kpi_delta_empty(KpiDelta *d)
{
	return d->engagement->members == 0 && d->windows->members == 0;
}

uint32
kpi_table_count(struct kpi_table_hash *tb)
{
	return tb->members;
}

/* The counters of a key, or NULL. */
KpiCounts *
kpi_table_find(struct kpi_table_hash *tb, int64 a, int64 b, int64 c)
{
	KpiKey		key = {a, b, c};
	KpiEntry   *e = kpi_table_lookup(tb, key);

	return e != NULL ? &e->counts : NULL;
}

/* The users of a key as a sketch, or NULL when nobody counted. */
SketchHll *
kpi_counts_users(KpiDelta *d, KpiCounts *c)
{
	if (c->users == NULL && c->has_user1)
	{
		c->users = sketch_hll_create(d->cxt, KPI_HLL_LOG2M);
		sketch_hll_add(c->users, c->user1);
	}
	return c->users;
}

static int
string_order(const void *a, const void *b, void *arg)
{
	KpiString  *strs = (KpiString *) arg;
	KpiString  *x = &strs[*(const uint32 *) a];
	KpiString  *y = &strs[*(const uint32 *) b];
	int			c = memcmp(x->data, y->data, Min(x->len, y->len));

	if (c != 0)
		return c;
	return (x->len > y->len) - (x->len < y->len);
}

/*
 * The rank of every interned string in byte order, so that keys sort by
 * comparing numbers.
 */
uint32 *
kpi_string_ranks(KpiDelta *d)
{
	uint32	   *ids = palloc(Max(d->nstrs, 1) * sizeof(uint32));
	uint32	   *rank = palloc(Max(d->nstrs, 1) * sizeof(uint32));

	for (uint32 i = 0; i < d->nstrs; i++)
		ids[i] = i;
	qsort_arg(ids, d->nstrs, sizeof(uint32), string_order, d->strs);
	for (uint32 i = 0; i < d->nstrs; i++)
		rank[ids[i]] = i;
	pfree(ids);
	return rank;
}

/* Every entry of a table, in no particular order. */
KpiEntry **
kpi_table_entries(struct kpi_table_hash *tb, uint32 *n)
{
	KpiEntry  **out = palloc(Max(tb->members, 1) * sizeof(KpiEntry *));
	kpi_table_iterator it;
	KpiEntry   *e;
	uint32		i = 0;

	kpi_table_start_iterate(tb, &it);
	while ((e = kpi_table_iterate(tb, &it)) != NULL)
		out[i++] = e;
	*n = i;
	return out;
}

/* ---- snapshots ---- */

/* Parse pg_snapshot's text form "xmin:xmax:xip,xip,...". */
void
kpi_snapshot_parse(const char *text, KpiSnapshot *snap)
{
	const char *p = text;
	char	   *end;
	int			cap = 8;

	snap->xmin = strtou64(p, &end, 10);
	if (*end != ':')
		goto bad;
	snap->xmax = strtou64(end + 1, &end, 10);
	if (*end != ':')
		goto bad;
	p = end + 1;
	snap->nxip = 0;
	snap->xip = palloc(cap * sizeof(uint64));
	while (*p != '\0')
	{
		if (snap->nxip == cap)
		{
			cap *= 2;
			snap->xip = repalloc(snap->xip, cap * sizeof(uint64));
		}
		snap->xip[snap->nxip++] = strtou64(p, &end, 10);
		if (end == p || (*end != ',' && *end != '\0'))
			goto bad;
		p = *end == ',' ? end + 1 : end;
	}
	return;
bad:
	elog(ERROR, "unexpected pg_snapshot text \"%s\"", text);
}

/* pg_visible_in_snapshot(xid, snap); xip is sorted ascending. */
static bool
kpi_snapshot_visible(const KpiSnapshot *snap, uint64 xid)
{
	int			lo = 0;
	int			hi = snap->nxip - 1;

	if (xid < snap->xmin)
		return true;
	if (xid >= snap->xmax)
		return false;
	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (snap->xip[mid] == xid)
			return false;
		if (snap->xip[mid] < xid)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return true;
}

/* ---- adding one event ---- */

static uint32
kpi_intern_bytes(KpiDelta *d, const char *data, uint32 len)
{
	KpiStringKey key = {data, len};
	KpiStringEntry *e;
	bool		found;

	e = kpi_strings_insert(d->strings, key, &found);
	if (!found)
	{
		char	   *copy = MemoryContextAlloc(d->cxt, key.len + 1);

		memcpy(copy, key.data, key.len);
		copy[key.len] = '\0';
		e->key.data = copy;
		if (d->nstrs == d->maxstrs)
		{
			d->maxstrs *= 2;
			d->strs = repalloc(d->strs, d->maxstrs * sizeof(KpiString));
		}
		e->id = d->nstrs;
		d->strs[d->nstrs].data = copy;
		d->strs[d->nstrs].len = key.len;
		d->nstrs++;
	}
	return e->id;
}

/* The id of a string the delta has interned, or PG_UINT32_MAX. */
uint32
kpi_string_find(KpiDelta *d, const char *data, uint32 len)
{
	KpiStringKey key = {data, len};
	KpiStringEntry *e = kpi_strings_lookup(d->strings, key);

	return e != NULL ? e->id : PG_UINT32_MAX;
}

static uint32
kpi_intern(KpiDelta *d, Datum text)
{
	struct varlena *t = (struct varlena *) DatumGetPointer(text);

	if (unlikely(VARATT_IS_EXTENDED(t) && !VARATT_IS_SHORT(t)))
		t = pg_detoast_datum_packed(t);
	return kpi_intern_bytes(d, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

/* kpi_intern() for a column that repeats a few values */
static uint32
kpi_intern_recent(KpiDelta *d, int column, Datum text)
{
	KpiRecent  *r = &d->recent[column];
	struct varlena *t = (struct varlena *) DatumGetPointer(text);
	const char *data;
	uint32		len;
	uint32		id;

	if (unlikely(VARATT_IS_EXTENDED(t) && !VARATT_IS_SHORT(t)))
		t = pg_detoast_datum_packed(t);
	data = VARDATA_ANY(t);
	len = VARSIZE_ANY_EXHDR(t);
	for (int i = 0; i < r->n; i++)
	{
		KpiString  *s = &d->strs[r->ids[i]];

		if (s->len == len && memcmp(s->data, data, len) == 0)
			return r->ids[i];
	}
	id = kpi_intern_bytes(d, data, len);
	if (r->n < KPI_RECENT_SIZE)
		r->ids[r->n++] = id;
	else
	{
		r->ids[r->next] = id;
		r->next = (r->next + 1) % KPI_RECENT_SIZE;
	}
	return id;
}

static inline KpiCounts *
kpi_counts(struct kpi_table_hash *tb, int64 a, int64 b, int64 c)
{
	KpiKey		key = {a, b, c};
	bool		found;
	KpiEntry   *e = kpi_table_insert(tb, key, &found);

	if (!found)
		memset(&e->counts, 0, sizeof(KpiCounts));
	return &e->counts;
}

/*
 * A memo in front of a day table: the counters of the last key seen at each
 * of its slots, so that the keys an event repeats from earlier events (its
 * day's dimension values, genre and track) cost a comparison instead of a
 * hash-table update.  Inserting a key may move any entry (robin hood
 * hashing, growing), so a slot is valid while the table has the number of
 * keys it had when the slot was filled.
 */
typedef struct KpiMemoSlot
{
	KpiKey		key;
	KpiCounts  *counts;
	uint32		members;		/* the table's keys when filled */
} KpiMemoSlot;

struct KpiMemo
{
	uint32		mask;			/* slots - 1, slots a power of two */
	KpiMemoSlot slots[FLEXIBLE_ARRAY_MEMBER];
};

static KpiMemo *
kpi_memo_create(KpiDelta *d, uint32 nslots)
{
	KpiMemo    *m;

	Assert((nslots & (nslots - 1)) == 0);
	m = MemoryContextAllocZero(d->cxt, offsetof(KpiMemo, slots) +
							   nslots * sizeof(KpiMemoSlot));
	m->mask = nslots - 1;
	return m;
}

/* kpi_counts() through memo slot slot */
static inline KpiCounts *
kpi_counts_memo(struct kpi_table_hash *tb, KpiMemo *m, uint32 slot,
				int64 a, int64 b, int64 c)
{
	KpiMemoSlot *s = &m->slots[slot & m->mask];

	if (s->counts == NULL || s->members != tb->members ||
		s->key.a != a || s->key.b != b || s->key.c != c)
	{
		s->counts = kpi_counts(tb, a, b, c);
		s->members = tb->members;
		s->key.a = a;
		s->key.b = b;
		s->key.c = c;
	}
	return s->counts;
}

static inline void
kpi_add_user(KpiDelta *d, KpiCounts *c, uint64 user_hash)
{
	if (c->users != NULL)
		sketch_hll_add(c->users, user_hash);
	else if (!c->has_user1)
	{
		c->user1 = user_hash;
		c->has_user1 = true;
	}
	else if (c->user1 != user_hash)
	{
		kpi_counts_users(d, c);
		sketch_hll_add(c->users, user_hash);
	}
}

/* ---- tracks and users ---- */

/* the delta's id of the dims cache's value id */
static uint32
kpi_dim_id_slow(KpiDelta *d, uint32 id)
{
	if (id >= d->ndim_ids)
	{
		uint32		n = Max(id + 1, 64) * 2;

		if (d->dim_ids == NULL)
			d->dim_ids = MemoryContextAlloc(d->cxt, n * sizeof(uint32));
		else
			d->dim_ids = repalloc(d->dim_ids, n * sizeof(uint32));
		memset(&d->dim_ids[d->ndim_ids], 0xFF, (n - d->ndim_ids) * sizeof(uint32));
		d->ndim_ids = n;
	}
	if (d->dim_ids[id] == PG_UINT32_MAX)
	{
		const KpiText *t = kpi_dims_cache_value(d->dims_cache, id);

		d->dim_ids[id] = kpi_intern_bytes(d, t->data, t->len);
	}
	return d->dim_ids[id];
}

static inline uint32
kpi_dim_id(KpiDelta *d, uint32 id)
{
	if (likely(id < d->ndim_ids && d->dim_ids[id] != PG_UINT32_MAX))
		return d->dim_ids[id];
	return kpi_dim_id_slow(d, id);
}

/* the cache entry of the track with interned id track */
static KpiTrackCache *
kpi_track_cache(KpiDelta *d, uint32 track)
{
	if (track >= d->ntrack_attrs)
	{
		uint32		n = Max(d->nstrs, track + 1) * 2;

		if (d->track_attrs == NULL)
			d->track_attrs = MemoryContextAllocZero(d->cxt, n * sizeof(KpiTrackCache));
		else
		{
			d->track_attrs = repalloc(d->track_attrs, n * sizeof(KpiTrackCache));
			memset(&d->track_attrs[d->ntrack_attrs], 0,
				   (n - d->ntrack_attrs) * sizeof(KpiTrackCache));
		}
		d->ntrack_attrs = n;
	}
	return &d->track_attrs[track];
}

/* The attributes of the track with interned id track, found once per delta. */
static KpiTrackCache *
kpi_track_attrs(KpiDelta *d, uint32 track)
{
	KpiTrackCache *c = kpi_track_cache(d, track);

	if (!c->looked_up)
	{
		KpiDimValue v = *kpi_dims_cache_track(d->dims_cache, d->dims,
											  d->strs[track].data,
											  d->strs[track].len);

		c->genre = kpi_dim_id(d, v.ids[0]);
		c->attrs.genre.data = d->strs[c->genre].data;
		c->attrs.genre.len = d->strs[c->genre].len;
		c->attrs.has_duration = v.has_duration;
		c->attrs.duration_ms = v.duration_ms;
		c->looked_up = true;
	}
	return c;
}

/*
 * A table (empty, or nearly) grown at once to hold keys entries
 * (simplehash's fill factor is 0.9), instead of doubling while they come
 * in: each doubling allocates, zeroes and rehashes.
 */
static void
kpi_table_presize(struct kpi_table_hash *tb, double keys)
{
	if (keys > tb->grow_threshold)
		kpi_table_grow(tb, (uint64) (keys / 0.9));
}

static void
kpi_strings_presize(struct kpi_strings_hash *tb, double keys)
{
	if (keys > tb->grow_threshold)
		kpi_strings_grow(tb, (uint64) (keys / 0.9));
}

/*
 * The tables sized for the events still expected, with some room: per
 * event, kpi_throughput's listens made 0.56 window keys and 0.21 window
 * user keys.  Capped: a refresh expects PG_INT64_MAX, and a presized delta
 * must stay far below KPI_FLUSH_BYTES (kpi_apply.c) or every batch would
 * flush (at the cap, windows and window_users take 16 MB).
 */
#define KPI_PRESIZE_MAX_EVENTS	100000

static void
kpi_delta_presize(KpiDelta *d)
{
	double		events = (double) Min(Max(d->expected_events - d->events, 0),
									  KPI_PRESIZE_MAX_EVENTS);
	double		tracks = kpi_dim_rows(&d->dims->tracks);

	kpi_table_presize(d->windows, events / 1.5);
	kpi_table_presize(d->window_users, events / 4);
	/* the events' track ids, interned: at most one per event */
	kpi_strings_presize(d->strings, 64 + Min(tracks, events));
}

/* One event, as read from the query; see KPI_EVENT_COLUMNS. */
typedef struct KpiEvent
{
	TimestampTz listened_at;
	uint64		xid;
	DateADT		day;
	uint64		user_hash;
	uint32		track;
	char		action;			/* 'p'lay, 's'kip, 'l'ike */
	uint32		region;
	uint32		genre;
	int64		listen_ms;
	bool		completed;
	uint32		values[KPI_NUM_DIMENSIONS];
} KpiEvent;

/* Has a refresh since the last round counted this event on its day? */
static bool
kpi_day_refreshed(KpiDelta *d, const KpiEvent *ev)
{
	for (int i = 0; i < d->nrefreshed; i++)
	{
		KpiRefreshed *r = &d->refreshed[i];

		if (ev->day >= r->from_day && ev->day <= r->to_day &&
			kpi_snapshot_visible(&r->snapshot, ev->xid))
			return true;
	}
	return false;
}

static bool
kpi_window_refreshed(KpiDelta *d, const KpiEvent *ev, TimestampTz start)
{
	for (int i = 0; i < d->nrefreshed; i++)
	{
		KpiRefreshed *r = &d->refreshed[i];

		if (start >= r->lo && start < r->hi &&
			kpi_snapshot_visible(&r->snapshot, ev->xid))
			return true;
	}
	return false;
}

static void
kpi_add_day(KpiDelta *d, const KpiEvent *ev)
{
	KpiCounts  *c;

	if (ev->action == 'p')
	{
		c = kpi_counts_memo(d->day_tracks, d->day_tracks_memo, ev->track,
							ev->day, ev->genre, ev->track);
		c->plays++;
		c = kpi_counts_memo(d->day_genres, d->day_genres_memo, ev->genre,
							ev->day, ev->genre, 0);
		c->plays++;
		kpi_add_user(d, c, ev->user_hash);
	}
	for (int dim = 0; dim < KPI_NUM_DIMENSIONS; dim++)
	{
		c = kpi_counts_memo(d->engagement, d->engagement_memo,
							(uint32) dim << KPI_MEMO_DIM_BITS | (ev->values[dim] & KPI_MEMO_DIM_MASK),
							ev->day, dim, ev->values[dim]);
		if (ev->action == 'p')
		{
			c->plays++;
			c->completed += ev->completed;
			c->listen_ms += ev->listen_ms;
		}
		else if (ev->action == 's')
			c->skips++;
		else
			c->likes++;
		kpi_add_user(d, c, ev->user_hash);
	}
}

/* a refresh range: does a window of some size that start0 falls in count? */
static bool
kpi_window_counts(KpiDelta *d, TimestampTz start0)
{
	for (int k = 0; k < d->nsizes; k++)
	{
		TimestampTz start = kpi_window_start(start0, d->sizes[k].usecs);

		if (start >= d->lo && start < d->hi)
			return true;
	}
	return false;
}

/*
 * Count the event in its windows: of every size, or, when the larger
 * windows are rolled up at the merge (d->rollup), of the smallest size.
 */
static void
kpi_add_windows(KpiDelta *d, const KpiEvent *ev)
{
	int64		region_track = ((int64) ev->region << 32) | ev->track;
	int			nsizes = d->rollup ? 1 : d->nsizes;

	for (int k = 0; k < nsizes; k++)
	{
		TimestampTz start = kpi_window_start(ev->listened_at, d->sizes[k].usecs);
		KpiCounts  *c;

		if (d->rollup ? d->refresh && !kpi_window_counts(d, start)
			: d->refresh ? (start < d->lo || start >= d->hi)
			: (d->nrefreshed > 0 && kpi_window_refreshed(d, ev, start)))
			continue;
		c = kpi_counts(d->windows, start, k, region_track);
		if (ev->action == 'p')
		{
			c->plays++;
			c->listen_ms += ev->listen_ms;
			kpi_add_user(d, kpi_counts(d->window_users, start, k, ev->track),
						 ev->user_hash);
		}
		else if (ev->action == 's')
			c->skips++;
		else
			c->likes++;
	}
}

/*
 * Roll the larger windows up from the smallest at the merge?  Each window
 * of a size that is a multiple of the smallest is the union of the
 * smallest windows starting in it (date_bin's origin is 0), so an event
 * updates one window instead of one per size, and the merge sums the
 * smallest windows' entries into the larger ones (kpi_window.c): fewer
 * updates, as a smallest window's entry stands for several events.  A round after a
 * refresh decides per event and window whether the refresh counted it, so
 * it counts every size per event.
 */
static bool
kpi_rollup_possible(KpiDelta *d)
{
	if (d->nsizes < 2 || d->sizes[0].usecs <= 0 || (!d->refresh && d->nrefreshed > 0))
		return false;
	for (int k = 1; k < d->nsizes; k++)
		if (d->sizes[k].usecs % d->sizes[0].usecs != 0)
			return false;
	return true;
}

static inline const char *
kpi_text(Datum v, uint32 *len)
{
	struct varlena *t = (struct varlena *) DatumGetPointer(v);

	if (unlikely(VARATT_IS_EXTENDED(t) && !VARATT_IS_SHORT(t)))
		t = pg_detoast_datum_packed(t);
	*len = VARSIZE_ANY_EXHDR(t);
	return VARDATA_ANY(t);
}

/* listened_at < ingested_at - streamkpi.late_horizon; a batch shares ingested_at */
static bool
kpi_too_late(KpiDelta *d, TimestampTz listened_at, TimestampTz ingested_at)
{
	if (ingested_at != d->late_ingested)
	{
		d->late_before = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
																 TimestampTzGetDatum(ingested_at),
																 IntervalPGetDatum(&d->horizon)));
		d->late_ingested = ingested_at;
	}
	return listened_at < d->late_before;
}

/* The local day and hour of listened_at: its KPI day and hour. */
static void
kpi_local_day_hour(KpiDelta *d, KpiEvent *ev)
{
	Timestamp	local = window_clock_local(&d->clock, ev->listened_at);
	int64		days = local / USECS_PER_DAY;
	int64		in_day = local % USECS_PER_DAY;
	int			hour;

	if (in_day < 0)
	{
		days--;
		in_day += USECS_PER_DAY;
	}
	ev->day = (DateADT) days;
	hour = (int) (in_day / USECS_PER_HOUR);
	if (d->hours[hour] == PG_UINT32_MAX)
	{
		char		hh[3] = {'0' + hour / 10, '0' + hour % 10, '\0'};

		d->hours[hour] = kpi_intern_bytes(d, hh, 2);
	}
	ev->values[3] = d->hours[hour];
}

/* region or device: 'unknown' when NULL */
static inline uint32
kpi_intern_or_unknown(KpiDelta *d, int column, TupleTableSlot *slot, int att)
{
	if (slot->tts_isnull[att])
		return d->unknown;
	return kpi_intern_recent(d, column, slot->tts_values[att]);
}

static void
kpi_accumulate_event(KpiDelta *d, TupleTableSlot *slot)
{
	Datum	   *v;
	KpiEvent	ev;
	const char *s;
	uint32		len;
	bool		day_counts;
	bool		has_ms;
	KpiTrackCache *track;
	KpiDimValue user;

	slot_getallattrs(slot);
	for (int i = 0; i < KPI_EVENT_NOTNULL; i++)
		if (slot->tts_isnull[i])
			elog(ERROR, "streamkpi.listens gave a NULL in column %d", i + 1);
	v = slot->tts_values;
	ev.listened_at = DatumGetTimestampTz(v[0]);
	if (kpi_too_late(d, ev.listened_at, DatumGetTimestampTz(v[2])))
	{
		d->late++;
		return;
	}
	ev.xid = DatumGetUInt64(v[1]);
	if (unlikely(!d->dims_chosen))
	{
		kpi_dims_cache_choose(d->dims_cache, d->dims, d->expected_events);
		kpi_delta_presize(d);
		d->dims_chosen = true;
		d->rollup = kpi_rollup_possible(d);
	}
	kpi_local_day_hour(d, &ev);
	s = kpi_text(v[3], &len);
	ev.user_hash = sketch_hll_hash_text(s, len);
	user = *kpi_dims_cache_user(d->dims_cache, d->dims, s, len);
	ev.values[1] = kpi_dim_id(d, user.ids[0]);	/* subscription */
	ev.values[4] = kpi_dim_id(d, user.ids[1]);	/* country */
	ev.values[2] = kpi_dim_id(d, user.ids[2]);	/* age_group */
	ev.track = kpi_intern(d, v[4]);
	track = kpi_track_attrs(d, ev.track);
	s = kpi_text(v[5], &len);
	ev.action = len > 0 ? s[0] : '?';
	if (ev.action != 'p' && ev.action != 's' && ev.action != 'l')
		elog(ERROR, "unexpected action \"%.*s\" in streamkpi.listens", (int) len, s);
	ev.region = ev.values[6] = kpi_intern_or_unknown(d, 0, slot, 6);
	ev.values[5] = kpi_intern_or_unknown(d, 1, slot, 7);
	ev.genre = ev.values[0] = track->genre;
	has_ms = !slot->tts_isnull[8];
	ev.listen_ms = kpi_listen_ms(has_ms, has_ms ? DatumGetInt32(v[8]) : 0, &track->attrs);
	ev.completed = kpi_completed(has_ms, has_ms ? DatumGetInt32(v[8]) : 0, &track->attrs);

	if (d->refresh)
		day_counts = ev.day >= d->from_day && ev.day <= d->to_day;
	else
		day_counts = d->nrefreshed == 0 || !kpi_day_refreshed(d, &ev);
	if (day_counts)
		kpi_add_day(d, &ev);
	kpi_add_windows(d, &ev);
	d->events++;
}

/* ---- the DestReceiver ---- */

typedef struct KpiReceiver
{
	DestReceiver pub;
	KpiDelta   *delta;
} KpiReceiver;

static bool
kpi_receive_slot(TupleTableSlot *slot, DestReceiver *self)
{
	kpi_accumulate_event(((KpiReceiver *) self)->delta, slot);
	return true;
}

static void
kpi_receiver_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	if (typeinfo->natts != KPI_EVENT_NCOLUMNS)
		elog(ERROR, "the KPI event query returns %d columns, not %d",
			 typeinfo->natts, KPI_EVENT_NCOLUMNS);
}

static void
kpi_receiver_shutdown(DestReceiver *self)
{
}

static void
kpi_receiver_destroy(DestReceiver *self)
{
	pfree(self);
}

/* A receiver that adds every row it gets to d. */
DestReceiver *
kpi_delta_receiver(KpiDelta *d)
{
	KpiReceiver *r = palloc0(sizeof(KpiReceiver));

	r->pub.receiveSlot = kpi_receive_slot;
	r->pub.rStartup = kpi_receiver_startup;
	r->pub.rShutdown = kpi_receiver_shutdown;
	r->pub.rDestroy = kpi_receiver_destroy;
	r->pub.mydest = DestNone;
	r->delta = d;
	return (DestReceiver *) r;
}
