/*-------------------------------------------------------------------------
 *
 * pipeline_consumer.c
 *	  The Kafka consumer of a pipeline worker.  It lives across batches and
 *	  is positioned by the offsets stored in PostgreSQL, never by Kafka's:
 *	  PostgreSQL's commit is what makes a batch done.
 *
 *	  Without a group_id a worker assigns itself the partitions p with
 *	  p % parallelism = worker_index.  With a group_id it subscribes, and
 *	  Kafka's group protocol splits the partitions among servers; on each
 *	  assignment it resumes from the later of its own stored offset and the
 *	  group's committed one (which other servers advance after their own
 *	  PostgreSQL commits).
 *
 *	  librdkafka callbacks run in this backend's thread, from inside
 *	  rd_kafka_consumer_poll(); they never raise errors.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "kafka_client.h"
#include "pipeline_batch.h"
#include "streamkpi.h"

/* Longest single wait inside librdkafka, so interrupts are seen promptly. */
#define CONSUMER_POLL_MS 100

/* How long assignment may wait for the group's committed offsets. */
#define COMMITTED_TIMEOUT_MS 5000

/* Longest wait for the topic's metadata, and the pause between attempts. */
#define METADATA_WAIT_MS 1000
#define METADATA_RETRY_MS 500

struct PipelineConsumer
{
	rd_kafka_t *rk;
	char	   *topic;
	bool		group_mode;
	int			worker_index;
	int			parallelism;
	bool		started;

	/* by partition number; grown when a topic gains partitions */
	int			capacity;
	int64	   *next_offset;	/* next offset to process, -1 unknown */
	bool	   *assigned;

	PipelineBatch *filling;		/* the batch being filled, for revocations */
	char		last_error[256];
	rd_kafka_resp_err_t last_error_code;
	bool		has_error;

	MemoryContext cxt;
	MemoryContextCallback cb;
};

static void
consumer_destroy(void *arg)
{
	PipelineConsumer *c = (PipelineConsumer *) arg;

	if (c->rk == NULL)
		return;
	/* leave the group promptly, so another server takes over */
	if (c->group_mode && c->started)
		(void) rd_kafka_consumer_close(c->rk);
	rd_kafka_destroy(c->rk);
	c->rk = NULL;
}

/* Make room for partition p; false when memory is short (no ereport here). */
static bool
ensure_capacity(PipelineConsumer *c, int32 p)
{
	int			newcap;
	int64	   *next;
	bool	   *assigned;

	if (p < c->capacity)
		return true;
	newcap = Max(c->capacity * 2, p + 1);
	next = MemoryContextAllocExtended(c->cxt, sizeof(int64) * newcap, MCXT_ALLOC_NO_OOM);
	assigned = MemoryContextAllocExtended(c->cxt, sizeof(bool) * newcap,
										  MCXT_ALLOC_NO_OOM | MCXT_ALLOC_ZERO);
	if (next == NULL || assigned == NULL)
		return false;
	for (int i = 0; i < newcap; i++)
		next[i] = i < c->capacity ? c->next_offset[i] : -1;
	memcpy(assigned, c->assigned, sizeof(bool) * c->capacity);
	c->next_offset = next;
	c->assigned = assigned;
	c->capacity = newcap;
	return true;
}

static void
set_error(PipelineConsumer *c, const char *what, rd_kafka_resp_err_t err)
{
	snprintf(c->last_error, sizeof(c->last_error), "%s: %s", what,
			 rd_kafka_err2str(err));
	c->last_error_code = err;
	c->has_error = true;
}

/* Drop messages of partitions no longer ours from the batch being filled. */
static void
forget_revoked(PipelineConsumer *c)
{
	PipelineBatch *b = c->filling;
	int			kept = 0;

	if (b == NULL)
		return;
	for (int i = 0; i < b->nmsgs; i++)
	{
		rd_kafka_message_t *m = b->msgs[i];

		if (m->partition < c->capacity && c->assigned[m->partition])
			b->msgs[kept++] = m;
		else
			rd_kafka_message_destroy(m);
	}
	b->nmsgs = kept;
}

