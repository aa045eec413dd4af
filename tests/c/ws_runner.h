/* Minimal test runner for the WebSocket C tests: TEST/CHECK macros and a report whose last line
 * is "N passed, N failed". Header-only, one copy per test binary; holds no test logic. */
#ifndef CC_WS_RUNNER_H
#define CC_WS_RUNNER_H

#include <stdio.h>

static int ws_tests_passed, ws_tests_failed, ws_cur_failures;

#define TEST(name) static void name(void)

/* Records a failure and carries on, so one run shows every broken expectation. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            if (ws_cur_failures++ < 10)                                                            \
                fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);         \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long ws_a_ = (long long)(a), ws_b_ = (long long)(b);                                  \
        if (ws_a_ != ws_b_) {                                                                      \
            if (ws_cur_failures++ < 10)                                                            \
                fprintf(stderr, "  %s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__,  \
                        #a, ws_a_, #b, ws_b_);                                                     \
        }                                                                                          \
    } while (0)

#define RUN(name)                                                                                  \
    do {                                                                                           \
        ws_cur_failures = 0;                                                                       \
        name();                                                                                    \
        if (ws_cur_failures) {                                                                     \
            ws_tests_failed++;                                                                     \
            fprintf(stderr, "FAIL %s (%d failed checks)\n", #name, ws_cur_failures);               \
        } else {                                                                                   \
            ws_tests_passed++;                                                                     \
        }                                                                                          \
    } while (0)

static int ws_report(void) {
    printf("%d passed, %d failed\n", ws_tests_passed, ws_tests_failed);
    return ws_tests_failed ? 1 : 0;
}

#endif
