/*-------------------------------------------------------------------------
 *
 * message_csv.c
 *	  CSV message payloads: one record per message, RFC 4180 quoting with
 *	  the table's delimiter and quote, an unquoted null string for NULL.
 *	  With header 'true' the first message of the topic names the fields.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "message.h"

/* fields of a header record */
#define MAX_CSV_FIELDS 1024

/*
 * Fields a data record may have: what its table names (the header's fields,
 * or its columns' positions), and at least CSV_MIN_FIELDS, so that producers
 * may append fields the table does not read.  Records with more are bad.
 */
#define CSV_MIN_FIELDS 64

typedef struct CsvField
{
	const char *s;
	int			len;
	bool		quoted;
} CsvField;

/*
 * Split one record into fields[0 .. capacity).  Unescaped quoted fields
 * point into the payload; those with doubled quotes are copied into out.
 * Returns the number of fields or -1 with the decoder's error set.
 */
static int
csv_split(KafkaDecoder *d, const char *p, size_t len, CsvField *fields,
		  int capacity, StringInfo out)
{
	KafkaTable *t = d->table;
	const char *end = p + len;
	int			n = 0;

	/* one trailing line end is not part of the record */
	if (end > p && end[-1] == '\n')
		end--;
	if (end > p && end[-1] == '\r')
		end--;
	resetStringInfo(out);
	/* no reallocation while fields point into out */
	enlargeStringInfo(out, len + 1);

	for (;;)
	{
		CsvField   *f;

		if (n >= capacity)
		{
			kafka_decode_error(d, ERRCODE_PROGRAM_LIMIT_EXCEEDED,
							   "CSV record has more than %d fields", capacity);
			return -1;
		}
		f = &fields[n++];
		f->quoted = false;
		if (p < end && *p == t->quote)
		{
			const char *q = ++p;
			bool		copied = false;
			int			start = out->len;

			f->quoted = true;
			for (;;)
			{
				if (q >= end)
				{
					kafka_decode_error(d, ERRCODE_BAD_COPY_FILE_FORMAT,
									   "unterminated CSV quoted field");
					return -1;
				}
				if (*q == t->quote)
				{
					if (q + 1 < end && q[1] == t->quote)
					{
						/* doubled quote: copy what we have */
						appendBinaryStringInfo(out, p, q - p);
						appendStringInfoChar(out, t->quote);
						copied = true;
						q += 2;
						p = q;
						continue;
					}
					break;
				}
				q++;
			}
			if (copied)
			{
				appendBinaryStringInfo(out, p, q - p);
				f->s = out->data + start;
				f->len = out->len - start;
			}
			else
			{
				f->s = p;
				f->len = q - p;
			}
			p = q + 1;
			if (p < end && *p != t->delimiter)
			{
				kafka_decode_error(d, ERRCODE_BAD_COPY_FILE_FORMAT,
								   "unexpected character after CSV quoted field %d", n);
				return -1;
			}
		}
		else
		{
			const char *q = p;

			while (q < end && *q != t->delimiter)
				q++;
			f->s = p;
			f->len = q - p;
			p = q;
		}
		if (p >= end)
			break;
		p++;					/* the delimiter */
	}
	return n;
}

/*
 * A numeric field option is a 1-based position; without a header, the
 * other fields are taken in column order.
 */
static void
prepare_csv(KafkaTable *t)
{
	for (int i = 0; i < t->ndata; i++)
	{
		KafkaColumn *c = t->data[i];

		if (strspn(c->field, "0123456789") == c->field_len)
			c->csv_position = atoi(c->field) - 1;
		if (!t->header && c->csv_position < 0)
			c->csv_position = i;
	}
}

/* How many fields a data record of this decoder's table may have. */
static int
csv_capacity(KafkaDecoder *d)
{
	KafkaTable *t = d->table;
	int			capacity = Max(CSV_MIN_FIELDS, d->header_fields);

	for (int i = 0; i < t->ndata; i++)
		capacity = Max(capacity, t->data[i]->csv_position + 1);
	return Min(capacity, MAX_CSV_FIELDS);
}

static bool
decode_csv(KafkaDecoder *d, const char *p, size_t len,
		   Datum *values, bool *nulls)
{
	KafkaTable *t = d->table;
	CsvField	fields[CSV_MIN_FIELDS];
	CsvField   *f = fields;
	int			capacity = csv_capacity(d);
	int			n;
	int			nulllen = strlen(t->null_string);
	bool		ok = true;

	if (capacity > lengthof(fields))
		f = palloc(sizeof(CsvField) * capacity);
	n = csv_split(d, p, len, f, capacity, &d->buf);
	if (n < 0)
	{
		if (f != fields)
			pfree(f);
		return false;
	}
	for (int i = 0; i < t->ndata && ok; i++)
	{
		KafkaColumn *c = t->data[i];
		CsvField   *fld;

		if (c->csv_position < 0 || c->csv_position >= n)
			continue;
		fld = &f[c->csv_position];
		if (!fld->quoted && fld->len == nulllen &&
			memcmp(fld->s, t->null_string, nulllen) == 0)
			continue;
		ok = kafka_convert_value(d, c, fld->s, fld->len, true,
								 &values[c->attnum - 1]);
		if (ok)
			nulls[c->attnum - 1] = false;
	}
	if (f != fields)
		pfree(f);
	return ok;
}

