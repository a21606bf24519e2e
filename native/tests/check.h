/* check.h - the tests' one assertion: CHECK(cond, printf-style message) reports the file and line, counts the
 * failure in `failures` and goes on, so one run lists every failed check. C and C++. */
#ifndef STYLEID_EDGE_TESTS_CHECK_H
#define STYLEID_EDGE_TESTS_CHECK_H

#include <stdio.h>

static int failures = 0;

#define CHECK(cond, ...)                                         \
    do {                                                         \
        if (!(cond)) {                                           \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                        \
            fprintf(stderr, "\n");                               \
            ++failures;                                          \
        }                                                        \
    } while (0)

#endif
