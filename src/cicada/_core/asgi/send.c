/* The ASGI send() side: validates the app's response messages (a clear RuntimeError for anything
 * malformed), serializes status line + headers + body framing, coalesces a whole small response
 * into one transport write, and streams files for http.response.pathsend. It never reads the
 * request; cycle.c owns that. */
#include "asgi/asgi.h"

#include "core/date.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

/* Largest single sendfile() call. */
#define CC_ASGI_SENDFILE_MAX (1 << 30)

/* The app's "type" value against one of our interned names. Its literal is usually not the same
 * object (dotted strings are not interned), so compare the characters directly. */
static int type_is(PyObject *t, PyObject *want) {
    if (t == want)
        return 1;
    if (!PyUnicode_Check(t))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(want);
    int kind = PyUnicode_KIND(want);
    return PyUnicode_GET_LENGTH(t) == n && PyUnicode_KIND(t) == kind &&
           memcmp(PyUnicode_DATA(t), PyUnicode_DATA(want), (size_t)n * (size_t)kind) == 0;
}

static int is_no_body_status(int status) {
    return status < 200 || status == 204 || status == 304;
}

/* Borrowed item or NULL (and no exception) when absent. */
static PyObject *get(PyObject *d, PyObject *key) {
    return PyDict_GetItemWithError(d, key);
}

static int out_append(cc_buf_t *o, const void *p, size_t n) {
    if (cc_buf_append(o, p, n) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

#define OUT_LIT(o, s) out_append((o), (s), sizeof(s) - 1)

/* Write the scratch buffer as one bytes object and empty it. */
static int flush_out(cc_asgi_proto_t *p, cc_buf_t *o) {
    int rc = cc_asgi_write(p, cc_buf_ptr(o), o->len);
    o->start = o->len = 0;
    return rc;
}

static PyObject *wait_or_ready(cc_asgi_proto_t *p) {
    cc_asgi_state_t *st = p->server->st;
    if (p->writing_paused && !p->lost)
        return cc_asgi_drain_waiter(p);
    return Py_NewRef(st->ready_none);
}

int cc_asgi_access_log(cc_asgi_cycle_t *c, int status) {
    cc_asgi_server_t *srv = c->proto->server;
    if (!srv->access_logger || !c->scope)
        return 0;
    cc_asgi_state_t *st = srv->st;
    PyObject *client = NULL, *path = NULL, *st_obj = NULL;
    PyObject *method = get(c->scope, st->s_method);
    PyObject *raw = get(c->scope, st->s_raw_path);
    PyObject *qs = get(c->scope, st->s_query_string);
    PyObject *ver = get(c->scope, st->s_http_version);
    if (!method || !raw || !qs || !ver || !PyBytes_Check(raw) || !PyBytes_Check(qs))
        goto done;
    PyObject *cl = c->proto->client;
    if (PyTuple_Check(cl))
        client = PyUnicode_FromFormat("%S:%S", PyTuple_GET_ITEM(cl, 0), PyTuple_GET_ITEM(cl, 1));
    else
        client = PyUnicode_FromString("");
    if (!client)
        goto done;
    path = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), NULL);
    if (path && PyBytes_GET_SIZE(qs)) {
        PyObject *qstr = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(qs), PyBytes_GET_SIZE(qs), NULL);
        PyObject *full = qstr ? PyUnicode_FromFormat("%U?%U", path, qstr) : NULL;
        Py_XDECREF(qstr);
        Py_SETREF(path, full);
    }
    st_obj = PyLong_FromLong(status);
    if (!path || !st_obj)
        goto done;
    PyObject *args[7] = {srv->access_logger, srv->access_fmt, client, method, path, ver, st_obj};
    PyObject *r =
        PyObject_VectorcallMethod(st->s_info, args, 7 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_XDECREF(r);
done:
    Py_XDECREF(client);
    Py_XDECREF(path);
    Py_XDECREF(st_obj);
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(srv->access_logger);
    return 0;
}

