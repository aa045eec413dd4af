/* Module state owned by the asgi layer: its heap types and interned names. */
#ifndef CC_ASGI_STATE_H
#define CC_ASGI_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "asgi/ws_state.h"

/* Interned strings: X(field, "text"). Scope keys, message types and values, method names. */
#define CC_ASGI_STRINGS(X)                                                                         \
    X(type, "type")                                                                                \
    X(asgi, "asgi")                                                                                \
    X(version, "version")                                                                          \
    X(spec_version, "spec_version")                                                                \
    X(http_version, "http_version")                                                                \
    X(method, "method")                                                                            \
    X(scheme, "scheme")                                                                            \
    X(path, "path")                                                                                \
    X(raw_path, "raw_path")                                                                        \
    X(query_string, "query_string")                                                                \
    X(root_path, "root_path")                                                                      \
    X(headers, "headers")                                                                          \
    X(client, "client")                                                                            \
    X(server, "server")                                                                            \
    X(state, "state")                                                                              \
    X(extensions, "extensions")                                                                    \
    X(body, "body")                                                                                \
    X(more_body, "more_body")                                                                      \
    X(status, "status")                                                                            \
    X(trailers, "trailers")                                                                        \
    X(more_trailers, "more_trailers")                                                              \
    X(v_http, "http")                                                                              \
    X(v_https, "https")                                                                            \
    X(v_ws, "ws")                                                                                  \
    X(v_wss, "wss")                                                                                \
    X(v_11, "1.1")                                                                                 \
    X(v_10, "1.0")                                                                                 \
    X(v_asgi_version, "3.0")                                                                       \
    X(v_spec_version, "2.4")                                                                       \
    X(t_request, "http.request")                                                                   \
    X(t_disconnect, "http.disconnect")                                                             \
    X(t_start, "http.response.start")                                                              \
    X(t_body, "http.response.body")                                                                \
    X(t_pathsend, "http.response.pathsend")                                                        \
    X(t_trailers, "http.response.trailers")                                                        \
    X(m_get, "GET")                                                                                \
    X(m_post, "POST")                                                                              \
    X(m_head, "HEAD")                                                                              \
    X(m_put, "PUT")                                                                                \
    X(m_delete, "DELETE")                                                                          \
    X(m_patch, "PATCH")                                                                            \
    X(m_options, "OPTIONS")                                                                        \
    X(write, "write")                                                                              \
    X(close, "close")                                                                              \
    X(abort, "abort")                                                                              \
    X(pause_reading, "pause_reading")                                                              \
    X(resume_reading, "resume_reading")                                                            \
    X(get_extra_info, "get_extra_info")                                                            \
    X(set_write_buffer_limits, "set_write_buffer_limits")                                          \
    X(get_write_buffer_size, "get_write_buffer_size")                                              \
    X(create_future, "create_future")                                                              \
    X(create_task, "create_task")                                                                  \
    X(add_done_callback, "add_done_callback")                                                      \
    X(set_result, "set_result")                                                                    \
    X(set_exception, "set_exception")                                                              \
    X(done, "done")                                                                                \
    X(result, "result")                                                                            \
    X(call_later, "call_later")                                                                    \
    X(cancel, "cancel")                                                                            \
    X(fileno, "fileno")                                                                            \
    X(info, "info")                                                                                \
    X(warning, "warning")                                                                          \
    X(error, "error")                                                                              \
    X(exc_info, "exc_info")                                                                        \
    X(peername, "peername")                                                                        \
    X(sockname, "sockname")                                                                        \
    X(socket, "socket")                                                                            \
    X(throw, "throw")                                                                              \
    X(name, "name")                                                                                \
    X(v_task_http, "cicada.http")                                                                  \
    X(v_task_ws, "cicada.websocket")                                                               \
    X(ssl_object, "ssl_object")                                                                    \
    X(tls, "tls")

#define CC_ASGI_KNOWN_SLOTS 256
#define CC_ASGI_HDR_SLOTS 128

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
    /* server layer (asgi/server.c, protocol.c, cycle.c, send.c) */
    PyTypeObject *server_type;
    PyTypeObject *protocol_type;
    PyTypeObject *cycle_type;
    PyTypeObject *ready_type;
    PyTypeObject *apprun_type;
    PyObject *kw_name;             /* ("name",): kwnames of create_task(coro, name=...) */
    PyObject *client_disconnected; /* exception type, subclass of OSError */
    PyObject *ready_none;          /* an awaitable that completes at once with None */
    /* asyncio's selector socket transport on 3.12+: its writelines() never paused the protocol
     * before 3.12.9 / 3.13.2 (CPython gh-127655), so parts go through write() there. */
    PyObject *selector_transport;
    /* Shared bytes for common request header names (scope.c): open addressing by a cheap hash. */
    PyObject *hdr_names[CC_ASGI_HDR_SLOTS];
    cc_asgi_ws_state_t ws; /* WebSocket part (ws_protocol.c) */
#define CC_ASGI_STR_FIELD(name, text) PyObject *s_##name;
    CC_ASGI_STRINGS(CC_ASGI_STR_FIELD)
#undef CC_ASGI_STR_FIELD
} cc_asgi_state_t;

int cc_asgi_init(PyObject *module, cc_asgi_state_t *st);
int cc_asgi_traverse(cc_asgi_state_t *st, visitproc visit, void *arg);
void cc_asgi_clear(cc_asgi_state_t *st);

/* request_parser.c: parse_request(), ChunkedDecoder, HTTPParseError. */
int cc_asgi_parser_init(PyObject *module, cc_asgi_parser_state_t *ps);
int cc_asgi_parser_traverse(cc_asgi_parser_state_t *ps, visitproc visit, void *arg);
void cc_asgi_parser_clear(cc_asgi_parser_state_t *ps);

#endif
