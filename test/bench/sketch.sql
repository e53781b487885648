-- Sketch benchmarks: streamkpi's sketches against a baseline measured in
-- the same run (postgresql-hll's own aggregates, exact SQL).  Serial plans;
-- each timing is the best of several runs.  Rows: :rows (default 10M).
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
SET max_parallel_workers_per_gather = 0;
SET work_mem = '256MB';

CREATE FUNCTION pg_temp.best_ms(q text, reps int) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz;
	best float8 := 'Infinity';
BEGIN
	FOR i IN 1..reps LOOP
		t0 := clock_timestamp();
		EXECUTE q;
		best := least(best, extract(epoch FROM clock_timestamp() - t0) * 1000);
	END LOOP;
	RETURN best;
END $$;

-- x: 1,000,000 distinct users, uniform; z: about a million tracks with a
-- Zipf(1)-like (log-uniform) popularity; d: 1,000 days.
DROP TABLE IF EXISTS bench_rows;
CREATE UNLOGGED TABLE bench_rows AS
SELECT 'user-' || ((i * 7919) % 1000000) AS x,
       'track-' || floor(1000000 ^ ((i * 0.6180339887498949) % 1))::bigint AS z,
       i % 1000 AS d
  FROM generate_series(1::bigint, :rows) i;
VACUUM ANALYZE bench_rows;
SELECT count(*) AS rows, count(DISTINCT x) AS distinct_x, count(DISTINCT z) AS distinct_z FROM bench_rows;

CREATE TEMP TABLE bench (name text, baseline text, base_ms float8, ours_ms float8, target float8);

INSERT INTO bench SELECT 'hll_agg(x) vs hll_add_agg(hll_hash_text(x))', 'postgresql-hll',
	pg_temp.best_ms('SELECT hll_add_agg(hll_hash_text(x)) FROM bench_rows', 3),
	pg_temp.best_ms('SELECT streamkpi.hll_agg(x) FROM bench_rows', 3), 1.0;

INSERT INTO bench SELECT 'approx_count_distinct(x) vs count(DISTINCT x)', 'exact SQL',
	pg_temp.best_ms('SELECT count(DISTINCT x) FROM bench_rows', 2),
	pg_temp.best_ms('SELECT streamkpi.approx_count_distinct(x) FROM bench_rows', 3), 5.0;

INSERT INTO bench SELECT 'top 10 by topn_agg(z, 1000) vs GROUP BY z ORDER BY count(*) DESC LIMIT 10', 'exact SQL',
	pg_temp.best_ms('SELECT z, count(*) FROM bench_rows GROUP BY z ORDER BY count(*) DESC, z LIMIT 10', 2),
	pg_temp.best_ms('SELECT * FROM streamkpi.topn_items((SELECT streamkpi.topn_agg(z, 1000) FROM bench_rows), 10)', 3), 3.0;

-- 1,000 stored daily sketches, rolled up by union
CREATE TEMP TABLE bench_days AS
SELECT d, streamkpi.topn_agg(z, 1000) AS s FROM bench_rows GROUP BY d;
INSERT INTO bench SELECT 'topn_union_agg of 1,000 daily sketches (k = 1000), target < 20 ms', 'none',
	NULL, pg_temp.best_ms('SELECT streamkpi.topn_union_agg(s) FROM bench_days', 5), NULL;

SELECT name, baseline, round(base_ms::numeric, 1) AS baseline_ms, round(ours_ms::numeric, 1) AS streamkpi_ms,
       round((base_ms / ours_ms)::numeric, 2) AS speedup, target,
       CASE WHEN target IS NULL THEN ours_ms < 20 ELSE base_ms / ours_ms >= target END AS met
  FROM bench;

-- what the sketches answer, next to the exact answers
SELECT streamkpi.approx_count_distinct(x) AS approx, count(DISTINCT x) AS exact,
       round((100.0 * (streamkpi.approx_count_distinct(x) - count(DISTINCT x)) / count(DISTINCT x))::numeric, 2) AS error_pct
  FROM bench_rows;
SELECT count(*) AS topn_recall_of_exact_top10
  FROM streamkpi.topn_items((SELECT streamkpi.topn_agg(z, 1000) FROM bench_rows), 10) t
  JOIN (SELECT z AS item FROM bench_rows GROUP BY z ORDER BY count(*) DESC, z LIMIT 10) e USING (item);
SELECT count(*) AS union_recall_of_exact_top10
  FROM streamkpi.topn_items((SELECT streamkpi.topn_union_agg(s) FROM bench_days), 10) t
  JOIN (SELECT z AS item FROM bench_rows GROUP BY z ORDER BY count(*) DESC, z LIMIT 10) e USING (item);
DROP TABLE bench_rows;
