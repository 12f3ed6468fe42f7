/*
 * test-objkey.c - object keys and stored URLs, with hostile inputs.
 */
#include <errno.h>
#include <string.h>

#include "objkey.h"
#include "tap.h"

static void test_ids(void)
{
    char id[300];

    TAP_EQ_INT(objkey_validate_id(OBJKEY_MESSAGE_ID, "1234", NULL), 0);
    TAP_EQ_INT(objkey_validate_id(OBJKEY_MESSAGE_ID, "clx9ab_Z-09", NULL), 0);
    TAP_EQ_INT(objkey_validate_id(OBJKEY_MEDIA_ID, "2087129492123864", NULL), 0);
    TAP_EQ_INT(objkey_validate_id(OBJKEY_MEDIA_ID, "wamid.HBg_x-1", NULL), 0);

    static const char *const bad_msg[] = {
        "", "12.3", "1/2", "..", "a b", "1%2e", "\xc3\xa9", "1\n", "a\\b", "-1;DROP",
    };
    for (size_t i = 0; i < sizeof(bad_msg) / sizeof(bad_msg[0]); i++)
        TAP_EQ_INT(objkey_validate_id(OBJKEY_MESSAGE_ID, bad_msg[i], NULL), OBJKEY_E_INVALID);
    TAP_EQ_INT(objkey_validate_id(OBJKEY_MESSAGE_ID, NULL, NULL), OBJKEY_E_INVALID);

    static const char *const bad_media[] = {
        "", ".", "..", ".hidden", "a/b", "a\\b", "%2e%2e", "a\x01", "a b", "x?y", "x#y",
    };
    for (size_t i = 0; i < sizeof(bad_media) / sizeof(bad_media[0]); i++)
        TAP_EQ_INT(objkey_validate_id(OBJKEY_MEDIA_ID, bad_media[i], NULL), OBJKEY_E_INVALID);

    /* Length limits: 128 and 256 are fine, one more is not. */
    memset(id, '7', sizeof(id));
    id[128] = '\0';
    TAP_EQ_INT(objkey_validate_id(OBJKEY_MESSAGE_ID, id, NULL), 0);
    id[128] = '7';
    id[129] = '\0';
    TAP_EQ_INT(objkey_validate_id(OBJKEY_MESSAGE_ID, id, NULL), OBJKEY_E_INVALID);
    id[129] = '7';
    id[256] = '\0';
    TAP_EQ_INT(objkey_validate_id(OBJKEY_MEDIA_ID, id, NULL), 0);
    id[256] = '7';
    id[257] = '\0';
    TAP_EQ_INT(objkey_validate_id(OBJKEY_MEDIA_ID, id, NULL), OBJKEY_E_INVALID);
}

static void test_build(void)
{
    char key[OBJKEY_BUF];
    struct mi_err err = MI_ERR_INIT;

    TAP_EQ_INT(objkey_build("1234", "2087129492123864", key, &err), 0);
    TAP_EQ_STR(key, "media/1234/2087129492123864");
    TAP_EQ_INT(objkey_validate(key, NULL), 0);
    TAP_EQ_INT(objkey_build("1234", "../../etc/passwd", key, &err), OBJKEY_E_INVALID);
    TAP_EQ_STR(key, "");
    TAP_CHECK(strstr(err.msg, "providerMediaId") != NULL);
    TAP_EQ_INT(objkey_build("../1", "x", key, &err), OBJKEY_E_INVALID);
    TAP_CHECK(strstr(err.msg, "messageId") != NULL);
    TAP_EQ_INT(objkey_build(NULL, "x", key, NULL), OBJKEY_E_INVALID);
}

