-- streamkpi 0.1: how the Sparkify tables stay current (DESIGN §8).
--
-- Statement triggers do all the work, each on the rows one statement wrote
-- (a pipeline batch, a COPY, an INSERT):
--   app_events     -> sparkify_users, user_churn_signals, daily_churn,
--                     streamkpi.users, and the plays and likes in
--                     streamkpi.listens (with their tracks)
--   sparkify_songs -> sparkify_artists, streamkpi.tracks
-- (sparkify_songplays and sparkify_time are views over app_events: see
-- 75_sparkify.sql.)
-- The app_events trigger reads the batch once, in C, and writes each
-- derived table in one set-based statement.
-- Counts only ever add the statement's own contribution: distinct things
-- (sessions, active users of a day) are counted when their state row is
-- inserted, and "latest" values replace older ones only when newer.  So
-- the result does not depend on how events are cut into batches.
--
-- Writers take turns: each trigger first takes one advisory lock, held to
-- the end of the transaction.  Concurrent writers (parallel pipeline
-- workers, a COPY beside them, the songs pipeline) share days, users and
-- tracks, and a pipeline may run its statement more than once in one
-- transaction (it splits a batch around a bad message), so no key order can
-- rule out deadlocks; the lock does.  Their inserts into app_events still
-- run side by side.  In READ COMMITTED each statement after the lock sees
-- what the previous holder committed: plays see songs committed before, and
-- songs see plays committed before.

-- The writers' lock: advisory keys ("spky", 1).
CREATE FUNCTION streamkpi._sparkify_lock()
	RETURNS void
	LANGUAGE sql
	AS $$ SELECT pg_catalog.pg_advisory_xact_lock(1936747385, 1) $$;

CREATE FUNCTION streamkpi._sparkify_check_session()
	RETURNS text
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	tz		text := streamkpi.kpi_timezone();
BEGIN
	-- Not a data error (SQLSTATE class 22): a pipeline must retry the batch
	-- once the setting is fixed, not dead-letter every event in it.
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'Sparkify tables are maintained only in READ COMMITTED transactions'
			USING ERRCODE = 'active_sql_transaction',
				  DETAIL = format('This transaction is %s; matching plays and songs needs a new snapshot per statement.',
								  upper(current_setting('transaction_isolation')));
	END IF;
	BEGIN
		PERFORM now() AT TIME ZONE tz;
	EXCEPTION WHEN invalid_parameter_value OR feature_not_supported THEN
		RAISE EXCEPTION 'invalid streamkpi.kpi_timezone "%"', tz
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Set it to a time zone name from pg_timezone_names.';
	END;
	RETURN tz;
END
$fn$;

-- Everything an app_events statement derives, in C (src/sparkify_apply.c):
-- the statement's rows are read once from its transition table and grouped
-- in one pass (per user, session, day and level), each play's track id
-- hashed once; the groups go to the tables as arrays, in five set-based
-- statements (new tracks, listens, sessions and churn signals, users and
-- the KPI user dimension, users first seen per day and daily_churn), each
-- seeing what the ones before it wrote.  Likes with no play before them in
-- the statement look at the sessions' last songs before this statement's
-- songs replace them.  No JIT: compiling the statements costs more than
-- running them on a batch.
CREATE FUNCTION streamkpi._sparkify_apply_events()
	RETURNS trigger
	LANGUAGE C
	SET search_path = pg_catalog, pg_temp
	SET jit = off
	AS 'MODULE_PATHNAME', 'streamkpi_sparkify_apply_events';

CREATE TRIGGER app_events_derive AFTER INSERT ON streamkpi.app_events
	REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION streamkpi._sparkify_apply_events();

-- The catalogue: artists, tracks (genre stays as it is: unknown until
-- someone knows it), and the lengths each song matches
-- (sparkify_song_lengths), recomputed for every title and artist the
-- statement touched: plays that waited for a song match it from then on.
CREATE FUNCTION streamkpi._sparkify_apply_songs()
	RETURNS trigger
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	titles	text[];
	artists	text[];
