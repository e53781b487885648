/*-------------------------------------------------------------------------
 *
 * sparkify_batch.c
 *	  Read one app_events statement's rows (its transition table) once: each
 *	  row deformed from its own copy, the page classified, a play's track id
 *	  hashed, a logged-in event's day in streamkpi.kpi_timezone computed;
 *	  then the logged-in events sorted by user, session and order in the
 *	  session, so that sparkify_apply.c groups them in one pass.
 *
 *	  Text compares by bytes here: the groups and their order only have to
 *	  be consistent, not follow a collation.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"

#include "sketch.h"
#include "sparkify.h"

/* the app_events columns read, by name */
typedef enum SparkifyColumn
{
	COL_EVENT_ID, COL_EVENT_TIME, COL_USER_ID, COL_SESSION_ID, COL_ITEM,
	COL_PAGE, COL_LEVEL, COL_SONG, COL_ARTIST, COL_LENGTH_MS, COL_FIRST_NAME,
	COL_LAST_NAME, COL_GENDER, COL_REGISTERED_AT, SPARKIFY_COLUMNS
} SparkifyColumn;

static const char *const column_names[SPARKIFY_COLUMNS] = {
	"event_id", "event_time", "user_id", "session_id", "item_in_session",
	"page", "level", "song", "artist", "length_ms", "first_name",
	"last_name", "gender", "registered_at"
};

static const char *const page_names[SPARKIFY_PAGES] = {
	NULL, "NextSong", "Thumbs Up", "Thumbs Down", "Add to Playlist",
	"Add Friend", "Roll Advert", "Submit Upgrade", "Submit Downgrade",
	"Error", "Help", "Cancellation Confirmation"
};

/*
 * Days in kpi_timezone, on the wall clock the KPI engine uses
 * (window_clock_local(): the zone's offset looked up once per stretch
 * between its transitions), set up for each batch.
 */
static WindowClock day_clock;

/* (t AT TIME ZONE kpi_timezone)::date, as SQL computes it */
DateADT
sparkify_local_day(TimestampTz t)
{
	if (TIMESTAMP_NOT_FINITE(t))
		return DatumGetDateADT(DirectFunctionCall1(timestamp_date, TimestampGetDatum(t)));
	return window_clock_day(&day_clock, t);
}

/* byte order of two texts */
int
sparkify_text_cmp(const text *a, const text *b)
{
	int			la = VARSIZE_ANY_EXHDR(a);
	int			lb = VARSIZE_ANY_EXHDR(b);
	int			c = memcmp(VARDATA_ANY(a), VARDATA_ANY(b), Min(la, lb));

	return c != 0 ? c : (la > lb) - (la < lb);
}

/* order in a session: item_in_session (NULL last), event_time, event_id */
int
sparkify_event_order(const SparkifyEvent *a, const SparkifyEvent *b)
{
	if (a->has_item != b->has_item)
		return a->has_item ? -1 : 1;
	if (a->has_item && a->item != b->item)
		return a->item < b->item ? -1 : 1;
	if (a->time != b->time)
		return a->time < b->time ? -1 : 1;
	return (a->event_id > b->event_id) - (a->event_id < b->event_id);
}

/* user, then session (NULL last), then order in the session */
static int
logged_in_cmp(const void *pa, const void *pb)
{
	const SparkifyEvent *a = *(SparkifyEvent *const *) pa;
	const SparkifyEvent *b = *(SparkifyEvent *const *) pb;
	int			c = sparkify_text_cmp(a->user_id, b->user_id);

	if (c != 0)
		return c;
	if (a->has_session != b->has_session)
		return a->has_session ? -1 : 1;
	if (a->has_session && a->session_id != b->session_id)
		return a->session_id < b->session_id ? -1 : 1;
	return sparkify_event_order(a, b);
}

static SparkifyPage
page_of(const text *page)
{
	int			len = VARSIZE_ANY_EXHDR(page);

	for (int p = 1; p < SPARKIFY_PAGES; p++)
		if (strlen(page_names[p]) == len && memcmp(VARDATA_ANY(page), page_names[p], len) == 0)
			return (SparkifyPage) p;
	return SPARKIFY_PAGE_OTHER;
}

/* a text column's value, NULL for SQL NULL (never toasted: detoasted here) */
static text *
text_value(Datum *values, bool *nulls, const int *attnums, SparkifyColumn col)
{
	int			i = attnums[col];

	return nulls[i] ? NULL : (text *) pg_detoast_datum_packed((struct varlena *) DatumGetPointer(values[i]));
}

