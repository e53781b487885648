/*-------------------------------------------------------------------------
 *
 * sparkify_apply.c
 *	  streamkpi._sparkify_apply_events(): the statement trigger on
 *	  app_events that keeps every table derived from it current, in the
 *	  writer's transaction (DESIGN §8).
 *
 *	  The statement's rows are read once (sparkify_batch.c) and grouped here
 *	  in one pass over them sorted by user, session and order: each user's
 *	  counts and latest event, each session's last song and the likes, each
 *	  user's days and levels, each day's level changes.  The groups go to
 *	  the tables as arrays, in five set-based statements prepared once per
 *	  backend: new tracks; listens (plays and likes); sessions and churn
 *	  signals; users and the KPI user dimension; users first seen per day and
 *	  daily_churn.  Each statement sees what the ones before it wrote, so
 *	  likes are resolved against the sessions' last songs before this
 *	  statement's sessions replace them.
 *
 *	  What the statements add does not depend on how events are cut into
 *	  statements (see 76_sparkify_apply.sql).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "sparkify.h"

PG_FUNCTION_INFO_V1(streamkpi_sparkify_apply_events);

/* ---- arrays built row by row ---- */

typedef struct Column
{
	Oid			type;
	int			n;
	int			capacity;
	Datum	   *values;
	bool	   *nulls;
} Column;

/* n empty columns of the given types */
static void
columns_init(Column *columns, const Oid *types, int n)
{
	for (int i = 0; i < n; i++)
	{
		Column	   *c = &columns[i];

		c->type = types[i];
		c->n = 0;
		c->capacity = 64;
		c->values = palloc(c->capacity * sizeof(Datum));
		c->nulls = palloc(c->capacity * sizeof(bool));
	}
}

/* one statement's columns, from the array of their types of the same name */
#define OUTPUT_COLUMNS_INIT(o, name) \
	do { \
		StaticAssertStmt(lengthof(name) == lengthof((o)->name), \
						 "types and columns of " #name " differ in number"); \
		columns_init((o)->name, name, lengthof(name)); \
	} while (0)

static void
column_add(Column *c, Datum value, bool isnull)
{
	if (c->n == c->capacity)
	{
		c->capacity *= 2;
		c->values = repalloc_huge(c->values, c->capacity * sizeof(Datum));
		c->nulls = repalloc_huge(c->nulls, c->capacity * sizeof(bool));
	}
	c->values[c->n] = isnull ? (Datum) 0 : value;
	c->nulls[c->n] = isnull;
	c->n++;
}

static void
column_text(Column *c, const text *t)
{
	column_add(c, PointerGetDatum(t), t == NULL);
}

static Datum
column_array(Column *c)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			lbound = 1;

	get_typlenbyvalalign(c->type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(c->values, c->nulls, 1, &c->n, &lbound,
											  c->type, typlen, typbyval, typalign));
}

/* ---- the statements ---- */

typedef enum Statement
{
	STMT_CHECK, STMT_LOCK, STMT_PARTITIONS, STMT_TRACKS, STMT_LISTENS,
	STMT_SIGNALS, STMT_USERS, STMT_DAYS, STATEMENTS
} Statement;

#define MAX_ARGS 22

typedef struct StatementDef
{
	const char *sql;
	int			nargs;
	Oid			argtypes[MAX_ARGS];
} StatementDef;

#define TXT TEXTARRAYOID
#define I8 INT8ARRAYOID
#define I4 INT4ARRAYOID
#define TS TIMESTAMPTZARRAYOID
#define DT DATEARRAYOID

