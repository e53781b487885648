/*-------------------------------------------------------------------------
 *
 * fmgr.c
 *	  Function calls for the fuzzing shim: input functions, direct calls
 *	  of SQL-callable C functions, aggregate contexts and subtransactions
 *	  (which only have to balance: the shim has no transactions).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "utils/resowner.h"

#include "shim.h"

ResourceOwner CurrentResourceOwner = NULL;
int			shim_subxact_depth = 0;
bool		shim_call_isnull = false;

Datum
InputFunctionCall(FmgrInfo *flinfo, char *str, Oid typioparam, int32 typmod)
{
	LOCAL_FCINFO(fcinfo, 3);
	Datum		result;

	if (str == NULL && flinfo->fn_strict)
		return (Datum) 0;
	InitFunctionCallInfoData(*fcinfo, flinfo, 3, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = CStringGetDatum(str);
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = ObjectIdGetDatum(typioparam);
	fcinfo->args[1].isnull = false;
	fcinfo->args[2].value = Int32GetDatum(typmod);
	fcinfo->args[2].isnull = false;
	result = FunctionCallInvoke(fcinfo);
	if (str != NULL && fcinfo->isnull)
		elog(ERROR, "input function %u returned NULL", flinfo->fn_oid);
	return result;
}

static Datum
call_with(PGFunction fn, int nargs, Datum arg0, Datum arg1)
{
	LOCAL_FCINFO(fcinfo, 2);
	FmgrInfo	flinfo;
	Datum		result;

	MemSet(&flinfo, 0, sizeof(flinfo));
	flinfo.fn_addr = fn;
	flinfo.fn_nargs = nargs;
	flinfo.fn_mcxt = CurrentMemoryContext;
	InitFunctionCallInfoData(*fcinfo, &flinfo, nargs, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = arg0;
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = arg1;
	fcinfo->args[1].isnull = false;
	result = fn(fcinfo);
	shim_call_isnull = fcinfo->isnull;
	return result;
}

Datum
shim_call1(PGFunction fn, Datum arg)
{
	return call_with(fn, 1, arg, (Datum) 0);
}

Datum
shim_call2(PGFunction fn, Datum arg0, Datum arg1)
{
	return call_with(fn, 2, arg0, arg1);
}

Datum
DirectFunctionCall1Coll(PGFunction func, Oid collation, Datum arg1)
{
	Datum		result = shim_call1(func, arg1);

	if (shim_call_isnull)
		elog(ERROR, "function returned NULL");
	return result;
}

/* the harnesses call aggregate support functions in the input's context */
int
AggCheckCallContext(FunctionCallInfo fcinfo, MemoryContext *aggcontext)
{
	if (aggcontext != NULL)
		*aggcontext = CurrentMemoryContext;
	return AGG_CONTEXT_AGGREGATE;
}

void
BeginInternalSubTransaction(const char *name)
{
	shim_subxact_depth++;
}

static void
end_subtransaction(void)
{
	if (shim_subxact_depth <= 0)
		shim_finding("a subtransaction ended that was never begun", NULL);
	shim_subxact_depth--;
}

void
ReleaseCurrentSubTransaction(void)
{
	end_subtransaction();
}

void
RollbackAndReleaseCurrentSubTransaction(void)
{
	end_subtransaction();
}
