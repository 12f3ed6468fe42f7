/*
 * metrics.h - a small Prometheus registry: counters, gauges and histograms with a
 * fixed label set per family, rendered in the text exposition format 0.0.4.
 *
 * Families are registered once at start-up. A label combination ("series") is
 * looked up, and allocated the first time it is seen; later updates only touch
 * numbers, so the hot path never allocates. Keep the series pointer to skip even the
 * look-up:
 *
 *     static const char *const labels[] = { "outcome", "class", NULL };
 *     struct metrics_desc d = { .name = "jobs_total", .help = "Jobs ended.",
 *                               .labels = labels, .max_series = 32 };
 *     metrics_register(m, METRICS_COUNTER, &d, &jobs, &err);
 *     ...
 *     metrics_inc(METRICS_SERIES(jobs, "completed", "none"));
 *
 * Bounds: every family allows at most max_series label combinations; a look-up that
 * would exceed it (or a value that is too long or not UTF-8) returns NULL, counts in
 * metrics_dropped(), and every update function ignores a NULL series. So a caller
 * never has to check, and a bug that feeds unbounded values cannot grow memory.
 *
 * Scrape-time values: a family may carry a collect hook (metrics_on_collect) that
 * sets its series just before rendering, e.g. from a cached queue count, and
 * metrics_gauge_fn() registers an unlabelled gauge read from a callback.
 *
 * Not thread-safe: a registry belongs to one loop thread. The module does not log.
 */
#ifndef MI_METRICS_H
#define MI_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define METRICS_NAME_MAX 127      /* metric and label name bytes */
#define METRICS_HELP_MAX 1023     /* help text bytes */
#define METRICS_LABELS_MAX 8      /* label names per family */
#define METRICS_VALUE_MAX 128     /* label value bytes */
#define METRICS_BUCKETS_MAX 32    /* histogram bounds, besides +Inf */
#define METRICS_SERIES_LIMIT 4096 /* the largest max_series accepted */
#define METRICS_FAMILIES_MAX 256  /* families per registry */

/* Positive error codes of this module (see err.h). */
enum {
    METRICS_E_INVALID = 1,  /* a bad name, label, bucket list or limit */
    METRICS_E_EXISTS,       /* a family of that name is already registered */
    METRICS_E_FULL,         /* METRICS_FAMILIES_MAX reached */
};

enum metrics_type { METRICS_COUNTER = 0, METRICS_GAUGE, METRICS_HISTOGRAM };

struct metrics;
struct metrics_family;
struct metrics_series;

/* What a family is; all strings are copied by metrics_register(). */
struct metrics_desc {
    const char *name;           /* [a-zA-Z_:][a-zA-Z0-9_:]*, e.g. "media_ingest_jobs_total" */
    const char *help;           /* one line of text; may be NULL */
    const char *const *labels;  /* NULL-terminated label names, or NULL for none */
    const double *buckets;      /* histograms: finite upper bounds, strictly ascending */
    size_t nbuckets;            /* ... their number; +Inf is always added */
    size_t max_series;          /* label combinations allowed; 0: 1 without labels, else 64 */
};

/**
 * metrics_collect_fn - a family's scrape-time hook: set the family's series (with
 * metrics_set() and friends) from whatever the caller caches. Runs from
 * metrics_render(), before any text is written; it may touch other families too.
 */
typedef void (*metrics_collect_fn)(struct metrics_family *f, void *ctx);

/** metrics_value_fn - the value of a metrics_gauge_fn() gauge, read at scrape time. */
typedef double (*metrics_value_fn)(void *ctx);

/**
 * metrics_new() - make an empty registry.
 * Return: 0, or -ENOMEM.
 */
int metrics_new(struct metrics **mp) MI_MUSTCHECK;

/** metrics_free() - free @m with all families and series; NULL is a no-op. */
void metrics_free(struct metrics *m);

