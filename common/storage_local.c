/*
 * storage_local.c - the local-directory backend (MEDIA_STORAGE_BACKEND=local).
 *
 * Layout: MEDIA_LOCAL_DIR/media/{messageId}/{providerMediaId}, exactly the object key.
 *
 * Containment. The root directory is opened once; every later access walks the two
 * directory levels with openat(O_NOFOLLOW | O_DIRECTORY) relative to the root's fd and
 * opens the file itself with O_NOFOLLOW, so a symbolic link planted anywhere below
 * the root is never followed and ".." never gets a chance (keys are refused by
 * objkey_validate() before any of this). The root itself may be a symbolic link: it is
 * the operator's configuration, not data.
 *
 * Atomicity. A writer writes to ".tmp-<random>" in the object's directory. Ids cannot
 * start with '.', so a temporary name never collides with a key nor is ever visible as
 * an object. Commit (on the libuv threadpool) sets the metadata xattrs, fsyncs the
 * file, renames it over the final name and fsyncs the directory; abort and every
 * failure unlink the temporary file, so nothing half-written is ever visible and
 * nothing is left behind.
 *
 * Blocking. Chunk writes (<= 64 KiB) and the few openat/mkdirat calls of an open are
 * synchronous: they hit the page cache. The slow parts, fsync and rename, run on the
 * threadpool; get reads through uv_fs_read; every callback runs on the loop.
 *
 * Metadata. Content type and sha256 are stored as the xattrs "user.content_type" and
 * "user.sha256" when the filesystem supports them (best effort; head then reports
 * them), mirroring the S3 object's Content-Type and x-amz-meta-sha256.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "objkey.h"
#include "storage_impl.h"
#include "util.h"

#define XATTR_CTYPE "user.content_type"
#define XATTR_SHA "user.sha256"
#define TMP_PREFIX ".tmp-"
#define DIR_MODE 0750
#define FILE_MODE 0640

struct local {
    int root_fd;
    char root[PATH_MAX];      /* absolute path of the root, for stored URLs */
};

/* A key split into its two ids (validated by objkey_validate before). */
struct local_path {
    char mid[OBJKEY_MESSAGE_ID_MAX + 1];
    char pmid[OBJKEY_MEDIA_ID_MAX + 1];
};

struct local_writer {
    struct storage_writer *w; /* back-pointer for the threadpool completion */
    int root_fd;              /* borrowed from struct local */
    int media_fd, dir_fd, fd;
    bool created_media, created_dir;
    struct local_path p;
    char tmp[sizeof(TMP_PREFIX) + 16];
    char *content_type;       /* owned copy for the threadpool */
    char sha[65];
    uv_work_t work;
    int work_errno;           /* filled on the threadpool */
    const char *work_step;    /* which syscall failed, for the message */
    bool renamed;
};

static int split_key(const char *key, struct local_path *p, struct mi_err *err)
{
    struct mi_err kerr = MI_ERR_INIT;
    const char *mid, *slash;

    if (objkey_validate(key, &kerr) != 0)
        return mi_err_set(err, STORAGE_E_BADKEY, "local: %s", kerr.msg);
    mid = key + strlen(OBJKEY_PREFIX);
    slash = strchr(mid, '/');
    /* objkey_validate() guarantees the shape and the lengths used below. */
    memcpy(p->mid, mid, (size_t)(slash - mid));
    p->mid[slash - mid] = '\0';
    snprintf(p->pmid, sizeof(p->pmid), "%s", slash + 1);
    return 0;
}

/* errno of a failed directory walk → our status: links and non-directories are refused. */
static int walk_error(int e, const char *key, const char *what, struct mi_err *err)
{
    if (e == ELOOP || e == ENOTDIR)
        return mi_err_set(err, STORAGE_E_PERMANENT, "local: %s: %s is a symbolic link or "
                          "not a directory; refusing to follow it", key, what);
    if (e == ENOENT)
        return mi_err_set(err, STORAGE_E_NOTFOUND, "local: %s: no such object", key);
    return mi_err_set(err, -e, "local: %s: cannot open %s: %s", key, what, strerror(e));
}

/*
 * Open directory @name below @parent without following links; create it first when
 * @created is not NULL and it is missing. Return: the fd, or -errno.
 */
