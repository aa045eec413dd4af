/* Shared between the loop layer's files: the LoopCore object layout and the helpers for its
 * ready queue, timer heap, handles and wake-up fd. Not for other layers (they use loop.h). */
#ifndef CC_LOOP_INTERNAL_H
#define CC_LOOP_INTERNAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "core/core.h"
#include "loop/backend.h"
#include "loop/loop_state.h"

#define CC_LOOP_READY_INITIAL 64
#define CC_LOOP_TIMERS_INITIAL 64
#define CC_LOOP_FDS_INITIAL 64
/* asyncio's constants: prune cancelled timers past this size and fraction; cap one poll wait. */
#define CC_LOOP_MIN_SCHEDULED_TO_PRUNE 100
#define CC_LOOP_CANCELLED_FRACTION 0.5
#define CC_LOOP_MAX_SELECT_TIMEOUT (24 * 3600.0)
/* Transports: bytes taken per recv() (asyncio's max_size) and asyncio's
 * LOG_THRESHOLD_FOR_CONNLOST_WRITES. */
#define CC_LOOP_READ_MAX (256 * 1024)
#define CC_LOOP_LOG_CONNLOST_WRITES 5
/* A read at least this large makes the transport size its next read with FIONREAD and recv()
 * straight into the bytes object it hands over (one copy instead of two); below it the extra
 * ioctl() costs more than the memcpy it saves. */
#define CC_LOOP_DIRECT_READ_MIN (32 * 1024)

/* With callbacks ready (a zero-timeout poll), skip the epoll_wait syscall if the last poll was
 * this recent (seconds): a busy chain of callbacks then pays one syscall per interval instead of
 * one per iteration, and I/O readiness is still seen within this much time. */
#define CC_LOOP_BUSY_POLL_INTERVAL 50e-6
/* Spent handles kept for reuse, per kind. */
#define CC_LOOP_HANDLE_FREELIST 256

typedef struct {
    PyObject **items;
    Py_ssize_t cap, head, len;
} cc_loop_ready_t;

typedef struct {
    double when;
    uint64_t seq;
    PyObject *handle;
} cc_loop_timer_t;

typedef struct {
    cc_loop_timer_t *items;
    Py_ssize_t cap, len;
    uint64_t next_seq;
} cc_loop_timers_t;

/* A sock_recv/sock_recv_into/sock_sendall/sock_accept call parked until its fd is ready
 * (sock.c): the loop retries the operation in C and completes the future itself. */
typedef struct {
    PyObject *fut;  /* the asyncio.Future the caller awaits */
    PyObject *sock; /* the socket object */
    PyObject *obj;  /* recv_into: the buffer; sendall: the data (its view is held) */
    Py_buffer view; /* sendall only, as asyncio holds a memoryview of the data */
    Py_ssize_t n;   /* recv: the size asked for; sendall: bytes sent so far */
    int op;         /* CC_SOCK_* */
} cc_loop_sockwait_t;

typedef struct {
    PyObject *reader; /* asyncio.Handle or NULL */
    PyObject *writer;
    cc_loop_sockwait_t *rwait; /* a parked sock_* call instead of a reader/writer, or NULL */
    cc_loop_sockwait_t *wwait;
    /* Interest kept registered after a sock_* waiter completed (CC_EV_* bits), until the end of
     * the iteration: a waiter parked again meanwhile on the same socket needs no epoll_ctl. */
    uint32_t lazy;
    PyObject *lazy_sock; /* the socket those bits were registered for (identity check) */
    uint32_t mask;       /* interest registered with the backend */
    int big_reads;       /* sock_recv's last read here was large: size the next with FIONREAD */
} cc_loop_fd_t;

typedef struct {
    PyObject_HEAD cc_loop_state_t *st;
    cc_loop_ready_t ready;
    cc_loop_timers_t timers;
    cc_loop_backend_t backend;
    cc_loop_event_t *events;
    cc_loop_fd_t *fds;
    int nfds;
    int wakeup_fd;
    int stopping;
    int closed;
    int debug;
    int running_depth; /* how many run_once loops of this loop are on the C stack */
    Py_ssize_t timer_cancelled_count;
    double clock_resolution;
    double last_poll;    /* monotonic time of the last epoll_wait */
    int signal_fd;       /* read end of the self-pipe signal.set_wakeup_fd writes to, or -1 */
    PyObject *thread_id; /* None when not running */
    /* sock.c: fds whose lazy interest is dropped at the end of the iteration */
    int *lazy_fds;
    int lazy_n, lazy_cap;
    PyObject *sock_done_cb;    /* bound self._cc_sock_done, added to each parked future */
    PyObject *sock_ctx;        /* an empty contextvars.Context that callback runs in */
    PyObject *transports_data; /* self._transports.data (fd -> weakref), for the fd check */
    PyObject *future_kw;       /* {"loop": self} for cc_loop_new_future(), made on first use */
} cc_loop_t;

