/* HTTP/1.1 request-head parser (RFC 9112): one stateless left-to-right pass over the bytes.
 * It must never allocate, do I/O or read past len, and every error must be decided by the first
 * offending byte so that parsing any prefix gives INCOMPLETE or the same error as the whole. */
#include <string.h>

#include "http_internal.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Index of the first byte in buf[p..end) that cannot continue a field value without a closer
 * look: a CTL (HTAB included, the caller steps over it), DEL; or end. */
static inline size_t cc_http_scan_value(const char *buf, size_t p, size_t end) {
#if defined(__SSE2__)
    const __m128i sp = _mm_set1_epi8(0x20);
    const __m128i del = _mm_set1_epi8(0x7f);
    const __m128i neg = _mm_set1_epi8(-1);
    while (end - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(buf + p));
        /* Signed compares: bytes >= 0x80 are negative, i.e. obs-text, which is allowed. */
        __m128i ctl = _mm_and_si128(_mm_cmplt_epi8(x, sp), _mm_cmpgt_epi8(x, neg));
        int mask = _mm_movemask_epi8(_mm_or_si128(ctl, _mm_cmpeq_epi8(x, del)));
        if (mask)
            return p + (size_t)__builtin_ctz((unsigned)mask);
        p += 16;
    }
#endif
    while (p < end && cc_http_is((unsigned char)buf[p], CC_HTTP_C_VALUE))
        p++;
    return p;
}

/* Index of the first byte in buf[p..end) that is not VCHAR (the request-target alphabet). */
static inline size_t cc_http_scan_target(const char *buf, size_t p, size_t end) {
#if defined(__SSE2__)
    const __m128i bang = _mm_set1_epi8(0x21);
    const __m128i del = _mm_set1_epi8(0x7f);
    while (end - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(buf + p));
        /* Signed: < 0x21 catches CTLs, SP and every byte >= 0x80. */
        __m128i bad = _mm_or_si128(_mm_cmplt_epi8(x, bang), _mm_cmpeq_epi8(x, del));
        int mask = _mm_movemask_epi8(bad);
        if (mask)
            return p + (size_t)__builtin_ctz((unsigned)mask);
        p += 16;
    }
#endif
    while (p < end && cc_http_is((unsigned char)buf[p], CC_HTTP_C_TARGET))
        p++;
    return p;
}

/* Lowercases a header name in place from buf[p] and returns the index of the first byte that is
 * not a token character (normally the colon), or end. The SIMD path handles the usual name
 * alphabet (letters, digits, '-') 16 bytes at a time; rarer token characters take the byte loop. */
static inline size_t cc_http_scan_name(char *buf, size_t p, size_t end) {
#if defined(__SSE2__)
    /* Sliding window: loading 16 bytes at offset 16 - k gives 0xff in lanes 0..k-1 only. */
    static const signed char prefix_mask[32] = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                                -1, -1, -1, -1, -1, 0,  0,  0,  0,  0,  0,
                                                0,  0,  0,  0,  0,  0,  0,  0,  0,  0};
    const __m128i case_bit = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(buf + p));
        __m128i upper = _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('A' - 1)),
                                      _mm_cmplt_epi8(x, _mm_set1_epi8('Z' + 1)));
        __m128i lower = _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('a' - 1)),
                                      _mm_cmplt_epi8(x, _mm_set1_epi8('z' + 1)));
        __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('0' - 1)),
                                      _mm_cmplt_epi8(x, _mm_set1_epi8('9' + 1)));
        __m128i ok = _mm_or_si128(_mm_or_si128(upper, lower),
                                  _mm_or_si128(digit, _mm_cmpeq_epi8(x, _mm_set1_epi8('-'))));
        unsigned stop = ~(unsigned)_mm_movemask_epi8(ok) & 0xffffu;
        size_t k = stop ? (size_t)__builtin_ctz(stop) : 16;
        /* Lowercase only lanes inside the name; the rest are written back unchanged. */
        __m128i keep = _mm_loadu_si128((const __m128i *)(const void *)(prefix_mask + 16 - k));
        x = _mm_add_epi8(x, _mm_and_si128(_mm_and_si128(upper, keep), case_bit));
        _mm_storeu_si128((__m128i *)(void *)(buf + p), x);
        p += k;
        if (k < 16) {
            if (!cc_http_is((unsigned char)buf[p], CC_HTTP_C_TCHAR))
                return p;
            p++; /* a rarer token character ('_', '.', '!', ...): never a letter */
        }
    }
