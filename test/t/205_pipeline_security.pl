# Pipelines and privileges, against a real broker: a streamkpi_admin member
# cannot redefine a superuser's pipeline, its own pipeline runs as itself,
# the worker's bookkeeping never runs a planted operator, dropping the owner
# stops the pipeline with a clear error, oversized CSV records are dead
# letters and error rows (no crash), and a pipeline waiting for an absent
# broker stops within streamkpi.kafka_timeout, with no raw librdkafka lines
# in the server log.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use StreamKPI::Kafka;
use StreamKPI::Node;

my $kafka_timeout_s = 5;
my $kafka = StreamKPI::Kafka->start('security');
$kafka->create_topic('events', 2);
$kafka->create_topic('other', 1);
$kafka->create_topic('csv', 1);
my $node = StreamKPI::Node->new_node('security',
	'streamkpi.kafka_timeout' => "'${kafka_timeout_s}s'");
StreamKPI::Node::create_event_tables($node, $kafka->bootstrap, 'events');

sub sq { return $node->safe_psql('postgres', $_[0]); }

# psql as $role with SQLSTATEs in error messages; returns stderr
sub as_role
{
	my ($role, $sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql",
		extra_params => [ '-U', $role ]);
	return $err;
}

# eve is only in streamkpi_admin, with her own schema; her function pwn()
# tries to make her a superuser, and her operator eve.= (text, text) records
# who called it.
sq(q{
	CREATE FOREIGN TABLE kafka_other (event_id text, n int) SERVER kafka
		OPTIONS (topic 'other', format 'json');
	CREATE ROLE eve LOGIN IN ROLE streamkpi_admin;
	GRANT USAGE ON FOREIGN SERVER kafka TO eve;
	GRANT SELECT ON kafka_events, kafka_other TO eve;
	GRANT INSERT ON events TO eve;
	CREATE SCHEMA eve AUTHORIZATION eve;
	SET ROLE eve;
	CREATE TABLE eve.spied (caller text, superuser bool);
	GRANT INSERT ON eve.spied TO PUBLIC;
	CREATE FUNCTION eve.spy_eq(a text, b text) RETURNS bool LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO eve.spied
			SELECT current_user, rolsuper FROM pg_catalog.pg_roles
			 WHERE rolname OPERATOR(pg_catalog.=) current_user;
		RETURN a OPERATOR(pg_catalog.=) b;
	END $$;
	CREATE OPERATOR eve.= (LEFTARG = text, RIGHTARG = text, FUNCTION = eve.spy_eq);
	CREATE FUNCTION eve.pwn(n int) RETURNS int LANGUAGE plpgsql AS $$
	BEGIN
		RAISE LOG 'eve.pwn runs as %', current_user;
		ALTER ROLE eve SUPERUSER;
		RETURN n;
	END $$;
	CREATE FUNCTION eve.flip(n int) RETURNS int LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM pg_catalog.set_config('search_path', 'eve, pg_catalog, public', false);
		RETURN n;
	END $$;
	RESET ROLE;
});

# ---- a superuser's pipeline: eve may stop it, not redefine it ----
sq(q{SELECT streamkpi.create_pipeline('su',
	$$INSERT INTO events SELECT event_id, n, kpartition, koffset FROM kafka_events$$)});
my $su_before = sq(q{SELECT owner, statement, source, search_path, batch_size
	FROM streamkpi.pipelines WHERE name = 'su'});

my $err = as_role('eve', q{SELECT streamkpi.alter_pipeline('su',
	statement => $$INSERT INTO events SELECT event_id, eve.pwn(n), kpartition, koffset FROM kafka_events$$)});
like($err, qr/ERROR:  42501: permission denied to redefine pipeline "su"/,
	'an admin cannot alter the statement of a superuser\'s pipeline (42501)');
like($err, qr/HINT:  Only members of role \S+ may alter or drop it/, 'the error says who may');
$err = as_role('eve', q{SELECT streamkpi.alter_pipeline('su',
	statement => $$INSERT INTO events (event_id, n) SELECT event_id, n FROM kafka_other$$)});
like($err, qr/ERROR:  42501: permission denied to redefine pipeline "su"/,
	'nor re-point it to another foreign table (42501)');
$err = as_role('eve', q{SELECT streamkpi.alter_pipeline('su', batch_size => 1)});
like($err, qr/ERROR:  42501: /, 'nor change its settings');
$err = as_role('eve', q{SELECT streamkpi.drop_pipeline('su')});
like($err, qr/ERROR:  42501: /, 'nor drop it');
$err = as_role('eve', q{SELECT streamkpi.start_pipeline('su'); SELECT streamkpi.stop_pipeline('su')});
unlike($err, qr/ERROR/, 'but start and stop it');
is(sq(q{SELECT owner, statement, source, search_path, batch_size
	FROM streamkpi.pipelines WHERE name = 'su'}), $su_before,
	'the superuser\'s pipeline is unchanged');
