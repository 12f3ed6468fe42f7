/*
 * s3.c - the s3 and r2 storage backends (storage_impl.h), on the loop's http adapter.
 *
 * Addressing: path style ({endpoint}/{bucket}/{key}) when an endpoint is configured,
 * virtual-hosted (https://{bucket}.s3.{region}.amazonaws.com/{key}) otherwise. R2 is the
 * same client with region "auto" and the account's endpoint.
 *
 * Signing: our own SigV4 (sigv4.h), which signs host, x-amz-date, x-amz-content-sha256
 * and the call's own headers, and builds the canonical URL that is sent (key bytes outside
 * A-Za-z0-9-_.~/ encoded with uppercase hex, query keys sorted, "uploads=" with its '=',
 * upload ids encoded). x-amz-content-sha256 is always sent (the body's hex sha256, or
 * UNSIGNED-PAYLOAD for parts when MEDIA_S3_PAYLOAD_HASH says so). Headers curl adds or
 * removes on its own (Expect, Accept) are not signed.
 *
 * Writers stream: accepted bytes go into a part buffer of MEDIA_PART_SIZE bytes taken
 * from the transfer budget. A body that fits one part is sent with PutObject at commit;
 * a longer one becomes a multipart upload whose full parts are uploaded (at most
 * S3_PART_INFLIGHT at a time per writer) while the next part fills. Every part except
 * the last has exactly the part size, which R2 requires. On a store that checks signed
 * bodies (see verify_probe), a body with an expected sha256 that fits one PutObject is
 * signed with it and not hashed by storage.c at all (digest_by_store): the store refuses
 * a mismatch. Any failure after CreateMultipartUpload ends with AbortMultipartUpload, so
 * nothing half-written stays.
 *
 * Streamed PutObject: a body announced above the part size, when the store checks it
 * (digest_by_store) or bodies may be sent unsigned (MEDIA_S3_PAYLOAD_HASH), goes out as one
 * PutObject whose request starts at open with the announced Content-Length and reads the
 * body through a ring of S3_STREAM_BUF bytes while it arrives. Its last byte is held back
 * until commit, after storage.c has checked the size (and, unless the store does, the
 * sha256): a store only keeps an object whose every byte arrived, so a mismatch (or an
 * abort) cancels the request and nothing is stored. It saves the store a multipart upload
 * (RGW spends a third more CPU per byte on one) and the requests of one; it is not retried
 * on its own, since its bytes are gone: the job downloads again.
 *
 * Requests are retried on transport errors, timeouts, 5xx, 429, SlowDown and
 * RequestTimeout with exponential backoff and full jitter.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <expat.h>
#include <openssl/evp.h>

#include "budget.h"
#include "http.h"
#include "s3.h"
#include "sigv4.h"
#include "storage_impl.h"
#include "util.h"

#define S3_PART_INFLIGHT 2                  /* parts in flight per writer (R2: keep it low) */
#define S3_XML_MAX (1024 * 1024)            /* cap of every XML answer */
#define S3_LIST_XML_MAX (4 * 1024 * 1024)   /* ListMultipartUploads pages (1000 entries) */
#define S3_BACKOFF_BASE_MS 100
#define S3_BACKOFF_CAP_MS 5000
#define S3_MAX_PARTS 10000
#define S3_URL_MAX 4096
#define S3_STREAM_BUF (1024 * 1024)         /* ring of a streamed PutObject */
#define S3_PUT_MAX (5ull * 1024 * 1024 * 1024 - 5ull * 1024 * 1024) /* R2's PutObject cap */
/* A streamed body arrives at its source's pace: its deadline adds the Graph download's
 * own (10 minutes) to the request timeout. */
#define S3_STREAM_SOURCE_MS (10 * 60 * 1000)

struct s3_writer;

/*
 * Whether the store refuses a body whose sha256 differs from the signed
 * x-amz-content-sha256: S3, R2 and Ceph RGW do (XAmzContentSHA256Mismatch), moto and
 * s3rver do not (http-apis.md B4, 6.4). Learnt once per process by a probe (see
 * verify_probe); until it answers yes, every body is hashed here.
 */
enum s3_verify { VERIFY_UNKNOWN = 0, VERIFY_PROBING, VERIFY_YES, VERIFY_NO };
#define S3_PROBE_RETRY_MS (60 * 1000)

/* The backend's state (st->priv). */
struct s3 {
    struct storage *st;
    char base[512];                 /* scheme://host[:port] (virtual hosts include the bucket) */
    char origin[512];               /* base without a trailing path */
    char host[300];                 /* host[:port] as sent in Host and signed */
    char region[64];
    bool path_style;
    bool unsigned_parts;            /* UploadPart sends UNSIGNED-PAYLOAD (MEDIA_S3_PAYLOAD_HASH) */
    enum s3_verify verify;          /* does the store check a signed body's sha256? */
    int64_t probe_after_ms;         /* monotonic: no probe before (after a failed one) */
    char probe_key[64];
    s3_verdict_cb verdict_cb;       /* told each probe answer, may be NULL */
    void *verdict_ctx;
    uint64_t streamed;              /* streamed PutObjects started (s3_streamed_puts) */
    struct sigv4_key_cache key_cache; /* the day's signing key (wiped in s3_fini) */
    uint64_t rnd;                   /* xorshift state for jitter */
};

/* --- small helpers ---------------------------------------------------------------- */


/**
 * s3_uri_encode() - see s3.h.
 */
int s3_uri_encode(const char *in, bool keep_slash, char *out, size_t cap)
{
    static const char hx[] = "0123456789ABCDEF";
    size_t o = 0;

    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        unsigned char c = *p;
        bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/');
        if (plain) {
            if (o + 1 >= cap)
                return -ENOSPC;
            out[o++] = (char)c;
        } else {
            if (o + 3 >= cap)
                return -ENOSPC;
            out[o++] = '%';
            out[o++] = hx[c >> 4];
            out[o++] = hx[c & 15];
        }
    }
    if (o >= cap)
        return -ENOSPC;
    out[o] = '\0';
    return (int)o;
}

/* The raw (unencoded) path of @key, or of the bucket when @key is NULL. */
static int build_path(const struct s3 *s, const char *key, char *out, size_t cap)
{
    int n;

    if (s->path_style)
        n = snprintf(out, cap, "/%s%s%s", s->st->cfg.bucket, key ? "/" : "", key ? key : "");
    else
        n = snprintf(out, cap, "/%s", key ? key : "");
    return n < 0 || (size_t)n >= cap ? -ENOSPC : 0;
}

