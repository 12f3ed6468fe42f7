/*
 * test-graph.c - the Graph API client (graph.h) on a libuv loop against the Graph fake
 * (tests/fakes/graph-fake.mjs, started here with a stdin pipe). TAP; exits 77 without node.
 *
 * Checks real outcomes: byte-exact downloads (sha256 of what the data callback received),
 * classification of expired URLs, bad tokens, unknown ids, throttling, cut and corrupt
 * bodies, the byte cap, timeouts, cancellation, and from the fake's own counters that no
 * request went out without a User-Agent and no bearer followed a redirect to another origin.
 */
#include <jansson.h>
#include <openssl/evp.h>
#include <stdint.h>

#include "../unit/tap.h"
#include "graph.h"
#include "http.h"
#include "storage-it.h"

#define TOKEN "it-token-s3cr3t"

static uv_loop_t loop;
static struct mi_http *http;
static char base[64];
static char token[128] = TOKEN;

static const char *get_token(void *ctx)
{
    return ctx;
}

/* ---- the fake's control API, through the http adapter itself ------------------------- */

struct ctl_result {
    int done;
    long code;
    char *body;
};

static void ctl_done(void *ctx, struct http_req *rq, int status, const struct mi_err *err)
{
    struct ctl_result *r = ctx;
    size_t len;

    r->done = 1;
    r->code = status == 0 ? http_req_status(rq) : -1;
    r->body = http_req_take_body(rq, &len);
}

/* POST (or GET when @json is NULL) /__control/@path; returns the parsed answer or NULL. */
static json_t *ctl(const char *path, const char *json)
{
    char url[256];
    struct http_req *rq = NULL;
    struct mi_err err = MI_ERR_INIT;
    struct ctl_result r = { 0, 0, NULL };
    json_t *j;

    snprintf(url, sizeof(url), "%s/__control/%s", base, path);
    if (http_req_new(&rq, http, json ? HTTP_POST : HTTP_GET, url, &err) != 0)
        return NULL;
    if (json) {
        if (http_req_header(rq, "Content-Type", "application/json") != 0)
            return NULL;
        http_req_body_buf(rq, json, strlen(json));
    }
    if (http_req_start(rq, ctl_done, &r, &err) != 0) {
        http_req_free(rq);
        return NULL;
    }
    while (!r.done)
        uv_run(&loop, UV_RUN_ONCE);
    j = r.body ? json_loads(r.body, 0, NULL) : NULL;
    if (r.code < 200 || r.code >= 300)
        printf("# control %s answered %ld: %s\n", path, r.code, r.body ? r.body : "");
    free(r.body);
    return j;
}

static void ctl0(const char *path, const char *json)
{
    json_decref(ctl(path, json));
}

static long long stat_int(const char *key)
{
    json_t *s = ctl("stats", NULL);
    long long v = json_integer_value(json_object_get(s, key));

    json_decref(s);
    return v;
}

/* ---- lookup ------------------------------------------------------------------------- */

struct lk {
    int calls;
    enum graph_class cls;
    int status;
    long http_status;
    struct graph_media media;
    struct graph_error gerr;
    struct graph_usage usage;
    char msg[MI_ERR_MSG_MAX];
};

static void lk_cb(void *ctx, struct graph_lookup_result *res, const struct mi_err *err)
{
    struct lk *l = ctx;

    l->calls++;
    l->cls = res->cls;
    l->status = res->status;
    l->http_status = res->http_status;
    l->gerr = res->gerr;
    l->usage = res->usage;
    graph_media_move(&l->media, &res->media);
    snprintf(l->msg, sizeof(l->msg), "%s", err ? err->msg : "");
}

static void lookup(struct graph_client *c, const char *id, struct lk *l)
{
    struct mi_err err = MI_ERR_INIT;
    int r;

    graph_media_deinit(&l->media);
    memset(l, 0, sizeof(*l));
    l->media.file_size = -1;
    r = graph_lookup(c, id, lk_cb, l, NULL, &err);
    if (r != 0) {
        printf("# graph_lookup(%s) = %d: %s\n", id, r, err.msg);
        l->status = r;
        l->cls = -1;
        return;
    }
    while (!l->calls)
        uv_run(&loop, UV_RUN_ONCE);
    if (l->msg[0])
        printf("# lookup %s: %s\n", id, l->msg);
}

