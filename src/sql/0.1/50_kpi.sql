-- streamkpi 0.1: KPI tables (docs/contract.md §5), their sketch side tables, rollups
-- and streamkpi.refresh_kpis().
--
-- What each KPI means (listen, listen ms, genre, ranks, ties, windows,
-- engagement rates, division by zero) is defined once, in docs/kpis.md
-- ("Definitions"); this file implements exactly that.
--
-- How it is computed.  Every KPI is derived from additive "state" side tables
-- (counts, sums, hll sketches) keyed by day or window:
--   raw events --(accumulate, C)--> state tables --(derive)--> KPI tables
-- One engine does it for both paths (src/kpi_*.c): the KPI worker's rounds
-- (streamkpi.kpi_apply_new(), 60_kpi_incremental.sql) stream the events
-- committed since the last round, refresh_kpis() the events of its range
-- after emptying it, through the same accumulation of streamkpi.listens
-- (each event completed by its track and user in C; kpi_events below shows
-- them), the same merge into the state and the same derivation
-- (streamkpi._kpi_derive_days() for days, kpi_window.c for windows).  That is
-- why both paths give identical rows.  Weeks and months roll up from the
-- state by hll union, never by rescanning raw events.
--
-- The day of a state row is the local day in the time zone in force when it
-- was computed: after changing streamkpi.kpi_timezone, refresh everything.

-- The KPI time zone.  The GUC is defined in C; until a backend has loaded the
-- library it may be a placeholder or absent, hence missing_ok and the default.
CREATE FUNCTION streamkpi.kpi_timezone()
	RETURNS text
	LANGUAGE sql STABLE PARALLEL SAFE
	AS $$ SELECT COALESCE(NULLIF(
			  pg_catalog.current_setting('streamkpi.kpi_timezone', true), ''), 'UTC') $$;

COMMENT ON FUNCTION streamkpi.kpi_timezone() IS
	'time zone of KPI days: setting streamkpi.kpi_timezone, default UTC';

