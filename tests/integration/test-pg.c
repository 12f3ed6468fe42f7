/*
 * test-pg.c - the libpq pool against a real PostgreSQL (DATABASE_URL).
 *
 * Covers queries and results, hostile parameters, SQL errors, 200 concurrent queries
 * through 3 connections, deadlines (running and queued), pg_terminate_backend() on busy
 * and idle connections, a server "restart" (a TCP proxy in a child process is killed and
 * started again on the same port), a wrong password, and a shutdown that lets
 * uv_loop_close() return 0. Exits 77 when DATABASE_URL is unset or unreachable.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "pg-it.h"

struct t {
    uv_loop_t loop;
    struct pg_url *url;
    char app[64];
    const char *kw[PG_URL_MAX_PARAMS + 2];
    const char *val[PG_URL_MAX_PARAMS + 2];
};

/* ---- a tiny TCP proxy in a child process, to simulate a server going away ----------- */

#define PX_MAXP 32

struct proxy {
    pid_t pid;
    int port;
    struct sockaddr_in up;
};

/* Copy what is readable on @from to @to; false on EOF or error. */
static bool px_pump(int from, int to)
{
    char buf[16384];
    ssize_t n = read(from, buf, sizeof(buf));
    if (n <= 0)
        return false;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(to, buf + off, (size_t)(n - off));
        if (w <= 0)
            return false;
        off += w;
    }
    return true;
}

static void px_accept(int ls, const struct sockaddr_in *up, int *a, int *b)
{
    int c = accept(ls, NULL, NULL);
    if (c < 0)
        return;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (const struct sockaddr *)up, sizeof(*up))) {
        close(c);
        if (s >= 0)
            close(s);
        return;
    }
    for (int i = 0; i < PX_MAXP; i++) {
        if (a[i] < 0) {
            a[i] = c;
            b[i] = s;
            return;
        }
    }
    close(c);
    close(s);
}

static void px_run(int ls, const struct sockaddr_in *up)
{
    int a[PX_MAXP], b[PX_MAXP];
    for (int i = 0; i < PX_MAXP; i++)
        a[i] = b[i] = -1;
    for (;;) {
        struct pollfd fds[1 + 2 * PX_MAXP];
        fds[0] = (struct pollfd){ .fd = ls, .events = POLLIN };
        for (int i = 0; i < PX_MAXP; i++) {
            fds[1 + 2 * i] = (struct pollfd){ .fd = a[i], .events = POLLIN };
            fds[2 + 2 * i] = (struct pollfd){ .fd = b[i], .events = POLLIN };
        }
        if (poll(fds, 1 + 2 * PX_MAXP, -1) < 0)
            _exit(1);
        if (fds[0].revents)
            px_accept(ls, up, a, b);
        for (int i = 0; i < PX_MAXP; i++) {
            bool ok = true;
            if (a[i] >= 0 && fds[1 + 2 * i].revents)
                ok = px_pump(a[i], b[i]);
            if (ok && b[i] >= 0 && fds[2 + 2 * i].revents)
                ok = px_pump(b[i], a[i]);
            if (!ok) {
                close(a[i]);
                close(b[i]);
                a[i] = b[i] = -1;
            }
        }
    }
}

/* Listen on 127.0.0.1:px->port (0: any) and fork the proxy. Return 0 or -1. */
static int proxy_start(struct proxy *px)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)px->port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 16) ||
        getsockname(ls, (struct sockaddr *)&sa, &len))
        return -1;
    px->port = ntohs(sa.sin_port);
    fflush(stdout);
    px->pid = fork();
    if (px->pid < 0)
        return -1;
    if (px->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        px_run(ls, &px->up);
    }
    close(ls);
    return 0;
}

static void proxy_kill(struct proxy *px)
{
    if (px->pid > 0) {
        kill(px->pid, SIGKILL);
        waitpid(px->pid, NULL, 0);
    }
    px->pid = 0;
}

/* ---- tests -------------------------------------------------------------------------- */

static int num(const char *s)
{
    return s ? (int)strtol(s, NULL, 10) : -1;
}

struct events {
    int connected, failed, lost, notices;
    char notice[MI_ERR_MSG_MAX];
};

static void on_notice(void *ctx, int conn, const char *msg)
{
    struct events *e = ctx;
    e->notices++;
    snprintf(e->notice, sizeof(e->notice), "%s", msg);
}