/* ready.c */
int cc_loop_ready_push(cc_loop_ready_t *q, PyObject *h);
PyObject *cc_loop_ready_pop(cc_loop_ready_t *q); /* new reference or NULL when empty */
PyObject *cc_loop_ready_peek(cc_loop_ready_t *q, Py_ssize_t i);
int cc_loop_ready_traverse(cc_loop_ready_t *q, visitproc visit, void *arg);
void cc_loop_ready_clear(cc_loop_ready_t *q);
void cc_loop_ready_free(cc_loop_ready_t *q);

/* timers.c */
int cc_loop_timers_push(cc_loop_timers_t *h, double when, PyObject *handle);
PyObject *cc_loop_timers_pop(cc_loop_timers_t *h); /* new reference or NULL when empty */
int cc_loop_timers_prune(cc_loop_timers_t *h, int (*is_cancelled)(PyObject *, void *), void *arg);
int cc_loop_timers_traverse(cc_loop_timers_t *h, visitproc visit, void *arg);
void cc_loop_timers_clear(cc_loop_timers_t *h);
void cc_loop_timers_free(cc_loop_timers_t *h);

/* wakeup.c */
int cc_loop_wakeup_open(void);
void cc_loop_wakeup_signal(int fd);
void cc_loop_wakeup_drain(int fd);

/* handle.c */
int cc_loop_handles_load(cc_loop_state_t *st);
#define CC_SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))
PyObject *cc_loop_handle_new(cc_loop_t *loop, PyObject *cb, PyObject *args, PyObject *ctx);
PyObject *cc_loop_timer_new(cc_loop_t *loop, PyObject *when, PyObject *cb, PyObject *args,
                            PyObject *ctx);
int cc_loop_handle_cancelled(cc_loop_state_t *st, PyObject *h);
void cc_loop_handle_set_scheduled(cc_loop_state_t *st, PyObject *h, int scheduled);
int cc_loop_handle_run(cc_loop_t *loop, PyObject *h);
/* Drop the loop's reference to a handle it has run or discarded: recycled when nobody else
 * holds it, else a plain Py_DECREF. */
void cc_loop_handle_release(cc_loop_state_t *st, PyObject *h);
void cc_loop_handles_free(cc_loop_state_t *st);

/* loop.c: grow the fd table to hold fd. 0, or -1 with MemoryError. */
int cc_loop_fd_reserve(cc_loop_t *self, int fd);
int cc_loop_check_closed(cc_loop_t *self);
/* asyncio.Future(loop=self): new reference, or NULL with an exception. */
PyObject *cc_loop_new_future(cc_loop_t *self);
void cc_loop_cancel_handle(cc_loop_t *self, PyObject *h); /* never fails: see loop.c */

/* sock.c */
PyObject *cc_loop_sock_recv(cc_loop_t *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *cc_loop_sock_recv_into(cc_loop_t *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *cc_loop_sock_sendall(cc_loop_t *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *cc_loop_sock_accept(cc_loop_t *self, PyObject *sock);
PyObject *cc_loop_sock_done(cc_loop_t *self, PyObject *fut);
/* The fd's waiter for `write` (0: read side) is ready; completes its future or re-parks it. */
int cc_loop_sock_ready(cc_loop_t *self, int fd, int write);
/* A reader/writer was added or removed on fd: a waiter there is dropped (its future stays
 * pending, as asyncio's replaced handle leaves it). Returns 1 when one was dropped. */
int cc_loop_sock_displace(cc_loop_t *self, int fd, int write);
/* fd is about to be registered for `sock` (NULL: a reader/writer callback): waiters parked for
 * a socket closed since then are forgotten, as the kernel forgot that file's registration, so
 * that none of them reads from or writes into the socket that has the number now. */
int cc_loop_sock_forget_stale(cc_loop_t *self, int fd, PyObject *sock);
/* sock's fd as its fileno() would say, -1 once it is closed; -2 with an exception set. Cheap
 * enough for every write (see sock.c). */
int cc_loop_socket_fd(cc_loop_state_t *st, PyObject *sock);
/* End of an iteration: drop the interest nobody re-used (see cc_loop_fd_t.lazy). */
int cc_loop_sock_flush(cc_loop_t *self);
int cc_loop_sock_traverse(cc_loop_t *self, visitproc visit, void *arg);
void cc_loop_sock_clear(cc_loop_t *self);

/* signals.c */
PyObject *cc_loop_read_signals(cc_loop_t *self);

/* loop.c, transport.c */
PyType_Spec *cc_loop_core_spec(void);
PyTypeObject *cc_loop_transport_type(PyObject *module, cc_loop_state_t *st);

#endif
