/* Python face of the http layer's parser: cicada._core.parse_request(), ChunkedDecoder and
 * HTTPParseError, for tests, the differential test against h11, and benchmarks. It adds no parsing
 * rules of its own; the server itself calls the C functions directly, not this module. */
#include "module.h"

#include "http/http.h"

#include <stddef.h>
#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#endif

/* parse_request copies the head (the parser lowercases names in place and bytes are immutable):
 * heads up to this size use a stack buffer, larger ones a heap buffer. */
#define CC_PARSER_STACK_BUF 8192
#define CC_PARSER_STACK_HEADERS 128

/* Lowercase header names and methods common enough to be worth sharing one bytes object. */
static const char *const cc_known_tokens[] = {
    "host",
    "user-agent",
    "accept",
    "accept-language",
    "accept-encoding",
    "accept-charset",
    "referer",
    "connection",
    "cookie",
    "upgrade-insecure-requests",
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
    "sec-fetch-user",
    "cache-control",
    "pragma",
    "if-none-match",
    "if-modified-since",
    "content-type",
    "content-length",
    "transfer-encoding",
    "origin",
    "authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-request-id",
    "forwarded",
    "via",
    "upgrade",
    "expect",
    "te",
    "range",
    "dnt",
    "priority",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "keep-alive",
    "date",
    "content-encoding",
    "traceparent",
    "x-requested-with",
    "GET",
    "POST",
    "PUT",
    "DELETE",
    "HEAD",
    "OPTIONS",
    "PATCH",
};

static inline unsigned cc_known_hash(const char *s, size_t n) {
    return ((unsigned)n * 31u + (unsigned char)s[0] * 7u + (unsigned char)s[n - 1] * 3u +
            (n > 3 ? (unsigned char)s[3] : 0u)) &
           (CC_ASGI_KNOWN_SLOTS - 1);
}

/* A new reference to bytes equal to s[0..n): the shared object when s is a known token. */
static inline PyObject *cc_known_bytes(cc_asgi_parser_state_t *ps, const char *s, size_t n) {
    if (n) {
        for (unsigned h = cc_known_hash(s, n), probes = 0; probes < 4; probes++) {
            PyObject *k = ps->known[(h + probes) & (CC_ASGI_KNOWN_SLOTS - 1)];
            if (!k)
                break;
            if ((size_t)PyBytes_GET_SIZE(k) == n && memcmp(PyBytes_AS_STRING(k), s, n) == 0)
                return Py_NewRef(k);
        }
    }
    return PyBytes_FromStringAndSize(s, (Py_ssize_t)n);
}

static int cc_known_init(cc_asgi_parser_state_t *ps) {
    for (size_t i = 0; i < sizeof cc_known_tokens / sizeof cc_known_tokens[0]; i++) {
        const char *t = cc_known_tokens[i];
        size_t n = strlen(t);
        unsigned h = cc_known_hash(t, n), probes = 0;
        while (ps->known[h] && probes < 4) {
            h = (h + 1) & (CC_ASGI_KNOWN_SLOTS - 1);
            probes++;
        }
        if (ps->known[h])
            continue; /* a crowded bucket: that token just is not shared */
        ps->known[h] = PyBytes_FromStringAndSize(t, (Py_ssize_t)n);
        if (!ps->known[h])
            return -1;
    }
    return 0;
}

static cc_asgi_parser_state_t *cc_parser_state_of_module(PyObject *module) {
    return &cc_state(module)->asgi.parser;
}

/* Raises HTTPParseError(reason) with .status, .reason and .error (the enum's index). */
static void cc_parser_raise(cc_asgi_parser_state_t *ps, cc_http_result_t rc) {
    PyObject *msg = NULL, *exc = NULL, *status = NULL, *code = NULL;
    msg = PyUnicode_FromString(cc_http_reason(rc));
    if (!msg)
        goto error;
    exc = PyObject_CallOneArg(ps->http_parse_error, msg);
    if (!exc)
        goto error;
    status = PyLong_FromLong(cc_http_status(rc));
    code = PyLong_FromLong((long)rc);
    if (!status || !code)
        goto error;
    if (PyObject_SetAttr(exc, ps->str_status, status) < 0 ||
        PyObject_SetAttr(exc, ps->str_reason, msg) < 0 ||
        PyObject_SetAttr(exc, ps->str_error, code) < 0)
        goto error;
    PyErr_SetObject(ps->http_parse_error, exc);
error:
    Py_XDECREF(msg);
    Py_XDECREF(exc);
    Py_XDECREF(status);
    Py_XDECREF(code);
}

