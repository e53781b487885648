/*-------------------------------------------------------------------------
 *
 * kpi.h
 *	  The KPI engine.  Raw listens become KPI rows in three steps, the same
 *	  for the KPI worker's rounds and for refresh_kpis():
 *
 *	    kpi_accumulate.c  a query over streamkpi.listens streams into
 *	                      in-memory hash tables, each event completed by
 *	                      its track and user (kpi_dims.c, the event-level
 *	                      definitions, through the cache of
 *	                      kpi_dims_cache.c that rounds share):
 *	                      counters and hll sketches per (day, genre, track),
 *	                      (day, genre), (day, dimension, value),
 *	                      (window, region, track) and (window, track), the
 *	                      windows of the smallest size only when the larger
 *	                      can be summed from them;
 *	    kpi_merge.c       the day deltas are added to the day state tables
 *	                      in a few multi-row statements (kpi_sql.c; the
 *	                      users sketches, in the KPI worker, through the
 *	                      states kpi_users_cache.c keeps), the
 *	                      touched genres' track counts and top tracks in
 *	                      their summaries (kpi_day_topn.c), and the day KPI
 *	                      rows of the touched keys are derived again in SQL
 *	                      (streamkpi._kpi_derive_days);
 *	    kpi_window.c      the window deltas (the larger windows summed from
 *	                      the smallest) are merged into the windows'
 *	                      counters, their players appended as parts
 *	                      (of the smallest windows, when the larger are
 *	                      summed from them; streamkpi.window_state,
 *	                      kpi_window_state.c),
 *	                      and trending rows of the touched keys are
 *	                      derived from the counters (track_windows is a
 *	                      view of that state).
 *
 *	  kpi_apply.c runs a round or a refresh range through them, and
 *	  kpi_worker.c is the background worker that runs rounds.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_KPI_H
#define STREAMKPI_KPI_H

#include "postgres.h"

#include "access/genam.h"
#include "datatype/timestamp.h"
#include "tcop/dest.h"
#include "utils/date.h"
#include "utils/relcache.h"
#include "utils/resowner.h"

#include "sketch.h"

/* hll_agg(user_id, 14): every user sketch of the KPI state */
#define KPI_HLL_LOG2M		14

/* the dimensions of daily_engagement, in the order of kpi_dimension_names */
#define KPI_NUM_DIMENSIONS	7
extern const char *const kpi_dimension_names[KPI_NUM_DIMENSIONS];

/*
 * Counters of one key.  Most keys of a window see one user: the first
 * user's hash waits in user1, and a sketch is made only for a second one
 * (kpi_counts_users() gives the sketch either way).
 */
typedef struct KpiCounts
{
	int64		plays;
	int64		skips;
	int64		likes;
	int64		completed;
	int64		listen_ms;
	uint64		user1;
	bool		has_user1;
	SketchHll  *users;
} KpiCounts;

/*
 * A key of the accumulation tables, three words whose meaning depends on
 * the table (see kpi_accumulate.c); strings are interned ids.
 */
typedef struct KpiKey
{
	int64		a;
	int64		b;
	int64		c;
} KpiKey;

typedef struct KpiEntry
{
	KpiKey		key;
	KpiCounts	counts;
	uint32		hash;
	char		status;
} KpiEntry;


/* A window size of streamkpi.trending_windows. */
typedef struct KpiWindowSize
{
	Interval	size;
	int64		usecs;
	int32		top_n;
} KpiWindowSize;

/* A snapshot in pg_snapshot's text form, for visibility tests in C. */
typedef struct KpiSnapshot
{
	uint64		xmin;
	uint64		xmax;
	int			nxip;
	uint64	   *xip;			/* sorted */
} KpiSnapshot;

/* A range refresh_kpis() counted that the next round must skip. */
typedef struct KpiRefreshed
{
	DateADT		from_day;
	DateADT		to_day;
	TimestampTz lo;				/* windows starting in [lo, hi) */
	TimestampTz hi;
	KpiSnapshot snapshot;
} KpiRefreshed;

/*
 * The last strings a low-cardinality column (region, genre, ...) gave, so
 * that most events intern them with a comparison instead of a hash lookup.
 */
#define KPI_RECENT_COLUMNS	2
#define KPI_RECENT_SIZE		8
typedef struct KpiRecent
{
	uint32		ids[KPI_RECENT_SIZE];
	int			n;
	int			next;			/* the slot to replace */
} KpiRecent;

/* An interned string. */
typedef struct KpiString
{
	const char *data;
	uint32		len;
} KpiString;

/*
 * The deltas of a round or a refresh range.  Everything lives in cxt and
 * goes with kpi_delta_reset().
 */
/* in kpi_dims.c: tracks and users by primary key, the event-level rules */
typedef struct KpiDim
{
	Relation	rel;
	Relation	index;			/* the primary key */
	IndexScanDesc scan;			/* begun at the first lookup */
	TupleTableSlot *slot;
	AttrNumber	attnums[3];		/* the columns read */
	int			ncols;
	ResourceOwner owner;		/* of the opener: lookups run inside portals */
	MemoryContext cxt;			/* the opener's, for the scan */
	AttrNumber	keyatt;			/* the primary key's column */
} KpiDim;

