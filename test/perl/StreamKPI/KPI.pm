# What the KPI worker tests check, for any node: the KPI tables as text
# rows, an independent computation of daily_genre_kpis straight from
# listens and tracks, and the comparisons with it and with refresh_kpis().
#
#   use StreamKPI::KPI;
#   StreamKPI::KPI::worker_runs($node);
#   StreamKPI::KPI::wait_applied($node, 20000);
#   StreamKPI::KPI::check_all($node, 'after 20,000 listens');
package StreamKPI::KPI;

use strict;
use warnings;

use Test::More;

# Every KPI table as sorted text rows (updated_at left out).
our $kpi_rows = q{
	SELECT string_agg(r, E'\n' ORDER BY r) FROM (
	SELECT 'k' || ROW(day, genre, listen_count, unique_listeners, total_listen_ms, avg_listen_ms_per_user)::text r
	  FROM streamkpi.daily_genre_kpis
	UNION ALL SELECT 'tt' || t::text FROM streamkpi.daily_genre_top_tracks t
	UNION ALL SELECT 'tg' || t::text FROM streamkpi.daily_top_genres t
	UNION ALL SELECT 'tr' || t::text FROM streamkpi.trending t
	UNION ALL SELECT 'tw' || t::text FROM streamkpi.track_windows t
	UNION ALL SELECT 'en' || t::text FROM streamkpi.daily_engagement t) x};

# Independent: daily genre KPIs (UTC days) straight from listens and tracks.
# Unique listeners are exact while a day and genre has fewer than about
# 1,280 of them (hll's explicit form): keep the tests' users below that.
our $independent = q{
	SELECT string_agg(ROW(d, g, n, u, ms)::text, E'\n' ORDER BY ROW(d, g, n, u, ms)::text) FROM (
	SELECT (l.listened_at AT TIME ZONE 'UTC')::date AS d, coalesce(t.genre, 'unknown') AS g,
		   count(*) AS n, count(DISTINCT l.user_id) AS u,
		   sum(coalesce(l.ms_played, t.duration_ms, 0)) AS ms
	  FROM streamkpi.listens l LEFT JOIN streamkpi.tracks t USING (track_id)
	 WHERE l.action = 'play' GROUP BY 1, 2) x};

# The same columns of daily_genre_kpis.
our $from_kpis = q{
	SELECT string_agg(r, E'\n' ORDER BY r) FROM (
	SELECT ROW(day, genre, listen_count, unique_listeners, total_listen_ms)::text r
	  FROM streamkpi.daily_genre_kpis) x};

# Wait until $events listens are in and every committed one is applied:
# visible in the KPI worker's snapshot.
sub wait_applied
{
	my ($node, $events) = @_;
	return $node->poll_query_until('postgres', qq{
		SELECT (SELECT count(*) FROM streamkpi.listens) = $events
		   AND NOT EXISTS (SELECT FROM streamkpi.listens
							WHERE NOT pg_visible_in_snapshot(ingest_xid,
									(SELECT snapshot FROM streamkpi.kpi_state)))});
}

# Pass when the node's KPI worker runs (it starts with the server).
sub worker_runs
{
	my ($node) = @_;
	ok($node->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'streamkpi kpi'}),
		'the KPI worker runs');
}

# daily_genre_kpis equal the independent computation; every KPI table
# equals refresh_kpis() of all days with listens, and still does after the
# worker's next round (it applies nothing twice).
sub check_all
{
	my ($node, $what) = @_;
	my $sq = sub { return $node->safe_psql('postgres', $_[0]); };
	my $incremental = $sq->($kpi_rows);
	is($sq->($from_kpis), $sq->($independent),
		"$what: daily_genre_kpis equal an independent computation over listens");
	is($sq->(q{SELECT count(*) FROM streamkpi.daily_genre_kpis}) > 0 ? 1 : 0, 1,
		"$what: KPI rows exist");
	$sq->(q{SELECT streamkpi.refresh_kpis(min((listened_at AT TIME ZONE 'UTC')::date) - 1,
										   max((listened_at AT TIME ZONE 'UTC')::date) + 1)
			  FROM streamkpi.listens});
	my $refreshed = $sq->($kpi_rows);
	ok($incremental eq $refreshed, "$what: every KPI table equals refresh_kpis()")
	  or diag("incremental:\n" . substr($incremental, 0, 3000) . "\nrefresh:\n" . substr($refreshed, 0, 3000));
	my $rounds = $sq->(q{SELECT rounds FROM streamkpi.kpi_state});
	$node->poll_query_until('postgres', qq{SELECT rounds > $rounds OR NOT EXISTS (SELECT FROM streamkpi.kpi_refreshed)
		FROM streamkpi.kpi_state});
	is($sq->($kpi_rows), $refreshed, "$what: and stays so after the worker's next round");
	return;
}

1;
