/* HttpServer: the settings shared by every connection of one listening server, the connection
 * list and the counters. Calling it makes a new HttpProtocol (it is the protocol factory). It
 * does no I/O itself: shutdown/close_all only ask each connection's transport to close. */
#include "asgi/asgi.h"
#include "asgi/ws_asgi.h"

#include <stdlib.h>
#include <string.h>

/* Serialize (name, value) as "name: value\r\n" (name lowercased) onto out; RuntimeError-free
 * validation error as ValueError since this is configuration, not an app message. */
static int append_config_header(cc_buf_t *out, PyObject *name, PyObject *value) {
    if (!PyBytes_Check(name) || !PyBytes_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "default_headers must be (bytes, bytes) pairs");
        return -1;
    }
    const char *n = PyBytes_AS_STRING(name), *v = PyBytes_AS_STRING(value);
    size_t nl = (size_t)PyBytes_GET_SIZE(name), vl = (size_t)PyBytes_GET_SIZE(value);
    if (!cc_http_valid_header_name(n, nl)) {
        PyErr_Format(PyExc_ValueError, "invalid header name %R", name);
        return -1;
    }
    if (!cc_http_valid_header_value(v, vl)) {
        PyErr_Format(PyExc_ValueError, "invalid header value %R (CR, LF or NUL)", value);
        return -1;
    }
    if (cc_buf_reserve(out, nl + vl + 4) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    char *p = cc_buf_ptr(out) + out->len;
    for (size_t i = 0; i < nl; i++)
        p[i] = (char)((n[i] >= 'A' && n[i] <= 'Z') ? n[i] + 32 : n[i]);
    p[nl] = ':';
    p[nl + 1] = ' ';
    memcpy(p + nl + 2, v, vl);
    p[nl + 2 + vl] = '\r';
    p[nl + 3 + vl] = '\n';
    out->len += nl + vl + 4;
    return 0;
}

static char *take_buf(cc_buf_t *b, size_t *len) {
    *len = b->len;
    if (!b->len) {
        cc_buf_free(b);
        return NULL;
    }
    cc_buf_compact(b);
    char *p = b->data;
    cc_buf_init(b);
    return p;
}

static double opt_double(PyObject *o, double dflt) {
    if (!o || o == Py_None)
        return dflt;
    return PyFloat_AsDouble(o);
}

static Py_ssize_t opt_size(PyObject *o, Py_ssize_t dflt) {
    if (!o || o == Py_None)
        return dflt;
    return PyLong_AsSsize_t(o);
}

/* HttpServer's keyword arguments as parsed (borrowed; NULL when not given). */
typedef struct {
    PyObject *app, *loop, *root_path, *scheme, *server_header, *default_headers;
    PyObject *max_line, *max_head, *max_headers, *limit, *keep_alive, *head_timeout;
    PyObject *trusted, *access, *errlog, *state, *read_limit, *write_high, *write_low, *tls_info;
    int date_header, proxy_headers;
} server_args_t;

static int parse_args(PyObject *args, PyObject *kwds, server_args_t *a,
                      cc_asgi_ws_config_t *ws_cfg) {
    static char *kwlist[] = {"app",
                             "loop",
                             "root_path",
                             "scheme",
                             "server_header",
                             "date_header",
                             "default_headers",
                             "max_request_line",
                             "max_head_size",
                             "max_headers",
                             "limit_concurrency",
                             "timeout_keep_alive",
                             "timeout_request_head",
                             "proxy_headers",
                             "trusted_proxy",
                             "access_logger",
                             "error_logger",
                             "state",
                             "read_buffer_limit",
                             "write_high_water",
                             "write_low_water",
                             "tls_info",
                             NULL};
    memset(a, 0, sizeof(*a));
    a->date_header = 1;
    PyObject *rest = NULL; /* the ws* keywords are ws_protocol.c's */
    if (cc_asgi_ws_config_from_kwargs(ws_cfg, kwds, &rest) < 0)
        return -1;
    int parsed = PyArg_ParseTupleAndKeywords(
        args, rest, "OO|$UUOpOOOOOOOpOOOOOOOO", kwlist, &a->app, &a->loop, &a->root_path,
        &a->scheme, &a->server_header, &a->date_header, &a->default_headers, &a->max_line,
        &a->max_head, &a->max_headers, &a->limit, &a->keep_alive, &a->head_timeout,
        &a->proxy_headers, &a->trusted, &a->access, &a->errlog, &a->state, &a->read_limit,
        &a->write_high, &a->write_low, &a->tls_info);
    Py_XDECREF(rest);
    return parsed ? 0 : -1;
}

