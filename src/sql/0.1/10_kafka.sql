-- streamkpi 0.1: Kafka foreign tables (the streamkpi_kafka foreign data wrapper).

CREATE FUNCTION streamkpi.kafka_fdw_handler() RETURNS fdw_handler
	AS 'MODULE_PATHNAME', 'streamkpi_kafka_handler'
	LANGUAGE C STRICT;

CREATE FUNCTION streamkpi.kafka_fdw_validator(text[], oid) RETURNS void
	AS 'MODULE_PATHNAME', 'streamkpi_kafka_validator'
	LANGUAGE C STRICT;

CREATE FOREIGN DATA WRAPPER streamkpi_kafka
	HANDLER streamkpi.kafka_fdw_handler
	VALIDATOR streamkpi.kafka_fdw_validator;

COMMENT ON FOREIGN DATA WRAPPER streamkpi_kafka IS
	'Kafka topics as foreign tables: bounded scans, pushdown of partition, offset and timestamp, produce by INSERT';

GRANT USAGE ON FOREIGN DATA WRAPPER streamkpi_kafka TO streamkpi_admin;

CREATE FUNCTION streamkpi.kafka_watermarks(
	rel regclass, OUT partition int, OUT low bigint, OUT high bigint)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'streamkpi_kafka_watermarks'
	LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION streamkpi.kafka_watermarks(regclass) IS
	'low and high watermark of every partition of a Kafka foreign table''s topic';

CREATE FUNCTION streamkpi.kafka_topics(
	server name, OUT topic text, OUT partitions int)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'streamkpi_kafka_topics'
	LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION streamkpi.kafka_topics(name) IS
	'topics of a Kafka server (internal topics starting with __ left out) and their partition counts';