/* Decode %XX in place (the query strings here are built by s3_uri_encode()). */
static void pct_decode(char *s)
{
    char *o = s;

    for (; *s; s++) {
        int hi = *s == '%' ? mi_hexval(s[1]) : -1;
        int lo = hi >= 0 ? mi_hexval(s[2]) : -1;

        if (lo >= 0) {
            *o++ = (char)(hi * 16 + lo);
            s += 2;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
}

static uint64_t rnd_next(struct s3 *s)
{
    uint64_t x = s->rnd;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s->rnd = x;
    return x;
}

/* Full jitter: uniform in [0, min(cap, base * 2^attempt)]. */
static uint64_t backoff_ms(struct s3 *s, int attempt)
{
    uint64_t ceiling = S3_BACKOFF_BASE_MS;

    for (int i = 0; i < attempt && ceiling < S3_BACKOFF_CAP_MS; i++)
        ceiling *= 2;
    if (ceiling > S3_BACKOFF_CAP_MS)
        ceiling = S3_BACKOFF_CAP_MS;
    return rnd_next(s) % (ceiling + 1);
}

/* --- XML answers -------------------------------------------------------------------- */

struct s3_xml {
    char root[48];
    char code[64];
    char message[200];
    char upload_id[512];
    char etag[128];
    char next_key[1100];
    char next_uid[512];
    bool truncated;
    /* ListMultipartUploads entries */
    char u_key[1100], u_id[512], u_init[40];
    void (*on_upload)(void *ctx, struct s3_xml *x);
    void *ctx;
    /* parser state */
    int depth;
    bool in_upload;
    char text[1100];
    size_t tlen;
    bool overflow;
};

static const char *local_name(const char *name)
{
    const char *c = strrchr(name, ':');

    return c ? c + 1 : name;
}

static void XMLCALL xml_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    struct s3_xml *x = ud;
    const char *n = local_name(name);

    if (x->depth == 0)
        snprintf(x->root, sizeof(x->root), "%s", n);
    if (strcmp(n, "Upload") == 0) {
        x->in_upload = true;
        x->u_key[0] = x->u_id[0] = x->u_init[0] = '\0';
    }
    x->depth++;
    x->tlen = 0;
    x->text[0] = '\0';
}

/* Copy the element's text, truncated to @cap - 1 bytes (values we keep are short). */
static void copy_text(char *dst, size_t cap, const struct s3_xml *x)
{
    size_t n = x->tlen < cap - 1 ? x->tlen : cap - 1;

    memcpy(dst, x->text, n);
    dst[n] = '\0';
}

static void XMLCALL xml_end(void *ud, const XML_Char *name)
{
    struct s3_xml *x = ud;
    const char *n = local_name(name);

    x->depth--;
    if (x->in_upload) {
        if (strcmp(n, "Key") == 0)
            copy_text(x->u_key, sizeof(x->u_key), x);
        else if (strcmp(n, "UploadId") == 0)
            copy_text(x->u_id, sizeof(x->u_id), x);
        else if (strcmp(n, "Initiated") == 0)
            copy_text(x->u_init, sizeof(x->u_init), x);
        else if (strcmp(n, "Upload") == 0) {
            x->in_upload = false;
            if (x->on_upload)
                x->on_upload(x->ctx, x);
        }
    } else if (strcmp(n, "Code") == 0) {
        copy_text(x->code, sizeof(x->code), x);
    } else if (strcmp(n, "Message") == 0) {
        copy_text(x->message, sizeof(x->message), x);
    } else if (strcmp(n, "UploadId") == 0) {
        copy_text(x->upload_id, sizeof(x->upload_id), x);
    } else if (strcmp(n, "ETag") == 0) {
        copy_text(x->etag, sizeof(x->etag), x);
    } else if (strcmp(n, "IsTruncated") == 0) {
        x->truncated = strcmp(x->text, "true") == 0;
    } else if (strcmp(n, "NextKeyMarker") == 0) {
        copy_text(x->next_key, sizeof(x->next_key), x);
    } else if (strcmp(n, "NextUploadIdMarker") == 0) {
        copy_text(x->next_uid, sizeof(x->next_uid), x);
    }
    x->tlen = 0;
    x->text[0] = '\0';
}

static void XMLCALL xml_text(void *ud, const XML_Char *s, int len)
{
    struct s3_xml *x = ud;
    size_t n = (size_t)len;

    if (n > sizeof(x->text) - 1 - x->tlen) {
        n = sizeof(x->text) - 1 - x->tlen;
        x->overflow = true;
    }
    memcpy(x->text + x->tlen, s, n);
    x->tlen += n;
    x->text[x->tlen] = '\0';
}

/* Parse @body into @x (its on_upload/ctx kept). Return 0, or -EBADMSG when malformed. */
static int xml_parse(struct s3_xml *x, const char *body, size_t len)
{
    XML_Parser p;
    int ok;

    /* S3 may send blanks before a late answer (Complete keeps the connection busy). */
    while (len > 0 && (*body == ' ' || *body == '\n' || *body == '\r' || *body == '\t')) {
        body++;
        len--;
    }
    if (len == 0)
        return 0;
    p = XML_ParserCreate(NULL);
    if (!p)
        return -ENOMEM;
    XML_SetUserData(p, x);
    XML_SetElementHandler(p, xml_start, xml_end);
    XML_SetCharacterDataHandler(p, xml_text);
    ok = XML_Parse(p, body, (int)len, 1) == XML_STATUS_OK;
    XML_ParserFree(p);
    return ok ? 0 : -EBADMSG;
}

/* --- one S3 request with retries -------------------------------------------------------- */

struct s3_call;
typedef void (*s3_call_cb)(void *ctx, struct s3_call *c, int status, struct http_req *rq,
                           struct s3_xml *x, const struct mi_err *err);

#define S3_CALL_HEADERS 6

/*
 * One logical request (a named S3 operation), attempted up to 1 + max_retries times. The
 * call frees itself after its callback returns (closing its backoff timer first).
 */
struct s3_call {
    struct s3 *s;
    const char *op;                  /* "UploadPart", for messages */
    int part;                        /* part number for messages, 0 if none */
    enum http_method method;
    char path[2200];                 /* raw path: /bucket/key */
    char query[S3_URL_MAX];          /* encoded, as built by the caller ("" for none) */
    char payload_sha[65];
    const void *body;                /* borrowed until the callback */
    size_t body_len;
    http_read_cb stream_cb;          /* a body read while it arrives (not retried) */
    void *stream_ctx;
    struct {
        const char *name;            /* static strings */
        char *value;                 /* owned */
    } hdr[S3_CALL_HEADERS];
    int nhdr;
    size_t max_body;
    http_write_cb data_cb;           /* GET streaming */
    void *data_ctx;
    bool data_seen;                  /* bytes were delivered: a retry cannot replay them */
    bool expect_404;                 /* HEAD/GET: 404 is an answer, not a failure */
    bool no_such_upload_ok;          /* Abort: NoSuchUpload counts as done */
    bool digest_final;               /* a payload sha256 mismatch is an answer (no retry):
                                        STORAGE_E_DIGEST */
    int attempt;
    bool canceled;
    bool done;
    struct http_req *rq;             /* in flight, NULL while backing off */
    uv_timer_t timer;
    struct s3_xml *x;                /* parsed answer (heap: it is large) */
    s3_call_cb cb;
    void *ctx;
};

static void call_attempt(struct s3_call *c);

static void call_timer(uv_timer_t *t)
{
    call_attempt(t->data);
}

static void call_closed(uv_handle_t *h)
{
    struct s3_call *c = h->data;

    for (int i = 0; i < c->nhdr; i++)
        free(c->hdr[i].value);
    free(c->x);
    free(c);
}

static void call_finish(struct s3_call *c, int status, struct http_req *rq,
                        const struct mi_err *err)
{
    c->done = true;
    c->s->st->pending--;
    c->cb(c->ctx, c, status, rq, c->x, err);
    uv_close((uv_handle_t *)&c->timer, call_closed);
}

/* Free a call that was never started (no timer yet). */
static void call_discard(struct s3_call *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->nhdr; i++)
        free(c->hdr[i].value);
    free(c->x);
    free(c);
}

static int call_new(struct s3_call **cp, struct s3 *s, const char *op, enum http_method m,
                    const char *key, const char *query, struct mi_err *err)
{
    struct s3_call *c = calloc(1, sizeof(*c));

    *cp = NULL;
    if (!c || !(c->x = calloc(1, sizeof(*c->x)))) {
        free(c);
        return mi_err_set(err, -ENOMEM, "s3 %s: out of memory", op);
    }
    c->s = s;
    c->op = op;
    c->method = m;
    c->max_body = S3_XML_MAX;
    memcpy(c->payload_sha, SIGV4_EMPTY_SHA256, sizeof(c->payload_sha));
    if (build_path(s, key, c->path, sizeof(c->path)) < 0 ||
        (size_t)snprintf(c->query, sizeof(c->query), "%s", query ? query : "") >=
            sizeof(c->query)) {
        free(c->x);
        free(c);
        return mi_err_set(err, STORAGE_E_BADKEY, "s3 %s: URL too long", op);
    }
    *cp = c;
    return 0;
}

static int call_header(struct s3_call *c, const char *name, const char *value)
{
    if (c->nhdr >= S3_CALL_HEADERS)
        return -ENOSPC;
    c->hdr[c->nhdr].value = strdup(value);
    if (!c->hdr[c->nhdr].value)
        return -ENOMEM;
    c->hdr[c->nhdr].name = name;
    c->nhdr++;
    return 0;
}

/*
 * A borrowed body and its x-amz-content-sha256: @sha_hex when the caller already knows the
 * body's sha256 (S3 and R2 verify it), UNSIGNED-PAYLOAD when @unsigned_ok and the payload
 * policy says so (TLS protects the bytes in transit), else the sha256 computed here.
 */
static int call_body(struct s3_call *c, const void *body, size_t len, const char *sha_hex,
                     bool unsigned_ok)
{
    c->body = body;
    c->body_len = len;
    if (sha_hex && strlen(sha_hex) == 64) {
        memcpy(c->payload_sha, sha_hex, 65);
        return 0;
    }
    if (unsigned_ok && c->s->unsigned_parts) {
        snprintf(c->payload_sha, sizeof(c->payload_sha), "%s", SIGV4_UNSIGNED_PAYLOAD);
        return 0;
    }
    return sigv4_sha256_hex(body, len, c->payload_sha);
}

static void call_start(struct s3_call *c, s3_call_cb cb, void *ctx)
{
    c->cb = cb;
    c->ctx = ctx;
    c->s->st->pending++;
    uv_timer_init(c->s->st->loop, &c->timer);
    c->timer.data = c;
    /* The first attempt also starts from the loop, so callbacks never run inside us. */
    uv_timer_start(&c->timer, call_timer, 0, 0);
}

/* Cancel: the callback still runs exactly once, later, with STORAGE_E_TRANSIENT. */
static void call_cancel(struct s3_call *c)
{
    if (c->done || c->canceled)
        return;
    c->canceled = true;
    if (c->rq)
        http_req_cancel(c->rq);
    else
        uv_timer_start(&c->timer, call_timer, 0, 0);
}

static bool retryable_code(const char *code)
{
    static const char *const codes[] = {
        "InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout",
        "XAmzContentSHA256Mismatch", "BadDigest", "RequestTimeTooSkewed", "OperationAborted",
    };

    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        if (strcmp(code, codes[i]) == 0)
            return true;
    }
    return false;
}

static void call_done(void *ctx, struct http_req *rq, int hstatus, const struct mi_err *herr);

#define S3_QUERY_KV 8

/*
 * Sign the call with SigV4 (sigv4.h) for this attempt, and build the URL and the headers
 * from the signer's result, so that what is sent is exactly what was signed.
 */
static int call_sign(struct s3_call *c, struct http_req **rqp, struct mi_err *err)
{
    struct s3 *s = c->s;
    const struct storage_config *cfg = &s->st->cfg;
    struct sigv4_kv q[S3_QUERY_KV], h[S3_CALL_HEADERS + 1];
    struct sigv4_credentials cred = {
        .access_key_id = cfg->access_key_id, .secret_access_key = cfg->secret_access_key,
        .session_token = cfg->session_token, .region = s->region, .service = "s3",
        .key_cache = &s->key_cache,
    };
    struct sigv4_request sr = { .method = http_method_name(c->method), .path = c->path,
                                .query = q, .headers = h, .payload_hash = c->payload_sha };
    struct sigv4_result res = { 0 };
    char qbuf[S3_URL_MAX], *url = NULL, *kv = qbuf;
    struct http_req *rq = NULL;
    size_t ulen;
    int r;

    memcpy(qbuf, c->query, sizeof(qbuf));
    while (*kv) {
        char *amp = strchr(kv, '&'), *eq;

        if (amp)
            *amp = '\0';
        eq = strchr(kv, '=');

        if (sr.n_query == S3_QUERY_KV)
            return mi_err_set(err, -E2BIG, "s3 %s: too many query parameters", c->op);
        if (eq)
            *eq++ = '\0';
        pct_decode(kv);
        if (eq)
            pct_decode(eq);
        q[sr.n_query].name = kv;
        q[sr.n_query].value = eq;
        sr.n_query++;
        if (!amp)
            break;
        kv = amp + 1;
    }
    h[0].name = "host";
    h[0].value = s->host;
    for (int i = 0; i < c->nhdr; i++) {
        h[i + 1].name = c->hdr[i].name;
        h[i + 1].value = c->hdr[i].value;
    }
    sr.n_headers = (size_t)c->nhdr + 1;
    r = sigv4_sign(&sr, &cred, time(NULL), &res, err);
    if (r != 0)
        goto out;
    ulen = strlen(s->origin) + strlen(res.canonical_uri) + strlen(res.canonical_query) + 2;
    url = malloc(ulen);
    if (!url) {
        r = mi_err_set(err, -ENOMEM, "s3 %s: out of memory", c->op);
        goto out;
    }
    snprintf(url, ulen, "%s%s%s%s", s->origin, res.canonical_uri,
             res.canonical_query[0] ? "?" : "", res.canonical_query);
    r = http_req_new(&rq, s->st->http, c->method, url, err);
    if (r == 0)
        r = http_req_header(rq, "Host", s->host);
    if (r == 0)
        r = http_req_header(rq, "x-amz-date", res.amz_date);
    if (r == 0)
        r = http_req_header(rq, "x-amz-content-sha256", c->payload_sha);
    if (r == 0 && cfg->session_token && cfg->session_token[0])
        r = http_req_header(rq, "x-amz-security-token", cfg->session_token);
    for (int i = 0; r == 0 && i < c->nhdr; i++)
        r = http_req_header(rq, c->hdr[i].name, c->hdr[i].value);
    if (r == 0)
        r = http_req_header(rq, "Authorization", res.authorization);
    if (r != 0 && !err->msg[0])
        mi_err_set(err, r, "s3 %s: cannot build the request", c->op);
out:
    free(url);
    sigv4_result_clear(&res);
    if (r != 0) {
        http_req_free(rq);
        return r;
    }
    *rqp = rq;
    return 0;
}

