/*
 * graph.c - the WhatsApp Cloud API media client: pure parsers and classification first,
 * then the lookup and the streamed download on top of the curl multi adapter (http.h).
 */
#include "graph.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "http.h"
#include "util.h"

#ifndef MI_VERSION
#define MI_VERSION "0.1.0"
#endif
#define GRAPH_UA_DEFAULT "media-ingest-worker/" MI_VERSION
#define GRAPH_MAX_URL 8192
#define GRAPH_MAX_USAGE_HDR (64 * 1024)
#define GRAPH_MAX_ERROR_BODY (64 * 1024)
#define GRAPH_LOOKUP_TIMEOUT_MS 30000
#define GRAPH_DOWNLOAD_TIMEOUT_MS 600000
/* A CDN connection that stops sending would otherwise hold its job until the deadline
 * above, long after the URL (5 minutes) has expired. */
#define GRAPH_DOWNLOAD_IDLE_MS 60000
#define GRAPH_MAX_REDIRECTS 3

/* ---- small helpers ------------------------------------------------------------------ */

static bool has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static bool is_http_url(const char *s)
{
    return has_prefix_ci(s, "http://") || has_prefix_ci(s, "https://");
}

/* True when @s has only printable ASCII (no CR/LF that could split a header). */
static bool is_printable(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return false;
    }
    return true;
}

/* Copy @src into @dst (size @cap), truncated, with control characters made blanks so a
 * server's text cannot forge log lines. */
static void copy_clean(char *dst, size_t cap, const char *src)
{
    size_t i = 0;

    for (; src && src[i] && i + 1 < cap; i++)
        dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? ' ' : src[i];
    dst[i] = '\0';
}

/* Overwrite and free a string that held a secret. */
static void free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* ---- sha256 ------------------------------------------------------------------------- */

/* Standard and URL-safe base64 alphabets both decode; anything else is -1. */
static int b64_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/**
 * graph_sha256_parse() - see graph.h.
 */
int graph_sha256_parse(const char *s, unsigned char out[32])
{
    size_t len = s ? strnlen(s, 65) : 0;

    if (len == 64) {
        for (size_t i = 0; i < 32; i++) {
            int hi = mi_hexval(s[2 * i]), lo = mi_hexval(s[2 * i + 1]);

            if (hi < 0 || lo < 0)
                return GRAPH_E_BADDATA;
            out[i] = (unsigned char)(hi << 4 | lo);
        }
        return 0;
    }
    /* 32 bytes are 43 base64 characters plus one '=' of padding. */
    if (len == 44 && s[43] != '=')
        return GRAPH_E_BADDATA;
    if (len != 43 && len != 44)
        return GRAPH_E_BADDATA;
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < 43; i++) {
        int v = b64_val(s[i]);

        if (v < 0)
            return GRAPH_E_BADDATA;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n < 32)
                out[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* The 2 bits left over must be zero in a canonical encoding. */
    if (n != 32 || acc != 0)
        return GRAPH_E_BADDATA;
    return 0;
}

/**
 * graph_sha256_hex() - see graph.h.
 */
void graph_sha256_hex(const unsigned char sha[32], char out[65])
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < 32; i++) {
        out[2 * i] = digits[sha[i] >> 4];
        out[2 * i + 1] = digits[sha[i] & 15];
    }
    out[64] = '\0';
}

/* ---- media JSON --------------------------------------------------------------------- */

/**
 * graph_media_deinit() - see graph.h.
 */
void graph_media_deinit(struct graph_media *m)
{
    if (!m)
        return;
    free_secret(m->url);
    free(m->mime_type);
    free(m->id);
    memset(m, 0, sizeof(*m));
    m->file_size = -1;
}

/**
 * graph_media_move() - see graph.h.
 */
void graph_media_move(struct graph_media *dst, struct graph_media *src)
{
    *dst = *src;
    memset(src, 0, sizeof(*src));
    src->file_size = -1;
}

/* file_size is a JSON number in some answers and a string of digits in others. */
static int parse_file_size(json_t *v, int64_t *out)
{
    if (!v || json_is_null(v)) {
        *out = -1;
        return 0;
    }
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);

        if (n < 0)
            return GRAPH_E_BADDATA;
        *out = (int64_t)n;
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        int64_t n = 0;

        if (len == 0 || len > 18)
            return GRAPH_E_BADDATA;
        for (size_t i = 0; i < len; i++) {
            if (s[i] < '0' || s[i] > '9')
                return GRAPH_E_BADDATA;
            n = n * 10 + (s[i] - '0');
        }
        *out = n;
        return 0;
    }
    return GRAPH_E_BADDATA;
}

