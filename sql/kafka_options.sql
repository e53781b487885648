-- Kafka foreign tables: option validation, secrets, and EXPLAIN of pushdown.
-- Nothing here needs a broker: when none answers, planning makes a serial plan.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
RESET client_min_messages;
SET search_path = public;
SET timezone = 'UTC';

-- the wrapper takes no options of its own
ALTER FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (brokers 'x');

-- servers: brokers, and librdkafka properties checked by librdkafka
CREATE SERVER kreg FOREIGN DATA WRAPPER streamkpi_kafka
  OPTIONS (brokers '127.0.0.1:9', "socket.timeout.ms" '5000', client_rack 'r1');
CREATE SERVER kbad1 FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (no_such_thing 'x');
CREATE SERVER kbad2 FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS ("socket.timeout.ms" 'soon');
CREATE SERVER kbad3 FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (security_protocol 'carrier_pigeon');
-- secrets only in user mappings, and their values are never printed
CREATE SERVER kbad4 FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (sasl_password 'hunter2');
ALTER SERVER kreg OPTIONS (ADD "sasl.username" 'alice');
CREATE USER MAPPING FOR CURRENT_USER SERVER kreg
  OPTIONS (sasl_username 'alice', sasl_password 'hunter2', sasl_mechanism 'PLAIN');
CREATE USER MAPPING FOR PUBLIC SERVER kreg OPTIONS (nonsense 'hunter2');
CREATE ROLE kafka_regress_other;
SET ROLE kafka_regress_other;
SELECT srvname, umoptions FROM pg_user_mappings WHERE srvname = 'kreg';
RESET ROLE;

-- tables: topic is required, format json or csv, CSV-only options
CREATE FOREIGN TABLE kt_notopic (a text) SERVER kreg;
CREATE FOREIGN TABLE kt_emptytopic (a text) SERVER kreg OPTIONS (topic '');
CREATE FOREIGN TABLE kt_fmt (a text) SERVER kreg OPTIONS (topic 't', format 'avro');
CREATE FOREIGN TABLE kt_delim (a text) SERVER kreg OPTIONS (topic 't', delimiter ';');
CREATE FOREIGN TABLE kt_delim2 (a text) SERVER kreg OPTIONS (topic 't', format 'csv', delimiter ';;');
CREATE FOREIGN TABLE kt_hdr (a text) SERVER kreg OPTIONS (topic 't', format 'csv', header 'maybe');
CREATE FOREIGN TABLE kt_opt (a text) SERVER kreg OPTIONS (topic 't', partitions '3');
CREATE FOREIGN TABLE kt_csv (a text, b int OPTIONS (field '3'))
  SERVER kreg OPTIONS (topic 't', format 'csv', delimiter ';', quote '''', null 'NULL', header 'false');

-- columns: meta kinds, field, required, time_unit
CREATE FOREIGN TABLE kt_meta (a text OPTIONS (meta 'headers')) SERVER kreg OPTIONS (topic 't');
CREATE FOREIGN TABLE kt_meta2 (a text OPTIONS (meta 'key', field 'k')) SERVER kreg OPTIONS (topic 't');
CREATE FOREIGN TABLE kt_unit (a timestamptz OPTIONS (time_unit 'ns')) SERVER kreg OPTIONS (topic 't');
CREATE FOREIGN TABLE kt_req (a text OPTIONS (required 'often')) SERVER kreg OPTIONS (topic 't');
CREATE FOREIGN TABLE kt_col (a text OPTIONS (json_path '$.a')) SERVER kreg OPTIONS (topic 't');
-- meta column types are checked when the table is used
CREATE FOREIGN TABLE kt_badtype (p text OPTIONS (meta 'partition')) SERVER kreg OPTIONS (topic 't');
EXPLAIN (COSTS OFF) SELECT * FROM kt_badtype;
CREATE FOREIGN TABLE kt_twice (o1 bigint OPTIONS (meta 'offset'), o2 bigint OPTIONS (meta 'offset'))
  SERVER kreg OPTIONS (topic 't');
EXPLAIN (COSTS OFF) SELECT * FROM kt_twice;

CREATE FOREIGN TABLE listens (
  user_id text OPTIONS (field 'userId', required 'true'), track_id text,
  listened_at timestamptz OPTIONS (time_unit 'ms'), ms_played int,
  kpartition int OPTIONS (meta 'partition'),
  koffset bigint OPTIONS (meta 'offset'),
  ktimestamp timestamptz OPTIONS (meta 'timestamp'),
  kkey text OPTIONS (meta 'key'),
  kerror text OPTIONS (meta 'error'),
  kpayload bytea OPTIONS (meta 'payload')
) SERVER kreg OPTIONS (topic 'listens', format 'json');

-- pushdown, shown by EXPLAIN VERBOSE without a broker
EXPLAIN (VERBOSE, COSTS OFF) SELECT user_id FROM listens;
EXPLAIN (VERBOSE, COSTS OFF) SELECT user_id FROM listens WHERE kpartition = 2;
EXPLAIN (VERBOSE, COSTS OFF) SELECT user_id FROM listens WHERE kpartition IN (0, 3);
EXPLAIN (VERBOSE, COSTS OFF) SELECT user_id FROM listens
  WHERE kpartition = 1 AND koffset BETWEEN 100 AND 199;
EXPLAIN (VERBOSE, COSTS OFF) SELECT user_id FROM listens WHERE 10 < koffset AND koffset <= 20::smallint;
EXPLAIN (VERBOSE, COSTS OFF) SELECT user_id FROM listens WHERE koffset = 42;
EXPLAIN (VERBOSE, COSTS OFF) SELECT user_id FROM listens
  WHERE ktimestamp >= '2024-05-01 00:00:00+00' AND ktimestamp > '2024-04-01 00:00:00+00';
-- not pushed down: the scan reads everything and the filter decides
EXPLAIN (VERBOSE, COSTS OFF) SELECT user_id FROM listens
  WHERE koffset + 1 > 5 AND ktimestamp < '2024-05-01' AND kpartition > 1 AND user_id = 'u1';
-- parameters are pushed down and evaluated when the scan starts
PREPARE q(int, bigint) AS SELECT user_id FROM listens WHERE kpartition = $1 AND koffset >= $2;
SET plan_cache_mode = force_generic_plan;
EXPLAIN (VERBOSE, COSTS OFF) EXECUTE q(1, 10);
RESET plan_cache_mode;
DEALLOCATE q;

-- only INSERT: no UPDATE or DELETE of messages
EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO listens (user_id, kkey) VALUES ('u1', 'k1');
UPDATE listens SET user_id = 'x';
DELETE FROM listens;

-- functions check what they are given before contacting a broker
CREATE TABLE not_kafka (a int);
SELECT * FROM streamkpi.kafka_watermarks('not_kafka');
SELECT * FROM streamkpi.kafka_topics('no_such_server');

DROP TABLE not_kafka;
DROP USER MAPPING FOR CURRENT_USER SERVER kreg;
SET client_min_messages = warning;
DROP SERVER kreg CASCADE;
RESET client_min_messages;
DROP ROLE kafka_regress_other;
