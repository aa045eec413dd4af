/* Handles are real asyncio.Handle / asyncio.TimerHandle instances. Outside debug mode they are
 * allocated here and their __slots__ filled directly (the offsets come from the classes' member
 * descriptors), which skips a Python-level __init__; in debug mode the classes are called so the
 * source traceback is captured. Nothing here touches the ready queue or the heap. */
#include "loop/loop_internal.h"

#include <structmember.h>

static int slot_offset(PyTypeObject *tp, const char *name, Py_ssize_t *out) {
    PyObject *d = PyObject_GetAttrString((PyObject *)tp, name);
    if (!d)
        return -1;
    int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
             ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
    if (ok)
        *out = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    if (!ok) {
        PyErr_Format(PyExc_RuntimeError, "cicada.loop: asyncio.%s.%s is not a slot", tp->tp_name,
                     name);
        return -1;
    }
    return 0;
}

int cc_loop_handles_load(cc_loop_state_t *st) {
    if (st->handles_loaded)
        return 0;
    PyObject *events = PyImport_ImportModule("asyncio.events");
    PyObject *tasks = NULL;
    if (!events)
        return -1;
    PyObject *h = PyObject_GetAttrString(events, "Handle");
    PyObject *th = h ? PyObject_GetAttrString(events, "TimerHandle") : NULL;
    Py_DECREF(events);
    if (!th)
        goto error;
    if (!PyType_Check(h) || !PyType_Check(th)) {
        PyErr_SetString(PyExc_TypeError, "asyncio.Handle is not a class");
        goto error;
    }
    PyTypeObject *ht = (PyTypeObject *)h, *tht = (PyTypeObject *)th;
    if (slot_offset(ht, "_callback", &st->off_callback) < 0 ||
        slot_offset(ht, "_args", &st->off_args) < 0 ||
        slot_offset(ht, "_cancelled", &st->off_cancelled) < 0 ||
        slot_offset(ht, "_loop", &st->off_loop) < 0 ||
        slot_offset(ht, "_source_traceback", &st->off_source_tb) < 0 ||
        slot_offset(ht, "_repr", &st->off_repr) < 0 ||
        slot_offset(ht, "_context", &st->off_context) < 0 ||
        slot_offset(tht, "_scheduled", &st->off_scheduled) < 0 ||
        slot_offset(tht, "_when", &st->off_when) < 0)
        goto error;
    tasks = PyImport_ImportModule("asyncio.tasks");
    if (!tasks)
        goto error;
    Py_CLEAR(st->task_type); /* a previous, failed load may have set it */
    Py_CLEAR(st->buffered_protocol_type);
    Py_CLEAR(st->future_type);
    st->task_type = PyObject_GetAttrString(tasks, "Task");
    Py_DECREF(tasks);
    if (!st->task_type)
        goto error;
    PyObject *protocols = PyImport_ImportModule("asyncio.protocols");
    if (!protocols)
        goto error;
    st->buffered_protocol_type = PyObject_GetAttrString(protocols, "BufferedProtocol");
    Py_DECREF(protocols);
    if (!st->buffered_protocol_type)
        goto error;
    PyObject *futures = PyImport_ImportModule("asyncio.futures");
    if (!futures)
        goto error;
    st->future_type = PyObject_GetAttrString(futures, "Future");
    Py_DECREF(futures);
    if (!st->future_type)
        goto error;
    if (!st->handle_free) {
        st->handle_free = PyMem_Calloc(CC_LOOP_HANDLE_FREELIST, sizeof(PyObject *));
        st->timer_free = PyMem_Calloc(CC_LOOP_HANDLE_FREELIST, sizeof(PyObject *));
        if (!st->handle_free || !st->timer_free) {
            PyErr_NoMemory();
            goto error;
        }
    }
    st->handle_type = ht;
    st->timer_handle_type = tht;
    st->handles_loaded = 1;
    return 0;
error:
    Py_XDECREF(h);
    Py_XDECREF(th);
    return -1;
}

static inline void set_slot(PyObject *obj, Py_ssize_t off, PyObject *v) {
    PyObject *old = CC_SLOT(obj, off);
    CC_SLOT(obj, off) = Py_NewRef(v);
    Py_XDECREF(old);
}

/* ctx NULL or None means "a copy of the current context", as asyncio does. A recycled handle
 * (cc_loop_handle_release) comes back with its default slots (_cancelled, _source_traceback,
 * _repr; a timer's _scheduled) already set and the others empty, so only those are filled. */
