/*-------------------------------------------------------------------------
 *
 * fdw_option.c
 *	  Options of the streamkpi_kafka foreign data wrapper: validation at
 *	  CREATE/ALTER time, and loading a foreign table's options for a scan
 *	  or an insert.
 *
 *	  Server options are librdkafka properties (brokers is an alias of
 *	  bootstrap.servers); librdkafka itself checks names and values.
 *	  Secrets are accepted only in user mappings and their values are
 *	  never printed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/reloptions.h"
#include "access/table.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_foreign_server.h"
#include "catalog/pg_foreign_table.h"
#include "catalog/pg_type.h"
#include "catalog/pg_user_mapping.h"
#include "commands/defrem.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "fdw.h"

PG_FUNCTION_INFO_V1(streamkpi_kafka_validator);

static const char *const meta_names[] = {
	"", "partition", "offset", "timestamp", "key", "error", "payload"
};

static KafkaMeta
meta_from_name(const char *s)
{
	for (int i = 1; i <= KAFKA_META_PAYLOAD; i++)
		if (strcmp(s, meta_names[i]) == 0)
			return (KafkaMeta) i;
	return KAFKA_META_NONE;
}

static void
check_single_char(DefElem *def)
{
	char	   *v = defGetString(def);

	if (strlen(v) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
				 errmsg("option \"%s\" must be a single one-byte character",
						def->defname)));
}

static void
check_librdkafka_property(DefElem *def, bool in_user_mapping)
{
	const char *name = def->defname;
	char	   *value = defGetString(def);
	char	   *canonical;
	char		errbuf[512];
	rd_kafka_conf_res_t res;
	bool		ok;

	if (strcmp(name, "brokers") == 0)
		name = "bootstrap.servers";
	kafka_property_check_privilege(name);
	ok = kafka_property_check(name, value, &canonical, errbuf, sizeof(errbuf), &res);
	if (res == RD_KAFKA_CONF_UNKNOWN)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("invalid option \"%s\"", def->defname),
				 errdetail("librdkafka: %s.", errbuf),
				 errhint("Server options are \"brokers\" and librdkafka properties, spelt with dots or underscores.")));
	if (kafka_property_is_secret(canonical) && !in_user_mapping)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("option \"%s\" is a secret and is only accepted in a user mapping",
						def->defname),
				 errhint("Use CREATE USER MAPPING ... SERVER ... OPTIONS (%s '...').",
						 def->defname)));
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
				 errmsg("invalid value for option \"%s\"", def->defname),
				 kafka_property_is_secret(canonical) ? 0 :
				 errdetail("librdkafka: %s.", errbuf)));
}

/* the message formats, by the value of the table option format */
static const KafkaCodec *const kafka_codecs[] = {
	&kafka_json_codec,
	&kafka_csv_codec,
};

static const KafkaCodec *
codec_find(const char *name)
{
	for (int i = 0; i < lengthof(kafka_codecs); i++)
		if (strcmp(kafka_codecs[i]->name, name) == 0)
			return kafka_codecs[i];
	return NULL;
}

/* "json" and "csv" */
static char *
codec_names(void)
{
	StringInfoData names;

	initStringInfo(&names);
	for (int i = 0; i < lengthof(kafka_codecs); i++)
		appendStringInfo(&names, "%s\"%s\"",
						 i == 0 ? "" : i == lengthof(kafka_codecs) - 1 ? " and " : ", ",
						 kafka_codecs[i]->name);
	return names.data;
}

/* what the options of one object said so far, for the checks across them */
typedef struct OptionCheck
{
	bool		have_topic;
	const char *format;
	List	   *csv_only;		/* options only valid with format 'csv' */
	KafkaMeta	meta;
	List	   *data_only;		/* column options that exclude meta */
} OptionCheck;