static const char *get_string(json_t *root, const char *key, size_t max, size_t *len)
{
    json_t *v = json_object_get(root, key);

    if (!json_is_string(v))
        return NULL;
    *len = json_string_length(v);
    /* An embedded NUL would make the C string differ from the JSON one. */
    if (*len == 0 || *len > max || strlen(json_string_value(v)) != *len)
        return NULL;
    return json_string_value(v);
}

static int media_fields(struct graph_media *m, json_t *root, const char *expect_id,
                        struct mi_err *err)
{
    size_t len;
    const char *url = get_string(root, "url", GRAPH_MAX_URL, &len);
    const char *mime = get_string(root, "mime_type", GRAPH_MAX_MIME, &len);
    const char *sha = get_string(root, "sha256", 64, &len);
    const char *id = get_string(root, "id", GRAPH_MAX_ID, &len);

    if (!url || !is_http_url(url) || !is_printable(url) || strchr(url, ' '))
        return mi_err_set(err, GRAPH_E_BADDATA, "media answer: \"url\" is missing or is not "
                          "an http(s) URL");
    if (!mime || !is_printable(mime))
        return mi_err_set(err, GRAPH_E_BADDATA, "media answer: \"mime_type\" is missing or "
                          "not a printable string of at most %d bytes", GRAPH_MAX_MIME);
    if (!sha || graph_sha256_parse(sha, m->sha256) != 0)
        return mi_err_set(err, GRAPH_E_BADDATA, "media answer: \"sha256\" is missing or is "
                          "neither 64 hex digits nor 43/44 base64 characters");
    if (!id)
        return mi_err_set(err, GRAPH_E_BADDATA, "media answer: \"id\" is missing or not a "
                          "string");
    if (expect_id && strcmp(id, expect_id) != 0)
        return mi_err_set(err, GRAPH_E_BADDATA, "media answer is for id \"%.64s\", not for "
                          "the requested \"%.64s\"", is_printable(id) ? id : "?", expect_id);
    if (parse_file_size(json_object_get(root, "file_size"), &m->file_size) != 0)
        return mi_err_set(err, GRAPH_E_BADDATA, "media answer: \"file_size\" is neither a "
                          "non-negative integer nor a string of digits");
    graph_sha256_hex(m->sha256, m->sha256_hex);
    m->url = strdup(url);
    m->mime_type = strdup(mime);
    m->id = strdup(id);
    if (!m->url || !m->mime_type || !m->id)
        return mi_err_set(err, -ENOMEM, "media answer: out of memory");
    return 0;
}

/**
 * graph_media_parse() - see graph.h.
 */
int graph_media_parse(struct graph_media *m, const char *json, size_t len, const char *expect_id,
                      struct mi_err *err)
{
    json_error_t jerr;
    json_t *root;
    int r;

    memset(m, 0, sizeof(*m));
    m->file_size = -1;
    if (len > GRAPH_MAX_JSON)
        return mi_err_set(err, GRAPH_E_TOOBIG, "media answer is %zu bytes, more than the "
                          "%d allowed", len, GRAPH_MAX_JSON);
    root = json_loadb(json, len, 0, &jerr);
    /* jerr.text may quote the input, which holds the secret URL: report the position only. */
    if (!root)
        return mi_err_set(err, GRAPH_E_BADDATA, "media answer is not valid JSON (line %d, "
                          "column %d)", jerr.line, jerr.column);
    if (!json_is_object(root)) {
        json_decref(root);
        return mi_err_set(err, GRAPH_E_BADDATA, "media answer is not a JSON object");
    }
    r = media_fields(m, root, expect_id, err);
    json_decref(root);
    if (r != 0)
        graph_media_deinit(m);
    return r;
}

/* ---- Graph error JSON --------------------------------------------------------------- */

static int int_of(json_t *v)
{
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);

        return n > INT_MAX || n < INT_MIN ? -1 : (int)n;
    }
    return 0;
}

/**
 * graph_error_parse() - see graph.h.
 */
bool graph_error_parse(struct graph_error *e, const char *body, size_t len)
{
    json_t *root, *eo, *data;

    memset(e, 0, sizeof(*e));
    if (!body || len == 0 || len > GRAPH_MAX_JSON)
        return false;
    root = json_loadb(body, len, 0, NULL);
    eo = json_object_get(root, "error");
    if (!json_is_object(eo) || !json_is_integer(json_object_get(eo, "code"))) {
        json_decref(root);
        return false;
    }
    e->present = true;
    e->code = int_of(json_object_get(eo, "code"));
    e->subcode = int_of(json_object_get(eo, "error_subcode"));
    e->is_transient = json_is_true(json_object_get(eo, "is_transient"));
    copy_clean(e->type, sizeof(e->type), json_string_value(json_object_get(eo, "type")));
    copy_clean(e->message, sizeof(e->message),
               json_string_value(json_object_get(eo, "message")));
    copy_clean(e->fbtrace_id, sizeof(e->fbtrace_id),
               json_string_value(json_object_get(eo, "fbtrace_id")));
    /* error_data is an object on Cloud API errors but a JSON-encoded string elsewhere. */
    data = json_object_get(eo, "error_data");
    if (json_is_object(data))
        copy_clean(e->details, sizeof(e->details),
                   json_string_value(json_object_get(data, "details")));
    json_decref(root);
    return true;
}

