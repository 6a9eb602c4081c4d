/*
 * loop_test.c: drives the epoll_loop C API the way a C program would.
 *
 * Built and run by tests/c_abi.rs: against the shared library under
 * AddressSanitizer + UBSan, and against the static library (plain and under
 * valgrind). C99, -Wall -Wextra -Wpedantic -Werror, goto-cleanup style.
 *
 * Each test is a function returning nothing; CHECK records failures, and a test
 * passes when none of its checks failed. The program prints one line per
 * failed check, then "N passed, N failed" (tests), and exits non-zero on any
 * failure. It also checks that it leaves no fd open: the number of entries in
 * /proc/self/fd is the same at the end as at the start.
 */
#include "harness.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------------ helpers */

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* A non-blocking, close-on-exec pipe; -1 on failure (fds set to -1). */
static int make_pipe(int fds[2])
{
    fds[0] = fds[1] = -1;
    return pipe2(fds, O_NONBLOCK | O_CLOEXEC);
}

static int write_str(int fd, const char *s)
{
    size_t len = strlen(s);
    return write(fd, s, len) == (ssize_t)len ? 0 : -1;
}

/* ------------------------------------------------------------------ callbacks */

/* What an fd callback saw. */
struct io_record {
    int calls;
    int last_fd;
    uint32_t last_events;
    epoll_loop *last_loop;
    char data[64];
};

/* Reads what is available into rec->data. */
static void record_and_read_cb(epoll_loop *loop, int fd, uint32_t events, void *user_data)
{
    struct io_record *rec = user_data;
    ssize_t n;

    rec->calls++;
    rec->last_fd = fd;
    rec->last_events = events;
    rec->last_loop = loop;
    n = read(fd, rec->data, sizeof rec->data - 1);
    rec->data[n > 0 ? n : 0] = '\0';
}

/* Counts calls and nothing else (must not drain: used for "never called" too). */
static void count_cb(epoll_loop *loop, int fd, uint32_t events, void *user_data)
{
    (void)loop;
    (void)fd;
    (void)events;
    (*(int *)user_data)++;
}

/* ------------------------------------------------------------------ tests */

static void test_version(void)
{
    const char *s = epoll_loop_version_string();

    CHECK(epoll_loop_version() == EPOLL_LOOP_VERSION_HEX);
    CHECK(((EPOLL_LOOP_VERSION_MAJOR << 16) | (EPOLL_LOOP_VERSION_MINOR << 8) |
           EPOLL_LOOP_VERSION_PATCH) == EPOLL_LOOP_VERSION_HEX);
    CHECK(s != NULL && strcmp(s, EPOLL_LOOP_VERSION_STRING) == 0);
}

static void test_strerror(void)
{
    static const int codes[] = {0, -EINVAL, EINVAL, -EBADF, -ENOENT, -EEXIST, -EBUSY,
                                -EPERM, -ENOTRECOVERABLE, -12345, 12345, INT32_MIN, -1};
    size_t i;

    for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *m = epoll_loop_strerror(codes[i]);
        CHECK(m != NULL && m[0] != '\0');
    }
    CHECK(strstr(epoll_loop_strerror(-EBADF), "EBADF") != NULL);
    CHECK(strstr(epoll_loop_strerror(EBADF), "EBADF") != NULL);
    CHECK(strcmp(epoll_loop_strerror(0), "success") == 0);
}

static void test_event_bits_match_sys_epoll(void)
{
    CHECK(EPOLL_LOOP_IN == EPOLLIN);
    CHECK(EPOLL_LOOP_PRI == EPOLLPRI);
    CHECK(EPOLL_LOOP_OUT == EPOLLOUT);
    CHECK(EPOLL_LOOP_ERR == EPOLLERR);
    CHECK(EPOLL_LOOP_HUP == EPOLLHUP);
    CHECK(EPOLL_LOOP_RDHUP == EPOLLRDHUP);
    CHECK(EPOLL_LOOP_ET == (uint32_t)EPOLLET);
    CHECK(EPOLL_LOOP_ONESHOT == EPOLLONESHOT);
    CHECK(EPOLL_LOOP_EXCLUSIVE == EPOLLEXCLUSIVE);
}

