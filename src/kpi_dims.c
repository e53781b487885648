/*-------------------------------------------------------------------------
 *
 * kpi_dims.c
 *	  What an event is to the KPIs beyond its own columns: its track's genre
 *	  and duration, its user's subscription, country and age group, its
 *	  listen ms and whether it completed.  This file is where those
 *	  event-level rules of docs/kpis.md ("Definitions") are written; the
 *	  engine (kpi_accumulate.c) and the view streamkpi.kpi_events both use
 *	  it.
 *
 *	  Tracks and users are looked up by primary key, straight through their
 *	  indexes, in the active snapshot: the snapshot of the query that reads
 *	  the events, as a join in that query would see them.  The engine looks
 *	  each track and user up once per delta, not once per event, and never
 *	  joins them with the events in SQL: reading the events through such a
 *	  join was a quarter of a round (docs/benchmarks.md).  What it looked up
 *	  or read whole it keeps across deltas and rounds (kpi_dims_cache.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "storage/bufmgr.h"
#include "utils/snapmgr.h"

#include "kpi.h"

/* ---- looking up by primary key ---- */

/* column name of table as attribute number, of type type */
static AttrNumber
dim_column(Relation rel, const char *table, const char *name, Oid type)
{
	AttrNumber	att = attnameAttNum(rel, name, false);

	if (att == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of streamkpi.%s does not exist", name, table)));
	if (TupleDescAttr(RelationGetDescr(rel), att - 1)->atttypid != type)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of streamkpi.%s is not of type %s", name, table,
						format_type_be(type))));
	return att;
}

static void
dim_open(KpiDim *dim, const char *table, const char *key, int ncols,
		 const char *const *cols, const Oid *types)
{
	RangeVar   *rv = makeRangeVar("streamkpi", (char *) table, -1);
	Oid			pkey;

	dim->rel = table_openrv(rv, AccessShareLock);
	pkey = RelationGetPrimaryKeyIndex(dim->rel);
	if (!OidIsValid(pkey))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table streamkpi.%s has no primary key", table)));
	dim->index = index_open(pkey, AccessShareLock);
	dim->keyatt = dim_column(dim->rel, table, key, TEXTOID);
	if (dim->index->rd_index->indnatts != 1 ||
		dim->index->rd_index->indkey.values[0] != dim->keyatt)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the primary key of streamkpi.%s is not (%s)", table, key)));
	for (int i = 0; i < ncols; i++)
		dim->attnums[i] = dim_column(dim->rel, table, cols[i], types[i]);
	dim->ncols = ncols;
	dim->slot = table_slot_create(dim->rel, NULL);
	dim->scan = NULL;
	dim->owner = CurrentResourceOwner;
	dim->cxt = CurrentMemoryContext;
}

static void
dim_close(KpiDim *dim)
{
	ExecClearTuple(dim->slot);
	if (dim->scan != NULL)
		index_endscan(dim->scan);
	ExecDropSingleTupleTableSlot(dim->slot);
	index_close(dim->index, AccessShareLock);
	table_close(dim->rel, AccessShareLock);
}

/*
 * The row whose key is (data, len), visible in the active snapshot: its
 * columns are in dim->slot.  False when there is none.  The scan, its
 * memory and the buffer it pins belong to the opener, not to the portal
 * whose rows the engine is reading when it looks up.
 */
static bool
dim_lookup(KpiDim *dim, const char *data, uint32 len)
{
	ScanKeyData key;
	text	   *t;
	bool		found;
	ResourceOwner portal_owner = CurrentResourceOwner;
	MemoryContext portal_cxt = MemoryContextSwitchTo(dim->cxt);

	CurrentResourceOwner = dim->owner;
	t = cstring_to_text_with_len(data, len);

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(t));
	key.sk_collation = dim->index->rd_indcollation[0];
	if (dim->scan != NULL && dim->scan->xs_snapshot != GetActiveSnapshot())
	{
		index_endscan(dim->scan);
		dim->scan = NULL;
	}
	if (dim->scan == NULL)
		dim->scan = index_beginscan(dim->rel, dim->index, GetActiveSnapshot(), 1, 0);
	index_rescan(dim->scan, &key, 1, NULL, 0);
	found = index_getnext_slot(dim->scan, ForwardScanDirection, dim->slot);
	if (found)
		slot_getallattrs(dim->slot);
	CurrentResourceOwner = portal_owner;
	pfree(t);
	MemoryContextSwitchTo(portal_cxt);
	return found;
}

/* column i of the looked-up row as text, or NULL */
static const char *
dim_text(KpiDim *dim, int i, uint32 *len)
{
	AttrNumber att = dim->attnums[i];
	struct varlena *v;

	if (dim->slot->tts_isnull[att - 1])
		return NULL;
	v = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(dim->slot->tts_values[att - 1]));
	*len = VARSIZE_ANY_EXHDR(v);
	return VARDATA_ANY(v);
}

