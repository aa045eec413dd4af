/* Helpers shared by the WebSocket C tests: build masked client frames, and drive the parser over
 * a wire image split in many ways, reducing the events to a transcript string to compare.
 * Test-only code: it allocates freely and aborts on allocation failure. */
#ifndef CC_WS_TEST_UTIL_H
#define CC_WS_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws/ws.h"

/* Not every test binary uses every helper. */
#define WS_UTIL static __attribute__((unused))

#define WIRE_FIN 0x80
#define WIRE_RSV1 0x40
#define WIRE_RSV2 0x20
#define WIRE_RSV3 0x10

static const uint8_t test_key[4] = {0x37, 0xfa, 0x21, 0x3d};

WS_UTIL void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        perror("malloc");
        abort();
    }
    return p;
}

/* A growable byte string for wire images and transcripts. */
typedef struct {
    uint8_t *p;
    size_t len, cap;
} bytes_t;

WS_UTIL void b_put(bytes_t *b, const void *d, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap)
            cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np)
            abort();
        b->p = np;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = 0;
}

WS_UTIL void b_str(bytes_t *b, const char *s) {
    b_put(b, s, strlen(s));
}
WS_UTIL void b_free(bytes_t *b) {
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Appends one client frame: b0 carries FIN/RSV bits and the opcode. Masked with test_key. */
WS_UTIL void frame_raw(bytes_t *w, uint8_t b0, const void *payload, size_t len) {
    uint8_t h[CC_WS_MAX_HEADER];
    size_t hn = cc_ws_write_header_masked(h, b0 & 0x0f, 0, 0, len, test_key);
    h[0] = b0;
    b_put(w, h, hn);
    size_t at = w->len;
    b_put(w, payload, len);
    cc_ws_mask(w->p + at, len, test_key, 0);
}

WS_UTIL void frame(bytes_t *w, int fin, unsigned op, const void *payload, size_t len) {
    frame_raw(w, (uint8_t)((fin ? WIRE_FIN : 0) | op), payload, len);
}

WS_UTIL void frame_s(bytes_t *w, int fin, unsigned op, const char *s) {
    frame(w, fin, op, s, strlen(s));
}

WS_UTIL uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

/* Transcript entry for a message/control payload: short printable ones verbatim. */
WS_UTIL void t_payload(bytes_t *t, const char *tag, const uint8_t *p, size_t n) {
    char tmp[64];
    b_str(t, tag);
    if (n <= 40) {
        b_str(t, "(");
        for (size_t i = 0; i < n; i++) {
            if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\') {
                b_put(t, p + i, 1);
            } else {
                snprintf(tmp, sizeof(tmp), "\\x%02x", p[i]);
                b_str(t, tmp);
            }
        }
        b_str(t, ")");
    } else {
        snprintf(tmp, sizeof(tmp), "{%zu,%016llx}", n, (unsigned long long)fnv1a(p, n));
        b_str(t, tmp);
    }
}

typedef struct {
    uint64_t max_message;
    int allow_rsv1;
    uint64_t announce_min; /* > 0: announce frames, give two of every three a sink */
} drive_opts_t;

/* Feeds wire[0..len) in the given chunks (cuts: ascending offsets, ncuts of them) to a fresh
 * parser. Returns the final result (CC_WS_INCOMPLETE when all input was used) and appends the
 * transcript: "T(..)"/"B(..)" per message (z suffix if compressed), "P(..)", "O(..)" (pong),
 * "C<code>(..)", and "!<close code>" on error. Checks span invariants on the way. */
