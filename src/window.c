/*-------------------------------------------------------------------------
 *
 * window.c
 *	  Event-time windows: tumbling and hopping windows of fixed length, and
 *	  the local calendar day of an instant.
 *
 *	  tumble() and hop() work on absolute time: a window of '1 day' is 24
 *	  hours aligned to the origin (default 2000-01-03 00:00 UTC, a Monday,
 *	  so weekly windows start on Mondays).  Calendar days that are 23 or 25
 *	  hours long belong to day_bucket(), which asks the time zone database.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/int.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "funcapi.h"
#include "parser/scansup.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "sketch.h"


/* 2000-01-03 00:00 UTC, in microseconds since the PostgreSQL epoch */
#define WINDOW_DEFAULT_ORIGIN	(INT64CONST(2) * USECS_PER_DAY)

/* a hopping window may place one row in at most this many windows */
#define HOP_MAX_WINDOWS			100000

PG_FUNCTION_INFO_V1(streamkpi_tumble);
PG_FUNCTION_INFO_V1(streamkpi_hop);
PG_FUNCTION_INFO_V1(streamkpi_day_bucket);

/* The length of a window in microseconds; months have no fixed length. */
static int64
window_length(const Interval *iv, const char *what)
{
	int64		len;

	if (iv->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("window %s must not contain months or years", what),
				 errdetail("A month has no fixed length."),
				 errhint("Use day_bucket() with date_trunc() for calendar months.")));
	if (pg_mul_s64_overflow((int64) iv->day, USECS_PER_DAY, &len) ||
		pg_add_s64_overflow(len, iv->time, &len))
		ereport(ERROR,
				(errcode(ERRCODE_INTERVAL_FIELD_OVERFLOW),
				 errmsg("window %s is out of range", what)));
	if (len <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("window %s must be positive", what)));
	return len;
}

static void
window_check_finite(TimestampTz ts, const char *what)
{
	if (TIMESTAMP_NOT_FINITE(ts))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("%s must be finite to place it in a window", what)));
}

static void
window_out_of_range(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
			 errmsg("window start is out of range")));
}

/* floor((ts - origin) / len): the number of the window holding ts */
static int64
window_number(TimestampTz ts, TimestampTz origin, int64 len)
{
	int64		delta;
	int64		n;

	if (pg_sub_s64_overflow(ts, origin, &delta))
		window_out_of_range();
	n = delta / len;
	if (delta % len < 0)
		n--;
	return n;
}

/* origin + n * len, checked */
static TimestampTz
window_start(TimestampTz origin, int64 n, int64 len)
{
	int64		off;
	TimestampTz result;

	if (pg_mul_s64_overflow(n, len, &off) ||
		pg_add_s64_overflow(origin, off, &result) ||
		!IS_VALID_TIMESTAMP(result))
		window_out_of_range();
	return result;
}

static TimestampTz
window_origin(FunctionCallInfo fcinfo, int argno)
{
	TimestampTz origin;

	if (PG_NARGS() <= argno)
		return WINDOW_DEFAULT_ORIGIN;
	origin = PG_GETARG_TIMESTAMPTZ(argno);
	window_check_finite(origin, "origin");
	return origin;
}

/*
 * tumble(ts, size [, origin]) -> timestamptz: the start of the tumbling
 * window that holds ts.
 */
Datum
streamkpi_tumble(PG_FUNCTION_ARGS)
{
	TimestampTz ts = PG_GETARG_TIMESTAMPTZ(0);
	int64		len = window_length(PG_GETARG_INTERVAL_P(1), "size");
	TimestampTz origin = window_origin(fcinfo, 2);

	window_check_finite(ts, "timestamp");
	PG_RETURN_TIMESTAMPTZ(window_start(origin,
									   window_number(ts, origin, len), len));
}

typedef struct HopState
{
	TimestampTz origin;
	int64		slide;
	int64		next;			/* number of the next window to return */
	int64		last;
} HopState;

/*
 * hop(ts, size, slide [, origin]) -> setof timestamptz: the starts of every
 * hopping window that holds ts, oldest first.  Windows start every slide
 * and last size; slide must not exceed size, or some rows would fall in
 * no window at all.
 */
Datum
streamkpi_hop(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	HopState   *hs;

	if (SRF_IS_FIRSTCALL())
	{
		TimestampTz ts = PG_GETARG_TIMESTAMPTZ(0);
		int64		size = window_length(PG_GETARG_INTERVAL_P(1), "size");
		int64		slide = window_length(PG_GETARG_INTERVAL_P(2), "slide");
		TimestampTz origin = window_origin(fcinfo, 3);
		TimestampTz earliest;
		MemoryContext oldcxt;

		window_check_finite(ts, "timestamp");
		if (slide > size)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("window slide must not be larger than window size"),
					 errdetail("With a slide larger than the size, some timestamps fall in no window."),
					 errhint("Use tumble() for windows that do not overlap.")));
		if (size / slide > HOP_MAX_WINDOWS)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("hopping window would place each row in more than %d windows",
							HOP_MAX_WINDOWS),
					 errhint("Use a larger slide.")));

		funcctx = SRF_FIRSTCALL_INIT();
		oldcxt = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		hs = (HopState *) palloc(sizeof(HopState));
		MemoryContextSwitchTo(oldcxt);

		/* windows [w, w + size) with w <= ts, i.e. w > ts - size */
		hs->origin = origin;
		hs->slide = slide;
		hs->last = window_number(ts, origin, slide);
		if (pg_sub_s64_overflow(ts, size, &earliest))
			window_out_of_range();
		hs->next = window_number(earliest, origin, slide) + 1;
		funcctx->user_fctx = hs;
	}

	funcctx = SRF_PERCALL_SETUP();
	hs = (HopState *) funcctx->user_fctx;
	if (hs->next <= hs->last)
	{
		TimestampTz start = window_start(hs->origin, hs->next, hs->slide);

		hs->next++;
		SRF_RETURN_NEXT(funcctx, TimestampTzGetDatum(start));
	}
	SRF_RETURN_DONE(funcctx);
}