static void on_event(void *ctx, int conn, enum pg_event ev, const struct mi_err *err)
{
    struct events *e = ctx;
    if (ev == PG_EV_CONNECTED)
        e->connected++;
    else if (ev == PG_EV_CONNECT_FAILED)
        e->failed++;
    else
        e->lost++;
}

static struct pg_pool *pool_open(struct t *t, const struct pg_pool_opts *o)
{
    struct pg_pool *p = NULL;
    struct mi_err err = MI_ERR_INIT;
    int rc = pg_pool_new(&p, &t->loop, t->kw, t->val, o, &err);
    TAP_EQ_INT(rc, 0);
    if (rc) {
        printf("Bail out! pg_pool_new: %s\n", err.msg);
        exit(1);
    }
    return p;
}

static void test_basic(struct t *t, struct pg_pool *p, struct events *ev)
{
    struct it_res r = { 0 };
    /* Server notices reach on_notice (libpq would print them on stderr otherwise). */
    TAP_EQ_INT(it_query(&t->loop, p, "DO $$ BEGIN RAISE WARNING 'mi-warn-test'; END $$", 0,
                        NULL, 5000, &r), 0);
    TAP_CHECK(ev->notices >= 1);
    TAP_EQ_STR(ev->notice, "WARNING: mi-warn-test");
    TAP_EQ_INT(r.nrows, 0);
    TAP_EQ_INT(it_query(&t->loop, p, "SELECT 1 AS one, NULL::text AS nothing", 0, NULL, 5000,
                        &r), 0);
    TAP_CHECK(!r.reentered);
    TAP_EQ_INT(r.nrows, 1);
    TAP_EQ_INT(r.ncols, 2);
    TAP_EQ_STR(r.v[0], "1");
    TAP_CHECK(r.v[1] == NULL);
    TAP_EQ_INT(r.affected, 1);

    /* Parameters are data, never SQL: quotes, backslashes, semicolons, UTF-8, NULL. */
    static const char *hostile[] = {
        "'; DROP TABLE \"Message\"; --", "back\\slash \"dq\" $1 %s", "ünïcødé ✓ 😀", "",
        NULL,
    };
    TAP_EQ_INT(it_query(&t->loop, p,
                        "SELECT $1::text, $2::text, $3::text, $4::text, $5::text IS NULL, "
                        "length($3)", 5, hostile, 5000, &r), 0);
    TAP_EQ_STR(r.v[0], hostile[0]);
    TAP_EQ_STR(r.v[1], hostile[1]);
    TAP_EQ_STR(r.v[2], hostile[2]);
    TAP_EQ_STR(r.v[3], "");
    TAP_EQ_STR(r.v[4], "t");
    TAP_EQ_STR(r.v[5], "11");

    /* A 512 KiB parameter goes out through several PQflush() rounds and comes back. */
    size_t big_n = 512 * 1024;
    char *big = malloc(big_n + 1);
    for (size_t i = 0; i < big_n; i++)
        big[i] = (char)('a' + i % 26);
    big[big_n] = '\0';
    const char *bp[] = { big };
    TAP_EQ_INT(it_query(&t->loop, p, "SELECT length($1), md5($1) = md5(repeat("
                                     "'abcdefghijklmnopqrstuvwxyz', 20164) || "
                                     "'abcdefghijklmnopqrstuvwx'), $1", 1, bp, 10000, &r), 0);
    TAP_EQ_STR(r.v[0], "524288");
    TAP_EQ_STR(r.v[1], "t");
    TAP_CHECK(r.v[2] && !strcmp(r.v[2], big));
    free(big);

    /* SQL errors carry SQLSTATE and the server's message; the connection stays usable. */
    TAP_EQ_INT(it_query(&t->loop, p, "SELECT * FROM mi_no_such_table", 0, NULL, 5000, &r),
               PG_EQUERY);
    TAP_EQ_STR(r.sqlstate, "42P01");
    TAP_CHECK(strstr(r.msg, "42P01") && strstr(r.msg, "does not exist"));
    const char *bad[] = { "abc" };
    TAP_EQ_INT(it_query(&t->loop, p, "SELECT $1::int", 1, bad, 5000, &r), PG_EQUERY);
    TAP_EQ_STR(r.sqlstate, "22P02");
    TAP_EQ_INT(it_query(&t->loop, p, "SELECT 2", 0, NULL, 5000, &r), 0);
    TAP_EQ_STR(r.v[0], "2");

    /* Refusals are synchronous and never call back. */
    TAP_EQ_INT(pg_query(p, NULL, 0, NULL, 100, it_cb, &r), -EINVAL);
    TAP_EQ_INT(pg_query(p, "SELECT 1", -1, NULL, 100, it_cb, &r), -EINVAL);
    TAP_EQ_INT(pg_query(p, "SELECT 1", 1, NULL, 100, it_cb, &r), -EINVAL);
    it_res_free(&r);
}

