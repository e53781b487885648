# The soak with every fault at once.  SOAK_EVENTS listens (default
# 1,000,000; 1% malformed) are produced to 4 partitions in ten chunks while
# two pipelines (listens with two workers, and tracks) and the KPI worker
# run.  During the load: SIGKILL of the pipeline workers three times and of
# the KPI worker twice, SIGKILL of the postmaster once, and the broker
# stopped for SOAK_BROKER_STOP_SECONDS (default 30) and started again.
#
# Afterwards every good event is in streamkpi.listens exactly once, every
# malformed one is a dead letter, the committed offsets equal the high
# watermarks, and the KPI tables equal refresh_kpis() and an independent
# computation.  Each fault left a readable trace (pipeline_status, the
# server log), and the user mapping's secret appears nowhere.
use strict;
use warnings;

use Digest::MD5 qw(md5_hex);
use File::Temp qw(tempfile);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use StreamKPI::Kafka;
use StreamKPI::KPI;
use StreamKPI::Node;

my $total = $ENV{SOAK_EVENTS} // 1_000_000;
my $broker_stop = $ENV{SOAK_BROKER_STOP_SECONDS} // 30;
my $chunks = 10;
my $secret = 'soak-secret-7f3a9c';

my $kafka = StreamKPI::Kafka->start('soak');
$kafka->create_topic('listens', 4);
$kafka->create_topic('tracks', 1);
# restart_after_crash: a SIGKILLed worker makes the postmaster reinitialize,
# as in production (PostgreSQL::Test::Cluster turns it off by default)
my $node = StreamKPI::Node->new_node('soak', timezone => "'UTC'",
	restart_after_crash => 'on');
my $bootstrap = $kafka->bootstrap;
sub sq { return $node->safe_psql('postgres', $_[0]); }

# The user mapping carries a password the plaintext broker never asks for:
# it must not show up in any status, error or log line.  (The test's own
# statement would be logged by log_statement = all: not for this one.)
StreamKPI::Node::create_kpi_pipelines($node, $bootstrap);
sq(qq{
	SET log_statement = 'none';
	CREATE USER MAPPING FOR CURRENT_USER SERVER kafka
		OPTIONS (sasl_username 'soak', sasl_password '$secret');
	RESET log_statement;
	SELECT streamkpi.start_pipeline('tracks');
	SELECT streamkpi.start_pipeline('listens');
});

StreamKPI::Node::produce_tracks($kafka);
ok($node->poll_query_until('postgres', q{SELECT count(*) = 40 FROM streamkpi.tracks}),
	'tracks ingested');

# ---- the events: deterministic, 1% malformed in four ways ----------------
my $now = time;
sub iso_time
{
	my @t = gmtime($now - $_[0]);
	return sprintf('%04d-%02d-%02dT%02d:%02d:%02dZ', $t[5] + 1900, $t[4] + 1, @t[ 3, 2, 1, 0 ]);
}
my (@good_ids, @bad_payloads, $good_sum);
sub event_line
{
	my ($i) = @_;
	my $r = ($i * 2654435761) % 4294967296;
	my $line = sprintf(
		'{"event_id":"e%d","user_id":"u%d","track_id":"t%d","listened_at":"%s","ms_played":%s,"action":"%s","region":"%s","device":"%s"}',
		$i, 1 + ($r >> 7) % 200, 1 + ($r >> 11) % 45, iso_time(($r >> 5) % 21600),
		$r % 7 == 0 ? 'null' : 1000 + $r % 240000, (qw(play play play skip like))[ $r % 5 ],
		(qw(eu us af))[ ($r >> 3) % 3 ], ($r >> 13) % 2 ? 'web' : 'mobile');
	if ($i % 100 == 50)
	{
		my $kind = ($i / 100) % 4;
		$line = $kind == 0 ? substr($line, 0, 40)                    # invalid JSON
		  : $kind == 1 ? qq({"event_id":"e$i","user_id":"u1","track_id":"t1","listened_at":"2024-05-01T10:00:00Z","ms_played":"many"})
		  : $kind == 2 ? qq({"event_id":"e$i","user_id":null,"track_id":"t1","listened_at":"2024-05-01T10:00:00Z"})
		  : qq({"event_id":"e$i","user_id":"u\xff","track_id":"t1"});   # invalid UTF-8
		push @bad_payloads, $line;
		return $line;
	}
	push @good_ids, "e$i";
	$good_sum += $i;
	return $line;
}

