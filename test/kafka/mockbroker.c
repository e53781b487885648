/*
 * mockbroker: librdkafka's built-in mock Kafka cluster as a process.
 *
 * Only for `make demo` on a machine where Java cannot be installed; every
 * test uses the real Apache Kafka broker.  The mock cluster keeps messages
 * in memory and speaks enough of the protocol for producing, consuming,
 * watermarks and consumer groups.
 *
 *   mockbroker PORTFILE [TOPIC:PARTITIONS ...]
 *
 * Writes the port it listens on (127.0.0.1) to PORTFILE once ready and runs
 * until SIGTERM or SIGINT.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static int
create_topic(rd_kafka_mock_cluster_t *cluster, const char *spec)
{
	char		name[256];
	const char *colon = strrchr(spec, ':');
	int			partitions = colon ? atoi(colon + 1) : 1;
	size_t		len = colon ? (size_t) (colon - spec) : strlen(spec);
	rd_kafka_resp_err_t err;

	if (len == 0 || len >= sizeof(name) || partitions < 1)
	{
		fprintf(stderr, "mockbroker: bad topic \"%s\" (want NAME:PARTITIONS)\n", spec);
		return -1;
	}
	memcpy(name, spec, len);
	name[len] = '\0';
	err = rd_kafka_mock_topic_create(cluster, name, partitions, 1);
	if (err)
	{
		fprintf(stderr, "mockbroker: could not create topic %s: %s\n",
				name, rd_kafka_err2str(err));
		return -1;
	}
	return 0;
}

static int
write_port(const char *path, const char *bootstraps)
{
	const char *colon = strrchr(bootstraps, ':');
	char		tmp[4096];
	FILE	   *f;

	if (colon == NULL || snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int) sizeof(tmp))
		return -1;
	f = fopen(tmp, "w");
	if (f == NULL)
		return -1;
	fprintf(f, "%s\n", colon + 1);
	if (fclose(f) != 0)
		return -1;
	return rename(tmp, path);
}

int
main(int argc, char **argv)
{
	char		errstr[512];
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	rd_kafka_mock_cluster_t *cluster;
	sigset_t	stop_signals;
	int			sig;

	if (argc < 2)
	{
		fprintf(stderr, "usage: mockbroker PORTFILE [TOPIC:PARTITIONS ...]\n");
		return 2;
	}

	/* block the stop signals before librdkafka starts its threads */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

	conf = rd_kafka_conf_new();
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		fprintf(stderr, "mockbroker: %s\n", errstr);
		return 1;
	}
	cluster = rd_kafka_mock_cluster_new(rk, 1);
	if (cluster == NULL)
	{
		fprintf(stderr, "mockbroker: could not create the mock cluster\n");
		return 1;
	}
	for (int i = 2; i < argc; i++)
		if (create_topic(cluster, argv[i]) != 0)
			return 1;

	if (write_port(argv[1], rd_kafka_mock_cluster_bootstraps(cluster)) != 0)
	{
		perror("mockbroker: could not write the port file");
		return 1;
	}
	printf("mockbroker: listening on %s\n", rd_kafka_mock_cluster_bootstraps(cluster));
	fflush(stdout);

	sigwait(&stop_signals, &sig);

	rd_kafka_mock_cluster_destroy(cluster);
	rd_kafka_destroy(rk);
	return 0;
}
