/*-------------------------------------------------------------------------
 *
 * kpi_dims_cache.c
 *	  Tracks' and users' attributes (kpi_dims.c) kept by the backend from
 *	  one scan of events to the next: through the flushes of a scan, and,
 *	  for the rounds of streamkpi.kpi_apply_new(), from round to round, so
 *	  that a round whose tracks and users have not changed neither reads
 *	  them whole nor looks up a key it has seen before.
 *
 *	  What the cache gives must be exactly what reading the tables in the
 *	  scan's snapshot gives.  Every row written to streamkpi.tracks or
 *	  streamkpi.users, and every TRUNCATE of them, fires a trigger of ours
 *	  (65_kpi_dims.sql, ENABLE ALWAYS), which marks its transaction; rows
 *	  that an upsert leaves alone mark nothing.  A marked transaction
 *	  counts as committing in shared
 *	  memory from XACT_EVENT_PRE_COMMIT, before its writes become visible,
 *	  to XACT_EVENT_COMMIT or ABORT, after they have, and then bumps the
 *	  generation.  A scan reads the generation before its snapshot is
 *	  taken and again after: when the two agree and nothing was committing,
 *	  its snapshot sees exactly the writes that generation counts, as does
 *	  every snapshot checked so with the same generation, and what one
 *	  scan cached the other may use.  Otherwise the scan caches for itself
 *	  only, as does a scan in a transaction that may have written the
 *	  tables itself: one where a statement writing them began (a statement
 *	  trigger, BEFORE any of its rows).
 *
 *	  What the trigger cannot see, a change of the tables themselves (ALTER
 *	  TABLE, a disabled trigger, the extension dropped and created again),
 *	  arrives as a relcache invalidation, which drops the cache.  From
 *	  before the snapshot until the check, the scan holds both tables in
 *	  ShareUpdateExclusiveLock, taken without waiting (or the scan caches
 *	  for itself): no such change commits in between unread.  The triggers
 *	  themselves are checked at every scan.
 *
 *	  A cache holds at most as many keys per table as the table may have
 *	  rows to be read whole (kpi_worth_loading); beyond that it is emptied
 *	  at the next flush and at the end of the scan.  Keys missing from a
 *	  table are cached too (as 'unknown'), within the same bound.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/reltrigger.h"
#include "utils/syscache.h"

#include "kpi.h"
#include "streamkpi.h"

/* ---- the generation ---- */

/* Shared memory "streamkpi kpi dims". */
typedef struct KpiDimsShared
{
	LWLock	   *lock;			/* protects everything below */
	uint64		generation;		/* commits that wrote tracks or users */
	int			committing;		/* such commits between pre-commit and commit */
} KpiDimsShared;

static KpiDimsShared *dims_shared = NULL;

static Size
dims_shmem_size(void)
{
	return sizeof(KpiDimsShared);
}

static const StreamkpiShmemPart dims_shmem = {
	.name = "streamkpi kpi dims",
	.size = dims_shmem_size,
	.ptr = (void **) &dims_shared,
};

/* this backend's transaction */
static bool xact_writes_dims = false;	/* a statement writing them began */
static bool xact_wrote_dims = false;	/* a row was written, or truncated */
static bool xact_precommitted = false;	/* XACT_EVENT_PRE_COMMIT has run */
static bool xact_committing = false;	/* counted in dims_shared->committing */

static void
dims_commit_begin(void)
{
	if (dims_shared == NULL || xact_committing)
		return;
	LWLockAcquire(dims_shared->lock, LW_EXCLUSIVE);
	dims_shared->committing++;
	LWLockRelease(dims_shared->lock);
	xact_committing = true;
}

static void
dims_commit_end(void)
{
	if (!xact_committing)
		return;
	LWLockAcquire(dims_shared->lock, LW_EXCLUSIVE);
	dims_shared->committing--;
	dims_shared->generation++;
	LWLockRelease(dims_shared->lock);
	xact_committing = false;
}

static uint64
dims_generation(int *committing)
{
	uint64		generation;

	LWLockAcquire(dims_shared->lock, LW_SHARED);
	generation = dims_shared->generation;
	if (committing != NULL)
		*committing = dims_shared->committing;
	LWLockRelease(dims_shared->lock);
	return generation;
}

