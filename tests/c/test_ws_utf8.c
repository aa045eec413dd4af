/* Unit tests of the streaming UTF-8 validator: RFC 3629 edge cases, the classic stress-test
 * vectors, every split point, and exhaustive agreement with a slow reference decoder. */
#include "ws_runner.h"
#include "ws_test_util.h"

/* Slow, obviously-correct reference: decode code points and check the ranges. Returns 0 valid,
 * 1 invalid, 2 truncated at the end. */
static int ref_check(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t c = p[i], cp;
        size_t len;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 1;
        }
        for (size_t k = 1; k < len; k++) {
            if (i + k >= n) {
                /* Truncated only if what we have so far could still become valid. */
                uint32_t partial = cp; /* already holds bytes 1..k-1 */
                size_t missing = len - k;
                uint32_t lo = partial << (6 * missing), hi = lo | ((1u << (6 * missing)) - 1);
                static const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
                if (hi < min_cp[len] || lo > 0x10ffff || (lo >= 0xd800 && hi <= 0xdfff))
                    return 1;
                return 2;
            }
            if ((p[i + k] & 0xc0) != 0x80)
                return 1;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        static const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 1;
        i += len;
    }
    return 0;
}

static int ours(const uint8_t *p, size_t n) {
    cc_ws_result_t r = cc_ws_utf8_validate(p, n);
    return r == CC_WS_OK ? 0 : r == CC_WS_E_UTF8_TRUNCATED ? 2 : 1;
}

/* Checks a vector whole, split at every point, and in 1-byte pieces. */
static void check_vector(const char *s, size_t n, int want) {
    const uint8_t *p = (const uint8_t *)s;
    CHECK_EQ_INT(ours(p, n), want);
    CHECK_EQ_INT(ref_check(p, n), want);
    for (size_t at = 0; at <= n; at++) {
        cc_ws_utf8_t u;
        cc_ws_utf8_init(&u);
        cc_ws_result_t r = cc_ws_utf8_feed(&u, p, at);
        if (r == CC_WS_OK)
            r = cc_ws_utf8_feed(&u, p + at, n - at);
        if (r == CC_WS_OK)
            r = cc_ws_utf8_finish(&u);
        CHECK_EQ_INT(r == CC_WS_OK ? 0 : r == CC_WS_E_UTF8_TRUNCATED ? 2 : 1, want);
    }
    cc_ws_utf8_t u;
    cc_ws_utf8_init(&u);
    cc_ws_result_t r = CC_WS_OK;
    for (size_t i = 0; i < n && r == CC_WS_OK; i++)
        r = cc_ws_utf8_feed(&u, p + i, 1);
    if (r == CC_WS_OK)
        r = cc_ws_utf8_finish(&u);
    CHECK_EQ_INT(r == CC_WS_OK ? 0 : r == CC_WS_E_UTF8_TRUNCATED ? 2 : 1, want);
}

#define VALID(s) check_vector(s, sizeof(s) - 1, 0)
#define INVALID(s) check_vector(s, sizeof(s) - 1, 1)
#define TRUNCATED(s) check_vector(s, sizeof(s) - 1, 2)

TEST(test_valid) {
    VALID("");
    VALID("Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!");
    VALID("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"); /* κόσμε */
    VALID("\x00");
    VALID("\x7f");
    VALID("\xc2\x80");         /* U+0080 */
    VALID("\xdf\xbf");         /* U+07FF */
    VALID("\xe0\xa0\x80");     /* U+0800 */
    VALID("\xed\x9f\xbf");     /* U+D7FF */
    VALID("\xee\x80\x80");     /* U+E000 */
    VALID("\xef\xbf\xbd");     /* U+FFFD */
    VALID("\xef\xbf\xbf");     /* U+FFFF: a noncharacter, but valid UTF-8 */
    VALID("\xf0\x90\x80\x80"); /* U+10000 */
    VALID("\xf4\x8f\xbf\xbf"); /* U+10FFFF */
    VALID("\xf0\x9f\x98\x80 emoji and more ascii after it to use the fast path.......");
}