-- An event as the KPIs see it: the event-level rules of docs/kpis.md
-- (region and device 'unknown' when NULL; the track's genre, 'unknown' for
-- a missing track or a NULL or empty genre; listen ms; completed; the
-- user's subscription, country and age group, 'unknown' when missing) are
-- written once, in C (src/kpi_dims.c), which the KPI engine calls for
-- every event it reads from streamkpi.listens.  Not for PUBLIC: it reads
-- tracks and users.
CREATE FUNCTION streamkpi._kpi_event_attributes(p_track_id text, p_user_id text,
	p_ms_played int, p_region text, p_device text,
	OUT region text, OUT device text, OUT genre text, OUT listen_ms bigint,
	OUT completed boolean, OUT subscription text, OUT country text,
	OUT age_group text)
	RETURNS record
	AS 'MODULE_PATHNAME', 'streamkpi_kpi_event_attributes'
	LANGUAGE C STABLE PARALLEL SAFE;

REVOKE ALL ON FUNCTION streamkpi._kpi_event_attributes(text, text, int, text, text) FROM PUBLIC;

-- Events enriched with everything a KPI needs, for inspection.  Filter on
-- listened_at so that partitions are pruned.  Not granted to
-- streamkpi_reader.  The local day and hour of an event are not here: the
-- engine derives them from listened_at on the wall clock of
-- streamkpi.kpi_timezone (kpi_accumulate.c), their one definition.
CREATE VIEW streamkpi.kpi_events AS
SELECT l.event_id,
	   l.listened_at,
	   l.ingest_xid,
	   l.ingested_at,
	   l.user_id,
	   l.track_id,
	   l.action,
	   a.region,
	   a.device,
	   a.genre,
	   a.listen_ms,
	   a.completed,
	   a.subscription,
	   a.country,
	   a.age_group
  FROM streamkpi.listens l
 CROSS JOIN LATERAL streamkpi._kpi_event_attributes(l.track_id, l.user_id, l.ms_played,
													 l.region, l.device) a;

COMMENT ON VIEW streamkpi.kpi_events IS
	'listen events with genre, listen ms and user attributes, as KPIs see them';

-- Window sizes for trending and track_windows.
CREATE TABLE streamkpi.trending_windows (
	window_size	interval PRIMARY KEY,
	top_n		int NOT NULL DEFAULT 3,
	-- date_bin() cannot bin by months; a day is the longest useful window.
	CONSTRAINT trending_windows_size_check
		CHECK (window_size >= interval '1 second' AND window_size <= interval '1 day'
			   AND pg_catalog.date_part('month', window_size) = 0
			   AND pg_catalog.date_part('year', window_size) = 0),
	CONSTRAINT trending_windows_top_n_check CHECK (top_n BETWEEN 1 AND 100)
);

INSERT INTO streamkpi.trending_windows (window_size) VALUES
	(interval '1 minute'), (interval '5 minutes'), (interval '10 minutes');

COMMENT ON TABLE streamkpi.trending_windows IS
	'tumbling window sizes of streamkpi.trending and streamkpi.track_windows';

---------------------------------------------------------------------------
-- Text keys of the state and KPI tables are COLLATE "C": ranks break ties by
-- byte order anyway, and byte comparisons keep the engine's index
-- maintenance cheap whatever the database collation.
--
-- State (side) tables.  Additive, so that the KPI worker can merge new events
-- in and weeks/months can be rolled up.

-- Listens of the tracks left out of their genre's daily_genre_track_topn
-- summary, per day: the tracks in it have their exact count there
-- (src/kpi_day_topn.c).  Empty while no genre has more than 1000 tracks
-- in a day.  daily_genre_track_listens shows every track's listens.
CREATE TABLE streamkpi.daily_genre_track_counts (
	day			date NOT NULL,
	genre		text COLLATE "C" NOT NULL,
	track_id	text COLLATE "C" NOT NULL,
	listens		bigint NOT NULL,
	PRIMARY KEY (day, genre, track_id)
) WITH (fillfactor = 70);	-- counters updated in place (HOT)

-- Top tracks per day and genre as a mergeable streamkpi.topn summary: the
-- 1000 tracks with the most listens (ties by track_id), their counts exact
-- (max_error 0), the floor the largest count left out.  The engine keeps it
-- from the counts a round changes (src/kpi_day_topn.c), and the daily top
-- tracks are its first items; weeks and months merge these with
-- topn_union_agg instead of re-reading per-track counts.
CREATE TABLE streamkpi.daily_genre_track_topn (
	day			date NOT NULL,
	genre		text COLLATE "C" NOT NULL,
	tracks		streamkpi.topn NOT NULL,
	PRIMARY KEY (day, genre)
);

-- The exact listens of every track per day and genre: the items of its
-- summary and the tracks left out of it.
CREATE VIEW streamkpi.daily_genre_track_listens AS
SELECT s.day, s.genre, i.item COLLATE "C" AS track_id, i.count AS listens
  FROM streamkpi.daily_genre_track_topn s
 CROSS JOIN LATERAL streamkpi.topn_items(s.tracks, 1000) i
UNION ALL
SELECT c.day, c.genre, c.track_id, c.listens
  FROM streamkpi.daily_genre_track_counts c;

-- Distinct listeners per day and genre (hll of user_id, log2m 14).
CREATE TABLE streamkpi.daily_genre_users (
	day			date NOT NULL,
	genre		text COLLATE "C" NOT NULL,
	users		hll NOT NULL,
	PRIMARY KEY (day, genre)
) WITH (fillfactor = 70);	-- sketches updated in place (HOT)

-- Engagement counters and distinct engaged users per day, dimension, value.
-- Its ('region', value) rows are the per-day-and-region user sketches.
CREATE TABLE streamkpi.daily_engagement_state (
	day			date NOT NULL,
	dimension	text COLLATE "C" NOT NULL,
	value		text COLLATE "C" NOT NULL,
	plays		bigint NOT NULL,
	skips		bigint NOT NULL,
	likes		bigint NOT NULL,
	completed_plays bigint NOT NULL,
	listen_ms	bigint NOT NULL,
	users		hll NOT NULL,
	PRIMARY KEY (day, dimension, value)
) WITH (fillfactor = 70);	-- counters updated in place (HOT)

-- Per window (a size of trending_windows and a start): part 0 packs the
-- counters of every (track, region) of the window (plays, skips, likes,
-- listen ms), parts 1.. the hll of the users who played each track, as
-- rounds added them; a track's players are the union over those parts and
-- the parts of the windows inside the window (_window_track_players).  A
-- round rewrites part 0, adds a players part with the players it saw (to
-- windows that do not take theirs from the windows inside them), and
-- every WINDOW_PLAYERS_PARTS_MAX parts (src/kpi_window.c) merges the small
-- ones into one (a large part stays until they add up to it), so its
-- writes follow its events, not all that its windows hold
-- (format in src/kpi_window_state.c).
-- streamkpi.window_track_state shows the entries as rows.
CREATE TABLE streamkpi.window_state (
	window_start timestamptz NOT NULL,
	window_size	interval NOT NULL,
	part		int NOT NULL DEFAULT 0,
	tracks		bytea NOT NULL,
	PRIMARY KEY (window_start, window_size, part),
	CONSTRAINT window_state_part_check CHECK (part >= 0)
) WITH (fillfactor = 70);	-- part 0 rewritten per round (HOT)
-- Mostly hashes (the sketches), which do not compress: stored
-- uncompressed.  lz4 saved 5-17% of the bytes for 5% of a round's CPU
-- (docs/benchmarks.md).
ALTER TABLE streamkpi.window_state ALTER COLUMN tracks SET STORAGE EXTERNAL;

-- A window's counters from its part 0, one row per (region, track).
CREATE FUNCTION streamkpi._window_state_entries(tracks bytea,
	OUT region text, OUT track_id text, OUT plays bigint, OUT skips bigint,
	OUT likes bigint, OUT listen_ms bigint)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'streamkpi_window_state_entries'
	LANGUAGE C STRICT IMMUTABLE;

-- The tracks of one players part with their value.
CREATE FUNCTION streamkpi._window_players_rows(players bytea,
	OUT track_id text, OUT players bytea)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'streamkpi_window_players_rows'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE ROWS 200;

-- A track's players in a window, the union of its values: an hll value
-- (NULL: none), and how many distinct users that is (round(hll_cardinality())).
CREATE FUNCTION streamkpi._window_players(players bytea[]) RETURNS bytea
	AS 'MODULE_PATHNAME', 'streamkpi_window_players'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION streamkpi._window_players_count(players bytea[]) RETURNS bigint
	AS 'MODULE_PATHNAME', 'streamkpi_window_players_count'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

-- How many times the smallest size a window summed from the smallest
-- windows may be and still take its players from them (a round writes it
-- no players parts; WINDOW_PLAYERS_INSIDE_MAX in src/kpi_window.h).
CREATE FUNCTION streamkpi._window_players_inside_max() RETURNS int
	AS 'MODULE_PATHNAME', 'streamkpi_window_players_inside_max'
	LANGUAGE C IMMUTABLE PARALLEL SAFE;

-- A window's end: its size taken as seconds, so that the end does not move
-- with the session's time zone ('1 day' is 24 hours, as for date_bin()
-- and the engine).  Stable, as timestamptz + interval is, so it inlines.
CREATE FUNCTION streamkpi._window_end(start timestamptz, size interval)
	RETURNS timestamptz
	LANGUAGE sql STABLE PARALLEL SAFE
	RETURN start OPERATOR(pg_catalog.+)
		pg_catalog.make_interval(secs => pg_catalog.date_part('epoch', size));

