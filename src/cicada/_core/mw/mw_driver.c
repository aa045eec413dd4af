/* The HTTPMiddleware driver: runs one layer's downstream ASGI app inside the caller's task by
 * stepping its coroutine by hand, so call_next costs no task, stream or task switch. It must
 * never poll receive on its own, never create tasks, and never buffer a response body. */
#include "mw/mw.h"

#include <stddef.h>
#include <string.h>

/* Where the exchange with the downstream app stands. */
enum { PH_INIT, PH_START, PH_BODY, PH_APP_DONE, PH_SENT };
/* What a step awaitable runs the app for. */
enum {
    G_VALUE,   /* already done: returns `value` */
    G_SUSPEND, /* the app's own send: yields itself once, so its driver takes the message */
    G_START,   /* call_next: until http.response.start, returns the response object */
    G_BODY,    /* next_message: until the next body message, returns it (None at the end) */
    G_CHUNK,   /* body_iterator.__anext__: like G_BODY but returns bytes */
    G_DRAIN,   /* after the response is sent: until the app returns */
    G_PASS,    /* relay mode: until the app returns, its body messages going straight up */
    G_FWD,     /* a body message forwarded in relay mode: awaits the upstream send in `value` */
    G_RECV,    /* the app's receive(): awaits the upstream receive in `value`, notes its message */
    G_CANCEL,  /* relay mode failed: raises CancelledError into the app, as an abort would */
    G_HOLD,    /* fused (see drv_fuse_send): the app waits in its send while dispatch goes on */
    G_YIELD,   /* a dropped send: gives the loop one turn (a bare yield), then returns None */
};
/* Goals that run the app to its end without taking messages from it. */
#define PASSIVE(goal) ((goal) == G_DRAIN || (goal) == G_PASS || (goal) == G_HOLD)
/* How a step left its last resumption. W_OFFER: a start step that yielded itself to the layer's
 * call, which runs it instead of dispatch (cc_mw_is_offer); W_DEFER: a step awaited while its
 * driver steps the app (dispatch fused into the app's send), yielded itself to be run later. */
enum { W_NONE, W_PROXY, W_PASSED, W_CHILD, W_OFFER, W_DEFER };

/* The references the driver owns, in the order drv_clear drops them: one array, so that
 * clear, traverse and set-up are loops instead of a stretch of code per field. */
#define DRV_REFS(X)                                                                                \
    X(mw)                                                                                          \
    X(scope)                                                                                       \
    X(receive)                                                                                     \
    X(send)                                                                                        \
    X(request)                                                                                     \
    X(coro) X(task) X(loop) X(msg) X(msg_type) X(susp) X(resume) X(waiting) X(proxy) X(queue)      \
        X(deferred) X(info) X(start) X(start_status) X(start_headers) X(replay) X(ts)              \
            X(outer_scope) X(app_scope) X(child) X(relay_error) X(offer) X(offer_msg)
#define DRV_COUNT(f) +1
enum { DRV_NREFS = 0 DRV_REFS(DRV_COUNT) };
#undef DRV_COUNT

typedef struct {
    PyObject_HEAD cc_mw_state_t *st;
    union {
        PyObject *refs[DRV_NREFS];
        struct {
            PyObject *mw, *scope, *receive, *send, *request;
            PyObject *coro;     /* the app's awaitable iterator once call_next ran */
            PyObject *task;     /* the task that called call_next */
            PyObject *loop;     /* fetched the first time a future is needed */
            PyObject *msg;      /* message handed over by an in-task send */
            PyObject *msg_type; /* its "type", already read by that send */
            PyObject *susp;     /* the G_SUSPEND step that send returned, until `msg` is taken */
            PyObject *resume;   /* value to send into / exception to throw into the app next */
            PyObject *waiting;  /* a future the app awaits, watched while a consumer waits */
            PyObject *proxy;    /* the future our caller's task sleeps on instead of `waiting` */
            PyObject *queue;    /* [(message, future)] sent from other tasks, oldest first */
            PyObject *deferred; /* futures of final messages, released once the response is sent */
            PyObject *info;     /* http.response.debug info */
            PyObject *start;    /* the app's http.response.start message */
            /* the status and header list `start` carried when it was sent
             * (cc_mw_unchanged_start) */
            PyObject *start_status, *start_headers;
            PyObject *replay; /* request body read by dispatch, replayed to the app */
            /* anyio keeps one "current cancel scope" per task. When the app parks inside its own
             * scopes (a task group streaming from a child task) while dispatch runs in the same
             * task, each side gets its own view: ts is anyio's TaskState of `task`, swapped
             * around every app step. */
            PyObject *ts, *outer_scope, *app_scope;
            /* Detached: call_next was awaited from another task than dispatch's (wait_for,
             * create_task), so the app gets a task of its own, as under BaseHTTPMiddleware; all
             * its messages then come through `queue`. */
            PyObject *child;
            /* what the upstream send raised in relay mode (see `pass` below) */
            PyObject *relay_error;
            /* A cicada layer below about to send us its start message built from its own
             * untouched call_next response (cc_mw_offer): that response becomes ours instead
             * of a new one. */
            PyObject *offer, *offer_msg;
        };
    };
    /* From here to the end: no references, all zero for a new driver (see cc_mw_driver_new). */
    PyObject *call; /* borrowed: the layer's MWCall while it lives (mw_call.c), or NULL */
    void *reader;   /* not a reference: the step suspended on the app for a message, or NULL */
    int entangled, app_view;
    int parked_both; /* the task is in dispatch's scope too while it waits on the app */
    int child_watched, child_cancelled;
    int phase, stepping, coro_done, started, resume_throw, called, body_started, replay_state;
    /* Relay mode (cc_mw_pass): once dispatch handed back call_next's response untouched, the
     * app's body messages are forwarded to our `send` from inside the app's own send, with no
     * suspension of the app per message. `final_fwd`: the last one went; `relay_error`: what
     * the upstream send raised (the app got CancelledError instead, as after an abort). */
    int pass, final_fwd;
    int fuse_offered;          /* its start step was offered to the call (fusion may follow) */
    int iter_closed;           /* dispatch called body_iterator.aclose(): __anext__ ends the body */
    vectorcallfunc vectorcall; /* the driver is the app's send/receive: no args tuple */
} drv_t;

#define DRV_CHECK(f)                                                                               \
    _Static_assert(offsetof(drv_t, f) == offsetof(drv_t, refs) + sizeof(PyObject *) * DRV_I_##f,   \
                   "drv_t.refs out of order");
#define DRV_INDEX(f) DRV_I_##f,
enum { DRV_REFS(DRV_INDEX) DRV_I_END };
DRV_REFS(DRV_CHECK)
#undef DRV_INDEX
#undef DRV_CHECK

/* One await on the driver. G_VALUE and G_SUSPEND steps are "done" objects: not tracked by the
 * GC, they hold no driver reference (`owner` is only compared, never dereferenced). */
typedef struct {
    PyObject_HEAD cc_mw_state_t *st;
    drv_t *d; /* strong; NULL for done objects */
    void *owner;
    PyObject *value;
    PyObject *fuse_ret; /* returned by the next resumption: call_next's result from a fused call */
    int goal, wait, swallow, finished, active;
} step_t;

CC_MW_HOT PyObject *step_new(cc_mw_state_t *st, drv_t *d, int goal, PyObject *value);
static PyObject *drv_send(drv_t *d, PyObject *msg, int *handed);
static PyObject *drv_send_typed(drv_t *d, PyObject *msg, PyObject *type, int more, int *handed);

/* ---- small helpers ------------------------------------------------------------------------ */

/* 1 if something holds a weak reference to `obj` (tp_weaklistoffset is negative where the list
 * is managed by the interpreter, 3.12+, and still locates it). */
static inline int has_weakrefs(PyObject *obj) {
    Py_ssize_t off = Py_TYPE(obj)->tp_weaklistoffset;
    return off && *(PyObject **)((char *)obj + off) != NULL;
}

/* Requests, responses and their headers are Python-level Starlette objects: a fresh one costs an
 * allocation, and freeing it walks the class hierarchy (subtype_dealloc) and touches several
 * type objects. Reusing one costs a few stores (see cc_mw_pool_keep in mw.h). */
void cc_mw_pool_keep(cc_mw_freelist_t *pool, PyObject *obj, PyObject *tp, const Py_ssize_t *offs,
                     int n) {
    if (pool->n >= CC_MW_FREELIST_MAX || Py_TYPE(obj) != (PyTypeObject *)tp ||
        Py_REFCNT(obj) != 1 || has_weakrefs(obj) || PyErr_Occurred())
        goto drop;
    for (int i = 0; i < n; i++)
        Py_CLEAR(*(PyObject **)((char *)obj + offs[i]));
    /* the first time, this makes the (empty) dict the instance keeps from then on */
    PyObject *dict = PyObject_GenericGetDict(obj, NULL);
    if (!dict) {
        PyErr_Clear();
        goto drop;
    }
    if (PyDict_GET_SIZE(dict))
        PyDict_Clear(dict);
    Py_DECREF(dict);
    /* emptying it ran arbitrary code (a __del__), which may have got hold of it */
    if (Py_REFCNT(obj) != 1 || has_weakrefs(obj) || Py_TYPE(obj) != (PyTypeObject *)tp)
        goto drop;
    pool->items[pool->n++] = obj;
    return;
drop:
    Py_DECREF(obj);
}

/* Raises `exc` (an instance) as is: no implicit chaining to an exception being handled. */
static CC_MW_COLD void raise_exc(PyObject *exc) {
    cc_err_give(Py_NewRef(exc));
}

/* Saves and restores the error indicator around cleanup calls made from dealloc. */
typedef struct {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc;
#else
    PyObject *type, *value, *tb;
#endif
} saved_err_t;

static CC_MW_COLD void err_save(saved_err_t *e) {
#if PY_VERSION_HEX >= 0x030C0000
    e->exc = PyErr_GetRaisedException();
#else
    PyErr_Fetch(&e->type, &e->value, &e->tb);
#endif
}

static CC_MW_COLD void err_restore(saved_err_t *e) {
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(e->exc);
#else
    PyErr_Restore(e->type, e->value, e->tb);
#endif
}

/* Exact-string test against one of the interned ASGI type strings. Dotted literals like
 * "http.response.start" are not interned by the compiler, but an app sends the same literal
 * object every time: the last equal str seen is kept (`*alias`), so identity hits first. */
static __attribute__((noinline)) int str_is_slow(PyObject *a, PyObject *interned,
                                                 PyObject **alias) {
    if (PyUnicode_KIND(a) != PyUnicode_KIND(interned))
        return 0;
    if (memcmp(PyUnicode_DATA(a), PyUnicode_DATA(interned),
               (size_t)PyUnicode_GET_LENGTH(a) * PyUnicode_KIND(a)) != 0)
        return 0;
    if (PyUnicode_CheckExact(a))
        Py_XSETREF(*alias, Py_NewRef(a));
    return 1;
}

CC_MW_HOT int str_is(PyObject *a, PyObject *interned, PyObject **alias) {
    if (a == interned || a == *alias)
        return 1;
    if (!PyUnicode_Check(a) || PyUnicode_GET_LENGTH(a) != PyUnicode_GET_LENGTH(interned))
        return 0;
    return str_is_slow(a, interned, alias);
}

/* a == one of the ASGI type strings with an alias slot in the module state */
#define STR_IS(st, a, name) str_is((a), (st)->s_##name, &(st)->alias_##name)

/* New reference to message[key] or `dflt` (new ref) when absent; NULL on error. */
PyObject *cc_mw_msg_get(PyObject *msg, PyObject *key, PyObject *dflt) {
    if (CC_LIKELY(PyDict_CheckExact(msg))) {
        PyObject *v = PyDict_GetItemWithError(msg, key);
        if (v)
            return Py_NewRef(v);
        if (PyErr_Occurred())
            return NULL;
        return Py_XNewRef(dflt);
    }
    PyObject *v = PyObject_GetItem(msg, key);
    if (!v && dflt && PyErr_ExceptionMatches(PyExc_KeyError)) {
        PyErr_Clear();
        return Py_NewRef(dflt);
    }
    return v;
}

