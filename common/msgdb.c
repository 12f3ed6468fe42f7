#include "msgdb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MSGDB_SQL_MAX 1024

struct msgdb_op;

struct msgdb {
    struct pg_pool *pool;
    enum msgdb_id_type id_type;
    int64_t id_min, id_max;        /* range of an integer id column */
    char id_typname[64];           /* e.g. "int4", for messages */
    char table[160];               /* "schema"."Message" */
    char sql[MSGDB_SQL__MAX][MSGDB_SQL_MAX];
    struct msgdb_op *init_op;      /* pending msgdb_init(), detached by msgdb_free() */
};

/* Per-operation context: the caller's callback, freed once it has been called. */
struct msgdb_op {
    struct msgdb *db;              /* only for init; NULL once detached */
    union {
        msgdb_init_cb init;
        msgdb_load_cb load;
        msgdb_mark_cb mark;
        msgdb_scan_cb scan;
    } cb;
    void *ctx;
    int limit;
};

/* The columns media-ingest uses; the first is the primary key. */
static const char *const needed_cols[] = {
    "id", "providerMediaId", "mediaStoredUrl", "mediaStoredAt", "mediaStorageBackend",
    "createdAt",
};
#define NCOLS (sizeof(needed_cols) / sizeof(needed_cols[0]))

int msgdb_new(struct msgdb **out, struct pg_pool *pool)
{
    struct msgdb *db = calloc(1, sizeof(*db));
    if (!db)
        return -ENOMEM;
    db->pool = pool;
    *out = db;
    return 0;
}

void msgdb_free(struct msgdb *db)
{
    if (!db)
        return;
    if (db->init_op)
        db->init_op->db = NULL;
    free(db);
}

enum msgdb_id_type msgdb_id_type(const struct msgdb *db)
{
    return db->id_type;
}

const char *msgdb_table(const struct msgdb *db)
{
    return db->table;
}

const char *msgdb_sql(const struct msgdb *db, enum msgdb_stmt which)
{
    return which < MSGDB_SQL__MAX ? db->sql[which] : "";
}

/* ---- id validation ------------------------------------------------------------------ */

/* A printable rendering of an untrusted id for messages: ASCII only, at most 48 bytes. */
static void show_id(char *out, size_t outlen, const char *id)
{
    size_t n = 0, max = outlen > 52 ? 48 : outlen - 4;
    for (const unsigned char *p = (const unsigned char *)id; *p && n < max; p++)
        out[n++] = *p >= 0x20 && *p < 0x7f && *p != '"' ? (char)*p : '?';
    if (id[n]) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

static bool parse_int_id(const char *s, int64_t *v)
{
    const char *d = *s == '-' ? s + 1 : s;
    if (!*d || strlen(d) > 19)
        return false;
    for (const char *p = d; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    errno = 0;
    char *end = NULL;
    long long x = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *v = x;
    return true;
}

/* Well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF). */
static bool utf8_ok(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s;
        int n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
        if (n < 0)
            return false;
        unsigned cp = n == 0 ? c : c & (0x3fu >> n);
        for (int i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i] & 0x3f);
        }
        static const unsigned min[] = { 0, 0x80, 0x800, 0x10000 };
        if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        s += n + 1;
    }
    return true;
}

static bool uuid_ok(const char *s)
{
    size_t len = strlen(s);
    bool dashed = len == 36;
    if (!dashed && len != 32)
        return false;
    for (size_t i = 0; i < len; i++) {
        bool dash_pos = dashed && (i == 8 || i == 13 || i == 18 || i == 23);
        char c = s[i];
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (dash_pos ? c != '-' : !hex)
            return false;
    }
    return true;
}

/* A refused id: quoted (shortened, escaped) only now, off the hot path of good ids. */
static int bad_id(struct mi_err *err, const char *id, const char *why)
{
    char shown[64];

    show_id(shown, sizeof(shown), id);
    return mi_err_set(err, MSGDB_BAD_ID, "messageId \"%s\" %s", shown, why);
}

int msgdb_check_id(const struct msgdb *db, const char *id, struct mi_err *err)
{
    char why[MI_ERR_MSG_MAX];
    int64_t v = 0;

    if (db->id_type == MSGDB_ID_UNKNOWN)
        return mi_err_set(err, MSGDB_ENOTREADY, "the \"Message\" table was not inspected yet");
    if (!id)
        return mi_err_set(err, MSGDB_BAD_ID, "messageId is missing");
    switch (db->id_type) {
    case MSGDB_ID_INT:
        if (!parse_int_id(id, &v)) {
            snprintf(why, sizeof(why), "is not an integer, but %s.\"id\" is %s", db->table,
                     db->id_typname);
            return bad_id(err, id, why);
        }
        if (v < db->id_min || v > db->id_max) {
            snprintf(why, sizeof(why), "is out of range for %s.\"id\" (%s)", db->table,
                     db->id_typname);
            return bad_id(err, id, why);
        }
        return 0;
    case MSGDB_ID_UUID:
        if (!uuid_ok(id)) {
            snprintf(why, sizeof(why), "is not a UUID, but %s.\"id\" is uuid", db->table);
            return bad_id(err, id, why);
        }
        return 0;
    default:
        if (strlen(id) > MSGDB_ID_MAX || !utf8_ok((const unsigned char *)id)) {
            snprintf(why, sizeof(why), "is longer than %d bytes or not valid UTF-8",
                     MSGDB_ID_MAX);
            return bad_id(err, id, why);
        }
        return 0;
    }
}