/* ---- download ----------------------------------------------------------------------- */

struct dl {
    int calls;
    int chunks;
    int pause_every;     /* answer GRAPH_PAUSE every Nth chunk (0: never) */
    int cancel_at;       /* cancel after this many chunks (0: never) */
    bool paused;
    int pauses;
    uint64_t got;
    EVP_MD_CTX *md;
    struct graph_download *h;
    uv_timer_t resume;
    struct graph_download_result res;
    char msg[MI_ERR_MSG_MAX];
};

static void resume_cb(uv_timer_t *t)
{
    struct dl *d = t->data;

    /* d->paused stays set so the chunk delivered again is consumed, not paused twice. */
    graph_download_resume(d->h);
}

static int dl_data(void *ctx, const char *buf, size_t len)
{
    struct dl *d = ctx;

    /* A paused chunk comes again on resume: it is counted only when consumed. */
    if (d->pause_every && !d->paused && (d->chunks + 1) % d->pause_every == 0) {
        d->paused = true;
        d->pauses++;
        uv_timer_start(&d->resume, resume_cb, 2, 0);
        return GRAPH_PAUSE;
    }
    d->paused = false;
    d->chunks++;
    d->got += len;
    EVP_DigestUpdate(d->md, buf, len);
    if (d->cancel_at && d->chunks == d->cancel_at)
        graph_download_cancel(d->h);
    return 0;
}

static void dl_done(void *ctx, const struct graph_download_result *res, const struct mi_err *err)
{
    struct dl *d = ctx;

    d->calls++;
    d->res = *res;
    snprintf(d->msg, sizeof(d->msg), "%s", err ? err->msg : "");
}

static void download(struct graph_client *c, const char *url, uint64_t max, int64_t size,
                     const unsigned char *sha, struct dl *d, int pause_every)
{
    struct mi_err err = MI_ERR_INIT;
    int r;

    memset(d, 0, sizeof(*d));
    d->pause_every = pause_every;
    d->md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(d->md, EVP_sha256(), NULL);
    uv_timer_init(&loop, &d->resume);
    d->resume.data = d;
    r = graph_download(c, url, max, size, sha, dl_data, dl_done, d, &d->h, &err);
    if (r != 0) {
        printf("# graph_download = %d: %s\n", r, err.msg);
        d->res.status = r;
        d->res.cls = -1;
    }
    while (r == 0 && !d->calls)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&d->resume, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    if (d->msg[0])
        printf("# download: %s\n", d->msg);
}

static void received_hex(struct dl *d, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;

    EVP_DigestFinal_ex(d->md, md, &n);
    EVP_MD_CTX_free(d->md);
    d->md = NULL;
    graph_sha256_hex(md, out);
}

static void dl_free(struct dl *d)
{
    EVP_MD_CTX_free(d->md);
    d->md = NULL;
}

/* ---- the cases ---------------------------------------------------------------------- */