static void call_attempt(struct s3_call *c)
{
    const struct storage_config *cfg = &c->s->st->cfg;
    struct mi_err err = MI_ERR_INIT;
    struct http_req *rq = NULL;
    int r;

    if (c->canceled) {
        mi_err_set(&err, STORAGE_E_TRANSIENT, "s3 %s: cancelled", c->op);
        call_finish(c, STORAGE_E_TRANSIENT, NULL, &err);
        return;
    }
    c->attempt++;
    memset(c->x, 0, sizeof(*c->x));
    r = call_sign(c, &rq, &err);
    if (r == 0) {
        http_req_timeout(rq, cfg->request_timeout_ms + (c->stream_cb ? S3_STREAM_SOURCE_MS : 0));
        http_req_max_body(rq, c->max_body);
        if (c->stream_cb)
            http_req_body_stream(rq, (int64_t)c->body_len, c->stream_cb, c->stream_ctx);
        else if (c->body)
            http_req_body_buf(rq, c->body, c->body_len);
        if (c->data_cb)
            http_req_on_data(rq, c->data_cb, c->data_ctx);
        r = http_req_start(rq, call_done, c, &err);
    }
    if (r != 0) {
        http_req_free(rq);
        mi_err_prefix(&err, "s3 %s: ", c->op);
        call_finish(c, r < 0 ? r : STORAGE_E_PERMANENT, NULL, &err);
        return;
    }
    c->rq = rq;
}

/* Turn an answer into 0 / STORAGE_E_*; *retry says whether another attempt may help. */
static int call_classify(struct s3_call *c, struct http_req *rq, int hstatus,
                         const struct mi_err *herr, struct mi_err *err, bool *retry)
{
    long code = rq ? http_req_status(rq) : 0;
    size_t blen = 0;
    const char *body = rq ? http_req_body(rq, &blen) : "";
    struct s3_xml *x = c->x;
    char where[32] = "";

    *retry = false;
    if (c->part)
        snprintf(where, sizeof(where), " part %d", c->part);
    if (hstatus == HTTP_E_CANCELED || c->canceled)
        return mi_err_set(err, STORAGE_E_TRANSIENT, "s3 %s%s: cancelled", c->op, where);
    if (hstatus != 0) {
        *retry = hstatus == HTTP_E_TRANSPORT || hstatus == HTTP_E_TIMEOUT;
        return mi_err_set(err, hstatus < 0 ? hstatus : STORAGE_E_TRANSIENT, "s3 %s%s: %s",
                          c->op, where, herr ? herr->msg : "transfer failed");
    }
    if (blen > 0)
        xml_parse(x, body, blen);
    if (code >= 200 && code < 300 && strcmp(x->root, "Error") != 0)
        return 0;
    if (code == 404 && c->expect_404)
        return STORAGE_E_NOTFOUND;
    if (c->no_such_upload_ok && strcmp(x->code, "NoSuchUpload") == 0)
        return 0;
    if (c->digest_final && (strcmp(x->code, "XAmzContentSHA256Mismatch") == 0 ||
                            strcmp(x->code, "BadDigest") == 0))
        return mi_err_set(err, STORAGE_E_DIGEST,
                          "s3 %s: the store found that the body's sha256 differs from the "
                          "expected %.16s... (HTTP %ld %s); nothing was stored",
                          c->op, c->payload_sha, code, x->code);
    *retry = code >= 500 || code == 429 || retryable_code(x->code);
    if (code == 404 && strcmp(x->code, "NoSuchKey") == 0)
        return mi_err_set(err, STORAGE_E_NOTFOUND, "s3 %s: no such object", c->op);
    return mi_err_set(err, *retry ? STORAGE_E_TRANSIENT : STORAGE_E_PERMANENT,
                      "s3 %s%s: HTTP %ld %s%s%s", c->op, where, code,
                      x->code[0] ? x->code : (code == 403 ? "AccessDenied" : "error"),
                      x->message[0] ? ": " : "", x->message);
}

static void call_done(void *ctx, struct http_req *rq, int hstatus, const struct mi_err *herr)
{
    struct s3_call *c = ctx;
    struct mi_err err = MI_ERR_INIT;
    bool retry;
    int status;

    c->rq = NULL;
    status = call_classify(c, rq, hstatus, herr, &err, &retry);
    if (status != 0 && retry && !c->data_seen && !c->stream_cb &&
        c->attempt <= c->s->st->cfg.max_retries) {
        uv_timer_start(&c->timer, call_timer, backoff_ms(c->s, c->attempt), 0);
        return;
    }
    if (status != 0 && c->attempt > 1)
        mi_err_prefix(&err, "after %d attempts: ", c->attempt);
    call_finish(c, status, rq, status ? &err : NULL);
}

/* --- part buffers (placeholder budget) --------------------------------------------------- */

struct s3_part {
    int num;
    unsigned char *buf;
    size_t len, cap;
    size_t alloc;                    /* budget_buf_class(cap): taken from the budget, mapped */
    struct s3_call *call;
    struct s3_writer *wr;
    struct s3_part *next;
};

enum wr_phase { WR_STREAMING = 0, WR_COMMITTING, WR_ABORTING, WR_ENDED };

struct s3_writer {
    struct storage_writer *w;
    struct s3 *s;
    enum wr_phase phase;
    struct s3_part *cur;             /* filling */
    struct s3_part *queue;           /* full parts waiting for the upload id or a slot */
    struct s3_part *sending;         /* parts being uploaded */
    bool commit_wanted;              /* commit arrived while bytes were stashed */
    int inflight;                    /* part calls running */
    int next_num;
    bool creating;                   /* CreateMultipartUpload running */
    char *upload_id;                 /* NULL until created */
    char **etags;                    /* per part number - 1 */
    int etags_cap;
    int parts_done;
    int nparts;                      /* parts submitted */
    size_t stash_len;                /* bytes accepted while no buffer was free */
    bool paused;                     /* told the source STORAGE_PAUSE */
    bool waiting;                    /* queued on the budget (bw) */
    struct budget_waiter *bw;        /* the budget's queue entry while waiting */
    size_t want;                     /* bytes asked from the budget */
    int failed;                      /* first error */
    struct mi_err err;
    struct s3_call *single;          /* PutObject / Complete / Abort in flight */
    bool abort_sent;
    /* streamed PutObject (see the top of this file): wr->cur is its ring */
    bool streaming;
    bool starved;                    /* the request waits (paused) for bytes */
    bool release_last;               /* commit verified the body: its last byte may go */
    size_t r_head, r_used;           /* ring: where reading starts, bytes held */
    uint64_t given;                  /* body bytes handed to the request */
    /* Last, and not zeroed at open (see s3_writer_open): only stash_len bytes are valid. */
    unsigned char stash[STORAGE_MAX_CHUNK];
};

static size_t part_cap(const struct s3_writer *wr)
{
    size_t ps = wr->s->st->cfg.part_size;
    uint64_t exp = wr->w->expected_size, used = (uint64_t)wr->nparts * ps;

    if (wr->streaming)
        return S3_STREAM_BUF;
    /* An announced size lets the last buffer be only as big as what remains. */
    if (exp && exp > used && exp - used < ps)
        return (size_t)(exp - used);
    return ps;
}

/* A part of up to @cap bytes in a buffer of the @taken budget bytes already taken for it
 * (budget_buf_class() of a part's size); NULL on ENOMEM. */
static struct s3_part *part_alloc(struct s3_writer *wr, size_t cap, size_t taken)
{
    struct s3_part *p = calloc(1, sizeof(*p));

    if (!p)
        return NULL;
    if (cap > taken)
        cap = taken;
    p->alloc = taken;
    p->buf = budget_buf_get(wr->s->st->budget, p->alloc);
    if (!p->buf) {
        free(p);
        return NULL;
    }
    p->cap = cap;
    p->wr = wr;
    return p;
}

/* Take a part buffer at once if the budget allows; NULL otherwise. */
static struct s3_part *part_get(struct s3_writer *wr)
{
    struct s3 *s = wr->s;
    struct mi_budget *b = s->st->budget;
    size_t cap = part_cap(wr), bytes = budget_buf_class(cap);
    struct s3_part *p;

    if (!budget_try_take(b, bytes))
        return NULL;
    p = part_alloc(wr, cap, bytes);
    if (!p)
        budget_release(b, bytes);
    return p;
}

static void writer_resume(struct s3_writer *wr);
static void commit_now(struct s3_writer *wr);
static void wr_cancel_inflight(struct s3_writer *wr);
static void wr_fail(struct s3_writer *wr, int status, const struct mi_err *err);

static void part_put(struct s3 *s, struct s3_part *p)
{
    struct mi_budget *b = s->st->budget;

    if (!p)
        return;
    /* The budget grants its waiters from the loop; it may keep the buffer for reuse. */
    budget_release(b, p->alloc);
    budget_buf_put(b, p->buf, p->alloc);
    free(p);
}

/* The budget granted the bytes a paused writer queued for. */
static void budget_granted(void *ctx)
{
    struct s3_writer *wr = ctx;
    struct s3_part *p;

    wr->bw = NULL;
    wr->waiting = false;
    p = part_alloc(wr, part_cap(wr), wr->want);
    if (!p || wr->cur || wr->phase != WR_STREAMING) {
        if (p)
            part_put(wr->s, p);
        else
            budget_release(wr->s->st->budget, wr->want);
        if (!p)
            wr_fail(wr, -ENOMEM, NULL);
        return;
    }
    wr->cur = p;
    writer_resume(wr);
}

