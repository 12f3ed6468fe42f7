/* common/notify: the sd_notify messages a Type=notify unit receives, on a fake socket. */
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"

/* Next datagram on @fd as a string ("" when none is waiting). */
static const char *recv_msg(int fd, char *buf, size_t n)
{
    ssize_t r = recv(fd, buf, n - 1, MSG_DONTWAIT);
    buf[r > 0 ? r : 0] = '\0';
    return buf;
}

static void on_stop(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, NULL);
}

static void test_unset(void)
{
    uv_loop_t loop;
    struct mi_notify *n = NULL;
    struct mi_err err = MI_ERR_INIT;
    unsetenv("NOTIFY_SOCKET");
    uv_loop_init(&loop);
    TAP_EQ_INT(mi_notify_new(&n, &loop, &err), 0);
    TAP_CHECK(!mi_notify_enabled(n));
    TAP_EQ_INT(mi_notify_watchdog_ms(n), 0);
    mi_notify_ready(n, "ready");   /* no-ops */
    mi_notify_stopping(n, NULL);
    mi_notify_close(n);
    uv_run(&loop, UV_RUN_DEFAULT);
    TAP_EQ_INT(uv_loop_close(&loop), 0);
}

static void test_socket(void)
{
    char dir[] = "/tmp/mi-notify-XXXXXX";
    char path[96], buf[512];
    TAP_CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/notify.sock", dir);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    TAP_EQ_INT(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    char pid[24];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    setenv("NOTIFY_SOCKET", path, 1);
    setenv("WATCHDOG_USEC", "200000", 1);
    setenv("WATCHDOG_PID", pid, 1);

    uv_loop_t loop;
    uv_timer_t stop;
    struct mi_notify *n = NULL;
    struct mi_err err = MI_ERR_INIT;
    uv_loop_init(&loop);
    TAP_EQ_INT(mi_notify_new(&n, &loop, &err), 0);
    TAP_CHECK(mi_notify_enabled(n));
    TAP_EQ_INT(mi_notify_watchdog_ms(n), 200);
    mi_notify_ready(n, "taking jobs, concurrency 16");
    TAP_EQ_STR(recv_msg(fd, buf, sizeof(buf)), "READY=1\nSTATUS=taking jobs, concurrency 16");
    TAP_EQ_STR(recv_msg(fd, buf, sizeof(buf)), "WATCHDOG=1");
    /* Keep-alives every 100 ms from the loop: about 3 in 350 ms. */
    uv_timer_init(&loop, &stop);
    uv_timer_start(&stop, on_stop, 350, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    int pings = 0;
    while (!strcmp(recv_msg(fd, buf, sizeof(buf)), "WATCHDOG=1"))
        pings++;
    TAP_CHECK(pings >= 2 && pings <= 4);
    TAP_EQ_STR(buf, "");
    mi_notify_status(n, "3 jobs in flight");
    TAP_EQ_STR(recv_msg(fd, buf, sizeof(buf)), "STATUS=3 jobs in flight");
    mi_notify_stopping(n, "draining");
    TAP_EQ_STR(recv_msg(fd, buf, sizeof(buf)), "STOPPING=1\nSTATUS=draining");
    mi_notify_extend_timeout(n, 30000);
    TAP_EQ_STR(recv_msg(fd, buf, sizeof(buf)), "EXTEND_TIMEOUT_USEC=30000000");
    mi_notify_close(n);
    uv_run(&loop, UV_RUN_DEFAULT);
    TAP_EQ_INT(uv_loop_close(&loop), 0);

    /* The watchdog variables of another process (WATCHDOG_PID) are not ours. */
    setenv("WATCHDOG_PID", "1", 1);
    uv_loop_init(&loop);
    TAP_EQ_INT(mi_notify_new(&n, &loop, &err), 0);
    TAP_EQ_INT(mi_notify_watchdog_ms(n), 0);
    mi_notify_close(n);
    uv_run(&loop, UV_RUN_DEFAULT);
    TAP_EQ_INT(uv_loop_close(&loop), 0);
    close(fd);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
#ifndef MI_HAVE_LIBSYSTEMD
    printf("1..0 # SKIP built without libsystemd\n");
    return 0;
#else
    test_unset();
    test_socket();
    return tap_done();
#endif
}
