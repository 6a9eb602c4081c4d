/*
 * stream_test.c: the stream layer driven from C.
 *
 * Built and run by tests/stream.rs against the shared library under
 * AddressSanitizer + UBSan (LeakSanitizer included where it works), so that
 * the C side of the stream layer is checked for memory errors and leaks:
 * connections (echo round trip, callback order, refused connect, abort,
 * half-open, closing the listener inside on_open, reconnecting from on_close,
 * a paused connection keeping its unread bytes past EPOLLHUP, freeing a loop
 * with open connections and a pending on_close), then no fd left open.
 * Signals and posts from C: signals_posts_test.c.
 *
 * C99, -Wall -Wextra -Wpedantic -Werror, goto-cleanup style (tests/c/harness.h).
 * Prints one line per failed check and "N passed, N failed"; exits non-zero
 * on any failure. Every wait is bounded (alarm() as a last resort).
 */
#include "harness.h"

#include <stdlib.h>
#include <unistd.h>

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

/* What most tests start from: a loop, a listener on port 0 whose connections
 * record into `srv`, and a client recording into `cli`. */
struct pair {
    epoll_loop *loop;
    epoll_loop_listener *listener; /* NULL once closed */
    epoll_loop_conn *client;
    struct rec srv, cli;
    uint16_t port;
};

/* Call first: a new loop and a listener on `host` (NULL: "127.0.0.1"), port 0,
 * with `srv_cbs` and `p->srv`. 0, or -1 (then pair_teardown still cleans up). */
static int pair_listen(struct pair *p, const epoll_loop_conn_callbacks *srv_cbs, const char *host)
{
    int port;

    memset(p, 0, sizeof *p);
    if (epoll_loop_new(&p->loop) != 0)
        return -1;
    if (epoll_loop_tcp_listen(p->loop, host, 0, 0, srv_cbs, &p->srv, &p->listener) != 0)
        return -1;
    port = epoll_loop_listener_port(p->listener);
    if (port <= 0)
        return -1;
    p->port = (uint16_t)port;
    return 0;
}

/* A client to the listener's port (through `host`), with `rec_cbs` and `p->cli`. */
static int pair_connect(struct pair *p, const char *host)
{
    return epoll_loop_tcp_connect(p->loop, host, p->port, &rec_cbs, &p->cli, &p->client) == 0 &&
                   p->client != NULL
               ? 0
               : -1;
}

/* pair_listen, then pair_connect. */
static int pair_setup(struct pair *p, const epoll_loop_conn_callbacks *srv_cbs, const char *host)
{
    return pair_listen(p, srv_cbs, host) == 0 && pair_connect(p, host) == 0 ? 0 : -1;
}

static void pair_close_listener(struct pair *p)
{
    CHECK_RC(epoll_loop_listener_close(p->listener), 0);
    p->listener = NULL;
}

/* Closes the listener (if still open) and frees the loop (if not freed yet). */
static void pair_teardown(struct pair *p)
{
    if (p->listener)
        pair_close_listener(p);
    if (p->loop)
        CHECK_RC(epoll_loop_free(p->loop), 0);
    p->loop = NULL;
    rec_free(&p->srv);
    rec_free(&p->cli);
}

