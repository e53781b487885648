/*-------------------------------------------------------------------------
 *
 * shim.h
 *	  A small stand-in for the PostgreSQL backend, so that streamkpi's
 *	  decoders and sketch readers build unchanged into libFuzzer harnesses.
 *
 *	  Every palloc is its own malloc, so AddressSanitizer sees the exact
 *	  bounds of each chunk (a backend's AllocSet hides overruns inside its
 *	  blocks).  ereport(ERROR) longjmps to the innermost PG_TRY, as in a
 *	  backend.  Functions the harnesses never reach abort when called.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_FUZZ_SHIM_H
#define STREAMKPI_FUZZ_SHIM_H

#include "postgres.h"

#include "fmgr.h"

/* in memory.c */
extern MemoryContext shim_input_begin(void);
extern void shim_input_end(MemoryContext cxt);

/* in elog.c: the error caught by the last PG_CATCH */
extern ErrorData *shim_caught_error(void);
extern void shim_finding(const char *what, const ErrorData *edata)
			pg_attribute_noreturn();

/* in fmgr.c */
extern Datum shim_call1(PGFunction fn, Datum arg);
extern Datum shim_call2(PGFunction fn, Datum arg0, Datum arg1);
extern bool shim_call_isnull;
extern int	shim_subxact_depth;
extern void shim_set_input_function(FmgrInfo *flinfo, Oid typid);

/* in harness.c: one call that may only fail with the given SQLSTATEs */
extern bool shim_try_call(PGFunction fn, int nargs, Datum arg0, Datum arg1,
						  Datum *result, const int *allowed);

/* in support.c */
extern pg_attribute_noreturn() void shim_unreachable(const char *fn);
extern bytea *shim_bytea(const uint8 *data, size_t len);

#endif							/* STREAMKPI_FUZZ_SHIM_H */