/* ---- classification ----------------------------------------------------------------- */

static enum graph_class class_of_code(const struct graph_error *ge)
{
    int c = ge->code;

    if (c == 100)
        return GRAPH_PERMANENT;
    if (c == 0 || c == 190 || c == 3 || c == 10 || (c >= 200 && c <= 299))
        return GRAPH_CONFIG;
    if (c == 4 || c == 80007 || c == 130429)
        return GRAPH_RATELIMIT;
    if (c == 1 || c == 2 || c == 131000 || c == 131016 || ge->is_transient)
        return GRAPH_TRANSIENT;
    return GRAPH_OK;   /* unknown code: let the HTTP status decide */
}

static enum graph_class class_of_http(enum graph_op op, long http_status)
{
    if (op == GRAPH_OP_DOWNLOAD && (http_status == 401 || http_status == 403 ||
                                    http_status == 404 || http_status == 410))
        return GRAPH_REFRESH_URL;
    if (http_status == 429)
        return GRAPH_RATELIMIT;
    if (http_status >= 500 || http_status == 408 || http_status < 200)
        return GRAPH_TRANSIENT;
    if (http_status >= 300 && http_status < 400)
        return op == GRAPH_OP_LOOKUP ? GRAPH_CONFIG : GRAPH_TRANSIENT;
    /* A lookup refused without a Graph body: wrong base URL, version or a proxy's answer. */
    if (op == GRAPH_OP_LOOKUP && (http_status == 401 || http_status == 403 ||
                                  http_status == 404))
        return GRAPH_CONFIG;
    if (http_status >= 400)
        return GRAPH_PERMANENT;
    return GRAPH_TRANSIENT;   /* a 2xx that is not the expected 200 */
}

/**
 * graph_classify() - see graph.h.
 */
enum graph_class graph_classify(enum graph_op op, int status, long http_status,
                                const struct graph_error *ge)
{
    switch (status) {
    case 0:
        if (http_status >= 200 && http_status < 300 && (op == GRAPH_OP_DOWNLOAD ||
                                                         http_status == 200))
            return GRAPH_OK;
        break;
    case GRAPH_E_HTTP:
        break;
    case GRAPH_E_TOOBIG:
    case GRAPH_E_BADDATA:
        return GRAPH_PERMANENT;
    case HTTP_E_TOOBIG:
        /* A collected body over its cap: oversize when the answer was a success. */
        if (http_status >= 200 && http_status < 300)
            return GRAPH_PERMANENT;
        break;
    case GRAPH_E_NOTOKEN:
        return GRAPH_CONFIG;
    default:
        /* Transport errors, timeouts, cancellation, HTML, sha/length mismatches, -errno. */
        return GRAPH_TRANSIENT;
    }
    /* Meta: build logic on the Graph code, not on the HTTP status; but an expired download
     * URL must be refreshed whatever the body says. */
    if (ge && ge->present && !(op == GRAPH_OP_DOWNLOAD &&
                               class_of_http(op, http_status) == GRAPH_REFRESH_URL)) {
        enum graph_class c = class_of_code(ge);

        if (c != GRAPH_OK)
            return c;
    }
    return class_of_http(op, http_status);
}

/**
 * graph_class_name() - see graph.h.
 */
const char *graph_class_name(enum graph_class c)
{
    switch (c) {
    case GRAPH_OK:
        return "ok";
    case GRAPH_TRANSIENT:
        return "transient";
    case GRAPH_RATELIMIT:
        return "ratelimit";
    case GRAPH_CONFIG:
        return "config";
    case GRAPH_PERMANENT:
        return "permanent";
    case GRAPH_REFRESH_URL:
        return "refresh-url";
    }
    return "?";
}

/* ---- usage headers ------------------------------------------------------------------ */

static int pct_of(json_t *v)
{
    double d;

    if (json_is_integer(v))
        d = (double)json_integer_value(v);
    else if (json_is_real(v))
        d = json_real_value(v);
    else
        return 0;
    if (d < 0)
        return 0;
    return d > 1000 ? 1000 : (int)(d + 0.5);
}

static void usage_entry(struct graph_usage *u, json_t *o)
{
    static const char *const keys[] = { "call_count", "total_cputime", "total_time" };
    int eta;

    if (!json_is_object(o))
        return;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        int p = pct_of(json_object_get(o, keys[i]));

        if (p > u->max_pct)
            u->max_pct = p;
    }
    eta = pct_of(json_object_get(o, "estimated_time_to_regain_access"));
    if (eta > u->regain_minutes)
        u->regain_minutes = eta;
}

