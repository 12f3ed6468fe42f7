/*
 * http.c - one curl multi per libuv loop (see http.h).
 *
 * Two levels of context: struct mi_http (the multi, its timer, its epoll set) and struct
 * http_req (one easy handle, via CURLOPT_PRIVATE). curl is only ever called from loop
 * callbacks we own (poll, timer, reap, prepare), never from inside curl's own timer or
 * socket callbacks, and every call to curl_multi_socket_action() is followed by draining
 * curl_multi_info_read(), so a transfer that ends on any path is reaped.
 *
 * curl's sockets live in an epoll set of our own, which the loop watches with one uv_poll.
 * A uv_poll per socket cost about seven system calls per request (uv_poll_init checks the
 * fd with an epoll add and delete and sets it non-blocking; every uv_poll_start deletes
 * the fd and adds it again; stop and close delete it twice): here a connection costs one
 * EPOLL_CTL_ADD, one MOD per change of direction, and stays in the set while idle in curl's
 * cache (see fd_state()). The set is level-triggered, as libuv's is, so an event left
 * unserved is reported again on the next loop turn.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "http.h"

#define HTTP_UA_DEFAULT "media-ingest/0.1"
#define HTTP_CONNECT_TIMEOUT_MS 10000

enum req_state { RQ_NEW = 0, RQ_RUNNING, RQ_DONE };

/* What one streamed download may deliver per loop turn: with a fast peer, curl would
 * otherwise read as long as the socket stays readable, and the loop would poll nothing else
 * (Redis, the database, /metrics) for seconds. */
#define HTTP_TURN_BYTES (256 * 1024)
#define HTTP_DOWNLOAD_BUFFER (64L * 1024)
/* How often requests with an idle timeout are looked at (http_req_idle_timeout). */
#define HTTP_IDLE_CHECK_MS 250
/* Easy handles kept for reuse after their request ends (curl_easy_reset keeps a handle's
 * allocations: its state and its buffers). A busy worker has about one transfer per job in
 * flight, so this covers a worker's usual concurrency; beyond it, handles are freed. */
#define HTTP_EASY_POOL 32
/* Bodies below this go without "Expect: 100-continue", which curl 7.88 sends for any body
 * over 1 KiB: waiting for the 100 costs a round trip on every small upload (curl 8 uses
 * the same 1 MiB threshold). Larger bodies still wait, so that a refused request (a bad
 * signature, a missing bucket) does not send megabytes first. */
#define HTTP_EXPECT_MIN (1024 * 1024)

struct mi_http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;                /* curl's single timeout */
    int epfd;                        /* curl's sockets (see the top of this file) */
    uint8_t *fds;                    /* FDS_* state per fd of curl's sockets */
    size_t nfds;
    uv_poll_t epoll;                 /* the loop's watch on epfd: referenced while active */
    uv_timer_t reap;                 /* completes cancelled requests outside curl */
    uv_prepare_t turn;               /* a new loop turn: resume transfers paused for fairness */
    uv_timer_t idle;                 /* looks for stalled requests while any has an idle timeout */
    unsigned idle_watched;           /* running requests with an idle timeout */
    unsigned turn_no;
    size_t fair_paused;              /* requests to resume at the next turn (on_turn) */
    int in_curl;                     /* inside curl_multi_socket_action() or curl_easy_pause() */
    int open_handles;                /* our handles still open: free when 0 */
    char *user_agent;
    bool proxy_env;                  /* a proxy variable is set: curl reads them per request */
    size_t active;
    CURL *idle_easy[HTTP_EASY_POOL]; /* ended requests' handles, reset, for the next ones */
    size_t n_idle;
    bool freeing;
    struct http_req *reqs;           /* running requests, doubly linked */
};

struct buf {
    char *data;
    size_t len, cap, max;
};

struct http_req {
    struct mi_http *http;
    CURL *easy;
    enum http_method method;
    enum req_state state;
    char *url;
    struct curl_slist *headers;
    uint64_t timeout_ms;
    uint64_t idle_ms;                /* http_req_idle_timeout(), 0: none */
    uint64_t last_io;                /* loop time of the last byte moved, or of a resume */
    bool stalled;                    /* ended by the idle check */
    long follow;
    long code;                       /* this response's status, read at its first body byte;
                                        0 again at each status line (100, redirects) */

    const unsigned char *body;       /* borrowed request body */
    size_t body_len, body_off;
    bool has_body;
    http_read_cb read_cb;
    void *read_ctx;
    int64_t stream_size;

    http_write_cb write_cb;
    void *write_ctx;
    struct buf resp;                 /* collected body (or error body of a stream) */
    struct buf hdrs;                 /* "name\0value\0" pairs of the last response */

    bool paused;
    bool fair_paused;                /* had its share of this loop turn, or was unpaused
                                        from inside curl: resumed by on_turn */
    unsigned turn_no;
    size_t turn_bytes;
    bool canceled;
    int abort_status;                /* why a callback made curl abort */
    http_done_cb cb;
    void *cb_ctx;
    void *user_ctx;
    char errbuf[CURL_ERROR_SIZE];
    struct http_req *prev, *next;
};

