/*
 * log.h - one line per event, logfmt or JSON, with typed fields.
 *
 * The logger is an object made by main() and passed down; library-like modules do
 * not log, they return errors. A record is built field by field on the stack, so
 * values are escaped correctly for either format:
 *
 *     struct log_rec r;
 *     if (log_begin(&r, log, LOG_INFO, "job completed")) {
 *         log_str(&r, "job", id);
 *         log_int(&r, "bytes", n);
 *         log_end(&r);
 *     }
 *
 * log_begin() returns false when the level is disabled, so arguments of the field
 * calls are not evaluated. Never log secrets: tokens, passwords and keys are not
 * passed to this module (use mi_url_redact() for URLs that may carry credentials).
 */
#ifndef MI_LOG_H
#define MI_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_LOGFMT = 0, LOG_JSON };

struct mi_log;

#define LOG_REC_MAX 2048

struct log_rec {
    const struct mi_log *log;
    size_t len;
    bool truncated;
    char buf[LOG_REC_MAX];
};

/**
 * log_new() - make a logger writing to @out (borrowed, usually stderr).
 * @level: "debug", "info", "warn" or "error"; NULL means info.
 * @format: "logfmt" or "json"; NULL means logfmt.
 * Return: 0, or a positive 1 with @err filled when a name is unknown; -ENOMEM.
 */
int log_new(struct mi_log **logp, const char *level, const char *format, FILE *out,
            struct mi_err *err) MI_MUSTCHECK;
void log_free(struct mi_log *log);
bool log_enabled(const struct mi_log *log, enum log_level level);

bool log_begin(struct log_rec *r, const struct mi_log *log, enum log_level level,
               const char *msg);
void log_str(struct log_rec *r, const char *key, const char *val);
void log_strn(struct log_rec *r, const char *key, const char *val, size_t n);
void log_int(struct log_rec *r, const char *key, long long val);
void log_dbl(struct log_rec *r, const char *key, double val);
void log_fmt(struct log_rec *r, const char *key, const char *fmt, ...) MI_PRINTF(3, 4);
/** log_end() - write the record as one line (one write(2), so lines never interleave). */
void log_end(struct log_rec *r);

/** log_msg() - a record with only a message and an optional "detail" field. */
void log_msg(const struct mi_log *log, enum log_level level, const char *msg,
             const char *detail_fmt, ...) MI_PRINTF(4, 5);

#endif
