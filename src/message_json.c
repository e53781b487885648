/*-------------------------------------------------------------------------
 *
 * message_json.c
 *	  Kafka message payloads to tuples and back: a hand-written JSON
 *	  parser that converts the fields a table wants straight into Datums,
 *	  the value conversions shared with the CSV codec, and the JSON
 *	  encoder used when producing.
 *
 *	  Decoding never throws for bad data: it returns false and leaves the
 *	  SQLSTATE and text of the problem in the decoder, so that the caller
 *	  decides between an error row and an ERROR.  Only a type's own input
 *	  function can throw; with an error column it runs in a subtransaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <float.h>
#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "message.h"

#define MAX_DEPTH 256

KafkaDecoder *
kafka_decoder_create(KafkaTable *t)
{
	KafkaDecoder *d = palloc0(sizeof(KafkaDecoder));

	d->table = t;
	initStringInfo(&d->buf);
	initStringInfo(&d->buf2);
	return d;
}

bool
kafka_decode_error(KafkaDecoder *d, int sqlstate, const char *fmt,...)
{
	va_list		args;
	char		msg[512];

	va_start(args, fmt);
	vsnprintf(msg, sizeof(msg), fmt, args);
	va_end(args);
	d->errcode = sqlstate;
	d->errmsg = pstrdup(msg);
	return false;
}

/* a short, printable excerpt of a bad value for messages */
static char *
excerpt(const char *s, int len)
{
	int			n = Min(len, 40);

	n = pg_mbcliplen(s, len, n);
	return psprintf("%.*s%s", n, s, len > n ? "..." : "");
}

/*
 * Call a type's input function.  With an error column, in a subtransaction
 * so that a rejected value becomes an error row.
 */
static bool
call_input(KafkaDecoder *d, KafkaColumn *c, char *str, Datum *value)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = true;

	if (d->table->meta_attno[KAFKA_META_ERROR] == 0)
	{
		*value = InputFunctionCall(&c->infunc, str, c->ioparam, c->typmod);
		return true;
	}

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		*value = InputFunctionCall(&c->infunc, str, c->ioparam, c->typmod);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		kafka_decode_error(d, edata->sqlerrcode, "column \"%s\": %s",
						   c->name, edata->message);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

static bool
input_from_span(KafkaDecoder *d, KafkaColumn *c, const char *s, int len,
				Datum *value)
{
	char	   *str = palloc(len + 1);

	memcpy(str, s, len);
	str[len] = '\0';
	return call_input(d, c, str, value);
}

static bool
parse_int64(const char *s, int len, int64 *out, bool *overflow)
{
	const char *end = s + len;
	bool		neg = false;
	uint64		v = 0;

	*overflow = false;
	if (s < end && (*s == '-' || *s == '+'))
		neg = (*s++ == '-');
	if (s == end)
		return false;
	for (; s < end; s++)
	{
		if (*s < '0' || *s > '9')
			return false;
		if (v > (PG_UINT64_MAX - 9) / 10)
			*overflow = true;
		v = v * 10 + (*s - '0');
	}
	if (*overflow || v > (uint64) PG_INT64_MAX + (neg ? 1 : 0))
	{
		*overflow = true;
		return false;
	}
	*out = neg ? (int64) (0 - v) : (int64) v;
	return true;
}

