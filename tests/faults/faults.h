/*
 * faults.h -- the randomized fault checker (build/tests/faultcheck, tools/faults.sh),
 * in the style of Jepsen: writer threads send fenced PUTs through the real gateway
 * while a seeded nemesis breaks the processes and links around it; afterwards a
 * checker compares what the clients were told with what the upstream applied and
 * what the state store recorded (SPEC steps 7-8, Audit, "What is promised").
 *
 *   faultcheck.c  options, the processes (harness), the run, the Criterion glue
 *   clients.c     writer threads and the hwm poller: they write the history
 *   nemesis.c     the faults, each bounded in time and undone before the next
 *   linkproxy.c   a TCP relay between gateway and store that can cut, stall, trickle
 *   checker.c     reads the upstream log and the store itself, and judges
 *
 * Threads: the harness asserts (Criterion longjmps out of the test), so only the
 * test thread calls harness functions; clients, poller and link proxy use their
 * own sockets and libcurl handles and only report through the history.
 */
#ifndef FG_TEST_FAULTS_H
#define FG_TEST_FAULTS_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "harness/harness.h"

typedef enum { FC_SQLITE, FC_REDIS, FC_POSTGRES } fc_store_t;

/* The faults. Order is the order of the printed counts. */
typedef enum {
    FC_GATEWAY_KILL,  /* kill -9 the gateway, start it again (same config, ports, state) */
    FC_GATEWAY_PAUSE, /* SIGSTOP the gateway, SIGCONT after a while */
    FC_UPSTREAM_SLOW, /* writes ask the demo store to wait 0..2 s (X-Delay-Ms) before applying */
    FC_STORE_KILL,    /* kill -9 the state store (the whole Postgres group), start it again */
    FC_STORE_PAUSE,   /* SIGSTOP the state store, SIGCONT after a while */
    FC_LINK_CUT,      /* close every gateway-store connection, refuse new ones for a while */
    FC_LINK_STALL,    /* keep the connections, move no bytes for a while */
    FC_LINK_TRICKLE,  /* one byte per direction per 100 ms for a while */
    FC_NEMESIS_COUNT
} fc_nemesis_t;

const char *fc_nemesis_name(fc_nemesis_t n);
/* Whether a fault makes sense for a store kind (SQLite is embedded: no store faults). */
bool fc_nemesis_applies(fc_nemesis_t n, fc_store_t s);
const char *fc_store_name(fc_store_t s);

typedef struct fc_opts {
    uint64_t seed;
    unsigned seconds;   /* length of the faulty part of the run */
    unsigned clients;   /* writer threads */
    unsigned resources; /* /orders/1..N */
    unsigned think_ms;  /* each writer waits 0..2*think_ms between writes (pacing, not sync) */
    double stale;       /* fraction of writes that reuse an old token on purpose */
    fc_store_t store;
    bool nemesis[FC_NEMESIS_COUNT];
    bool verbose; /* print every fault as it happens */
} fc_opts_t;

/* Parse argv (without the program name). Returns 0, 1 for --help, or -1 with a
 * message in err. Unknown or inapplicable nemesis names are errors; "all" and
 * "-name" (remove) compose left to right: "all,-upstream-slow". */
int fc_opts_parse(int argc, char **argv, fc_opts_t *o, bool *seed_given, char *err, size_t len);
void fc_usage(FILE *f);

/* What a client was told, one value per answer class. */
typedef enum {
    FC_OK,         /* 2xx from the upstream */
    FC_STALE,      /* 409 stale-token */
    FC_JUMP,       /* 409 token-jump */
    FC_REFUSED,    /* 400/403/428: refused before the fence check */
    FC_STATE_DOWN, /* 503 state-unavailable */
    FC_FENCE_BUSY, /* 503 fence-busy */
    FC_UP_TIMEOUT, /* 504: may or may not have been applied */
    FC_UP_ERROR,   /* 502: may or may not have been applied */
    FC_NO_ANSWER,  /* connection refused/reset, client timeout: unknown */
    FC_OTHER,      /* anything else: a finding in itself */
    FC_OUTCOME_COUNT
} fc_outcome_t;

const char *fc_outcome_name(fc_outcome_t o);

/* One request as the client saw it. Its request id is "fc-c<client>-<index>", so the
 * checker finds it again from the upstream log and the audit trail without a map. */
typedef struct fc_op {
    uint64_t token;
    int64_t t0, t1;    /* ms since the run started: sent, answered */
    uint32_t resource; /* 1..resources */
    uint16_t status;   /* HTTP status, 0 without an answer */
    uint16_t delay_ms; /* X-Delay-Ms asked of the demo store (0: none) */
    uint8_t outcome;   /* fc_outcome_t */
    bool stale_writer; /* reused an old token on purpose */
    /* filled by the checker */
    uint32_t at_upstream; /* times its request id is in the upstream log */
    uint32_t audited;     /* audit records with its request id */
} fc_op_t;

