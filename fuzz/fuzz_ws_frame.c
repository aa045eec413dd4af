/* libFuzzer target: the WebSocket frame parser fed arbitrary bytes in arbitrary pieces, with
 * cross-checks (spans inside the buffer or the caller's sink, text re-validated, close frames
 * echoed and re-parsed, compressed messages inflated under a small limit). Must not leak or read
 * or write out of bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws/ws.h"

#define FUZZ_MAX_MESSAGE 4096
#define FUZZ_INFLATE_LIMIT 65536
/* Announced frames up to this size get a sink (flag 8); bigger ones stay in place. */
#define FUZZ_SINK_MAX (1 << 20)

static uint32_t next_rand(uint32_t *s) {
    *s = *s * 1103515245u + 12345u;
    return *s >> 16;
}

/* Our own close frame, masked like a client's, must parse back to the same code and reason. */
static void echo_close(const cc_ws_event_t *ev) {
    static const uint8_t key[4] = {1, 2, 3, 4};
    uint8_t out[CC_WS_MAX_CONTROL_FRAME], wire[CC_WS_MAX_CONTROL_FRAME + 4];
    unsigned code = ev->close_code == CC_WS_CLOSE_NO_STATUS ? 0 : ev->close_code;
    size_t n = cc_ws_build_close(out, code, (const char *)ev->data, ev->len);
    size_t h = cc_ws_write_header_masked(wire, CC_WS_OP_CLOSE, 1, 0, n - 2, key);
    memcpy(wire + h, out + 2, n - 2);
    cc_ws_mask(wire + h, n - 2, key, 0);
    cc_ws_parser_t p;
    cc_ws_event_t back;
    size_t used;
    cc_ws_parser_init(&p, 0, 0);
    if (cc_ws_parse(&p, wire, h + n - 2, &used, &back) != CC_WS_OK)
        abort();
    if (back.type != CC_WS_EV_CLOSE || back.close_code != ev->close_code || back.len != ev->len ||
        memcmp(back.data, ev->data, ev->len) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cc_ws_parser_t p;
    cc_ws_inflater_t inf;
    cc_ws_deflate_params_t prm = {0, 0, 15, 15};
    cc_ws_utf8_t u;
    uint8_t out[256], pong[CC_WS_MAX_CONTROL_FRAME];
    uint32_t seed;
    int inflating = 1;
    uint8_t *sink = NULL;
    size_t sink_len = 0, sink_pos = 0;

    if (size < 2)
        return 0;
    uint8_t flags = data[0];
    seed = data[1] | (uint32_t)flags << 8;
    data += 2;
    size -= 2;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    cc_ws_parser_init(&p, (flags & 2) ? FUZZ_MAX_MESSAGE : 0, flags & 1);
    if (flags & 8)
        p.announce_min = 1 + ((flags >> 4) & 7) * 16u;
    prm.client_no_context_takeover = (flags >> 2) & 1;
    if (cc_ws_inflater_init(&inf, &prm, FUZZ_INFLATE_LIMIT) != CC_WS_OK) {
        free(buf);
        return 0;
    }
    cc_ws_utf8_init(&u);

    size_t pos = 0;
    while (pos < size) {
        size_t piece = (flags & 0x80) ? size - pos : 1 + next_rand(&seed) % 64;
        if (piece > size - pos)
            piece = size - pos;
        size_t end = pos + piece;
        while (pos < end) {
            cc_ws_event_t ev;
            size_t used;
            cc_ws_result_t r = cc_ws_parse(&p, buf + pos, end - pos, &used, &ev);
            if (r == CC_WS_INCOMPLETE) {
                if (used != end - pos)
                    abort();
                pos = end;
                break;
            }
            if (r != CC_WS_OK) {
                if (cc_ws_close_code(r) == 0 || !cc_ws_reason(r))
                    abort();
                goto done;
            }
            if (used == 0 || used > end - pos)
                abort();
            if (ev.type == CC_WS_EV_FRAME) {
                if (!p.announce_min || ev.len < p.announce_min || sink_pos != sink_len)
                    abort();
                free(sink);
                sink = NULL;
                sink_len = sink_pos = 0;
                if (ev.len <= FUZZ_SINK_MAX && (next_rand(&seed) & 3)) {
                    sink = malloc(ev.len);
                    if (!sink)
                        goto done;
                    sink_len = ev.len;
                    p.sink = sink;
                }
            } else if (ev.type == CC_WS_EV_DATA) {
                if (sink_pos < sink_len) {
                    if (ev.data != sink + sink_pos || !ev.len || ev.len > sink_len - sink_pos)
                        abort();
                    sink_pos += ev.len;
                } else if (ev.len && (ev.data < buf + pos || ev.data + ev.len > buf + pos + used)) {
                    abort();
                }
                if (ev.first)
                    cc_ws_utf8_init(&u);
                if (ev.opcode == CC_WS_OP_TEXT && !ev.compressed) {
                    /* The parser already validated this span: so must the validator. */
                    if (cc_ws_utf8_feed(&u, ev.data, ev.len) != CC_WS_OK)
                        abort();
                    if (ev.last && cc_ws_utf8_finish(&u) != CC_WS_OK)
                        abort();
                } else if (ev.compressed && inflating) {
                    const uint8_t *ip = ev.data;
                    size_t left = ev.len, iu, made;
                    do {
                        r = cc_ws_inflate(&inf, ip, left, ev.last, out, sizeof(out), &iu, &made);
                        ip += iu;
                        left -= iu;
                        if (made > sizeof(out))
                            abort();
                    } while (r == CC_WS_INCOMPLETE);
                    if (r != CC_WS_OK)
                        inflating = 0; /* the server would close here */
                }
            } else if (ev.type == CC_WS_EV_PING) {
                if (ev.len > CC_WS_MAX_CONTROL_PAYLOAD ||
                    cc_ws_build_pong(pong, ev.data, ev.len) != 2 + ev.len)
                    abort();
            } else if (ev.type == CC_WS_EV_CLOSE) {
                echo_close(&ev);
            } else if (ev.type != CC_WS_EV_PONG) {
                abort();
            }
            pos += used;
        }
    }
done:
    cc_ws_inflater_free(&inf);
    free(sink);
    free(buf);
    return 0;
}
