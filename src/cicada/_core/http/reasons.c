/* Static reason strings and HTTP status codes for every cc_http_result_t, plus the default limits.
 * Must stay allocation-free: the server sends these strings verbatim as 4xx/5xx bodies. */
#include "http_internal.h"

typedef struct {
    const char *reason;
    int status;
} cc_http_error_info_t;

/* Indexed by cc_http_result_t; designated initialisers keep the table in step with the enum. */
static const cc_http_error_info_t cc_http_errors[CC_HTTP_E__COUNT] = {
    [CC_HTTP_OK] = {"OK", 0},
    [CC_HTTP_INCOMPLETE] = {"incomplete", 0},
    [CC_HTTP_E_REQUEST_LINE_TOO_LONG] = {"request line too long", 414},
    [CC_HTTP_E_HEAD_TOO_LARGE] = {"request header section too large", 431},
    [CC_HTTP_E_TOO_MANY_HEADERS] = {"too many header fields", 431},
    [CC_HTTP_E_VERSION_UNSUPPORTED] = {"HTTP version not supported", 505},
    [CC_HTTP_E_TE_UNSUPPORTED] = {"unsupported transfer coding", 501},
    [CC_HTTP_E_BAD_METHOD] = {"invalid character in method", 400},
    [CC_HTTP_E_BAD_TARGET] = {"invalid character in request target", 400},
    [CC_HTTP_E_BAD_VERSION] = {"malformed HTTP version", 400},
    [CC_HTTP_E_BAD_REQUEST_LINE] = {"malformed request line", 400},
    [CC_HTTP_E_BAD_HEADER_NAME] = {"invalid header field name", 400},
    [CC_HTTP_E_WS_BEFORE_COLON] = {"whitespace between header field name and colon", 400},
    [CC_HTTP_E_OBS_FOLD] = {"obsolete line folding in header section", 400},
    [CC_HTTP_E_BAD_HEADER_VALUE] = {"invalid character in header field value", 400},
    [CC_HTTP_E_BARE_CR] = {"CR not followed by LF", 400},
    [CC_HTTP_E_BARE_LF] = {"line ends with LF without CR", 400},
    [CC_HTTP_E_MISSING_HOST] = {"missing Host header", 400},
    [CC_HTTP_E_MULTIPLE_HOST] = {"multiple Host headers", 400},
    [CC_HTTP_E_BAD_HOST] = {"invalid Host header", 400},
    [CC_HTTP_E_BAD_CONTENT_LENGTH] = {"invalid Content-Length", 400},
    [CC_HTTP_E_CONFLICTING_CONTENT_LENGTH] = {"conflicting Content-Length values", 400},
    [CC_HTTP_E_CL_AND_TE] = {"both Content-Length and Transfer-Encoding", 400},
    [CC_HTTP_E_TE_NOT_CHUNKED_FINAL] = {"final transfer coding is not chunked", 400},
    [CC_HTTP_E_TE_CHUNKED_TWICE] = {"chunked transfer coding applied twice", 400},
    [CC_HTTP_E_TE_HTTP10] = {"Transfer-Encoding in an HTTP/1.0 request", 400},
    [CC_HTTP_E_BAD_TRANSFER_ENCODING] = {"malformed Transfer-Encoding", 400},
    [CC_HTTP_E_BAD_CHUNK_SIZE] = {"invalid chunk size", 400},
    [CC_HTTP_E_CHUNK_SIZE_OVERFLOW] = {"chunk size too large", 400},
    [CC_HTTP_E_BAD_CHUNK_EXT] = {"invalid chunk extension", 400},
    [CC_HTTP_E_CHUNK_EXT_TOO_LONG] = {"chunk size line too long", 400},
    [CC_HTTP_E_BAD_CHUNK_END] = {"chunk data not followed by CRLF", 400},
    [CC_HTTP_E_BAD_TRAILER] = {"invalid trailer section", 400},
    [CC_HTTP_E_TRAILER_TOO_LARGE] = {"trailer section too large", 400},
};

const char *cc_http_reason(cc_http_result_t r) {
    if ((unsigned)r >= CC_HTTP_E__COUNT || !cc_http_errors[r].reason)
        return "unknown error";
    return cc_http_errors[r].reason;
}

int cc_http_status(cc_http_result_t r) {
    if ((unsigned)r >= CC_HTTP_E__COUNT)
        return 400;
    return cc_http_errors[r].status;
}

void cc_http_limits_default(cc_http_limits_t *lim) {
    lim->max_request_line = CC_HTTP_DEFAULT_MAX_REQUEST_LINE;
    lim->max_head_size = CC_HTTP_DEFAULT_MAX_HEAD_SIZE;
    lim->max_headers = CC_HTTP_DEFAULT_MAX_HEADERS;
}