#define FC_OPS_MAX (1u << 20) /* per client; a full history stops that client */

typedef struct fc_client {
    pthread_t th;
    unsigned id;
    uint64_t rng;
    fc_op_t *ops;
    size_t n, cap;
    uint64_t recent[16]; /* tokens this client took, for its stale writes */
    size_t n_recent;
    struct fc_run *run;
} fc_client_t;

#define FC_EVENTS_MAX  100000
#define FC_HWM_BAD_MAX 32

typedef struct fc_event {
    int64_t t0, t1; /* ms since start */
    fc_nemesis_t kind;
    unsigned param_ms; /* the length of the fault (or the time the store stayed down) */
} fc_event_t;

typedef struct fc_hwm_bad {
    int64_t t;
    uint32_t resource;
    uint64_t before, after;
} fc_hwm_bad_t;

/* Everything the threads share during a run. */
typedef struct fc_run {
    const fc_opts_t *o;
    char gw_url[64], admin_url[64];
    int64_t t_start_ns;
    atomic_bool stop;
    atomic_uint_fast64_t next_token; /* the lock service: only rises */
    atomic_int delay_max_ms;         /* > 0 while upstream-slow is on */
    fc_client_t *clients;            /* o->clients writers, and one more for the final writes */
    pthread_t poller;
    /* the hwm poller: last value seen per resource (index 1..resources) */
    uint64_t *hwm_seen;
    unsigned long hwm_samples;
    fc_hwm_bad_t hwm_bad[FC_HWM_BAD_MAX]; /* the first ones */
    unsigned long n_hwm_bad;
    unsigned n_started; /* writer threads running */
    /* the nemesis's own record (written by the test thread only) */
    fc_event_t *events;
    size_t n_events;
    unsigned long faults[FC_NEMESIS_COUNT];
    unsigned long crashes; /* gateway exits nobody asked for */
} fc_run_t;

typedef struct fc_link fc_link_t;

/* The processes of one run. */
typedef struct fc_env {
    fc_opts_t o;
    fgt_upstream_t up;
    fgt_gateway_t gw;
    fgt_redis_t redis;
    fgt_pg_t pg;
    fc_link_t *link; /* NULL for SQLite */
    char sqlite_path[300];
    fc_run_t run;
} fc_env_t;

extern volatile sig_atomic_t fc_interrupted; /* SIGINT/SIGTERM: end the faulty part early */

/* clients.c */
int64_t fc_now_ms(const fc_run_t *run);
uint64_t fc_rand(uint64_t *state);
void fc_sleep_ms(unsigned ms);
/* Parse 1-20 decimal digits into a u64 (no sign, no overflow). */
bool fc_parse_u64(const char *s, size_t len, uint64_t *out);
/* Start the poller and the writers (false: a thread could not start, and those
 * that did are stopped again); fc_run_stop joins them. */
bool fc_run_start(fc_run_t *run);
void fc_run_stop(fc_run_t *run);
/* One fenced PUT by client c (the test thread uses the extra client for the final
 * writes). Appends to c->ops and returns the op, or NULL when the history is full. */
fc_op_t *fc_put(fc_client_t *c, uint32_t resource, uint64_t token, bool stale_writer,
                unsigned delay_ms);
/* GET on the admin listener; returns the status (0: no answer) and the body in buf. */
long fc_admin_get(const fc_run_t *run, const char *path, char *buf, size_t len);

/* nemesis.c: inject faults until `seconds` passed (or interrupted), leaving every
 * process up and the link open. Runs on the test thread. */
void fc_nemesis_run(fc_env_t *e);
/* The gateway is alive (a crash is counted and the gateway started again). */
void fc_gateway_watch(fc_env_t *e);
/* Send sig to every process whose parent is `parent` (found through /proc);
 * returns how many. Not async-signal-safe. */
unsigned fc_signal_children(pid_t parent, int sig);

/* linkproxy.c */
typedef enum {
    FC_LINK_PASS,
    FC_LINK_CUT_MODE,
    FC_LINK_STALL_MODE,
    FC_LINK_TRICKLE_MODE
} fc_link_mode_t;
/* Listen on a free loopback port and relay every connection to 127.0.0.1:target_port.
 * Returns NULL on failure. fc_link_stop closes everything and frees it. */
fc_link_t *fc_link_start(int target_port);
int fc_link_port(const fc_link_t *l);
void fc_link_set(fc_link_t *l, fc_link_mode_t mode);
void fc_link_stop(fc_link_t *l);

/* checker.c: heal, read, judge, print. Returns the number of violations. */
unsigned long fc_check(fc_env_t *e);

#endif
