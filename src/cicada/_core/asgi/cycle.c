/* One request/response cycle: the object behind the ASGI `receive` and `send` callables, the
 * request body reader, and the completion check when the app's coroutine ends (_AppRun, stepped
 * by the app's task). Awaiting receive() or send() creates no future when the result is already
 * known (a _Ready awaitable returns it at once); only a real wait makes a loop future. A finished
 * cycle nobody refers to is reused for the connection's next request. Response serialization is
 * in send.c. */
#include "asgi/asgi.h"

#include <string.h>
#include <unistd.h>

/* ---- _Ready: an awaitable that completes immediately with a value ------------------------ */

typedef struct {
    PyObject_HEAD PyObject *value;
} cc_ready_t;

PyObject *cc_asgi_ready_new(cc_asgi_state_t *st, PyObject *value) {
    cc_ready_t *r = PyObject_GC_New(cc_ready_t, st->ready_type);
    if (!r)
        return NULL;
    r->value = Py_NewRef(value);
    PyObject_GC_Track(r);
    return (PyObject *)r;
}

static PyObject *ready_await(PyObject *self) {
    return Py_NewRef(self);
}

static PyObject *ready_next(cc_ready_t *r) {
    PyObject *v = r->value;
    if (v == Py_None)
        return NULL; /* StopIteration(None) */
    /* A tuple or exception would be unpacked by StopIteration(value): wrap it. */
    PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, v);
    if (exc) {
        PyErr_SetObject(PyExc_StopIteration, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PySendResult ready_send(cc_ready_t *r, PyObject *arg, PyObject **result) {
    (void)arg;
    *result = Py_NewRef(r->value);
    return PYGEN_RETURN;
}

static int ready_traverse(cc_ready_t *r, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(r));
    Py_VISIT(r->value);
    return 0;
}

static int ready_clear(cc_ready_t *r) {
    Py_CLEAR(r->value);
    return 0;
}

static void ready_dealloc(cc_ready_t *r) {
    PyTypeObject *tp = Py_TYPE(r);
    PyObject_GC_UnTrack(r);
    Py_CLEAR(r->value);
    tp->tp_free((PyObject *)r);
    Py_DECREF(tp);
}

static PyType_Slot ready_slots[] = {
    {Py_am_await, ready_await},     {Py_am_send, ready_send},
    {Py_tp_iter, ready_await},      {Py_tp_iternext, ready_next},
    {Py_tp_dealloc, ready_dealloc}, {Py_tp_traverse, ready_traverse},
    {Py_tp_clear, ready_clear},     {0, NULL},
};

PyType_Spec cc_asgi_ready_spec = {
    .name = "cicada._core._Ready",
    .basicsize = sizeof(cc_ready_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = ready_slots,
};

/* ---- helpers ------------------------------------------------------------------------------ */

/* Resolve a waiting future (if its awaiter has not given up) and drop our reference. */
void cc_asgi_wake(cc_asgi_state_t *st, PyObject **waiter, PyObject *value) {
    PyObject *fut = *waiter;
    *waiter = NULL;
    if (!fut)
        return;
    CC_EXC_SAVE(exc);
    PyObject *args[2] = {fut, value};
    PyObject *done =
        PyObject_VectorcallMethod(st->s_done, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (done) {
        int d = PyObject_IsTrue(done);
        Py_DECREF(done);
        if (d == 0) {
            PyObject *r = PyObject_VectorcallMethod(st->s_set_result, args,
                                                    2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            Py_XDECREF(r);
        }
    }
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(fut);
    Py_DECREF(fut);
    CC_EXC_RESTORE(exc);
}

/* cc_asgi_wake for when the message could not be made (the error is pending): the awaiter gets
 * that error instead of waiting for good. */
void cc_asgi_wake_error(cc_asgi_state_t *st, PyObject **waiter) {
    PyObject *exc = cc_err_take(), *fut = *waiter;
    *waiter = NULL;
    if (fut && exc) {
        PyObject *args[2] = {fut, exc};
        PyObject *done =
            PyObject_VectorcallMethod(st->s_done, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        int d = done ? PyObject_IsTrue(done) : -1;
        Py_XDECREF(done);
        PyObject *r = d == 0 ? PyObject_VectorcallMethod(st->s_set_exception, args,
                                                         2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL)
                             : NULL;
        Py_XDECREF(r);
        if (PyErr_Occurred()) /* could not even fail it: at least say so */
            PyErr_WriteUnraisable(fut);
    } else if (exc) {
        cc_err_give(Py_NewRef(exc));
        PyErr_WriteUnraisable(NULL);
    }
    Py_XDECREF(exc);
    Py_XDECREF(fut);
}

PyObject *cc_asgi_disconnect_message(cc_asgi_state_t *st) {
    PyObject *d = PyDict_New();
    if (d && PyDict_SetItem(d, st->s_type, st->s_t_disconnect) < 0)
        Py_CLEAR(d);
    return d;
}

static PyObject *new_future(cc_asgi_server_t *srv) {
    PyObject *args[1] = {srv->loop};
    return PyObject_VectorcallMethod(srv->st->s_create_future, args,
                                     1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* ---- request body --------------------------------------------------------------------------- */

/* Handle a malformed chunked body while the app runs: answer 400 if nothing was sent yet (a
 * started response's head is still held back), close, and let receive() report a disconnect. */
static int body_error(cc_asgi_cycle_t *c, cc_http_result_t r) {
    cc_asgi_proto_t *p = c->proto;
    cc_asgi_server_t *srv = p->server;
    PyObject *why = PyUnicode_FromString(cc_http_reason(r));
    if (!why)
        return -1;
    cc_asgi_log(srv, srv->st->s_warning, "Invalid HTTP request received: %s", why);
    Py_DECREF(why);
    c->keep_alive = 0;
    c->body_done = 1;
    c->disconnected = 1;
    if (c->resp == CC_RESP_INIT || c->resp == CC_RESP_STARTED) {
        c->resp = CC_RESP_DONE;
        c->server_answered = 1;
        if (cc_asgi_send_simple(p, c->version_minor, cc_http_status(r), cc_http_reason(r),
                                CC_ASGI_SIMPLE_CLOSE | (c->is_head ? CC_ASGI_SIMPLE_HEAD : 0)) < 0)
            return -1;
    }
    cc_asgi_close_linger(p);
    return 0;
}

/* Take the request body bytes already buffered. Returns a new bytes object (possibly empty, with
 * body_done set when the end was reached), Py_None (borrowed, nothing available yet), or NULL. */
static PyObject *take_body(cc_asgi_cycle_t *c, int discard) {
    cc_asgi_proto_t *p = c->proto;
    cc_buf_t *in = &p->in;
    if (c->body_done)
        return discard ? Py_None : PyBytes_FromStringAndSize(NULL, 0);
    if (c->body_kind == CC_HTTP_BODY_LENGTH) {
        size_t n = in->len;
        if ((uint64_t)n > c->body_remaining)
            n = (size_t)c->body_remaining;
        if (n == 0)
            return Py_None;
        PyObject *b = discard ? Py_None : PyBytes_FromStringAndSize(cc_buf_ptr(in), (Py_ssize_t)n);
        if (!b)
            return NULL;
        cc_buf_consume(in, n);
        c->body_remaining -= n;
        if (c->body_remaining == 0)
            c->body_done = 1;
        return b;
    }
    /* chunked: decode in place, moving data spans down over the framing already consumed */
    char *base = cc_buf_ptr(in);
    size_t off = 0, w = 0;
    while (off < in->len && !c->body_done) {
        size_t used = 0, dlen = 0;
        const char *data = NULL;
        cc_http_result_t r =
            cc_http_chunked_decode(&c->chunked, base + off, in->len - off, &used, &data, &dlen);
        off += used;
        if (r == CC_HTTP_INCOMPLETE)
            break;
        if (r != CC_HTTP_OK) {
            cc_buf_consume(in, off);
            if (body_error(c, r) < 0)
                return NULL;
            return Py_None;
        }
        if (dlen) {
            if (!discard)
                memmove(base + w, data, dlen);
            w += dlen;
        } else if (cc_http_chunked_done(&c->chunked)) {
            c->body_done = 1;
        }
    }
    if (w == 0 && !c->body_done) {
        cc_buf_consume(in, off);
        return Py_None;
    }
    PyObject *b = discard ? Py_None : PyBytes_FromStringAndSize(base, (Py_ssize_t)w);
    cc_buf_consume(in, off);
    return b;
}

int cc_asgi_cycle_drain_body(cc_asgi_cycle_t *c) {
    while (!c->body_done && c->proto->in.len) {
        size_t before = c->proto->in.len;
        if (!take_body(c, 1))
            return -1;
        if (c->proto->in.len == before)
            break;
    }
    return 0;
}

/* Whether the rest of the request body is already in the input buffer: 1 if so, 2 if a framing
 * error ends it there, 0 if more must come. A client that half-closes after sending it still
 * gets its response; a response head may keep the connection only for 1. The chunked decoder
 * runs on a copy of its state and consumes nothing. */
int cc_asgi_cycle_body_buffered(const cc_asgi_cycle_t *c) {
    const cc_buf_t *in = &c->proto->in;
    if (c->body_done)
        return 1;
    if (c->body_kind == CC_HTTP_BODY_LENGTH)
        return (uint64_t)in->len >= c->body_remaining;
    cc_http_chunked_t d = c->chunked;
    const char *base = cc_buf_ptr(in);
    size_t off = 0;
    while (off < in->len) {
        size_t used = 0, dlen = 0;
        const char *data = NULL;
        cc_http_result_t r = cc_http_chunked_decode(&d, base + off, in->len - off, &used, &data,
                                                    &dlen);
        off += used;
        if (r != CC_HTTP_OK)
            return r == CC_HTTP_INCOMPLETE ? 0 : 2;
        if (!dlen && cc_http_chunked_done(&d))
            return 1;
        if (!used)
            break;
    }
    return 0;
}

static PyObject *request_message(cc_asgi_state_t *st, PyObject *body, int more) {
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    if (PyDict_SetItem(d, st->s_type, st->s_t_request) < 0 ||
        PyDict_SetItem(d, st->s_body, body) < 0 ||
        PyDict_SetItem(d, st->s_more_body, more ? Py_True : Py_False) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* The next receive() message if one is available now: new ref, Py_None (borrowed) if not. */
static PyObject *next_message(cc_asgi_cycle_t *c) {
    cc_asgi_state_t *st = c->proto->server->st;
    if (c->resp == CC_RESP_DONE || c->disconnected)
        return cc_asgi_disconnect_message(st);
    if (c->body_delivered)
        return c->proto->eof ? cc_asgi_disconnect_message(st)
                             : Py_None; /* wait for the response to finish or the client to leave */
    PyObject *b = take_body(c, 0);
    if (!b)
        return NULL;
    /* Nothing buffered: after a body error, or with the client's EOF already in, nothing more
     * will come (no wakeup either: the transport reads no further). */
    if (b == Py_None)
        return c->disconnected || c->proto->eof ? cc_asgi_disconnect_message(st) : Py_None;
    if (c->disconnected) { /* a body error while reading */
        Py_DECREF(b);
        return cc_asgi_disconnect_message(st);
    }
    PyObject *m = request_message(st, b, !c->body_done);
    Py_DECREF(b);
    if (c->body_done)
        c->body_delivered = 1;
    return m;
}

int cc_asgi_cycle_feed(cc_asgi_cycle_t *c) {
    if (!c->recv_waiter)
        return 0;
    PyObject *m = next_message(c);
    if (!m) { /* the waiting app gets the error: nobody else would wake it */
        cc_asgi_wake_error(c->proto->server->st, &c->recv_waiter);
        return cc_asgi_update_reading(c->proto);
    }
    if (m != Py_None) {
        cc_asgi_wake(c->proto->server->st, &c->recv_waiter, m);
        Py_DECREF(m);
    }
    return cc_asgi_update_reading(c->proto);
}

int cc_asgi_cycle_disconnect(cc_asgi_cycle_t *c) {
    cc_asgi_state_t *st = c->proto->server->st;
    c->disconnected = 1;
    if (c->file_fd >= 0) {
        close(c->file_fd);
        c->file_fd = -1;
        c->sock_fd = -1;
    }
    if (c->send_waiter)
        cc_asgi_wake(st, &c->send_waiter, Py_None);
    if (c->recv_waiter) {
        PyObject *m = cc_asgi_disconnect_message(st);
        if (!m) {
            cc_asgi_wake_error(st, &c->recv_waiter);
            return 0;
        }
        cc_asgi_wake(st, &c->recv_waiter, m);
        Py_DECREF(m);
    }
    return 0;
}

/* ---- the ASGI callables ------------------------------------------------------------------- */

static PyObject *cycle_receive(cc_asgi_cycle_t *c, PyObject *unused) {
    (void)unused;
    cc_asgi_proto_t *p = c->proto;
    cc_asgi_server_t *srv = p->server;
    if (c->expect_continue && c->resp == CC_RESP_INIT && !c->body_done && !p->closing) {
        /* The app wants the body: now the client may send it. */
        c->expect_continue = 0;
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (cc_asgi_write(p, cont, sizeof(cont) - 1) < 0)
            return NULL;
    }
    PyObject *m = next_message(c);
    if (!m)
        return NULL;
    if (m != Py_None) {
        PyObject *r = cc_asgi_ready_new(srv->st, m);
        Py_DECREF(m);
        /* the message was taken from the buffer either way: reading must resume as it would,
         * and not with the failure (the app gets it) pending */
        PyObject *exc = r ? NULL : cc_err_take();
        if (cc_asgi_update_reading(p) < 0) {
            Py_XDECREF(r);
            if (exc)
                PyErr_WriteUnraisable((PyObject *)p);
            else
                return NULL;
        }
        if (exc)
            cc_err_give(exc);
        return r;
    }
    if (c->recv_waiter) {
        PyObject *args[1] = {c->recv_waiter};
        PyObject *d = PyObject_VectorcallMethod(srv->st->s_done, args,
                                                1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (!d)
            return NULL;
        int done = PyObject_IsTrue(d);
        Py_DECREF(d);
        if (!done) {
            PyErr_SetString(PyExc_RuntimeError,
                            "receive() called while another receive() is still waiting");
            return NULL;
        }
        Py_CLEAR(c->recv_waiter);
    }
    c->recv_waiter = new_future(srv);
    if (!c->recv_waiter)
        return NULL;
    if (cc_asgi_update_reading(p) < 0)
        return NULL;
    return Py_NewRef(c->recv_waiter);
}

static PyObject *cycle_send(cc_asgi_cycle_t *c, PyObject *message) {
    return cc_asgi_send(c, message);
}

/* True if exc (or an exception it was raised while handling) is our ClientDisconnected: an app
 * that stops because its client left is not an error worth a traceback. */
static int is_disconnect_error(cc_asgi_state_t *st, PyObject *exc) {
    for (int depth = 0; exc && depth < 4; depth++) {
        if (PyObject_TypeCheck(exc, (PyTypeObject *)st->client_disconnected))
            return 1;
        PyObject *ctx = PyException_GetContext(exc);
        Py_XDECREF(ctx); /* still referenced by exc */
        exc = ctx;
    }
    return 0;
}

static void log_exception(cc_asgi_server_t *srv, const char *text, PyObject *exc) {
    if (!srv->error_logger)
        return;
    PyObject *msg = PyUnicode_FromString(text);
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

/* After the app failed or returned early: 500 if nothing was sent, else cut the connection. */
static void finish_abnormally(cc_asgi_cycle_t *c) {
    cc_asgi_proto_t *p = c->proto;
    if (c->disconnected || c->resp == CC_RESP_DONE)
        return;
    /* STARTED: the head is held back until the first body message, so nothing was sent yet and
     * a clean 500 is still possible. */
    if (c->resp == CC_RESP_INIT || c->resp == CC_RESP_STARTED) {
        c->keep_alive = 0;
        c->resp = CC_RESP_DONE;
        if (cc_asgi_access_log(c, 500) < 0 ||
            cc_asgi_send_simple(p, c->version_minor, 500, "Internal Server Error",
                                CC_ASGI_SIMPLE_CLOSE |
                                    (c->is_head ? CC_ASGI_SIMPLE_HEAD : 0)) < 0)
            PyErr_WriteUnraisable((PyObject *)c);
        cc_asgi_response_complete(c);
        return;
    }
    c->keep_alive = 0;
    c->resp = CC_RESP_DONE;
    cc_asgi_close(p, 0);
    cc_asgi_response_complete(c);
}

/* The app's task ended: exc is its exception (or NULL), res its result otherwise. */
static void cycle_finish(cc_asgi_cycle_t *c, PyObject *exc, PyObject *res) {
    cc_asgi_server_t *srv = c->proto->server;
    cc_asgi_state_t *st = srv->st;
    if (c->counted) {
        c->counted = 0;
        srv->active_requests--;
    }
    c->task_done = 1;
    if (exc) {
        if (!(c->disconnected && is_disconnect_error(st, exc)))
            log_exception(srv, "Exception in ASGI application\n", exc);
        finish_abnormally(c);
    } else if (res != Py_None) {
        cc_asgi_log(srv, st->s_error, "ASGI callable should return None, but returned '%s'.", res);
        c->keep_alive = 0;
        if (c->resp == CC_RESP_DONE)
            cc_asgi_close(c->proto, 0);
        else
            finish_abnormally(c);
    } else if (c->resp == CC_RESP_INIT && !c->disconnected) {
        cc_asgi_log(srv, st->s_error, "ASGI callable returned without starting response.", NULL);
        finish_abnormally(c);
    } else if (c->resp != CC_RESP_DONE && !c->disconnected) {
        cc_asgi_log(srv, st->s_error, "ASGI callable returned without completing response.", NULL);
        finish_abnormally(c);
    }
    Py_CLEAR(c->task);
    Py_CLEAR(c->scope);
}

static PyObject *cycle_task_done(cc_asgi_cycle_t *c, PyObject *task) {
    PyObject *args[1] = {task};
    PyObject *res = PyObject_VectorcallMethod(c->proto->server->st->s_result, args,
                                              1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    PyObject *exc = res ? NULL : cc_asgi_fetch_exception();
    cycle_finish(c, exc, res);
    Py_XDECREF(res);
    Py_XDECREF(exc);
    Py_RETURN_NONE;
}

static PyMethodDef receive_def = {"receive", (PyCFunction)cycle_receive, METH_NOARGS, NULL};
static PyMethodDef send_def = {"send", (PyCFunction)cycle_send, METH_O, NULL};
static PyMethodDef done_def = {"_task_done", (PyCFunction)cycle_task_done, METH_O, NULL};

/* ---- _AppRun: the app's coroutine as the task sees it ----------------------------------------
 * The task steps this object, which steps the app's coroutine and, when that ends, finishes the
 * request cycle right there: no done callback to register, schedule and run one loop iteration
 * later. An Exception the app raises is logged by cycle_finish() and ends the task normally (it
 * would otherwise be retrieved by nobody); CancelledError and other BaseExceptions still reach
 * the task so cancellation and KeyboardInterrupt behave as for a plain coroutine. */

typedef struct {
    PyObject_HEAD PyObject *coro;
    cc_asgi_cycle_t *cycle; /* until the coroutine ends */
} cc_apprun_t;

/* The coroutine ended with *result (PYGEN_RETURN) or the pending exception (PYGEN_ERROR). */
static PySendResult apprun_end(cc_apprun_t *r, PySendResult s, PyObject **result) {
    cc_asgi_cycle_t *c = r->cycle;
    r->cycle = NULL;
    Py_CLEAR(r->coro);
    if (!c)
        return s;
    if (s == PYGEN_RETURN) {
        cycle_finish(c, NULL, *result);
        Py_DECREF(c);
        return s;
    }
    PyObject *exc = cc_asgi_fetch_exception();
    cycle_finish(c, exc, NULL);
    Py_DECREF(c);
    if (exc && !PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_Exception)) {
        cc_err_give(exc); /* CancelledError, KeyboardInterrupt...: the task's business */
        *result = NULL;
        return PYGEN_ERROR;
    }
    Py_XDECREF(exc); /* logged: the task ends with None */
    *result = Py_NewRef(Py_None);
    return PYGEN_RETURN;
}

static PySendResult apprun_am_send(cc_apprun_t *r, PyObject *arg, PyObject **result) {
    if (!r->coro) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        *result = NULL;
        return PYGEN_ERROR;
    }
    PySendResult s = PyIter_Send(r->coro, arg, result);
    if (s == PYGEN_NEXT)
        return s;
    return apprun_end(r, s, result);
}

/* Python-level results of a step: the yielded value, or StopIteration(value), or the error. */
static PyObject *apprun_result(PySendResult s, PyObject *result) {
    if (s == PYGEN_NEXT)
        return result;
    if (s == PYGEN_RETURN) {
        if (result == Py_None)
            PyErr_SetNone(PyExc_StopIteration);
        else {
            PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, result);
            if (e) {
                PyErr_SetObject(PyExc_StopIteration, e);
                Py_DECREF(e);
            }
        }
        Py_DECREF(result);
    }
    return NULL;
}

static PyObject *apprun_send(cc_apprun_t *r, PyObject *arg) {
    PyObject *result = NULL;
    PySendResult s = apprun_am_send(r, arg, &result);
    return apprun_result(s, result);
}

static PyObject *apprun_next(cc_apprun_t *r) {
    return apprun_send(r, Py_None);
}

static PyObject *apprun_throw(cc_apprun_t *r, PyObject *const *args, Py_ssize_t nargs) {
    if (!r->coro) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return NULL;
    }
    cc_asgi_state_t *st = r->cycle ? r->cycle->proto->server->st : NULL;
    PyObject *stack[4] = {r->coro, NULL, NULL, NULL};
    if (nargs > 3)
        nargs = 3; /* the coroutine's own throw() reports a bad call */
    for (Py_ssize_t i = 0; i < nargs; i++)
        stack[1 + i] = args[i];
    PyObject *y =
        st ? PyObject_VectorcallMethod(st->s_throw, stack,
                                       (size_t)(1 + nargs) | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL)
           : PyObject_CallMethod(r->coro, "throw", "O", nargs ? args[0] : Py_None);
    if (y)
        return y;
    PyObject *result = NULL;
    PySendResult s = PYGEN_ERROR;
    if (PyErr_ExceptionMatches(PyExc_StopIteration)) { /* the coroutine returned */
        PyObject *stop = cc_err_take();
        result = PyObject_GetAttrString(stop, "value");
        Py_DECREF(stop);
        if (result)
            s = PYGEN_RETURN;
    }
    s = apprun_end(r, s, &result);
    return apprun_result(s, result);
}

static PyObject *apprun_close(cc_apprun_t *r, PyObject *unused) {
    (void)unused;
    if (!r->coro)
        Py_RETURN_NONE;
    PyObject *res = PyObject_CallMethod(r->coro, "close", NULL);
    if (!res)
        return NULL;
    Py_DECREF(res);
    Py_RETURN_NONE;
}

static PyObject *apprun_await(PyObject *self) {
    return Py_NewRef(self);
}

/* Debuggers and task reprs look at the coroutine's frame and code: the app's. */
static PyObject *apprun_getattro(cc_apprun_t *r, PyObject *name) {
    PyObject *v = PyObject_GenericGetAttr((PyObject *)r, name);
    if (v || !r->coro || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return v;
    PyErr_Clear();
    return PyObject_GetAttr(r->coro, name);
}

static int apprun_traverse(cc_apprun_t *r, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(r));
    Py_VISIT(r->coro);
    Py_VISIT(r->cycle);
    return 0;
}

static int apprun_clear(cc_apprun_t *r) {
    Py_CLEAR(r->coro);
    Py_CLEAR(r->cycle);
    return 0;
}

static void apprun_dealloc(cc_apprun_t *r) {
    PyTypeObject *tp = Py_TYPE(r);
    PyObject_GC_UnTrack(r);
    apprun_clear(r);
    tp->tp_free((PyObject *)r);
    Py_DECREF(tp);
}

static PyMethodDef apprun_methods[] = {
    {"send", (PyCFunction)apprun_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))apprun_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)apprun_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot apprun_slots[] = {
    {Py_am_await, apprun_await},
    {Py_am_send, apprun_am_send},
    {Py_tp_iter, apprun_await},
    {Py_tp_iternext, apprun_next},
    {Py_tp_getattro, apprun_getattro},
    {Py_tp_methods, apprun_methods},
    {Py_tp_dealloc, apprun_dealloc},
    {Py_tp_traverse, apprun_traverse},
    {Py_tp_clear, apprun_clear},
    {Py_tp_doc, "An ASGI app's coroutine, as its task steps it; ends the request when it ends."},
    {0, NULL},
};

PyType_Spec cc_asgi_apprun_spec = {
    .name = "cicada._core._AppRun",
    .basicsize = sizeof(cc_apprun_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = apprun_slots,
};

/* ---- starting a request ------------------------------------------------------------------- */

static PyObject *create_task(cc_asgi_server_t *srv, PyObject *coro, PyObject *name) {
    /* A fixed name: asyncio would otherwise format "Task-<n>" for every request. */
    PyObject *targs[3] = {srv->loop, coro, name};
    return PyObject_VectorcallMethod(srv->st->s_create_task, targs,
                                     2 | PY_VECTORCALL_ARGUMENTS_OFFSET, srv->st->kw_name);
}

PyObject *cc_asgi_spawn_app(cc_asgi_server_t *srv, PyObject *scope, PyObject *recv,
                            PyObject *send) {
    PyObject *args[3] = {scope, recv, send};
    PyObject *coro = PyObject_Vectorcall(srv->app, args, 3, NULL);
    if (!coro)
        return NULL;
    PyObject *task = create_task(srv, coro, srv->st->s_v_task_ws);
    Py_DECREF(coro);
    return task;
}

/* app(scope, receive, send) in a task that finishes c when the coroutine ends. Returns the
 * task, or NULL with the exception set (c is not finished then). *direct says whether the
 * _AppRun finishes c; if not (the app returned something other than a coroutine, which
 * create_task then judges), the caller adds a done callback. */
static PyObject *spawn_cycle(cc_asgi_cycle_t *c, PyObject *recv, PyObject *send, int *direct) {
    cc_asgi_server_t *srv = c->proto->server;
    PyObject *args[3] = {c->scope, recv, send};
    *direct = 0;
    PyObject *coro = PyObject_Vectorcall(srv->app, args, 3, NULL);
    if (!coro)
        return NULL;
    if (PyCoro_CheckExact(coro)) {
        cc_apprun_t *r = PyObject_GC_New(cc_apprun_t, srv->st->apprun_type);
        if (!r) {
            Py_DECREF(coro);
            return NULL;
        }
        r->coro = coro;
        r->cycle = (cc_asgi_cycle_t *)Py_NewRef(c);
        PyObject_GC_Track(r);
        coro = (PyObject *)r;
        *direct = 1;
    }
    PyObject *task = create_task(srv, coro, srv->st->s_v_task_http);
    if (!task && *direct) { /* never stepped: c is finished by the caller */
        cc_apprun_t *r = (cc_apprun_t *)coro;
        Py_CLEAR(r->cycle);
        *direct = 0;
    }
    Py_DECREF(coro);
    return task;
}

/* The connection's previous cycle, reset for a new request, when nothing but the connection
 * and its own receive/send refer to it any more: saves allocating the cycle and two callables.
 * Otherwise (the app kept receive or send, or the task is still alive) it is let go. */
static cc_asgi_cycle_t *take_spare(cc_asgi_proto_t *p) {
    cc_asgi_cycle_t *c = p->spare;
    if (!c)
        return NULL;
    p->spare = NULL;
#ifndef Py_GIL_DISABLED /* refcounts are not exact under free-threading */
    if (c->task_done && Py_REFCNT(c) == 3 && c->recv_fn && c->send_fn &&
        Py_REFCNT(c->recv_fn) == 1 && Py_REFCNT(c->send_fn) == 1 &&
        !((PyCFunctionObject *)c->recv_fn)->m_weakreflist &&
        !((PyCFunctionObject *)c->send_fn)->m_weakreflist && !c->scope && !c->task &&
        !c->recv_waiter && !c->send_waiter && c->file_fd < 0 && !c->counted) {
        PyObject *recv = c->recv_fn, *send = c->send_fn;
        cc_asgi_proto_t *proto = c->proto;
        memset((char *)c + sizeof(PyObject), 0, sizeof(*c) - sizeof(PyObject));
        c->proto = proto;
        c->recv_fn = recv;
        c->send_fn = send;
        c->file_fd = -1;
        c->sock_fd = -1;
        return c;
    }
#endif
    cc_asgi_cycle_discard(c);
    return NULL;
}

/* A cycle for p's next request: its previous one when reusable (take_spare), else a new one. */
static cc_asgi_cycle_t *new_cycle(cc_asgi_proto_t *p) {
    cc_asgi_cycle_t *c = take_spare(p);
    if (c)
        return c;
    c = PyObject_GC_New(cc_asgi_cycle_t, p->server->st->cycle_type);
    if (!c)
        return NULL;
    memset((char *)c + sizeof(PyObject), 0, sizeof(*c) - sizeof(PyObject));
    c->file_fd = -1;
    c->sock_fd = -1;
    c->proto = (cc_asgi_proto_t *)Py_NewRef(p);
    PyObject_GC_Track(c);
    return c;
}

/* What the cycle keeps of the parsed request head: body framing, version, keep-alive. */
static void take_request(cc_asgi_cycle_t *c, const cc_http_request_t *req) {
    c->body_kind = req->body;
    c->body_remaining = req->content_length;
    c->body_done = req->body == CC_HTTP_BODY_NONE ||
                   (req->body == CC_HTTP_BODY_LENGTH && req->content_length == 0);
    if (req->body == CC_HTTP_BODY_CHUNKED)
        cc_http_chunked_init(&c->chunked, c->proto->server->limits.max_head_size);
    c->version_minor = req->version_minor;
    c->keep_alive = req->keep_alive;
    c->expect_continue = req->expect_continue && !c->body_done;
    c->is_head = req->method_len == 4 && !memcmp(req->method, "HEAD", 4);
}

/* task.add_done_callback(c._task_done), for a task whose coroutine is not an _AppRun. */
static int watch_task(cc_asgi_cycle_t *c, PyObject *task) {
    PyObject *cb = PyCFunction_New(&done_def, (PyObject *)c);
    if (!cb)
        return -1;
    PyObject *dargs[2] = {task, cb};
    PyObject *r = PyObject_VectorcallMethod(c->proto->server->st->s_add_done_callback, dargs,
                                            2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(cb);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

int cc_asgi_cycle_start(cc_asgi_proto_t *p, const cc_http_request_t *req) {
    cc_asgi_server_t *srv = p->server;
    cc_asgi_state_t *st = srv->st;
    PyObject *recv = NULL, *send = NULL, *task = NULL;
    int simple = CC_ASGI_SIMPLE_CLOSE | (req->method_len == 4 && !memcmp(req->method, "HEAD", 4)
                                             ? CC_ASGI_SIMPLE_HEAD
                                             : 0);
    if (cc_asgi_over_concurrency(srv)) {
        cc_asgi_log(srv, st->s_warning, "Exceeded concurrency limit.", NULL);
        int rc = cc_asgi_send_simple(p, req->version_minor, 503, "Service Unavailable", simple);
        cc_asgi_close(p, 0);
        return rc;
    }
    cc_asgi_cycle_t *c = new_cycle(p);
    if (!c)
        return -1;
    p->served = 1;
    c->scope = cc_asgi_build_scope(p, req);
    if (!c->scope) {
        /* e.g. trusted_proxy raised: answer 500 and log it rather than drop the connection */
        PyObject *exc = cc_asgi_fetch_exception();
        log_exception(srv, "Exception while building the request scope\n", exc);
        Py_XDECREF(exc);
        cc_asgi_cycle_discard(c);
        int rc = cc_asgi_send_simple(p, req->version_minor, 500, "Internal Server Error", simple);
        cc_asgi_close(p, 0);
        return rc;
    }
    take_request(c, req);
    cc_buf_consume(&p->in, req->head_len);

    if (!c->recv_fn && !(c->recv_fn = PyCFunction_New(&receive_def, (PyObject *)c)))
        goto error;
    if (!c->send_fn && !(c->send_fn = PyCFunction_New(&send_def, (PyObject *)c)))
        goto error;
    recv = c->recv_fn;
    send = c->send_fn;
    p->cycle = (cc_asgi_cycle_t *)Py_NewRef(c);
    srv->request_count++;
    srv->active_requests++;
    c->counted = 1;
    int direct;
    task = spawn_cycle(c, recv, send, &direct);
    if (!task) { /* e.g. the app is a plain function: same handling as an app exception */
        PyObject *exc = cc_asgi_fetch_exception();
        cycle_finish(c, exc, NULL);
        Py_XDECREF(exc);
        goto done;
    }
    if (!c->task_done) /* a task factory may have run it to its end already */
        c->task = Py_NewRef(task);
    if (direct)
        goto done;
    if (watch_task(c, task) < 0)
        goto error;
done:
    Py_XDECREF(task);
    if (!p->lost && !p->spare)
        p->spare = c; /* our reference */
    else
        cc_asgi_cycle_discard(c);
    return 0;
error:
    Py_XDECREF(task);
    if (c->counted) {
        c->counted = 0;
        srv->active_requests--;
    }
    if (p->cycle == c)
        Py_CLEAR(p->cycle);
    cc_asgi_cycle_discard(c);
    return -1;
}

void cc_asgi_cycle_discard(cc_asgi_cycle_t *c) {
    Py_CLEAR(c->recv_fn);
    Py_CLEAR(c->send_fn);
    Py_DECREF(c);
}

/* ---- type ---------------------------------------------------------------------------------- */

static int cycle_traverse(cc_asgi_cycle_t *c, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(c));
    Py_VISIT(c->proto);
    Py_VISIT(c->scope);
    Py_VISIT(c->task);
    Py_VISIT(c->recv_waiter);
    Py_VISIT(c->send_waiter);
    Py_VISIT(c->recv_fn);
    Py_VISIT(c->send_fn);
    return 0;
}

static int cycle_clear(cc_asgi_cycle_t *c) {
    Py_CLEAR(c->scope);
    Py_CLEAR(c->task);
    Py_CLEAR(c->recv_waiter);
    Py_CLEAR(c->send_waiter);
    Py_CLEAR(c->recv_fn);
    Py_CLEAR(c->send_fn);
    Py_CLEAR(c->proto);
    return 0;
}

static void cycle_dealloc(cc_asgi_cycle_t *c) {
    PyTypeObject *tp = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    if (c->counted && c->proto) {
        c->proto->server->active_requests--;
        c->counted = 0;
    }
    if (c->file_fd >= 0)
        close(c->file_fd);
    cycle_clear(c);
    tp->tp_free((PyObject *)c);
    Py_DECREF(tp);
}

static PyType_Slot cycle_slots[] = {
    {Py_tp_dealloc, cycle_dealloc},
    {Py_tp_traverse, cycle_traverse},
    {Py_tp_clear, cycle_clear},
    {0, NULL},
};

PyType_Spec cc_asgi_cycle_spec = {
    .name = "cicada._core._RequestCycle",
    .basicsize = sizeof(cc_asgi_cycle_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = cycle_slots,
};
