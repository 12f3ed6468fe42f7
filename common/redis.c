#include "redis.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <openssl/sha.h>

#include "util.h"

/* Pending command: lives from submission until its callback has run. */
struct rcmd {
    struct rcmd *prev, *next;
    struct redis_client *rc;
    redis_reply_fn cb;
    void *ctx;
    int64_t deadline;          /* monotonic ms */
    int64_t timeout_ms;
    bool timed_out;
    bool internal;             /* handshake or SCRIPT LOAD: no user callback */
    /* EVALSHA only: a private copy of the arguments to re-send after SCRIPT LOAD. */
    const struct redis_script *script;
    bool reloaded;
    int argc;
    char **argv;
    size_t *argvlen;
};

/* The poll glue of one hiredis context; freed in the poll's close callback. */
struct radapter {
    uv_poll_t poll;
    uv_idle_t flush;           /* writes queued commands on the next loop turn */
    int events;
    int open_handles;
    bool want_write;           /* hiredis has output queued */
    redisAsyncContext *ac;
};

struct redis_client {
    uv_loop_t *loop;
    struct rurl url;
    char *client_name;
    int64_t connect_timeout_ms;
    int64_t command_timeout_ms;
    redis_state_fn state_cb;
    void *state_ctx;

    redisAsyncContext *ac;
    bool connected;            /* TCP connected */
    bool ready;                /* handshake answered */
    bool closing;
    int handshake_left;
    int attempt;               /* reconnect attempts since the last ready */
    struct mi_err last_err;

    struct rcmd pending;       /* list head (circular) */
    uv_timer_t deadline_timer; /* command and connect deadlines */
    uv_timer_t reconnect_timer;
    int64_t connect_deadline;
    int open_handles;
};

static void start_connect(struct redis_client *rc);
static void arm_deadline(struct redis_client *rc);

void redis_script_init(struct redis_script *s, const char *name, const char *src)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[SHA_DIGEST_LENGTH];
    s->name = name;
    s->src = src;
    SHA1((const unsigned char *)src, strlen(src), md);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++) {
        s->sha[2 * i] = hex[md[i] >> 4];
        s->sha[2 * i + 1] = hex[md[i] & 15];
    }
    s->sha[40] = '\0';
}

/* ---- libuv glue for one hiredis context ---- */

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct radapter *ad = h->data;
    if (!ad->ac)
        return;
    /* On POLLERR libuv reports UV_EBADF with no events: let hiredis find the error. */
    int ev = status < 0 ? ad->events : events;
    if (ev & UV_READABLE)
        redisAsyncHandleRead(ad->ac);
    if (ad->ac && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(ad->ac);
}

/* hiredis re-adds reading after every reply and drops writing after every write: only a
 * real change reaches libuv, whose uv_poll_start deletes and re-adds the fd (two syscalls). */
static void ad_update(struct radapter *ad, int add, int del)
{
    int events = (ad->events | add) & ~del;

    if (events == ad->events && uv_is_active((uv_handle_t *)&ad->poll) == (events != 0))
        return;
    ad->events = events;
    if (ad->events)
        uv_poll_start(&ad->poll, ad->events, on_poll);
    else
        uv_poll_stop(&ad->poll);
}

/*
 * Commands are written from an idle callback on the next loop turn: the socket of a
 * connected client is nearly always writable, so this spares the two epoll_ctl calls
 * (and the extra turn) of polling for POLLOUT per batch of commands, and batches the
 * commands of one turn into one write. Only a partial write polls for POLLOUT.
 */
static void ad_flush(uv_idle_t *h)
{
    struct radapter *ad = h->data;

    uv_idle_stop(h);
    if (!ad->ac || !ad->want_write)
        return;
    redisAsyncHandleWrite(ad->ac);
    /*
     * hiredis called delWrite when all was written; it may also have freed the context.
     * A partial write re-armed this idle handle through addWrite: wait for POLLOUT instead.
     */
    if (ad->ac && ad->want_write) {
        uv_idle_stop(h);
        ad_update(ad, UV_WRITABLE, 0);
    }
}

