/* permessage-deflate (RFC 7692): negotiation of the client's offers, and a per-connection
 * inflater and deflater over zlib that work in bounded output chunks (a zip bomb reaches the
 * message size limit, never unbounded memory). Allocates only through zlib; no I/O. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws/ws.h"

#define PMD_NAME "permessage-deflate"
#define WBITS_MIN 8
#define WBITS_MAX 15
/* zlib cannot deflate with a 256-byte window: it silently uses 512 (raw streams refuse 8). */
#define ZLIB_MIN_DEFLATE_WBITS 9
#define DEFAULT_MEM_LEVEL 8
#define PARAM_VALUE_MAX 16

static const uint8_t flush_tail[4] = {0x00, 0x00, 0xff, 0xff};

/* ---- negotiation --------------------------------------------------------------------------- */

void cc_ws_deflate_config_default(cc_ws_deflate_config_t *cfg) {
    cfg->server_no_context_takeover = 0;
    cfg->client_no_context_takeover = 0;
    cfg->server_max_window_bits = WBITS_MAX;
    cfg->client_max_window_bits = WBITS_MAX;
}

typedef struct {
    const char *s;
    size_t len, pos;
} lex_t;

static int is_tchar(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void skip_ows(lex_t *lx) {
    while (lx->pos < lx->len && (lx->s[lx->pos] == ' ' || lx->s[lx->pos] == '\t'))
        lx->pos++;
}

static int peek(const lex_t *lx) { return lx->pos < lx->len ? (unsigned char)lx->s[lx->pos] : -1; }

static size_t read_token(lex_t *lx, const char **tok) {
    size_t start = lx->pos;
    while (lx->pos < lx->len && is_tchar((unsigned char)lx->s[lx->pos]))
        lx->pos++;
    *tok = lx->s + start;
    return lx->pos - start;
}

/* token / quoted-string into val (NUL-terminated). Returns -1 on a syntax error, else the
 * value's length, or PARAM_VALUE_MAX when it was too long to matter (no valid value is). */
static int read_value(lex_t *lx, char val[PARAM_VALUE_MAX + 1]) {
    size_t n = 0;
    if (peek(lx) == '"') {
        lx->pos++;
        for (;;) {
            int c = peek(lx);
            if (c < 0)
                return -1;
            lx->pos++;
            if (c == '"')
                break;
            if (c == '\\') {
                c = peek(lx);
                if (c < 0)
                    return -1;
                lx->pos++;
            }
            if (c < 0x20 && c != '\t')
                return -1;
            if (n < PARAM_VALUE_MAX)
                val[n++] = (char)c;
        }
    } else {
        const char *tok;
        size_t tl = read_token(lx, &tok);
        if (tl == 0)
            return -1;
        n = tl < PARAM_VALUE_MAX ? tl : PARAM_VALUE_MAX;
        memcpy(val, tok, n);
    }
    val[n] = '\0';
    return (int)n;
}

static int name_is(const char *tok, size_t len, const char *name) {
    size_t n = strlen(name);
    if (len != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = tok[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != name[i])
            return 0;
    }
    return 1;
}

/* RFC 7692 7.1.2: 1*DIGIT in 8..15 without leading zeros. */
static int parse_wbits(const char *v, int n) {
    if (n == 1 && (v[0] == '8' || v[0] == '9'))
        return v[0] - '0';
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
        return 10 + (v[1] - '0');
    return -1;
}

typedef struct {
    uint8_t snct, cnct, has_smwb, has_cmwb;
    int smwb, cmwb; /* cmwb 0: offered without a value */
    int invalid;
} offer_t;

static void offer_param(offer_t *o, const char *name, size_t nlen, const char *val, int vlen) {
    if (name_is(name, nlen, "server_no_context_takeover")) {
        if (o->snct || vlen >= 0)
            o->invalid = 1;
        o->snct = 1;
    } else if (name_is(name, nlen, "client_no_context_takeover")) {
        if (o->cnct || vlen >= 0)
            o->invalid = 1;
        o->cnct = 1;
    } else if (name_is(name, nlen, "server_max_window_bits")) {
        if (o->has_smwb || vlen < 0 || (o->smwb = parse_wbits(val, vlen)) < 0)
            o->invalid = 1;
        o->has_smwb = 1;
    } else if (name_is(name, nlen, "client_max_window_bits")) {
        if (o->has_cmwb)
            o->invalid = 1;
        o->has_cmwb = 1;
        o->cmwb = 0;
        if (vlen >= 0 && (o->cmwb = parse_wbits(val, vlen)) < 0)
            o->invalid = 1;
    } else {
        o->invalid = 1;
    }
}

static int clamp_wbits(int w) { return w < WBITS_MIN ? WBITS_MIN : w > WBITS_MAX ? WBITS_MAX : w; }

static void accept_offer(const offer_t *o, const cc_ws_deflate_config_t *cfg,
                         cc_ws_deflate_params_t *out, char *resp, size_t *resp_len) {
    int sw = clamp_wbits(cfg->server_max_window_bits);
    int cw = WBITS_MAX;
    int n;

    if (o->has_smwb && o->smwb < sw)
        sw = o->smwb;
    /* We may only limit the client's window if it said it supports the parameter. */
    if (o->has_cmwb) {
        cw = clamp_wbits(cfg->client_max_window_bits);
        if (o->cmwb && o->cmwb < cw)
            cw = o->cmwb;
    }
    out->server_no_context_takeover = o->snct || cfg->server_no_context_takeover;
    out->client_no_context_takeover = o->cnct || cfg->client_no_context_takeover;
    out->server_max_window_bits = (uint8_t)sw;
    out->client_max_window_bits = (uint8_t)cw;

    n = snprintf(resp, CC_WS_DEFLATE_RESPONSE_MAX, "%s%s%s", PMD_NAME,
                 out->server_no_context_takeover ? "; server_no_context_takeover" : "",
                 out->client_no_context_takeover ? "; client_no_context_takeover" : "");
    if (o->has_smwb)
        n += snprintf(resp + n, CC_WS_DEFLATE_RESPONSE_MAX - (size_t)n,
                      "; server_max_window_bits=%d", sw);
    if (o->has_cmwb && (cw < WBITS_MAX || o->cmwb))
        n += snprintf(resp + n, CC_WS_DEFLATE_RESPONSE_MAX - (size_t)n,
                      "; client_max_window_bits=%d", cw);
    *resp_len = (size_t)n;
}

int cc_ws_deflate_negotiate(const char *header, size_t len, const cc_ws_deflate_config_t *cfg,
                            cc_ws_deflate_params_t *out, char resp[CC_WS_DEFLATE_RESPONSE_MAX],
                            size_t *resp_len) {
    lex_t lx = {header, len, 0};
    offer_t chosen;
    int found = 0;

    for (;;) {
        const char *name;
        size_t nlen;
        offer_t o;

        skip_ows(&lx);
        if (peek(&lx) == ',') { /* empty list element */
            lx.pos++;
            continue;
        }
        if (peek(&lx) < 0)
            break;
        nlen = read_token(&lx, &name);
        if (nlen == 0)
            return 0;
        memset(&o, 0, sizeof(o));
        o.invalid = !name_is(name, nlen, PMD_NAME);
        for (;;) {
            const char *pname;
            size_t plen;
            char val[PARAM_VALUE_MAX + 1];
            int vlen = -1;

            skip_ows(&lx);
            if (peek(&lx) < 0 || peek(&lx) == ',')
                break;
            if (peek(&lx) != ';')
                return 0;
            lx.pos++;
            skip_ows(&lx);
            plen = read_token(&lx, &pname);
            if (plen == 0)
                return 0;
            skip_ows(&lx);
            if (peek(&lx) == '=') {
                lx.pos++;
                skip_ows(&lx);
                vlen = read_value(&lx, val);
                if (vlen < 0)
                    return 0;
            }
            offer_param(&o, pname, plen, val, vlen);
        }
        /* Keep parsing after a match: a broken header is refused as a whole. */
        if (!o.invalid && !found) {
            chosen = o;
            found = 1;
        }
        if (peek(&lx) == ',')
            lx.pos++;
    }
    if (!found)
        return 0;
    accept_offer(&chosen, cfg, out, resp, resp_len);
    return 1;
}

/* ---- inflater ------------------------------------------------------------------------------ */

static cc_ws_result_t zlib_error(int rc) {
    return rc == Z_MEM_ERROR ? CC_WS_E_NOMEM : CC_WS_E_ZLIB;
}

static uInt clamp_uint(size_t n) { return n > UINT_MAX ? UINT_MAX : (uInt)n; }

cc_ws_result_t cc_ws_inflater_init(cc_ws_inflater_t *z, const cc_ws_deflate_params_t *params,
                                   uint64_t max_message) {
    int rc;

    memset(z, 0, sizeof(*z));
    /* Always the largest window, whatever the client's compressor uses: inflating with a larger
     * window than the sender's is safe, and only then is zlib's distance check exact. With a
     * smaller one, zlib also lets a match reach into the output of the same inflate() call, so
     * whether an out-of-window distance is refused would depend on our output chunking. */
    z->no_context_takeover = params->client_no_context_takeover;
    z->max_message = max_message;
    rc = inflateInit2(&z->zs, -WBITS_MAX);
    if (rc != Z_OK)
        return zlib_error(rc);
    z->ready = 1;
    return CC_WS_OK;
}

void cc_ws_inflater_free(cc_ws_inflater_t *z) {
    if (z->ready)
        inflateEnd(&z->zs);
    z->ready = 0;
}

/* The sender finished a deflate stream (BFINAL) inside a message: start a new one, carrying the
 * window over when context takeover is on, since later messages may refer back into it. That
 * copies the window twice, so a message of empty final blocks (2 bytes each) would cost 64 KiB of
 * copying per 2 bytes: past the first restart of a message, the copy counts towards max_message
 * like output does. */
static cc_ws_result_t restart_stream(cc_ws_inflater_t *z) {
    uint8_t *dict = NULL;
    uInt dlen = 0;
    cc_ws_result_t r = CC_WS_OK;

    if (!z->no_context_takeover) {
        dict = malloc((size_t)1 << WBITS_MAX);
        if (!dict)
            return CC_WS_E_NOMEM;
        if (inflateGetDictionary(&z->zs, dict, &dlen) != Z_OK)
            r = CC_WS_E_ZLIB;
    }
    if (r == CC_WS_OK && inflateReset(&z->zs) != Z_OK)
        r = CC_WS_E_ZLIB;
    if (r == CC_WS_OK && dlen && inflateSetDictionary(&z->zs, dict, dlen) != Z_OK)
        r = CC_WS_E_ZLIB;
    free(dict);
    if (z->restarted)
        z->msg_out += dlen;
    z->restarted = 1;
    return r;
}

cc_ws_result_t cc_ws_inflate(cc_ws_inflater_t *z, const uint8_t *in, size_t in_len, int fin,
                             uint8_t *out, size_t out_cap, size_t *consumed, size_t *produced) {
    size_t in_left = in_len, out_left = out_cap;
    cc_ws_result_t r;

    *consumed = 0;
    *produced = 0;
    if (!z->ready)
        return CC_WS_E_ZLIB;
    for (;;) {
        int tail = 0, drain = 0, rc;
        uInt ai, ao, used, made;

        if (in_left) {
            z->zs.next_in = (Bytef *)(uintptr_t)(in + (in_len - in_left));
            z->zs.avail_in = clamp_uint(in_left);
        } else if (z->out_full) {
            /* zlib may still hold output of input it already took (the rest of a match). */
            z->zs.next_in = Z_NULL;
            z->zs.avail_in = 0;
            drain = 1;
        } else if (fin && z->tail_fed < sizeof(flush_tail) && !z->at_end) {
            z->zs.next_in = (Bytef *)(uintptr_t)(flush_tail + z->tail_fed);
            z->zs.avail_in = (uInt)(sizeof(flush_tail) - z->tail_fed);
            tail = 1;
        } else {
            break; /* all given input processed */
        }
        if (out_left == 0)
            return CC_WS_INCOMPLETE;
        z->zs.next_out = out + (out_cap - out_left);
        z->zs.avail_out = clamp_uint(out_left);
        ai = z->zs.avail_in;
        ao = z->zs.avail_out;
        rc = inflate(&z->zs, Z_SYNC_FLUSH);
        used = ai - z->zs.avail_in;
        made = ao - z->zs.avail_out;
        z->out_full = z->zs.avail_out == 0;
        if (tail) {
            z->tail_fed = (uint8_t)(z->tail_fed + used);
        } else {
            in_left -= used;
            *consumed += used;
            if (used)
                z->at_end = 0;
        }
        out_left -= made;
        *produced += made;
        z->msg_out += made;
        if (z->max_message && z->msg_out > z->max_message)
            return CC_WS_E_TOO_BIG;
        if (rc == Z_STREAM_END) {
            r = restart_stream(z);
            if (r != CC_WS_OK)
                return r;
            if (z->max_message && z->msg_out > z->max_message)
                return CC_WS_E_TOO_BIG;
            z->at_end = 1;
        } else if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT) {
            return CC_WS_E_INFLATE;
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            return zlib_error(rc);
        } else if (!drain && used == 0 && made == 0 && out_left > 0) {
            /* zlib had input and room and did nothing: it cannot happen with a sane stream. */
            return CC_WS_E_INFLATE;
        }
    }
    if (fin) {
        z->out_full = 0;
        z->msg_out = 0;
        z->tail_fed = 0;
        z->at_end = 0;
        z->restarted = 0;
        if (z->no_context_takeover && inflateReset(&z->zs) != Z_OK)
            return CC_WS_E_ZLIB;
    }
    return CC_WS_OK;
}

