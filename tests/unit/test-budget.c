/*
 * test-budget.c - the transfer-buffer budget: accounting, FIFO grants from the loop,
 * cancellation, re-entrancy, teardown, and that freed part buffers leave the RSS.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "budget.h"
#include "tap.h"

struct rec {
    struct mi_budget *b;
    int order[16];
    int n;
};

struct who {
    struct rec *rec;
    int id;
    uint64_t release_in_cb;   /* bytes to release from inside the callback */
    bool free_budget;         /* call budget_free() from inside the callback */
};

static void granted(void *ctx)
{
    struct who *w = ctx;

    w->rec->order[w->rec->n++] = w->id;
    if (w->release_in_cb)
        budget_release(w->rec->b, w->release_in_cb);
    if (w->free_budget)
        budget_free(w->rec->b);
}

static void spin(uv_loop_t *loop, int n)
{
    for (int i = 0; i < n; i++)
        uv_run(loop, UV_RUN_NOWAIT);
}

static void test_accounting(uv_loop_t *loop)
{
    struct mi_budget *b = budget_new(loop, 100);

    TAP_CHECK(budget_new(loop, 0) == NULL);
    TAP_CHECK(b != NULL);
    TAP_EQ_INT(budget_total(b), 100);
    TAP_CHECK(budget_try_take(b, 60));
    TAP_CHECK(!budget_try_take(b, 41));
    TAP_CHECK(budget_try_take(b, 40));
    TAP_CHECK(budget_try_take(b, 0));
    TAP_EQ_INT(budget_in_use(b), 100);
    budget_release(b, 70);
    TAP_EQ_INT(budget_in_use(b), 30);
    TAP_EQ_INT(budget_peak(b), 100);
    budget_release(b, 30);
    TAP_EQ_INT(budget_in_use(b), 0);
    budget_free(b);
    spin(loop, 1);
}

static void test_fifo(uv_loop_t *loop)
{
    struct rec rec = { 0 };
    struct who w1 = { &rec, 1, 0, false }, w2 = { &rec, 2, 0, false };
    struct who w3 = { &rec, 3, 0, false };
    struct budget_waiter *h1, *h2, *h3, *hx;

    rec.b = budget_new(loop, 100);
    TAP_CHECK(budget_try_take(rec.b, 100));
    TAP_EQ_INT(budget_wait(rec.b, 60, granted, &w1, &h1), 0);
    TAP_EQ_INT(budget_wait(rec.b, 10, granted, &w2, &h2), 0);
    TAP_EQ_INT(budget_wait(rec.b, 30, granted, &w3, &h3), 0);
    TAP_EQ_INT(budget_wait(rec.b, 101, granted, &w3, &hx), -E2BIG);
    TAP_CHECK(hx == NULL);
    TAP_EQ_INT(budget_waiting(rec.b), 3);

    /* Small requests do not overtake a waiting large one, by wait or by try_take. */
    budget_release(rec.b, 20);
    spin(loop, 3);
    TAP_EQ_INT(rec.n, 0);
    TAP_CHECK(!budget_try_take(rec.b, 5));

    /* Enough for the head: the release itself calls nothing, the loop grants. */
    budget_release(rec.b, 40);
    TAP_EQ_INT(rec.n, 0);
    spin(loop, 1);
    TAP_EQ_INT(rec.n, 1);
    TAP_EQ_INT(rec.order[0], 1);
    TAP_EQ_INT(budget_in_use(rec.b), 100);

    /* 40 free after this: w2 (10) and w3 (30) both fit, granted in order. */
    budget_release(rec.b, 40);
    spin(loop, 1);
    TAP_EQ_INT(rec.n, 3);
    TAP_EQ_INT(rec.order[1], 2);
    TAP_EQ_INT(rec.order[2], 3);
    TAP_EQ_INT(budget_waiting(rec.b), 0);
    TAP_EQ_INT(budget_in_use(rec.b), 100);
    budget_release(rec.b, 100);
    budget_free(rec.b);
    spin(loop, 1);
}

static void test_wait_never_synchronous(uv_loop_t *loop)
{
    struct rec rec = { 0 };
    struct who w1 = { &rec, 1, 0, false };
    struct budget_waiter *h;

    rec.b = budget_new(loop, 100);
    TAP_EQ_INT(budget_wait(rec.b, 50, granted, &w1, &h), 0);
    TAP_EQ_INT(rec.n, 0);
    TAP_EQ_INT(budget_in_use(rec.b), 0);
    /* UV_RUN_DEFAULT returns once nothing is active: the idle handle stopped itself. */
    uv_run(loop, UV_RUN_DEFAULT);
    TAP_EQ_INT(rec.n, 1);
    TAP_EQ_INT(budget_in_use(rec.b), 50);
    budget_release(rec.b, 50);
    budget_free(rec.b);
    uv_run(loop, UV_RUN_DEFAULT);
}

