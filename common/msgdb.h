/*
 * msgdb.h - the operations media-ingest performs on the app's Prisma "Message" table.
 *
 * Only the contract's columns are read or written: "id", "providerMediaId",
 * "mediaStoredUrl", "mediaStoredAt", "mediaStorageBackend" and "createdAt".
 *
 * msgdb_init() finds the table the way the queries will (through the connection's
 * search_path, i.e. DATABASE_URL's ?schema=), checks that the columns exist and learns
 * the type of "id": Prisma maps Int to integer, BigInt to bigint and String to text
 * (uuid with @db.Uuid). Later statements name the table with its schema and compare "id"
 * to a parameter cast to that type, so the primary-key index is used.
 *
 * A messageId that cannot be a value of the id column ("abc" or 99999999999 for an
 * integer id, invalid UTF-8 for text) is refused up front with MSGDB_BAD_ID and a clear
 * message, never sent to the server.
 *
 * All operations complete through pg.h: callbacks run exactly once from the loop, with
 * borrowed strings valid only during the callback.
 */
#ifndef MI_MSGDB_H
#define MI_MSGDB_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "pg.h"

/* Positive codes (pg.h's PG_E* codes 1..15 are passed through unchanged). */
#define MSGDB_NOT_FOUND 16  /* no "Message" row has that id */
#define MSGDB_BAD_ID    17  /* the id is not a valid value of the "id" column (permanent) */
#define MSGDB_ESCHEMA   18  /* the table or a column is missing, or "id" has an odd type */
#define MSGDB_ENOTREADY 19  /* msgdb_init() has not completed successfully */

/* Largest text id accepted, in bytes, and largest scan batch. */
#define MSGDB_ID_MAX     1024
#define MSGDB_SCAN_MAX   10000

enum msgdb_id_type {
    MSGDB_ID_UNKNOWN = 0,  /* before msgdb_init() */
    MSGDB_ID_INT,          /* smallint, integer or bigint (Prisma Int / BigInt) */
    MSGDB_ID_TEXT,         /* text or varchar (Prisma String) */
    MSGDB_ID_UUID,         /* uuid (Prisma String @db.Uuid) */
};

/* The statements, for msgdb_sql() (diagnostics, EXPLAIN in tests). */
enum msgdb_stmt { MSGDB_SQL_LOAD = 0, MSGDB_SQL_MARK, MSGDB_SQL_SCAN, MSGDB_SQL__MAX };

struct msgdb;

/**
 * msgdb_new() - make the table accessor.
 * @out: receives the new object (caller frees with msgdb_free()).
 * @pool: borrowed; must outlive every operation.
 * Return: 0 or -ENOMEM.
 */
int msgdb_new(struct msgdb **out, struct pg_pool *pool) MI_MUSTCHECK;

/**
 * msgdb_free() - free @db; NULL is a no-op. Operations already submitted still complete
 * (they do not refer to @db), so this may be called while some are pending.
 */
void msgdb_free(struct msgdb *db);

typedef void (*msgdb_init_cb)(void *ctx, int status, const struct mi_err *err);

/**
 * msgdb_init() - inspect the table (see the file comment). May be repeated, e.g. after
 * a failure because the database was not up yet.
 * @cb: called once from the loop with 0, MSGDB_ESCHEMA (err names what is missing) or a
 *      pg.h status.
 * Return: 0 (cb will be called) or a pg_query() refusal (cb will not be called).
 */
int msgdb_init(struct msgdb *db, int timeout_ms, msgdb_init_cb cb, void *ctx) MI_MUSTCHECK;

/** msgdb_id_type() - the detected type of "id" (MSGDB_ID_UNKNOWN before init). */
enum msgdb_id_type msgdb_id_type(const struct msgdb *db);

/** msgdb_table() - the schema-qualified table, e.g. "public"."Message" ("" before init). */
const char *msgdb_table(const struct msgdb *db);

/** msgdb_sql() - the SQL text of a statement ("" before init). Borrowed. */
const char *msgdb_sql(const struct msgdb *db, enum msgdb_stmt which);

/**
 * msgdb_check_id() - check that @id can be a value of the "id" column.
 * Return: 0, MSGDB_BAD_ID (err says why), MSGDB_ENOTREADY.
 */
int msgdb_check_id(const struct msgdb *db, const char *id, struct mi_err *err);

/* One row as msgdb_load() reports it; strings are borrowed, NULL for SQL NULL. */
struct msgdb_message {
    const char *provider_media_id;
    const char *stored_url;
    const char *stored_backend;
};

typedef void (*msgdb_load_cb)(void *ctx, int status, const struct msgdb_message *m,
                              const struct mi_err *err);

/**
 * msgdb_load() - read the media columns of message @id.
 * @cb: called once from the loop: 0 with @m, MSGDB_NOT_FOUND, or a pg.h status with err.
 * Return: 0 (cb will be called); otherwise cb is not called: MSGDB_BAD_ID or
 *         MSGDB_ENOTREADY (err filled), or a pg_query() refusal.
 */
int msgdb_load(struct msgdb *db, const char *id, int timeout_ms, msgdb_load_cb cb, void *ctx,
               struct mi_err *err) MI_MUSTCHECK;

typedef void (*msgdb_mark_cb)(void *ctx, int status, int64_t rows, const struct mi_err *err);

/**
 * msgdb_mark_stored() - record that the media of message @id is stored:
 * "mediaStoredUrl" = @url, "mediaStoredAt" = now (UTC, millisecond precision, as Prisma
 * writes DateTime), "mediaStorageBackend" = @backend. No other column is touched.
 * @cb: called once with 0 and the number of rows updated (0 when the row is gone), or a
 *      pg.h status with err.
 * Return: as msgdb_load(); -EINVAL when @url or @backend is NULL.
 */
int msgdb_mark_stored(struct msgdb *db, const char *id, const char *url, const char *backend,
                      int timeout_ms, msgdb_mark_cb cb, void *ctx,
                      struct mi_err *err) MI_MUSTCHECK;

/* Backfill batch query: rows with media to store, in primary-key order. */
struct msgdb_scan {
    const char *after_id;  /* keyset cursor: only ids greater than this; NULL from the start */
    bool has_since;        /* "createdAt" >= since_ms (epoch ms, UTC) */
    int64_t since_ms;
    bool has_until;        /* "createdAt" < until_ms */
    int64_t until_ms;
    int limit;             /* 1..MSGDB_SCAN_MAX */
};

/* One backfill candidate; strings are borrowed (valid during the callback). */
struct msgdb_scan_row {
    const char *id;
    const char *provider_media_id;
    int64_t created_ms;    /* "createdAt" as epoch milliseconds (UTC) */
};

typedef void (*msgdb_scan_cb)(void *ctx, int status, const struct msgdb_scan_row *rows,
                              int n, const struct mi_err *err);

/**
 * msgdb_scan_batch() - up to @q->limit rows with "providerMediaId" set and
 * "mediaStoredUrl" NULL, "id" greater than @q->after_id, within the optional
 * "createdAt" bounds, ordered by "id" (keyset pagination: pass the last id of a batch
 * as the next after_id; fewer than limit rows means the scan is complete).
 * @cb: called once with 0 and the rows (n may be 0), or a pg.h status with err.
 * Return: as msgdb_load() (MSGDB_BAD_ID for a bad after_id); -EINVAL for a bad limit.
 */
int msgdb_scan_batch(struct msgdb *db, const struct msgdb_scan *q, int timeout_ms,
                     msgdb_scan_cb cb, void *ctx, struct mi_err *err) MI_MUSTCHECK;

#endif
