#include "wloop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "redis.h"
#include "util.h"

/*
 * Job states (every transition goes through job_set_state):
 *   RUNNING      the handler works on it        → FINISHING
 *   FINISHING    complete/fail script in flight → DONE, or FINISH_WAIT on a Redis error
 *   FINISH_WAIT  waiting to send it again       → FINISHING
 *   DONE         reported; freed when its timer handle has closed
 */
enum job_state { JOB_RUNNING, JOB_FINISHING, JOB_FINISH_WAIT, JOB_DONE, JOB_STATE__MAX };

static const char *const job_state_names[JOB_STATE__MAX] = {
    "running", "finishing", "finish_wait", "done",
};

struct wjob {
    struct wjob *prev, *next;
    struct wloop *w;
    struct bmq_job *job;
    enum job_state state;
    void *priv;
    bool lock_lost;
    bool cancelled;
    /* What to send when finishing (kept to retry after a Redis error). */
    bool release;           /* back to wait, no attempt counted */
    bool success;
    bool permanent;
    char *value;            /* returnvalue JSON or failure reason */
    int64_t started_ms;     /* monotonic */
    int64_t finish_deadline;
    uv_timer_t retry_timer;
};

struct wloop {
    uv_loop_t *loop;
    const struct mi_config *cfg;
    const struct mi_log *log;
    struct wloop_handler handler;
    void *hctx;

    struct redis_client *cmd;     /* scripts and commands */
    struct redis_client *block;   /* BZPOPMIN on the marker only */
    struct bmq *q;
    char *worker_name;
    char token_base[33];
    uint64_t token_seq;

    struct wjob jobs;             /* in-flight list head (circular) */
    int inflight;                 /* claimed and not yet reported (every state but DONE) */
    int running;                  /* of which the handler still works on (JOB_RUNNING) */

    bool started, stopping, claims_paused, finalized;
    bool claiming, blocking, renewing, checking_stalls;
    uv_timer_t wake_timer;        /* retry claims after errors, rate limits, delays */
    uv_timer_t lock_timer;
    uv_timer_t stalled_timer;
    uv_timer_t drain_timer;
    int open_handles;
    void (*done)(void *ctx);
    void *done_ctx;
};

static void pump(struct wloop *w);
static void send_finish(struct wjob *j);
static void maybe_finalize(struct wloop *w);

/* ---- jobs ---- */

const struct bmq_job *wjob_job(const struct wjob *j) { return j->job; }
void wjob_set_priv(struct wjob *j, void *priv) { j->priv = priv; }
void *wjob_priv(const struct wjob *j) { return j->priv; }
bool wjob_lock_lost(const struct wjob *j) { return j->lock_lost; }
struct wloop *wjob_wloop(const struct wjob *j) { return j->w; }

static void job_set_state(struct wjob *j, enum job_state s)
{
    static const unsigned allowed[JOB_STATE__MAX] = {
        [JOB_RUNNING] = 1u << JOB_FINISHING,
        [JOB_FINISHING] = 1u << JOB_DONE | 1u << JOB_FINISH_WAIT,
        [JOB_FINISH_WAIT] = 1u << JOB_FINISHING | 1u << JOB_DONE,
        [JOB_DONE] = 0,
    };
    struct log_rec r;
    if (!(allowed[j->state] & (1u << s))) {
        if (log_begin(&r, j->w->log, LOG_ERROR, "internal: illegal job state change")) {
            log_str(&r, "job", j->job->id);
            log_str(&r, "from", job_state_names[j->state]);
            log_str(&r, "to", job_state_names[s]);
            log_end(&r);
        }
        abort();
    }
    if (j->state == JOB_RUNNING)
        j->w->running--;
    if (log_begin(&r, j->w->log, LOG_DEBUG, "job state")) {
        log_str(&r, "job", j->job->id);
        log_str(&r, "from", job_state_names[j->state]);
        log_str(&r, "to", job_state_names[s]);
        log_end(&r);
    }
    j->state = s;
}