static void test_cancel(uv_loop_t *loop)
{
    struct rec rec = { 0 };
    struct who big = { &rec, 1, 0, false }, small = { &rec, 2, 0, false };
    struct budget_waiter *hb, *hs;

    rec.b = budget_new(loop, 100);
    TAP_CHECK(budget_try_take(rec.b, 80));
    TAP_EQ_INT(budget_wait(rec.b, 90, granted, &big, &hb), 0);
    TAP_EQ_INT(budget_wait(rec.b, 20, granted, &small, &hs), 0);
    spin(loop, 2);
    TAP_EQ_INT(rec.n, 0);
    /* Withdrawing the blocking head lets the smaller one through. */
    budget_wait_cancel(hb);
    spin(loop, 1);
    TAP_EQ_INT(rec.n, 1);
    TAP_EQ_INT(rec.order[0], 2);
    TAP_EQ_INT(budget_in_use(rec.b), 100);

    /* A cancelled waiter is never called and holds nothing. */
    TAP_EQ_INT(budget_wait(rec.b, 10, granted, &big, &hb), 0);
    budget_wait_cancel(hb);
    budget_wait_cancel(NULL);
    budget_release(rec.b, 100);
    spin(loop, 2);
    TAP_EQ_INT(rec.n, 1);
    TAP_EQ_INT(budget_in_use(rec.b), 0);
    budget_free(rec.b);
    spin(loop, 1);
}

static void test_reentrancy_and_teardown(uv_loop_t *loop)
{
    struct rec rec = { 0 };
    struct who a = { &rec, 1, 30, false }, b2 = { &rec, 2, 0, true };
    struct who c = { &rec, 3, 0, false };
    struct budget_waiter *ha, *hb, *hc;

    rec.b = budget_new(loop, 100);
    TAP_CHECK(budget_try_take(rec.b, 100));
    /* a releases 30 from inside its callback, which lets b2 in within the same turn;
     * b2 frees the budget from inside its callback, dropping c without a call. */
    TAP_EQ_INT(budget_wait(rec.b, 30, granted, &a, &ha), 0);
    TAP_EQ_INT(budget_wait(rec.b, 30, granted, &b2, &hb), 0);
    TAP_EQ_INT(budget_wait(rec.b, 10, granted, &c, &hc), 0);
    budget_release(rec.b, 30);
    uv_run(loop, UV_RUN_DEFAULT);
    TAP_EQ_INT(rec.n, 2);
    TAP_EQ_INT(rec.order[0], 1);
    TAP_EQ_INT(rec.order[1], 2);
}

static long rss_kib(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
        rss = -1;
    fclose(f);
    return rss < 0 ? -1 : rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/* 32 parts of 8 MiB, touched and freed: RSS must come back near where it started. */
static void test_buffers_leave_rss(void)
{
    enum { N = 32, PART = 8 * 1024 * 1024 };
    void *p[N];
    long before, peak, after;

    TAP_CHECK(budget_buf_alloc(0) == NULL);
    budget_buf_free(NULL, 10);
    p[0] = budget_buf_alloc(100);
    TAP_CHECK(p[0] != NULL);
    budget_buf_free(p[0], 100);

    before = rss_kib();
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            p[i] = budget_buf_alloc(PART);
            if (p[i])
                memset(p[i], 0x5a, PART);
        }
        peak = rss_kib();
        for (int i = 0; i < N; i++)
            budget_buf_free(p[i], PART);
    }
    after = rss_kib();
    printf("# rss KiB: before %ld, peak %ld, after free %ld\n", before, peak, after);
    TAP_CHECK(before > 0 && peak - before > (N * PART / 1024) / 2);
    TAP_CHECK(after - before < 4 * 1024);

    /* For comparison only (not asserted): the same pattern through malloc/free, with a
     * small allocation kept between the parts as a real worker would. */
    before = rss_kib();
    for (int round = 0; round < 3; round++) {
        void *pin[N];

        for (int i = 0; i < N; i++) {
            p[i] = malloc(PART);
            if (p[i])
                memset(p[i], 0x5a, PART);
            pin[i] = malloc(64);
        }
        for (int i = 0; i < N; i++)
            free(p[i]);
        after = rss_kib();
        for (int i = 0; i < N; i++)
            free(pin[i]);
    }
    printf("# malloc for comparison, rss KiB: before %ld, after free (small blocks "
           "still held) %ld\n", before, after);
}

