#include "storage_cfg.h"

#include <string.h>

int storage_cfg_from_config(const struct mi_config *cfg, struct storage_config *sc,
                            struct mi_err *err)
{
    memset(sc, 0, sizeof(*sc));
    sc->local_dir = cfg->local_dir;
    sc->part_size = cfg->part_size;
    sc->max_bytes = cfg->max_bytes;
    sc->request_timeout_ms = 120000;
    sc->max_retries = 4;
    if (cfg->s3_payload_hash && !strcmp(cfg->s3_payload_hash, "signed"))
        sc->payload_hash = STORAGE_PAYLOAD_SIGNED;
    else if (cfg->s3_payload_hash && !strcmp(cfg->s3_payload_hash, "unsigned"))
        sc->payload_hash = STORAGE_PAYLOAD_UNSIGNED;
    if (!strcmp(cfg->storage_backend, "local")) {
        sc->kind = STORAGE_LOCAL;
        return 0;
    }
    if (!strcmp(cfg->storage_backend, "s3")) {
        sc->kind = STORAGE_S3;
        sc->bucket = cfg->s3_bucket;
        sc->access_key_id = cfg->aws_access_key_id;
        sc->secret_access_key = cfg->aws_secret_access_key;
        sc->session_token = cfg->aws_session_token;
        sc->region = cfg->aws_region;
        sc->endpoint = cfg->s3_endpoint;
        if (!sc->bucket || !sc->access_key_id || !sc->secret_access_key)
            return mi_err_set(err, 2, "MEDIA_STORAGE_BACKEND=s3 needs AWS_S3_BUCKET, "
                              "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
        return 0;
    }
    sc->kind = STORAGE_R2;
    sc->bucket = cfg->r2_bucket;
    sc->access_key_id = cfg->r2_access_key_id;
    sc->secret_access_key = cfg->r2_secret_access_key;
    sc->region = "auto";
    sc->endpoint = cfg->r2_endpoint;
    sc->r2_account_id = cfg->r2_account_id;
    if (!sc->bucket || !sc->access_key_id || !sc->secret_access_key ||
        (!sc->endpoint && !sc->r2_account_id))
        return mi_err_set(err, 2, "MEDIA_STORAGE_BACKEND=r2 needs R2_BUCKET, R2_ACCESS_KEY_ID, "
                          "R2_SECRET_ACCESS_KEY and R2_ACCOUNT_ID (or R2_ENDPOINT)");
    return 0;
}
