/*
 * httpd.c - the operations HTTP server (see httpd.h).
 *
 * One connection is one request: READING the head into a fixed buffer under the read
 * deadline, then WRITING one response under the write deadline, then a shutdown and
 * close. A connection owns two handles (its TCP stream and its deadline timer) and is
 * freed when both close callbacks have run. The server counts every handle it has open
 * (listener, connection handles, rejected streams) so httpd_close() knows when the last
 * one is gone and uv_loop_close() will find nothing of ours.
 */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#define LISTEN_BACKLOG 64
#define BODY_FIRST_CAP (16 * 1024)
#define RESP_HEAD_MAX 512
#define LINGER_MS 1000

/* READING -> WRITING -> LINGERING -> CLOSING; any state may go to CLOSING at once. */
enum conn_state { C_READING = 0, C_WRITING, C_LINGERING, C_CLOSING };

struct conn {
    struct httpd *h;
    struct conn *prev, *next;
    enum conn_state state;
    uv_tcp_t tcp;
    uv_timer_t timer;
    int open_handles;            /* 0..2; freed at 0 */
    uv_write_t wreq;
    uv_shutdown_t sreq;
    char resp_head[RESP_HEAD_MAX];
    char *body;                  /* new, or NULL when the body is static text */
    size_t len;                  /* bytes of head[] used */
    char head[];                 /* head_max bytes */
};

struct httpd {
    uv_loop_t *loop;
    struct httpd_handlers hd;
    void *ctx;
    uv_tcp_t listener;
    int port;
    bool closing;
    void (*close_cb)(void *ctx);
    size_t handles;              /* every handle of ours not yet closed */
    struct conn *conns;          /* open connections, newest first */
    size_t body_hint;            /* the last /metrics size, to render once next time */
    struct httpd_stats st;
};

/* ---- address ---- */

static int addr_err(struct mi_err *err, const char *addr, const char *why)
{
    return mi_err_set(err, HTTPD_E_ADDR, "METRICS_ADDR \"%.64s\": %s", addr, why);
}

/* Split "[v6]:port", "host:port" or ":port" into @host and @port. */
static int split_addr(const char *addr, char *host, size_t hcap, int64_t *port, bool *v6,
                      struct mi_err *err)
{
    const char *h = addr, *port_s;
    size_t hlen;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':')
            return addr_err(err, addr, "expected [IPv6]:port");
        h = addr + 1;
        hlen = (size_t)(end - h);
        port_s = end + 2;
        *v6 = true;
    } else {
        const char *colon = strrchr(addr, ':');
        if (!colon)
            return addr_err(err, addr, "expected host:port");
        hlen = (size_t)(colon - addr);
        port_s = colon + 1;
        if (memchr(addr, ':', hlen))
            return addr_err(err, addr, "an IPv6 address needs brackets: [addr]:port");
        *v6 = false;
    }
    if (hlen >= hcap)
        return addr_err(err, addr, "host too long");
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    /* strtoll() would also take " 80" and "+80". */
    if (port_s[0] < '0' || port_s[0] > '9' || !mi_parse_i64(port_s, 0, 65535, port))
        return addr_err(err, addr, "port must be a number from 0 to 65535");
    return 0;
}

int httpd_parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *lenp,
                     struct mi_err *err)
{
    char host[INET6_ADDRSTRLEN + 1];
    int64_t port = 0;
    bool v6 = false;

    memset(ss, 0, sizeof(*ss));
    if (!addr || !*addr)
        return addr_err(err, "", "empty (an empty METRICS_ADDR disables the server)");
    int rc = split_addr(addr, host, sizeof(host), &port, &v6, err);
    if (rc)
        return rc;
    if (v6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            return addr_err(err, addr, "not a numeric IPv6 address");
        *lenp = sizeof(*s6);
        return 0;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    if (!host[0])
        s4->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (!strcmp(host, "localhost"))
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
        return addr_err(err, addr, "not a numeric IPv4 address (or localhost)");
    *lenp = sizeof(*s4);
    return 0;
}

/* ---- lifetime ---- */

static void maybe_finish(struct httpd *h)
{
    if (!h->closing || h->handles > 0)
        return;
    void (*cb)(void *) = h->close_cb;
    void *ctx = h->ctx;
    free(h);
    if (cb)
        cb(ctx);
}

static void conn_handle_closed(uv_handle_t *hd)
{
    struct conn *c = hd->data;
    struct httpd *h = c->h;
    h->handles--;
    if (--c->open_handles > 0)
        return;
    free(c->body);
    free(c);
    maybe_finish(h);
}

static void conn_close(struct conn *c)
{
    if (c->state == C_CLOSING)
        return;
    c->state = C_CLOSING;
    struct httpd *h = c->h;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->st.open--;
    /* Pending write and shutdown requests are cancelled; their callbacks see C_CLOSING. */
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void on_deadline(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->state != C_LINGERING)
        c->h->st.timeouts++;
    conn_close(c);
}

/* ---- responses ---- */

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/*
 * The response is sent and our FIN is queued. Closing now would make the kernel answer
 * with a reset if the client sent more than the head we read (a body, a pipelined
 * request), and a reset can destroy the response before the client reads it. So read
 * and discard until the client closes too, for at most LINGER_MS.
 */
static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (c->state == C_CLOSING)
        return;
    c->state = C_LINGERING;
    if (status < 0 || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_deadline, LINGER_MS, 0);
}

