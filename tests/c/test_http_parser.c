/* Table-driven tests for cc_http_parse_request: every accept and reject rule, each request also
 * parsed at every split point (every prefix must be INCOMPLETE or the same error as the whole).
 * Inputs are copied into exact-size heap buffers so ASan catches any read past len. */
#include <stdint.h>
#include <stdlib.h>

#include "http/http.h"
#include "runner.h"

#define MAXH 128

typedef struct {
    cc_http_result_t rc;
    cc_http_request_t req;
    cc_http_header_t headers[MAXH];
} parsed_t;

static cc_http_result_t parse_copy(const char *in, size_t len, const cc_http_limits_t *lim,
                                   parsed_t *out, char **keep) {
    char *buf = malloc(len ? len : 1);
    memcpy(buf, in, len);
    out->rc = cc_http_parse_request(buf, len, lim, out->headers, MAXH, &out->req);
    if (keep)
        *keep = buf;
    else
        free(buf);
    return out->rc;
}

/* Parses the whole input, then every prefix; checks the prefix invariant and that a second parse
 * of the same (already lowercased) buffer gives the same answer. Returns the full result. */
static cc_http_result_t check_splits(const char *in, size_t len, const cc_http_limits_t *lim,
                                     const char *label) {
    parsed_t full, again, pre;
    char *buf = NULL;
    parse_copy(in, len, lim, &full, &buf);
    cc_http_result_t rc2 = cc_http_parse_request(buf, len, lim, again.headers, MAXH, &again.req);
    CHECK_MSG(rc2 == full.rc, "%s: re-parse gave %d, first %d", label, rc2, full.rc);
    if (full.rc == CC_HTTP_OK)
        CHECK_MSG(again.req.head_len == full.req.head_len, "%s: re-parse head_len", label);
    free(buf);
    for (size_t k = 0; k < len; k++) {
        parse_copy(in, k, lim, &pre, NULL);
        if (full.rc == CC_HTTP_OK) {
            if (k < full.req.head_len)
                CHECK_MSG(pre.rc == CC_HTTP_INCOMPLETE, "%s: prefix %zu gave %d (%s)", label, k,
                          pre.rc, cc_http_reason(pre.rc));
            else
                CHECK_MSG(pre.rc == CC_HTTP_OK && pre.req.head_len == full.req.head_len,
                          "%s: prefix %zu past the head gave %d", label, k, pre.rc);
        } else {
            CHECK_MSG(pre.rc == CC_HTTP_INCOMPLETE || pre.rc == full.rc,
                      "%s: prefix %zu gave %d (%s), whole gave %d (%s)", label, k, pre.rc,
                      cc_http_reason(pre.rc), full.rc, cc_http_reason(full.rc));
        }
    }
    return full.rc;
}

/* ------------------------------------------------------------------ accept table */

typedef struct {
    const char *in;
    const char *method;
    const char *target;
    int minor;
    cc_http_body_t body;
    uint64_t cl;
    int keep_alive, upgrade, expect;
    size_t nheaders;
} accept_case_t;

