/*
 * pg_url.h - turn the app's Prisma-style DATABASE_URL into libpq connection parameters.
 *
 * Prisma accepts postgresql:// and postgres:// URLs with query parameters that libpq
 * does not know; libpq 15 refuses the whole URL when it meets one (PQconninfoParse:
 * 'invalid URI query parameter: "schema"'). This module parses the URL itself and
 * produces keyword/value arrays for PQconnectStartParams():
 *
 *   - user, password, host(s), port(s) and database name, percent-decoded; IPv6 hosts
 *     in brackets; a host list "h1:5432,h2:5433"; an empty host with ?host=/socket/dir
 *     for a unix socket;
 *   - libpq's own query parameters (sslmode, sslrootcert, connect_timeout,
 *     application_name, options, ...) are passed through unchanged;
 *   - ?schema=NAME becomes options=-csearch_path="NAME" (appended to any options);
 *   - the other Prisma-only parameters (connection_limit, pool_timeout, pgbouncer,
 *     socket_timeout, statement_cache_size, sslaccept, sslidentity, ...) are set aside:
 *     connection_limit is kept as a pool-size hint, and the names of the others can be
 *     logged so an operator sees what was ignored;
 *   - any other parameter is an error, so that a typo such as "sslmdoe=require" is not
 *     silently dropped.
 *
 * Pure: no I/O, no libpq calls. The password is never copied into an error message;
 * pg_url_redact() gives the form of a URL that may be logged.
 */
#ifndef MI_PG_URL_H
#define MI_PG_URL_H

#include <stddef.h>

#include "err.h"

/* Positive return code of pg_url_parse(): the URL is malformed (err says why). */
#define PG_URL_EINVAL 1

/* The most keyword/value pairs a parsed URL can produce (libpq knows about 40). */
#define PG_URL_MAX_PARAMS 48

/* Longest DATABASE_URL accepted, in bytes. */
#define PG_URL_MAX_LEN 8192

struct pg_url;

/**
 * pg_url_parse() - parse a Prisma-style DATABASE_URL.
 * @url: the URL (borrowed; only read during the call).
 * @out: receives a new object on success (caller frees with pg_url_free()); untouched
 *       on failure.
 * @err: filled on failure with a message naming DATABASE_URL and the part that is wrong
 *       (never the password).
 * Return: 0, PG_URL_EINVAL for a malformed URL, -ENOMEM.
 */
int pg_url_parse(const char *url, struct pg_url **out, struct mi_err *err) MI_MUSTCHECK;

/** pg_url_free() - free @u; NULL is a no-op. */
void pg_url_free(struct pg_url *u);

/**
 * pg_url_keywords() / pg_url_values() - NULL-terminated arrays for
 * PQconnectStartParams(keywords, values, 0). Borrowed: valid until pg_url_free().
 * The values include the password: never log them.
 */
const char *const *pg_url_keywords(const struct pg_url *u);
const char *const *pg_url_values(const struct pg_url *u);

/**
 * pg_url_get() - the value of libpq keyword @kw (e.g. "host", "options"), or NULL when
 * the URL does not set it. Borrowed: valid until pg_url_free().
 */
const char *pg_url_get(const struct pg_url *u, const char *kw);

/** pg_url_connection_limit() - Prisma's ?connection_limit=N, or 0 when absent. */
int pg_url_connection_limit(const struct pg_url *u);

/** pg_url_schema() - the decoded ?schema= value, or NULL when absent (borrowed). */
const char *pg_url_schema(const struct pg_url *u);

/**
 * pg_url_ignored() - comma-separated names of the Prisma-only parameters that were set
 * aside ("pool_timeout,pgbouncer"), or "" when none. Borrowed; safe to log.
 */
const char *pg_url_ignored(const struct pg_url *u);

/**
 * pg_url_conninfo() - write the parameters as a libpq conninfo string
 * ("host='h' port='5432' ...", values quoted and escaped) into @out.
 * The string contains the password: never log it.
 * Return: 0, or -ENOSPC when @outlen is too small (then @out holds "").
 */
int pg_url_conninfo(const struct pg_url *u, char *out, size_t outlen) MI_MUSTCHECK;

/**
 * pg_url_redact() - the URL as it may be logged: the password in the user-info part and
 * the values of ?password= and ?sslpassword= are replaced by "***". Works on any string,
 * even one pg_url_parse() refuses; a string that is not a postgres URL at all becomes
 * "(not a postgresql:// URL)". @out is always NUL-terminated (truncated when short).
 */
void pg_url_redact(const char *url, char *out, size_t outlen);

#endif
