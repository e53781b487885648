-- streamkpi 0.1: the Kafka side of Sparkify (DESIGN §8).
--
--   SELECT streamkpi.create_sparkify_pipelines('kafka',
--            events_topic => 'sparkify_events', songs_topic => 'sparkify_songs');
--
-- creates the foreign tables streamkpi.kafka_sparkify_events and
-- streamkpi.kafka_sparkify_songs on that server, and the pipelines
-- sparkify_events and sparkify_songs (owned by the caller, run as the
-- caller), and starts them.  Calling it again with the same arguments
-- changes nothing; with others it names what conflicts (SQLSTATE 42710).

-- Sparkify wraps userAgent in literal double quotes: a string of at least
-- two characters that starts and ends with '"' loses them.  In C
-- (src/sparkify_unquote.c): the events pipeline calls it on every event.
CREATE FUNCTION streamkpi._sparkify_unquote(s text)
	RETURNS text
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
	AS 'MODULE_PATHNAME', 'streamkpi_sparkify_unquote';

-- What each foreign table reads: the log's 18 keys, the catalogue's record;
-- kkey and kpayload let INSERT produce lines as they are.
CREATE FUNCTION streamkpi._sparkify_feeds(
	OUT relname name, OUT pipeline text, OUT columns text, OUT statement text)
	RETURNS SETOF record
	LANGUAGE sql IMMUTABLE
	AS $feeds$
	VALUES
	('kafka_sparkify_events', 'sparkify_events',
	 $c$ts timestamptz OPTIONS (time_unit 'ms', required 'true'),
	user_id text OPTIONS (field 'userId'),
	session_id bigint OPTIONS (field 'sessionId'),
	item_in_session int OPTIONS (field 'itemInSession'),
	page text OPTIONS (required 'true'),
	auth text, level text, method text, status int, location text,
	user_agent text OPTIONS (field 'userAgent'),
	song text, artist text, length float8,
	first_name text OPTIONS (field 'firstName'),
	last_name text OPTIONS (field 'lastName'),
	gender text,
	registration timestamptz OPTIONS (time_unit 'ms'),
	kpartition int OPTIONS (meta 'partition'),
	koffset bigint OPTIONS (meta 'offset'),
	kkey text OPTIONS (meta 'key'),
	kpayload bytea OPTIONS (meta 'payload')$c$,
	 $s$INSERT INTO streamkpi.app_events (event_time, user_id, session_id, item_in_session,
	page, auth, level, method, status, location, user_agent, song, artist, length_ms,
	first_name, last_name, gender, registered_at)
SELECT ts, NULLIF(user_id, ''), session_id, item_in_session, page, auth, level,
	method, status, location, streamkpi._sparkify_unquote(user_agent), song, artist,
	round(length * 1000)::int, first_name, last_name, gender, registration
  FROM streamkpi.kafka_sparkify_events$s$),
	('kafka_sparkify_songs', 'sparkify_songs',
	 $c$song_id text OPTIONS (required 'true'),
	title text, artist_id text, artist_name text, artist_location text,
	artist_latitude float8, artist_longitude float8, year int, duration float8,
	kpartition int OPTIONS (meta 'partition'),
	koffset bigint OPTIONS (meta 'offset'),
	kkey text OPTIONS (meta 'key'),
	kpayload bytea OPTIONS (meta 'payload')$c$,
	 $s$INSERT INTO streamkpi.sparkify_songs AS s (song_id, title, artist_id, year,
	duration_ms, artist_name, artist_location, artist_latitude, artist_longitude)
SELECT DISTINCT ON (song_id) song_id, title, artist_id, NULLIF(year, 0),
	round(duration * 1000)::int, artist_name, NULLIF(artist_location, ''),
	artist_latitude, artist_longitude
  FROM streamkpi.kafka_sparkify_songs
 ORDER BY song_id, kpartition DESC, koffset DESC
ON CONFLICT (song_id) DO UPDATE SET title = excluded.title,
	artist_id = excluded.artist_id, year = excluded.year,
	duration_ms = excluded.duration_ms, artist_name = excluded.artist_name,
	artist_location = excluded.artist_location,
	artist_latitude = excluded.artist_latitude,
	artist_longitude = excluded.artist_longitude
 WHERE (s.title, s.artist_id, s.year, s.duration_ms, s.artist_name,
		s.artist_location, s.artist_latitude, s.artist_longitude)
	   IS DISTINCT FROM (excluded.title, excluded.artist_id, excluded.year,
		excluded.duration_ms, excluded.artist_name, excluded.artist_location,
		excluded.artist_latitude, excluded.artist_longitude)$s$)
