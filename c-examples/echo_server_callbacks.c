/*
 * echo_server_callbacks: the seed tutorial's epoll echo server, written on
 * epoll-loop's callback API.
 *
 *     echo_server_callbacks [--host HOST] [--port PORT]
 *
 * The algorithm is the tutorial's: the listening socket is registered for
 * EPOLL_LOOP_IN and accepts; a client's EPOLL_LOOP_IN reads and queues the data
 * and switches the fd to EPOLL_LOOP_OUT with epoll_loop_modify; its
 * EPOLL_LOOP_OUT writes the queue and switches back to EPOLL_LOOP_IN once the
 * queue is empty. Same messages, same 10 s poll timeout. It differs where the
 * tutorial is wrong:
 *   - accept loops until EAGAIN (the socket is non-blocking);
 *   - a partial write keeps the unwritten rest queued;
 *   - an empty read is end of file: what is queued is sent, then the socket is
 *     closed; EPOLL_LOOP_HUP / EPOLL_LOOP_ERR and errors close at once;
 *   - the queue is bounded: above 256 KiB the fd is watched for
 *     EPOLL_LOOP_OUT only, so a client that never reads cannot grow the server;
 *   - running out of fds (EMFILE) does not spin: a reserve fd is closed, the
 *     pending connection accepted and closed, and the reserve reopened (libuv's
 *     trick); failing that, accepting pauses for 100 ms;
 *   - sends use MSG_NOSIGNAL, so a client's reset cannot kill the server;
 *   - SIGINT / SIGTERM stop it cleanly, freeing everything.
 *
 * --port 0 picks a free port; the start line names the real one.
 */
#include <epoll_loop.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT "8888"
#define BACKLOG 10                 /* the tutorial's listen(10) */
#define POLL_TIMEOUT_MS 10000      /* the tutorial's timeout = 10 */
#define READ_SIZE 65536
#define MAX_QUEUED (256 * 1024)    /* stop reading a client above this many queued bytes */
#define ACCEPT_BACKOFF_MS 100
#define PREVIEW 48                 /* bytes of received data shown in the log */

struct chunk {
    struct chunk *next;
    size_t len;
    char data[];
};

struct server;

struct conn {
    struct server *srv;
    struct conn *prev, *next;
    int fd;
    uint32_t events;           /* what the fd is registered for now */
    bool eof;                  /* the client sent end of file */
    struct chunk *head, *tail; /* data to echo, oldest first */
    size_t head_off;           /* bytes of `head` already sent */
    size_t queued;             /* bytes in the queue, not yet sent */
    char peer[64];
};

struct server {
    epoll_loop *loop;
    int listen_fd;
    bool listening;            /* listen_fd is registered */
    int reserve_fd;            /* spare fd, given up to accept under EMFILE */
    struct conn *conns;
    unsigned long nconns;
    char buf[READ_SIZE];       /* one read buffer for every connection */
};

static volatile sig_atomic_t g_stop;
static epoll_loop *g_loop;     /* for the signal handler; set while handlers are installed */

static void on_signal(int signo)
{
    int saved = errno;

    (void)signo;
    g_stop = 1;
    if (g_loop)
        epoll_loop_wake(g_loop); /* async-signal-safe */
    errno = saved;
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [--host HOST] [--port PORT]\n"
            "\n"
            "The seed tutorial's epoll echo server on epoll-loop's callback API.\n"
            "\n"
            "  --host HOST  address to listen on (default " DEFAULT_HOST ")\n"
            "  --port PORT  port to listen on, 0 for any free one (default " DEFAULT_PORT ")\n"
            "  --help       show this help\n"
            "\n"
            "Stops on SIGINT (Ctrl-C) or SIGTERM.\n",
            prog);
}

/* "host:port", with brackets around an IPv6 address. */
static void format_addr(const struct sockaddr *sa, socklen_t len, char *out, size_t outlen)
{
    char host[NI_MAXHOST], serv[NI_MAXSERV];

    if (getnameinfo(sa, len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, outlen, "?");
        return;
    }
    if (strchr(host, ':'))
        snprintf(out, outlen, "[%s]:%s", host, serv);
    else
        snprintf(out, outlen, "%s:%s", host, serv);
}

