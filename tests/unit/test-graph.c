/*
 * test-graph.c - the pure parts of graph.c: media JSON, sha256 forms, Graph error bodies,
 * classification (http-apis.md §A3), usage headers and the lookup URL.
 */
#include "graph.h"
#include "http.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

#define HEX "81d3bd8a1e9fb8c9d55b3ad2e69c20e0f5b7c3c8a0a6f2e7d9c1b3a5f7e9d0c3"
#define URL "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1&ext=2&hash=SECRET"

static int parse(struct graph_media *m, const char *json, const char *expect,
                 struct mi_err *err)
{
    return graph_media_parse(m, json, strlen(json), expect, err);
}

static void test_media_ok(void)
{
    struct graph_media m = GRAPH_MEDIA_NULL;
    struct mi_err err = MI_ERR_INIT;
    const char *j = "{\"messaging_product\":\"whatsapp\",\"url\":\"" URL "\","
                    "\"mime_type\":\"audio/ogg; codecs=opus\",\"sha256\":\"" HEX "\","
                    "\"file_size\":49664,\"id\":\"2087129492123864\"}";

    TAP_EQ_INT(parse(&m, j, "2087129492123864", &err), 0);
    TAP_EQ_STR(m.url, URL);
    TAP_EQ_STR(m.mime_type, "audio/ogg; codecs=opus");
    TAP_EQ_STR(m.id, "2087129492123864");
    TAP_EQ_STR(m.sha256_hex, HEX);
    TAP_EQ_INT(m.sha256[0], 0x81);
    TAP_EQ_INT(m.sha256[31], 0xc3);
    TAP_EQ_INT(m.file_size, 49664);

    struct graph_media k = GRAPH_MEDIA_NULL;
    graph_media_move(&k, &m);
    TAP_CHECK(m.url == NULL && m.file_size == -1);
    TAP_EQ_STR(k.id, "2087129492123864");
    graph_media_deinit(&k);
    graph_media_deinit(&k);
    TAP_CHECK(k.url == NULL);
    graph_media_deinit(NULL);
}

static void test_media_forms(void)
{
    struct graph_media m = GRAPH_MEDIA_NULL;
    struct mi_err err = MI_ERR_INIT;
    /* The same digest as HEX, in base64 with and without padding, and upper-case hex. */
    static const char *const shas[] = {
        "gdO9ih6fuMnVWzrS5pwg4PW3w8igpvLn2cGzpffp0MM=",
        "gdO9ih6fuMnVWzrS5pwg4PW3w8igpvLn2cGzpffp0MM",
        "81D3BD8A1E9FB8C9D55B3AD2E69C20E0F5B7C3C8A0A6F2E7D9C1B3A5F7E9D0C3",
    };
    char buf[512];

    for (size_t i = 0; i < 3; i++) {
        snprintf(buf, sizeof(buf), "{\"url\":\"http://127.0.0.1:9/x\",\"mime_type\":\"image/"
                 "jpeg\",\"sha256\":\"%s\",\"file_size\":\"303833\",\"id\":\"7\"}", shas[i]);
        TAP_EQ_INT(parse(&m, buf, "7", &err), 0);
        TAP_EQ_STR(m.sha256_hex, HEX);
        TAP_EQ_INT(m.file_size, 303833);
        graph_media_deinit(&m);
    }
    /* file_size absent or null: unknown. */
    TAP_EQ_INT(parse(&m, "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"" HEX
                     "\",\"id\":\"7\"}", NULL, &err), 0);
    TAP_EQ_INT(m.file_size, -1);
    graph_media_deinit(&m);
    TAP_EQ_INT(parse(&m, "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"" HEX
                     "\",\"id\":\"7\",\"file_size\":null}", NULL, &err), 0);
    TAP_EQ_INT(m.file_size, -1);
    graph_media_deinit(&m);
    TAP_EQ_INT(parse(&m, "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"" HEX
                     "\",\"id\":\"7\",\"file_size\":0}", NULL, &err), 0);
    TAP_EQ_INT(m.file_size, 0);
    graph_media_deinit(&m);
}

