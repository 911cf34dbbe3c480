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
 * Deadlines: every fg_store_* call has ONE deadline, opts.timeout_ms from its
 * start, covering the whole round trip including a (re)connect; a store that
 * answers slower, or trickles its answer, is unavailable for that call.
 *
 * Errors: FG_EUNAVAIL means the store did not answer (down, too slow, refused
 * the connection or is not durable enough); only that starts a backoff. A data
 * error (the store answered and refused the request: FG_EDATA) or an answer
 * the backend cannot read (FG_EPROTO) is reported as such; after FG_EPROTO, or
 * any error that leaves the connection in an unknown state, the connection is
 * dropped and made anew by the next call, with no backoff.
 *
 * Backoff: after FG_EUNAVAIL the wrappers drop the connection and refuse
 * further calls with FG_EUNAVAIL, without touching the network, until a
 * reconnect deadline that grows exponentially (with jitter) up to a cap. Handles
 * that share an fg_store_group_t also learn from each other: when any of them
 * sees the store answer after one saw it fail, a new "store is back" epoch
 * begins and every handle in backoff may reconnect at once, at most once per
 * epoch (after a failed early attempt, not again within 50 ms). So a dead store costs each
 * handle one connection attempt per backoff period, never a tight loop, and a
 * store that is back is used by every handle at once.
 *
 * Audit text: the attacker-controlled audit fields (method, path, client) are
 * escaped here, once, before any backend sees them (fg_audit_escape()), and
 * path is cut at FG_AUDIT_PATH_MAX bytes (path_truncated is then set).
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
/* Longest audit `path` kept (bytes, after escaping); SPEC "Audit". */
#define FG_AUDIT_PATH_MAX 1024
/* Longest operator text (`detail`) of a reset. */
#define FG_AUDIT_DETAIL_MAX 1024

typedef enum fg_reason {
    FG_REASON_NONE = 0,
    FG_REASON_STALE,
    FG_REASON_MISSING,
    FG_REASON_MALFORMED,
    FG_REASON_UNMATCHED,
    FG_REASON_REPORT_ONLY,
    FG_REASON_STATE_ERROR,
    FG_REASON_JUMP,  /* token more than max_token_jump above the hwm */
    FG_REASON_RESET, /* an operator's reset (admin API) */
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
    bool path_truncated; /* the path was cut at FG_AUDIT_PATH_MAX (set by the store layer) */
    const char *detail;  /* reset: the operator's text; else NULL */
} fg_audit_t;

typedef struct fg_audit_list {
    fg_audit_t *items; /* newest first (oldest first for an `after_id` query) */
    size_t n;
    char next[FG_AUDIT_ID_LEN]; /* cursor for the next page ("" on the last page) */
    void *mem;                  /* backend-private storage for the strings */
} fg_audit_list_t;

/* Free the strings and array of a query result; the struct itself is the caller's. */
void fg_audit_list_free(fg_audit_list_t *l);

typedef struct fg_audit_query {
    const char *resource; /* NULL: any */
    fg_reason_t reason;   /* FG_REASON_NONE: any */
    int64_t since_ms;     /* < 0: no lower bound; else time_ms >= since_ms */
    unsigned limit;       /* 1..1000 */
    /* Paging, both opaque ids from this store (NULL: none; never both):
     * before_id: records older than it (the `next` cursor of a page), newest first;
     * after_id: records newer than it, OLDEST first, so a follower can go on
     * with after_id = the last id it got. FG_EINVAL when not an id of this store. */
    const char *before_id;
    const char *after_id;
} fg_audit_query_t;

typedef enum fg_check_result {
    FG_CHECK_ACCEPTED = 1, /* token passed; hwm is now max(hwm, token) */
    FG_CHECK_STALE,        /* token refused; the audit record was written atomically */
    FG_CHECK_JUMP,         /* token more than max_jump above the hwm: refused, hwm
                              unchanged, audited (reason jump) atomically */
} fg_check_result_t;

/*
 * One fence check, SPEC step 7: the whole thing (compare, advance, audit on
 * stale) is one atomic step in the store.
 */
typedef struct fg_check {
    /* in */
    const char *resource;
    uint64_t token;
    bool strict;       /* compare '>' instead of '>=' */
    bool has_max_jump; /* refuse tokens more than max_jump above an existing hwm */
    uint64_t max_jump; /* (exact u64: token - hwm > max_jump; no limit without hwm) */
    fg_audit_t audit;  /* template recorded when refused: policy, method, path,
                          client, request_id, reason (STALE or REPORT_ONLY; a
                          refused jump is recorded as JUMP unless REPORT_ONLY);
                          token/highest/resource are filled in by the store */
    /* out */
    fg_check_result_t result;
    bool had_highest;               /* false: the resource had no hwm yet */
    uint64_t highest;               /* hwm before this check */
    char audit_id[FG_AUDIT_ID_LEN]; /* id of the audit record when stale */
} fg_check_t;

