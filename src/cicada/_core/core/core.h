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

#define CC_LIKELY(x) __builtin_expect(!!(x), 1)
#define CC_UNLIKELY(x) __builtin_expect(!!(x), 0)

#endif