static void on_written(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    if (c->state == C_CLOSING)
        return;
    /* A FIN rather than a bare close, so the client reads the whole response. */
    if (status < 0 || uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        conn_close(c);
}

static const char *status_text(int code)
{
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

/*
 * Send the response and end reading. @body is either static text (@owned false) or a
 * buffer the connection takes over (@owned true).
 */
static void respond(struct conn *c, int code, const char *ctype, const char *body, size_t blen,
                    bool owned)
{
    struct httpd *h = c->h;
    if (owned)
        c->body = (char *)body;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->state = C_WRITING;
    h->st.responses++;
    int n = snprintf(c->resp_head, sizeof(c->resp_head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n",
                     code, status_text(code), ctype, blen,
                     code == 405 ? "Allow: GET\r\n" : "");
    uv_buf_t bufs[2] = { uv_buf_init(c->resp_head, (unsigned)n),
                         uv_buf_init((char *)body, (unsigned)blen) };
    uv_timer_start(&c->timer, on_deadline, h->hd.write_timeout_ms, 0);
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, bufs, blen ? 2 : 1, on_written) < 0)
        conn_close(c);
}

static void respond_text(struct conn *c, int code, const char *text)
{
    respond(c, code, "text/plain; charset=utf-8", text, strlen(text), false);
}

/* Append the caller's extra text after *@lenp bytes of *@bufp, growing it within body_max. */
static int render_extra(struct httpd *h, char **bufp, size_t *capp, size_t *lenp)
{
    for (int tries = 0; tries < 3; tries++) {
        size_t room = *capp - *lenp, more = 0;
        int rc = h->hd.metrics_extra(h->ctx, *bufp + *lenp, room, &more);
        if (rc > 0 || (rc < 0 && rc != -ENOSPC))
            return rc < 0 ? rc : -EINVAL;
        if (rc == 0 && more <= room) {
            *lenp += more;
            return 0;
        }
        if (*lenp + more + 1 > h->hd.body_max)
            return -E2BIG;
        char *nb = realloc(*bufp, *lenp + more + 1024);
        if (!nb)
            return -ENOMEM;
        *bufp = nb;
        *capp = *lenp + more + 1024;
    }
    return -EAGAIN;
}

/*
 * Render the registry into a buffer sized from the last scrape; re-render once or twice
 * if it grew (collect hooks may add series between passes).
 */
static int render_metrics(struct httpd *h, char **bufp, size_t *lenp)
{
    size_t cap = h->body_hint ? h->body_hint + 1024 : BODY_FIRST_CAP;
    size_t len = 0;
    char *buf = NULL;
    int rc = -EAGAIN;
    for (int tries = 0; tries < 3 && rc == -EAGAIN; tries++) {
        if (cap > h->hd.body_max)
            cap = h->hd.body_max;
        char *nb = realloc(buf, cap);
        if (!nb) {
            rc = -ENOMEM;
            break;
        }
        buf = nb;
        rc = 0;
        len = 0;
        if (h->hd.metrics && metrics_render(h->hd.metrics, buf, cap, &len) == -ENOSPC) {
            rc = len + 1 > h->hd.body_max ? -E2BIG : -EAGAIN;
            cap = len + 1 + 1024;   /* only for the next pass: buf keeps its size */
        }
    }
    if (rc == 0 && h->hd.metrics_extra)
        rc = render_extra(h, &buf, &cap, &len);
    if (rc) {
        free(buf);
        return rc;
    }
    h->body_hint = len;
    *bufp = buf;
    *lenp = len;
    return 0;
}

static void serve_metrics(struct conn *c)
{
    char *body = NULL;
    size_t len = 0;
    int rc = render_metrics(c->h, &body, &len);
    if (rc == -E2BIG) {
        respond_text(c, 500, "metrics text exceeds the response limit\n");
        return;
    }
    if (rc) {
        respond_text(c, 500, "cannot render metrics\n");
        return;
    }
    respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", body, len, true);
}

static void serve_readyz(struct conn *c)
{
    struct httpd *h = c->h;
    char reason[HTTPD_REASON_MAX];
    reason[0] = '\0';
    if (!h->hd.ready || h->hd.ready(h->ctx, reason, sizeof(reason) - 1)) {
        respond_text(c, 200, "ready\n");
        return;
    }
    reason[sizeof(reason) - 2] = '\0';
    /* One line, whatever the callback wrote. */
    size_t n = strlen(reason);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)reason[i] < 0x20 || reason[i] == 0x7f)
            reason[i] = ' ';
    }
    if (n == 0)
        n = (size_t)snprintf(reason, sizeof(reason) - 1, "not ready");
    reason[n] = '\n';
    char *body = malloc(n + 1);
    if (!body) {
        conn_close(c);
        return;
    }
    memcpy(body, reason, n + 1);
    respond(c, 503, "text/plain; charset=utf-8", body, n + 1, true);
}

