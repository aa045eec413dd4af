/* The middleware layer's module wiring: registers its types in cicada._core. */
#include "module.h"

int cc_mw_init(PyObject *module, cc_mw_state_t *st) {
    (void)module;
    st->unused = NULL;
    return 0;
}

int cc_mw_traverse(cc_mw_state_t *st, visitproc visit, void *arg) {
    Py_VISIT(st->unused);
    return 0;
}

void cc_mw_clear(cc_mw_state_t *st) { Py_CLEAR(st->unused); }
