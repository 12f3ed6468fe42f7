#include "config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "budget.h"
#include "util.h"

enum cfg_type { T_STR, T_INT, T_SIZE, T_MS };

struct cfg_row {
    const char *env;
    const char *env2;      /* fallback variable, may be NULL */
    const char *flag;      /* without the leading "--", may be NULL */
    enum cfg_type type;
    const char *def;       /* default as text, NULL = unset */
    size_t off;
    int64_t min, max;      /* for T_INT / T_MS */
    unsigned programs;
    const char *help;
};

#define OFF(f) offsetof(struct mi_config, f)
#define W CFG_WORKER
#define Q CFG_QUEUE
#define B CFG_BACKFILL

static const struct cfg_row rows[] = {
    { "MEDIA_INGEST_QUEUE_URL", "REDIS_URL", "redis-url", T_STR, "redis://127.0.0.1:6379/0",
      OFF(queue_url), 0, 0, CFG_ALL, "Redis holding the BullMQ queue" },
    { "MEDIA_INGEST_QUEUE", NULL, "queue", T_STR, "media-ingest", OFF(queue_name), 0, 0, CFG_ALL,
      "BullMQ queue name" },
    { "BULLMQ_PREFIX", NULL, "prefix", T_STR, "bull", OFF(prefix), 0, 0, CFG_ALL,
      "BullMQ key prefix" },
    { "MEDIA_INGEST_CONCURRENCY", NULL, "concurrency", T_INT, "16", OFF(concurrency), 1, 4096, W,
      "jobs in flight per worker process" },
    { "MEDIA_INGEST_LOCK_DURATION_MS", NULL, "lock-duration", T_MS, "30000",
      OFF(lock_duration_ms), 1000, 3600000, W, "BullMQ lockDuration (match the Node fleet)" },
    { "MEDIA_INGEST_STALLED_INTERVAL_MS", NULL, "stalled-interval", T_MS, "30000",
      OFF(stalled_interval_ms), 100, 3600000, W, "BullMQ stalledInterval (match the Node fleet)" },
    { "MEDIA_INGEST_MAX_STALLED_COUNT", NULL, "max-stalled-count", T_INT, "1",
      OFF(max_stalled_count), 0, 1000, W, "BullMQ maxStalledCount (match the Node fleet)" },
    { "MEDIA_INGEST_DRAIN_TIMEOUT_MS", NULL, "drain-timeout", T_MS, "60000",
      OFF(drain_timeout_ms), 0, 86400000, W, "on SIGTERM, how long in-flight jobs may finish" },
    { "MEDIA_INGEST_WORKER_NAME", NULL, "worker-name", T_STR, NULL, OFF(worker_name), 0, 0, W,
      "worker name shown by bull-board (default media-ingest-<host>-<pid>)" },
    { "DATABASE_URL", NULL, "database-url", T_STR, NULL, OFF(database_url), 0, 0, W | B,
      "Prisma-style postgres URL (required by the worker and backfill)" },
    { "WHATSAPP_ACCESS_TOKEN", NULL, NULL, T_STR, NULL, OFF(token), 0, 0, W,
      "Graph API bearer token (or use WHATSAPP_ACCESS_TOKEN_FILE)" },
    { "WHATSAPP_ACCESS_TOKEN_FILE", NULL, "token-file", T_STR, NULL, OFF(token_file), 0, 0, W,
      "file holding the token; re-read when it changes" },
    { "WHATSAPP_GRAPH_URL", NULL, "graph-url", T_STR, "https://graph.facebook.com",
      OFF(graph_url), 0, 0, W, "Graph API base URL" },
    { "WHATSAPP_API_VERSION", NULL, "api-version", T_STR, "v25.0", OFF(api_version), 0, 0, W,
      "Graph API version path segment" },
    { "WHATSAPP_PHONE_NUMBER_ID", NULL, NULL, T_STR, NULL, OFF(phone_number_id), 0, 0, W,
      "sent as phone_number_id on media look-ups when set" },
    { "MEDIA_STORAGE_BACKEND", NULL, "storage", T_STR, "local", OFF(storage_backend), 0, 0,
      W | Q, "s3, r2 or local" },
    { "AWS_S3_BUCKET", NULL, NULL, T_STR, NULL, OFF(s3_bucket), 0, 0, W | Q, "S3 bucket" },
    { "AWS_ACCESS_KEY_ID", NULL, NULL, T_STR, NULL, OFF(aws_access_key_id), 0, 0, W | Q,
      "S3 access key id" },
    { "AWS_SECRET_ACCESS_KEY", NULL, NULL, T_STR, NULL, OFF(aws_secret_access_key), 0, 0, W | Q,
      "S3 secret key (never logged)" },
    { "AWS_REGION", NULL, NULL, T_STR, "us-east-1", OFF(aws_region), 0, 0, W | Q, "S3 region" },
    { "AWS_SESSION_TOKEN", NULL, NULL, T_STR, NULL, OFF(aws_session_token), 0, 0, W | Q,
      "S3 session token" },
    { "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", NULL, T_STR, NULL, OFF(s3_endpoint), 0, 0,
      W | Q, "S3-compatible endpoint (path-style addressing when set)" },
    { "R2_ACCOUNT_ID", NULL, NULL, T_STR, NULL, OFF(r2_account_id), 0, 0, W | Q, "R2 account" },
    { "R2_ACCESS_KEY_ID", NULL, NULL, T_STR, NULL, OFF(r2_access_key_id), 0, 0, W | Q,
      "R2 access key id" },
    { "R2_SECRET_ACCESS_KEY", NULL, NULL, T_STR, NULL, OFF(r2_secret_access_key), 0, 0, W | Q,
      "R2 secret key (never logged)" },
    { "R2_BUCKET", NULL, NULL, T_STR, NULL, OFF(r2_bucket), 0, 0, W | Q, "R2 bucket" },
    { "R2_ENDPOINT", NULL, NULL, T_STR, NULL, OFF(r2_endpoint), 0, 0, W | Q,
      "R2 endpoint (default from the account id)" },
    { "MEDIA_LOCAL_DIR", NULL, "local-dir", T_STR, ".media-cache", OFF(local_dir), 0, 0, W | Q,
      "local backend root" },
    { "MEDIA_MAX_BYTES", NULL, "max-bytes", T_SIZE, "134217728", OFF(max_bytes), 0, 0, W,
      "largest media accepted" },
    { "MEDIA_PART_SIZE", NULL, "part-size", T_SIZE, "8388608", OFF(part_size), 0, 0, W,
      "multipart part size (>= 5 MiB)" },
    { "MEDIA_BUFFER_BUDGET", NULL, "buffer-budget", T_SIZE, "268435456", OFF(buffer_budget), 0,
      0, W, "bytes of transfer buffers one worker process may hold" },
    { "MEDIA_S3_PAYLOAD_HASH", NULL, "s3-payload-hash", T_STR, "auto", OFF(s3_payload_hash), 0,
      0, W | Q, "UploadPart x-amz-content-sha256: signed (hash each part), unsigned"
      " (UNSIGNED-PAYLOAD), auto (unsigned over https, signed over http)" },
    { "MEDIA_ORPHAN_UPLOAD_AGE", NULL, "orphan-upload-age", T_MS, "2h",
      OFF(orphan_upload_age_ms), 1000, 86400000LL * 30, W,
      "at start, abort multipart uploads under media/ open longer than this (s3, r2)" },
    { "METRICS_ADDR", NULL, "metrics-addr", T_STR, "127.0.0.1:9464", OFF(metrics_addr), 0, 0, W,
      "/metrics, /healthz, /readyz listen address; empty disables" },
    { "LOG_LEVEL", NULL, "log-level", T_STR, "info", OFF(log_level), 0, 0, CFG_ALL,
      "debug, info, warn or error" },
    { "LOG_FORMAT", NULL, "log-format", T_STR, "logfmt", OFF(log_format), 0, 0, CFG_ALL,
      "logfmt or json" },
    { "MEDIA_BACKFILL_BATCH", NULL, "batch", T_INT, "500", OFF(backfill_batch), 1, 10000, B,
      "rows per Postgres page and per enqueue batch" },
    { "MEDIA_BACKFILL_PRIORITY", NULL, "priority", T_INT, "10", OFF(backfill_priority), 1,
      2097151, B, "BullMQ priority of backfill jobs (live jobs, priority 0, run first)" },
    { "MEDIA_BACKFILL_MAX_DEPTH", NULL, "max-depth", T_INT, "10000", OFF(backfill_max_depth), 0,
      1000000000, B, "wait while waiting+prioritized+delayed+active leave no room for a batch"
      " (0: never wait)" },
    { "MEDIA_BACKFILL_MAX_AGE", NULL, "max-age", T_MS, "7d", OFF(backfill_max_age_ms), 1000,
      INT64_C(315360000000), B, "older rows count as expired and are skipped (media ids from"
      " webhooks expire after 7 days)" },
};

