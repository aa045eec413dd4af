/* Unit tests of the WebSocket frame parser and writer, and the handshake accept key. Each wire
 * image is fed whole, split at every byte and in small chunks; all runs must agree. */
#include "ws_runner.h"
#include "ws_test_util.h"

static const drive_opts_t plain = {0, 0, 0};
static const drive_opts_t deflate_on = {0, 1, 0};

#define EXPECT_WIRE(w, opts, expect, want)                                                         \
    CHECK_EQ_INT(drive_all((w).p, (w).len, (opts), (expect), (want)), 0)

static char *expect_msg(const char *tag, const uint8_t *p, size_t n) {
    bytes_t t = {0};
    t_payload(&t, tag, p, n);
    return (char *)t.p;
}

/* ---- framing: payload sizes and length encodings ----------------------------------------- */

TEST(test_sizes) {
    static const size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 1 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        uint8_t *payload = xmalloc(n);
        for (size_t j = 0; j < n; j++)
            payload[j] = (uint8_t)('a' + j % 26);
        for (unsigned op = CC_WS_OP_TEXT; op <= CC_WS_OP_BINARY; op++) {
            bytes_t w = {0};
            frame(&w, 1, op, payload, n);
            size_t hlen = n < 126 ? 6 : n <= 65535 ? 8 : 14;
            CHECK_EQ_INT(w.len, hlen + n);
            char *e = expect_msg(op == CC_WS_OP_TEXT ? "T" : "B", payload, n);
            EXPECT_WIRE(w, &plain, e, CC_WS_INCOMPLETE);
            free(e);
            b_free(&w);
        }
        free(payload);
    }
}

TEST(test_non_minimal_lengths_accepted) {
    /* RFC 6455 asks senders for the minimal form but receivers lose nothing by accepting. */
    bytes_t w = {0};
    uint8_t h16[] = {0x81, 0x80 | 126, 0, 5, 0, 0, 0, 0, 'h', 'e', 'l', 'l', 'o'};
    uint8_t h64[] = {0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 'a', 'b', 'c'};
    b_put(&w, h16, sizeof(h16));
    b_put(&w, h64, sizeof(h64));
    EXPECT_WIRE(w, &plain, "T(hello)B(abc)", CC_WS_INCOMPLETE);
    b_free(&w);
}