/*
 * day_bucket(ts, tz) -> date: the calendar date of ts on a wall clock in
 * time zone tz.  The conversion goes through the time zone database, so
 * days of 23 and 25 hours (DST changes) are whole days.
 */
Datum
streamkpi_day_bucket(PG_FUNCTION_ARGS)
{
	TimestampTz ts = PG_GETARG_TIMESTAMPTZ(0);
	text	   *zone = PG_GETARG_TEXT_PP(1);
	Datum		local;

	if (VARSIZE_ANY_EXHDR(zone) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone must not be empty"),
				 errhint("Use a name such as 'UTC' or 'Europe/Berlin'.")));
	if (TIMESTAMP_NOT_FINITE(ts))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp must be finite to have a calendar day")));

	/* timestamptz_zone raises a clear error for an unknown time zone */
	local = DirectFunctionCall2(timestamptz_zone, PointerGetDatum(zone),
								TimestampTzGetDatum(ts));
	return DirectFunctionCall1(timestamp_date, local);
}

/* ---- wall clocks for the KPI engine ---- */

/*
 * A clock for zone: what "ts AT TIME ZONE zone" gives, computed once per
 * stretch of time in which the zone's offset cannot change.
 */
void
window_clock_init(WindowClock *c, const char *zone)
{
	char	   *lower = downcase_truncate_identifier(zone, strlen(zone), false);
	int			val;
	pg_tz	   *abbrev_tz;
	int			type = DecodeTimezoneAbbrev(0, lower, &val, &abbrev_tz);

	memset(c, 0, sizeof(WindowClock));
	c->zone = cstring_to_text(zone);
	/* AT TIME ZONE reads a name as an abbreviation first */
	c->fixed = type == TZ || type == DTZ;
	c->tz = type == UNKNOWN_FIELD ? pg_tzset(zone) : NULL;
	c->lo = c->hi = 0;			/* nothing cached */
}

/* the Unix time timestamp2tm() asks the time zone database about */
static pg_time_t
window_unix_time(TimestampTz ts)
{
	return (pg_time_t) (ts / USECS_PER_SEC +
						(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY);
}

/* ts on the clock's wall: ts AT TIME ZONE zone, as a timestamp */
Timestamp
window_clock_local(WindowClock *c, TimestampTz ts)
{
	Timestamp	local;
	pg_time_t	t;
	long		before_gmtoff;
	long		after_gmtoff;
	int			before_isdst;
	int			after_isdst;
	pg_time_t	boundary;
	int			r;

	if (ts >= c->lo && ts < c->hi)
		return ts + c->offset;
	local = DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone,
												  PointerGetDatum(c->zone),
												  TimestampTzGetDatum(ts)));
	if (c->fixed)
	{
		c->lo = DT_NOBEGIN + 1;
		c->hi = DT_NOEND;
	}
	else if (c->tz != NULL)
	{
		TimestampTz hi;

		/* the offset holds from this second until the zone's next change */
		t = window_unix_time(ts);
		r = pg_next_dst_boundary(&t, &before_gmtoff, &before_isdst, &boundary,
								 &after_gmtoff, &after_isdst, c->tz);
		if (r < 0 || ts < 0 || (int64) before_gmtoff * USECS_PER_SEC != local - ts)
			return local;		/* no stretch to cache */
		hi = r == 0 ? DT_NOEND
			: (TimestampTz) (boundary - (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY) * USECS_PER_SEC;
		/* the same stretch as cached: it reaches back to here at least */
		if (hi == c->hi && local - ts == c->offset)
			c->lo = Min(c->lo, ts - ts % USECS_PER_SEC);
		else
		{
			c->lo = ts - ts % USECS_PER_SEC;
			c->hi = hi;
		}
	}
	else
		return local;			/* a dynamic abbreviation: no cache */
	c->offset = local - ts;
	return local;
}

/* the calendar day of finite ts on the clock's wall: (ts AT TIME ZONE zone)::date */
DateADT
window_clock_day(WindowClock *c, TimestampTz ts)
{
	Timestamp	local = window_clock_local(c, ts);
	int64		days = local / USECS_PER_DAY;

	if (local % USECS_PER_DAY < 0)
		days--;
	return (DateADT) days;
}
