/*-------------------------------------------------------------------------
 *
 * memory.c
 *	  Memory contexts for the fuzzing shim: every chunk is one malloc, so
 *	  that AddressSanitizer knows its exact size, and a context frees its
 *	  chunks and children when it is reset or deleted.
 *
 *	  As in a backend, a chunk is preceded by its context pointer
 *	  (GetMemoryChunkContext reads it there).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdarg.h>

#include "utils/memutils.h"

#include "shim.h"

typedef struct ShimChunk
{
	struct ShimChunk *prev;
	struct ShimChunk *next;
	Size		size;
	MemoryContext context;		/* right before the chunk's data */
} ShimChunk;

typedef struct ShimContext
{
	MemoryContextData header;
	ShimChunk  *chunks;
	long		nchunks;
} ShimContext;

MemoryContext CurrentMemoryContext = NULL;
MemoryContext TopMemoryContext = NULL;
MemoryContext ErrorContext = NULL;

static MemoryContext
context_create(MemoryContext parent, const char *name)
{
	ShimContext *c = calloc(1, sizeof(ShimContext));

	if (c == NULL)
		abort();
	c->header.type = T_AllocSetContext;
	c->header.name = name;
	c->header.parent = parent;
	if (parent != NULL)
	{
		c->header.nextchild = parent->firstchild;
		if (parent->firstchild != NULL)
			parent->firstchild->prevchild = &c->header;
		parent->firstchild = &c->header;
	}
	return &c->header;
}

static void
shim_init(void)
{
	if (TopMemoryContext != NULL)
		return;
	TopMemoryContext = context_create(NULL, "TopMemoryContext");
	ErrorContext = context_create(TopMemoryContext, "ErrorContext");
	CurrentMemoryContext = TopMemoryContext;
}

MemoryContext
AllocSetContextCreateInternal(MemoryContext parent, const char *name,
							  Size minContextSize, Size initBlockSize,
							  Size maxBlockSize)
{
	return context_create(parent, name);
}

static void
free_chunks(ShimContext *c)
{
	ShimChunk  *ch = c->chunks;

	while (ch != NULL)
	{
		ShimChunk  *next = ch->next;

		free(ch);
		ch = next;
	}
	c->chunks = NULL;
	c->nchunks = 0;
	c->header.mem_allocated = 0;
}

void
MemoryContextDeleteChildren(MemoryContext context)
{
	while (context->firstchild != NULL)
		MemoryContextDelete(context->firstchild);
}

void
MemoryContextReset(MemoryContext context)
{
	MemoryContextDeleteChildren(context);
	free_chunks((ShimContext *) context);
}

void
MemoryContextDelete(MemoryContext context)
{
	MemoryContext parent = context->parent;

	if (context == CurrentMemoryContext)
		shim_finding("the current memory context was deleted", NULL);
	MemoryContextReset(context);
	if (parent != NULL)
	{
		if (context->prevchild != NULL)
			context->prevchild->nextchild = context->nextchild;
		else
			parent->firstchild = context->nextchild;
		if (context->nextchild != NULL)
			context->nextchild->prevchild = context->prevchild;
	}
	free(context);
}

/* ----------------------------------------------------------------
 * Chunks
 * ----------------------------------------------------------------
 */
static ShimChunk *
chunk_of(void *pointer)
{
	return (ShimChunk *) ((char *) pointer - sizeof(ShimChunk));
}

static void
chunk_link(ShimContext *c, ShimChunk *ch)
{
	ch->prev = NULL;
	ch->next = c->chunks;
	if (c->chunks != NULL)
		c->chunks->prev = ch;
	c->chunks = ch;
	c->nchunks++;
	c->header.mem_allocated += ch->size;
}

static void
chunk_unlink(ShimChunk *ch)
{
	ShimContext *c = (ShimContext *) ch->context;

	if (ch->prev != NULL)
		ch->prev->next = ch->next;
	else
		c->chunks = ch->next;
	if (ch->next != NULL)
		ch->next->prev = ch->prev;
	c->nchunks--;
	c->header.mem_allocated -= ch->size;
}

static void
check_size(Size size, bool huge)
{
	if (huge ? !AllocHugeSizeIsValid(size) : !AllocSizeIsValid(size))
		elog(ERROR, "invalid memory alloc request size %zu", size);
}

