/* SocketTransportCore: the hot half of cicada's stream socket transport (TCP and Unix). It reads
 * into a shared buffer and calls protocol.data_received / buffer_updated (or a C protocol's
 * function, loop.h), and writes with sendmsg() straight from the caller's buffers, queueing the
 * rest in a bytearray. Everything cold (closing, flow-control callbacks, EOF, error reporting,
 * repr) is asyncio's _SelectorSocketTransport code in the Python subclass, which sees this
 * object's state through the getsets below. */
#include "module.h"

#include "loop/loop.h"
#include "loop/loop_internal.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <structmember.h>
#include <sys/socket.h>

/* The type subclasses asyncio.transports._FlowControlMixin (a Python class with __slots__), so
 * its fields start after that class's instance size, known only at run time: tr_off. The object
 * fields are also declared as T_OBJECT_EX members, so CPython's own subtype traverse and dealloc
 * (which this type inherits) visit and clear them. */
typedef struct {
    cc_loop_state_t *st;
    int fd;
    int closing, eof, paused, protocol_paused, buffered;
    int big_reads;        /* the last read was large: expect another (read_direct, recv_sized) */
    Py_ssize_t last_read; /* bytes the last read brought */
    int stream;           /* the protocol is exactly asyncio.StreamReaderProtocol (read_stream) */
    Py_ssize_t conn_lost, high_water, low_water;
    PyObject *sock, *protocol, *loop, *empty_waiter;
    PyObject *buffer;               /* bytearray: bytes accepted by write() but not yet sent */
    const cc_loop_proto_ops_t *ops; /* the protocol's C entry points, or NULL: call Python */
} cc_transport_t;

static Py_ssize_t
    tr_off; /* offset of cc_transport_t inside an instance; set when the type is made */
#define F(o) ((cc_transport_t *)((char *)(o) + tr_off))

static PyObject *tr_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    cc_state_t *mst = cc_state_from_type(type);
    if (!mst || cc_loop_handles_load(&mst->loop) < 0)
        return NULL;
    if (!mst->loop.read_buf) {
        mst->loop.read_buf = PyMem_Malloc(CC_LOOP_READ_MAX);
        if (!mst->loop.read_buf)
            return PyErr_NoMemory();
    }
    PyObject *obj = type->tp_alloc(type, 0);
    if (!obj)
        return NULL;
    cc_transport_t *self = F(obj);
    self->st = &mst->loop;
    self->fd = -1;
    self->sock = Py_NewRef(Py_None);
    self->protocol = Py_NewRef(Py_None);
    self->loop = Py_NewRef(Py_None);
    self->empty_waiter = Py_NewRef(Py_None);
    self->buffer = PyByteArray_FromStringAndSize(NULL, 0);
    if (!self->buffer) {
        Py_DECREF(obj);
        return NULL;
    }
    return obj;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static int is_fatal(void) {
    return PyErr_ExceptionMatches(PyExc_SystemExit) ||
           PyErr_ExceptionMatches(PyExc_KeyboardInterrupt);
}

/* Turn the pending exception into self._fatal_error(exc, message), like asyncio's except
 * BaseException clauses; SystemExit and KeyboardInterrupt keep propagating. */
static PyObject *fatal(PyObject *o, const char *message) {
    if (is_fatal())
        return NULL;
    PyObject *exc = cc_err_take();
    PyObject *msg = PyUnicode_FromString(message);
    PyObject *r = NULL;
    if (exc && msg)
        r = PyObject_CallMethod(o, "_fatal_error", "OO", exc, msg);
    Py_XDECREF(exc);
    Py_XDECREF(msg);
    return r;
}

static PyObject *call_noargs(PyObject *obj, const char *name) {
    return PyObject_CallMethod(obj, name, NULL);
}

static int would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

/* ---- reading ------------------------------------------------------------------------------ */

