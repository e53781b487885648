# Kafka foreign tables against a real broker: bounded scans of JSON and CSV
# topics, meta columns, pushdown of partition/offset/timestamp (EXPLAIN
# shows the ranges read), rescans, LIMIT, bad messages as error rows or as
# ERRORs with SQLSTATE and location, INSERT/COPY round trips, delivery
# failures, kafka_watermarks/kafka_topics, and no handle left behind.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use StreamKPI::Kafka;

my $kafka = StreamKPI::Kafka->start('fdw');
my $node = PostgreSQL::Test::Cluster->new('fdw');
$node->init;
$node->append_conf('postgresql.conf', "timezone = 'UTC'\nshared_preload_libraries = 'streamkpi'\nsearch_path = 'public'");
$node->start;

my $bootstrap = $kafka->bootstrap;
$node->safe_psql('postgres', qq{
	CREATE EXTENSION streamkpi CASCADE;
	CREATE SERVER kafka FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (brokers '$bootstrap');
	CREATE FOREIGN TABLE listens (
	  user_id text OPTIONS (field 'userId'), track_id text, listened_at timestamptz,
	  ms_played int, action text, region text, device text,
	  kpartition int OPTIONS (meta 'partition'), koffset bigint OPTIONS (meta 'offset'),
	  ktimestamp timestamptz OPTIONS (meta 'timestamp'), kkey text OPTIONS (meta 'key')
	) SERVER kafka OPTIONS (topic 'listens', format 'json');
});

sub sq { return $node->safe_psql('postgres', $_[0]); }

# --- scans: 4 partitions x 200 messages, read back identical -------------
$kafka->create_topic('listens', 4);
my @expected;
for my $p (0 .. 3)
{
	my @lines;
	for my $i (0 .. 199)
	{
		my $sec = sprintf('%02d', $i % 60);
		push @lines, "k$p-$i\t" . '{"userId":"' . "u$p-$i" . '","track_id":"t' . ($i % 7)
		  . '","listened_at":"2024-05-01T10:00:' . $sec . 'Z","ms_played":' . ($i * 1000 + $p)
		  . ',"region":"EU","device":null,"ignored":{"a":[1,2,{"b":"}"}]}}';
		push @expected, join('|', $p, $i, "u$p-$i", 't' . ($i % 7),
			"2024-05-01 10:00:$sec+00", $i * 1000 + $p, "k$p-$i");
	}
	$kafka->produce('listens', \@lines, partition => $p, key_delimiter => "\t");
}

is(sq('SELECT count(*) FROM listens'), '800', 'a scan reads every message of every partition');
is( sq(q{SELECT string_agg(concat_ws('|', kpartition, koffset, user_id, track_id, listened_at,
			ms_played, kkey), E'\n' ORDER BY kpartition, koffset) FROM listens}),
	join("\n", @expected),
	'values, partitions, offsets and keys read back identical to what was produced');
is(sq(q{SELECT count(*) FROM listens WHERE region = 'EU' AND device IS NULL AND action IS NULL}),
	'800', 'absent fields and JSON null are NULL');
is(sq(q{SELECT count(*) FROM listens WHERE ktimestamp > now() - interval '1 hour'}),
	'800', 'the timestamp meta column holds the produce time');
is( sq('SELECT string_agg(concat_ws(\',\', partition, low, high), \' \' ORDER BY partition)
	   FROM streamkpi.kafka_watermarks(\'listens\')'),
	'0,0,200 1,0,200 2,0,200 3,0,200', 'kafka_watermarks reports low and high per partition');
is(sq(q{SELECT partitions FROM streamkpi.kafka_topics('kafka') WHERE topic = 'listens'}),
	'4', 'kafka_topics lists the topic with its partition count');

# --- pushdown ---------------------------------------------------------------
is( sq(q{SELECT string_agg(koffset::text, ',' ORDER BY koffset) FROM listens
	   WHERE kpartition = 2 AND koffset BETWEEN 10 AND 14}),
	'10,11,12,13,14', 'partition = and offset BETWEEN select exactly those messages');
my $plan = sq(q{EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF, SUMMARY OFF)
	SELECT user_id FROM listens WHERE kpartition = 2 AND koffset BETWEEN 10 AND 14});
like($plan, qr/Kafka Partitions: = 2/, 'EXPLAIN shows the pushed-down partition');
like($plan, qr/Kafka Offsets: >= 10 AND <= 14/, 'EXPLAIN shows the pushed-down offsets');
like($plan, qr/Kafka Ranges: 2:\[10,15\)\n/, 'EXPLAIN ANALYZE shows the one range read');
like($plan, qr/Kafka Messages: 5\n/, 'only those 5 messages were decoded');