static void test_new_free(void)
{
    epoll_loop *loop = NULL;
    epoll_loop *untouched = (epoll_loop *)&loop; /* any non-NULL sentinel */
    epoll_loop_stats st;

    CHECK_RC(epoll_loop_new(NULL), -EINVAL);
    CHECK_RC(epoll_loop_free(NULL), 0);
    REQUIRE(epoll_loop_new(&loop) == 0 && loop != NULL);
    CHECK(epoll_loop_fileno(loop) >= 0);
    CHECK(fcntl(epoll_loop_fileno(loop), F_GETFD) & FD_CLOEXEC);
    CHECK_RC(epoll_loop_get_stats(loop, &st), 0);
    CHECK(st.registered == 0 && st.timers_pending == 0 && st.callbacks == 0);
    CHECK_RC(epoll_loop_get_stats(loop, NULL), -EINVAL);
    /* out-pointers are written only on success */
    CHECK_RC(epoll_loop_from_fd(-1, &untouched), -EBADF);
    CHECK(untouched == (epoll_loop *)&loop);

cleanup:
    CHECK_RC(epoll_loop_free(loop), 0);
}

static void test_from_fd(void)
{
    epoll_loop *loop = NULL;
    int p[2] = {-1, -1};
    int epfd = -1;

    REQUIRE(make_pipe(p) == 0);
    /* not an epoll fd: refused, and the fd stays the caller's (still open) */
    CHECK_RC(epoll_loop_from_fd(p[0], &loop), -EINVAL);
    CHECK(loop == NULL);
    CHECK(fcntl(p[0], F_GETFD) != -1);
    CHECK_RC(epoll_loop_from_fd(p[0], NULL), -EINVAL);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    REQUIRE(epfd >= 0);
    CHECK_RC(epoll_loop_from_fd(epfd, &loop), 0);
    REQUIRE(loop != NULL);
    CHECK(epoll_loop_fileno(loop) == epfd);
    CHECK_RC(epoll_loop_free(loop), 0);
    loop = NULL;
    /* the loop owned epfd and closed it */
    CHECK(fcntl(epfd, F_GETFD) == -1 && errno == EBADF);
    epfd = -1;

cleanup:
    epoll_loop_free(loop);
    close_fd(&epfd);
    close_fd(&p[0]);
    close_fd(&p[1]);
}

static void test_null_loop_is_einval(void)
{
    uint64_t id = 0;
    epoll_loop_stats st;
    int n = 0;

    CHECK_RC(epoll_loop_fileno(NULL), -EINVAL);
    CHECK_RC(epoll_loop_register(NULL, 0, EPOLL_LOOP_IN, count_cb, &n), -EINVAL);
    CHECK_RC(epoll_loop_modify(NULL, 0, EPOLL_LOOP_IN), -EINVAL);
    CHECK_RC(epoll_loop_unregister(NULL, 0), -EINVAL);
    CHECK_RC(epoll_loop_poll(NULL, 0), -EINVAL);
    CHECK_RC(epoll_loop_run(NULL), -EINVAL);
    CHECK_RC(epoll_loop_stop(NULL), -EINVAL);
    CHECK_RC(epoll_loop_wake(NULL), -EINVAL);
    CHECK_RC(epoll_loop_timer_start(NULL, 1, 0, NULL, NULL, &id), -EINVAL);
    CHECK(id == 0);
    CHECK_RC(epoll_loop_timer_stop(NULL, 1), -EINVAL);
    CHECK_RC(epoll_loop_get_stats(NULL, &st), -EINVAL);
}