/* Date and Server (unless the app set them) and the configured default headers. */
static int append_server_headers(cc_asgi_server_t *srv, cc_buf_t *o, int has_date, int has_server) {
    if (srv->date_header && !has_date) {
        if (OUT_LIT(o, "date: ") < 0 || out_append(o, cc_date_now(), CC_DATE_LEN) < 0 ||
            OUT_LIT(o, "\r\n") < 0)
            return -1;
    }
    if (srv->server_header && !has_server &&
        out_append(o, srv->server_header, srv->server_header_len) < 0)
        return -1;
    if (srv->extra_headers && out_append(o, srv->extra_headers, srv->extra_headers_len) < 0)
        return -1;
    return 0;
}

int cc_asgi_send_simple(cc_asgi_proto_t *p, int minor, int status, const char *body, int flags) {
    cc_asgi_server_t *srv = p->server;
    cc_buf_t *o = &srv->out;
    o->start = o->len = 0;
    size_t bl = strlen(body);
    char line[CC_HTTP_STATUS_LINE_MAX], num[24];
    size_t ll = cc_http_status_line(line, minor, status);
    int nl = snprintf(num, sizeof(num), "%zu", bl);
    if (out_append(o, line, ll) < 0 ||
        OUT_LIT(o, "content-type: text/plain; charset=utf-8\r\ncontent-length: ") < 0 ||
        out_append(o, num, (size_t)nl) < 0 || OUT_LIT(o, "\r\n") < 0 ||
        ((flags & CC_ASGI_SIMPLE_CLOSE) && OUT_LIT(o, "connection: close\r\n") < 0) ||
        append_server_headers(srv, o, 0, 0) < 0 || OUT_LIT(o, "\r\n") < 0 ||
        /* RFC 9110 §9.3.2: no content in a response to HEAD, only its length */
        (!(flags & CC_ASGI_SIMPLE_HEAD) && out_append(o, body, bl) < 0))
        return -1;
    return flush_out(p, o);
}

/* ---- http.response.start ------------------------------------------------------------------- */

static int parse_content_length(const char *v, size_t n, uint64_t *out) {
    if (n == 0 || n > 19)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 0;
}

/* A Transfer-Encoding value whose last coding is chunked, and its only chunked. */
static int chunked_last(const char *v, size_t vl) {
    const char *pos = v, *item;
    size_t n;
    int last = 0;
    while (cc_http_list_next(&pos, v + vl, &item, &n)) {
        if (last)
            return 0; /* something after chunked, or chunked twice */
        last = cc_http_name_eq(item, n, "chunked", 7);
    }
    return last;
}