-- Per (window, track), its values in the players parts of the window and
-- of the windows inside it up to _window_players_inside_max() times
-- smaller.  A round writes no players parts for a window summed from the
-- smallest ones that is at most that much larger (src/kpi_window.c): its
-- players are the union of those of the smallest windows that tile it.
-- Windows inside hold a subset of its players, and a union ignores
-- repeats, so taking them in is right whichever windows have parts.
-- A size added to trending_windows mid-window (or by a late event) thus
-- shows the players of the whole window at once, its counters only from
-- then on: refresh_kpis() after changing trending_windows, as said there.
-- The views below LEFT JOIN it on its whole key, so the planner drops the
-- join (and never reads a players part) when a query asks for no players
-- column: a poll of which tracks are in a window reads part 0 only.
CREATE VIEW streamkpi._window_track_players AS
SELECT w.window_start, w.window_size, p.track_id COLLATE "C" AS track_id,
	   pg_catalog.array_agg(p.players) AS players
  FROM streamkpi.window_state w
  JOIN streamkpi.window_state u
	ON u.window_start OPERATOR(pg_catalog.>=) w.window_start
   AND u.window_start OPERATOR(pg_catalog.<)
	   streamkpi._window_end(w.window_start, w.window_size)
   AND streamkpi._window_end(u.window_start, u.window_size) OPERATOR(pg_catalog.<=)
	   streamkpi._window_end(w.window_start, w.window_size)
   AND w.window_size OPERATOR(pg_catalog.<=)
	   (u.window_size OPERATOR(pg_catalog.*) streamkpi._window_players_inside_max())
   AND u.part OPERATOR(pg_catalog.>) 0
 CROSS JOIN LATERAL streamkpi._window_players_rows(u.tracks) p
 WHERE w.part OPERATOR(pg_catalog.=) 0
 GROUP BY w.window_start, w.window_size, p.track_id COLLATE "C";

