/*
 * objkey.c - object keys and stored URLs (see objkey.h).
 *
 * Validation is by whitelist: a key is accepted only when it has exactly the shape
 * objkey_build() produces. The checks for the classic tricks (dot segments, empty
 * segments, backslashes, percent-encoding, control bytes) come first anyway, so that
 * the message tells an operator what was wrong rather than only "not allowed".
 * Messages never echo the refused bytes: they may be control characters that would
 * corrupt a log line.
 */
#include "objkey.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

static bool id_char(enum objkey_id_kind kind, unsigned char c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
        c == '_' || c == '-')
        return true;
    return kind == OBJKEY_MEDIA_ID && c == '.';
}

static const char *id_name(enum objkey_id_kind kind)
{
    return kind == OBJKEY_MESSAGE_ID ? "messageId" : "providerMediaId";
}

/* Validate @len bytes of @id; @len may include NUL bytes, which are refused. */
static int id_check(enum objkey_id_kind kind, const char *id, size_t len, struct mi_err *err)
{
    size_t max = kind == OBJKEY_MESSAGE_ID ? OBJKEY_MESSAGE_ID_MAX : OBJKEY_MEDIA_ID_MAX;

    if (!id || len == 0)
        return mi_err_set(err, OBJKEY_E_INVALID, "%s is empty", id_name(kind));
    if (len > max)
        return mi_err_set(err, OBJKEY_E_INVALID, "%s is %zu bytes long; at most %zu are "
                          "allowed", id_name(kind), len, max);
    if (id[0] == '.')
        return mi_err_set(err, OBJKEY_E_INVALID, "%s must not start with '.'",
                          id_name(kind));
    for (size_t i = 0; i < len; i++) {
        if (!id_char(kind, (unsigned char)id[i]))
            return mi_err_set(err, OBJKEY_E_INVALID, "%s has a character not allowed at "
                              "byte %zu (allowed: A-Z a-z 0-9 _ -%s)", id_name(kind), i,
                              kind == OBJKEY_MEDIA_ID ? " ." : "");
    }
    return 0;
}

/**
 * objkey_validate_id() - see objkey.h.
 */
int objkey_validate_id(enum objkey_id_kind kind, const char *id, struct mi_err *err)
{
    return id_check(kind, id, id ? strlen(id) : 0, err);
}

/**
 * objkey_build() - see objkey.h.
 */
int objkey_build(const char *message_id, const char *media_id, char out[OBJKEY_BUF],
                 struct mi_err *err)
{
    static const char pfx[] = OBJKEY_PREFIX;
    size_t ml, dl, pl = sizeof(pfx) - 1;
    int r;

    out[0] = '\0';
    r = objkey_validate_id(OBJKEY_MESSAGE_ID, message_id, err);
    if (!r)
        r = objkey_validate_id(OBJKEY_MEDIA_ID, media_id, err);
    if (r)
        return r;
    ml = strlen(message_id);
    dl = strlen(media_id);
    /* Cannot happen with today's id limits; kept so a limit change cannot overflow. */
    if (pl + ml + 1 + dl > OBJKEY_MAX)
        return mi_err_set(err, OBJKEY_E_INVALID, "object key would exceed %d bytes",
                          OBJKEY_MAX);
    memcpy(out, pfx, pl);
    memcpy(out + pl, message_id, ml);
    out[pl + ml] = '/';
    memcpy(out + pl + ml + 1, media_id, dl);
    out[pl + ml + 1 + dl] = '\0';
    return 0;
}

