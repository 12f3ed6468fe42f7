/* Redis URL parsing, redaction, and the config table's parsing and precedence. */
#include "tap.h"

#include <stdlib.h>

#include "config.h"
#include "rurl.h"
#include "storage_cfg.h"
#include "util.h"

static void test_rurl(void)
{
    struct rurl u;
    struct mi_err err = MI_ERR_INIT;
    char red[300];
    TAP_EQ_INT(rurl_parse("redis://127.0.0.1:6379/0", &u, &err), 0);
    TAP_EQ_STR(u.host, "127.0.0.1");
    TAP_EQ_INT(u.port, 6379);
    TAP_EQ_INT(u.db, 0);
    TAP_EQ_INT(rurl_parse("redis://:s%40cret@cache.internal/3", &u, &err), 0);
    TAP_EQ_STR(u.password, "s@cret");
    TAP_EQ_STR(u.user, "");
    TAP_EQ_INT(u.port, 6379);
    TAP_EQ_INT(u.db, 3);
    rurl_redact(&u, red, sizeof(red));
    TAP_EQ_STR(red, "redis://:***@cache.internal:6379/3");
    TAP_CHECK(!strstr(red, "cret"));
    TAP_EQ_INT(rurl_parse("redis://app:pw@[::1]:7000", &u, &err), 0);
    TAP_EQ_STR(u.host, "::1");
    TAP_EQ_STR(u.user, "app");
    TAP_EQ_INT(u.port, 7000);
    rurl_redact(&u, red, sizeof(red));
    TAP_EQ_STR(red, "redis://app:***@[::1]:7000/0");
    TAP_EQ_INT(rurl_parse("redis://h", &u, &err), 0);
    TAP_EQ_INT(rurl_parse("rediss://h:6380", &u, &err), 1);
    TAP_CHECK(strstr(err.msg, "TLS") != NULL);
    TAP_EQ_INT(rurl_parse("http://h", &u, &err), 1);
    TAP_EQ_INT(rurl_parse("redis://h:99999", &u, &err), 1);
    TAP_EQ_INT(rurl_parse("redis://h:12ab", &u, &err), 1);
    TAP_EQ_INT(rurl_parse("redis://h/x", &u, &err), 1);
    TAP_EQ_INT(rurl_parse("redis://:bad%zz@h", &u, &err), 1);
    TAP_EQ_INT(rurl_parse("redis://:nul%00@h", &u, &err), 1);
    TAP_EQ_INT(rurl_parse("redis:///0", &u, &err), 1);
    TAP_EQ_INT(rurl_parse("", &u, &err), 1);
}

static void test_parsers(void)
{
    int64_t v;
    uint64_t s;
    TAP_CHECK(mi_parse_duration_ms("250", &v) && v == 250);
    TAP_CHECK(mi_parse_duration_ms("30s", &v) && v == 30000);
    TAP_CHECK(mi_parse_duration_ms("7d", &v) && v == 604800000);
    TAP_CHECK(!mi_parse_duration_ms("-1s", &v));
    TAP_CHECK(!mi_parse_duration_ms("5x", &v));
    TAP_CHECK(mi_parse_size("8M", &s) && s == 8388608);
    TAP_CHECK(mi_parse_size("268435456", &s) && s == 268435456);
    TAP_CHECK(!mi_parse_size("1T", &s));
    TAP_CHECK(!mi_parse_i64("12 ", 0, 100, &v));
    TAP_CHECK(!mi_parse_i64("101", 0, 100, &v));
}