static void test_bad_arguments(void)
{
    epoll_loop *loop = NULL;
    FILE *regular = NULL;
    int p[2] = {-1, -1};
    int closed_fd = -1;
    int n = 0;
    uint64_t id = 0;

    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(make_pipe(p) == 0);

    /* negative and closed fds */
    CHECK_RC(epoll_loop_register(loop, -1, EPOLL_LOOP_IN, count_cb, &n), -EBADF);
    CHECK_RC(epoll_loop_modify(loop, -1, EPOLL_LOOP_IN), -EBADF);
    CHECK_RC(epoll_loop_unregister(loop, -1), -EBADF);
    closed_fd = dup(p[0]);
    REQUIRE(closed_fd >= 0);
    close(closed_fd);
    CHECK_RC(epoll_loop_register(loop, closed_fd, EPOLL_LOOP_IN, count_cb, &n), -EBADF);

    /* a regular file cannot be polled */
    regular = tmpfile();
    REQUIRE(regular != NULL);
    CHECK_RC(epoll_loop_register(loop, fileno(regular), EPOLL_LOOP_IN, count_cb, &n), -EPERM);

    /* NULL callback, unknown event bits, a combination the kernel refuses */
    CHECK_RC(epoll_loop_register(loop, p[0], EPOLL_LOOP_IN, NULL, &n), -EINVAL);
    CHECK_RC(epoll_loop_register(loop, p[0], EPOLL_LOOP_IN | 0x00100000u, count_cb, &n),
             -EINVAL);
    CHECK_RC(epoll_loop_register(loop, p[0], EPOLL_LOOP_IN | EPOLL_LOOP_EXCLUSIVE |
                                                 EPOLL_LOOP_ONESHOT, count_cb, &n),
             -EINVAL);

    /* twice -> EEXIST; unknown fd -> ENOENT */
    CHECK_RC(epoll_loop_register(loop, p[0], EPOLL_LOOP_IN, count_cb, &n), 0);
    CHECK_RC(epoll_loop_register(loop, p[0], EPOLL_LOOP_IN, count_cb, &n), -EEXIST);
    CHECK_RC(epoll_loop_modify(loop, p[0], EPOLL_LOOP_IN | 0x00100000u), -EINVAL);
    CHECK_RC(epoll_loop_modify(loop, p[1], EPOLL_LOOP_OUT), -ENOENT);
    CHECK_RC(epoll_loop_unregister(loop, p[1]), -ENOENT);
    CHECK_RC(epoll_loop_unregister(loop, p[0]), 0);
    CHECK_RC(epoll_loop_unregister(loop, p[0]), -ENOENT);

    /* timers: NULL callback, unknown ids */
    CHECK_RC(epoll_loop_timer_start(loop, 1, 0, NULL, NULL, &id), -EINVAL);
    CHECK(id == 0);
    CHECK_RC(epoll_loop_timer_stop(loop, 0), -ENOENT);
    CHECK_RC(epoll_loop_timer_stop(loop, 987654321), -ENOENT);

    /* poll timeout below -1 */
    CHECK_RC(epoll_loop_poll(loop, -2), -EINVAL);
    CHECK(n == 0);

cleanup:
    CHECK_RC(epoll_loop_free(loop), 0);
    if (regular != NULL)
        fclose(regular);
    close_fd(&p[0]);
    close_fd(&p[1]);
}

static void test_pipe_readable(void)
{
    epoll_loop *loop = NULL;
    struct io_record rec;
    int p[2] = {-1, -1};

    memset(&rec, 0, sizeof rec);
    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(make_pipe(p) == 0);
    CHECK_RC(epoll_loop_register(loop, p[0], EPOLL_LOOP_IN, record_and_read_cb, &rec), 0);

    CHECK_RC(epoll_loop_poll(loop, 0), 0); /* nothing to read yet */
    CHECK(rec.calls == 0);

    REQUIRE(write_str(p[1], "hello") == 0);
    CHECK_RC(epoll_loop_poll(loop, 5000), 1);
    CHECK(rec.calls == 1);
    CHECK(rec.last_fd == p[0]);
    CHECK(rec.last_loop == loop);
    CHECK((rec.last_events & EPOLL_LOOP_IN) != 0);
    CHECK(strcmp(rec.data, "hello") == 0);

    /* drained: level-triggered, so nothing more */
    CHECK_RC(epoll_loop_poll(loop, 0), 0);
    CHECK(rec.calls == 1);

    /* writer closes: HUP is reported without being asked for */
    close_fd(&p[1]);
    CHECK_RC(epoll_loop_poll(loop, 5000), 1);
    CHECK((rec.last_events & EPOLL_LOOP_HUP) != 0);
    CHECK_RC(epoll_loop_unregister(loop, p[0]), 0);

cleanup:
    CHECK_RC(epoll_loop_free(loop), 0);
    close_fd(&p[0]);
    close_fd(&p[1]);
}

/* Request/response on one socket, the seed server's way: read on IN, switch to
 * OUT with modify, write, switch back to IN. */
struct ping_pong {
    int reads;
    int writes;
    int errors;
    char pending[16];
};

static void ping_pong_cb(epoll_loop *loop, int fd, uint32_t events, void *user_data)
{
    struct ping_pong *pp = user_data;

    if (events & EPOLL_LOOP_IN) {
        ssize_t n = read(fd, pp->pending, sizeof pp->pending - 1);
        if (n <= 0) {
            pp->errors++;
            return;
        }
        pp->pending[n] = '\0';
        pp->reads++;
        if (epoll_loop_modify(loop, fd, EPOLL_LOOP_OUT) != 0)
            pp->errors++;
    } else if (events & EPOLL_LOOP_OUT) {
        if (strcmp(pp->pending, "ping") != 0 || write_str(fd, "pong") != 0)
            pp->errors++;
        pp->writes++;
        if (epoll_loop_modify(loop, fd, EPOLL_LOOP_IN) != 0)
            pp->errors++;
    } else {
        pp->errors++;
    }
}

