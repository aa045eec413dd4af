/* Module state owned by the middleware layer. */
#ifndef CC_MW_STATE_H
#define CC_MW_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyObject *unused; /* placeholder until the middleware layer lands */
} cc_mw_state_t;

int cc_mw_init(PyObject *module, cc_mw_state_t *st);
int cc_mw_traverse(cc_mw_state_t *st, visitproc visit, void *arg);
void cc_mw_clear(cc_mw_state_t *st);

#endif