static PyObject *fill(cc_loop_t *loop, PyTypeObject *tp, PyObject *cb, PyObject *args,
                      PyObject *ctx) {
    cc_loop_state_t *st = loop->st;
    if (ctx == NULL || ctx == Py_None) {
        ctx = PyContext_CopyCurrent();
        if (!ctx)
            return NULL;
    } else {
        Py_INCREF(ctx);
    }
    PyObject *h;
    if (tp == st->handle_type && st->handle_free_n > 0) {
        h = st->handle_free[--st->handle_free_n];
    } else if (tp == st->timer_handle_type && st->timer_free_n > 0) {
        h = st->timer_free[--st->timer_free_n];
    } else {
        h = tp->tp_alloc(tp, 0);
        if (!h) {
            Py_DECREF(ctx);
            return NULL;
        }
        CC_SLOT(h, st->off_cancelled) = Py_NewRef(Py_False);
        CC_SLOT(h, st->off_source_tb) = Py_NewRef(Py_None);
        CC_SLOT(h, st->off_repr) = Py_NewRef(Py_None);
        if (tp == st->timer_handle_type)
            CC_SLOT(h, st->off_scheduled) = Py_NewRef(Py_False);
    }
    CC_SLOT(h, st->off_callback) = Py_NewRef(cb);
    CC_SLOT(h, st->off_args) = Py_NewRef(args);
    CC_SLOT(h, st->off_loop) = Py_NewRef((PyObject *)loop);
    CC_SLOT(h, st->off_context) = ctx;
    return h;
}

PyObject *cc_loop_handle_new(cc_loop_t *loop, PyObject *cb, PyObject *args, PyObject *ctx) {
    cc_loop_state_t *st = loop->st;
    if (CC_UNLIKELY(loop->debug)) {
        PyObject *a[4] = {cb, args, (PyObject *)loop, ctx ? ctx : Py_None};
        return PyObject_Vectorcall((PyObject *)st->handle_type, a, 4, NULL);
    }
    return fill(loop, st->handle_type, cb, args, ctx);
}

PyObject *cc_loop_timer_new(cc_loop_t *loop, PyObject *when, PyObject *cb, PyObject *args,
                            PyObject *ctx) {
    cc_loop_state_t *st = loop->st;
    if (CC_UNLIKELY(loop->debug)) {
        PyObject *a[5] = {when, cb, args, (PyObject *)loop, ctx ? ctx : Py_None};
        return PyObject_Vectorcall((PyObject *)st->timer_handle_type, a, 5, NULL);
    }
    PyObject *h = fill(loop, st->timer_handle_type, cb, args, ctx);
    if (!h)
        return NULL;
    CC_SLOT(h, st->off_when) = Py_NewRef(when);
    return h;
}

static inline PyObject *steal_slot(PyObject *obj, Py_ssize_t off) {
    PyObject *v = CC_SLOT(obj, off);
    CC_SLOT(obj, off) = NULL;
    return v;
}

void cc_loop_handle_release(cc_loop_state_t *st, PyObject *h) {
    PyTypeObject *tp = Py_TYPE(h);
    PyObject **list;
    int *n;
    if (tp == st->handle_type) {
        list = st->handle_free;
        n = &st->handle_free_n;
    } else if (tp == st->timer_handle_type) {
        list = st->timer_free;
        n = &st->timer_free_n;
    } else {
        Py_DECREF(h);
        return;
    }
    /* Only when the loop holds the last reference and no weak reference can see the reuse. */
    if (Py_REFCNT(h) != 1 || !list || *n >= CC_LOOP_HANDLE_FREELIST ||
        (tp->tp_weaklistoffset > 0 && *(PyObject **)((char *)h + tp->tp_weaklistoffset))) {
        Py_DECREF(h);
        return;
    }
    /* Park it first, release what it held afterwards: that release may run arbitrary code. The
     * default slots keep (or get back) their defaults, so fill() need not set them again. */
    int timer = tp == st->timer_handle_type;
    PyObject *cb = steal_slot(h, st->off_callback), *args = steal_slot(h, st->off_args),
             *ctx = steal_slot(h, st->off_context), *lp = steal_slot(h, st->off_loop),
             *when = timer ? steal_slot(h, st->off_when) : NULL, *tb = NULL, *repr = NULL,
             *cancelled = NULL, *sched = NULL;
    if (CC_UNLIKELY(CC_SLOT(h, st->off_source_tb) != Py_None)) {
        tb = CC_SLOT(h, st->off_source_tb);
        CC_SLOT(h, st->off_source_tb) = Py_NewRef(Py_None);
    }
    if (CC_UNLIKELY(CC_SLOT(h, st->off_repr) != Py_None)) {
        repr = CC_SLOT(h, st->off_repr);
        CC_SLOT(h, st->off_repr) = Py_NewRef(Py_None);
    }
    if (CC_SLOT(h, st->off_cancelled) != Py_False) {
        cancelled = CC_SLOT(h, st->off_cancelled);
        CC_SLOT(h, st->off_cancelled) = Py_NewRef(Py_False);
    }
    if (timer && CC_SLOT(h, st->off_scheduled) != Py_False) {
        sched = CC_SLOT(h, st->off_scheduled);
        CC_SLOT(h, st->off_scheduled) = Py_NewRef(Py_False);
    }
    list[(*n)++] = h;
    Py_XDECREF(cb);
    Py_XDECREF(args);
    Py_XDECREF(ctx);
    Py_XDECREF(lp);
    Py_XDECREF(tb);
    Py_XDECREF(repr);
    Py_XDECREF(when);
    Py_XDECREF(cancelled);
    Py_XDECREF(sched);
}

