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

/* ----------------------------------------------------------------
 * Handles
 * ----------------------------------------------------------------
 */

#include <pthread.h>

#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/timestamp.h"

#include "streamkpi.h"

#define KAFKA_SLICE_MS 100		/* longest single blocking librdkafka call */
#define KAFKA_BATCH 4096		/* messages taken from the queue at once */
#define KAFKA_QUEUE_BUDGET_KB (1024 * 1024)	/* prefetch of one scan: 1 GB */
#define KAFKA_QUEUE_MAX_KB (256 * 1024) /* ... of one partition */
#define KAFKA_QUEUE_MIN_KB 4096		/* one fetch (fetch.message.max.bytes) */

static pthread_t backend_thread;

/* Properties whose values are secrets: only in user mappings. */
static const char *const secret_properties[] = {
	"sasl.username", "sasl.password", "ssl.key.password",
	"ssl.keystore.password", "sasl.oauthbearer.client.secret",
	"ssl.key.pem", "sasl.oauthbearer.config", NULL
};

bool
kafka_property_is_secret(const char *name)
{
	for (int i = 0; secret_properties[i]; i++)
		if (strcmp(name, secret_properties[i]) == 0)
			return true;
	return false;
}

/*
 * Properties that make librdkafka act as the server's operating-system
 * user.  Setting one takes the right PostgreSQL asks for the same act
 * (COPY ... PROGRAM, COPY from or to a file, LOAD); role InvalidOid means
 * superusers only.
 */
typedef struct KafkaPrivilegedProperty
{
	const char *name;
	Oid			role;			/* predefined role that may set it */
	const char *act;			/* what librdkafka does with the value */
	const char *instead;		/* what anyone may set instead, or NULL */
} KafkaPrivilegedProperty;

#define INLINE_PEM "Give certificates and keys inline with ssl.ca.pem, ssl.certificate.pem and ssl.key.pem instead."

static const KafkaPrivilegedProperty privileged_properties[] = {
	{"sasl.kerberos.kinit.cmd", ROLE_PG_EXECUTE_SERVER_PROGRAM, "runs it as a shell command", NULL},
	{"plugin.library.paths", InvalidOid, "loads it as a shared library", NULL},
	{"ssl.engine.location", InvalidOid, "loads it as a shared library", NULL},
	{"ssl.engine.id", InvalidOid, "loads that OpenSSL engine", NULL},
	{"ssl.providers", InvalidOid, "loads those OpenSSL providers", NULL},
	{"ssl.key.location", ROLE_PG_READ_SERVER_FILES, "reads that file", INLINE_PEM},
	{"ssl.certificate.location", ROLE_PG_READ_SERVER_FILES, "reads that file", INLINE_PEM},
	{"ssl.ca.location", ROLE_PG_READ_SERVER_FILES, "reads that file", INLINE_PEM},
	{"ssl.crl.location", ROLE_PG_READ_SERVER_FILES, "reads that file", NULL},
	{"ssl.keystore.location", ROLE_PG_READ_SERVER_FILES, "reads that file", INLINE_PEM},
	{"ssl.ca.certificate.stores", ROLE_PG_READ_SERVER_FILES, "reads those certificate stores", INLINE_PEM},
	{"sasl.kerberos.keytab", ROLE_PG_READ_SERVER_FILES, "reads that file", NULL},
	{"offset.store.path", ROLE_PG_WRITE_SERVER_FILES, "writes offset files there", NULL},
	{"offset.store.method", ROLE_PG_WRITE_SERVER_FILES, "may write offset files", NULL},
	{NULL, InvalidOid, NULL, NULL}
};

/*
 * Error unless the current user may set property name (spelt with dots or
 * underscores).  Called before librdkafka sees the value: it loads
 * plugin.library.paths as soon as that is set.
 */
