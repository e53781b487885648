# Shared set-up of the benchmarks in test/bench/*.sh: a throw-away
# directory, a free port, a private PostgreSQL with streamkpi preloaded, an
# optional private Kafka broker, and a trap that removes all of it.
# Sourced, never run:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   bench_init kafka                 work directory $work, port $port
#   bench_broker TOPIC...            optional: a broker in $work/kafka with
#                                    these topics, its host:port in $bootstrap
#   bench_postgres <<CONF            initdb, settings from stdin, start;
#   streamkpi.kpi_worker = off       then "${psql[@]}" reaches it
#   CONF
#   bench_kpi_sql                    SQL: the extension, a Kafka server on
#                                    $bootstrap, the KPI benchmarks' tracks
#                                    and users
#
#   "${psql[@]}" <<SQL
#   $(bench_listens_sql src 1000000)  a table of generated listen events
#   SQL
#
# Sets: repo, bindir, work, pgdata, port, psql (an array), bootstrap.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
bindir=$("$PG_CONFIG" --bindir)

# a TCP port nobody listens on now (the kernel picks it)
bench_free_port() {
	perl -MIO::Socket::INET -e '
		my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1",
									  LocalPort => 0, ReuseAddr => 1) or die "$!\n";
		print $s->sockport, "\n";'
}

bench_cleanup() {
	"$bindir/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
	if [ -n "${KAFKA_DIR:-}" ]; then
		"$repo/test/kafka/broker" stop >/dev/null 2>&1 || true
	fi
	rm -rf "$work"
}

# bench_init NAME: the work directory and port of benchmark NAME
bench_init() {
	work=$(mktemp -d "${TMPDIR:-/tmp}/streamkpi-bench-$1.XXXXXX")
	pgdata=$work/pgdata
	port=$(bench_free_port)
	psql=("$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres -d postgres)
	trap bench_cleanup EXIT
}

# bench_broker TOPIC...: start a private Kafka broker ($bootstrap is its
# host:port) with these topics of 4 partitions each
bench_broker() {
	local topic
	export KAFKA_DIR=$work/kafka
	bootstrap=$("$repo/test/kafka/broker" start)
	for topic in "$@"; do
		"$repo/test/kafka/broker" create-topic "$topic" 4 >/dev/null
	done
}

# bench_postgres: initdb and start PostgreSQL with streamkpi preloaded; the
# benchmark's own settings come on stdin
bench_postgres() {
	"$bindir/initdb" -D "$pgdata" -A trust -U postgres >/dev/null
	{
		cat <<CONF
listen_addresses = ''
unix_socket_directories = '$work'
port = $port
shared_preload_libraries = 'streamkpi'
timezone = 'UTC'
shared_buffers = '512MB'
max_wal_size = '4GB'
CONF
		cat
	} >>"$pgdata/postgresql.conf"
	"$bindir/pg_ctl" -D "$pgdata" -l "$work/pg.log" -w start >/dev/null
}

# bench_kpi_sql: SQL for the KPI benchmarks: the extension, server "kafka"
# on $bootstrap, 2,000 tracks in 8 genres and 20,000 users
bench_kpi_sql() {
	cat <<SQL
CREATE EXTENSION streamkpi CASCADE;
CREATE SERVER kafka FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (brokers '$bootstrap');
INSERT INTO streamkpi.tracks (track_id, track_name, genre, duration_ms)
SELECT 't' || i, 'track ' || i,
	   (ARRAY['rock', 'pop', 'jazz', 'folk', 'metal', 'hiphop', 'classical', 'soul'])[1 + i % 8],
	   120000 + i * 37 FROM generate_series(1, 2000) i;
INSERT INTO streamkpi.users (user_id, age, country, subscription)
SELECT 'u' || i, 15 + i % 60, (ARRAY['GH', 'DE', 'US', 'NG', 'FR'])[1 + i % 5],
	   CASE WHEN i % 3 = 0 THEN 'premium' ELSE 'free' END FROM generate_series(1, 20000) i;
SQL
}

# bench_wait_offsets_sql PIPELINE N: a DO block that returns once the
# committed offsets of PIPELINE add up to N (every partition starts at 0)
bench_wait_offsets_sql() {
	cat <<SQL
DO \$\$
BEGIN
	LOOP
		EXIT WHEN (SELECT coalesce(sum(next_offset), 0) FROM streamkpi.pipeline_offsets
				   WHERE pipeline = '$1') >= $2;
		PERFORM pg_sleep(0.01);
	END LOOP;
END \$\$;
SQL
}

# bench_listens_sql TABLE N: the SQL that creates TABLE with N generated
# listen events, ~150 bytes each as JSON, in the columns of streamkpi.listens
bench_listens_sql() {
	cat <<SQL
CREATE TABLE $1 AS
SELECT md5(i::text) AS event_id, 'u' || (i % 50000) AS user_id,
       't' || (i % 20000) AS track_id,
       '2024-05-01 00:00:00+00'::timestamptz + i * interval '37 ms' AS listened_at,
       ((i::bigint * 7919) % 300000)::int AS ms_played,
       (ARRAY['play','skip','like'])[1 + i % 3] AS action,
       (ARRAY['EU','US','APAC','LATAM'])[1 + i % 4] AS region,
       (ARRAY['ios','android','web'])[1 + i % 3] AS device
FROM generate_series(1, $2) i;
SQL
}
