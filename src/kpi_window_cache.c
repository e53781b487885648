/*-------------------------------------------------------------------------
 *
 * kpi_window_cache.c
 *	  The KPI worker's cache of the windows' part 0 (kpi_window.c): the
 *	  bytes it wrote last, so that a later round does not read them back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "kpi_window.h"

/*
 * Part 0 of the windows the KPI worker wrote, so that a later round does
 * not read their counters back: detoasting them took a fifth of a big
 * round.  In real time the four partitions of a topic can be minutes
 * apart, so a round touches windows that the round before did not, and
 * the cache keeps every window written in the last WIN_CACHE_IDLE_ROUNDS
 * rounds, the least recently used going first beyond WIN_CACHE_MAX_BYTES.
 * An entry is used only while the stored row is the version the worker
 * wrote, whose xmin is the writing transaction: a write by anything else
 * (refresh_kpis(), a round rolled back) leaves a row it does not match,
 * and a frozen row's xmin names no transaction any more.
 * Only in the KPI worker: nothing else writes window_state in its rounds.
 */
typedef struct WinCached
{
	int64		usecs;			/* the window's size */
	TimestampTz start;
	TransactionId xid;			/* the transaction that wrote it */
	uint64		used;			/* the last write that wrote or used it */
	bytea	   *part0;
} WinCached;

#define WIN_CACHE_IDLE_ROUNDS	600
#define WIN_CACHE_MAX_BYTES		((Size) 128 * 1024 * 1024)

static MemoryContext win_cache_cxt = NULL;
static WinCached *win_cache = NULL;
static int	win_cache_n = 0;
static uint64 win_cache_writes = 0;	/* window_cache_update() calls */

static int
win_cached_cmp(const void *x, const void *y)
{
	const WinCached *a = x;
	const WinCached *b = y;

	if (a->usecs != b->usecs)
		return a->usecs < b->usecs ? -1 : 1;
	if (a->start != b->start)
		return a->start < b->start ? -1 : 1;
	return 0;
}

/* The cached part 0 of a window if its stored row was written by xmin. */
const bytea *
window_cache_find(int64 usecs, TimestampTz start, TransactionId xmin)
{
	WinCached	key = {usecs, start, InvalidTransactionId, 0, NULL};
	WinCached  *c;

	if (win_cache_n == 0)
		return NULL;
	c = bsearch(&key, win_cache, win_cache_n, sizeof(WinCached), win_cached_cmp);
	if (c == NULL || !TransactionIdIsNormal(xmin) || !TransactionIdEquals(c->xid, xmin))
		return NULL;
	c->used = win_cache_writes;
	return c->part0;
}

/* most recently used first */
static int
win_cached_recent_cmp(const void *x, const void *y)
{
	const WinCached *a = x;
	const WinCached *b = y;

	return (a->used < b->used) - (a->used > b->used);
}

/*
 * Add the n part 0 rows just written by the current transaction (windows
 * of usecs[i] starting at starts[i], part0s[i] their bytea), in place of
 * what the cache held for their windows, and drop the entries that were
 * idle too long or do not fit.
 */
void
window_cache_update(const int64 *usecs, const Datum *starts, const Datum *part0s, int n)
{
	TransactionId xid = GetCurrentTransactionIdIfAny();
	WinCached  *next;
	int			m = 0;
	int			nnew;
	Size		bytes = 0;

	if (win_cache_cxt == NULL)
		win_cache_cxt = AllocSetContextCreate(TopMemoryContext,
											  "streamkpi window part 0 cache",
											  ALLOCSET_DEFAULT_SIZES);
	win_cache_writes++;
	next = MemoryContextAlloc(win_cache_cxt, (win_cache_n + n + 1) * sizeof(WinCached));
	for (int i = 0; TransactionIdIsValid(xid) && i < n; i++)
	{
		const bytea *b = DatumGetByteaPP(part0s[i]);

		next[m].usecs = usecs[i];
		next[m].start = DatumGetTimestampTz(starts[i]);
		next[m].xid = xid;
		next[m].used = win_cache_writes;
		next[m].part0 = MemoryContextAlloc(win_cache_cxt, VARSIZE_ANY(b));
		memcpy(next[m].part0, b, VARSIZE_ANY(b));
		m++;
	}
	qsort(next, m, sizeof(WinCached), win_cached_cmp);
	nnew = m;
	/* the old entries of other windows that were used lately */
	for (int i = 0; i < win_cache_n; i++)
	{
		WinCached  *old = &win_cache[i];

		if (win_cache_writes - old->used > WIN_CACHE_IDLE_ROUNDS ||
			bsearch(old, next, nnew, sizeof(WinCached), win_cached_cmp) != NULL)
			pfree(old->part0);
		else
			next[m++] = *old;
	}
	if (win_cache != NULL)
		pfree(win_cache);
	qsort(next, m, sizeof(WinCached), win_cached_recent_cmp);
	for (int i = 0; i < m; i++)
	{
		bytes += VARSIZE_ANY(next[i].part0);
		if (bytes > WIN_CACHE_MAX_BYTES)
		{
			for (int j = i; j < m; j++)
				pfree(next[j].part0);
			m = i;
			break;
		}
	}
	qsort(next, m, sizeof(WinCached), win_cached_cmp);
	win_cache = next;
	win_cache_n = m;
}
