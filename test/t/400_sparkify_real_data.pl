# Real data: the Udacity Sparkify logs and song catalogue (../shared/data/
# sparkify-udacity, see SOURCE.md there).  Every log line and every song
# goes through Kafka into the pipelines of create_sparkify_pipelines(),
# salted with malformed messages, while the events pipeline's worker is
# killed with SIGKILL once.  The songs arrive after the plays, so the one
# play the catalogue knows is matched when its song comes.  Every table of
# DESIGN §8 must equal what test/sparkify/expected.py computes from the
# JSON files alone.
use strict;
use warnings;

use File::Temp qw(tempfile);
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use StreamKPI::Kafka;
use StreamKPI::Node;
use StreamKPI::Sparkify;

my $repo = $ENV{STREAMKPI_REPO} // '.';
my $data = "$repo/../shared/data/sparkify-udacity";
plan skip_all => "real data set not found at $data" unless -d $data;

# ---- the independent computation ----
my $expected_dir = "$PostgreSQL::Test::Utils::tmp_check/sparkify_expected";
my ($py_out, $py_err);
IPC::Run::run([ 'python3', "$repo/test/sparkify/expected.py", $data, $expected_dir ],
	'>', \$py_out, '2>', \$py_err)
  or die "expected.py failed: $py_err";
my %want = map { split /=/ } split /\n/, $py_out;
is_deeply(
	[ @want{qw(events songplays time users songs artists matched)} ],
	[ 8056, 6820, 6813, 97, 71, 69, 1 ],
	'the files hold what SOURCE.md says: 8,056 events, 6,820 plays at 6,813 times, 97 users, 71 songs, 69 artists, 1 match');

# ---- the messages: log lines keyed by user (by session when logged out) ----
my $json = JSON::PP->new;
my @event_msgs;
for my $file (sort glob("$data/log_data/2018/11/*.json"))
{
	open my $fh, '<', $file or die "$file: $!";
	while (my $line = <$fh>)
	{
		chomp $line;
		next unless $line =~ /\S/;
		my $e = $json->decode($line);
		my $key = $e->{userId} ne '' ? $e->{userId} : "s$e->{sessionId}";
		push @event_msgs, "$key\t$line";
	}
	close $fh;
}
my @song_msgs;
for my $file (sort glob("$data/song_data/*/*/*/*.json"))
{
	my $text = slurp_file($file);
	$text =~ s/\n//g;
	push @song_msgs, $json->decode($text)->{song_id} . "\t$text";
}

# Malformed messages, each a dead letter: not JSON, a bad timestamp, ts or
# page missing, a non-integer session, a length no int of ms holds, a
# truncated object, a timestamp out of range; a song without an id.
my @bad_events = (
	'this is not JSON',
	'{"ts":"soon","userId":"1","page":"Home"}',
	'{"userId":"1","page":"NextSong"}',
	'{"ts":1541105830796,"userId":"1"}',
	'{"ts":1541105830796,"page":"Home","sessionId":"abc"}',
	'{"ts":1541105830796,"page":"NextSong","userId":"1","song":"x","length":1e300}',
	'{"ts":1541105830796,"page":"Home"',
	'{"ts":99999999999999999,"page":"Home"}');