/* Queue on the budget for the next part buffer (budget_granted goes on). */
static void waiters_add(struct s3_writer *wr)
{
    int r;

    if (wr->waiting)
        return;
    wr->waiting = true;
    wr->want = budget_buf_class(part_cap(wr));
    r = budget_wait(wr->s->st->budget, wr->want, budget_granted, wr, &wr->bw);
    if (r != 0) {
        struct mi_err e = MI_ERR_INIT;

        wr->waiting = false;
        mi_err_set(&e, r, "s3: a part buffer of %zu bytes does not fit MEDIA_BUFFER_BUDGET",
                   wr->want);
        wr_fail(wr, r, &e);
    }
}

static void waiters_del(struct s3_writer *wr)
{
    if (!wr->waiting)
        return;
    budget_wait_cancel(wr->bw);
    wr->bw = NULL;
    wr->waiting = false;
}

/* --- the ring of a streamed PutObject ------------------------------------------------- */

/* Append @len bytes; the caller has checked they fit. */
static void ring_put(struct s3_writer *wr, const void *buf, size_t len)
{
    struct s3_part *r = wr->cur;
    size_t tail = (wr->r_head + wr->r_used) % r->cap, n = r->cap - tail;

    if (n > len)
        n = len;
    memcpy(r->buf + tail, buf, n);
    memcpy(r->buf, (const unsigned char *)buf + n, len - n);
    wr->r_used += len;
}

/* Take @len bytes from the front. */
static void ring_get(struct s3_writer *wr, void *buf, size_t len)
{
    struct s3_part *r = wr->cur;
    size_t n = r->cap - wr->r_head;

    if (n > len)
        n = len;
    memcpy(buf, r->buf + wr->r_head, n);
    memcpy((unsigned char *)buf + n, r->buf, len - n);
    wr->r_head = (wr->r_head + len) % r->cap;
    wr->r_used -= len;
    if (wr->r_used == 0)
        wr->r_head = 0;
}

/* Bytes the request may have now: all but the body's last one until commit verified it. */
static size_t stream_ready(const struct s3_writer *wr)
{
    uint64_t total = wr->w->expected_size;
    size_t avail = wr->cur ? wr->r_used : 0;

    if (!wr->release_last && wr->given + avail >= total)
        avail = (size_t)(total - 1 - wr->given);
    return avail;
}

/* Wake a request that waits for bytes once a quarter of the ring (or the end) is there. */
static void stream_wake(struct s3_writer *wr)
{
    size_t ready = stream_ready(wr);

    if (!wr->starved || !wr->single || !wr->single->rq || ready == 0)
        return;
    if (ready < S3_STREAM_BUF / 4 && !wr->release_last &&
        wr->given + ready + 1 < wr->w->expected_size)
        return;
    wr->starved = false;
    http_req_unpause(wr->single->rq);
}

/* curl reads the body: what the ring holds, then a pause until more arrives. */
static int stream_read(void *ctx, char *buf, size_t cap, size_t *n)
{
    struct s3_writer *wr = ctx;
    size_t avail;

    *n = 0;
    if (wr->failed || wr->phase == WR_ABORTING || wr->phase == WR_ENDED)
        return -1;   /* abort the transfer: the store keeps nothing */
    avail = stream_ready(wr);
    if (avail == 0) {
        if (wr->given == wr->w->expected_size)
            return 0;
        wr->starved = true;
        return HTTP_PAUSE;
    }
    if (avail > cap)
        avail = cap;
    ring_get(wr, buf, avail);
    wr->given += avail;
    *n = avail;
    writer_resume(wr);
    return 0;
}

/* --- writer --------------------------------------------------------------------------- */

static void wr_fail(struct s3_writer *wr, int status, const struct mi_err *err)
{
    if (wr->failed)
        return;
    wr->failed = status ? status : STORAGE_E_TRANSIENT;
    if (err)
        wr->err = *err;
    else
        mi_err_set(&wr->err, wr->failed, "s3: upload failed");
    /* The other parts are wasted now; the upload will be aborted. */
    wr_cancel_inflight(wr);
    /*
     * A paused source must hear about it: its next write returns the error. One that has
     * already asked to commit (its last bytes were still stashed) is aborted now instead:
     * nothing else would move it on.
     */
    if (wr->paused) {
        wr->paused = false;
        waiters_del(wr);
        if (wr->commit_wanted) {
            wr->commit_wanted = false;
            commit_now(wr);
        } else {
            storage_writer_ready(wr->w);
        }
    }
}

static void wr_step(struct s3_writer *wr);

static int etag_store(struct s3_writer *wr, int num, const char *etag)
{
    if (num > wr->etags_cap) {
        int cap = wr->etags_cap ? wr->etags_cap * 2 : 16;
        char **e;

        while (cap < num)
            cap *= 2;
        e = realloc(wr->etags, (size_t)cap * sizeof(*e));
        if (!e)
            return -ENOMEM;
        memset(e + wr->etags_cap, 0, (size_t)(cap - wr->etags_cap) * sizeof(*e));
        wr->etags = e;
        wr->etags_cap = cap;
    }
    free(wr->etags[num - 1]);
    wr->etags[num - 1] = strdup(etag);
    return wr->etags[num - 1] ? 0 : -ENOMEM;
}

static void part_done(void *ctx, struct s3_call *c, int status, struct http_req *rq,
                      struct s3_xml *x, const struct mi_err *err)
{
    struct s3_part *p = ctx;
    struct s3_writer *wr = p->wr;
    const char *etag = rq ? http_req_resp_header(rq, "etag") : NULL;
    struct s3_part **pp = &wr->sending;

    while (*pp && *pp != p)
        pp = &(*pp)->next;
    if (*pp)
        *pp = p->next;
    p->next = NULL;
    p->call = NULL;
    wr->inflight--;
    if (status == 0 && !etag) {
        struct mi_err e = MI_ERR_INIT;
        mi_err_set(&e, STORAGE_E_PERMANENT, "s3 UploadPart part %d: answer without ETag",
                   p->num);
        wr_fail(wr, STORAGE_E_PERMANENT, &e);
    } else if (status == 0) {
        if (etag_store(wr, p->num, etag) < 0)
            wr_fail(wr, -ENOMEM, NULL);
        else
            wr->parts_done++;
    } else if (wr->phase != WR_ABORTING) {
        /* While aborting, parts fail because we cancelled them: that is no error. */
        wr_fail(wr, status, err);
    }
    part_put(wr->s, p);
    wr_step(wr);
}

static void part_send(struct s3_writer *wr, struct s3_part *p)
{
    struct mi_err err = MI_ERR_INIT;
    char query[1024], eid[768];
    struct s3_call *c;
    int r;

    if (s3_uri_encode(wr->upload_id, false, eid, sizeof(eid)) < 0) {
        mi_err_set(&err, STORAGE_E_PERMANENT, "s3 UploadPart: upload id too long");
        wr_fail(wr, STORAGE_E_PERMANENT, &err);
        part_put(wr->s, p);
        return;
    }
    /* Query keys sorted (curl 7.88.1 signs the query verbatim). */
    snprintf(query, sizeof(query), "partNumber=%d&uploadId=%s", p->num, eid);
    r = call_new(&c, wr->s, "UploadPart", HTTP_PUT, wr->w->key, query, &err);
    if (r == 0)
        r = call_body(c, p->buf, p->len, NULL, true);
    if (r != 0) {
        call_discard(c);
        wr_fail(wr, r, &err);
        part_put(wr->s, p);
        return;
    }
    c->part = p->num;
    p->call = c;
    p->next = wr->sending;
    wr->sending = p;
    wr->inflight++;
    call_start(c, part_done, p);
}

static void create_done(void *ctx, struct s3_call *c, int status, struct http_req *rq,
                        struct s3_xml *x, const struct mi_err *err)
{
    struct s3_writer *wr = ctx;

    wr->creating = false;
    wr->single = NULL;
    if (status == 0 && !x->upload_id[0]) {
        struct mi_err e = MI_ERR_INIT;
        mi_err_set(&e, STORAGE_E_PERMANENT, "s3 CreateMultipartUpload: answer without UploadId");
        wr_fail(wr, STORAGE_E_PERMANENT, &e);
    } else if (status == 0) {
        wr->upload_id = strdup(x->upload_id);
        if (!wr->upload_id)
            wr_fail(wr, -ENOMEM, NULL);
    } else {
        wr_fail(wr, status, err);
    }
    wr_step(wr);
}

/* Headers that describe the object: set on PutObject and CreateMultipartUpload. */
static int object_headers(struct s3_writer *wr, struct s3_call *c, const char *sha)
{
    int r = 0;

    if (wr->w->content_type && wr->w->content_type[0])
        r = call_header(c, "Content-Type", wr->w->content_type);
    else
        r = call_header(c, "Content-Type", "application/octet-stream");
    if (r == 0 && sha && sha[0])
        r = call_header(c, "x-amz-meta-sha256", sha);
    return r;
}

static void create_start(struct s3_writer *wr)
{
    struct mi_err err = MI_ERR_INIT;
    struct s3_call *c = NULL;
    int r;

    r = call_new(&c, wr->s, "CreateMultipartUpload", HTTP_POST, wr->w->key, "uploads=", &err);
    /*
     * The metadata is fixed at creation, before the body has been seen: store the
     * expected sha256, which commit verifies before the upload is completed.
     */
    if (r == 0)
        r = object_headers(wr, c, wr->w->sha256_expected);
    if (r != 0) {
        call_discard(c);
        wr_fail(wr, r, &err);
        return;
    }
    wr->creating = true;
    wr->single = c;
    call_start(c, create_done, wr);
}

/* Queue a full (or the last) part; uploading starts once the upload exists. */
static void part_submit(struct s3_writer *wr, struct s3_part *p)
{
    struct s3_part **pp = &wr->queue;

    p->num = ++wr->next_num;
    wr->nparts++;
    while (*pp)
        pp = &(*pp)->next;
    *pp = p;
    if (!wr->upload_id && !wr->creating && !wr->failed)
        create_start(wr);
}

static void wr_finish(struct s3_writer *wr, int status, const struct mi_err *err)
{
    wr->phase = WR_ENDED;
    waiters_del(wr);
    storage_writer_finish(wr->w, status, err);
}

static void abort_done(void *ctx, struct s3_call *c, int status, struct http_req *rq,
                       struct s3_xml *x, const struct mi_err *err)
{
    struct s3_writer *wr = ctx;
    struct mi_err e = MI_ERR_INIT;