static void job_closed(uv_handle_t *h)
{
    struct wjob *j = h->data;
    struct wloop *w = j->w;
    bmq_job_free(j->job);
    free(j->value);
    free(j);
    w->open_handles--;
    maybe_finalize(w);
}

static void job_release(struct wjob *j)
{
    struct wloop *w = j->w;
    j->prev->next = j->next;
    j->next->prev = j->prev;
    w->inflight--;
    uv_close((uv_handle_t *)&j->retry_timer, job_closed);
}

static void log_outcome(struct wjob *j, int status, enum bmq_fail_outcome outcome)
{
    struct log_rec r;
    const struct bmq_job *b = j->job;
    enum log_level lv = j->success || j->release ? LOG_INFO : LOG_WARN;
    const char *msg = j->release ? "job returned to the queue"
                      : j->success ? "job completed"
                      : outcome == BMQ_FAILED_FINAL ? "job failed"
                      : "job attempt failed, will retry";
    if (status) {
        lv = LOG_WARN;
        msg = status == -2 || status == -6 ? "job finished but its lock was lost (another "
                                             "worker may run it)"
              : status == -1               ? "job finished but it no longer exists"
                                           : "job finished but it was no longer active";
    }
    if (!log_begin(&r, j->w->log, lv, msg))
        return;
    log_str(&r, "job", b->id);
    log_str(&r, "name", b->name);
    log_int(&r, "attempt", b->attempts_made + 1);
    log_int(&r, "ms", mi_mono_ms() - j->started_ms);
    if (!j->success)
        log_str(&r, j->release ? "why" : "reason", j->value);
    if (status)
        log_int(&r, "code", status);
    log_end(&r);
}

static void on_retry_timer(uv_timer_t *t)
{
    struct wjob *j = t->data;
    job_set_state(j, JOB_FINISHING);
    send_finish(j);
}

static void finish_failed_transport(struct wjob *j, const struct mi_err *err)
{
    struct log_rec r;
    if (mi_mono_ms() >= j->finish_deadline) {
        if (log_begin(&r, j->w->log, LOG_ERROR, "giving up reporting a job's result to Redis; "
                      "the stalled checker will run it again")) {
            log_str(&r, "job", j->job->id);
            log_str(&r, "error", err ? err->msg : "");
            log_end(&r);
        }
        job_set_state(j, JOB_DONE);
        job_release(j);
        return;
    }
    if (log_begin(&r, j->w->log, LOG_WARN, "cannot report a job's result to Redis yet; retrying")) {
        log_str(&r, "job", j->job->id);
        log_str(&r, "error", err ? err->msg : "");
        log_end(&r);
    }
    job_set_state(j, JOB_FINISH_WAIT);
    uv_timer_start(&j->retry_timer, on_retry_timer, 1000, 0);
}

struct finish_ctx {
    struct wjob *j;
    enum bmq_fail_outcome outcome;
};

static void on_finished(void *ctx, int status, const struct mi_err *err)
{
    struct finish_ctx *fc = ctx;
    struct wjob *j = fc->j;
    enum bmq_fail_outcome outcome = fc->outcome;
    free(fc);
    /* bmq_done_cb: @err set means the script did not run (transport); its own codes come
     * with err NULL */
    if (err) {
        finish_failed_transport(j, err);
        return;
    }
    log_outcome(j, status, outcome);
    job_set_state(j, JOB_DONE);
    struct wloop *w = j->w;
    job_release(j);
    pump(w);
}

static void send_finish(struct wjob *j)
{
    struct wloop *w = j->w;
    struct mi_err err = MI_ERR_INIT;
    struct finish_ctx *fc = calloc(1, sizeof(*fc));
    int r;
    if (!fc) {
        mi_err_set(&err, -ENOMEM, "out of memory");
        finish_failed_transport(j, &err);
        return;
    }
    fc->j = j;
    if (j->release)
        r = bmq_release(w->q, j->job, on_finished, fc, &err);
    else if (j->success)
        r = bmq_complete(w->q, j->job, j->value, NULL, on_finished, fc, &err);
    else
        r = bmq_fail(w->q, j->job, j->value, j->permanent, NULL, &fc->outcome, on_finished, fc,
                     &err);
    if (r) {
        free(fc);
        finish_failed_transport(j, &err);
    }
}

