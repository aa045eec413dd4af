/* C unit tests for http/response.c (status lines, reasons, header validation, chunk framing) and
 * the core input buffer. Built with ASan+UBSan by `make ctest`; no Python. */
#include "http/http.h"
#include "runner.h"

/* The Makefile links only http/ and ws/ into C tests; the buffer is plain C too, so pull it in. */
#include "core/buffer.c"

#include <string.h>

TEST(test_status_line) {
    char out[CC_HTTP_STATUS_LINE_MAX];
    size_t n = cc_http_status_line(out, 1, 200);
    CHECK_MEM(out, n, "HTTP/1.1 200 OK\r\n");
    n = cc_http_status_line(out, 0, 404);
    CHECK_MEM(out, n, "HTTP/1.0 404 Not Found\r\n");
    n = cc_http_status_line(out, 1, 599); /* no standard reason: empty, still valid */
    CHECK_MEM(out, n, "HTTP/1.1 599 \r\n");
    /* every status fits the advertised bound */
    for (int s = 100; s <= 999; s++)
        CHECK(cc_http_status_line(out, 1, s) <= CC_HTTP_STATUS_LINE_MAX);
}

TEST(test_reasons) {
    CHECK(strcmp(cc_http_status_reason(431), "Request Header Fields Too Large") == 0);
    CHECK(strcmp(cc_http_status_reason(503), "Service Unavailable") == 0);
    CHECK(strcmp(cc_http_status_reason(1000), "") == 0);
}

TEST(test_header_validation) {
    CHECK(cc_http_valid_header_name("content-type", 12));
    CHECK(cc_http_valid_header_name("X-A_b.c~!", 9));
    CHECK(!cc_http_valid_header_name("", 0));
    CHECK(!cc_http_valid_header_name("bad name", 8));
    CHECK(!cc_http_valid_header_name("a:b", 3));
    CHECK(!cc_http_valid_header_name("a\0b", 3));
    CHECK(!cc_http_valid_header_name("caf\xc3\xa9", 5));
    CHECK(cc_http_valid_header_value("text/plain; q=1", 15));
    CHECK(cc_http_valid_header_value("", 0));
    CHECK(cc_http_valid_header_value("tab\there", 8));
    CHECK(!cc_http_valid_header_value("a\r\nb: c", 7));
    CHECK(!cc_http_valid_header_value("a\nb", 3));
    CHECK(!cc_http_valid_header_value("a\0", 2));
}

TEST(test_chunk_size_line) {
    char out[24];
    size_t n = cc_http_chunk_size_line(out, 0);
    CHECK_MEM(out, n, "0\r\n");
    n = cc_http_chunk_size_line(out, 255);
    CHECK_MEM(out, n, "ff\r\n");
    n = cc_http_chunk_size_line(out, 0x10000);
    CHECK_MEM(out, n, "10000\r\n");
    n = cc_http_chunk_size_line(out, (size_t)-1);
    CHECK_MEM(out, n, "ffffffffffffffff\r\n");
}

TEST(test_tokens) {
    CHECK(cc_http_name_eq("Content-Length", 14, "content-length", 14));
    CHECK(!cc_http_name_eq("Content-Lengthx", 15, "content-length", 14));
    CHECK(cc_http_list_has_token("keep-alive, Close", 17, "close", 5));
    CHECK(cc_http_list_has_token(" gzip ,chunked ", 15, "chunked", 7));
    CHECK(!cc_http_list_has_token("closed", 6, "close", 5));
    CHECK(!cc_http_list_has_token("", 0, "close", 5));
}

TEST(test_buffer) {
    cc_buf_t b;
    cc_buf_init(&b);
    CHECK(cc_buf_append(&b, "hello ", 6) == 0);
    CHECK(cc_buf_append(&b, "world", 5) == 0);
    CHECK_MEM(cc_buf_ptr(&b), b.len, "hello world");
    cc_buf_consume(&b, 6);
    CHECK_MEM(cc_buf_ptr(&b), b.len, "world");
    /* growth across many appends keeps the unconsumed bytes intact */
    for (int i = 0; i < 10000; i++)
        CHECK(cc_buf_append(&b, "0123456789", 10) == 0);
    CHECK(b.len == 5 + 100000);
    CHECK(memcmp(cc_buf_ptr(&b), "world0123", 9) == 0);
    cc_buf_consume(&b, b.len);
    CHECK(b.len == 0 && b.start == 0);
    cc_buf_release(&b, 0);
    CHECK(b.data == NULL && b.cap == 0);
    /* compaction instead of growth when the head was consumed */
    CHECK(cc_buf_append(&b, "abcdefgh", 8) == 0);
    size_t cap = b.cap;
    cc_buf_consume(&b, 7);
    CHECK(cc_buf_reserve(&b, cap - 1) == 0);
    CHECK(b.cap == cap && b.start == 0);
    CHECK_MEM(cc_buf_ptr(&b), b.len, "h");
    cc_buf_free(&b);
}

RUN_TESTS(TEST_ENTRY(test_status_line), TEST_ENTRY(test_reasons),
          TEST_ENTRY(test_header_validation), TEST_ENTRY(test_chunk_size_line),
          TEST_ENTRY(test_tokens), TEST_ENTRY(test_buffer))
