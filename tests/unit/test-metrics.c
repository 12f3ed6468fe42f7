/*
 * test-metrics.c - the Prometheus registry: exact rendered text, escaping, bounds,
 * validation, scrape-time hooks, and the worker's families.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "budget.h"
#include "metrics.h"
#include "metrics_worker.h"
#include "tap.h"

static char text[64 * 1024];

static const char *render(struct metrics *m)
{
    size_t len = 0;
    int rc = metrics_render(m, text, sizeof(text), &len);
    TAP_EQ_INT(rc, 0);
    TAP_EQ_INT(len, strlen(text));
    return text;
}

static struct metrics_family *reg(struct metrics *m, enum metrics_type t, const char *name,
                                  const char *help, const char *const *labels, size_t max)
{
    struct metrics_desc d = { .name = name, .help = help, .labels = labels, .max_series = max };
    struct metrics_family *f = NULL;
    struct mi_err err = MI_ERR_INIT;
    int rc = metrics_register(m, t, &d, &f, &err);
    TAP_EQ_INT(rc, 0);
    if (rc)
        printf("#   %s\n", err.msg);
    return f;
}

static void test_empty_and_counter(void)
{
    struct metrics *m = NULL;
    TAP_EQ_INT(metrics_new(&m), 0);
    TAP_EQ_STR(render(m), "");

    struct metrics_family *f = reg(m, METRICS_COUNTER, "things_total", "Things seen.", NULL, 0);
    TAP_EQ_STR(render(m), "# HELP things_total Things seen.\n"
                          "# TYPE things_total counter\n"
                          "things_total 0\n");
    struct metrics_series *s = metrics_series_get(f, NULL);
    TAP_CHECK(s != NULL);
    metrics_inc(s);
    metrics_add(s, 2.5);
    metrics_add(s, -1);         /* counters never go down */
    metrics_add(s, NAN);
    metrics_add(s, INFINITY);
    metrics_observe(s, 7);      /* not a histogram */
    TAP_CHECK(metrics_value(s) == 3.5);
    TAP_EQ_STR(render(m), "# HELP things_total Things seen.\n"
                          "# TYPE things_total counter\n"
                          "things_total 3.5\n");
    metrics_set(s, 1e6);        /* mirroring an external total */
    TAP_EQ_STR(render(m), "# HELP things_total Things seen.\n"
                          "# TYPE things_total counter\n"
                          "things_total 1000000\n");
    /* NULL series: every update is a no-op. */
    metrics_inc(NULL);
    metrics_add(NULL, 1);
    metrics_set(NULL, 1);
    metrics_observe(NULL, 1);
    TAP_CHECK(metrics_value(NULL) == 0);
    metrics_free(m);
    metrics_free(NULL);
}

static void test_labels_and_escaping(void)
{
    static const char *const labels[] = { "outcome", "class", NULL };
    struct metrics *m = NULL;
    TAP_EQ_INT(metrics_new(&m), 0);
    struct metrics_family *f =
        reg(m, METRICS_COUNTER, "jobs_total", "Jobs \"ended\",\nby \\outcome.", labels, 4);
    /* No series yet: only the HELP and TYPE lines. */
    TAP_EQ_STR(render(m), "# HELP jobs_total Jobs \"ended\",\\nby \\\\outcome.\n"
                          "# TYPE jobs_total counter\n");
    struct metrics_series *a = METRICS_SERIES(f, "completed", "none");
    struct metrics_series *b = METRICS_SERIES(f, "fa\"il\\ed\nx", "perm");
    metrics_inc(b);
    metrics_inc(a);
    metrics_inc(METRICS_SERIES(f, "completed", "none"));
    TAP_CHECK(METRICS_SERIES(f, "completed", "none") == a);
    TAP_EQ_STR(render(m), "# HELP jobs_total Jobs \"ended\",\\nby \\\\outcome.\n"
                          "# TYPE jobs_total counter\n"
                          "jobs_total{outcome=\"completed\",class=\"none\"} 2\n"
                          "jobs_total{outcome=\"fa\\\"il\\\\ed\\nx\",class=\"perm\"} 1\n");
    /* Wrong number of values: refused, not counted as dropped. */
    TAP_CHECK(METRICS_SERIES(f, "completed") == NULL);
    TAP_CHECK(METRICS_SERIES(f, "completed", "none", "extra") == NULL);
    TAP_CHECK(metrics_series_get(f, NULL) == NULL);
    TAP_EQ_INT(metrics_dropped(m), 0);
    /* UTF-8 values are kept verbatim. */
    TAP_CHECK(METRICS_SERIES(f, "caf\xc3\xa9", "\xe2\x82\xac") != NULL);
    metrics_free(m);
}