static void
assign_partitions(PipelineConsumer *c, rd_kafka_topic_partition_list_t *parts)
{
	rd_kafka_resp_err_t err;

	/* the group's committed offsets: other servers' progress */
	err = rd_kafka_committed(c->rk, parts, COMMITTED_TIMEOUT_MS);
	if (err)
		set_error(c, "could not read the group's committed offsets", err);

	for (int i = 0; i < parts->cnt; i++)
	{
		rd_kafka_topic_partition_t *tp = &parts->elems[i];
		int64		start = -1;

		if (!ensure_capacity(c, tp->partition))
			continue;
		if (!err && tp->offset >= 0)
			start = tp->offset;
		start = Max(start, c->next_offset[tp->partition]);
		c->next_offset[tp->partition] = start;
		c->assigned[tp->partition] = true;
		tp->offset = start >= 0 ? start : RD_KAFKA_OFFSET_BEGINNING;
	}
	err = rd_kafka_assign(c->rk, parts);
	if (err)
		set_error(c, "could not assign partitions", err);
}

static void
rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			 rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	PipelineConsumer *c = (PipelineConsumer *) opaque;

	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
		assign_partitions(c, parts);
	else
	{
		for (int i = 0; i < parts->cnt; i++)
			if (parts->elems[i].partition < c->capacity)
				c->assigned[parts->elems[i].partition] = false;
		forget_revoked(c);
		(void) rd_kafka_assign(rk, NULL);
	}
}

/* Broker-level errors (broker down, authentication): shown in the status. */
static void
error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	PipelineConsumer *c = (PipelineConsumer *) opaque;

	snprintf(c->last_error, sizeof(c->last_error), "Kafka: %s", reason);
	c->last_error_code = (rd_kafka_resp_err_t) err;
	c->has_error = true;
}

static void
conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
		 bool secret)
{
	char		errstr[512];
	rd_kafka_conf_res_t res = rd_kafka_conf_set(conf, name, value,
												errstr, sizeof(errstr));

	if (res != RD_KAFKA_CONF_OK)
	{
		rd_kafka_conf_destroy(conf);
		ereport(ERROR,
				(errcode(kafka_conf_error_sqlstate(res)),
				 errmsg("invalid Kafka property \"%s\" for a pipeline consumer", name),
				 secret ? 0 : errdetail("%s", errstr)));
	}
}

PipelineConsumer *
pipeline_consumer_create(const char *pipeline, const char *topic, List *props,
						 const char *group_id, int worker_index,
						 int parallelism, MemoryContext cxt)
{
	PipelineConsumer *c = MemoryContextAllocZero(cxt, sizeof(PipelineConsumer));
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char		errstr[512];
	char	   *client_id;
	ListCell   *lc;

	c->cxt = cxt;
	c->topic = MemoryContextStrdup(cxt, topic);
	c->group_mode = group_id != NULL;
	c->worker_index = worker_index;
	c->parallelism = parallelism;
	c->capacity = 0;
	if (!ensure_capacity(c, 63))
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));

	/*
	 * At high rates, fetches of at least 256 kB (or fetch.wait.max.ms
	 * below): otherwise the broker answers each fetch with the few
	 * messages that arrived since the last one, fetch after fetch, on
	 * the cores the pipelines share with it.  A server option may set
	 * another value.
	 */
	conf_set(conf, "fetch.min.bytes", "262144", false);
	foreach(lc, props)
	{
		KafkaProperty *p = lfirst(lc);

		conf_set(conf, p->name, p->value, p->secret);
	}
	client_id = psprintf("streamkpi-pipeline-%s-%d", pipeline, worker_index);
	conf_set(conf, "client.id", client_id, false);
	/* our own group when none is given: it is never joined or committed */
	conf_set(conf, "group.id", group_id ? group_id : client_id, false);
	conf_set(conf, "enable.auto.commit", "false", false);
	conf_set(conf, "enable.auto.offset.store", "false", false);
	conf_set(conf, "enable.partition.eof", "false", false);
	conf_set(conf, "auto.offset.reset", "earliest", false);
	/* small fetch waits keep latency low at low rates */
	conf_set(conf, "fetch.wait.max.ms", "20", false);
	conf_set(conf, "queued.min.messages", "200000", false);
	conf_set(conf, "session.timeout.ms", "10000", false);
	conf_set(conf, "heartbeat.interval.ms", "1000", false);
	rd_kafka_conf_set_opaque(conf, c);
	rd_kafka_conf_set_error_cb(conf, error_cb);
	kafka_conf_set_logger(conf);
	if (c->group_mode)
		rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);

	c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (c->rk == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg("could not create a Kafka consumer for pipeline \"%s\"", pipeline),
				 errdetail("%s", errstr)));
	c->cb.func = consumer_destroy;
	c->cb.arg = c;
	MemoryContextRegisterResetCallback(cxt, &c->cb);
	kafka_serve_logs(c->rk);
	rd_kafka_poll_set_consumer(c->rk);
	return c;
}

