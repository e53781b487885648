# Memory, threads and handles of the streamkpi workers over a long run.
#
# 1. Steady load: SOAK_STEADY_RATE listens per second (default 5,000) for
#    SOAK_STEADY_SECONDS (default 600) through two pipelines (listens with
#    two workers, and tracks) with the KPI worker on.  Every second the
#    resident memory of every streamkpi process is sampled.  After the
#    first minute (a third of the run when shorter) a worker's private
#    memory (RssAnon: palloc, librdkafka buffers) must not grow: a linear
#    trend over the rest of the run may not add more than
#    SOAK_RSS_TOLERANCE_KB (default 4096) and the last tenth of the samples
#    may not sit that much above the first tenth.
# 2. The broker unreachable for SOAK_OUTAGE_SECONDS (default 600): the
#    workers' threads and open files must not grow (beyond a small
#    tolerance, against the counts once the outage settled), nor their
#    memory; pipeline_status shows the error with its SQLSTATE; and when
#    the broker returns, ingestion recovers with nothing lost.
# Shared memory pages a worker touches count in RSS (RssShmem) but are not
# a leak, so the trend is taken on RssAnon; both are reported.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use StreamKPI::Kafka;
use StreamKPI::KPI;
use StreamKPI::Node;

my $rate = $ENV{SOAK_STEADY_RATE} // 5000;
my $steady = $ENV{SOAK_STEADY_SECONDS} // 600;
my $outage = $ENV{SOAK_OUTAGE_SECONDS} // 600;
my $tolerance_kb = $ENV{SOAK_RSS_TOLERANCE_KB} // 4096;

my $kafka = StreamKPI::Kafka->start('memory');
$kafka->create_topic('listens', 4);
$kafka->create_topic('tracks', 1);
my $node = StreamKPI::Node->new_node('memory', timezone => "'UTC'",
	log_statement => "'none'");
my $bootstrap = $kafka->bootstrap;
sub sq { return $node->safe_psql('postgres', $_[0]); }

StreamKPI::Node::create_kpi_pipelines($node, $bootstrap);
sq(q{SELECT streamkpi.start_pipeline(p) FROM unnest(ARRAY['tracks', 'listens']) p});
StreamKPI::Node::produce_tracks($kafka);
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 4 FROM pg_stat_activity WHERE backend_type IN ('streamkpi pipeline', 'streamkpi kpi')}),
	'three pipeline workers and the KPI worker run');

my $produced = 0;
my $now = time;
sub listen_lines
{
	my ($n) = @_;
	my $out = '';
	for (1 .. $n)
	{
		my $i = ++$produced;
		my $r = ($i * 2654435761) % 4294967296;
		my @t = gmtime($now - ($r >> 5) % 3600);
		$out .= sprintf(
			"e%d\t{\"event_id\":\"e%d\",\"user_id\":\"u%d\",\"track_id\":\"t%d\",\"listened_at\":\"%04d-%02d-%02dT%02d:%02d:%02dZ\",\"ms_played\":%d,\"action\":\"%s\",\"region\":\"eu\"}\n",
			$i, $i, 1 + ($r >> 7) % 200, 1 + ($r >> 11) % 45, $t[5] + 1900, $t[4] + 1,
			@t[ 3, 2, 1, 0 ], 1000 + $r % 240000, (qw(play play play skip like))[ $r % 5 ]);
	}
	return $out;
}

# ---- sampling /proc ----------------------------------------------------------
my %workers;    # pid => backend_type
sub find_workers
{
	%workers = map { split /\|/ } split /\n/, sq(q{
		SELECT pid, backend_type FROM pg_stat_activity WHERE backend_type LIKE 'streamkpi%'});
	return;
}

sub proc_sample
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/status" or return undef;
	my %s;
	while (<$fh>)
	{
		$s{$1} = $2 if /^(VmRSS|RssAnon|RssShmem|Threads):\s+(\d+)/;
	}
	close $fh;
	opendir my $dh, "/proc/$pid/fd" or return undef;
	$s{fds} = scalar(grep { !/^\./ } readdir $dh);
	closedir $dh;
	return \%s;
}

# samples{pid} = [ [ t, {VmRSS, RssAnon, RssShmem, Threads, fds} ], ... ]
sub sample_all
{
	my ($samples, $t) = @_;
	for my $pid (keys %workers)
	{
		my $s = proc_sample($pid);
		die "streamkpi worker $pid ($workers{$pid}) is gone" unless $s;
		push @{ $samples->{$pid} }, [ $t, $s ];
	}
	return;
}

