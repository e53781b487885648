# PostgreSQL nodes with streamkpi preloaded, and the Kafka objects the
# pipeline tests share.
#
#   my $node = StreamKPI::Node->new_node('main');
#   StreamKPI::Node::create_event_tables($node, $kafka->bootstrap, 'events');
#   my @lines = StreamKPI::Node::event_lines(1, 1000);   # e1 .. e1000
package StreamKPI::Node;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

# A started node with streamkpi (and hll) installed in database postgres.
sub new_node
{
	my ($class, $name, %conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', join("\n",
		"shared_preload_libraries = 'streamkpi'",
		"streamkpi.database = 'postgres'",
		'max_worker_processes = 32',
		'log_min_messages = warning',
		(map { "$_ = $conf{$_}" } sort keys %conf), ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION streamkpi CASCADE');
	return $node;
}

# Server "kafka", foreign table kafka_events over $topic, and a plain target
# table events (no unique key, so a duplicate would show).
sub create_event_tables
{
	my ($node, $bootstrap, $topic) = @_;
	$node->safe_psql('postgres', qq{
		CREATE SERVER kafka FOREIGN DATA WRAPPER streamkpi_kafka
			OPTIONS (brokers '$bootstrap');
		CREATE FOREIGN TABLE kafka_events (
			event_id text, n int,
			kpartition int OPTIONS (meta 'partition'),
			koffset bigint OPTIONS (meta 'offset')
		) SERVER kafka OPTIONS (topic '$topic', format 'json');
		CREATE TABLE events (event_id text NOT NULL, n int CHECK (n >= 0),
							 kpartition int, koffset bigint);
	});
	return;
}

sub event_lines
{
	my ($from, $to) = @_;
	return map { qq({"event_id":"e$_","n":$_}) } $from .. $to;
}

# Produce events e$from .. e$to keyed by event id, so that they spread over
# the topic's partitions.
sub produce_events
{
	my ($kafka, $topic, $from, $to) = @_;
	return $kafka->produce($topic, [ map { qq(e$_\t{"event_id":"e$_","n":$_}) } $from .. $to ],
		key_delimiter => "\t");
}

# Wait until the pipeline's committed offsets reach the topic's high
# watermarks and the target table holds $rows rows.
sub wait_ingested
{
	my ($node, $pipeline, $rows, $timeout) = @_;
	$timeout //= $PostgreSQL::Test::Utils::timeout_default;
	my $query = qq{
		SELECT (SELECT count(*) FROM events) = $rows
		   AND NOT EXISTS (
				SELECT FROM streamkpi.kafka_watermarks('kafka_events') w
				LEFT JOIN streamkpi.pipeline_offsets o
				  ON o.pipeline = '$pipeline' AND o.partition = w.partition
				WHERE w.high > coalesce(o.next_offset, w.low))};
	local $PostgreSQL::Test::Utils::timeout_default = $timeout;
	return $node->poll_query_until('postgres', $query);
}

1;
