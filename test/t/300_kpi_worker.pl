# The KPI worker against a real broker: pipelines for listens (two workers
# committing concurrently), tracks and users; the worker keeps the KPI tables
# equal to refresh_kpis() and to an independent computation over the raw
# events; a listen shows in daily_genre_kpis within 2 s of its commit; after
# SIGKILL of the KPI worker and of the postmaster in mid-stream, every event
# is still counted exactly once.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Temp qw(tempfile);
use IPC::Run;
use Time::HiRes qw(time);
use StreamKPI::Kafka;
use StreamKPI::KPI;
use StreamKPI::Node;

my $kafka = StreamKPI::Kafka->start('kpi');
$kafka->create_topic('listens', 4);
$kafka->create_topic('tracks', 1);
$kafka->create_topic('users', 1);
# restart_after_crash: a SIGKILLed worker makes the postmaster reinitialize,
# as in production (PostgreSQL::Test::Cluster turns it off by default).
my $node = StreamKPI::Node->new_node('kpi', timezone => "'UTC'", restart_after_crash => 'on');
my $bootstrap = $kafka->bootstrap;

sub sq { return $node->safe_psql('postgres', $_[0]); }

StreamKPI::Node::create_kpi_pipelines($node, $bootstrap, batch_size => 500);

ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'streamkpi kpi'}),
	'the launcher starts one KPI worker');
is(sq(q{SELECT count(*) FROM streamkpi.workers() WHERE kind = 'kpi'}), '1',
	'streamkpi.workers() shows it');

# ---- dimensions first: 40 tracks in 5 genres (t41..t45 stay unknown), 200 users
StreamKPI::Node::produce_tracks($kafka);
$kafka->produce('users', [ map {
	my $c = (qw(GH DE US))[ $_ % 3 ];
	my $s = $_ % 4 ? 'free' : 'premium';
	qq({"user_id":"u$_","age":@{[ 14 + $_ % 50 ]},"country":"$c","subscription":"$s"})
} 1 .. 200 ]);
sq(q{SELECT streamkpi.start_pipeline(p) FROM unnest(ARRAY['tracks', 'users', 'listens']) p});
ok($node->poll_query_until('postgres', q{
	SELECT (SELECT count(*) FROM streamkpi.tracks) = 40 AND (SELECT count(*) FROM streamkpi.users) = 200}),
	'tracks and users ingested');

