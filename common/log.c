#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct mi_log {
    enum log_level level;
    enum log_format format;
    int fd;
};

static const char *const level_names[] = { "debug", "info", "warn", "error" };

int log_new(struct mi_log **logp, const char *level, const char *format, FILE *out,
            struct mi_err *err)
{
    enum log_level lv = LOG_INFO;
    enum log_format fm = LOG_LOGFMT;

    if (level && *level) {
        size_t i;
        for (i = 0; i < 4; i++)
            if (!strcmp(level, level_names[i]))
                break;
        if (i == 4)
            return mi_err_set(err, 1, "LOG_LEVEL=%s is not one of debug, info, warn, error",
                              level);
        lv = (enum log_level)i;
    }
    if (format && *format) {
        if (!strcmp(format, "logfmt"))
            fm = LOG_LOGFMT;
        else if (!strcmp(format, "json"))
            fm = LOG_JSON;
        else
            return mi_err_set(err, 1, "LOG_FORMAT=%s is not one of logfmt, json", format);
    }
    struct mi_log *log = calloc(1, sizeof(*log));
    if (!log)
        return -ENOMEM;
    log->level = lv;
    log->format = fm;
    log->fd = fileno(out);
    *logp = log;
    return 0;
}

void log_free(struct mi_log *log)
{
    free(log);
}

bool log_enabled(const struct mi_log *log, enum log_level level)
{
    return log && level >= log->level;
}

/*
 * Bytes kept back by put() for what a cut record still needs: the closing quote of a cut
 * value, the truncated=true field, the closing brace and the newline.
 */
#define LOG_TAIL 24

/* Append; once the record is full nothing more goes in (r->truncated). */
static void put(struct log_rec *r, const char *s, size_t n)
{
    size_t room = sizeof(r->buf) - LOG_TAIL - r->len;

    if (r->truncated)
        return;
    if (n > room) {
        r->truncated = true;
        /* an escape sequence or a number goes whole or not at all */
        if (n <= 8)
            return;
        n = room;
    }
    memcpy(r->buf + r->len, s, n);
    r->len += n;
}

/* Append into the LOG_TAIL reserve (only the closing parts of a cut record). */
static void put_tail(struct log_rec *r, const char *s, size_t n)
{
    memcpy(r->buf + r->len, s, n);
    r->len += n;
}

static void putc_(struct log_rec *r, char c)
{
    put(r, &c, 1);
}

static bool logfmt_needs_quotes(const char *s, size_t n)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f)
            return true;
    }
    return false;
}

/* Escape a value; control characters become \n, \t or \u00XX in both formats. */
static void put_escaped(struct log_rec *r, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[8];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            put(r, tmp, 2);         /* whole: a cut record never ends in a lone backslash */
        } else if (c == '\n') {
            put(r, "\\n", 2);
        } else if (c == '\t') {
            put(r, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof(tmp), "\\u%04x", c);
            put(r, tmp, 6);
        } else {
            putc_(r, (char)c);
        }
    }
}

static void put_key(struct log_rec *r, const char *key)
{
    if (r->log->format == LOG_JSON) {
        put(r, ",\"", 2);
        put_escaped(r, key, strlen(key));
        put(r, "\":", 2);
    } else {
        putc_(r, ' ');
        put(r, key, strlen(key));
        putc_(r, '=');
    }
}

static void put_strval(struct log_rec *r, const char *val, size_t n)
{
    if (r->log->format == LOG_JSON || logfmt_needs_quotes(val, n)) {
        putc_(r, '"');
        put_escaped(r, val, n);
        if (r->truncated)
            put_tail(r, "\"", 1);     /* a cut value is still a closed string */
        else
            putc_(r, '"');
    } else {
        put(r, val, n);
    }
}

/*
 * Start a field: false when the record is already full. A field whose key does not fit
 * is taken out whole (back to @mark), so a cut record ends with a complete field.
 */