#define NROWS (sizeof(rows) / sizeof(rows[0]))

static const char *source_name(const struct cfg_row *r, bool from_flag, char *buf, size_t n)
{
    if (from_flag)
        snprintf(buf, n, "--%s", r->flag);
    else
        snprintf(buf, n, "%s", r->env);
    return buf;
}

static int store(struct mi_config *cfg, const struct cfg_row *r, const char *val,
                 const char *name, struct mi_err *err)
{
    char *base = (char *)cfg + r->off;
    int64_t i;
    uint64_t u;
    switch (r->type) {
    case T_STR:
        *(const char **)(void *)base = val;
        return 0;
    case T_INT:
        if (!mi_parse_i64(val, r->min, r->max, &i))
            return mi_err_set(err, 2, "%s=%s: expected a whole number from %lld to %lld", name,
                              val, (long long)r->min, (long long)r->max);
        *(int64_t *)(void *)base = i;
        return 0;
    case T_MS:
        if (!mi_parse_duration_ms(val, &i) || i < r->min || i > r->max)
            return mi_err_set(err, 2, "%s=%s: expected a duration (ms, or with s/m/h) from %lld "
                              "to %lld ms", name, val, (long long)r->min, (long long)r->max);
        *(int64_t *)(void *)base = i;
        return 0;
    case T_SIZE:
        if (!mi_parse_size(val, &u))
            return mi_err_set(err, 2, "%s=%s: expected a byte count (optionally k, M or G)",
                              name, val);
        *(uint64_t *)(void *)base = u;
        return 0;
    }
    return mi_err_set(err, 2, "internal: bad config row type");
}

