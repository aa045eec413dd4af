/* HTTPMiddleware.__call__ in C: one awaitable per request and layer (also dispatch's call_next)
 * that awaits dispatch, sends the response it returned (relaying call_next's body messages as the
 * app sent them) and lets the app finish. It never steps the app itself: mw_driver.c does that.
 * Also MWFuse, the awaitable of a start message that resumes dispatch inside the app's send. */
#include "mw/mw.h"

#include <stddef.h>

/* A send handed over without an awaitable (cc_mw_layer_send): to do, then done. */
enum { H_NONE, H_YIELD, H_PARKED };

/* What the call is waiting for in `sub`. */
enum {
    C_DISPATCH,   /* the user's dispatch coroutine */
    C_GENERIC,    /* a response of the user's own: response(scope, receive, send) */
    C_DEBUG,      /* send(http.response.debug) */
    C_START,      /* send(http.response.start) */
    C_PULL,       /* the driver's next body message */
    C_RELAY,      /* send(body message) */
    C_PASS,       /* relay mode: the app runs to its end, its body going straight up */
    C_BACKGROUND, /* response.background() */
    C_FINISH,     /* the app running to its end after the response */
    C_ABORT,      /* the app being cancelled after an error; `error` is re-raised next */
    C_DONE,
};

typedef struct {
    PyObject_HEAD cc_mw_state_t *st;
    PyObject *mw, *scope, *receive, *send;
    PyObject *driver, *response, *sub, *error;
    int state, last;
    /* Fixed when the start goes out: no `background` of its own then (relay mode may be used),
     * and the response was handed to the layer above to be its call_next response (cc_mw_offer;
     * that layer may then change it, so this call no longer reads it). */
    int relay_ok, offered;
    int handed; /* H_*: a message handed straight to the driver that is our `send` */
    /* Fusion: while dispatch awaits call_next in our task, `sub` is the driver's start step and
     * dispatch waits in `dsp`; the app's start message then resumes dispatch from inside the
     * app's send (MWFuse), which leaves in fuse_out what the call does when the step ends. */
    PyObject *dsp, *fuse_val;
    int fusing, fuse_out;
    vectorcallfunc vectorcall; /* the call is also dispatch's `call_next` (no object per layer) */
} call_t;

/* What ends a fused start step (call_t.fuse_out). */
enum {
    FO_NONE,   /* no fused send: the step's own outcome goes to dispatch */
    FO_RETURN, /* dispatch returned fuse_val, to be handled as usual */
    FO_RAISE,  /* dispatch raised fuse_val */
    FO_YIELD,  /* dispatch awaits a step of the driver that only the call can run */
    FO_FAST,   /* the start went up from inside the send: the step now runs the body (state set) */
    FO_STOLEN, /* another task took the app (cc_mw_fuse_steal): dispatch is `sub` again */
};

/* ---- helpers --------------------------------------------------------------------------------- */

/* The iterator behind an awaitable (steals `o`). */
PyObject *cc_mw_awaitable_iter(PyObject *o) {
    if (!o)
        return NULL;
    if (PyCoro_CheckExact(o))
        return o;
    PyTypeObject *t = Py_TYPE(o);
    if (t->tp_as_async && t->tp_as_async->am_await) {
        PyObject *it = t->tp_as_async->am_await(o);
        if (it && !PyIter_Check(it)) {
            PyErr_Format(PyExc_TypeError, "__await__() returned non-iterator of type '%.100s'",
                         Py_TYPE(it)->tp_name);
            Py_CLEAR(it);
        }
        Py_DECREF(o);
        return it;
    }
    PyErr_Format(PyExc_TypeError, "object %.100s can't be used in 'await' expression", t->tp_name);
    Py_DECREF(o);
    return NULL;
}

/* After a StopIteration: its value (new ref), clearing the error. */
static CC_MW_COLD PyObject *fetch_stop_value(void) {
    PyObject *exc = cc_err_take();
    PyObject *value = exc ? PyObject_GetAttrString(exc, "value") : Py_NewRef(Py_None);
    Py_XDECREF(exc);
    return value;
}

/* Resumes the iterator `it`: 1 it yielded (*out), 0 it returned (*out), -1 it raised. */
CC_MW_HOT int iter_resume(cc_mw_state_t *st, PyObject *it, PyObject *arg, PyObject *exc,
                          PyObject **out) {
    *out = NULL;
    if (exc) {
        PyObject *r = PyObject_CallMethodOneArg(it, st->s_throw, exc);
        if (r) {
            *out = r;
            return 1;
        }
        if (!PyErr_ExceptionMatches(PyExc_StopIteration))
            return -1;
        *out = fetch_stop_value();
        return *out ? 0 : -1;
    }
    PySendResult sr = cc_mw_iter_send(it, arg, out);
    return sr == PYGEN_NEXT ? 1 : (sr == PYGEN_RETURN ? 0 : -1);
}

static inline int sub_resume(call_t *c, PyObject *arg, PyObject *exc, PyObject **out) {
    return iter_resume(c->st, c->sub, arg, exc, out);
}

static PyObject *dict3(cc_mw_state_t *st, PyObject *k1, PyObject *v1, PyObject *k2, PyObject *v2,
                       PyObject *k3, PyObject *v3) {
    PyObject *d = PyDict_New();
    if (d && (PyDict_SetItem(d, k1, v1) < 0 || PyDict_SetItem(d, k2, v2) < 0 ||
              (k3 && PyDict_SetItem(d, k3, v3) < 0)))
        Py_CLEAR(d);
    (void)st;
    return d;
}

static int call_send(call_t *c, PyObject *msg, int state) { /* steals msg */
    if (!msg)
        return -1;
    int handed;
    PyObject *r =
        cc_mw_layer_send(c->st, c->send, msg, state == C_START ? c->st->s_start : NULL, &handed);
    Py_DECREF(msg);
    c->state = state;
    if (handed) { /* no awaitable: resumed, the call goes on as if the send returned */
        Py_DECREF(r);
        c->handed = H_YIELD;
        return 0;
    }
    c->sub = cc_mw_awaitable_iter(r);
    return c->sub ? 0 : -1;
}

static int call_pull(call_t *c) {
    c->sub = cc_mw_next_message(c->driver, NULL);
    c->state = C_PULL;
    return c->sub ? 0 : -1;
}

static int call_finish(call_t *c) {
    PyObject *sub = cc_mw_finish_step(c->driver);
    if (!sub)
        return -1;
    if (sub == Py_None) { /* the app is over already: nothing to await */
        Py_DECREF(sub);
        c->state = C_DONE;
        return 0;
    }
    c->sub = sub;
    c->state = C_FINISH;
    return 0;
}

/* response.<name> of a _CallNextResponse (new ref): its slot, or the attribute lookup's error
 * when dispatch deleted it. */
static PyObject *response_slot(call_t *c, Py_ssize_t off, PyObject *name) {
    PyObject *v = cc_mw_slot(c->response, off);
    return v ? Py_NewRef(v) : PyObject_GetAttr(c->response, name);
}

static int call_background(call_t *c) {
    if (c->offered)
        return call_finish(c);
    PyObject *bg = response_slot(c, c->st->off_background, c->st->s_background);
    if (!bg)
        return -1;
    if (bg == Py_None) {
        Py_DECREF(bg);
        return call_finish(c);
    }
    c->sub = cc_mw_awaitable_iter(PyObject_CallNoArgs(bg));
    Py_DECREF(bg);
    c->state = C_BACKGROUND;
    return c->sub ? 0 : -1;
}

