/* WebSocket connections (RFC 6455) behind the ASGI websocket interface: the opening handshake
 * handed over by HttpProtocol, the websocket scope, receive/send for the app's task, pings, the
 * close handshake and backpressure. Framing, UTF-8 and deflate come from ws/ (pure C); this file
 * never parses bytes itself and never touches the HTTP request cycle. */
#include "asgi/ws_asgi.h"

#include "core/date.h"
#include "ws/ws.h"

#include <stdlib.h>
#include <string.h>

/* Output chunk for inflate/deflate loops. */
#define CC_ASGI_WS_ZCHUNK (16 * 1024)
/* Payloads up to this size are corked (copied into the pending output); larger bytes payloads
 * are written by reference, after their header in the same vectored write. */
#define CC_ASGI_WS_COPY_MAX (16 * 1024)
/* Received frames from this size are unmasked straight into the message's final buffer (the
 * bytes object of a single-frame binary message, else the assembly buffer) instead of in place
 * and then copied. Below it, the copy is cheaper than the extra parser event. */
#define CC_ASGI_WS_SINK_MIN 512
/* Frames announcing more than this are not given a buffer of their full size up front (they
 * stream into the assembly buffer as they arrive, as smaller ones used to): a huge ws_max_size
 * must not let a bare header allocate it. */
#define CC_ASGI_WS_SINK_MAX (64 * 1024 * 1024)
/* Bytes a client may send before the app accepted before reading pauses. */
#define CC_ASGI_WS_PREACCEPT_LIMIT (64 * 1024)
/* The statuses a denial response may have (RFC 9110 §15; a 1xx is not a final response). */
#define CC_WS_DENY_STATUS_MIN 200
#define CC_WS_DENY_STATUS_MAX 599
/* Close codes registered with IANA after RFC 6455 that an app may send. */
#define CC_WS_IANA_CLOSE_MIN 1012
#define CC_WS_IANA_CLOSE_MAX 1014
/* After our close frame, how long the client has to answer with its own. */
#define CC_ASGI_WS_CLOSE_TIMEOUT 5.0
/* Compressor settings (those of the websockets library's server). */
#define CC_ASGI_WS_DEFLATE_LEVEL 6
#define CC_ASGI_WS_DEFLATE_MEM_LEVEL 5
#define CC_ASGI_WS_DEFLATE_WINDOW 12
/* Small frames written in one event-loop iteration are coalesced into one write (one syscall)
 * up to this many bytes; more is written at once. */
#define CC_ASGI_WS_CORK_MAX (64 * 1024)
/* Queue entries consumed before the list is compacted. */
#define CC_ASGI_WS_QUEUE_COMPACT 32

struct cc_asgi_ws {
    PyObject_HEAD cc_asgi_proto_t *proto;
    PyObject *scope;
    PyObject *task;
    PyObject *recv_waiter;
    PyObject *queue; /* list of received messages, from qhead */
    Py_ssize_t qhead;
    PyObject *timer;
    PyObject *dc_reason;    /* str: the close reason for websocket.disconnect */
    PyObject *subprotocols; /* list of str offered by the client */
    PyObject *rx;           /* bytes the parser unmasks a single-frame binary message into */
    cc_buf_t msg;           /* message being assembled from fragments / inflated output */
    cc_buf_t deny_head;     /* the denial response's app headers, serialized at its start */
    cc_buf_t deny_body;     /* denial response body */
    cc_buf_t zout;          /* deflate output scratch */
    cc_buf_t wbuf;          /* frames waiting for the end of this loop iteration */
    cc_ws_parser_t parser;
    cc_ws_inflater_t inf;
    cc_ws_deflater_t def;
    cc_ws_deflate_params_t zparams;
    cc_ws_utf8_t utf8; /* inflated text */
    uint8_t msg_opcode;
    uint64_t sink_left; /* payload of the announced frame still to be unmasked into rx / msg */
    int dc_code;
    int deny_status;
    int deny_has_server, deny_has_date;
    long long deny_cl; /* the denial's own Content-Length, or -1 */
    double ping_sent; /* monotonic time of the unanswered ping */
    double last_ping; /* when the last ping was sent (or the connection opened) */
    double close_deadline;
    char accept[CC_WS_ACCEPT_LEN];
    char ext_resp[CC_WS_DEFLATE_RESPONSE_MAX];
    size_t ext_len;
    unsigned deflate : 1; /* negotiated */
    unsigned zready : 1;  /* inflater/deflater initialised */
    unsigned connect_delivered : 1;
    unsigned accepted : 1; /* 101 sent */
    unsigned denied : 1;   /* 403/500/denial response done: no websocket */
    unsigned deny_started : 1;
    unsigned app_closed : 1; /* the app sent websocket.close */
    unsigned close_sent : 1;
    unsigned closed : 1; /* the connection is over for the app: disconnect is final */
    unsigned awaiting_pong : 1;
    unsigned counted : 1;
    unsigned task_done : 1;
    unsigned flush_scheduled : 1;
    unsigned sink_msg : 1; /* the announced frame is unmasked into msg (fragment or split text) */
};

static inline cc_asgi_state_t *ST(cc_asgi_ws_t *ws) {
    return ws->proto->server->st;
}

/* ---- small helpers ------------------------------------------------------------------------ */

static PyObject *call_method1(PyObject *name, PyObject *self, PyObject *arg) {
    PyObject *args[2] = {self, arg};
    return PyObject_VectorcallMethod(name, args, (arg ? 2 : 1) | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                     NULL);
}

static int set_reading(cc_asgi_proto_t *p, int pause) {
    if (p->close_called)
        return 0;
    return cc_asgi_set_reading(p, pause);
}

static Py_ssize_t queued(cc_asgi_ws_t *ws) {
    return PyList_GET_SIZE(ws->queue) - ws->qhead;
}

static int update_reading(cc_asgi_ws_t *ws) {
    cc_asgi_proto_t *p = ws->proto;
    int pause;
    if (!ws->accepted)
        pause = p->in.len > CC_ASGI_WS_PREACCEPT_LIMIT;
    else
        pause = queued(ws) >= p->server->ws_cfg.max_queue && p->in.len > 0;
    return set_reading(p, pause);
}

/* message[key] (a new reference) or NULL, with no exception when absent. The message is a dict
 * (ws_send checks): it is read as one, never through a subclass's own methods. */
static PyObject *msg_get(PyObject *msg, PyObject *key) {
    return Py_XNewRef(PyDict_GetItemWithError(msg, key));
}

static PyObject *disconnect_msg(cc_asgi_ws_t *ws) {
    cc_asgi_state_t *st = ST(ws);
    PyObject *d = PyDict_New(), *code = PyLong_FromLong(ws->dc_code);
    PyObject *reason = ws->dc_reason ? Py_NewRef(ws->dc_reason) : PyUnicode_FromString("");
    if (!d || !code || !reason || PyDict_SetItem(d, st->s_type, st->ws.s_t_disconnect) < 0 ||
        PyDict_SetItem(d, st->ws.s_code, code) < 0 ||
        PyDict_SetItem(d, st->ws.s_reason, reason) < 0)
        Py_CLEAR(d);
    Py_XDECREF(code);
    Py_XDECREF(reason);
    return d;
}

/* Write what is corked. */
static int flush_now(cc_asgi_ws_t *ws) {
    cc_buf_t *w = &ws->wbuf;
    if (!w->len)
        return 0;
    int rc = cc_asgi_write(ws->proto, cc_buf_ptr(w), w->len);
    cc_buf_consume(w, w->len);
    cc_buf_release(w, CC_ASGI_WS_CORK_MAX);
    return rc;
}