/* Validate one header list (response headers or trailers); count its serialized size. */
static PyObject *check_headers(cc_asgi_cycle_t *c, PyObject *headers, int response, size_t *bytes) {
    /* Not iterable at all: say what headers must be. An iterable that fails while it is read
     * (a generator raising) keeps its own exception: it names the real problem. */
    if (!PySequence_Check(headers) && !Py_TYPE(headers)->tp_iter) {
        PyErr_Format(PyExc_RuntimeError,
                     "ASGI headers must be an iterable of [name, value] byte pairs, got %s",
                     Py_TYPE(headers)->tp_name);
        return NULL;
    }
    PyObject *fast = PySequence_Fast(headers, "ASGI headers must be iterable");
    if (!fast)
        return NULL;
    size_t total = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        if ((!PyTuple_Check(item) && !PyList_Check(item)) || PySequence_Fast_GET_SIZE(item) != 2) {
            PyErr_Format(PyExc_RuntimeError,
                         "Invalid HTTP header %R: each header must be a [name, value] pair", item);
            goto error;
        }
        PyObject *name = PySequence_Fast_GET_ITEM(item, 0);
        PyObject *value = PySequence_Fast_GET_ITEM(item, 1);
        if (!PyBytes_Check(name) || !PyBytes_Check(value)) {
            PyErr_Format(PyExc_RuntimeError,
                         "Invalid HTTP header %R: header names and values must be bytes", item);
            goto error;
        }
        const char *n = PyBytes_AS_STRING(name), *v = PyBytes_AS_STRING(value);
        size_t nl = (size_t)PyBytes_GET_SIZE(name), vl = (size_t)PyBytes_GET_SIZE(value);
        if (!cc_http_valid_header_name(n, nl)) {
            PyErr_Format(PyExc_RuntimeError, "Invalid HTTP header name %R.", name);
            goto error;
        }
        if (!cc_http_valid_header_value(v, vl)) {
            PyErr_Format(PyExc_RuntimeError,
                         "Invalid HTTP header value %R: CR, LF and NUL are not allowed.", value);
            goto error;
        }
        total += nl + vl + 4;
        if (!response)
            continue;
        if (cc_http_name_eq(n, nl, "content-length", 14)) {
            uint64_t cl;
            if (parse_content_length(v, vl, &cl) < 0) {
                PyErr_Format(PyExc_RuntimeError, "Invalid Content-Length header value %R.", value);
                goto error;
            }
            if (c->has_cl && cl != c->content_length) {
                PyErr_SetString(PyExc_RuntimeError, "Conflicting Content-Length headers.");
                goto error;
            }
            c->has_cl = 1;
            c->content_length = cl;
        } else if (cc_http_name_eq(n, nl, "transfer-encoding", 17)) {
            /* RFC 9112 §6.1: chunked once, and last, or the client reads until the close. */
            if (c->chunked_out || !chunked_last(v, vl)) {
                PyErr_Format(PyExc_RuntimeError,
                             "Unsupported Transfer-Encoding %R: chunked must be the last "
                             "coding, and appear once.",
                             value);
                goto error;
            }
            c->chunked_out = 1;
        } else if (cc_http_name_eq(n, nl, "connection", 10)) {
            if (cc_http_list_has_token(v, vl, "close", 5))
                c->app_close = 1;
        } else if (cc_http_name_eq(n, nl, "date", 4)) {
            c->has_date = 1;
        } else if (cc_http_name_eq(n, nl, "server", 6)) {
            c->has_server = 1;
        }
    }
    *bytes = total;
    return fast;
error:
    Py_DECREF(fast);
    return NULL;
}

/* Serialize the header lines check_headers() validated (names lowercased) into w, which has
 * room for the `bytes` it counted. Runs no Python code, so the list can't change under it. */
static void write_headers(char *w, PyObject *fast) {
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        PyObject *name = PySequence_Fast_GET_ITEM(item, 0);
        PyObject *value = PySequence_Fast_GET_ITEM(item, 1);
        size_t nl = (size_t)PyBytes_GET_SIZE(name), vl = (size_t)PyBytes_GET_SIZE(value);
        const char *n = PyBytes_AS_STRING(name);
        for (size_t k = 0; k < nl; k++)
            w[k] = (char)((n[k] >= 'A' && n[k] <= 'Z') ? n[k] + 32 : n[k]);
        w[nl] = ':';
        w[nl + 1] = ' ';
        memcpy(w + nl + 2, PyBytes_AS_STRING(value), vl);
        w[nl + 2 + vl] = '\r';
        w[nl + 3 + vl] = '\n';
        w += nl + vl + 4;
    }
}