TEST(test_invalid) {
    INVALID("\x80");
    INVALID("\xbf");
    INVALID("\x80\xbf\x80\xbf");
    INVALID("\xc0\x80"); /* overlong NUL */
    INVALID("\xc0\xaf"); /* overlong '/' */
    INVALID("\xc1\xbf");
    INVALID("\xe0\x80\xaf");
    INVALID("\xe0\x9f\xbf"); /* overlong U+07FF */
    INVALID("\xf0\x80\x80\xaf");
    INVALID("\xf0\x8f\xbf\xbf"); /* overlong U+FFFF */
    INVALID("\xf8\x88\x80\x80\x80");
    INVALID("\xfc\x84\x80\x80\x80\x80");
    INVALID("\xed\xa0\x80"); /* U+D800 */
    INVALID("\xed\xad\xbf");
    INVALID("\xed\xbf\xbf");             /* U+DFFF */
    INVALID("\xed\xa0\x80\xed\xb0\x80"); /* surrogate pair spelled out */
    INVALID("\xf4\x90\x80\x80");         /* U+110000 */
    INVALID("\xf5\x80\x80\x80");
    INVALID("\xf7\xbf\xbf\xbf");
    INVALID("\xfe");
    INVALID("\xff");
    INVALID("\xfe\xfe\xff\xff");
    INVALID("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"
            "edited");
    INVALID("\xc2\x41"); /* lead byte followed by ASCII */
    INVALID("\xe0\xa0\x41");
    INVALID("\xf0\x90\x80\x41");
    INVALID("\xc2\xc2\x80");
    /* A truncated sequence followed by more text is invalid, not truncated. */
    INVALID("\xe2\x82 euro");
    /* Fails as soon as the second byte rules it out, even if the message is cut there. */
    INVALID("\xf4\x90");
    INVALID("\xe0\x9f");
    INVALID("\xed\xa0");
    INVALID("\xf0\x8f");
}

TEST(test_truncated) {
    TRUNCATED("\xc2");
    TRUNCATED("\xe0\xa0");
    TRUNCATED("\xe2\x82");
    TRUNCATED("\xf0\x90\x80");
    TRUNCATED("\xf4\x8f\xbf");
    TRUNCATED("ascii then \xf0");
    TRUNCATED("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce");
}

TEST(test_sticky_error) {
    cc_ws_utf8_t u;
    cc_ws_utf8_init(&u);
    CHECK_EQ_INT(cc_ws_utf8_feed(&u, (const uint8_t *)"\xff", 1), CC_WS_E_UTF8);
    CHECK_EQ_INT(cc_ws_utf8_feed(&u, (const uint8_t *)"fine", 4), CC_WS_E_UTF8);
    CHECK_EQ_INT(cc_ws_utf8_finish(&u), CC_WS_E_UTF8);
    cc_ws_utf8_init(&u);
    CHECK_EQ_INT(cc_ws_utf8_finish(&u), CC_WS_OK);
}

TEST(test_fast_path_positions) {
    /* The word-at-a-time ASCII skip must not step over a bad byte or a sequence anywhere. */
    uint8_t buf[80];
    for (size_t at = 0; at + 4 <= sizeof(buf); at++) {
        memset(buf, 'a', sizeof(buf));
        buf[at] = 0x80;
        CHECK_EQ_INT(ours(buf, sizeof(buf)), 1);
        memset(buf, 'a', sizeof(buf));
        memcpy(buf + at, "\xf0\x9f\x98\x80", 4);
        CHECK_EQ_INT(ours(buf, sizeof(buf)), 0);
        memcpy(buf + at, "\xed\xa0\x80", 3);
        CHECK_EQ_INT(ours(buf, sizeof(buf)), 1);
        memset(buf, 'a', sizeof(buf));
        buf[sizeof(buf) - 1] = 0xc3;
        CHECK_EQ_INT(ours(buf, sizeof(buf)), 2);
    }
}

