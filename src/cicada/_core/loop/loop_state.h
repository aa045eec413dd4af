/* Module state owned by the event-loop layer: the LoopCore type, asyncio's Handle classes with
 * the slot offsets used to build them without a Python call, and interned method names. */
#ifndef CC_LOOP_STATE_H
#define CC_LOOP_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct cc_loop_proto_ops cc_loop_proto_ops_t; /* loop.h */

typedef struct {
    PyTypeObject *loop_core_type;
    /* asyncio.events.Handle / TimerHandle, loaded when the first loop is created. */
    PyTypeObject *handle_type;
    PyTypeObject *timer_handle_type;
    int handles_loaded;
    int handles_fast; /* 1 when every slot offset below is known (else: call the classes) */
    Py_ssize_t off_callback, off_args, off_cancelled, off_loop, off_source_tb, off_repr,
        off_context, off_scheduled, off_when;
    /* interned names */
    PyObject *str_context;
    PyObject *str_cc_callback_error;
    PyObject *str_cc_slow_callback;
    PyObject *str_check_thread;
    PyObject *str_check_callback;
    PyObject *str_call_soon;
    PyObject *str_call_at;
    PyObject *str_call_soon_threadsafe;
    PyObject *str_run;
    PyObject *str_done;
    PyObject *str_remove_reader;
    PyObject *str_remove_writer;
    PyObject *str_loop;
    PyObject *str_name;
    PyObject *str_task_factory;
    PyObject *task_type;              /* asyncio.tasks.Task (the C one when _asyncio is present) */
    PyObject *buffered_protocol_type; /* asyncio.BufferedProtocol */
    PyObject *future_type;            /* asyncio.futures.Future */
    PyTypeObject *transport_core_type;
    PyObject *str_data_received;
    /* The stream fast path (transport.c): asyncio.StreamReaderProtocol and StreamReader, and the
     * class functions the transport stands in for (it steps aside when one was replaced). NULL
     * when asyncio's streams do not have the shape the fast path was written against. */
    PyObject *stream_protocol_type, *stream_reader_type;
    PyObject *srp_data_received, *sr_feed_data, *sr_wakeup_waiter;
    PyObject *str_stream_reader_wr, *str_buffer, *str_waiter, *str_eof, *str_paused, *str_limit,
        *str_transport, *str_cancelled, *str_pause_reading, *str_feed_data, *str_wakeup_waiter;
    int stream_fast; /* the fast path is on (tests turn it off to compare both paths) */
    char *read_buf;  /* CC_LOOP_READ_MAX bytes shared by every transport's recv() */
    /* The C protocol the transport calls directly (loop.h); the type is borrowed. */
    PyTypeObject *c_proto_type;
    const cc_loop_proto_ops_t *c_proto_ops;
    /* Fast-path calls made (reads handed over, writes taken), read by tests to prove it runs. */
    unsigned long long fast_reads, fast_writes;
    /* sock_* calls parked and later completed by the loop in C; transport reads sized with
     * FIONREAD. Read by tests through _loop_counters(). */
    unsigned long long sock_parked, sock_completed, direct_reads;
    /* Reads the stream fast path put straight into a StreamReader's buffer. */
    unsigned long long stream_reads;
    PyObject *str_fileno;
    /* _socket.socket, and whether its instances keep their fd right after the object header
     * (cc_loop_socket_fd: 0 not probed yet, 1 proven on real sockets, -1 ask fileno()). */
    PyObject *socket_type;
    int socket_fd_inline;
    PyObject *str_add_done_callback;
    PyObject *str_remove_done_callback;
    PyObject *str_set_result;
    PyObject *str_set_exception;
    PyObject *str_accept;
    PyObject *str_setblocking;
    PyObject *str_ensure_fd_no_transport;
    PyObject *kw_context;  /* ("context",) */
    PyObject *empty_tuple; /* () for callbacks without arguments */
    PyObject *kw_loop;     /* ("loop",): kwnames for Task(coro, loop=...) */
    /* Bounded freelists of spent Handle / TimerHandle instances (see handle.c). */
    PyObject **handle_free;
    int handle_free_n;
    PyObject **timer_free;
    int timer_free_n;
} cc_loop_state_t;

int cc_loop_init(PyObject *module, cc_loop_state_t *st);
int cc_loop_traverse(cc_loop_state_t *st, visitproc visit, void *arg);
void cc_loop_clear(cc_loop_state_t *st);

#endif