TEST(test_length_msb) {
    uint8_t h[] = {0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    bytes_t w = {0};
    b_put(&w, h, sizeof(h));
    EXPECT_WIRE(w, &plain, "!1002", CC_WS_E_LENGTH);
    b_free(&w);
}

TEST(test_unmasked) {
    uint8_t out[CC_WS_MAX_HEADER];
    bytes_t w = {0};
    size_t n = cc_ws_write_header(out, CC_WS_OP_TEXT, 1, 0, 2);
    b_put(&w, out, n);
    b_put(&w, "hi", 2);
    EXPECT_WIRE(w, &plain, "!1002", CC_WS_E_UNMASKED);
    b_free(&w);
}

TEST(test_several_frames_one_buffer) {
    bytes_t w = {0};
    frame_s(&w, 1, CC_WS_OP_TEXT, "one");
    frame_s(&w, 1, CC_WS_OP_BINARY, "two");
    frame_s(&w, 1, CC_WS_OP_TEXT, "");
    frame_s(&w, 1, CC_WS_OP_PING, "p");
    frame_s(&w, 1, CC_WS_OP_TEXT, "three");
    EXPECT_WIRE(w, &plain, "T(one)B(two)T()P(p)T(three)", CC_WS_INCOMPLETE);
    b_free(&w);
}

/* ---- pings and pongs ---------------------------------------------------------------------- */

TEST(test_ping_pong) {
    uint8_t big[126];
    memset(big, 'x', sizeof(big));
    bytes_t w = {0};
    frame(&w, 1, CC_WS_OP_PING, "", 0);
    frame(&w, 1, CC_WS_OP_PING, big, 125);
    frame_s(&w, 1, CC_WS_OP_PONG, "unsolicited");
    char *e125 = expect_msg("P", big, 125);
    bytes_t e = {0};
    b_str(&e, "P()");
    b_str(&e, e125);
    b_str(&e, "O(unsolicited)");
    EXPECT_WIRE(w, &plain, (char *)e.p, CC_WS_INCOMPLETE);
    free(e125);
    b_free(&e);
    b_free(&w);

    frame(&w, 1, CC_WS_OP_PING, big, 126);
    EXPECT_WIRE(w, &plain, "!1002", CC_WS_E_CONTROL_TOO_LONG);
    b_free(&w);
    frame(&w, 1, CC_WS_OP_PONG, big, 126);
    EXPECT_WIRE(w, &plain, "!1002", CC_WS_E_CONTROL_TOO_LONG);
    b_free(&w);
    frame_s(&w, 0, CC_WS_OP_PING, "frag");
    EXPECT_WIRE(w, &plain, "!1002", CC_WS_E_CONTROL_FRAGMENTED);
    b_free(&w);
}

TEST(test_control_error_before_payload) {
    /* A 126-byte ping fails on its first two bytes: no need to wait for the payload. */
    uint8_t h[] = {0x89, 0x80 | 126};
    cc_ws_parser_t p;
    cc_ws_event_t ev;
    size_t used;
    cc_ws_parser_init(&p, 0, 0);
    CHECK_EQ_INT(cc_ws_parse(&p, h, 1, &used, &ev), CC_WS_INCOMPLETE);
    CHECK_EQ_INT(cc_ws_parse(&p, h + 1, 1, &used, &ev), CC_WS_E_CONTROL_TOO_LONG);
}

TEST(test_build_pong_ping) {
    uint8_t out[CC_WS_MAX_CONTROL_FRAME], pl[200];
    memset(pl, 'q', sizeof(pl));
    size_t n = cc_ws_build_pong(out, (const uint8_t *)"abc", 3);
    CHECK_EQ_INT(n, 5);
    CHECK(memcmp(out,
                 "\x8a\x03"
                 "abc",
                 5) == 0);
    n = cc_ws_build_pong(out, pl, 200);
    CHECK_EQ_INT(n, 127);
    CHECK_EQ_INT(out[1], 125);
    n = cc_ws_build_ping(out, NULL, 0);
    CHECK_EQ_INT(n, 2);
    CHECK(memcmp(out, "\x89\x00", 2) == 0);
}

/* ---- reserved bits and opcodes ----------------------------------------------------------- */

TEST(test_reserved_bits) {
    bytes_t w = {0};
    frame_raw(&w, WIRE_FIN | WIRE_RSV1 | CC_WS_OP_TEXT, "x", 1);
    EXPECT_WIRE(w, &plain, "!1002", CC_WS_E_RSV1_UNNEGOTIATED);
    EXPECT_WIRE(w, &deflate_on, "Tz(x)", CC_WS_INCOMPLETE);
    b_free(&w);
    frame_raw(&w, WIRE_FIN | WIRE_RSV2 | CC_WS_OP_TEXT, "x", 1);
    EXPECT_WIRE(w, &deflate_on, "!1002", CC_WS_E_RSV23);
    b_free(&w);
    frame_raw(&w, WIRE_FIN | WIRE_RSV3 | CC_WS_OP_BINARY, "x", 1);
    EXPECT_WIRE(w, &deflate_on, "!1002", CC_WS_E_RSV23);
    b_free(&w);
    frame_raw(&w, WIRE_FIN | WIRE_RSV1 | WIRE_RSV2 | WIRE_RSV3 | CC_WS_OP_PING, "x", 1);
    EXPECT_WIRE(w, &deflate_on, "!1002", CC_WS_E_RSV23);
    b_free(&w);
    /* RSV1 only on the first frame of a message, never on control frames. */
    frame_raw(&w, WIRE_RSV1 | CC_WS_OP_TEXT, "a", 1);
    frame_raw(&w, WIRE_FIN | WIRE_RSV1 | CC_WS_OP_CONT, "b", 1);
    EXPECT_WIRE(w, &deflate_on, "!1002", CC_WS_E_RSV1_CONTINUATION);
    b_free(&w);
    frame_raw(&w, WIRE_FIN | WIRE_RSV1 | CC_WS_OP_PING, "a", 1);
    EXPECT_WIRE(w, &deflate_on, "!1002", CC_WS_E_RSV1_CONTROL);
    b_free(&w);
    frame_raw(&w, WIRE_FIN | WIRE_RSV1 | CC_WS_OP_CLOSE, "\x03\xe8", 2);
    EXPECT_WIRE(w, &deflate_on, "!1002", CC_WS_E_RSV1_CONTROL);
    b_free(&w);
    /* A good frame before the bad one is still delivered. */
    frame_s(&w, 1, CC_WS_OP_TEXT, "ok");
    frame_raw(&w, WIRE_FIN | WIRE_RSV2 | CC_WS_OP_TEXT, "x", 1);
    EXPECT_WIRE(w, &plain, "T(ok)!1002", CC_WS_E_RSV23);
    b_free(&w);
}

TEST(test_reserved_opcodes) {
    static const unsigned ops[] = {3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf};
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        bytes_t w = {0};
        frame_s(&w, 1, CC_WS_OP_TEXT, "before");
        frame_s(&w, 1, ops[i], "x");
        EXPECT_WIRE(w, &plain, "T(before)!1002", CC_WS_E_OPCODE);
        b_free(&w);
    }
}

/* ---- fragmentation ------------------------------------------------------------------------- */