my @bad_songs = ('{"title":"a song without an id","duration":100.0}');
my $every = int(@event_msgs / @bad_events);
for my $i (reverse 0 .. $#bad_events)
{
	splice @event_msgs, ($i + 1) * $every - 1, 0, "bad\t$bad_events[$i]";
}
splice @song_msgs, 30, 0, "bad\t$bad_songs[0]";

# ---- the database side ----
my $kafka = StreamKPI::Kafka->start('sparkify');
$kafka->create_topic('sparkify_events', 3);
$kafka->create_topic('sparkify_songs', 1);
# the test framework turns crash restarts off; a real server has them on
my $node = StreamKPI::Node->new_node('sparkify', timezone => "'UTC'",
	'streamkpi.late_horizon' => "'100 years'", restart_after_crash => 'on');
sub sq { return $node->safe_psql('postgres', $_[0]); }

my $bootstrap = $kafka->bootstrap;
sq(qq{CREATE SERVER kafka FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (brokers '$bootstrap');
	SELECT streamkpi.create_sparkify_pipelines('kafka', events_topic => 'sparkify_events',
		songs_topic => 'sparkify_songs', start => false);
	SELECT streamkpi.alter_pipeline('sparkify_events', batch_size => 500);
	SELECT streamkpi.create_sparkify_pipelines('kafka', events_topic => 'sparkify_events',
		songs_topic => 'sparkify_songs')});
is(sq(q{SELECT string_agg(name || ':' || enabled, ' ' ORDER BY name) FROM streamkpi.pipelines}),
	'sparkify_events:true sparkify_songs:true',
	'create_sparkify_pipelines(start => false) creates them stopped; a second call starts them');

sub produce_in_background
{
	my ($topic, @msgs) = @_;
	my ($fh, $file) = tempfile(DIR => $PostgreSQL::Test::Utils::tmp_check);
	print $fh "$_\n" for @msgs;
	close $fh;
	return IPC::Run::start([ $kafka->producer_command($topic, '-K', "\t",
		'-X', 'linger.ms=20', '-l', $file) ]);
}

# Events in four chunks; the worker dies during the second.
my $worker_pid = q{SELECT pid FROM streamkpi.pipeline_status
					WHERE pipeline = 'sparkify_events' AND state = 'running' LIMIT 1};
my $chunk = int(@event_msgs / 4) + 1;
for my $c (0 .. 3)
{
	my @part = grep { defined } @event_msgs[ $c * $chunk .. ($c + 1) * $chunk - 1 ];
	my $producer = produce_in_background('sparkify_events', @part);
	if ($c == 1)
	{
		$node->poll_query_until('postgres',
			"SELECT count(*) > 0 FROM streamkpi.app_events") or die 'no events arrive';
		$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($worker_pid) w")
		  or die 'no running events worker';
		my $pid = sq($worker_pid);
		kill 'KILL', $pid;
		note "killed the sparkify_events pipeline worker $pid with SIGKILL";
	}
	$producer->finish or die "kcat failed for chunk $c";
}
my $songs = produce_in_background('sparkify_songs', @song_msgs);
$songs->finish or die 'kcat failed for the songs';

my $caught_up = StreamKPI::Sparkify::caught_up_query();
ok($node->poll_query_until('postgres', $caught_up),
	'both pipelines catch up with the high watermarks after the crash');

# ---- counts ----
is(sq(q{SELECT concat_ws(' ',
		(SELECT count(*) FROM streamkpi.app_events),
		(SELECT count(*) FROM streamkpi.sparkify_songplays),
		(SELECT count(*) FROM streamkpi.sparkify_time),
		(SELECT count(*) FROM streamkpi.sparkify_users),
		(SELECT count(*) FROM streamkpi.sparkify_songs),
		(SELECT count(*) FROM streamkpi.sparkify_artists),
		(SELECT count(*) FROM streamkpi.sparkify_songplays WHERE song_id IS NOT NULL),
		(SELECT count(*) FROM streamkpi.user_churn_signals))}),
	join(' ', @want{qw(events songplays time users songs artists matched users)}),
	'app events, songplays, time rows, users, songs, artists, matched plays and churn rows as computed from the files');

is(sq(q{SELECT string_agg(payload_text, E'\n' ORDER BY payload_text) FROM (
		SELECT pipeline || ': ' || convert_from(payload, 'UTF8') AS payload_text
		  FROM streamkpi.dead_letters) d}),
	join("\n", sort((map { "sparkify_events: $_" } @bad_events), (map { "sparkify_songs: $_" } @bad_songs))),
	'each malformed message is a dead letter, and nothing else is');

# ---- every row against the files ----
sq(qq{
	CREATE TABLE x_events (event_time timestamptz, user_id text, session_id bigint,
		item_in_session int, page text, auth text, level text, method text, status int,
		location text, user_agent text, song text, artist text, length_ms int,
		first_name text, last_name text, gender text, registered_at timestamptz);
	CREATE TABLE x_songplays (start_time timestamptz, user_id text, level text, song_id text,
		artist_id text, session_id bigint, item_in_session int, location text, user_agent text);
	CREATE TABLE x_time (start_time timestamptz, hour int, day int, week int, month int,
		year int, weekday int);
	CREATE TABLE x_users (user_id text, first_name text, last_name text, gender text,
		level text, registered_at timestamptz);
	CREATE TABLE x_signals (user_id text, level text, registered_at timestamptz,
		first_event_at timestamptz, last_event_at timestamptz, days_registered int,
		sessions bigint, songs_played bigint, songs_per_session numeric, thumbs_up bigint,
		thumbs_down bigint, add_to_playlist bigint, add_friend bigint, roll_advert bigint,
		upgrades bigint, downgrades bigint, errors bigint, help_visits bigint,
		downgraded bool, churned bool, churned_at timestamptz, churned_on date);
	CREATE TABLE x_daily (day date, active_users bigint, paid_users bigint, free_users bigint,
		new_users bigint, upgrades bigint, downgrades bigint, cancellations bigint,
		churn_rate numeric);
	COPY x_events FROM '$expected_dir/events.tsv';
	COPY x_songplays FROM '$expected_dir/songplays.tsv';
	COPY x_time FROM '$expected_dir/time.tsv';
	COPY x_users FROM '$expected_dir/users.tsv';
	COPY x_signals FROM '$expected_dir/signals.tsv';
	COPY x_daily FROM '$expected_dir/daily.tsv';
});

sub same_rows { StreamKPI::Sparkify::same_rows($node, @_, 'the computation over the files'); return; }
same_rows('app_events', 'TABLE x_events', q{SELECT event_time, user_id, session_id, item_in_session,
	page, auth, level, method, status, location, user_agent, song, artist, length_ms,
	first_name, last_name, gender, registered_at FROM streamkpi.app_events});
same_rows('sparkify_songplays', 'TABLE x_songplays', q{SELECT start_time, user_id, level, song_id,
	artist_id, session_id, item_in_session, location, user_agent FROM streamkpi.sparkify_songplays});
same_rows('sparkify_time', 'TABLE x_time', q{SELECT * FROM streamkpi.sparkify_time});
same_rows('sparkify_users', 'TABLE x_users', q{SELECT user_id, first_name, last_name, gender, level,
	registered_at FROM streamkpi.sparkify_users});
same_rows('user_churn_signals', 'TABLE x_signals', q{SELECT user_id, level, registered_at,
	first_event_at, last_event_at, days_registered, sessions, songs_played, songs_per_session,
	thumbs_up, thumbs_down, add_to_playlist, add_friend, roll_advert, upgrades, downgrades,
	errors, help_visits, downgraded, churned, churned_at, churned_on
	FROM streamkpi.user_churn_signals});
same_rows('daily_churn', 'TABLE x_daily', q{SELECT day, active_users, paid_users, free_users,
	new_users, upgrades, downgrades, cancellations, churn_rate FROM streamkpi.daily_churn});

is(sq(q{SELECT s.title || ' by ' || a.name || ', played by user ' || p.user_id
		  FROM streamkpi.sparkify_songplays p
		  JOIN streamkpi.sparkify_songs s USING (song_id)
		  JOIN streamkpi.sparkify_artists a ON a.artist_id = p.artist_id}),
	'Setanta matins by Elena, played by user 15',
	'the one play the catalogue knows is matched to its song and artist, though the song came later');

# ---- the plays are listens, and the KPIs count them under genre unknown ----
is(sq(q{SELECT count(*) FILTER (WHERE l.action = 'play' AND l.ms_played = p.length_ms
							AND l.listened_at = p.start_time AND l.user_id = p.user_id
							AND l.track_id = p.track_id AND t.track_id IS NOT NULL)
		  FROM streamkpi.sparkify_songplays p
		  LEFT JOIN streamkpi.listens l ON l.event_id = 'sparkify:' || p.songplay_id
		  LEFT JOIN streamkpi.tracks t ON t.track_id = l.track_id}),
	$want{songplays}, 'every play is a listen of its track, at its time, for its length');
ok($node->poll_query_until('postgres', qq{
	SELECT sum(listen_count) = $want{songplays} FROM streamkpi.daily_genre_kpis WHERE genre = 'unknown'}),
	'the KPI worker counts every Sparkify play under genre unknown');

# ---- idempotent, and a clear error for a conflicting call ----
my $before = sq(q{SELECT string_agg(name || updated_at, ' ' ORDER BY name) FROM streamkpi.pipelines});
my $pid_before = sq($worker_pid);
sq(q{SELECT streamkpi.create_sparkify_pipelines('kafka', events_topic => 'sparkify_events',
		songs_topic => 'sparkify_songs')});
is(sq(q{SELECT string_agg(name || updated_at, ' ' ORDER BY name) FROM streamkpi.pipelines})
	  . ' ' . sq($worker_pid),
	"$before $pid_before", 'a second call changes nothing, and the worker keeps running');
my ($rc, $out, $err) = $node->psql('postgres', q{
	\set VERBOSITY verbose
	SELECT streamkpi.create_sparkify_pipelines('kafka', events_topic => 'other_events',
		songs_topic => 'sparkify_songs')});
like($err, qr/42710: foreign table streamkpi\.kafka_sparkify_events already reads topic "sparkify_events" on server "kafka"/,
	'a call for another topic names the conflict (42710)');

$node->stop;
done_testing();