static void test_modify_out_and_back(void)
{
    epoll_loop *loop = NULL;
    struct ping_pong pp;
    int sv[2] = {-1, -1};
    char buf[16] = {0};

    memset(&pp, 0, sizeof pp);
    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    CHECK_RC(epoll_loop_register(loop, sv[0], EPOLL_LOOP_IN, ping_pong_cb, &pp), 0);

    REQUIRE(write_str(sv[1], "ping") == 0);
    CHECK_RC(epoll_loop_poll(loop, 5000), 1); /* IN: read, switch to OUT */
    CHECK(pp.reads == 1 && pp.writes == 0);
    CHECK_RC(epoll_loop_poll(loop, 5000), 1); /* OUT: write, switch back to IN */
    CHECK(pp.reads == 1 && pp.writes == 1);
    CHECK_RC(epoll_loop_poll(loop, 0), 0);    /* back on IN, nothing to read */
    CHECK(pp.errors == 0);
    CHECK(read(sv[1], buf, sizeof buf - 1) == 4 && strcmp(buf, "pong") == 0);

    /* modify on an fd closed since it was registered: EBADF; unregister still works */
    {
        int stale = sv[0];
        close_fd(&sv[0]);
        CHECK_RC(epoll_loop_modify(loop, stale, EPOLL_LOOP_IN), -EBADF);
        CHECK_RC(epoll_loop_unregister(loop, stale), 0);
    }

cleanup:
    CHECK_RC(epoll_loop_free(loop), 0);
    close_fd(&sv[0]);
    close_fd(&sv[1]);
}

/* Two readable pipes; whichever callback runs first unregisters both. The other's
 * event, already fetched in the same batch, must not be delivered. */
struct unregister_both {
    int fds[2];
    int calls;
    int rc[2];
};

static void unregister_both_cb(epoll_loop *loop, int fd, uint32_t events, void *user_data)
{
    struct unregister_both *u = user_data;

    (void)fd;
    (void)events;
    u->calls++;
    u->rc[0] = epoll_loop_unregister(loop, u->fds[0]);
    u->rc[1] = epoll_loop_unregister(loop, u->fds[1]);
}

static void test_unregister_inside_callback(void)
{
    epoll_loop *loop = NULL;
    struct unregister_both u;
    int a[2] = {-1, -1}, b[2] = {-1, -1};
    epoll_loop_stats st;

    memset(&u, 0, sizeof u);
    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(make_pipe(a) == 0 && make_pipe(b) == 0);
    u.fds[0] = a[0];
    u.fds[1] = b[0];
    REQUIRE(write_str(a[1], "x") == 0 && write_str(b[1], "y") == 0);
    CHECK_RC(epoll_loop_register(loop, a[0], EPOLL_LOOP_IN, unregister_both_cb, &u), 0);
    CHECK_RC(epoll_loop_register(loop, b[0], EPOLL_LOOP_IN, unregister_both_cb, &u), 0);

    CHECK_RC(epoll_loop_poll(loop, 5000), 1);
    CHECK(u.calls == 1);
    CHECK(u.rc[0] == 0 && u.rc[1] == 0);
    CHECK_RC(epoll_loop_get_stats(loop, &st), 0);
    CHECK(st.registered == 0);
    /* both still readable, but no longer watched; the fds stay open (caller's) */
    CHECK_RC(epoll_loop_poll(loop, 0), 0);
    CHECK(u.calls == 1);
    CHECK(fcntl(a[0], F_GETFD) != -1 && fcntl(b[0], F_GETFD) != -1);
    /* nothing left to wait for */
    CHECK_RC(epoll_loop_run(loop), 0);

cleanup:
    CHECK_RC(epoll_loop_free(loop), 0);
    close_fd(&a[0]);
    close_fd(&a[1]);
    close_fd(&b[0]);
    close_fd(&b[1]);
}

/* Close and reuse an fd number inside one batch: the first callback to run
 * unregisters and closes the other pipe's read end, opens a new pipe (which gets
 * the lowest free number, usually the one just closed) and registers it. The
 * stale event of the old fd must not reach the new registration. */
