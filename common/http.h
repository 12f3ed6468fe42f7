/*
 * http.h - HTTP requests on the process's libuv loop (one curl multi per loop).
 *
 * One struct mi_http drives every transfer of a loop: curl's sockets are watched with
 * uv_poll handles and curl's timer with one uv_timer, so a process holds a single
 * connection cache and idle connections are reused across requests.
 *
 * A request is built, started, and then completes exactly once:
 *
 *     struct http_req *rq;
 *     http_req_new(&rq, http, HTTP_GET, url, &err);
 *     http_req_header(rq, "Accept", "application/json");
 *     http_req_bearer(rq, token);
 *     http_req_timeout(rq, 30000);
 *     http_req_start(rq, done, ctx);         // done(ctx, rq, 0, NULL) later, from the loop
 *
 *     static void done(void *ctx, struct http_req *rq, int status, const struct mi_err *err)
 *     {
 *         if (status == 0 && http_req_status(rq) == 200)
 *             use(http_req_body(rq, &len), http_req_resp_header(rq, "content-type"));
 *     }                                      // rq is freed by http after done returns
 *
 * Bodies: a request body is either a borrowed buffer (http_req_body_buf) or a stream
 * pulled through a read callback (http_req_body_stream). A response body is either
 * collected in memory up to a cap (default HTTP_DEFAULT_MAX_BODY) or streamed to a
 * write callback (http_req_on_data). Both callbacks may answer HTTP_PAUSE to stop the
 * transfer until http_req_unpause() (backpressure).
 *
 * Callbacks are called from the loop, never from inside the call that registered
 * them. Inside any request callback the caller must not call http_free(); it may call
 * http_req_cancel() on other requests. Nothing here logs; errors carry curl's
 * CURLOPT_ERRORBUFFER text. URLs are never copied into error messages because they
 * may carry signed query strings; callers add their own context.
 */
#ifndef MI_HTTP_H
#define MI_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "err.h"

struct mi_http;
struct http_req;

enum http_method { HTTP_GET = 0, HTTP_HEAD, HTTP_PUT, HTTP_POST, HTTP_DELETE };

/* Positive codes of this module (the done callback's status, or function returns). */
enum {
    HTTP_PAUSE = 1,          /* from a read/write callback: pause until http_req_unpause() */
    HTTP_E_TRANSPORT = 20,   /* DNS, connect, reset, TLS, protocol: curl's text in the error */
    HTTP_E_TIMEOUT = 21,     /* the request's deadline passed */
    HTTP_E_TOOBIG = 22,      /* the response body exceeded the request's cap */
    HTTP_E_CANCELED = 23,    /* http_req_cancel() was called */
    HTTP_E_CALLBACK = 24,    /* a read/write callback asked to abort (error message is its own) */
    HTTP_E_USAGE = 25,       /* a call made in the wrong state (e.g. setting a header after start) */
};

#define HTTP_DEFAULT_MAX_BODY (1024 * 1024)   /* collected response bodies */
#define HTTP_DEFAULT_TIMEOUT_MS 60000
#define HTTP_MAX_RESP_HEADERS (16 * 1024)     /* bytes of response headers kept per request */

/*
 * Read callback of a streamed request body: copy up to @cap bytes into @buf and set *@n.
 * Return 0 (with *@n == 0 at the end of the body), HTTP_PAUSE (nothing copied; call
 * http_req_unpause() when data is available), or any other value to abort the request
 * (the done callback then gets HTTP_E_CALLBACK).
 */
typedef int (*http_read_cb)(void *ctx, char *buf, size_t cap, size_t *n);

/*
 * Write callback of a streamed response body. Return 0 (consumed), HTTP_PAUSE (not
 * consumed: the same bytes are delivered again after http_req_unpause()), or any other
 * value to abort (done gets HTTP_E_CALLBACK). http_req_status() is valid here.
 */
typedef int (*http_write_cb)(void *ctx, const char *buf, size_t len);

/*
 * Completion callback, called exactly once per started request. @status is 0 when an
 * HTTP response was received completely (whatever its status code: see
 * http_req_status()), else a positive HTTP_E_* or a negative -errno, with @err filled.
 * @rq and everything borrowed from it are valid only until the callback returns; http
 * frees @rq afterwards (use http_req_take_body() to keep the body).
 */
typedef void (*http_done_cb)(void *ctx, struct http_req *rq, int status,
                             const struct mi_err *err);

/**
 * http_new() - create the curl multi adapter of @loop.
 * @httpp: receives the new object (caller frees with http_free()).
 * @loop: borrowed; must outlive the object.
 * @err: filled on failure.
 * Return: 0, -ENOMEM, or -EIO when curl or libuv refuse to initialise.
 *
 * Calls curl_global_init() once per process (not thread-safe; call it from main's
 * thread before starting others).
 */
int http_new(struct mi_http **httpp, uv_loop_t *loop, struct mi_err *err) MI_MUSTCHECK;

/**
 * http_free() - cancel every request still running (their done callbacks run with
 * HTTP_E_CANCELED, synchronously, from inside this call), close every handle and free.
 * The loop must run afterwards until the handles' close callbacks have fired, so that
 * uv_loop_close() returns 0. NULL is a no-op. Never call it from a request callback.
 */
void http_free(struct mi_http *http);