static void test_media_bad(void)
{
    struct graph_media m = GRAPH_MEDIA_NULL;
    struct mi_err err = MI_ERR_INIT;
    static const char *const bad[] = {
        "",
        "[]",
        "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"" HEX "\"}",
        "{\"url\":7,\"mime_type\":\"a/b\",\"sha256\":\"" HEX "\",\"id\":\"7\"}",
        "{\"url\":\"ftp://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"" HEX "\",\"id\":\"7\"}",
        "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\\r\\nX: y\",\"sha256\":\"" HEX "\","
        "\"id\":\"7\"}",
        "{\"url\":\"http://h/x\",\"mime_type\":\"\",\"sha256\":\"" HEX "\",\"id\":\"7\"}",
        "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"abc\",\"id\":\"7\"}",
        "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"" HEX "0\",\"id\":\"7\"}",
        "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"g1d3bd8a1e9fb8c9d55b3ad2e69"
        "c20e0f5b7c3c8a0a6f2e7d9c1b3a5f7e9d0c3\",\"id\":\"7\"}",
        "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"gdO9ih6fuMnVWzrS5pwg4PW3w8"
        "igpvLn2cGzpffp0M!=\",\"id\":\"7\"}",
        "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"" HEX "\",\"id\":7}",
        "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"" HEX "\",\"id\":\"8\"}",
        "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"" HEX "\",\"id\":\"7\","
        "\"file_size\":-1}",
        "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"" HEX "\",\"id\":\"7\","
        "\"file_size\":\"12a\"}",
        "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"" HEX "\",\"id\":\"7\","
        "\"file_size\":\"\"}",
        "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"" HEX "\",\"id\":\"7\","
        "\"file_size\":1.5}",
        "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"" HEX "\",\"id\":\"7\","
        "\"file_size\":true}",
        "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"" HEX "\",\"id\":\"7\","
        "\"file_size\":\"99999999999999999999\"}",
        "{\"url\":\"http://h/x\",\"mime_type\":\"a/b\",\"sha256\":\"" HEX "\",\"id\":\"7\"",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mi_err_clear(&err);     /* each input must bring its own message */
        int r = parse(&m, bad[i], "7", &err);

        TAP_EQ_INT(r, GRAPH_E_BADDATA);
        if (r != GRAPH_E_BADDATA)
            printf("#   input %zu: %s\n", i, bad[i]);
        TAP_CHECK(m.url == NULL && m.id == NULL && m.mime_type == NULL);
        TAP_CHECK(err.msg[0] != '\0');
    }
    /* Error messages never quote the secret URL, even for broken JSON. */
    TAP_EQ_INT(parse(&m, "{\"url\":\"" URL "\",\"mime_type\":7", "7", &err), GRAPH_E_BADDATA);
    TAP_CHECK(strstr(err.msg, "SECRET") == NULL);
    TAP_EQ_INT(parse(&m, "{\"url\":\"" URL "\",\"mime_type\":7,\"sha256\":\"" HEX "\","
                     "\"id\":\"7\"}", "7", &err), GRAPH_E_BADDATA);
    TAP_CHECK(strstr(err.msg, "SECRET") == NULL);
    TAP_CHECK(strstr(err.msg, "mime_type") != NULL);

    /* Oversized input is refused before parsing. */
    size_t big = GRAPH_MAX_JSON + 1;
    char *b = malloc(big);
    memset(b, ' ', big);
    TAP_EQ_INT(graph_media_parse(&m, b, big, NULL, &err), GRAPH_E_TOOBIG);
    free(b);
}

