/*
 * objkey.h - object keys and stored-URL strings, as pure functions.
 *
 * The contract's object key is "media/{messageId}/{providerMediaId}" and its stored
 * URLs are "s3://BUCKET/KEY", "r2://BUCKET/KEY" and "file://DIR/KEY". The ids come
 * from job data anyone who can write to Redis controls, so a key is only ever built
 * from validated ids and every store refuses a key objkey_validate() refuses before
 * any I/O: nothing here may let a key escape a directory root or confuse a store.
 *
 * Allowed ids (no encoding is ever needed for them in a URL path or a file name):
 *   messageId        [A-Za-z0-9_-]{1,128}          (digits, or a Prisma cuid/uuid)
 *   providerMediaId  [A-Za-z0-9_.-]{1,256}, not starting with '.'
 * A key is exactly "media/" messageId "/" providerMediaId, at most OBJKEY_MAX bytes.
 */
#ifndef MI_OBJKEY_H
#define MI_OBJKEY_H

#include <stddef.h>

#include "err.h"

#define OBJKEY_MAX 1024                 /* longest key, in bytes */
#define OBJKEY_BUF (OBJKEY_MAX + 1)     /* a buffer that holds any key */
#define OBJKEY_MESSAGE_ID_MAX 128
#define OBJKEY_MEDIA_ID_MAX 256
#define OBJKEY_WHERE_MAX 4096           /* longest bucket or directory in a stored URL */
#define OBJKEY_PREFIX "media/"

/* Positive return code of this module: the input is refused (err says why). */
#define OBJKEY_E_INVALID 1

enum objkey_id_kind { OBJKEY_MESSAGE_ID = 0, OBJKEY_MEDIA_ID };

enum objkey_scheme { OBJKEY_S3 = 0, OBJKEY_R2, OBJKEY_FILE };

/* A parsed stored URL. */
struct objkey_url {
    enum objkey_scheme scheme;
    char where[OBJKEY_WHERE_MAX + 1];   /* bucket (s3, r2) or directory (file) */
    char key[OBJKEY_BUF];               /* "media/..." */
};

/**
 * objkey_validate_id() - check one id (see the rules above).
 * @id: may be NULL (refused).
 * Return: 0 or OBJKEY_E_INVALID with @err (may be NULL) saying which rule failed.
 */
int objkey_validate_id(enum objkey_id_kind kind, const char *id, struct mi_err *err);

/**
 * objkey_build() - "media/{message_id}/{media_id}" into @out after validating both ids.
 * @out: OBJKEY_BUF bytes; "" on error.
 * Return: 0 or OBJKEY_E_INVALID (@err names the id and the rule).
 */
int objkey_build(const char *message_id, const char *media_id, char out[OBJKEY_BUF],
                 struct mi_err *err);

/**
 * objkey_validate() - accept exactly the keys objkey_build() makes. Refuses, with a
 * message naming the problem: NULL, empty, over OBJKEY_MAX, not under "media/",
 * absolute paths, empty segments, "." and ".." segments, backslashes, control
 * characters, '%' (no percent-encoded forms: "%2e%2e", "%2f", "%00"...), any other
 * byte outside the id alphabets, and a segment count other than three.
 * Return: 0 or OBJKEY_E_INVALID.
 */
int objkey_validate(const char *key, struct mi_err *err);

/**
 * objkey_validate_n() - objkey_validate() for @len bytes that may contain NUL bytes
 * (a key from JSON, where "\u0000" is legal): an embedded NUL is refused.
 */
int objkey_validate_n(const char *key, size_t len, struct mi_err *err);

/**
 * objkey_url_format() - the stored URL of @key: "s3://@where/@key", "r2://@where/@key"
 * or "file://@where/@key" (trailing '/' of a directory dropped; a directory is used as
 * given, so pass it absolute). @out: @outsz bytes.
 * Return: 0; OBJKEY_E_INVALID for a refused key, bucket or directory; -ENOSPC when
 * @out is too small.
 */
int objkey_url_format(enum objkey_scheme scheme, const char *where, const char *key,
                      char *out, size_t outsz, struct mi_err *err);

/**
 * objkey_url_parse() - split a stored URL back into scheme, bucket or directory, key.
 * Buckets: [A-Za-z0-9._-]{1,255}, not starting with '.'. Directories: no control
 * characters; the key is the last three segments. Every part is validated.
 * Return: 0 or OBJKEY_E_INVALID (@out is then zeroed).
 */
int objkey_url_parse(const char *url, struct objkey_url *out, struct mi_err *err);

/** objkey_scheme_name() - "s3", "r2" or "file". */
const char *objkey_scheme_name(enum objkey_scheme scheme);

#endif
