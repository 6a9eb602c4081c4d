/*
 * chat_server: a line-based chat room on epoll-loop's stream layer.
 *
 *     chat_server [--host HOST] [--port PORT] [--max-queue BYTES]
 *
 * Every line a client sends ("\n"-terminated, at most 4 KiB) goes to every
 * other client as "<id> text\n". It shows the three things a real server on
 * this library has to get right:
 *   - backpressure: a client that reads slower than the room talks has its
 *     write queue capped (--max-queue, default 256 KiB); a broadcast that
 *     would pass the cap (-ENOBUFS) disconnects that client with a reset
 *     instead of letting it grow the server: one slow reader never slows or
 *     bloats the others;
 *   - ownership: each connection's state is malloc'ed in on_open and freed in
 *     on_close, which the library calls exactly once for every connection,
 *     also for the ones still open when the loop is freed (-ECANCELED);
 *   - shutdown with slow peers: SIGINT/SIGTERM (received through the loop with
 *     epoll_loop_signal_start, not a handler) stops accepting, tells everyone,
 *     and closes every connection gracefully; the library bounds each close
 *     (2 s by default), so a peer that never reads cannot hold the exit.
 *
 * --port 0 picks a free port; the start line names the real one.
 */
#include <epoll_loop.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINE 4096

struct room;

struct client {
    struct room *room;
    struct client *prev, *next;
    epoll_loop_conn *conn;
    unsigned id;
    size_t len;             /* bytes in `line` */
    char line[MAX_LINE];    /* the line being received */
};

struct room {
    epoll_loop *loop;
    epoll_loop_listener *listener;
    struct client *clients;
    unsigned next_id, nclients;
    unsigned long dropped;  /* clients disconnected for reading too slowly */
    int stopping;
};

static void say(struct client *to, const char *msg, size_t len);

static void drop(struct client *c, const char *why)
{
    printf("client %u dropped: %s\n", c->id, why);
    c->room->dropped++;
    epoll_loop_conn_abort(c->conn); /* on_close follows, from the loop */
}

/* Queues `len` bytes for `to`; a reader too slow for the room is dropped. */
static void say(struct client *to, const char *msg, size_t len)
{
    int rc = epoll_loop_conn_write(to->conn, msg, len);

    if (rc == -ENOBUFS || rc == -EMSGSIZE)
        drop(to, "too slow: its write queue is full");
    else if (rc < 0 && rc != -EPIPE) /* -EPIPE: already closing */
        fprintf(stderr, "write to client %u: %s\n", to->id, epoll_loop_strerror(rc));
}

static void broadcast(struct room *room, const struct client *from, const char *msg, size_t len)
{
    struct client *c, *next;

    for (c = room->clients; c; c = next) {
        next = c->next; /* `drop` does not unlink (on_close does, later) */
        if (c != from)
            say(c, msg, len);
    }
}

static void on_open(epoll_loop_conn *conn, void *user_data)
{
    struct room *room = user_data; /* the listener's user data */
    struct client *c = calloc(1, sizeof *c);
    char hello[96];
    int n;

    if (!c) {
        /* on_close would otherwise get the listener's user data (the room). */
        epoll_loop_conn_set_user_data(conn, NULL);
        epoll_loop_conn_abort(conn);
        return;
    }
    c->room = room;
    c->conn = conn;
    c->id = ++room->next_id;
    c->next = room->clients;
    if (room->clients)
        room->clients->prev = c;
    room->clients = c;
    room->nclients++;
    /* From now on every callback of this connection gets its own state. */
    epoll_loop_conn_set_user_data(conn, c);
    n = snprintf(hello, sizeof hello, "welcome, you are %u; %u here\n", c->id, room->nclients);
    say(c, hello, (size_t)n);
    printf("client %u joined\n", c->id);
}

static void on_data(epoll_loop_conn *conn, const uint8_t *data, size_t len, void *user_data)
{
    struct client *c = user_data;
    size_t i;

    (void)conn;
    for (i = 0; i < len; i++) {
        if (data[i] != '\n') {
            if (c->len == MAX_LINE) {
                drop(c, "line too long");
                return;
            }
            c->line[c->len++] = (char)data[i];
            continue;
        }
        {
            char out[MAX_LINE + 16];
            int n = snprintf(out, sizeof out, "%u %.*s\n", c->id, (int)c->len, c->line);
            broadcast(c->room, c, out, (size_t)n);
        }
        c->len = 0;
    }
}