/* *slot = a new reference to o unless o is absent or None; o must be callable. */
static int take_callable(PyObject **slot, PyObject *o, const char *what) {
    if (!o || o == Py_None)
        return 0;
    if (!PyCallable_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be callable or None", what);
        return -1;
    }
    *slot = Py_NewRef(o);
    return 0;
}

static int set_references(cc_asgi_server_t *s, const server_args_t *a) {
    s->app = Py_NewRef(a->app);
    s->loop = Py_NewRef(a->loop);
    s->root_path = a->root_path ? Py_NewRef(a->root_path) : PyUnicode_FromString("");
    if (!s->root_path)
        return -1;
    s->root_path_bytes = PyUnicode_AsUTF8String(s->root_path);
    if (!s->root_path_bytes)
        return -1;
    s->scheme = a->scheme ? Py_NewRef(a->scheme) : Py_NewRef(s->st->s_v_http);
    if (a->access && a->access != Py_None)
        s->access_logger = Py_NewRef(a->access);
    if (a->errlog && a->errlog != Py_None)
        s->error_logger = Py_NewRef(a->errlog);
    if (a->state && a->state != Py_None) {
        if (!PyDict_Check(a->state)) {
            PyErr_SetString(PyExc_TypeError, "state must be a dict or None");
            return -1;
        }
        s->state = Py_NewRef(a->state);
    }
    if (take_callable(&s->trusted_proxy, a->trusted, "trusted_proxy") < 0 ||
        take_callable(&s->tls_info, a->tls_info, "tls_info") < 0)
        return -1;
    s->access_fmt = PyUnicode_FromString("%s - \"%s %s HTTP/%s\" %d");
    return s->access_fmt ? 0 : -1;
}

static int set_limits(cc_asgi_server_t *s, const server_args_t *a) {
    s->date_header = a->date_header ? 1 : 0;
    s->proxy_headers = a->proxy_headers ? 1 : 0;
    cc_http_limits_t *lim = &s->limits;
    cc_http_limits_default(lim);
    lim->max_request_line = (size_t)opt_size(a->max_line, (Py_ssize_t)lim->max_request_line);
    lim->max_head_size = (size_t)opt_size(a->max_head, (Py_ssize_t)lim->max_head_size);
    lim->max_headers = (size_t)opt_size(a->max_headers, (Py_ssize_t)lim->max_headers);
    s->limit_concurrency = opt_size(a->limit, -1);
    s->timeout_keep_alive = opt_double(a->keep_alive, CC_ASGI_DEFAULT_KEEP_ALIVE);
    s->timeout_request_head = opt_double(a->head_timeout, CC_ASGI_DEFAULT_HEAD_TIMEOUT);
    s->read_buffer_limit = (size_t)opt_size(a->read_limit, CC_ASGI_DEFAULT_READ_LIMIT);
    s->write_high = opt_size(a->write_high, CC_ASGI_DEFAULT_WRITE_HIGH);
    s->write_low = opt_size(a->write_low, CC_ASGI_DEFAULT_WRITE_LOW);
    if (PyErr_Occurred())
        return -1;
    if ((Py_ssize_t)lim->max_request_line <= 0 || (Py_ssize_t)lim->max_head_size <= 0 ||
        (Py_ssize_t)lim->max_headers <= 0 || (Py_ssize_t)s->read_buffer_limit <= 0 ||
        s->write_high < 0 || s->write_low < 0 || s->write_low > s->write_high) {
        PyErr_SetString(PyExc_ValueError, "HttpServer limits must be positive (and low <= high)");
        return -1;
    }
    /* The head must fit in the buffer before reading pauses, or a large head could never be
     * parsed. */
    if (s->read_buffer_limit < lim->max_head_size + 1)
        s->read_buffer_limit = lim->max_head_size + 1;
    s->hdrs = malloc(sizeof(cc_http_header_t) * lim->max_headers);
    if (!s->hdrs) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int append_default_headers(cc_buf_t *out, PyObject *default_headers) {
    PyObject *seq = PySequence_Fast(default_headers, "default_headers must be a sequence");
    if (!seq)
        return -1;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(seq, i);
        if ((!PyTuple_Check(pair) && !PyList_Check(pair)) || PySequence_Fast_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "default_headers must be (bytes, bytes) pairs");
            goto error;
        }
        if (append_config_header(out, PySequence_Fast_GET_ITEM(pair, 0),
                                 PySequence_Fast_GET_ITEM(pair, 1)) < 0)
            goto error;
    }
    Py_DECREF(seq);
    return 0;
