/*
 * sigv4.h - AWS Signature Version 4 (header form) for S3 requests, as pure functions.
 *
 * One call, sigv4_sign(), turns a request description into everything a sender needs:
 * the encoded path and query to put on the wire, the x-amz-date value and the
 * Authorization header value. It also returns the intermediate texts (canonical
 * request, string to sign) so that tests can compare them with AWS's published
 * examples and so that a SignatureDoesNotMatch from a server can be debugged by
 * comparing with the <CanonicalRequest> it echoes back.
 *
 * A sender builds the URL from the result, never from its own encoding:
 *
 *     struct sigv4_kv q[] = { { "partNumber", "2" }, { "uploadId", upload_id } };
 *     struct sigv4_kv h[] = { { "host", "127.0.0.1:5000" } };
 *     struct sigv4_request rq = { .method = "PUT", .path = "/bucket/media/1/abc",
 *         .query = q, .n_query = 2, .headers = h, .n_headers = 1,
 *         .payload_hash = "UNSIGNED-PAYLOAD" };
 *     sigv4_sign(&rq, &cred, time(NULL), &res, &err);
 *     url = endpoint + res.canonical_uri + "?" + res.canonical_query;
 *     headers: "x-amz-date: " res.amz_date, "x-amz-content-sha256: " payload_hash,
 *              "x-amz-security-token: " token (when set), "Authorization: " res.authorization,
 *              and every header of h[] with the same value.
 *
 * The signer adds and signs x-amz-date, x-amz-content-sha256 (unless
 * omit_content_sha256) and x-amz-security-token (when a session token is set); the
 * caller must not pass those, nor Authorization, in the header list.
 *
 * Encoding follows S3: every byte outside A-Z a-z 0-9 - . _ ~ is percent-encoded with
 * uppercase hex; '/' is kept in the path (each segment is encoded once, no dot-segment
 * normalisation) and encoded in query names and values, so an upload id such as
 * "a+b/c=" becomes "a%2Bb%2Fc%3D".
 */
#ifndef MI_SIGV4_H
#define MI_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/evp.h>

#include "err.h"

/* Upper bound of every text sigv4_sign() produces; longer inputs give -E2BIG. */
#define SIGV4_MAX_TEXT (64 * 1024)

/* The literal payload hash for bodies that are not hashed up front (S3 only). */
#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
/* sha256("") in hex: the payload hash of a request without a body. */
#define SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* A name and a value, both borrowed. For queries they are raw (not yet encoded). */
struct sigv4_kv {
    const char *name;
    const char *value;        /* NULL is the same as "" (e.g. "?uploads" → "uploads=") */
};

struct sigv4_request {
    const char *method;               /* "GET", "PUT", "POST", "HEAD", "DELETE" */
    const char *path;                 /* raw path, "/bucket/media/1/x"; NULL or "" is "/" */
    const struct sigv4_kv *query;     /* any order; sorted by the signer */
    size_t n_query;
    const struct sigv4_kv *headers;   /* must include "host"; names in any case */
    size_t n_headers;
    const char *payload_hash;         /* 64 lowercase hex digits or SIGV4_UNSIGNED_PAYLOAD */
    bool omit_content_sha256;         /* true: do not sign x-amz-content-sha256 (non-S3
                                         services, e.g. AWS's generic test suite) */
};

/*
 * The day's signing key, kept by a caller that signs many requests with the same
 * credentials (it saves four of the five HMACs of a signature), with libcrypto's SHA-256
 * and an HMAC already keyed with it (libcrypto 3 looks an algorithm up on every one-shot
 * call, which cost more than the hashing of a request). Holds key material as good as the
 * secret for that day: wipe it with sigv4_key_cache_clear() when done. Zero-initialise it.
 */
struct sigv4_key_cache {
    char date8[9];                    /* "" or the YYYYMMDD the key is for */
    unsigned char key[32];
    EVP_MD *sha256;                   /* fetched once; NULL until the first signature */
    EVP_MD_CTX *md;                   /* reused for the canonical request's hash */
    EVP_MAC_CTX *hmac;                /* HMAC-SHA256 keyed with @key (for @date8) */
};