static void ad_add_read(void *p) { ad_update(p, UV_READABLE, 0); }
static void ad_del_read(void *p) { ad_update(p, 0, UV_READABLE); }

static void ad_add_write(void *p)
{
    struct radapter *ad = p;

    if (!ad->ac)
        return;
    ad->want_write = true;
    /* while connecting, POLLOUT is what tells hiredis that connect(2) finished */
    if (!(ad->ac->c.flags & REDIS_CONNECTED) || (ad->events & UV_WRITABLE))
        ad_update(ad, UV_WRITABLE, 0);
    else
        uv_idle_start(&ad->flush, ad_flush);
}

static void ad_del_write(void *p)
{
    struct radapter *ad = p;

    ad->want_write = false;
    uv_idle_stop(&ad->flush);
    ad_update(ad, 0, UV_WRITABLE);
}

static void ad_closed(uv_handle_t *h)
{
    struct radapter *ad = h->data;

    if (--ad->open_handles == 0)
        free(ad);
}

static void ad_cleanup(void *p)
{
    struct radapter *ad = p;
    ad->ac = NULL;
    uv_poll_stop(&ad->poll);
    uv_idle_stop(&ad->flush);
    uv_close((uv_handle_t *)&ad->poll, ad_closed);
    uv_close((uv_handle_t *)&ad->flush, ad_closed);
}

static int ad_attach(uv_loop_t *loop, redisAsyncContext *ac)
{
    struct radapter *ad = calloc(1, sizeof(*ad));
    if (!ad)
        return -ENOMEM;
    int r = uv_poll_init_socket(loop, &ad->poll, ac->c.fd);
    if (r) {
        free(ad);
        return r;
    }
    ad->open_handles = 1;
    ad->poll.data = ad;
    r = uv_idle_init(loop, &ad->flush);
    if (r) {
        uv_close((uv_handle_t *)&ad->poll, ad_closed);
        return r;
    }
    ad->open_handles = 2;
    ad->flush.data = ad;
    ad->ac = ac;
    ac->ev.data = ad;
    ac->ev.addRead = ad_add_read;
    ac->ev.delRead = ad_del_read;
    ac->ev.addWrite = ad_add_write;
    ac->ev.delWrite = ad_del_write;
    ac->ev.cleanup = ad_cleanup;
    return 0;
}

/* ---- pending commands ---- */

static void cmd_unlink(struct rcmd *c)
{
    c->prev->next = c->next;
    c->next->prev = c->prev;
    c->prev = c->next = c;
}

static void cmd_free(struct rcmd *c)
{
    if (c->argv) {
        for (int i = 0; i < c->argc; i++)
            free(c->argv[i]);
        free(c->argv);
        free(c->argvlen);
    }
    free(c);
}

static void set_state(struct redis_client *rc, bool ready)
{
    bool was = rc->ready;
    rc->ready = ready;
    if (ready)
        mi_err_clear(&rc->last_err);
    if (was != ready && rc->state_cb && !rc->closing)
        rc->state_cb(rc->state_ctx, ready, ready ? NULL : &rc->last_err);
}

static int send_cmd(struct redis_client *rc, struct rcmd *c, int argc, const char *const *argv,
                    const size_t *argvlen);

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct rcmd *c = privdata;
    struct redis_client *rc = c->rc;
    redisReply *reply = r;
    struct mi_err err = MI_ERR_INIT;

    cmd_unlink(c);
    if (reply && c->script && !c->reloaded && reply->type == REDIS_REPLY_ERROR &&
        !strncmp(reply->str, "NOSCRIPT", 8) && rc->ac && !rc->closing) {
        /* Redis lost its script cache (a restart): load the script, then call again.
         * Both are pipelined on this connection, so the load runs first. */
        const char *largv[] = { "SCRIPT", "LOAD", c->script->src };
        size_t llen[] = { 6, 4, strlen(c->script->src) };
        struct rcmd *load = calloc(1, sizeof(*load));
        c->reloaded = true;
        if (load) {
            load->rc = rc;
            load->internal = true;
            load->timeout_ms = c->timeout_ms;
            if (send_cmd(rc, load, 3, largv, llen) != 0)
                free(load);           /* never queued: nobody else frees it */
            else if (!send_cmd(rc, c, c->argc, (const char *const *)c->argv, c->argvlen))
                return;
        }
        mi_err_set(&err, -ENOMEM, "could not re-load Lua script %s", c->script->name);
        reply = NULL;
    } else if (!reply) {
        if (c->timed_out)
            mi_err_set(&err, -ETIMEDOUT, "Redis command timed out after %lld ms",
                       (long long)c->timeout_ms);
        else if (rc->closing)
            mi_err_set(&err, -ECANCELED, "Redis client is closing");
        else
            mi_err_set(&err, -ECONNRESET, "Redis connection lost%s%s",
                       ac->errstr[0] ? ": " : "", ac->errstr);
    }
    if (!c->internal && c->cb)
        c->cb(c->ctx, reply, reply ? NULL : &err);
    cmd_free(c);
    if (!rc->closing)
        arm_deadline(rc);
}

