# Kafka foreign tables against a broker that requires SASL/PLAIN: wrong
# credentials in a user mapping are an ERROR with SQLSTATE 28000 long
# before streamkpi.kafka_timeout, for scans, inserts and the SQL
# functions, and the password appears in no error and no server log line;
# the right credentials read and write rows.  Also: an unknown topic is an
# ERROR in bounded time.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use StreamKPI::Kafka;

my $good = 'alice-Pw-7f3e';
my $wrong = 'wrong-Pw-c41d';
my $kafka = StreamKPI::Kafka->start('auth', sasl_users => { alice => $good });
my $sasl = $kafka->sasl_bootstrap;
ok($sasl, "the broker has a SASL_PLAINTEXT listener ($sasl)");

$kafka->create_topic('secure', 2);
$kafka->produce('secure', [ map { qq({"n":$_}) } 1 .. 10 ], partition => 0);

my $node = PostgreSQL::Test::Cluster->new('auth');
$node->init;
$node->append_conf('postgresql.conf', join("\n",
	"shared_preload_libraries = 'streamkpi'", "search_path = 'public'",
	# our own messages at every level; statements (which PostgreSQL logs
	# verbatim, passwords included) only when they fail
	'log_min_messages = debug1', "log_statement = 'none'",
	"log_min_error_statement = 'error'", ''));
$node->start;
$node->safe_psql('postgres', qq{
	CREATE EXTENSION streamkpi CASCADE;
	CREATE SERVER secure FOREIGN DATA WRAPPER streamkpi_kafka
	  OPTIONS (brokers '$sasl', security_protocol 'SASL_PLAINTEXT', sasl_mechanism 'PLAIN');
	CREATE USER MAPPING FOR CURRENT_USER SERVER secure
	  OPTIONS (sasl_username 'alice', sasl_password '$wrong');
	CREATE FOREIGN TABLE secure (n int, p int OPTIONS (meta 'partition'))
	  SERVER secure OPTIONS (topic 'secure');
	CREATE FOREIGN TABLE nosuch (n int) SERVER secure OPTIONS (topic 'nosuch');
});

sub timed
{
	my ($sql) = @_;
	my $t0 = time;
	my ($rc, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSET streamkpi.kafka_timeout = '20s';\n$sql");
	return ($out, $err, time - $t0);
}

# --- wrong password -----------------------------------------------------------
for my $case (
	[ 'a scan', 'SELECT * FROM secure' ],
	[ 'an INSERT', q{INSERT INTO secure (n) VALUES (1)} ],
	[ 'kafka_watermarks', q{SELECT * FROM streamkpi.kafka_watermarks('secure')} ],
	[ 'kafka_topics', q{SELECT * FROM streamkpi.kafka_topics('secure')} ])
{
	my ($what, $sql) = @$case;
	my ($out, $err, $secs) = timed($sql);
	like($err, qr/ERROR:  28000: /, "$what with a wrong password: ERROR with SQLSTATE 28000");
	like($err, qr/[Aa]uthentication/, "$what: the message says authentication failed");
	ok($secs < 10, "$what: fails at once, not after the 20 s timeout ($secs s)");
	unlike($err, qr/\Q$wrong\E/, "$what: the password is not in the error");
	is($out, '', "$what: no rows");
}

# --- right password -------------------------------------------------------------
$node->safe_psql('postgres',
	"ALTER USER MAPPING FOR CURRENT_USER SERVER secure OPTIONS (SET sasl_password '$good')");
is($node->safe_psql('postgres', 'SELECT count(*), sum(n) FROM secure'), '10|55',
	'with the right password the scan returns the rows');
$node->safe_psql('postgres', 'INSERT INTO secure (n, p) SELECT i, 1 FROM generate_series(11, 15) i');
is($node->safe_psql('postgres', 'SELECT count(*), sum(n) FROM secure WHERE p = 1'), '5|65',
	'and INSERT produces');

# --- unknown topic -------------------------------------------------------------
my ($out, $err, $secs) = timed('SELECT * FROM nosuch');
like($err, qr/ERROR:  HV00R: Kafka topic "nosuch" does not exist/, 'an unknown topic is an ERROR');
ok($secs < 10, "at once, not after the 20 s timeout ($secs s)");

# --- nothing secret in the server log ------------------------------------------
my $log = slurp_file($node->logfile);
like($log, qr/28000|[Aa]uthentication/, 'the server log has the failures');
unlike($log, qr/\Q$wrong\E/, 'but not the wrong password');
unlike($log, qr/\Q$good\E/, 'nor the right one');

done_testing();
