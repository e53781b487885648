-- streamkpi.hll_agg is byte-identical to postgresql-hll's own aggregate,
-- hll_estimate reads any hll, approx_count_distinct counts.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
RESET client_min_messages;

-- Data sets of many sizes: each crosses a different representation
-- (empty, explicit, sparse, full) for some parameters.  NULLs and the empty
-- string (whose hash is 0) are mixed in.
CREATE TEMP TABLE hll_sets (n int, x text, y bigint);
INSERT INTO hll_sets
SELECT n, 'v' || i, i * 7919 - 1000000
  FROM unnest(ARRAY[1, 2, 10, 80, 81, 160, 161, 300, 1280, 1281, 3000, 20000]) n,
       generate_series(1, n) i;
INSERT INTO hll_sets SELECT n, NULL, NULL FROM (SELECT DISTINCT n FROM hll_sets) s;
INSERT INTO hll_sets SELECT n, '', 0 FROM (SELECT DISTINCT n FROM hll_sets) s WHERE n % 2 = 0;
INSERT INTO hll_sets VALUES (-1, NULL, NULL), (-1, NULL, NULL);	-- only NULLs

-- Every parameter form, text and bigint: identical bytes for every set.
CREATE TEMP TABLE hll_cmp (form text, n int, theirs hll, ours hll);
INSERT INTO hll_cmp
SELECT 'text', n, hll_add_agg(hll_hash_text(x)), streamkpi.hll_agg(x) FROM hll_sets GROUP BY n
UNION ALL
SELECT 'text,10', n, hll_add_agg(hll_hash_text(x), 10), streamkpi.hll_agg(x, 10) FROM hll_sets GROUP BY n
UNION ALL
SELECT 'text,10,4', n, hll_add_agg(hll_hash_text(x), 10, 4), streamkpi.hll_agg(x, 10, 4) FROM hll_sets GROUP BY n
UNION ALL
SELECT 'text,12,5,0', n, hll_add_agg(hll_hash_text(x), 12, 5, 0), streamkpi.hll_agg(x, 12, 5, 0) FROM hll_sets GROUP BY n
UNION ALL
SELECT 'text,12,5,16', n, hll_add_agg(hll_hash_text(x), 12, 5, 16), streamkpi.hll_agg(x, 12, 5, 16) FROM hll_sets GROUP BY n
UNION ALL
SELECT 'text,11,5,-1,0', n, hll_add_agg(hll_hash_text(x), 11, 5, -1, 0), streamkpi.hll_agg(x, 11, 5, -1, 0) FROM hll_sets GROUP BY n
UNION ALL
SELECT 'text,14,6,256,1', n, hll_add_agg(hll_hash_text(x), 14, 6, 256, 1), streamkpi.hll_agg(x, 14, 6, 256, 1) FROM hll_sets GROUP BY n
UNION ALL
SELECT 'text,4,3,-1,1', n, hll_add_agg(hll_hash_text(x), 4, 3, -1, 1), streamkpi.hll_agg(x, 4, 3, -1, 1) FROM hll_sets GROUP BY n
UNION ALL
SELECT 'text,17,7,8192,1', n, hll_add_agg(hll_hash_text(x), 17, 7, 8192, 1), streamkpi.hll_agg(x, 17, 7, 8192, 1) FROM hll_sets GROUP BY n
UNION ALL
SELECT 'bigint', n, hll_add_agg(hll_hash_bigint(y)), streamkpi.hll_agg(y) FROM hll_sets GROUP BY n
UNION ALL
SELECT 'bigint,10', n, hll_add_agg(hll_hash_bigint(y), 10), streamkpi.hll_agg(y, 10) FROM hll_sets GROUP BY n
UNION ALL
SELECT 'bigint,10,4', n, hll_add_agg(hll_hash_bigint(y), 10, 4), streamkpi.hll_agg(y, 10, 4) FROM hll_sets GROUP BY n
UNION ALL
SELECT 'bigint,12,5,0', n, hll_add_agg(hll_hash_bigint(y), 12, 5, 0), streamkpi.hll_agg(y, 12, 5, 0) FROM hll_sets GROUP BY n
UNION ALL
SELECT 'bigint,11,5,-1,0', n, hll_add_agg(hll_hash_bigint(y), 11, 5, -1, 0), streamkpi.hll_agg(y, 11, 5, -1, 0) FROM hll_sets GROUP BY n
UNION ALL
SELECT 'bigint,4,3,-1,1', n, hll_add_agg(hll_hash_bigint(y), 4, 3, -1, 1), streamkpi.hll_agg(y, 4, 3, -1, 1) FROM hll_sets GROUP BY n;