void cc_loop_handles_free(cc_loop_state_t *st) {
    while (st->handle_free_n > 0)
        Py_DECREF(st->handle_free[--st->handle_free_n]);
    while (st->timer_free_n > 0)
        Py_DECREF(st->timer_free[--st->timer_free_n]);
    PyMem_Free(st->handle_free);
    PyMem_Free(st->timer_free);
    st->handle_free = st->timer_free = NULL;
}

int cc_loop_handle_cancelled(cc_loop_state_t *st, PyObject *h) {
    return CC_SLOT(h, st->off_cancelled) == Py_True;
}

void cc_loop_handle_set_scheduled(cc_loop_state_t *st, PyObject *h, int scheduled) {
    set_slot(h, st->off_scheduled, scheduled ? Py_True : Py_False);
}

static int is_fatal(void) {
    return PyErr_ExceptionMatches(PyExc_SystemExit) ||
           PyErr_ExceptionMatches(PyExc_KeyboardInterrupt);
}

/* Hand a callback's exception to loop._cc_callback_error (which calls the exception handler);
 * only SystemExit and KeyboardInterrupt propagate, as in asyncio.Handle._run. */
static int report(cc_loop_t *loop, PyObject *h) {
    if (is_fatal())
        return -1;
    PyObject *exc = cc_err_take();
    if (!exc)
        return 0;
    PyObject *a[3] = {(PyObject *)loop, h, exc};
    PyObject *r = PyObject_VectorcallMethod(loop->st->str_cc_callback_error, a,
                                            3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(exc);
    if (!r) {
        if (is_fatal())
            return -1;
        PyErr_WriteUnraisable(h);
        return 0;
    }
    Py_DECREF(r);
    return 0;
}

int cc_loop_handle_run(cc_loop_t *loop, PyObject *h) {
    cc_loop_state_t *st = loop->st;
    PyObject *cb = CC_SLOT(h, st->off_callback), *args = CC_SLOT(h, st->off_args),
             *ctx = CC_SLOT(h, st->off_context);
    if (CC_UNLIKELY(!cb || !args || !ctx || !PyTuple_Check(args) || !PyContext_CheckExact(ctx))) {
        /* Something unusual (a subclass, a hand-made handle): let asyncio run it. */
        PyObject *r = PyObject_CallMethodNoArgs(h, st->str_run);
        if (!r)
            return is_fatal() ? -1 : report(loop, h);
        Py_DECREF(r);
        return 0;
    }
    Py_INCREF(cb);
    Py_INCREF(args);
    Py_INCREF(ctx);
    int entered = PyContext_Enter(ctx) == 0;
    if (!entered)
        PyErr_Clear(); /* entered higher up the stack (a nested run): run it in place */
    PyObject *res =
        PyObject_Vectorcall(cb, &PyTuple_GET_ITEM(args, 0), (size_t)PyTuple_GET_SIZE(args), NULL);
    if (entered) {
        /* PyContext_Exit cannot fail for a context we entered; keep a pending error intact. */
        if (CC_LIKELY(res != NULL)) {
            if (PyContext_Exit(ctx) < 0)
                PyErr_Clear();
        } else {
            PyObject *pending = cc_err_take();
            if (PyContext_Exit(ctx) < 0)
                PyErr_Clear();
            cc_err_give(pending);
        }
    }
    Py_DECREF(cb);
    Py_DECREF(args);
    Py_DECREF(ctx);
    if (!res)
        return report(loop, h);
    Py_DECREF(res);
    return 0;
}