    wr->single = NULL;
    if (status != 0) {
        /* The upload stays open: the orphan sweep will find it. Say so. */
        mi_err_set(&e, status, "%s; AbortMultipartUpload also failed (%s)",
                   wr->failed ? wr->err.msg : "upload aborted", err ? err->msg : "?");
        wr_finish(wr, wr->failed ? wr->failed : status, &e);
        return;
    }
    wr_finish(wr, wr->failed, wr->failed ? &wr->err : NULL);
}

static void abort_send(struct s3_writer *wr)
{
    struct mi_err err = MI_ERR_INIT;
    char query[1024], eid[768];
    struct s3_call *c = NULL;
    int r;

    wr->abort_sent = true;
    r = s3_uri_encode(wr->upload_id, false, eid, sizeof(eid));
    if (r >= 0) {
        snprintf(query, sizeof(query), "uploadId=%s", eid);
        r = call_new(&c, wr->s, "AbortMultipartUpload", HTTP_DELETE, wr->w->key, query, &err);
    }
    if (r < 0 || r > 0) {
        wr_finish(wr, wr->failed ? wr->failed : r, wr->failed ? &wr->err : &err);
        return;
    }
    c->no_such_upload_ok = true;
    wr->single = c;
    call_start(c, abort_done, wr);
}

static void complete_done(void *ctx, struct s3_call *c, int status, struct http_req *rq,
                          struct s3_xml *x, const struct mi_err *err)
{
    struct s3_writer *wr = ctx;

    wr->single = NULL;
    free((void *)c->body);
    c->body = NULL;
    if (status == 0) {
        wr_finish(wr, 0, NULL);
        return;
    }
    wr_fail(wr, status, err);
    wr->phase = WR_ABORTING;
    abort_send(wr);
}

static void complete_send(struct s3_writer *wr)
{
    struct mi_err err = MI_ERR_INIT;
    static const char part_fmt[] = "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>";
    size_t cap = sizeof("<CompleteMultipartUpload></CompleteMultipartUpload>"), len = 0;
    char *xml, query[1024], eid[768];
    struct s3_call *c = NULL;
    int r;

    /* sized from the ETags themselves: a server's long ETags cannot overrun it */
    for (int i = 0; i < wr->nparts; i++)
        cap += sizeof(part_fmt) + 10 + strlen(wr->etags[i]);
    xml = malloc(cap);
    r = xml ? 0 : -ENOMEM;
    if (r == 0)
        len += (size_t)snprintf(xml + len, cap - len, "<CompleteMultipartUpload>");
    for (int i = 0; r == 0 && i < wr->nparts; i++) {
        int n = snprintf(xml + len, cap - len, part_fmt, i + 1, wr->etags[i]);
        if (n < 0 || (size_t)n >= cap - len)
            r = -ENOSPC;
        else
            len += (size_t)n;
    }
    if (r == 0) {
        int n = snprintf(xml + len, cap - len, "</CompleteMultipartUpload>");
        if (n < 0 || (size_t)n >= cap - len)
            r = -ENOSPC;
        else
            len += (size_t)n;
    }
    if (r == 0 && s3_uri_encode(wr->upload_id, false, eid, sizeof(eid)) < 0)
        r = -ENOSPC;
    if (r == 0) {
        snprintf(query, sizeof(query), "uploadId=%s", eid);
        r = call_new(&c, wr->s, "CompleteMultipartUpload", HTTP_POST, wr->w->key, query, &err);
    }
    if (r == 0)
        r = call_body(c, xml, len, NULL, false);
    if (r == 0)
        r = call_header(c, "Content-Type", "application/xml");
    if (r != 0) {
        call_discard(c);
        free(xml);
        mi_err_set(&err, r, "s3 CompleteMultipartUpload: cannot build the request");
        wr_fail(wr, r, &err);
        wr->phase = WR_ABORTING;
        abort_send(wr);
        return;
    }
    wr->single = c;
    call_start(c, complete_done, wr);
}

static void put_done(void *ctx, struct s3_call *c, int status, struct http_req *rq,
                     struct s3_xml *x, const struct mi_err *err)
{
    struct s3_writer *wr = ctx;

    wr->single = NULL;
    part_put(wr->s, wr->cur);
    wr->cur = NULL;
    wr_finish(wr, status, err);
}

/* PutObject of the whole (small) body, at commit. */
static void put_send(struct s3_writer *wr)
{
    struct mi_err err = MI_ERR_INIT;
    struct s3_call *c = NULL;
    int r;

    r = call_new(&c, wr->s, "PutObject", HTTP_PUT, wr->w->key, NULL, &err);
    if (r == 0)
        r = object_headers(wr, c, wr->w->sha256_hex);
    if (r == 0)
        /* sign with the body's sha256: commit has verified it, or (digest_by_store) it is
         * the expected one, which the store checks the body against */
        r = wr->cur ? call_body(c, wr->cur->buf, wr->cur->len, wr->w->sha256_hex, false)
                    : call_body(c, "", 0, NULL, false);
    if (c)
        c->digest_final = wr->w->digest_by_store;
    if (r != 0) {
        call_discard(c);
        wr_finish(wr, r, &err);
        return;
    }
    wr->single = c;
    call_start(c, put_done, wr);
}

static void stream_done(void *ctx, struct s3_call *c, int status, struct http_req *rq,
                        struct s3_xml *x, const struct mi_err *err)
{
    struct s3_writer *wr = ctx;
    struct mi_err e = MI_ERR_INIT;

    wr->single = NULL;
    wr->starved = false;
    if (status == 0 && !wr->release_last) {
        /* cannot be: its last byte was never given */
        mi_err_set(&e, STORAGE_E_PERMANENT, "s3 PutObject: answered before the whole body");
        status = STORAGE_E_PERMANENT;
        err = &e;
    }
    if (status == 0 && wr->phase == WR_COMMITTING) {
        wr_finish(wr, 0, NULL);
        return;
    }
    /* an abort cancelled it: that is no error of its own */
    if (wr->phase == WR_STREAMING || wr->phase == WR_COMMITTING)
        wr_fail(wr, status ? status : STORAGE_E_PERMANENT, err);
    if (wr->phase != WR_STREAMING)
        wr_step(wr);
}

/* The streamed PutObject starts at open: it reads the body as it arrives. */
static int stream_start(struct s3_writer *wr, struct mi_err *err)
{
    struct s3_call *c = NULL;
    int r;

    r = call_new(&c, wr->s, "PutObject", HTTP_PUT, wr->w->key, NULL, err);
    if (r == 0)
        r = object_headers(wr, c, wr->w->sha256_expected);
    if (r == 0)
        r = call_body(c, NULL, (size_t)wr->w->expected_size,
                      wr->w->digest_by_store ? wr->w->sha256_expected : NULL, true);
    if (r != 0) {
        call_discard(c);
        return r;
    }
    c->digest_final = wr->w->digest_by_store;
    c->stream_cb = stream_read;
    c->stream_ctx = wr;
    wr->single = c;
    wr->s->streamed++;
    call_start(c, stream_done, wr);
    return 0;
}

/* Cancel everything in flight that can be cancelled without losing track of an upload. */
static void wr_cancel_parts(struct s3_writer *wr)
{
    while (wr->queue) {
        struct s3_part *p = wr->queue;

        wr->queue = p->next;
        part_put(wr->s, p);
    }
}

static void wr_cancel_inflight(struct s3_writer *wr)
{
    for (struct s3_part *p = wr->sending; p; p = p->next) {
        if (p->call)
            call_cancel(p->call);
    }
    if (wr->streaming && wr->single)
        call_cancel(wr->single);
}

/*
 * The writer's state machine: start queued parts, and when committing or aborting,
 * move on once nothing is in flight. Called after every event.
 */
static void wr_step(struct s3_writer *wr)
{
    if (wr->phase == WR_ENDED)
        return;
    if (wr->failed && wr->phase == WR_STREAMING)
        wr_cancel_parts(wr);
    while (!wr->failed && wr->upload_id && wr->queue && wr->inflight < S3_PART_INFLIGHT) {
        struct s3_part *p = wr->queue;

        wr->queue = p->next;
        p->next = NULL;
        part_send(wr, p);
    }
    if (wr->phase == WR_STREAMING) {
        writer_resume(wr);
        return;
    }
    if (wr->single || wr->creating || wr->inflight > 0)
        return;
    if (wr->failed && wr->phase == WR_COMMITTING)
        wr->phase = WR_ABORTING;
    if (wr->phase == WR_ABORTING) {
        wr_cancel_parts(wr);
        if (wr->upload_id && !wr->abort_sent)
            abort_send(wr);
        else if (!wr->single)
            wr_finish(wr, wr->failed, wr->failed ? &wr->err : NULL);
        return;
    }
    /* A streamed PutObject that ended without success (stream_done finishes a success). */
    if (wr->streaming) {
        wr_finish(wr, wr->failed ? wr->failed : STORAGE_E_PERMANENT,
                  wr->failed ? &wr->err : NULL);
        return;
    }
    /* Committing with every part uploaded. */
    if (!wr->queue && wr->parts_done == wr->nparts)
        complete_send(wr);
}

/* Give a paused source a buffer again when one is free and the writer may take more. */
static void writer_resume(struct s3_writer *wr)
{
    if (!wr->paused || wr->phase != WR_STREAMING)
        return;
    if (!wr->failed) {
        if (wr->queue)
            return;
        if (!wr->cur) {
            wr->cur = part_get(wr);
            if (!wr->cur) {
                waiters_add(wr);
                return;
            }
        }
        if (!wr->streaming) {
            memcpy(wr->cur->buf + wr->cur->len, wr->stash, wr->stash_len);
            wr->cur->len += wr->stash_len;
        } else if (wr->cur->cap - wr->r_used >= wr->cur->cap / 2 &&
                   wr->cur->cap - wr->r_used >= wr->stash_len) {
            /* the ring's source goes on once half of it is free (and its stash fits) */
            ring_put(wr, wr->stash, wr->stash_len);
            stream_wake(wr);
        } else {
            return;
        }
        wr->stash_len = 0;
    }
    waiters_del(wr);
    wr->paused = false;
    if (wr->commit_wanted) {
        commit_now(wr);
        return;
    }
    storage_writer_ready(wr->w);
}

/* --- does the store check the signed sha256 of a body? ----------------------------------- */

