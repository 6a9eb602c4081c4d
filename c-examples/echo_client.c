/*
 * echo_client: the seed tutorial's interactive echo client, on epoll-loop.
 *
 *     echo_client [--host HOST] [--port PORT]
 *
 * Prompts "Please input: ", reads a line from stdin, sends it (newline
 * included) and prints "data received by the client: <line>" once the whole
 * line has come back, then prompts again. It differs from the tutorial's
 * Python client where that one is wrong:
 *   - a line longer than one read is streamed: stdin is read in chunks, sent
 *     while the echo is read back, and the echo is printed as it arrives;
 *   - end of file on stdin ends the client with exit status 0;
 *   - a server that goes away (connection refused, reset, end of file before
 *     the echo is complete) gives a message on stderr and exit status 1;
 *   - it works from a pipe: `printf 'a\nb\n' | echo_client --port P`.
 *
 * The socket and stdin are watched by one epoll_loop. A regular file (or
 * /dev/null) cannot be polled: epoll_loop_register answers -EPERM, and the
 * client then reads such a stdin with plain blocking reads, which never wait
 * for long on a file.
 */
#include <epoll_loop.h>

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <fcntl.h>
#include <unistd.h>

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT "8888"
#define CHUNK 65536

struct client {
    epoll_loop *loop;
    int sock;
    int in_fd;
    bool in_pollable;  /* stdin can be watched by epoll (not a regular file) */
    bool in_watched;   /* stdin is registered on the loop right now */
    bool in_eof;
    bool out_armed;    /* the socket is watched for EPOLL_LOOP_OUT too */

    /* Bytes read from stdin and not sent yet (may hold the next lines too). */
    char in_buf[CHUNK];
    size_t in_off, in_len;

    /* The line being exchanged. */
    bool prompted;     /* "Please input: " printed for it */
    bool line_sent;    /* its last byte (newline, or end of input) is sent */
    uint64_t sent, received;
    char last_echoed;  /* last byte printed from the echo */

    bool done;
    int status;
    const char *host;
    const char *port;
};

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [--host HOST] [--port PORT]\n"
            "\n"
            "The seed tutorial's echo client: reads lines from stdin, sends each to the\n"
            "echo server and prints what comes back.\n"
            "\n"
            "  --host HOST  server address or name (default " DEFAULT_HOST ")\n"
            "  --port PORT  server port (default " DEFAULT_PORT ")\n"
            "  --help       show this help\n"
            "\n"
            "Exit status: 0 at end of input, 1 when the server cannot be reached or goes away.\n",
            prog);
}

/* Ends the client: `status` 0 for a clean end, 1 for a failure. */
static void finish(struct client *c, int status)
{
    c->done = true;
    c->status = status;
}

static void fail_server(struct client *c, const char *what, int err)
{
    if (err != 0)
        fprintf(stderr, "echo_client: %s (%s:%s): %s\n", what, c->host, c->port, strerror(err));
    else
        fprintf(stderr, "echo_client: %s (%s:%s)\n", what, c->host, c->port);
    finish(c, 1);
}

static void on_socket(epoll_loop *loop, int fd, uint32_t events, void *user_data);
static void on_stdin(epoll_loop *loop, int fd, uint32_t events, void *user_data);

/* Watches stdin for input, or stops watching it. */
static int watch_stdin(struct client *c, bool on)
{
    int rc;

    if (on == c->in_watched)
        return 0;
    if (on) {
        rc = epoll_loop_register(c->loop, c->in_fd, EPOLL_LOOP_IN, on_stdin, c);
        if (rc < 0)
            return rc;
    } else {
        rc = epoll_loop_unregister(c->loop, c->in_fd);
        if (rc < 0)
            return rc;
    }
    c->in_watched = on;
    return 0;
}

/* Adds EPOLL_LOOP_OUT to the socket's events while a send is waiting for room. */
static void arm_out(struct client *c, bool on)
{
    int rc;

    if (on == c->out_armed)
        return;
    rc = epoll_loop_modify(c->loop, c->sock, EPOLL_LOOP_IN | (on ? EPOLL_LOOP_OUT : 0));
    if (rc < 0) {
        fprintf(stderr, "echo_client: epoll_loop_modify: %s\n", epoll_loop_strerror(rc));
        finish(c, 1);
        return;
    }
    c->out_armed = on;
}

/* One read(2) of stdin into the (empty) input buffer. */
static void read_stdin(struct client *c)
{
    ssize_t n;

    c->in_off = 0;
    c->in_len = 0;
    n = read(c->in_fd, c->in_buf, sizeof c->in_buf);
    if (n > 0) {
        c->in_len = (size_t)n;
    } else if (n == 0) {
        c->in_eof = true;
    } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
        fprintf(stderr, "echo_client: reading stdin: %s\n", strerror(errno));
        finish(c, 1);
    }
}

/*
 * Moves the exchange forward as far as it can go without waiting: prompt, send
 * the line (or as much of it as has been read and the socket takes), and once
 * the whole echo is back start the next line. Called after every event.
 */
