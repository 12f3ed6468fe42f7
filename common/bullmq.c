#include "bullmq.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bullmq_lua.h"

enum { S_ADD, S_CLAIM, S_COUNTS, S_EXTEND, S_FINISH, S_PAUSE, S_RELEASE, S_RETRY, S_STALLED,
       S_RETRY_FAILED, S_CLEAN, S__MAX };

struct bmq {
    struct redis_client *rc;
    char *prefix;      /* "bull" */
    char *queue;       /* "media-ingest" */
    char *kp;          /* "bull:media-ingest:" */
    struct redis_script scripts[S__MAX];
};

/* One call in flight: the caller's callback plus what is needed to read the reply. */
struct call {
    struct bmq *q;
    void (*fn)(struct call *c, const redisReply *reply, const struct mi_err *err);
    void *cb;
    void *ctx;
    char token[64];
};

static const char *const script_names[S__MAX] = {
    "add", "claim", "counts", "extend_locks", "finish", "pause", "release", "retry", "stalled",
    "retry_failed", "clean",
};

bool bmq_key(char *out, size_t n, const char *prefix, const char *queue, const char *suffix)
{
    int r = snprintf(out, n, "%s:%s:%s", prefix, queue, suffix ? suffix : "");
    return r >= 0 && (size_t)r < n;
}

static const char *lua_src(const char *name)
{
    for (int i = 0; i < BMQ_LUA_COUNT; i++)
        if (!strcmp(bmq_lua_table[i].name, name))
            return bmq_lua_table[i].src;
    return NULL;
}

int bmq_new(struct bmq **qp, struct redis_client *rc, const char *prefix, const char *name,
            struct mi_err *err)
{
    struct bmq *q = calloc(1, sizeof(*q));
    if (!q)
        return mi_err_set(err, -ENOMEM, "out of memory");
    size_t n = strlen(prefix) + strlen(name) + 3;
    q->rc = rc;
    q->prefix = strdup(prefix);
    q->queue = strdup(name);
    q->kp = malloc(n);
    if (!q->prefix || !q->queue || !q->kp) {
        bmq_free(q);
        return mi_err_set(err, -ENOMEM, "out of memory");
    }
    bmq_key(q->kp, n, prefix, name, "");
    for (int i = 0; i < S__MAX; i++) {
        const char *src = lua_src(script_names[i]);
        if (!src) {
            bmq_free(q);
            return mi_err_set(err, -ENOENT, "internal: Lua script %s missing", script_names[i]);
        }
        redis_script_init(&q->scripts[i], script_names[i], src);
    }
    *qp = q;
    return 0;
}

void bmq_free(struct bmq *q)
{
    if (!q)
        return;
    free(q->prefix);
    free(q->queue);
    free(q->kp);
    free(q);
}

const char *bmq_key_prefix(const struct bmq *q)
{
    return q->kp;
}

double bmq_delayed_score(int64_t due_ms, int seq)
{
    if (seq < 0)
        seq = 0;
    if (seq > 4095)
        seq = 4095;
    return (double)due_ms * 4096.0 + seq;
}

int64_t bmq_delayed_due(double score)
{
    return (int64_t)floor(score / 4096.0);
}

void bmq_job_free(struct bmq_job *job)
{
    if (!job)
        return;
    free(job->id);
    free(job->name);
    free(job->data);
    json_decref(job->data_json);
    free(job->opts_text);
    free(job->defa);
    free(job->stacktrace);
    free(job->rjk);
    free(job->opts_error);
    free(job);
}

/* ---- options ---- */

