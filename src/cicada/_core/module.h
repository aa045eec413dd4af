/* Module state shared by every Python-facing layer of cicada._core (PEP 630).
 * Each layer owns one sub-struct and one init/traverse/clear trio; module.c only wires them. */
#ifndef CC_MODULE_H
#define CC_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "core/core.h"

#include "loop/loop_state.h"
#include "asgi/asgi_state.h"
#include "mw/mw_state.h"

typedef struct {
    cc_loop_state_t loop;
    cc_asgi_state_t asgi;
    cc_mw_state_t mw;
} cc_state_t;

extern PyModuleDef cc_module_def;

static inline cc_state_t *cc_state(PyObject *module) {
    return (cc_state_t *)PyModule_GetState(module);
}

/* The state of the module that defined `type` (works for subclasses too). */
static inline cc_state_t *cc_state_from_type(PyTypeObject *type) {
    PyObject *mod = PyType_GetModuleByDef(type, &cc_module_def);
    return mod ? cc_state(mod) : NULL;
}

#endif