static void
check_table_option(DefElem *def, OptionCheck *oc)
{
	const char *name = def->defname;

	if (strcmp(name, "topic") == 0)
	{
		if (defGetString(def)[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
					 errmsg("option \"topic\" must not be empty")));
		oc->have_topic = true;
	}
	else if (strcmp(name, "format") == 0)
	{
		oc->format = defGetString(def);
		if (codec_find(oc->format) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
					 errmsg("invalid value for option \"format\": \"%s\"", oc->format),
					 errhint("Valid formats are %s.", codec_names())));
	}
	else if (strcmp(name, "delimiter") == 0 || strcmp(name, "quote") == 0)
	{
		check_single_char(def);
		oc->csv_only = lappend(oc->csv_only, def);
	}
	else if (strcmp(name, "null") == 0)
		oc->csv_only = lappend(oc->csv_only, def);
	else if (strcmp(name, "header") == 0)
	{
		(void) defGetBoolean(def);
		oc->csv_only = lappend(oc->csv_only, def);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("invalid option \"%s\"", name),
				 errhint("Valid foreign table options are \"topic\", \"format\", \"delimiter\", \"quote\", \"null\" and \"header\".")));
}

static void
check_column_option(DefElem *def, OptionCheck *oc)
{
	const char *name = def->defname;

	if (strcmp(name, "meta") == 0)
	{
		oc->meta = meta_from_name(defGetString(def));
		if (oc->meta == KAFKA_META_NONE)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
					 errmsg("invalid value for option \"meta\": \"%s\"",
							defGetString(def)),
					 errhint("Valid values are \"partition\", \"offset\", \"timestamp\", \"key\", \"error\" and \"payload\".")));
	}
	else if (strcmp(name, "field") == 0)
	{
		if (defGetString(def)[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
					 errmsg("option \"field\" must not be empty")));
		oc->data_only = lappend(oc->data_only, def);
	}
	else if (strcmp(name, "required") == 0)
	{
		(void) defGetBoolean(def);
		oc->data_only = lappend(oc->data_only, def);
	}
	else if (strcmp(name, "time_unit") == 0)
	{
		char	   *u = defGetString(def);

		if (strcmp(u, "s") != 0 && strcmp(u, "ms") != 0 && strcmp(u, "us") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
					 errmsg("invalid value for option \"time_unit\": \"%s\"", u),
					 errhint("Valid units are \"s\", \"ms\" and \"us\".")));
		oc->data_only = lappend(oc->data_only, def);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("invalid option \"%s\"", name),
				 errhint("Valid column options are \"meta\", \"field\", \"required\" and \"time_unit\".")));
}

/*
 * streamkpi_kafka_validator(options text[], catalog oid)
 */
Datum
streamkpi_kafka_validator(PG_FUNCTION_ARGS)
{
	List	   *options = untransformRelOptions(PG_GETARG_DATUM(0));
	Oid			catalog = PG_GETARG_OID(1);
	ListCell   *lc;
	OptionCheck oc = {.format = "json"};

	foreach(lc, options)
	{
		DefElem    *def = (DefElem *) lfirst(lc);

		if (catalog == ForeignServerRelationId)
			check_librdkafka_property(def, false);
		else if (catalog == UserMappingRelationId)
			check_librdkafka_property(def, true);
		else if (catalog == ForeignTableRelationId)
			check_table_option(def, &oc);
		else if (catalog == AttributeRelationId)
			check_column_option(def, &oc);
		else
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("invalid option \"%s\"", def->defname),
					 errhint("The foreign data wrapper streamkpi_kafka itself takes no options.")));
	}

	if (catalog == ForeignTableRelationId)
	{
		if (!oc.have_topic)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
					 errmsg("option \"topic\" is required for a Kafka foreign table")));
		if (strcmp(oc.format, "csv") != 0 && oc.csv_only != NIL)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("option \"%s\" is only valid with format 'csv'",
							((DefElem *) linitial(oc.csv_only))->defname)));
	}
	if (catalog == AttributeRelationId && oc.meta != KAFKA_META_NONE &&
		oc.data_only != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("option \"%s\" cannot be combined with option \"meta\"",
						((DefElem *) linitial(oc.data_only))->defname)));

	PG_RETURN_VOID();
}

