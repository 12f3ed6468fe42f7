/*
 * rurl.h - parse Redis URLs: redis://[[user]:password@]host[:port][/db].
 *
 * rediss:// (TLS) is refused with a clear message: the hiredis 0.14 that Debian 12
 * ships has no TLS support. Credentials are percent-decoded. rurl_redact() gives the
 * form that may be logged.
 */
#ifndef MI_RURL_H
#define MI_RURL_H

#include "err.h"

struct rurl {
    char host[256];
    int port;
    int db;
    char user[128];     /* empty: default user */
    char password[256]; /* empty: no AUTH; never log */
};

/**
 * rurl_parse() - parse @url into @out.
 * Return: 0, or 1 with @err saying what is wrong (the URL's password is not quoted).
 */
int rurl_parse(const char *url, struct rurl *out, struct mi_err *err) MI_MUSTCHECK;

/** rurl_redact() - "redis://host:port/db" (with "user:***@" when credentials exist). */
void rurl_redact(const struct rurl *u, char *out, size_t outlen);

#endif
