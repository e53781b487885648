/*-------------------------------------------------------------------------
 *
 * kafka_client.h
 *	  librdkafka handles owned by PostgreSQL memory contexts, and the one
 *	  place where librdkafka errors become SQLSTATEs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_KAFKA_CLIENT_H
#define STREAMKPI_KAFKA_CLIENT_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

/* in kafka_client.c */
extern int	kafka_error_sqlstate(rd_kafka_resp_err_t err);
extern int	kafka_conf_error_sqlstate(rd_kafka_conf_res_t res);
extern int	kafka_errcontext_location(const char *topic, int32 partition,
									  int64 offset);
extern void kafka_report_error(rd_kafka_resp_err_t err, const char *action)
			pg_attribute_noreturn();

#endif							/* STREAMKPI_KAFKA_CLIENT_H */
