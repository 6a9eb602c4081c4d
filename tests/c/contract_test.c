/*
 * contract_test.c: the promises of the C contract that only a C program can
 * check: handles, teardown, servers stopped from threads and callbacks, fork.
 *
 * Built and run by tests/contract.rs against the shared library, under
 * AddressSanitizer + UBSan + LeakSanitizer and under valgrind:
 *
 *     contract_test handles    stale loop, server, connection and listener
 *                              handles are -EINVAL for certain, however many
 *                              objects were made since; foreign pointers too;
 *                              an attached server stopped after its loop was
 *                              freed does not touch a new loop
 *     contract_test teardown   epoll_loop_free delivers on_close to every open
 *                              connection and runs every queued post (so their
 *                              user data, malloc'ed here, is freed: LSan checks)
 *     contract_test servers    two threads racing echo_server_stop; stop and
 *                              free re-entered from the log callback; no log
 *                              line after stop returned
 *     contract_test fork       a forked child gets EPOLL_LOOP_EFORKED and
 *                              cannot disturb the parent's loop or server
 *
 * C99, -Wall -Wextra -Wpedantic -Werror, goto-cleanup style. Every wait is
 * bounded (alarm() as a last resort).
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------ helpers */

/* A blocking client socket connected to 127.0.0.1:port, or -1. */
static int dial(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Closes `fd` with a reset (SO_LINGER 0). */
static void reset_close(int fd)
{
    struct linger lg = {1, 0};

    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static void polls(epoll_loop *loop, uint64_t ms)
{
    uint64_t deadline = now_ms() + ms;

    while (now_ms() < deadline)
        if (epoll_loop_poll(loop, 10) < 0)
            break;
}

struct conn_rec {
    epoll_loop_conn *conn;
    int opens, closes, error;
};

static void on_open(epoll_loop_conn *c, void *ud)
{
    struct conn_rec *r = ud;

    r->conn = c;
    r->opens++;
}

static void on_close(epoll_loop_conn *c, int error, void *ud)
{
    struct conn_rec *r = ud;

    (void)c;
    r->closes++;
    r->error = error;
}

static const epoll_loop_conn_callbacks rec_cbs = {on_open, NULL, NULL, on_close};

/* ------------------------------------------------------------------ handles */

/* Loops: a freed handle stays refused after 2000 more loops came and went. */
static void test_stale_loops(void)
{
    epoll_loop *old = NULL, *lp = NULL;
    int i, x = 0;

    REQUIRE(epoll_loop_new(&old) == 0);
    CHECK_RC(epoll_loop_free(old), 0);
    for (i = 0; i < 2000; i++) {
        REQUIRE(epoll_loop_new(&lp) == 0);
        CHECK(lp != old);
        CHECK_RC(epoll_loop_free(lp), 0);
        CHECK_RC(epoll_loop_fileno(old), -EINVAL);
    }
    CHECK_RC(epoll_loop_free(old), -EINVAL);
    CHECK_RC(epoll_loop_poll(old, 0), -EINVAL);
    CHECK_RC(epoll_loop_stop(old), -EINVAL);
    CHECK_RC(epoll_loop_wake(old), -EINVAL);
    /* A pointer that never came from the library: an address. */
    CHECK_RC(epoll_loop_fileno((epoll_loop *)(void *)&x), -EINVAL);
    CHECK_RC(epoll_loop_free((epoll_loop *)(void *)&x), -EINVAL);
    CHECK_RC(echo_server_stop((echo_server *)(void *)&x), -EINVAL);
    CHECK_RC(epoll_loop_conn_close((epoll_loop_conn *)(void *)&x), -EINVAL);
    CHECK_RC(epoll_loop_listener_close((epoll_loop_listener *)(void *)&x), -EINVAL);
cleanup:;
}

/* Connections and listeners: after on_close / _listener_close, certain -EINVAL,
 * with 1000 more connections and listeners made and released since. */
static void test_stale_connections_and_listeners(void)
{
    epoll_loop *loop = NULL;
    epoll_loop_listener *l = NULL, *old_l = NULL;
    epoll_loop_conn *old_c = NULL;
    struct conn_rec srv, cli;
    int port, i;

    memset(&srv, 0, sizeof srv);
    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(epoll_loop_tcp_listen(loop, "127.0.0.1", 0, 0, &rec_cbs, &srv, &l) == 0);
    port = epoll_loop_listener_port(l);
    REQUIRE(port > 0);
    for (i = 0; i < 1000; i++) {
        epoll_loop_conn *c = NULL;
        epoll_loop_listener *l2 = NULL;

        memset(&cli, 0, sizeof cli);
        REQUIRE(epoll_loop_tcp_connect(loop, NULL, (uint16_t)port, &rec_cbs, &cli, &c) == 0);
        REQUIRE(poll_until(loop, &cli.opens, 5000));
        CHECK_RC(epoll_loop_conn_abort(c), 0);
        REQUIRE(poll_until(loop, &cli.closes, 5000));
        if (old_c == NULL)
            old_c = c;
        CHECK_RC(epoll_loop_conn_write(c, "x", 1), -EINVAL);
        CHECK_RC(epoll_loop_conn_write(old_c, "x", 1), -EINVAL);
        CHECK_RC(epoll_loop_conn_close(old_c), -EINVAL);
        CHECK(epoll_loop_conn_get_user_data(old_c) == NULL);
        REQUIRE(epoll_loop_tcp_listen(loop, "127.0.0.1", 0, 0, &rec_cbs, &srv, &l2) == 0);
        CHECK_RC(epoll_loop_listener_close(l2), 0);
        if (old_l == NULL)
            old_l = l2;
        CHECK_RC(epoll_loop_listener_close(l2), -EINVAL);
        CHECK_RC(epoll_loop_listener_port(old_l), -EINVAL);
        CHECK_RC(epoll_loop_listener_close(old_l), -EINVAL);
    }
    /* the server side of every connection saw its close too */
    polls(loop, 100);
    CHECK(srv.opens == 1000);
    CHECK(srv.closes == 1000);
cleanup:
    if (l)
        CHECK_RC(epoll_loop_listener_close(l), 0);
    if (loop)
        CHECK_RC(epoll_loop_free(loop), 0);
}

/* An attached server whose loop was freed, with a new loop made since: stop
 * releases the handle and leaves the new loop alone. */
static void test_attached_server_after_its_loop(void)
{
    epoll_loop *a = NULL, *b = NULL;
    echo_server *srv = NULL;
    echo_server_config cfg;
    epoll_loop_stats st;
    int port, fd = -1;

    echo_server_config_init(&cfg);
    cfg.port = 0;
    REQUIRE(epoll_loop_new(&a) == 0);
    REQUIRE(echo_server_attach(a, &cfg, &srv) == 0);
    port = echo_server_port(srv);
    REQUIRE(port > 0);
    fd = dial(port);
    REQUIRE(fd >= 0);
    polls(a, 50);
    CHECK_RC(epoll_loop_free(a), 0);
    a = NULL;
    REQUIRE(epoll_loop_new(&b) == 0);
    CHECK_RC(epoll_loop_get_stats(b, &st), 0);
    CHECK(st.registered == 0);
    CHECK_RC(echo_server_port(srv), port); /* the handle still answers */
    CHECK_RC(echo_server_stop(srv), 0);    /* releases it only */
    CHECK_RC(echo_server_stop(srv), -EINVAL);
    CHECK_RC(epoll_loop_get_stats(b, &st), 0);
    CHECK(st.registered == 0 && st.timers_pending == 0);
    CHECK_RC(epoll_loop_poll(b, 0), 0);
    /* the freed loop closed the server's side: the client reads EOF */
    {
        char buf[8];
        CHECK(read(fd, buf, sizeof buf) == 0);
    }
cleanup:
    if (fd >= 0)
        close(fd);
    if (a)
        epoll_loop_free(a);
    if (b)
        CHECK_RC(epoll_loop_free(b), 0);
}

static int handles_main(void)
{
    RUN(test_stale_loops);
    RUN(test_stale_connections_and_listeners);
    RUN(test_attached_server_after_its_loop);
    return report();
}

/* ------------------------------------------------------------------ teardown */

struct owned {
    char *data; /* malloc'ed: freed by the callback that ends it */
    int *counter;
    int status;
    epoll_loop *loop;
    epoll_loop_conn *conn;
    int calls_ok; /* what calls inside the callback answered was right */
};

static struct owned *owned_new(int *counter, epoll_loop *loop)
{
    struct owned *o = calloc(1, sizeof *o);

    if (o) {
        o->data = malloc(100);
        o->counter = counter;
        o->loop = loop;
    }
    return o;
}

static void owned_open(epoll_loop_conn *c, void *ud)
{
    (void)c;
    (void)ud;
}

/* The server's accepted connections share the listener's user data, so each
 * gets its own struct owned here. */
static int g_srv_closes;
static void srv_open(epoll_loop_conn *c, void *ud)
{
    struct owned *o = owned_new(&g_srv_closes, ud);

    if (o)
        epoll_loop_conn_set_user_data(c, o);
}

static int g_close_statuses[16];
static int g_nstatuses;

static void owned_close(epoll_loop_conn *c, int error, void *ud)
{
    struct owned *o = ud;

    if (!o)
        return;
    if (g_nstatuses < 16)
        g_close_statuses[g_nstatuses++] = error;
    /* Inside on_close at free: the connection answers -EPIPE, the loop -EINVAL. */
    o->calls_ok = epoll_loop_conn_write(c, "x", 1) == -EPIPE &&
                  epoll_loop_conn_get_user_data(c) == ud;
    if (error == -ECANCELED)
        o->calls_ok = o->calls_ok && epoll_loop_fileno(o->loop) == -EINVAL &&
                      epoll_loop_stop(o->loop) == -EINVAL;
    if (!o->calls_ok)
        fprintf(stderr, "unexpected answer inside on_close(%d)\n", error);
    (*o->counter)++;
    free(o->data);
    free(o);
}

static const epoll_loop_conn_callbacks owned_cbs = {owned_open, NULL, NULL, owned_close};
static const epoll_loop_conn_callbacks srv_cbs = {srv_open, NULL, NULL, owned_close};

static int g_posts_run;
static void owned_post(epoll_loop *loop, void *ud)
{
    struct owned *o = ud;

    /* The loop is already invalid for calls while a free runs the post. */
    if (epoll_loop_fileno(loop) != -EINVAL)
        fprintf(stderr, "a post run by free could still use its loop\n");
    else
        g_posts_run++;
    free(o->data);
    free(o);
}

static void test_free_tells_every_connection_and_runs_every_post(void)
{
    epoll_loop *loop = NULL;
    epoll_loop_listener *l = NULL;
    epoll_loop_conn *c[4];
    int port, i, cli_closes = 0, ncancel = 0, naborted = 0;
    static unsigned char big[512 * 1024];

    g_srv_closes = 0;
    g_nstatuses = 0;
    g_posts_run = 0;
    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(epoll_loop_tcp_listen(loop, "127.0.0.1", 0, 0, &srv_cbs, loop, &l) == 0);
    port = epoll_loop_listener_port(l);
    REQUIRE(port > 0);
    for (i = 0; i < 4; i++) {
        struct owned *o = owned_new(&cli_closes, loop);
        REQUIRE(o != NULL);
        if (epoll_loop_tcp_connect(loop, NULL, (uint16_t)port, &owned_cbs, o, &c[i]) != 0) {
            free(o->data);
            free(o);
            REQUIRE(0);
        }
        o->conn = c[i];
    }
    polls(loop, 200);
    memset(big, 'q', sizeof big);
    CHECK_RC(epoll_loop_conn_write(c[0], big, sizeof big), 0); /* bytes queued */
    CHECK_RC(epoll_loop_conn_abort(c[1]), 0);                   /* on_close pending */
    for (i = 0; i < 5; i++) {
        struct owned *o = owned_new(&cli_closes, loop);
        REQUIRE(o != NULL);
        CHECK_RC(epoll_loop_post(loop, owned_post, o), 0);
    }
    CHECK(cli_closes == 0 && g_srv_closes == 0 && g_posts_run == 0);
    CHECK_RC(epoll_loop_free(loop), 0);
    loop = NULL;
    CHECK(g_posts_run == 5);
    CHECK(cli_closes == 4);
    CHECK(g_srv_closes == 4);
    for (i = 0; i < g_nstatuses; i++) {
        if (g_close_statuses[i] == -ECANCELED)
            ncancel++;
        if (g_close_statuses[i] == -ECONNABORTED)
            naborted++;
    }
    CHECK(g_nstatuses == 8);
    CHECK(naborted == 1); /* the pending one keeps its real status */
    CHECK(ncancel == 7);
    /* the handles are gone; the listener's stays until _listener_close (its
     * port still answers, its limits can no longer be set) */
    CHECK_RC(epoll_loop_conn_close(c[0]), -EINVAL);
    CHECK_RC(epoll_loop_listener_port(l), port);
    CHECK_RC(epoll_loop_listener_set_limits(l, 1000, 10), -EINVAL);
    CHECK_RC(epoll_loop_listener_close(l), 0);
    l = NULL;
cleanup:
    if (l)
        epoll_loop_listener_close(l);
    if (loop)
        epoll_loop_free(loop);
}

static int teardown_main(void)
{
    RUN(test_free_tells_every_connection_and_runs_every_post);
    return report();
}

/* ------------------------------------------------------------------ servers */

struct racer {
    echo_server *srv;
    pthread_barrier_t *barrier;
    int rc;
};

static void *race_stop(void *arg)
{
    struct racer *r = arg;

    pthread_barrier_wait(r->barrier);
    r->rc = echo_server_stop(r->srv);
    return NULL;
}

/* Two threads stop one started server at once: one 0, one -EINVAL, always. */
static void test_racing_stops(void)
{
    echo_server_config cfg;
    pthread_barrier_t barrier;
    int round, rounds = 300;

    echo_server_config_init(&cfg);
    cfg.port = 0;
    REQUIRE(pthread_barrier_init(&barrier, NULL, 2) == 0);
    for (round = 0; round < rounds; round++) {
        echo_server *srv = NULL;
        struct racer a, b;
        pthread_t ta, tb;

        REQUIRE(echo_server_start(&cfg, &srv) == 0);
        a.srv = b.srv = srv;
        a.barrier = b.barrier = &barrier;
        a.rc = b.rc = 1;
        REQUIRE(pthread_create(&ta, NULL, race_stop, &a) == 0);
        REQUIRE(pthread_create(&tb, NULL, race_stop, &b) == 0);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        if (!((a.rc == 0 && b.rc == -EINVAL) || (a.rc == -EINVAL && b.rc == 0))) {
            fprintf(stderr, "round %d: %d and %d\n", round, a.rc, b.rc);
            CHECK(0);
        }
        CHECK_RC(echo_server_get_stats(srv, NULL), -EINVAL);
    }
    pthread_barrier_destroy(&barrier);
cleanup:;
}

/* The log callback of an attached server, re-entering the library. */
struct reentry {
    epoll_loop *loop;
    echo_server *srv;
    int lines;          /* log lines seen */
    int nested_stop;    /* what a nested echo_server_stop returned (1: not tried) */
    int nested_free;    /* what a nested epoll_loop_free returned */
    int nested_poll;    /* what a nested epoll_loop_poll returned */
    int stopped;        /* echo_server_stop returned: no line may come now */
    int after_stop;     /* lines that came after it */
};

static void reentry_log(int level, const char *msg, void *ud)
{
    struct reentry *r = ud;

    (void)level;
    (void)msg;
    r->lines++;
    if (r->stopped)
        r->after_stop++;
    r->nested_free = epoll_loop_free(r->loop);
    r->nested_poll = epoll_loop_poll(r->loop, 0);
    if (r->srv && strncmp(msg, "server stopping", 15) == 0)
        r->nested_stop = echo_server_stop(r->srv);
}

/* Free and poll from the log callback that attach and stop run: -EBUSY; a
 * nested stop from the log line the stop itself writes ("server stopping"):
 * -EINVAL; and no log line once stop returned, though connections still
 * close (one reset by its client, one lingering). */
static void test_reentered_from_the_log_callback(void)
{
    struct reentry r;
    echo_server_config cfg;
    epoll_loop *loop = NULL;
    echo_server *srv = NULL;
    int port, reset_fd = -1, slow_fd = -1, rc;

    memset(&r, 0, sizeof r);
    r.nested_stop = 1;
    echo_server_config_init(&cfg);
    cfg.port = 0;
    cfg.log = reentry_log;
    cfg.log_user_data = &r;
    REQUIRE(epoll_loop_new(&loop) == 0);
    r.loop = loop;
    REQUIRE(echo_server_attach(loop, &cfg, &srv) == 0);
    CHECK(r.lines == 1); /* "server started successfully" */
    CHECK_RC(r.nested_free, -EBUSY);
    CHECK_RC(r.nested_poll, -EBUSY);
    r.srv = srv;
    port = echo_server_port(srv);
    REQUIRE(port > 0);
    reset_fd = dial(port);
    slow_fd = dial(port);
    REQUIRE(reset_fd >= 0 && slow_fd >= 0);
    REQUIRE(write(slow_fd, "hi", 2) == 2);
    polls(loop, 100); /* both accepted; "hi" echoed */
    reset_close(reset_fd);
    reset_fd = -1;
    r.nested_free = 1;
    /* Not polled since the reset: the stop finds it still open. */
    rc = echo_server_stop(srv);
    CHECK_RC(rc, 0);
    r.stopped = 1;
    CHECK_RC(r.nested_stop, -EINVAL);
    CHECK_RC(r.nested_free, -EBUSY);
    /* slow_fd never sends EOF: its connection lingers up to 2 s, then closes. */
    polls(loop, 2600);
    CHECK(r.after_stop == 0);
    CHECK_RC(epoll_loop_free(loop), 0);
    loop = NULL;
cleanup:
    if (reset_fd >= 0)
        close(reset_fd);
    if (slow_fd >= 0)
        close(slow_fd);
    if (loop)
        epoll_loop_free(loop);
}

static int servers_main(void)
{
    RUN(test_racing_stops);
    RUN(test_reentered_from_the_log_callback);
    return report();
}

/* ------------------------------------------------------------------ fork */

static int g_io_calls;
static void count_io(epoll_loop *loop, int fd, uint32_t events, void *ud)
{
    char b[16];

    (void)loop;
    (void)events;
    (void)ud;
    if (read(fd, b, sizeof b) > 0)
        g_io_calls++;
}

static void tick(epoll_loop *loop, uint64_t id, void *ud)
{
    (void)loop;
    (void)id;
    (*(int *)ud)++;
}

static void post_nop(epoll_loop *loop, void *ud)
{
    (void)loop;
    (void)ud;
}

/* In the child: what the parent's objects answer. Returns failed checks. */
static int child_checks(epoll_loop *loop, echo_server *srv, epoll_loop_listener *l, int fd)
{
    epoll_loop *mine = NULL;
    int fails = 0, ticks = 0;

#define CHILD_CHECK(cond)                                                              \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fails++;                                                                   \
            fprintf(stderr, "child %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                              \
    } while (0)

    CHILD_CHECK(epoll_loop_unregister(loop, fd) == EPOLL_LOOP_EFORKED);
    CHILD_CHECK(epoll_loop_modify(loop, fd, EPOLL_LOOP_IN) == EPOLL_LOOP_EFORKED);
    CHILD_CHECK(epoll_loop_poll(loop, 0) == EPOLL_LOOP_EFORKED);
    CHILD_CHECK(epoll_loop_run(loop) == EPOLL_LOOP_EFORKED);
    CHILD_CHECK(epoll_loop_stop(loop) == EPOLL_LOOP_EFORKED);
    CHILD_CHECK(epoll_loop_wake(loop) == EPOLL_LOOP_EFORKED);
    CHILD_CHECK(epoll_loop_post(loop, post_nop, NULL) == EPOLL_LOOP_EFORKED);
    CHILD_CHECK(epoll_loop_listener_port(l) == EPOLL_LOOP_EFORKED);
    CHILD_CHECK(echo_server_port(srv) == EPOLL_LOOP_EFORKED);
    CHILD_CHECK(strstr(epoll_loop_strerror(EPOLL_LOOP_EFORKED), "fork") != NULL);
    /* Releasing the parent's objects is allowed and touches nothing of theirs. */
    CHILD_CHECK(echo_server_stop(srv) == 0);
    CHILD_CHECK(epoll_loop_listener_close(l) == 0);
    CHILD_CHECK(epoll_loop_free(loop) == 0);
    CHILD_CHECK(epoll_loop_free(loop) == -EINVAL);
    /* A loop of the child's own works. */
    CHILD_CHECK(epoll_loop_new(&mine) == 0);
    if (mine) {
        CHILD_CHECK(epoll_loop_timer_start(mine, 1, 0, tick, &ticks, NULL) == 0);
        CHILD_CHECK(epoll_loop_run(mine) == 0);
        CHILD_CHECK(ticks == 1);
        CHILD_CHECK(epoll_loop_free(mine) == 0);
    }
    return fails;
}

/* Fork with a loop (a ONESHOT registration, a listener) and a started server. */
static void test_fork(void)
{
    epoll_loop *loop = NULL;
    epoll_loop_listener *l = NULL;
    echo_server *srv = NULL;
    echo_server_config cfg;
    struct conn_rec srec;
    int p[2] = {-1, -1}, status = 0, port, lport, fd = -1;
    pid_t pid;
    char buf[8];

    memset(&srec, 0, sizeof srec);
    g_io_calls = 0;
    REQUIRE(pipe(p) == 0);
    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(epoll_loop_register(loop, p[0], EPOLL_LOOP_IN | EPOLL_LOOP_ONESHOT, count_io, NULL) == 0);
    REQUIRE(epoll_loop_tcp_listen(loop, "127.0.0.1", 0, 0, &rec_cbs, &srec, &l) == 0);
    lport = epoll_loop_listener_port(l);
    echo_server_config_init(&cfg);
    cfg.port = 0;
    REQUIRE(echo_server_start(&cfg, &srv) == 0);
    port = echo_server_port(srv);
    REQUIRE(port > 0 && lport > 0);
    fflush(NULL);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int fails;
        alarm(20);
        fails = child_checks(loop, srv, l, p[0]);
        /* The parent's server and listener still accept while the child lives. */
        _exit(fails > 100 ? 100 : fails);
    }
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* The parent's registration is intact: its ONESHOT event is still its own. */
    REQUIRE(write(p[1], "x", 1) == 1);
    polls(loop, 200);
    CHECK(g_io_calls == 1);
    /* Its listener still accepts and its server still echoes. */
    fd = dial(lport);
    CHECK(fd >= 0);
    polls(loop, 100);
    CHECK(srec.opens == 1);
    if (fd >= 0)
        close(fd);
    fd = dial(port);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, "ping", 4) == 4);
    CHECK(read(fd, buf, 4) == 4 && memcmp(buf, "ping", 4) == 0);
    CHECK_RC(echo_server_stop(srv), 0);
    srv = NULL;
cleanup:
    if (fd >= 0)
        close(fd);
    if (srv)
        echo_server_stop(srv);
    if (l)
        epoll_loop_listener_close(l);
    if (loop)
        CHECK_RC(epoll_loop_free(loop), 0);
    if (p[0] >= 0)
        close(p[0]);
    if (p[1] >= 0)
        close(p[1]);
}

