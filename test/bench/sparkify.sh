#!/usr/bin/env bash
# Benchmark of the Sparkify pipelines (issue 12), in one run:
#   (a) N synthetic Sparkify log lines from a 4-partition topic through the
#       pipelines of create_sparkify_pipelines() into app_events and every
#       table derived from it (songplays, users, time, churn signals, daily
#       churn, listens), all committed with each batch, in events/s
#   (b) COPY of the same events into app_events alone (its triggers off)
#   ratio a/b (target >= 0.3), in wall-clock events/s and in events per
#   CPU-second of the process doing the work (the COPY backend; the events
#   pipeline's worker, Kafka threads included), which a busy machine skews
#   less; and the rate of the first and the second half of the batches: the
#   maintenance adds each batch's own rows and never rescans, so the second
#   half must not be slower because the tables grew.
# Runs its own broker and PostgreSQL.
#
#   test/bench/sparkify.sh [events]      (default 1000000; BENCH_BATCH_SIZE)
set -euo pipefail

events=${1:-${BENCH_EVENTS:-1000000}}
batch_size=${BENCH_BATCH_SIZE:-20000}
users=$(( events / 100 > 1000 ? events / 100 : 1000 ))
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init sparkify
bench_broker
"$repo/test/kafka/broker" create-topic sparkify_events 4 >/dev/null
"$repo/test/kafka/broker" create-topic sparkify_songs 1 >/dev/null
bench_postgres <<CONF
streamkpi.database = 'postgres'
track_commit_timestamp = on
max_worker_processes = 16
# the pipelines alone: the KPI worker's work on the plays is kpi_throughput.sh's
streamkpi.kpi_worker = off
CONF

columns="event_time, user_id, session_id, item_in_session, page, auth, level, method, status,
	location, user_agent, song, artist, length_ms, first_name, last_name, gender, registered_at"
"${psql[@]}" <<SQL
CREATE EXTENSION streamkpi CASCADE;
CREATE SERVER kafka FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (brokers '$bootstrap');
SELECT streamkpi.create_sparkify_pipelines('kafka', start => false);
SELECT streamkpi.alter_pipeline('sparkify_events', batch_size => $batch_size);
CREATE TABLE lines AS
SELECT key, payload FROM streamkpi.synthetic_sparkify_lines($events, '2026-03-01 00:00+00',
	seed => 11, duration => '7 days', users => $users, songs => 20000, cancel_share => 0.05);
-- the same events, typed as app_events holds them, for COPY
COPY (SELECT ts, NULLIF(user_id, ''), session_id, item_in_session, page, auth, level, method,
			 status, location, streamkpi._sparkify_unquote(user_agent), song, artist,
			 round(length * 1000)::int, first_name, last_name, gender, registration
		FROM streamkpi.synthetic_sparkify_events($events, '2026-03-01 00:00+00', seed => 11,
			duration => '7 days', users => $users, songs => 20000, cancel_share => 0.05))
  TO '$work/events.csv' WITH (FORMAT csv);
INSERT INTO streamkpi.kafka_sparkify_songs (song_id, title, artist_id, artist_name,
	artist_location, artist_latitude, artist_longitude, year, duration, kkey)
SELECT s.*, s.song_id FROM streamkpi.synthetic_sparkify_songs(10000) s;
INSERT INTO streamkpi.kafka_sparkify_events (kkey, kpayload) SELECT key, payload FROM lines;
SQL
n=$("${psql[@]}" -At -c "SELECT count(*) FROM lines")

# CPU seconds (user + system) a process has used so far, from /proc
"${psql[@]}" <<'SQL'
CREATE FUNCTION cpu_seconds(pid int) RETURNS numeric LANGUAGE sql AS $$
	SELECT (split_part(s, ' ', 14)::numeric + split_part(s, ' ', 15)::numeric)
		   / current_setting('bench.clk_tck')::numeric
	  FROM pg_read_file('/proc/' || pid || '/stat') s $$;
SQL
export PGOPTIONS="-c bench.clk_tck=$(getconf CLK_TCK)"

# (b) COPY into app_events with its triggers off, best of 3 (wall clock and CPU)
best_copy=999999
best_copy_cpu=999999
for run in 1 2 3; do
	read -r t c < <("${psql[@]}" -At -F ' ' <<SQL
ALTER TABLE streamkpi.app_events DISABLE TRIGGER USER;
TRUNCATE streamkpi.app_events;
CHECKPOINT;
SELECT clock_timestamp() AS t0, cpu_seconds(pg_backend_pid()) AS c0 \gset
COPY streamkpi.app_events ($columns) FROM '$work/events.csv' WITH (FORMAT csv);
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric, 3),
	   cpu_seconds(pg_backend_pid()) - :c0;
