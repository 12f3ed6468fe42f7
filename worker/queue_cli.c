/*
 * media-queue - operator CLI for the media-ingest BullMQ queue.
 *
 *   media-queue stats [--json] [--watch SECONDS]
 *   media-queue add MESSAGE_ID PROVIDER_MEDIA_ID [--job-id ID] [--priority N] [--delay MS]
 *                   [--attempts N] [--backoff MS]
 *   media-queue pause | resume
 *   media-queue retry-failed [--limit N] [--reset-attempts]
 *   media-queue clean completed|failed --older-than DURATION [--limit N]
 *   media-queue uploads list [--older-than DURATION]
 *   media-queue uploads abort --older-than DURATION
 *
 * The queue commands run our own Lua scripts (common/lua/) that have the Redis effects of
 * Node's Queue.getJobCounts/add/pause/resume/retryJobs/clean (bullmq 6.7.0), so Node
 * workers, QueueEvents and bull-board see what they expect. retry-failed and clean work in
 * batches of QCLI_BATCH jobs, one short script each, so Redis never blocks for long. The
 * uploads commands talk to S3/R2 only (ListMultipartUploads, AbortMultipartUpload).
 *
 * Exit codes: 0 ok; 1 the operation failed (Redis or S3 unreachable, a script error, an
 * upload that could not be aborted); 2 usage or configuration error (including uploads
 * with the local backend).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <uv.h>

#include "bullmq.h"
#include "config.h"
#include "http.h"
#include "qcli.h"
#include "redis.h"
#include "s3.h"
#include "storage.h"
#include "storage_cfg.h"
#include "util.h"

/* How long to wait for the first connection to Redis before giving up. */
#define CONNECT_DEADLINE_MS 10000
/* Old uploads remembered for abort in one run; more are left for the next run. */
#define UPLOADS_MAX 100000
#define UPLOADS_PREFIX "media/"

/* An upload to abort, copied out of the listing. */
struct old_upload {
    char *key;
    char *upload_id;
    int64_t age_s;
};

struct cli {
    uv_loop_t loop;
    uv_timer_t timer;       /* connect deadline, then --watch ticks */
    struct redis_client *rc;
    struct bmq *q;
    struct qcli_opts o;
    const char *cmd_text;   /* argv[0] of the command, for messages */
    int rc_exit;
    bool started;
    bool finished;
    /* add */
    struct bmq_add_req add;
    char *add_data;
    /* retry-failed, clean */
    int64_t cutoff_ms;      /* jobs that finished at or before this are taken */
    int64_t taken;          /* ids taken from the set */
    int64_t done;           /* moved (retry-failed) or removed (clean) */
    bool paused;            /* the queue was paused when retry-failed started */
    bool exhausted;         /* a short batch: nothing old enough is left */
    /* uploads */
    struct mi_http *http;
    struct storage *st;
    int64_t now_ms;
    uint64_t listed;        /* open uploads under the prefix */
    uint64_t old;           /* of which older than --older-than */
    uint64_t aborted;
    uint64_t abort_failed;
    bool list_failed;       /* a page of the listing could not be read */
    bool truncated;         /* more old uploads than UPLOADS_MAX */
    struct old_upload *ups;
    size_t nups, capups, next_up;
};