TEST(test_fragmentation) {
    bytes_t w = {0};
    frame_s(&w, 0, CC_WS_OP_TEXT, "frag");
    frame_s(&w, 0, CC_WS_OP_CONT, "men");
    frame_s(&w, 1, CC_WS_OP_CONT, "ted");
    EXPECT_WIRE(w, &plain, "T(fragmented)", CC_WS_INCOMPLETE);
    b_free(&w);

    /* Control frames may come between fragments. */
    frame_s(&w, 0, CC_WS_OP_BINARY, "ab");
    frame_s(&w, 1, CC_WS_OP_PING, "p1");
    frame_s(&w, 0, CC_WS_OP_CONT, "cd");
    frame_s(&w, 1, CC_WS_OP_PONG, "o1");
    frame_s(&w, 1, CC_WS_OP_PING, "p2");
    frame_s(&w, 1, CC_WS_OP_CONT, "ef");
    frame_s(&w, 1, CC_WS_OP_TEXT, "next");
    EXPECT_WIRE(w, &plain, "P(p1)O(o1)P(p2)B(abcdef)T(next)", CC_WS_INCOMPLETE);
    b_free(&w);

    /* Empty fragments, including an empty first and last one. */
    frame_s(&w, 0, CC_WS_OP_TEXT, "");
    frame_s(&w, 0, CC_WS_OP_CONT, "x");
    frame_s(&w, 0, CC_WS_OP_CONT, "");
    frame_s(&w, 1, CC_WS_OP_CONT, "");
    frame_s(&w, 0, CC_WS_OP_BINARY, "");
    frame_s(&w, 1, CC_WS_OP_CONT, "");
    EXPECT_WIRE(w, &plain, "T(x)B()", CC_WS_INCOMPLETE);
    b_free(&w);

    /* A close frame in the middle of a message. */
    frame_s(&w, 0, CC_WS_OP_TEXT, "half");
    frame_s(&w, 1, CC_WS_OP_CLOSE, "\x03\xe8");
    EXPECT_WIRE(w, &plain, "C1000()", CC_WS_INCOMPLETE);
    b_free(&w);

    /* A long message in 1-byte fragments. */
    char expect[1100];
    frame_s(&w, 0, CC_WS_OP_TEXT, "");
    for (int i = 0; i < 300; i++)
        frame(&w, 0, CC_WS_OP_CONT, "abc" + i % 3, 1);
    frame_s(&w, 1, CC_WS_OP_CONT, "");
    uint8_t msg[300];
    for (int i = 0; i < 300; i++)
        msg[i] = (uint8_t) "abc"[i % 3];
    char *e = expect_msg("T", msg, 300);
    snprintf(expect, sizeof(expect), "%s", e);
    free(e);
    EXPECT_WIRE(w, &plain, expect, CC_WS_INCOMPLETE);
    b_free(&w);
}

TEST(test_fragmentation_errors) {
    bytes_t w = {0};
    frame_s(&w, 1, CC_WS_OP_CONT, "orphan");
    EXPECT_WIRE(w, &plain, "!1002", CC_WS_E_BAD_CONTINUATION);
    b_free(&w);
    frame_s(&w, 1, CC_WS_OP_TEXT, "done");
    frame_s(&w, 0, CC_WS_OP_CONT, "orphan");
    EXPECT_WIRE(w, &plain, "T(done)!1002", CC_WS_E_BAD_CONTINUATION);
    b_free(&w);
    frame_s(&w, 0, CC_WS_OP_TEXT, "one");
    frame_s(&w, 1, CC_WS_OP_TEXT, "two");
    EXPECT_WIRE(w, &plain, "!1002", CC_WS_E_MESSAGE_IN_PROGRESS);
    b_free(&w);
    frame_s(&w, 0, CC_WS_OP_BINARY, "one");
    frame_s(&w, 1, CC_WS_OP_PING, "p");
    frame_s(&w, 0, CC_WS_OP_BINARY, "two");
    EXPECT_WIRE(w, &plain, "P(p)!1002", CC_WS_E_MESSAGE_IN_PROGRESS);
    b_free(&w);
}

TEST(test_event_flags) {
    /* first/last/opcode/compressed on the spans of a fragmented compressed message. */
    bytes_t w = {0};
    frame_raw(&w, WIRE_RSV1 | CC_WS_OP_BINARY, "ab", 2);
    frame_raw(&w, WIRE_FIN | CC_WS_OP_CONT, "cd", 2);
    cc_ws_parser_t p;
    cc_ws_event_t ev;
    size_t used, pos = 0;
    cc_ws_parser_init(&p, 0, 1);
    CHECK_EQ_INT(cc_ws_parse(&p, w.p, w.len, &used, &ev), CC_WS_OK);
    CHECK(ev.type == CC_WS_EV_DATA && ev.first && !ev.last && ev.compressed);
    CHECK(ev.opcode == CC_WS_OP_BINARY && ev.len == 2 && memcmp(ev.data, "ab", 2) == 0);
    pos += used;
    CHECK_EQ_INT(cc_ws_parse(&p, w.p + pos, w.len - pos, &used, &ev), CC_WS_OK);
    CHECK(ev.type == CC_WS_EV_DATA && !ev.first && ev.last && ev.compressed);
    CHECK(ev.opcode == CC_WS_OP_BINARY && ev.len == 2 && memcmp(ev.data, "cd", 2) == 0);
    pos += used;
    CHECK_EQ_INT(pos, w.len);
    CHECK_EQ_INT(cc_ws_parse(&p, w.p + pos, 0, &used, &ev), CC_WS_INCOMPLETE);
    CHECK_EQ_INT(used, 0);
    b_free(&w);
}

TEST(test_unmask_in_place) {
    /* Payload spans point into the caller's buffer, unmasked there: no copy. */
    bytes_t w = {0};
    frame_s(&w, 1, CC_WS_OP_BINARY, "payload bytes");
    cc_ws_parser_t p;
    cc_ws_event_t ev;
    size_t used;
    cc_ws_parser_init(&p, 0, 0);
    CHECK_EQ_INT(cc_ws_parse(&p, w.p, w.len, &used, &ev), CC_WS_OK);
    CHECK(ev.data == w.p + 6);
    CHECK(memcmp(w.p + 6, "payload bytes", 13) == 0);
    b_free(&w);
}

/* ---- UTF-8 in text messages --------------------------------------------------------------- */