static json_t *load_header(const char *value)
{
    size_t len = value ? strnlen(value, GRAPH_MAX_USAGE_HDR + 1) : 0;

    if (len == 0 || len > GRAPH_MAX_USAGE_HDR)
        return NULL;
    return json_loadb(value, len, 0, NULL);
}

/**
 * graph_usage_parse() - see graph.h.
 */
void graph_usage_parse(struct graph_usage *u, const char *app_usage, const char *buc_usage,
                       int threshold_pct)
{
    json_t *app = load_header(app_usage), *buc = load_header(buc_usage);
    const char *key;
    json_t *list;
    int thr = threshold_pct > 0 ? threshold_pct : 80;

    memset(u, 0, sizeof(*u));
    usage_entry(u, app);
    /* {"<business id>": [{"type": ..., "call_count": %, ...}, ...], ...} */
    if (json_is_object(buc)) {
        json_object_foreach(buc, key, list) {
            size_t i;
            json_t *o;

            if (json_is_array(list)) {
                json_array_foreach(list, i, o)
                    usage_entry(u, o);
            }
        }
    }
    json_decref(app);
    json_decref(buc);
    if (u->regain_minutes > 0)
        u->delay_ms = (uint64_t)u->regain_minutes * 60000;
    else if (u->max_pct >= 100 || (thr >= 100 && u->max_pct >= thr))
        u->delay_ms = 60000;
    else if (u->max_pct >= thr)
        u->delay_ms = 1000 + (uint64_t)(u->max_pct - thr) * 59000 / (uint64_t)(100 - thr);
}

/* ---- lookup URL --------------------------------------------------------------------- */

/* Append @s percent-encoded (everything but RFC 3986 unreserved characters). */
static char *pct_encode(char *p, const char *s)
{
    static const char digits[] = "0123456789ABCDEF";

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = digits[c >> 4];
            *p++ = digits[c & 15];
        }
    }
    return p;
}

static bool valid_version(const char *v)
{
    size_t i = 1, digits = 0;

    if (!v || v[0] != 'v' || strlen(v) > 15)
        return false;
    for (; v[i] >= '0' && v[i] <= '9'; i++)
        digits++;
    if (!digits || v[i] != '.')
        return false;
    for (i++, digits = 0; v[i] >= '0' && v[i] <= '9'; i++)
        digits++;
    return digits && v[i] == '\0';
}

static int check_base(const char *base, size_t *len, struct mi_err *err)
{
    size_t n = base ? strnlen(base, GRAPH_MAX_URL + 1) : 0;

    if (n == 0 || n > GRAPH_MAX_URL || !is_http_url(base) || !is_printable(base) ||
        strpbrk(base, "?# "))
        return mi_err_set(err, GRAPH_E_BADDATA, "Graph base URL must be an http(s) URL "
                          "without query or spaces (WHATSAPP_GRAPH_URL)");
    while (n > 0 && base[n - 1] == '/')
        n--;
    *len = n;
    return 0;
}

/* The base URL (see check_base) and the "vNN.N" version, as both URL builders need them. */
static int check_endpoint(const char *base, const char *version, size_t *blen,
                          struct mi_err *err)
{
    int r = check_base(base, blen, err);
    if (r != 0)
        return r;
    if (!valid_version(version))
        return mi_err_set(err, GRAPH_E_BADDATA, "Graph API version must look like \"v25.0\" "
                          "(WHATSAPP_API_VERSION)");
    return 0;
}

/**
 * graph_lookup_url() - see graph.h.
 */
int graph_lookup_url(char **out, const char *base, const char *version, const char *media_id,
                     const char *phone_number_id, struct mi_err *err)
{
    size_t blen, idlen = media_id ? strnlen(media_id, GRAPH_MAX_ID + 1) : 0;
    size_t plen = phone_number_id ? strnlen(phone_number_id, GRAPH_MAX_ID + 1) : 0;
    char *s, *p;
    int r;

    *out = NULL;
    r = check_endpoint(base, version, &blen, err);
    if (r != 0)
        return r;
    if (idlen == 0 || idlen > GRAPH_MAX_ID || !strcmp(media_id, ".") || !strcmp(media_id, ".."))
        return mi_err_set(err, GRAPH_E_BADDATA, "media id must be 1..%d bytes and not a dot "
                          "segment", GRAPH_MAX_ID);
    if (plen > GRAPH_MAX_ID)
        return mi_err_set(err, GRAPH_E_BADDATA, "phone_number_id is longer than %d bytes",
                          GRAPH_MAX_ID);
    /* Worst case every id byte becomes %XX. */
    s = malloc(blen + 1 + strlen(version) + 1 + 3 * idlen + 17 + 3 * plen + 1);
    if (!s)
        return mi_err_set(err, -ENOMEM, "out of memory");
    memcpy(s, base, blen);
    p = s + blen;
    *p++ = '/';
    memcpy(p, version, strlen(version));
    p += strlen(version);
    *p++ = '/';
    p = pct_encode(p, media_id);
    if (plen > 0) {
        memcpy(p, "?phone_number_id=", 17);
        p = pct_encode(p + 17, phone_number_id);
    }
    *p = '\0';
    *out = s;
    return 0;
}

