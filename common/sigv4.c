/*
 * sigv4.c - AWS Signature Version 4, header form (see sigv4.h).
 *
 * Everything here is a pure function of its arguments: no clock, no environment, no
 * global state. Texts are built in a small bounded string buffer so that a hostile
 * or runaway input (a huge header, thousands of query parameters) ends in -E2BIG
 * instead of unbounded allocation.
 */
#include "sigv4.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/hmac.h>
#include <openssl/params.h>

#define SECRET_MAX 1024

/* --- bounded string buffer ------------------------------------------------------ */

struct sbuf {
    char *p;
    size_t len, cap;
    int code;   /* first error: -ENOMEM or -E2BIG; later appends are ignored */
};

static void sb_reserve(struct sbuf *b, size_t more)
{
    size_t want, cap;
    char *np;

    if (b->code)
        return;
    if (more > SIGV4_MAX_TEXT - b->len) {
        b->code = -E2BIG;
        return;
    }
    want = b->len + more + 1;
    if (want <= b->cap)
        return;
    cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap *= 2;
    np = realloc(b->p, cap);
    if (!np) {
        b->code = -ENOMEM;
        return;
    }
    b->p = np;
    b->cap = cap;
}

static void sb_putn(struct sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    if (b->code)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
    sb_putn(b, s, strlen(s));
}

static void sb_putc(struct sbuf *b, char c)
{
    sb_putn(b, &c, 1);
}

/* Take the finished string out of @b; NULL when an append failed (b->code says why). */
static char *sb_take(struct sbuf *b)
{
    char *s;

    if (!b->code && !b->p) {
        sb_reserve(b, 0);
        if (!b->code)
            b->p[0] = '\0';
    }
    if (b->code) {
        free(b->p);
        b->p = NULL;
        return NULL;
    }
    s = b->p;
    memset(b, 0, sizeof(*b));
    return s;
}

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

static void sb_encode(struct sbuf *b, const char *in, size_t len, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];

        if (is_unreserved(c) || (keep_slash && c == '/')) {
            sb_putc(b, (char)c);
        } else {
            char e[3] = { '%', hex[c >> 4], hex[c & 15] };
            sb_putn(b, e, sizeof(e));
        }
    }
}

/* --- hashing helpers ------------------------------------------------------------- */

/**
 * sigv4_hex() - see sigv4.h.
 */
void sigv4_hex(const unsigned char *bin, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[bin[i] >> 4];
        out[2 * i + 1] = hex[bin[i] & 15];
    }
    out[2 * n] = '\0';
}

/**
 * sigv4_sha256_hex() - see sigv4.h.
 */
int sigv4_sha256_hex(const void *buf, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    static const unsigned char nothing[1];

    out[0] = '\0';
    if (EVP_Digest(buf ? buf : nothing, len, md, &n, EVP_sha256(), NULL) != 1 || n != 32)
        return -EIO;
    sigv4_hex(md, 32, out);
    return 0;
}

/**
 * sigv4_sha256_final_hex() - see sigv4.h.
 */
int sigv4_sha256_final_hex(EVP_MD_CTX *ctx, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    out[0] = '\0';
    if (EVP_DigestFinal_ex(ctx, md, &n) != 1 || n != 32)
        return -EIO;
    sigv4_hex(md, 32, out);
    return 0;
}

static int hmac256(const void *key, size_t klen, const char *msg, size_t mlen,
                   unsigned char out[32])
{
    unsigned int n = 0;

    if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, mlen, out, &n) ||
        n != 32)
        return -EIO;
    return 0;
}

/**
 * sigv4_signing_key() - see sigv4.h.
 */
int sigv4_signing_key(const char *secret, const char *date8, const char *region,
                      const char *service, unsigned char key[32])
{
    char ksecret[4 + SECRET_MAX + 1];
    unsigned char k[32];
    size_t slen;
    int r;

    if (!secret || !date8 || !region || !service || !*secret || !*region || !*service ||
        strlen(date8) != 8)
        return -EINVAL;
    slen = strlen(secret);
    if (slen > SECRET_MAX)
        return -EINVAL;
    memcpy(ksecret, "AWS4", 4);
    memcpy(ksecret + 4, secret, slen);
    r = hmac256(ksecret, 4 + slen, date8, 8, k);
    if (!r)
        r = hmac256(k, 32, region, strlen(region), k);
    if (!r)
        r = hmac256(k, 32, service, strlen(service), k);
    if (!r)
        r = hmac256(k, 32, "aws4_request", 12, key);
    /* The derived keys are as good as the secret for a day: do not leave them around. */
    OPENSSL_cleanse(ksecret, sizeof(ksecret));
    OPENSSL_cleanse(k, sizeof(k));
    return r;
}

