#include "pg_url.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pg_url {
    int n;
    const char *kw[PG_URL_MAX_PARAMS + 1];  /* static strings from libpq_keywords[] */
    char *val[PG_URL_MAX_PARAMS + 1];       /* owned */
    int connection_limit;
    char *schema;                           /* owned, NULL when absent */
    char ignored[256];
};

/* The connection keywords libpq 15 understands (PQconndefaults()), in URL-query form. */
static const char *const libpq_keywords[] = {
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile",
    "channel_binding", "connect_timeout", "client_encoding", "options",
    "application_name", "fallback_application_name", "keepalives", "keepalives_idle",
    "keepalives_interval", "keepalives_count", "tcp_user_timeout", "replication",
    "sslmode", "sslcompression", "sslcert", "sslkey", "sslpassword", "sslrootcert",
    "sslcrl", "sslcrldir", "sslsni", "requirepeer", "ssl_min_protocol_version",
    "ssl_max_protocol_version", "gssencmode", "krbsrvname", "gsslib", "service",
    "target_session_attrs",
};

/*
 * Parameters Prisma understands and libpq does not. They configure Prisma's own pool
 * and TLS layer, so they have no meaning for libpq and are set aside. (Prisma's
 * "sslcert" is a root certificate while libpq's is a client certificate; we keep the
 * libpq meaning because the URL is handed to libpq.)
 */
static const char *const prisma_only[] = {
    "pool_timeout", "pgbouncer", "socket_timeout", "statement_cache_size", "sslaccept",
    "sslidentity", "max_connection_lifetime", "max_idle_connection_lifetime",
    "single_use_connections",
};

static const char *find_name(const char *const *tab, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(tab[i], name))
            return tab[i];
    return NULL;
}

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Percent-decode [s, s+n) into a new string. Return 0, PG_URL_EINVAL for a bad escape or
 * an encoded NUL (which no C string can carry), or -ENOMEM.
 */
static int pct_decode(const char *s, size_t n, char **out)
{
    char *d = malloc(n + 1);
    if (!d)
        return -ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int h = i + 2 < n ? mi_hexval(s[i + 1]) : -1;
            int l = i + 2 < n ? mi_hexval(s[i + 2]) : -1;
            if (h < 0 || l < 0 || (h == 0 && l == 0)) {
                free(d);
                return PG_URL_EINVAL;
            }
            c = (char)(h * 16 + l);
            i += 2;
        }
        d[o++] = c;
    }
    d[o] = '\0';
    *out = d;
    return 0;
}

/* Set keyword @kw (a static string) to the new string @v (stolen), replacing an old value. */
static int url_set(struct pg_url *u, const char *kw, char *v)
{
    for (int i = 0; i < u->n; i++) {
        if (!strcmp(u->kw[i], kw)) {
            free(u->val[i]);
            u->val[i] = v;
            return 0;
        }
    }
    if (u->n >= PG_URL_MAX_PARAMS) {
        free(v);
        return PG_URL_EINVAL;
    }
    u->kw[u->n] = kw;
    u->val[u->n] = v;
    u->n++;
    return 0;
}

static int url_set_copy(struct pg_url *u, const char *kw, const char *v, size_t n)
{
    char *c = strndup(v, n);
    if (!c)
        return -ENOMEM;
    return url_set(u, kw, c);
}

/* Decode [s, s+n) and store it as @kw. */
static int url_set_decoded(struct pg_url *u, const char *kw, const char *s, size_t n,
                           struct mi_err *err)
{
    char *v = NULL;
    int rc = pct_decode(s, n, &v);
    if (rc > 0)
        return mi_err_set(err, PG_URL_EINVAL,
                          "DATABASE_URL: the %s part has a malformed %%-escape", kw);
    if (rc < 0)
        return rc;
    return url_set(u, kw, v);
}

const char *pg_url_get(const struct pg_url *u, const char *kw)
{
    for (int i = 0; i < u->n; i++)
        if (!strcmp(u->kw[i], kw))
            return u->val[i];
    return NULL;
}

void pg_url_free(struct pg_url *u)
{
    if (!u)
        return;
    for (int i = 0; i < u->n; i++)
        free(u->val[i]);
    free(u->schema);
    free(u);
}

