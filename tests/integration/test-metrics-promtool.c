/*
 * test-metrics-promtool.c - Prometheus's own linter accepts what the registry renders:
 * the worker's families with data, plus escaping-heavy label values and help text.
 * Exit 77 (skip) when promtool (Debian package prometheus) is not installed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "metrics.h"
#include "metrics_worker.h"
#include "../unit/tap.h"

static char text[256 * 1024];

static double two(void *ctx)
{
    return 2;
}

static int fill(struct metrics *m, struct metrics_worker **mwp)
{
    static const char *const labels[] = { "path", "kind", NULL };
    static const double b[] = { 0.5, 1, 10 };
    struct mi_err err = MI_ERR_INIT;
    struct metrics_worker_sources src = { .jobs_in_flight = two };
    struct metrics_family *odd = NULL, *h = NULL;
    struct metrics_desc d = { .name = "test_odd_values", .labels = labels,
                              .help = "Values with \"quotes\", back\\slashes\nand newlines." };
    struct metrics_desc hd = { .name = "test_latency_seconds", .help = "A histogram.",
                               .labels = labels + 1, .buckets = b, .nbuckets = 3 };
    if (metrics_register_worker(m, "0.1.0-test", &src, mwp, &err) ||
        metrics_register(m, METRICS_GAUGE, &d, &odd, &err) ||
        metrics_register(m, METRICS_HISTOGRAM, &hd, &h, &err)) {
        printf("# %s\n", err.msg);
        return -1;
    }
    metrics_set(METRICS_SERIES(odd, "/a\"b\\c\nd", "caf\xc3\xa9"), -1.5);
    metrics_set(METRICS_SERIES(odd, "", "nan"), NAN);
    metrics_set(METRICS_SERIES(odd, "x", "inf"), INFINITY);
    metrics_observe(METRICS_SERIES(h, "a"), 0.7);
    metrics_observe(METRICS_SERIES(h, "a"), 70);
    for (int o = 0; o < MW_OUTCOME__MAX; o++)
        metrics_worker_job(*mwp, (enum mw_outcome)o, MW_CLASS_TRANSIENT, 0.1 * o, 1000);
    for (int p = 0; p < MW_PHASE__MAX; p++)
        metrics_worker_phase(*mwp, (enum mw_phase)p, 0.001 * p);
    struct bmq_counts c = { .active = 1, .waiting = 10, .delayed = 3 };
    metrics_worker_queue(*mwp, &c);
    return 0;
}

int main(void)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        printf("# promtool is not installed (apt-get install prometheus)\n");
        return 77;
    }
    struct metrics *m = NULL;
    struct metrics_worker *mw = NULL;
    size_t len = 0;
    TAP_EQ_INT(metrics_new(&m), 0);
    TAP_EQ_INT(fill(m, &mw), 0);
    TAP_EQ_INT(metrics_render(m, text, sizeof(text), &len), 0);

    char path[] = "/tmp/mi-metrics-XXXXXX";
    int fd = mkstemp(path);
    TAP_CHECK(fd >= 0);
    TAP_CHECK(write(fd, text, len) == (ssize_t)len);
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
    int st = system(cmd);
    TAP_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        printf("# rendered:\n%s", text);
    unlink(path);
    metrics_worker_free(mw);
    metrics_free(m);
    return tap_done();
}
