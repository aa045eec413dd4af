/* cicada's tiny C test runner: TEST() defines a case, CHECK*() record failures without aborting,
 * RUN_TESTS() runs the table and ends with "N passed, N failed". Header-only; no allocation. */
#ifndef CC_TEST_RUNNER_H
#define CC_TEST_RUNNER_H

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    void (*fn)(void);
} cc_test_case_t;

static int cc_test_failed_checks;

#define TEST(name) static void name(void)
#define TEST_ENTRY(name) {#name, name}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            cc_test_failed_checks++;                                                               \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);             \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            cc_test_failed_checks++;                                                               \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);             \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long cc_a_ = (long long)(a), cc_b_ = (long long)(b);                                  \
        if (cc_a_ != cc_b_) {                                                                      \
            cc_test_failed_checks++;                                                               \
            fprintf(stderr, "  %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a,    \
                    #b, cc_a_, cc_b_);                                                             \
        }                                                                                          \
    } while (0)

#define CHECK_MEM(ptr, len, lit)                                                                   \
    do {                                                                                           \
        size_t cc_l_ = (size_t)(len);                                                              \
        if (cc_l_ != sizeof(lit) - 1 || memcmp((ptr), (lit), cc_l_) != 0) {                        \
            cc_test_failed_checks++;                                                               \
            fprintf(stderr, "  %s:%d: %s == \"%s\" failed: got \"%.*s\"\n", __FILE__, __LINE__,    \
                    #ptr, lit, (int)cc_l_, (const char *)(ptr));                                   \
        }                                                                                          \
    } while (0)

/* Runs every case; a case fails when any of its checks failed. Exit status is nonzero on failure.
 * An optional argv[1] runs only the cases whose name contains it. */
static int cc_test_run(const cc_test_case_t *cases, size_t n, int argc, char **argv) {
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && !strstr(cases[i].name, argv[1]))
            continue;
        int before = cc_test_failed_checks;
        cases[i].fn();
        if (cc_test_failed_checks != before) {
            failed++;
            fprintf(stderr, "FAIL %s\n", cases[i].name);
        } else {
            passed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#define RUN_TESTS(...)                                                                             \
    int main(int argc, char **argv) {                                                              \
        static const cc_test_case_t cc_cases_[] = {__VA_ARGS__};                                   \
        return cc_test_run(cc_cases_, sizeof(cc_cases_) / sizeof(cc_cases_[0]), argc, argv);       \
    }

#endif