SQL
)
	best_copy=$(awk -v a="$best_copy" -v b="$t" 'BEGIN { print (b < a) ? b : a }')
	best_copy_cpu=$(awk -v a="$best_copy_cpu" -v b="$c" 'BEGIN { print (b < a) ? b : a }')
done
"${psql[@]}" -c "TRUNCATE streamkpi.app_events" \
	-c "ALTER TABLE streamkpi.app_events ENABLE TRIGGER USER" -c "CHECKPOINT" >/dev/null

# (a) the pipelines, from their start until the events' offsets reach the end
pipeline_time=$("${psql[@]}" -At <<SQL
SELECT clock_timestamp() AS t0 \gset
SELECT streamkpi.create_sparkify_pipelines('kafka');
$(bench_wait_offsets_sql "sparkify_events" "$n")
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric, 3);
SQL
)

pipeline_cpu=$("${psql[@]}" -At -c "SELECT cpu_seconds(pid) FROM streamkpi.pipeline_status
	WHERE pipeline = 'sparkify_events' AND pid IS NOT NULL LIMIT 1")

# every table current, as the batches committed them
read -r ev plays songplays listens users signals days dead < <("${psql[@]}" -At -F ' ' <<SQL
SELECT (SELECT count(*) FROM streamkpi.app_events),
	   (SELECT count(*) FROM streamkpi.app_events WHERE page = 'NextSong'),
	   (SELECT count(*) FROM streamkpi.sparkify_songplays),
	   (SELECT count(*) FROM streamkpi.listens WHERE action = 'play'),
	   (SELECT count(DISTINCT user_id) FROM streamkpi.app_events),
	   (SELECT count(*) FROM streamkpi.user_churn_signals),
	   (SELECT count(*) FROM streamkpi.daily_churn),
	   (SELECT count(*) FROM streamkpi.dead_letters);
SQL
)
if [ "$ev" != "$n" ] || [ "$songplays" != "$plays" ] || [ "$listens" != "$plays" ] ||
	[ "$signals" != "$users" ] || [ "$days" -lt 7 ] || [ "$dead" != 0 ]; then
	echo "sparkify bench: tables not current: events $ev of $n, songplays $songplays and listens $listens of $plays plays, churn rows $signals of $users users, $days days, $dead dead letters" >&2
	exit 1
fi

# sustained rates from batch commit times: all batches after the first, and
# the first and second half of them
read -r rows secs rows1 secs1 rows2 secs2 < <("${psql[@]}" -At -F ' ' <<SQL
WITH b AS (SELECT pg_xact_commit_timestamp(xmin) AS ct, count(*) AS n
			 FROM streamkpi.app_events GROUP BY 1),
o AS (SELECT ct, n, lag(ct) OVER (ORDER BY ct) AS prev,
			 row_number() OVER (ORDER BY ct) AS i, count(*) OVER () AS nb FROM b)
SELECT sum(n) FILTER (WHERE i > 1), extract(epoch FROM max(ct) - min(ct)),
	   sum(n) FILTER (WHERE i > 1 AND i <= nb / 2),
	   extract(epoch FROM sum(ct - prev) FILTER (WHERE i > 1 AND i <= nb / 2)),
	   sum(n) FILTER (WHERE i > nb / 2),
	   extract(epoch FROM sum(ct - prev) FILTER (WHERE i > nb / 2))
  FROM o;
SQL
)

awk -v n="$n" -v b="$best_copy" -v a="$pipeline_time" -v r="$rows" -v s="$secs" \
	-v r1="$rows1" -v s1="$secs1" -v r2="$rows2" -v s2="$secs2" -v bs="$batch_size" \
	-v users="$users" -v plays="$plays" -v bc="$best_copy_cpu" -v ac="$pipeline_cpu" 'BEGIN {
	printf("sparkify bench: %d events (%d plays) of %d users over 7 days, 4 partitions, batches of %d\n",
		   n, plays, users, bs);
	printf("  (b) COPY into app_events alone        %8.3f s  %10.0f events/s\n", b, n / b);
	printf("  (a) pipelines into every table        sustained %10.0f events/s (first to last batch commit)\n", r / s);
	printf("      first half of the batches %.0f events/s, second half %.0f events/s\n", r1 / s1, r2 / s2);
	printf("      with the workers'"'"' start counted: %.3f s, %.0f events/s\n", a, n / a);
	printf("  CPU: COPY %.2f s, %.0f events per CPU-second; the events worker %.2f s (from its start), %.0f events per CPU-second\n",
		   bc, n / bc, ac, n / ac);
	printf("  ratio a/b %.2f in events/s, %.2f in events per CPU-second (target >= 0.3)\n",
		   (r / s) / (n / b), bc / ac);
}'