static void test_validate_hostile(void)
{
    static const char *const bad[] = {
        "", "/", "media", "media/", "media/1", "media/1/", "media//x", "media/1//x",
        "/media/1/x", "/etc/passwd", "media/1/x/", "media/1/x/y", "media/../x",
        "media/1/..", "media/1/.", "media/./x", "media/1/../../etc", "../media/1/x",
        "media\\1\\x", "media/1\\..\\x", "media/%2e%2e/x", "media/1/%2e%2e",
        "media%2f1%2fx", "media/1/x%00", "media/1/x%2500", "media/1/x\n", "media/1/x\r",
        "media/1/\x7f", "media/1/\x1b[31m", "MEDIA/1/x", "other/1/x", "mediax/1/x",
        "media/1 /x", "media/1/x y", "media/\xc3\xa9/x", "media/1/.hidden",
        "media/1.5/x", "media/1/x?a=b", "media/1/x#f", "s3://b/media/1/x", "media/1/~x",
    };
    struct mi_err err = MI_ERR_INIT;
    char big[OBJKEY_MAX + 64];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mi_err_clear(&err);     /* each key must bring its own message */
        int r = objkey_validate(bad[i], &err);

        TAP_EQ_INT(r, OBJKEY_E_INVALID);
        if (r != OBJKEY_E_INVALID)
            printf("#   accepted key #%zu\n", i);
        TAP_CHECK(err.msg[0] != '\0');
    }
    TAP_EQ_INT(objkey_validate(NULL, &err), OBJKEY_E_INVALID);

    /* Messages explain the specific trick. */
    objkey_validate("media/1/..", &err);
    TAP_CHECK(strstr(err.msg, "'..'") != NULL);
    objkey_validate("media/%2e%2e/x", &err);
    TAP_CHECK(strstr(err.msg, "percent") != NULL);
    objkey_validate("media\\1", &err);
    TAP_CHECK(strstr(err.msg, "backslash") != NULL);
    objkey_validate("/media/1/x", &err);
    TAP_CHECK(strstr(err.msg, "absolute") != NULL);
    objkey_validate("media/1/x\x1b", &err);
    TAP_CHECK(strstr(err.msg, "control") != NULL && strchr(err.msg, '\x1b') == NULL);

    /* An embedded NUL (from JSON "\u0000") must not truncate into a valid key. */
    TAP_EQ_INT(objkey_validate_n("media/1/x\0/../../etc", 20, &err), OBJKEY_E_INVALID);
    TAP_CHECK(strstr(err.msg, "NUL") != NULL);
    TAP_EQ_INT(objkey_validate_n("media/1/x", 9, &err), 0);

    /* Overlong keys are refused even when every byte is fine. */
    memcpy(big, "media/1/", 8);
    memset(big + 8, 'a', sizeof(big) - 9);
    big[sizeof(big) - 1] = '\0';
    TAP_EQ_INT(objkey_validate(big, &err), OBJKEY_E_INVALID);
    TAP_CHECK(strstr(err.msg, "long") != NULL);

    TAP_EQ_INT(objkey_validate("media/1/2087129492123864", NULL), 0);
    TAP_EQ_INT(objkey_validate("media/clx_a-1/wamid.HBg-x_1", NULL), 0);
}

static void test_url_format(void)
{
    char out[512];
    struct mi_err err = MI_ERR_INIT;

    TAP_EQ_INT(objkey_url_format(OBJKEY_S3, "media-bucket", "media/1/x", out, sizeof(out),
                                 &err), 0);
    TAP_EQ_STR(out, "s3://media-bucket/media/1/x");
    TAP_EQ_INT(objkey_url_format(OBJKEY_R2, "b", "media/1/x", out, sizeof(out), &err), 0);
    TAP_EQ_STR(out, "r2://b/media/1/x");
    TAP_EQ_INT(objkey_url_format(OBJKEY_FILE, "/srv/cache/", "media/1/x", out, sizeof(out),
                                 &err), 0);
    TAP_EQ_STR(out, "file:///srv/cache/media/1/x");
    TAP_EQ_INT(objkey_url_format(OBJKEY_FILE, "/", "media/1/x", out, sizeof(out), &err), 0);
    TAP_EQ_STR(out, "file:///media/1/x");
    TAP_EQ_INT(objkey_url_format(OBJKEY_FILE, ".media-cache", "media/1/x", out, sizeof(out),
                                 &err), 0);
    TAP_EQ_STR(out, "file://.media-cache/media/1/x");

    TAP_EQ_INT(objkey_url_format(OBJKEY_S3, "b", "media/../x", out, sizeof(out), &err),
               OBJKEY_E_INVALID);
    TAP_EQ_STR(out, "");
    TAP_EQ_INT(objkey_url_format(OBJKEY_S3, "b/c", "media/1/x", out, sizeof(out), &err),
               OBJKEY_E_INVALID);
    TAP_EQ_INT(objkey_url_format(OBJKEY_S3, "", "media/1/x", out, sizeof(out), &err),
               OBJKEY_E_INVALID);
    TAP_EQ_INT(objkey_url_format(OBJKEY_S3, NULL, "media/1/x", out, sizeof(out), &err),
               OBJKEY_E_INVALID);
    TAP_EQ_INT(objkey_url_format(OBJKEY_FILE, "/a\nb", "media/1/x", out, sizeof(out), &err),
               OBJKEY_E_INVALID);
    TAP_EQ_INT(objkey_url_format(OBJKEY_S3, "b", "media/1/x", out, 16, &err), -ENOSPC);
    TAP_EQ_INT(objkey_url_format(OBJKEY_S3, "b", "media/1/x", out, 17, &err), 0);
    TAP_EQ_STR(out, "s3://b/media/1/x");
}

