/*
 * media-backfill - rollout phase 3: enqueue an ingest job for every old "Message" row
 * whose media is not stored yet ("providerMediaId" set, "mediaStoredUrl" NULL).
 *
 * One run, one libuv loop:
 *
 *   take the lock ──► inspect the table ──► read the cursor ──► [ wait for queue room
 *   ──► read a page (keyset on "id") ──► enqueue it, pipelined ──► save the cursor ]*
 *   ──► delete the cursor, release the lock, print the summary
 *
 * Job ids are deterministic (bfutil.h), and BullMQ's add leaves an existing job with the
 * same custom id untouched, so reruns, overlapping runs and resumed runs never create a
 * second job for a row: they count it as already_queued.
 *
 * The lock "<prefix>:<queue>:backfill-lock" is a SET NX PX with a 30 s expiry, refreshed
 * every 10 s and released with a compare-and-delete, so a crashed run blocks the next
 * one for at most 30 s. The cursor "<prefix>:<queue>:backfill-cursor" is a JSON object
 * with the last "id" of the last fully enqueued page and the run's filters; it is written
 * after every page (expiring after 7 days), kept when a run is interrupted or stops at
 * --limit, and deleted when a run reaches the end of the table.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "bfutil.h"
#include "bullmq.h"
#include "config.h"
#include "log.h"
#include "msgdb.h"
#include "pg.h"
#include "pg_url.h"
#include "redis.h"
#include "util.h"

/* Exit codes (documented in --help). */
enum {
    BF_EXIT_OK = 0,
    BF_EXIT_FAILED = 1,
    BF_EXIT_USAGE = 2,
    BF_EXIT_LOCKED = 3,
    BF_EXIT_INTERRUPTED = 4,
};

#define BF_LOCK_TTL_MS      30000
#define BF_LOCK_REFRESH_MS  10000
#define BF_CURSOR_TTL_MS    (7LL * 86400 * 1000)
#define BF_POLL_MS          1000
#define BF_STARTUP_MS       15000
#define BF_PG_TIMEOUT_MS    30000
#define BF_COUNT_TIMEOUT_MS 10000
#define BF_WINDOW           128     /* adds in flight (pipelined on one connection) */
#define BF_JS_MAX_SAFE      9007199254740991LL