void
kafka_property_check_privilege(const char *name)
{
	char	   *dotted = pstrdup(name);
	const KafkaPrivilegedProperty *p;

	for (char *c = dotted; *c; c++)
		if (*c == '_')
			*c = '.';
	for (p = privileged_properties; p->name; p++)
		if (strcmp(dotted, p->name) == 0)
			break;
	if (p->name == NULL || superuser() ||
		(OidIsValid(p->role) && has_privs_of_role(GetUserId(), p->role)))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to set Kafka property \"%s\"", name),
			 errdetail("librdkafka %s, as the database server's operating-system user.",
					   p->act),
			 OidIsValid(p->role) ?
			 errhint("Only superusers and members of %s may set it.%s%s",
					 GetUserNameFromId(p->role, false),
					 p->instead ? " " : "", p->instead ? p->instead : "") :
			 errhint("Only superusers may set it.")));
}

/*
 * Check one librdkafka property against a scratch configuration.  The
 * option may be spelt with dots or underscores; *canonical gets the name
 * librdkafka knows.  Returns false with librdkafka's complaint in errbuf.
 */
bool
kafka_property_check(const char *name, const char *value, char **canonical,
					 char *errbuf, size_t errlen, rd_kafka_conf_res_t *res)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char	   *dotted = pstrdup(name);

	*res = rd_kafka_conf_set(conf, name, value, errbuf, errlen);
	if (*res == RD_KAFKA_CONF_UNKNOWN)
	{
		for (char *p = dotted; *p; p++)
			if (*p == '_')
				*p = '.';
		*res = rd_kafka_conf_set(conf, dotted, value, errbuf, errlen);
		if (*res == RD_KAFKA_CONF_OK)
			name = dotted;
	}
	rd_kafka_conf_destroy(conf);
	if (canonical)
		*canonical = pstrdup(name);
	return *res == RD_KAFKA_CONF_OK;
}

/* librdkafka log lines, served in the backend thread through the log queue */
static void
kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	if (!pthread_equal(pthread_self(), backend_thread))
		return;
	ereport(level <= 2 ? LOG : DEBUG1,
			(errmsg_internal("librdkafka %s: %s", fac, buf)));
}

/* remembered for the error we raise when a wait times out */
static void
kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	KafkaHandle *h = (KafkaHandle *) opaque;

	h->last_error_code = err;
	strlcpy(h->last_error, reason, sizeof(h->last_error));
}

static void
kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
	KafkaHandle *h = (KafkaHandle *) opaque;

	if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR)
		h->delivered++;
	else
	{
		if (h->failed == 0)
			strlcpy(h->first_failure, rd_kafka_err2str(msg->err),
					sizeof(h->first_failure));
		h->failed++;
	}
}

static void
kafka_handle_reset_cb(void *arg)
{
	kafka_handle_destroy((KafkaHandle *) arg);
}

static void
conf_set_or_error(rd_kafka_conf_t *conf, const char *name, const char *value,
				  bool secret)
{
	char		errbuf[512];
	rd_kafka_conf_res_t res;

	res = rd_kafka_conf_set(conf, name, value, errbuf, sizeof(errbuf));
	if (res != RD_KAFKA_CONF_OK)
	{
		rd_kafka_conf_destroy(conf);
		ereport(ERROR,
				(errcode(kafka_conf_error_sqlstate(res)),
				 errmsg("invalid Kafka property \"%s\"", name),
				 secret ? 0 : errdetail("%s", errbuf)));
	}
}

/*
 * Route a client's log lines through kafka_log_cb in the backend thread:
 * call this on its configuration, and kafka_serve_logs() on the client
 * made from it.  Without it librdkafka prints raw "%N|..." lines to
 * stderr, past log_min_messages.
 */
void
kafka_conf_set_logger(rd_kafka_conf_t *conf)
{
	backend_thread = pthread_self();
	conf_set_or_error(conf, "log.queue", "true", false);
	rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
}

/* Log lines go to the main queue, served by rd_kafka_poll (or a consumer's poll). */
void
kafka_serve_logs(rd_kafka_t *rk)
{
	rd_kafka_set_log_queue(rk, NULL);
}