struct reuse {
    int *read_ends[2];
    int *write_ends[2];
    int replaced;        /* index of the replaced pipe, -1 before */
    int first_calls;
    int new_calls;
    int reused_number;   /* 1 when the new pipe got the closed fd's number */
    int errors;
};

static void reuse_cb(epoll_loop *loop, int fd, uint32_t events, void *user_data)
{
    struct reuse *r = user_data;
    int other, old_fd, np[2];

    (void)events;
    r->first_calls++;
    if (r->replaced >= 0)
        return; /* the second original callback must not run: counted above */
    other = (fd == *r->read_ends[0]) ? 1 : 0;
    old_fd = *r->read_ends[other];
    if (epoll_loop_unregister(loop, old_fd) != 0)
        r->errors++;
    close_fd(r->read_ends[other]);
    close_fd(r->write_ends[other]);
    if (make_pipe(np) != 0) {
        r->errors++;
        return;
    }
    r->reused_number = (np[0] == old_fd || np[1] == old_fd);
    *r->read_ends[other] = np[0];
    *r->write_ends[other] = np[1];
    r->replaced = other;
    if (epoll_loop_register(loop, np[0], EPOLL_LOOP_IN | EPOLL_LOOP_OUT, count_cb,
                            &r->new_calls) != 0)
        r->errors++;
}

static void test_no_stale_dispatch_after_fd_reuse(void)
{
    epoll_loop *loop = NULL;
    struct reuse r;
    int a[2] = {-1, -1}, b[2] = {-1, -1};

    memset(&r, 0, sizeof r);
    r.replaced = -1;
    r.read_ends[0] = &a[0];
    r.read_ends[1] = &b[0];
    r.write_ends[0] = &a[1];
    r.write_ends[1] = &b[1];
    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(make_pipe(a) == 0 && make_pipe(b) == 0);
    REQUIRE(write_str(a[1], "x") == 0 && write_str(b[1], "y") == 0);
    CHECK_RC(epoll_loop_register(loop, a[0], EPOLL_LOOP_IN, reuse_cb, &r), 0);
    CHECK_RC(epoll_loop_register(loop, b[0], EPOLL_LOOP_IN, reuse_cb, &r), 0);

    CHECK_RC(epoll_loop_poll(loop, 5000), 1);
    CHECK(r.first_calls == 1);
    CHECK(r.new_calls == 0);
    CHECK(r.errors == 0);
    if (!r.reused_number)
        fprintf(stderr, "note: the new pipe did not reuse the closed fd's number\n");
    /* the new registration (empty pipe, nothing readable) works from the next poll */
    if (r.replaced >= 0) {
        CHECK_RC(epoll_loop_unregister(loop, *r.read_ends[r.replaced]), 0);
        CHECK_RC(epoll_loop_unregister(loop, *r.read_ends[1 - r.replaced]), 0);
    }

cleanup:
    CHECK_RC(epoll_loop_free(loop), 0);
    close_fd(&a[0]);
    close_fd(&a[1]);
    close_fd(&b[0]);
    close_fd(&b[1]);
}

static void test_unregister_closed_fd(void)
{
    epoll_loop *loop = NULL;
    epoll_loop_stats st;
    int p[2] = {-1, -1};
    int n = 0;

    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(make_pipe(p) == 0);
    CHECK_RC(epoll_loop_register(loop, p[0], EPOLL_LOOP_IN, count_cb, &n), 0);
    {
        int stale = p[0];
        close_fd(&p[0]);
        CHECK_RC(epoll_loop_unregister(loop, stale), 0);
    }
    CHECK_RC(epoll_loop_get_stats(loop, &st), 0);
    CHECK(st.registered == 0);
    CHECK_RC(epoll_loop_run(loop), 0);

cleanup:
    CHECK_RC(epoll_loop_free(loop), 0);
    close_fd(&p[0]);
    close_fd(&p[1]);
}

/* A callback that registers another fd: it is dispatched from the next poll. */
struct chain {
    int next_fd;
    int registered_rc;
    int first_calls;
    int second_calls;
};

static void chain_second_cb(epoll_loop *loop, int fd, uint32_t events, void *user_data)
{
    struct chain *c = user_data;

    (void)events;
    c->second_calls++;
    epoll_loop_unregister(loop, fd);
}

static void chain_first_cb(epoll_loop *loop, int fd, uint32_t events, void *user_data)
{
    struct chain *c = user_data;

    (void)events;
    c->first_calls++;
    epoll_loop_unregister(loop, fd);
    c->registered_rc = epoll_loop_register(loop, c->next_fd, EPOLL_LOOP_OUT, chain_second_cb, c);
}