static int send_cmd(struct redis_client *rc, struct rcmd *c, int argc, const char *const *argv,
                    const size_t *argvlen)
{
    int64_t t = c->timeout_ms > 0 ? c->timeout_ms : rc->command_timeout_ms;
    c->timeout_ms = t;
    c->deadline = mi_mono_ms() + t;
    if (redisAsyncCommandArgv(rc->ac, on_reply, c, argc, (const char **)argv, argvlen) !=
        REDIS_OK)
        return -ENOMEM;
    c->prev = rc->pending.prev;
    c->next = &rc->pending;
    rc->pending.prev->next = c;
    rc->pending.prev = c;
    arm_deadline(rc);
    return 0;
}

/* ---- deadlines ---- */

static void schedule_reconnect(struct redis_client *rc);

static void drop_connection(struct redis_client *rc)
{
    redisAsyncContext *ac = rc->ac;
    if (!ac)
        return;
    if (!rc->connected) {
        /* hiredis only calls on_disconnect for connected contexts: detach ourselves. */
        ac->data = NULL;
        rc->ac = NULL;
        set_state(rc, false);
        schedule_reconnect(rc);
    }
    /* hiredis calls every pending callback with a NULL reply (then on_disconnect). */
    redisAsyncFree(ac);
}

static void on_deadline(uv_timer_t *t)
{
    struct redis_client *rc = t->data;
    int64_t now = mi_mono_ms();
    bool expired = false;

    if (!rc->connected && rc->ac && rc->connect_deadline && now >= rc->connect_deadline) {
        mi_err_set(&rc->last_err, -ETIMEDOUT, "connecting to Redis at %s:%d timed out after "
                   "%lld ms", rc->url.host, rc->url.port, (long long)rc->connect_timeout_ms);
        expired = true;
    }
    for (struct rcmd *c = rc->pending.next; c != &rc->pending; c = c->next) {
        if (now >= c->deadline) {
            c->timed_out = true;
            expired = true;
        }
    }
    if (expired)
        drop_connection(rc);
    else
        arm_deadline(rc);
}

static void arm_deadline(struct redis_client *rc)
{
    int64_t next = 0;
    if (!rc->connected && rc->ac)
        next = rc->connect_deadline;
    for (struct rcmd *c = rc->pending.next; c != &rc->pending; c = c->next)
        if (!next || c->deadline < next)
            next = c->deadline;
    if (!next) {
        uv_timer_stop(&rc->deadline_timer);
        return;
    }
    int64_t wait = next - mi_mono_ms();
    uv_timer_start(&rc->deadline_timer, on_deadline, wait > 0 ? (uint64_t)wait : 0, 0);
}

/* ---- connection life cycle ---- */

static void on_reconnect_timer(uv_timer_t *t)
{
    start_connect(t->data);
}

