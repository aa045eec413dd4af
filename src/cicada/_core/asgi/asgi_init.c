/* The asgi layer's module wiring: registers its types, the ClientDisconnected exception and the
 * interned names in cicada._core. No server logic here. */
#include "asgi/asgi.h"

#include "loop/loop.h"

static PyTypeObject *add_type(PyObject *module, PyType_Spec *spec, const char *public_name) {
    PyObject *t = PyType_FromModuleAndSpec(module, spec, NULL);
    if (!t)
        return NULL;
    if (public_name && PyModule_AddObjectRef(module, public_name, t) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyTypeObject *)t;
}

static int selector_transport_init(cc_asgi_state_t *st) {
    PyObject *mod = PyImport_ImportModule("asyncio.selector_events");
    if (!mod)
        return -1;
    st->selector_transport = PyObject_GetAttrString(mod, "_SelectorSocketTransport");
    Py_DECREF(mod);
    if (!st->selector_transport) /* a future CPython without it: nothing to work around */
        PyErr_Clear();
    else if (!PyType_Check(st->selector_transport))
        Py_CLEAR(st->selector_transport);
    return 0;
}

int cc_asgi_init(PyObject *module, cc_asgi_state_t *st) {
    st->request_parser_type = NULL;
#define CC_ASGI_STR_INIT(name, text)                                                               \
    if (!(st->s_##name = PyUnicode_InternFromString(text)))                                        \
        return -1;
    CC_ASGI_STRINGS(CC_ASGI_STR_INIT)
#undef CC_ASGI_STR_INIT
    if (!(st->server_type = add_type(module, &cc_asgi_server_spec, "HttpServer")))
        return -1;
    if (!(st->protocol_type = add_type(module, &cc_asgi_protocol_spec, "HttpProtocol")))
        return -1;
    cc_loop_register_protocol(&cc_state(module)->loop, st->protocol_type, &cc_asgi_proto_ops);
    if (!(st->cycle_type = add_type(module, &cc_asgi_cycle_spec, NULL)))
        return -1;
    if (!(st->ready_type = add_type(module, &cc_asgi_ready_spec, NULL)))
        return -1;
    if (!(st->apprun_type = add_type(module, &cc_asgi_apprun_spec, NULL)))
        return -1;
    if (!(st->kw_name = PyTuple_Pack(1, st->s_name)))
        return -1;
    st->client_disconnected = PyErr_NewExceptionWithDoc(
        "cicada._core.ClientDisconnected",
        "send() was called after the client closed the connection (ASGI spec 2.4).", PyExc_OSError,
        NULL);
    if (!st->client_disconnected ||
        PyModule_AddObjectRef(module, "ClientDisconnected", st->client_disconnected) < 0)
        return -1;
    st->ready_none = cc_asgi_ready_new(st, Py_None);
    if (!st->ready_none)
        return -1;
    if (cc_asgi_header_names_init(st) < 0)
        return -1;
    if (PY_VERSION_HEX >= 0x030C0000 && selector_transport_init(st) < 0)
        return -1;
    if (cc_asgi_parser_init(module, &st->parser) < 0)
        return -1;
    if (cc_asgi_ws_init(module, &st->ws) < 0)
        return -1;
    return 0;
}

int cc_asgi_traverse(cc_asgi_state_t *st, visitproc visit, void *arg) {
    Py_VISIT(st->request_parser_type);
    Py_VISIT(st->server_type);
    Py_VISIT(st->protocol_type);
    Py_VISIT(st->cycle_type);
    Py_VISIT(st->ready_type);
    Py_VISIT(st->apprun_type);
    Py_VISIT(st->kw_name);
    Py_VISIT(st->client_disconnected);
    Py_VISIT(st->ready_none);
    Py_VISIT(st->selector_transport);
    for (int i = 0; i < CC_ASGI_HDR_SLOTS; i++)
        Py_VISIT(st->hdr_names[i]);
    CC_TRY_VISIT(cc_asgi_parser_traverse(&st->parser, visit, arg));
    CC_TRY_VISIT(cc_asgi_ws_traverse(&st->ws, visit, arg));
    return 0;
}

void cc_asgi_clear(cc_asgi_state_t *st) {
    Py_CLEAR(st->request_parser_type);
    Py_CLEAR(st->ready_none);
    Py_CLEAR(st->selector_transport);
    for (int i = 0; i < CC_ASGI_HDR_SLOTS; i++)
        Py_CLEAR(st->hdr_names[i]);
    Py_CLEAR(st->server_type);
    Py_CLEAR(st->protocol_type);
    Py_CLEAR(st->cycle_type);
    Py_CLEAR(st->ready_type);
    Py_CLEAR(st->apprun_type);
    Py_CLEAR(st->kw_name);
    Py_CLEAR(st->client_disconnected);
#define CC_ASGI_STR_CLEAR(name, text) Py_CLEAR(st->s_##name);
    CC_ASGI_STRINGS(CC_ASGI_STR_CLEAR)
#undef CC_ASGI_STR_CLEAR
    cc_asgi_parser_clear(&st->parser);
    cc_asgi_ws_clear(&st->ws);
}