static void test_sha256(void)
{
    unsigned char out[32];
    char hex[65];

    TAP_EQ_INT(graph_sha256_parse(HEX, out), 0);
    graph_sha256_hex(out, hex);
    TAP_EQ_STR(hex, HEX);
    /* URL-safe alphabet: 0xfb 0xff ... encodes with '-' and '_'. */
    TAP_EQ_INT(graph_sha256_parse("-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_8", out), 0);
    TAP_EQ_INT(out[0], 0xfb);
    TAP_EQ_INT(graph_sha256_parse("+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/8=", out), 0);
    TAP_EQ_INT(out[1], 0xff);
    /* Non-zero trailing bits, wrong padding, wrong lengths. */
    TAP_EQ_INT(graph_sha256_parse("gdO9ih6fuMnVWzrS5pwg4PW3w8igpvLn2cGzpffp0MN=", out),
               GRAPH_E_BADDATA);
    TAP_EQ_INT(graph_sha256_parse("gdO9ih6fuMnVWzrS5pwg4PW3w8igpvLn2cGzpffp0MMM", out),
               GRAPH_E_BADDATA);
    TAP_EQ_INT(graph_sha256_parse("", out), GRAPH_E_BADDATA);
    TAP_EQ_INT(graph_sha256_parse(NULL, out), GRAPH_E_BADDATA);
    TAP_EQ_INT(graph_sha256_parse(HEX "00", out), GRAPH_E_BADDATA);
}

static void test_error_parse(void)
{
    struct graph_error e;
    const char *b = "{\"error\":{\"message\":\"Unsupported get request. Object with ID '1' "
                    "does not exist\",\"type\":\"GraphMethodException\",\"code\":100,"
                    "\"error_subcode\":33,\"fbtrace_id\":\"AbC\"}}";

    TAP_CHECK(graph_error_parse(&e, b, strlen(b)));
    TAP_CHECK(e.present);
    TAP_EQ_INT(e.code, 100);
    TAP_EQ_INT(e.subcode, 33);
    TAP_EQ_STR(e.type, "GraphMethodException");
    TAP_EQ_STR(e.fbtrace_id, "AbC");
    TAP_CHECK(strncmp(e.message, "Unsupported get request.", 24) == 0);

    b = "{\"error\":{\"message\":\"(#131000) Something\\nwent wrong\",\"type\":\"OAuthException\","
        "\"code\":131000,\"is_transient\":true,\"error_data\":{\"messaging_product\":"
        "\"whatsapp\",\"details\":\"try later\"},\"fbtrace_id\":\"X\"}}";
    TAP_CHECK(graph_error_parse(&e, b, strlen(b)));
    TAP_EQ_INT(e.code, 131000);
    TAP_EQ_INT(e.subcode, 0);
    TAP_CHECK(e.is_transient);
    TAP_EQ_STR(e.details, "try later");
    TAP_EQ_STR(e.message, "(#131000) Something went wrong");

    b = "{\"error\":{\"message\":\"x\",\"code\":1,\"error_data\":\"{\\\"a\\\":1}\"}}";
    TAP_CHECK(graph_error_parse(&e, b, strlen(b)));
    TAP_EQ_STR(e.details, "");

    TAP_CHECK(!graph_error_parse(&e, "<html>", 6));
    TAP_CHECK(!e.present);
    TAP_CHECK(!graph_error_parse(&e, "", 0));
    TAP_CHECK(!graph_error_parse(&e, "{\"error\":\"x\"}", 13));
    TAP_CHECK(!graph_error_parse(&e, "{\"error\":{\"code\":\"4\"}}", 22));

    /* Long messages are truncated, not overflowed. */
    char big[2048];
    int n = snprintf(big, sizeof(big), "{\"error\":{\"code\":2,\"message\":\"");
    memset(big + n, 'm', 1000);
    snprintf(big + n + 1000, sizeof(big) - (size_t)n - 1000, "\"}}");
    TAP_CHECK(graph_error_parse(&e, big, strlen(big)));
    TAP_EQ_INT(strlen(e.message), sizeof(e.message) - 1);
}

static enum graph_class cls_code(enum graph_op op, long http, int code)
{
    struct graph_error e;

    memset(&e, 0, sizeof(e));
    e.present = true;
    e.code = code;
    return graph_classify(op, GRAPH_E_HTTP, http, &e);
}

