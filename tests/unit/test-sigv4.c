/*
 * test-sigv4.c - the SigV4 signer against AWS's published examples.
 *
 * Sources of the expected values (all published by AWS):
 * - IAM User Guide, "Examples of how to derive a signing key" and the worked
 *   ListUsers example (date 20150830, us-east-1, iam).
 * - AWS Signature Version 4 test suite: get-vanilla, post-vanilla and
 *   get-vanilla-query-order-key-case (AKIDEXAMPLE, 20150830T123600Z, service "service").
 * - Amazon S3 API Reference, "Signature Calculations for the Authorization Header:
 *   Transferring Payload in a Single Chunk": GET Object (Range), PUT Object,
 *   GET Bucket Lifecycle, GET Bucket (List Objects); examplebucket, AKIAIOSFODNN7EXAMPLE,
 *   20130524T000000Z.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sigv4.h"
#include "tap.h"

#define T_20130524 ((time_t)1369353600)   /* 20130524T000000Z */
#define T_20150830 ((time_t)1440938160)   /* 20150830T123600Z */

static const struct sigv4_credentials s3_cred = {
    .access_key_id = "AKIAIOSFODNN7EXAMPLE",
    .secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    .region = "us-east-1",
    .service = "s3",
};

static const struct sigv4_credentials suite_cred = {
    .access_key_id = "AKIDEXAMPLE",
    .secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    .region = "us-east-1",
    .service = "service",
};

static void test_signing_key(void)
{
    unsigned char key[32];
    char hex[65];

    TAP_EQ_INT(sigv4_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830",
                                 "us-east-1", "iam", key), 0);
    sigv4_hex(key, sizeof(key), hex);
    TAP_EQ_STR(hex, "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
    TAP_EQ_INT(sigv4_signing_key("", "20150830", "us-east-1", "iam", key), -EINVAL);
    TAP_EQ_INT(sigv4_signing_key("s", "2015083", "us-east-1", "iam", key), -EINVAL);
}

