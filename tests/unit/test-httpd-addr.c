/*
 * test-httpd-addr.c - METRICS_ADDR parsing: the accepted forms and the refused ones.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "httpd.h"
#include "tap.h"

/* Parse @addr and render it back as "family host port" for comparison. */
static const char *parse(const char *addr)
{
    static char out[128];
    char host[INET6_ADDRSTRLEN];
    struct sockaddr_storage ss;
    socklen_t len = 0;
    struct mi_err err = MI_ERR_INIT;
    int rc = httpd_parse_addr(addr, &ss, &len, &err);
    if (rc) {
        snprintf(out, sizeof(out), "error %d: %s", rc, err.msg);
        return out;
    }
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        snprintf(out, sizeof(out), "6 %s %d %d", host, ntohs(s6->sin6_port),
                 len == sizeof(*s6));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        snprintf(out, sizeof(out), "4 %s %d %d", host, ntohs(s4->sin_port), len == sizeof(*s4));
    }
    return out;
}

static void refused(const char *addr, const char *why)
{
    const char *r = parse(addr);
    printf("# %s -> %s\n", addr, r);
    TAP_CHECK(!strncmp(r, "error 1: METRICS_ADDR", 21) && strstr(r, why));
}

int main(void)
{
    TAP_EQ_STR(parse("127.0.0.1:9464"), "4 127.0.0.1 9464 1");
    TAP_EQ_STR(parse(":9464"), "4 0.0.0.0 9464 1");
    TAP_EQ_STR(parse("0.0.0.0:0"), "4 0.0.0.0 0 1");
    TAP_EQ_STR(parse("localhost:80"), "4 127.0.0.1 80 1");
    TAP_EQ_STR(parse("[::1]:9464"), "6 ::1 9464 1");
    TAP_EQ_STR(parse("[::]:65535"), "6 :: 65535 1");
    TAP_EQ_STR(parse("[fe80::1:2]:1"), "6 fe80::1:2 1 1");

    refused("", "empty");
    refused("127.0.0.1", "host:port");
    refused("127.0.0.1:", "port");
    refused("127.0.0.1:65536", "port");
    refused("127.0.0.1:-1", "port");
    refused("127.0.0.1:94x", "port");
    refused("127.0.0.1: 80", "port");
    refused("::1:9464", "brackets");
    refused("[::1]9464", "[IPv6]:port");
    refused("[::1", "[IPv6]:port");
    refused("[127.0.0.1]:80", "IPv6");
    refused("example.com:80", "numeric IPv4");
    refused("1.2.3:80", "numeric IPv4");
    refused("[aaaa:bbbb:cccc:dddd:eeee:ffff:0000:1111:2222]:80", "");
    TAP_CHECK(strstr(parse(NULL), "error 1") != NULL);
    return tap_done();
}