static void schedule_reconnect(struct redis_client *rc)
{
    if (rc->closing)
        return;
    rc->attempt++;
    int64_t d = mi_retry_delay(rc->attempt, 100, 5000, mi_rand_unit());
    uv_timer_start(&rc->reconnect_timer, on_reconnect_timer, (uint64_t)d, 0);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis_client *rc = ac->data;
    if (!rc)
        return;
    if (status != REDIS_OK && ac->errstr[0] && !rc->last_err.code)
        mi_err_set(&rc->last_err, -ECONNRESET, "Redis connection lost: %s", ac->errstr);
    else if (!rc->last_err.code)
        mi_err_set(&rc->last_err, -ECONNRESET, "Redis connection closed");
    rc->ac = NULL;
    rc->connected = false;
    set_state(rc, false);
    arm_deadline(rc);
    schedule_reconnect(rc);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_client *rc = ac->data;
    if (!rc)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback; on_disconnect is not called. */
        mi_err_set(&rc->last_err, -ECONNREFUSED, "cannot connect to Redis at %s:%d: %s",
                   rc->url.host, rc->url.port, ac->errstr);
        rc->ac = NULL;
        set_state(rc, false);
        arm_deadline(rc);
        schedule_reconnect(rc);
        return;
    }
    rc->connected = true;
    arm_deadline(rc);
}

static void on_handshake(void *ctx, const redisReply *reply, const struct mi_err *err)
{
    struct redis_client *rc = ctx;
    if (rc->closing)
        return;
    if (!reply)
        return; /* the connection is gone; on_disconnect reports it */
    if (reply->type == REDIS_REPLY_ERROR) {
        mi_err_set(&rc->last_err, 1, "Redis refused the connection set-up: %s "
                   "(check the URL's user, password and database)", reply->str);
        drop_connection(rc);
        return;
    }
    if (--rc->handshake_left == 0) {
        rc->attempt = 0;
        set_state(rc, true);
    }
}

static int handshake_cmd(struct redis_client *rc, int argc, const char **argv)
{
    size_t lens[4];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    struct rcmd *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->rc = rc;
    c->cb = on_handshake;
    c->ctx = rc;
    c->timeout_ms = rc->connect_timeout_ms;
    rc->handshake_left++;
    int r = send_cmd(rc, c, argc, argv, lens);
    if (r)
        free(c);
    return r;
}

