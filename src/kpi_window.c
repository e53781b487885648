/*-------------------------------------------------------------------------
 *
 * kpi_window.c
 *	  The window step of the KPI engine.  The state of one window (a size
 *	  of streamkpi.trending_windows and a start) is one row of
 *	  streamkpi.window_state: its (track, region) entries, sorted by track
 *	  and region bytes, packed into one bytea:
 *
 *	    varint entries, then per entry:
 *	    varint track length, track bytes, varint region length, region bytes,
 *	    varint plays, varint skips, varint likes, zigzag varint listen_ms,
 *	    varint sketch length (0: nobody played), the players' hll value
 *
 *	  A round reads the rows of the windows its events fall in, merges the
 *	  deltas in (one pass over two sorted lists), writes each row back in
 *	  one statement, and derives from the merged entries the trending rows
 *	  of the touched (window, region) keys and the track_windows rows of the
 *	  touched (window, track) keys.  One row per window instead of one per
 *	  (window, region, track) is what makes a round's writes scale with
 *	  the windows it touches rather than with its events.
 *
 *	  streamkpi.window_track_state shows the entries as rows.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "kpi.h"

#define WINDOW_STATE_VERSION 1

/* One (track, region) entry of a window. */
typedef struct WinEntry
{
	const char *track;
	uint32		track_len;
	const char *region;
	uint32		region_len;
	int64		plays;
	int64		skips;
	int64		likes;
	int64		listen_ms;
	const uint8 *packed;		/* the stored players' sketch, or NULL */
	uint32		packed_len;
	SketchHll  *users;			/* or the merged one; NULL: see packed */
	bool		touched;
} WinEntry;

/* A window the delta touched. */
typedef struct Win
{
	int			size;			/* index into KpiDelta.sizes */
	TimestampTz start;
	WinEntry   *delta;			/* sorted */
	int			ndelta;
	const uint8 *stored;		/* the state row's bytes, or NULL */
	uint32		stored_len;
	WinEntry   *merged;			/* sorted */
	int			nmerged;
} Win;

/* ---- the packed form ---- */

static void
put_varint(StringInfo buf, uint64 v)
{
	while (v >= 0x80)
	{
		appendStringInfoChar(buf, (char) ((v & 0x7f) | 0x80));
		v >>= 7;
	}
	appendStringInfoChar(buf, (char) v);
}

static void
window_state_corrupt(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("corrupt row in streamkpi.window_state"),
			 errhint("Recompute the days it covers with streamkpi.refresh_kpis().")));
}

static uint64
take_varint(const uint8 **p, const uint8 *end)
{
	uint64		v = 0;
	int			shift = 0;

	for (;;)
	{
		if (*p >= end || shift > 63)
			window_state_corrupt();
		v |= (uint64) (**p & 0x7f) << shift;
		if ((*(*p)++ & 0x80) == 0)
			return v;
		shift += 7;
	}
}

static const uint8 *
take_bytes(const uint8 **p, const uint8 *end, uint32 *len)
{
	uint64		n = take_varint(p, end);
	const uint8 *start = *p;

	if (n > (uint64) (end - *p))
		window_state_corrupt();
	*len = (uint32) n;
	*p += n;
	return start;
}

static bytea *
window_pack(const WinEntry *es, int n)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoSpaces(&buf, VARHDRSZ);
	appendStringInfoChar(&buf, WINDOW_STATE_VERSION);
	put_varint(&buf, n);
	for (int i = 0; i < n; i++)
	{
		const WinEntry *e = &es[i];
		int64		ms = e->listen_ms;

		put_varint(&buf, e->track_len);
		appendBinaryStringInfo(&buf, e->track, e->track_len);
		put_varint(&buf, e->region_len);
		appendBinaryStringInfo(&buf, e->region, e->region_len);
		put_varint(&buf, e->plays);
		put_varint(&buf, e->skips);
		put_varint(&buf, e->likes);
		put_varint(&buf, ((uint64) ms << 1) ^ (uint64) (ms >> 63));
		if (e->users != NULL)
		{
			bytea	   *u = sketch_hll_pack(e->users);

			put_varint(&buf, VARSIZE(u) - VARHDRSZ);
			appendBinaryStringInfo(&buf, VARDATA(u), VARSIZE(u) - VARHDRSZ);
		}
		else
		{
			put_varint(&buf, e->packed_len);
			if (e->packed_len > 0)
				appendBinaryStringInfo(&buf, (const char *) e->packed, e->packed_len);
		}
	}
	SET_VARSIZE(buf.data, buf.len);
	return (bytea *) buf.data;
}

