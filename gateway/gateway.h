/*
 * gateway.h -- the running proxy: engines (event-loop threads), the store
 * pool, the admin listener, and the live configuration.
 *
 * main.c is the only caller: start, reload on SIGHUP, drain on SIGTERM, free.
 */
#ifndef FG_GATEWAY_H
#define FG_GATEWAY_H

#include <stdint.h>

#include "policy/config.h"

typedef struct fg_gateway fg_gateway_t;

/*
 * Bind the listeners, start the store threads, the engines and the admin
 * listener. Takes ownership of `cfg` (also on failure). Returns 0 and *out, or
 * a negative FG_E* code with a message in `err`.
 */
int fg_gateway_start(fg_config_t *cfg, fg_gateway_t **out, char *err, size_t err_len);

/*
 * Swap in new policies. Takes ownership of `cfg`. Requests already running keep
 * the config they started with. Settings that need new sockets or a new store
 * (listen, admin_listen, state, workers, state_pool) keep their running value;
 * a warning names each one that differs. Returns 0.
 */
int fg_gateway_reload(fg_gateway_t *gw, fg_config_t *cfg);

/* Stop accepting, wait up to `timeout_ms` for requests in flight, stop. */
void fg_gateway_drain(fg_gateway_t *gw, uint64_t timeout_ms);

/* Free everything (after drain). */
void fg_gateway_free(fg_gateway_t *gw);

#endif
