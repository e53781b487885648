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

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"

/*
 * A librdkafka handle that belongs to a memory context: deleting or
 * resetting the context (also during error cleanup) stops consumption,
 * purges unsent messages and destroys the handle and its threads.
 */
typedef struct KafkaHandle
{
	rd_kafka_t *rk;
	rd_kafka_type_t type;
	char	   *topic;
	rd_kafka_topic_t *rkt;		/* topic handle, created on demand */
	rd_kafka_queue_t *queue;	/* consumer queue while consuming */
	int			nstarted;		/* partitions started on the queue */
	int32	   *started;		/* their ids */
	rd_kafka_message_t **pending;	/* consumed, not yet destroyed */
	int			npending;
	int			pending_pos;
	rd_kafka_message_t *current;	/* returned last, destroyed on next call */

	/* filled by callbacks, which run in the backend (from rd_kafka_poll) */
	char		last_error[256];
	rd_kafka_resp_err_t last_error_code;
	int64		delivered;
	int64		failed;
	char		first_failure[256];

	MemoryContextCallback cb;
} KafkaHandle;

/* One name = value librdkafka property. */
typedef struct KafkaProperty
{
	char	   *name;
	char	   *value;
	bool		secret;			/* never print the value */
} KafkaProperty;

/* in kafka_client.c */
extern int	kafka_error_sqlstate(rd_kafka_resp_err_t err);
extern int	kafka_conf_error_sqlstate(rd_kafka_conf_res_t res);
extern int	kafka_errcontext_location(const char *topic, int32 partition,
									  int64 offset);
extern void kafka_report_error(rd_kafka_resp_err_t err, const char *action)
			pg_attribute_noreturn();

extern bool kafka_property_is_secret(const char *name);
extern void kafka_property_check_privilege(const char *name);
extern bool kafka_property_check(const char *name, const char *value,
								 char **canonical, char *errbuf, size_t errlen,
								 rd_kafka_conf_res_t *res);
extern void kafka_conf_set_logger(rd_kafka_conf_t *conf);
extern void kafka_serve_logs(rd_kafka_t *rk);
extern KafkaHandle *kafka_handle_create(rd_kafka_type_t type, List *props,
										const char *topic, MemoryContext cxt);
extern KafkaHandle *kafka_handle_create_ex(rd_kafka_type_t type, List *props,
										   const char *topic, int queue_kb,
										   MemoryContext cxt);
extern int	kafka_queue_kbytes(int npartitions);
extern bool kafka_props_set(List *props, const char *name);
extern void kafka_handle_destroy(KafkaHandle *h);
extern void kafka_handle_poll(KafkaHandle *h);
extern int32 kafka_partition_count(KafkaHandle *h);
extern void kafka_get_offsets(KafkaHandle *h, int npart, const int32 *parts,
							  const int64 *stamps, int64 *result);
extern bool kafka_topic_size(List *props, const char *topic, int budget_ms,
							 int32 *npartitions, int64 *messages);
extern void kafka_consume_start(KafkaHandle *h, int nranges,
								const int32 *parts, const int64 *starts);
extern void kafka_consume_stop(KafkaHandle *h);
extern rd_kafka_message_t *kafka_consume_next(KafkaHandle *h,
											  TimestampTz *idle_since);
extern void kafka_produce(KafkaHandle *h, int32 partition,
						  const char *payload, size_t len,
						  const char *key, size_t keylen, int64 timestamp_ms);
extern void kafka_flush(KafkaHandle *h);
extern List *kafka_list_topics(KafkaHandle *h, List **partitions);

#endif							/* STREAMKPI_KAFKA_CLIENT_H */
