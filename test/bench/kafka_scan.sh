#!/usr/bin/env bash
# Benchmark of the Kafka foreign table (issue 3): on 1,000,000 JSON listen
# events (8 fields, ~150 bytes) in a 4-partition topic, in one run:
#   produce   INSERT INTO foreign_table SELECT ... (1,000,000 messages)
#   (a)       INSERT INTO local_table SELECT ... FROM foreign_table
#   (b)       COPY local_table FROM a CSV file of the same rows
# Each of (a) and (b) runs 3 times; the best time counts.  Prints events/s
# and the ratio a/b (target >= 0.5).  Runs its own broker and PostgreSQL.
#
#   test/bench/kafka_scan.sh [events]      (default 1000000)
#   BENCH_SERVER_OPTIONS="queued_max_messages_kbytes '65536'" adds server options
set -euo pipefail

events=${1:-${BENCH_EVENTS:-1000000}}
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init kafka
bench_broker bench
bench_postgres <<CONF
search_path = 'public'
synchronous_commit = off
CONF

"${psql[@]}" <<SQL
CREATE EXTENSION streamkpi CASCADE;
CREATE SERVER kafka FOREIGN DATA WRAPPER streamkpi_kafka
  OPTIONS (brokers '$bootstrap'${BENCH_SERVER_OPTIONS:+, $BENCH_SERVER_OPTIONS});
$(bench_listens_sql src "$events")
CREATE TABLE dst (LIKE src);
CREATE FOREIGN TABLE kafka_listens (event_id text, user_id text, track_id text,
  listened_at timestamptz, ms_played int, action text, region text, device text)
  SERVER kafka OPTIONS (topic 'bench', format 'json');
COPY src TO '$work/listens.csv' WITH (FORMAT csv);
VACUUM ANALYZE src;
SQL

# seconds a statement takes, measured by the server
timed() {
	"${psql[@]}" -At <<SQL
\\set ON_ERROR_STOP 1
TRUNCATE dst;
CHECKPOINT;
SELECT clock_timestamp() AS t0 \\gset
$1;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric, 3);
SQL
}

produce=$(timed "INSERT INTO kafka_listens SELECT * FROM src")
best_a=999999
best_b=999999
for run in 1 2 3; do
	b=$(timed "COPY dst FROM '$work/listens.csv' WITH (FORMAT csv)")
	c=$(timed "INSERT INTO dst SELECT * FROM src")
	s=$(timed "SET max_parallel_workers_per_gather = 0; SELECT count(*) FROM kafka_listens WHERE ms_played < 0" | tail -1)
	p=$(timed "SELECT count(*) FROM kafka_listens WHERE ms_played < 0" | tail -1)
	a=$(timed "INSERT INTO dst SELECT event_id, user_id, track_id, listened_at, ms_played, action, region, device FROM kafka_listens")
	echo "run $run: (a) ${a}s, (b) ${b}s; for reference: INSERT...SELECT from a local table ${c}s, the foreign scan alone ${s}s serial, ${p}s parallel"
	best_a=$(echo "if ($a < $best_a) $a else $best_a" | bc)
	best_b=$(echo "if ($b < $best_b) $b else $best_b" | bc)
done

# PostgreSQL 15 never runs INSERT ... SELECT in parallel, so (a) is serial;
# a plain SELECT of a large topic is parallel when workers are available
workers=$("${psql[@]}" -At -c "EXPLAIN SELECT count(*) FROM kafka_listens WHERE ms_played < 0" |
	sed -n 's/.*Workers Planned: //p')
echo "the parallel foreign scan above planned ${workers:-no} workers"
check=$("${psql[@]}" -At -c "SELECT (SELECT count(*) FROM dst) || ' rows, ' || (SELECT count(*) FROM (SELECT * FROM dst EXCEPT ALL SELECT * FROM src) d) || ' differ'")
echo "last foreign scan loaded $check"
printf 'produce (INSERT into the foreign table): %d events in %ss = %.0f events/s\n' \
	"$events" "$produce" "$(echo "$events / $produce" | bc -l)"
printf '(a) INSERT ... SELECT FROM the foreign table: %.0f events/s\n' "$(echo "$events / $best_a" | bc -l)"
printf '(b) COPY FROM csv:                           %.0f events/s\n' "$(echo "$events / $best_b" | bc -l)"
printf 'ratio a/b = %.2f (target >= 0.5)\n' "$(echo "$best_b / $best_a" | bc -l)"
