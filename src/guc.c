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
#include "utils/datetime.h"
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

/* The KPI worker: on/off, pause between rounds (ms). */
bool		streamkpi_kpi_worker = true;
int			streamkpi_kpi_naptime_ms = 250;

/* Late events and retention, as interval strings read by SQL. */
char	   *streamkpi_late_horizon = NULL;
char	   *streamkpi_retention = NULL;

/* Accept what the interval type accepts, and only positive spans. */
static bool
check_positive_interval(char **newval, void **extra, GucSource source)
{
	char		workbuf[256];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype;
	struct pg_itm_in itm_in;
	Interval	span;

	if (*newval == NULL ||
		ParseDateTime(*newval, workbuf, sizeof(workbuf), field, ftype,
					  MAXDATEFIELDS, &nf) != 0 ||
		DecodeInterval(field, ftype, nf, INTERVAL_FULL_RANGE, &dtype,
					   &itm_in) != 0 ||
		dtype != DTK_DELTA ||
		itmin2interval(&itm_in, &span) != 0)
	{
		GUC_check_errdetail("\"%s\" is not an interval.", *newval ? *newval : "");
		return false;
	}
	if (span.month < 0 || span.day < 0 || span.time < 0 ||
		(span.month == 0 && span.day == 0 && span.time == 0))
	{
		GUC_check_errdetail("The interval must be positive.");
		return false;
	}
	return true;
}

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

	DefineCustomBoolVariable("streamkpi.kpi_worker",
							 "Runs the KPI worker that keeps the KPI tables current.",
							 "Off: KPI tables change only through refresh_kpis() and kpi_apply_new().",
							 &streamkpi_kpi_worker,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("streamkpi.kpi_naptime",
							"Longest pause of the KPI worker between two rounds.",
							"A pipeline whose backlog of full batches has drained wakes the worker sooner.",
							&streamkpi_kpi_naptime_ms,
							250,
							10,
							60000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("streamkpi.late_horizon",
							   "How late an event may arrive and still be counted.",
							   "An event ingested more than this after it happened goes to "
							   "streamkpi.dead_letters instead of the KPI tables.",
							   &streamkpi_late_horizon,
							   "7 days",
							   PGC_USERSET,
							   0,
							   check_positive_interval, NULL, NULL);

	DefineCustomStringVariable("streamkpi.retention",
							   "Age after which day partitions of raw listens are archived.",
							   "streamkpi.archive_listens() detaches them into schema streamkpi_archive.",
							   &streamkpi_retention,
							   "90 days",
							   PGC_USERSET,
							   0,
							   check_positive_interval, NULL, NULL);

	MarkGUCPrefixReserved("streamkpi");
}
