/*
 * test-msgdb.c - the "Message" operations against a real PostgreSQL (DATABASE_URL).
 *
 * The test makes its own schemas mi_test_<pid>_{int,text,uuid,cols} with a "Message"
 * table each (integer, text and uuid ids, and one lacking columns), reaches them through
 * options=-csearch_path like ?schema= does, and drops them at the end. Sessions run with
 * TimeZone=America/New_York so that a timestamp written or compared in local time instead
 * of UTC would show, and with enable_seqscan=off so EXPLAIN shows whether the primary-key
 * index can be used. Exits 77 when DATABASE_URL is unset or unreachable.
 */
#include "msgdb.h"
#include "pg-it.h"

struct t {
    uv_loop_t loop;
    struct pg_url *url;
    char prefix[64];
    struct pg_pool *admin;   /* default search_path: creates and drops the schemas */
};

struct pool_kw {
    const char *kw[PG_URL_MAX_PARAMS + 2];
    const char *val[PG_URL_MAX_PARAMS + 2];
    char options[256];
};

/* A pool whose sessions see schema @schema first. */
static struct pg_pool *pool_for(struct t *t, const char *schema)
{
    static struct pool_kw k;
    const char *const *kw = pg_url_keywords(t->url), *const *val = pg_url_values(t->url);
    int n = 0;
    for (int i = 0; kw[i]; i++) {
        if (strcmp(kw[i], "options")) {
            k.kw[n] = kw[i];
            k.val[n++] = val[i];
        }
    }
    snprintf(k.options, sizeof(k.options),
             "-csearch_path=\"%s\" -cenable_seqscan=off -cTimeZone=America/New_York", schema);
    k.kw[n] = "options";
    k.val[n++] = k.options;
    k.kw[n] = k.val[n] = NULL;
    struct pg_pool *p = NULL;
    struct mi_err err = MI_ERR_INIT;
    struct pg_pool_opts o = { .size = 2 };
    if (pg_pool_new(&p, &t->loop, k.kw, k.val, &o, &err)) {
        printf("Bail out! %s\n", err.msg);
        exit(1);
    }
    return p;
}

