/*
 * metrics_worker.h - the worker's metric families, registered in one call.
 *
 * Wiring in the worker (a few lines):
 *
 *     struct metrics *reg;  struct metrics_worker *mw;
 *     struct metrics_worker_sources src = { .ctx = app, .jobs_in_flight = inflight_fn,
 *                                           .budget = app->budget };
 *     metrics_new(&reg);
 *     metrics_register_worker(reg, MI_VERSION, &src, &mw, &err);
 *     ...
 *     metrics_worker_phase(mw, MW_PHASE_DOWNLOAD, seconds);      per phase, when it ends
 *     metrics_worker_job(mw, MW_OUTCOME_COMPLETED, MW_CLASS_NONE, seconds, bytes);
 *     metrics_worker_queue(mw, &counts);                          after each bmq_counts()
 *
 * Every series of the fixed label sets is created at registration, so each renders as
 * 0 from the first scrape and no update ever allocates or compares strings.
 *
 * Families (all prefixed media_ingest_ except the process_* ones):
 *   jobs_total{outcome,class}            counter  jobs ended, by outcome and error class
 *   bytes_total                          counter  media bytes stored by completed jobs
 *   job_duration_seconds                 histogram claim to end of the handler
 *   phase_duration_seconds{phase}        histogram one handler phase
 *   jobs_in_flight                       gauge    (callback)
 *   buffer_budget_bytes_in_use           gauge    (callback, from struct mi_budget)
 *   buffer_budget_bytes                  gauge    (callback, MEDIA_BUFFER_BUDGET)
 *   buffer_budget_waiters                gauge    (callback)
 *   queue_jobs{state}                    gauge    BullMQ getJobCounts(), cached
 *   queue_paused                         gauge    1 when the queue is paused
 *   queue_counts_timestamp_seconds       gauge    when the counts above were read
 *   claims_paused                        gauge    1 while claiming is paused (bad token)
 *   build_info{version}                  gauge    always 1
 *   process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds,
 *   process_start_time_seconds           the usual process collector names
 */
#ifndef MI_METRICS_WORKER_H
#define MI_METRICS_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "bullmq.h"
#include "budget.h"
#include "err.h"
#include "metrics.h"

/* How a job ended (the label outcome). */
enum mw_outcome {
    MW_OUTCOME_COMPLETED = 0, /* "completed": wjob_complete() */
    MW_OUTCOME_FAILED,        /* "failed": failed for good (permanent, or attempts spent) */
    MW_OUTCOME_RETRIED,       /* "retried": failed this attempt, BullMQ retries it */
    MW_OUTCOME_RELEASED,      /* "released": given back without an attempt (wjob_release) */
    MW_OUTCOME__MAX
};

/* The error class of http-apis.md §A3 (the label class); NONE for success. */
enum mw_class {
    MW_CLASS_NONE = 0,  /* "none" */
    MW_CLASS_PERMANENT, /* "permanent" */
    MW_CLASS_CONFIG,    /* "config" */
    MW_CLASS_RATELIMIT, /* "ratelimit" */
    MW_CLASS_TRANSIENT, /* "transient" */
    MW_CLASS__MAX
};

/* The handler's phases (the label phase), in the order a job passes them. */
enum mw_phase {
    MW_PHASE_LOAD = 0, /* "load": read the Message row */
    MW_PHASE_LOOKUP,   /* "lookup": Graph media look-up */
    MW_PHASE_HEAD,     /* "head": is the object already stored? */
    MW_PHASE_DOWNLOAD, /* "download": download streamed into the storage writer */
    MW_PHASE_COMMIT,   /* "commit": make the object visible */
    MW_PHASE_MARK,     /* "mark": UPDATE "Message" */
    MW_PHASE__MAX
};

/* Where the scrape-time gauges come from; every member may be NULL/0. */
struct metrics_worker_sources {
    void *ctx;                              /* passed to the callbacks; borrowed */
    double (*jobs_in_flight)(void *ctx);    /* e.g. wloop_inflight() */
    double (*claims_paused)(void *ctx);     /* 1 while claiming is paused, else 0 */
    const struct mi_budget *budget;         /* borrowed; must outlive the registry */
};

struct metrics_worker;

/**
 * metrics_register_worker() - register the families above in @reg.
 * @version: the build_info version label (e.g. MI_VERSION); copied.
 * @src: copied; its pointers are borrowed and must outlive @reg.
 * @mwp: receives the handle for the update functions (free with metrics_worker_free
 * after, or together with, metrics_free(@reg)).
 * Return: 0; a metrics_register() error (e.g. METRICS_E_EXISTS when called twice on
 * one registry) with @err filled; -ENOMEM. After a failure @reg keeps the families
 * registered so far, whose hooks point at freed memory: metrics_free() it unrendered.
 */
int metrics_register_worker(struct metrics *reg, const char *version,
                            const struct metrics_worker_sources *src,
                            struct metrics_worker **mwp, struct mi_err *err) MI_MUSTCHECK;

/** metrics_worker_free() - free @mw (not the registry); NULL is a no-op. */
void metrics_worker_free(struct metrics_worker *mw);

/**
 * metrics_worker_job() - a job ended: count it in jobs_total{outcome,class}, observe
 * @seconds in job_duration_seconds, and add @bytes (stored bytes; 0 unless completed)
 * to bytes_total. Out-of-range enums are ignored. NULL @mw is a no-op.
 */
void metrics_worker_job(struct metrics_worker *mw, enum mw_outcome outcome, enum mw_class cls,
                        double seconds, uint64_t bytes);

/** metrics_worker_phase() - observe @seconds spent in @phase. NULL @mw is a no-op. */
void metrics_worker_phase(struct metrics_worker *mw, enum mw_phase phase, double seconds);

/**
 * metrics_worker_queue() - cache the queue's job counts (from bmq_counts()), stamped
 * with the wall clock. NULL @mw is a no-op.
 */
void metrics_worker_queue(struct metrics_worker *mw, const struct bmq_counts *c);

/** metrics_worker_outcome_name() / class_name() / phase_name() - the label values. */
const char *metrics_worker_outcome_name(enum mw_outcome o);
const char *metrics_worker_class_name(enum mw_class c);
const char *metrics_worker_phase_name(enum mw_phase p);

#endif