/* Echo round trip: data written before on_open is queued; order and exactly-once. */
static void test_echo_round_trip(void)
{
    struct pair p;
    unsigned char *msg = NULL;
    size_t i, n = 300 * 1024;

    REQUIRE(pair_setup(&p, &rec_cbs, "127.0.0.1") == 0);
    p.srv.echo = 1;
    p.cli.close_after = n;
    msg = malloc(n);
    REQUIRE(msg != NULL);
    for (i = 0; i < n; i++)
        msg[i] = (unsigned char)(i * 7 + i / 251);
    CHECK_RC(epoll_loop_conn_write(p.client, msg, n), 0); /* before on_open: queued */
    CHECK(p.cli.opens == 0);
    poll_until(p.loop, &p.cli.closed, 5000);
    poll_until(p.loop, &p.srv.closed, 5000);
    CHECK(p.cli.len == n && p.cli.data && memcmp(p.cli.data, msg, n) == 0);
    CHECK(p.srv.len == n);
    CHECK(p.cli.opens == 1 && p.cli.closes == 1 && p.cli.close_error == 0);
    CHECK(p.srv.opens == 1 && p.srv.closes == 1 && p.srv.close_error == 0);
    /* open first, close last; data and drains (the 300 KiB queued) in between */
    CHECK(p.cli.nevents >= 3 && p.cli.events[0] == EV_OPEN &&
          p.cli.events[p.cli.nevents - 1] == EV_CLOSE);
    CHECK(p.cli.drains == 1);
    CHECK(p.srv.nevents == 3 && p.srv.events[0] == EV_OPEN && p.srv.events[1] == EV_DATA &&
          p.srv.events[2] == EV_CLOSE);
    CHECK(p.cli.handle_ok_in_close && p.srv.handle_ok_in_close);
    /* nothing after on_close */
    epoll_loop_poll(p.loop, 50);
    CHECK(p.cli.closes == 1 && p.srv.closes == 1);

cleanup:
    free(msg);
    pair_teardown(&p);
}

static void test_refused_connect(void)
{
    struct pair p;

    REQUIRE(pair_listen(&p, &rec_cbs, "127.0.0.1") == 0);
    pair_close_listener(&p); /* the port is free again */
    REQUIRE(pair_connect(&p, NULL) == 0);
    CHECK(poll_until(p.loop, &p.cli.closed, 5000));
    CHECK(p.cli.opens == 0 && p.cli.closes == 1);
    CHECK_RC(p.cli.close_error, -ECONNREFUSED);
    CHECK(p.cli.handle_ok_in_close);

cleanup:
    pair_teardown(&p);
}

/* abort: -ECONNABORTED here, -ECONNRESET at the peer; -EPIPE before it is reported. */
static void test_abort(void)
{
    struct pair p;
    epoll_loop_conn *c;

    REQUIRE(pair_listen(&p, &rec_cbs, "127.0.0.1") == 0);
    REQUIRE(pair_connect(&p, NULL) == 0);
    c = p.client;
    CHECK(poll_until(p.loop, &p.cli.opens, 5000));
    CHECK(poll_until(p.loop, &p.srv.opens, 5000));
    CHECK_RC(epoll_loop_conn_write(c, "abc", 3), 0);
    CHECK_RC(epoll_loop_conn_abort(c), 0);
    CHECK(p.cli.closes == 0); /* reported from the loop, not from inside abort */
    CHECK_RC(epoll_loop_conn_write(c, "abc", 3), -EPIPE);
    CHECK_RC(epoll_loop_conn_close(c), -EPIPE);
    CHECK_RC(epoll_loop_conn_shutdown(c), -EPIPE);
    CHECK_RC(epoll_loop_conn_abort(c), -EPIPE);
    CHECK(poll_until(p.loop, &p.cli.closed, 5000));
    CHECK_RC(p.cli.close_error, -ECONNABORTED);
    CHECK(poll_until(p.loop, &p.srv.closed, 5000));
    CHECK_RC(p.srv.close_error, -ECONNRESET);
    CHECK(p.cli.closes == 1 && p.srv.closes == 1);

cleanup:
    pair_teardown(&p);
}

/* Freeing a loop with open connections, queued bytes and a pending on_close:
 * every connection gets its on_close from inside the free (-ECANCELED, or the
 * status it was closed with), nothing leaks (LeakSanitizer), no fd stays open. */