void *
MemoryContextAllocExtended(MemoryContext context, Size size, int flags)
{
	ShimChunk  *ch;

	check_size(size, (flags & MCXT_ALLOC_HUGE) != 0);
	ch = malloc(sizeof(ShimChunk) + size);
	if (ch == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	ch->size = size;
	ch->context = context;
	chunk_link((ShimContext *) context, ch);
	if (flags & MCXT_ALLOC_ZERO)
		memset(ch + 1, 0, size);
	return ch + 1;
}

void *
MemoryContextAlloc(MemoryContext context, Size size)
{
	return MemoryContextAllocExtended(context, size, 0);
}

void *
MemoryContextAllocZero(MemoryContext context, Size size)
{
	return MemoryContextAllocExtended(context, size, MCXT_ALLOC_ZERO);
}

void *
MemoryContextAllocZeroAligned(MemoryContext context, Size size)
{
	return MemoryContextAllocExtended(context, size, MCXT_ALLOC_ZERO);
}

void *
MemoryContextAllocHuge(MemoryContext context, Size size)
{
	return MemoryContextAllocExtended(context, size, MCXT_ALLOC_HUGE);
}

void *
palloc(Size size)
{
	return MemoryContextAllocExtended(CurrentMemoryContext, size, 0);
}

void *
palloc0(Size size)
{
	return MemoryContextAllocExtended(CurrentMemoryContext, size, MCXT_ALLOC_ZERO);
}

void *
palloc_extended(Size size, int flags)
{
	return MemoryContextAllocExtended(CurrentMemoryContext, size, flags);
}

void
pfree(void *pointer)
{
	ShimChunk  *ch = chunk_of(pointer);

	chunk_unlink(ch);
	free(ch);
}

static void *
repalloc_flags(void *pointer, Size size, bool huge)
{
	ShimChunk  *ch = chunk_of(pointer);
	ShimContext *c = (ShimContext *) ch->context;
	ShimChunk  *moved;

	check_size(size, huge);
	chunk_unlink(ch);
	moved = realloc(ch, sizeof(ShimChunk) + size);
	if (moved == NULL)
	{
		chunk_link(c, ch);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	}
	moved->size = size;
	chunk_link(c, moved);
	return moved + 1;
}

void *
repalloc(void *pointer, Size size)
{
	return repalloc_flags(pointer, size, false);
}

void *
repalloc_huge(void *pointer, Size size)
{
	return repalloc_flags(pointer, size, true);
}

char *
MemoryContextStrdup(MemoryContext context, const char *string)
{
	Size		len = strlen(string) + 1;
	char	   *copy = MemoryContextAlloc(context, len);

	memcpy(copy, string, len);
	return copy;
}

char *
pstrdup(const char *in)
{
	return MemoryContextStrdup(CurrentMemoryContext, in);
}

char *
pnstrdup(const char *in, Size len)
{
	char	   *out;

	len = strnlen(in, len);
	out = palloc(len + 1);
	memcpy(out, in, len);
	out[len] = '\0';
	return out;
}

char *
psprintf(const char *fmt,...)
{
	va_list		args;
	char	   *out;
	int			n;

	va_start(args, fmt);
	n = vsnprintf(NULL, 0, fmt, args);
	va_end(args);
	if (n < 0)
		elog(ERROR, "psprintf: bad format");
	out = palloc(n + 1);
	va_start(args, fmt);
	vsnprintf(out, n + 1, fmt, args);
	va_end(args);
	return out;
}

/* ----------------------------------------------------------------
 * One fuzz input
 * ----------------------------------------------------------------
 */

/*
 * A fresh context for one input, made current.  shim_input_end deletes it
 * and checks that nothing was left behind in the long-lived contexts: a
 * backend would keep that memory for the rest of the session.
 */
static long top_chunks_before;

MemoryContext
shim_input_begin(void)
{
	shim_init();
	top_chunks_before = ((ShimContext *) TopMemoryContext)->nchunks;
	CurrentMemoryContext = AllocSetContextCreate(TopMemoryContext, "fuzz input",
												 ALLOCSET_DEFAULT_SIZES);
	return CurrentMemoryContext;
}

void
shim_input_end(MemoryContext cxt)
{
	if (CurrentMemoryContext != cxt)
		shim_finding("a function returned without restoring CurrentMemoryContext",
					 NULL);
	CurrentMemoryContext = TopMemoryContext;
	MemoryContextDelete(cxt);
	if (((ShimContext *) TopMemoryContext)->nchunks != top_chunks_before ||
		TopMemoryContext->firstchild != ErrorContext ||
		ErrorContext->nextchild != NULL)
		shim_finding("memory was left in TopMemoryContext", NULL);
	if (shim_subxact_depth != 0)
		shim_finding("a subtransaction was left open", NULL);
	if (((ShimContext *) ErrorContext)->nchunks != 0)
		shim_finding("an error was neither caught nor flushed", NULL);
}