/*
 * Resolve column positions from a header record.  Required columns that
 * are missing are an ERROR naming all of them; other missing columns
 * read as NULL.
 */
static void
read_header(KafkaDecoder *d, const char *p, size_t len)
{
	KafkaTable *t = d->table;
	CsvField   *f = palloc(sizeof(CsvField) * MAX_CSV_FIELDS);
	StringInfoData buf;
	StringInfoData missing;
	int			n;
	int			nmissing = 0;

	initStringInfo(&buf);
	initStringInfo(&missing);
	n = csv_split(d, p, len, f, MAX_CSV_FIELDS, &buf);
	if (n < 0)
		ereport(ERROR,
				(errcode(d->errcode),
				 errmsg("invalid CSV header of Kafka topic \"%s\": %s",
						t->topic, d->errmsg)));
	for (int i = 0; i < t->ndata; i++)
	{
		KafkaColumn *c = t->data[i];

		if (strspn(c->field, "0123456789") == c->field_len)
			continue;			/* numbered: position fixed */
		c->csv_position = -1;
		for (int j = 0; j < n; j++)
			if (f[j].len == c->field_len && memcmp(f[j].s, c->field, f[j].len) == 0)
			{
				c->csv_position = j;
				break;
			}
		if (c->csv_position < 0 && c->required)
		{
			appendStringInfo(&missing, "%s\"%s\"", nmissing > 0 ? ", " : "", c->field);
			nmissing++;
		}
	}
	if (nmissing > 0)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("CSV header of Kafka topic \"%s\" lacks required %s %s",
						t->topic, nmissing == 1 ? "column" : "columns", missing.data),
				 errdetail("The header is: %s", kafka_excerpt(p, len, 200))));
	d->header_line = palloc(len + 1);
	memcpy(d->header_line, p, len);
	d->header_len = len;
	d->header_fields = n;
}

/* ----------------------------------------------------------------
 * CSV encoding
 * ----------------------------------------------------------------
 */

static void
append_csv_field(KafkaTable *t, StringInfo out, const char *s, int len)
{
	bool		quote = len == 0 ||
		(strlen(t->null_string) == len && memcmp(s, t->null_string, len) == 0);

	for (int i = 0; i < len && !quote; i++)
		if (s[i] == t->delimiter || s[i] == t->quote || s[i] == '\n' || s[i] == '\r')
			quote = true;
	if (!quote)
	{
		appendBinaryStringInfo(out, s, len);
		return;
	}
	appendStringInfoChar(out, t->quote);
	for (int i = 0; i < len; i++)
	{
		if (s[i] == t->quote)
			appendStringInfoChar(out, t->quote);
		appendStringInfoChar(out, s[i]);
	}
	appendStringInfoChar(out, t->quote);
}

static void
encode_csv(KafkaTable *t, Datum *values, bool *nulls, StringInfo out)
{
	for (int i = 0; i < t->ndata; i++)
	{
		KafkaColumn *c = t->data[i];
		Datum		v = values[c->attnum - 1];

		if (i > 0)
			appendStringInfoChar(out, t->delimiter);
		if (nulls[c->attnum - 1])
		{
			appendStringInfoString(out, t->null_string);
			continue;
		}
		if (c->conv == KAFKA_CONV_TEXT)
		{
			text	   *tx = DatumGetTextPP(v);

			append_csv_field(t, out, VARDATA_ANY(tx), VARSIZE_ANY_EXHDR(tx));
		}
		else if (c->conv == KAFKA_CONV_TIMESTAMPTZ)
		{
			StringInfoData tmp;

			initStringInfo(&tmp);
			if (c->time_unit_set)
				kafka_append_epoch(&tmp, DatumGetTimestampTz(v), c->time_unit);
			else if (!kafka_emit_iso_timestamp(&tmp, DatumGetTimestampTz(v)))
				appendStringInfoString(&tmp, kafka_value_text(c, v));
			append_csv_field(t, out, tmp.data, tmp.len);
		}
		else
		{
			char	   *s = kafka_value_text(c, v);

			append_csv_field(t, out, s, strlen(s));
		}
	}
}

const KafkaCodec kafka_csv_codec = {
	.name = "csv",
	.prepare = prepare_csv,
	.decode = decode_csv,
	.encode = encode_csv,
	.read_header = read_header,
};
