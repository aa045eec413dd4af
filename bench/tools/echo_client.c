/* Echo load generator for bench/suites/loop.py: N connections each send a SIZE-byte message and
 * wait for all SIZE bytes to come back before sending the next (ping-pong), for DURATION seconds,
 * then print {"rate": round trips/s, "count": N, "cpu_s": client CPU seconds} as JSON. One thread,
 * epoll, no allocation per round trip, so the client costs far less CPU per round trip than the
 * server it measures. It checks nothing but lengths: it measures, it does not test.
 *
 * usage: echo_client tcp HOST PORT SIZE CONNS DURATION
 *        echo_client unix PATH SIZE CONNS DURATION */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define MAX_EVENTS 64

typedef struct {
    int fd;
    size_t sent, got; /* of the current message */
    uint32_t events;   /* registered with epoll */
    int done;
} conn_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int connect_to(const char *kind, char **argv) {
    int fd;
    if (strcmp(kind, "unix") == 0) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        if (strlen(argv[0]) >= sizeof(a.sun_path)) {
            fprintf(stderr, "unix socket path too long\n");
            exit(2);
        }
        strcpy(a.sun_path, argv[0]);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
            die("connect");
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
        if (inet_pton(AF_INET, argv[0], &a.sin_addr) != 1) {
            fprintf(stderr, "bad IPv4 address %s\n", argv[0]);
            exit(2);
        }
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
            die("connect");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

/* Send what the socket takes of the current message; 0, or -1 on a closed peer. */
static int pump_send(conn_t *c, const char *msg, size_t size) {
    while (c->sent < size) {
        ssize_t n = send(c->fd, msg + c->sent, size - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        c->sent += (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "unix") == 0 ? argc != 6 : argc != 7)) {
        fprintf(stderr, "usage: %s tcp HOST PORT SIZE CONNS DURATION | unix PATH SIZE CONNS "
                        "DURATION\n",
                argv[0]);
        return 2;
    }
    const char *kind = argv[1];
    int base = strcmp(kind, "unix") == 0 ? 3 : 4;
    size_t size = (size_t)atol(argv[base]);
    int nconns = atoi(argv[base + 1]);
    double duration = atof(argv[base + 2]);
    if (size == 0 || nconns <= 0 || nconns > MAX_CONNS || duration <= 0) {
        fprintf(stderr, "bad SIZE, CONNS (1..%d) or DURATION\n", MAX_CONNS);
        return 2;
    }
    char *msg = malloc(size), *sink = malloc(size);
    conn_t *conns = calloc((size_t)nconns, sizeof(conn_t));
    if (!msg || !sink || !conns)
        die("malloc");
    memset(msg, 'x', size);
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = connect_to(kind, argv + 2);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        conns[i].events = EPOLLIN;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0)
            die("epoll_ctl");
    }
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    double t0 = now(), stop_at = t0 + duration;
    unsigned long long count = 0;
    for (int i = 0; i < nconns; i++) {
        if (pump_send(&conns[i], msg, size) < 0)
            die("send");
        if (conns[i].sent < size) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i};
            if (epoll_ctl(ep, EPOLL_CTL_MOD, conns[i].fd, &ev) < 0)
                die("epoll_ctl");
            conns[i].events = ev.events;
        }
    }
    int live = nconns;
    struct epoll_event evs[MAX_EVENTS];
    while (live > 0) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, 1000);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        if (n == 0 && now() > stop_at + 5) {
            fprintf(stderr, "server stopped answering\n");
            return 1;
        }
        for (int k = 0; k < n; k++) {
            uint32_t i = evs[k].data.u32;
            conn_t *c = &conns[i];
            if (c->done)
                continue;
            if ((evs[k].events & EPOLLOUT) && pump_send(c, msg, size) < 0)
                die("send");
            for (;;) {
                ssize_t r = recv(c->fd, sink, size - c->got, MSG_DONTWAIT);
                if (r < 0) {
                    if (errno == EAGAIN || errno == EINTR)
                        break;
                    die("recv");
                }
                if (r == 0) {
                    fprintf(stderr, "server closed a connection\n");
                    return 1;
                }
                c->got += (size_t)r;
                if (c->got < size)
                    continue;
                count++;
                c->got = c->sent = 0;
                if (now() >= stop_at) {
                    c->done = 1;
                    live--;
                    break;
                }
                if (pump_send(c, msg, size) < 0)
                    die("send");
                break; /* the reply cannot be there yet */
            }
            /* A large message the socket did not take whole: wait for room as well (the server
             * echoes as it reads, so both directions must keep moving). */
            uint32_t want = EPOLLIN | (!c->done && c->sent < size ? EPOLLOUT : 0u);
            if (want != c->events) {
                struct epoll_event ev = {.events = want, .data.u32 = i};
                if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
                    die("epoll_ctl");
                c->events = want;
            }
        }
    }
    double dt = now() - t0;
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) * 1e-6 +
                 (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) * 1e-6;
    printf("{\"rate\": %.1f, \"count\": %llu, \"cpu_s\": %.6f}\n", (double)count / dt, count, cpu);
    for (int i = 0; i < nconns; i++)
        close(conns[i].fd);
    free(msg);
    free(sink);
    free(conns);
    return 0;
}
