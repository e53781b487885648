-- streamkpi.topn: a mergeable heavy-hitters summary.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
RESET client_min_messages;

-- exact while the distinct items fit: counts exact, errors 0, ordered by
-- count descending, then item ascending
CREATE TEMP TABLE tn_small (item text, w bigint);
INSERT INTO tn_small VALUES ('b', 2), ('a', 1), ('c', 5), ('a', 1), (NULL, 1),
	('b', 0), ('d', NULL), ('a', 1), ('b', 1), ('é', 3);
SELECT streamkpi.topn_agg(item, 10) FROM tn_small;
SELECT * FROM streamkpi.topn_items((SELECT streamkpi.topn_agg(item, 10) FROM tn_small));
SELECT * FROM streamkpi.topn_items((SELECT streamkpi.topn_agg(item, 10) FROM tn_small), 2);
SELECT * FROM streamkpi.topn_items((SELECT streamkpi.topn_agg(item, 10) FROM tn_small), 0);
-- weights: NULL weights skipped, zero weights count nothing
SELECT * FROM streamkpi.topn_items((SELECT streamkpi.topn_agg(item, 10, w) FROM tn_small));
SELECT * FROM streamkpi.topn_info((SELECT streamkpi.topn_agg(item, 10, w) FROM tn_small));
-- no rows: NULL; only NULL items: an empty summary
SELECT streamkpi.topn_agg(item, 10) IS NULL AS no_rows FROM tn_small WHERE false;
SELECT streamkpi.topn_agg(item, 10) AS only_nulls FROM tn_small WHERE item IS NULL;
SELECT count(*) AS no_items FROM streamkpi.topn_items((SELECT streamkpi.topn_agg(item, 10) FROM tn_small WHERE item IS NULL));

-- full: Space-Saving keeps the bounds count - max_error <= true <= count,
-- and finds every item more frequent than total/capacity (here 500)
CREATE TEMP TABLE tn_stream AS
SELECT i, 'item' || (CASE WHEN i % 3 = 0 THEN i % 7 ELSE (i * 7919) % 503 END) AS item
  FROM generate_series(1, 20000) i;
CREATE TEMP TABLE tn_truth AS SELECT item, count(*) AS n FROM tn_stream GROUP BY item;
CREATE TEMP TABLE tn_sk AS SELECT streamkpi.topn_agg(item, 40 ORDER BY i) AS s FROM tn_stream;
SELECT capacity, items, floor > 0 AS has_floor, total FROM tn_sk, streamkpi.topn_info(s);
SELECT count(*) AS listed,
       count(*) FILTER (WHERE t.count - t.max_error <= tr.n AND tr.n <= t.count) AS within_bounds
  FROM tn_sk, streamkpi.topn_items(s) t JOIN tn_truth tr USING (item);
-- every item not listed has a true count <= floor
SELECT count(*) AS unlisted, bool_and(tr.n <= i.floor) AS below_floor
  FROM tn_truth tr, tn_sk, streamkpi.topn_info(s) i
 WHERE tr.item NOT IN (SELECT item FROM streamkpi.topn_items(s));
-- the 7 frequent items are found, exactly in the true order, and guaranteed
SELECT t.item, tr.n AS true_count, t.guaranteed
  FROM tn_sk, streamkpi.topn_items(s, 7) t JOIN tn_truth tr USING (item)
 ORDER BY t.count DESC, t.item;
SELECT array_agg(item ORDER BY n DESC, item) AS true_top7
  FROM (SELECT * FROM tn_truth ORDER BY n DESC, item LIMIT 7) s;

-- merged daily summaries keep the bounds; union of disjoint-in-time parts
CREATE TEMP TABLE tn_days AS
SELECT i % 10 AS day, streamkpi.topn_agg(item, 50 ORDER BY i) AS s
  FROM tn_stream GROUP BY i % 10;
CREATE TEMP TABLE tn_union AS SELECT streamkpi.topn_union_agg(s ORDER BY day) AS s FROM tn_days;
SELECT capacity, items, total FROM tn_union, streamkpi.topn_info(s);
SELECT count(*) AS listed,
       count(*) FILTER (WHERE t.count - t.max_error <= tr.n AND tr.n <= t.count) AS within_bounds
  FROM tn_union, streamkpi.topn_items(s) t JOIN tn_truth tr USING (item);
