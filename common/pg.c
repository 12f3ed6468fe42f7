#include "pg.h"

#include <assert.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/*
 * Connection states. Every change goes through conn_set_state(), which checks that the
 * transition is one of those listed here.
 */
enum pgc_state {
    PGC_DOWN = 0,    /* no PGconn; the timer counts down to the next attempt.
                      * -> CONNECTING, CLOSED */
    PGC_CONNECTING,  /* PQconnectPoll() in progress; the timer is the connect deadline.
                      * -> READY, DOWN, CLOSED */
    PGC_READY,       /* connected and idle; the socket is polled for reading so that a
                      * dropped connection is noticed. -> BUSY, DOWN, CLOSED */
    PGC_BUSY,        /* one query in flight. -> READY, DOWN */
    PGC_CLOSED,      /* the pool shut down; terminal */
    PGC__MAX
};

/* Allowed transitions; read only by assert(), hence unused in release builds. */
static const unsigned pgc_next[PGC__MAX] __attribute__((unused)) = {
    [PGC_DOWN] = 1u << PGC_CONNECTING | 1u << PGC_CLOSED,
    [PGC_CONNECTING] = 1u << PGC_READY | 1u << PGC_DOWN | 1u << PGC_CLOSED,
    [PGC_READY] = 1u << PGC_BUSY | 1u << PGC_DOWN | 1u << PGC_CLOSED,
    [PGC_BUSY] = 1u << PGC_READY | 1u << PGC_DOWN,
    [PGC_CLOSED] = 0,
};

struct pg_conn;

/* A poll handle lives on the heap because a connection may replace it while the old one
 * is still closing; the memory is released in its close callback. */
struct pg_poll {
    uv_poll_t h;
    struct pg_conn *conn;
};

struct pg_conn {
    struct pg_pool *pool;
    int index;
    bool opened;            /* false: not needed yet (opts.initial), no attempt made */
    enum pgc_state state;
    PGconn *pq;
    struct pg_poll *poll;   /* NULL when no socket is watched */
    int poll_fd;
    int poll_events;
    bool flushing;          /* the last PQflush() returned 1 */
    int attempt;            /* consecutive failed connection attempts */
    uv_timer_t timer;       /* back-off (DOWN) or connect deadline (CONNECTING) */
    struct pg_req *req;     /* the query in flight (BUSY) */
};

struct pg_result {
    PGresult *res;
};

struct pg_req {
    struct pg_req *prev, *next;   /* wait queue links */
    struct pg_pool *pool;
    struct pg_conn *conn;         /* set while in flight */
    uv_timer_t deadline;
    pg_query_cb cb;
    void *ctx;
    int timeout_ms;
    int nparams;
    bool done;
    PGresult *result;
    const char *sql;
    const char **params;
    /* The SQL text, the parameter pointers and the values follow in the same block. */
};

struct pg_pool {
    uv_loop_t *loop;
    struct pg_pool_opts opts;
    char **kw, **val;             /* NULL-terminated copies */
    struct pg_conn *conns;
    int nconns;
    struct pg_req *qhead, *qtail;
    unsigned queued, in_flight;
    uv_timer_t kick;              /* 0 ms timer: dispatch and shutdown checks from the loop */
    uv_timer_t grow;              /* PG_GROW_WAIT_MS: a query still waits, open a connection */
    unsigned open_handles;        /* libuv handles not yet through their close callback */
    bool closing, shutdown;
    void (*close_cb)(void *ctx);
    void *close_ctx;
    uint64_t ok, failed, reconnects;
    char last_error[MI_ERR_MSG_MAX];
};

static void conn_start(struct pg_conn *c);
static void conn_lost(struct pg_conn *c, int status, const char *why);
static void pool_dispatch(struct pg_pool *pool);

/* ---- small helpers ------------------------------------------------------------------ */

static void conn_set_state(struct pg_conn *c, enum pgc_state s)
{
    assert(pgc_next[c->state] & (1u << s));
    c->state = s;
}

/* Copy a libpq message into @out as one line: newlines and tabs become spaces. */
static void one_line(char *out, size_t outlen, const char *msg)
{
    size_t n = 0;
    bool space = false;
    for (const char *p = msg ? msg : ""; *p && n + 1 < outlen; p++) {
        bool ws = *p == '\n' || *p == '\t' || *p == '\r' || *p == ' ';
        if (ws) {
            space = n > 0;
            continue;
        }
        if (space && n + 2 < outlen)
            out[n++] = ' ';
        space = false;
        out[n++] = *p;
    }
    out[n] = '\0';
}

