/*
 * token.c -- the strict fencing-token parser of SPEC step 6. See token.h.
 */
#include "policy/token.h"

#include "policy/error.h"

int fg_token_parse(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > 20) return FG_ETOKEN;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9) return FG_ETOKEN;
        /* v * 10 + d must not pass UINT64_MAX: checked exactly, in integers */
        if (v > (UINT64_MAX - d) / 10) return FG_ETOKEN;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

size_t fg_token_format(uint64_t v, char buf[FG_TOKEN_STRLEN])
{
    char tmp[FG_TOKEN_STRLEN];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
    return n;
}