static int append_headers(cc_buf_t *o, PyObject *fast, size_t bytes) {
    if (cc_buf_reserve(o, bytes) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    write_headers(cc_buf_ptr(o) + o->len, fast);
    o->len += bytes;
    return 0;
}

static int reserve_head(cc_asgi_proto_t *p, size_t bytes) {
    if (bytes <= p->head_cap)
        return 0;
    char *head = PyMem_Realloc(p->head, bytes);
    if (!head) {
        PyErr_NoMemory();
        return -1;
    }
    p->head = head;
    p->head_cap = bytes;
    return 0;
}

static void reset_start(cc_asgi_cycle_t *c) {
    c->has_cl = c->chunked_out = c->app_close = c->has_date = c->has_server = 0;
}

static PyObject *handle_start(cc_asgi_cycle_t *c, PyObject *msg) {
    cc_asgi_state_t *st = c->proto->server->st;
    PyObject *status = get(msg, st->s_status);
    if (!status) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "http.response.start message has no 'status'.");
        return NULL;
    }
    long v = -1;
    if (PyLong_Check(status) && !PyBool_Check(status))
        v = PyLong_AsLong(status);
    /* RFC 9110 §15: valid codes are 100..599. A 1xx is interim, never the response: sent as
     * one, it would leave the client waiting for the real response. */
    if (v < 200 || v > 599) {
        PyErr_Clear();
        PyErr_Format(PyExc_RuntimeError,
                     "Invalid HTTP status code %R in http.response.start: it must be an int "
                     "from 200 to 599.",
                     status);
        return NULL;
    }
    /* 'trailers' first: its __bool__ is app code, which could change the headers once they
     * are checked. */
    PyObject *tr = get(msg, st->s_trailers);
    int trailers = tr ? PyObject_IsTrue(tr) : 0;
    if (trailers < 0 || PyErr_Occurred())
        return NULL;
    PyObject *headers = get(msg, st->s_headers);
    if (!headers && PyErr_Occurred())
        return NULL;
    /* Our own reference: reading a generator runs app code, which may drop the message's. */
    headers = headers && headers != Py_None ? Py_NewRef(headers) : PyTuple_New(0);
    if (!headers)
        return NULL;
    size_t bytes = 0;
    PyObject *fast = check_headers(c, headers, 1, &bytes);
    Py_DECREF(headers);
    if (!fast) {
        reset_start(c);
        return NULL;
    }
    if (c->has_cl && c->chunked_out) {
        Py_DECREF(fast);
        reset_start(c);
        PyErr_SetString(PyExc_RuntimeError,
                        "Response sets both Content-Length and Transfer-Encoding.");
        return NULL;
    }
    /* The head goes out with the first body message; the app may change (or reuse) its header
     * list before then, so keep the lines checked now, not the list. */
    if (reserve_head(c->proto, bytes) < 0) {
        Py_DECREF(fast);
        reset_start(c);
        return NULL;
    }
    write_headers(c->proto->head, fast);
    Py_DECREF(fast);
    c->trailers = trailers ? 1 : 0;
    /* The client waits for 100 Continue before sending the body; it will never come, so this
     * connection can't be reused: say so in the head. */
    if (c->expect_continue && !c->body_done)
        c->keep_alive = 0;
    c->head_bytes = bytes;
    c->status = (int)v;
    c->resp = CC_RESP_STARTED;
    c->expect_continue = 0;
    if (cc_asgi_access_log(c, c->status) < 0)
        return NULL;
    return Py_NewRef(st->ready_none);
}

/* Start the response head in the scratch buffer; decides the body framing. known_len is the
 * whole body's length when this message carries all of it; `exact` says it is the real
 * representation length even for HEAD (a file's size). */