/* ---- the client --------------------------------------------------------------------- */

struct graph_client {
    struct mi_http *http;
    char *base;
    char *version;
    char *pnid;
    char *ua;
    char *token;                 /* when no getter is set; wiped on change and free */
    uint64_t lookup_timeout_ms;
    uint64_t download_timeout_ms;
    uint64_t download_idle_ms;
    int usage_thr;
    graph_token_fn token_fn;
    void *token_ctx;
};

struct graph_lookup {
    struct http_req *rq;
    char *media_id;
    int usage_thr;
    graph_lookup_cb cb;
    void *ctx;
};

struct graph_download {
    struct http_req *rq;
    graph_data_cb data_cb;
    graph_done_cb done_cb;
    void *ctx;
    uint64_t cap;                /* UINT64_MAX: none */
    int64_t expected_size;
    bool have_sha;
    bool checked;                /* the response headers were checked */
    unsigned char want_sha[32];
    EVP_MD_CTX *md;
    uint64_t bytes;
    int fail;                    /* our reason for aborting from the write callback */
    struct mi_err ferr;
};

/**
 * graph_client_new() - see graph.h.
 */
int graph_client_new(struct graph_client **cp, struct mi_http *http,
                     const struct graph_client_opts *o, struct mi_err *err)
{
    struct graph_client *c;
    const char *base = o && o->base_url ? o->base_url : GRAPH_DEFAULT_BASE;
    const char *version = o && o->version ? o->version : GRAPH_DEFAULT_VERSION;
    size_t blen;
    int r;

    *cp = NULL;
    r = check_endpoint(base, version, &blen, err);
    if (r != 0)
        return r;
    if (o && o->user_agent && (!*o->user_agent || !is_printable(o->user_agent)))
        return mi_err_set(err, GRAPH_E_BADDATA, "User-Agent must be printable and not empty");
    c = calloc(1, sizeof(*c));
    if (!c)
        return mi_err_set(err, -ENOMEM, "out of memory");
    c->http = http;
    c->base = strndup(base, blen);
    c->version = strdup(version);
    c->pnid = o && o->phone_number_id && *o->phone_number_id ? strdup(o->phone_number_id) : NULL;
    c->ua = strdup(o && o->user_agent ? o->user_agent : GRAPH_UA_DEFAULT);
    c->lookup_timeout_ms = o && o->lookup_timeout_ms ? o->lookup_timeout_ms
                                                     : GRAPH_LOOKUP_TIMEOUT_MS;
    c->download_timeout_ms = o && o->download_timeout_ms ? o->download_timeout_ms
                                                         : GRAPH_DOWNLOAD_TIMEOUT_MS;
    c->download_idle_ms = o && o->download_idle_ms ? o->download_idle_ms
                                                   : GRAPH_DOWNLOAD_IDLE_MS;
    c->usage_thr = o ? o->usage_threshold_pct : 0;
    c->token_fn = o ? o->token_fn : NULL;
    c->token_ctx = o ? o->token_ctx : NULL;
    if (!c->base || !c->version || !c->ua ||
        (o && o->phone_number_id && *o->phone_number_id && !c->pnid)) {
        graph_client_free(c);
        return mi_err_set(err, -ENOMEM, "out of memory");
    }
    *cp = c;
    return 0;
}

/**
 * graph_client_free() - see graph.h.
 */
void graph_client_free(struct graph_client *c)
{
    if (!c)
        return;
    free(c->base);
    free(c->version);
    free(c->pnid);
    free(c->ua);
    free_secret(c->token);
    free(c);
}

/**
 * graph_client_set_token() - see graph.h.
 */
int graph_client_set_token(struct graph_client *c, const char *token)
{
    char *t = NULL;

    if (token && *token) {
        t = strdup(token);
        if (!t)
            return -ENOMEM;
    }
    free_secret(c->token);
    c->token = t;
    return 0;
}

static const char *current_token(const struct graph_client *c)
{
    const char *t = c->token_fn ? c->token_fn(c->token_ctx) : c->token;

    return t && *t ? t : NULL;
}