-- identical: every group; types: the representations that were compared
-- (1 empty, 2 explicit, 3 sparse, 4 full)
SELECT form, count(*) AS sets,
       count(*) FILTER (WHERE theirs IS NOT DISTINCT FROM ours) AS identical,
       string_agg(DISTINCT hll_type(ours)::text, ',') AS types
  FROM hll_cmp GROUP BY form ORDER BY form;

-- all four representations are covered
SELECT array_agg(DISTINCT hll_type(ours) ORDER BY hll_type(ours)) AS types_covered FROM hll_cmp;

-- no rows at all: NULL, as hll_add_agg; only NULL rows: the empty hll
SELECT streamkpi.hll_agg(x) IS NULL AS no_rows_null,
       hll_add_agg(hll_hash_text(x)) IS NULL AS theirs_null
  FROM hll_sets WHERE false;
SELECT streamkpi.hll_agg(x), streamkpi.hll_agg(y, 10) FROM hll_sets WHERE n = -1;
SELECT streamkpi.hll_agg(''::text) AS empty_string,
       hll_add_agg(hll_hash_text('')) = streamkpi.hll_agg(''::text) AS same;

-- the hashes themselves, through one-value explicit sketches
SELECT left(s, 20) AS value, length(s) AS len,
       streamkpi.hll_agg(s) = hll_add_agg(hll_hash_text(s)) AS same
  FROM (VALUES ('a'), ('abcdefghijklmno'), ('abcdefghijklmnop'),
               ('abcdefghijklmnopq'), (repeat('x', 1000)), ('ü€𝄞')) v(s)
 GROUP BY s ORDER BY s;
SELECT v AS value, streamkpi.hll_agg(v) = hll_add_agg(hll_hash_bigint(v)) AS same
  FROM (VALUES (0::bigint), (1), (-1), (9223372036854775807), (-9223372036854775808)) t(v)
 GROUP BY v ORDER BY v;

-- results mix with postgresql-hll's functions
SELECT hll_cardinality(hll_union(streamkpi.hll_agg(x), hll_add_agg(hll_hash_text(x))))
       = hll_cardinality(streamkpi.hll_agg(x)) AS union_ok,
       hll_cardinality(streamkpi.hll_agg(x)) AS explicit_exact
  FROM hll_sets WHERE n = 80;

-- bad parameters are clear errors
SELECT streamkpi.hll_agg(x, 18) FROM hll_sets WHERE n = 1;
SELECT streamkpi.hll_agg(x, 11, 0) FROM hll_sets WHERE n = 1;
SELECT streamkpi.hll_agg(x, 11, 8) FROM hll_sets WHERE n = 1;
SELECT streamkpi.hll_agg(x, 11, 5, 3) FROM hll_sets WHERE n = 1;
SELECT streamkpi.hll_agg(x, 11, 5, 16384) FROM hll_sets WHERE n = 1;
SELECT streamkpi.hll_agg(x, 11, 5, -2) FROM hll_sets WHERE n = 1;
SELECT streamkpi.hll_agg(x, 11, 5, -1, 2) FROM hll_sets WHERE n = 1;
SELECT streamkpi.hll_agg(x, NULL) FROM hll_sets WHERE n = 1;
SELECT streamkpi.hll_agg(x, (9 + i % 2)::int) FROM (SELECT x, row_number() OVER () AS i FROM hll_sets WHERE n = 10) s;

-- hll_estimate: exact for empty and explicit, NULL for undefined
SELECT streamkpi.hll_estimate(hll_empty()) AS empty,
       streamkpi.hll_estimate(hll_add_agg(hll_hash_text(x))) AS explicit_81,
       hll_type(hll_add_agg(hll_hash_text(x))) AS type
  FROM hll_sets WHERE n = 80;
SELECT streamkpi.hll_estimate('\x108b7f'::bytea::hll) AS undefined;
SELECT streamkpi.hll_estimate(NULL::hll) AS null_in;
-- sparse and full forms of the same registers give the same estimate
SELECT streamkpi.hll_estimate(streamkpi.hll_agg(x, 11, 5, 0, 1))
       = streamkpi.hll_estimate(streamkpi.hll_agg(x, 11, 5, 0, 0)) AS sparse_eq_full,
       hll_type(streamkpi.hll_agg(x, 11, 5, 0, 1)) AS t1,
       hll_type(streamkpi.hll_agg(x, 11, 5, 0, 0)) AS t2
  FROM hll_sets WHERE n = 300;
-- within 3% at 20000 distinct (log2m 11: 2.3% standard error)
SELECT abs(streamkpi.hll_estimate(streamkpi.hll_agg(x)) / 20001 - 1) < 0.03 AS close
  FROM hll_sets WHERE n = 20000;

