-- topn recall on Zipf(1.1) data: 1,000,000 rows over 100,000 possible
-- items, capacity 1000.  The data are pure arithmetic (no random()): item
-- r occurs round(10^6 · r^-1.1 / H) times (item 1 takes the rounding
-- remainder), and the rows arrive in the order of a fixed permutation.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
RESET client_min_messages;
SET max_parallel_workers_per_gather = 0;

CREATE TEMP TABLE zipf_counts AS
WITH w AS (SELECT r, r::float8 ^ -1.1 AS p FROM generate_series(1, 100000) r),
     c AS (SELECT r, round(1000000 * p / sum(p) OVER ())::bigint AS n FROM w)
SELECT r, 'track-' || r AS item,
       n + CASE WHEN r = 1 THEN 1000000 - sum(n) OVER () ELSE 0 END AS n
  FROM c WHERE n > 0;
SELECT sum(n) AS rows, count(*) AS distinct_items FROM zipf_counts;

CREATE TEMP TABLE zipf AS
SELECT item, (row_number() OVER () * 7919) % 1000003 AS pos
  FROM zipf_counts, generate_series(1, n);

CREATE TEMP TABLE zipf_sk AS
SELECT streamkpi.topn_agg(item, 1000 ORDER BY pos) AS s FROM zipf;
SELECT capacity, items, total FROM zipf_sk, streamkpi.topn_info(s);

-- recall of the true top 10: 10 out of 10, in the true order, guaranteed
SELECT count(*) AS found_of_true_top10,
       bool_and(t.guaranteed) AS all_guaranteed,
       array_agg(t.item ORDER BY t.count DESC, t.item) = array_agg(z.item ORDER BY z.n DESC) AS same_order
  FROM zipf_sk, streamkpi.topn_items(s, 10) t
  JOIN (SELECT item, n FROM zipf_counts ORDER BY n DESC LIMIT 10) z USING (item);
-- every listed item obeys count - max_error <= true count <= count
SELECT count(*) AS listed,
       count(*) FILTER (WHERE t.count - t.max_error <= z.n AND z.n <= t.count) AS within_bounds
  FROM zipf_sk, streamkpi.topn_items(s) t JOIN zipf_counts z USING (item);
-- every unlisted item's true count is at most the floor
SELECT count(*) AS unlisted, bool_and(z.n <= i.floor) AS unlisted_below_floor
  FROM zipf_sk, streamkpi.topn_info(zipf_sk.s) i, zipf_counts z
  LEFT JOIN (SELECT t.item FROM zipf_sk, streamkpi.topn_items(zipf_sk.s) t) l USING (item)
 WHERE l.item IS NULL;

-- seven daily summaries merged answer like one: same recall, same bounds
CREATE TEMP TABLE zipf_union AS
SELECT streamkpi.topn_union_agg(s ORDER BY day) AS s
  FROM (SELECT pos % 7 AS day, streamkpi.topn_agg(item, 1000 ORDER BY pos) AS s
          FROM zipf GROUP BY pos % 7) d;
SELECT count(*) AS found_of_true_top10, bool_and(t.guaranteed) AS all_guaranteed
  FROM zipf_union, streamkpi.topn_items(s, 10) t
  JOIN (SELECT item FROM zipf_counts ORDER BY n DESC LIMIT 10) z USING (item);
SELECT count(*) AS listed,
       count(*) FILTER (WHERE t.count - t.max_error <= z.n AND z.n <= t.count) AS within_bounds
  FROM zipf_union, streamkpi.topn_items(s) t JOIN zipf_counts z USING (item);
SELECT count(*) AS unlisted, bool_and(z.n <= i.floor) AS unlisted_below_floor
  FROM zipf_union, streamkpi.topn_info(zipf_union.s) i, zipf_counts z
  LEFT JOIN (SELECT t.item FROM zipf_union, streamkpi.topn_items(zipf_union.s) t) l USING (item)
 WHERE l.item IS NULL;
RESET max_parallel_workers_per_gather;
