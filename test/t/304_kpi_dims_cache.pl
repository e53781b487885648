# The KPI worker's cache of tracks and users (src/kpi_dims_cache.c) while
# writers race its rounds: pgbench clients commit, concurrently, large
# batches of listens of known tracks and users (rounds that read both
# tables whole and keep them) and small transactions that each add a track
# and a user with listens of them.  A round that counted such listens with
# a cache from before their transaction would count them under 'unknown';
# none may, and every KPI table equals refresh_kpis() and an independent
# computation afterwards.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use StreamKPI::KPI;
use StreamKPI::Node;

my $node = StreamKPI::Node->new_node('dims', timezone => "'UTC'",
	'streamkpi.kpi_naptime' => "'20ms'", log_min_messages => 'debug1');
sub sq { return $node->safe_psql('postgres', $_[0]); }

StreamKPI::KPI::worker_runs($node);

sq(q{
	INSERT INTO streamkpi.tracks (track_id, track_name, genre, duration_ms)
	SELECT 't' || i, 'track ' || i, (ARRAY['rock', 'pop', 'jazz'])[1 + i % 3], 180000
	  FROM generate_series(1, 100) i;
	INSERT INTO streamkpi.users (user_id, age, country, subscription)
	SELECT 'u' || i, 18 + i % 50, (ARRAY['DE', 'GH', 'US'])[1 + i % 3], 'free'
	  FROM generate_series(1, 400) i;
	CREATE SEQUENCE public.k;
	SELECT streamkpi.ensure_listens_partitions(now() - interval '2 days', now() + interval '1 day');
});

my $dir = PostgreSQL::Test::Utils::tempdir;
# 1,100 listens of known tracks and users: a round of them reads both whole
PostgreSQL::Test::Utils::append_to_file("$dir/batch.sql", q{
SELECT nextval('public.k') AS k \gset
INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played, action)
SELECT 'a' || :k || '_' || i, 'u' || (1 + i % 400), 't' || (1 + i % 100),
	   now() - interval '1 second' * i, 1000 + i, 'play'
  FROM generate_series(1, 1100) i;
});
# a new track and user, with listens of them, in one transaction
PostgreSQL::Test::Utils::append_to_file("$dir/new.sql", q{
SELECT nextval('public.k') AS k \gset
BEGIN;
INSERT INTO streamkpi.tracks (track_id, track_name, genre, duration_ms)
VALUES ('n' || :k, 'new ' || :k, 'g' || (:k % 7), 200000);
INSERT INTO streamkpi.users (user_id, age, country, subscription)
VALUES ('v' || :k, 30, 'c' || (:k % 5), 'premium');
INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played, action)
SELECT 'b' || :k || '_' || i, 'v' || :k, 'n' || :k, now() - interval '1 second' * i, NULL, 'play'
  FROM generate_series(1, 5) i;
END;
});
$node->command_ok(
	[ 'pgbench', '-n', '-T', '6', '-R', '200', '-c', '3', '-j', '3', '-f', "$dir/batch.sql\@1",
	  '-f', "$dir/new.sql\@6", '-h', $node->host, '-p', $node->port, 'postgres' ],
	'pgbench writers');

my $listens = sq(q{SELECT count(*) FROM streamkpi.listens});
my $new = sq(q{SELECT count(*) FROM streamkpi.tracks WHERE track_id LIKE 'n%'});
note("$listens listens, $new new tracks and users");
ok($new > 50, 'the writers added tracks and users');
ok(StreamKPI::KPI::wait_applied($node, $listens), 'every listen applied');
# Two more batches, a round each: the second finds the tables as the first
# read them (statistics first, so that no autovacuum changes them between).
sq(q{VACUUM ANALYZE streamkpi.tracks, streamkpi.users});
for my $i (1 .. 2)
{
	sq(qq{INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played, action)
		  SELECT 'z$i' || '_' || i, 'u' || (1 + i % 400), 't' || (1 + i % 100),
				 now() - interval '1 second' * i, 1000 + i, 'play'
			FROM generate_series(1, 1100) i});
	$listens += 1100;
	ok(StreamKPI::KPI::wait_applied($node, $listens), "batch $i applied");
}
is(sq(q{SELECT count(*) FROM streamkpi.daily_engagement
		 WHERE value = 'unknown' AND dimension IN ('genre', 'subscription', 'age_group', 'country')}),
	'0', 'no listen counted without its track or user');
StreamKPI::KPI::check_all($node, 'after the race');

# the rounds did use the cache they kept: whole tables, not read again
my $log = slurp_file($node->logfile);
my $kept = () = $log =~ /KPI dims cache: shared, [1-9]\d* tracks \(all\) and [1-9]\d* users \(all\) held/g;
my $shared = () = $log =~ /KPI dims cache: shared/g;
note("$shared rounds checked the shared cache, $kept of them found both tables whole in it");
ok($kept > 0, 'rounds kept both tables whole from an earlier round');

done_testing();