-- The window state as one row per (window, region, track): users, the
-- track's players in the window (all regions), is NULL when it had none.
CREATE VIEW streamkpi.window_track_state AS
SELECT w.window_size, w.window_start, e.region, e.track_id, e.plays, e.skips,
	   e.likes, e.listen_ms, streamkpi._window_players(p.players)::hll AS users
  FROM streamkpi.window_state w
 CROSS JOIN LATERAL streamkpi._window_state_entries(w.tracks) e
  LEFT JOIN streamkpi._window_track_players p
	ON p.window_start OPERATOR(pg_catalog.=) w.window_start
   AND p.window_size OPERATOR(pg_catalog.=) w.window_size
   AND p.track_id OPERATOR(pg_catalog.=) e.track_id COLLATE "C"
 WHERE w.part OPERATOR(pg_catalog.=) 0;

COMMENT ON VIEW streamkpi.window_track_state IS
	'the entries of streamkpi.window_state as rows, for inspection';

---------------------------------------------------------------------------
-- KPI tables: plain SQL types, what Superset reads.

CREATE TABLE streamkpi.daily_genre_kpis (
	day			date NOT NULL,
	genre		text COLLATE "C" NOT NULL,
	listen_count bigint NOT NULL,
	unique_listeners bigint NOT NULL,
	total_listen_ms bigint NOT NULL,
	avg_listen_ms_per_user numeric,
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (day, genre)
) WITH (fillfactor = 70);	-- the day's rows updated in place (HOT)
-- Charts of one genre over time.
CREATE INDEX daily_genre_kpis_genre_day_idx ON streamkpi.daily_genre_kpis (genre, day);

CREATE TABLE streamkpi.daily_genre_top_tracks (
	day			date NOT NULL,
	genre		text COLLATE "C" NOT NULL,
	rank		int NOT NULL CHECK (rank BETWEEN 1 AND 3),
	track_id	text COLLATE "C" NOT NULL,
	track_name	text,
	listen_count bigint NOT NULL,
	PRIMARY KEY (day, genre, rank)
) WITH (fillfactor = 70);

CREATE TABLE streamkpi.daily_top_genres (
	day			date NOT NULL,
	rank		int NOT NULL CHECK (rank BETWEEN 1 AND 5),
	genre		text COLLATE "C" NOT NULL,
	listen_count bigint NOT NULL,
	PRIMARY KEY (day, rank)
) WITH (fillfactor = 70);

CREATE TABLE streamkpi.trending (
	window_size	interval NOT NULL,
	window_start timestamptz NOT NULL,
	region		text COLLATE "C" NOT NULL,
	rank		int NOT NULL CHECK (rank >= 1),
	window_end	timestamptz NOT NULL,
	track_id	text COLLATE "C" NOT NULL,
	plays		bigint NOT NULL,
	skips		bigint NOT NULL,
	likes		bigint NOT NULL,
	-- window_start first: range deletes across sizes use it
	PRIMARY KEY (window_start, window_size, region, rank)
) WITH (fillfactor = 70);	-- a window's rankings updated in place (HOT)
-- "Latest windows of a region".
CREATE INDEX trending_region_start_idx ON streamkpi.trending (region, window_size, window_start);

-- track_windows is derived from window_state when it is read, not stored:
-- a round of the KPI worker would otherwise write a row and two index
-- entries for about every third event of sparse windows (most of its
-- cost), and refresh_kpis() and the worker show the same rows by
-- construction.  Filters on window_start and window_size use
-- window_state's primary key.
CREATE FUNCTION streamkpi._window_track_rows(tracks bytea,
	OUT track_id text, OUT plays bigint, OUT listen_ms bigint)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'streamkpi_window_track_rows'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE ROWS 200;

CREATE VIEW streamkpi.track_windows AS
SELECT w.window_size, w.window_start, t.track_id COLLATE "C" AS track_id,
	   streamkpi._window_end(w.window_start, w.window_size) AS window_end,
	   t.plays AS total_listens,
	   COALESCE(streamkpi._window_players_count(p.players), 0) AS unique_users,
	   pg_catalog.round(t.listen_ms::numeric OPERATOR(pg_catalog./) t.plays, 3) AS avg_listen_ms
  FROM streamkpi.window_state w
 CROSS JOIN LATERAL streamkpi._window_track_rows(w.tracks) t
  LEFT JOIN streamkpi._window_track_players p
	ON p.window_start OPERATOR(pg_catalog.=) w.window_start
   AND p.window_size OPERATOR(pg_catalog.=) w.window_size
   AND p.track_id OPERATOR(pg_catalog.=) t.track_id COLLATE "C"
 WHERE w.part OPERATOR(pg_catalog.=) 0;

