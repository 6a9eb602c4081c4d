/*
 * tcp_proxy: a TCP proxy on the library's buffered connections.
 *
 *     tcp_proxy --upstream-port PORT [--upstream-host HOST]
 *               [--listen-host HOST] [--listen-port PORT] [--verbose]
 *
 * Listens on one port; for each client it connects to the upstream and pipes
 * both directions, like libevent's classic le-proxy sample:
 *
 * - Backpressure: when the other side's write queue is above PAUSE_ABOVE (or a
 *   write to it is refused with -ENOBUFS), reading from this side pauses; the
 *   other side's on_drain (its queue fell to QUEUE_LOW) resumes it. Each
 *   connection's queue is capped at QUEUE_CAP, so memory per pair is bounded
 *   however slow either peer is.
 * - Half-close is relayed both ways: both connections allow half-open, so a
 *   peer's EOF arrives as on_data(NULL, 0) and becomes a shutdown (FIN) of the
 *   other connection once what is queued for it is sent.
 * - When either side closes (an error, a reset, a refused upstream, or both
 *   halves done), the other one is closed too, after flushing its queue.
 * - Bytes a client sends before the upstream connect completes are queued by
 *   the library and sent once it is open.
 *
 * SIGINT or SIGTERM stops it: the listener closes, every connection is closed
 * gracefully (at most STOP_DEADLINE_MS), then everything is freed. A second
 * signal stops at once. --listen-port 0 picks a free port; the "listening on"
 * line names the real one.
 */
#include <epoll_loop.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define DEFAULT_LISTEN_HOST "127.0.0.1"
#define DEFAULT_LISTEN_PORT 8080
#define DEFAULT_UPSTREAM_HOST "127.0.0.1"

/* Per connection: writes beyond this many queued bytes fail with -ENOBUFS. */
#define QUEUE_CAP (256 * 1024)
/* Per connection: on_drain runs when the queue falls to this. */
#define QUEUE_LOW (64 * 1024)
/* Pause the reader when the other side has more than this queued. */
#define PAUSE_ABOVE (128 * 1024)
/* Give up on an upstream that does not answer the connect within this. */
#define CONNECT_TIMEOUT_MS 10000
/* While stopping: reset a connection that makes no progress for this long. */
#define STOP_GRACE_MS 2000
/* While stopping: give up waiting for connections after this. */
#define STOP_DEADLINE_MS 5000

struct pair;

/* One connection of a pair, and what flows from it to the other one. */
struct side {
    epoll_loop_conn *conn; /* NULL once its on_close ran (or it never existed) */
    struct side *other;
    struct pair *pair;
    const char *name;   /* "client" or "upstream" */
    uint8_t *stash;     /* bytes read here that the other side refused (-ENOBUFS) */
    size_t stash_len;
    bool paused;        /* we paused reading from this side */
    bool eof;           /* this side's peer sent EOF */
    bool eof_relayed;   /* ... and the other side was shut down for it */
    uint64_t bytes_in;  /* read from this side */
};

struct proxy;

/* A client and its upstream connection. */
struct pair {
    struct proxy *px;
    struct side client;
    struct side upstream;
    struct pair *prev;
    struct pair *next;
    uint64_t id;
    bool failed; /* either side closed with an error */
};

struct proxy {
    epoll_loop *loop;
    epoll_loop_listener *listener;
    const char *upstream_host;
    uint16_t upstream_port;
    bool verbose;
    bool stopping;
    struct pair *pairs; /* live pairs (doubly linked) */
    uint64_t live;
    uint64_t total;
    uint64_t bytes_up;   /* client -> upstream */
    uint64_t bytes_down; /* upstream -> client */
    uint64_t pauses;
    uint64_t errors;     /* pairs ended by an error on either side */
};

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s --upstream-port PORT [options]\n"
            "\n"
            "Accepts TCP clients and connects each to the upstream, piping both\n"
            "directions with backpressure and relaying half-closes.\n"
            "\n"
            "  --listen-host HOST     address to listen on (default " DEFAULT_LISTEN_HOST ")\n"
            "  --listen-port PORT     port, 0 for any free one (default %d)\n"
            "  --upstream-host HOST   upstream address (default " DEFAULT_UPSTREAM_HOST ")\n"
            "  --upstream-port PORT   upstream port (required)\n"
            "  --verbose              log every connection\n"
            "  --help                 show this help\n"
            "\n"
            "Per connection the write queue is capped at %d KiB; reading from one side\n"
            "pauses while the other has more than %d KiB queued.\n"
            "Stops on SIGINT (Ctrl-C) or SIGTERM and prints its counters.\n",
            prog, DEFAULT_LISTEN_PORT, QUEUE_CAP / 1024, PAUSE_ABOVE / 1024);
}