static void test_classify(void)
{
    const enum graph_op L = GRAPH_OP_LOOKUP, D = GRAPH_OP_DOWNLOAD;

    TAP_EQ_INT(graph_classify(L, 0, 200, NULL), GRAPH_OK);
    TAP_EQ_INT(graph_classify(D, 0, 200, NULL), GRAPH_OK);
    /* The doc's table, by Graph code. */
    TAP_EQ_INT(cls_code(L, 400, 100), GRAPH_PERMANENT);
    TAP_EQ_INT(cls_code(L, 401, 190), GRAPH_CONFIG);
    TAP_EQ_INT(cls_code(L, 401, 0), GRAPH_CONFIG);
    TAP_EQ_INT(cls_code(L, 500, 3), GRAPH_CONFIG);
    TAP_EQ_INT(cls_code(L, 403, 10), GRAPH_CONFIG);
    TAP_EQ_INT(cls_code(L, 403, 200), GRAPH_CONFIG);
    TAP_EQ_INT(cls_code(L, 403, 299), GRAPH_CONFIG);
    TAP_EQ_INT(cls_code(L, 400, 4), GRAPH_RATELIMIT);
    TAP_EQ_INT(cls_code(L, 429, 4), GRAPH_RATELIMIT);
    TAP_EQ_INT(cls_code(L, 400, 80007), GRAPH_RATELIMIT);
    TAP_EQ_INT(cls_code(L, 400, 130429), GRAPH_RATELIMIT);
    TAP_EQ_INT(cls_code(L, 500, 1), GRAPH_TRANSIENT);
    TAP_EQ_INT(cls_code(L, 503, 2), GRAPH_TRANSIENT);
    TAP_EQ_INT(cls_code(L, 500, 131000), GRAPH_TRANSIENT);
    TAP_EQ_INT(cls_code(L, 503, 131016), GRAPH_TRANSIENT);
    /* The code wins over the HTTP status. */
    TAP_EQ_INT(cls_code(L, 500, 100), GRAPH_PERMANENT);
    TAP_EQ_INT(cls_code(L, 400, 2), GRAPH_TRANSIENT);
    /* Unknown codes fall back to the status. */
    TAP_EQ_INT(cls_code(L, 400, 12345), GRAPH_PERMANENT);
    TAP_EQ_INT(cls_code(L, 502, 12345), GRAPH_TRANSIENT);
    /* No Graph body. */
    TAP_EQ_INT(graph_classify(L, GRAPH_E_HTTP, 429, NULL), GRAPH_RATELIMIT);
    TAP_EQ_INT(graph_classify(L, GRAPH_E_HTTP, 503, NULL), GRAPH_TRANSIENT);
    TAP_EQ_INT(graph_classify(L, GRAPH_E_HTTP, 401, NULL), GRAPH_CONFIG);
    TAP_EQ_INT(graph_classify(L, GRAPH_E_HTTP, 404, NULL), GRAPH_CONFIG);
    TAP_EQ_INT(graph_classify(L, GRAPH_E_HTTP, 301, NULL), GRAPH_CONFIG);
    TAP_EQ_INT(graph_classify(L, GRAPH_E_HTTP, 400, NULL), GRAPH_PERMANENT);
    TAP_EQ_INT(graph_classify(L, 0, 204, NULL), GRAPH_TRANSIENT);
    /* Download: 401/403/404 mean "fetch a fresh URL", whatever the body says. */
    TAP_EQ_INT(graph_classify(D, GRAPH_E_HTTP, 404, NULL), GRAPH_REFRESH_URL);
    TAP_EQ_INT(graph_classify(D, GRAPH_E_HTTP, 403, NULL), GRAPH_REFRESH_URL);
    TAP_EQ_INT(graph_classify(D, GRAPH_E_HTTP, 401, NULL), GRAPH_REFRESH_URL);
    TAP_EQ_INT(cls_code(D, 401, 190), GRAPH_REFRESH_URL);
    TAP_EQ_INT(graph_classify(D, GRAPH_E_HTTP, 500, NULL), GRAPH_TRANSIENT);
    TAP_EQ_INT(graph_classify(D, GRAPH_E_HTTP, 429, NULL), GRAPH_RATELIMIT);
    TAP_EQ_INT(cls_code(D, 400, 4), GRAPH_RATELIMIT);
    /* Transport and body problems. */
    TAP_EQ_INT(graph_classify(L, HTTP_E_TRANSPORT, 0, NULL), GRAPH_TRANSIENT);
    TAP_EQ_INT(graph_classify(D, HTTP_E_TIMEOUT, 200, NULL), GRAPH_TRANSIENT);
    TAP_EQ_INT(graph_classify(D, HTTP_E_TRANSPORT, 200, NULL), GRAPH_TRANSIENT);
    TAP_EQ_INT(graph_classify(D, HTTP_E_CANCELED, 0, NULL), GRAPH_TRANSIENT);
    TAP_EQ_INT(graph_classify(D, GRAPH_E_SHA_MISMATCH, 200, NULL), GRAPH_TRANSIENT);
    TAP_EQ_INT(graph_classify(D, GRAPH_E_SIZE_MISMATCH, 200, NULL), GRAPH_TRANSIENT);
    TAP_EQ_INT(graph_classify(D, GRAPH_E_HTML, 200, NULL), GRAPH_TRANSIENT);
    TAP_EQ_INT(graph_classify(D, -12, 0, NULL), GRAPH_TRANSIENT);
    TAP_EQ_INT(graph_classify(D, GRAPH_E_TOOBIG, 200, NULL), GRAPH_PERMANENT);
    TAP_EQ_INT(graph_classify(L, GRAPH_E_BADDATA, 200, NULL), GRAPH_PERMANENT);
    TAP_EQ_INT(graph_classify(L, HTTP_E_TOOBIG, 200, NULL), GRAPH_PERMANENT);
    TAP_EQ_INT(graph_classify(L, HTTP_E_TOOBIG, 503, NULL), GRAPH_TRANSIENT);
    TAP_EQ_INT(graph_classify(L, GRAPH_E_NOTOKEN, 0, NULL), GRAPH_CONFIG);
    TAP_EQ_STR(graph_class_name(GRAPH_REFRESH_URL), "refresh-url");
    TAP_EQ_STR(graph_class_name(GRAPH_RATELIMIT), "ratelimit");
}

