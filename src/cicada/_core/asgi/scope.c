/* Builds the ASGI `http` scope of one request from the parsed head: copies a per-connection
 * template dict (constant entries preset, table already sized) and fills the per-request keys with
 * interned names, reusing the previous request's immutable path and header objects when they
 * repeat. Proxy headers are applied here. It never touches the transport. */
#include "asgi/asgi.h"

#include <stdlib.h>
#include <string.h>

/* Entries X-Forwarded-For may list before we stop looking (the rightmost ones count). */
#define CC_ASGI_MAX_FORWARDED 64
/* Paths up to this size are percent-decoded on the stack. */
#define CC_ASGI_PATH_STACK 1024

int cc_asgi_scope_template(cc_asgi_server_t *srv) {
    cc_asgi_state_t *st = srv->st;
    PyObject *t = NULL, *asgi = NULL, *ext = NULL, *empty = NULL;
    t = PyDict_New();
    asgi = PyDict_New();
    ext = PyDict_New();
    if (!t || !asgi || !ext)
        goto error;
    if (PyDict_SetItem(asgi, st->s_version, st->s_v_asgi_version) < 0 ||
        PyDict_SetItem(asgi, st->s_spec_version, st->s_v_spec_version) < 0)
        goto error;
    empty = PyDict_New();
    if (!empty || PyDict_SetItem(ext, st->s_t_pathsend, empty) < 0)
        goto error;
    Py_DECREF(empty);
    empty = PyDict_New();
    if (!empty || PyDict_SetItem(ext, st->s_t_trailers, empty) < 0)
        goto error;
    Py_CLEAR(empty);
    /* Every key is present so the per-request copy never resizes. */
    if (PyDict_SetItem(t, st->s_type, st->s_v_http) < 0 ||
        PyDict_SetItem(t, st->s_asgi, asgi) < 0 ||
        PyDict_SetItem(t, st->s_http_version, st->s_v_11) < 0 ||
        PyDict_SetItem(t, st->s_server, Py_None) < 0 ||
        PyDict_SetItem(t, st->s_client, Py_None) < 0 ||
        PyDict_SetItem(t, st->s_scheme, srv->scheme) < 0 ||
        PyDict_SetItem(t, st->s_method, Py_None) < 0 ||
        PyDict_SetItem(t, st->s_root_path, srv->root_path) < 0 ||
        PyDict_SetItem(t, st->s_path, Py_None) < 0 ||
        PyDict_SetItem(t, st->s_raw_path, Py_None) < 0 ||
        PyDict_SetItem(t, st->s_query_string, Py_None) < 0 ||
        PyDict_SetItem(t, st->s_headers, Py_None) < 0 ||
        PyDict_SetItem(t, st->s_state, Py_None) < 0 ||
        PyDict_SetItem(t, st->s_extensions, Py_None) < 0)
        goto error;
    srv->scope_template = t;
    srv->extensions = ext;
    Py_DECREF(asgi);
    return 0;
error:
    Py_XDECREF(t);
    Py_XDECREF(asgi);
    Py_XDECREF(ext);
    Py_XDECREF(empty);
    return -1;
}

/* Percent-decode then UTF-8 decode with U+FFFD for invalid sequences (what urllib's unquote
 * gives uvicorn). */
static PyObject *decode_path(const char *s, size_t n) {
    if (!memchr(s, '%', n))
        return PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "replace");
    char stackbuf[CC_ASGI_PATH_STACK];
    char *out = n <= sizeof(stackbuf) ? stackbuf : malloc(n);
    if (!out)
        return PyErr_NoMemory();
    size_t len = cc_http_percent_decode(s, n, out);
    PyObject *r = PyUnicode_DecodeUTF8(out, (Py_ssize_t)len, "replace");
    if (out != stackbuf)
        free(out);
    return r;
}

