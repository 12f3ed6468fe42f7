#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int mi_err_set(struct mi_err *err, int code, const char *fmt, ...)
{
    if (!err)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    err->code = code;
    return code;
}

void mi_err_clear(struct mi_err *err)
{
    if (!err)
        return;
    err->code = 0;
    err->msg[0] = '\0';
}

void mi_err_prefix(struct mi_err *err, const char *fmt, ...)
{
    if (!err)
        return;
    char head[MI_ERR_MSG_MAX];
    char old[MI_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof(head), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    size_t hl = strlen(head);
    size_t ol = strnlen(old, sizeof(old) - 1);
    if (hl + ol >= sizeof(err->msg))
        ol = sizeof(err->msg) - 1 - hl;
    memcpy(err->msg, head, hl);
    memcpy(err->msg + hl, old, ol);
    err->msg[hl + ol] = '\0';
}