static void test_register_inside_callback(void)
{
    epoll_loop *loop = NULL;
    struct chain c;
    int p[2] = {-1, -1};

    memset(&c, 0, sizeof c);
    c.registered_rc = 1;
    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(make_pipe(p) == 0);
    c.next_fd = p[1];
    REQUIRE(write_str(p[1], "z") == 0);
    CHECK_RC(epoll_loop_register(loop, p[0], EPOLL_LOOP_IN, chain_first_cb, &c), 0);
    /* run: first (IN on the read end) registers second (OUT on the write end),
     * which unregisters itself; then nothing is left and run returns 0. */
    CHECK_RC(epoll_loop_run(loop), 0);
    CHECK(c.first_calls == 1);
    CHECK(c.registered_rc == 0);
    CHECK(c.second_calls == 1);

cleanup:
    CHECK_RC(epoll_loop_free(loop), 0);
    close_fd(&p[0]);
    close_fd(&p[1]);
}

/* Timers. */
struct timer_rec {
    int calls;
    uint64_t last_id;
    uint64_t first_at_ms;
    int stop_after;   /* repeating: stop own timer on this call (0 = never) */
    int stop_rc;
    int loop_stop_after; /* call epoll_loop_stop on this call (0 = never) */
};

static void timer_cb(epoll_loop *loop, uint64_t timer_id, void *user_data)
{
    struct timer_rec *t = user_data;

    t->calls++;
    t->last_id = timer_id;
    if (t->calls == 1)
        t->first_at_ms = now_ms();
    if (t->stop_after != 0 && t->calls == t->stop_after)
        t->stop_rc = epoll_loop_timer_stop(loop, timer_id);
    if (t->loop_stop_after != 0 && t->calls == t->loop_stop_after)
        epoll_loop_stop(loop);
}

static void test_oneshot_timer(void)
{
    epoll_loop *loop = NULL;
    struct timer_rec t;
    uint64_t id = 0, later = 0, start;

    memset(&t, 0, sizeof t);
    REQUIRE(epoll_loop_new(&loop) == 0);
    /* not due yet: poll(0) runs nothing */
    CHECK_RC(epoll_loop_timer_start(loop, 60000, 0, timer_cb, &t, &later), 0);
    CHECK(later >= 1);
    CHECK_RC(epoll_loop_poll(loop, 0), 0);
    CHECK_RC(epoll_loop_timer_stop(loop, later), 0);

    start = now_ms();
    CHECK_RC(epoll_loop_timer_start(loop, 20, 0, timer_cb, &t, &id), 0);
    CHECK(id > later);
    CHECK_RC(epoll_loop_run(loop), 0); /* fires once, then nothing is left */
    CHECK(t.calls == 1);
    CHECK(t.last_id == id);
    CHECK(t.first_at_ms >= start + 20);
    CHECK_RC(epoll_loop_timer_stop(loop, id), -ENOENT); /* already fired */

cleanup:
    CHECK_RC(epoll_loop_free(loop), 0);
}

static void test_repeating_timer(void)
{
    epoll_loop *loop = NULL;
    struct timer_rec t;
    struct timer_rec never;
    uint64_t id = 0, id2 = 0, id3 = 0;

    memset(&t, 0, sizeof t);
    memset(&never, 0, sizeof never);
    t.stop_after = 3;
    t.stop_rc = 1;
    REQUIRE(epoll_loop_new(&loop) == 0);
    CHECK_RC(epoll_loop_timer_start(loop, 1, 2, timer_cb, &t, &id), 0);
    CHECK_RC(epoll_loop_run(loop), 0); /* three ticks, stopped by itself, then idle */
    CHECK(t.calls == 3);
    CHECK(t.stop_rc == 0);
    CHECK(t.last_id == id);
    CHECK_RC(epoll_loop_timer_stop(loop, id), -ENOENT);

    /* ids are never reused; a stopped timer never runs */
    CHECK_RC(epoll_loop_timer_start(loop, 0, 0, timer_cb, &never, NULL), 0);
    CHECK_RC(epoll_loop_timer_start(loop, 10000, 0, timer_cb, &never, &id2), 0);
    CHECK_RC(epoll_loop_timer_start(loop, 10000, 5, timer_cb, &never, &id3), 0);
    CHECK(id2 > id && id3 > id2);
    CHECK_RC(epoll_loop_timer_stop(loop, id2), 0);
    CHECK_RC(epoll_loop_timer_stop(loop, id2), -ENOENT);
    CHECK_RC(epoll_loop_timer_stop(loop, id3), 0);
    CHECK_RC(epoll_loop_timer_stop(loop, id3 + 1000), -ENOENT);
    CHECK(never.calls == 0);

cleanup:
    CHECK_RC(epoll_loop_free(loop), 0); /* drops the pending 0 ms timer uncalled */
}

