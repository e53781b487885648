/*-------------------------------------------------------------------------
 *
 * elog.c
 *	  ereport for the fuzzing shim: ERROR and above longjmp to the
 *	  innermost PG_TRY with the error kept for CopyErrorData; lower levels
 *	  are dropped.  One error at a time, as in a backend.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdarg.h>
#include <stdio.h>

#include "miscadmin.h"
#include "utils/memutils.h"

#include "shim.h"

sigjmp_buf *PG_exception_stack = NULL;
ErrorContextCallback *error_context_stack = NULL;
volatile sig_atomic_t InterruptPending = false;

static ErrorData current;		/* the error being built or thrown */
static bool building;

bool
errstart(int elevel, const char *domain)
{
	if (elevel < ERROR)
		return false;
	if (building)
		shim_finding("an error was raised while another was being built", &current);
	MemSet(&current, 0, sizeof(current));
	current.elevel = elevel;
	current.sqlerrcode = ERRCODE_INTERNAL_ERROR;
	current.assoc_context = ErrorContext;
	building = true;
	return true;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	current.filename = filename;
	current.lineno = lineno;
	current.funcname = funcname;
	building = false;
	if (current.elevel >= FATAL)
		shim_finding("FATAL or PANIC", &current);
	if (PG_exception_stack == NULL)
		shim_finding("an ERROR outside of any PG_TRY", &current);
	siglongjmp(*PG_exception_stack, 1);
}

void
pg_re_throw(void)
{
	if (PG_exception_stack == NULL)
		shim_finding("an ERROR outside of any PG_TRY", &current);
	siglongjmp(*PG_exception_stack, 1);
}

int
errcode(int sqlerrcode)
{
	current.sqlerrcode = sqlerrcode;
	return 0;
}

/* format into ErrorContext, where the error's strings live */
static char *
format_error_text(const char *fmt, va_list args)
{
	MemoryContext old = MemoryContextSwitchTo(ErrorContext);
	char		buf[1024];
	char	   *out;

	vsnprintf(buf, sizeof(buf), fmt, args);
	out = pstrdup(buf);
	MemoryContextSwitchTo(old);
	return out;
}

#define SET_ERROR_FIELD(field) \
	do { \
		va_list		args; \
		va_start(args, fmt); \
		current.field = format_error_text(fmt, args); \
		va_end(args); \
	} while (0)

int
errmsg(const char *fmt,...)
{
	SET_ERROR_FIELD(message);
	return 0;
}

int
errmsg_internal(const char *fmt,...)
{
	SET_ERROR_FIELD(message);
	return 0;
}

int
errdetail(const char *fmt,...)
{
	SET_ERROR_FIELD(detail);
	return 0;
}

int
errdetail_internal(const char *fmt,...)
{
	SET_ERROR_FIELD(detail);
	return 0;
}

int
errhint(const char *fmt,...)
{
	SET_ERROR_FIELD(hint);
	return 0;
}

int
errcontext_msg(const char *fmt,...)
{
	SET_ERROR_FIELD(context);
	return 0;
}

int
set_errcontext_domain(const char *domain)
{
	return 0;
}

ErrorData *
CopyErrorData(void)
{
	ErrorData  *copy = palloc(sizeof(ErrorData));

	if (CurrentMemoryContext == ErrorContext)
		shim_finding("CopyErrorData in ErrorContext", &current);
	*copy = current;
	if (copy->message)
		copy->message = pstrdup(copy->message);
	if (copy->detail)
		copy->detail = pstrdup(copy->detail);
	if (copy->hint)
		copy->hint = pstrdup(copy->hint);
	if (copy->context)
		copy->context = pstrdup(copy->context);
	copy->assoc_context = CurrentMemoryContext;
	return copy;
}

void
FlushErrorState(void)
{
	MemSet(&current, 0, sizeof(current));
	MemoryContextReset(ErrorContext);
}

ErrorData *
shim_caught_error(void)
{
	return &current;
}

void
ProcessInterrupts(void)
{
	InterruptPending = false;
}

/* the five characters of a SQLSTATE */
static const char *
sqlstate_text(int sqlerrcode)
{
	static char buf[6];

	for (int i = 0; i < 5; i++)
	{
		buf[i] = PGUNSIXBIT(sqlerrcode);
		sqlerrcode >>= 6;
	}
	buf[5] = '\0';
	return buf;
}

/*
 * Something a backend must never do: report it and abort, which libFuzzer
 * records as a crash with its reproducer.
 */
void
shim_finding(const char *what, const ErrorData *edata)
{
	fprintf(stderr, "FUZZ FINDING: %s\n", what);
	if (edata != NULL)
		fprintf(stderr, "  SQLSTATE %s: %s\n  detail: %s\n  at %s:%d (%s)\n",
				sqlstate_text(edata->sqlerrcode),
				edata->message ? edata->message : "(no message)",
				edata->detail ? edata->detail : "(none)",
				edata->filename ? edata->filename : "?", edata->lineno,
				edata->funcname ? edata->funcname : "?");
	abort();
}