#define NCONC 200

struct conc {
    struct pg_pool *pool;
    int done, ok, wrong, max_in_flight;
    bool inside;
    bool reentered;
    int pids[NCONC];
    int expect[NCONC];
};

struct conc_item {
    struct conc *c;
    int i;
};

static void conc_cb(void *ctx, int status, const struct pg_result *res,
                    const struct mi_err *err)
{
    struct conc_item *it = ctx;
    struct conc *c = it->c;
    if (c->inside)
        c->reentered = true;
    struct pg_pool_stats st;
    pg_pool_stats(c->pool, &st);
    /* This query is no longer counted as in flight. */
    if ((int)st.in_flight + 1 > c->max_in_flight)
        c->max_in_flight = (int)st.in_flight + 1;
    c->done++;
    if (status) {
        printf("#   concurrent query %d: %s\n", it->i, err->msg);
        return;
    }
    const char *v = pg_result_value(res, 0, 0);
    if (v && num(v) == c->expect[it->i])
        c->ok++;
    else
        c->wrong++;
    c->pids[it->i] = num(pg_result_value(res, 0, 1));
}

static void test_concurrency(struct t *t, struct pg_pool *p)
{
    static struct conc c;
    static struct conc_item items[NCONC];
    memset(&c, 0, sizeof(c));
    c.pool = p;
    char num[NCONC][16];
    int queued = 0;
    for (int i = 0; i < NCONC; i++) {
        snprintf(num[i], sizeof(num[i]), "%d", i);
        c.expect[i] = i * 2;
        items[i] = (struct conc_item){ &c, i };
        const char *params[] = { num[i] };
        c.inside = true;
        int rc = pg_query(p, "SELECT $1::int * 2, pg_backend_pid(), pg_sleep(random() / 500)",
                          1, params, 20000, conc_cb, &items[i]);
        c.inside = false;
        queued += rc == 0;
    }
    TAP_EQ_INT(queued, NCONC);
    struct pg_pool_stats st;
    pg_pool_stats(p, &st);
    TAP_EQ_INT(st.queued, NCONC);   /* nothing is sent from inside pg_query() */
    while (c.done < NCONC)
        uv_run(&t->loop, UV_RUN_ONCE);
    TAP_EQ_INT(c.ok, NCONC);
    TAP_EQ_INT(c.wrong, 0);
    TAP_CHECK(!c.reentered);
    TAP_EQ_INT(c.max_in_flight, 3);
    int distinct = 0;
    for (int i = 0; i < NCONC; i++) {
        bool seen = false;
        for (int j = 0; j < i; j++)
            seen = seen || c.pids[j] == c.pids[i];
        distinct += !seen;
    }
    printf("# %d queries used %d backends, at most %d in flight\n", NCONC, distinct,
           c.max_in_flight);
    TAP_CHECK(distinct >= 2 && distinct <= 3);
}

static void test_deadlines(struct t *t, struct pg_pool *p)
{
    struct it_res r = { 0 }, s[3] = { { 0 } };
    struct pg_pool_stats before, after;
    pg_pool_stats(p, &before);
    uint64_t t0 = uv_hrtime();
    TAP_EQ_INT(it_query(&t->loop, p, "SELECT pg_sleep(5)", 0, NULL, 300, &r), PG_ETIMEDOUT);
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    printf("# running deadline fired after %.0f ms\n", ms);
    TAP_CHECK(ms >= 290 && ms < 2000);
    TAP_CHECK(strstr(r.msg, "did not finish within 300 ms") != NULL);
    pg_pool_stats(p, &after);
    TAP_EQ_INT(after.reconnects, before.reconnects + 1);
    /* The dropped connection comes back and the pool keeps working. */
    TAP_EQ_INT(it_query(&t->loop, p, "SELECT 'after timeout'", 0, NULL, 5000, &r), 0);
    TAP_EQ_STR(r.v[0], "after timeout");

    /* All three connections busy: a query with a short deadline times out in the queue
     * while the others finish normally. */
    for (int i = 0; i < 3; i++)
        TAP_EQ_INT(it_send(p, "SELECT pg_sleep(0.8), 'slept'", 0, NULL, 5000, &s[i]), 0);
    TAP_EQ_INT(it_send(p, "SELECT 'never'", 0, NULL, 250, &r), 0);
    it_wait(&t->loop, &r);
    TAP_EQ_INT(r.status, PG_ETIMEDOUT);
    TAP_CHECK(strstr(r.msg, "waited 250 ms for a free connection") != NULL);
    for (int i = 0; i < 3; i++) {
        it_wait(&t->loop, &s[i]);
        TAP_EQ_INT(s[i].status, 0);
        TAP_EQ_STR(s[i].v[1], "slept");
        it_res_free(&s[i]);
    }
    it_res_free(&r);
}

