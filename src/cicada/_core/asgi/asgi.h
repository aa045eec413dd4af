/* Internal header of the asgi server: the HttpServer, HttpProtocol and request-cycle objects and
 * the functions the files of this layer share. Not a public interface: nothing outside asgi/
 * includes it. */
#ifndef CC_ASGI_H
#define CC_ASGI_H

#include "module.h"

#include "core/buffer.h"
#include "http/http.h"

#include <stdint.h>
#include <sys/types.h>

/* Save and restore the pending exception around a call that must not clobber it. */
#if PY_VERSION_HEX >= 0x030C0000
#define CC_EXC_SAVE(v) PyObject *v = PyErr_GetRaisedException()
#define CC_EXC_RESTORE(v) PyErr_SetRaisedException(v)
#else
#define CC_EXC_SAVE(v)                                                                             \
    PyObject *v##_t, *v##_v, *v##_tb;                                                              \
    PyErr_Fetch(&v##_t, &v##_v, &v##_tb)
#define CC_EXC_RESTORE(v) PyErr_Restore(v##_t, v##_v, v##_tb)
#endif

/* The raised exception as one normalized object (traceback attached), clearing it; never NULL
 * when an exception was set. */
static inline PyObject *cc_asgi_fetch_exception(void) {
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb && v)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
#endif
}

/* Defaults for settings the Python side may leave out. */
#define CC_ASGI_DEFAULT_KEEP_ALIVE 5.0
#define CC_ASGI_DEFAULT_HEAD_TIMEOUT 10.0
#define CC_ASGI_DEFAULT_READ_LIMIT (256 * 1024)
#define CC_ASGI_DEFAULT_WRITE_HIGH (64 * 1024)
#define CC_ASGI_DEFAULT_WRITE_LOW (16 * 1024)
/* An idle connection keeps at most this much input buffer storage. */
#define CC_ASGI_IDLE_BUF_KEEP 0
/* Bodies up to this size are copied next to the head so both leave in one write. */
#define CC_ASGI_COALESCE_MAX (64 * 1024)
/* Header tuples of the previous request a connection keeps for reuse (scope.c). */
#define CC_ASGI_HDR_CACHE 24
/* Parts handed to one sendmsg() on cicada's transport (a response is at most 3). */
#define CC_ASGI_WRITEV_MAX 8
/* pathsend fallback: bytes read from the file per write. */
#define CC_ASGI_FILE_CHUNK (256 * 1024)
/* Lingering close: after an error response, keep reading (and dropping) the client's bytes for
 * this long / this much, so that closing with unread data doesn't reset the connection before
 * the client has read our response. */
#define CC_ASGI_LINGER_SECONDS 2.0
#define CC_ASGI_LINGER_MAX_BYTES (1024 * 1024)

typedef struct cc_asgi_server cc_asgi_server_t;
typedef struct cc_asgi_proto cc_asgi_proto_t;
typedef struct cc_asgi_cycle cc_asgi_cycle_t;
typedef struct cc_asgi_ws cc_asgi_ws_t; /* ws_protocol.c */

/* Hook for the ws layer: called with a parsed request that asks for `Upgrade: websocket`, before
 * the head is consumed. It takes the connection over and returns 0, or -1 with an exception set.
 * NULL (until the ws layer exists): refused with 400, as uvicorn does without a websocket
 * library. */
typedef int (*cc_asgi_upgrade_fn)(cc_asgi_proto_t *p, const cc_http_request_t *req);

struct cc_asgi_server {
    PyObject_HEAD PyObject *module; /* keeps the state alive */
    cc_asgi_state_t *st;
    PyObject *app;
    PyObject *loop;
    PyObject *root_path;       /* str */
    PyObject *root_path_bytes; /* bytes, for raw_path */
    PyObject *scheme;          /* str */
    PyObject *access_logger;   /* or NULL */
    PyObject *error_logger;    /* or NULL */
    PyObject *state;           /* dict or NULL */
    PyObject *trusted_proxy;   /* callable or NULL */
    PyObject *tls_info;        /* callable(ssl_object) -> the scope's "tls" extension, or NULL */
    PyObject *scope_template;  /* dict: constant entries, and every per-request key preset */
    PyObject *extensions;      /* dict copied into each scope */
    PyObject *access_fmt;      /* str */
    char *extra_headers;       /* default headers, serialized "name: value\r\n"... */
    size_t extra_headers_len;
    char *server_header; /* "server: ...\r\n" or NULL */
    size_t server_header_len;
    cc_http_header_t *hdrs; /* parse scratch, limits.max_headers entries */
    cc_buf_t out;           /* serialization scratch; used and emptied within one call */
    cc_http_limits_t limits;
    Py_ssize_t limit_concurrency; /* -1: none */
    double timeout_keep_alive;
    double timeout_request_head;
    size_t read_buffer_limit;
    Py_ssize_t write_high, write_low;
    Py_ssize_t connection_count;
    Py_ssize_t active_requests;
    unsigned long long request_count;
    cc_asgi_proto_t *conns;        /* every connected protocol (borrowed; unlinked on loss) */
    cc_asgi_upgrade_fn ws_upgrade; /* cc_asgi_ws_start when ws_cfg.enabled */
    cc_asgi_ws_config_t ws_cfg;
    unsigned date_header : 1;
    unsigned proxy_headers : 1;
    unsigned shutting_down : 1;
};

