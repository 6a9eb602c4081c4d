/*
 * harness.h: the checks, test runner and small helpers the C tests share.
 *
 * CHECK(cond) and CHECK_RC(expr, want) record a failure and go on;
 * REQUIRE(cond) records one and jumps to the test's `cleanup:` label.
 * RUN(fn) runs a test and counts it as passed when none of its checks failed;
 * report() prints "N passed, N failed" and gives the exit status.
 *
 * Header-only (every function static), C99.
 */
#ifndef EPOLL_LOOP_TEST_HARNESS_H
#define EPOLL_LOOP_TEST_HARNESS_H

#include "epoll_loop.h"

#include <stdint.h>
#include <stdio.h>
#include <time.h>

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

#endif