static void test_roundtrip(struct graph_client *c)
{
    struct lk l = { 0 };
    struct dl d;
    char hex[65];
    const uint64_t size = 3 * 1024 * 1024 + 12345;

    ctl0("media", "{\"id\":\"1001\",\"size\":3158073,\"mime\":\"video/mp4\"}");
    lookup(c, "1001", &l);
    TAP_EQ_INT(l.cls, GRAPH_OK);
    TAP_EQ_INT(l.http_status, 200);
    TAP_EQ_STR(l.media.mime_type, "video/mp4");
    TAP_EQ_STR(l.media.id, "1001");
    TAP_EQ_INT(l.media.file_size, (long long)size);
    TAP_CHECK(l.media.url && strncmp(l.media.url, base, strlen(base)) == 0);

    download(c, l.media.url, 16 * 1024 * 1024, l.media.file_size, l.media.sha256, &d, 3);
    received_hex(&d, hex);
    TAP_EQ_INT(d.calls, 1);
    TAP_EQ_INT(d.res.cls, GRAPH_OK);
    TAP_EQ_INT(d.res.status, 0);
    TAP_EQ_INT(d.res.bytes, (long long)size);
    TAP_EQ_INT(d.got, (long long)size);
    TAP_EQ_STR(hex, l.media.sha256_hex);
    TAP_EQ_STR(d.res.sha256_hex, l.media.sha256_hex);
    TAP_CHECK(d.pauses > 0);
    printf("# %d chunks, %d pauses\n", d.chunks, d.pauses);
    graph_media_deinit(&l.media);

    /* file_size as a string, sha256 as base64, mime with parameters. */
    ctl0("media", "{\"id\":\"1002\",\"size\":70000,\"mime\":\"audio/ogg; codecs=opus\","
         "\"fileSizeAs\":\"string\",\"sha256As\":\"base64\"}");
    lookup(c, "1002", &l);
    TAP_EQ_INT(l.cls, GRAPH_OK);
    TAP_EQ_INT(l.media.file_size, 70000);
    TAP_EQ_STR(l.media.mime_type, "audio/ogg; codecs=opus");
    download(c, l.media.url, 0, l.media.file_size, l.media.sha256, &d, 0);
    received_hex(&d, hex);
    TAP_EQ_INT(d.res.cls, GRAPH_OK);
    TAP_EQ_STR(hex, l.media.sha256_hex);
    graph_media_deinit(&l.media);
}

static void test_big(struct graph_client *c)
{
    struct lk l = { 0 };
    struct dl d;
    char hex[65];
    uint64_t t0;

    lookup(c, "doc-100mb-1", &l);
    TAP_EQ_INT(l.cls, GRAPH_OK);
    TAP_EQ_INT(l.media.file_size, 100LL * 1024 * 1024);
    t0 = uv_hrtime();
    download(c, l.media.url, 128ULL * 1024 * 1024, l.media.file_size, l.media.sha256, &d, 0);
    received_hex(&d, hex);
    TAP_EQ_INT(d.res.cls, GRAPH_OK);
    TAP_EQ_STR(hex, l.media.sha256_hex);
    printf("# 100 MiB in %.0f ms\n", (double)(uv_hrtime() - t0) / 1e6);
    graph_media_deinit(&l.media);
}

static void test_expired_url(struct graph_client *c)
{
    struct lk l = { 0 };
    struct dl d;

    ctl0("media", "{\"id\":\"1003\",\"size\":1000}");
    lookup(c, "1003", &l);
    ctl0("clock", "{\"advance\":301}");
    download(c, l.media.url, 0, l.media.file_size, l.media.sha256, &d, 0);
    dl_free(&d);
    TAP_EQ_INT(d.res.cls, GRAPH_REFRESH_URL);
    TAP_EQ_INT(d.res.http_status, 404);
    TAP_EQ_INT(d.res.status, GRAPH_E_HTTP);
    TAP_EQ_INT(d.got, 0);
    TAP_CHECK(strstr(d.msg, "hash=") == NULL && strstr(d.msg, TOKEN) == NULL);
    /* The refresh the doc prescribes: a fresh URL works. */
    lookup(c, "1003", &l);
    download(c, l.media.url, 0, l.media.file_size, l.media.sha256, &d, 0);
    dl_free(&d);
    TAP_EQ_INT(d.res.cls, GRAPH_OK);
    TAP_EQ_INT(stat_int("expired"), 1);
    graph_media_deinit(&l.media);
}

