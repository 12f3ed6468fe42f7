/*
 * bullmq.h - BullMQ 6.7.0's Redis protocol for a C worker and producer.
 *
 * Our own Lua scripts (common/lua/) implement add, claim, finish (completed/failed),
 * retry (now or after a backoff), lock extension, the stalled checker, counts,
 * pause/resume, retrying failed jobs and cleaning finished ones exactly as the protocol
 * document describes, so Node producers, workers, QueueEvents and bull-board see normal jobs.
 *
 * A struct bmq is bound to one queue and borrows one redis_client for scripts and
 * commands. Every call is asynchronous and its callback runs exactly once; a call
 * that returns non-zero does not call its callback.
 */
#ifndef MI_BULLMQ_H
#define MI_BULLMQ_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "redis.h"
#include "util.h"

enum {
    BMQ_E_NOTREADY = 1,   /* Redis is not connected; try again later */
};

/* removeOnComplete / removeOnFail in BullMQ's "keepJobs" form. */
struct bmq_keep {
    int64_t count;   /* -1 keep all, 0 remove at once, n keep the newest n */
    int64_t age_s;   /* -1: no age limit; else remove finished jobs older than this */
    int64_t limit;   /* age removals per finish (default 1000) */
};

/* The job options a worker acts on, parsed from the job's opts JSON. */
struct bmq_opts {
    int64_t attempts;            /* 0 behaves as 1 */
    struct mi_backoff backoff;
    struct bmq_keep remove_on_complete;
    struct bmq_keep remove_on_fail;
    bool has_remove_on_complete;  /* set in the job's opts: it wins over the worker's */
    bool has_remove_on_fail;
    bool lifo;
    int64_t stack_trace_limit;   /* -1: unlimited */
};

/* A claimed job. Strings are owned by the job (bmq_job_free). */
struct bmq_job {
    char *id;
    char *name;
    char *data;          /* JSON text as stored (may be invalid: check data_json) */
    json_t *data_json;   /* parsed data, NULL if not valid JSON */
    char *opts_text;
    struct bmq_opts opts;
    int64_t timestamp;
    int64_t attempts_made;     /* atm */
    int64_t attempts_started;  /* ats, including this claim */
    int64_t stalled_counter;   /* stc */
    char *defa;                /* deferred failure: fail at once, do not run */
    char *stacktrace;          /* JSON array text of earlier attempts, may be NULL */
    bool has_parent;           /* flows: parentKey/parent present */
    char *rjk;                 /* job scheduler id, NULL if none */
    char token[64];            /* our lock token */
    char *opts_error;          /* why opts could not be parsed, NULL if fine */
};

void bmq_job_free(struct bmq_job *job);

struct bmq;

/**
 * bmq_new() - bind to queue @name under key prefix @prefix ("bull").
 * @rc: borrowed; must outlive the bmq.
 * Return: 0 or -ENOMEM.
 */
int bmq_new(struct bmq **qp, struct redis_client *rc, const char *prefix, const char *name,
            struct mi_err *err) MI_MUSTCHECK;
void bmq_free(struct bmq *q);

/** bmq_key_prefix() - "<prefix>:<queue>:" (borrowed). */
const char *bmq_key_prefix(const struct bmq *q);

/**
 * bmq_key() - write "<prefix>:<queue>:<suffix>" into @out (size @n); the pure key-name
 * function behind every script call. Return: false if it does not fit.
 */
bool bmq_key(char *out, size_t n, const char *prefix, const char *queue, const char *suffix);

/**
 * bmq_parse_opts() - parse a job's opts JSON text (Node's stored form) into @out.
 * Accepts backoff as a number or {type, delay, jitter}; removeOnComplete/Fail as
 * true, false, n or {age, count, limit}. Return: 0, or 1 with @err on invalid JSON
 * or wrongly typed fields (defaults are still filled in).
 */
int bmq_parse_opts(const char *text, struct bmq_opts *out, struct mi_err *err);

/** bmq_keep_from_json() - removeOnComplete/removeOnFail value → keepJobs (NULL = keep all). */
int bmq_keep_from_json(const json_t *v, struct bmq_keep *out);