static PyObject *method_str(cc_asgi_state_t *st, const char *m, size_t n) {
    PyObject *r = NULL;
    switch (n) {
    case 3:
        if (!memcmp(m, "GET", 3))
            r = st->s_m_get;
        else if (!memcmp(m, "PUT", 3))
            r = st->s_m_put;
        break;
    case 4:
        if (!memcmp(m, "POST", 4))
            r = st->s_m_post;
        else if (!memcmp(m, "HEAD", 4))
            r = st->s_m_head;
        break;
    case 5:
        if (!memcmp(m, "PATCH", 5))
            r = st->s_m_patch;
        break;
    case 6:
        if (!memcmp(m, "DELETE", 6))
            r = st->s_m_delete;
        break;
    case 7:
        if (!memcmp(m, "OPTIONS", 7))
            r = st->s_m_options;
        break;
    }
    if (r)
        return Py_NewRef(r);
    return PyUnicode_DecodeLatin1(m, (Py_ssize_t)n, NULL);
}

static PyObject *concat_bytes(PyObject *prefix, const char *s, size_t n) {
    Py_ssize_t pl = PyBytes_GET_SIZE(prefix);
    PyObject *r = PyBytes_FromStringAndSize(NULL, pl + (Py_ssize_t)n);
    if (!r)
        return NULL;
    memcpy(PyBytes_AS_STRING(r), PyBytes_AS_STRING(prefix), (size_t)pl);
    memcpy(PyBytes_AS_STRING(r) + pl, s, n);
    return r;
}

/* Request header names common enough that sharing one bytes object per name saves an allocation
 * per header on the hot path. */
static const char *const common_names[] = {
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "connection",
    "content-type",
    "content-length",
    "cookie",
    "referer",
    "origin",
    "authorization",
    "cache-control",
    "pragma",
    "upgrade-insecure-requests",
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
    "sec-fetch-user",
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "if-none-match",
    "if-modified-since",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-request-id",
    "transfer-encoding",
    "expect",
    "upgrade",
    "dnt",
    "te",
    "range",
    "priority",
    "forwarded",
    "via",
    "keep-alive",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "access-control-request-method",
    "access-control-request-headers",
    "x-requested-with",
};

/* Header names up to this length are looked up; longer ones are never common. */
#define CC_ASGI_HDR_NAME_MAX 32
#define CC_ASGI_HDR_PROBES 4

static unsigned hdr_hash(const char *s, size_t n) {
    return (unsigned)(n * 31u + (unsigned char)s[0] * 7u + (unsigned char)s[n - 1] * 3u +
                      (unsigned char)s[n / 2]) &
           (CC_ASGI_HDR_SLOTS - 1);
}

int cc_asgi_header_names_init(cc_asgi_state_t *st) {
    for (size_t i = 0; i < sizeof(common_names) / sizeof(common_names[0]); i++) {
        const char *name = common_names[i];
        size_t n = strlen(name);
        unsigned h = hdr_hash(name, n);
        int probes = 0;
        while (st->hdr_names[h] && probes < CC_ASGI_HDR_PROBES) {
            h = (h + 1) & (CC_ASGI_HDR_SLOTS - 1);
            probes++;
        }
        if (st->hdr_names[h])
            continue; /* crowded: this one just isn't shared */
        st->hdr_names[h] = PyBytes_FromStringAndSize(name, (Py_ssize_t)n);
        if (!st->hdr_names[h])
            return -1;
    }
    return 0;
}

static PyObject *header_name(cc_asgi_state_t *st, const char *s, size_t n) {
    if (n && n <= CC_ASGI_HDR_NAME_MAX) {
        unsigned h = hdr_hash(s, n);
        for (int probes = 0; probes < CC_ASGI_HDR_PROBES; probes++) {
            PyObject *b = st->hdr_names[h];
            if (!b)
                break;
            if ((size_t)PyBytes_GET_SIZE(b) == n && !memcmp(PyBytes_AS_STRING(b), s, n))
                return Py_NewRef(b);
            h = (h + 1) & (CC_ASGI_HDR_SLOTS - 1);
        }
    }
    return PyBytes_FromStringAndSize(s, (Py_ssize_t)n);
}

/* The (name, value) tuple for header i. A keep-alive client usually repeats its headers request
 * after request: the tuple the connection's previous request had at the same position is reused
 * when its bytes match (tuples and bytes are immutable, so sharing them is invisible). */
