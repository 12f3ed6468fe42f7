/*
 * metrics_worker.c - the worker's metric families (see metrics_worker.h).
 */
#include "metrics_worker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "util.h"

#define P "media_ingest_"

enum qstate { Q_ACTIVE, Q_COMPLETED, Q_DELAYED, Q_FAILED, Q_PRIORITIZED, Q_WAITING,
              Q_WAITING_CHILDREN, Q__MAX };

struct metrics_worker {
    struct metrics_worker_sources src;
    /* Every series resolved once, so updates are array indexing plus arithmetic. */
    struct metrics_series *jobs[MW_OUTCOME__MAX][MW_CLASS__MAX];
    struct metrics_series *bytes;
    struct metrics_series *job_duration;
    struct metrics_series *phase[MW_PHASE__MAX];
    struct metrics_series *queue[Q__MAX];
    struct metrics_series *queue_paused, *queue_stamp;
    struct metrics_series *cpu, *rss, *open_fds, *max_fds;
};

static const char *const outcome_names[MW_OUTCOME__MAX] = {
    "completed", "failed", "retried", "released",
};
static const char *const class_names[MW_CLASS__MAX] = {
    "none", "permanent", "config", "ratelimit", "transient",
};
static const char *const phase_names[MW_PHASE__MAX] = {
    "load", "lookup", "head", "download", "commit", "mark",
};
static const char *const queue_names[Q__MAX] = {
    "active", "completed", "delayed", "failed", "prioritized", "waiting", "waiting-children",
};

/* From a fast claim-and-skip (tens of ms) to a 100 MB document on a slow link. */
static const double job_buckets[] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                                      60, 120, 300, 600 };
/* Phases are shorter: a row look-up is around a millisecond. */
static const double phase_buckets[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5, 1, 2.5, 5, 10, 30, 60, 300 };

#define NB(a) (sizeof(a) / sizeof((a)[0]))

const char *metrics_worker_outcome_name(enum mw_outcome o)
{
    return (unsigned)o < MW_OUTCOME__MAX ? outcome_names[o] : "unknown";
}

const char *metrics_worker_class_name(enum mw_class c)
{
    return (unsigned)c < MW_CLASS__MAX ? class_names[c] : "unknown";
}

const char *metrics_worker_phase_name(enum mw_phase p)
{
    return (unsigned)p < MW_PHASE__MAX ? phase_names[p] : "unknown";
}

/* ---- scrape-time sources ---- */

static double src_inflight(void *ctx)
{
    const struct metrics_worker *mw = ctx;
    return mw->src.jobs_in_flight ? mw->src.jobs_in_flight(mw->src.ctx) : 0;
}

static double src_claims_paused(void *ctx)
{
    const struct metrics_worker *mw = ctx;
    return mw->src.claims_paused ? mw->src.claims_paused(mw->src.ctx) : 0;
}

static double src_budget_in_use(void *ctx)
{
    const struct metrics_worker *mw = ctx;
    return mw->src.budget ? (double)budget_in_use(mw->src.budget) : 0;
}

static double src_budget_total(void *ctx)
{
    const struct metrics_worker *mw = ctx;
    return mw->src.budget ? (double)budget_total(mw->src.budget) : 0;
}

static double src_budget_waiters(void *ctx)
{
    const struct metrics_worker *mw = ctx;
    return mw->src.budget ? (double)budget_waiting(mw->src.budget) : 0;
}

/* Read a small /proc file; the loop thread blocks for microseconds, once per scrape. */
static bool read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return true;
}

static double open_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    double n = 0;
    const struct dirent *e = readdir(d);
    while (e) {
        if (e->d_name[0] != '.')
            n++;
        e = readdir(d);
    }
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