static const StatementDef statements[STATEMENTS] = {
	[STMT_CHECK] = {"SELECT streamkpi._sparkify_check_session()", 0},
	[STMT_LOCK] = {"SELECT streamkpi._sparkify_lock()", 0},
	[STMT_PARTITIONS] = {"SELECT streamkpi.ensure_listens_partitions($1, $2)", 2,
	{TIMESTAMPTZOID, TIMESTAMPTZOID}},
	/* songs not seen before: the catalogue's song, when it comes, replaces them */
	[STMT_TRACKS] = {
		"INSERT INTO streamkpi.tracks (track_id, track_name, artists, duration_ms) "
		"SELECT n.track_id, n.song, n.artist, n.length_ms "
		"  FROM (SELECT unnest($1) AS track_id, unnest($2) AS song, unnest($3) AS artist, "
		"               unnest($4) AS length_ms) n "
		" WHERE NOT EXISTS (SELECT FROM streamkpi.tracks t WHERE t.track_id = n.track_id) "
		"ON CONFLICT (track_id) DO NOTHING", 4, {TXT, TXT, TXT, I4}},
	/* a like with no play before it in the statement likes its session's last song so far */
	[STMT_LISTENS] = {
		"INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played, action) "
		"SELECT l.event_id, l.user_id, l.track_id, l.listened_at, l.ms_played, l.action "
		"  FROM (SELECT n.event_id, n.user_id, n.listened_at, n.ms_played, n.action, "
		"               coalesce(n.track_id, "
		"                        (SELECT st.last_track_id FROM streamkpi.sparkify_session_state st "
		"                          WHERE st.user_id = n.user_id AND st.session_id = n.session_id "
		"                            AND st.last_song_item < n.item)) AS track_id "
		"          FROM (SELECT unnest($1) AS event_id, unnest($2) AS user_id, unnest($3) AS track_id, "
		"                       unnest($4) AS listened_at, unnest($5) AS ms_played, unnest($6) AS action, "
		"                       unnest($7) AS session_id, unnest($8) AS item) n "
		"        OFFSET 0) l "
		" WHERE l.track_id IS NOT NULL", 8, {TXT, TXT, TXT, TS, I4, TXT, I8, I4}},
	/* sessions (a session counts when its row goes in), then the signals */
	[STMT_SIGNALS] = {
		"WITH sessions AS ("
		"  INSERT INTO streamkpi.sparkify_session_state AS s "
		"         (user_id, session_id, last_song_item, last_track_id) "
		"  SELECT unnest($1), unnest($2), unnest($3), unnest($4) "
		"  ON CONFLICT (user_id, session_id) DO UPDATE "
		"     SET last_song_item = excluded.last_song_item, last_track_id = excluded.last_track_id "
		"   WHERE excluded.last_song_item >= coalesce(s.last_song_item, -1) "
		"  RETURNING s.user_id, (s.xmax = 0) AS inserted"
		"), new_sessions AS ("
		"  SELECT user_id, count(*) AS n FROM sessions WHERE inserted GROUP BY user_id"
		") "
		"INSERT INTO streamkpi.user_churn_signals AS c "
		"       (user_id, level, registered_at, first_event_at, last_event_at, last_item, "
		"        songs_played, thumbs_up, thumbs_down, add_to_playlist, add_friend, roll_advert, "
		"        upgrades, downgrades, errors, help_visits, churned_at, churned_on, sessions) "
		"SELECT b.*, coalesce(ns.n, 0) "
		"  FROM (SELECT unnest($5) AS user_id, unnest($6) AS level, unnest($7) AS registered_at, "
		"               unnest($8) AS first_event_at, unnest($9) AS last_event_at, "
		"               unnest($10) AS last_item, unnest($11) AS songs_played, "
		"               unnest($12) AS thumbs_up, unnest($13) AS thumbs_down, "
		"               unnest($14) AS add_to_playlist, unnest($15) AS add_friend, "
		"               unnest($16) AS roll_advert, unnest($17) AS upgrades, "
		"               unnest($18) AS downgrades, unnest($19) AS errors, "
		"               unnest($20) AS help_visits, unnest($21) AS churned_at, "
		"               unnest($22) AS churned_on) b "
		"  LEFT JOIN new_sessions ns USING (user_id) "
		"ON CONFLICT (user_id) DO UPDATE SET "
		"  level = CASE WHEN (excluded.last_event_at, excluded.last_item) >= (c.last_event_at, c.last_item) "
		"               THEN excluded.level ELSE c.level END, "
		"  registered_at = CASE WHEN (excluded.last_event_at, excluded.last_item) >= (c.last_event_at, c.last_item) "
		"                       THEN coalesce(excluded.registered_at, c.registered_at) "
		"                       ELSE coalesce(c.registered_at, excluded.registered_at) END, "
		"  last_item = CASE WHEN (excluded.last_event_at, excluded.last_item) >= (c.last_event_at, c.last_item) "
		"                   THEN excluded.last_item ELSE c.last_item END, "
		"  last_event_at = greatest(c.last_event_at, excluded.last_event_at), "
		"  first_event_at = least(c.first_event_at, excluded.first_event_at), "
		"  sessions = c.sessions + excluded.sessions, "
		"  songs_played = c.songs_played + excluded.songs_played, "
		"  thumbs_up = c.thumbs_up + excluded.thumbs_up, "
		"  thumbs_down = c.thumbs_down + excluded.thumbs_down, "
		"  add_to_playlist = c.add_to_playlist + excluded.add_to_playlist, "
		"  add_friend = c.add_friend + excluded.add_friend, "
		"  roll_advert = c.roll_advert + excluded.roll_advert, "
		"  upgrades = c.upgrades + excluded.upgrades, "
		"  downgrades = c.downgrades + excluded.downgrades, "
		"  errors = c.errors + excluded.errors, "
		"  help_visits = c.help_visits + excluded.help_visits, "
		"  churned_on = CASE WHEN c.churned_at IS NULL OR excluded.churned_at < c.churned_at "
		"                    THEN excluded.churned_on ELSE c.churned_on END, "
		"  churned_at = least(c.churned_at, excluded.churned_at)", 22,
		{TXT, I8, I4, TXT, TXT, TXT, TS, TS, TS, I4, I8, I8, I8, I8, I8, I8, I8, I8, I8, I8, TS, DT}},
	/*
	 * each user's row as the upsert leaves it: the latest event's values
	 * unless the stored row is of a later event; the KPI user dimension
	 * (subscription = latest level) from it, where it changes (an upsert
	 * that changes nothing still locks and logs the row)
	 */
	[STMT_USERS] = {
		"WITH user_rows AS ("
		"  SELECT l.user_id, l.event_time, l.item, "
		"         CASE WHEN newer THEN l.first_name ELSE u.first_name END AS first_name, "
		"         CASE WHEN newer THEN l.last_name ELSE u.last_name END AS last_name, "
		"         CASE WHEN newer THEN l.gender ELSE u.gender END AS gender, "
		"         CASE WHEN newer THEN l.level ELSE u.level END AS level, "
		"         CASE WHEN newer THEN l.registered_at ELSE u.registered_at END AS registered_at, "
		"         newer "
		"    FROM (SELECT unnest($1) AS user_id, unnest($2) AS event_time, unnest($3) AS item, "
		"                 unnest($4) AS level, unnest($5) AS first_name, unnest($6) AS last_name, "
		"                 unnest($7) AS gender, unnest($8) AS registered_at) l "
		"    LEFT JOIN streamkpi.sparkify_users u USING (user_id), "
		"         LATERAL (SELECT u.user_id IS NULL "
		"                         OR (l.event_time, l.item) >= (u.level_at, u.level_item)) n(newer)"
		"), users AS ("
		"  INSERT INTO streamkpi.sparkify_users "
		"         (user_id, first_name, last_name, gender, level, registered_at, level_at, level_item) "
		"  SELECT r.user_id, r.first_name, r.last_name, r.gender, r.level, r.registered_at, "
		"         r.event_time, r.item "
		"    FROM user_rows r WHERE r.newer "
		"  ON CONFLICT (user_id) DO UPDATE SET "
		"     first_name = excluded.first_name, last_name = excluded.last_name, "
		"     gender = excluded.gender, level = excluded.level, "
		"     registered_at = excluded.registered_at, "
		"     level_at = excluded.level_at, level_item = excluded.level_item"
		") "
		"INSERT INTO streamkpi.users AS d (user_id, user_name, gender, subscription, created_at) "
		"SELECT v.* "
		"  FROM (SELECT r.user_id, nullif(concat_ws(' ', r.first_name, r.last_name), '') AS user_name, "
		"               r.gender, r.level AS subscription, "
		"               (r.registered_at AT TIME ZONE $9)::date AS created_at "
		"          FROM user_rows r) v "
		" WHERE NOT EXISTS (SELECT FROM streamkpi.users u "
		"                    WHERE u.user_id = v.user_id "
		"                      AND (u.user_name, u.gender, u.subscription, u.created_at) "
		"                          IS NOT DISTINCT FROM (v.user_name, v.gender, v.subscription, v.created_at)) "
		"ON CONFLICT (user_id) DO UPDATE SET "
		"   user_name = excluded.user_name, gender = excluded.gender, "
		"   subscription = excluded.subscription, created_at = excluded.created_at "
		" WHERE (d.user_name, d.gender, d.subscription, d.created_at) "
		"       IS DISTINCT FROM (excluded.user_name, excluded.gender, excluded.subscription, excluded.created_at)",
		9, {TXT, TS, I4, TXT, TXT, TXT, TXT, TS, TEXTOID}},
	/*
	 * a user counted in daily_churn the first time its state row goes in
	 * (every writer holds the lock: what is not there yet is inserted by no
	 * one else, so no conflict check)
	 */
	[STMT_DAYS] = {
		"WITH k AS ("
		"  SELECT unnest($1) AS day, unnest($2) AS user_id, unnest($3) AS level, "
		"         unnest($4) AS registered_on"
		"), first_seen AS ("
		"  INSERT INTO streamkpi.sparkify_user_day_state (day, user_id, level) "
		"  SELECT k.day, k.user_id, k.level FROM k "
		"   WHERE NOT EXISTS (SELECT FROM streamkpi.sparkify_user_day_state s "
		"                      WHERE s.day = k.day AND s.user_id = k.user_id AND s.level = k.level) "
		"  RETURNING day, user_id, level"
		"), day_users AS ("
		"  SELECT f.day, count(*) FILTER (WHERE f.level = '') AS active, "
		"         count(*) FILTER (WHERE f.level = 'paid') AS paid, "
		"         count(*) FILTER (WHERE f.level = 'free') AS free, "
		"         count(*) FILTER (WHERE f.level = '' AND k.registered_on = f.day) AS new "
		"    FROM first_seen f JOIN k USING (day, user_id, level) "
		"   GROUP BY f.day"
		") "
		"INSERT INTO streamkpi.daily_churn AS d "
		"       (day, active_users, paid_users, free_users, new_users, upgrades, downgrades, cancellations) "
		"SELECT coalesce(u.day, p.day), coalesce(u.active, 0), coalesce(u.paid, 0), "
		"       coalesce(u.free, 0), coalesce(u.new, 0), coalesce(p.upgrades, 0), "
		"       coalesce(p.downgrades, 0), coalesce(p.cancellations, 0) "
		"  FROM day_users u "
		"  FULL JOIN (SELECT unnest($5) AS day, unnest($6) AS upgrades, "
		"                    unnest($7) AS downgrades, unnest($8) AS cancellations) p USING (day) "
		" ORDER BY 1 "
		"ON CONFLICT (day) DO UPDATE SET "
		"  active_users = d.active_users + excluded.active_users, "
		"  paid_users = d.paid_users + excluded.paid_users, "
		"  free_users = d.free_users + excluded.free_users, "
		"  new_users = d.new_users + excluded.new_users, "
		"  upgrades = d.upgrades + excluded.upgrades, "
		"  downgrades = d.downgrades + excluded.downgrades, "
		"  cancellations = d.cancellations + excluded.cancellations",
		8, {DT, TXT, TXT, DT, DT, I8, I8, I8}},
};

