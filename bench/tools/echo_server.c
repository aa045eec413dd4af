/* Plain C echo servers: the floor that bench/suites/loop.py's echo rows are measured against, and
 * a probe of what io_uring would save a loop per round trip (issue 5). A measuring tool, not a
 * server: one thread, no limits beyond fixed tables, nothing here is linked into cicada.
 *
 * usage: echo_server MODE tcp HOST PORT READY_PATH | MODE unix PATH READY_PATH
 *   (the Python servers' CLI shape; READY_PATH is created once the socket listens)
 * MODE:
 *   epoll        level-triggered epoll_wait, then one recv and one send per readable socket: what
 *                an epoll loop does per message (recv + send + a share of one epoll_wait);
 *   uring        io_uring with SINGLE_ISSUER|DEFER_TASKRUN: multishot recv into a provided-buffer
 *                ring, the echo sent by a SEND SQE straight from that buffer, one io_uring_enter
 *                per iteration that submits the sends and waits for completions;
 *   uring-coop   the same with COOP_TASKRUN (no DEFER_TASKRUN);
 *   uring-plain  the same with no setup flags;
 *   uring-recv   uring's multishot recv, but the echo is a send() syscall (a SEND SQE only for
 *                what the socket did not take): a loop whose transport.write() stays synchronous;
 *   uring-poll   io_uring only as the poller (multishot POLL_ADD, one io_uring_enter per
 *                iteration), recv and send still plain syscalls: the smallest change to a loop;
 *   uring-skip   uring with IOSQE_CQE_SKIP_SUCCESS on sends. Measurement only: without the
 *                send's completion nobody knows when its buffer is free, so the buffer is recycled
 *                right after the io_uring_enter that issued it; correct only while sends complete
 *                inline (small echoes on a socket with room), which a loop cannot assume: at
 *                100 KiB it stalls. 1 KiB rows only.
 * Exit status 3 with a message when io_uring is not available (ENOSYS, EPERM in containers,
 * kernel.io_uring_disabled) or lacks a needed feature. Environment: ECHO_PBUFS=N provided buffers
 * (default 16), ECHO_STATS=1 prints request counts as JSON on stderr at SIGTERM. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_FDS 4096           /* connections are indexed by fd */
#define READ_SIZE (256 * 1024) /* one recv's buffer in the syscall modes, as the loops use */
#define MAX_EVENTS 64
#define RING_ENTRIES 256
#define CQ_ENTRIES 4096
#define PBUF_MAX 128           /* provided buffers at most (ECHO_PBUFS, a power of two) */
#define PBUF_SIZE (256 * 1024) /* each, as large as the loops' reads */
#define PBUF_DEFAULT 16 /* few: the ring hands buffers out in turn, so each extra one is colder */
#define PBUF_GROUP 1
#define NO_BUF 0xffffu

/* ECHO_STATS=1: on SIGTERM, print how many of each kernel request the run took (to see where a
 * mode spends its round trips), then exit. */
static volatile sig_atomic_t stop_requested;
static unsigned long long n_enter, n_recv_cqe, n_send, n_wait, n_recv_sys, n_send_sys;

static void on_term(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void maybe_stop(void) {
    if (!stop_requested)
        return;
    fprintf(stderr,
            "{\"io_uring_enter\": %llu, \"recv_cqes\": %llu, \"send_sqes\": %llu, "
            "\"epoll_wait\": %llu, \"recv\": %llu, \"send\": %llu}\n",
            n_enter, n_recv_cqe, n_send, n_wait, n_recv_sys, n_send_sys);
    exit(0);
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* ---- sockets ---------------------------------------------------------------------------- */

static int is_unix;

static int listen_on(char **where) {
    int fd;
    if (is_unix) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        if (strlen(where[0]) >= sizeof(a.sun_path)) {
            fprintf(stderr, "unix socket path too long\n");
            exit(2);
        }
        strcpy(a.sun_path, where[0]);
        unlink(where[0]);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
            die("bind");
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(where[1]))};
        if (inet_pton(AF_INET, where[0], &a.sin_addr) != 1) {
            fprintf(stderr, "bad IPv4 address %s\n", where[0]);
            exit(2);
        }
        fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
            die("bind");
    }
    if (listen(fd, 128) < 0)
        die("listen");
    return fd;
}

