/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  streamkpi's shared memory: requested in shmem_request_hook and attached
 *	  in shmem_startup_hook (PostgreSQL 15), both chained to any previous
 *	  hook.  Exists only when the library is preloaded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "pipeline.h"
#include "streamkpi.h"

#define STREAMKPI_SHMEM_NAME "streamkpi"

StreamkpiSharedState *streamkpi_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
streamkpi_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(StreamkpiSharedState)), PipelineShmemSize());
}

static void
streamkpi_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	RequestAddinShmemSpace(streamkpi_shmem_size());
	RequestNamedLWLockTranche(STREAMKPI_SHMEM_NAME, 1);
}

static void
streamkpi_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	streamkpi_shared = ShmemInitStruct(STREAMKPI_SHMEM_NAME,
									   streamkpi_shmem_size(), &found);
	if (!found)
	{
		memset(streamkpi_shared, 0, streamkpi_shmem_size());
		streamkpi_shared->lock =
			&(GetNamedLWLockTranche(STREAMKPI_SHMEM_NAME))->lock;
	}
	PipelineShmemInit((char *) streamkpi_shared +
					  MAXALIGN(sizeof(StreamkpiSharedState)), found);
	LWLockRelease(AddinShmemInitLock);
}

void
StreamkpiShmemInit(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = streamkpi_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = streamkpi_shmem_startup;
}
