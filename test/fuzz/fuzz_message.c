/*-------------------------------------------------------------------------
 *
 * fuzz_message.c
 *	  libFuzzer harness for the Kafka message decoders (src/message*.c,
 *	  built unchanged), compiled three times: JSON (fuzz_json), CSV
 *	  (fuzz_csv) and CSV with a header (fuzz_csv_header, -DFUZZ_CSV_HEADER:
 *	  the input up to its first newline is the header message, the rest
 *	  is the message).
 *
 *	  The table has a column of every type the decoders convert
 *	  themselves, and types they hand to an input function.  Each message
 *	  is decoded the two ways a scan does:
 *	  - with an error column, where decoding must never raise an ERROR:
 *	    the message is a row or an error row (false with a SQLSTATE and a
 *	    message);
 *	  - without one, where only a type's input function may raise one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "datatype/timestamp.h"
#include "utils/builtins.h"

#include "message.h"
#include "shim.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifdef FUZZ_CSV_HEADER
#define WITH_HEADER true
#else
#define WITH_HEADER false
#endif

typedef struct ColumnSpec
{
	const char *name;
	const char *field;
	Oid			typid;
	KafkaConv	conv;
	bool		required;
	int64		time_unit;		/* 0: seconds, the default */
} ColumnSpec;

static const ColumnSpec columns[] = {
	{"user_id", "userId", TEXTOID, KAFKA_CONV_TEXT, true},
	{"track_id", NULL, TEXTOID, KAFKA_CONV_TEXT},
	{"listened_at", NULL, TIMESTAMPTZOID, KAFKA_CONV_TIMESTAMPTZ},
	{"ms_played", NULL, INT4OID, KAFKA_CONV_INT4},
	{"action", NULL, TEXTOID, KAFKA_CONV_TEXT},
	{"region", NULL, TEXTOID, KAFKA_CONV_TEXT},
	{"device", NULL, TEXTOID, KAFKA_CONV_TEXT},
	{"event_id", NULL, TEXTOID, KAFKA_CONV_TEXT},
	{"n", NULL, INT8OID, KAFKA_CONV_INT8},
	{"small", NULL, INT2OID, KAFKA_CONV_INT2},
	{"ratio", NULL, FLOAT4OID, KAFKA_CONV_FLOAT4},
	{"score", NULL, FLOAT8OID, KAFKA_CONV_FLOAT8},
	{"flag", NULL, BOOLOID, KAFKA_CONV_BOOL},
	{"day", NULL, DATEOID, KAFKA_CONV_DATE},
	{"doc", NULL, JSONBOID, KAFKA_CONV_JSONB},
	{"tags", NULL, TEXTARRAYOID, KAFKA_CONV_TEXTARRAY},
	{"amount", NULL, NUMERICOID, KAFKA_CONV_INPUT},
	{"ts_ms", NULL, TIMESTAMPTZOID, KAFKA_CONV_TIMESTAMPTZ, false, 1000},
};

#define NDATA lengthof(columns)

/* what the shim's input functions raise for text they reject */
static const int input_errors[] = {
	ERRCODE_INVALID_TEXT_REPRESENTATION,
	ERRCODE_INVALID_DATETIME_FORMAT,
	ERRCODE_DATETIME_FIELD_OVERFLOW,
	0
};

static const int no_error[] = {0};

/* a header that cannot be split, or lacks a required column */
static const int header_errors[] = {
	ERRCODE_BAD_COPY_FILE_FORMAT,
	ERRCODE_PROGRAM_LIMIT_EXCEEDED,
	ERRCODE_NOT_NULL_VIOLATION,
	0
};