static void test_bad_token(struct graph_client *c)
{
    struct lk l = { 0 };
    struct dl d;

    ctl0("media", "{\"id\":\"1004\",\"size\":1000}");
    lookup(c, "1004", &l);
    TAP_EQ_INT(l.cls, GRAPH_OK);
    ctl0("token", "{\"token\":\"rotated-token\"}");
    /* The URL is fine but the bearer no longer is: lookaside says 403, refresh first... */
    download(c, l.media.url, 0, l.media.file_size, l.media.sha256, &d, 0);
    dl_free(&d);
    TAP_EQ_INT(d.res.cls, GRAPH_REFRESH_URL);
    TAP_EQ_INT(d.res.http_status, 403);
    /* ...and the refresh tells the truth: a config problem, code 190. */
    lookup(c, "1004", &l);
    TAP_EQ_INT(l.cls, GRAPH_CONFIG);
    TAP_EQ_INT(l.http_status, 401);
    TAP_EQ_INT(l.gerr.code, 190);
    TAP_CHECK(strstr(l.msg, "190") != NULL);
    TAP_CHECK(strstr(l.msg, TOKEN) == NULL);
    /* The getter is asked on every request: a rotated token is picked up at once. */
    snprintf(token, sizeof(token), "%s", "rotated-token");
    lookup(c, "1004", &l);
    TAP_EQ_INT(l.cls, GRAPH_OK);
    ctl0("token", "{\"expired\":true}");
    lookup(c, "1004", &l);
    TAP_EQ_INT(l.cls, GRAPH_CONFIG);
    TAP_EQ_INT(l.gerr.subcode, 463);
    ctl0("token", "{\"token\":\"" TOKEN "\",\"expired\":false}");
    snprintf(token, sizeof(token), "%s", TOKEN);
    graph_media_deinit(&l.media);
}

static void test_errors(struct graph_client *c)
{
    struct lk l = { 0 };

    lookup(c, "999000111", &l);
    TAP_EQ_INT(l.cls, GRAPH_PERMANENT);
    TAP_EQ_INT(l.http_status, 400);
    TAP_EQ_INT(l.gerr.code, 100);
    TAP_EQ_INT(l.gerr.subcode, 33);
    TAP_CHECK(strstr(l.msg, "Unsupported get request") != NULL);

    ctl0("media", "{\"id\":\"1005\",\"size\":10,\"faults\":[{\"graphError\":{\"code\":4},"
         "\"times\":1,\"usage\":{\"buc\":{\"call_count\":100,"
         "\"estimated_time_to_regain_access\":3}}}]}");
    lookup(c, "1005", &l);
    TAP_EQ_INT(l.cls, GRAPH_RATELIMIT);
    TAP_EQ_INT(l.gerr.code, 4);
    TAP_EQ_INT(l.usage.regain_minutes, 3);
    TAP_EQ_INT(l.usage.delay_ms, 180000);
    lookup(c, "1005", &l);
    TAP_EQ_INT(l.cls, GRAPH_OK);

    ctl0("media", "{\"id\":\"1006\",\"size\":10,\"faults\":[{\"status\":429,\"times\":1},"
         "{\"graphError\":{\"code\":2},\"times\":1},{\"graphError\":{\"code\":80007},"
         "\"times\":1},{\"graphError\":{\"code\":10},\"times\":1},{\"status\":503,\"times\":1},"
         "{\"graphError\":{\"code\":131000},\"times\":1}]}");
    lookup(c, "1006", &l);
    TAP_EQ_INT(l.cls, GRAPH_RATELIMIT);
    TAP_EQ_INT(l.http_status, 429);
    TAP_CHECK(!l.gerr.present);
    lookup(c, "1006", &l);
    TAP_EQ_INT(l.cls, GRAPH_TRANSIENT);
    TAP_EQ_INT(l.http_status, 503);
    lookup(c, "1006", &l);
    TAP_EQ_INT(l.cls, GRAPH_RATELIMIT);
    TAP_EQ_INT(l.gerr.code, 80007);
    lookup(c, "1006", &l);
    TAP_EQ_INT(l.cls, GRAPH_CONFIG);
    TAP_EQ_INT(l.gerr.code, 10);
    lookup(c, "1006", &l);
    TAP_EQ_INT(l.cls, GRAPH_TRANSIENT);
    lookup(c, "1006", &l);
    TAP_EQ_INT(l.cls, GRAPH_TRANSIENT);
    TAP_EQ_INT(l.gerr.code, 131000);
    lookup(c, "1006", &l);
    TAP_EQ_INT(l.cls, GRAPH_OK);

    /* Usage headers on a success still suggest a slow-down. */
    ctl0("config", "{\"usage\":{\"app\":{\"call_count\":90,\"total_cputime\":5,"
         "\"total_time\":5}}}");
    lookup(c, "1006", &l);
    TAP_EQ_INT(l.cls, GRAPH_OK);
    TAP_EQ_INT(l.usage.max_pct, 90);
    TAP_CHECK(l.usage.delay_ms > 0 && l.usage.delay_ms < 60000);
    ctl0("config", "{\"usage\":null}");
    graph_media_deinit(&l.media);
}