/* --- small helpers --------------------------------------------------------------- */

static int buf_append(struct buf *b, const void *p, size_t n)
{
    if (n > b->max - b->len)
        return HTTP_E_TOOBIG;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *d;

        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > b->max + 1)
            cap = b->max + 1;
        d = realloc(b->data, cap);
        if (!d)
            return -ENOMEM;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/**
 * http_method_name() - see http.h.
 */
const char *http_method_name(enum http_method m)
{
    static const char *const names[] = { "GET", "HEAD", "PUT", "POST", "DELETE" };

    return (unsigned)m < sizeof(names) / sizeof(names[0]) ? names[m] : "?";
}

static void list_add(struct mi_http *h, struct http_req *rq)
{
    rq->prev = NULL;
    rq->next = h->reqs;
    if (h->reqs)
        h->reqs->prev = rq;
    h->reqs = rq;
}

static void list_del(struct mi_http *h, struct http_req *rq)
{
    if (rq->prev)
        rq->prev->next = rq->next;
    else
        h->reqs = rq->next;
    if (rq->next)
        rq->next->prev = rq->prev;
    rq->prev = rq->next = NULL;
}

/* --- completion ---------------------------------------------------------------- */

static int map_result(struct http_req *rq, CURLcode res, struct mi_err *err)
{
    const char *m = http_method_name(rq->method);
    const char *text = rq->errbuf[0] ? rq->errbuf : curl_easy_strerror(res);

    if (rq->stalled)
        return mi_err_set(err, HTTP_E_TIMEOUT, "http %s: no data moved for %llu ms: the peer "
                          "stalled", m, (unsigned long long)rq->idle_ms);
    if (rq->canceled)
        return mi_err_set(err, HTTP_E_CANCELED, "http %s: cancelled", m);
    if (rq->abort_status == HTTP_E_TOOBIG)
        return mi_err_set(err, HTTP_E_TOOBIG, "http %s: response body larger than %zu bytes",
                          m, rq->resp.max);
    if (rq->abort_status == -ENOMEM)
        return mi_err_set(err, -ENOMEM, "http %s: out of memory", m);
    if (rq->abort_status)
        return mi_err_set(err, HTTP_E_CALLBACK, "http %s: aborted by the caller", m);
    switch (res) {
    case CURLE_OK:
        return 0;
    case CURLE_OPERATION_TIMEDOUT:
        return mi_err_set(err, HTTP_E_TIMEOUT, "http %s: deadline of %llu ms passed (%s)", m,
                          (unsigned long long)rq->timeout_ms, text);
    case CURLE_OUT_OF_MEMORY:
        return mi_err_set(err, -ENOMEM, "http %s: out of memory", m);
    default:
        return mi_err_set(err, HTTP_E_TRANSPORT, "http %s: %s", m, text);
    }
}

/* A handle for a new request: a reset one from the pool, else a new one. */
static CURL *easy_get(struct mi_http *h)
{
    return h->n_idle ? h->idle_easy[--h->n_idle] : curl_easy_init();
}

/* Back to the pool, with none of this request's options (URL, headers, credentials) left. */
static void easy_put(struct mi_http *h, CURL *easy)
{
    if (h->freeing || h->n_idle == HTTP_EASY_POOL) {
        curl_easy_cleanup(easy);
        return;
    }
    curl_easy_reset(easy);
    h->idle_easy[h->n_idle++] = easy;
}

static void req_destroy(struct http_req *rq)
{
    if (rq->easy)
        easy_put(rq->http, rq->easy);
    curl_slist_free_all(rq->headers);
    free(rq->url);
    free(rq->resp.data);
    free(rq->hdrs.data);
    free(rq);
}

/* The request has been removed from the multi: report it and free it. */
static void req_complete(struct http_req *rq, CURLcode res)
{
    struct mi_http *h = rq->http;
    struct mi_err err = MI_ERR_INIT;
    int status = map_result(rq, res, &err);

    rq->state = RQ_DONE;
    if (rq->fair_paused)
        h->fair_paused--;
    if (rq->idle_ms && --h->idle_watched == 0)
        uv_timer_stop(&h->idle);
    list_del(h, rq);
    if (--h->active == 0)
        uv_unref((uv_handle_t *)&h->epoll);
    rq->cb(rq->cb_ctx, rq, status, status ? &err : NULL);
    req_destroy(rq);
}

static void drain(struct mi_http *h)
{
    for (;;) {
        int left = 0;
        CURLMsg *msg = curl_multi_info_read(h->multi, &left);
        struct http_req *rq = NULL;
        CURLcode res;
        CURL *easy;

        if (!msg)
            break;
        if (msg->msg != CURLMSG_DONE)
            continue;
        /* The message does not survive curl_multi_remove_handle(): copy it first. */
        easy = msg->easy_handle;
        res = msg->data.result;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&rq);
        curl_multi_remove_handle(h->multi, easy);
        if (rq)
            req_complete(rq, res);
    }
}