/**
 * bmq_delayed_score() - the delayed ZSET score of a job due at @due_ms with sequence
 * @seq (0..4095): due * 4096 + seq. bmq_delayed_due() inverts it.
 */
double bmq_delayed_score(int64_t due_ms, int seq);
int64_t bmq_delayed_due(double score);

/* ---- producer ---- */

struct bmq_add_req {
    const char *name;          /* job name, e.g. "ingest" */
    const char *data;          /* JSON object text (validated by the caller) */
    const char *job_id;        /* custom id or NULL; integers and most ':' ids are refused */
    int64_t priority;          /* 0..2097151 */
    int64_t delay_ms;
    int64_t attempts;          /* 0: not set */
    struct mi_backoff backoff; /* type NONE: not set */
    const char *remove_on_complete; /* JSON value text or NULL */
    const char *remove_on_fail;     /* JSON value text or NULL */
    bool lifo;
};

/* @added is false when a job with the custom id already existed (left untouched). */
typedef void (*bmq_add_cb)(void *ctx, int status, const char *id, bool added,
                           const struct mi_err *err);

/**
 * bmq_validate_job_id() - BullMQ's rules for custom ids: not an integer, not "0",
 * not starting "0:", no ':' unless exactly 3 ':'-separated parts. Return: 0 or 1 + @err.
 */
int bmq_validate_job_id(const char *id, struct mi_err *err);

/**
 * bmq_build_opts() - the opts JSON text Node would store for @req (new string).
 */
char *bmq_build_opts(const struct bmq_add_req *req, int64_t timestamp);

int bmq_add(struct bmq *q, const struct bmq_add_req *req, bmq_add_cb cb, void *ctx,
            struct mi_err *err) MI_MUSTCHECK;

/* ---- worker ---- */

struct bmq_claim_result {
    struct bmq_job *job;        /* stolen by the callback when non-NULL */
    int64_t rate_limit_ms;      /* > 0: the queue is rate limited for this long */
    int64_t next_delayed_ms;    /* > 0: wall-clock ms when the next delayed job is due */
};

typedef void (*bmq_claim_cb)(void *ctx, int status, struct bmq_claim_result *res,
                             const struct mi_err *err);
/* For finish, retry: status 0, or the script's negative code (-1 missing, -2 lock
 * missing, -3 not active, -6 lock of another worker), or an error with @err. */
typedef void (*bmq_done_cb)(void *ctx, int status, const struct mi_err *err);

/**
 * bmq_claim() - take the next job (BullMQ moveToActive).
 * @token: unique lock token for this claim (copied into the job).
 * @worker_name: shown as "processed by"; may be NULL.
 */
int bmq_claim(struct bmq *q, const char *token, int64_t lock_ms, const char *worker_name,
              bmq_claim_cb cb, void *ctx, struct mi_err *err) MI_MUSTCHECK;

/** bmq_complete() - move @job to completed with @returnvalue (JSON text). */
int bmq_complete(struct bmq *q, const struct bmq_job *job, const char *returnvalue,
                 const struct bmq_keep *worker_keep, bmq_done_cb cb, void *ctx,
                 struct mi_err *err) MI_MUSTCHECK;

/* What bmq_fail() decided. */
enum bmq_fail_outcome { BMQ_FAILED_FINAL = 0, BMQ_RETRY_DELAYED, BMQ_RETRY_NOW };

/**
 * bmq_fail_decide() - Node's decision: retry iff not @permanent and atm + 1 < attempts;
 * with a backoff the delay is computed (mi_backoff_delay with @rnd).
 */
enum bmq_fail_outcome bmq_fail_decide(const struct bmq_job *job, bool permanent, double rnd,
                                      int64_t *delay_ms);

/**
 * bmq_fail() - record a failed attempt: retry later, retry now, or fail for good
 * (with "retries-exhausted" when attempts are used up), as bmq_fail_decide() says.
 * @reason: raw text, stored as failedReason. @outcome receives the decision.
 */
int bmq_fail(struct bmq *q, const struct bmq_job *job, const char *reason, bool permanent,
             const struct bmq_keep *worker_keep, enum bmq_fail_outcome *outcome,
             bmq_done_cb cb, void *ctx, struct mi_err *err) MI_MUSTCHECK;

