/* The asgi layer's WebSocket part (ws_protocol.c): its settings, type and interned names, kept in
 * the asgi state. Only declarations; the framing itself is in ws/ (pure C). */
#ifndef CC_ASGI_WS_STATE_H
#define CC_ASGI_WS_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

/* Defaults: uvicorn's names and values. */
#define CC_ASGI_WS_DEFAULT_MAX_SIZE (16 * 1024 * 1024)
#define CC_ASGI_WS_DEFAULT_MAX_QUEUE 32
#define CC_ASGI_WS_DEFAULT_PING_INTERVAL 20.0
#define CC_ASGI_WS_DEFAULT_PING_TIMEOUT 20.0

/* Per-server WebSocket settings (HttpServer keywords ws, ws_max_size, ...). */
typedef struct {
    int enabled; /* ws != "none"; off when HttpServer is built without the keyword */
    uint64_t max_size;
    Py_ssize_t max_queue;
    double ping_interval; /* <= 0: no pings */
    double ping_timeout;  /* <= 0: no timeout */
    int per_message_deflate;
} cc_asgi_ws_config_t;

#define CC_ASGI_WS_STRINGS(X)                                                                      \
    X(websocket, "websocket")                                                                      \
    X(t_connect, "websocket.connect")                                                              \
    X(t_accept, "websocket.accept")                                                                \
    X(t_receive, "websocket.receive")                                                              \
    X(t_send, "websocket.send")                                                                    \
    X(t_close, "websocket.close")                                                                  \
    X(t_disconnect, "websocket.disconnect")                                                        \
    X(t_http_response, "websocket.http.response")                                                  \
    X(t_resp_start, "websocket.http.response.start")                                               \
    X(t_resp_body, "websocket.http.response.body")                                                 \
    X(subprotocols, "subprotocols")                                                                \
    X(subprotocol, "subprotocol")                                                                  \
    X(text, "text")                                                                                \
    X(bytes, "bytes")                                                                              \
    X(code, "code")                                                                                \
    X(reason, "reason")                                                                            \
    X(call_soon, "call_soon")

typedef struct {
    PyTypeObject *ws_type;
    PyObject *msg_connect; /* {"type": "websocket.connect"}, copied per use */
#define CC_ASGI_WS_STR_FIELD(name, text) PyObject *s_##name;
    CC_ASGI_WS_STRINGS(CC_ASGI_WS_STR_FIELD)
#undef CC_ASGI_WS_STR_FIELD
} cc_asgi_ws_state_t;

int cc_asgi_ws_init(PyObject *module, cc_asgi_ws_state_t *st);
int cc_asgi_ws_traverse(cc_asgi_ws_state_t *st, visitproc visit, void *arg);
void cc_asgi_ws_clear(cc_asgi_ws_state_t *st);

/* Pops ws* keywords out of a copy of kwds (*rest: new ref, or NULL when kwds is NULL) and fills
 * cfg; the rest goes to HttpServer's own parsing. 0 / -1 with an exception. */
int cc_asgi_ws_config_from_kwargs(cc_asgi_ws_config_t *cfg, PyObject *kwds, PyObject **rest);

#endif