COMMENT ON VIEW streamkpi.track_windows IS
	'per window and track with at least one play, all regions: plays, distinct players, average listen ms (from streamkpi.window_state)';

CREATE TABLE streamkpi.daily_engagement (
	day			date NOT NULL,
	dimension	text COLLATE "C" NOT NULL CHECK (dimension IN ('genre', 'subscription', 'age_group',
								'hour', 'country', 'device', 'region')),
	value		text COLLATE "C" NOT NULL,
	streams		bigint NOT NULL,
	skips		bigint NOT NULL,
	likes		bigint NOT NULL,
	unique_users bigint NOT NULL,
	skip_rate	numeric,
	like_rate	numeric,
	completion_rate numeric,
	avg_listen_ms numeric,
	PRIMARY KEY (day, dimension, value)
) WITH (fillfactor = 70);
-- One dimension over time (the usual chart filter).
CREATE INDEX daily_engagement_dimension_idx ON streamkpi.daily_engagement (dimension, day);

---------------------------------------------------------------------------
-- Rollups from day sketches (never from raw events).

CREATE VIEW streamkpi.weekly_genre_listeners AS
SELECT pg_catalog.date_trunc('week', day)::date AS week,	-- ISO week, Monday
	   genre,
	   pg_catalog.round(hll_cardinality(hll_union_agg(users)))::bigint AS unique_listeners
  FROM streamkpi.daily_genre_users
 GROUP BY 1, 2;

COMMENT ON VIEW streamkpi.weekly_genre_listeners IS
	'unique listeners per ISO week (starting Monday) and genre, from the union of day sketches';

CREATE VIEW streamkpi.monthly_genre_listeners AS
SELECT pg_catalog.date_trunc('month', day)::date AS month,
	   genre,
	   pg_catalog.round(hll_cardinality(hll_union_agg(users)))::bigint AS unique_listeners
  FROM streamkpi.daily_genre_users
 GROUP BY 1, 2;

COMMENT ON VIEW streamkpi.monthly_genre_listeners IS
	'unique listeners per calendar month and genre, from the union of day sketches';

CREATE VIEW streamkpi.weekly_genre_top_tracks AS
SELECT w.week, w.genre, i.rank, i.item AS track_id, i.count AS listen_count, i.max_error
  FROM (SELECT pg_catalog.date_trunc('week', day)::date AS week, genre,
			   streamkpi.topn_union_agg(tracks) AS tracks
		  FROM streamkpi.daily_genre_track_topn
		 GROUP BY 1, 2) w
 CROSS JOIN LATERAL
	   (SELECT t.item, t.count, t.max_error,
			   pg_catalog.row_number() OVER (ORDER BY t.count DESC, t.item COLLATE "C") AS rank
		  FROM streamkpi.topn_items(w.tracks, 3) t) i;

COMMENT ON VIEW streamkpi.weekly_genre_top_tracks IS
	'top 3 tracks per ISO week and genre, from the union of day topn summaries (max_error 0: exact)';

CREATE VIEW streamkpi.monthly_genre_top_tracks AS
SELECT m.month, m.genre, i.rank, i.item AS track_id, i.count AS listen_count, i.max_error
  FROM (SELECT pg_catalog.date_trunc('month', day)::date AS month, genre,
			   streamkpi.topn_union_agg(tracks) AS tracks
		  FROM streamkpi.daily_genre_track_topn
		 GROUP BY 1, 2) m
 CROSS JOIN LATERAL
	   (SELECT t.item, t.count, t.max_error,
			   pg_catalog.row_number() OVER (ORDER BY t.count DESC, t.item COLLATE "C") AS rank
		  FROM streamkpi.topn_items(m.tracks, 3) t) i;

COMMENT ON VIEW streamkpi.monthly_genre_top_tracks IS
	'top 3 tracks per calendar month and genre, from the union of day topn summaries (max_error 0: exact)';

