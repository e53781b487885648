# Upsert pipelines for compacted dimension topics: a plain
# INSERT ... ON CONFLICT DO UPDATE over batches in which one key appears
# several times ends with the newest version of every key, without dead
# letters, and later versions update the table.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use StreamKPI::Kafka;
use StreamKPI::Node;

my $kafka = StreamKPI::Kafka->start('upsert');
$kafka->create_topic('tracks', 2, 'cleanup.policy' => 'compact');
my $node = StreamKPI::Node->new_node('main');
my $bootstrap = $kafka->bootstrap;
$node->safe_psql('postgres', qq{
	CREATE SERVER kafka FOREIGN DATA WRAPPER streamkpi_kafka
		OPTIONS (brokers '$bootstrap');
	CREATE FOREIGN TABLE kafka_tracks (track_id text, genre text, version int)
		SERVER kafka OPTIONS (topic 'tracks', format 'json');
	CREATE TABLE dim_tracks (track_id text PRIMARY KEY, genre text NOT NULL,
							 version int NOT NULL);
	SELECT streamkpi.create_pipeline('tracks', \$\$
		INSERT INTO dim_tracks SELECT track_id, genre, version FROM kafka_tracks
		ON CONFLICT (track_id) DO UPDATE
		   SET genre = excluded.genre, version = excluded.version\$\$,
		batch_size => 1000, batch_ms => 500);
});

# 300 tracks, each in 5 versions; versions of one key are interleaved with
# other keys, so a batch holds several versions of most keys.
my (%newest, @lines);
my @genres = qw(rock pop jazz folk metal);
for my $version (1 .. 5)
{
	for my $t (1 .. 300)
	{
		my $genre = $genres[ ($t + $version) % 5 ];
		push @lines, qq(t$t\t{"track_id":"t$t","genre":"$genre","version":$version});
		$newest{"t$t"} = "$genre|$version";
	}
}
$kafka->produce('tracks', \@lines, key_delimiter => "\t");
$node->safe_psql('postgres', "SELECT streamkpi.start_pipeline('tracks')");

my $caught_up = q{
	SELECT NOT EXISTS (
		SELECT FROM streamkpi.kafka_watermarks('kafka_tracks') w
		LEFT JOIN streamkpi.pipeline_offsets o
		  ON o.pipeline = 'tracks' AND o.partition = w.partition
		WHERE w.high > coalesce(o.next_offset, w.low))};
ok($node->poll_query_until('postgres', $caught_up), 'the upsert pipeline reaches the end of the topic');

sub table_as_hash
{
	my %h = map { my ($k, $v) = split /\|/, $_, 2; ($k => $v) }
	  split /\n/, $node->safe_psql('postgres',
		'SELECT track_id, genre || \'|\' || version FROM dim_tracks ORDER BY 1');
	return \%h;
}
is_deeply(table_as_hash(), \%newest, 'every track holds its newest version');
is($node->safe_psql('postgres', "SELECT count(*) FROM streamkpi.dead_letters WHERE pipeline = 'tracks'"),
	'0', 'several versions of a key in one batch are no dead letters');
is($node->safe_psql('postgres', q{
	SELECT sum(next_offset) FROM streamkpi.pipeline_offsets WHERE pipeline = 'tracks'}),
	'1500', 'offsets cover all 1500 messages');

# a later version of a few tracks, and a message that breaks NOT NULL
my @update = map { qq(t$_\t{"track_id":"t$_","genre":"ambient","version":6}) } 1 .. 10;
push @update, qq(t11\t{"track_id":"t11","version":7});
$kafka->produce('tracks', \@update, key_delimiter => "\t");
$newest{"t$_"} = 'ambient|6' for 1 .. 10;
ok($node->poll_query_until('postgres', $caught_up), 'the updates are ingested');
is_deeply(table_as_hash(), \%newest, 'later versions update the table; the bad one changes nothing');
like($node->safe_psql('postgres', q{
	SELECT sqlstate || ' ' || error FROM streamkpi.dead_letters WHERE pipeline = 'tracks'}),
	qr/^23502 .*null value in column "genre"/, 'the message without a genre is a dead letter');

$node->stop;
$kafka->stop;
done_testing();