static void job_end(struct wjob *j, bool success, const char *value, bool permanent)
{
    j->success = success;
    j->permanent = permanent;
    j->value = strdup(value ? value : (success ? "null" : "unknown error"));
    job_set_state(j, JOB_FINISHING);
    if (!j->value) {
        /* Without memory we cannot even report: give up now (no retry would have a
         * value to send), the lock expires and the stalled checker re-runs it. */
        j->finish_deadline = 0;
        finish_failed_transport(j, NULL);
        return;
    }
    j->finish_deadline = mi_mono_ms() + 5 * 60 * 1000;
    send_finish(j);
    /* The handler is done with it: claim the next job now, so that the claim goes out in
     * the same write as this report (Redis runs them in that order on one connection, so
     * the queue never sees more than the concurrency active) and one round trip per job
     * is saved. */
    pump(j->w);
}

void wjob_complete(struct wjob *j, const char *returnvalue)
{
    job_end(j, true, returnvalue, false);
}

void wjob_fail(struct wjob *j, const char *reason, bool permanent)
{
    job_end(j, false, reason, permanent);
}

void wjob_release(struct wjob *j, const char *why)
{
    j->release = true;
    job_end(j, false, why, false);
}

/* Why a claimed job must fail without running, or NULL if the handler may run it. */
static const char *refuse_reason(const struct bmq_job *b, char *buf, size_t n)
{
    if (b->defa)
        return b->defa;
    if (b->has_parent)
        return "flow jobs (parentKey/parent) are not supported by media-ingest-worker; keep "
               "flows on Node-only queues";
    if (b->rjk)
        return "job scheduler iterations (repeatJobKey) are not supported by "
               "media-ingest-worker; the schedule would silently stop";
    if (!b->data_json || !json_is_object(b->data_json))
        return "job data is not a JSON object; expected {\"messageId\", \"providerMediaId\"}";
    if (b->opts_error) {
        snprintf(buf, n, "job options are invalid: %s", b->opts_error);
        return buf;
    }
    return NULL;
}

static void job_begin(struct wloop *w, struct bmq_job *b)
{
    struct wjob *j = calloc(1, sizeof(*j));
    struct log_rec r;
    char buf[300];
    if (!j) {
        /* Left active: its lock expires and the stalled checker re-queues it. */
        log_msg(w->log, LOG_ERROR, "out of memory starting a job", "job=%s", b->id);
        bmq_job_free(b);
        return;
    }
    j->w = w;
    j->job = b;
    j->state = JOB_RUNNING;
    j->started_ms = mi_mono_ms();
    uv_timer_init(w->loop, &j->retry_timer);
    j->retry_timer.data = j;
    w->open_handles++;
    j->prev = w->jobs.prev;
    j->next = &w->jobs;
    w->jobs.prev->next = j;
    w->jobs.prev = j;
    w->inflight++;
    w->running++;

    const char *refuse = refuse_reason(b, buf, sizeof(buf));
    if (refuse) {
        wjob_fail(j, refuse, true);
        return;
    }
    if (log_begin(&r, w->log, LOG_DEBUG, "job started")) {
        log_str(&r, "job", b->id);
        log_str(&r, "name", b->name);
        log_int(&r, "attempt", b->attempts_made + 1);
        log_end(&r);
    }
    w->handler.start(w->hctx, j);
}

/* ---- claiming ---- */

static void on_wake(uv_timer_t *t);

static void wake_later(struct wloop *w, int64_t ms)
{
    if (w->stopping)
        return;
    uv_timer_start(&w->wake_timer, on_wake, (uint64_t)(ms < 1 ? 1 : ms), 0);
}

static void on_marker(void *ctx, const redisReply *reply, const struct mi_err *err);

