-- streamkpi 0.1: sketch aggregates and event-time windows (C, sketch_*.c,
-- window.c).  Nothing here reads a session setting: every parameter that
-- changes a result is an argument of the call.

------------------------------------------------------------------------------
-- HyperLogLog on postgresql-hll's hll type
------------------------------------------------------------------------------

CREATE FUNCTION streamkpi.hll_trans_text(internal, text)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_hll_trans_text'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION streamkpi.hll_trans_text(internal, text, integer)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_hll_trans_text'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION streamkpi.hll_trans_text(internal, text, integer, integer)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_hll_trans_text'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION streamkpi.hll_trans_text(internal, text, integer, integer, bigint)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_hll_trans_text'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION streamkpi.hll_trans_text(internal, text, integer, integer, bigint, integer)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_hll_trans_text'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;

CREATE FUNCTION streamkpi.hll_trans_bigint(internal, bigint)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_hll_trans_int8'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION streamkpi.hll_trans_bigint(internal, bigint, integer)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_hll_trans_int8'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION streamkpi.hll_trans_bigint(internal, bigint, integer, integer)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_hll_trans_int8'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION streamkpi.hll_trans_bigint(internal, bigint, integer, integer, bigint)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_hll_trans_int8'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION streamkpi.hll_trans_bigint(internal, bigint, integer, integer, bigint, integer)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_hll_trans_int8'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;

CREATE FUNCTION streamkpi.hll_state_combine(internal, internal)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_hll_combine'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION streamkpi.hll_state_serialize(internal)
	RETURNS bytea AS 'MODULE_PATHNAME', 'streamkpi_hll_serialize'
	LANGUAGE C STRICT PARALLEL SAFE;
CREATE FUNCTION streamkpi.hll_state_deserialize(bytea, internal)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_hll_deserialize'
	LANGUAGE C STRICT PARALLEL SAFE;
CREATE FUNCTION streamkpi.hll_state_final(internal)
	RETURNS hll AS 'MODULE_PATHNAME', 'streamkpi_hll_final'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION streamkpi.hll_state_count(internal)
	RETURNS bigint AS 'MODULE_PATHNAME', 'streamkpi_hll_final_count'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;

CREATE FUNCTION streamkpi.acd_trans_text(internal, text)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_acd_trans_text'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION streamkpi.acd_trans_bigint(internal, bigint)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_acd_trans_int8'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;

-- One aggregate per parameter form of hll_add_agg, for text and bigint.
-- SSPACE: a typical state holds a few hashes (the set grows on demand), so
-- the planner may hash-aggregate many groups.
DO $hll_aggs$
DECLARE
	t text;
	params text[] := ARRAY['', ', integer', ', integer, integer',
						   ', integer, integer, bigint',
						   ', integer, integer, bigint, integer'];
	p text;
BEGIN
	FOREACH t IN ARRAY ARRAY['text', 'bigint'] LOOP
		FOREACH p IN ARRAY params LOOP
			EXECUTE format($f$
				CREATE AGGREGATE streamkpi.hll_agg(%1$s%2$s) (
					SFUNC = streamkpi.hll_trans_%1$s,
					STYPE = internal,
					SSPACE = 200,
					FINALFUNC = streamkpi.hll_state_final,
					COMBINEFUNC = streamkpi.hll_state_combine,
					SERIALFUNC = streamkpi.hll_state_serialize,
					DESERIALFUNC = streamkpi.hll_state_deserialize,
					PARALLEL = SAFE)$f$, t, p);
		END LOOP;
	END LOOP;
END
$hll_aggs$;

COMMENT ON AGGREGATE streamkpi.hll_agg(text) IS
	'hll of the values; byte-identical to hll_add_agg(hll_hash_text(x))';
COMMENT ON AGGREGATE streamkpi.hll_agg(bigint) IS
	'hll of the values; byte-identical to hll_add_agg(hll_hash_bigint(x))';

CREATE AGGREGATE streamkpi.approx_count_distinct(text) (
	SFUNC = streamkpi.acd_trans_text,
	STYPE = internal,
	FINALFUNC = streamkpi.hll_state_count,
	COMBINEFUNC = streamkpi.hll_state_combine,
	SERIALFUNC = streamkpi.hll_state_serialize,
	DESERIALFUNC = streamkpi.hll_state_deserialize,
	PARALLEL = SAFE);
