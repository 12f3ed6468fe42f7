#include "util.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int64_t mi_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mi_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void rand_bytes(void *buf, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t r = getrandom((char *)buf + off, n - off, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            /* getrandom() cannot fail on Linux >= 3.17 once the pool is ready; fall back. */
            for (; off < n; off++)
                ((unsigned char *)buf)[off] = (unsigned char)(clock() ^ (off * 131u));
            return;
        }
        off += (size_t)r;
    }
}

double mi_rand_unit(void)
{
    uint64_t v;
    rand_bytes(&v, sizeof(v));
    return (double)(v >> 11) / 9007199254740992.0; /* 53 random bits / 2^53 */
}

void mi_rand_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char buf[64];
    size_t done = 0;
    while (done < nbytes) {
        size_t n = nbytes - done < sizeof(buf) ? nbytes - done : sizeof(buf);
        rand_bytes(buf, n);
        for (size_t i = 0; i < n; i++) {
            out[2 * (done + i)] = hex[buf[i] >> 4];
            out[2 * (done + i) + 1] = hex[buf[i] & 15];
        }
        done += n;
    }
    out[2 * nbytes] = '\0';
}

int64_t mi_backoff_delay(const struct mi_backoff *b, int attempt, double rnd)
{
    double d;
    if (!b || b->type == MI_BACKOFF_NONE)
        return 0;
    if (attempt < 1)
        attempt = 1;
    if (b->type == MI_BACKOFF_FIXED)
        d = (double)b->delay_ms;
    else
        d = round(pow(2.0, attempt - 1) * (double)b->delay_ms);
    if (b->jitter > 0) {
        double j = b->jitter > 1 ? 1 : b->jitter;
        d = floor(rnd * d * j + d * (1 - j));
    }
    if (d > (double)INT64_MAX / 2)
        d = (double)INT64_MAX / 2;
    return (int64_t)d;
}

int64_t mi_retry_delay(int attempt, int64_t base_ms, int64_t max_ms, double rnd)
{
    int64_t d = base_ms;
    for (int i = 1; i < attempt && d < max_ms; i++)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    return d / 2 + (int64_t)(rnd * (double)(d - d / 2));
}

int mi_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool mi_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s)
        return false;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s || v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool mi_parse_size(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return false;
    uint64_t mult = 1;
    if (!strcmp(end, "") || !strcmp(end, "B"))
        mult = 1;
    else if (!strcmp(end, "k") || !strcmp(end, "K") || !strcmp(end, "KiB"))
        mult = 1024;
    else if (!strcmp(end, "M") || !strcmp(end, "MiB"))
        mult = 1024 * 1024;
    else if (!strcmp(end, "G") || !strcmp(end, "GiB"))
        mult = 1024ull * 1024 * 1024;
    else
        return false;
    if (v > UINT64_MAX / mult)
        return false;
    *out = v * mult;
    return true;
}

bool mi_parse_duration_ms(const char *s, int64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno || v < 0)
        return false;
    int64_t mult;
    if (!strcmp(end, "") || !strcmp(end, "ms"))
        mult = 1;
    else if (!strcmp(end, "s"))
        mult = 1000;
    else if (!strcmp(end, "m"))
        mult = 60 * 1000;
    else if (!strcmp(end, "h"))
        mult = 3600 * 1000;
    else if (!strcmp(end, "d"))
        mult = 86400 * 1000;
    else
        return false;
    if (v > INT64_MAX / mult)
        return false;
    *out = v * mult;
    return true;
}

/**
 * mi_flag_value() - see util.h.
 */
int mi_flag_value(int argc, char **argv, int *i, const char *name, const char **val,
                  struct mi_err *err)
{
    size_t n = strlen(name);
    const char *a = argv[*i];

    if (strncmp(a, name, n))
        return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n])
        return 0;
    if (*i + 1 >= argc) {
        mi_err_set(err, 2, "%s needs a value", name);
        return -1;
    }
    *i += 1;
    *val = argv[*i];
    return 1;
}
