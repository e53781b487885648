/*-------------------------------------------------------------------------
 *
 * fuzz_topn.c
 *	  libFuzzer harness for streamkpi.topn's binary readers
 *	  (src/sketch_topn.c, src/sketch_topn_format.c, built unchanged).
 *
 *	  Each input is read twice:
 *	  - as the binary form a client sends (topn_recv).  A value recv
 *	    accepts must print, send back byte for byte, and merge with
 *	    itself without any error but a count overflow;
 *	  - as a stored value (format version 1 or 2), through every reader
 *	    of stored values: text output, send, and a merge with a valid
 *	    value (topn_union).  These may only fail as invalid binary data or
 *	    a count overflow.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "shim.h"

extern Datum streamkpi_topn_recv(PG_FUNCTION_ARGS);
extern Datum streamkpi_topn_send(PG_FUNCTION_ARGS);
extern Datum streamkpi_topn_out(PG_FUNCTION_ARGS);
extern Datum streamkpi_topn_union(PG_FUNCTION_ARGS);

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const int bad_value[] = {
	ERRCODE_INVALID_BINARY_REPRESENTATION,
	ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
	ERRCODE_PROGRAM_LIMIT_EXCEEDED,
	0
};
static const int overflow_only[] = {
	ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
	0
};
static const int no_error[] = {0};

/* {"capacity": 4, "floor": 0, "total": 3, "items": [["b", 2, 0], ["a", 1, 0]]} */
static const uint8 valid_v2[] = {
	2, 0, 4, 2, 0, 3,
	0, 1, 'a', 1, 0,
	0, 1, 'b', 2, 0
};

static void
check_recv_result(const uint8 *data, size_t size, Datum value)
{
	Datum		d;
	bytea	   *sent;

	shim_try_call(streamkpi_topn_out, 1, value, 0, &d, no_error);
	if (!shim_try_call(streamkpi_topn_send, 1, value, 0, &d, no_error))
		return;
	sent = DatumGetByteaPP(d);
	if (VARSIZE_ANY_EXHDR(sent) != size ||
		memcmp(VARDATA_ANY(sent), data, size) != 0)
		shim_finding("topn_send(topn_recv(x)) differs from x", NULL);
	shim_try_call(streamkpi_topn_union, 2, value, value, &d, overflow_only);
}

static void
read_as_recv(const uint8 *data, size_t size)
{
	StringInfoData msg;
	Datum		value;

	/* the fuzzer's own buffer: reading past it is an ASan report */
	msg.data = (char *) data;
	msg.len = size;
	msg.maxlen = size;
	msg.cursor = 0;
	if (shim_try_call(streamkpi_topn_recv, 1, PointerGetDatum(&msg), 0,
					  &value, bad_value))
		check_recv_result(data, size, value);
}

static void
read_as_stored(const uint8 *data, size_t size)
{
	Datum		stored = PointerGetDatum(shim_bytea(data, size));
	Datum		valid = PointerGetDatum(shim_bytea(valid_v2, sizeof(valid_v2)));
	Datum		d;

	shim_try_call(streamkpi_topn_out, 1, stored, 0, &d, bad_value);
	shim_try_call(streamkpi_topn_send, 1, stored, 0, &d, bad_value);
	shim_try_call(streamkpi_topn_union, 2, stored, valid, &d, bad_value);
	shim_try_call(streamkpi_topn_union, 2, valid, stored, &d, bad_value);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	MemoryContext cxt = shim_input_begin();

	read_as_recv(data, size);
	read_as_stored(data, size);
	shim_input_end(cxt);
	return 0;
}
