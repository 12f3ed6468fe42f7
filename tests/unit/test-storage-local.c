/*
 * test-storage-local.c - the local backend through storage.h, in a temporary directory:
 * round trips, digest and size mismatches, aborts, hostile keys and planted symbolic
 * links. No services needed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "objkey.h"
#include "sigv4.h"
#include "storage_impl.h"
#include "tap.h"

struct result {
    bool called;
    int status;
    char msg[MI_ERR_MSG_MAX];
    struct storage_meta meta;   /* copied strings */
    char data[1 << 20];
    size_t len;
    size_t stop_after;          /* get: return false after this many bytes (0: never) */
};

static uv_loop_t loop;
static char base[PATH_MAX / 2], root[PATH_MAX], outside[PATH_MAX];

static void done_cb(void *ctx, int status, const struct mi_err *err)
{
    struct result *r = ctx;

    r->called = true;
    r->status = status;
    snprintf(r->msg, sizeof(r->msg), "%s", err ? err->msg : "");
}

static void meta_cb(void *ctx, int status, const struct storage_meta *m,
                    const struct mi_err *err)
{
    struct result *r = ctx;

    done_cb(ctx, status, err);
    r->meta.exists = m->exists;
    r->meta.size = m->size;
    r->meta.content_type = m->content_type ? strdup(m->content_type) : NULL;
    r->meta.sha256_hex = m->sha256_hex ? strdup(m->sha256_hex) : NULL;
}

static bool data_cb(void *ctx, const void *buf, size_t len)
{
    struct result *r = ctx;

    if (r->len + len <= sizeof(r->data))
        memcpy(r->data + r->len, buf, len);
    r->len += len;
    return !(r->stop_after && r->len >= r->stop_after);
}

static void wait_for(struct result *r)
{
    for (int i = 0; i < 100000 && !r->called; i++)
        uv_run(&loop, UV_RUN_ONCE);
}

static void reset(struct result *r)
{
    storage_meta_clear(&r->meta);
    memset(r, 0, offsetof(struct result, data));
    r->len = 0;
    r->stop_after = 0;
}

static bool exists_at(const char *dir, const char *rel)
{
    char p[PATH_MAX * 2];
    struct stat sb;

    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    return lstat(p, &sb) == 0;
}

/* Count entries whose name starts with ".tmp-" in root/media/@mid. */
static int temp_files(const char *mid)
{
    char p[PATH_MAX * 2];
    DIR *d;
    struct dirent *e;
    int n = 0;

    snprintf(p, sizeof(p), "%s/media/%s", root, mid);
    d = opendir(p);
    if (!d)
        return 0;
    while ((e = readdir(d)))
        n += strncmp(e->d_name, ".tmp-", 5) == 0;
    closedir(d);
    return n;
}

/* Count every entry below @dir (recursively), to prove nothing appeared there. */
static int tree_count(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d))) {
        char p[PATH_MAX * 2];

        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        n++;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        if (e->d_type == DT_DIR)
            n += tree_count(p);
    }
    closedir(d);
    return n;
}

static void fill(unsigned char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (unsigned char)(seed >> 16);
    }
}

/* Write @len bytes through a writer in chunks of @chunk, then commit. */
static int write_object(struct storage *st, const char *key, const void *buf, size_t len,
                        const struct storage_put_opts *opts, size_t chunk, struct result *r)
{
    struct storage_writer *w;
    struct mi_err err = MI_ERR_INIT;
    int rc = storage_writer_open(st, key, opts, &w, &err);

    if (rc)
        return rc;
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;

        rc = storage_writer_write(w, (const char *)buf + off, n);
        if (rc) {
            storage_writer_abort(w, done_cb, r);
            wait_for(r);
            return rc;
        }
    }
    rc = storage_writer_commit(w, done_cb, r);
    TAP_CHECK(!r->called);   /* never called from inside the call */
    if (rc == 0)
        wait_for(r);
    return rc;
}

