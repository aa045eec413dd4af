/* RFC 6455 framing, server side: an incremental parser that unmasks payloads in the caller's
 * buffer and hands them out as spans, and a writer of (unmasked) frame headers and control
 * frames. No allocation, no I/O; the parser never reads past the bytes it is given. */
#include <string.h>

#include "ws/ws.h"

#define WS_FIN 0x80
#define WS_RSV1 0x40
#define WS_RSV2 0x20
#define WS_RSV3 0x10
#define WS_OPCODE 0x0f
#define WS_MASKED 0x80
#define WS_LEN7 0x7f
#define WS_LEN16 126
#define WS_LEN64 127
#define WS_CLOSE_REASON_MAX (CC_WS_MAX_CONTROL_PAYLOAD - 2)

enum { ST_HEADER = 0, ST_PAYLOAD, ST_CLOSED, ST_FAILED };

static const char *const reasons[CC_WS_E__COUNT] = {
    [CC_WS_OK] = "ok",
    [CC_WS_INCOMPLETE] = "incomplete",
    [CC_WS_E_UNMASKED] = "client frame not masked",
    [CC_WS_E_RSV23] = "reserved bit RSV2/RSV3 set",
    [CC_WS_E_RSV1_UNNEGOTIATED] = "RSV1 set without permessage-deflate",
    [CC_WS_E_RSV1_CONTROL] = "RSV1 set on a control frame",
    [CC_WS_E_RSV1_CONTINUATION] = "RSV1 set on a continuation frame",
    [CC_WS_E_OPCODE] = "reserved opcode",
    [CC_WS_E_LENGTH] = "64-bit payload length with the top bit set",
    [CC_WS_E_CONTROL_TOO_LONG] = "control frame payload over 125 bytes",
    [CC_WS_E_CONTROL_FRAGMENTED] = "fragmented control frame",
    [CC_WS_E_BAD_CONTINUATION] = "continuation frame without a message in progress",
    [CC_WS_E_MESSAGE_IN_PROGRESS] = "new data frame while a fragmented message is in progress",
    [CC_WS_E_CLOSE_PAYLOAD] = "close frame with a 1-byte payload",
    [CC_WS_E_CLOSE_CODE] = "invalid close code",
    [CC_WS_E_AFTER_CLOSE] = "data after a close frame",
    [CC_WS_E_UTF8] = "invalid UTF-8 in a text message",
    [CC_WS_E_UTF8_TRUNCATED] = "text message ends inside a UTF-8 sequence",
    [CC_WS_E_CLOSE_REASON_UTF8] = "invalid UTF-8 in the close reason",
    [CC_WS_E_INFLATE] = "invalid compressed data",
    [CC_WS_E_TOO_BIG] = "message too big",
    [CC_WS_E_NOMEM] = "out of memory",
    [CC_WS_E_ZLIB] = "compression error",
    [CC_WS_E_BAD_KEY] = "invalid Sec-WebSocket-Key",
};

const char *cc_ws_reason(cc_ws_result_t r) {
    if ((unsigned)r >= CC_WS_E__COUNT)
        return "unknown error";
    return reasons[r];
}

int cc_ws_close_code(cc_ws_result_t r) {
    if (r >= CC_WS_E_UNMASKED && r <= CC_WS_E_AFTER_CLOSE)
        return CC_WS_CLOSE_PROTOCOL_ERROR;
    if (r >= CC_WS_E_UTF8 && r <= CC_WS_E_INFLATE)
        return CC_WS_CLOSE_INVALID_DATA;
    if (r == CC_WS_E_TOO_BIG)
        return CC_WS_CLOSE_TOO_BIG;
    if (r == CC_WS_E_NOMEM || r == CC_WS_E_ZLIB)
        return CC_WS_CLOSE_INTERNAL;
    return 0;
}

int cc_ws_close_code_valid(unsigned code) {
    /* 1004 is reserved, 1005/1006/1015 are local-only; 1012+ are not in RFC 6455's list and
     * 0-999, 2000-2999 are unassigned. 3000-4999: registered and private use. */
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

/* ---- masking ------------------------------------------------------------------------------ */

typedef uint8_t ws_v16 __attribute__((vector_size(16)));

unsigned cc_ws_mask_copy(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4],
                         unsigned off) {
    uint8_t k[16];
    size_t i = 0;

    for (unsigned j = 0; j < 16; j++)
        k[j] = key[(off + j) & 3];
    if (len >= 16) {
        ws_v16 kv, a, b;
        memcpy(&kv, k, 16);
        for (; i + 32 <= len; i += 32) {
            memcpy(&a, src + i, 16);
            memcpy(&b, src + i + 16, 16);
            a ^= kv;
            b ^= kv;
            memcpy(dst + i, &a, 16);
            memcpy(dst + i + 16, &b, 16);
        }
        for (; i + 16 <= len; i += 16) {
            memcpy(&a, src + i, 16);
            a ^= kv;
            memcpy(dst + i, &a, 16);
        }
    }
    if (i + 8 <= len) {
        uint64_t w, kw;
        memcpy(&kw, k, 8);
        memcpy(&w, src + i, 8);
        w ^= kw;
        memcpy(dst + i, &w, 8);
        i += 8;
    }
    /* Every block above is a multiple of 4 bytes, so the key phase is still k[0]. */
    for (unsigned j = 0; i < len; i++, j++)
        dst[i] = src[i] ^ k[j];
    return (unsigned)((off + len) & 3);
}