/* The headers every Graph request carries; the token is copied by http and not kept here. */
static int add_common_headers(struct graph_client *c, struct http_req *rq, const char *accept,
                              struct mi_err *err)
{
    const char *tok = current_token(c);
    int r;

    if (!tok)
        return mi_err_set(err, GRAPH_E_NOTOKEN, "no WhatsApp access token is configured "
                          "(WHATSAPP_ACCESS_TOKEN or WHATSAPP_ACCESS_TOKEN_FILE)");
    r = http_req_header(rq, "User-Agent", c->ua);
    if (r == 0)
        r = http_req_header(rq, "Accept", accept);
    if (r == 0)
        r = http_req_bearer(rq, tok);
    if (r != 0)
        return mi_err_set(err, r, "cannot build the Graph request headers");
    return 0;
}

/* "HTTP 400, Graph code 100/33 (GraphMethodException): <message> [fbtrace ...]" */
static void describe_http_error(struct mi_err *e, int status, long http_status,
                                const struct graph_error *ge)
{
    if (ge->present)
        mi_err_set(e, status, "HTTP %ld, Graph error code %d/%d (%s): %s%s%s [fbtrace_id %s]",
                   http_status, ge->code, ge->subcode, ge->type, ge->message,
                   ge->details[0] ? " - " : "", ge->details, ge->fbtrace_id);
    else
        mi_err_set(e, status, "HTTP %ld without a Graph error body", http_status);
}

static void lookup_done(void *ctx, struct http_req *rq, int status, const struct mi_err *herr)
{
    struct graph_lookup *lk = ctx;
    struct graph_lookup_result res;
    struct mi_err e = MI_ERR_INIT;
    size_t len = 0;
    const char *body = http_req_body(rq, &len);

    memset(&res, 0, sizeof(res));
    res.media.file_size = -1;
    res.http_status = http_req_status(rq);
    res.status = status;
    graph_usage_parse(&res.usage, http_req_resp_header(rq, "x-app-usage"),
                      http_req_resp_header(rq, "x-business-use-case-usage"), lk->usage_thr);
    if (status == HTTP_E_TOOBIG && res.http_status != 200)
        status = 0;   /* an oversized error page: classify it by its status */
    if (status != 0) {
        mi_err_set(&e, status, "%s", herr ? herr->msg : "request failed");
    } else if (res.http_status == 200) {
        res.status = graph_media_parse(&res.media, body, len, lk->media_id, &e);
    } else {
        graph_error_parse(&res.gerr, body, len);
        res.status = GRAPH_E_HTTP;
        describe_http_error(&e, GRAPH_E_HTTP, res.http_status, &res.gerr);
    }
    res.cls = graph_classify(GRAPH_OP_LOOKUP, res.status, res.http_status, &res.gerr);
    if (res.cls != GRAPH_OK)
        mi_err_prefix(&e, "Graph media lookup of %.64s failed (%s): ", lk->media_id,
                      graph_class_name(res.cls));
    lk->cb(lk->ctx, &res, res.cls == GRAPH_OK ? NULL : &e);
    graph_media_deinit(&res.media);
    free(lk->media_id);
    free(lk);
}

/**
 * graph_lookup() - see graph.h.
 */
int graph_lookup(struct graph_client *c, const char *media_id, graph_lookup_cb cb, void *ctx,
                 struct graph_lookup **lkp, struct mi_err *err)
{
    struct graph_lookup *lk = NULL;
    struct http_req *rq = NULL;
    char *url = NULL;
    int r;

