# Churn signals with cancellations, from synthetic Sparkify traffic: its
# song catalogue and 1% malformed log lines through Kafka into two pipeline
# workers, while another session INSERTs more events into app_events
# directly.  Days are counted in Pacific/Auckland (UTC+13), so a day in the
# tables differs from the UTC day for half of each day.  user_churn_signals
# and daily_churn must equal a plain SQL computation over app_events, the
# likes in listens a plain computation over the sessions, and every
# malformed line must be a dead letter.  Runs without ../shared/data.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use StreamKPI::Kafka;
use StreamKPI::Node;
use StreamKPI::Sparkify;

my $tz = 'Pacific/Auckland';
my $kafka = StreamKPI::Kafka->start('churn');
$kafka->create_topic('sparkify_events', 4);
$kafka->create_topic('sparkify_songs', 1);
my $node = StreamKPI::Node->new_node('churn', timezone => "'UTC'",
	'streamkpi.kpi_timezone' => "'$tz'", 'streamkpi.kpi_worker' => 'off');
sub sq { return $node->safe_psql('postgres', $_[0]); }

my $bootstrap = $kafka->bootstrap;
my $gen_args = q{'2026-03-01 00:00+00', seed => 5, duration => '4 days', users => 600,
	songs => 3000, cancel_share => 0.3, new_user_share => 0.2};
sq(qq{CREATE SERVER kafka FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (brokers '$bootstrap');
	SELECT streamkpi.create_sparkify_pipelines('kafka', start => false);
	SELECT streamkpi.alter_pipeline('sparkify_events', batch_size => 1000, parallelism => 2);
	-- half the plays have their song in the catalogue, which comes first
	INSERT INTO streamkpi.kafka_sparkify_songs (song_id, title, artist_id, artist_name,
		artist_location, artist_latitude, artist_longitude, year, duration)
	SELECT * FROM streamkpi.synthetic_sparkify_songs(1500);
	CREATE TABLE lines AS
	SELECT key, payload FROM streamkpi.synthetic_sparkify_lines(50000, $gen_args,
		malformed_share => 0.01);
	INSERT INTO streamkpi.kafka_sparkify_events (kkey, kpayload) SELECT key, payload FROM lines;
	SELECT streamkpi.create_sparkify_pipelines('kafka')});

# Another writer, beside the pipelines: other users ('d' prefix, logged-in
# events only) on the same days, one statement per day of one generated
# stream.
my $direct = join('', map {
	my $day = "'2026-03-01 00:00+00'::timestamptz + interval '$_ days'";
	qq{INSERT INTO streamkpi.app_events (event_time, user_id, session_id, item_in_session,
		page, auth, level, method, status, location, user_agent, song, artist, length_ms,
		first_name, last_name, gender, registered_at)
	SELECT ts, 'd' || user_id, session_id, item_in_session, page, auth, level,
		method, status, location, streamkpi._sparkify_unquote(user_agent), song, artist,
		round(length * 1000)::int, first_name, last_name, gender, registration
	  FROM streamkpi.synthetic_sparkify_events(60000, '2026-03-01 00:00+00', seed => 9,
		duration => '4 days', users => 300, cancel_share => 0.3)
	 WHERE user_id <> '' AND ts >= $day AND ts < $day + interval '1 day';\n}
} 0 .. 3);
my ($d_out, $d_err);
my $writer = IPC::Run::start([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
	'-d', $node->connstr('postgres') ], '<', \$direct, '>', \$d_out, '2>', \$d_err);

my $caught_up = StreamKPI::Sparkify::caught_up_query();
ok($node->poll_query_until('postgres', $caught_up), 'both pipelines catch up');
ok($writer->finish, 'the direct writer inserted its events') or diag $d_err;
is(sq(q{SELECT count(DISTINCT pid) FROM streamkpi.pipeline_status WHERE pipeline = 'sparkify_events'}),
	'2', 'two workers ran the events pipeline');

