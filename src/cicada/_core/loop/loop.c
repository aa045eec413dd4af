/* LoopCore: the C half of cicada.loop.Loop. It owns the ready queue, the timer heap, the poller
 * and the fd -> (reader, writer) table, and runs iterations (run_once, run-until-stop,
 * run-until-future-done). Policy (nesting rules, running-loop pointer, asyncgen hooks, the rest
 * of the asyncio API) lives in the Python subclass, src/cicada/loop.py. */
#include "module.h"

#include "loop/loop_internal.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <time.h>
#include <unistd.h>

static double now_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int cc_loop_check_closed(cc_loop_t *self) {
    if (CC_UNLIKELY(self->closed)) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    return 0;
}

/* ---- construction / GC ------------------------------------------------------------------ */

static PyObject *core_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    cc_state_t *mst = cc_state_from_type(type);
    if (!mst)
        return NULL;
    if (cc_loop_handles_load(&mst->loop) < 0)
        return NULL;
    cc_loop_t *self = (cc_loop_t *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->st = &mst->loop;
    self->backend.pfd = -1;
    self->wakeup_fd = -1;
    self->signal_fd = -1;
    self->thread_id = Py_NewRef(Py_None);
    struct timespec res;
    self->clock_resolution = clock_getres(CLOCK_MONOTONIC, &res) == 0
                                 ? (double)res.tv_sec + (double)res.tv_nsec * 1e-9
                                 : 1e-9;
    if (cc_loop_backend_open(&self->backend) < 0)
        goto os_error;
    self->events = PyMem_Malloc((size_t)self->backend.nevents * sizeof(cc_loop_event_t));
    if (!self->events) {
        PyErr_NoMemory();
        goto error;
    }
    self->wakeup_fd = cc_loop_wakeup_open();
    if (self->wakeup_fd < 0)
        goto os_error;
    if (cc_loop_backend_set(&self->backend, self->wakeup_fd, 0, CC_EV_READ) < 0)
        goto os_error;
    return (PyObject *)self;
os_error:
    PyErr_SetFromErrno(PyExc_OSError);
error:
    Py_DECREF(self);
    return NULL;
}

static int core_traverse(cc_loop_t *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->thread_id);
    Py_VISIT(self->future_kw);
    CC_TRY_VISIT(cc_loop_ready_traverse(&self->ready, visit, arg));
    CC_TRY_VISIT(cc_loop_timers_traverse(&self->timers, visit, arg));
    for (int i = 0; i < self->nfds; i++) {
        Py_VISIT(self->fds[i].reader);
        Py_VISIT(self->fds[i].writer);
    }
    return cc_loop_sock_traverse(self, visit, arg);
}

static void drop_fd_handles(cc_loop_t *self) {
    for (int i = 0; i < self->nfds; i++) {
        Py_CLEAR(self->fds[i].reader);
        Py_CLEAR(self->fds[i].writer);
    }
}

static int core_clear(cc_loop_t *self) {
    cc_loop_ready_clear(&self->ready);
    cc_loop_timers_clear(&self->timers);
    drop_fd_handles(self);
    cc_loop_sock_clear(self);
    Py_CLEAR(self->future_kw);
    return 0;
}

static void release_os(cc_loop_t *self) {
    cc_loop_backend_close(&self->backend);
    if (self->wakeup_fd >= 0)
        close(self->wakeup_fd);
    self->wakeup_fd = -1;
}

static void core_dealloc(cc_loop_t *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    core_clear(self);
    Py_CLEAR(self->thread_id);
    cc_loop_ready_free(&self->ready);
    cc_loop_timers_free(&self->timers);
    PyMem_Free(self->fds);
    PyMem_Free(self->lazy_fds);
    PyMem_Free(self->events);
    release_os(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ---- argument helpers --------------------------------------------------------------------- */

/* Split fastcall args into (callback, args tuple) and the optional context= keyword. */
static int parse_cb(cc_loop_t *self, const char *fname, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames, Py_ssize_t first, PyObject **cb, PyObject **cbargs,
                    PyObject **ctx) {
    *ctx = NULL;
    if (kwnames) {
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nk; i++) {
            PyObject *k = PyTuple_GET_ITEM(kwnames, i);
            if (k == self->st->str_context || PyUnicode_Compare(k, self->st->str_context) == 0) {
                *ctx = args[nargs + i];
            } else {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname,
                             k);
                return -1;
            }
        }
    }
    if (nargs < first + 1) {
        PyErr_Format(PyExc_TypeError, "%s() missing required argument 'callback'", fname);
        return -1;
    }
    *cb = args[first];
    *cbargs = PyTuple_New(nargs - first - 1);
    if (!*cbargs)
        return -1;
    for (Py_ssize_t i = first + 1; i < nargs; i++)
        PyTuple_SET_ITEM(*cbargs, i - first - 1, Py_NewRef(args[i]));
    return 0;
}

