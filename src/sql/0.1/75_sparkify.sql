-- streamkpi 0.1: Sparkify event logs (DESIGN §8): the star schema and the
-- churn signals.  The tables here; how they stay current in
-- 76_sparkify_apply.sql; the pipelines that feed them in
-- 77_sparkify_pipelines.sql.
--
-- Every table below except app_events and sparkify_songs is derived: an
-- AFTER ... FOR EACH STATEMENT trigger adds the effect of the rows a
-- statement wrote (its transition table), in the writer's transaction.  A
-- pipeline batch therefore updates them in the batch's own transaction:
-- exactly once, like the rows themselves, and without rescanning the log.
-- sparkify_songplays and sparkify_time are views over app_events: current
-- with every committed event by construction.

-- Sparkify's catalogue identifies a song by artist name and title (its log
-- has no song ids).  The same id names the song in streamkpi.tracks and
-- streamkpi.listens, whichever of the catalogue or the plays arrives first.
-- 'sparkify:' || md5(coalesce(artist, '') || E'\x1f' || coalesce(title, '')),
-- in C (src/sparkify_track_id.c): every play of a batch needs one.
CREATE FUNCTION streamkpi.sparkify_track_id(artist text, title text)
	RETURNS text
	LANGUAGE C IMMUTABLE PARALLEL SAFE
	AS 'MODULE_PATHNAME', 'streamkpi_sparkify_track_id';

COMMENT ON FUNCTION streamkpi.sparkify_track_id(text, text) IS
	'track_id of a Sparkify song in streamkpi.tracks and listens: a hash of artist name and title';

