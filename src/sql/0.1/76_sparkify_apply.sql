-- streamkpi 0.1: how the Sparkify tables stay current (DESIGN §8).
--
-- Statement triggers do all the work, each on the rows one statement wrote
-- (a pipeline batch, a COPY, an INSERT):
--   app_events     -> sparkify_songplays, sparkify_time, sparkify_users,
--                     user_churn_signals, daily_churn, and the plays and
--                     likes in streamkpi.listens (with their tracks)
--   sparkify_songs -> sparkify_artists, streamkpi.tracks, and the plays
--                     that were waiting for the song
-- Counts only ever add the statement's own contribution: distinct things
-- (sessions, active users of a day) are counted when their state row is
-- inserted, and "latest" values replace older ones only when newer.  So
-- the result does not depend on how events are cut into batches.
--
-- Writers take turns: each trigger first takes one advisory lock, held to
-- the end of the transaction.  Concurrent writers (parallel pipeline
-- workers, a COPY beside them, the songs pipeline) share days, tracks and
-- play times, and a pipeline may run its statement more than once in one
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

-- Plays: songplays matched to the catalogue, their time rows, tracks for
-- songs the catalogue lacks, and listens (plays and likes).
CREATE FUNCTION streamkpi._sparkify_apply_plays()
	RETURNS trigger
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	tz		text := streamkpi._sparkify_check_session();
	lo		timestamptz;
	hi		timestamptz;