unsigned cc_ws_mask(uint8_t *data, size_t len, const uint8_t key[4], unsigned off) {
    return cc_ws_mask_copy(data, data, len, key, off);
}

/* ---- parser -------------------------------------------------------------------------------- */

void cc_ws_parser_init(cc_ws_parser_t *p, uint64_t max_message, int allow_rsv1) {
    memset(p, 0, sizeof(*p));
    p->max_message = max_message;
    p->allow_rsv1 = allow_rsv1 ? 1 : 0;
    cc_ws_utf8_init(&p->utf8);
}

static cc_ws_result_t fail(cc_ws_parser_t *p, cc_ws_result_t r) {
    p->state = ST_FAILED;
    p->error = (uint8_t)r;
    return r;
}

/* Checks what the first two header bytes alone decide, so bad frames fail before their
 * extended length or payload arrive. */
static cc_ws_result_t check_first_bytes(const cc_ws_parser_t *p, uint8_t b0, uint8_t b1) {
    unsigned op = b0 & WS_OPCODE;

    if (b0 & (WS_RSV2 | WS_RSV3))
        return CC_WS_E_RSV23;
    if (op >= 3 && op != CC_WS_OP_CLOSE && op != CC_WS_OP_PING && op != CC_WS_OP_PONG)
        return CC_WS_E_OPCODE;
    if (op & 8) {
        if (b0 & WS_RSV1)
            return CC_WS_E_RSV1_CONTROL;
        if (!(b0 & WS_FIN))
            return CC_WS_E_CONTROL_FRAGMENTED;
        if ((b1 & WS_LEN7) > CC_WS_MAX_CONTROL_PAYLOAD)
            return CC_WS_E_CONTROL_TOO_LONG;
    } else if (op == CC_WS_OP_CONT) {
        if (!p->msg_opcode)
            return CC_WS_E_BAD_CONTINUATION;
        if (b0 & WS_RSV1)
            return CC_WS_E_RSV1_CONTINUATION;
    } else {
        if (p->msg_opcode)
            return CC_WS_E_MESSAGE_IN_PROGRESS;
        if ((b0 & WS_RSV1) && !p->allow_rsv1)
            return CC_WS_E_RSV1_UNNEGOTIATED;
    }
    if (!(b1 & WS_MASKED))
        return CC_WS_E_UNMASKED;
    return CC_WS_OK;
}

static size_t header_size(uint8_t b1) {
    unsigned l = b1 & WS_LEN7;
    return 2 + (l == WS_LEN16 ? 2 : l == WS_LEN64 ? 8 : 0) + 4;
}

/* The header h (complete, size hsize) has passed check_first_bytes: set up the frame. */
static cc_ws_result_t start_frame(cc_ws_parser_t *p, const uint8_t *h, size_t hsize) {
    uint64_t plen = h[1] & WS_LEN7;
    unsigned op = h[0] & WS_OPCODE;

    if (plen == WS_LEN16) {
        plen = ((uint64_t)h[2] << 8) | h[3];
    } else if (plen == WS_LEN64) {
        if (h[2] & 0x80)
            return CC_WS_E_LENGTH;
        plen = 0;
        for (int i = 2; i < 10; i++)
            plen = (plen << 8) | h[i];
    }
    memcpy(p->mask, h + hsize - 4, 4);
    p->mask_off = 0;
    p->sink = NULL; /* a sink is only ever for the frame it was set after */
    p->remaining = plen;
    p->opcode = (uint8_t)op;
    p->fin = (h[0] & WS_FIN) ? 1 : 0;
    p->ctl_len = 0;
    if (op & 8)
        return CC_WS_OK;
    if (op != CC_WS_OP_CONT) {
        p->msg_opcode = (uint8_t)op;
        p->msg_compressed = (h[0] & WS_RSV1) ? 1 : 0;
        p->msg_delivered = 0;
        p->msg_len = 0;
        cc_ws_utf8_init(&p->utf8);
    }
    /* Checked against the frame header so an oversized message fails before its payload.
     * max_message may have been lowered below msg_len since the last frame: no wrap then. */
    if (p->max_message && (p->msg_len > p->max_message || plen > p->max_message - p->msg_len))
        return CC_WS_E_TOO_BIG;
    p->msg_len += plen;
    return CC_WS_OK;
}