$feeds$;

-- Create (or check) the foreign table of one feed in schema streamkpi.
-- SECURITY DEFINER because only the extension's owner creates objects in
-- its schema; so it takes nothing but names and quotes them, the caller
-- must be allowed to use the server, and gets SELECT and INSERT on the
-- table (its pipeline reads it, INSERT produces).
CREATE FUNCTION streamkpi._sparkify_foreign_table(p_pipeline text, p_server text, p_topic text)
	RETURNS void
	LANGUAGE plpgsql
	SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	caller	regrole := streamkpi._caller();
	feed	record;
	rel		oid;
	cur_server name;
	cur_topic text;
BEGIN
	IF NOT pg_has_role(caller, 'streamkpi_admin', 'MEMBER') THEN
		RAISE EXCEPTION 'permission denied to create the Sparkify pipelines'
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Pipelines are created by members of streamkpi_admin.';
	END IF;
	IF NOT has_server_privilege(caller, p_server, 'USAGE') THEN
		RAISE EXCEPTION 'permission denied for foreign server %', p_server
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('Role %s has no USAGE on it.', caller);
	END IF;
	SELECT * INTO feed FROM streamkpi._sparkify_feeds() f WHERE f.pipeline = p_pipeline;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no Sparkify feed is called "%"', p_pipeline
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The feeds are sparkify_events and sparkify_songs.';
	END IF;

	SELECT c.oid, s.srvname,
		   (SELECT o.option_value FROM pg_options_to_table(ft.ftoptions) o
			 WHERE o.option_name = 'topic')
	  INTO rel, cur_server, cur_topic
	  FROM pg_class c
	  JOIN pg_foreign_table ft ON ft.ftrelid = c.oid
	  JOIN pg_foreign_server s ON s.oid = ft.ftserver
	 WHERE c.relnamespace = 'streamkpi'::regnamespace AND c.relname = feed.relname;

	IF rel IS NULL THEN
		-- feed.columns is our own text, not the caller's
		EXECUTE format('CREATE FOREIGN TABLE streamkpi.%I (%s) SERVER %I OPTIONS (topic %L, format %L)',
					   feed.relname, feed.columns, p_server, p_topic, 'json');
		rel := format('streamkpi.%I', feed.relname)::regclass;
	ELSIF cur_server <> p_server OR cur_topic IS DISTINCT FROM p_topic THEN
		RAISE EXCEPTION 'foreign table streamkpi.% already reads topic "%" on server "%"',
						feed.relname, cur_topic, cur_server
			USING ERRCODE = 'duplicate_object',
				  DETAIL = format('This call asks for topic "%s" on server "%s".', p_topic, p_server),
				  HINT = 'Call it with the same server and topics, or drop the Sparkify pipelines and foreign tables first.';
	END IF;
	IF NOT has_table_privilege(caller, rel, 'SELECT, INSERT') THEN
		EXECUTE format('GRANT SELECT, INSERT ON streamkpi.%I TO %I',
					   feed.relname, (SELECT rolname FROM pg_roles WHERE oid = caller));
	END IF;
END
$fn$;