static void usage(FILE *out)
{
    fputs("Usage:\n"
          "  media-queue stats [--json] [--watch SECONDS]\n"
          "      Job counts as BullMQ's getJobCounts(): active, completed, delayed, failed,\n"
          "      prioritized, waiting, waiting-children (plus whether the queue is paused).\n"
          "  media-queue add MESSAGE_ID PROVIDER_MEDIA_ID [--job-id ID] [--priority N]\n"
          "                  [--delay MS] [--attempts N] [--backoff MS]\n"
          "      Enqueue one ingest job (name \"ingest\"); defaults: 5 attempts, exponential\n"
          "      backoff from 30000 ms. Prints the job id.\n"
          "  media-queue pause | resume\n"
          "      Pause or resume the whole queue (as Node's queue.pause()/resume()).\n"
          "  media-queue retry-failed [--limit N] [--reset-attempts]\n"
          "      Move failed jobs back to wait, oldest first, as Node's\n"
          "      queue.retryJobs({state: 'failed'}): failedReason, finishedOn and processedOn\n"
          "      are cleared, prioritized jobs keep their priority, QueueEvents sees\n"
          "      'waiting'. As in Node, attemptsMade keeps counting, so a job whose attempts\n"
          "      are used up gets one more try; --reset-attempts clears attemptsMade and\n"
          "      attemptsStarted (job.retry's resetAttemptsMade/resetAttemptsStarted) so it\n"
          "      gets all its attempts again. On a paused queue the jobs wait for resume.\n"
          "      Prints how many were moved.\n"
          "  media-queue clean completed|failed --older-than DURATION [--limit N]\n"
          "      Delete completed or failed jobs that finished more than DURATION ago (90s,\n"
          "      30m, 12h, 7d), oldest first, with their logs and other keys, as Node's\n"
          "      queue.clean(); QueueEvents sees 'cleaned'. Prints how many were removed.\n"
          "  media-queue uploads list [--older-than DURATION]\n"
          "      Open S3/R2 multipart uploads under media/: key, upload id, initiated\n"
          "      (UTC), age; tab-separated, then a summary line. Workers killed mid-upload\n"
          "      leave these behind (their parts are stored and billed until aborted).\n"
          "  media-queue uploads abort --older-than DURATION\n"
          "      Abort the open multipart uploads under media/ initiated more than DURATION\n"
          "      ago; choose DURATION longer than any running upload takes (e.g. 2h).\n"
          "      Prints each aborted upload and the counts. S3/R2 only.\n"
          "  --help, --version\n\n", out);
    config_usage(out, CFG_QUEUE);
    fputs("\nExit codes: 0 ok; 1 the operation failed (Redis or S3 unreachable, a script\n"
          "error, an upload that could not be aborted); 2 usage or configuration error\n"
          "(uploads with MEDIA_STORAGE_BACKEND=local included).\n", out);
}

static void free_uploads(struct cli *c)
{
    for (size_t i = 0; i < c->nups; i++) {
        free(c->ups[i].key);
        free(c->ups[i].upload_id);
    }
    free(c->ups);
    c->ups = NULL;
    c->nups = c->capups = 0;
}

/* End the run with @code. Idempotent: closing the Redis client runs pending callbacks. */
static void finish(struct cli *c, int code)
{
    if (c->finished)
        return;
    c->finished = true;
    c->rc_exit = code;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, NULL);
    redis_client_close(c->rc);
    c->rc = NULL;
}

/* ---- stats ---- */

static void run(struct cli *c);

static void on_watch_tick(uv_timer_t *t)
{
    run(t->data);
}

static void on_counts(void *ctx, int status, const struct bmq_counts *k, const struct mi_err *err)
{
    struct cli *c = ctx;
    if (status) {
        fprintf(stderr, "media-queue: %s\n", err->msg);
        finish(c, QCLI_EXIT_FAILED);
        return;
    }
    if (c->o.json) {
        char *s = bmq_counts_json(k);
        if (!s) {
            finish(c, QCLI_EXIT_FAILED);
            return;
        }
        /* getJobCounts() keys, then "paused" (not a job state in BullMQ 6). */
        size_t n = strlen(s);
        printf("%.*s,\"paused\":%s}\n", (int)(n - 1), s, k->paused ? "true" : "false");
        free(s);
    } else {
        printf("waiting %lld  active %lld  delayed %lld  prioritized %lld  completed %lld  "
               "failed %lld  waiting-children %lld%s\n",
               (long long)k->waiting, (long long)k->active, (long long)k->delayed,
               (long long)k->prioritized, (long long)k->completed, (long long)k->failed,
               (long long)k->waiting_children, k->paused ? "  (paused)" : "");
    }
    fflush(stdout);
    if (c->o.watch_ms > 0) {
        uv_timer_start(&c->timer, on_watch_tick, (uint64_t)c->o.watch_ms, 0);
        return;
    }
    finish(c, QCLI_EXIT_OK);
}

/* ---- add ---- */

static void on_added(void *ctx, int status, const char *id, bool added, const struct mi_err *err)
{
    struct cli *c = ctx;
    if (status) {
        fprintf(stderr, "media-queue: add failed: %s\n", err->msg);
        finish(c, QCLI_EXIT_FAILED);
        return;
    }
    printf("%s\n", id);
    if (!added)
        fprintf(stderr, "media-queue: a job with id %s already exists; left untouched\n", id);
    finish(c, QCLI_EXIT_OK);
}