/* prepared once per backend */
static SPIPlanPtr plans[STATEMENTS];

static void
run(Statement s, Datum *args, int expected)
{
	int			rc;

	if (plans[s] == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(statements[s].sql, statements[s].nargs,
									   (Oid *) statements[s].argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for a Sparkify statement: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		plans[s] = plan;
	}
	rc = SPI_execute_plan(plans[s], args, NULL, false, 0);
	if (rc != expected)
		elog(ERROR, "a Sparkify statement failed: %s", SPI_result_code_string(rc));
}

/* ---- grouping the batch ---- */

/* what the statements take, row by row */
typedef struct Output
{
	Column		tracks[4];
	Column		listens[8];
	Column		sessions[4];
	Column		signals[18];
	Column		users[8];
	Column		user_days[4];
	Column		days[4];
} Output;

static void
output_init(Output *o)
{
	static const Oid tracks[] = {TEXTOID, TEXTOID, TEXTOID, INT4OID};
	static const Oid listens[] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, INT4OID,
	TEXTOID, INT8OID, INT4OID};
	static const Oid sessions[] = {TEXTOID, INT8OID, INT4OID, TEXTOID};
	static const Oid signals[] = {TEXTOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID,
		TIMESTAMPTZOID, INT4OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID,
	INT8OID, INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, DATEOID};
	static const Oid users[] = {TEXTOID, TIMESTAMPTZOID, INT4OID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, TIMESTAMPTZOID};
	static const Oid user_days[] = {DATEOID, TEXTOID, TEXTOID, DATEOID};
	static const Oid days[] = {DATEOID, INT8OID, INT8OID, INT8OID};

	OUTPUT_COLUMNS_INIT(o, tracks);
	OUTPUT_COLUMNS_INIT(o, listens);
	OUTPUT_COLUMNS_INIT(o, sessions);
	OUTPUT_COLUMNS_INIT(o, signals);
	OUTPUT_COLUMNS_INIT(o, users);
	OUTPUT_COLUMNS_INIT(o, user_days);
	OUTPUT_COLUMNS_INIT(o, days);
}

