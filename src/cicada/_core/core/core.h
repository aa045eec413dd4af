/* Small helpers shared by every Python-facing layer: nothing here allocates or holds state. */
#ifndef CC_CORE_H
#define CC_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Propagate a non-zero result from a layer's traverse function. */
#define CC_TRY_VISIT(expr)                                                                         \
    do {                                                                                           \
        int cc_visit_rc_ = (expr);                                                                 \
        if (cc_visit_rc_)                                                                          \
            return cc_visit_rc_;                                                                   \
    } while (0)

/* Take the raised exception, normalized and with its traceback attached, clearing the error
 * indicator; NULL when none is set. One spelling for 3.11 (PyErr_Fetch) and 3.12+, where
 * PyErr_Fetch is deprecated and -Werror would reject it. */
static inline PyObject *cc_err_take(void) {
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (!type)
        return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    Py_DECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* Raise exc again (the reference is stolen); exc may be NULL, which clears nothing. */
static inline void cc_err_give(PyObject *exc) {
    if (!exc)
        return;
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

#define CC_LIKELY(x) __builtin_expect(!!(x), 1)
#define CC_UNLIKELY(x) __builtin_expect(!!(x), 0)

#endif