/* Parses a decimal number in [min, max]; false if it is not one. */
static bool parse_num(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* Raises the soft RLIMIT_NOFILE to the hard limit: each pair takes two fds. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            fprintf(stderr, "tcp_proxy: setrlimit(RLIMIT_NOFILE): %s\n", strerror(errno));
    }
}

static void pause_side(struct side *s)
{
    if (s->paused || !s->conn)
        return;
    if (epoll_loop_conn_pause(s->conn) == 0) {
        s->paused = true;
        s->pair->px->pauses++;
    }
}

static void resume_side(struct side *s)
{
    if (!s->paused || !s->conn || s->stash)
        return;
    if (epoll_loop_conn_resume(s->conn) == 0)
        s->paused = false;
}

/* Closes a connection after flushing it, resetting it if that stalls. */
static void close_side(struct side *s)
{
    if (!s->conn)
        return;
    /* -EPIPE: already closing, which is what we want anyway. */
    (void)epoll_loop_conn_set_timeout(s->conn, STOP_GRACE_MS);
    (void)epoll_loop_conn_close(s->conn);
}

/* Relays `from`'s EOF as a shutdown of the other side, once nothing from
 * `from` is waiting to be written there. */
static void relay_eof(struct side *from)
{
    struct side *to = from->other;

    if (!from->eof || from->eof_relayed || from->stash)
        return;
    from->eof_relayed = true;
    if (to->conn)
        (void)epoll_loop_conn_shutdown(to->conn); /* -EPIPE: it is closing already */
}

/* Counts bytes that went from `from` to the other side. */
static void count(struct side *from, size_t len)
{
    struct proxy *px = from->pair->px;

    from->bytes_in += len;
    if (from == &from->pair->client)
        px->bytes_up += len;
    else
        px->bytes_down += len;
}

/* Keeps bytes the other side refused, after any kept before (so that order is
 * preserved), and pauses the reader; false when out of memory (then the pair
 * is reset). */
static bool stash(struct side *from, const uint8_t *data, size_t len)
{
    uint8_t *p = realloc(from->stash, from->stash_len + len);

    if (!p) {
        fprintf(stderr, "tcp_proxy: out of memory, resetting pair %" PRIu64 "\n",
                from->pair->id);
        (void)epoll_loop_conn_abort(from->conn);
        return false;
    }
    memcpy(p + from->stash_len, data, len);
    from->stash = p;
    from->stash_len += len;
    pause_side(from);
    return true;
}

/* Sends what `from` read to the other side, pausing `from` if that side is
 * backed up. Nothing is dropped while the other side is open: a write refused
 * with -ENOBUFS is kept in `from->stash` (at most one read's worth, as reading
 * pauses at once) and retried from the other side's on_drain. */
static void forward(struct side *from, const uint8_t *data, size_t len)
{
    struct side *to = from->other;
    size_t queued = 0;
    int rc;

    if (!to->conn) {
        /* The other side is gone and this one is being closed: drop. */
        return;
    }
    if (from->stash) {
        /* Not expected (reading pauses with the stash), but never reorder. */
        (void)stash(from, data, len);
        return;
    }
    rc = epoll_loop_conn_write(to->conn, data, len);
    if (rc == -ENOBUFS) {
        (void)stash(from, data, len);
        return;
    }
    if (rc < 0) {
        /* -EPIPE: the other side is closing; so must this one. */
        close_side(from);
        return;
    }
    count(from, len);
    if (epoll_loop_conn_get_queued(to->conn, &queued) == 0 && queued > PAUSE_ABOVE)
        pause_side(from);
}

