/*-------------------------------------------------------------------------
 *
 * kpi_window_state.c
 *	  The rows of streamkpi.window_state.  A window (a size of
 *	  streamkpi.trending_windows and a start) is stored in parts:
 *
 *	    part 0    the counters of each (track, region) of the window;
 *	    part 1..  players parts: the hll of the users who played each
 *	              track, as one round added them, or (compacted) as
 *	              several rounds did.
 *
 *	  A track's players in the window are the union of its values in the
 *	  players parts.  Counters are small and a round rewrites part 0;
 *	  players sketches grow with the window, so a round appends only the
 *	  players it saw, and every WINDOW_PLAYERS_PARTS_MAX parts one round
 *	  merges them into one (kpi_window.c).  A round's writes therefore
 *	  follow its own events, not everything its windows hold.
 *
 *	  Both kinds of part have one packed form (strings as a varint length
 *	  and their bytes, tracks and regions sorted by bytes):
 *
 *	    version byte 1, varint tracks, then per track:
 *	    track, its players' hll value (length 0: none in this part),
 *	    varint regions, then per region:
 *	    region, varint plays, varint skips, varint likes, zigzag varint
 *	    listen_ms
 *
 *	  Part 0 has no players and a players part no regions.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "kpi.h"
#include "kpi_window.h"

#define WINDOW_STATE_VERSION 1

/* ---- the packed form ---- */

/* at p, which has room for 10 bytes; returns the end */
static inline char *
put_varint_at(char *p, uint64 v)
{
	while (v >= 0x80)
	{
		*p++ = (char) ((v & 0x7f) | 0x80);
		v >>= 7;
	}
	*p++ = (char) v;
	return p;
}

/*
 * Written in place, not through appendStringInfoChar: a round packs
 * several varints per (window, track, region).
 */
static inline void
put_varint(StringInfo buf, uint64 v)
{
	enlargeStringInfo(buf, 10);
	buf->len = put_varint_at(buf->data + buf->len, v) - buf->data;
	buf->data[buf->len] = '\0';
}

static inline void
put_bytes(StringInfo buf, const void *p, uint32 len)
{
	char	   *end;

	enlargeStringInfo(buf, 10 + len);
	end = put_varint_at(buf->data + buf->len, len);
	memcpy(end, p, len);
	buf->len = end + len - buf->data;
	buf->data[buf->len] = '\0';
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

static void
put_regions(StringInfo buf, const WinTrack *t)
{
	put_varint(buf, t->nregions);
	for (int j = 0; j < t->nregions; j++)
	{
		const WinRegion *r = &t->regions[j];

		put_bytes(buf, r->name, r->len);
		put_varint(buf, r->plays);
		put_varint(buf, r->skips);
		put_varint(buf, r->likes);
		put_varint(buf, ((uint64) r->listen_ms << 1) ^ (uint64) (r->listen_ms >> 63));
	}
}

/* Tracks of ts that have players (a stored value or a round's). */
int
window_count_players(const WinTrack *ts, int n)
{
	int			count = 0;

	for (int i = 0; i < n; i++)
		count += ts[i].users != NULL || ts[i].packed != NULL;
	return count;
}

/*
 * ts packed as part 0 (every track with its regions' counters, no
 * players) or as a players part (the tracks with players, no regions).
 */
bytea *
window_pack(const WinTrack *ts, int n, bool players)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoSpaces(&buf, VARHDRSZ);
	appendStringInfoChar(&buf, WINDOW_STATE_VERSION);
	put_varint(&buf, players ? window_count_players(ts, n) : n);
	for (int i = 0; i < n; i++)
	{
		const WinTrack *t = &ts[i];

		if (!players)
		{
			put_bytes(&buf, t->name, t->len);
			put_varint(&buf, 0);	/* no players in part 0 */
			put_regions(&buf, t);
		}
		else if (t->users != NULL || t->packed != NULL)
		{
			put_bytes(&buf, t->name, t->len);
			if (t->users != NULL)
			{
				bytea	   *u = sketch_hll_pack(t->users);

				put_bytes(&buf, VARDATA(u), VARSIZE(u) - VARHDRSZ);
			}
			else
				put_bytes(&buf, t->packed, t->packed_len);
			put_varint(&buf, 0);	/* no regions in a players part */
		}
	}
	SET_VARSIZE(buf.data, buf.len);
	return (bytea *) buf.data;
}

