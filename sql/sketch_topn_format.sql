-- topn storage formats.  Values are stored in format version 2; values
-- stored in version 1 (by earlier builds of streamkpi 0.1) are still read,
-- and version 2 bytes are checked as they are read.  Binary-coercible casts
-- put raw bytes into a topn, the way an older table holds them.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
RESET client_min_messages;
CREATE CAST (bytea AS streamkpi.topn) WITHOUT FUNCTION;
CREATE CAST (streamkpi.topn AS bytea) WITHOUT FUNCTION;

CREATE TEMP TABLE fmt_small (item text, w bigint);
INSERT INTO fmt_small VALUES ('b', 2), ('a', 1), ('c', 5), ('a', 1), (NULL, 1),
	('b', 0), ('d', NULL), ('a', 1), ('b', 1), ('é', 3);

-- stored: version 2, items in byte order; sent: version 1, count order
SELECT s::bytea AS stored, streamkpi.topn_send(s) AS sent
  FROM (SELECT streamkpi.topn_agg(item, 3, w) AS s FROM fmt_small) x;

-- a version 1 value reads the same as its version 2 twin everywhere
CREATE TEMP TABLE fmt_v AS
SELECT streamkpi.topn_send(s)::streamkpi.topn AS v1, s AS v2
  FROM (SELECT streamkpi.topn_agg(item, 10, w) AS s FROM fmt_small) x;
SELECT get_byte(v1::bytea, 0) AS v1_version, get_byte(v2::bytea, 0) AS v2_version,
       v1::text = v2::text AS same_text,
       streamkpi.topn_send(v1) = streamkpi.topn_send(v2) AS same_binary,
       (SELECT array_agg(t) FROM streamkpi.topn_items(v1) t)
         = (SELECT array_agg(t) FROM streamkpi.topn_items(v2) t) AS same_items,
       (SELECT array_agg(t) FROM streamkpi.topn_items(v1, 2) t)
         = (SELECT array_agg(t) FROM streamkpi.topn_items(v2, 2) t) AS same_top2,
       streamkpi.topn_info(v1) = streamkpi.topn_info(v2) AS same_info,
       streamkpi.topn_union(v1, v2)::text = streamkpi.topn_union(v2, v2)::text AS same_union
  FROM fmt_v;
SELECT v1 FROM fmt_v;

-- lossy daily summaries merge alike from either version
CREATE TEMP TABLE fmt_days AS
SELECT i % 10 AS day,
       streamkpi.topn_agg('item' || (CASE WHEN i % 3 = 0 THEN i % 7 ELSE (i * 7919) % 503 END), 50 ORDER BY i) AS s
  FROM generate_series(1, 20000) i GROUP BY i % 10;
SELECT (SELECT streamkpi.topn_union_agg(s ORDER BY day) FROM fmt_days)::text
     = (SELECT streamkpi.topn_union_agg(streamkpi.topn_send(s)::streamkpi.topn ORDER BY day) FROM fmt_days)::text
       AS same_union_agg;

-- crafted version 2 bytes: read, or an ERROR with SQLSTATE 22P03
CREATE FUNCTION pg_temp.try_read(b bytea) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	detail text;
BEGIN
	PERFORM streamkpi.topn_info(b::streamkpi.topn);
	PERFORM (b::streamkpi.topn)::text;
	PERFORM count(*) FROM streamkpi.topn_items(b::streamkpi.topn, 1);
	PERFORM streamkpi.topn_send(b::streamkpi.topn);
	PERFORM streamkpi.topn_union(b::streamkpi.topn, b::streamkpi.topn);
	PERFORM streamkpi.topn_union_agg(x) FROM (VALUES (b::streamkpi.topn), (b::streamkpi.topn)) v(x);
	RETURN 'read';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ' ' || detail;
END $$;
-- header: 02 00 capacity nitems floor total (one-byte varints here);
-- item: prefix, suffix length, suffix, count, error
SELECT v AS case, pg_temp.try_read(b) AS outcome FROM (VALUES
	('valid', '\x02000302000500016103000001620200'::bytea),
	('valid, empty item', '\x02000301000400000400'::bytea),
	('flags', '\x0201030100040001610300'::bytea),
	('only version', '\x02'::bytea),
	('capacity 0', '\x020000000000'::bytea),
	('capacity too big', '\x0200a18d0600000000'::bytea),
	('items > capacity', '\x02000102000200016101000001620100'::bytea),
	('floor > total', '\x020003000504'::bytea),
	('number past end', '\x020003018080'::bytea),
	('number over 64 bits', '\x02000301ffffffffffffffffff7f00'::bytea),
	('number over int64', '\x02000301ffffffffffffffffff0100'::bytea),
	('missing item', '\x020003010004'::bytea),
	('suffix past end', '\x02000301000400056103'::bytea),
	('prefix past previous', '\x02000302000400016102000201620200'::bytea),
	('not ascending', '\x02000302000400016202000001610200'::bytea),
	('duplicate', '\x020003020004000161020001000200'::bytea),
	('count 0', '\x0200030100040001610000'::bytea),
	('count > total', '\x0200030100040001610900'::bytea),
	('error > floor', '\x0200030100040001610301'::bytea),
	('error > count', '\x0200030105090001610304'::bytea),
	('trailing byte', '\x020003010004000161030000'::bytea)
) t(v, b);
-- every truncation and every single-byte change of valid version 2 values
-- is either read or rejected with 22P03
WITH v AS (
	SELECT streamkpi.topn_agg(item, 3, w)::bytea AS b FROM fmt_small
	UNION ALL
	SELECT streamkpi.topn_agg(item, 2)::bytea FROM fmt_small
	UNION ALL
	SELECT streamkpi.topn_agg(item, 10, w)::bytea FROM fmt_small
), mutants AS (
	SELECT substr(b, 1, len) AS m FROM v, generate_series(0, length(b) - 1) len
	UNION ALL
	SELECT set_byte(b, i, (get_byte(b, i) + d) % 256)
	  FROM v, generate_series(0, length(b) - 1) i, (VALUES (1), (128), (255)) dd(d)
)
SELECT left(pg_temp.try_read(m), 5) AS outcome, count(*) > 0 AS seen
  FROM mutants GROUP BY 1 ORDER BY 1;

DROP CAST (bytea AS streamkpi.topn);
DROP CAST (streamkpi.topn AS bytea);
