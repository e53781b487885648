/*-------------------------------------------------------------------------
 *
 * sparkify.h
 *	  The Sparkify tables' maintenance (DESIGN §8): one app_events statement's
 *	  rows (its transition table), read once and grouped in C, then written
 *	  to every derived table in a few set-based statements.
 *
 *	  sparkify_batch.c reads and groups the rows; sparkify_apply.c is the
 *	  trigger and its statements; sparkify_track_id.c the track ids.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_SPARKIFY_H
#define STREAMKPI_SPARKIFY_H

#include "fmgr.h"
#include "access/tupdesc.h"
#include "utils/date.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

/* the pages the derived tables count; the others count only as activity */
typedef enum SparkifyPage
{
	SPARKIFY_PAGE_OTHER,
	SPARKIFY_PAGE_NEXT_SONG,
	SPARKIFY_PAGE_THUMBS_UP,
	SPARKIFY_PAGE_THUMBS_DOWN,
	SPARKIFY_PAGE_ADD_TO_PLAYLIST,
	SPARKIFY_PAGE_ADD_FRIEND,
	SPARKIFY_PAGE_ROLL_ADVERT,
	SPARKIFY_PAGE_UPGRADE,		/* Submit Upgrade */
	SPARKIFY_PAGE_DOWNGRADE,	/* Submit Downgrade */
	SPARKIFY_PAGE_ERROR,
	SPARKIFY_PAGE_HELP,
	SPARKIFY_PAGE_CANCELLATION, /* Cancellation Confirmation */
	SPARKIFY_PAGES
} SparkifyPage;

/* one app_events row; text values point into the row's own copy */
typedef struct SparkifyEvent
{
	int64		event_id;
	TimestampTz time;
	text	   *user_id;		/* NULL: logged out */
	int64		session_id;
	int32		item;			/* item_in_session */
	int32		length_ms;
	bool		has_session;
	bool		has_item;
	bool		has_length;
	bool		has_registered;
	SparkifyPage page;
	text	   *level;
	text	   *song;
	text	   *artist;
	text	   *first_name;
	text	   *last_name;
	text	   *gender;
	TimestampTz registered_at;
	DateADT		day;			/* of time in kpi_timezone (logged in only) */
	text	   *track_id;		/* NextSong with a song: its track id */
} SparkifyEvent;

/* a statement's events, read from its transition table */
typedef struct SparkifyBatch
{
	SparkifyEvent *events;
	int			nevents;
	SparkifyEvent **logged_in;	/* those with a user, in user, session, order */
	int			nlogged_in;
	TimestampTz listens_from;	/* plays and likes with a user: time span */
	TimestampTz listens_to;
	bool		has_listens;
} SparkifyBatch;

/* in sparkify_batch.c */
extern void sparkify_read_batch(SparkifyBatch *batch, Tuplestorestate *rows,
								TupleDesc desc, const char *timezone);
extern DateADT sparkify_local_day(TimestampTz t);
extern int	sparkify_text_cmp(const text *a, const text *b);
extern int	sparkify_event_order(const SparkifyEvent *a, const SparkifyEvent *b);

/* in sparkify_track_id.c */
extern text *sparkify_track_id_text(const text *artist, const text *title);

#endif							/* STREAMKPI_SPARKIFY_H */