/*
 * Create a consumer or producer for one topic.  props is a list of
 * KafkaProperty from the server and user mapping; they override our
 * defaults, except the properties the scan's correctness depends on.
 */
KafkaHandle *
kafka_handle_create(rd_kafka_type_t type, List *props, const char *topic,
					MemoryContext cxt)
{
	return kafka_handle_create_ex(type, props, topic, KAFKA_QUEUE_MAX_KB, cxt);
}

/*
 * Prefetch buffer per partition when npartitions are read at once, in kB.
 * librdkafka 2.0 resumes fetching a partition whose local queue was full
 * only on its own timer, which stalls a scan whose consumer (an INSERT) is
 * slower than the network; so buffer deeply, but bound what one scan can
 * hold: a fixed budget shared by the partitions, with a floor of one fetch.
 */
int
kafka_queue_kbytes(int npartitions)
{
	int64		kb = KAFKA_QUEUE_BUDGET_KB / Max(npartitions, 1);

	return (int) Max(KAFKA_QUEUE_MIN_KB, Min(kb, KAFKA_QUEUE_MAX_KB));
}

/* does the server or user mapping set this librdkafka property itself? */
bool
kafka_props_set(List *props, const char *name)
{
	ListCell   *lc;

	foreach(lc, props)
		if (strcmp(((KafkaProperty *) lfirst(lc))->name, name) == 0)
			return true;
	return false;
}

/*
 * As kafka_handle_create; a consumer prefetches at most queue_kb kilobytes
 * per partition unless the properties say otherwise.
 */
KafkaHandle *
kafka_handle_create_ex(rd_kafka_type_t type, List *props, const char *topic,
					   int queue_kb, MemoryContext cxt)
{
	KafkaHandle *h;
	rd_kafka_conf_t *conf;
	char		errbuf[512];
	char		tmo[32];
	char		qkb[32];
	ListCell   *lc;

	h = MemoryContextAllocZero(cxt, sizeof(KafkaHandle));
	h->type = type;
	h->topic = MemoryContextStrdup(cxt, topic ? topic : "");
	h->started = MemoryContextAllocZero(cxt, sizeof(int32) * 1);
	h->pending = MemoryContextAllocZero(cxt,
										sizeof(rd_kafka_message_t *) * KAFKA_BATCH);

	conf = rd_kafka_conf_new();
	snprintf(tmo, sizeof(tmo), "%d", streamkpi_kafka_timeout_ms);
	snprintf(qkb, sizeof(qkb), "%d", queue_kb);
	conf_set_or_error(conf, "client.id", "streamkpi", false);
	conf_set_or_error(conf, "socket.timeout.ms", tmo, false);
	if (type == RD_KAFKA_CONSUMER)
	{
		conf_set_or_error(conf, "fetch.wait.max.ms", "10", false);
		conf_set_or_error(conf, "fetch.error.backoff.ms", "10", false);
		conf_set_or_error(conf, "queued.min.messages", "1000000", false);
		conf_set_or_error(conf, "queued.max.messages.kbytes", qkb, false);
		conf_set_or_error(conf, "fetch.message.max.bytes", "4194304", false);
		conf_set_or_error(conf, "check.crcs", "false", false);
		conf_set_or_error(conf, "auto.offset.reset", "earliest", false);
	}
	else
	{
		/*
		 * No per-message deadline: a message may wait in the local queue as
		 * long as the broker keeps acknowledging others (a slow or throttled
		 * broker, a saturated machine); kafka_await_delivery fails the
		 * statement when no acknowledgement arrives within kafka_timeout.
		 * The queue is kept small, which bounds the backend's memory.
		 */
		conf_set_or_error(conf, "message.timeout.ms", "0", false);
		conf_set_or_error(conf, "acks", "all", false);
		conf_set_or_error(conf, "enable.idempotence", "true", false);
		conf_set_or_error(conf, "linger.ms", "5", false);
		conf_set_or_error(conf, "batch.num.messages", "10000", false);
		conf_set_or_error(conf, "queue.buffering.max.messages", "100000", false);
		conf_set_or_error(conf, "queue.buffering.max.kbytes", "65536", false);
	}

	foreach(lc, props)
	{
		KafkaProperty *p = (KafkaProperty *) lfirst(lc);

		conf_set_or_error(conf, p->name, p->value, p->secret);
	}

	/* what correctness depends on: not overridable */
	kafka_conf_set_logger(conf);
	if (type == RD_KAFKA_CONSUMER)
	{
		conf_set_or_error(conf, "enable.partition.eof", "true", false);
		conf_set_or_error(conf, "enable.auto.commit", "false", false);
		conf_set_or_error(conf, "enable.auto.offset.store", "false", false);
	}
	else
		rd_kafka_conf_set_dr_msg_cb(conf, kafka_dr_cb);
	rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
	rd_kafka_conf_set_opaque(conf, h);

	h->rk = rd_kafka_new(type, conf, errbuf, sizeof(errbuf));
	if (h->rk == NULL)
	{
		rd_kafka_conf_destroy(conf);
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg("could not create Kafka client"),
				 errdetail("%s", errbuf)));
	}
	/* from here on the context owns the handle */
	h->cb.func = kafka_handle_reset_cb;
	h->cb.arg = h;
	MemoryContextRegisterResetCallback(cxt, &h->cb);

	kafka_serve_logs(h->rk);
	if (topic)
	{
		h->rkt = rd_kafka_topic_new(h->rk, topic, NULL);
		if (h->rkt == NULL)
			kafka_report_error(rd_kafka_last_error(), "open Kafka topic");
	}
	return h;
}