    if (lkp)
        *lkp = NULL;
    r = graph_lookup_url(&url, c->base, c->version, media_id, c->pnid, err);
    if (r != 0)
        return r;
    lk = calloc(1, sizeof(*lk));
    if (lk)
        lk->media_id = strdup(media_id);
    if (!lk || !lk->media_id) {
        r = mi_err_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    lk->usage_thr = c->usage_thr;
    lk->cb = cb;
    lk->ctx = ctx;
    r = http_req_new(&rq, c->http, HTTP_GET, url, err);
    if (r != 0)
        goto fail;
    r = add_common_headers(c, rq, "application/json", err);
    if (r != 0)
        goto fail;
    http_req_timeout(rq, c->lookup_timeout_ms);
    http_req_max_body(rq, GRAPH_MAX_JSON);
    lk->rq = rq;
    r = http_req_start(rq, lookup_done, lk, err);
    if (r != 0)
        goto fail;
    free(url);
    if (lkp)
        *lkp = lk;
    return 0;
fail:
    http_req_free(rq);
    if (lk)
        free(lk->media_id);
    free(lk);
    free(url);
    return r;
}

/**
 * graph_lookup_cancel() - see graph.h.
 */
void graph_lookup_cancel(struct graph_lookup *lk)
{
    if (lk)
        http_req_cancel(lk->rq);
}

/* ---- download ----------------------------------------------------------------------- */

static int dl_fail(struct graph_download *dl, int code, const char *msg, uint64_t a, uint64_t b)
{
    dl->fail = code;
    mi_err_set(&dl->ferr, code, "%s (%llu vs %llu bytes)", msg, (unsigned long long)a,
               (unsigned long long)b);
    return code;
}

/* Content-Type and Content-Length of a 200 answer, before any byte reaches the caller. */
static int dl_check_headers(struct graph_download *dl)
{
    const char *ct = http_req_resp_header(dl->rq, "content-type");
    const char *cl = http_req_resp_header(dl->rq, "content-length");
    long status = http_req_status(dl->rq);

    dl->checked = true;
    if (status != 200) {
        dl->fail = GRAPH_E_HTTP;
        return mi_err_set(&dl->ferr, GRAPH_E_HTTP, "unexpected HTTP %ld answer", status);
    }
    if (ct && has_prefix_ci(ct, "text/html")) {
        dl->fail = GRAPH_E_HTML;
        return mi_err_set(&dl->ferr, GRAPH_E_HTML, "the server answered an HTML page instead "
                          "of the media (a User-Agent or token problem?)");
    }
    if (cl) {
        char *end;
        unsigned long long n;

        errno = 0;
        n = strtoull(cl, &end, 10);
        if (errno == 0 && end != cl && *end == '\0') {
            if (n > dl->cap)
                return dl_fail(dl, GRAPH_E_TOOBIG, "Content-Length exceeds the size limit", n,
                               dl->cap);
            if (dl->expected_size >= 0 && n != (uint64_t)dl->expected_size)
                return dl_fail(dl, GRAPH_E_SIZE_MISMATCH, "Content-Length differs from the "
                               "announced file_size", n, (uint64_t)dl->expected_size);
        }
    }
    return 0;
}

static int dl_data(void *ctx, const char *buf, size_t len)
{
    struct graph_download *dl = ctx;
    int r;

    if (!dl->checked && dl_check_headers(dl) != 0)
        return -1;
    /* CURLOPT_MAXFILESIZE ignores bodies of unknown length: the cap is enforced here. */
    if (len > dl->cap - dl->bytes)
        return dl_fail(dl, GRAPH_E_TOOBIG, "the body exceeds the size limit", dl->bytes + len,
                       dl->cap);
    if (dl->expected_size >= 0 && dl->bytes + len > (uint64_t)dl->expected_size)
        return dl_fail(dl, GRAPH_E_SIZE_MISMATCH, "the body is longer than the announced "
                       "file_size", dl->bytes + len, (uint64_t)dl->expected_size);
    r = dl->data_cb(dl->ctx, buf, len);
    if (r == GRAPH_PAUSE)
        return HTTP_PAUSE;
    if (r != 0) {
        dl->fail = GRAPH_E_ABORTED;
        mi_err_set(&dl->ferr, GRAPH_E_ABORTED, "the consumer of the body stopped (%d)", r);
        return -1;
    }
    if (dl->md && EVP_DigestUpdate(dl->md, buf, len) != 1) {
        dl->fail = -EIO;
        mi_err_set(&dl->ferr, -EIO, "sha256 update failed");
        return -1;
    }
    dl->bytes += len;
    return 0;
}

/* A complete 200 answer: the announced length and digest must match. */
static void dl_verify(struct graph_download *dl, struct graph_download_result *res,
                      struct mi_err *e)
{
    if (!dl->checked && dl_check_headers(dl) != 0) {
        res->status = dl->fail;
        *e = dl->ferr;
    } else if (dl->expected_size >= 0 && dl->bytes != (uint64_t)dl->expected_size) {
        res->status = mi_err_set(e, GRAPH_E_SIZE_MISMATCH, "the body has %llu bytes, the "
                                 "announced file_size is %lld", (unsigned long long)dl->bytes,
                                 (long long)dl->expected_size);
    } else if (dl->have_sha && CRYPTO_memcmp(dl->want_sha, res->sha256, 32) != 0) {
        char want[65];

        graph_sha256_hex(dl->want_sha, want);
        res->status = mi_err_set(e, GRAPH_E_SHA_MISMATCH, "the body's sha256 %.16s... differs "
                                 "from the announced %.16s...", res->sha256_hex, want);
    }
}

static void dl_done(void *ctx, struct http_req *rq, int status, const struct mi_err *herr)
{
    struct graph_download *dl = ctx;
    struct graph_download_result res;
    struct mi_err e = MI_ERR_INIT;
    unsigned int mdlen = 0;
    size_t len = 0;
    const char *body = http_req_body(rq, &len);

    memset(&res, 0, sizeof(res));
    res.http_status = http_req_status(rq);
    res.bytes = dl->bytes;
    if (!dl->md || EVP_DigestFinal_ex(dl->md, res.sha256, &mdlen) != 1)
        memset(res.sha256, 0, sizeof(res.sha256));
    graph_sha256_hex(res.sha256, res.sha256_hex);
    if (status == HTTP_E_TOOBIG && (res.http_status < 200 || res.http_status >= 300))
        status = 0;   /* an oversized error page: classify it by its status */
    if (dl->fail) {
        res.status = dl->fail;
        e = dl->ferr;
    } else if (status != 0) {
        res.status = mi_err_set(&e, status, "%s", herr ? herr->msg : "request failed");
    } else if (res.http_status != 200) {
        graph_error_parse(&res.gerr, body, len);
        res.status = GRAPH_E_HTTP;
        describe_http_error(&e, GRAPH_E_HTTP, res.http_status, &res.gerr);
    } else {
        dl_verify(dl, &res, &e);
    }
    res.cls = graph_classify(GRAPH_OP_DOWNLOAD, res.status, res.http_status, &res.gerr);
    if (res.cls != GRAPH_OK)
        mi_err_prefix(&e, "media download failed (%s): ", graph_class_name(res.cls));
    dl->done_cb(dl->ctx, &res, res.cls == GRAPH_OK ? NULL : &e);
    EVP_MD_CTX_free(dl->md);
    free(dl);
}

static int dl_setup(struct graph_download *dl, uint64_t max_bytes, int64_t expected_size,
                    const unsigned char *expected_sha256)
{
    dl->cap = max_bytes ? max_bytes : UINT64_MAX;
    if (!max_bytes && expected_size >= 0)
        dl->cap = (uint64_t)expected_size;
    dl->expected_size = expected_size;
    if (!expected_sha256)
        return 0; /* the caller verifies (the storage writer does): hash each byte once */
    dl->have_sha = true;
    memcpy(dl->want_sha, expected_sha256, 32);
    dl->md = EVP_MD_CTX_new();
    if (!dl->md || EVP_DigestInit_ex(dl->md, EVP_sha256(), NULL) != 1)
        return -ENOMEM;
    return 0;
}

/**
 * graph_download() - see graph.h.
 */
int graph_download(struct graph_client *c, const char *url, uint64_t max_bytes,
                   int64_t expected_size, const unsigned char *expected_sha256,
                   graph_data_cb data_cb, graph_done_cb done_cb, void *ctx,
                   struct graph_download **dlp, struct mi_err *err)
{
    struct graph_download *dl;
    struct http_req *rq = NULL;
    int r;