int bmq_keep_from_json(const json_t *v, struct bmq_keep *out)
{
    out->count = -1;
    out->age_s = -1;
    out->limit = 1000;
    if (!v || json_is_null(v) || json_is_false(v))
        return 0;
    if (json_is_true(v)) {
        out->count = 0;
        return 0;
    }
    if (json_is_integer(v) || json_is_real(v)) {
        double d = json_number_value(v);
        out->count = d < 0 ? -1 : (int64_t)d;
        return 0;
    }
    if (json_is_object(v)) {
        json_t *c = json_object_get(v, "count");
        json_t *a = json_object_get(v, "age");
        json_t *l = json_object_get(v, "limit");
        if (c && json_is_number(c))
            out->count = (int64_t)json_number_value(c);
        if (a && json_is_number(a))
            out->age_s = (int64_t)json_number_value(a);
        if (l && json_is_number(l))
            out->limit = (int64_t)json_number_value(l);
        return 0;
    }
    return 1;
}

static void opts_defaults(struct bmq_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->backoff.type = MI_BACKOFF_NONE;
    o->remove_on_complete = (struct bmq_keep){ -1, -1, 1000 };
    o->remove_on_fail = (struct bmq_keep){ -1, -1, 1000 };
    o->stack_trace_limit = -1;
}

static int parse_backoff(const json_t *v, struct mi_backoff *b, struct mi_err *err)
{
    if (!v || json_is_null(v))
        return 0;
    if (json_is_number(v)) {
        b->type = MI_BACKOFF_FIXED;
        b->delay_ms = (int64_t)json_number_value(v);
        return 0;
    }
    if (!json_is_object(v))
        return mi_err_set(err, 1, "opts.backoff must be a number or an object");
    const char *type = json_string_value(json_object_get(v, "type"));
    json_t *delay = json_object_get(v, "delay");
    json_t *jitter = json_object_get(v, "jitter");
    if (!type)
        return mi_err_set(err, 1, "opts.backoff.type is missing");
    if (!strcmp(type, "fixed"))
        b->type = MI_BACKOFF_FIXED;
    else if (!strcmp(type, "exponential"))
        b->type = MI_BACKOFF_EXPONENTIAL;
    else
        return mi_err_set(err, 1, "opts.backoff.type \"%.40s\" is a custom strategy this "
                          "worker does not know (use fixed or exponential)", type);
    b->delay_ms = delay && json_is_number(delay) ? (int64_t)json_number_value(delay) : 0;
    b->jitter = jitter && json_is_number(jitter) ? json_number_value(jitter) : 0;
    return 0;
}

int bmq_parse_opts(const char *text, struct bmq_opts *out, struct mi_err *err)
{
    opts_defaults(out);
    if (!text || !*text)
        return 0;
    json_error_t je;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return mi_err_set(err, 1, "job opts are not a JSON object");
    }
    int r = 0;
    json_t *v = json_object_get(o, "attempts");
    if (v && json_is_number(v))
        out->attempts = (int64_t)json_number_value(v);
    if (parse_backoff(json_object_get(o, "backoff"), &out->backoff, err))
        r = 1;
    v = json_object_get(o, "removeOnComplete");
    out->has_remove_on_complete = v != NULL;
    if (bmq_keep_from_json(v, &out->remove_on_complete))
        r = mi_err_set(err, 1, "opts.removeOnComplete has an unknown form");
    v = json_object_get(o, "removeOnFail");
    out->has_remove_on_fail = v != NULL;
    if (bmq_keep_from_json(v, &out->remove_on_fail))
        r = mi_err_set(err, 1, "opts.removeOnFail has an unknown form");
    out->lifo = json_is_true(json_object_get(o, "lifo"));
    v = json_object_get(o, "stackTraceLimit");
    if (v && json_is_number(v))
        out->stack_trace_limit = (int64_t)json_number_value(v);
    json_decref(o);
    return r;
}

/* ---- producer ---- */

