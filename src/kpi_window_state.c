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
 *	  players parts of the window and of the windows inside it: a round
 *	  gives a window summed from the smallest ones no parts of its own
 *	  (WINDOW_PLAYERS_INSIDE_MAX).  Counters are small and a round rewrites
 *	  part 0; players sketches grow with the window, so a round appends
 *	  only the players it saw, and every WINDOW_PLAYERS_PARTS_MAX parts
 *	  one round merges the small ones into one, a large part staying until
 *	  they add up to it (kpi_window.c).  A round's writes therefore follow
 *	  its own events, not everything its windows hold.
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

/* at p, which has room: len as a varint and the bytes; returns the end */
static inline char *
put_bytes_at(char *p, const void *data, uint32 len)
{
	p = put_varint_at(p, len);
	memcpy(p, data, len);
	return p + len;
}

static inline void
put_bytes(StringInfo buf, const void *p, uint32 len)
{
	enlargeStringInfo(buf, 10 + len);
	buf->len = put_bytes_at(buf->data + buf->len, p, len) - buf->data;
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

/*
 * A track of part 0: its name, no players, its regions' counters.  Room
 * for all of it is made once: made per field, it was a third of packing.
 */
static void
put_part0_track(StringInfo buf, const WinTrack *t)
{
	Size		bound = 3 * 10 + t->len;
	char	   *p;

	for (int j = 0; j < t->nregions; j++)
		bound += 5 * 10 + t->regions[j].len;
	enlargeStringInfo(buf, bound);
	p = buf->data + buf->len;
	p = put_bytes_at(p, t->name, t->len);
	p = put_varint_at(p, 0);	/* no players in part 0 */
	p = put_varint_at(p, t->nregions);
	for (int j = 0; j < t->nregions; j++)
	{
		const WinRegion *r = &t->regions[j];

		p = put_bytes_at(p, r->name, r->len);
		p = put_varint_at(p, r->plays);
		p = put_varint_at(p, r->skips);
		p = put_varint_at(p, r->likes);
		p = put_varint_at(p, ((uint64) r->listen_ms << 1) ^ (uint64) (r->listen_ms >> 63));
	}
	buf->len = p - buf->data;
	buf->data[buf->len] = '\0';
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
			put_part0_track(&buf, t);
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
 * The union of n stored players values and a round's players (extra, or
 * NULL) as a stored value in *out, *len (NULL: none).  The largest value
 * (a compacted part's, mostly) is merged into in place, the others, a
 * round's few players each, are added to a state first.
 */
static void
players_union(const uint8 *const *vals, const uint32 *lens, int n,
			  SketchHll *extra, const uint8 **out, uint32 *len)
{
	int			largest = -1;
	SketchHll  *acc = NULL;

	for (int k = 0; k < n; k++)
		if (largest < 0 || lens[k] > lens[largest])
			largest = k;
	for (int k = 0; k < n; k++)
		if (k != largest)
			acc = players_add_value(acc, vals[k], lens[k]);
	if (extra != NULL)
	{
		if (acc == NULL)
			acc = extra;
		else
			sketch_hll_merge(acc, extra);
	}
	*out = largest >= 0 ? vals[largest] : NULL;
	*len = largest >= 0 ? lens[largest] : 0;
	if (acc != NULL)
	{
		bytea	   *v = largest >= 0
			? sketch_hll_merge_into(vals[largest], lens[largest], acc, NULL)
			: sketch_hll_pack(acc);

		*out = (const uint8 *) VARDATA(v);
		*len = VARSIZE(v) - VARHDRSZ;
	}
}

/*
 * The players values of track t in the parts (each sorted by name), each
 * cursor pos[p] moved past the names before t's: *n of them in vals,
 * lens, which have room for np.
 */
static void
track_values(const WinTrack *t, WinTrack *const *parts, const int *nparts,
			 int np, int *pos, const uint8 **vals, uint32 *lens, int *n)
{
	*n = 0;
	for (int p = 0; p < np; p++)
	{
		const WinTrack *s;

		while (pos[p] < nparts[p] &&
			   bytes_cmp(parts[p][pos[p]].name, parts[p][pos[p]].len,
						 t->name, t->len) < 0)
			pos[p]++;
		if (pos[p] >= nparts[p])
			continue;
		s = &parts[p][pos[p]];
		if (s->packed == NULL ||
			bytes_cmp(s->name, s->len, t->name, t->len) != 0)
			continue;
		vals[*n] = s->packed;
		lens[*n] = s->packed_len;
		(*n)++;
	}
}

/*
 * The players of each track of ts (sorted by name) over the players parts
 * (each sorted) and the track's own round players (users, or NULL):
 * packed set to their union, users to NULL.
 */
void
window_players_union(WinTrack *ts, int n, WinTrack *const *parts,
					 const int *nparts, int np)
{
	int		   *pos = palloc0(Max(np, 1) * sizeof(int));
	const uint8 **vals = palloc(Max(np, 1) * sizeof(uint8 *));
	uint32	   *lens = palloc(Max(np, 1) * sizeof(uint32));

	for (int i = 0; i < n; i++)
	{
		int			nv;

		CHECK_FOR_INTERRUPTS();
		track_values(&ts[i], parts, nparts, np, pos, vals, lens, &nv);
		players_union(vals, lens, nv, ts[i].users, &ts[i].packed, &ts[i].packed_len);
		ts[i].users = NULL;
	}
	pfree(pos);
	pfree(vals);
	pfree(lens);
}

/* ---- SQL functions over the parts of a window ---- */

/*
 * A part of a window (argument 0) unpacked, for a set-returning function.
 * Players are read by streamkpi._window_players_rows() on their own, so a
 * query that does not ask for them never reads the players parts.
 */
static WinTrack *
window_srf_unpack(FunctionCallInfo fcinfo, int *ntracks)
{
	bytea	   *b = PG_GETARG_BYTEA_PP(0);

	InitMaterializedSRF(fcinfo, 0);
	return window_unpack((const uint8 *) VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b), ntracks);
}

/* ---- streamkpi._window_state_entries(bytea) ---- */

PG_FUNCTION_INFO_V1(streamkpi_window_state_entries);

/*
 * The counters of a window as rows (region, track_id, plays, skips, likes,
 * listen_ms), for streamkpi.window_track_state.
 */
Datum
streamkpi_window_state_entries(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			ntracks;
	WinTrack   *tracks = window_srf_unpack(fcinfo, &ntracks);

	for (int i = 0; i < ntracks; i++)
	{
		WinTrack   *t = &tracks[i];

		CHECK_FOR_INTERRUPTS();
		for (int j = 0; j < t->nregions; j++)
		{
			WinRegion  *r = &t->regions[j];
			Datum		values[6];
			bool		nulls[6] = {0};

			values[0] = window_bytes_text(r->name, r->len);
			values[1] = window_bytes_text(t->name, t->len);
			values[2] = Int64GetDatum(r->plays);
			values[3] = Int64GetDatum(r->skips);
			values[4] = Int64GetDatum(r->likes);
			values[5] = Int64GetDatum(r->listen_ms);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	PG_RETURN_VOID();
}

/* ---- streamkpi._window_track_rows(bytea) ---- */

PG_FUNCTION_INFO_V1(streamkpi_window_track_rows);

/*
 * The tracks of a window that were played, all regions together
 * (track_id, plays, listen_ms), for streamkpi.track_windows.
 */
Datum
streamkpi_window_track_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			ntracks;
	WinTrack   *tracks = window_srf_unpack(fcinfo, &ntracks);

	for (int i = 0; i < ntracks; i++)
	{
		WinTrack   *t = &tracks[i];
		Datum		values[3];
		bool		nulls[3] = {0};
		int64		plays = 0;
		int64		listen_ms = 0;

		CHECK_FOR_INTERRUPTS();
		for (int j = 0; j < t->nregions; j++)
		{
			plays += t->regions[j].plays;
			listen_ms += t->regions[j].listen_ms;
		}
		if (plays <= 0)
			continue;
		values[0] = window_bytes_text(t->name, t->len);
		values[1] = Int64GetDatum(plays);
		values[2] = Int64GetDatum(listen_ms);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}

/* ---- streamkpi._window_players_rows(bytea) ---- */

PG_FUNCTION_INFO_V1(streamkpi_window_players_rows);

/* The tracks of a players part with their value (track_id, players). */
Datum
streamkpi_window_players_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			ntracks;
	WinTrack   *tracks = window_srf_unpack(fcinfo, &ntracks);

	for (int i = 0; i < ntracks; i++)
	{
		WinTrack   *t = &tracks[i];
		Datum		values[2];
		bool		nulls[2] = {0};

		CHECK_FOR_INTERRUPTS();
		if (t->packed == NULL)
			continue;
		values[0] = window_bytes_text(t->name, t->len);
		values[1] = PointerGetDatum(window_value(t->packed, t->packed_len));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}

/* the union of the players values in argument 0, a bytea[]; NULL: none */
static bool
players_arg_union(FunctionCallInfo fcinfo, const uint8 **out, uint32 *len)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			k = 0;
	const uint8 **vals;
	uint32	   *lens;

	deconstruct_array(arr, BYTEAOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	vals = palloc(Max(n, 1) * sizeof(uint8 *));
	lens = palloc(Max(n, 1) * sizeof(uint32));
	for (int i = 0; i < n; i++)
	{
		bytea	   *v;

		if (nulls[i])
			continue;
		v = DatumGetByteaPP(elems[i]);
		vals[k] = (const uint8 *) VARDATA_ANY(v);
		lens[k] = VARSIZE_ANY_EXHDR(v);
		k++;
	}
	players_union(vals, lens, k, NULL, out, len);
	return *out != NULL;
}

/* ---- streamkpi._window_players(bytea[]) ---- */

PG_FUNCTION_INFO_V1(streamkpi_window_players);

/* a track's players in a window: the union of its values, an hll value */
Datum
streamkpi_window_players(PG_FUNCTION_ARGS)
{
	const uint8 *p;
	uint32		len;

	if (!players_arg_union(fcinfo, &p, &len))
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(window_value(p, len));
}

/* ---- streamkpi._window_players_count(bytea[]) ---- */

PG_FUNCTION_INFO_V1(streamkpi_window_players_count);

/*
 * How many distinct users played a track in a window: exact while the
 * union holds them exactly, else round(hll_cardinality()) of it.
 */
Datum
streamkpi_window_players_count(PG_FUNCTION_ARGS)
{
	const uint8 *p;
	uint32		len;
	int64		exact;

	if (!players_arg_union(fcinfo, &p, &len))
		PG_RETURN_INT64(0);
	exact = sketch_hll_value_exact_count(p, len);
	if (exact >= 0)
		PG_RETURN_INT64(exact);
	PG_RETURN_INT64(sketch_hll_cardinality(sketch_hll_unpack(CurrentMemoryContext, p, len)));
}

/* ---- streamkpi._window_players_inside_max() ---- */

PG_FUNCTION_INFO_V1(streamkpi_window_players_inside_max);

/* WINDOW_PLAYERS_INSIDE_MAX, for streamkpi._window_track_players */
Datum
streamkpi_window_players_inside_max(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(WINDOW_PLAYERS_INSIDE_MAX);
}
