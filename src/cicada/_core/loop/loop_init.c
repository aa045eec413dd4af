/* The event-loop layer's module wiring: creates LoopCore and the interned names in module state.
 * asyncio itself is imported lazily, when the first loop is created. */
#include "module.h"

#include "loop/loop_internal.h"

#define INTERN(field, text)                                                                        \
    do {                                                                                           \
        if (!(st->field = PyUnicode_InternFromString(text)))                                       \
            return -1;                                                                             \
    } while (0)

static PyObject *transport_core(PyObject *module, PyObject *unused) {
    (void)unused;
    return (PyObject *)cc_loop_transport_type(module, &cc_state(module)->loop);
}

static PyMethodDef transport_core_def = {
    "transport_core_type",
    transport_core,
    METH_NOARGS,
    "The C base of cicada's stream transport (created on first use: it subclasses asyncio's).",
};

/* How often the loop's C paths ran: tests use it to prove those paths are taken. */
static PyObject *loop_counters(PyObject *module, PyObject *unused) {
    (void)unused;
    cc_loop_state_t *st = &cc_state(module)->loop;
    return Py_BuildValue("{sKsKsKsKsKsK}", "fast_reads", st->fast_reads, "fast_writes",
                         st->fast_writes, "sock_parked", st->sock_parked, "sock_completed",
                         st->sock_completed, "direct_reads", st->direct_reads, "stream_reads",
                         st->stream_reads);
}

static PyMethodDef loop_counters_def = {
    "_loop_counters",
    loop_counters,
    METH_NOARGS,
    "Counts of the loop's C paths so far, for tests: fast_reads/fast_writes (transport <-> C "
    "protocol, loop.h), sock_parked/sock_completed (sock_* waiters parked, completed in C), "
    "direct_reads (transport reads sized with FIONREAD), stream_reads (reads put straight into "
    "an asyncio.StreamReader's buffer).",
};

/* Tests run the same stream scenarios with and without the transport's stream fast path. */
static PyObject *set_stream_fast(PyObject *module, PyObject *flag) {
    cc_loop_state_t *st = &cc_state(module)->loop;
    int on = PyObject_IsTrue(flag);
    if (on < 0)
        return NULL;
    int was = st->stream_fast;
    st->stream_fast = on;
    return PyBool_FromLong(was);
}

static PyMethodDef set_stream_fast_def = {
    "_set_stream_fast_path",
    set_stream_fast,
    METH_O,
    "Turn the transport's asyncio-streams fast path on or off (for new and existing transports); "
    "returns the previous setting. For tests and benchmarks.",
};

static int add_function(PyObject *module, PyMethodDef *def) {
    PyObject *fn = PyCFunction_NewEx(def, module, NULL);
    if (!fn)
        return -1;
    if (PyModule_AddObject(module, def->ml_name, fn) < 0) {
        Py_DECREF(fn);
        return -1;
    }
    return 0;
}

int cc_loop_init(PyObject *module, cc_loop_state_t *st) {
    INTERN(str_context, "context");
    INTERN(str_cc_callback_error, "_cc_callback_error");
    INTERN(str_cc_slow_callback, "_cc_slow_callback");
    INTERN(str_check_thread, "_check_thread");
    INTERN(str_check_callback, "_check_callback");
    INTERN(str_call_soon, "call_soon");
    INTERN(str_call_at, "call_at");
    INTERN(str_call_soon_threadsafe, "call_soon_threadsafe");
    INTERN(str_run, "_run");
    INTERN(str_done, "done");
    INTERN(str_remove_reader, "_remove_reader");
    INTERN(str_remove_writer, "_remove_writer");
    INTERN(str_loop, "loop");
    INTERN(str_name, "name");
    INTERN(str_task_factory, "_task_factory");
    INTERN(str_data_received, "data_received");
    INTERN(str_fileno, "fileno");
    INTERN(str_add_done_callback, "add_done_callback");
    INTERN(str_remove_done_callback, "remove_done_callback");
    INTERN(str_set_result, "set_result");
    INTERN(str_set_exception, "set_exception");
    INTERN(str_accept, "accept");
    INTERN(str_setblocking, "setblocking");
    INTERN(str_ensure_fd_no_transport, "_ensure_fd_no_transport");
    INTERN(str_stream_reader_wr, "_stream_reader_wr");
    INTERN(str_buffer, "_buffer");
    INTERN(str_waiter, "_waiter");
    INTERN(str_eof, "_eof");
    INTERN(str_paused, "_paused");
    INTERN(str_limit, "_limit");
    INTERN(str_transport, "_transport");
    INTERN(str_cancelled, "cancelled");
    INTERN(str_pause_reading, "pause_reading");
    INTERN(str_feed_data, "feed_data");
    INTERN(str_wakeup_waiter, "_wakeup_waiter");
    st->stream_fast = 1;
    st->kw_context = PyTuple_Pack(1, st->str_context);
    st->empty_tuple = PyTuple_New(0);
    if (!st->kw_context || !st->empty_tuple)
        return -1;
    st->kw_loop = PyTuple_Pack(1, st->str_loop);
    if (!st->kw_loop)
        return -1;
    if (add_function(module, &transport_core_def) < 0 ||
        add_function(module, &loop_counters_def) < 0 ||
        add_function(module, &set_stream_fast_def) < 0)
        return -1;
    st->loop_core_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, cc_loop_core_spec(), NULL);
    if (!st->loop_core_type)
        return -1;
    if (PyModule_AddObjectRef(module, "LoopCore", (PyObject *)st->loop_core_type) < 0)
        return -1;
    return 0;
}

