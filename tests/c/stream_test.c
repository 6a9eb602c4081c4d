/*
 * stream_test.c: the stream layer, signals and posting, driven from C.
 *
 * Built and run by tests/stream.rs against the shared library under
 * AddressSanitizer + UBSan (LeakSanitizer included where it works), so that
 * the C side of each feature is checked for memory errors and leaks:
 *
 *     stream_test stream    connections: echo round trip, callback order,
 *                           refused connect, abort, half-open, closing the
 *                           listener inside on_open, reconnecting from
 *                           on_close, a paused connection keeping its unread
 *                           bytes past EPOLLHUP, freeing a loop with open
 *                           connections and a pending on_close
 *     stream_test posts     8 threads x 10000 posts: all run, in order per
 *                           thread, on the loop thread
 *     stream_test signals   blocks SIGUSR1 in main before anything else, prints
 *                           "ready pid=N", then counts SIGUSR1 sent by another
 *                           process (printing "signal N" for each) until 3
 *
 * C99, -Wall -Wextra -Wpedantic -Werror, goto-cleanup style. Prints one line
 * per failed check and "N passed, N failed"; exits non-zero on any failure.
 * Every wait is bounded (alarm() as a last resort).
 */
#include "epoll_loop.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>

/* ------------------------------------------------------------------ harness */

static int g_check_failures;
static int g_tests_passed;
static int g_tests_failed;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            g_check_failures++;                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