static PyObject *read_buffered(PyObject *o) {
    cc_transport_t *self = F(o);
    PyObject *buf = PyObject_CallMethod(self->protocol, "get_buffer", "i", -1);
    Py_buffer view;
    if (!buf)
        return fatal(o, "Fatal error: protocol.get_buffer() call failed.");
    if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) {
        int read_only = PyErr_ExceptionMatches(PyExc_BufferError);
        if (read_only) { /* asyncio's recv_into() fails on it, and reports a read error */
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "recv_into() argument 1 must be read-write bytes-like object, not %.100s",
                         Py_TYPE(buf)->tp_name);
        }
        Py_DECREF(buf);
        return fatal(o, read_only ? "Fatal read error on socket transport"
                                  : "Fatal error: protocol.get_buffer() call failed.");
    }
    if (view.len == 0) {
        PyBuffer_Release(&view);
        Py_DECREF(buf);
        PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
        return fatal(o, "Fatal error: protocol.get_buffer() call failed.");
    }
    ssize_t n = recv(self->fd, view.buf, (size_t)view.len, 0);
    int err = errno;
    PyBuffer_Release(&view);
    Py_DECREF(buf);
    if (n < 0) {
        if (would_block(err))
            Py_RETURN_NONE;
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return fatal(o, "Fatal read error on socket transport");
    }
    if (n == 0)
        return call_noargs(o, "_read_ready__on_eof");
    PyObject *r = PyObject_CallMethod(self->protocol, "buffer_updated", "n", (Py_ssize_t)n);
    if (!r)
        return fatal(o, "Fatal error: protocol.buffer_updated() call failed.");
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* protocol.data_received(data); steals `data`. */
static PyObject *deliver(PyObject *o, PyObject *data) {
    cc_transport_t *self = F(o);
    /* The protocol may be swapped (set_protocol) while it runs: hold it. */
    PyObject *a[2] = {Py_NewRef(self->protocol), data};
    PyObject *r = PyObject_VectorcallMethod(self->st->str_data_received, a,
                                            2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(a[0]);
    Py_DECREF(data);
    if (!r)
        return fatal(o, "Fatal error: protocol.data_received() call failed.");
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* Large reads: recv() straight into a new object sized like the last read, with the shared
 * buffer behind it (a second iovec) for whatever exceeds that, so a steady stream of large
 * messages is read with no copy out of the shared buffer (100 KiB echoes spent ~5% of their CPU
 * in that memcpy) and no FIONREAD syscall to size the read (~0.5 us each). `dst` is where the
 * first `want` bytes go. Returns what recv() returns; on a read past `want` the caller copies the
 * overflow, which is in the shared buffer. */
static ssize_t recv_sized(cc_transport_t *self, char *dst, Py_ssize_t want) {
    struct iovec iov[2] = {{dst, (size_t)want},
                           {self->st->read_buf, (size_t)(CC_LOOP_READ_MAX - want)}};
    struct msghdr msg = {0};
    msg.msg_iov = iov;
    msg.msg_iovlen = want < CC_LOOP_READ_MAX ? 2 : 1;
    self->st->direct_reads++;
    return recvmsg(self->fd, &msg, 0);
}

/* The size to expect from the next large read: what the last one brought. */
static Py_ssize_t predicted(cc_transport_t *self) {
    Py_ssize_t want = self->last_read;
    return want < CC_LOOP_DIRECT_READ_MIN ? CC_LOOP_DIRECT_READ_MIN
                                          : (want > CC_LOOP_READ_MAX ? CC_LOOP_READ_MAX : want);
}

/* recv_sized() into a new bytes object: the byte count with *res set (0: EOF), -1 with errno set,
 * or -2 with an exception set. */
static Py_ssize_t read_direct(cc_transport_t *self, PyObject **res) {
    Py_ssize_t want = predicted(self);
    PyObject *b = PyBytes_FromStringAndSize(NULL, want);
    *res = NULL;
    if (!b)
        return -2;
    ssize_t n = recv_sized(self, PyBytes_AS_STRING(b), want);
    if (n <= 0) {
        int err = errno;
        Py_DECREF(b);
        errno = err;
        return n;
    }
    if (n != want) {
        /* Shrinking is done in place by the allocator; growing (the peer sends more than last
         * time) is rare and copies. */
        if (_PyBytes_Resize(&b, n) < 0)
            return -2;
        if (n > want)
            memcpy(PyBytes_AS_STRING(b) + want, self->st->read_buf, (size_t)(n - want));
    }
    *res = b;
    return n;
}

/* ---- the asyncio streams fast path --------------------------------------------------------- */

/* asyncio.StreamReaderProtocol.data_received(data) is `reader.feed_data(data)` on the reader its
 * weak reference still holds, and StreamReader.feed_data() appends to the reader's bytearray,
 * wakes the read*() call waiting on reader._waiter, and pauses reading once the buffer holds more
 * than twice its limit. The same steps are done here, with the bytes received straight into that
 * bytearray: no bytes object and no Python frame per read. Only for exactly asyncio's classes
 * with their own methods (3.11 to 3.13, load_streams); anything else, a dead reader, or a
 * reader already at EOF (feed_data's assert) takes the generic path. */

static int class_function_is(PyObject *type, PyObject *name, PyObject *fn) {
    PyObject *dict = ((PyTypeObject *)type)->tp_dict;
    return dict && PyDict_GetItemWithError(dict, name) == fn;
}

/* The reader the fast path may feed (new reference), or NULL when the generic path must run.
 * Nothing has been read yet, so a lookup that fails is left to the generic path, which meets the
 * same failure inside data_received() and reports it as asyncio does. */
static PyObject *stream_reader(cc_transport_t *self) {
    cc_loop_state_t *st = self->st;
    PyObject *reader = NULL, *wr = NULL;
    if (!st->stream_fast ||
        !class_function_is(st->stream_protocol_type, st->str_data_received,
                           st->srp_data_received) ||
        !class_function_is(st->stream_reader_type, st->str_feed_data, st->sr_feed_data) ||
        !class_function_is(st->stream_reader_type, st->str_wakeup_waiter, st->sr_wakeup_waiter))
        goto generic;
    wr = PyObject_GetAttr(self->protocol, st->str_stream_reader_wr);
    if (!wr || !PyWeakref_CheckRefExact(wr))
        goto generic;
#if PY_VERSION_HEX >= 0x030D0000
    if (PyWeakref_GetRef(wr, &reader) < 0)
        reader = NULL;
#else
    reader = Py_XNewRef(PyWeakref_GetObject(wr));
#endif
    Py_CLEAR(wr);
    if (!reader || !Py_IS_TYPE(reader, (PyTypeObject *)st->stream_reader_type))
        goto generic;
    PyObject *eof = PyObject_GetAttr(reader, st->str_eof);
    int at_eof = eof ? PyObject_IsTrue(eof) : -1;
    Py_XDECREF(eof);
    if (at_eof != 0)
        goto generic;
    return reader;
generic:
    Py_XDECREF(wr);
    Py_XDECREF(reader);
    PyErr_Clear();
    return NULL;
}

/* feed_data()'s _wakeup_waiter(): the reader's waiter (if any) gets None, unless cancelled. */
static int wake_waiter(cc_loop_state_t *st, PyObject *reader) {
    PyObject *waiter = PyObject_GetAttr(reader, st->str_waiter);
    if (!waiter)
        return -1;
    int rc = 0;
    if (waiter != Py_None) {
        rc = -1;
        if (PyObject_SetAttr(reader, st->str_waiter, Py_None) < 0)
            goto done;
        PyObject *r = PyObject_CallMethodNoArgs(waiter, st->str_cancelled);
        int cancelled = r ? PyObject_IsTrue(r) : -1;
        Py_XDECREF(r);
        if (cancelled < 0)
            goto done;
        if (!cancelled) {
            r = PyObject_CallMethodOneArg(waiter, st->str_set_result, Py_None);
            if (!r)
                goto done;
            Py_DECREF(r);
        }
        rc = 0;
    }
done:
    Py_DECREF(waiter);
    return rc;
}

/* feed_data()'s len(self._buffer) > 2 * self._limit: in C for an int limit small enough for C
 * arithmetic, else by Python's rules. 1, 0, or -1 on error. */
static int over_limit(cc_loop_state_t *st, PyObject *reader, Py_ssize_t buffered) {
    PyObject *limit = PyObject_GetAttr(reader, st->str_limit);
    if (!limit)
        return -1;
    int overflow = 0, over;
    long long lim = PyLong_CheckExact(limit) ? PyLong_AsLongLongAndOverflow(limit, &overflow) : 0;
    if (PyLong_CheckExact(limit) && !overflow && lim < LLONG_MAX / 2 && lim > LLONG_MIN / 2) {
        over = (long long)buffered > 2 * lim;
    } else {
        PyObject *two = PyLong_FromLong(2), *len = PyLong_FromSsize_t(buffered);
        PyObject *twice = two && len ? PyNumber_Multiply(two, limit) : NULL;
        over = twice ? PyObject_RichCompareBool(len, twice, Py_GT) : -1;
        Py_XDECREF(two);
        Py_XDECREF(len);
        Py_XDECREF(twice);
    }
    Py_DECREF(limit);
    return over;
}

/* feed_data()'s pause: pause the transport, or forget one that can't be paused. */
static int pause_feeding(cc_loop_state_t *st, PyObject *reader, PyObject *transport) {
    PyObject *r = PyObject_CallMethodNoArgs(transport, st->str_pause_reading);
    if (r) {
        Py_DECREF(r);
        return PyObject_SetAttr(reader, st->str_paused, Py_True);
    }
    if (!PyErr_ExceptionMatches(PyExc_NotImplementedError))
        return -1;
    PyErr_Clear();
    return PyObject_SetAttr(reader, st->str_transport, Py_None);
}

/* feed_data()'s steps after the append: wake the waiter, pause past 2 * limit. 0 or -1. */
static int stream_fed(cc_loop_state_t *st, PyObject *reader, Py_ssize_t buffered) {
    if (wake_waiter(st, reader) < 0)
        return -1;
    PyObject *transport = PyObject_GetAttr(reader, st->str_transport);
    if (!transport)
        return -1;
    int rc = 0;
    if (transport != Py_None) {
        PyObject *v = PyObject_GetAttr(reader, st->str_paused);
        int paused = v ? PyObject_IsTrue(v) : -1;
        Py_XDECREF(v);
        int over = paused == 0 ? over_limit(st, reader, buffered) : 0;
        if (paused < 0 || over < 0)
            rc = -1;
        else if (over)
            rc = pause_feeding(st, reader, transport);
    }
    Py_DECREF(transport);
    return rc;
}

/* Receive into the reader's buffer and do feed_data()'s work. Returns the _read_ready() result,
 * or NULL with no exception set when the generic path must run instead (nothing was read). */
static PyObject *read_stream(PyObject *o) {
    cc_transport_t *self = F(o);
    cc_loop_state_t *st = self->st;
    PyObject *proto = Py_NewRef(self->protocol), *reader = stream_reader(self), *buf = NULL;
    PyObject *result = NULL;
    if (!reader)
        goto done; /* the generic path */
    buf = PyObject_GetAttr(reader, st->str_buffer);
    if (!buf || !PyByteArray_CheckExact(buf)) {
        PyErr_Clear(); /* the generic path: extend() there fails or copes the same way */
        goto done;
    }
    Py_ssize_t old = PyByteArray_GET_SIZE(buf), want = self->big_reads ? predicted(self) : 0;
    ssize_t n;
    int err;
    if (want) {
        /* Large: straight into the bytearray's tail (recv_sized). */
        if (PyByteArray_Resize(buf, old + want) < 0) {
            result = fatal(o, "Fatal error: protocol.data_received() call failed.");
            goto done;
        }
        n = recv_sized(self, PyByteArray_AS_STRING(buf) + old, want);
        err = errno;
        if (PyByteArray_Resize(buf, old + (n > 0 ? n : 0)) < 0) {
            result = fatal(o, "Fatal error: protocol.data_received() call failed.");
            goto done;
        }
        if (n > want)
            memcpy(PyByteArray_AS_STRING(buf) + old + want, st->read_buf, (size_t)(n - want));
    } else {
        n = recv(self->fd, st->read_buf, CC_LOOP_READ_MAX, 0);
        err = errno;
        if (n > 0) {
            if (PyByteArray_Resize(buf, old + n) < 0) {
                result = fatal(o, "Fatal error: protocol.data_received() call failed.");
                goto done;
            }
            memcpy(PyByteArray_AS_STRING(buf) + old, st->read_buf, (size_t)n);
        }
    }
    if (n < 0) {
        if (would_block(err)) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        result = fatal(o, "Fatal read error on socket transport");
        goto done;
    }
    if (n == 0) {
        result = call_noargs(o, "_read_ready__on_eof");
        goto done;
    }
    self->big_reads = n >= CC_LOOP_DIRECT_READ_MIN;
    self->last_read = n;
    st->stream_reads++;
    if (stream_fed(st, reader, PyByteArray_GET_SIZE(buf)) < 0)
        result = fatal(o, "Fatal error: protocol.data_received() call failed.");
    else
        result = Py_NewRef(Py_None);
done:
    Py_XDECREF(buf);
    Py_XDECREF(reader);
    Py_DECREF(proto);
    return result;
}

static PyObject *tr_read_ready(PyObject *o, PyObject *unused) {
    cc_transport_t *self = F(o);
    (void)unused;
    if (self->conn_lost || self->fd < 0)
        Py_RETURN_NONE;
    if (self->buffered)
        return read_buffered(o);
    if (self->stream) {
        PyObject *r = read_stream(o);
        if (r || PyErr_Occurred())
            return r;
    }
    PyObject *data = NULL;
    ssize_t n;
    if (self->big_reads && !self->ops) {
        n = read_direct(self, &data);
        if (n == -2)
            return NULL;
    } else {
        n = recv(self->fd, self->st->read_buf, CC_LOOP_READ_MAX, 0);
    }
    if (n < 0) {
        if (would_block(errno))
            Py_RETURN_NONE;
        PyErr_SetFromErrno(PyExc_OSError);
        return fatal(o, "Fatal read error on socket transport");
    }
    if (n == 0)
        return call_noargs(o, "_read_ready__on_eof");
    if (self->ops) {
        /* The protocol may be swapped (set_protocol) while it runs: hold it. */
        PyObject *proto = Py_NewRef(self->protocol);
        self->st->fast_reads++;
        int rc = self->ops->data_received(proto, self->st->read_buf, (size_t)n);
        Py_DECREF(proto);
        if (rc < 0)
            return fatal(o, "Fatal error: protocol.data_received() call failed.");
        Py_RETURN_NONE;
    }
    self->big_reads = n >= CC_LOOP_DIRECT_READ_MIN;
    self->last_read = n;
    if (!data && !(data = PyBytes_FromStringAndSize(self->st->read_buf, n)))
        return NULL;
    return deliver(o, data);
}

/* ---- writing ------------------------------------------------------------------------------ */

static int maybe_pause(PyObject *o) {
    cc_transport_t *self = F(o);
    if (PyByteArray_GET_SIZE(self->buffer) <= self->high_water)
        return 0;
    PyObject *r = call_noargs(o, "_maybe_pause_protocol");
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int check_bytes_like(PyObject *data) {
    if (PyBytes_Check(data) || PyByteArray_Check(data) || PyMemoryView_Check(data))
        return 0;
    PyErr_Format(PyExc_TypeError, "data argument must be a bytes-like object, not '%.100s'",
                 Py_TYPE(data)->tp_name);
    return -1;
}

/* A write after the connection was lost: dropped, and logged past a few (asyncio's rule). */
static int drop_write(PyObject *o) {
    cc_transport_t *self = F(o);
    if (self->conn_lost >= CC_LOOP_LOG_CONNLOST_WRITES) {
        PyObject *r = call_noargs(o, "_cc_warn_send_after_lost");
        if (!r)
            return -1;
        Py_DECREF(r);
    }
    self->conn_lost++;
    return 0;
}

/* The pending exception as a fatal write error (_fatal_error()): 0, or -1 when it must
 * propagate (SystemExit and the like). */
static int write_failed(PyObject *o) {
    PyObject *x = fatal(o, "Fatal write error on socket transport");
    if (!x)
        return -1;
    Py_DECREF(x);
    return 0;
}

/* 1 when the transport's socket object still has the transport's fd. The caller of
 * create_connection(sock=...) keeps that object and may close it while the transport lives; the
 * number may then be another socket's, so writing on it would send this connection's data there.
 * asyncio's send() on the closed object fails with EBADF: so does this (a fatal write error,
 * reported through _fatal_error(), 0). -1 with an exception. */
static int socket_still_ours(PyObject *o) {
    cc_transport_t *self = F(o);
    int now = cc_loop_socket_fd(self->st, self->sock);
    if (CC_LIKELY(now == self->fd))
        return 1;
    if (now != -2) {
        errno = EBADF;
        PyErr_SetFromErrno(PyExc_OSError);
    }
    return write_failed(o);
}

/* One send()/sendmsg() of the buffers: 1 with *sent set, 0 after a fatal socket error (reported
 * through _fatal_error()), -1 with an exception. */
static int send_now(PyObject *o, const struct iovec *iov, int n, size_t *sent) {
    cc_transport_t *self = F(o);
    ssize_t r;
    if (n == 1) {
        /* One buffer: send() skips sendmsg()'s msghdr and iovec import in the kernel. */
        r = send(self->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
    } else {
        struct msghdr msg = {0};
        msg.msg_iov = (struct iovec *)iov;
        msg.msg_iovlen = (size_t)(n < IOV_MAX ? n : IOV_MAX); /* the rest is buffered */
        r = sendmsg(self->fd, &msg, MSG_NOSIGNAL);
    }
    if (r < 0) {
        if (!would_block(errno)) {
            PyErr_SetFromErrno(PyExc_OSError);
            return write_failed(o);
        }
        r = 0;
    }
    *sent = (size_t)r;
    return 1;
}

/* The buffer is no longer empty: _write_ready sends the rest when the socket takes it. */
static int watch_writable(PyObject *o) {
    cc_transport_t *self = F(o);
    PyObject *cb = PyObject_GetAttrString(o, "_write_ready");
    if (!cb)
        return -1;
    PyObject *r = PyObject_CallMethod(self->loop, "_add_writer", "iO", self->fd, cb);
    Py_DECREF(cb);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Appends what send() did not take (the buffers past their first `sent` bytes). */
static int queue_unsent(cc_transport_t *self, const struct iovec *iov, int n, size_t sent,
                        size_t total) {
    Py_ssize_t old = PyByteArray_GET_SIZE(self->buffer);
    if (PyByteArray_Resize(self->buffer, old + (Py_ssize_t)(total - sent)) < 0)
        return -1;
    char *dst = PyByteArray_AS_STRING(self->buffer) + old;
    for (int i = 0; i < n; i++) {
        size_t len = iov[i].iov_len;
        if (sent >= len) {
            sent -= len;
            continue;
        }
        memcpy(dst, (const char *)iov[i].iov_base + sent, len - sent);
        dst += len - sent;
        sent = 0;
    }
    return 0;
}

/* Send what the socket takes now, copy the rest into the buffer (the writer callback sends it).
 * Fatal socket errors are reported through _fatal_error() and are not the caller's error. */
static int write_iov(PyObject *o, const struct iovec *iov, int n) {
    cc_transport_t *self = F(o);
    if (self->eof) {
        PyErr_SetString(PyExc_RuntimeError, "Cannot call write() after write_eof()");
        return -1;
    }
    if (self->empty_waiter != Py_None) {
        PyErr_SetString(PyExc_RuntimeError, "unable to write; sendfile is in progress");
        return -1;
    }
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    if (total == 0)
        return 0;
    if (self->conn_lost || self->fd < 0) /* lost, or closed and its socket gone */
        return drop_write(o);
    size_t sent = 0;
    if (PyByteArray_GET_SIZE(self->buffer) == 0) {
        int rc = socket_still_ours(o);
        if (rc <= 0)
            return rc;
        rc = send_now(o, iov, n, &sent);
        if (rc <= 0 || sent == total)
            return rc < 0 ? -1 : 0;
        if (watch_writable(o) < 0)
            return -1;
    }
    if (queue_unsent(self, iov, n, sent, total) < 0)
        return -1;
    return maybe_pause(o);
}

static PyObject *tr_write(PyObject *o, PyObject *data) {
    if (check_bytes_like(data) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    struct iovec iov = {view.buf, (size_t)view.len};
    int rc = write_iov(o, &iov, 1);
    PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* One sendmsg() of every item, where asyncio joins them or queues memoryviews. */
static PyObject *tr_writelines(PyObject *o, PyObject *items) {
    PyObject *seq = PySequence_Fast(items, "writelines() argument must be an iterable");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), got = 0;
    PyObject *result = NULL;
    Py_buffer *views = NULL;
    struct iovec *iov = NULL;
    if (n > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "writelines(): too many items");
        goto done;
    }
    views = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_buffer));
    iov = PyMem_Calloc((size_t)(n ? n : 1), sizeof(struct iovec));
    if (!views || !iov) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, got);
        if (check_bytes_like(item) < 0 || PyObject_GetBuffer(item, &views[got], PyBUF_SIMPLE) < 0)
            goto done;
        iov[got] = (struct iovec){views[got].buf, (size_t)views[got].len};
    }
    if (write_iov(o, iov, (int)n) == 0)
        result = Py_NewRef(Py_None);
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(iov);
    Py_DECREF(seq);
    return result;
}

static PyObject *tr_write_ready(PyObject *o, PyObject *unused) {
    cc_transport_t *self = F(o);
    (void)unused;
    PyObject *r;
    if (self->conn_lost || self->fd < 0)
        Py_RETURN_NONE;
    Py_ssize_t size = PyByteArray_GET_SIZE(self->buffer);
    ssize_t n =
        size ? send(self->fd, PyByteArray_AS_STRING(self->buffer), (size_t)size, MSG_NOSIGNAL) : 0;
    if (n < 0) {
        if (would_block(errno))
            Py_RETURN_NONE;
        PyErr_SetFromErrno(PyExc_OSError);
        PyObject *exc = cc_err_take();
        if (!exc)
            return NULL;
        r = PyObject_CallMethod(self->loop, "_remove_writer", "i", self->fd);
        Py_XDECREF(r);
        if (r && PyByteArray_Resize(self->buffer, 0) == 0)
            r = PyObject_CallMethod(o, "_fatal_error", "Os", exc,
                                    "Fatal write error on socket transport");
        Py_XDECREF(r);
        if (r && self->empty_waiter != Py_None) {
            r = PyObject_CallMethod(self->empty_waiter, "set_exception", "O", exc);
            Py_XDECREF(r);
        }
        Py_DECREF(exc);
        if (!r)
            return NULL;
        Py_RETURN_NONE;
    }
    if (n > 0 && PySequence_DelSlice(self->buffer, 0, n) < 0)
        return NULL;
    if (self->protocol_paused) {
        r = call_noargs(o, "_maybe_resume_protocol"); /* may write more */
        if (!r)
            return NULL;
        Py_DECREF(r);
        /* resume_writing() may have run the loop nested (cicada's loop is re-entrant) and this
         * transport may have finished and lost its connection meanwhile. */
        if (self->conn_lost || self->fd < 0)
            Py_RETURN_NONE;
    }
    if (PyByteArray_GET_SIZE(self->buffer) == 0) {
        r = PyObject_CallMethod(self->loop, "_remove_writer", "i", self->fd);
        if (!r)
            return NULL;
        Py_DECREF(r);
        if (self->empty_waiter != Py_None) {
            r = PyObject_CallMethod(self->empty_waiter, "set_result", "O", Py_None);
            if (!r)
                return NULL;
            Py_DECREF(r);
        }
        if (self->closing) {
            /* counted lost first, as close() with an empty buffer does: asyncio's drained close
             * does not count it, and a later abort() then reaches for the loop it has dropped */
            self->conn_lost++;
            r = PyObject_CallMethod(o, "_call_connection_lost", "O", Py_None);
        }
        else if (self->eof)
            r = PyObject_CallMethod(self->sock, "shutdown", "i", SHUT_WR);
        else
            r = Py_NewRef(Py_None);
        if (!r)
            return NULL;
        Py_DECREF(r);
    }
    Py_RETURN_NONE;
}

/* asyncio's is_closing() (`return self._closing`) without a Python frame: StreamWriter.drain()
 * asks it on every call. */
static PyObject *tr_is_closing(PyObject *o, PyObject *unused) {
    (void)unused;
    return PyBool_FromLong(F(o)->closing);
}

static PyObject *tr_get_write_buffer_size(PyObject *o, PyObject *unused) {
    cc_transport_t *self = F(o);
    (void)unused;
    return PyLong_FromSsize_t(self->buffer ? PyByteArray_GET_SIZE(self->buffer) : 0);
}

/* ---- state shared with asyncio's Python transport code ----------------------------------- */

#define OBJ_FIELD(name)                                                                            \
    static PyObject *g_##name(PyObject *o, void *c) {                                              \
        (void)c;                                                                                   \
        cc_transport_t *s = F(o);                                                                  \
        return Py_NewRef(s->name);                                                                 \
    }                                                                                              \
    static int s_##name(PyObject *o, PyObject *v, void *c) {                                       \
        (void)c;                                                                                   \
        cc_transport_t *s = F(o);                                                                  \
        Py_XSETREF(s->name, Py_NewRef(v ? v : Py_None));                                           \
        return 0;                                                                                  \
    }
