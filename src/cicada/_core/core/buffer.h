/* The one growable byte buffer a connection reads into: append at the tail, consume at the head.
 * Plain C (no Python.h) so every layer and the C tests can use it; it never does I/O and never
 * grows past what its caller appends. */
#ifndef CC_BUFFER_H
#define CC_BUFFER_H

#include <stddef.h>

/* First allocation; the buffer grows by doubling from here. */
#define CC_BUF_MIN_CAP 4096

typedef struct {
    char *data;
    size_t start; /* offset of the first unconsumed byte */
    size_t len;   /* unconsumed bytes from start */
    size_t cap;
} cc_buf_t;

static inline void cc_buf_init(cc_buf_t *b) {
    b->data = NULL;
    b->start = b->len = b->cap = 0;
}
/* Start of the unconsumed bytes (NULL when nothing was ever allocated: no NULL + 0). */
static inline char *cc_buf_ptr(const cc_buf_t *b) {
    return b->data ? b->data + b->start : NULL;
}

/* Make room for `extra` more bytes at the tail (compacting first if that is enough). 0 / -1. */
int cc_buf_reserve(cc_buf_t *b, size_t extra);
/* Copy n bytes to the tail. 0, or -1 when memory is exhausted (the buffer is unchanged). */
int cc_buf_append(cc_buf_t *b, const void *p, size_t n);
/* Drop n bytes from the head (n <= len). Resets to the start of the storage once empty. */
void cc_buf_consume(cc_buf_t *b, size_t n);
/* Move the unconsumed bytes to the start of the storage. */
void cc_buf_compact(cc_buf_t *b);
/* Give the storage back when the buffer is empty and holds more than `keep` bytes, so that idle
 * connections stay small. */
void cc_buf_release(cc_buf_t *b, size_t keep);
void cc_buf_free(cc_buf_t *b);

#endif