BEGIN
	PERFORM streamkpi._sparkify_lock();

	-- Tracks of songs not seen before: name, artist and the first play's
	-- length (the catalogue's song, when it comes, replaces them).
	INSERT INTO streamkpi.tracks (track_id, track_name, artists, duration_ms)
	SELECT p.track_id, min(p.song), min(p.artist), min(p.length_ms)
	  FROM (SELECT streamkpi.sparkify_track_id(e.artist, e.song) AS track_id,
				   e.song, e.artist, e.length_ms
			  FROM new_events e
			 WHERE e.page = 'NextSong' AND e.song IS NOT NULL) p
	 WHERE NOT EXISTS (SELECT FROM streamkpi.tracks t WHERE t.track_id = p.track_id)
	 GROUP BY p.track_id
	ON CONFLICT (track_id) DO NOTHING;

	-- A play matches the closest catalogue song within 10 ms, then the
	-- lowest song_id; only the plays with a match are sorted for that.
	INSERT INTO streamkpi.sparkify_songplays
		(songplay_id, start_time, user_id, level, song_id, artist_id,
		 session_id, item_in_session, location, user_agent, track_id, length_ms)
	SELECT e.event_id, e.event_time, e.user_id, e.level, b.song_id, b.artist_id,
		   e.session_id, e.item_in_session, e.location, e.user_agent,
		   CASE WHEN e.song IS NOT NULL THEN streamkpi.sparkify_track_id(e.artist, e.song) END,
		   e.length_ms
	  FROM new_events e
	  LEFT JOIN (SELECT DISTINCT ON (e.event_id) e.event_id, s.song_id, s.artist_id
				   FROM new_events e
				   JOIN streamkpi.sparkify_songs s
					 ON s.track_id = streamkpi.sparkify_track_id(e.artist, e.song)
					AND s.title = e.song AND s.artist_name = e.artist
					AND abs(s.duration_ms - e.length_ms) <= 10
				  WHERE e.page = 'NextSong' AND e.song IS NOT NULL
				  ORDER BY e.event_id, abs(s.duration_ms - e.length_ms), s.song_id) b
		USING (event_id)
	 WHERE e.page = 'NextSong';

	INSERT INTO streamkpi.sparkify_time (start_time, hour, day, week, month, year, weekday)
	SELECT t, date_part('hour', l), date_part('day', l), date_part('week', l),
		   date_part('month', l), date_part('year', l), date_part('isodow', l)
	  FROM (SELECT DISTINCT e.event_time FROM new_events e WHERE e.page = 'NextSong') d(t),
		   LATERAL (SELECT t AT TIME ZONE tz) x(l)
	ON CONFLICT (start_time) DO NOTHING;

	-- Listens: plays, and likes of the song a session played last.  The
	-- likes look back within the statement first (its song may be in the
	-- same batch), then at what earlier statements left in the session state.
	SELECT min(e.event_time), max(e.event_time) INTO lo, hi
	  FROM new_events e
	 WHERE e.page IN ('NextSong', 'Thumbs Up') AND e.user_id IS NOT NULL;
	IF lo IS NULL THEN
		RETURN NULL;
	END IF;
	PERFORM streamkpi.ensure_listens_partitions(lo, hi);
	INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played, action)
	SELECT 'sparkify:' || e.event_id, e.user_id, streamkpi.sparkify_track_id(e.artist, e.song),
		   e.event_time, e.length_ms, 'play'
	  FROM new_events e
	 WHERE e.page = 'NextSong' AND e.song IS NOT NULL AND e.user_id IS NOT NULL
	UNION ALL
	-- only the sessions with a Thumbs Up in this statement are looked at
	SELECT 'sparkify:' || q.event_id, q.user_id, coalesce(q.track_id, st.last_track_id),
		   q.event_time, NULL, 'like'
	  FROM (SELECT p.*,
				   first_value(p.played) OVER (PARTITION BY p.user_id, p.session_id, p.nsongs
											   ORDER BY p.item_in_session, p.event_time, p.event_id) AS track_id
			  FROM (SELECT e.event_id, e.user_id, e.session_id, e.item_in_session,
						   e.event_time, e.page,
						   CASE WHEN e.page = 'NextSong'
								THEN streamkpi.sparkify_track_id(e.artist, e.song) END AS played,
						   count(*) FILTER (WHERE e.page = 'NextSong')
							   OVER (PARTITION BY e.user_id, e.session_id
									 ORDER BY e.item_in_session, e.event_time, e.event_id) AS nsongs
					  FROM new_events e
					 WHERE e.user_id IS NOT NULL
					   AND ((e.page = 'NextSong' AND e.song IS NOT NULL) OR e.page = 'Thumbs Up')
					   AND (e.user_id, e.session_id) IN (SELECT t.user_id, t.session_id
														   FROM new_events t
														  WHERE t.page = 'Thumbs Up')) p
		   ) q
	  LEFT JOIN streamkpi.sparkify_session_state st
		ON q.track_id IS NULL
	   AND st.user_id = q.user_id AND st.session_id = q.session_id
	   AND st.last_song_item < q.item_in_session
	 WHERE q.page = 'Thumbs Up' AND coalesce(q.track_id, st.last_track_id) IS NOT NULL;
	RETURN NULL;
END
$fn$;