/* A short, printable preview of received bytes, for the log. */
static void preview(const char *data, size_t len, char *out, size_t outlen)
{
    size_t i, o = 0;

    for (i = 0; i < len && i < PREVIEW && o + 5 < outlen; i++) {
        unsigned char ch = (unsigned char)data[i];
        if (ch == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (ch == '\\' || ch == '"') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch >= 0x20 && ch < 0x7f) {
            out[o++] = (char)ch;
        } else {
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", ch);
        }
    }
    if (i < len && o + 4 < outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

static void on_client(epoll_loop *loop, int fd, uint32_t events, void *user_data);
static void on_listener(epoll_loop *loop, int fd, uint32_t events, void *user_data);

static void conn_close(struct conn *c, const char *why)
{
    struct server *srv = c->srv;
    struct chunk *ch, *next;

    epoll_loop_unregister(srv->loop, c->fd);
    close(c->fd);
    if (why)
        printf("client close: %s (%s)\n", c->peer, why);
    else
        printf("client close: %s\n", c->peer);
    for (ch = c->head; ch; ch = next) {
        next = ch->next;
        free(ch);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
    if (--srv->nconns == 0 && !g_stop)
        printf("waiting for active connection ......\n");
}

/*
 * Registers the fd for what it needs now: reading while the queue is at most
 * MAX_QUEUED bytes (and the client has not sent EOF), writing while anything is
 * queued. Returns false (and closes) if the loop refuses.
 */
static bool conn_update(struct conn *c)
{
    uint32_t want = 0;
    int rc;

    if (!c->eof && c->queued <= MAX_QUEUED)
        want |= EPOLL_LOOP_IN;
    if (c->queued > 0)
        want |= EPOLL_LOOP_OUT;
    if (want == c->events)
        return true;
    rc = epoll_loop_modify(c->srv->loop, c->fd, want);
    if (rc < 0) {
        fprintf(stderr, "echo_server_callbacks: epoll_loop_modify: %s\n", epoll_loop_strerror(rc));
        conn_close(c, "internal error");
        return false;
    }
    c->events = want;
    return true;
}

/* EPOLL_LOOP_IN: read once, queue what came, and watch for EPOLL_LOOP_OUT. */
static bool conn_read(struct conn *c)
{
    struct server *srv = c->srv;
    struct chunk *ch;
    char shown[PREVIEW * 4 + 8];
    ssize_t n;

    n = recv(c->fd, srv->buf, sizeof srv->buf, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return true;
        conn_close(c, strerror(errno));
        return false;
    }
    if (n == 0) {
        /* End of file: echo what is queued, then close. */
        c->eof = true;
        if (c->queued == 0) {
            conn_close(c, NULL);
            return false;
        }
        return conn_update(c);
    }
    preview(srv->buf, (size_t)n, shown, sizeof shown);
    printf("received data: \"%s\" (%zd bytes) client: %s\n", shown, n, c->peer);
    ch = malloc(sizeof *ch + (size_t)n);
    if (!ch) {
        conn_close(c, "out of memory");
        return false;
    }
    ch->next = NULL;
    ch->len = (size_t)n;
    memcpy(ch->data, srv->buf, (size_t)n);
    if (c->tail)
        c->tail->next = ch;
    else
        c->head = ch;
    c->tail = ch;
    c->queued += (size_t)n;
    return conn_update(c);
}

/* EPOLL_LOOP_OUT: write the queue; what the socket does not take stays queued. */
static bool conn_write(struct conn *c)
{
    while (c->head) {
        struct chunk *ch = c->head;
        ssize_t n = send(c->fd, ch->data + c->head_off, ch->len - c->head_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_close(c, strerror(errno));
            return false;
        }
        c->head_off += (size_t)n;
        c->queued -= (size_t)n;
        if (c->head_off < ch->len)
            break; /* partial write: the socket is full */
        c->head = ch->next;
        if (!c->head)
            c->tail = NULL;
        c->head_off = 0;
        free(ch);
    }
    if (c->queued == 0 && c->eof) {
        conn_close(c, NULL);
        return false;
    }
    return conn_update(c);
}

static void on_client(epoll_loop *loop, int fd, uint32_t events, void *user_data)
{
    struct conn *c = user_data;

    (void)loop;
    (void)fd;
    if (events & EPOLL_LOOP_ERR) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        conn_close(c, err ? strerror(err) : "socket error");
        return;
    }
    if (events & EPOLL_LOOP_HUP) {
        conn_close(c, "hang-up");
        return;
    }
    if ((events & EPOLL_LOOP_IN) && !conn_read(c))
        return;
    if (events & EPOLL_LOOP_OUT)
        conn_write(c);
}

static void on_backoff(epoll_loop *loop, uint64_t timer_id, void *user_data)
{
    struct server *srv = user_data;
    int rc;

    (void)timer_id;
    rc = epoll_loop_register(loop, srv->listen_fd, EPOLL_LOOP_IN, on_listener, srv);
    if (rc < 0)
        fprintf(stderr, "echo_server_callbacks: epoll_loop_register: %s\n", epoll_loop_strerror(rc));
    else
        srv->listening = true;
}

/* Stops accepting for ACCEPT_BACKOFF_MS, so that an accept error cannot spin. */
static void accept_backoff(struct server *srv)
{
    int rc = epoll_loop_timer_start(srv->loop, ACCEPT_BACKOFF_MS, 0, on_backoff, srv, NULL);
    if (rc < 0) {
        fprintf(stderr, "echo_server_callbacks: epoll_loop_timer_start: %s\n",
                epoll_loop_strerror(rc));
        return;
    }
    epoll_loop_unregister(srv->loop, srv->listen_fd);
    srv->listening = false;
}

/*
 * EMFILE/ENFILE: give up the reserve fd to accept one connection and close it at
 * once, so that it leaves the backlog instead of waking every poll. Returns 1
 * when one was dropped, 0 when none was waiting, -1 when there is no reserve fd.
 */
static int drop_one(struct server *srv)
{
    int fd, err;

    if (srv->reserve_fd < 0)
        return -1;
    close(srv->reserve_fd);
    fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    err = errno;
    if (fd >= 0) {
        close(fd);
        printf("too many open files: a new connection was closed at once\n");
    }
    srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0)
        return 1;
    return (err == EAGAIN || err == EWOULDBLOCK) ? 0 : -1;
}

static void on_listener(epoll_loop *loop, int fd, uint32_t events, void *user_data)
{
    struct server *srv = user_data;

    (void)events;
    for (;;) {
        struct sockaddr_storage addr;
        socklen_t len = sizeof addr;
        struct conn *c;
        int cfd, rc;

        cfd = accept4(fd, (struct sockaddr *)&addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                int dropped = drop_one(srv);
                if (dropped > 0)
                    continue;
                if (dropped == 0)
                    return;
                errno = EMFILE;
            }
            fprintf(stderr, "echo_server_callbacks: accept: %s\n", strerror(errno));
            accept_backoff(srv);
            return;
        }
        c = calloc(1, sizeof *c);
        if (!c) {
            close(cfd);
            fprintf(stderr, "echo_server_callbacks: out of memory\n");
            continue;
        }
        c->srv = srv;
        c->fd = cfd;
        format_addr((struct sockaddr *)&addr, len, c->peer, sizeof c->peer);
        rc = epoll_loop_register(loop, cfd, EPOLL_LOOP_IN, on_client, c);
        if (rc < 0) {
            fprintf(stderr, "echo_server_callbacks: epoll_loop_register: %s\n",
                    epoll_loop_strerror(rc));
            close(cfd);
            free(c);
            continue;
        }
        c->events = EPOLL_LOOP_IN;
        c->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = c;
        srv->conns = c;
        srv->nconns++;
        printf("new connection: %s\n", c->peer);
    }
}