/* the arrays of n columns, into args */
static void
arrays_of(Column *columns, int n, Datum *args)
{
	for (int i = 0; i < n; i++)
		args[i] = column_array(&columns[i]);
}

/* the listen of a play or a like; a like's track NULL: its session's last song so far */
static void
add_listen(Output *o, const SparkifyEvent *e, const text *track_id, bool like)
{
	char		id[64];

	snprintf(id, sizeof(id), "sparkify:" INT64_FORMAT, e->event_id);
	column_text(&o->listens[0], cstring_to_text(id));
	column_text(&o->listens[1], e->user_id);
	column_text(&o->listens[2], track_id);
	column_add(&o->listens[3], TimestampTzGetDatum(e->time), false);
	column_add(&o->listens[4], Int32GetDatum(e->length_ms), like || !e->has_length);
	column_text(&o->listens[5], cstring_to_text(like ? "like" : "play"));
	column_add(&o->listens[6], Int64GetDatum(e->session_id), !like || track_id != NULL);
	column_add(&o->listens[7], Int32GetDatum(e->item), !like || track_id != NULL || !e->has_item);
}

/* tracks: one row per track id, its least song, artist and length */
static int
track_cmp(const void *pa, const void *pb)
{
	return sparkify_text_cmp((*(SparkifyEvent *const *) pa)->track_id,
							 (*(SparkifyEvent *const *) pb)->track_id);
}

