# Pipelines: creation checks, exactly-once ingestion with 1% malformed
# messages as dead letters, status and lag, stop/start/alter/drop, privileges.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use StreamKPI::Kafka;
use StreamKPI::Node;

my $kafka = StreamKPI::Kafka->start('pipeline');
$kafka->create_topic('events', 4);
my $node = StreamKPI::Node->new_node('main');
StreamKPI::Node::create_event_tables($node, $kafka->bootstrap, 'events');

# ---- checks at creation time ----
my %bad_statements = (
	'INSERT INTO events SELECT 1' =>
	  qr/must read exactly one streamkpi_kafka foreign table, not 0/,
	'INSERT INTO nosuch SELECT event_id FROM kafka_events' =>
	  qr/relation "nosuch" does not exist/,
	'INSERT INTO events (event_id) SELECT event_id FROM kafka_events; SELECT 1' =>
	  qr/runs exactly one SQL statement, not 2/,
	'CREATE TABLE x (a int)' => qr/must be SELECT, INSERT, UPDATE, DELETE or MERGE/,
	'INSERT INTO events (event_id) SELECT no_such_column FROM kafka_events' =>
	  qr/column "no_such_column" does not exist/,
);
for my $sql (sort keys %bad_statements)
{
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT streamkpi.create_pipeline('bad', \$\$$sql\$\$)");
	like($err, $bad_statements{$sql}, "create_pipeline rejects: $sql");
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM streamkpi.pipelines'),
	'0', 'rejected pipelines leave nothing behind');

$node->safe_psql('postgres', q{
	SELECT streamkpi.create_pipeline('ev',
		$$INSERT INTO events SELECT event_id, n, kpartition, koffset FROM kafka_events$$,
		batch_size => 500)});
my ($rc, $out, $err) = $node->psql('postgres', q{
	SELECT streamkpi.create_pipeline('ev', $$INSERT INTO events (event_id) SELECT event_id FROM kafka_events$$)});
like($err, qr/pipeline "ev" already exists/, 'a pipeline name is unique');

# ---- 2000 messages, 1% malformed in three ways ----
my (@lines, %bad_payload);
for my $i (1 .. 2000)
{
	my $line = qq({"event_id":"e$i","n":$i});
	if ($i % 100 == 0)
	{
		my $kind = ($i / 100) % 3;
		$line = $kind == 0 ? qq({"event_id":"e$i","n":$i)	# cut off: invalid JSON
		  : $kind == 1 ? qq({"event_id":"e$i","n":"many"})	# wrong type
		  : qq({"event_id":"e$i","n":-$i});					# violates CHECK (n >= 0)
		$bad_payload{$line} = $kind;
	}
	push @lines, "k$i\t$line";
}
$kafka->produce('events', \@lines, key_delimiter => "\t");

$node->safe_psql('postgres', "SELECT streamkpi.start_pipeline('ev')");
ok(StreamKPI::Node::wait_ingested($node, 'ev', 1980), 'the pipeline ingests every good message');
is($node->safe_psql('postgres', 'SELECT count(*), count(DISTINCT event_id), count(DISTINCT kpartition) FROM events'),
	'1980|1980|4', 'each good message exactly once, from all four partitions');

my %expected_offset;
for my $m ($kafka->consume('events'))
{
	$expected_offset{"$m->{partition}/$m->{offset}"} = $bad_payload{ $m->{payload} }
	  if exists $bad_payload{ $m->{payload} };
}
my @dead = split /\n/, $node->safe_psql('postgres', q{
	SELECT partition || '/' || "offset", convert_from(payload, 'UTF8'), sqlstate, error
	  FROM streamkpi.dead_letters WHERE pipeline = 'ev' AND topic = 'events' ORDER BY 1});
is(scalar @dead, 20, '20 dead letters');
my %reason_of_kind = (0 => qr/invalid JSON/, 1 => qr/column "n".*many/, 2 => qr/violates check constraint/);
my $matched = 0;
for my $d (@dead)
{
	my ($where, $payload, $sqlstate, $error) = split /\|/, $d, 4;
	next unless exists $expected_offset{$where} && exists $bad_payload{$payload};
	my $kind = $bad_payload{$payload};
	$matched++ if $error =~ $reason_of_kind{$kind} && $sqlstate =~ /^2[23]/;
}
is($matched, 20, 'each malformed message is a dead letter with its partition, offset, payload and reason');

is($node->safe_psql('postgres', q{
	SELECT count(*) FROM streamkpi.pipeline_status
	 WHERE pipeline = 'ev' AND state = 'running' AND lag = 0 AND committed_offset = high_watermark}),
	'4', 'status: running, four partitions, lag 0');
is($node->safe_psql('postgres', q{
	SELECT DISTINCT rows, dead_letters FROM streamkpi.pipeline_status WHERE pipeline = 'ev'}),
	'1980|20', 'status counts rows and dead letters');
like($node->safe_psql('postgres', q{
	SELECT DISTINCT backend_type FROM pg_stat_activity WHERE backend_type LIKE 'streamkpi%' ORDER BY 1}),
	qr/streamkpi launcher\nstreamkpi pipeline/, 'launcher and pipeline workers are in pg_stat_activity');

# ---- stop, start ----
$node->safe_psql('postgres', "SELECT streamkpi.stop_pipeline('ev')");
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'streamkpi pipeline'}),
	'a stopped pipeline has no worker');