$plan = sq(q{EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF, SUMMARY OFF)
	SELECT user_id FROM listens WHERE kpartition IN (0, 3, 9) AND koffset > 195});
like($plan, qr/Kafka Ranges: 0:\[196,200\) 3:\[196,200\)\n/,
	'IN and > read only the tail of the listed partitions; unknown partitions are empty');
is( sq(q{SELECT count(*) FROM listens WHERE kpartition IN (0, 3, 9) AND koffset > 195}),
	'8', 'IN and > return the right rows');
is(sq(q{SELECT count(*) FROM listens WHERE koffset >= 500}), '0', 'offsets beyond the end read nothing');

is( sq(q{PREPARE p(int, bigint) AS SELECT count(*) FROM listens WHERE kpartition = $1 AND koffset < $2;
	   SET plan_cache_mode = force_generic_plan;
	   EXECUTE p(1, 50);}),
	'50', 'parameters are pushed down');

# correlated subquery: the scan is rescanned with a new partition each time
is( sq(q{SELECT string_agg((SELECT count(*) FROM listens l WHERE l.kpartition = g
							AND l.koffset < 10 + g)::text, ',' ORDER BY g)
	   FROM generate_series(0, 3) g}),
	'10,11,12,13', 'rescans with changed parameters read the new ranges');

$plan = sq(q{EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF, SUMMARY OFF)
	SELECT user_id FROM listens LIMIT 3});
like($plan, qr/Kafka Messages: 3\n/, 'LIMIT stops decoding early');

# timestamp pushdown, on a topic produced by INSERT with message timestamps
$kafka->create_topic('stamped', 2);
sq(q{CREATE FOREIGN TABLE stamped (n int, p int OPTIONS (meta 'partition'),
	  o bigint OPTIONS (meta 'offset'), ts timestamptz OPTIONS (meta 'timestamp'))
	SERVER kafka OPTIONS (topic 'stamped')});
sq(q{INSERT INTO stamped (n, p, ts)
	SELECT i, i % 2, '2024-05-01 00:00:00+00'::timestamptz + i * interval '1 hour'
	FROM generate_series(0, 47) i});
is( sq(q{SELECT count(*), min(n), max(n) FROM stamped WHERE ts >= '2024-05-02 00:00:00+00'}),
	'24|24|47', 'timestamp >= selects the messages at and after the time');
$plan = sq(q{EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF, SUMMARY OFF)
	SELECT n FROM stamped WHERE ts > '2024-05-02 00:00:00+00'});
like($plan, qr/Kafka Ranges: 0:\[13,24\) 1:\[12,24\)\n/,
	'timestamp > starts each partition at the first later message (offsets for times)');

# --- INSERT and COPY round trip ---------------------------------------------
$kafka->create_topic('produced', 3);
sq(q{CREATE TABLE src AS
	SELECT 'user ' || i || ' "quoted" \' || CASE WHEN i > 1 THEN ' é' ELSE '' END AS user_id, i AS ms_played,
	  '2024-05-01 00:00:00+00'::timestamptz + i * interval '1.25 s' AS listened_at,
	  i % 2 = 0 AS liked, ARRAY['a', NULL, 'b' || i] AS tags, ('{"n":' || i || '}')::jsonb AS extra,
	  i::numeric / 8 AS score, 'key' || i AS k
	FROM generate_series(1, 1000) i;
	CREATE FOREIGN TABLE produced (user_id text, ms_played int, listened_at timestamptz,
	  liked bool, tags text[], extra jsonb, score numeric, k text OPTIONS (meta 'key'),
	  p int OPTIONS (meta 'partition'))
	SERVER kafka OPTIONS (topic 'produced')});
is(sq(q{WITH i AS (INSERT INTO produced SELECT *, NULL FROM src RETURNING 1) SELECT count(*) FROM i}),
	'1000', 'INSERT produces 1000 messages');
is( sq(q{SELECT count(*) FROM (SELECT user_id, ms_played, listened_at, liked, tags, extra, score, k FROM produced
	   EXCEPT SELECT * FROM src) d}),
	'0', 'every produced row reads back identical');
