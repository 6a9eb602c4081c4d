/*
 * echo_server: the seed tutorial's echo server as one library call.
 *
 *     echo_server [--host HOST] [--port PORT] [--backlog N] [--threads N]
 *                 [--max-connections N] [--idle-timeout MS] [--quiet]
 *
 * echo_server_start() does all the work on its own thread(s): accepting,
 * echoing with bounded memory per client, surviving fd exhaustion, idle
 * timeouts. This program raises its soft open-file limit to the hard limit
 * (so that thousands of clients fit), prints the server's log lines with a
 * timestamp, and waits for SIGINT or SIGTERM, then stops the server
 * gracefully and prints its counters.
 *
 * --port 0 picks a free port; the "listening on" line names the real one.
 */
#include <epoll_loop.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT 8888

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [options]\n"
            "\n"
            "The seed tutorial's echo server, started with one echo_server_start() call.\n"
            "\n"
            "  --host HOST            address to listen on (default " DEFAULT_HOST ")\n"
            "  --port PORT            port, 0 for any free one (default %d)\n"
            "  --backlog N            listen(2) backlog, 0 for SOMAXCONN (default: SOMAXCONN,\n"
            "                         the library's; the tutorial's 10 resets or stalls clients\n"
            "                         when many connect at once)\n"
            "  --threads N            loop threads sharing the port (default 1)\n"
            "  --max-connections N    close connections above N at once (default 0: no limit)\n"
            "  --idle-timeout MS      close connections idle for MS milliseconds (default 0: never)\n"
            "  --quiet                log only warnings and errors, not every connection and read\n"
            "  --help                 show this help\n"
            "\n"
            "Stops on SIGINT (Ctrl-C) or SIGTERM and prints the server's counters.\n",
            prog, DEFAULT_PORT);
}

static const char *level_name(int level)
{
    switch (level) {
    case EPOLL_LOOP_LOG_ERROR:
        return "ERROR";
    case EPOLL_LOOP_LOG_WARN:
        return "WARN";
    case EPOLL_LOOP_LOG_INFO:
        return "INFO";
    case EPOLL_LOOP_LOG_DEBUG:
        return "DEBUG";
    default:
        return "LOG";
    }
}

/*
 * Prints one log line with a timestamp and level. Called from the server's
 * loop thread(s) and from main; one printf per line keeps lines whole when
 * several threads log at once.
 */
static void print_log(int level, const char *message)
{
    struct timespec ts;
    struct tm tm;
    char when[32] = "?";

    if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && localtime_r(&ts.tv_sec, &tm))
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    else
        ts.tv_nsec = 0;
    printf("%s.%03ld %-5s %s\n", when, ts.tv_nsec / 1000000L, level_name(level), message);
}

/* The server's log callback (echo_server_config.log). */
static void on_server_log(int level, const char *message, void *user_data)
{
    (void)user_data;
    /*
     * main() prints the start line itself once echo_server_port() has told it
     * the real port (the line scripts and tests read); the library's own copy
     * would only repeat it.
     */
    if (strncmp(message, "server started successfully", 27) == 0)
        return;
    print_log(level, message);
}

