/* Unit tests of permessage-deflate: offer negotiation, round trips through our deflater and
 * inflater at every window size with and without context takeover, interop with plain zlib,
 * bounded output (decompression bombs) and the parser's RSV1 rules. */
#include "ws_runner.h"
#include "ws_test_util.h"

/* ---- negotiation ----------------------------------------------------------------------------- */

static void expect_neg(const cc_ws_deflate_config_t *cfg, const char *hdr, int want,
                       const char *want_resp, int sw, int cw, int snct, int cnct) {
    cc_ws_deflate_params_t prm;
    char resp[CC_WS_DEFLATE_RESPONSE_MAX];
    size_t rlen = 0;
    int got = cc_ws_deflate_negotiate(hdr, strlen(hdr), cfg, &prm, resp, &rlen);
    if (got != want) {
        fprintf(stderr, "  offer [%s]: got %d want %d\n", hdr, got, want);
        CHECK_EQ_INT(got, want);
        return;
    }
    if (!want)
        return;
    if (strcmp(resp, want_resp) != 0 || rlen != strlen(want_resp))
        fprintf(stderr, "  offer [%s]: response [%s] want [%s]\n", hdr, resp, want_resp);
    CHECK(strcmp(resp, want_resp) == 0);
    CHECK_EQ_INT(rlen, strlen(want_resp));
    CHECK_EQ_INT(prm.server_max_window_bits, sw);
    CHECK_EQ_INT(prm.client_max_window_bits, cw);
    CHECK_EQ_INT(prm.server_no_context_takeover, snct);
    CHECK_EQ_INT(prm.client_no_context_takeover, cnct);
}

#define PMD "permessage-deflate"

TEST(test_negotiate_accept) {
    cc_ws_deflate_config_t cfg;
    cc_ws_deflate_config_default(&cfg);
    expect_neg(&cfg, PMD, 1, PMD, 15, 15, 0, 0);
    expect_neg(&cfg, "PerMessage-Deflate", 1, PMD, 15, 15, 0, 0);
    /* Chrome's offer: the parameter without a value only says the client supports it. */
    expect_neg(&cfg, PMD "; client_max_window_bits", 1, PMD, 15, 15, 0, 0);
    expect_neg(&cfg, PMD "; client_max_window_bits=10", 1, PMD "; client_max_window_bits=10", 15,
               10, 0, 0);
    expect_neg(&cfg, PMD "; server_max_window_bits=10", 1, PMD "; server_max_window_bits=10", 10,
               15, 0, 0);
    expect_neg(&cfg, PMD "; server_max_window_bits=\"12\"", 1, PMD "; server_max_window_bits=12",
               12, 15, 0, 0);
    expect_neg(&cfg, PMD "; server_max_window_bits=8", 1, PMD "; server_max_window_bits=8", 8, 15,
               0, 0);
    expect_neg(&cfg, PMD ";server_no_context_takeover;client_no_context_takeover", 1,
               PMD "; server_no_context_takeover; client_no_context_takeover", 15, 15, 1, 1);
    expect_neg(&cfg,
               PMD " ; server_no_context_takeover ; client_max_window_bits = 9 ;"
                   "\tserver_max_window_bits=15",
               1,
               PMD "; server_no_context_takeover; server_max_window_bits=15; "
                   "client_max_window_bits=9",
               15, 9, 1, 0);
    /* Unknown extensions are skipped; the first acceptable offer wins. */
    expect_neg(&cfg, "x-webkit-deflate-frame, " PMD "; client_max_window_bits", 1, PMD, 15, 15, 0,
               0);
    expect_neg(&cfg, PMD "; server_max_window_bits=10, " PMD, 1, PMD "; server_max_window_bits=10",
               10, 15, 0, 0);
    expect_neg(&cfg, PMD "; unknown_param, " PMD "; client_no_context_takeover", 1,
               PMD "; client_no_context_takeover", 15, 15, 0, 1);
    expect_neg(&cfg, " , ," PMD ",", 1, PMD, 15, 15, 0, 0);
    expect_neg(&cfg, "foo; bar=\"a, b\"; baz, " PMD, 1, PMD, 15, 15, 0, 0);
}

TEST(test_negotiate_server_policy) {
    cc_ws_deflate_config_t cfg;
    cc_ws_deflate_config_default(&cfg);
    cfg.server_no_context_takeover = 1;
    cfg.client_no_context_takeover = 1;
    cfg.server_max_window_bits = 11;
    cfg.client_max_window_bits = 12;
    /* We may always announce our own no-takeover, and ask it of the client. */
    expect_neg(&cfg, PMD, 1, PMD "; server_no_context_takeover; client_no_context_takeover", 11, 15,
               1, 1);
    expect_neg(&cfg, PMD "; client_max_window_bits", 1,
               PMD "; server_no_context_takeover; client_no_context_takeover; "
                   "client_max_window_bits=12",
               11, 12, 1, 1);
    expect_neg(&cfg, PMD "; client_max_window_bits=9; server_max_window_bits=13", 1,
               PMD "; server_no_context_takeover; client_no_context_takeover; "
                   "server_max_window_bits=11; client_max_window_bits=9",
               11, 9, 1, 1);
}

