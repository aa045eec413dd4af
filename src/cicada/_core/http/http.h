/* The HTTP/1.1 layer's public interface: a request-head parser and a chunked body decoder.
 * Plain C over byte buffers: no Python.h, no I/O, no allocation. Everything here can be unit
 * tested and fuzzed without an interpreter. */
#ifndef CC_HTTP_H
#define CC_HTTP_H

#include <stddef.h>
#include <stdint.h>

/* Defaults for cc_http_limits_t. The server exposes them as settings. */
#define CC_HTTP_DEFAULT_MAX_REQUEST_LINE 8192
#define CC_HTTP_DEFAULT_MAX_HEAD_SIZE 65536
#define CC_HTTP_DEFAULT_MAX_HEADERS 100
#define CC_HTTP_MAX_CHUNK_EXT 4096
/* Trailer block limit used when a zero-initialised decoder has max_trailer == 0. */
#define CC_HTTP_DEFAULT_MAX_TRAILER 8192

/* Results. CC_HTTP_OK and CC_HTTP_INCOMPLETE are not errors; every other value is, and maps to a
 * static reason (cc_http_reason) and an HTTP status (cc_http_status). */
typedef enum {
    CC_HTTP_OK = 0,
    CC_HTTP_INCOMPLETE,
    /* 414 */
    CC_HTTP_E_REQUEST_LINE_TOO_LONG,
    /* 431 */
    CC_HTTP_E_HEAD_TOO_LARGE,
    CC_HTTP_E_TOO_MANY_HEADERS,
    /* 505 */
    CC_HTTP_E_VERSION_UNSUPPORTED,
    /* 501 */
    CC_HTTP_E_TE_UNSUPPORTED,
    /* 400: request line */
    CC_HTTP_E_BAD_METHOD,
    CC_HTTP_E_BAD_TARGET,
    CC_HTTP_E_BAD_VERSION,
    CC_HTTP_E_BAD_REQUEST_LINE,
    /* 400: header block */
    CC_HTTP_E_BAD_HEADER_NAME,
    CC_HTTP_E_WS_BEFORE_COLON,
    CC_HTTP_E_OBS_FOLD,
    CC_HTTP_E_BAD_HEADER_VALUE,
    CC_HTTP_E_BARE_CR,
    CC_HTTP_E_BARE_LF,
    CC_HTTP_E_MISSING_HOST,
    CC_HTTP_E_MULTIPLE_HOST,
    CC_HTTP_E_BAD_HOST,
    /* 400: framing */
    CC_HTTP_E_BAD_CONTENT_LENGTH,
    CC_HTTP_E_CONFLICTING_CONTENT_LENGTH,
    CC_HTTP_E_CL_AND_TE,
    CC_HTTP_E_TE_NOT_CHUNKED_FINAL,
    CC_HTTP_E_TE_CHUNKED_TWICE,
    CC_HTTP_E_TE_HTTP10,
    CC_HTTP_E_BAD_TRANSFER_ENCODING,
    /* 400: chunked body */
    CC_HTTP_E_BAD_CHUNK_SIZE,
    CC_HTTP_E_CHUNK_SIZE_OVERFLOW,
    CC_HTTP_E_BAD_CHUNK_EXT,
    CC_HTTP_E_CHUNK_EXT_TOO_LONG,
    CC_HTTP_E_BAD_CHUNK_END,
    CC_HTTP_E_BAD_TRAILER,
    CC_HTTP_E_TRAILER_TOO_LARGE,
    CC_HTTP_E__COUNT
} cc_http_result_t;

/* Short, static, human-readable reason: the server sends it as the 400 body and logs it. */
const char *cc_http_reason(cc_http_result_t r);
/* The status code the server answers with (400, 414, 431, 501, 505); 0 for OK/INCOMPLETE. */
int cc_http_status(cc_http_result_t r);

typedef struct {
    size_t max_request_line; /* bytes of "METHOD target HTTP/1.x" (CRLF excluded) -> 414 */
    size_t max_head_size;    /* bytes of the whole head including the blank line -> 431 */
    size_t max_headers;      /* header field lines -> 431 */
} cc_http_limits_t;

void cc_http_limits_default(cc_http_limits_t *lim);

typedef struct {
    const char *name; /* lowercased in place by the parser */
    size_t name_len;
    const char *value; /* leading/trailing OWS stripped, otherwise as sent */
    size_t value_len;
} cc_http_header_t;

typedef enum {
    CC_HTTP_BODY_NONE = 0, /* no body: Content-Length absent (and no TE) or 0 */
    CC_HTTP_BODY_LENGTH,   /* content_length bytes follow */
    CC_HTTP_BODY_CHUNKED,  /* decode with cc_http_chunked_* */
} cc_http_body_t;

typedef struct {
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    int version_minor; /* HTTP/1.<minor>: 0 or 1 */
    cc_http_header_t *headers; /* caller's array, filled in order */
    size_t num_headers;
    cc_http_body_t body;
    uint64_t content_length;    /* valid when body == CC_HTTP_BODY_LENGTH */
    unsigned keep_alive : 1;    /* persistent connection per version and Connection */
    unsigned upgrade : 1;       /* HTTP/1.1, Connection: upgrade and an Upgrade header */
    unsigned expect_continue : 1; /* Expect: 100-continue (HTTP/1.1 only) */
    const char *upgrade_value; /* the Upgrade header's value when upgrade is set */
    size_t upgrade_len;
    size_t head_len; /* bytes consumed by the head, blank line included */
} cc_http_request_t;

