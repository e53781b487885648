# The real Apache Kafka broker the other tests use: messages produced with
# kcat are read back unchanged, per partition and in order, also after the
# broker restarts.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use StreamKPI::Kafka;

my $kafka = StreamKPI::Kafka->start('broker');
like($kafka->bootstrap, qr/^127\.0\.0\.1:\d+$/, 'the broker listens on 127.0.0.1');

$kafka->create_topic('carried', 3);

my %sent;
for my $p (0 .. 2)
{
	my @lines = map { qq({"partition":$p,"seq":$_,"text":"m\\u00e9ssage $_"}) } 1 .. 100;
	$kafka->produce('carried', \@lines, partition => $p);
	$sent{$p} = \@lines;
}

my @got = $kafka->consume('carried');
is(scalar @got, 300, '300 messages produced with kcat are read back');
for my $p (0 .. 2)
{
	my @in_p = grep { $_->{partition} == $p } @got;
	is_deeply([ map { $_->{payload} } @in_p ], $sent{$p},
		"partition $p holds its 100 messages in order");
	is_deeply([ map { $_->{offset} } @in_p ], [ 0 .. 99 ],
		"partition $p has offsets 0..99");
}

$kafka->produce('carried', [ "k1\tv1", "k2\tv2" ], partition => 1, key_delimiter => "\t");
my @keyed = grep { $_->{partition} == 1 && $_->{offset} >= 100 } $kafka->consume('carried');
is_deeply([ map { [ $_->{key}, $_->{payload} ] } @keyed ],
	[ [ 'k1', 'v1' ], [ 'k2', 'v2' ] ], 'keys and values are carried apart');

my $address = $kafka->bootstrap;
$kafka->stop;
ok(!$kafka->is_running, 'the broker stops');
$kafka->restart;
is($kafka->bootstrap, $address, 'a restarted broker keeps its address');
my @after = $kafka->consume('carried');
is(scalar @after, 302, 'messages survive a broker restart');

done_testing();