static KafkaProperty *
make_property(DefElem *def)
{
	KafkaProperty *p = palloc0(sizeof(KafkaProperty));
	char		errbuf[512];
	rd_kafka_conf_res_t res;
	const char *name = def->defname;

	if (strcmp(name, "brokers") == 0)
		name = "bootstrap.servers";
	p->value = defGetString(def);
	(void) kafka_property_check(name, p->value, &p->name, errbuf, sizeof(errbuf), &res);
	p->secret = kafka_property_is_secret(p->name);
	return p;
}

/*
 * librdkafka properties for a server: its options, then those of the user
 * mapping of userid (or PUBLIC), when there is one.
 */
List *
kafka_server_props(Oid serverid, Oid userid)
{
	ForeignServer *server = GetForeignServer(serverid);
	List	   *props = NIL;
	ListCell   *lc;
	HeapTuple	tp;

	foreach(lc, server->options)
		props = lappend(props, make_property(lfirst(lc)));

	tp = SearchSysCache2(USERMAPPINGUSERSERVER, ObjectIdGetDatum(userid),
						 ObjectIdGetDatum(serverid));
	if (!HeapTupleIsValid(tp))
		tp = SearchSysCache2(USERMAPPINGUSERSERVER, ObjectIdGetDatum(InvalidOid),
							 ObjectIdGetDatum(serverid));
	if (HeapTupleIsValid(tp))
	{
		bool		isnull;
		Datum		d = SysCacheGetAttr(USERMAPPINGUSERSERVER, tp,
										Anum_pg_user_mapping_umoptions, &isnull);

		if (!isnull)
			foreach(lc, untransformRelOptions(d))
				props = lappend(props, make_property(lfirst(lc)));
		ReleaseSysCache(tp);
	}
	return props;
}

static void
check_meta_type(KafkaColumn *c)
{
	bool		ok;

	switch (c->meta)
	{
		case KAFKA_META_PARTITION:
		case KAFKA_META_OFFSET:
			ok = c->typid == INT2OID || c->typid == INT4OID || c->typid == INT8OID;
			break;
		case KAFKA_META_TIMESTAMP:
			ok = c->typid == TIMESTAMPTZOID || c->typid == TIMESTAMPOID ||
				c->typid == INT8OID;
			break;
		case KAFKA_META_KEY:
		case KAFKA_META_PAYLOAD:
			ok = c->typid == TEXTOID || c->typid == BYTEAOID || c->typid == VARCHAROID;
			break;
		case KAFKA_META_ERROR:
			ok = c->typid == TEXTOID || c->typid == VARCHAROID;
			break;
		default:
			ok = true;
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("column \"%s\" with meta '%s' cannot be of type %s",
						c->name, meta_names[c->meta], format_type_be(c->typid)),
				 errhint("partition and offset are integers, timestamp is timestamptz, "
						 "timestamp or bigint (ms), key and payload are text or bytea, "
						 "error is text.")));
}

static KafkaConv
conv_for_type(Oid typid, int32 typmod)
{
	switch (typid)
	{
		case TEXTOID:
			return KAFKA_CONV_TEXT;
		case VARCHAROID:
			return typmod < 0 ? KAFKA_CONV_TEXT : KAFKA_CONV_INPUT;
		case INT2OID:
			return KAFKA_CONV_INT2;
		case INT4OID:
			return KAFKA_CONV_INT4;
		case INT8OID:
			return KAFKA_CONV_INT8;
		case FLOAT4OID:
			return KAFKA_CONV_FLOAT4;
		case FLOAT8OID:
			return KAFKA_CONV_FLOAT8;
		case BOOLOID:
			return KAFKA_CONV_BOOL;
		case TIMESTAMPTZOID:
			return KAFKA_CONV_TIMESTAMPTZ;
		case DATEOID:
			return KAFKA_CONV_DATE;
		case JSONBOID:
			return KAFKA_CONV_JSONB;
		case TEXTARRAYOID:
			return KAFKA_CONV_TEXTARRAY;
		default:
			return KAFKA_CONV_INPUT;
	}
}

/*
 * Everything a scan or an insert needs to know about a foreign table.
 * Allocated in the current memory context.
 */