static CC_MW_COLD const char *dispatch_name(drv_t *d, PyObject **hold) {
    *hold = NULL;
    PyObject *fn = PyObject_GetAttr(d->mw, d->st->s_dispatch_func);
    if (!fn) {
        PyErr_Clear();
        return "?";
    }
    PyObject *name = PyObject_GetAttr(fn, d->st->s_qualname);
    Py_DECREF(fn);
    if (!name || !PyUnicode_Check(name)) {
        PyErr_Clear();
        Py_XDECREF(name);
        return "?";
    }
    *hold = name;
    const char *s = PyUnicode_AsUTF8(name);
    if (!s) {
        PyErr_Clear();
        return "?";
    }
    return s;
}

/* asyncio.current_task(loop) (new ref). On 3.11 that function is Python code over a dict
 * that mw_setup hands us, so the dict is read directly. */
static PyObject *task_of(cc_mw_state_t *st, PyObject *loop) {
    if (st->current_tasks && loop) {
        PyObject *t = PyDict_GetItemWithError(st->current_tasks, loop);
        if (t)
            return Py_NewRef(t);
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    if (loop)
        return PyObject_CallOneArg(st->current_task, loop);
    return PyObject_CallNoArgs(st->current_task);
}

static PyObject *current_task(drv_t *d) {
    return task_of(d->st, d->loop);
}

/* The running loop and task for a new driver (new refs); *loop is None off asyncio. Looking up
 * the running loop costs a getpid() syscall on 3.11, so nested layers borrow the loop from the
 * driver stepping them, and on 3.11 an outermost layer first tries the loop this thread ran
 * last; current_task(loop) with an explicit loop is a dict lookup. */
int cc_mw_current_context(cc_mw_state_t *st, PyObject **loop, PyObject **task) {
    *task = *loop = NULL;
    drv_t *outer = (drv_t *)st->stepping_driver;
    if (outer && outer->loop) {
        *loop = Py_NewRef(outer->loop);
#if PY_VERSION_HEX < 0x030C0000
        /* before 3.12 (no eager tasks) only the stepping driver's task runs inside its step */
        if (outer->task) {
            *task = Py_NewRef(outer->task);
            return 0;
        }
#endif
    } else if (st->current_tasks && st->last_loop &&
               PyThread_get_thread_ident() == st->last_loop_thread) {
        /* 3.11: the loop this thread ran last still has a task being stepped, so that step is
         * below us (one loop per thread at a time; the at-fork hook forgets it in a child) */
        PyObject *t = PyDict_GetItemWithError(st->current_tasks, st->last_loop);
        if (t) {
            *loop = Py_NewRef(st->last_loop);
            *task = Py_NewRef(t);
            return 0;
        }
        if (PyErr_Occurred())
            return -1;
    }
    if (!*loop) {
        if (!(*loop = PyObject_CallNoArgs(st->get_running_loop)))
            return -1;
        if (*loop != Py_None && st->current_tasks) {
            Py_XSETREF(st->last_loop, Py_NewRef(*loop));
            st->last_loop_thread = PyThread_get_thread_ident();
        }
    }
    if (*loop == Py_None)
        return 0;
    *task = task_of(st, *loop);
    if (!*task) {
        Py_CLEAR(*loop);
        return -1;
    }
    return 0;
}

static PyObject *get_loop(drv_t *d) {
    if (!d->loop) {
        d->loop = PyObject_CallMethodNoArgs(d->task ? d->task : Py_None, d->st->s_get_loop);
        if (!d->loop)
            return NULL;
    }
    return d->loop;
}

static PyObject *new_future(drv_t *d) {
    PyObject *loop = get_loop(d);
    return loop ? PyObject_CallMethodNoArgs(loop, d->st->s_create_future) : NULL;
}

/* 1 if fut.done(), 0 if not, -1 on error. */
static int fut_done(drv_t *d, PyObject *fut) {
    PyObject *r = PyObject_CallMethodNoArgs(fut, d->st->s_done);
    if (!r)
        return -1;
    int v = PyObject_IsTrue(r);
    Py_DECREF(r);
    return v;
}

static CC_MW_COLD int fut_release(drv_t *d, PyObject *fut) {
    int done = fut_done(d, fut);
    if (done != 0)
        return done < 0 ? -1 : 0;
    PyObject *r = PyObject_CallMethodOneArg(fut, d->st->s_set_result, Py_None);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static PyObject *wake_callback(drv_t *d);

/* Stop watching the app's future; cancel it too when the app is being cancelled. */
static CC_MW_COLD int drv_unwatch(drv_t *d, int cancel) {
    PyObject *fut = d->waiting, *cb = NULL, *r = NULL;
    if (!fut)
        return 0;
    d->waiting = NULL;
    cb = wake_callback(d);
    if (!cb)
        goto error;
    r = PyObject_CallMethodOneArg(fut, d->st->s_remove_done_callback, cb);
    if (!r)
        goto error;
    Py_CLEAR(r);
    if (cancel) {
        r = PyObject_CallMethodNoArgs(fut, d->st->s_cancel);
        if (!r)
            goto error;
        Py_CLEAR(r);
    }
    Py_DECREF(cb);
    Py_DECREF(fut);
    return 0;
error:
    Py_XDECREF(cb);
    Py_DECREF(fut);
    return -1;
}

/* Release every producer blocked in a cross-task send: the response is gone. */
static int drv_release_all(drv_t *d) {
    int rc = 0;
    PyObject *lists[2] = {d->queue, d->deferred};
    d->queue = d->deferred = NULL;
    for (int i = 0; i < 2; i++) {
        PyObject *l = lists[i];
        if (!l)
            continue;
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(l); j++) {
            PyObject *item = PyList_GET_ITEM(l, j);
            PyObject *fut = PyTuple_Check(item) ? PyTuple_GET_ITEM(item, 1) : item;
            if (rc == 0 && fut_release(d, fut) < 0)
                rc = -1;
        }
        Py_DECREF(l);
    }
    return rc;
}

static int set_resume(drv_t *d, PyObject *value, int is_throw) {
    Py_XSETREF(d->resume, Py_XNewRef(value));
    d->resume_throw = is_throw;
    return 0;
}

/* anyio's TaskState of `task`, or NULL (no error) when anyio's asyncio backend never saw it. */
static __attribute__((noinline)) PyObject *anyio_task_state(cc_mw_state_t *st, PyObject *task) {
    if (!st->anyio_states) {
        /* the interpreter's module dict, kept: it is the same object for the interpreter's life */
        if (CC_UNLIKELY(!st->modules))
            st->modules = Py_NewRef(PyImport_GetModuleDict());
        PyObject *mods = st->modules;
        /* nothing to find until anyio's asyncio backend is imported: look again only once
         * sys.modules has changed size (importing it adds an entry) */
        if (!PyDict_Check(mods) || PyDict_GET_SIZE(mods) == st->anyio_miss_mods)
            return NULL;
        PyObject *mod = PyDict_GetItemWithError(mods, st->s_anyio_backend);
        if (!mod) {
            PyErr_Clear();
            st->anyio_miss_mods = PyDict_GET_SIZE(mods);
            return NULL;
        }
        PyObject *wkd = PyObject_GetAttrString(mod, "_task_states");
        if (!wkd) {
            PyErr_Clear();
            return NULL;
        }
        st->anyio_states = PyObject_GetAttrString(wkd, "data");
        Py_DECREF(wkd);
        if (!st->anyio_states || !PyDict_Check(st->anyio_states)) {
            PyErr_Clear();
            Py_CLEAR(st->anyio_states);
            return NULL;
        }
    }
    /* WeakKeyDictionary keys are weakrefs; a plain weakref to the same task compares equal. */
    PyObject *wr = PyWeakref_NewRef(task, NULL);
    if (!wr) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *ts = PyDict_GetItemWithError(st->anyio_states, wr);
    Py_DECREF(wr);
    if (!ts) {
        PyErr_Clear();
        return NULL;
    }
    return Py_NewRef(ts);
}

/* anyio's TaskState of d->task: the one of the driver stepping us when it runs in the same task
 * (a TaskState lives as long as its task), so a stack of layers looks it up once. */
CC_MW_HOT PyObject *drv_task_state(drv_t *d) {
    cc_mw_state_t *st = d->st;
    drv_t *outer = (drv_t *)st->stepping_driver;
    if (outer && outer != d && outer->ts && outer->task == d->task)
        return Py_NewRef(outer->ts);
    /* the common case, anyio's backend not imported since the last look, without a call */
    if (CC_LIKELY(!st->anyio_states && st->modules) &&
        PyDict_GET_SIZE(st->modules) == st->anyio_miss_mods)
        return NULL;
    return anyio_task_state(st, d->task);
}

/* Moves `task` from one anyio scope's task set to another's (cancel delivery follows). */
static CC_MW_COLD int scope_move_task(cc_mw_state_t *st, PyObject *from, PyObject *to,
                                      PyObject *task) {
    PyObject *scopes[2] = {from, to};
    for (int i = 0; i < 2; i++) {
        if (scopes[i] == Py_None)
            continue;
        PyObject *tasks = PyObject_GetAttr(scopes[i], st->s_tasks);
        if (!tasks)
            return -1;
        int rc =
            PySet_Check(tasks) ? (i == 0 ? PySet_Discard(tasks, task) : PySet_Add(tasks, task)) : 0;
        Py_DECREF(tasks);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Switches anyio's view of our task between the app's open scopes (`to_app`) and dispatch's. */
static CC_MW_COLD int drv_view_switch(drv_t *d, int to_app) {
    cc_mw_state_t *st = d->st;
    PyObject *cur = PyObject_GetAttr(d->ts, st->s_cancel_scope);
    if (!cur)
        return -1;
    PyObject *next = to_app ? d->app_scope : d->outer_scope;
    next = next ? next : Py_None;
    Py_INCREF(next);
    int rc = scope_move_task(st, cur, next, d->task);
    if (rc == 0)
        rc = PyObject_SetAttr(d->ts, st->s_cancel_scope, next);
    if (rc == 0) {
        if (to_app)
            Py_XSETREF(d->outer_scope, cur);
        else
            Py_XSETREF(d->app_scope, cur);
        d->app_view = to_app;
    } else
        Py_DECREF(cur);
    if (rc == 0 && to_app && next != Py_None) {
        /* a cancellation of the app's scopes issued while dispatch ran found no task to cancel
         * and stopped: start it again now that the task is back in them */
        PyObject *r = PyObject_CallOneArg(st->anyio_restart, next);
        if (r)
            Py_DECREF(r);
        else
            rc = -1;
    }
    Py_DECREF(next);
    return rc;
}

/* The task waits on the app's future on behalf of dispatch (a step dispatch awaits): a
 * cancellation of dispatch's scopes must reach it too, not only one of the app's. Either way it
 * goes into the app, which ends, and its outcome back to dispatch (step_resume, W_PROXY). */
static CC_MW_COLD int drv_park_both(drv_t *d) {
    if (!d->outer_scope || d->outer_scope == Py_None)
        return 0;
    if (scope_move_task(d->st, Py_None, d->outer_scope, d->task) < 0)
        return -1;
    d->parked_both = 1;
    return 0;
}

static CC_MW_COLD void drv_unpark_both(drv_t *d) {
    d->parked_both = 0;
    saved_err_t e;
    err_save(&e);
    if (scope_move_task(d->st, d->outer_scope, Py_None, d->task) < 0)
        PyErr_WriteUnraisable((PyObject *)d);
    err_restore(&e);
}

/* Runs around every step: nothing to do unless the app left anyio scopes open in our task. */
static inline int drv_view(drv_t *d, int to_app) {
    if (CC_LIKELY(!d->entangled) || d->app_view == to_app)
        return 0;
    return drv_view_switch(d, to_app);
}

/* A body read starts: the anyio scope dispatch is in now (it may have entered scopes since
 * call_next) is what the app must leave behind, and what dispatch gets back if it does not. */
static inline int drv_note_dispatch_scope(drv_t *d) {
    if (d->entangled) /* the view switch into the app notes it */
        return 0;
    /* no anyio state for the task yet: dispatch entered no scope (the app may make one) */
    if (CC_LIKELY(!d->ts) && !(d->ts = drv_task_state(d)))
        return 0;
    PyObject *cur = PyObject_GetAttr(d->ts, d->st->s_cancel_scope);
    if (!cur)
        return -1;
    Py_XSETREF(d->outer_scope, cur);
    return 0;
}

/* Called when control goes back to dispatch: if the app left anyio cancel scopes open in this
 * task, give dispatch back the scope it had, and keep the app's for the app's next steps. */
static int drv_untangle(drv_t *d) {
    cc_mw_state_t *st = d->st;
    if (d->entangled || !d->task)
        return 0;
    if (!d->ts && !(d->ts = drv_task_state(d)))
        return 0;
    PyObject *cur = PyObject_GetAttr(d->ts, st->s_cancel_scope);
    if (!cur)
        return -1;
    PyObject *outer = d->outer_scope ? d->outer_scope : Py_None;
    Py_DECREF(cur);
    if (cur == outer)
        return 0;
    d->entangled = 1;
    d->app_view = 1;
    return drv_view(d, 0);
}

/* Runs the app one step. 1: it yielded (*out), 0: it returned, -1: it raised. */
static int drv_step(drv_t *d, PyObject **out) {
    cc_mw_state_t *st = d->st;
    PyObject *val = d->resume, *y = NULL;
    int thr = d->resume_throw, r;
    d->resume = NULL;
    d->resume_throw = 0;
    d->started = 1;
    d->stepping = 1;
    PyObject *outer_stepping = st->stepping_driver;
    st->stepping_driver = (PyObject *)d;
    if (thr) {
        y = PyObject_CallMethodOneArg(d->coro, st->s_throw, val);
        if (y)
            r = 1;
        else if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
            PyErr_Clear();
            r = 0;
        } else
            r = -1;
    } else {
        PySendResult sr = cc_mw_iter_send(d->coro, val ? val : Py_None, &y);
        r = sr == PYGEN_NEXT ? 1 : (sr == PYGEN_RETURN ? 0 : -1);
        if (r == 0)
            Py_CLEAR(y);
    }
    st->stepping_driver = outer_stepping;
    d->stepping = 0;
    Py_XDECREF(val);
    if (r != 1)
        d->coro_done = 1;
    if (r == 0) /* a finished app awaitable that is not a coroutine may still hold our send */
        Py_CLEAR(d->coro);
    *out = y;
    return r;
}

/* 1 if `y` is an asyncio future the app is blocked on (the Task protocol), 0 otherwise. */
static int is_blocking_future(drv_t *d, PyObject *y) {
    if (y == Py_None)
        return 0;
    PyObject *b = PyObject_GetAttr(y, d->st->s_blocking);
    if (!b) {
        PyErr_Clear();
        return 0;
    }
    int v = b == Py_True;
    Py_DECREF(b);
    return v;
}

static int set_blocking(drv_t *d, PyObject *fut, PyObject *value) {
    return PyObject_SetAttr(fut, d->st->s_blocking, value);
}

static CC_MW_COLD void no_response_error(void) {
    PyErr_SetString(PyExc_RuntimeError, "No response returned.");
}

/* A body message's more_body, as a truth value: 1, 0, or -1 with an exception set. */
static int more_body(cc_mw_state_t *st, PyObject *msg) {
    PyObject *more = cc_mw_msg_get(msg, st->s_more_body, Py_False);
    if (!more)
        return -1;
    int m = more == Py_False ? 0 : more == Py_True ? 1 : PyObject_IsTrue(more);
    Py_DECREF(more);
    return m;
}

/* Takes a message from the app for goal `goal`; `known_type` is its "type" if the caller has
 * read it, else NULL. 1: done with *out (new ref, may be NULL for end of body in G_CHUNK), 0: keep
 * going, -1: error. */
static int drv_accept(drv_t *d, int goal, PyObject *msg, PyObject *known_type, PyObject **out) {
    cc_mw_state_t *st = d->st;
    PyObject *type = NULL, *hold = NULL;
    int rc = -1;
    *out = NULL;
    if (PASSIVE(goal))
        return 0;
    type = known_type ? Py_NewRef(known_type) : cc_mw_msg_get(msg, st->s_type, Py_None);
    if (!type)
        return -1;
    if (goal == G_START) {
        if (STR_IS(st, type, start)) {
            d->phase = PH_BODY;
            *out = Py_NewRef(msg);
            rc = 1;
        } else if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_RuntimeError,
                         "middleware %s: the app sent %R before http.response.start",
                         dispatch_name(d, &hold), type);
        }
        goto done;
    }
    /* G_BODY / G_CHUNK */
    if (STR_IS(st, type, body_msg)) {
        int m = more_body(st, msg);
        if (m < 0)
            goto done;
        if (!m)
            d->phase = PH_APP_DONE;
        if (goal == G_BODY) {
            *out = Py_NewRef(msg);
            rc = 1;
            goto done;
        }
        PyObject *body = cc_mw_msg_get(msg, st->s_body, st->empty_bytes);
        if (!body)
            goto done;
        int empty = PyObject_Length(body) == 0;
        if (empty) {
            Py_DECREF(body);
            if (PyErr_Occurred())
                goto done;
            rc = m ? 0 : 1; /* skip empty chunks; an empty final chunk ends the body */
            goto done;
        }
        *out = body;
        rc = 1;
    } else if (STR_IS(st, type, pathsend)) {
        d->phase = PH_APP_DONE;
        *out = Py_NewRef(msg);
        rc = 1;
    } else if (!PyErr_Occurred()) {
        PyErr_Format(PyExc_RuntimeError,
                     "middleware %s: unexpected message %R in the response body",
                     dispatch_name(d, &hold), type);
    }
done:
    Py_XDECREF(hold);
    Py_DECREF(type);
    return rc;
}

