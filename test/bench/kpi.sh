#!/usr/bin/env bash
# KPI benchmark (test/bench/kpi.sql) on a private, throw-away instance:
# with BENCH_KPI_ROWS (default 10,000,000) events of history over 10 days,
# the incremental update for 10,000 new events (streamkpi.kpi_apply_new())
# against refresh_kpis() of the day they fall on.  Prints the ratio.
set -euo pipefail
rows=${BENCH_KPI_ROWS:-10000000}
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init kpi
bench_postgres <<CONF
jit = off
# the benchmark calls kpi_apply_new() itself; history is old
streamkpi.kpi_worker = off
streamkpi.late_horizon = '100 years'
CONF
"${psql[@]}" -v rows="$rows" -f "$repo/test/bench/kpi.sql"
