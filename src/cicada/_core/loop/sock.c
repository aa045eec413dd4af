/* loop.sock_recv / sock_recv_into / sock_sendall / sock_accept in C: the operation is tried at
 * once; only when it would block is a waiter (future + socket) parked in the fd table, and the
 * run loop retries it and completes the future itself when epoll reports the fd, with no Handle
 * or Python callback in between. Semantics are asyncio's (selector_events.py). Only plain
 * socket.socket objects come here (loop.py sends subclasses, SSLSocket included, to asyncio's
 * code, since they may override recv/send): this file works on the fd, never the methods. */
#include "module.h"

#include "loop/loop_internal.h"

#include <errno.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

enum { CC_SOCK_RECV, CC_SOCK_RECV_INTO, CC_SOCK_SENDALL, CC_SOCK_ACCEPT };

static int would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

static int is_fatal(void) {
    return PyErr_ExceptionMatches(PyExc_SystemExit) ||
           PyErr_ExceptionMatches(PyExc_KeyboardInterrupt);
}

static int fileno_of(cc_loop_state_t *st, PyObject *sock) {
    PyObject *r = PyObject_VectorcallMethod(st->str_fileno, &sock,
                                            1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (!r)
        return -2;
    long fd = PyLong_AsLong(r);
    Py_DECREF(r);
    if (fd == -1 && PyErr_Occurred())
        return -2;
    return fd < 0 || fd > INT_MAX ? -1 : (int)fd;
}

static int *inline_fd(PyObject *sock) { return (int *)((char *)sock + sizeof(PyObject)); }

/* CPython's _socket.socket struct keeps the fd first, right after the object header, and sets
 * it to -1 on close. That is not API, so it is proven here once on two real sockets (both
 * numbers, then the -1 after close) before cc_loop_socket_fd trusts it; otherwise fileno(). */
static int probe_inline_fd(cc_loop_state_t *st) {
    int ok = -1;
    PyObject *mod = PyImport_ImportModule("_socket"), *pair = NULL;
    if (mod) {
        st->socket_type = PyObject_GetAttrString(mod, "socket");
        pair = PyObject_CallMethod(mod, "socketpair", NULL);
    }
    if (st->socket_type && PyType_Check(st->socket_type) && pair && PyTuple_Check(pair) &&
        PyTuple_GET_SIZE(pair) == 2) {
        PyObject *a = PyTuple_GET_ITEM(pair, 0), *b = PyTuple_GET_ITEM(pair, 1);
        PyTypeObject *tp = (PyTypeObject *)st->socket_type;
        int same = PyObject_TypeCheck(a, tp) && PyObject_TypeCheck(b, tp) &&
                   tp->tp_basicsize >= (Py_ssize_t)(sizeof(PyObject) + sizeof(int)) &&
                   *inline_fd(a) == fileno_of(st, a) && *inline_fd(b) == fileno_of(st, b) &&
                   *inline_fd(a) != *inline_fd(b);
        if (PyErr_Occurred()) { /* fileno() failed: no proof */
            PyErr_Clear();
            same = 0;
        }
        PyObject *r = PyObject_CallMethod(a, "close", NULL);
        if (same && r && *inline_fd(a) == -1 && fileno_of(st, a) == -1)
            ok = 1;
        Py_XDECREF(r);
        Py_XDECREF(PyObject_CallMethod(b, "close", NULL));
    }
    PyErr_Clear();
    Py_XDECREF(pair);
    Py_XDECREF(mod);
    if (ok < 0)
        Py_CLEAR(st->socket_type);
    return ok;
}

int cc_loop_socket_fd(cc_loop_state_t *st, PyObject *sock) {
    if (CC_UNLIKELY(st->socket_fd_inline == 0))
        st->socket_fd_inline = probe_inline_fd(st);
    if (st->socket_fd_inline > 0 && PyObject_TypeCheck(sock, (PyTypeObject *)st->socket_type))
        return *inline_fd(sock);
    return fileno_of(st, sock);
}

/* sock.fileno(); a closed socket (-1) fails as its recv()/send() would, with EBADF. */
static int sock_fd(cc_loop_state_t *st, PyObject *sock) {
    int fd = cc_loop_socket_fd(st, sock);
    if (fd == -2)
        return -1;
    if (fd < 0) {
        errno = EBADF;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return (int)fd;
}

static PyObject *call1(PyObject *obj, PyObject *name, PyObject *arg) {
    PyObject *a[2] = {obj, arg};
    return PyObject_VectorcallMethod(name, a, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static int call1_ok(PyObject *obj, PyObject *name, PyObject *arg) {
    PyObject *r = call1(obj, name, arg);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* ---- the operations: 1 done (*res set), 0 would block, -1 error with an exception set ------ */

/* Bytes queued for reading on fd (FIONREAD), 0 when it can't be told. */
static Py_ssize_t queued_bytes(int fd) {
    int avail = 0;
    return ioctl(fd, FIONREAD, &avail) < 0 ? 0 : avail;
}

/* recv() of at most `want` bytes into a new bytes object sized to what came: the byte count with
 * *res set (0 at EOF), -1 with errno set and no exception when recv() failed, or -2 with an
 * exception set. */
static Py_ssize_t recv_bytes(int fd, Py_ssize_t want, PyObject **res) {
    *res = NULL;
    PyObject *b = PyBytes_FromStringAndSize(NULL, want);
    if (!b)
        return -2;
    ssize_t got = recv(fd, PyBytes_AS_STRING(b), (size_t)want, MSG_DONTWAIT);
    if (got < 0) {
        int err = errno;
        Py_DECREF(b);
        errno = err;
        return -1;
    }
    if (got == want) {
        *res = b;
        return got;
    }
    *res = PyBytes_FromStringAndSize(PyBytes_AS_STRING(b), got); /* a short read: right-sized */
    Py_DECREF(b);
    return *res ? got : -2;
}

/* recv() of at most n bytes straight into a bytes object of the size FIONREAD reports (no copy
 * out of the shared buffer), when the last read on this fd was large. 1 done, 0 not taken (the
 * shared-buffer path runs: little queued, EOF or an error to report), -1 error. */
static int recv_sized(cc_loop_t *self, int fd, Py_ssize_t n, PyObject **res) {
    if (fd >= self->nfds || !self->fds[fd].big_reads || n < CC_LOOP_DIRECT_READ_MIN)
        return 0;
    Py_ssize_t avail = queued_bytes(fd);
    if (avail < CC_LOOP_DIRECT_READ_MIN)
        return 0;
    Py_ssize_t got = recv_bytes(fd, avail < n ? avail : n, res);
    self->st->direct_reads++;
    if (got == -2)
        return -1;
    if (got > 0)
        return 1;
    Py_CLEAR(*res);
    return 0;
}

static int try_recv(cc_loop_t *self, int fd, Py_ssize_t n, PyObject **res) {
    cc_loop_state_t *st = self->st;
    int rc = recv_sized(self, fd, n, res);
    if (rc != 0)
        return rc;
    if (!st->read_buf) {
        st->read_buf = PyMem_Malloc(CC_LOOP_READ_MAX);
        if (!st->read_buf) {
            PyErr_NoMemory();
            return -1;
        }
    }
    if (n <= CC_LOOP_READ_MAX) {
        ssize_t got = recv(fd, st->read_buf, (size_t)n, MSG_DONTWAIT);
        if (got < 0) {
            if (would_block(errno))
                return 0;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        /* Remember large reads (on fds the loop has parked on) for recv_sized next time. */
        if (fd < self->nfds)
            self->fds[fd].big_reads = got >= CC_LOOP_DIRECT_READ_MIN;
        *res = PyBytes_FromStringAndSize(st->read_buf, got);
        return *res ? 1 : -1;
    }
    /* A size larger than the shared buffer: read into a bytes of that size, as socket.recv does
     * (a short read is copied into one of the right size). */
    Py_ssize_t got = recv_bytes(fd, n, res);
    if (got == -2)
        return -1;
    if (got == -1) {
        if (would_block(errno))
            return 0;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (fd < self->nfds)
        self->fds[fd].big_reads = got >= CC_LOOP_DIRECT_READ_MIN;
    return 1;
}

static int try_recv_into(int fd, PyObject *buf, PyObject **res) {
    Py_buffer view;
    if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear(); /* socket.recv_into's own message */
            PyErr_Format(PyExc_TypeError,
                         "recv_into() argument 1 must be read-write bytes-like object, "
                         "not %.100s",
                         Py_TYPE(buf)->tp_name);
        }
        return -1;
    }
    ssize_t got = recv(fd, view.buf, (size_t)view.len, MSG_DONTWAIT);
    int err = errno;
    PyBuffer_Release(&view);
    if (got < 0) {
        if (would_block(err))
            return 0;
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    *res = PyLong_FromSsize_t(got);
    return *res ? 1 : -1;
}

/* Send from view at *sent; 1 when all of it is gone. */
static int try_send(int fd, Py_buffer *view, Py_ssize_t *sent, PyObject **res) {
    while (*sent < view->len) {
        ssize_t r = send(fd, (const char *)view->buf + *sent, (size_t)(view->len - *sent),
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r < 0) {
            if (would_block(errno))
                return 0;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        *sent += r;
    }
    *res = Py_NewRef(Py_None);
    return 1;
}

/* sock.accept() and conn.setblocking(False), as asyncio does: socket objects are made in
 * Python (socket.socket subclasses), so this one stays a Python call. */
static int try_accept(cc_loop_state_t *st, PyObject *sock, PyObject **res) {
    PyObject *pair = PyObject_VectorcallMethod(st->str_accept, &sock,
                                               1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (!pair) {
        if (PyErr_ExceptionMatches(PyExc_BlockingIOError) ||
            PyErr_ExceptionMatches(PyExc_InterruptedError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
        Py_DECREF(pair);
        PyErr_SetString(PyExc_TypeError, "sock.accept() did not return (conn, address)");
        return -1;
    }
    if (call1_ok(PyTuple_GET_ITEM(pair, 0), st->str_setblocking, Py_False) < 0) {
        Py_DECREF(pair);
        return -1;
    }
    *res = pair;
    return 1;
}

static int attempt(cc_loop_t *self, cc_loop_sockwait_t *w, int fd, PyObject **res) {
    switch (w->op) {
    case CC_SOCK_RECV:
        return try_recv(self, fd, w->n, res);
    case CC_SOCK_RECV_INTO:
        return try_recv_into(fd, w->obj, res);
    case CC_SOCK_SENDALL:
        return try_send(fd, &w->view, &w->n, res);
    default:
        return try_accept(self->st, w->sock, res);
    }
}

/* ---- waiters -------------------------------------------------------------------------------- */

static void waiter_free(cc_loop_sockwait_t *w) {
    if (!w)
        return;
    if (w->op == CC_SOCK_SENDALL)
        PyBuffer_Release(&w->view);
    Py_XDECREF(w->fut);
    Py_XDECREF(w->sock);
    Py_XDECREF(w->obj);
    PyMem_Free(w);
}

static cc_loop_sockwait_t **slot_of(cc_loop_t *self, int fd, int write) {
    return write ? &self->fds[fd].wwait : &self->fds[fd].rwait;
}

/* Keep fd's interest `bit` registered until the end of the iteration (see cc_loop_fd_t). */
static int keep_lazily(cc_loop_t *self, int fd, uint32_t bit, PyObject *sock) {
    cc_loop_fd_t *e = &self->fds[fd];
    if (!(e->mask & bit))
        return 0;
    if (!e->lazy) {
        if (self->lazy_n == self->lazy_cap) {
            int cap = self->lazy_cap ? self->lazy_cap * 2 : CC_LOOP_FDS_INITIAL;
            int *nl = PyMem_Realloc(self->lazy_fds, (size_t)cap * sizeof(int));
            if (!nl) {
                PyErr_NoMemory();
                return -1;
            }
            self->lazy_fds = nl;
            self->lazy_cap = cap;
        }
        self->lazy_fds[self->lazy_n++] = fd;
    }
    e->lazy |= bit;
    if (e->lazy_sock != sock)
        Py_XSETREF(e->lazy_sock, Py_NewRef(sock));
    return 0;
}

/* Remove interest `bit` from fd now (an error means the fd was closed: the kernel forgot it). */
static void drop_interest(cc_loop_t *self, int fd, uint32_t bit) {
    cc_loop_fd_t *e = &self->fds[fd];
    e->lazy &= ~bit;
    if (!(e->mask & bit))
        return;
    (void)cc_loop_backend_set(&self->backend, fd, e->mask, e->mask & ~bit);
    e->mask &= ~bit;
}

int cc_loop_sock_flush(cc_loop_t *self) {
    for (int i = 0; i < self->lazy_n; i++) {
        int fd = self->lazy_fds[i];
        if (fd >= self->nfds)
            continue;
        cc_loop_fd_t *e = &self->fds[fd];
        uint32_t unused = 0;
        if ((e->lazy & CC_EV_READ) && !e->reader && !e->rwait)
            unused |= CC_EV_READ;
        if ((e->lazy & CC_EV_WRITE) && !e->writer && !e->wwait)
            unused |= CC_EV_WRITE;
        e->lazy = 0;
        if (unused & e->mask) {
            (void)cc_loop_backend_set(&self->backend, fd, e->mask, e->mask & ~unused);
            e->mask &= ~unused;
        }
        Py_CLEAR(e->lazy_sock);
    }
    self->lazy_n = 0;
    return 0;
}

int cc_loop_sock_displace(cc_loop_t *self, int fd, int write) {
    if (fd < 0 || fd >= self->nfds)
        return 0;
    cc_loop_sockwait_t **slot = slot_of(self, fd, write);
    cc_loop_sockwait_t *w = *slot;
    self->fds[fd].lazy &= ~(write ? CC_EV_WRITE : CC_EV_READ);
    if (!w)
        return 0;
    *slot = NULL;
    waiter_free(w);
    return 1;
}

/* 1 when the waiter's socket no longer has the number fd (closed: fileno() is -1), 0 when it
 * does, -1 on SystemExit and the like (any other failure to tell counts as closed). */
static int waiter_stale(cc_loop_state_t *st, cc_loop_sockwait_t *w, int fd) {
    PyObject *r = PyObject_VectorcallMethod(st->str_fileno, &w->sock,
                                            1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    long now = r ? PyLong_AsLong(r) : -1;
    Py_XDECREF(r);
    if (PyErr_Occurred()) {
        if (is_fatal())
            return -1;
        PyErr_Clear();
        return 1;
    }
    return now != fd;
}

int cc_loop_sock_forget_stale(cc_loop_t *self, int fd, PyObject *sock) {
    if (fd < 0 || fd >= self->nfds)
        return 0;
    for (int write = 0; write < 2; write++) {
        cc_loop_sockwait_t *w = *slot_of(self, fd, write);
        if (!w || w->sock == sock)
            continue;
        int stale = waiter_stale(self->st, w, fd);
        if (stale < 0)
            return -1;
        if (!stale || *slot_of(self, fd, write) != w) /* fileno() may have run any code */
            continue;
        *slot_of(self, fd, write) = NULL;
        uint32_t bit = write ? CC_EV_WRITE : CC_EV_READ;
        self->fds[fd].mask &= ~bit; /* no epoll_ctl: the kernel dropped it with the file */
        self->fds[fd].lazy &= ~bit;
        waiter_free(w);
    }
    return 0;
}

/* asyncio's _ensure_fd_no_transport(fd), with the common case (no transport for fd) answered
 * by one dict lookup; a hit goes to asyncio's method for its exact check and message. */
static int check_no_transport(cc_loop_t *self, int fd) {
    cc_loop_state_t *st = self->st;
    if (!self->transports_data) {
        PyObject *tr = PyObject_GetAttrString((PyObject *)self, "_transports");
        if (!tr)
            return -1;
        PyObject *data = PyObject_GetAttrString(tr, "data");
        Py_DECREF(tr);
        if (!data || !PyDict_Check(data)) {
            Py_XDECREF(data);
            PyErr_Clear();
            data = Py_NewRef(Py_None); /* not a WeakValueDictionary: always ask asyncio */
        }
        self->transports_data = data;
    }
    PyObject *fdo = PyLong_FromLong(fd);
    if (!fdo)
        return -1;
    int rc = 0;
    if (self->transports_data != Py_None) {
        PyObject *hit = PyDict_GetItemWithError(self->transports_data, fdo);
        if (!hit) {
            Py_DECREF(fdo);
            return PyErr_Occurred() ? -1 : 0;
        }
    }
    rc = call1_ok((PyObject *)self, st->str_ensure_fd_no_transport, fdo);
    Py_DECREF(fdo);
    return rc;
}

/* Park a waiter for fd (the operation would block). `view` (sendall) is moved into the waiter.
 * Returns the future, new reference. */
static PyObject *park(cc_loop_t *self, int fd, int write, int op, PyObject *sock, PyObject *obj,
                      Py_ssize_t n, Py_buffer *view) {
    cc_loop_state_t *st = self->st;
    PyObject *fut = NULL;
    cc_loop_sockwait_t *w = NULL;
    if (cc_loop_check_closed(self) < 0 || check_no_transport(self, fd) < 0 ||
        cc_loop_fd_reserve(self, fd) < 0 || cc_loop_sock_forget_stale(self, fd, sock) < 0)
        goto error;
    if (!self->sock_done_cb) {
        self->sock_done_cb = PyObject_GetAttrString((PyObject *)self, "_cc_sock_done");
        self->sock_ctx = self->sock_done_cb ? PyContext_New() : NULL;
        if (!self->sock_ctx) {
            Py_CLEAR(self->sock_done_cb);
            goto error;
        }
    }
    fut = cc_loop_new_future(self);
    if (!fut)
        goto error;
    /* Its cancellation must remove the watcher: asyncio's _sock_read_done/_sock_write_done. */
    PyObject *a[3] = {fut, self->sock_done_cb, self->sock_ctx};
    PyObject *r = PyObject_VectorcallMethod(st->str_add_done_callback, a,
                                            2 | PY_VECTORCALL_ARGUMENTS_OFFSET, st->kw_context);
    if (!r)
        goto error;
    Py_DECREF(r);
    w = PyMem_Calloc(1, sizeof(*w));
    if (!w) {
        PyErr_NoMemory();
        goto error;
    }
    cc_loop_fd_t *e = &self->fds[fd];
    uint32_t bit = write ? CC_EV_WRITE : CC_EV_READ;
    /* Still registered for this very socket from a waiter that completed this iteration: the
     * kernel has it (the socket object is alive and its fileno() is fd, so fd was not reused). */
    int have = (e->lazy & bit) && e->lazy_sock == sock && (e->mask & bit);
    if (!have) {
        if (cc_loop_backend_set(&self->backend, fd, e->mask, e->mask | bit) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto error;
        }
        e->mask |= bit;
    }
    e->lazy &= ~bit;
    /* Like asyncio's add_reader/add_writer: whatever watched this side is replaced. */
    PyObject **hslot = write ? &e->writer : &e->reader;
    PyObject *old = *hslot;
    *hslot = NULL;
    cc_loop_sock_displace(self, fd, write);
    w->fut = Py_NewRef(fut);
    w->sock = Py_NewRef(sock);
    w->obj = Py_XNewRef(obj);
    w->n = n;
    w->op = op;
    if (view) {
        w->view = *view;
        view->obj = NULL; /* moved */
    }
    *slot_of(self, fd, write) = w;
    st->sock_parked++;
    if (old) {
        cc_loop_cancel_handle(self, old);
        Py_DECREF(old);
    }
    return fut;
error:
    if (view && view->obj)
        PyBuffer_Release(view);
    PyMem_Free(w);
    Py_XDECREF(fut);
    return NULL;
}

/* Complete the future of a waiter taken out of its slot. 0, or -1 for SystemExit and the like. */
static int finish(cc_loop_t *self, cc_loop_sockwait_t *w, int rc, PyObject *res) {
    cc_loop_state_t *st = self->st;
    PyObject *exc = NULL;
    if (rc < 0) {
        if (is_fatal())
            return -1;
        exc = cc_err_take();
    }
    int out = 0;
    if (call1_ok(w->fut, st->str_remove_done_callback, self->sock_done_cb) < 0 ||
        call1_ok(w->fut, rc < 0 ? st->str_set_exception : st->str_set_result,
                 rc < 0 ? exc : res) < 0)
        out = -1;
    Py_XDECREF(exc);
    Py_XDECREF(res);
    st->sock_completed++;
    return out;
}

int cc_loop_sock_ready(cc_loop_t *self, int fd, int write) {
    cc_loop_sockwait_t **slot = slot_of(self, fd, write);
    cc_loop_sockwait_t *w = *slot;
    if (!w)
        return 0;
    *slot = NULL; /* out of the table while Python code may run (and the table may move) */
    PyObject *d = PyObject_CallMethodNoArgs(w->fut, self->st->str_done);
    int done = d ? PyObject_IsTrue(d) : -1;
    Py_XDECREF(d);
    int rc = 0;
    PyObject *res = NULL;
    if (done == 0) {
        rc = attempt(self, w, fd, &res);
        if (rc == 0) {
            /* Spurious wake-up: wait on, unless something else took this side meanwhile. */
            slot = slot_of(self, fd, write);
            if (!*slot && !(write ? self->fds[fd].writer : self->fds[fd].reader)) {
                *slot = w;
                return 0;
            }
            waiter_free(w);
            return 0;
        }
        rc = finish(self, w, rc, res);
    } else if (done < 0) {
        rc = -1;
    }
    /* Done (or cancelled before it could run): the interest stays until the iteration ends, in
     * case the task that awaited the future parks on this socket again right away. */
    if (keep_lazily(self, fd, write ? CC_EV_WRITE : CC_EV_READ, w->sock) < 0)
        rc = -1;
    waiter_free(w);
    return rc;
}

/* The done callback of a parked future: only reached when the future was finished by someone
 * else (cancelled) while parked, since the loop removes it before completing it. */
PyObject *cc_loop_sock_done(cc_loop_t *self, PyObject *fut) {
    for (int fd = 0; fd < self->nfds; fd++) {
        for (int write = 0; write < 2; write++) {
            cc_loop_sockwait_t **slot = slot_of(self, fd, write);
            if (*slot && (*slot)->fut == fut) {
                cc_loop_sockwait_t *w = *slot;
                *slot = NULL;
                drop_interest(self, fd, write ? CC_EV_WRITE : CC_EV_READ);
                waiter_free(w);
                Py_RETURN_NONE;
            }
        }
    }
    Py_RETURN_NONE;
}

/* ---- the methods ---------------------------------------------------------------------------- */

PyObject *cc_loop_sock_recv(cc_loop_t *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_cc_sock_recv(sock, n)");
        return NULL;
    }
    Py_ssize_t n = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recv");
        return NULL;
    }
    int fd = sock_fd(self->st, args[0]);
    if (fd < 0)
        return NULL;
    PyObject *res = NULL;
    int rc = try_recv(self, fd, n, &res);
    if (rc != 0)
        return rc > 0 ? res : NULL;
    return park(self, fd, 0, CC_SOCK_RECV, args[0], NULL, n, NULL);
}

PyObject *cc_loop_sock_recv_into(cc_loop_t *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_cc_sock_recv_into(sock, buf)");
        return NULL;
    }
    int fd = sock_fd(self->st, args[0]);
    if (fd < 0)
        return NULL;
    PyObject *res = NULL;
    int rc = try_recv_into(fd, args[1], &res);
    if (rc != 0)
        return rc > 0 ? res : NULL;
    return park(self, fd, 0, CC_SOCK_RECV_INTO, args[0], args[1], 0, NULL);
}

PyObject *cc_loop_sock_sendall(cc_loop_t *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_cc_sock_sendall(sock, data)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int fd = sock_fd(self->st, args[0]);
    if (fd < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    PyObject *res = NULL;
    Py_ssize_t sent = 0;
    int rc = try_send(fd, &view, &sent, &res);
    if (rc != 0) {
        PyBuffer_Release(&view);
        return rc > 0 ? res : NULL;
    }
    return park(self, fd, 1, CC_SOCK_SENDALL, args[0], args[1], sent, &view);
}

PyObject *cc_loop_sock_accept(cc_loop_t *self, PyObject *sock) {
    int fd = sock_fd(self->st, sock);
    if (fd < 0)
        return NULL;
    PyObject *res = NULL;
    int rc = try_accept(self->st, sock, &res);
    if (rc != 0)
        return rc > 0 ? res : NULL;
    return park(self, fd, 0, CC_SOCK_ACCEPT, sock, NULL, 0, NULL);
}

/* ---- GC ------------------------------------------------------------------------------------- */

static int visit_waiter(cc_loop_sockwait_t *w, visitproc visit, void *arg) {
    if (!w)
        return 0;
    Py_VISIT(w->fut);
    Py_VISIT(w->sock);
    Py_VISIT(w->obj);
    return 0;
}

int cc_loop_sock_traverse(cc_loop_t *self, visitproc visit, void *arg) {
    Py_VISIT(self->sock_done_cb);
    Py_VISIT(self->sock_ctx);
    Py_VISIT(self->transports_data);
    for (int i = 0; i < self->nfds; i++) {
        CC_TRY_VISIT(visit_waiter(self->fds[i].rwait, visit, arg));
        CC_TRY_VISIT(visit_waiter(self->fds[i].wwait, visit, arg));
        Py_VISIT(self->fds[i].lazy_sock);
    }
    return 0;
}

/* Drop every waiter (their futures stay pending, as a closed asyncio loop leaves them). */
void cc_loop_sock_clear(cc_loop_t *self) {
    for (int i = 0; i < self->nfds; i++) {
        cc_loop_sockwait_t *r = self->fds[i].rwait, *w = self->fds[i].wwait;
        self->fds[i].rwait = self->fds[i].wwait = NULL;
        self->fds[i].lazy = 0;
        waiter_free(r);
        waiter_free(w);
        Py_CLEAR(self->fds[i].lazy_sock);
    }
    self->lazy_n = 0;
    Py_CLEAR(self->sock_done_cb);
    Py_CLEAR(self->sock_ctx);
    Py_CLEAR(self->transports_data);
}
