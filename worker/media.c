/*
 * media.c - the media job handler of media-ingest-worker.
 *
 * Per job (every transition goes through mjob_set_state):
 *
 *   LOAD    read the "Message" row        → COMPLETE (already stored) | LOOKUP
 *   LOOKUP  Graph GET /{version}/{id}     → HEAD
 *   HEAD    is the object already stored  → MARK (same sha256) | DOWNLOAD
 *           with the announced sha256?
 *   DOWNLOAD stream Graph → storage writer, memory bounded by the buffer budget
 *                                         → COMMIT | LOOKUP (URL expired: once)
 *   COMMIT  verify sha256 and size, make the object visible → MARK
 *   MARK    UPDATE "Message" SET mediaStoredUrl, mediaStoredAt, mediaStorageBackend → DONE
 *
 * Failures are classified (http-apis.md §A3): permanent ones fail the job now; transient ones
 * are retried inside the job (twice, with a pause) and then through BullMQ's attempts;
 * configuration errors (bad token or permissions) and rate limits give the job back without
 * counting an attempt and stop the process's claims until a probe succeeds, the token file
 * changes, or the rate-limit pause ends.
 */
#include "media.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "budget.h"
#include "graph.h"
#include "http.h"
#include "httpd.h"
#include "metrics.h"
#include "metrics_worker.h"
#include "msgdb.h"
#include "objkey.h"
#include "pg.h"
#include "pg_url.h"
#include "s3.h"
#include "storage.h"
#include "storage_cfg.h"
#include "util.h"

#define DB_TIMEOUT_MS 15000
#define TRANSIENT_TRIES 2          /* in-job retries before BullMQ's own attempts */
#define PROBE_INTERVAL_MS 30000    /* bad token: how often to check whether it works again */
#define TOKEN_POLL_MS 2000         /* how often WHATSAPP_ACCESS_TOKEN_FILE is checked */
#define STORE_PROBE_WAIT_MS 2000   /* first claims wait this long at most for the store's probe */
#define TOKEN_MAX 4096
#define COUNTS_INTERVAL_MS 15000   /* how often queue depth is read for /metrics */

enum mstate { M_LOAD, M_LOOKUP, M_HEAD, M_DOWNLOAD, M_COMMIT, M_MARK, M_DONE, M__MAX };

static const char *const mstate_names[M__MAX] = {
    "load", "lookup", "head", "download", "commit", "mark", "done",
};

struct media;

struct mjob {
    struct mjob *prev, *next;
    struct media *m;
    struct wjob *wj;
    enum mstate state;
    char msg_id[OBJKEY_MESSAGE_ID_MAX + 1];
    char media_id[OBJKEY_MEDIA_ID_MAX + 1];
    char key[OBJKEY_BUF];
    struct graph_media gm;
    struct graph_lookup *lookup;
    struct graph_download *dl;
    struct storage_writer *writer;
    bool pause_pending;        /* the writer asked to stop the download */
    bool write_failed;
    struct mi_err write_err;
    bool refreshed;            /* the download URL was looked up again once */
    bool cancelled;
    int transient_tries;
    uint64_t bytes;
    char sha_hex[65];
    char *stored_url;
    int64_t started_ms;
    int64_t phase_ms;          /* when the current phase began */
    enum mw_class cls;         /* failure class for the metrics */
    uv_timer_t retry_timer;
};

struct media {
    uv_loop_t *loop;
    const struct mi_config *cfg;
    const struct mi_log *log;
    struct wloop *w;
    struct mi_http *http;
    struct mi_budget *budget;
    struct storage *st;
    struct pg_url *pgu;
    struct pg_pool *pool;
    struct msgdb *db;
    struct graph_client *graph;

    bool db_ready, db_initing;
    bool token_bad, probing;
    bool store_probing;          /* claims wait for the store's first payload-check answer */
    bool token_err_logged;              /* the token file's read error was logged */
    int64_t rate_limited_until;  /* monotonic ms, 0: not limited */
    char token[TOKEN_MAX];
    struct stat token_st;

    struct mjob jobs;            /* running jobs (circular list head) */
    struct metrics *reg;         /* NULL when METRICS_ADDR is empty */
    struct metrics_worker *mw;
    struct httpd *httpd;
    bool counting;
    uv_timer_t token_timer, probe_timer, db_timer, slow_timer, counts_timer, store_timer;
    int open_handles;
    bool closing;
    bool pool_closed;
    int64_t quiesce_deadline;
};

/* The handler is freed once its pool and every libuv handle it owns have closed. */
static void media_maybe_free(struct media *m)
{
    if (m->closing && m->pool_closed && m->open_handles == 0)
        free(m);
}

static void mjob_advance(struct mjob *j);
static void update_claims(struct media *m);

/* ---- job end ---- */

static void mjob_closed(uv_handle_t *h)
{
    struct mjob *j = h->data;
    struct media *m = j->m;
    graph_media_deinit(&j->gm);
    free(j->stored_url);
    free(j);
    m->open_handles--;
    media_maybe_free(m);
}

static void mjob_unlink(struct mjob *j)
{
    j->prev->next = j->next;
    j->next->prev = j->prev;
    uv_close((uv_handle_t *)&j->retry_timer, mjob_closed);
}