/* The start message of `response`, a _CallNextResponse (new ref). */
static PyObject *start_message(call_t *c) {
    cc_mw_state_t *st = c->st;
    PyObject *status = response_slot(c, st->off_status, st->s_status_code);
    if (!status)
        return NULL;
    PyObject *headers = response_slot(c, st->off_raw_headers, st->s_raw_headers);
    if (!headers) {
        Py_DECREF(status);
        return NULL;
    }
    /* untouched status and headers (set in place or not at all): forward the app's own start
     * message, so a stack of layers passes one dict up instead of building one per layer */
    PyObject *msg = cc_mw_unchanged_start(c->driver, status, headers);
    msg = msg ? Py_NewRef(msg)
              : dict3(st, st->s_type, st->s_start, st->s_status, status, st->s_headers, headers);
    Py_DECREF(status);
    Py_DECREF(headers);
    c->relay_ok = cc_mw_slot(c->response, st->off_background) == Py_None;
    if (msg && c->relay_ok && Py_TYPE(c->send) == (PyTypeObject *)st->driver_type)
        c->offered = cc_mw_offer(c->send, c->response, msg);
    return msg;
}

static int call_start(call_t *c) {
    return call_send(c, start_message(c), C_START);
}

static CC_MW_COLD int not_a_response(call_t *c, PyObject *value) {
    PyObject *fn = PyObject_GetAttr(c->mw, c->st->s_dispatch_func), *name = NULL;
    if (fn) {
        name = PyObject_GetAttr(fn, c->st->s_qualname);
        Py_DECREF(fn);
    }
    if (!name) {
        PyErr_Clear();
        name = PyObject_Repr(c->mw);
        if (!name)
            return -1;
    }
    PyErr_Format(PyExc_TypeError, "middleware %U returned %.100s instead of a starlette Response",
                 name, Py_TYPE(value)->tp_name);
    Py_DECREF(name);
    return -1;
}

/* `sub` returned `value` (borrowed): set up what comes next. */
static int call_advance(call_t *c, PyObject *value) {
    cc_mw_state_t *st = c->st;
    switch (c->state) {
    case C_DISPATCH: {
        int ok = Py_TYPE(value) == (PyTypeObject *)st->response_cls ||
                 PyObject_IsInstance(value, st->response_base);
        if (ok <= 0)
            return ok < 0 ? -1 : not_a_response(c, value);
        c->response = Py_NewRef(value);
        PyObject *relay = Py_None;
        if (Py_TYPE(value) == (PyTypeObject *)st->response_cls) {
            relay = cc_mw_relay_driver(st, value);
            if (!relay)
                return -1;
            Py_DECREF(relay); /* the driver holds it; only its identity matters */
        }
        if (relay != c->driver) {
            c->sub = cc_mw_awaitable_iter(
                PyObject_Vectorcall(value, (PyObject *[]){c->scope, c->receive, c->send}, 3, NULL));
            c->state = C_GENERIC;
            return c->sub ? 0 : -1;
        }
        PyObject *info = cc_mw_driver_info(c->driver); /* what make_response put in .info */
        if (!info || info == Py_None)
            return call_start(c);
        return call_send(c, dict3(st, st->s_type, st->s_debug, st->s_info, info, NULL, NULL),
                         C_DEBUG);
    }
    case C_GENERIC:
        return call_finish(c);
    case C_DEBUG:
        return call_start(c);
    case C_START: {
        /* nothing for the layer to do between the app's body messages: let the driver forward
         * them from inside the app's send (see cc_mw_pass) instead of pulling each one here */
        if (c->relay_ok) {
            PyObject *pass = cc_mw_pass(c->driver);
            if (!pass)
                return -1;
            if (pass != Py_None) {
                c->sub = pass;
                c->state = C_PASS;
                return 0;
            }
            Py_DECREF(pass);
        }
        return call_pull(c);
    }
    case C_PASS:
        if (cc_mw_final_sent(c->driver))
            return call_finish(c);
        c->last = 1; /* the app returned without ending its body */
        return call_send(c,
                         dict3(st, st->s_type, st->s_body_msg, st->s_body, st->empty_bytes,
                               st->s_more_body, Py_False),
                         C_RELAY);
    case C_PULL: {
        if (value == Py_None) { /* the app returned without ending its body */
            c->last = 1;
            return call_send(c,
                             dict3(st, st->s_type, st->s_body_msg, st->s_body, st->empty_bytes,
                                   st->s_more_body, Py_False),
                             C_RELAY);
        }
        /* the driver only hands over body and pathsend messages, and has already read
         * more_body: it knows whether this one ends the response */
        c->last = cc_mw_driver_body_done(c->driver);
        return call_send(c, Py_NewRef(value), C_RELAY);
    }
    case C_RELAY:
        return c->last ? call_background(c) : call_pull(c);
    case C_BACKGROUND:
        return call_finish(c);
    case C_FINISH:
        c->state = C_DONE;
        return 0;
    case C_ABORT: {
        c->state = C_DONE;
        PyObject *err = c->error;
        c->error = NULL;
        cc_err_give(err);
        return -1;
    }
    default:
        PyErr_SetString(PyExc_RuntimeError, "middleware call in a bad state");
        return -1;
    }
}

/* An error came up: before the response is done, cancel the app first, then re-raise. */
static CC_MW_COLD int call_fail(call_t *c) {
    Py_CLEAR(c->sub);
    Py_CLEAR(c->dsp);
    Py_CLEAR(c->fuse_val);
    c->fusing = 0;
    if (c->state >= C_FINISH || !c->driver) {
        c->state = C_DONE;
        return -1;
    }
    c->error = cc_err_take();
    c->sub = cc_mw_abort(c->driver, NULL);
    c->state = C_ABORT;
    if (!c->sub) {
        Py_CLEAR(c->error);
        c->state = C_DONE;
        return -1;
    }
    return 0;
}

/* Drops the call's response: a call_next response only it still holds (the outermost layer of a
 * stack holds it last) is kept for reuse, with its headers object when only it holds that. */
static void release_response(call_t *c) {
    cc_mw_state_t *st = c->st;
    PyObject *resp = c->response;
    c->response = NULL;
    if (Py_TYPE(resp) != (PyTypeObject *)st->response_cls || Py_REFCNT(resp) != 1) {
        Py_DECREF(resp);
        return;
    }
    PyObject **hp = (PyObject **)((char *)resp + st->off_headers), *h = *hp;
    if (h) {
        *hp = NULL;
        cc_mw_pool_keep(&st->pool_headers, h, st->mutable_headers, &st->off_list, 1);
    }
    const Py_ssize_t offs[] = {st->off_status, st->off_raw_headers, st->off_body_iterator,
                               st->off_background, st->off_info};
    cc_mw_pool_keep(&st->pool_response, resp, st->response_cls, offs, 5);
}

/* Done: drop every reference now. The layer above holds this call as its app's awaitable and
 * this call holds that layer's send, so keeping them would make a cycle per request. */
static void call_release(call_t *c) {
    PyObject *exc = CC_UNLIKELY(PyErr_Occurred() != NULL) ? cc_err_take() : NULL;
    Py_CLEAR(c->sub);
    Py_CLEAR(c->dsp);
    Py_CLEAR(c->fuse_val);
    if (c->response)
        release_response(c);
    if (c->driver) {
        PyObject *d = c->driver;
        c->driver = NULL;
        cc_mw_driver_set_call(d, NULL);
        cc_mw_driver_release(c->st, d);
    }
    Py_CLEAR(c->send);
    Py_CLEAR(c->receive);
    Py_CLEAR(c->scope);
    Py_CLEAR(c->mw);
    /* done and empty: kept for a later request once its awaiter lets it go */
    if (c->state == C_DONE && !c->error)
        cc_mw_spare_keep(&c->st->spare_call, (PyObject *)c);
    if (exc)
        cc_err_give(exc);
}

