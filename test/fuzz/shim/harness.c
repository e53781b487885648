/*-------------------------------------------------------------------------
 *
 * harness.c
 *	  What the harnesses share: calling a function under PG_TRY and
 *	  telling an expected error (bad input, reported with the SQLSTATE the
 *	  function promises) from a finding (any other error).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "shim.h"

static bool
is_allowed(int sqlerrcode, const int *allowed)
{
	for (; *allowed != 0; allowed++)
		if (*allowed == sqlerrcode)
			return true;
	return false;
}

/*
 * fn(arg0[, arg1]); true with *result when it returned, false when it
 * raised one of the allowed errors (a zero-terminated list).  Any other
 * error is a finding.
 */
bool
shim_try_call(PGFunction fn, int nargs, Datum arg0, Datum arg1,
			  Datum *result, const int *allowed)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		*result = nargs == 1 ? shim_call1(fn, arg0) : shim_call2(fn, arg0, arg1);
		if (CurrentMemoryContext != cxt)
			shim_finding("a function returned in another memory context", NULL);
	}
	PG_CATCH();
	{
		ErrorData  *edata = shim_caught_error();

		MemoryContextSwitchTo(cxt);
		if (!is_allowed(edata->sqlerrcode, allowed))
			shim_finding("an error with an unexpected SQLSTATE", edata);
		if (edata->message == NULL)
			shim_finding("an error without a message", edata);
		FlushErrorState();
		ok = false;
	}
	PG_END_TRY();
	return ok;
}