static void on_data(epoll_loop_conn *conn, const uint8_t *data, size_t len, void *ud)
{
    struct side *s = ud;

    (void)conn;
    if (!s)
        return;
    if (!data) {
        s->eof = true; /* half-open: the peer's EOF */
        relay_eof(s);
        return;
    }
    forward(s, data, len);
}

/* `to`'s queue fell to QUEUE_LOW: write what it refused before, resume its reader. */
static void on_drain(epoll_loop_conn *conn, void *ud)
{
    struct side *to = ud;
    struct side *from;
    int rc;

    (void)conn;
    if (!to)
        return;
    from = to->other;
    if (from->stash) {
        rc = epoll_loop_conn_write(to->conn, from->stash, from->stash_len);
        if (rc == -ENOBUFS)
            return; /* cannot happen (the queue is at its low mark); wait for the next drain */
        if (rc == 0)
            count(from, from->stash_len);
        free(from->stash);
        from->stash = NULL;
        from->stash_len = 0;
        if (rc < 0) {
            close_side(from);
            return;
        }
        relay_eof(from);
    }
    resume_side(from);
}

static void unlink_pair(struct pair *p)
{
    struct proxy *px = p->px;

    if (p->prev)
        p->prev->next = p->next;
    else
        px->pairs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    px->live--;
}

static void free_pair(struct pair *p)
{
    free(p->client.stash);
    free(p->upstream.stash);
    free(p);
}

static void on_close(epoll_loop_conn *conn, int error, void *ud)
{
    struct side *s = ud;
    struct side *other;
    struct pair *p;
    struct proxy *px;

    (void)conn;
    if (!s)
        return; /* a client we could not take on (see on_client_open) */
    other = s->other;
    p = s->pair;
    px = p->px;
    s->conn = NULL;
    if (error != 0) {
        if (px->verbose || s == &p->upstream)
            printf("pair %" PRIu64 ": %s closed: %s\n", p->id, s->name,
                   epoll_loop_strerror(error));
        if (!p->failed)
            px->errors++;
        p->failed = true;
    }
    if (other->conn) {
        /* What this side read but the other refused can still go out. */
        if (s->stash && epoll_loop_conn_write(other->conn, s->stash, s->stash_len) == 0)
            count(s, s->stash_len);
        free(s->stash);
        s->stash = NULL;
        close_side(other);
        return;
    }
    if (px->verbose)
        printf("pair %" PRIu64 ": closed (%" PRIu64 " bytes up, %" PRIu64 " down)\n", p->id,
               p->client.bytes_in, p->upstream.bytes_in);
    unlink_pair(p);
    free_pair(p);
    if (px->stopping && px->live == 0)
        (void)epoll_loop_stop(px->loop);
}

static void on_upstream_open(epoll_loop_conn *conn, void *ud)
{
    struct side *s = ud;

    /* Connected: the connect timeout no longer applies. */
    (void)epoll_loop_conn_set_timeout(conn, 0);
    if (s->pair->px->verbose)
        printf("pair %" PRIu64 ": upstream connected\n", s->pair->id);
}

static const epoll_loop_conn_callbacks upstream_cbs = {
    on_upstream_open,
    on_data,
    on_drain,
    on_close,
};

