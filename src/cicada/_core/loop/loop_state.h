/* Module state owned by the event-loop layer. */
#ifndef CC_LOOP_STATE_H
#define CC_LOOP_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyObject *unused; /* placeholder until the loop layer lands */
} cc_loop_state_t;

int cc_loop_init(PyObject *module, cc_loop_state_t *st);
int cc_loop_traverse(cc_loop_state_t *st, visitproc visit, void *arg);
void cc_loop_clear(cc_loop_state_t *st);

#endif