/* One option of add: returns 0 not this one, 1 parsed, 2 usage error (message printed). */
static int add_option(int argc, char **argv, int *i, struct bmq_add_req *req)
{
    struct mi_err err = MI_ERR_INIT;
    const char *v = NULL;
    static const char *const names[] = { "--job-id", "--priority", "--delay", "--attempts",
                                         "--backoff" };
    size_t k;
    int r = 0;
    for (k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        r = mi_flag_value(argc, argv, i, names[k], &v, &err);
        if (r)
            break;
    }
    if (r < 0) {
        fprintf(stderr, "media-queue: %s\n", err.msg);
        return 2;
    }
    if (r == 0)
        return 0;
    bool ok = true;
    switch (k) {
    case 0:
        req->job_id = v;
        break;
    case 1:
        ok = mi_parse_i64(v, 0, 2097151, &req->priority);
        break;
    case 2:
        ok = mi_parse_duration_ms(v, &req->delay_ms);
        break;
    case 3:
        ok = mi_parse_i64(v, 1, 1000, &req->attempts);
        break;
    default:
        ok = mi_parse_duration_ms(v, &req->backoff.delay_ms);
        if (ok && !req->backoff.delay_ms)
            req->backoff.type = MI_BACKOFF_NONE;
        break;
    }
    if (!ok) {
        static const char *const want[] = { "", "0..2097151", "milliseconds", "1..1000",
                                            "milliseconds" };
        fprintf(stderr, "media-queue: %s takes %s\n", names[k], want[k]);
        return 2;
    }
    return 1;
}

static int parse_add(int argc, char **argv, struct bmq_add_req *req, char **data)
{
    const char *pos[2] = { 0 };
    int npos = 0;
    req->name = "ingest";
    req->attempts = 5;
    req->backoff = (struct mi_backoff){ MI_BACKOFF_EXPONENTIAL, 30000, 0 };
    for (int i = 1; i < argc; i++) {
        int r = add_option(argc, argv, &i, req);
        if (r == 2)
            return QCLI_EXIT_USAGE;
        if (r == 1)
            continue;
        if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "media-queue: unknown option %s (see --help)\n", argv[i]);
            return QCLI_EXIT_USAGE;
        }
        if (npos == 2) {
            fprintf(stderr, "media-queue: too many arguments (see --help)\n");
            return QCLI_EXIT_USAGE;
        }
        pos[npos++] = argv[i];
    }
    if (npos != 2 || !*pos[0] || !*pos[1]) {
        fprintf(stderr, "media-queue: add needs MESSAGE_ID and PROVIDER_MEDIA_ID\n");
        return QCLI_EXIT_USAGE;
    }
    struct mi_err err = MI_ERR_INIT;
    if (req->job_id && bmq_validate_job_id(req->job_id, &err)) {
        fprintf(stderr, "media-queue: --job-id: %s\n", err.msg);
        return QCLI_EXIT_USAGE;
    }
    int64_t num;
    json_t *mid = mi_parse_i64(pos[0], 1, 9007199254740991LL, &num) ? json_integer(num)
                                                                    : json_string(pos[0]);
    json_t *d = json_pack("{s:o,s:s}", "messageId", mid, "providerMediaId", pos[1]);
    *data = d ? json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    if (!*data) {
        fprintf(stderr, "media-queue: MESSAGE_ID and PROVIDER_MEDIA_ID must be UTF-8 text\n");
        return QCLI_EXIT_USAGE;
    }
    req->data = *data;
    return 0;
}

/* ---- pause / resume ---- */

static void on_paused(void *ctx, int status, const struct mi_err *err)
{
    struct cli *c = ctx;
    if (status < 0) {
        fprintf(stderr, "media-queue: %s\n", err->msg);
        finish(c, QCLI_EXIT_FAILED);
        return;
    }
    printf("%s%s\n", c->o.cmd == QCLI_PAUSE ? "paused" : "resumed",
           status == 1 ? "" : " (it already was)");
    finish(c, QCLI_EXIT_OK);
}

/* ---- retry-failed, clean ---- */

static void next_batch(struct cli *c);

static void on_batch(void *ctx, int status, int64_t taken, int64_t done,
                     const struct mi_err *err)
{
    struct cli *c = ctx;
    if (status) {
        fprintf(stderr, "media-queue: %s stopped after %lld jobs (run it again to go on): "
                "%s\n", c->cmd_text, (long long)c->done, err->msg);
        finish(c, QCLI_EXIT_FAILED);
        return;
    }
    int64_t asked = qcli_next_batch(c->o.limit, c->taken, QCLI_BATCH);
    c->taken += taken;
    c->done += done;
    /* A short batch means the set holds no more jobs old enough. */
    c->exhausted = taken < asked;
    next_batch(c);
}