int bmq_validate_job_id(const char *id, struct mi_err *err)
{
    if (!id || !*id)
        return mi_err_set(err, 1, "job id is empty");
    if (strlen(id) > 256)
        return mi_err_set(err, 1, "job id is longer than 256 characters");
    int64_t dummy;
    if (mi_parse_i64(id, INT64_MIN, INT64_MAX, &dummy))
        return mi_err_set(err, 1, "job id \"%s\" is an integer; BullMQ refuses integer custom "
                          "ids (they collide with its counter)", id);
    if (!strcmp(id, "0") || !strncmp(id, "0:", 2))
        return mi_err_set(err, 1, "job id must not be \"0\" or start with \"0:\"");
    int colons = 0;
    for (const char *p = id; *p; p++) {
        if (*p == ':')
            colons++;
        if ((unsigned char)*p < 0x20)
            return mi_err_set(err, 1, "job id contains a control character");
    }
    if (colons && colons != 2)
        return mi_err_set(err, 1, "job id \"%s\" contains ':'; BullMQ only accepts ids with "
                          "exactly 3 ':'-separated parts", id);
    return 0;
}

static json_t *keep_json(const char *text)
{
    if (!text)
        return NULL;
    return json_loads(text, JSON_DECODE_ANY, NULL);
}

char *bmq_build_opts(const struct bmq_add_req *req, int64_t timestamp)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "attempts", json_integer(req->attempts > 0 ? req->attempts : 1));
    json_object_set_new(o, "delay", json_integer(req->delay_ms));
    if (req->priority)
        json_object_set_new(o, "priority", json_integer(req->priority));
    if (req->job_id)
        json_object_set_new(o, "jobId", json_string(req->job_id));
    if (req->lifo)
        json_object_set_new(o, "lifo", json_true());
    if (req->backoff.type != MI_BACKOFF_NONE) {
        json_t *b = json_pack("{s:s,s:I}", "type",
                              req->backoff.type == MI_BACKOFF_FIXED ? "fixed" : "exponential",
                              "delay", (json_int_t)req->backoff.delay_ms);
        if (b && req->backoff.jitter > 0)
            json_object_set_new(b, "jitter", json_real(req->backoff.jitter));
        if (b)
            json_object_set_new(o, "backoff", b);
    }
    json_t *k = keep_json(req->remove_on_complete);
    if (k)
        json_object_set_new(o, "removeOnComplete", k);
    k = keep_json(req->remove_on_fail);
    if (k)
        json_object_set_new(o, "removeOnFail", k);
    (void)timestamp;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* ---- script calls ---- */

static void on_call_reply(void *ctx, const redisReply *reply, const struct mi_err *err)
{
    struct call *c = ctx;
    struct mi_err e = MI_ERR_INIT;
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        mi_err_set(&e, -EPROTO, "Redis script error: %.200s", reply->str);
        c->fn(c, NULL, &e);
    } else {
        c->fn(c, reply, err);
    }
    free(c);
}

static int run_script(struct bmq *q, int script, struct call *c, int argc,
                      const char *const *argv, const size_t *lens, struct mi_err *err)
{
    size_t deflens[64];
    if (!lens) {
        if (argc > 64) {
            free(c);
            return mi_err_set(err, -E2BIG, "internal: too many script arguments");
        }
        for (int i = 0; i < argc; i++)
            deflens[i] = strlen(argv[i]);
        lens = deflens;
    }
    c->q = q;
    int r = redis_client_script(q->rc, &q->scripts[script], 0, on_call_reply, c, 0, argc, argv,
                                lens);
    if (r) {
        free(c);
        if (r == REDIS_E_NOTREADY)
            return mi_err_set(err, BMQ_E_NOTREADY, "Redis is not connected: %s",
                              redis_client_last_error(q->rc)->msg);
        return mi_err_set(err, r, "cannot send the %s script to Redis", script_names[script]);
    }
    return 0;
}

static struct call *call_new(void *fn, void *cb, void *ctx)
{
    struct call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->fn = fn;
    c->cb = cb;
    c->ctx = ctx;
    return c;
}

static void add_done(struct call *c, const redisReply *r, const struct mi_err *err)
{
    bmq_add_cb cb = (bmq_add_cb)c->cb;
    struct mi_err e = MI_ERR_INIT;
    if (!r) {
        cb(c->ctx, err->code ? err->code : -EIO, NULL, false, err);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        mi_err_set(&e, -EPROTO, "unexpected reply from the add script");
        cb(c->ctx, -EPROTO, NULL, false, &e);
        return;
    }
    cb(c->ctx, 0, r->element[0]->str, r->element[1]->integer == 1, NULL);
}