/* Debug-mode checks, done by asyncio's own Python helpers so the messages match. */
static int debug_checks(cc_loop_t *self, PyObject *cb, PyObject *method, int thread) {
    PyObject *r;
    if (thread) {
        r = PyObject_CallMethodNoArgs((PyObject *)self, self->st->str_check_thread);
        if (!r)
            return -1;
        Py_DECREF(r);
    }
    r = PyObject_CallMethodObjArgs((PyObject *)self, self->st->str_check_callback, cb, method,
                                   NULL);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* ---- scheduling --------------------------------------------------------------------------- */

static PyObject *core_call_soon(cc_loop_t *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames) {
    PyObject *cb, *cbargs, *ctx, *h = NULL;
    if (cc_loop_check_closed(self) < 0)
        return NULL;
    if (nargs == 1 && !kwnames && !self->debug) {
        /* call_soon(callback): the common form, no argument tuple to build or keywords to read */
        h = cc_loop_handle_new(self, args[0], self->st->empty_tuple, NULL);
        if (h && cc_loop_ready_push(&self->ready, h) < 0)
            Py_CLEAR(h);
        return h;
    }
    if (parse_cb(self, "call_soon", args, nargs, kwnames, 0, &cb, &cbargs, &ctx) < 0)
        return NULL;
    if (CC_UNLIKELY(self->debug) && debug_checks(self, cb, self->st->str_call_soon, 1) < 0)
        goto done;
    h = cc_loop_handle_new(self, cb, cbargs, ctx);
    if (h && cc_loop_ready_push(&self->ready, h) < 0)
        Py_CLEAR(h);
done:
    Py_DECREF(cbargs);
    return h;
}

/* _call_soon(callback, args, context): BaseEventLoop's internal form, no checks. */
static PyObject *core__call_soon(cc_loop_t *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_call_soon(callback, args, context)");
        return NULL;
    }
    PyObject *h = cc_loop_handle_new(self, args[0], args[1], args[2]);
    if (h && cc_loop_ready_push(&self->ready, h) < 0)
        Py_CLEAR(h);
    return h;
}

static PyObject *core_call_soon_threadsafe(cc_loop_t *self, PyObject *const *args, Py_ssize_t nargs,
                                           PyObject *kwnames) {
    PyObject *cb, *cbargs, *ctx, *h = NULL;
    if (cc_loop_check_closed(self) < 0)
        return NULL;
    if (parse_cb(self, "call_soon_threadsafe", args, nargs, kwnames, 0, &cb, &cbargs, &ctx) < 0)
        return NULL;
    if (CC_UNLIKELY(self->debug) &&
        debug_checks(self, cb, self->st->str_call_soon_threadsafe, 0) < 0)
        goto done;
    h = cc_loop_handle_new(self, cb, cbargs, ctx);
    if (h && cc_loop_ready_push(&self->ready, h) < 0)
        Py_CLEAR(h);
    if (h)
        cc_loop_wakeup_signal(self->wakeup_fd);
done:
    Py_DECREF(cbargs);
    return h;
}

static PyObject *schedule_at(cc_loop_t *self, PyObject *when_obj, double when, PyObject *cb,
                             PyObject *cbargs, PyObject *ctx) {
    if (CC_UNLIKELY(self->debug) && debug_checks(self, cb, self->st->str_call_at, 1) < 0)
        return NULL;
    PyObject *h = cc_loop_timer_new(self, when_obj, cb, cbargs, ctx);
    if (!h)
        return NULL;
    /* A NaN deadline compares false with everything: in the heap it would never be due and would
     * make the poll timeout NaN. asyncio fires it when it reaches the head of its heap, which for
     * a lone timer (sleep(nan), wait_for(x, nan)) is at once: it is due at once here. The handle
     * keeps the NaN its when() reports. */
    if (isnan(when))
        when = -INFINITY;
    if (cc_loop_timers_push(&self->timers, when, h) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    cc_loop_handle_set_scheduled(self->st, h, 1);
    return h;
}

static PyObject *core_call_at(cc_loop_t *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames) {
    PyObject *cb, *cbargs, *ctx, *h = NULL;
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "call_at() missing required argument 'when'");
        return NULL;
    }
    if (args[0] == Py_None) {
        PyErr_SetString(PyExc_TypeError, "when cannot be None");
        return NULL;
    }
    double when = PyFloat_AsDouble(args[0]);
    if (when == -1.0 && PyErr_Occurred())
        return NULL;
    if (cc_loop_check_closed(self) < 0)
        return NULL;
    if (parse_cb(self, "call_at", args, nargs, kwnames, 1, &cb, &cbargs, &ctx) < 0)
        return NULL;
    h = schedule_at(self, args[0], when, cb, cbargs, ctx);
    Py_DECREF(cbargs);
    return h;
}