-- Per user: sessions, the churn signals and the user row.
CREATE FUNCTION streamkpi._sparkify_apply_users()
	RETURNS trigger
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	tz		text := streamkpi._sparkify_check_session();
BEGIN
	PERFORM streamkpi._sparkify_lock();
	WITH last_songs AS (
		SELECT DISTINCT ON (e.user_id, e.session_id) e.user_id, e.session_id,
			   e.item_in_session AS item, streamkpi.sparkify_track_id(e.artist, e.song) AS track_id
		  FROM new_events e
		 WHERE e.user_id IS NOT NULL AND e.session_id IS NOT NULL
		   AND e.page = 'NextSong' AND e.song IS NOT NULL
		 ORDER BY e.user_id, e.session_id, e.item_in_session DESC, e.event_time DESC, e.event_id DESC
	), sessions AS (
		INSERT INTO streamkpi.sparkify_session_state AS s
			(user_id, session_id, last_song_item, last_track_id)
		SELECT k.user_id, k.session_id, l.item, l.track_id
		  FROM (SELECT DISTINCT e.user_id, e.session_id FROM new_events e
				 WHERE e.user_id IS NOT NULL AND e.session_id IS NOT NULL) k
		  LEFT JOIN last_songs l USING (user_id, session_id)
		 ORDER BY k.user_id, k.session_id
		ON CONFLICT (user_id, session_id) DO UPDATE
		   SET last_song_item = excluded.last_song_item,
			   last_track_id = excluded.last_track_id
		 WHERE excluded.last_song_item >= coalesce(s.last_song_item, -1)
		RETURNING s.user_id, (s.xmax = 0) AS inserted
	), new_sessions AS (
		SELECT user_id, count(*) AS n FROM sessions WHERE inserted GROUP BY user_id
	), latest AS (
		SELECT DISTINCT ON (e.user_id) e.user_id, e.event_time, coalesce(e.item_in_session, -1) AS item,
			   e.level, e.first_name, e.last_name, e.gender, e.registered_at
		  FROM new_events e
		 WHERE e.user_id IS NOT NULL
		 ORDER BY e.user_id, e.event_time DESC, e.item_in_session DESC NULLS LAST, e.event_id DESC
	), batch AS (
		SELECT e.user_id, min(e.event_time) AS first_at,
			   count(*) FILTER (WHERE e.page = 'NextSong') AS songs,
			   count(*) FILTER (WHERE e.page = 'Thumbs Up') AS thumbs_up,
			   count(*) FILTER (WHERE e.page = 'Thumbs Down') AS thumbs_down,
			   count(*) FILTER (WHERE e.page = 'Add to Playlist') AS add_to_playlist,
			   count(*) FILTER (WHERE e.page = 'Add Friend') AS add_friend,
			   count(*) FILTER (WHERE e.page = 'Roll Advert') AS roll_advert,
			   count(*) FILTER (WHERE e.page = 'Submit Upgrade') AS upgrades,
			   count(*) FILTER (WHERE e.page = 'Submit Downgrade') AS downgrades,
			   count(*) FILTER (WHERE e.page = 'Error') AS errors,
			   count(*) FILTER (WHERE e.page = 'Help') AS help_visits,
			   min(e.event_time) FILTER (WHERE e.page = 'Cancellation Confirmation') AS churned_at
		  FROM new_events e
		 WHERE e.user_id IS NOT NULL
		 GROUP BY e.user_id
	), signals AS (
		INSERT INTO streamkpi.user_churn_signals AS c
			(user_id, level, registered_at, first_event_at, last_event_at, last_item,
			 sessions, songs_played, thumbs_up, thumbs_down, add_to_playlist,
			 add_friend, roll_advert, upgrades, downgrades, errors, help_visits,
			 churned_at, churned_on)
		SELECT b.user_id, l.level, l.registered_at, b.first_at, l.event_time, l.item,
			   coalesce(ns.n, 0), b.songs, b.thumbs_up, b.thumbs_down, b.add_to_playlist,
			   b.add_friend, b.roll_advert, b.upgrades, b.downgrades, b.errors,
			   b.help_visits, b.churned_at, (b.churned_at AT TIME ZONE tz)::date
		  FROM batch b
		  JOIN latest l USING (user_id)
		  LEFT JOIN new_sessions ns USING (user_id)
		 ORDER BY b.user_id
		ON CONFLICT (user_id) DO UPDATE SET
			level = CASE WHEN (excluded.last_event_at, excluded.last_item) >= (c.last_event_at, c.last_item)
						 THEN excluded.level ELSE c.level END,
			registered_at = CASE WHEN (excluded.last_event_at, excluded.last_item) >= (c.last_event_at, c.last_item)
								 THEN coalesce(excluded.registered_at, c.registered_at)
								 ELSE coalesce(c.registered_at, excluded.registered_at) END,
			last_item = CASE WHEN (excluded.last_event_at, excluded.last_item) >= (c.last_event_at, c.last_item)
							 THEN excluded.last_item ELSE c.last_item END,
			last_event_at = greatest(c.last_event_at, excluded.last_event_at),
			first_event_at = least(c.first_event_at, excluded.first_event_at),
			sessions = c.sessions + excluded.sessions,
			songs_played = c.songs_played + excluded.songs_played,
			thumbs_up = c.thumbs_up + excluded.thumbs_up,
			thumbs_down = c.thumbs_down + excluded.thumbs_down,
			add_to_playlist = c.add_to_playlist + excluded.add_to_playlist,
			add_friend = c.add_friend + excluded.add_friend,
			roll_advert = c.roll_advert + excluded.roll_advert,
			upgrades = c.upgrades + excluded.upgrades,
			downgrades = c.downgrades + excluded.downgrades,
			errors = c.errors + excluded.errors,
			help_visits = c.help_visits + excluded.help_visits,
			churned_on = CASE WHEN c.churned_at IS NULL OR excluded.churned_at < c.churned_at
							  THEN excluded.churned_on ELSE c.churned_on END,
			churned_at = least(c.churned_at, excluded.churned_at)
		RETURNING c.user_id
	)
	INSERT INTO streamkpi.sparkify_users AS u
		(user_id, first_name, last_name, gender, level, registered_at, level_at, level_item)
	SELECT l.user_id, l.first_name, l.last_name, l.gender, l.level, l.registered_at,
		   l.event_time, l.item
	  FROM latest l
	 ORDER BY l.user_id
	ON CONFLICT (user_id) DO UPDATE SET
		first_name = excluded.first_name, last_name = excluded.last_name,
		gender = excluded.gender, level = excluded.level,
		registered_at = excluded.registered_at,
		level_at = excluded.level_at, level_item = excluded.level_item
	 WHERE (excluded.level_at, excluded.level_item) >= (u.level_at, u.level_item);

	-- The user dimension of the KPIs (subscription = latest level).
	INSERT INTO streamkpi.users AS d (user_id, user_name, gender, subscription, created_at)
	SELECT u.user_id, nullif(concat_ws(' ', u.first_name, u.last_name), ''), u.gender,
		   u.level, (u.registered_at AT TIME ZONE tz)::date
	  FROM streamkpi.sparkify_users u
	 WHERE u.user_id IN (SELECT e.user_id FROM new_events e)
	 ORDER BY u.user_id
	ON CONFLICT (user_id) DO UPDATE SET
		user_name = excluded.user_name, gender = excluded.gender,
		subscription = excluded.subscription, created_at = excluded.created_at
	 WHERE (d.user_name, d.gender, d.subscription, d.created_at)
		   IS DISTINCT FROM (excluded.user_name, excluded.gender, excluded.subscription, excluded.created_at);
	RETURN NULL;