static void on_reap(uv_timer_t *t)
{
    struct mi_http *h = t->data;
    bool again = true;

    /* A done callback may cancel or start others, so rescan after each completion. */
    while (again) {
        again = false;
        for (struct http_req *rq = h->reqs; rq; rq = rq->next) {
            if (rq->canceled) {
                curl_multi_remove_handle(h->multi, rq->easy);
                req_complete(rq, CURLE_ABORTED_BY_CALLBACK);
                again = true;
                break;
            }
        }
    }
}

/* End @rq from the loop, outside curl (on_reap), with HTTP_E_CANCELED, or the status its
 * flags say (map_result). */
static void cancel_later(struct http_req *rq)
{
    rq->canceled = true;
    uv_timer_start(&rq->http->reap, on_reap, 0, 0);
}

/* Requests that moved no byte for their idle timeout, unless paused by their caller, end
 * as the cancelled ones do (outside curl, from the reap timer), with HTTP_E_TIMEOUT. */
static void on_idle_check(uv_timer_t *t)
{
    struct mi_http *h = t->data;
    uint64_t now = uv_now(h->loop);

    for (struct http_req *rq = h->reqs; rq; rq = rq->next) {
        if (rq->idle_ms && !rq->paused && !rq->canceled && now - rq->last_io >= rq->idle_ms) {
            rq->stalled = true;
            cancel_later(rq);
        }
    }
}

/* --- curl's socket and timer callbacks --------------------------------------------- */

/* Before each poll: a new turn; transfers paused for fairness go on. */
static void on_turn(uv_prepare_t *p)
{
    struct mi_http *h = p->data;
    bool again = true;

    h->turn_no++;
    while (h->fair_paused && again) {
        again = false;
        for (struct http_req *rq = h->reqs; rq; rq = rq->next) {
            if (rq->fair_paused) {
                rq->fair_paused = false;
                h->fair_paused--;
                h->in_curl++;
                curl_easy_pause(rq->easy, CURLPAUSE_CONT);
                h->in_curl--;
                again = true;
                break;
            }
        }
    }
    drain(h);
}

static void on_timeout(uv_timer_t *t)
{
    struct mi_http *h = t->data;
    int running = 0;

    h->in_curl++;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    h->in_curl--;
    drain(h);
}

/*
 * curl asks for its timer: -1 stops it; 0 means "as soon as possible", which must still be a
 * later loop turn. libuv (before 1.45) runs a timer started from a timer callback with timeout
 * 0 again in the same pass, without polling: while curl keeps asking for 0 (a transfer whose
 * socket stays readable is "run again now"), the loop then polls nothing else for seconds
 * (Redis replies, lock renewals, /metrics). 1 ms, as in curl's libuv example (multi-uv.c).
 */
static int timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
    struct mi_http *h = userp;

    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, on_timeout, timeout_ms > 0 ? (uint64_t)timeout_ms : 1, 0);
    return 0;
}

/*
 * Per-fd state of curl's sockets, indexed by fd (FDS_*): whether the fd is in the epoll set
 * and for which directions, what curl wants now, and whether it is a connection socket
 * that curl opened and will close through our callbacks (http_sock_open/close).
 *
 * curl drops a connection's socket (CURL_POLL_REMOVE) after every request and asks for it
 * again on the next request that reuses the connection. A connection socket stays in the
 * set meanwhile, so that asking again for the same direction costs no system call (it
 * used to cost a DEL and an ADD per request). An idle socket that reports an event (the
 * server closed it) is deleted then; closing it removes it from the set by itself, and the
 * close callback forgets it before its fd number can be reused. Other sockets (the
 * threaded resolver's, which curl closes itself) are deleted at once, as before.
 */
#define FDS_EV_IN 0x01u      /* in the set for EPOLLIN */
#define FDS_EV_OUT 0x02u     /* in the set for EPOLLOUT */
#define FDS_IN_SET 0x04u
#define FDS_CONN 0x08u       /* opened and closed through our callbacks */
#define FDS_WANT_SHIFT 4     /* curl's CURL_POLL_IN/OUT/INOUT, 0 when not watched */

static uint8_t *fd_state(struct mi_http *h, curl_socket_t fd)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= h->nfds) {
        size_t n = h->nfds ? h->nfds : 64;
        uint8_t *t;

        while (n <= (size_t)fd)
            n *= 2;
        t = realloc(h->fds, n);
        if (!t)
            return NULL;
        memset(t + h->nfds, 0, n - h->nfds);
        h->fds = t;
        h->nfds = n;
    }
    return &h->fds[fd];
}

/*
 * Readiness maps to curl's select bits as curl's own Curl_socket_check() maps poll(): a
 * socket watched for reading is readable on data, hang-up or error; one watched for writing
 * is writable, or in error on hang-up or error. The directions are curl's current ones
 * (the fd's state), not those the event was registered with.
 */