-- One row per log line, every page.  Values as Sparkify means them:
-- user_id NULL when logged out, length in ms, user_agent without the
-- literal quotes the app wraps it in.
CREATE TABLE streamkpi.app_events (
	event_id	bigserial PRIMARY KEY,
	event_time	timestamptz NOT NULL,
	user_id		text,
	session_id	bigint,
	item_in_session int,
	page		text NOT NULL,
	auth		text,
	level		text,
	method		text,
	status		int,
	location	text,
	user_agent	text,
	song		text,
	artist		text,
	length_ms	int,
	first_name	text,
	last_name	text,
	gender		text,
	registered_at timestamptz,
	ingested_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX app_events_event_time_brin ON streamkpi.app_events USING brin (event_time);
COMMENT ON TABLE streamkpi.app_events IS
	'Sparkify app events, one per log line; writing here keeps the sparkify_* and churn tables current';

-- The catalogue, one row per song, with the artist fields of its record.
CREATE TABLE streamkpi.sparkify_songs (
	song_id		text PRIMARY KEY,
	title		text,
	artist_id	text,
	year		int,			-- NULL where the catalogue says 0 (unknown)
	duration_ms	int,
	artist_name	text,
	artist_location text,
	artist_latitude float8,
	artist_longitude float8,
	track_id	text GENERATED ALWAYS AS
		(streamkpi.sparkify_track_id(artist_name, title)) STORED
);
CREATE INDEX sparkify_songs_track_id ON streamkpi.sparkify_songs (track_id);
COMMENT ON TABLE streamkpi.sparkify_songs IS 'Sparkify song catalogue (Million Song Dataset records)';

CREATE TABLE streamkpi.sparkify_artists (
	artist_id	text PRIMARY KEY,
	name		text,
	location	text,
	latitude	float8,
	longitude	float8
);
COMMENT ON TABLE streamkpi.sparkify_artists IS 'Sparkify artists, from the song catalogue';

CREATE TABLE streamkpi.sparkify_users (
	user_id		text PRIMARY KEY,
	first_name	text,
	last_name	text,
	gender		text,
	level		text,			-- of the user's latest event
	registered_at timestamptz,
	level_at	timestamptz NOT NULL,	-- time of that latest event
	level_item	int NOT NULL	-- its item_in_session (ties at one time)
) WITH (fillfactor = 50);
COMMENT ON TABLE streamkpi.sparkify_users IS 'Sparkify users, with the level of their latest event';

-- The play facts are views over app_events, not copies of its rows: a
-- batch then writes one row per play (the event, and the partial index
-- entry below) instead of three (event, songplay, time row).  Queries stay
-- fast at millions of events: by songplay_id through the primary key, by
-- start time through app_events_plays, the distinct start times of
-- sparkify_time from that index alone.
CREATE INDEX app_events_plays ON streamkpi.app_events (event_time)
	WHERE page = 'NextSong';

-- The song each play length matches, per title and artist: a catalogue
-- song matches plays within 10 ms of its duration, so each song stands
-- here under the 21 lengths it matches, and where songs of one title and
-- artist overlap the closest, then the lowest song_id, has the length.  A
-- play then finds its song by equality (title, artist, length_ms): an index
-- probe or a hash join, and no join at all when a query does not ask for
-- the song.  Kept by the sparkify_songs triggers (76_sparkify_apply.sql).
CREATE TABLE streamkpi.sparkify_song_lengths (
	title		text NOT NULL,
	artist_name	text NOT NULL,
	length_ms	int NOT NULL,
	song_id		text NOT NULL,
	artist_id	text,
	PRIMARY KEY (title, artist_name, length_ms)
);

-- One row per NextSong event; songplay_id is its app_events.event_id.  The
-- song matches on title, artist name and duration within 10 ms (the
-- closest, then the lowest song_id) when the row is read, so a song that
-- arrives after its plays matches them at once.
CREATE VIEW streamkpi.sparkify_songplays AS
SELECT e.event_id AS songplay_id,
	   e.event_time AS start_time,
	   e.user_id,
	   e.level,
	   m.song_id,
	   m.artist_id,
	   e.session_id,
	   e.item_in_session,
	   e.location,
	   e.user_agent,
	   -- the streamkpi.tracks / listens id of the song played
	   CASE WHEN e.song IS NOT NULL
			THEN streamkpi.sparkify_track_id(e.artist, e.song) END AS track_id,
	   e.length_ms
  FROM streamkpi.app_events e
  LEFT JOIN streamkpi.sparkify_song_lengths m
	ON m.title = e.song AND m.artist_name = e.artist AND m.length_ms = e.length_ms
 WHERE e.page = 'NextSong';
COMMENT ON VIEW streamkpi.sparkify_songplays IS
	'Sparkify song plays (NextSong events), matched to the catalogue on title, artist and duration within 10 ms';

-- Distinct play start times broken into calendar fields, in
-- streamkpi.kpi_timezone (of the reading session), as the KPI days are.
CREATE VIEW streamkpi.sparkify_time AS
SELECT d.start_time,
	   date_part('hour', x.l)::int AS hour,
	   date_part('day', x.l)::int AS day,		-- of the month
	   date_part('week', x.l)::int AS week,		-- ISO week
	   date_part('month', x.l)::int AS month,
	   date_part('year', x.l)::int AS year,
	   date_part('isodow', x.l)::int AS weekday	-- ISO: 1 Monday .. 7 Sunday
  FROM (SELECT DISTINCT e.event_time FROM streamkpi.app_events e
		 WHERE e.page = 'NextSong') d(start_time),
	   LATERAL (SELECT d.start_time AT TIME ZONE streamkpi.kpi_timezone()) x(l);
COMMENT ON VIEW streamkpi.sparkify_time IS 'distinct song play start times, broken into calendar fields';

-- Per user, the churn model's features.  Counts are of pages: thumbs_up
-- 'Thumbs Up', add_to_playlist 'Add to Playlist', roll_advert 'Roll
-- Advert', upgrades 'Submit Upgrade', downgrades 'Submit Downgrade', errors
-- 'Error', help_visits 'Help'; churned_at is the first 'Cancellation
-- Confirmation'.
CREATE TABLE streamkpi.user_churn_signals (
	user_id		text PRIMARY KEY,
	level		text,
	registered_at timestamptz,
	first_event_at timestamptz NOT NULL,
	last_event_at timestamptz NOT NULL,
	last_item	int NOT NULL,	-- item_in_session of the latest event
	days_registered int GENERATED ALWAYS AS
		(pg_catalog.floor(EXTRACT(epoch FROM last_event_at - registered_at) / 86400)::int) STORED,
	sessions	bigint NOT NULL DEFAULT 0,
	songs_played bigint NOT NULL DEFAULT 0,
	songs_per_session numeric GENERATED ALWAYS AS
		(CASE WHEN sessions > 0 THEN pg_catalog.round(songs_played::numeric / sessions, 3) END) STORED,
	thumbs_up	bigint NOT NULL DEFAULT 0,
	thumbs_down	bigint NOT NULL DEFAULT 0,
	add_to_playlist bigint NOT NULL DEFAULT 0,
	add_friend	bigint NOT NULL DEFAULT 0,
	roll_advert	bigint NOT NULL DEFAULT 0,
	upgrades	bigint NOT NULL DEFAULT 0,
	downgrades	bigint NOT NULL DEFAULT 0,
	errors		bigint NOT NULL DEFAULT 0,
	help_visits	bigint NOT NULL DEFAULT 0,
	downgraded	boolean GENERATED ALWAYS AS (downgrades > 0) STORED,
	churned		boolean GENERATED ALWAYS AS (churned_at IS NOT NULL) STORED,
	churned_at	timestamptz,
	churned_on	date			-- day of churned_at in streamkpi.kpi_timezone
) WITH (fillfactor = 50);
COMMENT ON TABLE streamkpi.user_churn_signals IS
	'per Sparkify user: activity, engagement, level changes and cancellation, kept current as events arrive';

-- Per day in streamkpi.kpi_timezone.  active_users have an event that day;
-- paid_users and free_users an event at that level (a user who changes
-- level that day counts in both); new_users are active users registered
-- that day; upgrades, downgrades and cancellations count 'Submit Upgrade',
-- 'Submit Downgrade' and 'Cancellation Confirmation'.
CREATE TABLE streamkpi.daily_churn (
	day			date PRIMARY KEY,
	active_users bigint NOT NULL DEFAULT 0,
	paid_users	bigint NOT NULL DEFAULT 0,
	free_users	bigint NOT NULL DEFAULT 0,
	new_users	bigint NOT NULL DEFAULT 0,
	upgrades	bigint NOT NULL DEFAULT 0,
	downgrades	bigint NOT NULL DEFAULT 0,
	cancellations bigint NOT NULL DEFAULT 0,
	churn_rate	numeric GENERATED ALWAYS AS
		(CASE WHEN active_users > 0 THEN pg_catalog.round(cancellations::numeric / active_users, 6) END) STORED
);
COMMENT ON TABLE streamkpi.daily_churn IS
	'per day: active, paid, free and new Sparkify users, level changes, cancellations and churn rate';

-- ---- state behind the counts: distinct things seen so far ----

-- Sessions per user (user_churn_signals.sessions) and the song each
-- session played last, which a later 'Thumbs Up' likes.
CREATE TABLE streamkpi.sparkify_session_state (
	user_id		text NOT NULL,
	session_id	bigint NOT NULL,
	last_song_item int,
	last_track_id text,
	PRIMARY KEY (user_id, session_id)
) WITH (fillfactor = 50);

-- Users active per day, and per day and level ('' stands for any level):
-- a row inserted is a user counted for the first time in daily_churn.
CREATE TABLE streamkpi.sparkify_user_day_state (
	day			date NOT NULL,
	user_id		text NOT NULL,
	level		text NOT NULL,
	PRIMARY KEY (day, user_id, level)
);

-- Pipelines run as their owner, a streamkpi_admin member; the triggers run
-- as the role that writes, so it needs these rights.
GRANT SELECT, INSERT, UPDATE, DELETE ON streamkpi.app_events,
	streamkpi.sparkify_songs, streamkpi.sparkify_artists,
	streamkpi.sparkify_users, streamkpi.user_churn_signals,
	streamkpi.daily_churn, streamkpi.sparkify_session_state,
	streamkpi.sparkify_user_day_state, streamkpi.sparkify_song_lengths TO streamkpi_admin;
GRANT SELECT ON streamkpi.sparkify_songplays, streamkpi.sparkify_time TO streamkpi_admin;
GRANT USAGE ON SEQUENCE streamkpi.app_events_event_id_seq TO streamkpi_admin;

-- Dashboards read the star schema and the churn tables, never names.
GRANT SELECT ON streamkpi.sparkify_songs, streamkpi.sparkify_artists,
	streamkpi.sparkify_songplays, streamkpi.sparkify_time,
	streamkpi.user_churn_signals, streamkpi.daily_churn TO streamkpi_reader;
GRANT SELECT (user_id, gender, level, registered_at, level_at)
	ON streamkpi.sparkify_users TO streamkpi_reader;

SELECT pg_catalog.pg_extension_config_dump('streamkpi.app_events', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.app_events_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.sparkify_songs', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.sparkify_artists', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.sparkify_song_lengths', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.sparkify_users', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.user_churn_signals', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.daily_churn', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.sparkify_session_state', '');
SELECT pg_catalog.pg_extension_config_dump('streamkpi.sparkify_user_day_state', '');