static int begin_head(cc_asgi_cycle_t *c, cc_buf_t *o, int64_t known_len, int more, int exact) {
    cc_asgi_server_t *srv = c->proto->server;
    int no_body = c->is_head || is_no_body_status(c->status);
    char cl_line[48];
    size_t cl_len = 0;
    const char *framing = NULL;
    if (exact && c->is_head && !c->has_cl && !is_no_body_status(c->status)) {
        cl_len = (size_t)snprintf(cl_line, sizeof(cl_line), "content-length: %lld\r\n",
                                  (long long)known_len);
    } else if (!c->has_cl && !c->chunked_out && !no_body) {
        if (known_len >= 0 && !more && !c->trailers) {
            cl_len = (size_t)snprintf(cl_line, sizeof(cl_line), "content-length: %lld\r\n",
                                      (long long)known_len);
            c->has_cl = 1;
            c->content_length = (uint64_t)known_len;
        } else if (c->version_minor >= 1) {
            framing = "transfer-encoding: chunked\r\n";
            c->chunked_out = 1;
        } else {
            c->close_delimited = 1;
        }
    }
    /* Shutting down: keep the connection only for requests already received (pipelined). An
     * unread request body that has not all arrived is not waited for when the response ends
     * (cc_asgi_response_complete): the head says the connection closes (RFC 9110 §10.1.1). */
    int keep = c->keep_alive && !c->app_close && !c->close_delimited &&
               !(srv->shutting_down && !cc_asgi_next_request_buffered(c->proto)) &&
               cc_asgi_cycle_body_buffered(c) == 1;
    c->keep_alive = keep;
    o->start = o->len = 0;
    char line[CC_HTTP_STATUS_LINE_MAX];
    size_t ll = cc_http_status_line(line, c->version_minor, c->status);
    if (cc_buf_reserve(o, ll + c->head_bytes + 256) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (out_append(o, line, ll) < 0 ||
        out_append(o, c->proto->head, c->head_bytes) < 0 ||
        append_server_headers(srv, o, c->has_date, c->has_server) < 0)
        return -1;
    if (cl_len && out_append(o, cl_line, cl_len) < 0)
        return -1;
    if (framing && out_append(o, framing, strlen(framing)) < 0)
        return -1;
    if (!keep && !c->app_close && OUT_LIT(o, "connection: close\r\n") < 0)
        return -1;
    if (keep && c->version_minor == 0 && OUT_LIT(o, "connection: keep-alive\r\n") < 0)
        return -1;
    if (OUT_LIT(o, "\r\n") < 0)
        return -1;
    c->resp = CC_RESP_BODY;
    return 0;
}

/* ---- http.response.body -------------------------------------------------------------------- */

static PyObject *body_bytes(cc_asgi_cycle_t *c, PyObject *msg, PyObject *body);

static PyObject *handle_body(cc_asgi_cycle_t *c, PyObject *msg) {
    cc_asgi_state_t *st = c->proto->server->st;
    PyObject *body = get(msg, st->s_body);
    if (!body && PyErr_Occurred())
        return NULL;
    PyObject *owned = NULL; /* body_bytes() runs app code (more_body's __bool__): hold it */
    if (body && PyBytes_Check(body)) {
        owned = Py_NewRef(body);
    } else if (body) {
        /* bytearray/memoryview are accepted as uvicorn does (anything transport.write takes). */
        if (!PyObject_CheckBuffer(body) || PyUnicode_Check(body)) {
            PyErr_Format(PyExc_RuntimeError, "http.response.body 'body' must be bytes, got %s.",
                         Py_TYPE(body)->tp_name);
            return NULL;
        }
        owned = PyBytes_FromObject(body);
        if (!owned)
            return NULL;
    }
    PyObject *r = body_bytes(c, msg, owned);
    Py_XDECREF(owned);
    return r;
}

/* Content-Length checks before anything is written, so an error leaves the stream intact. */
static int check_content_length(cc_asgi_cycle_t *c, size_t bl, int more) {
    if (c->body_sent + bl > c->content_length) {
        PyErr_SetString(PyExc_RuntimeError, "Response content longer than Content-Length");
        return -1;
    }
    if (!more && c->body_sent + bl != c->content_length) {
        PyErr_SetString(PyExc_RuntimeError, "Response content shorter than Content-Length");
        return -1;
    }
    return 0;
}

/* A large body is not copied: what o holds before it (the head, a chunk-size line) and after it
 * (chunk and stream ends) go out with it in one writelines. */
static int write_around(cc_asgi_proto_t *p, cc_buf_t *o, size_t split, PyObject *body) {
    PyObject *parts[3];
    int n = 0, rc = -1;
    if (split && !(parts[n++] = PyBytes_FromStringAndSize(cc_buf_ptr(o), (Py_ssize_t)split)))
        goto done;
    parts[n++] = Py_NewRef(body);
    Py_ssize_t tail = (Py_ssize_t)(o->len - split);
    if (tail && !(parts[n++] = PyBytes_FromStringAndSize(cc_buf_ptr(o) + split, tail)))
        goto done;
    o->start = o->len = 0; /* the shared buffer is free again before any write can re-enter */
    rc = cc_asgi_writelines(p, parts, n);
done:
    o->start = o->len = 0;
    for (int i = 0; i < n; i++)
        Py_XDECREF(parts[i]);
    return rc;
}

static PyObject *body_bytes(cc_asgi_cycle_t *c, PyObject *msg, PyObject *body) {
    cc_asgi_proto_t *p = c->proto;
    cc_buf_t *o = &p->server->out;
    PyObject *mb = get(msg, p->server->st->s_more_body);
    int more = mb ? PyObject_IsTrue(mb) : 0;
    if (more < 0 || PyErr_Occurred())
        return NULL;
    size_t bl = body ? (size_t)PyBytes_GET_SIZE(body) : 0;
    int no_body = c->is_head || is_no_body_status(c->status);
    if (!no_body && c->has_cl && check_content_length(c, bl, more) < 0)
        return NULL;
    if (c->resp == CC_RESP_STARTED) {
        if (begin_head(c, o, (int64_t)bl, more, 0) < 0)
            return NULL;
    } else {
        o->start = o->len = 0;
    }
    size_t split = 0; /* a big body goes between o[:split] and o[split:] */
    int big = !no_body && bl > CC_ASGI_COALESCE_MAX;
    if (!no_body && bl) {
        if (c->chunked_out) {
            char sz[24];
            if (out_append(o, sz, cc_http_chunk_size_line(sz, bl)) < 0)
                return NULL;
        }
        if (big)
            split = o->len;
        else if (out_append(o, PyBytes_AS_STRING(body), bl) < 0)
            return NULL;
        if (c->chunked_out && OUT_LIT(o, "\r\n") < 0)
            return NULL;
        c->body_sent += bl;
    }
    if (!more && !no_body && c->chunked_out &&
        (c->trailers ? OUT_LIT(o, "0\r\n") : OUT_LIT(o, "0\r\n\r\n")) < 0)
        return NULL;
    if (big ? write_around(p, o, split, body) < 0 : (o->len && flush_out(p, o) < 0))
        return NULL;
    if (!more) {
        if (c->trailers)
            c->resp = CC_RESP_TRAILERS;
        else
            cc_asgi_response_complete(c);
    }
    return wait_or_ready(p);
}

/* ---- http.response.trailers ---------------------------------------------------------------- */

static PyObject *handle_trailers(cc_asgi_cycle_t *c, PyObject *msg) {
    cc_asgi_proto_t *p = c->proto;
    cc_asgi_server_t *srv = p->server;
    cc_asgi_state_t *st = srv->st;
    /* 'more_trailers' first: its __bool__ is app code, which could drop the headers. */
    PyObject *mt = get(msg, st->s_more_trailers);
    int more = mt ? PyObject_IsTrue(mt) : 0;
    if (more < 0 || PyErr_Occurred())
        return NULL;
    PyObject *headers = get(msg, st->s_headers);
    if (!headers && PyErr_Occurred())
        return NULL;
    int no_body = c->is_head || is_no_body_status(c->status);
    if (!c->chunked_out && !no_body && c->version_minor >= 1) {
        cc_asgi_response_complete(c);
        PyErr_SetString(PyExc_RuntimeError,
                        "http.response.trailers needs a chunked response, but the app set "
                        "Content-Length.");
        return NULL;
    }
    size_t bytes = 0;
    PyObject *fast = NULL;
    if (headers && headers != Py_None) {
        fast = check_headers(c, headers, 0, &bytes);
        if (!fast)
            return NULL;
    }
    if (c->chunked_out && !no_body) {
        cc_buf_t *o = &srv->out;
        o->start = o->len = 0;
        if ((fast && append_headers(o, fast, bytes) < 0) || (!more && OUT_LIT(o, "\r\n") < 0) ||
            flush_out(p, o) < 0) {
            Py_XDECREF(fast);
            return NULL;
        }
    }
    Py_XDECREF(fast);
    if (!more)
        cc_asgi_response_complete(c);
    return wait_or_ready(p);
}

/* ---- http.response.pathsend ---------------------------------------------------------------- */

static void pathsend_end(cc_asgi_cycle_t *c) {
    if (c->file_fd >= 0) {
        close(c->file_fd);
        c->file_fd = -1;
    }
}

int cc_asgi_pathsend_continue(cc_asgi_cycle_t *c) {
    cc_asgi_proto_t *p = c->proto;
    cc_asgi_state_t *st = p->server->st;
    while (c->file_fd >= 0 && c->file_left > 0) {
        if (p->lost || p->close_called) {
            pathsend_end(c);
            break;
        }
        if (p->writing_paused)
            return 0; /* resume_writing() continues */
        if (c->sock_fd >= 0) {
            /* Zero-copy only while the transport holds nothing, so bytes stay in order. */
            Py_ssize_t pending = cc_asgi_write_buffer_size(p);
            if (pending < 0)
                return -1;
            if (pending == 0) {
                size_t want = c->file_left > CC_ASGI_SENDFILE_MAX ? CC_ASGI_SENDFILE_MAX
                                                                  : (size_t)c->file_left;
                ssize_t n = sendfile(c->sock_fd, c->file_fd, NULL, want);
                if (n > 0) {
                    c->file_left -= n;
                    continue;
                }
                if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                    c->sock_fd = -1; /* not supported here: copy instead */
                else if (n == 0)
                    c->sock_fd = -1; /* let the read path report the short file */
            }
        }
        size_t want = c->file_left > CC_ASGI_FILE_CHUNK ? CC_ASGI_FILE_CHUNK : (size_t)c->file_left;
        PyObject *chunk = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)want);
        if (!chunk)
            return -1;
        size_t got = 0;
        while (got < want) {
            ssize_t n = read(c->file_fd, PyBytes_AS_STRING(chunk) + got, want - got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        if (got < want) {
            /* The file shrank or failed under us: the declared length can't be met. */
            Py_DECREF(chunk);
            pathsend_end(c);
            cc_asgi_log(p->server, st->s_error, "pathsend: file ended early; closing.", NULL);
            c->keep_alive = 0;
            cc_asgi_close(p, 0);
            cc_asgi_response_complete(c);
            if (c->send_waiter)
                cc_asgi_wake(st, &c->send_waiter, Py_None);
            return 0;
        }
        int rc = cc_asgi_write_obj(p, chunk);
        Py_DECREF(chunk);
        if (rc < 0)
            return -1;
        c->file_left -= (off_t)got;
    }
    if (c->file_fd >= 0 && c->file_left == 0) {
        pathsend_end(c);
        cc_asgi_response_complete(c);
    }
    if (c->file_fd < 0 && c->send_waiter)
        cc_asgi_wake(st, &c->send_waiter, Py_None);
    return 0;
}

static PyObject *handle_pathsend(cc_asgi_cycle_t *c, PyObject *msg) {
    cc_asgi_proto_t *p = c->proto;
    cc_asgi_server_t *srv = p->server;
    cc_asgi_state_t *st = srv->st;
    if (c->resp != CC_RESP_STARTED) {
        PyErr_SetString(PyExc_RuntimeError,
                        "http.response.pathsend must come right after http.response.start.");
        return NULL;
    }
    if (c->chunked_out) {
        PyErr_SetString(PyExc_RuntimeError,
                        "http.response.pathsend can't be used with Transfer-Encoding: chunked.");
        return NULL;
    }
    /* Trailers need chunked framing, which a file sent as it is can't have. */
    if (c->trailers) {
        PyErr_SetString(PyExc_RuntimeError,
                        "http.response.pathsend can't be used with trailers=True.");
        return NULL;
    }
    PyObject *path = get(msg, st->s_path);
    if (!path) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "http.response.pathsend message has no 'path'.");
        return NULL;
    }
    PyObject *fs = NULL;
    Py_INCREF(path); /* __fspath__ is app code: it could drop the message's reference */
    if (!PyUnicode_FSConverter(path, &fs)) {
        Py_DECREF(path);
        return NULL;
    }
    int fd = open(PyBytes_AS_STRING(fs), O_RDONLY | O_CLOEXEC);
    Py_DECREF(fs);
    if (fd < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        Py_DECREF(path);
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        PyErr_Format(PyExc_RuntimeError, "http.response.pathsend: %R is not a regular file.", path);
        Py_DECREF(path);
        return NULL;
    }
    Py_DECREF(path);
    c->file_fd = fd;
    c->file_left = c->has_cl ? (off_t)c->content_length : sb.st_size;
    int no_body = c->is_head || is_no_body_status(c->status);
    cc_buf_t *o = &srv->out;
    if (begin_head(c, o, (int64_t)c->file_left, 0, 1) < 0 || flush_out(p, o) < 0) {
        pathsend_end(c);
        return NULL;
    }
    if (no_body) {
        pathsend_end(c);
        cc_asgi_response_complete(c);
        return wait_or_ready(p);
    }
    c->sock_fd = cc_asgi_direct_fd(p);
    if (cc_asgi_pathsend_continue(c) < 0) {
        pathsend_end(c);
        return NULL;
    }
    if (c->file_fd < 0)
        return wait_or_ready(p);
    PyObject *args[1] = {srv->loop};
    c->send_waiter = PyObject_VectorcallMethod(st->s_create_future, args,
                                               1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    return c->send_waiter ? Py_NewRef(c->send_waiter) : NULL;
}