#endif
    while (p < end && cc_http_is((unsigned char)buf[p], CC_HTTP_C_TCHAR)) {
        buf[p] = (char)cc_http_lower((unsigned char)buf[p]);
        p++;
    }
    return p;
}

static int cc_http_ieq(const char *a, size_t n, const char *lower_lit, size_t lit_len) {
    if (n != lit_len)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (cc_http_lower((unsigned char)a[i]) != (unsigned char)lower_lit[i])
            return 0;
    return 1;
}

#define CC_HTTP_IEQ(a, n, lit) cc_http_ieq((a), (n), lit, sizeof(lit) - 1)

/* Content-Length: 1*DIGIT, or a comma list of identical values (RFC 9110 section 8.6 lets a
 * recipient accept "5, 5"). "Identical" is textual: "7, 007" is rejected, so that no two parsers
 * can read different lengths from one field. first and first_len carry the digits of the first
 * value seen across repeated fields. Values above UINT64_MAX are rejected. */
static cc_http_result_t cc_http_parse_cl(const char *v, size_t n, const char **first,
                                         size_t *first_len, uint64_t *out) {
    size_t i = 0;
    for (;;) {
        while (i < n && cc_http_is((unsigned char)v[i], CC_HTTP_C_WS))
            i++;
        size_t start = i;
        uint64_t x = 0;
        while (i < n && (unsigned)(v[i] - '0') < 10u) {
            uint64_t d = (uint64_t)(v[i] - '0');
            if (x > (UINT64_MAX - d) / 10)
                return CC_HTTP_E_BAD_CONTENT_LENGTH;
            x = x * 10 + d;
            i++;
        }
        if (i == start)
            return CC_HTTP_E_BAD_CONTENT_LENGTH;
        if (*first) {
            if (i - start != *first_len || memcmp(v + start, *first, *first_len) != 0)
                return CC_HTTP_E_CONFLICTING_CONTENT_LENGTH;
        } else {
            *first = v + start;
            *first_len = i - start;
        }
        *out = x;
        while (i < n && cc_http_is((unsigned char)v[i], CC_HTTP_C_WS))
            i++;
        if (i == n)
            return CC_HTTP_OK;
        if (v[i] != ',')
            return CC_HTTP_E_BAD_CONTENT_LENGTH;
        i++;
    }
}

typedef struct {
    unsigned seen;
    unsigned chunked_count;
    unsigned last_chunked;
    unsigned other;
} cc_http_te_t;

static size_t cc_http_skip_ws(const char *v, size_t i, size_t n) {
    while (i < n && cc_http_is((unsigned char)v[i], CC_HTTP_C_WS))
        i++;
    return i;
}

static size_t cc_http_skip_token(const char *v, size_t i, size_t n) {
    while (i < n && cc_http_is((unsigned char)v[i], CC_HTTP_C_TCHAR))
        i++;
    return i;
}

/* Transfer-Encoding: 1#transfer-coding, transfer-coding = token *( OWS ";" OWS token "=" ( token /
 * quoted-string ) ). Empty list elements are rejected rather than skipped: strictness here is what
 * keeps us from disagreeing with a proxy about where a body ends. */
