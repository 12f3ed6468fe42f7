/*
 * metrics.c - the Prometheus registry and its text renderer (see metrics.h).
 *
 * Layout: a registry is an array of families in registration order; a family owns a
 * fixed array of max_series series pointers, filled in first-seen order. A series is
 * one allocation holding its numbers, its histogram buckets and copies of its label
 * values, so a look-up that finds it touches no allocator.
 */
#include "metrics.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_SERIES 64

struct metrics_series {
    struct metrics_family *fam;
    double value;                          /* counter or gauge */
    double sum;                            /* histogram */
    uint64_t count;                        /* histogram */
    const char *values[METRICS_LABELS_MAX]; /* point into the tail of this allocation */
    uint64_t buckets[];                    /* histogram: per bucket (not cumulative) */
};

struct metrics_family {
    struct metrics *m;
    enum metrics_type type;
    char name[METRICS_NAME_MAX + 1];
    char *help;                            /* new, never NULL */
    size_t nlabels;
    char labels[METRICS_LABELS_MAX][METRICS_NAME_MAX + 1];
    size_t nbounds;
    double bounds[METRICS_BUCKETS_MAX];
    size_t max_series, nseries;
    struct metrics_series **series;        /* max_series slots, nseries used */
    metrics_collect_fn collect;
    void *collect_ctx;
    metrics_value_fn value_fn;
    void *value_ctx;
};

struct metrics {
    struct metrics_family *fams[METRICS_FAMILIES_MAX];
    size_t nfams;
    uint64_t dropped;
};

int metrics_new(struct metrics **mp)
{
    *mp = calloc(1, sizeof(**mp));
    return *mp ? 0 : -ENOMEM;
}

static void family_free(struct metrics_family *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->nseries; i++)
        free(f->series[i]);
    free(f->series);
    free(f->help);
    free(f);
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nfams; i++)
        family_free(m->fams[i]);
    free(m);
}

/* ---- validation ---- */

static bool name_ok(const char *s, bool colon)
{
    size_t n = strlen(s);
    if (n == 0 || n > METRICS_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                     (colon && c == ':');
        bool digit = c >= '0' && c <= '9';
        if (!alpha && !(digit && i > 0))
            return false;
    }
    return true;
}

/* Well-formed UTF-8, without overlong forms or surrogates: what Prometheus accepts. */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned min;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, min = 0x80, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, min = 0x800, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, min = 0x10000, cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

static int check_labels(const struct metrics_desc *d, enum metrics_type type, size_t *np,
                        struct mi_err *err)
{
    size_t n = 0;
    for (; d->labels && d->labels[n]; n++) {
        const char *l = d->labels[n];
        if (n == METRICS_LABELS_MAX)
            return mi_err_set(err, METRICS_E_INVALID, "metric %s: more than %d labels",
                              d->name, METRICS_LABELS_MAX);
        /* "__" names are reserved for Prometheus itself; "le" is the histogram's. */
        if (!name_ok(l, false) || !strncmp(l, "__", 2) ||
            (type == METRICS_HISTOGRAM && !strcmp(l, "le")))
            return mi_err_set(err, METRICS_E_INVALID, "metric %s: invalid label name \"%.64s\"",
                              d->name, l);
        for (size_t k = 0; k < n; k++) {
            if (!strcmp(d->labels[k], l))
                return mi_err_set(err, METRICS_E_INVALID, "metric %s: label %s twice", d->name,
                                  l);
        }
    }
    *np = n;
    return 0;
}

static int check_buckets(const struct metrics_desc *d, enum metrics_type type, struct mi_err *err)
{
    if (type != METRICS_HISTOGRAM) {
        if (d->nbuckets)
            return mi_err_set(err, METRICS_E_INVALID, "metric %s: buckets on a non-histogram",
                              d->name);
        return 0;
    }
    if (d->nbuckets > METRICS_BUCKETS_MAX || (d->nbuckets && !d->buckets))
        return mi_err_set(err, METRICS_E_INVALID, "metric %s: bad bucket list (at most %d)",
                          d->name, METRICS_BUCKETS_MAX);
    for (size_t i = 0; i < d->nbuckets; i++) {
        if (!isfinite(d->buckets[i]) || (i > 0 && !(d->buckets[i] > d->buckets[i - 1])))
            return mi_err_set(err, METRICS_E_INVALID,
                              "metric %s: buckets must be finite and strictly ascending",
                              d->name);
    }
    return 0;
}

