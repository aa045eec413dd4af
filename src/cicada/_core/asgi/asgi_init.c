/* The asgi layer's module wiring: registers its types in cicada._core. */
#include "module.h"

int cc_asgi_init(PyObject *module, cc_asgi_state_t *st) {
    st->request_parser_type = NULL;
    if (cc_asgi_parser_init(module, &st->parser) < 0)
        return -1;
    return 0;
}

int cc_asgi_traverse(cc_asgi_state_t *st, visitproc visit, void *arg) {
    Py_VISIT(st->request_parser_type);
    CC_TRY_VISIT(cc_asgi_parser_traverse(&st->parser, visit, arg));
    return 0;
}

void cc_asgi_clear(cc_asgi_state_t *st) {
    Py_CLEAR(st->request_parser_type);
    cc_asgi_parser_clear(&st->parser);
}