/* The entries of a packed state, pointing into it. */
static WinEntry *
window_unpack(const uint8 *p, uint32 len, int *n)
{
	const uint8 *end = p + len;
	WinEntry   *es;
	uint64		count;

	if (len < 1 || *p++ != WINDOW_STATE_VERSION)
		window_state_corrupt();
	count = take_varint(&p, end);
	if (count > len)
		window_state_corrupt();
	es = palloc0(Max(count, 1) * sizeof(WinEntry));
	for (uint64 i = 0; i < count; i++)
	{
		WinEntry   *e = &es[i];
		uint64		zz;

		e->track = (const char *) take_bytes(&p, end, &e->track_len);
		e->region = (const char *) take_bytes(&p, end, &e->region_len);
		e->plays = (int64) take_varint(&p, end);
		e->skips = (int64) take_varint(&p, end);
		e->likes = (int64) take_varint(&p, end);
		zz = take_varint(&p, end);
		e->listen_ms = (int64) (zz >> 1) ^ -(int64) (zz & 1);
		e->packed = take_bytes(&p, end, &e->packed_len);
		if (e->packed_len == 0)
			e->packed = NULL;
	}
	if (p != end)
		window_state_corrupt();
	*n = (int) count;
	return es;
}

/* ---- merging ---- */

static int
bytes_order(const char *a, uint32 alen, const char *b, uint32 blen)
{
	int			c = memcmp(a, b, Min(alen, blen));

	if (c != 0)
		return c;
	return (alen > blen) - (alen < blen);
}

/* track, then region, bytes ascending */
static int
entry_order(const WinEntry *x, const WinEntry *y)
{
	int			c = bytes_order(x->track, x->track_len, y->track, y->track_len);

	return c != 0 ? c : bytes_order(x->region, x->region_len, y->region, y->region_len);
}

static int
entry_cmp(const void *a, const void *b)
{
	return entry_order((const WinEntry *) a, (const WinEntry *) b);
}

/* the players' sketch of an entry, unpacked when it was stored */
static SketchHll *
entry_users(WinEntry *e)
{
	if (e->users == NULL && e->packed != NULL)
		e->users = sketch_hll_unpack(CurrentMemoryContext, e->packed, e->packed_len);
	return e->users;
}

/* stored + delta, both sorted, into merged */
static void
window_merge(Win *w)
{
	WinEntry   *old = NULL;
	int			nold = 0;
	int			i = 0;
	int			j = 0;

	if (w->stored != NULL)
		old = window_unpack(w->stored, w->stored_len, &nold);
	w->merged = palloc((nold + w->ndelta + 1) * sizeof(WinEntry));
	w->nmerged = 0;
	while (i < nold || j < w->ndelta)
	{
		int			c = i >= nold ? 1 : j >= w->ndelta ? -1
		: entry_order(&old[i], &w->delta[j]);
		WinEntry   *m = &w->merged[w->nmerged++];

		if (c < 0)
		{
			*m = old[i++];
			continue;
		}
		if (c > 0)
		{
			*m = w->delta[j++];
			continue;
		}
		*m = old[i++];
		m->plays += w->delta[j].plays;
		m->skips += w->delta[j].skips;
		m->likes += w->delta[j].likes;
		m->listen_ms += w->delta[j].listen_ms;
		m->touched = true;
		if (w->delta[j].users != NULL)
		{
			if (entry_users(m) == NULL)
				m->users = w->delta[j].users;
			else
				sketch_hll_merge(m->users, w->delta[j].users);
		}
		j++;
	}
}

/* ---- deriving trending and track_windows ---- */

/* The statements' parameters, one set per flush. */
typedef struct WinOutput
{
	KpiArray	state[3];		/* start, size, tracks */
	KpiArray	region_keys[3];	/* size, start, region: trending to replace */
	KpiArray	trending[8];	/* size, start, region, rank, track, plays, skips, likes */
	KpiArray	track_rows[7];	/* size, start, track, plays, listen_ms, users
								 * (exact), users (sketch, when not exact) */
} WinOutput;

static Datum
bytes_text(const char *p, uint32 len)
{
	return PointerGetDatum(cstring_to_text_with_len(p, len));
}

/* plays desc, track asc: the trending order within a region */
static int
trending_cmp(const void *a, const void *b)
{
	const WinEntry *x = *(WinEntry *const *) a;
	const WinEntry *y = *(WinEntry *const *) b;
	int			c = bytes_order(x->region, x->region_len, y->region, y->region_len);

	if (c != 0)
		return c;
	if (x->plays != y->plays)
		return x->plays > y->plays ? -1 : 1;
	return bytes_order(x->track, x->track_len, y->track, y->track_len);
}