static void block_on_marker(struct wloop *w, int64_t next_delayed_ms)
{
    /* As Node: 5 s when no delayed job is known, else until it is due, at most 10 s. */
    double secs = 5.0;
    if (next_delayed_ms > 0) {
        secs = (double)(next_delayed_ms - mi_now_ms()) / 1000.0;
        if (secs > 10)
            secs = 10;
        if (secs < 0.001)
            secs = 0.001;
    }
    char key[512], tmo[32];
    snprintf(key, sizeof(key), "%smarker", bmq_key_prefix(w->q));
    snprintf(tmo, sizeof(tmo), "%.3f", secs);
    const char *argv[] = { "BZPOPMIN", key, tmo };
    size_t lens[] = { 8, strlen(key), strlen(tmo) };
    int r = redis_client_command(w->block, (int64_t)(secs * 1000) + 3000, on_marker, w, 3, argv,
                                 lens);
    if (r) {
        wake_later(w, 200);
        return;
    }
    w->blocking = true;
}

static void on_marker(void *ctx, const redisReply *reply, const struct mi_err *err)
{
    struct wloop *w = ctx;
    w->blocking = false;
    if (w->stopping)
        return;
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        log_msg(w->log, LOG_WARN, "waiting for jobs failed; retrying", "%s",
                reply ? reply->str : err->msg);
        wake_later(w, 500);
        return;
    }
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
        reply->element[2]->type == REDIS_REPLY_STRING) {
        int64_t due = (int64_t)strtod(reply->element[2]->str, NULL);
        if (due > mi_now_ms() + 1) {
            /* A delayed job becomes due later: sleep until then (or a new marker). */
            block_on_marker(w, due);
            return;
        }
    }
    pump(w);
}

static void on_claimed(void *ctx, int status, struct bmq_claim_result *res,
                       const struct mi_err *err)
{
    struct wloop *w = ctx;
    w->claiming = false;
    if (w->stopping && !(res && res->job)) {
        maybe_finalize(w);
        return;
    }
    if (status) {
        if (!w->stopping)
            log_msg(w->log, LOG_WARN, "claiming a job failed; retrying", "%s", err->msg);
        wake_later(w, 500);
        return;
    }
    if (res->job) {
        /* A job claimed while stopping still runs: the drain covers it. */
        job_begin(w, res->job);
        pump(w);
        return;
    }
    if (res->rate_limit_ms > 0) {
        wake_later(w, res->rate_limit_ms < 30000 ? res->rate_limit_ms : 30000);
        return;
    }
    block_on_marker(w, res->next_delayed_ms);
}

static void pump(struct wloop *w)
{
    if (!w->started || w->stopping || w->claims_paused || w->claiming || w->blocking)
        return;
    /* Jobs whose report is still on its way do not count, but only up to a second
     * concurrency's worth (their reports may be stuck on a Redis outage). */
    if (w->running >= w->cfg->concurrency || w->inflight >= 2 * w->cfg->concurrency)
        return;
    if (!redis_client_ready(w->cmd) || !redis_client_ready(w->block))
        return;
    char token[80];
    struct mi_err err = MI_ERR_INIT;
    snprintf(token, sizeof(token), "%s:%llu", w->token_base,
             (unsigned long long)++w->token_seq);
    w->claiming = true;
    if (bmq_claim(w->q, token, w->cfg->lock_duration_ms, w->worker_name, on_claimed, w, &err)) {
        w->claiming = false;
        wake_later(w, 500);
    }
}

static void on_wake(uv_timer_t *t)
{
    pump(t->data);
}

/* ---- locks and stalls ---- */

static void on_extended(void *ctx, int status, size_t nlost, const char *const *lost,
                        const struct mi_err *err)
{
    struct wloop *w = ctx;
    w->renewing = false;
    if (status) {
        if (!w->stopping || w->inflight)
            log_msg(w->log, LOG_WARN, "renewing job locks failed", "%s", err->msg);
        return;
    }
    for (size_t i = 0; i < nlost; i++) {
        for (struct wjob *j = w->jobs.next; j != &w->jobs; j = j->next) {
            if (!strcmp(j->job->id, lost[i]) && !j->lock_lost) {
                j->lock_lost = true;
                log_msg(w->log, LOG_WARN, "lost the lock of a running job (it may run twice)",
                        "job=%s", lost[i]);
            }
        }
    }
}