    if (dlp)
        *dlp = NULL;
    if (!url || !is_http_url(url) || !is_printable(url))
        return mi_err_set(err, GRAPH_E_BADDATA, "media download URL is not an http(s) URL");
    if (max_bytes && expected_size >= 0 && (uint64_t)expected_size > max_bytes)
        return mi_err_set(err, GRAPH_E_TOOBIG, "announced file_size %lld exceeds the limit "
                          "of %llu bytes (MEDIA_MAX_BYTES)", (long long)expected_size,
                          (unsigned long long)max_bytes);
    dl = calloc(1, sizeof(*dl));
    if (!dl)
        return mi_err_set(err, -ENOMEM, "out of memory");
    dl->data_cb = data_cb;
    dl->done_cb = done_cb;
    dl->ctx = ctx;
    r = dl_setup(dl, max_bytes, expected_size, expected_sha256);
    if (r != 0) {
        mi_err_set(err, r, "cannot start sha256");
        goto fail;
    }
    r = http_req_new(&rq, c->http, HTTP_GET, url, err);
    if (r != 0)
        goto fail;
    r = add_common_headers(c, rq, "*/*", err);
    if (r != 0)
        goto fail;
    http_req_timeout(rq, c->download_timeout_ms);
    http_req_idle_timeout(rq, c->download_idle_ms);
    http_req_follow(rq, GRAPH_MAX_REDIRECTS);
    http_req_max_body(rq, GRAPH_MAX_ERROR_BODY);
    http_req_on_data(rq, dl_data, dl);
    dl->rq = rq;
    r = http_req_start(rq, dl_done, dl, err);
    if (r != 0)
        goto fail;
    if (dlp)
        *dlp = dl;
    return 0;
fail:
    http_req_free(rq);
    EVP_MD_CTX_free(dl->md);
    free(dl);
    return r;
}

/**
 * graph_download_resume() - see graph.h.
 */
void graph_download_resume(struct graph_download *dl)
{
    if (dl)
        http_req_unpause(dl->rq);
}

/**
 * graph_download_cancel() - see graph.h.
 */
void graph_download_cancel(struct graph_download *dl)
{
    if (dl)
        http_req_cancel(dl->rq);
}