/* --- the key cache's libcrypto objects ------------------------------------------------ */

/* sha256 of @len bytes in hex, with the cache's fetched digest when there is a cache. */
static int cache_sha256_hex(struct sigv4_key_cache *c, const void *buf, size_t len,
                            char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    if (!c)
        return sigv4_sha256_hex(buf, len, out);
    out[0] = '\0';
    if (!c->sha256)
        c->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!c->md)
        c->md = EVP_MD_CTX_new();
    if (!c->sha256 || !c->md || EVP_DigestInit_ex2(c->md, c->sha256, NULL) != 1 ||
        EVP_DigestUpdate(c->md, buf, len) != 1 || EVP_DigestFinal_ex(c->md, md, &n) != 1 ||
        n != 32)
        return -EIO;
    sigv4_hex(md, 32, out);
    return 0;
}

/* Keep @key (for @date8) and an HMAC keyed with it. On failure the cache is left empty. */
static int cache_set_key(struct sigv4_key_cache *c, const unsigned char key[32],
                         const char date8[9])
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);

    EVP_MAC_CTX_free(c->hmac);
    c->hmac = mac ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac);   /* the context holds its own reference */
    c->date8[0] = '\0';
    if (!c->hmac || EVP_MAC_init(c->hmac, key, 32, params) != 1) {
        EVP_MAC_CTX_free(c->hmac);
        c->hmac = NULL;
        OPENSSL_cleanse(c->key, sizeof(c->key));
        return -EIO;
    }
    memcpy(c->key, key, sizeof(c->key));
    memcpy(c->date8, date8, sizeof(c->date8));
    return 0;
}

/* HMAC-SHA256 of @msg with the cached key: a copy of the keyed context, so the key's
 * two padded blocks are not hashed again. */
static int cache_hmac(struct sigv4_key_cache *c, const char *msg, unsigned char out[32])
{
    EVP_MAC_CTX *m = c->hmac ? EVP_MAC_CTX_dup(c->hmac) : NULL;
    size_t n = 0;
    int r = -EIO;

    if (m && EVP_MAC_update(m, (const unsigned char *)msg, strlen(msg)) == 1 &&
        EVP_MAC_final(m, out, &n, 32) == 1 && n == 32)
        r = 0;
    EVP_MAC_CTX_free(m);
    return r;
}

/**
 * sigv4_amz_date() - see sigv4.h.
 */
