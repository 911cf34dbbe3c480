/*
 * config.h -- the INI configuration (SPEC "Configuration") as one immutable object.
 *
 * fg_config_load() reads a file through inih, applies defaults, validates every
 * value and either returns a complete fg_config_t or an error naming
 * "file:line: problem". A loaded config never changes: SIGHUP builds a new one
 * and the gateway swaps it in whole, so a request always sees one consistent
 * set of policies.
 */
#ifndef FG_CONFIG_H
#define FG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/pattern.h"

#define FG_CONFIG_ERR_LEN   512
#define FG_MAX_READ_METHODS 16

typedef enum fg_compare { FG_COMPARE_GE = 0, FG_COMPARE_GT } fg_compare_t;
typedef enum fg_mode { FG_MODE_ENFORCE = 0, FG_MODE_REPORT_ONLY, FG_MODE_OFF } fg_mode_t;

typedef struct fg_policy {
    char *name;
    int line;            /* line of the section header, for messages */
    fg_pattern_t *match; /* required */
    fg_keytmpl_t *key;   /* required */
    char *key_src;
    char *read_methods[FG_MAX_READ_METHODS];
    size_t n_read_methods;    /* default GET HEAD OPTIONS */
    char *token_header;       /* default "Fencing-Token" */
    fg_compare_t compare;     /* default >= */
    bool missing_forward;     /* on_missing = forward */
    bool state_error_forward; /* on_state_error = forward */
    fg_mode_t mode;           /* default enforce */
    char *upstream;           /* NULL: use the gateway's */
    bool has_max_jump;        /* max_token_jump is set */
    uint64_t max_jump;        /* refuse tokens more than this above the hwm (409 token-jump) */
    void *metrics;            /* set by the gateway (metrics slot), not by the parser */
} fg_policy_t;

typedef struct fg_config {
    char *file; /* the path it was loaded from */
    /* [gateway] */
    char *listen;                   /* "host:port", default 127.0.0.1:8080 */
    char *upstream;                 /* required: http(s)://host:port[/prefix] */
    char *state;                    /* default "sqlite:fencegate.db" */
    char *admin_listen;             /* default 127.0.0.1:8081; "" disables the admin listener */
    char *admin_token_file;         /* NULL or "" when unset */
    bool unmatched_forward;         /* unmatched_writes = forward */
    uint64_t upstream_timeout_ms;   /* default 30s */
    uint64_t fence_wait_ms;         /* default 5s */
    uint64_t upstream_grace_ms;     /* default: upstream_timeout (SPEC step 8 quarantine) */
    uint64_t header_timeout_ms;     /* whole request head, default 10s (SPEC step 0) */
    uint64_t body_timeout_ms;       /* between two body bytes, default 10s (SPEC step 0) */
    uint64_t body_min_rate;         /* bytes/s a body must average once it has taken
                                       body_timeout; default 1k, 0 = no rate check */
    unsigned max_connections;       /* default 1024 (client listener) */
    unsigned admin_max_connections; /* default 64 (admin listener, its own budget) */
    bool require_durable;           /* refuse a store that could lose an accepted token */
    /* fencegate extensions (documented in README) */
    unsigned workers;            /* event-loop threads; 0 = one per CPU, at most 8 */
    unsigned state_pool;         /* store connections (and store threads), default 4 */
    uint64_t state_timeout_ms;   /* one store round trip, default 1s */
    bool access_log;             /* access_log = on|off, default on: one JSON line per request */
    uint64_t audit_retention_ms; /* audit_retention, 0 = keep forever */
    uint64_t audit_max;          /* audit_max, default 1000000, 0 = no count limit */
    /* policies, in file order */
    fg_policy_t *policies;
    size_t n_policies;
} fg_config_t;

/*
 * Load and validate `path`. On success returns 0 and a new config in *out
 * (free with fg_config_free). On failure returns FG_ECONFIG (or FG_EIO when
 * the file cannot be read, FG_ENOMEM) and writes "file:line: problem" into
 * `err` (`err_len` bytes, always NUL-terminated); *out is left NULL.
 */
int fg_config_load(const char *path, fg_config_t **out, char *err, size_t err_len);

/* Same, from a string; `name` stands for the file name in messages. For tests. */
int fg_config_load_string(const char *name, const char *text, fg_config_t **out, char *err,
                          size_t err_len);

void fg_config_free(fg_config_t *cfg);

/*
 * First policy (file order) whose pattern matches canonical `path`; fills
 * `caps`. Returns NULL when none matches. The policy belongs to `cfg`.
 */
const fg_policy_t *fg_config_match(const fg_config_t *cfg, const char *path, size_t len,
                                   fg_captures_t *caps);

/* True when `method` (case-sensitive) is one of the policy's read methods. */
bool fg_policy_is_read(const fg_policy_t *p, const char *method);

/* Bounds every timeout must lie within (SPEC "Configuration"). */
#define FG_TIMEOUT_MIN_MS   1ULL
#define FG_TIMEOUT_MAX_MS   (24ULL * 3600 * 1000)
#define FG_RETENTION_MIN_MS (60ULL * 1000)
#define FG_RETENTION_MAX_MS (3650ULL * 24 * 3600 * 1000)

/* Parse "30s", "250ms", "2m" (bare digits mean seconds). 0 or FG_ECONFIG. */
int fg_config_parse_duration(const char *s, uint64_t *ms);
/* Parse "64k", "10m", "1g" (bare digits mean bytes). 0 or FG_ECONFIG. */
int fg_config_parse_size(const char *s, uint64_t *bytes);

/* Split "host:port" or "[v6]:port". Returns 0, or FG_ECONFIG. `host` gets
 * at most host_len-1 bytes. */
int fg_config_split_hostport(const char *s, char *host, size_t host_len, unsigned *port);

#endif