static void on_close(epoll_loop_conn *conn, int error, void *user_data)
{
    struct client *c = user_data;
    struct room *room;

    (void)conn;
    if (!c) /* its on_open could not allocate */
        return;
    room = c->room;
    if (error == 0)
        printf("client %u left\n", c->id);
    else
        printf("client %u closed: %s\n", c->id, epoll_loop_strerror(error));
    if (c->prev)
        c->prev->next = c->next;
    else
        room->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    room->nclients--;
    free(c);
}

static const epoll_loop_conn_callbacks client_cbs = {on_open, on_data, NULL, on_close};

static void on_stop_signal(epoll_loop *loop, int signo, void *user_data)
{
    struct room *room = user_data;
    static const char bye[] = "server shutting down\n";
    struct client *c;

    (void)loop;
    if (room->stopping)
        return;
    room->stopping = 1;
    printf("signal %d: closing %u connections\n", signo, room->nclients);
    epoll_loop_listener_close(room->listener);
    room->listener = NULL;
    for (c = room->clients; c; c = c->next) {
        say(c, bye, sizeof bye - 1);
        epoll_loop_conn_close(c->conn); /* flush, then close; at most 2 s */
    }
    /* Nothing keeps the loop running now but the closing connections. */
    epoll_loop_signal_stop(room->loop, SIGINT);
    epoll_loop_signal_stop(room->loop, SIGTERM);
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [--host HOST] [--port PORT] [--max-queue BYTES]\n"
            "\n"
            "A line-based chat room: each line goes to every other client.\n"
            "\n"
            "  --host HOST        address to listen on (default 127.0.0.1)\n"
            "  --port PORT        port, 0 for any free one (default 8888)\n"
            "  --max-queue BYTES  per-client write queue cap (default 262144);\n"
            "                     a client that falls behind by more is dropped\n"
            "  --help             show this help\n"
            "\n"
            "Stops on SIGINT (Ctrl-C) or SIGTERM, closing every client gracefully.\n",
            prog);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"max-queue", required_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    const char *host = "127.0.0.1";
    unsigned long port = 8888, max_queue = 256 * 1024;
    struct room room;
    int opt, rc, status = 1;
    char *end;

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            host = optarg;
            break;
        case 'p':
            port = strtoul(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || port > 65535) {
                fprintf(stderr, "bad port: %s\n", optarg);
                return 2;
            }
            break;
        case 'q':
            max_queue = strtoul(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || max_queue < 2 * (MAX_LINE + 16)) {
                fprintf(stderr, "bad --max-queue: %s (at least %d)\n", optarg, 2 * (MAX_LINE + 16));
                return 2;
            }
            break;
        case 'H':
            usage(stdout, argv[0]);
            return 0;
        default:
            usage(stderr, argv[0]);
            return 2;
        }
    }
    memset(&room, 0, sizeof room);
    /* Block the stop signals before any thread exists, then take them from the loop. */
    if (epoll_loop_signal_block(SIGINT) != 0 || epoll_loop_signal_block(SIGTERM) != 0) {
        fprintf(stderr, "cannot block SIGINT/SIGTERM\n");
        return 1;
    }
    rc = epoll_loop_new(&room.loop);
    if (rc < 0) {
        fprintf(stderr, "epoll_loop_new: %s\n", epoll_loop_strerror(rc));
        return 1;
    }
    rc = epoll_loop_tcp_listen(room.loop, host, (uint16_t)port, 0, &client_cbs, &room, &room.listener);
    if (rc == 0)
        rc = epoll_loop_listener_set_limits(room.listener, max_queue, max_queue / 4);
    if (rc == 0)
        rc = epoll_loop_signal_start(room.loop, SIGINT, on_stop_signal, &room);
    if (rc == 0)
        rc = epoll_loop_signal_start(room.loop, SIGTERM, on_stop_signal, &room);
    if (rc < 0) {
        fprintf(stderr, "chat_server: %s\n", epoll_loop_strerror(rc));
        goto cleanup;
    }
    printf("chat server listening on %s:%d\n", host, epoll_loop_listener_port(room.listener));
    fflush(stdout);
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* Runs until the signal closed the listener and every connection is gone. */
    rc = epoll_loop_run(room.loop);
    if (rc < 0) {
        fprintf(stderr, "epoll_loop_run: %s\n", epoll_loop_strerror(rc));
        goto cleanup;
    }
    printf("stopped: %lu dropped for reading too slowly\n", room.dropped);
    status = 0;

cleanup:
    if (room.listener)
        epoll_loop_listener_close(room.listener);
    /* Connections still open get on_close(-ECANCELED) here, freeing their state. */
    epoll_loop_free(room.loop);
    return status;
}