static void conn_error_text(const struct pg_conn *c, char *out, size_t outlen)
{
    one_line(out, outlen, c->pq ? PQerrorMessage(c->pq) : "no connection");
    if (!out[0])
        snprintf(out, outlen, "unknown libpq error");
}

static void emit(struct pg_conn *c, enum pg_event ev, const char *why)
{
    struct pg_pool *pool = c->pool;
    if (ev != PG_EV_CONNECTED)
        snprintf(pool->last_error, sizeof(pool->last_error), "%s", why);
    if (!pool->opts.on_event)
        return;
    struct mi_err e = MI_ERR_INIT;
    if (why)
        mi_err_set(&e, ev == PG_EV_LOST ? PG_ECONNLOST : -ECONNREFUSED, "%s", why);
    pool->opts.on_event(pool->opts.event_ctx, c->index, ev, why ? &e : NULL);
}

static void handle_closed(uv_handle_t *h);

static void pool_check_closed(struct pg_pool *pool)
{
    if (!pool->shutdown || pool->open_handles)
        return;
    void (*cb)(void *) = pool->close_cb;
    pool->close_cb = NULL;
    /* Nothing may touch the pool after this call: the callback may free it. */
    if (cb)
        cb(pool->close_ctx);
}

static void handle_closed(uv_handle_t *h)
{
    struct pg_pool *pool = h->data;
    assert(pool->open_handles > 0);
    pool->open_handles--;
    pool_check_closed(pool);
}

static void pool_kick(struct pg_pool *pool);

/* ---- poll handle management --------------------------------------------------------- */

static void poll_closed(uv_handle_t *h)
{
    struct pg_poll *p = container_of((uv_poll_t *)h, struct pg_poll, h);
    struct pg_pool *pool = h->data;
    free(p);
    assert(pool->open_handles > 0);
    pool->open_handles--;
    pool_check_closed(pool);
}

/* Stop watching the socket. uv_close() stops the poll at once, so the fd may be closed
 * (PQfinish) right after this returns. */
static void poll_release(struct pg_conn *c)
{
    if (!c->poll)
        return;
    c->poll->conn = NULL;
    uv_close((uv_handle_t *)&c->poll->h, poll_closed);
    c->poll = NULL;
    c->poll_fd = -1;
    c->poll_events = 0;
}

static void poll_cb(uv_poll_t *h, int status, int events);

/* Make a new poll handle for @fd. Return 0 or a negative libuv error. */
static int poll_create(struct pg_conn *c, int fd)
{
    struct pg_poll *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    int rc = uv_poll_init_socket(c->pool->loop, &p->h, fd);
    if (rc) {
        free(p);
        return rc;
    }
    p->h.data = c->pool;
    p->conn = c;
    c->pool->open_handles++;
    c->poll = p;
    c->poll_fd = fd;
    c->poll_events = 0;
    return 0;
}

/*
 * Watch libpq's current socket for @events. A new handle is made when the socket is not
 * the one being watched (or @fresh is set), the old one being closed first, so that one
 * fd never has two poll handles.
 */
static int poll_watch(struct pg_conn *c, int events, bool fresh)
{
    int fd = PQsocket(c->pq);
    if (fd < 0)
        return -EBADF;
    if (fresh || !c->poll || c->poll_fd != fd) {
        poll_release(c);
        int rc = poll_create(c, fd);
        if (rc)
            return rc;
    }
    if (c->poll_events == events)
        return 0;
    int rc = uv_poll_start(&c->poll->h, events, poll_cb);
    if (!rc)
        c->poll_events = events;
    return rc;
}

/* ---- requests ----------------------------------------------------------------------- */

static void queue_push(struct pg_pool *pool, struct pg_req *r)
{
    r->next = NULL;
    r->prev = pool->qtail;
    if (pool->qtail)
        pool->qtail->next = r;
    else
        pool->qhead = r;
    pool->qtail = r;
    pool->queued++;
}

static void queue_remove(struct pg_pool *pool, struct pg_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        pool->qhead = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        pool->qtail = r->prev;
    r->prev = r->next = NULL;
    pool->queued--;
}