static PyObject *header_pair(cc_asgi_state_t *st, cc_asgi_proto_t *p, size_t i,
                             const cc_http_header_t *h) {
    PyObject *old = i < CC_ASGI_HDR_CACHE ? p->hdr_cache[i] : NULL;
    if (old) {
        PyObject *n = PyTuple_GET_ITEM(old, 0), *v = PyTuple_GET_ITEM(old, 1);
        if ((size_t)PyBytes_GET_SIZE(n) == h->name_len &&
            (size_t)PyBytes_GET_SIZE(v) == h->value_len &&
            !memcmp(PyBytes_AS_STRING(n), h->name, h->name_len) &&
            !memcmp(PyBytes_AS_STRING(v), h->value, h->value_len))
            return Py_NewRef(old);
    }
    PyObject *pair = PyTuple_New(2);
    if (!pair)
        return NULL;
    PyObject *n = header_name(st, h->name, h->name_len);
    if (!n)
        goto error;
    PyTuple_SET_ITEM(pair, 0, n);
    PyObject *v = PyBytes_FromStringAndSize(h->value, (Py_ssize_t)h->value_len);
    if (!v)
        goto error;
    PyTuple_SET_ITEM(pair, 1, v);
    if (i < CC_ASGI_HDR_CACHE)
        Py_XSETREF(p->hdr_cache[i], Py_NewRef(pair));
    return pair;
error:
    Py_DECREF(pair);
    return NULL;
}

static PyObject *headers_list(cc_asgi_state_t *st, cc_asgi_proto_t *p,
                              const cc_http_request_t *req) {
    PyObject *list = PyList_New((Py_ssize_t)req->num_headers);
    if (!list)
        return NULL;
    for (size_t i = 0; i < req->num_headers; i++) {
        PyObject *pair = header_pair(st, p, i, &req->headers[i]);
        if (!pair) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, pair);
    }
    return list;
}

/* trusted_proxy(host) as 1/0/-1. */
static int is_trusted(cc_asgi_server_t *srv, PyObject *host) {
    PyObject *r = PyObject_CallOneArg(srv->trusted_proxy, host);
    if (!r)
        return -1;
    int t = PyObject_IsTrue(r);
    Py_DECREF(r);
    return t;
}

/* (host, port) for the scope's client from one X-Forwarded-For entry. */
static PyObject *host_port(const char *s, size_t n) {
    const char *host;
    size_t host_len;
    long port;
    cc_http_split_host_port(s, n, &host, &host_len, &port);
    return Py_BuildValue("(Nl)", PyUnicode_DecodeLatin1(host, (Py_ssize_t)host_len, NULL), port);
}