int sigv4_amz_date(time_t t, char out[17])
{
    struct tm tm;

    out[0] = '\0';
    if (!gmtime_r(&t, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900)
        return -EINVAL;
    if (strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16) {
        out[0] = '\0';
        return -EINVAL;
    }
    return 0;
}

/**
 * sigv4_uri_encode() - see sigv4.h.
 */
char *sigv4_uri_encode(const char *in, size_t len, bool keep_slash)
{
    struct sbuf b = { 0 };

    sb_encode(&b, in, len, keep_slash);
    return sb_take(&b);
}

/* --- canonical pieces ------------------------------------------------------------ */

struct qpair {
    char *name;    /* encoded */
    char *value;   /* encoded */
};

static int qpair_cmp(const void *a, const void *b)
{
    const struct qpair *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    return c ? c : strcmp(x->value, y->value);
}

/* "name=value&..." sorted by encoded name, then encoded value (byte order). */
static int canonical_query(const struct sigv4_request *req, char **outp, struct mi_err *err)
{
    struct qpair *q = NULL;
    struct sbuf b = { 0 };
    size_t n = req->n_query;
    int r = 0;

    *outp = NULL;
    if (n > SIGV4_MAX_TEXT / 2)
        return mi_err_set(err, -E2BIG, "sigv4: too many query parameters");
    if (n) {
        q = calloc(n, sizeof(*q));
        if (!q)
            return mi_err_set(err, -ENOMEM, "sigv4: out of memory");
    }
    for (size_t i = 0; i < n && !r; i++) {
        const char *name = req->query[i].name, *value = req->query[i].value;

        if (!name || !*name) {
            r = mi_err_set(err, -EINVAL, "sigv4: query parameter %zu has no name", i);
            break;
        }
        q[i].name = sigv4_uri_encode(name, strlen(name), false);
        q[i].value = sigv4_uri_encode(value ? value : "", value ? strlen(value) : 0, false);
        if (!q[i].name || !q[i].value)
            r = mi_err_set(err, -ENOMEM, "sigv4: out of memory encoding the query");
    }
    if (!r && n) {
        qsort(q, n, sizeof(*q), qpair_cmp);
        for (size_t i = 0; i < n; i++) {
            if (i)
                sb_putc(&b, '&');
            sb_puts(&b, q[i].name);
            sb_putc(&b, '=');
            sb_puts(&b, q[i].value);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(q[i].name);
        free(q[i].value);
    }
    free(q);
    if (r) {
        free(b.p);
        return r;
    }
    *outp = sb_take(&b);
    if (!*outp)
        return mi_err_set(err, b.code, "sigv4: the query string is too long or memory ran out");
    return 0;
}

struct hdr {
    char *name;    /* lowercase */
    char *value;   /* trimmed, inner runs of blanks collapsed to one space */
};

static int hdr_cmp(const void *a, const void *b)
{
    const struct hdr *x = a, *y = b;

    return strcmp(x->name, y->name);
}

/* RFC 9110 token characters: what a header name may be made of. */
static bool is_tchar(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int hdr_fill(struct hdr *h, const char *name, const char *value, struct mi_err *err)
{
    size_t nlen, vlen, j = 0;
    bool blank = false;

    nlen = name ? strlen(name) : 0;
    if (nlen == 0 || nlen > 256)
        return mi_err_set(err, -EINVAL, "sigv4: a header name is empty or too long");
    vlen = value ? strlen(value) : 0;
    if (vlen > SIGV4_MAX_TEXT)
        return mi_err_set(err, -E2BIG, "sigv4: header %.64s is too long", name);
    h->name = malloc(nlen + 1);
    h->value = malloc(vlen + 1);
    if (!h->name || !h->value)
        return mi_err_set(err, -ENOMEM, "sigv4: out of memory");
    for (size_t i = 0; i < nlen; i++) {
        unsigned char c = (unsigned char)name[i];

        if (!is_tchar(c))
            return mi_err_set(err, -EINVAL, "sigv4: header name %.64s has a character "
                              "not allowed in HTTP header names", name);
        h->name[i] = (char)((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
    }
    h->name[nlen] = '\0';
    /* Trim both ends and collapse inner runs of blanks, as AWS's Trimall does. */
    for (size_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)value[i];

        if (c == ' ' || c == '\t') {
            blank = true;
            continue;
        }
        if (c < 0x20 || c == 0x7f)
            return mi_err_set(err, -EINVAL, "sigv4: header %.64s has a control character "
                              "in its value", h->name);
        if (blank && j > 0)
            h->value[j++] = ' ';
        blank = false;
        h->value[j++] = (char)c;
    }
    h->value[j] = '\0';
    return 0;
}

static bool set_by_signer(const char *lname)
{
    return !strcmp(lname, "x-amz-date") || !strcmp(lname, "x-amz-content-sha256") ||
           !strcmp(lname, "x-amz-security-token") || !strcmp(lname, "authorization");
}

/*
 * Write the canonical headers block ("name:value\n"...) into @cb and the signed
 * header list into @sh.
 */
static int canonical_headers(const struct sigv4_request *req, const char *amz_date,
                             const char *token, struct sbuf *cb, struct sbuf *sh,
                             struct mi_err *err)
{
    size_t n = 0, cap = req->n_headers + 3;
    struct hdr *h;
    bool host = false;
    int r = 0;

    if (req->n_headers > 1000)
        return mi_err_set(err, -E2BIG, "sigv4: too many headers");
    h = calloc(cap, sizeof(*h));
    if (!h)
        return mi_err_set(err, -ENOMEM, "sigv4: out of memory");
    for (size_t i = 0; i < req->n_headers && !r; i++) {
        r = hdr_fill(&h[n], req->headers[i].name, req->headers[i].value, err);
        n++;
        if (r)
            break;
        if (set_by_signer(h[n - 1].name))
            r = mi_err_set(err, -EINVAL, "sigv4: header %s is set by the signer; do not "
                           "pass it", h[n - 1].name);
        else if (!strcmp(h[n - 1].name, "host"))
            host = true;
    }
    if (!r && !host)
        r = mi_err_set(err, -EINVAL, "sigv4: the host header is missing");
    if (!r)
        r = hdr_fill(&h[n++], "x-amz-date", amz_date, err);
    if (!r && !req->omit_content_sha256)
        r = hdr_fill(&h[n++], "x-amz-content-sha256", req->payload_hash, err);
    if (!r && token)
        r = hdr_fill(&h[n++], "x-amz-security-token", token, err);
    if (!r) {
        qsort(h, n, sizeof(*h), hdr_cmp);
        for (size_t i = 0; i + 1 < n && !r; i++) {
            if (!strcmp(h[i].name, h[i + 1].name))
                r = mi_err_set(err, -EINVAL, "sigv4: header %s is given twice; join the "
                               "values with a comma instead", h[i].name);
        }
    }
    for (size_t i = 0; i < n && !r; i++) {
        sb_puts(cb, h[i].name);
        sb_putc(cb, ':');
        sb_puts(cb, h[i].value);
        sb_putc(cb, '\n');
        if (i)
            sb_putc(sh, ';');
        sb_puts(sh, h[i].name);
    }
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
    return r;
}

/* A value that goes into the Credential scope or a header must not break its syntax. */
static bool scope_part_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 256)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c <= 0x20 || c >= 0x7f || c == ',' || c == ';' || c == '=' ||
            c == '/')
            return false;
    }
    return true;
}

