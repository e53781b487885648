# The KPI tables checked against refresh_kpis() and against an independent
# computation over streamkpi.listens, tracks and users (plain SQL that
# shares nothing with the KPI worker's code).
#
#   StreamKPI::KPICheck::wait_applied($node, 20000);     # worker caught up
#   StreamKPI::KPICheck::check_all($node, 'after the crashes');   # 4 tests
package StreamKPI::KPICheck;

use strict;
use warnings;

use Test::More;

# The KPI tables as text rows (updated_at left out).
our $kpi_rows = q{
	SELECT string_agg(r, E'\n' ORDER BY r) FROM (
	SELECT 'k' || ROW(day, genre, listen_count, unique_listeners, total_listen_ms, avg_listen_ms_per_user)::text r
	  FROM streamkpi.daily_genre_kpis
	UNION ALL SELECT 'tt' || t::text FROM streamkpi.daily_genre_top_tracks t
	UNION ALL SELECT 'tg' || t::text FROM streamkpi.daily_top_genres t
	UNION ALL SELECT 'tr' || t::text FROM streamkpi.trending t
	UNION ALL SELECT 'tw' || t::text FROM streamkpi.track_windows t
	UNION ALL SELECT 'en' || t::text FROM streamkpi.daily_engagement t) x};

# Independent: daily genre KPIs straight from listens, tracks and users.
our $independent = q{
	SELECT string_agg(ROW(d, g, n, u, ms)::text, E'\n' ORDER BY ROW(d, g, n, u, ms)::text) FROM (
	SELECT (l.listened_at AT TIME ZONE 'UTC')::date AS d, coalesce(t.genre, 'unknown') AS g,
		   count(*) AS n, count(DISTINCT l.user_id) AS u,
		   sum(coalesce(l.ms_played, t.duration_ms, 0)) AS ms
	  FROM streamkpi.listens l LEFT JOIN streamkpi.tracks t USING (track_id)
	 WHERE l.action = 'play' GROUP BY 1, 2) x};
our $from_kpis = q{
	SELECT string_agg(r, E'\n' ORDER BY r) FROM (
	SELECT ROW(day, genre, listen_count, unique_listeners, total_listen_ms)::text r
	  FROM streamkpi.daily_genre_kpis) x};

# Applied: $events listens, every one visible in the worker's snapshot.
sub wait_applied
{
	my ($node, $events) = @_;
	return $node->poll_query_until('postgres', qq{
		SELECT (SELECT count(*) FROM streamkpi.listens) = $events
		   AND NOT EXISTS (SELECT FROM streamkpi.listens
							WHERE NOT pg_visible_in_snapshot(ingest_xid,
									(SELECT snapshot FROM streamkpi.kpi_state)))});
}

sub check_all
{
	my ($node, $what) = @_;
	my $sq = sub { return $node->safe_psql('postgres', $_[0]); };
	my $incremental = $sq->($kpi_rows);
	is($sq->($from_kpis), $sq->($independent),
		"$what: daily_genre_kpis equal an independent computation over listens");
	is($sq->(q{SELECT count(*) FROM streamkpi.daily_genre_kpis}) > 0 ? 1 : 0, 1, "$what: KPI rows exist");
	$sq->(q{SELECT streamkpi.refresh_kpis(min((listened_at AT TIME ZONE 'UTC')::date) - 1,
										max((listened_at AT TIME ZONE 'UTC')::date) + 1)
		   FROM streamkpi.listens});
	my $refreshed = $sq->($kpi_rows);
	ok($incremental eq $refreshed, "$what: every KPI table equals refresh_kpis()")
	  or diag("incremental:\n" . substr($incremental, 0, 3000) . "\nrefresh:\n" . substr($refreshed, 0, 3000));
	# the worker applies nothing twice after the refresh
	my $rounds = $sq->(q{SELECT rounds FROM streamkpi.kpi_state});
	$node->poll_query_until('postgres', qq{SELECT rounds > $rounds OR NOT EXISTS (SELECT FROM streamkpi.kpi_refreshed)
		FROM streamkpi.kpi_state});
	is($sq->($kpi_rows), $refreshed, "$what: and stays so after the worker's next round");
	return;
}

1;
