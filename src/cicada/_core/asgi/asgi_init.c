/* The asgi layer's module wiring: registers its types in cicada._core. */
#include "module.h"

int cc_asgi_init(PyObject *module, cc_asgi_state_t *st) {
    (void)module;
    st->request_parser_type = NULL;
    return 0;
}

int cc_asgi_traverse(cc_asgi_state_t *st, visitproc visit, void *arg) {
    Py_VISIT(st->request_parser_type);
    return 0;
}

void cc_asgi_clear(cc_asgi_state_t *st) { Py_CLEAR(st->request_parser_type); }
