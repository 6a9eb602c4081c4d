/*
 * dispatch: the cost of epoll_loop's callback dispatch against a bare
 * epoll_wait loop in C doing the same work.
 *
 *     dispatch [--rounds N] [--reps R] [--json]
 *
 * Two non-blocking eventfds A and B ping-pong: A's handler reads A and writes
 * B, B's handler reads B and writes A. One round trip is two wake-ups, two
 * handler calls, two reads and two writes. Both versions make exactly the same
 * syscalls (the loop's own epoll_wait included), so the difference between
 * them is what the library adds per event: the registry lookup, the generation
 * check, the callback call and its statistics.
 *
 * The versions alternate (bare, loop, bare, loop, ...) R times each; the
 * medians are printed in ns per round trip, with the throughput ratio
 * bare_ns / loop_ns (1.00 = no overhead; the target is >= 0.90).
 */
#include <epoll_loop.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int kick(int fd)
{
    uint64_t one = 1;
    return write(fd, &one, sizeof one) == (ssize_t)sizeof one ? 0 : -1;
}

static int drain(int fd)
{
    uint64_t v;
    return read(fd, &v, sizeof v) == (ssize_t)sizeof v ? 0 : -1;
}

/* ------------------------------------------------------------ the bare loop */

struct handler {
    int fd, peer;
    int is_a;
};

static double run_bare(int a, int b, long rounds)
{
    struct handler ha = {a, b, 1}, hb = {b, a, 0};
    struct epoll_event ev, evs[64];
    long done = 0;
    uint64_t t0;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int failed = 0;

    if (ep < 0)
        return -1;
    ev.events = EPOLLIN;
    ev.data.ptr = &ha;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev) < 0)
        failed = 1;
    ev.data.ptr = &hb;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, b, &ev) < 0)
        failed = 1;
    t0 = now_ns();
    if (!failed && kick(a) < 0)
        failed = 1;
    while (!failed && done < rounds) {
        int i, n = epoll_wait(ep, evs, 64, -1);
        if (n < 0 && errno != EINTR)
            failed = 1;
        for (i = 0; i < n; i++) {
            struct handler *h = evs[i].data.ptr;
            if (drain(h->fd) < 0) {
                failed = 1;
                break;
            }
            if (h->is_a && ++done == rounds)
                break;
            if (kick(h->peer) < 0)
                failed = 1;
        }
    }
    close(ep);
    return failed ? -1 : (double)(now_ns() - t0) / (double)rounds;
}

/* --------------------------------------------------------- through epoll_loop */

struct pingpong {
    int a, b;
    long done, rounds;
    int failed;
};

static void on_a(epoll_loop *loop, int fd, uint32_t events, void *ud)
{
    struct pingpong *p = ud;
    (void)events;
    if (drain(fd) < 0) {
        p->failed = 1;
        epoll_loop_stop(loop);
        return;
    }
    if (++p->done == p->rounds) {
        epoll_loop_stop(loop);
        return;
    }
    if (kick(p->b) < 0)
        p->failed = 1;
}

static void on_b(epoll_loop *loop, int fd, uint32_t events, void *ud)
{
    struct pingpong *p = ud;
    (void)loop;
    (void)events;
    if (drain(fd) < 0 || kick(p->a) < 0) {
        p->failed = 1;
        epoll_loop_stop(loop);
    }
}

static double run_loop(int a, int b, long rounds)
{
    struct pingpong p = {a, b, 0, rounds, 0};
    epoll_loop *loop = NULL;
    uint64_t t0;
    int rc;

    if (epoll_loop_new(&loop) < 0)
        return -1;
    rc = epoll_loop_register(loop, a, EPOLL_LOOP_IN, on_a, &p);
    if (rc == 0)
        rc = epoll_loop_register(loop, b, EPOLL_LOOP_IN, on_b, &p);
    t0 = now_ns();
    if (rc == 0)
        rc = kick(a);
    if (rc == 0)
        rc = epoll_loop_run(loop);
    t0 = now_ns() - t0;
    epoll_loop_free(loop);
    return rc < 0 || p.failed || p.done != rounds ? -1 : (double)t0 / (double)rounds;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    long rounds = 200000;
    int reps = 5, json = 0, i, a, b;
    double bare[64], viaLoop[64], mb, ml;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = (int)strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else {
            fprintf(stderr, "usage: %s [--rounds N] [--reps R (1..64)] [--json]\n", argv[0]);
            return 2;
        }
    }
    if (rounds < 1 || reps < 1 || reps > 64) {
        fprintf(stderr, "dispatch: --rounds must be >= 1 and --reps in 1..64\n");
        return 2;
    }
    a = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    b = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (a < 0 || b < 0) {
        perror("eventfd");
        return 1;
    }
    /* Warm up both paths (page faults, caches, the CPU's frequency). */
    if (run_bare(a, b, rounds / 10 + 1) < 0 || run_loop(a, b, rounds / 10 + 1) < 0) {
        fprintf(stderr, "dispatch: warm-up failed\n");
        return 1;
    }
    for (i = 0; i < reps; i++) {
        bare[i] = run_bare(a, b, rounds);
        viaLoop[i] = run_loop(a, b, rounds);
        if (bare[i] < 0 || viaLoop[i] < 0) {
            fprintf(stderr, "dispatch: a run failed\n");
            return 1;
        }
    }
    mb = median(bare, reps);
    ml = median(viaLoop, reps);
    if (json)
        printf("{\"rounds\": %ld, \"reps\": %d, \"bare_ns_per_round_trip\": %.1f, "
               "\"loop_ns_per_round_trip\": %.1f, \"ratio\": %.3f}\n",
               rounds, reps, mb, ml, mb / ml);
    else
        printf("dispatch (eventfd ping-pong, %ld round trips x %d, medians):\n"
               "  bare epoll_wait loop : %8.1f ns per round trip\n"
               "  epoll_loop callbacks : %8.1f ns per round trip\n"
               "  throughput ratio     : %8.3f (bare ns / loop ns)\n",
               rounds, reps, mb, ml, mb / ml);
    close(a);
    close(b);
    return 0;
}