static void mjob_set_state(struct mjob *j, enum mstate s)
{
    struct log_rec r;
    if (log_begin(&r, j->m->log, LOG_DEBUG, "media job phase")) {
        log_str(&r, "job", wjob_job(j->wj)->id);
        log_str(&r, "from", mstate_names[j->state]);
        log_str(&r, "to", mstate_names[s]);
        log_end(&r);
    }
    int64_t now = mi_mono_ms();
    if (j->phase_ms && j->state < M_DONE)
        metrics_worker_phase(j->m->mw, (enum mw_phase)j->state, (double)(now - j->phase_ms) / 1e3);
    j->phase_ms = now;
    j->state = s;
}

static void mjob_count(struct mjob *j, enum mw_outcome outcome, enum mw_class cls)
{
    metrics_worker_job(j->m->mw, outcome, cls, (double)(mi_mono_ms() - j->started_ms) / 1e3,
                       outcome == MW_OUTCOME_COMPLETED ? j->bytes : 0);
}

static void mjob_complete(struct mjob *j, bool skipped)
{
    json_t *rv;
    if (skipped)
        rv = json_pack("{s:s,s:s}", "skipped", "already stored", "storedUrl", j->stored_url);
    else
        rv = json_pack("{s:s,s:I,s:s,s:s}", "storedUrl", j->stored_url, "bytes",
                       (json_int_t)j->bytes, "sha256", j->sha_hex, "mimeType", j->gm.mime_type);
    char *s = rv ? json_dumps(rv, JSON_COMPACT) : NULL;
    json_decref(rv);
    mjob_set_state(j, M_DONE);
    mjob_count(j, MW_OUTCOME_COMPLETED, MW_CLASS_NONE);
    if (s)
        wjob_complete(j->wj, s);
    else
        wjob_fail(j->wj, "out of memory building the job result", false);
    free(s);
    mjob_unlink(j);
}

static void mjob_fail(struct mjob *j, bool permanent, const char *fmt, ...) MI_PRINTF(3, 4);

static void mjob_fail(struct mjob *j, bool permanent, const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (j->writer) {
        storage_writer_abort(j->writer, NULL, NULL);
        j->writer = NULL;
    }
    mjob_set_state(j, M_DONE);
    int64_t delay;
    bool final = bmq_fail_decide(wjob_job(j->wj), permanent, 0.5, &delay) == BMQ_FAILED_FINAL;
    mjob_count(j, final ? MW_OUTCOME_FAILED : MW_OUTCOME_RETRIED,
               permanent ? MW_CLASS_PERMANENT : MW_CLASS_TRANSIENT);
    wjob_fail(j->wj, reason, permanent);
    mjob_unlink(j);
}

static void mjob_release(struct mjob *j, const char *why)
{
    if (j->writer) {
        storage_writer_abort(j->writer, NULL, NULL);
        j->writer = NULL;
    }
    mjob_set_state(j, M_DONE);
    mjob_count(j, MW_OUTCOME_RELEASED, j->cls);
    wjob_release(j->wj, why);
    mjob_unlink(j);
}

static void on_retry_timer(uv_timer_t *t)
{
    struct mjob *j = t->data;
    if (j->cancelled) {
        mjob_release(j, "the worker is shutting down");
        return;
    }
    /*
     * Again from the phase that failed when it was reading or updating the row (the load
     * checks "already stored" and the providerMediaId; a failed update keeps the stored
     * object); anything else starts over from a fresh Graph look-up (the URL expires).
     */
    if (j->state != M_LOAD && j->state != M_MARK)
        mjob_set_state(j, M_LOOKUP);
    mjob_advance(j);
}

/* A transient failure: try again inside the job a few times, then let BullMQ retry. */
static void mjob_transient(struct mjob *j, const char *what, const char *detail)
{
    if (j->writer) {
        storage_writer_abort(j->writer, NULL, NULL);
        j->writer = NULL;
    }
    if (!j->cancelled && j->transient_tries < TRANSIENT_TRIES) {
        struct log_rec r;
        j->transient_tries++;
        if (log_begin(&r, j->m->log, LOG_WARN, "transient failure, retrying within the job")) {
            log_str(&r, "job", wjob_job(j->wj)->id);
            log_str(&r, "phase", what);
            log_str(&r, "error", detail);
            log_int(&r, "try", j->transient_tries);
            log_end(&r);
        }
        j->refreshed = false;
        uv_timer_start(&j->retry_timer, on_retry_timer, 1000u * (uint64_t)j->transient_tries, 0);
        return;
    }
    if (j->cancelled) {
        mjob_release(j, "the worker is shutting down");
        return;
    }
    mjob_fail(j, false, "%s failed: %s", what, detail);
}

/* ---- fleet-wide conditions: bad token, rate limit, database not ready ---- */

/* Whether claims wait: database not ready, bad token, rate limited, store not asked yet. */
static bool claims_paused(const struct media *m)
{
    bool limited = m->rate_limited_until && mi_mono_ms() < m->rate_limited_until;

    return !m->db_ready || m->token_bad || limited || m->store_probing;
}

static void update_claims(struct media *m)
{
    if (!m->w || m->closing)
        return;
    wloop_pause_claims(m->w, claims_paused(m));
}

static void on_probe_timer(uv_timer_t *t);