static void collect_process(struct metrics_family *f, void *ctx)
{
    struct metrics_worker *mw = ctx;
    struct rusage ru;
    struct rlimit rl;
    char statm[128];
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        metrics_set(mw->cpu, (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                                 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    if (read_small("/proc/self/statm", statm, sizeof(statm))) {
        /* "size resident shared ...", in pages */
        const char *p = strchr(statm, ' ');
        int64_t pages = 0;
        char num[24];
        size_t n = p ? strcspn(p + 1, " \n") : 0;
        if (n > 0 && n < sizeof(num)) {
            memcpy(num, p + 1, n);
            num[n] = '\0';
            if (mi_parse_i64(num, 0, INT64_MAX / 65536, &pages))
                metrics_set(mw->rss, (double)pages * (double)sysconf(_SC_PAGESIZE));
        }
    }
    metrics_set(mw->open_fds, open_fd_count());
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        metrics_set(mw->max_fds, (double)rl.rlim_cur);
}

/* ---- registration ---- */

static int reg(struct metrics *r, enum metrics_type t, const char *name, const char *help,
               const char *const *labels, const double *b, size_t nb, size_t max,
               struct metrics_family **fp, struct mi_err *err)
{
    struct metrics_desc d = { .name = name, .help = help, .labels = labels, .buckets = b,
                              .nbuckets = nb, .max_series = max };
    return metrics_register(r, t, &d, fp, err);
}

static int fn(struct metrics *r, const char *name, const char *help, metrics_value_fn f,
              struct metrics_worker *mw, struct mi_err *err)
{
    return metrics_gauge_fn(r, name, help, f, mw, NULL, err);
}

/* The first series of an unlabelled family. */
static struct metrics_series *one(struct metrics_family *f)
{
    return metrics_series_get(f, NULL);
}

static int reg_jobs(struct metrics *r, struct metrics_worker *mw, struct mi_err *err)
{
    static const char *const jl[] = { "outcome", "class", NULL };
    static const char *const pl[] = { "phase", NULL };
    struct metrics_family *jobs, *bytes, *dur, *phase;
    int rc = reg(r, METRICS_COUNTER, P "jobs_total",
                 "Jobs ended, by outcome and error class (http-apis.md A3).", jl, NULL, 0,
                 MW_OUTCOME__MAX * MW_CLASS__MAX, &jobs, err);
    if (!rc)
        rc = reg(r, METRICS_COUNTER, P "bytes_total", "Media bytes stored by completed jobs.",
                 NULL, NULL, 0, 0, &bytes, err);
    if (!rc)
        rc = reg(r, METRICS_HISTOGRAM, P "job_duration_seconds",
                 "Time from claiming a job to its end.", NULL, job_buckets, NB(job_buckets), 0,
                 &dur, err);
    if (!rc)
        rc = reg(r, METRICS_HISTOGRAM, P "phase_duration_seconds",
                 "Time spent in one phase of the media handler.", pl, phase_buckets,
                 NB(phase_buckets), MW_PHASE__MAX, &phase, err);
    if (rc)
        return rc;
    for (int o = 0; o < MW_OUTCOME__MAX; o++) {
        for (int c = 0; c < MW_CLASS__MAX; c++) {
            mw->jobs[o][c] = METRICS_SERIES(jobs, outcome_names[o], class_names[c]);
            if (!mw->jobs[o][c])
                return mi_err_set(err, -ENOMEM, "out of memory");
        }
    }
    for (int p = 0; p < MW_PHASE__MAX; p++) {
        mw->phase[p] = METRICS_SERIES(phase, phase_names[p]);
        if (!mw->phase[p])
            return mi_err_set(err, -ENOMEM, "out of memory");
    }
    mw->bytes = one(bytes);
    mw->job_duration = one(dur);
    return 0;
}

static int reg_gauges(struct metrics *r, struct metrics_worker *mw, struct mi_err *err)
{
    int rc = fn(r, P "jobs_in_flight", "Jobs this process is working on.", src_inflight, mw,
                err);
    if (!rc)
        rc = fn(r, P "claims_paused", "1 while this process claims no jobs (e.g. bad token).",
                src_claims_paused, mw, err);
    if (!rc)
        rc = fn(r, P "buffer_budget_bytes_in_use", "Transfer buffer bytes taken from the budget.",
                src_budget_in_use, mw, err);
    if (!rc)
        rc = fn(r, P "buffer_budget_bytes", "The transfer buffer budget (MEDIA_BUFFER_BUDGET).",
                src_budget_total, mw, err);
    if (!rc)
        rc = fn(r, P "buffer_budget_waiters", "Transfers waiting for buffer budget.",
                src_budget_waiters, mw, err);
    return rc;
}

static int reg_queue(struct metrics *r, struct metrics_worker *mw, struct mi_err *err)
{
    static const char *const ql[] = { "state", NULL };
    struct metrics_family *q, *paused, *stamp;
    int rc = reg(r, METRICS_GAUGE, P "queue_jobs",
                 "Jobs in the BullMQ queue by state (getJobCounts), as last read.", ql, NULL, 0,
                 Q__MAX, &q, err);
    if (!rc)
        rc = reg(r, METRICS_GAUGE, P "queue_paused", "1 when the queue is paused, as last read.",
                 NULL, NULL, 0, 0, &paused, err);
    if (!rc)
        rc = reg(r, METRICS_GAUGE, P "queue_counts_timestamp_seconds",
                 "Unix time when the queue counts were read (0: never).", NULL, NULL, 0, 0,
                 &stamp, err);
    if (rc)
        return rc;
    for (int s = 0; s < Q__MAX; s++) {
        mw->queue[s] = METRICS_SERIES(q, queue_names[s]);
        if (!mw->queue[s])
            return mi_err_set(err, -ENOMEM, "out of memory");
    }
    mw->queue_paused = one(paused);
    mw->queue_stamp = one(stamp);
    return 0;
}

static int reg_process(struct metrics *r, struct metrics_worker *mw, const char *version,
                       struct mi_err *err)
{
    static const char *const vl[] = { "version", NULL };
    struct metrics_family *info, *cpu, *rss, *fds, *maxfds, *start;
    int rc = reg(r, METRICS_GAUGE, P "build_info", "The running version; always 1.", vl, NULL,
                 0, 1, &info, err);
    if (!rc)
        rc = reg(r, METRICS_COUNTER, "process_cpu_seconds_total",
                 "Total user and system CPU time spent in seconds.", NULL, NULL, 0, 0, &cpu,
                 err);
    if (!rc)
        rc = reg(r, METRICS_GAUGE, "process_resident_memory_bytes",
                 "Resident memory size in bytes.", NULL, NULL, 0, 0, &rss, err);
    if (!rc)
        rc = reg(r, METRICS_GAUGE, "process_open_fds", "Number of open file descriptors.",
                 NULL, NULL, 0, 0, &fds, err);
    if (!rc)
        rc = reg(r, METRICS_GAUGE, "process_max_fds", "Maximum number of open file descriptors.",
                 NULL, NULL, 0, 0, &maxfds, err);
    if (!rc)
        rc = reg(r, METRICS_GAUGE, "process_start_time_seconds",
                 "Start time of the process since unix epoch in seconds.", NULL, NULL, 0, 0,
                 &start, err);
    if (rc)
        return rc;
    metrics_set(METRICS_SERIES(info, version && *version ? version : "unknown"), 1);
    mw->cpu = one(cpu);
    mw->rss = one(rss);
    mw->open_fds = one(fds);
    mw->max_fds = one(maxfds);
    /* Registration happens at start-up: its time is the start time to a second. */
    metrics_set(one(start), (double)(mi_now_ms() / 1000));
    metrics_on_collect(cpu, collect_process, mw);
    return 0;
}

int metrics_register_worker(struct metrics *registry, const char *version,
                            const struct metrics_worker_sources *src,
                            struct metrics_worker **mwp, struct mi_err *err)
{
    struct metrics_worker *mw = calloc(1, sizeof(*mw));
    *mwp = NULL;
    if (!mw)
        return mi_err_set(err, -ENOMEM, "out of memory");
    if (src)
        mw->src = *src;
    int rc = reg_jobs(registry, mw, err);
    if (!rc)
        rc = reg_gauges(registry, mw, err);
    if (!rc)
        rc = reg_queue(registry, mw, err);
    if (!rc)
        rc = reg_process(registry, mw, version, err);
    if (rc) {
        /* Families already registered stay, with hooks pointing at @mw: the header tells
         * the caller to free the registry without rendering it. */
        free(mw);
        return rc;
    }
    *mwp = mw;
    return 0;
}

void metrics_worker_free(struct metrics_worker *mw)
{
    free(mw);
}

void metrics_worker_job(struct metrics_worker *mw, enum mw_outcome outcome, enum mw_class cls,
                        double seconds, uint64_t bytes)
{
    if (!mw || (unsigned)outcome >= MW_OUTCOME__MAX || (unsigned)cls >= MW_CLASS__MAX)
        return;
    metrics_inc(mw->jobs[outcome][cls]);
    metrics_observe(mw->job_duration, seconds);
    if (bytes)
        metrics_add(mw->bytes, (double)bytes);
}

void metrics_worker_phase(struct metrics_worker *mw, enum mw_phase phase, double seconds)
{
    if (!mw || (unsigned)phase >= MW_PHASE__MAX)
        return;
    metrics_observe(mw->phase[phase], seconds);
}

void metrics_worker_queue(struct metrics_worker *mw, const struct bmq_counts *c)
{
    if (!mw || !c)
        return;
    const int64_t v[Q__MAX] = { c->active, c->completed, c->delayed, c->failed, c->prioritized,
                                c->waiting, c->waiting_children };
    for (int s = 0; s < Q__MAX; s++)
        metrics_set(mw->queue[s], (double)v[s]);
    metrics_set(mw->queue_paused, c->paused ? 1 : 0);
    metrics_set(mw->queue_stamp, (double)mi_now_ms() / 1000.0);
}
