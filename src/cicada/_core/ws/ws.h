/* The WebSocket layer's pure-C interface: RFC 6455 framing (server side), streaming UTF-8
 * validation, permessage-deflate (RFC 7692) and the opening-handshake accept key. No Python.h, no
 * I/O; only the deflate part allocates (through zlib). Unit tested and fuzzed without Python. */
#ifndef CC_WS_H
#define CC_WS_H

#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

/* ---------------------------------------------------------------------------------------------
 * Results. CC_WS_OK and CC_WS_INCOMPLETE are not errors. Every error has a static reason
 * (cc_ws_reason) and the close code the server sends before closing (cc_ws_close_code). */
typedef enum {
    CC_WS_OK = 0,
    CC_WS_INCOMPLETE,
    /* 1002 protocol error */
    CC_WS_E_UNMASKED,
    CC_WS_E_RSV23,
    CC_WS_E_RSV1_UNNEGOTIATED,
    CC_WS_E_RSV1_CONTROL,
    CC_WS_E_RSV1_CONTINUATION,
    CC_WS_E_OPCODE,
    CC_WS_E_LENGTH,
    CC_WS_E_CONTROL_TOO_LONG,
    CC_WS_E_CONTROL_FRAGMENTED,
    CC_WS_E_BAD_CONTINUATION,
    CC_WS_E_MESSAGE_IN_PROGRESS,
    CC_WS_E_CLOSE_PAYLOAD,
    CC_WS_E_CLOSE_CODE,
    CC_WS_E_AFTER_CLOSE,
    /* 1007 invalid payload data */
    CC_WS_E_UTF8,
    CC_WS_E_UTF8_TRUNCATED,
    CC_WS_E_CLOSE_REASON_UTF8,
    CC_WS_E_INFLATE,
    /* 1009 message too big */
    CC_WS_E_TOO_BIG,
    /* 1011 internal error */
    CC_WS_E_NOMEM,
    CC_WS_E_ZLIB,
    /* Handshake: no close code, the server answers HTTP 400 */
    CC_WS_E_BAD_KEY,
    CC_WS_E__COUNT
} cc_ws_result_t;

/* Short static reason, fit for a close frame's reason and a log line. */
const char *cc_ws_reason(cc_ws_result_t r);
/* The close code to send for an error; 0 for OK, INCOMPLETE and handshake errors. */
int cc_ws_close_code(cc_ws_result_t r);

/* Opcodes (RFC 6455 5.2). */
#define CC_WS_OP_CONT 0x0
#define CC_WS_OP_TEXT 0x1
#define CC_WS_OP_BINARY 0x2
#define CC_WS_OP_CLOSE 0x8
#define CC_WS_OP_PING 0x9
#define CC_WS_OP_PONG 0xA

/* Close codes (RFC 6455 7.4.1). NO_STATUS and ABNORMAL are never sent on the wire. */
#define CC_WS_CLOSE_NORMAL 1000
#define CC_WS_CLOSE_GOING_AWAY 1001
#define CC_WS_CLOSE_PROTOCOL_ERROR 1002
#define CC_WS_CLOSE_UNSUPPORTED 1003
#define CC_WS_CLOSE_NO_STATUS 1005
#define CC_WS_CLOSE_ABNORMAL 1006
#define CC_WS_CLOSE_INVALID_DATA 1007
#define CC_WS_CLOSE_POLICY 1008
#define CC_WS_CLOSE_TOO_BIG 1009
#define CC_WS_CLOSE_MANDATORY_EXT 1010
#define CC_WS_CLOSE_INTERNAL 1011

/* 1 if a peer may send this code in a close frame: 1000-1003, 1007-1011, 3000-4999. */
int cc_ws_close_code_valid(unsigned code);

#define CC_WS_MAX_CONTROL_PAYLOAD 125
/* Longest header: 2 + 8 (64-bit length) + 4 (mask key). Server frames use at most 10. */
#define CC_WS_MAX_HEADER 14
#define CC_WS_MAX_CONTROL_FRAME (2 + CC_WS_MAX_CONTROL_PAYLOAD)

/* ---------------------------------------------------------------------------------------------
 * Streaming UTF-8 validator: feed a message in pieces split anywhere, then finish. Rejects
 * overlong forms, surrogates (U+D800-DFFF) and code points above U+10FFFF. Zero-init or
 * cc_ws_utf8_init to start a message. */