/* Lock refresh and release: only while the value is still our token. */
static const char lua_refresh[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "end\n"
    "return 0\n";
static const char lua_release[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('DEL', KEYS[1])\n"
    "end\n"
    "return 0\n";

/* The per-run arguments (the settings shared with the environment are in mi_config). */
struct bf_opts {
    const char *since_arg, *until_arg;
    bool has_since, has_until;
    int64_t since_ms, until_ms;
    int64_t limit;              /* rows to scan; 0: no limit */
    bool include_expired, dry_run, restart, wait_lock;
};

struct bf_row {
    char *id;
    char *pmid;
    int64_t created_ms;
    bool skip;                  /* expired or not encodable */
};

struct bf {
    uv_loop_t loop;
    uv_signal_t sigint, sigterm;
    uv_timer_t step;            /* start-up deadline, lock and depth polls */
    uv_timer_t refresh;         /* lock refresh */
    uv_timer_t progress;        /* TTY progress line */
    const struct mi_config *cfg;
    struct bf_opts o;
    struct mi_log *log;
    struct redis_client *rc;
    struct bmq *q;
    struct pg_url *url;
    struct pg_pool *pool;
    struct msgdb *db;
    struct redis_script s_refresh, s_release;
    char *lock_key, *cursor_key;
    char token[128];
    char filters[512];
    char *after_id;             /* keyset position of the last finished page */
    char *page_last;            /* last id of the page in progress */
    /* state */
    bool connected, started, have_lock, closing, waiting, stop_requested, lock_lost, tty;
    bool progress_shown, wait_logged, depth_logged, paused_warned;
    int exit_code;
    const char *status;
    struct mi_err fail;
    /* page in progress */
    struct bf_row *rows;
    int nrows, next, inflight, asked;
    bool page_failed;
    /* counters */
    int64_t scanned, enqueued, already, expired, invalid, total;
    int64_t t0_ms;
};

static void next_page(struct bf *b);
static void finish(struct bf *b, int code, const char *status);

/* EVALSHA @script on the lock key with @argc arguments (redis_client_script wants
 * lengths). */
static int lock_script(struct bf *b, const struct redis_script *script, redis_reply_fn cb,
                       int argc, const char *const *argv)
{
    size_t len[4];
    for (int i = 0; i < argc && i < 4; i++)
        len[i] = strlen(argv[i]);
    return redis_client_script(b->rc, script, 5000, cb, b, 1, argc, argv, len);
}

/* ---- output ---- */

static void progress_clear(struct bf *b)
{
    if (b->progress_shown) {
        fputs("\r\033[K", stderr);
        b->progress_shown = false;
    }
}

static void note(struct bf *b, enum log_level lv, const char *msg, const char *detail)
{
    progress_clear(b);
    if (detail)
        log_msg(b->log, lv, msg, "%s", detail);
    else
        log_msg(b->log, lv, msg, NULL);
}

static double elapsed_s(const struct bf *b)
{
    return b->t0_ms ? (double)(mi_mono_ms() - b->t0_ms) / 1000.0 : 0.0;
}

static void on_progress(uv_timer_t *t)
{
    struct bf *b = t->data;
    double s = elapsed_s(b);
    double rate = s > 0 ? (double)b->scanned / s : 0;
    char eta[32] = "?";
    int64_t goal = b->total;
    if (goal >= 0 && b->o.limit && b->o.limit < goal)
        goal = b->o.limit;
    if (goal >= 0 && rate > 0) {
        int64_t left = goal > b->scanned ? goal - b->scanned : 0;
        int64_t sec = (int64_t)((double)left / rate);
        snprintf(eta, sizeof(eta), "%lld:%02lld:%02lld", (long long)(sec / 3600),
                 (long long)(sec / 60 % 60), (long long)(sec % 60));
    }
    char scanned[48];
    if (goal >= 0)
        snprintf(scanned, sizeof(scanned), "%lld/%lld", (long long)b->scanned, (long long)goal);
    else
        snprintf(scanned, sizeof(scanned), "%lld", (long long)b->scanned);
    fprintf(stderr, "\r\033[Kbackfill%s: scanned %s  enqueued %lld  already-queued %lld  "
            "expired %lld  %.0f rows/s  ETA %s%s", b->o.dry_run ? " (dry run)" : "", scanned,
            (long long)b->enqueued, (long long)b->already, (long long)b->expired, rate, eta,
            b->waiting ? "  (waiting for queue room)" : "");
    fflush(stderr);
    b->progress_shown = true;
}

static void summary(struct bf *b)
{
    progress_clear(b);
    double s = elapsed_s(b);
    printf("backfill done status=%s scanned=%lld enqueued=%lld already_queued=%lld "
           "expired=%lld invalid=%lld seconds=%.3f rate=%.1f dry_run=%d\n", b->status,
           (long long)b->scanned, (long long)b->enqueued, (long long)b->already,
           (long long)b->expired, (long long)b->invalid, s,
           s > 0 ? (double)b->scanned / s : 0.0, b->o.dry_run ? 1 : 0);
    fflush(stdout);
}

/* ---- shutdown ---- */

static void on_pool_closed(void *ctx)
{
    struct bf *b = ctx;
    pg_pool_free(b->pool);
    b->pool = NULL;
}

static void close_all(struct bf *b)
{
    uv_close((uv_handle_t *)&b->step, NULL);
    uv_close((uv_handle_t *)&b->refresh, NULL);
    uv_close((uv_handle_t *)&b->progress, NULL);
    uv_close((uv_handle_t *)&b->sigint, NULL);
    uv_close((uv_handle_t *)&b->sigterm, NULL);
    redis_client_close(b->rc);
    b->rc = NULL;
    if (b->pool)
        pg_pool_close(b->pool, on_pool_closed, b);
}

static void on_released(void *ctx, const redisReply *reply, const struct mi_err *err)
{
    struct bf *b = ctx;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        note(b, LOG_WARN, "could not release the backfill lock; it expires by itself in 30 s",
             reply ? reply->str : err->msg);
    close_all(b);
}

/* End the run: summary, lock release, close everything (the loop then returns). */
static void finish(struct bf *b, int code, const char *status)
{
    if (b->closing)
        return;
    b->closing = true;
    b->exit_code = code;
    b->status = status;
    uv_timer_stop(&b->step);
    uv_timer_stop(&b->refresh);
    uv_timer_stop(&b->progress);
    if (b->started)
        summary(b);
    if (b->have_lock && b->rc) {
        b->have_lock = false;
        const char *argv[] = { b->lock_key, b->token };
        if (!lock_script(b, &b->s_release, on_released, 2, argv))
            return;
    }
    close_all(b);
}

/* Log what failed (@what is the message, @detail says why) and end the run with 1. */
static void fail(struct bf *b, const char *what, const char *detail)
{
    if (b->closing)
        return;
    note(b, LOG_ERROR, what, detail);
    finish(b, BF_EXIT_FAILED, "failed");
}

/* A Redis reply that is neither missing nor an error; otherwise fail the run with @what. */
static bool reply_ok(struct bf *b, const redisReply *reply, const struct mi_err *err,
                     const char *what)
{
    if (reply && reply->type != REDIS_REPLY_ERROR)
        return true;
    fail(b, what, reply ? reply->str : err->msg);
    return false;
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct bf *b = s->data;
    const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
    if (b->stop_requested || b->waiting || !b->started) {
        /* Nothing in flight that the cursor depends on, or a second signal: stop now
         * (the cursor still names the last page that was fully enqueued). */
        note(b, LOG_INFO, "signal received, stopping now", name);
        b->stop_requested = true;
        finish(b, BF_EXIT_INTERRUPTED, "interrupted");
        return;
    }
    b->stop_requested = true;
    note(b, LOG_INFO, "signal received, stopping after the current page", name);
}

/* ---- lock ---- */

static void take_lock(struct bf *b);

static void on_retry_lock(uv_timer_t *t)
{
    struct bf *b = t->data;
    b->waiting = false;
    take_lock(b);
}

static void on_holder(void *ctx, const redisReply *reply, const struct mi_err *err)
{
    struct bf *b = ctx;
    if (b->closing)
        return;
    const char *holder = reply && reply->type == REDIS_REPLY_STRING ? reply->str : "unknown";
    progress_clear(b);
    if (b->o.wait_lock) {
        if (!b->wait_logged) {
            struct log_rec r;
            if (log_begin(&r, b->log, LOG_INFO, "another backfill holds the lock; waiting")) {
                log_str(&r, "key", b->lock_key);
                log_str(&r, "holder", holder);
                log_end(&r);
            }
            b->wait_logged = true;
        }
        b->waiting = true;
        uv_timer_start(&b->step, on_retry_lock, BF_POLL_MS, 0);
        return;
    }
    fprintf(stderr, "media-backfill: another backfill run holds the lock %s (holder %s); "
            "it is released when that run ends (or 30 s after it died). Run again later, or "
            "pass --wait-lock to wait for it.\n", b->lock_key, holder);
    finish(b, BF_EXIT_LOCKED, "locked");
}

static void on_refreshed(void *ctx, const redisReply *reply, const struct mi_err *err)
{
    struct bf *b = ctx;
    if (b->closing)
        return;
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        /* Try again at the next tick; a lost lock shows up then as a 0 reply. */
        note(b, LOG_WARN, "could not refresh the backfill lock", reply ? reply->str : err->msg);
        return;
    }
    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
        b->have_lock = false;
        b->lock_lost = true;
        mi_err_set(&b->fail, 1, "%s expired, probably because Redis was unreachable for "
                   "30 s; stopping so that two runs do not overlap", b->lock_key);
        if (b->waiting)
            fail(b, "lost the backfill lock", b->fail.msg);
    }
}