/* Apply X-Forwarded-Proto / X-Forwarded-For when the peer is a trusted proxy. */
static int apply_proxy(cc_asgi_server_t *srv, cc_asgi_proto_t *p, const cc_http_request_t *req,
                       PyObject *scope) {
    cc_asgi_state_t *st = srv->st;
    if (!srv->trusted_proxy)
        return 0;
    int rc = -1;
    size_t first = req->num_headers;
    for (size_t i = 0; i < req->num_headers && first == req->num_headers; i++) {
        const cc_http_header_t *h = &req->headers[i];
        if ((h->name_len == 17 && !memcmp(h->name, "x-forwarded-proto", 17)) ||
            (h->name_len == 15 && !memcmp(h->name, "x-forwarded-for", 15)))
            first = i;
    }
    if (first == req->num_headers)
        return 0; /* nothing to apply: the predicate (Python) is not even asked */
    /* The peer is fixed for the connection's life: ask once. A unix-socket peer has no address:
     * the predicate sees None, so '*' still trusts it. */
    if (!p->peer_checked) {
        PyObject *peer = PyTuple_Check(p->client) ? PyTuple_GET_ITEM(p->client, 0) : Py_None;
        int t = is_trusted(srv, peer);
        if (t < 0)
            return -1;
        p->peer_checked = 1;
        p->peer_trusted = t ? 1 : 0;
    }
    if (!p->peer_trusted)
        return 0;
    const cc_http_header_t *proto = NULL;
    cc_buf_t xff;
    cc_buf_init(&xff);
    for (size_t i = first; i < req->num_headers; i++) {
        const cc_http_header_t *h = &req->headers[i];
        if (h->name_len == 17 && !memcmp(h->name, "x-forwarded-proto", 17))
            proto = h;
        else if (h->name_len == 15 && !memcmp(h->name, "x-forwarded-for", 15)) {
            if ((xff.len && cc_buf_append(&xff, ", ", 2) < 0) ||
                cc_buf_append(&xff, h->value, h->value_len) < 0) {
                PyErr_NoMemory();
                goto done;
            }
        }
    }
    if (proto) {
        const char *v = proto->value;
        size_t n = proto->value_len;
        while (n && (*v == ' ' || *v == '\t'))
            v++, n--;
        while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        PyObject *sch = NULL;
        if (n == 4 && !memcmp(v, "http", 4))
            sch = st->s_v_http;
        else if (n == 5 && !memcmp(v, "https", 5))
            sch = st->s_v_https;
        else if (n == 2 && !memcmp(v, "ws", 2))
            sch = st->s_v_ws;
        else if (n == 3 && !memcmp(v, "wss", 3))
            sch = st->s_v_wss;
        if (sch && PyDict_SetItem(scope, st->s_scheme, sch) < 0)
            goto done;
    }
    if (xff.len) {
        const char *s = cc_buf_ptr(&xff);
        size_t n = xff.len;
        const char *starts[CC_ASGI_MAX_FORWARDED];
        size_t lens[CC_ASGI_MAX_FORWARDED];
        size_t cnt = 0, i = 0;
        while (i <= n) {
            size_t b = i;
            while (i < n && s[i] != ',')
                i++;
            size_t e = i;
            while (b < e && (s[b] == ' ' || s[b] == '\t'))
                b++;
            while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t'))
                e--;
            if (cnt == CC_ASGI_MAX_FORWARDED) { /* keep the rightmost entries */
                memmove(starts, starts + 1, sizeof(starts[0]) * (cnt - 1));
                memmove(lens, lens + 1, sizeof(lens[0]) * (cnt - 1));
                cnt--;
            }
            starts[cnt] = s + b;
            lens[cnt++] = e - b;
            i++;
        }
        PyObject *chosen = NULL;
        for (size_t k = cnt; k-- > 0;) {
            PyObject *hp = host_port(starts[k], lens[k]);
            if (!hp)
                goto done;
            int tr = is_trusted(srv, PyTuple_GET_ITEM(hp, 0));
            if (tr < 0) {
                Py_DECREF(hp);
                goto done;
            }
            if (!tr) {
                chosen = hp;
                break;
            }
            Py_DECREF(hp);
        }
        if (!chosen && !(chosen = host_port(starts[0], lens[0])))
            goto done;
        if (PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(chosen, 0)) > 0 &&
            PyDict_SetItem(scope, st->s_client, chosen) < 0) {
            Py_DECREF(chosen);
            goto done;
        }
        Py_DECREF(chosen);
    }
    rc = 0;
done:
    cc_buf_free(&xff);
    return rc;
}

/* Set key to a new reference, consuming it. */
static int set_steal(PyObject *d, PyObject *k, PyObject *v) {
    if (!v)
        return -1;
    int rc = PyDict_SetItem(d, k, v);
    Py_DECREF(v);
    return rc;
}

/* The scope template with this connection's constant entries (client, server) filled in, made
 * on the connection's first request (borrowed). */
static PyObject *connection_scope_base(cc_asgi_proto_t *p) {
    if (p->scope_base)
        return p->scope_base;
    cc_asgi_state_t *st = p->server->st;
    PyObject *base = PyDict_Copy(p->server->scope_template);
    if (!base)
        return NULL;
    if (PyDict_SetItem(base, st->s_client, p->client) < 0 ||
        PyDict_SetItem(base, st->s_server, p->sockname) < 0) {
        Py_DECREF(base);
        return NULL;
    }
    return p->scope_base = base;
}

/* The request target split into path and query string (no I/O, no allocation): an
 * absolute-form target loses its "scheme://authority", a fragment is dropped. */
typedef struct {
    const char *path, *query;
    size_t path_len, query_len;
} target_parts_t;