#define H11 "Host: example.com\r\n"
static const accept_case_t accept_cases[] = {
    {"GET / HTTP/1.1\r\n" H11 "\r\n", "GET", "/", 1, CC_HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET /a?b=c HTTP/1.0\r\n\r\n", "GET", "/a?b=c", 0, CC_HTTP_BODY_NONE, 0, 0, 0, 0, 0},
    {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", "GET", "/", 0, CC_HTTP_BODY_NONE, 0, 1, 0,
     0, 1},
    {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", "GET", "/", 0, CC_HTTP_BODY_NONE, 0,
     0, 0, 0, 1},
    {"GET / HTTP/1.1\r\n" H11 "Connection: close\r\n\r\n", "GET", "/", 1, CC_HTTP_BODY_NONE, 0, 0,
     0, 0, 2},
    {"GET / HTTP/1.1\r\n" H11 "Connection: foo\r\nConnection:  CLOSE \r\n\r\n", "GET", "/", 1,
     CC_HTTP_BODY_NONE, 0, 0, 0, 0, 3},
    {"GET /chat HTTP/1.1\r\n" H11 "Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
     "GET", "/chat", 1, CC_HTTP_BODY_NONE, 0, 1, 1, 0, 3},
    {"GET / HTTP/1.1\r\n" H11 "Connection: upgrade\r\n\r\n", "GET", "/", 1, CC_HTTP_BODY_NONE, 0, 1,
     0, 0, 2},
    {"GET / HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n", "GET", "/", 1, CC_HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET / HTTP/1.1\r\nHost: [v1.x:y]\r\n\r\n", "GET", "/", 1, CC_HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET / HTTP/1.1\r\nHost: 127.0.0.1:\r\n\r\n", "GET", "/", 1, CC_HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET / HTTP/1.1\r\nHost:\r\n\r\n", "GET", "/", 1, CC_HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET / HTTP/1.1\r\nHost: My_Host-1.example~%41!$&'()*+,;=\r\n\r\n", "GET", "/", 1,
     CC_HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    /* RFC 9110 7.8: a server MUST ignore Upgrade in an HTTP/1.0 request. */
    {"GET /chat HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "GET", "/chat", 0,
     CC_HTTP_BODY_NONE, 0, 0, 0, 0, 2},
    {"GET / HTTP/1.1\r\n" H11 "Upgrade: h2c\r\n\r\n", "GET", "/", 1, CC_HTTP_BODY_NONE, 0, 1, 0, 0,
     2},
    {"POST /u HTTP/1.1\r\n" H11 "Expect: 100-Continue\r\nContent-Length: 3\r\n\r\n", "POST", "/u",
     1, CC_HTTP_BODY_LENGTH, 3, 1, 0, 1, 3},
    {"POST /u HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", "POST", "/u", 0,
     CC_HTTP_BODY_LENGTH, 3, 0, 0, 0, 2},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 0\r\n\r\n", "POST", "/", 1, CC_HTTP_BODY_NONE, 0, 1,
     0, 0, 2},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 5, 5\r\n\r\n", "POST", "/", 1, CC_HTTP_BODY_LENGTH,
     5, 1, 0, 0, 2},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 5\r\ncontent-length: 5\r\n\r\n", "POST", "/", 1,
     CC_HTTP_BODY_LENGTH, 5, 1, 0, 0, 3},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 007\r\n\r\n", "POST", "/", 1, CC_HTTP_BODY_LENGTH,
     7, 1, 0, 0, 2},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 18446744073709551615\r\n\r\n", "POST", "/", 1,
     CC_HTTP_BODY_LENGTH, UINT64_MAX, 1, 0, 0, 2},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding: chunked\r\n\r\n", "POST", "/", 1,
     CC_HTTP_BODY_CHUNKED, 0, 1, 0, 0, 2},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding:  Chunked\t\r\n\r\n", "POST", "/", 1,
     CC_HTTP_BODY_CHUNKED, 0, 1, 0, 0, 2},
    {"\r\n\r\nGET / HTTP/1.1\r\n" H11 "\r\n", "GET", "/", 1, CC_HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"M-SEARCH * HTTP/1.1\r\n" H11 "\r\n", "M-SEARCH", "*", 1, CC_HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"CONNECT example.com:443 HTTP/1.1\r\n" H11 "\r\n", "CONNECT", "example.com:443", 1,
     CC_HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET http://x.y/p?q#f HTTP/1.1\r\n" H11 "\r\n", "GET", "http://x.y/p?q#f", 1,
     CC_HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET /!\"$%&'()*+,-./0123456789:;<=>?@AZ[\\]^_`az{|}~ HTTP/1.1\r\n" H11 "\r\n", "GET",
     "/!\"$%&'()*+,-./0123456789:;<=>?@AZ[\\]^_`az{|}~", 1, CC_HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"PUT / HTTP/1.1\r\n" H11 "X-Empty:\r\nX-Ws: \t \r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n", "PUT",
     "/", 1, CC_HTTP_BODY_NONE, 0, 1, 0, 0, 4},
};

