/*
 * signals_posts_test.c: signals and cross-thread posts driven from C.
 *
 * Built and run by tests/signals_posts.rs against the shared library under
 * AddressSanitizer + UBSan (LeakSanitizer included where it works):
 *
 *     signals_posts_test posts     8 threads x 10000 posts: all run, in order
 *                                  per thread, on the loop thread
 *     signals_posts_test signals   blocks SIGUSR1 in main before anything else,
 *                                  prints "ready pid=N", then counts SIGUSR1
 *                                  sent by another process (printing "signal N
 *                                  count C" for each) until 3; and the misuse
 *                                  codes of the signal calls
 *
 * C99, -Wall -Wextra -Wpedantic -Werror, goto-cleanup style (tests/c/harness.h).
 * Prints one line per failed check and "N passed, N failed"; exits non-zero
 * on any failure. Every wait is bounded (alarm() as a last resort).
 */
#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

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
    fprintf(stderr, "usage: %s posts|signals\n", argv[0]);
    return 2;
}