/* The generic refusals, with a specific message each, before the shape check. */
static int key_tricks(const char *key, size_t len, struct mi_err *err)
{
    size_t seg = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];

        if (c == '\0')
            return mi_err_set(err, OBJKEY_E_INVALID, "object key has a NUL byte at %zu", i);
        if (c < 0x20 || c == 0x7f)
            return mi_err_set(err, OBJKEY_E_INVALID, "object key has a control character "
                              "at byte %zu", i);
        if (c == '\\')
            return mi_err_set(err, OBJKEY_E_INVALID, "object key has a backslash at byte "
                              "%zu", i);
        if (c == '%')
            return mi_err_set(err, OBJKEY_E_INVALID, "object key has '%%' at byte %zu; "
                              "percent-encoded keys are refused", i);
        if (c == '/' || i + 1 == len) {
            size_t end = c == '/' ? i : i + 1, n = end - seg;

            if (n == 0)
                return mi_err_set(err, OBJKEY_E_INVALID, "object key has an empty path "
                                  "segment at byte %zu", i);
            if ((n == 1 && key[seg] == '.') || (n == 2 && key[seg] == '.' && key[seg + 1] == '.'))
                return mi_err_set(err, OBJKEY_E_INVALID, "object key has a '.' or '..' "
                                  "segment at byte %zu", seg);
            seg = i + 1;
        }
    }
    if (len > 0 && key[len - 1] == '/')
        return mi_err_set(err, OBJKEY_E_INVALID, "object key ends with '/'");
    return 0;
}

/**
 * objkey_validate_n() - see objkey.h.
 */
int objkey_validate_n(const char *key, size_t len, struct mi_err *err)
{
    static const char pfx[] = OBJKEY_PREFIX;
    size_t pl = sizeof(pfx) - 1;
    const char *mid, *slash;
    int r;

    if (!key || len == 0)
        return mi_err_set(err, OBJKEY_E_INVALID, "object key is empty");
    if (len > OBJKEY_MAX)
        return mi_err_set(err, OBJKEY_E_INVALID, "object key is %zu bytes long; at most %d "
                          "are allowed", len, OBJKEY_MAX);
    if (key[0] == '/')
        return mi_err_set(err, OBJKEY_E_INVALID, "object key is an absolute path");
    r = key_tricks(key, len, err);
    if (r)
        return r;
    if (len <= pl || memcmp(key, pfx, pl) != 0)
        return mi_err_set(err, OBJKEY_E_INVALID, "object key is not under \"media/\"");
    mid = key + pl;
    slash = memchr(mid, '/', len - pl);
    if (!slash)
        return mi_err_set(err, OBJKEY_E_INVALID, "object key lacks the providerMediaId "
                          "segment (want media/{messageId}/{providerMediaId})");
    r = id_check(OBJKEY_MESSAGE_ID, mid, (size_t)(slash - mid), err);
    if (!r)
        r = id_check(OBJKEY_MEDIA_ID, slash + 1, len - (size_t)(slash + 1 - key), err);
    if (r)
        mi_err_prefix(err, "object key: ");
    return r;
}

/**
 * objkey_validate() - see objkey.h.
 */
int objkey_validate(const char *key, struct mi_err *err)
{
    return objkey_validate_n(key, key ? strnlen(key, OBJKEY_MAX + 1) : 0, err);
}

/**
 * objkey_scheme_name() - see objkey.h.
 */
const char *objkey_scheme_name(enum objkey_scheme scheme)
{
    switch (scheme) {
    case OBJKEY_S3:
        return "s3";
    case OBJKEY_R2:
        return "r2";
    default:
        return "file";
    }
}

static int bucket_check(const char *b, size_t len, struct mi_err *err)
{
    if (len == 0 || len > 255)
        return mi_err_set(err, OBJKEY_E_INVALID, "bucket name is empty or longer than 255 "
                          "bytes");
    if (b[0] == '.')
        return mi_err_set(err, OBJKEY_E_INVALID, "bucket name starts with '.'");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)b[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return mi_err_set(err, OBJKEY_E_INVALID, "bucket name has a character not "
                              "allowed at byte %zu", i);
    }
    return 0;
}

static int dir_check(const char *d, size_t len, struct mi_err *err)
{
    if (len == 0 || len > OBJKEY_WHERE_MAX)
        return mi_err_set(err, OBJKEY_E_INVALID, "directory is empty or longer than %d "
                          "bytes", OBJKEY_WHERE_MAX);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)d[i];

        if (c < 0x20 || c == 0x7f)
            return mi_err_set(err, OBJKEY_E_INVALID, "directory has a control character "
                              "at byte %zu", i);
    }
    return 0;
}

/**
 * objkey_url_format() - see objkey.h.
 */
