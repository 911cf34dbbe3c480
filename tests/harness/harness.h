/*
 * harness.h -- start real processes for integration tests, and talk HTTP to them.
 *
 * Every process a test starts (gateway, demo store, redis-server) runs on a
 * free loopback port in a private temporary directory and is killed by the
 * harness when the test ends (fgt_*_stop, or the atexit/teardown sweep), so a
 * failing test leaves nothing running.
 *
 * Binaries: FG_BIN_GATEWAY and FG_BIN_DEMO_STORE are compiled in by CMake.
 * Redis: FG_TEST_REDIS_URL (set by the test script) names a shared server;
 * tests that must stop or restart the store start their own with
 * fgt_redis_start().
 */
#ifndef FG_TEST_HARNESS_H
#define FG_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

/* ---- processes ---- */
typedef struct fgt_proc {
    pid_t pid;
    char log[512]; /* file that receives its stdout+stderr */
} fgt_proc_t;

/* A fresh private directory under $TMPDIR (removed by fgt_cleanup_dirs at exit). */
const char *fgt_tmpdir(void);
/* A TCP port on 127.0.0.1 that was free a moment ago. */
int fgt_free_port(void);
/* Wait until 127.0.0.1:port accepts connections (true) or timeout_ms passes. */
bool fgt_wait_port(int port, int timeout_ms);
/* fork+exec argv with stdout/stderr to `logfile`. Aborts the test on failure. */
fgt_proc_t fgt_spawn(char *const argv[], const char *logfile);
/* Send `sig` and reap (SIGKILL after 5 s for SIGTERM). Returns the exit status as waitpid gives it.
 */
int fgt_stop(fgt_proc_t *p, int sig);
/* Peak resident set (VmHWM) of a live process in KiB, or -1. */
long fgt_vm_hwm_kib(pid_t pid);
/* Contents of a whole file, malloc'd (NULL if unreadable). */
char *fgt_read_file(const char *path);

/* ---- demo store (upstream) ---- */
typedef struct fgt_upstream {
    fgt_proc_t proc;
    int port;
    char url[64]; /* http://127.0.0.1:PORT */
} fgt_upstream_t;

/* Start build/fencegate-demo-store on a free port. delay_max_ms > 0: each
 * answer is delayed by a random 0..delay_max_ms. */
void fgt_upstream_start(fgt_upstream_t *u, int delay_max_ms);
void fgt_upstream_stop(fgt_upstream_t *u);
/* The demo store's write log: a JSON array, in arrival order, of objects
 * {"seq","method","path","token"(string or null),"size","fnv1a64"(hex string),
 * "headers"{lower-case name: value}}. Caller json_decref()s. */
json_t *fgt_upstream_log(fgt_upstream_t *u);
/* How many requests (reads and writes) the demo store has seen. */
long fgt_upstream_count(fgt_upstream_t *u);
/* One number of the demo store's /_fg/count: "requests", "writes",
 * "inflight" (being handled now) or "held" (waiting for a release). */
long fgt_upstream_stat(fgt_upstream_t *u, const char *what);
/* Poll that number until it equals `want` (true) or timeout_ms passes (false):
 * how a test waits for the upstream to reach a state, instead of sleeping. */
bool fgt_wait_upstream_stat(fgt_upstream_t *u, const char *what, long want, int timeout_ms);
/* Let every request held at the demo store (X-Hold: 1) go on. */
void fgt_upstream_release(fgt_upstream_t *u);

/* ---- redis ---- */
typedef struct fgt_redis {
    fgt_proc_t proc;
    int port;
    char dir[256];
    char url[64]; /* redis://127.0.0.1:PORT/0 */
} fgt_redis_t;

/* Start a private redis-server (appendonly yes, appendfsync always) in its own dir. */
void fgt_redis_start(fgt_redis_t *r);
/* Start it again on the same port and dir (after fgt_redis_stop): data comes back from the AOF. */
void fgt_redis_restart(fgt_redis_t *r);
void fgt_redis_stop(fgt_redis_t *r);
/* Run one redis command (argv style) against it; returns the reply as text
 * (malloc'd; integers in decimal, nil as NULL). For assertions. */
char *fgt_redis_cmd(const fgt_redis_t *r, const char *const argv[]);

/* ---- postgres ---- */
typedef struct fgt_pg {
    fgt_proc_t proc;
    int port;
    char dir[256];
    char url[128]; /* postgres://postgres@127.0.0.1:PORT/postgres */
} fgt_pg_t;

/* initdb a private cluster (as user "postgres" when running as root) and start
 * it on a free port. Skips the calling test (cr_skip) when no server binaries. */
void fgt_pg_start(fgt_pg_t *pg);
/* Fast shutdown (SIGINT) and wait. */
void fgt_pg_stop(fgt_pg_t *pg);
/* Start again on the same data directory and port. */
void fgt_pg_restart(fgt_pg_t *pg);
/* Run one SQL statement with libpq; returns the first column of the first row
 * (malloc'd, NULL when no row). Aborts the test on an error. */
