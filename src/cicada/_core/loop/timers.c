/* The timer heap: a binary min-heap of (when, seq, TimerHandle) so equal deadlines fire in the
 * order they were scheduled. Holds strong references; never runs callbacks. */
#include "loop/loop_internal.h"

static inline int earlier(const cc_loop_timer_t *a, const cc_loop_timer_t *b) {
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void sift_up(cc_loop_timer_t *t, Py_ssize_t i) {
    cc_loop_timer_t x = t[i];
    while (i > 0) {
        Py_ssize_t p = (i - 1) / 2;
        if (!earlier(&x, &t[p]))
            break;
        t[i] = t[p];
        i = p;
    }
    t[i] = x;
}

static void sift_down(cc_loop_timer_t *t, Py_ssize_t n, Py_ssize_t i) {
    cc_loop_timer_t x = t[i];
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && earlier(&t[c + 1], &t[c]))
            c++;
        if (!earlier(&t[c], &x))
            break;
        t[i] = t[c];
        i = c;
    }
    t[i] = x;
}

int cc_loop_timers_push(cc_loop_timers_t *h, double when, PyObject *handle) {
    if (h->len == h->cap) {
        Py_ssize_t ncap = h->cap ? h->cap * 2 : CC_LOOP_TIMERS_INITIAL;
        cc_loop_timer_t *n = PyMem_Realloc(h->items, (size_t)ncap * sizeof(cc_loop_timer_t));
        if (!n) {
            PyErr_NoMemory();
            return -1;
        }
        h->items = n;
        h->cap = ncap;
    }
    h->items[h->len] = (cc_loop_timer_t){when, h->next_seq++, Py_NewRef(handle)};
    sift_up(h->items, h->len);
    h->len++;
    return 0;
}

PyObject *cc_loop_timers_pop(cc_loop_timers_t *h) {
    if (h->len == 0)
        return NULL;
    PyObject *top = h->items[0].handle;
    h->len--;
    if (h->len > 0) {
        h->items[0] = h->items[h->len];
        sift_down(h->items, h->len, 0);
    }
    return top;
}

/* Drop every handle for which is_cancelled() says so and re-heapify: asyncio does this when more
 * than half of a large heap is cancelled, so cancelled timeouts do not pile up. The references are
 * released only once the heap is consistent again, since a release can run arbitrary code. */
int cc_loop_timers_prune(cc_loop_timers_t *h, int (*is_cancelled)(PyObject *, void *), void *arg) {
    PyObject **dropped = PyMem_Malloc((size_t)(h->len ? h->len : 1) * sizeof(PyObject *));
    if (!dropped) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t j = 0, nd = 0;
    for (Py_ssize_t i = 0; i < h->len; i++) {
        if (is_cancelled(h->items[i].handle, arg))
            dropped[nd++] = h->items[i].handle;
        else
            h->items[j++] = h->items[i];
    }
    h->len = j;
    for (Py_ssize_t i = h->len / 2 - 1; i >= 0; i--)
        sift_down(h->items, h->len, i);
    for (Py_ssize_t i = 0; i < nd; i++)
        Py_DECREF(dropped[i]);
    PyMem_Free(dropped);
    return 0;
}

int cc_loop_timers_traverse(cc_loop_timers_t *h, visitproc visit, void *arg) {
    for (Py_ssize_t i = 0; i < h->len; i++)
        Py_VISIT(h->items[i].handle);
    return 0;
}

void cc_loop_timers_clear(cc_loop_timers_t *h) {
    PyObject *x;
    while ((x = cc_loop_timers_pop(h)) != NULL)
        Py_DECREF(x);
}

void cc_loop_timers_free(cc_loop_timers_t *h) {
    cc_loop_timers_clear(h);
    PyMem_Free(h->items);
    h->items = NULL;
    h->cap = h->len = 0;
}