error:
    Py_DECREF(seq);
    return -1;
}

/* The Server header (ours unless server_header is given; none when it is None) and the
 * configured default headers, serialized once for every response. */
static int build_fixed_headers(cc_asgi_server_t *s, const server_args_t *a) {
    cc_buf_t tmp;
    cc_buf_init(&tmp);
    if (a->server_header && a->server_header != Py_None) {
        PyObject *name = PyBytes_FromString("server");
        if (!name)
            goto error;
        int rc = append_config_header(&tmp, name, a->server_header);
        Py_DECREF(name);
        if (rc < 0)
            goto error;
        s->server_header = take_buf(&tmp, &s->server_header_len);
    } else if (!a->server_header) {
        if (cc_buf_append(&tmp, "server: cicada\r\n", 16) < 0) {
            PyErr_NoMemory();
            goto error;
        }
        s->server_header = take_buf(&tmp, &s->server_header_len);
    }
    if (a->default_headers && a->default_headers != Py_None) {
        if (append_default_headers(&tmp, a->default_headers) < 0)
            goto error;
        s->extra_headers = take_buf(&tmp, &s->extra_headers_len);
    }
    return 0;
error:
    cc_buf_free(&tmp);
    return -1;
}

static PyObject *server_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    server_args_t a;
    cc_asgi_ws_config_t ws_cfg;
    if (parse_args(args, kwds, &a, &ws_cfg) < 0)
        return NULL;
    cc_state_t *mst = cc_state_from_type(type);
    if (!mst)
        return NULL;
    cc_asgi_server_t *s = (cc_asgi_server_t *)type->tp_alloc(type, 0);
    if (!s)
        return NULL;
    s->module = Py_XNewRef(PyType_GetModule(type));
    s->st = &mst->asgi;
    s->ws_cfg = ws_cfg;
    s->ws_upgrade = ws_cfg.enabled ? cc_asgi_ws_start : NULL;
    if (set_references(s, &a) < 0 || set_limits(s, &a) < 0 || build_fixed_headers(s, &a) < 0 ||
        cc_asgi_scope_template(s) < 0) {
        Py_DECREF(s);
        return NULL;
    }
    return (PyObject *)s;
}

static int server_traverse(cc_asgi_server_t *s, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(s));
    Py_VISIT(s->module);
    Py_VISIT(s->app);
    Py_VISIT(s->loop);
    Py_VISIT(s->root_path);
    Py_VISIT(s->root_path_bytes);
    Py_VISIT(s->scheme);
    Py_VISIT(s->access_logger);
    Py_VISIT(s->error_logger);
    Py_VISIT(s->state);
    Py_VISIT(s->trusted_proxy);
    Py_VISIT(s->tls_info);
    Py_VISIT(s->scope_template);
    Py_VISIT(s->extensions);
    Py_VISIT(s->access_fmt);
    return 0;
}

static int server_clear(cc_asgi_server_t *s) {
    Py_CLEAR(s->app);
    Py_CLEAR(s->loop);
    Py_CLEAR(s->root_path);
    Py_CLEAR(s->root_path_bytes);
    Py_CLEAR(s->scheme);
    Py_CLEAR(s->access_logger);
    Py_CLEAR(s->error_logger);
    Py_CLEAR(s->state);
    Py_CLEAR(s->trusted_proxy);
    Py_CLEAR(s->tls_info);
    Py_CLEAR(s->scope_template);
    Py_CLEAR(s->extensions);
    Py_CLEAR(s->access_fmt);
    return 0;
}