static void test_usage(void)
{
    struct graph_usage u;

    graph_usage_parse(&u, NULL, NULL, 0);
    TAP_EQ_INT(u.max_pct, 0);
    TAP_EQ_INT(u.delay_ms, 0);
    graph_usage_parse(&u, "{\"call_count\":28,\"total_cputime\":25,\"total_time\":25}", NULL, 0);
    TAP_EQ_INT(u.max_pct, 28);
    TAP_EQ_INT(u.delay_ms, 0);
    graph_usage_parse(&u, "{\"call_count\":90,\"total_cputime\":25,\"total_time\":25}", NULL, 0);
    TAP_EQ_INT(u.max_pct, 90);
    TAP_EQ_INT(u.delay_ms, 1000 + 10 * 59000 / 20);
    graph_usage_parse(&u, "{\"call_count\":80}", NULL, 0);
    TAP_EQ_INT(u.delay_ms, 1000);
    graph_usage_parse(&u, "{\"call_count\":100}", NULL, 0);
    TAP_EQ_INT(u.delay_ms, 60000);
    graph_usage_parse(&u, "{\"call_count\":50}", NULL, 40);
    TAP_EQ_INT(u.delay_ms, 1000 + 10 * 59000 / 60);
    graph_usage_parse(&u, NULL, "{\"102290129340398\":[{\"type\":\"whatsapp_business_"
                      "management\",\"call_count\":95,\"total_cputime\":1,\"total_time\":1,"
                      "\"estimated_time_to_regain_access\":7}]}", 0);
    TAP_EQ_INT(u.max_pct, 95);
    TAP_EQ_INT(u.regain_minutes, 7);
    TAP_EQ_INT(u.delay_ms, 7 * 60000);
    graph_usage_parse(&u, "{\"call_count\":12.6}", "{\"1\":[{\"total_time\":3}],\"2\":"
                      "[{\"total_cputime\":44},{\"call_count\":\"x\"}],\"3\":7}", 0);
    TAP_EQ_INT(u.max_pct, 44);
    TAP_EQ_INT(u.delay_ms, 0);
    graph_usage_parse(&u, "not json", "[1,2]", 0);
    TAP_EQ_INT(u.max_pct, 0);
    TAP_EQ_INT(u.delay_ms, 0);
}

