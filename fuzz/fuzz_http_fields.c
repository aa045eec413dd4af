/* libFuzzer target for the field-value decoders in http/fields.c: percent-decoding (bounds, and
 * a round trip through %XX encoding), host[:port] splitting and comma-list iteration. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

static void fuzz_percent(const uint8_t *data, size_t size) {
    char *out = malloc(size ? size : 1), *enc = malloc(size * 3 + 1), *back = malloc(size * 3 + 1);
    static const char hex[] = "0123456789aBcDeF";
    if (!out || !enc || !back)
        abort();
    size_t n = cc_http_percent_decode((const char *)data, size, out);
    if (n > size || (!memchr(data, '%', size) && (n != size || memcmp(out, data, size))))
        abort();
    for (size_t i = 0; i < size; i++) {
        enc[i * 3] = '%';
        enc[i * 3 + 1] = hex[data[i] >> 4];
        enc[i * 3 + 2] = hex[data[i] & 15];
    }
    if (cc_http_percent_decode(enc, size * 3, back) != size || memcmp(back, data, size))
        abort();
    free(out);
    free(enc);
    free(back);
}

static void fuzz_host_port(const uint8_t *data, size_t size) {
    const char *s = (const char *)data, *host;
    size_t host_len;
    long port;
    cc_http_split_host_port(s, size, &host, &host_len, &port);
    if (host < s || host + host_len > s + size || port < 0 || port > 65535)
        abort();
    if (port && host_len >= size)
        abort();
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

static void fuzz_list(const uint8_t *data, size_t size) {
    const char *s = (const char *)data, *end = s + size, *pos = s, *item;
    size_t n, items = 0, commas = 0;
    for (size_t i = 0; i < size; i++)
        commas += data[i] == ',';
    while (cc_http_list_next(&pos, end, &item, &n)) {
        if (item < s || item + n > end || n == 0 || pos < item + n || pos > end)
            abort();
        if (memchr(item, ',', n) || is_ows(item[0]) || is_ows(item[n - 1]))
            abort();
        /* "close" appears as an item exactly when list_has_token says so. */
        if (cc_http_name_eq(item, n, "close", 5) && !cc_http_list_has_token(s, size, "close", 5))
            abort();
        items++;
    }
    if (items > commas + 1 || pos != end)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        fuzz_percent(data + 1, size - 1);
        break;
    case 1:
        fuzz_host_port(data + 1, size - 1);
        break;
    default:
        fuzz_list(data + 1, size - 1);
        break;
    }
    return 0;
}
