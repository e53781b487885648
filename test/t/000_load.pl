# The extension loads with and without shared_preload_libraries, and what
# needs preloading says so with a hint.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('plain');
$node->init;
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION streamkpi CASCADE');
like($node->safe_psql('postgres', 'SELECT streamkpi.version()'),
	qr/^streamkpi 0\.1, librdkafka \d+\.\d+\.\d+$/,
	'version() works without preloading');

my ($rc, $out, $err) = $node->psql('postgres', 'SELECT * FROM streamkpi.workers()');
isnt($rc, 0, 'workers() fails without preloading');
like($err, qr/ERROR:  streamkpi\.workers\(\) requires streamkpi to be loaded via shared_preload_libraries/,
	'the error names what is missing');
like($err, qr/HINT:  Add streamkpi to shared_preload_libraries in postgresql\.conf and restart the server\./,
	'the error has a hint');

# Preloaded: the launcher appears and is restarted when it dies.
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'streamkpi'");
$node->restart;

my $launcher_query = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'streamkpi launcher'};
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($launcher_query) l"),
	'the launcher runs after a restart with preloading');
my $pid = $node->safe_psql('postgres', $launcher_query);
is($node->safe_psql('postgres', q{SELECT pid FROM streamkpi.workers() WHERE kind = 'launcher'}),
	$pid, 'workers() reports the launcher pid');

# SIGTERM makes it exit with an error; the postmaster starts it again
kill 'TERM', $pid;
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM ($launcher_query) l WHERE pid <> $pid"),
	'a terminated launcher is started again');

$node->stop;
done_testing();