/* ---- init: inspect the table -------------------------------------------------------- */

static const char inspect_sql[] =
    "SELECT current_schema(), current_setting('search_path'), n.nspname, a.attname, "
    "t.typname "
    "FROM (SELECT to_regclass('\"Message\"') AS rel) r "
    "LEFT JOIN pg_catalog.pg_class c ON c.oid = r.rel "
    "LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
    "AND NOT a.attisdropped AND a.attname IN ('id', 'providerMediaId', 'mediaStoredUrl', "
    "'mediaStoredAt', 'mediaStorageBackend', 'createdAt') "
    "LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid";

/* Quote @name as an SQL identifier into @out. */
static void quote_ident(char *out, size_t outlen, const char *name)
{
    size_t n = 0;
    out[n++] = '"';
    for (const char *p = name; *p && n + 3 < outlen; p++) {
        if (*p == '"')
            out[n++] = '"';
        out[n++] = *p;
    }
    out[n++] = '"';
    out[n] = '\0';
}

static int set_id_type(struct msgdb *db, const char *typ, struct mi_err *err)
{
    static const struct {
        const char *name;
        enum msgdb_id_type type;
        int64_t min, max;
    } types[] = {
        { "int2", MSGDB_ID_INT, INT16_MIN, INT16_MAX },
        { "int4", MSGDB_ID_INT, INT32_MIN, INT32_MAX },
        { "int8", MSGDB_ID_INT, INT64_MIN, INT64_MAX },
        { "text", MSGDB_ID_TEXT, 0, 0 },
        { "varchar", MSGDB_ID_TEXT, 0, 0 },
        { "uuid", MSGDB_ID_UUID, 0, 0 },
    };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (!strcmp(typ, types[i].name)) {
            db->id_type = types[i].type;
            db->id_min = types[i].min;
            db->id_max = types[i].max;
            snprintf(db->id_typname, sizeof(db->id_typname), "%s",
                     !strcmp(typ, "int4") ? "integer" : !strcmp(typ, "int8") ? "bigint" : typ);
            return 0;
        }
    }
    return mi_err_set(err, MSGDB_ESCHEMA, "%s.\"id\" has type %s; media-ingest supports "
                      "integer, bigint, text, varchar and uuid ids", db->table, typ);
}

/*
 * Build the statements for the detected types. The scan names the table's columns
 * through an alias: a bare ORDER BY "id" would sort by the output column "id"::text and
 * so break keyset pagination of integer ids ("10" < "9").
 */
static void build_sql(struct msgdb *db, const char *stored_at_type, const char *created_type)
{
    const char *cast = db->id_type == MSGDB_ID_INT ? "bigint"
                       : db->id_type == MSGDB_ID_UUID ? "uuid" : "text";
    /* Prisma writes DateTime into timestamp(3) columns as UTC wall-clock time. */
    bool tz_stored = !strcmp(stored_at_type, "timestamptz");
    bool tz_created = !strcmp(created_type, "timestamptz");
    const char *now = tz_stored ? "now()" : "(now() AT TIME ZONE 'UTC')::timestamp(3)";
    const char *utc = tz_created ? "" : " AT TIME ZONE 'UTC'";
    snprintf(db->sql[MSGDB_SQL_LOAD], MSGDB_SQL_MAX,
             "SELECT \"providerMediaId\", \"mediaStoredUrl\", \"mediaStorageBackend\" "
             "FROM %s WHERE \"id\" = $1::%s", db->table, cast);
    snprintf(db->sql[MSGDB_SQL_MARK], MSGDB_SQL_MAX,
             "UPDATE %s SET \"mediaStoredUrl\" = $2, \"mediaStoredAt\" = %s, "
             "\"mediaStorageBackend\" = $3 WHERE \"id\" = $1::%s", db->table, now, cast);
    snprintf(db->sql[MSGDB_SQL_SCAN], MSGDB_SQL_MAX,
             "SELECT m.\"id\"::text AS id_text, m.\"providerMediaId\", "
             "(extract(epoch FROM m.\"createdAt\") * 1000)::bigint AS created_ms FROM %s m "
             "WHERE ($1::%s IS NULL OR m.\"id\" > $1::%s) "
             "AND m.\"providerMediaId\" IS NOT NULL AND m.\"providerMediaId\" <> '' "
             "AND m.\"mediaStoredUrl\" IS NULL "
             "AND ($2::bigint IS NULL OR m.\"createdAt\" >= "
             "to_timestamp($2::bigint / 1000.0)%s) "
             "AND ($3::bigint IS NULL OR m.\"createdAt\" < to_timestamp($3::bigint / 1000.0)%s) "
             "ORDER BY m.\"id\" LIMIT $4::int", db->table, cast, cast, utc, utc);
}