static void test_stop_from_callback(void)
{
    epoll_loop *loop = NULL;
    struct timer_rec t;
    int p[2] = {-1, -1};
    int n = 0;
    uint64_t id = 0;

    memset(&t, 0, sizeof t);
    t.loop_stop_after = 2;
    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(make_pipe(p) == 0);
    /* an fd that never becomes readable keeps the loop from being idle */
    CHECK_RC(epoll_loop_register(loop, p[0], EPOLL_LOOP_IN, count_cb, &n), 0);
    CHECK_RC(epoll_loop_timer_start(loop, 1, 1, timer_cb, &t, &id), 0);
    CHECK_RC(epoll_loop_run(loop), 1);
    CHECK(t.calls == 2);
    CHECK(n == 0);

    /* a stop requested before run makes it return 1 at once, once */
    CHECK_RC(epoll_loop_stop(loop), 0);
    CHECK_RC(epoll_loop_run(loop), 1);

    CHECK_RC(epoll_loop_timer_stop(loop, id), 0);
    CHECK_RC(epoll_loop_unregister(loop, p[0]), 0);
    CHECK_RC(epoll_loop_run(loop), 0);

cleanup:
    CHECK_RC(epoll_loop_free(loop), 0);
    close_fd(&p[0]);
    close_fd(&p[1]);
}

static void test_run_returns_0_when_idle(void)
{
    epoll_loop *loop = NULL;

    REQUIRE(epoll_loop_new(&loop) == 0);
    CHECK_RC(epoll_loop_run(loop), 0);
    CHECK_RC(epoll_loop_poll(loop, 0), 0);

cleanup:
    CHECK_RC(epoll_loop_free(loop), 0);
}

/* _poll, _run and _free of the same loop inside a callback: EBUSY. */
struct busy {
    int calls;
    int poll_rc, run_rc, free_rc;
};

static void busy_io_cb(epoll_loop *loop, int fd, uint32_t events, void *user_data)
{
    struct busy *b = user_data;

    (void)events;
    b->calls++;
    b->poll_rc = epoll_loop_poll(loop, 0);
    b->run_rc = epoll_loop_run(loop);
    b->free_rc = epoll_loop_free(loop);
    epoll_loop_unregister(loop, fd);
}

static void busy_timer_cb(epoll_loop *loop, uint64_t timer_id, void *user_data)
{
    struct busy *b = user_data;

    (void)timer_id;
    b->calls++;
    b->poll_rc = epoll_loop_poll(loop, 0);
    b->run_rc = epoll_loop_run(loop);
    b->free_rc = epoll_loop_free(loop);
}

static void test_busy_inside_callback(void)
{
    epoll_loop *loop = NULL;
    struct busy io, tm;
    int p[2] = {-1, -1};

    memset(&io, 0, sizeof io);
    memset(&tm, 0, sizeof tm);
    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(make_pipe(p) == 0);
    CHECK_RC(epoll_loop_register(loop, p[1], EPOLL_LOOP_OUT, busy_io_cb, &io), 0);
    CHECK_RC(epoll_loop_timer_start(loop, 0, 0, busy_timer_cb, &tm, NULL), 0);
    CHECK_RC(epoll_loop_poll(loop, 5000), 2);
    CHECK(io.calls == 1 && tm.calls == 1);
    CHECK(io.poll_rc == -EBUSY && io.run_rc == -EBUSY && io.free_rc == -EBUSY);
    CHECK(tm.poll_rc == -EBUSY && tm.run_rc == -EBUSY && tm.free_rc == -EBUSY);
    /* the loop survived and works */
    CHECK_RC(epoll_loop_run(loop), 0);

cleanup:
    CHECK_RC(epoll_loop_free(loop), 0);
    close_fd(&p[0]);
    close_fd(&p[1]);
}