KafkaTable *
kafka_table_load(Oid relid, bool for_scan)
{
	KafkaTable *t = palloc0(sizeof(KafkaTable));
	ForeignTable *ft = GetForeignTable(relid);
	Relation	rel;
	TupleDesc	tupdesc;
	ListCell   *lc;

	t->relid = relid;
	t->relname = get_rel_name(relid);
	t->serverid = ft->serverid;
	t->codec = &kafka_json_codec;
	t->delimiter = ',';
	t->quote = '"';
	t->null_string = "";
	foreach(lc, ft->options)
	{
		DefElem    *def = (DefElem *) lfirst(lc);

		if (strcmp(def->defname, "topic") == 0)
			t->topic = defGetString(def);
		else if (strcmp(def->defname, "format") == 0)
			t->codec = codec_find(defGetString(def));
		else if (strcmp(def->defname, "delimiter") == 0)
			t->delimiter = defGetString(def)[0];
		else if (strcmp(def->defname, "quote") == 0)
			t->quote = defGetString(def)[0];
		else if (strcmp(def->defname, "null") == 0)
			t->null_string = defGetString(def);
		else if (strcmp(def->defname, "header") == 0)
			t->header = defGetBoolean(def);
	}

	rel = table_open(relid, AccessShareLock);
	tupdesc = RelationGetDescr(rel);
	t->natts = tupdesc->natts;
	t->cols = palloc0(sizeof(KafkaColumn) * Max(t->natts, 1));
	t->data = palloc0(sizeof(KafkaColumn *) * Max(t->natts, 1));
	for (int i = 0; i < t->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		KafkaColumn *c = &t->cols[i];
		bool		isvarlena;

		c->attnum = i + 1;
		c->csv_position = -1;
		if (att->attisdropped)
			continue;
		c->name = pstrdup(NameStr(att->attname));
		c->typid = att->atttypid;
		c->typmod = att->atttypmod;
		c->typname = format_type_be(c->typid);
		c->time_unit = USECS_PER_SEC;
		foreach(lc, GetForeignColumnOptions(relid, i + 1))
		{
			DefElem    *def = (DefElem *) lfirst(lc);

			if (strcmp(def->defname, "meta") == 0)
				c->meta = meta_from_name(defGetString(def));
			else if (strcmp(def->defname, "field") == 0)
				c->field = defGetString(def);
			else if (strcmp(def->defname, "required") == 0)
				c->required = defGetBoolean(def);
			else if (strcmp(def->defname, "time_unit") == 0)
			{
				char	   *u = defGetString(def);

				c->time_unit_set = true;
				c->time_unit = strcmp(u, "ms") == 0 ? 1000 :
					strcmp(u, "us") == 0 ? 1 : USECS_PER_SEC;
			}
		}
		if (c->meta != KAFKA_META_NONE)
		{
			check_meta_type(c);
			if (t->meta_attno[c->meta] != 0)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
						 errmsg("foreign table \"%s\" has more than one column with meta '%s'",
								t->relname, meta_names[c->meta])));
			t->meta_attno[c->meta] = c->attnum;
			continue;
		}
		if (c->field == NULL)
			c->field = c->name;
		c->field_len = strlen(c->field);
		c->conv = conv_for_type(c->typid, c->typmod);
		getTypeInputInfo(c->typid, &c->infunc.fn_oid, &c->ioparam);
		fmgr_info(c->infunc.fn_oid, &c->infunc);
		getTypeOutputInfo(c->typid, &c->outfunc.fn_oid, &isvarlena);
		c->outvarlena = isvarlena;
		fmgr_info(c->outfunc.fn_oid, &c->outfunc);
		t->data[t->ndata++] = c;
	}
	table_close(rel, AccessShareLock);

	if (t->codec->prepare)
		t->codec->prepare(t);

	if (t->meta_attno[KAFKA_META_ERROR] != 0)
		for (int i = 0; i < t->ndata; i++)
			if (t->data[i]->conv == KAFKA_CONV_INPUT ||
				t->data[i]->conv == KAFKA_CONV_JSONB ||
				t->data[i]->conv == KAFKA_CONV_TIMESTAMPTZ ||
				t->data[i]->conv == KAFKA_CONV_DATE)
				t->needs_subxact = true;

	t->props = kafka_server_props(t->serverid, GetUserId());
	(void) for_scan;
	return t;
}
