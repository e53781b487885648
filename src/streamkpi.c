/*-------------------------------------------------------------------------
 *
 * streamkpi.c
 *	  Module entry point: _PG_init wires up every subsystem, and the few
 *	  functions that describe the extension itself.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "kpi.h"
#include "streamkpi.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* true when loaded through shared_preload_libraries */
bool		streamkpi_preloaded = false;

void
_PG_init(void)
{
	streamkpi_preloaded = process_shared_preload_libraries_in_progress;

	StreamkpiGucInit();

	/* Shared memory and background workers exist only when preloaded. */
	if (!streamkpi_preloaded)
		return;

	StreamkpiShmemInit();
	KpiWorkerInit();
	StreamkpiLauncherInit();
}

/*
 * Raise a clear error for a feature that needs shared memory or background
 * workers when the library was loaded on demand instead of preloaded.
 */
void
streamkpi_require_preload(const char *feature)
{
	if (!streamkpi_preloaded || streamkpi_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s requires streamkpi to be loaded via shared_preload_libraries",
						feature),
				 errhint("Add streamkpi to shared_preload_libraries in postgresql.conf and restart the server.")));
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