static void report_batches(struct cli *c)
{
    if (c->o.cmd == QCLI_RETRY_FAILED) {
        printf("%lld failed job%s moved to wait%s\n", (long long)c->done,
               c->done == 1 ? "" : "s",
               c->paused && c->done ? " (the queue is paused: they run after "
                                      "'media-queue resume')" : "");
        if (c->taken > c->done)
            printf("%lld id%s in the failed set had no job left and were dropped from it\n",
                   (long long)(c->taken - c->done), c->taken - c->done == 1 ? "" : "s");
    } else {
        printf("%lld %s job%s removed (finished more than %s ago)\n", (long long)c->done,
               c->o.failed ? "failed" : "completed", c->done == 1 ? "" : "s",
               c->o.older_than);
    }
}

static void next_batch(struct cli *c)
{
    struct mi_err err = MI_ERR_INIT;
    int64_t n = c->exhausted ? 0 : qcli_next_batch(c->o.limit, c->taken, QCLI_BATCH);
    int r;
    if (n == 0) {
        report_batches(c);
        finish(c, QCLI_EXIT_OK);
        return;
    }
    if (c->o.cmd == QCLI_RETRY_FAILED)
        r = bmq_retry_failed(c->q, c->cutoff_ms, n, c->o.reset_attempts, on_batch, c, &err);
    else
        r = bmq_clean(c->q, c->o.failed, c->cutoff_ms, n, on_batch, c, &err);
    if (r) {
        fprintf(stderr, "media-queue: %s stopped after %lld jobs (run it again to go on): "
                "%s\n", c->cmd_text, (long long)c->done, err.msg);
        finish(c, QCLI_EXIT_FAILED);
    }
}

/* retry-failed first reads the counts: the pause state goes into the report. */
static void on_retry_counts(void *ctx, int status, const struct bmq_counts *k,
                            const struct mi_err *err)
{
    struct cli *c = ctx;
    if (status) {
        fprintf(stderr, "media-queue: %s\n", err->msg);
        finish(c, QCLI_EXIT_FAILED);
        return;
    }
    c->paused = k->paused;
    next_batch(c);
}

/* ---- driver (Redis commands) ---- */

static void run(struct cli *c)
{
    struct mi_err err = MI_ERR_INIT;
    int r = 0;
    switch (c->o.cmd) {
    case QCLI_STATS:
        r = bmq_counts(c->q, on_counts, c, &err);
        break;
    case QCLI_ADD:
        r = bmq_add(c->q, &c->add, on_added, c, &err);
        break;
    case QCLI_PAUSE:
    case QCLI_RESUME:
        r = bmq_pause(c->q, c->o.cmd == QCLI_PAUSE, on_paused, c, &err);
        break;
    case QCLI_RETRY_FAILED:
        /* Jobs that fail again while this runs finish later than the cut-off: not retaken. */
        c->cutoff_ms = mi_now_ms();
        r = bmq_counts(c->q, on_retry_counts, c, &err);
        break;
    case QCLI_CLEAN:
        c->cutoff_ms = mi_now_ms() - c->o.older_than_ms;
        next_batch(c);
        break;
    default:
        break;
    }
    if (r) {
        fprintf(stderr, "media-queue: %s\n", err.msg);
        finish(c, r > 0 && r != BMQ_E_NOTREADY ? QCLI_EXIT_USAGE : QCLI_EXIT_FAILED);
    }
}

static void on_deadline(uv_timer_t *t)
{
    struct cli *c = t->data;
    fprintf(stderr, "media-queue: no connection to Redis within %d s (check "
            "MEDIA_INGEST_QUEUE_URL/REDIS_URL): %s\n", CONNECT_DEADLINE_MS / 1000,
            redis_client_last_error(c->rc)->msg);
    finish(c, QCLI_EXIT_FAILED);
}

static void on_state(void *ctx, bool ready, const struct mi_err *err)
{
    struct cli *c = ctx;
    if (ready && !c->started) {
        c->started = true;
        /* From here each command has the Redis client's own reply deadline. */
        uv_timer_stop(&c->timer);
        run(c);
    }
}

