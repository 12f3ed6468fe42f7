#include "tap.h"

#include <stdlib.h>
#include <unistd.h>

#include <jansson.h>
#include <string.h>

#include "log.h"

/* Write one record to a temporary file and read the line back. */
static char *emit(const char *format, const char *val)
{
    FILE *f = tmpfile();
    struct mi_log *log = NULL;
    struct mi_err err = MI_ERR_INIT;
    if (log_new(&log, "info", format, f, &err))
        return NULL;
    struct log_rec r;
    if (log_begin(&r, log, LOG_INFO, "hello")) {
        log_str(&r, "v", val);
        log_int(&r, "n", 42);
        log_end(&r);
    }
    log_free(log);
    static char line[4096];
    rewind(f);
    if (!fgets(line, sizeof(line), f))
        line[0] = '\0';
    fclose(f);
    return line;
}

int main(void)
{
    struct mi_log *log = NULL;
    struct mi_err err = MI_ERR_INIT;
    TAP_EQ_INT(log_new(&log, "loud", NULL, stderr, &err), 1);
    TAP_CHECK(strstr(err.msg, "LOG_LEVEL=loud") != NULL);
    TAP_EQ_INT(log_new(&log, NULL, "xml", stderr, &err), 1);
    TAP_CHECK(strstr(err.msg, "LOG_FORMAT") != NULL);

    TAP_EQ_INT(log_new(&log, "warn", NULL, stderr, &err), 0);
    TAP_CHECK(!log_enabled(log, LOG_INFO));
    TAP_CHECK(log_enabled(log, LOG_ERROR));
    log_free(log);

    char *l = emit("logfmt", "plain");
    TAP_CHECK(strstr(l, " level=info msg=hello v=plain n=42\n") != NULL);
    l = emit("logfmt", "two words \"q\"\nx");
    TAP_CHECK(strstr(l, "v=\"two words \\\"q\\\"\\nx\"") != NULL);
    l = emit("json", "a\"b");
    TAP_CHECK(strstr(l, "\"msg\":\"hello\",\"v\":\"a\\\"b\",\"n\":42}\n") != NULL);
    TAP_CHECK(l[0] == '{');

    /* A value longer than a record: cut, still one parseable line, marked truncated. */
    {
        static char big[3001];
        for (int k = 0; k < 2; k++) {
            /* letters with one quote near the cut, then quotes only (escapes cut mid-pair) */
            memset(big, k ? '"' : 'a', 3000);
            big[2990] = '"';
            l = emit("json", big);
            size_t n = strlen(l);
            TAP_CHECK(n < LOG_REC_MAX && n > 1000 && l[n - 1] == '\n');
            json_error_t je;
            json_t *j = json_loads(l, 0, &je);
            TAP_CHECK(j != NULL);
            if (!j)
                printf("# not JSON (%s): ...%s", je.text, l + n - 40);
            TAP_CHECK(json_is_true(json_object_get(j, "truncated")));
            TAP_CHECK(json_is_string(json_object_get(j, "v")));
            TAP_CHECK(json_object_get(j, "n") == NULL);   /* nothing after the cut */
            json_decref(j);
        }
        memset(big, 'a', 3000);
        l = emit("logfmt", big);
        TAP_CHECK(strstr(l, " truncated=true\n") != NULL);
        TAP_CHECK(strstr(l, " n=42") == NULL);
    }
    return tap_done();
}
