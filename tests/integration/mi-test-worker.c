/*
 * mi-test-worker - the real worker loop with a test handler, for integration tests.
 *
 * The shipped media-ingest-worker does real work only; this binary drives the same
 * loop (worker/wloop.c) with a handler that follows instructions in the job data:
 *   {"test": {"sleepMs": N, "sleepStarts": S, "fail": "reason", "failAttempts": K,
 *             "permanent": true}}
 * sleepMs: work this long (only during the first S starts of the job when sleepStarts is
 * given, so a re-run after a stall finishes at once); fail: fail with that reason; failAttempts: fail while fewer
 * than K attempts were made; permanent: fail for good. Without "test" it completes at
 * once. Every start is appended as "<jobId>\n" to $MI_TEST_RECORD when set, so tests can
 * check that each job ran exactly once across a fleet.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wmain.h"

struct tjob {
    uv_timer_t timer;
    struct wjob *job;
};

struct thandler {
    uv_loop_t *loop;
    int record_fd;
};

static void tjob_closed(uv_handle_t *h)
{
    free(h->data);
}

static void finish(struct tjob *t)
{
    struct wjob *j = t->job;
    const struct bmq_job *b = wjob_job(j);
    json_t *test = json_object_get(b->data_json, "test");
    const char *fail = json_string_value(json_object_get(test, "fail"));
    json_int_t fail_attempts = json_integer_value(json_object_get(test, "failAttempts"));
    bool permanent = json_is_true(json_object_get(test, "permanent"));
    char buf[256];

    uv_close((uv_handle_t *)&t->timer, tjob_closed);
    wjob_set_priv(j, NULL);
    if (fail) {
        wjob_fail(j, fail, permanent);
    } else if (b->attempts_made < fail_attempts) {
        snprintf(buf, sizeof(buf), "test failure on attempt %lld", (long long)b->attempts_made + 1);
        wjob_fail(j, buf, permanent);
    } else {
        json_t *rv = json_pack("{s:b,s:s,s:s}", "ok", 1, "jobId", b->id, "worker", "c");
        char *s = json_dumps(rv, JSON_COMPACT);
        wjob_complete(j, s ? s : "null");
        free(s);
        json_decref(rv);
    }
}

static void on_timer(uv_timer_t *t)
{
    finish(t->data);
}

static void start(void *hctx, struct wjob *j)
{
    struct thandler *th = hctx;
    const struct bmq_job *b = wjob_job(j);
    if (th->record_fd >= 0) {
        char line[300];
        int n = snprintf(line, sizeof(line), "%s\n", b->id);
        if (write(th->record_fd, line, (size_t)n) != n)
            perror("mi-test-worker: record");
    }
    struct tjob *t = calloc(1, sizeof(*t));
    if (!t) {
        wjob_fail(j, "out of memory", false);
        return;
    }
    t->job = j;
    uv_timer_init(th->loop, &t->timer);
    t->timer.data = t;
    wjob_set_priv(j, t);
    json_t *test = json_object_get(b->data_json, "test");
    json_int_t ms = json_integer_value(json_object_get(test, "sleepMs"));
    json_t *starts = json_object_get(test, "sleepStarts");
    if (starts && b->attempts_started > json_integer_value(starts))
        ms = 0;
    uv_timer_start(&t->timer, on_timer, ms > 0 ? (uint64_t)ms : 0, 0);
}

static void cancel(void *hctx, struct wjob *j)
{
    struct tjob *t = wjob_priv(j);
    if (!t)
        return;
    uv_timer_stop(&t->timer);
    uv_close((uv_handle_t *)&t->timer, tjob_closed);
    wjob_set_priv(j, NULL);
    wjob_release(j, "the worker was shutting down");
}

static int setup(void **hctx, struct wloop_handler *h, uv_loop_t *loop,
                 const struct mi_config *cfg, const struct mi_log *log, struct mi_err *err)
{
    struct thandler *th = calloc(1, sizeof(*th));
    if (!th)
        return mi_err_set(err, 1, "out of memory");
    th->loop = loop;
    th->record_fd = -1;
    const char *rec = getenv("MI_TEST_RECORD");
    if (rec && *rec) {
        th->record_fd = open(rec, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (th->record_fd < 0) {
            free(th);
            return mi_err_set(err, 2, "MI_TEST_RECORD=%s cannot be opened", rec);
        }
    }
    h->start = start;
    h->cancel = cancel;
    *hctx = th;
    return 0;
}

static void teardown(void *hctx)
{
    struct thandler *th = hctx;
    if (th->record_fd >= 0)
        close(th->record_fd);
    free(th);
}

int main(int argc, char **argv)
{
    static const struct wmain_ops ops = {
        .prog = "mi-test-worker",
        .summary = "The media-ingest worker loop with a test handler (integration tests only).",
        .setup = setup,
        .teardown = teardown,
    };
    return worker_main(argc, argv, &ops);
}