/* A control frame's payload is complete in p->ctl. */
static cc_ws_result_t finish_control(cc_ws_parser_t *p, cc_ws_event_t *ev) {
    memset(ev, 0, sizeof(*ev));
    ev->data = p->ctl;
    ev->len = p->ctl_len;
    p->state = ST_HEADER;
    if (p->opcode == CC_WS_OP_PING) {
        ev->type = CC_WS_EV_PING;
    } else if (p->opcode == CC_WS_OP_PONG) {
        ev->type = CC_WS_EV_PONG;
    } else {
        ev->type = CC_WS_EV_CLOSE;
        if (p->ctl_len == 1)
            return fail(p, CC_WS_E_CLOSE_PAYLOAD);
        if (p->ctl_len == 0) {
            ev->close_code = CC_WS_CLOSE_NO_STATUS;
        } else {
            ev->close_code = (uint16_t)((p->ctl[0] << 8) | p->ctl[1]);
            if (!cc_ws_close_code_valid(ev->close_code))
                return fail(p, CC_WS_E_CLOSE_CODE);
            if (cc_ws_utf8_validate(p->ctl + 2, p->ctl_len - 2u) != CC_WS_OK)
                return fail(p, CC_WS_E_CLOSE_REASON_UTF8);
            ev->data = p->ctl + 2;
            ev->len = p->ctl_len - 2u;
        }
        p->state = ST_CLOSED;
    }
    return CC_WS_OK;
}

/* Hand out a data span (possibly empty) of the current message; *p stays in ST_PAYLOAD or
 * returns to ST_HEADER when the frame is done. */
static cc_ws_result_t emit_data(cc_ws_parser_t *p, const uint8_t *data, size_t n,
                                cc_ws_event_t *ev) {
    int last = p->remaining == 0 && p->fin;

    if (p->msg_opcode == CC_WS_OP_TEXT && !p->msg_compressed) {
        cc_ws_result_t r = cc_ws_utf8_feed(&p->utf8, data, n);
        if (r == CC_WS_OK && last)
            r = cc_ws_utf8_finish(&p->utf8);
        if (r != CC_WS_OK)
            return fail(p, r);
    }
    ev->type = CC_WS_EV_DATA;
    ev->opcode = p->msg_opcode;
    ev->first = !p->msg_delivered;
    ev->last = (uint8_t)last;
    ev->compressed = p->msg_compressed;
    ev->data = data;
    ev->len = n;
    ev->close_code = 0;
    p->msg_delivered = 1;
    if (p->remaining == 0)
        p->state = ST_HEADER;
    if (last)
        p->msg_opcode = 0;
    return CC_WS_OK;
}