static const text *
least_text(const text *a, const text *b)
{
	if (a == NULL)
		return b;
	if (b == NULL)
		return a;
	return sparkify_text_cmp(a, b) <= 0 ? a : b;
}

static void
group_tracks(Output *o, SparkifyBatch *batch)
{
	SparkifyEvent **plays = palloc(Max(batch->nevents, 1) * sizeof(SparkifyEvent *));
	int			n = 0;

	for (int i = 0; i < batch->nevents; i++)
	{
		SparkifyEvent *e = &batch->events[i];

		CHECK_FOR_INTERRUPTS();
		if (e->track_id == NULL)
			continue;
		plays[n++] = e;
		if (e->user_id != NULL)
			add_listen(o, e, e->track_id, false);
	}
	qsort(plays, n, sizeof(SparkifyEvent *), track_cmp);
	for (int i = 0; i < n;)
	{
		int			j = i;
		const text *song = NULL;
		const text *artist = NULL;
		bool		has_length = false;
		int32		length_ms = 0;

		CHECK_FOR_INTERRUPTS();
		for (; j < n && sparkify_text_cmp(plays[j]->track_id, plays[i]->track_id) == 0; j++)
		{
			song = least_text(song, plays[j]->song);
			artist = least_text(artist, plays[j]->artist);
			if (plays[j]->has_length && (!has_length || plays[j]->length_ms < length_ms))
				length_ms = plays[j]->length_ms;
			has_length |= plays[j]->has_length;
		}
		column_text(&o->tracks[0], plays[i]->track_id);
		column_text(&o->tracks[1], song);
		column_text(&o->tracks[2], artist);
		column_add(&o->tracks[3], Int32GetDatum(length_ms), !has_length);
		i = j;
	}
}