/* The answer of the storage's probe: does the store check a signed body's sha256? */
static void on_payload_verdict(void *ctx, int checked, const struct mi_err *err)
{
    struct media *m = ctx;
    const char *msg;

    if (checked > 0)
        msg = "the store refuses a body that differs from its signed sha256: a body that "
              "fits one PutObject is signed with Graph's sha256 and not hashed here";
    else if (checked == 0)
        msg = "the store does not check a body's signed sha256: every body is hashed here";
    else
        msg = "could not learn whether the store checks a body's signed sha256; every body "
              "is hashed here until it is asked again in a minute";
    /* a yes comes with the store's refusal of the probe: nothing to add */
    if (checked < 0)
        log_msg(m->log, LOG_WARN, msg, "%s", err ? err->msg : "");
    else if (checked == 0 && err && err->msg[0])
        log_msg(m->log, LOG_INFO, msg, "%s", err->msg);
    else
        log_msg(m->log, LOG_INFO, msg, NULL);
    if (m->store_probing) {
        m->store_probing = false;
        uv_timer_stop(&m->store_timer);
        update_claims(m);
    }
}

/* The store's probe did not answer in time: claim anyway, bodies are hashed here. */
static void on_store_timer(uv_timer_t *t)
{
    struct media *m = t->data;

    if (!m->store_probing)
        return;
    m->store_probing = false;
    log_msg(m->log, LOG_INFO, "the store has not answered the payload-check probe: claims "
            "start; bodies are hashed here until it answers", "waited %d ms", STORE_PROBE_WAIT_MS);
    update_claims(m);
}

static void set_token_bad(struct media *m, const char *why)
{
    if (!m->token_bad)
        log_msg(m->log, LOG_ERROR, "Graph API refuses our token or permissions; claims stop "
                "until it works again (fix WHATSAPP_ACCESS_TOKEN[_FILE])", "%s", why);
    m->token_bad = true;
    update_claims(m);
    if (!uv_is_active((uv_handle_t *)&m->probe_timer))
        uv_timer_start(&m->probe_timer, on_probe_timer, PROBE_INTERVAL_MS, PROBE_INTERVAL_MS);
}

static void set_token_good(struct media *m, const char *how)
{
    if (!m->token_bad)
        return;
    m->token_bad = false;
    uv_timer_stop(&m->probe_timer);
    log_msg(m->log, LOG_INFO, "Graph API accepts our token again; claims resume", "%s", how);
    update_claims(m);
}

static void on_probe(void *ctx, struct graph_lookup_result *res, const struct mi_err *err)
{
    struct media *m = ctx;
    m->probing = false;
    /* Any answer but an auth/permission error proves the token works (id "0" is unknown). */
    if (res->cls != GRAPH_CONFIG && res->cls != GRAPH_TRANSIENT && !m->closing)
        set_token_good(m, "a probe succeeded");
}

static void on_probe_timer(uv_timer_t *t)
{
    struct media *m = t->data;
    struct mi_err err = MI_ERR_INIT;
    if (m->probing || m->closing)
        return;
    m->probing = true;
    if (graph_lookup(m->graph, "0", on_probe, m, NULL, &err))
        m->probing = false;
}

static void on_slow_timer(uv_timer_t *t)
{
    struct media *m = t->data;
    m->rate_limited_until = 0;
    log_msg(m->log, LOG_INFO, "Graph API rate-limit pause over; claims resume", NULL);
    update_claims(m);
}

static void set_rate_limited(struct media *m, uint64_t delay_ms)
{
    if (delay_ms < 5000)
        delay_ms = 5000;
    int64_t until = mi_mono_ms() + (int64_t)delay_ms;
    if (until <= m->rate_limited_until)
        return;
    log_msg(m->log, LOG_WARN, "Graph API rate limit: the whole process slows down",
            "pause_ms=%llu", (unsigned long long)delay_ms);
    m->rate_limited_until = until;
    uv_timer_start(&m->slow_timer, on_slow_timer, delay_ms, 0);
    update_claims(m);
}

/* Read the token file; true when the token changed. */
static bool read_token_file(struct media *m, struct mi_err *err)
{
    struct stat sb;
    if (stat(m->cfg->token_file, &sb)) {
        mi_err_set(err, -errno, "WHATSAPP_ACCESS_TOKEN_FILE=%s: %s", m->cfg->token_file,
                   strerror(errno));
        return false;
    }
    if (sb.st_mtim.tv_sec == m->token_st.st_mtim.tv_sec &&
        sb.st_mtim.tv_nsec == m->token_st.st_mtim.tv_nsec && sb.st_ino == m->token_st.st_ino &&
        sb.st_size == m->token_st.st_size)
        return false;
    FILE *f = fopen(m->cfg->token_file, "re");
    char buf[TOKEN_MAX];
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    else {
        mi_err_set(err, -errno, "WHATSAPP_ACCESS_TOKEN_FILE=%s cannot be read",
                   m->cfg->token_file);
        return false;
    }
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    buf[n] = '\0';
    m->token_st = sb;
    bool changed = strcmp(buf, m->token);
    memcpy(m->token, buf, n + 1);
    explicit_bzero(buf, sizeof(buf));
    return changed;
}

static void on_token_timer(uv_timer_t *t)
{
    struct media *m = t->data;
    struct mi_err err = MI_ERR_INIT;
    bool changed = read_token_file(m, &err);
    /* a file that went missing or unreadable is said once, not every tick */
    if (err.code && !m->token_err_logged)
        log_msg(m->log, LOG_WARN, "cannot read the token file; keeping the current token",
                "%s", err.msg);
    m->token_err_logged = err.code != 0;
    if (changed) {
        if (graph_client_set_token(m->graph, m->token)) {
            memset(&m->token_st, 0, sizeof(m->token_st));   /* try again next tick */
            log_msg(m->log, LOG_WARN, "could not apply the new token; retrying", NULL);
            return;
        }
        log_msg(m->log, LOG_INFO, "WHATSAPP_ACCESS_TOKEN_FILE changed; using the new token",
                NULL);
        set_token_good(m, "the token file changed");
    }
}