static void test_free_loop_with_open_connections(void)
{
    struct pair p;
    struct rec cli2;
    epoll_loop_conn *c2 = NULL;
    static unsigned char big[512 * 1024];
    int fds_before;
    uint64_t deadline;

    memset(&cli2, 0, sizeof cli2);
    fds_before = count_open_fds();
    REQUIRE(pair_listen(&p, &rec_cbs, "127.0.0.1") == 0);
    REQUIRE(pair_connect(&p, NULL) == 0);
    REQUIRE(epoll_loop_tcp_connect(p.loop, NULL, p.port, &rec_cbs, &cli2, &c2) == 0);
    CHECK(poll_until(p.loop, &p.cli.opens, 5000));
    CHECK(poll_until(p.loop, &cli2.opens, 5000));
    deadline = now_ms() + 5000;
    while (p.srv.opens < 2 && now_ms() < deadline && epoll_loop_poll(p.loop, 50) >= 0)
        ;
    CHECK(p.srv.opens == 2);
    memset(big, 'q', sizeof big);
    CHECK_RC(epoll_loop_conn_write(p.client, big, sizeof big), 0); /* some of it queued */
    CHECK_RC(epoll_loop_conn_abort(c2), 0);                        /* on_close pending */
    CHECK(p.cli.closes == 0 && cli2.closes == 0 && p.srv.closes == 0);
    pair_close_listener(&p);
    CHECK_RC(epoll_loop_free(p.loop), 0);
    p.loop = NULL;
    CHECK(p.cli.closes == 1 && p.cli.close_error == -ECANCELED && p.cli.handle_ok_in_close);
    CHECK(cli2.closes == 1 && cli2.close_error == -ECONNABORTED && cli2.handle_ok_in_close);
    CHECK(p.srv.closes == 2 && p.srv.close_error == -ECANCELED && p.srv.handle_ok_in_close);
    CHECK_RC(epoll_loop_conn_write(p.client, "x", 1), -EINVAL); /* gone now */
    CHECK(count_open_fds() == fds_before);

cleanup:
    pair_teardown(&p);
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
    struct pair p;

    REQUIRE(pair_setup(&p, &half_open_cbs, NULL) == 0);
    CHECK_RC(epoll_loop_conn_write(p.client, "req", 3), 0);
    CHECK_RC(epoll_loop_conn_shutdown(p.client), 0); /* before on_open: after the queue */
    CHECK(poll_until(p.loop, &p.cli.closed, 5000));
    CHECK(poll_until(p.loop, &p.srv.closed, 5000));
    CHECK(p.srv.len == 3 && p.srv.data && memcmp(p.srv.data, "req", 3) == 0);
    CHECK(p.cli.len == 9 && p.cli.data && memcmp(p.cli.data, "after-eof", 9) == 0);
    CHECK(p.srv.nevents == 4 && p.srv.events[0] == EV_OPEN && p.srv.events[1] == EV_DATA &&
          p.srv.events[2] == EV_EOF && p.srv.events[3] == EV_CLOSE);
    CHECK(p.cli.eofs == 0); /* default mode: EOF closes, no NULL on_data */
    CHECK(p.srv.close_error == 0 && p.cli.close_error == 0);

cleanup:
    pair_teardown(&p);
}

/* Closing the listener from inside its own connection's on_open (during the
 * accept loop): no use after free (ASan), later clients are refused. */
static struct pair *g_closing;

static void close_listener_open(epoll_loop_conn *c, void *ud)
{
    cb_open(c, ud);
    if (g_closing && g_closing->listener)
        pair_close_listener(g_closing);
}

static const epoll_loop_conn_callbacks close_listener_cbs = {close_listener_open, cb_data, cb_drain,
                                                             cb_close};