static void
dims_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
			xact_precommitted = true;
			if (xact_wrote_dims)
				dims_commit_begin();
			break;
		case XACT_EVENT_PRE_PREPARE:
			/* COMMIT PREPARED, elsewhere, would bump no generation */
			if (xact_wrote_dims)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that wrote streamkpi.tracks or streamkpi.users"),
						 errdetail("The KPI engine's caches of those tables learn of writes when their transaction commits.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			dims_commit_end();
			xact_writes_dims = false;
			xact_wrote_dims = false;
			xact_precommitted = false;
			break;
	}
}

/*
 * The generation's shared memory and the transaction callback; from
 * _PG_init when preloaded (without, nothing is cached across scans).
 */
void
KpiDimsInit(void)
{
	streamkpi_shmem_register(&dims_shmem);
	RegisterXactCallback(dims_xact_callback, NULL);
}

PG_FUNCTION_INFO_V1(streamkpi_kpi_dims_changed);

/*
 * streamkpi._kpi_dims_changed(): the triggers of tracks and users.  Before
 * a statement, it keeps this transaction's scans from the shared cache;
 * after a row, or before a TRUNCATE, it marks the transaction, whose commit
 * will bump the generation.
 */
Datum
streamkpi_kpi_dims_changed(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("streamkpi._kpi_dims_changed() must be called as a trigger")));
	xact_writes_dims = true;
	if (TRIGGER_FIRED_FOR_ROW(td->tg_event) || TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
	{
		xact_wrote_dims = true;
		/* a write after our pre-commit (from another callback) counts now */
		if (xact_precommitted)
			dims_commit_begin();
	}
	return PointerGetDatum(NULL);
}

/* ---- the cache ---- */

typedef struct DimsKey
{
	const char *data;
	uint32		len;
} DimsKey;

typedef struct DimsEntry
{
	DimsKey		key;
	uint32		hash;
	KpiDimValue value;			/* of a string: its id in ids[0] */
	char		status;
} DimsEntry;

#define SH_PREFIX kpi_dims
#define SH_ELEMENT_TYPE DimsEntry
#define SH_KEY_TYPE DimsKey
#define SH_KEY key
#define SH_HASH_KEY(tb, k) hash_bytes((const unsigned char *) (k).data, (k).len)
#define SH_EQUAL(tb, x, y) ((x).len == (y).len && memcmp((x).data, (y).data, (x).len) == 0)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, e) ((e)->hash)
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/*
 * Tracks and users are read whole up to these sizes, and as many keys are
 * cached at most.
 */
#define KPI_TRACKS_LOAD_MAX_ROWS	100000.0
#define KPI_USERS_LOAD_MAX_ROWS		1000000.0

typedef struct DimsTable
{
	struct kpi_dims_hash *rows; /* by primary key */
	bool		complete;		/* every row is in rows */
	Oid			relid;
	double		max_rows;
	KpiDimValue missing;		/* of a key not in the table */
} DimsTable;

struct KpiDimsCache
{
	MemoryContext cxt;			/* everything below that is allocated */
	DimsTable	tracks;
	DimsTable	users;
	struct kpi_dims_hash *strings;	/* the values, interned */
	KpiText    *strs;
	uint32		nstrs;
	uint32		maxstrs;
	char	   *arena;			/* copies of keys and values */
	Size		arena_left;
	bool		shared;			/* holds the tables as of generation, for
								 * any scan that checks with it */
	uint64		generation;
	bool		stale;			/* a table's relcache entry went */
	bool		in_use;			/* a scan runs, or ended in an error */
	bool		locked;			/* the tables are in ShareUpdateExclusiveLock */
	uint64		generation_before;	/* before the scan's snapshot */
};

static KpiDimsCache dims_cache;

#define DIMS_ARENA_BLOCK	(64 * 1024)

static const char *
dims_copy(KpiDimsCache *c, const char *data, uint32 len)
{
	char	   *copy;

	if (c->arena_left < len)
	{
		Size		size = Max(DIMS_ARENA_BLOCK, len);

		c->arena = MemoryContextAlloc(c->cxt, size);
		c->arena_left = size;
	}
	copy = c->arena;
	memcpy(copy, data, len);
	c->arena += len;
	c->arena_left -= len;
	return copy;
}