/* An operator's change of one hwm (admin API raise / reset). */
typedef enum fg_set_mode {
    FG_SET_RAISE = 1, /* hwm = max(hwm, token); never lowers; not audited */
    FG_SET_RESET,     /* hwm = token, lower or higher; audited (reason reset)
                         in the same atomic step */
} fg_set_mode_t;

typedef struct fg_set_hwm {
    /* in */
    const char *resource;
    uint64_t token;
    fg_set_mode_t mode;
    fg_audit_t audit; /* RESET: method, path, client, request_id, detail of the
                         admin call (borrowed); the rest is filled in by the store */
    /* out */
    bool had_highest;               /* false: the resource had no hwm */
    uint64_t highest;               /* hwm before */
    uint64_t now;                   /* hwm after */
    char audit_id[FG_AUDIT_ID_LEN]; /* RESET: id of its audit record */
} fg_set_hwm_t;

/* What the store promises about an accepted token surviving a crash. */
#define FG_DURABILITY_MAX 6
typedef struct fg_durability {
    size_t n; /* settings read, in the backend's order */
    struct {
        char name[40];
        char value[88];
    } setting[FG_DURABILITY_MAX];
    bool durable;     /* meets SPEC "require_durable = on" */
    char advice[200]; /* when !durable: which setting to change, and to what */
} fg_durability_t;

typedef struct fg_store fg_store_t;

/*
 * Handles on one store that learn from each other when the store is back (see
 * the top of this file). Created by the caller, shared through
 * fg_store_opts_t.group by any number of handles, freed with
 * fg_store_group_free after the last of them is closed. Thread-safe.
 */
typedef struct fg_store_group fg_store_group_t;
/* A new group, or NULL when out of memory. */
fg_store_group_t *fg_store_group_new(void);
void fg_store_group_free(fg_store_group_t *g);

/* Log hook for connection state changes ("down", "up", and "durability" with
 * the settings read at each connect); may be NULL. */
typedef void (*fg_store_log_fn)(void *arg, const char *event, const char *store,
                                const char *detail);

typedef struct fg_store_opts {
    uint64_t timeout_ms;     /* one whole store call, connect included; default 1000 */
    uint64_t backoff_min_ms; /* first reconnect delay; default 50 */
    uint64_t backoff_max_ms; /* cap; default 5000 */
    uint64_t audit_max;      /* audit records kept (approximately for Redis, never
                                fewer); 0 = no cap */
    bool require_durable;    /* a connection to a store that is not durable
                                (fg_durability_t.durable) fails with FG_EUNAVAIL */
    fg_store_group_t *group; /* may be NULL: the handle learns only from itself */
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
    /* Open the connection, create or upgrade the schema, by s->deadline_ms.
     * FG_EUNAVAIL when the store does not answer. */
    int (*connect)(fg_store_t *s);
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
    int (*set_hwm)(fg_store_t *s, fg_set_hwm_t *op);
    int (*durability)(fg_store_t *s, fg_durability_t *d);
    /* True when the idle connection is known to be dead (the server closed it)
     * without a round trip; NULL when the backend cannot tell. */
    bool (*stale)(fg_store_t *s);
    /* Event-loop mode (optional; NULL when the backend has none). On a
     * connected handle: the socket; queue one check's command into the output
     * buffer; write buffered output without blocking (*more: some is left);
     * read what the socket has without blocking; take the next complete reply
     * for `c` (1, with *check_rc its result; 0 when none is complete yet;
     * negative when the connection is unusable). */
    int (*loop_fd)(fg_store_t *s);
    int (*loop_send)(fg_store_t *s, fg_check_t *c);
    int (*loop_write)(fg_store_t *s, bool *more);
    int (*loop_read)(fg_store_t *s);
    int (*loop_reply)(fg_store_t *s, fg_check_t *c, int *check_rc);
} fg_store_backend_t;