static const cc_http_header_t *find_header(const cc_http_request_t *r, const char *name) {
    for (size_t i = 0; i < r->num_headers; i++)
        if (r->headers[i].name_len == strlen(name) &&
            memcmp(r->headers[i].name, name, r->headers[i].name_len) == 0)
            return &r->headers[i];
    return NULL;
}

TEST(test_accept_table) {
    for (size_t i = 0; i < sizeof(accept_cases) / sizeof(accept_cases[0]); i++) {
        const accept_case_t *c = &accept_cases[i];
        size_t len = strlen(c->in);
        char label[32];
        snprintf(label, sizeof label, "accept[%zu]", i);
        CHECK_EQ_INT(check_splits(c->in, len, NULL, label), CC_HTTP_OK);
        parsed_t p;
        char *buf;
        if (parse_copy(c->in, len, NULL, &p, &buf) != CC_HTTP_OK) {
            CHECK_MSG(0, "%s: %s", label, cc_http_reason(p.rc));
            free(buf);
            continue;
        }
        const cc_http_request_t *r = &p.req;
        CHECK_MSG(r->method_len == strlen(c->method) &&
                      !memcmp(r->method, c->method, r->method_len),
                  "%s: method", label);
        CHECK_MSG(r->target_len == strlen(c->target) &&
                      !memcmp(r->target, c->target, r->target_len),
                  "%s: target", label);
        CHECK_MSG(r->version_minor == c->minor, "%s: minor %d", label, r->version_minor);
        CHECK_MSG(r->body == c->body, "%s: body %d", label, r->body);
        if (c->body == CC_HTTP_BODY_LENGTH)
            CHECK_MSG(r->content_length == c->cl, "%s: content_length", label);
        CHECK_MSG(r->keep_alive == (unsigned)c->keep_alive, "%s: keep_alive", label);
        CHECK_MSG(r->upgrade == (unsigned)c->upgrade, "%s: upgrade", label);
        CHECK_MSG(r->expect_continue == (unsigned)c->expect, "%s: expect", label);
        CHECK_MSG(r->num_headers == c->nheaders, "%s: %zu headers", label, r->num_headers);
        CHECK_MSG(r->head_len == len, "%s: head_len %zu of %zu", label, r->head_len, len);
        CHECK(r->headers == p.headers);
        free(buf);
    }
}

TEST(test_header_values_and_names) {
    const char *in = "GET / HTTP/1.1\r\nHOST: Example.COM\r\nX-Ws:  a \t b\t \r\nX-Empty:\r\n"
                     "X-Long: 0123456789abcdefghijklmnopqrstuvwxyz\xff\x80 \t!~end \r\n"
                     "X-Obs: caf\xc3\xa9\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\nBODY";
    parsed_t p;
    char *buf;
    CHECK_EQ_INT(parse_copy(in, strlen(in), NULL, &p, &buf), CC_HTTP_OK);
    const cc_http_request_t *r = &p.req;
    CHECK_EQ_INT(r->num_headers, 7);
    CHECK_MEM(r->headers[0].name, r->headers[0].name_len, "host");
    CHECK_MEM(r->headers[0].value, r->headers[0].value_len, "Example.COM");
    const cc_http_header_t *h = find_header(r, "x-ws");
    CHECK(h != NULL);
    if (h)
        CHECK_MEM(h->value, h->value_len, "a \t b");
    h = find_header(r, "x-empty");
    CHECK(h && h->value_len == 0);
    h = find_header(r, "x-long");
    if (h)
        CHECK_MEM(h->value, h->value_len, "0123456789abcdefghijklmnopqrstuvwxyz\xff\x80 \t!~end");
    h = find_header(r, "x-obs");
    if (h)
        CHECK_MEM(h->value, h->value_len, "caf\xc3\xa9");
    CHECK(r->upgrade);
    CHECK_MEM(r->upgrade_value, r->upgrade_len, "WebSocket");
    CHECK_EQ_INT(r->head_len, strlen(in) - 4);
    /* Names are lowercased in the caller's buffer; nothing else is touched. */
    CHECK(memcmp(buf + 16, "host: Example.COM", 17) == 0);
    free(buf);
    check_splits(in, strlen(in), NULL, "values");
}

