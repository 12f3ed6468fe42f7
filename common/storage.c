/*
 * storage.c - storage.h implemented once for every backend (see storage_impl.h).
 *
 * This file owns what must behave identically whatever the backend: the
 * configuration copy, key validation, the running sha256 and byte count of a writer,
 * the size and digest checks made before anything becomes visible, and the rule that
 * user callbacks run on a later loop iteration than the call that caused them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "objkey.h"
#include "sigv4.h"
#include "storage_impl.h"

enum writer_state { W_OPEN = 0, W_FAILED, W_COMMITTING, W_ABORTING, W_DONE };

static int dup_str(char **dst, const char *src)
{
    *dst = NULL;
    if (!src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -ENOMEM;
}

static void config_free(struct storage_config *c)
{
    free((char *)c->local_dir);
    free((char *)c->bucket);
    free((char *)c->access_key_id);
    free((char *)c->secret_access_key);
    free((char *)c->session_token);
    free((char *)c->region);
    free((char *)c->endpoint);
    free((char *)c->r2_account_id);
    memset(c, 0, sizeof(*c));
}

/* Copy @src into @dst with every string duplicated, and fill the documented defaults. */
static int config_copy(struct storage_config *dst, const struct storage_config *src)
{
    const char *const *from[] = {
        &src->local_dir, &src->bucket, &src->access_key_id, &src->secret_access_key,
        &src->session_token, &src->region, &src->endpoint, &src->r2_account_id,
    };
    const char **to[] = {
        &dst->local_dir, &dst->bucket, &dst->access_key_id, &dst->secret_access_key,
        &dst->session_token, &dst->region, &dst->endpoint, &dst->r2_account_id,
    };

    *dst = *src;
    for (size_t i = 0; i < sizeof(to) / sizeof(to[0]); i++)
        *to[i] = NULL;
    for (size_t i = 0; i < sizeof(to) / sizeof(to[0]); i++) {
        char *s;
        if (dup_str(&s, *from[i]) < 0) {
            config_free(dst);
            return -ENOMEM;
        }
        *to[i] = s;
    }
    if (!dst->request_timeout_ms)
        dst->request_timeout_ms = 60000;
    if (dst->max_retries <= 0)
        dst->max_retries = 4;
    if (!dst->part_size)
        dst->part_size = 8u * 1024 * 1024;
    if (!dst->max_bytes)
        dst->max_bytes = 134217728u;
    return 0;
}

/* The key rule of storage.h, checked before any I/O: exactly the keys objkey_build() makes. */
static int check_key(const char *key, struct mi_err *err)
{
    struct mi_err kerr = MI_ERR_INIT;

    if (key && objkey_validate(key, &kerr) == 0)
        return 0;
    return mi_err_set(err, STORAGE_E_BADKEY, "storage: object key refused: %s",
                      key ? kerr.msg : "no key");
}

/**
 * storage_new() - see storage.h.
 */
int storage_new(struct storage **stp, uv_loop_t *loop, struct mi_http *http,
                struct mi_budget *budget, const struct storage_config *cfg,
                struct mi_err *err)
{
    struct storage *st;
    int r;

    *stp = NULL;
    st = calloc(1, sizeof(*st));
    if (!st)
        return mi_err_set(err, -ENOMEM, "storage: out of memory");
    switch (cfg->kind) {
    case STORAGE_LOCAL:
        st->ops = &storage_local_ops;
        break;
    case STORAGE_S3:
    case STORAGE_R2:
        st->ops = &storage_s3_ops;
        break;
    default:
        free(st);
        return mi_err_set(err, STORAGE_E_CONFIG,
                          "MEDIA_STORAGE_BACKEND: unknown backend (want s3, r2 or local)");
    }
    st->kind = cfg->kind;
    st->loop = loop;
    st->http = http;
    st->budget = budget;
    /* fetched once: EVP_sha256() in every writer would look the digest up each time */
    st->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!st->sha256 || config_copy(&st->cfg, cfg) < 0) {
        EVP_MD_free(st->sha256);
        free(st);
        return mi_err_set(err, -ENOMEM, "storage: out of memory");
    }
    r = st->ops->init(st, err);
    if (r != 0) {
        config_free(&st->cfg);
        EVP_MD_free(st->sha256);
        free(st);
        return r;
    }
    *stp = st;
    return 0;
}

/**
 * storage_free() - see storage.h.
 */
size_t storage_busy(const struct storage *st)
{
    return st ? st->writers + st->pending : 0;
}

