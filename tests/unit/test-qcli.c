/* media-queue's pure helpers: command lines, batch sizes, upload ages. */
#include "tap.h"

#include <stdint.h>

#include "qcli.h"
#include "util.h"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Parse a command line given as string literals; returns qcli_parse's result. */
static int parse(int argc, const char *const *argv, struct qcli_opts *o, struct mi_err *err)
{
    char *copy[16];
    for (int i = 0; i < argc && i < 16; i++)
        copy[i] = (char *)argv[i];
    *err = (struct mi_err)MI_ERR_INIT;
    return qcli_parse(argc, copy, o, err);
}

static void test_retry_failed(void)
{
    struct qcli_opts o;
    struct mi_err err;
    const char *a1[] = { "retry-failed" };
    TAP_EQ_INT(parse(ARGC(a1), a1, &o, &err), 0);
    TAP_EQ_INT(o.cmd, QCLI_RETRY_FAILED);
    TAP_EQ_INT(o.limit, -1);
    TAP_CHECK(!o.reset_attempts);
    const char *a2[] = { "retry-failed", "--limit", "25", "--reset-attempts" };
    TAP_EQ_INT(parse(ARGC(a2), a2, &o, &err), 0);
    TAP_EQ_INT(o.limit, 25);
    TAP_CHECK(o.reset_attempts);
    const char *a3[] = { "retry-failed", "--limit=7" };
    TAP_EQ_INT(parse(ARGC(a3), a3, &o, &err), 0);
    TAP_EQ_INT(o.limit, 7);
    const char *bad[][2] = { { "retry-failed", "--limit=0" }, { "retry-failed", "--limit=-3" },
                             { "retry-failed", "--limit=1e3" }, { "retry-failed", "--limit" },
                             { "retry-failed", "--older-than=1h" },
                             { "retry-failed", "extra" } };
    for (int i = 0; i < ARGC(bad); i++) {
        TAP_EQ_INT(parse(2, bad[i], &o, &err), QCLI_EXIT_USAGE);
        TAP_CHECK(err.msg[0] != '\0');
    }
    TAP_CHECK(strstr(err.msg, "extra") != NULL);
}

static void test_clean(void)
{
    struct qcli_opts o;
    struct mi_err err;
    const char *a1[] = { "clean", "completed", "--older-than", "7d" };
    TAP_EQ_INT(parse(ARGC(a1), a1, &o, &err), 0);
    TAP_EQ_INT(o.cmd, QCLI_CLEAN);
    TAP_CHECK(!o.failed);
    TAP_EQ_INT(o.older_than_ms, 7LL * 86400000);
    TAP_EQ_STR(o.older_than, "7d");
    TAP_EQ_INT(o.limit, -1);
    const char *a2[] = { "clean", "failed", "--limit", "10", "--older-than=90s" };
    TAP_EQ_INT(parse(ARGC(a2), a2, &o, &err), 0);
    TAP_CHECK(o.failed);
    TAP_EQ_INT(o.older_than_ms, 90000);
    TAP_EQ_INT(o.limit, 10);
    /* The age is required: cleaning everything must be asked for explicitly. */
    const char *a3[] = { "clean", "failed" };
    TAP_EQ_INT(parse(ARGC(a3), a3, &o, &err), QCLI_EXIT_USAGE);
    TAP_CHECK(strstr(err.msg, "--older-than") != NULL);
    const char *a4[] = { "clean", "active", "--older-than", "1h" };
    TAP_EQ_INT(parse(ARGC(a4), a4, &o, &err), QCLI_EXIT_USAGE);
    const char *a5[] = { "clean" };
    TAP_EQ_INT(parse(ARGC(a5), a5, &o, &err), QCLI_EXIT_USAGE);
    const char *a6[] = { "clean", "completed", "--older-than", "soon" };
    TAP_EQ_INT(parse(ARGC(a6), a6, &o, &err), QCLI_EXIT_USAGE);
    TAP_CHECK(strstr(err.msg, "soon") != NULL);
    const char *a7[] = { "clean", "completed", "--older-than", "500ms" };
    TAP_EQ_INT(parse(ARGC(a7), a7, &o, &err), QCLI_EXIT_USAGE);
    const char *a8[] = { "clean", "completed", "--older-than", "1h", "--reset-attempts" };
    TAP_EQ_INT(parse(ARGC(a8), a8, &o, &err), QCLI_EXIT_USAGE);
}