StreamKPI::Node::produce_events($kafka, 'events', 3001, 3100);
sleep 2;
is($node->safe_psql('postgres', 'SELECT count(*) FROM events'), '1980', 'a stopped pipeline ingests nothing');
is($node->safe_psql('postgres', "SELECT DISTINCT state FROM streamkpi.pipeline_status WHERE pipeline = 'ev'"),
	'stopped', 'status says stopped');
$node->safe_psql('postgres', "SELECT streamkpi.start_pipeline('ev')");
ok(StreamKPI::Node::wait_ingested($node, 'ev', 2080), 'started again, it resumes where it stopped');

# ---- alter: the new statement applies to new messages only ----
$node->safe_psql('postgres', q{
	SELECT streamkpi.alter_pipeline('ev',
		statement => $$INSERT INTO events SELECT event_id, n * 10, kpartition, koffset FROM kafka_events$$)});
StreamKPI::Node::produce_events($kafka, 'events', 4001, 4010);
ok(StreamKPI::Node::wait_ingested($node, 'ev', 2090), 'an altered pipeline goes on');
is($node->safe_psql('postgres', q{SELECT sum(n) FROM events WHERE event_id IN ('e4001', 'e4010')}),
	'80110', 'the altered statement is used for new messages');
is($node->safe_psql('postgres', 'SELECT count(*), count(DISTINCT event_id) FROM events'),
	'2090|2090', 'still exactly once after the restart an alter causes');

# ---- privileges ----
$node->safe_psql('postgres', q{
	CREATE ROLE mallory LOGIN;
	CREATE ROLE alice LOGIN IN ROLE streamkpi_admin;
	GRANT USAGE ON FOREIGN SERVER kafka TO alice;
	GRANT SELECT ON kafka_events TO alice;
	GRANT INSERT ON events TO alice;
	GRANT USAGE ON SCHEMA streamkpi TO mallory});
($rc, $out, $err) = $node->psql('postgres', "SELECT streamkpi.stop_pipeline('ev')",
	extra_params => [ '-U', 'mallory' ]);
like($err, qr/permission denied for function stop_pipeline/, 'a role outside streamkpi_admin cannot manage pipelines');
($rc, $out, $err) = $node->psql('postgres', q{
	SELECT streamkpi.create_pipeline('alices', $$INSERT INTO events (event_id) SELECT event_id FROM kafka_events$$)},
	extra_params => [ '-U', 'alice' ]);
is($rc, 0, 'a member of streamkpi_admin creates a pipeline') or diag $err;
is($node->safe_psql('postgres', "SELECT owner FROM streamkpi.pipelines WHERE name = 'alices'"),
	'alice', 'and owns it');

# ---- drop ----
$node->safe_psql('postgres', "SELECT streamkpi.drop_pipeline('ev')");
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'streamkpi pipeline'}),
	'a dropped pipeline has no worker');
is($node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM streamkpi.pipelines WHERE name = 'ev')
		 + (SELECT count(*) FROM streamkpi.pipeline_offsets WHERE pipeline = 'ev')}),
	'0', 'its definition and offsets are gone');
($rc, $out, $err) = $node->psql('postgres', "SELECT streamkpi.start_pipeline('ev')");
like($err, qr/pipeline "ev" does not exist/, 'starting a dropped pipeline is an error');

$node->stop;
done_testing();
