/*
 * redis.h - one Redis connection on the libuv loop (hiredis 0.14 async underneath).
 *
 * The module owns its loop glue because Debian's hiredis 0.14 libuv adapter has no
 * timeouts and drops socket errors. It gives:
 *   - a connect deadline and a per-command deadline (an expired command fails with a
 *     timeout error and the connection is dropped and re-made, since a Redis reply
 *     stream cannot skip one reply);
 *   - AUTH, SELECT and CLIENT SETNAME on every (re)connect;
 *   - reconnect with exponential backoff and jitter, reported through a state callback;
 *   - Lua scripts called by EVALSHA and re-loaded on NOSCRIPT (after a Redis restart).
 *
 * Reply callbacks are called exactly once: with the reply (borrowed, valid only during
 * the callback; an error reply is a reply) or with reply NULL and @err set.
 */
#ifndef MI_REDIS_H
#define MI_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "err.h"
#include "rurl.h"

enum {
    REDIS_E_NOTREADY = 1,   /* not connected right now; the callback is not called */
};

struct redis_client;

/* A Lua script; redis_script_init() computes its SHA1 for EVALSHA. */
struct redis_script {
    const char *name;
    const char *src;
    char sha[41];
};

typedef void (*redis_reply_fn)(void *ctx, const redisReply *reply, const struct mi_err *err);
/* Called on every change: ready (handshake done) or not (with the reason in @err). */
typedef void (*redis_state_fn)(void *ctx, bool ready, const struct mi_err *err);

struct redis_opts {
    const struct rurl *url;          /* copied */
    const char *client_name;         /* CLIENT SETNAME value, may be NULL; copied */
    int64_t connect_timeout_ms;      /* 0: 5000 */
    int64_t command_timeout_ms;      /* default per-command deadline; 0: 10000 */
};

void redis_script_init(struct redis_script *s, const char *name, const char *src);

/**
 * redis_client_new() - create a client and start connecting.
 * @state_cb: may be NULL. Return: 0 or -ENOMEM / uv error.
 */
int redis_client_new(struct redis_client **rcp, uv_loop_t *loop, const struct redis_opts *opts,
                     redis_state_fn state_cb, void *state_ctx, struct mi_err *err) MI_MUSTCHECK;

/**
 * redis_client_close() - stop reconnecting, fail pending commands ("client closing")
 * and free the client once its libuv handles have closed (run the loop). NULL ok.
 */
void redis_client_close(struct redis_client *rc);

bool redis_client_ready(const struct redis_client *rc);

/**
 * redis_client_command() - send one command given as an argument vector.
 * @timeout_ms: 0 means the client's default deadline.
 * Return: 0 (callback will be called), REDIS_E_NOTREADY, or -ENOMEM (no callback).
 */
int redis_client_command(struct redis_client *rc, int64_t timeout_ms, redis_reply_fn cb,
                         void *ctx, int argc, const char *const *argv,
                         const size_t *argvlen) MI_MUSTCHECK;

/**
 * redis_client_script() - EVALSHA @script with @nkeys keys followed by the other args
 * in @argv; on NOSCRIPT the script is loaded and the call repeated once.
 * Return: as redis_client_command().
 */
int redis_client_script(struct redis_client *rc, const struct redis_script *script,
                        int64_t timeout_ms, redis_reply_fn cb, void *ctx, int nkeys,
                        int argc, const char *const *argv, const size_t *argvlen) MI_MUSTCHECK;

/** redis_client_last_error() - why the client is not ready (borrowed). */
const struct mi_err *redis_client_last_error(const struct redis_client *rc);

#endif
