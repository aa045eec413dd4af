/* cicada._core: the single extension module. It creates the module state and asks each layer to
 * add its types and interned names; it holds no logic of its own. */
#include "module.h"


static int cc_module_exec(PyObject *module) {
    cc_state_t *st = cc_state(module);
    if (cc_loop_init(module, &st->loop) < 0)
        return -1;
    if (cc_asgi_init(module, &st->asgi) < 0)
        return -1;
    if (cc_mw_init(module, &st->mw) < 0)
        return -1;
    return 0;
}

static int cc_module_traverse(PyObject *module, visitproc visit, void *arg) {
    cc_state_t *st = cc_state(module);
    if (!st)
        return 0;
    CC_TRY_VISIT(cc_loop_traverse(&st->loop, visit, arg));
    CC_TRY_VISIT(cc_asgi_traverse(&st->asgi, visit, arg));
    CC_TRY_VISIT(cc_mw_traverse(&st->mw, visit, arg));
    return 0;
}

static int cc_module_clear(PyObject *module) {
    cc_state_t *st = cc_state(module);
    if (!st)
        return 0;
    cc_loop_clear(&st->loop);
    cc_asgi_clear(&st->asgi);
    cc_mw_clear(&st->mw);
    return 0;
}

static void cc_module_free(void *module) { cc_module_clear((PyObject *)module); }

static PyModuleDef_Slot cc_module_slots[] = {
    {Py_mod_exec, cc_module_exec},
    {0, NULL},
};

PyModuleDef cc_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cicada._core",
    .m_doc = "cicada's C core.",
    .m_size = sizeof(cc_state_t),
    .m_slots = cc_module_slots,
    .m_traverse = cc_module_traverse,
    .m_clear = cc_module_clear,
    .m_free = cc_module_free,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&cc_module_def); }