static void req_closed(uv_handle_t *h)
{
    struct pg_req *r = container_of((uv_timer_t *)h, struct pg_req, deadline);
    struct pg_pool *pool = r->pool;
    free(r);
    assert(pool->open_handles > 0);
    pool->open_handles--;
    pool_check_closed(pool);
}

/* Finish @r: call its callback once, release the result, close its timer (which frees it). */
static void req_complete(struct pg_req *r, int status, const char *fmt, ...) MI_PRINTF(3, 4);

static void req_complete(struct pg_req *r, int status, const char *fmt, ...)
{
    struct pg_pool *pool = r->pool;
    assert(!r->done && !r->conn && !r->prev && !r->next);
    r->done = true;
    uv_timer_stop(&r->deadline);
    struct mi_err err = MI_ERR_INIT;
    if (status) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err.msg, sizeof(err.msg), fmt, ap);
        va_end(ap);
        err.code = status;
    }
    if (status)
        pool->failed++;
    else
        pool->ok++;
    struct pg_result res = { r->result };
    bool with_res = r->result && (status == 0 || status == PG_EQUERY);
    r->cb(r->ctx, status, with_res ? &res : NULL, status ? &err : NULL);
    PQclear(r->result);
    r->result = NULL;
    uv_close((uv_handle_t *)&r->deadline, req_closed);
    if (pool->closing)
        pool_kick(pool);
}

static void conn_drop(struct pg_conn *c, bool immediate);

static void deadline_cb(uv_timer_t *t)
{
    struct pg_req *r = container_of(t, struct pg_req, deadline);
    struct pg_conn *c = r->conn;
    if (c) {
        /* Running: libpq 15 has no non-blocking cancel, so drop the connection. */
        c->req = NULL;
        r->conn = NULL;
        r->pool->in_flight--;
        conn_drop(c, true);
        emit(c, PG_EV_LOST, "a query exceeded its deadline; the connection was dropped");
        req_complete(r, PG_ETIMEDOUT,
                     "database query did not finish within %d ms; it was abandoned and its "
                     "connection reopened", r->timeout_ms);
        return;
    }
    struct pg_pool *pool = r->pool;
    queue_remove(pool, r);
    struct pg_pool_stats st;
    pg_pool_stats(pool, &st);
    if (pool->last_error[0] && !st.connected)
        req_complete(r, PG_ETIMEDOUT,
                     "database query waited %d ms for a connection (none of %d connected; "
                     "last error: %s)", r->timeout_ms, st.size, pool->last_error);
    else
        req_complete(r, PG_ETIMEDOUT,
                     "database query waited %d ms for a free connection (%d connected, "
                     "%u queries queued)", r->timeout_ms, st.connected, st.queued + 1);
}

/* ---- queries on a connection -------------------------------------------------------- */

/* Send pending output. Return 0, or -1 after the connection was declared lost. */
static int conn_flush(struct pg_conn *c)
{
    int r = PQflush(c->pq);
    if (r < 0) {
        char why[MI_ERR_MSG_MAX];
        conn_error_text(c, why, sizeof(why));
        conn_lost(c, PG_ECONNLOST, why);
        return -1;
    }
    /* While output is pending, wait for read too: the server may need us to read before
     * it reads more (libpq docs, "Asynchronous Command Processing"). */
    c->flushing = r == 1;
    int rc = poll_watch(c, c->flushing ? UV_READABLE | UV_WRITABLE : UV_READABLE, false);
    if (rc) {
        conn_lost(c, PG_ECONNLOST, uv_strerror(rc));
        return -1;
    }
    return 0;
}

static void conn_send(struct pg_conn *c, struct pg_req *r)
{
    conn_set_state(c, PGC_BUSY);
    c->req = r;
    r->conn = c;
    c->pool->in_flight++;
    if (!PQsendQueryParams(c->pq, r->sql, r->nparams, NULL, r->params, NULL, NULL, 0)) {
        char why[MI_ERR_MSG_MAX];
        conn_error_text(c, why, sizeof(why));
        if (PQstatus(c->pq) == CONNECTION_BAD) {
            conn_lost(c, PG_ECONNLOST, why);
            return;
        }
        c->req = NULL;
        r->conn = NULL;
        c->pool->in_flight--;
        conn_set_state(c, PGC_READY);
        req_complete(r, PG_EQUERY, "database query could not be sent: %s", why);
        return;
    }
    conn_flush(c);
}

