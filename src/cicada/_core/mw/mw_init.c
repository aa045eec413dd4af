/* The middleware layer's module wiring: interns the names the driver uses and registers its
 * types and functions in cicada._core. Holds no per-request logic. */
#include "mw/mw.h"

#define CC_MW_INTERN(field, text)                                                                  \
    do {                                                                                           \
        st->field = PyUnicode_InternFromString(text);                                              \
        if (!st->field)                                                                            \
            return -1;                                                                             \
    } while (0)

int cc_mw_init(PyObject *module, cc_mw_state_t *st) {
    CC_MW_INTERN(s_type, "type");
    CC_MW_INTERN(s_http, "http");
    CC_MW_INTERN(s_status, "status");
    CC_MW_INTERN(s_headers, "headers");
    CC_MW_INTERN(s_body, "body");
    CC_MW_INTERN(s_more_body, "more_body");
    CC_MW_INTERN(s_info, "info");
    CC_MW_INTERN(s_start, "http.response.start");
    CC_MW_INTERN(s_body_msg, "http.response.body");
    CC_MW_INTERN(s_pathsend, "http.response.pathsend");
    CC_MW_INTERN(s_debug, "http.response.debug");
    CC_MW_INTERN(s_early_hint, "http.response.early_hint");
    CC_MW_INTERN(s_disconnect, "http.disconnect");
    CC_MW_INTERN(s_request, "http.request");
    CC_MW_INTERN(s_blocking, "_asyncio_future_blocking");
    CC_MW_INTERN(s_add_done_callback, "add_done_callback");
    CC_MW_INTERN(s_remove_done_callback, "remove_done_callback");
    CC_MW_INTERN(s_set_result, "set_result");
    CC_MW_INTERN(s_done, "done");
    CC_MW_INTERN(s_cancel, "cancel");
    CC_MW_INTERN(s_cancelled, "cancelled");
    CC_MW_INTERN(s_create_future, "create_future");
    CC_MW_INTERN(s_get_loop, "get_loop");
    CC_MW_INTERN(s_throw, "throw");
    CC_MW_INTERN(s_close, "close");
    CC_MW_INTERN(s_status_code, "status_code");
    CC_MW_INTERN(s_raw_headers, "raw_headers");
    CC_MW_INTERN(s_body_iterator, "body_iterator");
    CC_MW_INTERN(s_background, "background");
    CC_MW_INTERN(s_media_type, "media_type");
    CC_MW_INTERN(s_scope, "scope");
    CC_MW_INTERN(s_receive_attr, "_receive");
    CC_MW_INTERN(s_send_attr, "_send");
    CC_MW_INTERN(s_stream_consumed, "_stream_consumed");
    CC_MW_INTERN(s_is_disconnected, "_is_disconnected");
    CC_MW_INTERN(s_form, "_form");
    CC_MW_INTERN(s_body_attr, "_body");
    CC_MW_INTERN(s_app, "app");
    CC_MW_INTERN(s_dispatch_func, "dispatch_func");
    CC_MW_INTERN(s_qualname, "__qualname__");
    CC_MW_INTERN(s_cancel_scope, "cancel_scope");
    CC_MW_INTERN(s_anyio_backend, "anyio._backends._asyncio");
    CC_MW_INTERN(s_tasks, "_tasks");
    CC_MW_INTERN(s_dispatch_func_call, "__call__");
    CC_MW_INTERN(s_list, "_list");
    st->empty_tuple = PyTuple_New(0);
    if (!st->empty_tuple)
        return -1;
    st->empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    if (!st->empty_bytes)
        return -1;
    if (cc_mw_types_init(module, st) < 0 || cc_mw_call_type_init(module, st) < 0)
        return -1;
    return PyModule_AddFunctions(module, cc_mw_functions);
}

