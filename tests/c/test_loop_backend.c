/* C tests for the loop's poller backend (loop/backend.h over epoll): readiness, interest
 * changes, and fds closed or reused behind the poller's back. Pure C, run under ASan by ctest. */
#include "loop/epoll.c" /* the backend is pure C: test it without an interpreter */

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

static int failures;
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static cc_loop_event_t out[CC_LOOP_MAX_EVENTS];

static uint32_t mask_for(cc_loop_backend_t *b, int fd, int timeout_ms) {
    int n = cc_loop_backend_poll(b, timeout_ms, out);
    for (int i = 0; i < n; i++)
        if (out[i].fd == fd)
            return out[i].mask;
    return 0;
}

static void test_read_write_interest(void) {
    cc_loop_backend_t b;
    int sv[2];
    CHECK(cc_loop_backend_open(&b) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(cc_loop_backend_set(&b, sv[0], 0, CC_EV_READ) == 0);
    CHECK(mask_for(&b, sv[0], 0) == 0); /* nothing to read yet */
    CHECK(write(sv[1], "x", 1) == 1);
    CHECK(mask_for(&b, sv[0], 100) & CC_EV_READ);
    CHECK(cc_loop_backend_set(&b, sv[0], CC_EV_READ, CC_EV_READ | CC_EV_WRITE) == 0);
    uint32_t m = mask_for(&b, sv[0], 100);
    CHECK((m & CC_EV_READ) && (m & CC_EV_WRITE));
    CHECK(cc_loop_backend_set(&b, sv[0], CC_EV_READ | CC_EV_WRITE, CC_EV_WRITE) == 0);
    CHECK(mask_for(&b, sv[0], 0) == CC_EV_WRITE);
    CHECK(cc_loop_backend_set(&b, sv[0], CC_EV_WRITE, 0) == 0);
    CHECK(mask_for(&b, sv[0], 0) == 0);
    close(sv[0]);
    close(sv[1]);
    cc_loop_backend_close(&b);
}

static void test_hangup_is_error(void) {
    cc_loop_backend_t b;
    int sv[2];
    CHECK(cc_loop_backend_open(&b) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(cc_loop_backend_set(&b, sv[0], 0, CC_EV_WRITE) == 0);
    close(sv[1]);
    CHECK(mask_for(&b, sv[0], 100) & CC_EV_ERROR);
    close(sv[0]);
    cc_loop_backend_close(&b);
}

static void test_closed_and_reused_fd(void) {
    cc_loop_backend_t b;
    int sv[2], tv[2];
    CHECK(cc_loop_backend_open(&b) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    int fd = sv[0];
    CHECK(cc_loop_backend_set(&b, fd, 0, CC_EV_READ) == 0);
    close(fd); /* the kernel drops it from the epoll set */
    /* removing it afterwards is not an error (EBADF) */
    CHECK(cc_loop_backend_set(&b, fd, CC_EV_READ, 0) == 0);
    /* The number is reused (lowest free fd) while the loop still believes READ is registered:
     * changing the interest must fall back from MOD (ENOENT) to ADD. */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, tv) == 0);
    int again = tv[0] == fd ? tv[0] : (tv[1] == fd ? tv[1] : -1);
    CHECK(again >= 0);
    if (again >= 0) {
        int peer = again == tv[0] ? tv[1] : tv[0];
        CHECK(cc_loop_backend_set(&b, again, CC_EV_READ, CC_EV_READ | CC_EV_WRITE) == 0);
        CHECK(write(peer, "y", 1) == 1);
        CHECK(mask_for(&b, again, 100) & CC_EV_READ);
    }
    /* an fd that was never open */
    CHECK(cc_loop_backend_set(&b, 1000000, 0, CC_EV_READ) == -1 && errno == EBADF);
    CHECK(cc_loop_backend_set(&b, 1000000, CC_EV_READ, 0) == 0);
    close(sv[1]);
    close(tv[0]);
    close(tv[1]);
    cc_loop_backend_close(&b);
}

static void test_regular_file_refused(void) {
    cc_loop_backend_t b;
    CHECK(cc_loop_backend_open(&b) == 0);
    int fd = open("/proc/self/exe", O_RDONLY);
    CHECK(fd >= 0);
    CHECK(cc_loop_backend_set(&b, fd, 0, CC_EV_READ) == -1 && errno == EPERM);
    close(fd);
    cc_loop_backend_close(&b);
}

int main(void) {
    test_read_write_interest();
    test_hangup_is_error();
    test_closed_and_reused_fd();
    test_regular_file_refused();
    if (failures) {
        fprintf(stderr, "test_loop_backend: %d failed\n", failures);
        return 1;
    }
    printf("test_loop_backend: 4 passed, 0 failed\n");
    return 0;
}
