-- streamkpi 0.1: tracks and users as the KPI engine caches them from round
-- to round (src/kpi_dims_cache.c).  The triggers tell the caches of every
-- write: before each statement that writes either table (the writing
-- transaction's own rounds do without the cache), and after each row it
-- writes (the commit makes every cache out of date; an upsert that changes
-- nothing leaves them be).  They fire whatever session_replication_role
-- says (ALWAYS, so in logical replication's apply too), and a cache is used
-- only while they are in place as created here.  They change nothing and
-- check nothing: who may write the tables stays as their privileges say.

CREATE FUNCTION streamkpi._kpi_dims_changed()
	RETURNS trigger
	AS 'MODULE_PATHNAME', 'streamkpi_kpi_dims_changed'
	LANGUAGE C;

COMMENT ON FUNCTION streamkpi._kpi_dims_changed() IS
	'trigger of tracks and users: their KPI caches are out of date once the writing transaction commits';

CREATE TRIGGER kpi_dims_cache
	BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON streamkpi.tracks
	FOR EACH STATEMENT EXECUTE FUNCTION streamkpi._kpi_dims_changed();
CREATE TRIGGER kpi_dims_cache_rows
	AFTER INSERT OR UPDATE OR DELETE ON streamkpi.tracks
	FOR EACH ROW EXECUTE FUNCTION streamkpi._kpi_dims_changed();
ALTER TABLE streamkpi.tracks ENABLE ALWAYS TRIGGER kpi_dims_cache;
ALTER TABLE streamkpi.tracks ENABLE ALWAYS TRIGGER kpi_dims_cache_rows;

CREATE TRIGGER kpi_dims_cache
	BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON streamkpi.users
	FOR EACH STATEMENT EXECUTE FUNCTION streamkpi._kpi_dims_changed();
CREATE TRIGGER kpi_dims_cache_rows
	AFTER INSERT OR UPDATE OR DELETE ON streamkpi.users
	FOR EACH ROW EXECUTE FUNCTION streamkpi._kpi_dims_changed();
ALTER TABLE streamkpi.users ENABLE ALWAYS TRIGGER kpi_dims_cache;
ALTER TABLE streamkpi.users ENABLE ALWAYS TRIGGER kpi_dims_cache_rows;

REVOKE ALL ON FUNCTION streamkpi._kpi_dims_changed() FROM PUBLIC;