static void on_refresh_tick(uv_timer_t *t)
{
    struct bf *b = t->data;
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%d", BF_LOCK_TTL_MS);
    const char *argv[] = { b->lock_key, b->token, ttl };
    if (lock_script(b, &b->s_refresh, on_refreshed, 3, argv))
        note(b, LOG_WARN, "could not refresh the backfill lock", "Redis is not connected");
}

static void inspect(struct bf *b);

static void on_lock(void *ctx, const redisReply *reply, const struct mi_err *err)
{
    struct bf *b = ctx;
    if (b->closing)
        return;
    if (!reply_ok(b, reply, err, "could not take the backfill lock"))
        return;
    if (reply->type == REDIS_REPLY_NIL) {
        const char *argv[] = { "GET", b->lock_key };
        if (redis_client_command(b->rc, 0, on_holder, b, 2, argv, NULL))
            on_holder(b, NULL, NULL);
        return;
    }
    b->have_lock = true;
    uv_timer_start(&b->refresh, on_refresh_tick, BF_LOCK_REFRESH_MS, BF_LOCK_REFRESH_MS);
    inspect(b);
}

static void take_lock(struct bf *b)
{
    if (b->stop_requested) {
        finish(b, BF_EXIT_INTERRUPTED, "interrupted");
        return;
    }
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%d", BF_LOCK_TTL_MS);
    const char *argv[] = { "SET", b->lock_key, b->token, "NX", "PX", ttl };
    if (redis_client_command(b->rc, 0, on_lock, b, 6, argv, NULL))
        fail(b, "could not take the backfill lock", "Redis is not connected");
}

/* ---- table and cursor ---- */

static void on_count(void *ctx, int status, const struct pg_result *res,
                     const struct mi_err *err)
{
    struct bf *b = ctx;
    const char *v = status ? NULL : pg_result_value(res, 0, 0);
    int64_t n;
    /* Counted from the cursor at the start, when nothing had been scanned yet. */
    if (v && mi_parse_i64(v, 0, INT64_MAX, &n))
        b->total = n;
}

/* For the ETA only: count the rows left (the scan query without its LIMIT). */
static void start_count(struct bf *b)
{
    char sql[4096];
    char since[24], until[24];
    int r = snprintf(sql, sizeof(sql), "SELECT count(*) FROM (%s) s",
                     msgdb_sql(b->db, MSGDB_SQL_SCAN));
    if (r < 0 || (size_t)r >= sizeof(sql))
        return;
    snprintf(since, sizeof(since), "%lld", (long long)b->o.since_ms);
    snprintf(until, sizeof(until), "%lld", (long long)b->o.until_ms);
    const char *params[] = { b->after_id, b->o.has_since ? since : NULL,
                             b->o.has_until ? until : NULL, NULL };
    if (pg_query(b->pool, sql, 4, params, BF_COUNT_TIMEOUT_MS, on_count, b))
        b->total = -1;
}

static void start_scan(struct bf *b)
{
    b->started = true;
    b->t0_ms = mi_mono_ms();
    if (b->tty) {
        start_count(b);
        uv_timer_start(&b->progress, on_progress, 1000, 1000);
    }
    next_page(b);
}

/* Resume from cursor @c when it was left by a run with the same filters. Return: 0, or
 * -ENOMEM. */
static int use_cursor(struct bf *b, json_t *c)
{
    const char *filters = json_string_value(json_object_get(c, "filters"));
    const char *after = json_string_value(json_object_get(c, "after"));
    json_t *since = json_object_get(c, "since_ms"), *until = json_object_get(c, "until_ms");
    bool ok = filters && after && (json_is_null(since) || json_is_integer(since)) &&
              (json_is_null(until) || json_is_integer(until)) &&
              json_is_integer(json_object_get(c, "scanned"));
    if (!ok || strcmp(filters, b->filters)) {
        note(b, LOG_WARN, "ignoring the cursor of a run with other filters (or an unreadable "
             "one); starting from the beginning", ok ? filters : "unreadable");
        return 0;
    }
    free(b->after_id);
    b->after_id = strdup(after);
    if (!b->after_id)
        return -ENOMEM;
    /* Relative times ("30d ago") keep the window the interrupted run resolved. */
    if (json_is_integer(since))
        b->o.since_ms = json_integer_value(since);
    if (json_is_integer(until))
        b->o.until_ms = json_integer_value(until);
    struct log_rec r;
    if (log_begin(&r, b->log, LOG_INFO, "resuming an interrupted backfill")) {
        log_str(&r, "after_id", after);
        log_int(&r, "scanned_before", json_integer_value(json_object_get(c, "scanned")));
        log_end(&r);
    }
    return 0;
}

