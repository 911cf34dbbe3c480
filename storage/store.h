/*
 * store.h -- the state store: where high-water marks and the audit trail live.
 *
 * One interface, several backends (sqlite.c, redis.c, postgres.c), chosen by
 * the scheme of the `state =` URL. A backend is a const table of function
 * pointers (fg_store_backend_t); callers only use the fg_store_* functions
 * below and never learn which backend they talk to.
 *
 * Threading: one fg_store_t is one connection and is NOT thread-safe; a thread
 * that needs the store opens its own (the gateway keeps a bounded pool of them).
 *
 * Connection trouble: a backend reports FG_EUNAVAIL when the store does not
 * answer. The wrappers here then drop the connection and refuse further calls
 * with FG_EUNAVAIL, without touching the network, until a reconnect deadline
 * that grows exponentially (with jitter) up to a cap. So a dead store costs one
 * connection attempt per handle per backoff period, never a tight loop.
 */
#ifndef FG_STORE_H
#define FG_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FG_STORE_ERR_LEN 256
#define FG_AUDIT_ID_LEN  48
/* Most checks one fg_store_check() call may carry. */
#define FG_STORE_BATCH_MAX 128

typedef enum fg_reason {
    FG_REASON_NONE = 0,
    FG_REASON_STALE,
    FG_REASON_MISSING,
    FG_REASON_MALFORMED,
    FG_REASON_UNMATCHED,
    FG_REASON_REPORT_ONLY,
    FG_REASON_STATE_ERROR,
} fg_reason_t;

/* "stale", "missing", ... ; NULL for FG_REASON_NONE. */
const char *fg_reason_name(fg_reason_t r);
/* Inverse of fg_reason_name; FG_REASON_NONE when unknown. */
fg_reason_t fg_reason_parse(const char *s);

/*
 * One audit record. As input (append, or the template of a check) the strings
 * are borrowed from the caller and may be NULL (stored as null/empty); `id`
 * and `time_ms` are assigned by the store. In query results everything is
 * owned by the fg_audit_list_t.
 */
typedef struct fg_audit {
    char id[FG_AUDIT_ID_LEN]; /* store-assigned, opaque, unique per store */
    int64_t time_ms;          /* Unix ms, UTC */
    const char *policy;
    const char *resource;
    const char *method;
    const char *path;
    const char *client;
    const char *request_id;
    bool has_token;
    uint64_t token;
    bool has_highest;
    uint64_t highest;
    fg_reason_t reason;
} fg_audit_t;

typedef struct fg_audit_list {
    fg_audit_t *items; /* newest first */
    size_t n;
    void *mem; /* backend-private storage for the strings */
} fg_audit_list_t;

/* Free the strings and array of a query result; the struct itself is the caller's. */
void fg_audit_list_free(fg_audit_list_t *l);

typedef struct fg_audit_query {
    const char *resource; /* NULL: any */
    fg_reason_t reason;   /* FG_REASON_NONE: any */
    int64_t since_ms;     /* < 0: no lower bound; else time_ms >= since_ms */
    unsigned limit;       /* 1..1000 */
} fg_audit_query_t;

typedef enum fg_check_result {
    FG_CHECK_ACCEPTED = 1, /* token passed; hwm is now max(hwm, token) */
    FG_CHECK_STALE,        /* token refused; the audit record was written atomically */
} fg_check_result_t;

/*
 * One fence check, SPEC step 7: the whole thing (compare, advance, audit on
 * stale) is one atomic step in the store.
 */
typedef struct fg_check {
    /* in */
    const char *resource;
    uint64_t token;
    bool strict;      /* compare '>' instead of '>=' */
    fg_audit_t audit; /* template recorded when stale: policy, method, path,
                         client, request_id, reason (STALE or REPORT_ONLY);
                         token/highest/resource are filled in by the store */
    /* out */
    fg_check_result_t result;
    bool had_highest;               /* false: the resource had no hwm yet */
    uint64_t highest;               /* hwm before this check */
    char audit_id[FG_AUDIT_ID_LEN]; /* id of the audit record when stale */
} fg_check_t;

typedef struct fg_store fg_store_t;

/* Log hook for connection state changes ("down", "up"); may be NULL. */
typedef void (*fg_store_log_fn)(void *arg, const char *event, const char *store,
                                const char *detail);

typedef struct fg_store_opts {
    uint64_t timeout_ms;     /* one round trip / connect; default 1000 */
    uint64_t backoff_min_ms; /* first reconnect delay; default 50 */
    uint64_t backoff_max_ms; /* cap; default 5000 */
    uint64_t audit_max;      /* approximate cap on audit records kept; 0 = backend default */
    fg_store_log_fn log;
    void *log_arg;
} fg_store_opts_t;