/*
 * Release everything librdkafka holds; safe to call twice and from a
 * memory context reset callback during error cleanup.
 */
void
kafka_handle_destroy(KafkaHandle *h)
{
	if (h->rk == NULL)
		return;
	kafka_consume_stop(h);
	if (h->type == RD_KAFKA_PRODUCER)
		rd_kafka_purge(h->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
	if (h->rkt)
		rd_kafka_topic_destroy(h->rkt);
	h->rkt = NULL;
	rd_kafka_destroy_flags(h->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	h->rk = NULL;
}

/* serve logs, errors and delivery reports in this thread */
void
kafka_handle_poll(KafkaHandle *h)
{
	rd_kafka_poll(h->rk, 0);
}

static void
kafka_timeout_error(KafkaHandle *h, const char *what)
{
	ereport(ERROR,
			(errcode(h->last_error_code == RD_KAFKA_RESP_ERR__AUTHENTICATION ?
					 ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION :
					 ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
			 errmsg("could not %s within %d ms", what, streamkpi_kafka_timeout_ms),
			 h->last_error[0] ? errdetail("Last broker error: %s.", h->last_error) :
			 errdetail("The broker did not answer."),
			 errhint("Check the server's brokers option, or raise streamkpi.kafka_timeout.")));
}

/* An authentication failure is final: do not wait for the timeout. */
static void
kafka_check_fatal(KafkaHandle *h, const char *what)
{
	if (h->last_error_code == RD_KAFKA_RESP_ERR__AUTHENTICATION ||
		h->last_error_code == RD_KAFKA_RESP_ERR__FATAL)
		ereport(ERROR,
				(errcode(kafka_error_sqlstate(h->last_error_code)),
				 errmsg("could not %s: %s", what,
						rd_kafka_err2str(h->last_error_code)),
				 errdetail("%s", h->last_error)));
}

/* a blocking call's timeout: one slice, but never past the deadline */
static int
kafka_slice(TimestampTz deadline, int slice_ms)
{
	long		secs;
	int			usecs;
	int64		left;

	TimestampDifference(GetCurrentTimestamp(), deadline, &secs, &usecs);
	left = (int64) secs * 1000 + usecs / 1000;
	return (int) Max(1, Min(left, slice_ms));
}

static TimestampTz
kafka_deadline(void)
{
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
									   streamkpi_kafka_timeout_ms);
}

/*
 * Number of partitions of the handle's topic.  ERROR when the topic does
 * not exist or no broker answers within streamkpi.kafka_timeout.
 */
int32
kafka_partition_count(KafkaHandle *h)
{
	TimestampTz deadline = kafka_deadline();
	char	   *what = psprintf("fetch metadata of Kafka topic \"%s\"", h->topic);

	for (;;)
	{
		const struct rd_kafka_metadata *md = NULL;
		rd_kafka_resp_err_t err;

		CHECK_FOR_INTERRUPTS();
		kafka_handle_poll(h);
		kafka_check_fatal(h, what);
		err = rd_kafka_metadata(h->rk, 0, h->rkt, &md,
								kafka_slice(deadline, KAFKA_SLICE_MS));
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			rd_kafka_resp_err_t terr = md->topic_cnt == 1 ? md->topics[0].err :
			RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
			int32		n = md->topic_cnt == 1 ? md->topics[0].partition_cnt : 0;

			rd_kafka_metadata_destroy(md);
			if (terr == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
				terr == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_TABLE_NOT_FOUND),
						 errmsg("Kafka topic \"%s\" does not exist", h->topic)));
			if (terr == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
				(terr == RD_KAFKA_RESP_ERR_NO_ERROR && n == 0))
				goto retry;
			if (terr != RD_KAFKA_RESP_ERR_NO_ERROR)
				kafka_report_error(terr, what);
			return n;
		}
		if (err != RD_KAFKA_RESP_ERR__TIMED_OUT &&
			err != RD_KAFKA_RESP_ERR__TRANSPORT)
			kafka_report_error(err, what);
retry:
		if (GetCurrentTimestamp() >= deadline)
			kafka_timeout_error(h, what);
		pg_usleep(10000);
	}
}