static target_parts_t split_target(const char *t, size_t tl) {
    if (tl && t[0] != '/' && t[0] != '*') {
        const char *sep = NULL;
        for (size_t i = 0; i + 2 < tl; i++)
            if (t[i] == ':' && t[i + 1] == '/' && t[i + 2] == '/') {
                sep = t + i + 3;
                break;
            }
        if (sep) {
            const char *slash = memchr(sep, '/', tl - (size_t)(sep - t));
            const char *q = memchr(sep, '?', tl - (size_t)(sep - t));
            if (slash && (!q || slash < q)) {
                tl -= (size_t)(slash - t);
                t = slash;
            } else if (q) {
                tl -= (size_t)(q - t);
                t = q;
            } else {
                t = "/";
                tl = 1;
            }
        }
    }
    const char *hash = memchr(t, '#', tl);
    if (hash)
        tl = (size_t)(hash - t);
    const char *q = memchr(t, '?', tl);
    target_parts_t parts = {t, q ? q + 1 : t + tl, q ? (size_t)(q - t) : tl, 0};
    parts.query_len = q ? tl - parts.path_len - 1 : 0;
    if (parts.path_len == 0 && t[0] != '/') { /* "?a" after absolute-form with no path */
        parts.path = "/";
        parts.path_len = 1;
    }
    return parts;
}

/* scope["path"] and scope["raw_path"]; the same path as the connection's previous request
 * reuses its (immutable) objects. */
static int set_path(cc_asgi_proto_t *p, PyObject *scope, const char *t, size_t pl) {
    cc_asgi_server_t *srv = p->server;
    Py_ssize_t rl = PyBytes_GET_SIZE(srv->root_path_bytes);
    PyObject *raw = p->last_raw_path;
    if (!(raw && PyBytes_GET_SIZE(raw) == rl + (Py_ssize_t)pl &&
          !memcmp(PyBytes_AS_STRING(raw) + rl, t, pl))) {
        PyObject *path = decode_path(t, pl);
        if (!path)
            return -1;
        if (rl) {
            PyObject *full = PyUnicode_Concat(srv->root_path, path);
            Py_DECREF(path);
            if (!(path = full))
                return -1;
        }
        if (!(raw = concat_bytes(srv->root_path_bytes, t, pl))) {
            Py_DECREF(path);
            return -1;
        }
        Py_XSETREF(p->last_raw_path, raw);
        Py_XSETREF(p->last_path, path);
    }
    if (PyDict_SetItem(scope, srv->st->s_path, p->last_path) < 0 ||
        PyDict_SetItem(scope, srv->st->s_raw_path, p->last_raw_path) < 0)
        return -1;
    return 0;
}

static int set_extensions(cc_asgi_proto_t *p, PyObject *scope) {
    PyObject *ext = PyDict_Copy(p->server->extensions);
    if (!ext || cc_asgi_add_tls(p, ext) < 0 ||
        PyDict_SetItem(scope, p->server->st->s_extensions, ext) < 0) {
        Py_XDECREF(ext);
        return -1;
    }
    Py_DECREF(ext);
    return 0;
}

PyObject *cc_asgi_build_scope(cc_asgi_proto_t *p, const cc_http_request_t *req) {
    cc_asgi_server_t *srv = p->server;
    cc_asgi_state_t *st = srv->st;
    PyObject *base = connection_scope_base(p);
    PyObject *scope = base ? PyDict_Copy(base) : NULL;
    if (!scope)
        return NULL;
    target_parts_t parts = split_target(req->target, req->target_len);
    if (set_path(p, scope, parts.path, parts.path_len) < 0)
        goto error;
    if (set_steal(scope, st->s_query_string,
                  PyBytes_FromStringAndSize(parts.query, (Py_ssize_t)parts.query_len)) < 0)
        goto error;
    if (set_steal(scope, st->s_method, method_str(st, req->method, req->method_len)) < 0)
        goto error;
    if (req->version_minor == 0 && PyDict_SetItem(scope, st->s_http_version, st->s_v_10) < 0)
        goto error;
    if (set_steal(scope, st->s_headers, headers_list(st, p, req)) < 0)
        goto error;
    if (set_steal(scope, st->s_state, srv->state ? PyDict_Copy(srv->state) : PyDict_New()) < 0)
        goto error;
    if (set_extensions(p, scope) < 0)
        goto error;
    if (srv->proxy_headers && apply_proxy(srv, p, req, scope) < 0)
        goto error;
    return scope;
error:
    Py_DECREF(scope);
    return NULL;
}
