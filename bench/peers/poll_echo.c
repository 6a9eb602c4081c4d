/*
 * poll_echo: the echo server on poll(2), to show what epoll is for.
 *
 *     poll_echo PORT         (0 = any free port; prints "listening on 127.0.0.1:PORT")
 *
 * The same algorithm as epoll_echo (shared 64 KiB read buffer, write at once,
 * queue only the rest, POLLOUT only while queued, pause past PEER_MAX_PENDING,
 * EOF flushes then closes), but every iteration hands the kernel the whole
 * pollfd array and scans it back: the cost grows with every idle connection.
 */
#include "common.h"

#include <poll.h>
#include <stdint.h>

#define READ_BUF (64 * 1024)

struct conn {
    char *q;
    uint32_t qstart, qlen;
    int eof;
};

static struct pollfd *pfds;  /* pfds[0] is the listener */
static struct conn *conns;   /* parallel to pfds */
static size_t npfds, cap;
static char rbuf[READ_BUF];

static uint32_t queued(const struct conn *c)
{
    return c->qlen - c->qstart;
}

static void set_events(size_t i)
{
    struct conn *c = &conns[i];
    short ev = 0;

    if (!c->eof && queued(c) <= PEER_MAX_PENDING)
        ev |= POLLIN;
    if (queued(c) > 0)
        ev |= POLLOUT;
    pfds[i].events = ev;
}

/* Closes slot i; the last slot moves into it (the caller revisits i). */
static void conn_close(size_t i)
{
    close(pfds[i].fd);
    free(conns[i].q);
    npfds--;
    pfds[i] = pfds[npfds];
    conns[i] = conns[npfds];
}

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

static int flush(struct conn *c, int fd)
{
    while (queued(c) > 0) {
        ssize_t n = send(fd, c->q + c->qstart, queued(c), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        c->qstart += (uint32_t)n;
    }
    free(c->q);
    c->q = NULL;
    c->qstart = c->qlen = 0;
    return 0;
}

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

/* Handles slot i; returns 0 when it was closed (slot i now holds another fd). */
static int on_client(size_t i, short rev)
{
    struct conn *c = &conns[i];
    int fd = pfds[i].fd;

    if ((rev & (POLLERR | POLLNVAL)) || ((rev & POLLOUT) && flush(c, fd) < 0)) {
        conn_close(i);
        return 0;
    }
    if ((rev & (POLLIN | POLLHUP)) && !c->eof && queued(c) <= PEER_MAX_PENDING) {
        ssize_t n = recv(fd, rbuf, sizeof rbuf, 0);
        if (n > 0) {
            if (echo(c, fd, rbuf, (size_t)n) < 0) {
                conn_close(i);
                return 0;
            }
        } else if (n == 0) {
            c->eof = 1;
        } else if (errno != EAGAIN && errno != EINTR) {
            conn_close(i);
            return 0;
        }
    } else if ((rev & POLLHUP) && !(rev & POLLIN)) {
        conn_close(i);
        return 0;
    }
    if (c->eof && queued(c) == 0) {
        conn_close(i);
        return 0;
    }
    set_events(i);
    return 1;
}

static int grow(void)
{
    size_t n = cap ? cap * 2 : 1024;
    struct pollfd *p = realloc(pfds, n * sizeof *p);
    struct conn *c;

    if (!p)
        return -1;
    pfds = p;
    c = realloc(conns, n * sizeof *c);
    if (!c)
        return -1;
    conns = c;
    cap = n;
    return 0;
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return;
        }
        if (npfds == cap && grow() < 0) {
            close(fd);
            return;
        }
        pfds[npfds].fd = fd;
        pfds[npfds].events = POLLIN;
        pfds[npfds].revents = 0;
        memset(&conns[npfds], 0, sizeof conns[npfds]);
        npfds++;
    }
}

int main(int argc, char **argv)
{
    int port = peer_port_arg(argc, argv);
    int lfd;

    peer_raise_nofile();
    lfd = peer_listen(port, 1);
    if (lfd < 0 || grow() < 0)
        return 1;
    pfds[0].fd = lfd;
    pfds[0].events = POLLIN;
    memset(&conns[0], 0, sizeof conns[0]);
    npfds = 1;
    if (peer_announce(lfd) < 0)
        return 1;
    for (;;) {
        size_t i, end;
        int n = poll(pfds, (nfds_t)npfds, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("poll");
            return 1;
        }
        /*
         * Walk the slots that were polled; a close swaps the last slot in, so
         * the same index is looked at again (its revents are from this poll
         * only if it was polled, i.e. below `end`).
         */
        end = npfds;
        for (i = 1; i < end && n > 0;) {
            short rev = pfds[i].revents;
            if (rev == 0) {
                i++;
                continue;
            }
            pfds[i].revents = 0;
            n--;
            if (on_client(i, rev)) {
                i++;
            } else if (npfds < end) {
                end = npfds; /* the slot now holds the former last one */
            } else {
                i++;
            }
        }
        if (pfds[0].revents & POLLIN)
            on_accept(lfd);
        pfds[0].revents = 0;
    }
}