static void on_lock_timer(uv_timer_t *t)
{
    struct wloop *w = t->data;
    struct mi_err err = MI_ERR_INIT;
    if (w->renewing || !w->inflight || !redis_client_ready(w->cmd))
        return;
    const char **ids = calloc((size_t)w->inflight, sizeof(char *));
    const char **tokens = calloc((size_t)w->inflight, sizeof(char *));
    size_t n = 0;
    if (ids && tokens) {
        for (struct wjob *j = w->jobs.next; j != &w->jobs; j = j->next) {
            if (j->state == JOB_DONE || j->lock_lost)
                continue;
            ids[n] = j->job->id;
            tokens[n] = j->job->token;
            n++;
        }
        if (n) {
            w->renewing = true;
            if (bmq_extend_locks(w->q, n, ids, tokens, w->cfg->lock_duration_ms, on_extended, w,
                                 &err))
                w->renewing = false;
        }
    }
    free(ids);
    free(tokens);
}

static void on_stalled_checked(void *ctx, int status, size_t nmoved, const char *const *moved,
                               const struct mi_err *err)
{
    struct wloop *w = ctx;
    w->checking_stalls = false;
    if (status) {
        if (!w->stopping)
            log_msg(w->log, LOG_WARN, "stalled-job check failed", "%s", err->msg);
        return;
    }
    for (size_t i = 0; i < nmoved; i++)
        log_msg(w->log, LOG_WARN, "moved a stalled job back to wait", "job=%s", moved[i]);
    if (nmoved)
        pump(w);
}

static void on_stalled_timer(uv_timer_t *t)
{
    struct wloop *w = t->data;
    struct mi_err err = MI_ERR_INIT;
    if (w->checking_stalls || w->stopping || !redis_client_ready(w->cmd))
        return;
    w->checking_stalls = true;
    if (bmq_check_stalled(w->q, w->cfg->max_stalled_count, w->cfg->stalled_interval_ms,
                          on_stalled_checked, w, &err))
        w->checking_stalls = false;
}

/* ---- connections ---- */

static void on_redis_state(void *ctx, bool ready, const struct mi_err *err)
{
    struct wloop *w = ctx;
    if (ready) {
        log_msg(w->log, LOG_INFO, "connected to Redis", NULL);
        if (!w->stopping) {
            on_stalled_timer(&w->stalled_timer);
            pump(w);
        }
    } else if (!w->stopping) {
        log_msg(w->log, LOG_WARN, "Redis connection is down; reconnecting", "%s",
                err ? err->msg : "");
    }
}

int wloop_new(struct wloop **wp, uv_loop_t *loop, const struct mi_config *cfg,
              const struct wloop_handler *h, void *hctx, const struct mi_log *log,
              struct mi_err *err)
{
    struct wloop *w = calloc(1, sizeof(*w));
    char host[128] = "host";
    int r;
    if (!w)
        return mi_err_set(err, -ENOMEM, "out of memory");
    w->loop = loop;
    w->cfg = cfg;
    w->log = log;
    w->handler = *h;
    w->hctx = hctx;
    w->jobs.prev = w->jobs.next = &w->jobs;
    mi_rand_hex(w->token_base, 16);
    gethostname(host, sizeof(host) - 1);
    if (cfg->worker_name)
        w->worker_name = strdup(cfg->worker_name);
    else if (asprintf(&w->worker_name, "media-ingest-%s-%d", host, (int)getpid()) < 0)
        w->worker_name = NULL;
    char *client_name = w->worker_name ? bmq_worker_client_name(cfg->prefix, cfg->queue_name,
                                                                w->worker_name) : NULL;
    if (!w->worker_name || !client_name) {
        free(client_name);
        free(w->worker_name);
        free(w);
        return mi_err_set(err, -ENOMEM, "out of memory");
    }

