/*-------------------------------------------------------------------------
 *
 * fdw.h
 *	  The streamkpi_kafka foreign data wrapper: table options, message
 *	  decoding and encoding, and the scan interface a pipeline worker uses
 *	  to make one scan read exactly the offsets of its batch.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_FDW_H
#define STREAMKPI_FDW_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "commands/explain.h"
#include "foreign/fdwapi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"

#include "kafka_client.h"

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

typedef enum KafkaFormat
{
	KAFKA_FORMAT_JSON,
	KAFKA_FORMAT_CSV
} KafkaFormat;

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

typedef struct KafkaTable
{
	Oid			relid;
	char	   *relname;
	Oid			serverid;
	char	   *topic;
	KafkaFormat format;
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
	char	   *header_line;	/* CSV: header message, skipped as a row */
	int			header_len;
	int			header_fields;	/* CSV: fields in the header message */
	/* the last error */
	int			errcode;
	char	   *errmsg;
} KafkaDecoder;

/* A range of offsets [start, end) of one partition. */
typedef struct KafkaRange
{
	int32		partition;
	int64		start;
	int64		end;
} KafkaRange;

typedef enum KafkaPushKind
{
	KAFKA_PUSH_PARTITION = 1,
	KAFKA_PUSH_OFFSET,
	KAFKA_PUSH_TIMESTAMP
} KafkaPushKind;

/*
 * Called for each message that cannot be decoded, when set (a pipeline
 * worker's dead letters): the message is then skipped instead of being
 * an error row or an ERROR.
 */
typedef void (*KafkaBadMessageHook) (Oid relid, const rd_kafka_message_t *msg,
									 int sqlstate, const char *error);

/* in fdw_option.c */
extern KafkaTable *kafka_table_load(Oid relid, bool for_scan);
extern List *kafka_server_props(Oid serverid, Oid userid);

/* in message_json.c */
extern bool kafka_decode_json(KafkaDecoder *d, const char *p, size_t len,
							  Datum *values, bool *nulls);
extern void kafka_encode_json(KafkaTable *t, Datum *values, bool *nulls,
							  StringInfo out);

/* in message_csv.c */
extern bool kafka_decode_csv(KafkaDecoder *d, const char *p, size_t len,
							 Datum *values, bool *nulls);
extern void kafka_encode_csv(KafkaTable *t, Datum *values, bool *nulls,
							 StringInfo out);
extern void kafka_csv_set_header(KafkaDecoder *d, const char *p, size_t len);

/* in message_json.c: shared conversions */
extern KafkaDecoder *kafka_decoder_create(KafkaTable *t);
extern bool kafka_decode_message(KafkaDecoder *d, const char *payload,
								 size_t len, Datum *values, bool *nulls);
extern bool kafka_convert_value(KafkaDecoder *d, KafkaColumn *col,
								const char *s, int len, bool quoted,
								Datum *value);
extern bool kafka_decode_error(KafkaDecoder *d, int sqlstate,
							   const char *fmt,...) pg_attribute_printf(3, 4);

/* in fdw_scan.c: planning and executor callbacks */
extern void kafka_scan_routines(FdwRoutine *r);
extern void kafka_explain_ranges(ForeignScanState *node, ExplainState *es);

/*
 * in fdw_scan.c: the pipeline worker's handle on a scan.  Until cleared,
 * every scan of relid reads exactly the given KafkaRanges (no watermark
 * queries, pushdown ignored), using handle h (a consumer created with
 * kafka_handle_create for the table's topic) instead of its own when h is
 * not NULL, and calls hook for undecodable messages when hook is not NULL.
 */
extern void kafka_scan_set_ranges(Oid relid, List *ranges, KafkaHandle *h,
								  KafkaBadMessageHook hook);
extern void kafka_scan_clear_ranges(void);
/* the ranges the last started scan read, copied into the current context */
extern List *kafka_scan_last_ranges(void);

/* in fdw_modify.c */
extern void kafka_modify_routines(FdwRoutine *r);

#endif							/* STREAMKPI_FDW_H */