static void
unpack_regions(const uint8 **p, const uint8 *end, WinTrack *t)
{
	uint64		n = take_varint(p, end);

	if (n > (uint64) (end - *p))
		window_state_corrupt();
	t->nregions = (int) n;
	t->regions = palloc0(Max(n, 1) * sizeof(WinRegion));
	for (int j = 0; j < t->nregions; j++)
	{
		WinRegion  *r = &t->regions[j];
		uint64		zz;

		r->name = (const char *) take_bytes(p, end, &r->len);
		r->plays = (int64) take_varint(p, end);
		r->skips = (int64) take_varint(p, end);
		r->likes = (int64) take_varint(p, end);
		zz = take_varint(p, end);
		r->listen_ms = (int64) (zz >> 1) ^ -(int64) (zz & 1);
	}
}

/* The tracks of a packed state, pointing into it. */
WinTrack *
window_unpack(const uint8 *p, uint32 len, int *n)
{
	const uint8 *end = p + len;
	WinTrack   *ts;
	uint64		count;

	if (len < 1 || *p++ != WINDOW_STATE_VERSION)
		window_state_corrupt();
	count = take_varint(&p, end);
	if (count > len)
		window_state_corrupt();
	ts = palloc0(Max(count, 1) * sizeof(WinTrack));
	for (uint64 i = 0; i < count; i++)
	{
		WinTrack   *t = &ts[i];

		t->name = (const char *) take_bytes(&p, end, &t->len);
		t->packed = take_bytes(&p, end, &t->packed_len);
		if (t->packed_len == 0)
			t->packed = NULL;
		unpack_regions(&p, end, t);
	}
	if (p != end)
		window_state_corrupt();
	*n = (int) count;
	return ts;
}


/* ---- merging ---- */

/* a string of the packed form as text */
Datum
window_bytes_text(const char *p, uint32 len)
{
	return PointerGetDatum(cstring_to_text_with_len(p, len));
}

/* byte order of strings, shorter first on a common prefix */
int
window_bytes_order(const char *a, uint32 alen, const char *b, uint32 blen)
{
	int			c = memcmp(a, b, Min(alen, blen));

	if (c != 0)
		return c;
	return (alen > blen) - (alen < blen);
}

/* a stored sketch as a value of its own */
static bytea *
window_value(const uint8 *p, uint32 len)
{
	bytea	   *v = palloc(VARHDRSZ + len);

	SET_VARSIZE(v, VARHDRSZ + len);
	memcpy(VARDATA(v), p, len);
	return v;
}


/* ---- players over parts ---- */

/* a stored value added to a state (NULL: none yet) */
static SketchHll *
players_add_value(SketchHll *acc, const uint8 *p, uint32 len)
{
	SketchHll  *s = sketch_hll_unpack(CurrentMemoryContext, p, len);

	if (acc == NULL)
		return s;
	sketch_hll_merge(acc, s);
	return acc;
}

/*
 * The players of each track of ts (sorted by name) over the players parts
 * (each sorted) and the track's own round players (users, or NULL):
 * packed set to their union, users to NULL.  A track's largest stored
 * value (a compacted part's, mostly) is merged into in place, the others,
 * a round's few players each, are added to a state first.
 */
void
window_players_union(WinTrack *ts, int n, WinTrack *const *parts,
					 const int *nparts, int np)
{
	int		   *pos = palloc0(Max(np, 1) * sizeof(int));

	for (int i = 0; i < n; i++)
	{
		WinTrack   *t = &ts[i];
		const uint8 *base = NULL;
		uint32		base_len = 0;
		SketchHll  *acc = NULL;

		CHECK_FOR_INTERRUPTS();
		for (int p = 0; p < np; p++)
		{
			const WinTrack *s;

			while (pos[p] < nparts[p] &&
				   window_bytes_order(parts[p][pos[p]].name, parts[p][pos[p]].len,
									  t->name, t->len) < 0)
				pos[p]++;
			if (pos[p] >= nparts[p])
				continue;
			s = &parts[p][pos[p]];
			if (s->packed == NULL ||
				window_bytes_order(s->name, s->len, t->name, t->len) != 0)
				continue;
			if (base != NULL && s->packed_len <= base_len)
				acc = players_add_value(acc, s->packed, s->packed_len);
			else
			{
				if (base != NULL)
					acc = players_add_value(acc, base, base_len);
				base = s->packed;
				base_len = s->packed_len;
			}
		}
		if (t->users != NULL)
		{
			if (acc == NULL)
				acc = t->users;
			else
				sketch_hll_merge(acc, t->users);
		}
		if (acc != NULL)
		{
			bytea	   *v = base != NULL
				? sketch_hll_merge_into(base, base_len, acc, NULL)
				: sketch_hll_pack(acc);

			base = (const uint8 *) VARDATA(v);
			base_len = VARSIZE(v) - VARHDRSZ;
		}
		t->packed = base;
		t->packed_len = base_len;
		t->users = NULL;
	}
	pfree(pos);
}