void storage_free(struct storage *st)
{
    if (!st)
        return;
    st->ops->fini(st);
    config_free(&st->cfg);
    EVP_MD_free(st->sha256);
    free(st);
}

/**
 * storage_kind_name() - see storage.h.
 */
const char *storage_kind_name(const struct storage *st)
{
    switch (st->kind) {
    case STORAGE_S3:
        return "s3";
    case STORAGE_R2:
        return "r2";
    default:
        return "local";
    }
}

/**
 * storage_url() - see storage.h.
 */
char *storage_url(const struct storage *st, const char *key)
{
    return st->ops->url(st, key);
}

/* --- deferral ------------------------------------------------------------------ */

struct deferred {
    uv_timer_t timer;
    struct storage *st;
    storage_defer_fn fn;
    void *arg;
};

static void deferred_closed(uv_handle_t *h)
{
    free(h->data);
}

static void deferred_fire(uv_timer_t *t)
{
    struct deferred *d = t->data;

    /* not busy any more when the callback runs: it may free the storage */
    d->st->pending--;
    d->fn(d->arg);
    uv_close((uv_handle_t *)&d->timer, deferred_closed);
}

/**
 * storage_defer() - see storage_impl.h.
 */
int storage_defer(struct storage *st, storage_defer_fn fn, void *arg)
{
    struct deferred *d = calloc(1, sizeof(*d));

    if (!d)
        return -ENOMEM;
    d->fn = fn;
    d->arg = arg;
    d->st = st;
    st->pending++;
    uv_timer_init(st->loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, deferred_fire, 0, 0);
    return 0;
}

/* --- writer -------------------------------------------------------------------- */

static void writer_release(struct storage_writer *w)
{
    free(w->key);
    free(w->content_type);
    free(w->sha256_expected);
    EVP_MD_CTX_free(w->sha);
    free(w);
}

static void writer_closed(uv_handle_t *h)
{
    struct storage_writer *w = h->data;

    if (w->st->ops->writer_free)
        w->st->ops->writer_free(w);
    w->st->writers--;
    writer_release(w);
}

/*
 * Deliver what the backend reported. The ready callback comes first so that a source
 * paused by the last write of a body can still commit; the done callback is the last
 * thing that happens to a writer.
 */
static void writer_deliver(uv_timer_t *t)
{
    struct storage_writer *w = t->data;

    if (w->ready_pending) {
        w->ready_pending = false;
        if (w->state == W_OPEN && w->ready_cb)
            w->ready_cb(w->ready_ctx);
    }
    if (w->finish_pending && w->state != W_DONE) {
        w->state = W_DONE;
        if (w->done_cb)
            w->done_cb(w->done_ctx, w->status, w->status ? &w->err : NULL);
        uv_close((uv_handle_t *)&w->defer, writer_closed);
    }
}

static void writer_kick(struct storage_writer *w)
{
    if (w->state != W_DONE)
        uv_timer_start(&w->defer, writer_deliver, 0, 0);
}

/**
 * storage_writer_finish() - see storage_impl.h.
 */
void storage_writer_finish(struct storage_writer *w, int status, const struct mi_err *err)
{
    if (w->finish_pending)
        return;
    if (w->status == 0 && status != 0) {
        w->status = status;
        if (err && err->msg[0])
            w->err = *err;
        else
            mi_err_set(&w->err, status, "storage: %s failed", w->st->ops->name);
        w->err.code = status;
    }
    w->finish_pending = true;
    writer_kick(w);
}

/**
 * storage_writer_ready() - see storage_impl.h.
 */
void storage_writer_ready(struct storage_writer *w)
{
    w->ready_pending = true;
    writer_kick(w);
}