/* The detached app's task finished: raise what it raised (its CancelledError included). */
static CC_MW_COLD int drv_child_result(drv_t *d) {
    if (d->child_cancelled) { /* we cancelled it: its CancelledError is no news */
        PyObject *c = PyObject_CallMethodNoArgs(d->child, d->st->s_cancelled);
        if (!c)
            return -1;
        int yes = c == Py_True;
        Py_DECREF(c);
        if (yes)
            return 0;
    }
    PyObject *r = PyObject_CallMethod(d->child, "result", NULL);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Starts the app in a task of its own (see `child`). */
static CC_MW_COLD int drv_detach(drv_t *d) {
    PyObject *awaitable = d->coro;
    PyObject *t = PyObject_CallOneArg(d->st->ensure_future, awaitable);
    if (!t)
        return -1;
    d->child = t;
    d->started = 1;
    return 0;
}

/* The app called send() in its step but waits on something else: that send's step is awaited
 * elsewhere, as by `await ensure_future(send(msg))`, and the task doing so must not get it (it
 * would yield it to its loop). The message joins those sent from other tasks, and the step
 * returns at once wherever it is awaited. */
static CC_MW_COLD int drv_requeue(drv_t *d) {
    PyObject *fut = new_future(d), *item = NULL;
    if (!fut || !(item = PyTuple_Pack(2, d->msg, fut)) ||
        (!d->queue && !(d->queue = PyList_New(0))) || PyList_Append(d->queue, item) < 0) {
        Py_XDECREF(fut);
        Py_XDECREF(item);
        return -1;
    }
    Py_DECREF(fut);
    Py_DECREF(item);
    Py_CLEAR(d->msg);
    Py_CLEAR(d->msg_type);
    if (d->susp)
        ((step_t *)d->susp)->wait = W_PASSED;
    Py_CLEAR(d->susp);
    return 0;
}

/* drv_pump's rare cases, out of its way: PUMP_AGAIN to go round again, else what it returns. */
enum { PUMP_AGAIN = 2 };

/* A message sent from another task is waiting in the queue: take the oldest. */
static CC_MW_COLD int drv_pump_queue(drv_t *d, int goal, PyObject **out) {
    PyObject *item = Py_NewRef(PyList_GET_ITEM(d->queue, 0));
    if (PyList_SetSlice(d->queue, 0, 1, NULL) < 0) {
        Py_DECREF(item);
        return -1;
    }
    PyObject *msg = PyTuple_GET_ITEM(item, 0), *fut = PyTuple_GET_ITEM(item, 1);
    int done = fut_done(d, fut);
    if (done != 0) { /* the producer was cancelled: nothing was delivered */
        Py_DECREF(item);
        if (done < 0)
            return -1;
        return PUMP_AGAIN;
    }
    int r = drv_accept(d, goal, msg, NULL, out);
    int rel;
    if (r >= 0 && d->phase >= PH_APP_DONE) {
        if (!d->deferred && !(d->deferred = PyList_New(0)))
            rel = -1;
        else
            rel = PyList_Append(d->deferred, fut);
    } else {
        /* a bad message still releases its producer (it was taken, as Starlette's
         * stream takes it); the error for dispatch must survive that call */
        PyObject *err = r < 0 ? cc_err_take() : NULL;
        rel = fut_release(d, fut);
        if (err) {
            if (rel < 0)
                PyErr_WriteUnraisable(fut);
            cc_err_give(err);
            rel = 0;
        }
    }
    Py_DECREF(item);
    if (rel < 0) {
        Py_CLEAR(*out);
        return -1;
    }
    if (r < 0)
        return -1;
    if (r == 1)
        return 0;
    return PUMP_AGAIN;
}

/* The app runs in a task of its own (drv_detach): wait for it, or its next message. */
static CC_MW_COLD int drv_pump_child(step_t *s, drv_t *d, int goal, PyObject **out) {
    cc_mw_state_t *st = d->st;
    int done = fut_done(d, d->child);
    if (done < 0)
        return -1;
    if (done) {
        d->coro_done = 1;
        if (drv_child_result(d) < 0)
            return -1;
        return PUMP_AGAIN;
    }
    if (goal == G_DRAIN) {
        if (set_blocking(d, d->child, Py_True) < 0)
            return -1;
        s->wait = W_CHILD;
        *out = Py_NewRef(d->child);
        return 1;
    }
    if (!d->child_watched) {
        PyObject *cb = wake_callback(d), *res = NULL;
        if (!cb || !(res = PyObject_CallMethodOneArg(d->child, st->s_add_done_callback, cb))) {
            Py_XDECREF(cb);
            return -1;
        }
        Py_DECREF(cb);
        Py_DECREF(res);
        d->child_watched = 1;
    }
    PyObject *w = new_future(d);
    if (!w || set_blocking(d, w, Py_True) < 0) {
        Py_XDECREF(w);
        return -1;
    }
    Py_XSETREF(d->proxy, Py_NewRef(w));
    s->wait = W_PROXY;
    *out = w;
    return 1;
}

/* Drives the app towards `s->goal`. 1: yield *out to our awaiter; 0: done (*out new ref or NULL
 * meaning end of body for G_CHUNK); -1: error. */
static int drv_pump(step_t *s, PyObject **out) {
    drv_t *d = s->d;
    cc_mw_state_t *st = d->st;
    int goal;
    *out = NULL;
    for (;;) {
        goal = s->goal; /* a fused send changes it while the app runs (drv_fuse_send) */
        if (CC_UNLIKELY(!PASSIVE(goal) && d->queue && PyList_GET_SIZE(d->queue) > 0)) {
            int r = drv_pump_queue(d, goal, out);
            if (r != PUMP_AGAIN)
                return r;
            continue;
        }
        if (CC_UNLIKELY(d->child && !d->coro_done)) {
            int r = drv_pump_child(s, d, goal, out);
            if (r != PUMP_AGAIN)
                return r;
            continue;
        }
        if (d->coro_done) {
            if (goal == G_START) {
                no_response_error();
                return -1;
            }
            if (goal == G_BODY || PASSIVE(goal))
                *out = Py_NewRef(Py_None);
            return 0;
        }
        if (d->waiting) {
            int done = fut_done(d, d->waiting);
            if (done < 0)
                return -1;
            if (!done) {
                if (PASSIVE(goal)) {
                    /* nobody else to listen to: let the task wait on the app's future itself */
                    PyObject *fut = Py_NewRef(d->waiting);
                    if (drv_unwatch(d, 0) < 0 || set_blocking(d, fut, Py_True) < 0) {
                        Py_DECREF(fut);
                        return -1;
                    }
                    s->wait = W_PASSED;
                    *out = fut;
                    return 1;
                }
                PyObject *w = new_future(d);
                if (!w)
                    return -1;
                if (set_blocking(d, w, Py_True) < 0) {
                    Py_DECREF(w);
                    return -1;
                }
                Py_XSETREF(d->proxy, Py_NewRef(w));
                s->wait = W_PROXY;
                *out = w;
                return 1;
            }
            if (drv_unwatch(d, 0) < 0)
                return -1;
            set_resume(d, Py_None, 0);
        }
        PyObject *y = NULL;
        int r = drv_step(d, &y);
        if (r < 0)
            return -1;
        if (r == 0)
            continue;
        goal = s->goal;
        if (CC_UNLIKELY(Py_TYPE(y) == (PyTypeObject *)st->fuse_type) &&
            cc_mw_fuse_handoff(y, (PyObject *)d)) {
            /* the fused send gave dispatch's outcome to the call: this step ends here, the app
             * stays in its send until the call's next step resumes it */
            Py_DECREF(y);
            *out = Py_NewRef(Py_None);
            return 0;
        }
        if (y == (PyObject *)d ||
            (Py_TYPE(y) == (PyTypeObject *)st->done_type && ((step_t *)y)->owner == d)) {
            /* the app is suspended in its send (a layer below yields the driver itself, see
             * drv_send): take the message */
            Py_DECREF(y);
            PyObject *msg = d->msg, *mtype = d->msg_type;
            d->msg = d->msg_type = NULL;
            Py_CLEAR(d->susp);
            if (!msg) {
                Py_XDECREF(mtype);
                continue;
            }
            r = drv_accept(d, goal, msg, mtype, out);
            Py_DECREF(msg);
            Py_XDECREF(mtype);
            if (r < 0)
                return -1;
            if (r == 1)
                return 0;
            continue;
        }
        if (CC_UNLIKELY(d->msg != NULL) && drv_requeue(d) < 0) {
            Py_DECREF(y);
            return -1;
        }
        if (!PASSIVE(goal) && is_blocking_future(d, y)) {
            /* watch it ourselves so a send from another task can wake us meanwhile */
            PyObject *cb = NULL, *res = NULL;
            if (set_blocking(d, y, Py_False) < 0 || !(cb = wake_callback(d)) ||
                !(res = PyObject_CallMethodOneArg(y, st->s_add_done_callback, cb))) {
                Py_XDECREF(cb);
                Py_DECREF(y);
                return -1;
            }
            Py_DECREF(res);
            Py_DECREF(cb);
            d->waiting = y;
            continue;
        }
        s->wait = W_PASSED;
        *out = y;
        return 1;
    }
}

/* The response of the layer below (see drv_t.offer) as our call_next response (steals `resp`):
 * status and header list are the very objects `start` carries, so only the body (now pulled
 * from us) and the debug info change. A cached `headers` still over that list is kept. */
static PyObject *adopt_response(drv_t *d, PyObject *resp, PyObject *start) {
    cc_mw_state_t *st = d->st;
    PyObject *h = cc_mw_slot(resp, st->off_headers);
    if (h) {
        PyObject *lst = Py_TYPE(h) == (PyTypeObject *)st->mutable_headers
                            ? Py_XNewRef(cc_mw_slot(h, st->off_list))
                            : PyObject_GetAttr(h, st->s_list);
        if (!lst)
            PyErr_Clear();
        Py_XDECREF(lst); /* only its identity is compared */
        if (!lst || lst != cc_mw_slot(resp, st->off_raw_headers))
            Py_CLEAR(*(PyObject **)((char *)resp + st->off_headers));
    }
    cc_mw_slot_set(resp, st->off_body_iterator, (PyObject *)d);
    cc_mw_slot_set(resp, st->off_info, d->info ? d->info : Py_None);
    Py_XSETREF(d->start, Py_NewRef(start));
    /* the layer below made `start` from these two (or checked it carries them) just now */
    int forward = PyDict_CheckExact(start);
    Py_XSETREF(d->start_status, forward ? Py_XNewRef(cc_mw_slot(resp, st->off_status)) : NULL);
    Py_XSETREF(d->start_headers,
               forward ? Py_XNewRef(cc_mw_slot(resp, st->off_raw_headers)) : NULL);
    return resp;
}

int cc_mw_offer(PyObject *driver, PyObject *response, PyObject *msg) {
    drv_t *d = (drv_t *)driver;
    if (d->phase != PH_START || d->offer)
        return 0;
    d->offer = Py_NewRef(response);
    d->offer_msg = Py_NewRef(msg);
    return 1;
}

/* The call_next response, built without __init__: what __init__ would set goes straight into
 * the slots of _CallNextResponse. `headers` is made on first use by the descriptor in
 * mw_call.c. */
static PyObject *make_response(drv_t *d, PyObject *start) {
    cc_mw_state_t *st = d->st;
    PyTypeObject *cls = (PyTypeObject *)st->response_cls;
    PyObject *resp = NULL, *status = NULL, *headers = NULL;
    if (d->offer) {
        resp = d->offer;
        d->offer = NULL;
        int same = d->offer_msg == start;
        Py_CLEAR(d->offer_msg);
        if (same)
            return adopt_response(d, resp, start);
        Py_CLEAR(resp);
    }
    resp = cc_mw_pool_pop(&st->pool_response);
    if (!resp && !(resp = cls->tp_alloc(cls, 0))) /* see make_request */
        goto error;
    status = cc_mw_msg_get(start, st->s_status, NULL);
    if (!status)
        goto error;
    headers = cc_mw_msg_get(start, st->s_headers, NULL);
    /* only an exact dict carrying both is forwarded as is (see cc_mw_unchanged_start) */
    int forward = headers && PyDict_CheckExact(start);
    if (!headers) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError) && PyErr_Occurred())
            goto error;
        PyErr_Clear();
        if (!(headers = PyList_New(0)))
            goto error;
    }
    /* slots of cicada.middleware._CallNextResponse (media_type is None on the class) */
    cc_mw_slot_set(resp, st->off_status, status);
    cc_mw_slot_set(resp, st->off_raw_headers, headers);
    cc_mw_slot_set(resp, st->off_body_iterator, (PyObject *)d);
    cc_mw_slot_set(resp, st->off_background, Py_None);
    cc_mw_slot_set(resp, st->off_info, d->info ? d->info : Py_None);
    Py_XSETREF(d->start, Py_NewRef(start));
    Py_XSETREF(d->start_status, forward ? status : NULL);
    Py_XSETREF(d->start_headers, forward ? headers : NULL);
    if (!forward) {
        Py_DECREF(status);
        Py_DECREF(headers);
    }
    return resp;