static const char url_hint[] =
    " (percent-encode special characters such as @ : / ? # % in the user name and password)";

/* Parse "user[:password]" in [s, e). */
static int parse_userinfo(struct pg_url *u, const char *s, const char *e, struct mi_err *err)
{
    const char *colon = memchr(s, ':', (size_t)(e - s));
    const char *uend = colon ? colon : e;
    int rc;
    if (uend > s) {
        rc = url_set_decoded(u, "user", s, (size_t)(uend - s), err);
        if (rc)
            return rc;
    }
    if (colon) {
        char *pw = NULL;
        rc = pct_decode(colon + 1, (size_t)(e - colon - 1), &pw);
        if (rc > 0)
            return mi_err_set(err, PG_URL_EINVAL,
                              "DATABASE_URL: the password has a malformed %%-escape%s",
                              url_hint);
        if (rc < 0)
            return rc;
        return url_set(u, "password", pw);
    }
    return 0;
}

/* Check a port number: 1..65535 in decimal digits. */
static bool port_ok(const char *s, size_t n)
{
    if (n == 0 || n > 5)
        return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

/* Append [s, s+n) to the growing list @buf (capacity @cap), with a comma when not first. */
static bool list_add(char *buf, size_t cap, size_t *len, bool first, const char *s, size_t n)
{
    size_t need = n + (first ? 0 : 1);
    if (*len + need + 1 > cap)
        return false;
    if (!first)
        buf[(*len)++] = ',';
    memcpy(buf + *len, s, n);
    *len += n;
    buf[*len] = '\0';
    return true;
}

/* Split one "host[:port]" or "[v6]:port" item into host and port spans. */
static int split_hostport(const char *s, const char *e, const char **h, size_t *hn,
                          const char **p, size_t *pn, struct mi_err *err)
{
    const char *rest;
    *h = s;
    *hn = 0;
    *p = NULL;
    *pn = 0;
    if (s < e && *s == '[') {
        const char *rb = memchr(s, ']', (size_t)(e - s));
        if (!rb)
            return mi_err_set(err, PG_URL_EINVAL,
                              "DATABASE_URL: an IPv6 host lacks its closing ']'");
        *h = s + 1;
        *hn = (size_t)(rb - s - 1);
        rest = rb + 1;
        if (rest < e && *rest != ':')
            return mi_err_set(err, PG_URL_EINVAL,
                              "DATABASE_URL: unexpected text after an IPv6 host's ']'");
    } else {
        rest = memchr(s, ':', (size_t)(e - s));
        if (!rest)
            rest = e;
        *h = s;
        *hn = (size_t)(rest - s);
    }
    if (rest < e) {
        *p = rest + 1;
        *pn = (size_t)(e - rest - 1);
        if (!port_ok(*p, *pn))
            /* The text is not echoed: with an unencoded '/' in the password, what looks
             * like the port is really part of the password. */
            return mi_err_set(err, PG_URL_EINVAL,
                              "DATABASE_URL: the port is not a number in 1..65535%s", url_hint);
    }
    return 0;
}

/*
 * Parse the host list in [s, e): "h", "h:p", "[v6]:p", "h1:p1,h2:p2". Sets "host" (a
 * decoded, comma-separated list) and "port" (a list with empty entries where a host has
 * no port, as libpq accepts) when at least one port is given.
 */
static int parse_hosts(struct pg_url *u, const char *s, const char *e, struct mi_err *err)
{
    char hosts[1024], ports[256];
    size_t hl = 0, pl = 0;
    bool any_port = false, any_host = false, first = true;
    hosts[0] = ports[0] = '\0';
    while (s <= e) {
        const char *item_end = s;
        bool in_br = false;
        while (item_end < e && (in_br || *item_end != ',')) {
            if (*item_end == '[')
                in_br = true;
            else if (*item_end == ']')
                in_br = false;
            item_end++;
        }
        const char *h, *p;
        size_t hn, pn;
        int rc = split_hostport(s, item_end, &h, &hn, &p, &pn, err);
        if (rc)
            return rc;
        char *dh = NULL;
        rc = pct_decode(h, hn, &dh);
        if (rc > 0)
            return mi_err_set(err, PG_URL_EINVAL,
                              "DATABASE_URL: a host name has a malformed %%-escape");
        if (rc < 0)
            return rc;
        bool ok = !strchr(dh, ',') && list_add(hosts, sizeof(hosts), &hl, first, dh, strlen(dh));
        any_host = any_host || *dh;
        free(dh);
        if (!ok || !list_add(ports, sizeof(ports), &pl, first, p ? p : "", pn))
            return mi_err_set(err, PG_URL_EINVAL, "DATABASE_URL: the host list is too long "
                                                  "or a host name contains a comma");
        any_port = any_port || pn > 0;
        first = false;
        s = item_end + 1;
    }
    int rc = 0;
    if (any_host)
        rc = url_set_copy(u, "host", hosts, hl);
    if (!rc && any_port)
        rc = url_set_copy(u, "port", ports, pl);
    return rc;
}

static void add_ignored(struct pg_url *u, const char *name)
{
    size_t len = strlen(u->ignored);
    if (strstr(u->ignored, name))
        return;
    snprintf(u->ignored + len, sizeof(u->ignored) - len, "%s%s", len ? "," : "", name);
}

static int parse_limit(struct pg_url *u, const char *v, struct mi_err *err)
{
    long n = 0;
    bool ok = *v != '\0' && strlen(v) <= 5;
    for (const char *p = v; ok && *p; p++) {
        ok = *p >= '0' && *p <= '9';
        n = n * 10 + (*p - '0');
    }
    if (!ok || n < 1 || n > 10000)
        return mi_err_set(err, PG_URL_EINVAL,
                          "DATABASE_URL: connection_limit must be a whole number in 1..10000, "
                          "not \"%.20s\"", v);
    u->connection_limit = (int)n;
    return 0;
}

/* Handle one decoded query parameter. @k and @v are stolen. */
static int apply_param(struct pg_url *u, char *k, char *v, struct mi_err *err)
{
    int rc = 0;
    const char *kw = find_name(libpq_keywords, NELEM(libpq_keywords), k);
    if (kw) {
        rc = url_set(u, kw, v);
        v = NULL;
    } else if (!strcmp(k, "ssl")) {
        /* libpq's own URI parser turns ssl=true into sslmode=require; do the same. */
        if (strcmp(v, "true"))
            rc = mi_err_set(err, PG_URL_EINVAL, "DATABASE_URL: ssl accepts only \"true\"");
        else
            rc = url_set_copy(u, "sslmode", "require", 7);
    } else if (!strcmp(k, "schema")) {
        free(u->schema);
        u->schema = NULL;
        if (*v) {
            u->schema = v;
            v = NULL;
        }
    } else if (!strcmp(k, "connection_limit")) {
        rc = parse_limit(u, v, err);
    } else if (find_name(prisma_only, NELEM(prisma_only), k)) {
        add_ignored(u, find_name(prisma_only, NELEM(prisma_only), k));
    } else {
        rc = mi_err_set(err, PG_URL_EINVAL,
                        "DATABASE_URL: unknown query parameter \"%.40s\" (neither a libpq "
                        "connection parameter nor a Prisma one)", k);
    }
    free(k);
    free(v);
    return rc;
}

static int parse_query(struct pg_url *u, const char *s, struct mi_err *err)
{
    while (*s) {
        size_t n = strcspn(s, "&");
        const char *eq = memchr(s, '=', n);
        if (n > 0 && !eq)
            return mi_err_set(err, PG_URL_EINVAL,
                              "DATABASE_URL: query parameter \"%.*s\" lacks \"=value\"",
                              (int)(n > 40 ? 40 : n), s);
        if (n > 0) {
            char *k = NULL, *v = NULL;
            int rc = pct_decode(s, (size_t)(eq - s), &k);
            if (!rc) {
                rc = pct_decode(eq + 1, (size_t)(s + n - eq - 1), &v);
                if (rc)
                    free(k);
            }
            if (rc > 0)
                return mi_err_set(err, PG_URL_EINVAL,
                                  "DATABASE_URL: a query parameter has a malformed %%-escape");
            if (rc < 0)
                return rc;
            rc = apply_param(u, k, v, err);
            if (rc)
                return rc;
        }
        s += n;
        if (*s == '&')
            s++;
    }
    return 0;
}

/*
 * Map the schema to a server option. The server splits "options" at white space, with a
 * backslash escaping the next character; search_path takes identifiers, so the name is
 * double-quoted (doubling inner quotes) to keep its case and special characters, as
 * Prisma does.
 */
static int apply_schema(struct pg_url *u)
{
    if (!u->schema)
        return 0;
    const char *old = pg_url_get(u, "options");
    size_t cap = (old ? strlen(old) + 1 : 0) + strlen(u->schema) * 4 + 32;
    char *o = malloc(cap);
    if (!o)
        return -ENOMEM;
    size_t n = 0;
    if (old) {
        memcpy(o, old, strlen(old));
        n = strlen(old);
        o[n++] = ' ';
    }
    static const char pre[] = "-csearch_path=\"";
    memcpy(o + n, pre, sizeof(pre) - 1);
    n += sizeof(pre) - 1;
    for (const char *p = u->schema; *p; p++) {
        if (*p == '"') {
            o[n++] = '"';
        } else if (*p == '\\' || isspace((unsigned char)*p)) {
            o[n++] = '\\';
        }
        o[n++] = *p;
    }
    o[n++] = '"';
    o[n] = '\0';
    return url_set(u, "options", o);
}

/* Reject what cannot be part of a URL, so that a stray space or newline gets a clear error. */
static int check_chars(const char *url, struct mi_err *err)
{
    for (const char *p = url; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c == 0x7f)
            return mi_err_set(err, PG_URL_EINVAL,
                              "DATABASE_URL contains a space or control character at offset "
                              "%zu (percent-encode it, or remove a trailing newline)",
                              (size_t)(p - url));
        if (c == '#')
            return mi_err_set(err, PG_URL_EINVAL,
                              "DATABASE_URL contains '#' at offset %zu%s",
                              (size_t)(p - url), url_hint);
    }
    return 0;
}