static void test_bounds(void)
{
    static const char *const labels[] = { "v", NULL };
    char longv[METRICS_VALUE_MAX + 2];
    struct metrics *m = NULL;
    TAP_EQ_INT(metrics_new(&m), 0);
    struct metrics_family *f = reg(m, METRICS_GAUGE, "g", NULL, labels, 2);
    struct metrics_series *a = METRICS_SERIES(f, "a");
    struct metrics_series *b = METRICS_SERIES(f, "b");
    TAP_CHECK(a && b && a != b);
    TAP_CHECK(METRICS_SERIES(f, "c") == NULL);   /* third combination: over the bound */
    TAP_EQ_INT(metrics_dropped(m), 1);
    TAP_CHECK(METRICS_SERIES(f, "b") == b);      /* known ones still resolve */

    memset(longv, 'x', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    struct metrics_family *g = reg(m, METRICS_GAUGE, "h", NULL, labels, 8);
    TAP_CHECK(METRICS_SERIES(g, longv) == NULL); /* 129 bytes */
    longv[METRICS_VALUE_MAX] = '\0';
    TAP_CHECK(METRICS_SERIES(g, longv) != NULL); /* 128 bytes */
    TAP_CHECK(METRICS_SERIES(g, "\xff") == NULL);
    TAP_CHECK(METRICS_SERIES(g, "\xc3") == NULL);           /* cut sequence */
    TAP_CHECK(METRICS_SERIES(g, "\xc0\xaf") == NULL);       /* overlong "/" */
    TAP_CHECK(METRICS_SERIES(g, "\xed\xa0\x80") == NULL);   /* surrogate */
    TAP_EQ_INT(metrics_dropped(m), 6);
    metrics_set(a, -2);
    metrics_add(a, 0.5);
    TAP_CHECK(metrics_value(a) == -1.5);
    metrics_free(m);
}

static void test_gauge_values(void)
{
    struct metrics *m = NULL;
    TAP_EQ_INT(metrics_new(&m), 0);
    struct metrics_family *f = reg(m, METRICS_GAUGE, "temp", "", NULL, 0);
    struct metrics_series *s = metrics_series_get(f, NULL);
    metrics_set(s, -0.25);
    TAP_EQ_STR(render(m), "# TYPE temp gauge\ntemp -0.25\n");
    metrics_set(s, NAN);
    TAP_EQ_STR(render(m), "# TYPE temp gauge\ntemp NaN\n");
    metrics_set(s, INFINITY);
    TAP_EQ_STR(render(m), "# TYPE temp gauge\ntemp +Inf\n");
    metrics_set(s, -INFINITY);
    TAP_EQ_STR(render(m), "# TYPE temp gauge\ntemp -Inf\n");
    metrics_free(m);

    char out[32];
    TAP_EQ_STR(metrics_format_double(0.1, out), "0.1");
    TAP_EQ_STR(metrics_format_double(0.001, out), "0.001");
    TAP_EQ_STR(metrics_format_double(0, out), "0");
    TAP_EQ_STR(metrics_format_double(123456789012.0, out), "123456789012");
    TAP_EQ_STR(metrics_format_double(9007199254740992.0, out), "9007199254740992");
    TAP_EQ_STR(metrics_format_double(0.1 + 0.2, out), "0.30000000000000004");
    TAP_EQ_STR(metrics_format_double(1e300, out), "1e+300");
}

static void test_histogram(void)
{
    static const char *const labels[] = { "phase", NULL };
    static const double b[] = { 0.1, 1, 2.5 };
    struct metrics *m = NULL;
    struct mi_err err = MI_ERR_INIT;
    TAP_EQ_INT(metrics_new(&m), 0);
    struct metrics_desc d = { .name = "phase_seconds", .help = "Phase time.", .labels = labels,
                              .buckets = b, .nbuckets = 3, .max_series = 4 };
    struct metrics_family *f = NULL;
    TAP_EQ_INT(metrics_register(m, METRICS_HISTOGRAM, &d, &f, &err), 0);
    struct metrics_desc d2 = { .name = "total_seconds", .buckets = b, .nbuckets = 1 };
    struct metrics_family *g = NULL;
    TAP_EQ_INT(metrics_register(m, METRICS_HISTOGRAM, &d2, &g, &err), 0);

    struct metrics_series *dl = METRICS_SERIES(f, "download");
    metrics_observe(dl, 0.1);   /* on the bound: le="0.1" */
    metrics_observe(dl, 0.5);
    metrics_observe(dl, 5);     /* only +Inf */
    metrics_observe(dl, NAN);   /* ignored */
    metrics_observe(METRICS_SERIES(f, "load"), 0.002);
    metrics_set(dl, 3);         /* not a gauge: ignored */
    metrics_add(dl, 3);
    metrics_observe(metrics_series_get(g, NULL), 0.25);
    TAP_EQ_STR(render(m),
               "# HELP phase_seconds Phase time.\n"
               "# TYPE phase_seconds histogram\n"
               "phase_seconds_bucket{phase=\"download\",le=\"0.1\"} 1\n"
               "phase_seconds_bucket{phase=\"download\",le=\"1\"} 2\n"
               "phase_seconds_bucket{phase=\"download\",le=\"2.5\"} 2\n"
               "phase_seconds_bucket{phase=\"download\",le=\"+Inf\"} 3\n"
               "phase_seconds_sum{phase=\"download\"} 5.6\n"
               "phase_seconds_count{phase=\"download\"} 3\n"
               "phase_seconds_bucket{phase=\"load\",le=\"0.1\"} 1\n"
               "phase_seconds_bucket{phase=\"load\",le=\"1\"} 1\n"
               "phase_seconds_bucket{phase=\"load\",le=\"2.5\"} 1\n"
               "phase_seconds_bucket{phase=\"load\",le=\"+Inf\"} 1\n"
               "phase_seconds_sum{phase=\"load\"} 0.002\n"
               "phase_seconds_count{phase=\"load\"} 1\n"
               "# TYPE total_seconds histogram\n"
               "total_seconds_bucket{le=\"0.1\"} 0\n"
               "total_seconds_bucket{le=\"+Inf\"} 1\n"
               "total_seconds_sum 0.25\n"
               "total_seconds_count 1\n");
    metrics_free(m);
}

static void expect_invalid(struct metrics *m, enum metrics_type t, const struct metrics_desc *d,
                           int want, const char *what)
{
    struct mi_err err = MI_ERR_INIT;
    struct metrics_family *f = NULL;
    int rc = metrics_register(m, t, d, &f, &err);
    printf("# %s: %s\n", what, err.msg);
    TAP_EQ_INT(rc, want);
    TAP_CHECK(f == NULL && err.msg[0] != '\0');
}

static void test_validation(void)
{
    static const char *const dup[] = { "a", "a", NULL };
    static const char *const reserved[] = { "__name", NULL };
    static const char *const le[] = { "le", NULL };
    static const char *const bad[] = { "a-b", NULL };
    static const char *const nine[] = { "a", "b", "c", "d", "e", "f", "g", "h", "i", NULL };
    static const double desc[] = { 1, 0.5 };
    static const double nan_b[] = { NAN };
    struct metrics *m = NULL;
    TAP_EQ_INT(metrics_new(&m), 0);
    struct metrics_desc d = { .name = "ok:name_1" };
    struct mi_err err = MI_ERR_INIT;
    TAP_EQ_INT(metrics_register(m, METRICS_GAUGE, &d, NULL, &err), 0);
    expect_invalid(m, METRICS_GAUGE, &d, METRICS_E_EXISTS, "twice");
    expect_invalid(m, METRICS_GAUGE, &(struct metrics_desc){ .name = "1abc" }, METRICS_E_INVALID,
                   "digit first");
    expect_invalid(m, METRICS_GAUGE, &(struct metrics_desc){ .name = "a-b" }, METRICS_E_INVALID,
                   "dash");
    expect_invalid(m, METRICS_GAUGE, &(struct metrics_desc){ .name = "" }, METRICS_E_INVALID,
                   "empty");
    expect_invalid(m, METRICS_GAUGE, &(struct metrics_desc){ .name = NULL }, METRICS_E_INVALID,
                   "null");
    expect_invalid(m, METRICS_GAUGE, &(struct metrics_desc){ .name = "x", .labels = dup },
                   METRICS_E_INVALID, "duplicate label");
    expect_invalid(m, METRICS_GAUGE, &(struct metrics_desc){ .name = "x", .labels = reserved },
                   METRICS_E_INVALID, "reserved label");
    expect_invalid(m, METRICS_GAUGE, &(struct metrics_desc){ .name = "x", .labels = bad },
                   METRICS_E_INVALID, "bad label");
    expect_invalid(m, METRICS_GAUGE, &(struct metrics_desc){ .name = "x", .labels = nine },
                   METRICS_E_INVALID, "too many labels");
    expect_invalid(m, METRICS_HISTOGRAM, &(struct metrics_desc){ .name = "x", .labels = le },
                   METRICS_E_INVALID, "le on a histogram");
    expect_invalid(m, METRICS_HISTOGRAM,
                   &(struct metrics_desc){ .name = "x", .buckets = desc, .nbuckets = 2 },
                   METRICS_E_INVALID, "descending buckets");
    expect_invalid(m, METRICS_HISTOGRAM,
                   &(struct metrics_desc){ .name = "x", .buckets = nan_b, .nbuckets = 1 },
                   METRICS_E_INVALID, "NaN bucket");
    expect_invalid(m, METRICS_GAUGE,
                   &(struct metrics_desc){ .name = "x", .buckets = desc, .nbuckets = 1 },
                   METRICS_E_INVALID, "buckets on a gauge");
    expect_invalid(m, METRICS_GAUGE, &(struct metrics_desc){ .name = "x", .max_series = 2 },
                   METRICS_E_INVALID, "max_series without labels");
    expect_invalid(m, METRICS_GAUGE,
                   &(struct metrics_desc){ .name = "x", .labels = le, .max_series = 5000 },
                   METRICS_E_INVALID, "max_series too large");
    /* "le" is an ordinary label outside histograms. */
    TAP_EQ_INT(metrics_register(m, METRICS_GAUGE, &(struct metrics_desc){ .name = "y",
                                .labels = le }, NULL, &err), 0);
    metrics_free(m);
}

static void test_small_buffer(void)
{
    struct metrics *m = NULL;
    TAP_EQ_INT(metrics_new(&m), 0);
    reg(m, METRICS_COUNTER, "a_total", "A.", NULL, 0);
    const char *want = "# HELP a_total A.\n# TYPE a_total counter\na_total 0\n";
    char buf[128];
    size_t len = 0;
    TAP_EQ_INT(metrics_render(m, buf, 10, &len), -ENOSPC);
    TAP_EQ_INT(len, strlen(want));
    TAP_EQ_STR(buf, "# HELP a_");
    TAP_EQ_INT(metrics_render(m, buf, strlen(want), &len), -ENOSPC); /* no room for NUL */
    TAP_EQ_INT(metrics_render(m, buf, 0, &len), -ENOSPC);
    TAP_EQ_INT(metrics_render(m, buf, strlen(want) + 1, &len), 0);
    TAP_EQ_STR(buf, want);
    metrics_free(m);
}

static double forty_two(void *ctx)
{
    int *calls = ctx;
    (*calls)++;
    return 42;
}

static void collect_states(struct metrics_family *f, void *ctx)
{
    const int *n = ctx;
    metrics_set(METRICS_SERIES(f, "wait"), n[0]);
    metrics_set(METRICS_SERIES(f, "active"), n[1]);
}

static void test_hooks(void)
{
    static const char *const labels[] = { "state", NULL };
    int calls = 0;
    int counts[2] = { 7, 3 };
    struct metrics *m = NULL;
    struct mi_err err = MI_ERR_INIT;
    TAP_EQ_INT(metrics_new(&m), 0);
    TAP_EQ_INT(metrics_gauge_fn(m, "answer", "The answer.", forty_two, &calls, NULL, &err), 0);
    TAP_EQ_INT(metrics_gauge_fn(m, "nofn", "x", NULL, NULL, NULL, &err), METRICS_E_INVALID);
    struct metrics_family *q = reg(m, METRICS_GAUGE, "queue", "Q.", labels, 4);
    metrics_on_collect(q, collect_states, counts);
    TAP_EQ_STR(render(m), "# HELP answer The answer.\n# TYPE answer gauge\nanswer 42\n"
                          "# HELP queue Q.\n# TYPE queue gauge\n"
                          "queue{state=\"wait\"} 7\nqueue{state=\"active\"} 3\n");
    TAP_EQ_INT(calls, 1);
    counts[0] = 0;
    render(m);
    TAP_CHECK(strstr(text, "queue{state=\"wait\"} 0\n") != NULL);
    TAP_EQ_INT(calls, 2);
    metrics_on_collect(q, NULL, NULL);
    counts[0] = 5;
    render(m);
    TAP_CHECK(strstr(text, "queue{state=\"wait\"} 0\n") != NULL);
    metrics_free(m);
}

static double inflight(void *ctx)
{
    return 3;
}

static void test_worker(void)
{
    uv_loop_t loop;
    struct metrics *m = NULL;
    struct metrics_worker *mw = NULL;
    struct mi_err err = MI_ERR_INIT;
    TAP_EQ_INT(uv_loop_init(&loop), 0);
    struct mi_budget *b = budget_new(&loop, 1000);
    TAP_CHECK(budget_try_take(b, 100));
    struct metrics_worker_sources src = { .jobs_in_flight = inflight, .budget = b };
    TAP_EQ_INT(metrics_new(&m), 0);
    TAP_EQ_INT(metrics_register_worker(m, "1.2.3", &src, &mw, &err), 0);

    metrics_worker_job(mw, MW_OUTCOME_COMPLETED, MW_CLASS_NONE, 0.3, 2048);
    metrics_worker_job(mw, MW_OUTCOME_FAILED, MW_CLASS_PERMANENT, 0.02, 0);
    metrics_worker_job(mw, MW_OUTCOME__MAX, MW_CLASS_NONE, 1, 1); /* ignored */
    metrics_worker_phase(mw, MW_PHASE_DOWNLOAD, 0.2);
    metrics_worker_phase(mw, MW_PHASE__MAX, 0.2);                /* ignored */
    struct bmq_counts c = { .active = 2, .waiting = 5, .waiting_children = 1, .paused = true };
    metrics_worker_queue(mw, &c);
    metrics_worker_job(NULL, MW_OUTCOME_COMPLETED, MW_CLASS_NONE, 1, 1);

    const char *t = render(m);
    static const char *const want[] = {
        "# HELP media_ingest_jobs_total Jobs ended, by outcome and error class (http-apis.md A3).\n"
        "# TYPE media_ingest_jobs_total counter\n"
        "media_ingest_jobs_total{outcome=\"completed\",class=\"none\"} 1\n"
        "media_ingest_jobs_total{outcome=\"completed\",class=\"permanent\"} 0\n",
        "media_ingest_jobs_total{outcome=\"failed\",class=\"permanent\"} 1\n",
        "media_ingest_jobs_total{outcome=\"released\",class=\"transient\"} 0\n"
        "# HELP media_ingest_bytes_total Media bytes stored by completed jobs.\n"
        "# TYPE media_ingest_bytes_total counter\n"
        "media_ingest_bytes_total 2048\n",
        "media_ingest_job_duration_seconds_bucket{le=\"0.025\"} 1\n",
        "media_ingest_job_duration_seconds_bucket{le=\"+Inf\"} 2\n"
        "media_ingest_job_duration_seconds_sum 0.32\n"
        "media_ingest_job_duration_seconds_count 2\n",
        "media_ingest_phase_duration_seconds_bucket{phase=\"download\",le=\"0.25\"} 1\n",
        "media_ingest_phase_duration_seconds_count{phase=\"mark\"} 0\n",
        "media_ingest_jobs_in_flight 3\n",
        "media_ingest_claims_paused 0\n",
        "media_ingest_buffer_budget_bytes_in_use 100\n",
        "media_ingest_buffer_budget_bytes 1000\n",
        "media_ingest_buffer_budget_waiters 0\n",
        "media_ingest_queue_jobs{state=\"active\"} 2\n"
        "media_ingest_queue_jobs{state=\"completed\"} 0\n",
        "media_ingest_queue_jobs{state=\"waiting\"} 5\n"
        "media_ingest_queue_jobs{state=\"waiting-children\"} 1\n",
        "media_ingest_queue_paused 1\n",
        "media_ingest_build_info{version=\"1.2.3\"} 1\n",
        "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total ",
        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes ",
        "# TYPE process_open_fds gauge\nprocess_open_fds ",
        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        TAP_CHECK(strstr(t, want[i]) != NULL);
        if (!strstr(t, want[i]))
            printf("#   missing: %s\n", want[i]);
    }
    TAP_CHECK(strstr(t, "process_resident_memory_bytes 0\n") == NULL);
    TAP_CHECK(strstr(t, "media_ingest_queue_counts_timestamp_seconds 0\n") == NULL);
    TAP_EQ_INT(metrics_dropped(m), 0);

    struct metrics_worker *mw2 = NULL;
    TAP_EQ_INT(metrics_register_worker(m, "x", &src, &mw2, &err), METRICS_E_EXISTS);
    TAP_CHECK(mw2 == NULL);
    TAP_EQ_STR(metrics_worker_outcome_name(MW_OUTCOME_RETRIED), "retried");
    TAP_EQ_STR(metrics_worker_class_name(MW_CLASS_RATELIMIT), "ratelimit");
    TAP_EQ_STR(metrics_worker_phase_name(MW_PHASE_COMMIT), "commit");
    TAP_EQ_STR(metrics_worker_phase_name(MW_PHASE__MAX), "unknown");

    metrics_worker_free(mw);
    metrics_free(m);
    budget_release(b, 100);
    budget_free(b);
    uv_run(&loop, UV_RUN_DEFAULT);
    TAP_EQ_INT(uv_loop_close(&loop), 0);
}

int main(void)
{
    test_empty_and_counter();
    test_labels_and_escaping();
    test_bounds();
    test_gauge_values();
    test_histogram();
    test_validation();
    test_small_buffer();
    test_hooks();
    test_worker();
    return tap_done();
}