/* ---- deflater ------------------------------------------------------------------------------ */

cc_ws_result_t cc_ws_deflater_init(cc_ws_deflater_t *z, const cc_ws_deflate_params_t *params,
                                   int level, int mem_level) {
    int wbits, strategy = Z_DEFAULT_STRATEGY, rc;

    memset(z, 0, sizeof(*z));
    z->level = level;
    z->window_bits = (uint8_t)clamp_wbits(params->server_max_window_bits);
    z->no_context_takeover = params->server_no_context_takeover;
    wbits = z->window_bits;
    if (wbits < ZLIB_MIN_DEFLATE_WBITS) {
        /* The client may inflate with a 256-byte window, which zlib cannot compress for (raw
         * deflate refuses 8). zlib's matches at window 9 happen to stay within 250 bytes, but
         * that is an internal detail; Huffman coding alone never refers back at all. */
        wbits = ZLIB_MIN_DEFLATE_WBITS;
        strategy = Z_HUFFMAN_ONLY;
    }
    rc = deflateInit2(&z->zs, level, Z_DEFLATED, -wbits, mem_level ? mem_level : DEFAULT_MEM_LEVEL,
                      strategy);
    if (rc != Z_OK)
        return zlib_error(rc);
    z->ready = 1;
    return CC_WS_OK;
}