# Events in the last 90 minutes (some cross midnight UTC when run then),
# deterministic pseudo-random.
my $seq = 0;
sub listen_lines
{
	my ($n) = @_;
	my @lines;
	for (1 .. $n)
	{
		$seq++;
		my $r = ($seq * 2654435761) % 4294967296;
		my $action = (qw(play play play skip like))[ $r % 5 ];
		my $ms = $r % 7 == 0 ? 'null' : 1000 + $r % 240000;
		my $region = (qw(eu us af))[ ($r >> 3) % 3 ];
		my $ago = ($r >> 5) % 5400;
		push @lines, sprintf(
			'{"event_id":"e%d","user_id":"u%d","track_id":"t%d","listened_at":"%s","ms_played":%s,"action":"%s","region":"%s","device":"%s"}',
			$seq, 1 + ($r >> 7) % 200, 1 + ($r >> 11) % 45, sql_time($ago), $ms, $action,
			$region, ($r >> 13) % 2 ? 'web' : 'mobile');
	}
	return \@lines;
}
my $now = time;
sub sql_time
{
	my ($ago) = @_;
	my @t = gmtime($now - $ago);
	return sprintf('%04d-%02d-%02dT%02d:%02d:%02dZ', $t[5] + 1900, $t[4] + 1, @t[ 3, 2, 1, 0 ]);
}
sub produce_listens
{
	my ($n) = @_;
	my $lines = listen_lines($n);
	for my $p (0 .. 3)
	{
		$kafka->produce('listens', [ @$lines[ grep { $_ % 4 == $p } 0 .. $#$lines ] ], partition => $p);
	}
	return;
}

sub wait_applied { return StreamKPI::KPI::wait_applied($node, @_); }
sub check_all { return StreamKPI::KPI::check_all($node, @_); }

# ---- 20,000 listens through two pipeline workers ----
produce_listens(20000);
ok(wait_applied(20000), '20,000 listens ingested and applied');
check_all('after 20,000 listens');

# ---- freshness under load ----
# Listens are produced at 14,000/s (7,000 every 0.5 s, 4 s) while the
# pipeline ingests them.  Every 0.1 s a sample takes the age of the oldest
# committed listen the KPI worker has not applied yet (from ingested_at, the
# start of its batch's transaction, so an upper bound of the time since its
# commit).  The outcome: while ingestion runs at >= 10,000 listens/s, in no
# sample is a listen committed more than 2 s ago missing from the KPI
# tables, and a marked listen of a new genre shows in daily_genre_kpis.
$kafka->produce('tracks', [ '{"track_id":"tf","track_name":"fresh","genre":"fresh","duration_ms":1000}' ]);
ok($node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM streamkpi.tracks WHERE track_id = 'tf'}),
	'track of the new genre ingested');
my $sample_sql = q{
	SELECT count(*),
		   coalesce(extract(epoch FROM max(clock_timestamp() - l.ingested_at)
				FILTER (WHERE NOT pg_visible_in_snapshot(l.ingest_xid, k.snapshot))), 0),
		   extract(epoch FROM clock_timestamp()),
		   bool_or(l.event_id = 'fresh1'),
		   EXISTS (SELECT FROM streamkpi.daily_genre_kpis WHERE genre = 'fresh' AND listen_count = 1)
	  FROM streamkpi.listens l, streamkpi.kpi_state k};
my (@samples, $t_seen, $t_shown);
my $worst = 0;
sub sample
{
	my ($n, $age, $t, $seen, $shown) = split /\|/, sq($sample_sql);
	push @samples, [ $n, $t ];
	$worst = $age if $age > $worst;
	$t_seen //= $t if $seen eq 't';
	$t_shown //= $t if $shown eq 't';
	return ($n, $age, $shown);
}
# the chunks are written first; each is produced by a kcat in the
# background so that sampling goes on meanwhile
my @files;
for my $k (0 .. 7)
{
	my $lines = listen_lines(7000);
	splice @$lines, 3000, 0, sprintf('{"event_id":"fresh1","user_id":"u1","track_id":"tf","listened_at":"%s","action":"play"}',
		sql_time(0)) if $k == 3;
	my ($fh, $file) = tempfile(DIR => $PostgreSQL::Test::Utils::tmp_check);
	print $fh map { "$_\n" } @$lines;
	close $fh;
	push @files, $file;
}
sample();
my $t0 = time;
my @producers;
for my $k (0 .. 7)
{
	push @producers, IPC::Run::start([ $kafka->producer_command('listens',
		'-X', 'linger.ms=5', '-l', $files[$k]) ]);
	do { sample(); select(undef, undef, undef, 0.1); } while (time < $t0 + 0.5 * ($k + 1));
}
$_->finish or die 'kcat failed' for @producers;
my $deadline = time + 60;
while (time < $deadline)
{
	my ($n, $age, $shown) = sample();
	last if $n == 76001 && $age == 0 && $shown eq 't';
	select(undef, undef, undef, 0.1);
}
# the ingestion rate: from the last sample before the load to the first
# with every listen
my ($before) = grep { $_->[0] == 20000 } reverse @samples;
my ($all) = grep { $_->[0] == 76001 } @samples;
my $rate = ($before && $all && $all->[1] > $before->[1])
  ? 56001 / ($all->[1] - $before->[1]) : 0;
note sprintf('56,001 listens ingested in %.1f s = %.0f listens/s; oldest unapplied committed listen: %.3f s '
	  . 'over %d samples; marked listen in KPIs %.3f s after its row was first seen',
	$all ? $all->[1] - $before->[1] : -1, $rate, $worst, scalar @samples, ($t_shown // 0) - ($t_seen // 0));
ok(defined $all, 'all 56,001 listens ingested');
cmp_ok($rate, '>=', 10000, 'ingestion ran at >= 10,000 listens/s');
cmp_ok($worst, '<', 2, 'in no sample was a listen committed more than 2 s ago missing from the KPI tables');
ok(defined $t_shown, 'the marked listen of a new genre shows in daily_genre_kpis');
ok(wait_applied(76001), '76,001 listens applied');

# ---- crash: SIGKILL the KPI worker, then the postmaster, mid-stream ----
produce_listens(15000);
ok($node->poll_query_until('postgres', q{SELECT count(*) > 77000 FROM streamkpi.listens}),
	'ingestion is under way');
my $kpi_pid = sq(q{SELECT pid FROM streamkpi.workers() WHERE kind = 'kpi'});
ok($kpi_pid > 0, 'the KPI worker runs');
kill 'KILL', $kpi_pid;
ok($node->poll_query_until('postgres', qq{
	SELECT count(*) = 1 FROM streamkpi.workers() WHERE kind = 'kpi' AND pid <> $kpi_pid}),
	'after SIGKILL a new KPI worker runs');
produce_listens(15000);
ok($node->poll_query_until('postgres', q{SELECT count(*) > 92000 FROM streamkpi.listens}),
	'ingestion is under way again');
ok(StreamKPI::Node::kill9_and_restart($node), 'the server starts again after SIGKILL of the postmaster');
ok(wait_applied(106001), 'after SIGKILL of the postmaster and a restart all 106,001 listens are applied');
is(sq(q{SELECT count(*), count(DISTINCT event_id) FROM streamkpi.listens}), '106001|106001',
	'each listen ingested exactly once');
is(sq(q{SELECT sum(listen_count) FROM streamkpi.daily_genre_kpis}),
	sq(q{SELECT count(*) FROM streamkpi.listens WHERE action = 'play'}),
	'each play counted exactly once');
check_all('after the crashes');
is(sq(q{SELECT count(*) FROM streamkpi.dead_letters}), '0', 'no dead letters');

# ---- day partitions as data arrives (the worker's maintenance, every 10 s) ----
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 3 FROM pg_catalog.pg_class
	 WHERE relnamespace = 'streamkpi'::regnamespace
	   AND relname IN (SELECT 'listens_p' || to_char(d, 'YYYYMMDD')
						 FROM generate_series(current_date - 1, current_date + 1, interval '1 day') d)}),
	'the KPI worker keeps yesterday, today and tomorrow partitioned');
sq(q{INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at)
	 VALUES ('three-days-ago', 'u1', 't1', now() - interval '3 days')});
is(sq(q{SELECT count(*) FROM streamkpi.listens_default}), '1',
	'a listen of a day without a partition lands in the default partition');
ok($node->poll_query_until('postgres', q{
	SELECT (SELECT count(*) FROM streamkpi.listens_default) = 0
	   AND (SELECT relname FROM pg_catalog.pg_class c, streamkpi.listens l
			 WHERE c.oid = l.tableoid AND l.event_id = 'three-days-ago')
		   = 'listens_p' || to_char(current_date - 3, 'YYYYMMDD')}),
	'the KPI worker moves it into a partition of its day');

done_testing();