/* ---- phases ---- */

static void on_marked(void *ctx, int status, int64_t rows, const struct mi_err *err)
{
    struct mjob *j = ctx;
    if (status) {
        mjob_transient(j, "updating the Message row", err ? err->msg : "database error");
        return;
    }
    if (rows == 0) {
        mjob_fail(j, true, "the Message row %s disappeared before it could be updated",
                  j->msg_id);
        return;
    }
    mjob_complete(j, false);
}

static void start_mark(struct mjob *j)
{
    struct mi_err err = MI_ERR_INIT;
    struct media *m = j->m;
    if (!j->stored_url)
        j->stored_url = storage_url(m->st, j->key);
    if (!j->stored_url) {
        mjob_fail(j, false, "out of memory");
        return;
    }
    int r = msgdb_mark_stored(m->db, j->msg_id, j->stored_url, storage_kind_name(m->st),
                              DB_TIMEOUT_MS, on_marked, j, &err);
    if (r)
        mjob_transient(j, "updating the Message row", err.msg);
}

static void on_committed(void *ctx, int status, const struct mi_err *err)
{
    struct mjob *j = ctx;
    j->writer = NULL; /* freed by storage after this callback */
    if (status == 0) {
        mjob_set_state(j, M_MARK);
        mjob_advance(j);
        return;
    }
    if (status == STORAGE_E_TOOBIG) {
        mjob_fail(j, true, "the media is larger than announced or than MEDIA_MAX_BYTES: %s",
                  err ? err->msg : "");
        return;
    }
    mjob_transient(j, status == STORAGE_E_DIGEST ? "verifying the sha256" : "storing the media",
                   err ? err->msg : "storage error");
}

static void on_writer_ready(void *ctx)
{
    struct mjob *j = ctx;
    j->pause_pending = false;
    if (j->dl)
        graph_download_resume(j->dl);
}

static int on_data(void *ctx, const char *buf, size_t len)
{
    struct mjob *j = ctx;
    if (j->pause_pending)
        return GRAPH_PAUSE; /* not consumed: delivered again after the resume */
    if (len > STORAGE_MAX_CHUNK) {
        mi_err_set(&j->write_err, -E2BIG, "a download chunk of %zu bytes is too large", len);
        j->write_failed = true;
        return -1;
    }
    int r = storage_writer_write(j->writer, buf, len);
    if (r == 0)
        return 0;
    if (r == STORAGE_PAUSE) {
        j->pause_pending = true;
        storage_writer_on_ready(j->writer, on_writer_ready, j);
        return 0; /* these bytes were accepted */
    }
    mi_err_set(&j->write_err, r, "the storage writer refused the data (%d)", r);
    j->write_failed = true;
    return -1;
}

static void handle_graph_failure(struct mjob *j, enum graph_class cls, const char *phase,
                                 const struct graph_usage *usage, const struct mi_err *err)
{
    const char *msg = err && err->msg[0] ? err->msg : graph_class_name(cls);
    switch (cls) {
    case GRAPH_CONFIG:
        j->cls = MW_CLASS_CONFIG;
        set_token_bad(j->m, msg);
        mjob_release(j, "the Graph API token or permissions are not working");
        return;
    case GRAPH_RATELIMIT:
        j->cls = MW_CLASS_RATELIMIT;
        set_rate_limited(j->m, usage ? usage->delay_ms : 0);
        mjob_release(j, "the Graph API rate limit was reached");
        return;
    case GRAPH_PERMANENT:
        mjob_fail(j, true, "%s: %s", phase, msg);
        return;
    default:
        mjob_transient(j, phase, msg);
        return;
    }
}

static void on_downloaded(void *ctx, const struct graph_download_result *res,
                          const struct mi_err *err)
{
    struct mjob *j = ctx;
    j->dl = NULL;
    if (j->cancelled) {
        mjob_release(j, "the worker is shutting down");
        return;
    }
    if (j->write_failed) {
        mjob_transient(j, "storing the media", j->write_err.msg);
        return;
    }
    if (res->cls == GRAPH_OK) {
        j->bytes = storage_writer_bytes(j->writer);
        mjob_set_state(j, M_COMMIT);
        mjob_advance(j);
        return;
    }
    storage_writer_abort(j->writer, NULL, NULL);
    j->writer = NULL;
    if (res->cls == GRAPH_REFRESH_URL && !j->refreshed) {
        /* Download URLs live 5 minutes: look up a fresh one, once. */
        j->refreshed = true;
        mjob_set_state(j, M_LOOKUP);
        mjob_advance(j);
        return;
    }
    if (res->status == GRAPH_E_TOOBIG) {
        mjob_fail(j, true, "the media is larger than MEDIA_MAX_BYTES (%llu bytes)",
                  (unsigned long long)j->m->cfg->max_bytes);
        return;
    }
    handle_graph_failure(j, res->cls == GRAPH_REFRESH_URL ? GRAPH_TRANSIENT : res->cls,
                         "downloading the media", NULL, err);
}

