/*
 * problem.h -- RFC 9457 problem+json bodies (SPEC "Errors") and exact u64
 * numbers in JSON.
 *
 * Tokens and high-water marks are u64; jansson's integers are signed 64-bit,
 * so a token above 2^63-1 cannot go through json_integer(). These helpers let
 * jansson escape every string and then append the u64 members as exact
 * decimal text.
 */
#ifndef FG_PROBLEM_H
#define FG_PROBLEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct fg_u64_field {
    const char *name; /* a plain ASCII member name (not escaped) */
    bool present;     /* false: the member is written as null */
    uint64_t value;
} fg_u64_field_t;

/*
 * Serialise object `o` (compact, insertion order) followed by the members in
 * `f` (n of them). Returns a malloc'd NUL-terminated string (caller frees) and
 * its length in *len, or NULL on ENOMEM. `o` is not consumed.
 */
char *fg_json_dumps_u64(const json_t *o, const fg_u64_field_t *f, size_t n, size_t *len);

/* A problem body. Strings may be NULL (member omitted); `resource` etc. are
 * only written when non-NULL. */
typedef struct fg_problem {
    int status;
    const char *type; /* suffix, e.g. "stale-token" */
    const char *title;
    const char *detail;
    const char *request_id;
    const char *resource;
    const char *policy;
    bool has_token;
    uint64_t token;
    bool has_highest;
    uint64_t highest;
} fg_problem_t;

/* malloc'd JSON text of the problem (caller frees), or NULL on ENOMEM. */
char *fg_problem_json(const fg_problem_t *p, size_t *len);

#endif
