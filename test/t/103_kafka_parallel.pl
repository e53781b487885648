# Parallel scans of Kafka foreign tables against a real broker: the planner
# picks Gather + Parallel Foreign Scan for a large topic and a serial scan
# for a small one; workers are launched and share the partitions out, and
# the parallel result equals the serial one exactly (counts, sums, the
# multiset of (partition, offset)), also with pushed-down quals, LIMIT and
# rescans.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use StreamKPI::Kafka;

my $kafka = StreamKPI::Kafka->start('parallel');
my $node = PostgreSQL::Test::Cluster->new('parallel');
$node->init;
$node->append_conf('postgresql.conf', join("\n",
	"timezone = 'UTC'", "shared_preload_libraries = 'streamkpi'",
	"search_path = 'public'", 'max_worker_processes = 16',
	'max_parallel_workers = 8', 'max_parallel_workers_per_gather = 3', ''));
$node->start;

my $bootstrap = $kafka->bootstrap;
$kafka->create_topic('big', 4);
$kafka->create_topic('small', 4);
$node->safe_psql('postgres', qq{
	CREATE EXTENSION streamkpi CASCADE;
	CREATE SERVER kafka FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (brokers '$bootstrap');
	CREATE FOREIGN TABLE big (n int, tag text,
	  kpartition int OPTIONS (meta 'partition'), koffset bigint OPTIONS (meta 'offset'))
	  SERVER kafka OPTIONS (topic 'big', format 'json');
	CREATE FOREIGN TABLE small (n int,
	  kpartition int OPTIONS (meta 'partition'), koffset bigint OPTIONS (meta 'offset'))
	  SERVER kafka OPTIONS (topic 'small', format 'json');
});

sub sq { return $node->safe_psql('postgres', $_[0]); }

# uneven partitions, so that participants finish at different times
sq(q{INSERT INTO big (n, tag, kpartition)
	SELECT i, 't' || (i % 13), CASE WHEN i <= 60000 THEN 0 ELSE i % 4 END
	FROM generate_series(1, 200000) i});
sq(q{INSERT INTO small (n, kpartition) SELECT i, i % 4 FROM generate_series(1, 400) i});
is( sq(q{SELECT string_agg(concat_ws(',', partition, low, high), ' ' ORDER BY partition)
	   FROM streamkpi.kafka_watermarks('big')}),
	'0,0,95000 1,0,35000 2,0,35000 3,0,35000', 'the big topic has 200,000 messages in 4 partitions');

my $serial = 'SET max_parallel_workers_per_gather = 0;';
# make Gather free, so that plans passing every row go parallel too
my $cheap = 'SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;';

sub plan_of
{
	my ($settings, $query) = @_;
	return sq("$settings EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF, SUMMARY OFF) $query");
}

sub is_parallel
{
	my ($plan, $name) = @_;
	like($plan, qr/Gather.*\n.*Workers Launched: [1-9]/s, "$name: Gather launched workers");
	like($plan, qr/Parallel Foreign Scan on public\.\w+/, "$name: under it a Parallel Foreign Scan");
}

# --- the planner's choice ---------------------------------------------------
my $agg = 'SELECT count(*), sum(n), sum(koffset), sum(kpartition), count(DISTINCT tag) FROM big';
my $plan = plan_of('', 'SELECT count(*), sum(n), sum(koffset) FROM big');
is_parallel($plan, 'a large topic with default costs');
like($plan, qr/Workers Planned: 3/, 'one worker per partition besides the leader');
like($plan, qr/Kafka Ranges: 0:\[0,95000\) 1:\[0,35000\) 2:\[0,35000\) 3:\[0,35000\)/,
	'EXPLAIN ANALYZE shows the ranges the participants shared');
$plan = plan_of('', 'SELECT count(*), sum(n), sum(koffset) FROM small');
unlike($plan, qr/Gather|Parallel/, 'a small topic is scanned serially');
$plan = plan_of('SET max_parallel_workers_per_gather = 8;', 'SELECT count(*) FROM big');
like($plan, qr/Workers Planned: 3/, 'never more workers than partitions to share');

# --- parallel = serial --------------------------------------------------------
is(sq($agg), '200000|20000100000|6349900000|210000|13', 'parallel aggregates are right');
is(sq("$serial $agg"), sq($agg), 'and equal the serial ones');

my $rows = 'SELECT kpartition, koffset, n FROM big';
is_parallel(plan_of($cheap, $rows), 'all rows');
my @par = sort split /\n/, sq("$cheap $rows");
my @ser = sort split /\n/, sq("$serial $rows");
is(scalar @par, 200000, 'a parallel scan returns every message once');
ok(join("\n", @par) eq join("\n", @ser), 'the multiset of (partition, offset, n) equals the serial scan');
my %seen;
is(scalar(grep { !$seen{ join ',', (split /\|/)[0, 1] }++ } @par), 200000,
	'no (partition, offset) twice');

# pushed-down partition and offset bounds
my $pushed = 'SELECT kpartition, koffset, n FROM big
	WHERE kpartition IN (0, 2, 3) AND koffset >= 1000 AND koffset < 40000 AND n % 3 = 0';
$plan = plan_of($cheap, $pushed);
is_parallel($plan, 'pushdown');
like($plan, qr/Kafka Ranges: 0:\[1000,40000\) 2:\[1000,35000\) 3:\[1000,35000\)/,
	'pushdown narrows the shared ranges');
@par = sort split /\n/, sq("$cheap $pushed");
@ser = sort split /\n/, sq("$serial $pushed");
ok(@par > 20000 && join("\n", @par) eq join("\n", @ser),
	'with pushdown the parallel rows equal the serial rows (' . scalar(@par) . ')');
