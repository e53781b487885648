/*-------------------------------------------------------------------------
 *
 * sparkify_track_id.c
 *	  streamkpi.sparkify_track_id(artist, title): the id of a Sparkify song
 *	  in streamkpi.tracks and listens, 'sparkify:' and the md5 (hex) of
 *	  artist, a 0x1f byte and title (NULL counts as empty).
 *
 *	  The same value as md5() in SQL, at a fraction of its cost: md5()
 *	  looks the digest up in OpenSSL on every call, which costs several
 *	  times the digest of a short string, and every song play of a batch
 *	  needs one.  Here the digest is looked up once per backend.  The
 *	  app_events trigger (sparkify_apply.c) calls sparkify_track_id_text.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "fmgr.h"
#include "utils/builtins.h"

#include "sparkify.h"

PG_FUNCTION_INFO_V1(streamkpi_sparkify_track_id);

#define TRACK_ID_PREFIX "sparkify:"
#define MD5_BYTES 16

/* the digest and a context to run it in, for the life of the backend */
static EVP_MD *md5_digest = NULL;
static EVP_MD_CTX *md5_context = NULL;

static void
md5_init(void)
{
	if (md5_digest == NULL)
		md5_digest = EVP_MD_fetch(NULL, "MD5", NULL);
	if (md5_context == NULL)
		md5_context = EVP_MD_CTX_new();
	if (md5_digest == NULL || md5_context == NULL || !EVP_DigestInit_ex2(md5_context, md5_digest, NULL))
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not compute an MD5 digest for a Sparkify track id"),
				 errdetail("OpenSSL did not provide the MD5 digest.")));
}

static void
md5_add(const char *bytes, size_t len)
{
	if (!EVP_DigestUpdate(md5_context, bytes, len))
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not compute an MD5 digest for a Sparkify track id")));
}

/* the id of artist and title (NULL counts as empty), as text */
text *
sparkify_track_id_text(const text *artist, const text *title)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char digest[MD5_BYTES];
	unsigned int digest_len = 0;
	char		id[sizeof(TRACK_ID_PREFIX) - 1 + 2 * MD5_BYTES];
	char	   *out;

	md5_init();
	if (artist != NULL)
		md5_add(VARDATA_ANY(artist), VARSIZE_ANY_EXHDR(artist));
	md5_add("\x1f", 1);
	if (title != NULL)
		md5_add(VARDATA_ANY(title), VARSIZE_ANY_EXHDR(title));
	if (!EVP_DigestFinal_ex(md5_context, digest, &digest_len) || digest_len != MD5_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not compute an MD5 digest for a Sparkify track id")));

	memcpy(id, TRACK_ID_PREFIX, sizeof(TRACK_ID_PREFIX) - 1);
	out = id + sizeof(TRACK_ID_PREFIX) - 1;
	for (int i = 0; i < MD5_BYTES; i++)
	{
		*out++ = hex[digest[i] >> 4];
		*out++ = hex[digest[i] & 0x0f];
	}
	return cstring_to_text_with_len(id, sizeof(id));
}

Datum
streamkpi_sparkify_track_id(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(sparkify_track_id_text(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0),
											PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1)));
}
