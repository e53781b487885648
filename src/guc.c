/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  Every streamkpi.* setting is defined here, and the prefix is reserved
 *	  so that a misspelt setting is reported instead of silently ignored.
 *
 *	  Settings never change what a sketch computes: those parameters belong
 *	  to the call (see sketch_topn.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"

#include "streamkpi.h"

/* Upper bound for any single wait on a Kafka broker, in milliseconds. */
int			streamkpi_kafka_timeout_ms = 10000;

/* The database whose pipelines the launcher runs. */
char	   *streamkpi_database = NULL;

/* The time zone whose calendar days the KPI tables count in. */
char	   *streamkpi_kpi_timezone = NULL;

/* Shared-memory slots for pipeline workers; fixed at server start. */
int			streamkpi_max_pipeline_workers = 16;

void
StreamkpiGucInit(void)
{
	DefineCustomIntVariable("streamkpi.kafka_timeout",
							"Longest time one Kafka operation may wait for a broker.",
							"Unreachable brokers, unknown topics and failed authentication "
							"are reported as errors after this time.",
							&streamkpi_kafka_timeout_ms,
							10000,
							100,
							INT_MAX / 1000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	/*
	 * Server-start settings can only be defined while preloading; without
	 * preloading there are no workers for them to configure.
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomStringVariable("streamkpi.database",
								   "Database whose pipelines the streamkpi launcher runs.",
								   NULL,
								   &streamkpi_database,
								   "postgres",
								   PGC_POSTMASTER,
								   0,
								   NULL, NULL, NULL);

		DefineCustomIntVariable("streamkpi.max_pipeline_workers",
								"Most pipeline workers that can run at once.",
								"Each pipeline runs parallelism workers.",
								&streamkpi_max_pipeline_workers,
								16,
								1,
								1024,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);
	}

	DefineCustomStringVariable("streamkpi.kpi_timezone",
							   "Time zone whose calendar days the KPI tables count in.",
							   "refresh_kpis() and the KPI worker check the name when they use it.",
							   &streamkpi_kpi_timezone,
							   "UTC",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);

	MarkGUCPrefixReserved("streamkpi");
}