$node->psql('postgres', q{SELECT streamkpi.drop_pipeline('su')});

# ---- eve's own pipeline runs as eve: ALTER ROLE ... SUPERUSER fails ----
$err = as_role('eve', q{SELECT streamkpi.create_pipeline('evep',
	$$INSERT INTO events SELECT event_id, eve.pwn(n), kpartition, koffset FROM kafka_events$$);
	SELECT streamkpi.start_pipeline('evep')});
unlike($err, qr/ERROR/, 'eve creates and starts a pipeline calling eve.pwn()');
StreamKPI::Node::produce_events($kafka, 'events', 1, 10);
ok($node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM streamkpi.pipeline_status
	 WHERE pipeline = 'evep' AND last_error LIKE '%must be superuser%'}),
	'the pipeline fails with the permission error of its owner');
is(sq(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'eve'}), 'f', 'eve is still not a superuser');
like(slurp_file($node->logfile), qr/eve\.pwn runs as eve\b/, 'eve.pwn() ran, as eve');
is(sq('SELECT count(*) FROM events'), '0', 'and nothing of the failed batches committed');
sq(q{SELECT streamkpi.drop_pipeline('evep')});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'streamkpi pipeline'}),
	'its worker is gone');

# ---- a planted operator first on the pipeline's search_path ----
# spy: stored search_path puts eve first; its statement uses = on text, so
# eve.= runs, as eve.  spy2: plain search_path, but its statement switches
# the session's search_path to eve's with set_config(..., false).
$err = as_role('eve', q{
	SET search_path = eve, pg_catalog, public;
	SELECT streamkpi.create_pipeline('spy',
		$$INSERT INTO events SELECT event_id, n, kpartition, koffset FROM kafka_events
		  WHERE event_id = event_id$$, batch_size => 3);
	SET search_path = public;
	SELECT streamkpi.create_pipeline('spy2',
		$$INSERT INTO events SELECT event_id || '/2', eve.flip(n), kpartition, koffset FROM kafka_events$$,
		batch_size => 3);
	SELECT streamkpi.start_pipeline('spy');
	SELECT streamkpi.start_pipeline('spy2')});
unlike($err, qr/ERROR/, 'eve creates and starts pipelines with her search_path');
StreamKPI::Node::produce_events($kafka, 'events', 11, 40);
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 80 FROM events}), 'both pipelines ingest every message, in batches of 3');
sleep 2;	# a few idle checks of the definition, under whatever path is set
is(sq(q{SELECT string_agg(DISTINCT caller || '/' || superuser, ',') FROM eve.spied}), 'eve/false',
	'eve.= ran only as eve, for her statement, never for the worker\'s bookkeeping');
is(sq(q{SELECT count(*) FROM eve.spied}), '40', 'once per message of her statement');
sq(q{SELECT streamkpi.drop_pipeline('spy'); SELECT streamkpi.drop_pipeline('spy2')});

# ---- dropping the owner role stops its pipeline with a clear error ----
sq(q{CREATE ROLE tmp_owner LOGIN IN ROLE streamkpi_admin;
	GRANT USAGE ON FOREIGN SERVER kafka TO tmp_owner;
	GRANT SELECT ON kafka_events TO tmp_owner;
	GRANT INSERT ON events TO tmp_owner});
as_role('tmp_owner', q{SELECT streamkpi.create_pipeline('orphan',
	$$INSERT INTO events SELECT event_id || '/o', n, kpartition, koffset FROM kafka_events$$);
	SELECT streamkpi.start_pipeline('orphan')});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 120 FROM events}),
	'the pipeline runs while its owner exists');
sq(q{REVOKE ALL ON FOREIGN SERVER kafka FROM tmp_owner;
	REVOKE ALL ON kafka_events FROM tmp_owner;
	REVOKE ALL ON events FROM tmp_owner;
	DROP ROLE tmp_owner});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM streamkpi.pipeline_status
	 WHERE pipeline = 'orphan' AND last_error = 'the owner role of pipeline "orphan" was dropped'}),
	'after DROP ROLE the pipeline stops with a clear error');
StreamKPI::Node::produce_events($kafka, 'events', 41, 45);
sleep 2;
is(sq(q{SELECT count(*) FROM events WHERE event_id LIKE '%/o'}), '40',
	'and ingests nothing as the dropped role');
$err = as_role('eve', q{SELECT streamkpi.drop_pipeline('orphan')});
unlike($err, qr/ERROR/, 'streamkpi_admin may drop a pipeline whose owner is gone');