/* A client was accepted (user data: the proxy): pair it with an upstream connection. */
static void on_client_open(epoll_loop_conn *conn, void *ud)
{
    struct proxy *px = ud;
    struct pair *p;
    int rc;

    p = calloc(1, sizeof *p);
    if (!p) {
        fprintf(stderr, "tcp_proxy: out of memory, refusing a client\n");
        (void)epoll_loop_conn_set_user_data(conn, NULL);
        (void)epoll_loop_conn_abort(conn);
        return;
    }
    p->px = px;
    p->id = ++px->total;
    p->client.conn = conn;
    p->client.other = &p->upstream;
    p->client.pair = p;
    p->client.name = "client";
    p->upstream.other = &p->client;
    p->upstream.pair = p;
    p->upstream.name = "upstream";
    p->next = px->pairs;
    if (px->pairs)
        px->pairs->prev = p;
    px->pairs = p;
    px->live++;

    (void)epoll_loop_conn_set_user_data(conn, &p->client);
    (void)epoll_loop_conn_set_half_open(conn, 1);
    if (px->verbose) {
        char host[64] = "?";
        uint16_t port = 0;

        (void)epoll_loop_conn_peer_address(conn, host, sizeof host, &port);
        printf("pair %" PRIu64 ": client %s:%u\n", p->id, host, (unsigned)port);
    }

    rc = epoll_loop_tcp_connect(px->loop, px->upstream_host, px->upstream_port, &upstream_cbs,
                                &p->upstream, &p->upstream.conn);
    if (rc < 0) {
        printf("pair %" PRIu64 ": cannot connect to the upstream: %s\n", p->id,
               epoll_loop_strerror(rc));
        px->errors++;
        p->failed = true;
        p->upstream.conn = NULL;
        close_side(&p->client); /* its on_close frees the pair */
        return;
    }
    (void)epoll_loop_conn_set_limits(p->upstream.conn, QUEUE_CAP, QUEUE_LOW);
    (void)epoll_loop_conn_set_half_open(p->upstream.conn, 1);
    (void)epoll_loop_conn_set_timeout(p->upstream.conn, CONNECT_TIMEOUT_MS);
}

static const epoll_loop_conn_callbacks client_cbs = {
    on_client_open,
    on_data,
    on_drain,
    on_close,
};

static void on_stop_deadline(epoll_loop *loop, uint64_t timer_id, void *ud)
{
    (void)timer_id;
    (void)ud;
    printf("connections still open after %d ms, stopping anyway\n", STOP_DEADLINE_MS);
    (void)epoll_loop_stop(loop);
}