static void test_round_trip(struct storage *st)
{
    static unsigned char body[300 * 1024 + 7];
    char sha[65], path[PATH_MAX * 2], *url, want[PATH_MAX * 2];
    struct storage_put_opts opts = { .content_type = "image/jpeg", .sha256_hex = sha };
    static struct result r;
    struct stat sb;
    struct mi_err err = MI_ERR_INIT;

    fill(body, sizeof(body), 1);
    TAP_EQ_INT(sigv4_sha256_hex(body, sizeof(body), sha), 0);
    opts.expected_size = sizeof(body);
    TAP_EQ_INT(write_object(st, "media/1/abc", body, sizeof(body), &opts, 16 * 1024, &r), 0);
    TAP_EQ_INT(r.status, 0);
    TAP_EQ_INT(temp_files("1"), 0);
    snprintf(path, sizeof(path), "%s/media/1/abc", root);
    TAP_CHECK(stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size == sizeof(body));
    TAP_CHECK((sb.st_mode & 0077 & ~0050) == 0);   /* 0640 at most */

    reset(&r);
    TAP_EQ_INT(storage_head(st, "media/1/abc", meta_cb, &r, &err), 0);
    wait_for(&r);
    TAP_EQ_INT(r.status, 0);
    TAP_CHECK(r.meta.exists);
    TAP_EQ_INT(r.meta.size, sizeof(body));
    TAP_EQ_STR(r.meta.content_type, "image/jpeg");
    TAP_EQ_STR(r.meta.sha256_hex, sha);

    reset(&r);
    TAP_EQ_INT(storage_get(st, "media/1/abc", data_cb, meta_cb, &r, &err), 0);
    TAP_CHECK(!r.called && r.len == 0);
    wait_for(&r);
    TAP_EQ_INT(r.status, 0);
    TAP_EQ_INT(r.len, sizeof(body));
    TAP_CHECK(memcmp(r.data, body, sizeof(body)) == 0);

    /* A get the reader stops early. */
    reset(&r);
    r.stop_after = 1000;
    TAP_EQ_INT(storage_get(st, "media/1/abc", data_cb, meta_cb, &r, &err), 0);
    wait_for(&r);
    TAP_EQ_INT(r.status, -ECANCELED);

    url = storage_url(st, "media/1/abc");
    snprintf(want, sizeof(want), "file://%s/media/1/abc", root);
    TAP_EQ_STR(url, want);
    free(url);
    TAP_EQ_STR(storage_kind_name(st), "local");

    /* storage_put, overwriting the object: the new bytes replace the old. */
    reset(&r);
    TAP_EQ_INT(storage_put(st, "media/1/abc", "hello", 5, NULL, done_cb, &r, &err), 0);
    wait_for(&r);
    TAP_EQ_INT(r.status, 0);
    reset(&r);
    TAP_EQ_INT(storage_get(st, "media/1/abc", data_cb, meta_cb, &r, &err), 0);
    wait_for(&r);
    TAP_EQ_INT(r.len, 5);
    TAP_CHECK(memcmp(r.data, "hello", 5) == 0);
    TAP_EQ_INT(temp_files("1"), 0);
    reset(&r);
}