OBJ_FIELD(loop)
OBJ_FIELD(empty_waiter)

#define BOOL_FIELD(name)                                                                           \
    static PyObject *g_##name(PyObject *o, void *c) {                                              \
        (void)c;                                                                                   \
        cc_transport_t *s = F(o);                                                                  \
        return PyBool_FromLong(s->name);                                                           \
    }                                                                                              \
    static int s_##name(PyObject *o, PyObject *v, void *c) {                                       \
        (void)c;                                                                                   \
        cc_transport_t *s = F(o);                                                                  \
        int b = v ? PyObject_IsTrue(v) : 0;                                                        \
        if (b < 0)                                                                                 \
            return -1;                                                                             \
        s->name = b;                                                                               \
        return 0;                                                                                  \
    }
BOOL_FIELD(closing)
BOOL_FIELD(eof)
BOOL_FIELD(paused)
BOOL_FIELD(protocol_paused)

#define SIZE_FIELD(name)                                                                           \
    static PyObject *g_##name(PyObject *o, void *c) {                                              \
        (void)c;                                                                                   \
        cc_transport_t *s = F(o);                                                                  \
        return PyLong_FromSsize_t(s->name);                                                        \
    }                                                                                              \
    static int s_##name(PyObject *o, PyObject *v, void *c) {                                       \
        (void)c;                                                                                   \
        cc_transport_t *s = F(o);                                                                  \
        Py_ssize_t n = v ? PyLong_AsSsize_t(v) : 0;                                                \
        if (n == -1 && PyErr_Occurred())                                                           \
            return -1;                                                                             \
        s->name = n;                                                                               \
        return 0;                                                                                  \
    }
