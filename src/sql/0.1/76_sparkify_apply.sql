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
-- The app_events trigger is one set-based statement over the batch (data-
-- modifying CTEs): the plays are read and their track ids hashed once, and
-- everything per user, session or day is summed from one pre-aggregation
-- of the batch by (user, session, day, level), so the batch's events are
-- read a few times instead of once per derived table.
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

-- Everything an app_events statement derives, in one statement over its
-- rows: each play's track id (an md5) is computed once, in the plays CTE
-- that every play-derived table reads, and every CTE sees the tables as
-- they were before the statement, so likes look at the sessions' last
-- songs before this statement's songs replace them.  Songs match on a hash
-- join by title and artist, the 10 ms check after it; the closest song,
-- then the lowest song_id, wins.  Upserts go in key order.
CREATE FUNCTION streamkpi._sparkify_apply_events()
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

	SELECT min(e.event_time), max(e.event_time) INTO lo, hi
	  FROM new_events e
	 WHERE e.page IN ('NextSong', 'Thumbs Up') AND e.user_id IS NOT NULL;
	IF lo IS NOT NULL THEN
		PERFORM streamkpi.ensure_listens_partitions(lo, hi);
	END IF;

	WITH plays AS MATERIALIZED (
		SELECT e.event_id, e.event_time, e.user_id, e.session_id, e.item_in_session,
			   e.song, e.artist, e.length_ms,
			   CASE WHEN e.song IS NOT NULL
					THEN streamkpi.sparkify_track_id(e.artist, e.song) END AS track_id
		  FROM new_events e
		 WHERE e.page = 'NextSong'
	), new_tracks AS (
		-- songs not seen before: name, artist and the first play's length
		-- (the catalogue's song, when it comes, replaces them); grouped
		-- before the probe of tracks, in byte order ("C": the order does
		-- not matter, and comparing by bytes is several times cheaper)
		INSERT INTO streamkpi.tracks (track_id, track_name, artists, duration_ms)
		SELECT g.track_id, g.song, g.artist, g.length_ms
		  FROM (SELECT p.track_id COLLATE "C" AS track_id, min(p.song COLLATE "C") AS song,
					   min(p.artist COLLATE "C") AS artist, min(p.length_ms) AS length_ms
				  FROM plays p
				 WHERE p.track_id IS NOT NULL
				 GROUP BY 1) g
		 WHERE NOT EXISTS (SELECT FROM streamkpi.tracks t WHERE t.track_id = g.track_id)
		 ORDER BY g.track_id
		ON CONFLICT (track_id) DO NOTHING
	), thumbs AS (
		SELECT e.event_id, e.user_id, e.session_id, e.item_in_session, e.event_time
		  FROM new_events e
		 WHERE e.page = 'Thumbs Up' AND e.user_id IS NOT NULL AND e.session_id IS NOT NULL
	), seq AS (
		-- the plays and likes of each session in order: nsongs counts the
		-- plays so far, songs all of the session's plays in the statement
		SELECT x.*,
			   count(x.played) OVER (PARTITION BY x.user_id COLLATE "C", x.session_id
									 ORDER BY x.item_in_session, x.event_time, x.event_id) AS nsongs,
			   count(x.played) OVER (PARTITION BY x.user_id COLLATE "C", x.session_id) AS songs
		  FROM (SELECT p.event_id, p.user_id, p.session_id, p.item_in_session,
					   p.event_time, p.track_id AS played
				  FROM plays p
				 WHERE p.user_id IS NOT NULL AND p.session_id IS NOT NULL
				   AND p.track_id IS NOT NULL
				UNION ALL
				SELECT t.event_id, t.user_id, t.session_id, t.item_in_session,
					   t.event_time, NULL
				  FROM thumbs t) x
	), likes AS (
		-- a like is of the session's last song before it: the statement's
		-- nsongs-th play, else (none yet) what earlier statements left in
		-- the session state
		SELECT t.event_id, t.user_id, coalesce(p.played, st.last_track_id) AS track_id,
			   t.event_time
		  FROM seq t
		  LEFT JOIN seq p
			ON p.user_id = t.user_id AND p.session_id = t.session_id
		   AND p.nsongs = t.nsongs AND p.played IS NOT NULL
		  LEFT JOIN streamkpi.sparkify_session_state st
			ON t.nsongs = 0
		   AND st.user_id = t.user_id AND st.session_id = t.session_id
		   AND st.last_song_item < t.item_in_session
		 WHERE t.played IS NULL AND coalesce(p.played, st.last_track_id) IS NOT NULL
	), listened AS (
		INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played, action)
		SELECT 'sparkify:' || p.event_id, p.user_id, p.track_id, p.event_time, p.length_ms, 'play'
		  FROM plays p
		 WHERE p.track_id IS NOT NULL AND p.user_id IS NOT NULL
		UNION ALL
		SELECT 'sparkify:' || l.event_id, l.user_id, l.track_id, l.event_time, NULL, 'like'
		  FROM likes l
	), last_songs AS (
		SELECT q.user_id, q.session_id, q.item_in_session AS item, q.played AS track_id
		  FROM seq q
		 WHERE q.played IS NOT NULL AND q.nsongs = q.songs
	), pages AS (
		-- one pass over the logged-in events: per user, session, day, level
		-- and page; everything below sums these few rows
		SELECT e.user_id, e.session_id, (e.event_time AT TIME ZONE tz)::date AS day, e.level,
			   e.page, count(*)::int AS n, min(e.event_time) AS first_at,
			   max(e.event_time) AS last_at, min(e.registered_at) AS registered_at
		  FROM new_events e
		 WHERE e.user_id IS NOT NULL
		 GROUP BY e.user_id, e.session_id, 3, e.level, e.page
	), groups AS (
		-- per user, session, day and level
		SELECT p.user_id, p.session_id, p.day, p.level,
			   min(p.first_at) AS first_at, max(p.last_at) AS last_at,
			   min(p.registered_at) AS registered_at,
			   coalesce(sum(p.n) FILTER (WHERE p.page = 'NextSong'), 0) AS songs,
			   coalesce(sum(p.n) FILTER (WHERE p.page = 'Thumbs Up'), 0) AS thumbs_up,
			   coalesce(sum(p.n) FILTER (WHERE p.page = 'Thumbs Down'), 0) AS thumbs_down,
			   coalesce(sum(p.n) FILTER (WHERE p.page = 'Add to Playlist'), 0) AS add_to_playlist,
			   coalesce(sum(p.n) FILTER (WHERE p.page = 'Add Friend'), 0) AS add_friend,
			   coalesce(sum(p.n) FILTER (WHERE p.page = 'Roll Advert'), 0) AS roll_advert,
			   coalesce(sum(p.n) FILTER (WHERE p.page = 'Submit Upgrade'), 0) AS upgrades,
			   coalesce(sum(p.n) FILTER (WHERE p.page = 'Submit Downgrade'), 0) AS downgrades,
			   coalesce(sum(p.n) FILTER (WHERE p.page = 'Error'), 0) AS errors,
			   coalesce(sum(p.n) FILTER (WHERE p.page = 'Help'), 0) AS help_visits,
			   coalesce(sum(p.n) FILTER (WHERE p.page = 'Cancellation Confirmation'), 0) AS cancellations,
			   min(p.first_at) FILTER (WHERE p.page = 'Cancellation Confirmation') AS churned_at
		  FROM pages p
		 GROUP BY p.user_id, p.session_id, p.day, p.level
	), batch AS (
		SELECT g.user_id, min(g.first_at) AS first_at, max(g.last_at) AS last_at,
			   sum(g.songs) AS songs, sum(g.thumbs_up) AS thumbs_up,
			   sum(g.thumbs_down) AS thumbs_down, sum(g.add_to_playlist) AS add_to_playlist,
			   sum(g.add_friend) AS add_friend, sum(g.roll_advert) AS roll_advert,
			   sum(g.upgrades) AS upgrades, sum(g.downgrades) AS downgrades,
			   sum(g.errors) AS errors, sum(g.help_visits) AS help_visits,
			   min(g.churned_at) AS churned_at,
			   (min(g.registered_at) AT TIME ZONE tz)::date AS registered_on
		  FROM groups g
		 GROUP BY g.user_id
	), latest AS (
		-- each user's latest event: the events at the user's latest time,
		-- then the highest item and event_id among them
		SELECT DISTINCT ON (e.user_id) e.user_id, e.event_time,
			   coalesce(e.item_in_session, -1) AS item, e.level, e.first_name,
			   e.last_name, e.gender, e.registered_at
		  FROM new_events e
		  JOIN batch b ON b.user_id = e.user_id AND b.last_at = e.event_time
		 ORDER BY e.user_id, e.item_in_session DESC NULLS LAST, e.event_id DESC
	), sessions AS (
		INSERT INTO streamkpi.sparkify_session_state AS s
			(user_id, session_id, last_song_item, last_track_id)
		SELECT k.user_id, k.session_id, l.item, l.track_id
		  FROM (SELECT DISTINCT g.user_id, g.session_id FROM groups g
				 WHERE g.session_id IS NOT NULL) k
		  LEFT JOIN last_songs l USING (user_id, session_id)
		 ORDER BY k.user_id, k.session_id
		ON CONFLICT (user_id, session_id) DO UPDATE
		   SET last_song_item = excluded.last_song_item,
			   last_track_id = excluded.last_track_id
		 WHERE excluded.last_song_item >= coalesce(s.last_song_item, -1)
		RETURNING s.user_id, (s.xmax = 0) AS inserted
	), new_sessions AS (
		SELECT user_id, count(*) AS n FROM sessions WHERE inserted GROUP BY user_id
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
	), user_rows AS (
		-- each user's row as the upsert below leaves it: the latest event's
		-- values unless the stored row is of a later event
		SELECT l.user_id, l.event_time, l.item,
			   CASE WHEN newer THEN l.first_name ELSE u.first_name END AS first_name,
			   CASE WHEN newer THEN l.last_name ELSE u.last_name END AS last_name,
			   CASE WHEN newer THEN l.gender ELSE u.gender END AS gender,
			   CASE WHEN newer THEN l.level ELSE u.level END AS level,
			   CASE WHEN newer THEN l.registered_at ELSE u.registered_at END AS registered_at,
			   newer
		  FROM latest l
		  LEFT JOIN streamkpi.sparkify_users u USING (user_id),
			   LATERAL (SELECT u.user_id IS NULL
							   OR (l.event_time, l.item) >= (u.level_at, u.level_item)) n(newer)
	), users AS (
		INSERT INTO streamkpi.sparkify_users
			(user_id, first_name, last_name, gender, level, registered_at, level_at, level_item)
		SELECT r.user_id, r.first_name, r.last_name, r.gender, r.level, r.registered_at,
			   r.event_time, r.item
		  FROM user_rows r
		 WHERE r.newer
		 ORDER BY r.user_id
		ON CONFLICT (user_id) DO UPDATE SET
			first_name = excluded.first_name, last_name = excluded.last_name,
			gender = excluded.gender, level = excluded.level,
			registered_at = excluded.registered_at,
			level_at = excluded.level_at, level_item = excluded.level_item
	), user_dimension AS (
		-- the user dimension of the KPIs (subscription = latest level)
		INSERT INTO streamkpi.users AS d (user_id, user_name, gender, subscription, created_at)
		SELECT r.user_id, nullif(concat_ws(' ', r.first_name, r.last_name), ''), r.gender,
			   r.level, (r.registered_at AT TIME ZONE tz)::date
		  FROM user_rows r
		 ORDER BY r.user_id
		ON CONFLICT (user_id) DO UPDATE SET
			user_name = excluded.user_name, gender = excluded.gender,
			subscription = excluded.subscription, created_at = excluded.created_at
		 WHERE (d.user_name, d.gender, d.subscription, d.created_at)
			   IS DISTINCT FROM (excluded.user_name, excluded.gender, excluded.subscription, excluded.created_at)
	), first_seen AS (
		-- a user counted in daily_churn the first time its state row goes
		-- in (every writer holds the lock, so what is not there yet is
		-- inserted by no one else: no conflict check)
		INSERT INTO streamkpi.sparkify_user_day_state (day, user_id, level)
		SELECT k.day, k.user_id, k.level
		  FROM (SELECT DISTINCT g.day, g.user_id, lv.level
				  FROM groups g,
					   LATERAL (VALUES (''), (g.level)) lv(level)
				 WHERE lv.level IN ('', 'paid', 'free')) k
		 WHERE NOT EXISTS (SELECT FROM streamkpi.sparkify_user_day_state s
							WHERE s.day = k.day AND s.user_id = k.user_id AND s.level = k.level)
		RETURNING day, user_id, level
	), day_users AS (
		SELECT f.day,
			   count(*) FILTER (WHERE f.level = '') AS active,
			   count(*) FILTER (WHERE f.level = 'paid') AS paid,
			   count(*) FILTER (WHERE f.level = 'free') AS free,
			   count(*) FILTER (WHERE f.level = '' AND b.registered_on = f.day) AS new
		  FROM first_seen f
		  JOIN batch b USING (user_id)
		 GROUP BY f.day
	), day_pages AS (
		SELECT g.day, sum(g.upgrades) AS upgrades, sum(g.downgrades) AS downgrades,
			   sum(g.cancellations) AS cancellations
		  FROM groups g
		 GROUP BY g.day
		HAVING sum(g.upgrades + g.downgrades + g.cancellations) > 0
	)
	INSERT INTO streamkpi.daily_churn AS d
		(day, active_users, paid_users, free_users, new_users, upgrades, downgrades, cancellations)
	SELECT coalesce(u.day, p.day), coalesce(u.active, 0), coalesce(u.paid, 0),
		   coalesce(u.free, 0), coalesce(u.new, 0), coalesce(p.upgrades, 0),
		   coalesce(p.downgrades, 0), coalesce(p.cancellations, 0)
	  FROM day_users u
	  FULL JOIN day_pages p USING (day)
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

CREATE TRIGGER app_events_derive AFTER INSERT ON streamkpi.app_events
	REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION streamkpi._sparkify_apply_events();

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
