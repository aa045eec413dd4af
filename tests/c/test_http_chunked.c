/* Tests for the chunked decoder: accept and reject tables, each input fed whole, split at every
 * point into two pieces, and byte by byte; every way must give the same body, end and error.
 * Every piece is its own exact-size heap buffer so ASan catches reads past a piece. */
#include <stdlib.h>

#include "http/http.h"
#include "runner.h"

typedef struct {
    cc_http_result_t rc; /* OK: done; INCOMPLETE: ran out; else the error */
    char body[8192];
    size_t body_len;
    size_t consumed;  /* total bytes used when done or failed */
    int bad_consumed; /* INCOMPLETE returned without consuming the whole piece */
} outcome_t;

/* Feeds in[0..len) cut at the given offsets (ascending, excluding 0 and len). */
static void feed(const char *in, size_t len, const size_t *cuts, size_t ncuts, size_t max_trailer,
                 outcome_t *o) {
    cc_http_chunked_t d;
    cc_http_chunked_init(&d, max_trailer);
    memset(o, 0, sizeof *o);
    o->rc = CC_HTTP_INCOMPLETE;
    size_t base = 0;
    for (size_t k = 0; k <= ncuts; k++) {
        size_t stop = k < ncuts ? cuts[k] : len;
        size_t plen = stop - base;
        char *piece = malloc(plen ? plen : 1);
        memcpy(piece, in + base, plen);
        size_t off = 0;
        for (;;) {
            size_t used;
            const char *data;
            size_t dlen;
            cc_http_result_t rc =
                cc_http_chunked_decode(&d, piece + off, plen - off, &used, &data, &dlen);
            if (used > plen - off)
                o->bad_consumed = 1;
            off += used;
            if (rc == CC_HTTP_OK) {
                if (dlen) {
                    if (data < piece || data + dlen > piece + plen ||
                        o->body_len + dlen > sizeof o->body) {
                        o->bad_consumed = 1;
                        break;
                    }
                    memcpy(o->body + o->body_len, data, dlen);
                    o->body_len += dlen;
                    continue;
                }
                if (!cc_http_chunked_done(&d))
                    o->bad_consumed = 1;
                o->rc = CC_HTTP_OK;
                o->consumed = base + off;
                free(piece);
                return;
            }
            if (rc == CC_HTTP_INCOMPLETE) {
                if (off != plen)
                    o->bad_consumed = 1;
                break;
            }
            o->rc = rc;
            o->consumed = base + off;
            free(piece);
            return;
        }
        free(piece);
        base = stop;
    }
}

static int same(const outcome_t *a, const outcome_t *b) {
    return a->rc == b->rc && a->body_len == b->body_len &&
           memcmp(a->body, b->body, a->body_len) == 0 && a->consumed == b->consumed &&
           !a->bad_consumed && !b->bad_consumed;
}

/* Decodes whole, at every split, and byte by byte; checks agreement; returns the whole outcome. */
static void check_all(const char *in, size_t len, size_t max_trailer, const char *label,
                      outcome_t *whole) {
    static outcome_t o;
    static size_t cuts[8192];
    feed(in, len, NULL, 0, max_trailer, whole);
    CHECK_MSG(!whole->bad_consumed, "%s: consumed accounting", label);
    for (size_t k = 1; k < len; k++) {
        feed(in, len, &k, 1, max_trailer, &o);
        CHECK_MSG(same(whole, &o), "%s: split at %zu gave rc %d body %zu, whole rc %d body %zu",
                  label, k, o.rc, o.body_len, whole->rc, whole->body_len);
    }
    if (len > 1 && len - 1 <= sizeof cuts / sizeof cuts[0]) {
        for (size_t k = 1; k < len; k++)
            cuts[k - 1] = k;
        feed(in, len, cuts, len - 1, max_trailer, &o);
        CHECK_MSG(same(whole, &o), "%s: byte by byte gave rc %d", label, o.rc);
    }
}

typedef struct {
    const char *in;
    const char *body;
    size_t tail; /* bytes after the message that must be left unconsumed */
} accept_case_t;

static const accept_case_t accept_cases[] = {
    {"5\r\nhello\r\n0\r\n\r\n", "hello", 0},
    {"0\r\n\r\n", "", 0},
    {"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", 0},
    {"A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij", 0},
    {"0005\r\nhello\r\n000\r\n\r\n", "hello", 0},
    {"0000000000000005\r\nhello\r\n0\r\n\r\n", "hello", 0},
    {"5;a=b;c\r\nhello\r\n0;last\r\n\r\n", "hello", 0},
    {"5 ; a = \"q\\\"x, y\" ; b\t;c=d\r\nhello\r\n0\r\n\r\n", "hello", 0},
    {"5;a=\"\"\r\nhello\r\n0\r\n\r\n", "hello", 0},
    {"5\r\nhello\r\n0\r\nX-Trailer: v\r\nEmpty:\r\nSp:  a b \r\n\r\n", "hello", 0},
    {"3\r\n\r\n\r\r\n0\r\n\r\n", "\r\n\r", 0},
    {"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n", "hello", 16},
};