/* Keep the most telling result of a (single-statement) query: an error beats success. */
static void req_keep(struct pg_req *r, PGresult *res)
{
    if (!r->result || (PQresultStatus(res) == PGRES_FATAL_ERROR &&
                       PQresultStatus(r->result) != PGRES_FATAL_ERROR)) {
        PQclear(r->result);
        r->result = res;
        return;
    }
    PQclear(res);
}

static void conn_query_done(struct pg_conn *c)
{
    struct pg_req *r = c->req;
    c->req = NULL;
    r->conn = NULL;
    c->pool->in_flight--;
    conn_set_state(c, PGC_READY);
    ExecStatusType st = r->result ? PQresultStatus(r->result) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        req_complete(r, 0, "ok");
        return;
    }
    char msg[MI_ERR_MSG_MAX];
    one_line(msg, sizeof(msg),
             r->result ? PQresultErrorField(r->result, PG_DIAG_MESSAGE_PRIMARY) : NULL);
    if (!msg[0])
        conn_error_text(c, msg, sizeof(msg));
    const char *state = r->result ? PQresultErrorField(r->result, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(c->pq) == CONNECTION_BAD) {
        /* E.g. pg_terminate_backend(): the server sent a FATAL error and hung up. */
        PQclear(r->result);
        r->result = NULL;
        conn_drop(c, false);
        emit(c, PG_EV_LOST, msg);
        req_complete(r, PG_ECONNLOST, "database connection lost during the query: %s", msg);
        return;
    }
    req_complete(r, PG_EQUERY, "database error %s: %s", state ? state : "?????", msg);
}

/* Read results while libpq has complete ones. */
static void conn_collect(struct pg_conn *c)
{
    while (!PQisBusy(c->pq)) {
        PGresult *res = PQgetResult(c->pq);
        if (!res) {
            conn_query_done(c);
            pool_dispatch(c->pool);
            return;
        }
        req_keep(c->req, res);
    }
    if (PQstatus(c->pq) == CONNECTION_BAD) {
        char why[MI_ERR_MSG_MAX];
        conn_error_text(c, why, sizeof(why));
        conn_lost(c, PG_ECONNLOST, why);
    }
}

static void conn_busy_io(struct pg_conn *c, int events)
{
    if ((events & UV_READABLE) && !PQconsumeInput(c->pq)) {
        char why[MI_ERR_MSG_MAX];
        conn_error_text(c, why, sizeof(why));
        conn_lost(c, PG_ECONNLOST, why);
        return;
    }
    if (c->flushing) {
        if (conn_flush(c) || c->flushing)
            return;
    }
    conn_collect(c);
}

/* An idle connection became readable: a notice, or the server closing it. */
static void conn_idle_io(struct pg_conn *c)
{
    if (!PQconsumeInput(c->pq) || PQstatus(c->pq) == CONNECTION_BAD) {
        char why[MI_ERR_MSG_MAX];
        conn_error_text(c, why, sizeof(why));
        conn_lost(c, 0, why);
        return;
    }
    PGnotify *n = PQnotifies(c->pq);
    while (n) {
        PQfreemem(n);
        n = PQnotifies(c->pq);
    }
    while (!PQisBusy(c->pq)) {
        PGresult *res = PQgetResult(c->pq);
        if (!res)
            break;
        PQclear(res);
    }
}

/* ---- connecting --------------------------------------------------------------------- */

static void conn_timer_cb(uv_timer_t *t);

static void conn_schedule(struct pg_conn *c, int64_t delay_ms)
{
    uv_timer_start(&c->timer, conn_timer_cb, (uint64_t)delay_ms, 0);
}

/*
 * Tear the connection down and schedule the next attempt: at once after a deliberate
 * drop (the server is fine), otherwise with exponential back-off and jitter.
 */
static void conn_drop(struct pg_conn *c, bool immediate)
{
    struct pg_pool *pool = c->pool;
    bool was_up = c->state == PGC_READY || c->state == PGC_BUSY;
    poll_release(c);
    PQfinish(c->pq);
    c->pq = NULL;
    c->flushing = false;
    conn_set_state(c, PGC_DOWN);
    if (was_up)
        pool->reconnects++;
    else
        c->attempt++;
    int64_t delay = 0;
    if (!immediate && c->attempt > 0)
        delay = mi_retry_delay(c->attempt, pool->opts.backoff_base_ms,
                               pool->opts.backoff_max_ms, mi_rand_unit());
    else if (!immediate)
        delay = pool->opts.backoff_base_ms / 2;
    conn_schedule(c, delay);
    if (pool->closing)
        pool_kick(pool);
}