END
$fn$;

-- Per day: users counted once (state rows inserted now), level changes
-- and cancellations.
CREATE FUNCTION streamkpi._sparkify_apply_days()
	RETURNS trigger
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	tz		text := streamkpi._sparkify_check_session();
BEGIN
	PERFORM streamkpi._sparkify_lock();
	WITH ev AS (
		SELECT (e.event_time AT TIME ZONE tz)::date AS day, e.user_id, e.level,
			   e.page, e.registered_at
		  FROM new_events e
	), first_seen AS (
		INSERT INTO streamkpi.sparkify_user_day_state (day, user_id, level)
		SELECT DISTINCT d.day, d.user_id, lv.level
		  FROM (SELECT DISTINCT ev.day, ev.user_id, ev.level FROM ev
				 WHERE ev.user_id IS NOT NULL) d,
			   LATERAL (VALUES (''), (d.level)) lv(level)
		 WHERE lv.level IN ('', 'paid', 'free')
		 ORDER BY 1, 2, 3
		ON CONFLICT DO NOTHING
		RETURNING day, user_id, level
	), registered AS (
		SELECT DISTINCT ON (ev.user_id) ev.user_id, (ev.registered_at AT TIME ZONE tz)::date AS day
		  FROM ev
		 WHERE ev.user_id IS NOT NULL AND ev.registered_at IS NOT NULL
		 ORDER BY ev.user_id
	), users AS (
		SELECT f.day,
			   count(*) FILTER (WHERE f.level = '') AS active,
			   count(*) FILTER (WHERE f.level = 'paid') AS paid,
			   count(*) FILTER (WHERE f.level = 'free') AS free,
			   count(*) FILTER (WHERE f.level = '' AND r.day = f.day) AS new
		  FROM first_seen f
		  LEFT JOIN registered r USING (user_id)
		 GROUP BY f.day
	), pages AS (
		SELECT ev.day,
			   count(*) FILTER (WHERE ev.page = 'Submit Upgrade') AS upgrades,
			   count(*) FILTER (WHERE ev.page = 'Submit Downgrade') AS downgrades,
			   count(*) FILTER (WHERE ev.page = 'Cancellation Confirmation') AS cancellations
		  FROM ev
		 WHERE ev.user_id IS NOT NULL
		   AND ev.page IN ('Submit Upgrade', 'Submit Downgrade', 'Cancellation Confirmation')
		 GROUP BY ev.day
	)
	INSERT INTO streamkpi.daily_churn AS d
		(day, active_users, paid_users, free_users, new_users, upgrades, downgrades, cancellations)
	SELECT coalesce(u.day, p.day), coalesce(u.active, 0), coalesce(u.paid, 0),
		   coalesce(u.free, 0), coalesce(u.new, 0), coalesce(p.upgrades, 0),
		   coalesce(p.downgrades, 0), coalesce(p.cancellations, 0)
	  FROM users u
	  FULL JOIN pages p USING (day)
	 ORDER BY 1
	ON CONFLICT (day) DO UPDATE SET
		active_users = d.active_users + excluded.active_users,
		paid_users = d.paid_users + excluded.paid_users,
		free_users = d.free_users + excluded.free_users,
		new_users = d.new_users + excluded.new_users,
		upgrades = d.upgrades + excluded.upgrades,
		downgrades = d.downgrades + excluded.downgrades,
		cancellations = d.cancellations + excluded.cancellations;
	RETURN NULL;