/* The start step the call ran for dispatch ended (*r, *out as from sub_resume). 1: dispatch is
 * `sub` again, to be resumed with None, or with *held thrown in; 0: go on with *r and *out. */
static int fuse_end(call_t *c, int *r, PyObject **out, PyObject **held) {
    PyObject *v;
    c->fusing = 0;
    switch (c->fuse_out) {
    case FO_NONE: /* call_next's outcome as usual: dispatch gets it from its await */
    case FO_YIELD:
        if (c->fuse_out == FO_NONE) {
            if (*r == 0)
                cc_mw_step_return(c->sub, *out);
            else
                *held = cc_err_take();
        } else if (*r < 0)
            *held = cc_err_take();
        else
            Py_XDECREF(*out);
        *out = NULL;
        Py_SETREF(c->sub, c->dsp);
        c->dsp = NULL;
        return 1;
    case FO_RETURN:
    case FO_RAISE:
        Py_XDECREF(*out);
        *out = NULL;
        Py_CLEAR(c->dsp);
        v = c->fuse_val;
        c->fuse_val = NULL;
        if (*r < 0) {
            Py_XDECREF(v);
            return 0;
        }
        if (c->fuse_out == FO_RETURN) {
            *out = v;
        } else {
            cc_err_give(v);
            *r = -1;
        }
        return 0;
    default: /* FO_FAST: the step was the body's; c->state says what it was for */
        Py_CLEAR(c->dsp);
        return 0;
    }
}

static PySendResult call_resume(call_t *c, PyObject *arg, PyObject *exc, PyObject **result) {
    *result = NULL;
    if (c->state == C_DONE) {
        if (exc)
            cc_err_give(Py_NewRef(exc));
        else
            PyErr_SetString(PyExc_RuntimeError, "cannot reuse an already awaited middleware call");
        return PYGEN_ERROR;
    }
    c->handed = H_NONE;    /* resumed after a hand-over: as if the send returned (or raised exc) */
    PyObject *held = NULL; /* an exception of ours to throw into `sub` next */
    for (;;) {
        PyObject *out = NULL;
        int r;
        if (c->sub) {
            r = sub_resume(c, arg, exc, &out);
        } else if (exc) {
            cc_err_give(Py_NewRef(exc));
            r = -1;
        } else
            r = 0;
        arg = Py_None;
        exc = NULL;
        Py_CLEAR(held);
        if (r == 1) {
            if (CC_UNLIKELY(c->state == C_DISPATCH) && !c->fusing &&
                cc_mw_is_offer(out, c->driver)) {
                c->dsp = c->sub; /* dispatch awaits call_next: run its start step ourselves */
                c->sub = out;
                c->fusing = 1;
                c->fuse_out = FO_NONE;
                continue;
            }
            *result = out;
            return PYGEN_NEXT;
        }
        if (CC_UNLIKELY(c->fusing) && fuse_end(c, &r, &out, &held)) {
            exc = held; /* dispatch goes on in `sub` again */
            continue;
        }
        Py_CLEAR(c->sub);
        if (r == 0) {
            r = call_advance(c, out ? out : Py_None);
            Py_XDECREF(out);
        }
        if (r < 0 && call_fail(c) < 0) {
            call_release(c);
            return PYGEN_ERROR;
        }
        if (c->handed == H_YIELD) { /* the driver takes the message when it sees itself */
            c->handed = H_PARKED;
            *result = Py_NewRef(c->send);
            return PYGEN_NEXT;
        }
        if (c->state == C_DONE && !c->sub) {
            call_release(c);
            *result = Py_NewRef(Py_None);
            return PYGEN_RETURN;
        }
    }
}

/* ---- iterator protocol ------------------------------------------------------------------------
 */

static PySendResult call_am_send(PyObject *self, PyObject *arg, PyObject **result) {
    return call_resume((call_t *)self, arg, NULL, result);
}

static PyObject *call_to_iter(PySendResult r, PyObject *result) {
    if (r == PYGEN_NEXT)
        return result;
    if (r == PYGEN_ERROR)
        return NULL;
    Py_DECREF(result); /* always None */
    PyErr_SetNone(PyExc_StopIteration);
    return NULL;
}

static PyObject *call_iternext(PyObject *self) {
    PyObject *result;
    PySendResult r = call_resume((call_t *)self, Py_None, NULL, &result);
    return call_to_iter(r, result);
}

static PyObject *call_send_method(PyObject *self, PyObject *arg) {
    PyObject *result;
    PySendResult r = call_resume((call_t *)self, arg, NULL, &result);
    return call_to_iter(r, result);
}

/* The exception instance throw(type[, value[, tb]]) or throw(instance) means (new ref). */
static CC_MW_COLD PyObject *exc_instance(PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw() takes 1 to 3 arguments");
        return NULL;
    }
    PyObject *exc = args[0];
    if (PyExceptionInstance_Check(exc))
        return Py_NewRef(exc);
    if (PyExceptionClass_Check(exc)) {
        PyObject *val = nargs > 1 ? args[1] : Py_None;
        return PyExceptionInstance_Check(val) ? Py_NewRef(val)
               : val == Py_None               ? PyObject_CallNoArgs(exc)
                                              : PyObject_CallOneArg(exc, val);
    }
    PyErr_SetString(PyExc_TypeError, "exceptions must derive from BaseException");
    return NULL;
}

/* The call and the fused send are awaitables written in C; their throw() and close() share one
 * body over each type's resume function. */
typedef PySendResult (*resume_fn)(PyObject *self, PyObject *arg, PyObject *exc,
                                  PyObject **result);

static PyObject *awaitable_throw(PyObject *self, resume_fn resume, PyObject *const *args,
                                 Py_ssize_t nargs) {
    PyObject *inst = exc_instance(args, nargs);
    if (!inst)
        return NULL;
    PyObject *result;
    PySendResult r = resume(self, NULL, inst, &result);
    Py_DECREF(inst);
    return call_to_iter(r, result);
}

/* close() of an awaitable that is still running: GeneratorExit thrown in must come back out. */
static CC_MW_COLD PyObject *awaitable_close(PyObject *self, resume_fn resume, const char *ignored) {
    PyObject *exc = PyObject_CallNoArgs(PyExc_GeneratorExit);
    if (!exc)
        return NULL;
    PyObject *result;
    PySendResult r = resume(self, NULL, exc, &result);
    Py_DECREF(exc);
    if (r == PYGEN_ERROR) {
        if (PyErr_ExceptionMatches(PyExc_GeneratorExit)) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        return NULL;
    }
    Py_DECREF(result);
    if (r == PYGEN_NEXT) {
        PyErr_SetString(PyExc_RuntimeError, ignored);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PySendResult call_resume_any(PyObject *self, PyObject *arg, PyObject *exc,
                                    PyObject **result) {
    return call_resume((call_t *)self, arg, exc, result);
}

static PyObject *call_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return awaitable_throw(self, call_resume_any, args, nargs);
}

static PyObject *call_close(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    call_t *c = (call_t *)self;
    if (c->state == C_DONE || (!c->sub && c->handed != H_PARKED)) {
        c->state = C_DONE;
        Py_RETURN_NONE;
    }
    return awaitable_close(self, call_resume_any, "middleware call ignored GeneratorExit");
}

static PyObject *call_await(PyObject *self) {
    return Py_NewRef(self);
}

/* call_next(request): the request argument is ignored, as Starlette's call_next does. */
static PyObject *call_next_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                      PyObject *kwnames) {
    call_t *c = (call_t *)self;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "call_next(request) takes exactly one argument");
        return NULL;
    }
    if (!c->driver) {
        PyErr_SetString(PyExc_RuntimeError, "call_next() called after the request was over");
        return NULL;
    }
    return cc_mw_call_next(c->driver, args[0]);
}