/* Every accepted socket gets what the Python servers give theirs: non-blocking, TCP_NODELAY. */
static void setup_conn(int fd) {
    int one = 1;
    if (!is_unix)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (fd >= MAX_FDS) {
        fprintf(stderr, "fd %d over the table size %d\n", fd, MAX_FDS);
        exit(1);
    }
}

/* Output a socket did not take: kept until writable (syscall modes only). */
typedef struct {
    char *data;
    size_t off, len, cap;
} pending_t;

static pending_t pend[MAX_FDS];
static char rbuf[READ_SIZE];

static int pend_keep(pending_t *p, const char *d, size_t n) {
    if (p->len + n > p->cap) {
        size_t cap = p->cap ? p->cap * 2 : READ_SIZE;
        while (cap < p->len + n)
            cap *= 2;
        char *nd = realloc(p->data, cap);
        if (!nd)
            return -1;
        p->data = nd;
        p->cap = cap;
    }
    memcpy(p->data + p->len, d, n);
    p->len += n;
    return 0;
}

/* Send what is pending first; 1 when all is out, 0 when some stays pending, -1 on error. */
static int flush_pending(int fd) {
    pending_t *p = &pend[fd];
    while (p->off < p->len) {
        ssize_t n = send(fd, p->data + p->off, p->len - p->off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        p->off += (size_t)n;
    }
    p->off = p->len = 0;
    return 1;
}

/* One recv and the echo of what it got. 1: all sent; 0: some output pending (stop reading
 * until it drains); -1: peer closed or error (caller closes). *full is set when the recv filled
 * the buffer, so more may be waiting. */
static int echo_once(int fd, int *full) {
    ssize_t r = recv(fd, rbuf, sizeof(rbuf), MSG_DONTWAIT);
    n_recv_sys++;
    *full = 0;
    if (r < 0)
        return errno == EAGAIN || errno == EINTR ? 1 : -1;
    if (r == 0)
        return -1;
    *full = r == (ssize_t)sizeof(rbuf);
    ssize_t s = send(fd, rbuf, (size_t)r, MSG_NOSIGNAL | MSG_DONTWAIT);
    n_send_sys++;
    if (s < 0) {
        if (errno != EAGAIN && errno != EINTR)
            return -1;
        s = 0;
    }
    if (s == r)
        return 1;
    if (pend_keep(&pend[fd], rbuf + s, (size_t)(r - s)) < 0)
        return -1;
    return 0;
}

static void drop_conn(int fd) {
    pending_t *p = &pend[fd];
    p->off = p->len = 0;
    close(fd);
}

/* ---- epoll -------------------------------------------------------------------------------- */

static _Noreturn void run_epoll(int lfd) {
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
        die("epoll_ctl");
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        n_wait++;
        if (n < 0) {
            if (errno == EINTR) {
                maybe_stop();
                continue;
            }
            die("epoll_wait");
        }
        for (int k = 0; k < n; k++) {
            int fd = evs[k].data.fd;
            if (fd == lfd) {
                int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                if (c < 0)
                    continue;
                setup_conn(c);
                struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) < 0)
                    die("epoll_ctl");
                continue;
            }
            int st, full;
            if (evs[k].events & EPOLLOUT) {
                st = flush_pending(fd);
                if (st == 1) /* drained: read again (level-triggered picks up what waited) */
                    st = 2;
            } else {
                st = echo_once(fd, &full);
            }
            if (st < 0) {
                drop_conn(fd); /* close() also removes it from the epoll set */
                continue;
            }
            if (st != 1) { /* 0: wait for room only; 2: back to reading */
                struct epoll_event cev = {.events = st == 0 ? EPOLLOUT : EPOLLIN, .data.fd = fd};
                if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev) < 0)
                    die("epoll_ctl");
            }
        }
    }
}

