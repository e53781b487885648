/*-------------------------------------------------------------------------
 *
 * sparkify_unquote.c
 *	  streamkpi._sparkify_unquote(s): Sparkify wraps userAgent in literal
 *	  double quotes; this strips them (a string of at least two characters
 *	  that starts and ends with '"' loses its first and last character;
 *	  any other string stays as it is).
 *
 *	  In C because the events pipeline calls it on every event, and the same
 *	  thing in SQL (length, left, right, substr) counts the characters of
 *	  the string four times: about 17,000 instructions per event, as much as
 *	  decoding the event's JSON.  '"' is one byte in every server encoding
 *	  and never part of a multibyte character, so bytes decide it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(streamkpi_sparkify_unquote);

Datum
streamkpi_sparkify_unquote(PG_FUNCTION_ARGS)
{
	text	   *s = PG_GETARG_TEXT_PP(0);
	const char *bytes = VARDATA_ANY(s);
	int			len = VARSIZE_ANY_EXHDR(s);

	if (len >= 2 && bytes[0] == '"' && bytes[len - 1] == '"')
		PG_RETURN_TEXT_P(cstring_to_text_with_len(bytes + 1, len - 2));
	PG_RETURN_TEXT_P(s);
}