void
pipeline_consumer_set_offset(PipelineConsumer *c, int32 partition,
							 int64 next_offset)
{
	if (!ensure_capacity(c, partition))
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	c->next_offset[partition] = next_offset;
}

/* Serve callbacks (logs, errors) while nothing is assigned yet. */
static void
serve_events(PipelineConsumer *c)
{
	rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 0);

	if (m != NULL)
		rd_kafka_message_destroy(m);
}

/*
 * The topic's partition count, waiting for the broker as long as needed and
 * still_wanted(arg) says so; -1 when it no longer does.  Each round takes
 * at most METADATA_WAIT_MS + METADATA_RETRY_MS, so a stop is seen promptly.
 */
static int
topic_partition_count(PipelineConsumer *c, PipelineStillWanted still_wanted,
					  void *arg)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(c->rk, c->topic, NULL);

	for (;;)
	{
		const struct rd_kafka_metadata *md;
		rd_kafka_resp_err_t err;

		CHECK_FOR_INTERRUPTS();
		if (!still_wanted(arg))
		{
			rd_kafka_topic_destroy(rkt);
			return -1;
		}
		err = rd_kafka_metadata(c->rk, 0, rkt, &md,
								Min(METADATA_WAIT_MS, streamkpi_kafka_timeout_ms));
		if (!err)
		{
			int			n = -1;

			if (md->topic_cnt == 1 && md->topics[0].err == 0)
				n = md->topics[0].partition_cnt;
			else if (md->topic_cnt == 1)
				set_error(c, psprintf("topic \"%s\"", c->topic), md->topics[0].err);
			rd_kafka_metadata_destroy(md);
			if (n > 0)
			{
				rd_kafka_topic_destroy(rkt);
				return n;
			}
		}
		else
			set_error(c, "could not read the topic's metadata", err);
		serve_events(c);
		/* a missing topic or an absent broker: wait and ask again */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 METADATA_RETRY_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Start consuming.  Without a group this waits for the topic's metadata;
 * false when still_wanted(arg) turned false meanwhile (the pipeline was
 * stopped, dropped or altered).
 */
bool
pipeline_consumer_start(PipelineConsumer *c, PipelineStillWanted still_wanted,
						void *arg)
{
	rd_kafka_resp_err_t err;

	if (c->group_mode)
	{
		rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);

		rd_kafka_topic_partition_list_add(topics, c->topic, RD_KAFKA_PARTITION_UA);
		err = rd_kafka_subscribe(c->rk, topics);
		rd_kafka_topic_partition_list_destroy(topics);
		if (err)
			kafka_report_error(err, "subscribe to the topic");
	}
	else
	{
		int			npart = topic_partition_count(c, still_wanted, arg);
		rd_kafka_topic_partition_list_t *parts;

		if (npart < 0)
			return false;
		parts = rd_kafka_topic_partition_list_new(npart);
		if (!ensure_capacity(c, npart - 1))
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		for (int p = 0; p < npart; p++)
		{
			if (p % c->parallelism != c->worker_index)
				continue;
			rd_kafka_topic_partition_list_add(parts, c->topic, p)->offset =
				c->next_offset[p] >= 0 ? c->next_offset[p] : RD_KAFKA_OFFSET_BEGINNING;
			c->assigned[p] = true;
		}
		err = rd_kafka_assign(c->rk, parts);
		rd_kafka_topic_partition_list_destroy(parts);
		if (err)
			kafka_report_error(err, "assign partitions");
	}
	c->started = true;
	return true;
}

/*
 * Add messages to the batch until it holds batch_size or batch_ms passed.
 * Returns the number in the batch: zero when nothing came, so the caller
 * can look around before waiting again.
 */
