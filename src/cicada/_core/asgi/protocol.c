/* HttpProtocol: one client connection, as an asyncio.Protocol. It owns the input buffer, parses
 * request heads, runs one request cycle at a time (later pipelined requests wait in the buffer),
 * and handles timeouts and flow control. Transport calls are confined to this file: on cicada's
 * own transport the hot ones go through loop.h in C; request/response logic lives in cycle.c and
 * send.c. */
#include "asgi/asgi.h"
#include "asgi/ws_asgi.h"

#include "core/date.h"
#include "loop/loop.h"

#include <string.h>
#include <time.h>

/* Deadlines need ~10 ms precision at most: the coarse clock is several times cheaper and is read
 * once per request. */
#ifdef CLOCK_MONOTONIC_COARSE
#define CC_ASGI_CLOCK CLOCK_MONOTONIC_COARSE
#else
#define CC_ASGI_CLOCK CLOCK_MONOTONIC
#endif

double cc_asgi_monotonic(void) {
    struct timespec ts;
    clock_gettime(CC_ASGI_CLOCK, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- transport calls ------------------------------------------------------------------------ */

static PyObject *tr_call0(cc_asgi_proto_t *p, PyObject *name) {
    PyObject *args[1] = {p->transport};
    return PyObject_VectorcallMethod(name, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static int tr_call0_void(cc_asgi_proto_t *p, PyObject *name) {
    if (!p->transport)
        return 0;
    PyObject *r = tr_call0(p, name);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* A transport write raised. The loop may close a transport before connection_lost() runs
 * (uvloop raises on such writes): that is a disconnect in progress, not an error of the caller.
 * The write's exception is set aside while is_closing() runs, and comes back if it is real. */
static int write_failed(cc_asgi_proto_t *p) {
    PyObject *exc = cc_err_take();
    int yes;
    if (p->fast) {
        yes = cc_loop_transport_is_closing(p->transport);
    } else {
        PyObject *closing = PyObject_CallMethod(p->transport, "is_closing", NULL);
        yes = closing ? PyObject_IsTrue(closing) : -1;
        Py_XDECREF(closing);
    }
    if (yes != 1) {
        if (yes < 0) /* is_closing() itself failed: report the write's error, not that one */
            PyErr_Clear();
        cc_err_give(exc);
        return -1;
    }
    Py_XDECREF(exc);
    p->close_called = 1;
    p->closing = 1;
    return 0;
}

/* Fast path: the parts' buffers go to the transport's sendmsg() as they are. */
static int writev_fast(cc_asgi_proto_t *p, PyObject **parts, int n) {
    struct iovec iov[CC_ASGI_WRITEV_MAX];
    Py_buffer views[CC_ASGI_WRITEV_MAX];
    int rc = 0;
    while (n > 0 && rc == 0) {
        int k = n < CC_ASGI_WRITEV_MAX ? n : CC_ASGI_WRITEV_MAX, got = 0;
        for (; got < k; got++) {
            if (PyObject_GetBuffer(parts[got], &views[got], PyBUF_SIMPLE) < 0) {
                rc = -1;
                break;
            }
            iov[got] = (struct iovec){views[got].buf, (size_t)views[got].len};
        }
        if (rc == 0 && cc_loop_transport_writev(p->transport, iov, k) < 0)
            rc = write_failed(p);
        for (int i = 0; i < got; i++)
            PyBuffer_Release(&views[i]);
        parts += k;
        n -= k;
        if (p->close_called)
            break; /* closed under the write: the rest has nowhere to go */
    }
    return rc;
}

int cc_asgi_write_obj(cc_asgi_proto_t *p, PyObject *bytes) {
    if (!p->transport || p->lost || p->close_called)
        return 0; /* the peer is gone: a late write is not an error */
    if (p->fast)
        return writev_fast(p, &bytes, 1);
    PyObject *args[2] = {p->transport, bytes};
    PyObject *r = PyObject_VectorcallMethod(p->server->st->s_write, args,
                                            2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (!r)
        return write_failed(p);
    Py_DECREF(r);
    return 0;
}

int cc_asgi_writelines(cc_asgi_proto_t *p, PyObject **parts, int n) {
    if (!p->transport || p->lost || p->close_called)
        return 0;
    if (p->fast)
        return writev_fast(p, parts, n);
    if (n == 1 || p->write_each) {
        for (int i = 0; i < n; i++)
            if (cc_asgi_write_obj(p, parts[i]) < 0)
                return -1;
        return 0;
    }
    PyObject *list = PyList_New(n);
    if (!list)
        return -1;
    for (int i = 0; i < n; i++)
        PyList_SET_ITEM(list, i, Py_NewRef(parts[i]));
    PyObject *r = PyObject_CallMethod(p->transport, "writelines", "O", list);
    Py_DECREF(list);
    if (!r)
        return write_failed(p);
    Py_DECREF(r);
    return 0;
}

int cc_asgi_write(cc_asgi_proto_t *p, const char *data, size_t len) {
    if (!p->transport || p->lost || p->close_called || len == 0)
        return 0;
    if (p->fast) { /* no bytes object: the transport copies only what it can't send now */
        struct iovec iov = {(void *)data, len};
        return cc_loop_transport_writev(p->transport, &iov, 1) < 0 ? write_failed(p) : 0;
    }
    PyObject *b = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
    if (!b)
        return -1;
    int rc = cc_asgi_write_obj(p, b);
    Py_DECREF(b);
    return rc;
}

int cc_asgi_set_reading(cc_asgi_proto_t *p, int pause) {
    if (!p->transport || p->lost || (int)p->reading_paused == (pause != 0))
        return 0;
    p->reading_paused = pause != 0;
    if (p->fast)
        return cc_loop_transport_set_reading(p->transport, pause);
    return tr_call0_void(p,
                         pause ? p->server->st->s_pause_reading : p->server->st->s_resume_reading);
}

Py_ssize_t cc_asgi_write_buffer_size(cc_asgi_proto_t *p) {
    if (p->fast)
        return cc_loop_transport_buffer_size(p->transport);
    PyObject *args[1] = {p->transport};
    PyObject *sz = PyObject_VectorcallMethod(p->server->st->s_get_write_buffer_size, args,
                                             1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (!sz)
        return -1;
    Py_ssize_t n = PyLong_AsSsize_t(sz);
    Py_DECREF(sz);
    return n;
}

/* The transport's socket fd if bytes may be sent to it directly (plain TCP/unix), else -1. */
int cc_asgi_direct_fd(cc_asgi_proto_t *p) {
    if (!p->transport)
        return -1;
    if (p->fast) /* cicada's transport is never TLS */
        return cc_loop_transport_fd(p->transport);
    cc_asgi_state_t *st = p->server->st;
    PyObject *args[2] = {p->transport, NULL};
    PyObject *key = PyUnicode_FromString("sslcontext");
    if (!key)
        return -1;
    args[1] = key;
    PyObject *ssl = PyObject_VectorcallMethod(st->s_get_extra_info, args,
                                              2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(key);
    if (!ssl) {
        PyErr_Clear();
        return -1;
    }
    int is_ssl = ssl != Py_None;
    Py_DECREF(ssl);
    if (is_ssl)
        return -1;
    args[1] = st->s_socket;
    PyObject *sock = PyObject_VectorcallMethod(st->s_get_extra_info, args,
                                               2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (!sock || sock == Py_None) {
        Py_XDECREF(sock);
        PyErr_Clear();
        return -1;
    }
    PyObject *fd = PyObject_CallMethodNoArgs(sock, st->s_fileno);
    Py_DECREF(sock);
    if (!fd) {
        PyErr_Clear();
        return -1;
    }
    long v = PyLong_AsLong(fd);
    Py_DECREF(fd);
    if (v < 0) {
        PyErr_Clear();
        return -1;
    }
    return (int)v;
}

static int set_deadline(cc_asgi_proto_t *p, double secs);
static void cancel_timer(cc_asgi_proto_t *p);

/* Shut our write side after the response is flushed, then drop whatever the client still sends
 * until it closes or the linger deadline passes. Plain close when the transport can't half-close.
 */
void cc_asgi_close_linger(cc_asgi_proto_t *p) {
    p->closing = 1;
    if (!p->transport || p->lost || p->close_called)
        return;
    if (p->eof) {
        cc_asgi_close(p, 0);
        return;
    }
    PyObject *can = PyObject_CallMethod(p->transport, "can_write_eof", NULL);
    int yes = can ? PyObject_IsTrue(can) : -1;
    Py_XDECREF(can);
    if (yes != 1) {
        PyErr_Clear();
        cc_asgi_close(p, 0);
        return;
    }
    PyObject *r = PyObject_CallMethod(p->transport, "write_eof", NULL);
    if (!r) {
        PyErr_Clear();
        cc_asgi_close(p, 0);
        return;
    }
    Py_DECREF(r);
    p->lingering = 1;
    p->close_called = 1; /* no more writes; the real close comes from the linger end */
    cc_buf_free(&p->in);
    if (cc_asgi_set_reading(p, 0) < 0)
        PyErr_WriteUnraisable((PyObject *)p);
    cancel_timer(p); /* a pending keep-alive/head timer must not cut the linger short */
    if (set_deadline(p, CC_ASGI_LINGER_SECONDS) < 0)
        PyErr_WriteUnraisable((PyObject *)p);
}

/* close() flushes what is buffered; abort() drops it. A close() that failed half-way (asyncio's
 * marks the transport closing first) would leave the connection open for good: abort() still
 * ends it. */
static void close_transport(cc_asgi_proto_t *p, int force) {
    if (tr_call0_void(p, force ? p->server->st->s_abort : p->server->st->s_close) == 0)
        return;
    PyErr_WriteUnraisable((PyObject *)p);
    if (!force && p->transport && !p->lost && tr_call0_void(p, p->server->st->s_abort) < 0)
        PyErr_WriteUnraisable((PyObject *)p);
}

/* The end of a lingering close. */
static void linger_end(cc_asgi_proto_t *p) {
    p->lingering = 0;
    if (p->transport && !p->lost)
        close_transport(p, 0);
}

void cc_asgi_close(cc_asgi_proto_t *p, int force) {
    p->closing = 1;
    if (!force && !p->eof && p->in.len && !p->close_called) {
        cc_asgi_close_linger(p); /* unread client bytes: a plain close would reset */
        return;
    }
    if (force && p->lingering) {
        p->lingering = 0;
        p->close_called = 0;
    }
    if (!p->transport || p->lost || (p->close_called && !force))
        return;
    p->close_called = 1;
    close_transport(p, force); /* force: abort(), from close_all after the grace period */
}

int cc_asgi_update_reading(cc_asgi_proto_t *p) {
    if (!p->transport || p->lost || p->close_called)
        return 0;
    /* While shutting down, read nothing new once the current request is in. */
    int want_pause = p->in.len >= p->server->read_buffer_limit ||
                     (p->server->shutting_down && p->served && (!p->cycle || p->cycle->body_done));
    return cc_asgi_set_reading(p, want_pause);
}

void cc_asgi_log(cc_asgi_server_t *srv, PyObject *level, const char *fmt, PyObject *arg) {
    if (!srv->error_logger)
        return;
    CC_EXC_SAVE(exc);
    PyObject *f = PyUnicode_FromString(fmt);
    if (f) {
        PyObject *args[3] = {srv->error_logger, f, arg};
        PyObject *r = PyObject_VectorcallMethod(
            level, args, (arg ? 3 : 2) | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_XDECREF(r);
        Py_DECREF(f);
    }
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(srv->error_logger);
    CC_EXC_RESTORE(exc);
}

/* ---- timers: one lazily re-armed call_later handle per connection ------------------------ */

static PyMethodDef timer_def;

static int arm_timer(cc_asgi_proto_t *p, double delay) {
    cc_asgi_server_t *srv = p->server;
    PyObject *cb = PyCFunction_New(&timer_def, (PyObject *)p);
    if (!cb)
        return -1;
    PyObject *d = PyFloat_FromDouble(delay < 0 ? 0 : delay);
    if (!d) {
        Py_DECREF(cb);
        return -1;
    }
    PyObject *args[3] = {srv->loop, d, cb};
    PyObject *h = PyObject_VectorcallMethod(srv->st->s_call_later, args,
                                            3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(d);
    Py_DECREF(cb);
    if (!h)
        return -1;
    Py_XSETREF(p->timer, h);
    p->timer_when = cc_asgi_monotonic() + delay;
    return 0;
}

static void cancel_timer(cc_asgi_proto_t *p) {
    if (!p->timer)
        return;
    PyObject *args[1] = {p->timer};
    PyObject *r = PyObject_VectorcallMethod(p->server->st->s_cancel, args,
                                            1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (!r)
        PyErr_WriteUnraisable((PyObject *)p);
    Py_XDECREF(r);
    Py_CLEAR(p->timer);
}

/* Start a deadline `secs` from now. An armed timer that fires earlier just re-arms itself, so
 * a busy keep-alive connection costs no timer object per request. */
static int set_deadline(cc_asgi_proto_t *p, double secs) {
    p->deadline = cc_asgi_monotonic() + secs;
    if (p->timer && p->timer_when <= p->deadline + 0.001)
        return 0;
    cancel_timer(p);
    return arm_timer(p, secs);
}

static int send_error(cc_asgi_proto_t *p, int status, const char *reason);

static PyObject *proto_on_timer(cc_asgi_proto_t *p, PyObject *unused) {
    (void)unused;
    Py_CLEAR(p->timer);
    if (p->lingering && !p->lost) {
        double left = p->deadline - cc_asgi_monotonic();
        if (left > 0.001) {
            if (arm_timer(p, left) < 0)
                return NULL;
        } else {
            linger_end(p);
        }
        Py_RETURN_NONE;
    }
    if (p->lost || p->closing || p->cycle || p->ws)
        Py_RETURN_NONE;      /* a request in progress has no head or idle timeout */
    if (p->writing_paused) { /* responses still flowing out to a slow reader: not idle */
        if (arm_timer(p, p->server->timeout_request_head) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    double now = cc_asgi_monotonic();
    if (now + 0.001 < p->deadline) {
        if (arm_timer(p, p->deadline - now) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    if (p->in.len == 0) {
        cc_asgi_close(p, 0); /* idle keep-alive connection */
        Py_RETURN_NONE;
    }
    /* A head that did not complete in time (slowloris): say so, then close. */
    cc_asgi_log(p->server, p->server->st->s_warning, "Request head timed out; closing.", NULL);
    if (send_error(p, 408, "Request Timeout") < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef timer_def = {"_on_timer", (PyCFunction)proto_on_timer, METH_NOARGS, NULL};

/* ---- request processing -------------------------------------------------------------------- */

/* Plain-text error response, then close after it is flushed. */
static int send_error(cc_asgi_proto_t *p, int status, const char *reason) {
    int rc = cc_asgi_send_simple(p, 1, status, reason, CC_ASGI_SIMPLE_CLOSE);
    cc_asgi_close(p, 0);
    return rc;
}

static void after_idle(cc_asgi_proto_t *p) {
    cc_asgi_server_t *srv = p->server;
    cc_buf_release(&p->in, CC_ASGI_IDLE_BUF_KEEP);
    if (p->eof || srv->shutting_down || srv->timeout_keep_alive <= 0) {
        cc_asgi_close(p, 0);
        return;
    }
    if (set_deadline(p, srv->timeout_keep_alive) < 0)
        PyErr_WriteUnraisable((PyObject *)p);
}

/* Parse and start requests from the buffer while no response is in progress. */
static int process(cc_asgi_proto_t *p) {
    cc_asgi_server_t *srv = p->server;
    if (p->ws) /* a WebSocket owns the connection */
        return cc_asgi_ws_feed(p->ws);
    while (!p->closing && !p->lost) {
        if (p->cycle) {
            if (cc_asgi_cycle_feed(p->cycle) < 0)
                return -1;
            break;
        }
        if (p->in.len == 0) {
            after_idle(p);
            break;
        }
        /* The client isn't reading our responses: leave its pipelined requests in the buffer
         * (which then stops reading) until resume_writing(). */
        if (p->writing_paused)
            break;
        cc_http_request_t req;
        cc_http_result_t r = cc_http_parse_request(cc_buf_ptr(&p->in), p->in.len, &srv->limits,
                                                   srv->hdrs, srv->limits.max_headers, &req);
        if (r == CC_HTTP_INCOMPLETE) {
            if (p->eof || (srv->shutting_down && p->served))
                cc_asgi_close(p, 0); /* the client stopped sending mid-head */
            break;
        }
        if (r != CC_HTTP_OK) {
            PyObject *why = PyUnicode_FromString(cc_http_reason(r));
            if (!why)
                return -1;
            cc_asgi_log(srv, srv->st->s_warning, "Invalid HTTP request received: %s", why);
            Py_DECREF(why);
            return send_error(p, cc_http_status(r), cc_http_reason(r));
        }
        if (req.upgrade && cc_http_name_eq(req.upgrade_value, req.upgrade_len, "websocket", 9)) {
            if (srv->ws_upgrade)
                return srv->ws_upgrade(p, &req);
            cc_asgi_log(srv, srv->st->s_warning, "Unsupported upgrade request.", NULL);
            return send_error(p, 400, "Unsupported upgrade request.");
        }
        if (cc_asgi_cycle_start(p, &req) < 0)
            return -1;
    }
    return cc_asgi_update_reading(p);
}

void cc_asgi_response_complete(cc_asgi_cycle_t *c) {
    cc_asgi_proto_t *p = c->proto;
    c->resp = CC_RESP_DONE;
    if (c->recv_waiter) {
        PyObject *msg = cc_asgi_disconnect_message(p->server->st);
        if (!msg)
            PyErr_WriteUnraisable((PyObject *)c);
        else {
            cc_asgi_wake(p->server->st, &c->recv_waiter, msg);
            Py_DECREF(msg);
        }
    }
    if (p->cycle != c)
        return;
    if (!c->body_done && cc_asgi_cycle_drain_body(c) < 0)
        PyErr_WriteUnraisable((PyObject *)c);
    if (!c->body_done)
        c->keep_alive = 0; /* the rest of an unread body has not arrived: don't wait for it */
    int keep = c->keep_alive;
    int unread = !c->body_done;
    p->cycle = NULL;
    Py_DECREF(c);
    if (!keep) {
        if (unread)
            cc_asgi_close_linger(p); /* the client may still be sending the body */
        else
            cc_asgi_close(p, 0);
        return;
    }
    if (p->in.len && set_deadline(p, p->server->timeout_request_head) < 0)
        PyErr_WriteUnraisable((PyObject *)p);
    if (process(p) < 0)
        PyErr_WriteUnraisable((PyObject *)p);
}

/* Whether a complete request head follows the current request in the buffer. A heuristic while
 * the current body is unread (body bytes may contain a blank line): worst case, a connection
 * closes after a response that did not announce it, which clients handle. */
int cc_asgi_next_request_buffered(cc_asgi_proto_t *p) {
    cc_asgi_cycle_t *c = p->cycle;
    size_t skip = 0;
    if (p->in.len == 0)
        return 0;
    if (c && !c->body_done) {
        if (c->body_kind != CC_HTTP_BODY_LENGTH || c->body_remaining > p->in.len)
            return 0;
        skip = (size_t)c->body_remaining;
    }
    return cc_http_find_head_end(cc_buf_ptr(&p->in) + skip, p->in.len - skip, 0) >= 0;
}

PyObject *cc_asgi_drain_waiter(cc_asgi_proto_t *p) {
    if (!p->drain_waiter) {
        PyObject *args[1] = {p->server->loop};
        p->drain_waiter = PyObject_VectorcallMethod(p->server->st->s_create_future, args,
                                                    1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (!p->drain_waiter)
            return NULL;
    }
    return Py_NewRef(p->drain_waiter);
}

/* ---- asyncio.Protocol ---------------------------------------------------------------------- */

/* (host, port) from a socket address, or None (unix sockets), as uvicorn reports them. */
static PyObject *addr_tuple(PyObject *info) {
    if (info && PyTuple_Check(info) && PyTuple_GET_SIZE(info) >= 2)
        return PyTuple_Pack(2, PyTuple_GET_ITEM(info, 0), PyTuple_GET_ITEM(info, 1));
    return Py_NewRef(Py_None);
}

static PyObject *extra_info(cc_asgi_proto_t *p, PyObject *key) {
    PyObject *args[2] = {p->transport, key};
    return PyObject_VectorcallMethod(p->server->st->s_get_extra_info, args,
                                     2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* The scope's "tls" extension for this connection, asked once from the server's tls_info
 * callable. A failure there is logged and leaves the extension out rather than the client. */
static void read_tls(cc_asgi_proto_t *p) {
    cc_asgi_server_t *srv = p->server;
    PyObject *obj = extra_info(p, srv->st->s_ssl_object);
    if (obj && obj != Py_None) {
        PyObject *info = PyObject_CallOneArg(srv->tls_info, obj);
        if (info && !PyDict_Check(info)) {
            PyErr_Format(PyExc_TypeError, "tls_info must return a dict, not %.100s",
                         Py_TYPE(info)->tp_name);
            Py_CLEAR(info);
        }
        p->tls = info;
    }
    Py_XDECREF(obj);
    if (PyErr_Occurred()) {
        PyObject *exc = cc_asgi_fetch_exception();
        cc_asgi_log(srv, srv->st->s_error, "Could not read the TLS details for the scope: %R", exc);
        Py_XDECREF(exc);
    }
}

int cc_asgi_add_tls(cc_asgi_proto_t *p, PyObject *ext) {
    if (!p->tls)
        return 0;
    PyObject *copy = PyDict_Copy(p->tls);
    if (!copy)
        return -1;
    int rc = PyDict_SetItem(ext, p->server->st->s_tls, copy);
    Py_DECREF(copy);
    return rc;
}

static PyObject *proto_connection_made(cc_asgi_proto_t *p, PyObject *transport) {
    cc_asgi_server_t *srv = p->server;
    if (p->transport) {
        PyErr_SetString(PyExc_RuntimeError, "connection_made called twice");
        return NULL;
    }
    p->transport = Py_NewRef(transport);
    p->fast = cc_loop_transport_fast(&cc_state(srv->module)->loop, transport);
    p->write_each = !p->fast && srv->st->selector_transport &&
                    PyObject_TypeCheck(transport, (PyTypeObject *)srv->st->selector_transport);
    PyObject *info = extra_info(p, srv->st->s_peername);
    if (!info)
        return NULL;
    p->client = addr_tuple(info);
    Py_DECREF(info);
    info = extra_info(p, srv->st->s_sockname);
    if (!info)
        return NULL;
    p->sockname = addr_tuple(info);
    Py_DECREF(info);
    if (!p->client || !p->sockname)
        return NULL;
    if (srv->tls_info && !p->fast) /* cicada's own transport is never TLS */
        read_tls(p);
    PyObject *hi = PyLong_FromSsize_t(srv->write_high), *lo = PyLong_FromSsize_t(srv->write_low);
    if (!hi || !lo) {
        Py_XDECREF(hi);
        Py_XDECREF(lo);
        return NULL;
    }
    PyObject *args[3] = {transport, hi, lo};
    PyObject *r = PyObject_VectorcallMethod(srv->st->s_set_write_buffer_limits, args,
                                            3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(hi);
    Py_DECREF(lo);
    if (!r)
        return NULL;
    Py_DECREF(r);
    p->connected = 1;
    p->linked = 1;
    p->prev = NULL;
    p->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = p;
    srv->conns = p;
    srv->connection_count++;
    /* Made after shutdown() (accepted before the listener closed, connection_made still queued):
     * like any connection without a request yet, it is served its first request, then closed. */
    if (set_deadline(p, srv->timeout_request_head) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Bytes from the client. The input is copied into p->in first thing: on the fast path it lives
 * in the transport's shared read buffer, which the next read anywhere overwrites. */
static int feed(cc_asgi_proto_t *p, const char *data, size_t len) {
    if (p->lingering) { /* dropped; a client that keeps sending is cut off at the limit */
        p->linger_bytes += len;
        if (p->linger_bytes > CC_ASGI_LINGER_MAX_BYTES)
            linger_end(p);
        return 0;
    }
    if (p->closing || p->lost)
        return 0;
    int fresh = p->in.len == 0 && !p->cycle;
    if (cc_buf_append(&p->in, data, len) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (fresh && set_deadline(p, p->server->timeout_request_head) < 0)
        return -1;
    return process(p);
}

static PyObject *proto_data_received(cc_asgi_proto_t *p, PyObject *data) {
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int rc = feed(p, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int fast_data_received(PyObject *protocol, const char *data, size_t len) {
    return feed((cc_asgi_proto_t *)protocol, data, len);
}

const cc_loop_proto_ops_t cc_asgi_proto_ops = {
    .data_received = fast_data_received,
};

static PyObject *proto_eof_received(cc_asgi_proto_t *p, PyObject *unused) {
    (void)unused;
    p->eof = 1;
    if (p->lingering) {
        p->lingering = 0;
        Py_RETURN_NONE; /* both sides done: the transport closes itself */
    }
    if (p->ws) { /* no close frame came: the transport closes, connection_lost reports 1006 */
        p->closing = 1;
        p->close_called = 1;
        Py_RETURN_NONE;
    }
    cc_asgi_cycle_t *c = p->cycle;
    if (c) {
        if (!cc_asgi_cycle_body_buffered(c)) { /* it can never complete: a disconnect */
            p->closing = 1;
            p->close_called = 1; /* returning None makes the transport close itself */
            Py_RETURN_NONE;
        }
        /* Half-closed: the response can still be written, but an app listening for a
         * disconnect hears about it now. */
        if (cc_asgi_cycle_feed(c) < 0)
            return NULL;
        Py_RETURN_TRUE;
    }
    if (p->in.len) { /* answer what was sent before the EOF, then close */
        if (process(p) < 0)
            return NULL;
        Py_RETURN_TRUE;
    }
    p->closing = 1;
    p->close_called = 1;
    Py_RETURN_NONE;
}

static void unlink_conn(cc_asgi_proto_t *p) {
    if (!p->linked)
        return;
    cc_asgi_server_t *srv = p->server;
    if (p->prev)
        p->prev->next = p->next;
    else
        srv->conns = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
    p->linked = 0;
    srv->connection_count--;
}

/* What build_scope keeps from one request to the next (scope.c). */
static void clear_request_cache(cc_asgi_proto_t *p) {
    cc_asgi_cycle_t *spare = p->spare;
    p->spare = NULL;
    if (spare)
        cc_asgi_cycle_discard(spare);
    Py_CLEAR(p->scope_base);
    Py_CLEAR(p->last_path);
    Py_CLEAR(p->last_raw_path);
    for (int i = 0; i < CC_ASGI_HDR_CACHE; i++)
        Py_CLEAR(p->hdr_cache[i]);
}

static PyObject *proto_connection_lost(cc_asgi_proto_t *p, PyObject *exc) {
    (void)exc;
    p->lost = 1;
    p->closing = 1;
    unlink_conn(p);
    cancel_timer(p);
    if (p->drain_waiter)
        cc_asgi_wake(p->server->st, &p->drain_waiter, Py_None);
    cc_asgi_cycle_t *c = p->cycle;
    if (c) {
        p->cycle = NULL;
        int rc = cc_asgi_cycle_disconnect(c);
        Py_DECREF(c);
        if (rc < 0)
            return NULL;
    }
    if (p->ws) {
        cc_asgi_ws_t *ws = p->ws;
        p->ws = NULL;
        cc_asgi_ws_lost(ws);
        Py_DECREF(ws);
    }
    Py_CLEAR(p->transport);
    clear_request_cache(p);
    cc_buf_free(&p->in);
    Py_RETURN_NONE;
}

static PyObject *proto_pause_writing(cc_asgi_proto_t *p, PyObject *unused) {
    (void)unused;
    p->writing_paused = 1;
    Py_RETURN_NONE;
}

static PyObject *proto_resume_writing(cc_asgi_proto_t *p, PyObject *unused) {
    (void)unused;
    p->writing_paused = 0;
    if (p->drain_waiter)
        cc_asgi_wake(p->server->st, &p->drain_waiter, Py_None);
    if (p->cycle && p->cycle->file_fd >= 0) {
        cc_asgi_cycle_t *c = (cc_asgi_cycle_t *)Py_NewRef(p->cycle);
        int rc = cc_asgi_pathsend_continue(c);
        Py_DECREF(c);
        if (rc < 0)
            return NULL;
    } else if (!p->cycle && p->in.len && !p->closing && !p->lost && process(p) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *cc_asgi_protocol_new(cc_asgi_server_t *srv) {
    PyTypeObject *tp = srv->st->protocol_type;
    cc_asgi_proto_t *p = (cc_asgi_proto_t *)tp->tp_alloc(tp, 0);
    if (!p)
        return NULL;
    p->server = (cc_asgi_server_t *)Py_NewRef(srv);
    cc_buf_init(&p->in);
    return (PyObject *)p;
}

static int proto_traverse(cc_asgi_proto_t *p, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(p));
    Py_VISIT(p->server);
    Py_VISIT(p->transport);
    Py_VISIT(p->client);
    Py_VISIT(p->sockname);
    Py_VISIT(p->scope_base);
    Py_VISIT(p->tls);
    Py_VISIT(p->spare);
    Py_VISIT(p->last_path);
    Py_VISIT(p->last_raw_path);
    for (int i = 0; i < CC_ASGI_HDR_CACHE; i++)
        Py_VISIT(p->hdr_cache[i]);
    Py_VISIT(p->timer);
    Py_VISIT(p->drain_waiter);
    Py_VISIT(p->cycle);
    Py_VISIT(p->ws);
    return 0;
}

static int proto_clear(cc_asgi_proto_t *p) {
    if (p->server)
        unlink_conn(p);
    Py_CLEAR(p->transport);
    Py_CLEAR(p->client);
    Py_CLEAR(p->sockname);
    clear_request_cache(p);
    Py_CLEAR(p->tls);
    Py_CLEAR(p->timer);
    Py_CLEAR(p->drain_waiter);
    Py_CLEAR(p->cycle);
    Py_CLEAR(p->ws);
    Py_CLEAR(p->server);
    return 0;
}

static void proto_dealloc(cc_asgi_proto_t *p) {
    PyTypeObject *tp = Py_TYPE(p);
    PyObject_GC_UnTrack(p);
    proto_clear(p);
    cc_buf_free(&p->in);
    PyMem_Free(p->head);
    tp->tp_free((PyObject *)p);
    Py_DECREF(tp);
}

static PyMethodDef proto_methods[] = {
    {"connection_made", (PyCFunction)proto_connection_made, METH_O, NULL},
    {"data_received", (PyCFunction)proto_data_received, METH_O, NULL},
    {"eof_received", (PyCFunction)proto_eof_received, METH_NOARGS, NULL},
    {"connection_lost", (PyCFunction)proto_connection_lost, METH_O, NULL},
    {"pause_writing", (PyCFunction)proto_pause_writing, METH_NOARGS, NULL},
    {"resume_writing", (PyCFunction)proto_resume_writing, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot proto_slots[] = {
    {Py_tp_dealloc, proto_dealloc},
    {Py_tp_traverse, proto_traverse},
    {Py_tp_clear, proto_clear},
    {Py_tp_methods, proto_methods},
    {Py_tp_doc, "One HTTP/1.1 connection (asyncio.Protocol); made by calling an HttpServer."},
    {0, NULL},
};

PyType_Spec cc_asgi_protocol_spec = {
    .name = "cicada._core.HttpProtocol",
    .basicsize = sizeof(cc_asgi_proto_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = proto_slots,
};