static void test_mismatch_and_abort(struct storage *st)
{
    static unsigned char body[100000];
    char sha[65];
    struct storage_put_opts opts = { .sha256_hex = sha };
    static struct result r;
    struct storage_writer *w;
    struct mi_err err = MI_ERR_INIT;

    fill(body, sizeof(body), 2);
    TAP_EQ_INT(sigv4_sha256_hex(body, sizeof(body) - 1, sha), 0);   /* wrong on purpose */
    TAP_EQ_INT(write_object(st, "media/2/bad", body, sizeof(body), &opts, 65536, &r), 0);
    TAP_EQ_INT(r.status, STORAGE_E_DIGEST);
    TAP_CHECK(!exists_at(root, "media/2/bad"));
    TAP_EQ_INT(temp_files("2"), 0);

    /* Fewer bytes than announced. */
    reset(&r);
    opts.sha256_hex = NULL;
    opts.expected_size = sizeof(body) + 1;
    TAP_EQ_INT(write_object(st, "media/2/short", body, sizeof(body), &opts, 65536, &r), 0);
    TAP_EQ_INT(r.status, STORAGE_E_DIGEST);
    TAP_CHECK(!exists_at(root, "media/2/short"));
    TAP_EQ_INT(temp_files("2"), 0);

    /* Abort after some writes: nothing visible, no temporary file. */
    reset(&r);
    TAP_EQ_INT(storage_writer_open(st, "media/2/aborted", NULL, &w, &err), 0);
    TAP_EQ_INT(temp_files("2"), 1);
    TAP_EQ_INT(storage_writer_write(w, body, 4096), 0);
    storage_writer_abort(w, done_cb, &r);
    TAP_CHECK(!r.called);
    wait_for(&r);
    TAP_CHECK(r.called && r.status != 0);
    TAP_CHECK(!exists_at(root, "media/2/aborted"));
    TAP_EQ_INT(temp_files("2"), 0);
    reset(&r);

    /* Missing objects. */
    TAP_EQ_INT(storage_head(st, "media/2/none", meta_cb, &r, &err), 0);
    wait_for(&r);
    TAP_EQ_INT(r.status, STORAGE_E_NOTFOUND);
    TAP_CHECK(!r.meta.exists);
    reset(&r);
    TAP_EQ_INT(storage_get(st, "media/404/none", data_cb, meta_cb, &r, &err), 0);
    wait_for(&r);
    TAP_EQ_INT(r.status, STORAGE_E_NOTFOUND);
    reset(&r);
}

static void test_delete(struct storage *st)
{
    static struct result r;
    struct mi_err err = MI_ERR_INIT;

    TAP_EQ_INT(storage_put(st, "media/3/gone", "x", 1, NULL, done_cb, &r, &err), 0);
    wait_for(&r);
    TAP_CHECK(exists_at(root, "media/3/gone"));
    reset(&r);
    TAP_EQ_INT(storage_delete(st, "media/3/gone", done_cb, &r, &err), 0);
    TAP_CHECK(!r.called);
    wait_for(&r);
    TAP_EQ_INT(r.status, 0);
    TAP_CHECK(!exists_at(root, "media/3/gone"));
    reset(&r);
    TAP_EQ_INT(storage_delete(st, "media/3/gone", done_cb, &r, &err), 0);
    wait_for(&r);
    TAP_EQ_INT(r.status, 0);
    reset(&r);
    TAP_EQ_INT(storage_delete(st, "media/999/never", done_cb, &r, &err), 0);
    wait_for(&r);
    TAP_EQ_INT(r.status, 0);
    reset(&r);
}