static bool
same_region(const WinEntry *x, const WinEntry *y)
{
	return bytes_order(x->region, x->region_len, y->region, y->region_len) == 0;
}

/* The touched regions of w (every region in a refresh) get new rankings. */
static void
derive_trending(KpiDelta *d, Win *w, WinOutput *out)
{
	WinEntry  **ranked = palloc((w->nmerged + 1) * sizeof(WinEntry *));
	Datum		size = IntervalPGetDatum(&d->sizes[w->size].size);
	Datum		start = TimestampTzGetDatum(w->start);
	int			top_n = d->sizes[w->size].top_n;
	int			i = 0;

	for (int k = 0; k < w->nmerged; k++)
		ranked[k] = &w->merged[k];
	qsort(ranked, w->nmerged, sizeof(WinEntry *), trending_cmp);
	while (i < w->nmerged)
	{
		int			first = i;
		bool		touched = d->refresh;

		for (; i < w->nmerged && same_region(ranked[i], ranked[first]); i++)
			touched |= ranked[i]->touched;
		if (!touched)
			continue;
		kpi_array_add(&out->region_keys[0], size);
		kpi_array_add(&out->region_keys[1], start);
		kpi_array_add(&out->region_keys[2],
					  bytes_text(ranked[first]->region, ranked[first]->region_len));
		for (int k = first; k < i && k - first < top_n && ranked[k]->plays > 0; k++)
		{
			WinEntry   *e = ranked[k];

			kpi_array_add(&out->trending[0], size);
			kpi_array_add(&out->trending[1], start);
			kpi_array_add(&out->trending[2], bytes_text(e->region, e->region_len));
			kpi_array_add(&out->trending[3], Int32GetDatum(k - first + 1));
			kpi_array_add(&out->trending[4], bytes_text(e->track, e->track_len));
			kpi_array_add(&out->trending[5], Int64GetDatum(e->plays));
			kpi_array_add(&out->trending[6], Int64GetDatum(e->skips));
			kpi_array_add(&out->trending[7], Int64GetDatum(e->likes));
		}
	}
}

/*
 * The distinct users of a track_windows row: counted here while the sketch
 * holds them exactly, else its hll value for hll_cardinality() (beyond
 * about 1,280 users).
 */
static void
kpi_add_users(KpiArray *track_rows, SketchHll *users)
{
	int64		exact = sketch_hll_exact_count(users);

	if (exact >= 0)
	{
		kpi_array_add(&track_rows[5], Int64GetDatum(exact));
		kpi_array_add_null(&track_rows[6]);
	}
	else
	{
		kpi_array_add_null(&track_rows[5]);
		kpi_array_add(&track_rows[6], PointerGetDatum(sketch_hll_pack(users)));
	}
}

/* The touched tracks of w (every track in a refresh) get new rows. */
static void
derive_track_windows(KpiDelta *d, Win *w, WinOutput *out)
{
	int			i = 0;

	while (i < w->nmerged)
	{
		int			first = i;
		bool		touched = d->refresh;
		int64		plays = 0;
		int64		listen_ms = 0;
		SketchHll  *users = NULL;

		for (; i < w->nmerged && w->merged[i].track_len == w->merged[first].track_len &&
			 memcmp(w->merged[i].track, w->merged[first].track, w->merged[i].track_len) == 0; i++)
			touched |= w->merged[i].touched;
		if (!touched)
			continue;
		for (int j = first; j < i; j++)
		{
			WinEntry   *e = &w->merged[j];
			SketchHll  *u = entry_users(e);

			plays += e->plays;
			listen_ms += e->listen_ms;
			if (u == NULL)
				continue;
			if (users == NULL)
				users = sketch_hll_create(CurrentMemoryContext, KPI_HLL_LOG2M);
			sketch_hll_merge(users, u);
		}
		if (plays == 0)
			continue;
		kpi_array_add(&out->track_rows[0], IntervalPGetDatum(&d->sizes[w->size].size));
		kpi_array_add(&out->track_rows[1], TimestampTzGetDatum(w->start));
		kpi_array_add(&out->track_rows[2], bytes_text(w->merged[first].track,
													  w->merged[first].track_len));
		kpi_array_add(&out->track_rows[3], Int64GetDatum(plays));
		kpi_array_add(&out->track_rows[4], Int64GetDatum(listen_ms));
		kpi_add_users(out->track_rows, users);
	}
}

/* ---- the step ---- */