/* ---- per user ---- */

/* a's event is later than b's: time, then item (NULL first), then event_id */
static bool
later(const SparkifyEvent *a, const SparkifyEvent *b)
{
	if (a->time != b->time)
		return a->time > b->time;
	if (a->has_item != b->has_item)
		return a->has_item;
	if (a->has_item && a->item != b->item)
		return a->item > b->item;
	return a->event_id > b->event_id;
}

/* the level kinds of sparkify_user_day_state: '' (any), 'paid', 'free' */
#define LEVEL_KINDS 3

/* per day of the batch: level changes and cancellations */
typedef struct DayPages
{
	DateADT		day;
	int64		upgrades;
	int64		downgrades;
	int64		cancellations;
} DayPages;

typedef struct UserDay
{
	DateADT		day;
	int			kind;
} UserDay;

typedef struct Grouping
{
	Output		out;
	text	   *level_names[LEVEL_KINDS];
	DayPages   *days;
	int			ndays;
	int			days_capacity;
	UserDay    *user_days;		/* the current user's days and levels */
	int			nuser_days;
	int			user_days_capacity;
} Grouping;

static int
level_kind(const text *level)
{
	if (level == NULL || VARSIZE_ANY_EXHDR(level) != 4)
		return -1;
	if (memcmp(VARDATA_ANY(level), "paid", 4) == 0)
		return 1;
	if (memcmp(VARDATA_ANY(level), "free", 4) == 0)
		return 2;
	return -1;
}

static void
note_user_day(Grouping *g, DateADT day, int kind)
{
	for (int i = 0; i < g->nuser_days; i++)
		if (g->user_days[i].day == day && g->user_days[i].kind == kind)
			return;
	if (g->nuser_days == g->user_days_capacity)
	{
		g->user_days_capacity *= 2;
		g->user_days = repalloc(g->user_days, g->user_days_capacity * sizeof(UserDay));
	}
	g->user_days[g->nuser_days].day = day;
	g->user_days[g->nuser_days].kind = kind;
	g->nuser_days++;
}

static void
note_day_page(Grouping *g, const SparkifyEvent *e)
{
	DayPages   *d = NULL;

	if (e->page != SPARKIFY_PAGE_UPGRADE && e->page != SPARKIFY_PAGE_DOWNGRADE &&
		e->page != SPARKIFY_PAGE_CANCELLATION)
		return;
	for (int i = 0; i < g->ndays && d == NULL; i++)
		if (g->days[i].day == e->day)
			d = &g->days[i];
	if (d == NULL)
	{
		if (g->ndays == g->days_capacity)
		{
			g->days_capacity *= 2;
			g->days = repalloc(g->days, g->days_capacity * sizeof(DayPages));
		}
		d = &g->days[g->ndays++];
		memset(d, 0, sizeof(*d));
		d->day = e->day;
	}
	d->upgrades += (e->page == SPARKIFY_PAGE_UPGRADE);
	d->downgrades += (e->page == SPARKIFY_PAGE_DOWNGRADE);
	d->cancellations += (e->page == SPARKIFY_PAGE_CANCELLATION);
}

/*
 * One session's events in order: each like is of the last song played
 * before it (none in the statement: left to the listens statement), and the
 * session's state row takes its last song.
 */
static void
group_session(Output *o, SparkifyEvent **ev, int n)
{
	const SparkifyEvent *last_play = NULL;

	for (int i = 0; i < n; i++)
	{
		if (ev[i]->track_id != NULL)
			last_play = ev[i];
		else if (ev[i]->page == SPARKIFY_PAGE_THUMBS_UP)
			add_listen(o, ev[i], last_play ? last_play->track_id : NULL, true);
	}
	column_text(&o->sessions[0], ev[0]->user_id);
	column_add(&o->sessions[1], Int64GetDatum(ev[0]->session_id), false);
	column_add(&o->sessions[2], Int32GetDatum(last_play ? last_play->item : 0),
			   last_play == NULL || !last_play->has_item);
	column_text(&o->sessions[3], last_play ? last_play->track_id : NULL);
}

