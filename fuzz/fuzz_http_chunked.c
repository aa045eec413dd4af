/* libFuzzer target for the chunked decoder: the same bytes fed whole, split at pseudo-random points
 * and byte by byte must give the same body, the same end and the same error; every returned span
 * must lie inside the piece that was fed. Aborts only on a real invariant violation. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

#define INVARIANT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    cc_http_result_t rc;
    uint64_t body_len;
    uint64_t body_hash;
    size_t consumed;
} outcome_t;

/* Feeds in[0..len) in pieces: step == 0 means whole, otherwise a pseudo-random walk of piece
 * sizes from 1 to step. */
static outcome_t feed(const uint8_t *in, size_t len, size_t max_trailer, uint32_t seed,
                      size_t step) {
    cc_http_chunked_t d;
    cc_http_chunked_init(&d, max_trailer);
    outcome_t o = {CC_HTTP_INCOMPLETE, 0, 1469598103934665603ull, 0};
    size_t base = 0;
    while (base < len || len == 0) {
        size_t plen = len - base;
        if (step) {
            seed = seed * 1103515245u + 12345u;
            size_t want = 1 + (seed >> 8) % step;
            if (want < plen)
                plen = want;
        }
        char *piece = malloc(plen ? plen : 1);
        memcpy(piece, in + base, plen);
        size_t off = 0;
        for (;;) {
            size_t used;
            const char *data;
            size_t dl;
            cc_http_result_t rc =
                cc_http_chunked_decode(&d, piece + off, plen - off, &used, &data, &dl);
            INVARIANT(used <= plen - off);
            off += used;
            if (rc == CC_HTTP_OK && dl) {
                INVARIANT(data >= piece && data + dl <= piece + off);
                for (size_t i = 0; i < dl; i++)
                    o.body_hash = (o.body_hash ^ (uint8_t)data[i]) * 1099511628211ull;
                o.body_len += dl;
                continue;
            }
            if (rc == CC_HTTP_OK) {
                INVARIANT(cc_http_chunked_done(&d));
                o.rc = rc;
                o.consumed = base + off;
                free(piece);
                return o;
            }
            if (rc == CC_HTTP_INCOMPLETE) {
                INVARIANT(off == plen);
                break;
            }
            INVARIANT(rc > CC_HTTP_INCOMPLETE && rc < CC_HTTP_E__COUNT);
            INVARIANT(cc_http_status(rc) == 400);
            o.rc = rc;
            o.consumed = base + off;
            free(piece);
            return o;
        }
        free(piece);
        base += plen;
        if (len == 0)
            break;
    }
    return o;
}

static int same(outcome_t a, outcome_t b) {
    return a.rc == b.rc && a.body_len == b.body_len && a.body_hash == b.body_hash &&
           a.consumed == b.consumed;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    size_t max_trailer = data[0] & 1 ? (size_t)(data[0] >> 1) : 0;
    uint32_t seed = data[0];
    data++;
    size--;
    outcome_t whole = feed(data, size, max_trailer, seed, 0);
    INVARIANT(whole.consumed <= size);
    INVARIANT(whole.body_len <= size);
    INVARIANT(same(whole, feed(data, size, max_trailer, seed, 7)));
    INVARIANT(same(whole, feed(data, size, max_trailer, seed + 1, 64)));
    if (size <= 2048)
        INVARIANT(same(whole, feed(data, size, max_trailer, seed, 1)));
    return 0;
}