static int cc_parser_size_arg(PyObject *v, const char *what, size_t *out) {
    Py_ssize_t n = PyNumber_AsSsize_t(v, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0", what);
        return -1;
    }
    *out = (size_t)n;
    return 0;
}

/* ParsedRequest: a plain object with ten read-only slots. (A structseq would do, but on 3.11 its
 * constructor and destructor look their sizes up in the type dict: most of the binding's cost.) */
#define CC_PARSED_NFIELDS 10

typedef struct {
    PyObject_HEAD PyObject *f[CC_PARSED_NFIELDS];
} cc_parsed_t;

static const char *const cc_parsed_names[CC_PARSED_NFIELDS] = {
    "method",         "target",     "http_version", "headers",         "body",
    "content_length", "keep_alive", "upgrade",      "expect_continue", "head_len",
};

static int cc_parsed_traverse(PyObject *op, visitproc visit, void *arg) {
    cc_parsed_t *self = (cc_parsed_t *)op;
    Py_VISIT(Py_TYPE(op));
    for (int i = 0; i < CC_PARSED_NFIELDS; i++)
        Py_VISIT(self->f[i]);
    return 0;
}

static int cc_parsed_clear(PyObject *op) {
    cc_parsed_t *self = (cc_parsed_t *)op;
    for (int i = 0; i < CC_PARSED_NFIELDS; i++)
        Py_CLEAR(self->f[i]);
    return 0;
}

static void cc_parsed_dealloc(PyObject *op) {
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    cc_parsed_clear(op);
    PyObject_GC_Del(op);
    Py_DECREF(tp);
}

static PyObject *cc_parsed_repr(PyObject *op) {
    cc_parsed_t *self = (cc_parsed_t *)op;
    PyObject *parts = NULL, *sep = NULL, *joined = NULL, *res = NULL;
    parts = PyList_New(0);
    if (!parts)
        goto done;
    for (int i = 0; i < CC_PARSED_NFIELDS; i++) {
        PyObject *s = PyUnicode_FromFormat("%s=%R", cc_parsed_names[i], self->f[i]);
        if (!s)
            goto done;
        int err = PyList_Append(parts, s);
        Py_DECREF(s);
        if (err < 0)
            goto done;
    }
    sep = PyUnicode_FromString(", ");
    if (!sep)
        goto done;
    joined = PyUnicode_Join(sep, parts);
    if (!joined)
        goto done;
    res = PyUnicode_FromFormat("ParsedRequest(%U)", joined);
done:
    Py_XDECREF(parts);
    Py_XDECREF(sep);
    Py_XDECREF(joined);
    return res;
}

/* Equal when every field is equal: lets tests compare a prefix's parse with the whole's. */
static PyObject *cc_parsed_richcompare(PyObject *a, PyObject *b, int op) {
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(a) != Py_TYPE(b))
        Py_RETURN_NOTIMPLEMENTED;
    int eq = 1;
    for (int i = 0; i < CC_PARSED_NFIELDS && eq; i++) {
        int r = PyObject_RichCompareBool(((cc_parsed_t *)a)->f[i], ((cc_parsed_t *)b)->f[i], Py_EQ);
        if (r < 0)
            return NULL;
        eq = r;
    }
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

/* 3.12 renamed the member constants into Python.h; structmember.h keeps the old names. */
#if PY_VERSION_HEX >= 0x030C0000
#define CC_T_OBJECT Py_T_OBJECT_EX
#define CC_READONLY Py_READONLY
#else
#define CC_T_OBJECT T_OBJECT_EX
#define CC_READONLY READONLY
#endif

#define CC_PARSED_MEMBER(i, name, doc)                                                             \
    { name, CC_T_OBJECT, offsetof(cc_parsed_t, f) + (i) * sizeof(PyObject *), CC_READONLY, doc }

