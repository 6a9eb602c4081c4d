/*
 * harness.h: the checks, test runner and small helpers the C tests share.
 *
 * CHECK(cond) and CHECK_RC(expr, want) record a failure and go on;
 * REQUIRE(cond) records one (with errno) and jumps to the test's `cleanup:`
 * label. RUN(fn) runs a test and counts it as passed when none of its checks
 * failed; report() prints "N passed, N failed" and gives the exit status.
 * Also: now_ms(), poll_until() (a loop until a flag is set, bounded),
 * count_open_fds() and check_no_fd_leaked() (a program leaves no fd open).
 *
 * Header-only, C99: every function is static inline, so a test program that
 * does not use one is not warned about it.
 */
#ifndef EPOLL_LOOP_TEST_HARNESS_H
#define EPOLL_LOOP_TEST_HARNESS_H

#include "epoll_loop.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int g_check_failures; /* failed checks in the current test */
static int g_tests_passed;
static int g_tests_failed;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            g_check_failures++;                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

/* An API result for messages: the error's text, or what a count means. */
static inline const char *describe(int rc)
{
    return rc < 0 ? epoll_loop_strerror(rc) : rc == 0 ? "success" : "a count";
}

/* Checks that an API call returned `want`; prints both codes and messages if not. */
#define CHECK_RC(expr, want)                                                         \
    do {                                                                             \
        int got_ = (expr);                                                           \
        int want_ = (want);                                                          \
        if (got_ != want_) {                                                         \
            g_check_failures++;                                                      \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n",        \
                    __FILE__, __LINE__, #expr, got_, describe(got_), want_,          \
                    describe(want_));                                                \
        }                                                                            \
    } while (0)

/* For set-up steps: on failure, record it and jump to the test's cleanup label. */
#define REQUIRE(cond)                                                                \
    do {                                                                             \
        if (!(cond)) {                                                               \
            g_check_failures++;                                                      \
            fprintf(stderr, "%s:%d: required: %s (errno %d: %s)\n", __FILE__,        \
                    __LINE__, #cond, errno, strerror(errno));                        \
            goto cleanup;                                                            \
        }                                                                            \
    } while (0)

static inline void run_test(const char *name, void (*fn)(void))
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

static inline int report(void)
{
    printf("%d passed, %d failed\n", g_tests_passed, g_tests_failed);
    return g_tests_failed == 0 ? 0 : 1;
}

static inline uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Polls `loop` until `*flag` is non-zero or `limit_ms` passed; returns *flag. */
static inline int poll_until(epoll_loop *loop, const int *flag, uint64_t limit_ms)
{
    uint64_t deadline = now_ms() + limit_ms;

    while (!*flag && now_ms() < deadline) {
        if (epoll_loop_poll(loop, 50) < 0)
            break;
    }
    return *flag;
}

/* Number of open fds, from /proc/self/fd (the directory's own fd excluded). */
static inline int count_open_fds(void)
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

/* One more test, "no_fd_leaked", for the end of main: as many fds are open
 * now as `before`, counted at the start. */
static inline void check_no_fd_leaked(int before)
{
    int after = count_open_fds();

    if (before >= 0 && after == before) {
        g_tests_passed++;
    } else {
        g_tests_failed++;
        fprintf(stderr, "open fds: %d before, %d after\n", before, after);
        fprintf(stderr, "FAILED: no_fd_leaked\n");
    }
}

#endif
