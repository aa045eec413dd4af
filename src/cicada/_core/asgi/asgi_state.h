/* Module state owned by the asgi layer: its heap types and interned names. */
#ifndef CC_ASGI_STATE_H
#define CC_ASGI_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define CC_ASGI_KNOWN_SLOTS 256

/* The Python face of the http layer's parser (request_parser.c): used by tests and benchmarks. */
typedef struct {
    PyTypeObject *parsed_request_type;  /* ParsedRequest returned by parse_request() */
    PyTypeObject *chunked_decoder_type; /* ChunkedDecoder */
    PyObject *http_parse_error;         /* HTTPParseError(ValueError) with .status, .reason */
    PyObject *str_v10, *str_v11;        /* "1.0", "1.1" */
    PyObject *str_none, *str_length, *str_chunked;
    PyObject *str_max_request_line, *str_max_head_size, *str_max_headers, *str_max_trailer;
    PyObject *str_status, *str_reason, *str_error;
    /* Shared bytes objects for common header names and methods (open addressing, see
     * request_parser.c): building them once saves an allocation per header on the hot path. */
    PyObject *known[CC_ASGI_KNOWN_SLOTS];
} cc_asgi_parser_state_t;

typedef struct {
    PyTypeObject *request_parser_type;
    cc_asgi_parser_state_t parser;
} cc_asgi_state_t;

int cc_asgi_init(PyObject *module, cc_asgi_state_t *st);
int cc_asgi_traverse(cc_asgi_state_t *st, visitproc visit, void *arg);
void cc_asgi_clear(cc_asgi_state_t *st);

/* request_parser.c: parse_request(), ChunkedDecoder, HTTPParseError. */
int cc_asgi_parser_init(PyObject *module, cc_asgi_parser_state_t *ps);
int cc_asgi_parser_traverse(cc_asgi_parser_state_t *ps, visitproc visit, void *arg);
void cc_asgi_parser_clear(cc_asgi_parser_state_t *ps);

#endif