TEST(test_negotiate_decline) {
    cc_ws_deflate_config_t cfg;
    cc_ws_deflate_config_default(&cfg);
    static const char *declined[] = {
        "",
        "x-webkit-deflate-frame",
        "permessage-deflatex",
        PMD "; server_max_window_bits",
        PMD "; server_max_window_bits=7",
        PMD "; server_max_window_bits=16",
        PMD "; server_max_window_bits=08",
        PMD "; server_max_window_bits=010",
        PMD "; server_max_window_bits=abc",
        PMD "; server_max_window_bits=\"\"",
        PMD "; client_max_window_bits=7",
        PMD "; client_max_window_bits=1000000000000000000000000",
        PMD "; server_no_context_takeover=1",
        PMD "; client_no_context_takeover=\"\"",
        PMD "; server_no_context_takeover; server_no_context_takeover",
        PMD "; client_no_context_takeover; client_no_context_takeover",
        PMD "; server_max_window_bits=10; server_max_window_bits=10",
        PMD "; client_max_window_bits; client_max_window_bits=10",
        PMD "; mystery",
        /* Syntax errors refuse the whole header. */
        PMD ";",
        PMD "; =10",
        PMD "; server_max_window_bits=",
        PMD "; server_max_window_bits=\"10",
        PMD " x",
        PMD "; a b, " PMD,
        "\"quoted\", " PMD,
        PMD "; server_max_window_bits=10\x01",
    };
    for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++)
        expect_neg(&cfg, declined[i], 0, NULL, 0, 0, 0, 0);
}

/* ---- helpers for compression tests ----------------------------------------------------------- */

static void params(cc_ws_deflate_params_t *p, int sw, int cw, int snct, int cnct) {
    p->server_max_window_bits = (uint8_t)sw;
    p->client_max_window_bits = (uint8_t)cw;
    p->server_no_context_takeover = (uint8_t)snct;
    p->client_no_context_takeover = (uint8_t)cnct;
}

/* Compress one message with our deflater, feeding input in in_piece chunks and taking output
 * through an out_cap buffer. Returns the payload (or NULL on error, with *err). */
static uint8_t *ws_compress(cc_ws_deflater_t *z, const uint8_t *in, size_t n, size_t in_piece,
                            size_t out_cap, size_t *out_len, cc_ws_result_t *err) {
    bytes_t out = {0};
    uint8_t *chunk = xmalloc(out_cap);
    size_t pos = 0;
    *err = CC_WS_OK;
    for (;;) {
        size_t piece = n - pos < in_piece ? n - pos : in_piece;
        int fin = pos + piece == n;
        size_t used, made;
        cc_ws_result_t r;
        do {
            r = cc_ws_deflate(z, in + pos, piece, fin, chunk, out_cap, &used, &made);
            b_put(&out, chunk, made);
            pos += used;
            piece -= used;
        } while (r == CC_WS_INCOMPLETE);
        if (r != CC_WS_OK) {
            *err = r;
            break;
        }
        if (piece != 0) {
            *err = CC_WS_E_ZLIB;
            break;
        }
        if (fin)
            break;
    }
    free(chunk);
    if (*err) {
        b_free(&out);
        return NULL;
    }
    *out_len = out.len;
    if (!out.p)
        b_put(&out, "", 0);
    return out.p;
}

/* Inflate one message's payload, fed in in_piece chunks, output through out_cap. */
static cc_ws_result_t ws_decompress(cc_ws_inflater_t *z, const uint8_t *in, size_t n,
                                    size_t in_piece, size_t out_cap, bytes_t *out) {
    uint8_t *chunk = xmalloc(out_cap);
    size_t pos = 0;
    cc_ws_result_t r = CC_WS_OK;
    out->len = 0;
    for (;;) {
        size_t piece = n - pos < in_piece ? n - pos : in_piece;
        int fin = pos + piece == n;
        size_t used, made;
        do {
            r = cc_ws_inflate(z, in + pos, piece, fin, chunk, out_cap, &used, &made);
            b_put(out, chunk, made);
            pos += used;
            piece -= used;
        } while (r == CC_WS_INCOMPLETE);
        if (r != CC_WS_OK)
            break;
        if (piece != 0) {
            r = CC_WS_E_ZLIB;
            break;
        }
        if (fin)
            break;
    }
    free(chunk);
    return r;
}

/* Compressible but not trivial text. */
static void make_text(uint8_t *buf, size_t n, unsigned seed) {
    static const char *words[] = {"socket ", "frame ",   "deflate ", "cicada ",
                                  "window ", "message ", "κόσμε ",   "\n"};
    size_t pos = 0;
    while (pos < n) {
        seed = seed * 1103515245u + 12345u;
        const char *w = words[(seed >> 16) % 8];
        size_t l = strlen(w);
        if (l > n - pos)
            l = n - pos;
        memcpy(buf + pos, w, l);
        pos += l;
    }
}

