/*-------------------------------------------------------------------------
 *
 * kafka_client.c
 *	  The single translation of librdkafka errors into SQLSTATEs, and the
 *	  error context that names where in a topic an error happened.
 *
 *	  Class HV (foreign data wrapper errors) is used where one fits, so a
 *	  client can tell a broker problem from a problem in its own SQL.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "kafka_client.h"

/*
 * Map a librdkafka error to the SQLSTATE a PostgreSQL client expects.
 */
int
kafka_error_sqlstate(rd_kafka_resp_err_t err)
{
	switch (err)
	{
			/* the broker cannot be reached or did not answer in time */
		case RD_KAFKA_RESP_ERR__TRANSPORT:
		case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
		case RD_KAFKA_RESP_ERR__RESOLVE:
		case RD_KAFKA_RESP_ERR__TIMED_OUT:
		case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
		case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
		case RD_KAFKA_RESP_ERR__WAIT_COORD:
		case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
		case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
		case RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE:
		case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
		case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
		case RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE:
		case RD_KAFKA_RESP_ERR_NOT_COORDINATOR:
			return ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION;

			/* the topic or partition does not exist */
		case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
		case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
		case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
			return ERRCODE_FDW_TABLE_NOT_FOUND;

			/* who we are was not accepted */
		case RD_KAFKA_RESP_ERR__AUTHENTICATION:
		case RD_KAFKA_RESP_ERR__SSL:
		case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
		case RD_KAFKA_RESP_ERR_UNSUPPORTED_SASL_MECHANISM:
		case RD_KAFKA_RESP_ERR_ILLEGAL_SASL_STATE:
			return ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;

			/* who we are may not do this */
		case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
		case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
		case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
		case RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
			return ERRCODE_INSUFFICIENT_PRIVILEGE;

			/* what we asked for is malformed */
		case RD_KAFKA_RESP_ERR__INVALID_ARG:
		case RD_KAFKA_RESP_ERR_INVALID_CONFIG:
		case RD_KAFKA_RESP_ERR_INVALID_PARTITIONS:
		case RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR:
		case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
			return ERRCODE_INVALID_PARAMETER_VALUE;

		case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS:
			return ERRCODE_DUPLICATE_OBJECT;

		case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
		case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
			return ERRCODE_PROGRAM_LIMIT_EXCEEDED;

		case RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE:
		case RD_KAFKA_RESP_ERR__BAD_MSG:
		case RD_KAFKA_RESP_ERR_INVALID_MSG:
			return ERRCODE_FDW_INVALID_DATA_TYPE;

		case RD_KAFKA_RESP_ERR__DESTROY:
		case RD_KAFKA_RESP_ERR__FATAL:
		case RD_KAFKA_RESP_ERR__CRIT_SYS_RESOURCE:
			return ERRCODE_SYSTEM_ERROR;

		default:
			return ERRCODE_FDW_ERROR;
	}
}

/*
 * Map the result of rd_kafka_conf_set(): an unknown property is a bad
 * option name, a rejected value a bad option value.
 */
int
kafka_conf_error_sqlstate(rd_kafka_conf_res_t res)
{
	switch (res)
	{
		case RD_KAFKA_CONF_UNKNOWN:
			return ERRCODE_FDW_INVALID_OPTION_NAME;
		case RD_KAFKA_CONF_INVALID:
			return ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE;
		default:
			return ERRCODE_FDW_ERROR;
	}
}

/*
 * errcontext() callback body naming a message's place in Kafka.  Pass a
 * negative partition or offset when it is not known.
 */
int
kafka_errcontext_location(const char *topic, int32 partition, int64 offset)
{
	if (partition >= 0 && offset >= 0)
		return errcontext("Kafka topic \"%s\" partition %d offset %lld",
						  topic, partition, (long long) offset);
	if (partition >= 0)
		return errcontext("Kafka topic \"%s\" partition %d", topic, partition);
	return errcontext("Kafka topic \"%s\"", topic);
}

/*
 * ERROR for a failed librdkafka call; action says what we were doing, in
 * the form "could not <action>".
 */
void
kafka_report_error(rd_kafka_resp_err_t err, const char *action)
{
	ereport(ERROR,
			(errcode(kafka_error_sqlstate(err)),
			 errmsg("could not %s: %s", action, rd_kafka_err2str(err)),
			 errdetail("librdkafka error %s.", rd_kafka_err2name(err))));
	pg_unreachable();
}