static void on_cursor(void *ctx, const redisReply *reply, const struct mi_err *err)
{
    struct bf *b = ctx;
    if (b->closing)
        return;
    if (!reply_ok(b, reply, err, "could not read the backfill cursor"))
        return;
    if (reply->type == REDIS_REPLY_STRING) {
        json_t *c = json_loadb(reply->str, reply->len, 0, NULL);
        int r = use_cursor(b, c);
        json_decref(c);
        if (r) {
            fail(b, "could not read the backfill cursor", "out of memory");
            return;
        }
    }
    start_scan(b);
}

static void on_cursor_deleted(void *ctx, const redisReply *reply, const struct mi_err *err)
{
    struct bf *b = ctx;
    if (b->closing)
        return;
    if (!reply_ok(b, reply, err, "could not delete the backfill cursor"))
        return;
    start_scan(b);
}

static void read_cursor(struct bf *b)
{
    /* A dry run changes nothing: it neither reads nor writes the cursor. */
    if (b->o.dry_run) {
        start_scan(b);
        return;
    }
    const char *argv[] = { b->o.restart ? "DEL" : "GET", b->cursor_key };
    if (redis_client_command(b->rc, 0, b->o.restart ? on_cursor_deleted : on_cursor, b, 2,
                             argv, NULL))
        fail(b, "could not read the backfill cursor", "Redis is not connected");
}

static void on_inspected(void *ctx, int status, const struct mi_err *err)
{
    struct bf *b = ctx;
    if (b->closing)
        return;
    if (status) {
        const char *last = pg_pool_last_error(b->pool);
        char detail[MI_ERR_MSG_MAX + 256];
        const char *msg = err ? err->msg : "error";
        /* pg.h's timeout message may already quote the connection error. */
        bool quoted = !*last || strstr(msg, last) != NULL;
        snprintf(detail, sizeof(detail), "%s%s%.190s", msg,
                 quoted ? "" : "; last connection error: ", quoted ? "" : last);
        fail(b, "could not inspect the \"Message\" table", detail);
        return;
    }
    read_cursor(b);
}

static void inspect(struct bf *b)
{
    if (msgdb_init(b->db, BF_STARTUP_MS, on_inspected, b))
        fail(b, "could not inspect the \"Message\" table", "query refused");
}

/* ---- pages ---- */

static void free_page(struct bf *b)
{
    for (int i = 0; i < b->nrows; i++) {
        free(b->rows[i].id);
        free(b->rows[i].pmid);
    }
    free(b->rows);
    b->rows = NULL;
    b->nrows = b->next = 0;
}

static void on_next_page_timer(uv_timer_t *t)
{
    struct bf *b = t->data;
    b->waiting = false;
    next_page(b);
}

static void on_cursor_saved(void *ctx, const redisReply *reply, const struct mi_err *err)
{
    struct bf *b = ctx;
    if (b->closing)
        return;
    if (!reply_ok(b, reply, err, "could not save the backfill cursor"))
        return;
    next_page(b);
}

static void on_cursor_dropped(void *ctx, const redisReply *reply, const struct mi_err *err)
{
    struct bf *b = ctx;
    if (b->closing)
        return;
    if (!reply_ok(b, reply, err, "could not delete the backfill cursor"))
        return;
    finish(b, BF_EXIT_OK, "complete");
}

static void save_cursor(struct bf *b)
{
    json_t *c = json_pack("{s:s,s:s,s:o,s:o,s:I,s:I,s:s}", "after", b->after_id,
                          "filters", b->filters,
                          "since_ms", b->o.has_since ? json_integer(b->o.since_ms) : json_null(),
                          "until_ms", b->o.has_until ? json_integer(b->o.until_ms) : json_null(),
                          "scanned", (json_int_t)b->scanned, "updated_ms",
                          (json_int_t)mi_now_ms(), "holder", b->token);
    char *text = c ? json_dumps(c, JSON_COMPACT) : NULL;
    json_decref(c);
    if (!text) {
        fail(b, "could not save the backfill cursor", "out of memory");
        return;
    }
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%lld", BF_CURSOR_TTL_MS);
    const char *argv[] = { "SET", b->cursor_key, text, "PX", ttl };
    int r = redis_client_command(b->rc, 0, on_cursor_saved, b, 5, argv, NULL);
    free(text);
    if (r)
        fail(b, "could not save the backfill cursor", "Redis is not connected");
}

/* Every add of the page has answered. */
static void page_done(struct bf *b)
{
    int n = b->nrows;
    free_page(b);
    if (b->page_failed) {
        fail(b, "enqueueing failed", b->fail.msg);
        return;
    }
    if (n > 0) {
        free(b->after_id);
        b->after_id = b->page_last;
        b->page_last = NULL;
    }
    bool last = n < b->asked;
    if (b->o.dry_run) {
        if (last)
            finish(b, BF_EXIT_OK, "complete");
        else
            next_page(b);
        return;
    }
    if (last) {
        const char *argv[] = { "DEL", b->cursor_key };
        if (redis_client_command(b->rc, 0, on_cursor_dropped, b, 2, argv, NULL))
            fail(b, "could not delete the backfill cursor", "Redis is not connected");
        return;
    }
    save_cursor(b);
}

static void pump(struct bf *b);