WS_UTIL cc_ws_result_t drive(const uint8_t *wire, size_t len, const size_t *cuts, size_t ncuts,
                             const drive_opts_t *o, bytes_t *t, int *bad) {
    cc_ws_parser_t p;
    uint8_t *buf = xmalloc(len);
    bytes_t msg = {0};
    cc_ws_result_t r = CC_WS_INCOMPLETE;
    int in_msg = 0;
    char tmp[32];

    /* Sink mode: the frame being unmasked into sink[0..sink_len), sink_pos written so far. */
    uint8_t *sink = NULL;
    size_t sink_len = 0, sink_pos = 0, announced = 0;

    memcpy(buf, wire, len);
    cc_ws_parser_init(&p, o->max_message, o->allow_rsv1);
    p.announce_min = o->announce_min;
    for (size_t c = 0; c <= ncuts; c++) {
        size_t start = c == 0 ? 0 : cuts[c - 1], end = c == ncuts ? len : cuts[c];
        size_t pos = start;
        while (pos < end) {
            cc_ws_event_t ev;
            size_t used = 0;
            r = cc_ws_parse(&p, buf + pos, end - pos, &used, &ev);
            if (r == CC_WS_INCOMPLETE) {
                if (used != end - pos)
                    *bad = 1;
                pos = end;
                break;
            }
            if (r != CC_WS_OK) {
                snprintf(tmp, sizeof(tmp), "!%d", cc_ws_close_code(r));
                b_str(t, tmp);
                goto done;
            }
            if (used > end - pos)
                *bad = 1;
            if (ev.type == CC_WS_EV_FRAME) {
                /* Announced before any payload, only when asked, never twice in a row without
                 * the previous sink filled. */
                if (!o->announce_min || ev.len < o->announce_min || ev.data || sink_pos != sink_len)
                    *bad = 1;
                if (ev.first != !in_msg)
                    *bad = 1;
                free(sink);
                sink = NULL;
                sink_len = sink_pos = 0;
                if (announced++ % 3 != 2) {
                    sink = xmalloc(ev.len);
                    sink_len = ev.len;
                    p.sink = sink;
                }
            } else if (ev.type == CC_WS_EV_DATA) {
                if (sink_pos < sink_len) {
                    /* Spans of a sunk frame follow each other in the sink. */
                    if (ev.data != sink + sink_pos || ev.len > sink_len - sink_pos || !ev.len)
                        *bad = 1;
                    else
                        sink_pos += ev.len;
                    if (sink_pos == sink_len && p.sink)
                        *bad = 1; /* the parser must drop the sink at the frame's end */
                } else if (ev.len && (ev.data < buf + pos || ev.data + ev.len > buf + pos + used)) {
                    *bad = 1;
                }
                if (ev.first != !in_msg)
                    *bad = 1;
                b_put(&msg, ev.data, ev.len);
                in_msg = 1;
                if (ev.last) {
                    const char *tag = ev.opcode == CC_WS_OP_TEXT ? (ev.compressed ? "Tz" : "T")
                                                                 : (ev.compressed ? "Bz" : "B");
                    t_payload(t, tag, msg.p, msg.len);
                    msg.len = 0;
                    in_msg = 0;
                }
            } else if (ev.type == CC_WS_EV_PING) {
                t_payload(t, "P", ev.data, ev.len);
            } else if (ev.type == CC_WS_EV_PONG) {
                t_payload(t, "O", ev.data, ev.len);
            } else if (ev.type == CC_WS_EV_CLOSE) {
                snprintf(tmp, sizeof(tmp), "C%u", ev.close_code);
                t_payload(t, tmp, ev.data, ev.len);
            } else {
                *bad = 1;
            }
            pos += used;
            if (used == 0)
                *bad = 1;
            r = CC_WS_INCOMPLETE;
        }
    }
done:
    free(buf);
    free(sink);
    b_free(&msg);
    return r;
}

/* Runs drive() over: the whole buffer, every single split point (or a sample for big inputs),
 * byte-at-a-time and a few chunk sizes. Every run must give `expect` and result `want`.
 * Returns the number of mismatching runs (printing the first). */
WS_UTIL int drive_all(const uint8_t *wire, size_t len, const drive_opts_t *o, const char *expect,
                      cc_ws_result_t want) {
    static const size_t chunk_sizes[] = {1, 2, 3, 7, 64, 1000};
    int mismatches = 0;
    size_t *cuts = xmalloc(sizeof(size_t) * (len + 1));
    size_t nruns = (len <= 4096 ? len + 1 : 64) + sizeof(chunk_sizes) / sizeof(chunk_sizes[0]);

    for (size_t run = 0; run < nruns; run++) {
        size_t ncuts = 0;
        size_t single = len <= 4096 ? len + 1 : 64;
        if (run < single) {
            size_t at = len <= 4096 ? run : (run < 32 ? run : len - (run - 32) * 97 % len);
            if (at > 0 && at < len)
                cuts[ncuts++] = at;
        } else {
            size_t cs = chunk_sizes[run - single];
            if (cs == 1 && len > 300000)
                continue;
            for (size_t at = cs; at < len; at += cs)
                cuts[ncuts++] = at;
        }
        /* Each split is parsed as asked and again with every frame announced (sinks): the
         * copy-saving path must give the same transcript. */
        for (int mode = 0; mode < 2; mode++) {
            drive_opts_t oo = *o;
            if (mode == 1) {
                if (o->announce_min)
                    break;
                oo.announce_min = 1;
            }
            bytes_t t = {0};
            int bad = 0;
            cc_ws_result_t r = drive(wire, len, cuts, ncuts, &oo, &t, &bad);
            if (r != want || bad || strcmp((const char *)t.p ? (const char *)t.p : "", expect)) {
                if (mismatches++ == 0)
                    fprintf(stderr,
                            "  run %zu (%zu cuts, announce %llu): result %d (%s) want %d, "
                            "bad=%d\n  got  %s\n  want %s\n",
                            run, ncuts, (unsigned long long)oo.announce_min, r, cc_ws_reason(r),
                            want, bad, t.p ? (char *)t.p : "", expect);
            }
            b_free(&t);
        }
    }
    free(cuts);
    return mismatches;
}

#endif
