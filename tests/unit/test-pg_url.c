#include "tap.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdlib.h>

#include "pg_url.h"

/* Parse @url, expecting success; NULL on failure (the failing check is printed). */
static struct pg_url *parse_ok(const char *url)
{
    struct pg_url *u = NULL;
    struct mi_err err = MI_ERR_INIT;
    int rc = pg_url_parse(url, &u, &err);
    TAP_EQ_INT(rc, 0);
    if (rc)
        printf("#   %s: %s\n", url, err.msg);
    return rc ? NULL : u;
}

/* Parse @url, expecting PG_URL_EINVAL with a message naming DATABASE_URL and @needle. */
static void parse_bad(const char *url, const char *needle)
{
    struct pg_url *u = NULL;
    struct mi_err err = MI_ERR_INIT;
    int rc = pg_url_parse(url, &u, &err);
    TAP_EQ_INT(rc, PG_URL_EINVAL);
    TAP_CHECK(u == NULL);
    TAP_CHECK(strstr(err.msg, "DATABASE_URL") != NULL);
    TAP_CHECK(strstr(err.msg, needle) != NULL);
    if (!strstr(err.msg, needle))
        printf("#   message was: %s\n", err.msg);
    pg_url_free(u);
}

/* Count keywords. */
static int nkw(const struct pg_url *u)
{
    int n = 0;
    while (pg_url_keywords(u)[n])
        n++;
    return n;
}

static void test_contract_url(void)
{
    struct pg_url *u = parse_ok(
        "postgresql://media:media-secret-pw@127.0.0.1:55432/media_ingest?schema=public");
    if (!u)
        return;
    TAP_EQ_STR(pg_url_get(u, "user"), "media");
    TAP_EQ_STR(pg_url_get(u, "password"), "media-secret-pw");
    TAP_EQ_STR(pg_url_get(u, "host"), "127.0.0.1");
    TAP_EQ_STR(pg_url_get(u, "port"), "55432");
    TAP_EQ_STR(pg_url_get(u, "dbname"), "media_ingest");
    TAP_EQ_STR(pg_url_get(u, "options"), "-csearch_path=\"public\"");
    TAP_EQ_STR(pg_url_schema(u), "public");
    TAP_EQ_STR(pg_url_ignored(u), "");
    TAP_EQ_INT(pg_url_connection_limit(u), 0);
    TAP_EQ_INT(nkw(u), 6);
    TAP_CHECK(pg_url_values(u)[6] == NULL);

    /* libpq itself must accept what we produce, and refuse the raw Prisma URL. */
    char ci[1024];
    TAP_EQ_INT(pg_url_conninfo(u, ci, sizeof(ci)), 0);
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(ci, &perr);
    TAP_CHECK(opts != NULL);
    int seen = 0;
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        const char *mine = pg_url_get(u, o->keyword);
        if (mine && o->val && !strcmp(mine, o->val))
            seen++;
    }
    TAP_EQ_INT(seen, 6);
    PQconninfoFree(opts);
    PQfreemem(perr);
    perr = NULL;
    opts = PQconninfoParse(
        "postgresql://media:pw@127.0.0.1:55432/media_ingest?schema=public", &perr);
    TAP_CHECK(opts == NULL);
    PQconninfoFree(opts);
    PQfreemem(perr);

    char small[8];
    TAP_EQ_INT(pg_url_conninfo(u, small, sizeof(small)), -ENOSPC);
    TAP_EQ_STR(small, "");
    pg_url_free(u);
}

static void test_percent_encoding(void)
{
    struct pg_url *u = parse_ok("postgres://us%65r%2B1:p%40ss%3Aw%2Fo%25rd%3F%23@db.example:5432/"
                                "my%20db");
    if (!u)
        return;
    TAP_EQ_STR(pg_url_get(u, "user"), "user+1");
    TAP_EQ_STR(pg_url_get(u, "password"), "p@ss:w/o%rd?#");
    TAP_EQ_STR(pg_url_get(u, "dbname"), "my db");
    TAP_CHECK(pg_url_get(u, "options") == NULL);
    /* Quotes and backslashes in values survive the conninfo form. */
    pg_url_free(u);
    u = parse_ok("postgresql://u:it%27s%5C@h/d");
    if (!u)
        return;
    char ci[256];
    TAP_EQ_INT(pg_url_conninfo(u, ci, sizeof(ci)), 0);
    TAP_CHECK(strstr(ci, "password='it\\'s\\\\'") != NULL);
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(ci, &perr);
    const char *pw = NULL;
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (!strcmp(o->keyword, "password"))
            pw = o->val;
    TAP_EQ_STR(pw, "it's\\");
    PQconninfoFree(opts);
    PQfreemem(perr);
    pg_url_free(u);
    /* An '@' inside an encoded password does not split the user info. */
    u = parse_ok("postgresql://a:b%40c@h");
    if (!u)
        return;
    TAP_EQ_STR(pg_url_get(u, "password"), "b@c");
    TAP_EQ_STR(pg_url_get(u, "host"), "h");
    pg_url_free(u);
}