/* Parse one request head at the start of buf[0..len).
 * Returns CC_HTTP_OK with *req filled (head_len says how much was consumed), CC_HTTP_INCOMPLETE
 * when more bytes are needed (call again later with the same bytes plus more: the function keeps
 * no state), or an error. headers/max_headers is the caller's storage; exceeding it or
 * lim->max_headers is CC_HTTP_E_TOO_MANY_HEADERS. The only write to buf is lowercasing header
 * names, which is idempotent, so re-parsing after INCOMPLETE is safe. Limits are enforced even on
 * incomplete input so a client cannot make the caller buffer more than the limits allow. */
cc_http_result_t cc_http_parse_request(char *buf, size_t len, const cc_http_limits_t *lim,
                                       cc_http_header_t *headers, size_t max_headers,
                                       cc_http_request_t *req);

/* Incremental chunked body decoder. Zero-initialise (or call cc_http_chunked_init), then feed
 * bytes as they arrive. */
typedef struct {
    int state;
    uint64_t remaining;   /* data bytes left in the current chunk */
    size_t count;         /* bytes seen in the current size line / extension / trailer block */
    size_t max_trailer;   /* limit on the trailer block, bytes */
    unsigned size_digits; /* hex digits of the current size */
} cc_http_chunked_t;

void cc_http_chunked_init(cc_http_chunked_t *d, size_t max_trailer);

/* Consume bytes from buf[0..len). *consumed is always set to what was used.
 * - CC_HTTP_OK with *data and *data_len set to a non-empty span of body data inside buf:
 *   deliver it, then call again with the rest;
 * - CC_HTTP_OK with *data_len == 0 and cc_http_chunked_done(d): the last chunk and trailers have
 *   been read, the message ends at buf + *consumed;
 * - CC_HTTP_INCOMPLETE: everything given was consumed (into state); feed more;
 * - an error: the body is malformed. */
cc_http_result_t cc_http_chunked_decode(cc_http_chunked_t *d, const char *buf, size_t len,
                                        size_t *consumed, const char **data, size_t *data_len);
int cc_http_chunked_done(const cc_http_chunked_t *d);

/* Length of the head up to and including its blank line, or -1 when buf[from..len) holds none.
 * Lets a caller skip re-parsing until a head may be complete: call cc_http_parse_request when this
 * is >= 0 (it may still say INCOMPLETE, e.g. after leading empty lines: search again from the
 * returned offset), or when len exceeds the smaller of the limits (so 414/431 are sent without
 * waiting). A blank line is LF followed by LF or CRLF, so heads with bare LFs are found too and
 * rejected promptly instead of waiting for a CRLFCRLF that never comes. To resume a search after
 * more bytes arrive, pass from = previous len - 2 (or 0). */
long cc_http_find_head_end(const char *buf, size_t len, size_t from);

/* ---- Response writing (http/response.c) ------------------------------------------------------ */

/* Longest status line cc_http_status_line writes ("HTTP/1.1 " + 3 digits + " " + reason + CRLF). */
#define CC_HTTP_STATUS_LINE_MAX 64

/* Standard reason phrase for a status code; "" for codes without one (the status line then ends
 * with "NNN \r\n", which RFC 9112 allows). Never NULL. */
const char *cc_http_status_reason(int status);
/* Write "HTTP/1.<minor> <status> <reason>\r\n" to out (at least CC_HTTP_STATUS_LINE_MAX bytes).
 * status must be 100..999. Returns the length written. */
size_t cc_http_status_line(char *out, int version_minor, int status);
/* 1 if name[0..len) is a non-empty RFC 9110 token (valid field name), else 0. */
int cc_http_valid_header_name(const char *name, size_t len);
/* 1 if a field value holds no CR, LF or NUL (what would let an app split or smuggle a header). */
int cc_http_valid_header_value(const char *value, size_t len);
/* Write the chunk-size line "<hex>\r\n" for a chunk of n bytes into out (>= 20 bytes); returns
 * its length. */
size_t cc_http_chunk_size_line(char *out, size_t n);
/* Case-insensitive comparison of a[0..alen) with the lowercase ASCII literal b. */
int cc_http_name_eq(const char *a, size_t alen, const char *b, size_t blen);

/* ---- Field values (http/fields.c) ---------------------------------------------------------- */

/* Percent-decode s[0..n) into out (room for n bytes); returns the decoded length (<= n). A '%'
 * not followed by two hex digits is kept as is, as urllib's unquote does. */
size_t cc_http_percent_decode(const char *s, size_t n, char *out);
/* Split "host", "host:port" or "[v6]" / "[v6]:port" as proxies send them in X-Forwarded-For.
 * *host points into s; *port is 0 when absent or not 1-5 digits. A bare IPv6 address (several
 * colons, no brackets) is all host. */
void cc_http_split_host_port(const char *s, size_t n, const char **host, size_t *host_len,
                             long *port);
/* Next non-empty item of a comma-separated list, OWS trimmed: 1 and the item, or 0 at the end.
 * Start with *pos = value; end = value + len. */
int cc_http_list_next(const char **pos, const char *end, const char **item, size_t *item_len);
/* 1 if the comma-separated list value contains the token tok (lowercase), ignoring case and OWS. */
int cc_http_list_has_token(const char *value, size_t len, const char *tok, size_t tok_len);

#endif