int bmq_add(struct bmq *q, const struct bmq_add_req *req, bmq_add_cb cb, void *ctx,
            struct mi_err *err)
{
    if (req->job_id && bmq_validate_job_id(req->job_id, err))
        return 1;
    if (req->priority < 0 || req->priority > 2097151)
        return mi_err_set(err, 1, "priority must be from 0 to 2097151");
    if (req->delay_ms < 0)
        return mi_err_set(err, 1, "delay must not be negative");
    int64_t ts = mi_now_ms();
    char *opts = bmq_build_opts(req, ts);
    struct call *c = call_new(add_done, (void *)cb, ctx);
    if (!opts || !c) {
        free(opts);
        free(c);
        return mi_err_set(err, -ENOMEM, "out of memory");
    }
    char tsb[24], delay[24], prio[24];
    snprintf(tsb, sizeof(tsb), "%lld", (long long)ts);
    snprintf(delay, sizeof(delay), "%lld", (long long)req->delay_ms);
    snprintf(prio, sizeof(prio), "%lld", (long long)req->priority);
    const char *argv[] = { q->kp, req->job_id ? req->job_id : "", req->name, tsb, req->data,
                           opts, delay, prio, req->lifo ? "1" : "0" };
    int r = run_script(q, S_ADD, c, 9, argv, NULL, err);
    free(opts);
    return r;
}

/* ---- claim ---- */

static char *dup_reply_str(const redisReply *r)
{
    return strndup(r->str, r->len);
}

static int64_t reply_i64(const redisReply *r)
{
    int64_t v = 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING && mi_parse_i64(r->str, INT64_MIN, INT64_MAX, &v))
        return v;
    return 0;
}

static int job_from_hash(struct bmq_job *job, const redisReply *h)
{
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const redisReply *k = h->element[i], *v = h->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        const char *f = k->str;
        char **dst = NULL;
        if (!strcmp(f, "name"))
            dst = &job->name;
        else if (!strcmp(f, "data"))
            dst = &job->data;
        else if (!strcmp(f, "opts"))
            dst = &job->opts_text;
        else if (!strcmp(f, "defa"))
            dst = &job->defa;
        else if (!strcmp(f, "stacktrace"))
            dst = &job->stacktrace;
        else if (!strcmp(f, "rjk"))
            dst = &job->rjk;
        else if (!strcmp(f, "timestamp"))
            job->timestamp = reply_i64(v);
        else if (!strcmp(f, "atm"))
            job->attempts_made = reply_i64(v);
        else if (!strcmp(f, "ats"))
            job->attempts_started = reply_i64(v);
        else if (!strcmp(f, "stc"))
            job->stalled_counter = reply_i64(v);
        else if (!strcmp(f, "parentKey") || !strcmp(f, "parent"))
            job->has_parent = true;
        if (dst) {
            free(*dst);
            *dst = dup_reply_str(v);
            if (!*dst)
                return -ENOMEM;
        }
    }
    if (!job->name) {
        job->name = strdup("");
        if (!job->name)
            return -ENOMEM;
    }
    if (job->data)
        job->data_json = json_loadb(job->data, strlen(job->data), JSON_REJECT_DUPLICATES, NULL);
    struct mi_err e = MI_ERR_INIT;
    if (bmq_parse_opts(job->opts_text, &job->opts, &e)) {
        job->opts_error = strdup(e.msg);
        if (!job->opts_error)
            return -ENOMEM;
    }
    return 0;
}