/* ---- send() -------------------------------------------------------------------------------- */

PyObject *cc_asgi_send(cc_asgi_cycle_t *c, PyObject *message) {
    cc_asgi_proto_t *p = c->proto;
    cc_asgi_state_t *st = p->server->st;
    if (!PyDict_Check(message)) {
        PyErr_Format(PyExc_RuntimeError, "ASGI message must be a dict, got %s.",
                     Py_TYPE(message)->tp_name);
        return NULL;
    }
    PyObject *type = get(message, st->s_type);
    if (!type) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "ASGI message has no 'type'.");
        return NULL;
    }
    /* The app's mistake first: after the response it completed (and a `connection: close` of
     * its own), "the client closed the connection" would hide it. */
    if (c->resp == CC_RESP_DONE && !c->server_answered) {
        PyErr_Format(PyExc_RuntimeError,
                     "Unexpected ASGI message %R sent, after response already completed.", type);
        return NULL;
    }
    if (c->disconnected || p->lost) {
        PyErr_SetString(st->client_disconnected, "the client closed the connection");
        return NULL;
    }
    /* A send not awaited, or from another task: its bytes would land inside the file's. */
    if (c->file_fd >= 0) {
        PyErr_Format(PyExc_RuntimeError,
                     "ASGI message %R sent while http.response.pathsend is still sending its file.",
                     type);
        return NULL;
    }
    switch (c->resp) {
    case CC_RESP_INIT:
        if (type_is(type, st->s_t_start))
            return handle_start(c, message);
        PyErr_Format(PyExc_RuntimeError, "Expected ASGI message 'http.response.start', but got %R.",
                     type);
        return NULL;
    case CC_RESP_STARTED:
    case CC_RESP_BODY:
        if (type_is(type, st->s_t_body))
            return handle_body(c, message);
        if (type_is(type, st->s_t_pathsend))
            return handle_pathsend(c, message);
        PyErr_Format(PyExc_RuntimeError, "Expected ASGI message 'http.response.body', but got %R.",
                     type);
        return NULL;
    case CC_RESP_TRAILERS:
        if (type_is(type, st->s_t_trailers))
            return handle_trailers(c, message);
        PyErr_Format(PyExc_RuntimeError,
                     "Expected ASGI message 'http.response.trailers', but got %R.", type);
        return NULL;
    default:
        PyErr_Format(PyExc_RuntimeError,
                     "Unexpected ASGI message %R sent, after response already completed.", type);
        return NULL;
    }
}