static void test_config(void)
{
    struct mi_config cfg;
    struct mi_err err = MI_ERR_INIT;
    char *rest[8];
    int nrest;
    setenv("REDIS_URL", "redis://10.0.0.9:6000/2", 1);
    unsetenv("MEDIA_INGEST_QUEUE_URL");
    setenv("MEDIA_INGEST_CONCURRENCY", "8", 1);
    char *argv1[] = { "w", "--concurrency", "4", "stats", "--json", NULL };
    TAP_EQ_INT(config_load(&cfg, CFG_WORKER, 5, argv1, rest, &nrest, &err), 0);
    TAP_EQ_INT(cfg.concurrency, 4);           /* the flag beats the variable */
    TAP_EQ_STR(cfg.redis.host, "10.0.0.9");   /* REDIS_URL is the fallback */
    TAP_EQ_INT(cfg.redis.db, 2);
    TAP_EQ_STR(cfg.queue_name, "media-ingest");
    TAP_EQ_INT(cfg.part_size, 8388608);
    TAP_EQ_INT(nrest, 2);
    TAP_EQ_STR(rest[0], "stats");

    setenv("MEDIA_INGEST_QUEUE_URL", "redis://127.0.0.1:1/0", 1);
    char *argv2[] = { "w", NULL };
    TAP_EQ_INT(config_load(&cfg, CFG_WORKER, 1, argv2, rest, &nrest, &err), 0);
    TAP_EQ_INT(cfg.redis.port, 1);            /* the primary variable beats REDIS_URL */
    TAP_EQ_INT(cfg.concurrency, 8);

    setenv("MEDIA_INGEST_CONCURRENCY", "zero", 1);
    TAP_EQ_INT(config_load(&cfg, CFG_WORKER, 1, argv2, rest, &nrest, &err), 2);
    TAP_CHECK(strstr(err.msg, "MEDIA_INGEST_CONCURRENCY") != NULL);
    unsetenv("MEDIA_INGEST_CONCURRENCY");
    setenv("MEDIA_PART_SIZE", "1M", 1);
    TAP_EQ_INT(config_load(&cfg, CFG_WORKER, 1, argv2, rest, &nrest, &err), 2);
    TAP_CHECK(strstr(err.msg, "MEDIA_PART_SIZE") != NULL);
    unsetenv("MEDIA_PART_SIZE");
    setenv("MEDIA_STORAGE_BACKEND", "ftp", 1);
    TAP_EQ_INT(config_load(&cfg, CFG_WORKER, 1, argv2, rest, &nrest, &err), 2);
    TAP_CHECK(strstr(err.msg, "MEDIA_STORAGE_BACKEND") != NULL);
    unsetenv("MEDIA_STORAGE_BACKEND");
    TAP_EQ_INT(config_load(&cfg, CFG_WORKER, 1, argv2, rest, &nrest, &err), 0);
    TAP_EQ_STR(cfg.s3_payload_hash, "auto");
    setenv("MEDIA_S3_PAYLOAD_HASH", "none", 1);
    TAP_EQ_INT(config_load(&cfg, CFG_WORKER, 1, argv2, rest, &nrest, &err), 2);
    TAP_CHECK(strstr(err.msg, "MEDIA_S3_PAYLOAD_HASH=none") != NULL);
    setenv("MEDIA_S3_PAYLOAD_HASH", "unsigned", 1);
    TAP_EQ_INT(config_load(&cfg, CFG_WORKER, 1, argv2, rest, &nrest, &err), 0);
    {
        struct storage_config sc;
        cfg.storage_backend = "s3";
        cfg.s3_bucket = cfg.aws_access_key_id = cfg.aws_secret_access_key = "x";
        TAP_EQ_INT(storage_cfg_from_config(&cfg, &sc, &err), 0);
        TAP_EQ_INT(sc.payload_hash, STORAGE_PAYLOAD_UNSIGNED);
    }
    unsetenv("MEDIA_S3_PAYLOAD_HASH");
    char *argv3[] = { "w", "--queue", NULL };
    TAP_EQ_INT(config_load(&cfg, CFG_WORKER, 2, argv3, rest, &nrest, &err), 2);
    TAP_CHECK(strstr(err.msg, "--queue") != NULL);
    setenv("MEDIA_INGEST_QUEUE_URL", "redis://:topsecret@h/0x", 1);
    TAP_EQ_INT(config_load(&cfg, CFG_WORKER, 1, argv2, rest, &nrest, &err), 2);
    TAP_CHECK(!strstr(err.msg, "topsecret"));
}

int main(void)
{
    test_rurl();
    test_parsers();
    test_config();
    return tap_done();
}