static void test_terminate(struct t *t, struct pg_pool *p, struct events *ev)
{
    struct it_res sl = { 0 }, k = { 0 }, r = { 0 };
    const char *app[] = { t->app };
    /* Busy connection: the query in flight fails with PG_ECONNLOST. */
    TAP_EQ_INT(it_send(p, "SELECT pg_sleep(10)", 0, NULL, 15000, &sl), 0);
    int killed = 0;
    for (int tries = 0; tries < 50 && !killed; tries++) {
        it_sleep(&t->loop, 50);
        TAP_CHECK(it_query(&t->loop, p,
                           "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE application_name = $1 AND query = 'SELECT pg_sleep(10)' "
                           "AND state = 'active' AND pid <> pg_backend_pid()",
                           1, app, 5000, &k) == 0);
        killed = k.v[0] ? num(k.v[0]) : 0;
    }
    TAP_EQ_INT(killed, 1);
    it_wait(&t->loop, &sl);
    TAP_EQ_INT(sl.status, PG_ECONNLOST);
    TAP_CHECK(strstr(sl.msg, "connection lost") != NULL);
    printf("# busy kill: %s\n", sl.msg);

    /* Idle connections: the pool notices, reconnects, and later queries succeed. */
    int lost_before = ev->lost;
    TAP_EQ_INT(it_query(&t->loop, p,
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = $1 AND pid <> pg_backend_pid()",
                        1, app, 5000, &k), 0);
    TAP_CHECK(k.v[0] && num(k.v[0]) >= 1);
    it_sleep(&t->loop, 300);
    TAP_CHECK(ev->lost > lost_before);
    int ok = 0;
    for (int i = 0; i < 10; i++)
        ok += it_query(&t->loop, p, "SELECT pg_backend_pid()", 0, NULL, 5000, &r) == 0;
    TAP_EQ_INT(ok, 10);
    it_res_free(&sl);
    it_res_free(&k);
    it_res_free(&r);
}