static void test_hostile_keys(struct storage *st)
{
    static const char *const keys[] = {
        "media/../../outside/x", "media/1/../../../outside/x", "/etc/passwd",
        "media/%2e%2e/x", "media/1/%2fetc", "media/1/x%00", "media\\..\\x", "media//x",
        "media/1/.", "media/1/..", "../outside/media/1/x", "media/1/x/", "media/1/\n",
        "", "media/1/.tmp-0123456789abcdef", "other/1/x",
    };
    static struct result r;
    struct storage_writer *w, fake = { .st = st };
    struct mi_err err = MI_ERR_INIT;
    int before_root = tree_count(root), before_out = tree_count(outside);

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        TAP_EQ_INT(storage_writer_open(st, keys[i], NULL, &w, &err), STORAGE_E_BADKEY);
        TAP_EQ_INT(storage_head(st, keys[i], meta_cb, &r, &err), STORAGE_E_BADKEY);
        TAP_EQ_INT(storage_get(st, keys[i], data_cb, meta_cb, &r, &err), STORAGE_E_BADKEY);
        TAP_EQ_INT(storage_delete(st, keys[i], done_cb, &r, &err), STORAGE_E_BADKEY);
        /* The backend refuses on its own too, whatever storage.c checked. */
        fake.key = (char *)keys[i];
        TAP_EQ_INT(storage_local_ops.writer_open(&fake, &err), STORAGE_E_BADKEY);
        TAP_EQ_INT(storage_local_ops.head(st, keys[i], meta_cb, &r, &err), STORAGE_E_BADKEY);
        TAP_EQ_INT(storage_local_ops.get(st, keys[i], data_cb, meta_cb, &r, &err),
                   STORAGE_E_BADKEY);
        TAP_EQ_INT(storage_local_ops.del(st, keys[i], done_cb, &r, &err), STORAGE_E_BADKEY);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    TAP_CHECK(!r.called);
    TAP_EQ_INT(tree_count(root), before_root);
    TAP_EQ_INT(tree_count(outside), before_out);
}

static void test_symlinks(struct storage *st)
{
    char link[PATH_MAX * 2], target[PATH_MAX * 2];
    static struct result r;
    struct storage_writer *w;
    struct mi_err err = MI_ERR_INIT;
    int before_out;
    FILE *f;

    /* outside/secret: a file the store must never read, write or delete. */
    snprintf(target, sizeof(target), "%s/secret", outside);
    f = fopen(target, "w");
    TAP_CHECK(f != NULL);
    if (f) {
        fputs("secret", f);
        fclose(f);
    }
    before_out = tree_count(outside);

    /* A message directory that is a link to outside: refused, nothing created there. */
    snprintf(link, sizeof(link), "%s/media/666", root);
    TAP_EQ_INT(symlink(outside, link), 0);
    TAP_EQ_INT(storage_writer_open(st, "media/666/x", NULL, &w, &err), STORAGE_E_PERMANENT);
    TAP_CHECK(strstr(err.msg, "symbolic link") != NULL);
    TAP_EQ_INT(storage_head(st, "media/666/secret", meta_cb, &r, &err), 0);
    wait_for(&r);
    TAP_EQ_INT(r.status, STORAGE_E_PERMANENT);
    TAP_CHECK(!r.meta.exists);
    reset(&r);
    TAP_EQ_INT(storage_get(st, "media/666/secret", data_cb, meta_cb, &r, &err), 0);
    wait_for(&r);
    TAP_EQ_INT(r.status, STORAGE_E_PERMANENT);
    TAP_EQ_INT(r.len, 0);
    reset(&r);
    TAP_EQ_INT(storage_delete(st, "media/666/secret", done_cb, &r, &err), 0);
    wait_for(&r);
    TAP_EQ_INT(r.status, STORAGE_E_PERMANENT);
    TAP_CHECK(exists_at(outside, "secret"));
    reset(&r);

    /* An object name that is a link to outside/secret: not read; a put replaces the
     * link itself; a delete removes only the link. */
    TAP_EQ_INT(storage_put(st, "media/7/seed", "s", 1, NULL, done_cb, &r, &err), 0);
    wait_for(&r);
    reset(&r);
    snprintf(link, sizeof(link), "%s/media/7/link", root);
    TAP_EQ_INT(symlink(target, link), 0);
    TAP_EQ_INT(storage_get(st, "media/7/link", data_cb, meta_cb, &r, &err), 0);
    wait_for(&r);
    TAP_EQ_INT(r.status, STORAGE_E_PERMANENT);
    TAP_EQ_INT(r.len, 0);
    reset(&r);
    TAP_EQ_INT(storage_put(st, "media/7/link", "new", 3, NULL, done_cb, &r, &err), 0);
    wait_for(&r);
    TAP_EQ_INT(r.status, 0);
    reset(&r);
    {
        struct stat sb;
        char buf[16] = "";

        TAP_CHECK(lstat(link, &sb) == 0 && S_ISREG(sb.st_mode));
        f = fopen(target, "r");
        if (f) {
            TAP_CHECK(fgets(buf, sizeof(buf), f) != NULL);
            fclose(f);
        }
        TAP_EQ_STR(buf, "secret");
    }
    TAP_EQ_INT(symlink(target, link) == 0 || (unlink(link) == 0 && symlink(target, link) == 0),
               1);
    TAP_EQ_INT(storage_delete(st, "media/7/link", done_cb, &r, &err), 0);
    wait_for(&r);
    TAP_EQ_INT(r.status, 0);
    TAP_CHECK(!exists_at(root, "media/7/link"));
    TAP_CHECK(exists_at(outside, "secret"));
    TAP_EQ_INT(tree_count(outside), before_out);
    reset(&r);
}

