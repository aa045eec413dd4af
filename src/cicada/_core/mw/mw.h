/* Internal interface of the middleware layer (cicada.middleware's C core). Other layers have no
 * reason to call into it; only mw_init.c and module wiring use these. */
#ifndef CC_MW_H
#define CC_MW_H

#include "module.h"

/* __vectorcalloffset__ members: 3.12 moved the constants into Python.h under new names. */
#if PY_VERSION_HEX >= 0x030C0000
#define CC_MW_T_PYSSIZET Py_T_PYSSIZET
#define CC_MW_T_OBJECT_EX Py_T_OBJECT_EX
#define CC_MW_READONLY Py_READONLY
#else
#include <structmember.h>
#define CC_MW_T_PYSSIZET T_PYSSIZET
#define CC_MW_T_OBJECT_EX T_OBJECT_EX
#define CC_MW_READONLY READONLY
#endif

/* For the few small helpers on every request's path that the compiler stops inlining as the
 * translation unit grows (a call, and the constants they are given, then cost on every use). */
#define CC_MW_HOT static inline __attribute__((always_inline))
/* Rare paths (errors, other tasks, anyio scopes): kept out of line and out of the hot code. */
#define CC_MW_COLD __attribute__((cold, noinline))

/* PyIter_Send without the call: its first step, the type's am_send, taken here (PyIter_Send
 * itself only for iterators without one). One libpython function less on every resumption. */
CC_MW_HOT PySendResult cc_mw_iter_send(PyObject *it, PyObject *arg, PyObject **out) {
    PyAsyncMethods *am = Py_TYPE(it)->tp_as_async;
    if (CC_LIKELY(am && am->am_send))
        return am->am_send(it, arg, out);
    return PyIter_Send(it, arg, out);
}

/* Creates the layer's heap types in `st` and adds MWDriver to the module. */
int cc_mw_types_init(PyObject *module, cc_mw_state_t *st);

/* mw_driver.c: the per-request driver of the downstream app. */
PyObject *cc_mw_driver_new(cc_mw_state_t *st, PyObject *mw, PyObject *scope, PyObject *receive,
                           PyObject *send, PyObject *loop, PyObject *task);
int cc_mw_current_context(cc_mw_state_t *st, PyObject **loop, PyObject **task);
/* Done with a driver (steals the reference): one only the caller holds is emptied and kept
 * alive for the next request, instead of being freed. */
void cc_mw_driver_release(cc_mw_state_t *st, PyObject *driver);
PyObject *cc_mw_driver_request(PyObject *driver); /* borrowed */
PyObject *cc_mw_driver_info(PyObject *driver);    /* borrowed; NULL when the app sent none */
int cc_mw_driver_body_done(PyObject *driver);     /* 1 once the app sent its last body message */
/* The app's start message (borrowed) if it still carries `status` and `headers`, else NULL. */
PyObject *cc_mw_unchanged_start(PyObject *driver, PyObject *status, PyObject *headers);
PyObject *cc_mw_call_next(PyObject *driver, PyObject *request);
PyObject *cc_mw_next_message(PyObject *driver, PyObject *unused);
PyObject *cc_mw_finish(PyObject *driver, PyObject *unused);
/* cc_mw_finish for the call: None (new ref) instead of an awaitable when the app is done. */
PyObject *cc_mw_finish_step(PyObject *driver);
PyObject *cc_mw_abort(PyObject *driver, PyObject *unused);
PyObject *cc_mw_relay_driver(cc_mw_state_t *st, PyObject *response);
/* Relay mode for an untouched call_next response whose start went out: a step running the app
 * to its end with body messages forwarded as sent, or None when the driver can't (new ref). */
PyObject *cc_mw_pass(PyObject *driver);
int cc_mw_final_sent(PyObject *driver); /* relay mode forwarded the last body message */
/* A layer about to send `msg`, the start of its untouched call_next `response`, to `driver`
 * (the layer above): 1 if that driver will adopt the response instead of making one. */
int cc_mw_offer(PyObject *driver, PyObject *response, PyObject *msg);
/* Dispatch fusion (MWFuse in mw_call.c): the layer's call runs the app's start step itself, and
 * dispatch goes on inside the app's send. The driver knows its call (borrowed, NULL to forget). */
void cc_mw_driver_set_call(PyObject *driver, PyObject *call);
int cc_mw_is_offer(PyObject *y, PyObject *driver); /* `y`: driver's start step, offered to run */
int cc_mw_is_defer(PyObject *y, PyObject *driver); /* `y`: a step put off while the app runs */
void cc_mw_step_return(PyObject *step, PyObject *value); /* steals: the step's next result */
/* After a fused start went up: relay mode (1) or body messages pulled by the step (0). */
int cc_mw_fused_pass(PyObject *driver, PyObject *step);
/* A fused start failed to go up: the step drains the app, which gets CancelledError. */
int cc_mw_fused_abort(PyObject *driver, PyObject *step);
PyObject *cc_mw_fusing_step(PyObject *call); /* borrowed: the start step the call runs, or NULL */
int cc_mw_can_fuse(PyObject *call);          /* the call awaits dispatch and may run its step */
/* `msg`: the app's start; the fuse does cc_mw_fuse_begin when first resumed. */
PyObject *cc_mw_fuse_new(cc_mw_state_t *st, PyObject *call, PyObject *msg);
/* The start goes into the fused path (1; dispatch's call_next returns the response), or not
 * (0: awaited by another task than the app's, or the driver moved on): then cc_mw_plain_send. */