static void
read_event(SparkifyEvent *e, Datum *values, bool *nulls, const int *attnums)
{
#define IS_NULL(col) nulls[attnums[col]]
#define VALUE(col) values[attnums[col]]
	e->event_id = DatumGetInt64(VALUE(COL_EVENT_ID));
	e->time = DatumGetTimestampTz(VALUE(COL_EVENT_TIME));
	e->user_id = text_value(values, nulls, attnums, COL_USER_ID);
	e->has_session = !IS_NULL(COL_SESSION_ID);
	e->session_id = e->has_session ? DatumGetInt64(VALUE(COL_SESSION_ID)) : 0;
	e->has_item = !IS_NULL(COL_ITEM);
	e->item = e->has_item ? DatumGetInt32(VALUE(COL_ITEM)) : 0;
	e->page = page_of(text_value(values, nulls, attnums, COL_PAGE));
	e->level = text_value(values, nulls, attnums, COL_LEVEL);
	e->song = text_value(values, nulls, attnums, COL_SONG);
	e->artist = text_value(values, nulls, attnums, COL_ARTIST);
	e->has_length = !IS_NULL(COL_LENGTH_MS);
	e->length_ms = e->has_length ? DatumGetInt32(VALUE(COL_LENGTH_MS)) : 0;
	e->first_name = text_value(values, nulls, attnums, COL_FIRST_NAME);
	e->last_name = text_value(values, nulls, attnums, COL_LAST_NAME);
	e->gender = text_value(values, nulls, attnums, COL_GENDER);
	e->has_registered = !IS_NULL(COL_REGISTERED_AT);
	e->registered_at = e->has_registered ? DatumGetTimestampTz(VALUE(COL_REGISTERED_AT)) : 0;
#undef IS_NULL
#undef VALUE
	e->track_id = (e->page == SPARKIFY_PAGE_NEXT_SONG && e->song != NULL)
		? sparkify_track_id_text(e->artist, e->song) : NULL;
	e->day = e->user_id != NULL ? sparkify_local_day(e->time) : 0;
}

/* the attribute index of each column read */
static void
find_columns(TupleDesc desc, int *attnums)
{
	for (int c = 0; c < SPARKIFY_COLUMNS; c++)
	{
		attnums[c] = -1;
		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (!att->attisdropped && strcmp(NameStr(att->attname), column_names[c]) == 0)
				attnums[c] = i;
		}
		if (attnums[c] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("streamkpi.app_events has no column \"%s\"", column_names[c])));
	}
}

/* the span of the plays and likes with a user (their listens' partitions) */
static void
note_listen_time(SparkifyBatch *batch, const SparkifyEvent *e)
{
	if (e->user_id == NULL ||
		(e->page != SPARKIFY_PAGE_NEXT_SONG && e->page != SPARKIFY_PAGE_THUMBS_UP))
		return;
	if (!batch->has_listens || e->time < batch->listens_from)
		batch->listens_from = e->time;
	if (!batch->has_listens || e->time > batch->listens_to)
		batch->listens_to = e->time;
	batch->has_listens = true;
}

/*
 * Read the statement's rows into batch, in the current memory context, each
 * row a copy of its own that the event's text values point into.
 */
void
sparkify_read_batch(SparkifyBatch *batch, Tuplestorestate *rows, TupleDesc desc,
					const char *timezone)
{
	int			attnums[SPARKIFY_COLUMNS];
	TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	Datum	   *values = palloc(desc->natts * sizeof(Datum));
	bool	   *nulls = palloc(desc->natts * sizeof(bool));
	int			readptr;
	int			capacity = 1024;

	find_columns(desc, attnums);
	window_clock_init(&day_clock, timezone);
	memset(batch, 0, sizeof(*batch));
	batch->events = palloc(capacity * sizeof(SparkifyEvent));

	readptr = tuplestore_alloc_read_pointer(rows, EXEC_FLAG_REWIND);
	tuplestore_select_read_pointer(rows, readptr);
	tuplestore_rescan(rows);
	while (tuplestore_gettupleslot(rows, true, false, slot))
	{
		HeapTuple	tuple = ExecCopySlotHeapTuple(slot);

		CHECK_FOR_INTERRUPTS();
		if (batch->nevents == capacity)
		{
			capacity *= 2;
			batch->events = repalloc_huge(batch->events, capacity * sizeof(SparkifyEvent));
		}
		heap_deform_tuple(tuple, desc, values, nulls);
		read_event(&batch->events[batch->nevents], values, nulls, attnums);
		note_listen_time(batch, &batch->events[batch->nevents]);
		batch->nevents++;
	}
	ExecDropSingleTupleTableSlot(slot);

	batch->logged_in = palloc(Max(batch->nevents, 1) * sizeof(SparkifyEvent *));
	for (int i = 0; i < batch->nevents; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (batch->events[i].user_id != NULL)
			batch->logged_in[batch->nlogged_in++] = &batch->events[i];
	}
	qsort(batch->logged_in, batch->nlogged_in, sizeof(SparkifyEvent *), logged_in_cmp);
}
