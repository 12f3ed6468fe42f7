#include "rurl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Percent-decode [s, s+n) into out (size outlen). Return false on bad escapes, NUL or overflow. */
static bool pct_decode(const char *s, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return false;
            int h = mi_hexval(s[i + 1]), l = mi_hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return false;
            c = (char)(h * 16 + l);
            if (!c)
                return false;
            i += 2;
        }
        if (o + 1 >= outlen)
            return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

int rurl_parse(const char *url, struct rurl *out, struct mi_err *err)
{
    static const char scheme[] = "redis://";
    memset(out, 0, sizeof(*out));
    out->port = 6379;

    if (!url || !*url)
        return mi_err_set(err, 1, "the Redis URL is empty");
    if (!strncmp(url, "rediss://", 9))
        return mi_err_set(err, 1, "rediss:// (TLS) is not supported by this build's hiredis; "
                                  "use redis:// through a TLS tunnel");
    if (strncmp(url, scheme, sizeof(scheme) - 1))
        return mi_err_set(err, 1, "the Redis URL must start with redis://");

    const char *p = url + sizeof(scheme) - 1;
    const char *end = p + strcspn(p, "/?#");
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *uend = colon ? colon : at;
        if (!pct_decode(p, (size_t)(uend - p), out->user, sizeof(out->user)))
            return mi_err_set(err, 1, "the Redis URL's user name is malformed");
        if (colon && !pct_decode(colon + 1, (size_t)(at - colon - 1), out->password,
                                 sizeof(out->password)))
            return mi_err_set(err, 1, "the Redis URL's password is malformed or too long");
        p = at + 1;
    }

    const char *hend;
    const char *portp = NULL;
    if (*p == '[') {
        hend = memchr(p, ']', (size_t)(end - p));
        if (!hend)
            return mi_err_set(err, 1, "the Redis URL has an unterminated [IPv6] host");
        if ((size_t)(hend - p - 1) >= sizeof(out->host) || hend == p + 1)
            return mi_err_set(err, 1, "the Redis URL's host is empty or too long");
        memcpy(out->host, p + 1, (size_t)(hend - p - 1));
        if (hend + 1 < end && hend[1] == ':')
            portp = hend + 2;
        else if (hend + 1 != end)
            return mi_err_set(err, 1, "the Redis URL has junk after the [IPv6] host");
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        hend = colon ? colon : end;
        if (hend == p)
            return mi_err_set(err, 1, "the Redis URL has no host");
        if ((size_t)(hend - p) >= sizeof(out->host))
            return mi_err_set(err, 1, "the Redis URL's host is too long");
        memcpy(out->host, p, (size_t)(hend - p));
        if (colon)
            portp = colon + 1;
    }
    if (portp) {
        char buf[8];
        size_t n = (size_t)(end - portp);
        int64_t v;
        if (n == 0 || n >= sizeof(buf))
            return mi_err_set(err, 1, "the Redis URL's port is not a number from 1 to 65535");
        memcpy(buf, portp, n);
        buf[n] = '\0';
        if (!mi_parse_i64(buf, 1, 65535, &v))
            return mi_err_set(err, 1, "the Redis URL's port is not a number from 1 to 65535");
        out->port = (int)v;
    }

    if (*end == '/' && end[1] && end[1] != '?' && end[1] != '#') {
        char buf[8];
        const char *d = end + 1;
        size_t n = strcspn(d, "?#");
        int64_t v;
        if (n >= sizeof(buf))
            return mi_err_set(err, 1, "the Redis URL's database is not a number from 0 to 1000");
        memcpy(buf, d, n);
        buf[n] = '\0';
        if (!mi_parse_i64(buf, 0, 1000, &v))
            return mi_err_set(err, 1, "the Redis URL's database is not a number from 0 to 1000");
        out->db = (int)v;
    }
    return 0;
}

void rurl_redact(const struct rurl *u, char *out, size_t outlen)
{
    const char *lb = strchr(u->host, ':') ? "[" : "";
    const char *rb = *lb ? "]" : "";
    if (u->user[0] || u->password[0])
        snprintf(out, outlen, "redis://%s%s@%s%s%s:%d/%d", u->user, u->password[0] ? ":***" : "",
                 lb, u->host, rb, u->port, u->db);
    else
        snprintf(out, outlen, "redis://%s%s%s:%d/%d", lb, u->host, rb, u->port, u->db);
}