static PyObject *core_call_later(cc_loop_t *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames) {
    PyObject *cb, *cbargs, *ctx, *h = NULL, *when_obj;
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "call_later() missing required argument 'delay'");
        return NULL;
    }
    if (args[0] == Py_None) {
        PyErr_SetString(PyExc_TypeError, "delay must not be None");
        return NULL;
    }
    double delay = PyFloat_AsDouble(args[0]);
    if (delay == -1.0 && PyErr_Occurred())
        return NULL;
    if (cc_loop_check_closed(self) < 0)
        return NULL;
    if (parse_cb(self, "call_later", args, nargs, kwnames, 1, &cb, &cbargs, &ctx) < 0)
        return NULL;
    double when = now_monotonic() + delay;
    when_obj = PyFloat_FromDouble(when);
    if (when_obj) {
        h = schedule_at(self, when_obj, when, cb, cbargs, ctx);
        Py_DECREF(when_obj);
    }
    Py_DECREF(cbargs);
    return h;
}

static int check_handle(cc_loop_t *self, PyObject *h) {
    if (!PyObject_TypeCheck(h, self->st->handle_type)) {
        PyErr_Format(PyExc_TypeError, "expected an asyncio.Handle, got %.100s",
                     Py_TYPE(h)->tp_name);
        return -1;
    }
    return 0;
}

static PyObject *core__add_callback(cc_loop_t *self, PyObject *h) {
    if (check_handle(self, h) < 0)
        return NULL;
    if (!cc_loop_handle_cancelled(self->st, h) && cc_loop_ready_push(&self->ready, h) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *core__add_callback_signalsafe(cc_loop_t *self, PyObject *h) {
    PyObject *r = core__add_callback(self, h);
    if (r)
        cc_loop_wakeup_signal(self->wakeup_fd);
    return r;
}

static PyObject *core__timer_handle_cancelled(cc_loop_t *self, PyObject *h) {
    if (check_handle(self, h) < 0)
        return NULL;
    PyObject *sched = PyObject_TypeCheck(h, self->st->timer_handle_type)
                          ? CC_SLOT(h, self->st->off_scheduled)
                          : NULL;
    if (sched == Py_True)
        self->timer_cancelled_count++;
    Py_RETURN_NONE;
}

static PyObject *core_time(cc_loop_t *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyFloat_FromDouble(now_monotonic());
}

static PyObject *core_get_debug(cc_loop_t *self, PyObject *unused) {
    (void)unused;
    return PyBool_FromLong(self->debug);
}

static PyObject *core_stop(cc_loop_t *self, PyObject *unused) {
    (void)unused;
    self->stopping = 1;
    Py_RETURN_NONE;
}

static PyObject *core_is_running(cc_loop_t *self, PyObject *unused) {
    (void)unused;
    return PyBool_FromLong(self->thread_id != Py_None);
}

static PyObject *core_is_closed(cc_loop_t *self, PyObject *unused) {
    (void)unused;
    return PyBool_FromLong(self->closed);
}

static PyObject *core__write_to_self(cc_loop_t *self, PyObject *unused) {
    (void)unused;
    if (self->wakeup_fd >= 0)
        cc_loop_wakeup_signal(self->wakeup_fd);
    Py_RETURN_NONE;
}

/* ---- readers and writers ------------------------------------------------------------------ */

int cc_loop_fd_reserve(cc_loop_t *self, int fd) {
    if (fd < self->nfds)
        return 0;
    int n = self->nfds ? self->nfds : CC_LOOP_FDS_INITIAL;
    while (n <= fd)
        n *= 2;
    cc_loop_fd_t *nf = PyMem_Realloc(self->fds, (size_t)n * sizeof(cc_loop_fd_t));
    if (!nf) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = self->nfds; i < n; i++)
        nf[i] = (cc_loop_fd_t){0};
    self->fds = nf;
    self->nfds = n;
    return 0;
}

/* Cancels the handle of a reader or writer the loop has just dropped: it can no longer run, so
 * this only makes h.cancelled() true for whoever holds it, and it must not fail after the change
 * it reports on. A plain Handle outside debug mode is cancelled as Handle.cancel() would do it,
 * without an allocation; any other goes through its method, whose failure is reported as
 * unraisable. */
void cc_loop_cancel_handle(cc_loop_t *self, PyObject *h) {
    cc_loop_state_t *st = self->st;
    if (Py_IS_TYPE(h, st->handle_type) && !self->debug) {
        PyObject *cb = CC_SLOT(h, st->off_callback), *args = CC_SLOT(h, st->off_args),
                 *was = CC_SLOT(h, st->off_cancelled);
        CC_SLOT(h, st->off_cancelled) = Py_NewRef(Py_True);
        CC_SLOT(h, st->off_callback) = Py_NewRef(Py_None);
        CC_SLOT(h, st->off_args) = Py_NewRef(Py_None);
        Py_XDECREF(was);
        Py_XDECREF(cb);
        Py_XDECREF(args);
        return;
    }
    PyObject *r = PyObject_CallMethod(h, "cancel", NULL);
    if (r)
        Py_DECREF(r);
    else
        PyErr_WriteUnraisable(h);
}

static PyObject *add_io(cc_loop_t *self, PyObject *const *args, Py_ssize_t nargs, int writer) {
    const char *name = writer ? "_add_writer" : "_add_reader";
    if (nargs < 2) {
        PyErr_Format(PyExc_TypeError, "%s(fd, callback, *args)", name);
        return NULL;
    }
    if (cc_loop_check_closed(self) < 0)
        return NULL;
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0)
        return NULL;
    if (fd == self->wakeup_fd) {
        PyErr_Format(PyExc_ValueError, "fd %d is the loop's own wake-up fd", fd);
        return NULL;
    }
    PyObject *cbargs = PyTuple_New(nargs - 2);
    if (!cbargs)
        return NULL;
    for (Py_ssize_t i = 2; i < nargs; i++)
        PyTuple_SET_ITEM(cbargs, i - 2, Py_NewRef(args[i]));
    PyObject *h = cc_loop_handle_new(self, args[1], cbargs, NULL);
    Py_DECREF(cbargs);
    if (!h || cc_loop_fd_reserve(self, fd) < 0 || cc_loop_sock_forget_stale(self, fd, NULL) < 0)
        goto error;
    cc_loop_fd_t *e = &self->fds[fd];
    uint32_t bit = writer ? CC_EV_WRITE : CC_EV_READ;
    if (cc_loop_backend_set(&self->backend, fd, e->mask, e->mask | bit) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto error;
    }
    e->mask |= bit;
    cc_loop_sock_displace(self, fd, writer); /* a parked sock_* call loses this side */
    PyObject **slot = writer ? &e->writer : &e->reader;
    PyObject *old = *slot;
    *slot = Py_NewRef(h);
    if (old) {
        cc_loop_cancel_handle(self, old);
        Py_DECREF(old);
    }
    return h;
error:
    Py_XDECREF(h);
    return NULL;
}

