/*-------------------------------------------------------------------------
 *
 * fdw.h
 *	  The streamkpi_kafka foreign data wrapper: table options, planning,
 *	  scans and inserts, and the scan interface a pipeline worker uses to
 *	  make one scan read exactly the offsets of its batch.  The table's
 *	  shape and the message codecs are in message.h.
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
#include "nodes/primnodes.h"

#include "kafka_client.h"
#include "message.h"

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

/* what the pushed-down restrictions of a scan allow, once evaluated */
typedef struct KafkaPushdown
{
	int32		npartitions;
	bool	   *want;			/* by partition */
	bool		impossible;		/* no message can qualify */
	int64		lo;				/* offsets [lo, hi) */
	int64		hi;
	int64		first_ms;		/* first Kafka timestamp; PG_INT64_MIN: any */
} KafkaPushdown;

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

/* in fdw_pushdown.c */
extern int64 datum_to_int64(Datum d, Oid type);
extern bool kafka_is_integer_type(Oid type);
extern int	kafka_int_array_elements(Datum array, int64 **values, bool **nulls);
extern Var *kafka_base_var(Node *n, Index relid);
extern int	kafka_commute_strategy(int strategy);
extern void kafka_pushdown_init(KafkaPushdown *pd, int32 npartitions);
extern void kafka_pushdown_apply(KafkaPushdown *pd, KafkaPushKind kind,
								 int strategy, Oid type, Datum value,
								 bool isnull);
extern int	kafka_pushdown_partitions(KafkaPushdown *pd, int32 *parts);
extern bool kafka_pushdown_range(KafkaPushdown *pd, int32 p, int64 low,
								 int64 high, int64 ts_offset, KafkaRange *r);

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