static PyMemberDef cc_parsed_members[] = {
    CC_PARSED_MEMBER(0, "method", "request method, bytes"),
    CC_PARSED_MEMBER(1, "target", "request-target as sent, bytes"),
    CC_PARSED_MEMBER(2, "http_version", "'1.0' or '1.1'"),
    CC_PARSED_MEMBER(3, "headers", "list of (lowercased name, value) bytes pairs, in order"),
    CC_PARSED_MEMBER(4, "body", "'none', 'length' or 'chunked'"),
    CC_PARSED_MEMBER(5, "content_length",
                     "body length for 'length', 0 for 'none', None for 'chunked'"),
    CC_PARSED_MEMBER(6, "keep_alive", "the connection may be reused after this request"),
    CC_PARSED_MEMBER(7, "upgrade", "Connection: upgrade together with an Upgrade header"),
    CC_PARSED_MEMBER(8, "expect_continue", "Expect: 100-continue on HTTP/1.1"),
    CC_PARSED_MEMBER(9, "head_len", "bytes used by the head, blank line included"),
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot cc_parsed_slots[] = {
    {Py_tp_dealloc, cc_parsed_dealloc},
    {Py_tp_traverse, cc_parsed_traverse},
    {Py_tp_clear, cc_parsed_clear},
    {Py_tp_repr, cc_parsed_repr},
    {Py_tp_richcompare, cc_parsed_richcompare},
    {Py_tp_members, cc_parsed_members},
    {Py_tp_doc, "A parsed HTTP/1.x request head (returned by parse_request)."},
    {0, NULL},
};

static PyType_Spec cc_parsed_spec = {
    .name = "cicada._core.ParsedRequest",
    .basicsize = sizeof(cc_parsed_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = cc_parsed_slots,
};

static PyObject *cc_parser_build(cc_asgi_parser_state_t *ps, const cc_http_request_t *r) {
    cc_parsed_t *res = PyObject_GC_New(cc_parsed_t, ps->parsed_request_type);
    if (!res)
        return NULL;
    PyObject **f = res->f;
    memset(f, 0, sizeof res->f);
    PyObject *headers = PyList_New((Py_ssize_t)r->num_headers);
    if (!headers)
        goto error;
    f[3] = headers;
    for (size_t i = 0; i < r->num_headers; i++) {
        const cc_http_header_t *h = &r->headers[i];
        PyObject *name = cc_known_bytes(ps, h->name, h->name_len);
        if (!name)
            goto error;
        PyObject *value = PyBytes_FromStringAndSize(h->value, (Py_ssize_t)h->value_len);
        if (!value) {
            Py_DECREF(name);
            goto error;
        }
        PyObject *pair = PyTuple_New(2);
        if (!pair) {
            Py_DECREF(name);
            Py_DECREF(value);
            goto error;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, value);
        PyList_SET_ITEM(headers, (Py_ssize_t)i, pair);
    }
    if (!(f[0] = cc_known_bytes(ps, r->method, r->method_len)))
        goto error;
    if (!(f[1] = PyBytes_FromStringAndSize(r->target, (Py_ssize_t)r->target_len)))
        goto error;
    f[2] = Py_NewRef(r->version_minor ? ps->str_v11 : ps->str_v10);
    f[4] = Py_NewRef(r->body == CC_HTTP_BODY_CHUNKED  ? ps->str_chunked
                     : r->body == CC_HTTP_BODY_LENGTH ? ps->str_length
                                                      : ps->str_none);
    if (r->body == CC_HTTP_BODY_CHUNKED)
        f[5] = Py_NewRef(Py_None);
    else if (!(f[5] = PyLong_FromUnsignedLongLong(r->content_length)))
        goto error;
    f[6] = Py_NewRef(r->keep_alive ? Py_True : Py_False);
    f[7] = Py_NewRef(r->upgrade ? Py_True : Py_False);
    f[8] = Py_NewRef(r->expect_continue ? Py_True : Py_False);
    if (!(f[9] = PyLong_FromSize_t(r->head_len)))
        goto error;
    PyObject_GC_Track((PyObject *)res);
    return (PyObject *)res;
error:
    /* Never tracked: dealloc's untrack is a no-op then, and it clears whatever was filled. */
    Py_DECREF(res);
    return NULL;
}

/* parse_request(data, start=0, /, *, max_request_line=8192, max_head_size=65536,
 *               max_headers=100) */
static PyObject *cc_parse_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames) {
    cc_asgi_parser_state_t *ps = cc_parser_state_of_module(module);
    cc_http_limits_t lim;
    cc_http_limits_default(&lim);
    Py_buffer view = {0};
    char stack_buf[CC_PARSER_STACK_BUF];
    cc_http_header_t stack_headers[CC_PARSER_STACK_HEADERS];
    char *buf = stack_buf;
    cc_http_header_t *headers = stack_headers;
    PyObject *res = NULL;

    size_t start = 0;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "parse_request() takes one or two positional arguments");
        return NULL;
    }
    if (nargs == 2 && cc_parser_size_arg(args[1], "start", &start) < 0)
        return NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i), *v = args[nargs + i];
        size_t *dst;
        const char *what;
        if (PyUnicode_Compare(k, ps->str_max_request_line) == 0) {
            dst = &lim.max_request_line;
            what = "max_request_line";
        } else if (PyUnicode_Compare(k, ps->str_max_head_size) == 0) {
            dst = &lim.max_head_size;
            what = "max_head_size";
        } else if (PyUnicode_Compare(k, ps->str_max_headers) == 0) {
            dst = &lim.max_headers;
            what = "max_headers";
        } else {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "parse_request() got an unexpected keyword %R", k);
            return NULL;
        }
        if (cc_parser_size_arg(v, what, dst) < 0)
            return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (start > (size_t)view.len) {
        PyErr_SetString(PyExc_ValueError, "start is past the end of data");
        goto done;
    }
    /* Only the head matters: copy up to its blank line when there is one (pipelined requests and
     * bodies stay uncopied), and never more than the head limit. */
    const char *src = (const char *)view.buf + start;
    size_t len = (size_t)view.len - start;
    long head_end = cc_http_find_head_end(src, len, 0);
    if (head_end >= 0)
        len = (size_t)head_end;
    if (len > lim.max_head_size)
        len = lim.max_head_size;
    if (len > sizeof stack_buf) {
        buf = PyMem_Malloc(len);
        if (!buf) {
            PyErr_NoMemory();
            goto done;
        }
    }
    /* A field line takes at least 4 bytes ("a:" CRLF), so the bytes we may parse cannot hold
     * more than avail / 4 fields: no need to allocate for more than that. */
    size_t avail = (size_t)view.len - start;
    if (avail > lim.max_head_size)
        avail = lim.max_head_size;
    size_t nheaders = lim.max_headers;
    if (nheaders > avail / 4 + 1)
        nheaders = avail / 4 + 1;
    if (nheaders > CC_PARSER_STACK_HEADERS) {
        headers = PyMem_Calloc(nheaders, sizeof *headers);
        if (!headers) {
            PyErr_NoMemory();
            goto done;
        }
    }
    memcpy(buf, src, len);
    cc_http_request_t req;
    cc_http_result_t rc = cc_http_parse_request(buf, len, &lim, headers, nheaders, &req);
    /* A blank line found early (leading empty lines) does not end the head: parse it all. */
    if (rc == CC_HTTP_INCOMPLETE && head_end >= 0 && (size_t)view.len - start > len) {
        if (buf != stack_buf)
            PyMem_Free(buf);
        buf = stack_buf;
        len = avail;
        if (len > sizeof stack_buf) {
            buf = PyMem_Malloc(len);
            if (!buf) {
                PyErr_NoMemory();
                goto done;
            }
        }
        memcpy(buf, src, len);
        rc = cc_http_parse_request(buf, len, &lim, headers, nheaders, &req);
    }
    if (rc == CC_HTTP_OK)
        res = cc_parser_build(ps, &req);
    else if (rc == CC_HTTP_INCOMPLETE)
        res = Py_NewRef(Py_None);
    else
        cc_parser_raise(ps, rc);