static void test_hosts(void)
{
    struct pg_url *u = parse_ok("postgresql://u@[::1]:5433/d");
    if (!u)
        return;
    TAP_EQ_STR(pg_url_get(u, "host"), "::1");
    TAP_EQ_STR(pg_url_get(u, "port"), "5433");
    pg_url_free(u);

    u = parse_ok("postgresql://[fe80::1%25eth0]/d");
    if (!u)
        return;
    TAP_EQ_STR(pg_url_get(u, "host"), "fe80::1%eth0");
    TAP_CHECK(pg_url_get(u, "port") == NULL);
    pg_url_free(u);

    u = parse_ok("postgresql://h1:1,h2,[::1]:3/d");
    if (!u)
        return;
    TAP_EQ_STR(pg_url_get(u, "host"), "h1,h2,::1");
    TAP_EQ_STR(pg_url_get(u, "port"), "1,,3");
    pg_url_free(u);

    /* Unix sockets: an empty host with ?host=DIR (Prisma's form) or an encoded path. */
    u = parse_ok("postgresql://media@/media_ingest?host=/var/run/postgresql&schema=s1");
    if (!u)
        return;
    TAP_EQ_STR(pg_url_get(u, "host"), "/var/run/postgresql");
    TAP_EQ_STR(pg_url_get(u, "user"), "media");
    TAP_EQ_STR(pg_url_get(u, "dbname"), "media_ingest");
    TAP_EQ_STR(pg_url_get(u, "options"), "-csearch_path=\"s1\"");
    pg_url_free(u);

    u = parse_ok("postgresql://%2Fvar%2Frun%2Fpostgresql:5439/d");
    if (!u)
        return;
    TAP_EQ_STR(pg_url_get(u, "host"), "/var/run/postgresql");
    TAP_EQ_STR(pg_url_get(u, "port"), "5439");
    pg_url_free(u);

    /* ?host= and ?port= override the authority, as in libpq. */
    u = parse_ok("postgresql://a:1/d?host=b&port=2");
    if (!u)
        return;
    TAP_EQ_STR(pg_url_get(u, "host"), "b");
    TAP_EQ_STR(pg_url_get(u, "port"), "2");
    pg_url_free(u);
}

static void test_missing_parts(void)
{
    struct pg_url *u = parse_ok("postgresql://");
    if (!u)
        return;
    TAP_EQ_INT(nkw(u), 0);
    pg_url_free(u);

    u = parse_ok("postgres://dbhost");
    if (!u)
        return;
    TAP_EQ_INT(nkw(u), 1);
    TAP_EQ_STR(pg_url_get(u, "host"), "dbhost");
    pg_url_free(u);

    u = parse_ok("postgresql://u:@h/?");
    if (!u)
        return;
    TAP_EQ_STR(pg_url_get(u, "user"), "u");
    TAP_EQ_STR(pg_url_get(u, "password"), "");
    TAP_CHECK(pg_url_get(u, "dbname") == NULL);
    pg_url_free(u);

    u = parse_ok("postgresql://h/d?schema=");
    if (!u)
        return;
    TAP_CHECK(pg_url_schema(u) == NULL);
    TAP_CHECK(pg_url_get(u, "options") == NULL);
    pg_url_free(u);
}

static void test_params(void)
{
    struct pg_url *u = parse_ok(
        "postgresql://h/d?connection_limit=5&pool_timeout=10&pgbouncer=true&sslmode=require"
        "&connect_timeout=7&application_name=mi&socket_timeout=3&statement_cache_size=0"
        "&sslaccept=strict&pool_timeout=11&options=-cstatement_timeout%3D5000"
        "&schema=My%20%22S%5C");
    if (!u)
        return;
    TAP_EQ_INT(pg_url_connection_limit(u), 5);
    TAP_EQ_STR(pg_url_ignored(u),
               "pool_timeout,pgbouncer,socket_timeout,statement_cache_size,sslaccept");
    TAP_EQ_STR(pg_url_get(u, "sslmode"), "require");
    TAP_EQ_STR(pg_url_get(u, "connect_timeout"), "7");
    TAP_EQ_STR(pg_url_get(u, "application_name"), "mi");
    TAP_EQ_STR(pg_url_schema(u), "My \"S\\");
    TAP_EQ_STR(pg_url_get(u, "options"),
               "-cstatement_timeout=5000 -csearch_path=\"My\\ \"\"S\\\\\"");
    TAP_CHECK(pg_url_get(u, "connection_limit") == NULL);
    TAP_CHECK(pg_url_get(u, "schema") == NULL);
    pg_url_free(u);

    u = parse_ok("postgresql://h/d?ssl=true");
    if (!u)
        return;
    TAP_EQ_STR(pg_url_get(u, "sslmode"), "require");
    pg_url_free(u);
}

