# streamkpi: Kafka streams to music KPIs inside PostgreSQL 15.
#
# Front door:
#   make demo    install what is missing, start a private PostgreSQL and Kafka,
#                run the pipeline, show the KPIs
#   make test    install what is missing, build, install, run every test tier
#   make superset  Superset with the dashboard over make demo's KPI tables
#
# The usual PGXS targets (all, install, clean) work as for any extension.

EXTENSION = streamkpi
MODULE_big = streamkpi

OBJS = \
	src/streamkpi.o \
	src/guc.o \
	src/preload.o \
	src/shmem.o \
	src/pipeline_launcher.o \
	src/kafka_client.o \
	src/pipeline_admin.o \
	src/pipeline_consumer.o \
	src/pipeline_status.o \
	src/pipeline_batch.o \
	src/pipeline_worker.o \
	src/fdw_option.o \
	src/fdw_plan.o \
	src/fdw_pushdown.o \
	src/fdw_scan.o \
	src/fdw_modify.o \
	src/message.o \
	src/message_json.o \
	src/message_csv.o \
	src/sketch_hll.o \
	src/sketch_hll_format.o \
	src/sketch_topn.o \
	src/sketch_topn_state.o \
	src/sketch_topn_merge.o \
	src/sketch_topn_format.o \
	src/window.o \
	src/kpi_accumulate.o \
	src/kpi_dims.o \
	src/kpi_dims_cache.o \
	src/kpi_merge.o \
	src/kpi_sql.o \
	src/kpi_day_topn.o \
	src/kpi_window_state.o \
	src/kpi_users_cache.o \
	src/kpi_window.o \
	src/kpi_window_cache.o \
	src/kpi_apply.o \
	src/kpi_round_filter.o \
	src/kpi_worker.o \
	src/synthetic.o \
	src/synthetic_common.o \
	src/synthetic_sparkify.o \
	src/sparkify_track_id.o \
	src/sparkify_batch.o \
	src/sparkify_apply.o \
	src/sparkify_unquote.o

# The install script is assembled from one fragment per subsystem, in
# file-name order, so that subsystems never edit each other's SQL.
SQL_PARTS = $(sort $(wildcard src/sql/0.1/*.sql))
DATA_built = src/sql/streamkpi--0.1.sql

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wno-sign-compare
SHLIB_LINK = -lrdkafka -lcrypto
EXTRA_CLEAN = test/kafka/mockbroker

# pg_regress and TAP runs are driven by test/run, which gives them a private
# instance and, when started as root, an unprivileged account to run it.
NO_INSTALLCHECK = 1

# Prefer PostgreSQL 15's pg_config even when other versions are installed.
PG_CONFIG ?= $(firstword $(wildcard /usr/lib/postgresql/15/bin/pg_config) pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: test deps installcheck tapcheck bench demo demo-stop fuzz soak

ifneq ($(PGXS),)
include $(PGXS)

src/sql/streamkpi--0.1.sql: $(SQL_PARTS)
	cat $^ > $@

# A changed header rebuilds every object: shared-memory layouts live in
# headers, and an object built against an old layout corrupts the others.
$(OBJS) $(OBJS:.o=.bc): $(wildcard src/*.h)

installcheck:
	test/run regress

tapcheck:
	test/run tap

test/kafka/mockbroker: test/kafka/mockbroker.c
	$(CC) $(CFLAGS) -Wall -Wextra -Werror -o $@ $< -lrdkafka
endif

# Everything below must work before PostgreSQL's development files exist:
# each target installs what is missing, then re-enters make.
deps:
	test/install-deps

test: deps
	$(MAKE) all
	$(SUDO) $(MAKE) install
	test/run all

# libFuzzer harnesses of the decoders and sketch readers, FUZZ_SECONDS
# (default 300) each; reproducers of failures are kept in artifacts/fuzz/
fuzz: deps
	test/run fuzz

# the soak with every fault at once, full size (about 25 minutes; SOAK_*
# environment variables set smaller sizes, see docs/testing.md)
soak: deps
	$(MAKE) all
	$(SUDO) $(MAKE) install
	test/run soak

bench: deps
	$(MAKE) all
	$(SUDO) $(MAKE) install
	test/run bench

demo: deps
	$(MAKE) all
	$(SUDO) $(MAKE) install
	$(MAKE) test/kafka/mockbroker
	test/demo/demo start

# also stops the Superset of `make superset`, which reads the demo's database
demo-stop:
	test/demo/demo stop
	superset/setup stop

# Apache Superset (virtualenv under ~/.cache/streamkpi) with the dashboard
# bundle of superset/, reading the KPI tables of `make demo`'s PostgreSQL as
# streamkpi_reader; serves http://127.0.0.1:8088.  `make superset-stop` stops it.
.PHONY: superset superset-stop
superset: deps
	superset/setup demo

superset-stop:
	superset/setup stop