#define CHECK_RC(expr, want)                                                         \
    do {                                                                             \
        int got_ = (expr);                                                           \
        int want_ = (want);                                                          \
        if (got_ != want_) {                                                         \
            g_check_failures++;                                                      \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n",        \
                    __FILE__, __LINE__, #expr, got_, epoll_loop_strerror(got_),      \
                    want_, epoll_loop_strerror(want_));                              \
        }                                                                            \
    } while (0)

#define REQUIRE(cond)                                                                \
    do {                                                                             \
        if (!(cond)) {                                                               \
            g_check_failures++;                                                      \
            fprintf(stderr, "%s:%d: required: %s\n", __FILE__, __LINE__, #cond);     \
            goto cleanup;                                                            \
        }                                                                            \
    } while (0)

static void run_test(const char *name, void (*fn)(void))
{
    g_check_failures = 0;
    fn();
    if (g_check_failures == 0) {
        g_tests_passed++;
    } else {
        g_tests_failed++;
        fprintf(stderr, "FAILED: %s (%d failed checks)\n", name, g_check_failures);
    }
}

#define RUN(fn) run_test(#fn, fn)

static int report(void)
{
    printf("%d passed, %d failed\n", g_tests_passed, g_tests_failed);
    return g_tests_failed == 0 ? 0 : 1;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Number of open fds, from /proc/self/fd (the directory's own fd excluded). */
static int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n - 1;
}

/* Polls `loop` until `*flag` is non-zero or `limit_ms` passed; returns *flag. */
static int poll_until(epoll_loop *loop, const int *flag, uint64_t limit_ms)
{
    uint64_t deadline = now_ms() + limit_ms;

    while (!*flag && now_ms() < deadline) {
        if (epoll_loop_poll(loop, 50) < 0)
            break;
    }
    return *flag;
}

/* ------------------------------------------------------------------ connections */

enum { EV_OPEN = 1, EV_DATA, EV_EOF, EV_DRAIN, EV_CLOSE };

/* What one connection's callbacks saw. */
struct rec {
    int events[64]; /* EV_* in order; repeats of EV_DATA collapsed */
    int nevents;
    int opens, closes, drains, eofs;
    int close_error;
    int closed; /* on_close ran */
    int handle_ok_in_close; /* the handle still answered inside on_close */
    epoll_loop_conn *conn;
    unsigned char *data; /* what arrived */
    size_t len, cap;
    int echo;           /* write back what arrives */
    size_t close_after; /* close once this many bytes arrived (0: never) */
};

static void rec_event(struct rec *r, int ev)
{
    if (ev == EV_DATA && r->nevents > 0 && r->events[r->nevents - 1] == EV_DATA)
        return;
    if (r->nevents < (int)(sizeof r->events / sizeof r->events[0]))
        r->events[r->nevents++] = ev;
}

static void rec_free(struct rec *r)
{
    free(r->data);
    r->data = NULL;
}

static void cb_open(epoll_loop_conn *c, void *ud)
{
    struct rec *r = ud;

    r->conn = c;
    r->opens++;
    rec_event(r, EV_OPEN);
}

static void cb_data(epoll_loop_conn *c, const uint8_t *buf, size_t len, void *ud)
{
    struct rec *r = ud;

    if (!buf) {
        r->eofs++;
        rec_event(r, EV_EOF);
        return;
    }
    rec_event(r, EV_DATA);
    if (r->len + len > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        unsigned char *p;

        while (cap < r->len + len)
            cap *= 2;
        p = realloc(r->data, cap);
        if (!p) {
            fprintf(stderr, "out of memory\n");
            abort();
        }
        r->data = p;
        r->cap = cap;
    }
    memcpy(r->data + r->len, buf, len);
    r->len += len;
    if (r->echo && epoll_loop_conn_write(c, buf, len) != 0)
        fprintf(stderr, "echo write failed\n");
    if (r->close_after && r->len >= r->close_after) {
        r->close_after = 0;
        if (epoll_loop_conn_close(c) != 0)
            fprintf(stderr, "close failed\n");
    }
}

static void cb_drain(epoll_loop_conn *c, void *ud)
{
    struct rec *r = ud;

    (void)c;
    r->drains++;
    rec_event(r, EV_DRAIN);
}

static void cb_close(epoll_loop_conn *c, int error, void *ud)
{
    struct rec *r = ud;

    r->closes++;
    r->close_error = error;
    r->closed = 1;
    rec_event(r, EV_CLOSE);
    /* The handle is still valid here: calls answer -EPIPE, not a crash or -EINVAL. */
    r->handle_ok_in_close = epoll_loop_conn_get_user_data(c) == ud &&
                            epoll_loop_conn_write(c, "x", 1) == -EPIPE &&
                            epoll_loop_conn_close(c) == -EPIPE;
}

static const epoll_loop_conn_callbacks rec_cbs = {cb_open, cb_data, cb_drain, cb_close};

/* A listener on 127.0.0.1, port 0; returns its port or 0. */
static int listen_any(epoll_loop *loop, struct rec *srv, epoll_loop_listener **out)
{
    int rc = epoll_loop_tcp_listen(loop, "127.0.0.1", 0, 0, &rec_cbs, srv, out);

    if (rc != 0)
        return 0;
    rc = epoll_loop_listener_port(*out);
    return rc > 0 ? rc : 0;
}

/* Echo round trip: data written before on_open is queued; order and exactly-once. */
static void test_echo_round_trip(void)
{
    struct rec srv, cli;
    epoll_loop *loop = NULL;
    epoll_loop_listener *l = NULL;
    epoll_loop_conn *c = NULL;
    unsigned char *msg = NULL;
    size_t i, n = 300 * 1024;
    int port, rc;

    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    srv.echo = 1;
    cli.close_after = n;
    REQUIRE(epoll_loop_new(&loop) == 0);
    port = listen_any(loop, &srv, &l);
    REQUIRE(port > 0);
    REQUIRE(epoll_loop_tcp_connect(loop, "127.0.0.1", (uint16_t)port, &rec_cbs, &cli, &c) == 0);
    REQUIRE(c != NULL);
    msg = malloc(n);
    REQUIRE(msg != NULL);
    for (i = 0; i < n; i++)
        msg[i] = (unsigned char)(i * 7 + i / 251);
    rc = epoll_loop_conn_write(c, msg, n); /* before on_open: queued */
    CHECK_RC(rc, 0);
    CHECK(cli.opens == 0);
    poll_until(loop, &cli.closed, 5000);
    poll_until(loop, &srv.closed, 5000);
    CHECK(cli.len == n && cli.data && memcmp(cli.data, msg, n) == 0);
    CHECK(srv.len == n);
    CHECK(cli.opens == 1 && cli.closes == 1 && cli.close_error == 0);
    CHECK(srv.opens == 1 && srv.closes == 1 && srv.close_error == 0);
    /* open first, close last; data and drains (the 300 KiB queued) in between */
    CHECK(cli.nevents >= 3 && cli.events[0] == EV_OPEN && cli.events[cli.nevents - 1] == EV_CLOSE);
    CHECK(cli.drains == 1);
    CHECK(srv.nevents == 3 && srv.events[0] == EV_OPEN && srv.events[1] == EV_DATA &&
          srv.events[2] == EV_CLOSE);
    CHECK(cli.handle_ok_in_close && srv.handle_ok_in_close);
    /* nothing after on_close */
    epoll_loop_poll(loop, 50);
    CHECK(cli.closes == 1 && srv.closes == 1);

cleanup:
    free(msg);
    if (l)
        CHECK_RC(epoll_loop_listener_close(l), 0);
    if (loop)
        CHECK_RC(epoll_loop_free(loop), 0);
    rec_free(&srv);
    rec_free(&cli);
}

static void test_refused_connect(void)
{
    struct rec srv, cli;
    epoll_loop *loop = NULL;
    epoll_loop_listener *l = NULL;
    epoll_loop_conn *c = NULL;
    int port;

    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    REQUIRE(epoll_loop_new(&loop) == 0);
    port = listen_any(loop, &srv, &l);
    REQUIRE(port > 0);
    CHECK_RC(epoll_loop_listener_close(l), 0); /* the port is free again */
    l = NULL;
    REQUIRE(epoll_loop_tcp_connect(loop, NULL, (uint16_t)port, &rec_cbs, &cli, &c) == 0);
    CHECK(poll_until(loop, &cli.closed, 5000));
    CHECK(cli.opens == 0 && cli.closes == 1);
    CHECK_RC(cli.close_error, -ECONNREFUSED);
    CHECK(cli.handle_ok_in_close);

cleanup:
    if (loop)
        CHECK_RC(epoll_loop_free(loop), 0);
    rec_free(&srv);
    rec_free(&cli);
}

/* abort: -ECONNABORTED here, -ECONNRESET at the peer; -EPIPE before it is reported. */
static void test_abort(void)
{
    struct rec srv, cli;
    epoll_loop *loop = NULL;
    epoll_loop_listener *l = NULL;
    epoll_loop_conn *c = NULL;
    int port;

    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    REQUIRE(epoll_loop_new(&loop) == 0);
    port = listen_any(loop, &srv, &l);
    REQUIRE(port > 0);
    REQUIRE(epoll_loop_tcp_connect(loop, NULL, (uint16_t)port, &rec_cbs, &cli, &c) == 0);
    CHECK(poll_until(loop, &cli.opens, 5000));
    CHECK(poll_until(loop, &srv.opens, 5000));
    CHECK_RC(epoll_loop_conn_write(c, "abc", 3), 0);
    CHECK_RC(epoll_loop_conn_abort(c), 0);
    CHECK(cli.closes == 0); /* reported from the loop, not from inside abort */
    CHECK_RC(epoll_loop_conn_write(c, "abc", 3), -EPIPE);
    CHECK_RC(epoll_loop_conn_close(c), -EPIPE);
    CHECK_RC(epoll_loop_conn_shutdown(c), -EPIPE);
    CHECK_RC(epoll_loop_conn_abort(c), -EPIPE);
    CHECK(poll_until(loop, &cli.closed, 5000));
    CHECK_RC(cli.close_error, -ECONNABORTED);
    CHECK(poll_until(loop, &srv.closed, 5000));
    CHECK_RC(srv.close_error, -ECONNRESET);
    CHECK(cli.closes == 1 && srv.closes == 1);

cleanup:
    if (l)
        CHECK_RC(epoll_loop_listener_close(l), 0);
    if (loop)
        CHECK_RC(epoll_loop_free(loop), 0);
    rec_free(&srv);
    rec_free(&cli);
}

/* Freeing a loop with open connections, queued bytes and a pending on_close:
 * every connection gets its on_close from inside the free (-ECANCELED, or the
 * status it was closed with), nothing leaks (LeakSanitizer), no fd stays open. */
static void test_free_loop_with_open_connections(void)
{
    struct rec srv, cli, cli2;
    epoll_loop *loop = NULL;
    epoll_loop_listener *l = NULL;
    epoll_loop_conn *c = NULL, *c2 = NULL;
    static unsigned char big[512 * 1024];
    int port, fds_before;
    uint64_t deadline;

    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    memset(&cli2, 0, sizeof cli2);
    fds_before = count_open_fds();
    REQUIRE(epoll_loop_new(&loop) == 0);
    port = listen_any(loop, &srv, &l);
    REQUIRE(port > 0);
    REQUIRE(epoll_loop_tcp_connect(loop, NULL, (uint16_t)port, &rec_cbs, &cli, &c) == 0);
    REQUIRE(epoll_loop_tcp_connect(loop, NULL, (uint16_t)port, &rec_cbs, &cli2, &c2) == 0);
    CHECK(poll_until(loop, &cli.opens, 5000));
    CHECK(poll_until(loop, &cli2.opens, 5000));
    deadline = now_ms() + 5000;
    while (srv.opens < 2 && now_ms() < deadline && epoll_loop_poll(loop, 50) >= 0)
        ;
    CHECK(srv.opens == 2);
    memset(big, 'q', sizeof big);
    CHECK_RC(epoll_loop_conn_write(c, big, sizeof big), 0); /* some of it queued */
    CHECK_RC(epoll_loop_conn_abort(c2), 0);                 /* on_close pending */
    CHECK(cli.closes == 0 && cli2.closes == 0 && srv.closes == 0);
    CHECK_RC(epoll_loop_listener_close(l), 0);
    l = NULL;
    CHECK_RC(epoll_loop_free(loop), 0);
    loop = NULL;
    CHECK(cli.closes == 1 && cli.close_error == -ECANCELED && cli.handle_ok_in_close);
    CHECK(cli2.closes == 1 && cli2.close_error == -ECONNABORTED && cli2.handle_ok_in_close);
    CHECK(srv.closes == 2 && srv.close_error == -ECANCELED && srv.handle_ok_in_close);
    CHECK_RC(epoll_loop_conn_write(c, "x", 1), -EINVAL); /* gone now */
    CHECK(count_open_fds() == fds_before);

cleanup:
    if (l)
        CHECK_RC(epoll_loop_listener_close(l), 0);
    if (loop)
        CHECK_RC(epoll_loop_free(loop), 0);
    rec_free(&srv);
    rec_free(&cli);
    rec_free(&cli2);
}

/* Half-open: the server sees EOF as on_data(NULL, 0), still writes, then shuts down. */
static void hoe_open(epoll_loop_conn *c, void *ud)
{
    cb_open(c, ud);
    CHECK_RC(epoll_loop_conn_set_half_open(c, 1), 0);
}

static void hoe_data(epoll_loop_conn *c, const uint8_t *buf, size_t len, void *ud)
{
    cb_data(c, buf, len, ud);
    if (!buf) {
        CHECK_RC(epoll_loop_conn_write(c, "after-eof", 9), 0);
        CHECK_RC(epoll_loop_conn_shutdown(c), 0);
        CHECK_RC(epoll_loop_conn_write(c, "x", 1), -EPIPE);
    }
}

static const epoll_loop_conn_callbacks half_open_cbs = {hoe_open, hoe_data, cb_drain, cb_close};

static void test_half_open(void)
{
    struct rec srv, cli;
    epoll_loop *loop = NULL;
    epoll_loop_listener *l = NULL;
    epoll_loop_conn *c = NULL;
    int port;

    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(epoll_loop_tcp_listen(loop, NULL, 0, 0, &half_open_cbs, &srv, &l) == 0);
    port = epoll_loop_listener_port(l);
    REQUIRE(port > 0);
    REQUIRE(epoll_loop_tcp_connect(loop, NULL, (uint16_t)port, &rec_cbs, &cli, &c) == 0);
    CHECK_RC(epoll_loop_conn_write(c, "req", 3), 0);
    CHECK_RC(epoll_loop_conn_shutdown(c), 0); /* before on_open: after the queue */
    CHECK(poll_until(loop, &cli.closed, 5000));
    CHECK(poll_until(loop, &srv.closed, 5000));
    CHECK(srv.len == 3 && srv.data && memcmp(srv.data, "req", 3) == 0);
    CHECK(cli.len == 9 && cli.data && memcmp(cli.data, "after-eof", 9) == 0);
    CHECK(srv.nevents == 4 && srv.events[0] == EV_OPEN && srv.events[1] == EV_DATA &&
          srv.events[2] == EV_EOF && srv.events[3] == EV_CLOSE);
    CHECK(cli.eofs == 0); /* default mode: EOF closes, no NULL on_data */
    CHECK(srv.close_error == 0 && cli.close_error == 0);

cleanup:
    if (l)
        CHECK_RC(epoll_loop_listener_close(l), 0);
    if (loop)
        CHECK_RC(epoll_loop_free(loop), 0);
    rec_free(&srv);
    rec_free(&cli);
}

/* Closing the listener from inside its own connection's on_open (during the
 * accept loop): no use after free (ASan), later clients are refused. */
static epoll_loop_listener *g_closing_listener;

static void close_listener_open(epoll_loop_conn *c, void *ud)
{
    cb_open(c, ud);
    if (g_closing_listener) {
        CHECK_RC(epoll_loop_listener_close(g_closing_listener), 0);
        g_closing_listener = NULL;
    }
}

static const epoll_loop_conn_callbacks close_listener_cbs = {close_listener_open, cb_data, cb_drain,
                                                             cb_close};

static void test_listener_close_inside_on_open(void)
{
    struct rec srv, cli[3];
    epoll_loop *loop = NULL;
    epoll_loop_conn *c;
    int port, i;

    memset(&srv, 0, sizeof srv);
    memset(cli, 0, sizeof cli);
    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(epoll_loop_tcp_listen(loop, NULL, 0, 0, &close_listener_cbs, &srv,
                                  &g_closing_listener) == 0);
    port = epoll_loop_listener_port(g_closing_listener);
    REQUIRE(port > 0);
    /* Two clients at once: the accept loop may meet the second after the close. */
    for (i = 0; i < 2; i++)
        REQUIRE(epoll_loop_tcp_connect(loop, NULL, (uint16_t)port, &rec_cbs, &cli[i], &c) == 0);
    CHECK(poll_until(loop, &srv.opens, 5000));
    CHECK(g_closing_listener == NULL);
    epoll_loop_poll(loop, 50);
    CHECK(srv.opens == 1);
    REQUIRE(epoll_loop_tcp_connect(loop, NULL, (uint16_t)port, &rec_cbs, &cli[2], &c) == 0);
    CHECK(poll_until(loop, &cli[2].closed, 5000));
    CHECK_RC(cli[2].close_error, -ECONNREFUSED);

cleanup:
    if (g_closing_listener)
        CHECK_RC(epoll_loop_listener_close(g_closing_listener), 0);
    g_closing_listener = NULL;
    if (loop)
        CHECK_RC(epoll_loop_free(loop), 0);
    rec_free(&srv);
    for (i = 0; i < 3; i++)
        rec_free(&cli[i]);
}

/* Reconnecting from on_close (a retry loop): a new connection made inside the
 * old one's on_close works, and each attempt reports its own refusal. */
struct retry {
    epoll_loop *loop;
    uint16_t port;
    int attempts;
    int refused;
    int opened;
    int failed_connects;
};

static void retry_open(epoll_loop_conn *c, void *ud)
{
    struct retry *r = ud;

    (void)c;
    r->opened++;
}

static void retry_close(epoll_loop_conn *c, int error, void *ud);

static const epoll_loop_conn_callbacks retry_cbs = {retry_open, NULL, NULL, retry_close};

static void retry_close(epoll_loop_conn *c, int error, void *ud)
{
    struct retry *r = ud;
    epoll_loop_conn *next = NULL;

    (void)c;
    if (error == -ECONNREFUSED)
        r->refused++;
    if (r->attempts < 5) {
        r->attempts++;
        if (epoll_loop_tcp_connect(r->loop, NULL, r->port, &retry_cbs, r, &next) != 0)
            r->failed_connects++;
        else
            CHECK_RC(epoll_loop_conn_write(next, "retry", 5), 0);
    }
}

static void test_reconnect_from_on_close(void)
{
    struct rec srv;
    struct retry r;
    epoll_loop *loop = NULL;
    epoll_loop_listener *l = NULL;
    epoll_loop_conn *c = NULL;
    uint64_t deadline;
    int port;

    memset(&srv, 0, sizeof srv);
    memset(&r, 0, sizeof r);
    REQUIRE(epoll_loop_new(&loop) == 0);
    port = listen_any(loop, &srv, &l);
    REQUIRE(port > 0);
    CHECK_RC(epoll_loop_listener_close(l), 0);
    l = NULL;
    r.loop = loop;
    r.port = (uint16_t)port;
    r.attempts = 1;
    REQUIRE(epoll_loop_tcp_connect(loop, NULL, r.port, &retry_cbs, &r, &c) == 0);
    deadline = now_ms() + 5000;
    while (r.refused < 5 && now_ms() < deadline && epoll_loop_poll(loop, 50) >= 0)
        ;
    CHECK(r.refused == 5 && r.attempts == 5 && r.opened == 0 && r.failed_connects == 0);

cleanup:
    if (loop)
        CHECK_RC(epoll_loop_free(loop), 0);
    rec_free(&srv);
}

/* A paused connection whose both directions are shut (EPOLLHUP) keeps the
 * unread bytes for resume, without spinning on the HUP. */
static void pause_in_open(epoll_loop_conn *c, void *ud)
{
    cb_open(c, ud);
    CHECK_RC(epoll_loop_conn_pause(c), 0);
}

static const epoll_loop_conn_callbacks pause_cbs = {pause_in_open, cb_data, cb_drain, cb_close};

static void test_paused_connection_keeps_data_after_hup(void)
{
    struct rec srv, cli;
    epoll_loop *loop = NULL;
    epoll_loop_listener *l = NULL;
    epoll_loop_conn *c = NULL;
    epoll_loop_stats st0, st1;
    uint64_t until;
    int port;

    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(epoll_loop_tcp_listen(loop, NULL, 0, 0, &pause_cbs, &srv, &l) == 0);
    port = epoll_loop_listener_port(l);
    REQUIRE(port > 0);
    REQUIRE(epoll_loop_tcp_connect(loop, NULL, (uint16_t)port, &rec_cbs, &cli, &c) == 0);
    CHECK_RC(epoll_loop_conn_write(c, "kept while paused", 17), 0);
    CHECK_RC(epoll_loop_conn_shutdown(c), 0);
    CHECK(poll_until(loop, &srv.opens, 5000));
    CHECK_RC(epoll_loop_conn_shutdown(srv.conn), 0); /* both directions now shut */
    until = now_ms() + 100;
    while (now_ms() < until)
        epoll_loop_poll(loop, 10);
    CHECK_RC(epoll_loop_get_stats(loop, &st0), 0);
    until = now_ms() + 200;
    while (now_ms() < until)
        epoll_loop_poll(loop, 10);
    CHECK_RC(epoll_loop_get_stats(loop, &st1), 0);
    CHECK(st1.events - st0.events <= 2); /* parked, not spinning on EPOLLHUP */
    CHECK(srv.closes == 0 && srv.len == 0);
    CHECK_RC(epoll_loop_conn_resume(srv.conn), 0);
    CHECK(poll_until(loop, &srv.closed, 5000));
    CHECK(srv.len == 17 && srv.data && memcmp(srv.data, "kept while paused", 17) == 0);
    CHECK_RC(srv.close_error, 0);
    CHECK(poll_until(loop, &cli.closed, 5000));
    CHECK_RC(cli.close_error, 0);

cleanup:
    if (l)
        CHECK_RC(epoll_loop_listener_close(l), 0);
    if (loop)
        CHECK_RC(epoll_loop_free(loop), 0);
    rec_free(&srv);
    rec_free(&cli);
}

static int run_stream(void)
{
    int fds_before = count_open_fds();

    RUN(test_echo_round_trip);
    RUN(test_refused_connect);
    RUN(test_abort);
    RUN(test_half_open);
    RUN(test_listener_close_inside_on_open);
    RUN(test_reconnect_from_on_close);
    RUN(test_paused_connection_keeps_data_after_hup);
    RUN(test_free_loop_with_open_connections);
    if (count_open_fds() != fds_before) {
        fprintf(stderr, "open fds: %d before, %d after\n", fds_before, count_open_fds());
        g_tests_failed++;
    }
    return report();
}

/* ------------------------------------------------------------------ posts */

#define POST_THREADS 8
#define POSTS_PER_THREAD 10000

struct post_state {
    epoll_loop *loop;
    pthread_t loop_thread;
    unsigned next[POST_THREADS]; /* next expected sequence number per thread */
    unsigned out_of_order;
    unsigned wrong_thread;
    unsigned ran;
    int failed_posts[POST_THREADS]; /* each written by its own posting thread only */
};

struct post_item {
    struct post_state *st;
    unsigned thread;
    unsigned seq;
};

static void post_cb(epoll_loop *loop, void *ud)
{
    struct post_item *it = ud;
    struct post_state *st = it->st;

    if (loop != st->loop || !pthread_equal(pthread_self(), st->loop_thread))
        st->wrong_thread++;
    if (it->seq != st->next[it->thread])
        st->out_of_order++;
    st->next[it->thread] = it->seq + 1;
    st->ran++;
    free(it);
}

struct poster {
    struct post_state *st;
    unsigned thread;
};

static void *poster_main(void *arg)
{
    struct poster *p = arg;
    unsigned i;

    for (i = 0; i < POSTS_PER_THREAD; i++) {
        struct post_item *it = malloc(sizeof *it);

        if (!it) {
            p->st->failed_posts[p->thread]++;
            continue;
        }
        it->st = p->st;
        it->thread = p->thread;
        it->seq = i;
        if (epoll_loop_post(p->st->loop, post_cb, it) != 0) {
            p->st->failed_posts[p->thread]++;
            free(it);
        }
    }
    return NULL;
}

static void test_posts_from_threads(void)
{
    struct post_state st;
    struct poster posters[POST_THREADS];
    pthread_t threads[POST_THREADS];
    int started = 0, i, rc;
    long callbacks = 0;
    uint64_t deadline;

    memset(&st, 0, sizeof st);
    REQUIRE(epoll_loop_new(&st.loop) == 0);
    st.loop_thread = pthread_self();
    CHECK_RC(epoll_loop_post(st.loop, NULL, &st), -EINVAL);
    CHECK_RC(epoll_loop_post(NULL, post_cb, &st), -EINVAL);
    for (i = 0; i < POST_THREADS; i++) {
        posters[i].st = &st;
        posters[i].thread = (unsigned)i;
        REQUIRE(pthread_create(&threads[i], NULL, poster_main, &posters[i]) == 0);
        started++;
    }
    deadline = now_ms() + 30000;
    while (st.ran < POST_THREADS * POSTS_PER_THREAD && now_ms() < deadline) {
        rc = epoll_loop_poll(st.loop, 100);
        REQUIRE(rc >= 0);
        callbacks += rc;
    }

cleanup:
    for (i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    for (i = 0; i < POST_THREADS; i++)
        CHECK(st.failed_posts[i] == 0);
    CHECK(st.ran == POST_THREADS * POSTS_PER_THREAD);
    CHECK(callbacks == (long)st.ran);
    CHECK(st.out_of_order == 0);
    CHECK(st.wrong_thread == 0);
    for (i = 0; i < POST_THREADS; i++)
        CHECK(st.next[i] == POSTS_PER_THREAD);
    printf("posts: %u run, %ld counted by epoll_loop_poll\n", st.ran, callbacks);
    if (st.loop)
        CHECK_RC(epoll_loop_free(st.loop), 0);
}

static int run_posts(void)
{
    RUN(test_posts_from_threads);
    return report();
}

/* ------------------------------------------------------------------ signals */

struct sig_state {
    int count;
    int wrong;
};

static void on_usr1(epoll_loop *loop, int signo, void *ud)
{
    struct sig_state *st = ud;

    if (signo != SIGUSR1)
        st->wrong++;
    st->count++;
    printf("signal %d count %d\n", signo, st->count);
    fflush(stdout);
    if (st->count == 3) {
        CHECK_RC(epoll_loop_signal_stop(loop, SIGUSR1), 0);
        CHECK_RC(epoll_loop_signal_stop(loop, SIGUSR1), -ENOENT);
        CHECK_RC(epoll_loop_stop(loop), 0);
    }
}

static void on_watchdog(epoll_loop *loop, uint64_t id, void *ud)
{
    (void)id;
    (void)ud;
    fprintf(stderr, "signals: watchdog fired (not 3 signals within 20 s)\n");
    g_check_failures++;
    epoll_loop_stop(loop);
}

static void test_signals(void)
{
    struct sig_state st;
    epoll_loop *loop = NULL;
    uint64_t watchdog = 0;
    sigset_t pending;

    memset(&st, 0, sizeof st);
    REQUIRE(epoll_loop_new(&loop) == 0);
    /* misuse */
    CHECK_RC(epoll_loop_signal_start(loop, SIGUSR2, on_usr1, &st), EPOLL_LOOP_ENOTBLOCKED);
    CHECK(strstr(epoll_loop_strerror(EPOLL_LOOP_ENOTBLOCKED), "epoll_loop_signal_block") != NULL);
    CHECK_RC(epoll_loop_signal_start(loop, SIGKILL, on_usr1, &st), -EINVAL);
    CHECK_RC(epoll_loop_signal_start(loop, SIGSTOP, on_usr1, &st), -EINVAL);
    CHECK_RC(epoll_loop_signal_start(loop, 0, on_usr1, &st), -EINVAL);
    CHECK_RC(epoll_loop_signal_start(loop, 1000, on_usr1, &st), -EINVAL);
    CHECK_RC(epoll_loop_signal_start(loop, SIGUSR1, NULL, &st), -EINVAL);
    CHECK_RC(epoll_loop_signal_start(NULL, SIGUSR1, on_usr1, &st), -EINVAL);
    CHECK_RC(epoll_loop_signal_stop(loop, SIGUSR2), -ENOENT);
    CHECK_RC(epoll_loop_signal_block(0), -EINVAL);
    CHECK_RC(epoll_loop_signal_block(1000), -EINVAL);
    CHECK_RC(epoll_loop_signal_block(SIGKILL), -EINVAL);
    CHECK_RC(epoll_loop_signal_block(SIGSTOP), -EINVAL);

    CHECK_RC(epoll_loop_signal_start(loop, SIGUSR1, on_usr1, &st), 0);
    CHECK_RC(epoll_loop_signal_start(loop, SIGUSR1, on_usr1, &st), -EEXIST);
    CHECK_RC(epoll_loop_timer_start(loop, 20000, 0, on_watchdog, NULL, &watchdog), 0);
    printf("ready pid=%ld\n", (long)getpid());
    fflush(stdout);
    CHECK_RC(epoll_loop_run(loop), 1);
    CHECK(st.count == 3 && st.wrong == 0);
    CHECK_RC(epoll_loop_timer_stop(loop, watchdog), 0);
    /* Still blocked after signal_stop: nothing pending was lost to a default action. */
    CHECK(sigpending(&pending) == 0);

cleanup:
    if (loop)
        CHECK_RC(epoll_loop_free(loop), 0);
}

static int run_signals(void)
{
    RUN(test_signals);
    return report();
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    alarm(120); /* a hang is a failure, not a stuck test run */
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 2 && strcmp(argv[1], "signals") == 0) {
        /* The blocking rule: before anything else (no thread exists yet). */
        if (epoll_loop_signal_block(SIGUSR1) != 0) {
            fprintf(stderr, "epoll_loop_signal_block(SIGUSR1) failed\n");
            return 1;
        }
        return run_signals();
    }
    if (argc == 2 && strcmp(argv[1], "posts") == 0)
        return run_posts();
    if (argc == 2 && strcmp(argv[1], "stream") == 0)
        return run_stream();
    fprintf(stderr, "usage: %s stream|posts|signals\n", argv[0]);
    return 2;
}