typedef struct KpiDims
{
	KpiDim		tracks;
	KpiDim		users;
} KpiDims;

typedef struct KpiText
{
	const char *data;
	uint32		len;
} KpiText;

typedef struct KpiTrackAttrs
{
	KpiText		genre;
	bool		has_duration;
	int32		duration_ms;
} KpiTrackAttrs;

typedef struct KpiUserAttrs
{
	KpiText		subscription;
	KpiText		country;
	KpiText		age_group;
} KpiUserAttrs;

extern void kpi_dims_open(KpiDims *dims);
extern void kpi_dims_close(KpiDims *dims);
extern void kpi_dims_track(KpiDims *dims, const char *id, uint32 len, KpiTrackAttrs *out);
extern void kpi_dims_user(KpiDims *dims, const char *id, uint32 len, KpiUserAttrs *out);
extern double kpi_dim_rows(KpiDim *dim);
extern void kpi_dims_load(KpiDims *dims,
						  void (*track) (void *arg, const char *id, uint32 len,
										 const KpiTrackAttrs *attrs),
						  void (*user) (void *arg, const char *id, uint32 len,
										const KpiUserAttrs *attrs),
						  void *arg);
extern void kpi_text_or_unknown(KpiText *out, const char *data, uint32 len);
extern int64 kpi_listen_ms(bool has_ms_played, int32 ms_played, const KpiTrackAttrs *track);
extern bool kpi_completed(bool has_ms_played, int32 ms_played, const KpiTrackAttrs *track);

/* a track's attributes as the delta's strings */
typedef struct KpiTrackCache
{
	bool		looked_up;
	uint32		genre;			/* interned */
	KpiTrackAttrs attrs;
} KpiTrackCache;

/*
 * in kpi_dims_cache.c: tracks' and users' attributes kept across the
 * flushes of a scan and, for rounds, across rounds
 */
typedef struct KpiDimValue
{
	uint32		ids[3];			/* genre | subscription, country, age group:
								 * kpi_dims_cache_value() */
	int32		duration_ms;
	bool		has_duration;
} KpiDimValue;

typedef struct KpiDimsCache KpiDimsCache;

extern void KpiDimsInit(void);
extern KpiDimsCache *kpi_dims_cache_begin(KpiDims *dims);
extern void kpi_dims_cache_check(KpiDimsCache *c, KpiDims *dims);
extern void kpi_dims_cache_choose(KpiDimsCache *c, KpiDims *dims, int64 expected_events);
extern const KpiDimValue *kpi_dims_cache_track(KpiDimsCache *c, KpiDims *dims,
											   const char *id, uint32 len);
extern const KpiDimValue *kpi_dims_cache_user(KpiDimsCache *c, KpiDims *dims,
											  const char *id, uint32 len);
extern const KpiText *kpi_dims_cache_value(KpiDimsCache *c, uint32 id);
extern void kpi_dims_cache_trim(KpiDimsCache *c);
extern void kpi_dims_cache_end(KpiDimsCache *c, bool keep);

typedef struct KpiMemo KpiMemo;

typedef struct KpiDelta
{
	MemoryContext cxt;
	/* strings */
	struct kpi_strings_hash *strings;
	KpiString  *strs;
	uint32		nstrs;
	uint32		maxstrs;
	/* the tables */
	struct kpi_table_hash *day_tracks; /* (day, genre, track): plays */
	struct kpi_table_hash *day_genres; /* (day, genre, 0): plays, users who played */
	struct kpi_table_hash *engagement; /* (day, dimension, value): everything */
	struct kpi_table_hash *windows;	/* (start, size index, region << 32 | track) */
	struct kpi_table_hash *window_users;	/* (start, size index, track) */
	struct KpiMemo *day_tracks_memo;	/* the last keys of the day tables */
	struct KpiMemo *day_genres_memo;
	struct KpiMemo *engagement_memo;
	/* settings, fixed for the life of the delta */
	KpiWindowSize *sizes;
	int			nsizes;
	bool		refresh;		/* a refresh range, not a round */
	DateADT		from_day;		/* refresh: day state for these days */
	DateADT		to_day;
	TimestampTz lo;				/* refresh: windows starting in [lo, hi) */
	TimestampTz hi;
	KpiRefreshed *refreshed;	/* round: ranges to skip */
	int			nrefreshed;
	const char *hll;			/* the hll extension's schema, quoted */
	WindowClock clock;			/* streamkpi.kpi_timezone's wall clock */
	Interval	horizon;		/* streamkpi.late_horizon */
	TimestampTz late_ingested;	/* the last ingested_at looked at ... */
	TimestampTz late_before;	/* ... and what is too late for it */
	uint32		hours[24];		/* interned '00' .. '23', or UINT32_MAX */
	KpiRecent	recent[KPI_RECENT_COLUMNS]; /* per low-cardinality column */
	/* tracks and users of the events (kpi_dims_cache.c) */
	KpiDims    *dims;			/* open while events stream in */
	KpiDimsCache *dims_cache;	/* the same */
	KpiTrackCache *track_attrs; /* by the track's interned id */
	uint32		ntrack_attrs;
	uint32	   *dim_ids;		/* the cache's values as interned ids */
	uint32		ndim_ids;
	uint32		unknown;		/* interned 'unknown' */
	int64		expected_events;	/* of the scan, to choose how to look up */
	bool		dims_chosen;	/* looking up or loading was decided */
	bool		rollup;			/* events count in the smallest windows only;
								 * the merge sums them into the larger */
	/* counts since the delta was created */
	int64		events;			/* counted */
	int64		late;			/* too late, not counted */
} KpiDelta;

