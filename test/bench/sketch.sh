#!/usr/bin/env bash
# Sketch benchmarks (test/bench/sketch.sql) on a private, throw-away
# instance.  BENCH_ROWS overrides the 10,000,000 rows.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
bindir=$("$PG_CONFIG" --bindir)
rows=${BENCH_ROWS:-10000000}
dir=$(mktemp -d "${TMPDIR:-/tmp}/streamkpi-bench.XXXXXX")
port=$((20000 + $$ % 20000))
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
max_parallel_workers_per_gather = 0
jit = off
# streamkpi defines server-start settings, so it must be preloaded
shared_preload_libraries = 'streamkpi'
CONF
"$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null
"$bindir/psql" -h "$dir" -p "$port" -U postgres -d postgres -X -q \
	-v rows="$rows" -f "$here/sketch.sql"
