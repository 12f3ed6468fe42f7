/*
 * httpd.h - a minimal HTTP/1.1 server on the libuv loop for the operations endpoints
 * (METRICS_ADDR): /metrics, /healthz and /readyz. Nothing else is served.
 *
 *   GET /metrics  200 text/plain; version=0.0.4: the registry's text, then the hook's
 *   GET /healthz  200 "ok" while the loop runs (it answers, so the loop is not stuck)
 *   GET /readyz   200 "ready", or 503 with the one-line reason from the ready callback
 *   other paths   404;  other methods 405 (Allow: GET);  malformed 400;  head too big 431
 *
 * Every response carries Content-Length and "Connection: close"; the connection is shut
 * down after it, so there is no keep-alive or pipelining to get wrong. Limits: the
 * request head (request line and headers) must arrive within read_timeout_ms and fit in
 * head_max bytes; the response must be written within write_timeout_ms; at most
 * max_conns connections are open at once and further ones are closed as soon as they
 * are accepted. A request body is never read.
 *
 * The callbacks run on the loop thread and must not block. Not thread-safe.
 */
#ifndef MI_HTTPD_H
#define MI_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>
#include <uv.h>

#include "err.h"
#include "metrics.h"

#define HTTPD_MAX_CONNS 32
#define HTTPD_READ_TIMEOUT_MS 5000
#define HTTPD_WRITE_TIMEOUT_MS 10000
#define HTTPD_HEAD_MAX 8192
#define HTTPD_BODY_MAX (4 * 1024 * 1024)
#define HTTPD_REASON_MAX 256

/* Positive error codes of this module (see err.h). */
enum {
    HTTPD_E_ADDR = 1,  /* the address is malformed (a configuration error) */
};

struct httpd;

/* What the server answers with, and its limits (0 means the default above). */
struct httpd_handlers {
    /* Rendered for /metrics; borrowed, must outlive the server. May be NULL. */
    struct metrics *metrics;
    /*
     * Extra /metrics text appended after the registry's, snprintf-like: write at most
     * @cap bytes, set *@lenp to the whole length, return 0 or -ENOSPC (then it is called
     * again with a larger buffer). May be NULL.
     */
    int (*metrics_extra)(void *ctx, char *buf, size_t cap, size_t *lenp);
    /*
     * Readiness: return true when ready; else false with a one-line reason in @reason
     * (@cap bytes, NUL-terminated; control characters are replaced). NULL: always ready.
     */
    bool (*ready)(void *ctx, char *reason, size_t cap);
    unsigned max_conns;         /* HTTPD_MAX_CONNS */
    uint64_t read_timeout_ms;   /* HTTPD_READ_TIMEOUT_MS: from accept to the end of the head */
    uint64_t write_timeout_ms;  /* HTTPD_WRITE_TIMEOUT_MS: to write the response */
    size_t head_max;            /* HTTPD_HEAD_MAX */
    size_t body_max;            /* HTTPD_BODY_MAX: larger /metrics text answers 500 */
};

/* Counters since httpd_new(), for tests and self-monitoring. */
struct httpd_stats {
    uint64_t accepted;    /* connections served (not counting rejected ones) */
    uint64_t rejected;    /* closed at once because max_conns were open */
    uint64_t responses;   /* responses started, any status */
    uint64_t timeouts;    /* connections closed by their deadline */
    unsigned open;        /* connections open now */
};

/**
 * httpd_parse_addr() - parse a listen address: "host:port" with a numeric IPv4 host or
 * "localhost", "[IPv6]:port", or ":port" (every IPv4 interface). Port 0 picks a free one.
 * @ss, @lenp: receive the socket address.
 * Return: 0, or HTTPD_E_ADDR with @err naming METRICS_ADDR.
 */
int httpd_parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *lenp,
                     struct mi_err *err) MI_MUSTCHECK;

/**
 * httpd_new() - listen on @addr and serve on @loop.
 * @handlers: copied; @ctx is passed to its callbacks and to httpd_close()'s (borrowed).
 * Return: 0; HTTPD_E_ADDR for a malformed address; -errno when the socket cannot be
 * made, bound or listened on (e.g. -EADDRINUSE); -ENOMEM. @err names METRICS_ADDR.
 * On failure nothing is left on the loop, except when libuv itself refuses the bound
 * socket (not seen in practice): then a closing handle remains until the next uv_run().
 */
int httpd_new(struct httpd **hp, uv_loop_t *loop, const char *addr,
              const struct httpd_handlers *handlers, void *ctx, struct mi_err *err) MI_MUSTCHECK;

/**
 * httpd_close() - stop listening, drop every connection (responses being written are
 * cut) and free @h once all its handles are closed, then call @cb(ctx) if not NULL.
 * The loop must run for that; afterwards the server holds no handle, so
 * uv_loop_close() can succeed. NULL @h is a no-op. Must not be called twice.
 */
void httpd_close(struct httpd *h, void (*cb)(void *ctx));

/** httpd_port() - the port listened on (useful after port 0). */
int httpd_port(const struct httpd *h);

/** httpd_stats() - a copy of the counters. */
void httpd_stats(const struct httpd *h, struct httpd_stats *st);

#endif