cc_ws_result_t cc_ws_parse(cc_ws_parser_t *p, uint8_t *buf, size_t len, size_t *consumed,
                           cc_ws_event_t *ev) {
    size_t pos = 0;
    cc_ws_result_t r;

    *consumed = 0;
    if (p->state == ST_FAILED)
        return (cc_ws_result_t)p->error;
    if (len == 0)
        return CC_WS_INCOMPLETE; /* also keeps a NULL buf out of any pointer arithmetic */
    for (;;) {
        switch (p->state) {
        case ST_HEADER: {
            const uint8_t *h;
            size_t hsize;
            if (pos == len) {
                *consumed = pos;
                return CC_WS_INCOMPLETE;
            }
            if (p->hdr_len == 0 && len - pos >= 2 && len - pos >= header_size(buf[pos + 1])) {
                /* Common case: the whole header is in the buffer; parse it where it lies. */
                h = buf + pos;
                r = check_first_bytes(p, h[0], h[1]);
                if (r != CC_WS_OK)
                    return fail(p, r);
                hsize = header_size(h[1]);
                pos += hsize;
            } else {
                /* Gather a split header byte by byte into p->hdr. */
                p->hdr[p->hdr_len++] = buf[pos++];
                if (p->hdr_len == 2) {
                    r = check_first_bytes(p, p->hdr[0], p->hdr[1]);
                    if (r != CC_WS_OK)
                        return fail(p, r);
                }
                if (p->hdr_len < 2 || p->hdr_len < header_size(p->hdr[1]))
                    continue;
                h = p->hdr;
                hsize = p->hdr_len;
                p->hdr_len = 0;
            }
            r = start_frame(p, h, hsize);
            if (r != CC_WS_OK)
                return fail(p, r);
            p->state = ST_PAYLOAD;
            if (p->remaining == 0) {
                if (p->opcode & 8) {
                    *consumed = pos;
                    return finish_control(p, ev);
                }
                if (p->fin) {
                    *consumed = pos;
                    return emit_data(p, buf + pos, 0, ev);
                }
                p->state = ST_HEADER; /* empty non-final fragment: nothing to hand out */
            } else if (!(p->opcode & 8) && p->announce_min && p->remaining >= p->announce_min) {
                *consumed = pos;
                memset(ev, 0, sizeof(*ev));
                ev->type = CC_WS_EV_FRAME;
                ev->opcode = p->msg_opcode;
                ev->first = !p->msg_delivered;
                ev->last = p->fin;
                ev->compressed = p->msg_compressed;
                ev->len = (size_t)p->remaining;
                return CC_WS_OK;
            }
            break;
        }
        case ST_PAYLOAD: {
            size_t n = len - pos;
            if (n > p->remaining)
                n = (size_t)p->remaining;
            if (p->opcode & 8) {
                memcpy(p->ctl + p->ctl_len, buf + pos, n);
                p->mask_off = (uint8_t)cc_ws_mask(p->ctl + p->ctl_len, n, p->mask, p->mask_off);
                p->ctl_len = (uint8_t)(p->ctl_len + n);
                p->remaining -= n;
                pos += n;
                if (p->remaining == 0) {
                    *consumed = pos;
                    return finish_control(p, ev);
                }
                *consumed = pos;
                return CC_WS_INCOMPLETE;
            }
            if (n == 0) {
                *consumed = pos;
                return CC_WS_INCOMPLETE;
            }
            uint8_t *span = buf + pos;
            if (p->sink) {
                span = p->sink;
                p->sink += n;
            }
            p->mask_off = (uint8_t)cc_ws_mask_copy(span, buf + pos, n, p->mask, p->mask_off);
            p->remaining -= n;
            if (p->remaining == 0)
                p->sink = NULL;
            *consumed = pos + n;
            return emit_data(p, span, n, ev);
        }
        case ST_CLOSED:
            if (pos == len) {
                *consumed = pos;
                return CC_WS_INCOMPLETE;
            }
            return fail(p, CC_WS_E_AFTER_CLOSE);
        default:
            return (cc_ws_result_t)p->error;
        }
    }
}

/* ---- writer -------------------------------------------------------------------------------- */

static size_t put_header(uint8_t *out, unsigned opcode, int fin, int rsv1, uint64_t len,
                         uint8_t mask_bit) {
    out[0] = (uint8_t)((fin ? WS_FIN : 0) | (rsv1 ? WS_RSV1 : 0) | (opcode & WS_OPCODE));
    if (len < WS_LEN16) {
        out[1] = (uint8_t)(mask_bit | len);
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = mask_bit | WS_LEN16;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = mask_bit | WS_LEN64;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

size_t cc_ws_write_header(uint8_t *out, unsigned opcode, int fin, int rsv1, uint64_t len) {
    return put_header(out, opcode, fin, rsv1, len, 0);
}

size_t cc_ws_write_header_masked(uint8_t *out, unsigned opcode, int fin, int rsv1, uint64_t len,
                                 const uint8_t key[4]) {
    size_t n = put_header(out, opcode, fin, rsv1, len, WS_MASKED);
    memcpy(out + n, key, 4);
    return n + 4;
}

size_t cc_ws_build_close(uint8_t *out, unsigned code, const char *reason, size_t reason_len) {
    if (code == 0)
        return cc_ws_write_header(out, CC_WS_OP_CLOSE, 1, 0, 0);
    if (reason_len > WS_CLOSE_REASON_MAX) {
        /* Cut before a continuation byte so the reason stays valid UTF-8. */
        reason_len = WS_CLOSE_REASON_MAX;
        while (reason_len > 0 && ((uint8_t)reason[reason_len] & 0xc0) == 0x80)
            reason_len--;
    }
    size_t n = cc_ws_write_header(out, CC_WS_OP_CLOSE, 1, 0, 2 + reason_len);
    out[n] = (uint8_t)(code >> 8);
    out[n + 1] = (uint8_t)code;
    if (reason_len)
        memcpy(out + n + 2, reason, reason_len);
    return n + 2 + reason_len;
}

static size_t build_control(uint8_t *out, unsigned opcode, const uint8_t *payload, size_t len) {
    if (len > CC_WS_MAX_CONTROL_PAYLOAD)
        len = CC_WS_MAX_CONTROL_PAYLOAD;
    size_t n = cc_ws_write_header(out, opcode, 1, 0, len);
    if (len)
        memcpy(out + n, payload, len);
    return n + len;
}

size_t cc_ws_build_pong(uint8_t *out, const uint8_t *payload, size_t len) {
    return build_control(out, CC_WS_OP_PONG, payload, len);
}

size_t cc_ws_build_ping(uint8_t *out, const uint8_t *payload, size_t len) {
    return build_control(out, CC_WS_OP_PING, payload, len);
}