END
$fn$;

-- Three triggers, one per concern; they fire in name order, so likes look
-- at the sessions' last songs before this statement's songs replace them.
CREATE TRIGGER app_events_1_plays AFTER INSERT ON streamkpi.app_events
	REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION streamkpi._sparkify_apply_plays();
CREATE TRIGGER app_events_2_users AFTER INSERT ON streamkpi.app_events
	REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION streamkpi._sparkify_apply_users();
CREATE TRIGGER app_events_3_days AFTER INSERT ON streamkpi.app_events
	REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION streamkpi._sparkify_apply_days();

-- The catalogue: artists, tracks (genre stays as it is: unknown until
-- someone knows it), and plays that waited for this song.
CREATE FUNCTION streamkpi._sparkify_apply_songs()
	RETURNS trigger
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	AS $fn$
BEGIN
	PERFORM streamkpi._sparkify_check_session();
	PERFORM streamkpi._sparkify_lock();

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

	UPDATE streamkpi.sparkify_songplays p
	   SET song_id = m.song_id, artist_id = m.artist_id
	  FROM (SELECT DISTINCT ON (p.songplay_id) p.songplay_id, s.song_id, s.artist_id
			  FROM streamkpi.sparkify_songplays p
			  JOIN new_songs s ON s.track_id = p.track_id
			 WHERE p.song_id IS NULL AND abs(s.duration_ms - p.length_ms) <= 10
			 ORDER BY p.songplay_id, abs(s.duration_ms - p.length_ms), s.song_id) m
	 WHERE p.songplay_id = m.songplay_id;
	RETURN NULL;
END
$fn$;

CREATE TRIGGER sparkify_songs_inserted AFTER INSERT ON streamkpi.sparkify_songs
	REFERENCING NEW TABLE AS new_songs
	FOR EACH STATEMENT EXECUTE FUNCTION streamkpi._sparkify_apply_songs();
CREATE TRIGGER sparkify_songs_updated AFTER UPDATE ON streamkpi.sparkify_songs
	REFERENCING NEW TABLE AS new_songs
	FOR EACH STATEMENT EXECUTE FUNCTION streamkpi._sparkify_apply_songs();

REVOKE ALL ON FUNCTION streamkpi._sparkify_check_session() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION streamkpi._sparkify_check_session() TO streamkpi_admin;