/**
 * bmq_release() - give @job back to the front of the queue without counting an attempt
 * (BullMQ moveJobFromActiveToWait), e.g. while the Graph token is bad or on shutdown.
 */
int bmq_release(struct bmq *q, const struct bmq_job *job, bmq_done_cb cb, void *ctx,
                struct mi_err *err) MI_MUSTCHECK;

/* Lost locks reported by bmq_extend_locks (ids borrowed for the callback). */
typedef void (*bmq_extend_cb)(void *ctx, int status, size_t nlost, const char *const *lost,
                              const struct mi_err *err);

int bmq_extend_locks(struct bmq *q, size_t n, const char *const *ids,
                     const char *const *tokens, int64_t lock_ms, bmq_extend_cb cb, void *ctx,
                     struct mi_err *err) MI_MUSTCHECK;

/* Ids moved back to wait by the stalled checker (borrowed for the callback). */
typedef void (*bmq_stalled_cb)(void *ctx, int status, size_t nmoved,
                               const char *const *moved, const struct mi_err *err);

int bmq_check_stalled(struct bmq *q, int64_t max_stalled, int64_t interval_ms,
                      bmq_stalled_cb cb, void *ctx, struct mi_err *err) MI_MUSTCHECK;

/* ---- monitoring and operations ---- */

/* getJobCounts() of BullMQ 6.7.0, in its key order, plus paused. */
struct bmq_counts {
    int64_t active, completed, delayed, failed, prioritized, waiting, waiting_children;
    bool paused;
};

typedef void (*bmq_counts_cb)(void *ctx, int status, const struct bmq_counts *c,
                              const struct mi_err *err);

int bmq_counts(struct bmq *q, bmq_counts_cb cb, void *ctx, struct mi_err *err) MI_MUSTCHECK;

/** bmq_counts_json() - the getJobCounts() JSON object (new string). */
char *bmq_counts_json(const struct bmq_counts *c);

/** bmq_pause() - pause (@pause true) or resume the queue; status 1 when it changed. */
int bmq_pause(struct bmq *q, bool pause, bmq_done_cb cb, void *ctx,
              struct mi_err *err) MI_MUSTCHECK;

/* One batch of bmq_retry_failed() or bmq_clean(): @taken ids left the failed/completed
 * ZSET, of which @done were moved to wait (retry) or removed (clean). */
typedef void (*bmq_batch_cb)(void *ctx, int status, int64_t taken, int64_t done,
                             const struct mi_err *err);

/**
 * bmq_retry_failed() - move up to @max (1..5000) failed jobs that finished at or before
 * @before_ms back to wait, as Node's Queue.retryJobs({state: 'failed'}) / job.retry():
 * finishedOn, processedOn and failedReason are cleared, prioritized jobs return to the
 * prioritized set, a "waiting" event (prev failed) is written per job, and no marker
 * is added while the queue is paused. @reset_attempts also clears atm and ats (Node's
 * resetAttemptsMade/resetAttemptsStarted); without it attemptsMade keeps counting.
 * One script call; call again while @taken == @max to go through the whole set.
 * Return: 0, or non-zero with @err (then @cb is not called).
 */
int bmq_retry_failed(struct bmq *q, int64_t before_ms, int64_t max, bool reset_attempts,
                     bmq_batch_cb cb, void *ctx, struct mi_err *err) MI_MUSTCHECK;

/**
 * bmq_clean() - remove up to @max (1..5000) jobs of the completed (@failed false) or
 * failed set that finished at or before @before_ms, with all their keys, as Node's
 * Queue.clean(); writes one "cleaned" event with the count. Call again while
 * @taken == @max. Return: 0, or non-zero with @err (then @cb is not called).
 */
int bmq_clean(struct bmq *q, bool failed, int64_t before_ms, int64_t max, bmq_batch_cb cb,
              void *ctx, struct mi_err *err) MI_MUSTCHECK;

/** bmq_worker_client_name() - CLIENT SETNAME value that bull-board lists as a worker. */
char *bmq_worker_client_name(const char *prefix, const char *queue, const char *worker_name);

#endif