static int run_queue_command(struct cli *c, const struct mi_config *cfg)
{
    struct mi_err err = MI_ERR_INIT;
    struct redis_opts ro = { .url = &cfg->redis, .connect_timeout_ms = 5000 };
    if (redis_client_new(&c->rc, &c->loop, &ro, on_state, c, &err) ||
        bmq_new(&c->q, c->rc, cfg->prefix, cfg->queue_name, &err)) {
        fprintf(stderr, "media-queue: %s\n", err.msg);
        finish(c, QCLI_EXIT_FAILED);
        uv_run(&c->loop, UV_RUN_DEFAULT);
        bmq_free(c->q);
        return QCLI_EXIT_FAILED;
    }
    uv_timer_start(&c->timer, on_deadline, CONNECT_DEADLINE_MS, 0);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    bmq_free(c->q);
    return c->rc_exit;
}

/* ---- uploads ---- */

static bool remember_upload(struct cli *c, const struct s3_upload *u, int64_t age_s)
{
    if (c->nups == c->capups) {
        size_t cap = c->capups ? c->capups * 2 : 64;
        if (cap > UPLOADS_MAX) {
            c->truncated = true;
            return false;
        }
        struct old_upload *n = realloc(c->ups, cap * sizeof(*n));
        if (!n)
            return false;
        c->ups = n;
        c->capups = cap;
    }
    struct old_upload *o = &c->ups[c->nups];
    o->key = strdup(u->key);
    o->upload_id = strdup(u->upload_id);
    o->age_s = age_s;
    if (!o->key || !o->upload_id) {
        free(o->key);
        free(o->upload_id);
        return false;
    }
    c->nups++;
    return true;
}

static bool on_upload(void *ctx, const struct s3_upload *u)
{
    struct cli *c = ctx;
    char age[32];
    int64_t age_s = qcli_upload_age_s(u->initiated_at, (time_t)(c->now_ms / 1000));
    c->listed++;
    if (c->o.older_than_ms >= 0 && !qcli_upload_is_old(u->initiated_at, c->now_ms,
                                                       c->o.older_than_ms))
        return true;
    c->old++;
    if (c->o.cmd == QCLI_UPLOADS_LIST) {
        printf("%s\t%s\t%s\t%s\n", u->key, u->upload_id, u->initiated,
               qcli_format_age(age_s, age, sizeof(age)));
        return true;
    }
    /* Stop listing when memory runs out; what was collected is still aborted. */
    return remember_upload(c, u, age_s);
}

static void abort_next(struct cli *c);

static void on_aborted(void *ctx, int status, const struct mi_err *err)
{
    struct cli *c = ctx;
    const struct old_upload *u = &c->ups[c->next_up - 1];
    char age[32];
    if (status) {
        c->abort_failed++;
        fprintf(stderr, "media-queue: aborting %s (upload id %s) failed: %s\n", u->key,
                u->upload_id, err ? err->msg : "unknown error");
    } else {
        c->aborted++;
        printf("aborted\t%s\t%s\t%s\n", u->key, u->upload_id,
               qcli_format_age(u->age_s, age, sizeof(age)));
    }
    abort_next(c);
}

static void uploads_report(struct cli *c)
{
    char what[256];
    if (c->o.older_than_ms >= 0)
        snprintf(what, sizeof(what), "%llu of %llu open multipart uploads under %s older "
                 "than %s", (unsigned long long)c->old, (unsigned long long)c->listed,
                 UPLOADS_PREFIX, c->o.older_than);
    else
        snprintf(what, sizeof(what), "%llu open multipart upload%s under %s",
                 (unsigned long long)c->listed, c->listed == 1 ? "" : "s", UPLOADS_PREFIX);
    if (c->o.cmd == QCLI_UPLOADS_LIST) {
        printf("%s\n", what);
        return;
    }
    printf("aborted %llu, failed %llu: %s\n", (unsigned long long)c->aborted,
           (unsigned long long)c->abort_failed, what);
    if (c->truncated || c->nups < c->old)
        printf("more old uploads remain than one run handles; run it again\n");
}

static void abort_next(struct cli *c)
{
    while (c->next_up < c->nups) {
        struct mi_err err = MI_ERR_INIT;
        const struct old_upload *u = &c->ups[c->next_up++];
        if (!s3_abort_upload(c->st, u->key, u->upload_id, on_aborted, c, &err))
            return;
        c->abort_failed++;
        fprintf(stderr, "media-queue: aborting %s (upload id %s) failed: %s\n", u->key,
                u->upload_id, err.msg);
    }
    uploads_report(c);
    c->rc_exit = c->abort_failed || c->list_failed ? QCLI_EXIT_FAILED : QCLI_EXIT_OK;
}

