/* Tests for the field-value decoders: percent-decoding, host[:port] splitting as proxies send it,
 * and comma-separated list iteration. */
#include <stdlib.h>

#include "http/http.h"
#include "runner.h"

static void check_decode(const char *in, const char *want, size_t want_len) {
    size_t n = strlen(in);
    char *out = malloc(n ? n : 1); /* exact size: ASan catches a write past it */
    size_t got = cc_http_percent_decode(in, n, out);
    CHECK_MSG(got == want_len && memcmp(out, want, want_len) == 0, "decoding %s", in);
    free(out);
}

TEST(percent_decoding) {
    check_decode("/plain", "/plain", 6);
    check_decode("/a%20b", "/a b", 4);
    check_decode("/caf%C3%a9", "/caf\xc3\xa9", 6);
    check_decode("/%2F%2f", "///", 3);
    check_decode("/x%00y", "/x\0y", 4);
    check_decode("%zz%4", "%zz%4", 5); /* not two hex digits: kept */
    check_decode("%", "%", 1);
    check_decode("%4", "%4", 2);
    check_decode("%41%", "A%", 2);
    check_decode("", "", 0);
}

static void check_host(const char *in, const char *host, long port) {
    const char *h;
    size_t hl;
    long p;
    cc_http_split_host_port(in, strlen(in), &h, &hl, &p);
    CHECK_MSG(hl == strlen(host) && memcmp(h, host, hl) == 0 && p == port,
              "%s -> '%.*s' %ld, want '%s' %ld", in, (int)hl, h, p, host, port);
}

TEST(host_port_splitting) {
    check_host("203.0.113.7", "203.0.113.7", 0);
    check_host("203.0.113.7:8080", "203.0.113.7", 8080);
    check_host("example.com:0", "example.com", 0);
    check_host("[2001:db8::1]", "2001:db8::1", 0);
    check_host("[2001:db8::1]:443", "2001:db8::1", 443);
    check_host("2001:db8::1", "2001:db8::1", 0); /* bare IPv6: all host */
    check_host("host:port", "host:port", 0);     /* not a port: all host */
    check_host("host:+80", "host:+80", 0);
    check_host("host:65536", "host:65536", 0);
    check_host("host:123456", "host:123456", 0);
    check_host("host:", "host:", 0);
    check_host("[::1]x", "[::1]x", 0);
    check_host("[::1]:", "::1", 0);
    check_host("[::1", "[::1", 0);
    check_host("", "", 0);
}

static int list_items(const char *in, const char **want, size_t nwant) {
    const char *pos = in, *end = in + strlen(in), *item;
    size_t n, k = 0;
    while (cc_http_list_next(&pos, end, &item, &n)) {
        if (k >= nwant || n != strlen(want[k]) || memcmp(item, want[k], n))
            return 0;
        k++;
    }
    return k == nwant && pos == end;
}

TEST(list_iteration) {
    const char *a[] = {"chat", "superchat", "v2.json"};
    CHECK(list_items("chat, superchat ,, \tv2.json\t", a, 3));
    CHECK(list_items(",,, ", NULL, 0));
    CHECK(list_items("", NULL, 0));
    const char *b[] = {"a b"};
    CHECK(list_items(" a b ", b, 1));
    CHECK(cc_http_list_has_token("keep-alive, Close", 17, "close", 5));
    CHECK(!cc_http_list_has_token("closed, x", 9, "close", 5));
}

RUN_TESTS(TEST_ENTRY(percent_decoding), TEST_ENTRY(host_port_splitting),
          TEST_ENTRY(list_iteration))