static int
win_key_cmp(const void *a, const void *b)
{
	const KpiEntry *x = *(KpiEntry *const *) a;
	const KpiEntry *y = *(KpiEntry *const *) b;

	if (x->key.a != y->key.a)
		return x->key.a < y->key.a ? -1 : 1;
	if (x->key.b != y->key.b)
		return x->key.b < y->key.b ? -1 : 1;
	return 0;
}

/* The touched windows with their delta entries, sorted. */
static Win *
collect_windows(KpiDelta *d, int *nwins)
{
	uint32		n;
	KpiEntry  **es = kpi_table_entries(d->windows, &n);
	Win		   *wins = palloc0((n + 1) * sizeof(Win));
	int			nw = 0;

	qsort(es, n, sizeof(KpiEntry *), win_key_cmp);
	for (uint32 i = 0; i < n; i++)
	{
		Win		   *w;
		WinEntry   *e;
		KpiString  *track = &d->strs[es[i]->key.c & 0xffffffff];
		KpiString  *region = &d->strs[(uint64) es[i]->key.c >> 32];

		if (i == 0 || win_key_cmp(&es[i - 1], &es[i]) != 0)
		{
			w = &wins[nw++];
			w->start = es[i]->key.a;
			w->size = (int) es[i]->key.b;
			w->delta = palloc((n - i) * sizeof(WinEntry));
		}
		w = &wins[nw - 1];
		e = &w->delta[w->ndelta++];
		memset(e, 0, sizeof(WinEntry));
		e->track = track->data;
		e->track_len = track->len;
		e->region = region->data;
		e->region_len = region->len;
		e->plays = es[i]->counts.plays;
		e->skips = es[i]->counts.skips;
		e->likes = es[i]->counts.likes;
		e->listen_ms = es[i]->counts.listen_ms;
		e->users = es[i]->counts.users;
		e->touched = true;
	}
	for (int k = 0; k < nw; k++)
		qsort(wins[k].delta, wins[k].ndelta, sizeof(WinEntry), entry_cmp);
	*nwins = nw;
	return wins;
}

/* Read the stored state rows of the windows, in one statement. */
static void
load_windows(KpiDelta *d, Win *wins, int nw)
{
	KpiArray	args[3];

	kpi_array_init(&args[0], TIMESTAMPTZOID, nw);
	kpi_array_init(&args[1], INTERVALOID, nw);
	kpi_array_init(&args[2], INT4OID, nw);
	for (int k = 0; k < nw; k++)
	{
		kpi_array_add(&args[0], TimestampTzGetDatum(wins[k].start));
		kpi_array_add(&args[1], IntervalPGetDatum(&d->sizes[wins[k].size].size));
		kpi_array_add(&args[2], Int32GetDatum(k));
	}
	kpi_run("SELECT k.i, w.tracks"
			" FROM unnest($1, $2, $3) k(st, sz, i)"
			" JOIN streamkpi.window_state w"
			" ON w.window_start OPERATOR(pg_catalog.=) k.st"
			" AND w.window_size OPERATOR(pg_catalog.=) k.sz",
			3, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int			k = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r],
													SPI_tuptable->tupdesc, 1, &isnull));
		bytea	   *b = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[r],
													  SPI_tuptable->tupdesc, 2, &isnull));

		wins[k].stored = (const uint8 *) VARDATA_ANY(b);
		wins[k].stored_len = VARSIZE_ANY_EXHDR(b);
	}
}

static void
write_windows(WinOutput *out, const char *hll)
{
	kpi_run("INSERT INTO streamkpi.window_state AS s (window_start, window_size, tracks)"
			" SELECT * FROM unnest($1, $2, $3)"
			" ON CONFLICT (window_start, window_size) DO UPDATE SET tracks = excluded.tracks",
			3, out->state, SPI_OK_INSERT);
	if (out->region_keys[0].n > 0)
		kpi_run("DELETE FROM streamkpi.trending t"
				" USING unnest($1, $2, $3) k(sz, st, r)"
				" WHERE t.window_size OPERATOR(pg_catalog.=) k.sz"
				" AND t.window_start OPERATOR(pg_catalog.=) k.st"
				" AND t.region OPERATOR(pg_catalog.=) k.r",
				3, out->region_keys, SPI_OK_DELETE);
	if (out->trending[0].n > 0)
		kpi_run("INSERT INTO streamkpi.trending (window_size, window_start, region, rank,"
				" window_end, track_id, plays, skips, likes)"
				" SELECT sz, st, r, rk, st OPERATOR(pg_catalog.+) sz, tr, p, sk, lk"
				" FROM unnest($1, $2, $3, $4, $5, $6, $7, $8)"
				" x(sz, st, r, rk, tr, p, sk, lk)",
				8, out->trending, SPI_OK_INSERT);
	if (out->track_rows[0].n > 0)
		kpi_run(psprintf("INSERT INTO streamkpi.track_windows AS t (window_size, window_start,"
						 " track_id, window_end, total_listens, unique_users, avg_listen_ms)"
						 " SELECT sz, st, tr, st OPERATOR(pg_catalog.+) sz, p,"
						 " COALESCE(n, pg_catalog.round(%s.hll_cardinality(u::%s.hll))::bigint),"
						 " pg_catalog.round(ms::numeric OPERATOR(pg_catalog./)"
						 " NULLIF(p, 0), 3)"
						 " FROM unnest($1, $2, $3, $4, $5, $6, $7) x(sz, st, tr, p, ms, n, u)"
						 " ON CONFLICT (window_size, window_start, track_id) DO UPDATE"
						 " SET total_listens = excluded.total_listens,"
						 " unique_users = excluded.unique_users,"
						 " avg_listen_ms = excluded.avg_listen_ms", hll, hll),
				7, out->track_rows, SPI_OK_INSERT);
}

