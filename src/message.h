/*-------------------------------------------------------------------------
 *
 * message.h
 *	  Internals shared by the JSON and CSV message codecs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_MESSAGE_H
#define STREAMKPI_MESSAGE_H

#include "utils/date.h"

#include "fdw.h"

/* in message_json.c */
extern void kafka_append_json_string(StringInfo out, const char *s, int len);
extern bool kafka_emit_iso_timestamp(StringInfo out, TimestampTz ts);
extern void kafka_append_epoch(StringInfo out, TimestampTz ts, int64 unit);
extern bool kafka_emit_iso_date(StringInfo out, DateADT d);
extern char *kafka_value_text(KafkaColumn *c, Datum v);

#endif							/* STREAMKPI_MESSAGE_H */
