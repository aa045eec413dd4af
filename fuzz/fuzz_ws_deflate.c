/* libFuzzer target for permessage-deflate: the Sec-WebSocket-Extensions offer parser (with a
 * re-negotiation property), the inflater on arbitrary data under a small size limit, and
 * deflate -> inflate round trips. Must not leak, overrun or exceed the limit. */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws/ws.h"

#define FUZZ_LIMIT 65536

static void fuzz_negotiate(const uint8_t *data, size_t size) {
    cc_ws_deflate_config_t cfg;
    cc_ws_deflate_params_t a, b;
    char resp[CC_WS_DEFLATE_RESPONSE_MAX], resp2[CC_WS_DEFLATE_RESPONSE_MAX];
    size_t rlen, rlen2;

    cc_ws_deflate_config_default(&cfg);
    if (!cc_ws_deflate_negotiate((const char *)data, size, &cfg, &a, resp, &rlen))
        return;
    if (rlen >= CC_WS_DEFLATE_RESPONSE_MAX || strlen(resp) != rlen)
        abort();
    if (a.server_max_window_bits < 8 || a.server_max_window_bits > 15 ||
        a.client_max_window_bits < 8 || a.client_max_window_bits > 15)
        abort();
    /* Our response, read back as an offer, is accepted with the same parameters. */
    if (!cc_ws_deflate_negotiate(resp, rlen, &cfg, &b, resp2, &rlen2))
        abort();
    if (memcmp(&a, &b, sizeof(a)) != 0)
        abort();
}

typedef struct {
    cc_ws_inflater_t z;
    size_t out_cap;
} fuzz_inflater_t;

/* Inflate one message; returns the result and sets the output's length and hash. */
static cc_ws_result_t inflate_msg(fuzz_inflater_t *f, const uint8_t *in, size_t len,
                                  uint64_t *total, uint64_t *hash) {
    uint8_t out[512];
    size_t used, made;
    cc_ws_result_t r;
    *total = 0;
    *hash = 1469598103934665603ULL;
    do {
        r = cc_ws_inflate(&f->z, in, len, 1, out, f->out_cap, &used, &made);
        if (used > len || made > f->out_cap)
            abort();
        in += used;
        len -= used;
        *total += made;
        for (size_t i = 0; i < made; i++)
            *hash = (*hash ^ out[i]) * 1099511628211ULL;
    } while (r == CC_WS_INCOMPLETE);
    if (*total > FUZZ_LIMIT + f->out_cap)
        abort();
    return r;
}

/* Two inflaters, one with a tiny output buffer and one with a roomy one, must agree on every
 * message: chunking may never change the result or the bytes. */
static void fuzz_inflate(uint8_t sel, const uint8_t *data, size_t size) {
    cc_ws_deflate_params_t prm = {0, 0, 15, 15};
    fuzz_inflater_t f[2];
    size_t pos = 0;

    prm.client_max_window_bits = (uint8_t)(8 + (sel >> 4) % 8);
    prm.client_no_context_takeover = sel & 1;
    for (int i = 0; i < 2; i++) {
        f[i].out_cap = i ? 512 : 1 + sel % 16;
        if (cc_ws_inflater_init(&f[i].z, &prm, FUZZ_LIMIT) != CC_WS_OK)
            abort();
    }
    /* 0xff 0xfe ends a message: exercises context carried between messages. */
    while (pos < size) {
        const uint8_t *end = memmem(data + pos, size - pos, "\xff\xfe", 2);
        size_t mlen = end ? (size_t)(end - (data + pos)) : size - pos;
        uint64_t t0, h0, t1, h1;
        cc_ws_result_t r0 = inflate_msg(&f[0], data + pos, mlen, &t0, &h0);
        cc_ws_result_t r1 = inflate_msg(&f[1], data + pos, mlen, &t1, &h1);
        if (r0 != r1 || (r0 == CC_WS_OK && (t0 != t1 || h0 != h1)))
            abort();
        if (r0 != CC_WS_OK)
            break;
        pos += mlen + (end ? 2 : 0);
    }
    cc_ws_inflater_free(&f[0].z);
    cc_ws_inflater_free(&f[1].z);
}

static void fuzz_roundtrip(uint8_t sel, const uint8_t *data, size_t size) {
    cc_ws_deflate_params_t prm;
    cc_ws_deflater_t d;
    cc_ws_inflater_t z;
    size_t cap = CC_WS_DEFLATE_MIN_OUT + sel % 64, piece = 1 + (sel >> 2) % 300;
    uint8_t *comp = malloc(64), *back = malloc(size + 1), out[CC_WS_DEFLATE_MIN_OUT + 64];
    size_t clen = 0, blen = 0, ccap = 64, used, made;

    if (!comp || !back)
        abort();

    prm.server_max_window_bits = (uint8_t)(8 + sel % 8);
    prm.client_max_window_bits = prm.server_max_window_bits;
    prm.server_no_context_takeover = prm.client_no_context_takeover = (sel >> 3) & 1;
    if (cc_ws_deflater_init(&d, &prm, 1 + sel % 9, 1 + (sel >> 4) % 9) != CC_WS_OK)
        abort();
    if (cc_ws_inflater_init(&z, &prm, 0) != CC_WS_OK)
        abort();
    for (int msg = 0; msg < 2; msg++) {
        size_t pos = 0;
        clen = 0;
        for (;;) {
            size_t n = size - pos < piece ? size - pos : piece;
            int fin = pos + n == size;
            cc_ws_result_t r;
            do {
                r = cc_ws_deflate(&d, data + pos, n, fin, out, cap, &used, &made);
                if (clen + made > ccap) {
                    ccap = (clen + made) * 2 + 64;
                    uint8_t *nc = realloc(comp, ccap);
                    if (!nc)
                        abort();
                    comp = nc;
                }
                memcpy(comp + clen, out, made);
                clen += made;
                pos += used;
                n -= used;
            } while (r == CC_WS_INCOMPLETE);
            if (r != CC_WS_OK || n)
                abort();
            if (fin)
                break;
        }
        blen = 0;
        const uint8_t *ip = comp;
        size_t left = clen;
        cc_ws_result_t r;
        do {
            r = cc_ws_inflate(&z, ip, left, 1, out, sizeof(out), &used, &made);
            if (blen + made > size)
                abort();
            memcpy(back + blen, out, made);
            blen += made;
            ip += used;
            left -= used;
        } while (r == CC_WS_INCOMPLETE);
        if (r != CC_WS_OK || blen != size || (size && memcmp(back, data, size) != 0))
            abort();
    }
    free(comp);
    free(back);
    cc_ws_deflater_free(&d);
    cc_ws_inflater_free(&z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    switch (data[0] % 3) {
    case 0:
        fuzz_negotiate(data + 1, size - 1);
        break;
    case 1:
        fuzz_inflate(data[1], data + 2, size - 2);
        break;
    default:
        fuzz_roundtrip(data[1], data + 2, size - 2);
        break;
    }
    return 0;
}
