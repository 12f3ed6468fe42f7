/*
 * pg.h - asynchronous PostgreSQL queries on a libuv loop: a small pool of libpq
 * connections.
 *
 * Each connection is driven by one uv_poll_t on its socket (libpq's non-blocking API:
 * PQconnectStartParams/PQconnectPoll, PQsendQueryParams/PQflush, PQconsumeInput/
 * PQisBusy/PQgetResult) and one uv_timer_t (connect deadline or reconnect back-off).
 * A connection runs one query at a time; queries wait in one FIFO for a free
 * connection. Every query has a deadline covering both the wait and the execution.
 *
 * libpq 15 can only cancel a query with the blocking PQcancel(), so a query whose
 * deadline passes while it runs is failed with PG_ETIMEDOUT and its connection is
 * dropped and reopened (the server notices the closed socket and ends the backend).
 *
 * Queries use the extended protocol with an unnamed statement and text parameters, so
 * they work behind PgBouncer in transaction mode (Prisma's ?pgbouncer=true) and need no
 * escaping: never build SQL from data, pass it as $1, $2, ...
 *
 * Connections break (server restart, pg_terminate_backend, network): the query in
 * flight fails with PG_ECONNLOST, queued queries keep waiting (bounded by their
 * deadlines) and the connection is reopened with exponential back-off and jitter.
 *
 * Threading: everything runs on the loop thread. Not thread-safe.
 */
#ifndef MI_PG_H
#define MI_PG_H

#include <stdint.h>
#include <uv.h>

#include "err.h"

/* Positive status codes (1..15; msgdb.h uses 16 and up, so codes can be forwarded). */
#define PG_EQUERY    1  /* the server rejected the query; err has SQLSTATE and message */
#define PG_ETIMEDOUT 2  /* the deadline passed while waiting for a connection or running */
#define PG_ECONNLOST 3  /* the connection broke while the query was in flight */
#define PG_ECLOSED   4  /* pg_pool_close() was called: no new queries */
#define PG_EFULL     5  /* too many queries are waiting (opts.max_queue) */

/* Limits of one query: parameters and the bytes of SQL text plus parameter values. */
#define PG_MAX_PARAMS      1000
#define PG_MAX_QUERY_BYTES (1024 * 1024)

/* Connection events, reported to opts.on_event so that the caller can log them. */
enum pg_event {
    PG_EV_CONNECTED = 0,    /* a connection is established (err is NULL) */
    PG_EV_CONNECT_FAILED,   /* an attempt failed; a retry is scheduled (err says why) */
    PG_EV_LOST,             /* an established connection broke or was dropped (err says why) */
};

/* How long a query waits for a busy pool before it opens one more connection. */
#define PG_GROW_WAIT_MS 10

struct pg_pool_opts {
    int size;                 /* connections, 1..64; 0 means 4 */
    int initial;              /* connections opened at once, 1..size; 0 means size. The
                               * others open one at a time, each when a query has waited
                               * PG_GROW_WAIT_MS for a connection, and then stay open */
    int connect_timeout_ms;   /* deadline of one connection attempt; 0 means the
                               * keywords' connect_timeout (seconds), else 10000 */
    int backoff_base_ms;      /* first reconnect delay; 0 means 200 */
    int backoff_max_ms;       /* largest reconnect delay; 0 means 10000 */
    int max_queue;            /* queries that may wait for a connection; 0 means 4096 */
    int default_timeout_ms;   /* used when pg_query() gets timeout_ms <= 0; 0 means 30000 */
    /*
     * Optional: called from the loop on connection events, with the connection's index.
     * @err is borrowed for the call. It must not call pg_pool_free().
     */
    void (*on_event)(void *ctx, int conn, enum pg_event ev, const struct mi_err *err);
    /* Optional: server notices and warnings as one line (borrowed); dropped when NULL. */
    void (*on_notice)(void *ctx, int conn, const char *msg);
    void *event_ctx;   /* passed to on_event and on_notice */
};

struct pg_pool_stats {
    int size;            /* connections in the pool */
    int connected;       /* established (idle or busy) */
    int connecting;      /* attempts in progress */
    unsigned queued;     /* queries waiting for a connection */
    unsigned in_flight;  /* queries running */
    uint64_t ok, failed; /* completed queries since pg_pool_new() */
    uint64_t reconnects; /* connections lost or dropped since pg_pool_new() */
};

struct pg_pool;
struct pg_result;

