/*
 * storage.h - where media bytes go: S3, R2 or a local directory.
 *
 * The interface of the design's StorageBackend (put, get, delete, exists), made
 * asynchronous on the process's libuv loop, plus a streaming writer so that a
 * download can flow into the store in bounded memory:
 *
 *     storage_writer_open(st, key, &opts, &w, &err);
 *     while (bytes arrive) {
 *         r = storage_writer_write(w, chunk, n);   // 0: go on, STORAGE_PAUSE: stop the
 *                                                  // source until the ready callback
 *     }
 *     storage_writer_commit(w, done_cb, ctx);      // verifies sha256, then makes the
 *                                                  // object visible; or
 *     storage_writer_abort(w, done_cb, ctx);       // nothing is left behind
 *
 * Keys are "media/{messageId}/{providerMediaId}" (see objkey.h); every backend
 * refuses a key that objkey_validate() refuses, before any I/O.
 *
 * Callbacks are called exactly once, from the loop, never from inside the call that
 * started the operation. A function that returns an error never calls its callback.
 * Error codes: 0 ok, negative -errno (system), positive STORAGE_E_* below.
 */
#ifndef MI_STORAGE_H
#define MI_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "err.h"

struct mi_budget;  /* budget.h: the process-wide transfer-buffer budget */
struct mi_http;    /* http.h: the curl multi adapter on the loop */

enum {
    STORAGE_PAUSE = 1,          /* write accepted the chunk; pause the source until ready_cb */
    STORAGE_E_BADKEY = 10,      /* key refused by objkey_validate() */
    STORAGE_E_NOTFOUND = 11,    /* get/head of a missing object */
    STORAGE_E_DIGEST = 12,      /* sha256 of the bytes differs from the expected one */
    STORAGE_E_TOOBIG = 13,      /* more bytes than the announced or maximum size */
    STORAGE_E_TRANSIENT = 14,   /* server or network trouble, retries exhausted: retry later */
    STORAGE_E_PERMANENT = 15,   /* the store refused (access denied, no such bucket...) */
    STORAGE_E_CONFIG = 16,      /* incomplete or invalid configuration */
};

/* The largest chunk storage_writer_write() accepts in one call (curl hands <= 16 KiB). */
#define STORAGE_MAX_CHUNK (64 * 1024)

enum storage_kind { STORAGE_LOCAL = 0, STORAGE_S3, STORAGE_R2 };

/* Configuration, filled from the environment by the executables (contract.md). */
/*
 * x-amz-content-sha256 of UploadPart requests. PutObject is always signed with the body's
 * sha256: the one the writer computed, or, for a small announced body on a store that
 * refuses a mismatch (s3_payload_checked()), the expected one, which the store checks.
 * AUTO (the default, as botocore does): hash each part over http, UNSIGNED-PAYLOAD over
 * https, where TLS protects the bytes in transit and the writer still verifies the whole
 * body's sha256 before Complete.
 */
enum storage_payload_hash { STORAGE_PAYLOAD_AUTO, STORAGE_PAYLOAD_SIGNED, STORAGE_PAYLOAD_UNSIGNED };

struct storage_config {
    enum storage_kind kind;
    /* local */
    const char *local_dir;            /* MEDIA_LOCAL_DIR, default ".media-cache" */
    /* s3 and r2 */
    const char *bucket;               /* AWS_S3_BUCKET / R2_BUCKET */
    const char *access_key_id;
    const char *secret_access_key;    /* never logged */
    const char *session_token;        /* AWS_SESSION_TOKEN, may be NULL */
    const char *region;               /* AWS_REGION (default us-east-1); "auto" for r2 */
    const char *endpoint;             /* AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / R2_ENDPOINT;
                                         NULL: AWS virtual-hosted addressing */
    const char *r2_account_id;        /* R2_ACCOUNT_ID: endpoint default for r2 */
    size_t part_size;                 /* MEDIA_PART_SIZE, >= 5 MiB */
    enum storage_payload_hash payload_hash; /* MEDIA_S3_PAYLOAD_HASH (UploadPart only) */
    uint64_t max_bytes;               /* MEDIA_MAX_BYTES */
    uint64_t request_timeout_ms;      /* per HTTP request deadline (default 60000) */
    int max_retries;                  /* per part/request retries on transient errors (default 4) */
};

/* What a writer is told about the object up front. Strings are borrowed for the call. */
struct storage_put_opts {
    const char *content_type;         /* Graph mime_type, stored verbatim */
    const char *sha256_hex;           /* expected body sha256 (64 lowercase hex); NULL: not checked */
    uint64_t expected_size;           /* announced size, 0 = unknown; more bytes → STORAGE_E_TOOBIG */
};

