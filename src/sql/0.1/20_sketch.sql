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