/* Plain zlib as the peer: inflate raw with exactly window w (what a strict client would). */
static int zlib_inflate_raw(z_stream *s, const uint8_t *in, size_t n, bytes_t *out) {
    uint8_t tmp[4096];
    static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
    for (int part = 0; part < 2; part++) {
        s->next_in = (Bytef *)(uintptr_t)(part ? tail : in);
        s->avail_in = part ? 4 : (uInt)n;
        do {
            s->next_out = tmp;
            s->avail_out = sizeof(tmp);
            int rc = inflate(s, Z_SYNC_FLUSH);
            if (rc != Z_OK && rc != Z_BUF_ERROR)
                return -1;
            b_put(out, tmp, sizeof(tmp) - s->avail_out);
        } while (s->avail_out == 0);
    }
    return 0;
}

/* ---- round trips ------------------------------------------------------------------------------
 */

TEST(test_roundtrip_windows_and_takeover) {
    enum { NMSG = 4, MSGLEN = 3000 };
    uint8_t msg[MSGLEN];
    make_text(msg, MSGLEN, 7);
    for (int w = 8; w <= 15; w++) {
        for (int nct = 0; nct <= 1; nct++) {
            cc_ws_deflate_params_t prm;
            cc_ws_deflater_t d;
            cc_ws_inflater_t in;
            z_stream peer;
            size_t sizes[NMSG];
            params(&prm, w, w, nct, nct);
            CHECK_EQ_INT(cc_ws_deflater_init(&d, &prm, 6, 1 + w % 9), CC_WS_OK);
            CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, 0), CC_WS_OK);
            memset(&peer, 0, sizeof(peer));
            /* A strict peer inflating with exactly the agreed window, 8 included. */
            CHECK_EQ_INT(inflateInit2(&peer, -w), Z_OK);
            for (int m = 0; m < NMSG; m++) {
                size_t clen = 0;
                cc_ws_result_t err;
                bytes_t out = {0}, pout = {0};
                uint8_t *c = ws_compress(&d, msg, MSGLEN, m == 2 ? 100 : MSGLEN, 64, &clen, &err);
                CHECK(c != NULL);
                if (!c)
                    break;
                sizes[m] = clen;
                CHECK_EQ_INT(ws_decompress(&in, c, clen, m == 1 ? 1 : clen, 100, &out), CC_WS_OK);
                CHECK(out.len == MSGLEN && memcmp(out.p, msg, MSGLEN) == 0);
                CHECK_EQ_INT(zlib_inflate_raw(&peer, c, clen, &pout), 0);
                CHECK(pout.len == MSGLEN && memcmp(pout.p, msg, MSGLEN) == 0);
                if (nct)
                    inflateReset(&peer);
                free(c);
                b_free(&out);
                b_free(&pout);
            }
            /* With context takeover the repeated message compresses to almost nothing. */
            if (w >= 12 && !nct)
                CHECK(sizes[1] * 4 < sizes[0]);
            if (nct)
                CHECK_EQ_INT(sizes[1], sizes[0]);
            cc_ws_deflater_free(&d);
            cc_ws_inflater_free(&in);
            inflateEnd(&peer);
        }
    }
}

TEST(test_compress_chunking) {
    /* However input and output are chunked (the stripped trailer straddling two output chunks
     * included), the payload must inflate to the message. zlib may add an empty block when a
     * flush exactly fills the output, so sizes may differ by a few bytes. */
    enum { LEN = 20000 };
    uint8_t *msg = xmalloc(LEN);
    make_text(msg, LEN, 3);
    static const size_t outs[] = {16, 17, 19, 20, 64, 1 << 16};
    static const size_t ins[] = {1, 5, 333, LEN};
    for (size_t i = 0; i < sizeof(ins) / sizeof(ins[0]); i++) {
        size_t ref_len = 0;
        for (size_t o = 0; o < sizeof(outs) / sizeof(outs[0]); o++) {
            cc_ws_deflate_params_t prm;
            cc_ws_deflater_t d;
            cc_ws_inflater_t in;
            cc_ws_result_t err;
            bytes_t out = {0};
            size_t clen = 0;
            params(&prm, 15, 15, 1, 1);
            CHECK_EQ_INT(cc_ws_deflater_init(&d, &prm, 6, 0), CC_WS_OK);
            uint8_t *c = ws_compress(&d, msg, LEN, ins[i], outs[o], &clen, &err);
            CHECK(c != NULL);
            if (o == 0)
                ref_len = clen;
            CHECK(clen <= ref_len + 64 && clen + 64 >= ref_len);
            CHECK(clen < LEN / 2);
            CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, 0), CC_WS_OK);
            CHECK_EQ_INT(ws_decompress(&in, c, clen, 7, 16, &out), CC_WS_OK);
            CHECK(out.len == LEN && memcmp(out.p, msg, LEN) == 0);
            b_free(&out);
            cc_ws_inflater_free(&in);
            free(c);
            cc_ws_deflater_free(&d);
        }
    }
    free(msg);
}