static PyMemberDef call_members[] = {
    {"__vectorcalloffset__", CC_MW_T_PYSSIZET, offsetof(call_t, vectorcall), CC_MW_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static int call_traverse(PyObject *self, visitproc visit, void *arg) {
    call_t *c = (call_t *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(c->mw);
    Py_VISIT(c->scope);
    Py_VISIT(c->receive);
    Py_VISIT(c->send);
    Py_VISIT(c->driver);
    Py_VISIT(c->response);
    Py_VISIT(c->sub);
    Py_VISIT(c->error);
    Py_VISIT(c->dsp);
    Py_VISIT(c->fuse_val);
    return 0;
}

static int call_clear(PyObject *self) {
    call_t *c = (call_t *)self;
    Py_CLEAR(c->mw);
    Py_CLEAR(c->scope);
    Py_CLEAR(c->receive);
    Py_CLEAR(c->send);
    if (c->driver)
        cc_mw_driver_set_call(c->driver, NULL);
    Py_CLEAR(c->driver);
    Py_CLEAR(c->response);
    Py_CLEAR(c->sub);
    Py_CLEAR(c->error);
    Py_CLEAR(c->dsp);
    Py_CLEAR(c->fuse_val);
    return 0;
}

static void call_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    call_clear(self);
    if (!cc_mw_fl_push(&((call_t *)self)->st->fl_call, self))
        tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef call_methods[] = {
    {"send", call_send_method, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))call_throw, METH_FASTCALL, NULL},
    {"close", call_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot call_slots[] = {
    {Py_tp_dealloc, call_dealloc},
    {Py_tp_traverse, call_traverse},
    {Py_tp_clear, call_clear},
    {Py_tp_iter, call_await},
    {Py_tp_iternext, call_iternext},
    {Py_tp_methods, call_methods},
    {Py_am_await, call_await},
    {Py_am_send, call_am_send},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_members, call_members},
    {0, NULL},
};

/* MWCall: HTTPMiddleware.__call__'s awaitable, and the call_next dispatch is given. */
static PyType_Spec call_spec = {
    .name = "cicada._core.MWCall",
    .basicsize = sizeof(call_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION |
             Py_TPFLAGS_HAVE_VECTORCALL,
    .slots = call_slots,
};

/* ---- MWFuse: dispatch resumed inside the app's send ---------------------------------------
 * Without it, the app's start message suspends the app up through all its frames (a dozen in
 * FastAPI) so that the driver can hand the response to dispatch, and the app is resumed back
 * down once the start went up. With it, the app's `await send(start)` awaits this object, which
 * resumes dispatch (call_next returns at once), sends the start up and puts the driver in relay
 * mode: the app goes on without having been suspended. Whatever dispatch awaits meanwhile goes
 * through the app's frames to the task. When dispatch does anything but hand back call_next's
 * response untouched (or raises, or wants the body), the outcome goes to the call instead
 * (handoff: this object yields itself to the driver, which ends the call's step), and the app
 * waits in its send as it would have without fusion. */

/* FS_NEW: not awaited yet (fusion starts only if the app's own task awaits it); FS_PLAIN: it
 * did not, and the send goes the ordinary way through `up`. */
enum { FS_NEW, FS_DISPATCH, FS_UP, FS_HANDOFF, FS_PLAIN, FS_DONE };

typedef struct {
    PyObject_HEAD cc_mw_state_t *st;
    call_t *c;    /* strong until the fused part is over */
    void *owner;  /* the driver, only compared (cc_mw_fuse_handoff) */
    PyObject *up; /* FS_UP: the upward send's awaitable iterator; FS_NEW: the start message;
                     FS_PLAIN: the ordinary send's awaitable iterator */
    int state;
} fuse_t;

PyObject *cc_mw_fusing_step(PyObject *call) {
    call_t *c = (call_t *)call;
    return c->fusing && c->fuse_out == FO_NONE ? c->sub : NULL;
}

int cc_mw_can_fuse(PyObject *call) {
    call_t *c = (call_t *)call;
    return c->state == C_DISPATCH && !c->fusing && c->sub != NULL;
}

int cc_mw_fuse_handoff(PyObject *y, PyObject *driver) {
    fuse_t *f = (fuse_t *)y;
    return f->state == FS_HANDOFF && f->owner == (void *)driver;
}

int cc_mw_fuse_steal(PyObject *call) {
    call_t *c = (call_t *)call;
    if (!c->fusing || c->fuse_out != FO_NONE || !c->dsp)
        return 0;
    c->fuse_out = FO_STOLEN; /* the fuse returns when the app resumes it */
    c->fusing = 0;
    Py_SETREF(c->sub, c->dsp); /* resumed by our task with what dispatch waits for */
    c->dsp = NULL;
    return 1;
}

PyObject *cc_mw_fuse_new(cc_mw_state_t *st, PyObject *call, PyObject *msg) {
    PyTypeObject *tp = (PyTypeObject *)st->fuse_type;
    fuse_t *f = (fuse_t *)cc_mw_spare_take(&st->spare_fuse); /* tracked already */
    int fresh = f == NULL;
    if (fresh && !(f = (fuse_t *)cc_mw_fl_pop(&st->fl_fuse, tp)) &&
        !(f = PyObject_GC_New(fuse_t, tp)))
        return NULL;
    f->st = st;
    f->c = (call_t *)Py_NewRef(call);
    f->owner = ((call_t *)call)->driver;
    f->up = Py_NewRef(msg);
    f->state = FS_NEW;
    if (fresh)
        PyObject_GC_Track(f);
    return (PyObject *)f;
}

/* Over: a fuse holding nothing more is kept for a later request (see cc_mw_spare_keep). */
static void fuse_finish(fuse_t *f) {
    f->state = FS_DONE;
    Py_CLEAR(f->up);
    Py_CLEAR(f->c);
    cc_mw_spare_keep(&f->st->spare_fuse, (PyObject *)f);
}

/* Gives dispatch's outcome (in c->fuse_out/fuse_val) to the call: see the comment above. */
static PySendResult fuse_handoff(fuse_t *f, PyObject **result) {
    f->state = FS_HANDOFF;
    Py_CLEAR(f->c);
    *result = Py_NewRef((PyObject *)f);
    return PYGEN_NEXT;
}

/* Dispatch returned `value`: 1 if it is call_next's response untouched and its start is on the
 * way up (f->up), 0 if the call must handle it as usual, -1 on error. */
static int fuse_fast(fuse_t *f, PyObject *value) {
    call_t *c = f->c;
    cc_mw_state_t *st = c->st;
    if (Py_TYPE(value) != (PyTypeObject *)st->response_cls ||
        cc_mw_slot(value, st->off_background) != Py_None)
        return 0;
    PyObject *info = cc_mw_driver_info(c->driver);
    if (info && info != Py_None)
        return 0;
    PyObject *relay = cc_mw_relay_driver(st, value);
    if (!relay)
        return -1;
    Py_DECREF(relay); /* only its identity matters */
    if (relay != c->driver)
        return 0;
    c->response = Py_NewRef(value);
    PyObject *msg = start_message(c);
    if (!msg)
        return -1;
    c->state = C_START;
    int outer = st->fuse_up;
    st->fuse_up = 1;
    f->up = cc_mw_awaitable_iter(cc_mw_layer_send(st, c->send, msg, st->s_start, NULL));
    st->fuse_up = outer;
    Py_DECREF(msg);
    return f->up ? 1 : -1;
}

static PySendResult fuse_resume(fuse_t *f, PyObject *arg, PyObject *exc, PyObject **result) {
    call_t *c = f->c;
    PyObject *out = NULL;
    int r;
    *result = NULL;
    switch (f->state) {
    case FS_NEW: {
        PyObject *msg = f->up;
        f->up = NULL;
        if (exc) { /* thrown into before it ran: nothing was sent */
            Py_DECREF(msg);
            fuse_finish(f);
            cc_err_give(Py_NewRef(exc));
            return PYGEN_ERROR;
        }
        r = cc_mw_fuse_begin(c->driver, (PyObject *)c, msg);
        if (r == 0) /* the ordinary send: hand-over in the app's task, else the queue */
            f->up = cc_mw_awaitable_iter(cc_mw_plain_send(c->driver, msg));
        Py_DECREF(msg);
        if (r < 0 || (r == 0 && !f->up)) {
            fuse_finish(f);
            return PYGEN_ERROR;
        }
        if (r == 0) {
            f->state = FS_PLAIN;
            Py_CLEAR(f->c);
            goto plain;
        }
        f->state = FS_DISPATCH;
    }
        /* fall through */
    case FS_DISPATCH:
        if (CC_UNLIKELY(c->fuse_out == FO_STOLEN)) { /* the send returns, as after a handoff */
            fuse_finish(f);
            if (exc) {
                cc_err_give(Py_NewRef(exc));
                return PYGEN_ERROR;
            }
            *result = Py_NewRef(Py_None);
            return PYGEN_RETURN;
        }
        r = iter_resume(f->st, c->dsp, arg, exc, &out);
        if (r == 1) {
            if (!cc_mw_is_defer(out, c->driver)) {
                *result = out;
                return PYGEN_NEXT;
            }
            Py_DECREF(out); /* dispatch waits on it: the call resumes dispatch to run it */
            c->fuse_out = FO_YIELD;
            return fuse_handoff(f, result);
        }
        Py_CLEAR(c->dsp);
        if (r == 0) {
            int fast = fuse_fast(f, out);
            if (fast > 0) {
                Py_DECREF(out);
                f->state = FS_UP;
                arg = Py_None;
                exc = NULL;
                goto up;
            }
            if (fast == 0) {
                c->fuse_out = FO_RETURN;
                c->fuse_val = out;
                return fuse_handoff(f, result);
            }
            Py_DECREF(out);
        }
        c->fuse_out = FO_RAISE;
        c->fuse_val = cc_err_take();
        return fuse_handoff(f, result);
    case FS_UP:
    up:
        r = iter_resume(f->st, f->up, arg, exc, &out);
        if (r == 1) {
            *result = out;
            return PYGEN_NEXT;
        }
        Py_CLEAR(f->up);
        c->fuse_out = FO_FAST;
        if (r == 0) {
            Py_XDECREF(out);
            c->state = cc_mw_fused_pass(c->driver, c->sub) ? C_PASS : C_PULL;
            fuse_finish(f);
            *result = Py_NewRef(Py_None);
            return PYGEN_RETURN;
        }
        /* the start could not go up: as when a send fails, the app is cancelled where it
         * stands, and the call raises the error once the app is done */
        Py_XSETREF(c->error, cc_err_take());
        c->state = C_ABORT;
        if (cc_mw_fused_abort(c->driver, c->sub) < 0)
            PyErr_WriteUnraisable((PyObject *)f);
        fuse_finish(f);
        PyErr_SetNone(f->st->cancelled_error);
        return PYGEN_ERROR;
    case FS_PLAIN:
    plain:
        r = iter_resume(f->st, f->up, arg, exc, &out);
        if (r == 1) {
            *result = out;
            return PYGEN_NEXT;
        }
        fuse_finish(f);
        if (r < 0)
            return PYGEN_ERROR;
        *result = out ? out : Py_NewRef(Py_None);
        return PYGEN_RETURN;
    case FS_HANDOFF: /* the call went on: as after a hand-over, the send returns (or raises) */
        f->state = FS_DONE;
        if (exc) {
            cc_err_give(Py_NewRef(exc));
            return PYGEN_ERROR;
        }
        *result = Py_NewRef(Py_None);
        return PYGEN_RETURN;
    default:
        if (exc)
            cc_err_give(Py_NewRef(exc));
        else
            PyErr_SetString(PyExc_RuntimeError, "cannot reuse an already awaited middleware send");
        return PYGEN_ERROR;
    }
}

static PySendResult fuse_am_send(PyObject *self, PyObject *arg, PyObject **result) {
    return fuse_resume((fuse_t *)self, arg, NULL, result);
}

static PyObject *fuse_iternext(PyObject *self) {
    PyObject *result;
    PySendResult r = fuse_resume((fuse_t *)self, Py_None, NULL, &result);
    return call_to_iter(r, result);
}

static PyObject *fuse_send_method(PyObject *self, PyObject *arg) {
    PyObject *result;
    PySendResult r = fuse_resume((fuse_t *)self, arg, NULL, &result);
    return call_to_iter(r, result);
}

static PySendResult fuse_resume_any(PyObject *self, PyObject *arg, PyObject *exc,
                                    PyObject **result) {
    return fuse_resume((fuse_t *)self, arg, exc, result);
}

static PyObject *fuse_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return awaitable_throw(self, fuse_resume_any, args, nargs);
}

static PyObject *fuse_close(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    fuse_t *f = (fuse_t *)self;
    if (f->state == FS_DONE || f->state == FS_HANDOFF || f->state == FS_NEW ||
        (f->state == FS_DISPATCH && !f->c)) {
        f->state = FS_DONE;
        Py_RETURN_NONE;
    }
    return awaitable_close(self, fuse_resume_any, "middleware send ignored GeneratorExit");
}

static int fuse_traverse(PyObject *self, visitproc visit, void *arg) {
    fuse_t *f = (fuse_t *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT((PyObject *)f->c);
    Py_VISIT(f->up);
    return 0;
}

static int fuse_clear(PyObject *self) {
    fuse_t *f = (fuse_t *)self;
    Py_CLEAR(f->c);
    Py_CLEAR(f->up);
    return 0;
}

static void fuse_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    fuse_clear(self);
    if (!cc_mw_fl_push(&((fuse_t *)self)->st->fl_fuse, self))
        tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef fuse_methods[] = {
    {"send", fuse_send_method, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))fuse_throw, METH_FASTCALL, NULL},
    {"close", fuse_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot fuse_slots[] = {
    {Py_tp_dealloc, fuse_dealloc}, {Py_tp_traverse, fuse_traverse}, {Py_tp_clear, fuse_clear},
    {Py_tp_iter, call_await},      {Py_tp_iternext, fuse_iternext}, {Py_tp_methods, fuse_methods},
    {Py_am_await, call_await},     {Py_am_send, fuse_am_send},      {0, NULL},
};

static PyType_Spec fuse_spec = {
    .name = "cicada._core.MWFuse",
    .basicsize = sizeof(fuse_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = fuse_slots,
};

static PyType_Spec entry_spec, headers_spec, hset_spec;

int cc_mw_call_type_init(PyObject *module, cc_mw_state_t *st) {
    st->call_type = PyType_FromModuleAndSpec(module, &call_spec, NULL);
    if (!st->call_type)
        return -1;
    st->fuse_type = PyType_FromModuleAndSpec(module, &fuse_spec, NULL);
    if (!st->fuse_type)
        return -1;
    st->entry_type = PyType_FromModuleAndSpec(module, &entry_spec, NULL);
    if (!st->entry_type)
        return -1;
    st->headers_type = PyType_FromModuleAndSpec(module, &headers_spec, NULL);
    if (!st->headers_type)
        return -1;
    st->hset_type = PyType_FromModuleAndSpec(module, &hset_spec, NULL);
    return st->hset_type ? 0 : -1;
}

/* ---- HTTPMiddleware.__call__ ------------------------------------------------------------------
 */

PyObject *cc_mw_call(cc_mw_state_t *st, PyObject *self, PyObject *const *args) {
    PyObject *scope = args[0], *receive = args[1], *send = args[2];
    PyObject *type = cc_mw_msg_get(scope, st->s_type, Py_None), *driver = NULL, *fn = NULL;
    PyObject *call_next, *sub;
    if (!type)
        return NULL;
    int http = type == st->s_http ||
               (PyUnicode_Check(type) && PyUnicode_CompareWithASCIIString(type, "http") == 0);
    Py_DECREF(type);
    if (!http) { /* websocket, lifespan: straight through */
        PyObject *app = cc_mw_layer_attr(st, self, st->off_app, st->s_app);
        if (!app)
            return NULL;
        PyObject *r = PyObject_Vectorcall(app, args, 3, NULL);
        Py_DECREF(app);
        return r;
    }
    PyObject *loop, *task;
    if (cc_mw_current_context(st, &loop, &task) < 0)
        return NULL;
    if (loop == Py_None) { /* not asyncio (trio): the driver needs asyncio futures */
        Py_DECREF(loop);
        return PyObject_Vectorcall(st->base_call, (PyObject *[]){self, scope, receive, send}, 4,
                                   NULL);
    }
    driver = cc_mw_driver_new(st, self, scope, receive, send, loop, task);
    Py_DECREF(loop);
    Py_DECREF(task);
    if (!driver)
        goto error;
    if (!(fn = cc_mw_layer_attr(st, self, st->off_dispatch, st->s_dispatch_func)))
        goto error;
    /* a spare call is tracked already; a new or recycled one is tracked below */
    call_t *c = (call_t *)cc_mw_spare_take(&st->spare_call);
    int fresh = c == NULL;
    if (fresh && !(c = (call_t *)cc_mw_fl_pop(&st->fl_call, (PyTypeObject *)st->call_type)) &&
        !(c = PyObject_GC_New(call_t, (PyTypeObject *)st->call_type)))
        goto error;
    c->st = st;
    c->mw = Py_NewRef(self);
    c->scope = Py_NewRef(scope);
    c->receive = Py_NewRef(receive);
    c->send = Py_NewRef(send);
    c->driver = driver; /* the call owns it from here */
    driver = NULL;
    c->response = c->error = c->sub = c->dsp = c->fuse_val = NULL;
    c->fusing = 0;
    c->fuse_out = FO_NONE;
    cc_mw_driver_set_call(c->driver, (PyObject *)c);
    c->state = C_DISPATCH;
    c->last = c->relay_ok = c->offered = 0;
    c->handed = H_NONE;
    c->vectorcall = call_next_vectorcall;
    if (fresh)
        PyObject_GC_Track(c);
    /* dispatch's coroutine holds the call as call_next, and the call holds the coroutine:
     * call_release breaks that cycle when the request is over */
    call_next = (PyObject *)c;
    sub = cc_mw_awaitable_iter(PyObject_Vectorcall(
        fn, (PyObject *[]){cc_mw_driver_request(c->driver), call_next}, 2, NULL));
    Py_DECREF(fn);
    if (!sub) {
        Py_DECREF(c);
        return NULL;
    }
    c->sub = sub;
    return (PyObject *)c;
error:
    Py_XDECREF(driver);
    Py_XDECREF(fn);
    return NULL;
}

int cc_mw_is_layer(cc_mw_state_t *st, PyObject *app) {
    PyTypeObject *tp = Py_TYPE(app);
    /* the last type found to be a layer, valid while its version tag is unchanged: a tag is
     * never reused, and any change to the type's attributes resets it. `tp` is only compared */
    if (tp == st->layer_seen && tp->tp_version_tag && tp->tp_version_tag == st->layer_seen_tag)
        return 1;
    /* likewise the last app type found not to be one (the app below the layer most often):
     * its bases can only change through an assignment that resets the tag too */
    if (tp == st->plain_seen && tp->tp_version_tag && tp->tp_version_tag == st->plain_seen_tag)
        return 0;
    if (!st->layer_type || !PyObject_TypeCheck(app, (PyTypeObject *)st->layer_type)) {
        st->plain_seen = tp;
        st->plain_seen_tag = tp->tp_version_tag;
        return 0;
    }
    /* a subclass may override __call__ */
    PyObject *call = PyObject_GetAttr((PyObject *)tp, st->s_dispatch_func_call);
    if (!call)
        return -1;
    int ours = Py_TYPE(call) == (PyTypeObject *)st->entry_type;
    Py_DECREF(call);
    if (ours) {
        st->layer_seen = tp;
        st->layer_seen_tag = tp->tp_version_tag;
    }
    return ours;
}

/* HTTPMiddleware.__call__ is an MWEntry: a method descriptor of our own type, so that calling
 * a middleware reaches mw_call with our module state and without binding a method object. It
 * is vectorcall: the instance call passes (self, scope, receive, send) without a new tuple. */
typedef struct {
    PyObject_HEAD cc_mw_state_t *st;
    vectorcallfunc vectorcall;
} entry_t;

static PyObject *entry_vectorcall(PyObject *entry, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames) {
    if (kwnames && PyTuple_GET_SIZE(kwnames)) {
        PyErr_SetString(PyExc_TypeError, "__call__() takes no keyword arguments");
        return NULL;
    }
    if (PyVectorcall_NARGS(nargsf) != 4) {
        PyErr_SetString(PyExc_TypeError, "__call__(self, scope, receive, send)");
        return NULL;
    }
    return cc_mw_call(((entry_t *)entry)->st, args[0], args + 1);
}

static PyObject *entry_call(PyObject *entry, PyObject *args, PyObject *kwargs) {
    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "__call__() takes no keyword arguments");
        return NULL;
    }
    if (PyTuple_GET_SIZE(args) != 4) {
        PyErr_SetString(PyExc_TypeError, "__call__(self, scope, receive, send)");
        return NULL;
    }
    cc_mw_state_t *st = &((cc_state_t *)PyType_GetModuleState(Py_TYPE(entry)))->mw;
    return cc_mw_call(st, PyTuple_GET_ITEM(args, 0), &PyTuple_GET_ITEM(args, 1));
}

static PyObject *entry_get(PyObject *entry, PyObject *obj, PyObject *Py_UNUSED(type)) {
    if (!obj || obj == Py_None)
        return Py_NewRef(entry);
    return PyMethod_New(entry, obj);
}

static void entry_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMemberDef entry_members[] = {
    {"__vectorcalloffset__", CC_MW_T_PYSSIZET, offsetof(entry_t, vectorcall), CC_MW_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot entry_slots[] = {
    {Py_tp_dealloc, entry_dealloc},
    {Py_tp_call, entry_call},
    {Py_tp_members, entry_members},
    {Py_tp_descr_get, entry_get},
    {Py_tp_doc, "HTTPMiddleware.__call__(scope, receive, send): one request through the layer."},
    {0, NULL},
};

static PyType_Spec entry_spec = {
    .name = "cicada._core.MWEntry",
    .basicsize = sizeof(entry_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_METHOD_DESCRIPTOR | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = entry_slots,
};

/* _CallNextResponse.headers: Starlette's MutableHeaders over raw_headers, made on first use
 * without running its __init__ (which only stores the list), kept in the _cicada_headers slot. */
typedef struct {
    PyObject_HEAD cc_mw_state_t *st; /* set by mw_setup: no module state lookup per read */
} headers_descr_t;

static PyObject *headers_get(PyObject *descr, PyObject *obj, PyObject *Py_UNUSED(type)) {
    if (!obj || obj == Py_None)
        return Py_NewRef(descr);
    cc_mw_state_t *st = ((headers_descr_t *)descr)->st;
    if (!PyObject_TypeCheck(obj, (PyTypeObject *)st->response_cls)) {
        PyErr_SetString(PyExc_TypeError, "headers descriptor used on a foreign object");
        return NULL;
    }
    PyObject *h = cc_mw_slot(obj, st->off_headers), *raw;
    if (h)
        return Py_NewRef(h);
    raw = cc_mw_slot(obj, st->off_raw_headers);
    raw = raw ? Py_NewRef(raw) : PyObject_GetAttr(obj, st->s_raw_headers);
    if (!raw)
        return NULL;
    /* tp_alloc, not tp_new: no inline attribute values are allocated for an instance whose
     * only state, `_list`, is a slot of cicada.middleware._Headers (a dict comes on demand) */
    PyTypeObject *cls = (PyTypeObject *)st->mutable_headers;
    h = cc_mw_pool_pop(&st->pool_headers);
    if (!h)
        h = cls->tp_alloc(cls, 0);
    if (h) {
        cc_mw_slot_set(h, st->off_list, raw);
        cc_mw_slot_set(obj, st->off_headers, h);
    }
    Py_DECREF(raw);
    return h;
}

/* Starlette's Response.headers is a read-only property: so is ours (a data descriptor, which
 * also spares every read a look into the instance's attributes). */
static int headers_set(PyObject *Py_UNUSED(descr), PyObject *obj, PyObject *value) {
    PyErr_Format(PyExc_AttributeError, "property 'headers' of '%.100s' object has no %s",
                 Py_TYPE(obj)->tp_name, value ? "setter" : "deleter");
    return -1;
}

static PyType_Slot headers_slots[] = {
    {Py_tp_dealloc, entry_dealloc},
    {Py_tp_descr_get, headers_get},
    {Py_tp_descr_set, headers_set},
    {Py_tp_doc, "The response headers (starlette MutableHeaders over raw_headers)."},
    {0, NULL},
};

static PyType_Spec headers_spec = {
    .name = "cicada._core.MWHeadersDescriptor",
    .basicsize = sizeof(headers_descr_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = headers_slots,
};

/* _Headers.__setitem__ in C: response.headers[k] = v is what most dispatch functions do, and
 * Starlette's Python version costs about as much as the rest of a layer. Same result as
 * MutableHeaders.__setitem__ (first match replaced, later duplicates dropped, else appended);
 * anything but a str key and value over a list of 2-tuples goes to that Python version. */
typedef struct {
    PyObject_HEAD cc_mw_state_t *st;
    vectorcallfunc vectorcall;
    /* The last (key, value) strings set and their header tuple: a dispatch function sets the
     * same literals on every request, and a tuple of bytes can sit in any number of lists. */
    PyObject *key, *value, *item;
} hset_t;

/* key.lower().encode("latin-1") for an ASCII key (new ref), or NULL without error if not. */
static PyObject *ascii_lower_key(PyObject *key) {
    if (!PyUnicode_IS_ASCII(key))
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(key);
    const Py_UCS1 *src = PyUnicode_1BYTE_DATA(key);
    PyObject *b = PyBytes_FromStringAndSize(NULL, n);
    if (!b)
        return NULL;
    char *dst = PyBytes_AS_STRING(b);
    for (Py_ssize_t i = 0; i < n; i++)
        dst[i] = (char)(src[i] >= 'A' && src[i] <= 'Z' ? src[i] + ('a' - 'A') : src[i]);
    return b;
}

/* 1 equal, 0 not, -1 error: header names are bytes, compared the way `==` does. */
static int key_eq(PyObject *item_key, PyObject *set_key) {
    if (PyBytes_CheckExact(item_key))
        return PyBytes_GET_SIZE(item_key) == PyBytes_GET_SIZE(set_key) &&
               memcmp(PyBytes_AS_STRING(item_key), PyBytes_AS_STRING(set_key),
                      (size_t)PyBytes_GET_SIZE(set_key)) == 0;
    return PyObject_RichCompareBool(item_key, set_key, Py_EQ);
}

static PyObject *hset_vectorcall(PyObject *descr, PyObject *const *args, size_t nargsf,
                                 PyObject *kwnames) {
    hset_t *hs = (hset_t *)descr;
    cc_mw_state_t *st = hs->st;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *list = NULL, *set_key = NULL, *item = NULL;
    Py_ssize_t first = -1;
    if (nargs != 3 || (kwnames && PyTuple_GET_SIZE(kwnames)))
        goto fallback;
    if (!PyUnicode_CheckExact(args[1]) || !PyUnicode_CheckExact(args[2]))
        goto fallback;
    list = Py_TYPE(args[0]) == (PyTypeObject *)st->mutable_headers
               ? Py_XNewRef(cc_mw_slot(args[0], st->off_list))
               : NULL;
    if (!list && !(list = PyObject_GetAttr(args[0], st->s_list)))
        return NULL;
    if (!PyList_CheckExact(list))
        goto fallback;
    if (args[1] == hs->key && args[2] == hs->value) {
        item = Py_NewRef(hs->item);
    } else {
        PyObject *k = ascii_lower_key(args[1]), *v = NULL;
        if (!k) {
            if (PyErr_Occurred())
                goto error;
            goto fallback;
        }
        if (!(v = PyUnicode_AsLatin1String(args[2]))) {
            Py_DECREF(k);
            goto error;
        }
        item = PyTuple_Pack(2, k, v);
        Py_DECREF(k);
        Py_DECREF(v);
        if (!item)
            goto error;
        Py_XSETREF(hs->key, Py_NewRef(args[1]));
        Py_XSETREF(hs->value, Py_NewRef(args[2]));
        Py_XSETREF(hs->item, Py_NewRef(item));
    }
    set_key = Py_NewRef(PyTuple_GET_ITEM(item, 0));
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *it = PyList_GET_ITEM(list, i);
        if (!PyTuple_CheckExact(it) || PyTuple_GET_SIZE(it) != 2)
            goto fallback; /* before any change: let Python unpack (and complain) */
        Py_INCREF(it);     /* a foreign key's __eq__ may change the list under us */
        int eq = key_eq(PyTuple_GET_ITEM(it, 0), set_key);
        Py_DECREF(it);
        if (eq < 0)
            goto error;
        if (eq && first < 0)
            first = i;
    }
    /* drop later duplicates from the end, as MutableHeaders does (the list may have changed
     * under an __eq__ of a foreign key type, so indexes are checked again) */
    if (first >= 0) {
        for (Py_ssize_t i = PyList_GET_SIZE(list) - 1; i > first; i--) {
            PyObject *it = Py_NewRef(PyList_GET_ITEM(list, i));
            int eq = PyTuple_CheckExact(it) && PyTuple_GET_SIZE(it) == 2
                         ? key_eq(PyTuple_GET_ITEM(it, 0), set_key)
                         : 0;
            Py_DECREF(it);
            if (eq < 0 || (eq && PyList_SetSlice(list, i, i + 1, NULL) < 0))
                goto error;
            if (i > PyList_GET_SIZE(list))
                i = PyList_GET_SIZE(list);
        }
    }
    if (first >= 0 && first < PyList_GET_SIZE(list)) {
        int rc = PyList_SetItem(list, first, item); /* steals item */
        item = NULL;
        if (rc < 0)
            goto error;
    } else if (PyList_Append(list, item) < 0)
        goto error;
    Py_XDECREF(item);
    Py_DECREF(list);
    Py_DECREF(set_key);
    Py_RETURN_NONE;
fallback:
    Py_XDECREF(list);
    Py_XDECREF(set_key);
    Py_XDECREF(item);
    return PyObject_Vectorcall(st->headers_setitem, args, nargsf, kwnames);
error:
    Py_XDECREF(item);
    Py_XDECREF(list);
    Py_XDECREF(set_key);
    return NULL;
}

static PyObject *hset_get(PyObject *descr, PyObject *obj, PyObject *Py_UNUSED(type)) {
    if (!obj || obj == Py_None)
        return Py_NewRef(descr);
    return PyMethod_New(descr, obj);
}

static PyMemberDef hset_members[] = {
    {"__vectorcalloffset__", CC_MW_T_PYSSIZET, offsetof(hset_t, vectorcall), CC_MW_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static void hset_dealloc(PyObject *self) {
    hset_t *hs = (hset_t *)self;
    Py_CLEAR(hs->key);
    Py_CLEAR(hs->value);
    Py_CLEAR(hs->item);
    entry_dealloc(self);
}

static PyType_Slot hset_slots[] = {
    {Py_tp_dealloc, hset_dealloc},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, hset_get},
    {Py_tp_members, hset_members},
    {Py_tp_doc, "Set the header `key` to `value`, removing any duplicate entries."},
    {0, NULL},
};

static PyType_Spec hset_spec = {
    .name = "cicada._core.MWHeadersSetItem",
    .basicsize = sizeof(hset_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_METHOD_DESCRIPTOR | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = hset_slots,
};

/* The byte offset of the __slots__ member `name` of `type`. */
static int slot_offset(PyObject *type, const char *name, Py_ssize_t *off) {
    PyObject *descr = PyObject_GetAttrString(type, name);
    if (!descr)
        return -1;
    int ok = Py_TYPE(descr) == &PyMemberDescr_Type &&
             ((PyMemberDescrObject *)descr)->d_member->type == CC_MW_T_OBJECT_EX;
    if (ok)
        *off = ((PyMemberDescrObject *)descr)->d_member->offset;
    else
        PyErr_Format(PyExc_TypeError, "mw_setup: %R.%s must be a __slots__ member", type, name);
    Py_DECREF(descr);
    return ok ? 0 : -1;
}

/* mw_setup(Request, CallNextResponse, Response, HTTPMiddleware, BaseHTTPMiddleware.__call__,
 *          asyncio.current_task, asyncio._get_running_loop, asyncio.CancelledError,
 *          _Headers (a MutableHeaders subclass), asyncio.ensure_future,
 *          asyncio's _current_tasks dict or None, restart_anyio_cancellation) */
PyObject *cc_mw_setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    cc_mw_state_t *st = &cc_state(module)->mw;
    if (nargs != 12 || !PyType_Check(args[0]) || !PyType_Check(args[1]) || !PyType_Check(args[2]) ||
        !PyType_Check(args[3]) || !PyType_Check(args[8])) {
        PyErr_SetString(PyExc_TypeError,
                        "mw_setup(Request, CallNextResponse, Response, HTTPMiddleware, base_call, "
                        "current_task, get_running_loop, CancelledError, MutableHeaders, "
                        "ensure_future, current_tasks, restart_anyio_cancellation)");
        return NULL;
    }
    if (slot_offset(args[0], "scope", &st->off_scope) < 0 ||
        slot_offset(args[0], "_receive", &st->off_receive) < 0 ||
        slot_offset(args[0], "_send", &st->off_send) < 0 ||
        slot_offset(args[0], "_stream_consumed", &st->off_consumed) < 0 ||
        slot_offset(args[0], "_is_disconnected", &st->off_disconnected) < 0 ||
        slot_offset(args[0], "_form", &st->off_form) < 0 ||
        slot_offset(args[1], "background", &st->off_background) < 0 ||
        slot_offset(args[1], "info", &st->off_info) < 0 ||
        slot_offset(args[3], "app", &st->off_app) < 0 ||
        slot_offset(args[3], "dispatch_func", &st->off_dispatch) < 0 ||
        slot_offset(args[1], "status_code", &st->off_status) < 0 ||
        slot_offset(args[1], "raw_headers", &st->off_raw_headers) < 0 ||
        slot_offset(args[1], "body_iterator", &st->off_body_iterator) < 0 ||
        slot_offset(args[1], "_cicada_headers", &st->off_headers) < 0 ||
        slot_offset(args[8], "_list", &st->off_list) < 0)
        return NULL;
    PyObject *hd = PyType_GenericAlloc((PyTypeObject *)st->headers_type, 0);
    if (!hd)
        return NULL;
    ((headers_descr_t *)hd)->st = st;
    int hrc = PyObject_SetAttr(args[1], st->s_headers, hd);
    Py_DECREF(hd);
    if (hrc < 0)
        return NULL;
    /* args[8] is a MutableHeaders subclass of cicada.middleware's: its __setitem__ becomes
     * ours, with MutableHeaders' own kept for what ours does not handle */
    PyObject *py_set = PyObject_GetAttrString(args[8], "__setitem__");
    if (!py_set)
        return NULL;
    Py_XSETREF(st->headers_setitem, py_set);
    hset_t *hs = PyObject_New(hset_t, (PyTypeObject *)st->hset_type);
    if (!hs)
        return NULL;
    hs->st = st;
    hs->vectorcall = hset_vectorcall;
    hs->key = hs->value = hs->item = NULL;
    int src = PyObject_SetAttrString(args[8], "__setitem__", (PyObject *)hs);
    Py_DECREF(hs);
    if (src < 0)
        return NULL;
    Py_XSETREF(st->mutable_headers, Py_NewRef(args[8]));
    Py_XSETREF(st->ensure_future, Py_NewRef(args[9]));
    entry_t *descr = PyObject_New(entry_t, (PyTypeObject *)st->entry_type);
    if (!descr)
        return NULL;
    descr->st = st;
    descr->vectorcall = entry_vectorcall;
    int rc = PyObject_SetAttr(args[3], st->s_dispatch_func_call, (PyObject *)descr);
    Py_DECREF(descr);
    if (rc < 0)
        return NULL;
    Py_XSETREF(st->layer_type, Py_NewRef(args[3]));
    st->layer_seen = st->plain_seen = NULL; /* what was (not) a layer may differ now */
    Py_XSETREF(st->request_cls, Py_NewRef(args[0]));
    Py_XSETREF(st->response_cls, Py_NewRef(args[1]));
    Py_XSETREF(st->response_base, Py_NewRef(args[2]));
    Py_XSETREF(st->base_call, Py_NewRef(args[4]));
    Py_XSETREF(st->current_task, Py_NewRef(args[5]));
    Py_CLEAR(st->current_tasks);
    if (PyDict_CheckExact(args[10]))
        st->current_tasks = Py_NewRef(args[10]);
    Py_XSETREF(st->get_running_loop, Py_NewRef(args[6]));
    Py_XSETREF(st->cancelled_error, Py_NewRef(args[7]));
    Py_XSETREF(st->anyio_restart, Py_NewRef(args[11]));
    Py_RETURN_NONE;
}