/*
 * Offsets for times, one request for all partitions: stamps[i] is a
 * millisecond timestamp, or -2 (earliest) / -1 (latest).  result[i] is the
 * first offset at or after the time, -1 when there is none.
 */
void
kafka_get_offsets(KafkaHandle *h, int npart, const int32 *parts,
				  const int64 *stamps, int64 *result)
{
	TimestampTz deadline = kafka_deadline();
	char	   *what = psprintf("read offsets of Kafka topic \"%s\"", h->topic);

	if (npart == 0)
		return;
	for (;;)
	{
		rd_kafka_topic_partition_list_t *tpl;
		rd_kafka_resp_err_t err;

		CHECK_FOR_INTERRUPTS();
		kafka_handle_poll(h);
		kafka_check_fatal(h, what);
		tpl = rd_kafka_topic_partition_list_new(npart);
		for (int i = 0; i < npart; i++)
			rd_kafka_topic_partition_list_add(tpl, h->topic, parts[i])->offset =
				stamps[i];
		err = rd_kafka_offsets_for_times(h->rk, tpl,
										 kafka_slice(deadline, KAFKA_SLICE_MS * 2));
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			for (int i = 0; i < npart; i++)
			{
				rd_kafka_topic_partition_t *tp = &tpl->elems[i];

				if (tp->err != RD_KAFKA_RESP_ERR_NO_ERROR)
				{
					rd_kafka_resp_err_t perr = tp->err;

					rd_kafka_topic_partition_list_destroy(tpl);
					kafka_report_error(perr, what);
				}
				result[i] = tp->offset;
			}
			rd_kafka_topic_partition_list_destroy(tpl);
			return;
		}
		rd_kafka_topic_partition_list_destroy(tpl);
		if (err != RD_KAFKA_RESP_ERR__TIMED_OUT &&
			err != RD_KAFKA_RESP_ERR__TRANSPORT &&
			err != RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION &&
			err != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE)
			kafka_report_error(err, what);
		if (GetCurrentTimestamp() >= deadline)
			kafka_timeout_error(h, what);
		pg_usleep(10000);
	}
}