SELECT bool_and(tr.n <= i.floor) AS unlisted_below_floor
  FROM tn_truth tr, tn_union, streamkpi.topn_info(s) i
 WHERE tr.item NOT IN (SELECT item FROM streamkpi.topn_items(s));
SELECT array_agg(item ORDER BY count DESC, item) AS merged_top7
  FROM tn_union, streamkpi.topn_items(s, 7);
-- exact merges stay exact: union of per-day summaries with room for all
SELECT bool_and(t.count = tr.n AND t.max_error = 0) AS exact, count(*) AS items
  FROM (SELECT streamkpi.topn_union_agg(s) AS s
          FROM (SELECT streamkpi.topn_agg(item, 1000) AS s FROM tn_stream GROUP BY i % 10) d) u,
       streamkpi.topn_items(u.s) t JOIN tn_truth tr USING (item);
-- topn_union(a, b) is the same merge
SELECT streamkpi.topn_union(a.s, b.s)::text = (SELECT streamkpi.topn_union_agg(s ORDER BY day) FROM tn_days WHERE day IN (1, 2))::text AS same
  FROM tn_days a, tn_days b WHERE a.day = 1 AND b.day = 2;
-- different capacities merge into the larger one
SELECT capacity, items FROM streamkpi.topn_info(streamkpi.topn_union(
	(SELECT streamkpi.topn_agg(item, 5) FROM tn_stream),
	(SELECT streamkpi.topn_agg(item, 30) FROM tn_stream WHERE i < 100)));
SELECT streamkpi.topn_union_agg(s) IS NULL AS union_no_rows FROM tn_days WHERE false;

-- bad arguments
SELECT streamkpi.topn_agg(item, 0) FROM tn_small;
SELECT streamkpi.topn_agg(item, 100001) FROM tn_small;
SELECT streamkpi.topn_agg(item, NULL) FROM tn_small;
SELECT streamkpi.topn_agg(item, 10, -1) FROM tn_small;
SELECT streamkpi.topn_agg(item, (row_number() OVER ())::int) FROM tn_small;
SELECT streamkpi.topn_agg(item, k) FROM (SELECT item, (5 + (item = 'a')::int) AS k FROM tn_small) s;
SELECT * FROM streamkpi.topn_items((SELECT streamkpi.topn_agg(item, 10) FROM tn_small), -1);
SELECT streamkpi.topn_agg(item, 10, 9223372036854775807) FROM tn_small;

-- text form: round trip, canonical order, validation
SELECT s::text::streamkpi.topn::text = s::text AS text_round_trip FROM tn_sk;
SELECT '{"capacity": 3, "floor": 0, "total": 4, "items": [["x", 1, 0], ["y", 3, 0]]}'::streamkpi.topn AS reordered;
SELECT '{"capacity": 2, "floor": 2, "total": 9, "items": [["a\"\\b\u00e9", 5, 0], ["c", 4, 2]]}'::streamkpi.topn AS escaped;
SELECT 'nonsense'::streamkpi.topn;
SELECT '[1, 2]'::streamkpi.topn;
SELECT '{"capacity": 3, "floor": 0, "total": 4}'::streamkpi.topn;
SELECT '{"capacity": 0, "floor": 0, "total": 0, "items": []}'::streamkpi.topn;
SELECT '{"capacity": 1, "floor": 0, "total": 4, "items": [["x", 1, 0], ["y", 3, 0]]}'::streamkpi.topn;
SELECT '{"capacity": 3, "floor": 0, "total": 4, "items": [["x", 1, 0], ["x", 3, 0]]}'::streamkpi.topn;
SELECT '{"capacity": 3, "floor": 0, "total": 4, "items": [["x", 1, 1]]}'::streamkpi.topn;
SELECT '{"capacity": 3, "floor": 0, "total": 4, "items": [["x", 5, 0]]}'::streamkpi.topn;
SELECT '{"capacity": 3, "floor": 0, "total": 4, "items": [["x", 0, 0]]}'::streamkpi.topn;
SELECT '{"capacity": 3, "floor": 0, "total": 4, "items": [[1, 1, 0]]}'::streamkpi.topn;
SELECT '{"capacity": 3, "floor": 0, "total": 4, "items": [["x", "1", 0]]}'::streamkpi.topn;
SELECT '{"capacity": 3, "floor": 0, "total": 4, "items": [["x\u0000", 1, 0]]}'::streamkpi.topn;

