/* Module state owned by the asgi layer: its heap types and interned names. */
#ifndef CC_ASGI_STATE_H
#define CC_ASGI_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyTypeObject *request_parser_type;
} cc_asgi_state_t;

int cc_asgi_init(PyObject *module, cc_asgi_state_t *st);
int cc_asgi_traverse(cc_asgi_state_t *st, visitproc visit, void *arg);
void cc_asgi_clear(cc_asgi_state_t *st);

#endif
