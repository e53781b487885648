# pg_cron jobs: schedule_jobs() fails clearly without pg_cron, registers the
# three jobs idempotently with it, and the jobs really run (pg_cron 1.4 runs
# at most once a minute: the test moves them to '* * * * *' and waits for
# one run, so this file takes about a minute).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use StreamKPI::Node;

my $node = StreamKPI::Node->new_node('cron',
	shared_preload_libraries => "'streamkpi, pg_cron'",
	'cron.database_name' => "'postgres'",
	'cron.use_background_workers' => 'on',
	timezone => "'UTC'");

sub sq { return $node->safe_psql('postgres', $_[0]); }

# ---- without pg_cron ----
my ($rc, $out, $err) = $node->psql('postgres', 'SELECT * FROM streamkpi.schedule_jobs()');
like($err, qr/ERROR:  pg_cron is not installed in database "postgres"/,
	'schedule_jobs() without pg_cron: a clear error');
like($err, qr/HINT:  Add pg_cron to shared_preload_libraries.*CREATE EXTENSION pg_cron/,
	'with a hint saying what to do');
($rc, $out, $err) = $node->psql('postgres', 'SELECT streamkpi.unschedule_jobs()');
like($err, qr/pg_cron is not installed/, 'unschedule_jobs() too');

# ---- registered, idempotently ----
sq('CREATE EXTENSION pg_cron');
my $first = sq(q{SELECT string_agg(jobid || ' ' || jobname || ' ' || schedule, E'\n' ORDER BY jobname)
				   FROM streamkpi.schedule_jobs()});
like($first, qr/streamkpi-data-checks .*\n.* streamkpi-nightly-correction 15 0 \* \* \*\n.* streamkpi-retention /,
	'three jobs registered');
my $again = sq(q{SELECT string_agg(jobid || ' ' || jobname || ' ' || schedule, E'\n' ORDER BY jobname)
				   FROM streamkpi.schedule_jobs()});
is($again, $first, 'scheduling again keeps the same jobs');
is(sq(q{SELECT count(*) FROM cron.job WHERE jobname LIKE 'streamkpi-%'}), '3', 'three jobs in cron.job');

# ---- the jobs run ----
# Something for each to do: listens of today of tracks not known yet
# (correction), their counts (checks), a partition older than retention
# (archive).
sq(q{
	SELECT streamkpi.ensure_listens_partitions(now() - interval '2 minutes', now());
	INSERT INTO streamkpi.listens (user_id, track_id, listened_at)
	SELECT 'u' || i, 't' || (i % 5), now() - i * interval '1 s' FROM generate_series(1, 100) i;
	SELECT streamkpi.ensure_listens_partitions('2001-02-03 10:00+00', '2001-02-03 10:00+00');
});
# the KPI worker applies the listens under genre 'unknown'
ok($node->poll_query_until('postgres', q{
	SELECT coalesce(sum(listen_count), 0) = 100 AND bool_and(genre = 'unknown')
	  FROM streamkpi.daily_genre_kpis}),
	'the KPI worker applied the listens, under genre unknown');
# then the tracks arrive; only the nightly correction moves the listens
sq(q{
	INSERT INTO streamkpi.tracks (track_id, genre) SELECT 't' || i, 'rock' FROM generate_series(0, 4) i;
	ALTER SYSTEM SET streamkpi.retention = '10 years';
	SELECT pg_reload_conf();
	SELECT cron.alter_job(jobid, schedule => '* * * * *') FROM cron.job WHERE jobname LIKE 'streamkpi-%';
});
{
	local $PostgreSQL::Test::Utils::timeout_default = 150;
	ok($node->poll_query_until('postgres', q{
		SELECT count(DISTINCT j.jobname) = 3
		  FROM cron.job_run_details d JOIN cron.job j USING (jobid)
		 WHERE j.jobname LIKE 'streamkpi-%' AND d.status = 'succeeded'}),
		'each of the three jobs ran and succeeded (cron.job_run_details)')
	  or diag(sq(q{SELECT string_agg(jobid || ' ' || status || ' ' || coalesce(return_message, ''), E'\n')
					 FROM cron.job_run_details}));
}
is(sq(q{SELECT count(*) FROM cron.job_run_details WHERE status = 'failed'}), '0', 'no job run failed');
is(sq(q{SELECT string_agg(DISTINCT genre, ',') || ' ' || sum(listen_count) FROM streamkpi.daily_genre_kpis}),
	'rock 100', 'the nightly-correction job moved the listens from unknown to their genre');
is(sq(q{SELECT count(DISTINCT check_name) || ' ' || bool_and(ok) FROM streamkpi.data_checks
		   WHERE check_name IN ('raw_vs_kpi', 'kpi_lag', 'dead_letters')}),
	'3 true', 'the data-check job recorded its findings: raw = KPI, no dead letters, no lag');
is(sq(q{SELECT count(*) FROM pg_tables WHERE schemaname = 'streamkpi_archive' AND tablename = 'listens_p20010203'}),
	'1', 'the retention job moved the old partition into streamkpi_archive');
is(sq(q{SELECT count(*) FROM pg_inherits WHERE inhrelid = 'streamkpi_archive.listens_p20010203'::regclass}),
	'0', 'detached from listens');

# ---- unscheduled ----
is(sq('SELECT streamkpi.unschedule_jobs()'), '3', 'unschedule_jobs() removes the three jobs');
is(sq(q{SELECT count(*) FROM cron.job}), '0', 'none left');

done_testing();
