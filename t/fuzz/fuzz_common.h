/* Shared by the libFuzzer harnesses (t/fuzz/fuzz_*.c): one APR pool per
 * process, cleared after every input, so a leak in a pool shows as growth
 * and anything not pool-owned as a LeakSanitizer report.  Built by
 * scripts/fuzz with clang -fsanitize=fuzzer,address,undefined against the
 * same core sources as the module. */
#ifndef CR_FUZZ_COMMON_H
#define CR_FUZZ_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>

static apr_pool_t *fuzz_root;

static apr_pool_t *fuzz_pool(void)
{
    if (!fuzz_root) {
        if (apr_initialize() != APR_SUCCESS || apr_pool_create(&fuzz_root, NULL) != APR_SUCCESS) {
            abort();
        }
    }
    return fuzz_root;
}

/* Stop the run with a message libFuzzer reports as a crash. */
#define FUZZ_ASSERT(cond, ...) do {                         \
        if (!(cond)) {                                      \
            fprintf(stderr, "fuzz assertion failed: %s: ", #cond); \
            fprintf(stderr, __VA_ARGS__);                   \
            fputc('\n', stderr);                            \
            abort();                                        \
        }                                                   \
    } while (0)

#endif