static int
digits(const char *s, int n)
{
	int			v = 0;

	for (int i = 0; i < n; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* YYYY-MM-DD, validated */
static bool
parse_iso_date(const char *s, int len, int *y, int *m, int *dd)
{
	if (len < 10 || s[4] != '-' || s[7] != '-')
		return false;
	*y = digits(s, 4);
	*m = digits(s + 5, 2);
	*dd = digits(s + 8, 2);
	if (*y < 1 || *m < 1 || *m > 12 || *dd < 1 ||
		*dd > day_tab[isleap(*y)][*m - 1])
		return false;
	return true;
}

/*
 * ISO 8601 with an explicit zone: YYYY-MM-DD[T ]HH:MM[:SS[.f]](Z|+HH[:MM]).
 * Anything else is left to timestamptz's input function.
 */
static bool
parse_iso_timestamptz(const char *s, int len, TimestampTz *out)
{
	int			y,
				m,
				dd,
				hh,
				mi,
				ss = 0;
	int64		frac = 0;
	int			i = 16;
	int			off = 0;

	if (len < 17 || !parse_iso_date(s, len, &y, &m, &dd) ||
		(s[10] != 'T' && s[10] != ' ') || s[13] != ':')
		return false;
	hh = digits(s + 11, 2);
	mi = digits(s + 14, 2);
	if (hh < 0 || hh > 23 || mi < 0 || mi > 59)
		return false;
	if (i < len && s[i] == ':')
	{
		if (i + 3 > len || (ss = digits(s + i + 1, 2)) < 0 || ss > 59)
			return false;
		i += 3;
		if (i < len && s[i] == '.')
		{
			int			nd = 0;

			i++;
			while (i < len && s[i] >= '0' && s[i] <= '9')
			{
				if (nd < 6)
				{
					frac = frac * 10 + (s[i] - '0');
					nd++;
				}
				i++;
			}
			if (nd == 0)
				return false;
			while (nd++ < 6)
				frac *= 10;
		}
	}
	if (i == len)
		return false;			/* no zone: session time zone, input function */
	if (s[i] == 'Z' || s[i] == 'z')
		i++;
	else if (s[i] == '+' || s[i] == '-')
	{
		int			sign = s[i] == '-' ? -1 : 1;
		int			oh,
					om = 0;

		if (i + 3 > len || (oh = digits(s + i + 1, 2)) < 0)
			return false;
		i += 3;
		if (i < len && s[i] == ':')
			i++;
		if (i + 2 <= len)
		{
			if ((om = digits(s + i, 2)) < 0)
				return false;
			i += 2;
		}
		if (oh > 15 || om > 59)
			return false;
		off = sign * (oh * 3600 + om * 60);
	}
	else
		return false;
	if (i != len)
		return false;
	*out = (int64) (date2j(y, m, dd) - POSTGRES_EPOCH_JDATE) * USECS_PER_DAY +
		((int64) ((hh * 60 + mi) * 60 + ss - off)) * USECS_PER_SEC + frac;
	return IS_VALID_TIMESTAMP(*out);
}

static bool
looks_numeric(const char *s, int len)
{
	if (len == 0)
		return false;
	for (int i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '+' ||
			  s[i] == '.' || s[i] == 'e' || s[i] == 'E'))
			return false;
	return true;
}

static bool
to_double(KafkaDecoder *d, KafkaColumn *c, const char *s, int len, double *out)
{
	char	   *end;

	resetStringInfo(&d->buf2);
	appendBinaryStringInfo(&d->buf2, s, len);
	errno = 0;
	*out = strtod(d->buf2.data, &end);
	if (len == 0 || end != d->buf2.data + len || isnan(*out) || isinf(*out))
		return kafka_decode_error(d, ERRCODE_INVALID_TEXT_REPRESENTATION,
								  "column \"%s\": invalid number \"%s\"",
								  c->name, excerpt(s, len));
	if (errno == ERANGE && *out != 0)
		return kafka_decode_error(d, ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
								  "column \"%s\": value \"%s\" is out of range for type %s",
								  c->name, excerpt(s, len), format_type_be(c->typid));
	return true;
}

/*
 * Convert one scalar (a JSON string's content, a JSON number or literal,
 * or a CSV field) to the column's type.  quoted is true for JSON strings.
 */
bool
kafka_convert_value(KafkaDecoder *d, KafkaColumn *c, const char *s, int len,
					bool quoted, Datum *value)
{
	int64		i64;
	bool		overflow;
	double		f;

	switch (c->conv)
	{
		case KAFKA_CONV_TEXT:
			*value = PointerGetDatum(cstring_to_text_with_len(s, len));
			return true;

		case KAFKA_CONV_INT2:
		case KAFKA_CONV_INT4:
		case KAFKA_CONV_INT8:
			if (!parse_int64(s, len, &i64, &overflow))
			{
				if (overflow)
					goto out_of_range;
				return kafka_decode_error(d, ERRCODE_INVALID_TEXT_REPRESENTATION,
										  "column \"%s\": invalid integer \"%s\"",
										  c->name, excerpt(s, len));
			}
			if (c->conv == KAFKA_CONV_INT2)
			{
				if (i64 < PG_INT16_MIN || i64 > PG_INT16_MAX)
					goto out_of_range;
				*value = Int16GetDatum((int16) i64);
			}
			else if (c->conv == KAFKA_CONV_INT4)
			{
				if (i64 < PG_INT32_MIN || i64 > PG_INT32_MAX)
					goto out_of_range;
				*value = Int32GetDatum((int32) i64);
			}
			else
				*value = Int64GetDatum(i64);
			return true;

		case KAFKA_CONV_FLOAT4:
			if (!to_double(d, c, s, len, &f))
				return false;
			if (fabs(f) > FLT_MAX)
				goto out_of_range;
			*value = Float4GetDatum((float4) f);
			return true;

		case KAFKA_CONV_FLOAT8:
			if (!to_double(d, c, s, len, &f))
				return false;
			*value = Float8GetDatum(f);
			return true;

		case KAFKA_CONV_BOOL:
			{
				bool		b;

				if (!parse_bool_with_len(s, len, &b))
					return kafka_decode_error(d, ERRCODE_INVALID_TEXT_REPRESENTATION,
											  "column \"%s\": invalid boolean \"%s\"",
											  c->name, excerpt(s, len));
				*value = BoolGetDatum(b);
				return true;
			}

		case KAFKA_CONV_TIMESTAMPTZ:
			{
				TimestampTz ts;

				if (looks_numeric(s, len))
				{
					/* an epoch in time_unit */
					if (parse_int64(s, len, &i64, &overflow))
					{
						if (pg_mul_s64_overflow(i64, c->time_unit, &ts))
							goto out_of_range;
					}
					else
					{
						if (!to_double(d, c, s, len, &f))
							return false;
						f *= c->time_unit;
						if (!(f > (double) PG_INT64_MIN && f < (double) PG_INT64_MAX))
							goto out_of_range;
						ts = (int64) rint(f);
					}
					ts -= (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
					if (!IS_VALID_TIMESTAMP(ts))
						goto out_of_range;
					*value = TimestampTzGetDatum(ts);
					return true;
				}
				if (parse_iso_timestamptz(s, len, &ts))
				{
					*value = TimestampTzGetDatum(ts);
					return true;
				}
				return input_from_span(d, c, s, len, value);
			}

		case KAFKA_CONV_DATE:
			{
				int			y,
							m,
							dd;

				if (len == 10 && parse_iso_date(s, len, &y, &m, &dd))
				{
					*value = DateADTGetDatum(date2j(y, m, dd) - POSTGRES_EPOCH_JDATE);
					return true;
				}
				return input_from_span(d, c, s, len, value);
			}

		case KAFKA_CONV_JSONB:
			if (quoted)
			{
				/* a CSV field or a JSON string's content: a JSON string */
				resetStringInfo(&d->buf2);
				kafka_append_json_string(&d->buf2, s, len);
				return input_from_span(d, c, d->buf2.data, d->buf2.len, value);
			}
			return input_from_span(d, c, s, len, value);

		case KAFKA_CONV_TEXTARRAY:
		case KAFKA_CONV_INPUT:
			return input_from_span(d, c, s, len, value);
	}
	return false;

out_of_range:
	return kafka_decode_error(d, ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
							  "column \"%s\": value \"%s\" is out of range for type %s",
							  c->name, excerpt(s, len), format_type_be(c->typid));
}

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
			appendStringInfoChar(out, c);
			q++;
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

/*
 * One JSON object into values/nulls of the table's data columns (indexed
 * by attnum - 1).  Fields that are not columns are validated and skipped.
 */
bool
kafka_decode_json(KafkaDecoder *d, const char *payload, size_t len,
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

			if (c == NULL)
			{
				if (!skip_value(&jp, 1))
					return false;
			}
			else if (*jp.p == 'n')
			{
				if (!parse_literal(&jp, "null", 4))
					return false;
				nulls[c->attnum - 1] = true;
			}
			else if (c->conv == KAFKA_CONV_JSONB)
			{
				const char *vstart = jp.p;

				if (!skip_value(&jp, 1))
					return false;
				if (!kafka_convert_value(d, c, vstart, jp.p - vstart, false,
										 &values[c->attnum - 1]))
					return false;
				nulls[c->attnum - 1] = false;
			}
			else if (*jp.p == '[' && c->conv == KAFKA_CONV_TEXTARRAY)
			{
				if (!parse_text_array(&jp, c, &values[c->attnum - 1]))
					return false;
				nulls[c->attnum - 1] = false;
			}
			else if (*jp.p == '{' || *jp.p == '[')
			{
				const char *vstart = jp.p;

				if (!skip_value(&jp, 1))
					return false;
				if (c->conv != KAFKA_CONV_TEXT)
					return kafka_decode_error(d, ERRCODE_FDW_INVALID_DATA_TYPE,
											  "column \"%s\": expected a value of type %s, found %s",
											  c->name, format_type_be(c->typid),
											  json_kind(*vstart));
				values[c->attnum - 1] =
					PointerGetDatum(cstring_to_text_with_len(vstart, jp.p - vstart));
				nulls[c->attnum - 1] = false;
			}
			else
			{
				const char *s;
				int			slen;
				bool		quoted = *jp.p == '"';

				if (quoted)
				{
					if (!parse_string(&jp, &d->buf, &s, &slen))
						return false;
				}
				else
				{
					s = jp.p;
					if (*jp.p == 't' || *jp.p == 'f')
					{
						if (!parse_literal(&jp, *jp.p == 't' ? "true" : "false",
										   *jp.p == 't' ? 4 : 5))
							return false;
						if (c->conv != KAFKA_CONV_BOOL && c->conv != KAFKA_CONV_TEXT &&
							c->conv != KAFKA_CONV_INPUT)
							return kafka_decode_error(d, ERRCODE_FDW_INVALID_DATA_TYPE,
													  "column \"%s\": expected a value of type %s, found a boolean",
													  c->name, format_type_be(c->typid));
					}
					else if (!parse_number(&jp))
						return false;
					slen = jp.p - s;
				}
				if (c->conv == KAFKA_CONV_TEXTARRAY)
					return kafka_decode_error(d, ERRCODE_FDW_INVALID_DATA_TYPE,
											  "column \"%s\": expected an array, found %s",
											  c->name, json_kind(quoted ? '"' : *s));
				if (!kafka_convert_value(d, c, s, slen, quoted, &values[c->attnum - 1]))
					return false;
				nulls[c->attnum - 1] = false;
			}

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

/* true when every byte is ASCII and none is NUL, eight at a time */
static bool
is_plain_ascii(const char *p, size_t len)
{
	size_t		i = 0;

	for (; i + 8 <= len; i += 8)
	{
		uint64		w;

		memcpy(&w, p + i, 8);
		/* a high bit set, or a zero byte (the classic haszero trick) */
		if ((w & UINT64CONST(0x8080808080808080)) != 0 ||
			((w - UINT64CONST(0x0101010101010101)) & ~w &
			 UINT64CONST(0x8080808080808080)) != 0)
			return false;
	}
	for (; i < len; i++)
		if ((unsigned char) p[i] >= 0x80 || p[i] == '\0')
			return false;
	return true;
}

/*
 * Decode a payload of the table's format.  values/nulls are indexed by
 * attnum - 1; only data columns are touched.  On false, d->errcode and
 * d->errmsg say why and the data columns are all NULL.
 */
bool
kafka_decode_message(KafkaDecoder *d, const char *payload, size_t len,
					 Datum *values, bool *nulls)
{
	KafkaTable *t = d->table;
	bool		ok;

	for (int i = 0; i < t->ndata; i++)
		nulls[t->data[i]->attnum - 1] = true;

	if (payload == NULL || len == 0)
		return kafka_decode_error(d, ERRCODE_INVALID_TEXT_REPRESENTATION,
								  "empty message");
	/* valid UTF-8 without NUL bytes: fast path for ASCII */
	if (!is_plain_ascii(payload, len) &&
		pg_verify_mbstr_len(PG_UTF8, payload, len, true) < 0)
		return kafka_decode_error(d, ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
								  "invalid UTF-8 in message");

	if (t->format == KAFKA_FORMAT_JSON)
		ok = kafka_decode_json(d, payload, len, values, nulls);
	else
		ok = kafka_decode_csv(d, payload, len, values, nulls);

	if (ok)
		for (int i = 0; i < t->ndata; i++)
		{
			KafkaColumn *c = t->data[i];

			if (c->required && nulls[c->attnum - 1])
			{
				ok = kafka_decode_error(d, ERRCODE_NOT_NULL_VIOLATION,
										"required field \"%s\" is missing or null",
										c->field);
				break;
			}
		}
	if (!ok)
		for (int i = 0; i < t->ndata; i++)
			nulls[t->data[i]->attnum - 1] = true;
	return ok;
}

/* ----------------------------------------------------------------
 * JSON encoding
 * ----------------------------------------------------------------
 */

void
kafka_append_json_string(StringInfo out, const char *s, int len)
{
	const char *end = s + len;

	enlargeStringInfo(out, len + 2);
	out->data[out->len++] = '"';
	while (s < end)
	{
		const char *run = s;

		while (s < end && *s != '"' && *s != '\\' && (unsigned char) *s >= 0x20)
			s++;
		if (s > run)
			appendBinaryStringInfo(out, run, s - run);
		if (s >= end)
			break;
		switch (*s)
		{
			case '"':
				appendBinaryStringInfo(out, "\\\"", 2);
				break;
			case '\\':
				appendBinaryStringInfo(out, "\\\\", 2);
				break;
			case '\n':
				appendBinaryStringInfo(out, "\\n", 2);
				break;
			case '\r':
				appendBinaryStringInfo(out, "\\r", 2);
				break;
			case '\t':
				appendBinaryStringInfo(out, "\\t", 2);
				break;
			default:
				appendStringInfo(out, "\\u%04x", (unsigned char) *s);
		}
		s++;
	}
	appendStringInfoChar(out, '"');
}

/* a Unix epoch in units of unit microseconds, rounded down */
void
kafka_append_epoch(StringInfo out, TimestampTz ts, int64 unit)
{
	int64		us = ts + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;

	appendStringInfo(out, INT64_FORMAT,
					 us >= 0 ? us / unit : -((-us + unit - 1) / unit));
}

/* ISO 8601 in UTC with microseconds when there are any */
bool
kafka_emit_iso_timestamp(StringInfo out, TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(ts) || timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		return false;
	appendStringInfo(out, "%04d-%02d-%02dT%02d:%02d:%02d",
					 tm.tm_year, tm.tm_mon, tm.tm_mday,
					 tm.tm_hour, tm.tm_min, tm.tm_sec);
	if (fsec != 0)
		appendStringInfo(out, ".%06d", (int) fsec);
	appendStringInfoChar(out, 'Z');
	return true;
}

bool
kafka_emit_iso_date(StringInfo out, DateADT d)
{
	int			y,
				m,
				dd;

	if (DATE_NOT_FINITE(d) || d + POSTGRES_EPOCH_JDATE < 0)
		return false;
	j2date(d + POSTGRES_EPOCH_JDATE, &y, &m, &dd);
	if (y <= 0)
		return false;
	appendStringInfo(out, "%04d-%02d-%02d", y, m, dd);
	return true;
}

char *
kafka_value_text(KafkaColumn *c, Datum v)
{
	return OutputFunctionCall(&c->outfunc, v);
}

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
			if (looks_numeric(s, strlen(s)))
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
		if (looks_numeric(s, strlen(s)))
		{
			appendStringInfoString(out, s);
			return;
		}
	}
	s = kafka_value_text(c, v);
	kafka_append_json_string(out, s, strlen(s));
}

/* One row's data columns as a JSON object; NULLs are written as null. */
void
kafka_encode_json(KafkaTable *t, Datum *values, bool *nulls, StringInfo out)
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
