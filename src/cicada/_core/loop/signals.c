/* Signals, asyncio's way so Python's signal module semantics hold: add_signal_handler (Python,
 * inherited) installs the handler with the signal module and points signal.set_wakeup_fd at the
 * loop's self-pipe; this file drains that pipe in C and hands each signal number to
 * loop._handle_signal. It never installs C-level signal handlers of its own. */
#include "loop/loop_internal.h"

#include <errno.h>
#include <sys/socket.h>

#define CC_LOOP_SIGNAL_READ 4096

PyObject *cc_loop_read_signals(cc_loop_t *self) {
    unsigned char buf[CC_LOOP_SIGNAL_READ];
    while (self->signal_fd >= 0) {
        ssize_t n = recv(self->signal_fd, buf, sizeof(buf), 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == 0) /* a plain wake-up byte, not a signal */
                continue;
            PyObject *r = PyObject_CallMethod((PyObject *)self, "_handle_signal", "i", (int)buf[i]);
            if (!r)
                return NULL;
            Py_DECREF(r);
        }
    }
    Py_RETURN_NONE;
}