SIZE_FIELD(conn_lost)
SIZE_FIELD(high_water)
SIZE_FIELD(low_water)

/* asyncio's _call_connection_lost closes the socket and sets _sock to None: from then on the
 * number may be another socket's, so this transport must not read or write it any more. */
static PyObject *g_sock(PyObject *o, void *c) {
    (void)c;
    return Py_NewRef(F(o)->sock);
}
static int s_sock(PyObject *o, PyObject *v, void *c) {
    (void)c;
    cc_transport_t *s = F(o);
    Py_XSETREF(s->sock, Py_NewRef(v ? v : Py_None));
    if (s->sock == Py_None)
        s->fd = -1;
    return 0;
}

static PyObject *g_fd(PyObject *o, void *c) {
    (void)c;
    cc_transport_t *s = F(o);
    return PyLong_FromLong(s->fd);
}
static int s_fd(PyObject *o, PyObject *v, void *c) {
    (void)c;
    cc_transport_t *s = F(o);
    long fd = v ? PyLong_AsLong(v) : -1;
    if (fd == -1 && PyErr_Occurred())
        return -1;
    s->fd = (int)fd;
    return 0;
}

static PyObject *g_protocol(PyObject *o, void *c) {
    (void)c;
    cc_transport_t *s = F(o);
    return Py_NewRef(s->protocol);
}
static int s_protocol(PyObject *o, PyObject *v, void *c) {
    (void)c;
    cc_transport_t *s = F(o);
    v = v ? v : Py_None;
    int buffered = 0;
    if (v != Py_None) {
        buffered = PyObject_IsInstance(v, s->st->buffered_protocol_type);
        if (buffered < 0)
            return -1;
    }
    s->buffered = buffered;
    s->stream =
        s->st->stream_protocol_type && Py_IS_TYPE(v, (PyTypeObject *)s->st->stream_protocol_type);
    s->ops = s->st->c_proto_ops && Py_IS_TYPE(v, s->st->c_proto_type) ? s->st->c_proto_ops : NULL;
    Py_XSETREF(s->protocol, Py_NewRef(v));
    return 0;
}

