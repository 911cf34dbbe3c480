/*
 * pattern.h -- `match` patterns and `key` templates of a policy.
 *
 * A pattern is a canonical path whose segments are either literal text or a
 * capture: `{name}` takes exactly one non-empty segment, `{name*}` (last
 * segment only) takes the non-empty rest of the path, slashes included.
 * Matching is exact: no case folding, no trailing-slash forgiveness.
 * A key template is text with `{name}` references to the pattern's captures;
 * the captured text is copied as it stands in the canonical path.
 * Pure functions: they allocate only in the compile step.
 */
#ifndef FG_PATTERN_H
#define FG_PATTERN_H

#include <stddef.h>

#define FG_PATTERN_MAX_CAPTURES 16

typedef struct fg_pattern fg_pattern_t;
typedef struct fg_keytmpl fg_keytmpl_t;

/* Where one capture landed in the matched path. */
typedef struct fg_capture {
    const char *at;
    size_t len;
} fg_capture_t;

typedef struct fg_captures {
    size_t n;
    fg_capture_t c[FG_PATTERN_MAX_CAPTURES];
} fg_captures_t;

/*
 * Compile `src`. Returns 0 and a new pattern in *out (free with
 * fg_pattern_free), or FG_ECONFIG with a static reason in *why, or FG_ENOMEM.
 */
int fg_pattern_compile(const char *src, fg_pattern_t **out, const char **why);
void fg_pattern_free(fg_pattern_t *p);

/* The source text the pattern was compiled from (owned by the pattern). */
const char *fg_pattern_source(const fg_pattern_t *p);

/* Index of capture `name` (`len` bytes), or -1. */
int fg_pattern_capture_index(const fg_pattern_t *p, const char *name, size_t len);

/* Match canonical `path` (`len` bytes). Returns 1 and fills `caps` (pointers
 * into `path`) on a match, 0 otherwise. */
int fg_pattern_match(const fg_pattern_t *p, const char *path, size_t len, fg_captures_t *caps);

/*
 * Compile key template `src` against pattern `p`: every `{name}` must be one of
 * p's captures. Returns 0 and *out (free with fg_keytmpl_free), or FG_ECONFIG
 * with a reason written into `why` (`why_len` bytes, it names the capture), or
 * FG_ENOMEM.
 */
int fg_keytmpl_compile(const char *src, const fg_pattern_t *p, fg_keytmpl_t **out, char *why,
                       size_t why_len);
void fg_keytmpl_free(fg_keytmpl_t *k);

/* Expand into `out` (`cap` bytes, NUL-terminated). Returns the key length, or
 * FG_EFULL when the key does not fit. */
int fg_keytmpl_expand(const fg_keytmpl_t *k, const fg_captures_t *caps, char *out, size_t cap);

#endif
