/* The event-loop layer's module wiring: registers its types in cicada._core. */
#include "module.h"

int cc_loop_init(PyObject *module, cc_loop_state_t *st) {
    (void)module;
    st->unused = NULL;
    return 0;
}

int cc_loop_traverse(cc_loop_state_t *st, visitproc visit, void *arg) {
    Py_VISIT(st->unused);
    return 0;
}

void cc_loop_clear(cc_loop_state_t *st) { Py_CLEAR(st->unused); }
