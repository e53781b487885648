# PostgreSQL nodes with streamkpi preloaded, and the Kafka objects the
# pipeline tests share.
#
#   my $node = StreamKPI::Node->new_node('main');
#   StreamKPI::Node::create_event_tables($node, $kafka->bootstrap, 'events');
#   my @lines = StreamKPI::Node::event_lines(1, 1000);   # e1 .. e1000
#   StreamKPI::Node::create_kpi_pipelines($node, $kafka->bootstrap, batch_size => 500);
#   StreamKPI::Node::produce_tracks($kafka);             # t1 .. t40 in 5 genres
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

# Wait until the server accepts connections again, say after a crash
# restart (poll_query_until dies when psql finds the server going away).
sub wait_for_connections
{
	my ($node) = @_;
	for (1 .. 600)
	{
		my $ok = eval { $node->safe_psql('postgres', 'SELECT 1') eq '1' };
		return 1 if $ok;
		select(undef, undef, undef, 0.2);
	}
	return 0;
}

# SIGKILL the postmaster and start it again; true when it started.
sub kill9_and_restart
{
	my ($node) = @_;
	$node->kill9;
	# orphaned backends keep the old shared memory until they notice; retry
	# (a failed start leaves the old pid in the node object: forget it)
	for (1 .. 60)
	{
		sleep 1;
		return 1 if $node->start(fail_ok => 1);
		$node->{_pid} = undef;
	}
	return 0;
}

# Server "kafka", foreign tables over topics listens, tracks and users, and
# the pipelines that feed streamkpi.listens (two workers), tracks (upsert)
# and users; none started.
sub create_kpi_pipelines
{
	my ($node, $bootstrap, %opt) = @_;
	my $batch_size = $opt{batch_size} // 2000;
	$node->safe_psql('postgres', qq{
		CREATE SERVER kafka FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (brokers '$bootstrap');
		CREATE FOREIGN TABLE kafka_listens (event_id text, user_id text, track_id text,
			listened_at timestamptz, ms_played int, action text, region text, device text)
			SERVER kafka OPTIONS (topic 'listens', format 'json');
		CREATE FOREIGN TABLE kafka_tracks (track_id text, track_name text, genre text, duration_ms int)
			SERVER kafka OPTIONS (topic 'tracks', format 'json');
		CREATE FOREIGN TABLE kafka_users (user_id text, age int, country text, subscription text)
			SERVER kafka OPTIONS (topic 'users', format 'json');
		SELECT streamkpi.create_pipeline('listens',
			\$\$INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played,
				action, region, device)
			  SELECT event_id, user_id, track_id, listened_at, ms_played, action, region, device
				FROM kafka_listens\$\$, batch_size => $batch_size, batch_ms => 100, parallelism => 2);
		SELECT streamkpi.create_pipeline('tracks',
			\$\$INSERT INTO streamkpi.tracks (track_id, track_name, genre, duration_ms)
			  SELECT track_id, track_name, genre, duration_ms FROM kafka_tracks
			  ON CONFLICT (track_id) DO UPDATE SET genre = excluded.genre\$\$);
		SELECT streamkpi.create_pipeline('users',
			\$\$INSERT INTO streamkpi.users (user_id, age, country, subscription)
			  SELECT user_id, age, country, subscription FROM kafka_users
			  ON CONFLICT (user_id) DO NOTHING\$\$);
	});
	return;
}

# 40 tracks in 5 genres on topic tracks (t41 .. t45 of the listens stay unknown)
sub produce_tracks
{
	my ($kafka) = @_;
	return $kafka->produce('tracks', [ map {
		my $g = (qw(rock pop jazz folk metal))[ $_ % 5 ];
		qq({"track_id":"t$_","track_name":"track $_","genre":"$g","duration_ms":@{[ 100000 + $_ * 1000 ]}})
	} 1 .. 40 ]);
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