TEST(test_empty_and_tiny_messages) {
    cc_ws_deflate_params_t prm;
    for (int nct = 0; nct <= 1; nct++) {
        cc_ws_deflater_t d;
        cc_ws_inflater_t in;
        params(&prm, 15, 15, nct, nct);
        CHECK_EQ_INT(cc_ws_deflater_init(&d, &prm, 1, 0), CC_WS_OK);
        CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, 0), CC_WS_OK);
        static const char *msgs[] = {"", "", "a", "", "hello", "hello", ""};
        for (size_t m = 0; m < sizeof(msgs) / sizeof(msgs[0]); m++) {
            size_t clen, n = strlen(msgs[m]);
            cc_ws_result_t err;
            bytes_t out = {0};
            uint8_t *c = ws_compress(&d, (const uint8_t *)msgs[m], n, 1, 16, &clen, &err);
            CHECK(c != NULL);
            if (!c)
                continue;
            if (n == 0)
                CHECK(clen == 1 && c[0] == 0x00);
            CHECK_EQ_INT(ws_decompress(&in, c, clen, 1, 1, &out), CC_WS_OK);
            CHECK(out.len == n && (n == 0 || memcmp(out.p, msgs[m], n) == 0));
            free(c);
            b_free(&out);
        }
        cc_ws_deflater_free(&d);
        cc_ws_inflater_free(&in);
    }
}

TEST(test_inflate_from_zlib_peer) {
    /* Client-side compression with plain zlib (sync flush, trailer stripped), inflated here with
     * input split at every byte and output in 1..n byte chunks. Includes the RFC 7692 example. */
    static const uint8_t rfc_hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    cc_ws_deflate_params_t prm;
    cc_ws_inflater_t in;
    bytes_t out = {0};
    params(&prm, 15, 15, 0, 0);
    CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, 0), CC_WS_OK);
    CHECK_EQ_INT(ws_decompress(&in, rfc_hello, sizeof(rfc_hello), 7, 64, &out), CC_WS_OK);
    CHECK(out.len == 5 && memcmp(out.p, "Hello", 5) == 0);
    /* Same context: the RFC's second message refers back into the first. */
    static const uint8_t rfc_hello2[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    CHECK_EQ_INT(ws_decompress(&in, rfc_hello2, sizeof(rfc_hello2), 2, 1, &out), CC_WS_OK);
    CHECK(out.len == 5 && memcmp(out.p, "Hello", 5) == 0);
    cc_ws_inflater_free(&in);

    uint8_t msg[600], comp[1200];
    make_text(msg, sizeof(msg), 11);
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    CHECK_EQ_INT(deflateInit2(&zs, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = msg;
    zs.avail_in = sizeof(msg);
    zs.next_out = comp;
    zs.avail_out = sizeof(comp);
    CHECK_EQ_INT(deflate(&zs, Z_SYNC_FLUSH), Z_OK);
    size_t clen = sizeof(comp) - zs.avail_out;
    deflateEnd(&zs);
    CHECK(clen > 4 && memcmp(comp + clen - 4, "\x00\x00\xff\xff", 4) == 0);
    clen -= 4;
    for (size_t piece = 1; piece <= clen; piece++) {
        for (size_t oc = 1; oc <= 1024; oc *= 4) {
            CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, 0), CC_WS_OK);
            CHECK_EQ_INT(ws_decompress(&in, comp, clen, piece, oc, &out), CC_WS_OK);
            CHECK(out.len == sizeof(msg) && memcmp(out.p, msg, sizeof(msg)) == 0);
            cc_ws_inflater_free(&in);
        }
    }
    b_free(&out);
}

TEST(test_inflate_delivers_all_decodable_output) {
    /* After each span, everything its bytes encode must have come out, even when a long match
     * is cut by a small output buffer right as the input runs out. Reference: zlib with room. */
    uint8_t msg[3000], comp[4000], ref[4000], out[7];
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)"abcdefg"[i % 7];
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    CHECK_EQ_INT(deflateInit2(&zs, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = msg;
    zs.avail_in = sizeof(msg);
    zs.next_out = comp;
    zs.avail_out = sizeof(comp);
    CHECK_EQ_INT(deflate(&zs, Z_SYNC_FLUSH), Z_OK);
    size_t clen = sizeof(comp) - zs.avail_out - 4;
    deflateEnd(&zs);
    cc_ws_deflate_params_t prm;
    params(&prm, 15, 15, 0, 0);
    for (size_t k = 0; k <= clen; k++) {
        z_stream rz;
        memset(&rz, 0, sizeof(rz));
        CHECK_EQ_INT(inflateInit2(&rz, -15), Z_OK);
        rz.next_in = comp;
        rz.avail_in = (uInt)k;
        rz.next_out = ref;
        rz.avail_out = sizeof(ref);
        inflate(&rz, Z_SYNC_FLUSH);
        size_t want = sizeof(ref) - rz.avail_out;
        inflateEnd(&rz);

        cc_ws_inflater_t in;
        size_t got = 0, used, made, pos = 0;
        cc_ws_result_t r;
        CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, 0), CC_WS_OK);
        do {
            r = cc_ws_inflate(&in, comp + pos, k - pos, 0, out, sizeof(out), &used, &made);
            pos += used;
            got += made;
        } while (r == CC_WS_INCOMPLETE);
        CHECK_EQ_INT(r, CC_WS_OK);
        CHECK_EQ_INT(got, want);
        do {
            r = cc_ws_inflate(&in, comp + pos, clen - pos, 1, out, sizeof(out), &used, &made);
            pos += used;
            got += made;
        } while (r == CC_WS_INCOMPLETE);
        CHECK_EQ_INT(r, CC_WS_OK);
        CHECK_EQ_INT(got, sizeof(msg));
        cc_ws_inflater_free(&in);
    }
}