static void start_download(struct mjob *j)
{
    struct media *m = j->m;
    struct mi_err err = MI_ERR_INIT;
    struct storage_put_opts po = {
        .content_type = j->gm.mime_type,
        .sha256_hex = j->gm.sha256_hex,
        .expected_size = j->gm.file_size > 0 ? (uint64_t)j->gm.file_size : 0,
    };
    j->pause_pending = false;
    j->write_failed = false;
    int r = storage_writer_open(m->st, j->key, &po, &j->writer, &err);
    if (r) {
        j->writer = NULL;
        mjob_transient(j, "opening the storage writer", err.msg);
        return;
    }
    /* The storage writer verifies sha256 and size at commit, so the download does not. */
    r = graph_download(m->graph, j->gm.url, m->cfg->max_bytes, j->gm.file_size, NULL, on_data,
                       on_downloaded, j, &j->dl, &err);
    /* refused before any request (oversize, no token...): classified like an answer */
    if (r)
        handle_graph_failure(j, graph_classify(GRAPH_OP_DOWNLOAD, r, 0, NULL),
                             "starting the download", NULL, &err);
}

static void on_head(void *ctx, int status, const struct storage_meta *meta,
                    const struct mi_err *err)
{
    struct mjob *j = ctx;
    if (status == 0 && meta && meta->exists && meta->sha256_hex &&
        !strcmp(meta->sha256_hex, j->gm.sha256_hex)) {
        /* Stored before (a rerun or a duplicate job): only the row needs updating. */
        j->bytes = meta->size;
        memcpy(j->sha_hex, j->gm.sha256_hex, sizeof(j->sha_hex));
        mjob_set_state(j, M_MARK);
    } else {
        mjob_set_state(j, M_DOWNLOAD);
    }
    mjob_advance(j);
}

static void on_lookup(void *ctx, struct graph_lookup_result *res, const struct mi_err *err)
{
    struct mjob *j = ctx;
    j->lookup = NULL;
    if (j->cancelled) {
        mjob_release(j, "the worker is shutting down");
        return;
    }
    if (res->cls != GRAPH_OK) {
        handle_graph_failure(j, res->cls, "looking up the media", &res->usage, err);
        return;
    }
    graph_media_deinit(&j->gm);
    graph_media_move(&j->gm, &res->media);
    if (res->usage.delay_ms)
        set_rate_limited(j->m, res->usage.delay_ms);
    if (j->gm.file_size > 0 && (uint64_t)j->gm.file_size > j->m->cfg->max_bytes) {
        mjob_fail(j, true, "the media is %lld bytes, above MEDIA_MAX_BYTES=%llu",
                  (long long)j->gm.file_size, (unsigned long long)j->m->cfg->max_bytes);
        return;
    }
    memcpy(j->sha_hex, j->gm.sha256_hex, sizeof(j->sha_hex));
    mjob_set_state(j, j->refreshed ? M_DOWNLOAD : M_HEAD);
    mjob_advance(j);
}

static void on_loaded(void *ctx, int status, const struct msgdb_message *msg,
                      const struct mi_err *err)
{
    struct mjob *j = ctx;
    if (status == MSGDB_NOT_FOUND) {
        mjob_fail(j, true, "no Message row has id %s", j->msg_id);
        return;
    }
    if (status) {
        mjob_transient(j, "reading the Message row", err ? err->msg : "database error");
        return;
    }
    if (msg->stored_url && *msg->stored_url) {
        j->stored_url = strdup(msg->stored_url);
        if (!j->stored_url) {
            mjob_fail(j, false, "out of memory");
            return;
        }
        mjob_complete(j, true);
        return;
    }
    if (msg->provider_media_id && strcmp(msg->provider_media_id, j->media_id)) {
        mjob_fail(j, true, "the job's providerMediaId differs from the Message row's");
        return;
    }
    mjob_set_state(j, M_LOOKUP);
    mjob_advance(j);
}

/* Run the current phase; each phase ends in a callback that picks the next one. */
static void mjob_advance(struct mjob *j)
{
    struct media *m = j->m;
    struct mi_err err = MI_ERR_INIT;
    int r = 0;
    if (j->cancelled) {
        mjob_release(j, "the worker is shutting down");
        return;
    }
    switch (j->state) {
    case M_LOAD:
        r = msgdb_load(m->db, j->msg_id, DB_TIMEOUT_MS, on_loaded, j, &err);
        if (r == MSGDB_BAD_ID) {
            mjob_fail(j, true, "invalid messageId: %s", err.msg);
            return;
        }
        break;
    case M_LOOKUP:
        r = graph_lookup(m->graph, j->media_id, on_lookup, j, &j->lookup, &err);
        if (r == GRAPH_E_BADDATA) {
            mjob_fail(j, true, "invalid providerMediaId: %s", err.msg);
            return;
        }
        /* refused before any request (no token: config, not an attempt burnt) */
        if (r)
            handle_graph_failure(j, graph_classify(GRAPH_OP_LOOKUP, r, 0, NULL),
                                 "looking up the media", NULL, &err);
        return;
    case M_HEAD:
        r = storage_head(m->st, j->key, on_head, j, &err);
        if (r) {
            mjob_set_state(j, M_DOWNLOAD);
            mjob_advance(j);
            return;
        }
        break;
    case M_DOWNLOAD:
        start_download(j);
        return;
    case M_COMMIT:
        r = storage_writer_commit(j->writer, on_committed, j);
        if (r)
            mi_err_set(&err, r, "the storage writer could not commit");
        break;
    case M_MARK:
        start_mark(j);
        return;
    case M_DONE:
    case M__MAX:
        return;
    }
    if (r)
        mjob_transient(j, mstate_names[j->state], err.msg);
}