static int check_desc(const struct metrics *m, enum metrics_type type,
                      const struct metrics_desc *d, size_t *nlabels, struct mi_err *err)
{
    if (!d->name || !name_ok(d->name, true))
        return mi_err_set(err, METRICS_E_INVALID, "invalid metric name \"%.64s\"",
                          d->name ? d->name : "(null)");
    if (type != METRICS_COUNTER && type != METRICS_GAUGE && type != METRICS_HISTOGRAM)
        return mi_err_set(err, METRICS_E_INVALID, "metric %s: unknown type", d->name);
    if (d->help && strlen(d->help) > METRICS_HELP_MAX)
        return mi_err_set(err, METRICS_E_INVALID, "metric %s: help longer than %d bytes",
                          d->name, METRICS_HELP_MAX);
    int rc = check_labels(d, type, nlabels, err);
    if (rc)
        return rc;
    rc = check_buckets(d, type, err);
    if (rc)
        return rc;
    if (d->max_series > METRICS_SERIES_LIMIT || (*nlabels == 0 && d->max_series > 1))
        return mi_err_set(err, METRICS_E_INVALID, "metric %s: max_series out of range",
                          d->name);
    for (size_t i = 0; i < m->nfams; i++) {
        if (!strcmp(m->fams[i]->name, d->name))
            return mi_err_set(err, METRICS_E_EXISTS, "metric %s registered twice", d->name);
    }
    if (m->nfams == METRICS_FAMILIES_MAX)
        return mi_err_set(err, METRICS_E_FULL, "metric %s: more than %d families", d->name,
                          METRICS_FAMILIES_MAX);
    return 0;
}

/* ---- registration ---- */

static struct metrics_family *family_new(struct metrics *m, enum metrics_type type,
                                         const struct metrics_desc *d, size_t nlabels)
{
    struct metrics_family *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->m = m;
    f->type = type;
    snprintf(f->name, sizeof(f->name), "%s", d->name);
    f->help = strdup(d->help ? d->help : "");
    f->nlabels = nlabels;
    for (size_t i = 0; i < nlabels; i++)
        snprintf(f->labels[i], sizeof(f->labels[i]), "%s", d->labels[i]);
    f->nbounds = d->nbuckets;
    for (size_t i = 0; i < d->nbuckets; i++)
        f->bounds[i] = d->buckets[i];
    f->max_series = d->max_series ? d->max_series : (nlabels ? DEFAULT_MAX_SERIES : 1);
    f->series = calloc(f->max_series, sizeof(*f->series));
    if (!f->help || !f->series) {
        family_free(f);
        return NULL;
    }
    return f;
}

int metrics_register(struct metrics *m, enum metrics_type type, const struct metrics_desc *d,
                     struct metrics_family **fp, struct mi_err *err)
{
    size_t nlabels = 0;
    int rc = check_desc(m, type, d, &nlabels, err);
    if (rc)
        return rc;
    struct metrics_family *f = family_new(m, type, d, nlabels);
    if (!f)
        return mi_err_set(err, -ENOMEM, "out of memory");
    /* An unlabelled family always has its series, so it shows as 0 before any update. */
    if (nlabels == 0 && !metrics_series_get(f, NULL)) {
        family_free(f);
        return mi_err_set(err, -ENOMEM, "out of memory");
    }
    m->fams[m->nfams++] = f;
    if (fp)
        *fp = f;
    return 0;
}

int metrics_gauge_fn(struct metrics *m, const char *name, const char *help, metrics_value_fn fn,
                     void *ctx, struct metrics_family **fp, struct mi_err *err)
{
    struct metrics_desc d = { .name = name, .help = help };
    struct metrics_family *f = NULL;
    if (!fn)
        return mi_err_set(err, METRICS_E_INVALID, "metric %s: no value function",
                          name ? name : "(null)");
    int rc = metrics_register(m, METRICS_GAUGE, &d, &f, err);
    if (rc)
        return rc;
    f->value_fn = fn;
    f->value_ctx = ctx;
    if (fp)
        *fp = f;
    return 0;
}

void metrics_on_collect(struct metrics_family *f, metrics_collect_fn fn, void *ctx)
{
    f->collect = fn;
    f->collect_ctx = ctx;
}

/* ---- series ---- */