is( sq(q{PREPARE pq(int, bigint) AS SELECT count(*), sum(koffset) FROM big WHERE kpartition = $1 OR koffset < $2;
	   SET plan_cache_mode = force_generic_plan; EXECUTE pq(1, 10)}),
	sq("$serial SELECT count(*), sum(koffset) FROM big WHERE kpartition = 1 OR koffset < 10"),
	'a generic plan with parameters gives the serial result');
$plan = plan_of($cheap . ' SET plan_cache_mode = force_generic_plan;
	PREPARE pp(bigint) AS SELECT count(*) FROM big WHERE koffset >= $1;', 'EXECUTE pp(30000)');
is_parallel($plan, 'pushed-down parameters');
like($plan, qr/Kafka Ranges: 0:\[30000,95000\) 1:\[30000,35000\) 2:\[30000,35000\) 3:\[30000,35000\)/,
	'the parameter bounds the shared ranges');
is(sq('SET plan_cache_mode = force_generic_plan; PREPARE pp(bigint) AS SELECT count(*) FROM big WHERE koffset >= $1; EXECUTE pp(30000)'),
	'80000', 'and the count is right');

# LIMIT: ordered, the same rows; unordered, distinct real messages
my $ordered = 'SELECT kpartition, koffset, n FROM big ORDER BY n DESC LIMIT 25';
is_parallel(plan_of($cheap, $ordered), 'ORDER BY ... LIMIT');
is(sq("$cheap $ordered"), sq("$serial $ordered"), 'ORDER BY ... LIMIT gives the serial rows');
my $limited = 'SELECT count(*), count(DISTINCT (kpartition, koffset)),
	  count(*) FILTER (WHERE koffset < 95000 AND n BETWEEN 1 AND 200000)
	FROM (SELECT kpartition, koffset, n FROM big LIMIT 1000) s';
$plan = plan_of($cheap, $limited);
like($plan, qr/Limit.*\n.*Gather/s, 'LIMIT sits on a Gather');
is_parallel($plan, 'LIMIT');
is(sq("$cheap $limited"), '1000|1000|1000', 'LIMIT 1000 returns 1000 distinct messages');

# rescans: the Gather under a nested loop runs again, the partitions are
# handed out anew each time
my $rescan = 'SELECT g, count(b.*) FROM generate_series(1, 3) g
	LEFT JOIN big b ON b.kpartition = g AND b.n % 1000 = 0 GROUP BY g ORDER BY g';
my $force = "$cheap SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_material = off;";
$plan = plan_of($force, $rescan);
like($plan, qr/Gather.*loops=3/s, 'the Gather is rescanned 3 times');
is_parallel($plan, 'rescans');
is(sq("$force $rescan"), sq("$serial $rescan"), 'every rescan reads the whole topic');

# CSV with a header: every participant reads the header first
$kafka->create_topic('csv', 2);
$kafka->produce('csv', [ 'id,val', map { "$_,v$_" } 1 .. 1000 ], partition => 0);
$kafka->produce('csv', [ map { "$_,w$_" } 1001 .. 2000 ], partition => 1);
sq(q{CREATE FOREIGN TABLE csv (val text, id int OPTIONS (required 'true'))
	SERVER kafka OPTIONS (topic 'csv', format 'csv', header 'true')});
my $csv = q{SELECT count(*), sum(id), count(DISTINCT val) FROM csv WHERE val LIKE '_%'};
is_parallel(plan_of($cheap, $csv), 'CSV with header');
is(sq("$cheap $csv"), '2000|2001000|2000', 'a parallel CSV scan maps fields by the header');

# parallel scans leave no librdkafka handle behind in the leader
my $threads = q{SELECT count(*) FROM pg_ls_dir('/proc/' || pg_backend_pid() || '/task')};
my $res = sq("$threads; $agg; $agg; $threads;");
my @r = split /\n/, $res;
is("$r[0],$r[3]", '1,1', 'one thread before and after parallel scans');

# pipeline batches are never read in parallel, end to end: with
# force_parallel_mode every parallel-safe plan gets a Gather, and a worker
# process would read the topic instead of the batch.  Two guards prevent
# it: the pipeline worker prepares its statement without
# CURSOR_OPT_PARALLEL_OK, and the scan is not parallel safe in pipeline
# mode; this fails only if both are lost (checked by removing both).
sq(q{ALTER SYSTEM SET force_parallel_mode = on; SELECT pg_reload_conf()});
$node->poll_query_until('postgres', q{SELECT current_setting('force_parallel_mode') = 'on'})
  or die 'force_parallel_mode did not take effect';
like(sq('EXPLAIN (COSTS OFF) SELECT n FROM small'), qr/Gather/,
	'force_parallel_mode puts a Gather over a plain scan');
sq(q{SELECT streamkpi.create_pipeline('sel', $$SELECT n, kpartition, koffset FROM small$$,
	  batch_size => 50);
	SELECT streamkpi.start_pipeline('sel')});
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 4 AND bool_and(committed_offset = high_watermark)
		FROM streamkpi.pipeline_status WHERE pipeline = 'sel'}),
	'a SELECT pipeline under force_parallel_mode reads the whole topic');
is( sq(q{SELECT max(rows), count(last_error), max(dead_letters)
	   FROM streamkpi.pipeline_status WHERE pipeline = 'sel'}),
	'400|0|0', 'its statement saw each of the 400 messages once, without errors');
sq(q{SELECT streamkpi.stop_pipeline('sel'); ALTER SYSTEM RESET force_parallel_mode; SELECT pg_reload_conf()});

done_testing();