/**
 * metrics_register() - add a family of @type described by @d.
 * @fp: receives the family (owned by @m, valid until metrics_free); may be NULL.
 * An unlabelled family gets its one series at once, so it renders as 0 from the start.
 * Return: 0; METRICS_E_INVALID, METRICS_E_EXISTS or METRICS_E_FULL with @err filled;
 * -ENOMEM.
 */
int metrics_register(struct metrics *m, enum metrics_type type, const struct metrics_desc *d,
                     struct metrics_family **fp, struct mi_err *err) MI_MUSTCHECK;

/**
 * metrics_gauge_fn() - register an unlabelled gauge whose value is @fn(@ctx) at each
 * scrape. @ctx is borrowed and must outlive @m (or the last metrics_render()).
 * Return: as metrics_register().
 */
int metrics_gauge_fn(struct metrics *m, const char *name, const char *help, metrics_value_fn fn,
                     void *ctx, struct metrics_family **fp, struct mi_err *err) MI_MUSTCHECK;

/**
 * metrics_on_collect() - set @f's scrape-time hook (replacing any earlier one).
 * @ctx is borrowed. @fn NULL removes the hook.
 */
void metrics_on_collect(struct metrics_family *f, metrics_collect_fn fn, void *ctx);

/**
 * metrics_series_get() - the series of @f for the label @values (NULL-terminated, one
 * per label name, in registration order; NULL for an unlabelled family). Allocates
 * the first time a combination is seen, never afterwards.
 * Return: the series (owned by the registry, valid until metrics_free), or NULL when
 * the count of values is wrong, a value is longer than METRICS_VALUE_MAX or not UTF-8,
 * the family already has max_series combinations, or memory ran out. Every NULL but
 * the wrong count is added to metrics_dropped().
 */
struct metrics_series *metrics_series_get(struct metrics_family *f, const char *const *values);

/* METRICS_SERIES(f, "v1", "v2") - metrics_series_get() with the values inline. */
#define METRICS_SERIES(f, ...) metrics_series_get((f), (const char *const[]){ __VA_ARGS__, NULL })

/**
 * metrics_inc() / metrics_add() - add 1 / @v to a counter or gauge. On a counter a
 * negative or non-finite @v is ignored (counters only go up). NULL @s is a no-op.
 */
void metrics_inc(struct metrics_series *s);
void metrics_add(struct metrics_series *s, double v);

/**
 * metrics_set() - set a gauge to @v. Also allowed on a counter, for collect hooks that
 * mirror a total kept elsewhere (e.g. CPU seconds). Ignored on histograms and NULL.
 */
void metrics_set(struct metrics_series *s, double v);

/**
 * metrics_observe() - record @v in a histogram: the first bucket whose bound is >= @v,
 * the sum and the count. NaN is ignored, as are other types and NULL.
 */
void metrics_observe(struct metrics_series *s, double v);

/** metrics_value() - a counter's or gauge's current value (0 for NULL or a histogram). */
double metrics_value(const struct metrics_series *s);

/**
 * metrics_render() - run the collect hooks, then write every family as Prometheus text
 * format 0.0.4 into @buf: "# HELP" and "# TYPE" lines, series in first-seen order,
 * escaped label values, histograms as _bucket (cumulative, le="+Inf" last), _sum and
 * _count. Like snprintf(), writes at most @cap bytes, NUL-terminated when @cap > 0.
 * @lenp: receives the length of the whole text (without the NUL) even when it did not fit.
 * Return: 0 when the text and its NUL fit, -ENOSPC when @cap is too small (retry with
 * *@lenp + 1 bytes or more; hooks may add series in between).
 */
int metrics_render(struct metrics *m, char *buf, size_t cap, size_t *lenp);

/** metrics_dropped() - label combinations refused so far (limit, length, UTF-8, memory). */
uint64_t metrics_dropped(const struct metrics *m);

/**
 * metrics_format_double() - @v as the exposition format writes sample values: the
 * shortest of %.15g / %.17g that reads back exactly, "+Inf", "-Inf" or "NaN".
 * @out: at least 32 bytes. Return: @out.
 */
char *metrics_format_double(double v, char out[32]);

#endif