---------------------------------------------------------------------------
-- Derivation of the day KPI tables from the day state, for the (day, genre)
-- and (day, dimension, value) keys given: the one definition of these
-- tables, called by the engine (src/kpi_merge.c) for the keys a round or a
-- refresh touched.  p_top_* are the touched genres' top tracks, the first
-- items of their daily_genre_track_topn summaries (kpi_day_topn.c).
-- p_dg_users and p_en_users carry the keys' distinct
-- users as the engine computed them from the merged sketches: exactly what
-- round(hll_cardinality()) gives (src/sketch_hll_format.c reproduces hll's
-- estimator), NULL where hll_cardinality() itself must estimate.  The
-- caller holds the KPI lock (see refresh_kpis).
--
-- hll lives wherever CREATE EXTENSION put it (CASCADE: schema streamkpi, but
-- it may have been installed before, elsewhere, even in a schema others can
-- create functions in).  Its calls are qualified with that schema, resolved
-- here once, so that search_path stays pg_catalog, pg_temp and no overload
-- planted in another schema can be picked.  (Views resolved it at creation.)
DO $hll$
DECLARE
	hll_schema text;
BEGIN
	SELECT n.nspname INTO STRICT hll_schema
	  FROM pg_catalog.pg_extension e
	  JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
	 WHERE e.extname = 'hll';
	EXECUTE pg_catalog.format($create$
CREATE FUNCTION streamkpi._kpi_derive_days(p_dg_day date[], p_dg_genre text[],
										   p_dg_users bigint[],
										   p_top_day date[], p_top_genre text[],
										   p_top_rank int[], p_top_track text[],
										   p_top_listens bigint[],
										   p_en_day date[], p_en_dim text[],
										   p_en_val text[], p_en_users bigint[])
	RETURNS void
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	td		date[] := ARRAY(SELECT DISTINCT unnest(p_dg_day));
BEGIN
	IF cardinality(p_dg_day) > 0 THEN
		-- listens and listening time of a genre are its plays in the
		-- ('genre', genre) engagement state.  A touched key keeps its row
		-- and has it updated: deleted and inserted each round, rows left
		-- index entries of dead versions that every later round's bitmap
		-- scans visited until a vacuum.  The state is looked up per key
		-- (LATERAL, OFFSET 0 keeps it a lookup): joined with the day's
		-- rows, a round's cost grew with every key the day had seen.
		INSERT INTO streamkpi.daily_genre_kpis AS k
			(day, genre, listen_count, unique_listeners, total_listen_ms,
			 avg_listen_ms_per_user, updated_at)
		SELECT t.day, t.genre, e.plays, u.n, e.listen_ms,
			   round(e.listen_ms::numeric / nullif(u.n, 0), 3), now()
		  FROM unnest(p_dg_day, p_dg_genre, p_dg_users) t(day, genre, n)
		 CROSS JOIN LATERAL
			   (SELECT coalesce(t.n, round(%1$I.hll_cardinality(g.users))::bigint) AS n
				  FROM streamkpi.daily_genre_users g
				 WHERE g.day = t.day AND g.genre = t.genre OFFSET 0) u
		 CROSS JOIN LATERAL
			   (SELECT s.plays, s.listen_ms
				  FROM streamkpi.daily_engagement_state s
				 WHERE s.day = t.day AND s.dimension = 'genre' AND s.value = t.genre
				OFFSET 0) e
		ON CONFLICT (day, genre) DO UPDATE
		   SET listen_count = excluded.listen_count,
			   unique_listeners = excluded.unique_listeners,
			   total_listen_ms = excluded.total_listen_ms,
			   avg_listen_ms_per_user = excluded.avg_listen_ms_per_user,
			   updated_at = excluded.updated_at;

		-- rankings likewise: ranks updated, ranks beyond the new length deleted
		INSERT INTO streamkpi.daily_genre_top_tracks AS k
			(day, genre, rank, track_id, track_name, listen_count)
		SELECT t.day, t.genre, t.rank, t.track_id, tr.track_name, t.listens
		  FROM unnest(p_top_day, p_top_genre, p_top_rank, p_top_track, p_top_listens)
			   t(day, genre, rank, track_id, listens)
		  LEFT JOIN streamkpi.tracks tr ON tr.track_id = t.track_id
		ON CONFLICT (day, genre, rank) DO UPDATE
		   SET track_id = excluded.track_id, track_name = excluded.track_name,
			   listen_count = excluded.listen_count;
		DELETE FROM streamkpi.daily_genre_top_tracks s
		 USING (SELECT x.id
				  FROM (SELECT g.day, g.genre, coalesce(max(t.rank), 0) AS n
						  FROM unnest(p_dg_day, p_dg_genre) g(day, genre)
						  LEFT JOIN unnest(p_top_day, p_top_genre, p_top_rank) t(day, genre, rank)
							ON t.day = g.day AND t.genre = g.genre
						 GROUP BY g.day, g.genre) k
				 CROSS JOIN LATERAL
					   (SELECT r.ctid AS id FROM streamkpi.daily_genre_top_tracks r
						 WHERE r.day = k.day AND r.genre = k.genre AND r.rank > k.n
						OFFSET 0) x) d
		 WHERE s.ctid = d.id;

		INSERT INTO streamkpi.daily_top_genres AS k (day, rank, genre, listen_count)
		SELECT day, rank, genre, listen_count
		  FROM (SELECT day, genre, listen_count,
					   row_number() OVER (PARTITION BY day
										  ORDER BY listen_count DESC, genre COLLATE "C") AS rank
				  FROM streamkpi.daily_genre_kpis
				 WHERE day = ANY (td)) r
		 WHERE rank <= 5
		ON CONFLICT (day, rank) DO UPDATE
		   SET genre = excluded.genre, listen_count = excluded.listen_count;
		DELETE FROM streamkpi.daily_top_genres s
		 WHERE s.day = ANY (td)
		   AND s.rank > (SELECT count(*) FROM streamkpi.daily_genre_kpis g
						  WHERE g.day = s.day);
	END IF;

	IF cardinality(p_en_day) > 0 THEN
		INSERT INTO streamkpi.daily_engagement AS k
			(day, dimension, value, streams, skips, likes, unique_users,
			 skip_rate, like_rate, completion_rate, avg_listen_ms)
		SELECT s.day, s.dimension, s.value, s.plays, s.skips, s.likes,
			   coalesce(t.n, round(%1$I.hll_cardinality(s.users))::bigint),
			   round(s.skips::numeric / nullif(s.plays + s.skips, 0), 6),
			   round(s.likes::numeric / nullif(s.plays, 0), 6),
			   round(s.completed_plays::numeric / nullif(s.plays, 0), 6),
			   round(s.listen_ms::numeric / nullif(s.plays, 0), 3)
		  FROM unnest(p_en_day, p_en_dim, p_en_val, p_en_users) t(day, dimension, value, n)
		 CROSS JOIN LATERAL
			   (SELECT * FROM streamkpi.daily_engagement_state s
				 WHERE s.day = t.day AND s.dimension = t.dimension AND s.value = t.value
				OFFSET 0) s
		ON CONFLICT (day, dimension, value) DO UPDATE
		   SET streams = excluded.streams, skips = excluded.skips,
			   likes = excluded.likes, unique_users = excluded.unique_users,
			   skip_rate = excluded.skip_rate, like_rate = excluded.like_rate,
			   completion_rate = excluded.completion_rate,
			   avg_listen_ms = excluded.avg_listen_ms;
	END IF;
END
$fn$
$create$, hll_schema);
END
$hll$;