static void test_listener_close_inside_on_open(void)
{
    struct pair p;
    struct rec more[2];
    epoll_loop_conn *c;
    int i;

    memset(more, 0, sizeof more);
    g_closing = &p;
    REQUIRE(pair_setup(&p, &close_listener_cbs, NULL) == 0);
    /* Two clients at once: the accept loop may meet the second after the close. */
    REQUIRE(epoll_loop_tcp_connect(p.loop, NULL, p.port, &rec_cbs, &more[0], &c) == 0);
    CHECK(poll_until(p.loop, &p.srv.opens, 5000));
    CHECK(p.listener == NULL);
    epoll_loop_poll(p.loop, 50);
    CHECK(p.srv.opens == 1);
    REQUIRE(epoll_loop_tcp_connect(p.loop, NULL, p.port, &rec_cbs, &more[1], &c) == 0);
    CHECK(poll_until(p.loop, &more[1].closed, 5000));
    CHECK_RC(more[1].close_error, -ECONNREFUSED);

cleanup:
    g_closing = NULL;
    pair_teardown(&p);
    for (i = 0; i < 2; i++)
        rec_free(&more[i]);
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
    struct pair p;
    struct retry r;
    epoll_loop_conn *c = NULL;
    uint64_t deadline;

    memset(&r, 0, sizeof r);
    REQUIRE(pair_listen(&p, &rec_cbs, "127.0.0.1") == 0);
    pair_close_listener(&p);
    r.loop = p.loop;
    r.port = p.port;
    r.attempts = 1;
    REQUIRE(epoll_loop_tcp_connect(p.loop, NULL, r.port, &retry_cbs, &r, &c) == 0);
    deadline = now_ms() + 5000;
    while (r.refused < 5 && now_ms() < deadline && epoll_loop_poll(p.loop, 50) >= 0)
        ;
    CHECK(r.refused == 5 && r.attempts == 5 && r.opened == 0 && r.failed_connects == 0);

cleanup:
    pair_teardown(&p);
}

/* A paused connection whose both directions are shut (EPOLLHUP) keeps the
 * unread bytes for resume, without spinning on the HUP. */
static void pause_in_open(epoll_loop_conn *c, void *ud)
{
    cb_open(c, ud);
    CHECK_RC(epoll_loop_conn_pause(c), 0);
}

static const epoll_loop_conn_callbacks pause_cbs = {pause_in_open, cb_data, cb_drain, cb_close};

/* Polls `loop` for `ms` milliseconds. */
static void poll_for(epoll_loop *loop, uint64_t ms)
{
    uint64_t until = now_ms() + ms;

    while (now_ms() < until)
        epoll_loop_poll(loop, 10);
}

static void test_paused_connection_keeps_data_after_hup(void)
{
    struct pair p;
    epoll_loop_stats st0, st1;

    REQUIRE(pair_setup(&p, &pause_cbs, NULL) == 0);
    CHECK_RC(epoll_loop_conn_write(p.client, "kept while paused", 17), 0);
    CHECK_RC(epoll_loop_conn_shutdown(p.client), 0);
    CHECK(poll_until(p.loop, &p.srv.opens, 5000));
    CHECK_RC(epoll_loop_conn_shutdown(p.srv.conn), 0); /* both directions now shut */
    poll_for(p.loop, 100);
    CHECK_RC(epoll_loop_get_stats(p.loop, &st0), 0);
    poll_for(p.loop, 200);
    CHECK_RC(epoll_loop_get_stats(p.loop, &st1), 0);
    CHECK(st1.events - st0.events <= 2); /* parked, not spinning on EPOLLHUP */
    CHECK(p.srv.closes == 0 && p.srv.len == 0);
    CHECK_RC(epoll_loop_conn_resume(p.srv.conn), 0);
    CHECK(poll_until(p.loop, &p.srv.closed, 5000));
    CHECK(p.srv.len == 17 && p.srv.data && memcmp(p.srv.data, "kept while paused", 17) == 0);
    CHECK_RC(p.srv.close_error, 0);
    CHECK(poll_until(p.loop, &p.cli.closed, 5000));
    CHECK_RC(p.cli.close_error, 0);

cleanup:
    pair_teardown(&p);
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
    check_no_fd_leaked(fds_before);
    return report();
}

/* ------------------------------------------------------------------ main */

int main(void)
{
    alarm(120); /* a hang is a failure, not a stuck test run */
    setvbuf(stdout, NULL, _IOLBF, 0);
    return run_stream();
}