/* column i as int4; false when NULL */
static bool
dim_int(KpiDim *dim, int i, int32 *v)
{
	AttrNumber att = dim->attnums[i];

	if (dim->slot->tts_isnull[att - 1])
		return false;
	*v = DatumGetInt32(dim->slot->tts_values[att - 1]);
	return true;
}

void
kpi_dims_open(KpiDims *dims)
{
	static const char *const track_cols[] = {"genre", "duration_ms"};
	static const Oid track_types[] = {TEXTOID, INT4OID};
	static const char *const user_cols[] = {"subscription", "country", "age"};
	static const Oid user_types[] = {TEXTOID, TEXTOID, INT4OID};

	dim_open(&dims->tracks, "tracks", "track_id", 2, track_cols, track_types);
	dim_open(&dims->users, "users", "user_id", 3, user_cols, user_types);
}

void
kpi_dims_close(KpiDims *dims)
{
	dim_close(&dims->tracks);
	dim_close(&dims->users);
}

/* ---- the definitions ---- */

#define KPI_UNKNOWN "unknown"

/* a value, or 'unknown' for NULL (data NULL) */
void
kpi_text_or_unknown(KpiText *out, const char *data, uint32 len)
{
	if (data == NULL)
	{
		out->data = KPI_UNKNOWN;
		out->len = sizeof(KPI_UNKNOWN) - 1;
	}
	else
	{
		out->data = data;
		out->len = len;
	}
}

/* the attributes of the track in dims->tracks.slot, or of none */
static void
track_attrs(KpiDims *dims, bool found, KpiTrackAttrs *out)
{
	const char *genre = NULL;
	uint32		genre_len = 0;

	out->has_duration = false;
	out->duration_ms = 0;
	if (found)
	{
		genre = dim_text(&dims->tracks, 0, &genre_len);
		if (genre != NULL && genre_len == 0)
			genre = NULL;
		out->has_duration = dim_int(&dims->tracks, 1, &out->duration_ms);
	}
	kpi_text_or_unknown(&out->genre, genre, genre_len);
}

/*
 * A track's genre ('unknown' for a track missing from streamkpi.tracks
 * or id NULL, and for a NULL or empty genre) and duration.  The strings
 * point into the looked-up row: valid until the next lookup.
 */
void
kpi_dims_track(KpiDims *dims, const char *id, uint32 len, KpiTrackAttrs *out)
{
	track_attrs(dims, id != NULL && dim_lookup(&dims->tracks, id, len), out);
}

/* age_group of an age: <18, 18-24, 25-34, 35-44, 45-54, 55+ */
static const char *
age_group(int32 age)
{
	if (age < 18)
		return "<18";
	if (age < 25)
		return "18-24";
	if (age < 35)
		return "25-34";
	if (age < 45)
		return "35-44";
	if (age < 55)
		return "45-54";
	return "55+";
}

/* the attributes of the user in dims->users.slot, or of none */
static void
user_attrs(KpiDims *dims, bool found, KpiUserAttrs *out)
{
	const char *sub = NULL;
	const char *country = NULL;
	const char *group = NULL;
	uint32		sub_len = 0;
	uint32		country_len = 0;
	int32		age;

	if (found)
	{
		sub = dim_text(&dims->users, 0, &sub_len);
		country = dim_text(&dims->users, 1, &country_len);
		if (dim_int(&dims->users, 2, &age))
			group = age_group(age);
	}
	kpi_text_or_unknown(&out->subscription, sub, sub_len);
	kpi_text_or_unknown(&out->country, country, country_len);
	kpi_text_or_unknown(&out->age_group, group, group != NULL ? strlen(group) : 0);
}

/*
 * A user's subscription, country and age group, each 'unknown' when the
 * user or the value is missing.  Valid until the next lookup.
 */
void
kpi_dims_user(KpiDims *dims, const char *id, uint32 len, KpiUserAttrs *out)
{
	user_attrs(dims, id != NULL && dim_lookup(&dims->users, id, len), out);
}

/* ---- every row at once ---- */

/* rows of the table by its statistics (or its size), for planning */
double
kpi_dim_rows(KpiDim *dim)
{
	if (dim->rel->rd_rel->reltuples >= 0)
		return dim->rel->rd_rel->reltuples;
	return (double) RelationGetNumberOfBlocks(dim->rel) * 100;
}

/*
 * Every row of the table visible in the active snapshot, in turn in
 * dim->slot: calls add(arg, key) for each, with the opener's memory and
 * resource owner (see dim_lookup).
 */
static void
dim_scan_all(KpiDim *dim, void (*add) (void *arg, const char *key, uint32 len),
			 void *arg)
{
	ResourceOwner portal_owner = CurrentResourceOwner;
	MemoryContext portal_cxt = MemoryContextSwitchTo(dim->cxt);
	TableScanDesc scan;

	CurrentResourceOwner = dim->owner;
	scan = table_beginscan(dim->rel, GetActiveSnapshot(), 0, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, dim->slot))
	{
		struct varlena *key;

		CHECK_FOR_INTERRUPTS();
		slot_getallattrs(dim->slot);
		key = pg_detoast_datum_packed((struct varlena *)
									  DatumGetPointer(dim->slot->tts_values[dim->keyatt - 1]));
		MemoryContextSwitchTo(portal_cxt);
		add(arg, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
		MemoryContextSwitchTo(dim->cxt);
	}
	table_endscan(scan);
	ExecClearTuple(dim->slot);
	CurrentResourceOwner = portal_owner;
	MemoryContextSwitchTo(portal_cxt);
}

