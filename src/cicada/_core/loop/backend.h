/* The poller interface the run loop sees: register interest per fd, wait for readiness. epoll.c
 * implements it on Linux; a kqueue.c can follow behind the same calls. No Python objects here. */
#ifndef CC_LOOP_BACKEND_H
#define CC_LOOP_BACKEND_H

#include <stdint.h>

#define CC_EV_READ 1u
#define CC_EV_WRITE 2u
#define CC_EV_ERROR 4u /* error or hang-up: wakes both the reader and the writer */

/* Upper bound on events taken from the kernel per poll; more simply wait for the next poll. */
#define CC_LOOP_MAX_EVENTS 1024

typedef struct {
    int fd;
    uint32_t mask; /* CC_EV_* */
} cc_loop_event_t;

typedef struct {
    int pfd;     /* the epoll (or kqueue) descriptor */
    void *raw;   /* backend-specific event buffer */
    int nevents; /* capacity of raw and of out */
} cc_loop_backend_t;

/* 0 on success, -1 with errno set. */
int cc_loop_backend_open(cc_loop_backend_t *b);
void cc_loop_backend_close(cc_loop_backend_t *b);
/* Change the interest for fd from old_mask to new_mask (either may be 0). Errors that mean "the
 * fd was already closed" are swallowed when removing; -1 with errno set otherwise. */
int cc_loop_backend_set(cc_loop_backend_t *b, int fd, uint32_t old_mask, uint32_t new_mask);
/* Wait up to timeout_ms (-1: forever). Returns the number of events written to out (at most
 * b->nevents), or -1 with errno set (EINTR included). Call without holding the GIL. */
int cc_loop_backend_poll(cc_loop_backend_t *b, int timeout_ms, cc_loop_event_t *out);

#endif