my $per_chunk = int($total / $chunks);
my @files;
for my $c (0 .. $chunks - 1)
{
	my ($fh, $file) = tempfile(DIR => $PostgreSQL::Test::Utils::tmp_check);
	for my $i ($c * $per_chunk + 1 .. ($c + 1) * $per_chunk)
	{
		print $fh "e$i\t" . event_line($i) . "\n";
	}
	close $fh;
	push @files, $file;
}
# a few more, produced as soon as the broker is back, to see the recovery
my ($probe_fh, $probe_file) = tempfile(DIR => $PostgreSQL::Test::Utils::tmp_check);
print $probe_fh "e$_\t" . event_line($_) . "\n" for $chunks * $per_chunk + 1 .. $chunks * $per_chunk + 100;
close $probe_fh;
my $good = scalar @good_ids;
my $bad = scalar @bad_payloads;
note "$good good events and $bad malformed ones in $chunks chunks";

# ---- the faults ------------------------------------------------------------
sub pids_of
{
	my ($type) = @_;
	my $pids = '';
	$node->poll_query_until('postgres', qq{
		SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = '$type'});
	$pids = sq(qq{SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type = '$type'});
	return split / /, $pids;
}

my %done;
sub kill_workers
{
	my ($type) = @_;
	my @pids = pids_of($type);
	kill 'KILL', @pids;
	note "SIGKILL to $type: @pids";
	$done{$type}++;
	# the postmaster reinitializes; wait until it accepts connections again
	StreamKPI::Node::wait_for_connections($node) or die 'the server did not come back';
	return;
}

my %outage;
sub broker_outage
{
	$kafka->stop;
	my $until = time + $broker_stop;
	# what an operator sees meanwhile: the pipeline in state error, with a SQLSTATE
	$node->poll_query_until('postgres', q{
		SELECT count(*) > 0 FROM streamkpi.pipeline_status
		 WHERE pipeline = 'listens' AND state = 'error' AND last_sqlstate IS NOT NULL});
	$outage{status} = sq(q{SELECT state || ' ' || last_sqlstate || ' ' || last_error
		FROM streamkpi.pipeline_status WHERE pipeline = 'listens' AND state = 'error' LIMIT 1});
	note "during the broker outage: $outage{status}";
	sleep 1 while time < $until;
	$kafka->restart;
	my $back = time;
	IPC::Run::run([ $kafka->producer_command('listens', '-K', "\t", '-l', $probe_file) ])
	  or die 'kcat failed';
	local $PostgreSQL::Test::Utils::timeout_default = 300;
	$outage{recovered} = $node->poll_query_until('postgres', q{
		SELECT bool_and(state = 'running') FROM streamkpi.pipeline_status WHERE pipeline = 'listens'});
	note sprintf('the pipeline ran again %.1f s after the broker was back', time - $back);
	$done{broker}++;
	return;
}

sub kill_postmaster
{
	StreamKPI::Node::kill9_and_restart($node) or die 'the server did not start again';
	$done{postmaster}++;
	return;
}

my @faults = (
	sub { kill_workers('streamkpi pipeline') },
	sub { kill_workers('streamkpi kpi') },
	\&broker_outage,
	sub { kill_workers('streamkpi pipeline') },
	\&kill_postmaster,
	sub { kill_workers('streamkpi kpi') },
	sub { kill_workers('streamkpi pipeline') });

srand(20251205);
my $t0 = time;
my @producers;
for my $c (0 .. $chunks - 1)
{
	push @producers, IPC::Run::start([ $kafka->producer_command('listens', '-K', "\t",
		'-X', 'linger.ms=20', '-X', 'batch.num.messages=10000', '-l', $files[$c]) ],
		'>', \my $out, '2>', \my $err);
	if (my $fault = $faults[$c])
	{
		select(undef, undef, undef, 0.3 + rand(1.5));
		$fault->();
	}
}
$_->finish or die 'kcat failed' for @producers;
note sprintf('produced in %.0f s with the faults', time - $t0);
is_deeply(\%done, { 'streamkpi pipeline' => 3, 'streamkpi kpi' => 2, postmaster => 1, broker => 1 },
	'faults: pipeline workers killed 3 times, the KPI worker twice, the postmaster once, the broker stopped once');