static void on_added(void *ctx, int status, const char *id, bool added,
                     const struct mi_err *err)
{
    struct bf *b = ctx;
    b->inflight--;
    if (b->closing)
        return;
    if (status) {
        if (!b->page_failed)
            mi_err_set(&b->fail, 1, "job %s: %s", id ? id : "?", err ? err->msg : "error");
        b->page_failed = true;
    } else if (added) {
        b->enqueued++;
    } else {
        b->already++;
    }
    pump(b);
}

static void on_exists(void *ctx, const redisReply *reply, const struct mi_err *err)
{
    struct bf *b = ctx;
    b->inflight--;
    if (b->closing)
        return;
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        if (!b->page_failed)
            mi_err_set(&b->fail, 1, "%s", reply && reply->type == REDIS_REPLY_ERROR ?
                       reply->str : err ? err->msg : "unexpected reply to EXISTS");
        b->page_failed = true;
    } else if (reply->integer) {
        b->already++;
    } else {
        b->enqueued++;
    }
    pump(b);
}

static char *job_data(const struct bf *b, const struct bf_row *row)
{
    int64_t num;
    json_t *mid;
    if (msgdb_id_type(b->db) == MSGDB_ID_INT &&
        mi_parse_i64(row->id, -BF_JS_MAX_SAFE, BF_JS_MAX_SAFE, &num))
        mid = json_integer(num);
    else
        mid = json_string(row->id); /* text ids, and bigints JavaScript cannot hold exactly */
    json_t *pm = json_string(row->pmid);
    if (!mid || !pm) {
        json_decref(mid);
        json_decref(pm);
        return NULL;
    }
    json_t *d = json_pack("{s:o,s:o}", "messageId", mid, "providerMediaId", pm);
    char *text = d ? json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    return text;
}

/* Keep up to BF_WINDOW requests of the page in flight. */
static void pump(struct bf *b)
{
    while (!b->page_failed && b->inflight < BF_WINDOW && b->next < b->nrows) {
        struct bf_row *row = &b->rows[b->next++];
        if (row->skip)
            continue;
        char id[BF_JOB_ID_MAX];
        struct mi_err err = MI_ERR_INIT;
        int r;
        if (bf_job_id(row->id, row->pmid, id) < 0) {
            mi_err_set(&b->fail, 1, "out of memory while hashing a job id");
            b->page_failed = true;
            break;
        }
        if (b->o.dry_run) {
            size_t kl = strlen(bmq_key_prefix(b->q)) + strlen(id) + 1;
            char *key = malloc(kl);
            if (!key) {
                mi_err_set(&b->fail, 1, "out of memory");
                b->page_failed = true;
                break;
            }
            snprintf(key, kl, "%s%s", bmq_key_prefix(b->q), id);
            const char *argv[] = { "EXISTS", key };
            r = redis_client_command(b->rc, 0, on_exists, b, 2, argv, NULL);
            free(key);
            if (r)
                mi_err_set(&err, 1, "Redis is not connected");
        } else {
            char *data = job_data(b, row);
            if (!data) {
                /* Not valid UTF-8, so not representable as the job's JSON data. */
                b->invalid++;
                struct log_rec lr;
                if (log_begin(&lr, b->log, LOG_WARN, "skipping a row whose id or "
                              "providerMediaId is not valid UTF-8")) {
                    log_str(&lr, "job", id);
                    log_end(&lr);
                }
                continue;
            }
            struct bmq_add_req req = {
                .name = "ingest", .data = data, .job_id = id,
                .priority = b->cfg->backfill_priority,
                .attempts = 5,
                .backoff = { MI_BACKOFF_EXPONENTIAL, 30000, 0 },
            };
            r = bmq_add(b->q, &req, on_added, b, &err);
            free(data);
        }
        if (r) {
            mi_err_set(&b->fail, 1, "%s", err.msg[0] ? err.msg : "request refused");
            b->page_failed = true;
            break;
        }
        b->inflight++;
    }
    if (b->inflight == 0 && (b->page_failed || b->next >= b->nrows))
        page_done(b);
}

static void on_page(void *ctx, int status, const struct msgdb_scan_row *rows, int n,
                    const struct mi_err *err)
{
    struct bf *b = ctx;
    if (b->closing)
        return;
    if (status) {
        fail(b, "reading a page of \"Message\" rows failed", err ? err->msg : "error");
        return;
    }
    b->rows = n ? calloc((size_t)n, sizeof(*b->rows)) : NULL;
    if (n && !b->rows) {
        fail(b, "reading a page of \"Message\" rows failed", "out of memory");
        return;
    }
    b->nrows = n;
    b->next = 0;
    b->page_failed = false;
    int64_t oldest = mi_now_ms() - b->cfg->backfill_max_age_ms;
    for (int i = 0; i < n; i++) {
        struct bf_row *row = &b->rows[i];
        row->id = strdup(rows[i].id);
        row->pmid = strdup(rows[i].provider_media_id);
        row->created_ms = rows[i].created_ms;
        if (!row->id || !row->pmid) {
            free_page(b);
            fail(b, "reading a page of \"Message\" rows failed", "out of memory");
            return;
        }
        if (!b->o.include_expired && row->created_ms < oldest) {
            row->skip = true;
            b->expired++;
        }
    }
    b->scanned += n;
    free(b->page_last);
    b->page_last = n ? strdup(rows[n - 1].id) : NULL;
    if (n && !b->page_last) {
        free_page(b);
        fail(b, "reading a page of \"Message\" rows failed", "out of memory");
        return;
    }
    pump(b);
}

