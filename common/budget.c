/*
 * budget.c - the transfer-buffer budget (see budget.h).
 *
 * State: a byte count and a FIFO of waiters (a doubly linked list, so cancel is O(1)).
 * Grants are handed out by one uv_idle handle that runs only while the head of the
 * queue fits; an active idle handle also keeps the loop from blocking in poll, so a
 * grant is delivered on the very next iteration.
 */
#include "budget.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define BUDGET_BUF_HUGE_MIN (4u * 1024 * 1024)

struct budget_waiter {
    struct mi_budget *b;
    struct budget_waiter *prev, *next;
    uint64_t bytes;
    budget_grant_cb cb;
    void *ctx;
};

/*
 * A freed large buffer kept mapped for reuse: its pages are faulted in already, so the
 * next part of the same size costs no page faults. The node lives in the buffer itself.
 */
struct cached_buf {
    struct cached_buf *next;      /* newer first */
    size_t len;
    uint64_t since_ms;            /* uv_now() when it was put back */
};

struct mi_budget {
    uv_idle_t idle;               /* runs grant_pending() while the queue head fits */
    uv_timer_t trim;              /* unmaps cached buffers unused for BUDGET_CACHE_IDLE_MS */
    int open_handles;             /* closed in budget_free(); memory goes with the last */
    struct cached_buf *cache;
    uint64_t cached;              /* bytes held by the cache: in_use + cached <= total */
    uint64_t total;
    uint64_t in_use;
    uint64_t peak;
    struct budget_waiter *head, *tail;
    size_t n_waiting;
    bool closing;                 /* budget_free() was called; memory goes in close_cb */
};

/* Unmap cached buffers from the oldest end until @keep_bytes or fewer remain cached. */
static void cache_shrink(struct mi_budget *b, uint64_t keep_bytes)
{
    while (b->cache && b->cached > keep_bytes) {
        struct cached_buf **pp = &b->cache;

        while ((*pp)->next)
            pp = &(*pp)->next;
        struct cached_buf *c = *pp;
        *pp = NULL;
        b->cached -= c->len;
        budget_buf_free(c, c->len);
    }
}

static void take(struct mi_budget *b, uint64_t bytes)
{
    b->in_use += bytes;
    if (b->in_use > b->peak)
        b->peak = b->in_use;
}

static bool head_fits(const struct mi_budget *b)
{
    return b->head && b->head->bytes <= b->total - b->in_use;
}

static void unlink_waiter(struct budget_waiter *w)
{
    struct mi_budget *b = w->b;

    if (w->prev)
        w->prev->next = w->next;
    else
        b->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        b->tail = w->prev;
    w->prev = w->next = NULL;
    b->n_waiting--;
}

/* Grant every waiter at the head of the queue that fits, in order. */
static void grant_pending(uv_idle_t *h)
{
    struct mi_budget *b = h->data;

    /* A callback may release, wait, cancel or even free the budget: re-check each turn. */
    while (!b->closing && head_fits(b)) {
        struct budget_waiter *w = b->head;
        budget_grant_cb cb = w->cb;
        void *ctx = w->ctx;

        unlink_waiter(w);
        take(b, w->bytes);
        free(w);
        cb(ctx);
    }
    if (!b->closing && !head_fits(b))
        uv_idle_stop(&b->idle);
}

static void kick(struct mi_budget *b)
{
    if (!b->closing && head_fits(b))
        uv_idle_start(&b->idle, grant_pending);
}

static void budget_closed_cb(uv_handle_t *h)
{
    struct mi_budget *b = h->data;

    if (--b->open_handles == 0)
        free(b);
}

/* Every BUDGET_CACHE_IDLE_MS: unmap the cached buffers nobody took since the last tick. */
static void trim_tick(uv_timer_t *t)
{
    struct mi_budget *b = t->data;
    uint64_t now = uv_now(t->loop);
    struct cached_buf **pp = &b->cache;

    while (*pp && now - (*pp)->since_ms < BUDGET_CACHE_IDLE_MS)
        pp = &(*pp)->next;
    while (*pp) {
        struct cached_buf *c = *pp;
        *pp = c->next;
        b->cached -= c->len;
        budget_buf_free(c, c->len);
    }
    if (!b->cache)
        uv_timer_stop(t);
}

/**
 * budget_new() - see budget.h.
 */
struct mi_budget *budget_new(uv_loop_t *loop, uint64_t total)
{
    struct mi_budget *b;

    if (!total)
        return NULL;
    b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->total = total;
    if (uv_idle_init(loop, &b->idle) != 0) {
        free(b);
        return NULL;
    }
    b->idle.data = b;
    b->open_handles = 1;
    if (uv_timer_init(loop, &b->trim) != 0) {
        b->closing = true;
        uv_close((uv_handle_t *)&b->idle, budget_closed_cb);
        return NULL;
    }
    b->trim.data = b;
    b->open_handles = 2;
    return b;
}

/**
 * budget_free() - see budget.h.
 */
void budget_free(struct mi_budget *b)
{
    if (!b || b->closing)
        return;
    b->closing = true;
    while (b->head) {
        struct budget_waiter *w = b->head;

        unlink_waiter(w);
        free(w);
    }
    cache_shrink(b, 0);
    uv_close((uv_handle_t *)&b->idle, budget_closed_cb);
    uv_close((uv_handle_t *)&b->trim, budget_closed_cb);
}