/* ---- job start: validate the data ---- */

static int job_ids(const struct bmq_job *b, struct mjob *j, struct mi_err *err)
{
    json_t *mid = json_object_get(b->data_json, "messageId");
    json_t *pid = json_object_get(b->data_json, "providerMediaId");
    if (json_is_integer(mid)) {
        if (json_integer_value(mid) < 0)
            return mi_err_set(err, 1, "messageId must not be negative");
        snprintf(j->msg_id, sizeof(j->msg_id), "%" JSON_INTEGER_FORMAT, json_integer_value(mid));
    } else if (json_is_string(mid)) {
        if (json_string_length(mid) >= sizeof(j->msg_id) ||
            strlen(json_string_value(mid)) != json_string_length(mid))
            return mi_err_set(err, 1, "messageId is too long or contains NUL");
        memcpy(j->msg_id, json_string_value(mid), json_string_length(mid) + 1);
    } else {
        return mi_err_set(err, 1, "messageId must be a number or a string");
    }
    if (!json_is_string(pid))
        return mi_err_set(err, 1, "providerMediaId must be a string");
    if (json_string_length(pid) >= sizeof(j->media_id) ||
        strlen(json_string_value(pid)) != json_string_length(pid))
        return mi_err_set(err, 1, "providerMediaId is too long or contains NUL");
    memcpy(j->media_id, json_string_value(pid), json_string_length(pid) + 1);
    if (objkey_build(j->msg_id, j->media_id, j->key, err))
        return 1;
    return 0;
}

static void media_start(void *hctx, struct wjob *wj)
{
    struct media *m = hctx;
    struct mi_err err = MI_ERR_INIT;
    struct mjob *j = calloc(1, sizeof(*j));
    if (!j) {
        wjob_fail(wj, "out of memory", false);
        return;
    }
    j->m = m;
    j->wj = wj;
    j->gm = (struct graph_media)GRAPH_MEDIA_NULL;
    j->started_ms = mi_mono_ms();
    uv_timer_init(m->loop, &j->retry_timer);
    j->retry_timer.data = j;
    m->open_handles++;
    j->prev = m->jobs.prev;
    j->next = &m->jobs;
    m->jobs.prev->next = j;
    m->jobs.prev = j;
    wjob_set_priv(wj, j);
    if (job_ids(wjob_job(wj), j, &err)) {
        mjob_fail(j, true, "invalid job data: %s", err.msg);
        return;
    }
    mjob_set_state(j, M_LOAD);
    mjob_advance(j);
}

static void media_cancel(void *hctx, struct wjob *wj)
{
    struct mjob *j = wjob_priv(wj);
    if (!j || j->cancelled)
        return;
    j->cancelled = true;
    if (j->lookup)
        graph_lookup_cancel(j->lookup);
    else if (j->dl)
        graph_download_cancel(j->dl);
    else if (uv_is_active((uv_handle_t *)&j->retry_timer))
        uv_timer_start(&j->retry_timer, on_retry_timer, 0, 0);
    /* Database and storage calls end on their own deadlines, then see "cancelled". */
}

/* ---- set-up and tear-down ---- */

static void on_db_timer(uv_timer_t *t);

static void on_db_init(void *ctx, int status, const struct mi_err *err)
{
    struct media *m = ctx;
    m->db_initing = false;
    if (m->closing)
        return;
    if (status) {
        log_msg(m->log, LOG_ERROR, "the database is not usable yet; retrying", "%s",
                err ? err->msg : "");
        uv_timer_start(&m->db_timer, on_db_timer, 5000, 0);
        return;
    }
    m->db_ready = true;
    log_msg(m->log, LOG_INFO, "database ready", "table=%s", msgdb_table(m->db));
    update_claims(m);
}

static void on_db_timer(uv_timer_t *t)
{
    struct media *m = t->data;
    if (m->db_initing || m->closing)
        return;
    m->db_initing = true;
    if (msgdb_init(m->db, DB_TIMEOUT_MS, on_db_init, m)) {
        m->db_initing = false;
        uv_timer_start(&m->db_timer, on_db_timer, 5000, 0);
    }
}

static void on_orphans(void *ctx, int status, const struct s3_orphan_stats *s,
                       const struct mi_err *err)
{
    struct media *m = ctx;
    if (status)
        log_msg(m->log, LOG_WARN, "aborting old multipart uploads failed", "%s",
                err ? err->msg : "");
    else if (s->aborted || s->failed)
        log_msg(m->log, LOG_INFO, "aborted old multipart uploads", "aborted=%llu failed=%llu",
                (unsigned long long)s->aborted, (unsigned long long)s->failed);
}

static void timer_closed(uv_handle_t *h)
{
    struct media *m = h->data;
    m->open_handles--;
    media_maybe_free(m);
}

static void httpd_closed(void *ctx)
{
    struct media *m = ctx;
    metrics_worker_free(m->mw);
    metrics_free(m->reg);
    m->mw = NULL;
    m->reg = NULL;
    m->open_handles--;
    media_maybe_free(m);
}