/* Fork from inside a callback: the child gets EPOLL_LOOP_EFORKED, and may not
 * free the loop whose dispatch is still on its stack (-EBUSY: returning into
 * it would use freed memory; such a child must exec or _exit). */
static int g_fork_child_status = -1;
static void fork_in_timer(epoll_loop *loop, uint64_t id, void *ud)
{
    pid_t pid;
    int status = 0;

    (void)id;
    (void)ud;
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        int rc1 = epoll_loop_timer_stop(loop, 1);
        int rc2 = epoll_loop_free(loop);
        _exit(rc1 == EPOLL_LOOP_EFORKED && rc2 == -EBUSY ? 0 : 1);
    }
    if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status))
        g_fork_child_status = WEXITSTATUS(status);
}

static void test_fork_inside_a_callback(void)
{
    epoll_loop *loop = NULL;

    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(epoll_loop_timer_start(loop, 0, 0, fork_in_timer, NULL, NULL) == 0);
    CHECK_RC(epoll_loop_run(loop), 0);
    CHECK_RC(g_fork_child_status, 0);
cleanup:
    if (loop)
        CHECK_RC(epoll_loop_free(loop), 0);
}

static int fork_main(void)
{
    RUN(test_fork);
    RUN(test_fork_inside_a_callback);
    return report();
}

int main(int argc, char **argv)
{
    alarm(120);
    if (argc == 2 && strcmp(argv[1], "handles") == 0)
        return handles_main();
    if (argc == 2 && strcmp(argv[1], "teardown") == 0)
        return teardown_main();
    if (argc == 2 && strcmp(argv[1], "servers") == 0)
        return servers_main();
    if (argc == 2 && strcmp(argv[1], "fork") == 0)
        return fork_main();
    fprintf(stderr, "usage: %s handles|teardown|servers|fork\n", argv[0]);
    return 2;
}