TEST(test_exhaustive_short) {
    uint8_t b[4];
    for (unsigned x = 0; x < 256; x++) {
        b[0] = (uint8_t)x;
        CHECK_EQ_INT(ours(b, 1), ref_check(b, 1));
        for (unsigned y = 0; y < 256; y++) {
            b[1] = (uint8_t)y;
            CHECK_EQ_INT(ours(b, 2), ref_check(b, 2));
            if (x < 0xe0)
                continue;
            for (unsigned z = 0; z < 256; z++) {
                b[2] = (uint8_t)z;
                CHECK_EQ_INT(ours(b, 3), ref_check(b, 3));
            }
        }
    }
}

TEST(test_four_byte_sequences) {
    /* All 4-byte sequences whose continuation bytes are near the range edges. */
    static const uint8_t edges[] = {0x00, 0x41, 0x7f, 0x80, 0x81, 0x8f, 0x90, 0x9f,
                                    0xa0, 0xbf, 0xc0, 0xc2, 0xe0, 0xf0, 0xf4, 0xff};
    uint8_t b[4];
    for (unsigned x = 0xe0; x < 256; x++)
        for (size_t i = 0; i < sizeof(edges); i++)
            for (size_t j = 0; j < sizeof(edges); j++)
                for (size_t k = 0; k < sizeof(edges); k++) {
                    b[0] = (uint8_t)x;
                    b[1] = edges[i];
                    b[2] = edges[j];
                    b[3] = edges[k];
                    CHECK_EQ_INT(ours(b, 4), ref_check(b, 4));
                }
}

TEST(test_random_against_reference) {
    /* Random mixes of valid characters with occasional corruption, fed in random pieces. */
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    uint8_t buf[256];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = 0;
        while (n < sizeof(buf) - 4) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            uint32_t r = (uint32_t)(seed >> 33);
            uint32_t cp = r % 5 == 0 ? r % 0x110000 : r % 5 == 1 ? r % 0x800 : r % 0x80;
            if (cp >= 0xd800 && cp <= 0xdfff)
                cp = 0xfffd;
            if (cp < 0x80) {
                buf[n++] = (uint8_t)cp;
            } else if (cp < 0x800) {
                buf[n++] = (uint8_t)(0xc0 | cp >> 6);
                buf[n++] = (uint8_t)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                buf[n++] = (uint8_t)(0xe0 | cp >> 12);
                buf[n++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
                buf[n++] = (uint8_t)(0x80 | (cp & 0x3f));
            } else {
                buf[n++] = (uint8_t)(0xf0 | cp >> 18);
                buf[n++] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
                buf[n++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
                buf[n++] = (uint8_t)(0x80 | (cp & 0x3f));
            }
            if (r % 97 == 0)
                break;
        }
        if (iter % 2) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            buf[(seed >> 33) % n] ^= (uint8_t)(1u << ((seed >> 20) % 8));
        }
        int want = ref_check(buf, n);
        cc_ws_utf8_t u;
        cc_ws_utf8_init(&u);
        cc_ws_result_t r = CC_WS_OK;
        size_t pos = 0;
        while (pos < n && r == CC_WS_OK) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t piece = 1 + (seed >> 33) % 20;
            if (piece > n - pos)
                piece = n - pos;
            r = cc_ws_utf8_feed(&u, buf + pos, piece);
            pos += piece;
        }
        if (r == CC_WS_OK)
            r = cc_ws_utf8_finish(&u);
        CHECK_EQ_INT(r == CC_WS_OK ? 0 : r == CC_WS_E_UTF8_TRUNCATED ? 2 : 1, want);
    }
}

int main(void) {
    RUN(test_valid);
    RUN(test_invalid);
    RUN(test_truncated);
    RUN(test_sticky_error);
    RUN(test_fast_path_positions);
    RUN(test_exhaustive_short);
    RUN(test_four_byte_sequences);
    RUN(test_random_against_reference);
    return ws_report();
}
