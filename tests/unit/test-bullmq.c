/* Pure parts of the BullMQ protocol module: key names, scores, backoff, opts, ids. */
#include "tap.h"

#include <stdlib.h>

#include "bullmq.h"

static void test_keys(void)
{
    char k[64];
    TAP_CHECK(bmq_key(k, sizeof(k), "bull", "media-ingest", "wait"));
    TAP_EQ_STR(k, "bull:media-ingest:wait");
    TAP_CHECK(bmq_key(k, sizeof(k), "{bull}", "q", ""));
    TAP_EQ_STR(k, "{bull}:q:");
    TAP_CHECK(!bmq_key(k, 8, "bull", "media-ingest", "wait"));
    char *n = bmq_worker_client_name("bull", "media-ingest", "w1");
    TAP_EQ_STR(n, "bull:bWVkaWEtaW5nZXN0:w:w1"); /* base64("media-ingest") */
    free(n);
    n = bmq_worker_client_name("bull", "ab", NULL);
    TAP_EQ_STR(n, "bull:YWI=");
    free(n);
}

static void test_scores(void)
{
    int64_t due = 1795512319364LL;
    double s = bmq_delayed_score(due, 0);
    TAP_CHECK(s == (double)due * 4096);
    TAP_EQ_INT(bmq_delayed_due(s), due);
    TAP_EQ_INT(bmq_delayed_due(bmq_delayed_score(due, 4095)), due);
    TAP_EQ_INT(bmq_delayed_due(bmq_delayed_score(due, 9999)), due); /* saturates */
    TAP_CHECK(bmq_delayed_score(due, 1) > bmq_delayed_score(due, 0));
    TAP_CHECK(bmq_delayed_score(due + 1, 0) > bmq_delayed_score(due, 4095));
}

static void test_backoff(void)
{
    struct mi_backoff exp = { MI_BACKOFF_EXPONENTIAL, 200, 0 };
    TAP_EQ_INT(mi_backoff_delay(&exp, 1, 0.5), 200);
    TAP_EQ_INT(mi_backoff_delay(&exp, 2, 0.5), 400);
    TAP_EQ_INT(mi_backoff_delay(&exp, 3, 0.5), 800);
    struct mi_backoff fixed = { MI_BACKOFF_FIXED, 1000, 0 };
    TAP_EQ_INT(mi_backoff_delay(&fixed, 5, 0.9), 1000);
    /* jitter j: floor(rnd * d * j + d * (1 - j)) */
    struct mi_backoff jit = { MI_BACKOFF_EXPONENTIAL, 1000, 0.5 };
    TAP_EQ_INT(mi_backoff_delay(&jit, 2, 0.0), 1000);
    TAP_EQ_INT(mi_backoff_delay(&jit, 2, 0.999), 1999);
    struct mi_backoff none = { MI_BACKOFF_NONE, 0, 0 };
    TAP_EQ_INT(mi_backoff_delay(&none, 1, 0.5), 0);
    /* internal retry delays stay within [d/2, d] and under the cap */
    TAP_EQ_INT(mi_retry_delay(1, 100, 5000, 0.0), 50);
    TAP_EQ_INT(mi_retry_delay(10, 100, 5000, 0.0), 2500);
    TAP_CHECK(mi_retry_delay(10, 100, 5000, 0.999) <= 5000);
}

static void test_opts(void)
{
    struct bmq_opts o;
    struct mi_err err = MI_ERR_INIT;
    TAP_EQ_INT(bmq_parse_opts("{\"attempts\":3,\"backoff\":{\"type\":\"exponential\","
                              "\"delay\":200,\"jitter\":0.5},\"removeOnComplete\":true,"
                              "\"removeOnFail\":{\"age\":3600,\"count\":10},\"lifo\":true,"
                              "\"stackTraceLimit\":2}", &o, &err), 0);
    TAP_EQ_INT(o.attempts, 3);
    TAP_EQ_INT(o.backoff.type, MI_BACKOFF_EXPONENTIAL);
    TAP_EQ_INT(o.backoff.delay_ms, 200);
    TAP_CHECK(o.backoff.jitter == 0.5);
    TAP_EQ_INT(o.remove_on_complete.count, 0);
    TAP_CHECK(o.has_remove_on_complete && o.has_remove_on_fail);
    TAP_EQ_INT(o.remove_on_fail.count, 10);
    TAP_EQ_INT(o.remove_on_fail.age_s, 3600);
    TAP_CHECK(o.lifo);
    TAP_EQ_INT(o.stack_trace_limit, 2);

    /* A bare number backoff means fixed; removeOn* as a count; false keeps all. */
    TAP_EQ_INT(bmq_parse_opts("{\"backoff\":500,\"removeOnComplete\":5,\"removeOnFail\":false}",
                              &o, &err), 0);
    TAP_EQ_INT(o.backoff.type, MI_BACKOFF_FIXED);
    TAP_EQ_INT(o.backoff.delay_ms, 500);
    TAP_EQ_INT(o.remove_on_complete.count, 5);
    TAP_EQ_INT(o.remove_on_fail.count, -1);
    TAP_EQ_INT(o.attempts, 0);

    TAP_EQ_INT(bmq_parse_opts("{\"backoff\":{\"type\":\"custom\"}}", &o, &err), 1);
    TAP_CHECK(strstr(err.msg, "custom") != NULL);
    TAP_EQ_INT(bmq_parse_opts("[1,2]", &o, &err), 1);
    TAP_EQ_INT(bmq_parse_opts("{not json", &o, &err), 1);
    TAP_EQ_INT(bmq_parse_opts(NULL, &o, &err), 0);
    TAP_EQ_INT(o.remove_on_complete.count, -1);
    TAP_CHECK(!o.has_remove_on_complete && !o.has_remove_on_fail);
}