/* Opens the non-blocking listening socket; returns the fd or -1 (message printed). */
static int listen_on(const char *host, const char *port, char *where, size_t wherelen)
{
    struct addrinfo hints, *res = NULL, *ai;
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    int fd = -1, err = 0, rc, one = 1;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "echo_server_callbacks: cannot resolve %s:%s: %s\n", host, port,
                gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
            bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, BACKLOG) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fprintf(stderr, "echo_server_callbacks: cannot listen on %s:%s: %s\n", host, port,
                strerror(err));
        return -1;
    }
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0)
        format_addr((struct sockaddr *)&bound, blen, where, wherelen);
    else
        snprintf(where, wherelen, "%s:%s", host, port);
    return fd;
}

static int parse_port(const char *s)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0 || v > 65535)
        return -1;
    return (int)v;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    const char *host = DEFAULT_HOST, *port = DEFAULT_PORT;
    struct server *srv = NULL;
    struct sigaction sa;
    sigset_t stop_signals;
    bool handlers = false;
    char where[NI_MAXHOST + NI_MAXSERV + 4];
    int opt, rc, status = 1;

    setvbuf(stdout, NULL, _IOLBF, 0); /* one line at a time, even into a pipe */

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            host = optarg;
            break;
        case 'p':
            if (parse_port(optarg) < 0) {
                fprintf(stderr, "echo_server_callbacks: bad port '%s' (0..65535)\n", optarg);
                return 2;
            }
            port = optarg;
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
        fprintf(stderr, "echo_server_callbacks: unexpected argument '%s'\n", argv[optind]);
        usage(stderr, argv[0]);
        return 2;
    }

    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);

    srv = calloc(1, sizeof *srv);
    if (!srv) {
        fprintf(stderr, "echo_server_callbacks: out of memory\n");
        goto cleanup;
    }
    srv->listen_fd = -1;
    srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

    srv->listen_fd = listen_on(host, port, where, sizeof where);
    if (srv->listen_fd < 0)
        goto cleanup;

    rc = epoll_loop_new(&srv->loop);
    if (rc < 0) {
        fprintf(stderr, "echo_server_callbacks: epoll_loop_new: %s\n", epoll_loop_strerror(rc));
        goto cleanup;
    }
    rc = epoll_loop_register(srv->loop, srv->listen_fd, EPOLL_LOOP_IN, on_listener, srv);
    if (rc < 0) {
        fprintf(stderr, "echo_server_callbacks: epoll_loop_register: %s\n", epoll_loop_strerror(rc));
        goto cleanup;
    }
    srv->listening = true;

    g_loop = srv->loop;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) {
        perror("echo_server_callbacks: sigaction");
        goto cleanup;
    }
    handlers = true;

    printf("server started successfully, listening on %s\n", where);
    printf("waiting for active connection ......\n");
    while (!g_stop) {
        rc = epoll_loop_poll(srv->loop, POLL_TIMEOUT_MS);
        if (rc < 0) {
            fprintf(stderr, "echo_server_callbacks: epoll_loop_poll: %s\n", epoll_loop_strerror(rc));
            goto cleanup;
        }
        if (rc == 0 && !g_stop) {
            printf("epoll times out and no active connections are available. Round Robin again ......\n");
            printf("waiting for active connection ......\n");
        }
    }
    printf("server stopping: closing %lu connection(s)\n", srv->nconns);
    status = 0;

cleanup:
    if (handlers) {
        /* No handler may touch the loop once it is being freed. */
        sigprocmask(SIG_BLOCK, &stop_signals, NULL);
        g_loop = NULL;
    }
    if (srv) {
        while (srv->conns)
            conn_close(srv->conns, "server stopping");
        if (srv->loop) {
            if (srv->listening)
                epoll_loop_unregister(srv->loop, srv->listen_fd);
            epoll_loop_free(srv->loop);
        }
        if (srv->listen_fd >= 0)
            close(srv->listen_fd);
        if (srv->reserve_fd >= 0)
            close(srv->reserve_fd);
        free(srv);
    }
    if (status == 0)
        printf("server stopped\n");
    return status;
}