/*
 * The connection broke. Fail the query in flight (if any) with @status and reconnect;
 * queued queries keep waiting for another connection.
 */
static void conn_lost(struct pg_conn *c, int status, const char *why)
{
    struct pg_req *r = c->req;
    char msg[MI_ERR_MSG_MAX];
    snprintf(msg, sizeof(msg), "%s", why);
    if (r) {
        c->req = NULL;
        r->conn = NULL;
        c->pool->in_flight--;
    }
    conn_drop(c, false);
    emit(c, PG_EV_LOST, msg);
    if (r)
        req_complete(r, status ? status : PG_ECONNLOST,
                     "database connection lost during the query: %s", msg);
}

static void conn_connect_failed(struct pg_conn *c, const char *why)
{
    char msg[MI_ERR_MSG_MAX];
    snprintf(msg, sizeof(msg), "%s", why);
    uv_timer_stop(&c->timer);
    if (c->state == PGC_CONNECTING) {
        conn_drop(c, false);
    } else {
        c->attempt++;
        conn_schedule(c, mi_retry_delay(c->attempt, c->pool->opts.backoff_base_ms,
                                        c->pool->opts.backoff_max_ms, mi_rand_unit()));
    }
    emit(c, PG_EV_CONNECT_FAILED, msg);
}

static void conn_established(struct pg_conn *c)
{
    if (PQsetnonblocking(c->pq, 1)) {
        char why[MI_ERR_MSG_MAX];
        conn_error_text(c, why, sizeof(why));
        conn_connect_failed(c, why);
        return;
    }
    uv_timer_stop(&c->timer);
    c->attempt = 0;
    conn_set_state(c, PGC_READY);
    int rc = poll_watch(c, UV_READABLE, true);
    if (rc) {
        conn_lost(c, 0, uv_strerror(rc));
        return;
    }
    emit(c, PG_EV_CONNECTED, NULL);
    pool_dispatch(c->pool);
}

/*
 * Advance the connection handshake. libpq may close its socket and open another between
 * PQconnectPoll() calls (next address, SSL fallback), and the new socket can get the same
 * number; epoll would then silently stop reporting it. So a fresh poll handle is made
 * after every step instead of trusting the fd number.
 */
static void conn_connect_step(struct pg_conn *c)
{
    PostgresPollingStatusType st = PQconnectPoll(c->pq);
    int events = 0;
    switch (st) {
    case PGRES_POLLING_READING:
        events = UV_READABLE;
        break;
    case PGRES_POLLING_WRITING:
        events = UV_WRITABLE;
        break;
    case PGRES_POLLING_OK:
        conn_established(c);
        return;
    default: {
        char why[MI_ERR_MSG_MAX];
        conn_error_text(c, why, sizeof(why));
        conn_connect_failed(c, why);
        return;
    }
    }
    int rc = poll_watch(c, events, true);
    if (rc)
        conn_connect_failed(c, uv_strerror(rc));
}

/*
 * libpq's default notice processor writes to stderr; a library must not, so notices
 * (server WARNINGs, the FATAL message of a terminated idle session) go to the caller.
 */
static void conn_notice(void *arg, const char *message)
{
    struct pg_conn *c = arg;
    if (!c->pool->opts.on_notice)
        return;
    char line[MI_ERR_MSG_MAX];
    one_line(line, sizeof(line), message);
    c->pool->opts.on_notice(c->pool->opts.event_ctx, c->index, line);
}

static void conn_start(struct pg_conn *c)
{
    struct pg_pool *pool = c->pool;
    c->pq = PQconnectStartParams((const char *const *)pool->kw,
                                 (const char *const *)pool->val, 0);
    if (!c->pq) {
        conn_connect_failed(c, "out of memory starting a database connection");
        return;
    }
    PQsetNoticeProcessor(c->pq, conn_notice, c);
    if (PQstatus(c->pq) == CONNECTION_BAD) {
        char why[MI_ERR_MSG_MAX];
        conn_error_text(c, why, sizeof(why));
        PQfinish(c->pq);
        c->pq = NULL;
        conn_connect_failed(c, why);
        return;
    }
    conn_set_state(c, PGC_CONNECTING);
    uv_timer_start(&c->timer, conn_timer_cb, (uint64_t)pool->opts.connect_timeout_ms, 0);
    /* libpq: after PQconnectStart, behave as if PQconnectPoll returned WRITING. */
    int rc = poll_watch(c, UV_WRITABLE, true);
    if (rc)
        conn_connect_failed(c, uv_strerror(rc));
}