CREATE AGGREGATE streamkpi.approx_count_distinct(bigint) (
	SFUNC = streamkpi.acd_trans_bigint,
	STYPE = internal,
	FINALFUNC = streamkpi.hll_state_count,
	COMBINEFUNC = streamkpi.hll_state_combine,
	SERIALFUNC = streamkpi.hll_state_serialize,
	DESERIALFUNC = streamkpi.hll_state_deserialize,
	PARALLEL = SAFE);

COMMENT ON AGGREGATE streamkpi.approx_count_distinct(text) IS
	'estimated number of distinct non-NULL values (HLL, log2m 14: about 0.8% error; exact up to 1280)';
COMMENT ON AGGREGATE streamkpi.approx_count_distinct(bigint) IS
	'estimated number of distinct non-NULL values (HLL, log2m 14: about 0.8% error; exact up to 1280)';

CREATE FUNCTION streamkpi.hll_estimate(hll)
	RETURNS double precision AS 'MODULE_PATHNAME', 'streamkpi_hll_estimate'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION streamkpi.hll_estimate(hll) IS
	'cardinality of an hll with Ertl''s improved estimator (no bias where hll_cardinality switches estimators)';

------------------------------------------------------------------------------
-- Event-time windows
------------------------------------------------------------------------------

CREATE FUNCTION streamkpi.tumble(ts timestamptz, size interval)
	RETURNS timestamptz AS 'MODULE_PATHNAME', 'streamkpi_tumble'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION streamkpi.tumble(ts timestamptz, size interval, origin timestamptz)
	RETURNS timestamptz AS 'MODULE_PATHNAME', 'streamkpi_tumble'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION streamkpi.tumble(timestamptz, interval) IS
	'start of the tumbling window of the given size that holds ts (origin 2000-01-03 00:00 UTC, a Monday)';
COMMENT ON FUNCTION streamkpi.tumble(timestamptz, interval, timestamptz) IS
	'start of the tumbling window of the given size and origin that holds ts';

CREATE FUNCTION streamkpi.hop(ts timestamptz, size interval, slide interval)
	RETURNS SETOF timestamptz AS 'MODULE_PATHNAME', 'streamkpi_hop'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE ROWS 4;
CREATE FUNCTION streamkpi.hop(ts timestamptz, size interval, slide interval, origin timestamptz)
	RETURNS SETOF timestamptz AS 'MODULE_PATHNAME', 'streamkpi_hop'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE ROWS 4;

COMMENT ON FUNCTION streamkpi.hop(timestamptz, interval, interval) IS
	'starts of every hopping window (size, slide) that holds ts, oldest first';
COMMENT ON FUNCTION streamkpi.hop(timestamptz, interval, interval, timestamptz) IS
	'starts of every hopping window (size, slide, origin) that holds ts, oldest first';

CREATE FUNCTION streamkpi.day_bucket(ts timestamptz, tz text)
	RETURNS date AS 'MODULE_PATHNAME', 'streamkpi_day_bucket'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION streamkpi.day_bucket(timestamptz, text) IS
	'calendar date of ts on a wall clock in time zone tz (DST-correct)';

------------------------------------------------------------------------------
-- topn: mergeable heavy hitters (Space-Saving)
------------------------------------------------------------------------------

CREATE TYPE streamkpi.topn;

CREATE FUNCTION streamkpi.topn_in(cstring)
	RETURNS streamkpi.topn AS 'MODULE_PATHNAME', 'streamkpi_topn_in'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION streamkpi.topn_out(streamkpi.topn)
	RETURNS cstring AS 'MODULE_PATHNAME', 'streamkpi_topn_out'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION streamkpi.topn_recv(internal)
	RETURNS streamkpi.topn AS 'MODULE_PATHNAME', 'streamkpi_topn_recv'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION streamkpi.topn_send(streamkpi.topn)
	RETURNS bytea AS 'MODULE_PATHNAME', 'streamkpi_topn_send'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

CREATE TYPE streamkpi.topn (
	INPUT = streamkpi.topn_in,
	OUTPUT = streamkpi.topn_out,
	RECEIVE = streamkpi.topn_recv,
	SEND = streamkpi.topn_send,
	INTERNALLENGTH = VARIABLE,
	ALIGNMENT = int4,
	STORAGE = external);

COMMENT ON TYPE streamkpi.topn IS
	'mergeable heavy-hitters summary (Space-Saving): items with count upper bounds and max errors';

