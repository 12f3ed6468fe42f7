#include "bfutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "util.h"

/* Read exactly @n decimal digits at *@p; advance past them. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* Days from 1970-01-01 to @y-@m-@d in the proleptic Gregorian calendar (H. Hinnant's
 * days_from_civil), so no time zone database or TZ variable is involved. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int dm[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dm[m - 1];
}

static int parse_iso(const char *s, int64_t *out)
{
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0, ms = 0, zone_min = 0;
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
        !digits(&p, 2, &d))
        return 1;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return 1;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi))
            return 1;
        if (*p == ':') {
            p++;
            if (!digits(&p, 2, &sec))
                return 1;
            if (*p == '.' || *p == ',') {
                /* Fractions finer than a millisecond are dropped (timestamp(3) columns). */
                p++;
                int scale = 100, nd = 0;
                while (*p >= '0' && *p <= '9') {
                    ms += (*p - '0') * scale;
                    scale /= 10;
                    p++;
                    nd++;
                }
                if (!nd)
                    return 1;
            }
        }
        if (h > 23 || mi > 59 || sec > 59)
            return 1;
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, zh, zm;
            if (!digits(&p, 2, &zh))
                return 1;
            if (*p == ':')
                p++;
            if (!digits(&p, 2, &zm) || zh > 23 || zm > 59)
                return 1;
            zone_min = sign * (zh * 60 + zm);
        }
    }
    if (*p)
        return 1;
    int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - zone_min * 60;
    *out = t * 1000 + ms;
    return 0;
}

int bf_parse_time(const char *s, int64_t now_ms, int64_t *out, struct mi_err *err)
{
    if (!s || !*s)
        return mi_err_set(err, 2, "empty time; expected an ISO date such as 2024-05-01, a "
                          "date-time such as 2024-05-01T12:00:00Z, \"now\" or \"30d ago\"");
    if (!strcmp(s, "now")) {
        *out = now_ms;
        return 0;
    }
    if (!parse_iso(s, out))
        return 0;
    /* A duration, optionally followed by " ago". */
    char dur[32];
    size_t n = strlen(s);
    const char *ago = n > 4 ? s + n - 4 : NULL;
    if (ago && !strcmp(ago, " ago"))
        n -= 4;
    int64_t ms;
    if (n < sizeof(dur)) {
        memcpy(dur, s, n);
        dur[n] = '\0';
        if (mi_parse_duration_ms(dur, &ms) && ms <= now_ms) {
            *out = now_ms - ms;
            return 0;
        }
    }
    return mi_err_set(err, 2, "\"%.64s\" is not a time: expected an ISO date (2024-05-01), a "
                      "date-time (2024-05-01T12:00:00Z, UTC when no zone is given), \"now\" or "
                      "a duration before now (\"30d ago\", \"12h\")", s);
}

static bool all_in(const char *s, const char *extra)
{
    if (!*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  strchr(extra, c) != NULL;
        if (!ok)
            return false;
    }
    return true;
}

int bf_job_id(const char *mid, const char *pmid, char out[BF_JOB_ID_MAX])
{
    size_t len = strlen("media-") + strlen(mid) + 1 + strlen(pmid);
    if (len <= BF_JOB_ID_READABLE_MAX && all_in(mid, "._-") && all_in(pmid, "._")) {
        snprintf(out, BF_JOB_ID_MAX, "media-%s-%s", mid, pmid);
        return 0;
    }
    /* Length-prefixed, so ("ab", "c") and ("a", "bc") hash differently. */
    char head[24];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int hl = snprintf(head, sizeof(head), "%zu:", strlen(mid));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
              EVP_DigestUpdate(ctx, head, (size_t)hl) &&
              EVP_DigestUpdate(ctx, mid, strlen(mid)) &&
              EVP_DigestUpdate(ctx, pmid, strlen(pmid)) &&
              EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        out[0] = '\0';
        return -ENOMEM;
    }
    static const char hex[] = "0123456789abcdef";
    char *o = out + strlen("media_");
    memcpy(out, "media_", strlen("media_"));
    for (unsigned int i = 0; i < mdlen; i++) {
        *o++ = hex[md[i] >> 4];
        *o++ = hex[md[i] & 15];
    }
    *o = '\0';
    return 1;
}

bool bf_filters(char *out, size_t n, const char *since, const char *until, int64_t max_age_ms,
                bool include_expired)
{
    int r = snprintf(out, n, "since=%s;until=%s;max_age=%lld;include_expired=%d",
                     since ? since : "-", until ? until : "-", (long long)max_age_ms,
                     include_expired ? 1 : 0);
    return r >= 0 && (size_t)r < n;
}