error:
    Py_XDECREF(resp);
    Py_XDECREF(status);
    Py_XDECREF(headers);
    return NULL;
}

/* ---- step: the awaitable every driver operation returns ----------------------------------- */

/* Relay mode could not deliver: keep the error for the layer, cancel the app (see drv_t.pass). */
static CC_MW_COLD void relay_fail(drv_t *d) {
    PyObject *exc = cc_err_take();
    if (!d->relay_error)
        d->relay_error = exc;
    else
        Py_XDECREF(exc);
    d->phase = PH_SENT;
}

/* Resumes the upstream awaitable iterator `it` a step wraps. 1: it yielded (*out), 0: it
 * returned (*out), -1: it raised. */
static int wrapped_resume(step_t *s, PyObject *it, PyObject *arg, PyObject *exc, PyObject **out) {
    int r;
    *out = NULL;
    if (exc) {
        PyObject *thr = PyObject_GetAttr(it, s->st->s_throw);
        if (!thr) {
            PyErr_Clear();
            raise_exc(exc);
            r = -1;
        } else {
            *out = PyObject_CallOneArg(thr, exc);
            Py_DECREF(thr);
            if (*out)
                r = 1;
            else if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
                PyObject *stop = cc_err_take();
                *out = PyObject_GetAttrString(stop, "value");
                Py_DECREF(stop);
                r = *out ? 0 : -1;
            } else
                r = -1;
        }
    } else {
        PySendResult sr = cc_mw_iter_send(it, arg ? arg : Py_None, out);
        r = sr == PYGEN_NEXT ? 1 : (sr == PYGEN_RETURN ? 0 : -1);
    }
    return r;
}

/* A step that finished without error: it lets go of what it holds now (its driver among them,
 * which may then be pooled) and becomes a spare for a later step (see cc_mw_spare_keep). Only
 * where nothing reads the step's fields any more: a finished step refuses to run again. */
static void step_retire(step_t *s) {
    drv_t *d = s->d;
    Py_CLEAR(s->value);
    Py_CLEAR(s->fuse_ret);
    s->d = NULL;
    cc_mw_spare_keep(&s->st->spare_step, (PyObject *)s);
    Py_XDECREF((PyObject *)d);
}

/* G_FWD: steps the upstream send's awaitable for the app; its failure becomes relay_fail's.
 * step_resume has already refused a finished step. */
static PySendResult fwd_resume(step_t *s, PyObject *arg, PyObject *exc, PyObject **result) {
    PyObject *out = NULL;
    drv_t *d = s->d;
    int r = wrapped_resume(s, s->value, arg, exc, &out);
    if (r == 1) {
        *result = out;
        return PYGEN_NEXT;
    }
    s->finished = 1;
    if (r == 0) {
        if (d->final_fwd) /* the last message is out: the app's later sends are dropped */
            d->phase = PH_SENT;
        *result = out;
        step_retire(s);
        return PYGEN_RETURN;
    }
    relay_fail(d);
    PyErr_SetNone(s->st->cancelled_error);
    return PYGEN_ERROR;
}

/* Notes in dispatch's Request what the app received, as BaseHTTPMiddleware's Request notes what
 * the app reads through it: after call_next, dispatch gets "Stream consumed" instead of waiting
 * on a body the app read to its end, and is_disconnected() is true once the app saw the client
 * leave. */
static int drv_note_received(drv_t *d, PyObject *msg) {
    cc_mw_state_t *st = d->st;
    if (!d->request || !PyDict_CheckExact(msg))
        return 0;
    PyObject *type = PyDict_GetItemWithError(msg, st->s_type);
    if (!type)
        return PyErr_Occurred() ? -1 : 0;
    if (STR_IS(st, type, request)) {
        int more = more_body(st, msg);
        if (more < 0)
            return -1;
        if (!more)
            cc_mw_slot_set(d->request, st->off_consumed, Py_True);
    } else if (STR_IS(st, type, disconnect))
        cc_mw_slot_set(d->request, st->off_disconnected, Py_True);
    return 0;
}

/* G_RECV: steps the upstream receive's awaitable for the app and notes the message it gives. */
static PySendResult recv_resume(step_t *s, PyObject *arg, PyObject *exc, PyObject **result) {
    PyObject *out = NULL;
    int r = wrapped_resume(s, s->value, arg, exc, &out);
    *result = out;
    if (r == 1)
        return PYGEN_NEXT;
    s->finished = 1;
    if (r < 0)
        return PYGEN_ERROR;
    if (drv_note_received(s->d, out) < 0) {
        Py_CLEAR(*result);
        return PYGEN_ERROR;
    }
    return PYGEN_RETURN;
}

/* 1 when we run inside a driver stepping `d`'s own task: before 3.12 (no eager tasks) nothing
 * else runs while a driver steps its app, so current_task() need not be asked. */
static inline int same_task_as_stepper(drv_t *d) {
#if PY_VERSION_HEX < 0x030C0000
    drv_t *outer = (drv_t *)d->st->stepping_driver;
    return outer && outer->task && outer->task == d->task;
#else
    (void)d;
    return 0;
#endif
}

/* Fusion pays where the app is a stack of Python frames and the start goes straight to a foreign
 * send: one cicada layer between foreign code. Between two cicada layers the start already moves
 * by a hand-over in C, and dispatch parked for fusion (one more suspension of its frame per
 * layer) would cost more than it saves, so a stack of cicada layers keeps the hand-over. */
static inline int fuse_worth(drv_t *d) {
    cc_mw_state_t *st = d->st;
    return d->coro && Py_TYPE(d->coro) != (PyTypeObject *)st->call_type &&
           Py_TYPE(d->send) != (PyTypeObject *)st->driver_type;
}

/* The body is read while the app holds dispatch in its fused send and is not being stepped: by
 * another task than dispatch's (a task dispatch awaits, gather, wait_for). Stepping the app would
 * resume dispatch in that task, so the call takes dispatch back where it waits, and the app's
 * send returns when it is next resumed (cc_mw_fuse_steal). */