static void probe_deleted(void *ctx, struct s3_call *c, int status, struct http_req *rq,
                          struct s3_xml *x, const struct mi_err *err)
{
    (void)ctx, (void)c, (void)status, (void)rq, (void)x, (void)err;
}

static void probe_done(void *ctx, struct s3_call *c, int status, struct http_req *rq,
                       struct s3_xml *x, const struct mi_err *err)
{
    struct s3 *s = ctx;
    struct s3_call *del = NULL;
    struct mi_err e2 = MI_ERR_INIT;

    (void)c, (void)rq, (void)x;
    if (status == STORAGE_E_DIGEST) {
        s->verify = VERIFY_YES;
    } else if (status == 0) {
        /* Stored although its body does not match what was signed: this store does not
         * check, so every body is hashed here. Remove the probe (best effort). */
        s->verify = VERIFY_NO;
        if (call_new(&del, s, "DeleteObject (probe)", HTTP_DELETE, s->probe_key, NULL, &e2) == 0)
            call_start(del, probe_deleted, NULL);
    } else if (status == STORAGE_E_TRANSIENT || status < 0) {
        s->verify = VERIFY_UNKNOWN;   /* ask again later; hash here meanwhile */
        s->probe_after_ms = mi_mono_ms() + S3_PROBE_RETRY_MS;
    } else {
        s->verify = VERIFY_NO;        /* refused (access denied...): hash here */
    }
    if (s->verdict_cb)
        s->verdict_cb(s->verdict_ctx, s3_payload_checked(s->st, NULL), err);
}

/*
 * PutObject of a 5-byte body signed as the empty body's sha256: a store that checks
 * answers XAmzContentSHA256Mismatch and stores nothing. The key is random, under media/
 * (where the worker's credentials may write), with a messageId no app generates
 * ("_probe": cuids, uuids and integers never start with '_'), and is deleted again when
 * a store accepted it.
 */
static void verify_probe(struct s3 *s)
{
    static const char body[] = "probe";
    struct mi_err err = MI_ERR_INIT;
    struct s3_call *c = NULL;

    s->verify = VERIFY_PROBING;
    snprintf(s->probe_key, sizeof(s->probe_key), "media/_probe/payload-sha256-%016llx",
             (unsigned long long)rnd_next(s));
    if (call_new(&c, s, "PutObject (probe)", HTTP_PUT, s->probe_key, NULL, &err) != 0 ||
        call_body(c, body, sizeof(body) - 1, SIGV4_EMPTY_SHA256, false) != 0) {
        call_discard(c);
        s->verify = VERIFY_NO;
        return;
    }
    c->digest_final = true;
    call_start(c, probe_done, s);
}

/* Ask the store (again) unless its answer is known, being asked, or not due yet. */
static void probe_if_due(struct s3 *s)
{
    if (s->verify == VERIFY_UNKNOWN && mi_mono_ms() >= s->probe_after_ms)
        verify_probe(s);
}

/**
 * s3_payload_checked() - see s3.h.
 */
int s3_payload_checked(const struct storage *st, const char **probe_key)
{
    const struct s3 *s = st->priv;

    if (probe_key)
        *probe_key = s->probe_key;
    return s->verify == VERIFY_YES ? 1 : s->verify == VERIFY_NO ? 0 : -1;
}

/**
 * s3_streamed_puts() - see s3.h.
 */
uint64_t s3_streamed_puts(const struct storage *st)
{
    const struct s3 *s = st->priv;

    return s->streamed;
}

/**
 * s3_on_payload_verdict() - see s3.h.
 */
void s3_on_payload_verdict(struct storage *st, s3_verdict_cb cb, void *ctx)
{
    struct s3 *s = st->priv;

    s->verdict_cb = cb;
    s->verdict_ctx = ctx;
    probe_if_due(s);
}

static int s3_writer_open(struct storage_writer *w, struct mi_err *err)
{
    struct s3_writer *wr;
    struct s3 *s = w->st->priv;

    /* part buffers come from the process budget: a storage made without one only lists,
     * reads and aborts (media-queue uploads) */
    if (!w->st->budget)
        return mi_err_set(err, STORAGE_E_CONFIG, "s3: writing needs a buffer budget");
    /* Everything but the 64 KiB stash is zeroed: clearing it cost a memset per job. */
    wr = malloc(sizeof(*wr));
    if (!wr)
        return mi_err_set(err, -ENOMEM, "s3: out of memory");
    memset(wr, 0, offsetof(struct s3_writer, stash));
    wr->w = w;
    wr->s = s;
    w->priv = wr;
    probe_if_due(s);
    /*
     * A body announced below the part size goes out as one PutObject, signed with its
     * sha256; so does a longer one that is streamed. When the store checks that, hashing
     * it here as well would only repeat the store's work (about a tenth of the CPU of a
     * small-media job, a third of a large one's): sign with the expected sha256 and let
     * the store refuse a mismatch.
     */
    bool longer = w->sha256_expected && w->expected_size > w->st->cfg.part_size &&
                  w->expected_size <= S3_PUT_MAX;

    w->digest_by_store = s->verify == VERIFY_YES && w->sha256_expected &&
                         w->expected_size > 0 &&
                         (w->expected_size < w->st->cfg.part_size || longer);
    /*
     * A longer announced body is one streamed PutObject when the store checks its signed
     * sha256 (the expected one: nothing is hashed here) or when it may go unsigned.
     */
    if (longer && (w->digest_by_store || s->unsigned_parts)) {
        int r;

        wr->streaming = true;
        r = stream_start(wr, err);
        if (r != 0) {
            free(wr);
            w->priv = NULL;
            return r;
        }
    }
    return 0;
}

/*
 * No buffer is free for @len accepted bytes: keep them in the stash and wait on the budget
 * (budget_granted, then writer_resume, moves them on). Return what the write returns.
 */
static int stash_and_wait(struct s3_writer *wr, const void *buf, size_t len)
{
    memcpy(wr->stash, buf, len);
    wr->stash_len = len;
    wr->paused = true;
    waiters_add(wr);
    return wr->failed ? wr->failed : STORAGE_PAUSE;
}

/* Into the ring; the source pauses while less than one chunk is free (writer_resume). */
static int stream_write(struct s3_writer *wr, const void *buf, size_t len)
{
    if (!wr->cur && !(wr->cur = part_get(wr)))
        return stash_and_wait(wr, buf, len);
    if (wr->cur->cap - wr->r_used < len)
        return -ENOBUFS;   /* cannot be: the source paused before it could overflow */
    ring_put(wr, buf, len);
    stream_wake(wr);
    if (wr->failed)
        return wr->failed;
    if (wr->cur->cap - wr->r_used < STORAGE_MAX_CHUNK) {
        wr->paused = true;
        return STORAGE_PAUSE;
    }
    return 0;
}

static int s3_writer_write(struct storage_writer *w, const void *buf, size_t len)
{
    struct s3_writer *wr = w->priv;
    const unsigned char *p = buf;
    size_t ps = w->st->cfg.part_size;

    if (wr->failed)
        return wr->failed;
    if (wr->paused)
        return -ENOBUFS;   /* the source ignored STORAGE_PAUSE */
    if (wr->streaming)
        return stream_write(wr, buf, len);
    while (len > 0) {
        size_t n;

        if (!wr->cur && !(wr->cur = part_get(wr))) {
            int r = stash_and_wait(wr, p, len);

            /* Start the part just submitted: nothing else may, and its upload is what
             * gives budget back (without this, writers whose full parts wait here hold
             * the whole budget while they wait for more of it: a deadlock). */
            wr_step(wr);
            return wr->failed ? wr->failed : r;
        }
        n = wr->cur->cap - wr->cur->len;
        if (n > len)
            n = len;
        memcpy(wr->cur->buf + wr->cur->len, p, n);
        wr->cur->len += n;
        p += n;
        len -= n;
        if (wr->cur->len == wr->cur->cap && wr->cur->cap == ps) {
            if (wr->nparts >= S3_MAX_PARTS) {
                wr->failed = STORAGE_E_TOOBIG;
                return STORAGE_E_TOOBIG;
            }
            part_submit(wr, wr->cur);
            wr->cur = NULL;
        } else if (wr->cur->len == wr->cur->cap && len > 0) {
            /* More than the announced size: storage.c refuses it before we get here. */
            return STORAGE_E_TOOBIG;
        }
    }
    wr_step(wr);
    if (wr->failed)
        return wr->failed;
    /*
     * Keep at most S3_PART_INFLIGHT parts uploading, one waiting and one filling per
     * writer: a part still queued means the uploads are behind the source.
     */
    if (wr->queue) {
        wr->paused = true;
        return STORAGE_PAUSE;
    }
    return 0;
}

static void s3_writer_commit(struct storage_writer *w)
{
    struct s3_writer *wr = w->priv;

    /* Bytes accepted with the last STORAGE_PAUSE still wait for a buffer. */
    if (wr->stash_len > 0 && !wr->failed) {
        wr->commit_wanted = true;
        return;
    }
    commit_now(wr);
}

static void commit_now(struct s3_writer *wr)
{
    if (wr->failed) {
        wr->phase = WR_ABORTING;
        wr_step(wr);
        return;
    }
    wr->phase = WR_COMMITTING;
    if (wr->streaming) {
        /* storage.c has verified the body: its last byte may go, then the store answers */
        wr->release_last = true;
        if (wr->single)
            stream_wake(wr);
        else
            wr_step(wr);
        return;
    }
    if (wr->nparts == 0) {
        put_send(wr);
        return;
    }
    if (wr->cur && wr->cur->len > 0)
        part_submit(wr, wr->cur);
    else
        part_put(wr->s, wr->cur);
    wr->cur = NULL;
    wr_step(wr);
}

static void s3_writer_abort(struct storage_writer *w)
{
    struct s3_writer *wr = w->priv;

    wr->phase = WR_ABORTING;
    waiters_del(wr);
    wr->paused = false;
    part_put(wr->s, wr->cur);
    wr->cur = NULL;
    wr_cancel_parts(wr);
    /* Parts in flight are cancelled; CreateMultipartUpload is awaited so its id is known. */
    wr_cancel_inflight(wr);
    wr_step(wr);
}

static void s3_writer_free(struct storage_writer *w)
{
    struct s3_writer *wr = w->priv;

    if (!wr)
        return;
    waiters_del(wr);
    part_put(wr->s, wr->cur);
    wr_cancel_parts(wr);
    for (int i = 0; i < wr->etags_cap; i++)
        free(wr->etags[i]);
    free(wr->etags);
    free(wr->upload_id);
    free(wr);
    w->priv = NULL;
}

