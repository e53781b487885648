-- Sparkify (DESIGN §8): create_sparkify_pipelines' argument checks, rights
-- and idempotence, and the tables its triggers keep, fed by plain INSERTs.
-- No broker is needed: creating pipelines only plans their statements.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
RESET client_min_messages;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';

-- errors as SQLSTATE and message, without line numbers
CREATE FUNCTION pg_temp.fails(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE stmt;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN sqlstate || ': ' || sqlerrm;
END $$;

CREATE SERVER spk_kafka FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (brokers '127.0.0.1:9');
CREATE FOREIGN DATA WRAPPER spk_other_fdw;
CREATE SERVER spk_other FOREIGN DATA WRAPPER spk_other_fdw;
CREATE ROLE spk_admin LOGIN IN ROLE streamkpi_admin;
CREATE ROLE spk_nobody LOGIN IN ROLE streamkpi_reader;

-- arguments
SELECT pg_temp.fails($$SELECT streamkpi.create_sparkify_pipelines(NULL)$$);
SELECT pg_temp.fails($$SELECT streamkpi.create_sparkify_pipelines('spk_kafka', events_topic => NULL)$$);
SELECT pg_temp.fails($$SELECT streamkpi.create_sparkify_pipelines('spk_kafka', start => NULL)$$);
SELECT pg_temp.fails($$SELECT streamkpi.create_sparkify_pipelines('spk_kafka', songs_topic => '')$$);
SELECT pg_temp.fails($$SELECT streamkpi.create_sparkify_pipelines('spk_kafka', 't', 't')$$);
SELECT pg_temp.fails($$SELECT streamkpi.create_sparkify_pipelines('no_such_server')$$);
SELECT pg_temp.fails($$SELECT streamkpi.create_sparkify_pipelines('spk_other')$$);

-- rights: only streamkpi_admin members, and only on servers they may use
SET ROLE spk_nobody;
SELECT pg_temp.fails($$SELECT streamkpi.create_sparkify_pipelines('spk_kafka')$$);
SELECT pg_temp.fails($$SELECT streamkpi._sparkify_foreign_table('sparkify_events', 'spk_kafka', 't')$$);
SET ROLE spk_admin;
SELECT pg_temp.fails($$SELECT streamkpi.create_sparkify_pipelines('spk_kafka')$$);
RESET ROLE;
GRANT USAGE ON FOREIGN SERVER spk_kafka TO spk_admin;
SET ROLE spk_admin;
-- the definer-rights helper takes no SQL from the caller, only feed names
SELECT pg_temp.fails($$WITH n AS MATERIALIZED (SELECT streamkpi._note_caller()) SELECT streamkpi._sparkify_foreign_table('x int) SERVER spk_kafka; --', 'spk_kafka', 't') FROM n$$);

-- created by the caller, stopped when asked
SELECT streamkpi.create_sparkify_pipelines('spk_kafka', events_topic => 'ev', songs_topic => 'so',
										   start => false);
RESET ROLE;
SELECT name, owner, enabled, source, search_path FROM streamkpi.pipelines ORDER BY name;
SELECT c.relname, s.srvname, ft.ftoptions, pg_get_userbyid(c.relowner) AS owner,
	   has_table_privilege('spk_admin', c.oid, 'SELECT, INSERT') AS caller_may_read_and_produce
  FROM pg_foreign_table ft JOIN pg_class c ON c.oid = ft.ftrelid
  JOIN pg_foreign_server s ON s.oid = ft.ftserver
 WHERE c.relnamespace = 'streamkpi'::regnamespace ORDER BY 1;

-- a second call changes nothing; another topic or pipeline definition is an error
CREATE TEMP TABLE before AS SELECT name, statement, updated_at FROM streamkpi.pipelines;
SET ROLE spk_admin;
SELECT streamkpi.create_sparkify_pipelines('spk_kafka', events_topic => 'ev', songs_topic => 'so',
										   start => false);
SELECT pg_temp.fails($$SELECT streamkpi.create_sparkify_pipelines('spk_kafka', 'ev2', 'so', false)$$);
SELECT pg_temp.fails($$SELECT streamkpi.create_sparkify_pipelines('spk_kafka', 'ev', 'so2', false)$$);
RESET ROLE;
SELECT count(*) AS pipelines_unchanged FROM before b JOIN streamkpi.pipelines p USING (name, statement, updated_at);
SELECT streamkpi.drop_pipeline('sparkify_songs');
SELECT streamkpi.create_pipeline('sparkify_songs',
	$$INSERT INTO streamkpi.sparkify_songs (song_id) SELECT song_id FROM streamkpi.kafka_sparkify_songs$$);
SELECT pg_temp.fails($$SELECT streamkpi.create_sparkify_pipelines('spk_kafka', 'ev', 'so', false)$$);
SELECT streamkpi.drop_pipeline('sparkify_songs');
SELECT streamkpi.drop_pipeline('sparkify_events');
-- without the pipelines, a call recreates them over the same tables
SET ROLE spk_admin;
SELECT streamkpi.create_sparkify_pipelines('spk_kafka', 'ev', 'so', false);
RESET ROLE;
SELECT name, owner, enabled FROM streamkpi.pipelines ORDER BY name;
SELECT streamkpi.drop_pipeline('sparkify_songs');
SELECT streamkpi.drop_pipeline('sparkify_events');

-- ---- the tables, fed by INSERT (a pipeline batch is one such statement) ----
-- Days in a zone far from UTC (+13:00): the UTC evening of 2018-11-05 is
-- the 6th in Auckland, and the cancellation at 11:30 UTC on the 6th is
-- on the 7th there.
SET streamkpi.kpi_timezone = 'Pacific/Auckland';
INSERT INTO streamkpi.sparkify_songs (song_id, title, artist_id, year, duration_ms, artist_name,
									  artist_location)
VALUES ('S1', 'Song One', 'A1', NULL, 200000, 'Artist One', 'Here'),
	   ('S2', 'Song Two', 'A1', 1999, 180000, 'Artist One', 'Here');
INSERT INTO streamkpi.app_events (event_time, user_id, session_id, item_in_session, page,
								  level, song, artist, length_ms, first_name, registered_at)
VALUES ('2018-11-05 23:00+00', '7', 1, 0, 'Home', 'free', NULL, NULL, NULL, 'Ann', '2018-11-05 22:00+00'),
	   ('2018-11-05 23:01+00', '7', 1, 1, 'NextSong', 'free', 'Song One', 'Artist One', 200005, 'Ann', '2018-11-05 22:00+00'),
	   ('2018-11-05 23:05+00', '7', 1, 2, 'NextSong', 'free', 'Song Two', 'Artist One', 180020, 'Ann', '2018-11-05 22:00+00'),
	   ('2018-11-05 23:06+00', NULL, 9, 0, 'Home', 'free', NULL, NULL, NULL, NULL, NULL);
-- the next statement likes the session's last song (from the one before)
INSERT INTO streamkpi.app_events (event_time, user_id, session_id, item_in_session, page,
								  level, song, artist, length_ms, first_name, registered_at)
VALUES ('2018-11-05 23:09+00', '7', 1, 3, 'Thumbs Up', 'free', NULL, NULL, NULL, 'Ann', '2018-11-05 22:00+00'),
	   ('2018-11-05 23:10+00', '7', 1, 4, 'Submit Upgrade', 'free', NULL, NULL, NULL, 'Ann', '2018-11-05 22:00+00'),
	   ('2018-11-05 23:31+00', '7', 1, 5, 'NextSong', 'paid', 'Song One', 'Artist One', 199995, 'Ann', '2018-11-05 22:00+00'),
	   ('2018-11-05 23:32+00', '7', 1, 6, 'Thumbs Up', 'paid', NULL, NULL, NULL, 'Ann', '2018-11-05 22:00+00'),
	   ('2018-11-06 11:30+00', '7', 2, 0, 'Cancellation Confirmation', 'paid', NULL, NULL, NULL, 'Ann', '2018-11-05 22:00+00');
-- a later statement with an older event does not change the latest level
INSERT INTO streamkpi.app_events (event_time, user_id, session_id, item_in_session, page, level)
VALUES ('2018-11-05 22:30+00', '7', 0, 0, 'Thumbs Down', 'free');

SELECT songplay_id, start_time, user_id, level, song_id, artist_id, item_in_session
  FROM streamkpi.sparkify_songplays ORDER BY songplay_id;
SELECT * FROM streamkpi.sparkify_time ORDER BY start_time;
SELECT l.listened_at, l.user_id, t.track_name, l.action, l.ms_played
  FROM streamkpi.listens l JOIN streamkpi.tracks t USING (track_id)
 WHERE l.event_id LIKE 'sparkify:%' ORDER BY listened_at;
SELECT user_id, first_name, level, level_at FROM streamkpi.sparkify_users;
SELECT user_id, level, days_registered, sessions, songs_played, songs_per_session, thumbs_up,
	   thumbs_down, upgrades, downgraded, churned, churned_at, churned_on
  FROM streamkpi.user_churn_signals;
SELECT * FROM streamkpi.daily_churn ORDER BY day;
SELECT * FROM streamkpi.sparkify_artists;

-- a play before its song: matched when the song arrives, within 10 ms only
INSERT INTO streamkpi.app_events (event_time, user_id, session_id, item_in_session, page, level,
								  song, artist, length_ms)
VALUES ('2018-11-07 10:00+00', '8', 3, 0, 'NextSong', 'paid', 'Late Song', 'Artist Two', 150010),
	   ('2018-11-07 10:03+00', '8', 3, 1, 'NextSong', 'paid', 'Late Song', 'Artist Two', 150011);
INSERT INTO streamkpi.sparkify_songs (song_id, title, artist_id, duration_ms, artist_name)
VALUES ('S3', 'Late Song', 'A2', 150000, 'Artist Two');
SELECT start_time, song_id, artist_id FROM streamkpi.sparkify_songplays
 WHERE user_id = '8' ORDER BY start_time;
SELECT track_id = streamkpi.sparkify_track_id('Artist Two', 'Late Song') AS same_track_id,
	   track_name, artists, duration_ms, genre
  FROM streamkpi.tracks WHERE track_name = 'Late Song';

-- settings a batch cannot work under are not data errors (no dead letters)
SET streamkpi.kpi_timezone = 'Mars/Olympus_Mons';
SELECT pg_temp.fails($$INSERT INTO streamkpi.app_events (event_time, page) VALUES (now(), 'Home')$$);
RESET streamkpi.kpi_timezone;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.fails($$INSERT INTO streamkpi.app_events (event_time, page) VALUES (now(), 'Home')$$);
ROLLBACK;

-- the dashboards' role reads the star schema and churn tables, not names
SET ROLE streamkpi_reader;
SELECT count(*) FROM streamkpi.user_churn_signals;
SELECT user_id, level FROM streamkpi.sparkify_users ORDER BY 1;
SELECT pg_temp.fails($$SELECT first_name FROM streamkpi.sparkify_users$$);
SELECT pg_temp.fails($$SELECT count(*) FROM streamkpi.app_events$$);
RESET ROLE;

-- ---- the synthetic stream ----
-- deterministic by seed; event-time order; at most n events
SELECT (SELECT md5(string_agg(e::text, E'\n'))
		  FROM streamkpi.synthetic_sparkify_events(3000, '2026-03-01 00:00+00', seed => 3) e)
	 = (SELECT md5(string_agg(e::text, E'\n'))
		  FROM streamkpi.synthetic_sparkify_events(3000, '2026-03-01 00:00+00', seed => 3) e)
	AS same_seed_same_events,
	   (SELECT md5(string_agg(e::text, E'\n'))
		  FROM streamkpi.synthetic_sparkify_events(3000, '2026-03-01 00:00+00', seed => 3) e)
	<> (SELECT md5(string_agg(e::text, E'\n'))
		  FROM streamkpi.synthetic_sparkify_events(3000, '2026-03-01 00:00+00', seed => 4) e)
	AS other_seed_other_events;
CREATE TEMP TABLE syn AS
SELECT row_number() OVER () AS n, * FROM streamkpi.synthetic_sparkify_events(20000,
	'2026-03-01 00:00+00', seed => 7, duration => '2 days', users => 300, cancel_share => 0.2);
SELECT count(*) <= 20000 AS at_most_n, count(*) > 15000 AS about_n,
	   bool_and(ts >= '2026-03-01 00:00+00' AND ts < '2026-03-03 00:00+00') AS in_window,
	   count(*) = count(*) FILTER (WHERE ts >= prev) AS in_time_order,
	   count(DISTINCT user_id) FILTER (WHERE user_id <> '') BETWEEN 200 AND 300 AS users,
	   bool_and((user_id = '') = (auth = 'Logged Out')) AS logged_out_without_user,
	   bool_and((page = 'NextSong') = (song IS NOT NULL AND length > 0)) AS songs_on_plays,
	   bool_and(user_agent LIKE '"%"' OR user_id = '') AS agents_quoted
  FROM (SELECT *, lag(ts, 1, ts) OVER (ORDER BY n) AS prev FROM syn) s;
SELECT page FROM syn GROUP BY page ORDER BY count(*) DESC, page LIMIT 3;
-- every cancelling user cancels once, at its last event
SELECT count(*) > 10 AS cancellations,
	   bool_and(next_page = 'Cancellation Confirmation' AND after IS NULL) AS cancel_then_gone
  FROM (SELECT page, lead(page) OVER w AS next_page, lead(page, 2) OVER w AS after
		  FROM syn WHERE user_id <> '' WINDOW w AS (PARTITION BY user_id ORDER BY n)) s
 WHERE page = 'Cancel';
-- the plays of song k carry the catalogue's title, artist and duration of song k
SELECT count(*) = count(s.song_id) AS every_play_of_a_catalogue_song_is_in_it
  FROM syn e
  LEFT JOIN streamkpi.synthetic_sparkify_songs(5000) s
	ON s.title = e.song AND s.artist_name = e.artist AND s.duration = e.length
 WHERE e.page = 'NextSong';
SELECT convert_from(payload, 'UTF8')::jsonb ? 'userAgent' AS json, key
  FROM streamkpi.synthetic_sparkify_lines(2, '2026-03-01 00:00+00', seed => 7);
SELECT pg_temp.fails($$SELECT count(*) FROM streamkpi.synthetic_sparkify_events(10, now(), users => 0)$$);
SELECT pg_temp.fails($$SELECT count(*) FROM streamkpi.synthetic_sparkify_events(10, now(), cancel_share => 1.5)$$);
SELECT pg_temp.fails($$SELECT count(*) FROM streamkpi.synthetic_sparkify_events(10, now(), duration => '1 month')$$);
SELECT pg_temp.fails($$SELECT count(*) FROM streamkpi.synthetic_sparkify_lines(10, now(), malformed_share => -1)$$);
SELECT pg_temp.fails($$SELECT count(*) FROM streamkpi.synthetic_sparkify_songs(-1)$$);

-- leave nothing for later tests
TRUNCATE streamkpi.app_events, streamkpi.sparkify_songs, streamkpi.sparkify_artists,
	streamkpi.sparkify_users, streamkpi.user_churn_signals, streamkpi.daily_churn, streamkpi.sparkify_session_state,
	streamkpi.sparkify_user_day_state;
DELETE FROM streamkpi.listens WHERE event_id LIKE 'sparkify:%';
DELETE FROM streamkpi.tracks WHERE track_id LIKE 'sparkify:%';
DELETE FROM streamkpi.users WHERE user_id IN ('7', '8');
DROP FOREIGN TABLE streamkpi.kafka_sparkify_events, streamkpi.kafka_sparkify_songs;
DROP SERVER spk_kafka;
DROP SERVER spk_other;
DROP FOREIGN DATA WRAPPER spk_other_fdw;
DROP OWNED BY spk_admin, spk_nobody;
DROP ROLE spk_admin, spk_nobody;