TEST(test_text_utf8) {
    static const char kosme[] = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";
    size_t n = strlen(kosme);
    /* Split across two fragments at every byte, so sequences straddle frames. */
    for (size_t at = 0; at <= n; at++) {
        bytes_t w = {0};
        frame(&w, 0, CC_WS_OP_TEXT, kosme, at);
        frame(&w, 1, CC_WS_OP_CONT, kosme + at, n - at);
        char *e = expect_msg("T", (const uint8_t *)kosme, n);
        EXPECT_WIRE(w, &plain, e, CC_WS_INCOMPLETE);
        free(e);
        b_free(&w);
    }
    bytes_t w = {0};
    frame_s(&w, 1, CC_WS_OP_TEXT,
            "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"
            "edited");
    EXPECT_WIRE(w, &plain, "!1007", CC_WS_E_UTF8);
    b_free(&w);
    /* Fail fast: the invalid fragment fails before the message ends. */
    frame_s(&w, 0, CC_WS_OP_TEXT, "ok\xc0\xaf");
    EXPECT_WIRE(w, &plain, "!1007", CC_WS_E_UTF8);
    b_free(&w);
    frame_s(&w, 1, CC_WS_OP_TEXT, "truncated \xe2\x82");
    EXPECT_WIRE(w, &plain, "!1007", CC_WS_E_UTF8_TRUNCATED);
    b_free(&w);
    frame_s(&w, 0, CC_WS_OP_TEXT, "truncated \xe2\x82");
    frame_s(&w, 1, CC_WS_OP_CONT, "\xac!");
    EXPECT_WIRE(w, &plain, "T(truncated \\xe2\\x82\\xac!)", CC_WS_INCOMPLETE);
    b_free(&w);
    /* Binary and compressed payloads are not checked here. */
    frame_s(&w, 1, CC_WS_OP_BINARY, "\xff\xfe");
    frame_raw(&w, WIRE_FIN | WIRE_RSV1 | CC_WS_OP_TEXT, "\xff", 1);
    EXPECT_WIRE(w, &deflate_on, "B(\\xff\\xfe)Tz(\\xff)", CC_WS_INCOMPLETE);
    b_free(&w);
}

/* ---- close handling ----------------------------------------------------------------------- */

TEST(test_close_codes) {
    for (unsigned code = 0; code < 70000; code += code < 5200 ? 1 : 997) {
        unsigned c = code > 65535 ? 65535 : code;
        int valid =
            (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1011) || (c >= 3000 && c <= 4999);
        CHECK_EQ_INT(cc_ws_close_code_valid(c), valid);
    }
    static const unsigned codes[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000,
                                     3999, 4000, 4999, 0,    999,  1004, 1005, 1006, 1012, 1013,
                                     1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        uint8_t pl[2] = {(uint8_t)(codes[i] >> 8), (uint8_t)codes[i]};
        bytes_t w = {0};
        char e[32];
        frame(&w, 1, CC_WS_OP_CLOSE, pl, 2);
        if (cc_ws_close_code_valid(codes[i])) {
            snprintf(e, sizeof(e), "C%u()", codes[i]);
            EXPECT_WIRE(w, &plain, e, CC_WS_INCOMPLETE);
        } else {
            EXPECT_WIRE(w, &plain, "!1002", CC_WS_E_CLOSE_CODE);
        }
        b_free(&w);
    }
}

TEST(test_close_payloads) {
    bytes_t w = {0};
    frame(&w, 1, CC_WS_OP_CLOSE, "", 0);
    EXPECT_WIRE(w, &plain, "C1005()", CC_WS_INCOMPLETE);
    b_free(&w);
    frame(&w, 1, CC_WS_OP_CLOSE, "\x03", 1);
    EXPECT_WIRE(w, &plain, "!1002", CC_WS_E_CLOSE_PAYLOAD);
    b_free(&w);
    frame_s(&w, 1, CC_WS_OP_CLOSE,
            "\x03\xe8"
            "bye \xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5");
    EXPECT_WIRE(w, &plain, "C1000(bye \\xce\\xba\\xe1\\xbd\\xb9\\xcf\\x83\\xce\\xbc\\xce\\xb5)",
                CC_WS_INCOMPLETE);
    b_free(&w);
    frame_s(&w, 1, CC_WS_OP_CLOSE,
            "\x03\xe8"
            "bad \xed\xa0\x80");
    EXPECT_WIRE(w, &plain, "!1007", CC_WS_E_CLOSE_REASON_UTF8);
    b_free(&w);
    frame_s(&w, 1, CC_WS_OP_CLOSE,
            "\x03\xe8"
            "cut \xe2\x82");
    EXPECT_WIRE(w, &plain, "!1007", CC_WS_E_CLOSE_REASON_UTF8);
    b_free(&w);
    uint8_t pl[125];
    memset(pl, 'r', sizeof(pl));
    pl[0] = 0x0f;
    pl[1] = 0xa0; /* 4000 */
    frame(&w, 1, CC_WS_OP_CLOSE, pl, 125);
    char *e = expect_msg("C4000", pl + 2, 123);
    EXPECT_WIRE(w, &plain, e, CC_WS_INCOMPLETE);
    free(e);
    b_free(&w);
    /* Nothing may follow a close frame. */
    frame_s(&w, 1, CC_WS_OP_CLOSE, "\x03\xe8");
    frame_s(&w, 1, CC_WS_OP_TEXT, "late");
    EXPECT_WIRE(w, &plain, "C1000()!1002", CC_WS_E_AFTER_CLOSE);
    b_free(&w);
}

