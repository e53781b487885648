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

#include "utils/guc.h"

#include "streamkpi.h"

/* Upper bound for any single wait on a Kafka broker, in milliseconds. */
int			streamkpi_kafka_timeout_ms = 10000;

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

	MarkGUCPrefixReserved("streamkpi");
}