/* The table as kafka_table_load would build it; attnum NDATA + 1 is the error column. */
static KafkaTable *
make_table(bool error_column)
{
	KafkaTable *t = palloc0(sizeof(KafkaTable));

	t->relname = "fuzz";
	t->topic = "fuzz";
#ifdef FUZZ_CSV
	t->codec = &kafka_csv_codec;
#else
	t->codec = &kafka_json_codec;
#endif
	t->header = WITH_HEADER;
	t->delimiter = ',';
	t->quote = '"';
	t->null_string = "";
	t->natts = NDATA + 1;
	t->cols = palloc0(sizeof(KafkaColumn) * t->natts);
	t->data = palloc0(sizeof(KafkaColumn *) * NDATA);
	for (int i = 0; i < NDATA; i++)
	{
		KafkaColumn *c = &t->cols[i];

		c->attnum = i + 1;
		c->name = (char *) columns[i].name;
		c->typid = columns[i].typid;
		c->typmod = -1;
		c->typname = format_type_be(c->typid);
		c->field = (char *) (columns[i].field ? columns[i].field : columns[i].name);
		c->field_len = strlen(c->field);
		c->csv_position = -1;
		c->required = columns[i].required;
		c->time_unit = columns[i].time_unit ? columns[i].time_unit : USECS_PER_SEC;
		c->time_unit_set = columns[i].time_unit != 0;
		c->conv = columns[i].conv;
		shim_set_input_function(&c->infunc, c->typid);
		c->ioparam = c->typid;
		t->data[t->ndata++] = c;
	}
	if (t->codec->prepare)
		t->codec->prepare(t);
	t->cols[NDATA].attnum = NDATA + 1;
	t->cols[NDATA].name = "kerror";
	t->cols[NDATA].meta = KAFKA_META_ERROR;
	if (error_column)
	{
		t->meta_attno[KAFKA_META_ERROR] = NDATA + 1;
		for (int i = 0; i < NDATA; i++)
			if (columns[i].conv == KAFKA_CONV_INPUT || columns[i].conv == KAFKA_CONV_JSONB ||
				columns[i].conv == KAFKA_CONV_TIMESTAMPTZ || columns[i].conv == KAFKA_CONV_DATE)
				t->needs_subxact = true;
	}
	return t;
}

static volatile char byte_sink;

/* read every value of a decoded row, so that ASan checks each one */
static void
check_row(KafkaTable *t, Datum *values, bool *nulls)
{
	for (int i = 0; i < t->ndata; i++)
	{
		KafkaColumn *c = t->data[i];

		if (nulls[c->attnum - 1])
		{
			if (c->required)
				shim_finding("a required column is NULL in a decoded row", NULL);
			continue;
		}
		switch (c->conv)
		{
			case KAFKA_CONV_TEXT:
			case KAFKA_CONV_JSONB:
			case KAFKA_CONV_TEXTARRAY:
			case KAFKA_CONV_INPUT:
				{
					struct varlena *v = (struct varlena *) DatumGetPointer(values[c->attnum - 1]);
					for (Size k = 0; k < VARSIZE_ANY(v); k++)
						byte_sink += ((char *) v)[k];
					break;
				}
			default:
				break;
		}
	}
}

typedef struct DecodeArgs
{
	KafkaDecoder *decoder;
	const char *bytes;
	size_t		len;
} DecodeArgs;

static Datum
set_header(PG_FUNCTION_ARGS)
{
	DecodeArgs *a = (DecodeArgs *) PG_GETARG_POINTER(0);

	a->decoder->table->codec->read_header(a->decoder, a->bytes, a->len);
	PG_RETURN_VOID();
}

static Datum
decode_message(PG_FUNCTION_ARGS)
{
	DecodeArgs *a = (DecodeArgs *) PG_GETARG_POINTER(0);
	KafkaDecoder *d = a->decoder;
	KafkaTable *t = d->table;
	Datum	   *values = palloc0(sizeof(Datum) * t->natts);
	bool	   *nulls = palloc(sizeof(bool) * t->natts);

	memset(nulls, true, sizeof(bool) * t->natts);
	if (kafka_decode_message(d, a->bytes, a->len, values, nulls))
		check_row(t, values, nulls);
	else
	{
		if (d->errcode == 0 || d->errmsg == NULL || d->errmsg[0] == '\0')
			shim_finding("a rejected message without a SQLSTATE and message", NULL);
		for (int i = 0; i < t->ndata; i++)
			if (!nulls[t->data[i]->attnum - 1])
				shim_finding("a rejected message left a data column set", NULL);
	}
	PG_RETURN_VOID();
}

/* a copy of exactly len bytes, so that reading past it is reported */
static const char *
exact_copy(const uint8 *p, size_t len)
{
	return memcpy(palloc(Max(len, 1)), p, len);
}

static void
decode(const uint8 *data, size_t size, bool error_column)
{
	DecodeArgs	a;
	Datum		d;

	a.decoder = kafka_decoder_create(make_table(error_column));
	a.bytes = (const char *) data;
	a.len = size;
	if (WITH_HEADER)
	{
		const uint8 *nl = memchr(data, '\n', size);

		a.len = nl ? nl - data : size;
		a.bytes = exact_copy(data, a.len);
		if (!shim_try_call(set_header, 1, PointerGetDatum(&a), 0, &d, header_errors))
			return;
		a.len = nl ? size - (nl - data) - 1 : 0;
		a.bytes = exact_copy(nl ? nl + 1 : data, a.len);
	}
	shim_try_call(decode_message, 1, PointerGetDatum(&a), 0, &d,
				  error_column ? no_error : input_errors);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	MemoryContext cxt = shim_input_begin();

	decode(data, size, true);
	decode(data, size, false);
	shim_input_end(cxt);
	return 0;
}