static void on_epoll(uv_poll_t *p, int status, int events)
{
    struct mi_http *h = p->data;
    struct epoll_event ev[64];
    int n, running = 0;

    (void)events;
    /* libuv stops a watch that reports an error; epfd itself never should, but keep it on */
    if (status < 0)
        uv_poll_start(&h->epoll, UV_READABLE, on_epoll);
    n = epoll_wait(h->epfd, ev, (int)(sizeof(ev) / sizeof(ev[0])), 0);
    for (int i = 0; i < n; i++) {
        curl_socket_t fd = ev[i].data.fd;
        uint32_t e = ev[i].events;
        unsigned st = (size_t)fd < h->nfds ? h->fds[fd] : 0;
        unsigned what = st >> FDS_WANT_SHIFT;
        int flags = 0;

        /* closed by curl earlier in this batch (the set dropped it) */
        if (!(st & FDS_IN_SET))
            continue;
        if (!what) {
            /* an idle connection in curl's cache: curl checks it before reusing it */
            epoll_ctl(h->epfd, EPOLL_CTL_DEL, fd, &ev[i]);
            h->fds[fd] = (uint8_t)(st & FDS_CONN);
            continue;
        }
        if ((what & CURL_POLL_IN) && (e & (EPOLLIN | EPOLLHUP | EPOLLERR)))
            flags |= CURL_CSELECT_IN;
        if ((what & CURL_POLL_OUT) && (e & EPOLLOUT))
            flags |= CURL_CSELECT_OUT;
        if ((what & CURL_POLL_OUT) && (e & (EPOLLHUP | EPOLLERR)))
            flags |= CURL_CSELECT_ERR;
        h->in_curl++;
        curl_multi_socket_action(h->multi, fd, flags, &running);
        h->in_curl--;
    }
    drain(h);
}

static int sock_fn(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct mi_http *h = userp;
    struct epoll_event ev = { 0 };
    uint8_t *st = fd_state(h, fd);
    unsigned dirs;
    int op;

    (void)easy;
    (void)socketp;
    if (what == CURL_POLL_REMOVE) {
        if (!st || !(*st & FDS_IN_SET))
            return 0;
        if (*st & FDS_CONN) {
            *st &= (uint8_t)~(3u << FDS_WANT_SHIFT);
            return 0;
        }
        /* ENOENT/EBADF: the socket is already out of the set; nothing to undo */
        epoll_ctl(h->epfd, EPOLL_CTL_DEL, fd, &ev);
        *st = 0;
        return 0;
    }
    if (!st)
        return -1;
    dirs = ((what & CURL_POLL_IN) ? FDS_EV_IN : 0) | ((what & CURL_POLL_OUT) ? FDS_EV_OUT : 0);
    if ((*st & FDS_IN_SET) && (*st & (FDS_EV_IN | FDS_EV_OUT)) == dirs) {
        *st = (uint8_t)((*st & (FDS_IN_SET | FDS_CONN | dirs)) | ((unsigned)what << FDS_WANT_SHIFT));
        return 0;
    }
    ev.events = ((dirs & FDS_EV_IN) ? EPOLLIN : 0) | ((dirs & FDS_EV_OUT) ? EPOLLOUT : 0);
    ev.data.fd = fd;
    op = (*st & FDS_IN_SET) ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(h->epfd, op, fd, &ev) != 0) {
        op = errno == EEXIST ? EPOLL_CTL_MOD : errno == ENOENT ? EPOLL_CTL_ADD : -1;
        if (op < 0 || epoll_ctl(h->epfd, op, fd, &ev) != 0)
            return -1;
    }
    *st = (uint8_t)(FDS_IN_SET | (*st & FDS_CONN) | dirs | ((unsigned)what << FDS_WANT_SHIFT));
    return 0;
}

/* CURLOPT_OPENSOCKETFUNCTION: curl's own socket(2), marked as one we see closed. */
static curl_socket_t sock_open(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct mi_http *h = clientp;
    curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    uint8_t *st;

    (void)purpose;
    if (fd == CURL_SOCKET_BAD)
        return fd;
    st = fd_state(h, fd);
    if (!st) {
        close(fd);
        return CURL_SOCKET_BAD;
    }
    *st = FDS_CONN;
    return fd;
}

/* CURLOPT_CLOSESOCKETFUNCTION: closing takes the fd out of the set; forget it first. */
static int sock_close(void *clientp, curl_socket_t fd)
{
    struct mi_http *h = clientp;

    if (fd >= 0 && (size_t)fd < h->nfds)
        h->fds[fd] = 0;
    return close(fd);
}

/* --- per-request curl callbacks ---------------------------------------------------- */

static size_t on_read(char *buf, size_t size, size_t nmemb, void *userp)
{
    struct http_req *rq = userp;
    size_t cap = size * nmemb, n = 0;
    int r;

    rq->last_io = uv_now(rq->http->loop);
    if (!rq->read_cb) {
        n = rq->body_len - rq->body_off;
        if (n > cap)
            n = cap;
        memcpy(buf, rq->body + rq->body_off, n);
        rq->body_off += n;
        return n;
    }
    r = rq->read_cb(rq->read_ctx, buf, cap, &n);
    if (r == 0)
        return n <= cap ? n : cap;
    if (r == HTTP_PAUSE) {
        rq->paused = true;
        return CURL_READFUNC_PAUSE;
    }
    rq->abort_status = HTTP_E_CALLBACK;
    return CURL_READFUNC_ABORT;
}