TEST(test_inflate_bfinal_block) {
    /* A peer that ends a message with a final block (Z_FINISH) and starts the next message as
     * a new stream over the same window, as RFC 7692 7.2.3.4 allows. */
    uint8_t m1[400], m2[400], c1[800], c2[800];
    make_text(m1, sizeof(m1), 5);
    memcpy(m2, m1, sizeof(m2));
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    CHECK_EQ_INT(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = m1;
    zs.avail_in = sizeof(m1);
    zs.next_out = c1;
    zs.avail_out = sizeof(c1);
    CHECK_EQ_INT(deflate(&zs, Z_FINISH), Z_STREAM_END);
    size_t l1 = sizeof(c1) - zs.avail_out;
    CHECK_EQ_INT(deflateReset(&zs), Z_OK);
    CHECK_EQ_INT(deflateSetDictionary(&zs, m1, sizeof(m1)), Z_OK);
    zs.next_in = m2;
    zs.avail_in = sizeof(m2);
    zs.next_out = c2;
    zs.avail_out = sizeof(c2);
    CHECK_EQ_INT(deflate(&zs, Z_SYNC_FLUSH), Z_OK);
    size_t l2 = sizeof(c2) - zs.avail_out - 4;
    deflateEnd(&zs);

    cc_ws_deflate_params_t prm;
    cc_ws_inflater_t in;
    bytes_t out = {0};
    params(&prm, 15, 15, 0, 0);
    for (size_t piece = 1; piece <= l1; piece += 13) {
        CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, 0), CC_WS_OK);
        CHECK_EQ_INT(ws_decompress(&in, c1, l1, piece, 50, &out), CC_WS_OK);
        CHECK(out.len == sizeof(m1) && memcmp(out.p, m1, sizeof(m1)) == 0);
        CHECK_EQ_INT(ws_decompress(&in, c2, l2, piece, 50, &out), CC_WS_OK);
        CHECK(out.len == sizeof(m2) && memcmp(out.p, m2, sizeof(m2)) == 0);
        cc_ws_inflater_free(&in);
    }
    b_free(&out);
}

TEST(test_inflate_final_block_then_stored_tail) {
    /* RFC 7692 7.2.3.4's sample: "Hello" in a final block, then the 0x00 left over from the empty
     * stored block its sender appended and trimmed. Data after BFINAL inside one message. */
    static const uint8_t hello[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00};
    cc_ws_deflate_params_t prm;
    cc_ws_inflater_t in;
    bytes_t out = {0};
    params(&prm, 15, 15, 0, 0);
    for (size_t piece = 1; piece <= sizeof(hello); piece++) {
        CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, 5), CC_WS_OK);
        for (int m = 0; m < 3; m++) {
            CHECK_EQ_INT(ws_decompress(&in, hello, sizeof(hello), piece, 16, &out), CC_WS_OK);
            CHECK(out.len == 5 && memcmp(out.p, "Hello", 5) == 0);
        }
        cc_ws_inflater_free(&in);
    }
    b_free(&out);
}

TEST(test_inflate_stream_restarts_are_bounded) {
    /* Each deflate stream that ends inside a message makes the inflater carry its window over
     * (two copies of up to 32 KiB). A message of one full window followed by many 2-byte empty
     * final blocks (03 00) would cost that per 2 bytes of input: max_message must bound it. */
    enum { WIN = 32768, EMPTY_STREAMS = 200, LIMIT = 1 << 20 };
    uint8_t *raw = xmalloc(WIN), *comp = xmalloc(WIN + 1024);
    uint32_t seed = 7;
    for (size_t i = 0; i < WIN; i++) {
        seed = seed * 1103515245u + 12345u;
        raw[i] = (uint8_t)(seed >> 16);
    }
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    CHECK_EQ_INT(deflateInit2(&zs, 1, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = raw;
    zs.avail_in = WIN;
    zs.next_out = comp;
    zs.avail_out = WIN + 1024;
    CHECK_EQ_INT(deflate(&zs, Z_FINISH), Z_STREAM_END);
    size_t clen = WIN + 1024 - zs.avail_out;
    deflateEnd(&zs);
    size_t total = clen + 2 * EMPTY_STREAMS;
    uint8_t *msg = xmalloc(total);
    memcpy(msg, comp, clen);
    for (size_t i = 0; i < EMPTY_STREAMS; i++) {
        msg[clen + 2 * i] = 0x03;
        msg[clen + 2 * i + 1] = 0x00;
    }
    cc_ws_deflate_params_t prm;
    cc_ws_inflater_t in;
    bytes_t out = {0};
    params(&prm, 15, 15, 0, 0);
    CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, LIMIT), CC_WS_OK);
    CHECK_EQ_INT(ws_decompress(&in, msg, total, total, 65536, &out), CC_WS_E_TOO_BIG);
    cc_ws_inflater_free(&in);
    /* A few streams in a message stay within the limit and decode. */
    CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, LIMIT), CC_WS_OK);
    CHECK_EQ_INT(ws_decompress(&in, msg, clen + 2 * 4, 4096, 65536, &out), CC_WS_OK);
    CHECK(out.len == WIN && memcmp(out.p, raw, WIN) == 0);
    cc_ws_inflater_free(&in);
    /* Without context takeover a restart copies nothing, so it costs nothing to count. */
    params(&prm, 15, 15, 0, 1);
    CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, LIMIT), CC_WS_OK);
    CHECK_EQ_INT(ws_decompress(&in, msg, total, total, 65536, &out), CC_WS_OK);
    CHECK(out.len == WIN);
    cc_ws_inflater_free(&in);
    b_free(&out);
    free(msg);
    free(comp);
    free(raw);
}