/* Find the flag row for "--name" or "--name=value" in @arg; NULL if none. */
static const struct cfg_row *flag_row(const char *arg, unsigned programs, const char **inline_val)
{
    if (strncmp(arg, "--", 2))
        return NULL;
    const char *name = arg + 2;
    size_t n = strcspn(name, "=");
    for (size_t i = 0; i < NROWS; i++) {
        const struct cfg_row *r = &rows[i];
        if (r->flag && (r->programs & programs) && strlen(r->flag) == n &&
            !strncmp(r->flag, name, n)) {
            *inline_val = name[n] == '=' ? name + n + 1 : NULL;
            return r;
        }
    }
    return NULL;
}

static int validate(struct mi_config *cfg, unsigned programs, struct mi_err *err)
{
    if (rurl_parse(cfg->queue_url, &cfg->redis, err)) {
        mi_err_prefix(err, "MEDIA_INGEST_QUEUE_URL/REDIS_URL: ");
        return 2;
    }
    if (!*cfg->queue_name || strchr(cfg->queue_name, ':'))
        return mi_err_set(err, 2, "MEDIA_INGEST_QUEUE must be a non-empty name without ':'");
    if (!*cfg->prefix)
        return mi_err_set(err, 2, "BULLMQ_PREFIX must not be empty");
    if (cfg->part_size < 5 * 1024 * 1024)
        return mi_err_set(err, 2, "MEDIA_PART_SIZE=%llu: S3 needs parts of at least 5 MiB",
                          (unsigned long long)cfg->part_size);
    if (cfg->buffer_budget < budget_buf_class(cfg->part_size))
        return mi_err_set(err, 2, "MEDIA_BUFFER_BUDGET must hold at least one part "
                          "(MEDIA_PART_SIZE, rounded up to %zu bytes)",
                          budget_buf_class(cfg->part_size));
    if (strcmp(cfg->storage_backend, "local") && strcmp(cfg->storage_backend, "s3") &&
        strcmp(cfg->storage_backend, "r2"))
        return mi_err_set(err, 2, "MEDIA_STORAGE_BACKEND=%s: expected s3, r2 or local",
                          cfg->storage_backend);
    if (strcmp(cfg->s3_payload_hash, "auto") && strcmp(cfg->s3_payload_hash, "signed") &&
        strcmp(cfg->s3_payload_hash, "unsigned"))
        return mi_err_set(err, 2, "MEDIA_S3_PAYLOAD_HASH=%s: expected auto, signed or unsigned",
                          cfg->s3_payload_hash);
    (void)programs;
    return 0;
}

