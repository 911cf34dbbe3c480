/*
 * token.h -- the strict fencing-token parser of SPEC step 6.
 *
 * A token is what a lock service handed out: an unsigned 64-bit integer. The
 * parser accepts only 1 to 20 ASCII digits whose value fits in u64; there is
 * no sign, no whitespace, no hex, no exponent, no list. Everything here is
 * exact integer arithmetic: no floating point anywhere on a token's way.
 */
#ifndef FG_TOKEN_H
#define FG_TOKEN_H

#include <stddef.h>
#include <stdint.h>

/* Room for the decimal form of any u64 plus NUL. */
#define FG_TOKEN_STRLEN 21

/* Parse `len` bytes at `s`. Returns 0 and sets *out, or FG_ETOKEN. */
int fg_token_parse(const char *s, size_t len, uint64_t *out);

/* Write the canonical decimal form (no leading zeros) of `v` into `buf`
 * (at least FG_TOKEN_STRLEN bytes). Returns the length written. */
size_t fg_token_format(uint64_t v, char buf[FG_TOKEN_STRLEN]);

#endif
