#!/usr/bin/env bash
# Benchmark of the KPI worker's cost to ingestion (issue 6): sustained
# throughput of pipeline + KPI worker against the pipeline alone, in one run
# on one instance and broker.  BENCH_KPI_EVENTS (default 300,000) JSON listen
# events wait in each of two 4-partition topics; then
#   (a) the KPI worker off: a pipeline ingests topic a into streamkpi.listens;
#       events/s = events / time until the last one is committed;
#   (b) the KPI worker on: a pipeline ingests topic b; events/s = events /
#       time until the last one is committed AND applied to the KPI tables
#       (the time until the last one is committed is printed too).
# Prints both and the ratio b/a (target >= 0.7).
set -euo pipefail

events=${1:-${BENCH_KPI_EVENTS:-300000}}
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init kpitp
bench_broker bench_a bench_b
bench_postgres <<CONF
streamkpi.database = 'postgres'
streamkpi.kpi_worker = off
search_path = 'public'
max_worker_processes = 32
CONF

# Listens of the last hour: 2,000 tracks in 8 genres, 20,000 users.
"${psql[@]}" <<SQL
CREATE EXTENSION streamkpi CASCADE;
CREATE SERVER kafka FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (brokers '$bootstrap');
INSERT INTO streamkpi.tracks (track_id, track_name, genre, duration_ms)
SELECT 't' || i, 'track ' || i,
	   (ARRAY['rock', 'pop', 'jazz', 'folk', 'metal', 'hiphop', 'classical', 'soul'])[1 + i % 8],
	   120000 + i * 37 FROM generate_series(1, 2000) i;
INSERT INTO streamkpi.users (user_id, age, country, subscription)
SELECT 'u' || i, 15 + i % 60, (ARRAY['GH', 'DE', 'US', 'NG', 'FR'])[1 + i % 5],
	   CASE WHEN i % 3 = 0 THEN 'premium' ELSE 'free' END FROM generate_series(1, 20000) i;
CREATE TABLE src AS
SELECT 'e' || i AS event_id, 'u' || (1 + (i::bigint * 7919) % 20000) AS user_id,
	   't' || (1 + ((i::bigint * 104729) % 2000) * ((i::bigint * 31) % 2000) / 2000) AS track_id,
	   now() - interval '1 hour' + (i::float8 / $events) * interval '1 hour' AS listened_at,
	   CASE WHEN i % 9 = 0 THEN NULL ELSE (5000 + (i::bigint * 13) % 200000)::int END AS ms_played,
	   (ARRAY['play', 'play', 'play', 'play', 'skip', 'like'])[1 + i % 6] AS action,
	   (ARRAY['eu', 'us', 'af'])[1 + i % 3] AS region,
	   (ARRAY['mobile', 'web', 'tv'])[1 + i % 3] AS device
  FROM generate_series(1, $events) i;
SELECT streamkpi.ensure_listens_partitions(min(listened_at), max(listened_at)) FROM src \g /dev/null
CREATE FOREIGN TABLE kafka_a (event_id text, user_id text, track_id text,
  listened_at timestamptz, ms_played int, action text, region text, device text)
  SERVER kafka OPTIONS (topic 'bench_a', format 'json');
CREATE FOREIGN TABLE kafka_b (event_id text, user_id text, track_id text,
  listened_at timestamptz, ms_played int, action text, region text, device text)
  SERVER kafka OPTIONS (topic 'bench_b', format 'json');
INSERT INTO kafka_a SELECT * FROM src;
INSERT INTO kafka_b SELECT * FROM src;
SQL

# Run one pipeline over its topic; print the seconds until every event is
# committed, then until the condition holds.
run() {
	local name=$1 topic=$2 done_sql=$3
	"${psql[@]}" -At <<SQL
SELECT streamkpi.create_pipeline('$name',
  \$\$INSERT INTO streamkpi.listens (event_id, user_id, track_id, listened_at, ms_played, action, region, device)
	SELECT event_id, user_id, track_id, listened_at, ms_played, action, region, device FROM $topic\$\$,
  parallelism => 2) \\g /dev/null
SELECT clock_timestamp() AS t0 \\gset
SELECT streamkpi.start_pipeline('$name') \\g /dev/null
DO \$\$
BEGIN
	WHILE (SELECT count(*) FROM streamkpi.listens) < $events LOOP
		PERFORM pg_sleep(0.02);
	END LOOP;
END \$\$;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric, 3) AS t1 \gset
DO \$\$
BEGIN
	WHILE NOT ($done_sql) LOOP
		PERFORM pg_sleep(0.02);
	END LOOP;
END \$\$;
SELECT :'t1' || ' ' || round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric, 3);
SELECT streamkpi.stop_pipeline('$name') \\g /dev/null
SQL
}

read -r _ a < <(run pa kafka_a "true")
"${psql[@]}" <<SQL
TRUNCATE streamkpi.listens;
ALTER SYSTEM SET streamkpi.kpi_worker = on;
SELECT pg_reload_conf() \g /dev/null
SQL
# the worker is up and idle before the clock starts
"${psql[@]}" -c "DO \$\$ BEGIN WHILE NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'streamkpi kpi') LOOP PERFORM pg_sleep(0.1); PERFORM pg_stat_clear_snapshot(); END LOOP; END \$\$"
"${psql[@]}" -c "SELECT streamkpi.kpi_apply_new()" >/dev/null
read -r b_ingest b < <(run pb kafka_b "NOT EXISTS (SELECT FROM streamkpi.listens WHERE NOT pg_visible_in_snapshot(ingest_xid, (SELECT snapshot FROM streamkpi.kpi_state)))")

check=$("${psql[@]}" -At -c "SELECT (SELECT count(*) FROM streamkpi.listens WHERE action = 'play') = (SELECT sum(listen_count) FROM streamkpi.daily_genre_kpis)")
echo "every play counted once by the KPI worker: $check"
printf '(a) pipeline alone:            %d events in %ss = %.0f events/s\n' "$events" "$a" "$(echo "$events / $a" | bc -l)"
printf '(b) pipeline + KPI worker:     %d events in %ss = %.0f events/s\n' "$events" "$b" "$(echo "$events / $b" | bc -l)"
printf '    of which ingestion alone: %ss = %.0f events/s (the KPI worker then catches up)\n' "$b_ingest" "$(echo "$events / $b_ingest" | bc -l)"
printf 'ratio b/a = %.2f (target >= 0.7)\n' "$(echo "$a / $b" | bc -l)"