/**
 * typedef pg_query_cb - completion of a query, called exactly once from the loop (never
 * from inside pg_query()).
 * @ctx: the caller's pointer given to pg_query().
 * @status: 0, PG_EQUERY, PG_ETIMEDOUT, PG_ECONNLOST, or -ENOMEM.
 * @res: the result (borrowed, valid only during the callback; copy what you need); not
 *       NULL when @status is 0 or PG_EQUERY, otherwise NULL.
 * @err: NULL when @status is 0, otherwise a message a person can act on (borrowed).
 *
 * The callback may call pg_query() and pg_pool_close(), but not pg_pool_free().
 */
typedef void (*pg_query_cb)(void *ctx, int status, const struct pg_result *res,
                            const struct mi_err *err);

/**
 * pg_pool_new() - make a pool and start connecting its connections (from the loop).
 * @out: receives the new pool (caller ends it with pg_pool_close() and pg_pool_free()).
 * @loop: borrowed; must outlive the pool.
 * @keywords, @values: NULL-terminated libpq connection parameters, e.g. from
 *       pg_url_keywords()/pg_url_values() (copied; the caller may free them afterwards).
 * @opts: may be NULL for defaults (copied).
 * @err: filled when an option is out of range.
 * Return: 0, -EINVAL (bad option, err filled), -ENOMEM.
 *
 * PQconnectStartParams() resolves host names synchronously; use IP addresses or a local
 * resolver when that matters.
 */
int pg_pool_new(struct pg_pool **out, uv_loop_t *loop, const char *const *keywords,
                const char *const *values, const struct pg_pool_opts *opts,
                struct mi_err *err) MI_MUSTCHECK;

/**
 * pg_query() - queue a parameterised query (text parameters and results).
 * @sql: one SQL statement with $1..$n placeholders (copied; not a COPY statement).
 * @nparams: number of parameters, 0..PG_MAX_PARAMS.
 * @params: @nparams strings, NULL meaning SQL NULL (copied).
 * @timeout_ms: deadline from now covering the wait for a connection and the execution;
 *       <= 0 means opts.default_timeout_ms.
 * @cb, @ctx: called exactly once, later, from the loop.
 * Return: 0 when queued (@cb will be called); otherwise @cb is never called:
 *       PG_ECLOSED after pg_pool_close(), PG_EFULL when the wait queue is full,
 *       -EINVAL for bad arguments, -E2BIG above PG_MAX_QUERY_BYTES, -ENOMEM.
 */
int pg_query(struct pg_pool *pool, const char *sql, int nparams, const char *const *params,
             int timeout_ms, pg_query_cb cb, void *ctx) MI_MUSTCHECK;

/**
 * pg_pool_close() - graceful shutdown: refuse new queries, let queued and running ones
 * finish (each within its deadline), then close the connections and all libuv handles.
 * @cb: called once from the loop when every handle is closed (may be NULL); after it the
 *      loop holds nothing of the pool, so uv_loop_close() can succeed. The pool may be
 *      freed inside @cb. Calling pg_pool_close() twice has no further effect.
 */
void pg_pool_close(struct pg_pool *pool, void (*cb)(void *ctx), void *ctx);

/**
 * pg_pool_free() - free the pool's memory; NULL is a no-op. Only after pg_pool_close()'s
 * callback ran (or from inside it).
 */
void pg_pool_free(struct pg_pool *pool);

/** pg_pool_stats() - counters for metrics and readiness checks. */
void pg_pool_stats(const struct pg_pool *pool, struct pg_pool_stats *st);

/**
 * pg_pool_last_error() - the most recent connection error (e.g. "connection to server
 * at ... failed: Connection refused"), or "" when none happened. Borrowed.
 */
const char *pg_pool_last_error(const struct pg_pool *pool);

/** pg_result_nrows() / pg_result_ncols() - size of a row-returning result (else 0). */
int pg_result_nrows(const struct pg_result *res);
int pg_result_ncols(const struct pg_result *res);

/**
 * pg_result_value() - the text of row @row, column @col; NULL for SQL NULL or when out
 * of range. Borrowed: valid only during the query callback.
 */
const char *pg_result_value(const struct pg_result *res, int row, int col);

/** pg_result_colname() - the name of column @col, or NULL when out of range (borrowed). */
const char *pg_result_colname(const struct pg_result *res, int col);

/**
 * pg_result_affected() - rows affected by INSERT/UPDATE/DELETE (or returned by SELECT),
 * from the command tag; -1 when the command reports no count.
 */
int64_t pg_result_affected(const struct pg_result *res);

/** pg_result_sqlstate() - the five-character SQLSTATE of an error, or "" (borrowed). */
const char *pg_result_sqlstate(const struct pg_result *res);

#endif
