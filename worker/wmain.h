/*
 * wmain.h - the process around a worker loop: flags and environment, the logger,
 * signals (SIGTERM/SIGINT drain, exit 0), and a clean libuv shutdown.
 */
#ifndef MI_WMAIN_H
#define MI_WMAIN_H

#include "wloop.h"

struct wmain_ops {
    const char *prog;       /* executable name for --help/--version */
    const char *summary;    /* one line for --help */
    /* Build the handler; return 0, 2 (configuration, exit 2) or another error. */
    int (*setup)(void **hctx, struct wloop_handler *h, uv_loop_t *loop,
                 const struct mi_config *cfg, const struct mi_log *log, struct mi_err *err);
    /* Called once the worker loop has drained (close handles here; run afterwards). */
    void (*teardown)(void *hctx);
    /* Optional: called when the worker loop exists, before it starts. */
    void (*attach)(void *hctx, struct wloop *w);
};

/** worker_main() - run a worker process. Return: the exit code (0, 1 or 2). */
int worker_main(int argc, char **argv, const struct wmain_ops *ops);

#endif
