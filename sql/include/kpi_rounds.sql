-- Rounds p_from..p_to of a KPI regression test (through \i, after it
-- defined pg_temp.add_round(round, day)): each round's listens in a
-- transaction of their own, applied by kpi_apply_new() in another.
CREATE PROCEDURE pg_temp.rounds(p_from int, p_to int, p_day date) LANGUAGE plpgsql AS $$
BEGIN
	FOR r IN p_from .. p_to LOOP
		PERFORM pg_temp.add_round(r, p_day);
		COMMIT;
		PERFORM streamkpi.kpi_apply_new();
		COMMIT;
	END LOOP;
END $$;