#define CC_MW_FIELDS(X)                                                                            \
    X(driver_type)                                                                                 \
    X(step_type)                                                                                   \
    X(done_type)                                                                                   \
    X(call_type)                                                                                   \
    X(entry_type)                                                                                  \
    X(headers_type)                                                                                \
    X(hset_type)                                                                                   \
    X(fuse_type)                                                                                   \
    X(headers_setitem)                                                                             \
    X(mutable_headers)                                                                             \
    X(response_base)                                                                               \
    X(base_call)                                                                                   \
    X(get_running_loop)                                                                            \
    X(ensure_future)                                                                               \
    X(request_cls)                                                                                 \
    X(layer_type)                                                                                  \
    X(s_http)                                                                                      \
    X(response_cls)                                                                                \
    X(current_task)                                                                                \
    X(current_tasks)                                                                               \
    X(last_loop)                                                                                   \
    X(cancelled_error)                                                                             \
    X(anyio_states)                                                                                \
    X(anyio_restart)                                                                               \
    X(modules)                                                                                     \
    X(alias_start)                                                                                 \
    X(alias_body_msg)                                                                              \
    X(alias_pathsend)                                                                              \
    X(alias_debug)                                                                                 \
    X(alias_early_hint)                                                                            \
    X(alias_request)                                                                               \
    X(alias_disconnect)                                                                            \
    X(s_type)                                                                                      \
    X(s_status)                                                                                    \
    X(s_headers)                                                                                   \
    X(s_body)                                                                                      \
    X(s_more_body)                                                                                 \
    X(s_info) X(s_start) X(s_body_msg) X(s_pathsend) X(s_debug) X(s_early_hint) X(s_disconnect)    \
        X(s_request) X(s_blocking) X(s_add_done_callback) X(s_remove_done_callback)                \
            X(s_set_result) X(s_done) X(s_cancel) X(s_cancelled) X(s_create_future) X(s_get_loop)  \
                X(s_throw) X(s_close) X(s_status_code) X(s_raw_headers) X(s_body_iterator)         \
                    X(s_background) X(s_media_type) X(s_scope) X(s_receive_attr) X(s_send_attr)    \
                        X(s_stream_consumed) X(s_is_disconnected) X(s_form) X(s_body_attr)         \
                            X(s_app) X(s_dispatch_func) X(s_qualname) X(s_cancel_scope)            \
                                X(s_anyio_backend) X(s_tasks) X(s_dispatch_func_call) X(s_list)    \
                                    X(empty_tuple) X(empty_bytes)

static int pool_traverse(cc_mw_freelist_t *pool, visitproc visit, void *arg) {
    for (int i = 0; i < pool->n; i++)
        Py_VISIT(pool->items[i]);
    return 0;
}

static void pool_free(cc_mw_freelist_t *pool) {
    while (pool->n > 0)
        Py_DECREF(pool->items[--pool->n]);
}

int cc_mw_traverse(cc_mw_state_t *st, visitproc visit, void *arg) {
#define CC_MW_VISIT(f) Py_VISIT(st->f);
    CC_MW_FIELDS(CC_MW_VISIT)
#undef CC_MW_VISIT
    int r;
    if ((r = pool_traverse(&st->pool_request, visit, arg)) ||
        (r = pool_traverse(&st->pool_response, visit, arg)) ||
        (r = pool_traverse(&st->spare_call, visit, arg)) ||
        (r = pool_traverse(&st->spare_fuse, visit, arg)) ||
        (r = pool_traverse(&st->spare_step, visit, arg)) ||
        (r = pool_traverse(&st->pool_driver, visit, arg)))
        return r;
    return pool_traverse(&st->pool_headers, visit, arg);
}

static void freelist_free(cc_mw_freelist_t *fl, int gc) {
    while (fl->n > 0) {
        PyObject *op = fl->items[--fl->n];
        if (gc)
            PyObject_GC_Del(op);
        else
            PyObject_Free(op);
    }
}

void cc_mw_clear(cc_mw_state_t *st) {
#define CC_MW_CLEAR(f) Py_CLEAR(st->f);
    CC_MW_FIELDS(CC_MW_CLEAR)
#undef CC_MW_CLEAR
    pool_free(&st->pool_driver); /* first: their deallocation feeds the freelists */
    pool_free(&st->spare_call);
    pool_free(&st->spare_fuse);
    pool_free(&st->spare_step);
    freelist_free(&st->fl_step, 1);
    freelist_free(&st->fl_done, 0);
    freelist_free(&st->fl_call, 1);
    freelist_free(&st->fl_driver, 1);
    freelist_free(&st->fl_fuse, 1);
    pool_free(&st->pool_request);
    pool_free(&st->pool_response);
    pool_free(&st->pool_headers);
}