/* curl rewinds a buffered body when it must resend it (a reused connection died). */
static int on_seek(void *userp, curl_off_t offset, int origin)
{
    struct http_req *rq = userp;

    if (rq->read_cb || origin != SEEK_SET || offset < 0 || (size_t)offset > rq->body_len)
        return CURL_SEEKFUNC_CANTSEEK;
    rq->body_off = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userp)
{
    struct http_req *rq = userp;
    size_t n = size * nmemb;
    int r;

    rq->last_io = uv_now(rq->http->loop);
    if (rq->code == 0)
        curl_easy_getinfo(rq->easy, CURLINFO_RESPONSE_CODE, &rq->code);
    /* Error bodies of streamed responses are collected so the caller can read them. */
    if (rq->write_cb && rq->code >= 200 && rq->code < 300) {
        struct mi_http *h = rq->http;

        if (rq->turn_no != h->turn_no) {
            rq->turn_no = h->turn_no;
            rq->turn_bytes = 0;
        }
        if (rq->turn_bytes >= HTTP_TURN_BYTES) {
            rq->fair_paused = true;
            h->fair_paused++;
            return CURL_WRITEFUNC_PAUSE;
        }
        r = rq->write_cb(rq->write_ctx, data, n);
        if (r == 0) {
            rq->turn_bytes += n;
            return n;
        }
        if (r == HTTP_PAUSE) {
            rq->paused = true;
            return CURL_WRITEFUNC_PAUSE;
        }
        rq->abort_status = HTTP_E_CALLBACK;
        return 0;
    }
    r = buf_append(&rq->resp, data, n);
    if (r != 0) {
        rq->abort_status = r;
        return 0;
    }
    return n;
}

/* Keep "name\0value\0" pairs of the final response; a status line starts a new one. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *userp)
{
    struct http_req *rq = userp;
    size_t n = size * nmemb, nl, vs, ve;
    const char *colon;

    rq->last_io = uv_now(rq->http->loop);
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        rq->hdrs.len = 0;
        rq->code = 0;
        return n;
    }
    colon = memchr(data, ':', n);
    if (!colon)
        return n;
    nl = (size_t)(colon - data);
    vs = nl + 1;
    ve = n;
    while (vs < ve && (data[vs] == ' ' || data[vs] == '\t'))
        vs++;
    while (ve > vs && (data[ve - 1] == '\r' || data[ve - 1] == '\n' || data[ve - 1] == ' ' ||
                       data[ve - 1] == '\t'))
        ve--;
    /* Past the cap headers are dropped: the ones we use come first in practice. */
    if (nl + (ve - vs) + 2 <= rq->hdrs.max - rq->hdrs.len) {
        if (buf_append(&rq->hdrs, data, nl) != 0 || buf_append(&rq->hdrs, "", 1) != 0 ||
            buf_append(&rq->hdrs, data + vs, ve - vs) != 0 || buf_append(&rq->hdrs, "", 1) != 0)
            return n;
    }
    return n;
}

/* --- the adapter ----------------------------------------------------------------- */

/* Whether any variable libcurl takes a proxy from is set (the environment does not change
 * while we run). */
static bool proxy_env_set(void)
{
    static const char *const vars[] = { "http_proxy", "HTTP_PROXY", "https_proxy",
                                        "HTTPS_PROXY", "all_proxy", "ALL_PROXY" };

    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *v = getenv(vars[i]);

        if (v && v[0])
            return true;
    }
    return false;
}

/**
 * http_new() - see http.h.
 */
int http_new(struct mi_http **httpp, uv_loop_t *loop, struct mi_err *err)
{
    struct mi_http *h;
    int r = -ENOMEM;

    *httpp = NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return mi_err_set(err, -EIO, "http: curl_global_init failed");
    h = calloc(1, sizeof(*h));
    if (!h)
        goto fail;
    h->epfd = -1;
    h->loop = loop;
    h->proxy_env = proxy_env_set();
    h->user_agent = strdup(HTTP_UA_DEFAULT);
    h->multi = curl_multi_init();
    if (!h->multi || !h->user_agent)
        goto fail;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, sock_fn);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    /* Enough idle connections for a full worker's parallel part uploads to reuse. */
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, 64L);
    h->epfd = epoll_create1(EPOLL_CLOEXEC);
    r = h->epfd < 0 ? -errno : uv_poll_init(loop, &h->epoll, h->epfd);
    if (r != 0)
        goto fail;
    uv_poll_start(&h->epoll, UV_READABLE, on_epoll);
    uv_unref((uv_handle_t *)&h->epoll);
    uv_timer_init(loop, &h->timer);
    uv_timer_init(loop, &h->reap);
    uv_prepare_init(loop, &h->turn);
    uv_prepare_start(&h->turn, on_turn);
    uv_unref((uv_handle_t *)&h->turn);
    h->timer.data = h;
    h->reap.data = h;
    h->turn.data = h;
    uv_timer_init(loop, &h->idle);
    uv_unref((uv_handle_t *)&h->idle);
    h->idle.data = h;
    h->epoll.data = h;
    h->open_handles = 5;
    *httpp = h;
    return 0;