/* Run SQL on the admin pool; "%s" in @fmt is replaced by the test's schema prefix. */
static int admin(struct t *t, const char *fmt)
{
    char sql[2048];
    char out[2048];
    size_t n = 0;
    for (const char *p = fmt; *p && n + 64 < sizeof(out); p++) {
        if (p[0] == '%' && p[1] == 's') {
            n += (size_t)snprintf(out + n, sizeof(out) - n, "%s", t->prefix);
            p++;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    snprintf(sql, sizeof(sql), "%s", out);
    struct it_res r = { 0 };
    int rc = it_query(&t->loop, t->admin, sql, 0, NULL, 10000, &r);
    if (rc)
        printf("#   admin SQL failed: %s\n", sql);
    it_res_free(&r);
    return rc;
}

static const char *const table_cols =
    "\"conversationId\" INTEGER, \"body\" TEXT, \"providerMediaId\" TEXT, "
    "\"mediaStoredUrl\" TEXT, \"mediaStoredAt\" TIMESTAMP(3), \"mediaStorageBackend\" TEXT, "
    "\"createdAt\" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP";

static int setup(struct t *t)
{
    char sql[1024];
    int rc = admin(t, "DROP SCHEMA IF EXISTS \"%s_int\", \"%s_text\", \"%s_uuid\", "
                      "\"%s_cols\" CASCADE");
    rc = rc ? rc : admin(t, "CREATE SCHEMA \"%s_int\"");
    rc = rc ? rc : admin(t, "CREATE SCHEMA \"%s_text\"");
    rc = rc ? rc : admin(t, "CREATE SCHEMA \"%s_uuid\"");
    rc = rc ? rc : admin(t, "CREATE SCHEMA \"%s_cols\"");
    snprintf(sql, sizeof(sql), "CREATE TABLE \"%%s_int\".\"Message\" (\"id\" SERIAL, %s, "
             "CONSTRAINT \"Message_pkey\" PRIMARY KEY (\"id\"))", table_cols);
    rc = rc ? rc : admin(t, sql);
    snprintf(sql, sizeof(sql), "CREATE TABLE \"%%s_text\".\"Message\" (\"id\" TEXT NOT NULL, "
             "%s, CONSTRAINT \"Message_pkey\" PRIMARY KEY (\"id\"))", table_cols);
    rc = rc ? rc : admin(t, sql);
    snprintf(sql, sizeof(sql), "CREATE TABLE \"%%s_uuid\".\"Message\" (\"id\" UUID NOT NULL, "
             "%s, CONSTRAINT \"Message_pkey\" PRIMARY KEY (\"id\"))", table_cols);
    rc = rc ? rc : admin(t, sql);
    rc = rc ? rc : admin(t, "CREATE TABLE \"%s_cols\".\"Message\" (\"id\" INTEGER PRIMARY KEY, "
                            "\"providerMediaId\" TEXT, \"createdAt\" TIMESTAMP(3))");
    /* 25 integer rows, a day apart: 2 is stored already, 3 has no media, 4 an empty id. */
    rc = rc ? rc : admin(t,
        "INSERT INTO \"%s_int\".\"Message\" (\"conversationId\", \"body\", \"providerMediaId\", "
        "\"mediaStoredUrl\", \"createdAt\") SELECT 7, 'body ' || i, CASE WHEN i = 3 THEN NULL "
        "WHEN i = 4 THEN '' ELSE 'p' || i END, CASE WHEN i = 2 THEN 's3://x/y' END, "
        "timestamp '2024-01-01 00:00:00.123' + (i - 1) * interval '1 day' "
        "FROM generate_series(1, 25) i");
    rc = rc ? rc : admin(t,
        "INSERT INTO \"%s_text\".\"Message\" (\"id\", \"body\", \"providerMediaId\") VALUES "
        "('msg-a', 'A', 'pa'), ('msg-b', 'B', 'pb'), ('it''s', 'Q', 'pq'), ('ü-id', 'U', 'pu'),"
        " ('10', 'ten', 'p10'), ('9', 'nine', 'p9'), ('Z', 'zed', 'pz'), ('none', 'N', NULL)");
    rc = rc ? rc : admin(t,
        "INSERT INTO \"%s_uuid\".\"Message\" (\"id\", \"providerMediaId\") VALUES "
        "('6f1c2c1e-8f7a-4c55-9a43-0f4b1f3a9e10', 'puuid')");
    return rc;
}

/* ---- synchronous wrappers around msgdb ---------------------------------------------- */

struct out {
    bool done;
    int status;
    char msg[MI_ERR_MSG_MAX];
    char pmid[64], url[128], backend[16];
    bool url_null;
    int64_t rows;
    int n;
    char ids[32][64];
    int64_t created[32];
};

static void out_fin(struct out *o, int status, const struct mi_err *err)
{
    o->done = true;
    o->status = status;
    snprintf(o->msg, sizeof(o->msg), "%s", err ? err->msg : "");
}

static void init_cb(void *ctx, int status, const struct mi_err *err)
{
    out_fin(ctx, status, err);
}

static void load_cb(void *ctx, int status, const struct msgdb_message *m,
                    const struct mi_err *err)
{
    struct out *o = ctx;
    if (m) {
        snprintf(o->pmid, sizeof(o->pmid), "%s", m->provider_media_id ? m->provider_media_id
                                                                       : "(null)");
        snprintf(o->url, sizeof(o->url), "%s", m->stored_url ? m->stored_url : "");
        snprintf(o->backend, sizeof(o->backend), "%s", m->stored_backend ? m->stored_backend
                                                                         : "");
        o->url_null = !m->stored_url;
    }
    out_fin(o, status, err);
}

static void mark_cb(void *ctx, int status, int64_t rows, const struct mi_err *err)
{
    struct out *o = ctx;
    o->rows = rows;
    out_fin(o, status, err);
}

static void scan_cb(void *ctx, int status, const struct msgdb_scan_row *rows, int n,
                    const struct mi_err *err)
{
    struct out *o = ctx;
    o->n = n;
    for (int i = 0; i < n && i < 32; i++) {
        snprintf(o->ids[i], sizeof(o->ids[i]), "%s", rows[i].id);
        o->created[i] = rows[i].created_ms;
    }
    out_fin(o, status, err);
}

static int wait_out(struct t *t, int rc, struct out *o)
{
    if (rc) {
        o->status = rc;
        return rc;
    }
    while (!o->done)
        uv_run(&t->loop, UV_RUN_ONCE);
    return o->status;
}

static int do_init(struct t *t, struct msgdb *db, struct out *o)
{
    memset(o, 0, sizeof(*o));
    return wait_out(t, msgdb_init(db, 5000, init_cb, o), o);
}

static int do_load(struct t *t, struct msgdb *db, const char *id, struct out *o)
{
    memset(o, 0, sizeof(*o));
    struct mi_err err = MI_ERR_INIT;
    int rc = msgdb_load(db, id, 5000, load_cb, o, &err);
    if (rc)
        snprintf(o->msg, sizeof(o->msg), "%s", err.msg);
    return wait_out(t, rc, o);
}

static int do_mark(struct t *t, struct msgdb *db, const char *id, const char *url,
                   const char *backend, struct out *o)
{
    memset(o, 0, sizeof(*o));
    struct mi_err err = MI_ERR_INIT;
    int rc = msgdb_mark_stored(db, id, url, backend, 5000, mark_cb, o, &err);
    if (rc)
        snprintf(o->msg, sizeof(o->msg), "%s", err.msg);
    return wait_out(t, rc, o);
}

static int do_scan(struct t *t, struct msgdb *db, const struct msgdb_scan *q, struct out *o)
{
    memset(o, 0, sizeof(*o));
    struct mi_err err = MI_ERR_INIT;
    int rc = msgdb_scan_batch(db, q, 5000, scan_cb, o, &err);
    if (rc)
        snprintf(o->msg, sizeof(o->msg), "%s", err.msg);
    return wait_out(t, rc, o);
}

/* Page through the whole scan with batches of @limit; "id,id,..." into @out. */
static int scan_all(struct t *t, struct msgdb *db, int limit, char *out, size_t outlen)
{
    struct out o;
    char after[64] = "";
    size_t n = 0;
    int batches = 0;
    out[0] = '\0';
    for (;;) {
        struct msgdb_scan q = { .after_id = batches ? after : NULL, .limit = limit };
        if (do_scan(t, db, &q, &o)) {
            printf("#   scan failed: %s\n", o.msg);
            return -1;
        }
        batches++;
        if (o.n > 32)
            return -1;
        for (int i = 0; i < o.n; i++)
            n += (size_t)snprintf(out + n, outlen - n, "%s%s", n ? "," : "", o.ids[i]);
        if (o.n < limit || batches > 100)
            return batches;
        snprintf(after, sizeof(after), "%s", o.ids[o.n - 1]);
    }
}

/* EXPLAIN @sql with @param as $1 and the other parameters NULL/10; true if the plan uses
 * the primary-key index. */
static bool uses_pkey(struct t *t, struct pg_pool *p, const char *sql, int nparams,
                      const char *param)
{
    char ex[1200];
    snprintf(ex, sizeof(ex), "EXPLAIN %s", sql);
    const char *params[4] = { param, NULL, NULL, "10" };
    if (nparams == 3)
        params[1] = params[2] = "x";
    struct it_res r = { 0 };
    int rc = it_query(&t->loop, p, ex, nparams, params, 5000, &r);
    bool ok = !rc && strstr(r.all, "Message_pkey") != NULL;
    if (!ok)
        printf("# plan:\n%s", r.all);
    it_res_free(&r);
    return ok;
}

/* ---- the tests ---------------------------------------------------------------------- */

static void test_int(struct t *t)
{
    char schema[96];
    snprintf(schema, sizeof(schema), "%s_int", t->prefix);
    struct pg_pool *p = pool_for(t, schema);
    struct msgdb *db = NULL;
    TAP_EQ_INT(msgdb_new(&db, p), 0);
    struct out o;
    struct mi_err err = MI_ERR_INIT;

    TAP_EQ_INT(msgdb_load(db, "1", 1000, load_cb, &o, &err), MSGDB_ENOTREADY);
    TAP_EQ_INT(do_init(t, db, &o), 0);
    TAP_EQ_INT(msgdb_id_type(db), MSGDB_ID_INT);
    char want[128];
    snprintf(want, sizeof(want), "\"%s\".\"Message\"", schema);
    TAP_EQ_STR(msgdb_table(db), want);
    TAP_CHECK(uses_pkey(t, p, msgdb_sql(db, MSGDB_SQL_LOAD), 1, "1"));
    TAP_CHECK(uses_pkey(t, p, msgdb_sql(db, MSGDB_SQL_MARK), 3, "1"));
    TAP_CHECK(uses_pkey(t, p, msgdb_sql(db, MSGDB_SQL_SCAN), 4, "5"));

    TAP_EQ_INT(do_load(t, db, "1", &o), 0);
    TAP_EQ_STR(o.pmid, "p1");
    TAP_CHECK(o.url_null);
    TAP_EQ_INT(do_load(t, db, "2", &o), 0);
    TAP_EQ_STR(o.url, "s3://x/y");
    TAP_EQ_INT(do_load(t, db, "999999", &o), MSGDB_NOT_FOUND);
    TAP_EQ_INT(do_load(t, db, "-5", &o), MSGDB_NOT_FOUND);
    TAP_EQ_INT(do_load(t, db, "0001", &o), 0);   /* same number as "1" */

    /* Ids that cannot be integers never reach the server. */
    static const char *bad[] = { "abc", "", " 1", "1 ", "1.0", "+1", "1; DROP TABLE x",
                                 "0x10", "-", "99999999999", "-2147483649",
                                 "99999999999999999999999" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        TAP_EQ_INT(do_load(t, db, bad[i], &o), MSGDB_BAD_ID);
        TAP_CHECK(!o.done);
    }
    TAP_EQ_INT(do_load(t, db, "abc", &o), MSGDB_BAD_ID);
    TAP_CHECK(strstr(o.msg, "\"abc\" is not an integer") && strstr(o.msg, "integer"));
    TAP_EQ_INT(do_load(t, db, "99999999999", &o), MSGDB_BAD_ID);
    TAP_CHECK(strstr(o.msg, "out of range") != NULL);
    TAP_EQ_INT(do_mark(t, db, "abc", "s3://b/k", "s3", &o), MSGDB_BAD_ID);
    TAP_EQ_INT(do_load(t, db, NULL, &o), MSGDB_BAD_ID);

    /* Mark stored: only the media columns change; the time is UTC even though the session
     * runs in New York. */
    TAP_EQ_INT(do_mark(t, db, "1", "s3://bucket/media/1/p1", "s3", &o), 0);
    TAP_EQ_INT(o.rows, 1);
    TAP_EQ_INT(do_mark(t, db, "424242", "s3://bucket/media/x", "s3", &o), 0);
    TAP_EQ_INT(o.rows, 0);
    struct it_res r = { 0 };
    TAP_EQ_INT(it_query(&t->loop, p,
                        "SELECT \"mediaStoredUrl\", \"mediaStorageBackend\", "
                        "abs(extract(epoch FROM (now() AT TIME ZONE 'UTC') - \"mediaStoredAt\"))"
                        " < 10, \"conversationId\", \"body\", \"providerMediaId\", "
                        "\"createdAt\" = timestamp '2024-01-01 00:00:00.123', "
                        "\"mediaStoredAt\" = date_trunc('milliseconds', \"mediaStoredAt\") "
                        "FROM \"Message\" WHERE \"id\" = 1", 0, NULL, 5000, &r), 0);
    TAP_EQ_STR(r.v[0], "s3://bucket/media/1/p1");
    TAP_EQ_STR(r.v[1], "s3");
    TAP_EQ_STR(r.v[2], "t");
    TAP_EQ_STR(r.v[3], "7");
    TAP_EQ_STR(r.v[4], "body 1");
    TAP_EQ_STR(r.v[5], "p1");
    TAP_EQ_STR(r.v[6], "t");
    TAP_EQ_STR(r.v[7], "t");
    TAP_EQ_INT(do_load(t, db, "1", &o), 0);
    TAP_EQ_STR(o.url, "s3://bucket/media/1/p1");
    TAP_EQ_STR(o.backend, "s3");

    /* Backfill scan: keyset pages of 5 cover exactly the rows with media left to store. */
    char all[512];
    TAP_EQ_INT(scan_all(t, db, 5, all, sizeof(all)), 5);
    TAP_EQ_STR(all, "5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25");
    TAP_EQ_INT(scan_all(t, db, 21, all, sizeof(all)), 2);
    TAP_EQ_INT(scan_all(t, db, 100, all, sizeof(all)), 1);

    /* createdAt bounds in UTC epoch ms: [Jan 5 00:00:00.123, Jan 10 00:00) -> rows 5..9. */
    struct msgdb_scan q = { .has_since = true, .since_ms = 1704412800123LL,
                            .has_until = true, .until_ms = 1704844800000LL, .limit = 16 };
    TAP_EQ_INT(do_scan(t, db, &q, &o), 0);
    TAP_EQ_INT(o.n, 5);
    TAP_EQ_STR(o.ids[0], "5");
    TAP_EQ_STR(o.ids[4], "9");
    TAP_EQ_INT(o.created[0], 1704412800123LL);
    q.after_id = "7";
    TAP_EQ_INT(do_scan(t, db, &q, &o), 0);
    TAP_EQ_INT(o.n, 2);
    TAP_EQ_STR(o.ids[0], "8");
    q.after_id = "abc";
    TAP_EQ_INT(do_scan(t, db, &q, &o), MSGDB_BAD_ID);
    q.after_id = NULL;
    q.limit = 0;
    TAP_EQ_INT(do_scan(t, db, &q, &o), -EINVAL);

    it_res_free(&r);
    msgdb_free(db);
    it_pool_end(&t->loop, p);
}

static void test_text(struct t *t)
{
    char schema[96];
    snprintf(schema, sizeof(schema), "%s_text", t->prefix);
    struct pg_pool *p = pool_for(t, schema);
    struct msgdb *db = NULL;
    TAP_EQ_INT(msgdb_new(&db, p), 0);
    struct out o;
    TAP_EQ_INT(do_init(t, db, &o), 0);
    TAP_EQ_INT(msgdb_id_type(db), MSGDB_ID_TEXT);
    TAP_CHECK(uses_pkey(t, p, msgdb_sql(db, MSGDB_SQL_LOAD), 1, "msg-a"));

    TAP_EQ_INT(do_load(t, db, "it's", &o), 0);
    TAP_EQ_STR(o.pmid, "pq");
    TAP_EQ_INT(do_load(t, db, "ü-id", &o), 0);
    TAP_EQ_STR(o.pmid, "pu");
    TAP_EQ_INT(do_load(t, db, "abc", &o), MSGDB_NOT_FOUND);
    TAP_EQ_INT(do_load(t, db, "1", &o), MSGDB_NOT_FOUND);
    TAP_EQ_INT(do_load(t, db, "bad\xff", &o), MSGDB_BAD_ID);
    TAP_EQ_INT(do_load(t, db, "\xc0\xaf", &o), MSGDB_BAD_ID);   /* overlong '/' */
    TAP_EQ_INT(do_load(t, db, "\xed\xa0\x80", &o), MSGDB_BAD_ID); /* surrogate */
    char longid[MSGDB_ID_MAX + 2];
    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    TAP_EQ_INT(do_load(t, db, longid, &o), MSGDB_BAD_ID);
    TAP_CHECK(strlen(o.msg) < 200 && strstr(o.msg, "...") != NULL);

    TAP_EQ_INT(do_mark(t, db, "ü-id", "file:///m/media/ü-id/pu", "local", &o), 0);
    TAP_EQ_INT(o.rows, 1);

    /* Pages of 2 return the ids in the server's text order, without gaps or repeats. */
    char all[512];
    TAP_EQ_INT(scan_all(t, db, 2, all, sizeof(all)), 4);
    struct it_res r = { 0 };
    TAP_EQ_INT(it_query(&t->loop, p,
                        "SELECT string_agg(\"id\", ',' ORDER BY \"id\") FROM \"Message\" "
                        "WHERE \"providerMediaId\" IS NOT NULL AND \"mediaStoredUrl\" IS NULL",
                        0, NULL, 5000, &r), 0);
    TAP_EQ_STR(all, r.v[0]);
    TAP_CHECK(strstr(all, "ü-id") == NULL && strstr(all, "none") == NULL);
    TAP_CHECK(strstr(all, "it's") != NULL);
    it_res_free(&r);
    msgdb_free(db);
    it_pool_end(&t->loop, p);
}

static void test_uuid(struct t *t)
{
    char schema[96];
    snprintf(schema, sizeof(schema), "%s_uuid", t->prefix);
    struct pg_pool *p = pool_for(t, schema);
    struct msgdb *db = NULL;
    TAP_EQ_INT(msgdb_new(&db, p), 0);
    struct out o;
    TAP_EQ_INT(do_init(t, db, &o), 0);
    TAP_EQ_INT(msgdb_id_type(db), MSGDB_ID_UUID);
    TAP_EQ_INT(do_load(t, db, "6f1c2c1e-8f7a-4c55-9a43-0f4b1f3a9e10", &o), 0);
    TAP_EQ_STR(o.pmid, "puuid");
    TAP_EQ_INT(do_load(t, db, "6F1C2C1E8F7A4C559A430F4B1F3A9E10", &o), 0);
    TAP_EQ_INT(do_load(t, db, "00000000-0000-0000-0000-000000000000", &o), MSGDB_NOT_FOUND);
    TAP_EQ_INT(do_load(t, db, "1234", &o), MSGDB_BAD_ID);
    TAP_EQ_INT(do_load(t, db, "6f1c2c1e-8f7a-4c55-9a43-0f4b1f3a9e1g", &o), MSGDB_BAD_ID);
    msgdb_free(db);
    it_pool_end(&t->loop, p);
}

static void test_schema_errors(struct t *t)
{
    char schema[96];
    struct out o;
    struct msgdb *db = NULL;
    /* The table lacks columns. */
    snprintf(schema, sizeof(schema), "%s_cols", t->prefix);
    struct pg_pool *p = pool_for(t, schema);
    TAP_EQ_INT(msgdb_new(&db, p), 0);
    TAP_EQ_INT(do_init(t, db, &o), MSGDB_ESCHEMA);
    TAP_CHECK(strstr(o.msg, "lacks column(s) \"mediaStoredUrl\", \"mediaStoredAt\", "
                            "\"mediaStorageBackend\"") != NULL);
    printf("# %s\n", o.msg);
    TAP_EQ_INT(msgdb_id_type(db), MSGDB_ID_UNKNOWN);
    msgdb_free(db);
    it_pool_end(&t->loop, p);

    /* The ?schema= names a schema that does not exist. */
    snprintf(schema, sizeof(schema), "%s_nope", t->prefix);
    p = pool_for(t, schema);
    TAP_EQ_INT(msgdb_new(&db, p), 0);
    TAP_EQ_INT(do_init(t, db, &o), MSGDB_ESCHEMA);
    TAP_CHECK(strstr(o.msg, "?schema=") != NULL);
    printf("# %s\n", o.msg);
    /* Freeing while an init is pending is allowed; its callback still runs once. */
    memset(&o, 0, sizeof(o));
    TAP_EQ_INT(msgdb_init(db, 5000, init_cb, &o), 0);
    msgdb_free(db);
    while (!o.done)
        uv_run(&t->loop, UV_RUN_ONCE);
    TAP_EQ_INT(o.status, 0);   /* the query ran; the result had nowhere to go */
    it_pool_end(&t->loop, p);
}

int main(void)
{
    static struct t t;
    alarm(240);
    t.url = it_url_or_skip();
    snprintf(t.prefix, sizeof(t.prefix), "mi_test_%d", (int)getpid());
    uv_loop_init(&t.loop);
    struct pg_pool *p = NULL;
    struct mi_err err = MI_ERR_INIT;
    if (pg_pool_new(&p, &t.loop, pg_url_keywords(t.url), pg_url_values(t.url), NULL, &err)) {
        printf("Bail out! %s\n", err.msg);
        return 1;
    }
    t.admin = p;
    it_reachable_or_skip(&t.loop, p);
    TAP_EQ_INT(setup(&t), 0);

    test_int(&t);
    test_text(&t);
    test_uuid(&t);
    test_schema_errors(&t);

    TAP_EQ_INT(admin(&t, "DROP SCHEMA \"%s_int\", \"%s_text\", \"%s_uuid\", \"%s_cols\" "
                         "CASCADE"), 0);
    it_pool_end(&t.loop, p);
    TAP_EQ_INT(uv_loop_close(&t.loop), 0);
    pg_url_free(t.url);
    return tap_done();
}
