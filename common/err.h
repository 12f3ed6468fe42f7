/*
 * err.h - the project's error convention.
 *
 * Functions return int: 0 is success, a negative value is a system or fatal error
 * (-errno, -ENOMEM) that callers forward unchanged, and a positive value is a
 * documented condition of the module that the caller must handle. At boundaries with
 * external libraries the callee also fills a caller-provided struct mi_err with a
 * message a person can act on (libpq's, hiredis's or curl's text plus our context).
 */
#ifndef MI_ERR_H
#define MI_ERR_H

#include <stddef.h>

#define MI_ERR_MSG_MAX 256

struct mi_err {
    int code;                  /* 0 when no error was recorded */
    char msg[MI_ERR_MSG_MAX];  /* NUL-terminated, never contains secrets */
};

#define MI_ERR_INIT { 0, "" }

#if defined(__GNUC__)
#define MI_MUSTCHECK __attribute__((warn_unused_result))
#define MI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MI_MUSTCHECK
#define MI_PRINTF(a, b)
#endif

/**
 * mi_err_set() - record an error.
 * @err: may be NULL (then nothing is recorded).
 * @code: the code to record and return.
 * Return: @code, so callers can write `return mi_err_set(err, -EIO, "...")`.
 */
int mi_err_set(struct mi_err *err, int code, const char *fmt, ...) MI_PRINTF(3, 4);

/** mi_err_clear() - reset @err to "no error"; NULL is allowed. */
void mi_err_clear(struct mi_err *err);

/**
 * mi_err_prefix() - prepend context ("s3 UploadPart: ") to an existing message.
 * Keeps the code. Truncates silently at MI_ERR_MSG_MAX.
 */
void mi_err_prefix(struct mi_err *err, const char *fmt, ...) MI_PRINTF(2, 3);

#endif
