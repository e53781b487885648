# Two PostgreSQL servers run the same pipeline with one group_id: Kafka's
# group protocol splits the four partitions between them, and the union of
# their tables is the produced set with no overlap.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use StreamKPI::Kafka;
use StreamKPI::Node;

my $kafka = StreamKPI::Kafka->start('group');
$kafka->create_topic('events', 4);

my @nodes;
for my $name ('east', 'west')
{
	my $node = StreamKPI::Node->new_node($name);
	StreamKPI::Node::create_event_tables($node, $kafka->bootstrap, 'events');
	$node->safe_psql('postgres', q{
		SELECT streamkpi.create_pipeline('ev',
			$$INSERT INTO events SELECT event_id, n, kpartition, koffset FROM kafka_events$$,
			group_id => 'streamkpi-test-group');
		SELECT streamkpi.start_pipeline('ev')});
	push @nodes, $node;
}

# both members joined: together they own four distinct partitions
my $owned = q{SELECT count(DISTINCT partition) FROM streamkpi.pipeline_status WHERE partition IS NOT NULL};
ok(poll_until(sub {
	my @parts = map { $_->safe_psql('postgres', $owned) } @nodes;
	return $parts[0] > 0 && $parts[1] > 0 && $parts[0] + $parts[1] == 4;
}), 'the group split the partitions between the two servers');

my $total = 40000;
StreamKPI::Node::produce_events($kafka, 'events', 1, $total);

ok(poll_until(sub {
	my $sum = 0;
	$sum += $_->safe_psql('postgres', 'SELECT count(*) FROM events') for @nodes;
	return $sum >= $total;
}), 'the two servers ingest everything between them');
sleep 2;	# anything extra would show now

my (%seen, $overlap, $rows);
for my $node (@nodes)
{
	for my $id (split /\n/, $node->safe_psql('postgres', 'SELECT event_id FROM events'))
	{
		$rows++;
		$overlap++ if $seen{$id}++;
	}
}
is($rows, $total, "the union holds $total rows");
is($overlap // 0, 0, 'no event was ingested by both servers');
is(scalar(keys %seen), $total, 'every produced event is in one of them');
my @p = map { $_->safe_psql('postgres', q{SELECT string_agg(DISTINCT kpartition::text, ',') FROM events}) } @nodes;
note "east read partitions $p[0], west read partitions $p[1]";
ok($p[0] ne '' && $p[1] ne '', 'both servers ingested a share');

$_->stop for @nodes;
done_testing();

sub poll_until
{
	my ($check) = @_;
	for (1 .. 1200)
	{
		return 1 if $check->();
		select(undef, undef, undef, 0.1);
	}
	return 0;
}