/* --- head, get, delete ------------------------------------------------------------------ */

struct s3_oneshot {
    struct storage *st;
    storage_meta_cb meta_cb;
    storage_done_cb done_cb;
    storage_data_cb data_cb;
    void *ctx;
    struct storage_meta meta;
    bool stopped;
};

static int meta_fill(struct storage_meta *m, struct http_req *rq)
{
    const char *len = http_req_resp_header(rq, "content-length");
    const char *ct = http_req_resp_header(rq, "content-type");
    const char *sha = http_req_resp_header(rq, "x-amz-meta-sha256");

    m->exists = true;
    m->size = len ? strtoull(len, NULL, 10) : 0;
    m->content_type = ct ? strdup(ct) : NULL;
    m->sha256_hex = sha ? strdup(sha) : NULL;
    if ((ct && !m->content_type) || (sha && !m->sha256_hex))
        return -ENOMEM;
    return 0;
}

static void head_done(void *ctx, struct s3_call *c, int status, struct http_req *rq,
                      struct s3_xml *x, const struct mi_err *err)
{
    struct s3_oneshot *o = ctx;
    struct mi_err e = MI_ERR_INIT;

    if (status == 0 && meta_fill(&o->meta, rq) < 0)
        status = mi_err_set(&e, -ENOMEM, "s3 HeadObject: out of memory");
    if (status == STORAGE_E_NOTFOUND && !err) {
        mi_err_set(&e, STORAGE_E_NOTFOUND, "s3 HeadObject: no such object");
        err = &e;
    }
    o->meta_cb(o->ctx, status, &o->meta, status ? (err ? err : &e) : NULL);
    storage_meta_clear(&o->meta);
    free(o);
}

/*
 * A single-request operation on @key (HEAD, GET, DELETE): the caller's context plus a call
 * for which 404 is an answer, not an error. On failure nothing is left allocated.
 */
static int oneshot_new(struct s3_oneshot **op, struct s3_call **cp, struct storage *st,
                       const char *what, enum http_method method,
                       const char *key, void *ctx,
                       struct mi_err *err)
{
    struct s3_oneshot *o = calloc(1, sizeof(*o));
    int r;

    if (!o)
        return mi_err_set(err, -ENOMEM, "s3: out of memory");
    r = call_new(cp, st->priv, what, method, key, NULL, err);
    if (r) {
        free(o);
        return r;
    }
    (*cp)->expect_404 = true;
    o->st = st;
    o->ctx = ctx;
    *op = o;
    return 0;
}

static int s3_head(struct storage *st, const char *key, storage_meta_cb cb, void *ctx,
                   struct mi_err *err)
{
    struct s3_oneshot *o;
    struct s3_call *c;
    int r = oneshot_new(&o, &c, st, "HeadObject", HTTP_HEAD, key, ctx, err);

    if (r)
        return r;
    o->meta_cb = cb;
    call_start(c, head_done, o);
    return 0;
}

static int get_data(void *ctx, const char *buf, size_t len)
{
    struct s3_call *c = ctx;
    struct s3_oneshot *o = c->ctx;

    c->data_seen = true;
    if (!o->data_cb(o->ctx, buf, len)) {
        o->stopped = true;
        return -1;
    }
    return 0;
}

static void get_done(void *ctx, struct s3_call *c, int status, struct http_req *rq,
                     struct s3_xml *x, const struct mi_err *err)
{
    struct s3_oneshot *o = ctx;
    struct mi_err e = MI_ERR_INIT;

    if (status == 0 && meta_fill(&o->meta, rq) < 0)
        status = mi_err_set(&e, -ENOMEM, "s3 GetObject: out of memory");
    if (status == STORAGE_E_NOTFOUND && !err) {
        mi_err_set(&e, STORAGE_E_NOTFOUND, "s3 GetObject: no such object");
        err = &e;
    }
    if (o->stopped && status != 0) {
        mi_err_set(&e, status, "s3 GetObject: stopped by the reader");
        err = &e;
    }
    o->meta_cb(o->ctx, status, &o->meta, status ? (err ? err : &e) : NULL);
    storage_meta_clear(&o->meta);
    free(o);
}

static int s3_get(struct storage *st, const char *key, storage_data_cb data_cb,
                  storage_meta_cb done_cb, void *ctx, struct mi_err *err)
{
    struct s3_oneshot *o;
    struct s3_call *c;
    int r = oneshot_new(&o, &c, st, "GetObject", HTTP_GET, key, ctx, err);

    if (r)
        return r;
    c->data_cb = get_data;
    c->data_ctx = c;
    o->meta_cb = done_cb;
    o->data_cb = data_cb;
    call_start(c, get_done, o);
    return 0;
}

static void del_done(void *ctx, struct s3_call *c, int status, struct http_req *rq,
                     struct s3_xml *x, const struct mi_err *err)
{
    struct s3_oneshot *o = ctx;

    if (status == STORAGE_E_NOTFOUND)
        status = 0;   /* deleting what is not there leaves the wanted state */
    o->done_cb(o->ctx, status, status ? err : NULL);
    free(o);
}

static int s3_del(struct storage *st, const char *key, storage_done_cb cb, void *ctx,
                  struct mi_err *err)
{
    struct s3_oneshot *o;
    struct s3_call *c;
    int r = oneshot_new(&o, &c, st, "DeleteObject", HTTP_DELETE, key, ctx, err);

    if (r)
        return r;
    o->done_cb = cb;
    call_start(c, del_done, o);
    return 0;
}

/* --- backend life cycle --------------------------------------------------------------- */

static int s3_init(struct storage *st, struct mi_err *err)
{
    const struct storage_config *cfg = &st->cfg;
    bool r2 = st->kind == STORAGE_R2;
    const char *region = cfg->region && cfg->region[0] ? cfg->region : (r2 ? "auto" : "us-east-1");
    struct s3 *s;
    int n;

    if (!st->http)
        return mi_err_set(err, STORAGE_E_CONFIG, "storage: s3 needs the http adapter");
    if (!cfg->bucket || !cfg->bucket[0])
        return mi_err_set(err, STORAGE_E_CONFIG, "%s is not set",
                          r2 ? "R2_BUCKET" : "AWS_S3_BUCKET");
    if (!cfg->access_key_id || !cfg->access_key_id[0])
        return mi_err_set(err, STORAGE_E_CONFIG, "%s is not set",
                          r2 ? "R2_ACCESS_KEY_ID" : "AWS_ACCESS_KEY_ID");
    if (!cfg->secret_access_key || !cfg->secret_access_key[0])
        return mi_err_set(err, STORAGE_E_CONFIG, "%s is not set",
                          r2 ? "R2_SECRET_ACCESS_KEY" : "AWS_SECRET_ACCESS_KEY");
    if (cfg->part_size < 5u * 1024 * 1024 || cfg->part_size > 5ull * 1024 * 1024 * 1024)
        return mi_err_set(err, STORAGE_E_CONFIG,
                          "MEDIA_PART_SIZE must be between 5 MiB and 5 GiB");
    if (r2 && (!cfg->endpoint || !cfg->endpoint[0]) &&
        (!cfg->r2_account_id || !cfg->r2_account_id[0]))
        return mi_err_set(err, STORAGE_E_CONFIG, "R2_ACCOUNT_ID or R2_ENDPOINT must be set");
    for (const char *p = cfg->bucket; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
            return mi_err_set(err, STORAGE_E_CONFIG,
                              "%s: bucket names use only a-z 0-9 - .",
                              r2 ? "R2_BUCKET" : "AWS_S3_BUCKET");
    }
    s = calloc(1, sizeof(*s));
    if (!s)
        return mi_err_set(err, -ENOMEM, "s3: out of memory");
    s->st = st;
    s->rnd = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid() ^ (uintptr_t)s;
    if (!s->rnd)
        s->rnd = 1;
    if (cfg->endpoint && cfg->endpoint[0]) {
        const char *e = cfg->endpoint;
        bool scheme = strstr(e, "://") != NULL;
        size_t len;

        n = snprintf(s->base, sizeof(s->base), "%s%s", scheme ? "" : "https://", e);
        len = strlen(s->base);
        while (len > 0 && s->base[len - 1] == '/')
            s->base[--len] = '\0';
        s->path_style = true;
    } else if (r2) {
        n = snprintf(s->base, sizeof(s->base), "https://%s.r2.cloudflarestorage.com",
                     cfg->r2_account_id);
        s->path_style = true;
    } else {
        n = snprintf(s->base, sizeof(s->base), "https://%s.s3.%s.amazonaws.com", cfg->bucket,
                     region);
    }
    if (n < 0 || (size_t)n >= sizeof(s->base)) {
        free(s);
        return mi_err_set(err, STORAGE_E_CONFIG, "storage endpoint URL is too long");
    }
    s->unsigned_parts = cfg->payload_hash == STORAGE_PAYLOAD_UNSIGNED ||
                        (cfg->payload_hash == STORAGE_PAYLOAD_AUTO &&
                         !strncasecmp(s->base, "https://", 8));
    {
        const char *h = strstr(s->base, "://") + 3;
        size_t hl = strcspn(h, "/");

        if (hl == 0 || hl >= sizeof(s->host) || strlen(region) >= sizeof(s->region)) {
            free(s);
            return mi_err_set(err, STORAGE_E_CONFIG, "storage endpoint URL has no host");
        }
        memcpy(s->host, h, hl);
        s->host[hl] = '\0';
        memcpy(s->origin, s->base, (size_t)(h - s->base) + hl);
        s->origin[(h - s->base) + hl] = '\0';
        snprintf(s->region, sizeof(s->region), "%s", region);
    }
    st->priv = s;
    return 0;
}

static void s3_fini(struct storage *st)
{
    struct s3 *s = st->priv;

    if (s)
        sigv4_key_cache_clear(&s->key_cache);
    free(st->priv);
    st->priv = NULL;
}

static char *s3_url(const struct storage *st, const char *key)
{
    size_t n = strlen(st->cfg.bucket) + strlen(key) + 8;
    char *u = malloc(n);

    if (u)
        snprintf(u, n, "%s://%s/%s", st->kind == STORAGE_R2 ? "r2" : "s3", st->cfg.bucket, key);
    return u;
}

