/*
 * test-httpd-server.c - the operations HTTP server on a real loop, driven by curl and
 * by raw sockets: the three endpoints, 404/405/400, the read deadline against a slow
 * client, an oversized head, the connection limit, many concurrent clients, and a
 * close that leaves the loop empty. Everything listens on and connects to 127.0.0.1.
 *
 * The server's loop runs in a second thread so this one can block as a client does;
 * the only cross-thread calls are uv_async_send() and an atomic readiness flag.
 * Exit 77 (skip) when curl is not installed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "httpd.h"
#include "metrics.h"
#include "metrics_worker.h"
#include "util.h"
#include "../unit/tap.h"

#define MAX_CONNS 8
#define READ_TIMEOUT_MS 1000

struct server {
    uv_loop_t loop;
    uv_async_t stop;
    struct httpd *h;
    struct metrics *reg;
    struct metrics_worker *mw;
    atomic_int ready;
    int port;
    bool closed;
    struct httpd_stats st;
    pthread_t thread;
};

static bool ready_cb(void *ctx, char *reason, size_t cap)
{
    struct server *s = ctx;
    if (atomic_load(&s->ready))
        return true;
    /* The newline must not reach the response: the server makes it one line. */
    snprintf(reason, cap, "redis: not connected\nretrying");
    return false;
}

static int extra_cb(void *ctx, char *buf, size_t cap, size_t *lenp)
{
    const char *t = "# HELP hook_up Text from the hook.\n# TYPE hook_up gauge\nhook_up 1\n";
    size_t n = strlen(t);
    *lenp = n;
    if (n > cap)
        return -ENOSPC;
    memcpy(buf, t, n);
    return 0;
}

static void on_closed(void *ctx)
{
    struct server *s = ctx;
    s->closed = true;
}

static void on_stop(uv_async_t *a)
{
    struct server *s = a->data;
    httpd_stats(s->h, &s->st);
    httpd_close(s->h, on_closed);
    uv_close((uv_handle_t *)&s->stop, NULL);
}

static void *run_loop(void *arg)
{
    struct server *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int setup_registry(struct server *s)
{
    static const char *const labels[] = { "n", NULL };
    struct mi_err err = MI_ERR_INIT;
    struct metrics_desc d = { .name = "test_many_series", .help = "Many series, to outgrow 16 KiB.",
                              .labels = labels, .max_series = 1000 };
    struct metrics_family *big = NULL;
    if (metrics_new(&s->reg) || metrics_register_worker(s->reg, "test", NULL, &s->mw, &err) ||
        metrics_register(s->reg, METRICS_GAUGE, &d, &big, &err)) {
        printf("# registry: %s\n", err.msg);
        return -1;
    }
    for (int i = 0; i < 1000; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        metrics_set(METRICS_SERIES(big, v), i);
    }
    metrics_worker_job(s->mw, MW_OUTCOME_COMPLETED, MW_CLASS_NONE, 0.5, 1234);
    return 0;
}

static int start(struct server *s)
{
    struct mi_err err = MI_ERR_INIT;
    struct httpd_handlers hd = { .metrics = s->reg, .metrics_extra = extra_cb,
                                 .ready = ready_cb, .max_conns = MAX_CONNS,
                                 .read_timeout_ms = READ_TIMEOUT_MS };
    atomic_store(&s->ready, 1);
    if (uv_loop_init(&s->loop) || uv_async_init(&s->loop, &s->stop, on_stop))
        return -1;
    s->stop.data = s;
    int rc = httpd_new(&s->h, &s->loop, "127.0.0.1:0", &hd, s, &err);
    TAP_EQ_INT(rc, 0);
    if (rc) {
        printf("# %s\n", err.msg);
        return -1;
    }
    s->port = httpd_port(s->h);
    TAP_CHECK(s->port > 0);
    return pthread_create(&s->thread, NULL, run_loop, s) ? -1 : 0;
}

/* ---- clients ---- */

static int connect_local(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Read until EOF, error or timeout. Return: bytes read; *@how: 0 EOF, else errno. */
static size_t read_all(int fd, char *buf, size_t cap, int *how)
{
    size_t len = 0;
    *how = 0;
    while (len + 1 < cap) {
        ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r == 0)
            break;
        if (r < 0) {
            *how = errno;
            break;
        }
        len += (size_t)r;
    }
    buf[len] = '\0';
    return len;
}

/* Send @req on a new connection and return the whole answer (static buffer). */
static const char *raw(int port, const char *req, size_t n)
{
    static char buf[16384];
    int how = 0;
    int fd = connect_local(port);
    buf[0] = '\0';
    if (fd < 0)
        return "connect failed";
    send_all(fd, req, n);
    read_all(fd, buf, sizeof(buf), &how);
    close(fd);
    return buf;
}

/* Run curl with @args against @path; return its output: the head (-i) and the body. */
static char *curl(int port, const char *args, const char *path)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "curl -sS -i --max-time 5 %s 'http://127.0.0.1:%d%s' 2>&1", args,
             port, path);
    FILE *p = popen(cmd, "r");
    if (!p)
        return strdup("popen failed");
    size_t cap = 1 << 20, len = 0;
    char *out = malloc(cap);
    size_t r = 0;
    do {
        r = fread(out + len, 1, cap - 1 - len, p);
        len += r;
    } while (r > 0 && len + 1 < cap);
    out[len] = '\0';
    pclose(p);
    return out;
}