/* Session tokens are long base64 ('+', '/', '='); only blanks and controls break them. */
static bool token_ok(const char *s)
{
    if (strlen(s) > 8192)
        return false;
    for (; *s; s++) {
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    }
    return true;
}

static bool payload_hash_ok(const char *h)
{
    size_t i;

    if (!h)
        return false;
    if (!strcmp(h, SIGV4_UNSIGNED_PAYLOAD))
        return true;
    for (i = 0; h[i]; i++) {
        if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
            return false;
    }
    return i == 64;
}

static int check_inputs(const struct sigv4_request *req, const struct sigv4_credentials *cred,
                        struct mi_err *err)
{
    const char *m = req->method;

    if (!m || !*m || strlen(m) > 16)
        return mi_err_set(err, -EINVAL, "sigv4: the method is missing");
    for (; *m; m++) {
        if (*m < 'A' || *m > 'Z')
            return mi_err_set(err, -EINVAL, "sigv4: the method must be uppercase letters");
    }
    if (!payload_hash_ok(req->payload_hash))
        return mi_err_set(err, -EINVAL, "sigv4: the payload hash must be 64 lowercase hex "
                          "digits or UNSIGNED-PAYLOAD");
    if (!scope_part_ok(cred->access_key_id))
        return mi_err_set(err, -EINVAL, "sigv4: the access key id is empty or has spaces, "
                          "'/', ',', ';' or '=' in it");
    if (!cred->secret_access_key || !*cred->secret_access_key ||
        strlen(cred->secret_access_key) > SECRET_MAX)
        return mi_err_set(err, -EINVAL, "sigv4: the secret access key is empty or longer "
                          "than %d bytes", SECRET_MAX);
    if (!scope_part_ok(cred->region))
        return mi_err_set(err, -EINVAL, "sigv4: the region is empty or malformed");
    if (!scope_part_ok(cred->service))
        return mi_err_set(err, -EINVAL, "sigv4: the service is empty or malformed");
    if ((req->n_query && !req->query) || (req->n_headers && !req->headers))
        return mi_err_set(err, -EINVAL, "sigv4: a query or header count without an array");
    return 0;
}

/**
 * sigv4_result_clear() - see sigv4.h.
 */
void sigv4_result_clear(struct sigv4_result *r)
{
    if (!r)
        return;
    free(r->canonical_uri);
    free(r->canonical_query);
    free(r->signed_headers);
    free(r->canonical_request);
    free(r->string_to_sign);
    free(r->authorization);
    memset(r, 0, sizeof(*r));
}

static int sign_strings(const struct sigv4_request *req, const struct sigv4_credentials *cred,
                        struct sigv4_result *out, struct mi_err *err)
{
    struct sbuf cr = { 0 }, hb = { 0 }, sh = { 0 }, sts = { 0 }, au = { 0 };
    const char *path = req->path && *req->path ? req->path : "/";
    const char *token = cred->session_token && *cred->session_token ? cred->session_token
                                                                     : NULL;
    char date8[9], crhash[65], scope[3 * 256 + 32];
    unsigned char key[32], sig[32];
    struct sigv4_key_cache *kc = cred->key_cache;
    bool derive;
    int r;

