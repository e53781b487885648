/*-------------------------------------------------------------------------
 *
 * kpi_users_cache.c
 *	  The KPI worker's day users sketches: per day key (a genre, or a
 *	  dimension's value), the sketch it last wrote or read, unpacked, with
 *	  its count.  A round merges its users into the state it holds instead
 *	  of detoasting the stored value, and a key whose state the round left
 *	  as it was (most keys, once a day has seen its regular users) needs
 *	  neither the count's pass over the registers nor a write.
 *
 *	  An entry is used only while the stored row is the version it knows
 *	  (its xmin is the transaction the entry names): anything else that
 *	  wrote the row (refresh_kpis(), a round rolled back) leaves a row it
 *	  does not match, and the stored value is read again (as is a frozen
 *	  row's, whose xmin names no transaction any more).  An entry being
 *	  merged names no transaction until its row is written, so a round
 *	  that fails in between leaves it unmatched.  Only in the KPI worker,
 *	  where nothing else writes the day state in a round's transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "common/hashfn.h"
#include "utils/memutils.h"

#include "kpi.h"

/* entries idle for this many rounds go (the keys of earlier days) */
#define USERS_CACHE_IDLE_ROUNDS 600

typedef struct UsersEntry
{
	KpiText		key;			/* kpi_merge.c's key bytes */
	uint32		hash;
	char		status;
	MemoryContext cxt;			/* the state's, NULL while an entry is new */
	SketchHll  *users;
	int64		count;			/* sketch_hll_cardinality(users) */
	TransactionId xid;			/* the row version it is, or invalid */
	uint64		used;			/* the last round that used it */
} UsersEntry;

static inline bool
users_key_equal(KpiText a, KpiText b)
{
	return a.len == b.len && memcmp(a.data, b.data, a.len) == 0;
}

#define SH_PREFIX users_cache
#define SH_ELEMENT_TYPE UsersEntry
#define SH_KEY_TYPE KpiText
#define SH_KEY key
#define SH_HASH_KEY(tb, k) hash_bytes((const unsigned char *) (k).data, (int) (k).len)
#define SH_EQUAL(tb, a, b) users_key_equal(a, b)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, e) (e)->hash
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

static MemoryContext users_cxt = NULL;
static struct users_cache_hash *users_cache = NULL;
static uint64 users_rounds = 0;

static void
users_entry_free(UsersEntry *e)
{
	if (e->cxt != NULL)
		MemoryContextDelete(e->cxt);
	pfree((void *) e->key.data);
}

/* A new round: entries that no round used for long go. */
void
kpi_users_cache_round(void)
{
	users_cache_iterator it;
	UsersEntry *e;

	if (users_cache == NULL)
	{
		users_cxt = AllocSetContextCreate(TopMemoryContext,
										  "streamkpi day users cache",
										  ALLOCSET_DEFAULT_SIZES);
		users_cache = users_cache_create(users_cxt, 64, NULL);
	}
	users_rounds++;
	users_cache_start_iterate(users_cache, &it);
	while ((e = users_cache_iterate(users_cache, &it)) != NULL)
		if (users_rounds - e->used > USERS_CACHE_IDLE_ROUNDS)
		{
			users_entry_free(e);
			users_cache_delete_item(users_cache, e);
		}
}

/* The entry of key, made (with no state) if there is none. */
static UsersEntry *
users_entry(KpiText key)
{
	bool		found;
	UsersEntry *e = users_cache_insert(users_cache, key, &found);

	if (!found)
	{
		char	   *copy = MemoryContextAlloc(users_cxt, key.len);

		memcpy(copy, key.data, key.len);
		e->key.data = copy;
		e->cxt = NULL;
		e->users = NULL;
		e->xid = InvalidTransactionId;
	}
	e->used = users_rounds;
	return e;
}

/*
 * Key's users after the round's delta (not NULL): the stored sketch
 * (stored, a datum that is detoasted only when the entry does not match
 * the row's xmin; has_stored false: the key has no row yet) with the
 * delta merged in.  *packed gets the value to write, or NULL when the
 * stored one stays; *count its sketch_hll_cardinality().
 */
void
kpi_users_cache_merge(KpiText key, bool has_stored, Datum stored, TransactionId xmin,
					  const SketchHll *delta, bytea **packed, int64 *count)
{
	UsersEntry *e = users_entry(key);
	bool		matches = has_stored && e->cxt != NULL &&
		TransactionIdIsNormal(xmin) && TransactionIdEquals(e->xid, xmin);
	bool		changed;

	e->xid = InvalidTransactionId;	/* until its row is settled */
	if (!matches)
	{
		if (e->cxt != NULL)
			MemoryContextDelete(e->cxt);
		e->cxt = NULL;
		e->cxt = AllocSetContextCreate(users_cxt, "streamkpi day users",
									   ALLOCSET_SMALL_SIZES);
	}
	if (!matches && has_stored)
	{
		struct varlena *v = PG_DETOAST_DATUM_PACKED(stored);

		e->users = sketch_hll_unpack(e->cxt, (const uint8 *) VARDATA_ANY(v),
									 VARSIZE_ANY_EXHDR(v));
	}
	if (!has_stored)
	{
		e->users = sketch_hll_copy(e->cxt, delta);
		changed = true;
	}
	else
		changed = sketch_hll_merge_changed(e->users, delta);
	/* a matching entry's count stands while its state does */
	if (changed || !matches)
		e->count = sketch_hll_cardinality(e->users);
	*packed = changed ? sketch_hll_pack(e->users) : NULL;
	*count = e->count;
	if (!changed)
		e->xid = xmin;			/* not written: the row stays that version */
}

/* Key's row was just written by the current transaction. */
void
kpi_users_cache_written(KpiText key)
{
	UsersEntry *e = users_cache_lookup(users_cache, key);

	if (e != NULL && e->cxt != NULL)
		e->xid = GetCurrentTransactionIdIfAny();
}