static cc_http_result_t cc_http_parse_te(const char *v, size_t n, cc_http_te_t *te) {
    size_t i = 0;
    te->seen = 1;
    for (;;) {
        i = cc_http_skip_ws(v, i, n);
        size_t start = i;
        i = cc_http_skip_token(v, i, n);
        if (i == start)
            return CC_HTTP_E_BAD_TRANSFER_ENCODING;
        int chunked = CC_HTTP_IEQ(v + start, i - start, "chunked");
        int params = 0;
        i = cc_http_skip_ws(v, i, n);
        while (i < n && v[i] == ';') {
            params = 1;
            i = cc_http_skip_ws(v, i + 1, n);
            size_t ps = i;
            i = cc_http_skip_token(v, i, n);
            if (i == ps)
                return CC_HTTP_E_BAD_TRANSFER_ENCODING;
            i = cc_http_skip_ws(v, i, n);
            if (i >= n || v[i] != '=')
                return CC_HTTP_E_BAD_TRANSFER_ENCODING;
            i = cc_http_skip_ws(v, i + 1, n);
            if (i < n && v[i] == '"') {
                i++;
                for (;;) {
                    if (i >= n)
                        return CC_HTTP_E_BAD_TRANSFER_ENCODING;
                    unsigned char c = (unsigned char)v[i];
                    if (c == '"')
                        break;
                    if (c == '\\') {
                        if (i + 1 >= n || !cc_http_is((unsigned char)v[i + 1], CC_HTTP_C_VALUE))
                            return CC_HTTP_E_BAD_TRANSFER_ENCODING;
                        i += 2;
                        continue;
                    }
                    if (!cc_http_is(c, CC_HTTP_C_QDTEXT))
                        return CC_HTTP_E_BAD_TRANSFER_ENCODING;
                    i++;
                }
                i++;
            } else {
                size_t vs = i;
                i = cc_http_skip_token(v, i, n);
                if (i == vs)
                    return CC_HTTP_E_BAD_TRANSFER_ENCODING;
            }
            i = cc_http_skip_ws(v, i, n);
        }
        /* chunked takes no parameters (RFC 9112 section 7.1). */
        if (chunked && params)
            return CC_HTTP_E_BAD_TRANSFER_ENCODING;
        te->chunked_count += (unsigned)chunked;
        te->other += (unsigned)!chunked;
        te->last_chunked = (unsigned)chunked;
        if (i == n)
            return CC_HTTP_OK;
        if (v[i] != ',')
            return CC_HTTP_E_BAD_TRANSFER_ENCODING;
        i++;
    }
}

/* unreserved / sub-delims (RFC 3986 section 2): what a reg-name holds besides pct-encoded. */
static int cc_http_host_char(unsigned char c) {
    return (unsigned)((c | 0x20) - 'a') < 26u || (unsigned)(c - '0') < 10u ||
           (c != 0 && strchr("-._~!$&'()*+,;=", c) != NULL);
}

/* Host = uri-host [ ":" port ] (RFC 9112 section 3.2): a reg-name (IPv4 addresses included) or
 * an IP-literal in brackets, whose inside is only checked for its alphabet. RFC 9112 requires
 * a 400 for anything else, and characters such as '/', '@' or SP in a Host that an application
 * pastes into URLs are how it gets misled. */
static int cc_http_host_valid(const char *v, size_t n) {
    size_t i = 0;
    if (n && v[0] == '[') {
        for (i = 1; i < n && v[i] != ']'; i++)
            if (!cc_http_host_char((unsigned char)v[i]) && v[i] != ':' && v[i] != '%')
                return 0;
        if (i == n)
            return 0;
        i++;
    } else {
        while (i < n && v[i] != ':') {
            if (v[i] == '%') {
                if (n - i < 3 || !cc_http_is((unsigned char)v[i + 1], CC_HTTP_C_HEX) ||
                    !cc_http_is((unsigned char)v[i + 2], CC_HTTP_C_HEX))
                    return 0;
                i += 3;
                continue;
            }
            if (!cc_http_host_char((unsigned char)v[i]))
                return 0;
            i++;
        }
    }
    if (i < n && v[i] == ':')
        for (i++; i < n; i++)
            if ((unsigned)(v[i] - '0') >= 10u)
                return 0;
    return i == n;
}

#define CC_HTTP_CONN_CLOSE 1u
#define CC_HTTP_CONN_KEEP_ALIVE 2u
#define CC_HTTP_CONN_UPGRADE 4u

/* Connection: a comma list of case-insensitive tokens; only three of them matter to us. */
static unsigned cc_http_parse_connection(const char *v, size_t n) {
    unsigned flags = 0;
    size_t i = 0;
    while (i < n) {
        i = cc_http_skip_ws(v, i, n);
        size_t start = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > start && cc_http_is((unsigned char)v[e - 1], CC_HTTP_C_WS))
            e--;
        if (CC_HTTP_IEQ(v + start, e - start, "close"))
            flags |= CC_HTTP_CONN_CLOSE;
        else if (CC_HTTP_IEQ(v + start, e - start, "keep-alive"))
            flags |= CC_HTTP_CONN_KEEP_ALIVE;
        else if (CC_HTTP_IEQ(v + start, e - start, "upgrade"))
            flags |= CC_HTTP_CONN_UPGRADE;
        i++;
    }
    return flags;
}