/* A body read starting while another step waits on the app for a message (two tasks iterating
 * body_iterator at once): they would step the app in turns and one would wait forever. */
static CC_MW_COLD int drv_read_twice(drv_t *d) {
    PyObject *hold = NULL;
    PyErr_Format(PyExc_RuntimeError,
                 "middleware %s: call_next's response body is read by two tasks at once",
                 dispatch_name(d, &hold));
    Py_XDECREF(hold);
    return -1;
}

static void drv_unfuse(drv_t *d) {
    if (CC_LIKELY(!d->call) || d->stepping)
        return;
    step_t *h = (step_t *)cc_mw_fusing_step(d->call);
    if (!h || h->d != d || h->goal != G_HOLD)
        return;
    Py_INCREF(h);
    if (cc_mw_fuse_steal(d->call))
        h->finished = 1; /* the call no longer runs it */
    Py_DECREF(h);
}

static PySendResult step_resume(step_t *s, PyObject *arg, PyObject *exc, PyObject **result) {
    *result = NULL;
    if (CC_UNLIKELY(s->fuse_ret != NULL)) {
        PyObject *v = s->fuse_ret;
        s->fuse_ret = NULL;
        if (exc) {
            Py_DECREF(v);
            raise_exc(exc);
            return PYGEN_ERROR;
        }
        *result = v;
        return PYGEN_RETURN;
    }
    if (s->finished) {
        if (exc)
            raise_exc(exc);
        else
            PyErr_SetString(PyExc_RuntimeError, "cannot reuse an already awaited middleware step");
        return PYGEN_ERROR;
    }
    if (s->goal == G_FWD)
        return fwd_resume(s, arg, exc, result);
    if (s->goal == G_RECV)
        return recv_resume(s, arg, exc, result);
    if (s->goal == G_CANCEL) {
        s->finished = 1;
        if (exc)
            raise_exc(exc);
        else
            PyErr_SetNone(s->st->cancelled_error);
        return PYGEN_ERROR;
    }
    if (s->goal == G_YIELD && s->wait == W_NONE && !exc) {
        /* BaseHTTPMiddleware's dropped send is a checkpoint too: an app that loops on send
         * until a cancel scope or its receive() task stops it must let them run */
        s->wait = W_PASSED;
        *result = Py_NewRef(Py_None);
        return PYGEN_NEXT;
    }
    if (s->goal == G_VALUE || s->goal == G_YIELD || (s->goal == G_SUSPEND && s->wait != W_NONE)) {
        s->finished = 1;
        if (exc) {
            raise_exc(exc);
            return PYGEN_ERROR;
        }
        *result = Py_NewRef(s->goal == G_VALUE ? s->value : Py_None);
        return PYGEN_RETURN;
    }
    if (s->goal == G_SUSPEND) {
        if (exc) {
            s->finished = 1;
            raise_exc(exc);
            return PYGEN_ERROR;
        }
        s->wait = W_PASSED;
        *result = Py_NewRef((PyObject *)s); /* the driver stepping the app recognises it */
        return PYGEN_NEXT;
    }
    drv_t *d = s->d;
    PyObject *out = NULL;
    int r;
    if (d->reader == s) {
        d->reader = NULL;
        if (CC_UNLIKELY(d->parked_both))
            drv_unpark_both(d);
    }
    if (CC_UNLIKELY(d->stepping || s->active)) {
        /* dispatch, fused into the app's send, wants the app stepped (its body read): put off
         * until the call has taken dispatch back (MWFuse hands it over on seeing this) */
        if (s->wait == W_NONE && !s->active && !exc) {
            s->wait = W_DEFER;
            *result = Py_NewRef((PyObject *)s);
            return PYGEN_NEXT;
        }
        if (exc)
            raise_exc(exc);
        else
            PyErr_SetString(PyExc_RuntimeError, "middleware step resumed while its app runs");
        return PYGEN_ERROR;
    }
    if (s->wait == W_OFFER || s->wait == W_DEFER) {
        int offer = s->wait == W_OFFER;
        s->wait = W_NONE;
        if (exc) {
            s->finished = 1;
            raise_exc(exc);
            return PYGEN_ERROR;
        }
        if (offer) /* the task was checked before offering */
            goto pump;
    }
    if (CC_UNLIKELY(d->phase >= PH_SENT) && s->wait == W_PROXY &&
        (s->goal == G_CHUNK || s->goal == G_BODY)) {
        /* a reader in another task, woken when the response went out or was given up (see
         * drv_wake_reader): the body is over for it, and the app is no longer its to step */
        s->wait = W_NONE;
        if (exc) {
            raise_exc(exc);
            goto error;
        }
        if (s->goal == G_CHUNK)
            goto end_of_body;
        s->finished = 1;
        *result = Py_NewRef(Py_None);
        return PYGEN_RETURN;
    }
    if (s->wait == W_PROXY || s->wait == W_CHILD) {
        Py_CLEAR(d->proxy);
        if (exc && d->child) { /* cancel the app's own task and stop waiting for it */
            d->child_cancelled = 1;
            PyObject *r = PyObject_CallMethodNoArgs(d->child, d->st->s_cancel);
            Py_XDECREF(r);
            if (r)
                raise_exc(exc);
            goto error;
        }
        if (exc) { /* our task was cancelled (or thrown into): pass it on to the app */
            if (drv_unwatch(d, 1) < 0)
                goto error;
            set_resume(d, exc, 1);
        }
    } else if (s->wait == W_PASSED) {
        set_resume(d, exc ? exc : arg, exc != NULL);
    } else if (exc) {
        raise_exc(exc);
        goto error;
    } else if (s->goal == G_START && !d->started && !d->child) {
        int same = same_task_as_stepper(d);
        if (!same) {
            PyObject *cur = current_task(d);
            if (!cur)
                goto error;
            Py_DECREF(cur);
            same = cur == d->task;
            if (!same && drv_detach(d) < 0)
                goto error;
        }
        if (same && d->call && fuse_worth(d) && cc_mw_can_fuse(d->call)) {
            /* awaited in dispatch's task: let the layer's call run this step itself, so that
             * dispatch can go on inside the app's send (drv_fuse_send) */
            s->wait = W_OFFER;
            d->fuse_offered = 1;
            *result = Py_NewRef((PyObject *)s);
            return PYGEN_NEXT;
        }
    } else if (s->goal == G_CHUNK) {
        d->body_started = 1;
        if (d->phase >= PH_APP_DONE || d->iter_closed)
            goto end_of_body;
        if (CC_UNLIKELY(d->reader != NULL) && drv_read_twice(d) < 0)
            goto error;
        drv_unfuse(d);
        if (drv_note_dispatch_scope(d) < 0)
            goto error;
    } else if (s->goal == G_BODY && d->phase >= PH_APP_DONE) {
        s->finished = 1;
        *result = Py_NewRef(Py_None);
        return PYGEN_RETURN;
    } else if (s->goal == G_BODY) {
        if (CC_UNLIKELY(d->reader != NULL) && drv_read_twice(d) < 0)
            goto error;
        drv_unfuse(d);
        if (drv_note_dispatch_scope(d) < 0)
            goto error;
    }
pump:
    s->wait = W_NONE;
    if (drv_view(d, 1) < 0)
        goto error;
    s->active = 1;
    r = drv_pump(s, &out);
    s->active = 0;
    if (r == 1) {
        if (!PASSIVE(s->goal)) {
            d->reader = s; /* until resumed: no other step may pull from the app meanwhile */
            if (CC_UNLIKELY(d->entangled && d->app_view) && drv_park_both(d) < 0) {
                d->reader = NULL;
                Py_DECREF(out);
                goto error;
            }
        }
        *result = out;
        return PYGEN_NEXT;
    }
    if (r < 0)
        goto error;
    s->finished = 1;
    if (drv_view(d, 0) < 0 || (!PASSIVE(s->goal) && drv_untangle(d) < 0)) {
        Py_XDECREF(out);
        goto error;
    }
    if (s->goal == G_PASS && d->relay_error) {
        Py_XDECREF(out);
        raise_exc(d->relay_error);
        Py_CLEAR(d->relay_error);
        goto error;
    }
    if (s->goal == G_START) {
        *result = make_response(d, out);
        Py_DECREF(out);
        return *result ? PYGEN_RETURN : PYGEN_ERROR;
    }
    if (s->goal == G_CHUNK && !out)
        goto end_of_body;
    *result = out;
    if (s->goal == G_PASS)
        step_retire(s);
    return PYGEN_RETURN;
end_of_body:
    s->finished = 1;
    PyErr_SetNone(PyExc_StopAsyncIteration);
    return PYGEN_ERROR;
error:
    s->finished = 1;
    if (d && s->goal == G_PASS && d->relay_error) { /* what the app raised after our cancel */
        PyErr_Clear();
        raise_exc(d->relay_error);
        Py_CLEAR(d->relay_error);
    }
    if (d && d->app_view && d->entangled) {
        saved_err_t e;
        err_save(&e);
        if (drv_view(d, 0) < 0)
            PyErr_WriteUnraisable((PyObject *)d);
        err_restore(&e);
    }
    if (s->swallow) {
        PyErr_Clear();
        *result = Py_NewRef(Py_None);
        return PYGEN_RETURN;
    }
    return PYGEN_ERROR;
}

static PySendResult step_am_send(PyObject *self, PyObject *arg, PyObject **result) {
    return step_resume((step_t *)self, arg, NULL, result);
}

/* Turns an am_send outcome into the iterator protocol (StopIteration carries the result). */
static PyObject *send_result_to_iter(PySendResult r, PyObject *result) {
    if (r == PYGEN_NEXT)
        return result;
    if (r == PYGEN_ERROR)
        return NULL;
    if (result == Py_None) {
        Py_DECREF(result);
        PyErr_SetNone(PyExc_StopIteration);
        return NULL;
    }
    PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, result);
    Py_DECREF(result);
    if (stop) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
    return NULL;
}

static PyObject *step_iternext(PyObject *self) {
    PyObject *result = NULL;
    PySendResult r = step_resume((step_t *)self, Py_None, NULL, &result);
    return send_result_to_iter(r, result);
}

static PyObject *step_send(PyObject *self, PyObject *arg) {
    PyObject *result = NULL;
    PySendResult r = step_resume((step_t *)self, arg, NULL, &result);
    return send_result_to_iter(r, result);
}

static PyObject *step_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw() takes 1 to 3 arguments");
        return NULL;
    }
    PyObject *exc = args[0], *inst = NULL;
    if (PyExceptionInstance_Check(exc))
        inst = Py_NewRef(exc);
    else if (PyExceptionClass_Check(exc)) {
        PyObject *val = nargs > 1 ? args[1] : Py_None;
        if (PyExceptionInstance_Check(val))
            inst = Py_NewRef(val);
        else
            inst = val == Py_None ? PyObject_CallNoArgs(exc) : PyObject_CallOneArg(exc, val);
        if (!inst)
            return NULL;
    } else {
        PyErr_SetString(PyExc_TypeError, "exceptions must derive from BaseException");
        return NULL;
    }
    PyObject *result = NULL;
    PySendResult r = step_resume((step_t *)self, NULL, inst, &result);
    Py_DECREF(inst);
    return send_result_to_iter(r, result);
}