typedef struct {
    uint8_t need; /* continuation bytes still expected; 0xff after an error */
    uint8_t lo;   /* allowed range of the next continuation byte */
    uint8_t hi;
} cc_ws_utf8_t;

void cc_ws_utf8_init(cc_ws_utf8_t *u);
/* CC_WS_OK, or CC_WS_E_UTF8 as soon as the bytes cannot start valid UTF-8 (sticky). */
cc_ws_result_t cc_ws_utf8_feed(cc_ws_utf8_t *u, const uint8_t *p, size_t len);
/* At the end of a message: CC_WS_OK, CC_WS_E_UTF8 or CC_WS_E_UTF8_TRUNCATED (ends mid-sequence). */
cc_ws_result_t cc_ws_utf8_finish(const cc_ws_utf8_t *u);
/* One-shot check of a complete string. */
cc_ws_result_t cc_ws_utf8_validate(const uint8_t *p, size_t len);

/* ---------------------------------------------------------------------------------------------
 * Frame parser (server side: client frames must be masked).
 *
 * The caller owns a mutable input buffer and calls cc_ws_parse with the unread bytes. Each call
 * returns at most one event and sets *consumed (always): the caller drops that many bytes and
 * calls again with the rest. Data payloads are unmasked IN PLACE in the caller's buffer and
 * handed out as spans as they arrive: a frame never has to be whole in memory. Header bytes and
 * control payloads (<= 125 bytes) are gathered inside the parser, so the caller may discard
 * consumed bytes at any time. Errors are sticky: every later call returns the same error.
 *
 * Copy-saving option (announce_min > 0): a data frame whose payload is at least announce_min
 * bytes is first announced by a CC_WS_EV_FRAME event (its header consumed, no payload yet). The
 * caller may then set `sink` to memory with room for the whole frame payload (ev->len bytes):
 * the payload is unmasked straight from the input into it (input bytes left as they were) and
 * the DATA spans point into it, back to back. Unmasking and the caller's copy become one pass.
 * The parser drops the sink when the frame's payload is complete. */
typedef enum {
    CC_WS_EV_DATA = 1, /* a span of a text/binary message (possibly empty when it ends one) */
    CC_WS_EV_PING,     /* whole ping payload: answer with cc_ws_build_pong */
    CC_WS_EV_PONG,     /* whole pong payload */
    CC_WS_EV_CLOSE,    /* close received: close_code (1005 if none), reason validated */
    CC_WS_EV_FRAME,    /* only with announce_min: a data frame starts; len = its payload length,
                        * first/last/opcode/compressed as its spans will have; data is NULL */
} cc_ws_event_type_t;

typedef struct {
    cc_ws_event_type_t type;
    uint8_t opcode;      /* DATA: the message's opcode, CC_WS_OP_TEXT or CC_WS_OP_BINARY */
    uint8_t first;       /* DATA: first span of this message */
    uint8_t last;        /* DATA: the message ends with this span */
    uint8_t compressed;  /* DATA: RSV1 was set on the message: feed spans to cc_ws_inflate */
    const uint8_t *data; /* DATA: inside the caller's buffer; control: inside the parser, valid
                          * until the next call. CLOSE: the reason (after the code). */
    size_t len;
    uint16_t close_code; /* CLOSE */
} cc_ws_event_t;

typedef struct {
    /* settings: set by cc_ws_parser_init, may be changed between calls */
    uint64_t max_message;  /* payload bytes of one message on the wire; 0 = unlimited -> 1009 */
    uint8_t allow_rsv1;    /* permessage-deflate negotiated */
    uint64_t announce_min; /* 0: no CC_WS_EV_FRAME events; else the smallest payload announced */
    uint8_t *sink; /* set by the caller after CC_WS_EV_FRAME (see above); parser clears it */
    /* state */
    uint8_t state;
    uint8_t hdr_len;
    uint8_t opcode; /* of the current frame */
    uint8_t fin;
    uint8_t msg_opcode; /* data message in progress, or 0 */
    uint8_t msg_compressed;
    uint8_t msg_delivered; /* a span of the current message was already handed out */
    uint8_t mask_off;      /* (payload offset) & 3 in the current frame */
    uint8_t ctl_len;
    uint8_t error; /* cc_ws_result_t once failed */
    uint8_t hdr[CC_WS_MAX_HEADER];
    uint8_t mask[4];
    uint64_t remaining; /* payload bytes left in the current frame */
    uint64_t msg_len;   /* payload bytes of the current message so far */
    cc_ws_utf8_t utf8;  /* uncompressed text messages are validated here */
    uint8_t ctl[CC_WS_MAX_CONTROL_PAYLOAD];
} cc_ws_parser_t;

