# Kafka foreign tables when no broker answers: every operation ends with an
# ERROR within streamkpi.kafka_timeout, statement_timeout and Ctrl-C
# (pg_cancel_backend) interrupt it at once, and 100 failing queries leave
# no librdkafka thread behind.  Needs no broker: the port is closed.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('timeout');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'streamkpi'\nsearch_path = 'public'");
$node->start;

# a port nobody listens on
my $port = PostgreSQL::Test::Cluster::get_free_port();
$node->safe_psql('postgres', qq{
	CREATE EXTENSION streamkpi CASCADE;
	CREATE SERVER down FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (brokers '127.0.0.1:$port');
	CREATE FOREIGN TABLE down_t (a text, k text OPTIONS (meta 'key')) SERVER down OPTIONS (topic 'x');
});

sub timed
{
	my ($sql) = @_;
	my $t0 = time;
	my ($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return ($rc, $err, time - $t0);
}

my ($rc, $err, $secs) = timed(q{SET streamkpi.kafka_timeout = '2s'; SELECT * FROM down_t});
like($err, qr/ERROR:  HV00N: could not fetch metadata of Kafka topic "x" within 2000 ms/,
	'a scan with the broker down fails with HV00N');
like($err, qr/DETAIL:  Last broker error: .*Connection refused/, 'the detail says why');
ok($secs >= 1.9 && $secs < 6, "after the timeout ($secs s)");

($rc, $err, $secs) = timed(q{SET streamkpi.kafka_timeout = '1s'; INSERT INTO down_t VALUES ('a', 'k')});
like($err, qr/ERROR:  HV00N: could not fetch metadata of Kafka topic "x" within 1000 ms/,
	'an INSERT with the broker down fails too');
ok($secs < 5, "also bounded ($secs s)");

($rc, $err, $secs) = timed(q{SET streamkpi.kafka_timeout = '1s'; SELECT * FROM streamkpi.kafka_watermarks('down_t')});
like($err, qr/ERROR:  HV00N: could not fetch metadata/, 'kafka_watermarks fails within the timeout');
($rc, $err, $secs) = timed(q{SET streamkpi.kafka_timeout = '1s'; SELECT * FROM streamkpi.kafka_topics('down')});
like($err, qr/ERROR:  HV00N: could not list Kafka topics within 1000 ms/, 'kafka_topics too');

($rc, $err, $secs) = timed(q{SET streamkpi.kafka_timeout = '60s'; SET statement_timeout = '500ms';
	SELECT * FROM down_t});
like($err, qr/ERROR:  57014: canceling statement due to statement timeout/,
	'statement_timeout interrupts a wait for the broker');
ok($secs < 3, "promptly ($secs s)");

# Ctrl-C: cancel a query that would wait 60 s
my ($in, $out, $err2) = ('', '', '');
my $t0 = time;
my $h = IPC::Run::start(
	[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c',
		"SET application_name = 'cancel_me'; SET streamkpi.kafka_timeout = '60s'; SELECT * FROM down_t" ],
	'<', \$in, '>', \$out, '2>', \$err2);
$node->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'cancel_me' AND state = 'active'})
  or die 'the query did not start';
sleep 1;
$node->safe_psql('postgres',
	q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'cancel_me'});
$h->finish;
like($err2, qr/ERROR:  canceling statement due to user request/, 'pg_cancel_backend interrupts the wait');
ok(time - $t0 < 10, 'within seconds, not after the 60 s timeout');

# 100 failing queries in one backend: thread count and memory stay flat
my $res = $node->safe_psql('postgres', q{
	SET streamkpi.kafka_timeout = '100ms';
	SELECT count(*) FROM pg_ls_dir('/proc/' || pg_backend_pid() || '/task');
	DO $$ BEGIN BEGIN PERFORM * FROM down_t; EXCEPTION WHEN OTHERS THEN NULL; END; END $$;
	SELECT sum(total_bytes) FROM pg_backend_memory_contexts;
	DO $$ BEGIN
	  FOR i IN 1 .. 100 LOOP
	    BEGIN PERFORM * FROM down_t; EXCEPTION WHEN OTHERS THEN NULL; END;
	  END LOOP;
	END $$;
	SELECT count(*) FROM pg_ls_dir('/proc/' || pg_backend_pid() || '/task');
	SELECT sum(total_bytes) FROM pg_backend_memory_contexts;
});
my ($t_before, $m_before, $t_after, $m_after) = split /\n/, $res;
is($t_before, 1, 'one thread before');
is($t_after, 1, 'one thread after 100 failed queries');
cmp_ok($m_after - $m_before, '<', 256 * 1024, 'memory flat (grew ' . ($m_after - $m_before) . ' bytes)');

done_testing();