static void test_bodies(struct graph_client *c)
{
    struct lk l = { 0 };
    struct dl d;

    ctl0("media", "[{\"id\":\"2001\",\"size\":300000,\"faults\":[{\"on\":\"download\","
         "\"cutAfter\":100000}]},{\"id\":\"2002\",\"size\":50000,\"faults\":[{\"on\":"
         "\"download\",\"corrupt\":true}]},{\"id\":\"2003\",\"size\":50000,\"faults\":[{\"on\":"
         "\"download\",\"truncate\":40000}]},{\"id\":\"2004\",\"size\":50000,\"fileSizeLie\":7},"
         "{\"id\":\"2005\",\"size\":50000,\"faults\":[{\"on\":\"download\",\"html\":true}]},"
         "{\"id\":\"2006\",\"size\":300000,\"fileSizeAs\":\"absent\",\"faults\":[{\"on\":"
         "\"download\",\"chunked\":true}]},"
         "{\"id\":\"2007\",\"size\":1000,\"faults\":[{\"on\":\"download\",\"status\":503}]}]");

    lookup(c, "2001", &l);
    download(c, l.media.url, 0, l.media.file_size, l.media.sha256, &d, 0);
    dl_free(&d);
    TAP_EQ_INT(d.res.cls, GRAPH_TRANSIENT);
    TAP_EQ_INT(d.res.status, HTTP_E_TRANSPORT);
    TAP_CHECK(d.got <= 100000);

    lookup(c, "2002", &l);
    download(c, l.media.url, 0, l.media.file_size, l.media.sha256, &d, 0);
    dl_free(&d);
    TAP_EQ_INT(d.res.cls, GRAPH_TRANSIENT);
    TAP_EQ_INT(d.res.status, GRAPH_E_SHA_MISMATCH);
    TAP_EQ_INT(d.got, 50000);

    lookup(c, "2003", &l);
    download(c, l.media.url, 0, l.media.file_size, l.media.sha256, &d, 0);
    dl_free(&d);
    TAP_EQ_INT(d.res.cls, GRAPH_TRANSIENT);
    TAP_EQ_INT(d.res.status, GRAPH_E_SIZE_MISMATCH);
    TAP_EQ_INT(d.got, 0);

    lookup(c, "2004", &l);
    TAP_EQ_INT(l.media.file_size, 50007);
    download(c, l.media.url, 0, l.media.file_size, l.media.sha256, &d, 0);
    dl_free(&d);
    TAP_EQ_INT(d.res.status, GRAPH_E_SIZE_MISMATCH);

    lookup(c, "2005", &l);
    download(c, l.media.url, 0, l.media.file_size, l.media.sha256, &d, 0);
    dl_free(&d);
    TAP_EQ_INT(d.res.cls, GRAPH_TRANSIENT);
    TAP_EQ_INT(d.res.status, GRAPH_E_HTML);
    TAP_EQ_INT(d.got, 0);

    /* No file_size: the cap in the write callback is what stops the body. */
    lookup(c, "2006", &l);
    TAP_EQ_INT(l.media.file_size, -1);
    download(c, l.media.url, 100000, l.media.file_size, l.media.sha256, &d, 0);
    dl_free(&d);
    TAP_EQ_INT(d.res.cls, GRAPH_PERMANENT);
    TAP_EQ_INT(d.res.status, GRAPH_E_TOOBIG);
    TAP_CHECK(d.got <= 100000 && d.got > 0);
    TAP_CHECK(strstr(d.msg, "the body exceeds") != NULL);
    /* An announced size over the cap is refused before any request. */
    ctl0("media", "{\"id\":\"2008\",\"size\":300000}");
    lookup(c, "2008", &l);
    struct mi_err err = MI_ERR_INIT;
    TAP_EQ_INT(graph_download(c, l.media.url, 1000, l.media.file_size, NULL, dl_data, dl_done,
                              &d, NULL, &err), GRAPH_E_TOOBIG);
    TAP_CHECK(strstr(err.msg, "MEDIA_MAX_BYTES") != NULL);

    lookup(c, "2007", &l);
    download(c, l.media.url, 0, l.media.file_size, l.media.sha256, &d, 0);
    dl_free(&d);
    TAP_EQ_INT(d.res.cls, GRAPH_TRANSIENT);
    TAP_EQ_INT(d.res.http_status, 503);
    graph_media_deinit(&l.media);
}