/* broker trouble that waiting longer will not cure */
static bool
kafka_hopeless(KafkaHandle *h)
{
	switch (h->last_error_code)
	{
		case RD_KAFKA_RESP_ERR__AUTHENTICATION:
		case RD_KAFKA_RESP_ERR__FATAL:
		case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
		case RD_KAFKA_RESP_ERR__RESOLVE:
		case RD_KAFKA_RESP_ERR__SSL:
			return true;
		default:
			return false;
	}
}

/* partition count within the deadline; false on any problem */
static bool
try_partition_count(KafkaHandle *h, TimestampTz deadline, int32 *n)
{
	while (GetCurrentTimestamp() < deadline)
	{
		const struct rd_kafka_metadata *md = NULL;
		rd_kafka_resp_err_t err;

		CHECK_FOR_INTERRUPTS();
		kafka_handle_poll(h);
		if (kafka_hopeless(h))
			return false;
		err = rd_kafka_metadata(h->rk, 0, h->rkt, &md,
								kafka_slice(deadline, KAFKA_SLICE_MS));
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			rd_kafka_resp_err_t terr = md->topic_cnt == 1 ? md->topics[0].err :
			RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;

			*n = md->topic_cnt == 1 ? md->topics[0].partition_cnt : 0;
			rd_kafka_metadata_destroy(md);
			if (terr == RD_KAFKA_RESP_ERR_NO_ERROR && *n > 0)
				return true;
			/* an unknown topic will not appear by waiting */
			if (terr != RD_KAFKA_RESP_ERR_NO_ERROR &&
				terr != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE)
				return false;
		}
		else if (err != RD_KAFKA_RESP_ERR__TIMED_OUT &&
				 err != RD_KAFKA_RESP_ERR__TRANSPORT)
			return false;
		pg_usleep(10000);
	}
	return false;
}

/* first (-2) or next (-1) offsets of partitions 0 .. n-1, in one request */
static bool
try_offsets(KafkaHandle *h, TimestampTz deadline, int32 n, int64 stamp,
			int64 *result)
{
	while (GetCurrentTimestamp() < deadline)
	{
		rd_kafka_topic_partition_list_t *tpl;
		rd_kafka_resp_err_t err;

		CHECK_FOR_INTERRUPTS();
		kafka_handle_poll(h);
		if (kafka_hopeless(h))
			return false;
		tpl = rd_kafka_topic_partition_list_new(n);
		for (int32 p = 0; p < n; p++)
			rd_kafka_topic_partition_list_add(tpl, h->topic, p)->offset = stamp;
		err = rd_kafka_offsets_for_times(h->rk, tpl,
										 kafka_slice(deadline, KAFKA_SLICE_MS * 2));
		for (int32 p = 0; p < n && err == RD_KAFKA_RESP_ERR_NO_ERROR; p++)
		{
			if (tpl->elems[p].err != RD_KAFKA_RESP_ERR_NO_ERROR)
				err = tpl->elems[p].err;
			result[p] = tpl->elems[p].offset;
		}
		rd_kafka_topic_partition_list_destroy(tpl);
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
			return true;
		if (err != RD_KAFKA_RESP_ERR__TIMED_OUT &&
			err != RD_KAFKA_RESP_ERR__TRANSPORT &&
			err != RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION &&
			err != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE)
			return false;
		pg_usleep(10000);
	}
	return false;
}

/* messages between the watermarks of partitions 0 .. n-1 */
static bool
try_message_count(KafkaHandle *h, TimestampTz deadline, int32 n, int64 *messages)
{
	int64	   *low = palloc(sizeof(int64) * n);
	int64	   *high = palloc(sizeof(int64) * n);

	if (!try_offsets(h, deadline, n, RD_KAFKA_OFFSET_BEGINNING, low) ||
		!try_offsets(h, deadline, n, RD_KAFKA_OFFSET_END, high))
		return false;
	*messages = 0;
	for (int32 p = 0; p < n; p++)
		*messages += Max(high[p] - low[p], 0);
	return true;
}

