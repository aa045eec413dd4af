/* Internal interface of the middleware layer (cicada.middleware's C core). Other layers have no
 * reason to call into it; only mw_init.c and module wiring use these. */
#ifndef CC_MW_H
#define CC_MW_H

#include "module.h"

/* Creates the layer's heap types in `st` and adds MWDriver to the module. */
int cc_mw_types_init(PyObject *module, cc_mw_state_t *st);

/* Module-level functions of the layer (mw_setup, mw_send_response helpers). */
extern PyMethodDef cc_mw_functions[];

#endif