static void claim_done(struct call *c, const redisReply *r, const struct mi_err *err)
{
    bmq_claim_cb cb = (bmq_claim_cb)c->cb;
    struct bmq_claim_result res = { 0 };
    struct mi_err e = MI_ERR_INIT;
    if (!r) {
        cb(c->ctx, err->code ? err->code : -EIO, NULL, err);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
        mi_err_set(&e, -EPROTO, "unexpected reply from the claim script");
        cb(c->ctx, -EPROTO, NULL, &e);
        return;
    }
    res.rate_limit_ms = reply_i64(r->element[2]);
    res.next_delayed_ms = reply_i64(r->element[3]);
    if (r->element[0]->type == REDIS_REPLY_ARRAY && r->element[1]->type == REDIS_REPLY_STRING) {
        struct bmq_job *job = calloc(1, sizeof(*job));
        int rc = job ? 0 : -ENOMEM;
        if (job) {
            job->id = dup_reply_str(r->element[1]);
            snprintf(job->token, sizeof(job->token), "%s", c->token);
            rc = job->id ? job_from_hash(job, r->element[0]) : -ENOMEM;
        }
        if (rc) {
            /* The job stays active without work; its lock expires and it is re-run. */
            bmq_job_free(job);
            mi_err_set(&e, rc, "out of memory reading a claimed job");
            cb(c->ctx, rc, NULL, &e);
            return;
        }
        res.job = job;
    }
    cb(c->ctx, 0, &res, NULL);
}

int bmq_claim(struct bmq *q, const char *token, int64_t lock_ms, const char *worker_name,
              bmq_claim_cb cb, void *ctx, struct mi_err *err)
{
    struct call *c = call_new(claim_done, (void *)cb, ctx);
    if (!c)
        return mi_err_set(err, -ENOMEM, "out of memory");
    snprintf(c->token, sizeof(c->token), "%s", token);
    char ts[24], lock[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)mi_now_ms());
    snprintf(lock, sizeof(lock), "%lld", (long long)lock_ms);
    const char *argv[] = { q->kp, ts, token, lock, worker_name ? worker_name : "" };
    return run_script(q, S_CLAIM, c, 5, argv, NULL, err);
}

/* ---- finish / retry ---- */

static void done_int(struct call *c, const redisReply *r, const struct mi_err *err)
{
    bmq_done_cb cb = (bmq_done_cb)c->cb;
    struct mi_err e = MI_ERR_INIT;
    if (!r) {
        cb(c->ctx, err->code ? err->code : -EIO, err);
        return;
    }
    if (r->type != REDIS_REPLY_INTEGER) {
        mi_err_set(&e, -EPROTO, "unexpected reply from a queue script");
        cb(c->ctx, -EPROTO, &e);
        return;
    }
    cb(c->ctx, (int)r->integer, NULL);
}

static const struct bmq_keep *pick_keep(const struct bmq_keep *job_keep,
                                        const struct bmq_keep *worker_keep, bool job_has_it)
{
    return job_has_it || !worker_keep ? job_keep : worker_keep;
}

static int finish(struct bmq *q, const struct bmq_job *job, bool completed, const char *value,
                  const struct bmq_keep *keep, const char *stack, bmq_done_cb cb, void *ctx,
                  struct mi_err *err)
{
    struct call *c = call_new(done_int, (void *)cb, ctx);
    if (!c)
        return mi_err_set(err, -ENOMEM, "out of memory");
    char ts[24], count[24], age[24], limit[24], attempts[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)mi_now_ms());
    snprintf(count, sizeof(count), "%lld", (long long)keep->count);
    if (keep->age_s >= 0)
        snprintf(age, sizeof(age), "%lld", (long long)keep->age_s);
    else
        age[0] = '\0';
    snprintf(limit, sizeof(limit), "%lld", (long long)(keep->limit > 0 ? keep->limit : 1000));
    snprintf(attempts, sizeof(attempts), "%lld", (long long)job->opts.attempts);
    const char *argv[] = { q->kp, job->id, ts, job->token, completed ? "completed" : "failed",
                           value, count, age, limit, attempts, stack ? stack : "" };
    return run_script(q, S_FINISH, c, 11, argv, NULL, err);
}