/* the id of a value */
static uint32
dims_intern(KpiDimsCache *c, const KpiText *t)
{
	DimsKey		key = {t->data, t->len};
	bool		found;
	DimsEntry  *e = kpi_dims_insert(c->strings, key, &found);

	if (!found)
	{
		e->key.data = dims_copy(c, t->data, t->len);
		if (c->nstrs == c->maxstrs)
		{
			c->maxstrs *= 2;
			c->strs = repalloc(c->strs, c->maxstrs * sizeof(KpiText));
		}
		c->strs[c->nstrs].data = e->key.data;
		c->strs[c->nstrs].len = t->len;
		e->value.ids[0] = c->nstrs++;
	}
	return e->value.ids[0];
}

static void
dims_track_value(KpiDimsCache *c, const KpiTrackAttrs *attrs, KpiDimValue *v)
{
	memset(v, 0, sizeof(*v));
	v->ids[0] = dims_intern(c, &attrs->genre);
	v->has_duration = attrs->has_duration;
	v->duration_ms = attrs->duration_ms;
}

static void
dims_user_value(KpiDimsCache *c, const KpiUserAttrs *attrs, KpiDimValue *v)
{
	memset(v, 0, sizeof(*v));
	v->ids[0] = dims_intern(c, &attrs->subscription);
	v->ids[1] = dims_intern(c, &attrs->country);
	v->ids[2] = dims_intern(c, &attrs->age_group);
}

/* Empty the cache (its state, shared or not, is the caller's). */
static void
dims_clear(KpiDimsCache *c)
{
	KpiTrackAttrs no_track = {{0}};
	KpiUserAttrs no_user;

	MemoryContextReset(c->cxt);
	c->arena = NULL;
	c->arena_left = 0;
	c->strings = kpi_dims_create(c->cxt, 64, NULL);
	c->maxstrs = 64;
	c->strs = MemoryContextAlloc(c->cxt, c->maxstrs * sizeof(KpiText));
	c->nstrs = 0;
	c->tracks.rows = kpi_dims_create(c->cxt, 1024, NULL);
	c->tracks.complete = false;
	c->tracks.max_rows = KPI_TRACKS_LOAD_MAX_ROWS;
	kpi_text_or_unknown(&no_track.genre, NULL, 0);
	dims_track_value(c, &no_track, &c->tracks.missing);
	c->users.rows = kpi_dims_create(c->cxt, 1024, NULL);
	c->users.complete = false;
	c->users.max_rows = KPI_USERS_LOAD_MAX_ROWS;
	kpi_text_or_unknown(&no_user.subscription, NULL, 0);
	no_user.country = no_user.age_group = no_user.subscription;
	dims_user_value(c, &no_user, &c->users.missing);
}

/* a key's entry, added with its value */
static const KpiDimValue *
dims_add(KpiDimsCache *c, DimsTable *t, const char *id, uint32 len, const KpiDimValue *v)
{
	DimsKey		key = {id, len};
	bool		found;
	DimsEntry  *e = kpi_dims_insert(t->rows, key, &found);

	if (!found)
		e->key.data = dims_copy(c, id, len);
	e->value = *v;
	return &e->value;
}

/*
 * The cached value of key id in t: the table's 'unknown' for a NULL id or
 * a key missing from a table held whole; NULL when it must be looked up.
 */
static const KpiDimValue *
dims_cached(DimsTable *t, const char *id, uint32 len)
{
	DimsKey		key = {id, len};
	DimsEntry  *e;

	if (id == NULL)
		return &t->missing;
	e = kpi_dims_lookup(t->rows, key);
	if (e != NULL)
		return &e->value;
	return t->complete ? &t->missing : NULL;
}

/*
 * A track's attributes ('unknown' genre and no duration for a track
 * missing from the table or id NULL), valid until the next call.
 */
const KpiDimValue *
kpi_dims_cache_track(KpiDimsCache *c, KpiDims *dims, const char *id, uint32 len)
{
	const KpiDimValue *cached = dims_cached(&c->tracks, id, len);
	KpiTrackAttrs attrs;
	KpiDimValue v;

	if (cached != NULL)
		return cached;
	kpi_dims_track(dims, id, len, &attrs);
	dims_track_value(c, &attrs, &v);
	return dims_add(c, &c->tracks, id, len, &v);
}

/* A user's attributes, as kpi_dims_cache_track()'s. */
const KpiDimValue *
kpi_dims_cache_user(KpiDimsCache *c, KpiDims *dims, const char *id, uint32 len)
{
	const KpiDimValue *cached = dims_cached(&c->users, id, len);
	KpiUserAttrs attrs;
	KpiDimValue v;

	if (cached != NULL)
		return cached;
	kpi_dims_user(dims, id, len, &attrs);
	dims_user_value(c, &attrs, &v);
	return dims_add(c, &c->users, id, len, &v);
}