static int page_size(const struct bf *b)
{
    int64_t n = b->cfg->backfill_batch;
    if (b->cfg->backfill_max_depth > 0 && !b->o.dry_run && b->cfg->backfill_max_depth < n)
        n = b->cfg->backfill_max_depth;
    if (b->o.limit && b->o.limit - b->scanned < n)
        n = b->o.limit - b->scanned;
    return (int)n;
}

static void scan(struct bf *b)
{
    struct mi_err err = MI_ERR_INIT;
    struct msgdb_scan q = {
        .after_id = b->after_id,
        .has_since = b->o.has_since, .since_ms = b->o.since_ms,
        .has_until = b->o.has_until, .until_ms = b->o.until_ms,
        .limit = page_size(b),
    };
    b->asked = q.limit;
    if (msgdb_scan_batch(b->db, &q, BF_PG_TIMEOUT_MS, on_page, b, &err))
        fail(b, "reading a page of \"Message\" rows failed", err.msg);
}

static void on_depth(void *ctx, int status, const struct bmq_counts *c,
                     const struct mi_err *err)
{
    struct bf *b = ctx;
    if (b->closing)
        return;
    if (status) {
        fail(b, "reading the queue depth failed", err ? err->msg : "error");
        return;
    }
    int64_t depth = c->waiting + c->prioritized + c->delayed + c->active;
    /* Wait until a whole page fits under --max-depth, so the depth this run causes never
     * goes above it (live producers may still add on top). */
    if (depth + page_size(b) > b->cfg->backfill_max_depth) {
        struct log_rec r;
        if (log_begin(&r, b->log, b->depth_logged ? LOG_DEBUG : LOG_INFO,
                      "queue has no room for a page; waiting")) {
            progress_clear(b);
            log_int(&r, "depth", depth);
            log_int(&r, "max_depth", b->cfg->backfill_max_depth);
            log_end(&r);
        }
        b->depth_logged = true;
        if (c->paused && !b->paused_warned) {
            note(b, LOG_WARN, "the queue is paused; the backfill waits until it is resumed",
                 "media-queue resume");
            b->paused_warned = true;
        }
        b->waiting = true;
        uv_timer_start(&b->step, on_next_page_timer, BF_POLL_MS, 0);
        return;
    }
    scan(b);
}

static void next_page(struct bf *b)
{
    if (b->closing)
        return;
    if (b->lock_lost) {
        fail(b, "lost the backfill lock", b->fail.msg);
        return;
    }
    if (b->stop_requested) {
        finish(b, BF_EXIT_INTERRUPTED, "interrupted");
        return;
    }
    if (b->o.limit && b->scanned >= b->o.limit) {
        finish(b, BF_EXIT_OK, "limit");
        return;
    }
    if (b->cfg->backfill_max_depth > 0 && !b->o.dry_run) {
        struct mi_err err = MI_ERR_INIT;
        if (bmq_counts(b->q, on_depth, b, &err))
            fail(b, "reading the queue depth failed", err.msg);
        return;
    }
    scan(b);
}

/* ---- start-up ---- */

static void on_startup_deadline(uv_timer_t *t)
{
    struct bf *b = t->data;
    char detail[MI_ERR_MSG_MAX + 64];
    snprintf(detail, sizeof(detail), "Redis did not become reachable within %d s: %s",
             BF_STARTUP_MS / 1000, redis_client_last_error(b->rc)->msg);
    fail(b, "start-up failed", detail);
}

static void on_redis_state(void *ctx, bool ready, const struct mi_err *err)
{
    struct bf *b = ctx;
    /* Only the first connection starts the run; after a reconnect, requests that were in
     * flight have failed and ended the run, and new ones simply use the new connection. */
    if (!ready || b->closing || b->connected)
        return;
    b->connected = true;
    uv_timer_stop(&b->step);
    if (b->o.dry_run)
        inspect(b);
    else
        take_lock(b);
}

static void usage(FILE *out)
{
    fputs("Usage: media-backfill [options]\n"
          "Enqueue an ingest job (name \"ingest\", priority --priority, 5 attempts, exponential\n"
          "backoff from 30 s) for every \"Message\" row with \"providerMediaId\" set and\n"
          "\"mediaStoredUrl\" NULL, in \"id\" order (keyset pages of --batch rows).\n\n"
          "Options:\n"
          "  --since TIME        only rows with \"createdAt\" >= TIME\n"
          "  --until TIME        only rows with \"createdAt\" < TIME\n"
          "                      TIME: 2024-05-01 (UTC midnight), 2024-05-01T12:00:00Z (a\n"
          "                      date-time without a zone is UTC), \"now\", or a duration\n"
          "                      before now: \"30d ago\", \"12h\", \"90m ago\"\n"
          "  --limit N           scan at most N rows in this run (expired ones included); the\n"
          "                      cursor is kept, so the next run continues after them\n"
          "  --include-expired   also enqueue rows older than --max-age (their media ids have\n"
          "                      most likely expired at WhatsApp: those jobs fail permanently)\n"
          "  --dry-run           change nothing: count the rows, and check which jobs exist\n"
          "  --restart           ignore (and delete) the cursor of an interrupted run\n"
          "  --wait-lock         wait while another run holds the lock instead of exiting 3\n"
          "  --help, --version\n\n", out);
    config_usage(out, CFG_BACKFILL);
    fputs("\nJob ids: \"media-<messageId>-<providerMediaId>\", or \"media_<sha256 hex>\" when an\n"
          "id has characters other than letters, digits, '.', '_' (and '-' in messageId) or\n"
          "is longer than 200 characters. A job whose id exists is left untouched\n"
          "(already_queued), so reruns and overlapping runs never create a second job.\n"
          "Job data: {\"messageId\": number for integer ids (string beyond 2^53 and for text\n"
          "ids), \"providerMediaId\": \"...\"}.\n\n"
          "Redis keys: <prefix>:<queue>:backfill-lock (30 s expiry, refreshed while running)\n"
          "and <prefix>:<queue>:backfill-cursor (last id done and the filters; resumed when\n"
          "the next run has the same --since/--until/--max-age/--include-expired arguments,\n"
          "deleted when a run reaches the end of the table, expires after 7 days).\n\n"
          "Output: progress every second on stderr when it is a terminal; one summary line\n"
          "on stdout at the end:\n"
          "  backfill done status=complete|limit|interrupted|failed|locked scanned=N\n"
          "  enqueued=N already_queued=N expired=N invalid=N seconds=S rate=R dry_run=0|1\n\n"
          "Exit codes:\n"
          "  0  done: the end of the table was reached (cursor deleted), or --limit rows\n"
          "     were scanned (cursor kept)\n"
          "  1  runtime failure (Redis or PostgreSQL unreachable or failing, lock lost); the\n"
          "     cursor keeps the last page that was fully enqueued, rerun to resume\n"
          "  2  usage or configuration error (the message names the flag or variable)\n"
          "  3  another backfill holds the lock (without --wait-lock)\n"
          "  4  interrupted by SIGINT/SIGTERM after the current page; cursor kept, rerun\n"
          "     to resume\n", out);
}