static void test_sha256(void)
{
    char hex[65];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    TAP_EQ_INT(sigv4_sha256_hex(NULL, 0, hex), 0);
    TAP_EQ_STR(hex, SIGV4_EMPTY_SHA256);
    TAP_EQ_INT(sigv4_sha256_hex("Welcome to Amazon S3.", 21, hex), 0);
    TAP_EQ_STR(hex, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    /* Streaming in two pieces gives the same digest. */
    TAP_CHECK(ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1);
    EVP_DigestUpdate(ctx, "Welcome to ", 11);
    EVP_DigestUpdate(ctx, "Amazon S3.", 10);
    TAP_EQ_INT(sigv4_sha256_final_hex(ctx, hex), 0);
    TAP_EQ_STR(hex, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    EVP_MD_CTX_free(ctx);
}

/* The IAM guide's worked example: a query, and a header the signer does not add. */
static void test_iam_list_users(void)
{
    struct sigv4_kv q[] = { { "Version", "2010-05-08" }, { "Action", "ListUsers" } };
    struct sigv4_kv h[] = {
        { "Host", "iam.amazonaws.com" },
        { "Content-Type", "application/x-www-form-urlencoded; charset=utf-8" },
    };
    struct sigv4_request rq = {
        .method = "GET", .path = "/", .query = q, .n_query = 2, .headers = h, .n_headers = 2,
        .payload_hash = SIGV4_EMPTY_SHA256, .omit_content_sha256 = true,
    };
    struct sigv4_credentials cred = suite_cred;
    struct sigv4_result res;
    struct mi_err err = MI_ERR_INIT;

    cred.service = "iam";
    TAP_EQ_INT(sigv4_sign(&rq, &cred, T_20150830, &res, &err), 0);
    TAP_EQ_STR(res.canonical_request,
               "GET\n/\nAction=ListUsers&Version=2010-05-08\n"
               "content-type:application/x-www-form-urlencoded; charset=utf-8\n"
               "host:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
               "content-type;host;x-amz-date\n" SIGV4_EMPTY_SHA256);
    TAP_EQ_STR(res.string_to_sign,
               "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\n"
               "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59");
    TAP_EQ_STR(res.signature, "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
    sigv4_result_clear(&res);
}

static void test_suite_vanilla(void)
{
    struct sigv4_kv h[] = { { "Host", "example.amazonaws.com" } };
    struct sigv4_kv q[] = { { "Param2", "value2" }, { "Param1", "value1" } };
    struct sigv4_request rq = {
        .method = "GET", .path = "/", .headers = h, .n_headers = 1,
        .payload_hash = SIGV4_EMPTY_SHA256, .omit_content_sha256 = true,
    };
    struct sigv4_result res;
    struct mi_err err = MI_ERR_INIT;

    /* get-vanilla */
    TAP_EQ_INT(sigv4_sign(&rq, &suite_cred, T_20150830, &res, &err), 0);
    TAP_EQ_STR(res.canonical_request,
               "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
               "host;x-amz-date\n" SIGV4_EMPTY_SHA256);
    TAP_EQ_STR(res.string_to_sign,
               "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
               "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63");
    TAP_EQ_STR(res.authorization,
               "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
               "aws4_request, SignedHeaders=host;x-amz-date, "
               "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    TAP_EQ_STR(res.amz_date, "20150830T123600Z");
    sigv4_result_clear(&res);

    /* post-vanilla */
    rq.method = "POST";
    TAP_EQ_INT(sigv4_sign(&rq, &suite_cred, T_20150830, &res, &err), 0);
    TAP_EQ_STR(res.signature, "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
    sigv4_result_clear(&res);

    /* get-vanilla-query-order-key-case: given out of order, signed sorted. */
    rq.method = "GET";
    rq.query = q;
    rq.n_query = 2;
    TAP_EQ_INT(sigv4_sign(&rq, &suite_cred, T_20150830, &res, &err), 0);
    TAP_EQ_STR(res.canonical_query, "Param1=value1&Param2=value2");
    TAP_EQ_STR(res.signature, "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
    sigv4_result_clear(&res);
}

/* AWS's S3 GET Object example request (the range of a text object). */
static const struct sigv4_kv get_object_headers[] = {
    { "Range", "bytes=0-9" },
    { "Host", "examplebucket.s3.amazonaws.com" },
};
static const struct sigv4_request get_object = {
    .method = "GET", .path = "/test.txt", .headers = get_object_headers, .n_headers = 2,
    .payload_hash = SIGV4_EMPTY_SHA256,
};

static void test_s3_get_object(void)
{
    struct sigv4_request rq = get_object;
    struct sigv4_result res;
    struct mi_err err = MI_ERR_INIT;

    TAP_EQ_INT(sigv4_sign(&rq, &s3_cred, T_20130524, &res, &err), 0);
    TAP_EQ_STR(res.canonical_request,
               "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
               "x-amz-content-sha256:" SIGV4_EMPTY_SHA256 "\nx-amz-date:20130524T000000Z\n\n"
               "host;range;x-amz-content-sha256;x-amz-date\n" SIGV4_EMPTY_SHA256);
    TAP_EQ_STR(res.string_to_sign,
               "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
               "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
    TAP_EQ_STR(res.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    TAP_EQ_STR(res.authorization,
               "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
               "aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
               "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    sigv4_result_clear(&res);
}

/* The same AWS example through a key cache: filled on first use, reused, replaced next day. */
static void test_key_cache(void)
{
    struct sigv4_request rq = get_object;
    struct sigv4_key_cache kc = { 0 };
    struct sigv4_credentials cred = s3_cred;
    struct sigv4_result res, plain;
    struct mi_err err = MI_ERR_INIT;
    unsigned char want[32];

    cred.key_cache = &kc;
    for (int i = 0; i < 2; i++) {
        TAP_EQ_INT(sigv4_sign(&rq, &cred, T_20130524, &res, &err), 0);
        TAP_EQ_STR(res.signature,
                   "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
        TAP_EQ_STR(kc.date8, "20130524");
        sigv4_result_clear(&res);
    }
    /* a day later: a new key, and the same signature as without a cache */
    TAP_EQ_INT(sigv4_sign(&rq, &cred, T_20130524 + 86400, &res, &err), 0);
    TAP_EQ_INT(sigv4_sign(&rq, &s3_cred, T_20130524 + 86400, &plain, &err), 0);
    TAP_EQ_STR(res.signature, plain.signature);
    TAP_EQ_STR(kc.date8, "20130525");
    TAP_EQ_INT(sigv4_signing_key(s3_cred.secret_access_key, "20130525", "us-east-1", "s3", want), 0);
    TAP_CHECK(memcmp(kc.key, want, 32) == 0);
    sigv4_result_clear(&res);
    sigv4_result_clear(&plain);
    sigv4_key_cache_clear(&kc);
    TAP_EQ_STR(kc.date8, "");
}

static void test_s3_put_object(void)
{
    struct sigv4_kv h[] = {
        { "Host", "examplebucket.s3.amazonaws.com" },
        { "Date", "Fri, 24 May 2013 00:00:00 GMT" },
        { "x-amz-storage-class", "REDUCED_REDUNDANCY" },
    };
    char hash[65];
    struct sigv4_request rq = {
        .method = "PUT", .path = "/test$file.text", .headers = h, .n_headers = 3,
        .payload_hash = hash,
    };
    struct sigv4_result res;
    struct mi_err err = MI_ERR_INIT;

    TAP_EQ_INT(sigv4_sha256_hex("Welcome to Amazon S3.", 21, hash), 0);
    TAP_EQ_INT(sigv4_sign(&rq, &s3_cred, T_20130524, &res, &err), 0);
    TAP_EQ_STR(res.canonical_uri, "/test%24file.text");
    TAP_EQ_STR(res.canonical_request,
               "PUT\n/test%24file.text\n\ndate:Fri, 24 May 2013 00:00:00 GMT\n"
               "host:examplebucket.s3.amazonaws.com\n"
               "x-amz-content-sha256:"
               "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n"
               "x-amz-date:20130524T000000Z\nx-amz-storage-class:REDUCED_REDUNDANCY\n\n"
               "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n"
               "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    TAP_EQ_STR(res.string_to_sign,
               "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
               "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d");
    TAP_EQ_STR(res.signature, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    sigv4_result_clear(&res);
}

static void test_s3_bucket_examples(void)
{
    struct sigv4_kv h[] = { { "host", "examplebucket.s3.amazonaws.com" } };
    struct sigv4_kv lifecycle[] = { { "lifecycle", NULL } };
    struct sigv4_kv list[] = { { "prefix", "J" }, { "max-keys", "2" } };
    struct sigv4_request rq = {
        .method = "GET", .path = "/", .query = lifecycle, .n_query = 1, .headers = h,
        .n_headers = 1, .payload_hash = SIGV4_EMPTY_SHA256,
    };
    struct sigv4_result res;
    struct mi_err err = MI_ERR_INIT;

    TAP_EQ_INT(sigv4_sign(&rq, &s3_cred, T_20130524, &res, &err), 0);
    TAP_EQ_STR(res.canonical_query, "lifecycle=");
    TAP_EQ_STR(res.string_to_sign,
               "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
               "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca");
    TAP_EQ_STR(res.signature, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
    sigv4_result_clear(&res);

    rq.query = list;
    rq.n_query = 2;
    TAP_EQ_INT(sigv4_sign(&rq, &s3_cred, T_20130524, &res, &err), 0);
    TAP_EQ_STR(res.canonical_query, "max-keys=2&prefix=J");
    TAP_EQ_STR(res.string_to_sign,
               "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
               "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7");
    TAP_EQ_STR(res.signature, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
    sigv4_result_clear(&res);
}

/* What our S3 client sends: multipart queries, odd upload ids, keys, tokens. */
static void test_encoding_and_tokens(void)
{
    struct sigv4_kv h[] = { { "host", "127.0.0.1:5000" }, { "X-Amz-Meta-Sha256", "  ab   cd " } };
    struct sigv4_kv part[] = { { "uploadId", "a+b/c=d e" }, { "partNumber", "2" } };
    struct sigv4_kv uploads[] = { { "uploads", NULL } };
    struct sigv4_request rq = {
        .method = "PUT", .path = "/bucket/media/1/ab c$~.-_", .query = part, .n_query = 2,
        .headers = h, .n_headers = 2, .payload_hash = SIGV4_UNSIGNED_PAYLOAD,
    };
    struct sigv4_credentials cred = s3_cred;
    struct sigv4_result res;
    struct mi_err err = MI_ERR_INIT;
    char *e;

    TAP_EQ_INT(sigv4_sign(&rq, &s3_cred, T_20130524, &res, &err), 0);
    TAP_EQ_STR(res.canonical_uri, "/bucket/media/1/ab%20c%24~.-_");
    TAP_EQ_STR(res.canonical_query, "partNumber=2&uploadId=a%2Bb%2Fc%3Dd%20e");
    TAP_CHECK(strstr(res.canonical_request, "\nx-amz-meta-sha256:ab cd\n") != NULL);
    TAP_CHECK(strstr(res.canonical_request, "\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n") != NULL);
    TAP_CHECK(strstr(res.canonical_request, "\nUNSIGNED-PAYLOAD") != NULL);
    TAP_EQ_STR(res.signed_headers, "host;x-amz-content-sha256;x-amz-date;x-amz-meta-sha256");
    sigv4_result_clear(&res);

    rq.method = "POST";
    rq.path = "bucket/media/1/x";   /* no leading slash: one is added */
    rq.query = uploads;
    rq.n_query = 1;
    cred.session_token = "FQoG+token/with=base64";
    TAP_EQ_INT(sigv4_sign(&rq, &cred, T_20130524, &res, &err), 0);
    TAP_EQ_STR(res.canonical_uri, "/bucket/media/1/x");
    TAP_EQ_STR(res.canonical_query, "uploads=");
    TAP_EQ_STR(res.signed_headers,
               "host;x-amz-content-sha256;x-amz-date;x-amz-meta-sha256;x-amz-security-token");
    TAP_CHECK(strstr(res.canonical_request,
                     "\nx-amz-security-token:FQoG+token/with=base64\n") != NULL);
    TAP_CHECK(strstr(res.authorization, "FQoG") == NULL);
    TAP_CHECK(strstr(res.authorization, cred.secret_access_key) == NULL);
    sigv4_result_clear(&res);

    e = sigv4_uri_encode("a/b c%2F\xc3\xa9", 10, true);
    TAP_EQ_STR(e, "a/b%20c%252F%C3%A9");
    free(e);
    e = sigv4_uri_encode("a/b", 3, false);
    TAP_EQ_STR(e, "a%2Fb");
    free(e);
}

static int sign_err(struct sigv4_request *rq, const struct sigv4_credentials *cred,
                    struct mi_err *err)
{
    struct sigv4_result res;
    int r;

    mi_err_clear(err);
    r = sigv4_sign(rq, cred, T_20130524, &res, err);
    /* On failure the result is empty, so clearing it is harmless. */
    if (r)
        TAP_CHECK(res.authorization == NULL && res.canonical_request == NULL);
    if (r && cred->secret_access_key && *cred->secret_access_key)   /* never quotes it */
        TAP_CHECK(strstr(err->msg, cred->secret_access_key) == NULL);
    sigv4_result_clear(&res);
    return r;
}

static void test_refusals(void)
{
    struct sigv4_kv nohost[] = { { "range", "bytes=0-1" } };
    struct sigv4_kv dup[] = { { "host", "a" }, { "Host", "b" } };
    struct sigv4_kv own[] = { { "host", "a" }, { "X-Amz-Date", "20130524T000000Z" } };
    struct sigv4_kv crlf[] = { { "host", "a" }, { "x-amz-meta-a", "b\r\nx-evil: 1" } };
    struct sigv4_kv badname[] = { { "host", "a" }, { "bad name", "1" } };
    struct sigv4_kv ok[] = { { "host", "a" } };
    struct sigv4_kv noname[] = { { "", "1" } };
    struct sigv4_request rq = { .method = "GET", .path = "/", .payload_hash = SIGV4_EMPTY_SHA256 };
    struct sigv4_credentials cred = s3_cred;
    struct mi_err err = MI_ERR_INIT;

    rq.headers = nohost;
    rq.n_headers = 1;
    TAP_EQ_INT(sign_err(&rq, &cred, &err), -EINVAL);
    TAP_CHECK(strstr(err.msg, "host") != NULL);
    rq.headers = dup;
    rq.n_headers = 2;
    TAP_EQ_INT(sign_err(&rq, &cred, &err), -EINVAL);
    rq.headers = own;
    TAP_EQ_INT(sign_err(&rq, &cred, &err), -EINVAL);
    rq.headers = crlf;
    TAP_EQ_INT(sign_err(&rq, &cred, &err), -EINVAL);
    rq.headers = badname;
    TAP_EQ_INT(sign_err(&rq, &cred, &err), -EINVAL);

    rq.headers = ok;
    rq.n_headers = 1;
    rq.query = noname;
    rq.n_query = 1;
    TAP_EQ_INT(sign_err(&rq, &cred, &err), -EINVAL);
    rq.n_query = 0;
    rq.payload_hash = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
    TAP_EQ_INT(sign_err(&rq, &cred, &err), -EINVAL);
    rq.payload_hash = "abc";
    TAP_EQ_INT(sign_err(&rq, &cred, &err), -EINVAL);
    rq.payload_hash = SIGV4_EMPTY_SHA256;
    rq.method = "get";
    TAP_EQ_INT(sign_err(&rq, &cred, &err), -EINVAL);
    rq.method = "GET";
    TAP_EQ_INT(sign_err(&rq, &cred, &err), 0);

    cred.secret_access_key = "";
    TAP_EQ_INT(sign_err(&rq, &cred, &err), -EINVAL);
    cred = s3_cred;
    cred.region = "us/east";
    TAP_EQ_INT(sign_err(&rq, &cred, &err), -EINVAL);
    cred = s3_cred;
    cred.access_key_id = "AKIA, Signature=x";
    TAP_EQ_INT(sign_err(&rq, &cred, &err), -EINVAL);
    cred = s3_cred;
    cred.session_token = "tok\nen";
    TAP_EQ_INT(sign_err(&rq, &cred, &err), -EINVAL);
    /* No error message ever carries the secret. */
    TAP_CHECK(strstr(err.msg, "EXAMPLEKEY") == NULL);
}

static void test_bounds(void)
{
    size_t n = SIGV4_MAX_TEXT + 10;
    char *big = malloc(n + 1);
    struct sigv4_kv h[] = { { "host", "a" }, { "x-amz-meta-big", big } };
    struct sigv4_request rq = {
        .method = "GET", .path = "/", .headers = h, .n_headers = 2,
        .payload_hash = SIGV4_EMPTY_SHA256,
    };
    struct sigv4_result res;
    struct mi_err err = MI_ERR_INIT;
    char date[17];

    memset(big, 'x', n);
    big[n] = '\0';
    TAP_EQ_INT(sigv4_sign(&rq, &s3_cred, T_20130524, &res, &err), -E2BIG);
    sigv4_result_clear(&res);
    h[1].value = "1";
    rq.path = big;   /* a path of ~64 KiB encodes to more than the bound */
    TAP_EQ_INT(sigv4_sign(&rq, &s3_cred, T_20130524, &res, &err), -E2BIG);
    sigv4_result_clear(&res);
    free(big);

    TAP_EQ_INT(sigv4_amz_date(0, date), 0);
    TAP_EQ_STR(date, "19700101T000000Z");
    TAP_EQ_INT(sigv4_amz_date((time_t)1709164800, date), 0);
    TAP_EQ_STR(date, "20240229T000000Z");
}

int main(void)
{
    test_signing_key();
    test_sha256();
    test_iam_list_users();
    test_suite_vanilla();
    test_s3_get_object();
    test_key_cache();
    test_s3_put_object();
    test_s3_bucket_examples();
    test_encoding_and_tokens();
    test_refusals();
    test_bounds();
    return tap_done();
}