/* ---- requests ---- */

static bool is_tchar(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Route the request line at @line (@n bytes, without its line end). */
static void handle_request(struct conn *c, const char *line, size_t n)
{
    size_t m = 0;
    while (m < n && is_tchar(line[m]))
        m++;
    if (m == 0 || m == n || line[m] != ' ') {
        respond_text(c, 400, "bad request\n");
        return;
    }
    const char *target = line + m + 1;
    const char *sp = memchr(target, ' ', n - m - 1);
    const char *end = line + n;
    if (!sp || target[0] != '/' || end - (sp + 1) != 8 || memcmp(sp + 1, "HTTP/1.", 7) != 0 ||
        (sp[8] != '0' && sp[8] != '1')) {
        respond_text(c, 400, "bad request\n");
        return;
    }
    if (m != 3 || memcmp(line, "GET", 3) != 0) {
        respond_text(c, 405, "method not allowed\n");
        return;
    }
    size_t plen = strcspn(target, "?# ");
    if (plen == 8 && !memcmp(target, "/metrics", 8))
        serve_metrics(c);
    else if (plen == 8 && !memcmp(target, "/healthz", 8))
        respond_text(c, 200, "ok\n");
    else if (plen == 7 && !memcmp(target, "/readyz", 7))
        serve_readyz(c);
    else
        respond_text(c, 404, "not found\n");
}

/* Look for the end of the head; when found, handle the request line. */
static void scan_head(struct conn *c)
{
    char *p = c->head;
    size_t len = c->len;
    /* RFC 9112 2.2: ignore empty lines before the request line. */
    while (len > 0 && (*p == '\r' || *p == '\n')) {
        p++;
        len--;
    }
    const char *eol = memchr(p, '\n', len);
    if (eol) {
        /* The head ends at an empty line; a bare LF is accepted as a line end. */
        const char *q = eol;
        while (q) {
            size_t rest = len - (size_t)(q + 1 - p);
            if (rest >= 1 && q[1] == '\n')
                break;
            if (rest >= 2 && q[1] == '\r' && q[2] == '\n')
                break;
            q = rest ? memchr(q + 1, '\n', rest) : NULL;
        }
        if (q) {
            size_t n = (size_t)(eol - p);
            if (n > 0 && p[n - 1] == '\r')
                n--;
            handle_request(c, p, n);
            return;
        }
    }
    if (c->len == c->h->hd.head_max)
        respond_text(c, 431, "request head too large\n");
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = hd->data;
    /* While lingering the head is answered already: its buffer takes what we discard. */
    size_t used = c->state == C_LINGERING ? 0 : c->len;
    *buf = uv_buf_init(c->head + used, (unsigned)(c->h->hd.head_max - used));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (c->state != C_READING)
        return;
    c->len += (size_t)nread;
    if (nread > 0)
        scan_head(c);
}

/* ---- accepting ---- */

static void reject_closed(uv_handle_t *hd)
{
    struct httpd *h = hd->data;
    free(hd);
    h->handles--;
    maybe_finish(h);
}

/*
 * Accept and close at once: libuv stops accepting until uv_accept() is called. (If
 * even this small allocation fails, the listener stalls: the process is out of memory.)
 */
static void reject(struct httpd *h, uv_stream_t *server)
{
    uv_tcp_t *t = malloc(sizeof(*t));
    if (!t)
        return;
    uv_tcp_init(h->loop, t);
    t->data = h;
    h->handles++;
    uv_accept(server, (uv_stream_t *)t);
    h->st.rejected++;
    uv_close((uv_handle_t *)t, reject_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct httpd *h = server->data;
    if (status < 0 || h->closing)
        return;
    if (h->st.open >= h->hd.max_conns) {
        reject(h, server);
        return;
    }
    struct conn *c = calloc(1, sizeof(*c) + h->hd.head_max);
    if (!c) {
        reject(h, server);
        return;
    }
    c->h = h;
    uv_tcp_init(h->loop, &c->tcp);
    uv_timer_init(h->loop, &c->timer);
    c->tcp.data = c->timer.data = c->wreq.data = c->sreq.data = c;
    c->open_handles = 2;
    h->handles += 2;
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    h->st.open++;
    h->st.accepted++;
    uv_timer_start(&c->timer, on_deadline, h->hd.read_timeout_ms, 0);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
        conn_close(c);
}

/* ---- server ---- */

static void defaults(struct httpd_handlers *hd)
{
    if (!hd->max_conns)
        hd->max_conns = HTTPD_MAX_CONNS;
    if (!hd->read_timeout_ms)
        hd->read_timeout_ms = HTTPD_READ_TIMEOUT_MS;
    if (!hd->write_timeout_ms)
        hd->write_timeout_ms = HTTPD_WRITE_TIMEOUT_MS;
    if (!hd->head_max)
        hd->head_max = HTTPD_HEAD_MAX;
    if (!hd->body_max)
        hd->body_max = HTTPD_BODY_MAX;
}

/* The listening socket, made with plain syscalls so a failure leaves no libuv handle. */
static int listen_socket(const char *addr, int *fdp, int *portp, struct mi_err *err)
{
    struct sockaddr_storage ss;
    socklen_t slen = 0;
    int rc = httpd_parse_addr(addr, &ss, &slen, err);
    if (rc)
        return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return mi_err_set(err, -errno, "METRICS_ADDR %s: socket: %s", addr, strerror(errno));
    int one = 1;
    /* A restarted worker must not wait for the old connections' TIME_WAIT. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    const char *what = "bind";
    if (bind(fd, (struct sockaddr *)&ss, slen) == 0) {
        what = "getsockname";
        slen = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &slen) == 0) {
            what = "listen";
            if (listen(fd, LISTEN_BACKLOG) == 0) {
                *fdp = fd;
                *portp = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                        : ((struct sockaddr_in *)&ss)->sin_port);
                return 0;
            }
        }
    }
    rc = -errno;
    close(fd);
    return mi_err_set(err, rc, "METRICS_ADDR %s: cannot %s: %s", addr, what, strerror(-rc));
}

static void listener_closed(uv_handle_t *hd)
{
    struct httpd *h = hd->data;
    h->handles--;
    maybe_finish(h);
}

int httpd_new(struct httpd **hp, uv_loop_t *loop, const char *addr,
              const struct httpd_handlers *handlers, void *ctx, struct mi_err *err)
{
    int fd = -1;
    *hp = NULL;
    struct httpd *h = calloc(1, sizeof(*h));
    if (!h)
        return mi_err_set(err, -ENOMEM, "out of memory");
    if (handlers)
        h->hd = *handlers;
    defaults(&h->hd);
    h->loop = loop;
    h->ctx = ctx;
    int rc = listen_socket(addr, &fd, &h->port, err);
    if (rc) {
        free(h);
        return rc;
    }
    uv_tcp_init(loop, &h->listener);
    h->listener.data = h;
    h->handles = 1;
    rc = uv_tcp_open(&h->listener, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->listener, LISTEN_BACKLOG, on_connection);
    if (rc < 0) {
        if (uv_fileno((uv_handle_t *)&h->listener, &(uv_os_fd_t){ 0 }) != 0)
            close(fd);
        mi_err_set(err, rc, "METRICS_ADDR %s: cannot listen: %s", addr, uv_strerror(rc));
        h->closing = true;
        uv_close((uv_handle_t *)&h->listener, listener_closed);
        return rc;
    }
    *hp = h;
    return 0;
}

void httpd_close(struct httpd *h, void (*cb)(void *ctx))
{
    if (!h)
        return;
    h->closing = true;
    h->close_cb = cb;
    uv_close((uv_handle_t *)&h->listener, listener_closed);
    while (h->conns)
        conn_close(h->conns);
}

int httpd_port(const struct httpd *h)
{
    return h->port;
}

void httpd_stats(const struct httpd *h, struct httpd_stats *st)
{
    *st = h->st;
}