int
pipeline_consumer_fill(PipelineConsumer *c, PipelineBatch *batch,
					   int batch_size, int batch_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), batch_ms);

	c->filling = batch;
	while (batch->nmsgs < batch_size)
	{
		long		secs;
		int			usecs;
		int			wait_ms;
		rd_kafka_message_t *m;

		CHECK_FOR_INTERRUPTS();
		if (!PostmasterIsAlive())
			proc_exit(1);
		TimestampDifference(GetCurrentTimestamp(), deadline, &secs, &usecs);
		if (secs == 0 && usecs == 0)
			break;
		wait_ms = (int) Min(secs * 1000 + usecs / 1000, CONSUMER_POLL_MS);

		m = rd_kafka_consumer_poll(c->rk, wait_ms);
		if (m == NULL)
			continue;
		if (m->err)
		{
			if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
				set_error(c, "Kafka consumer error", m->err);
			rd_kafka_message_destroy(m);
			continue;
		}
		/* only partitions we own, and never an offset processed already */
		if (m->partition >= c->capacity || !c->assigned[m->partition] ||
			m->offset < c->next_offset[m->partition])
		{
			rd_kafka_message_destroy(m);
			continue;
		}
		c->has_error = false;
		batch->msgs[batch->nmsgs++] = m;
	}
	c->filling = NULL;
	return batch->nmsgs;
}

/* Give the batch's messages back to librdkafka. */
void
pipeline_consumer_release(PipelineConsumer *c, PipelineBatch *batch)
{
	for (int i = 0; i < batch->nmsgs; i++)
		rd_kafka_message_destroy(batch->msgs[i]);
	batch->nmsgs = 0;
}

/*
 * After PostgreSQL committed a batch: advance our positions and, in a
 * group, tell Kafka (asynchronously, for lag tools and other servers).
 */
void
pipeline_consumer_committed(PipelineConsumer *c, PipelineBatch *batch)
{
	rd_kafka_topic_partition_list_t *offsets;

	for (int i = 0; i < batch->nmsgs; i++)
	{
		rd_kafka_message_t *m = batch->msgs[i];

		c->next_offset[m->partition] = Max(c->next_offset[m->partition], m->offset + 1);
	}
	if (!c->group_mode)
		return;

	offsets = rd_kafka_topic_partition_list_new(8);
	for (int p = 0; p < c->capacity; p++)
		if (c->assigned[p] && c->next_offset[p] >= 0)
			rd_kafka_topic_partition_list_add(offsets, c->topic, p)->offset = c->next_offset[p];
	if (offsets->cnt > 0)
		(void) rd_kafka_commit(c->rk, offsets, 1);
	rd_kafka_topic_partition_list_destroy(offsets);
}

/* Our partitions with their next offsets and last seen high watermarks. */
int
pipeline_consumer_partitions(PipelineConsumer *c, int32 *parts, int64 *next,
							 int64 *high, int max)
{
	int			n = 0;

	for (int p = 0; p < c->capacity && n < max; p++)
	{
		int64		lo,
					hi;

		if (!c->assigned[p])
			continue;
		parts[n] = p;
		next[n] = c->next_offset[p];
		if (rd_kafka_get_watermark_offsets(c->rk, c->topic, p, &lo, &hi) ||
			hi < 0)
			hi = -1;
		high[n] = hi;
		if (next[n] < 0 && hi >= 0)
			next[n] = lo >= 0 ? lo : 0;
		n++;
	}
	return n;
}

/* The last error seen since the last message and its SQLSTATE, or NULL. */
const char *
pipeline_consumer_error(PipelineConsumer *c, int *sqlstate)
{
	if (!c->has_error)
		return NULL;
	*sqlstate = kafka_error_sqlstate(c->last_error_code);
	return c->last_error;
}

/*
 * Where this consumer reads, for log lines: "partition 0 offset 12,
 * partition 2 offset 7" (next offsets to process).
 */
char *
pipeline_consumer_positions(PipelineConsumer *c)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int p = 0; p < c->capacity; p++)
	{
		if (!c->assigned[p])
			continue;
		appendStringInfo(&buf, "%spartition %d ", buf.len > 0 ? ", " : "", p);
		if (c->next_offset[p] >= 0)
			appendStringInfo(&buf, "offset " INT64_FORMAT, c->next_offset[p]);
		else
			appendStringInfoString(&buf, "from its first offset");
	}
	if (buf.len == 0)
		appendStringInfoString(&buf, "no partition yet");
	return buf.data;
}
