/*
 * timers: N timers (default 1 000 000) started with epoll_loop_timer_start and
 * fired by epoll_loop_run, in ns per timer.
 *
 *     timers [--count N] [--reps R] [--json]
 *
 * Timer i is due after i % 10 ms (ten deadlines, interleaved, so the queue
 * really orders them). The time to start them all and the time to fire them
 * all are reported separately and together. For scale, the same work is done
 * by a minimal C binary heap of (deadline, callback) pairs with no ids, no
 * cancellation and no clock reads: what a timer costs with nothing around it.
 */
#include <epoll_loop.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_timer(epoll_loop *loop, uint64_t id, void *ud)
{
    (void)loop;
    (void)id;
    (*(long *)ud)++;
}

/* Starts and fires n timers; stores ns per timer for each phase. */
static int run_loop(long n, double *start_ns, double *fire_ns)
{
    epoll_loop *loop = NULL;
    long fired = 0, i;
    uint64_t t0, t1, t2;
    int rc = 0;

    if (epoll_loop_new(&loop) < 0)
        return -1;
    t0 = now_ns();
    for (i = 0; i < n && rc == 0; i++)
        rc = epoll_loop_timer_start(loop, (uint64_t)(i % 10), 0, on_timer, &fired, NULL);
    t1 = now_ns();
    if (rc == 0)
        rc = epoll_loop_run(loop); /* 0 once every timer has fired */
    t2 = now_ns();
    epoll_loop_free(loop);
    if (rc != 0 || fired != n) {
        fprintf(stderr, "timers: run returned %d, fired %ld of %ld\n", rc, fired, n);
        return -1;
    }
    *start_ns = (double)(t1 - t0) / (double)n;
    /* Firing waits for the last deadline (9 ms) once: not the queue's cost. */
    *fire_ns = (double)(t2 - t1) / (double)n;
    return 0;
}

/* ------------------------------------------------- the minimal C baseline */

struct entry {
    uint64_t deadline, seq;
    void (*cb)(void *);
    void *ud;
};

static int before(const struct entry *x, const struct entry *y)
{
    return x->deadline < y->deadline || (x->deadline == y->deadline && x->seq < y->seq);
}

static void push(struct entry *h, long *len, struct entry e)
{
    long i = (*len)++;
    while (i > 0) {
        long p = (i - 1) / 2;
        if (!before(&e, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static struct entry pop(struct entry *h, long *len)
{
    struct entry top = h[0], last = h[--*len];
    long i = 0, n = *len;
    for (;;) {
        long c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && before(&h[c + 1], &h[c]))
            c++;
        if (!before(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (n > 0)
        h[i] = last;
    return top;
}

static void count_cb(void *ud)
{
    (*(long *)ud)++;
}

static int run_heap(long n, double *start_ns, double *fire_ns)
{
    struct entry *h = malloc((size_t)n * sizeof *h);
    long len = 0, fired = 0, i;
    uint64_t t0, t1, t2, base;

    if (!h)
        return -1;
    t0 = now_ns();
    base = t0;
    for (i = 0; i < n; i++) {
        struct entry e = {base + (uint64_t)(i % 10) * 1000000u, (uint64_t)i, count_cb, &fired};
        push(h, &len, e);
    }
    t1 = now_ns();
    while (len > 0) {
        struct entry e = pop(h, &len);
        e.cb(e.ud);
    }
    t2 = now_ns();
    free(h);
    if (fired != n)
        return -1;
    *start_ns = (double)(t1 - t0) / (double)n;
    *fire_ns = (double)(t2 - t1) / (double)n;
    return 0;
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
    long n = 1000000;
    int reps = 3, json = 0, i;
    double ls[16], lf[16], lt[16], hs[16], hf[16], ht[16];

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
            n = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = (int)strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else {
            fprintf(stderr, "usage: %s [--count N] [--reps R (1..16)] [--json]\n", argv[0]);
            return 2;
        }
    }
    if (n < 10 || reps < 1 || reps > 16) {
        fprintf(stderr, "timers: --count must be >= 10 and --reps in 1..16\n");
        return 2;
    }
    for (i = 0; i < reps; i++) {
        if (run_loop(n, &ls[i], &lf[i]) < 0 || run_heap(n, &hs[i], &hf[i]) < 0)
            return 1;
        lt[i] = ls[i] + lf[i];
        ht[i] = hs[i] + hf[i];
    }
    if (json)
        printf("{\"count\": %ld, \"reps\": %d, \"loop_start_ns\": %.1f, \"loop_fire_ns\": %.1f, "
               "\"loop_ns_per_timer\": %.1f, \"heap_start_ns\": %.1f, \"heap_fire_ns\": %.1f, "
               "\"heap_ns_per_timer\": %.1f}\n",
               n, reps, median(ls, reps), median(lf, reps), median(lt, reps), median(hs, reps),
               median(hf, reps), median(ht, reps));
    else
        printf("timers (%ld started and fired, %d reps, medians, ns per timer):\n"
               "                   start     fire    total\n"
               "  epoll_loop     %7.1f  %7.1f  %7.1f\n"
               "  bare C heap    %7.1f  %7.1f  %7.1f\n",
               n, reps, median(ls, reps), median(lf, reps), median(lt, reps), median(hs, reps),
               median(hf, reps), median(ht, reps));
    return 0;
}
