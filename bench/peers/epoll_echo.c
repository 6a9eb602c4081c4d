/*
 * epoll_echo: the hand-written C echo server on epoll, the practical limit
 * the benchmark compares everything else with.
 *
 *     epoll_echo PORT        (0 = any free port; prints "listening on 127.0.0.1:PORT")
 *
 * Single-threaded, level-triggered, non-blocking. Reads go into one shared
 * 64 KiB buffer and are written back at once; only what the socket does not
 * take is copied into a per-connection queue, and EPOLLOUT is armed only while
 * that queue is non-empty (the same strategy as epoll_loop's stream layer).
 * More than PEER_MAX_PENDING queued bytes pause reading until the queue drains
 * to half. A client's EOF flushes the queue, then closes. Connections live in
 * an array indexed by fd: an idle connection costs one 24-byte slot.
 */
#include "common.h"

#include <stdint.h>
#include <sys/epoll.h>

#define READ_BUF (64 * 1024)
#define MAX_EVENTS 256

struct conn {
    char *q;         /* queued bytes not yet sent (NULL when empty) */
    uint32_t qstart; /* first unsent byte in q */
    uint32_t qlen;   /* end of the queued bytes in q */
    uint32_t mask;   /* events registered */
    uint8_t open, eof;
};

static struct conn *conns;
static int nconns;
static int epfd;
static char rbuf[READ_BUF];

static struct conn *conn_get(int fd)
{
    if (fd >= nconns) {
        int n = nconns ? nconns : 1024;
        struct conn *c;
        while (n <= fd)
            n *= 2;
        c = realloc(conns, (size_t)n * sizeof *c);
        if (!c)
            return NULL;
        memset(c + nconns, 0, (size_t)(n - nconns) * sizeof *c);
        conns = c;
        nconns = n;
    }
    return &conns[fd];
}

static void conn_close(int fd)
{
    struct conn *c = &conns[fd];

    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(c->q);
    memset(c, 0, sizeof *c);
}

static uint32_t queued(const struct conn *c)
{
    return c->qlen - c->qstart;
}

/* Registers for what the connection needs now (only when it changed). */
static void update_mask(int fd, struct conn *c)
{
    uint32_t want = 0;
    struct epoll_event ev;

    if (!c->eof && queued(c) <= PEER_MAX_PENDING)
        want |= EPOLLIN;
    if (queued(c) > 0)
        want |= EPOLLOUT;
    if (want == c->mask)
        return;
    ev.events = want;
    ev.data.fd = fd;
    epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
    c->mask = want;
}

/* Appends to the queue; -1 when out of memory. */
static int enqueue(struct conn *c, const char *p, size_t n)
{
    uint32_t len = queued(c);
    char *q;

    if (c->qstart > 0) {
        memmove(c->q, c->q + c->qstart, len);
        c->qstart = 0;
        c->qlen = len;
    }
    q = realloc(c->q, (size_t)len + n);
    if (!q)
        return -1;
    memcpy(q + len, p, n);
    c->q = q;
    c->qlen = len + (uint32_t)n;
    return 0;
}

/* Sends what is queued; -1 when the connection failed. */
static int flush(struct conn *c, int fd)
{
    while (queued(c) > 0) {
        ssize_t n = send(fd, c->q + c->qstart, queued(c), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return -1;
        }
        c->qstart += (uint32_t)n;
    }
    free(c->q);
    c->q = NULL;
    c->qstart = c->qlen = 0;
    return 0;
}

/* Echoes `n` bytes: straight to the socket, queueing only the rest. */
static int echo(struct conn *c, int fd, const char *p, size_t n)
{
    if (queued(c) == 0) {
        while (n > 0) {
            ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN)
                    break;
                return -1;
            }
            p += w;
            n -= (size_t)w;
        }
    }
    return n > 0 ? enqueue(c, p, n) : 0;
}

static void on_client(int fd, uint32_t events)
{
    struct conn *c = &conns[fd];

    if (events & EPOLLERR) {
        conn_close(fd);
        return;
    }
    if ((events & EPOLLOUT) && flush(c, fd) < 0) {
        conn_close(fd);
        return;
    }
    if ((events & (EPOLLIN | EPOLLHUP)) && !c->eof && queued(c) <= PEER_MAX_PENDING) {
        ssize_t n = recv(fd, rbuf, sizeof rbuf, 0);
        if (n > 0) {
            if (echo(c, fd, rbuf, (size_t)n) < 0) {
                conn_close(fd);
                return;
            }
        } else if (n == 0) {
            c->eof = 1;
        } else if (errno != EAGAIN && errno != EINTR) {
            conn_close(fd);
            return;
        }
    } else if ((events & EPOLLHUP) && !(events & EPOLLIN)) {
        conn_close(fd); /* both directions gone */
        return;
    }
    if (c->eof && queued(c) == 0) {
        conn_close(fd);
        return;
    }
    update_mask(fd, c);
}

static void on_accept(int lfd)
{
    for (;;) {
        struct epoll_event ev;
        struct conn *c;
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* EAGAIN, or EMFILE & co: try again on the next event */
        }
        c = conn_get(fd);
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        if (!c || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            continue;
        }
        c->open = 1;
        c->mask = EPOLLIN;
    }
}

int main(int argc, char **argv)
{
    struct epoll_event evs[MAX_EVENTS], ev;
    int port = peer_port_arg(argc, argv);
    int lfd;

    peer_raise_nofile();
    lfd = peer_listen(port, 1);
    if (lfd < 0)
        return 1;
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("epoll_create1");
        return 1;
    }
    ev.events = EPOLLIN;
    ev.data.fd = lfd;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) < 0) {
        perror("epoll_ctl");
        return 1;
    }
    if (peer_announce(lfd) < 0)
        return 1;
    for (;;) {
        int i, n = epoll_wait(epfd, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait");
            return 1;
        }
        for (i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd)
                on_accept(lfd);
            else if (fd < nconns && conns[fd].open)
                on_client(fd, evs[i].events);
        }
    }
}
