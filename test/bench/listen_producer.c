/*
 * The load generator of test/bench/kpi_latency.sh: listen events at a
 * steady rate, produced with librdkafka straight to the broker.
 *
 *   listen_producer BOOTSTRAP TOPIC RATE SECONDS
 *
 * RATE events/s for SECONDS seconds, one probe in every RATE/20 events (a
 * probe every 50 ms): a play of track pN, genre probe-N, region rN.  The
 * other events spread over 20,000 users and 2,000 tracks, most plays on
 * the first tracks.  Every event is stamped with the wall clock when it is
 * produced (listened_at, ISO 8601 UTC).  No key: librdkafka spreads them
 * over the partitions.
 *
 * Why C: the benchmark shares two cores with what it measures, and a
 * generator in a scripting language piped into kcat took a third of a core
 * at 150,000 events/s.  Exits non-zero if any event was not delivered.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
#include <librdkafka/rdkafka.h>

#define TICK_NS 5000000L		/* produce what is due, then sleep 5 ms */
#define EVENT_MAX 512			/* bytes: an event is under 250 */

static long delivery_failures;

static void
on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void) rk;
	(void) opaque;
	if (m->err && delivery_failures++ == 0)
		fprintf(stderr, "listen_producer: delivery failed: %s\n", rd_kafka_err2str(m->err));
}

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* "2026-12-06T15:41:50.613Z" */
static void
format_timestamp(double now, char *buf, size_t len)
{
	time_t		secs = (time_t) now;
	struct tm	tm;
	size_t		n;

	gmtime_r(&secs, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%03dZ", (int) ((now - secs) * 1000));
}

/* append a string literal, or a string, or a decimal number at p */
#define PUT_LITERAL(p, lit) (memcpy((p), (lit), sizeof(lit) - 1), (p) + sizeof(lit) - 1)

static char *
put_string(char *p, const char *s)
{
	size_t		n = strlen(s);

	memcpy(p, s, n);
	return p + n;
}

static char *
put_number(char *p, uint64_t v)
{
	char		digits[20];
	int			n = 0;

	do
		digits[n++] = (char) ('0' + v % 10);
	while ((v /= 10) > 0);
	while (n > 0)
		*p++ = digits[--n];
	return p;
}

/*
 * Event i (1-based) as JSON; probe is its probe number, 0 for none.  Built
 * by appending, not with snprintf(): formatting was half of the
 * generator's CPU, taken from the two cores it shares with what it
 * measures.  buf holds EVENT_MAX bytes.
 */
static int
format_event(char *buf, uint64_t i, long probe, const char *ts)
{
	static const char *const actions[] = {"play", "play", "play", "play", "skip", "like"};
	static const char *const regions[] = {"eu", "us", "af"};
	static const char *const devices[] = {"mobile", "web", "tv"};
	uint64_t	r = (i * 2654435761u) & 0xffffffffu;
	char	   *p = buf;

	if (probe > 0)
	{
		p = PUT_LITERAL(p, "{\"event_id\":\"probe-");
		p = put_number(p, (uint64_t) probe);
		p = PUT_LITERAL(p, "\",\"user_id\":\"u1\",\"track_id\":\"p");
		p = put_number(p, (uint64_t) probe);
		p = PUT_LITERAL(p, "\",\"listened_at\":\"");
		p = put_string(p, ts);
		p = PUT_LITERAL(p, "\",\"ms_played\":1000,\"action\":\"play\",\"region\":\"r");
		p = put_number(p, (uint64_t) probe);
		p = PUT_LITERAL(p, "\",\"device\":\"web\"}");
		return (int) (p - buf);
	}
	p = PUT_LITERAL(p, "{\"event_id\":\"e");
	p = put_number(p, i);
	p = PUT_LITERAL(p, "\",\"user_id\":\"u");
	p = put_number(p, 1 + (r >> 7) % 20000);
	p = PUT_LITERAL(p, "\",\"track_id\":\"t");
	p = put_number(p, 1 + ((r >> 3) % 2000) * ((r >> 17) % 2000) / 2000);
	p = PUT_LITERAL(p, "\",\"listened_at\":\"");
	p = put_string(p, ts);
	p = PUT_LITERAL(p, "\",\"ms_played\":");
	p = put_number(p, 5000 + r % 200000);
	p = PUT_LITERAL(p, ",\"action\":\"");
	p = put_string(p, actions[r % 6]);
	p = PUT_LITERAL(p, "\",\"region\":\"");
	p = put_string(p, regions[(r >> 11) % 3]);
	p = PUT_LITERAL(p, "\",\"device\":\"");
	p = put_string(p, devices[(r >> 13) % 3]);
	p = PUT_LITERAL(p, "\"}");
	return (int) (p - buf);
}

static void
produce(rd_kafka_t *rk, rd_kafka_topic_t *rkt, char *payload, int len)
{
	while (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
							payload, len, NULL, 0, NULL) != 0)
	{
		if (rd_kafka_last_error() != RD_KAFKA_RESP_ERR__QUEUE_FULL)
		{
			fprintf(stderr, "listen_producer: %s\n", rd_kafka_err2str(rd_kafka_last_error()));
			exit(1);
		}
		rd_kafka_poll(rk, 10);
	}
}

int
main(int argc, char **argv)
{
	char		errstr[512];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;
	rd_kafka_topic_t *rkt;
	double		rate;
	uint64_t	total;
	uint64_t	probe_every;
	uint64_t	i = 0;
	long		probe = 0;
	double		t0;

	if (argc != 5)
	{
		fprintf(stderr, "usage: listen_producer BOOTSTRAP TOPIC RATE SECONDS\n");
		return 2;
	}
	rate = atof(argv[3]);
	total = (uint64_t) (rate * atof(argv[4]));
	probe_every = rate / 20 >= 1 ? (uint64_t) (rate / 20) : 1;
	if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], errstr, sizeof(errstr)) ||
		rd_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof(errstr)) ||
		rd_kafka_conf_set(conf, "queue.buffering.max.messages", "1000000", errstr, sizeof(errstr)))
	{
		fprintf(stderr, "listen_producer: %s\n", errstr);
		return 2;
	}
	rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		fprintf(stderr, "listen_producer: %s\n", errstr);
		return 1;
	}
	rkt = rd_kafka_topic_new(rk, argv[2], NULL);

	t0 = now_seconds();
	while (i < total)
	{
		double		now = now_seconds();
		uint64_t	due = (uint64_t) ((now - t0) * rate);
		char		ts[32];
		struct timespec tick = {0, TICK_NS};

		if (due > total)
			due = total;
		format_timestamp(now, ts, sizeof(ts));
		while (i < due)
		{
			char		payload[EVENT_MAX];
			int			len;

			i++;
			len = format_event(payload, i,
							   i % probe_every == 0 ? ++probe : 0, ts);
			produce(rk, rkt, payload, len);
		}
		rd_kafka_poll(rk, 0);
		nanosleep(&tick, NULL);
	}
	rd_kafka_flush(rk, 60000);
	if (rd_kafka_outq_len(rk) > 0)
		fprintf(stderr, "listen_producer: %d events not delivered in 60 s\n", rd_kafka_outq_len(rk));
	else if (delivery_failures > 0)
		fprintf(stderr, "listen_producer: %ld events not delivered\n", delivery_failures);
	else
		return 0;
	return 1;
}