/* ---- SQL functions over the parts of a window ---- */

/*
 * The start of both SQL functions below: a materialized result set, and
 * the tracks of a window, its part 0 (argument 0) with the players of its
 * players parts (argument 1, an array) merged in.
 */
static WinTrack *
window_srf_tracks(FunctionCallInfo fcinfo, int *n)
{
	bytea	   *b = PG_GETARG_BYTEA_PP(0);
	ArrayType  *players = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *elems;
	bool	   *nulls;
	int			np;
	int			k = 0;
	WinTrack  **parts;
	int		   *nparts;
	WinTrack   *ts;

	InitMaterializedSRF(fcinfo, 0);
	ts = window_unpack((const uint8 *) VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b), n);
	deconstruct_array(players, BYTEAOID, -1, false, TYPALIGN_INT, &elems, &nulls, &np);
	parts = palloc(Max(np, 1) * sizeof(WinTrack *));
	nparts = palloc(Max(np, 1) * sizeof(int));
	for (int i = 0; i < np; i++)
	{
		bytea	   *u;

		if (nulls[i])
			continue;
		u = DatumGetByteaPP(elems[i]);
		parts[k] = window_unpack((const uint8 *) VARDATA_ANY(u), VARSIZE_ANY_EXHDR(u),
								 &nparts[k]);
		k++;
	}
	window_players_union(ts, *n, parts, nparts, k);
	return ts;
}

/* ---- streamkpi._window_state_entries(bytea, bytea[]) ---- */

PG_FUNCTION_INFO_V1(streamkpi_window_state_entries);

/*
 * The entries of a window as rows (region, track_id, plays,
 * skips, likes, listen_ms, users), for streamkpi.window_track_state.
 */
Datum
streamkpi_window_state_entries(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			n;
	WinTrack   *ts = window_srf_tracks(fcinfo, &n);

	for (int i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		for (int j = 0; j < ts[i].nregions; j++)
		{
			WinRegion  *r = &ts[i].regions[j];
			Datum		values[7];
			bool		nulls[7] = {0};

			values[0] = window_bytes_text(r->name, r->len);
			values[1] = window_bytes_text(ts[i].name, ts[i].len);
			values[2] = Int64GetDatum(r->plays);
			values[3] = Int64GetDatum(r->skips);
			values[4] = Int64GetDatum(r->likes);
			values[5] = Int64GetDatum(r->listen_ms);
			if (ts[i].packed == NULL)
				nulls[6] = true;
			else
				values[6] = PointerGetDatum(window_value(ts[i].packed, ts[i].packed_len));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	PG_RETURN_VOID();
}

/* ---- streamkpi._window_track_rows(bytea, bytea[]) ---- */

PG_FUNCTION_INFO_V1(streamkpi_window_track_rows);

/*
 * The tracks of a window that were played, all regions together
 * (track_id, plays, listen_ms, users, sketch), for streamkpi.track_windows:
 * users is the count of distinct players while the sketch holds them
 * exactly (sketch NULL), else NULL and the sketch for hll_cardinality().
 */
Datum
streamkpi_window_track_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			n;
	WinTrack   *ts = window_srf_tracks(fcinfo, &n);

	for (int i = 0; i < n; i++)
	{
		Datum		values[5];
		bool		nulls[5] = {0};
		int64		plays = 0;
		int64		listen_ms = 0;
		int64		exact = 0;

		CHECK_FOR_INTERRUPTS();
		for (int j = 0; j < ts[i].nregions; j++)
		{
			plays += ts[i].regions[j].plays;
			listen_ms += ts[i].regions[j].listen_ms;
		}
		if (plays <= 0)
			continue;
		if (ts[i].packed != NULL)
			exact = sketch_hll_value_exact_count(ts[i].packed, ts[i].packed_len);
		values[0] = window_bytes_text(ts[i].name, ts[i].len);
		values[1] = Int64GetDatum(plays);
		values[2] = Int64GetDatum(listen_ms);
		values[3] = Int64GetDatum(exact);
		nulls[3] = exact < 0;
		nulls[4] = exact >= 0;
		if (exact < 0)
			values[4] = PointerGetDatum(window_value(ts[i].packed, ts[i].packed_len));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}