TEST(test_accept) {
    for (size_t i = 0; i < sizeof accept_cases / sizeof accept_cases[0]; i++) {
        const accept_case_t *c = &accept_cases[i];
        char label[32];
        snprintf(label, sizeof label, "accept[%zu]", i);
        outcome_t o;
        size_t len = strlen(c->in);
        check_all(c->in, len, 0, label, &o);
        CHECK_MSG(o.rc == CC_HTTP_OK, "%s: rc %d (%s)", label, o.rc, cc_http_reason(o.rc));
        CHECK_MSG(o.body_len == strlen(c->body) && memcmp(o.body, c->body, o.body_len) == 0,
                  "%s: body %.*s", label, (int)o.body_len, o.body);
        CHECK_MSG(o.consumed == len - c->tail, "%s: consumed %zu of %zu", label, o.consumed, len);
    }
}

typedef struct {
    const char *in;
    cc_http_result_t rc;
} reject_case_t;

static const reject_case_t reject_cases[] = {
    {"\r\n", CC_HTTP_E_BAD_CHUNK_SIZE},
    {"x\r\n", CC_HTTP_E_BAD_CHUNK_SIZE},
    {"-5\r\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_SIZE},
    {"+5\r\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_SIZE},
    {" 5\r\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_SIZE},
    {"0x5\r\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_SIZE},
    {"5\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_SIZE},
    {"5g\r\n", CC_HTTP_E_BAD_CHUNK_SIZE},
    {"5\rhello", CC_HTTP_E_BARE_CR},
    {"5 \r\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_EXT},
    {"00000000000000005\r\nhello\r\n0\r\n\r\n", CC_HTTP_E_CHUNK_SIZE_OVERFLOW},
    {"fffffffffffffffff\r\n", CC_HTTP_E_CHUNK_SIZE_OVERFLOW},
    {"5;\r\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_EXT},
    {"5;=a\r\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_EXT},
    {"5;a=\r\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_EXT},
    {"5;a=\"x\r\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_EXT},
    {"5;a b\r\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_EXT},
    {"5;a=b c\r\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_EXT},
    {"5;a=\"x\"y\r\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_EXT},
    {"5;a\x01\r\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_EXT},
    {"5;a=\"\x7f\"\r\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_EXT},
    {"5;a\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_EXT},
    {"5;a=\"x\\\x01\"\r\nhello\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_EXT},
    {"5\r\nhelloX\r\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_END},
    {"5\r\nhello\rX0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_END},
    {"5\r\nhello\n0\r\n\r\n", CC_HTTP_E_BAD_CHUNK_END},
    {"5\r\nhello\r\n0\r\nX : v\r\n\r\n", CC_HTTP_E_BAD_TRAILER},
    {"5\r\nhello\r\n0\r\n v\r\n\r\n", CC_HTTP_E_BAD_TRAILER},
    {"5\r\nhello\r\n0\r\nX: a\x01\r\n\r\n", CC_HTTP_E_BAD_TRAILER},
    {"5\r\nhello\r\n0\r\nX: v\n\r\n", CC_HTTP_E_BAD_TRAILER},
    {"5\r\nhello\r\n0\r\nX: v\r\r\n", CC_HTTP_E_BAD_TRAILER},
    {"5\r\nhello\r\n0\r\n\n", CC_HTTP_E_BAD_TRAILER},
    {"5\r\nhello\r\n0\r\n\rx", CC_HTTP_E_BAD_TRAILER},
    {"5\r\nhello\r\n0\r\nNoColon\r\n\r\n", CC_HTTP_E_BAD_TRAILER},
    {"5\r\nhello\r\n0\r\n:v\r\n\r\n", CC_HTTP_E_BAD_TRAILER},
};

TEST(test_reject) {
    for (size_t i = 0; i < sizeof reject_cases / sizeof reject_cases[0]; i++) {
        const reject_case_t *c = &reject_cases[i];
        char label[32];
        snprintf(label, sizeof label, "reject[%zu]", i);
        outcome_t o;
        check_all(c->in, strlen(c->in), 0, label, &o);
        CHECK_MSG(o.rc == c->rc, "%s: got %d (%s), want %d (%s)", label, o.rc, cc_http_reason(o.rc),
                  c->rc, cc_http_reason(c->rc));
        CHECK_EQ_INT(cc_http_status(o.rc), 400);
    }
}

TEST(test_limits) {
    static char buf[6000];
    outcome_t o;
    /* A size line with a long extension: fine up to the limit, rejected past it. */
    size_t n = 0;
    n += (size_t)sprintf(buf, "5;");
    memset(buf + n, 'a', CC_HTTP_MAX_CHUNK_EXT - 5);
    n += CC_HTTP_MAX_CHUNK_EXT - 5;
    n += (size_t)sprintf(buf + n, "\r\nhello\r\n0\r\n\r\n");
    feed(buf, n, NULL, 0, 0, &o);
    CHECK_EQ_INT(o.rc, CC_HTTP_OK);
    n = (size_t)sprintf(buf, "5;");
    memset(buf + n, 'a', 5000);
    n += 5000;
    feed(buf, n, NULL, 0, 0, &o);
    CHECK_EQ_INT(o.rc, CC_HTTP_E_CHUNK_EXT_TOO_LONG);
    /* Endless leading zeros are caught by the digit limit, not by memory. */
    memset(buf, '0', 100);
    feed(buf, 100, NULL, 0, 0, &o);
    CHECK_EQ_INT(o.rc, CC_HTTP_E_CHUNK_SIZE_OVERFLOW);
    /* Trailer block limit. */
    const char *t = "0\r\nX-A: 0123456789\r\n\r\n"; /* trailer block is 19 bytes */
    check_all(t, strlen(t), 19, "trailer-exact", &o);
    CHECK_EQ_INT(o.rc, CC_HTTP_OK);
    check_all(t, strlen(t), 18, "trailer-18", &o);
    CHECK_EQ_INT(o.rc, CC_HTTP_E_TRAILER_TOO_LARGE);
    /* An endless trailer is cut at the default limit when max_trailer is 0. */
    n = (size_t)sprintf(buf, "0\r\nX: ");
    memset(buf + n, 'v', sizeof buf - n);
    feed(buf, sizeof buf, NULL, 0, 0, &o);
    CHECK_EQ_INT(o.rc, CC_HTTP_INCOMPLETE);
    static char big[CC_HTTP_DEFAULT_MAX_TRAILER + 100];
    n = (size_t)sprintf(big, "0\r\nX: ");
    memset(big + n, 'v', sizeof big - n);
    feed(big, sizeof big, NULL, 0, 0, &o);
    CHECK_EQ_INT(o.rc, CC_HTTP_E_TRAILER_TOO_LARGE);
}

TEST(test_large_chunk_spans) {
    /* A 64 KiB chunk declared with 16 digits arrives in pieces; the decoder returns spans that
     * point into each piece without copying. */
    static char in[70000];
    size_t n = (size_t)sprintf(in, "0000000000010000\r\n");
    for (size_t i = 0; i < 0x10000; i++)
        in[n + i] = (char)('a' + i % 26);
    n += 0x10000;
    n += (size_t)sprintf(in + n, "\r\n0\r\n\r\n");
    cc_http_chunked_t d;
    cc_http_chunked_init(&d, 0);
    size_t off = 0, body = 0;
    int ok = 1;
    while (off < n) {
        size_t piece = n - off < 1000 ? n - off : 1000, used;
        const char *data;
        size_t dl;
        cc_http_result_t rc = cc_http_chunked_decode(&d, in + off, piece, &used, &data, &dl);
        if (rc == CC_HTTP_OK && dl) {
            ok &= data == in + off + (used - dl);
            for (size_t i = 0; i < dl; i++)
                ok &= data[i] == (char)('a' + (body + i) % 26);
            body += dl;
        } else if (rc != CC_HTTP_OK && rc != CC_HTTP_INCOMPLETE) {
            ok = 0;
            break;
        }
        off += used;
        if (cc_http_chunked_done(&d))
            break;
    }
    CHECK(ok);
    CHECK_EQ_INT(body, 0x10000);
    CHECK(cc_http_chunked_done(&d));
    CHECK_EQ_INT(off, n);
}

TEST(test_zero_initialised_and_done) {
    cc_http_chunked_t d;
    memset(&d, 0, sizeof d);
    size_t used;
    const char *data;
    size_t dl;
    CHECK_EQ_INT(cc_http_chunked_decode(&d, "", 0, &used, &data, &dl), CC_HTTP_INCOMPLETE);
    CHECK_EQ_INT(used, 0);
    CHECK_EQ_INT(cc_http_chunked_decode(&d, "0\r\n\r\nxx", 7, &used, &data, &dl), CC_HTTP_OK);
    CHECK_EQ_INT(used, 5);
    CHECK_EQ_INT(dl, 0);
    CHECK(cc_http_chunked_done(&d));
    /* Once done, it consumes nothing more. */
    CHECK_EQ_INT(cc_http_chunked_decode(&d, "xx", 2, &used, &data, &dl), CC_HTTP_OK);
    CHECK_EQ_INT(used, 0);
    CHECK_EQ_INT(dl, 0);
}

RUN_TESTS(TEST_ENTRY(test_accept), TEST_ENTRY(test_reject), TEST_ENTRY(test_limits),
          TEST_ENTRY(test_large_chunk_spans), TEST_ENTRY(test_zero_initialised_and_done))
