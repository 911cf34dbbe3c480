/*
 * decide.h -- SPEC request flow steps 1 to 6 as one pure function.
 *
 * From the request's method, raw target and a read-only view of its headers
 * to what the gateway must do: forward it unchecked, refuse it (with which
 * status, problem type and audit reason), or fence it (take the lane of this
 * resource key and check this token). The gateway only carries the decision
 * out; everything that decides lives here and is tested from a table
 * (tests/unit/test_decide.c) without a socket.
 *
 * No I/O and no allocation: the canonical path and the resource key are
 * written into buffers the caller provides.
 */
#ifndef FG_DECIDE_H
#define FG_DECIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/config.h"

/* Longest resource key (a key template expanded with the path's captures). */
#define FG_KEY_MAX 4096

typedef enum fg_action {
    FG_ACT_FORWARD = 1, /* forward without a fence check */
    FG_ACT_REFUSE,      /* answer with a problem (audited when the class says so) */
    FG_ACT_CHECK,       /* take the lane of `key`, check `token`, then forward */
} fg_action_t;

/* What kind of request it turned out to be: for metrics, logs, audit reasons. */
typedef enum fg_class {
    FG_CLASS_READ = 1,      /* forward: a read (a policy's read_methods, or GET/HEAD/OPTIONS) */
    FG_CLASS_UNCHECKED,     /* forward: mode = off, unmatched_writes or on_missing = forward */
    FG_CLASS_REPORT_ONLY,   /* forward: report-only without a usable token (audit it) */
    FG_CLASS_FENCED,        /* check */
    FG_CLASS_NON_CANONICAL, /* refuse 400 non-canonical-path (414 for a huge target) */
    FG_CLASS_UNMATCHED,     /* refuse 403 unmatched-write, audited "unmatched" */
    FG_CLASS_MISSING,       /* refuse 428 missing-token, audited "missing" */
    FG_CLASS_MALFORMED,     /* refuse 400 malformed-token, audited "malformed" */
} fg_class_t;

/* Read-only access to the request's header fields. */
typedef struct fg_header_view {
    /* Occurrences of field `name` (case-insensitive); *first gets the first
     * value (NULL when none). Values stay valid for the decision's life. */
    int (*count)(void *ctx, const char *name, const char **first);
    void *ctx;
} fg_header_view_t;

typedef struct fg_decision {
    fg_action_t action;
    fg_class_t cls;
    const fg_policy_t *policy; /* the matching policy (owned by cfg), or NULL */
    const char *path;          /* canonical path in path_buf (NULL if refused at step 1) */
    size_t path_len;
    const char *query; /* raw query inside `target`, or NULL */
    size_t query_len;
    const char *key; /* resource key in key_buf, or NULL */
    bool has_token;
    uint64_t token;
    /* refusals */
    int status;
    const char *type;  /* problem type suffix, e.g. "missing-token" */
    const char *title; /* problem title */
    char detail[256];  /* problem detail */
} fg_decision_t;

/*
 * Decide what to do with one request. `method` is NUL-terminated (already
 * checked to be a token by step 0), `target` is the raw request target
 * (`target_len` bytes). `path_buf` needs target_len + 1 bytes; `key_buf`
 * FG_KEY_MAX bytes. Fills *d; every pointer in it refers to cfg, target,
 * path_buf or key_buf. Returns 0, or FG_EINVAL when a buffer is too small.
 */
int fg_decide(const fg_config_t *cfg, const char *method, const char *target, size_t target_len,
              const fg_header_view_t *hv, char *path_buf, size_t path_cap, char *key_buf,
              fg_decision_t *d);

/* True for GET, HEAD and OPTIONS: the reads of a request no policy matches. */
bool fg_decide_default_read(const char *method);

#endif