done:
    if (buf != stack_buf)
        PyMem_Free(buf);
    if (headers != stack_headers)
        PyMem_Free(headers);
    PyBuffer_Release(&view);
    return res;
}

/* find_head_end(data, start=0) -> int: head length, or -1 when no blank line yet. */
static PyObject *cc_find_head_end(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    Py_buffer view;
    size_t start = 0;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "find_head_end(data, start=0)");
        return NULL;
    }
    if (nargs == 2 && cc_parser_size_arg(args[1], "start", &start) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    long r = cc_http_find_head_end(view.buf, (size_t)view.len, start);
    PyBuffer_Release(&view);
    return PyLong_FromLong(r);
}

/* ------------------------------------------------------------------ ChunkedDecoder */

typedef struct {
    PyObject_HEAD cc_http_chunked_t dec;
    cc_http_result_t error; /* sticky: a malformed body stays malformed */
} cc_chunked_decoder_t;

static PyObject *cc_chunked_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    cc_asgi_parser_state_t *ps = NULL;
    PyObject *mod = PyType_GetModuleByDef(type, &cc_module_def);
    if (!mod)
        return NULL;
    ps = cc_parser_state_of_module(mod);
    size_t max_trailer = CC_HTTP_DEFAULT_MAX_TRAILER;
    Py_ssize_t npos = PyTuple_GET_SIZE(args);
    PyObject *v = npos ? PyTuple_GET_ITEM(args, 0) : NULL;
    if (npos > 1) {
        PyErr_SetString(PyExc_TypeError, "ChunkedDecoder(max_trailer=8192)");
        return NULL;
    }
    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyObject *kv = PyDict_GetItemWithError(kwds, ps->str_max_trailer);
        if (!kv || v || PyDict_GET_SIZE(kwds) != 1) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "ChunkedDecoder(max_trailer=8192)");
            return NULL;
        }
        v = kv;
    }
    if (v && cc_parser_size_arg(v, "max_trailer", &max_trailer) < 0)
        return NULL;
    if (max_trailer == 0) {
        PyErr_SetString(PyExc_ValueError, "max_trailer must be > 0");
        return NULL;
    }
    cc_chunked_decoder_t *self = (cc_chunked_decoder_t *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    cc_http_chunked_init(&self->dec, max_trailer);
    self->error = CC_HTTP_OK;
    return (PyObject *)self;
}

