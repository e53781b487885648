/*-------------------------------------------------------------------------
 *
 * streamkpi.c
 *	  Module entry point: _PG_init calls the init of every subsystem (and
 *	  depends on nothing else), and the function that describes the
 *	  extension itself.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "kpi.h"
#include "pipeline.h"
#include "streamkpi.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	streamkpi_preloaded = process_shared_preload_libraries_in_progress;

	StreamkpiGucInit();

	/* Shared memory and background workers exist only when preloaded. */
	if (!streamkpi_preloaded)
		return;

	PipelineShmemInit();
	KpiShmemInit();
	KpiDimsInit();
	StreamkpiLauncherInit();
}

PG_FUNCTION_INFO_V1(streamkpi_version);

/*
 * streamkpi.version() -> text: our version and the librdkafka we run on.
 */
Datum
streamkpi_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("streamkpi %s, librdkafka %s",
											  STREAMKPI_VERSION,
											  rd_kafka_version_str())));
}
