/*-------------------------------------------------------------------------
 *
 * message.c
 *	  What every message codec shares: the decoder, its error reporting,
 *	  the conversion of one scalar to a column's type (integers, floats,
 *	  booleans, epochs, ISO 8601 dates and times, jsonb, input functions),
 *	  the checks of a whole payload (empty, UTF-8, required fields), the
 *	  dispatch to the table's codec, and the value formats the encoders
 *	  write.  It knows no format: see message.h.
 *
 *	  Decoding never throws for bad data: it returns false and leaves the
 *	  SQLSTATE and text of the problem in the decoder, so that the caller
 *	  decides between an error row, a dead letter and an ERROR.  Only a
 *	  type's own input function can throw; with an error column it runs in
 *	  a subtransaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <float.h>
#include <math.h>

#include "access/xact.h"
#include "common/int.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "message.h"

/* longest excerpt of a bad value in an error */
#define EXCERPT_LEN 40

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

/* a printable excerpt of at most maxlen bytes of a bad value, for messages */
char *
kafka_excerpt(const char *s, int len, int maxlen)
{
	int			n = pg_mbcliplen(s, len, Min(len, maxlen));

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

bool
kafka_looks_numeric(const char *s, int len)
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
								  c->name, kafka_excerpt(s, len, EXCERPT_LEN));
	if (errno == ERANGE && *out != 0)
		return kafka_decode_error(d, ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
								  "column \"%s\": value \"%s\" is out of range for type %s",
								  c->name, kafka_excerpt(s, len, EXCERPT_LEN), c->typname);
	return true;
}

static bool
out_of_range(KafkaDecoder *d, KafkaColumn *c, const char *s, int len)
{
	return kafka_decode_error(d, ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
							  "column \"%s\": value \"%s\" is out of range for type %s",
							  c->name, kafka_excerpt(s, len, EXCERPT_LEN), c->typname);
}

/* smallint, integer and bigint, range checked */
static bool
convert_integer(KafkaDecoder *d, KafkaColumn *c, const char *s, int len,
				Datum *value)
{
	int64		i64;
	bool		overflow;

	if (!parse_int64(s, len, &i64, &overflow))
	{
		if (overflow)
			return out_of_range(d, c, s, len);
		return kafka_decode_error(d, ERRCODE_INVALID_TEXT_REPRESENTATION,
								  "column \"%s\": invalid integer \"%s\"",
								  c->name, kafka_excerpt(s, len, EXCERPT_LEN));
	}
	if (c->conv == KAFKA_CONV_INT2)
	{
		if (i64 < PG_INT16_MIN || i64 > PG_INT16_MAX)
			return out_of_range(d, c, s, len);
		*value = Int16GetDatum((int16) i64);
	}
	else if (c->conv == KAFKA_CONV_INT4)
	{
		if (i64 < PG_INT32_MIN || i64 > PG_INT32_MAX)
			return out_of_range(d, c, s, len);
		*value = Int32GetDatum((int32) i64);
	}
	else
		*value = Int64GetDatum(i64);
	return true;
}

/* a number: a Unix epoch in the column's time_unit */
static bool
convert_epoch(KafkaDecoder *d, KafkaColumn *c, const char *s, int len,
			  Datum *value)
{
	TimestampTz ts;
	int64		i64;
	bool		overflow;
	double		f;

	if (parse_int64(s, len, &i64, &overflow))
	{
		if (pg_mul_s64_overflow(i64, c->time_unit, &ts))
			return out_of_range(d, c, s, len);
	}
	else
	{
		if (!to_double(d, c, s, len, &f))
			return false;
		f *= c->time_unit;
		if (!(f > (double) PG_INT64_MIN && f < (double) PG_INT64_MAX))
			return out_of_range(d, c, s, len);
		ts = (int64) rint(f);
	}
	ts -= UNIX_TO_PG_USECS;
	if (!IS_VALID_TIMESTAMP(ts))
		return out_of_range(d, c, s, len);
	*value = TimestampTzGetDatum(ts);
	return true;
}

/* an epoch, ISO 8601 with a zone, or else timestamptz's input function */
static bool
convert_timestamptz(KafkaDecoder *d, KafkaColumn *c, const char *s, int len,
					Datum *value)
{
	TimestampTz ts;

	if (kafka_looks_numeric(s, len))
		return convert_epoch(d, c, s, len, value);
	if (parse_iso_timestamptz(s, len, &ts))
	{
		*value = TimestampTzGetDatum(ts);
		return true;
	}
	return input_from_span(d, c, s, len, value);
}

/* YYYY-MM-DD, or else date's input function */
static bool
convert_date(KafkaDecoder *d, KafkaColumn *c, const char *s, int len,
			 Datum *value)
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

static bool
convert_bool(KafkaDecoder *d, KafkaColumn *c, const char *s, int len,
			 Datum *value)
{
	bool		b;

	if (!parse_bool_with_len(s, len, &b))
		return kafka_decode_error(d, ERRCODE_INVALID_TEXT_REPRESENTATION,
								  "column \"%s\": invalid boolean \"%s\"",
								  c->name, kafka_excerpt(s, len, EXCERPT_LEN));
	*value = BoolGetDatum(b);
	return true;
}

/*
 * Convert one scalar (a JSON string's content, a JSON number or literal,
 * or a CSV field) to the column's type.  quoted is true for JSON strings
 * and CSV fields.
 */
bool
kafka_convert_value(KafkaDecoder *d, KafkaColumn *c, const char *s, int len,
					bool quoted, Datum *value)
{
	double		f;

	switch (c->conv)
	{
		case KAFKA_CONV_TEXT:
			*value = PointerGetDatum(cstring_to_text_with_len(s, len));
			return true;
		case KAFKA_CONV_INT2:
		case KAFKA_CONV_INT4:
		case KAFKA_CONV_INT8:
			return convert_integer(d, c, s, len, value);
		case KAFKA_CONV_FLOAT4:
			if (!to_double(d, c, s, len, &f))
				return false;
			if (fabs(f) > FLT_MAX)
				return out_of_range(d, c, s, len);
			*value = Float4GetDatum((float4) f);
			return true;
		case KAFKA_CONV_FLOAT8:
			if (!to_double(d, c, s, len, &f))
				return false;
			*value = Float8GetDatum(f);
			return true;
		case KAFKA_CONV_BOOL:
			return convert_bool(d, c, s, len, value);
		case KAFKA_CONV_TIMESTAMPTZ:
			return convert_timestamptz(d, c, s, len, value);
		case KAFKA_CONV_DATE:
			return convert_date(d, c, s, len, value);
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
 * Decode a payload through the table's codec.  values/nulls are indexed by
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

	ok = t->codec->decode(d, payload, len, values, nulls);

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

/* Is this message the topic's header (read by the codec's read_header)? */
bool
kafka_is_header_message(KafkaDecoder *d, const char *payload, size_t len)
{
	return d->header_line != NULL && len == (size_t) d->header_len &&
		memcmp(payload, d->header_line, len) == 0;
}

/* One row's data columns as a payload of the table's format. */
void
kafka_encode_message(KafkaTable *t, Datum *values, bool *nulls, StringInfo out)
{
	t->codec->encode(t, values, nulls, out);
}

/* ----------------------------------------------------------------
 * Values as text, for the encoders
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
	int64		us = ts + UNIX_TO_PG_USECS;

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
