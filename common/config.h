/*
 * config.h - the one configuration table of every executable (contract.md).
 *
 * Each setting has an environment variable (and maybe a fallback one), an optional
 * command-line flag that overrides it, a type and a default. config_load() fills an
 * immutable struct mi_config once at start; --help text comes from the same table.
 */
#ifndef MI_CONFIG_H
#define MI_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"
#include "rurl.h"

/* Which executables a setting concerns (bit mask), so --help lists only those. */
enum { CFG_WORKER = 1, CFG_QUEUE = 2, CFG_BACKFILL = 4, CFG_ALL = 7 };

struct mi_config {
    /* queue */
    const char *queue_url;
    struct rurl redis;
    const char *queue_name;
    const char *prefix;
    int64_t concurrency;
    int64_t lock_duration_ms;
    int64_t stalled_interval_ms;
    int64_t max_stalled_count;
    int64_t drain_timeout_ms;
    const char *worker_name;
    /* database */
    const char *database_url;
    /* graph */
    const char *token;
    const char *token_file;
    const char *graph_url;
    const char *api_version;
    const char *phone_number_id;
    /* storage */
    const char *storage_backend;
    const char *s3_bucket, *aws_access_key_id, *aws_secret_access_key, *aws_region;
    const char *aws_session_token, *s3_endpoint;
    const char *r2_account_id, *r2_access_key_id, *r2_secret_access_key, *r2_bucket;
    const char *r2_endpoint;
    const char *local_dir;
    uint64_t max_bytes;
    uint64_t part_size;
    uint64_t buffer_budget;
    int64_t orphan_upload_age_ms;
    const char *s3_payload_hash;      /* MEDIA_S3_PAYLOAD_HASH: auto, signed or unsigned */
    /* operations */
    const char *metrics_addr;
    const char *log_level;
    const char *log_format;
    /* backfill */
    int64_t backfill_batch;
    int64_t backfill_priority;
    int64_t backfill_max_depth;
    int64_t backfill_max_age_ms;
};

/**
 * config_load() - fill @cfg from the flags in @argv (which override) and the environment.
 * @programs: CFG_WORKER, CFG_QUEUE or CFG_BACKFILL: only their settings' flags are accepted.
 * @rest: receives the arguments that are not settings (argv[0] excluded), in order;
 *        must have room for @argc entries. *@nrest gets their count.
 * Strings point into argv/environ or static defaults (borrowed for the process life).
 * Return: 0, or 2 with @err naming the variable or flag that is wrong (exit code 2).
 */
int config_load(struct mi_config *cfg, unsigned programs, int argc, char **argv,
                char **rest, int *nrest, struct mi_err *err) MI_MUSTCHECK;

/** config_usage() - print the settings of @programs (flag, variable, default, meaning). */
void config_usage(FILE *out, unsigned programs);

#endif