int cc_mw_fuse_begin(PyObject *driver, PyObject *call, PyObject *msg);
PyObject *cc_mw_plain_send(PyObject *driver, PyObject *msg); /* the send, without fusion */
/* Another task wants the app while dispatch runs inside its fused send: the call takes dispatch
 * back (1), or there is nothing to take (0). */
int cc_mw_fuse_steal(PyObject *call);
int cc_mw_fuse_handoff(PyObject *y, PyObject *driver); /* `y` (an MWFuse) returns to the call */
/* The iterator behind an awaitable (steals `o`; NULL in, NULL out). */
PyObject *cc_mw_awaitable_iter(PyObject *o);
PyObject *cc_mw_msg_get(PyObject *msg, PyObject *key, PyObject *dflt);
/* send(msg) from a layer's C call; `type` is msg's "type" when the caller knows it, else NULL.
 * When `send` is a driver stepping the caller right now and `handed` is given, the message is
 * handed over directly: *handed = 1, the result is None, and the caller must yield `send` itself
 * (once) to give control back to that driver. Otherwise an awaitable. */
PyObject *cc_mw_layer_send(cc_mw_state_t *st, PyObject *send, PyObject *msg, PyObject *type,
                           int *handed);

/* mw_call.c: HTTPMiddleware.__call__ as one awaitable; mw_setup installs it. */
int cc_mw_call_type_init(PyObject *module, cc_mw_state_t *st);
PyObject *cc_mw_call(cc_mw_state_t *st, PyObject *self, PyObject *const *args);
/* 1 if `app` is an HTTPMiddleware whose __call__ is still cc_mw_call, 0 if not, -1 error. */
int cc_mw_is_layer(cc_mw_state_t *st, PyObject *app);
PyObject *cc_mw_setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* A __slots__ member of a Python object, by its offset (see mw_setup): what the member
 * descriptor would do, without looking the descriptor up on every access. */
static inline PyObject *cc_mw_slot(PyObject *obj, Py_ssize_t off) { /* borrowed, NULL unset */
    return *(PyObject **)((char *)obj + off);
}

static inline void cc_mw_slot_set(PyObject *obj, Py_ssize_t off, PyObject *value) {
    Py_XSETREF(*(PyObject **)((char *)obj + off), Py_NewRef(value));
}

/* mw.app / mw.dispatch_func (new ref): read from its slot when mw is exactly HTTPMiddleware. */
static inline PyObject *cc_mw_layer_attr(cc_mw_state_t *st, PyObject *mw, Py_ssize_t off,
                                         PyObject *name) {
    if (Py_TYPE(mw) == (PyTypeObject *)st->layer_type) {
        PyObject *v = cc_mw_slot(mw, off);
        if (v)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(mw, name);
}

/* A recycled object of type `tp` with a fresh reference, or NULL when the freelist is empty.
 * What PyObject_Init does for a heap type, inline: that function is on no other path of a
 * request, so calling it costs instruction-cache misses of its own. */
static inline PyObject *cc_mw_fl_pop(cc_mw_freelist_t *fl, PyTypeObject *tp) {
    if (fl->n == 0)
        return NULL;
    PyObject *op = fl->items[--fl->n];
    Py_SET_TYPE(op, tp);
    Py_INCREF(tp);
    Py_SET_REFCNT(op, 1);
    return op;
}

/* A spare object (see cc_mw_state_t.spare_call) nothing else holds any more, now ours (the list
 * lets it go), or NULL. */
static inline PyObject *cc_mw_spare_take(cc_mw_freelist_t *sp) {
    for (int i = sp->n - 1; i >= 0; i--) {
        PyObject *op = sp->items[i];
        if (Py_REFCNT(op) == 1) {
            sp->items[i] = sp->items[--sp->n];
            return op;
        }
    }
    return NULL;
}

/* `op`, done with and holding no references, joins the spare list if there is room. */
static inline void cc_mw_spare_keep(cc_mw_freelist_t *sp, PyObject *op) {
    if (sp->n < CC_MW_SPARE_MAX)
        sp->items[sp->n++] = Py_NewRef(op);
}

/* Keeps a dead (untracked, cleared) object for reuse; 0 when the freelist is full. */
static inline int cc_mw_fl_push(cc_mw_freelist_t *fl, PyObject *op) {
    if (fl->n >= CC_MW_FREELIST_MAX)
        return 0;
    fl->items[fl->n++] = op;
    return 1;
}

/* A live object kept by cc_mw_pool_keep (our reference; its slots empty), or NULL. */
static inline PyObject *cc_mw_pool_pop(cc_mw_freelist_t *pool) {
    return pool->n ? pool->items[--pool->n] : NULL;
}

/* Done with `obj`, an instance of exactly `tp` (steals our reference). When nothing else holds
 * it, not even a weak reference, it is emptied as its deallocation would empty it (the n
 * __slots__ at `offs`, its instance dict) and kept in `pool` for the next request instead of
 * being freed; otherwise the reference is dropped. */
void cc_mw_pool_keep(cc_mw_freelist_t *pool, PyObject *obj, PyObject *tp, const Py_ssize_t *offs,
                     int n);

/* Module-level functions of the layer (mw_setup, mw_send_response helpers). */
extern PyMethodDef cc_mw_functions[];

#endif