static PyObject *g_buffer(PyObject *o, void *c) {
    (void)c;
    cc_transport_t *s = F(o);
    return Py_NewRef(s->buffer);
}
/* asyncio's __init__ assigns its own buffer type; ours stays a bytearray. */
static int s_buffer(PyObject *o, PyObject *v, void *c) {
    (void)c;
    cc_transport_t *s = F(o);
    if (v && PyByteArray_Check(v)) {
        Py_XSETREF(s->buffer, Py_NewRef(v));
        return 0;
    }
    PyObject *b = PyByteArray_FromStringAndSize(NULL, 0);
    if (!b)
        return -1;
    Py_XSETREF(s->buffer, b);
    return 0;
}

#define GS(pyname, field)                                                                          \
    { pyname, (getter)g_##field, (setter)s_##field, NULL, NULL }
static PyGetSetDef tr_getset[] = {
    GS("_sock", sock),
    GS("_loop", loop),
    GS("_empty_waiter", empty_waiter),
    GS("_closing", closing),
    GS("_eof", eof),
    GS("_paused", paused),
    GS("_protocol_paused", protocol_paused),
    GS("_conn_lost", conn_lost),
    GS("_high_water", high_water),
    GS("_low_water", low_water),
    GS("_sock_fd", fd),
    GS("_protocol", protocol),
    GS("_buffer", buffer),
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef tr_methods[] = {
    {"_read_ready", (PyCFunction)tr_read_ready, METH_NOARGS, NULL},
    {"_write_ready", (PyCFunction)tr_write_ready, METH_NOARGS, NULL},
    {"write", (PyCFunction)tr_write, METH_O, NULL},
    {"writelines", (PyCFunction)tr_writelines, METH_O, NULL},
    {"get_write_buffer_size", (PyCFunction)tr_get_write_buffer_size, METH_NOARGS, NULL},
    {"is_closing", (PyCFunction)tr_is_closing, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot tr_slots[] = {
    {Py_tp_doc, "C core of cicada's stream socket transport (read/write hot paths)."},
    {Py_tp_new, tr_new},
    {Py_tp_members, NULL}, /* filled in by cc_loop_transport_type() */
    {Py_tp_methods, tr_methods},
    {Py_tp_getset, tr_getset},
    {0, NULL},
};

/* ---- the C protocol fast path (loop.h) ------------------------------------------------------ */

void cc_loop_register_protocol(cc_loop_state_t *st, PyTypeObject *type,
                               const cc_loop_proto_ops_t *ops) {
    st->c_proto_type = type;
    st->c_proto_ops = ops;
}

int cc_loop_transport_fast(cc_loop_state_t *st, PyObject *transport) {
    return st->transport_core_type && PyObject_TypeCheck(transport, st->transport_core_type);
}

int cc_loop_transport_writev(PyObject *o, const struct iovec *iov, int n) {
    F(o)->st->fast_writes++;
    return write_iov(o, iov, n);
}

int cc_loop_transport_is_closing(PyObject *o) { return F(o)->closing; }

Py_ssize_t cc_loop_transport_buffer_size(PyObject *o) {
    return PyByteArray_GET_SIZE(F(o)->buffer);
}

int cc_loop_transport_fd(PyObject *o) { return F(o)->fd; }

/* asyncio's pause_reading()/resume_reading() over the same state, minus the debug-mode log. */
int cc_loop_transport_set_reading(PyObject *o, int pause) {
    cc_transport_t *self = F(o);
    if (self->closing || self->fd < 0 || self->paused == (pause != 0))
        return 0;
    self->paused = pause != 0;
    PyObject *r;
    if (pause) {
        PyObject *fd = PyLong_FromLong(self->fd);
        if (!fd)
            return -1;
        PyObject *args[2] = {self->loop, fd};
        r = PyObject_VectorcallMethod(self->st->str_remove_reader, args,
                                      2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(fd);
    } else {
        PyObject *cb = PyObject_GetAttrString(o, "_read_ready");
        if (!cb)
            return -1;
        r = PyObject_CallMethod(self->loop, "_add_reader", "iO", self->fd, cb);
        Py_DECREF(cb);
    }
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* The asyncio streams classes and functions read_stream() stands in for; left NULL (the fast
 * path off) on a Python whose streams it was not checked against: 3.11 to 3.13 have the same
 * data_received / feed_data / _wakeup_waiter code. 0, or -1 with an exception. */
static int load_streams(cc_loop_state_t *st) {
#if PY_VERSION_HEX < 0x030E0000
    PyObject *mod = PyImport_ImportModule("asyncio.streams");
    if (!mod)
        return -1;
    PyObject *srp = PyObject_GetAttrString(mod, "StreamReaderProtocol");
    PyObject *sr = srp ? PyObject_GetAttrString(mod, "StreamReader") : NULL;
    Py_DECREF(mod);
    if (!sr) {
        Py_XDECREF(srp);
        return -1;
    }
    if (PyType_Check(srp) && PyType_Check(sr)) {
        PyObject *d = ((PyTypeObject *)srp)->tp_dict, *rd = ((PyTypeObject *)sr)->tp_dict;
        PyObject *f1 = PyDict_GetItemWithError(d, st->str_data_received);
        PyObject *f2 = f1 ? PyDict_GetItemWithError(rd, st->str_feed_data) : NULL;
        PyObject *f3 = f2 ? PyDict_GetItemWithError(rd, st->str_wakeup_waiter) : NULL;
        if (PyErr_Occurred()) {
            Py_DECREF(srp);
            Py_DECREF(sr);
            return -1;
        }
        if (f3) {
            Py_XSETREF(st->srp_data_received, Py_NewRef(f1));
            Py_XSETREF(st->sr_feed_data, Py_NewRef(f2));
            Py_XSETREF(st->sr_wakeup_waiter, Py_NewRef(f3));
            Py_XSETREF(st->stream_protocol_type, Py_NewRef(srp));
            Py_XSETREF(st->stream_reader_type, Py_NewRef(sr));
        }
    }
    Py_DECREF(srp);
    Py_DECREF(sr);
#else
    (void)st;
#endif
    return 0;
}

static PyMemberDef tr_members[6];

/* Create the type on first use (it needs asyncio imported): a subclass of asyncio's
 * _FlowControlMixin so instances are real asyncio transports. Returns a new reference. */
PyTypeObject *cc_loop_transport_type(PyObject *module, cc_loop_state_t *st) {
    if (st->transport_core_type)
        return (PyTypeObject *)Py_NewRef(st->transport_core_type);
    PyObject *mod = PyImport_ImportModule("asyncio.transports");
    if (!mod)
        return NULL;
    PyObject *base = PyObject_GetAttrString(mod, "_FlowControlMixin");
    Py_DECREF(mod);
    if (!base)
        return NULL;
    if (!PyType_Check(base) || ((PyTypeObject *)base)->tp_dictoffset != 0 ||
        ((PyTypeObject *)base)->tp_itemsize != 0) {
        Py_DECREF(base);
        PyErr_SetString(PyExc_TypeError, "unexpected layout of asyncio's _FlowControlMixin");
        return NULL;
    }
    Py_ssize_t align = (Py_ssize_t) _Alignof(max_align_t);
    tr_off = (((PyTypeObject *)base)->tp_basicsize + align - 1) & ~(align - 1);
    static const struct {
        const char *name;
        size_t off;
    } objs[] = {{"_cc_sock", offsetof(cc_transport_t, sock)},
                {"_cc_protocol", offsetof(cc_transport_t, protocol)},
                {"_cc_loop", offsetof(cc_transport_t, loop)},
                {"_cc_empty_waiter", offsetof(cc_transport_t, empty_waiter)},
                {"_cc_buffer", offsetof(cc_transport_t, buffer)}};
    for (size_t i = 0; i < 5; i++)
        tr_members[i] =
            (PyMemberDef){objs[i].name, T_OBJECT_EX, tr_off + (Py_ssize_t)objs[i].off, 0, NULL};
    tr_members[5] = (PyMemberDef){NULL, 0, 0, 0, NULL};
    for (PyType_Slot *sl = tr_slots; sl->slot; sl++)
        if (sl->slot == Py_tp_members)
            sl->pfunc = tr_members;
    PyType_Spec spec = {
        .name = "cicada._core.SocketTransportCore",
        .basicsize = (int)(tr_off + (Py_ssize_t)sizeof(cc_transport_t)),
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
        .slots = tr_slots,
    };
    PyObject *tp = PyType_FromModuleAndSpec(module, &spec, base);
    Py_DECREF(base);
    if (!tp)
        return NULL;
    if (load_streams(st) < 0) {
        Py_DECREF(tp);
        return NULL;
    }
    st->transport_core_type = (PyTypeObject *)Py_NewRef(tp);
    return (PyTypeObject *)tp;
}