static void test_restart(struct t *t)
{
    const char *host = pg_url_get(t->url, "host");
    const char *port = pg_url_get(t->url, "port");
    struct proxy px = { 0 };
    px.up.sin_family = AF_INET;
    px.up.sin_port = htons((uint16_t)(port ? num(port) : 5432));
    if (!host || inet_pton(AF_INET, host, &px.up.sin_addr) != 1) {
        printf("# skipping the restart test: the host is not an IPv4 address\n");
        return;
    }
    int started = proxy_start(&px);
    TAP_EQ_INT(started, 0);               /* a proxy that cannot start is a failure */
    if (started != 0)
        return;
    /* The same parameters, but through the proxy. */
    char pport[16];
    snprintf(pport, sizeof(pport), "%d", px.port);
    const char *kw[PG_URL_MAX_PARAMS + 2], *val[PG_URL_MAX_PARAMS + 2];
    int n = 0;
    for (int i = 0; t->kw[i]; i++, n++) {
        kw[n] = t->kw[i];
        val[n] = !strcmp(kw[n], "host") ? "127.0.0.1" : !strcmp(kw[n], "port") ? pport : t->val[i];
    }
    kw[n] = val[n] = NULL;
    struct events ev = { 0 };
    struct pg_pool_opts o = { .size = 2, .backoff_base_ms = 50, .backoff_max_ms = 400,
                              .connect_timeout_ms = 2000, .on_event = on_event,
                              .event_ctx = &ev };
    struct pg_pool *p = NULL;
    struct mi_err err = MI_ERR_INIT;
    TAP_EQ_INT(pg_pool_new(&p, &t->loop, kw, val, &o, &err), 0);
    struct it_res r = { 0 }, sl = { 0 };
    TAP_EQ_INT(it_query(&t->loop, p, "SELECT 'via proxy'", 0, NULL, 5000, &r), 0);
    TAP_EQ_STR(r.v[0], "via proxy");

    /* The server goes away while a query runs. */
    TAP_EQ_INT(it_send(p, "SELECT pg_sleep(3)", 0, NULL, 10000, &sl), 0);
    it_sleep(&t->loop, 300);
    proxy_kill(&px);
    it_wait(&t->loop, &sl);
    TAP_EQ_INT(sl.status, PG_ECONNLOST);
    printf("# server gone: %s\n", sl.msg);

    /* While it is down, a query waits and reconnects fail with back-off. */
    TAP_EQ_INT(it_send(p, "SELECT 'after restart'", 0, NULL, 8000, &r), 0);
    it_sleep(&t->loop, 800);
    TAP_CHECK(!r.done);
    TAP_CHECK(ev.failed >= 2);
    printf("# %d failed attempts in 800 ms; last error: %s\n", ev.failed,
           pg_pool_last_error(p));
    TAP_CHECK(strstr(pg_pool_last_error(p), "refused") != NULL);
    TAP_CHECK(ev.failed < 40);   /* back-off, not a busy loop */

    /* The server comes back on the same port: the waiting query runs. */
    TAP_EQ_INT(proxy_start(&px), 0);
    it_wait(&t->loop, &r);
    TAP_EQ_INT(r.status, 0);
    TAP_EQ_STR(r.v[0], "after restart");
    it_pool_end(&t->loop, p);
    proxy_kill(&px);
    it_res_free(&r);
    it_res_free(&sl);
}

/* opts.initial: one connection at start; the others open, one at a time, only while
 * queries wait for a busy pool. */
static void test_grow(struct t *t)
{
    struct pg_pool_opts o = { .size = 3, .initial = 1 };
    struct pg_pool *p = pool_open(t, &o);
    struct pg_pool_stats st;
    struct it_res r = { 0 }, sl[4] = { { 0 } };

    TAP_EQ_INT(it_query(&t->loop, p, "SELECT 1", 0, NULL, 5000, &r), 0);
    for (int i = 0; i < 10; i++)   /* one after another: never waits, never grows */
        TAP_EQ_INT(it_query(&t->loop, p, "SELECT 2", 0, NULL, 5000, &r), 0);
    it_sleep(&t->loop, 3 * PG_GROW_WAIT_MS);
    pg_pool_stats(p, &st);
    TAP_EQ_INT(st.connected, 1);
    TAP_EQ_INT(st.connecting, 0);

    for (int i = 0; i < 4; i++)
        TAP_EQ_INT(it_send(p, "SELECT pg_backend_pid(), pg_sleep(0.4)", 0, NULL, 5000, &sl[i]),
                   0);
    for (int i = 0; i < 4; i++)
        it_wait(&t->loop, &sl[i]);
    pg_pool_stats(p, &st);
    printf("# 4 slow queries on a pool of 3 opened with 1: %d connected\n", st.connected);
    TAP_EQ_INT(st.connected, 3);
    int distinct = 0;
    for (int i = 0; i < 4; i++) {
        bool seen = false;
        TAP_EQ_INT(sl[i].status, 0);
        for (int j = 0; j < i; j++)
            seen = seen || (sl[j].v[0] && sl[i].v[0] && !strcmp(sl[j].v[0], sl[i].v[0]));
        distinct += !seen;
    }
    TAP_EQ_INT(distinct, 3);
    it_pool_end(&t->loop, p);
    it_res_free(&r);
    for (int i = 0; i < 4; i++)
        it_res_free(&sl[i]);
}