-- binary form: COPY BINARY round trip through send and recv
CREATE TABLE tn_bin (s streamkpi.topn);
INSERT INTO tn_bin SELECT s FROM tn_sk UNION ALL SELECT s FROM tn_union
	UNION ALL SELECT streamkpi.topn_agg(item, 10, w) FROM tn_small;
CREATE TABLE tn_bin2 (s streamkpi.topn);
DO $$
DECLARE
	f text := current_setting('data_directory') || '/sketch_topn_bin.copy';
BEGIN
	EXECUTE format('COPY tn_bin TO %L WITH (FORMAT binary)', f);
	EXECUTE format('COPY tn_bin2 FROM %L WITH (FORMAT binary)', f);
END $$;
SELECT count(*) AS rows, count(*) FILTER (WHERE a.s::text = b.s::text) AS identical
  FROM (SELECT s, row_number() OVER () r FROM tn_bin) a
  JOIN (SELECT s, row_number() OVER () r FROM tn_bin2) b USING (r);

-- crafted binary input: an ERROR with SQLSTATE 22P03, never a crash.
-- A bytea column in a binary COPY file has the same layout as a topn
-- column, so crafted bytes reach topn_recv through COPY.
CREATE TABLE tn_raw (b bytea);
CREATE FUNCTION pg_temp.try_recv(bytes bytea) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	f text := current_setting('data_directory') || '/sketch_topn_raw.copy';
	detail text;
BEGIN
	TRUNCATE tn_raw, tn_bin2;
	INSERT INTO tn_raw VALUES (bytes);
	EXECUTE format('COPY tn_raw TO %L WITH (FORMAT binary)', f);
	EXECUTE format('COPY tn_bin2 FROM %L WITH (FORMAT binary)', f);
	RETURN 'read';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ' ' || detail;
END $$;
SELECT streamkpi.topn_send(streamkpi.topn_agg(item, 3, w)) AS valid_bytes FROM tn_small;
SELECT pg_temp.try_recv(streamkpi.topn_send(streamkpi.topn_agg(item, 3, w))) AS valid FROM tn_small;
-- hdr(capacity, nitems, floor, total) and itm(count, error, bytes) build
-- the stored format: big-endian integers, as int4send/int8send write them
CREATE FUNCTION pg_temp.hdr(cap int, n int, fl bigint, tot bigint) RETURNS bytea
	LANGUAGE sql AS $$ SELECT '\x0100'::bytea || int4send(cap) || int4send(n) || int8send(fl) || int8send(tot) $$;
CREATE FUNCTION pg_temp.itm(c bigint, e bigint, s bytea) RETURNS bytea
	LANGUAGE sql AS $$ SELECT int8send(c) || int8send(e) || int4send(length(s)) || s $$;
SELECT pg_temp.hdr(3, 3, 3, 14) || pg_temp.itm(6, 3, '\xc3a9') || pg_temp.itm(5, 0, 'c') || pg_temp.itm(3, 0, 'a')
       = streamkpi.topn_send(streamkpi.topn_agg(item, 3, w)) AS builders_match
  FROM tn_small;
