/*
 * notify.h - systemd's readiness protocol for Type=notify units (sd_notify(3) from
 * libsystemd): READY=1 once the worker takes jobs, STOPPING=1 when it starts draining,
 * STATUS= lines for `systemctl status`, and WATCHDOG=1 keep-alives.
 *
 * The keep-alives come from a timer on the worker's own libuv loop, at half the
 * WatchdogSec= interval, so they stop exactly when the loop stops turning (a stuck
 * callback, a deadlock) and systemd then restarts the unit. They deliberately do not
 * depend on Redis or PostgreSQL being up: those outages are handled by reconnecting,
 * and restarting the process would not help.
 *
 * Everything is a no-op when NOTIFY_SOCKET is unset (a terminal, Docker, Kubernetes) or
 * when the build has no libsystemd. Not thread-safe: call from the loop thread.
 */
#ifndef MI_NOTIFY_H
#define MI_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "err.h"

struct mi_notify;

/**
 * mi_notify_new() - read NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID and, when systemd
 * asks for a watchdog, start the keep-alive timer on @loop (unreferenced: it does not
 * keep the loop alive by itself).
 * @out: receives the object (free it with mi_notify_close()).
 * @loop: borrowed; must outlive the object.
 * Return: 0, or -ENOMEM with @err filled.
 */
int mi_notify_new(struct mi_notify **out, uv_loop_t *loop, struct mi_err *err) MI_MUSTCHECK;

/** mi_notify_enabled() - true when running under systemd with NOTIFY_SOCKET set. */
bool mi_notify_enabled(const struct mi_notify *n);

/** mi_notify_watchdog_ms() - systemd's watchdog interval in ms, 0 when there is none. */
int64_t mi_notify_watchdog_ms(const struct mi_notify *n);

/**
 * mi_notify_ready() - tell systemd that start-up is complete (READY=1), with an optional
 * @status line (NULL for none). `systemctl start` returns only after this.
 */
void mi_notify_ready(struct mi_notify *n, const char *status);

/**
 * mi_notify_stopping() - tell systemd that the service is shutting down (STOPPING=1), with
 * an optional @status line, e.g. "draining 12 jobs".
 */
void mi_notify_stopping(struct mi_notify *n, const char *status);

/** mi_notify_status() - update the free-form STATUS= line shown by `systemctl status`. */
void mi_notify_status(struct mi_notify *n, const char *status);

/**
 * mi_notify_extend_timeout() - ask systemd for @ms more before it gives up on the current
 * start or stop (EXTEND_TIMEOUT_USEC), e.g. while a long drain is still making progress.
 */
void mi_notify_extend_timeout(struct mi_notify *n, int64_t ms);

/**
 * mi_notify_close() - stop the keep-alives and free @n once its timer handle has closed
 * (run the loop afterwards; call before uv_loop_close()). NULL is a no-op.
 */
void mi_notify_close(struct mi_notify *n);

#endif