static void test_uploads_and_others(void)
{
    struct qcli_opts o;
    struct mi_err err;
    const char *a1[] = { "uploads", "list" };
    TAP_EQ_INT(parse(ARGC(a1), a1, &o, &err), 0);
    TAP_EQ_INT(o.cmd, QCLI_UPLOADS_LIST);
    TAP_EQ_INT(o.older_than_ms, -1);
    const char *a2[] = { "uploads", "list", "--older-than", "2h" };
    TAP_EQ_INT(parse(ARGC(a2), a2, &o, &err), 0);
    TAP_EQ_INT(o.older_than_ms, 7200000);
    const char *a3[] = { "uploads", "abort", "--older-than", "2h" };
    TAP_EQ_INT(parse(ARGC(a3), a3, &o, &err), 0);
    TAP_EQ_INT(o.cmd, QCLI_UPLOADS_ABORT);
    /* Without an age abort would hit the uploads of running workers. */
    const char *a4[] = { "uploads", "abort" };
    TAP_EQ_INT(parse(ARGC(a4), a4, &o, &err), QCLI_EXIT_USAGE);
    const char *a5[] = { "uploads", "abort", "--older-than", "2h", "--limit", "3" };
    TAP_EQ_INT(parse(ARGC(a5), a5, &o, &err), QCLI_EXIT_USAGE);
    const char *a6[] = { "uploads" };
    TAP_EQ_INT(parse(ARGC(a6), a6, &o, &err), QCLI_EXIT_USAGE);
    const char *a7[] = { "stats", "--json", "--watch", "5" };
    TAP_EQ_INT(parse(ARGC(a7), a7, &o, &err), 0);
    TAP_CHECK(o.json);
    TAP_EQ_INT(o.watch_ms, 5000);
    const char *a8[] = { "stats", "--watch", "0" };
    TAP_EQ_INT(parse(ARGC(a8), a8, &o, &err), QCLI_EXIT_USAGE);
    const char *a9[] = { "pause", "now" };
    TAP_EQ_INT(parse(ARGC(a9), a9, &o, &err), QCLI_EXIT_USAGE);
    const char *a10[] = { "resume" };
    TAP_EQ_INT(parse(ARGC(a10), a10, &o, &err), 0);
    TAP_EQ_INT(o.cmd, QCLI_RESUME);
    const char *a11[] = { "add", "1", "x", "--whatever" };
    TAP_EQ_INT(parse(ARGC(a11), a11, &o, &err), 0);
    TAP_EQ_INT(o.cmd, QCLI_ADD);
    const char *a12[] = { "retry" };
    TAP_EQ_INT(parse(ARGC(a12), a12, &o, &err), QCLI_EXIT_USAGE);
    TAP_CHECK(strstr(err.msg, "retry-failed") != NULL);
    TAP_EQ_INT(parse(0, a12, &o, &err), QCLI_EXIT_USAGE);
}

static void test_flag(void)
{
    char *argv[] = { "--limit", "--limitx", "--limit=", "--lim" };
    struct mi_err err = MI_ERR_INIT;
    const char *v = NULL;
    int i = 0;
    TAP_EQ_INT(mi_flag_value(4, argv, &i, "--limit", &v, &err), 1);
    TAP_EQ_STR(v, "--limitx");   /* a separate value is taken as given */
    TAP_EQ_INT(i, 1);
    TAP_EQ_INT(mi_flag_value(4, argv, &i, "--limit", &v, &err), 0);
    i = 2;
    TAP_EQ_INT(mi_flag_value(4, argv, &i, "--limit", &v, &err), 1);
    TAP_EQ_STR(v, "");
    i = 3;
    TAP_EQ_INT(mi_flag_value(4, argv, &i, "--limit", &v, &err), 0);
    char *last[] = { "--limit" };
    i = 0;
    TAP_EQ_INT(mi_flag_value(1, last, &i, "--limit", &v, &err), -1);
    TAP_CHECK(strstr(err.msg, "needs a value") != NULL);
}

static void test_batches(void)
{
    TAP_EQ_INT(qcli_next_batch(-1, 0, 1000), 1000);
    TAP_EQ_INT(qcli_next_batch(-1, 123456, 1000), 1000);
    TAP_EQ_INT(qcli_next_batch(2500, 0, 1000), 1000);
    TAP_EQ_INT(qcli_next_batch(2500, 2000, 1000), 500);
    TAP_EQ_INT(qcli_next_batch(2500, 2500, 1000), 0);
    TAP_EQ_INT(qcli_next_batch(1, 0, 1000), 1);
    TAP_EQ_INT(qcli_next_batch(5, 9, 1000), 0);
}

static void test_ages(void)
{
    char b[32];
    const time_t t0 = 1714564800; /* 2024-05-01T12:00:00Z */
    TAP_EQ_STR(qcli_format_age(0, b, sizeof(b)), "0s");
    TAP_EQ_STR(qcli_format_age(59, b, sizeof(b)), "59s");
    TAP_EQ_STR(qcli_format_age(60, b, sizeof(b)), "1m00s");
    TAP_EQ_STR(qcli_format_age(12 * 60 + 3, b, sizeof(b)), "12m03s");
    TAP_EQ_STR(qcli_format_age(3 * 3600 + 7 * 60 + 59, b, sizeof(b)), "3h07m");
    TAP_EQ_STR(qcli_format_age(2 * 86400 + 4 * 3600 + 1, b, sizeof(b)), "2d04h");
    TAP_EQ_STR(qcli_format_age(-1, b, sizeof(b)), "?");
    TAP_EQ_INT(qcli_upload_age_s(t0, t0 + 90), 90);
    TAP_EQ_INT(qcli_upload_age_s(t0, t0 - 5), 0);     /* server clock ahead of ours */
    TAP_EQ_INT(qcli_upload_age_s(0, t0), -1);         /* unparseable Initiated */
    /* Older than 1 h: strictly more than 3600 s at ms precision. */
    TAP_CHECK(!qcli_upload_is_old(t0, (int64_t)(t0 + 3600) * 1000, 3600000));
    TAP_CHECK(qcli_upload_is_old(t0, (int64_t)(t0 + 3600) * 1000 + 1, 3600000));
    TAP_CHECK(!qcli_upload_is_old(t0, (int64_t)t0 * 1000 + 500, 1000));
    TAP_CHECK(!qcli_upload_is_old(0, (int64_t)t0 * 1000, 1000));
}

int main(void)
{
    test_retry_failed();
    test_clean();
    test_uploads_and_others();
    test_flag();
    test_batches();
    test_ages();
    return tap_done();
}
