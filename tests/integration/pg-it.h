/*
 * pg-it.h - helpers shared by the database integration tests (test-pg, test-msgdb).
 *
 * Header-only. Each test runs one libuv loop; it_query() queues a query and runs the
 * loop until the callback fired, copying what the checks need. it_open() reads
 * DATABASE_URL and exits 77 (skip) when it is unset or the server does not answer.
 */
#ifndef MI_PG_IT_H
#define MI_PG_IT_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "../unit/tap.h"
#include "pg.h"
#include "pg_url.h"

#define IT_SKIP 77
#define IT_MAXV 8

struct it_res {
    bool done;
    bool inside_call;        /* set while pg_query() runs; the callback must not see it */
    bool reentered;
    int status;
    char msg[MI_ERR_MSG_MAX];
    char sqlstate[8];
    int nrows, ncols;
    int64_t affected;
    char *v[IT_MAXV];        /* first row's values (NULL for SQL NULL), malloc'd */
    char all[4096];          /* column 0 of every row, one per line (truncated) */
};

static inline void it_res_free(struct it_res *r)
{
    for (int i = 0; i < IT_MAXV; i++) {
        free(r->v[i]);
        r->v[i] = NULL;
    }
}

static inline void it_cb(void *ctx, int status, const struct pg_result *res,
                         const struct mi_err *err)
{
    struct it_res *r = ctx;
    if (r->inside_call)
        r->reentered = true;
    r->done = true;
    r->status = status;
    snprintf(r->msg, sizeof(r->msg), "%s", err ? err->msg : "");
    r->nrows = pg_result_nrows(res);
    r->ncols = pg_result_ncols(res);
    r->affected = res ? pg_result_affected(res) : -1;
    snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", res ? pg_result_sqlstate(res) : "");
    for (int i = 0; i < IT_MAXV && i < r->ncols && r->nrows > 0; i++) {
        const char *v = pg_result_value(res, 0, i);
        r->v[i] = v ? strdup(v) : NULL;
    }
    size_t n = 0;
    for (int i = 0; i < r->nrows && n + 1 < sizeof(r->all); i++) {
        const char *v = pg_result_value(res, i, 0);
        int w = snprintf(r->all + n, sizeof(r->all) - n, "%s\n", v ? v : "(null)");
        n += w > 0 ? (size_t)w : 0;
    }
}

/* Queue a query without waiting. Return pg_query()'s code. */
static inline int it_send(struct pg_pool *p, const char *sql, int n, const char *const *params,
                          int timeout_ms, struct it_res *r)
{
    it_res_free(r);
    memset(r, 0, sizeof(*r));
    r->inside_call = true;
    int rc = pg_query(p, sql, n, params, timeout_ms, it_cb, r);
    r->inside_call = false;
    return rc;
}

/* Run the loop until @r is done. */
static inline void it_wait(uv_loop_t *loop, struct it_res *r)
{
    while (!r->done)
        uv_run(loop, UV_RUN_ONCE);
}

/* Run a query to completion; return its status (or pg_query()'s refusal). */
static inline int it_query(uv_loop_t *loop, struct pg_pool *p, const char *sql, int n,
                           const char *const *params, int timeout_ms, struct it_res *r)
{
    int rc = it_send(p, sql, n, params, timeout_ms, r);
    if (rc)
        return rc;
    it_wait(loop, r);
    if (r->status)
        printf("#   query status %d: %s\n", r->status, r->msg);
    return r->status;
}

static inline void it_nop_timer(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop for about @ms milliseconds. */
static inline void it_sleep(uv_loop_t *loop, int ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, it_nop_timer, (uint64_t)ms, 0);
    while (uv_is_active((uv_handle_t *)&t))
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

static inline void it_closed(void *ctx)
{
    *(bool *)ctx = true;
}

/* Close and free @p, running the loop until it is gone. */
static inline void it_pool_end(uv_loop_t *loop, struct pg_pool *p)
{
    bool closed = false;
    pg_pool_close(p, it_closed, &closed);
    while (!closed)
        uv_run(loop, UV_RUN_ONCE);
    pg_pool_free(p);
}

/*
 * Parse DATABASE_URL into @url, or exit 77 when it is unset. Adds nothing; the caller
 * builds keyword arrays from pg_url_keywords()/pg_url_values().
 */
static inline struct pg_url *it_url_or_skip(void)
{
    const char *env = getenv("DATABASE_URL");
    if (!env || !*env) {
        printf("1..0 # SKIP DATABASE_URL is not set\n");
        exit(IT_SKIP);
    }
    struct pg_url *u = NULL;
    struct mi_err err = MI_ERR_INIT;
    if (pg_url_parse(env, &u, &err)) {
        printf("Bail out! %s\n", err.msg);
        exit(1);
    }
    return u;
}

/*
 * Copy the URL's keywords plus application_name=@app into @kw/@val (capacity @cap,
 * NULL-terminated), so tests can find their own backends in pg_stat_activity.
 */
static inline void it_params(const struct pg_url *u, const char *app, const char **kw,
                             const char **val, int cap)
{
    const char *const *k = pg_url_keywords(u), *const *v = pg_url_values(u);
    int n = 0;
    for (int i = 0; k[i] && n < cap - 2; i++) {
        if (strcmp(k[i], "application_name")) {
            kw[n] = k[i];
            val[n] = v[i];
            n++;
        }
    }
    kw[n] = "application_name";
    val[n] = app;
    n++;
    kw[n] = val[n] = NULL;
}

/* Skip (exit 77) when the first query on @p fails for lack of a connection. */
static inline void it_reachable_or_skip(uv_loop_t *loop, struct pg_pool *p)
{
    struct it_res r = { 0 };
    int rc = it_query(loop, p, "SELECT 1", 0, NULL, 5000, &r);
    if (rc == PG_ETIMEDOUT || rc == PG_ECONNLOST) {
        printf("1..0 # SKIP database not reachable: %s\n", r.msg);
        exit(IT_SKIP);
    }
    it_res_free(&r);
}

#endif
