# What the Sparkify TAP tests share.
#
#   ok($node->poll_query_until('postgres', StreamKPI::Sparkify::caught_up_query()));
#   StreamKPI::Sparkify::same_rows($node, 'daily_churn', $expected_sql, $actual_sql);
package StreamKPI::Sparkify;

use strict;
use warnings;

use Test::More ();

# True once both Sparkify pipelines have committed up to the high watermarks
# of their topics.
sub caught_up_query
{
	return q{
	SELECT count(*) = 0 FROM (
		SELECT 'sparkify_events' AS p, * FROM streamkpi.kafka_watermarks('streamkpi.kafka_sparkify_events')
		UNION ALL
		SELECT 'sparkify_songs', * FROM streamkpi.kafka_watermarks('streamkpi.kafka_sparkify_songs')) w
	  LEFT JOIN streamkpi.pipeline_offsets o ON o.pipeline = w.p AND o.partition = w.partition
	 WHERE w.high > coalesce(o.next_offset, w.low)};
}

# The two queries give the same multiset of rows (none missing, none more,
# none twice); the test names how many.
sub same_rows
{
	my ($node, $name, $expected, $actual, $what) = @_;
	$what //= 'the independent computation';
	my $diff = $node->safe_psql('postgres', qq{SELECT count(*) FROM ((($expected) EXCEPT ALL ($actual))
		UNION ALL (($actual) EXCEPT ALL ($expected))) d});
	my $n = $node->safe_psql('postgres', "SELECT count(*) FROM ($expected) e");
	Test::More::is($diff, '0', "$name: all $n rows equal $what, none more, none twice");
	return;
}

1;
