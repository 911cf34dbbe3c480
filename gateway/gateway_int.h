/*
 * gateway_int.h -- what the files of gateway/ share and nobody else sees.
 */
#ifndef FG_GATEWAY_INT_H
#define FG_GATEWAY_INT_H

#include <pthread.h>
#include <stdbool.h>

#include "gateway/gateway.h"
#include "gateway/storepool.h"
#include "policy/config.h"

/* A loaded config with a reference count: requests hold the one they started
 * with, so a reload never changes policies under a running request. */
typedef struct fg_cfgref {
    fg_config_t *cfg;
    int refs; /* atomic */
} fg_cfgref_t;

typedef struct fg_engine fg_engine_t;
typedef struct fg_admin fg_admin_t;
typedef struct fg_janitor fg_janitor_t;

struct fg_gateway {
    pthread_mutex_t cfg_mu;
    fg_cfgref_t *cur;      /* guarded by cfg_mu */
    fg_config_t *boot;     /* settings fixed at start (listen, state, ...) */
    fg_cfgref_t *boot_ref; /* keeps `boot` alive across reloads */
    fg_storepool_t *pool;
    struct fg_lanes *lanes;     /* per-resource ordering (lanes.c), shared by the engines */
    struct fg_metrics *metrics; /* what /metrics shows (metrics.c); freed last */
    fg_engine_t **engines;
    unsigned n_engines;
    fg_admin_t *admin;
    fg_janitor_t *janitor;
    fg_store_group_t *store_group; /* every store handle of this gateway learns from the others */
    uint64_t started_ms;           /* monotonic, for uptime */
};

/* The store options every handle of this gateway starts from (timeouts,
 * audit cap, require_durable, the shared group, the log hook). */
fg_store_opts_t fg_gateway_store_opts(const fg_gateway_t *gw);

/* Current config with one more reference (never NULL). */
fg_cfgref_t *fg_gateway_cfg_get(fg_gateway_t *gw);
void fg_cfgref_put(fg_cfgref_t *r);

/* ---- engine.c ---- */
/* Create an engine: its epoll loop, its own listening socket on `listen`
 * (SO_REUSEPORT, so each engine accepts its share), its MHD daemon and its
 * upstream connection pool. Returns 0 or FG_E* with a message in err. */
int fg_engine_create(fg_gateway_t *gw, unsigned id, fg_engine_t **out, char *err, size_t err_len);
int fg_engine_run(fg_engine_t *e); /* start the thread */
/* Ask the engine to stop accepting and finish in-flight requests; at
 * `deadline_ms` (monotonic) it ends whatever is left. Thread-safe. */
void fg_engine_quiesce(fg_engine_t *e, uint64_t deadline_ms);
/* Wait for the engine thread to end. */
void fg_engine_join(fg_engine_t *e);
/* Free the engine (joins first). Call after the store pool has stopped, so no
 * store thread can still post a result to it. */
void fg_engine_free(fg_engine_t *e);

/* ---- admin.c ---- */
int fg_admin_start(fg_gateway_t *gw, fg_admin_t **out, char *err, size_t err_len);
/* Re-read the admin token file (SIGHUP). */
void fg_admin_reload(fg_admin_t *a, const fg_config_t *cfg);
void fg_admin_stop(fg_admin_t *a);

/* ---- janitor.c ---- */
/* Start audit retention when audit_retention or audit_max is set (audit_max
 * is 1000000 by default, so it normally runs; with both 0 *out stays NULL and
 * 0 is returned). */
int fg_janitor_start(fg_gateway_t *gw, fg_janitor_t **out, char *err, size_t err_len);
void fg_janitor_stop(fg_janitor_t *j);

/* Parse a listen address and open a bound, listening, non-blocking socket.
 * `reuseport` sets SO_REUSEPORT. Returns the fd or -1 with a message. */
int fg_listen_socket(const char *hostport, bool reuseport, char *err, size_t err_len);

#endif