-- Create (or check) one pipeline as the caller.
CREATE FUNCTION streamkpi._sparkify_pipeline(p_name text, p_statement text,
											 p_source regclass, p_start boolean)
	RETURNS void
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	p		streamkpi.pipelines;
BEGIN
	SELECT * INTO p FROM streamkpi.pipelines WHERE name = p_name;
	IF NOT FOUND THEN
		PERFORM streamkpi.create_pipeline(p_name, p_statement);
	ELSIF p.source <> p_source OR p.statement <> p_statement THEN
		RAISE EXCEPTION 'pipeline "%" already exists with another definition', p_name
			USING ERRCODE = 'duplicate_object',
				  DETAIL = CASE WHEN p.source <> p_source
								THEN format('It reads %s, not %s.', p.source, p_source)
								ELSE 'Its statement is not the one create_sparkify_pipelines gives it.' END,
				  HINT = format('Drop it with streamkpi.drop_pipeline(%L) first, or use other pipelines for other statements.', p_name);
	ELSIF p.enabled OR NOT p_start THEN
		RETURN;
	END IF;
	IF p_start THEN
		PERFORM streamkpi.start_pipeline(p_name);
	END IF;
END
$fn$;

CREATE FUNCTION streamkpi.create_sparkify_pipelines(
	server text,
	events_topic text DEFAULT 'sparkify_events',
	songs_topic text DEFAULT 'sparkify_songs',
	start boolean DEFAULT true)
	RETURNS void
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
	AS $fn$
DECLARE
	fdw		name;
	f		record;
BEGIN
	IF server IS NULL OR events_topic IS NULL OR songs_topic IS NULL OR start IS NULL THEN
		RAISE EXCEPTION 'arguments of create_sparkify_pipelines must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF events_topic = '' OR songs_topic = '' THEN
		RAISE EXCEPTION 'a Kafka topic name must not be empty'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF events_topic = songs_topic THEN
		RAISE EXCEPTION 'events and songs must come from two topics, not both from "%"', events_topic
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Each topic feeds one pipeline, whose messages have one shape.';
	END IF;
	SELECT w.fdwname INTO fdw
	  FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
	 WHERE s.srvname = server;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'server "%" does not exist', server
			USING ERRCODE = 'undefined_object';
	ELSIF fdw <> 'streamkpi_kafka' THEN
		RAISE EXCEPTION 'server "%" is not a Kafka server', server
			USING ERRCODE = 'wrong_object_type',
				  DETAIL = format('It uses foreign data wrapper %s, not streamkpi_kafka.', fdw);
	END IF;

	-- the catalogue first, so that a first load matches plays to songs
	FOR f IN SELECT * FROM streamkpi._sparkify_feeds() ORDER BY pipeline DESC LOOP
		PERFORM streamkpi._note_caller();	-- the role _caller() gives it
		PERFORM streamkpi._sparkify_foreign_table(f.pipeline, server,
			CASE f.pipeline WHEN 'sparkify_events' THEN events_topic ELSE songs_topic END);
	END LOOP;
	FOR f IN SELECT * FROM streamkpi._sparkify_feeds() ORDER BY pipeline DESC LOOP
		PERFORM streamkpi._sparkify_pipeline(f.pipeline, f.statement,
			format('streamkpi.%I', f.relname)::regclass, start);
	END LOOP;
END
$fn$;

COMMENT ON FUNCTION streamkpi.create_sparkify_pipelines(text, text, text, boolean) IS
	'create and start the Kafka foreign tables and pipelines that keep the Sparkify tables current';

REVOKE ALL ON FUNCTION streamkpi._sparkify_foreign_table(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi._sparkify_pipeline(text, text, regclass, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION streamkpi.create_sparkify_pipelines(text, text, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION streamkpi._sparkify_foreign_table(text, text, text),
	streamkpi._sparkify_pipeline(text, text, regclass, boolean),
	streamkpi.create_sparkify_pipelines(text, text, text, boolean) TO streamkpi_admin;