struct cc_asgi_proto {
    PyObject_HEAD cc_asgi_server_t *server;
    PyObject *transport;
    PyObject *client;     /* (host, port) or None */
    PyObject *sockname;   /* (host, port) or None */
    PyObject *scope_base; /* server's scope template + client/server: copied per request */
    PyObject *tls;        /* dict: the "tls" scope extension of a TLS connection, else NULL */
    PyObject *last_path, *last_raw_path;    /* the previous request's, reused when repeated */
    PyObject *hdr_cache[CC_ASGI_HDR_CACHE]; /* the previous request's header tuples */
    PyObject *timer;                        /* TimerHandle or NULL */
    PyObject *drain_waiter;
    cc_asgi_cycle_t *cycle; /* the request whose response is in progress */
    cc_asgi_cycle_t *spare; /* the last cycle, reused for the next request if nothing holds it */
    cc_asgi_ws_t *ws;       /* set once a WebSocket upgrade took the connection over */
    cc_asgi_proto_t *prev, *next;
    cc_buf_t in;
    /* The response head's header lines, checked at http.response.start and written with the
     * first body message: one response at a time per connection, so the storage is reused. */
    char *head;
    size_t head_cap;
    double deadline; /* monotonic seconds: keep-alive or head timeout */
    size_t linger_bytes;
    double timer_when;
    unsigned linked : 1;
    unsigned connected : 1;
    unsigned closing : 1; /* close requested or done: no more requests */
    unsigned lost : 1;
    unsigned eof : 1; /* the client half-closed */
    unsigned close_called : 1;
    unsigned lingering : 1; /* write side shut, discarding input until EOF or the deadline */
    unsigned reading_paused : 1;
    unsigned writing_paused : 1;
    unsigned fast : 1; /* the transport is cicada's own: called through loop.h, not Python */
    unsigned write_each : 1; /* the transport's writelines() skips flow control: write() parts */
    unsigned served : 1; /* a request has started here (shutdown closes only such idle ones) */
    unsigned peer_checked : 1; /* trusted_proxy(peer) was asked; the answer is peer_trusted */
    unsigned peer_trusted : 1;
};

enum { CC_RESP_INIT = 0, CC_RESP_STARTED, CC_RESP_BODY, CC_RESP_TRAILERS, CC_RESP_DONE };

struct cc_asgi_cycle {
    PyObject_HEAD cc_asgi_proto_t *proto;
    PyObject *scope;
    PyObject *task;
    PyObject *recv_waiter;
    PyObject *send_waiter;       /* pathsend in progress */
    PyObject *recv_fn, *send_fn; /* the app's receive/send: kept with the cycle for its reuse */
    PyObject *method;            /* str, borrowed from scope's ownership: kept for the access log */
    /* request body */
    cc_http_body_t body_kind;
    uint64_t body_remaining;
    cc_http_chunked_t chunked;
    /* response */
    int resp;
    int status;
    int version_minor;
    uint64_t content_length; /* what the app declared, when has_cl */
    uint64_t body_sent;
    size_t head_bytes; /* the app's header lines waiting in proto->head */
    int file_fd;
    int sock_fd; /* for zero-copy pathsend, -1 when not possible */
    off_t file_left;
    unsigned is_head : 1;
    unsigned body_done : 1;      /* the request body has been read up to its end */
    unsigned body_delivered : 1; /* the last http.request message was returned */
    unsigned keep_alive : 1;
    unsigned expect_continue : 1; /* 100 Continue not sent yet */
    unsigned disconnected : 1;
    unsigned has_cl : 1;
    unsigned chunked_out : 1;
    unsigned close_delimited : 1;
    unsigned app_close : 1;
    unsigned has_date : 1;
    unsigned has_server : 1;
    unsigned trailers : 1;
    unsigned task_done : 1;
    unsigned counted : 1;
    unsigned server_answered : 1; /* the server, not the app, answered (a bad request body) */
};

