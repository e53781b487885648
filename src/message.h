/*-------------------------------------------------------------------------
 *
 * message.h
 *	  Kafka message payloads and tuples: a foreign table's columns as the
 *	  codecs see them, the decoder of one scan, the codec table, and the
 *	  conversions every codec shares.
 *
 *	  message.c holds the shared part and dispatches through the table's
 *	  codec; each format is one file (message_json.c, message_csv.c) that
 *	  depends on message.c and on nothing else of streamkpi.  A new format
 *	  is one new file and one entry in kafka_codecs[] (fdw_option.c).
 *
 *	  Only PostgreSQL's memory, error and type input/output functions are
 *	  used here: no catalog access, no SPI, no librdkafka.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_MESSAGE_H
#define STREAMKPI_MESSAGE_H

#include "postgres.h"

#include "access/attnum.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/date.h"

/* microseconds from 1970-01-01 (Kafka's and Unix's epoch) to 2000-01-01 */
#define UNIX_TO_PG_USECS ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY)

typedef enum KafkaMeta
{
	KAFKA_META_NONE = 0,		/* a data column, decoded from the payload */
	KAFKA_META_PARTITION,
	KAFKA_META_OFFSET,
	KAFKA_META_TIMESTAMP,
	KAFKA_META_KEY,
	KAFKA_META_ERROR,
	KAFKA_META_PAYLOAD
} KafkaMeta;

/* how a data column's value is converted; the fast paths never throw */
typedef enum KafkaConv
{
	KAFKA_CONV_TEXT,
	KAFKA_CONV_INT2,
	KAFKA_CONV_INT4,
	KAFKA_CONV_INT8,
	KAFKA_CONV_FLOAT4,
	KAFKA_CONV_FLOAT8,
	KAFKA_CONV_BOOL,
	KAFKA_CONV_TIMESTAMPTZ,
	KAFKA_CONV_DATE,
	KAFKA_CONV_JSONB,
	KAFKA_CONV_TEXTARRAY,
	KAFKA_CONV_INPUT			/* the type's input function (may throw) */
} KafkaConv;

typedef struct KafkaColumn
{
	AttrNumber	attnum;
	char	   *name;			/* column name */
	Oid			typid;
	int32		typmod;
	char	   *typname;		/* format_type_be(typid), for messages */
	KafkaMeta	meta;
	char	   *field;			/* JSON key or CSV header name */
	int			field_len;
	int			csv_position;	/* 0-based CSV field, -1 until known */
	bool		required;
	int64		time_unit;		/* microseconds per unit of numeric epochs */
	bool		time_unit_set;	/* produce epochs instead of ISO 8601 */
	KafkaConv	conv;
	FmgrInfo	infunc;
	Oid			ioparam;
	FmgrInfo	outfunc;
	bool		outvarlena;
} KafkaColumn;

typedef struct KafkaCodec KafkaCodec;

typedef struct KafkaTable
{
	Oid			relid;
	char	   *relname;
	Oid			serverid;
	char	   *topic;
	const KafkaCodec *codec;	/* chosen by the format option at load */
	char		delimiter;
	char		quote;
	char	   *null_string;
	bool		header;
	List	   *props;			/* KafkaProperty: server + user mapping */
	int			natts;
	KafkaColumn *cols;			/* by attnum - 1; dropped ones have name NULL */
	int			ndata;			/* data columns, in attnum order */
	KafkaColumn **data;
	int			meta_attno[KAFKA_META_PAYLOAD + 1]; /* 0 when absent */
	bool		needs_subxact;	/* error column and a throwing conversion */
} KafkaTable;

/* the decoder of one scan; reusable by a pipeline worker */
typedef struct KafkaDecoder
{
	KafkaTable *table;
	StringInfoData buf;			/* scratch for unescaped strings */
	StringInfoData buf2;
	int			next_guess;		/* JSON: the column the next key likely names */
	char	   *header_line;	/* header message, skipped as a row */
	int			header_len;
	int			header_fields;	/* CSV: fields in the header message */
	/* the last error */
	int			errcode;
	char	   *errmsg;
} KafkaDecoder;

/*
 * One message format.  decode fills the data columns of values/nulls
 * (indexed by attnum - 1, all NULL on entry) and returns false with the
 * decoder's error set for bad data, never throwing for it; encode appends
 * one row's payload.  prepare, when set, completes a freshly loaded table
 * (CSV: field positions); read_header, when set, takes the topic's header
 * message and checks it against the columns (an ERROR when it does not
 * fit).
 */
struct KafkaCodec
{
	const char *name;			/* the value of the table option format */
	void		(*prepare) (KafkaTable *t);
	bool		(*decode) (KafkaDecoder *d, const char *payload, size_t len,
						   Datum *values, bool *nulls);
	void		(*encode) (KafkaTable *t, Datum *values, bool *nulls,
						   StringInfo out);
	void		(*read_header) (KafkaDecoder *d, const char *payload, size_t len);
};

/* in message_json.c and message_csv.c */
extern const KafkaCodec kafka_json_codec;
extern const KafkaCodec kafka_csv_codec;

/* in message.c: decoding through the table's codec */
extern KafkaDecoder *kafka_decoder_create(KafkaTable *t);
extern bool kafka_decode_message(KafkaDecoder *d, const char *payload,
								 size_t len, Datum *values, bool *nulls);
extern bool kafka_is_header_message(KafkaDecoder *d, const char *payload,
									size_t len);
extern void kafka_encode_message(KafkaTable *t, Datum *values, bool *nulls,
								 StringInfo out);

/* in message.c: conversions the codecs share */
extern bool kafka_decode_error(KafkaDecoder *d, int sqlstate,
							   const char *fmt,...) pg_attribute_printf(3, 4);
extern char *kafka_excerpt(const char *s, int len, int maxlen);
extern bool kafka_convert_value(KafkaDecoder *d, KafkaColumn *col,
								const char *s, int len, bool quoted,
								Datum *value);
extern bool kafka_looks_numeric(const char *s, int len);
extern void kafka_append_json_string(StringInfo out, const char *s, int len);
extern bool kafka_emit_iso_timestamp(StringInfo out, TimestampTz ts);
extern void kafka_append_epoch(StringInfo out, TimestampTz ts, int64 unit);
extern bool kafka_emit_iso_date(StringInfo out, DateADT d);
extern char *kafka_value_text(KafkaColumn *c, Datum v);

#endif							/* STREAMKPI_MESSAGE_H */