/* Metadata returned by head/get. Strings are owned by the struct (storage_meta_clear). */
struct storage_meta {
    bool exists;
    uint64_t size;
    char *content_type;
    char *sha256_hex;                 /* from user metadata "sha256", NULL if absent */
};

struct storage;
struct storage_writer;

typedef void (*storage_done_cb)(void *ctx, int status, const struct mi_err *err);
typedef void (*storage_meta_cb)(void *ctx, int status, const struct storage_meta *meta,
                                const struct mi_err *err);
/* Called with each chunk of a get; return false to cancel the transfer. */
typedef bool (*storage_data_cb)(void *ctx, const void *buf, size_t len);
typedef void (*storage_ready_cb)(void *ctx);

/**
 * storage_new() - create a backend on @loop.
 * @http: the loop's curl multi adapter (borrowed; unused by the local backend, may be NULL there).
 * @budget: the process's transfer-buffer budget (borrowed); NULL for a storage that only
 *          reads, lists and deletes (s3 writers then refuse with STORAGE_E_CONFIG).
 * @cfg: copied; strings are duplicated.
 * Return: 0, STORAGE_E_CONFIG with @err naming the variable, or -ENOMEM.
 */
int storage_new(struct storage **stp, uv_loop_t *loop, struct mi_http *http,
                struct mi_budget *budget, const struct storage_config *cfg,
                struct mi_err *err) MI_MUSTCHECK;

/** storage_free() - free the backend; every writer and request must have finished. NULL ok. */
void storage_free(struct storage *st);

/**
 * storage_busy() - writers not yet freed (an abort or commit may still be talking to the
 * store) plus requests (head, get, delete, orphan sweeps) and callbacks still to come.
 * Free the storage only once this is 0.
 */
size_t storage_busy(const struct storage *st);

/** storage_kind_name() - "s3", "r2" or "local": the row's mediaStorageBackend. */
const char *storage_kind_name(const struct storage *st);

/**
 * storage_url() - the stored-URL string of @key: s3://BUCKET/KEY, r2://BUCKET/KEY or
 * file://DIR/KEY (DIR absolute). Return: a new string (caller frees), NULL on ENOMEM.
 */
char *storage_url(const struct storage *st, const char *key);

int storage_writer_open(struct storage *st, const char *key,
                        const struct storage_put_opts *opts, struct storage_writer **wp,
                        struct mi_err *err) MI_MUSTCHECK;
/** Register the callback that ends a STORAGE_PAUSE (called once per pause). */
void storage_writer_on_ready(struct storage_writer *w, storage_ready_cb cb, void *ctx);
/**
 * storage_writer_write() - hand over @len <= STORAGE_MAX_CHUNK bytes (copied).
 * Return: 0 (send more), STORAGE_PAUSE (accepted; stop until the ready callback),
 * a positive STORAGE_E_* or negative error (the writer is then only good for abort).
 */
int storage_writer_write(struct storage_writer *w, const void *buf, size_t len);
/** Bytes accepted so far. */
uint64_t storage_writer_bytes(const struct storage_writer *w);
/** Lowercase hex sha256 of the bytes accepted so far; valid after a successful commit. */
const char *storage_writer_sha256(const struct storage_writer *w);
/**
 * storage_writer_commit() - flush, verify sha256 and size, make the object visible.
 * On a digest or size mismatch the upload is aborted and the callback gets
 * STORAGE_E_DIGEST / STORAGE_E_TOOBIG. The writer is freed after the callback returns.
 */
int storage_writer_commit(struct storage_writer *w, storage_done_cb cb, void *ctx) MI_MUSTCHECK;
/** storage_writer_abort() - discard everything; @cb may be NULL. Frees the writer after. */
void storage_writer_abort(struct storage_writer *w, storage_done_cb cb, void *ctx);

/* The design's StorageBackend calls, each asynchronous. */
int storage_put(struct storage *st, const char *key, const void *buf, size_t len,
                const struct storage_put_opts *opts, storage_done_cb cb, void *ctx,
                struct mi_err *err) MI_MUSTCHECK;
int storage_head(struct storage *st, const char *key, storage_meta_cb cb, void *ctx,
                 struct mi_err *err) MI_MUSTCHECK;
int storage_get(struct storage *st, const char *key, storage_data_cb data_cb,
                storage_meta_cb done_cb, void *ctx, struct mi_err *err) MI_MUSTCHECK;
int storage_delete(struct storage *st, const char *key, storage_done_cb cb, void *ctx,
                   struct mi_err *err) MI_MUSTCHECK;

void storage_meta_clear(struct storage_meta *meta);

#endif