static void cc_chunked_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* feed(data) -> (list of body bytes, done, consumed) */
static PyObject *cc_chunked_feed(PyObject *op, PyTypeObject *defining_class, PyObject *const *args,
                                 Py_ssize_t nargs, PyObject *kwnames) {
    cc_chunked_decoder_t *self = (cc_chunked_decoder_t *)op;
    cc_asgi_parser_state_t *ps =
        &((cc_state_t *)PyType_GetModuleState(defining_class))->asgi.parser;
    Py_buffer view = {0};
    PyObject *chunks = NULL, *res = NULL;
    if (nargs != 1 || (kwnames && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "feed() takes exactly one positional argument");
        return NULL;
    }
    if (self->error != CC_HTTP_OK) {
        cc_parser_raise(ps, self->error);
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    chunks = PyList_New(0);
    if (!chunks)
        goto done;
    const char *p = view.buf;
    size_t len = (size_t)view.len, off = 0;
    for (;;) {
        size_t used, dlen;
        const char *data;
        cc_http_result_t rc =
            cc_http_chunked_decode(&self->dec, p + off, len - off, &used, &data, &dlen);
        off += used;
        if (rc == CC_HTTP_OK && dlen) {
            PyObject *b = PyBytes_FromStringAndSize(data, (Py_ssize_t)dlen);
            if (!b)
                goto done;
            int err = PyList_Append(chunks, b);
            Py_DECREF(b);
            if (err < 0)
                goto done;
            continue;
        }
        if (rc == CC_HTTP_OK || rc == CC_HTTP_INCOMPLETE)
            break;
        self->error = rc;
        cc_parser_raise(ps, rc);
        goto done;
    }
    res = Py_BuildValue("(OOn)", chunks, cc_http_chunked_done(&self->dec) ? Py_True : Py_False,
                        (Py_ssize_t)off);
done:
    Py_XDECREF(chunks);
    PyBuffer_Release(&view);
    return res;
}

static PyObject *cc_chunked_get_done(PyObject *op, void *closure) {
    (void)closure;
    return PyBool_FromLong(cc_http_chunked_done(&((cc_chunked_decoder_t *)op)->dec));
}

static PyMethodDef cc_chunked_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))cc_chunked_feed,
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS,
     "feed(data) -> (list of body bytes, done, consumed). Raises HTTPParseError."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef cc_chunked_getset[] = {
    {"done", cc_chunked_get_done, NULL, "True once the last chunk and trailers were read.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot cc_chunked_slots[] = {
    {Py_tp_new, cc_chunked_new},
    {Py_tp_dealloc, cc_chunked_dealloc},
    {Py_tp_methods, cc_chunked_methods},
    {Py_tp_getset, cc_chunked_getset},
    {Py_tp_doc, "ChunkedDecoder(max_trailer=8192): incremental chunked body decoder."},
    {0, NULL},
};

static PyType_Spec cc_chunked_spec = {
    .name = "cicada._core.ChunkedDecoder",
    .basicsize = sizeof(cc_chunked_decoder_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = cc_chunked_slots,
};

/* ------------------------------------------------------------------ module wiring */

static PyMethodDef cc_parser_functions[] = {
    {"parse_request", (PyCFunction)(void (*)(void))cc_parse_request, METH_FASTCALL | METH_KEYWORDS,
     "parse_request(data, start=0, *, max_request_line=8192, max_head_size=65536, "
     "max_headers=100)\n"
     "Parse one request head at data[start:] (head_len counts from start). Returns a\n"
     "ParsedRequest, None when more bytes are needed, or raises HTTPParseError (a ValueError\n"
     "with .status and .reason)."},
    {"find_head_end", (PyCFunction)(void (*)(void))cc_find_head_end, METH_FASTCALL,
     "find_head_end(data, start=0) -> length of the head up to its blank line, or -1."},
    {NULL, NULL, 0, NULL},
};

static int cc_intern(PyObject **slot, const char *s) {
    *slot = PyUnicode_InternFromString(s);
    return *slot ? 0 : -1;
}

int cc_asgi_parser_init(PyObject *module, cc_asgi_parser_state_t *ps) {
    if (cc_known_init(ps) < 0)
        return -1;
    if (cc_intern(&ps->str_v10, "1.0") < 0 || cc_intern(&ps->str_v11, "1.1") < 0 ||
        cc_intern(&ps->str_none, "none") < 0 || cc_intern(&ps->str_length, "length") < 0 ||
        cc_intern(&ps->str_chunked, "chunked") < 0 ||
        cc_intern(&ps->str_max_request_line, "max_request_line") < 0 ||
        cc_intern(&ps->str_max_head_size, "max_head_size") < 0 ||
        cc_intern(&ps->str_max_headers, "max_headers") < 0 ||
        cc_intern(&ps->str_max_trailer, "max_trailer") < 0 ||
        cc_intern(&ps->str_status, "status") < 0 || cc_intern(&ps->str_reason, "reason") < 0 ||
        cc_intern(&ps->str_error, "error") < 0)
        return -1;
    ps->http_parse_error = PyErr_NewExceptionWithDoc(
        "cicada._core.HTTPParseError",
        "A malformed or over-limit HTTP request. .status is the HTTP status to answer with, "
        ".reason a short description.",
        PyExc_ValueError, NULL);
    if (!ps->http_parse_error)
        return -1;
    if (PyModule_AddObjectRef(module, "HTTPParseError", ps->http_parse_error) < 0)
        return -1;
    ps->parsed_request_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &cc_parsed_spec, NULL);
    if (!ps->parsed_request_type)
        return -1;
    if (PyModule_AddObjectRef(module, "ParsedRequest", (PyObject *)ps->parsed_request_type) < 0)
        return -1;
    ps->chunked_decoder_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &cc_chunked_spec, NULL);
    if (!ps->chunked_decoder_type)
        return -1;
    if (PyModule_AddObjectRef(module, "ChunkedDecoder", (PyObject *)ps->chunked_decoder_type) < 0)
        return -1;
    return PyModule_AddFunctions(module, cc_parser_functions);
}