    struct redis_opts ro = { .url = &cfg->redis, .client_name = NULL };
    r = redis_client_new(&w->cmd, loop, &ro, on_redis_state, w, err);
    if (!r) {
        ro.client_name = client_name; /* bull-board lists workers by this name */
        r = redis_client_new(&w->block, loop, &ro, on_redis_state, w, err);
    }
    free(client_name);
    if (!r)
        r = bmq_new(&w->q, w->cmd, cfg->prefix, cfg->queue_name, err);
    if (r) {
        redis_client_close(w->cmd);
        redis_client_close(w->block);
        free(w->worker_name);
        free(w);
        return r;
    }
    uv_timer_t *timers[] = { &w->wake_timer, &w->lock_timer, &w->stalled_timer,
                             &w->drain_timer };
    for (size_t i = 0; i < 4; i++) {
        uv_timer_init(loop, timers[i]);
        timers[i]->data = w;
        w->open_handles++;
    }
    *wp = w;
    return 0;
}

void wloop_start(struct wloop *w)
{
    int64_t renew = w->cfg->lock_duration_ms / 4;
    w->started = true;
    uv_timer_start(&w->lock_timer, on_lock_timer, (uint64_t)renew, (uint64_t)renew);
    uv_timer_start(&w->stalled_timer, on_stalled_timer, 0, (uint64_t)w->cfg->stalled_interval_ms);
    pump(w);
}

void wloop_pause_claims(struct wloop *w, bool paused)
{
    w->claims_paused = paused;
    if (!paused)
        pump(w);
}

static void handle_closed(uv_handle_t *h)
{
    struct wloop *w = h->data;
    w->open_handles--;
    maybe_finalize(w);
}

static void maybe_finalize(struct wloop *w)
{
    if (!w->stopping)
        return;
    if (!w->finalized && w->inflight == 0 && !w->claiming) {
        w->finalized = true;
        uv_timer_t *timers[] = { &w->wake_timer, &w->lock_timer, &w->stalled_timer,
                                 &w->drain_timer };
        for (size_t i = 0; i < 4; i++)
            uv_close((uv_handle_t *)timers[i], handle_closed);
        redis_client_close(w->cmd);
        w->cmd = NULL;
        return;
    }
    if (w->finalized && w->open_handles == 0 && w->done) {
        void (*done)(void *) = w->done;
        w->done = NULL;
        done(w->done_ctx);
    }
}

static void on_drain_timeout(uv_timer_t *t)
{
    struct wloop *w = t->data;
    log_msg(w->log, LOG_WARN, "drain timeout: cancelling the jobs still running",
            "jobs=%d", w->inflight);
    for (struct wjob *j = w->jobs.next; j != &w->jobs;) {
        struct wjob *next = j->next;
        if (j->state == JOB_RUNNING && !j->cancelled && w->handler.cancel) {
            j->cancelled = true;
            w->handler.cancel(w->hctx, j);
        }
        j = next;
    }
}

void wloop_stop(struct wloop *w, void (*done)(void *ctx), void *ctx)
{
    if (w->stopping)
        return;
    w->stopping = true;
    w->done = done;
    w->done_ctx = ctx;
    log_msg(w->log, LOG_INFO, "draining: no new jobs, waiting for those in flight",
            "jobs=%d", w->inflight);
    uv_timer_stop(&w->wake_timer);
    uv_timer_stop(&w->stalled_timer);
    redis_client_close(w->block);
    w->block = NULL;
    /* a claim in flight may still bring a job: the drain deadline covers it too */
    if (w->inflight || w->claiming)
        uv_timer_start(&w->drain_timer, on_drain_timeout, (uint64_t)w->cfg->drain_timeout_ms, 0);
    maybe_finalize(w);
}

void wloop_free(struct wloop *w)
{
    if (!w)
        return;
    bmq_free(w->q);
    free(w->worker_name);
    free(w);
}

int wloop_inflight(const struct wloop *w) { return w->inflight; }
struct bmq *wloop_queue(struct wloop *w) { return w->q; }

bool wloop_ready(const struct wloop *w)
{
    return !w->stopping && redis_client_ready(w->cmd) && redis_client_ready(w->block);
}