void cc_ws_parser_init(cc_ws_parser_t *p, uint64_t max_message, int allow_rsv1);

/* Returns:
 * - CC_WS_OK with *ev filled: handle it, drop *consumed bytes, call again with the rest;
 * - CC_WS_INCOMPLETE: all len bytes were consumed into state (*consumed == len); feed more;
 * - an error: fail the connection with cc_ws_close_code(r). (*consumed is unspecified.)
 * Uncompressed text messages are UTF-8 validated here (1007 as soon as a span is invalid, or at
 * the end of the message if truncated); the caller validates inflated output of compressed ones.
 * A close frame ends parsing: bytes after it are CC_WS_E_AFTER_CLOSE. */
cc_ws_result_t cc_ws_parse(cc_ws_parser_t *p, uint8_t *buf, size_t len, size_t *consumed,
                           cc_ws_event_t *ev);

/* XOR data with the 4-byte key starting at key position off & 3; returns the next position.
 * Masking and unmasking are the same operation. */
unsigned cc_ws_mask(uint8_t *data, size_t len, const uint8_t key[4], unsigned off);
/* The same from src into dst (equal or non-overlapping): unmask and copy in one pass. */
unsigned cc_ws_mask_copy(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4],
                         unsigned off);

/* ---------------------------------------------------------------------------------------------
 * Frame writer. Server frames are unmasked: write the header into out (>= CC_WS_MAX_HEADER
 * bytes), then send the payload by reference (iovec). Returns the header length: 2, 4 or 10. */
size_t cc_ws_write_header(uint8_t *out, unsigned opcode, int fin, int rsv1, uint64_t len);
/* Client-side variant (tests, a future client): masked header with key; the caller masks the
 * payload with cc_ws_mask. Returns 6, 8 or 14. */
size_t cc_ws_write_header_masked(uint8_t *out, unsigned opcode, int fin, int rsv1, uint64_t len,
                                 const uint8_t key[4]);
/* Whole close frame into out[CC_WS_MAX_CONTROL_FRAME]. code 0 sends an empty payload; the reason
 * is cut to 123 bytes at a UTF-8 character boundary. Returns the frame length. */
size_t cc_ws_build_close(uint8_t *out, unsigned code, const char *reason, size_t reason_len);
/* Whole ping/pong frame; payload cut to 125 bytes. Returns the frame length. */
size_t cc_ws_build_pong(uint8_t *out, const uint8_t *payload, size_t len);
size_t cc_ws_build_ping(uint8_t *out, const uint8_t *payload, size_t len);

/* ---------------------------------------------------------------------------------------------
 * Opening handshake: Sec-WebSocket-Accept = base64(SHA-1(key + GUID)). The key must be the
 * base64 encoding of 16 bytes (24 characters ending "=="), else CC_WS_E_BAD_KEY. */
#define CC_WS_ACCEPT_LEN 28
cc_ws_result_t cc_ws_accept_key(const char *key, size_t key_len, char out[CC_WS_ACCEPT_LEN]);
/* Building blocks, exposed for tests. out must hold 4 * ((len + 2) / 3) bytes. */
void cc_ws_sha1(const uint8_t *data, size_t len, uint8_t digest[20]);
size_t cc_ws_base64_encode(const uint8_t *in, size_t len, char *out);

/* ---------------------------------------------------------------------------------------------
 * permessage-deflate (RFC 7692). */
#define CC_WS_DEFLATE_RESPONSE_MAX 160
#define CC_WS_DEFLATE_MIN_OUT 16 /* smallest output buffer cc_ws_deflate accepts */

/* The server's policy for negotiation. */
typedef struct {
    uint8_t server_no_context_takeover; /* always reset our compressor between messages */
    uint8_t client_no_context_takeover; /* ask the client to (lets us reset the inflater) */
    uint8_t server_max_window_bits;     /* 8..15: largest window we compress with */
    uint8_t client_max_window_bits;     /* 8..15: largest window we want to inflate with */
} cc_ws_deflate_config_t;

