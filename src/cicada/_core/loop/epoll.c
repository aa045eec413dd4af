/* Linux epoll behind backend.h. Level-triggered, one registration per fd carrying the union of
 * reader and writer interest. Knows nothing about handles or Python. */
#include "loop/backend.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

int cc_loop_backend_open(cc_loop_backend_t *b) {
    b->pfd = epoll_create1(EPOLL_CLOEXEC);
    if (b->pfd < 0)
        return -1;
    b->nevents = CC_LOOP_MAX_EVENTS;
    b->raw = calloc((size_t)b->nevents, sizeof(struct epoll_event));
    if (!b->raw) {
        close(b->pfd);
        b->pfd = -1;
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

void cc_loop_backend_close(cc_loop_backend_t *b) {
    if (b->pfd >= 0)
        close(b->pfd);
    b->pfd = -1;
    free(b->raw);
    b->raw = NULL;
}

static uint32_t to_epoll(uint32_t mask) {
    return ((mask & CC_EV_READ) ? EPOLLIN : 0u) | ((mask & CC_EV_WRITE) ? EPOLLOUT : 0u);
}

int cc_loop_backend_set(cc_loop_backend_t *b, int fd, uint32_t old_mask, uint32_t new_mask) {
    struct epoll_event ev = {.events = to_epoll(new_mask), .data.fd = fd};
    if (new_mask == 0) {
        if (old_mask == 0)
            return 0;
        /* The fd may have been closed under us: the kernel already dropped it. */
        if (epoll_ctl(b->pfd, EPOLL_CTL_DEL, fd, NULL) < 0 && errno != EBADF && errno != ENOENT)
            return -1;
        return 0;
    }
    if (old_mask == 0) {
        if (epoll_ctl(b->pfd, EPOLL_CTL_ADD, fd, &ev) == 0)
            return 0;
        /* A dup of a still-open description may linger in the set: take it over. */
        if (errno != EEXIST)
            return -1;
        return epoll_ctl(b->pfd, EPOLL_CTL_MOD, fd, &ev);
    }
    if (epoll_ctl(b->pfd, EPOLL_CTL_MOD, fd, &ev) == 0)
        return 0;
    /* The old file was closed (kernel forgot it) and the number reused: register afresh. */
    if (errno != ENOENT)
        return -1;
    return epoll_ctl(b->pfd, EPOLL_CTL_ADD, fd, &ev);
}

int cc_loop_backend_poll(cc_loop_backend_t *b, int timeout_ms, cc_loop_event_t *out) {
    struct epoll_event *evs = b->raw;
    int n = epoll_wait(b->pfd, evs, b->nevents, timeout_ms);
    if (n < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        uint32_t e = evs[i].events, m = 0;
        if (e & (EPOLLIN | EPOLLPRI))
            m |= CC_EV_READ;
        if (e & EPOLLOUT)
            m |= CC_EV_WRITE;
        if (e & (EPOLLERR | EPOLLHUP))
            m |= CC_EV_ERROR;
        out[i].fd = evs[i].data.fd;
        out[i].mask = m;
    }
    return n;
}