static void step(struct client *c)
{
    while (!c->done) {
        if (c->line_sent) {
            /* Waiting for the echo; stdin waits meanwhile. */
            if (watch_stdin(c, false) < 0) {
                finish(c, 1);
                return;
            }
            arm_out(c, false);
            if (c->received < c->sent)
                return;
            if (c->last_echoed != '\n')
                fputc('\n', stdout);
            fflush(stdout);
            c->prompted = false;
            c->line_sent = false;
            c->sent = 0;
            c->received = 0;
            c->last_echoed = 0;
            continue;
        }

        if (!c->prompted) {
            fputs("Please input: ", stdout);
            fflush(stdout);
            c->prompted = true;
        }

        if (c->in_len > 0) {
            const char *start = c->in_buf + c->in_off;
            const char *nl = memchr(start, '\n', c->in_len);
            size_t want = nl ? (size_t)(nl - start) + 1 : c->in_len;
            ssize_t n;

            if (watch_stdin(c, false) < 0) {
                finish(c, 1);
                return;
            }
            n = send(c->sock, start, want, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    arm_out(c, true);
                    return;
                }
                fail_server(c, "lost the connection to the server", errno);
                return;
            }
            c->in_off += (size_t)n;
            c->in_len -= (size_t)n;
            c->sent += (uint64_t)n;
            if (nl && (size_t)n == want)
                c->line_sent = true;
            continue;
        }

        arm_out(c, false);
        if (c->in_eof) {
            if (c->sent > 0) {
                /* The last line had no newline: it ends with the input. */
                c->line_sent = true;
                continue;
            }
            fputc('\n', stdout); /* end the prompt's line */
            fflush(stdout);
            finish(c, 0);
            return;
        }

        /* Need more input. */
        if (c->in_pollable) {
            int rc = watch_stdin(c, true);
            if (rc == 0)
                return;
            if (rc == -EPERM) {
                c->in_pollable = false; /* a regular file: read it directly */
            } else if (rc == -EBADF) {
                c->in_eof = true;       /* no stdin at all */
                continue;
            } else {
                fprintf(stderr, "echo_client: watching stdin: %s\n", epoll_loop_strerror(rc));
                finish(c, 1);
                return;
            }
        }
        read_stdin(c);
    }
}

static void on_stdin(epoll_loop *loop, int fd, uint32_t events, void *user_data)
{
    struct client *c = user_data;

    (void)loop;
    (void)fd;
    (void)events;
    if (c->in_len == 0 && !c->in_eof)
        read_stdin(c);
    step(c);
}

static void on_socket(epoll_loop *loop, int fd, uint32_t events, void *user_data)
{
    struct client *c = user_data;
    char buf[CHUNK];

    (void)loop;
    if (events & (EPOLL_LOOP_IN | EPOLL_LOOP_HUP | EPOLL_LOOP_ERR)) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            if (c->received == 0)
                fputs("data received by the client: ", stdout);
            fwrite(buf, 1, (size_t)n, stdout);
            c->received += (uint64_t)n;
            c->last_echoed = buf[n - 1];
        } else if (n == 0) {
            if (c->sent > c->received) {
                char what[160];
                snprintf(what, sizeof what,
                         "the server closed the connection before echoing the whole line"
                         " (%llu of %llu bytes came back)",
                         (unsigned long long)c->received, (unsigned long long)c->sent);
                fflush(stdout);
                fail_server(c, what, 0);
            } else {
                fail_server(c, "the server closed the connection", 0);
            }
            return;
        } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
            fflush(stdout);
            fail_server(c, "lost the connection to the server", errno);
            return;
        }
    }
    step(c);
}

/* Connects a blocking socket to host:port; returns the fd or -1 (message printed). */
static int connect_to(const char *host, const char *port)
{
    struct addrinfo hints, *res = NULL, *ai;
    int fd = -1, err = 0, rc;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "echo_client: cannot resolve %s:%s: %s\n", host, port, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        fprintf(stderr, "echo_client: cannot connect to %s:%s: %s%s\n", host, port, strerror(err),
                err == ECONNREFUSED ? " (is the echo server running?)" : "");
    return fd;
}

static int parse_port(const char *s)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 65535)
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
    static struct client c; /* holds a 64 KiB buffer: keep it off the stack */
    int opt, rc, flags, status = 1;

    c.sock = -1;
    c.in_fd = STDIN_FILENO;
    c.in_pollable = true;
    c.host = DEFAULT_HOST;
    c.port = DEFAULT_PORT;

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            c.host = optarg;
            break;
        case 'p':
            if (parse_port(optarg) < 0) {
                fprintf(stderr, "echo_client: bad port '%s' (1..65535)\n", optarg);
                return 2;
            }
            c.port = optarg;
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
        fprintf(stderr, "echo_client: unexpected argument '%s'\n", argv[optind]);
        usage(stderr, argv[0]);
        return 2;
    }

    c.sock = connect_to(c.host, c.port);
    if (c.sock < 0)
        goto cleanup;
    flags = fcntl(c.sock, F_GETFL);
    if (flags < 0 || fcntl(c.sock, F_SETFL, flags | O_NONBLOCK) < 0) {
        perror("echo_client: fcntl");
        goto cleanup;
    }

    rc = epoll_loop_new(&c.loop);
    if (rc < 0) {
        fprintf(stderr, "echo_client: epoll_loop_new: %s\n", epoll_loop_strerror(rc));
        goto cleanup;
    }
    /* Always watched for input, so a server that goes away is noticed at once. */
    rc = epoll_loop_register(c.loop, c.sock, EPOLL_LOOP_IN, on_socket, &c);
    if (rc < 0) {
        fprintf(stderr, "echo_client: epoll_loop_register: %s\n", epoll_loop_strerror(rc));
        goto cleanup;
    }

    step(&c);
    while (!c.done) {
        rc = epoll_loop_poll(c.loop, -1);
        if (rc < 0) {
            fprintf(stderr, "echo_client: epoll_loop_poll: %s\n", epoll_loop_strerror(rc));
            goto cleanup;
        }
    }
    status = c.status;

cleanup:
    fflush(stdout);
    if (c.loop) {
        if (c.in_watched)
            epoll_loop_unregister(c.loop, c.in_fd);
        epoll_loop_free(c.loop);
    }
    if (c.sock >= 0)
        close(c.sock);
    return status;
}
