# Hostile input inside a real backend.  Random mutations (bit flips,
# truncations, length-field edits, inserted and deleted bytes) of valid
# values and messages, with a fixed seed:
#  - topn values in the binary form (topn_recv, reached through binary
#    parameters of the extended protocol) and in the text form (topn_in):
#    each one loads, or fails with invalid binary representation (22P03) /
#    invalid text representation (22P02);
#  - JSON and CSV messages through Kafka foreign tables with an error
#    column: each one is a row or an error row, and a JSON message that is
#    a row is valid JSON.
# The server must stay up throughout: same postmaster, no backend crash.
# HOSTILE_MUTATIONS (default 100000) sets the number of each kind.
use strict;
use warnings;

use Encode ();
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use StreamKPI::Kafka;
use StreamKPI::Mutate;
use StreamKPI::Node;
use StreamKPI::Wire;

my $count = $ENV{HOSTILE_MUTATIONS} // 100_000;

my $kafka = StreamKPI::Kafka->start('hostile');
my $node = StreamKPI::Node->new_node('hostile');
my $postmaster_pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'streamkpi launcher'});
sub sq { return $node->safe_psql('postgres', $_[0]); }

# Outcomes by SQLSTATE ('loaded' when it loaded), as "state=count, ..."
sub tally
{
	my ($results) = @_;
	my %by;
	$by{ $_->{sqlstate} // 'loaded' }++ for @$results;
	return join(', ', map { "$_=$by{$_}" } sort keys %by);
}

# ---- topn: valid values, from the aggregates the regression tests build --
sq(q{CREATE TABLE seed_topn (v streamkpi.topn);
	INSERT INTO seed_topn
	SELECT streamkpi.topn_agg(item, 3, w) FROM (VALUES ('b', 2), ('a', 1), ('c', 5),
		('a', 1), ('é', 3), ('d', 7)) s(item, w)
	UNION ALL
	SELECT streamkpi.topn_agg('item' || (CASE WHEN i % 3 = 0 THEN i % 7 ELSE (i * 7919) % 503 END), 12)
	  FROM generate_series(1, 3000) i
	UNION ALL
	SELECT '{"capacity": 2, "floor": 2, "total": 9, "items": [["a\"\\b\u00e9", 5, 0], ["c", 4, 2]]}'::streamkpi.topn});
my @binary_seeds = map { pack('H*', $_) }
  split /\n/, sq(q{SELECT encode(streamkpi.topn_send(v), 'hex') FROM seed_topn});
my @text_seeds = split /\n/, sq(q{SELECT v::text FROM seed_topn});
my $topn_oid = sq(q{SELECT 'streamkpi.topn'::regtype::oid});
my $bytea_oid = sq(q{SELECT 'bytea'::regtype::oid});

# the offsets of the length and count fields of a version 1 value
sub v1_fields
{
	my ($v) = @_;
	my @f = ([ 2, 4 ], [ 6, 4 ], [ 10, 8 ], [ 18, 8 ]);
	my $p = 26;
	while ($p + 20 <= length $v)
	{
		push @f, [ $p, 8 ], [ $p + 8, 8 ], [ $p + 16, 4 ];
		$p += 20 + unpack('N', substr($v, $p + 16, 4));
	}
	return \@f;
}

srand(20251205);
my @binary = map {
	my $seed = $binary_seeds[ $_ % @binary_seeds ];
	StreamKPI::Mutate::binary($seed, v1_fields($seed));
} 1 .. $count;
my $conn = StreamKPI::Wire->connect($node, 'postgres');
# loads, and sends back the bytes it was given (they were canonical)
$conn->prepare('recv', 'SELECT streamkpi.topn_send($1) = $2', $topn_oid, $bytea_oid);
my $recv = $conn->execute_many('recv', [ map { [ $_, $_ ] } @binary ], [ 1, 1 ]);
note 'topn_recv: ' . tally($recv);
is(scalar(grep { defined $_->{sqlstate} && $_->{sqlstate} ne '22P03' } @$recv), 0,
	"$count mutated binary topn values: each loads or fails with 22P03");
is(scalar(grep { !defined $_->{sqlstate} && $_->{rows}[0][0] ne 't' } @$recv), 0,
	'a binary value that loads sends back the same bytes');
my @loaded = map { $binary[$_] } grep { !defined $recv->[$_]{sqlstate} } 0 .. $#binary;
$conn->prepare('merge', 'SELECT streamkpi.topn_union($1, $1) IS NOT NULL', $topn_oid);
my $merged = $conn->execute_many('merge', [ map { [$_] } @loaded ], [1]);
is(scalar(grep { defined $_->{sqlstate} && $_->{sqlstate} ne '22003' } @$merged), 0,
	scalar(@loaded) . ' loaded values merge with themselves (or overflow their counts, 22003)');

# A text parameter must be valid UTF-8 without NUL, or the server rejects
# it (22021) before any input function sees it: mutate until it is.
sub valid_text_mutation
{
	my ($seed) = @_;
	for (;;)
	{
		my $m = StreamKPI::Mutate::text($seed);
		next if $m =~ /\0/;
		my $copy = $m;
		return $m if eval { Encode::decode('UTF-8', $copy, Encode::FB_CROAK); 1 };
	}
}
my @text = map { valid_text_mutation($text_seeds[ $_ % @text_seeds ]) } 1 .. $count;
$conn->prepare('in', 'SELECT $1::text::streamkpi.topn::text = $1::text', $topn_oid);
my $in = $conn->execute_many('in', [ map { [$_] } @text ], [0]);
note 'topn_in: ' . tally($in);
my @other = grep { defined $_->{sqlstate} && $_->{sqlstate} ne '22P02' } @$in;
is(scalar(@other), 0, "$count mutated text topn values: each loads or fails with 22P02")
  or diag explain [ @other[ 0 .. ($#other < 4 ? $#other : 4) ] ];
is(scalar(grep { !defined $_->{sqlstate} && $_->{rows}[0][0] ne 't' } @$in), 0,
	'a text value that loads prints as it reads back');
$conn->close;

# ---- JSON and CSV messages through foreign tables with an error column --
$kafka->create_topic('json', 1);
$kafka->create_topic('csv', 1);
my $bootstrap = $kafka->bootstrap;
my $columns = q{user_id text OPTIONS (field 'userId', required 'true'), track_id text,
	listened_at timestamptz, ms_played int, action text, region text, device text,
	n bigint, small smallint, ratio real, score float8, flag boolean, day date,
	doc jsonb, tags text[], amount numeric, ts_ms timestamptz OPTIONS (time_unit 'ms'),
	koffset bigint OPTIONS (meta 'offset'), kerror text OPTIONS (meta 'error'),
	kpayload bytea OPTIONS (meta 'payload')};
sq(qq{CREATE SERVER kafka FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (brokers '$bootstrap');
	CREATE FOREIGN TABLE fz_json ($columns) SERVER kafka OPTIONS (topic 'json', format 'json');
	CREATE FOREIGN TABLE fz_csv ($columns) SERVER kafka OPTIONS (topic 'csv', format 'csv');
	CREATE TABLE staging (i int, payload bytea)});

my @json_seeds = (
	'{"userId":"u0-1","track_id":"t1","listened_at":"2024-05-01T10:00:01Z","ms_played":1000,"region":"EU","device":null,"ignored":{"a":[1,2,{"b":"}"}]}}',
	'{"userId":"i","ms_played":8,"listened_at":1714557600}',
	'{"userId":"e1","track_id":"t9","listened_at":"2024-05-01T23:59:59+02:00","ms_played":null,"action":"skip","region":"eu","device":"web"}',
	'{"userId":"\u00e9\ud83c\udfb5 \"q\" \\\\ \n","small":-32768,"n":-9223372036854775808,"ratio":1.5e-3,"score":-0.0,"flag":true,"day":"2024-02-29","doc":{"k":[true,false,null]},"tags":["a",null,"b"],"amount":12.50,"ts_ms":1714557600123}',
	'{"userId":"x","flag":"off","day":"May 1, 2024","listened_at":"2024-05-01 10:00","doc":"text","tags":"{a,b}","amount":"NaN","ts_ms":1.5e12}');
my @csv_seeds = (
	'u1,t1,2024-05-01T10:00:01Z,1000,play,EU,web,7,-3,1.5,2.25,t,2024-02-29,"{""k"":1}","{a,b}",12.5,1714557600123',
	'"u,2",t2,,200,,,"N""A"',
	'u3,t3,1714557600,,skip,us,mobile,,,,,false,,[1],{},NaN,');

# produce raw payloads through the tables' payload column, in order
sub produce_raw
{
	my ($table, $messages) = @_;
	my $file = "$PostgreSQL::Test::Utils::tmp_check/$table.copy";
	open my $fh, '>', $file or die "$file: $!";
	print $fh "$_\t\\\\x" . unpack('H*', $messages->[$_]) . "\n" for 0 .. $#$messages;
	close $fh;
	sq(qq{TRUNCATE staging; COPY staging FROM '$file';
		INSERT INTO $table (kpayload) SELECT payload FROM staging ORDER BY i});
	return;
}

for my $format ('json', 'csv')
{
	my @seeds = $format eq 'json' ? @json_seeds : @csv_seeds;
	my @messages = map { StreamKPI::Mutate::text($seeds[ $_ % @seeds ]) } 1 .. $count;
	produce_raw("fz_$format", \@messages);
	is(sq(qq{SELECT count(*) || ' ' || count(*) FILTER (WHERE (kerror IS NULL) = (user_id IS NOT NULL))
		FROM fz_$format}), "$count $count",
		"$count mutated $format messages: each is a row or an error row");
	note "$format: " . sq(qq{SELECT count(*) FILTER (WHERE kerror IS NULL) || ' rows, '
		|| count(kerror) || ' error rows' FROM fz_$format});
	next unless $format eq 'json';
	# what our decoder accepts, a strict JSON parser accepts too
	my $json = JSON::PP->new->utf8;
	my @accepted_invalid;
	for my $hex (split /\n/, sq(q{SELECT encode(kpayload, 'hex') FROM fz_json WHERE kerror IS NULL}))
	{
		my $m = pack('H*', $hex);
		my $v = eval { $json->decode($m) };
		push @accepted_invalid, $m unless ref $v eq 'HASH';
	}
	is(scalar(@accepted_invalid), 0, 'every JSON message that became a row is a JSON object')
	  or diag explain [ @accepted_invalid[ 0 .. ($#accepted_invalid < 4 ? $#accepted_invalid : 4) ] ];
}

# ---- the server stayed up -------------------------------------------------
is(sq(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'streamkpi launcher'}),
	$postmaster_pid, 'no crash restarted the server (the launcher is the same process)');
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|was terminated|server process .* exited with exit code [^0]/,
	'no backend died');

done_testing();
