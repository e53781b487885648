-- Who may do what with a pipeline, and with the Kafka properties that act
-- as the server's operating-system user.  No broker is needed: planning a
-- statement over an unreachable broker falls back to estimates.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS streamkpi CASCADE;
RESET client_min_messages;
SET search_path = public;
SET streamkpi.kafka_timeout = '100ms';
\set SHOW_CONTEXT never

CREATE ROLE regress_super SUPERUSER;
CREATE ROLE regress_admin LOGIN IN ROLE streamkpi_admin;
CREATE ROLE regress_admin2 LOGIN IN ROLE streamkpi_admin;
CREATE ROLE regress_member LOGIN IN ROLE regress_admin;
CREATE ROLE regress_gone LOGIN IN ROLE streamkpi_admin;

CREATE SERVER ksec FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (brokers '127.0.0.1:9');
GRANT USAGE ON FOREIGN SERVER ksec TO streamkpi_admin;
CREATE FOREIGN TABLE ksec_in (id int) SERVER ksec OPTIONS (topic 'sec_in', format 'json');
CREATE FOREIGN TABLE ksec_other (id int) SERVER ksec OPTIONS (topic 'sec_other', format 'json');
CREATE TABLE sec_out (id int);
GRANT SELECT ON ksec_in, ksec_other TO streamkpi_admin;
GRANT INSERT ON sec_out TO streamkpi_admin;

-- a superuser's pipeline
SET ROLE regress_super;
SELECT streamkpi.create_pipeline('su_pipe', 'INSERT INTO sec_out SELECT id FROM ksec_in');
RESET ROLE;
SELECT name, owner FROM streamkpi.pipelines ORDER BY name;

-- an admin who is not a member of its owner may start, stop and inspect it ...
SET ROLE regress_admin;
BEGIN;
SELECT streamkpi.start_pipeline('su_pipe');
SELECT streamkpi.stop_pipeline('su_pipe');
COMMIT;
SELECT pipeline, state, enabled FROM streamkpi.pipeline_status WHERE pipeline = 'su_pipe';
-- ... but not redefine it: not its statement, its source, its settings, nor drop it
SELECT streamkpi.alter_pipeline('su_pipe', statement => 'INSERT INTO sec_out SELECT id + 1 FROM ksec_in');
\echo :LAST_ERROR_SQLSTATE
SELECT streamkpi.alter_pipeline('su_pipe', statement => 'INSERT INTO sec_out SELECT id FROM ksec_other');
\echo :LAST_ERROR_SQLSTATE
SELECT streamkpi.alter_pipeline('su_pipe', batch_size => 5);
\echo :LAST_ERROR_SQLSTATE
SELECT streamkpi.drop_pipeline('su_pipe');
\echo :LAST_ERROR_SQLSTATE
-- calling the internal functions directly changes nothing either
SELECT streamkpi._alter_pipeline('su_pipe', 'INSERT INTO sec_out SELECT 1 FROM ksec_in',
	NULL, NULL, NULL, NULL, 'public');
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SELECT streamkpi._note_caller();	-- notes regress_admin, nobody else
SELECT streamkpi._alter_pipeline('su_pipe', 'INSERT INTO sec_out SELECT 1 FROM ksec_in',
	NULL, NULL, NULL, NULL, 'public');
ROLLBACK;
\echo :LAST_ERROR_SQLSTATE
-- an admin's SECURITY DEFINER function acts with the admin's rights, also
-- when a superuser calls it
RESET ROLE;
CREATE FUNCTION sec_definer() RETURNS void SECURITY DEFINER LANGUAGE sql
	AS $$ SELECT streamkpi.alter_pipeline('su_pipe', batch_size => 3) $$;
ALTER FUNCTION sec_definer() OWNER TO regress_admin;
SET ROLE regress_super;
SELECT sec_definer();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT name, owner, statement, source, batch_size FROM streamkpi.pipelines ORDER BY name;

-- an admin's own pipeline: another admin may stop it but not redefine it;
-- a member of its owner may, and the owner stays
SET ROLE regress_admin;
SELECT streamkpi.create_pipeline('admin_pipe', 'INSERT INTO sec_out SELECT id FROM ksec_in');
SELECT streamkpi.alter_pipeline('admin_pipe', batch_size => 7);
SET ROLE regress_admin2;
SELECT streamkpi.stop_pipeline('admin_pipe');
SELECT streamkpi.alter_pipeline('admin_pipe', statement => 'INSERT INTO sec_out SELECT id FROM ksec_other');
\echo :LAST_ERROR_SQLSTATE
SET ROLE regress_member;
SELECT streamkpi.alter_pipeline('admin_pipe', statement => 'INSERT INTO sec_out SELECT id FROM ksec_other');
RESET ROLE;
SELECT name, owner, statement, source, batch_size FROM streamkpi.pipelines
 WHERE name = 'admin_pipe';

