-- streamkpi 0.1: tracks and users as the KPI engine caches them from round
-- to round (src/kpi_dims_cache.c).  Every statement that writes either table
-- marks its transaction, whose commit tells the caches that they are out of
-- date.  The trigger fires whatever session_replication_role says (ALWAYS);
-- a cache is used only while these triggers are in place as created here.
-- It changes nothing and checks nothing: who may write the tables stays as
-- their privileges say.

CREATE FUNCTION streamkpi._kpi_dims_changed()
	RETURNS trigger
	AS 'MODULE_PATHNAME', 'streamkpi_kpi_dims_changed'
	LANGUAGE C;

COMMENT ON FUNCTION streamkpi._kpi_dims_changed() IS
	'statement trigger of tracks and users: their KPI caches are out of date once the transaction commits';

CREATE TRIGGER kpi_dims_cache
	BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON streamkpi.tracks
	FOR EACH STATEMENT EXECUTE FUNCTION streamkpi._kpi_dims_changed();
ALTER TABLE streamkpi.tracks ENABLE ALWAYS TRIGGER kpi_dims_cache;

CREATE TRIGGER kpi_dims_cache
	BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON streamkpi.users
	FOR EACH STATEMENT EXECUTE FUNCTION streamkpi._kpi_dims_changed();
ALTER TABLE streamkpi.users ENABLE ALWAYS TRIGGER kpi_dims_cache;

REVOKE ALL ON FUNCTION streamkpi._kpi_dims_changed() FROM PUBLIC;