/* Credentials and scope. Borrowed; the secret never appears in any output or message. */
struct sigv4_credentials {
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token;        /* NULL or "": no x-amz-security-token */
    const char *region;               /* "us-east-1"; "auto" for R2 */
    const char *service;              /* "s3" */
    struct sigv4_key_cache *key_cache; /* NULL, or a cache for exactly these credentials */
};

/** sigv4_key_cache_clear() - wipe @c and free what it holds (NULL is allowed); reusable. */
void sigv4_key_cache_clear(struct sigv4_key_cache *c);

/* What sigv4_sign() produces. The strings are owned (sigv4_result_clear frees them). */
struct sigv4_result {
    char amz_date[17];                /* "20130524T000000Z": the x-amz-date header value */
    char signature[65];               /* lowercase hex */
    char *canonical_uri;              /* encoded path, for the URL on the wire */
    char *canonical_query;            /* sorted, encoded query, "" when none */
    char *signed_headers;             /* "host;range;x-amz-content-sha256;x-amz-date" */
    char *canonical_request;
    char *string_to_sign;
    char *authorization;              /* the Authorization header value */
};

/**
 * sigv4_sign() - sign one request.
 * @req: the request (borrowed).
 * @cred: credentials and scope (borrowed).
 * @now: the signing time (UTC seconds); it becomes x-amz-date.
 * @out: filled on success; zeroed first, so sigv4_result_clear() is always safe on it.
 * @err: may be NULL; filled on error (never with the secret).
 * Return: 0; -EINVAL for a malformed request or credentials (missing host, a header
 * the signer sets itself, a duplicate header, a control character in a header value,
 * a bad payload hash...); -E2BIG when a text would exceed SIGV4_MAX_TEXT; -ENOMEM;
 * -EIO when libcrypto fails.
 */
int sigv4_sign(const struct sigv4_request *req, const struct sigv4_credentials *cred,
               time_t now, struct sigv4_result *out, struct mi_err *err) MI_MUSTCHECK;

/** sigv4_result_clear() - free the strings of @r and zero it; NULL is allowed. */
void sigv4_result_clear(struct sigv4_result *r);

/**
 * sigv4_signing_key() - derive the SigV4 signing key HMAC chain
 * (AWS4+secret → date → region → service → "aws4_request").
 * @date8: "YYYYMMDD". @key: receives the 32-byte key (the caller should wipe it).
 * Return: 0, -EINVAL (NULL or empty argument, secret longer than 1024 bytes) or -EIO.
 */
int sigv4_signing_key(const char *secret, const char *date8, const char *region,
                      const char *service, unsigned char key[32]) MI_MUSTCHECK;

/**
 * sigv4_sha256_hex() - lowercase hex sha256 of @len bytes at @buf into @out
 * (65 bytes, NUL-terminated). @buf may be NULL when @len is 0.
 * Return: 0 or -EIO (libcrypto failure; @out is then "").
 */
int sigv4_sha256_hex(const void *buf, size_t len, char out[65]);

/**
 * sigv4_sha256_final_hex() - finish a streaming sha256 started by the caller with
 * EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) and fed with EVP_DigestUpdate(), and
 * write its lowercase hex into @out (65 bytes). @ctx is borrowed and must be
 * re-initialised before reuse. Return: 0 or -EIO.
 */
int sigv4_sha256_final_hex(EVP_MD_CTX *ctx, char out[65]);

/** sigv4_hex() - lowercase hex of @n bytes into @out (2n+1 bytes, NUL-terminated). */
void sigv4_hex(const unsigned char *bin, size_t n, char *out);

/**
 * sigv4_uri_encode() - percent-encode @len bytes of @in the S3 way (A-Z a-z 0-9 - . _ ~
 * kept, uppercase hex) into a new string; '/' is kept when @keep_slash.
 * Return: a new string (caller frees), NULL on ENOMEM or when the result would exceed
 * SIGV4_MAX_TEXT.
 */
char *sigv4_uri_encode(const char *in, size_t len, bool keep_slash);

/**
 * sigv4_amz_date() - format @t as "YYYYMMDDTHHMMSSZ" (UTC) into @out (17 bytes).
 * Return: 0 or -EINVAL (a time outside years 0-9999).
 */
int sigv4_amz_date(time_t t, char out[17]);

#endif