/*
 * The size of a topic, for the planner: partitions and messages between
 * the watermarks.  Broker trouble is never an ERROR here, only false after
 * at most budget_ms, so that a plan never depends on a broker answering;
 * the scan reports the problem when it runs.
 */
bool
kafka_topic_size(List *props, const char *topic, int budget_ms,
				 int32 *npartitions, int64 *messages)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "streamkpi topic size",
											  ALLOCSET_SMALL_SIZES);
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   budget_ms);
	KafkaHandle *h = kafka_handle_create_ex(RD_KAFKA_CONSUMER, props, topic,
											KAFKA_QUEUE_MIN_KB, cxt);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	bool		ok;

	ok = try_partition_count(h, deadline, npartitions) &&
		try_message_count(h, deadline, *npartitions, messages);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return ok;
}

/* Start fetching each partition from its start offset into one queue. */
void
kafka_consume_start(KafkaHandle *h, int nranges, const int32 *parts,
					const int64 *starts)
{
	MemoryContext cxt = GetMemoryChunkContext(h);

	Assert(h->queue == NULL);
	h->started = MemoryContextAllocZero(cxt, sizeof(int32) * Max(nranges, 1));
	h->queue = rd_kafka_queue_new(h->rk);
	for (int i = 0; i < nranges; i++)
	{
		if (rd_kafka_consume_start_queue(h->rkt, parts[i], starts[i], h->queue) == -1)
			kafka_report_error(rd_kafka_last_error(), "start consuming");
		h->started[h->nstarted++] = parts[i];
	}
}

void
kafka_consume_stop(KafkaHandle *h)
{
	if (h->current)
		rd_kafka_message_destroy(h->current);
	h->current = NULL;
	for (int i = h->pending_pos; i < h->npending; i++)
		rd_kafka_message_destroy(h->pending[i]);
	h->npending = h->pending_pos = 0;
	if (h->queue)
	{
		for (int i = 0; i < h->nstarted; i++)
			rd_kafka_consume_stop(h->rkt, h->started[i]);
		h->nstarted = 0;
		rd_kafka_queue_destroy(h->queue);
		h->queue = NULL;
	}
}

/*
 * Next message or event (partition EOF, error) from the queue.  The
 * message stays valid until the next call.  Waits in short slices,
 * interruptible; when nothing at all arrives for streamkpi.kafka_timeout
 * the broker is gone and we raise an ERROR.
 */
rd_kafka_message_t *
kafka_consume_next(KafkaHandle *h, TimestampTz *idle_since)
{
	/* the previous message is done with */
	if (h->current)
		rd_kafka_message_destroy(h->current);
	h->current = NULL;

	if (h->pending_pos >= h->npending)
	{
		TimestampTz start = 0;
		ssize_t		n;

		h->npending = h->pending_pos = 0;
		for (;;)
		{
			rd_kafka_message_t *first;

			CHECK_FOR_INTERRUPTS();
			/* whatever is already fetched, without waiting */
			n = rd_kafka_consume_batch_queue(h->queue, 0, h->pending, KAFKA_BATCH);
			if (n < 0)
				kafka_report_error(rd_kafka_last_error(), "consume messages");
			if (n > 0)
				break;
			/* else wait for the first message only, a short slice at most */
			first = rd_kafka_consume_queue(h->queue, KAFKA_SLICE_MS);
			if (first != NULL)
			{
				h->pending[0] = first;
				n = rd_kafka_consume_batch_queue(h->queue, 0, h->pending + 1,
												 KAFKA_BATCH - 1);
				n = n < 0 ? 1 : n + 1;
				break;
			}
			kafka_handle_poll(h);
			kafka_check_fatal(h, "consume messages");
			if (start == 0)
				start = GetCurrentTimestamp();
			else if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(),
												streamkpi_kafka_timeout_ms))
				kafka_timeout_error(h, psprintf("consume from Kafka topic \"%s\"",
												h->topic));
		}
		h->npending = n;
	}
	h->current = h->pending[h->pending_pos++];
	return h->current;
}

