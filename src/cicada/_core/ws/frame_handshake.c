/* The opening handshake's Sec-WebSocket-Accept value (RFC 6455 4.2.2): a small SHA-1 and base64
 * encoder of our own, so the core needs no crypto library. SHA-1 here is for this key derivation
 * only: it must not be used for anything that needs collision resistance. */
#include <string.h>

#include "ws/ws.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_GUID_LEN (sizeof(WS_GUID) - 1)
#define WS_KEY_LEN 24 /* base64 of 16 bytes */
#define SHA1_BLOCK 64

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static uint32_t rol32(uint32_t x, unsigned n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const uint8_t *blk) {
    uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];

    for (int i = 0; i < 16; i++)
        w[i] = ((uint32_t)blk[4 * i] << 24) | ((uint32_t)blk[4 * i + 1] << 16) |
               ((uint32_t)blk[4 * i + 2] << 8) | blk[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void cc_ws_sha1(const uint8_t *data, size_t len, uint8_t digest[20]) {
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    uint8_t blk[SHA1_BLOCK];
    uint64_t bits = (uint64_t)len * 8;
    size_t rest;

    for (; len >= SHA1_BLOCK; data += SHA1_BLOCK, len -= SHA1_BLOCK)
        sha1_block(h, data);
    /* Padding: 0x80, zeros, then the bit length big-endian in the last 8 bytes of a block. */
    rest = len;
    memset(blk, 0, sizeof(blk));
    if (rest)
        memcpy(blk, data, rest);
    blk[rest] = 0x80;
    if (rest >= SHA1_BLOCK - 8) {
        sha1_block(h, blk);
        memset(blk, 0, sizeof(blk));
    }
    for (int i = 0; i < 8; i++)
        blk[SHA1_BLOCK - 1 - i] = (uint8_t)(bits >> (8 * i));
    sha1_block(h, blk);
    for (int i = 0; i < 5; i++) {
        digest[4 * i] = (uint8_t)(h[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(h[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(h[i] >> 8);
        digest[4 * i + 3] = (uint8_t)h[i];
    }
}

size_t cc_ws_base64_encode(const uint8_t *in, size_t len, char *out) {
    size_t o = 0, i = 0;

    for (; i + 3 <= len; i += 3) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

static int is_b64(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

cc_ws_result_t cc_ws_accept_key(const char *key, size_t key_len, char out[CC_WS_ACCEPT_LEN]) {
    uint8_t buf[WS_KEY_LEN + WS_GUID_LEN], digest[20];

    /* 16 bytes encode to 22 symbols and "==". The unused low bits of the last symbol are not
     * checked: the key is a nonce, and clients only need it echoed back correctly. */
    if (key_len != WS_KEY_LEN || key[22] != '=' || key[23] != '=')
        return CC_WS_E_BAD_KEY;
    for (size_t i = 0; i < 22; i++)
        if (!is_b64(key[i]))
            return CC_WS_E_BAD_KEY;
    memcpy(buf, key, WS_KEY_LEN);
    memcpy(buf + WS_KEY_LEN, WS_GUID, WS_GUID_LEN);
    cc_ws_sha1(buf, sizeof(buf), digest);
    cc_ws_base64_encode(digest, sizeof(digest), out);
    return CC_WS_OK;
}
