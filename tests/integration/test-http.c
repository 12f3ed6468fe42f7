/*
 * test-http.c - the curl-multi-on-libuv adapter against a loopback Node server
 * (tests/fakes/http-test-server.mjs, started here). Exits 77 without node.
 */
#include <openssl/evp.h>
#include <stdint.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../unit/tap.h"
#include "http.h"
#include "storage-it.h"

struct result {
    int calls;
    int status;
    long code;
    char msg[MI_ERR_MSG_MAX];
    char body[4096];
    size_t body_len;
    char hdr[256];
};

static uv_loop_t loop;
static struct mi_http *http;
static char base[64];

static void on_done(void *ctx, struct http_req *rq, int status, const struct mi_err *err)
{
    struct result *r = ctx;
    size_t len;
    const char *b = http_req_body(rq, &len);
    const char *h = http_req_resp_header(rq, "x-two");

    r->calls++;
    r->status = status;
    r->code = http_req_status(rq);
    snprintf(r->msg, sizeof(r->msg), "%s", err ? err->msg : "");
    r->body_len = len;
    if (len >= sizeof(r->body))
        len = sizeof(r->body) - 1;
    memcpy(r->body, b, len);
    r->body[len] = '\0';
    if (!h)
        h = http_req_resp_header(rq, "content-type");
    snprintf(r->hdr, sizeof(r->hdr), "%s", h ? h : "");
}

static struct http_req *mk(enum http_method m, const char *path)
{
    char url[256];
    struct http_req *rq = NULL;
    struct mi_err err = MI_ERR_INIT;

    snprintf(url, sizeof(url), "%s%s", base, path);
    if (http_req_new(&rq, http, m, url, &err) != 0)
        return NULL;
    return rq;
}

static void run(struct http_req *rq, struct result *r)
{
    struct mi_err err = MI_ERR_INIT;

    memset(r, 0, sizeof(*r));
    if (http_req_start(rq, on_done, r, &err) != 0) {
        printf("# start failed: %s\n", err.msg);
        http_req_free(rq);
        r->status = -1;
        return;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
}

static void sha_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int l = 0;
    static const char hx[] = "0123456789abcdef";

    EVP_Digest(p, n, md, &l, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hx[md[i] >> 4];
        out[2 * i + 1] = hx[md[i] & 15];
    }
    out[64] = '\0';
}

/* --- streamed download with pauses ---------------------------------------------- */

struct sink {
    struct http_req *rq;
    uv_timer_t t;
    uint64_t hold_ms;   /* 0: refuse every other delivery for 1 ms; else the first for this */
    uint64_t got;
    int pauses;
    bool bad;
    bool flip;
};

static void sink_resume(uv_timer_t *t)
{
    struct sink *s = t->data;

    http_req_unpause(s->rq);
}

static int sink_write(void *ctx, const char *buf, size_t len)
{
    struct sink *s = ctx;

    /* A refused delivery is delivered again once resumed. */
    s->flip = !s->flip;
    if (s->hold_ms ? s->pauses == 0 : s->flip) {
        s->pauses++;
        uv_timer_start(&s->t, sink_resume, s->hold_ms ? s->hold_ms : 1, 0);
        return HTTP_PAUSE;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)buf[i] != (unsigned char)(((s->got + i) * 7 + 3) & 255))
            s->bad = true;
    }
    s->got += len;
    return 0;
}

/* A GET of @path streamed into @s (its timer initialised); sink_done() closes the timer. */
static struct http_req *sink_get(struct sink *s, const char *path)
{
    uv_timer_init(&loop, &s->t);
    s->t.data = s;
    s->rq = mk(HTTP_GET, path);
    http_req_on_data(s->rq, sink_write, s);
    return s->rq;
}