static void test_lookup_url(void)
{
    struct mi_err err = MI_ERR_INIT;
    char *u = NULL;

    TAP_EQ_INT(graph_lookup_url(&u, "https://graph.facebook.com", "v25.0", "2087129492123864",
                                NULL, &err), 0);
    TAP_EQ_STR(u, "https://graph.facebook.com/v25.0/2087129492123864");
    free(u);
    TAP_EQ_INT(graph_lookup_url(&u, "http://127.0.0.1:8080//", "v21.0", "123", "106540352242922",
                                &err), 0);
    TAP_EQ_STR(u, "http://127.0.0.1:8080/v21.0/123?phone_number_id=106540352242922");
    free(u);
    TAP_EQ_INT(graph_lookup_url(&u, "http://h/prefix", "v25.0", "a/b?c=d&e f%", "", &err), 0);
    TAP_EQ_STR(u, "http://h/prefix/v25.0/a%2Fb%3Fc%3Dd%26e%20f%25");
    free(u);
    TAP_EQ_INT(graph_lookup_url(&u, "http://h", "v25.0", "..a", "1&x=2", &err), 0);
    TAP_EQ_STR(u, "http://h/v25.0/..a?phone_number_id=1%26x%3D2");
    free(u);

    static const char *const ids[] = { "", ".", ".." };
    for (size_t i = 0; i < 3; i++) {
        TAP_EQ_INT(graph_lookup_url(&u, "http://h", "v25.0", ids[i], NULL, &err),
                   GRAPH_E_BADDATA);
        TAP_CHECK(u == NULL);
    }
    TAP_EQ_INT(graph_lookup_url(&u, "http://h", "v25.0", NULL, NULL, &err), GRAPH_E_BADDATA);
    char longid[GRAPH_MAX_ID + 2];
    memset(longid, '1', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    TAP_EQ_INT(graph_lookup_url(&u, "http://h", "v25.0", longid, NULL, &err), GRAPH_E_BADDATA);
    longid[GRAPH_MAX_ID] = '\0';
    TAP_EQ_INT(graph_lookup_url(&u, "http://h", "v25.0", longid, NULL, &err), 0);
    free(u);

    static const char *const versions[] = { "25.0", "v25", "v.0", "v25.", "v25.0/x", "", "V25.0" };
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++)
        TAP_EQ_INT(graph_lookup_url(&u, "http://h", versions[i], "1", NULL, &err),
                   GRAPH_E_BADDATA);
    TAP_CHECK(strstr(err.msg, "WHATSAPP_API_VERSION") != NULL);
    static const char *const bases[] = { "graph.facebook.com", "ftp://h", "http://h/?x=1",
                                          "http://h#f", "http://h /", "" };
    for (size_t i = 0; i < sizeof(bases) / sizeof(bases[0]); i++)
        TAP_EQ_INT(graph_lookup_url(&u, bases[i], "v25.0", "1", NULL, &err), GRAPH_E_BADDATA);
    TAP_CHECK(strstr(err.msg, "WHATSAPP_GRAPH_URL") != NULL);
    TAP_EQ_INT(graph_lookup_url(&u, NULL, "v25.0", "1", NULL, &err), GRAPH_E_BADDATA);
}

int main(void)
{
    test_media_ok();
    test_media_forms();
    test_media_bad();
    test_sha256();
    test_error_parse();
    test_classify();
    test_usage();
    test_lookup_url();
    return tap_done();
}