---------------------------------------------------------------------------
-- refresh_kpis: recompute a day range from raw events.

-- Serialises everything that writes KPI state: refresh_kpis() and the KPI
-- worker take pg_advisory_xact_lock(streamkpi.kpi_lock_key()).
CREATE FUNCTION streamkpi.kpi_lock_key()
	RETURNS bigint
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	AS $$ SELECT 7366253427895104001::bigint $$;	-- arbitrary, fixed

-- A valid streamkpi.kpi_timezone, or a clear error.
CREATE FUNCTION streamkpi._kpi_check_timezone(p_tz text)
	RETURNS void
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	AS $fn$
BEGIN
	PERFORM now() AT TIME ZONE p_tz;
EXCEPTION WHEN invalid_parameter_value OR feature_not_supported THEN
	RAISE EXCEPTION 'invalid streamkpi.kpi_timezone "%"', p_tz
		USING ERRCODE = 'invalid_parameter_value',
			  HINT = 'Set it to a time zone name from pg_timezone_names.';
END
$fn$;

CREATE FUNCTION streamkpi._kpi_refresh_apply(p_from date, p_to date,
											 p_lo timestamptz, p_hi timestamptz,
											 p_snapshot pg_snapshot, p_horizon interval)
	RETURNS void
	AS 'MODULE_PATHNAME', 'streamkpi_kpi_refresh_apply'
	LANGUAGE C STRICT;

CREATE FUNCTION streamkpi.refresh_kpis(p_from date, p_to date)
	RETURNS void
	LANGUAGE plpgsql
	SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	SET work_mem = '64MB'
	SET jit = off
	AS $fn$
DECLARE
	tz		text := streamkpi.kpi_timezone();
	lo		timestamptz;
	hi		timestamptz;
	snap	pg_snapshot;