/* the user's churn signals and user rows, from its counts and latest event */
static void
add_user_rows(Output *o, const SparkifyEvent *latest, const int64 *counts, TimestampTz first_at,
			  const SparkifyEvent *churn)
{
	static const SparkifyPage counted[] = {SPARKIFY_PAGE_NEXT_SONG, SPARKIFY_PAGE_THUMBS_UP,
		SPARKIFY_PAGE_THUMBS_DOWN, SPARKIFY_PAGE_ADD_TO_PLAYLIST, SPARKIFY_PAGE_ADD_FRIEND,
		SPARKIFY_PAGE_ROLL_ADVERT, SPARKIFY_PAGE_UPGRADE, SPARKIFY_PAGE_DOWNGRADE,
	SPARKIFY_PAGE_ERROR, SPARKIFY_PAGE_HELP};
	int32		item = latest->has_item ? latest->item : -1;

	column_text(&o->signals[0], latest->user_id);
	column_text(&o->signals[1], latest->level);
	column_add(&o->signals[2], TimestampTzGetDatum(latest->registered_at), !latest->has_registered);
	column_add(&o->signals[3], TimestampTzGetDatum(first_at), false);
	column_add(&o->signals[4], TimestampTzGetDatum(latest->time), false);
	column_add(&o->signals[5], Int32GetDatum(item), false);
	for (int i = 0; i < lengthof(counted); i++)
		column_add(&o->signals[6 + i], Int64GetDatum(counts[counted[i]]), false);
	column_add(&o->signals[16], TimestampTzGetDatum(churn ? churn->time : 0), churn == NULL);
	column_add(&o->signals[17], DateADTGetDatum(churn ? churn->day : 0), churn == NULL);

	column_text(&o->users[0], latest->user_id);
	column_add(&o->users[1], TimestampTzGetDatum(latest->time), false);
	column_add(&o->users[2], Int32GetDatum(item), false);
	column_text(&o->users[3], latest->level);
	column_text(&o->users[4], latest->first_name);
	column_text(&o->users[5], latest->last_name);
	column_text(&o->users[6], latest->gender);
	column_add(&o->users[7], TimestampTzGetDatum(latest->registered_at), !latest->has_registered);
}

/* one user's events, sorted by session and order */
static void
group_user(Grouping *g, SparkifyEvent **ev, int n)
{
	int64		counts[SPARKIFY_PAGES] = {0};
	const SparkifyEvent *latest = ev[0];
	const SparkifyEvent *churn = NULL;
	const SparkifyEvent *registered = NULL;
	TimestampTz first_at = ev[0]->time;

	g->nuser_days = 0;
	for (int i = 0; i < n; i++)
	{
		const SparkifyEvent *e = ev[i];
		int			kind = level_kind(e->level);

		counts[e->page]++;
		first_at = Min(first_at, e->time);
		if (later(e, latest))
			latest = e;
		if (e->page == SPARKIFY_PAGE_CANCELLATION && (churn == NULL || e->time < churn->time))
			churn = e;
		if (e->has_registered && (registered == NULL || e->registered_at < registered->registered_at))
			registered = e;
		note_day_page(g, e);
		note_user_day(g, e->day, 0);
		if (kind > 0)
			note_user_day(g, e->day, kind);
	}
	for (int i = 0; i < n;)
	{
		int			j = i + 1;

		while (j < n && ev[j]->has_session == ev[i]->has_session &&
			   ev[j]->session_id == ev[i]->session_id)
			j++;
		if (ev[i]->has_session)
			group_session(&g->out, ev + i, j - i);
		i = j;
	}
	add_user_rows(&g->out, latest, counts, first_at, churn);
	for (int i = 0; i < g->nuser_days; i++)
	{
		Output	   *o = &g->out;

		column_add(&o->user_days[0], DateADTGetDatum(g->user_days[i].day), false);
		column_text(&o->user_days[1], ev[0]->user_id);
		column_text(&o->user_days[2], g->level_names[g->user_days[i].kind]);
		column_add(&o->user_days[3],
				   DateADTGetDatum(registered ? sparkify_local_day(registered->registered_at) : 0),
				   registered == NULL);
	}
}