typedef struct LoadArg
{
	KpiDims    *dims;
	void		(*track) (void *arg, const char *id, uint32 len, const KpiTrackAttrs *attrs);
	void		(*user) (void *arg, const char *id, uint32 len, const KpiUserAttrs *attrs);
	void	   *arg;
} LoadArg;

static void
load_track(void *arg, const char *key, uint32 len)
{
	LoadArg    *la = (LoadArg *) arg;
	KpiTrackAttrs attrs;

	track_attrs(la->dims, true, &attrs);
	la->track(la->arg, key, len, &attrs);
}

static void
load_user(void *arg, const char *key, uint32 len)
{
	LoadArg    *la = (LoadArg *) arg;
	KpiUserAttrs attrs;

	user_attrs(la->dims, true, &attrs);
	la->user(la->arg, key, len, &attrs);
}

/*
 * Every track (unless track is NULL) and every user (unless user is NULL)
 * with their attributes, for a delta that would look most of them up
 * anyway: reading a table costs less than an index descent per key
 * (strings valid during the call only).
 */
void
kpi_dims_load(KpiDims *dims,
			  void (*track) (void *arg, const char *id, uint32 len, const KpiTrackAttrs *attrs),
			  void (*user) (void *arg, const char *id, uint32 len, const KpiUserAttrs *attrs),
			  void *arg)
{
	LoadArg		la = {dims, track, user, arg};

	if (track != NULL)
		dim_scan_all(&dims->tracks, load_track, &la);
	if (user != NULL)
		dim_scan_all(&dims->users, load_user, &la);
}

/* listen ms: ms_played, else the track's duration, else 0 */
int64
kpi_listen_ms(bool has_ms_played, int32 ms_played, const KpiTrackAttrs *track)
{
	if (has_ms_played)
		return ms_played;
	return track->has_duration ? track->duration_ms : 0;
}

/* completed: listen ms >= 90% of a known positive duration */
bool
kpi_completed(bool has_ms_played, int32 ms_played, const KpiTrackAttrs *track)
{
	int64		ms;

	if (!track->has_duration || track->duration_ms <= 0)
		return false;
	ms = has_ms_played ? ms_played : track->duration_ms;
	return ms * 10 >= (int64) track->duration_ms * 9;
}

/* ---- streamkpi._kpi_event_attributes(...) ---- */

PG_FUNCTION_INFO_V1(streamkpi_kpi_event_attributes);

static Datum
text_datum(const KpiText *t)
{
	return PointerGetDatum(cstring_to_text_with_len(t->data, t->len));
}

/* argument i as text bytes, or NULL */
static const char *
text_arg(FunctionCallInfo fcinfo, int i, uint32 *len)
{
	text	   *t;

	if (PG_ARGISNULL(i))
		return NULL;
	t = PG_GETARG_TEXT_PP(i);
	*len = VARSIZE_ANY_EXHDR(t);
	return VARDATA_ANY(t);
}

/*
 * streamkpi._kpi_event_attributes(track_id, user_id, ms_played, region,
 * device) -> (region, device, genre, listen_ms, completed, subscription,
 * country, age_group): an event as the KPIs see it, for the view
 * streamkpi.kpi_events.
 */
Datum
streamkpi_kpi_event_attributes(PG_FUNCTION_ARGS)
{
	bool		has_ms = !PG_ARGISNULL(2);
	int32		ms = has_ms ? PG_GETARG_INT32(2) : 0;
	const char *s;
	uint32		len = 0;
	TupleDesc	desc;
	KpiDims		dims;
	KpiText		text;
	KpiTrackAttrs track;
	KpiUserAttrs user;
	Datum		values[8];
	bool		nulls[8] = {0};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("streamkpi._kpi_event_attributes() must return a record")));
	desc = BlessTupleDesc(desc);
	for (int i = 0; i < 2; i++)
	{
		s = text_arg(fcinfo, 3 + i, &len);
		kpi_text_or_unknown(&text, s, len);
		values[i] = text_datum(&text);
	}
	kpi_dims_open(&dims);
	s = text_arg(fcinfo, 0, &len);
	kpi_dims_track(&dims, s, len, &track);
	values[2] = text_datum(&track.genre);
	values[3] = Int64GetDatum(kpi_listen_ms(has_ms, ms, &track));
	values[4] = BoolGetDatum(kpi_completed(has_ms, ms, &track));
	s = text_arg(fcinfo, 1, &len);
	kpi_dims_user(&dims, s, len, &user);
	values[5] = text_datum(&user.subscription);
	values[6] = text_datum(&user.country);
	values[7] = text_datum(&user.age_group);
	kpi_dims_close(&dims);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