/**
 * http_set_user_agent() - the User-Agent sent by requests created afterwards
 * (default "media-ingest/<version>"; curl sends none by itself). Copied.
 * Return: 0 or -ENOMEM.
 */
int http_set_user_agent(struct mi_http *http, const char *ua) MI_MUSTCHECK;

/** http_active() - number of requests started and not yet completed. */
size_t http_active(const struct mi_http *http);

/**
 * http_req_new() - create a request (not started).
 * @rqp: receives the request; it is freed by http after its done callback, or by
 *       http_req_free() if it is never started.
 * @url: copied. It may carry credentials in its query; it is never put into messages.
 * Return: 0, -ENOMEM, or HTTP_E_USAGE for a NULL/empty URL.
 */
int http_req_new(struct http_req **rqp, struct mi_http *http, enum http_method method,
                 const char *url, struct mi_err *err) MI_MUSTCHECK;

/** http_req_free() - free a request that was never started. NULL is a no-op. */
void http_req_free(struct http_req *rq);

/**
 * http_req_header() - add the request header "@name: @value" (both copied). Do not
 * send empty values or header removals. Return: 0, -ENOMEM, HTTP_E_USAGE after start.
 */
int http_req_header(struct http_req *rq, const char *name, const char *value) MI_MUSTCHECK;

/** http_req_bearer() - add "Authorization: Bearer @token" (copied). Return as above. */
int http_req_bearer(struct http_req *rq, const char *token) MI_MUSTCHECK;

/** http_req_timeout() - whole-request deadline in ms (default HTTP_DEFAULT_TIMEOUT_MS). */
void http_req_timeout(struct http_req *rq, uint64_t ms);

/**
 * http_req_idle_timeout() - end the request with HTTP_E_TIMEOUT when, for @ms, no byte has
 * moved either way (status line, headers, body sent or received) while the caller had not
 * paused it (HTTP_PAUSE): a peer that stalls mid-transfer. 0 (the default): none. Checked
 * every HTTP_IDLE_CHECK_MS, so it fires up to that much late. Set it before the start.
 */
void http_req_idle_timeout(struct http_req *rq, uint64_t ms);

/**
 * http_req_body_buf() - send @len bytes of @buf as the body (borrowed: @buf must stay
 * valid and unchanged until the done callback). Sets Content-Length.
 */
void http_req_body_buf(struct http_req *rq, const void *buf, size_t len);

/**
 * http_req_body_stream() - pull the body through @cb. @size is the exact body length
 * (S3 refuses chunked uploads) or -1 for chunked transfer encoding.
 */
void http_req_body_stream(struct http_req *rq, int64_t size, http_read_cb cb, void *ctx);

/** http_req_on_data() - stream the response body to @cb instead of collecting it. */
void http_req_on_data(struct http_req *rq, http_write_cb cb, void *ctx);

/**
 * http_req_follow() - follow up to @max_redirects redirects (default 0: none). curl
 * drops Authorization headers when a redirect changes host.
 */
void http_req_follow(struct http_req *rq, long max_redirects);

/** http_req_max_body() - cap of a collected response body (0: HTTP_DEFAULT_MAX_BODY). */
void http_req_max_body(struct http_req *rq, size_t max);

/**
 * http_req_start() - add the request to the multi. @cb is called exactly once, later.
 * Return: 0; or -ENOMEM / HTTP_E_USAGE / -EIO with @err filled, and then @cb is never
 * called and the caller still owns @rq (free it with http_req_free()).
 */
int http_req_start(struct http_req *rq, http_done_cb cb, void *ctx,
                   struct mi_err *err) MI_MUSTCHECK;

/**
 * http_req_unpause() - resume a transfer paused by HTTP_PAUSE. curl may call the read or
 * write callback again from inside this call; called from inside one of curl's callbacks
 * (another transfer's), it resumes the transfer at the loop's next turn instead. No-op
 * when not paused or finished.
 */
void http_req_unpause(struct http_req *rq);

/**
 * http_req_cancel() - stop a started request; its done callback runs later, from the
 * loop, with HTTP_E_CANCELED (unless it already completed, then this is a no-op).
 */
void http_req_cancel(struct http_req *rq);

/** http_req_status() - the HTTP status code of the last response, 0 if none yet. */
long http_req_status(const struct http_req *rq);

/**
 * http_req_resp_header() - value of response header @name (case-insensitive) of the
 * final response, leading/trailing blanks removed; NULL if absent. Borrowed: valid
 * until the done callback returns.
 */
const char *http_req_resp_header(const struct http_req *rq, const char *name);

/**
 * http_req_body() - the collected response body (NUL-terminated for convenience, the
 * terminator is not counted in *@len). Borrowed; empty string when none.
 */
const char *http_req_body(const struct http_req *rq, size_t *len);

/**
 * http_req_take_body() - steal the collected body (caller frees). NULL with *@len = 0
 * when there is none.
 */
char *http_req_take_body(struct http_req *rq, size_t *len);

/** http_req_ctx_set() / http_req_ctx() - one caller pointer carried by the request. */
void http_req_ctx_set(struct http_req *rq, void *ctx);
void *http_req_ctx(const struct http_req *rq);

/** http_method_name() - "GET", "HEAD", ... */
const char *http_method_name(enum http_method m);

#endif
