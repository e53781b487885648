#!/usr/bin/env bash
# Sketch benchmarks (test/bench/sketch.sql) on a private, throw-away
# instance.  BENCH_ROWS overrides the 10,000,000 rows.
set -euo pipefail
rows=${BENCH_ROWS:-10000000}
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init sketch
bench_postgres <<CONF
max_parallel_workers_per_gather = 0
jit = off
CONF
"${psql[@]}" -v rows="$rows" -f "$repo/test/bench/sketch.sql"