static PyObject *ws_on_flush(cc_asgi_ws_t *ws, PyObject *unused) {
    (void)unused;
    ws->flush_scheduled = 0;
    if (flush_now(ws) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef flush_def = {"_flush", (PyCFunction)ws_on_flush, METH_NOARGS, NULL};

/* The flush of what is corked, at the end of this loop iteration (once per iteration). */
static int schedule_flush(cc_asgi_ws_t *ws) {
    cc_asgi_proto_t *p = ws->proto;
    PyObject *cb = PyCFunction_New(&flush_def, (PyObject *)ws);
    if (!cb)
        return -1;
    PyObject *args[2] = {p->server->loop, cb};
    PyObject *h = PyObject_VectorcallMethod(p->server->st->ws.s_call_soon, args,
                                            2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(cb);
    if (!h)
        return -1;
    Py_DECREF(h);
    ws->flush_scheduled = 1;
    return 0;
}

/* Queue a frame (`a` then `b`) for the end of this loop iteration: an app sending several
 * messages per wake-up (echo of a pipelined batch, broadcast) costs one write instead of one per
 * frame. All or nothing: what can fail (room, the flush's call_soon) happens before anything is
 * queued, so a failed send leaves no part of a frame behind to go out later. */
static int out_append(cc_asgi_ws_t *ws, const void *a, size_t alen, const void *b, size_t blen) {
    cc_asgi_proto_t *p = ws->proto;
    if (!p->transport || p->lost || p->close_called || !(alen + blen))
        return 0;
    if (cc_buf_reserve(&ws->wbuf, alen + blen) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (!ws->flush_scheduled && schedule_flush(ws) < 0)
        return -1;
    if (cc_buf_append(&ws->wbuf, a, alen) < 0 || cc_buf_append(&ws->wbuf, b, blen) < 0) {
        PyErr_NoMemory(); /* not reached: the room was reserved */
        return -1;
    }
    if (ws->wbuf.len >= CC_ASGI_WS_CORK_MAX)
        return flush_now(ws);
    return 0;
}

/* Write header + payload. Small payloads are corked. A larger bytes payload goes by reference:
 * one writelines() of [what was corked + the header, the payload], a single writev on uvloop, so
 * the header never travels in a TCP segment of its own and the payload is never copied. Other
 * large payloads (text, bytearray, compressed output) leave in one object holding the corked
 * bytes, the header and a copy of the payload. */
static int write_frame(cc_asgi_ws_t *ws, unsigned opcode, int rsv1, const char *data, size_t len,
                       PyObject *keep) {
    cc_asgi_proto_t *p = ws->proto;
    uint8_t hdr[CC_WS_MAX_HEADER];
    size_t hl = cc_ws_write_header(hdr, opcode, 1, rsv1, len);
    if (len <= CC_ASGI_WS_COPY_MAX)
        return out_append(ws, hdr, hl, data, len);
    int by_ref = keep && PyBytes_CheckExact(keep);
    cc_buf_t *w = &ws->wbuf;
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(w->len + hl + (by_ref ? 0 : len)));
    if (!b)
        return -1;
    char *o = PyBytes_AS_STRING(b);
    if (w->len)
        memcpy(o, cc_buf_ptr(w), w->len);
    memcpy(o + w->len, hdr, hl);
    if (!by_ref)
        memcpy(o + w->len + hl, data, len);
    cc_buf_consume(w, w->len);
    PyObject *parts[2] = {b, keep};
    int rc = cc_asgi_writelines(p, parts, by_ref ? 2 : 1);
    Py_DECREF(b);
    return rc;
}

static int send_data(cc_asgi_ws_t *ws, unsigned opcode, const char *data, size_t len,
                     PyObject *keep) {
    if (!ws->deflate)
        return write_frame(ws, opcode, 0, data, len, keep);
    cc_buf_t *o = &ws->zout;
    o->start = o->len = 0;
    const uint8_t *in = (const uint8_t *)data;
    size_t left = len;
    cc_ws_result_t r;
    do {
        if (cc_buf_reserve(o, CC_ASGI_WS_ZCHUNK) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        size_t used = 0, made = 0;
        r = cc_ws_deflate(&ws->def, in, left, 1, (uint8_t *)cc_buf_ptr(o) + o->len,
                          CC_ASGI_WS_ZCHUNK, &used, &made);
        in += used;
        left -= used;
        o->len += made;
    } while (r == CC_WS_INCOMPLETE);
    if (r != CC_WS_OK) {
        PyErr_Format(PyExc_RuntimeError, "WebSocket compression failed: %s", cc_ws_reason(r));
        return -1;
    }
    int rc = write_frame(ws, opcode, 1, cc_buf_ptr(o), o->len, NULL);
    cc_buf_release(o, CC_ASGI_WS_ZCHUNK);
    return rc;
}

static int send_close_frame(cc_asgi_ws_t *ws, unsigned code, const char *reason, size_t rlen) {
    uint8_t f[CC_WS_MAX_CONTROL_FRAME];
    size_t n = cc_ws_build_close(f, code, reason, rlen);
    ws->close_sent = 1;
    if (out_append(ws, f, n, NULL, 0) < 0)
        return -1;
    return flush_now(ws);
}

static void free_zlib(cc_asgi_ws_t *ws) {
    if (ws->zready) {
        cc_ws_inflater_free(&ws->inf);
        cc_ws_deflater_free(&ws->def);
        ws->zready = 0;
    }
}

/* ---- timers: pings and the close deadline ------------------------------------------------ */

static PyMethodDef timer_def;

static void cancel_timer(cc_asgi_ws_t *ws) {
    if (!ws->timer)
        return;
    PyObject *r = call_method1(ST(ws)->s_cancel, ws->timer, NULL);
    if (!r)
        PyErr_WriteUnraisable((PyObject *)ws);
    Py_XDECREF(r);
    Py_CLEAR(ws->timer);
}

static int arm_timer(cc_asgi_ws_t *ws, double delay) {
    cancel_timer(ws);
    cc_asgi_server_t *srv = ws->proto->server;
    PyObject *cb = PyCFunction_New(&timer_def, (PyObject *)ws);
    PyObject *d = PyFloat_FromDouble(delay < 0 ? 0 : delay);
    if (!cb || !d) {
        Py_XDECREF(cb);
        Py_XDECREF(d);
        return -1;
    }
    PyObject *args[3] = {srv->loop, d, cb};
    ws->timer = PyObject_VectorcallMethod(srv->st->s_call_later, args,
                                          3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(cb);
    Py_DECREF(d);
    return ws->timer ? 0 : -1;
}

/* Arm for whichever comes first: the close deadline, the pong deadline or the next ping. */
static int rearm(cc_asgi_ws_t *ws) {
    cc_asgi_ws_config_t *cfg = &ws->proto->server->ws_cfg;
    double now = cc_asgi_monotonic(), at = -1;
    if (ws->proto->lost || ws->closed) {
        cancel_timer(ws);
        return 0;
    }
    if (ws->close_sent)
        at = ws->close_deadline;
    else if (ws->awaiting_pong && cfg->ping_timeout > 0)
        at = ws->ping_sent + cfg->ping_timeout;
    else if (!ws->awaiting_pong && cfg->ping_interval > 0)
        at = ws->last_ping + cfg->ping_interval;
    if (at < 0) {
        cancel_timer(ws);
        return 0;
    }
    return arm_timer(ws, at - now);
}

/* Forget a message being unmasked into rx or msg (the parser must not write there again). */
static void drop_sink(cc_asgi_ws_t *ws) {
    ws->parser.sink = NULL;
    ws->sink_left = 0;
    ws->sink_msg = 0;
    Py_CLEAR(ws->rx);
}

/* Connection over: the app's receive() gets websocket.disconnect once the queue is empty. */
static void mark_closed(cc_asgi_ws_t *ws, int code, const char *reason, size_t rlen) {
    if (ws->closed)
        return;
    ws->closed = 1;
    ws->dc_code = code;
    drop_sink(ws);
    if (ws->accepted)
        cc_asgi_log(ws->proto->server, ST(ws)->s_info, "connection closed", NULL);
    PyObject *r = PyUnicode_DecodeUTF8(reason ? reason : "", (Py_ssize_t)rlen, "replace");
    if (!r)
        PyErr_WriteUnraisable((PyObject *)ws);
    Py_XSETREF(ws->dc_reason, r);
    cancel_timer(ws);
    if (ws->recv_waiter && queued(ws) == 0) {
        PyObject *m = disconnect_msg(ws);
        if (!m) { /* the app waiting in receive() gets the error instead of waiting for good */
            cc_asgi_wake_error(ST(ws), &ws->recv_waiter);
            return;
        }
        cc_asgi_wake(ST(ws), &ws->recv_waiter, m);
        Py_DECREF(m);
    }
}

/* Drop unread input and close after flushing what was written. */
static void close_transport(cc_asgi_ws_t *ws) {
    cc_asgi_proto_t *p = ws->proto;
    if (flush_now(ws) < 0)
        PyErr_WriteUnraisable((PyObject *)ws);
    cc_buf_consume(&p->in, p->in.len);
    cc_asgi_close(p, 0);
}

/* Protocol violation / limit: close frame with the error's code, then a lingering close. The
 * client may be in the middle of a huge frame: closing at once with its bytes unread would send
 * a reset, which can destroy our close frame before the client reads it. So the write side is
 * shut after the close frame and what the client still sends is read and dropped, for a bounded
 * time and amount (the HTTP layer's linger), before the socket closes. */
static void fail(cc_asgi_ws_t *ws, unsigned code, const char *reason) {
    cc_asgi_proto_t *p = ws->proto;
    if (!ws->close_sent && send_close_frame(ws, code, reason, strlen(reason)) < 0)
        PyErr_WriteUnraisable((PyObject *)ws);
    mark_closed(ws, (int)code, reason, strlen(reason));
    if (flush_now(ws) < 0)
        PyErr_WriteUnraisable((PyObject *)ws);
    cc_buf_consume(&p->in, p->in.len);
    cc_asgi_close_linger(p);
}

static PyObject *ws_on_timer(cc_asgi_ws_t *ws, PyObject *unused) {
    (void)unused;
    Py_CLEAR(ws->timer);
    cc_asgi_proto_t *p = ws->proto;
    cc_asgi_ws_config_t *cfg = &p->server->ws_cfg;
    if (p->lost || ws->closed)
        Py_RETURN_NONE;
    double now = cc_asgi_monotonic();
    if (ws->close_sent) {
        if (now + 0.001 >= ws->close_deadline) { /* no close frame came back */
            mark_closed(ws, CC_WS_CLOSE_ABNORMAL, "", 0);
            cc_buf_consume(&p->in, p->in.len);
            cc_asgi_close(p, 1);
            Py_RETURN_NONE;
        }
    } else if (ws->awaiting_pong) {
        if (cfg->ping_timeout > 0 && now + 0.001 >= ws->ping_sent + cfg->ping_timeout) {
            fail(ws, CC_WS_CLOSE_INTERNAL, "keepalive ping timeout");
            Py_RETURN_NONE;
        }
    } else if (cfg->ping_interval > 0 && now + 0.001 >= ws->last_ping + cfg->ping_interval) {
        uint8_t f[CC_WS_MAX_CONTROL_FRAME];
        size_t n = cc_ws_build_ping(f, (const uint8_t *)"cicada", 6);
        if (out_append(ws, f, n, NULL, 0) < 0)
            return NULL;
        ws->awaiting_pong = 1;
        ws->ping_sent = ws->last_ping = now;
    }
    if (rearm(ws) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef timer_def = {"_on_timer", (PyCFunction)ws_on_timer, METH_NOARGS, NULL};

/* uvicorn's INFO lines: `('1.2.3.4', 5) - "WebSocket /path?q" [accepted]`, "connection open",
 * "connection closed". The scope is gone once the app finished: then only the outcome is said. */
static void log_handshake(cc_asgi_ws_t *ws, const char *outcome) {
    cc_asgi_server_t *srv = ws->proto->server;
    cc_asgi_state_t *st = srv->st;
    if (!srv->error_logger || !ws->scope)
        return;
    CC_EXC_SAVE(exc);
    PyObject *path = PyDict_GetItemWithError(ws->scope, st->s_path);
    PyObject *qs = PyDict_GetItemWithError(ws->scope, st->s_query_string);
    PyObject *client = PyDict_GetItemWithError(ws->scope, st->s_client);
    PyObject *msg = NULL;
    if (path && qs && client && PyBytes_Check(qs))
        msg = PyUnicode_FromFormat("%R - \"WebSocket %U%s%s\" [%s]", client, path,
                                   PyBytes_GET_SIZE(qs) ? "?" : "", PyBytes_AS_STRING(qs), outcome);
    if (msg) {
        cc_asgi_log(srv, st->s_info, "%s", msg);
        Py_DECREF(msg);
    }
    if (PyErr_Occurred())
        PyErr_WriteUnraisable((PyObject *)ws);
    CC_EXC_RESTORE(exc);
}

/* ---- receiving ----------------------------------------------------------------------------- */

/* Whether a receive() is still waiting. One given up (cancelled, e.g. by asyncio.wait_for)
 * must not swallow the next message: that goes to the queue instead. -1: error. */
static int waiter_alive(cc_asgi_ws_t *ws) {
    if (!ws->recv_waiter)
        return 0;
    PyObject *d = call_method1(ST(ws)->s_done, ws->recv_waiter, NULL);
    if (!d)
        return -1;
    int done = PyObject_IsTrue(d);
    Py_DECREF(d);
    if (done)
        Py_CLEAR(ws->recv_waiter);
    return done == 0;
}

/* Hand a received message to the app: to the waiting receive() or the queue. Steals payload. */
static int deliver_obj(cc_asgi_ws_t *ws, unsigned opcode, PyObject *payload) {
    cc_asgi_state_t *st = ST(ws);
    if (ws->app_closed || ws->closed) {
        Py_DECREF(payload); /* after our close: the app said it wants nothing more */
        return 0;
    }
    PyObject *m = PyDict_New();
    if (!m || PyDict_SetItem(m, st->s_type, st->ws.s_t_receive) < 0 ||
        PyDict_SetItem(m, opcode == CC_WS_OP_TEXT ? st->ws.s_text : st->ws.s_bytes, payload) < 0) {
        Py_XDECREF(m);
        Py_DECREF(payload);
        return -1;
    }
    Py_DECREF(payload);
    int rc = 0, alive = waiter_alive(ws);
    if (alive < 0) {
        Py_DECREF(m);
        return -1;
    }
    if (alive && queued(ws) == 0)
        cc_asgi_wake(st, &ws->recv_waiter, m);
    else
        rc = PyList_Append(ws->queue, m);
    Py_DECREF(m);
    return rc;
}

static int deliver(cc_asgi_ws_t *ws, unsigned opcode, const char *data, size_t len) {
    if (ws->app_closed || ws->closed)
        return 0;
    PyObject *payload;
    if (opcode == CC_WS_OP_TEXT)
        payload = PyUnicode_DecodeUTF8(data, (Py_ssize_t)len, NULL);
    else
        payload = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
    if (!payload) {
        if (opcode == CC_WS_OP_TEXT && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            fail(ws, CC_WS_CLOSE_INVALID_DATA, cc_ws_reason(CC_WS_E_UTF8));
            return 0;
        }
        return -1;
    }
    return deliver_obj(ws, opcode, payload);
}

/* A data frame of at least CC_ASGI_WS_SINK_MIN bytes starts (its header consumed, avail bytes of
 * payload already buffered): choose where the parser unmasks it. A single-frame binary message
 * goes straight into the bytes object the app will get; fragments, and a text frame not yet all
 * here, into msg (text is decoded from there once whole). A text frame that is all here stays
 * in the input and is decoded from there. Compressed payloads are inflated from the input. */
static int on_frame(cc_asgi_ws_t *ws, const cc_ws_event_t *ev, size_t avail) {
    if (ev->compressed || ws->app_closed || ws->closed || ev->len > CC_ASGI_WS_SINK_MAX)
        return 0;
    if (ev->first && ev->last) {
        if (ev->opcode == CC_WS_OP_BINARY) {
            ws->rx = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)ev->len);
            if (!ws->rx)
                return -1;
            ws->parser.sink = (uint8_t *)PyBytes_AS_STRING(ws->rx);
            ws->sink_left = ev->len;
            return 0;
        }
        if (avail >= ev->len)
            return 0;
    }
    if (cc_buf_reserve(&ws->msg, ev->len) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    ws->parser.sink = (uint8_t *)cc_buf_ptr(&ws->msg) + ws->msg.len;
    ws->sink_left = ev->len;
    ws->sink_msg = 1;
    return 0;
}

/* One uncompressed span. 0, or -1 (Python error). */
static int data_span(cc_asgi_ws_t *ws, const cc_ws_event_t *ev) {
    int rc = 0;
    if (ws->rx) { /* unmasked into rx already; a single-frame message ends with its frame */
        ws->sink_left -= ev->len;
        if (ev->last) {
            PyObject *b = ws->rx;
            ws->rx = NULL;
            rc = deliver_obj(ws, ev->opcode, b);
        }
        return rc;
    }
    if (ws->sink_msg) { /* unmasked into msg's reserved room already */
        ws->msg.len += ev->len;
        ws->sink_left -= ev->len;
        if (!ws->sink_left)
            ws->sink_msg = 0;
    } else if (ev->first && ev->last) {
        return deliver(ws, ev->opcode, (const char *)ev->data, ev->len);
    } else if (ev->len && cc_buf_append(&ws->msg, ev->data, ev->len) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (ev->last) {
        rc = deliver(ws, ev->opcode, cc_buf_ptr(&ws->msg), ws->msg.len);
        cc_buf_consume(&ws->msg, ws->msg.len);
        cc_buf_release(&ws->msg, 0);
    }
    return rc;
}

/* One compressed span: inflate into ws->msg, validating text as it comes. 0, or -1 (Python
 * error), or 1 when the connection failed. */
static int inflate_span(cc_asgi_ws_t *ws, const cc_ws_event_t *ev) {
    uint8_t chunk[CC_ASGI_WS_ZCHUNK];
    const uint8_t *in = ev->data;
    size_t left = ev->len;
    cc_ws_result_t r;
    if (ev->first)
        cc_ws_utf8_init(&ws->utf8);
    do {
        size_t used = 0, made = 0;
        r = cc_ws_inflate(&ws->inf, in, left, ev->last, chunk, sizeof chunk, &used, &made);
        in += used;
        left -= used;
        if (made && ev->opcode == CC_WS_OP_TEXT && cc_ws_utf8_feed(&ws->utf8, chunk, made)) {
            r = CC_WS_E_UTF8;
            break;
        }
        if (made && cc_buf_append(&ws->msg, chunk, made) < 0) {
            PyErr_NoMemory();
            return -1;
        }
    } while (r == CC_WS_INCOMPLETE);
    if (r == CC_WS_OK && ev->last && ev->opcode == CC_WS_OP_TEXT)
        r = cc_ws_utf8_finish(&ws->utf8);
    if (r != CC_WS_OK) {
        fail(ws, (unsigned)cc_ws_close_code(r), cc_ws_reason(r));
        return 1;
    }
    return 0;
}

static int on_close_frame(cc_asgi_ws_t *ws, const cc_ws_event_t *ev) {
    if (!ws->close_sent) {
        /* Echo the code; a close without a code is answered with an empty one. */
        unsigned code = ev->close_code == CC_WS_CLOSE_NO_STATUS ? 0 : ev->close_code;
        if (send_close_frame(ws, code, (const char *)ev->data, ev->len) < 0)
            return -1;
    }
    mark_closed(ws, ev->close_code, (const char *)ev->data, ev->len);
    close_transport(ws);
    return 0;
}

int cc_asgi_ws_feed(cc_asgi_ws_t *ws) {
    cc_asgi_proto_t *p = ws->proto;
    cc_asgi_ws_config_t *cfg = &p->server->ws_cfg;
    if (!ws->accepted || ws->denied) {
        if (ws->denied) /* the response is out: ignore anything else */
            cc_buf_consume(&p->in, p->in.len);
        return update_reading(ws);
    }
    while (p->in.len && !p->lost && !p->close_called && !ws->closed &&
           queued(ws) < cfg->max_queue) {
        uint8_t *buf = (uint8_t *)cc_buf_ptr(&p->in);
        size_t used = 0;
        cc_ws_event_t ev;
        cc_ws_result_t r = cc_ws_parse(&ws->parser, buf, p->in.len, &used, &ev);
        if (r == CC_WS_INCOMPLETE) {
            cc_buf_consume(&p->in, p->in.len);
            break;
        }
        if (r != CC_WS_OK) {
            fail(ws, (unsigned)cc_ws_close_code(r), cc_ws_reason(r));
            return 0;
        }
        int rc = 0;
        switch (ev.type) {
        case CC_WS_EV_DATA:
            if (ev.compressed) {
                rc = inflate_span(ws, &ev);
                if (rc == 0 && ev.last) {
                    rc = deliver(ws, ev.opcode, cc_buf_ptr(&ws->msg), ws->msg.len);
                    cc_buf_consume(&ws->msg, ws->msg.len);
                    cc_buf_release(&ws->msg, 0);
                }
            } else {
                rc = data_span(ws, &ev);
            }
            break;
        case CC_WS_EV_FRAME:
            rc = on_frame(ws, &ev, p->in.len - used);
            break;
        case CC_WS_EV_PING: {
            uint8_t f[CC_WS_MAX_CONTROL_FRAME];
            size_t n = cc_ws_build_pong(f, ev.data, ev.len);
            rc = out_append(ws, f, n, NULL, 0);
            break;
        }
        case CC_WS_EV_PONG:
            if (ws->awaiting_pong) { /* next ping one interval after the last one */
                ws->awaiting_pong = 0;
                rc = rearm(ws);
            }
            break;
        case CC_WS_EV_CLOSE:
            cc_buf_consume(&p->in, used);
            return on_close_frame(ws, &ev);
        }
        if (rc < 0)
            return -1;
        if (rc > 0 || ws->closed)
            return 0;
        cc_buf_consume(&p->in, used);
    }
    return update_reading(ws);
}

/* ---- the ASGI callables ------------------------------------------------------------------- */

static PyObject *ws_receive(cc_asgi_ws_t *ws, PyObject *unused) {
    (void)unused;
    cc_asgi_state_t *st = ST(ws);
    PyObject *m = NULL;
    if (!ws->connect_delivered) {
        ws->connect_delivered = 1;
        m = PyDict_Copy(st->ws.msg_connect);
    } else if (queued(ws)) {
        m = Py_NewRef(PyList_GET_ITEM(ws->queue, ws->qhead));
        ws->qhead++;
        if (ws->qhead == PyList_GET_SIZE(ws->queue) || ws->qhead >= CC_ASGI_WS_QUEUE_COMPACT) {
            if (PyList_SetSlice(ws->queue, 0, ws->qhead, NULL) < 0) {
                Py_DECREF(m);
                return NULL;
            }
            ws->qhead = 0;
        }
        /* Room again: parse what was left waiting in the buffer. */
        if (ws->proto->in.len && cc_asgi_ws_feed(ws) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    } else if (ws->closed || ws->denied || ws->proto->lost) {
        if (!ws->closed)
            mark_closed(ws, CC_WS_CLOSE_ABNORMAL, "", 0);
        m = disconnect_msg(ws);
    }
    if (m) {
        PyObject *r = cc_asgi_ready_new(st, m);
        Py_DECREF(m);
        return r;
    }
    if (PyErr_Occurred())
        return NULL;
    if (ws->recv_waiter) {
        PyObject *d = call_method1(st->s_done, ws->recv_waiter, NULL);
        if (!d)
            return NULL;
        int done = PyObject_IsTrue(d);
        Py_DECREF(d);
        if (!done) {
            PyErr_SetString(PyExc_RuntimeError,
                            "receive() called while another receive() is still waiting");
            return NULL;
        }
        Py_CLEAR(ws->recv_waiter);
    }
    ws->recv_waiter = call_method1(st->s_create_future, ws->proto->server->loop, NULL);
    if (!ws->recv_waiter)
        return NULL;
    if (update_reading(ws) < 0)
        return NULL;
    return Py_NewRef(ws->recv_waiter);
}

/* What append_app_headers found among the app's headers. */
typedef struct {
    int has_server, has_date;
    long long content_length; /* -1: none */
} app_headers_t;

/* Headers a 101 gets from the server alone: the handshake's own (RFC 6455 §4.2.2; the ASGI spec
 * forbids sec-websocket-protocol, which the subprotocol key says) and framing headers, which a
 * 1xx must not carry (RFC 9110 §8.6, RFC 9112 §6.1). An app's copy would break the handshake. */
static const char *const handshake_names[] = {
    "sec-websocket-accept", "sec-websocket-protocol", "sec-websocket-extensions", "upgrade",
    "connection", "content-length", "transfer-encoding", NULL};
/* A denial response is framed by the server: a body of known length, then the close. */
static const char *const denial_names[] = {"transfer-encoding", NULL};

static int name_in(const char *n, size_t nl, const char *const *names) {
    for (; *names; names++)
        if (cc_http_name_eq(n, nl, *names, strlen(*names)))
            return 1;
    return 0;
}

/* A Content-Length value: 1*DIGIT (RFC 9110 §8.6), at most 18 digits; -1 if not one. */
static long long content_length(const char *v, size_t n) {
    long long x = 0;
    if (n == 0 || n > 18)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

/* Serialize the app's [name, value] byte pairs onto o, refusing invalid ones and those named in
 * `forbidden`. An exception raised by the app's own iterable reaches the app unchanged. */
static int append_app_headers(cc_buf_t *o, PyObject *headers, const char *const *forbidden,
                              app_headers_t *info) {
    info->has_server = info->has_date = 0;
    info->content_length = -1;
    if (!headers || headers == Py_None)
        return 0;
    PyObject *fast = PySequence_Fast(headers, "");
    if (!fast) {
        if (PyErr_ExceptionMatches(PyExc_TypeError))
            PyErr_Format(PyExc_RuntimeError,
                         "ASGI headers must be an iterable of [name, value] byte pairs, got %s",
                         Py_TYPE(headers)->tp_name);
        return -1;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(fast, i), *n = NULL, *v = NULL;
        if ((PyTuple_Check(pair) || PyList_Check(pair)) && PySequence_Size(pair) == 2) {
            n = PySequence_Fast_GET_ITEM(pair, 0);
            v = PySequence_Fast_GET_ITEM(pair, 1);
        }
        if (!n || !PyBytes_Check(n) || !PyBytes_Check(v) ||
            !cc_http_valid_header_name(PyBytes_AS_STRING(n), (size_t)PyBytes_GET_SIZE(n)) ||
            !cc_http_valid_header_value(PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v))) {
            PyErr_Format(PyExc_RuntimeError,
                         "Invalid ASGI header %R: expected [bytes, bytes] "
                         "with a valid name and no CR/LF/NUL in the value",
                         pair);
            goto error;
        }
        const char *ns = PyBytes_AS_STRING(n), *vs = PyBytes_AS_STRING(v);
        size_t nl = (size_t)PyBytes_GET_SIZE(n), vl = (size_t)PyBytes_GET_SIZE(v);
        if (name_in(ns, nl, forbidden)) {
            PyErr_Format(PyExc_RuntimeError,
                         "ASGI header %R is the server's to send in this response", n);
            goto error;
        }
        if (cc_http_name_eq(ns, nl, "content-length", 14)) {
            /* OWS around the value is not part of it (RFC 9112 §5). */
            while (vl && (*vs == ' ' || *vs == '\t'))
                vs++, vl--;
            while (vl && (vs[vl - 1] == ' ' || vs[vl - 1] == '\t'))
                vl--;
            long long cl = content_length(vs, vl);
            if (cl < 0 || (info->content_length >= 0 && cl != info->content_length)) {
                PyErr_Format(PyExc_RuntimeError, "Invalid or conflicting content-length %R", v);
                goto error;
            }
            info->content_length = cl;
            vs = PyBytes_AS_STRING(v);
            vl = (size_t)PyBytes_GET_SIZE(v);
        }
        info->has_server |= cc_http_name_eq(ns, nl, "server", 6);
        info->has_date |= cc_http_name_eq(ns, nl, "date", 4);
        if (cc_buf_append(o, ns, nl) < 0 || cc_buf_append(o, ": ", 2) < 0 ||
            cc_buf_append(o, vs, vl) < 0 || cc_buf_append(o, "\r\n", 2) < 0) {
            PyErr_NoMemory();
            goto error;
        }
    }
    Py_DECREF(fast);
    return 0;
error:
    Py_DECREF(fast);
    return -1;
}

#define APPEND_LIT(o, s) cc_buf_append((o), (s), sizeof(s) - 1)

/* A complete HTTP response instead of the upgrade, then close (also when it fails: the client
 * must not wait for a response that will never come). `app` holds the app's serialized header
 * lines (info says what they contain), or is NULL. */
static int send_http(cc_asgi_ws_t *ws, int status, const cc_buf_t *app, const app_headers_t *info,
                     const char *body, size_t bl, const char *extra) {
    cc_asgi_proto_t *p = ws->proto;
    cc_asgi_server_t *srv = p->server;
    cc_buf_t o;
    cc_buf_init(&o);
    char line[CC_HTTP_STATUS_LINE_MAX], num[32];
    size_t ll = cc_http_status_line(line, 1, status);
    int rc = -1;
    ws->denied = 1;
    if (cc_buf_append(&o, line, ll) < 0 ||
        (app && app->len && cc_buf_append(&o, cc_buf_ptr(app), app->len) < 0))
        goto nomem;
    if (!info || info->content_length < 0) {
        int nl = snprintf(num, sizeof num, "content-length: %zu\r\n", bl);
        if (cc_buf_append(&o, num, (size_t)nl) < 0)
            goto nomem;
    }
    if (srv->date_header && !(info && info->has_date) &&
        (APPEND_LIT(&o, "date: ") < 0 || cc_buf_append(&o, cc_date_now(), CC_DATE_LEN) < 0 ||
         APPEND_LIT(&o, "\r\n") < 0))
        goto nomem;
    if ((extra && cc_buf_append(&o, extra, strlen(extra)) < 0) ||
        APPEND_LIT(&o, "connection: close\r\n") < 0 ||
        (srv->server_header && !(info && info->has_server) &&
         cc_buf_append(&o, srv->server_header, srv->server_header_len) < 0) ||
        (srv->extra_headers && cc_buf_append(&o, srv->extra_headers, srv->extra_headers_len) < 0) ||
        APPEND_LIT(&o, "\r\n") < 0 || (bl && cc_buf_append(&o, body, bl) < 0))
        goto nomem;
    rc = cc_asgi_write(p, cc_buf_ptr(&o), o.len);
    goto done;
nomem:
    PyErr_NoMemory();
done:
    cc_buf_free(&o);
    if (rc < 0) {
        CC_EXC_SAVE(exc);
        close_transport(ws);
        CC_EXC_RESTORE(exc);
    } else {
        close_transport(ws);
    }
    return rc;
}

/* The 101 response head for websocket.accept: our headers, the subprotocol (a str, or NULL)
 * and the app's extra headers. */
static int accept_head(cc_asgi_ws_t *ws, cc_buf_t *o, PyObject *sub, PyObject *headers) {
    cc_asgi_server_t *srv = ws->proto->server;
    if (APPEND_LIT(o, "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                      "connection: Upgrade\r\nsec-websocket-accept: ") < 0 ||
        cc_buf_append(o, ws->accept, CC_WS_ACCEPT_LEN) < 0 || APPEND_LIT(o, "\r\n") < 0)
        goto nomem;
    if (sub) {
        Py_ssize_t sl;
        const char *s = PyUnicode_AsUTF8AndSize(sub, &sl);
        if (!s)
            return -1;
        if (!cc_http_valid_header_value(s, (size_t)sl)) {
            PyErr_SetString(PyExc_RuntimeError, "invalid websocket subprotocol value");
            return -1;
        }
        if (APPEND_LIT(o, "sec-websocket-protocol: ") < 0 ||
            cc_buf_append(o, s, (size_t)sl) < 0 || APPEND_LIT(o, "\r\n") < 0)
            goto nomem;
    }
    if (ws->deflate &&
        (APPEND_LIT(o, "sec-websocket-extensions: ") < 0 ||
         cc_buf_append(o, ws->ext_resp, ws->ext_len) < 0 || APPEND_LIT(o, "\r\n") < 0))
        goto nomem;
    app_headers_t info;
    if (append_app_headers(o, headers, handshake_names, &info) < 0)
        return -1;
    if (srv->server_header && !info.has_server &&
        cc_buf_append(o, srv->server_header, srv->server_header_len) < 0)
        goto nomem;
    if (APPEND_LIT(o, "\r\n") < 0)
        goto nomem;
    return 0;
nomem:
    PyErr_NoMemory();
    return -1;
}

/* The negotiated permessage-deflate's compressor and decompressor. */
static int start_deflate(cc_asgi_ws_t *ws) {
    size_t max_size = ws->proto->server->ws_cfg.max_size;
    cc_ws_result_t r = cc_ws_inflater_init(&ws->inf, &ws->zparams, max_size);
    if (r == CC_WS_OK) {
        r = cc_ws_deflater_init(&ws->def, &ws->zparams, CC_ASGI_WS_DEFLATE_LEVEL,
                                CC_ASGI_WS_DEFLATE_MEM_LEVEL);
        if (r != CC_WS_OK)
            cc_ws_inflater_free(&ws->inf);
    }
    if (r != CC_WS_OK) {
        PyErr_NoMemory();
        return -1;
    }
    ws->zready = 1;
    return 0;
}

/* The handshake is written: the connection is open, frames flow. */
static int opened(cc_asgi_ws_t *ws) {
    cc_asgi_proto_t *p = ws->proto;
    cc_asgi_server_t *srv = p->server;
    ws->accepted = 1;
    log_handshake(ws, "accepted");
    cc_asgi_log(srv, srv->st->s_info, "connection open", NULL);
    ws->last_ping = cc_asgi_monotonic();
    if (srv->shutting_down) { /* accepted during a graceful stop: say goodbye at once */
        if (send_close_frame(ws, CC_WS_CLOSE_GOING_AWAY, "", 0) < 0)
            return -1;
        ws->close_deadline = cc_asgi_monotonic() + CC_ASGI_WS_CLOSE_TIMEOUT;
    }
    if (rearm(ws) < 0)
        return -1;
    return p->in.len ? cc_asgi_ws_feed(ws) : update_reading(ws);
}

static int do_accept(cc_asgi_ws_t *ws, PyObject *message) {
    cc_asgi_state_t *st = ST(ws);
    PyObject *headers = NULL, *sub = msg_get(message, st->ws.s_subprotocol);
    cc_buf_t o;
    cc_buf_init(&o);
    int rc = -1;
    if (PyErr_Occurred())
        goto done;
    headers = msg_get(message, st->s_headers);
    if (PyErr_Occurred())
        goto done;
    if (sub == Py_None)
        Py_CLEAR(sub);
    if (sub && !PyUnicode_Check(sub)) {
        PyErr_Format(PyExc_RuntimeError,
                     "websocket.accept 'subprotocol' must be str or None, got %s",
                     Py_TYPE(sub)->tp_name);
        goto done;
    }
    if (sub) { /* RFC 6455 §4.2.2: one the client offered (a client fails the connection else) */
        int offered = PySequence_Contains(ws->subprotocols, sub);
        if (offered < 0)
            goto done;
        if (!offered) {
            PyErr_Format(PyExc_RuntimeError,
                         "websocket.accept 'subprotocol' %R was not offered by the client "
                         "(scope['subprotocols'] is %R)",
                         sub, ws->subprotocols);
            goto done;
        }
    }
    if (accept_head(ws, &o, sub, headers) < 0 || (ws->deflate && start_deflate(ws) < 0) ||
        cc_asgi_write(ws->proto, cc_buf_ptr(&o), o.len) < 0)
        goto done;
    rc = opened(ws);
done:
    Py_XDECREF(sub);
    Py_XDECREF(headers);
    cc_buf_free(&o);
    return rc;
}

/* A close code the app may send: RFC 6455 §7.4's (the ones our own parser and other peers
 * accept: 1016-2999 and 1004-1006/1015 make a client fail the connection) and 1012-1014,
 * registered with IANA since (service restart, try again later, bad gateway). */
static int app_close_code_ok(long c) {
    return (c >= CC_WS_IANA_CLOSE_MIN && c <= CC_WS_IANA_CLOSE_MAX) ||
           (c >= 0 && cc_ws_close_code_valid((unsigned)c));
}

static int do_app_close(cc_asgi_ws_t *ws, PyObject *message) {
    cc_asgi_state_t *st = ST(ws);
    PyObject *code = msg_get(message, st->ws.s_code), *reason = NULL;
    long c = CC_WS_CLOSE_NORMAL;
    int rc = -1;
    if (PyErr_Occurred())
        goto done;
    if (code && code != Py_None) {
        c = PyLong_Check(code) ? PyLong_AsLong(code) : -1;
        if (c == -1 && PyErr_Occurred())
            PyErr_Clear();
        if (!app_close_code_ok(c)) {
            PyErr_Format(PyExc_RuntimeError, "Invalid WebSocket close code %R", code);
            goto done;
        }
    }
    reason = msg_get(message, st->ws.s_reason);
    if (PyErr_Occurred())
        goto done;
    const char *rs = "";
    Py_ssize_t rl = 0;
    if (reason && reason != Py_None) {
        if (!PyUnicode_Check(reason)) {
            PyErr_Format(PyExc_RuntimeError, "websocket.close 'reason' must be str, got %s",
                         Py_TYPE(reason)->tp_name);
            goto done;
        }
        rs = PyUnicode_AsUTF8AndSize(reason, &rl);
        if (!rs)
            goto done;
    }
    ws->app_closed = 1;
    if (!ws->close_sent) {
        if (send_close_frame(ws, (unsigned)c, rs, (size_t)rl) < 0)
            goto done;
        ws->close_deadline = cc_asgi_monotonic() + CC_ASGI_WS_CLOSE_TIMEOUT;
        if (rearm(ws) < 0)
            goto done;
    }
    rc = 0;
done:
    Py_XDECREF(code);
    Py_XDECREF(reason);
    return rc;
}

static int do_send(cc_asgi_ws_t *ws, PyObject *message) {
    cc_asgi_state_t *st = ST(ws);
    PyObject *b = msg_get(message, st->ws.s_bytes), *t = NULL;
    int rc = -1;
    if (PyErr_Occurred())
        goto done;
    if (b && b != Py_None) {
        Py_buffer view;
        if (PyObject_GetBuffer(b, &view, PyBUF_SIMPLE) < 0) {
            PyErr_Format(PyExc_RuntimeError, "websocket.send 'bytes' must be bytes, got %s",
                         Py_TYPE(b)->tp_name);
            goto done;
        }
        rc = send_data(ws, CC_WS_OP_BINARY, view.buf, (size_t)view.len, b);
        PyBuffer_Release(&view);
        goto done;
    }
    t = msg_get(message, st->ws.s_text);
    if (PyErr_Occurred())
        goto done;
    if (!t || t == Py_None) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Expected ASGI message 'websocket.send' to have a 'bytes' or 'text' key");
        goto done;
    }
    if (!PyUnicode_Check(t)) {
        PyErr_Format(PyExc_RuntimeError, "websocket.send 'text' must be str, got %s",
                     Py_TYPE(t)->tp_name);
        goto done;
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(t, &n);
    if (!s)
        goto done;
    rc = send_data(ws, CC_WS_OP_TEXT, s, (size_t)n, NULL);
done:
    Py_XDECREF(b);
    Py_XDECREF(t);
    return rc;
}

static int do_deny_body(cc_asgi_ws_t *ws, PyObject *message) {
    cc_asgi_state_t *st = ST(ws);
    PyObject *body = msg_get(message, st->s_body), *more = NULL;
    Py_buffer view = {0};
    int rc = -1, m = 0;
    if (PyErr_Occurred())
        goto done;
    if (body && body != Py_None && PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_RuntimeError,
                     "websocket.http.response.body 'body' must be bytes, got %s",
                     Py_TYPE(body)->tp_name);
        goto done;
    }
    /* more_body first: a message that fails leaves nothing of itself behind. */
    more = msg_get(message, st->s_more_body);
    if (PyErr_Occurred() || (more && (m = PyObject_IsTrue(more)) < 0))
        goto done;
    size_t total = ws->deny_body.len + (size_t)view.len;
    if (ws->deny_cl >= 0 && (total > (size_t)ws->deny_cl || (!m && total != (size_t)ws->deny_cl))) {
        PyErr_Format(PyExc_RuntimeError,
                     "websocket.http.response.body: %zu body bytes for a content-length of %lld",
                     total, ws->deny_cl);
        goto done;
    }
    if (view.len && cc_buf_append(&ws->deny_body, view.buf, (size_t)view.len) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    rc = 0;
    if (!m) {
        app_headers_t info = {ws->deny_has_server, ws->deny_has_date, ws->deny_cl};
        rc = send_http(ws, ws->deny_status, &ws->deny_head, &info, cc_buf_ptr(&ws->deny_body),
                       ws->deny_body.len, NULL);
        cc_buf_free(&ws->deny_head);
        cc_buf_free(&ws->deny_body);
    }
done:
    if (view.obj)
        PyBuffer_Release(&view);
    Py_XDECREF(body);
    Py_XDECREF(more);
    return rc;
}

static int do_deny_start(cc_asgi_ws_t *ws, PyObject *message) {
    cc_asgi_state_t *st = ST(ws);
    PyObject *status = msg_get(message, st->s_status);
    if (!status) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError,
                            "websocket.http.response.start requires a 'status' key");
        return -1;
    }
    long s = PyLong_Check(status) && !PyBool_Check(status) ? PyLong_AsLong(status) : -1;
    Py_DECREF(status);
    /* RFC 9110 §15: 100..599, and a 1xx is interim, never the response. */
    if (s < CC_WS_DENY_STATUS_MIN || s > CC_WS_DENY_STATUS_MAX) {
        PyErr_Clear();
        PyErr_SetString(PyExc_RuntimeError, "websocket.http.response.start 'status' must be an int "
                                            "between 200 and 599");
        return -1;
    }
    PyObject *headers = msg_get(message, st->s_headers);
    if (PyErr_Occurred())
        return -1;
    /* Serialized now: the error points at this message, and the app's list (or iterator) is
     * read once, whatever the app does with it afterwards. */
    app_headers_t info;
    cc_buf_t head;
    cc_buf_init(&head);
    int rc = append_app_headers(&head, headers, denial_names, &info);
    Py_XDECREF(headers);
    if (rc < 0) {
        cc_buf_free(&head);
        return -1;
    }
    cc_buf_free(&ws->deny_head);
    ws->deny_head = head;
    ws->deny_status = (int)s;
    ws->deny_has_server = info.has_server;
    ws->deny_has_date = info.has_date;
    ws->deny_cl = info.content_length;
    ws->deny_started = 1;
    return 0;
}

static PyObject *type_name(PyObject *t) {
    return t ? t : Py_None;
}

static PyObject *ws_send(cc_asgi_ws_t *ws, PyObject *message) {
    cc_asgi_proto_t *p = ws->proto;
    cc_asgi_state_t *st = ST(ws);
    PyObject *type = NULL;
    int rc = -1;
    if (!PyDict_Check(message)) { /* as http.response.*: a Mapping is not a message either */
        PyErr_Format(PyExc_RuntimeError, "ASGI message must be a dict, got %s.",
                     Py_TYPE(message)->tp_name);
        return NULL;
    }
    type = msg_get(message, st->s_type);
    if (!type) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "ASGI message has no 'type' key");
        return NULL;
    }
#define IS(name)                                                                                   \
    (type == st->ws.s_##name ||                                                                    \
     (PyUnicode_Check(type) && PyUnicode_Compare(type, st->ws.s_##name) == 0))
    if (!ws->accepted && !ws->denied && !ws->deny_started) {
        if (p->lost) {
            PyErr_SetString(st->client_disconnected, "the client closed the connection");
            goto done;
        }
        if (IS(t_accept))
            rc = do_accept(ws, message);
        else if (IS(t_close)) {
            log_handshake(ws, "403");
            rc = send_http(ws, 403, NULL, NULL, "", 0, NULL);
        } else if (IS(t_resp_start))
            rc = do_deny_start(ws, message);
        else
            PyErr_Format(PyExc_RuntimeError,
                         "Expected ASGI message 'websocket.accept', 'websocket.close', or "
                         "'websocket.http.response.start' but got %R.",
                         type_name(type));
    } else if (ws->deny_started && !ws->denied) {
        if (p->lost) {
            PyErr_SetString(st->client_disconnected, "the client closed the connection");
            goto done;
        }
        if (IS(t_resp_body))
            rc = do_deny_body(ws, message);
        else
            PyErr_Format(PyExc_RuntimeError,
                         "Expected ASGI message 'websocket.http.response.body' but got %R.",
                         type_name(type));
    } else if (ws->accepted && !ws->app_closed) {
        if (!IS(t_send) && !IS(t_close)) {
            PyErr_Format(PyExc_RuntimeError,
                         "Expected ASGI message 'websocket.send' or 'websocket.close', but got %R.",
                         type_name(type));
            goto done;
        }
        if (ws->closed || ws->close_sent || p->lost || p->close_called) {
            PyErr_SetString(st->client_disconnected, "the WebSocket connection is closed");
            goto done;
        }
        rc = IS(t_send) ? do_send(ws, message) : do_app_close(ws, message);
    } else {
        PyErr_Format(PyExc_RuntimeError,
                     "Unexpected ASGI message %R, after sending 'websocket.close' or response "
                     "already completed.",
                     type_name(type));
    }
#undef IS
done:
    Py_DECREF(type);
    if (rc < 0)
        return NULL;
    if (p->writing_paused && !p->lost && !p->close_called)
        return cc_asgi_drain_waiter(p);
    return Py_NewRef(st->ready_none);
}

/* ---- the app's task ----------------------------------------------------------------------- */

static int is_disconnect_error(cc_asgi_state_t *st, PyObject *exc) {
    for (int depth = 0; exc && depth < 4; depth++) {
        if (PyObject_TypeCheck(exc, (PyTypeObject *)st->client_disconnected))
            return 1;
        PyObject *ctx = PyException_GetContext(exc);
        Py_XDECREF(ctx);
        exc = ctx;
    }
    return 0;
}

static void log_exception(cc_asgi_server_t *srv, PyObject *exc) {
    if (!srv->error_logger)
        return;
    PyObject *msg = PyUnicode_FromString("Exception in ASGI application\n");
    PyObject *kwnames = PyTuple_Pack(1, srv->st->s_exc_info);
    if (msg && kwnames) {
        PyObject *args[3] = {srv->error_logger, msg, exc};
        PyObject *r = PyObject_VectorcallMethod(srv->st->s_error, args,
                                                2 | PY_VECTORCALL_ARGUMENTS_OFFSET, kwnames);
        Py_XDECREF(r);
    }
    Py_XDECREF(msg);
    Py_XDECREF(kwnames);
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(srv->error_logger);
}

static void ws_finish(cc_asgi_ws_t *ws, PyObject *exc, PyObject *res) {
    cc_asgi_proto_t *p = ws->proto;
    cc_asgi_server_t *srv = p->server;
    cc_asgi_state_t *st = srv->st;
    if (ws->counted) {
        ws->counted = 0;
        srv->active_requests--;
    }
    ws->task_done = 1;
    int failed = 0;
    if (exc) {
        if (!is_disconnect_error(st, exc))
            log_exception(srv, exc);
        failed = 1;
    } else if (res && res != Py_None) {
        cc_asgi_log(srv, st->s_error, "ASGI callable should return None, but returned '%s'.", res);
    } else if (!ws->accepted && !ws->denied && !ws->deny_started) {
        cc_asgi_log(srv, st->s_error, "ASGI callable returned without sending handshake.", NULL);
    } else if (ws->deny_started && !ws->denied) {
        cc_asgi_log(srv, st->s_error, "ASGI callable returned without completing response.", NULL);
    }
    if (!p->lost) {
        /* No handshake, or a denial response the app never completed: nothing of it has been
         * written (it goes out whole), so the client still gets a clean 500. */
        if (!ws->accepted && !ws->denied) {
            cc_buf_free(&ws->deny_head);
            cc_buf_free(&ws->deny_body);
            if (send_http(ws, 500, NULL, NULL, "Internal Server Error", 21,
                          "content-type: text/plain; charset=utf-8\r\n") < 0)
                PyErr_WriteUnraisable((PyObject *)ws);
        } else if (ws->accepted && !ws->close_sent) {
            /* The handler ended without closing: close for it, as websockets does. */
            unsigned code = failed ? CC_WS_CLOSE_INTERNAL : CC_WS_CLOSE_NORMAL;
            if (send_close_frame(ws, code, "", 0) < 0)
                PyErr_WriteUnraisable((PyObject *)ws);
            ws->app_closed = 1;
            ws->close_deadline = cc_asgi_monotonic() + CC_ASGI_WS_CLOSE_TIMEOUT;
            if (ws->closed)
                close_transport(ws);
            else if (rearm(ws) < 0)
                PyErr_WriteUnraisable((PyObject *)ws);
        }
    }
    Py_CLEAR(ws->task);
    Py_CLEAR(ws->scope);
}

static PyObject *ws_task_done(cc_asgi_ws_t *ws, PyObject *task) {
    PyObject *res = call_method1(ST(ws)->s_result, task, NULL);
    PyObject *exc = res ? NULL : cc_asgi_fetch_exception();
    ws_finish(ws, exc, res);
    Py_XDECREF(res);
    Py_XDECREF(exc);
    Py_RETURN_NONE;
}

static PyMethodDef receive_def = {"receive", (PyCFunction)ws_receive, METH_NOARGS, NULL};
static PyMethodDef send_def = {"send", (PyCFunction)ws_send, METH_O, NULL};
static PyMethodDef done_def = {"_task_done", (PyCFunction)ws_task_done, METH_O, NULL};

/* ---- the handshake ------------------------------------------------------------------------ */

/* Reject the upgrade with an HTTP error, before any app runs. */
static int refuse(cc_asgi_proto_t *p, int status, const char *reason, const char *extra) {
    cc_asgi_server_t *srv = p->server;
    PyObject *why = PyUnicode_FromString(reason);
    if (!why)
        return -1;
    cc_asgi_log(srv, srv->st->s_warning, "Invalid WebSocket upgrade request: %s", why);
    Py_DECREF(why);
    cc_buf_t o;
    cc_buf_init(&o);
    char line[CC_HTTP_STATUS_LINE_MAX], num[48];
    size_t ll = cc_http_status_line(line, 1, status);
    int nl = snprintf(num, sizeof num, "content-length: %zu\r\n", strlen(reason));
    int rc = -1;
    if (cc_buf_append(&o, line, ll) < 0 ||
        APPEND_LIT(&o, "content-type: text/plain; charset=utf-8\r\nconnection: close\r\n") < 0 ||
        cc_buf_append(&o, num, (size_t)nl) < 0 ||
        (extra && cc_buf_append(&o, extra, strlen(extra)) < 0) ||
        (srv->server_header && cc_buf_append(&o, srv->server_header, srv->server_header_len) < 0) ||
        APPEND_LIT(&o, "\r\n") < 0 || cc_buf_append(&o, reason, strlen(reason)) < 0)
        PyErr_NoMemory();
    else
        rc = cc_asgi_write(p, cc_buf_ptr(&o), o.len);
    cc_buf_free(&o);
    cc_buf_consume(&p->in, p->in.len);
    cc_asgi_close(p, 0);
    return rc;
}

static const cc_http_header_t *find_header(const cc_http_request_t *req, const char *name,
                                           size_t nl, int *count) {
    const cc_http_header_t *found = NULL;
    *count = 0;
    for (size_t i = 0; i < req->num_headers; i++) {
        const cc_http_header_t *h = &req->headers[i];
        if (h->name_len == nl && !memcmp(h->name, name, nl)) {
            if (!found)
                found = h;
            (*count)++;
        }
    }
    return found;
}

/* All values of a header joined with ", " (NUL-terminated, malloc'd) or NULL with *len 0. */
static char *join_header(const cc_http_request_t *req, const char *name, size_t nl, size_t *len) {
    cc_buf_t b;
    cc_buf_init(&b);
    for (size_t i = 0; i < req->num_headers; i++) {
        const cc_http_header_t *h = &req->headers[i];
        if (h->name_len != nl || memcmp(h->name, name, nl))
            continue;
        if ((b.len && cc_buf_append(&b, ", ", 2) < 0) ||
            cc_buf_append(&b, h->value, h->value_len) < 0) {
            cc_buf_free(&b);
            *len = 0;
            return NULL;
        }
    }
    *len = b.len;
    if (cc_buf_append(&b, "", 1) < 0) {
        cc_buf_free(&b);
        *len = 0;
        return NULL;
    }
    cc_buf_compact(&b);
    return b.data;
}

/* Client's offered subprotocols, split on commas, stripped. */
static PyObject *subprotocol_list(const cc_http_request_t *req) {
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    for (size_t i = 0; i < req->num_headers; i++) {
        const cc_http_header_t *h = &req->headers[i];
        if (h->name_len != 22 || memcmp(h->name, "sec-websocket-protocol", 22))
            continue;
        const char *pos = h->value, *item;
        size_t n;
        while (cc_http_list_next(&pos, h->value + h->value_len, &item, &n)) {
            PyObject *v = PyUnicode_DecodeLatin1(item, (Py_ssize_t)n, NULL);
            if (!v || PyList_Append(list, v) < 0) {
                Py_XDECREF(v);
                Py_DECREF(list);
                return NULL;
            }
            Py_DECREF(v);
        }
    }
    return list;
}

/* The http scope turned into a websocket one (spec 2.4). */
static PyObject *ws_scope(cc_asgi_ws_t *ws, const cc_http_request_t *req) {
    cc_asgi_proto_t *p = ws->proto;
    cc_asgi_state_t *st = p->server->st;
    PyObject *scope = cc_asgi_build_scope(p, req);
    if (!scope)
        return NULL;
    PyObject *ext = NULL, *empty = NULL;
    if (PyDict_SetItem(scope, st->s_type, st->ws.s_websocket) < 0 ||
        PyDict_DelItem(scope, st->s_method) < 0)
        goto error;
    PyObject *scheme = PyDict_GetItemWithError(scope, st->s_scheme);
    if (scheme && PyUnicode_Check(scheme)) {
        PyObject *ns = NULL;
        if (PyUnicode_CompareWithASCIIString(scheme, "https") == 0)
            ns = st->s_v_wss;
        else if (PyUnicode_CompareWithASCIIString(scheme, "http") == 0)
            ns = st->s_v_ws;
        if (ns && PyDict_SetItem(scope, st->s_scheme, ns) < 0)
            goto error;
    } else if (PyErr_Occurred()) {
        goto error;
    }
    if (PyDict_SetItem(scope, st->ws.s_subprotocols, ws->subprotocols) < 0)
        goto error;
    ext = PyDict_New();
    empty = PyDict_New();
    if (!ext || !empty || PyDict_SetItem(ext, st->ws.s_t_http_response, empty) < 0 ||
        cc_asgi_add_tls(p, ext) < 0 || PyDict_SetItem(scope, st->s_extensions, ext) < 0)
        goto error;
    Py_DECREF(ext);
    Py_DECREF(empty);
    return scope;
error:
    Py_XDECREF(ext);
    Py_XDECREF(empty);
    Py_DECREF(scope);
    return NULL;
}

/* Why the upgrade request can't be accepted (RFC 6455 4.2.1), with the status and an extra
 * header line for the refusal; NULL when it can, with the Sec-WebSocket-Accept value in accept. */
static const char *handshake_refusal(const cc_http_request_t *req, char *accept, int *status,
                                     const char **extra) {
    int n;
    *status = 400;
    *extra = NULL;
    if (req->method_len != 3 || memcmp(req->method, "GET", 3))
        return "WebSocket upgrade requires GET.";
    if (req->version_minor != 1)
        return "WebSocket upgrade requires HTTP/1.1.";
    const cc_http_header_t *ver = find_header(req, "sec-websocket-version", 21, &n);
    if (!ver || n != 1 || ver->value_len != 2 || memcmp(ver->value, "13", 2)) {
        *status = 426;
        *extra = "sec-websocket-version: 13\r\n";
        return "Unsupported Sec-WebSocket-Version (only 13 is supported).";
    }
    const cc_http_header_t *key = find_header(req, "sec-websocket-key", 17, &n);
    if (!key || n != 1 || cc_ws_accept_key(key->value, key->value_len, accept) != CC_WS_OK)
        return "Missing or invalid Sec-WebSocket-Key header.";
    return NULL;
}

/* permessage-deflate, when the server allows it and the client offers it. */
static int negotiate_deflate(cc_asgi_ws_t *ws, const cc_http_request_t *req) {
    size_t el;
    char *ext = join_header(req, "sec-websocket-extensions", 24, &el);
    if (!ext && el) {
        PyErr_NoMemory();
        return -1;
    }
    if (ext && el) {
        cc_ws_deflate_config_t dc;
        cc_ws_deflate_config_default(&dc);
        dc.server_max_window_bits = CC_ASGI_WS_DEFLATE_WINDOW;
        ws->deflate = cc_ws_deflate_negotiate(ext, el, &dc, &ws->zparams, ws->ext_resp,
                                              &ws->ext_len) == 1;
    }
    free(ext);
    return 0;
}

/* The connection's WebSocket state for an acceptable upgrade request, scope included. */
static cc_asgi_ws_t *ws_new(cc_asgi_proto_t *p, const cc_http_request_t *req,
                            const char *accept) {
    cc_asgi_ws_config_t *cfg = &p->server->ws_cfg;
    cc_asgi_ws_t *ws = PyObject_GC_New(cc_asgi_ws_t, p->server->st->ws.ws_type);
    if (!ws)
        return NULL;
    memset((char *)ws + sizeof(PyObject), 0, sizeof(*ws) - sizeof(PyObject));
    ws->proto = (cc_asgi_proto_t *)Py_NewRef(p);
    ws->dc_code = CC_WS_CLOSE_ABNORMAL;
    PyObject_GC_Track(ws);
    memcpy(ws->accept, accept, CC_WS_ACCEPT_LEN);
    ws->queue = PyList_New(0);
    ws->subprotocols = subprotocol_list(req);
    if (!ws->queue || !ws->subprotocols)
        goto error;
    if (cfg->per_message_deflate && negotiate_deflate(ws, req) < 0)
        goto error;
    cc_ws_parser_init(&ws->parser, cfg->max_size, ws->deflate);
    ws->parser.announce_min = CC_ASGI_WS_SINK_MIN;
    ws->scope = ws_scope(ws, req);
    if (!ws->scope)
        goto error;
    return ws;
error:
    Py_DECREF(ws);
    return NULL;
}

/* Runs the app on ws in its own task; the connection owns ws from here on. */
static int ws_run_app(cc_asgi_ws_t *ws) {
    cc_asgi_proto_t *p = ws->proto;
    cc_asgi_server_t *srv = p->server;
    PyObject *task = NULL, *recv = PyCFunction_New(&receive_def, (PyObject *)ws);
    PyObject *send = PyCFunction_New(&send_def, (PyObject *)ws);
    PyObject *cb = PyCFunction_New(&done_def, (PyObject *)ws);
    if (!recv || !send || !cb)
        goto error;
    p->ws = (cc_asgi_ws_t *)Py_NewRef(ws);
    srv->request_count++;
    srv->active_requests++;
    ws->counted = 1;
    task = cc_asgi_spawn_app(srv, ws->scope, recv, send);
    if (!task) { /* the app failed before it could run: same as a task exception */
        PyObject *exc = cc_asgi_fetch_exception();
        ws_finish(ws, exc, NULL);
        Py_XDECREF(exc);
        goto done;
    }
    ws->task = Py_NewRef(task);
    PyObject *dargs[2] = {task, cb};
    PyObject *r = PyObject_VectorcallMethod(srv->st->s_add_done_callback, dargs,
                                            2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (!r)
        goto error;
    Py_DECREF(r);
    if (update_reading(ws) < 0)
        goto error;
done:
    Py_XDECREF(recv);
    Py_XDECREF(send);
    Py_XDECREF(cb);
    Py_XDECREF(task);
    return 0;
error:
    Py_XDECREF(recv);
    Py_XDECREF(send);
    Py_XDECREF(cb);
    Py_XDECREF(task);
    if (ws->counted) {
        ws->counted = 0;
        srv->active_requests--;
    }
    if (p->ws == ws)
        Py_CLEAR(p->ws);
    return -1;
}

int cc_asgi_ws_start(cc_asgi_proto_t *p, const cc_http_request_t *req) {
    cc_asgi_server_t *srv = p->server;
    char accept[CC_WS_ACCEPT_LEN];
    int status;
    const char *extra, *why = handshake_refusal(req, accept, &status, &extra);
    if (why) {
        cc_buf_consume(&p->in, req->head_len);
        return refuse(p, status, why, extra);
    }
    if (cc_asgi_over_concurrency(srv)) {
        cc_asgi_log(srv, srv->st->s_warning, "Exceeded concurrency limit.", NULL);
        int rc = cc_asgi_send_simple(p, 1, 503, "Service Unavailable", CC_ASGI_SIMPLE_CLOSE);
        cc_buf_consume(&p->in, req->head_len);
        cc_asgi_close(p, 0);
        return rc;
    }
    cc_asgi_ws_t *ws = ws_new(p, req, accept);
    if (!ws)
        return -1;
    cc_buf_consume(&p->in, req->head_len);
    int rc = ws_run_app(ws);
    Py_DECREF(ws);
    return rc;
}

/* ---- events from HttpProtocol / HttpServer ---------------------------------------------- */

void cc_asgi_ws_lost(cc_asgi_ws_t *ws) {
    mark_closed(ws, CC_WS_CLOSE_ABNORMAL, "", 0);
    cancel_timer(ws);
    free_zlib(ws);
    drop_sink(ws);
    cc_buf_free(&ws->msg);
    cc_buf_free(&ws->zout);
    cc_buf_free(&ws->wbuf);
}

void cc_asgi_ws_shutdown(cc_asgi_ws_t *ws) {
    cc_asgi_proto_t *p = ws->proto;
    if (p->lost || ws->closed)
        return;
    if (ws->accepted && !ws->close_sent) {
        if (send_close_frame(ws, CC_WS_CLOSE_GOING_AWAY, "", 0) < 0)
            PyErr_WriteUnraisable((PyObject *)ws);
        ws->close_deadline = cc_asgi_monotonic() + CC_ASGI_WS_CLOSE_TIMEOUT;
        if (rearm(ws) < 0)
            PyErr_WriteUnraisable((PyObject *)ws);
    }
    /* Not accepted yet: the app decides; accepting now sends the 1001 right after the 101. */
}

/* ---- type ---------------------------------------------------------------------------------- */

static int ws_traverse(cc_asgi_ws_t *ws, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(ws));
    Py_VISIT(ws->proto);
    Py_VISIT(ws->scope);
    Py_VISIT(ws->task);
    Py_VISIT(ws->recv_waiter);
    Py_VISIT(ws->queue);
    Py_VISIT(ws->timer);
    Py_VISIT(ws->dc_reason);
    Py_VISIT(ws->subprotocols);
    return 0;
}

static int ws_clear(cc_asgi_ws_t *ws) {
    Py_CLEAR(ws->scope);
    Py_CLEAR(ws->task);
    Py_CLEAR(ws->recv_waiter);
    Py_CLEAR(ws->queue);
    Py_CLEAR(ws->timer);
    Py_CLEAR(ws->dc_reason);
    Py_CLEAR(ws->subprotocols);
    Py_CLEAR(ws->proto);
    return 0;
}

static void ws_dealloc(cc_asgi_ws_t *ws) {
    PyTypeObject *tp = Py_TYPE(ws);
    PyObject_GC_UnTrack(ws);
    if (ws->counted && ws->proto) {
        ws->proto->server->active_requests--;
        ws->counted = 0;
    }
    free_zlib(ws);
    drop_sink(ws);
    cc_buf_free(&ws->msg);
    cc_buf_free(&ws->zout);
    cc_buf_free(&ws->deny_head);
    cc_buf_free(&ws->deny_body);
    cc_buf_free(&ws->wbuf);
    ws_clear(ws);
    tp->tp_free((PyObject *)ws);
    Py_DECREF(tp);
}

static PyType_Slot ws_slots[] = {
    {Py_tp_dealloc, ws_dealloc},
    {Py_tp_traverse, ws_traverse},
    {Py_tp_clear, ws_clear},
    {0, NULL},
};

static PyType_Spec ws_spec = {
    .name = "cicada._core._WebSocket",
    .basicsize = sizeof(cc_asgi_ws_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = ws_slots,
};

/* ---- state and settings ------------------------------------------------------------------ */

int cc_asgi_ws_init(PyObject *module, cc_asgi_ws_state_t *st) {
#define CC_ASGI_WS_STR_INIT(name, text)                                                            \
    if (!(st->s_##name = PyUnicode_InternFromString(text)))                                        \
        return -1;
    CC_ASGI_WS_STRINGS(CC_ASGI_WS_STR_INIT)
#undef CC_ASGI_WS_STR_INIT
    st->ws_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ws_spec, NULL);
    if (!st->ws_type)
        return -1;
    st->msg_connect = PyDict_New();
    PyObject *k = PyUnicode_InternFromString("type");
    if (!st->msg_connect || !k || PyDict_SetItem(st->msg_connect, k, st->s_t_connect) < 0) {
        Py_XDECREF(k);
        return -1;
    }
    Py_DECREF(k);
    return 0;
}

int cc_asgi_ws_traverse(cc_asgi_ws_state_t *st, visitproc visit, void *arg) {
    Py_VISIT(st->ws_type);
    Py_VISIT(st->msg_connect);
    return 0;
}

void cc_asgi_ws_clear(cc_asgi_ws_state_t *st) {
    Py_CLEAR(st->ws_type);
    Py_CLEAR(st->msg_connect);
#define CC_ASGI_WS_STR_CLEAR(name, text) Py_CLEAR(st->s_##name);
    CC_ASGI_WS_STRINGS(CC_ASGI_WS_STR_CLEAR)
#undef CC_ASGI_WS_STR_CLEAR
}

static int pop_kw(PyObject *d, const char *name, PyObject **out) {
    *out = NULL;
    PyObject *k = PyUnicode_FromString(name);
    if (!k)
        return -1;
    PyObject *v = PyDict_GetItemWithError(d, k);
    if (v) {
        *out = Py_NewRef(v);
        if (PyDict_DelItem(d, k) < 0) {
            Py_DECREF(k);
            Py_CLEAR(*out);
            return -1;
        }
    }
    Py_DECREF(k);
    return PyErr_Occurred() ? -1 : 0;
}

static int opt_seconds(PyObject *o, double dflt, double *out, const char *name) {
    if (!o) {
        *out = dflt;
        return 0;
    }
    if (o == Py_None) {
        *out = 0;
        return 0;
    }
    double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0 or None", name);
        return -1;
    }
    *out = v;
    return 0;
}

int cc_asgi_ws_config_from_kwargs(cc_asgi_ws_config_t *cfg, PyObject *kwds, PyObject **rest) {
    PyObject *ws = NULL, *size = NULL, *queue = NULL, *pi = NULL, *pt = NULL, *pmd = NULL;
    cfg->enabled = 0;
    cfg->max_size = CC_ASGI_WS_DEFAULT_MAX_SIZE;
    cfg->max_queue = CC_ASGI_WS_DEFAULT_MAX_QUEUE;
    cfg->ping_interval = CC_ASGI_WS_DEFAULT_PING_INTERVAL;
    cfg->ping_timeout = CC_ASGI_WS_DEFAULT_PING_TIMEOUT;
    cfg->per_message_deflate = 1;
    *rest = NULL;
    if (!kwds)
        return 0;
    *rest = PyDict_Copy(kwds);
    if (!*rest)
        return -1;
    if (pop_kw(*rest, "ws", &ws) < 0 || pop_kw(*rest, "ws_max_size", &size) < 0 ||
        pop_kw(*rest, "ws_max_queue", &queue) < 0 || pop_kw(*rest, "ws_ping_interval", &pi) < 0 ||
        pop_kw(*rest, "ws_ping_timeout", &pt) < 0 ||
        pop_kw(*rest, "ws_per_message_deflate", &pmd) < 0)
        goto error;
    if (ws && ws != Py_None) {
        if (!PyUnicode_Check(ws)) {
            PyErr_SetString(PyExc_TypeError, "ws must be a str ('auto', 'none', ...)");
            goto error;
        }
        cfg->enabled = PyUnicode_CompareWithASCIIString(ws, "none") != 0;
    }
    if (size && size != Py_None) {
        long long v = PyLong_AsLongLong(size);
        if (v == -1 && PyErr_Occurred())
            goto error;
        if (v <= 0) {
            PyErr_SetString(PyExc_ValueError, "ws_max_size must be positive");
            goto error;
        }
        cfg->max_size = (uint64_t)v;
    }
    if (queue && queue != Py_None) {
        Py_ssize_t v = PyLong_AsSsize_t(queue);
        if (v == -1 && PyErr_Occurred())
            goto error;
        if (v <= 0) {
            PyErr_SetString(PyExc_ValueError, "ws_max_queue must be positive");
            goto error;
        }
        cfg->max_queue = v;
    }
    if (opt_seconds(pi, CC_ASGI_WS_DEFAULT_PING_INTERVAL, &cfg->ping_interval, "ws_ping_interval") <
            0 ||
        opt_seconds(pt, CC_ASGI_WS_DEFAULT_PING_TIMEOUT, &cfg->ping_timeout, "ws_ping_timeout") < 0)
        goto error;
    if (pmd) {
        int v = PyObject_IsTrue(pmd);
        if (v < 0)
            goto error;
        cfg->per_message_deflate = v;
    }
    Py_XDECREF(ws);
    Py_XDECREF(size);
    Py_XDECREF(queue);
    Py_XDECREF(pi);
    Py_XDECREF(pt);
    Py_XDECREF(pmd);
    return 0;
error:
    Py_XDECREF(ws);
    Py_XDECREF(size);
    Py_XDECREF(queue);
    Py_XDECREF(pi);
    Py_XDECREF(pt);
    Py_XDECREF(pmd);
    Py_CLEAR(*rest);
    return -1;
}