/*
 * Serve delivery reports for one slice (flushing: also send what lingers,
 * and return only when the queue is empty or the slice is over; otherwise
 * return after the first report, so that a full queue refills at once).
 * *seen and *since track the last
 * progress of this wait: ERROR when the producer has waited
 * streamkpi.kafka_timeout without a single delivery report (the broker
 * stopped answering), however long the whole statement has taken.
 */
static void
kafka_await_delivery(KafkaHandle *h, bool flushing, int64 *seen,
					  TimestampTz *since)
{
	TimestampTz now;

	CHECK_FOR_INTERRUPTS();
	if (flushing)
		rd_kafka_flush(h->rk, KAFKA_SLICE_MS);
	else
		rd_kafka_poll(h->rk, KAFKA_SLICE_MS);
	now = GetCurrentTimestamp();
	if (*since == 0 || h->delivered + h->failed != *seen)
	{
		*seen = h->delivered + h->failed;
		*since = now;
	}
	else if (TimestampDifferenceExceeds(*since, now, streamkpi_kafka_timeout_ms))
		kafka_timeout_error(h, psprintf("deliver messages to Kafka topic \"%s\"",
										h->topic));
}

/*
 * Queue one message for delivery; delivery reports are counted in the
 * handle.  A full local queue is drained, interruptibly.
 */
void
kafka_produce(KafkaHandle *h, int32 partition, const char *payload, size_t len,
			  const char *key, size_t keylen, int64 timestamp_ms)
{
	int64		seen = 0;
	TimestampTz since = 0;

	for (;;)
	{
		rd_kafka_resp_err_t err;

		err = rd_kafka_producev(h->rk,
								RD_KAFKA_V_RKT(h->rkt),
								RD_KAFKA_V_PARTITION(partition),
								RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
								RD_KAFKA_V_VALUE((void *) payload, len),
								RD_KAFKA_V_KEY((void *) key, keylen),
								RD_KAFKA_V_TIMESTAMP(timestamp_ms > 0 ? timestamp_ms : 0),
								RD_KAFKA_V_END);
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
			break;
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			kafka_report_error(err, psprintf("produce to Kafka topic \"%s\"", h->topic));
		kafka_await_delivery(h, false, &seen, &since);
	}
}

/* Wait for every delivery report; see kafka_await_delivery for the bound. */
void
kafka_flush(KafkaHandle *h)
{
	int64		seen = 0;
	TimestampTz since = 0;

	while (rd_kafka_outq_len(h->rk) > 0)
		kafka_await_delivery(h, true, &seen, &since);
	rd_kafka_poll(h->rk, 0);
}

/* All topics of the cluster but the internal ones, with partition counts. */
List *
kafka_list_topics(KafkaHandle *h, List **partitions)
{
	TimestampTz deadline = kafka_deadline();
	List	   *names = NIL;

	*partitions = NIL;
	for (;;)
	{
		const struct rd_kafka_metadata *md = NULL;
		rd_kafka_resp_err_t err;

		CHECK_FOR_INTERRUPTS();
		kafka_handle_poll(h);
		kafka_check_fatal(h, "list Kafka topics");
		err = rd_kafka_metadata(h->rk, 1, NULL, &md,
								kafka_slice(deadline, KAFKA_SLICE_MS));
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			for (int i = 0; i < md->topic_cnt; i++)
			{
				if (strncmp(md->topics[i].topic, "__", 2) == 0)
					continue;
				names = lappend(names, pstrdup(md->topics[i].topic));
				*partitions = lappend_int(*partitions, md->topics[i].partition_cnt);
			}
			rd_kafka_metadata_destroy(md);
			return names;
		}
		if (err != RD_KAFKA_RESP_ERR__TIMED_OUT &&
			err != RD_KAFKA_RESP_ERR__TRANSPORT)
			kafka_report_error(err, "list Kafka topics");
		if (GetCurrentTimestamp() >= deadline)
			kafka_timeout_error(h, "list Kafka topics");
		pg_usleep(10000);
	}
}
