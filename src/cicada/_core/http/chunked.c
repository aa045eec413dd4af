/* Incremental decoder for the chunked transfer coding (RFC 9112 section 7.1): a byte-driven state
 * machine that hands back spans of the caller's buffer. It never copies body bytes, never
 * allocates, and validates (then discards) chunk extensions and trailer fields. */
#include "http_internal.h"

/* A zero-initialised decoder must start in CC_CH_SIZE_FIRST, hence value 0. */
enum {
    CC_CH_SIZE_FIRST = 0, /* first hex digit of a chunk size */
    CC_CH_SIZE,           /* more hex digits, or what follows them */
    CC_CH_EXT_WS,         /* BWS seen after the size or an ext value: only BWS or ';' may follow */
    CC_CH_EXT_NAME_START, /* after ';': BWS then a token */
    CC_CH_EXT_NAME,       /* inside an ext name */
    CC_CH_EXT_NAME_WS,    /* BWS after an ext name: '=' or ';' or more BWS */
    CC_CH_EXT_VAL_START,  /* after '=': BWS then token or quoted-string */
    CC_CH_EXT_VAL_TOKEN,  /* inside a token value */
    CC_CH_EXT_VAL_QUOTED, /* inside a quoted-string */
    CC_CH_EXT_VAL_ESC,    /* after a backslash in a quoted-string */
    CC_CH_EXT_VAL_END,    /* after the closing quote */
    CC_CH_SIZE_LF,        /* CR of the size line seen */
    CC_CH_DATA,           /* remaining data bytes */
    CC_CH_DATA_CR,        /* CRLF after the data */
    CC_CH_DATA_LF,
    CC_CH_TRAILER_START, /* start of a trailer line or of the final CRLF */
    CC_CH_TRAILER_NAME,
    CC_CH_TRAILER_VALUE,
    CC_CH_TRAILER_LF,
    CC_CH_END_LF, /* CR of the final empty line seen */
    CC_CH_DONE,
};

/* Longest chunk size we accept: 16 hex digits always fit in uint64_t. */
#define CC_HTTP_MAX_CHUNK_SIZE_DIGITS 16u

void cc_http_chunked_init(cc_http_chunked_t *d, size_t max_trailer) {
    d->state = CC_CH_SIZE_FIRST;
    d->remaining = 0;
    d->count = 0;
    d->max_trailer = max_trailer;
    d->size_digits = 0;
}

int cc_http_chunked_done(const cc_http_chunked_t *d) { return d->state == CC_CH_DONE; }

static inline unsigned cc_http_hexval(unsigned char c) {
    return c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
}

/* After the size line's CR: either data follows, or (size 0) the trailer section. */
static inline int cc_http_after_size_line(const cc_http_chunked_t *d) {
    return d->remaining ? CC_CH_DATA : CC_CH_TRAILER_START;
}