int objkey_url_format(enum objkey_scheme scheme, const char *where, const char *key,
                      char *out, size_t outsz, struct mi_err *err)
{
    const char *sch = objkey_scheme_name(scheme);
    size_t wl = where ? strnlen(where, OBJKEY_WHERE_MAX + 1) : 0, sl, kl;
    int r;

    if (outsz)
        out[0] = '\0';
    r = objkey_validate(key, err);
    if (r)
        return r;
    if (scheme == OBJKEY_FILE) {
        /* "/srv/cache/" and "/srv/cache" name the same directory; "/" stays "/". */
        while (wl > 1 && where[wl - 1] == '/')
            wl--;
        r = dir_check(where, wl, err);
    } else {
        r = bucket_check(where ? where : "", wl, err);
    }
    if (r)
        return r;
    sl = strlen(sch);
    kl = strlen(key);
    if (wl == 1 && where[0] == '/')
        wl = 0;   /* root directory: "file:///media/..." */
    if (sl + 3 + wl + 1 + kl + 1 > outsz)
        return mi_err_set(err, -ENOSPC, "stored URL does not fit in %zu bytes", outsz);
    memcpy(out, sch, sl);
    memcpy(out + sl, "://", 3);
    memcpy(out + sl + 3, where, wl);
    out[sl + 3 + wl] = '/';
    memcpy(out + sl + 3 + wl + 1, key, kl + 1);
    return 0;
}

/**
 * objkey_url_parse() - see objkey.h.
 */
int objkey_url_parse(const char *url, struct objkey_url *out, struct mi_err *err)
{
    static const struct { const char *pfx; enum objkey_scheme s; } schemes[] = {
        { "s3://", OBJKEY_S3 }, { "r2://", OBJKEY_R2 }, { "file://", OBJKEY_FILE },
    };
    size_t len, pl = 0, wl, kl;
    const char *rest = NULL, *k;
    int r, slashes = 0;

    memset(out, 0, sizeof(*out));
    len = url ? strnlen(url, OBJKEY_WHERE_MAX + OBJKEY_BUF + 16) : 0;
    if (len == 0 || len > OBJKEY_WHERE_MAX + OBJKEY_BUF + 8)
        return mi_err_set(err, OBJKEY_E_INVALID, "stored URL is empty or too long");
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        pl = strlen(schemes[i].pfx);
        if (len > pl && !memcmp(url, schemes[i].pfx, pl)) {
            out->scheme = schemes[i].s;
            rest = url + pl;
            break;
        }
    }
    if (!rest)
        return mi_err_set(err, OBJKEY_E_INVALID, "stored URL does not start with s3://, "
                          "r2:// or file://");
    len -= pl;
    if (out->scheme == OBJKEY_FILE) {
        /* The key is the last three segments; everything before is the directory. */
        for (k = rest + len; k > rest; k--) {
            if (k[-1] == '/' && ++slashes == 3)
                break;
        }
        if (slashes < 3) {
            memset(out, 0, sizeof(*out));
            return mi_err_set(err, OBJKEY_E_INVALID, "stored URL has no directory before "
                              "media/{messageId}/{providerMediaId}");
        }
        wl = (size_t)(k - 1 - rest);
        /* "file:///media/1/x" is the key under the root directory. */
        r = wl == 0 ? 0 : dir_check(rest, wl, err);
        if (!r && wl == 0)
            wl = 1;
    } else {
        k = memchr(rest, '/', len);
        if (!k) {
            memset(out, 0, sizeof(*out));
            return mi_err_set(err, OBJKEY_E_INVALID, "stored URL has no key after the "
                              "bucket");
        }
        wl = (size_t)(k - rest);
        k++;
        r = bucket_check(rest, wl, err);
    }
    kl = len - (size_t)(k - rest);
    if (!r)
        r = objkey_validate_n(k, kl, err);
    if (r) {
        memset(out, 0, sizeof(*out));
        mi_err_prefix(err, "stored URL: ");
        return r;
    }
    memcpy(out->where, rest, wl);   /* wl == 1 with rest "/..." for the root directory */
    out->where[wl] = '\0';
    memcpy(out->key, k, kl);
    out->key[kl] = '\0';
    return 0;
}