static PyObject *step_close(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    step_t *s = (step_t *)self;
    if ((s->goal == G_FWD || s->goal == G_RECV) && !s->finished) {
        /* close the upstream send's or receive's awaitable with it */
        s->finished = 1;
        PyObject *r = PyObject_CallMethodNoArgs(s->value, s->st->s_close);
        if (!r && PyErr_ExceptionMatches(PyExc_AttributeError))
            PyErr_Clear();
        else if (!r)
            return NULL;
        Py_XDECREF(r);
        Py_RETURN_NONE;
    }
    if (s->finished || s->wait == W_NONE) {
        s->finished = 1;
        Py_RETURN_NONE;
    }
    PyObject *exc = PyObject_CallNoArgs(PyExc_GeneratorExit);
    if (!exc)
        return NULL;
    PyObject *result = NULL;
    PySendResult r = step_resume(s, NULL, exc, &result);
    Py_DECREF(exc);
    if (r == PYGEN_ERROR) {
        if (PyErr_ExceptionMatches(PyExc_GeneratorExit) ||
            PyErr_ExceptionMatches(PyExc_StopIteration)) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        return NULL;
    }
    Py_XDECREF(result);
    if (r == PYGEN_NEXT) {
        PyErr_SetString(PyExc_RuntimeError, "middleware step ignored GeneratorExit");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *step_await(PyObject *self) {
    return Py_NewRef(self);
}

static int step_traverse(PyObject *self, visitproc visit, void *arg) {
    step_t *s = (step_t *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT((PyObject *)s->d);
    Py_VISIT(s->value);
    Py_VISIT(s->fuse_ret);
    return 0;
}

static int step_clear(PyObject *self) {
    step_t *s = (step_t *)self;
    if (s->d && s->d->reader == s) {
        s->d->reader = NULL;
        if (s->d->parked_both)
            drv_unpark_both(s->d);
    }
    Py_CLEAR(s->d);
    Py_CLEAR(s->value);
    Py_CLEAR(s->fuse_ret);
    return 0;
}

static void step_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    step_clear(self);
    if (!cc_mw_fl_push(&((step_t *)self)->st->fl_step, self))
        tp->tp_free(self);
    Py_DECREF(tp);
}

static void done_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    Py_CLEAR(((step_t *)self)->value);
    if (!cc_mw_fl_push(&((step_t *)self)->st->fl_done, self))
        tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef step_methods[] = {
    {"send", step_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))step_throw, METH_FASTCALL, NULL},
    {"close", step_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot step_slots[] = {
    {Py_tp_dealloc, step_dealloc}, {Py_tp_traverse, step_traverse}, {Py_tp_clear, step_clear},
    {Py_tp_iter, step_await},      {Py_tp_iternext, step_iternext}, {Py_tp_methods, step_methods},
    {Py_am_await, step_await},     {Py_am_send, step_am_send},      {0, NULL},
};

static PyType_Spec step_spec = {
    .name = "cicada._core.MWStep",
    .basicsize = sizeof(step_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = step_slots,
};

static PyType_Slot done_slots[] = {
    {Py_tp_dealloc, done_dealloc},
    {Py_tp_iter, step_await},
    {Py_tp_iternext, step_iternext},
    {Py_tp_methods, step_methods},
    {Py_am_await, step_await},
    {Py_am_send, step_am_send},
    {0, NULL},
};

static PyType_Spec done_spec = {
    .name = "cicada._core.MWDone",
    .basicsize = sizeof(step_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = done_slots,
};

CC_MW_HOT PyObject *step_new(cc_mw_state_t *st, drv_t *d, int goal, PyObject *value) {
    int done = goal == G_VALUE || goal == G_SUSPEND || goal == G_CANCEL || goal == G_YIELD;
    PyTypeObject *tp = (PyTypeObject *)(done ? st->done_type : st->step_type);
    step_t *s = done ? NULL : (step_t *)cc_mw_spare_take(&st->spare_step); /* tracked */
    int fresh = s == NULL;
    if (fresh && !(s = (step_t *)cc_mw_fl_pop(done ? &st->fl_done : &st->fl_step, tp))) {
        s = done ? PyObject_New(step_t, tp) : PyObject_GC_New(step_t, tp);
        if (!s)
            return NULL;
    }
    s->st = st;
    s->d = done ? NULL : (drv_t *)Py_NewRef((PyObject *)d);
    s->owner = d;
    s->value = Py_XNewRef(value);
    s->fuse_ret = NULL;
    s->goal = goal;
    s->wait = W_NONE;
    s->swallow = 0;
    s->finished = 0;
    s->active = 0;
    if (fresh && !done)
        PyObject_GC_Track(s);
    return (PyObject *)s;
}

/* ---- the driver ----------------------------------------------------------------------------- */

static PyObject *drv_wake(PyObject *self, PyObject *Py_UNUSED(fut)) {
    drv_t *d = (drv_t *)self;
    if (d->proxy) {
        PyObject *w = Py_NewRef(d->proxy);
        int rc = fut_release(d, w);
        Py_DECREF(w);
        if (rc < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef drv_wake_def = {"_wake", drv_wake, METH_O, NULL};

static PyObject *wake_callback(drv_t *d) {
    return PyCFunction_New(&drv_wake_def, (PyObject *)d);
}

static CC_MW_COLD PyObject *disconnect_message(cc_mw_state_t *st) {
    PyObject *m = PyDict_New();
    if (m && PyDict_SetItem(m, st->s_type, st->s_disconnect) < 0)
        Py_CLEAR(m);
    return m;
}

static PyObject *done_with(drv_t *d, PyObject *value) {
    if (!value)
        return NULL;
    PyObject *s = step_new(d->st, NULL, G_VALUE, value);
    Py_DECREF(value);
    return s;
}

/* Relay mode's send: the body message goes to our `send` right away (through a driver above in
 * relay mode too, or handed to one stepping us), so the app is not suspended for it. */
static PyObject *drv_forward(drv_t *d, PyObject *msg, PyObject *type, int more) {
    cc_mw_state_t *st = d->st;
    PyObject *hold = NULL, *r, *it;
    if (d->final_fwd) /* after the last message: dropped, as once the response is sent */
        return step_new(d->st, NULL, G_YIELD, Py_None);
    if (PyErr_Occurred())
        goto fail;
    if (STR_IS(st, type, body_msg)) {
        if (more < 0 && (more = more_body(st, msg)) < 0)
            goto fail;
        d->final_fwd = !more;
    } else if (STR_IS(st, type, pathsend)) {
        more = -1;
        d->final_fwd = 1;
    } else {
        PyErr_Format(PyExc_RuntimeError,
                     "middleware %s: unexpected message %R in the response body",
                     dispatch_name(d, &hold), type);
        Py_XDECREF(hold);
        goto fail;
    }
    if (Py_TYPE(d->send) == (PyTypeObject *)st->driver_type) /* type and more_body known */
        return drv_send_typed((drv_t *)d->send, msg, type, more, NULL);
    if (!(r = PyObject_CallOneArg(d->send, msg)) || !(it = cc_mw_awaitable_iter(r)))
        goto fail;
    PyObject *step = step_new(st, d, G_FWD, it);
    Py_DECREF(it);
    return step;
fail:
    relay_fail(d);
    return step_new(st, d, G_CANCEL, NULL);
}

PyObject *cc_mw_pass(PyObject *driver) {
    drv_t *d = (drv_t *)driver;
    if (d->phase != PH_BODY || d->body_started || d->child || d->entangled || d->waiting ||
        d->proxy || d->msg || !d->coro || d->coro_done || (d->queue && PyList_GET_SIZE(d->queue)) ||
        (d->deferred && PyList_GET_SIZE(d->deferred)))
        Py_RETURN_NONE;
    d->pass = 1;
    d->body_started = 1;
    return step_new(d->st, d, G_PASS, NULL);
}

int cc_mw_final_sent(PyObject *driver) {
    return ((drv_t *)driver)->final_fwd;
}

/* The app's start message while the layer's call runs the start step itself (cc_mw_is_offer):
 * dispatch goes on right here, inside the app's send (MWFuse in mw_call.c), instead of the app
 * being suspended up through all its frames and resumed after. Py_None (borrowed) when the usual
 * hand-over must be used instead; else the awaitable the app gets, or NULL on error. */
static PyObject *drv_fuse_send(drv_t *d, PyObject *msg) {
    cc_mw_state_t *st = d->st;
    step_t *s = (step_t *)cc_mw_fusing_step(d->call);
    if (!s || s->d != d || s->goal != G_START || d->phase != PH_START || d->child || d->entangled ||
        d->msg || (d->queue && PyList_GET_SIZE(d->queue)))
        return Py_None;
    /* an app frame handling an exception: dispatch run under it would see it (sys.exception(),
     * implicit __context__ of what it raises). A start passed up by the fused send of the layer
     * below runs under the same frames as that send, which were checked. */
    PyObject *handled = st->fuse_up ? NULL : PyErr_GetHandledException();
    if (handled) {
        int busy = handled != Py_None;
        Py_DECREF(handled);
        if (busy)
            return Py_None;
    }
    /* the app inside anyio cancel scopes of its own: dispatch must not run in them (the task may
     * have got its anyio state from the app itself, after call_next) */
    if (!d->ts)
        d->ts = drv_task_state(d);
    if (d->ts) {
        PyObject *cur = PyObject_GetAttr(d->ts, st->s_cancel_scope);
        if (!cur)
            return NULL;
        Py_DECREF(cur);
        if (cur != (d->outer_scope ? d->outer_scope : Py_None))
            return Py_None;
    }
    return cc_mw_fuse_new(st, d->call, msg); /* cc_mw_fuse_begin when it is awaited */
}

int cc_mw_fuse_begin(PyObject *driver, PyObject *call, PyObject *msg) {
    drv_t *d = (drv_t *)driver;
    /* not stepping: the send was awaited by another task than the one running the app
     * (`await ensure_future(send(start))`); dispatch must not run in that task */
    if (!d->stepping)
        return 0;
    step_t *s = (step_t *)cc_mw_fusing_step(call);
    if (!s || s->d != d || s->goal != G_START || d->phase != PH_START || d->child || d->msg ||
        (d->queue && PyList_GET_SIZE(d->queue)))
        return 0;
    d->phase = PH_BODY;
    PyObject *resp = make_response(d, msg);
    if (!resp)
        return -1;
    Py_XSETREF(s->fuse_ret, resp); /* what dispatch's await on call_next returns */
    s->goal = G_HOLD;
    return 1;
}

PyObject *cc_mw_plain_send(PyObject *driver, PyObject *msg) {
    drv_t *d = (drv_t *)driver;
    d->fuse_offered = 0; /* no fusion for this start: the hand-over, or the queue */
    return drv_send_typed(d, msg, d->st->s_start, -1, NULL);
}

/* The `send` the downstream app gets. With `handed` (a cicada layer sending from C, see
 * cc_mw_layer_send), a message the driver takes in-task sets *handed and returns None instead
 * of a suspending step: the caller then yields the driver itself, which drv_pump recognises. */
static PyObject *drv_send(drv_t *d, PyObject *msg, int *handed) {
    if (d->phase >= PH_SENT) /* the response is gone (or replaced): drop it */
        return step_new(d->st, NULL, G_YIELD, Py_None);
    PyObject *type = cc_mw_msg_get(msg, d->st->s_type, Py_None);
    if (!type)
        return NULL;
    PyObject *r = drv_send_typed(d, msg, type, -1, handed);
    Py_DECREF(type);
    return r;
}

/* drv_send for a message whose "type" (borrowed) the caller has read, and its more_body when
 * it is a body message (else -1): a message relayed through a stack is parsed once. */
static PyObject *drv_send_typed(drv_t *d, PyObject *msg, PyObject *type, int more, int *handed) {
    cc_mw_state_t *st = d->st;
    PyObject *self = (PyObject *)d;
    PyObject *t = NULL, *fut = NULL, *item = NULL;
    if (d->phase >= PH_SENT)
        return step_new(d->st, NULL, G_YIELD, Py_None);
    /* the types are distinct strings: the common one first spares the other comparisons; debug
     * and early hints belong before the start (after it, the body's checks reject them) */
    int is_start = STR_IS(st, type, start), before = d->phase < PH_BODY;
    if (!is_start && before && STR_IS(st, type, debug)) {
        PyObject *info = cc_mw_msg_get(msg, st->s_info, Py_None);
        if (!info)
            return NULL;
        Py_XSETREF(d->info, info);
        return done_with(d, Py_NewRef(Py_None));
    }
    if (!is_start && before && STR_IS(st, type, early_hint))
        return PyObject_CallOneArg(d->send, msg);
    if (d->pass)
        return drv_forward(d, msg, type, more);
    if (d->stepping) {
#if PY_VERSION_HEX >= 0x030C0000
        /* an eager task started by the app runs its first step inside ours */
        t = current_task(d);
        if (!t)
            return NULL;
        Py_DECREF(t);
        if (t == d->task)
#else
        (void)t; /* before 3.12 nothing else runs while we step the app */
#endif
        {
            if (is_start && d->fuse_offered && d->call) {
                PyObject *f = drv_fuse_send(d, msg);
                if (f != Py_None)
                    return f;
            }
            Py_XSETREF(d->msg, Py_NewRef(msg));
            Py_XSETREF(d->msg_type, Py_NewRef(type));
            if (handed) {
                *handed = 1;
                Py_RETURN_NONE;
            }
            Py_XSETREF(d->susp, step_new(st, d, G_SUSPEND, NULL));
            return Py_XNewRef(d->susp);
        }
    }
    /* From another task: hand it over and wait until the consumer took it. */
    if (!(fut = new_future(d)) || !(item = PyTuple_Pack(2, msg, fut)))
        goto error;
    if (!d->queue && !(d->queue = PyList_New(0)))
        goto error;
    if (PyList_Append(d->queue, item) < 0)
        goto error;
    Py_DECREF(item);
    PyObject *r = drv_wake(self, Py_None);
    if (!r) {
        Py_DECREF(fut);
        return NULL;
    }
    Py_DECREF(r);
    return fut;
error:
    Py_XDECREF(fut);
    Py_XDECREF(item);
    return NULL;
}

static PyObject *drv_asgi_send(PyObject *self, PyObject *msg) {
    return drv_send((drv_t *)self, msg, NULL);
}

PyObject *cc_mw_layer_send(cc_mw_state_t *st, PyObject *send, PyObject *msg, PyObject *type,
                           int *handed) {
    if (handed)
        *handed = 0;
    if (Py_TYPE(send) == (PyTypeObject *)st->driver_type)
        return type ? drv_send_typed((drv_t *)send, msg, type, -1, handed)
                    : drv_send((drv_t *)send, msg, handed);
    return PyObject_CallOneArg(send, msg);
}

/* The `receive` the downstream app gets. */
static PyObject *drv_asgi_receive(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    drv_t *d = (drv_t *)self;
    cc_mw_state_t *st = d->st;
    /* relay mode hands a final message to a cicada layer above without a G_FWD step, so only
     * final_fwd says that the response is over there */
    if (d->phase >= PH_SENT || d->final_fwd)
        return done_with(d, disconnect_message(st));
    if (d->replay_state == 1) {
        d->replay_state = 2;
        PyObject *m = PyDict_New();
        if (m && (PyDict_SetItem(m, st->s_type, st->s_request) < 0 ||
                  PyDict_SetItem(m, st->s_body, d->replay) < 0 ||
                  PyDict_SetItem(m, st->s_more_body, Py_False) < 0))
            Py_CLEAR(m);
        return done_with(d, m);
    }
    if (d->replay_state == 2) {
        PyObject *disc = PyObject_GetAttr(d->request, st->s_is_disconnected);
        if (!disc)
            return NULL;
        int yes = PyObject_IsTrue(disc);
        Py_DECREF(disc);
        if (yes < 0)
            return NULL;
        if (yes)
            return done_with(d, disconnect_message(st));
    }
    /* the client is known gone (dispatch's Request saw it): a server may not say it twice */
    if (cc_mw_slot(d->request, st->off_disconnected) == Py_True)
        return done_with(d, disconnect_message(st));
    /* The app's messages go through dispatch's Request, as BaseHTTPMiddleware's do, so that it
     * knows when the app read the body to its end or saw the client leave */
    PyObject *aw = PyObject_CallNoArgs(d->receive);
    if (!aw)
        return NULL;
    if (Py_TYPE(aw) == (PyTypeObject *)st->done_type) { /* a layer above answered at once */
        step_t *done = (step_t *)aw;
        if (done->goal == G_VALUE && drv_note_received(d, done->value) < 0)
            Py_CLEAR(aw);
        return aw;
    }
    PyObject *it = cc_mw_awaitable_iter(aw); /* takes aw */
    if (!it)
        return NULL;
    PyObject *step = step_new(st, d, G_RECV, it);
    Py_DECREF(it);
    return step;
}

static PyObject *drv_call_next(PyObject *self, PyObject *Py_UNUSED(request)) {
    drv_t *d = (drv_t *)self;
    cc_mw_state_t *st = d->st;
    PyObject *hold = NULL, *dict = NULL, *app = NULL, *snd = NULL, *rcv = NULL, *coro = NULL;
    if (d->called) {
        PyErr_Format(PyExc_RuntimeError,
                     "middleware %s called call_next() twice; it may be called once per request",
                     dispatch_name(d, &hold));
        Py_XDECREF(hold);
        return NULL;
    }
    d->called = 1;
    /* A body dispatch already read is replayed to the app (it can't be read twice): body()
     * leaves it in _body; a stream() read to the end leaves an empty body to replay. */
    dict = Py_XNewRef(cc_mw_slot(d->request, st->off_consumed));
    if (!dict && !(dict = PyObject_GetAttr(d->request, st->s_stream_consumed)))
        goto error;
    int consumed = dict == Py_False ? 0 : PyObject_IsTrue(dict);
    Py_CLEAR(dict);
    if (consumed < 0)
        goto error;
    if (consumed) {
        d->replay = PyObject_GetAttr(d->request, st->s_body_attr);
        if (!d->replay) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                goto error;
            PyErr_Clear();
            d->replay = Py_NewRef(st->empty_bytes);
        }
        d->replay_state = 1;
    }
    if (!d->task && !(d->task = current_task(d)))
        goto error;
    if ((d->ts = drv_task_state(d))) {
        d->outer_scope = PyObject_GetAttr(d->ts, st->s_cancel_scope);
        if (!d->outer_scope)
            goto error;
    }
    if (!(app = cc_mw_layer_attr(st, d->mw, st->off_app, st->s_app)))
        goto error;
    /* the driver is both callables: send(message) and receive() (see drv_vectorcall) */
    snd = Py_NewRef(self);
    rcv = Py_NewRef(self);
    PyObject *args[3] = {d->scope, rcv, snd};
    /* the next layer down is often another HTTPMiddleware: enter it without the
     * instance-call machinery (args tuple, __call__ lookup, method prepend) */
    int ours = cc_mw_is_layer(st, app);
    if (ours < 0)
        goto error;
    coro = ours ? cc_mw_call(st, app, args) : PyObject_Vectorcall(app, args, 3, NULL);
    if (!coro)
        goto error;
    if (!PyCoro_CheckExact(coro)) {
        /* any awaitable will do: drive its __await__ iterator */
        unaryfunc getter = Py_TYPE(coro)->tp_as_async ? Py_TYPE(coro)->tp_as_async->am_await : NULL;
        if (!getter) {
            PyErr_Format(PyExc_TypeError, "the app under middleware returned %R, not an awaitable",
                         coro);
            goto error;
        }
        Py_SETREF(coro, getter(coro));
        if (!coro)
            goto error;
    }
    d->coro = coro;
    d->phase = PH_START;
    Py_DECREF(app);
    Py_DECREF(snd);
    Py_DECREF(rcv);
    return step_new(st, d, G_START, NULL);
error:
    Py_XDECREF(dict);
    Py_XDECREF(app);
    Py_XDECREF(snd);
    Py_XDECREF(rcv);
    Py_XDECREF(coro);
    return NULL;
}

/* Closes an app coroutine that was created but never started (no "never awaited" warning). */
static int drv_close_unstarted(drv_t *d) {
    if (!d->coro || d->started || d->coro_done)
        return 0;
    d->coro_done = 1;
    PyObject *r = PyObject_CallMethodNoArgs(d->coro, d->st->s_close);
    if (!r) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(r);
    return 0;
}

PyObject *cc_mw_next_message(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    drv_t *d = (drv_t *)self;
    d->body_started = 1;
    return step_new(d->st, d, G_BODY, NULL);
}

/* The response is over while a reader in another task waits on the app (a response dispatch
 * kept and iterates in a task of its own): wake it, to find the body over. */
static int drv_wake_reader(drv_t *d) {
    PyObject *w = d->proxy;
    if (CC_LIKELY(!w))
        return 0;
    d->proxy = NULL;
    int rc = fut_release(d, w);
    Py_DECREF(w);
    return rc;
}

PyObject *cc_mw_finish_step(PyObject *self) {
    drv_t *d = (drv_t *)self;
    d->phase = PH_SENT;
    if (CC_UNLIKELY(d->queue || d->deferred || d->proxy) &&
        (drv_release_all(d) < 0 || drv_wake_reader(d) < 0))
        return NULL;
    if ((d->child || (d->coro && d->started)) && !d->coro_done)
        return step_new(d->st, d, G_DRAIN, NULL);
    drv_close_unstarted(d);
    Py_RETURN_NONE;
}

/* The response went out (or dispatch replaced it): let the app run to its end. */
PyObject *cc_mw_finish(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *r = cc_mw_finish_step(self);
    return r == Py_None ? done_with((drv_t *)self, r) : r;
}

/* Dispatch or the response failed: cancel the app where it stands and let it clean up. */
PyObject *cc_mw_abort(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    drv_t *d = (drv_t *)self;
    d->phase = PH_SENT;
    if (drv_release_all(d) < 0 || drv_wake_reader(d) < 0)
        return NULL;
    if (d->child && !d->coro_done) {
        d->child_cancelled = 1;
        PyObject *r = PyObject_CallMethodNoArgs(d->child, d->st->s_cancel);
        if (!r)
            return NULL;
        Py_DECREF(r);
        step_t *s = (step_t *)step_new(d->st, d, G_DRAIN, NULL);
        if (s)
            s->swallow = 1;
        return (PyObject *)s;
    }
    if (d->coro && d->started && !d->coro_done) {
        Py_CLEAR(d->proxy);
        if (drv_unwatch(d, 1) < 0)
            return NULL;
        PyObject *exc = PyObject_CallNoArgs(d->st->cancelled_error);
        if (!exc)
            return NULL;
        set_resume(d, exc, 1);
        Py_DECREF(exc);
        Py_CLEAR(d->msg);
        Py_CLEAR(d->msg_type);
        Py_CLEAR(d->susp);
        step_t *s = (step_t *)step_new(d->st, d, G_DRAIN, NULL);
        if (s)
            s->swallow = 1;
        return (PyObject *)s;
    }
    drv_close_unstarted(d);
    return done_with(d, Py_NewRef(Py_None));
}

/* The driver if `response` is untouched call_next output whose body can be relayed as the app
 * sent it, else None. */
PyObject *cc_mw_relay_driver(cc_mw_state_t *st, PyObject *response) {
    PyObject *it = Py_TYPE(response) == (PyTypeObject *)st->response_cls
                       ? Py_XNewRef(cc_mw_slot(response, st->off_body_iterator))
                       : NULL;
    if (!it && !(it = PyObject_GetAttr(response, st->s_body_iterator)))
        return NULL;
    PyObject *res = Py_None;
    if (Py_TYPE(it) == (PyTypeObject *)st->driver_type) {
        drv_t *d = (drv_t *)it;
        if (!d->body_started && d->phase == PH_BODY)
            res = (PyObject *)d;
    }
    Py_INCREF(res);
    Py_DECREF(it);
    return res;
}

static int drv_traverse(PyObject *self, visitproc visit, void *arg) {
    drv_t *d = (drv_t *)self;
    Py_VISIT(Py_TYPE(self));
    for (int i = 0; i < DRV_NREFS; i++)
        Py_VISIT(d->refs[i]);
    return 0;
}

static int drv_clear(PyObject *self) {
    drv_t *d = (drv_t *)self;
    for (int i = 0; i < DRV_NREFS; i++)
        Py_CLEAR(d->refs[i]);
    d->call = NULL;
    return 0;
}

/* Drops what the driver holds, as its deallocation does: a request only it holds is kept for
 * reuse, an app coroutine never started is closed without a warning. */
static void drv_empty(drv_t *d) {
    if (d->request) { /* most often only we hold it: keep it for the next request */
        cc_mw_state_t *st = d->st;
        const Py_ssize_t offs[] = {st->off_scope,    st->off_receive,      st->off_send,
                                   st->off_consumed, st->off_disconnected, st->off_form};
        PyObject *req = d->request;
        d->request = NULL;
        cc_mw_pool_keep(&st->pool_request, req, st->request_cls, offs, 6);
    }
    if (CC_UNLIKELY(d->coro && !d->started && !d->coro_done)) {
        saved_err_t e;
        err_save(&e);
        PyObject *r = PyObject_CallMethodNoArgs(d->coro, d->st->s_close);
        if (r)
            Py_DECREF(r);
        else
            PyErr_Clear();
        err_restore(&e);
    }
    drv_clear((PyObject *)d);
}

static void drv_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    drv_t *d = (drv_t *)self;
    drv_empty(d);
    if (!cc_mw_fl_push(&d->st->fl_driver, self))
        tp->tp_free(self);
    Py_DECREF(tp);
}

void cc_mw_driver_release(cc_mw_state_t *st, PyObject *driver) {
    if (Py_REFCNT(driver) != 1 || st->pool_driver.n >= CC_MW_FREELIST_MAX || PyErr_Occurred()) {
        Py_DECREF(driver);
        return;
    }
    drv_empty((drv_t *)driver);
    /* emptying it ran arbitrary code (a __del__), which may have got hold of it */
    if (Py_REFCNT(driver) != 1) {
        Py_DECREF(driver);
        return;
    }
    /* it stays tracked while it waits, holding nothing: no GC untrack and track again per
     * request (mw_clear_spares lets the pool go for tests counting live drivers) */
    st->pool_driver.items[st->pool_driver.n++] = driver;
}

static PyObject *drv_get_request(PyObject *self, void *Py_UNUSED(closure)) {
    return Py_NewRef(((drv_t *)self)->request);
}

static PyGetSetDef drv_getset[] = {
    {"request", drv_get_request, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* body_iterator.aclose(), which BaseHTTPMiddleware's async generator has: later reads end the
 * body. The app is left alone, as there: it sees http.disconnect once dispatch's own response
 * replaces this one. */
static PyObject *drv_aclose(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    drv_t *d = (drv_t *)self;
    d->iter_closed = 1;
    return done_with(d, Py_NewRef(Py_None));
}

static PyMethodDef drv_methods[] = {
    {"aclose", drv_aclose, METH_NOARGS, NULL},
    {"call_next", drv_call_next, METH_O, NULL},
    {"next_message", cc_mw_next_message, METH_NOARGS, NULL},
    {"finish", cc_mw_finish, METH_NOARGS, NULL},
    {"abort", cc_mw_abort, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* response.body_iterator of a call_next response is the driver itself. */
static PyObject *drv_aiter(PyObject *self) {
    return Py_NewRef(self);
}

static PyObject *drv_anext(PyObject *self) {
    drv_t *d = (drv_t *)self;
    return step_new(d->st, d, G_CHUNK, NULL);
}

/* The driver is also the `send` and the `receive` callable handed to the app: one object per
 * layer instead of two, told apart by their arity (send(message), receive()). */
static PyObject *drv_call_any(PyObject *self, Py_ssize_t nargs, PyObject *const *args) {
    if (nargs == 1)
        return drv_asgi_send(self, args[0]);
    if (nargs == 0)
        return drv_asgi_receive(self, NULL);
    PyErr_SetString(PyExc_TypeError, "send(message) takes one argument and receive() none");
    return NULL;
}

static PyObject *drv_tp_call(PyObject *self, PyObject *args, PyObject *kwargs) {
    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "send() and receive() take no keyword arguments");
        return NULL;
    }
    return drv_call_any(self, PyTuple_GET_SIZE(args), &PyTuple_GET_ITEM(args, 0));
}

static PyObject *drv_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames) {
    if (kwnames && PyTuple_GET_SIZE(kwnames)) {
        PyErr_SetString(PyExc_TypeError, "send() and receive() take no keyword arguments");
        return NULL;
    }
    return drv_call_any(self, PyVectorcall_NARGS(nargsf), args);
}

static PyMemberDef drv_members[] = {
    {"__vectorcalloffset__", CC_MW_T_PYSSIZET, offsetof(drv_t, vectorcall), CC_MW_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot drv_slots[] = {
    {Py_am_aiter, drv_aiter},       {Py_am_anext, drv_anext},
    {Py_tp_call, drv_tp_call},      {Py_tp_dealloc, drv_dealloc},
    {Py_tp_traverse, drv_traverse}, {Py_tp_clear, drv_clear},
    {Py_tp_methods, drv_methods},   {Py_tp_getset, drv_getset},
    {Py_tp_members, drv_members},   {0, NULL},
};

static PyType_Spec drv_spec = {
    .name = "cicada._core.MWDriver",
    .basicsize = sizeof(drv_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION |
             Py_TPFLAGS_HAVE_VECTORCALL,
    .slots = drv_slots,
};

/* A starlette Request built without running its __init__ (same attributes it sets). */
static PyObject *make_request(cc_mw_state_t *st, PyObject *scope, PyObject *receive,
                              PyObject *send) {
    PyTypeObject *cls = (PyTypeObject *)st->request_cls;
    /* tp_alloc, not tp_new: every attribute the driver sets is a slot, so the instance gets no
     * inline attribute values (a dict comes on demand if dispatch sets an attribute) */
    PyObject *req = cc_mw_pool_pop(&st->pool_request);
    if (!req && !(req = cls->tp_alloc(cls, 0)))
        return NULL;
    /* slots of cicada.middleware._Request */
    cc_mw_slot_set(req, st->off_scope, scope);
    cc_mw_slot_set(req, st->off_receive, receive);
    cc_mw_slot_set(req, st->off_send, send);
    cc_mw_slot_set(req, st->off_consumed, Py_False);
    cc_mw_slot_set(req, st->off_disconnected, Py_False);
    cc_mw_slot_set(req, st->off_form, Py_None);
    return req;
}

PyObject *cc_mw_driver_new(cc_mw_state_t *st, PyObject *mw, PyObject *scope, PyObject *receive,
                           PyObject *send, PyObject *loop, PyObject *task) {
    if (!st->request_cls) {
        PyErr_SetString(PyExc_RuntimeError, "cicada.middleware is not set up (mw_setup)");
        return NULL;
    }
    /* a pooled driver is alive already (cc_mw_driver_release): no allocation nor init */
    drv_t *d = (drv_t *)cc_mw_pool_pop(&st->pool_driver); /* tracked, references all NULL */
    int fresh = d == NULL;
    if (fresh) {
        if (!(d = (drv_t *)cc_mw_fl_pop(&st->fl_driver, (PyTypeObject *)st->driver_type)) &&
            !(d = PyObject_GC_New(drv_t, (PyTypeObject *)st->driver_type)))
            return NULL;
        for (int i = 0; i < DRV_NREFS; i++)
            d->refs[i] = NULL;
    }
    d->st = st;
    memset(&d->call, 0, sizeof(drv_t) - offsetof(drv_t, call)); /* phase PH_INIT, flags 0 */
    d->mw = Py_NewRef(mw);
    d->scope = Py_NewRef(scope);
    d->receive = Py_NewRef(receive);
    d->send = Py_NewRef(send);
    d->task = Py_XNewRef(task);
    d->loop = Py_XNewRef(loop);
    d->vectorcall = drv_vectorcall;
    d->request = make_request(st, scope, receive, send);
    if (fresh)
        PyObject_GC_Track(d);
    if (!d->request) {
        Py_DECREF(d);
        return NULL;
    }
    return (PyObject *)d;
}

int cc_mw_driver_body_done(PyObject *driver) {
    return ((drv_t *)driver)->phase >= PH_APP_DONE;
}

PyObject *cc_mw_driver_info(PyObject *driver) {
    return ((drv_t *)driver)->info;
}

PyObject *cc_mw_unchanged_start(PyObject *driver, PyObject *status, PyObject *headers) {
    drv_t *d = (drv_t *)driver;
    /* identity, not equality: a header list edited in place is still the one the app sent. The
     * message is the app's, sent (which hands it over): its items are not read again here. */
    if (!d->start || status != d->start_status || headers != d->start_headers)
        return NULL;
    return d->start;
}

PyObject *cc_mw_driver_request(PyObject *driver) {
    return ((drv_t *)driver)->request;
}

PyObject *cc_mw_call_next(PyObject *driver, PyObject *request) {
    return drv_call_next(driver, request);
}

/* mw_driver(middleware, scope, receive, send) -> MWDriver */
static PyObject *mw_driver(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "mw_driver(middleware, scope, receive, send)");
        return NULL;
    }
    return cc_mw_driver_new(&cc_state(module)->mw, args[0], args[1], args[2], args[3], NULL, NULL);
}

/* mw_forget_loop(): run in a forked child (os.register_at_fork), where the parent's loop and
 * task, still in asyncio's current-task dict, are not running. */
static PyObject *mw_forget_loop(PyObject *module, PyObject *Py_UNUSED(ignored)) {
    Py_CLEAR(cc_state(module)->mw.last_loop);
    Py_RETURN_NONE;
}

/* mw_relay_driver(response) -> the driver whose body can be relayed as is, or None */
static PyObject *mw_relay_driver(PyObject *module, PyObject *response) {
    return cc_mw_relay_driver(&cc_state(module)->mw, response);
}

/* mw_clear_spares(): lets go of the spare calls, fuses, steps and drivers kept for reuse, so that
 * a test counting the layer's live objects sees only those still in use. */
static PyObject *mw_clear_spares(PyObject *module, PyObject *Py_UNUSED(ignored)) {
    cc_mw_state_t *st = &cc_state(module)->mw;
    cc_mw_freelist_t *lists[] = {&st->spare_call, &st->spare_fuse, &st->spare_step,
                                 &st->pool_driver};
    for (int i = 0; i < 4; i++)
        while (lists[i]->n > 0)
            Py_DECREF(lists[i]->items[--lists[i]->n]);
    Py_RETURN_NONE;
}

PyMethodDef cc_mw_functions[] = {
    {"mw_clear_spares", mw_clear_spares, METH_NOARGS, NULL},
    {"mw_setup", (PyCFunction)(void (*)(void))cc_mw_setup, METH_FASTCALL, NULL},
    {"mw_driver", (PyCFunction)(void (*)(void))mw_driver, METH_FASTCALL, NULL},
    {"mw_relay_driver", mw_relay_driver, METH_O, NULL},
    {"mw_forget_loop", mw_forget_loop, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

int cc_mw_types_init(PyObject *module, cc_mw_state_t *st) {
    st->driver_type = PyType_FromModuleAndSpec(module, &drv_spec, NULL);
    if (!st->driver_type)
        return -1;
    st->step_type = PyType_FromModuleAndSpec(module, &step_spec, NULL);
    if (!st->step_type)
        return -1;
    st->done_type = PyType_FromModuleAndSpec(module, &done_spec, NULL);
    if (!st->done_type)
        return -1;
    return 0;
}

void cc_mw_driver_set_call(PyObject *driver, PyObject *call) {
    ((drv_t *)driver)->call = call;
}

static inline int step_waits(PyObject *y, PyObject *driver, int wait) {
    step_t *s = (step_t *)y;
    return Py_TYPE(y) == (PyTypeObject *)((drv_t *)driver)->st->step_type &&
           s->d == (drv_t *)driver && s->wait == wait;
}

int cc_mw_is_offer(PyObject *y, PyObject *driver) {
    return step_waits(y, driver, W_OFFER);
}

int cc_mw_is_defer(PyObject *y, PyObject *driver) {
    return step_waits(y, driver, W_DEFER);
}

void cc_mw_step_return(PyObject *step, PyObject *value) {
    Py_XSETREF(((step_t *)step)->fuse_ret, value);
}

int cc_mw_fused_pass(PyObject *driver, PyObject *step) {
    drv_t *d = (drv_t *)driver;
    step_t *s = (step_t *)step;
    d->body_started = 1;
    if (d->phase == PH_BODY && !d->child && !d->entangled && !d->waiting && !d->proxy && !d->msg &&
        d->coro && !d->coro_done && !(d->queue && PyList_GET_SIZE(d->queue)) &&
        !(d->deferred && PyList_GET_SIZE(d->deferred))) {
        d->pass = 1;
        s->goal = G_PASS;
        return 1;
    }
    s->goal = G_BODY;
    return 0;
}

int cc_mw_fused_abort(PyObject *driver, PyObject *step) {
    drv_t *d = (drv_t *)driver;
    step_t *s = (step_t *)step;
    d->phase = PH_SENT;
    s->goal = G_DRAIN;
    s->swallow = 1;
    return drv_release_all(d);
}
