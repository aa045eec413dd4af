/* Module state owned by the middleware layer: its heap types, the interned ASGI keys it reads
 * and writes, and the Starlette/asyncio objects handed over by cicada.middleware at import.
 * Nothing here is per request. */
#ifndef CC_MW_STATE_H
#define CC_MW_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Per-request objects are recycled through small bounded freelists: this keeps the allocations
 * (and so the cyclic GC's gen-0 collections) caused by each middleware layer low. */
#define CC_MW_FREELIST_MAX 64
/* Spare live objects of one type scanned per take: about one per layer of a usual stack. */
#define CC_MW_SPARE_MAX 8

typedef struct {
    int n;
    PyObject *items[CC_MW_FREELIST_MAX];
} cc_mw_freelist_t;

typedef struct {
    /* heap types */
    PyObject *driver_type;
    PyObject *step_type;
    PyObject *done_type;
    PyObject *call_type;
    PyObject *entry_type;
    PyObject *headers_type;
    PyObject *hset_type;
    PyObject *fuse_type;
    /* set by mw_setup() from cicada/middleware.py; NULL until then */
    PyObject *layer_type;     /* cicada.middleware.HTTPMiddleware */
    PyTypeObject *layer_seen; /* not a reference: only compared (see cc_mw_is_layer) */
    /* byte offsets of the __slots__ of request_cls and response_cls the driver fills */
    Py_ssize_t off_scope, off_receive, off_send, off_consumed, off_disconnected, off_form;
    Py_ssize_t off_status, off_raw_headers, off_body_iterator, off_background, off_info;
    Py_ssize_t off_headers, off_app, off_dispatch; /* off_app, off_dispatch: of layer_type */
    Py_ssize_t off_list;                           /* _list of mutable_headers */
    Py_ssize_t anyio_miss_mods; /* size of sys.modules when anyio's backend was last missing */
    unsigned int layer_seen_tag;
    PyTypeObject *plain_seen; /* the same for the last type found not to be a layer */
    unsigned int plain_seen_tag;
    PyObject *request_cls;          /* cicada.middleware._Request (starlette Request) */
    PyObject *response_cls;         /* cicada.middleware._CallNextResponse */
    PyObject *current_task;         /* asyncio.current_task */
    PyObject *current_tasks;        /* the dict it reads where it is Python code (3.11), or NULL */
    PyObject *last_loop;            /* with current_tasks: the running loop last looked up ... */
    unsigned long last_loop_thread; /* ... and the thread it ran in (cc_mw_current_context) */
    PyObject *cancelled_error;      /* asyncio.CancelledError */
    PyObject *response_base;        /* starlette.responses.Response */
    PyObject *mutable_headers;      /* cicada.middleware._Headers (a starlette MutableHeaders) */
    PyObject *headers_setitem;      /* MutableHeaders.__setitem__, for what the C one leaves */
    PyObject *base_call;            /* BaseHTTPMiddleware.__call__, used off asyncio */
    PyObject *get_running_loop;     /* asyncio._get_running_loop */
    PyObject *ensure_future;        /* asyncio.ensure_future */
    PyObject *anyio_states;         /* anyio's asyncio backend _task_states.data, once imported */
    PyObject *anyio_restart;        /* cicada.middleware._restart_anyio_cancellation */
    PyObject *modules;              /* sys.modules (the interpreter's), once looked up */
    PyObject *stepping_driver;      /* borrowed: the driver stepping its app right now, or NULL */
    int fuse_up; /* 1 while a fused send passes its start up (the exception state is checked) */
    /* interned strings */
    PyObject *s_type, *s_http, *s_status, *s_headers, *s_body, *s_more_body, *s_info;
    PyObject *s_start, *s_body_msg, *s_pathsend, *s_debug, *s_early_hint;
    PyObject *s_disconnect, *s_request;
    PyObject *s_blocking, *s_add_done_callback, *s_remove_done_callback, *s_set_result;
    PyObject *s_done, *s_cancel, *s_cancelled, *s_create_future, *s_get_loop, *s_throw, *s_close;
    PyObject *s_status_code, *s_raw_headers, *s_body_iterator, *s_background, *s_media_type;
    PyObject *s_scope, *s_receive_attr, *s_send_attr, *s_stream_consumed, *s_is_disconnected;
    PyObject *s_form, *s_body_attr, *s_app, *s_dispatch_func, *s_qualname;
    PyObject *s_cancel_scope, *s_anyio_backend, *s_tasks, *s_dispatch_func_call, *s_list;
    PyObject *empty_tuple, *empty_bytes;
    /* the last non-interned str seen equal to s_start, ... (see str_is in mw_driver.c) */
    PyObject *alias_start, *alias_body_msg, *alias_pathsend, *alias_debug, *alias_early_hint;
    PyObject *alias_request, *alias_disconnect;
    cc_mw_freelist_t fl_step, fl_done, fl_call, fl_driver,
        fl_fuse; /* untracked, no type reference */
    /* Live Starlette objects kept for reuse (cc_mw_pool_keep): requests, call_next responses and
     * their headers. Each item is a strong reference to an emptied, GC-tracked instance. */
    cc_mw_freelist_t pool_request, pool_response, pool_headers;
    /* MWDrivers emptied and kept alive by cc_mw_driver_release: tracked, they hold nothing */
    cc_mw_freelist_t pool_driver;
    /* MWCalls, MWFuses and MWSteps whose work is over, kept alive (tracked, holding nothing)
     * and taken again once only this list holds them (cc_mw_spare_take): no allocation, GC
     * tracking or deallocation per request. At most CC_MW_SPARE_MAX each. */
    cc_mw_freelist_t spare_call, spare_fuse, spare_step;
} cc_mw_state_t;

int cc_mw_init(PyObject *module, cc_mw_state_t *st);
int cc_mw_traverse(cc_mw_state_t *st, visitproc visit, void *arg);
void cc_mw_clear(cc_mw_state_t *st);

#endif