/**
 * budget_try_take() - see budget.h.
 */
bool budget_try_take(struct mi_budget *b, uint64_t bytes)
{
    if (bytes == 0)
        return true;
    if (b->closing || b->head || bytes > b->total - b->in_use)
        return false;
    take(b, bytes);
    return true;
}

/**
 * budget_release() - see budget.h.
 */
void budget_release(struct mi_budget *b, uint64_t bytes)
{
    assert(bytes <= b->in_use);
    if (bytes > b->in_use)
        bytes = b->in_use;
    b->in_use -= bytes;
    kick(b);
}

/**
 * budget_wait() - see budget.h.
 */
int budget_wait(struct mi_budget *b, uint64_t bytes, budget_grant_cb cb, void *ctx,
                struct budget_waiter **wp)
{
    struct budget_waiter *w;

    *wp = NULL;
    if (b->closing)
        return -ESHUTDOWN;
    if (bytes > b->total)
        return -E2BIG;
    w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->b = b;
    w->bytes = bytes;
    w->cb = cb;
    w->ctx = ctx;
    w->prev = b->tail;
    if (b->tail)
        b->tail->next = w;
    else
        b->head = w;
    b->tail = w;
    b->n_waiting++;
    kick(b);
    *wp = w;
    return 0;
}

/**
 * budget_wait_cancel() - see budget.h.
 */
void budget_wait_cancel(struct budget_waiter *w)
{
    struct mi_budget *b;

    if (!w)
        return;
    b = w->b;
    unlink_waiter(w);
    free(w);
    /* The cancelled waiter may have been the head that blocked smaller ones. */
    kick(b);
}

/**
 * budget_in_use() - see budget.h.
 */
uint64_t budget_in_use(const struct mi_budget *b)
{
    return b->in_use;
}

/**
 * budget_total() - see budget.h.
 */
uint64_t budget_total(const struct mi_budget *b)
{
    return b->total;
}

/**
 * budget_waiting() - see budget.h.
 */
size_t budget_waiting(const struct mi_budget *b)
{
    return b->n_waiting;
}

/**
 * budget_peak() - see budget.h.
 */
uint64_t budget_peak(const struct mi_budget *b)
{
    return b->peak;
}

/**
 * budget_buf_class() - see budget.h.
 */
size_t budget_buf_class(size_t len)
{
    size_t step = 4096;

    if (len < BUDGET_BUF_MMAP_MIN)
        return len;
    while (step <= len / 8)   /* the largest power of two <= len, divided by 4 */
        step *= 2;
    if (len > SIZE_MAX - step)
        return len;
    return (len + step - 1) / step * step;
}

/**
 * budget_buf_alloc() - see budget.h.
 */
void *budget_buf_alloc(size_t len)
{
    void *p;

    if (len == 0)
        return NULL;
    if (len < BUDGET_BUF_MMAP_MIN)
        return malloc(len);
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    /* Parts are filled and read whole: 2 MiB pages mean fewer faults and TLB misses. */
    if (len >= BUDGET_BUF_HUGE_MIN)
        (void)madvise(p, len, MADV_HUGEPAGE);
    return p;
}

/**
 * budget_buf_free() - see budget.h.
 */
void budget_buf_free(void *buf, size_t len)
{
    if (!buf)
        return;
    if (len < BUDGET_BUF_MMAP_MIN)
        free(buf);
    else
        munmap(buf, len);
}

/**
 * budget_buf_get() - see budget.h.
 */
void *budget_buf_get(struct mi_budget *b, size_t len)
{
    if (b && len >= BUDGET_BUF_MMAP_MIN) {
        for (struct cached_buf **pp = &b->cache; *pp; pp = &(*pp)->next) {
            struct cached_buf *c = *pp;

            if (c->len == len) {
                *pp = c->next;
                b->cached -= len;
                return c;
            }
        }
        /*
         * A new mapping: unmap cached buffers first so that in use + cached stays within
         * the budget. (Taking bytes does not evict: the taker usually reuses a cached
         * buffer of its size here, and the memory does not grow.)
         */
        if (b->in_use >= b->total)
            cache_shrink(b, 0);
        else if (b->cached > b->total - b->in_use)
            cache_shrink(b, b->total - b->in_use);
    }
    return budget_buf_alloc(len);
}

/**
 * budget_buf_put() - see budget.h.
 */
void budget_buf_put(struct mi_budget *b, void *buf, size_t len)
{
    struct cached_buf *c = buf;

    if (!buf)
        return;
    if (!b || b->closing || len < BUDGET_BUF_MMAP_MIN || b->in_use > b->total ||
        len > b->total - b->in_use - b->cached) {
        budget_buf_free(buf, len);
        return;
    }
    c->len = len;
    c->since_ms = uv_now(b->trim.loop);
    c->next = b->cache;
    b->cache = c;
    b->cached += len;
    if (!uv_is_active((uv_handle_t *)&b->trim)) {
        uv_timer_start(&b->trim, trim_tick, BUDGET_CACHE_IDLE_MS, BUDGET_CACHE_IDLE_MS);
        uv_unref((uv_handle_t *)&b->trim);
    }
}

/**
 * budget_cached() - see budget.h.
 */
uint64_t budget_cached(const struct mi_budget *b)
{
    return b->cached;
}