static bool field_begin(struct log_rec *r, const char *key, size_t *mark)
{
    if (r->truncated)
        return false;
    *mark = r->len;
    put_key(r, key);
    if (r->truncated) {
        r->len = *mark;
        return false;
    }
    return true;
}

/* A field whose value could not go in whole is taken out (numbers). */
static void field_whole(struct log_rec *r, size_t mark)
{
    if (r->truncated)
        r->len = mark;
}

bool log_begin(struct log_rec *r, const struct mi_log *log, enum log_level level,
               const char *msg)
{
    if (!log_enabled(log, level))
        return false;
    r->log = log;
    r->len = 0;
    r->truncated = false;

    struct timespec ts;
    struct tm tm;
    char tbuf[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t tl = strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + tl, sizeof(tbuf) - tl, ".%03ldZ", ts.tv_nsec / 1000000);

    if (log->format == LOG_JSON) {
        put(r, "{\"ts\":\"", 7);
        put(r, tbuf, strlen(tbuf));
        put(r, "\",\"level\":\"", 11);
        put(r, level_names[level], strlen(level_names[level]));
        putc_(r, '"');
    } else {
        put(r, "ts=", 3);
        put(r, tbuf, strlen(tbuf));
        put(r, " level=", 7);
        put(r, level_names[level], strlen(level_names[level]));
    }
    log_str(r, "msg", msg);
    return true;
}

void log_strn(struct log_rec *r, const char *key, const char *val, size_t n)
{
    size_t mark;

    if (!field_begin(r, key, &mark))
        return;
    if (!val) {
        put(r, r->log->format == LOG_JSON ? "null" : "\"\"", r->log->format == LOG_JSON ? 4 : 2);
        field_whole(r, mark);
        return;
    }
    put_strval(r, val, n);
    /* an unquoted logfmt value may be cut; a quoted one was closed by put_strval */
}

void log_str(struct log_rec *r, const char *key, const char *val)
{
    log_strn(r, key, val, val ? strlen(val) : 0);
}

void log_int(struct log_rec *r, const char *key, long long val)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%lld", val);
    size_t mark;

    if (!field_begin(r, key, &mark))
        return;
    put(r, tmp, (size_t)n);
    field_whole(r, mark);
}

void log_dbl(struct log_rec *r, const char *key, double val)
{
    char tmp[48];
    int n = snprintf(tmp, sizeof(tmp), "%.6g", val);
    size_t mark;

    if (!field_begin(r, key, &mark))
        return;
    put(r, tmp, (size_t)n);
    field_whole(r, mark);
}

static void MI_PRINTF(3, 0) log_vfmt(struct log_rec *r, const char *key, const char *fmt,
                                     va_list ap)
{
    char tmp[1024];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(tmp))
        n = sizeof(tmp) - 1;
    log_strn(r, key, tmp, (size_t)n);
}

void log_fmt(struct log_rec *r, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vfmt(r, key, fmt, ap);
    va_end(ap);
}

void log_end(struct log_rec *r)
{
    /* LOG_TAIL keeps room for all of this: the line stays parseable when cut */
    if (r->truncated) {
        if (r->log->format == LOG_JSON)
            put_tail(r, ",\"truncated\":true", 17);
        else
            put_tail(r, " truncated=true", 15);
        r->truncated = false;
    }
    if (r->log->format == LOG_JSON)
        put_tail(r, "}", 1);
    put_tail(r, "\n", 1);
    size_t off = 0;
    while (off < r->len) {
        ssize_t w = write(r->log->fd, r->buf + off, r->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}

void log_msg(const struct mi_log *log, enum log_level level, const char *msg,
             const char *detail_fmt, ...)
{
    struct log_rec r;
    if (!log_begin(&r, log, level, msg))
        return;
    if (detail_fmt) {
        va_list ap;
        va_start(ap, detail_fmt);
        log_vfmt(&r, "detail", detail_fmt, ap);
        va_end(ap);
    }
    log_end(&r);
}