is(sq(q{SELECT count(*) FROM produced}), '1000', 'and none twice');
my @msgs = $kafka->consume('produced');
is(scalar @msgs, 1000, 'kcat sees 1000 messages');
my ($m1) = grep { defined $_->{key} && $_->{key} eq 'key1' } @msgs;
is($m1->{payload},
	'{"user_id":"user 1 \"quoted\" \\\\","ms_played":1,"listened_at":"2024-05-01T00:00:01.250000Z","liked":false,"tags":["a",null,"b1"],"extra":{"n": 1},"score":0.12500000000000000000}',
	'the JSON encoding of a row');

$node->safe_psql('postgres', "COPY produced (user_id, ms_played, k, p) FROM STDIN;\nc1\t1\tck1\t2\nc2\t2\tck2\t2\n\\.\n");
is(sq(q{SELECT string_agg(user_id || ms_played || k || p, ',' ORDER BY user_id) FROM produced WHERE k LIKE 'ck%'}),
	'c11ck12,c22ck22', 'COPY FROM produces to the given partition with keys');

# delivery failure: the broker rejects a message larger than the topic allows
$kafka->create_topic('small', 1, 'max.message.bytes' => 1000);
sq(q{CREATE FOREIGN TABLE small (t text) SERVER kafka OPTIONS (topic 'small')});
my ($rc, $out, $err) = $node->psql('postgres',
	q{\set VERBOSITY verbose
	  INSERT INTO small SELECT repeat('x', 5000)});
like($err, qr/ERROR:  HV00N: 1 of 1 messages could not be delivered to Kafka topic "small"/,
	'a failed delivery is an ERROR that counts the failures');

# --- bad messages -----------------------------------------------------------
$kafka->create_topic('bad', 1);
$kafka->produce('bad', [
		'{"user_id":"a","ms_played":5}',               # 0 good
		'{"user_id":"b","ms_played":"five"}',          # 1 wrong type
		'{"user_id":"c","ms_played":99999999999}',     # 2 out of range
		'{"user_id":"d"',                              # 3 invalid JSON
		'{"ms_played":7}',                             # 4 missing required
		'{"user_id":"f","ms_played":{"x":1}}',         # 5 object for int
		'[1,2]',                                       # 6 not an object
		'{"user_id":"h","listened_at":"2024-13-45T00:00:00Z"}',    # 7 bad date
		'{"user_id":"i","ms_played":8,"listened_at":1714557600}',  # 8 good, epoch
	]);
sq(q{CREATE FOREIGN TABLE bad (user_id text OPTIONS (required 'true'), ms_played int,
	  listened_at timestamptz, o bigint OPTIONS (meta 'offset'),
	  err text OPTIONS (meta 'error'), payload bytea OPTIONS (meta 'payload'))
	SERVER kafka OPTIONS (topic 'bad');
	CREATE FOREIGN TABLE bad_strict (user_id text OPTIONS (required 'true'), ms_played int,
	  listened_at timestamptz, payload bytea OPTIONS (meta 'payload'))
	SERVER kafka OPTIONS (topic 'bad')});
sq(q{INSERT INTO bad_strict (payload) VALUES ('\xfffe41'::bytea), (''::bytea)});   # 9, 10

my %want = (
	1 => qr/^column "ms_played": invalid integer "five"$/,
	2 => qr/^column "ms_played": value "99999999999" is out of range for type integer$/,
	3 => qr/^invalid JSON: expected ',' or '}' at end of message$/,
	4 => qr/^required field "user_id" is missing or null$/,
	5 => qr/^column "ms_played": expected a value of type integer, found an object$/,
	6 => qr/^JSON message is an array, not an object$/,
	7 => qr/^column "listened_at": date\/time field value out of range/,
	9 => qr/^invalid UTF-8 in message$/,
	10 => qr/^empty message$/);
my %rows = map { my @f = split /\|/, $_, -1; $f[0] => \@f }
  split /\n/, sq(q{SELECT o, coalesce(user_id, '~'), coalesce(ms_played::text, '~'),
	  coalesce(listened_at::text, '~'), coalesce(err, '~'), encode(payload, 'escape') FROM bad});
is(scalar keys %rows, 11, 'with an error column every message is a row');
for my $o (sort { $a <=> $b } keys %want)
{
	like($rows{$o}[4], $want{$o}, "offset $o: error text");
	is(join('|', @{ $rows{$o} }[ 1 .. 3 ]), '~|~|~', "offset $o: data columns are NULL");
}
is(join('|', @{ $rows{0} }[ 1 .. 4 ]), 'a|5|~|~', 'good rows between bad ones are intact');
is(join('|', @{ $rows{8} }[ 1 .. 4 ]), 'i|8|2024-05-01 10:00:00+00|~', 'epoch seconds convert');
is($rows{1}[5], '{"user_id":"b","ms_played":"five"}', 'the payload of a bad message is kept');