int bmq_complete(struct bmq *q, const struct bmq_job *job, const char *returnvalue,
                 const struct bmq_keep *worker_keep, bmq_done_cb cb, void *ctx,
                 struct mi_err *err)
{
    const struct bmq_keep *keep = pick_keep(&job->opts.remove_on_complete, worker_keep,
                                            job->opts.has_remove_on_complete);
    return finish(q, job, true, returnvalue, keep, NULL, cb, ctx, err);
}

enum bmq_fail_outcome bmq_fail_decide(const struct bmq_job *job, bool permanent, double rnd,
                                      int64_t *delay_ms)
{
    int64_t attempts = job->opts.attempts > 0 ? job->opts.attempts : 1;
    *delay_ms = 0;
    if (permanent || job->defa || job->attempts_made + 1 >= attempts)
        return BMQ_FAILED_FINAL;
    *delay_ms = mi_backoff_delay(&job->opts.backoff, (int)(job->attempts_made + 1), rnd);
    return *delay_ms > 0 ? BMQ_RETRY_DELAYED : BMQ_RETRY_NOW;
}

/* The stacktrace array with one more entry for this attempt, trimmed to the limit. */
static char *stack_with(const struct bmq_job *job, const char *reason)
{
    json_t *arr = job->stacktrace ? json_loads(job->stacktrace, 0, NULL) : NULL;
    if (!arr || !json_is_array(arr)) {
        json_decref(arr);
        arr = json_array();
    }
    if (!arr)
        return NULL;
    char line[600];
    snprintf(line, sizeof(line), "Error: %.500s\n    at media-ingest-worker", reason);
    json_array_append_new(arr, json_string(line));
    int64_t lim = job->opts.stack_trace_limit;
    while (lim >= 0 && (int64_t)json_array_size(arr) > lim)
        json_array_remove(arr, 0);
    char *s = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    return s;
}

int bmq_fail(struct bmq *q, const struct bmq_job *job, const char *reason, bool permanent,
             const struct bmq_keep *worker_keep, enum bmq_fail_outcome *outcome,
             bmq_done_cb cb, void *ctx, struct mi_err *err)
{
    int64_t delay;
    enum bmq_fail_outcome out = bmq_fail_decide(job, permanent, mi_rand_unit(), &delay);
    char *stack = stack_with(job, reason);
    int r;
    if (!stack)
        return mi_err_set(err, -ENOMEM, "out of memory");
    if (outcome)
        *outcome = out;
    if (out == BMQ_FAILED_FINAL) {
        const struct bmq_keep *keep = pick_keep(&job->opts.remove_on_fail, worker_keep,
                                                job->opts.has_remove_on_fail);
        r = finish(q, job, false, reason, keep, stack, cb, ctx, err);
    } else {
        struct call *c = call_new(done_int, (void *)cb, ctx);
        if (!c) {
            free(stack);
            return mi_err_set(err, -ENOMEM, "out of memory");
        }
        char ts[24], d[24];
        snprintf(ts, sizeof(ts), "%lld", (long long)mi_now_ms());
        snprintf(d, sizeof(d), "%lld", (long long)delay);
        const char *argv[] = { q->kp, job->id, ts, job->token, d, reason, stack,
                               job->opts.lifo ? "1" : "0" };
        r = run_script(q, S_RETRY, c, 8, argv, NULL, err);
    }
    free(stack);
    return r;
}

int bmq_release(struct bmq *q, const struct bmq_job *job, bmq_done_cb cb, void *ctx,
                struct mi_err *err)
{
    struct call *c = call_new(done_int, (void *)cb, ctx);
    if (!c)
        return mi_err_set(err, -ENOMEM, "out of memory");
    const char *argv[] = { q->kp, job->id, job->token };
    return run_script(q, S_RELEASE, c, 3, argv, NULL, err);
}

/* ---- locks, stalls, counts, pause ---- */