static int parse_args(struct bf_opts *o, int argc, char **argv, int64_t now_ms)
{
    struct mi_err err = MI_ERR_INIT;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int since = mi_flag_value(argc, argv, &i, "--since", &v, &err);
        int until = since ? 0 : mi_flag_value(argc, argv, &i, "--until", &v, &err);
        int limit = since || until ? 0 : mi_flag_value(argc, argv, &i, "--limit", &v, &err);
        if (since < 0 || until < 0 || limit < 0) {
            fprintf(stderr, "media-backfill: %s\n", err.msg);
            return BF_EXIT_USAGE;
        }
        if (since || until) {
            int64_t *t = since ? &o->since_ms : &o->until_ms;
            if (bf_parse_time(v, now_ms, t, &err)) {
                fprintf(stderr, "media-backfill: %s: %s\n", since ? "--since" : "--until",
                        err.msg);
                return BF_EXIT_USAGE;
            }
            if (since) {
                o->has_since = true;
                o->since_arg = v;
            } else {
                o->has_until = true;
                o->until_arg = v;
            }
        } else if (limit) {
            if (!mi_parse_i64(v, 1, INT64_MAX, &o->limit)) {
                fprintf(stderr, "media-backfill: --limit %s: expected a whole number >= 1\n", v);
                return BF_EXIT_USAGE;
            }
        } else if (!strcmp(a, "--include-expired")) {
            o->include_expired = true;
        } else if (!strcmp(a, "--dry-run")) {
            o->dry_run = true;
        } else if (!strcmp(a, "--restart")) {
            o->restart = true;
        } else if (!strcmp(a, "--wait-lock")) {
            o->wait_lock = true;
        } else {
            fprintf(stderr, "media-backfill: unknown argument \"%s\" (see --help)\n", a);
            return BF_EXIT_USAGE;
        }
    }
    if (o->has_since && o->has_until && o->since_ms >= o->until_ms) {
        fprintf(stderr, "media-backfill: --since (%s) must be before --until (%s)\n",
                o->since_arg, o->until_arg);
        return BF_EXIT_USAGE;
    }
    return 0;
}

static char *queue_key(const struct mi_config *cfg, const char *suffix)
{
    size_t n = strlen(cfg->prefix) + strlen(cfg->queue_name) + strlen(suffix) + 3;
    char *k = malloc(n);
    if (k && !bmq_key(k, n, cfg->prefix, cfg->queue_name, suffix)) {
        free(k);
        k = NULL;
    }
    return k;
}

static void on_pg_event(void *ctx, int conn, enum pg_event ev, const struct mi_err *err)
{
    struct bf *b = ctx;
    if (ev == PG_EV_CONNECTED || !err)
        return;
    struct log_rec r;
    if (log_begin(&r, b->log, ev == PG_EV_LOST ? LOG_WARN : LOG_DEBUG,
                  ev == PG_EV_LOST ? "postgres connection lost" : "postgres connect failed")) {
        progress_clear(b);
        log_str(&r, "detail", err->msg);
        log_end(&r);
    }
}

/* Set up the loop, the clients and the keys. Return: 0, or an exit code (message shown). */
static int setup(struct bf *b, const struct mi_config *cfg)
{
    char host[64] = "host";
    char rnd[17];
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    mi_rand_hex(rnd, 8);
    snprintf(b->token, sizeof(b->token), "%s:%ld:%s", host, (long)getpid(), rnd);
    if (!bf_filters(b->filters, sizeof(b->filters), b->o.since_arg, b->o.until_arg,
                    cfg->backfill_max_age_ms, b->o.include_expired)) {
        fprintf(stderr, "media-backfill: --since/--until arguments are too long\n");
        return BF_EXIT_USAGE;
    }
    b->lock_key = queue_key(cfg, "backfill-lock");
    b->cursor_key = queue_key(cfg, "backfill-cursor");
    if (!b->lock_key || !b->cursor_key) {
        fprintf(stderr, "media-backfill: out of memory\n");
        return BF_EXIT_FAILED;
    }
    redis_script_init(&b->s_refresh, "backfill-lock-refresh", lua_refresh);
    redis_script_init(&b->s_release, "backfill-lock-release", lua_release);
    return 0;
}

