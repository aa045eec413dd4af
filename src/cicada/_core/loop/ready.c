/* The ready queue: a growable ring buffer of handles (strong references), FIFO; the capacity is
 * a power of two so positions wrap with a mask. It only stores and hands back objects; running
 * them is loop.c's job. */
#include "loop/loop_internal.h"

#include <stdlib.h>

int cc_loop_ready_push(cc_loop_ready_t *q, PyObject *h) {
    if (q->len == q->cap) {
        Py_ssize_t ncap = q->cap ? q->cap * 2 : CC_LOOP_READY_INITIAL;
        PyObject **nitems = PyMem_Malloc((size_t)ncap * sizeof(PyObject *));
        if (!nitems) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < q->len; i++)
            nitems[i] = q->items[(q->head + i) & (q->cap - 1)];
        PyMem_Free(q->items);
        q->items = nitems;
        q->cap = ncap;
        q->head = 0;
    }
    q->items[(q->head + q->len) & (q->cap - 1)] = Py_NewRef(h);
    q->len++;
    return 0;
}

PyObject *cc_loop_ready_pop(cc_loop_ready_t *q) {
    if (q->len == 0)
        return NULL;
    PyObject *h = q->items[q->head];
    q->items[q->head] = NULL;
    q->head = (q->head + 1) & (q->cap - 1);
    q->len--;
    return h;
}

PyObject *cc_loop_ready_peek(cc_loop_ready_t *q, Py_ssize_t i) {
    return q->items[(q->head + i) & (q->cap - 1)];
}

int cc_loop_ready_traverse(cc_loop_ready_t *q, visitproc visit, void *arg) {
    for (Py_ssize_t i = 0; i < q->len; i++)
        Py_VISIT(q->items[(q->head + i) & (q->cap - 1)]);
    return 0;
}

void cc_loop_ready_clear(cc_loop_ready_t *q) {
    /* Pop first, then drop: a handle's finalizer may re-enter and push. */
    PyObject *h;
    while ((h = cc_loop_ready_pop(q)) != NULL)
        Py_DECREF(h);
}

void cc_loop_ready_free(cc_loop_ready_t *q) {
    cc_loop_ready_clear(q);
    PyMem_Free(q->items);
    q->items = NULL;
    q->cap = q->head = q->len = 0;
}