/* A backend: filled by each backend file, looked up by URL scheme. */
typedef struct fg_store_backend {
    const char *scheme; /* "sqlite", "redis", "postgres" */
    unsigned max_pool;  /* most connections worth opening (sqlite: 1 writer) */
    /* Allocate the handle (zeroed, `size` bytes, base struct first) and parse the
     * URL. No I/O yet. */
    int (*create)(const char *url, const fg_store_opts_t *o, fg_store_t **out, char *err,
                  size_t err_len);
    int (*connect)(fg_store_t *s);     /* open the connection, create the schema */
    void (*disconnect)(fg_store_t *s); /* drop the connection (idempotent) */
    void (*destroy)(fg_store_t *s);    /* free the handle (after disconnect) */
    int (*check)(fg_store_t *s, fg_check_t *checks, size_t n);
    int (*get)(fg_store_t *s, const char *resource, uint64_t *hwm);
    int (*audit_append)(fg_store_t *s, fg_audit_t *rec);
    int (*audit_query)(fg_store_t *s, const fg_audit_query_t *q, fg_audit_list_t *out);
    /* Delete at most `batch` audit records older than `older_than_ms` (wall ms;
     * < 0: no age limit) and at most `batch` beyond the newest `keep_max` (0: no
     * count limit); *deleted gets how many went. */
    int (*audit_purge)(fg_store_t *s, int64_t older_than_ms, uint64_t keep_max, size_t batch,
                       size_t *deleted);
    int (*ping)(fg_store_t *s);
} fg_store_backend_t;

/* Fields every backend handle starts with. Backends embed it first. */
struct fg_store {
    const fg_store_backend_t *be;
    fg_store_opts_t opts;
    char *url;     /* as given; owned */
    char *display; /* url without password, for logs; owned */
    bool connected;
    bool was_down;        /* a "down" was logged and no "up" yet */
    uint64_t backoff_ms;  /* current delay */
    uint64_t retry_at_ms; /* monotonic ms before which we do not reconnect */
    char err[FG_STORE_ERR_LEN];
};

/* The backend for `url`'s scheme, or NULL. */
const fg_store_backend_t *fg_store_backend_for(const char *url);

/*
 * Create a store handle for `url` ("sqlite:PATH", "redis://host:port/db",
 * "postgres://..."). No connection is made yet (the first call connects), so a
 * store that is down at start-up does not stop the gateway. Returns 0 and *out
 * (close with fg_store_close), or FG_EINVAL/FG_ENOMEM with a message in `err`.
 * `o` may be NULL for defaults.
 */
int fg_store_open(const char *url, const fg_store_opts_t *o, fg_store_t **out, char *err,
                  size_t err_len);
void fg_store_close(fg_store_t *s);

/*
 * Run `n` fence checks, each atomically, in order. Backends batch them in one
 * transaction or one pipeline. Returns 0 when every check has its result, or a
 * negative code (FG_EUNAVAIL when the store does not answer) when none can be
 * trusted: the caller must then treat every check of the batch as failed.
 */
int fg_store_check(fg_store_t *s, fg_check_t *checks, size_t n);

/* hwm of `resource` into *hwm: 0, FG_ENOTFOUND, or an error. */
int fg_store_get(fg_store_t *s, const char *resource, uint64_t *hwm);

/* Append one audit record; fills rec->id and rec->time_ms. */
int fg_store_audit_append(fg_store_t *s, fg_audit_t *rec);

/* Query the audit trail, newest first. On 0, *out must be freed with
 * fg_audit_list_free. */
int fg_store_audit_query(fg_store_t *s, const fg_audit_query_t *q, fg_audit_list_t *out);

/*
 * Audit retention: delete one bounded batch (at most `batch` records per
 * rule) of records older than `older_than_ms` (< 0: no age rule) and of
 * records beyond the newest `keep_max` (0: no count rule). *deleted gets the
 * number removed; call again while it equals the batch size.
 */
int fg_store_audit_purge(fg_store_t *s, int64_t older_than_ms, uint64_t keep_max, size_t batch,
                         size_t *deleted);

/* Round trip to the store: 0 when it answers. */
int fg_store_ping(fg_store_t *s);

/* Last error text of this handle (never NULL). */
const char *fg_store_errstr(const fg_store_t *s);
/* The URL without password, for logs. */
const char *fg_store_display(const fg_store_t *s);
/* The backend's pool cap. */
unsigned fg_store_max_pool(const fg_store_t *s);

/* Monotonic and wall clocks in ms (shared by the backends and the gateway). */
uint64_t fg_now_mono_ms(void);
int64_t fg_now_wall_ms(void);
/* RFC 3339 UTC with milliseconds, e.g. 2026-11-28T12:00:00.123Z (buf >= 32). */
void fg_format_time(int64_t ms, char *buf, size_t len);

#endif
