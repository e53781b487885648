-- End of a KPI regression test that began with sql/include/kpi_begin.sql:
-- no events, tracks, users or KPI rows left, the worker's counters back.
SELECT pg_temp.empty_kpis();
UPDATE streamkpi.kpi_state k
   SET rounds = c.rounds, events = c.events, late_events = c.late_events
  FROM counters c;