const struct storage_ops storage_s3_ops = {
    .name = "s3",
    .init = s3_init,
    .fini = s3_fini,
    .url = s3_url,
    .writer_open = s3_writer_open,
    .writer_write = s3_writer_write,
    .writer_commit = s3_writer_commit,
    .writer_abort = s3_writer_abort,
    .writer_free = s3_writer_free,
    .head = s3_head,
    .get = s3_get,
    .del = s3_del,
};

/* --- orphan uploads ----------------------------------------------------------------------- */

struct s3_lister {
    struct storage *st;
    char prefix[512];
    char key_marker[1100];
    char uid_marker[512];
    s3_upload_cb each;
    storage_done_cb done;
    void *ctx;
    bool stop;
};

static time_t parse_iso8601(const char *s)
{
    struct tm tm = { 0 };
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);

    return end ? timegm(&tm) : 0;
}

static void lister_entry(void *ctx, struct s3_xml *x)
{
    struct s3_lister *l = ctx;
    struct s3_upload u = { x->u_key, x->u_id, x->u_init, parse_iso8601(x->u_init) };

    if (!l->stop && !l->each(l->ctx, &u))
        l->stop = true;
}

static int lister_page(struct s3_lister *l, struct mi_err *err);

static void lister_done(void *ctx, struct s3_call *c, int status, struct http_req *rq,
                        struct s3_xml *x, const struct mi_err *err)
{
    struct s3_lister *l = ctx;
    struct mi_err e = MI_ERR_INIT;
    size_t blen = 0;
    const char *body;

    if (status == 0) {
        /* Parse again with the entry callback (the classifier parses without it). */
        struct s3_xml *px = calloc(1, sizeof(*px));
        body = http_req_body(rq, &blen);
        if (!px) {
            status = mi_err_set(&e, -ENOMEM, "s3 ListMultipartUploads: out of memory");
        } else {
            px->on_upload = lister_entry;
            px->ctx = l;
            if (xml_parse(px, body, blen) != 0)
                status = mi_err_set(&e, STORAGE_E_PERMANENT,
                                    "s3 ListMultipartUploads: malformed XML answer");
            if (status == 0 && px->truncated && !l->stop) {
                memcpy(l->key_marker, px->next_key, sizeof(l->key_marker));
                memcpy(l->uid_marker, px->next_uid, sizeof(l->uid_marker));
                free(px);
                status = lister_page(l, &e);
                if (status == 0)
                    return;
                px = NULL;
            }
            free(px);
        }
        err = status ? &e : NULL;
    }
    l->done(l->ctx, status, status ? err : NULL);
    free(l);
}

static int lister_page(struct s3_lister *l, struct mi_err *err)
{
    char query[6800], ep[1600], ek[3400], eu[1600];
    struct s3_call *c;
    int r;

    if (s3_uri_encode(l->prefix, false, ep, sizeof(ep)) < 0 ||
        s3_uri_encode(l->key_marker, false, ek, sizeof(ek)) < 0 ||
        s3_uri_encode(l->uid_marker, false, eu, sizeof(eu)) < 0)
        return mi_err_set(err, -ENOSPC, "s3 ListMultipartUploads: marker too long");
    /* Sorted: key-marker < prefix < upload-id-marker < uploads. */
    if (l->key_marker[0])
        snprintf(query, sizeof(query), "key-marker=%s&prefix=%s&upload-id-marker=%s&uploads=",
                 ek, ep, eu);
    else
        snprintf(query, sizeof(query), "prefix=%s&uploads=", ep);
    r = call_new(&c, l->st->priv, "ListMultipartUploads", HTTP_GET, NULL, query, err);
    if (r)
        return r;
    c->max_body = S3_LIST_XML_MAX;
    call_start(c, lister_done, l);
    return 0;
}

/**
 * s3_uploads_list() - see s3.h.
 */
int s3_uploads_list(struct storage *st, const char *prefix, s3_upload_cb each,
                    storage_done_cb done, void *ctx, struct mi_err *err)
{
    struct s3_lister *l;
    int r;

    if (st->ops != &storage_s3_ops)
        return mi_err_set(err, STORAGE_E_CONFIG, "uploads: the storage backend is not s3/r2");
    l = calloc(1, sizeof(*l));
    if (!l)
        return mi_err_set(err, -ENOMEM, "s3: out of memory");
    l->st = st;
    snprintf(l->prefix, sizeof(l->prefix), "%s", prefix ? prefix : "");
    l->each = each;
    l->done = done;
    l->ctx = ctx;
    r = lister_page(l, err);
    if (r)
        free(l);
    return r;
}

struct s3_abort_one {
    storage_done_cb done;
    void *ctx;
};

static void abort_one_done(void *ctx, struct s3_call *c, int status, struct http_req *rq,
                           struct s3_xml *x, const struct mi_err *err)
{
    struct s3_abort_one *a = ctx;

    a->done(a->ctx, status, status ? err : NULL);
    free(a);
}

/**
 * s3_abort_upload() - see s3.h.
 */
int s3_abort_upload(struct storage *st, const char *key, const char *upload_id,
                    storage_done_cb done, void *ctx, struct mi_err *err)
{
    char query[1024], eid[768];
    struct s3_abort_one *a;
    struct s3_call *c;
    int r;

    if (st->ops != &storage_s3_ops)
        return mi_err_set(err, STORAGE_E_CONFIG, "uploads: the storage backend is not s3/r2");
    if (s3_uri_encode(upload_id, false, eid, sizeof(eid)) < 0)
        return mi_err_set(err, -EINVAL, "s3 AbortMultipartUpload: upload id too long");
    snprintf(query, sizeof(query), "uploadId=%s", eid);
    a = calloc(1, sizeof(*a));
    if (!a)
        return mi_err_set(err, -ENOMEM, "s3: out of memory");
    r = call_new(&c, st->priv, "AbortMultipartUpload", HTTP_DELETE, key, query, err);
    if (r) {
        free(a);
        return r;
    }
    c->no_such_upload_ok = true;
    a->done = done;
    a->ctx = ctx;
    call_start(c, abort_one_done, a);
    return 0;
}

/* The sweep: list everything first (bounded), then abort one at a time. */
struct s3_sweep {
    struct storage *st;
    time_t cutoff;
    struct s3_orphan_stats stats;
    char **keys, **ids;
    size_t n, cap, next;
    s3_orphans_cb done;
    void *ctx;
    struct mi_err first_err;
    int status;
};

#define S3_SWEEP_MAX 100000
#define S3_SWEEP_MAX_TEXT "100000"

/* Stop listing: the uploads collected so far are still aborted, and the end says why. */
static bool sweep_stop(struct s3_sweep *sw, int status, const char *why)
{
    if (!sw->status) {
        sw->status = status;
        mi_err_set(&sw->first_err, status, "s3 orphan clean-up: %s", why);
    }
    return false;
}

static bool sweep_each(void *ctx, const struct s3_upload *u)
{
    struct s3_sweep *sw = ctx;

    sw->stats.listed++;
    if (u->initiated_at == 0 || u->initiated_at > sw->cutoff)
        return true;
    sw->stats.old++;
    if (sw->n == sw->cap) {
        size_t cap = sw->cap ? sw->cap * 2 : 64;
        char **k, **i;

        if (cap > S3_SWEEP_MAX)
            return sweep_stop(sw, -E2BIG, "more than " S3_SWEEP_MAX_TEXT " old uploads: the "
                              "first ones are aborted, run it again for the rest");
        k = realloc(sw->keys, cap * sizeof(*k));
        if (k)
            sw->keys = k;
        i = realloc(sw->ids, cap * sizeof(*i));
        if (i)
            sw->ids = i;
        if (!k || !i)
            return sweep_stop(sw, -ENOMEM, "out of memory listing old uploads");
        sw->cap = cap;
    }
    sw->keys[sw->n] = strdup(u->key);
    sw->ids[sw->n] = strdup(u->upload_id);
    if (!sw->keys[sw->n] || !sw->ids[sw->n]) {
        free(sw->keys[sw->n]);
        free(sw->ids[sw->n]);
        return sweep_stop(sw, -ENOMEM, "out of memory listing old uploads");
    }
    sw->n++;
    return true;
}

static void sweep_end(struct s3_sweep *sw)
{
    sw->done(sw->ctx, sw->status, &sw->stats, sw->status ? &sw->first_err : NULL);
    for (size_t i = 0; i < sw->n; i++) {
        free(sw->keys[i]);
        free(sw->ids[i]);
    }
    free(sw->keys);
    free(sw->ids);
    free(sw);
}

static void sweep_next(struct s3_sweep *sw);

static void sweep_aborted(void *ctx, int status, const struct mi_err *err)
{
    struct s3_sweep *sw = ctx;

    if (status == 0) {
        sw->stats.aborted++;
    } else {
        sw->stats.failed++;
        if (!sw->status) {
            sw->status = status;
            if (err)
                sw->first_err = *err;
        }
    }
    sweep_next(sw);
}

static void sweep_next(struct s3_sweep *sw)
{
    while (sw->next < sw->n) {
        struct mi_err err = MI_ERR_INIT;
        size_t i = sw->next++;
        int r = s3_abort_upload(sw->st, sw->keys[i], sw->ids[i], sweep_aborted, sw, &err);

        if (r == 0)
            return;
        sw->stats.failed++;
        if (!sw->status) {
            sw->status = r;
            sw->first_err = err;
        }
    }
    sweep_end(sw);
}

static void sweep_listed(void *ctx, int status, const struct mi_err *err)
{
    struct s3_sweep *sw = ctx;

    if (status != 0) {
        sw->status = status;
        if (err)
            sw->first_err = *err;
        sweep_end(sw);
        return;
    }
    sweep_next(sw);
}

/**
 * s3_abort_orphans() - see s3.h.
 */
int s3_abort_orphans(struct storage *st, const char *prefix, uint64_t older_than_s, time_t now,
                     s3_orphans_cb done, void *ctx, struct mi_err *err)
{
    struct s3_sweep *sw = calloc(1, sizeof(*sw));
    int r;

    if (!sw)
        return mi_err_set(err, -ENOMEM, "s3: out of memory");
    sw->st = st;
    sw->cutoff = now - (time_t)older_than_s;
    sw->done = done;
    sw->ctx = ctx;
    r = s3_uploads_list(st, prefix, sweep_each, sweep_listed, sw, err);
    if (r)
        free(sw);
    return r;
}