static void start_connect(struct redis_client *rc)
{
    if (rc->closing || rc->ac)
        return;
    mi_err_clear(&rc->last_err);
    rc->handshake_left = 0;
    redisAsyncContext *ac = redisAsyncConnect(rc->url.host, rc->url.port);
    if (!ac || ac->err) {
        mi_err_set(&rc->last_err, -ECONNREFUSED, "cannot connect to Redis at %s:%d: %s",
                   rc->url.host, rc->url.port, ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        set_state(rc, false);
        schedule_reconnect(rc);
        return;
    }
    if (ad_attach(rc->loop, ac)) {
        mi_err_set(&rc->last_err, -ENOMEM, "cannot watch the Redis socket");
        redisAsyncFree(ac);
        schedule_reconnect(rc);
        return;
    }
    ac->data = rc;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    rc->ac = ac;
    rc->connected = false;
    rc->connect_deadline = mi_mono_ms() + rc->connect_timeout_ms;

    char db[16];
    snprintf(db, sizeof(db), "%d", rc->url.db);
    int r = 0;
    if (rc->url.password[0] && rc->url.user[0])
        r = handshake_cmd(rc, 3, (const char *[]){ "AUTH", rc->url.user, rc->url.password });
    else if (rc->url.password[0])
        r = handshake_cmd(rc, 2, (const char *[]){ "AUTH", rc->url.password });
    if (!r)
        r = handshake_cmd(rc, 2, (const char *[]){ "SELECT", db });
    if (!r && rc->client_name)
        r = handshake_cmd(rc, 3, (const char *[]){ "CLIENT", "SETNAME", rc->client_name });
    if (r) {
        mi_err_set(&rc->last_err, r, "cannot queue the Redis handshake");
        drop_connection(rc);
    }
    arm_deadline(rc);
}

int redis_client_new(struct redis_client **rcp, uv_loop_t *loop, const struct redis_opts *opts,
                     redis_state_fn state_cb, void *state_ctx, struct mi_err *err)
{
    struct redis_client *rc = calloc(1, sizeof(*rc));
    if (!rc)
        return mi_err_set(err, -ENOMEM, "out of memory");
    rc->loop = loop;
    rc->url = *opts->url;
    if (opts->client_name) {
        rc->client_name = strdup(opts->client_name);
        if (!rc->client_name) {
            free(rc);
            return mi_err_set(err, -ENOMEM, "out of memory");
        }
    }
    rc->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 5000;
    rc->command_timeout_ms = opts->command_timeout_ms > 0 ? opts->command_timeout_ms : 10000;
    rc->state_cb = state_cb;
    rc->state_ctx = state_ctx;
    rc->pending.prev = rc->pending.next = &rc->pending;
    uv_timer_init(loop, &rc->deadline_timer);
    uv_timer_init(loop, &rc->reconnect_timer);
    rc->deadline_timer.data = rc;
    rc->reconnect_timer.data = rc;
    rc->open_handles = 2;
    start_connect(rc);
    *rcp = rc;
    return 0;
}

static void timer_closed(uv_handle_t *h)
{
    struct redis_client *rc = h->data;
    if (--rc->open_handles == 0) {
        free(rc->client_name);
        explicit_bzero(&rc->url, sizeof(rc->url));
        free(rc);
    }
}

void redis_client_close(struct redis_client *rc)
{
    if (!rc || rc->closing)
        return;
    rc->closing = true;
    if (rc->ac) {
        rc->ac->data = NULL;
        /* Pending callbacks run now, with NULL replies ("client is closing"). */
        redisAsyncContext *ac = rc->ac;
        rc->ac = NULL;
        redisAsyncFree(ac);
    }
    uv_close((uv_handle_t *)&rc->deadline_timer, timer_closed);
    uv_close((uv_handle_t *)&rc->reconnect_timer, timer_closed);
}

bool redis_client_ready(const struct redis_client *rc)
{
    return rc && rc->ready && rc->ac && !rc->closing;
}

const struct mi_err *redis_client_last_error(const struct redis_client *rc)
{
    return &rc->last_err;
}

/* A new pending-command record for a user call; NULL on ENOMEM. */
static struct rcmd *cmd_new(struct redis_client *rc, int64_t timeout_ms, redis_reply_fn cb,
                            void *ctx)
{
    struct rcmd *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->rc = rc;
    c->cb = cb;
    c->ctx = ctx;
    c->timeout_ms = timeout_ms;
    return c;
}

int redis_client_command(struct redis_client *rc, int64_t timeout_ms, redis_reply_fn cb,
                         void *ctx, int argc, const char *const *argv, const size_t *argvlen)
{
    if (!redis_client_ready(rc))
        return REDIS_E_NOTREADY;
    struct rcmd *c = cmd_new(rc, timeout_ms, cb, ctx);
    if (!c)
        return -ENOMEM;
    int r = send_cmd(rc, c, argc, argv, argvlen);
    if (r)
        free(c);
    return r;
}

int redis_client_script(struct redis_client *rc, const struct redis_script *script,
                        int64_t timeout_ms, redis_reply_fn cb, void *ctx, int nkeys,
                        int argc, const char *const *argv, const size_t *argvlen)
{
    if (!redis_client_ready(rc))
        return REDIS_E_NOTREADY;
    struct rcmd *c = cmd_new(rc, timeout_ms, cb, ctx);
    if (!c)
        return -ENOMEM;
    c->script = script;
    c->argc = argc + 3;
    c->argv = calloc((size_t)c->argc, sizeof(char *));
    c->argvlen = calloc((size_t)c->argc, sizeof(size_t));
    if (!c->argv || !c->argvlen)
        goto oom;
    char nk[16];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    const char *head[3] = { "EVALSHA", script->sha, nk };
    for (int i = 0; i < c->argc; i++) {
        const char *s = i < 3 ? head[i] : argv[i - 3];
        size_t n = i < 3 ? strlen(head[i]) : argvlen[i - 3];
        c->argv[i] = malloc(n + 1);
        if (!c->argv[i])
            goto oom;
        memcpy(c->argv[i], s, n);
        c->argv[i][n] = '\0';
        c->argvlen[i] = n;
    }
    int r = send_cmd(rc, c, c->argc, (const char *const *)c->argv, c->argvlen);
    if (r) {
        cmd_free(c);
        return r;
    }
    return 0;
oom:
    cmd_free(c);
    return -ENOMEM;
}