/* We need byte i but it is not there: either the head outgrew a limit or more bytes may come. */
static inline cc_http_result_t cc_http_oob(size_t i, size_t head_limit) {
    return i >= head_limit ? CC_HTTP_E_HEAD_TOO_LARGE : CC_HTTP_INCOMPLETE;
}

/* Same, inside the request line: rl_cap is the offset of the first byte past the longest allowed
 * line content. Only the CR may sit there, and the scans below never ask for more. */
static inline cc_http_result_t cc_http_rl_oob(size_t i, size_t rl_cap, size_t head_limit) {
    if (i >= rl_cap)
        return CC_HTTP_E_REQUEST_LINE_TOO_LONG;
    return cc_http_oob(i, head_limit);
}

cc_http_result_t cc_http_parse_request(char *buf, size_t len, const cc_http_limits_t *lim,
                                       cc_http_header_t *headers, size_t max_headers,
                                       cc_http_request_t *req) {
    cc_http_limits_t dflt;
    if (!lim) {
        cc_http_limits_default(&dflt);
        lim = &dflt;
    }
    const size_t head_limit = lim->max_head_size;
    const size_t end = len < head_limit ? len : head_limit;
    size_t p = 0;

    /* RFC 9112 section 2.2: ignore empty lines before the request line (some clients send a
     * CRLF after a POST body). They count towards the head size. */
    for (;;) {
        if (p >= end)
            return cc_http_oob(p, head_limit);
        if (buf[p] == '\n')
            return CC_HTTP_E_BARE_LF;
        if (buf[p] != '\r')
            break;
        if (p + 1 >= end)
            return cc_http_oob(p + 1, head_limit);
        if (buf[p + 1] != '\n')
            return CC_HTTP_E_BARE_CR;
        p += 2;
    }

    /* ---- request line: method SP request-target SP HTTP-version CRLF ---- */
    const size_t rl_cap =
        lim->max_request_line <= SIZE_MAX - p ? p + lim->max_request_line : SIZE_MAX;
    const size_t cend = end < rl_cap ? end : rl_cap;

    const size_t method = p;
    while (p < cend && cc_http_is((unsigned char)buf[p], CC_HTTP_C_TCHAR))
        p++;
    if (p >= cend)
        return cc_http_rl_oob(p, rl_cap, head_limit);
    if (buf[p] != ' ') {
        unsigned char c = (unsigned char)buf[p];
        if (p == method || c == '\r' || c == '\n' || c == '\t')
            return CC_HTTP_E_BAD_REQUEST_LINE;
        return CC_HTTP_E_BAD_METHOD;
    }
    if (p == method)
        return CC_HTTP_E_BAD_REQUEST_LINE;
    const size_t method_len = p - method;
    p++;

    const size_t target = p;
    p = cc_http_scan_target(buf, p, cend);
    if (p >= cend)
        return cc_http_rl_oob(p, rl_cap, head_limit);
    if (buf[p] != ' ') {
        unsigned char c = (unsigned char)buf[p];
        /* An empty target (double SP), HTTP/0.9 style "GET /\r\n", or a TAB separator. */
        if (p == target || c == '\r' || c == '\n' || c == '\t')
            return CC_HTTP_E_BAD_REQUEST_LINE;
        return CC_HTTP_E_BAD_TARGET;
    }
    if (p == target)
        return CC_HTTP_E_BAD_REQUEST_LINE;
    const size_t target_len = p - target;
    p++;

    static const char proto[] = "HTTP/";
    for (size_t k = 0; k < 8; k++, p++) {
        if (p >= cend)
            return cc_http_rl_oob(p, rl_cap, head_limit);
        unsigned char c = (unsigned char)buf[p];
        int ok = k < 5    ? c == (unsigned char)proto[k]
                 : k == 6 ? c == '.'
                          : (unsigned)(c - '0') < 10u;
        if (!ok)
            return c == ' ' && k == 0 ? CC_HTTP_E_BAD_REQUEST_LINE : CC_HTTP_E_BAD_VERSION;
    }
    const char major = buf[p - 3], minor = buf[p - 1];
    /* p <= rl_cap here: the CR may sit exactly at rl_cap (line content exactly at the limit). */
    if (p >= end)
        return cc_http_oob(p, head_limit);
    if (buf[p] != '\r') {
        unsigned char c = (unsigned char)buf[p];
        if (c == '\n')
            return CC_HTTP_E_BARE_LF;
        return c == ' ' || c == '\t' ? CC_HTTP_E_BAD_REQUEST_LINE : CC_HTTP_E_BAD_VERSION;
    }
    if (p + 1 >= end)
        return cc_http_oob(p + 1, head_limit);
    if (buf[p + 1] != '\n')
        return CC_HTTP_E_BARE_CR;
    p += 2;

    /* ---- header section ---- */
    const size_t nmax = max_headers < lim->max_headers ? max_headers : lim->max_headers;
    size_t nh = 0;
    unsigned host_count = 0, conn = 0, has_upgrade = 0, expect = 0, cl_seen = 0;
    const char *upgrade_value = NULL;
    size_t upgrade_len = 0;
    uint64_t cl = 0;
    const char *cl_first = NULL;
    size_t cl_first_len = 0;
    cc_http_te_t te = {0, 0, 0, 0};
    /* Framing errors wait until the head is complete: a later syntax error must win on the whole
     * input too, or a prefix could report a different error than the full head. */
    cc_http_result_t deferred = CC_HTTP_OK;

    for (;;) {
        if (p >= end)
            return cc_http_oob(p, head_limit);
        unsigned char c = (unsigned char)buf[p];
        if (c == '\r') {
            if (p + 1 >= end)
                return cc_http_oob(p + 1, head_limit);
            if (buf[p + 1] != '\n')
                return CC_HTTP_E_BARE_CR;
            p += 2;
            break;
        }
        if (CC_HTTP_UNLIKELY(!cc_http_is(c, CC_HTTP_C_TCHAR))) {
            if (c == '\n')
                return CC_HTTP_E_BARE_LF;
            if (c == ' ' || c == '\t')
                return CC_HTTP_E_OBS_FOLD;
            return CC_HTTP_E_BAD_HEADER_NAME;
        }
        if (CC_HTTP_UNLIKELY(nh >= nmax))
            return CC_HTTP_E_TOO_MANY_HEADERS;
        char *name = buf + p;
        p = cc_http_scan_name(buf, p, end);
        if (p >= end)
            return cc_http_oob(p, head_limit);
        if (CC_HTTP_UNLIKELY(buf[p] != ':')) {
            c = (unsigned char)buf[p];
            return c == ' ' || c == '\t' ? CC_HTTP_E_WS_BEFORE_COLON : CC_HTTP_E_BAD_HEADER_NAME;
        }
        const size_t name_len = (size_t)(buf + p - name);
        p++;
        while (p < end && (buf[p] == ' ' || buf[p] == '\t'))
            p++;
        const size_t vstart = p;
        for (;;) {
            p = cc_http_scan_value(buf, p, end);
            if (p >= end)
                return cc_http_oob(p, head_limit);
            if (buf[p] != '\t')
                break;
            p++;
        }
        if (CC_HTTP_UNLIKELY(buf[p] != '\r'))
            return buf[p] == '\n' ? CC_HTTP_E_BARE_LF : CC_HTTP_E_BAD_HEADER_VALUE;
        if (p + 1 >= end)
            return cc_http_oob(p + 1, head_limit);
        if (CC_HTTP_UNLIKELY(buf[p + 1] != '\n'))
            return CC_HTTP_E_BARE_CR;
        size_t vend = p;
        while (vend > vstart && (buf[vend - 1] == ' ' || buf[vend - 1] == '\t'))
            vend--;
        p += 2;

        cc_http_header_t *h = &headers[nh++];
        h->name = name;
        h->name_len = name_len;
        h->value = buf + vstart;
        h->value_len = vend - vstart;

        /* The few fields that decide framing and connection handling, by length first. */
        switch (name_len) {
        case 4:
            if (memcmp(name, "host", 4) == 0) {
                host_count++;
                if (deferred == CC_HTTP_OK && !cc_http_host_valid(h->value, h->value_len))
                    deferred = CC_HTTP_E_BAD_HOST;
            }
            break;
        case 6:
            if (memcmp(name, "expect", 6) == 0 &&
                CC_HTTP_IEQ(h->value, h->value_len, "100-continue"))
                expect = 1;
            break;
        case 7:
            if (memcmp(name, "upgrade", 7) == 0 && !has_upgrade) {
                has_upgrade = 1;
                upgrade_value = h->value;
                upgrade_len = h->value_len;
            }
            break;
        case 10:
            if (memcmp(name, "connection", 10) == 0)
                conn |= cc_http_parse_connection(h->value, h->value_len);
            break;
        case 14:
            if (memcmp(name, "content-length", 14) == 0 && deferred == CC_HTTP_OK) {
                cc_http_result_t r =
                    cc_http_parse_cl(h->value, h->value_len, &cl_first, &cl_first_len, &cl);
                if (r != CC_HTTP_OK)
                    deferred = r;
                cl_seen = 1;
            }
            break;
        case 17:
            if (memcmp(name, "transfer-encoding", 17) == 0 && deferred == CC_HTTP_OK) {
                cc_http_result_t r = cc_http_parse_te(h->value, h->value_len, &te);
                if (r != CC_HTTP_OK)
                    deferred = r;
            }
            break;
        default:
            break;
        }
    }

    const int minor_v = minor - '0';
    if (major != '1' || minor_v > 1)
        return CC_HTTP_E_VERSION_UNSUPPORTED;
    if (host_count > 1)
        return CC_HTTP_E_MULTIPLE_HOST;
    if (host_count == 0 && minor_v == 1)
        return CC_HTTP_E_MISSING_HOST;
    if (deferred != CC_HTTP_OK)
        return deferred;

    cc_http_body_t body = CC_HTTP_BODY_NONE;
    if (te.seen) {
        if (minor_v == 0)
            return CC_HTTP_E_TE_HTTP10;
        if (cl_seen)
            return CC_HTTP_E_CL_AND_TE;
        if (!te.last_chunked)
            return CC_HTTP_E_TE_NOT_CHUNKED_FINAL;
        if (te.chunked_count > 1)
            return CC_HTTP_E_TE_CHUNKED_TWICE;
        if (te.other)
            return CC_HTTP_E_TE_UNSUPPORTED;
        body = CC_HTTP_BODY_CHUNKED;
        cl = 0;
    } else if (cl_seen && cl > 0) {
        body = CC_HTTP_BODY_LENGTH;
    }

    req->method = buf + method;
    req->method_len = method_len;
    req->target = buf + target;
    req->target_len = target_len;
    req->version_minor = minor_v;
    req->headers = headers;
    req->num_headers = nh;
    req->body = body;
    req->content_length = cl;
    req->keep_alive = minor_v == 1
                          ? !(conn & CC_HTTP_CONN_CLOSE)
                          : (conn & CC_HTTP_CONN_KEEP_ALIVE) && !(conn & CC_HTTP_CONN_CLOSE);
    /* RFC 9110 section 7.8: Upgrade in an HTTP/1.0 request MUST be ignored (a 1.0 intermediary
     * may have passed it on without honouring Connection). */
    req->upgrade = minor_v == 1 && (conn & CC_HTTP_CONN_UPGRADE) && has_upgrade;
    req->expect_continue = expect && minor_v == 1;
    req->upgrade_value = req->upgrade ? upgrade_value : NULL;
    req->upgrade_len = req->upgrade ? upgrade_len : 0;
    req->head_len = p;
    return CC_HTTP_OK;
}

long cc_http_find_head_end(const char *buf, size_t len, size_t from) {
    size_t i = from;
    while (i < len) {
        const char *lf = memchr(buf + i, '\n', len - i);
        if (!lf)
            return -1;
        i = (size_t)(lf - buf);
        if (i + 1 < len && buf[i + 1] == '\n')
            return (long)(i + 2);
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
            return (long)(i + 3);
        i++;
    }
    return -1;
}
