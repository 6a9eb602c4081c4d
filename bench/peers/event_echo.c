/*
 * event_echo: the echo server on libevent's bufferevent, the idiomatic way.
 *
 *     event_echo PORT        (0 = any free port; prints "listening on 127.0.0.1:PORT")
 *
 * Single-threaded. The read callback moves the input buffer into the output
 * buffer (evbuffer_add_buffer: no copy); more than PEER_MAX_PENDING queued
 * bytes disable reading, and the write callback (low-water mark: half of that)
 * enables it again. A client's EOF flushes what is queued, then frees the
 * bufferevent (BEV_OPT_CLOSE_ON_FREE closes the socket). libevent's defaults
 * are kept (for example its 16 KiB maximum per read).
 */
#include "common.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

/* bufferevent's user data: set once the client sent EOF. */
static char eof_mark;

static void on_write(struct bufferevent *bev, void *arg)
{
    struct evbuffer *out = bufferevent_get_output(bev);

    if (arg == &eof_mark) {
        if (evbuffer_get_length(out) == 0)
            bufferevent_free(bev);
        return;
    }
    /* At or below the low-water mark: read again (if paused). */
    if (!(bufferevent_get_enabled(bev) & EV_READ))
        bufferevent_enable(bev, EV_READ);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *out = bufferevent_get_output(bev);

    (void)arg;
    evbuffer_add_buffer(out, bufferevent_get_input(bev));
    if (evbuffer_get_length(out) > PEER_MAX_PENDING)
        bufferevent_disable(bev, EV_READ);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
            bufferevent_free(bev);
            return;
        }
        /* Flush first: the write callback frees it once the output is empty. */
        bufferevent_disable(bev, EV_READ);
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
        bufferevent_setcb(bev, on_read, on_write, on_event, &eof_mark);
        return;
    }
    bufferevent_free(bev);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg)
{
    struct event_base *base = evconnlistener_get_base(l);
    struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);

    (void)sa;
    (void)socklen;
    (void)arg;
    if (!bev) {
        close(fd);
        return;
    }
    bufferevent_setcb(bev, on_read, on_write, on_event, NULL);
    bufferevent_setwatermark(bev, EV_WRITE, PEER_MAX_PENDING / 2, 0);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

int main(int argc, char **argv)
{
    struct event_base *base;
    struct evconnlistener *l;
    int port = peer_port_arg(argc, argv);
    int fd;

    peer_raise_nofile();
    base = event_base_new();
    if (!base)
        return 1;
    fd = peer_listen(port, 1);
    if (fd < 0)
        return 1;
    l = evconnlistener_new(base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (!l) {
        fprintf(stderr, "event_echo: evconnlistener_new failed\n");
        return 1;
    }
    if (peer_announce(fd) < 0)
        return 1;
    event_base_dispatch(base);
    evconnlistener_free(l);
    event_base_free(base);
    return 0;
}