TEST(test_build_close) {
    uint8_t out[CC_WS_MAX_CONTROL_FRAME];
    size_t n = cc_ws_build_close(out, 1000, "bye", 3);
    CHECK_EQ_INT(n, 7);
    CHECK(memcmp(out,
                 "\x88\x05\x03\xe8"
                 "bye",
                 7) == 0);
    n = cc_ws_build_close(out, 0, "ignored", 7);
    CHECK_EQ_INT(n, 2);
    CHECK(memcmp(out, "\x88\x00", 2) == 0);
    /* 100 two-byte characters: cut to 122 bytes, not 123, to keep whole characters. */
    char reason[200];
    for (int i = 0; i < 100; i++)
        memcpy(reason + 2 * i, "\xc3\xa9", 2);
    n = cc_ws_build_close(out, 1011, reason, 200);
    CHECK_EQ_INT(out[1], 2 + 122);
    CHECK_EQ_INT(n, 2 + 2 + 122);
    CHECK_EQ_INT(cc_ws_utf8_validate(out + 4, n - 4), CC_WS_OK);
    char ascii[200];
    memset(ascii, 'a', sizeof(ascii));
    n = cc_ws_build_close(out, 1011, ascii, 200);
    CHECK_EQ_INT(n, 127);
    /* What we build, a client parser view (masked) accepts. */
    bytes_t w = {0};
    frame(&w, 1, CC_WS_OP_CLOSE, out + 2, n - 2);
    char *e = expect_msg("C1011", (const uint8_t *)ascii, 123);
    EXPECT_WIRE(w, &plain, e, CC_WS_INCOMPLETE);
    free(e);
    b_free(&w);
}

/* ---- limits ------------------------------------------------------------------------------- */