/* ------------------------------------------------------------------ reject table */

typedef struct {
    const char *in;
    size_t len; /* 0: strlen(in) (only needed for NUL bytes) */
    cc_http_result_t rc;
} reject_case_t;

static const reject_case_t reject_cases[] = {
    /* line endings */
    {"GET / HTTP/1.1\n" H11 "\r\n", 0, CC_HTTP_E_BARE_LF},
    {"GET / HTTP/1.1\r\n"
     "Host: a\n\r\n",
     0, CC_HTTP_E_BARE_LF},
    {"GET / HTTP/1.1\r\n" H11 "\n", 0, CC_HTTP_E_BARE_LF},
    {"\nGET / HTTP/1.1\r\n" H11 "\r\n", 0, CC_HTTP_E_BARE_LF},
    {"GET / HTTP/1.1\rX" H11 "\r\n", 0, CC_HTTP_E_BARE_CR},
    {"GET / HTTP/1.1\r\n"
     "Host: a\rb\r\n\r\n",
     0, CC_HTTP_E_BARE_CR},
    {"GET / HTTP/1.1\r\n" H11 "\rx", 0, CC_HTTP_E_BARE_CR},
    {"\rGET / HTTP/1.1\r\n" H11 "\r\n", 0, CC_HTTP_E_BARE_CR},
    /* request line */
    {"GE(T / HTTP/1.1\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_METHOD},
    {"G\x80T / HTTP/1.1\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_METHOD},
    {" / HTTP/1.1\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_REQUEST_LINE},
    {"GET  / HTTP/1.1\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_REQUEST_LINE},
    {"GET /  HTTP/1.1\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_REQUEST_LINE},
    {"GET\t/ HTTP/1.1\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_REQUEST_LINE},
    {"GET /\tHTTP/1.1\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_REQUEST_LINE},
    {"GET / HTTP/1.1 \r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_REQUEST_LINE},
    {"GET /\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_REQUEST_LINE},
    {"GET\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_REQUEST_LINE},
    {"GET / x HTTP/1.1\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_VERSION},
    {"GET /\x7f HTTP/1.1\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_TARGET},
    {"GET /\x01 HTTP/1.1\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_TARGET},
    {"GET /caf\xc3\xa9 HTTP/1.1\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_TARGET},
    {"GET /0123456789abcdef0123456789\xff HTTP/1.1\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_TARGET},
    {"GET /\0 HTTP/1.1\r\n" H11 "\r\n", sizeof("GET /\0 HTTP/1.1\r\n" H11 "\r\n") - 1,
     CC_HTTP_E_BAD_TARGET},
    {"GET / http/1.1\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_VERSION},
    {"GET / HTTP/1\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_VERSION},
    {"GET / HTTP/1.10\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_VERSION},
    {"GET / HTTP/a.b\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_VERSION},
    {"GET / HTTP/1.1x\r\n" H11 "\r\n", 0, CC_HTTP_E_BAD_VERSION},
    {"GET / HTTP/1.2\r\n" H11 "\r\n", 0, CC_HTTP_E_VERSION_UNSUPPORTED},
    {"GET / HTTP/2.0\r\n" H11 "\r\n", 0, CC_HTTP_E_VERSION_UNSUPPORTED},
    {"GET / HTTP/0.9\r\n" H11 "\r\n", 0, CC_HTTP_E_VERSION_UNSUPPORTED},
    /* header names */
    {"GET / HTTP/1.1\r\n"
     "Host : a\r\n\r\n",
     0, CC_HTTP_E_WS_BEFORE_COLON},
    {"GET / HTTP/1.1\r\n"
     "Host\t: a\r\n\r\n",
     0, CC_HTTP_E_WS_BEFORE_COLON},
    {"GET / HTTP/1.1\r\n" H11 "X: a\r\n b\r\n\r\n", 0, CC_HTTP_E_OBS_FOLD},
    {"GET / HTTP/1.1\r\n"
     " Host: a\r\n\r\n",
     0, CC_HTTP_E_OBS_FOLD},
    {"GET / HTTP/1.1\r\n" H11 ": a\r\n\r\n", 0, CC_HTTP_E_BAD_HEADER_NAME},
    {"GET / HTTP/1.1\r\n" H11 "X(y: a\r\n\r\n", 0, CC_HTTP_E_BAD_HEADER_NAME},
    {"GET / HTTP/1.1\r\n" H11 "X\x80: a\r\n\r\n", 0, CC_HTTP_E_BAD_HEADER_NAME},
    {"GET / HTTP/1.1\r\n" H11 "X-No-Colon\r\n\r\n", 0, CC_HTTP_E_BAD_HEADER_NAME},
    {"GET / HTTP/1.1\r\n" H11 "\x7fX: a\r\n\r\n", 0, CC_HTTP_E_BAD_HEADER_NAME},
    /* header values */
    {"GET / HTTP/1.1\r\n" H11 "X: a\0b\r\n\r\n",
     sizeof("GET / HTTP/1.1\r\n" H11 "X: a\0b\r\n\r\n") - 1, CC_HTTP_E_BAD_HEADER_VALUE},
    {"GET / HTTP/1.1\r\n" H11 "X: a\x01"
     "b\r\n\r\n",
     0, CC_HTTP_E_BAD_HEADER_VALUE},
    {"GET / HTTP/1.1\r\n" H11 "X: a\x7f\r\n\r\n", 0, CC_HTTP_E_BAD_HEADER_VALUE},
    {"GET / HTTP/1.1\r\n" H11 "X: 0123456789abcdef0123456789\x1b\r\n\r\n", 0,
     CC_HTTP_E_BAD_HEADER_VALUE},
    {"GET / HTTP/1.1\r\n" H11 "X: \x0b\r\n\r\n", 0, CC_HTTP_E_BAD_HEADER_VALUE},
    /* Host */
    {"GET / HTTP/1.1\r\nX: a\r\n\r\n", 0, CC_HTTP_E_MISSING_HOST},
    {"GET / HTTP/1.1\r\n" H11 H11 "\r\n", 0, CC_HTTP_E_MULTIPLE_HOST},
    {"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 0, CC_HTTP_E_MULTIPLE_HOST},
    /* RFC 9112 3.2: Host = uri-host [ ":" port ]; an invalid value gets 400 like a missing one. */
    {"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.1\r\nHost: evil.com/x\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.1\r\nHost: user@evil.com\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.1\r\nHost: a?b\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.1\r\nHost: a#\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.1\r\nHost: <a>\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.1\r\nHost: \"a\"\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.1\r\nHost: caf\xc3\xa9.example\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.1\r\nHost: a:80:80\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.1\r\nHost: %4g\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.1\r\nHost: a%\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.1\r\nHost: [a/b]\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    {"GET / HTTP/1.0\r\nHost: a b\r\n\r\n", 0, CC_HTTP_E_BAD_HOST},
    /* A later syntax error still wins (the Host check waits for the whole head). */
    {"GET / HTTP/1.1\r\nHost: a b\r\nX : y\r\n\r\n", 0, CC_HTTP_E_WS_BEFORE_COLON},
    /* Content-Length */
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: abc\r\n\r\n", 0, CC_HTTP_E_BAD_CONTENT_LENGTH},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: -1\r\n\r\n", 0, CC_HTTP_E_BAD_CONTENT_LENGTH},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: +1\r\n\r\n", 0, CC_HTTP_E_BAD_CONTENT_LENGTH},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length:\r\n\r\n", 0, CC_HTTP_E_BAD_CONTENT_LENGTH},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 1 2\r\n\r\n", 0, CC_HTTP_E_BAD_CONTENT_LENGTH},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 0x10\r\n\r\n", 0, CC_HTTP_E_BAD_CONTENT_LENGTH},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 5,,5\r\n\r\n", 0, CC_HTTP_E_BAD_CONTENT_LENGTH},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 5,\r\n\r\n", 0, CC_HTTP_E_BAD_CONTENT_LENGTH},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 18446744073709551616\r\n\r\n", 0,
     CC_HTTP_E_BAD_CONTENT_LENGTH},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 99999999999999999999999\r\n\r\n", 0,
     CC_HTTP_E_BAD_CONTENT_LENGTH},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 5, 6\r\n\r\n", 0,
     CC_HTTP_E_CONFLICTING_CONTENT_LENGTH},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 0,
     CC_HTTP_E_CONFLICTING_CONTENT_LENGTH},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 7\r\nContent-Length: 007\r\n\r\n", 0,
     CC_HTTP_E_CONFLICTING_CONTENT_LENGTH},
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 7, 07\r\n\r\n", 0,
     CC_HTTP_E_CONFLICTING_CONTENT_LENGTH},
    /* Transfer-Encoding */
    {"POST / HTTP/1.1\r\n" H11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 0,
     CC_HTTP_E_CL_AND_TE},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 0,
     CC_HTTP_E_CL_AND_TE},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding: gzip\r\n\r\n", 0,
     CC_HTTP_E_TE_NOT_CHUNKED_FINAL},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding: identity\r\n\r\n", 0,
     CC_HTTP_E_TE_NOT_CHUNKED_FINAL},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding: chunked, gzip\r\n\r\n", 0,
     CC_HTTP_E_TE_NOT_CHUNKED_FINAL},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 0,
     CC_HTTP_E_TE_NOT_CHUNKED_FINAL},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding: chunked, chunked\r\n\r\n", 0,
     CC_HTTP_E_TE_CHUNKED_TWICE},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
     0, CC_HTTP_E_TE_CHUNKED_TWICE},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding: gzip, chunked\r\n\r\n", 0,
     CC_HTTP_E_TE_UNSUPPORTED},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding: gzip;q=\"a,b\" , chunked\r\n\r\n", 0,
     CC_HTTP_E_TE_UNSUPPORTED},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding: chunked,\r\n\r\n", 0,
     CC_HTTP_E_BAD_TRANSFER_ENCODING},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding:\r\n\r\n", 0, CC_HTTP_E_BAD_TRANSFER_ENCODING},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding: chunked;a=b\r\n\r\n", 0,
     CC_HTTP_E_BAD_TRANSFER_ENCODING},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding: \"chunked\"\r\n\r\n", 0,
     CC_HTTP_E_BAD_TRANSFER_ENCODING},
    {"POST / HTTP/1.1\r\n" H11 "Transfer-Encoding: chunked x\r\n\r\n", 0,
     CC_HTTP_E_BAD_TRANSFER_ENCODING},
    {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 0, CC_HTTP_E_TE_HTTP10},
};