TEST(test_window_8_never_reaches_past_256) {
    /* Data whose only repeats are 300 bytes back: a compressor allowed to look 512 bytes back
     * could use them, and a strict peer inflating with the negotiated 256-byte window would
     * fail. (zlib at window 9 happens to stop at 250 bytes; we do not rely on that.) */
    uint8_t msg[600];
    uint32_t seed = 12345;
    for (size_t i = 0; i < 300; i++) {
        seed = seed * 1103515245u + 12345u;
        msg[i] = (uint8_t)(seed >> 16);
    }
    memcpy(msg + 300, msg, 300);
    cc_ws_deflate_params_t prm;
    cc_ws_deflater_t d;
    cc_ws_result_t err;
    z_stream peer;
    size_t clen;
    bytes_t out = {0};
    params(&prm, 8, 8, 0, 0);
    CHECK_EQ_INT(cc_ws_deflater_init(&d, &prm, 9, 0), CC_WS_OK);
    memset(&peer, 0, sizeof(peer));
    CHECK_EQ_INT(inflateInit2(&peer, -8), Z_OK);
    for (int m = 0; m < 3; m++) {
        uint8_t *c = ws_compress(&d, msg, sizeof(msg), 100, 64, &clen, &err);
        CHECK(c != NULL);
        out.len = 0;
        CHECK_EQ_INT(zlib_inflate_raw(&peer, c, clen, &out), 0);
        CHECK(out.len == sizeof(msg) && memcmp(out.p, msg, sizeof(msg)) == 0);
        free(c);
    }
    cc_ws_deflater_free(&d);
    inflateEnd(&peer);
    b_free(&out);
}

TEST(test_inflater_resets_without_takeover) {
    /* With client_no_context_takeover agreed the inflater starts every message afresh, so a
     * peer that breaks the agreement and refers back into the previous message is caught. */
    uint8_t msg[500], c1[1000], c2[1000];
    make_text(msg, sizeof(msg), 21);
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    CHECK_EQ_INT(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t lens[2];
    uint8_t *outs[2] = {c1, c2};
    for (int m = 0; m < 2; m++) {
        zs.next_in = msg;
        zs.avail_in = sizeof(msg);
        zs.next_out = outs[m];
        zs.avail_out = 1000;
        CHECK_EQ_INT(deflate(&zs, Z_SYNC_FLUSH), Z_OK);
        lens[m] = 1000 - zs.avail_out - 4;
    }
    deflateEnd(&zs);
    for (int nct = 0; nct <= 1; nct++) {
        cc_ws_deflate_params_t prm;
        cc_ws_inflater_t in;
        bytes_t out = {0};
        params(&prm, 15, 15, 0, nct);
        CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, 0), CC_WS_OK);
        CHECK_EQ_INT(ws_decompress(&in, c1, lens[0], 50, 64, &out), CC_WS_OK);
        CHECK(out.len == sizeof(msg) && memcmp(out.p, msg, sizeof(msg)) == 0);
        CHECK_EQ_INT(ws_decompress(&in, c2, lens[1], 50, 64, &out),
                     nct ? CC_WS_E_INFLATE : CC_WS_OK);
        if (!nct)
            CHECK(out.len == sizeof(msg) && memcmp(out.p, msg, sizeof(msg)) == 0);
        cc_ws_inflater_free(&in);
        b_free(&out);
    }
}

/* ---- limits and bad input ---------------------------------------------------------------------
 */