static void conn_timer_cb(uv_timer_t *t)
{
    struct pg_conn *c = container_of(t, struct pg_conn, timer);
    if (c->state == PGC_DOWN) {
        conn_start(c);
        return;
    }
    if (c->state == PGC_CONNECTING) {
        char why[MI_ERR_MSG_MAX];
        snprintf(why, sizeof(why), "connecting to the database timed out after %d ms",
                 c->pool->opts.connect_timeout_ms);
        conn_connect_failed(c, why);
    }
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    struct pg_poll *p = container_of(h, struct pg_poll, h);
    struct pg_conn *c = p->conn;
    if (!c)
        return;
    /* On a socket error libuv reports no events; let libpq find out what happened. */
    if (status < 0)
        events = UV_READABLE | UV_WRITABLE;
    switch (c->state) {
    case PGC_CONNECTING:
        conn_connect_step(c);
        break;
    case PGC_READY:
        if (events & UV_READABLE)
            conn_idle_io(c);
        break;
    case PGC_BUSY:
        conn_busy_io(c, events);
        break;
    default:
        break;
    }
}

/* ---- pool --------------------------------------------------------------------------- */

/* The connection to open next: none while one is connecting or waiting to retry (more
 * attempts would not help a server that is slow or down), else the first never opened. */
static struct pg_conn *pool_next_closed(struct pg_pool *pool)
{
    struct pg_conn *next = NULL;

    for (int i = 0; i < pool->nconns; i++) {
        struct pg_conn *c = &pool->conns[i];

        if (c->state == PGC_CONNECTING || (c->opened && c->state == PGC_DOWN))
            return NULL;
        if (!c->opened && !next)
            next = c;
    }
    return next;
}

static void conn_open(struct pg_conn *c)
{
    c->opened = true;
    conn_schedule(c, 0);
}

static void grow_cb(uv_timer_t *t)
{
    struct pg_pool *pool = container_of(t, struct pg_pool, grow);
    struct pg_conn *c;

    if (pool->qhead && !pool->closing && (c = pool_next_closed(pool)))
        conn_open(c);
}

/* Give waiting queries to idle connections. A send can fail at once and leave its
 * connection idle again, so the search starts over after every send. */
static void pool_dispatch(struct pg_pool *pool)
{
    while (pool->qhead) {
        struct pg_conn *c = NULL;
        for (int i = 0; i < pool->nconns && !c; i++)
            if (pool->conns[i].state == PGC_READY)
                c = &pool->conns[i];
        if (!c) {
            /* Every open connection is busy: if that lasts, the pool grows by one. */
            if (!pool->closing && !uv_is_active((uv_handle_t *)&pool->grow) &&
                pool_next_closed(pool))
                uv_timer_start(&pool->grow, grow_cb, PG_GROW_WAIT_MS, 0);
            return;
        }
        struct pg_req *r = pool->qhead;
        queue_remove(pool, r);
        conn_send(c, r);
    }
}

static void pool_shutdown(struct pg_pool *pool)
{
    pool->shutdown = true;
    for (int i = 0; i < pool->nconns; i++) {
        struct pg_conn *c = &pool->conns[i];
        assert(c->state != PGC_BUSY);
        poll_release(c);
        PQfinish(c->pq);
        c->pq = NULL;
        conn_set_state(c, PGC_CLOSED);
        uv_close((uv_handle_t *)&c->timer, handle_closed);
    }
    uv_close((uv_handle_t *)&pool->kick, handle_closed);
    uv_close((uv_handle_t *)&pool->grow, handle_closed);
}

static void kick_cb(uv_timer_t *t)
{
    struct pg_pool *pool = container_of(t, struct pg_pool, kick);
    pool_dispatch(pool);
    if (pool->closing && !pool->shutdown && !pool->queued && !pool->in_flight)
        pool_shutdown(pool);
}

static void pool_kick(struct pg_pool *pool)
{
    if (!pool->shutdown && !uv_is_active((uv_handle_t *)&pool->kick))
        uv_timer_start(&pool->kick, kick_cb, 0, 0);
}