static void sink_done(struct sink *s)
{
    uv_close((uv_handle_t *)&s->t, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
}

static void test_stream_download(void)
{
    struct sink s = { 0 };
    struct result r;

    run(sink_get(&s, "/bytes?n=5000000"), &r);
    TAP_EQ_INT(r.calls, 1);
    TAP_EQ_INT(r.status, 0);
    TAP_EQ_INT(r.code, 200);
    TAP_EQ_INT(s.got, 5000000);
    TAP_CHECK(!s.bad);
    TAP_CHECK(s.pauses > 10);
    sink_done(&s);
}

/* --- streamed upload with pauses ------------------------------------------------- */

struct source {
    struct http_req *rq;
    uv_timer_t t;
    const unsigned char *data;
    size_t len, off;
    int pauses;
    bool flip;
};

static void source_resume(uv_timer_t *t)
{
    struct source *s = t->data;

    http_req_unpause(s->rq);
}

static int source_read(void *ctx, char *buf, size_t cap, size_t *n)
{
    struct source *s = ctx;
    size_t k = s->len - s->off;

    s->flip = !s->flip;
    if (s->flip && k > 0) {
        s->pauses++;
        uv_timer_start(&s->t, source_resume, 0, 0);
        return HTTP_PAUSE;
    }
    if (k > cap)
        k = cap;
    if (k > 10000)
        k = 10000;
    memcpy(buf, s->data + s->off, k);
    s->off += k;
    *n = k;
    return 0;
}

static void test_stream_upload(const unsigned char *data, size_t len, const char *want_sha)
{
    struct source s = { .data = data, .len = len };
    struct result r;
    char want[128];

    uv_timer_init(&loop, &s.t);
    s.t.data = &s;
    s.rq = mk(HTTP_PUT, "/echo");
    http_req_body_stream(s.rq, (int64_t)len, source_read, &s);
    run(s.rq, &r);
    TAP_EQ_INT(r.status, 0);
    TAP_EQ_INT(r.code, 200);
    snprintf(want, sizeof(want), "\"len\":%zu,\"sha256\":\"%s\"", len, want_sha);
    TAP_CHECK(strstr(r.body, want) != NULL);
    TAP_CHECK(s.pauses > 10);
    uv_close((uv_handle_t *)&s.t, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
}

/* --- cancel ------------------------------------------------------------------------ */

static void cancel_now(uv_timer_t *t)
{
    http_req_cancel(t->data);
}

static void test_cancel(void)
{
    struct result r;
    struct http_req *rq = mk(HTTP_GET, "/slow?ms=5000");
    struct mi_err err = MI_ERR_INIT;
    uv_timer_t t;

    memset(&r, 0, sizeof(r));
    TAP_EQ_INT(http_req_start(rq, on_done, &r, &err), 0);
    uv_timer_init(&loop, &t);
    t.data = rq;
    uv_timer_start(&t, cancel_now, 100, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    TAP_EQ_INT(r.calls, 1);
    TAP_EQ_INT(r.status, HTTP_E_CANCELED);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
}

static void stop_loop(uv_timer_t *t)
{
    (void)t;
}

static double cpu_ms(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

/*
 * A kept-alive connection stays in the adapter's epoll set while idle in curl's cache. The
 * server closing it must neither spin the loop nor leave a stale entry behind for the next
 * socket that gets the same fd number.
 */
static void test_idle_closed(void)
{
    struct result r, r2;
    uv_timer_t t;
    double cpu;
    struct http_req *rq;

    /* Closed while the loop runs: the event is taken once, not again and again. */
    run(mk(HTTP_GET, "/conn-drop?ms=50"), &r);
    TAP_EQ_INT(r.code, 200);
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, stop_loop, 400, 0);
    cpu = cpu_ms();
    uv_run(&loop, UV_RUN_DEFAULT);
    cpu = cpu_ms() - cpu;
    printf("# 400 ms with a closed idle connection: %.1f ms of CPU\n", cpu);
    TAP_CHECK(cpu < 100);
    run(mk(HTTP_GET, "/conn"), &r2);
    TAP_EQ_INT(r2.code, 200);
    TAP_CHECK(strcmp(r.body, r2.body) != 0);   /* a new connection */

    /* Closed while the loop does not run: curl finds it dead on reuse and closes it, and
     * the new connection's socket (most often the same fd) must be watched afresh. */
    run(mk(HTTP_GET, "/conn-drop?ms=20"), &r);
    TAP_EQ_INT(r.code, 200);
    usleep(200 * 1000);
    rq = mk(HTTP_GET, "/conn");
    http_req_timeout(rq, 3000);
    run(rq, &r2);
    TAP_EQ_INT(r2.status, 0);
    TAP_EQ_INT(r2.code, 200);
    TAP_CHECK(strcmp(r.body, r2.body) != 0);

    /* A name to resolve: curl's resolver has sockets of its own, which it closes itself. */
    for (int i = 0; i < 3; i++) {
        char url[128];

        snprintf(url, sizeof(url), "http://localhost:%s/conn", strrchr(base, ':') + 1);
        rq = NULL;
        TAP_EQ_INT(http_req_new(&rq, http, HTTP_GET, url, &(struct mi_err)MI_ERR_INIT), 0);
        http_req_timeout(rq, 3000);
        run(rq, &r);
        TAP_EQ_INT(r.code, 200);
        run(mk(HTTP_GET, "/conn-drop?ms=1"), &r2);
        TAP_EQ_INT(r2.code, 200);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
}

/* --- idle timeout ---------------------------------------------------------------- */

/* A request ended by its idle timeout (300 ms), with how long it took. */
static uint64_t run_idle(struct http_req *rq, struct result *r)
{
    uint64_t t0;

    uv_update_time(&loop);
    t0 = uv_now(&loop);
    http_req_idle_timeout(rq, 300);
    http_req_timeout(rq, 5000);
    run(rq, r);
    uv_update_time(&loop);
    return uv_now(&loop) - t0;
}

static void test_idle_timeout(void)
{
    struct result r;
    struct sink held = { .hold_ms = 900 };
    uint64_t ms;

    /* A peer that stops sending mid-body is cut after the idle time, not the deadline. */
    ms = run_idle(mk(HTTP_GET, "/stall?after=1000"), &r);
    printf("# stalled body cut after %llu ms\n", (unsigned long long)ms);
    TAP_EQ_INT(r.status, HTTP_E_TIMEOUT);
    TAP_CHECK(strstr(r.msg, "no data moved for 300 ms") != NULL);
    TAP_CHECK(ms >= 300 && ms < 1500);
    /* ...and one that never answers at all. */
    ms = run_idle(mk(HTTP_GET, "/slow?ms=3000"), &r);
    TAP_EQ_INT(r.status, HTTP_E_TIMEOUT);
    TAP_CHECK(ms >= 300 && ms < 1500);

    /* Slow but moving (a chunk every 100 ms for 1 s): not idle. */
    ms = run_idle(mk(HTTP_GET, "/drip?chunks=10&ms=100"), &r);
    TAP_EQ_INT(r.status, 0);
    TAP_EQ_INT(r.code, 200);
    TAP_EQ_INT(r.body_len, 10000);
    TAP_CHECK(ms >= 900);

    /* Paused by its caller for 900 ms: that is not the peer stalling. */
    ms = run_idle(sink_get(&held, "/bytes?n=300000"), &r);
    TAP_EQ_INT(r.status, 0);
    TAP_EQ_INT(r.code, 200);
    TAP_EQ_INT(held.got, 300000);
    TAP_CHECK(!held.bad);
    TAP_CHECK(ms >= 900);
    sink_done(&held);
}

int main(void)
{
    const char *node = it_node();
    const char *root = getenv("MI_SOURCE_ROOT");
    char script[512], line[128], want[256];
    struct it_child srv = { 0 };
    struct mi_err err = MI_ERR_INIT;
    struct result r, r2;
    struct http_req *rq;
    unsigned char *big;
    char sha[65];
    size_t big_len = 3 * 1024 * 1024 + 17;
    int port;

    signal(SIGPIPE, SIG_IGN);
    if (!node) {
        printf("1..0 # SKIP node not found\n");
        return IT_SKIP;
    }
    snprintf(script, sizeof(script), "%s/tests/fakes/http-test-server.mjs", root ? root : ".");
    {
        char *argv[] = { (char *)node, script, NULL };
        if (it_spawn(&srv, argv, NULL) != 0 || it_wait_line(&srv, "PORT ", line, sizeof(line),
                                                               10000) != 0) {
            printf("1..0 # SKIP test server did not start\n");
            it_stop(&srv);
            return IT_SKIP;
        }
    }
    port = (int)strtol(line + 5, NULL, 10);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);

    uv_loop_init(&loop);
    TAP_EQ_INT(http_new(&http, &loop, &err), 0);

    /* Collected GET with response headers. */
    rq = mk(HTTP_GET, "/bytes?n=1000");
    run(rq, &r);
    TAP_EQ_INT(r.calls, 1);
    TAP_EQ_INT(r.status, 0);
    TAP_EQ_INT(r.code, 200);
    TAP_EQ_INT(r.body_len, 1000);
    TAP_EQ_INT((unsigned char)r.body[999], (999 * 7 + 3) & 255);
    TAP_EQ_STR(r.hdr, "application/x-test");

    /* Header values are trimmed. */
    run(mk(HTTP_GET, "/headers"), &r);
    TAP_EQ_STR(r.hdr, "two words");

    /* Buffered PUT body, bearer, user agent, custom header. */
    big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (unsigned char)(i * 131 + 7);
    sha_hex(big, big_len, sha);
    rq = mk(HTTP_PUT, "/echo");
    http_req_body_buf(rq, big, big_len);
    TAP_EQ_INT(http_req_bearer(rq, "tok123"), 0);
    TAP_EQ_INT(http_req_header(rq, "X-Test", "v1"), 0);
    run(rq, &r);
    TAP_EQ_INT(r.code, 200);
    snprintf(want, sizeof(want), "\"len\":%zu,\"sha256\":\"%s\"", big_len, sha);
    TAP_CHECK(strstr(r.body, want) != NULL);
    TAP_CHECK(strstr(r.body, "\"auth\":\"Bearer tok123\"") != NULL);
    TAP_CHECK(strstr(r.body, "\"ua\":\"media-ingest/") != NULL);
    TAP_CHECK(strstr(r.body, "\"hdr\":\"v1\"") != NULL);
    TAP_CHECK(strstr(r.body, "\"expect\":\"100-continue\"") != NULL);   /* 1 MiB and up */

    /* A small body goes at once: no "Expect: 100-continue" and its round trip. */
    rq = mk(HTTP_PUT, "/echo");
    http_req_body_buf(rq, big, 200 * 1024);
    run(rq, &r);
    TAP_EQ_INT(r.code, 200);
    TAP_CHECK(strstr(r.body, "\"len\":204800,") != NULL);
    TAP_CHECK(strstr(r.body, "\"expect\":\"\"") != NULL);

    /* Empty POST. */
    rq = mk(HTTP_POST, "/echo");
    run(rq, &r);
    TAP_CHECK(strstr(r.body, "\"method\":\"POST\",\"len\":0") != NULL);

    /* Streaming with backpressure both ways. */
    test_stream_download();
    test_stream_upload(big, big_len, sha);

    /* Error statuses are responses, with their bodies. */
    run(mk(HTTP_GET, "/status/503"), &r);
    TAP_EQ_INT(r.status, 0);
    TAP_EQ_INT(r.code, 503);
    TAP_CHECK(strstr(r.body, "Code503") != NULL);

    /* A streamed GET whose answer is an error collects the error body instead. */
    {
        struct sink s = { 0 };
        uv_timer_init(&loop, &s.t);
        s.t.data = &s;
        s.rq = mk(HTTP_GET, "/status/404");
        http_req_on_data(s.rq, sink_write, &s);
        run(s.rq, &r);
        TAP_EQ_INT(r.code, 404);
        TAP_EQ_INT(s.got, 0);
        TAP_CHECK(strstr(r.body, "Code404") != NULL);
        uv_close((uv_handle_t *)&s.t, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
    }

    /* Deadline. */
    rq = mk(HTTP_GET, "/slow?ms=3000");
    http_req_timeout(rq, 200);
    run(rq, &r);
    TAP_EQ_INT(r.calls, 1);
    TAP_EQ_INT(r.status, HTTP_E_TIMEOUT);
    TAP_CHECK(strstr(r.msg, "deadline") != NULL);

    /* A cut connection is a transport error carrying curl's text. */
    run(mk(HTTP_GET, "/cut"), &r);
    TAP_EQ_INT(r.status, HTTP_E_TRANSPORT);
    TAP_CHECK(strlen(r.msg) > 12);
    printf("# cut: %s\n", r.msg);

    /* Body cap. */
    rq = mk(HTTP_GET, "/bytes?n=2000");
    http_req_max_body(rq, 1000);
    run(rq, &r);
    TAP_EQ_INT(r.status, HTTP_E_TOOBIG);

    /* Connection reuse: two sequential requests share one TCP connection. */
    run(mk(HTTP_GET, "/conn"), &r);
    run(mk(HTTP_GET, "/conn"), &r2);
    TAP_CHECK(r.body_len > 0);
    TAP_EQ_STR(r.body, r2.body);

    test_idle_closed();

    /* Nothing listening. */
    {
        char url[64];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/", it_free_port());
        TAP_EQ_INT(http_req_new(&rq, http, HTTP_GET, url, &err), 0);
        run(rq, &r);
        TAP_EQ_INT(r.status, HTTP_E_TRANSPORT);
    }

    test_cancel();
    test_idle_timeout();

    /* Many in parallel. */
    {
        struct result rs[20];
        memset(rs, 0, sizeof(rs));
        for (int i = 0; i < 20; i++) {
            rq = mk(HTTP_GET, "/bytes?n=100000");
            TAP_CHECK(http_req_start(rq, on_done, &rs[i], &err) == 0);
        }
        TAP_EQ_INT(http_active(http), 20);
        uv_run(&loop, UV_RUN_DEFAULT);
        int ok = 0;
        for (int i = 0; i < 20; i++)
            ok += rs[i].calls == 1 && rs[i].code == 200 && rs[i].body_len == 100000;
        TAP_EQ_INT(ok, 20);
    }

    /* Without proxy variables, requests go straight to the server... */
    rq = mk(HTTP_GET, "/target");
    run(rq, &r);
    TAP_EQ_INT(r.code, 200);
    TAP_EQ_STR(r.body, "/target");
    /* ...and an adapter made while http_proxy is set sends them through that proxy (here the
     * test server itself, which sees the absolute URL). */
    {
        struct mi_http *direct = http;
        char url[128];

        setenv("http_proxy", base, 1);
        TAP_EQ_INT(http_new(&http, &loop, &err), 0);
        snprintf(url, sizeof(url), "http://media-ingest-proxy-test.invalid:9/target");
        rq = NULL;
        TAP_EQ_INT(http_req_new(&rq, http, HTTP_GET, url, &err), 0);
        run(rq, &r);
        TAP_EQ_INT(r.code, 200);
        TAP_EQ_STR(r.body, url);
        unsetenv("http_proxy");
        http_free(http);
        uv_run(&loop, UV_RUN_DEFAULT);
        http = direct;
    }

    /* http_free() cancels what still runs, synchronously. */
    rq = mk(HTTP_GET, "/slow?ms=5000");
    memset(&r, 0, sizeof(r));
    TAP_EQ_INT(http_req_start(rq, on_done, &r, &err), 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    http_free(http);
    TAP_EQ_INT(r.calls, 1);
    TAP_EQ_INT(r.status, HTTP_E_CANCELED);
    uv_run(&loop, UV_RUN_DEFAULT);
    TAP_EQ_INT(uv_loop_close(&loop), 0);

    free(big);
    it_stop(&srv);
    return tap_done();
}
