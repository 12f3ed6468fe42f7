/*
 * s3.h - S3/R2-only operations of the s3 backend (the rest is storage.h).
 *
 * Multipart uploads that a crashed or killed worker left open keep their parts (and are
 * billed on AWS) until aborted. s3_uploads_list() lists them and s3_abort_orphans()
 * aborts those older than a threshold; the worker runs the latter at start and
 * `media-queue uploads list|abort --older-than` exposes both.
 */
#ifndef MI_S3_H
#define MI_S3_H

#include <stdint.h>
#include <time.h>

#include "storage.h"

/* One open multipart upload. Strings are borrowed for the duration of the callback. */
struct s3_upload {
    const char *key;
    const char *upload_id;
    const char *initiated;    /* as the server wrote it, ISO 8601 UTC */
    time_t initiated_at;      /* parsed, 0 when unparseable */
};

/* Called once per listed upload; return false to stop listing (done then gets 0). */
typedef bool (*s3_upload_cb)(void *ctx, const struct s3_upload *u);

/* Counts reported at the end of s3_abort_orphans(). */
struct s3_orphan_stats {
    uint64_t listed;          /* uploads under the prefix */
    uint64_t old;             /* of which older than the threshold */
    uint64_t aborted;         /* of which aborted now (or already gone: NoSuchUpload) */
    uint64_t failed;          /* of which the abort failed */
};

typedef void (*s3_orphans_cb)(void *ctx, int status, const struct s3_orphan_stats *stats,
                              const struct mi_err *err);

/**
 * s3_uploads_list() - list the open multipart uploads whose key starts with @prefix
 * (e.g. "media/"), all pages. @each is called per upload, @done once at the end with 0
 * or a STORAGE_E_* status.
 * @st: an s3 or r2 storage (borrowed).
 * Return: 0, STORAGE_E_CONFIG when @st is not s3/r2, -ENOMEM; on error no callback runs.
 */
int s3_uploads_list(struct storage *st, const char *prefix, s3_upload_cb each,
                    storage_done_cb done, void *ctx, struct mi_err *err) MI_MUSTCHECK;

/**
 * s3_abort_orphans() - abort every open multipart upload under @prefix initiated more
 * than @older_than_s seconds before @now (pass time(NULL)). @done is called once with
 * the counts; its status is 0 when every old upload was aborted.
 * Return: as s3_uploads_list().
 */
int s3_abort_orphans(struct storage *st, const char *prefix, uint64_t older_than_s, time_t now,
                     s3_orphans_cb done, void *ctx, struct mi_err *err) MI_MUSTCHECK;

/**
 * s3_abort_upload() - abort one multipart upload (key and upload id as listed).
 * @done gets 0 also when the upload no longer exists.
 * Return: as s3_uploads_list().
 */
int s3_abort_upload(struct storage *st, const char *key, const char *upload_id,
                    storage_done_cb done, void *ctx, struct mi_err *err) MI_MUSTCHECK;

/**
 * s3_uri_encode() - percent-encode @in into @out (RFC 3986 unreserved kept, uppercase
 * hex), keeping '/' when @keep_slash. Return: the length, or -ENOSPC when @cap is short.
 */
int s3_uri_encode(const char *in, bool keep_slash, char *out, size_t cap);

/**
 * s3_payload_checked() - whether the store refuses a PutObject whose body differs from its
 * signed x-amz-content-sha256 (S3, R2 and Ceph RGW do; moto and s3rver do not). The first
 * writer starts a probe; small announced bodies skip the local sha256 only once this is 1.
 * @probe_key: if not NULL, set to the key the probe wrote to ("" before any probe).
 * Return: 1 yes, 0 no (every body is hashed here), -1 not known yet.
 */
int s3_payload_checked(const struct storage *st, const char **probe_key);

/**
 * s3_streamed_puts() - how many writers sent their body as one streamed PutObject (an
 * announced body above MEDIA_PART_SIZE that the store checks or that may go unsigned; see
 * s3.c) since storage_new().
 */
uint64_t s3_streamed_puts(const struct storage *st);

/*
 * Called once per probe answer: @checked as s3_payload_checked() returns it; -1 means the
 * probe failed transiently (@err says why) and is asked again after a minute.
 */
typedef void (*s3_verdict_cb)(void *ctx, int checked, const struct mi_err *err);

/**
 * s3_on_payload_verdict() - have @cb told each answer of the payload-check probe (so the
 * worker can log it), and start the probe now rather than at the first writer. @ctx must
 * outlive the storage's requests (storage_busy() is 0).
 */
void s3_on_payload_verdict(struct storage *st, s3_verdict_cb cb, void *ctx);

#endif