static int opts_fill(struct pg_pool_opts *o, const struct pg_pool_opts *in, struct mi_err *err)
{
    if (in)
        *o = *in;
    else
        memset(o, 0, sizeof(*o));
    if (!o->size)
        o->size = 4;
    if (!o->connect_timeout_ms)
        o->connect_timeout_ms = 10000;
    if (!o->backoff_base_ms)
        o->backoff_base_ms = 200;
    if (!o->backoff_max_ms)
        o->backoff_max_ms = 10000;
    if (!o->max_queue)
        o->max_queue = 4096;
    if (!o->default_timeout_ms)
        o->default_timeout_ms = 30000;
    if (o->size < 1 || o->size > 64)
        return mi_err_set(err, -EINVAL, "database pool size %d is outside 1..64", o->size);
    if (!o->initial)
        o->initial = o->size;
    if (o->initial < 1 || o->initial > o->size)
        return mi_err_set(err, -EINVAL, "database pool: %d connections at start is outside "
                          "1..%d (the pool size)", o->initial, o->size);
    if (o->connect_timeout_ms < 0 || o->backoff_base_ms < 0 ||
        o->backoff_max_ms < o->backoff_base_ms || o->max_queue < 0 ||
        o->default_timeout_ms < 0)
        return mi_err_set(err, -EINVAL, "database pool timing options are inconsistent");
    return 0;
}

/*
 * libpq enforces connect_timeout only in its blocking connect, so take the URL's value
 * (seconds; libpq treats 1 as 2 and 0 as "wait forever") as the connect deadline unless
 * the caller chose one. "Forever" keeps the default: every wait needs a deadline.
 */
static void pool_url_timeout(struct pg_pool *pool, const char *const *kw,
                             const char *const *val, const struct pg_pool_opts *in)
{
    if (in && in->connect_timeout_ms)
        return;
    for (int i = 0; kw[i]; i++) {
        int64_t sec = 0;
        if (strcmp(kw[i], "connect_timeout") || !val[i] ||
            !mi_parse_i64(val[i], 0, 3600, &sec) || sec == 0)
            continue;
        pool->opts.connect_timeout_ms = (int)(sec < 2 ? 2000 : sec * 1000);
    }
}

static char **strv_dup(const char *const *v, int n)
{
    char **out = calloc((size_t)n + 1, sizeof(*out));
    if (!out)
        return NULL;
    for (int i = 0; i < n; i++) {
        out[i] = strdup(v[i] ? v[i] : "");
        if (!out[i]) {
            for (int j = 0; j < i; j++)
                free(out[j]);
            free(out);
            return NULL;
        }
    }
    return out;
}