static const char *body_of(const char *resp)
{
    const char *b = strstr(resp, "\r\n\r\n");
    return b ? b + 4 : "";
}

static void check_curl(int port, const char *args, const char *path, const char *status,
                       const char *body)
{
    char *out = curl(port, args, path);
    bool ok = !strncmp(out, status, strlen(status)) && !strcmp(body_of(out), body) &&
              strstr(out, "\r\nConnection: close\r\n") && strstr(out, "\r\nContent-Length: ");
    TAP_CHECK(ok);
    if (!ok)
        printf("#   curl %s %s:\n#   %s\n", args, path, out);
    free(out);
}

/* ---- the cases ---- */

static void test_endpoints(struct server *s)
{
    check_curl(s->port, "", "/healthz", "HTTP/1.1 200 OK\r\n", "ok\n");
    check_curl(s->port, "", "/readyz", "HTTP/1.1 200 OK\r\n", "ready\n");
    atomic_store(&s->ready, 0);
    check_curl(s->port, "", "/readyz", "HTTP/1.1 503 Service Unavailable\r\n",
               "redis: not connected retrying\n");
    atomic_store(&s->ready, 1);
    check_curl(s->port, "", "/nope", "HTTP/1.1 404 Not Found\r\n", "not found\n");
    check_curl(s->port, "", "/metricsx", "HTTP/1.1 404 Not Found\r\n", "not found\n");
    check_curl(s->port, "-X POST -d x=1", "/healthz", "HTTP/1.1 405 Method Not Allowed\r\n",
               "method not allowed\n");
    check_curl(s->port, "-X DELETE", "/metrics", "HTTP/1.1 405 Method Not Allowed\r\n",
               "method not allowed\n");
    char *out = curl(s->port, "-X PUT", "/readyz");
    TAP_CHECK(strstr(out, "\r\nAllow: GET\r\n") != NULL);
    free(out);
    check_curl(s->port, "", "/healthz?probe=1", "HTTP/1.1 200 OK\r\n", "ok\n");
    check_curl(s->port, "--http1.0", "/healthz", "HTTP/1.1 200 OK\r\n", "ok\n");

    /* /metrics: the registry's text followed by the hook's, with the 0.0.4 type. */
    out = curl(s->port, "", "/metrics");
    const char *body = body_of(out);
    TAP_CHECK(!strncmp(out, "HTTP/1.1 200 OK\r\n", 17));
    TAP_CHECK(strstr(out, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    TAP_CHECK(strstr(body, "media_ingest_jobs_total{outcome=\"completed\",class=\"none\"} 1\n"));
    TAP_CHECK(strstr(body, "media_ingest_bytes_total 1234\n"));
    TAP_CHECK(strstr(body, "test_many_series{n=\"999\"} 999\n"));
    TAP_CHECK(strlen(body) > 16 * 1024);
    size_t bl = strlen(body);
    const char *tail = "# TYPE hook_up gauge\nhook_up 1\n";
    TAP_CHECK(bl > strlen(tail) && !strcmp(body + bl - strlen(tail), tail));
    char want[64];
    snprintf(want, sizeof(want), "\r\nContent-Length: %zu\r\n", bl);
    TAP_CHECK(strstr(out, want) != NULL);
    free(out);
}

static void test_raw_requests(struct server *s)
{
    const char *r = raw(s->port, "GARBAGE\r\n\r\n", 11);
    TAP_CHECK(!strncmp(r, "HTTP/1.1 400 Bad Request\r\n", 26));
    r = raw(s->port, "GET /healthz HTTP/2.0\r\n\r\n", 25);
    TAP_CHECK(!strncmp(r, "HTTP/1.1 400 ", 13));
    r = raw(s->port, "GET healthz HTTP/1.1\r\n\r\n", 24);
    TAP_CHECK(!strncmp(r, "HTTP/1.1 400 ", 13));
    r = raw(s->port, "\r\nGET /healthz HTTP/1.0\n\n", 25);
    TAP_CHECK(!strncmp(r, "HTTP/1.1 200 OK\r\n", 17) && !strcmp(body_of(r), "ok\n"));
    /* Headers and a pipelined second request: one response, then close. */
    const char *two = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\r\n"
                      "GET /readyz HTTP/1.1\r\n\r\n";
    r = raw(s->port, two, strlen(two));
    TAP_CHECK(!strncmp(r, "HTTP/1.1 200 OK\r\n", 17) && !strcmp(body_of(r), "ok\n"));
}

static void test_oversized_head(struct server *s)
{
    /* Exactly the limit without an empty line: the server reads it all, then says 431. */
    char *big = malloc(HTTPD_HEAD_MAX * 3);
    size_t n = (size_t)snprintf(big, 64, "GET /healthz HTTP/1.1\r\nX-Pad: ");
    memset(big + n, 'a', HTTPD_HEAD_MAX * 3 - n);
    const char *r = raw(s->port, big, HTTPD_HEAD_MAX);
    const char *want = "HTTP/1.1 431 Request Header Fields Too Large\r\n";
    TAP_CHECK(!strncmp(r, want, strlen(want)));
    if (strncmp(r, want, strlen(want)))
        printf("#   got: %.80s\n", r);
    /* Far more: the server answers after head_max bytes and discards the rest, so the
     * answer is not destroyed by a reset for unread data. */
    int fd = connect_local(s->port);
    int how = 0;
    char buf[512];
    send_all(fd, big, HTTPD_HEAD_MAX * 3);
    size_t got = read_all(fd, buf, sizeof(buf), &how);
    printf("# 24 KiB head: %zu bytes back, errno %d\n", got, how);
    TAP_CHECK(how == 0 && !strncmp(buf, want, strlen(want)));
    close(fd);
    free(big);
    check_curl(s->port, "", "/healthz", "HTTP/1.1 200 OK\r\n", "ok\n");
}

static double since(int64_t t0)
{
    return (double)(mi_mono_ms() - t0) / 1000.0;
}

static void test_slow_client(struct server *s)
{
    char buf[256];
    int how = 0;
    /* Half a request line, then nothing: closed at the read deadline, no response. */
    int fd = connect_local(s->port);
    int64_t t0 = mi_mono_ms();
    send_all(fd, "GET /healthz HTTP/1.1\r\nHost:", 28);
    size_t got = read_all(fd, buf, sizeof(buf), &how);
    double dt = since(t0);
    printf("# slow client closed after %.3f s (%zu bytes, errno %d)\n", dt, got, how);
    TAP_CHECK(got == 0 && how == 0);
    TAP_CHECK(dt >= READ_TIMEOUT_MS / 1000.0 - 0.05 && dt < READ_TIMEOUT_MS / 1000.0 + 1.5);
    close(fd);

    /* A byte every 300 ms does not extend the deadline: it counts from accept. */
    fd = connect_local(s->port);
    t0 = mi_mono_ms();
    bool cut = false;
    for (int i = 0; i < 10 && !cut; i++) {
        cut = !send_all(fd, "G", 1);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 300) > 0)
            cut = true;
    }
    dt = since(t0);
    printf("# trickling client cut after %.3f s\n", dt);
    TAP_CHECK(cut && dt < READ_TIMEOUT_MS / 1000.0 + 1.0);
    close(fd);
}