/* server.c */
extern PyType_Spec cc_asgi_server_spec;
/* protocol.c */
extern PyType_Spec cc_asgi_protocol_spec;
/* What cicada's transport calls in C instead of HttpProtocol's Python methods (loop.h). */
extern const struct cc_loop_proto_ops cc_asgi_proto_ops;
PyObject *cc_asgi_protocol_new(cc_asgi_server_t *srv);
int cc_asgi_write(cc_asgi_proto_t *p, const char *data, size_t len);
int cc_asgi_write_obj(cc_asgi_proto_t *p, PyObject *bytes);
/* Several bytes-like objects in one write: one sendmsg() on cicada's transport, else one
 * transport.writelines() call (vectored on uvloop and 3.12+). */
int cc_asgi_writelines(cc_asgi_proto_t *p, PyObject **parts, int n);
/* pause_reading() / resume_reading() of the transport, remembered in reading_paused. */
int cc_asgi_set_reading(cc_asgi_proto_t *p, int pause);
/* Bytes the transport holds unsent, or -1 with an exception set. */
Py_ssize_t cc_asgi_write_buffer_size(cc_asgi_proto_t *p);
/* The transport's socket fd if bytes may be sent to it directly (plain TCP/unix), else -1. */
int cc_asgi_direct_fd(cc_asgi_proto_t *p);
/* force: 0 close after flushing (lingering if unread input is buffered or `more_input` says the
 * client may still be sending), 1 abort now. */
void cc_asgi_close(cc_asgi_proto_t *p, int force);
void cc_asgi_close_linger(cc_asgi_proto_t *p);
void cc_asgi_response_complete(cc_asgi_cycle_t *c);
int cc_asgi_update_reading(cc_asgi_proto_t *p);
int cc_asgi_next_request_buffered(cc_asgi_proto_t *p);
PyObject *cc_asgi_drain_waiter(cc_asgi_proto_t *p);
/* ext["tls"] = a copy of the connection's TLS details, on TLS connections only. */
int cc_asgi_add_tls(cc_asgi_proto_t *p, PyObject *ext);
void cc_asgi_log(cc_asgi_server_t *srv, PyObject *level, const char *fmt, PyObject *arg);
double cc_asgi_monotonic(void);
/* scope.c */
PyObject *cc_asgi_build_scope(cc_asgi_proto_t *p, const cc_http_request_t *req);
int cc_asgi_scope_template(cc_asgi_server_t *srv);
int cc_asgi_header_names_init(cc_asgi_state_t *st);
/* cycle.c */
extern PyType_Spec cc_asgi_cycle_spec;
extern PyType_Spec cc_asgi_ready_spec;
extern PyType_Spec cc_asgi_apprun_spec;
PyObject *cc_asgi_ready_new(cc_asgi_state_t *st, PyObject *value);
int cc_asgi_cycle_start(cc_asgi_proto_t *p, const cc_http_request_t *req);
/* Drop a cycle, breaking the cycle -> receive/send -> cycle references first. */
void cc_asgi_cycle_discard(cc_asgi_cycle_t *c);
int cc_asgi_cycle_feed(cc_asgi_cycle_t *c);
int cc_asgi_cycle_disconnect(cc_asgi_cycle_t *c);
int cc_asgi_cycle_drain_body(cc_asgi_cycle_t *c);
int cc_asgi_cycle_body_buffered(const cc_asgi_cycle_t *c);
PyObject *cc_asgi_disconnect_message(cc_asgi_state_t *st);
void cc_asgi_wake(cc_asgi_state_t *st, PyObject **waiter, PyObject *value);
void cc_asgi_wake_error(cc_asgi_state_t *st, PyObject **waiter); /* with the pending error */
int cc_asgi_access_log(cc_asgi_cycle_t *c, int status);
/* send.c */
PyObject *cc_asgi_send(cc_asgi_cycle_t *c, PyObject *message);
/* cc_asgi_send_simple() flags: say `connection: close`; the request was HEAD (no content). */
enum { CC_ASGI_SIMPLE_CLOSE = 1, CC_ASGI_SIMPLE_HEAD = 2 };
int cc_asgi_send_simple(cc_asgi_proto_t *p, int minor, int status, const char *body, int flags);

/* True when one more request or WebSocket would go over --limit-concurrency. */
static inline int cc_asgi_over_concurrency(const cc_asgi_server_t *srv) {
    return srv->limit_concurrency >= 0 && (srv->active_requests >= srv->limit_concurrency ||
                                           srv->connection_count > srv->limit_concurrency);
}

/* Calls app(scope, receive, send) and wraps the coroutine in a task on the server's loop.
 * Returns the task (new ref), or NULL with the exception set when the app failed before it could
 * run (the call or create_task raised): callers treat that like the task's own exception. */
PyObject *cc_asgi_spawn_app(cc_asgi_server_t *srv, PyObject *scope, PyObject *recv, PyObject *send);
int cc_asgi_pathsend_continue(cc_asgi_cycle_t *c);

#endif