/* the value with id id */
const KpiText *
kpi_dims_cache_value(KpiDimsCache *c, uint32 id)
{
	Assert(id < c->nstrs);
	return &c->strs[id];
}

static void
dims_load_track(void *arg, const char *id, uint32 len, const KpiTrackAttrs *attrs)
{
	KpiDimsCache *c = (KpiDimsCache *) arg;
	KpiDimValue v;

	dims_track_value(c, attrs, &v);
	(void) dims_add(c, &c->tracks, id, len, &v);
}

static void
dims_load_user(void *arg, const char *id, uint32 len, const KpiUserAttrs *attrs)
{
	KpiDimsCache *c = (KpiDimsCache *) arg;
	KpiDimValue v;

	dims_user_value(c, attrs, &v);
	(void) dims_add(c, &c->users, id, len, &v);
}

/* many events for the rows of a table: reading it whole costs less */
static bool
kpi_worth_loading(DimsTable *t, KpiDim *dim, int64 expected_events)
{
	double		rows;

	if (t->complete)
		return false;
	rows = kpi_dim_rows(dim);
	return rows <= t->max_rows && (double) expected_events >= Max(1000.0, rows / 8);
}

/*
 * Before the first event of a delta: read a table whole when the events
 * are many for its rows (as a hash join would) and it is small enough to
 * hold, unless the cache has it whole already; else keys are looked up as
 * they come.
 */
void
kpi_dims_cache_choose(KpiDimsCache *c, KpiDims *dims, int64 expected_events)
{
	bool		tracks = kpi_worth_loading(&c->tracks, &dims->tracks, expected_events);
	bool		users = kpi_worth_loading(&c->users, &dims->users, expected_events);

	if (!tracks && !users)
		return;
	kpi_dims_load(dims, tracks ? dims_load_track : NULL,
				  users ? dims_load_user : NULL, c);
	c->tracks.complete |= tracks;
	c->users.complete |= users;
}

/* ---- whether the cache serves a scan ---- */

static void
dims_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == dims_cache.tracks.relid ||
		relid == dims_cache.users.relid)
		dims_cache.stale = true;
}

/*
 * A function changed: perhaps our trigger function, replaced by one that
 * does not tell the caches of writes.  dims_triggers_ok() sees only what
 * is in place at a round, so writes made in between would go unseen.
 */
static void
dims_proc_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	dims_cache.stale = true;
}

/* Is foid our trigger function? */
static bool
dims_is_ours(Oid foid)
{
	HeapTuple	proc = SearchSysCache1(PROCOID, ObjectIdGetDatum(foid));
	bool		ours = false;
	bool		isnull;

	if (!HeapTupleIsValid(proc))
		return false;
	if (((Form_pg_proc) GETSTRUCT(proc))->prolang == ClanguageId)
	{
		Datum		src = SysCacheGetAttr(PROCOID, proc, Anum_pg_proc_prosrc, &isnull);

		ours = !isnull &&
			strcmp(TextDatumGetCString(src), "streamkpi_kpi_dims_changed") == 0;
	}
	ReleaseSysCache(proc);
	return ours;
}

/*
 * Do our triggers fire, whoever writes rel: before every statement that
 * writes it, and after every row it writes?
 */
static bool
dims_triggers_ok(Relation rel)
{
	const int16 statements = TRIGGER_TYPE_INSERT | TRIGGER_TYPE_UPDATE |
		TRIGGER_TYPE_DELETE | TRIGGER_TYPE_TRUNCATE;
	const int16 rows = TRIGGER_TYPE_INSERT | TRIGGER_TYPE_UPDATE | TRIGGER_TYPE_DELETE;
	TriggerDesc *td = rel->trigdesc;
	int16		before_statement = 0;
	int16		after_row = 0;

	for (int i = 0; td != NULL && i < td->numtriggers; i++)
	{
		Trigger    *t = &td->triggers[i];

		if (t->tgenabled != TRIGGER_FIRES_ALWAYS || t->tgqual != NULL ||
			t->tgnattr > 0 || !dims_is_ours(t->tgfoid))
			continue;
		if (TRIGGER_FOR_BEFORE(t->tgtype) && !TRIGGER_FOR_ROW(t->tgtype))
			before_statement |= t->tgtype & statements;
		else if (TRIGGER_FOR_AFTER(t->tgtype) && TRIGGER_FOR_ROW(t->tgtype))
			after_row |= t->tgtype & rows;
	}
	return before_statement == statements && after_row == rows;
}

