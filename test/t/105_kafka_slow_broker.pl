# Producing to a broker that is slow but alive, and to one that stops
# answering mid-statement.  streamkpi.kafka_timeout bounds how long the
# producer waits without any acknowledgement, not how long a large INSERT
# may take: a slow broker (frozen five sixths of the time) that needs longer than
# the timeout for the whole statement still gets every row exactly once, and a
# frozen broker (SIGSTOP) fails the statement with HV00N about one timeout
# after its last acknowledgement.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use StreamKPI::Kafka;

my $kafka = StreamKPI::Kafka->start('slow');
my $node = PostgreSQL::Test::Cluster->new('slow');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'streamkpi'\nsearch_path = 'public'");
$node->start;

my $bootstrap = $kafka->bootstrap;
$kafka->create_topic('big', 2);
$node->safe_psql('postgres', qq{
	CREATE EXTENSION streamkpi CASCADE;
	CREATE SERVER kafka FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (brokers '$bootstrap');
	CREATE FOREIGN TABLE big (n int, pad text) SERVER kafka OPTIONS (topic 'big', format 'json');
});

# A broker frozen 0.25 s of every 0.3 s, as on a saturated machine: slow,
# but it acknowledges something several times a second, well within the
# timeout of 2 s.  1,000,000 rows queue faster than it takes them.
my $rows = 1000000;
my $slow = $kafka->throttle(0.25, 0.05);
my $t0 = time;
my ($rc, $out, $err) = $node->psql('postgres', qq{
	SET streamkpi.kafka_timeout = '2s';
	INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, $rows) g;
});
my $secs = time - $t0;
$slow->stop;
is($rc, 0, 'an INSERT to a slow broker succeeds') or diag($err);
# a precondition, not a speed check: otherwise this test would not test
# a statement that lasts longer than the timeout
cmp_ok($secs, '>', 4, sprintf('the slow broker made it last longer than twice the timeout (%.1f s)', $secs));
is( $node->safe_psql('postgres',
		q{SELECT count(*), count(DISTINCT n), min(n), max(n) FROM big}),
	"$rows|$rows|1|$rows", 'every row is in the topic once');
is($node->safe_psql('postgres', q{SELECT sum(high) FROM streamkpi.kafka_watermarks('big')}),
	$rows, 'and nothing else (the high watermarks add up to the rows)');

# The broker stops answering during a large INSERT: the statement fails
# within about one timeout of the last acknowledgement.
$slow = $kafka->throttle(0.25, 0.05);
my ($in, $iout, $ierr) = ('', '', '');
my $h = IPC::Run::start(
	[ 'psql', '-X', '-d', $node->connstr('postgres'), '-v', 'VERBOSITY=verbose', '-c',
		"SET application_name = 'frozen'; SET streamkpi.kafka_timeout = '2s';
		 INSERT INTO big SELECT g, repeat('y', 100) FROM generate_series(1, 3000000) g" ],
	'<', \$in, '>', \$iout, '2>', \$ierr, IPC::Run::timeout(120));
$node->poll_query_until('postgres', qq{
	SELECT (SELECT count(*) FROM pg_stat_activity
			WHERE application_name = 'frozen' AND state = 'active') = 1
	   AND (SELECT sum(high) FROM streamkpi.kafka_watermarks('big')) > $rows + 1000})
  or die "the INSERT did not start delivering: $ierr";
$slow->stop;
$kafka->pause;
my $paused_at = time;
$h->finish;
my $waited = time - $paused_at;
$kafka->resume;
like($ierr, qr/ERROR:  HV00N: could not deliver messages to Kafka topic "big" within 2000 ms/,
	'a broker that stops answering fails the INSERT with HV00N');
cmp_ok($waited, '<', 15, sprintf('within seconds of the broker freezing (%.1f s), not never', $waited));

# a new INSERT works once the broker answers again
$node->safe_psql('postgres', q{ALTER SYSTEM SET streamkpi.kafka_timeout = '10s'; SELECT pg_reload_conf()});
is($node->safe_psql('postgres', q{INSERT INTO big VALUES (-1, 'after'); SELECT count(*) FROM big WHERE pad = 'after'}),
	'1', 'producing works again after the broker resumed');

done_testing();