/* The agreed parameters (what both sides use). */
typedef struct {
    uint8_t server_no_context_takeover;
    uint8_t client_no_context_takeover;
    uint8_t server_max_window_bits; /* our compressor's window */
    uint8_t client_max_window_bits; /* the client's compressor's window */
} cc_ws_deflate_params_t;

void cc_ws_deflate_config_default(cc_ws_deflate_config_t *cfg);

/* Parse the client's Sec-WebSocket-Extensions value (several header lines joined with ", ") and
 * accept the first valid permessage-deflate offer. Returns 1 with *out and the response header
 * value (NUL-terminated, *resp_len bytes) filled, or 0 when no offer is acceptable (then the
 * server simply does not enable the extension). An offer with an unknown, duplicate or
 * out-of-range parameter is declined; a syntactically broken header declines everything. */
int cc_ws_deflate_negotiate(const char *header, size_t len, const cc_ws_deflate_config_t *cfg,
                            cc_ws_deflate_params_t *out, char resp[CC_WS_DEFLATE_RESPONSE_MAX],
                            size_t *resp_len);

/* Decompressor for one connection's incoming messages. */
typedef struct {
    z_stream zs;
    uint64_t max_message; /* inflated bytes per message; 0 = unlimited -> 1009 */
    uint64_t msg_out;     /* inflated so far in the current message */
    uint8_t no_context_takeover;
    uint8_t ready;     /* zs initialised */
    uint8_t tail_fed;  /* bytes of the 00 00 ff ff trailer already given to zlib */
    uint8_t at_end;    /* the stream hit BFINAL and nothing came after it */
    uint8_t out_full;  /* the last inflate() filled the output: it may hold more */
    uint8_t restarted; /* a deflate stream already ended inside the current message */
} cc_ws_inflater_t;

cc_ws_result_t cc_ws_inflater_init(cc_ws_inflater_t *z, const cc_ws_deflate_params_t *params,
                                   uint64_t max_message);
void cc_ws_inflater_free(cc_ws_inflater_t *z);

/* Inflate compressed payload spans of one message; fin says the span ends the message. Writes at
 * most out_cap bytes; *consumed and *produced are always set. Returns CC_WS_INCOMPLETE when out
 * filled up before the input was done: deliver out, call again with in + *consumed. CC_WS_OK
 * when all input was processed (and, with fin, the message is complete). Errors: CC_WS_E_INFLATE
 * (corrupt data, 1007), CC_WS_E_TOO_BIG (over max_message: checked per chunk, so a bomb costs
 * at most out_cap bytes; window copies for deflate streams ended inside a message, past the
 * first, count as output), CC_WS_E_NOMEM. After an error, free the inflater. */
cc_ws_result_t cc_ws_inflate(cc_ws_inflater_t *z, const uint8_t *in, size_t in_len, int fin,
                             uint8_t *out, size_t out_cap, size_t *consumed, size_t *produced);

/* Compressor for one connection's outgoing messages. */
typedef struct {
    z_stream zs;
    int level;
    uint8_t window_bits;
    uint8_t no_context_takeover;
    uint8_t ready;
    uint8_t msg_started; /* input was given for the current message */
    uint8_t held_len;    /* last bytes of output kept back: the trailer to strip may be there */
    uint8_t held[4];
} cc_ws_deflater_t;

/* level: zlib level 1..9 (or Z_DEFAULT_COMPRESSION). mem_level: zlib memLevel 1..9, 0 for
 * zlib's default 8; with the window it sets the memory per connection (about
 * (1 << (window_bits + 2)) + (1 << (mem_level + 9)) bytes: 256 KB at 15/8, 24 KB at 12/5). */
cc_ws_result_t cc_ws_deflater_init(cc_ws_deflater_t *z, const cc_ws_deflate_params_t *params,
                                   int level, int mem_level);
void cc_ws_deflater_free(cc_ws_deflater_t *z);

/* Compress one message given in pieces; fin marks its last piece. Same calling convention as
 * cc_ws_inflate; out_cap >= CC_WS_DEFLATE_MIN_OUT. The concatenated output of a message is the
 * payload to send with RSV1 set on its first frame (the 00 00 ff ff trailer already removed). */
cc_ws_result_t cc_ws_deflate(cc_ws_deflater_t *z, const uint8_t *in, size_t in_len, int fin,
                             uint8_t *out, size_t out_cap, size_t *consumed, size_t *produced);

#endif
