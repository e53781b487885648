/*-------------------------------------------------------------------------
 *
 * message_json.c
 *	  The JSON codec: one object per message.  A hand-written parser that
 *	  converts the fields a table wants straight into Datums (through the
 *	  shared conversions of message.c) and validates and skips the others,
 *	  and the encoder that writes one object per row when producing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "message.h"

#define MAX_DEPTH 256

/* ----------------------------------------------------------------
 * JSON parsing
 * ----------------------------------------------------------------
 */

typedef struct JsonParser
{
	const char *start;
	const char *p;
	const char *end;
	KafkaDecoder *d;
} JsonParser;

static bool
json_fail(JsonParser *jp, const char *what)
{
	if (jp->p >= jp->end)
		return kafka_decode_error(jp->d, ERRCODE_INVALID_TEXT_REPRESENTATION,
								  "invalid JSON: %s at end of message", what);
	return kafka_decode_error(jp->d, ERRCODE_INVALID_TEXT_REPRESENTATION,
							  "invalid JSON at byte %d: %s",
							  (int) (jp->p - jp->start), what);
}

static inline void
skip_ws(JsonParser *jp)
{
	while (jp->p < jp->end &&
		   (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
		jp->p++;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool
read_hex4(JsonParser *jp, const char *q, int *cp)
{
	*cp = 0;
	if (q + 4 > jp->end)
		return false;
	for (int i = 0; i < 4; i++)
	{
		int			h = hexval(q[i]);

		if (h < 0)
			return false;
		*cp = (*cp << 4) | h;
	}
	return true;
}

/*
 * Parse a string starting at the opening quote.  Without escapes *s points
 * into the message; otherwise into out.  Leaves jp->p after the closing quote.
 */
/* bytes that end the fast scan of a string: quote, backslash, controls */
static const bool string_special[256] = {
	[0 ... 0x1f] = true,['"'] = true,['\\'] = true
};

static bool
parse_string(JsonParser *jp, StringInfo out, const char **s, int *len)
{
	const char *q = ++jp->p;

	while (q < jp->end && !string_special[(unsigned char) *q])
		q++;
	if (q < jp->end && *q == '"')
	{
		*s = jp->p;
		*len = q - jp->p;
		jp->p = q + 1;
		return true;
	}
	resetStringInfo(out);
	appendBinaryStringInfo(out, jp->p, q - jp->p);
	while (q < jp->end)
	{
		char		c = *q;

		if (c == '"')
		{
			*s = out->data;
			*len = out->len;
			jp->p = q + 1;
			return true;
		}
		if ((unsigned char) c < 0x20)
		{
			jp->p = q;
			return json_fail(jp, "control character in string");
		}
		if (c != '\\')
		{
			const char *run = q;

			/* the bytes up to the next quote, backslash or control at once */
			while (q < jp->end && !string_special[(unsigned char) *q])
				q++;
			appendBinaryStringInfo(out, run, q - run);
			continue;
		}
		if (++q >= jp->end)
			break;
		switch (*q)
		{
			case '"':
			case '\\':
			case '/':
				appendStringInfoChar(out, *q);
				break;
			case 'b':
				appendStringInfoChar(out, '\b');
				break;
			case 'f':
				appendStringInfoChar(out, '\f');
				break;
			case 'n':
				appendStringInfoChar(out, '\n');
				break;
			case 'r':
				appendStringInfoChar(out, '\r');
				break;
			case 't':
				appendStringInfoChar(out, '\t');
				break;
			case 'u':
				{
					int			cp;
					unsigned char utf8[8];

					if (!read_hex4(jp, q + 1, &cp))
					{
						jp->p = q;
						return json_fail(jp, "invalid \\u escape");
					}
					q += 4;
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						int			lo;

						if (q + 2 < jp->end && q[1] == '\\' && q[2] == 'u' &&
							read_hex4(jp, q + 3, &lo) && lo >= 0xDC00 && lo <= 0xDFFF)
						{
							cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
							q += 6;
						}
						else
						{
							jp->p = q;
							return json_fail(jp, "invalid Unicode surrogate pair");
						}
					}
					else if (cp >= 0xDC00 && cp <= 0xDFFF)
					{
						jp->p = q;
						return json_fail(jp, "invalid Unicode surrogate pair");
					}
					if (cp == 0)
					{
						jp->p = q;
						return json_fail(jp, "\\u0000 cannot be stored in text");
					}
					unicode_to_utf8(cp, utf8);
					appendBinaryStringInfo(out, (char *) utf8, pg_utf_mblen(utf8));
					break;
				}
			default:
				jp->p = q;
				return json_fail(jp, "invalid escape sequence");
		}
		q++;
	}
	jp->p = jp->end;
	return json_fail(jp, "unterminated string");
}

static bool
parse_number(JsonParser *jp)
{
	const char *q = jp->p;

	if (q < jp->end && *q == '-')
		q++;
	if (q >= jp->end || *q < '0' || *q > '9')
		goto bad;
	if (*q == '0')
		q++;
	else
		while (q < jp->end && *q >= '0' && *q <= '9')
			q++;
	if (q < jp->end && *q == '.')
	{
		q++;
		if (q >= jp->end || *q < '0' || *q > '9')
			goto bad;
		while (q < jp->end && *q >= '0' && *q <= '9')
			q++;
	}
	if (q < jp->end && (*q == 'e' || *q == 'E'))
	{
		q++;
		if (q < jp->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= jp->end || *q < '0' || *q > '9')
			goto bad;
		while (q < jp->end && *q >= '0' && *q <= '9')
			q++;
	}
	jp->p = q;
	return true;
bad:
	jp->p = q;
	return json_fail(jp, "invalid number");
}

static bool
parse_literal(JsonParser *jp, const char *lit, int len)
{
	if (jp->end - jp->p < len || memcmp(jp->p, lit, len) != 0)
		return json_fail(jp, "unexpected character");
	jp->p += len;
	return true;
}

/* validate and skip any value */
static bool
skip_value(JsonParser *jp, int depth)
{
	const char *s;
	int			len;

	if (depth > MAX_DEPTH)
		return json_fail(jp, "nesting too deep");
	skip_ws(jp);
	if (jp->p >= jp->end)
		return json_fail(jp, "expected a value");
	switch (*jp->p)
	{
		case '"':
			return parse_string(jp, &jp->d->buf2, &s, &len);
		case '{':
			jp->p++;
			skip_ws(jp);
			if (jp->p < jp->end && *jp->p == '}')
			{
				jp->p++;
				return true;
			}
			for (;;)
			{
				skip_ws(jp);
				if (jp->p >= jp->end || *jp->p != '"')
					return json_fail(jp, "expected a string key");
				if (!parse_string(jp, &jp->d->buf2, &s, &len))
					return false;
				skip_ws(jp);
				if (jp->p >= jp->end || *jp->p != ':')
					return json_fail(jp, "expected ':'");
				jp->p++;
				if (!skip_value(jp, depth + 1))
					return false;
				skip_ws(jp);
				if (jp->p < jp->end && *jp->p == ',')
				{
					jp->p++;
					continue;
				}
				if (jp->p < jp->end && *jp->p == '}')
				{
					jp->p++;
					return true;
				}
				return json_fail(jp, "expected ',' or '}'");
			}
		case '[':
			jp->p++;
			skip_ws(jp);
			if (jp->p < jp->end && *jp->p == ']')
			{
				jp->p++;
				return true;
			}
			for (;;)
			{
				if (!skip_value(jp, depth + 1))
					return false;
				skip_ws(jp);
				if (jp->p < jp->end && *jp->p == ',')
				{
					jp->p++;
					continue;
				}
				if (jp->p < jp->end && *jp->p == ']')
				{
					jp->p++;
					return true;
				}
				return json_fail(jp, "expected ',' or ']'");
			}
		case 't':
			return parse_literal(jp, "true", 4);
		case 'f':
			return parse_literal(jp, "false", 5);
		case 'n':
			return parse_literal(jp, "null", 4);
		default:
			return parse_number(jp);
	}
}

static const char *
json_kind(char c)
{
	switch (c)
	{
		case '{':
			return "an object";
		case '[':
			return "an array";
		case '"':
			return "a string";
		case 't':
		case 'f':
			return "a boolean";
		default:
			return "a number";
	}
}

/* a JSON array of scalars into text[] */
static bool
parse_text_array(JsonParser *jp, KafkaColumn *c, Datum *value)
{
	List	   *elems = NIL;
	int			n = 0;
	Datum	   *datums;
	bool	   *enulls;
	int			dims[1];
	int			lbs[1] = {1};
	ListCell   *lc;
	int			i = 0;

	jp->p++;
	skip_ws(jp);
	if (jp->p < jp->end && *jp->p == ']')
		jp->p++;
	else
		for (;;)
		{
			const char *s;
			int			len;
			const char *vstart;

			skip_ws(jp);
			if (jp->p >= jp->end)
				return json_fail(jp, "expected a value");
			vstart = jp->p;
			if (*jp->p == '"')
			{
				if (!parse_string(jp, &jp->d->buf2, &s, &len))
					return false;
				elems = lappend(elems, cstring_to_text_with_len(s, len));
			}
			else if (*jp->p == 'n')
			{
				if (!parse_literal(jp, "null", 4))
					return false;
				elems = lappend(elems, NULL);
			}
			else if (*jp->p == '{' || *jp->p == '[')
				return kafka_decode_error(jp->d, ERRCODE_FDW_INVALID_DATA_TYPE,
										  "column \"%s\": expected an array of scalars, found %s in it",
										  c->name, json_kind(*jp->p));
			else
			{
				if (!skip_value(jp, 1))
					return false;
				elems = lappend(elems, cstring_to_text_with_len(vstart, jp->p - vstart));
			}
			n++;
			skip_ws(jp);
			if (jp->p < jp->end && *jp->p == ',')
			{
				jp->p++;
				continue;
			}
			if (jp->p < jp->end && *jp->p == ']')
			{
				jp->p++;
				break;
			}
			return json_fail(jp, "expected ',' or ']'");
		}
	datums = palloc(sizeof(Datum) * Max(n, 1));
	enulls = palloc(sizeof(bool) * Max(n, 1));
	foreach(lc, elems)
	{
		enulls[i] = lfirst(lc) == NULL;
		datums[i] = PointerGetDatum(lfirst(lc));
		i++;
	}
	dims[0] = n;
	if (n == 0)
		*value = PointerGetDatum(construct_empty_array(TEXTOID));
	else
		*value = PointerGetDatum(construct_md_array(datums, enulls, 1, dims, lbs,
													TEXTOID, -1, false, TYPALIGN_INT));
	return true;
}

/*
 * The column a key names.  Producers write keys in the same order every
 * time, so the column after the last match is tried first.
 */
static inline KafkaColumn *
find_column(KafkaDecoder *d, const char *key, int len)
{
	KafkaTable *t = d->table;
	int			n = t->ndata;

	for (int k = 0; k < n; k++)
	{
		int			i = d->next_guess + k;
		KafkaColumn *c;

		if (i >= n)
			i -= n;
		c = t->data[i];
		if (c->field_len == len && c->field[0] == key[0] &&
			memcmp(c->field, key, len) == 0)
		{
			d->next_guess = i + 1 < n ? i + 1 : 0;
			return c;
		}
	}
	return NULL;
}

/* a string, number or true/false for column c */
static bool
decode_scalar(JsonParser *jp, KafkaColumn *c, Datum *value)
{
	KafkaDecoder *d = jp->d;
	const char *s;
	int			slen;
	bool		quoted = *jp->p == '"';

	if (quoted)
	{
		if (!parse_string(jp, &d->buf, &s, &slen))
			return false;
	}
	else
	{
		s = jp->p;
		if (*jp->p == 't' || *jp->p == 'f')
		{
			if (!parse_literal(jp, *jp->p == 't' ? "true" : "false",
							   *jp->p == 't' ? 4 : 5))
				return false;
			if (c->conv != KAFKA_CONV_BOOL && c->conv != KAFKA_CONV_TEXT &&
				c->conv != KAFKA_CONV_INPUT)
				return kafka_decode_error(d, ERRCODE_FDW_INVALID_DATA_TYPE,
										  "column \"%s\": expected a value of type %s, found a boolean",
										  c->name, c->typname);
		}
		else if (!parse_number(jp))
			return false;
		slen = jp->p - s;
	}
	if (c->conv == KAFKA_CONV_TEXTARRAY)
		return kafka_decode_error(d, ERRCODE_FDW_INVALID_DATA_TYPE,
								  "column \"%s\": expected an array, found %s",
								  c->name, json_kind(quoted ? '"' : *s));
	return kafka_convert_value(d, c, s, slen, quoted, value);
}

/* the value of a key that names column c, into values/nulls */
static bool
decode_field(JsonParser *jp, KafkaColumn *c, Datum *values, bool *nulls)
{
	Datum	   *value = &values[c->attnum - 1];
	const char *vstart = jp->p;

	if (*jp->p == 'n')
	{
		if (!parse_literal(jp, "null", 4))
			return false;
		nulls[c->attnum - 1] = true;
		return true;
	}
	if (c->conv == KAFKA_CONV_JSONB)
	{
		/* the value's JSON text, whatever its kind */
		if (!skip_value(jp, 1) ||
			!kafka_convert_value(jp->d, c, vstart, jp->p - vstart, false, value))
			return false;
	}
	else if (*jp->p == '[' && c->conv == KAFKA_CONV_TEXTARRAY)
	{
		if (!parse_text_array(jp, c, value))
			return false;
	}
	else if (*jp->p == '{' || *jp->p == '[')
	{
		/* an object or array only fits a text column, as its JSON text */
		if (!skip_value(jp, 1))
			return false;
		if (c->conv != KAFKA_CONV_TEXT)
			return kafka_decode_error(jp->d, ERRCODE_FDW_INVALID_DATA_TYPE,
									  "column \"%s\": expected a value of type %s, found %s",
									  c->name, c->typname, json_kind(*vstart));
		*value = PointerGetDatum(cstring_to_text_with_len(vstart, jp->p - vstart));
	}
	else if (!decode_scalar(jp, c, value))
		return false;
	nulls[c->attnum - 1] = false;
	return true;
}

/*
 * One JSON object into values/nulls of the table's data columns (indexed
 * by attnum - 1).  Fields that are not columns are validated and skipped.
 */
static bool
decode_json(KafkaDecoder *d, const char *payload, size_t len,
			Datum *values, bool *nulls)
{
	JsonParser	jp;

	jp.start = jp.p = payload;
	jp.end = payload + len;
	jp.d = d;

	skip_ws(&jp);
	if (jp.p >= jp.end || *jp.p != '{')
	{
		if (jp.p < jp.end && (*jp.p == '[' || *jp.p == '"' || *jp.p == '-' ||
							  (*jp.p >= '0' && *jp.p <= '9')))
			return kafka_decode_error(d, ERRCODE_INVALID_TEXT_REPRESENTATION,
									  "JSON message is %s, not an object",
									  json_kind(*jp.p));
		return json_fail(&jp, "expected '{'");
	}
	jp.p++;
	skip_ws(&jp);
	if (jp.p < jp.end && *jp.p == '}')
		jp.p++;
	else
		for (;;)
		{
			const char *key;
			int			klen;
			KafkaColumn *c;

			skip_ws(&jp);
			if (jp.p >= jp.end || *jp.p != '"')
				return json_fail(&jp, "expected a string key");
			if (!parse_string(&jp, &d->buf, &key, &klen))
				return false;
			c = len > 0 && klen > 0 ? find_column(d, key, klen) : NULL;
			skip_ws(&jp);
			if (jp.p >= jp.end || *jp.p != ':')
				return json_fail(&jp, "expected ':'");
			jp.p++;
			skip_ws(&jp);
			if (jp.p >= jp.end)
				return json_fail(&jp, "expected a value");

			if (c == NULL ? !skip_value(&jp, 1) :
				!decode_field(&jp, c, values, nulls))
				return false;

			skip_ws(&jp);
			if (jp.p < jp.end && *jp.p == ',')
			{
				jp.p++;
				continue;
			}
			if (jp.p < jp.end && *jp.p == '}')
			{
				jp.p++;
				break;
			}
			return json_fail(&jp, "expected ',' or '}'");
		}
	skip_ws(&jp);
	if (jp.p != jp.end)
		return json_fail(&jp, "unexpected data after the object");
	return true;
}

/* ----------------------------------------------------------------
 * JSON encoding
 * ----------------------------------------------------------------
 */

static void
append_json_value(StringInfo out, KafkaColumn *c, Datum v)
{
	char	   *s;

	switch (c->conv)
	{
		case KAFKA_CONV_TEXT:
			{
				text	   *t = DatumGetTextPP(v);

				kafka_append_json_string(out, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
				return;
			}
		case KAFKA_CONV_INT2:
			appendStringInfo(out, "%d", (int) DatumGetInt16(v));
			return;
		case KAFKA_CONV_INT4:
			appendStringInfo(out, "%d", DatumGetInt32(v));
			return;
		case KAFKA_CONV_INT8:
			appendStringInfo(out, INT64_FORMAT, DatumGetInt64(v));
			return;
		case KAFKA_CONV_BOOL:
			appendStringInfoString(out, DatumGetBool(v) ? "true" : "false");
			return;
		case KAFKA_CONV_FLOAT4:
		case KAFKA_CONV_FLOAT8:
			s = kafka_value_text(c, v);
			if (kafka_looks_numeric(s, strlen(s)))
				appendStringInfoString(out, s);
			else
				kafka_append_json_string(out, s, strlen(s));
			return;
		case KAFKA_CONV_TIMESTAMPTZ:
			if (c->time_unit_set && !TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(v)))
			{
				kafka_append_epoch(out, DatumGetTimestampTz(v), c->time_unit);
				return;
			}
			{
				StringInfoData tmp;

				initStringInfo(&tmp);
				if (kafka_emit_iso_timestamp(&tmp, DatumGetTimestampTz(v)))
				{
					appendStringInfoChar(out, '"');
					appendBinaryStringInfo(out, tmp.data, tmp.len);
					appendStringInfoChar(out, '"');
					return;
				}
				break;
			}
		case KAFKA_CONV_DATE:
			{
				StringInfoData tmp;

				initStringInfo(&tmp);
				if (kafka_emit_iso_date(&tmp, DatumGetDateADT(v)))
				{
					appendStringInfoChar(out, '"');
					appendBinaryStringInfo(out, tmp.data, tmp.len);
					appendStringInfoChar(out, '"');
					return;
				}
				break;
			}
		case KAFKA_CONV_JSONB:
			appendStringInfoString(out, kafka_value_text(c, v));
			return;
		case KAFKA_CONV_TEXTARRAY:
			{
				ArrayType  *arr = DatumGetArrayTypeP(v);
				Datum	   *elems;
				bool	   *enulls;
				int			n;

				deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
								  &elems, &enulls, &n);
				appendStringInfoChar(out, '[');
				for (int i = 0; i < n; i++)
				{
					if (i > 0)
						appendStringInfoChar(out, ',');
					if (enulls[i])
						appendStringInfoString(out, "null");
					else
					{
						text	   *t = DatumGetTextPP(elems[i]);

						kafka_append_json_string(out, VARDATA_ANY(t),
												 VARSIZE_ANY_EXHDR(t));
					}
				}
				appendStringInfoChar(out, ']');
				return;
			}
		default:
			break;
	}
	if (c->typid == NUMERICOID)
	{
		s = kafka_value_text(c, v);
		if (kafka_looks_numeric(s, strlen(s)))
		{
			appendStringInfoString(out, s);
			return;
		}
	}
	s = kafka_value_text(c, v);
	kafka_append_json_string(out, s, strlen(s));
}

/* One row's data columns as a JSON object; NULLs are written as null. */
static void
encode_json(KafkaTable *t, Datum *values, bool *nulls, StringInfo out)
{
	appendStringInfoChar(out, '{');
	for (int i = 0; i < t->ndata; i++)
	{
		KafkaColumn *c = t->data[i];

		if (i > 0)
			appendStringInfoChar(out, ',');
		kafka_append_json_string(out, c->field, c->field_len);
		appendStringInfoChar(out, ':');
		if (nulls[c->attnum - 1])
			appendStringInfoString(out, "null");
		else
			append_json_value(out, c, values[c->attnum - 1]);
	}
	appendStringInfoChar(out, '}');
}

const KafkaCodec kafka_json_codec = {
	.name = "json",
	.prepare = NULL,
	.decode = decode_json,
	.encode = encode_json,
	.read_header = NULL,
};
