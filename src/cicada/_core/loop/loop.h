/* What other layers may call in the loop layer: the fast path between cicada's C stream transport
 * (loop/transport.c) and a protocol written in C in this module, so neither goes through Python
 * attribute lookups. It must not be used on a transport cc_loop_transport_fast() refused. */
#ifndef CC_LOOP_H
#define CC_LOOP_H

#include "loop/loop_state.h"

#include <stddef.h>
#include <sys/uio.h>

/* What a C protocol offers the transport. A transport whose protocol is exactly the registered
 * type calls these instead of the protocol's Python methods; every other call (connection_made,
 * eof_received, connection_lost, pause/resume_writing) stays a Python call, being once per
 * connection or rare. */
struct cc_loop_proto_ops {
    /* `len` (> 0) bytes just read. They live in a buffer shared by every transport, so the
     * protocol copies what it keeps before it can run anything that reads again. 0, or -1 with
     * an exception set (reported as a fatal error, as when data_received() raises). */
    int (*data_received)(PyObject *protocol, const char *data, size_t len);
};

/* One C protocol type per module state; `type` is borrowed (the caller's state owns it). */
void cc_loop_register_protocol(cc_loop_state_t *st, PyTypeObject *type,
                               const cc_loop_proto_ops_t *ops);

/* 1 when `transport` is cicada's C stream transport, so the calls below may be used on it. */
int cc_loop_transport_fast(cc_loop_state_t *st, PyObject *transport);

/* transport.write() of several buffers in one sendmsg(): what the socket does not take at once is
 * copied into the transport's buffer, so the caller's buffers may go away on return. Same errors
 * and flow control as write(). 0, or -1 with an exception set. */
int cc_loop_transport_writev(PyObject *transport, const struct iovec *iov, int n);
int cc_loop_transport_is_closing(PyObject *transport);
/* pause_reading() (pause=1) / resume_reading() (pause=0); no-ops when closing or already so. */
int cc_loop_transport_set_reading(PyObject *transport, int pause);
Py_ssize_t cc_loop_transport_buffer_size(PyObject *transport);
/* The socket's fd, or -1 once the transport has let it go. */
int cc_loop_transport_fd(PyObject *transport);

#endif