# ---- every line is an event or a dead letter ----
sq(q{CREATE FUNCTION good_line(p bytea) RETURNS boolean LANGUAGE plpgsql AS $$
	DECLARE j jsonb;
	BEGIN
		j := convert_from(p, 'UTF8')::jsonb;
		RETURN coalesce(jsonb_typeof(j -> 'ts') = 'number' AND jsonb_typeof(j -> 'page') = 'string'
		   AND coalesce(jsonb_typeof(j -> 'sessionId'), 'number') IN ('number', 'null'), false);
	EXCEPTION WHEN others THEN RETURN false;
	END $$});
my ($good, $bad) = split /\|/, sq(q{SELECT count(*) FILTER (WHERE good_line(payload)),
	count(*) FILTER (WHERE NOT good_line(payload)) FROM lines});
cmp_ok($bad, '>', 100, "the stream holds malformed lines ($bad)");
is(sq(q{SELECT count(*) FROM streamkpi.app_events WHERE user_id IS NULL OR user_id NOT LIKE 'd%'}),
	$good, 'every good line is one event');
is(sq(q{SELECT count(*) FROM (
		(SELECT payload FROM lines WHERE NOT good_line(payload)
		 EXCEPT ALL SELECT payload FROM streamkpi.dead_letters WHERE pipeline = 'sparkify_events')
		UNION ALL
		(SELECT payload FROM streamkpi.dead_letters
		 EXCEPT ALL SELECT payload FROM lines WHERE NOT good_line(payload))) d}),
	'0', 'the dead letters are exactly the malformed lines');

# ---- the churn tables against plain SQL over app_events ----
sub same_rows { StreamKPI::Sparkify::same_rows($node, @_, 'a plain SQL computation over app_events'); return; }

same_rows('user_churn_signals', qq{
	WITH e AS (SELECT * FROM streamkpi.app_events WHERE user_id IS NOT NULL),
	latest AS (
		SELECT DISTINCT ON (user_id) user_id, level, registered_at, event_time
		  FROM e ORDER BY user_id, event_time DESC, item_in_session DESC, event_id DESC),
	per_user AS (
		SELECT user_id, min(event_time) AS first_at, count(DISTINCT session_id) AS sessions,
			   count(*) FILTER (WHERE page = 'NextSong') AS songs,
			   count(*) FILTER (WHERE page = 'Thumbs Up') AS up,
			   count(*) FILTER (WHERE page = 'Thumbs Down') AS down,
			   count(*) FILTER (WHERE page = 'Add to Playlist') AS playlist,
			   count(*) FILTER (WHERE page = 'Add Friend') AS friend,
			   count(*) FILTER (WHERE page = 'Roll Advert') AS advert,
			   count(*) FILTER (WHERE page = 'Submit Upgrade') AS upgrades,
			   count(*) FILTER (WHERE page = 'Submit Downgrade') AS downgrades,
			   count(*) FILTER (WHERE page = 'Error') AS errors,
			   count(*) FILTER (WHERE page = 'Help') AS help,
			   min(event_time) FILTER (WHERE page = 'Cancellation Confirmation') AS cancelled
		  FROM e GROUP BY user_id)
	SELECT p.user_id, l.level, l.registered_at, p.first_at, l.event_time,
		   floor(extract(epoch FROM l.event_time - l.registered_at) / 86400)::int,
		   p.sessions, p.songs, round(p.songs::numeric / p.sessions, 3), p.up, p.down,
		   p.playlist, p.friend, p.advert, p.upgrades, p.downgrades, p.errors, p.help,
		   p.downgrades > 0, p.cancelled IS NOT NULL, p.cancelled,
		   (p.cancelled AT TIME ZONE '$tz')::date
	  FROM per_user p JOIN latest l USING (user_id)},
	q{SELECT user_id, level, registered_at, first_event_at, last_event_at, days_registered,
		sessions, songs_played, songs_per_session, thumbs_up, thumbs_down, add_to_playlist,
		add_friend, roll_advert, upgrades, downgrades, errors, help_visits, downgraded,
		churned, churned_at, churned_on FROM streamkpi.user_churn_signals});

