/*
 * wloop.h - the worker loop: N BullMQ jobs in flight on one libuv loop.
 *
 * It claims until N jobs run or the queue is empty, then blocks on the queue's marker
 * (BZPOPMIN on its own connection, waking for the next delayed job's due time), renews
 * the locks of its jobs, runs the queue-wide stalled checker, and on wloop_stop() stops
 * claiming and lets the jobs in flight finish within the drain timeout.
 *
 * The work itself is a seam: a handler gets each runnable job and ends it exactly once
 * with wjob_complete() or wjob_fail(). Jobs the worker must not run (deferred failures,
 * flows, job schedulers, data that is not a JSON object) are failed before the handler
 * sees them.
 */
#ifndef MI_WLOOP_H
#define MI_WLOOP_H

#include <stdbool.h>

#include <uv.h>

#include "bullmq.h"
#include "config.h"
#include "log.h"

struct wloop;
struct wjob;

struct wloop_handler {
    /* Start work on @job. Called from the loop; must not block. */
    void (*start)(void *hctx, struct wjob *job);
    /* The drain timeout expired: stop the work and end the job soon. May be NULL. */
    void (*cancel)(void *hctx, struct wjob *job);
};

/** wjob_job() - the claimed job (borrowed while the job is in flight). */
const struct bmq_job *wjob_job(const struct wjob *j);
/** wjob_set_priv()/wjob_priv() - the handler's per-job pointer. */
void wjob_set_priv(struct wjob *j, void *priv);
void *wjob_priv(const struct wjob *j);
/** wjob_lock_lost() - true once a lock renewal found the lock gone (work is wasted). */
bool wjob_lock_lost(const struct wjob *j);
/** wjob_loop() - the worker loop a job belongs to. */
struct wloop *wjob_wloop(const struct wjob *j);

/**
 * wjob_complete() - end @j successfully; @returnvalue is JSON text (copied).
 * The job must not be used after this call.
 */
void wjob_complete(struct wjob *j, const char *returnvalue);
/**
 * wjob_fail() - end this attempt with @reason (raw text, copied). @permanent: fail for
 * good now, whatever attempts remain; else BullMQ's retry rules (attempts, backoff).
 */
void wjob_fail(struct wjob *j, const char *reason, bool permanent);

/**
 * wjob_release() - give @j back to the front of the queue without counting an attempt
 * (@why, copied, is logged). For work the process cannot do right now: a bad Graph token,
 * a rate limit, a shutdown.
 */
void wjob_release(struct wjob *j, const char *why);

/**
 * wloop_new() - make the worker loop on @loop from @cfg (borrowed, must outlive it).
 * @log: borrowed. Connects to Redis at once (two connections).
 */
int wloop_new(struct wloop **wp, uv_loop_t *loop, const struct mi_config *cfg,
              const struct wloop_handler *h, void *hctx, const struct mi_log *log,
              struct mi_err *err) MI_MUSTCHECK;

/** wloop_start() - begin claiming (as soon as Redis is ready). */
void wloop_start(struct wloop *w);

/** wloop_pause_claims() - stop or resume claiming new jobs (e.g. Graph token is bad). */
void wloop_pause_claims(struct wloop *w, bool paused);

/**
 * wloop_stop() - drain: stop claiming, let jobs in flight finish (up to the drain
 * timeout), close the Redis connections, then call @done once. Idempotent.
 */
void wloop_stop(struct wloop *w, void (*done)(void *ctx), void *ctx);

/** wloop_free() - free after @done ran. NULL ok. */
void wloop_free(struct wloop *w);

/** wloop_inflight() - jobs currently in flight. */
int wloop_inflight(const struct wloop *w);
/** wloop_ready() - Redis connected and claiming allowed. */
bool wloop_ready(const struct wloop *w);
/** wloop_queue() - the protocol module (borrowed), e.g. for counts. */
struct bmq *wloop_queue(struct wloop *w);

#endif
