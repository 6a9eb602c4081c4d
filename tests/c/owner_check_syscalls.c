/* The loop's per-call checks (live, poison, owner thread) make no system call.
 *
 * Run by tests/misuse_threads.rs under `valgrind --tool=none
 * --trace-syscalls=yes` (or `strace -f` without valgrind), which counts the
 * system calls each thread makes between two getppid() markers (nothing else
 * here calls getppid). Sections, in this order:
 *
 *   main thread: "idle"     CALLS x epoll_loop_get_stats, loop not running
 *                "callback" the same inside a timer callback (the loop is
 *                           owned by this thread: the owner compare runs)
 *                "control"  CALLS x epoll_loop_modify (an epoll_ctl each):
 *                           shows the count sees the library's system calls
 *   other thread: "busy"    CALLS x epoll_loop_get_stats while the main thread
 *                           runs the loop: each is -EBUSY
 *
 * Prints "ok" and exits 0 when every call returned what it should.
 */
#include <epoll_loop.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define CALLS 1000

static volatile int running; /* set by the loop thread, read by the other */

static void check(const char *what, int rc, int want) {
    if (rc != want) {
        fprintf(stderr, "%s returned %d, not %d\n", what, rc, want);
        exit(1);
    }
}

static void get_stats_calls(epoll_loop *lp, int want) {
    epoll_loop_stats st;
    int i;
    (void)getppid(); /* begin */
    for (i = 0; i < CALLS; i++) {
        int rc = epoll_loop_get_stats(lp, &st);
        if (rc != want) {
            check("epoll_loop_get_stats", rc, want);
        }
    }
    (void)getppid(); /* end */
}

static void on_timer(epoll_loop *lp, uint64_t id, void *ud) {
    (void)id;
    (void)ud;
    get_stats_calls(lp, 0); /* "callback" */
    __atomic_store_n(&running, 1, __ATOMIC_SEQ_CST);
}

static void on_io(epoll_loop *lp, int fd, uint32_t events, void *ud) {
    (void)lp;
    (void)fd;
    (void)events;
    (void)ud;
}

static void *other_thread(void *arg) {
    epoll_loop *lp = arg;
    while (!__atomic_load_n(&running, __ATOMIC_SEQ_CST)) {
        usleep(1000);
    }
    get_stats_calls(lp, -EBUSY); /* "busy" */
    check("epoll_loop_stop", epoll_loop_stop(lp), 0);
    return NULL;
}

int main(void) {
    epoll_loop *lp = NULL;
    int fds[2];
    int i;
    uint64_t id = 0;
    pthread_t t;

    check("epoll_loop_new", epoll_loop_new(&lp), 0);
    check("pipe", pipe(fds), 0);
    /* Never readable: keeps the loop running until epoll_loop_stop. */
    check("epoll_loop_register", epoll_loop_register(lp, fds[0], EPOLL_LOOP_IN, on_io, NULL), 0);

    get_stats_calls(lp, 0); /* "idle" */

    check("epoll_loop_timer_start", epoll_loop_timer_start(lp, 0, 0, on_timer, NULL, &id), 0);
    check("pthread_create", pthread_create(&t, NULL, other_thread, lp), 0);
    check("epoll_loop_run", epoll_loop_run(lp), 1);
    check("pthread_join", pthread_join(t, NULL), 0);

    (void)getppid(); /* begin "control" */
    for (i = 0; i < CALLS; i++) {
        uint32_t events = (i % 2) ? EPOLL_LOOP_IN : EPOLL_LOOP_IN | EPOLL_LOOP_RDHUP;
        int rc = epoll_loop_modify(lp, fds[0], events);
        if (rc != 0) {
            check("epoll_loop_modify", rc, 0);
        }
    }
    (void)getppid(); /* end */

    check("epoll_loop_free", epoll_loop_free(lp), 0);
    close(fds[0]);
    close(fds[1]);
    puts("ok");
    return 0;
}