void cc_ws_deflater_free(cc_ws_deflater_t *z) {
    if (z->ready)
        deflateEnd(&z->zs);
    z->ready = 0;
}

/* Keep back the last (up to 4) bytes of out[0..pos): the flush trailer that must be stripped
 * may straddle two calls. Returns the bytes that can be handed out. */
static size_t hold_back(cc_ws_deflater_t *z, uint8_t *out, size_t pos) {
    size_t keep = pos < sizeof(z->held) ? pos : sizeof(z->held);
    memcpy(z->held, out + pos - keep, keep);
    z->held_len = (uint8_t)keep;
    return pos - keep;
}

cc_ws_result_t cc_ws_deflate(cc_ws_deflater_t *z, const uint8_t *in, size_t in_len, int fin,
                             uint8_t *out, size_t out_cap, size_t *consumed, size_t *produced) {
    size_t in_left = in_len, pos;

    *consumed = 0;
    *produced = 0;
    if (!z->ready || out_cap < CC_WS_DEFLATE_MIN_OUT)
        return CC_WS_E_ZLIB;
    if (fin && in_len == 0 && !z->msg_started && z->held_len == 0) {
        /* Empty message: a lone empty-block header is the shortest valid payload, and zlib
         * would refuse a second flush in a row anyway. */
        out[0] = 0x00;
        *produced = 1;
        return CC_WS_OK;
    }
    memcpy(out, z->held, z->held_len);
    pos = z->held_len;
    z->held_len = 0;
    for (;;) {
        uInt ai, ao;
        int flush, rc;

        /* in may be NULL for an empty message: no pointer arithmetic on it then. */
        z->zs.next_in = in_left ? (Bytef *)(uintptr_t)(in + (in_len - in_left)) : Z_NULL;
        z->zs.avail_in = clamp_uint(in_left);
        z->zs.next_out = out + pos;
        z->zs.avail_out = clamp_uint(out_cap - pos);
        flush = fin && z->zs.avail_in == in_left ? Z_SYNC_FLUSH : Z_NO_FLUSH;
        ai = z->zs.avail_in;
        ao = z->zs.avail_out;
        rc = deflate(&z->zs, flush);
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return zlib_error(rc);
        in_left -= ai - z->zs.avail_in;
        *consumed = in_len - in_left;
        pos += ao - z->zs.avail_out;
        if (ai != z->zs.avail_in)
            z->msg_started = 1;
        if (pos == out_cap) {
            *produced = hold_back(z, out, pos);
            return CC_WS_INCOMPLETE;
        }
        if (in_left)
            continue;
        if (!fin) {
            *produced = hold_back(z, out, pos);
            return CC_WS_OK;
        }
        break; /* flushed with room to spare: the message's output is complete */
    }
    if (pos < sizeof(flush_tail) ||
        memcmp(out + pos - sizeof(flush_tail), flush_tail, sizeof(flush_tail)) != 0)
        return CC_WS_E_ZLIB;
    *produced = pos - sizeof(flush_tail);
    z->msg_started = 0;
    if (z->no_context_takeover && deflateReset(&z->zs) != Z_OK)
        return CC_WS_E_ZLIB;
    return CC_WS_OK;
}