/* The '@' that ends the user info: the last one in [p, end), or NULL. */
static const char *last_at(const char *p, const char *end)
{
    const char *at = NULL;

    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    return at;
}

static const char *skip_scheme(const char *url)
{
    static const char *const schemes[] = { "postgresql://", "postgres://" };
    for (size_t i = 0; i < NELEM(schemes); i++)
        if (!strncmp(url, schemes[i], strlen(schemes[i])))
            return url + strlen(schemes[i]);
    return NULL;
}

static int parse_all(struct pg_url *u, const char *url, struct mi_err *err)
{
    const char *p = skip_scheme(url);
    if (!p)
        return mi_err_set(err, PG_URL_EINVAL,
                          "DATABASE_URL must start with postgresql:// or postgres:// "
                          "(the Prisma URL format)");
    int rc = check_chars(url, err);
    if (rc)
        return rc;
    const char *aend = p + strcspn(p, "/?");
    const char *at = last_at(p, aend);
    if (at) {
        rc = parse_userinfo(u, p, at, err);
        if (rc)
            return rc;
        p = at + 1;
    }
    if (p < aend) {
        rc = parse_hosts(u, p, aend, err);
        if (rc)
            return rc;
    }
    p = aend;
    if (*p == '/') {
        size_t n = strcspn(p + 1, "?");
        if (n > 0) {
            rc = url_set_decoded(u, "dbname", p + 1, n, err);
            if (rc)
                return rc;
        }
        p += 1 + n;
    }
    if (*p == '?') {
        rc = parse_query(u, p + 1, err);
        if (rc)
            return rc;
    }
    return apply_schema(u);
}

