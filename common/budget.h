/*
 * budget.h - the process-wide transfer-buffer budget (MEDIA_BUFFER_BUDGET bytes).
 *
 * Every transfer buffer a worker holds (multipart part buffers, download staging) is
 * first taken from one budget, so that the sum stays below the configured bound
 * however many jobs run at once. A caller either takes bytes at once:
 *
 *     if (budget_try_take(b, part_size)) { ...use...; budget_release(b, part_size); }
 *
 * or queues and is called back when the bytes are its own:
 *
 *     budget_wait(b, part_size, on_granted, job, &job->budget_waiter);
 *     ...
 *     on_granted(job): the bytes are taken for the job; release them when done.
 *     (or, if the job is cancelled first: budget_wait_cancel(job->budget_waiter))
 *
 * Fairness: waiters are served strictly first in, first out, and budget_try_take()
 * refuses while anyone waits, so a large request is never starved by small ones.
 *
 * Callbacks: a grant is always delivered from the loop (a uv_idle handle), never from
 * inside budget_release() or budget_wait(). budget_release() is therefore safe to call
 * from inside a library callback (curl's write callback, a libuv close callback) and
 * a grant callback may itself call every function here, budget_free() included.
 *
 * Not thread-safe: one budget belongs to one loop thread.
 */
#ifndef MI_BUDGET_H
#define MI_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "err.h"

struct mi_budget;
struct budget_waiter;

/* The grant callback: the requested bytes are now taken on the waiter's behalf. */
typedef void (*budget_grant_cb)(void *ctx);

/**
 * budget_new() - create a budget of @total bytes on @loop.
 * Return: a new budget (free with budget_free), NULL when @total is 0 or on ENOMEM.
 */
struct mi_budget *budget_new(uv_loop_t *loop, uint64_t total);

/**
 * budget_free() - free @b; NULL is a no-op. Waiters still queued are dropped without
 * their callbacks (cancel them first). The memory is released in a close callback, so
 * the loop must run once more; may be called from inside a grant callback.
 */
void budget_free(struct mi_budget *b);

/**
 * budget_try_take() - take @bytes now if they fit and nobody is waiting.
 * Return: true when taken (the caller owns them until budget_release), false otherwise.
 * Taking 0 bytes always succeeds.
 */
bool budget_try_take(struct mi_budget *b, uint64_t bytes);

/**
 * budget_release() - give back @bytes taken earlier. Queued waiters that now fit are
 * granted on a later loop iteration. Releasing more than is in use is a bug; the
 * count is clamped at 0 (asserted in debug builds).
 */
void budget_release(struct mi_budget *b, uint64_t bytes);

/**
 * budget_wait() - queue for @bytes; @cb(@ctx) runs once, from the loop, when they are
 * taken for the caller (possibly on the next iteration if they fit now).
 * @wp: receives the waiter handle, valid until @cb starts or budget_wait_cancel().
 * Return: 0; -E2BIG when @bytes exceeds the whole budget (it could never be granted;
 * @cb is not called); -ENOMEM; -ESHUTDOWN after budget_free().
 */
int budget_wait(struct mi_budget *b, uint64_t bytes, budget_grant_cb cb, void *ctx,
                struct budget_waiter **wp) MI_MUSTCHECK;

/**
 * budget_wait_cancel() - withdraw a queued waiter; its callback is never called and
 * it holds no bytes. NULL is a no-op. Must not be called after the callback started.
 */
void budget_wait_cancel(struct budget_waiter *w);

/** budget_in_use() - bytes currently taken (for metrics). */
uint64_t budget_in_use(const struct mi_budget *b);

/** budget_total() - the configured total. */
uint64_t budget_total(const struct mi_budget *b);

/** budget_waiting() - number of queued waiters (for metrics). */
size_t budget_waiting(const struct mi_budget *b);

/** budget_peak() - the highest budget_in_use() seen since budget_new(). */
uint64_t budget_peak(const struct mi_budget *b);

/* Buffers at least this large are mapped and unmapped directly (see budget_buf_alloc). */
#define BUDGET_BUF_MMAP_MIN (32 * 1024)

/**
 * budget_buf_class() - the size to take from the budget and allocate for a buffer that
 * must hold @len bytes: @len itself below BUDGET_BUF_MMAP_MIN, else @len rounded up to
 * a quarter of its power of two (200 KiB -> 224 KiB, 8 MiB -> 8 MiB; at most 25% more),
 * so that buffers of media of nearby sizes are reused by budget_buf_get().
 */
size_t budget_buf_class(size_t len);

/**
 * budget_buf_alloc() - allocate a transfer buffer of @len bytes. Large buffers
 * (>= BUDGET_BUF_MMAP_MIN) are anonymous mappings so that freeing them returns the
 * memory to the system at once: glibc's malloc raises its mmap threshold after the
 * first large free and would then keep freed 8 MiB parts in the heap, so the RSS of a
 * long-running worker would stay at its peak. This does not take budget bytes.
 * Return: the buffer (uninitialised), NULL on ENOMEM or @len 0.
 */
void *budget_buf_alloc(size_t len);

/** budget_buf_free() - free a buffer from budget_buf_alloc(); @len must be the same. */
void budget_buf_free(void *buf, size_t len);

/* A cached buffer nobody took again for this long is unmapped (see budget_buf_put). */
#define BUDGET_CACHE_IDLE_MS 1000

/**
 * budget_buf_get() - a transfer buffer of @len bytes: a cached one of exactly @len from
 * budget_buf_put() when there is one (its pages already mapped: no page faults), else
 * budget_buf_alloc(). @b may be NULL. Does not take budget bytes.
 * Return: the buffer (contents undefined), NULL on ENOMEM or @len 0.
 */
void *budget_buf_get(struct mi_budget *b, size_t len);

/**
 * budget_buf_put() - give back a buffer from budget_buf_get() (or budget_buf_alloc()) of
 * @len bytes, after its bytes were budget_release()d. A large one is kept for reuse when
 * budget_in_use() + budget_cached() + @len stays within the total, and is unmapped once
 * unused for BUDGET_CACHE_IDLE_MS; anything else is freed now. A budget_buf_get() that
 * finds no buffer of its size unmaps cached ones before mapping a new one, so the memory
 * of buffers (in use + cached) never exceeds the budget when every taker allocates its
 * buffers here after taking their bytes.
 */
void budget_buf_put(struct mi_budget *b, void *buf, size_t len);

/** budget_cached() - bytes of free buffers kept for reuse (they count towards the RSS). */
uint64_t budget_cached(const struct mi_budget *b);

#endif