static PyObject *remove_io_fd(cc_loop_t *self, int fd, int writer) {
    if (fd < 0 || fd >= self->nfds)
        Py_RETURN_FALSE;
    cc_loop_fd_t *e = &self->fds[fd];
    uint32_t bit = writer ? CC_EV_WRITE : CC_EV_READ;
    if (!(e->mask & bit))
        Py_RETURN_FALSE;
    /* An error here means the fd was closed under us: the kernel has forgotten it already. */
    (void)cc_loop_backend_set(&self->backend, fd, e->mask, e->mask & ~bit);
    e->mask &= ~bit;
    int had_waiter = cc_loop_sock_displace(self, fd, writer);
    PyObject **slot = writer ? &e->writer : &e->reader;
    PyObject *old = *slot;
    *slot = NULL;
    if (had_waiter && !old)
        Py_RETURN_TRUE;
    if (old) {
        cc_loop_cancel_handle(self, old);
        Py_DECREF(old);
        Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

static PyObject *remove_io(cc_loop_t *self, PyObject *fdobj, int writer) {
    if (self->closed)
        Py_RETURN_FALSE;
    int fd = PyObject_AsFileDescriptor(fdobj);
    if (fd < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return NULL;
        PyErr_Clear(); /* a closed socket reports fileno() -1: nothing is registered */
        Py_RETURN_FALSE;
    }
    return remove_io_fd(self, fd, writer);
}

static PyObject *core__add_reader(cc_loop_t *self, PyObject *const *a, Py_ssize_t n) {
    return add_io(self, a, n, 0);
}
static PyObject *core__add_writer(cc_loop_t *self, PyObject *const *a, Py_ssize_t n) {
    return add_io(self, a, n, 1);
}
static PyObject *core__remove_reader(cc_loop_t *self, PyObject *fd) {
    return remove_io(self, fd, 0);
}
static PyObject *core__remove_writer(cc_loop_t *self, PyObject *fd) {
    return remove_io(self, fd, 1);
}

/* (events mask, reader, writer) for fd, or None: backs the _selector view in loop.py. */
static PyObject *core__cc_fd_info(cc_loop_t *self, PyObject *fdobj) {
    int fd = PyObject_AsFileDescriptor(fdobj);
    if (fd < 0)
        return NULL;
    if (fd >= self->nfds || self->fds[fd].mask == 0)
        Py_RETURN_NONE;
    cc_loop_fd_t *e = &self->fds[fd];
    return Py_BuildValue("(IOO)", (unsigned)e->mask, e->reader ? e->reader : Py_None,
                         e->writer ? e->writer : Py_None);
}

static PyObject *core__cc_fds(cc_loop_t *self, PyObject *unused) {
    (void)unused;
    PyObject *l = PyList_New(0);
    if (!l)
        return NULL;
    for (int i = 0; i < self->nfds; i++) {
        if (self->fds[i].mask == 0)
            continue;
        PyObject *v = PyLong_FromLong(i);
        if (!v || PyList_Append(l, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(l);
            return NULL;
        }
        Py_DECREF(v);
    }
    return l;
}

/* ---- the run loop ------------------------------------------------------------------------- */

static int prune_cb(PyObject *h, void *arg) {
    cc_loop_state_t *st = arg;
    if (!cc_loop_handle_cancelled(st, h))
        return 0;
    cc_loop_handle_set_scheduled(st, h, 0);
    return 1;
}

static int dispatch_io(cc_loop_t *self, cc_loop_event_t *ev) {
    int fd = ev->fd;
    if (fd == self->wakeup_fd) {
        cc_loop_wakeup_drain(fd);
        return 0;
    }
    if (fd < 0 || fd >= self->nfds)
        return 0;
    for (int w = 0; w < 2; w++) {
        uint32_t want = w ? CC_EV_WRITE : CC_EV_READ;
        if (!(ev->mask & (want | CC_EV_ERROR)))
            continue;
        cc_loop_fd_t *e = &self->fds[fd]; /* again: the read side may have run Python code */
        if (w ? e->wwait : e->rwait) {
            if (cc_loop_sock_ready(self, fd, w) < 0)
                return -1;
            continue;
        }
        PyObject *h = w ? e->writer : e->reader;
        if (!h) {
            /* Interest nobody uses any more (level-triggered: it would fire on every poll). */
            if ((e->mask & want) && !(e->lazy & want)) {
                (void)cc_loop_backend_set(&self->backend, fd, e->mask, e->mask & ~want);
                e->mask &= ~want;
            }
            continue;
        }
        if (cc_loop_handle_cancelled(self->st, h)) {
            PyObject *r = remove_io_fd(self, fd, w);
            if (!r)
                return -1;
            Py_DECREF(r);
        } else if (cc_loop_ready_push(&self->ready, h) < 0) {
            return -1;
        }
    }
    return 0;
}

static int report_slow(cc_loop_t *self, PyObject *h, double dt) {
    PyObject *dur = PyObject_GetAttrString((PyObject *)self, "slow_callback_duration");
    if (!dur)
        return -1;
    double limit = PyFloat_AsDouble(dur);
    Py_DECREF(dur);
    if (limit == -1.0 && PyErr_Occurred())
        return -1;
    if (dt < limit)
        return 0;
    PyObject *dto = PyFloat_FromDouble(dt);
    if (!dto)
        return -1;
    PyObject *r =
        PyObject_CallMethodObjArgs((PyObject *)self, self->st->str_cc_slow_callback, h, dto, NULL);
    Py_DECREF(dto);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Drop cancelled timers: all of them once they are many (asyncio's rule), else those at the
 * head of the heap, which would otherwise decide the poll timeout. */
static int drop_cancelled_timers(cc_loop_t *self) {
    cc_loop_state_t *st = self->st;
    cc_loop_timers_t *tm = &self->timers;
    if (tm->len > CC_LOOP_MIN_SCHEDULED_TO_PRUNE &&
        (double)self->timer_cancelled_count / (double)tm->len > CC_LOOP_CANCELLED_FRACTION) {
        if (cc_loop_timers_prune(tm, prune_cb, st) < 0)
            return -1;
        self->timer_cancelled_count = 0;
        return 0;
    }
    while (tm->len && cc_loop_handle_cancelled(st, tm->items[0].handle)) {
        self->timer_cancelled_count--;
        PyObject *h = cc_loop_timers_pop(tm);
        cc_loop_handle_set_scheduled(st, h, 0);
        cc_loop_handle_release(st, h);
    }
    return 0;
}

/* 0 with work ready, the time to the first timer, or -1 (block) with nothing scheduled. */
static int poll_timeout_ms(cc_loop_t *self) {
    if (self->ready.len || self->stopping)
        return 0;
    if (!self->timers.len)
        return -1;
    double d = self->timers.items[0].when - now_monotonic();
    d = d < 0 ? 0 : (d > CC_LOOP_MAX_SELECT_TIMEOUT ? CC_LOOP_MAX_SELECT_TIMEOUT : d);
    return (int)ceil(d * 1e3);
}

/* Polls and dispatches I/O events (a zero-timeout poll may be skipped: see
 * CC_LOOP_BUSY_POLL_INTERVAL). */
static int poll_io(cc_loop_t *self, int timeout_ms) {
    if (self->backend.pfd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    if (self->lazy_n && cc_loop_sock_flush(self) < 0)
        return -1;
    int n;
    if (timeout_ms == 0) {
        double now = now_monotonic();
        if (now - self->last_poll < CC_LOOP_BUSY_POLL_INTERVAL && !self->stopping)
            return 0;
        self->last_poll = now;
        n = cc_loop_backend_poll(&self->backend, 0, self->events);
    } else {
        self->last_poll = 0;
        Py_BEGIN_ALLOW_THREADS n = cc_loop_backend_poll(&self->backend, timeout_ms, self->events);
        Py_END_ALLOW_THREADS
    }
    if (n < 0) {
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        /* Let Python-level signal handlers run (KeyboardInterrupt comes out here). */
        return PyErr_CheckSignals();
    }
    for (int i = 0; i < n; i++)
        if (dispatch_io(self, &self->events[i]) < 0)
            return -1;
    return 0;
}

static int ready_due_timers(cc_loop_t *self) {
    cc_loop_timers_t *tm = &self->timers;
    double end = tm->len ? now_monotonic() + self->clock_resolution : 0;
    while (tm->len && tm->items[0].when < end) {
        PyObject *h = cc_loop_timers_pop(tm);
        cc_loop_handle_set_scheduled(self->st, h, 0);
        int rc = cc_loop_ready_push(&self->ready, h);
        Py_DECREF(h);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Runs what was ready when the iteration got here; callbacks scheduled meanwhile wait. */
static int run_ready(cc_loop_t *self) {
    cc_loop_state_t *st = self->st;
    Py_ssize_t ntodo = self->ready.len;
    for (Py_ssize_t i = 0; i < ntodo; i++) {
        PyObject *h = cc_loop_ready_pop(&self->ready);
        if (!h)
            break; /* close() from a callback emptied the queue */
        if (cc_loop_handle_cancelled(st, h)) {
            cc_loop_handle_release(st, h);
            continue;
        }
        int rc;
        if (CC_UNLIKELY(self->debug)) {
            double t0 = now_monotonic();
            rc = cc_loop_handle_run(self, h);
            if (rc == 0)
                rc = report_slow(self, h, now_monotonic() - t0);
        } else {
            rc = cc_loop_handle_run(self, h);
        }
        cc_loop_handle_release(st, h);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* One iteration, like BaseEventLoop._run_once. */
static int run_once(cc_loop_t *self) {
    if (drop_cancelled_timers(self) < 0 || poll_io(self, poll_timeout_ms(self)) < 0 ||
        ready_due_timers(self) < 0)
        return -1;
    return run_ready(self);
}

static PyObject *core__run_once(cc_loop_t *self, PyObject *unused) {
    (void)unused;
    if (run_once(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Iterate until stop(); clears the stop request on the way out, as run_forever does. */
static PyObject *core__cc_run_forever(cc_loop_t *self, PyObject *unused) {
    (void)unused;
    int rc = 0;
    self->running_depth++;
    while (!self->closed) {
        if ((rc = run_once(self)) < 0)
            break;
        if (self->stopping)
            break;
    }
    self->running_depth--;
    self->stopping = 0;
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Iterate until fut.done(). A stop() requested meanwhile is kept for the outer run to honour,
 * so a nested run never cuts its own future short. */
static PyObject *core__cc_run_until(cc_loop_t *self, PyObject *fut) {
    int saved = self->stopping, rc = 0;
    self->stopping = 0;
    self->running_depth++;
    for (;;) {
        PyObject *d = PyObject_CallMethodNoArgs(fut, self->st->str_done);
        if (!d) {
            rc = -1;
            break;
        }
        int done = PyObject_IsTrue(d);
        Py_DECREF(d);
        if (done != 0) {
            rc = done < 0 ? -1 : 0;
            break;
        }
        if (self->closed) {
            PyErr_SetString(PyExc_RuntimeError, "Event loop closed before Future completed.");
            rc = -1;
            break;
        }
        if ((rc = run_once(self)) < 0)
            break;
    }
    self->running_depth--;
    self->stopping |= saved;
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Drop queued work and release the poller; called by Loop.close() after asyncio's close. */
static PyObject *core__cc_close(cc_loop_t *self, PyObject *unused) {
    (void)unused;
    self->closed = 1;
    core_clear(self);
    for (int i = 0; i < self->nfds; i++)
        self->fds[i].mask = 0;
    release_os(self);
    Py_RETURN_NONE;
}

/* type(*args, loop=self), as type_call() would make it but with a keyword dict kept for the
 * loop's lifetime: building that dict from vectorcall keywords was a fifth of a future's cost, and
 * a stream read waits on a new future every time. (Future() without the keyword would look the
 * running loop up, which on 3.11 makes a getpid() syscall.) */
static PyObject *new_with_loop(cc_loop_t *self, PyObject *type, PyObject *args) {
    PyTypeObject *tp = (PyTypeObject *)type;
    if (!self->future_kw) {
        PyObject *kw = PyDict_New();
        if (!kw || PyDict_SetItem(kw, self->st->str_loop, (PyObject *)self) < 0) {
            Py_XDECREF(kw);
            return NULL;
        }
        self->future_kw = kw;
    }
    PyObject *kw = Py_NewRef(self->future_kw); /* tp_init may run code that clears ours */
    PyObject *obj = tp->tp_new(tp, args, kw);
    if (obj && PyObject_TypeCheck(obj, tp) && tp->tp_init && tp->tp_init(obj, args, kw) < 0)
        Py_CLEAR(obj);
    Py_DECREF(kw);
    return obj;
}

PyObject *cc_loop_new_future(cc_loop_t *self) {
    return new_with_loop(self, self->st->future_type, self->st->empty_tuple);
}

static int is_key(PyObject *k, PyObject *name) {
    return k == name || PyUnicode_Compare(k, name) == 0;
}

/* asyncio's create_task (Loop._cc_create_task_py), for everything the fast path does not take. */
static PyObject *create_task_py(cc_loop_t *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames) {
    PyObject *base = PyObject_GetAttrString((PyObject *)self, "_cc_create_task_py");
    if (!base)
        return NULL;
    PyObject *r = PyObject_Vectorcall(base, args, (size_t)nargs, kwnames);
    Py_DECREF(base);
    return r;
}

static PyObject *core_create_task(cc_loop_t *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames) {
    /* Fast path only for create_task(coro[, name=][, context=]) without a task factory and
     * without debug. Any other call (coro= as a keyword, a malformed call) goes to asyncio's
     * version too, which binds the arguments, and fails, exactly as asyncio does. */
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    int plain = nargs == 1 && nk <= 2 && !self->debug;
    for (Py_ssize_t i = 0; i < nk && plain; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        plain = is_key(k, self->st->str_name) || is_key(k, self->st->str_context);
    }
    if (plain) {
        PyObject *factory = PyObject_GetAttr((PyObject *)self, self->st->str_task_factory);
        if (!factory)
            return NULL;
        plain = factory == Py_None;
        Py_DECREF(factory);
    }
    if (!plain)
        return create_task_py(self, args, nargs, kwnames);
    if (cc_loop_check_closed(self) < 0)
        return NULL;
    /* Task(coro, loop=self, **kwargs) with name=/context= passed through as given. */
    if (nk == 0) {
        PyObject *targs = PyTuple_Pack(1, args[0]);
        if (!targs)
            return NULL;
        PyObject *task = new_with_loop(self, self->st->task_type, targs);
        Py_DECREF(targs);
        return task;
    }
    PyObject *stack[4];
    PyObject *names = PyTuple_New(1 + nk);
    if (!names)
        return NULL;
    stack[0] = args[0];
    stack[1] = (PyObject *)self;
    PyTuple_SET_ITEM(names, 0, Py_NewRef(self->st->str_loop));
    for (Py_ssize_t i = 0; i < nk; i++) {
        stack[2 + i] = args[nargs + i];
        PyTuple_SET_ITEM(names, 1 + i, Py_NewRef(PyTuple_GET_ITEM(kwnames, i)));
    }
    PyObject *t = PyObject_Vectorcall(self->st->task_type, stack, 1, names);
    Py_DECREF(names);
    return t;
}

static PyObject *core__read_from_self(cc_loop_t *self, PyObject *unused) {
    (void)unused;
    return cc_loop_read_signals(self);
}

/* _cc_set_signal_fd(fd): the self-pipe's read end (-1 when it is closed). */
static PyObject *core__cc_set_signal_fd(cc_loop_t *self, PyObject *arg) {
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (fd < -1 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "invalid fd");
        return NULL;
    }
    self->signal_fd = (int)fd;
    Py_RETURN_NONE;
}

static PyObject *core_create_future(cc_loop_t *self, PyObject *unused) {
    (void)unused;
    return cc_loop_new_future(self);
}

/* ---- attributes shared with asyncio's Python code ---------------------------------------- */

/* The int flags asyncio's code reads and assigns (_debug, _stopping, _closed): the getset's
 * closure is the field's offset in cc_loop_t. */
#define FLAG(o, c) (*(int *)((char *)(o) + (size_t)(c)))

static PyObject *g_flag(cc_loop_t *s, void *c) { return PyBool_FromLong(FLAG(s, c)); }

static int s_flag(cc_loop_t *s, PyObject *v, void *c) {
    if (!v) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete this attribute");
        return -1;
    }
    int b = PyObject_IsTrue(v);
    if (b < 0)
        return -1;
    FLAG(s, c) = b;
    return 0;
}
static PyObject *g_thread_id(cc_loop_t *s, void *c) {
    (void)c;
    return Py_NewRef(s->thread_id);
}
static int s_thread_id(cc_loop_t *s, PyObject *v, void *c) {
    (void)c;
    Py_XSETREF(s->thread_id, Py_NewRef(v ? v : Py_None));
    return 0;
}
static PyObject *g_tcc(cc_loop_t *s, void *c) {
    (void)c;
    return PyLong_FromSsize_t(s->timer_cancelled_count);
}
static int s_tcc(cc_loop_t *s, PyObject *v, void *c) {
    (void)c;
    Py_ssize_t n = v ? PyLong_AsSsize_t(v) : 0;
    if (n == -1 && PyErr_Occurred())
        return -1;
    s->timer_cancelled_count = n;
    return 0;
}
/* Snapshots: asyncio's __init__ and close() assign/clear these; the real queues live in C. */
static PyObject *g_ready(cc_loop_t *s, void *c) {
    (void)c;
    PyObject *l = PyList_New(s->ready.len);
    if (!l)
        return NULL;
    for (Py_ssize_t i = 0; i < s->ready.len; i++)
        PyList_SET_ITEM(l, i, Py_NewRef(cc_loop_ready_peek(&s->ready, i)));
    return l;
}
static PyObject *g_scheduled(cc_loop_t *s, void *c) {
    (void)c;
    PyObject *l = PyList_New(s->timers.len);
    if (!l)
        return NULL;
    for (Py_ssize_t i = 0; i < s->timers.len; i++)
        PyList_SET_ITEM(l, i, Py_NewRef(s->timers.items[i].handle));
    return l;
}
static int s_ignore(cc_loop_t *s, PyObject *v, void *c) {
    (void)s;
    (void)v;
    (void)c;
    return 0;
}

static PyGetSetDef core_getset[] = {
    {"_debug", (getter)g_flag, (setter)s_flag, NULL, (void *)offsetof(cc_loop_t, debug)},
    {"_stopping", (getter)g_flag, (setter)s_flag, NULL, (void *)offsetof(cc_loop_t, stopping)},
    {"_closed", (getter)g_flag, (setter)s_flag, NULL, (void *)offsetof(cc_loop_t, closed)},
    {"_thread_id", (getter)g_thread_id, (setter)s_thread_id, NULL, NULL},
    {"_timer_cancelled_count", (getter)g_tcc, (setter)s_tcc, NULL, NULL},
    {"_ready", (getter)g_ready, (setter)s_ignore, NULL, NULL},
    {"_scheduled", (getter)g_scheduled, (setter)s_ignore, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)
static PyMethodDef core_methods[] = {
    {"call_soon", (PyCFunction)(void (*)(void))core_call_soon, FASTKW, NULL},
    {"_call_soon", (PyCFunction)(void (*)(void))core__call_soon, METH_FASTCALL, NULL},
    {"call_soon_threadsafe", (PyCFunction)(void (*)(void))core_call_soon_threadsafe, FASTKW, NULL},
    {"call_later", (PyCFunction)(void (*)(void))core_call_later, FASTKW, NULL},
    {"call_at", (PyCFunction)(void (*)(void))core_call_at, FASTKW, NULL},
    {"create_task", (PyCFunction)(void (*)(void))core_create_task, FASTKW, NULL},
    {"create_future", (PyCFunction)core_create_future, METH_NOARGS, NULL},
    {"_read_from_self", (PyCFunction)core__read_from_self, METH_NOARGS, NULL},
    {"_cc_set_signal_fd", (PyCFunction)core__cc_set_signal_fd, METH_O, NULL},
    {"_add_callback", (PyCFunction)core__add_callback, METH_O, NULL},
    {"_add_callback_signalsafe", (PyCFunction)core__add_callback_signalsafe, METH_O, NULL},
    {"_timer_handle_cancelled", (PyCFunction)core__timer_handle_cancelled, METH_O, NULL},
    {"time", (PyCFunction)core_time, METH_NOARGS, NULL},
    {"get_debug", (PyCFunction)core_get_debug, METH_NOARGS, NULL},
    {"stop", (PyCFunction)core_stop, METH_NOARGS, NULL},
    {"is_running", (PyCFunction)core_is_running, METH_NOARGS, NULL},
    {"is_closed", (PyCFunction)core_is_closed, METH_NOARGS, NULL},
    {"_write_to_self", (PyCFunction)core__write_to_self, METH_NOARGS, NULL},
    {"_add_reader", (PyCFunction)(void (*)(void))core__add_reader, METH_FASTCALL, NULL},
    {"_add_writer", (PyCFunction)(void (*)(void))core__add_writer, METH_FASTCALL, NULL},
    {"_remove_reader", (PyCFunction)core__remove_reader, METH_O, NULL},
    {"_remove_writer", (PyCFunction)core__remove_writer, METH_O, NULL},
    {"_cc_fd_info", (PyCFunction)core__cc_fd_info, METH_O, NULL},
    {"_cc_fds", (PyCFunction)core__cc_fds, METH_NOARGS, NULL},
    {"_run_once", (PyCFunction)core__run_once, METH_NOARGS, NULL},
    {"_cc_run_forever", (PyCFunction)core__cc_run_forever, METH_NOARGS, NULL},
    {"_cc_run_until", (PyCFunction)core__cc_run_until, METH_O, NULL},
    {"_cc_close", (PyCFunction)core__cc_close, METH_NOARGS, NULL},
    {"_cc_sock_recv", (PyCFunction)(void (*)(void))cc_loop_sock_recv, METH_FASTCALL, NULL},
    {"_cc_sock_recv_into", (PyCFunction)(void (*)(void))cc_loop_sock_recv_into, METH_FASTCALL,
     NULL},
    {"_cc_sock_sendall", (PyCFunction)(void (*)(void))cc_loop_sock_sendall, METH_FASTCALL, NULL},
    {"_cc_sock_accept", (PyCFunction)cc_loop_sock_accept, METH_O, NULL},
    {"_cc_sock_done", (PyCFunction)cc_loop_sock_done, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot core_slots[] = {
    {Py_tp_doc, "C core of cicada.loop.Loop: ready queue, timer heap, epoll, run loop."},
    {Py_tp_new, core_new},
    {Py_tp_dealloc, core_dealloc},
    {Py_tp_traverse, core_traverse},
    {Py_tp_clear, core_clear},
    {Py_tp_methods, core_methods},
    {Py_tp_getset, core_getset},
    {0, NULL},
};

static PyType_Spec core_spec = {
    .name = "cicada._core.LoopCore",
    .basicsize = sizeof(cc_loop_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = core_slots,
};

PyType_Spec *cc_loop_core_spec(void) { return &core_spec; }
