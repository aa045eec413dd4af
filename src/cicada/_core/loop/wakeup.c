/* The cross-thread wake-up: an eventfd the poller watches, written by call_soon_threadsafe and
 * by stop() from other threads. Signals keep Python's set_wakeup_fd self-pipe (see loop.py). */
#include "loop/loop_internal.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

int cc_loop_wakeup_open(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

void cc_loop_wakeup_signal(int fd) {
    uint64_t one = 1;
    ssize_t r;
    do {
        r = write(fd, &one, sizeof(one));
    } while (r < 0 && errno == EINTR);
    /* EAGAIN means the counter is saturated: the loop is woken already. */
}

void cc_loop_wakeup_drain(int fd) {
    uint64_t v;
    ssize_t r;
    do {
        r = read(fd, &v, sizeof(v));
    } while (r < 0 && errno == EINTR);
}