static void ids_done(struct call *c, const redisReply *r, const struct mi_err *err)
{
    bmq_extend_cb cb = (bmq_extend_cb)c->cb; /* same shape as bmq_stalled_cb */
    struct mi_err e = MI_ERR_INIT;
    if (!r) {
        cb(c->ctx, err->code ? err->code : -EIO, 0, NULL, err);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
        mi_err_set(&e, -EPROTO, "unexpected reply from a queue script");
        cb(c->ctx, -EPROTO, 0, NULL, &e);
        return;
    }
    const char **ids = calloc(r->elements + 1, sizeof(char *));
    if (!ids) {
        mi_err_set(&e, -ENOMEM, "out of memory");
        cb(c->ctx, -ENOMEM, 0, NULL, &e);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING)
            ids[n++] = r->element[i]->str;
    cb(c->ctx, 0, n, ids, NULL);
    free(ids);
}

int bmq_extend_locks(struct bmq *q, size_t n, const char *const *ids,
                     const char *const *tokens, int64_t lock_ms, bmq_extend_cb cb, void *ctx,
                     struct mi_err *err)
{
    size_t argc = 2 + 2 * n;
    const char **argv = calloc(argc, sizeof(char *));
    size_t *lens = calloc(argc, sizeof(size_t));
    struct call *c = call_new(ids_done, (void *)cb, ctx);
    char lock[24];
    int r;
    if (!argv || !lens || !c) {
        free(argv);
        free(lens);
        free(c);
        return mi_err_set(err, -ENOMEM, "out of memory");
    }
    snprintf(lock, sizeof(lock), "%lld", (long long)lock_ms);
    argv[0] = q->kp;
    argv[1] = lock;
    for (size_t i = 0; i < n; i++) {
        argv[2 + 2 * i] = ids[i];
        argv[3 + 2 * i] = tokens[i];
    }
    for (size_t i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    r = run_script(q, S_EXTEND, c, (int)argc, argv, lens, err);
    free(argv);
    free(lens);
    return r;
}

int bmq_check_stalled(struct bmq *q, int64_t max_stalled, int64_t interval_ms,
                      bmq_stalled_cb cb, void *ctx, struct mi_err *err)
{
    struct call *c = call_new(ids_done, (void *)cb, ctx);
    if (!c)
        return mi_err_set(err, -ENOMEM, "out of memory");
    char ts[24], ms[24], iv[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)mi_now_ms());
    snprintf(ms, sizeof(ms), "%lld", (long long)max_stalled);
    snprintf(iv, sizeof(iv), "%lld", (long long)interval_ms);
    const char *argv[] = { q->kp, ts, ms, iv };
    return run_script(q, S_STALLED, c, 4, argv, NULL, err);
}

static void counts_done(struct call *c, const redisReply *r, const struct mi_err *err)
{
    bmq_counts_cb cb = (bmq_counts_cb)c->cb;
    struct bmq_counts k = { 0 };
    struct mi_err e = MI_ERR_INIT;
    if (!r) {
        cb(c->ctx, err->code ? err->code : -EIO, NULL, err);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 8) {
        mi_err_set(&e, -EPROTO, "unexpected reply from the counts script");
        cb(c->ctx, -EPROTO, NULL, &e);
        return;
    }
    k.active = reply_i64(r->element[0]);
    k.completed = reply_i64(r->element[1]);
    k.delayed = reply_i64(r->element[2]);
    k.failed = reply_i64(r->element[3]);
    k.prioritized = reply_i64(r->element[4]);
    k.waiting = reply_i64(r->element[5]);
    k.waiting_children = reply_i64(r->element[6]);
    k.paused = reply_i64(r->element[7]) != 0;
    cb(c->ctx, 0, &k, NULL);
}

int bmq_counts(struct bmq *q, bmq_counts_cb cb, void *ctx, struct mi_err *err)
{
    struct call *c = call_new(counts_done, (void *)cb, ctx);
    if (!c)
        return mi_err_set(err, -ENOMEM, "out of memory");
    const char *argv[] = { q->kp };
    return run_script(q, S_COUNTS, c, 1, argv, NULL, err);
}

