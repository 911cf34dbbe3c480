/*
 * fuzz.h -- what the libFuzzer harnesses of tests/fuzz share.
 *
 * A harness checks properties of the parser's answer, not only that it did
 * not crash: CHECK() names the property on stderr and traps, so libFuzzer
 * keeps the input as a crash artifact and tools/fuzz.sh reports FAIL.
 * Buffers handed to the code under test are allocated at their exact size,
 * so that ASan sees a single byte written or read past the end.
 */
#ifndef FG_FUZZ_H
#define FG_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond);          \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

/* The entry point libFuzzer calls with each input. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