/* Make the loop, its handles and the clients. After it, close_all() is always safe.
 * Return: 0, or an exit code (message shown). */
static int start(struct bf *b, const struct mi_config *cfg)
{
    struct mi_err err = MI_ERR_INIT;
    uv_loop_init(&b->loop);
    uv_timer_init(&b->loop, &b->step);
    uv_timer_init(&b->loop, &b->refresh);
    uv_timer_init(&b->loop, &b->progress);
    uv_signal_init(&b->loop, &b->sigint);
    uv_signal_init(&b->loop, &b->sigterm);
    b->step.data = b->refresh.data = b->progress.data = b;
    b->sigint.data = b->sigterm.data = b;
    uv_signal_start(&b->sigint, on_signal, SIGINT);
    uv_signal_start(&b->sigterm, on_signal, SIGTERM);

    struct pg_pool_opts po = { .size = 2, .on_event = on_pg_event, .event_ctx = b };
    int r = pg_pool_new(&b->pool, &b->loop, pg_url_keywords(b->url), pg_url_values(b->url),
                        &po, &err);
    if (!r)
        r = msgdb_new(&b->db, b->pool);
    if (r) {
        fprintf(stderr, "media-backfill: %s\n", err.msg[0] ? err.msg : "out of memory");
        return BF_EXIT_FAILED;
    }
    struct redis_opts ro = { .url = &cfg->redis, .client_name = "media-backfill",
                             .connect_timeout_ms = 5000 };
    uv_timer_start(&b->step, on_startup_deadline, BF_STARTUP_MS, 0);
    if (redis_client_new(&b->rc, &b->loop, &ro, on_redis_state, b, &err) ||
        bmq_new(&b->q, b->rc, cfg->prefix, cfg->queue_name, &err)) {
        fprintf(stderr, "media-backfill: %s\n", err.msg);
        return BF_EXIT_FAILED;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct mi_config cfg;
    struct mi_err err = MI_ERR_INIT;
    struct bf *b = calloc(1, sizeof(*b));
    char **rest = calloc((size_t)argc + 1, sizeof(char *));
    int nrest = 0, code;

    if (!b || !rest) {
        free(b);
        free(rest);
        return BF_EXIT_FAILED;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            code = BF_EXIT_OK;
            goto out_early;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("media-backfill %s\n", MI_VERSION);
            code = BF_EXIT_OK;
            goto out_early;
        }
    }
    code = BF_EXIT_USAGE;
    if (config_load(&cfg, CFG_BACKFILL, argc, argv, rest, &nrest, &err)) {
        fprintf(stderr, "media-backfill: configuration error: %s\n", err.msg);
        goto out_early;
    }
    if (parse_args(&b->o, nrest, rest, mi_now_ms()))
        goto out_early;
    if (!cfg.database_url || !*cfg.database_url) {
        fprintf(stderr, "media-backfill: configuration error: DATABASE_URL is required (the "
                "app's postgresql:// URL; --database-url overrides it)\n");
        goto out_early;
    }
    if (pg_url_parse(cfg.database_url, &b->url, &err)) {
        fprintf(stderr, "media-backfill: configuration error: %s\n", err.msg);
        goto out_early;
    }
    if (log_new(&b->log, cfg.log_level, cfg.log_format, stderr, &err)) {
        fprintf(stderr, "media-backfill: configuration error: %s\n", err.msg);
        goto out_early;
    }
    b->cfg = &cfg;
    b->total = -1;
    b->tty = isatty(STDERR_FILENO);
    signal(SIGPIPE, SIG_IGN);

    code = setup(b, &cfg);
    if (code)
        goto out;
    code = start(b, &cfg);
    if (!code) {
        char rurl[400];
        rurl_redact(&cfg.redis, rurl, sizeof(rurl));
        struct log_rec lr;
        if (log_begin(&lr, b->log, LOG_INFO, "backfill starting")) {
            log_str(&lr, "version", MI_VERSION);
            log_str(&lr, "redis", rurl);
            log_str(&lr, "queue", cfg.queue_name);
            log_str(&lr, "filters", b->filters);
            log_int(&lr, "batch", cfg.backfill_batch);
            log_int(&lr, "priority", cfg.backfill_priority);
            log_int(&lr, "max_depth", cfg.backfill_max_depth);
            if (b->o.limit)
                log_int(&lr, "limit", b->o.limit);
            if (b->o.dry_run)
                log_str(&lr, "dry_run", "true");
            log_end(&lr);
        }
        b->exit_code = BF_EXIT_FAILED;
    } else {
        b->closing = true;
        close_all(b);
    }
    uv_run(&b->loop, UV_RUN_DEFAULT);
    if (!code)
        code = b->exit_code;
    if (uv_loop_close(&b->loop)) {
        log_msg(b->log, LOG_ERROR, "internal: libuv handles left open at exit", NULL);
        if (!code)
            code = BF_EXIT_FAILED;
    }
out:
    free_page(b);
    msgdb_free(b->db);
    bmq_free(b->q);
    free(b->after_id);
    free(b->page_last);
    free(b->lock_key);
    free(b->cursor_key);
out_early:
    pg_url_free(b->url);
    log_free(b->log);
    free(rest);
    free(b);
    return code;
}