char *bmq_counts_json(const struct bmq_counts *c)
{
    char *s = NULL;
    if (asprintf(&s, "{\"active\":%lld,\"completed\":%lld,\"delayed\":%lld,\"failed\":%lld,"
                 "\"prioritized\":%lld,\"waiting\":%lld,\"waiting-children\":%lld}",
                 (long long)c->active, (long long)c->completed, (long long)c->delayed,
                 (long long)c->failed, (long long)c->prioritized, (long long)c->waiting,
                 (long long)c->waiting_children) < 0)
        return NULL;
    return s;
}

int bmq_pause(struct bmq *q, bool pause, bmq_done_cb cb, void *ctx, struct mi_err *err)
{
    struct call *c = call_new(done_int, (void *)cb, ctx);
    if (!c)
        return mi_err_set(err, -ENOMEM, "out of memory");
    const char *argv[] = { q->kp, pause ? "pause" : "resume" };
    return run_script(q, S_PAUSE, c, 2, argv, NULL, err);
}

/* ---- retry failed, clean ---- */

static void batch_done(struct call *c, const redisReply *r, const struct mi_err *err)
{
    bmq_batch_cb cb = (bmq_batch_cb)c->cb;
    struct mi_err e = MI_ERR_INIT;
    if (!r) {
        cb(c->ctx, err->code ? err->code : -EIO, 0, 0, err);
        return;
    }
    if (r->type == REDIS_REPLY_INTEGER) {
        cb(c->ctx, 0, r->integer, r->integer, NULL);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        mi_err_set(&e, -EPROTO, "unexpected reply from a queue script");
        cb(c->ctx, -EPROTO, 0, 0, &e);
        return;
    }
    cb(c->ctx, 0, reply_i64(r->element[0]), reply_i64(r->element[1]), NULL);
}

/* The shared part of both batch scripts: ARGV 1 prefix, then @args. */
static int batch_call(struct bmq *q, int script, int64_t max, int argc, const char *const *args,
                      bmq_batch_cb cb, void *ctx, struct mi_err *err)
{
    const char *argv[5] = { q->kp };
    if (max < 1 || max > 5000)
        return mi_err_set(err, -EINVAL, "internal: batch size %lld out of 1..5000",
                          (long long)max);
    struct call *c = call_new(batch_done, (void *)cb, ctx);
    if (!c)
        return mi_err_set(err, -ENOMEM, "out of memory");
    for (int i = 0; i < argc && i < 4; i++)
        argv[1 + i] = args[i];
    return run_script(q, script, c, 1 + argc, argv, NULL, err);
}

int bmq_retry_failed(struct bmq *q, int64_t before_ms, int64_t max, bool reset_attempts,
                     bmq_batch_cb cb, void *ctx, struct mi_err *err)
{
    char ts[24], n[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)(before_ms < 0 ? 0 : before_ms));
    snprintf(n, sizeof(n), "%lld", (long long)max);
    const char *args[] = { ts, n, reset_attempts ? "1" : "0" };
    return batch_call(q, S_RETRY_FAILED, max, 3, args, cb, ctx, err);
}

int bmq_clean(struct bmq *q, bool failed, int64_t before_ms, int64_t max, bmq_batch_cb cb,
              void *ctx, struct mi_err *err)
{
    char ts[24], n[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)(before_ms < 0 ? 0 : before_ms));
    snprintf(n, sizeof(n), "%lld", (long long)max);
    const char *args[] = { failed ? "failed" : "completed", ts, n };
    return batch_call(q, S_CLEAN, max, 3, args, cb, ctx, err);
}

static void base64(const char *in, char *out, size_t outlen)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(in), o = 0;
    for (size_t i = 0; i < n && o + 5 < outlen; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
}

char *bmq_worker_client_name(const char *prefix, const char *queue, const char *worker_name)
{
    char b64[512];
    char *s = NULL;
    base64(queue, b64, sizeof(b64));
    int r = worker_name ? asprintf(&s, "%s:%s:w:%s", prefix, b64, worker_name)
                        : asprintf(&s, "%s:%s", prefix, b64);
    return r < 0 ? NULL : s;
}