/* A root whose "media" directory is a link elsewhere: every operation is refused. */
static void test_media_link(void)
{
    char root2[PATH_MAX * 2], link[PATH_MAX * 3];
    struct storage_config cfg = { .kind = STORAGE_LOCAL, .local_dir = root2 };
    struct storage *st = NULL;
    struct storage_writer *w;
    struct mi_err err = MI_ERR_INIT;
    int before_out = tree_count(outside);

    snprintf(root2, sizeof(root2), "%s/root2", base);
    TAP_EQ_INT(mkdir(root2, 0700), 0);
    snprintf(link, sizeof(link), "%s/media", root2);
    TAP_EQ_INT(symlink(outside, link), 0);
    TAP_EQ_INT(storage_new(&st, &loop, NULL, NULL, &cfg, &err), 0);
    if (!st)
        return;
    TAP_EQ_INT(storage_writer_open(st, "media/1/x", NULL, &w, &err), STORAGE_E_PERMANENT);
    TAP_EQ_INT(tree_count(outside), before_out);
    storage_free(st);
}

static void test_config(void)
{
    char bad[PATH_MAX * 2];
    struct storage_config cfg = { .kind = STORAGE_LOCAL, .local_dir = bad };
    struct storage *st = NULL;
    struct mi_err err = MI_ERR_INIT;

    snprintf(bad, sizeof(bad), "%s/no/such/parent", base);
    TAP_EQ_INT(storage_new(&st, &loop, NULL, NULL, &cfg, &err), STORAGE_E_CONFIG);
    TAP_CHECK(strstr(err.msg, "MEDIA_LOCAL_DIR") != NULL);
    TAP_CHECK(st == NULL);
}

int main(void)
{
    struct storage_config cfg = { .kind = STORAGE_LOCAL };
    struct storage *st = NULL;
    struct mi_err err = MI_ERR_INIT;
    char cmd[PATH_MAX + 16];
    const char *tmp = getenv("TMPDIR");

    /* storage.c refers to the local backend weakly; make sure it is linked in. */
    TAP_CHECK(storage_local_ops.init != NULL);
    snprintf(base, sizeof(base), "%s/mi-local-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base)) {
        printf("Bail out! mkdtemp failed\n");
        return 1;
    }
    snprintf(root, sizeof(root), "%s/root", base);
    snprintf(outside, sizeof(outside), "%s/outside", base);
    TAP_EQ_INT(mkdir(outside, 0700), 0);
    uv_loop_init(&loop);

    cfg.local_dir = root;   /* created by storage_new */
    TAP_EQ_INT(storage_new(&st, &loop, NULL, NULL, &cfg, &err), 0);
    if (st) {
        test_round_trip(st);
        test_mismatch_and_abort(st);
        test_delete(st);
        test_hostile_keys(st);
        test_symlinks(st);
        storage_free(st);
    }
    test_media_link();
    test_config();
    uv_run(&loop, UV_RUN_DEFAULT);
    TAP_EQ_INT(uv_loop_close(&loop), 0);

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", base);
    return tap_done();
}
