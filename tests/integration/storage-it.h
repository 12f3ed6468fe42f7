/*
 * storage-it.h - helpers shared by the storage area's integration test programs.
 *
 * Header-only (static functions): start a helper process whose stdin is a pipe (the
 * helper exits when the pipe closes, so it never outlives the test), wait for a line
 * it prints, and check whether a TCP port on 127.0.0.1 answers.
 */
#ifndef MI_STORAGE_IT_H
#define MI_STORAGE_IT_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IT_SKIP 77

struct it_child {
    pid_t pid;
    int in_fd;    /* write end of the child's stdin */
    int out_fd;   /* read end of the child's stdout */
};

/* Start argv[0] with argv; stdout is piped back. Return 0 or -1. */
static inline int it_spawn(struct it_child *c, char *const argv[], char *const envp[])
{
    int in[2], out[2];

    if (pipe(in) != 0)
        return -1;
    if (pipe(out) != 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    c->pid = fork();
    if (c->pid < 0)
        return -1;
    if (c->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        if (envp)
            execve(argv[0], argv, envp);
        else
            execvp(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    c->in_fd = in[1];
    c->out_fd = out[0];
    return 0;
}

/* Read lines from the child until one starts with @prefix (copied to @line). 0 or -1. */
static inline int it_wait_line(struct it_child *c, const char *prefix, char *line, size_t cap,
                               int timeout_ms)
{
    size_t len = 0;
    struct timespec t0, t1;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct pollfd p = { .fd = c->out_fd, .events = POLLIN };
        long left;
        ssize_t n;
        char ch;

        clock_gettime(CLOCK_MONOTONIC, &t1);
        left = timeout_ms - ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return -1;
        n = read(c->out_fd, &ch, 1);
        if (n <= 0)
            return -1;
        if (ch == '\n') {
            line[len] = '\0';
            if (strncmp(line, prefix, strlen(prefix)) == 0)
                return 0;
            len = 0;
            continue;
        }
        if (len + 1 < cap)
            line[len++] = ch;
    }
}

/* Stop the child: close its stdin, then TERM, then KILL; reap it. */
static inline void it_stop(struct it_child *c)
{
    int st;

    if (c->pid <= 0)
        return;
    close(c->in_fd);
    close(c->out_fd);
    kill(c->pid, SIGTERM);
    for (int i = 0; i < 50; i++) {
        if (waitpid(c->pid, &st, WNOHANG) == c->pid) {
            c->pid = 0;
            return;
        }
        usleep(100000);
    }
    kill(c->pid, SIGKILL);
    waitpid(c->pid, &st, 0);
    c->pid = 0;
}

/* Does something accept TCP connections on 127.0.0.1:@port? */
static inline bool it_port_open(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok;

    if (fd < 0)
        return false;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/* A free loopback port (bound then released; racy but fine for tests). */
static inline int it_free_port(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    socklen_t l = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* Find an executable "node" on PATH; NULL if none. */
static inline const char *it_node(void)
{
    static const char *const cands[] = { "/usr/bin/node", "/usr/local/bin/node" };

    for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
        if (access(cands[i], X_OK) == 0)
            return cands[i];
    }
    return NULL;
}

#endif
