/*
 * storage_impl.h - what a storage backend implements (internal to common/).
 *
 * storage.c implements storage.h once for every backend: it copies the configuration,
 * validates keys, counts bytes, computes the sha256 of a writer's body, enforces the
 * size limits, verifies the digest at commit and calls the user's callbacks. A
 * backend only moves bytes, through the table of operations below.
 *
 * Writers. storage.c allocates struct storage_writer and calls ops->writer_open(),
 * which may set w->priv. Each accepted chunk is then passed to ops->writer_write()
 * after it has been hashed and counted. At commit storage.c first checks the digest
 * and the size; only when both match does it call ops->writer_commit(), otherwise it
 * calls ops->writer_abort(). The backend reports the end of a commit or an abort by
 * calling storage_writer_finish() exactly once, and the end of a STORAGE_PAUSE by
 * calling storage_writer_ready(). Both may be called from anywhere, including from
 * inside ops->writer_*() itself: storage.c defers the user's callback to a later loop
 * iteration, then calls ops->writer_free() and frees the writer in a close callback.
 * After calling storage_writer_finish() the backend must not touch the writer.
 *
 * One-shot operations (head, get, delete) get the already validated key and must
 * call their callback exactly once, from the loop, never from inside the op call
 * (use storage_defer() for an answer known at once). storage_put() is built by
 * storage.c on top of the writer, so a backend has no put of its own.
 */
#ifndef MI_STORAGE_IMPL_H
#define MI_STORAGE_IMPL_H

#include <openssl/evp.h>

#include "storage.h"

struct storage_ops {
    const char *name;   /* "s3", "r2", "local": storage_kind_name() */

    /* Validate st->cfg and set st->priv. Return 0 or STORAGE_E_CONFIG (@err names the
     * variable) or -errno. Called once by storage_new(); no I/O may be started. */
    int (*init)(struct storage *st, struct mi_err *err);
    /* Free st->priv. Every request and writer has finished. */
    void (*fini)(struct storage *st);
    /* The stored URL of @key (new string), NULL on ENOMEM. */
    char *(*url)(const struct storage *st, const char *key);

    /* Prepare w->priv; no callback may follow a non-zero return. */
    int (*writer_open)(struct storage_writer *w, struct mi_err *err);
    /* Take a copy of @len bytes. Return 0, STORAGE_PAUSE (then storage_writer_ready()
     * must follow once), or an error (the writer is then only aborted). */
    int (*writer_write)(struct storage_writer *w, const void *buf, size_t len);
    /* Flush and make the object visible; then storage_writer_finish(). The body's
     * digest and size have already been verified. */
    void (*writer_commit)(struct storage_writer *w);
    /* Discard everything (cancel in-flight work); then storage_writer_finish() with
     * the status given to it (storage.c passes STORAGE_E_DIGEST etc. through w). */
    void (*writer_abort)(struct storage_writer *w);
    /* Free w->priv; called once, after the user's callback. May be NULL. */
    void (*writer_free)(struct storage_writer *w);

    int (*head)(struct storage *st, const char *key, storage_meta_cb cb, void *ctx,
                struct mi_err *err);
    int (*get)(struct storage *st, const char *key, storage_data_cb data_cb,
               storage_meta_cb done_cb, void *ctx, struct mi_err *err);
    int (*del)(struct storage *st, const char *key, storage_done_cb cb, void *ctx,
               struct mi_err *err);
};

extern const struct storage_ops storage_local_ops;   /* storage_local.c */
extern const struct storage_ops storage_s3_ops;      /* s3.c (kinds s3 and r2) */

struct storage {
    enum storage_kind kind;
    const struct storage_ops *ops;
    struct storage_config cfg;    /* a copy: every string is owned by storage.c */
    uv_loop_t *loop;              /* borrowed */
    struct mi_http *http;         /* borrowed, NULL for local */
    struct mi_budget *budget;     /* borrowed */
    EVP_MD *sha256;               /* the writers' digest, fetched once */
    size_t writers;               /* open writers */
    size_t pending;               /* requests and deferred deliveries in flight: backends
                                     count theirs (storage_busy() is writers + pending) */
    void *priv;                   /* the backend's */
};

struct storage_writer {
    struct storage *st;
    char *key;                    /* owned */
    char *content_type;           /* owned, may be NULL */
    char *sha256_expected;        /* owned, may be NULL (64 lowercase hex) */
    uint64_t expected_size;       /* 0: unknown */
    uint64_t bytes;               /* accepted so far */
    EVP_MD_CTX *sha;              /* running sha256 of the accepted bytes */
    /* Set by ops->writer_open(): the store itself checks the body against sha256_expected
     * (a PutObject signed with it, on a store that refuses a mismatch), so storage.c
     * neither hashes nor compares, and the backend reports a mismatch as STORAGE_E_DIGEST. */
    bool digest_by_store;
    char sha256_hex[65];          /* filled at commit */
    int state;                    /* storage.c's */
    int status;                   /* storage.c's: the status reported at the end */
    struct mi_err err;            /* storage.c's: the message reported at the end */
    bool ready_pending;
    bool finish_pending;
    storage_ready_cb ready_cb;
    void *ready_ctx;
    storage_done_cb done_cb;
    void *done_ctx;
    uv_timer_t defer;             /* delivers callbacks on a later loop iteration */
    void *priv;                   /* the backend's */
};

/**
 * storage_writer_finish() - the backend's end of a commit or abort. @status 0 means the
 * object is visible; otherwise @err (copied, may be NULL) explains. For an abort started
 * by storage.c the status recorded by storage.c wins over @status.
 */
void storage_writer_finish(struct storage_writer *w, int status, const struct mi_err *err);

/** storage_writer_ready() - the backend can take data again after STORAGE_PAUSE. */
void storage_writer_ready(struct storage_writer *w);

typedef void (*storage_defer_fn)(void *arg);

/**
 * storage_defer() - call @fn(@arg) on a later loop iteration (a one-shot timer that
 * frees itself). Return: 0 or -ENOMEM; @fn is not called on error.
 */
int storage_defer(struct storage *st, storage_defer_fn fn, void *arg) MI_MUSTCHECK;

#endif
