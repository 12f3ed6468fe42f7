/* media-backfill's pure helpers: --since/--until times, job ids, the cursor fingerprint. */
#include "tap.h"

#include <stdint.h>
#include <stdlib.h>

#include "bfutil.h"
#include "bullmq.h"

static void test_time(void)
{
    struct mi_err err = MI_ERR_INIT;
    const int64_t now = 1714564800000LL; /* 2024-05-01T12:00:00Z */
    int64_t t = 0;
    TAP_EQ_INT(bf_parse_time("2024-05-01", now, &t, &err), 0);
    TAP_EQ_INT(t, 1714521600000LL);
    TAP_EQ_INT(bf_parse_time("2024-05-01T12:00:00Z", now, &t, &err), 0);
    TAP_EQ_INT(t, now);
    TAP_EQ_INT(bf_parse_time("2024-05-01 12:00:00", now, &t, &err), 0);
    TAP_EQ_INT(t, now);
    TAP_EQ_INT(bf_parse_time("2024-05-01T12:00", now, &t, &err), 0);
    TAP_EQ_INT(t, now);
    TAP_EQ_INT(bf_parse_time("2024-05-01T14:00:00+02:00", now, &t, &err), 0);
    TAP_EQ_INT(t, now);
    TAP_EQ_INT(bf_parse_time("2024-05-01T06:30:00-0530", now, &t, &err), 0);
    TAP_EQ_INT(t, now);
    TAP_EQ_INT(bf_parse_time("2024-05-01T12:00:00.250Z", now, &t, &err), 0);
    TAP_EQ_INT(t, now + 250);
    TAP_EQ_INT(bf_parse_time("2024-05-01T12:00:00.1234567", now, &t, &err), 0);
    TAP_EQ_INT(t, now + 123);
    TAP_EQ_INT(bf_parse_time("1970-01-01", now, &t, &err), 0);
    TAP_EQ_INT(t, 0);
    TAP_EQ_INT(bf_parse_time("2000-02-29", now, &t, &err), 0);
    TAP_EQ_INT(t, 951782400000LL);
    TAP_EQ_INT(bf_parse_time("now", now, &t, &err), 0);
    TAP_EQ_INT(t, now);
    TAP_EQ_INT(bf_parse_time("30d ago", now, &t, &err), 0);
    TAP_EQ_INT(t, now - 30LL * 86400000);
    TAP_EQ_INT(bf_parse_time("30d", now, &t, &err), 0);
    TAP_EQ_INT(t, now - 30LL * 86400000);
    TAP_EQ_INT(bf_parse_time("12h ago", now, &t, &err), 0);
    TAP_EQ_INT(t, now - 12LL * 3600000);
    TAP_EQ_INT(bf_parse_time("1500ms", now, &t, &err), 0);
    TAP_EQ_INT(t, now - 1500);
    const char *bad[] = { "", "yesterday", "2024-13-01", "2024-02-30", "2023-02-29",
                          "2024-05-01T24:00", "2024-05-01T12", "2024-05-01T12:00:00.",
                          "2024-05-01T12:00:00+2", "2024-5-1", "30 days ago", "30d  ago",
                          "-30d", "ago", "2024-05-01x", "99999999999d" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mi_err_clear(&err);
        TAP_EQ_INT(bf_parse_time(bad[i], now, &t, &err), 2);
        TAP_CHECK(err.msg[0] != '\0');
    }
}

static void test_job_id(void)
{
    char id[BF_JOB_ID_MAX], id2[BF_JOB_ID_MAX];
    struct mi_err err = MI_ERR_INIT;
    TAP_EQ_INT(bf_job_id("1234", "2087129492123864", id), 0);
    TAP_EQ_STR(id, "media-1234-2087129492123864");
    TAP_EQ_INT(bmq_validate_job_id(id, &err), 0);
    /* uuid ids keep the readable form: the last '-' separates the parts. */
    TAP_EQ_INT(bf_job_id("0b6f2c1e-8d3a-4f3b-9a65-1c2d3e4f5a6b", "wamid.HBg", id), 0);
    TAP_EQ_STR(id, "media-0b6f2c1e-8d3a-4f3b-9a65-1c2d3e4f5a6b-wamid.HBg");
    /* ("a-b", "c") and ("a", "b-c") must not share an id. */
    TAP_EQ_INT(bf_job_id("a-b", "c", id), 0);
    TAP_EQ_INT(bf_job_id("a", "b-c", id2), 1);
    TAP_CHECK(strcmp(id, id2) != 0);
    /* ':' and other characters: hashed, deterministic, valid for BullMQ. */
    TAP_EQ_INT(bf_job_id("12", "abc:def", id), 1);
    TAP_EQ_INT((int)strlen(id), 6 + 64);
    TAP_CHECK(!strncmp(id, "media_", 6));
    TAP_CHECK(!strchr(id, ':'));
    TAP_EQ_INT(bmq_validate_job_id(id, &err), 0);
    TAP_EQ_INT(bf_job_id("12", "abc:def", id2), 1);
    TAP_EQ_STR(id, id2);
    TAP_EQ_INT(bf_job_id("1", "2abc:def", id2), 1);
    TAP_CHECK(strcmp(id, id2) != 0);
    /* Too long for the readable form. */
    char longp[300];
    memset(longp, '7', sizeof(longp) - 1);
    longp[sizeof(longp) - 1] = '\0';
    TAP_EQ_INT(bf_job_id("1", longp, id), 1);
    TAP_EQ_INT(bmq_validate_job_id(id, &err), 0);
    longp[200 - 8] = '\0'; /* "media-1-" + 192 = 200 */
    TAP_EQ_INT(bf_job_id("1", longp, id), 0);
    TAP_EQ_INT((int)strlen(id), 200);
    /* Non-ASCII and empty parts are hashed. */
    TAP_EQ_INT(bf_job_id("1", "caf\xc3\xa9", id), 1);
    TAP_EQ_INT(bf_job_id("", "x", id), 1);
    TAP_EQ_INT(bmq_validate_job_id(id, &err), 0);
}

static void test_filters(void)
{
    char f[128];
    TAP_CHECK(bf_filters(f, sizeof(f), "30d ago", NULL, 604800000, false));
    TAP_EQ_STR(f, "since=30d ago;until=-;max_age=604800000;include_expired=0");
    TAP_CHECK(bf_filters(f, sizeof(f), NULL, "2024-05-01", 1000, true));
    TAP_EQ_STR(f, "since=-;until=2024-05-01;max_age=1000;include_expired=1");
    TAP_CHECK(!bf_filters(f, 10, NULL, NULL, 1, false));
}

int main(void)
{
    test_time();
    test_job_id();
    test_filters();
    return tap_done();
}