BEGIN
	IF p_from IS NULL OR p_to IS NULL THEN
		RAISE EXCEPTION 'refresh range bounds must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF p_to < p_from THEN
		RAISE EXCEPTION 'refresh range end % is before its start %', p_to, p_from
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM streamkpi._kpi_check_timezone(tz);

	PERFORM pg_advisory_xact_lock(streamkpi.kpi_lock_key());

	-- Local midnights as instants: 23- and 25-hour days come out right.
	lo := p_from::timestamp AT TIME ZONE tz;
	hi := (p_to + 1)::timestamp AT TIME ZONE tz;

	-- Count exactly the events committed in one snapshot, taken under the
	-- lock, and record it: the KPI worker skips these events for these days
	-- and windows (see 60_kpi_incremental.sql), so none is counted twice.
	-- Too late events are never counted (the worker moves them to dead
	-- letters); the engine applies the same late_horizon test.
	snap := streamkpi._kpi_refresh_begin(p_from, p_to, lo, hi);

	-- Empty the range: state and KPI rows of its days and of the windows
	-- starting in it.
	DELETE FROM streamkpi.daily_genre_track_counts WHERE day BETWEEN p_from AND p_to;
	DELETE FROM streamkpi.daily_genre_users WHERE day BETWEEN p_from AND p_to;
	DELETE FROM streamkpi.daily_engagement_state WHERE day BETWEEN p_from AND p_to;
	DELETE FROM streamkpi.window_state WHERE window_start >= lo AND window_start < hi;
	DELETE FROM streamkpi.daily_genre_kpis WHERE day BETWEEN p_from AND p_to;
	DELETE FROM streamkpi.daily_genre_top_tracks WHERE day BETWEEN p_from AND p_to;
	DELETE FROM streamkpi.daily_top_genres WHERE day BETWEEN p_from AND p_to;
	DELETE FROM streamkpi.daily_engagement WHERE day BETWEEN p_from AND p_to;
	DELETE FROM streamkpi.daily_genre_track_topn WHERE day BETWEEN p_from AND p_to;
	DELETE FROM streamkpi.trending WHERE window_start >= lo AND window_start < hi;

	-- The range's events through the engine: state, then KPI rows.
	PERFORM streamkpi._kpi_refresh_apply(p_from, p_to, lo, hi, snap,
										 streamkpi.late_horizon());
END
$fn$;

COMMENT ON FUNCTION streamkpi.refresh_kpis(date, date) IS
	'recompute every KPI table for local days p_from..p_to (and windows starting in them) from raw events';

REVOKE ALL ON FUNCTION streamkpi._kpi_derive_days(date[], text[], bigint[], date[], text[], int[], text[], bigint[], date[], text[], text[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi._kpi_check_timezone(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi._kpi_refresh_apply(date, date, timestamptz, timestamptz, pg_snapshot, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi._window_state_entries(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi.refresh_kpis(date, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION streamkpi.refresh_kpis(date, date) TO streamkpi_admin;

-- Superset's login reads KPIs and rollups, nothing else (docs/contract.md §6).
GRANT SELECT ON streamkpi.daily_genre_kpis, streamkpi.daily_genre_top_tracks,
	streamkpi.daily_top_genres, streamkpi.trending, streamkpi.track_windows,
	streamkpi.daily_engagement, streamkpi.weekly_genre_listeners,
	streamkpi.monthly_genre_listeners, streamkpi.weekly_genre_top_tracks,
	streamkpi.monthly_genre_top_tracks TO streamkpi_reader;
GRANT SELECT ON streamkpi.daily_genre_kpis, streamkpi.daily_genre_top_tracks,
	streamkpi.daily_top_genres, streamkpi.trending, streamkpi.track_windows,
	streamkpi.daily_engagement, streamkpi.weekly_genre_listeners,
	streamkpi.monthly_genre_listeners, streamkpi.weekly_genre_top_tracks,
	streamkpi.monthly_genre_top_tracks, streamkpi.trending_windows
	TO streamkpi_admin;
GRANT INSERT, UPDATE, DELETE ON streamkpi.trending_windows TO streamkpi_admin;

-- pg_dump keeps KPIs and their state.  trending_windows: only rows other than
-- the defaults this script inserts (a deleted default comes back on restore).
SELECT pg_catalog.pg_extension_config_dump('streamkpi.daily_genre_track_counts', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.daily_genre_track_topn', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.daily_genre_users', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.daily_engagement_state', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.window_state', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.daily_genre_kpis', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.daily_genre_top_tracks', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.daily_top_genres', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.trending', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.daily_engagement', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.trending_windows',
	$$WHERE window_size NOT IN (interval '1 minute', interval '5 minutes', interval '10 minutes')$$);