fail:
    if (h) {
        if (h->epfd >= 0)
            close(h->epfd);
        if (h->multi)
            curl_multi_cleanup(h->multi);
        free(h->user_agent);
        free(h);
    }
    curl_global_cleanup();
    if (r == -ENOMEM)
        return mi_err_set(err, r, "http: out of memory");
    return mi_err_set(err, r, "http: cannot create an epoll set for curl's sockets: %s",
                      uv_strerror(r));
}

static void http_closed(uv_handle_t *hd)
{
    struct mi_http *h = hd->data;

    if (--h->open_handles == 0) {
        close(h->epfd);
        free(h->fds);
        free(h->user_agent);
        free(h);
        curl_global_cleanup();
    }
}

/**
 * http_free() - see http.h.
 */
void http_free(struct mi_http *http)
{
    if (!http || http->freeing)
        return;
    http->freeing = true;
    while (http->reqs) {
        struct http_req *rq = http->reqs;

        rq->canceled = true;
        curl_multi_remove_handle(http->multi, rq->easy);
        req_complete(rq, CURLE_ABORTED_BY_CALLBACK);
    }
    while (http->n_idle)
        curl_easy_cleanup(http->idle_easy[--http->n_idle]);
    /* Closing the connection cache reports its sockets through sock_fn (REMOVE). */
    curl_multi_cleanup(http->multi);
    http->multi = NULL;
    uv_close((uv_handle_t *)&http->epoll, http_closed);
    uv_close((uv_handle_t *)&http->timer, http_closed);
    uv_close((uv_handle_t *)&http->reap, http_closed);
    uv_close((uv_handle_t *)&http->turn, http_closed);
    uv_close((uv_handle_t *)&http->idle, http_closed);
}

/**
 * http_set_user_agent() - see http.h.
 */
int http_set_user_agent(struct mi_http *http, const char *ua)
{
    char *s = strdup(ua);

    if (!s)
        return -ENOMEM;
    free(http->user_agent);
    http->user_agent = s;
    return 0;
}

/**
 * http_active() - see http.h.
 */
size_t http_active(const struct mi_http *http)
{
    return http->active;
}

/* --- requests --------------------------------------------------------------------- */

/**
 * http_req_new() - see http.h.
 */
int http_req_new(struct http_req **rqp, struct mi_http *http, enum http_method method,
                 const char *url, struct mi_err *err)
{
    struct http_req *rq;

    *rqp = NULL;
    if (!url || !url[0])
        return mi_err_set(err, HTTP_E_USAGE, "http: empty URL");
    if ((unsigned)method > HTTP_DELETE)
        return mi_err_set(err, HTTP_E_USAGE, "http: unknown method");
    rq = calloc(1, sizeof(*rq));
    if (!rq)
        return mi_err_set(err, -ENOMEM, "http: out of memory");
    rq->http = http;
    rq->method = method;
    rq->url = strdup(url);
    rq->timeout_ms = HTTP_DEFAULT_TIMEOUT_MS;
    rq->resp.max = HTTP_DEFAULT_MAX_BODY;
    rq->hdrs.max = HTTP_MAX_RESP_HEADERS;
    rq->stream_size = -1;
    if (!rq->url) {
        free(rq);
        return mi_err_set(err, -ENOMEM, "http: out of memory");
    }
    *rqp = rq;
    return 0;
}

/**
 * http_req_free() - see http.h.
 */
void http_req_free(struct http_req *rq)
{
    if (rq && rq->state == RQ_NEW)
        req_destroy(rq);
}

/**
 * http_req_header() - see http.h.
 */
int http_req_header(struct http_req *rq, const char *name, const char *value)
{
    struct curl_slist *l;
    size_t nn = strlen(name), nv = strlen(value);
    char *line;

    if (rq->state != RQ_NEW || !nn || !nv)
        return HTTP_E_USAGE;
    line = malloc(nn + nv + 3);
    if (!line)
        return -ENOMEM;
    memcpy(line, name, nn);
    memcpy(line + nn, ": ", 2);
    memcpy(line + nn + 2, value, nv + 1);
    l = curl_slist_append(rq->headers, line);
    explicit_bzero(line, nn + nv + 2);
    free(line);
    if (!l)
        return -ENOMEM;
    rq->headers = l;
    return 0;
}

/**
 * http_req_bearer() - see http.h.
 */
int http_req_bearer(struct http_req *rq, const char *token)
{
    size_t n = strlen(token);
    char *v;
    int r;

    if (!n)
        return HTTP_E_USAGE;
    v = malloc(n + 8);
    if (!v)
        return -ENOMEM;
    memcpy(v, "Bearer ", 7);
    memcpy(v + 7, token, n + 1);
    r = http_req_header(rq, "Authorization", v);
    explicit_bzero(v, n + 7);
    free(v);
    return r;
}