TEST(test_reject_table) {
    for (size_t i = 0; i < sizeof(reject_cases) / sizeof(reject_cases[0]); i++) {
        const reject_case_t *c = &reject_cases[i];
        size_t len = c->len ? c->len : strlen(c->in);
        char label[32];
        snprintf(label, sizeof label, "reject[%zu]", i);
        cc_http_result_t rc = check_splits(c->in, len, NULL, label);
        CHECK_MSG(rc == c->rc, "%s: got %d (%s), want %d (%s)", label, rc, cc_http_reason(rc),
                  c->rc, cc_http_reason(c->rc));
        CHECK(cc_http_status(rc) >= 400);
    }
}

/* ------------------------------------------------------------------ limits */

TEST(test_request_line_limit) {
    cc_http_limits_t lim;
    cc_http_limits_default(&lim);
    lim.max_request_line = 16;                              /* "GET /0123456789 HTTP/1.1" is 24 */
    const char *ok = "GET /12 HTTP/1.1\r\nHost: a\r\n\r\n"; /* line exactly 16 */
    CHECK_EQ_INT(check_splits(ok, strlen(ok), &lim, "rl-exact"), CC_HTTP_OK);
    const char *bad = "GET /123 HTTP/1.1\r\nHost: a\r\n\r\n"; /* 17 */
    CHECK_EQ_INT(check_splits(bad, strlen(bad), &lim, "rl-17"), CC_HTTP_E_REQUEST_LINE_TOO_LONG);
    /* An endless line gets 414 as soon as it passes the limit, without a CRLF. */
    parsed_t p;
    CHECK_EQ_INT(parse_copy("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaa", 32, &lim, &p, NULL),
                 CC_HTTP_E_REQUEST_LINE_TOO_LONG);
    CHECK_EQ_INT(parse_copy("GET /aaaaaaaaaaa", 16, &lim, &p, NULL),
                 CC_HTTP_E_REQUEST_LINE_TOO_LONG);
    CHECK_EQ_INT(parse_copy("GET /aaaaaaaaaa", 15, &lim, &p, NULL), CC_HTTP_INCOMPLETE);
    CHECK_EQ_INT(parse_copy("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 39, &lim, &p, NULL),
                 CC_HTTP_E_REQUEST_LINE_TOO_LONG);
    CHECK_EQ_INT(cc_http_status(CC_HTTP_E_REQUEST_LINE_TOO_LONG), 414);
    /* Limits near SIZE_MAX must not wrap around. */
    cc_http_limits_t huge = {SIZE_MAX, SIZE_MAX, SIZE_MAX};
    CHECK_EQ_INT(check_splits(ok, strlen(ok), &huge, "rl-huge"), CC_HTTP_OK);
    /* Leading empty lines do not count towards the request line. */
    const char *lead = "\r\n\r\nGET /12 HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK_EQ_INT(check_splits(lead, strlen(lead), &lim, "rl-lead"), CC_HTTP_OK);
}

TEST(test_head_size_limit) {
    cc_http_limits_t lim;
    cc_http_limits_default(&lim);
    const char *in = "GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789\r\n\r\n";
    size_t len = strlen(in);
    lim.max_head_size = len;
    CHECK_EQ_INT(check_splits(in, len, &lim, "head-exact"), CC_HTTP_OK);
    lim.max_head_size = len - 1;
    CHECK_EQ_INT(check_splits(in, len, &lim, "head-minus-1"), CC_HTTP_E_HEAD_TOO_LARGE);
    CHECK_EQ_INT(cc_http_status(CC_HTTP_E_HEAD_TOO_LARGE), 431);
    /* Endless header value: 431 once the limit is reached, with no line end in sight. */
    lim.max_head_size = 64;
    char big[200];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    parsed_t p;
    CHECK_EQ_INT(parse_copy(big, sizeof big, &lim, &p, NULL), CC_HTTP_E_HEAD_TOO_LARGE);
    CHECK_EQ_INT(parse_copy(big, 63, &lim, &p, NULL), CC_HTTP_INCOMPLETE);
    /* An endless stream of empty lines too. */
    char crlf[200];
    for (size_t i = 0; i < sizeof crlf; i += 2)
        memcpy(crlf + i, "\r\n", 2);
    CHECK_EQ_INT(parse_copy(crlf, sizeof crlf, &lim, &p, NULL), CC_HTTP_E_HEAD_TOO_LARGE);
}

TEST(test_header_count_limit) {
    cc_http_limits_t lim;
    cc_http_limits_default(&lim);
    lim.max_headers = 3;
    const char *three = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    const char *four = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    CHECK_EQ_INT(check_splits(three, strlen(three), &lim, "3h"), CC_HTTP_OK);
    CHECK_EQ_INT(check_splits(four, strlen(four), &lim, "4h"), CC_HTTP_E_TOO_MANY_HEADERS);
    CHECK_EQ_INT(cc_http_status(CC_HTTP_E_TOO_MANY_HEADERS), 431);
    /* The caller's array size is a limit too. */
    cc_http_header_t hs[2];
    cc_http_request_t req;
    char buf[64];
    memcpy(buf, three, strlen(three));
    cc_http_limits_default(&lim);
    CHECK_EQ_INT(cc_http_parse_request(buf, strlen(three), &lim, hs, 2, &req),
                 CC_HTTP_E_TOO_MANY_HEADERS);
    CHECK_EQ_INT(cc_http_parse_request(buf, strlen(three), &lim, hs, 0, &req),
                 CC_HTTP_E_TOO_MANY_HEADERS);
}

/* ------------------------------------------------------------------ misc */

TEST(test_pipelined_and_body_bytes) {
    const char *in =
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n"
        "Host: a\r\n\r\n";
    size_t len = strlen(in);
    parsed_t p;
    char *buf;
    CHECK_EQ_INT(parse_copy(in, len, NULL, &p, &buf), CC_HTTP_OK);
    size_t h = p.req.head_len;
    CHECK_EQ_INT(p.req.content_length, 5);
    CHECK(memcmp(buf + h, "hello", 5) == 0);
    parsed_t q;
    CHECK_EQ_INT(cc_http_parse_request(buf + h + 5, len - h - 5, NULL, q.headers, MAXH, &q.req),
                 CC_HTTP_OK);
    CHECK_MEM(q.req.target, q.req.target_len, "/b");
    CHECK_EQ_INT(h + 5 + q.req.head_len, len);
    free(buf);
}

TEST(test_find_head_end) {
    const char *a = "GET / HTTP/1.1\r\nHost: a\r\n\r\nxyz";
    CHECK_EQ_INT(cc_http_find_head_end(a, strlen(a), 0), strlen(a) - 3);
    CHECK_EQ_INT(cc_http_find_head_end(a, strlen(a) - 4, 0), -1);
    CHECK_EQ_INT(cc_http_find_head_end(a, strlen(a), 20), strlen(a) - 3);
    const char *b = "GET / HTTP/1.1\nHost: a\n\n";
    CHECK_EQ_INT(cc_http_find_head_end(b, strlen(b), 0), strlen(b));
    const char *c = "GET / HTTP/1.1\r\nHost: a\n\r\n";
    CHECK_EQ_INT(cc_http_find_head_end(c, strlen(c), 0), strlen(c));
    CHECK_EQ_INT(cc_http_find_head_end("", 0, 0), -1);
    CHECK_EQ_INT(cc_http_find_head_end("\r\n\r", 3, 0), -1);
}

TEST(test_reasons_and_statuses) {
    for (int r = CC_HTTP_E_REQUEST_LINE_TOO_LONG; r < CC_HTTP_E__COUNT; r++) {
        const char *s = cc_http_reason((cc_http_result_t)r);
        CHECK_MSG(s && *s && strcmp(s, "unknown error") != 0, "reason for %d", r);
        int st = cc_http_status((cc_http_result_t)r);
        CHECK_MSG(st == 400 || st == 414 || st == 431 || st == 501 || st == 505, "status %d", r);
    }
    CHECK_EQ_INT(cc_http_status(CC_HTTP_OK), 0);
    CHECK_EQ_INT(cc_http_status(CC_HTTP_INCOMPLETE), 0);
    CHECK_EQ_INT(cc_http_status(CC_HTTP_E_VERSION_UNSUPPORTED), 505);
    CHECK_EQ_INT(cc_http_status(CC_HTTP_E_TE_UNSUPPORTED), 501);
    CHECK_EQ_INT(cc_http_status(CC_HTTP_E_BAD_METHOD), 400);
    CHECK(strcmp(cc_http_reason((cc_http_result_t)999), "unknown error") == 0);
}

RUN_TESTS(TEST_ENTRY(test_accept_table), TEST_ENTRY(test_header_values_and_names),
          TEST_ENTRY(test_reject_table), TEST_ENTRY(test_request_line_limit),
          TEST_ENTRY(test_head_size_limit), TEST_ENTRY(test_header_count_limit),
          TEST_ENTRY(test_pipelined_and_body_bytes), TEST_ENTRY(test_find_head_end),
          TEST_ENTRY(test_reasons_and_statuses))