char *fgt_pg_query(const char *url, const char *sql);

/* ---- a TCP proxy that can misbehave (tests of store deadlines) ---- */
/* Forwards 127.0.0.1:port to 127.0.0.1:target_port on its own thread (at most
 * 16 connections at a time). Client-to-server bytes always pass at once;
 * server-to-client bytes pass at once until fgt_proxy_trickle() sets a delay,
 * then one byte per delay. fgt_proxy_inject() puts bytes in front of the next
 * server-to-client data of every connection open at that moment. */
typedef struct fgt_proxy fgt_proxy_t;
fgt_proxy_t *fgt_proxy_start(int target_port);
int fgt_proxy_port(const fgt_proxy_t *p);
void fgt_proxy_trickle(fgt_proxy_t *p, int ms_per_byte); /* 0: full speed */
void fgt_proxy_inject(fgt_proxy_t *p, const char *bytes, size_t len);
void fgt_proxy_stop(fgt_proxy_t *p);

/* ---- gateway ---- */
typedef struct fgt_gateway {
    fgt_proc_t proc;
    int port, admin_port;
    char url[64], admin_url[64];
    char conf[512]; /* path of the config file written */
    char dir[256];
} fgt_gateway_t;

/* Write `config` to a file in a fresh dir and start the gateway on it. The
 * text may use the placeholders {listen}, {admin} (replaced by 127.0.0.1:PORT
 * with free ports) and {dir} (the gateway's dir, e.g. for sqlite:{dir}/fg.db).
 * Waits for /healthz; aborts the test if the gateway does not come up. */
void fgt_gateway_start(fgt_gateway_t *g, const char *config);
/* Start again with the same config file and ports (after a stop or kill). */
void fgt_gateway_restart(fgt_gateway_t *g);
/* SIGTERM and wait; returns the exit status. */
int fgt_gateway_stop(fgt_gateway_t *g);
/* Write `config` (placeholders as above) and run the gateway expecting it to
 * refuse to start: returns its exit status (waitpid form) and its log
 * (malloc'd) in *log. Aborts the test when it is still running after 10 s. */
int fgt_gateway_start_fail(fgt_gateway_t *g, const char *config, char **log);
/* The gateway's log so far (malloc'd). */
char *fgt_gateway_log(const fgt_gateway_t *g);

/* ---- HTTP client (libcurl) ---- */
typedef struct fgt_resp {
    long status;
    char *headers; /* raw response header block, malloc'd */
    char *body;    /* malloc'd, NUL-terminated */
    size_t body_len;
    int curl_err; /* CURLcode; 0 on success */
} fgt_resp_t;

/* One request. `headers` is a NULL-terminated list of "Name: value" lines (may
 * be NULL). `body` may be NULL. The URL is sent as given (no path squashing). */
fgt_resp_t fgt_http(const char *method, const char *url, const char *const headers[],
                    const char *body, size_t body_len);
void fgt_resp_free(fgt_resp_t *r);
/* Value of response header `name` (case-insensitive) copied into buf, or NULL. */
const char *fgt_resp_header(const fgt_resp_t *r, const char *name, char *buf, size_t len);
/* Body parsed as JSON (caller json_decref()s), or NULL. */
json_t *fgt_resp_json(const fgt_resp_t *r);

/* Send raw bytes over a new TCP connection and read the whole answer (until the
 * server closes or timeout_ms). For request targets libcurl would not send. */
char *fgt_raw_request(int port, const char *bytes, size_t len, int timeout_ms);

/* Like fgt_raw_request; *closed tells whether the server closed the
 * connection (true) or the wait ran out with it still open (false). */
char *fgt_raw_exchange(int port, const char *bytes, size_t len, int timeout_ms, bool *closed);

/* A connected TCP socket to 127.0.0.1:port (aborts the test on failure). */
int fgt_raw_connect(int port);

/* Read from `fd` until the peer closes or timeout_ms passes without a byte;
 * malloc'd, NUL-terminated. *closed as above. */
char *fgt_raw_read_all(int fd, int timeout_ms, bool *closed);

/* ---- recording upstream (rawup.c) ---- */
/* An upstream that keeps every byte it receives, frames requests with
 * libhttp-parser and answers each with "200 ok" (a few marked targets make it
 * misbehave like real servers do: see rawup.c). */
typedef struct fgt_rawup fgt_rawup_t;
fgt_rawup_t *fgt_rawup_start(void);
int fgt_rawup_port(const fgt_rawup_t *u);
/* Everything received so far, on all connections, in arrival order (malloc'd). */
char *fgt_rawup_bytes(fgt_rawup_t *u, size_t *len);
/* Complete requests received so far. */
long fgt_rawup_requests(fgt_rawup_t *u);
/* Connections it accepted so far. */
long fgt_rawup_connections(fgt_rawup_t *u);
void fgt_rawup_stop(fgt_rawup_t *u);

#endif