/**
 * http_req_timeout() - see http.h.
 */
void http_req_timeout(struct http_req *rq, uint64_t ms)
{
    rq->timeout_ms = ms ? ms : HTTP_DEFAULT_TIMEOUT_MS;
}

/**
 * http_req_idle_timeout() - see http.h.
 */
void http_req_idle_timeout(struct http_req *rq, uint64_t ms)
{
    if (rq->state == RQ_NEW)
        rq->idle_ms = ms;
}

/**
 * http_req_body_buf() - see http.h.
 */
void http_req_body_buf(struct http_req *rq, const void *buf, size_t len)
{
    rq->body = buf;
    rq->body_len = len;
    rq->body_off = 0;
    rq->has_body = true;
    rq->read_cb = NULL;
}

/**
 * http_req_body_stream() - see http.h.
 */
void http_req_body_stream(struct http_req *rq, int64_t size, http_read_cb cb, void *ctx)
{
    rq->read_cb = cb;
    rq->read_ctx = ctx;
    rq->stream_size = size;
    rq->has_body = true;
}

/**
 * http_req_on_data() - see http.h.
 */
void http_req_on_data(struct http_req *rq, http_write_cb cb, void *ctx)
{
    rq->write_cb = cb;
    rq->write_ctx = ctx;
}

/**
 * http_req_max_body() - see http.h.
 */
void http_req_max_body(struct http_req *rq, size_t max)
{
    rq->resp.max = max ? max : HTTP_DEFAULT_MAX_BODY;
}

static int64_t body_size(const struct http_req *rq)
{
    if (!rq->has_body)
        return 0;
    return rq->read_cb ? rq->stream_size : (int64_t)rq->body_len;
}

/* Translate the request into easy options; 0 or a CURLcode. */
static CURLcode req_setup(struct http_req *rq)
{
    CURL *e = rq->easy;
    CURLcode c = CURLE_OK;
    uint64_t connect_ms = rq->timeout_ms < HTTP_CONNECT_TIMEOUT_MS ? rq->timeout_ms
                                                                  : HTTP_CONNECT_TIMEOUT_MS;

#define SET(opt, val)                                                                     \
    do {                                                                                  \
        if (c == CURLE_OK)                                                                \
            c = curl_easy_setopt(e, opt, val);                                            \
    } while (0)
    SET(CURLOPT_URL, rq->url);
    SET(CURLOPT_PRIVATE, (char *)rq);
    SET(CURLOPT_ERRORBUFFER, rq->errbuf);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_OPENSOCKETFUNCTION, sock_open);
    SET(CURLOPT_OPENSOCKETDATA, rq->http);
    SET(CURLOPT_CLOSESOCKETFUNCTION, sock_close);
    SET(CURLOPT_CLOSESOCKETDATA, rq->http);
    SET(CURLOPT_TIMEOUT_MS, (long)rq->timeout_ms);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
    SET(CURLOPT_USERAGENT, rq->http->user_agent);
    /* No proxy variable: say so, and curl skips looking for them (and NO_PROXY) in the
     * environment on every request. With one set, curl applies them as always. */
    if (!rq->http->proxy_env)
        SET(CURLOPT_PROXY, "");
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    /* Servers that never answer 100 (R2) would otherwise cost a second per upload. */
    SET(CURLOPT_EXPECT_100_TIMEOUT_MS, 50L);
    SET(CURLOPT_WRITEFUNCTION, on_write);
    SET(CURLOPT_WRITEDATA, rq);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, rq);
    if (rq->follow) {
        SET(CURLOPT_FOLLOWLOCATION, 1L);
        SET(CURLOPT_MAXREDIRS, rq->follow);
    }
    switch (rq->method) {
    case HTTP_GET:
        SET(CURLOPT_HTTPGET, 1L);
        /* 64 KiB reads instead of curl's 16 KiB: a quarter of the recv calls and write
         * callbacks per downloaded byte, for 48 KiB more per download in flight */
        SET(CURLOPT_BUFFERSIZE, HTTP_DOWNLOAD_BUFFER);
        break;
    case HTTP_HEAD:
        SET(CURLOPT_NOBODY, 1L);
        break;
    case HTTP_DELETE:
        SET(CURLOPT_CUSTOMREQUEST, "DELETE");
        break;
    case HTTP_PUT:
        SET(CURLOPT_UPLOAD, 1L);
        SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t)body_size(rq));
        break;
    case HTTP_POST:
        SET(CURLOPT_POST, 1L);
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_size(rq));
        break;
    }
    if (rq->method == HTTP_PUT || rq->method == HTTP_POST) {
        int64_t size = body_size(rq);   /* -1: unknown (chunked) */

        /* A removed header ("Expect:") is safe here: nothing below signs the header list
         * (curl 7.88.1's CURLOPT_AWS_SIGV4 would sign it as present: http-apis.md §B6.2). */
        if (size >= 0 && size < HTTP_EXPECT_MIN && c == CURLE_OK) {
            struct curl_slist *l = curl_slist_append(rq->headers, "Expect:");

            if (l)
                rq->headers = l;
            else
                c = CURLE_OUT_OF_MEMORY;
        }
        SET(CURLOPT_READFUNCTION, on_read);
        SET(CURLOPT_READDATA, rq);
        SET(CURLOPT_SEEKFUNCTION, on_seek);
        SET(CURLOPT_SEEKDATA, rq);
    }
    if (rq->headers)
        SET(CURLOPT_HTTPHEADER, rq->headers);