static void test_url_parse(void)
{
    struct objkey_url u;
    struct mi_err err = MI_ERR_INIT;

    TAP_EQ_INT(objkey_url_parse("s3://media-bucket/media/1234/2087", &u, &err), 0);
    TAP_EQ_INT(u.scheme, OBJKEY_S3);
    TAP_EQ_STR(u.where, "media-bucket");
    TAP_EQ_STR(u.key, "media/1234/2087");
    TAP_EQ_INT(objkey_url_parse("r2://b/media/1/x", &u, &err), 0);
    TAP_EQ_INT(u.scheme, OBJKEY_R2);
    TAP_EQ_STR(u.where, "b");
    TAP_EQ_INT(objkey_url_parse("file:///srv/media/media/1/x.jpg", &u, &err), 0);
    TAP_EQ_INT(u.scheme, OBJKEY_FILE);
    TAP_EQ_STR(u.where, "/srv/media");
    TAP_EQ_STR(u.key, "media/1/x.jpg");
    TAP_EQ_INT(objkey_url_parse("file://.media-cache/media/1/x", &u, &err), 0);
    TAP_EQ_STR(u.where, ".media-cache");
    TAP_EQ_INT(objkey_url_parse("file:///media/1/x", &u, &err), 0);
    TAP_EQ_STR(u.where, "/");
    TAP_EQ_STR(u.key, "media/1/x");

    static const char *const bad[] = {
        "", "s3:/b/media/1/x", "S3://b/media/1/x", "http://b/media/1/x", "s3://",
        "s3://b", "s3://b/", "s3:///media/1/x", "s3://b/media/1", "s3://b/media/1/x/",
        "s3://b/media/../x", "s3://b/media/1/%2e%2e", "s3://b/other/1/x",
        "s3://b c/media/1/x", "s3://.b/media/1/x", "s3://b/media/1/x\n",
        "r2://b//media/1/x", "file://media/1/x", "file://", "file:///d/media/1/..",
        "file:///d/other/1/x", "file:///d\n/media/1/x", "file:///d/media/1/x/",
        "file:///d/media/1\\x", "file:///d/media/1/x y", "s3://b/media/1/x?versionId=1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r = objkey_url_parse(bad[i], &u, &err);

        TAP_EQ_INT(r, OBJKEY_E_INVALID);
        if (r != OBJKEY_E_INVALID)
            printf("#   accepted url #%zu\n", i);
        TAP_CHECK(u.key[0] == '\0' && u.where[0] == '\0');
    }
    TAP_EQ_INT(objkey_url_parse(NULL, &u, &err), OBJKEY_E_INVALID);

    /* Round trip of what format makes. */
    {
        char out[512];

        TAP_EQ_INT(objkey_url_format(OBJKEY_FILE, "/var/lib/mi", "media/9/y.z", out,
                                     sizeof(out), NULL), 0);
        TAP_EQ_INT(objkey_url_parse(out, &u, NULL), 0);
        TAP_EQ_STR(u.where, "/var/lib/mi");
        TAP_EQ_STR(u.key, "media/9/y.z");
    }
    TAP_EQ_STR(objkey_scheme_name(OBJKEY_R2), "r2");
}

int main(void)
{
    test_ids();
    test_build();
    test_validate_hostile();
    test_url_format();
    test_url_parse();
    return tap_done();
}
