/*-------------------------------------------------------------------------
 *
 * kpi.h
 *	  The KPI worker: a dynamic background worker ("streamkpi kpi") that
 *	  calls streamkpi.kpi_apply_new() every streamkpi.kpi_naptime, so that
 *	  the KPI tables follow newly committed listens within seconds.  The
 *	  launcher starts it, and starts it again with backoff after a failure.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_KPI_H
#define STREAMKPI_KPI_H

#include "postgres.h"

#include "datatype/timestamp.h"

/* in kpi_worker.c */
extern PGDLLEXPORT void StreamkpiKpiMain(Datum main_arg);
extern void KpiShmemInit(void);
extern pid_t kpi_worker_pid(TimestampTz *started_at);
extern void kpi_worker_ensure_running(void);

#endif							/* STREAMKPI_KPI_H */