TEST(test_max_message) {
    drive_opts_t lim = {100, 0, 0};
    uint8_t pl[101];
    memset(pl, 'm', sizeof(pl));
    char *e100 = expect_msg("B", pl, 100);
    bytes_t w = {0};
    frame(&w, 1, CC_WS_OP_BINARY, pl, 100);
    EXPECT_WIRE(w, &lim, e100, CC_WS_INCOMPLETE);
    b_free(&w);
    frame(&w, 1, CC_WS_OP_BINARY, pl, 101);
    EXPECT_WIRE(w, &lim, "!1009", CC_WS_E_TOO_BIG);
    b_free(&w);
    /* Across fragments, with control frames in between not counting. */
    frame(&w, 0, CC_WS_OP_BINARY, pl, 50);
    frame(&w, 1, CC_WS_OP_PING, pl, 100);
    frame(&w, 1, CC_WS_OP_CONT, pl, 50);
    frame(&w, 1, CC_WS_OP_BINARY, pl, 100); /* the count restarts per message */
    bytes_t e = {0};
    char *p100 = expect_msg("P", pl, 100);
    b_str(&e, p100);
    b_str(&e, e100);
    b_str(&e, e100);
    EXPECT_WIRE(w, &lim, (char *)e.p, CC_WS_INCOMPLETE);
    b_free(&e);
    free(p100);
    b_free(&w);
    frame(&w, 0, CC_WS_OP_TEXT, pl, 50);
    frame(&w, 0, CC_WS_OP_CONT, pl, 50);
    frame(&w, 1, CC_WS_OP_CONT, pl, 1);
    EXPECT_WIRE(w, &lim, "!1009", CC_WS_E_TOO_BIG);
    b_free(&w);
    free(e100);

    /* Fails on the header alone: a 2^62-byte frame is refused before any payload. */
    uint8_t h[] = {0x82, 0x80 | 127, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    cc_ws_parser_t p;
    cc_ws_event_t ev;
    size_t used;
    cc_ws_parser_init(&p, 1 << 20, 0);
    CHECK_EQ_INT(cc_ws_parse(&p, h, sizeof(h), &used, &ev), CC_WS_E_TOO_BIG);
    CHECK_EQ_INT(cc_ws_close_code(CC_WS_E_TOO_BIG), 1009);
    /* Sticky. */
    CHECK_EQ_INT(cc_ws_parse(&p, h, sizeof(h), &used, &ev), CC_WS_E_TOO_BIG);

    /* max_message may change between calls: lowered below what a message in progress already
     * has, the next fragment must fail rather than the subtraction wrapping to "no limit". */
    frame(&w, 0, CC_WS_OP_BINARY, pl, 80);
    frame(&w, 1, CC_WS_OP_CONT, pl, 1);
    cc_ws_parser_init(&p, 100, 0);
    size_t pos = 0;
    CHECK_EQ_INT(cc_ws_parse(&p, w.p, w.len, &used, &ev), CC_WS_OK);
    CHECK(ev.type == CC_WS_EV_DATA && ev.len == 80 && !ev.last);
    pos += used;
    p.max_message = 50;
    CHECK_EQ_INT(cc_ws_parse(&p, w.p + pos, w.len - pos, &used, &ev), CC_WS_E_TOO_BIG);
    b_free(&w);
}

TEST(test_huge_frame_streams) {
    /* A frame far larger than any buffer is handed out span by span as it arrives. */
    uint8_t h[CC_WS_MAX_HEADER], chunk[4096];
    uint64_t total = (uint64_t)1 << 32, seen = 0;
    cc_ws_parser_t p;
    cc_ws_event_t ev;
    size_t used, n = cc_ws_write_header_masked(h, CC_WS_OP_BINARY, 1, 0, total, test_key);
    cc_ws_parser_init(&p, 0, 0);
    CHECK_EQ_INT(cc_ws_parse(&p, h, n, &used, &ev), CC_WS_INCOMPLETE);
    unsigned off = 0;
    for (int i = 0; i < 1000; i++) {
        memset(chunk, 'z', sizeof(chunk));
        off = cc_ws_mask(chunk, 1000 + (size_t)i, test_key, off);
        CHECK_EQ_INT(cc_ws_parse(&p, chunk, 1000 + (size_t)i, &used, &ev), CC_WS_OK);
        CHECK(ev.len == 1000 + (size_t)i && ev.data[0] == 'z' && ev.data[ev.len - 1] == 'z');
        CHECK(!ev.last);
        seen += ev.len;
    }
    CHECK_EQ_INT(p.remaining, total - seen);
}

/* ---- announced frames and sinks (the copy-saving receive path) ---------------------------- */

TEST(test_sink_frame_event) {
    /* A 64 KiB + 1 binary frame: announced after its header, then unmasked into the sink while
     * the input keeps its masked bytes. A frame under announce_min is not announced. */
    size_t n = 65537;
    uint8_t *pl = xmalloc(n), *sink = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        pl[i] = (uint8_t)(i * 31 + 7);
    bytes_t w = {0};
    frame(&w, 1, CC_WS_OP_BINARY, pl, n);
    frame_s(&w, 1, CC_WS_OP_TEXT, "small");
    bytes_t orig = {0};
    b_put(&orig, w.p, w.len);
    cc_ws_parser_t p;
    cc_ws_event_t ev;
    size_t used, pos = 0;
    cc_ws_parser_init(&p, 0, 0);
    p.announce_min = 64;
    CHECK_EQ_INT(cc_ws_parse(&p, w.p, w.len, &used, &ev), CC_WS_OK);
    CHECK(ev.type == CC_WS_EV_FRAME && ev.len == n && ev.first && ev.last && !ev.data);
    CHECK(ev.opcode == CC_WS_OP_BINARY && !ev.compressed);
    CHECK_EQ_INT(used, 14); /* the header only */
    pos += used;
    p.sink = sink;
    CHECK_EQ_INT(cc_ws_parse(&p, w.p + pos, 1000, &used, &ev), CC_WS_OK);
    CHECK(ev.type == CC_WS_EV_DATA && ev.data == sink && ev.len == 1000 && ev.first && !ev.last);
    pos += used;
    CHECK_EQ_INT(cc_ws_parse(&p, w.p + pos, w.len - pos, &used, &ev), CC_WS_OK);
    CHECK(ev.type == CC_WS_EV_DATA && ev.data == sink + 1000 && ev.len == n - 1000 && ev.last);
    CHECK(p.sink == NULL);
    CHECK(memcmp(sink, pl, n) == 0);
    CHECK(memcmp(w.p, orig.p, pos + used) == 0); /* input left masked */
    pos += used;
    CHECK_EQ_INT(cc_ws_parse(&p, w.p + pos, w.len - pos, &used, &ev), CC_WS_OK);
    CHECK(ev.type == CC_WS_EV_DATA && ev.len == 5 && memcmp(ev.data, "small", 5) == 0);
    CHECK(ev.data == w.p + pos + 6); /* not announced: in place as before */
    b_free(&w);
    b_free(&orig);
    free(pl);
    free(sink);
}

TEST(test_sink_large_messages_split) {
    /* 64 KiB + 1 messages, text and binary, whole and fragmented (a ping in between), fed in
     * pieces cut at odd offsets: drive_all parses each split with and without sinks. */
    size_t n = 65537;
    uint8_t *pl = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        pl[i] = (uint8_t)('A' + i % 53); /* ASCII: valid text too */
    /* A multi-byte character straddling a fragment boundary and a sink span boundary. */
    memcpy(pl + 40000, "\xe2\x82\xac", 3);
    for (unsigned op = CC_WS_OP_TEXT; op <= CC_WS_OP_BINARY; op++) {
        char *e = expect_msg(op == CC_WS_OP_TEXT ? "T" : "B", pl, n);
        bytes_t want = {0};
        bytes_t w = {0};
        frame(&w, 1, op, pl, n);
        frame(&w, 0, op, pl, 40001);
        frame(&w, 1, CC_WS_OP_PING, "x", 1);
        frame(&w, 0, CC_WS_OP_CONT, pl + 40001, 1);
        frame(&w, 0, CC_WS_OP_CONT, pl + 40002, 0);
        frame(&w, 1, CC_WS_OP_CONT, pl + 40002, n - 40002);
        b_str(&want, e);
        b_str(&want, "P(x)");
        b_str(&want, e);
        EXPECT_WIRE(w, &plain, (char *)want.p, CC_WS_INCOMPLETE);
        /* Explicit odd cuts, every frame announced, also with a limit just big enough. */
        static const size_t cut_at[] = {1, 3, 10, 17, 4099, 30011, 65550, 65553, 65600, 105559};
        drive_opts_t ann = {(uint64_t)n, 0, 1};
        bytes_t t = {0};
        int bad = 0;
        CHECK_EQ_INT(drive(w.p, w.len, cut_at, sizeof(cut_at) / sizeof(cut_at[0]), &ann, &t, &bad),
                     CC_WS_INCOMPLETE);
        CHECK(!bad);
        CHECK(strcmp((char *)t.p, (char *)want.p) == 0);
        b_free(&t);
        b_free(&want);
        b_free(&w);
        free(e);
    }
    free(pl);
}

TEST(test_sink_errors_unchanged) {
    /* Limits and UTF-8 errors are the same with sinks: 1009 on the header, 1007 on the span. */
    size_t n = 70000;
    uint8_t *pl = xmalloc(n);
    memset(pl, 'a', n);
    bytes_t w = {0};
    frame(&w, 1, CC_WS_OP_BINARY, pl, n);
    drive_opts_t lim = {n - 1, 0, 1};
    EXPECT_WIRE(w, &lim, "!1009", CC_WS_E_TOO_BIG);
    b_free(&w);
    pl[50000] = 0xff;
    frame(&w, 1, CC_WS_OP_TEXT, pl, n);
    drive_opts_t ann = {0, 0, 1};
    EXPECT_WIRE(w, &ann, "!1007", CC_WS_E_UTF8);
    b_free(&w);
    pl[50000] = 'a';
    pl[n - 1] = 0xc3; /* truncated sequence at the very end */
    frame(&w, 1, CC_WS_OP_TEXT, pl, n);
    EXPECT_WIRE(w, &ann, "!1007", CC_WS_E_UTF8_TRUNCATED);
    b_free(&w);
    free(pl);
}

TEST(test_mask_copy_matches_naive) {
    uint8_t src[300], dst[300], want[300];
    for (unsigned off = 0; off < 4; off++) {
        for (size_t len = 0; len < 200; len++) {
            for (size_t i = 0; i < len; i++) {
                src[i + 3] = (uint8_t)(i * 5 + len);
                want[i] = (uint8_t)((i * 5 + len) ^ test_key[(off + i) & 3]);
            }
            memset(dst, 0xee, sizeof(dst));
            unsigned next = cc_ws_mask_copy(dst + 1, src + 3, len, test_key, off);
            CHECK(memcmp(dst + 1, want, len) == 0);
            CHECK(dst[0] == 0xee && dst[len + 1] == 0xee); /* nothing written outside */
            CHECK_EQ_INT(next, (off + len) & 3);
            for (size_t i = 0; i < len; i++) /* the source is untouched */
                CHECK(src[i + 3] == (uint8_t)(i * 5 + len));
        }
    }
}

/* ---- masking and writer --------------------------------------------------------------------- */

TEST(test_mask_matches_naive) {
    uint8_t a[300], b[300];
    for (unsigned off = 0; off < 4; off++) {
        for (size_t len = 0; len < 200; len++) {
            for (size_t i = 0; i < len; i++)
                a[i + 1] = (uint8_t)(i * 7 + len);
            unsigned next = cc_ws_mask(a + 1, len, test_key, off); /* unaligned on purpose */
            for (size_t i = 0; i < len; i++)
                b[i + 1] = (uint8_t)((i * 7 + len) ^ test_key[(off + i) & 3]);
            CHECK(memcmp(a + 1, b + 1, len) == 0);
            CHECK_EQ_INT(next, (off + len) & 3);
        }
    }
}

TEST(test_write_header) {
    uint8_t out[CC_WS_MAX_HEADER];
    CHECK_EQ_INT(cc_ws_write_header(out, CC_WS_OP_TEXT, 1, 0, 0), 2);
    CHECK(out[0] == 0x81 && out[1] == 0);
    CHECK_EQ_INT(cc_ws_write_header(out, CC_WS_OP_BINARY, 0, 1, 125), 2);
    CHECK(out[0] == 0x42 && out[1] == 125);
    CHECK_EQ_INT(cc_ws_write_header(out, CC_WS_OP_TEXT, 1, 1, 126), 4);
    CHECK(out[0] == 0xc1 && out[1] == 126 && out[2] == 0 && out[3] == 126);
    CHECK_EQ_INT(cc_ws_write_header(out, CC_WS_OP_CONT, 1, 0, 65535), 4);
    CHECK(out[0] == 0x80 && out[1] == 126 && out[2] == 0xff && out[3] == 0xff);
    CHECK_EQ_INT(cc_ws_write_header(out, CC_WS_OP_BINARY, 1, 0, 65536), 10);
    CHECK(memcmp(out, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10) == 0);
    CHECK_EQ_INT(cc_ws_write_header(out, CC_WS_OP_BINARY, 1, 0, 0x0102030405060708ULL), 10);
    CHECK(memcmp(out, "\x82\x7f\x01\x02\x03\x04\x05\x06\x07\x08", 10) == 0);
    CHECK_EQ_INT(cc_ws_write_header_masked(out, CC_WS_OP_TEXT, 1, 0, 3, test_key), 6);
    CHECK(out[1] == 0x83 && memcmp(out + 2, test_key, 4) == 0);
}

TEST(test_reasons) {
    for (int r = 0; r < CC_WS_E__COUNT; r++)
        CHECK(cc_ws_reason((cc_ws_result_t)r) != NULL && cc_ws_reason((cc_ws_result_t)r)[0]);
    CHECK(strcmp(cc_ws_reason(CC_WS_E__COUNT), "unknown error") == 0);
    CHECK_EQ_INT(cc_ws_close_code(CC_WS_OK), 0);
    CHECK_EQ_INT(cc_ws_close_code(CC_WS_INCOMPLETE), 0);
    CHECK_EQ_INT(cc_ws_close_code(CC_WS_E_UNMASKED), 1002);
    CHECK_EQ_INT(cc_ws_close_code(CC_WS_E_AFTER_CLOSE), 1002);
    CHECK_EQ_INT(cc_ws_close_code(CC_WS_E_UTF8), 1007);
    CHECK_EQ_INT(cc_ws_close_code(CC_WS_E_INFLATE), 1007);
    CHECK_EQ_INT(cc_ws_close_code(CC_WS_E_TOO_BIG), 1009);
    CHECK_EQ_INT(cc_ws_close_code(CC_WS_E_NOMEM), 1011);
    CHECK_EQ_INT(cc_ws_close_code(CC_WS_E_BAD_KEY), 0);
}

/* ---- handshake ------------------------------------------------------------------------------- */

static void sha1_hex(const char *s, size_t n, char hex[41]) {
    uint8_t d[20];
    cc_ws_sha1((const uint8_t *)s, n, d);
    for (int i = 0; i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

TEST(test_sha1_vectors) {
    char hex[41];
    sha1_hex("", 0, hex);
    CHECK(strcmp(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709") == 0);
    sha1_hex("abc", 3, hex);
    CHECK(strcmp(hex, "a9993e364706816aba3e25717850c26c9cd0d89d") == 0);
    const char *s448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha1_hex(s448, strlen(s448), hex);
    CHECK(strcmp(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1") == 0);
    char *mil = xmalloc(1000000);
    memset(mil, 'a', 1000000);
    sha1_hex(mil, 1000000, hex);
    CHECK(strcmp(hex, "34aa973cd4c4daa4f61eeb2bdbad27316534016f") == 0);
    free(mil);
    /* Padding edge lengths 55, 56, 63, 64: compare with a two-block split computed the same way
     * is pointless; known digests of 'a' * n instead. */
    char a64[64];
    memset(a64, 'a', 64);
    sha1_hex(a64, 55, hex);
    CHECK(strcmp(hex, "c1c8bbdc22796e28c0e15163d20899b65621d65a") == 0);
    sha1_hex(a64, 56, hex);
    CHECK(strcmp(hex, "c2db330f6083854c99d4b5bfb6e8f29f201be699") == 0);
    sha1_hex(a64, 64, hex);
    CHECK(strcmp(hex, "0098ba824b5c16427bd7a1122a5a442a25ec644d") == 0);
}

TEST(test_base64_vectors) {
    static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *out[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char b[16] = {0};
        size_t n = cc_ws_base64_encode((const uint8_t *)in[i], strlen(in[i]), b);
        CHECK_EQ_INT(n, strlen(out[i]));
        CHECK(memcmp(b, out[i], n) == 0);
    }
}

TEST(test_accept_key) {
    char out[CC_WS_ACCEPT_LEN];
    const char *k = "dGhlIHNhbXBsZSBub25jZQ==";
    CHECK_EQ_INT(cc_ws_accept_key(k, strlen(k), out), CC_WS_OK);
    CHECK(memcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", CC_WS_ACCEPT_LEN) == 0);
    static const char *bad[] = {
        "",
        "dGhlIHNhbXBsZSBub25jZQ=",   /* 23 chars */
        "dGhlIHNhbXBsZSBub25jZQ===", /* 25 */
        "dGhlIHNhbXBsZSBub25jZQAA",  /* no padding: 18 bytes */
        "dGhlIHNhbXBsZSBub25jZQA=",  /* 17 bytes */
        "dGhlIHNhbXBsZSBub25j ZQ==", /* space */
        "dGhlIHNhbXBsZSBub25jZ!==",  /* bad symbol */
        "dGhlIHNhbXBsZSBub25jZ===",  /* 15 bytes */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_EQ_INT(cc_ws_accept_key(bad[i], strlen(bad[i]), out), CC_WS_E_BAD_KEY);
}

int main(void) {
    RUN(test_sizes);
    RUN(test_non_minimal_lengths_accepted);
    RUN(test_length_msb);
    RUN(test_unmasked);
    RUN(test_several_frames_one_buffer);
    RUN(test_ping_pong);
    RUN(test_control_error_before_payload);
    RUN(test_build_pong_ping);
    RUN(test_reserved_bits);
    RUN(test_reserved_opcodes);
    RUN(test_fragmentation);
    RUN(test_fragmentation_errors);
    RUN(test_event_flags);
    RUN(test_unmask_in_place);
    RUN(test_text_utf8);
    RUN(test_close_codes);
    RUN(test_close_payloads);
    RUN(test_build_close);
    RUN(test_max_message);
    RUN(test_huge_frame_streams);
    RUN(test_sink_frame_event);
    RUN(test_sink_large_messages_split);
    RUN(test_sink_errors_unchanged);
    RUN(test_mask_copy_matches_naive);
    RUN(test_mask_matches_naive);
    RUN(test_write_header);
    RUN(test_reasons);
    RUN(test_sha1_vectors);
    RUN(test_base64_vectors);
    RUN(test_accept_key);
    return ws_report();
}
