#!/usr/bin/env bash
# KPI benchmark (test/bench/kpi.sql) on a private, throw-away instance:
# with BENCH_KPI_ROWS (default 10,000,000) events of history over 10 days,
# the incremental update for 10,000 new events (streamkpi.kpi_apply_new())
# against refresh_kpis() of the day they fall on.  Prints the ratio.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
bindir=$("$PG_CONFIG" --bindir)
rows=${BENCH_KPI_ROWS:-10000000}
dir=$(mktemp -d "${TMPDIR:-/tmp}/streamkpi-bench-kpi.XXXXXX")
port=$((20000 + ($$ + 7) % 20000))
cleanup() {
	"$bindir/pg_ctl" -D "$dir/data" stop -m immediate >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT
"$bindir/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
shared_buffers = 512MB
max_wal_size = 4GB
jit = off
timezone = 'UTC'
shared_preload_libraries = 'streamkpi'
# the benchmark calls kpi_apply_new() itself; history is old
streamkpi.kpi_worker = off
streamkpi.late_horizon = '100 years'
CONF
"$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null
"$bindir/psql" -h "$dir" -p "$port" -U postgres -d postgres -X -q \
	-v rows="$rows" -f "$here/kpi.sql"