static struct metrics_series *series_find(const struct metrics_family *f,
                                          const char *const *values)
{
    for (size_t i = 0; i < f->nseries; i++) {
        struct metrics_series *s = f->series[i];
        size_t k = 0;
        while (k < f->nlabels && !strcmp(s->values[k], values[k]))
            k++;
        if (k == f->nlabels)
            return s;
    }
    return NULL;
}

static struct metrics_series *series_new(struct metrics_family *f, const char *const *values,
                                         const size_t *lens)
{
    size_t nb = f->type == METRICS_HISTOGRAM ? f->nbounds + 1 : 0;
    size_t size = sizeof(struct metrics_series) + nb * sizeof(uint64_t);
    for (size_t k = 0; k < f->nlabels; k++)
        size += lens[k] + 1;
    struct metrics_series *s = calloc(1, size);
    if (!s)
        return NULL;
    s->fam = f;
    char *p = (char *)&s->buckets[nb];
    for (size_t k = 0; k < f->nlabels; k++) {
        memcpy(p, values[k], lens[k] + 1);
        s->values[k] = p;
        p += lens[k] + 1;
    }
    return s;
}

struct metrics_series *metrics_series_get(struct metrics_family *f, const char *const *values)
{
    size_t lens[METRICS_LABELS_MAX];
    size_t n = 0;
    if (!f)
        return NULL;
    while (values && values[n] && n <= f->nlabels)
        n++;
    if (n != f->nlabels)
        return NULL;
    struct metrics_series *s = series_find(f, values);
    if (s)
        return s;
    for (size_t k = 0; k < n; k++) {
        lens[k] = strnlen(values[k], METRICS_VALUE_MAX + 1);
        if (lens[k] > METRICS_VALUE_MAX || !utf8_ok((const unsigned char *)values[k], lens[k])) {
            f->m->dropped++;
            return NULL;
        }
    }
    if (f->nseries == f->max_series) {
        f->m->dropped++;
        return NULL;
    }
    s = series_new(f, values, lens);
    if (!s) {
        f->m->dropped++;
        return NULL;
    }
    f->series[f->nseries++] = s;
    return s;
}

void metrics_inc(struct metrics_series *s)
{
    metrics_add(s, 1.0);
}

void metrics_add(struct metrics_series *s, double v)
{
    if (!s || s->fam->type == METRICS_HISTOGRAM)
        return;
    /* A counter that went down would read as a process restart to rate(). */
    if (s->fam->type == METRICS_COUNTER && !(v >= 0 && isfinite(v)))
        return;
    s->value += v;
}

void metrics_set(struct metrics_series *s, double v)
{
    if (!s || s->fam->type == METRICS_HISTOGRAM)
        return;
    s->value = v;
}

void metrics_observe(struct metrics_series *s, double v)
{
    if (!s || s->fam->type != METRICS_HISTOGRAM || isnan(v))
        return;
    const struct metrics_family *f = s->fam;
    size_t i = 0;
    /* Linear: at most METRICS_BUCKETS_MAX compares, cheaper than a branchy search here. */
    while (i < f->nbounds && v > f->bounds[i])
        i++;
    s->buckets[i]++;
    s->sum += v;
    s->count++;
}

double metrics_value(const struct metrics_series *s)
{
    if (!s || s->fam->type == METRICS_HISTOGRAM)
        return 0;
    return s->value;
}

uint64_t metrics_dropped(const struct metrics *m)
{
    return m->dropped;
}

/* ---- rendering ---- */

/* An snprintf-like writer: counts every byte, stores those that fit. */
struct out {
    char *buf;
    size_t cap;
    size_t len;
};

static void out_mem(struct out *o, const char *s, size_t n)
{
    if (o->len < o->cap) {
        size_t room = o->cap - o->len;
        memcpy(o->buf + o->len, s, n < room ? n : room);
    }
    o->len += n;
}

static void out_str(struct out *o, const char *s)
{
    out_mem(o, s, strlen(s));
}

/* Escape for HELP (backslash, newline) or label values (also the double quote). */
static void out_escaped(struct out *o, const char *s, bool quote)
{
    const char *run = s;
    for (; *s; s++) {
        const char *rep = NULL;
        if (*s == '\\')
            rep = "\\\\";
        else if (*s == '\n')
            rep = "\\n";
        else if (quote && *s == '"')
            rep = "\\\"";
        if (!rep)
            continue;
        out_mem(o, run, (size_t)(s - run));
        out_str(o, rep);
        run = s + 1;
    }
    out_mem(o, run, (size_t)(s - run));
}