static void test_fail_decision(void)
{
    struct bmq_job job = { 0 };
    int64_t d;
    job.opts.attempts = 3;
    job.opts.backoff = (struct mi_backoff){ MI_BACKOFF_EXPONENTIAL, 200, 0 };
    job.attempts_made = 0;
    TAP_EQ_INT(bmq_fail_decide(&job, false, 0.5, &d), BMQ_RETRY_DELAYED);
    TAP_EQ_INT(d, 200);
    job.attempts_made = 1;
    TAP_EQ_INT(bmq_fail_decide(&job, false, 0.5, &d), BMQ_RETRY_DELAYED);
    TAP_EQ_INT(d, 400);
    job.attempts_made = 2;
    TAP_EQ_INT(bmq_fail_decide(&job, false, 0.5, &d), BMQ_FAILED_FINAL);
    job.attempts_made = 0;
    TAP_EQ_INT(bmq_fail_decide(&job, true, 0.5, &d), BMQ_FAILED_FINAL);
    job.opts.backoff.type = MI_BACKOFF_NONE;
    TAP_EQ_INT(bmq_fail_decide(&job, false, 0.5, &d), BMQ_RETRY_NOW);
    job.opts.attempts = 0; /* Node's stored default: one attempt */
    TAP_EQ_INT(bmq_fail_decide(&job, false, 0.5, &d), BMQ_FAILED_FINAL);
}

static void test_ids_and_build(void)
{
    struct mi_err err = MI_ERR_INIT;
    TAP_EQ_INT(bmq_validate_job_id("media-12-abc", &err), 0);
    TAP_EQ_INT(bmq_validate_job_id("a:b:c", &err), 0);
    TAP_EQ_INT(bmq_validate_job_id("42", &err), 1);
    TAP_EQ_INT(bmq_validate_job_id("0", &err), 1);
    TAP_EQ_INT(bmq_validate_job_id("0:x", &err), 1);
    TAP_EQ_INT(bmq_validate_job_id("a:b", &err), 1);
    TAP_EQ_INT(bmq_validate_job_id("", &err), 1);
    TAP_EQ_INT(bmq_validate_job_id("a\nb", &err), 1);

    struct bmq_add_req req = { .name = "ingest", .data = "{}", .attempts = 3,
                               .backoff = { MI_BACKOFF_EXPONENTIAL, 1000, 0 },
                               .job_id = "media-1-x", .priority = 4,
                               .remove_on_complete = "{\"age\":60}" };
    char *o = bmq_build_opts(&req, 0);
    struct bmq_opts po;
    TAP_EQ_INT(bmq_parse_opts(o, &po, &err), 0);
    TAP_EQ_INT(po.attempts, 3);
    TAP_EQ_INT(po.backoff.delay_ms, 1000);
    TAP_EQ_INT(po.remove_on_complete.age_s, 60);
    TAP_CHECK(strstr(o, "\"jobId\":\"media-1-x\"") != NULL);
    TAP_CHECK(strstr(o, "\"priority\":4") != NULL);
    free(o);

    struct bmq_counts c = { 1, 2, 3, 4, 5, 6, 7, true };
    char *j = bmq_counts_json(&c);
    TAP_EQ_STR(j, "{\"active\":1,\"completed\":2,\"delayed\":3,\"failed\":4,\"prioritized\":5,"
                  "\"waiting\":6,\"waiting-children\":7}");
    free(j);
}

int main(void)
{
    test_keys();
    test_scores();
    test_backoff();
    test_opts();
    test_fail_decision();
    test_ids_and_build();
    return tap_done();
}
