/*-------------------------------------------------------------------------
 *
 * types.c
 *	  Data types for the fuzzing shim: calendar arithmetic, boolean
 *	  parsing, arrays, type names, and input functions for the column
 *	  types the decoders hand to an input function (numeric, jsonb, text[],
 *	  and timestamptz or date text that is not ISO 8601).
 *
 *	  The input functions are not PostgreSQL's: they read every byte of
 *	  their argument (so AddressSanitizer checks the decoder gave a
 *	  terminated string), accept what looks like their type, and otherwise
 *	  throw the SQLSTATE the real function throws.  That gives the
 *	  decoders both outcomes an input function can have.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "shim.h"

const int	day_tab[2][13] = {
	{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 0},
	{31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 0}
};

/* Julian day number of a Gregorian date */
int
date2j(int year, int month, int day)
{
	int			a = (14 - month) / 12;
	int			y = year + 4800 - a;
	int			m = month + 12 * a - 3;

	return day + (153 * m + 2) / 5 + 365 * y + y / 4 - y / 100 + y / 400 - 32045;
}

/* true, yes, on, 1 and false, no, off, 0, any case, unique prefixes */
bool
parse_bool_with_len(const char *value, size_t len, bool *result)
{
	static const struct
	{
		const char *word;
		size_t		minlen;
		bool		value;
	}			words[] = {
		{"true", 1, true}, {"false", 1, false}, {"yes", 1, true},
		{"no", 1, false}, {"on", 2, true}, {"off", 2, false},
		{"1", 1, true}, {"0", 1, false}
	};

	for (int i = 0; i < lengthof(words); i++)
		if (len >= words[i].minlen && len <= strlen(words[i].word) &&
			pg_strncasecmp(value, words[i].word, len) == 0)
		{
			*result = words[i].value;
			return true;
		}
	return false;
}

char *
format_type_be(Oid type_oid)
{
	switch (type_oid)
	{
		case INT2OID:
			return pstrdup("smallint");
		case INT4OID:
			return pstrdup("integer");
		case INT8OID:
			return pstrdup("bigint");
		case FLOAT4OID:
			return pstrdup("real");
		case FLOAT8OID:
			return pstrdup("double precision");
		default:
			return psprintf("type %u", type_oid);
	}
}

/* An array's stand-in: a varlena that holds the elements' bytes. */
ArrayType *
construct_md_array(Datum *elems, bool *nulls, int ndims, int *dims, int *lbs,
				   Oid elmtype, int elmlen, bool elmbyval, char elmalign)
{
	StringInfoData buf;
	int			n = 1;

	for (int i = 0; i < ndims; i++)
		n *= dims[i];
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, "\0\0\0\0", VARHDRSZ);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
		{
			text	   *t = DatumGetTextPP(elems[i]);

			appendBinaryStringInfo(&buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
		}
	SET_VARSIZE(buf.data, buf.len);
	return (ArrayType *) buf.data;
}

ArrayType *
construct_empty_array(Oid elmtype)
{
	ArrayType  *a = palloc0(sizeof(ArrayType));

	SET_VARSIZE(a, sizeof(ArrayType));
	a->elemtype = elmtype;
	return a;
}

/* ----------------------------------------------------------------
 * Input functions
 * ----------------------------------------------------------------
 */
static Datum
accept(const char *str)
{
	return PointerGetDatum(cstring_to_text(str));
}

static void
reject(int sqlerrcode, const char *type, const char *str)
{
	ereport(ERROR,
			(errcode(sqlerrcode),
			 errmsg("invalid input syntax for type %s: \"%s\"", type, str)));
}

static bool
only_chars(const char *str, const char *allowed)
{
	return str[0] != '\0' && strspn(str, allowed) == strlen(str);
}

static Datum
shim_numeric_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);

	if (!only_chars(str, "0123456789+-.eE ") &&
		pg_strcasecmp(str, "NaN") != 0 && pg_strcasecmp(str, "Infinity") != 0)
		reject(ERRCODE_INVALID_TEXT_REPRESENTATION, "numeric", str);
	return accept(str);
}

static Datum
shim_datetime_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);

	if (strlen(str) > 64)
		reject(ERRCODE_DATETIME_FIELD_OVERFLOW, "timestamp with time zone", str);
	if (!only_chars(str, "0123456789-:.+ /TZabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))
		reject(ERRCODE_INVALID_DATETIME_FORMAT, "timestamp with time zone", str);
	return accept(str);
}

/* brackets and quotes balance: enough to tell JSON-ish text from garbage */
static Datum
shim_jsonb_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);
	int			depth = 0;
	bool		in_string = false;

	for (const char *p = str; *p; p++)
	{
		if (in_string)
		{
			if (*p == '\\' && p[1] != '\0')
				p++;
			else if (*p == '"')
				in_string = false;
		}
		else if (*p == '"')
			in_string = true;
		else if (*p == '{' || *p == '[')
			depth++;
		else if ((*p == '}' || *p == ']') && --depth < 0)
			break;
	}
	if (depth != 0 || in_string || str[0] == '\0')
		reject(ERRCODE_INVALID_TEXT_REPRESENTATION, "json", str);
	return accept(str);
}

static Datum
shim_array_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);
	size_t		len = strlen(str);

	if (len < 2 || str[0] != '{' || str[len - 1] != '}')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("malformed array literal: \"%s\"", str)));
	return accept(str);
}

/* the decoders convert these types themselves */
static Datum
shim_no_input(PG_FUNCTION_ARGS)
{
	shim_unreachable("an input function of a type the decoders convert themselves");
}

void
shim_set_input_function(FmgrInfo *flinfo, Oid typid)
{
	MemSet(flinfo, 0, sizeof(FmgrInfo));
	flinfo->fn_oid = typid;
	flinfo->fn_nargs = 3;
	flinfo->fn_strict = true;
	flinfo->fn_mcxt = CurrentMemoryContext;
	switch (typid)
	{
		case NUMERICOID:
			flinfo->fn_addr = shim_numeric_in;
			break;
		case TIMESTAMPTZOID:
		case DATEOID:
			flinfo->fn_addr = shim_datetime_in;
			break;
		case JSONBOID:
			flinfo->fn_addr = shim_jsonb_in;
			break;
		case TEXTARRAYOID:
			flinfo->fn_addr = shim_array_in;
			break;
		default:
			flinfo->fn_addr = shim_no_input;
	}
}