static void
init_output(WinOutput *out, int nw)
{
	Oid			trending_types[8] = {INTERVALOID, TIMESTAMPTZOID, TEXTOID, INT4OID,
	TEXTOID, INT8OID, INT8OID, INT8OID};
	Oid			track_types[7] = {INTERVALOID, TIMESTAMPTZOID, TEXTOID, INT8OID,
	INT8OID, INT8OID, BYTEAOID};

	kpi_array_init(&out->state[0], TIMESTAMPTZOID, nw);
	kpi_array_init(&out->state[1], INTERVALOID, nw);
	kpi_array_init(&out->state[2], BYTEAOID, nw);
	kpi_array_init(&out->region_keys[0], INTERVALOID, nw);
	kpi_array_init(&out->region_keys[1], TIMESTAMPTZOID, nw);
	kpi_array_init(&out->region_keys[2], TEXTOID, nw);
	for (int i = 0; i < 8; i++)
		kpi_array_init(&out->trending[i], trending_types[i], nw * 4);
	for (int i = 0; i < 7; i++)
		kpi_array_init(&out->track_rows[i], track_types[i], nw * 16);
}

/*
 * Merge the window deltas into streamkpi.window_state and derive the
 * trending and track_windows rows they change.
 */
void
kpi_merge_windows(KpiDelta *d)
{
	int			nw;
	Win		   *wins;
	WinOutput	out;

	if (kpi_table_count(d->windows) == 0)
		return;
	wins = collect_windows(d, &nw);
	load_windows(d, wins, nw);
	init_output(&out, nw);
	for (int k = 0; k < nw; k++)
	{
		Win		   *w = &wins[k];

		window_merge(w);
		kpi_array_add(&out.state[0], TimestampTzGetDatum(w->start));
		kpi_array_add(&out.state[1], IntervalPGetDatum(&d->sizes[w->size].size));
		kpi_array_add(&out.state[2], PointerGetDatum(window_pack(w->merged, w->nmerged)));
		derive_trending(d, w, &out);
		derive_track_windows(d, w, &out);
	}
	write_windows(&out, d->hll);
}

/* ---- streamkpi._window_state_entries(bytea) ---- */

PG_FUNCTION_INFO_V1(streamkpi_window_state_entries);

/*
 * The entries of a window_state row as rows (region, track_id, plays,
 * skips, likes, listen_ms, users), for streamkpi.window_track_state.
 */
Datum
streamkpi_window_state_entries(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bytea	   *b = PG_GETARG_BYTEA_PP(0);
	WinEntry   *es;
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	es = window_unpack((const uint8 *) VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b), &n);
	for (int i = 0; i < n; i++)
	{
		Datum		values[7];
		bool		nulls[7] = {0};

		values[0] = bytes_text(es[i].region, es[i].region_len);
		values[1] = bytes_text(es[i].track, es[i].track_len);
		values[2] = Int64GetDatum(es[i].plays);
		values[3] = Int64GetDatum(es[i].skips);
		values[4] = Int64GetDatum(es[i].likes);
		values[5] = Int64GetDatum(es[i].listen_ms);
		if (es[i].packed == NULL)
			nulls[6] = true;
		else
		{
			bytea	   *u = palloc(VARHDRSZ + es[i].packed_len);

			SET_VARSIZE(u, VARHDRSZ + es[i].packed_len);
			memcpy(VARDATA(u), es[i].packed, es[i].packed_len);
			values[6] = PointerGetDatum(u);
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}