static void
group_users(Grouping *g, SparkifyBatch *batch)
{
	SparkifyEvent **ev = batch->logged_in;

	g->level_names[0] = cstring_to_text("");
	g->level_names[1] = cstring_to_text("paid");
	g->level_names[2] = cstring_to_text("free");
	g->days_capacity = g->user_days_capacity = 8;
	g->days = palloc(g->days_capacity * sizeof(DayPages));
	g->user_days = palloc(g->user_days_capacity * sizeof(UserDay));
	for (int i = 0; i < batch->nlogged_in;)
	{
		int			j = i + 1;

		CHECK_FOR_INTERRUPTS();
		while (j < batch->nlogged_in && sparkify_text_cmp(ev[j]->user_id, ev[i]->user_id) == 0)
			j++;
		group_user(g, ev + i, j - i);
		i = j;
	}
	for (int i = 0; i < g->ndays; i++)
	{
		DayPages   *d = &g->days[i];

		if (d->upgrades + d->downgrades + d->cancellations == 0)
			continue;
		column_add(&g->out.days[0], DateADTGetDatum(d->day), false);
		column_add(&g->out.days[1], Int64GetDatum(d->upgrades), false);
		column_add(&g->out.days[2], Int64GetDatum(d->downgrades), false);
		column_add(&g->out.days[3], Int64GetDatum(d->cancellations), false);
	}
}

/* ---- the trigger ---- */

static void
write_tables(Grouping *g, SparkifyBatch *batch, const char *timezone)
{
	Output	   *o = &g->out;
	Datum		args[MAX_ARGS];

	if (batch->has_listens)
	{
		args[0] = TimestampTzGetDatum(batch->listens_from);
		args[1] = TimestampTzGetDatum(batch->listens_to);
		run(STMT_PARTITIONS, args, SPI_OK_SELECT);
	}
	if (o->tracks[0].n > 0)
	{
		arrays_of(o->tracks, lengthof(o->tracks), args);
		run(STMT_TRACKS, args, SPI_OK_INSERT);
	}
	if (o->listens[0].n > 0)
	{
		arrays_of(o->listens, lengthof(o->listens), args);
		run(STMT_LISTENS, args, SPI_OK_INSERT);
	}
	if (o->signals[0].n == 0)
		return;					/* no logged-in events */
	arrays_of(o->sessions, lengthof(o->sessions), args);
	arrays_of(o->signals, lengthof(o->signals), args + lengthof(o->sessions));
	run(STMT_SIGNALS, args, SPI_OK_INSERT);
	arrays_of(o->users, lengthof(o->users), args);
	args[lengthof(o->users)] = CStringGetTextDatum(timezone);
	run(STMT_USERS, args, SPI_OK_INSERT);
	arrays_of(o->user_days, lengthof(o->user_days), args);
	arrays_of(o->days, lengthof(o->days), args + lengthof(o->user_days));
	run(STMT_DAYS, args, SPI_OK_INSERT);
}

/*
 * AFTER INSERT ... REFERENCING NEW TABLE ... FOR EACH STATEMENT on
 * streamkpi.app_events.  The session check and the writers' lock come
 * first, as in the songs trigger (76_sparkify_apply.sql).  Everything the
 * batch needs is allocated in SPI's procedure context (where SPI returns
 * after each statement), so SPI_finish frees it.
 */
Datum
streamkpi_sparkify_apply_events(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	SparkifyBatch batch;
	Grouping   *g;
	char	   *timezone;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) || trigdata->tg_newtable == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("streamkpi._sparkify_apply_events() must run as an AFTER ... FOR EACH STATEMENT trigger with a NEW TABLE")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	run(STMT_CHECK, NULL, SPI_OK_SELECT);
	timezone = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	run(STMT_LOCK, NULL, SPI_OK_SELECT);

	sparkify_read_batch(&batch, trigdata->tg_newtable,
						RelationGetDescr(trigdata->tg_relation), timezone);
	g = palloc0(sizeof(Grouping));
	output_init(&g->out);
	group_tracks(&g->out, &batch);
	group_users(g, &batch);
	write_tables(g, &batch, timezone);

	SPI_finish();
	return PointerGetDatum(NULL);
}