cc_http_result_t cc_http_chunked_decode(cc_http_chunked_t *d, const char *buf, size_t len,
                                        size_t *consumed, const char **data, size_t *data_len) {
    size_t i = 0;
    const size_t max_trailer = d->max_trailer ? d->max_trailer : CC_HTTP_DEFAULT_MAX_TRAILER;
    cc_http_result_t rc = CC_HTTP_INCOMPLETE;
    *data = NULL;
    *data_len = 0;

    while (i < len) {
        int st = d->state;
        if (st == CC_CH_DATA) {
            size_t avail = len - i;
            size_t n = d->remaining < avail ? (size_t)d->remaining : avail;
            *data = buf + i;
            *data_len = n;
            i += n;
            d->remaining -= n;
            if (d->remaining == 0)
                d->state = CC_CH_DATA_CR;
            rc = CC_HTTP_OK;
            goto done;
        }
        if (st == CC_CH_DONE) {
            rc = CC_HTTP_OK;
            goto done;
        }
        unsigned char c = (unsigned char)buf[i];
        /* Size line and extensions share one length budget; trailers have their own. */
        if (st < CC_CH_DATA) {
            if (++d->count > CC_HTTP_MAX_CHUNK_EXT) {
                rc = CC_HTTP_E_CHUNK_EXT_TOO_LONG;
                goto done;
            }
        } else if (st >= CC_CH_TRAILER_START) {
            if (++d->count > max_trailer) {
                rc = CC_HTTP_E_TRAILER_TOO_LARGE;
                goto done;
            }
        }
        switch (st) {
        case CC_CH_SIZE_FIRST:
            if (!cc_http_is(c, CC_HTTP_C_HEX)) {
                rc = CC_HTTP_E_BAD_CHUNK_SIZE;
                goto done;
            }
            d->remaining = cc_http_hexval(c);
            d->size_digits = 1;
            d->state = CC_CH_SIZE;
            break;
        case CC_CH_SIZE:
            if (cc_http_is(c, CC_HTTP_C_HEX)) {
                if (++d->size_digits > CC_HTTP_MAX_CHUNK_SIZE_DIGITS) {
                    rc = CC_HTTP_E_CHUNK_SIZE_OVERFLOW;
                    goto done;
                }
                d->remaining = (d->remaining << 4) | cc_http_hexval(c);
            } else if (c == '\r') {
                d->state = CC_CH_SIZE_LF;
            } else if (c == ';') {
                d->state = CC_CH_EXT_NAME_START;
            } else if (c == ' ' || c == '\t') {
                d->state = CC_CH_EXT_WS;
            } else {
                rc = CC_HTTP_E_BAD_CHUNK_SIZE;
                goto done;
            }
            break;
        case CC_CH_EXT_WS:
            if (c == ';')
                d->state = CC_CH_EXT_NAME_START;
            else if (c != ' ' && c != '\t') {
                rc = CC_HTTP_E_BAD_CHUNK_EXT;
                goto done;
            }
            break;
        case CC_CH_EXT_NAME_START:
            if (cc_http_is(c, CC_HTTP_C_TCHAR))
                d->state = CC_CH_EXT_NAME;
            else if (c != ' ' && c != '\t') {
                rc = CC_HTTP_E_BAD_CHUNK_EXT;
                goto done;
            }
            break;
        case CC_CH_EXT_NAME:
            if (cc_http_is(c, CC_HTTP_C_TCHAR))
                break;
            if (c == '\r')
                d->state = CC_CH_SIZE_LF;
            else if (c == ';')
                d->state = CC_CH_EXT_NAME_START;
            else if (c == '=')
                d->state = CC_CH_EXT_VAL_START;
            else if (c == ' ' || c == '\t')
                d->state = CC_CH_EXT_NAME_WS;
            else {
                rc = CC_HTTP_E_BAD_CHUNK_EXT;
                goto done;
            }
            break;
        case CC_CH_EXT_NAME_WS:
            if (c == ';')
                d->state = CC_CH_EXT_NAME_START;
            else if (c == '=')
                d->state = CC_CH_EXT_VAL_START;
            else if (c != ' ' && c != '\t') {
                rc = CC_HTTP_E_BAD_CHUNK_EXT;
                goto done;
            }
            break;
        case CC_CH_EXT_VAL_START:
            if (cc_http_is(c, CC_HTTP_C_TCHAR))
                d->state = CC_CH_EXT_VAL_TOKEN;
            else if (c == '"')
                d->state = CC_CH_EXT_VAL_QUOTED;
            else if (c != ' ' && c != '\t') {
                rc = CC_HTTP_E_BAD_CHUNK_EXT;
                goto done;
            }
            break;
        case CC_CH_EXT_VAL_TOKEN:
            if (cc_http_is(c, CC_HTTP_C_TCHAR))
                break;
            if (c == '\r')
                d->state = CC_CH_SIZE_LF;
            else if (c == ';')
                d->state = CC_CH_EXT_NAME_START;
            else if (c == ' ' || c == '\t')
                d->state = CC_CH_EXT_WS;
            else {
                rc = CC_HTTP_E_BAD_CHUNK_EXT;
                goto done;
            }
            break;
        case CC_CH_EXT_VAL_QUOTED:
            if (c == '"')
                d->state = CC_CH_EXT_VAL_END;
            else if (c == '\\')
                d->state = CC_CH_EXT_VAL_ESC;
            else if (!cc_http_is(c, CC_HTTP_C_QDTEXT)) {
                rc = CC_HTTP_E_BAD_CHUNK_EXT;
                goto done;
            }
            break;
        case CC_CH_EXT_VAL_ESC:
            /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
            if (!cc_http_is(c, CC_HTTP_C_VALUE)) {
                rc = CC_HTTP_E_BAD_CHUNK_EXT;
                goto done;
            }
            d->state = CC_CH_EXT_VAL_QUOTED;
            break;
        case CC_CH_EXT_VAL_END:
            if (c == '\r')
                d->state = CC_CH_SIZE_LF;
            else if (c == ';')
                d->state = CC_CH_EXT_NAME_START;
            else if (c == ' ' || c == '\t')
                d->state = CC_CH_EXT_WS;
            else {
                rc = CC_HTTP_E_BAD_CHUNK_EXT;
                goto done;
            }
            break;
        case CC_CH_SIZE_LF:
            if (c != '\n') {
                rc = CC_HTTP_E_BARE_CR;
                goto done;
            }
            d->count = 0;
            d->state = cc_http_after_size_line(d);
            break;
        case CC_CH_DATA_CR:
            if (c != '\r') {
                rc = CC_HTTP_E_BAD_CHUNK_END;
                goto done;
            }
            d->state = CC_CH_DATA_LF;
            break;
        case CC_CH_DATA_LF:
            if (c != '\n') {
                rc = CC_HTTP_E_BAD_CHUNK_END;
                goto done;
            }
            d->state = CC_CH_SIZE_FIRST;
            d->count = 0;
            d->size_digits = 0;
            break;
        case CC_CH_TRAILER_START:
            if (c == '\r')
                d->state = CC_CH_END_LF;
            else if (cc_http_is(c, CC_HTTP_C_TCHAR))
                d->state = CC_CH_TRAILER_NAME;
            else {
                /* bare LF, obs-fold, or a bad name character */
                rc = CC_HTTP_E_BAD_TRAILER;
                goto done;
            }
            break;
        case CC_CH_TRAILER_NAME:
            if (c == ':')
                d->state = CC_CH_TRAILER_VALUE;
            else if (!cc_http_is(c, CC_HTTP_C_TCHAR)) {
                rc = CC_HTTP_E_BAD_TRAILER;
                goto done;
            }
            break;
        case CC_CH_TRAILER_VALUE:
            if (c == '\r')
                d->state = CC_CH_TRAILER_LF;
            else if (!cc_http_is(c, CC_HTTP_C_VALUE)) {
                rc = CC_HTTP_E_BAD_TRAILER;
                goto done;
            }
            break;
        case CC_CH_TRAILER_LF:
            if (c != '\n') {
                rc = CC_HTTP_E_BAD_TRAILER;
                goto done;
            }
            d->state = CC_CH_TRAILER_START;
            break;
        case CC_CH_END_LF:
            if (c != '\n') {
                rc = CC_HTTP_E_BAD_TRAILER;
                goto done;
            }
            d->state = CC_CH_DONE;
            i++;
            rc = CC_HTTP_OK;
            goto done;
        default:
            rc = CC_HTTP_E_BAD_CHUNK_SIZE;
            goto done;
        }
        i++;
    }
    if (d->state == CC_CH_DONE)
        rc = CC_HTTP_OK;
done:
    *consumed = i;
    return rc;
}