static int inspect_result(struct msgdb *db, const struct pg_result *res, struct mi_err *err)
{
    const char *types[NCOLS] = { NULL };
    int nrows = pg_result_nrows(res);
    const char *nsp = pg_result_value(res, 0, 2);
    if (!nsp) {
        const char *cur = pg_result_value(res, 0, 0);
        if (!cur)
            return mi_err_set(err, MSGDB_ESCHEMA, "no schema of the search_path (%.80s) exists;"
                              " check ?schema= in DATABASE_URL",
                              pg_result_value(res, 0, 1) ? pg_result_value(res, 0, 1) : "");
        return mi_err_set(err, MSGDB_ESCHEMA, "table \"Message\" not found in schema "
                          "\"%.60s\" (search_path %.80s); check ?schema= in DATABASE_URL",
                          cur, pg_result_value(res, 0, 1) ? pg_result_value(res, 0, 1) : "");
    }
    char qn[140];
    quote_ident(qn, sizeof(qn), nsp);
    snprintf(db->table, sizeof(db->table), "%s.\"Message\"", qn);
    for (int i = 0; i < nrows; i++) {
        const char *col = pg_result_value(res, i, 3);
        for (size_t j = 0; col && j < NCOLS; j++)
            if (!strcmp(col, needed_cols[j]))
                types[j] = pg_result_value(res, i, 4);
    }
    char missing[160] = "";
    for (size_t j = 0; j < NCOLS; j++) {
        size_t l = strlen(missing);
        if (!types[j])
            snprintf(missing + l, sizeof(missing) - l, "%s\"%s\"", l ? ", " : "",
                     needed_cols[j]);
    }
    if (missing[0])
        return mi_err_set(err, MSGDB_ESCHEMA, "table %s lacks column(s) %s that media-ingest "
                          "needs", db->table, missing);
    int rc = set_id_type(db, types[0], err);
    if (rc)
        return rc;
    build_sql(db, types[3], types[5]);
    return 0;
}

static void init_done(void *ctx, int status, const struct pg_result *res,
                      const struct mi_err *err)
{
    struct msgdb_op *op = ctx;
    struct msgdb *db = op->db;
    struct mi_err e = MI_ERR_INIT;
    if (db) {
        db->init_op = NULL;
        if (!status)
            status = inspect_result(db, res, &e);
        else
            e = *err;
        if (status)
            db->id_type = MSGDB_ID_UNKNOWN;
    } else if (status) {
        e = *err;
    }
    op->cb.init(op->ctx, status, status ? &e : NULL);
    free(op);
}

int msgdb_init(struct msgdb *db, int timeout_ms, msgdb_init_cb cb, void *ctx)
{
    if (db->init_op)
        return -EBUSY;
    struct msgdb_op *op = calloc(1, sizeof(*op));
    if (!op)
        return -ENOMEM;
    op->db = db;
    op->cb.init = cb;
    op->ctx = ctx;
    int rc = pg_query(db->pool, inspect_sql, 0, NULL, timeout_ms, init_done, op);
    if (rc) {
        free(op);
        return rc;
    }
    db->init_op = op;
    return 0;
}

/* ---- operations --------------------------------------------------------------------- */

/*
 * Check what every statement needs (an inspected table; @id of its id type, when @need_id
 * or given) and allocate the operation. Return 0, msgdb_check_id()'s error, or -ENOMEM.
 */
static int op_new(struct msgdb *db, bool need_id, const char *id, void *ctx,
                  struct msgdb_op **opp, struct mi_err *err)
{
    int rc = 0;

    *opp = NULL;
    if (need_id || id)
        rc = msgdb_check_id(db, id, err);
    else if (db->id_type == MSGDB_ID_UNKNOWN)
        rc = mi_err_set(err, MSGDB_ENOTREADY, "the \"Message\" table was not inspected yet");
    if (rc)
        return rc;
    *opp = calloc(1, sizeof(**opp));
    if (!*opp)
        return -ENOMEM;
    (*opp)->ctx = ctx;
    return 0;
}