my %strict = (
	1 => '22P02', 2 => '22003', 3 => '22P02', 4 => '23502', 5 => 'HV004',
	6 => '22P02', 7 => '22008', 9 => '22021', 10 => '22P02');
sq(q{CREATE FOREIGN TABLE bad_strict_o (user_id text OPTIONS (required 'true'), ms_played int,
	  listened_at timestamptz, o bigint OPTIONS (meta 'offset'))
	SERVER kafka OPTIONS (topic 'bad')});
for my $o (sort { $a <=> $b } keys %strict)
{
	($rc, $out, $err) = $node->psql('postgres',
		qq{\\set VERBOSITY verbose
		   SELECT user_id FROM bad_strict_o WHERE o = $o});
	like($err, qr/ERROR:  $strict{$o}: /, "offset $o without error column: ERROR with SQLSTATE $strict{$o}");
	like($err, qr/CONTEXT:  .*Kafka topic "bad" partition 0 offset $o\b/s,
		"offset $o: the context names topic, partition and offset");
}

# --- CSV --------------------------------------------------------------------
$kafka->create_topic('csv', 2);
$kafka->produce('csv', [ 'user_id,ms_played,region', 'u1,100,EU', '"u,2",200,', 'u3,,"N""A"', 'u4,x,EU' ],
	partition => 0);
$kafka->produce('csv', [ 'u5,500,US', 'user_id,ms_played,region' ], partition => 1);
sq(q{CREATE FOREIGN TABLE csv (region text, user_id text OPTIONS (required 'true'), ms_played int,
	  err text OPTIONS (meta 'error'))
	SERVER kafka OPTIONS (topic 'csv', format 'csv', header 'true');
	CREATE FOREIGN TABLE csv_missing (user_id text, device text OPTIONS (required 'true'),
	  os text OPTIONS (required 'true'))
	SERVER kafka OPTIONS (topic 'csv', format 'csv', header 'true')});
is( sq(q{SELECT string_agg(concat_ws('/', user_id, ms_played, region, err), ';' ORDER BY user_id NULLS LAST) FROM csv}),
	'u,2/200;u1/100/EU;u3/N"A;u5/500/US;column "ms_played": invalid integer "x"',
	'CSV fields map by header name; quoting, empty as NULL, bad field as error row, header lines skipped');
($rc, $out, $err) = $node->psql('postgres', qq{\\set VERBOSITY verbose
	SELECT * FROM csv_missing});
like($err, qr/ERROR:  23502: CSV header of Kafka topic "csv" lacks required columns "device", "os"/,
	'required columns missing from the CSV header are named in one ERROR');
is($out, '', 'and no row is returned');

# --- errors leave nothing behind --------------------------------------------
sq(q{CREATE FOREIGN TABLE nosuch (a text) SERVER kafka OPTIONS (topic 'nosuch')});
($rc, $out, $err) = $node->psql('postgres', qq{\\set VERBOSITY verbose
	SELECT * FROM nosuch});
like($err, qr/ERROR:  HV00R: Kafka topic "nosuch" does not exist/, 'an unknown topic is an ERROR');

my $threads = q{SELECT count(*) FROM pg_ls_dir('/proc/' || pg_backend_pid() || '/task')};
my $mem = q{SELECT sum(total_bytes) FROM pg_backend_memory_contexts};
my $res = sq(qq{
	$threads;
	DO \$\$ BEGIN PERFORM count(*) FROM listens WHERE kpartition = 0 AND koffset < 10; END \$\$;
	$mem;
	DO \$\$ BEGIN
	  FOR i IN 1 .. 100 LOOP
	    BEGIN PERFORM * FROM nosuch; EXCEPTION WHEN OTHERS THEN NULL; END;
	    BEGIN PERFORM * FROM bad_strict; EXCEPTION WHEN OTHERS THEN NULL; END;
	    PERFORM count(*) FROM listens WHERE kpartition = 0 AND koffset < 10;
	  END LOOP;
	END \$\$;
	$threads;
	$mem;
});
my ($t0, $mem0, $t1, $mem1) = split /\n/, $res;
is($t0, 1, 'a fresh backend has one thread');
is($t1, 1, '300 scans, 200 of them failing, leave no librdkafka thread behind');
cmp_ok($mem1 - $mem0, '<', 1024 * 1024, 'and memory stays flat (grew ' . ($mem1 - $mem0) . ' bytes)');

done_testing();