/* date_bin(size, ts, '2000-01-01 00:00+00'): the origin is 0 */
static inline TimestampTz
kpi_window_start(TimestampTz ts, int64 usecs)
{
	int64		rem = ts % usecs;

	if (rem < 0)
		rem += usecs;
	return ts - rem;
}

/* in kpi_accumulate.c */
extern KpiDelta *kpi_delta_create(MemoryContext parent, const Interval *horizon);
extern void kpi_delta_reset(KpiDelta *d);
extern Size kpi_delta_memory(KpiDelta *d);
extern DestReceiver *kpi_delta_receiver(KpiDelta *d);
extern bool kpi_delta_empty(KpiDelta *d);
extern uint32 kpi_table_count(struct kpi_table_hash *tb);
extern KpiEntry **kpi_table_entries(struct kpi_table_hash *tb, uint32 *n);
extern KpiCounts *kpi_table_find(struct kpi_table_hash *tb, int64 a, int64 b, int64 c);
extern SketchHll *kpi_counts_users(KpiDelta *d, KpiCounts *c);
extern uint32 *kpi_string_ranks(KpiDelta *d);
extern uint32 kpi_string_find(KpiDelta *d, const char *data, uint32 len);
extern void kpi_snapshot_parse(const char *text, KpiSnapshot *snap);

/*
 * The columns of streamkpi.listens (alias l) that kpi_delta_receiver()
 * expects, in this order.  The local day and hour come from listened_at on
 * the clock of streamkpi.kpi_timezone, lateness from ingested_at, and the
 * rest from the track and the user (kpi_dims.c), in C.
 */
#define KPI_EVENT_COLUMNS \
	"l.listened_at, l.ingest_xid, l.ingested_at, l.user_id, l.track_id, " \
	"l.action, l.region, l.device, l.ms_played"
#define KPI_EVENT_NCOLUMNS	9
#define KPI_EVENT_NOTNULL	6	/* the first six are NOT NULL */

/* in kpi_sql.c: statements with arrays as parameters */
typedef struct KpiArray
{
	Oid			elemtype;
	Datum	   *elems;
	bool	   *nulls;			/* NULL until the first null element */
	int			n;
	int			cap;
} KpiArray;

extern void kpi_array_init(KpiArray *a, Oid elemtype, int cap);
extern void kpi_array_add(KpiArray *a, Datum v);
extern void kpi_array_add_null(KpiArray *a);
extern Datum kpi_text_datum(KpiDelta *d, int64 id);
extern void kpi_genre_key_arrays(KpiDelta *d, KpiEntry **gs, uint32 ng, KpiArray *days,
								 KpiArray *genres, KpiArray *ords);
extern void kpi_run(const char *sql, int nargs, KpiArray *args, int expected);
extern void kpi_run_into(const char *sql, int nargs, KpiArray *args, int expected,
						 DestReceiver *dest);
extern const char *kpi_hll_schema(void);

/* in kpi_users_cache.c: the KPI worker's day users sketches */
extern void kpi_users_cache_round(void);
extern void kpi_users_cache_merge(KpiText key, bool has_stored, Datum stored,
								  TransactionId xmin, const SketchHll *delta,
								  bytea **packed, int64 *count);
extern void kpi_users_cache_written(KpiText key);

/* in kpi_merge.c: the day step */
extern void kpi_merge_days(KpiDelta *d);

/*
 * in kpi_day_topn.c: per (day, genre), the tracks with the most listens
 * (streamkpi.daily_genre_track_topn), the others' listens
 * (streamkpi.daily_genre_track_counts), and the first of them, the day's
 * top tracks
 */
#define KPI_DAY_TOPN_CAPACITY	1000
#define KPI_DAY_TOP_TRACKS		3

extern void kpi_merge_day_tracks(KpiDelta *d, KpiEntry **gs, uint32 ng, KpiArray *top);

/* in kpi_window.c */
extern void kpi_merge_windows(KpiDelta *d);

/* in kpi_round_filter.c */
extern int64 kpi_round_count(Datum s_old, Datum s_new);

/* in kpi_worker.c */
extern PGDLLEXPORT void StreamkpiKpiMain(Datum main_arg);
extern void KpiShmemInit(void);
extern pid_t kpi_worker_pid(TimestampTz *started_at);
extern void kpi_worker_ensure_running(void);
extern void kpi_worker_wake(void);
extern void kpi_worker_release_memory(void);
extern bool kpi_in_worker;		/* this process is the KPI worker */

#endif							/* STREAMKPI_KPI_H */