static int op_submit(struct msgdb *db, struct msgdb_op *op, enum msgdb_stmt st, int n,
                     const char *const *params, int timeout_ms, pg_query_cb done)
{
    int rc = pg_query(db->pool, db->sql[st], n, params, timeout_ms, done, op);
    if (rc)
        free(op);
    return rc;
}

static void load_done(void *ctx, int status, const struct pg_result *res,
                      const struct mi_err *err)
{
    struct msgdb_op *op = ctx;
    if (status) {
        op->cb.load(op->ctx, status, NULL, err);
    } else if (pg_result_nrows(res) < 1) {
        struct mi_err e = MI_ERR_INIT;
        mi_err_set(&e, MSGDB_NOT_FOUND, "no \"Message\" row has this id");
        op->cb.load(op->ctx, MSGDB_NOT_FOUND, NULL, &e);
    } else {
        struct msgdb_message m = {
            .provider_media_id = pg_result_value(res, 0, 0),
            .stored_url = pg_result_value(res, 0, 1),
            .stored_backend = pg_result_value(res, 0, 2),
        };
        op->cb.load(op->ctx, 0, &m, NULL);
    }
    free(op);
}

int msgdb_load(struct msgdb *db, const char *id, int timeout_ms, msgdb_load_cb cb, void *ctx,
               struct mi_err *err)
{
    struct msgdb_op *op;
    int rc = op_new(db, true, id, ctx, &op, err);
    if (rc)
        return rc;
    op->cb.load = cb;
    const char *params[] = { id };
    return op_submit(db, op, MSGDB_SQL_LOAD, 1, params, timeout_ms, load_done);
}

static void mark_done(void *ctx, int status, const struct pg_result *res,
                      const struct mi_err *err)
{
    struct msgdb_op *op = ctx;
    op->cb.mark(op->ctx, status, status ? 0 : pg_result_affected(res), err);
    free(op);
}

int msgdb_mark_stored(struct msgdb *db, const char *id, const char *url, const char *backend,
                      int timeout_ms, msgdb_mark_cb cb, void *ctx, struct mi_err *err)
{
    if (!url || !backend)
        return mi_err_set(err, -EINVAL, "msgdb_mark_stored: url and backend are required");
    struct msgdb_op *op;
    int rc = op_new(db, true, id, ctx, &op, err);
    if (rc)
        return rc;
    op->cb.mark = cb;
    const char *params[] = { id, url, backend };
    return op_submit(db, op, MSGDB_SQL_MARK, 3, params, timeout_ms, mark_done);
}

static void scan_done(void *ctx, int status, const struct pg_result *res,
                      const struct mi_err *err)
{
    struct msgdb_op *op = ctx;
    int n = status ? 0 : pg_result_nrows(res);
    if (n > op->limit)
        n = op->limit;
    size_t cnt = n > 0 ? (size_t)n : 0;
    struct msgdb_scan_row *rows = cnt ? calloc(cnt, sizeof(*rows)) : NULL;
    if (cnt && !rows) {
        struct mi_err e = MI_ERR_INIT;
        mi_err_set(&e, -ENOMEM, "out of memory reading a backfill batch");
        op->cb.scan(op->ctx, -ENOMEM, NULL, 0, &e);
        free(op);
        return;
    }
    for (int i = 0; i < n; i++) {
        int64_t ms = 0;
        const char *t = pg_result_value(res, i, 2);
        if (t)
            ms = strtoll(t, NULL, 10);
        rows[i] = (struct msgdb_scan_row){ pg_result_value(res, i, 0),
                                           pg_result_value(res, i, 1), ms };
    }
    op->cb.scan(op->ctx, status, rows, n, err);
    free(rows);
    free(op);
}

int msgdb_scan_batch(struct msgdb *db, const struct msgdb_scan *q, int timeout_ms,
                     msgdb_scan_cb cb, void *ctx, struct mi_err *err)
{
    if (q->limit < 1 || q->limit > MSGDB_SCAN_MAX)
        return mi_err_set(err, -EINVAL, "backfill batch size %d is outside 1..%d", q->limit,
                          MSGDB_SCAN_MAX);
    struct msgdb_op *op;
    int rc = op_new(db, false, q->after_id, ctx, &op, err);
    if (rc)
        return rc;
    char since[24], until[24], limit[16];
    snprintf(since, sizeof(since), "%lld", (long long)q->since_ms);
    snprintf(until, sizeof(until), "%lld", (long long)q->until_ms);
    snprintf(limit, sizeof(limit), "%d", q->limit);
    op->cb.scan = cb;
    op->limit = q->limit;
    const char *params[] = { q->after_id, q->has_since ? since : NULL,
                             q->has_until ? until : NULL, limit };
    return op_submit(db, op, MSGDB_SQL_SCAN, 4, params, timeout_ms, scan_done);
}