static void logf_main(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void logf_main(int level, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    print_log(level, msg);
}

/* Raises the soft RLIMIT_NOFILE to the hard limit, and says what it did. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    rlim_t old;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        logf_main(EPOLL_LOOP_LOG_WARN, "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return;
    }
    if (rl.rlim_cur == rl.rlim_max) {
        logf_main(EPOLL_LOOP_LOG_INFO, "open file limit (RLIMIT_NOFILE): %llu, already the hard limit",
                  (unsigned long long)rl.rlim_cur);
        return;
    }
    old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        logf_main(EPOLL_LOOP_LOG_WARN, "could not raise the open file limit from %llu to %llu: %s",
                  (unsigned long long)old, (unsigned long long)rl.rlim_max, strerror(errno));
        return;
    }
    logf_main(EPOLL_LOOP_LOG_INFO, "raised the open file limit (RLIMIT_NOFILE) from %llu to %llu",
              (unsigned long long)old, (unsigned long long)rl.rlim_cur);
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

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"backlog", required_argument, NULL, 'b'},
        {"threads", required_argument, NULL, 't'},
        {"max-connections", required_argument, NULL, 'm'},
        {"idle-timeout", required_argument, NULL, 'i'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    echo_server_config cfg;
    echo_server_stats st;
    echo_server *srv = NULL;
    sigset_t stop_signals;
    const char *host = DEFAULT_HOST;
    long v;
    int opt, rc, port, signo = 0, status = 1;

    setvbuf(stdout, NULL, _IOLBF, 0); /* one line at a time, even into a pipe */

    memset(&cfg, 0, sizeof cfg);
    echo_server_config_init(&cfg);
    cfg.host = DEFAULT_HOST;
    cfg.port = DEFAULT_PORT;
    cfg.log = on_server_log;
    cfg.log_level = EPOLL_LOOP_LOG_DEBUG; /* like the tutorial: every connection and read */

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            host = optarg;
            cfg.host = optarg;
            break;
        case 'p':
            if (!parse_num(optarg, 0, 65535, &v)) {
                fprintf(stderr, "echo_server: bad --port '%s' (0..65535)\n", optarg);
                return 2;
            }
            cfg.port = (uint16_t)v;
            break;
        case 'b':
            if (!parse_num(optarg, 0, INT_MAX, &v)) {
                fprintf(stderr, "echo_server: bad --backlog '%s'\n", optarg);
                return 2;
            }
            cfg.backlog = (int)v;
            break;
        case 't':
            if (!parse_num(optarg, 1, 1024, &v)) {
                fprintf(stderr, "echo_server: bad --threads '%s' (1..1024)\n", optarg);
                return 2;
            }
            cfg.threads = (uint32_t)v;
            break;
        case 'm':
            if (!parse_num(optarg, 0, INT_MAX, &v)) {
                fprintf(stderr, "echo_server: bad --max-connections '%s'\n", optarg);
                return 2;
            }
            cfg.max_connections = (uint32_t)v;
            break;
        case 'i':
            if (!parse_num(optarg, 0, INT_MAX, &v)) {
                fprintf(stderr, "echo_server: bad --idle-timeout '%s' (milliseconds)\n", optarg);
                return 2;
            }
            cfg.idle_timeout_ms = (uint32_t)v;
            break;
        case 'q':
            cfg.log_level = EPOLL_LOOP_LOG_WARN;
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
        fprintf(stderr, "echo_server: unexpected argument '%s'\n", argv[optind]);
        usage(stderr, argv[0]);
        return 2;
    }

    /*
     * Block the stop signals before any thread exists, so every server thread
     * inherits the mask and sigwait() below is the only place they arrive.
     */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    rc = pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    if (rc != 0) {
        fprintf(stderr, "echo_server: pthread_sigmask: %s\n", strerror(rc));
        goto cleanup;
    }

    raise_fd_limit();

    rc = echo_server_start(&cfg, &srv);
    if (rc < 0) {
        fprintf(stderr, "echo_server: cannot start on %s:%u: %s\n", host, (unsigned)cfg.port,
                epoll_loop_strerror(rc));
        goto cleanup;
    }
    port = echo_server_port(srv);
    if (port < 0) {
        fprintf(stderr, "echo_server: echo_server_port: %s\n", epoll_loop_strerror(port));
        goto cleanup;
    }
    if (strchr(host, ':'))
        printf("server started successfully, listening on [%s]:%d\n", host, port);
    else
        printf("server started successfully, listening on %s:%d\n", host, port);

    do {
        rc = sigwait(&stop_signals, &signo);
    } while (rc == EINTR);
    if (rc != 0) {
        fprintf(stderr, "echo_server: sigwait: %s\n", strerror(rc));
        goto cleanup;
    }
    logf_main(EPOLL_LOOP_LOG_INFO, "%s received, stopping", signo == SIGINT ? "SIGINT" : "SIGTERM");

    memset(&st, 0, sizeof st);
    rc = echo_server_get_stats(srv, &st);
    if (rc < 0)
        fprintf(stderr, "echo_server: echo_server_get_stats: %s\n", epoll_loop_strerror(rc));
    rc = echo_server_stop(srv);
    srv = NULL;
    if (rc < 0) {
        fprintf(stderr, "echo_server: echo_server_stop: %s\n", epoll_loop_strerror(rc));
        goto cleanup;
    }
    printf("server stopped; stats: accepted=%" PRIu64 " active=%" PRIu64 " closed=%" PRIu64
           " rejected=%" PRIu64 " bytes_in=%" PRIu64 " bytes_out=%" PRIu64
           " idle_timeouts=%" PRIu64 " accept_errors=%" PRIu64 "\n",
           st.accepted, st.active, st.closed, st.rejected, st.bytes_in, st.bytes_out,
           st.idle_timeouts, st.accept_errors);
    status = 0;

cleanup:
    if (srv)
        echo_server_stop(srv);
    return status;
}