-- crafted hll values: an error naming the problem, never a crash
SELECT streamkpi.hll_estimate('\x'::bytea::hll);
SELECT streamkpi.hll_estimate('\x118b'::bytea::hll);
SELECT streamkpi.hll_estimate('\x218b7f'::bytea::hll);
SELECT streamkpi.hll_estimate('\x158b7f'::bytea::hll);
SELECT streamkpi.hll_estimate('\x11927f'::bytea::hll);
SELECT streamkpi.hll_estimate('\x118bff'::bytea::hll);
SELECT streamkpi.hll_estimate('\x118b4f'::bytea::hll);
SELECT streamkpi.hll_estimate('\x118b7f00'::bytea::hll);
SELECT streamkpi.hll_estimate('\x128b7f0000000000000001'::bytea::hll);
SELECT streamkpi.hll_estimate('\x128b7f00000000000000020000000000000001'::bytea::hll);
SELECT streamkpi.hll_estimate('\x128b7f00000000000000010000000000000001'::bytea::hll);
SELECT streamkpi.hll_estimate('\x148b7f0000'::bytea::hll);
SELECT streamkpi.hll_estimate('\x138b7f000000'::bytea::hll);
-- every truncation and every single-byte change of a sparse and a full
-- value is either read or rejected with SQLSTATE 22P03
CREATE FUNCTION pg_temp.try_estimate(h bytea) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	PERFORM streamkpi.hll_estimate(h::hll);
	RETURN 'read';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE;
END $$;
WITH v AS (
	SELECT streamkpi.hll_agg(x, 6, 5, 0, s)::text::bytea AS b
	  FROM hll_sets, (VALUES (0), (1)) p(s) WHERE n = 20 OR n = 10 GROUP BY s
), mutants AS (
	SELECT substr(b, 1, len) AS m FROM v, generate_series(0, length(b) - 1) len
	UNION ALL
	SELECT set_byte(b, i, (get_byte(b, i) + d) % 256)
	  FROM v, generate_series(0, length(b) - 1) i, (VALUES (1), (128), (255)) dd(d)
)
SELECT pg_temp.try_estimate(m) AS outcome, count(*) > 0 AS seen
  FROM mutants GROUP BY 1 ORDER BY 1;

-- approx_count_distinct: exact while explicit (up to 1280), close after
SELECT n, streamkpi.approx_count_distinct(x) AS text_est,
       streamkpi.approx_count_distinct(y) AS bigint_est,
       count(DISTINCT x) AS exact
  FROM hll_sets WHERE n IN (-1, 1, 10, 300, 1281) GROUP BY n ORDER BY n;
SELECT abs(streamkpi.approx_count_distinct(x)::float8 / 20001 - 1) < 0.025 AS close
  FROM hll_sets WHERE n = 20000;
SELECT streamkpi.approx_count_distinct(x) AS no_rows FROM hll_sets WHERE false;

-- parallel plans: Partial Aggregate in workers, same bytes as serial
CREATE TABLE hll_par AS
SELECT 'u' || (i % 50000) AS x, (i % 70000)::bigint AS y
  FROM generate_series(1, 200000) i;
ANALYZE hll_par;
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET parallel_leader_participation = off;
EXPLAIN (COSTS OFF) SELECT streamkpi.hll_agg(x) FROM hll_par;
EXPLAIN (COSTS OFF) SELECT streamkpi.approx_count_distinct(y) FROM hll_par;
CREATE TEMP TABLE hll_par_res AS
SELECT streamkpi.hll_agg(x) AS a, streamkpi.hll_agg(y, 14) AS b,
       streamkpi.hll_agg(x, 10, 5, 1024) AS c,
       streamkpi.approx_count_distinct(x) AS d,
       streamkpi.hll_agg(x) FILTER (WHERE y < 100) AS e
  FROM hll_par;
RESET max_parallel_workers_per_gather;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET parallel_leader_participation;
SET max_parallel_workers_per_gather = 0;
SELECT r.a = s.a AS a_same, r.b = s.b AS b_same, r.c = s.c AS c_same,
       r.d = s.d AS d_same, r.e = s.e AS e_same,
       r.a = s.theirs AS a_is_hll_add_agg, hll_type(r.e) AS e_type
  FROM hll_par_res r,
       (SELECT streamkpi.hll_agg(x) AS a, streamkpi.hll_agg(y, 14) AS b,
               streamkpi.hll_agg(x, 10, 5, 1024) AS c,
               streamkpi.approx_count_distinct(x) AS d,
               streamkpi.hll_agg(x) FILTER (WHERE y < 100) AS e,
               hll_add_agg(hll_hash_text(x)) AS theirs
          FROM hll_par) s;
RESET max_parallel_workers_per_gather;
DROP TABLE hll_par;
