/*
 * Shared bits of the benchmark's reference echo servers (the .c files beside it):
 * argument parsing, the listening socket, the fd limit, the "listening on" line.
 *
 * Every peer is single-threaded, listens on 127.0.0.1 at the port given as its
 * only argument (0: any free port), prints "listening on 127.0.0.1:PORT" once it
 * is listening, and runs until killed (SIGINT/SIGTERM end it).
 */
#ifndef BENCH_PEERS_COMMON_H
#define BENCH_PEERS_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes queued for one client above which the server stops reading from it. */
#define PEER_MAX_PENDING (256 * 1024)

/* Parses argv[1] as the port; exits with a usage line when it is not one. */
static inline int peer_port_arg(int argc, char **argv)
{
    char *end;
    long v;

    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT   (0 = any free port)\n", argv[0]);
        exit(2);
    }
    errno = 0;
    v = strtol(argv[1], &end, 10);
    if (errno != 0 || end == argv[1] || *end != '\0' || v < 0 || v > 65535) {
        fprintf(stderr, "%s: bad port '%s'\n", argv[0], argv[1]);
        exit(2);
    }
    return (int)v;
}

/* Raises the soft RLIMIT_NOFILE to the hard limit (thousands of idle clients). */
static inline void peer_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* A peer that goes away must not kill the server. */
    signal(SIGPIPE, SIG_IGN);
}

/*
 * A listening TCP socket on 127.0.0.1:port (SO_REUSEADDR, backlog SOMAXCONN);
 * non-blocking when `nonblock`. Returns the fd, or -1 after printing why.
 */
static inline int peer_listen(int port, int nonblock)
{
    struct sockaddr_in sa;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);

    if (fd < 0) {
        perror("socket");
        return -1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, SOMAXCONN) < 0) {
        perror("bind/listen");
        close(fd);
        return -1;
    }
    return fd;
}

/* Prints "listening on 127.0.0.1:PORT" for the bound port of `fd`. */
static inline int peer_announce(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;

    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        perror("getsockname");
        return -1;
    }
    printf("listening on 127.0.0.1:%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    return 0;
}

#endif