static void stop_loop(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/*
 * The part-buffer cache: a returned buffer of the same size is reused (same address, no
 * new pages), in use + cached never exceeds the total, taking bytes evicts, and buffers
 * unused for BUDGET_CACHE_IDLE_MS are unmapped by the (unref'd) trim timer.
 */
static void test_buffer_cache(uv_loop_t *loop)
{
    enum { PART = 1024 * 1024 };
    struct mi_budget *b = budget_new(loop, 4 * PART);
    void *p[4], *q;
    uv_timer_t t;

    TAP_CHECK(b != NULL);
    for (int i = 0; i < 4; i++) {
        TAP_CHECK(budget_try_take(b, PART));
        p[i] = budget_buf_get(b, PART);
        TAP_CHECK(p[i] != NULL);
        memset(p[i], i, PART);
    }
    TAP_EQ_INT(budget_cached(b), 0);
    budget_release(b, PART);
    budget_buf_put(b, p[0], PART);
    TAP_EQ_INT(budget_cached(b), PART);
    TAP_CHECK(budget_try_take(b, PART));          /* the taker reuses the cached one */
    TAP_EQ_INT(budget_cached(b), PART);
    q = budget_buf_get(b, PART);
    TAP_CHECK(q == p[0]);
    TAP_EQ_INT(budget_cached(b), 0);
    budget_release(b, 2 * PART);
    budget_buf_put(b, q, PART);
    budget_buf_put(b, p[1], PART);
    TAP_EQ_INT(budget_cached(b), 2 * PART);
    TAP_CHECK(budget_buf_get(b, PART) == p[1]);   /* newest first, exact size */
    TAP_EQ_INT(budget_cached(b), PART);
    q = budget_buf_get(b, 2 * PART);              /* no 2 MiB one cached: a new mapping */
    TAP_CHECK(q != NULL);
    budget_buf_free(q, 2 * PART);
    q = budget_buf_get(b, 1000);                  /* small: plain malloc, never cached */
    budget_buf_put(b, q, 1000);
    TAP_EQ_INT(budget_cached(b), PART);
    TAP_CHECK(budget_try_take(b, 2 * PART));      /* in use 4, 1 cached: a miss unmaps it */
    TAP_EQ_INT(budget_cached(b), PART);
    q = budget_buf_get(b, 2 * PART);
    TAP_CHECK(q != NULL);
    TAP_EQ_INT(budget_cached(b), 0);
    budget_buf_put(b, q, 2 * PART);               /* in use 4: no room, unmapped at once */
    TAP_EQ_INT(budget_cached(b), 0);
    budget_release(b, 2 * PART);
    budget_buf_put(b, p[1], PART);
    TAP_EQ_INT(budget_cached(b), PART);
    /* idle: the trim timer unmaps them; it is unref'd, so keep the loop alive meanwhile */
    uv_timer_init(loop, &t);
    uv_timer_start(&t, stop_loop, BUDGET_CACHE_IDLE_MS * 2 + 200, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    TAP_EQ_INT(budget_cached(b), 0);
    uv_close((uv_handle_t *)&t, NULL);
    /* budget_free() unmaps what is still cached */
    budget_release(b, 2 * PART);
    budget_buf_put(b, p[2], PART);
    budget_buf_put(b, p[3], PART);
    TAP_EQ_INT(budget_cached(b), 2 * PART);
    TAP_EQ_INT(budget_in_use(b), 0);
    budget_free(b);
    uv_run(loop, UV_RUN_DEFAULT);
}

/* Size classes: small buffers exact, larger ones a quarter of their power of two. */
static void test_buffer_class(void)
{
    TAP_EQ_INT(budget_buf_class(0), 0);
    TAP_EQ_INT(budget_buf_class(1000), 1000);
    TAP_EQ_INT(budget_buf_class(BUDGET_BUF_MMAP_MIN - 1), BUDGET_BUF_MMAP_MIN - 1);
    TAP_EQ_INT(budget_buf_class(32768), 32768);
    TAP_EQ_INT(budget_buf_class(40960), 40960);          /* a multiple of 8 KiB */
    TAP_EQ_INT(budget_buf_class(40961), 49152);
    TAP_EQ_INT(budget_buf_class(200 * 1000), 229376);    /* 224 KiB */
    TAP_EQ_INT(budget_buf_class(204800), 229376);
    TAP_EQ_INT(budget_buf_class(229377), 262144);
    TAP_EQ_INT(budget_buf_class(8u << 20), 8u << 20);     /* a part: as it is */
    TAP_EQ_INT(budget_buf_class((8u << 20) - 1), 8u << 20);
    TAP_EQ_INT(budget_buf_class((5u << 20) + 1), 6u << 20);
    /* never more than a quarter over, always at least the length */
    for (size_t n = BUDGET_BUF_MMAP_MIN; n < (64u << 20); n = n * 9 / 8 + 4099) {
        size_t c = budget_buf_class(n);

        if (c < n || c - n > n / 4) {
            TAP_CHECK(!"class out of bounds");
            break;
        }
    }
}

int main(void)
{
    uv_loop_t loop;

    uv_loop_init(&loop);
    test_accounting(&loop);
    test_fifo(&loop);
    test_wait_never_synchronous(&loop);
    test_cancel(&loop);
    test_reentrancy_and_teardown(&loop);
    test_buffer_cache(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);
    TAP_EQ_INT(uv_loop_close(&loop), 0);
    test_buffer_class();
    test_buffers_leave_rss();
    return tap_done();
}