TEST(test_decompression_bomb) {
    /* 16 MiB of zeros compress to ~16 KiB; with a 1 MiB limit the inflater must stop after at
     * most limit + one output chunk. */
    enum { BOMB = 16 << 20, LIMIT = 1 << 20, CHUNK = 65536 };
    uint8_t *zeros = calloc(1, BOMB), *comp = xmalloc(BOMB / 64);
    CHECK(zeros != NULL);
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    CHECK_EQ_INT(deflateInit2(&zs, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = zeros;
    zs.avail_in = BOMB;
    zs.next_out = comp;
    zs.avail_out = BOMB / 64;
    CHECK_EQ_INT(deflate(&zs, Z_SYNC_FLUSH), Z_OK);
    size_t clen = BOMB / 64 - zs.avail_out - 4;
    deflateEnd(&zs);
    free(zeros);

    cc_ws_deflate_params_t prm;
    cc_ws_inflater_t in;
    params(&prm, 15, 15, 0, 0);
    CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, LIMIT), CC_WS_OK);
    uint8_t *chunk = xmalloc(CHUNK);
    size_t pos = 0, total = 0, used, made;
    cc_ws_result_t r;
    do {
        r = cc_ws_inflate(&in, comp + pos, clen - pos, 1, chunk, CHUNK, &used, &made);
        pos += used;
        total += made;
    } while (r == CC_WS_INCOMPLETE);
    CHECK_EQ_INT(r, CC_WS_E_TOO_BIG);
    CHECK(total > LIMIT && total <= LIMIT + CHUNK);
    cc_ws_inflater_free(&in);

    /* Exactly at the limit is fine. */
    CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, 600), CC_WS_OK);
    uint8_t msg[600];
    make_text(msg, sizeof(msg), 1);
    cc_ws_deflater_t d;
    cc_ws_result_t err;
    CHECK_EQ_INT(cc_ws_deflater_init(&d, &prm, 6, 0), CC_WS_OK);
    uint8_t *c = ws_compress(&d, msg, sizeof(msg), sizeof(msg), 256, &clen, &err);
    bytes_t out = {0};
    CHECK_EQ_INT(ws_decompress(&in, c, clen, clen, 256, &out), CC_WS_OK);
    CHECK_EQ_INT(out.len, 600);
    free(c);
    c = ws_compress(&d, msg, sizeof(msg) - 599, 1, 256, &clen, &err);
    CHECK_EQ_INT(ws_decompress(&in, c, clen, clen, 256, &out), CC_WS_OK); /* count restarts */
    free(c);
    b_free(&out);
    cc_ws_deflater_free(&d);
    cc_ws_inflater_free(&in);
    free(chunk);
    free(comp);
}

TEST(test_corrupt_input) {
    static const uint8_t bad1[] = {0xff, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t bad2[] = {0x07}; /* BTYPE 11: reserved */
    cc_ws_deflate_params_t prm;
    cc_ws_inflater_t in;
    bytes_t out = {0};
    params(&prm, 15, 15, 0, 0);
    CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, 0), CC_WS_OK);
    CHECK_EQ_INT(ws_decompress(&in, bad1, sizeof(bad1), 1, 16, &out), CC_WS_E_INFLATE);
    cc_ws_inflater_free(&in);
    CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, 0), CC_WS_OK);
    CHECK_EQ_INT(ws_decompress(&in, bad2, sizeof(bad2), 1, 16, &out), CC_WS_E_INFLATE);
    cc_ws_inflater_free(&in);
    CHECK_EQ_INT(cc_ws_close_code(CC_WS_E_INFLATE), 1007);
    /* Free is idempotent and safe on a failed/never-used inflater. */
    cc_ws_inflater_free(&in);
    b_free(&out);

    /* Small output buffers are refused rather than overrun. */
    cc_ws_deflater_t d;
    uint8_t small[8];
    size_t used, made;
    CHECK_EQ_INT(cc_ws_deflater_init(&d, &prm, 6, 0), CC_WS_OK);
    CHECK_EQ_INT(cc_ws_deflate(&d, (const uint8_t *)"x", 1, 1, small, sizeof(small), &used, &made),
                 CC_WS_E_ZLIB);
    cc_ws_deflater_free(&d);
    cc_ws_deflater_free(&d);
}

/* ---- with the frame parser --------------------------------------------------------------------
 */

TEST(test_rsv1_rules_with_deflate) {
    drive_opts_t on = {0, 1, 0};
    bytes_t w = {0};
    frame_raw(&w, WIRE_FIN | WIRE_RSV1 | CC_WS_OP_PING, "", 0);
    CHECK_EQ_INT(drive_all(w.p, w.len, &on, "!1002", CC_WS_E_RSV1_CONTROL), 0);
    b_free(&w);
    frame_raw(&w, WIRE_FIN | WIRE_RSV1 | CC_WS_OP_PONG, "", 0);
    CHECK_EQ_INT(drive_all(w.p, w.len, &on, "!1002", CC_WS_E_RSV1_CONTROL), 0);
    b_free(&w);
    frame_raw(&w, WIRE_RSV1 | CC_WS_OP_TEXT, "a", 1);
    frame_raw(&w, WIRE_FIN | WIRE_RSV1 | CC_WS_OP_CONT, "b", 1);
    CHECK_EQ_INT(drive_all(w.p, w.len, &on, "!1002", CC_WS_E_RSV1_CONTINUATION), 0);
    b_free(&w);
    /* Uncompressed messages may still be sent when deflate is on. */
    frame_raw(&w, WIRE_FIN | CC_WS_OP_TEXT, "plain", 5);
    frame_raw(&w, WIRE_RSV1 | CC_WS_OP_BINARY, "z", 1);
    frame_raw(&w, WIRE_FIN | CC_WS_OP_CONT, "y", 1);
    CHECK_EQ_INT(drive_all(w.p, w.len, &on, "T(plain)Bz(zy)", CC_WS_INCOMPLETE), 0);
    b_free(&w);
}

