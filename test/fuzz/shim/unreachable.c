/*-------------------------------------------------------------------------
 *
 * unreachable.c
 *	  Backend functions that the fuzzed files call only on paths the
 *	  harnesses do not take (encoding messages, topn's JSON text input,
 *	  set-returning and row-returning functions).  Those paths are
 *	  exercised through a real backend instead (test/t/410_hostile_input.pl).
 *	  Each aborts if reached, so a harness that strays is noticed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "shim.h"

char *
OutputFunctionCall(FmgrInfo *flinfo, Datum val)
{
	shim_unreachable("OutputFunctionCall");
}

int
timestamp2tm(Timestamp dt, int *tzp, struct pg_tm *tm, fsec_t *fsec,
			 const char **tzn, pg_tz *attimezone)
{
	shim_unreachable("timestamp2tm");
}

void
j2date(int jd, int *year, int *month, int *day)
{
	shim_unreachable("j2date");
}

void
deconstruct_array(ArrayType *array, Oid elmtype, int elmlen, bool elmbyval,
				  char elmalign, Datum **elemsp, bool **nullsp, int *nelemsp)
{
	shim_unreachable("deconstruct_array");
}

Datum
jsonb_in(PG_FUNCTION_ARGS)
{
	shim_unreachable("jsonb_in");
}

Datum
numeric_int8(PG_FUNCTION_ARGS)
{
	shim_unreachable("numeric_int8");
}

JsonbValue *
getKeyJsonValueFromContainer(JsonbContainer *container, const char *keyVal,
							 int keyLen, JsonbValue *res)
{
	shim_unreachable("getKeyJsonValueFromContainer");
}

JsonbValue *
getIthJsonbValueFromContainer(JsonbContainer *sheader, uint32 i)
{
	shim_unreachable("getIthJsonbValueFromContainer");
}

void
InitMaterializedSRF(FunctionCallInfo fcinfo, bits32 flags)
{
	shim_unreachable("InitMaterializedSRF");
}

void
tuplestore_putvalues(Tuplestorestate *state, TupleDesc tdesc,
					 Datum *values, bool *isnull)
{
	shim_unreachable("tuplestore_putvalues");
}

TypeFuncClass
get_call_result_type(FunctionCallInfo fcinfo, Oid *resultTypeId,
					 TupleDesc *resultTupleDesc)
{
	shim_unreachable("get_call_result_type");
}

HeapTuple
heap_form_tuple(TupleDesc tupleDescriptor, Datum *values, bool *isnull)
{
	shim_unreachable("heap_form_tuple");
}

Datum
HeapTupleHeaderGetDatum(HeapTupleHeader tuple)
{
	shim_unreachable("HeapTupleHeaderGetDatum");
}
