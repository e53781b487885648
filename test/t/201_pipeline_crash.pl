# Exactly once under crashes: 1,000,000 events over 4 partitions are
# produced while the pipeline runs; its worker is killed with SIGKILL three
# times and the postmaster once, at random moments.  Afterwards the table
# holds every event exactly once and the offsets equal the high watermarks.
use strict;
use warnings;

use File::Temp qw(tempfile);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use StreamKPI::Kafka;
use StreamKPI::Node;

my $total = 1_000_000;
my $chunks = 8;

my $kafka = StreamKPI::Kafka->start('crash');
$kafka->create_topic('events', 4);
# the test framework turns crash restarts off; a real server has them on
my $node = StreamKPI::Node->new_node('crash', restart_after_crash => 'on');
StreamKPI::Node::create_event_tables($node, $kafka->bootstrap, 'events');
$node->safe_psql('postgres', q{
	SELECT streamkpi.create_pipeline('ev',
		$$INSERT INTO events SELECT event_id, n, kpartition, koffset FROM kafka_events$$);
	SELECT streamkpi.start_pipeline('ev')});

my $worker_query = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'streamkpi pipeline'};

sub worker_pid
{
	$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($worker_query) w")
	  or die 'no pipeline worker';
	return $node->safe_psql('postgres', $worker_query);
}

# Produce a chunk in the background, so crashes happen mid-stream.
sub produce_chunk
{
	my ($from, $to) = @_;
	my ($fh, $file) = tempfile(DIR => $PostgreSQL::Test::Utils::tmp_check);
	print $fh qq(e$_\t{"event_id":"e$_","n":$_}\n) for $from .. $to;
	close $fh;
	return IPC::Run::start([ $kafka->producer_command('events', '-K', "\t",
		'-X', 'linger.ms=20', '-X', 'batch.num.messages=10000', '-l', $file) ]);
}

srand(20251122);
my @crashes = ('worker', 'worker', 'postmaster', 'worker');
my $per_chunk = $total / $chunks;
for my $c (0 .. $chunks - 1)
{
	my $producer = produce_chunk($c * $per_chunk + 1, ($c + 1) * $per_chunk);
	if ($c % 2 == 1 && @crashes)
	{
		my $what = shift @crashes;
		select(undef, undef, undef, 0.2 + rand(1.5));
		if ($what eq 'worker')
		{
			my $pid = worker_pid();
			kill 'KILL', $pid;
			note "killed pipeline worker $pid with SIGKILL";
		}
		else
		{
			$node->kill9;
			note 'killed the postmaster with SIGKILL';
			# its children notice and exit; then it can start again
			sleep 2;
			$node->start;
		}
	}
	$producer->finish or die "kcat failed for chunk $c";
}

ok(StreamKPI::Node::wait_ingested($node, 'ev', $total, 600),
	'after the crashes the pipeline catches up with the high watermarks');
is($node->safe_psql('postgres', 'SELECT count(*), count(DISTINCT event_id), count(DISTINCT kpartition) FROM events'),
	"$total|$total|4", 'the table holds each produced event once, from all four partitions');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM generate_series(1, $total) g
	 WHERE NOT EXISTS (SELECT FROM events e WHERE e.event_id = 'e' || g)}),
	'0', 'no event is missing');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM streamkpi.kafka_watermarks('kafka_events') w
	  JOIN streamkpi.pipeline_offsets o ON o.pipeline = 'ev' AND o.partition = w.partition
	 WHERE o.next_offset = w.high}),
	'4', 'the stored offsets equal the high watermarks of all four partitions');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM events e
	  JOIN streamkpi.pipeline_offsets o ON o.pipeline = 'ev' AND o.partition = e.kpartition
	 WHERE e.koffset >= o.next_offset}),
	'0', 'no row comes from beyond a stored offset');
is($node->safe_psql('postgres', 'SELECT count(*) FROM streamkpi.dead_letters'),
	'0', 'no dead letters');

$node->stop;
done_testing();
