/* Growable input buffer (see buffer.h). Plain C: malloc/realloc only, no Python objects, so it is
 * safe to use without the GIL and from the C tests. */
#include "core/buffer.h"

#include <stdlib.h>
#include <string.h>

void cc_buf_compact(cc_buf_t *b) {
    if (b->start == 0)
        return;
    if (b->len)
        memmove(b->data, b->data + b->start, b->len);
    b->start = 0;
}

int cc_buf_reserve(cc_buf_t *b, size_t extra) {
    if (b->cap - b->start - b->len >= extra)
        return 0;
    /* Compacting is cheaper than growing when the head has been consumed mostly. */
    if (b->cap - b->len >= extra && b->start >= b->len) {
        cc_buf_compact(b);
        return 0;
    }
    size_t need = b->len + extra;
    if (need < b->len)
        return -1;
    size_t cap = b->cap ? b->cap : CC_BUF_MIN_CAP;
    while (cap < need) {
        if (cap > ((size_t)-1) / 2)
            return -1;
        cap *= 2;
    }
    cc_buf_compact(b);
    char *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int cc_buf_append(cc_buf_t *b, const void *p, size_t n) {
    if (n == 0)
        return 0;
    if (cc_buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->start + b->len, p, n);
    b->len += n;
    return 0;
}

void cc_buf_consume(cc_buf_t *b, size_t n) {
    if (n >= b->len) {
        b->start = b->len = 0;
        return;
    }
    b->start += n;
    b->len -= n;
}

void cc_buf_release(cc_buf_t *b, size_t keep) {
    if (b->len == 0 && b->cap > keep)
        cc_buf_free(b);
}

void cc_buf_free(cc_buf_t *b) {
    free(b->data);
    cc_buf_init(b);
}