static void pool_closed(void *ctx)
{
    struct media *m = ctx;
    msgdb_free(m->db);
    pg_pool_free(m->pool);
    pg_url_free(m->pgu);
    m->db = NULL;
    m->pool = NULL;
    m->pgu = NULL;
    m->pool_closed = true;
    media_maybe_free(m);
}

static void teardown_finish(struct media *m);

/* The handler's own timers, initialised in media_setup and closed in teardown_finish. */
#define MEDIA_TIMERS 6
static void media_timers(struct media *m, uv_timer_t *out[MEDIA_TIMERS])
{
    out[0] = &m->token_timer;
    out[1] = &m->probe_timer;
    out[2] = &m->db_timer;
    out[3] = &m->slow_timer;
    out[4] = &m->counts_timer;
    out[5] = &m->store_timer;
}

/*
 * Wait until the storage's writers (aborts, commits) and requests (an orphan sweep) have
 * finished: freeing it earlier would leave their callbacks and retry timers pointing at
 * freed memory. Every storage request has its own deadline and a bounded number of
 * retries, so this ends; past 30 s it says so once (the supervisor's stop timeout is
 * the backstop, and the next worker aborts what a killed one left open).
 */
static void on_quiesce(uv_timer_t *t)
{
    struct media *m = t->data;
    if (!storage_busy(m->st)) {
        uv_timer_stop(t);
        teardown_finish(m);
        return;
    }
    if (m->quiesce_deadline && mi_mono_ms() >= m->quiesce_deadline) {
        m->quiesce_deadline = 0;
        log_msg(m->log, LOG_WARN, "storage still busy 30 s after the drain; waiting for its "
                "requests to end (each has a deadline)", "busy=%zu", storage_busy(m->st));
    }
}

static void media_teardown(void *hctx)
{
    struct media *m = hctx;
    m->closing = true;
    uv_timer_stop(&m->counts_timer);
    if (storage_busy(m->st)) {
        /* Jobs released on shutdown may still be aborting their uploads. */
        m->quiesce_deadline = mi_mono_ms() + 30000;
        uv_timer_start(&m->counts_timer, on_quiesce, 20, 20);
        return;
    }
    teardown_finish(m);
}

static void teardown_finish(struct media *m)
{
    uv_timer_t *timers[MEDIA_TIMERS];

    media_timers(m, timers);
    for (size_t i = 0; i < MEDIA_TIMERS; i++)
        uv_close((uv_handle_t *)timers[i], timer_closed);
    if (m->httpd) {
        m->open_handles++;
        httpd_close(m->httpd, httpd_closed);
        m->httpd = NULL;
    } else {
        metrics_worker_free(m->mw);
        metrics_free(m->reg);
    }
    storage_free(m->st);
    graph_client_free(m->graph);
    http_free(m->http);
    budget_free(m->budget);
    explicit_bzero(m->token, sizeof(m->token));
    if (m->pool)
        pg_pool_close(m->pool, pool_closed, m);
    else
        pool_closed(m);
}

static void media_attach(void *hctx, struct wloop *w)
{
    struct media *m = hctx;
    m->w = w;
    update_claims(m); /* paused until the database is ready */
}

/* ---- /metrics, /healthz, /readyz ---- */

static double gauge_inflight(void *ctx)
{
    struct media *m = ctx;
    return m->w ? wloop_inflight(m->w) : 0;
}

static double gauge_paused(void *ctx)
{
    return claims_paused(ctx);
}

static bool ready(void *ctx, char *reason, size_t cap)
{
    struct media *m = ctx;
    const char *why = !m->w || !wloop_ready(m->w) ? "Redis is not connected (or draining)"
                      : !m->db_ready             ? "the database is not ready"
                      : m->token_bad             ? "the Graph API refuses the token"
                                                 : NULL;
    if (why)
        snprintf(reason, cap, "%s", why);
    return !why;
}

static void on_counts(void *ctx, int status, const struct bmq_counts *c,
                      const struct mi_err *err)
{
    struct media *m = ctx;
    m->counting = false;
    if (!status)
        metrics_worker_queue(m->mw, c);
}

static void on_counts_timer(uv_timer_t *t)
{
    struct media *m = t->data;
    struct mi_err err = MI_ERR_INIT;
    if (m->counting || !m->w || !wloop_ready(m->w))
        return;
    m->counting = true;
    if (bmq_counts(wloop_queue(m->w), on_counts, m, &err))
        m->counting = false;
}

static int start_ops_server(struct media *m, struct mi_err *err)
{
    struct metrics_worker_sources src = {
        .ctx = m, .jobs_in_flight = gauge_inflight, .claims_paused = gauge_paused,
        .budget = m->budget,
    };
    int r = metrics_new(&m->reg);
    if (r)
        return mi_err_set(err, 1, "out of memory");
    r = metrics_register_worker(m->reg, MI_VERSION, &src, &m->mw, err);
    if (r)
        return 1;
    struct httpd_handlers hd = { .metrics = m->reg, .ready = ready };
    r = httpd_new(&m->httpd, m->loop, m->cfg->metrics_addr, &hd, m, err);
    if (r) {
        m->httpd = NULL;
        return r == HTTPD_E_ADDR ? 2 : 1;
    }
    uv_timer_start(&m->counts_timer, on_counts_timer, 1000, COUNTS_INTERVAL_MS);
    return 0;
}

static int media_setup(void **hctx, struct wloop_handler *h, uv_loop_t *loop,
                       const struct mi_config *cfg, const struct mi_log *log,
                       struct mi_err *err)
{
    struct storage_config sc;
    struct media *m;
    int r;

