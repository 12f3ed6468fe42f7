#include "notify.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef MI_HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

struct mi_notify {
    uv_timer_t timer;
    bool enabled;
    bool timer_on;
    int64_t watchdog_ms;
};

/* Send one notification; errors are ignored on purpose: systemd going away must not
 * disturb the worker, and sd_notify() never blocks on a datagram socket. */
static void send_state(const struct mi_notify *n, const char *state, const char *status)
{
    if (!n || !n->enabled)
        return;
#ifdef MI_HAVE_LIBSYSTEMD
    if (status)
        (void)sd_notifyf(0, "%s%sSTATUS=%s", state ? state : "", state ? "\n" : "", status);
    else if (state)
        (void)sd_notify(0, state);
#else
    (void)state;
    (void)status;
#endif
}

static void on_keepalive(uv_timer_t *t)
{
    send_state(t->data, "WATCHDOG=1", NULL);
}

int mi_notify_new(struct mi_notify **out, uv_loop_t *loop, struct mi_err *err)
{
    struct mi_notify *n = calloc(1, sizeof(*n));
    if (!n)
        return mi_err_set(err, -ENOMEM, "out of memory");
    uv_timer_init(loop, &n->timer);
    n->timer.data = n;
#ifdef MI_HAVE_LIBSYSTEMD
    const char *sock = getenv("NOTIFY_SOCKET");
    n->enabled = sock && *sock;
    uint64_t usec = 0;
    /* sd_watchdog_enabled() also checks WATCHDOG_PID, so a child process that inherited
     * the variables does not ping on our behalf. */
    if (n->enabled && sd_watchdog_enabled(0, &usec) > 0 && usec >= 2000)
        n->watchdog_ms = (int64_t)(usec / 1000);
#endif
    if (n->watchdog_ms) {
        uint64_t every = (uint64_t)n->watchdog_ms / 2;
        uv_timer_start(&n->timer, on_keepalive, every, every);
        uv_unref((uv_handle_t *)&n->timer);
        n->timer_on = true;
    }
    *out = n;
    return 0;
}

bool mi_notify_enabled(const struct mi_notify *n)
{
    return n && n->enabled;
}

int64_t mi_notify_watchdog_ms(const struct mi_notify *n)
{
    return n ? n->watchdog_ms : 0;
}

void mi_notify_ready(struct mi_notify *n, const char *status)
{
    send_state(n, "READY=1", status);
    /* A first keep-alive right away: the watchdog interval counts from READY. */
    if (n && n->watchdog_ms)
        send_state(n, "WATCHDOG=1", NULL);
}

void mi_notify_stopping(struct mi_notify *n, const char *status)
{
    send_state(n, "STOPPING=1", status);
}

void mi_notify_status(struct mi_notify *n, const char *status)
{
    if (status)
        send_state(n, NULL, status);
}

void mi_notify_extend_timeout(struct mi_notify *n, int64_t ms)
{
    char buf[48];
    if (ms <= 0)
        return;
    snprintf(buf, sizeof(buf), "EXTEND_TIMEOUT_USEC=%lld", (long long)ms * 1000);
    send_state(n, buf, NULL);
}

static void on_closed(uv_handle_t *h)
{
    free(h->data);
}

void mi_notify_close(struct mi_notify *n)
{
    if (!n)
        return;
    uv_timer_stop(&n->timer);
    uv_close((uv_handle_t *)&n->timer, on_closed);
}