    /* The canonical URI: the path encoded once, with a leading '/'. */
    if (path[0] != '/')
        sb_putc(&cr, '/');
    sb_encode(&cr, path, strlen(path), true);
    out->canonical_uri = sb_take(&cr);
    if (!out->canonical_uri)
        return mi_err_set(err, cr.code, "sigv4: the path is too long or memory ran out");
    r = canonical_query(req, &out->canonical_query, err);
    if (r)
        return r;
    r = canonical_headers(req, out->amz_date, token, &hb, &sh, err);
    if (r) {
        free(hb.p);
        free(sh.p);
        return r;
    }
    out->signed_headers = sb_take(&sh);
    sb_puts(&cr, req->method);
    sb_putc(&cr, '\n');
    sb_puts(&cr, out->canonical_uri);
    sb_putc(&cr, '\n');
    sb_puts(&cr, out->canonical_query);
    sb_putc(&cr, '\n');
    if (hb.p)
        sb_puts(&cr, hb.p);
    free(hb.p);
    sb_putc(&cr, '\n');
    sb_puts(&cr, out->signed_headers ? out->signed_headers : "");
    sb_putc(&cr, '\n');
    sb_puts(&cr, req->payload_hash);
    out->canonical_request = sb_take(&cr);
    if (!out->signed_headers || hb.code || !out->canonical_request)
        return mi_err_set(err, cr.code ? cr.code : (sh.code ? sh.code : -E2BIG),
                          "sigv4: the canonical request is too long or memory ran out");

    memcpy(date8, out->amz_date, 8);
    date8[8] = '\0';
    snprintf(scope, sizeof(scope), "%s/%s/%s/aws4_request", date8, cred->region,
             cred->service);
    if (cache_sha256_hex(kc, out->canonical_request,
                         strlen(out->canonical_request), crhash))
        return mi_err_set(err, -EIO, "sigv4: sha256 failed in libcrypto");
    sb_puts(&sts, "AWS4-HMAC-SHA256\n");
    sb_puts(&sts, out->amz_date);
    sb_putc(&sts, '\n');
    sb_puts(&sts, scope);
    sb_putc(&sts, '\n');
    sb_puts(&sts, crhash);
    out->string_to_sign = sb_take(&sts);
    if (!out->string_to_sign)
        return mi_err_set(err, -ENOMEM, "sigv4: out of memory");

    /* The signing key is derived once a day when there is a cache, else every time. */
    derive = !kc || strcmp(kc->date8, date8) != 0;
    r = derive ? sigv4_signing_key(cred->secret_access_key, date8, cred->region,
                                   cred->service, key) : 0;
    if (!r && kc && derive)
        r = cache_set_key(kc, key, date8);
    if (!r)
        r = kc ? cache_hmac(kc, out->string_to_sign, sig)
               : hmac256(key, sizeof(key), out->string_to_sign, strlen(out->string_to_sign),
                         sig);
    OPENSSL_cleanse(key, sizeof(key));
    if (r)
        return mi_err_set(err, -EIO, "sigv4: HMAC-SHA256 failed in libcrypto");
    sigv4_hex(sig, sizeof(sig), out->signature);

    sb_puts(&au, "AWS4-HMAC-SHA256 Credential=");
    sb_puts(&au, cred->access_key_id);
    sb_putc(&au, '/');
    sb_puts(&au, scope);
    sb_puts(&au, ", SignedHeaders=");
    sb_puts(&au, out->signed_headers);
    sb_puts(&au, ", Signature=");
    sb_puts(&au, out->signature);
    out->authorization = sb_take(&au);
    if (!out->authorization)
        return mi_err_set(err, -ENOMEM, "sigv4: out of memory");
    return 0;
}

/**
 * sigv4_key_cache_clear() - see sigv4.h.
 */
void sigv4_key_cache_clear(struct sigv4_key_cache *c)
{
    if (!c)
        return;
    EVP_MAC_CTX_free(c->hmac);
    EVP_MD_CTX_free(c->md);
    EVP_MD_free(c->sha256);
    OPENSSL_cleanse(c, sizeof(*c));
}

/**
 * sigv4_sign() - see sigv4.h.
 */
int sigv4_sign(const struct sigv4_request *req, const struct sigv4_credentials *cred,
               time_t now, struct sigv4_result *out, struct mi_err *err)
{
    int r;

    memset(out, 0, sizeof(*out));
    r = check_inputs(req, cred, err);
    if (r)
        return r;
    if (sigv4_amz_date(now, out->amz_date) < 0)
        return mi_err_set(err, -EINVAL, "sigv4: the signing time is out of range");
    if (cred->session_token && !token_ok(cred->session_token))
        return mi_err_set(err, -EINVAL, "sigv4: the session token has spaces or control "
                          "characters in it");
    r = sign_strings(req, cred, out, err);
    if (r)
        sigv4_result_clear(out);
    return r;
}