CREATE FUNCTION streamkpi.topn_trans(internal, text, integer)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_topn_trans'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION streamkpi.topn_trans(internal, text, integer, bigint)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_topn_trans'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION streamkpi.topn_union_trans(internal, streamkpi.topn)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_topn_union_trans'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION streamkpi.topn_state_combine(internal, internal)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_topn_combine'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION streamkpi.topn_state_serialize(internal)
	RETURNS bytea AS 'MODULE_PATHNAME', 'streamkpi_topn_serialize'
	LANGUAGE C STRICT PARALLEL SAFE;
CREATE FUNCTION streamkpi.topn_state_deserialize(bytea, internal)
	RETURNS internal AS 'MODULE_PATHNAME', 'streamkpi_topn_deserialize'
	LANGUAGE C STRICT PARALLEL SAFE;
CREATE FUNCTION streamkpi.topn_state_final(internal)
	RETURNS streamkpi.topn AS 'MODULE_PATHNAME', 'streamkpi_topn_final'
	LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;

CREATE AGGREGATE streamkpi.topn_agg(item text, capacity integer) (
	SFUNC = streamkpi.topn_trans,
	STYPE = internal,
	FINALFUNC = streamkpi.topn_state_final,
	COMBINEFUNC = streamkpi.topn_state_combine,
	SERIALFUNC = streamkpi.topn_state_serialize,
	DESERIALFUNC = streamkpi.topn_state_deserialize,
	PARALLEL = SAFE);
CREATE AGGREGATE streamkpi.topn_agg(item text, capacity integer, weight bigint) (
	SFUNC = streamkpi.topn_trans,
	STYPE = internal,
	FINALFUNC = streamkpi.topn_state_final,
	COMBINEFUNC = streamkpi.topn_state_combine,
	SERIALFUNC = streamkpi.topn_state_serialize,
	DESERIALFUNC = streamkpi.topn_state_deserialize,
	PARALLEL = SAFE);
CREATE AGGREGATE streamkpi.topn_union_agg(streamkpi.topn) (
	SFUNC = streamkpi.topn_union_trans,
	STYPE = internal,
	FINALFUNC = streamkpi.topn_state_final,
	COMBINEFUNC = streamkpi.topn_state_combine,
	SERIALFUNC = streamkpi.topn_state_serialize,
	DESERIALFUNC = streamkpi.topn_state_deserialize,
	PARALLEL = SAFE);

COMMENT ON AGGREGATE streamkpi.topn_agg(text, integer) IS
	'heavy-hitters summary of the items with the given capacity (exact while distinct items <= capacity)';
COMMENT ON AGGREGATE streamkpi.topn_agg(text, integer, bigint) IS
	'heavy-hitters summary of the items, each counted weight times';
COMMENT ON AGGREGATE streamkpi.topn_union_agg(streamkpi.topn) IS
	'merge of topn summaries, with the same guarantees as one summary over all their input';

CREATE FUNCTION streamkpi.topn_union(streamkpi.topn, streamkpi.topn)
	RETURNS streamkpi.topn AS 'MODULE_PATHNAME', 'streamkpi_topn_union'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION streamkpi.topn_union(streamkpi.topn, streamkpi.topn) IS
	'merge of two topn summaries';

CREATE FUNCTION streamkpi.topn_items(summary streamkpi.topn, n integer,
	OUT item text, OUT count bigint, OUT max_error bigint, OUT guaranteed boolean)
	RETURNS SETOF record AS 'MODULE_PATHNAME', 'streamkpi_topn_items'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION streamkpi.topn_items(summary streamkpi.topn,
	OUT item text, OUT count bigint, OUT max_error bigint, OUT guaranteed boolean)
	RETURNS SETOF record AS 'MODULE_PATHNAME', 'streamkpi_topn_items'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION streamkpi.topn_items(streamkpi.topn, integer) IS
	'the n items with the largest counts: count - max_error <= true count <= count; guaranteed when surely in the top n';
COMMENT ON FUNCTION streamkpi.topn_items(streamkpi.topn) IS
	'every item of the summary: count - max_error <= true count <= count';

CREATE FUNCTION streamkpi.topn_info(summary streamkpi.topn,
	OUT capacity integer, OUT items integer, OUT floor bigint, OUT total bigint)
	RETURNS record AS 'MODULE_PATHNAME', 'streamkpi_topn_info'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION streamkpi.topn_info(streamkpi.topn) IS
	'capacity, number of items, floor (bound on any unlisted item''s count) and total weight of a summary';