static void test_bad_password(struct t *t)
{
    const char *kw[PG_URL_MAX_PARAMS + 3], *val[PG_URL_MAX_PARAMS + 3];
    int n = 0;
    for (int i = 0; t->kw[i]; i++) {
        if (strcmp(t->kw[i], "password")) {
            kw[n] = t->kw[i];
            val[n++] = t->val[i];
        }
    }
    kw[n] = "password";
    val[n++] = "wrong-secret-xyzzy";
    kw[n] = val[n] = NULL;
    struct pg_pool_opts o = { .size = 1, .backoff_base_ms = 100, .backoff_max_ms = 200 };
    struct pg_pool *p = NULL;
    struct it_res r = { 0 };
    struct mi_err err = MI_ERR_INIT;
    pg_pool_free(NULL);
    TAP_EQ_INT(pg_pool_new(&p, &t->loop, kw, val, &o, &err), 0);
    TAP_EQ_INT(it_query(&t->loop, p, "SELECT 1", 0, NULL, 1500, &r), PG_ETIMEDOUT);
    printf("# %s\n", r.msg);
    TAP_CHECK(strstr(r.msg, "password authentication failed") != NULL);
    TAP_CHECK(strstr(r.msg, "wrong-secret-xyzzy") == NULL);
    it_pool_end(&t->loop, p);
    it_res_free(&r);
}

/* A server that accepts TCP but never answers: the connect deadline (taken from the
 * URL's connect_timeout) must end each attempt. */
static void test_connect_timeout(struct t *t)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 16) ||
        getsockname(ls, (struct sockaddr *)&sa, &len)) {
        TAP_CHECK(!"listening socket");
        return;
    }
    char port[16];
    snprintf(port, sizeof(port), "%d", ntohs(sa.sin_port));
    const char *kw[] = { "host", "port", "dbname", "user", "connect_timeout", NULL };
    const char *val[] = { "127.0.0.1", port, "x", "x", "1", NULL };
    struct events ev = { 0 };
    struct pg_pool_opts o = { .size = 1, .on_event = on_event, .event_ctx = &ev };
    struct pg_pool *p = NULL;
    struct mi_err err = MI_ERR_INIT;
    TAP_EQ_INT(pg_pool_new(&p, &t->loop, kw, val, &o, &err), 0);
    struct it_res r = { 0 };
    uint64_t t0 = uv_hrtime();
    TAP_EQ_INT(it_query(&t->loop, p, "SELECT 1", 0, NULL, 2500, &r), PG_ETIMEDOUT);
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    TAP_CHECK(ms >= 2400 && ms < 4000);
    TAP_EQ_INT(ev.failed, 1);
    TAP_CHECK(strstr(r.msg, "timed out after 2000 ms") != NULL);
    it_pool_end(&t->loop, p);
    close(ls);
    it_res_free(&r);
}

static void test_close(struct t *t, struct pg_pool *p)
{
    struct it_res r[5] = { { 0 } }, after = { 0 };
    for (int i = 0; i < 5; i++)
        TAP_EQ_INT(it_send(p, "SELECT pg_sleep(0.1), 'drained'", 0, NULL, 5000, &r[i]), 0);
    bool closed = false;
    pg_pool_close(p, it_closed, &closed);
    pg_pool_close(p, it_closed, &closed);
    TAP_EQ_INT(it_send(p, "SELECT 1", 0, NULL, 5000, &after), PG_ECLOSED);
    while (!closed)
        uv_run(&t->loop, UV_RUN_ONCE);
    int ok = 0;
    for (int i = 0; i < 5; i++) {
        ok += r[i].done && r[i].status == 0 && r[i].v[1] && !strcmp(r[i].v[1], "drained");
        it_res_free(&r[i]);
    }
    TAP_EQ_INT(ok, 5);   /* queued queries finished before the pool closed */
    pg_pool_free(p);
}

int main(void)
{
    static struct t t;
    alarm(240);
    t.url = it_url_or_skip();
    snprintf(t.app, sizeof(t.app), "mi-test-pg-%d", (int)getpid());
    it_params(t.url, t.app, t.kw, t.val, PG_URL_MAX_PARAMS + 2);
    uv_loop_init(&t.loop);

    struct events ev = { 0 };
    struct pg_pool_opts o = { .size = 3, .backoff_base_ms = 50, .backoff_max_ms = 1000,
                              .on_event = on_event, .on_notice = on_notice,
                              .event_ctx = &ev };
    struct pg_pool *p = pool_open(&t, &o);
    it_reachable_or_skip(&t.loop, p);

    test_basic(&t, p, &ev);
    test_concurrency(&t, p);
    test_deadlines(&t, p);
    test_terminate(&t, p, &ev);
    test_close(&t, p);
    test_restart(&t);
    test_grow(&t);
    test_bad_password(&t);
    test_connect_timeout(&t);

    TAP_EQ_INT(uv_loop_close(&t.loop), 0);
    pg_url_free(t.url);
    return tap_done();
}
