# The broker stops for 30 s mid-stream: the pipeline's status shows the
# error while it is down, ingestion recovers when it is back, and nothing
# is lost or duplicated.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use StreamKPI::Kafka;
use StreamKPI::Node;

my $kafka = StreamKPI::Kafka->start('down');
$kafka->create_topic('events', 4);
my $node = StreamKPI::Node->new_node('down');
StreamKPI::Node::create_event_tables($node, $kafka->bootstrap, 'events');
$node->safe_psql('postgres', q{
	SELECT streamkpi.create_pipeline('ev',
		$$INSERT INTO events SELECT event_id, n, kpartition, koffset FROM kafka_events$$);
	SELECT streamkpi.start_pipeline('ev')});

StreamKPI::Node::produce_events($kafka, 'events', 1, 20000);
ok(StreamKPI::Node::wait_ingested($node, 'ev', 20000), 'ingesting before the broker stops');

$kafka->stop;
my $down_since = time;
ok($node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM streamkpi.pipeline_status
	 WHERE pipeline = 'ev' AND state = 'error' AND last_error IS NOT NULL}),
	'status shows the error while the broker is down');
note 'last error: ' . $node->safe_psql('postgres',
	q{SELECT DISTINCT last_error FROM streamkpi.pipeline_status WHERE pipeline = 'ev'});
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'streamkpi pipeline'}),
	'1', 'the worker keeps running while the broker is away');
sleep(30 - (time - $down_since)) if time - $down_since < 30;

$kafka->restart;
StreamKPI::Node::produce_events($kafka, 'events', 20001, 40000);
ok(StreamKPI::Node::wait_ingested($node, 'ev', 40000, 120), 'ingestion recovers after the broker is back');
is($node->safe_psql('postgres', 'SELECT count(*), count(DISTINCT event_id), min(n), max(n) FROM events'),
	'40000|40000|1|40000', 'no loss, no duplicates');
ok($node->poll_query_until('postgres', q{
	SELECT bool_and(state = 'running') FROM streamkpi.pipeline_status WHERE pipeline = 'ev'}),
	'status is back to running');

$node->stop;
done_testing();
