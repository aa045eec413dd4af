/* libFuzzer target for cc_http_parse_request: checks the parser's invariants on arbitrary bytes
 * (prefix consistency, limits, spans inside the buffer, idempotent re-parse). It must only abort
 * on a real invariant violation, never on merely rejected input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

#define MAXH 64

#define INVARIANT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static cc_http_result_t parse(const uint8_t *in, size_t len, const cc_http_limits_t *lim,
                              cc_http_request_t *req, cc_http_header_t *hs, char **out) {
    char *buf = malloc(len ? len : 1);
    memcpy(buf, in, len);
    cc_http_result_t rc = cc_http_parse_request(buf, len, lim, hs, MAXH, req);
    if (out)
        *out = buf;
    else
        free(buf);
    return rc;
}

static int in_buf(const char *p, size_t n, const char *buf, size_t len) {
    return p >= buf && p + n <= buf + len;
}

/* The parser's only write is lowercasing names: every other byte must be as the client sent it. */
static void check_writes(const char *buf, const uint8_t *orig, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char o = orig[i], b = (unsigned char)buf[i];
        INVARIANT(b == o || (o >= 'A' && o <= 'Z' && b == o + 32));
    }
}

static void check_ok(const cc_http_request_t *r, const char *buf, const uint8_t *orig, size_t len,
                     const cc_http_limits_t *lim) {
    INVARIANT(r->head_len <= len && r->head_len <= lim->max_head_size);
    INVARIANT(r->num_headers <= lim->max_headers && r->num_headers <= MAXH);
    INVARIANT(r->version_minor == 0 || r->version_minor == 1);
    INVARIANT(r->method_len > 0 && in_buf(r->method, r->method_len, buf, r->head_len));
    INVARIANT(r->target_len > 0 && in_buf(r->target, r->target_len, buf, r->head_len));
    INVARIANT(r->target_len + r->method_len + 10 <= lim->max_request_line);
    for (size_t i = 0; i < r->target_len; i++)
        INVARIANT((unsigned char)r->target[i] > 0x20 && (unsigned char)r->target[i] < 0x7f);
    for (size_t i = 0; i < r->num_headers; i++) {
        const cc_http_header_t *h = &r->headers[i];
        INVARIANT(h->name_len > 0 && in_buf(h->name, h->name_len, buf, r->head_len));
        INVARIANT(in_buf(h->value, h->value_len, buf, r->head_len));
        INVARIANT(memcmp(h->value, orig + (h->value - buf), h->value_len) == 0);
        for (size_t k = 0; k < h->name_len; k++) {
            unsigned char o = orig[(size_t)(h->name - buf) + k];
            INVARIANT((unsigned char)h->name[k] == (o >= 'A' && o <= 'Z' ? o + 32 : o));
        }
        for (size_t k = 0; k < h->name_len; k++)
            INVARIANT(!(h->name[k] >= 'A' && h->name[k] <= 'Z') && h->name[k] != ':' &&
                      (unsigned char)h->name[k] > 0x20);
        for (size_t k = 0; k < h->value_len; k++) {
            unsigned char c = (unsigned char)h->value[k];
            INVARIANT(c >= 0x20 ? c != 0x7f : c == '\t');
        }
        if (h->value_len) {
            INVARIANT(h->value[0] != ' ' && h->value[0] != '\t');
            INVARIANT(h->value[h->value_len - 1] != ' ' && h->value[h->value_len - 1] != '\t');
        }
    }
    INVARIANT(r->body != CC_HTTP_BODY_LENGTH || r->content_length > 0);
    INVARIANT(r->body == CC_HTTP_BODY_NONE || r->body == CC_HTTP_BODY_LENGTH ||
              r->body == CC_HTTP_BODY_CHUNKED);
    INVARIANT(!r->upgrade || in_buf(r->upgrade_value, r->upgrade_len, buf, r->head_len) ||
              r->upgrade_len == 0);
    long end = cc_http_find_head_end(buf, len, 0);
    INVARIANT(end >= 0 && (size_t)end <= r->head_len);
    INVARIANT(buf[r->head_len - 1] == '\n' && buf[r->head_len - 2] == '\r');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    /* The first two bytes choose limits small enough for the fuzzer to reach them. */
    cc_http_limits_t lim;
    cc_http_limits_default(&lim);
    if (data[0] & 1) {
        lim.max_request_line = 8 + (data[0] >> 1);
        lim.max_head_size = 16 + (size_t)data[1] * 2;
        lim.max_headers = data[1] & 15;
    }
    uint32_t seed = data[1];
    data += 2;
    size -= 2;

    cc_http_request_t req, req2;
    cc_http_header_t hs[MAXH], hs2[MAXH];
    char *buf;
    cc_http_result_t rc = parse(data, size, &lim, &req, hs, &buf);
    INVARIANT(rc >= CC_HTTP_OK && rc < CC_HTTP_E__COUNT);
    INVARIANT(cc_http_reason(rc) != NULL);
    if (rc >= CC_HTTP_E_REQUEST_LINE_TOO_LONG)
        INVARIANT(cc_http_status(rc) >= 400);
    check_writes(buf, data, size);
    if (rc == CC_HTTP_OK)
        check_ok(&req, buf, data, size, &lim);
    /* Re-parsing the same (lowercased) buffer gives the same answer. */
    cc_http_result_t rc2 = cc_http_parse_request(buf, size, &lim, hs2, MAXH, &req2);
    INVARIANT(rc2 == rc);
    if (rc == CC_HTTP_OK)
        INVARIANT(req2.head_len == req.head_len && req2.num_headers == req.num_headers &&
                  req2.body == req.body && req2.content_length == req.content_length);
    /* Incomplete input never exceeds the limits the caller would have to buffer. */
    if (rc == CC_HTTP_INCOMPLETE)
        INVARIANT(size < lim.max_head_size);
    free(buf);

    /* Prefixes: all of them for short inputs, a pseudo-random handful otherwise. */
    size_t tries = size <= 300 ? size : 64;
    for (size_t t = 0; t < tries; t++) {
        size_t k;
        if (size <= 300) {
            k = t;
        } else {
            seed = seed * 1103515245u + 12345u;
            k = (seed >> 8) % size;
        }
        cc_http_result_t pr = parse(data, k, &lim, &req2, hs2, NULL);
        if (rc == CC_HTTP_OK) {
            if (k < req.head_len)
                INVARIANT(pr == CC_HTTP_INCOMPLETE);
            else
                INVARIANT(pr == CC_HTTP_OK && req2.head_len == req.head_len);
        } else {
            INVARIANT(pr == CC_HTTP_INCOMPLETE || pr == rc);
        }
    }
    return 0;
}
