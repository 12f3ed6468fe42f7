#include "wmain.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "notify.h"

struct app {
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    struct wloop *w;
    struct mi_notify *notify;   /* systemd Type=notify; no-op outside systemd */
    struct mi_log *log;
    const struct wmain_ops *ops;
    void *hctx;
    bool draining;
    int64_t drain_timeout_ms;
};

static void on_drained(void *ctx)
{
    struct app *a = ctx;
    log_msg(a->log, LOG_INFO, "worker stopped", NULL);
    if (a->ops->teardown)
        a->ops->teardown(a->hctx);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    mi_notify_close(a->notify);
    a->notify = NULL;
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct app *a = s->data;
    if (a->draining) {
        log_msg(a->log, LOG_WARN, "second signal while draining; still waiting for jobs",
                "signal=%s", signum == SIGINT ? "SIGINT" : "SIGTERM");
        return;
    }
    a->draining = true;
    log_msg(a->log, LOG_INFO, "signal received, draining", "signal=%s",
            signum == SIGINT ? "SIGINT" : "SIGTERM");
    mi_notify_stopping(a->notify, "draining");
    mi_notify_extend_timeout(a->notify, a->drain_timeout_ms + 10000);
    wloop_stop(a->w, on_drained, a);
}

static void usage(const struct wmain_ops *ops, FILE *out)
{
    fprintf(out, "Usage: %s [--flag value ...]\n%s\n\n", ops->prog, ops->summary);
    fprintf(out, "  --help       show this text\n  --version    show the version\n\n");
    config_usage(out, CFG_WORKER);
    fprintf(out, "\nExit codes: 0 drained after SIGTERM/SIGINT; 1 runtime failure; "
                 "2 configuration error.\n");
}

int worker_main(int argc, char **argv, const struct wmain_ops *ops)
{
    struct mi_config cfg;
    struct mi_err err = MI_ERR_INIT;
    struct app a = { .ops = ops };
    char **rest = calloc((size_t)argc + 1, sizeof(char *));
    int nrest = 0, rc = 1;

    if (!rest)
        return 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(ops, stdout);
            free(rest);
            return 0;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("%s %s\n", ops->prog, MI_VERSION);
            free(rest);
            return 0;
        }
    }
    if (config_load(&cfg, CFG_WORKER, argc, argv, rest, &nrest, &err)) {
        fprintf(stderr, "%s: configuration error: %s\n", ops->prog, err.msg);
        free(rest);
        return 2;
    }
    if (nrest) {
        fprintf(stderr, "%s: unknown argument \"%s\" (see --help)\n", ops->prog, rest[0]);
        free(rest);
        return 2;
    }
    free(rest);
    if (log_new(&a.log, cfg.log_level, cfg.log_format, stderr, &err)) {
        fprintf(stderr, "%s: configuration error: %s\n", ops->prog, err.msg);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    uv_loop_init(&a.loop);

    struct wloop_handler h = { 0 };
    int r = ops->setup(&a.hctx, &h, &a.loop, &cfg, a.log, &err);
    if (r) {
        log_msg(a.log, LOG_ERROR, r == 2 ? "configuration error" : "start-up failed", "%s",
                err.msg);
        rc = r == 2 ? 2 : 1;
        goto out;
    }
    r = wloop_new(&a.w, &a.loop, &cfg, &h, a.hctx, a.log, &err);
    if (r) {
        log_msg(a.log, LOG_ERROR, "start-up failed", "%s", err.msg);
        if (ops->teardown)
            ops->teardown(a.hctx);
        uv_run(&a.loop, UV_RUN_DEFAULT);
        goto out;
    }
    if (ops->attach)
        ops->attach(a.hctx, a.w);
    uv_signal_init(&a.loop, &a.sigterm);
    uv_signal_init(&a.loop, &a.sigint);
    a.sigterm.data = a.sigint.data = &a;
    uv_signal_start(&a.sigterm, on_signal, SIGTERM);
    uv_signal_start(&a.sigint, on_signal, SIGINT);
    a.drain_timeout_ms = cfg.drain_timeout_ms;
    if (mi_notify_new(&a.notify, &a.loop, &err))
        log_msg(a.log, LOG_WARN, "systemd notification is unavailable", "%s", err.msg);

    char url[400];
    rurl_redact(&cfg.redis, url, sizeof(url));
    struct log_rec lr;
    if (log_begin(&lr, a.log, LOG_INFO, "worker starting")) {
        log_str(&lr, "version", MI_VERSION);
        log_str(&lr, "redis", url);
        log_str(&lr, "queue", cfg.queue_name);
        log_str(&lr, "prefix", cfg.prefix);
        log_int(&lr, "concurrency", cfg.concurrency);
        log_end(&lr);
    }
    wloop_start(a.w);
    mi_notify_ready(a.notify, "claiming jobs");
    uv_run(&a.loop, UV_RUN_DEFAULT);
    wloop_free(a.w);
    rc = 0;
out:
    if (uv_loop_close(&a.loop)) {
        log_msg(a.log, LOG_ERROR, "internal: libuv handles left open at exit", NULL);
        if (!rc)
            rc = 1;
    }
    curl_global_cleanup();
    log_free(a.log);
    return rc;
}