int pg_url_parse(const char *url, struct pg_url **out, struct mi_err *err)
{
    if (!url || !*url)
        return mi_err_set(err, PG_URL_EINVAL,
                          "DATABASE_URL is empty; set it to postgresql://USER:PASSWORD@HOST:"
                          "PORT/DATABASE");
    if (strlen(url) > PG_URL_MAX_LEN)
        return mi_err_set(err, PG_URL_EINVAL, "DATABASE_URL is longer than %d bytes",
                          PG_URL_MAX_LEN);
    struct pg_url *u = calloc(1, sizeof(*u));
    if (!u)
        return -ENOMEM;
    int rc = parse_all(u, url, err);
    if (rc == PG_URL_EINVAL && err && !err->msg[0])
        mi_err_set(err, rc, "DATABASE_URL has more parameters than this program supports");
    if (rc) {
        pg_url_free(u);
        return rc;
    }
    *out = u;
    return 0;
}

const char *const *pg_url_keywords(const struct pg_url *u)
{
    return u->kw;
}

const char *const *pg_url_values(const struct pg_url *u)
{
    return (const char *const *)u->val;
}

int pg_url_connection_limit(const struct pg_url *u)
{
    return u->connection_limit;
}

const char *pg_url_schema(const struct pg_url *u)
{
    return u->schema;
}