    if (!cfg->database_url)
        return mi_err_set(err, 2, "DATABASE_URL is required (the app's Prisma URL)");
    if (!cfg->token && !cfg->token_file)
        return mi_err_set(err, 2, "WHATSAPP_ACCESS_TOKEN or WHATSAPP_ACCESS_TOKEN_FILE is "
                          "required");
    if (storage_cfg_from_config(cfg, &sc, err))
        return 2;
    m = calloc(1, sizeof(*m));
    if (!m)
        return mi_err_set(err, 1, "out of memory");
    m->loop = loop;
    m->cfg = cfg;
    m->log = log;
    m->jobs.prev = m->jobs.next = &m->jobs;
    uv_timer_t *timers[MEDIA_TIMERS];

    media_timers(m, timers);
    for (size_t i = 0; i < MEDIA_TIMERS; i++) {
        uv_timer_init(loop, timers[i]);
        timers[i]->data = m;
        m->open_handles++;
    }
    *hctx = m;

    if (cfg->token_file) {
        if (!read_token_file(m, err) && !m->token[0]) {
            if (!err->code)
                mi_err_set(err, 2, "WHATSAPP_ACCESS_TOKEN_FILE=%s is empty", cfg->token_file);
            goto fail2;
        }
    } else {
        if (strlen(cfg->token) >= sizeof(m->token)) {
            mi_err_set(err, 2, "WHATSAPP_ACCESS_TOKEN is too long");
            goto fail2;
        }
        memcpy(m->token, cfg->token, strlen(cfg->token) + 1);
    }
    r = pg_url_parse(cfg->database_url, &m->pgu, err);
    if (r) {
        mi_err_prefix(err, "DATABASE_URL: ");
        goto fail2;
    }
    m->budget = budget_new(loop, cfg->buffer_budget);
    if (!m->budget || http_new(&m->http, loop, err))
        goto fail1;
    r = storage_new(&m->st, loop, m->http, m->budget, &sc, err);
    if (r) {
        if (r == STORAGE_E_CONFIG)
            goto fail2;
        goto fail1;
    }
    if (sc.kind != STORAGE_LOCAL) {
        /* The probe starts now; the first claims wait for its answer (2 s at most), so
         * that the first jobs already know whether the store checks a body's sha256. */
        s3_on_payload_verdict(m->st, on_payload_verdict, m);
        if (s3_payload_checked(m->st, NULL) < 0) {
            m->store_probing = true;
            uv_timer_start(&m->store_timer, on_store_timer, STORE_PROBE_WAIT_MS, 0);
        }
    }
    struct graph_client_opts go = {
        .base_url = cfg->graph_url,
        .version = cfg->api_version,
        .phone_number_id = cfg->phone_number_id,
    };
    r = graph_client_new(&m->graph, m->http, &go, err);
    if (r) {
        mi_err_prefix(err, "WHATSAPP_GRAPH_URL/WHATSAPP_API_VERSION: ");
        goto fail2;
    }
    if (graph_client_set_token(m->graph, m->token))
        goto fail1;
    int pool_size = (int)(cfg->concurrency < 8 ? cfg->concurrency : 8);
    int limit = pg_url_connection_limit(m->pgu);
    struct pg_pool_opts po = { .size = limit > 0 && limit < pool_size ? limit : pool_size };
    /* A job's two statements take well under a millisecond: two connections serve a busy
     * worker; the rest open only when queries queue (each costs the server a backend and
     * the worker a SCRAM exchange, a few ms of CPU). */
    po.initial = po.size < 2 ? po.size : 2;
    if (pg_pool_new(&m->pool, loop, pg_url_keywords(m->pgu), pg_url_values(m->pgu), &po, err))
        goto fail1;
    if (msgdb_new(&m->db, m->pool))
        goto fail1;
    if (cfg->metrics_addr && *cfg->metrics_addr) {
        r = start_ops_server(m, err);
        if (r == 2)
            goto fail2;
        if (r)
            goto fail1;
    }
    if (cfg->token_file)
        uv_timer_start(&m->token_timer, on_token_timer, TOKEN_POLL_MS, TOKEN_POLL_MS);
    on_db_timer(&m->db_timer);
    if (sc.kind != STORAGE_LOCAL) {
        struct mi_err e2 = MI_ERR_INIT;
        uint64_t age_s = (uint64_t)(cfg->orphan_upload_age_ms / 1000);
        if (s3_abort_orphans(m->st, "media/", age_s, time(NULL), on_orphans, m, &e2))
            log_msg(log, LOG_WARN, "cannot start the multipart clean-up", "%s", e2.msg);
    }
    h->start = media_start;
    h->cancel = media_cancel;
    return 0;
fail1:
    if (!err->code)
        mi_err_set(err, 1, "out of memory");
    media_teardown(m);
    uv_run(loop, UV_RUN_DEFAULT);
    return 1;
fail2:
    media_teardown(m);
    uv_run(loop, UV_RUN_DEFAULT);
    return 2;
}

const struct wmain_ops media_ops = {
    .prog = "media-ingest-worker",
    .summary = "Make WhatsApp media durable: BullMQ jobs -> Graph API -> S3/R2/local -> "
               "\"Message\" row.",
    .setup = media_setup,
    .teardown = media_teardown,
    .attach = media_attach,
};