static bool hex64(const char *s)
{
    size_t i;

    for (i = 0; s[i]; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return i == 64;
}

/**
 * storage_writer_open() - see storage.h. Return: 0, STORAGE_E_BADKEY, -EINVAL (a
 * malformed sha256_hex), STORAGE_E_TOOBIG (expected_size above MEDIA_MAX_BYTES), the
 * backend's error, or -ENOMEM.
 */
int storage_writer_open(struct storage *st, const char *key,
                        const struct storage_put_opts *opts, struct storage_writer **wp,
                        struct mi_err *err)
{
    struct storage_writer *w;
    int r;

    *wp = NULL;
    r = check_key(key, err);
    if (r)
        return r;
    if (opts && opts->sha256_hex && !hex64(opts->sha256_hex))
        return mi_err_set(err, -EINVAL, "storage: expected sha256 is not 64 hex digits");
    if (opts && opts->expected_size > st->cfg.max_bytes)
        return mi_err_set(err, STORAGE_E_TOOBIG,
                          "storage: announced size %llu exceeds MEDIA_MAX_BYTES=%llu",
                          (unsigned long long)opts->expected_size,
                          (unsigned long long)st->cfg.max_bytes);
    w = calloc(1, sizeof(*w));
    if (!w)
        return mi_err_set(err, -ENOMEM, "storage: out of memory");
    w->st = st;
    /* Made before the backend opens (a local writer has a temp file by then), even though
     * a writer whose store checks the digest (digest_by_store) never feeds it. */
    w->sha = EVP_MD_CTX_new();
    if (!w->sha || dup_str(&w->key, key) < 0 ||
        dup_str(&w->content_type, opts ? opts->content_type : NULL) < 0 ||
        dup_str(&w->sha256_expected, opts ? opts->sha256_hex : NULL) < 0 ||
        EVP_DigestInit_ex2(w->sha, st->sha256, NULL) != 1) {
        writer_release(w);
        return mi_err_set(err, -ENOMEM, "storage: out of memory");
    }
    for (char *p = w->sha256_expected; p && *p; p++) {
        if (*p >= 'A' && *p <= 'F')
            *p = (char)(*p - 'A' + 'a');
    }
    w->expected_size = opts ? opts->expected_size : 0;
    r = st->ops->writer_open(w, err);
    if (r != 0) {
        writer_release(w);
        return r;
    }
    uv_timer_init(st->loop, &w->defer);
    w->defer.data = w;
    st->writers++;
    *wp = w;
    return 0;
}

/**
 * storage_writer_on_ready() - see storage.h.
 */
void storage_writer_on_ready(struct storage_writer *w, storage_ready_cb cb, void *ctx)
{
    w->ready_cb = cb;
    w->ready_ctx = ctx;
}

/**
 * storage_writer_write() - see storage.h. Also -EINVAL for a chunk above
 * STORAGE_MAX_CHUNK or a writer that is no longer open.
 */
int storage_writer_write(struct storage_writer *w, const void *buf, size_t len)
{
    uint64_t limit = w->st->cfg.max_bytes;
    int r;

    if (w->state != W_OPEN || len > STORAGE_MAX_CHUNK)
        return -EINVAL;
    if (w->expected_size && w->expected_size < limit)
        limit = w->expected_size;
    if (len > limit - w->bytes) {
        w->state = W_FAILED;
        return STORAGE_E_TOOBIG;
    }
    if (len == 0)
        return 0;
    if (!w->digest_by_store && EVP_DigestUpdate(w->sha, buf, len) != 1) {
        w->state = W_FAILED;
        return -ENOMEM;
    }
    w->bytes += len;
    r = w->st->ops->writer_write(w, buf, len);
    if (r != 0 && r != STORAGE_PAUSE)
        w->state = W_FAILED;
    return r;
}

/**
 * storage_writer_bytes() - see storage.h.
 */
uint64_t storage_writer_bytes(const struct storage_writer *w)
{
    return w->bytes;
}

/**
 * storage_writer_sha256() - see storage.h.
 */
const char *storage_writer_sha256(const struct storage_writer *w)
{
    return w->sha256_hex;
}

static int writer_digest(struct storage_writer *w)
{
    if (w->digest_by_store) {
        /* the store refuses the body unless its sha256 is this one */
        memcpy(w->sha256_hex, w->sha256_expected, sizeof(w->sha256_hex));
        return 0;
    }
    return sigv4_sha256_final_hex(w->sha, w->sha256_hex);
}

/**
 * storage_writer_commit() - see storage.h. Return: 0 (the callback follows), or -EINVAL
 * when the writer failed earlier or is already ending (the caller must then abort it).
 */
int storage_writer_commit(struct storage_writer *w, storage_done_cb cb, void *ctx)
{
    if (w->state != W_OPEN)
        return -EINVAL;
    w->done_cb = cb;
    w->done_ctx = ctx;
    if (writer_digest(w) < 0) {
        w->state = W_ABORTING;
        w->status = mi_err_set(&w->err, -EIO, "storage: sha256 computation failed");
        w->st->ops->writer_abort(w);
        return 0;
    }
    if (w->expected_size && w->bytes != w->expected_size) {
        w->state = W_ABORTING;
        w->status = mi_err_set(&w->err, STORAGE_E_DIGEST,
                               "storage: body has %llu bytes but %llu were announced; "
                               "nothing was stored",
                               (unsigned long long)w->bytes,
                               (unsigned long long)w->expected_size);
        w->st->ops->writer_abort(w);
        return 0;
    }
    if (w->sha256_expected && strcmp(w->sha256_expected, w->sha256_hex) != 0) {
        w->state = W_ABORTING;
        w->status = mi_err_set(&w->err, STORAGE_E_DIGEST,
                               "storage: sha256 of the body (%.16s...) differs from the "
                               "expected %.16s...; nothing was stored",
                               w->sha256_hex, w->sha256_expected);
        w->st->ops->writer_abort(w);
        return 0;
    }
    w->state = W_COMMITTING;
    w->st->ops->writer_commit(w);
    return 0;
}

/**
 * storage_writer_abort() - see storage.h.
 */
void storage_writer_abort(struct storage_writer *w, storage_done_cb cb, void *ctx)
{
    if (w->state == W_COMMITTING || w->state == W_ABORTING || w->state == W_DONE)
        return;
    w->done_cb = cb;
    w->done_ctx = ctx;
    w->state = W_ABORTING;
    w->st->ops->writer_abort(w);
}

/* --- put: a writer fed from one buffer ------------------------------------------ */

struct put_op {
    struct storage_writer *w;
    const unsigned char *buf;
    size_t len, off;
    storage_done_cb cb;
    void *ctx;
};

static void put_done(void *ctx, int status, const struct mi_err *err)
{
    struct put_op *op = ctx;

    op->cb(op->ctx, status, err);
    free(op);
}

/* Feed chunks until the writer pauses or the buffer is exhausted, then commit. */
static void put_feed(void *ctx)
{
    struct put_op *op = ctx;

    while (op->off < op->len) {
        size_t n = op->len - op->off;
        int r;

        if (n > STORAGE_MAX_CHUNK)
            n = STORAGE_MAX_CHUNK;
        r = storage_writer_write(op->w, op->buf + op->off, n);
        if (r == 0 || r == STORAGE_PAUSE)
            op->off += n;
        if (r == STORAGE_PAUSE)
            return;
        if (r != 0) {
            op->w->status = r;
            mi_err_set(&op->w->err, r, "storage: put: write failed (%d)", r);
            storage_writer_abort(op->w, put_done, op);
            return;
        }
    }
    if (storage_writer_commit(op->w, put_done, op) != 0)
        storage_writer_abort(op->w, put_done, op);
}

/**
 * storage_put() - see storage.h. @buf is borrowed until the callback.
 */
int storage_put(struct storage *st, const char *key, const void *buf, size_t len,
                const struct storage_put_opts *opts, storage_done_cb cb, void *ctx,
                struct mi_err *err)
{
    struct put_op *op;
    int r;

    op = calloc(1, sizeof(*op));
    if (!op)
        return mi_err_set(err, -ENOMEM, "storage: out of memory");
    r = storage_writer_open(st, key, opts, &op->w, err);
    if (r != 0) {
        free(op);
        return r;
    }
    op->buf = buf;
    op->len = len;
    op->cb = cb;
    op->ctx = ctx;
    storage_writer_on_ready(op->w, put_feed, op);
    put_feed(op);
    return 0;
}

/* --- one-shot operations --------------------------------------------------------- */

/**
 * storage_head() - see storage.h.
 */
int storage_head(struct storage *st, const char *key, storage_meta_cb cb, void *ctx,
                 struct mi_err *err)
{
    int r = check_key(key, err);

    return r ? r : st->ops->head(st, key, cb, ctx, err);
}

/**
 * storage_get() - see storage.h.
 */
int storage_get(struct storage *st, const char *key, storage_data_cb data_cb,
                storage_meta_cb done_cb, void *ctx, struct mi_err *err)
{
    int r = check_key(key, err);

    return r ? r : st->ops->get(st, key, data_cb, done_cb, ctx, err);
}

/**
 * storage_delete() - see storage.h.
 */
int storage_delete(struct storage *st, const char *key, storage_done_cb cb, void *ctx,
                   struct mi_err *err)
{
    int r = check_key(key, err);

    return r ? r : st->ops->del(st, key, cb, ctx, err);
}

/**
 * storage_meta_clear() - see storage.h.
 */
void storage_meta_clear(struct storage_meta *meta)
{
    if (!meta)
        return;
    free(meta->content_type);
    free(meta->sha256_hex);
    memset(meta, 0, sizeof(*meta));
}