/* Fields every backend handle starts with. Backends embed it first. */
struct fg_store {
    const fg_store_backend_t *be;
    fg_store_opts_t opts;
    char *url;     /* as given; owned */
    char *display; /* url without password, for logs; owned */
    bool connected;
    bool broken;            /* set by a backend: drop the connection after this call */
    bool was_down;          /* a "down" was logged and no "up" yet */
    uint64_t backoff_ms;    /* current delay */
    uint64_t retry_at_ms;   /* monotonic ms before which we do not reconnect */
    uint64_t attempt_at_ms; /* monotonic ms of the last connect attempt */
    bool epoch_retry;       /* that attempt was early, in a new epoch */
    uint64_t seen_epoch;    /* group epoch of the last connect attempt */
    uint64_t deadline_ms;   /* monotonic ms by which the current call must end */
    fg_durability_t dur;    /* read at the last connect */
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

/*
 * Raise or reset one hwm (see fg_set_hwm_t); strings borrowed for the call.
 * Returns 0 with the out fields set, or a negative code.
 */
int fg_store_set_hwm(fg_store_t *s, fg_set_hwm_t *op);

/*
 * The store's durability settings as read at the last (re)connect (connecting
 * first when needed) into *d. 0, or FG_EUNAVAIL when the store does not answer.
 * With opts.require_durable a non-durable store never connects, so *d is then
 * what was read when it was refused (d->durable false).
 */
int fg_store_durability(fg_store_t *s, fg_durability_t *d);

/*
 * Escape one attacker-controlled audit field so every store and any JSON
 * writer accept it: bytes 0x20-0x7E stay (a backslash becomes "\\"), valid
 * UTF-8 of U+00A0 and above stays, every other byte (control bytes, DEL,
 * invalid or overlong UTF-8, C1 controls, surrogates) becomes "\xHH" with
 * upper-case hex. The result is cut at `max` bytes (0: no cut) between two
 * escapes or characters; *truncated tells whether anything was cut (may be
 * NULL). Returns a malloc'd string (caller frees), or NULL when out of memory.
 */
char *fg_audit_escape(const char *s, size_t len, size_t max, bool *truncated);
/* True when fg_audit_escape would return `s` unchanged (uncut at `max`). */
bool fg_audit_is_clean(const char *s, size_t len, size_t max);

/* Last error text of this handle (never NULL). */
const char *fg_store_errstr(const fg_store_t *s);
/*
 * Event-loop mode, for backends that have it (Redis): fence checks are written
 * and answered on the caller's event loop, pipelined, with no thread hop.
 *
 * The connection is made with fg_store_connect(), which may block up to
 * state_timeout and so runs on another thread (a store thread); afterwards
 * only the loop's thread touches the handle. The loop watches
 * fg_store_loop_fd() and, for each check: fg_store_loop_send() queues it
 * (audit text escaped as everywhere), fg_store_loop_write() sends what is
 * queued (once per loop round: every check of the round leaves in one write),
 * fg_store_loop_read() and fg_store_loop_reply() take the answers, in order.
 * The loop owns the deadline: when the oldest check waits longer than
 * state_timeout, or any call fails, it calls fg_store_loop_fail(), which drops
 * the connection and starts a backoff like any outage; every check still
 * waiting then counts as failed (FG_EUNAVAIL).
 */
bool fg_store_loop_capable(const fg_store_t *s);
/* Connect now if not connected (honouring backoff): 0, or FG_EUNAVAIL. */
int fg_store_connect(fg_store_t *s);
/* True while connected. */
bool fg_store_connected(const fg_store_t *s);
/* The connection's socket, or -1. */
int fg_store_loop_fd(fg_store_t *s);
/* Queue check `c` (its strings are copied): 0 or a negative code. */
int fg_store_loop_send(fg_store_t *s, fg_check_t *c);
/* Write what is queued without blocking; *more: some is left (wait for POLLOUT). */
int fg_store_loop_write(fg_store_t *s, bool *more);
/* Read what the socket has without blocking: 0, or a negative code (drop it). */
int fg_store_loop_read(fg_store_t *s);
/* The next complete answer, for check `c`: 1 (result in c, its code in
 * *check_rc), 0 (none complete yet) or a negative code (drop the connection). */
int fg_store_loop_reply(fg_store_t *s, fg_check_t *c, int *check_rc);
/* The connection failed or timed out (`why`, may be NULL): drop it, back off. */
void fg_store_loop_fail(fg_store_t *s, const char *why);

/* The URL without password, for logs (made by fg_url_redact). */
const char *fg_store_display(const fg_store_t *s);
/* The backend's pool cap. */
unsigned fg_store_max_pool(const fg_store_t *s);

/* Monotonic and wall clocks in ms (shared by the backends and the gateway). */
uint64_t fg_now_mono_ms(void);
int64_t fg_now_wall_ms(void);
/* RFC 3339 UTC with milliseconds, e.g. 2026-11-28T12:00:00.123Z (buf >= 32). */
void fg_format_time(int64_t ms, char *buf, size_t len);

#endif