static void test_wake(void)
{
    epoll_loop *loop = NULL;
    int p[2] = {-1, -1};
    int n = 0;
    uint64_t start;

    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(make_pipe(p) == 0);
    CHECK_RC(epoll_loop_register(loop, p[0], EPOLL_LOOP_IN, count_cb, &n), 0);
    CHECK_RC(epoll_loop_wake(loop), 0);
    CHECK_RC(epoll_loop_wake(loop), 0); /* coalesced */
    start = now_ms();
    CHECK_RC(epoll_loop_poll(loop, 10000), 0);
    CHECK(now_ms() - start < 5000);
    CHECK_RC(epoll_loop_poll(loop, 0), 0);
    CHECK(n == 0);
    CHECK_RC(epoll_loop_unregister(loop, p[0]), 0);

cleanup:
    CHECK_RC(epoll_loop_free(loop), 0);
    close_fd(&p[0]);
    close_fd(&p[1]);
}

/* epoll_loop_stop from another thread ends a run blocked in epoll_wait. */
static void *stop_later(void *arg)
{
    struct timespec ts = {0, 30 * 1000 * 1000};

    nanosleep(&ts, NULL);
    return (void *)(intptr_t)epoll_loop_stop(arg);
}

static void test_stop_from_another_thread(void)
{
    epoll_loop *loop = NULL;
    pthread_t th;
    int started = 0;
    int p[2] = {-1, -1};
    int n = 0;
    void *thread_rc = NULL;

    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(make_pipe(p) == 0);
    CHECK_RC(epoll_loop_register(loop, p[0], EPOLL_LOOP_IN, count_cb, &n), 0);
    REQUIRE(pthread_create(&th, NULL, stop_later, loop) == 0);
    started = 1;
    CHECK_RC(epoll_loop_run(loop), 1);
    CHECK(n == 0);

cleanup:
    if (started) {
        pthread_join(th, &thread_rc);
        CHECK((intptr_t)thread_rc == 0);
    }
    CHECK_RC(epoll_loop_free(loop), 0);
    close_fd(&p[0]);
    close_fd(&p[1]);
}

static void test_stats(void)
{
    epoll_loop *loop = NULL;
    struct io_record rec;
    struct timer_rec t;
    epoll_loop_stats st;
    int p[2] = {-1, -1};

    memset(&rec, 0, sizeof rec);
    memset(&t, 0, sizeof t);
    REQUIRE(epoll_loop_new(&loop) == 0);
    REQUIRE(make_pipe(p) == 0);
    CHECK_RC(epoll_loop_register(loop, p[0], EPOLL_LOOP_IN, record_and_read_cb, &rec), 0);
    CHECK_RC(epoll_loop_timer_start(loop, 0, 0, timer_cb, &t, NULL), 0);
    REQUIRE(write_str(p[1], "s") == 0);
    CHECK_RC(epoll_loop_poll(loop, 5000), 2);
    CHECK_RC(epoll_loop_get_stats(loop, &st), 0);
    /* One poll: one epoll_wait, one fd event, two callbacks (the time spent in
     * them is checked by tests/loop_dispatch.rs with callbacks of known length). */
    CHECK(st.iterations == 1);
    CHECK(st.events == 1);
    CHECK(st.callbacks == 2);
    CHECK(st.timers_fired == 1);
    CHECK(st.registered == 1);
    CHECK(st.timers_pending == 0);
    CHECK_RC(epoll_loop_unregister(loop, p[0]), 0);

cleanup:
    CHECK_RC(epoll_loop_free(loop), 0);
    close_fd(&p[0]);
    close_fd(&p[1]);
}

/* ------------------------------------------------------------------ main */

int main(void)
{
    int fds_before;

    alarm(120); /* a hang is a failure, not a stuck test run */
    fds_before = count_open_fds();

    RUN(test_version);
    RUN(test_strerror);
    RUN(test_event_bits_match_sys_epoll);
    RUN(test_new_free);
    RUN(test_from_fd);
    RUN(test_null_loop_is_einval);
    RUN(test_bad_arguments);
    RUN(test_pipe_readable);
    RUN(test_modify_out_and_back);
    RUN(test_unregister_inside_callback);
    RUN(test_no_stale_dispatch_after_fd_reuse);
    RUN(test_unregister_closed_fd);
    RUN(test_register_inside_callback);
    RUN(test_oneshot_timer);
    RUN(test_repeating_timer);
    RUN(test_stop_from_callback);
    RUN(test_run_returns_0_when_idle);
    RUN(test_busy_inside_callback);
    RUN(test_wake);
    RUN(test_stop_from_another_thread);
    RUN(test_stats);

    check_no_fd_leaked(fds_before); /* last: nothing above may leave one open */
    return report();
}
