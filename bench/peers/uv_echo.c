/*
 * uv_echo: the echo server on libuv, written the way libuv's docs suggest,
 * plus the usual fast path.
 *
 *     uv_echo PORT           (0 = any free port; prints "listening on 127.0.0.1:PORT")
 *
 * Single-threaded (the default loop). Reads land in one shared 64 KiB buffer
 * (the loop is single-threaded, so alloc_cb can hand out the same one); echoes
 * go out with uv_try_write, and only the part the socket does not take is
 * copied into a uv_write request. More than PEER_MAX_PENDING queued bytes
 * (write_queue_size) pause reading until the queue drains to half. A client's
 * EOF becomes uv_shutdown (which waits for queued writes), then uv_close.
 */
#include "common.h"

#include <uv.h>

#define READ_BUF (64 * 1024)

struct wreq {
    uv_write_t req;
    uv_buf_t buf;
    char data[];
};

static char rbuf[READ_BUF];

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(rbuf, sizeof rbuf);
}

static void on_closed(uv_handle_t *h)
{
    free(h);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    uv_close((uv_handle_t *)req->handle, on_closed);
    free(req);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_written(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    uv_stream_t *s = req->handle;

    free(w);
    if (status < 0) {
        if (!uv_is_closing((uv_handle_t *)s))
            uv_close((uv_handle_t *)s, on_closed);
        return;
    }
    /* Paused and drained to half the cap: read again (unless EOF was seen). */
    if (s->data && s->write_queue_size <= PEER_MAX_PENDING / 2 && !uv_is_closing((uv_handle_t *)s)) {
        s->data = NULL;
        uv_read_start(s, on_alloc, on_read);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread > 0) {
        uv_buf_t b = uv_buf_init(buf->base, (unsigned int)nread);
        int sent = 0;

        if (s->write_queue_size == 0) {
            sent = uv_try_write(s, &b, 1);
            if (sent == UV_EAGAIN)
                sent = 0;
            if (sent < 0) {
                uv_close((uv_handle_t *)s, on_closed);
                return;
            }
        }
        if (sent < nread) {
            size_t rest = (size_t)(nread - sent);
            struct wreq *w = malloc(sizeof *w + rest);
            if (!w) {
                uv_close((uv_handle_t *)s, on_closed);
                return;
            }
            memcpy(w->data, buf->base + sent, rest);
            w->buf = uv_buf_init(w->data, (unsigned int)rest);
            if (uv_write(&w->req, s, &w->buf, 1, on_written) < 0) {
                free(w);
                uv_close((uv_handle_t *)s, on_closed);
                return;
            }
            if (s->write_queue_size > PEER_MAX_PENDING) {
                uv_read_stop(s);
                s->data = s; /* marks "paused" */
            }
        }
        return;
    }
    if (nread == UV_EOF) {
        uv_shutdown_t *req = malloc(sizeof *req);
        uv_read_stop(s);
        s->data = NULL;
        if (!req || uv_shutdown(req, s, on_shutdown) < 0) {
            free(req);
            uv_close((uv_handle_t *)s, on_closed);
        }
        return;
    }
    if (nread < 0)
        uv_close((uv_handle_t *)s, on_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
    uv_tcp_t *c;

    if (status < 0)
        return;
    c = malloc(sizeof *c);
    if (!c)
        return;
    uv_tcp_init(server->loop, c);
    c->data = NULL;
    if (uv_accept(server, (uv_stream_t *)c) != 0 ||
        uv_read_start((uv_stream_t *)c, on_alloc, on_read) != 0) {
        uv_close((uv_handle_t *)c, on_closed);
    }
}

int main(int argc, char **argv)
{
    uv_loop_t *loop = uv_default_loop();
    uv_tcp_t server;
    struct sockaddr_in addr;
    int port = peer_port_arg(argc, argv);
    int rc, fd;
    uv_os_fd_t ofd;

    peer_raise_nofile();
    uv_tcp_init(loop, &server);
    uv_ip4_addr("127.0.0.1", port, &addr);
    rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&server, SOMAXCONN, on_connection);
    if (rc != 0) {
        fprintf(stderr, "uv_echo: %s\n", uv_strerror(rc));
        return 1;
    }
    if (uv_fileno((uv_handle_t *)&server, &ofd) != 0)
        return 1;
    fd = ofd;
    if (peer_announce(fd) < 0)
        return 1;
    return uv_run(loop, UV_RUN_DEFAULT);
}