int config_load(struct mi_config *cfg, unsigned programs, int argc, char **argv,
                char **rest, int *nrest, struct mi_err *err)
{
    const char *flagval[NROWS] = { 0 };
    char name[64];
    int r;

    memset(cfg, 0, sizeof(*cfg));
    *nrest = 0;
    for (int i = 1; i < argc; i++) {
        const char *inl = NULL;
        const struct cfg_row *row = flag_row(argv[i], programs, &inl);
        if (!row) {
            if (!strcmp(argv[i], "--")) {
                while (++i < argc)
                    rest[(*nrest)++] = argv[i];
                break;
            }
            rest[(*nrest)++] = argv[i];
            continue;
        }
        if (!inl) {
            if (i + 1 >= argc)
                return mi_err_set(err, 2, "--%s needs a value", row->flag);
            inl = argv[++i];
        }
        flagval[row - rows] = inl;
    }

    for (size_t i = 0; i < NROWS; i++) {
        const struct cfg_row *row = &rows[i];
        const char *val = flagval[i];
        bool from_flag = val != NULL;
        if (!val && row->env)
            val = getenv(row->env);
        if ((!val || !*val) && row->env2 && !from_flag)
            val = getenv(row->env2);
        /* An empty variable means "unset" except for METRICS_ADDR where empty disables. */
        if (val && !*val && row->off != OFF(metrics_addr) && !from_flag)
            val = NULL;
        if (!val)
            val = row->def;
        if (!val)
            continue;
        r = store(cfg, row, val, source_name(row, from_flag, name, sizeof(name)), err);
        if (r)
            return r;
    }
    return validate(cfg, programs, err);
}

void config_usage(FILE *out, unsigned programs)
{
    fprintf(out, "Settings (a flag overrides its environment variable):\n");
    for (size_t i = 0; i < NROWS; i++) {
        const struct cfg_row *r = &rows[i];
        char flag[48] = "";
        if (!(r->programs & programs))
            continue;
        if (r->flag)
            snprintf(flag, sizeof(flag), "--%s", r->flag);
        fprintf(out, "  %-22s %-32s %s%s%s%s\n", flag, r->env, r->help,
                r->def ? " [default: " : "", r->def ? r->def : "", r->def ? "]" : "");
        if (r->env2)
            fprintf(out, "  %-22s %-32s (fallback for %s)\n", "", r->env2, r->env);
    }
}