/* ---- io_uring through raw syscalls ------------------------------------------------------- */

typedef struct {
    int fd;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    unsigned sq_local_tail, sq_submitted;
    unsigned setup_flags;
} ring_t;

static ring_t ring;

static int sys_setup(unsigned entries, struct io_uring_params *p) {
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_enter(int fd, unsigned submit, unsigned min_complete, unsigned flags) {
    return (int)syscall(__NR_io_uring_enter, fd, submit, min_complete, flags, NULL, 0);
}

static int sys_register(int fd, unsigned op, void *arg, unsigned n) {
    return (int)syscall(__NR_io_uring_register, fd, op, arg, n);
}

static void unavailable(const char *what) {
    int e = errno;
    char knob[16] = "?";
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
    if (f) {
        if (!fgets(knob, sizeof(knob), f))
            strcpy(knob, "?");
        knob[strcspn(knob, "\n")] = 0;
        fclose(f);
    }
    fprintf(stderr,
            "io_uring unavailable: %s: %s (kernel.io_uring_disabled=%s; containers often "
            "block io_uring_setup with a seccomp filter)\n",
            what, strerror(e), knob);
    exit(3);
}

static void ring_init(unsigned flags) {
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = flags | IORING_SETUP_CQSIZE;
    p.cq_entries = CQ_ENTRIES;
    int fd = sys_setup(RING_ENTRIES, &p);
    if (fd < 0)
        unavailable(errno == EINVAL ? "io_uring_setup (setup flags not supported by this kernel)"
                                    : "io_uring_setup");
    if (!(p.features & IORING_FEAT_SINGLE_MMAP) || !(p.features & IORING_FEAT_NODROP)) {
        errno = EOPNOTSUPP;
        unavailable("kernel too old (needs IORING_FEAT_SINGLE_MMAP and NODROP)");
    }
    size_t sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    size_t sz = sq_sz > cq_sz ? sq_sz : cq_sz;
    char *base =
        mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (base == MAP_FAILED)
        die("mmap ring");
    struct io_uring_sqe *sqes =
        mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (sqes == MAP_FAILED)
        die("mmap sqes");
    ring.fd = fd;
    ring.sq_head = (unsigned *)(base + p.sq_off.head);
    ring.sq_tail = (unsigned *)(base + p.sq_off.tail);
    ring.sq_mask = (unsigned *)(base + p.sq_off.ring_mask);
    ring.sq_array = (unsigned *)(base + p.sq_off.array);
    ring.cq_head = (unsigned *)(base + p.cq_off.head);
    ring.cq_tail = (unsigned *)(base + p.cq_off.tail);
    ring.cq_mask = (unsigned *)(base + p.cq_off.ring_mask);
    ring.cqes = (struct io_uring_cqe *)(base + p.cq_off.cqes);
    ring.sqes = sqes;
    ring.sq_local_tail = ring.sq_submitted = *ring.sq_tail;
    ring.setup_flags = flags;
}

/* Hand the queued SQEs to the kernel and wait for at least `wait` completions. Task work (the
 * completions of DEFER_TASKRUN rings) only runs inside an enter with GETEVENTS, so always ask. */
static void ring_enter(unsigned wait) {
    __atomic_store_n(ring.sq_tail, ring.sq_local_tail, __ATOMIC_RELEASE);
    unsigned todo = ring.sq_local_tail - ring.sq_submitted;
    for (;;) {
        int r = sys_enter(ring.fd, todo, wait, IORING_ENTER_GETEVENTS);
        n_enter++;
        if (r >= 0) {
            ring.sq_submitted += (unsigned)r;
            return;
        }
        if (errno == EINTR) {
            maybe_stop();
            continue;
        }
        if (errno == EBUSY || errno == EAGAIN) { /* CQ backlog: reap first, submit next round */
            return;
        }
        die("io_uring_enter");
    }
}

static struct io_uring_sqe *ring_sqe(void) {
    unsigned head = __atomic_load_n(ring.sq_head, __ATOMIC_ACQUIRE);
    if (ring.sq_local_tail - head >= RING_ENTRIES) {
        ring_enter(0); /* full: submit what is queued without waiting */
        head = __atomic_load_n(ring.sq_head, __ATOMIC_ACQUIRE);
        if (ring.sq_local_tail - head >= RING_ENTRIES) {
            fprintf(stderr, "submission queue stuck full\n");
            exit(1);
        }
    }
    unsigned idx = ring.sq_local_tail & *ring.sq_mask;
    struct io_uring_sqe *sqe = &ring.sqes[idx];
    memset(sqe, 0, sizeof(*sqe));
    ring.sq_array[idx] = idx;
    ring.sq_local_tail++;
    return sqe;
}

/* user_data: what completed in the top byte, the fd or buffer id below. */
enum { UD_ACCEPT = 1, UD_RECV, UD_SEND, UD_POLL_IN, UD_POLL_OUT, UD_POLL_RM };
#define UD(kind, v) (((uint64_t)(kind) << 56) | (uint64_t)(v))
#define UD_KIND(u) ((unsigned)((u) >> 56))
#define UD_VAL(u) ((unsigned)((u)&0xffffffffu))

static void queue_accept(int lfd) {
    struct io_uring_sqe *sqe = ring_sqe();
    sqe->opcode = IORING_OP_ACCEPT;
    sqe->fd = lfd;
    sqe->ioprio = IORING_ACCEPT_MULTISHOT;
    sqe->user_data = UD(UD_ACCEPT, 0);
}

/* ---- uring: multishot recv + provided buffers + SEND SQEs ---- */

/* Each provided buffer, once received into, waits in its connection's FIFO to be echoed: one send
 * in flight per connection, so a send that waits for room can never be overtaken by a later one. */
typedef struct {
    int fd;
    unsigned off, len;
    uint16_t next;
} pbuf_t;

typedef struct {
    uint16_t head, tail; /* FIFO of buffers to echo, NO_BUF when empty */
    int sending, reading, closing, open;
} uconn_t;

static struct io_uring_buf_ring *pbr;
static char *pbuf_mem;
static pbuf_t pbufs[PBUF_MAX];
static unsigned pbuf_count = PBUF_DEFAULT;
static uconn_t uconns[MAX_FDS];
static uint16_t pbr_tail;
static int skip_send_cqe, starved; /* starved: some recv stopped for want of buffers */
static int direct_send;            /* uring-recv: echo with a send() syscall */
static int gave;                   /* a buffer went back to the ring this iteration */
static uint16_t issued[PBUF_MAX];
static unsigned n_issued;

static void pbuf_give(uint16_t bid) {
    struct io_uring_buf *b = &pbr->bufs[pbr_tail & (pbuf_count - 1)];
    b->addr = (uint64_t)(uintptr_t)(pbuf_mem + (size_t)bid * PBUF_SIZE);
    b->len = PBUF_SIZE;
    b->bid = bid;
    pbr_tail++;
    __atomic_store_n(&pbr->tail, pbr_tail, __ATOMIC_RELEASE);
    gave = 1;
}

static void pbuf_init(void) {
    const char *env = getenv("ECHO_PBUFS");
    if (env) {
        pbuf_count = (unsigned)atoi(env);
        if (pbuf_count < 2 || pbuf_count > PBUF_MAX || (pbuf_count & (pbuf_count - 1))) {
            fprintf(stderr, "ECHO_PBUFS must be a power of two in 2..%d\n", PBUF_MAX);
            exit(2);
        }
    }
    size_t ring_sz = pbuf_count * sizeof(struct io_uring_buf);
    pbr = mmap(NULL, ring_sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pbuf_mem = mmap(NULL, (size_t)pbuf_count * PBUF_SIZE, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (pbr == MAP_FAILED || pbuf_mem == MAP_FAILED)
        die("mmap buffers");
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)pbr;
    reg.ring_entries = pbuf_count;
    reg.bgid = PBUF_GROUP;
    if (sys_register(ring.fd, IORING_REGISTER_PBUF_RING, &reg, 1) < 0)
        unavailable("IORING_REGISTER_PBUF_RING (needs Linux 5.19)");
    for (uint16_t i = 0; i < pbuf_count; i++)
        pbuf_give(i);
}

static void queue_recv(int fd) {
    struct io_uring_sqe *sqe = ring_sqe();
    sqe->opcode = IORING_OP_RECV;
    sqe->fd = fd;
    sqe->ioprio = IORING_RECV_MULTISHOT;
    sqe->flags = IOSQE_BUFFER_SELECT;
    sqe->buf_group = PBUF_GROUP;
    sqe->user_data = UD(UD_RECV, fd);
    uconns[fd].reading = 1;
}

static void queue_send(uint16_t bid) {
    pbuf_t *b = &pbufs[bid];
    struct io_uring_sqe *sqe = ring_sqe();
    n_send++;
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = b->fd;
    sqe->addr = (uint64_t)(uintptr_t)(pbuf_mem + (size_t)bid * PBUF_SIZE + b->off);
    sqe->len = b->len - b->off;
    sqe->msg_flags = MSG_NOSIGNAL | MSG_WAITALL; /* the kernel retries short sends itself */
    sqe->user_data = UD(UD_SEND, bid);
    if (skip_send_cqe)
        sqe->flags = IOSQE_CQE_SKIP_SUCCESS;
    uconns[b->fd].sending = 1;
}

static void uconn_maybe_close(int fd) {
    uconn_t *c = &uconns[fd];
    if (c->open && c->closing && !c->sending && !c->reading) {
        close(fd);
        c->open = 0;
    }
}

/* Send the next buffer of fd's FIFO, if any and none is in flight. */
static void uconn_pump(int fd) {
    uconn_t *c = &uconns[fd];
    if (!c->sending && c->head != NO_BUF)
        queue_send(c->head);
}

static void uconn_sent(int fd, int res) {
    uconn_t *c = &uconns[fd];
    uint16_t bid = c->head;
    pbuf_t *b = &pbufs[bid];
    c->sending = 0;
    if (res >= 0 && (unsigned)res < b->len - b->off && !c->closing) {
        b->off += (unsigned)res; /* short send despite WAITALL: send the rest */
        queue_send(bid);
        return;
    }
    c->head = b->next;
    if (c->head == NO_BUF)
        c->tail = NO_BUF;
    pbuf_give(bid);
    if (res < 0 && !c->closing) { /* peer gone: stop reading too, drop what is queued */
        c->closing = 1;
        shutdown(fd, SHUT_RDWR);
    }
    if (c->closing) {
        while (c->head != NO_BUF) {
            uint16_t n = pbufs[c->head].next;
            pbuf_give(c->head);
            c->head = n;
        }
        c->tail = NO_BUF;
    }
    uconn_pump(fd);
    uconn_maybe_close(fd);
}

static void uring_conn_open(int fd) {
    setup_conn(fd);
    uconns[fd] = (uconn_t){.head = NO_BUF, .tail = NO_BUF, .open = 1};
    queue_recv(fd);
}

static void uring_on_recv(int fd, struct io_uring_cqe *cqe) {
    n_recv_cqe++;
    uconn_t *c = &uconns[fd];
    if (!(cqe->flags & IORING_CQE_F_MORE))
        c->reading = 0;
    if (cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        if (c->closing) {
            pbuf_give(bid);
        } else {
            pbufs[bid] = (pbuf_t){.fd = fd, .off = 0, .len = (unsigned)cqe->res, .next = NO_BUF};
            if (direct_send && c->head == NO_BUF) {
                /* uring-recv: write() stays a synchronous send(); only what the socket does not
                 * take goes through the ring, behind which later data must queue. */
                ssize_t n = send(fd, pbuf_mem + (size_t)bid * PBUF_SIZE, (size_t)cqe->res,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                n_send_sys++;
                if (n == cqe->res || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                    pbuf_give(bid);
                    if (n < 0) {
                        c->closing = 1;
                        shutdown(fd, SHUT_RDWR);
                    }
                    goto rearm;
                }
                pbufs[bid].off = n > 0 ? (unsigned)n : 0;
            }
            if (c->tail == NO_BUF)
                c->head = bid;
            else
                pbufs[c->tail].next = bid;
            c->tail = bid;
            if (skip_send_cqe) {
                /* Measurement only (see the header): the send is taken as done once issued. */
                queue_send(bid);
                c->sending = 0;
                c->head = c->tail = NO_BUF;
                issued[n_issued++] = bid;
            } else {
                uconn_pump(fd);
            }
        }
    } else if (cqe->res == -ENOBUFS) {
        starved = 1; /* re-armed once sends give buffers back */
    } else if (cqe->res <= 0) {
        c->closing = 1;
    }
rearm:
    if (!c->reading && !c->closing && cqe->res != -ENOBUFS)
        queue_recv(fd); /* the multishot ended for another reason (e.g. overflow): re-arm */
    uconn_maybe_close(fd);
}

/* ---- uring-poll: io_uring as the poller only ---- */

static void queue_poll(int fd, unsigned events, int multi) {
    struct io_uring_sqe *sqe = ring_sqe();
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = fd;
    sqe->poll32_events = events;
    sqe->len = multi ? IORING_POLL_ADD_MULTI : 0;
    sqe->user_data = UD(events == POLLIN ? UD_POLL_IN : UD_POLL_OUT, fd);
}

static int polling_in[MAX_FDS], poll_dead[MAX_FDS];

/* A multishot poll holds its own reference to the file, so close() would not end it: cancel it,
 * and close the socket on its last completion. */
static void poll_cancel(int fd) {
    struct io_uring_sqe *sqe = ring_sqe();
    sqe->opcode = IORING_OP_POLL_REMOVE;
    sqe->addr = UD(UD_POLL_IN, fd);
    sqe->user_data = UD(UD_POLL_RM, fd);
}

static void poll_kill(int fd) {
    if (poll_dead[fd])
        return;
    poll_dead[fd] = 1;
    shutdown(fd, SHUT_RDWR);
    poll_cancel(fd);
}

/* Read and echo until the socket is drained of what the wakeup announced. A multishot poll posts
 * one completion per wakeup, not per poll of a level, so a recv that did not fill the buffer has
 * taken everything that woke us; data arriving later wakes us again. */
static void poll_readable(int fd) {
    int full = 1, st = 1;
    while (full && st == 1)
        st = echo_once(fd, &full);
    if (st < 0)
        poll_kill(fd);
    else if (st == 0) {
        queue_poll(fd, POLLOUT, 0); /* output pending: reading pauses until it drains */
    }
}

static void poll_on_cqe(struct io_uring_cqe *cqe, int lfd) {
    unsigned kind = UD_KIND(cqe->user_data);
    int fd = (int)UD_VAL(cqe->user_data);
    if (kind == UD_POLL_IN) {
        if (!(cqe->flags & IORING_CQE_F_MORE))
            polling_in[fd] = 0;
        if (!poll_dead[fd] && pend[fd].len == 0 && cqe->res > 0)
            poll_readable(fd);
        if (!polling_in[fd]) {
            if (poll_dead[fd] || cqe->res < 0) {
                drop_conn(fd);
                poll_dead[fd] = 0;
            } else {
                polling_in[fd] = 1;
                queue_poll(fd, POLLIN, 1);
            }
        }
    } else if (kind == UD_POLL_OUT) {
        if (poll_dead[fd])
            return;
        int st = flush_pending(fd);
        if (st == 0)
            queue_poll(fd, POLLOUT, 0);
        else if (st < 0)
            poll_kill(fd);
        else {
            poll_readable(fd); /* what arrived while paused woke nobody */
        }
    } else if (kind == UD_POLL_RM) {
        /* EALREADY: the poll was mid-wakeup (its task work not run yet); ask again. */
        if (cqe->res == -EALREADY && polling_in[fd])
            poll_cancel(fd);
    } else if (kind == UD_ACCEPT) {
        if (cqe->res >= 0) {
            setup_conn(cqe->res);
            polling_in[cqe->res] = 1;
            queue_poll(cqe->res, POLLIN, 1);
        }
        if (!(cqe->flags & IORING_CQE_F_MORE))
            queue_accept(lfd);
    }
}

static _Noreturn void run_uring(int lfd, unsigned flags, int poller) {
    ring_init(flags);
    if (!poller)
        pbuf_init();
    queue_accept(lfd);
    for (;;) {
        ring_enter(1);
        /* uring-skip: the sends queued last iteration were issued by that enter (assumed done). */
        for (unsigned i = 0; i < n_issued; i++)
            pbuf_give(issued[i]);
        n_issued = 0;
        gave = 0;
        unsigned head = *ring.cq_head;
        unsigned tail = __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE);
        for (; head != tail; head++) {
            struct io_uring_cqe *cqe = &ring.cqes[head & *ring.cq_mask];
            if (poller) {
                poll_on_cqe(cqe, lfd);
                continue;
            }
            unsigned kind = UD_KIND(cqe->user_data);
            if (kind == UD_RECV) {
                uring_on_recv((int)UD_VAL(cqe->user_data), cqe);
            } else if (kind == UD_SEND) {
                if (skip_send_cqe) { /* only failures post: the buffer was recycled already */
                    continue;
                }
                uconn_sent(pbufs[UD_VAL(cqe->user_data)].fd, cqe->res);
            } else if (kind == UD_ACCEPT) {
                if (cqe->res >= 0)
                    uring_conn_open(cqe->res);
                if (!(cqe->flags & IORING_CQE_F_MORE))
                    queue_accept(lfd);
            }
        }
        __atomic_store_n(ring.cq_head, head, __ATOMIC_RELEASE);
        if (starved && gave) { /* buffers came back: re-arm the receives that ran dry */
            starved = 0;
            for (int fd = 0; fd < MAX_FDS; fd++)
                if (uconns[fd].open && !uconns[fd].reading && !uconns[fd].closing)
                    queue_recv(fd);
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[2], "unix") == 0 ? argc != 5 : argc != 6)) {
        fprintf(stderr,
                "usage: %s epoll|uring|uring-coop|uring-plain|uring-recv|uring-poll|uring-skip "
                "tcp HOST PORT READY | unix PATH READY\n",
                argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    is_unix = strcmp(argv[2], "unix") == 0;
    signal(SIGPIPE, SIG_IGN);
    if (getenv("ECHO_STATS")) {
        struct sigaction sa = {.sa_handler = on_term}; /* no SA_RESTART: the wait returns EINTR */
        sigaction(SIGTERM, &sa, NULL);
    }
    int lfd = listen_on(argv + 3);
    /* Probe io_uring before saying ready, so an unavailable kernel fails the start clearly. */
    unsigned flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int poller = 0;
    if (strcmp(mode, "uring-coop") == 0)
        flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN;
    else if (strcmp(mode, "uring-plain") == 0)
        flags = 0;
    else if (strcmp(mode, "uring-poll") == 0)
        poller = 1;
    else if (strcmp(mode, "uring-skip") == 0)
        skip_send_cqe = 1;
    else if (strcmp(mode, "uring-recv") == 0)
        direct_send = 1;
    else if (strcmp(mode, "uring") != 0 && strcmp(mode, "epoll") != 0) {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    const char *ready = argv[argc - 1];
    if (strcmp(mode, "epoll") == 0) {
        int rfd = open(ready, O_CREAT | O_WRONLY, 0644);
        if (rfd < 0)
            die("ready file");
        close(rfd);
        run_epoll(lfd);
    }
    /* The ring is created in run_uring; create the ready file after a throwaway probe so that a
     * refusing kernel exits before the caller starts its client. */
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    int probe = sys_setup(4, &p);
    if (probe < 0)
        unavailable(errno == EINVAL ? "io_uring_setup (setup flags not supported by this kernel)"
                                    : "io_uring_setup");
    close(probe);
    int rfd = open(ready, O_CREAT | O_WRONLY, 0644);
    if (rfd < 0)
        die("ready file");
    close(rfd);
    run_uring(lfd, flags, poller);
}
