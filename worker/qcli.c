#include "qcli.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

/* --limit N: a positive whole number. */
static int parse_limit(const char *v, struct qcli_opts *o, struct mi_err *err)
{
    if (!mi_parse_i64(v, 1, INT64_C(1000000000000), &o->limit))
        return mi_err_set(err, QCLI_EXIT_USAGE, "--limit takes a positive whole number, not "
                          "\"%s\"", v);
    return 0;
}

/* --older-than DURATION: "90s", "30m", "12h", "7d" or milliseconds; at least 1 s. */
static int parse_older_than(const char *v, struct qcli_opts *o, struct mi_err *err)
{
    int64_t ms;
    if (!mi_parse_duration_ms(v, &ms) || ms < 1000)
        return mi_err_set(err, QCLI_EXIT_USAGE, "--older-than takes a duration of at least 1s "
                          "such as 90s, 30m, 12h or 7d, not \"%s\"", v);
    o->older_than_ms = ms;
    o->older_than = v;
    return 0;
}

static int unknown(const char *cmd, const char *arg, struct mi_err *err)
{
    return mi_err_set(err, QCLI_EXIT_USAGE, "%s: unexpected argument %s (see --help)", cmd,
                      arg);
}

/* Flags of retry-failed, clean and uploads, after the command word(s) at argv[first-1]. */
static int parse_flags(int argc, char **argv, int first, const char *cmd, struct qcli_opts *o,
                       struct mi_err *err)
{
    bool takes_limit = o->cmd == QCLI_RETRY_FAILED || o->cmd == QCLI_CLEAN;
    bool takes_age = o->cmd != QCLI_RETRY_FAILED;
    for (int i = first; i < argc; i++) {
        const char *v = NULL;
        int r = takes_limit ? mi_flag_value(argc, argv, &i, "--limit", &v, err) : 0;
        if (r < 0)
            return QCLI_EXIT_USAGE;
        if (r > 0) {
            if (parse_limit(v, o, err))
                return QCLI_EXIT_USAGE;
            continue;
        }
        r = takes_age ? mi_flag_value(argc, argv, &i, "--older-than", &v, err) : 0;
        if (r < 0)
            return QCLI_EXIT_USAGE;
        if (r > 0) {
            if (parse_older_than(v, o, err))
                return QCLI_EXIT_USAGE;
            continue;
        }
        if (o->cmd == QCLI_RETRY_FAILED && !strcmp(argv[i], "--reset-attempts")) {
            o->reset_attempts = true;
            continue;
        }
        return unknown(cmd, argv[i], err);
    }
    return 0;
}

static int parse_stats(int argc, char **argv, struct qcli_opts *o, struct mi_err *err)
{
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (!strcmp(argv[i], "--json")) {
            o->json = true;
            continue;
        }
        int r = mi_flag_value(argc, argv, &i, "--watch", &v, err);
        if (r < 0)
            return QCLI_EXIT_USAGE;
        if (r == 0)
            return unknown("stats", argv[i], err);
        int64_t s;
        if (!mi_parse_i64(v, 1, 86400, &s))
            return mi_err_set(err, QCLI_EXIT_USAGE, "--watch takes seconds (1..86400)");
        o->watch_ms = s * 1000;
    }
    return 0;
}

int qcli_parse(int argc, char **argv, struct qcli_opts *o, struct mi_err *err)
{
    memset(o, 0, sizeof(*o));
    o->limit = -1;
    o->older_than_ms = -1;
    if (argc < 1)
        return mi_err_set(err, QCLI_EXIT_USAGE, "expected a command: stats, add, pause, "
                          "resume, retry-failed, clean or uploads (see --help)");
    const char *cmd = argv[0];
    if (!strcmp(cmd, "stats")) {
        o->cmd = QCLI_STATS;
        return parse_stats(argc, argv, o, err);
    }
    if (!strcmp(cmd, "add")) {
        o->cmd = QCLI_ADD;
        return 0;
    }
    if (!strcmp(cmd, "pause") || !strcmp(cmd, "resume")) {
        o->cmd = strcmp(cmd, "pause") ? QCLI_RESUME : QCLI_PAUSE;
        if (argc > 1)
            return mi_err_set(err, QCLI_EXIT_USAGE, "%s takes no arguments", cmd);
        return 0;
    }
    if (!strcmp(cmd, "retry-failed")) {
        o->cmd = QCLI_RETRY_FAILED;
        return parse_flags(argc, argv, 1, cmd, o, err);
    }
    if (!strcmp(cmd, "clean")) {
        o->cmd = QCLI_CLEAN;
        if (argc < 2 || (strcmp(argv[1], "completed") && strcmp(argv[1], "failed")))
            return mi_err_set(err, QCLI_EXIT_USAGE, "clean needs the state to clean: "
                              "clean completed|failed --older-than DURATION");
        o->failed = !strcmp(argv[1], "failed");
        if (parse_flags(argc, argv, 2, cmd, o, err))
            return QCLI_EXIT_USAGE;
        /* No default age: removing every finished job at once must be asked for. */
        if (o->older_than_ms < 0)
            return mi_err_set(err, QCLI_EXIT_USAGE, "clean %s needs --older-than DURATION "
                              "(e.g. 7d)", argv[1]);
        return 0;
    }
    if (!strcmp(cmd, "uploads")) {
        if (argc < 2 || (strcmp(argv[1], "list") && strcmp(argv[1], "abort")))
            return mi_err_set(err, QCLI_EXIT_USAGE, "uploads needs list or abort: "
                              "uploads list [--older-than DURATION] | "
                              "uploads abort --older-than DURATION");
        o->cmd = strcmp(argv[1], "list") ? QCLI_UPLOADS_ABORT : QCLI_UPLOADS_LIST;
        if (parse_flags(argc, argv, 2, cmd, o, err))
            return QCLI_EXIT_USAGE;
        /* Uploads of running workers are open too: abort only what is old enough. */
        if (o->cmd == QCLI_UPLOADS_ABORT && o->older_than_ms < 0)
            return mi_err_set(err, QCLI_EXIT_USAGE, "uploads abort needs --older-than "
                              "DURATION, longer than any upload of a running worker takes "
                              "(e.g. 2h)");
        return 0;
    }
    return mi_err_set(err, QCLI_EXIT_USAGE, "unknown command \"%s\": expected stats, add, "
                      "pause, resume, retry-failed, clean or uploads (see --help)", cmd);
}

int64_t qcli_next_batch(int64_t limit, int64_t done, int64_t batch)
{
    if (limit < 0)
        return batch;
    if (done >= limit)
        return 0;
    return limit - done < batch ? limit - done : batch;
}

int64_t qcli_upload_age_s(time_t initiated_at, time_t now)
{
    if (initiated_at <= 0)
        return -1;
    return now > initiated_at ? (int64_t)(now - initiated_at) : 0;
}

bool qcli_upload_is_old(time_t initiated_at, int64_t now_ms, int64_t older_than_ms)
{
    if (initiated_at <= 0)
        return false;
    return now_ms - (int64_t)initiated_at * 1000 > older_than_ms;
}

char *qcli_format_age(int64_t s, char *buf, size_t n)
{
    if (s < 0)
        snprintf(buf, n, "?");
    else if (s < 60)
        snprintf(buf, n, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(buf, n, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
    else if (s < 86400)
        snprintf(buf, n, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
    else
        snprintf(buf, n, "%lldd%02lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
    return buf;
}