static void strv_free(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

int pg_pool_new(struct pg_pool **out, uv_loop_t *loop, const char *const *keywords,
                const char *const *values, const struct pg_pool_opts *opts,
                struct mi_err *err)
{
    if (!out || !loop || !keywords || !values)
        return mi_err_set(err, -EINVAL, "pg_pool_new: missing argument");
    struct pg_pool *pool = calloc(1, sizeof(*pool));
    if (!pool)
        return -ENOMEM;
    int rc = opts_fill(&pool->opts, opts, err);
    if (rc) {
        free(pool);
        return rc;
    }
    int n = 0;
    while (keywords[n])
        n++;
    pool_url_timeout(pool, keywords, values, opts);
    pool->loop = loop;
    pool->nconns = pool->opts.size;
    pool->kw = strv_dup(keywords, n);
    pool->val = strv_dup(values, n);
    pool->conns = calloc((size_t)pool->nconns, sizeof(*pool->conns));
    if (!pool->kw || !pool->val || !pool->conns) {
        strv_free(pool->kw);
        strv_free(pool->val);
        free(pool->conns);
        free(pool);
        return -ENOMEM;
    }
    uv_timer_init(loop, &pool->kick);
    pool->kick.data = pool;
    pool->open_handles++;
    uv_timer_init(loop, &pool->grow);
    pool->grow.data = pool;
    pool->open_handles++;
    for (int i = 0; i < pool->nconns; i++) {
        struct pg_conn *c = &pool->conns[i];
        c->pool = pool;
        c->index = i;
        c->state = PGC_DOWN;
        c->poll_fd = -1;
        uv_timer_init(loop, &c->timer);
        c->timer.data = pool;
        pool->open_handles++;
        if (i < pool->opts.initial)
            conn_open(c);
    }
    *out = pool;
    return 0;
}

int pg_query(struct pg_pool *pool, const char *sql, int nparams, const char *const *params,
             int timeout_ms, pg_query_cb cb, void *ctx)
{
    if (!pool || !sql || !cb || nparams < 0 || nparams > PG_MAX_PARAMS ||
        (nparams && !params))
        return -EINVAL;
    if (pool->closing)
        return PG_ECLOSED;
    if (pool->queued >= (unsigned)pool->opts.max_queue)
        return PG_EFULL;
    size_t sqllen = strlen(sql) + 1, bytes = sqllen;
    for (int i = 0; i < nparams; i++)
        bytes += params[i] ? strlen(params[i]) + 1 : 0;
    if (bytes > PG_MAX_QUERY_BYTES)
        return -E2BIG;
    size_t ptrs = (size_t)nparams * sizeof(char *);
    struct pg_req *r = calloc(1, sizeof(*r) + ptrs + bytes);
    if (!r)
        return -ENOMEM;
    char *p = (char *)(r + 1);
    r->params = (const char **)(void *)p;
    p += ptrs;
    memcpy(p, sql, sqllen);
    r->sql = p;
    p += sqllen;
    for (int i = 0; i < nparams; i++) {
        if (!params[i])
            continue;
        size_t l = strlen(params[i]) + 1;
        memcpy(p, params[i], l);
        r->params[i] = p;
        p += l;
    }
    r->pool = pool;
    r->nparams = nparams;
    r->cb = cb;
    r->ctx = ctx;
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : pool->opts.default_timeout_ms;
    uv_timer_init(pool->loop, &r->deadline);
    r->deadline.data = pool;
    pool->open_handles++;
    uv_timer_start(&r->deadline, deadline_cb, (uint64_t)r->timeout_ms, 0);
    queue_push(pool, r);
    /* Dispatch from the loop, so that no callback ever runs inside pg_query(). */
    pool_kick(pool);
    return 0;
}

void pg_pool_close(struct pg_pool *pool, void (*cb)(void *ctx), void *ctx)
{
    if (!pool || pool->closing)
        return;
    pool->closing = true;
    pool->close_cb = cb;
    pool->close_ctx = ctx;
    pool_kick(pool);
}

void pg_pool_free(struct pg_pool *pool)
{
    if (!pool)
        return;
    assert(pool->shutdown && !pool->open_handles);
    strv_free(pool->kw);
    strv_free(pool->val);
    free(pool->conns);
    free(pool);
}

void pg_pool_stats(const struct pg_pool *pool, struct pg_pool_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->size = pool->nconns;
    for (int i = 0; i < pool->nconns; i++) {
        enum pgc_state s = pool->conns[i].state;
        st->connected += s == PGC_READY || s == PGC_BUSY;
        st->connecting += s == PGC_CONNECTING;
    }
    st->queued = pool->queued;
    st->in_flight = pool->in_flight;
    st->ok = pool->ok;
    st->failed = pool->failed;
    st->reconnects = pool->reconnects;
}

const char *pg_pool_last_error(const struct pg_pool *pool)
{
    return pool->last_error;
}

int pg_result_nrows(const struct pg_result *res)
{
    return res && res->res ? PQntuples(res->res) : 0;
}

int pg_result_ncols(const struct pg_result *res)
{
    return res && res->res ? PQnfields(res->res) : 0;
}

const char *pg_result_value(const struct pg_result *res, int row, int col)
{
    if (row < 0 || col < 0 || row >= pg_result_nrows(res) || col >= pg_result_ncols(res))
        return NULL;
    if (PQgetisnull(res->res, row, col))
        return NULL;
    return PQgetvalue(res->res, row, col);
}

const char *pg_result_colname(const struct pg_result *res, int col)
{
    if (col < 0 || col >= pg_result_ncols(res))
        return NULL;
    return PQfname(res->res, col);
}

int64_t pg_result_affected(const struct pg_result *res)
{
    const char *t = res && res->res ? PQcmdTuples(res->res) : "";
    int64_t v = 0;
    if (!t[0] || !mi_parse_i64(t, 0, INT64_MAX, &v))
        return -1;
    return v;
}

const char *pg_result_sqlstate(const struct pg_result *res)
{
    const char *s = res && res->res ? PQresultErrorField(res->res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}