static void server_dealloc(cc_asgi_server_t *s) {
    PyTypeObject *tp = Py_TYPE(s);
    PyObject_GC_UnTrack(s);
    server_clear(s);
    Py_CLEAR(s->module);
    free(s->extra_headers);
    free(s->server_header);
    free(s->hdrs);
    cc_buf_free(&s->out);
    tp->tp_free((PyObject *)s);
    Py_DECREF(tp);
}

static PyObject *server_call(cc_asgi_server_t *s, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "HttpServer() takes no arguments");
        return NULL;
    }
    return cc_asgi_protocol_new(s);
}

/* A strong-ref snapshot of the connections: closing one may unlink it (or others). */
static PyObject *snapshot(cc_asgi_server_t *s) {
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    for (cc_asgi_proto_t *p = s->conns; p; p = p->next) {
        if (PyList_Append(list, (PyObject *)p) < 0) {
            Py_DECREF(list);
            return NULL;
        }
    }
    return list;
}

static PyObject *server_shutdown(cc_asgi_server_t *s, PyObject *unused) {
    (void)unused;
    s->shutting_down = 1;
    PyObject *list = snapshot(s);
    if (!list)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        cc_asgi_proto_t *p = (cc_asgi_proto_t *)PyList_GET_ITEM(list, i);
        /* Busy: finish the in-flight response and the requests already received after it,
         * reading nothing new; then close. Idle: close now, unless no request has started yet:
         * accepted just before the listener closed, its first request may still be on the way,
         * so it is served (then closed) if it comes before the request-head timeout. */
        if (p->ws) {
            cc_asgi_ws_shutdown(p->ws);
        } else if (p->cycle && p->cycle->resp != CC_RESP_DONE) {
            if (cc_asgi_update_reading(p) < 0) {
                Py_DECREF(list);
                return NULL;
            }
        } else if (p->served || p->eof) {
            cc_asgi_close(p, 0);
        }
    }
    Py_DECREF(list);
    Py_RETURN_NONE;
}

static PyObject *server_close_all(cc_asgi_server_t *s, PyObject *unused) {
    (void)unused;
    s->shutting_down = 1;
    PyObject *list = snapshot(s);
    if (!list)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++)
        cc_asgi_close((cc_asgi_proto_t *)PyList_GET_ITEM(list, i), 1);
    Py_DECREF(list);
    Py_RETURN_NONE;
}

static PyObject *get_connection_count(cc_asgi_server_t *s, void *c) {
    (void)c;
    return PyLong_FromSsize_t(s->connection_count);
}
static PyObject *get_active_requests(cc_asgi_server_t *s, void *c) {
    (void)c;
    return PyLong_FromSsize_t(s->active_requests);
}
static PyObject *get_request_count(cc_asgi_server_t *s, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(s->request_count);
}

static PyMethodDef server_methods[] = {
    {"shutdown", (PyCFunction)server_shutdown, METH_NOARGS,
     "Graceful stop: idle connections close now; busy ones finish the in-flight request and "
     "any already received (pipelined) after it, read nothing new, then close."},
    {"close_all", (PyCFunction)server_close_all, METH_NOARGS, "Abort every connection."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef server_getset[] = {
    {"connection_count", (getter)get_connection_count, NULL, "open connections", NULL},
    {"active_requests", (getter)get_active_requests, NULL, "app tasks still running", NULL},
    {"request_count", (getter)get_request_count, NULL, "requests started so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot server_slots[] = {
    {Py_tp_new, server_new},
    {Py_tp_dealloc, server_dealloc},
    {Py_tp_traverse, server_traverse},
    {Py_tp_clear, server_clear},
    {Py_tp_call, server_call},
    {Py_tp_methods, server_methods},
    {Py_tp_getset, server_getset},
    {Py_tp_doc, "HttpServer(app, loop, **settings): ASGI HTTP/1.1 server; call it for a protocol."},
    {0, NULL},
};

PyType_Spec cc_asgi_server_spec = {
    .name = "cicada._core.HttpServer",
    .basicsize = sizeof(cc_asgi_server_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = server_slots,
};