static void on_listed(void *ctx, int status, const struct mi_err *err)
{
    struct cli *c = ctx;
    if (status) {
        fprintf(stderr, "media-queue: listing multipart uploads failed: %s\n",
                err ? err->msg : "unknown error");
        c->rc_exit = QCLI_EXIT_FAILED;
        if (c->o.cmd == QCLI_UPLOADS_LIST || !c->nups)
            return;
        /* Abort what the pages read so far found; the exit code still says it failed. */
        c->list_failed = true;
    }
    if (c->o.cmd == QCLI_UPLOADS_LIST) {
        uploads_report(c);
        c->rc_exit = QCLI_EXIT_OK;
        return;
    }
    abort_next(c);
}

static int run_uploads(struct cli *c, const struct mi_config *cfg)
{
    struct storage_config sc;
    struct mi_err err = MI_ERR_INIT;
    int r;
    uv_close((uv_handle_t *)&c->timer, NULL);   /* no deadline: requests have their own */
    if (storage_cfg_from_config(cfg, &sc, &err)) {
        fprintf(stderr, "media-queue: configuration error: %s\n", err.msg);
        uv_run(&c->loop, UV_RUN_DEFAULT);
        return QCLI_EXIT_USAGE;
    }
    if (sc.kind == STORAGE_LOCAL) {
        fprintf(stderr, "media-queue: uploads: MEDIA_STORAGE_BACKEND is local, which has no "
                        "multipart uploads; set MEDIA_STORAGE_BACKEND=s3 or r2 (with the "
                        "bucket's settings) to list or abort them\n");
        uv_run(&c->loop, UV_RUN_DEFAULT);
        return QCLI_EXIT_USAGE;
    }
    c->rc_exit = QCLI_EXIT_FAILED;
    r = http_new(&c->http, &c->loop, &err);
    if (!r) {
        r = storage_new(&c->st, &c->loop, c->http, NULL, &sc, &err);
        if (r == STORAGE_E_CONFIG) {
            fprintf(stderr, "media-queue: configuration error: %s\n", err.msg);
            c->rc_exit = QCLI_EXIT_USAGE;
        }
    }
    if (!r) {
        c->now_ms = mi_now_ms();
        r = s3_uploads_list(c->st, UPLOADS_PREFIX, on_upload, on_listed, c, &err);
    }
    if (r && c->rc_exit != QCLI_EXIT_USAGE)
        fprintf(stderr, "media-queue: %s\n", err.msg);
    if (!r)
        uv_run(&c->loop, UV_RUN_DEFAULT);
    storage_free(c->st);
    http_free(c->http);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    free_uploads(c);
    return c->rc_exit;
}

int main(int argc, char **argv)
{
    struct mi_config cfg;
    struct mi_err err = MI_ERR_INIT;
    struct cli c = { .rc_exit = QCLI_EXIT_FAILED };
    char **rest = calloc((size_t)argc + 1, sizeof(char *));
    int nrest = 0;
    int code;
    if (!rest)
        return QCLI_EXIT_FAILED;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            free(rest);
            return QCLI_EXIT_OK;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("media-queue %s\n", MI_VERSION);
            free(rest);
            return QCLI_EXIT_OK;
        }
    }
    if (config_load(&cfg, CFG_QUEUE, argc, argv, rest, &nrest, &err)) {
        fprintf(stderr, "media-queue: configuration error: %s\n", err.msg);
        free(rest);
        return QCLI_EXIT_USAGE;
    }
    if (qcli_parse(nrest, rest, &c.o, &err)) {
        fprintf(stderr, "media-queue: %s\n", err.msg);
        free(rest);
        return QCLI_EXIT_USAGE;
    }
    c.cmd_text = rest[0];
    if (c.o.cmd == QCLI_ADD) {
        code = parse_add(nrest, rest, &c.add, &c.add_data);
        if (code) {
            free(c.add_data);
            free(rest);
            return code;
        }
    }

    uv_loop_init(&c.loop);
    uv_timer_init(&c.loop, &c.timer);
    c.timer.data = &c;
    if (c.o.cmd == QCLI_UPLOADS_LIST || c.o.cmd == QCLI_UPLOADS_ABORT)
        code = run_uploads(&c, &cfg);
    else
        code = run_queue_command(&c, &cfg);
    if (uv_loop_close(&c.loop))
        fprintf(stderr, "media-queue: internal: handles left open\n");
    free(c.add_data);
    free(rest);
    return code;
}