BEGIN
	PERFORM streamkpi._sparkify_check_session();
	PERFORM streamkpi._sparkify_lock();

	IF TG_OP = 'DELETE' THEN
		SELECT array_agg(k.title), array_agg(k.artist_name) INTO titles, artists
		  FROM (SELECT DISTINCT s.title, s.artist_name FROM old_songs s) k;
	ELSE
		INSERT INTO streamkpi.sparkify_artists AS a (artist_id, name, location, latitude, longitude)
		SELECT DISTINCT ON (s.artist_id) s.artist_id, s.artist_name, s.artist_location,
			   s.artist_latitude, s.artist_longitude
		  FROM new_songs s
		 WHERE s.artist_id IS NOT NULL
		 ORDER BY s.artist_id, s.song_id
		ON CONFLICT (artist_id) DO UPDATE SET
			name = excluded.name, location = excluded.location,
			latitude = excluded.latitude, longitude = excluded.longitude
		 WHERE (a.name, a.location, a.latitude, a.longitude)
			   IS DISTINCT FROM (excluded.name, excluded.location, excluded.latitude, excluded.longitude);

		INSERT INTO streamkpi.tracks AS t (track_id, track_name, artists, duration_ms)
		SELECT DISTINCT ON (s.track_id) s.track_id, s.title, s.artist_name, s.duration_ms
		  FROM new_songs s
		 ORDER BY s.track_id, s.song_id
		ON CONFLICT (track_id) DO UPDATE SET
			track_name = excluded.track_name, artists = excluded.artists,
			duration_ms = excluded.duration_ms
		 WHERE (t.track_name, t.artists, t.duration_ms)
			   IS DISTINCT FROM (excluded.track_name, excluded.artists, excluded.duration_ms);

		IF TG_OP = 'UPDATE' THEN
			SELECT array_agg(k.title), array_agg(k.artist_name) INTO titles, artists
			  FROM (SELECT s.title, s.artist_name FROM new_songs s
					UNION
					SELECT s.title, s.artist_name FROM old_songs s) k;
		ELSE
			SELECT array_agg(k.title), array_agg(k.artist_name) INTO titles, artists
			  FROM (SELECT DISTINCT s.title, s.artist_name FROM new_songs s) k;
		END IF;
	END IF;

	-- two statements: the new rows take the keys the old ones leave
	DELETE FROM streamkpi.sparkify_song_lengths m
	 USING unnest(titles, artists) k(title, artist_name)
	 WHERE m.title = k.title AND m.artist_name = k.artist_name;
	INSERT INTO streamkpi.sparkify_song_lengths (title, artist_name, length_ms, song_id, artist_id)
	SELECT DISTINCT ON (s.title, s.artist_name, l.ms) s.title, s.artist_name, l.ms, s.song_id,
		   s.artist_id
	  FROM unnest(titles, artists) k(title, artist_name)
	  JOIN streamkpi.sparkify_songs s ON s.title = k.title AND s.artist_name = k.artist_name,
		   generate_series(s.duration_ms - 10, s.duration_ms + 10) l(ms)
	 ORDER BY s.title, s.artist_name, l.ms, abs(s.duration_ms - l.ms), s.song_id;
	RETURN NULL;
END
$fn$;

CREATE TRIGGER sparkify_songs_inserted AFTER INSERT ON streamkpi.sparkify_songs
	REFERENCING NEW TABLE AS new_songs
	FOR EACH STATEMENT EXECUTE FUNCTION streamkpi._sparkify_apply_songs();
CREATE TRIGGER sparkify_songs_updated AFTER UPDATE ON streamkpi.sparkify_songs
	REFERENCING OLD TABLE AS old_songs NEW TABLE AS new_songs
	FOR EACH STATEMENT EXECUTE FUNCTION streamkpi._sparkify_apply_songs();
CREATE TRIGGER sparkify_songs_deleted AFTER DELETE ON streamkpi.sparkify_songs
	REFERENCING OLD TABLE AS old_songs
	FOR EACH STATEMENT EXECUTE FUNCTION streamkpi._sparkify_apply_songs();

REVOKE ALL ON FUNCTION streamkpi._sparkify_check_session() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION streamkpi._sparkify_check_session() TO streamkpi_admin;
