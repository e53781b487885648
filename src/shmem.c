/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The shared-memory hooks of PostgreSQL 15, chained to any previous
 *	  hook: shmem_request_hook asks for the space and the LWLock of every
 *	  part a subsystem registered, shmem_startup_hook attaches each part by
 *	  its name (ShmemInitStruct).  Each subsystem owns its part and its
 *	  lock: "streamkpi pipelines" (pipeline_status.c), "streamkpi kpi
 *	  worker" (kpi_worker.c).  Exists only when the library is preloaded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "streamkpi.h"

#define STREAMKPI_SHMEM_PARTS 4

static const StreamkpiShmemPart *parts[STREAMKPI_SHMEM_PARTS];
static int	nparts = 0;
static bool attached = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
streamkpi_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	for (int i = 0; i < nparts; i++)
	{
		RequestAddinShmemSpace(parts[i]->size());
		RequestNamedLWLockTranche(parts[i]->name, 1);
	}
}

static void
streamkpi_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	for (int i = 0; i < nparts; i++)
	{
		const StreamkpiShmemPart *part = parts[i];
		bool		found;

		*part->ptr = ShmemInitStruct(part->name, part->size(), &found);
		if (!found)
		{
			memset(*part->ptr, 0, part->size());
			*(LWLock **) *part->ptr = &(GetNamedLWLockTranche(part->name))->lock;
		}
	}
	LWLockRelease(AddinShmemInitLock);
	attached = true;
}

/*
 * Register a part of shared memory, from a subsystem's init in _PG_init
 * while the library is being preloaded.  The first call installs the hooks.
 */
void
streamkpi_shmem_register(const StreamkpiShmemPart *part)
{
	Assert(process_shared_preload_libraries_in_progress);
	if (nparts == STREAMKPI_SHMEM_PARTS)
		elog(ERROR, "too many streamkpi shared memory parts");
	if (nparts == 0)
	{
		prev_shmem_request_hook = shmem_request_hook;
		shmem_request_hook = streamkpi_shmem_request;
		prev_shmem_startup_hook = shmem_startup_hook;
		shmem_startup_hook = streamkpi_shmem_startup;
	}
	parts[nparts++] = part;
}

/* Are the registered parts attached in this process? */
bool
streamkpi_shmem_attached(void)
{
	return attached;
}
