/*
 * media-queue - operator CLI for the media-ingest BullMQ queue.
 *
 *   media-queue stats [--json] [--watch SECONDS]
 *   media-queue add MESSAGE_ID PROVIDER_MEDIA_ID [--job-id ID] [--priority N] [--delay MS]
 *                   [--attempts N] [--backoff MS]
 *   media-queue pause | resume
 *
 * Exit codes: 0 ok; 1 the operation failed (Redis unreachable, script error);
 * 2 usage or configuration error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "bullmq.h"
#include "config.h"
#include "redis.h"
#include "util.h"

struct cli {
    uv_loop_t loop;
    uv_timer_t timer;       /* overall deadline, and --watch ticks */
    struct redis_client *rc;
    struct bmq *q;
    int argc;
    char **argv;            /* the non-setting arguments: command and its own flags */
    int rc_exit;
    bool started;
    bool json;
    int64_t watch_ms;
    int64_t deadline_ms;
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
          "  --help, --version\n\n", out);
    config_usage(out, CFG_QUEUE);
    fputs("\nExit codes: 0 ok; 1 the operation failed; 2 usage or configuration error.\n", out);
}

static void finish(struct cli *c, int code)
{
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
        finish(c, 1);
        return;
    }
    if (c->json) {
        char *s = bmq_counts_json(k);
        if (!s) {
            finish(c, 1);
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
    if (c->watch_ms > 0) {
        c->deadline_ms = 0;
        uv_timer_start(&c->timer, on_watch_tick, (uint64_t)c->watch_ms, 0);
        return;
    }
    finish(c, 0);
}

/* ---- add ---- */

static void on_added(void *ctx, int status, const char *id, bool added, const struct mi_err *err)
{
    struct cli *c = ctx;
    if (status) {
        fprintf(stderr, "media-queue: add failed: %s\n", err->msg);
        finish(c, 1);
        return;
    }
    printf("%s\n", id);
    if (!added)
        fprintf(stderr, "media-queue: a job with id %s already exists; left untouched\n", id);
    finish(c, 0);
}

static int flag_value(struct cli *c, int *i, const char *name, const char **out)
{
    size_t n = strlen(name);
    const char *a = c->argv[*i];
    if (strncmp(a, name, n))
        return 0;
    if (a[n] == '=') {
        *out = a + n + 1;
        return 1;
    }
    if (a[n])
        return 0;
    if (*i + 1 >= c->argc) {
        fprintf(stderr, "media-queue: %s needs a value\n", name);
        return -1;
    }
    *out = c->argv[++*i];
    return 1;
}

static int parse_add(struct cli *c, struct bmq_add_req *req, char **data)
{
    const char *pos[2] = { 0 };
    int npos = 0;
    req->name = "ingest";
    req->attempts = 5;
    req->backoff = (struct mi_backoff){ MI_BACKOFF_EXPONENTIAL, 30000, 0 };
    for (int i = 1; i < c->argc; i++) {
        const char *v = NULL;
        int r;
        if ((r = flag_value(c, &i, "--job-id", &v)) != 0) {
            if (r < 0)
                return 2;
            req->job_id = v;
        } else if ((r = flag_value(c, &i, "--priority", &v)) != 0) {
            if (r < 0 || !mi_parse_i64(v, 0, 2097151, &req->priority))
                return fprintf(stderr, "media-queue: --priority takes 0..2097151\n"), 2;
        } else if ((r = flag_value(c, &i, "--delay", &v)) != 0) {
            if (r < 0 || !mi_parse_duration_ms(v, &req->delay_ms))
                return fprintf(stderr, "media-queue: --delay takes milliseconds\n"), 2;
        } else if ((r = flag_value(c, &i, "--attempts", &v)) != 0) {
            if (r < 0 || !mi_parse_i64(v, 1, 1000, &req->attempts))
                return fprintf(stderr, "media-queue: --attempts takes 1..1000\n"), 2;
        } else if ((r = flag_value(c, &i, "--backoff", &v)) != 0) {
            if (r < 0 || !mi_parse_duration_ms(v, &req->backoff.delay_ms))
                return fprintf(stderr, "media-queue: --backoff takes milliseconds\n"), 2;
            if (!req->backoff.delay_ms)
                req->backoff.type = MI_BACKOFF_NONE;
        } else if (c->argv[i][0] == '-' && c->argv[i][1]) {
            return fprintf(stderr, "media-queue: unknown option %s (see --help)\n",
                           c->argv[i]), 2;
        } else if (npos < 2) {
            pos[npos++] = c->argv[i];
        } else {
            return fprintf(stderr, "media-queue: too many arguments (see --help)\n"), 2;
        }
    }
    if (npos != 2 || !*pos[0] || !*pos[1])
        return fprintf(stderr, "media-queue: add needs MESSAGE_ID and PROVIDER_MEDIA_ID\n"), 2;
    struct mi_err err = MI_ERR_INIT;
    if (req->job_id && bmq_validate_job_id(req->job_id, &err))
        return fprintf(stderr, "media-queue: --job-id: %s\n", err.msg), 2;
    int64_t num;
    json_t *mid = mi_parse_i64(pos[0], 1, 9007199254740991LL, &num) ? json_integer(num)
                                                                    : json_string(pos[0]);
    json_t *d = json_pack("{s:o,s:s}", "messageId", mid, "providerMediaId", pos[1]);
    *data = d ? json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    if (!*data)
        return fprintf(stderr, "media-queue: MESSAGE_ID and PROVIDER_MEDIA_ID must be "
                               "UTF-8 text\n"), 2;
    req->data = *data;
    return 0;
}

/* ---- pause / resume ---- */

static void on_paused(void *ctx, int status, const struct mi_err *err)
{
    struct cli *c = ctx;
    if (status < 0) {
        fprintf(stderr, "media-queue: %s\n", err->msg);
        finish(c, 1);
        return;
    }
    printf("%s%s\n", strcmp(c->argv[0], "pause") ? "resumed" : "paused",
           status == 1 ? "" : " (it already was)");
    finish(c, 0);
}

/* ---- driver ---- */

static void run(struct cli *c)
{
    struct mi_err err = MI_ERR_INIT;
    const char *cmd = c->argv[0];
    int r = 0;
    if (!strcmp(cmd, "stats")) {
        r = bmq_counts(c->q, on_counts, c, &err);
    } else if (!strcmp(cmd, "add")) {
        struct bmq_add_req req = { 0 };
        char *data = NULL;
        int pr = parse_add(c, &req, &data);
        if (pr) {
            free(data);
            finish(c, pr);
            return;
        }
        r = bmq_add(c->q, &req, on_added, c, &err);
        free(data);
    } else {
        r = bmq_pause(c->q, !strcmp(cmd, "pause"), on_paused, c, &err);
    }
    if (r) {
        fprintf(stderr, "media-queue: %s\n", err.msg);
        finish(c, r > 0 && r != BMQ_E_NOTREADY ? 2 : 1);
    }
}

static void on_deadline(uv_timer_t *t)
{
    struct cli *c = t->data;
    fprintf(stderr, "media-queue: Redis did not answer in time: %s\n",
            redis_client_last_error(c->rc)->msg);
    finish(c, 1);
}

static void on_state(void *ctx, bool ready, const struct mi_err *err)
{
    struct cli *c = ctx;
    if (ready && !c->started) {
        c->started = true;
        run(c);
    }
}

static int parse_stats_flags(struct cli *c)
{
    for (int i = 1; i < c->argc; i++) {
        const char *v = NULL;
        int r;
        if (!strcmp(c->argv[i], "--json")) {
            c->json = true;
        } else if ((r = flag_value(c, &i, "--watch", &v)) != 0) {
            int64_t s;
            if (r < 0 || !mi_parse_i64(v, 1, 86400, &s))
                return fprintf(stderr, "media-queue: --watch takes seconds (1..86400)\n"), 2;
            c->watch_ms = s * 1000;
        } else {
            return fprintf(stderr, "media-queue: unknown argument %s\n", c->argv[i]), 2;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct mi_config cfg;
    struct mi_err err = MI_ERR_INIT;
    struct cli c = { .rc_exit = 1 };
    char **rest = calloc((size_t)argc + 1, sizeof(char *));
    int nrest = 0;
    if (!rest)
        return 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return free(rest), 0;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("media-queue %s\n", MI_VERSION);
            return free(rest), 0;
        }
    }
    if (config_load(&cfg, CFG_QUEUE, argc, argv, rest, &nrest, &err)) {
        fprintf(stderr, "media-queue: configuration error: %s\n", err.msg);
        return free(rest), 2;
    }
    c.argc = nrest;
    c.argv = rest;
    if (!nrest || (strcmp(rest[0], "stats") && strcmp(rest[0], "add") &&
                   strcmp(rest[0], "pause") && strcmp(rest[0], "resume"))) {
        fprintf(stderr, "media-queue: expected a command: stats, add, pause or resume "
                        "(see --help)\n");
        return free(rest), 2;
    }
    if (!strcmp(rest[0], "stats") && parse_stats_flags(&c))
        return free(rest), 2;
    if ((!strcmp(rest[0], "pause") || !strcmp(rest[0], "resume")) && nrest > 1) {
        fprintf(stderr, "media-queue: %s takes no arguments\n", rest[0]);
        return free(rest), 2;
    }

    uv_loop_init(&c.loop);
    uv_timer_init(&c.loop, &c.timer);
    c.timer.data = &c;
    struct redis_opts ro = { .url = &cfg.redis, .connect_timeout_ms = 5000 };
    if (redis_client_new(&c.rc, &c.loop, &ro, on_state, &c, &err) ||
        bmq_new(&c.q, c.rc, cfg.prefix, cfg.queue_name, &err)) {
        fprintf(stderr, "media-queue: %s\n", err.msg);
        return free(rest), 1;
    }
    uv_timer_start(&c.timer, on_deadline, 10000, 0);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    bmq_free(c.q);
    if (uv_loop_close(&c.loop))
        fprintf(stderr, "media-queue: internal: handles left open\n");
    free(rest);
    return c.rc_exit;
}