/* SIGINT/SIGTERM: stop accepting and close every pair; a second one stops at once. */
static void on_signal(epoll_loop *loop, int signo, void *ud)
{
    struct proxy *px = ud;
    struct pair *p;
    int rc;

    printf("%s received, stopping\n", signo == SIGINT ? "SIGINT" : "SIGTERM");
    if (px->stopping) {
        (void)epoll_loop_stop(loop);
        return;
    }
    px->stopping = true;
    rc = epoll_loop_listener_close(px->listener);
    if (rc < 0)
        fprintf(stderr, "tcp_proxy: epoll_loop_listener_close: %s\n", epoll_loop_strerror(rc));
    px->listener = NULL;
    for (p = px->pairs; p; p = p->next) {
        close_side(&p->client);
        close_side(&p->upstream);
    }
    if (px->live == 0) {
        (void)epoll_loop_stop(loop);
        return;
    }
    rc = epoll_loop_timer_start(loop, STOP_DEADLINE_MS, 0, on_stop_deadline, px, NULL);
    if (rc < 0) {
        fprintf(stderr, "tcp_proxy: epoll_loop_timer_start: %s\n", epoll_loop_strerror(rc));
        (void)epoll_loop_stop(loop);
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen-host", required_argument, NULL, 'l'},
        {"listen-port", required_argument, NULL, 'p'},
        {"upstream-host", required_argument, NULL, 'u'},
        {"upstream-port", required_argument, NULL, 'P'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    struct proxy px;
    struct pair *p;
    const char *listen_host = DEFAULT_LISTEN_HOST;
    long listen_port = DEFAULT_LISTEN_PORT;
    long v;
    bool have_upstream_port = false;
    int opt, rc, port, status = 1;

    setvbuf(stdout, NULL, _IOLBF, 0); /* one line at a time, even into a pipe */
    memset(&px, 0, sizeof px);
    px.upstream_host = DEFAULT_UPSTREAM_HOST;

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'l':
            listen_host = optarg;
            break;
        case 'p':
            if (!parse_num(optarg, 0, 65535, &listen_port)) {
                fprintf(stderr, "tcp_proxy: bad --listen-port '%s' (0..65535)\n", optarg);
                return 2;
            }
            break;
        case 'u':
            px.upstream_host = optarg;
            break;
        case 'P':
            if (!parse_num(optarg, 1, 65535, &v)) {
                fprintf(stderr, "tcp_proxy: bad --upstream-port '%s' (1..65535)\n", optarg);
                return 2;
            }
            px.upstream_port = (uint16_t)v;
            have_upstream_port = true;
            break;
        case 'v':
            px.verbose = true;
            break;
        case 'H':
            usage(stdout, argv[0]);
            return 0;
        default:
            usage(stderr, argv[0]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tcp_proxy: unexpected argument '%s'\n", argv[optind]);
        usage(stderr, argv[0]);
        return 2;
    }
    if (!have_upstream_port) {
        fprintf(stderr, "tcp_proxy: --upstream-port is required\n");
        usage(stderr, argv[0]);
        return 2;
    }

    /*
     * The blocking rule: a signal watched through the loop must be blocked in
     * every thread. This program has one thread; block them before anything else.
     */
    if ((rc = epoll_loop_signal_block(SIGINT)) < 0 || (rc = epoll_loop_signal_block(SIGTERM)) < 0) {
        fprintf(stderr, "tcp_proxy: epoll_loop_signal_block: %s\n", epoll_loop_strerror(rc));
        goto cleanup;
    }
    raise_fd_limit();

    rc = epoll_loop_new(&px.loop);
    if (rc < 0) {
        fprintf(stderr, "tcp_proxy: epoll_loop_new: %s\n", epoll_loop_strerror(rc));
        goto cleanup;
    }
    if ((rc = epoll_loop_signal_start(px.loop, SIGINT, on_signal, &px)) < 0 ||
        (rc = epoll_loop_signal_start(px.loop, SIGTERM, on_signal, &px)) < 0) {
        fprintf(stderr, "tcp_proxy: epoll_loop_signal_start: %s\n", epoll_loop_strerror(rc));
        goto cleanup;
    }
    rc = epoll_loop_tcp_listen(px.loop, listen_host, (uint16_t)listen_port, 0, &client_cbs, &px,
                               &px.listener);
    if (rc < 0) {
        fprintf(stderr, "tcp_proxy: cannot listen on %s:%ld: %s\n", listen_host, listen_port,
                epoll_loop_strerror(rc));
        goto cleanup;
    }
    rc = epoll_loop_listener_set_limits(px.listener, QUEUE_CAP, QUEUE_LOW);
    if (rc < 0) {
        fprintf(stderr, "tcp_proxy: epoll_loop_listener_set_limits: %s\n",
                epoll_loop_strerror(rc));
        goto cleanup;
    }
    port = epoll_loop_listener_port(px.listener);
    if (port < 0) {
        fprintf(stderr, "tcp_proxy: epoll_loop_listener_port: %s\n", epoll_loop_strerror(port));
        goto cleanup;
    }
    if (strchr(listen_host, ':'))
        printf("listening on [%s]:%d, forwarding to %s:%u\n", listen_host, port,
               px.upstream_host, (unsigned)px.upstream_port);
    else
        printf("listening on %s:%d, forwarding to %s:%u\n", listen_host, port, px.upstream_host,
               (unsigned)px.upstream_port);

    rc = epoll_loop_run(px.loop);
    if (rc < 0) {
        fprintf(stderr, "tcp_proxy: epoll_loop_run: %s\n", epoll_loop_strerror(rc));
        goto cleanup;
    }
    printf("stopped; pairs=%" PRIu64 " open=%" PRIu64 " errors=%" PRIu64 " bytes_up=%" PRIu64
           " bytes_down=%" PRIu64 " pauses=%" PRIu64 "\n",
           px.total, px.live, px.errors, px.bytes_up, px.bytes_down, px.pauses);
    status = 0;

cleanup:
    if (px.listener)
        (void)epoll_loop_listener_close(px.listener);
    if (px.loop) {
        /* Frees the connections still open, without calling their callbacks. */
        rc = epoll_loop_free(px.loop);
        if (rc < 0) {
            fprintf(stderr, "tcp_proxy: epoll_loop_free: %s\n", epoll_loop_strerror(rc));
            status = 1;
        }
    }
    while ((p = px.pairs) != NULL) {
        px.pairs = p->next;
        free_pair(p);
    }
    return status;
}