static void test_errors(void)
{
    struct pg_url *u = NULL;
    struct mi_err err = MI_ERR_INIT;
    TAP_EQ_INT(pg_url_parse(NULL, &u, &err), PG_URL_EINVAL);
    TAP_CHECK(strstr(err.msg, "DATABASE_URL is empty") != NULL);
    parse_bad("", "empty");
    parse_bad("garbage", "postgresql://");
    parse_bad("mysql://u:p@h/d", "postgresql://");
    parse_bad("host=localhost dbname=x", "postgresql://");
    parse_bad("postgresql://u:p@h:abc/d", "port is not a number");
    parse_bad("postgresql://u:p@h:0/d", "1..65535");
    parse_bad("postgresql://h:70000/d", "1..65535");
    parse_bad("postgresql://h/d?foo=1", "unknown query parameter \"foo\"");
    parse_bad("postgresql://h/d?sslmdoe=require", "sslmdoe");
    parse_bad("postgresql://h/d?sslmode", "lacks \"=value\"");
    parse_bad("postgresql://u:p%zz@h/d", "malformed");
    parse_bad("postgresql://u:p%4@h/d", "malformed");
    parse_bad("postgresql://u:p%00x@h/d", "malformed");
    parse_bad("postgresql://h/d%", "malformed");
    parse_bad("postgresql://h/d?connection_limit=abc", "connection_limit");
    parse_bad("postgresql://h/d?connection_limit=0", "connection_limit");
    parse_bad("postgresql://h/d\n", "trailing newline");
    parse_bad("postgresql://u:pa ss@h/d", "space");
    parse_bad("postgresql://u:pa#ss@h/d", "'#'");
    parse_bad("postgresql://[::1:5432/d", "']'");
    parse_bad("postgresql://[::1]x/d", "']'");
    parse_bad("postgresql://h/d?ssl=yes", "ssl");

    /* A mis-encoded password makes the port look wrong; the hint says what to do, and
     * the password itself is never echoed. */
    mi_err_clear(&err);
    TAP_EQ_INT(pg_url_parse("postgresql://u:supersecretpw/x@h/d", &u, &err), PG_URL_EINVAL);
    TAP_CHECK(strstr(err.msg, "percent-encode") != NULL);
    TAP_CHECK(strstr(err.msg, "supersecretpw") == NULL);
    mi_err_clear(&err);
    TAP_EQ_INT(pg_url_parse("postgresql://u:sec%zzretpw@h/d", &u, &err), PG_URL_EINVAL);
    TAP_CHECK(strstr(err.msg, "sec") == NULL);

    char big[PG_URL_MAX_LEN + 64];
    memset(big, 'a', sizeof(big) - 1);
    memcpy(big, "postgresql://", 13);
    big[sizeof(big) - 1] = '\0';
    parse_bad(big, "longer than");
}

static void test_redact(void)
{
    char out[256];
    pg_url_redact("postgresql://media:media-secret-pw@127.0.0.1:55432/media_ingest?schema=public",
                  out, sizeof(out));
    TAP_EQ_STR(out, "postgresql://media:***@127.0.0.1:55432/media_ingest?schema=public");
    pg_url_redact("postgres://u:p%40w@h/d?password=x&sslmode=require&sslpassword=y", out,
                  sizeof(out));
    TAP_EQ_STR(out, "postgres://u:***@h/d?password=***&sslmode=require&sslpassword=***");
    pg_url_redact("postgresql://u@h/d", out, sizeof(out));
    TAP_EQ_STR(out, "postgresql://u@h/d");
    pg_url_redact("postgresql://h", out, sizeof(out));
    TAP_EQ_STR(out, "postgresql://h");
    pg_url_redact("postgresql://:pw@h/", out, sizeof(out));
    TAP_EQ_STR(out, "postgresql://:***@h/");
    /* a raw '/' in the password (the parser refuses it) and an encoded key still hide it */
    pg_url_redact("postgresql://app:s3cr/et@db/app", out, sizeof(out));
    TAP_EQ_STR(out, "postgresql://app:***@db/app");
    pg_url_redact("postgresql://h/d?pass%77ord=hunter2&x=%zz", out, sizeof(out));
    TAP_EQ_STR(out, "postgresql://h/d?pass%77ord=***&x=%zz");
    pg_url_redact("user=x password=secret", out, sizeof(out));
    TAP_EQ_STR(out, "(not a postgresql:// URL)");
    pg_url_redact(NULL, out, sizeof(out));
    TAP_EQ_STR(out, "(not a postgresql:// URL)");
    char tiny[18];
    pg_url_redact("postgresql://user:secret@host/db", tiny, sizeof(tiny));
    TAP_EQ_STR(tiny, "postgresql://user");
    pg_url_redact("postgresql://user:secret@host/db", out, 0);
}

int main(void)
{
    test_contract_url();
    test_percent_encoding();
    test_hosts();
    test_missing_parts();
    test_params();
    test_errors();
    test_redact();
    return tap_done();
}