char *metrics_format_double(double v, char out[32])
{
    if (isnan(v)) {
        snprintf(out, 32, "NaN");
    } else if (isinf(v)) {
        snprintf(out, 32, "%s", v > 0 ? "+Inf" : "-Inf");
    } else {
        /* %.15g is exact for every integer below 2^53 and reads nicer for decimals. */
        snprintf(out, 32, "%.15g", v);
        if (strtod(out, NULL) != v)
            snprintf(out, 32, "%.17g", v);
    }
    return out;
}

static void out_double(struct out *o, double v)
{
    char tmp[32];
    out_str(o, metrics_format_double(v, tmp));
}

static void out_u64(struct out *o, uint64_t v)
{
    char tmp[24];
    snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v);
    out_str(o, tmp);
}

/* name{l1="v1",...,le="x"}: @le may be NULL; no braces when there is no label at all. */
static void out_name_labels(struct out *o, const struct metrics_series *s, const char *suffix,
                            const char *le)
{
    const struct metrics_family *f = s->fam;
    out_str(o, f->name);
    out_str(o, suffix);
    if (f->nlabels == 0 && !le)
        return;
    out_str(o, "{");
    for (size_t k = 0; k < f->nlabels; k++) {
        if (k)
            out_str(o, ",");
        out_str(o, f->labels[k]);
        out_str(o, "=\"");
        out_escaped(o, s->values[k], true);
        out_str(o, "\"");
    }
    if (le) {
        if (f->nlabels)
            out_str(o, ",");
        out_str(o, "le=\"");
        out_str(o, le);
        out_str(o, "\"");
    }
    out_str(o, "}");
}

static void render_histogram(struct out *o, const struct metrics_series *s)
{
    const struct metrics_family *f = s->fam;
    uint64_t cum = 0;
    char le[32];
    for (size_t i = 0; i <= f->nbounds; i++) {
        cum += s->buckets[i];
        if (i < f->nbounds)
            metrics_format_double(f->bounds[i], le);
        else
            snprintf(le, sizeof(le), "+Inf");
        out_name_labels(o, s, "_bucket", le);
        out_str(o, " ");
        out_u64(o, cum);
        out_str(o, "\n");
    }
    out_name_labels(o, s, "_sum", NULL);
    out_str(o, " ");
    out_double(o, s->sum);
    out_str(o, "\n");
    out_name_labels(o, s, "_count", NULL);
    out_str(o, " ");
    out_u64(o, s->count);
    out_str(o, "\n");
}

static void render_family(struct out *o, const struct metrics_family *f)
{
    static const char *const type_names[] = { "counter", "gauge", "histogram" };
    if (f->help[0]) {
        out_str(o, "# HELP ");
        out_str(o, f->name);
        out_str(o, " ");
        out_escaped(o, f->help, false);
        out_str(o, "\n");
    }
    out_str(o, "# TYPE ");
    out_str(o, f->name);
    out_str(o, " ");
    out_str(o, type_names[f->type]);
    out_str(o, "\n");
    for (size_t i = 0; i < f->nseries; i++) {
        const struct metrics_series *s = f->series[i];
        if (f->type == METRICS_HISTOGRAM) {
            render_histogram(o, s);
            continue;
        }
        out_name_labels(o, s, "", NULL);
        out_str(o, " ");
        out_double(o, s->value);
        out_str(o, "\n");
    }
}

int metrics_render(struct metrics *m, char *buf, size_t cap, size_t *lenp)
{
    struct out o = { buf, cap, 0 };
    /* All hooks first: a hook may set series of families rendered before its own. */
    for (size_t i = 0; i < m->nfams; i++) {
        struct metrics_family *f = m->fams[i];
        if (f->collect)
            f->collect(f, f->collect_ctx);
        if (f->value_fn)
            metrics_set(f->series[0], f->value_fn(f->value_ctx));
    }
    for (size_t i = 0; i < m->nfams; i++)
        render_family(&o, m->fams[i]);
    if (lenp)
        *lenp = o.len;
    if (cap == 0)
        return -ENOSPC;
    if (o.len >= cap) {
        buf[cap - 1] = '\0';
        return -ENOSPC;
    }
    buf[o.len] = '\0';
    return 0;
}
