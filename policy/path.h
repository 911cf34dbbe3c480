/*
 * path.h -- the canonical path check of SPEC step 1.
 *
 * A request target is turned into exactly one spelling, or refused. Two
 * spellings of one upstream object must never reach two different policies or
 * two different resource keys, so everything that could make two strings mean
 * one path (dot segments, empty segments, encoded slashes, overlong UTF-8,
 * lower-case hex, needlessly encoded letters) is either refused or rewritten.
 * Pure function: no I/O, no allocation.
 */
#ifndef FG_PATH_H
#define FG_PATH_H

#include <stddef.h>

/* Longest raw request target fencegate accepts (path and query together). */
#define FG_PATH_MAX 8192

/* Result of canonicalizing one request target. Strings point into the caller's
 * buffer `out` (path) and the input `raw` (query); nothing is allocated. */
typedef struct fg_path {
    const char *path; /* canonical path, NUL-terminated, in `out` */
    size_t path_len;
    const char *query; /* raw query after '?', not including it; NULL if none */
    size_t query_len;
} fg_path_t;

/*
 * Canonicalize the raw request target `raw` (`raw_len` bytes, as it appeared on
 * the request line: not percent-decoded) into `out` (`out_cap` bytes; the
 * canonical path is never longer than the raw one, so raw_len + 1 is enough).
 *
 * Returns 0 and fills `res`, or FG_EPATH with a static, human-readable reason in
 * `*why` (for the problem detail), or FG_EINVAL when out_cap is too small.
 * The query is returned untouched (it is not part of the path check).
 */
int fg_path_canonicalize(const char *raw, size_t raw_len, char *out, size_t out_cap, fg_path_t *res,
                         const char **why);

/*
 * Percent-decode one admin-API path segment (`in`, `len` bytes) into `out`
 * (`out_cap` bytes, NUL-terminated). Returns the decoded length, or FG_EPATH on
 * a bad escape, a NUL (raw or encoded), a raw '/', or when the result does not
 * fit in `out`. Used for /v1/resources/{key}.
 */
int fg_path_decode_segment(const char *in, size_t len, char *out, size_t out_cap);

#endif
