/*-------------------------------------------------------------------------
 *
 * fuzz_hll.c
 *	  libFuzzer harness for the hll readers streamkpi owns
 *	  (src/sketch_hll.c, built unchanged): hll_estimate(hll) and the
 *	  aggregates' deserialize function read any bytes as an hll value of
 *	  postgresql-hll's storage format.  (hll's own input and receive
 *	  functions are postgresql-hll's, not ours.)
 *
 *	  A value the deserializer accepts must serialize, estimate, merge
 *	  with itself and read back without any error but a saturated
 *	  estimate.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "shim.h"

extern Datum streamkpi_hll_estimate(PG_FUNCTION_ARGS);
extern Datum streamkpi_hll_deserialize(PG_FUNCTION_ARGS);
extern Datum streamkpi_hll_serialize(PG_FUNCTION_ARGS);
extern Datum streamkpi_hll_combine(PG_FUNCTION_ARGS);
extern Datum streamkpi_hll_final_count(PG_FUNCTION_ARGS);

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const int bad_value[] = {ERRCODE_INVALID_BINARY_REPRESENTATION, 0};
static const int saturated[] = {ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, 0};
static const int no_error[] = {0};

static void
check_state(Datum value)
{
	Datum		state;
	Datum		other;
	Datum		packed;
	Datum		d;

	if (!shim_try_call(streamkpi_hll_deserialize, 1, value, 0, &state, bad_value))
		return;
	shim_try_call(streamkpi_hll_final_count, 1, state, 0, &d, saturated);
	shim_try_call(streamkpi_hll_serialize, 1, state, 0, &packed, no_error);
	shim_try_call(streamkpi_hll_estimate, 1, packed, 0, &d, no_error);
	shim_try_call(streamkpi_hll_deserialize, 1, packed, 0, &other, no_error);
	shim_try_call(streamkpi_hll_combine, 2, state, other, &d, no_error);
	shim_try_call(streamkpi_hll_serialize, 1, d, 0, &packed, no_error);
	shim_try_call(streamkpi_hll_estimate, 1, packed, 0, &d, no_error);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	MemoryContext cxt = shim_input_begin();
	Datum		value = PointerGetDatum(shim_bytea(data, size));
	Datum		d;

	shim_try_call(streamkpi_hll_estimate, 1, value, 0, &d, bad_value);
	check_state(value);
	shim_input_end(cxt);
	return 0;
}