int cc_loop_traverse(cc_loop_state_t *st, visitproc visit, void *arg) {
    Py_VISIT(st->loop_core_type);
    Py_VISIT(st->socket_type);
    Py_VISIT(st->handle_type);
    Py_VISIT(st->timer_handle_type);
    Py_VISIT(st->task_type);
    Py_VISIT(st->buffered_protocol_type);
    Py_VISIT(st->future_type);
    Py_VISIT(st->transport_core_type);
    Py_VISIT(st->stream_protocol_type);
    Py_VISIT(st->stream_reader_type);
    Py_VISIT(st->srp_data_received);
    Py_VISIT(st->sr_feed_data);
    Py_VISIT(st->sr_wakeup_waiter);
    return 0;
}

void cc_loop_clear(cc_loop_state_t *st) {
    cc_loop_handles_free(st);
    Py_CLEAR(st->kw_loop);
    Py_CLEAR(st->socket_type);
    st->socket_fd_inline = 0; /* probed again (with the type) if the state is used again */
    Py_CLEAR(st->loop_core_type);
    Py_CLEAR(st->handle_type);
    Py_CLEAR(st->timer_handle_type);
    Py_CLEAR(st->task_type);
    st->handles_loaded = 0;
    Py_CLEAR(st->str_context);
    Py_CLEAR(st->str_cc_callback_error);
    Py_CLEAR(st->str_cc_slow_callback);
    Py_CLEAR(st->str_check_thread);
    Py_CLEAR(st->str_check_callback);
    Py_CLEAR(st->str_call_soon);
    Py_CLEAR(st->str_call_at);
    Py_CLEAR(st->str_call_soon_threadsafe);
    Py_CLEAR(st->str_run);
    Py_CLEAR(st->str_done);
    Py_CLEAR(st->str_remove_reader);
    Py_CLEAR(st->str_remove_writer);
    Py_CLEAR(st->str_loop);
    Py_CLEAR(st->str_name);
    Py_CLEAR(st->task_type);
    Py_CLEAR(st->str_task_factory);
    Py_CLEAR(st->buffered_protocol_type);
    Py_CLEAR(st->future_type);
    Py_CLEAR(st->transport_core_type);
    Py_CLEAR(st->str_data_received);
    Py_CLEAR(st->str_fileno);
    Py_CLEAR(st->str_add_done_callback);
    Py_CLEAR(st->str_remove_done_callback);
    Py_CLEAR(st->str_set_result);
    Py_CLEAR(st->str_set_exception);
    Py_CLEAR(st->str_accept);
    Py_CLEAR(st->str_setblocking);
    Py_CLEAR(st->str_ensure_fd_no_transport);
    Py_CLEAR(st->stream_protocol_type);
    Py_CLEAR(st->stream_reader_type);
    Py_CLEAR(st->srp_data_received);
    Py_CLEAR(st->sr_feed_data);
    Py_CLEAR(st->sr_wakeup_waiter);
    Py_CLEAR(st->str_stream_reader_wr);
    Py_CLEAR(st->str_buffer);
    Py_CLEAR(st->str_waiter);
    Py_CLEAR(st->str_eof);
    Py_CLEAR(st->str_paused);
    Py_CLEAR(st->str_limit);
    Py_CLEAR(st->str_transport);
    Py_CLEAR(st->str_cancelled);
    Py_CLEAR(st->str_pause_reading);
    Py_CLEAR(st->str_feed_data);
    Py_CLEAR(st->str_wakeup_waiter);
    Py_CLEAR(st->kw_context);
    Py_CLEAR(st->empty_tuple);
    PyMem_Free(st->read_buf);
    st->read_buf = NULL;
    st->c_proto_type = NULL; /* borrowed */
    st->c_proto_ops = NULL;
}