SELECT v AS case, pg_temp.try_recv(b) AS outcome FROM (VALUES
	('empty', '\x'::bytea),
	('short header', substr(pg_temp.hdr(3, 0, 0, 0), 1, 25)),
	('version 2', set_byte(pg_temp.hdr(3, 0, 0, 0), 0, 2)),
	('flags', set_byte(pg_temp.hdr(3, 0, 0, 0), 1, 1)),
	('capacity 0', pg_temp.hdr(0, 0, 0, 0)),
	('capacity too big', pg_temp.hdr(100001, 0, 0, 0)),
	('negative capacity', pg_temp.hdr(-1, 0, 0, 0)),
	('items > capacity', pg_temp.hdr(1, 2, 0, 2) || pg_temp.itm(1, 0, 'a') || pg_temp.itm(1, 0, 'b')),
	('floor > total', pg_temp.hdr(3, 0, 5, 4)),
	('negative floor', pg_temp.hdr(3, 0, -1, 4)),
	('negative total', pg_temp.hdr(3, 0, 0, -4)),
	('item past end', pg_temp.hdr(3, 1, 0, 4) || int8send(3) || int8send(0) || int4send(-1) || 'a'::bytea),
	('length just past end', pg_temp.hdr(3, 1, 0, 4) || int8send(3) || int8send(0) || int4send(2) || 'a'::bytea),
	('missing item', pg_temp.hdr(3, 1, 0, 4)),
	('cut item header', substr(pg_temp.hdr(3, 1, 0, 4) || pg_temp.itm(3, 0, 'a'), 1, 40)),
	('trailing byte', pg_temp.hdr(3, 1, 0, 4) || pg_temp.itm(3, 0, 'a') || '\x00'::bytea),
	('count 0', pg_temp.hdr(3, 1, 0, 4) || pg_temp.itm(0, 0, 'a')),
	('negative count', pg_temp.hdr(3, 1, 0, 4) || pg_temp.itm(-3, 0, 'a')),
	('count > total', pg_temp.hdr(3, 1, 0, 4) || pg_temp.itm(9, 0, 'a')),
	('error > floor', pg_temp.hdr(3, 1, 0, 4) || pg_temp.itm(3, 1, 'a')),
	('error > count', pg_temp.hdr(3, 1, 5, 9) || pg_temp.itm(3, 4, 'a')),
	('negative error', pg_temp.hdr(3, 1, 0, 4) || pg_temp.itm(3, -1, 'a')),
	('counts ascending', pg_temp.hdr(3, 2, 0, 4) || pg_temp.itm(1, 0, 'a') || pg_temp.itm(3, 0, 'b')),
	('ties not by item', pg_temp.hdr(3, 2, 0, 4) || pg_temp.itm(2, 0, 'b') || pg_temp.itm(2, 0, 'a')),
	('duplicate', pg_temp.hdr(3, 2, 0, 4) || pg_temp.itm(2, 0, 'a') || pg_temp.itm(2, 0, 'a')),
	('duplicate, other count', pg_temp.hdr(3, 2, 0, 4) || pg_temp.itm(3, 0, 'a') || pg_temp.itm(1, 0, 'a')),
	('NUL in item', pg_temp.hdr(3, 1, 0, 4) || pg_temp.itm(3, 0, '\x6100')),
	('invalid UTF-8', pg_temp.hdr(3, 1, 0, 4) || pg_temp.itm(3, 0, '\xff')),
	('valid, empty item', pg_temp.hdr(3, 1, 0, 4) || pg_temp.itm(3, 0, ''))
) t(v, b);
-- every truncation and every single-byte change of a valid value is either
-- read or rejected with 22P03
WITH v AS (
	SELECT streamkpi.topn_send(streamkpi.topn_agg(item, 3, w)) AS b FROM tn_small
	UNION ALL
	SELECT streamkpi.topn_send(streamkpi.topn_agg(item, 2)) FROM tn_small
), mutants AS (
	SELECT substr(b, 1, len) AS m FROM v, generate_series(0, length(b) - 1) len
	UNION ALL
	SELECT set_byte(b, i, (get_byte(b, i) + d) % 256)
	  FROM v, generate_series(0, length(b) - 1) i, (VALUES (1), (255)) dd(d)
)
SELECT left(pg_temp.try_recv(m), 5) AS outcome, count(*) > 0 AS seen
  FROM mutants GROUP BY 1 ORDER BY 1;

-- parallel aggregation: Partial Aggregate in workers, exact results equal
CREATE TABLE tn_par AS
SELECT 'p' || (i % 300) AS item, i FROM generate_series(1, 200000) i;
ANALYZE tn_par;
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET parallel_leader_participation = off;
EXPLAIN (COSTS OFF) SELECT streamkpi.topn_agg(item, 1000) FROM tn_par;
CREATE TEMP TABLE tn_par_res AS
SELECT streamkpi.topn_agg(item, 1000) AS exact,
       streamkpi.topn_agg(item, 100) AS lossy,
       streamkpi.topn_agg(item, 1000, i % 5) AS weighted
  FROM tn_par;
RESET max_parallel_workers_per_gather;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET parallel_leader_participation;
SET max_parallel_workers_per_gather = 0;
SELECT r.exact::text = s.exact::text AS exact_same,
       r.weighted::text = s.weighted::text AS weighted_same,
       (SELECT count(*) FROM streamkpi.topn_items(r.lossy) t
          JOIN (SELECT item, count(*) n FROM tn_par GROUP BY item) tr USING (item)
         WHERE t.count - t.max_error <= tr.n AND tr.n <= t.count) AS lossy_within_bounds
  FROM tn_par_res r,
       (SELECT streamkpi.topn_agg(item, 1000) AS exact,
               streamkpi.topn_agg(item, 1000, i % 5) AS weighted FROM tn_par) s;
RESET max_parallel_workers_per_gather;
DROP TABLE tn_par, tn_bin, tn_bin2, tn_raw;
