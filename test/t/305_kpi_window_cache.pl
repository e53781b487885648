# The KPI worker's caches of window part 0 (src/kpi_window.c) and of the
# day users sketches (src/kpi_users_cache.c): a round takes the counters
# of a window, and the users of a day key, it wrote or read in an earlier
# round from memory, but only while the stored row is still that version.
# Here refresh_kpis() rewrites a window and the day between two rounds
# with listens, of users the worker never saw, that it never saw either
# (committed with the refresh, so the worker skips them): a round that
# trusted its caches would drop them from the window and the day's unique
# listeners and engaged users.  Then
# rounds alternate between two minutes half an hour apart: each takes the
# windows the round before it did not write from the cache, and a refresh
# of one minute while the cache holds it from two rounds back must not be
# lost either.  Every round's window counters must equal an independent
# count over the raw listens, and every KPI table must equal refresh_kpis().
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use StreamKPI::KPI;
use StreamKPI::Node;

my $node = StreamKPI::Node->new_node('wcache', timezone => "'UTC'",
	'streamkpi.kpi_naptime' => "'20ms'", log_min_messages => 'debug1');
sub sq { return $node->safe_psql('postgres', $_[0]); }

StreamKPI::KPI::worker_runs($node);
my $pid = sq(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'streamkpi kpi'});
sq(q{SELECT streamkpi.ensure_listens_partitions(now() - interval '1 day', now() + interval '1 day')});

# all listens in one minute ten minutes ago: one window of each size
my $minute = sq(q{SELECT date_trunc('minute', now() - interval '10 minutes')});
my $n = 0;
sub insert_sql
{
	my ($count, $at, $users) = @_;
	my $first = $n + 1;
	$at //= $minute;
	$users //= q{'u' || (i % 7)};
	$n += $count;
	return qq{INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played, action)
		SELECT 'e' || i, $users, 't' || (i % 5), '$at'::timestamptz + interval '1 ms' * i,
			   1000, 'play'
		  FROM generate_series($first, $n) i};
}

# per day and genre, unique listeners shown and counted from listens
# (exact: far fewer users than hll's explicit limit); per day, the users
# engaged on every dimension's values, shown and counted
my $listeners_shown = q{SELECT string_agg(day || ' ' || genre || ':' || unique_listeners, ' ' ORDER BY day, genre)
	FROM streamkpi.daily_genre_kpis};
my $listeners_counted = q{SELECT string_agg(d || ' ' || g || ':' || u, ' ' ORDER BY d, g)
	FROM (SELECT (l.listened_at AT TIME ZONE 'UTC')::date d, coalesce(t.genre, 'unknown') g,
				 count(DISTINCT l.user_id) u
			FROM streamkpi.listens l LEFT JOIN streamkpi.tracks t USING (track_id) GROUP BY 1, 2) x};
my $engaged_shown = q{SELECT string_agg(DISTINCT day || ':' || unique_users, ' ')
	FROM streamkpi.daily_engagement WHERE dimension = 'region'};
my $engaged_counted = q{SELECT string_agg(d || ':' || u, ' ')
	FROM (SELECT (listened_at AT TIME ZONE 'UTC')::date d, count(DISTINCT user_id) u
			FROM streamkpi.listens GROUP BY 1) x};

# the 1-minute window's plays per track in track_windows, and counted
# from listens
my $shown = q{SELECT string_agg(track_id || ':' || total_listens, ' ' ORDER BY track_id)
	FROM streamkpi.track_windows WHERE window_size = '1 minute'};
my $counted = q{SELECT string_agg(track_id || ':' || c, ' ' ORDER BY track_id)
	FROM (SELECT track_id, count(*) c FROM streamkpi.listens GROUP BY 1) x};

sub applied { return StreamKPI::KPI::wait_applied($node, $n); }

sq(insert_sql(300));
ok(applied(), 'the first listens applied');
is(sq($shown), sq($counted), 'the window holds them');

# listens that refresh_kpis() counts before the worker sees them: the
# session holds the KPI lock, so no round starts between their commit and
# the refresh, which rewrites the window with them; the worker skips them
is(sq($listeners_shown), sq($listeners_counted), 'the day holds their listeners');
sq(q{SELECT pg_advisory_lock(streamkpi.kpi_lock_key());
	} . insert_sql(200, undef, q{'n' || (i % 11)}) . q{;
	SELECT streamkpi.refresh_kpis(current_date - 1, current_date);
	SELECT pg_advisory_unlock(streamkpi.kpi_lock_key());});
is(sq($shown), sq($counted), 'refresh_kpis() rewrote the window with them');
is(sq($listeners_shown), sq($listeners_counted), 'and the day with their new listeners');

# the worker's next round adds to the window and the day it wrote before
# the refresh
sq(insert_sql(100));
ok(applied(), 'the next listens applied');
is(sq($shown), sq($counted),
	'the window holds every listen: the round read the refreshed row, not its cache');
is(sq($listeners_shown), sq($listeners_counted),
	"the day's unique listeners count the refresh's listeners: the round read the refreshed sketches, not its cache");
is(sq($engaged_shown), sq($engaged_counted),
	"and so do the day's engaged users");
is(sq(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'streamkpi kpi'}), $pid,
	'one KPI worker did all rounds (its cache lived throughout)');

# and the rounds after that, from the cache again
for my $k (1 .. 3)
{
	sq(insert_sql(50));
	ok(applied(), "round $k applied");
}
is(sq($shown), sq($counted), 'rounds that take the window from the cache count every listen');

# two minutes in different 10-minute windows; per window of every size,
# its plays per track, shown and counted
my $other = sq(q{SELECT date_trunc('minute', now() - interval '40 minutes')});
my $shown_all = q{SELECT string_agg(window_size || ' ' || window_start || ' ' || track_id
		|| ':' || total_listens, ' ' ORDER BY window_size, window_start, track_id)
	FROM streamkpi.track_windows};
my $counted_all = q{SELECT string_agg(w.window_size || ' ' || x.s || ' ' || x.track_id
		|| ':' || x.c, ' ' ORDER BY w.window_size, x.s, x.track_id)
	FROM streamkpi.trending_windows w
	CROSS JOIN LATERAL (SELECT date_bin(w.window_size, l.listened_at, '2000-01-01 00:00+00') s,
							   l.track_id, count(*) c
						  FROM streamkpi.listens l GROUP BY 1, 2) x};
sq(insert_sql(40, $other));
ok(applied(), 'a round of the other minute applied');
my $log_offset = -s $node->logfile;
sq(insert_sql(40));
ok(applied(), 'a round of the first minute again applied');
like(slurp_file($node->logfile, $log_offset),
	qr/KPI windows: 3 windows \(part 0 of 3 from the cache\)/,
	'that round took the windows the round before it did not write from the cache');
sq(insert_sql(40, $other));
ok(applied(), 'a round of the other minute applied');
sq(q{SELECT pg_advisory_lock(streamkpi.kpi_lock_key());
	} . insert_sql(30) . q{;
	SELECT streamkpi.refresh_kpis(current_date - 1, current_date);
	SELECT pg_advisory_unlock(streamkpi.kpi_lock_key());});
sq(insert_sql(20));
ok(applied(), 'a round of the first minute after its refresh applied');
is(sq($shown_all), sq($counted_all),
	'every window holds every listen: the round read the refreshed rows, not what it cached two rounds before');
StreamKPI::KPI::check_all($node, 'at the end');

done_testing();