same_rows('daily_churn', qq{
	WITH e AS (SELECT (event_time AT TIME ZONE '$tz')::date AS day, *
				 FROM streamkpi.app_events WHERE user_id IS NOT NULL)
	SELECT day, count(DISTINCT user_id),
		   count(DISTINCT user_id) FILTER (WHERE level = 'paid'),
		   count(DISTINCT user_id) FILTER (WHERE level = 'free'),
		   count(DISTINCT user_id) FILTER (WHERE (registered_at AT TIME ZONE '$tz')::date = day),
		   count(*) FILTER (WHERE page = 'Submit Upgrade'),
		   count(*) FILTER (WHERE page = 'Submit Downgrade'),
		   count(*) FILTER (WHERE page = 'Cancellation Confirmation'),
		   round(count(*) FILTER (WHERE page = 'Cancellation Confirmation')::numeric
				 / count(DISTINCT user_id), 6)
	  FROM e GROUP BY day},
	q{SELECT day, active_users, paid_users, free_users, new_users, upgrades, downgrades,
		cancellations, churn_rate FROM streamkpi.daily_churn});

my ($cancelled, $other_day, $paid_to_free, $free_to_paid, $new) = split /\|/, sq(qq{
	SELECT count(*) FILTER (WHERE churned),
		   count(*) FILTER (WHERE churned_on <> (churned_at AT TIME ZONE 'UTC')::date),
		   count(*) FILTER (WHERE downgraded),
		   count(*) FILTER (WHERE upgrades > 0),
		   (SELECT sum(new_users) FROM streamkpi.daily_churn)
	  FROM streamkpi.user_churn_signals});
cmp_ok($cancelled, '>', 20, "users cancelled ($cancelled)");
cmp_ok($other_day, '>', 0,
	"for $other_day of them the day of the cancellation in $tz is not the UTC day, and counts");
cmp_ok($paid_to_free, '>', 0, "users downgraded ($paid_to_free)");
cmp_ok($free_to_paid, '>', 0, "users upgraded ($free_to_paid)");
cmp_ok($new, '>', 0, "new users registered in the window ($new)");
is(sq(q{SELECT count(*) FROM streamkpi.user_churn_signals c JOIN streamkpi.app_events e
		 ON e.user_id = c.user_id AND e.event_time > c.churned_at}),
	'0', 'no user has an event after cancelling');

# ---- plays and likes in listens ----
is(sq(q{SELECT count(*) FROM streamkpi.listens WHERE action = 'play'}),
	sq(q{SELECT count(*) FROM streamkpi.app_events WHERE page = 'NextSong'}),
	'every play is a listen');
# (an index of the test's own, for the lookups of the computation below)
sq(q{CREATE INDEX app_events_session ON streamkpi.app_events (user_id, session_id, item_in_session)});
same_rows('likes (Thumbs Up of the session\'s last song)', q{
	SELECT t.user_id, t.event_time, streamkpi.sparkify_track_id(s.artist, s.song)
	  FROM streamkpi.app_events t
	  JOIN LATERAL (SELECT p.artist, p.song FROM streamkpi.app_events p
					 WHERE p.user_id = t.user_id AND p.session_id = t.session_id
					   AND p.page = 'NextSong' AND p.item_in_session < t.item_in_session
					 ORDER BY p.item_in_session DESC LIMIT 1) s ON true
	 WHERE t.page = 'Thumbs Up'},
	q{SELECT user_id, listened_at, track_id FROM streamkpi.listens WHERE action = 'like'});
same_rows('song matches (title, artist name, duration within 10 ms)', q{
	SELECT e.event_id, m.song_id, m.artist_id
	  FROM streamkpi.app_events e
	  LEFT JOIN LATERAL (SELECT s.song_id, s.artist_id FROM streamkpi.sparkify_songs s
						  WHERE s.title = e.song AND s.artist_name = e.artist
							AND abs(s.duration_ms - e.length_ms) <= 10
						  ORDER BY abs(s.duration_ms - e.length_ms), s.song_id LIMIT 1) m ON true
	 WHERE e.page = 'NextSong'},
	q{SELECT songplay_id, song_id, artist_id FROM streamkpi.sparkify_songplays});
cmp_ok(sq(q{SELECT count(*) FROM streamkpi.sparkify_songplays WHERE song_id IS NOT NULL}), '>', 1000,
	'many plays match a catalogue song');

$node->stop;
done_testing();