# ---- CSV records with 65 and 1,000 fields ----
sq(q{
	CREATE FOREIGN TABLE kafka_csv (id int, v text,
		kpartition int OPTIONS (meta 'partition'), koffset bigint OPTIONS (meta 'offset'))
		SERVER kafka OPTIONS (topic 'csv', format 'csv');
	CREATE FOREIGN TABLE kafka_csv_rows (id int, v text,
		koffset bigint OPTIONS (meta 'offset'), kerror text OPTIONS (meta 'error'))
		SERVER kafka OPTIONS (topic 'csv', format 'csv');
	CREATE TABLE csv_out (id int, v text);
	SELECT streamkpi.create_pipeline('csvp', $$INSERT INTO csv_out SELECT id, v FROM kafka_csv$$);
	SELECT streamkpi.start_pipeline('csvp')});
my $wide65 = '3,c' . (',y' x 63);
my $wide1000 = '5,e' . (',x' x 998);
is(scalar(split(/,/, $wide65, -1)), 65, 'a record of 65 fields');
is(scalar(split(/,/, $wide1000, -1)), 1000, 'and one of 1,000');
$kafka->produce('csv', [ '1,a', '2,b', $wide65, '4,d', $wide1000, '6,f', '7' . (',z' x 63) ]);
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM streamkpi.dead_letters WHERE pipeline = 'csvp'}),
	'the two oversized records become dead letters');
ok($node->poll_query_until('postgres', q{SELECT count(*) = 5 FROM csv_out}), 'the rest lands');
is(sq(q{SELECT string_agg(id || v, ',' ORDER BY id) FROM csv_out}), '1a,2b,4d,6f,7z',
	'the other records of the batch, 64 fields included');
is(sq(q{SELECT string_agg("offset" || ':' || sqlstate || ':' || error, ';' ORDER BY "offset")
	FROM streamkpi.dead_letters WHERE pipeline = 'csvp'}),
	'2:54000:CSV record has more than 64 fields;4:54000:CSV record has more than 64 fields',
	'each with its offset and reason');
is(sq(q{SELECT string_agg(koffset || ':' || coalesce(id::text, '-') || ':' || coalesce(kerror, 'ok'), ';' ORDER BY koffset)
	FROM kafka_csv_rows}),
	'0:1:ok;1:2:ok;2:-:CSV record has more than 64 fields;3:4:ok;'
	  . '4:-:CSV record has more than 64 fields;5:6:ok;6:7:ok',
	'a foreign scan with an error column returns them as error rows');
my ($rc) = $node->psql('postgres', 'SELECT id FROM kafka_csv');
isnt($rc, 0, 'without an error column the scan fails cleanly');
is(sq('SELECT 1'), '1', 'the server is up');
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|stack smashing|server process .* was terminated/,
	'the server log shows no crash');
sq(q{SELECT streamkpi.drop_pipeline('csvp')});

# ---- stop_pipeline() with the broker down ----
# 'down' starts while the broker is down: its worker waits for the topic's
# metadata.  'downg' is in a consumer group, running when the broker stops.

# stop $pipeline; how many seconds until no worker of it is left
sub seconds_to_stop
{
	my ($pipeline) = @_;
	my $stop_at = time;
	sq(qq{SELECT streamkpi.stop_pipeline('$pipeline')});
	while (time - $stop_at < 60)
	{
		return time - $stop_at if sq(qq{SELECT count(*) FROM pg_stat_activity
			WHERE application_name = 'streamkpi pipeline $pipeline'}) eq '0';
		Time::HiRes::sleep(0.1);
	}
	return undef;
}

sq(q{SELECT streamkpi.create_pipeline('downg',
		$$INSERT INTO events SELECT event_id || '/g', n, kpartition, koffset FROM kafka_events$$,
		group_id => 'sec_group');
	SELECT streamkpi.start_pipeline('downg');
	SELECT streamkpi.create_pipeline('down',
		$$INSERT INTO events SELECT event_id || '/d', n, kpartition, koffset FROM kafka_events$$)});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 45 FROM events WHERE event_id LIKE '%/g'}),
	'the group pipeline runs');
$kafka->stop;
sq(q{SELECT streamkpi.start_pipeline('down')});
ok($node->poll_query_until('postgres', q{
	SELECT count(DISTINCT pipeline) = 2 FROM streamkpi.pipeline_status
	 WHERE pipeline IN ('down', 'downg') AND pid IS NOT NULL AND last_error IS NOT NULL}),
	'both workers wait for the broker and say why');
sleep 2;	# 'down' well inside its wait for the topic's metadata
for my $pipeline ('down', 'downg')
{
	my $seconds = seconds_to_stop($pipeline);
	ok(defined $seconds && $seconds <= $kafka_timeout_s + 1,
		"$pipeline: the stopped worker is gone within kafka_timeout + 1 s");
	note sprintf('%s: worker gone %.2f s after stop_pipeline()', $pipeline, $seconds // -1);
	is(sq(qq{SELECT DISTINCT state FROM streamkpi.pipeline_status WHERE pipeline = '$pipeline'}),
		'stopped', "$pipeline: its status says stopped");
}

$log = slurp_file($node->logfile);
unlike($log, qr/^%\d+\|\d+\.\d+\|/m, 'no raw librdkafka lines in the server log');

$node->stop;
done_testing();