int cc_asgi_parser_traverse(cc_asgi_parser_state_t *ps, visitproc visit, void *arg) {
    Py_VISIT(ps->parsed_request_type);
    Py_VISIT(ps->chunked_decoder_type);
    Py_VISIT(ps->http_parse_error);
    return 0;
}

void cc_asgi_parser_clear(cc_asgi_parser_state_t *ps) {
    Py_CLEAR(ps->parsed_request_type);
    Py_CLEAR(ps->chunked_decoder_type);
    Py_CLEAR(ps->http_parse_error);
    Py_CLEAR(ps->str_v10);
    Py_CLEAR(ps->str_v11);
    Py_CLEAR(ps->str_none);
    Py_CLEAR(ps->str_length);
    Py_CLEAR(ps->str_chunked);
    Py_CLEAR(ps->str_max_request_line);
    Py_CLEAR(ps->str_max_head_size);
    Py_CLEAR(ps->str_max_headers);
    Py_CLEAR(ps->str_max_trailer);
    Py_CLEAR(ps->str_status);
    Py_CLEAR(ps->str_reason);
    Py_CLEAR(ps->str_error);
    for (size_t i = 0; i < CC_ASGI_KNOWN_SLOTS; i++)
        Py_CLEAR(ps->known[i]);
}