#undef SET
    return c;
}

/**
 * http_req_start() - see http.h.
 */
int http_req_start(struct http_req *rq, http_done_cb cb, void *ctx, struct mi_err *err)
{
    struct mi_http *h = rq->http;
    const char *m = http_method_name(rq->method);
    CURLcode c;
    CURLMcode mc;

    if (rq->state != RQ_NEW || h->freeing)
        return mi_err_set(err, HTTP_E_USAGE, "http %s: request already started", m);
    if (rq->has_body && rq->method != HTTP_PUT && rq->method != HTTP_POST)
        return mi_err_set(err, HTTP_E_USAGE, "http %s: a body needs PUT or POST", m);
    rq->easy = easy_get(h);
    if (!rq->easy)
        return mi_err_set(err, -ENOMEM, "http %s: out of memory", m);
    c = req_setup(rq);
    if (c != CURLE_OK)
        return mi_err_set(err, c == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EIO,
                          "http %s: %s", m, curl_easy_strerror(c));
    rq->cb = cb;
    rq->cb_ctx = ctx;
    mc = curl_multi_add_handle(h->multi, rq->easy);
    if (mc != CURLM_OK)
        return mi_err_set(err, mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EIO, "http %s: %s", m,
                          curl_multi_strerror(mc));
    rq->state = RQ_RUNNING;
    list_add(h, rq);
    if (h->active++ == 0)
        uv_ref((uv_handle_t *)&h->epoll);
    if (rq->idle_ms) {
        rq->last_io = uv_now(h->loop);
        if (h->idle_watched++ == 0)
            uv_timer_start(&h->idle, on_idle_check, HTTP_IDLE_CHECK_MS, HTTP_IDLE_CHECK_MS);
    }
    return 0;
}

/**
 * http_req_unpause() - see http.h.
 */
void http_req_unpause(struct http_req *rq)
{
    struct mi_http *h = rq->http;

    if (rq->state != RQ_RUNNING || !rq->paused)
        return;
    rq->paused = false;
    rq->last_io = uv_now(h->loop);   /* a paused time is not idle time */
    /*
     * From inside one of curl's callbacks (another transfer's data feeding this one's
     * body), curl_easy_pause() would re-enter the multi handle: resume it at the next
     * turn instead, before the loop polls.
     */
    if (h->in_curl) {
        if (!rq->fair_paused) {
            rq->fair_paused = true;
            h->fair_paused++;
        }
        return;
    }
    h->in_curl++;
    curl_easy_pause(rq->easy, CURLPAUSE_CONT);
    h->in_curl--;
}

/**
 * http_req_cancel() - see http.h.
 */
void http_req_cancel(struct http_req *rq)
{
    if (rq->state != RQ_RUNNING || rq->canceled)
        return;
    cancel_later(rq);
}

/**
 * http_req_status() - see http.h.
 */
long http_req_status(const struct http_req *rq)
{
    long code = 0;

    if (rq->easy)
        curl_easy_getinfo(rq->easy, CURLINFO_RESPONSE_CODE, &code);
    return code;
}

/**
 * http_req_resp_header() - see http.h.
 */
const char *http_req_resp_header(const struct http_req *rq, const char *name)
{
    const char *p = rq->hdrs.data, *end = p ? p + rq->hdrs.len : NULL;

    while (p && p < end) {
        const char *value = p + strlen(p) + 1;

        if (value >= end)
            break;
        if (strcasecmp(p, name) == 0)
            return value;
        p = value + strlen(value) + 1;
    }
    return NULL;
}

/**
 * http_req_body() - see http.h.
 */
const char *http_req_body(const struct http_req *rq, size_t *len)
{
    if (len)
        *len = rq->resp.len;
    return rq->resp.data ? rq->resp.data : "";
}

/**
 * http_req_take_body() - see http.h.
 */
char *http_req_take_body(struct http_req *rq, size_t *len)
{
    char *d = rq->resp.data;

    *len = d ? rq->resp.len : 0;
    rq->resp.data = NULL;
    rq->resp.len = rq->resp.cap = 0;
    return d;
}

/**
 * http_req_ctx_set() - see http.h.
 */
void http_req_ctx_set(struct http_req *rq, void *ctx)
{
    rq->user_ctx = ctx;
}

/**
 * http_req_ctx() - see http.h.
 */
void *http_req_ctx(const struct http_req *rq)
{
    return rq->user_ctx;
}

/**
 * http_req_follow() - see http.h.
 */
void http_req_follow(struct http_req *rq, long max_redirects)
{
    rq->follow = max_redirects > 0 ? max_redirects : 0;
}
