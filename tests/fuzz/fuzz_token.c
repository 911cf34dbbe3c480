/*
 * fuzz_token.c -- fg_token_parse and fg_token_format (SPEC step 6).
 *
 * The input is a Fencing-Token header value. It must be accepted exactly when
 * it is 1 to 20 ASCII digits whose value is at most 2^64-1, with the value an
 * independent 128-bit reference computes. An accepted token formats back to
 * its digits without leading zeros, and formatting any u64 (the input's first
 * 8 bytes) agrees with snprintf and parses back to the same value.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "policy/error.h"
#include "policy/token.h"

/* Format v with fg_token_format into an exact-size buffer; check it against
 * snprintf and against parsing it back. */
static void check_format(uint64_t v)
{
    char *buf = malloc(FG_TOKEN_STRLEN);
    CHECK(buf);
    size_t n = fg_token_format(v, buf);
    char want[32];
    int wn = snprintf(want, sizeof want, "%" PRIu64, v);
    CHECK(wn > 0 && n == (size_t)wn && strcmp(buf, want) == 0);
    uint64_t back = ~v;
    CHECK(fg_token_parse(buf, n, &back) == 0 && back == v);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* reference: digit by digit in 128 bits, which 20 digits cannot overflow */
    bool ok = size >= 1 && size <= 20;
    unsigned __int128 ref = 0;
    for (size_t i = 0; ok && i < size; i++) {
        if (data[i] < '0' || data[i] > '9')
            ok = false;
        else
            ref = ref * 10 + (unsigned)(data[i] - '0');
    }
    ok = ok && ref <= UINT64_MAX;

    /* an exact-size copy, so that a read past `size` is seen by ASan */
    char *s = malloc(size ? size : 1);
    CHECK(s);
    if (size) memcpy(s, data, size);
    uint64_t v = 0;
    int rc = fg_token_parse(s, size, &v);
    CHECK(rc == 0 || rc == FG_ETOKEN);
    CHECK((rc == 0) == ok);
    if (ok) {
        CHECK(v == (uint64_t)ref);
        /* round trip: the canonical form is the input without leading zeros */
        size_t z = 0;
        while (z + 1 < size && s[z] == '0') z++;
        char buf[FG_TOKEN_STRLEN];
        size_t n = fg_token_format(v, buf);
        CHECK(n == size - z && memcmp(buf, s + z, n) == 0 && buf[n] == '\0');
        check_format(v);
    }
    free(s);

    uint64_t raw = 0;
    if (size) memcpy(&raw, data, size < sizeof raw ? size : sizeof raw);
    check_format(raw);
    return 0;
}
