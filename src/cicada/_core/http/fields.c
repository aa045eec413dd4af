/* Decoders for pieces of a request the server turns into scope values: percent-decoding of the
 * path, "host[:port]" as proxies send it, and comma-separated list items. Pure functions over
 * byte spans: no Python.h, no allocation; fuzzed by fuzz/fuzz_http_fields.c. */
#include <string.h>

#include "http/http.h"

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t cc_http_percent_decode(const char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 &&
            (lo = hexval(s[i + 2])) >= 0) {
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

/* 1-5 digits naming a port (0-65535); -1 for anything else. */
static long parse_port(const char *s, size_t n) {
    long v = 0;
    if (n == 0 || n > 5)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= 65535 ? v : -1;
}

void cc_http_split_host_port(const char *s, size_t n, const char **host, size_t *host_len,
                             long *port) {
    *host = s;
    *host_len = n;
    *port = 0;
    if (n && s[0] == '[') {
        const char *e = memchr(s, ']', n);
        if (!e)
            return;
        size_t after = n - (size_t)(e + 1 - s);
        if (after && e[1] != ':')
            return;
        *host = s + 1;
        *host_len = (size_t)(e - s - 1);
        if (after) {
            long p = parse_port(e + 2, after - 1);
            *port = p < 0 ? 0 : p;
        }
        return;
    }
    const char *c = memchr(s, ':', n);
    if (!c || memchr(c + 1, ':', n - (size_t)(c + 1 - s)))
        return; /* no port, or a bare IPv6 address */
    long p = parse_port(c + 1, n - (size_t)(c + 1 - s));
    if (p >= 0) {
        *host_len = (size_t)(c - s);
        *port = p;
    }
}

int cc_http_list_next(const char **pos, const char *end, const char **item, size_t *item_len) {
    const char *s = *pos;
    while (s < end) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *e = comma ? comma : end;
        const char *a = s;
        while (a < e && (*a == ' ' || *a == '\t'))
            a++;
        while (e > a && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        s = comma ? comma + 1 : end;
        if (e > a) {
            *pos = s;
            *item = a;
            *item_len = (size_t)(e - a);
            return 1;
        }
    }
    *pos = end;
    return 0;
}

int cc_http_list_has_token(const char *value, size_t len, const char *tok, size_t tok_len) {
    const char *pos = value, *item;
    size_t n;
    while (cc_http_list_next(&pos, value + len, &item, &n))
        if (cc_http_name_eq(item, n, tok, tok_len))
            return 1;
    return 0;
}