/* MAX_CONNS idle connections fill the server; the next one is closed at once. */
static void test_conn_limit(struct server *s)
{
    int idle[MAX_CONNS];
    char buf[256];
    int how = 0;
    for (int i = 0; i < MAX_CONNS; i++)
        idle[i] = connect_local(s->port);
    usleep(200 * 1000); /* let the loop accept them */
    int fd = connect_local(s->port);
    int64_t t0 = mi_mono_ms();
    send_all(fd, "GET /healthz HTTP/1.1\r\n\r\n", 25);
    size_t got = read_all(fd, buf, sizeof(buf), &how);
    double dt = since(t0);
    printf("# over the limit: %zu bytes, errno %d, after %.3f s\n", got, how, dt);
    TAP_CHECK(got == 0 && (how == 0 || how == ECONNRESET));
    TAP_CHECK(dt < READ_TIMEOUT_MS / 1000.0 / 2);
    close(fd);
    for (int i = 0; i < MAX_CONNS; i++)
        close(idle[i]);
    usleep(100 * 1000);
    check_curl(s->port, "", "/healthz", "HTTP/1.1 200 OK\r\n", "ok\n");
}

/* 64 clients at once: each gets a whole 200 or is closed unanswered, none hangs. */
static void test_many_clients(struct server *s)
{
    enum { N = 64 };
    int fds[N];
    int ok = 0, refused = 0, other = 0;
    const char *req = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    for (int i = 0; i < N; i++) {
        fds[i] = connect_local(s->port);
        send_all(fds[i], req, strlen(req));
    }
    for (int i = 0; i < N; i++) {
        static char buf[256 * 1024];
        int how = 0;
        size_t got = read_all(fds[i], buf, sizeof(buf), &how);
        if (got == 0 && (how == 0 || how == ECONNRESET))
            refused++;
        else if (!strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) && strstr(buf, "hook_up 1\n"))
            ok++;
        else
            other++;
        close(fds[i]);
    }
    printf("# %d clients: %d served, %d closed at once, %d other\n", N, ok, refused, other);
    TAP_CHECK(ok >= MAX_CONNS);
    TAP_EQ_INT(ok + refused, N);
    TAP_EQ_INT(other, 0);
    check_curl(s->port, "", "/healthz", "HTTP/1.1 200 OK\r\n", "ok\n");
}