TEST(test_parser_to_inflater) {
    /* A compressed text message in three fragments with a ping between, parsed from a buffer
     * split at every point, spans inflated as they come, inflated text UTF-8 checked. */
    uint8_t msg[2000];
    make_text(msg, sizeof(msg), 9);
    cc_ws_deflate_params_t prm;
    cc_ws_deflater_t d;
    cc_ws_result_t err;
    size_t clen;
    params(&prm, 15, 15, 0, 0);
    CHECK_EQ_INT(cc_ws_deflater_init(&d, &prm, 6, 0), CC_WS_OK);
    uint8_t *c = ws_compress(&d, msg, sizeof(msg), sizeof(msg), 4096, &clen, &err);
    cc_ws_deflater_free(&d);
    CHECK(c != NULL && clen > 10);
    if (!c)
        return;
    bytes_t w = {0};
    size_t a = clen / 3, b = 2 * clen / 3;
    frame_raw(&w, WIRE_RSV1 | CC_WS_OP_TEXT, c, a);
    frame_s(&w, 1, CC_WS_OP_PING, "mid");
    frame_raw(&w, CC_WS_OP_CONT, c + a, b - a);
    frame_raw(&w, WIRE_FIN | CC_WS_OP_CONT, c + b, clen - b);
    free(c);
    uint8_t *buf = xmalloc(w.len), out[97];
    for (size_t cut = 0; cut <= w.len; cut++) {
        cc_ws_parser_t p;
        cc_ws_inflater_t in;
        cc_ws_utf8_t u;
        bytes_t text = {0};
        int pings = 0, done = 0;
        memcpy(buf, w.p, w.len);
        cc_ws_parser_init(&p, 0, 1);
        CHECK_EQ_INT(cc_ws_inflater_init(&in, &prm, 1 << 20), CC_WS_OK);
        cc_ws_utf8_init(&u);
        size_t bounds[3] = {0, cut, w.len};
        for (int part = 0; part < 2; part++) {
            size_t pos = bounds[part];
            while (pos < bounds[part + 1]) {
                cc_ws_event_t ev;
                size_t used;
                cc_ws_result_t r = cc_ws_parse(&p, buf + pos, bounds[part + 1] - pos, &used, &ev);
                if (r == CC_WS_INCOMPLETE)
                    break;
                CHECK_EQ_INT(r, CC_WS_OK);
                if (r != CC_WS_OK)
                    goto next;
                pos += used;
                if (ev.type == CC_WS_EV_PING) {
                    pings++;
                    continue;
                }
                CHECK(ev.type == CC_WS_EV_DATA && ev.compressed && ev.opcode == CC_WS_OP_TEXT);
                const uint8_t *ip = ev.data;
                size_t left = ev.len, iu, made;
                do {
                    r = cc_ws_inflate(&in, ip, left, ev.last, out, sizeof(out), &iu, &made);
                    ip += iu;
                    left -= iu;
                    CHECK_EQ_INT(cc_ws_utf8_feed(&u, out, made), CC_WS_OK);
                    b_put(&text, out, made);
                } while (r == CC_WS_INCOMPLETE);
                CHECK_EQ_INT(r, CC_WS_OK);
                if (ev.last) {
                    CHECK_EQ_INT(cc_ws_utf8_finish(&u), CC_WS_OK);
                    done = 1;
                }
            }
        }
        CHECK(done && pings == 1);
        CHECK(text.len == sizeof(msg) && memcmp(text.p, msg, sizeof(msg)) == 0);
    next:
        b_free(&text);
        cc_ws_inflater_free(&in);
    }
    free(buf);
    b_free(&w);
}

int main(void) {
    RUN(test_negotiate_accept);
    RUN(test_negotiate_server_policy);
    RUN(test_negotiate_decline);
    RUN(test_roundtrip_windows_and_takeover);
    RUN(test_compress_chunking);
    RUN(test_empty_and_tiny_messages);
    RUN(test_inflate_from_zlib_peer);
    RUN(test_inflate_delivers_all_decodable_output);
    RUN(test_inflate_bfinal_block);
    RUN(test_inflate_final_block_then_stored_tail);
    RUN(test_inflate_stream_restarts_are_bounded);
    RUN(test_window_8_never_reaches_past_256);
    RUN(test_inflater_resets_without_takeover);
    RUN(test_decompression_bomb);
    RUN(test_corrupt_input);
    RUN(test_rsv1_rules_with_deflate);
    RUN(test_parser_to_inflater);
    return ws_report();
}