static void test_redirects(struct graph_client *c)
{
    struct lk l = { 0 };
    struct dl d;
    json_t *s, *f;

    ctl0("media", "[{\"id\":\"3001\",\"size\":20000,\"faults\":[{\"on\":\"download\","
         "\"redirect\":\"same\",\"times\":1}]},{\"id\":\"3002\",\"size\":20000,\"faults\":"
         "[{\"on\":\"download\",\"redirect\":\"foreign\"}]}]");
    lookup(c, "3001", &l);
    download(c, l.media.url, 0, l.media.file_size, l.media.sha256, &d, 0);
    dl_free(&d);
    TAP_EQ_INT(d.res.cls, GRAPH_OK);
    lookup(c, "3002", &l);
    download(c, l.media.url, 0, l.media.file_size, l.media.sha256, &d, 0);
    dl_free(&d);
    TAP_EQ_INT(d.res.cls, GRAPH_OK);
    s = ctl("stats", NULL);
    f = json_object_get(s, "foreign");
    TAP_EQ_INT(json_integer_value(json_object_get(s, "redirects")), 2);
    TAP_EQ_INT(json_integer_value(json_object_get(f, "requests")), 1);
    TAP_EQ_INT(json_integer_value(json_object_get(f, "withAuth")), 0);
    json_decref(s);
    graph_media_deinit(&l.media);
}

static void test_pnid_timeout_cancel(void)
{
    struct graph_client_opts o = { .base_url = base, .version = "v25.0", .token_fn = get_token,
                                   .token_ctx = token, .phone_number_id = "555",
                                   .lookup_timeout_ms = 300, .download_idle_ms = 300 };
    struct graph_client *c = NULL;
    struct mi_err err = MI_ERR_INIT;
    struct lk l = { 0 };
    struct dl d;

    TAP_EQ_INT(graph_client_new(&c, http, &o, &err), 0);
    ctl0("media", "[{\"id\":\"4001\",\"size\":10,\"phoneNumberId\":\"555\"},"
         "{\"id\":\"4002\",\"size\":10,\"phoneNumberId\":\"666\"},"
         "{\"id\":\"4003\",\"size\":10,\"faults\":[{\"latencyMs\":1500}]},"
         "{\"id\":\"4004\",\"size\":400000,\"faults\":[{\"on\":\"download\","
         "\"bytesPerSec\":200000}]},"
         "{\"id\":\"4005\",\"size\":300000,\"faults\":[{\"on\":\"download\","
         "\"stallAfter\":100000}]}]");
    lookup(c, "4001", &l);
    TAP_EQ_INT(l.cls, GRAPH_OK);
    lookup(c, "4002", &l);
    TAP_EQ_INT(l.cls, GRAPH_PERMANENT);
    TAP_EQ_INT(l.gerr.code, 100);
    lookup(c, "4003", &l);
    TAP_EQ_INT(l.cls, GRAPH_TRANSIENT);
    TAP_EQ_INT(l.status, HTTP_E_TIMEOUT);

    /* A body that stops coming is cut after the idle time (300 ms here), not the 10-minute
     * deadline: a stall is transient, like a cut body. 4004 (slow, 2 s in all, but moving)
     * is not idle: it is cancelled below only once it has delivered. */
    lookup(c, "4005", &l);
    download(c, l.media.url, 0, l.media.file_size, l.media.sha256, &d, 0);
    dl_free(&d);
    TAP_EQ_INT(d.res.cls, GRAPH_TRANSIENT);
    TAP_EQ_INT(d.res.status, HTTP_E_TIMEOUT);
    TAP_CHECK(strstr(d.msg, "stalled") != NULL);
    TAP_EQ_INT(d.got, 100000);

    /* Cancel mid-body: done runs once, with HTTP_E_CANCELED. */
    lookup(c, "4004", &l);
    memset(&d, 0, sizeof(d));
    d.cancel_at = 2;
    d.md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(d.md, EVP_sha256(), NULL);
    uv_timer_init(&loop, &d.resume);
    TAP_EQ_INT(graph_download(c, l.media.url, 0, l.media.file_size, l.media.sha256, dl_data,
                              dl_done, &d, &d.h, &err), 0);
    while (!d.calls)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&d.resume, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    dl_free(&d);
    TAP_EQ_INT(d.calls, 1);
    TAP_EQ_INT(d.res.status, HTTP_E_CANCELED);
    TAP_EQ_INT(d.chunks, 2);

    /* No token at all: refused synchronously, callback never called. */
    struct graph_client_opts o2 = { .base_url = base };
    struct graph_client *c2 = NULL;
    TAP_EQ_INT(graph_client_new(&c2, http, &o2, &err), 0);
    TAP_EQ_INT(graph_lookup(c2, "4001", lk_cb, &l, NULL, &err), GRAPH_E_NOTOKEN);
    TAP_EQ_INT(graph_client_set_token(c2, TOKEN), 0);
    lookup(c2, "4001", &l);
    TAP_EQ_INT(l.cls, GRAPH_OK);
    TAP_EQ_INT(graph_lookup(c2, "..", lk_cb, &l, NULL, &err), GRAPH_E_BADDATA);
    o2.version = "25";
    struct graph_client *c3 = NULL;
    TAP_EQ_INT(graph_client_new(&c3, http, &o2, &err), GRAPH_E_BADDATA);
    TAP_CHECK(c3 == NULL);
    graph_client_free(c2);
    graph_client_free(c);
    graph_media_deinit(&l.media);
}