const char *pg_url_ignored(const struct pg_url *u)
{
    return u->ignored;
}

/* Append a single-quoted conninfo value with ' and \ escaped. */
static bool ci_put(char *out, size_t outlen, size_t *n, const char *s)
{
    for (; *s; s++) {
        if (*s == '\'' || *s == '\\') {
            if (*n + 1 >= outlen)
                return false;
            out[(*n)++] = '\\';
        }
        if (*n + 1 >= outlen)
            return false;
        out[(*n)++] = *s;
    }
    out[*n] = '\0';
    return true;
}

int pg_url_conninfo(const struct pg_url *u, char *out, size_t outlen)
{
    size_t n = 0;
    if (!outlen)
        return -ENOSPC;
    out[0] = '\0';
    for (int i = 0; i < u->n; i++) {
        bool ok = (!i || ci_put(out, outlen, &n, " ")) && ci_put(out, outlen, &n, u->kw[i]) &&
                  ci_put(out, outlen, &n, "=") && n + 1 < outlen;
        if (ok) {
            out[n++] = '\'';
            ok = ci_put(out, outlen, &n, u->val[i]) && n + 1 < outlen;
        }
        if (!ok) {
            out[0] = '\0';
            return -ENOSPC;
        }
        out[n++] = '\'';
        out[n] = '\0';
    }
    return 0;
}

/* Bounded appender for pg_url_redact(). */
struct sbuf {
    char *p;
    size_t cap, len;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n && b->len + 1 < b->cap; i++)
        b->p[b->len++] = s[i];
    b->p[b->len] = '\0';
}

/* Copy the query string, replacing the values of secret parameters. */
static void redact_query(struct sbuf *b, const char *q)
{
    while (*q) {
        size_t n = strcspn(q, "&");
        const char *eq = memchr(q, '=', n);
        char *key = NULL;
        /* compared decoded, as the parser does; a key that does not decode is hidden too */
        bool secret = eq && (pct_decode(q, (size_t)(eq - q), &key) != 0 ||
                             !strcmp(key, "password") || !strcmp(key, "sslpassword"));
        free(key);
        if (secret) {
            sb_put(b, q, (size_t)(eq - q) + 1);
            sb_put(b, "***", 3);
        } else {
            sb_put(b, q, n);
        }
        q += n;
        if (*q == '&') {
            sb_put(b, "&", 1);
            q++;
        }
    }
}

void pg_url_redact(const char *url, char *out, size_t outlen)
{
    struct sbuf b = { out, outlen, 0 };
    if (!outlen)
        return;
    out[0] = '\0';
    const char *p = url ? skip_scheme(url) : NULL;
    if (!p) {
        sb_put(&b, "(not a postgresql:// URL)", 25);
        return;
    }
    sb_put(&b, url, (size_t)(p - url));
    /*
     * The user info ends at the last '@' before the query. The parser stops at a '/' as
     * well, but a URL it refuses (a password with a raw '/') must not leak here either.
     */
    const char *at = last_at(p, p + strcspn(p, "?"));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        sb_put(&b, p, (size_t)((colon ? colon : at) - p));
        if (colon)
            sb_put(&b, ":***", 4);
        p = at;
    }
    const char *qm = strchr(p, '?');
    if (!qm) {
        sb_put(&b, p, strlen(p));
        return;
    }
    sb_put(&b, p, (size_t)(qm - p) + 1);
    redact_query(&b, qm + 1);
}
