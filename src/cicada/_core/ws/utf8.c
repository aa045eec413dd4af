/* Streaming UTF-8 validation for WebSocket text messages (RFC 6455 8.1, RFC 3629 ranges).
 * Validates only: never decodes or copies. State survives splits anywhere, even mid-sequence. */
#include <string.h>

#include "ws/ws.h"

#define UTF8_FAILED 0xff
#define ASCII_MASK8 0x8080808080808080ULL

void cc_ws_utf8_init(cc_ws_utf8_t *u) {
    u->need = 0;
    u->lo = 0x80;
    u->hi = 0xbf;
}

cc_ws_result_t cc_ws_utf8_feed(cc_ws_utf8_t *u, const uint8_t *p, size_t len) {
    unsigned need = u->need, lo = u->lo, hi = u->hi;
    size_t i = 0;

    if (need == UTF8_FAILED)
        return CC_WS_E_UTF8;
    while (i < len) {
        if (need == 0) {
            /* Text is mostly ASCII: skip it a word (two words) at a time. */
            while (i + 16 <= len) {
                uint64_t a, b;
                memcpy(&a, p + i, 8);
                memcpy(&b, p + i + 8, 8);
                if ((a | b) & ASCII_MASK8)
                    break;
                i += 16;
            }
            while (i + 8 <= len) {
                uint64_t a;
                memcpy(&a, p + i, 8);
                if (a & ASCII_MASK8)
                    break;
                i += 8;
            }
            while (i < len && p[i] < 0x80)
                i++;
            if (i >= len)
                break;
            unsigned c = p[i++];
            /* Lead byte: the range of its first continuation byte excludes overlongs (E0, F0),
             * surrogates (ED) and code points above U+10FFFF (F4). */
            if (c < 0xc2) {
                goto error; /* stray continuation byte, or overlong C0/C1 */
            } else if (c < 0xe0) {
                need = 1;
                lo = 0x80;
                hi = 0xbf;
            } else if (c < 0xf0) {
                need = 2;
                lo = c == 0xe0 ? 0xa0 : 0x80;
                hi = c == 0xed ? 0x9f : 0xbf;
            } else if (c < 0xf5) {
                need = 3;
                lo = c == 0xf0 ? 0x90 : 0x80;
                hi = c == 0xf4 ? 0x8f : 0xbf;
            } else {
                goto error;
            }
        } else {
            unsigned c = p[i++];
            if (c < lo || c > hi)
                goto error;
            need--;
            lo = 0x80;
            hi = 0xbf;
        }
    }
    u->need = (uint8_t)need;
    u->lo = (uint8_t)lo;
    u->hi = (uint8_t)hi;
    return CC_WS_OK;
error:
    u->need = UTF8_FAILED;
    return CC_WS_E_UTF8;
}

cc_ws_result_t cc_ws_utf8_finish(const cc_ws_utf8_t *u) {
    if (u->need == UTF8_FAILED)
        return CC_WS_E_UTF8;
    return u->need ? CC_WS_E_UTF8_TRUNCATED : CC_WS_OK;
}

cc_ws_result_t cc_ws_utf8_validate(const uint8_t *p, size_t len) {
    cc_ws_utf8_t u;
    cc_ws_result_t r;

    cc_ws_utf8_init(&u);
    r = cc_ws_utf8_feed(&u, p, len);
    return r != CC_WS_OK ? r : cc_ws_utf8_finish(&u);
}