static void test_user_agent(void)
{
    json_t *s = ctl("stats", NULL), *uas = json_object_get(s, "userAgents");
    const char *k;
    json_t *v;
    int ours = 0;

    TAP_EQ_INT(json_integer_value(json_object_get(s, "noUserAgent")), 0);
    TAP_CHECK(json_integer_value(json_object_get(s, "lookups")) > 20);
    json_object_foreach(uas, k, v) {
        if (strncmp(k, "media-ingest-worker/", 20) == 0)
            ours += (int)json_integer_value(v);
        else
            printf("# other user agent: %s\n", k);
    }
    TAP_CHECK(ours > 20);
    json_decref(s);
}

int main(void)
{
    const char *node = it_node();
    const char *root = getenv("MI_SOURCE_ROOT");
    char script[1024], line[256];
    struct it_child fake = { 0 };
    struct graph_client *c = NULL;
    struct mi_err err = MI_ERR_INIT;
    int port;

    if (!node) {
        printf("1..0 # SKIP node not found\n");
        return IT_SKIP;
    }
    snprintf(script, sizeof(script), "%s/tests/fakes/graph-fake.mjs", root ? root : ".");
    char *argv[] = { (char *)node, script, "--port", "0", "--token", TOKEN, NULL };
    if (it_spawn(&fake, argv, NULL) != 0 || it_wait_line(&fake, "{\"port\":", line,
                                                        sizeof(line), 10000) != 0) {
        printf("Bail out! graph-fake.mjs did not start\n");
        it_stop(&fake);
        return 1;
    }
    port = (int)strtol(line + strlen("{\"port\":"), NULL, 10);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
    uv_loop_init(&loop);
    if (http_new(&http, &loop, &err) != 0) {
        printf("Bail out! http_new: %s\n", err.msg);
        return 1;
    }
    struct graph_client_opts o = { .base_url = base, .version = "v25.0", .token_fn = get_token,
                                   .token_ctx = token };
    TAP_EQ_INT(graph_client_new(&c, http, &o, &err), 0);

    test_roundtrip(c);
    test_big(c);
    test_expired_url(c);
    test_bad_token(c);
    test_errors(c);
    test_bodies(c);
    test_redirects(c);
    test_pnid_timeout_cancel();
    test_user_agent();

    graph_client_free(c);
    http_free(http);
    uv_run(&loop, UV_RUN_DEFAULT);
    TAP_EQ_INT(uv_loop_close(&loop), 0);
    it_stop(&fake);
    return tap_done();
}