sub median
{
	my @v = sort { $a <=> $b } @_;
	return @v ? $v[ int($#v / 2) ] : 0;
}

# least squares slope of $key over time, in units per second
sub slope
{
	my ($points, $key) = @_;
	my $n = @$points;
	return 0 if $n < 2;
	my ($st, $sv, $stt, $stv) = (0, 0, 0, 0);
	for (@$points)
	{
		my ($t, $v) = ($_->[0], $_->[1]{$key});
		$st += $t; $sv += $v; $stt += $t * $t; $stv += $t * $v;
	}
	my $den = $n * $stt - $st * $st;
	return $den == 0 ? 0 : ($n * $stv - $st * $sv) / $den;
}

# growth of $key after the warm-up: the trend over the window, and the last
# tenth against the first tenth (medians); returns (trend, step)
sub growth
{
	my ($points, $key, $warmup) = @_;
	my @after = grep { $_->[0] >= $warmup } @$points;
	return (0, 0) if @after < 10;
	my $span = $after[-1][0] - $after[0][0];
	my $tenth = int(@after / 10) || 1;
	my $first = median(map { $_->[1]{$key} } @after[ 0 .. $tenth - 1 ]);
	my $last = median(map { $_->[1]{$key} } @after[ -$tenth .. -1 ]);
	return (slope(\@after, $key) * $span, $last - $first);
}

sub report
{
	my ($samples, $what, $warmup) = @_;
	for my $pid (sort keys %$samples)
	{
		my $p = $samples->{$pid};
		my ($trend, $step) = growth($p, 'RssAnon', $warmup);
		note sprintf('%s: %s %d: RSS %d -> %d kB (anon %d -> %d, shmem %d -> %d), trend %+.0f kB, '
			  . 'step %+d kB; threads %d -> %d; fds %d -> %d',
			$what, $workers{$pid}, $pid, $p->[0][1]{VmRSS}, $p->[-1][1]{VmRSS},
			$p->[0][1]{RssAnon}, $p->[-1][1]{RssAnon}, $p->[0][1]{RssShmem}, $p->[-1][1]{RssShmem},
			$trend, $step, $p->[0][1]{Threads}, $p->[-1][1]{Threads}, $p->[0][1]{fds}, $p->[-1][1]{fds});
		ok(!($trend > $tolerance_kb && $step > $tolerance_kb),
			"$what: $workers{$pid} $pid: private memory does not grow (trend $trend kB, step $step kB)");
	}
	return;
}

# ---- 1. steady load ------------------------------------------------------------
my $in = '';
my $kcat = IPC::Run::start([ $kafka->producer_command('listens', '-K', "\t",
	'-X', 'linger.ms=20') ], '<', \$in, '>', \my $kout, '2>', \my $kerr);
find_workers();
my %steady_samples;
my $t0 = time;
for my $s (0 .. $steady - 1)
{
	$in .= listen_lines($rate);
	$kcat->pump_nb while length $in;
	sample_all(\%steady_samples, time - $t0);
	my $next = $t0 + $s + 1;
	sleep($next - time) if $next > time;
}
$kcat->finish or die "kcat failed: $kerr";
note sprintf('steady: %d listens in %.0f s', $produced, time - $t0);
ok($node->poll_query_until('postgres', "SELECT count(*) = $produced FROM streamkpi.listens"),
	"all $produced listens of the steady run ingested");
report(\%steady_samples, 'steady load', $steady >= 180 ? 60 : $steady / 3);

# ---- 2. the broker unreachable -------------------------------------------------
$kafka->stop;
my %outage_samples;
my $status;
$t0 = time;
for my $s (0 .. $outage - 1)
{
	sample_all(\%outage_samples, time - $t0);
	$status //= sq(q{SELECT min(last_sqlstate) || ' ' || min(last_error) FROM streamkpi.pipeline_status
		WHERE pipeline = 'listens' AND state = 'error'}) || undef;
	my $next = $t0 + $s + 1;
	sleep($next - time) if $next > time;
}
note "pipeline_status during the outage: " . ($status // '(no error shown)');
like($status // '', qr/^HV00N \S/, 'pipeline_status shows the outage with SQLSTATE HV00N and the reason');
report(\%outage_samples, 'broker unreachable', $outage >= 180 ? 60 : $outage / 3);
# threads and handles: once librdkafka has noticed the outage (10 s), no more
for my $pid (sort keys %outage_samples)
{
	my @p = grep { $_->[0] >= 10 } @{ $outage_samples{$pid} };
	next unless @p;
	my ($threads0, $fds0) = ($p[0][1]{Threads}, $p[0][1]{fds});
	my $threads_max = (sort { $b <=> $a } map { $_->[1]{Threads} } @p)[0];
	my $fds_max = (sort { $b <=> $a } map { $_->[1]{fds} } @p)[0];
	ok($threads_max <= $threads0 + 2 && $fds_max <= $fds0 + 4,
		"broker unreachable: $workers{$pid} $pid: threads $threads0 .. $threads_max, fds $fds0 .. $fds_max");
}

$kafka->restart;
my $before = $produced;
$kafka->produce('listens', [ split /\n/, listen_lines(5000) ], key_delimiter => "\t");
ok($node->poll_query_until('postgres', "SELECT count(*) = $produced FROM streamkpi.listens"),
	'ingestion recovers when the broker returns, nothing lost');
ok($node->poll_query_until('postgres', q{
	SELECT bool_and(state = 'running') FROM streamkpi.pipeline_status WHERE pipeline = 'listens'}),
	'pipeline_status is back to running');
is(sq(q{SELECT count(*) || ' ' || count(DISTINCT event_id) FROM streamkpi.listens}),
	"$produced $produced", 'each listen exactly once');
ok(StreamKPI::KPI::wait_applied($node, $produced), 'the KPI worker applied every listen');
StreamKPI::KPI::check_all($node, 'after the long run');

done_testing();