# ---- afterwards ------------------------------------------------------------
my $offsets_at_watermarks = q{
	SELECT NOT EXISTS (
		SELECT FROM streamkpi.kafka_watermarks('kafka_listens') w
		LEFT JOIN streamkpi.pipeline_offsets o
		  ON o.pipeline = 'listens' AND o.partition = w.partition
		WHERE w.high <> coalesce(o.next_offset, w.low))};
{
	local $PostgreSQL::Test::Utils::timeout_default = 900;
	ok($node->poll_query_until('postgres', qq{
		SELECT (SELECT count(*) FROM streamkpi.listens) = $good
		   AND (SELECT count(*) FROM streamkpi.dead_letters WHERE pipeline = 'listens') = $bad
		   AND ($offsets_at_watermarks)}),
		'every event ingested or dead-lettered, and the offsets reached the high watermarks');
	note sprintf('ingested %.0f s after the start of the load', time - $t0);
	ok(StreamKPI::KPI::wait_applied($node, $good), 'the KPI worker applied every listen');
}
is(sq(q{SELECT count(*) || ' ' || count(DISTINCT event_id) || ' ' || sum(substr(event_id, 2)::bigint)
	FROM streamkpi.listens}), "$good $good $good_sum", 'every good event exactly once');
is(sq(q{SELECT md5(string_agg(event_id, ',' ORDER BY event_id COLLATE "C")) FROM streamkpi.listens}),
	md5_hex(join(',', sort @good_ids)), 'and exactly the good events');
is(sq(q{SELECT count(*) || ' ' || count(DISTINCT (partition, "offset")) FROM streamkpi.dead_letters
	WHERE pipeline = 'listens'}), "$bad $bad", 'every malformed event one dead letter');
is(sq(q{SELECT md5(string_agg(encode(payload, 'hex'), ',' ORDER BY encode(payload, 'hex')))
	FROM streamkpi.dead_letters WHERE pipeline = 'listens'}),
	md5_hex(join(',', sort map { unpack('H*', $_) } @bad_payloads)),
	'the dead letters hold exactly the malformed payloads');
is(sq(q{SELECT count(*) FROM streamkpi.dead_letters WHERE pipeline = 'listens' AND coalesce(error, '') = ''}),
	'0', 'each dead letter says what was wrong');
ok(sq($offsets_at_watermarks) eq 't', 'the committed offsets equal the high watermarks');
StreamKPI::KPI::check_all($node, 'after the soak');

# ---- what an operator saw --------------------------------------------------
like($outage{status} // '', qr/^error HV00N .*\S/,
	'during the outage pipeline_status showed state error, SQLSTATE HV00N and the reason');
ok($outage{recovered}, 'the pipeline recovered when the broker returned');
my $log = slurp_file($node->logfile);
like($log, qr/was terminated by signal 9/, 'the log names each SIGKILL');
like($log, qr/pipeline "listens" worker \d consumes Kafka topic "listens" from partition \d+ offset \d+/,
	'restarted workers log where they resume: topic, partition, offset');
like($log, qr/pipeline "listens" cannot consume Kafka topic "listens" at partition \d+ offset \d+/,
	'the outage is logged with topic, partition and offset');
like($log, qr/pipeline "listens" consumes Kafka topic "listens" again at partition \d+ offset \d+/,
	'and so is the recovery');
like($log, qr/pipeline "listens": \d+ messages? of Kafka topic "listens" went to streamkpi.dead_letters, the first at partition \d+ offset \d+:/,
	'dead letters are logged with topic, partition and offset');
my $status = sq(q{SELECT string_agg(concat_ws(' ', pipeline, state, last_sqlstate, last_error), E'\n')
	FROM streamkpi.pipeline_status});
my $letters = sq(q{SELECT string_agg(error, E'\n') FROM streamkpi.dead_letters});
ok(index($log, $secret) < 0 && index($status, $secret) < 0 && index($letters, $secret) < 0,
	'the user mapping secret is in no log line, status or dead letter');

done_testing();