/* Scrape through the server into promtool, when it is installed. */
static void test_promtool(struct server *s)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        printf("# promtool not installed: scrape not linted\n");
        return;
    }
    char cmd[256];
    snprintf(cmd, sizeof(cmd),
             "curl -sS --max-time 5 http://127.0.0.1:%d/metrics | promtool check metrics",
             s->port);
    int st = system(cmd);
    TAP_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_bind_errors(struct server *s)
{
    struct mi_err err = MI_ERR_INIT;
    struct httpd *h2 = NULL;
    char addr[32];
    uv_loop_t loop;
    uv_loop_init(&loop);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", s->port);
    int rc = httpd_new(&h2, &loop, addr, NULL, NULL, &err);
    printf("# %s\n", err.msg);
    TAP_EQ_INT(rc, -EADDRINUSE);
    TAP_CHECK(h2 == NULL && strstr(err.msg, "METRICS_ADDR") && strstr(err.msg, addr));
    rc = httpd_new(&h2, &loop, "127.0.0.1", NULL, NULL, &err);
    TAP_EQ_INT(rc, HTTPD_E_ADDR);
    TAP_CHECK(strstr(err.msg, "METRICS_ADDR") != NULL);
    TAP_EQ_INT(uv_loop_close(&loop), 0);
}

int main(void)
{
    if (system("command -v curl >/dev/null 2>&1") != 0) {
        printf("# curl is not installed\n");
        return 77;
    }
    static struct server s;
    if (setup_registry(&s) || start(&s)) {
        printf("Bail out! cannot start the server\n");
        return 1;
    }
    test_endpoints(&s);
    test_raw_requests(&s);
    test_oversized_head(&s);
    test_slow_client(&s);
    test_conn_limit(&s);
    test_many_clients(&s);
    test_promtool(&s);
    test_bind_errors(&s);

    uv_async_send(&s.stop);
    pthread_join(s.thread, NULL);
    TAP_CHECK(s.closed);
    printf("# stats: accepted %llu rejected %llu responses %llu timeouts %llu open %u\n",
           (unsigned long long)s.st.accepted, (unsigned long long)s.st.rejected,
           (unsigned long long)s.st.responses, (unsigned long long)s.st.timeouts, s.st.open);
    TAP_CHECK(s.st.timeouts >= 2);
    TAP_CHECK(s.st.rejected >= 1);
    TAP_EQ_INT(s.st.open, 0);
    TAP_EQ_INT(uv_loop_close(&s.loop), 0);
    metrics_worker_free(s.mw);
    metrics_free(s.reg);
    return tap_done();
}