/* ShareUpdateExclusiveLock on both tables, if free now */
static bool
dims_lock(KpiDims *dims)
{
	Oid			tracks = RelationGetRelid(dims->tracks.rel);

	if (!ConditionalLockRelationOid(tracks, ShareUpdateExclusiveLock))
		return false;
	if (ConditionalLockRelationOid(RelationGetRelid(dims->users.rel),
								   ShareUpdateExclusiveLock))
		return true;
	UnlockRelationOid(tracks, ShareUpdateExclusiveLock);
	return false;
}

/*
 * The cache for a scan over the open dims, before the scan's snapshot is
 * taken; kpi_dims_cache_check() must follow once it is.
 */
KpiDimsCache *
kpi_dims_cache_begin(KpiDims *dims)
{
	KpiDimsCache *c = &dims_cache;

	if (c->cxt == NULL)
	{
		c->cxt = AllocSetContextCreate(TopMemoryContext, "streamkpi KPI dims cache",
									   ALLOCSET_DEFAULT_SIZES);
		CacheRegisterRelcacheCallback(dims_relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(PROCOID, dims_proc_callback, (Datum) 0);
	}
	/* cached by a scan for itself, or by one that failed */
	if (c->in_use || !c->shared)
	{
		dims_clear(c);
		c->shared = false;
	}
	c->in_use = true;
	/* the check reads the generation around the snapshot */
	c->locked = dims_shared != NULL && !IsolationUsesXactSnapshot() &&
		!xact_writes_dims && dims_lock(dims);
	if (c->locked)
		c->generation_before = dims_generation(NULL);
	return c;
}

/*
 * After the scan's snapshot is taken: keep what the cache holds if it is
 * of the same tables and generation as the snapshot sees, else empty it;
 * and decide whether it may serve later scans.
 */
void
kpi_dims_cache_check(KpiDimsCache *c, KpiDims *dims)
{
	Oid			tracks = RelationGetRelid(dims->tracks.rel);
	Oid			users = RelationGetRelid(dims->users.rel);
	bool		exact = false;
	bool		stale;
	int			committing;
	uint64		generation;

	if (c->locked)
	{
		AcceptInvalidationMessages();
		generation = dims_generation(&committing);
		exact = generation == c->generation_before && committing == 0 &&
			!xact_writes_dims && dims_triggers_ok(dims->tracks.rel) &&
			dims_triggers_ok(dims->users.rel);
		UnlockRelationOid(tracks, ShareUpdateExclusiveLock);
		UnlockRelationOid(users, ShareUpdateExclusiveLock);
		c->locked = false;
	}
	/* invalidations from now on are for the next scan */
	stale = c->stale;
	c->stale = false;
	if (!exact || stale || c->generation != c->generation_before ||
		c->tracks.relid != tracks || c->users.relid != users)
		dims_clear(c);
	elog(DEBUG1, "KPI dims cache: %s, %u tracks%s and %u users%s held",
		 exact ? "shared" : "for this scan only",
		 c->tracks.rows->members, c->tracks.complete ? " (all)" : "",
		 c->users.rows->members, c->users.complete ? " (all)" : "");
	c->shared = exact;
	c->generation = c->generation_before;
	c->tracks.relid = tracks;
	c->users.relid = users;
}

/* Empty a cache that outgrew its bound; between deltas only. */
void
kpi_dims_cache_trim(KpiDimsCache *c)
{
	if (c->tracks.rows->members > c->tracks.max_rows ||
		c->users.rows->members > c->users.max_rows)
		dims_clear(c);
}

/*
 * The scan is over: keep the cache for the next scans, or free it.  A
 * statement of this transaction that wrote the tables while the scan ran
 * (a data-modifying WITH around the call) may have shown it its rows.
 */
void
kpi_dims_cache_end(KpiDimsCache *c, bool keep)
{
	if (keep && c->shared && !xact_writes_dims)
		kpi_dims_cache_trim(c);
	else
	{
		dims_clear(c);
		c->shared = false;
	}
	c->in_use = false;
}