static int open_dir(int parent, const char *name, bool *created)
{
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    if (fd >= 0 || errno != ENOENT || !created)
        return fd >= 0 ? fd : -errno;
    if (mkdirat(parent, name, DIR_MODE) == 0)
        *created = true;
    else if (errno != EEXIST)
        return -errno;
    fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

/*
 * Open the object's directory (media/{mid}) into *@dfd, creating the levels when
 * @create. Return: 0, or a status (negative errno, STORAGE_E_NOTFOUND,
 * STORAGE_E_PERMANENT) with @err filled.
 */
static int open_obj_dir(struct local *l, const char *key, const struct local_path *p,
                        bool create, int *dfd, int *media_fd, bool *created_media,
                        bool *created_dir, struct mi_err *err)
{
    int mfd, fd;

    *dfd = -1;
    mfd = open_dir(l->root_fd, "media", create ? created_media : NULL);
    if (mfd < 0)
        return walk_error(-mfd, key, "the media directory", err);
    fd = open_dir(mfd, p->mid, create ? created_dir : NULL);
    if (fd < 0) {
        close(mfd);
        return walk_error(-fd, key, "the message directory", err);
    }
    if (media_fd)
        *media_fd = mfd;
    else
        close(mfd);
    *dfd = fd;
    return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* --- backend table: configuration ---------------------------------------------------- */

static int local_init(struct storage *st, struct mi_err *err)
{
    const char *dir = st->cfg.local_dir && *st->cfg.local_dir ? st->cfg.local_dir
                                                               : ".media-cache";
    struct local *l = calloc(1, sizeof(*l));

    if (!l)
        return mi_err_set(err, -ENOMEM, "local: out of memory");
    /* Create the root (one level, like the Node app's LocalFileStorage) and keep it open
     * so that a later chdir or rename of a parent cannot move the store. */
    if (mkdir(dir, DIR_MODE) != 0 && errno != EEXIST) {
        int e = errno;

        free(l);
        return mi_err_set(err, STORAGE_E_CONFIG, "MEDIA_LOCAL_DIR=%s: cannot create it: %s",
                          dir, strerror(e));
    }
    l->root_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (l->root_fd < 0 || !realpath(dir, l->root)) {
        int e = errno;

        if (l->root_fd >= 0)
            close(l->root_fd);
        free(l);
        return mi_err_set(err, STORAGE_E_CONFIG, "MEDIA_LOCAL_DIR=%s: cannot open it as a "
                          "directory: %s", dir, strerror(e));
    }
    st->priv = l;
    return 0;
}

static void local_fini(struct storage *st)
{
    struct local *l = st->priv;

    if (!l)
        return;
    close(l->root_fd);
    free(l);
    st->priv = NULL;
}

static char *local_url(const struct storage *st, const char *key)
{
    const struct local *l = st->priv;
    size_t n = strlen(l->root) + strlen(key) + sizeof("file:///");
    char *u = malloc(n);

    if (u && objkey_url_format(OBJKEY_FILE, l->root, key, u, n, NULL) != 0) {
        free(u);
        u = NULL;
    }
    return u;
}

/* --- writer -------------------------------------------------------------------------- */

static void lw_close(struct local_writer *lw)
{
    if (lw->fd >= 0)
        close(lw->fd);
    if (lw->dir_fd >= 0)
        close(lw->dir_fd);
    if (lw->media_fd >= 0)
        close(lw->media_fd);
    lw->fd = lw->dir_fd = lw->media_fd = -1;
}

static void lw_free(struct local_writer *lw)
{
    if (!lw)
        return;
    lw_close(lw);
    free(lw->content_type);
    free(lw);
}

static int tmp_create(struct local_writer *lw)
{
    for (int attempt = 0; attempt < 8; attempt++) {
        char hex[17];

        mi_rand_hex(hex, 8);
        snprintf(lw->tmp, sizeof(lw->tmp), "%s%s", TMP_PREFIX, hex);
        lw->fd = openat(lw->dir_fd, lw->tmp,
                        O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, FILE_MODE);
        if (lw->fd >= 0)
            return 0;
        if (errno != EEXIST)
            return -errno;
    }
    return -EEXIST;
}

static int local_writer_open(struct storage_writer *w, struct mi_err *err)
{
    struct local *l = w->st->priv;
    struct local_writer *lw = calloc(1, sizeof(*lw));
    int r;

    if (!lw)
        return mi_err_set(err, -ENOMEM, "local: out of memory");
    lw->fd = lw->dir_fd = lw->media_fd = -1;
    lw->w = w;
    r = split_key(w->key, &lw->p, err);
    if (r) {
        lw_free(lw);
        return r;
    }
    r = open_obj_dir(l, w->key, &lw->p, true, &lw->dir_fd, &lw->media_fd,
                     &lw->created_media, &lw->created_dir, err);
    if (r) {
        lw_free(lw);
        return r;
    }
    lw->root_fd = l->root_fd;
    r = tmp_create(lw);
    if (r) {
        lw_free(lw);
        return mi_err_set(err, r, "local: %s: cannot create a temporary file in %s/media/%s: "
                          "%s", w->key, l->root, lw->p.mid, strerror(-r));
    }
    w->priv = lw;
    return 0;
}

static int local_writer_write(struct storage_writer *w, const void *buf, size_t len)
{
    struct local_writer *lw = w->priv;

    return write_all(lw->fd, buf, len);
}

/* Threadpool: make the temporary file durable and visible under its final name. */
static void commit_work(uv_work_t *req)
{
    struct local_writer *lw = req->data;

    /* Metadata is best effort: not every filesystem takes user xattrs. */
    if (lw->content_type)
        (void)fsetxattr(lw->fd, XATTR_CTYPE, lw->content_type, strlen(lw->content_type), 0);
    (void)fsetxattr(lw->fd, XATTR_SHA, lw->sha, strlen(lw->sha), 0);
    lw->work_step = "fsync";
    if (fsync(lw->fd) != 0)
        goto fail;
    lw->work_step = "close";
    if (close(lw->fd) != 0) {
        lw->fd = -1;
        goto fail;
    }
    lw->fd = -1;
    lw->work_step = "rename";
    if (renameat(lw->dir_fd, lw->tmp, lw->dir_fd, lw->p.pmid) != 0)
        goto fail;
    lw->renamed = true;
    /* The new name, and any directory created on the way, must survive a crash too. */
    lw->work_step = "fsync of the directory";
    if (fsync(lw->dir_fd) != 0 || (lw->created_dir && fsync(lw->media_fd) != 0) ||
        (lw->created_media && fsync(lw->root_fd) != 0))
        goto fail;
    lw->work_errno = 0;
    return;
fail:
    lw->work_errno = errno ? errno : EIO;
    if (!lw->renamed)
        (void)unlinkat(lw->dir_fd, lw->tmp, 0);
}

/* Loop: report the end of the commit. */
static void commit_after(uv_work_t *req, int status)
{
    struct local_writer *lw = req->data;
    struct storage_writer *w = lw->w;
    struct mi_err err = MI_ERR_INIT;
    int r = 0;

    if (status == UV_ECANCELED) {
        /* Only uv_cancel() gets here, and nothing here cancels: clean up anyway. */
        (void)unlinkat(lw->dir_fd, lw->tmp, 0);
        r = mi_err_set(&err, -ECANCELED, "local: %s: commit cancelled", w->key);
    } else if (lw->work_errno) {
        r = mi_err_set(&err, -lw->work_errno, "local: %s: %s failed: %s%s", w->key,
                       lw->work_step, strerror(lw->work_errno),
                       lw->renamed ? " (the object is in place but may not be durable)"
                                   : "; nothing was stored");
    }
    lw_close(lw);
    storage_writer_finish(w, r, r ? &err : NULL);
}

static void local_writer_commit(struct storage_writer *w)
{
    struct local_writer *lw = w->priv;
    struct mi_err err = MI_ERR_INIT;
    int r;

    snprintf(lw->sha, sizeof(lw->sha), "%s", w->sha256_hex);
    if (w->content_type) {
        lw->content_type = strdup(w->content_type);
        if (!lw->content_type) {
            (void)unlinkat(lw->dir_fd, lw->tmp, 0);
            lw_close(lw);
            storage_writer_finish(w, mi_err_set(&err, -ENOMEM, "local: out of memory"), &err);
            return;
        }
    }
    lw->work.data = lw;
    r = uv_queue_work(w->st->loop, &lw->work, commit_work, commit_after);
    if (r != 0) {
        (void)unlinkat(lw->dir_fd, lw->tmp, 0);
        lw_close(lw);
        storage_writer_finish(w, mi_err_set(&err, r, "local: %s: cannot queue the commit: "
                                            "%s", w->key, uv_strerror(r)), &err);
    }
}

static void local_writer_abort(struct storage_writer *w)
{
    struct local_writer *lw = w->priv;

    if (lw && lw->dir_fd >= 0 && lw->tmp[0])
        (void)unlinkat(lw->dir_fd, lw->tmp, 0);
    if (lw)
        lw_close(lw);
    /* storage.c's recorded status (digest mismatch, caller's abort...) wins over this. */
    storage_writer_finish(w, -ECANCELED, NULL);
}

static void local_writer_free(struct storage_writer *w)
{
    lw_free(w->priv);
    w->priv = NULL;
}

/* --- head, get, delete ----------------------------------------------------------------- */

struct local_op {
    struct storage *st;
    storage_meta_cb meta_cb;
    storage_done_cb done_cb;
    storage_data_cb data_cb;
    void *ctx;
    int status;
    struct mi_err err;
    struct storage_meta meta;
    /* get only */
    int fd;
    uv_fs_t req;
    char *buf;                /* STORAGE_MAX_CHUNK bytes */
};

static void op_free(struct local_op *o)
{
    storage_meta_clear(&o->meta);
    free(o->buf);
    free(o);
}

static struct local_op *op_new(struct storage *st, void *ctx)
{
    struct local_op *o = calloc(1, sizeof(*o));

    if (o) {
        o->st = st;
        o->ctx = ctx;
        o->fd = -1;
    }
    return o;
}

static char *xattr_str(int fd, const char *name)
{
    char buf[256];
    ssize_t n = fgetxattr(fd, name, buf, sizeof(buf) - 1);

    if (n <= 0)
        return NULL;
    buf[n] = '\0';
    return strdup(buf);
}

/*
 * Open the object of @key read-only without following links into *@fdp, and fill
 * @o->meta. Return: 0, or a status with @o->err filled.
 */
static int open_object(struct local_op *o, const char *key, int *fdp)
{
    struct local *l = o->st->priv;
    struct local_path p;
    struct stat sb;
    int dfd, fd, r;

    *fdp = -1;
    r = split_key(key, &p, &o->err);
    if (!r)
        r = open_obj_dir(l, key, &p, false, &dfd, NULL, NULL, NULL, &o->err);
    if (r)
        return r;
    fd = openat(dfd, p.pmid, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    r = fd < 0 ? errno : 0;
    close(dfd);
    if (fd < 0)
        return walk_error(r, key, "the object", &o->err);
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return mi_err_set(&o->err, STORAGE_E_PERMANENT, "local: %s: not a regular file; "
                          "refusing it", key);
    }
    o->meta.exists = true;
    o->meta.size = (uint64_t)sb.st_size;
    o->meta.content_type = xattr_str(fd, XATTR_CTYPE);
    o->meta.sha256_hex = xattr_str(fd, XATTR_SHA);
    *fdp = fd;
    return 0;
}

static void meta_deliver(void *arg)
{
    struct local_op *o = arg;

    o->meta_cb(o->ctx, o->status, &o->meta, o->status ? &o->err : NULL);
    op_free(o);
}

static int local_head(struct storage *st, const char *key, storage_meta_cb cb, void *ctx,
                      struct mi_err *err)
{
    struct local_op *o = op_new(st, ctx);
    int fd;

    if (!o)
        return mi_err_set(err, -ENOMEM, "local: out of memory");
    o->meta_cb = cb;
    o->status = open_object(o, key, &fd);
    if (fd >= 0)
        close(fd);
    if (o->status == STORAGE_E_BADKEY) {
        if (err)
            *err = o->err;
        op_free(o);
        return STORAGE_E_BADKEY;
    }
    if (storage_defer(st, meta_deliver, o) != 0) {
        op_free(o);
        return mi_err_set(err, -ENOMEM, "local: out of memory");
    }
    return 0;
}

static void get_finish(struct local_op *o)
{
    if (o->fd >= 0)
        close(o->fd);
    o->fd = -1;
    meta_deliver(o);
}

static int get_next(struct local_op *o);

static void get_read_cb(uv_fs_t *req)
{
    struct local_op *o = req->data;
    ssize_t n = req->result;

    uv_fs_req_cleanup(req);
    if (n < 0) {
        o->status = mi_err_set(&o->err, (int)n, "local: read failed: %s", uv_strerror((int)n));
    } else if (n > 0) {
        if (!o->data_cb(o->ctx, o->buf, (size_t)n))
            o->status = mi_err_set(&o->err, -ECANCELED, "local: get stopped by the reader");
        else if (get_next(o) == 0)
            return;
    }
    get_finish(o);
}

static int get_next(struct local_op *o)
{
    uv_buf_t b = uv_buf_init(o->buf, STORAGE_MAX_CHUNK);
    int r;

    o->req.data = o;
    r = uv_fs_read(o->st->loop, &o->req, o->fd, &b, 1, -1, get_read_cb);
    if (r < 0)
        o->status = mi_err_set(&o->err, r, "local: cannot start a read: %s", uv_strerror(r));
    return r;
}

static void get_start(void *arg)
{
    struct local_op *o = arg;

    if (o->status || get_next(o) != 0)
        get_finish(o);
}

static int local_get(struct storage *st, const char *key, storage_data_cb data_cb,
                     storage_meta_cb done_cb, void *ctx, struct mi_err *err)
{
    struct local_op *o = op_new(st, ctx);
    int fd;

    if (!o)
        return mi_err_set(err, -ENOMEM, "local: out of memory");
    o->meta_cb = done_cb;
    o->data_cb = data_cb;
    o->buf = malloc(STORAGE_MAX_CHUNK);
    if (!o->buf) {
        op_free(o);
        return mi_err_set(err, -ENOMEM, "local: out of memory");
    }
    o->status = open_object(o, key, &fd);
    o->fd = fd;
    if (o->status == STORAGE_E_BADKEY) {
        if (err)
            *err = o->err;
        op_free(o);
        return STORAGE_E_BADKEY;
    }
    /* Start reading on a later iteration so no callback runs inside this call. */
    if (storage_defer(st, get_start, o) != 0) {
        if (o->fd >= 0)
            close(o->fd);
        op_free(o);
        return mi_err_set(err, -ENOMEM, "local: out of memory");
    }
    return 0;
}

static void done_deliver(void *arg)
{
    struct local_op *o = arg;

    o->done_cb(o->ctx, o->status, o->status ? &o->err : NULL);
    op_free(o);
}

static int local_del(struct storage *st, const char *key, storage_done_cb cb, void *ctx,
                     struct mi_err *err)
{
    struct local *l = st->priv;
    struct local_op *o = op_new(st, ctx);
    struct local_path p;
    int dfd, r;

    if (!o)
        return mi_err_set(err, -ENOMEM, "local: out of memory");
    o->done_cb = cb;
    r = split_key(key, &p, err);
    if (r) {
        op_free(o);
        return r;
    }
    r = open_obj_dir(l, key, &p, false, &dfd, NULL, NULL, NULL, &o->err);
    if (r == 0) {
        /* unlinkat() removes a planted symbolic link itself, never its target. */
        if (unlinkat(dfd, p.pmid, 0) != 0 && errno != ENOENT)
            o->status = mi_err_set(&o->err, -errno, "local: %s: cannot delete: %s", key,
                                   strerror(errno));
        else if (fsync(dfd) != 0)
            o->status = mi_err_set(&o->err, -errno, "local: %s: fsync of the directory "
                                   "failed: %s", key, strerror(errno));
        close(dfd);
    } else if (r != STORAGE_E_NOTFOUND) {
        o->status = r;   /* a missing directory means the object is already gone */
    }
    if (storage_defer(st, done_deliver, o) != 0) {
        op_free(o);
        return mi_err_set(err, -ENOMEM, "local: out of memory");
    }
    return 0;
}

const struct storage_ops storage_local_ops = {
    .name = "local",
    .init = local_init,
    .fini = local_fini,
    .url = local_url,
    .writer_open = local_writer_open,
    .writer_write = local_writer_write,
    .writer_commit = local_writer_commit,
    .writer_abort = local_writer_abort,
    .writer_free = local_writer_free,
    .head = local_head,
    .get = local_get,
    .del = local_del,
};