-- settings changed while the statement is checked (planning runs the
-- owner's functions) do not outlive the check
CREATE FUNCTION sec_flip(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_catalog.set_config('work_mem', '77kB', false);
	RETURN $1;
END $$;
SHOW work_mem;
SELECT streamkpi.alter_pipeline('admin_pipe', statement => 'INSERT INTO sec_out SELECT sec_flip(id) + sec_flip(1) FROM ksec_in');
SHOW work_mem;
-- nor can they leave temporary objects in the session of whoever asked
CREATE FUNCTION sec_plant() RETURNS void LANGUAGE sql
	AS $$ CREATE TEMP VIEW sec_out AS SELECT 1 AS id $$;
CREATE FUNCTION sec_temp(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
	PERFORM sec_plant();
	RETURN $1;
END $$;
SELECT streamkpi.alter_pipeline('admin_pipe', statement => 'INSERT INTO sec_out SELECT sec_temp(1) FROM ksec_in');
SELECT count(*) FROM pg_class WHERE relpersistence = 't';

-- a pipeline whose owner role was dropped: it cannot be redefined, and
-- streamkpi_admin may drop it
SET ROLE regress_gone;
SELECT streamkpi.create_pipeline('gone_pipe', 'INSERT INTO sec_out SELECT id FROM ksec_in');
RESET ROLE;
DROP ROLE regress_gone;
\set VERBOSITY terse
SELECT streamkpi.alter_pipeline('gone_pipe', statement => 'INSERT INTO sec_out SELECT id FROM ksec_in');
\set VERBOSITY default
SET ROLE regress_admin2;
SELECT streamkpi.drop_pipeline('gone_pipe');
RESET ROLE;
SELECT name FROM streamkpi.pipelines ORDER BY name;

-- workers' last errors may quote message data: not for streamkpi_reader
CREATE ROLE regress_reader IN ROLE streamkpi_reader;
SET ROLE regress_reader;
SELECT count(*) FROM streamkpi._pipeline_slots();
RESET ROLE;
DROP ROLE regress_reader;

-- Kafka properties that run programs, load code or touch the server's files
SET ROLE regress_admin;
CREATE SERVER kevil1 FOREIGN DATA WRAPPER streamkpi_kafka
  OPTIONS (brokers '127.0.0.1:9', security_protocol 'SASL_PLAINTEXT',
		   sasl_mechanisms 'GSSAPI', sasl_kerberos_kinit_cmd 'touch /tmp/streamkpi_pwned');
\echo :LAST_ERROR_SQLSTATE
CREATE SERVER kevil2 FOREIGN DATA WRAPPER streamkpi_kafka
  OPTIONS (brokers '127.0.0.1:9', "plugin.library.paths" '/tmp/streamkpi_no_such.so');
CREATE SERVER kevil3 FOREIGN DATA WRAPPER streamkpi_kafka
  OPTIONS (brokers '127.0.0.1:9', ssl_ca_location '/etc/ssl/private');
CREATE SERVER kmine FOREIGN DATA WRAPPER streamkpi_kafka OPTIONS (brokers '127.0.0.1:9');
CREATE USER MAPPING FOR CURRENT_USER SERVER kmine OPTIONS (ssl_key_location '/etc/ssl/private/x.key');
ALTER SERVER kmine OPTIONS (ADD ssl_engine_location '/tmp/x.so');
ALTER SERVER kmine OPTIONS (ADD offset_store_path '/tmp');
RESET ROLE;
-- a superuser may
ALTER SERVER kmine OPTIONS (ADD ssl_ca_location '/etc/ssl/certs');
-- and then the server's owner can no longer change it
SET ROLE regress_admin;
ALTER SERVER kmine OPTIONS (ADD client_id 'x');
RESET ROLE;

DROP SERVER kmine CASCADE;
SELECT streamkpi.drop_pipeline(name) FROM streamkpi.pipelines ORDER BY name;
DROP FOREIGN TABLE ksec_in, ksec_other;
DROP SERVER ksec;
DROP TABLE sec_out;
DROP FUNCTION sec_flip(int), sec_temp(int), sec_plant(), sec_definer();
DROP ROLE regress_member, regress_admin, regress_admin2, regress_super;
