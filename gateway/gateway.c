/*
 * gateway.c -- wiring: the live config, the store pool, the engines and the
 * admin listener, and their start, reload and drain. See gateway.h.
 */
#include "gateway/gateway.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/engine_int.h"
#include "gateway/gateway_int.h"
#include "gateway/lanes.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "policy/error.h"

static fg_cfgref_t *cfgref_new(fg_gateway_t *gw, fg_config_t *cfg)
{
    fg_cfgref_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->cfg = cfg;
    r->refs = 1;
    for (size_t i = 0; i < cfg->n_policies; i++)
        cfg->policies[i].metrics = fg_metrics_row(gw->metrics, cfg->policies[i].name);
    return r;
}

fg_cfgref_t *fg_gateway_cfg_get(fg_gateway_t *gw)
{
    pthread_mutex_lock(&gw->cfg_mu);
    fg_cfgref_t *r = gw->cur;
    __atomic_fetch_add(&r->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&gw->cfg_mu);
    return r;
}

void fg_cfgref_put(fg_cfgref_t *r)
{
    if (r && __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        fg_config_free(r->cfg);
        free(r);
    }
}

int fg_listen_socket(const char *hostport, bool reuseport, char *err, size_t err_len)
{
    char host[256], port[16];
    unsigned p;
    if (fg_config_split_hostport(hostport, host, sizeof host, &p) != 0) {
        snprintf(err, err_len, "bad listen address '%s'", hostport);
        return -1;
    }
    snprintf(port, sizeof port, "%u", p);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, err_len, "cannot resolve '%s': %s", hostport, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 1024) == 0) break;
        snprintf(err, err_len, "cannot listen on %s: %s", hostport, strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* The store handles' log hook; `arg` is the gateway's fg_metrics_t. */
static void store_log(void *arg, const char *event, const char *store, const char *detail)
{
    json_t *f = json_pack("{s:s,s:s,s:s?}", "event", event, "store", store, "detail", detail);
    fg_log_level_t lvl = strcmp(event, "down") == 0          ? FG_LOG_ERROR
                         : strcmp(event, "not durable") == 0 ? FG_LOG_WARN
                                                             : FG_LOG_INFO;
    fg_log(lvl, "state store", f);
    if (strcmp(event, "up") == 0 && arg) fg_metrics_count_store_reconnect(arg);
}

fg_store_opts_t fg_gateway_store_opts(const fg_gateway_t *gw)
{
    const fg_config_t *cfg = gw->boot;
    fg_store_opts_t so = {0};
    so.timeout_ms = cfg->state_timeout_ms;
    so.backoff_min_ms = 50;
    so.backoff_max_ms = 5000;
    so.audit_max = cfg->audit_max;
    so.require_durable = cfg->require_durable;
    so.group = gw->store_group;
    so.log = store_log;
    so.log_arg = gw->metrics;
    return so;
}

/* require_durable: a store that answers and is not durable stops the start
 * with the setting to change. A store that does not answer yet does not (it
 * is checked again at every connect, and refused then). */
static int check_durable(fg_gateway_t *gw, char *err, size_t err_len)
{
    if (!gw->boot->require_durable) return 0;
    fg_store_opts_t so = fg_gateway_store_opts(gw);
    so.log = NULL; /* the pool's handles log what they read */
    fg_store_t *s = NULL;
    int rc = fg_store_open(gw->boot->state, &so, &s, err, err_len);
    if (rc) return rc;
    fg_durability_t d;
    rc = fg_store_durability(s, &d);
    if (rc && d.n && !d.durable) {
        snprintf(err, err_len, "state store %s is not durable and require_durable = on: %s",
                 fg_store_display(s), d.advice);
        rc = FG_ECONFIG;
    } else if (rc) {
        json_t *f =
            json_pack("{s:s,s:s}", "store", fg_store_display(s), "error", fg_store_errstr(s));
        fg_log(FG_LOG_WARN,
               "require_durable: the state store does not answer yet; it is checked "
               "at every connect",
               f);
        rc = 0;
    }
    fg_store_close(s);
    return rc;
}

static unsigned engine_count(const fg_config_t *cfg)
{
    if (cfg->workers) return cfg->workers;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    return n > 8 ? 8 : (unsigned)n;
}

int fg_gateway_start(fg_config_t *cfg, fg_gateway_t **out, char *err, size_t err_len)
{
    *out = NULL;
    fg_gateway_t *gw = calloc(1, sizeof *gw);
    if (!gw) {
        fg_config_free(cfg);
        return FG_ENOMEM;
    }
    pthread_mutex_init(&gw->cfg_mu, NULL);
    gw->metrics = fg_metrics_new();
    gw->cur = gw->metrics ? cfgref_new(gw, cfg) : NULL;
    if (!gw->cur) {
        fg_config_free(cfg);
        fg_metrics_free(gw->metrics);
        free(gw);
        return FG_ENOMEM;
    }
    gw->boot = cfg;
    gw->boot_ref = gw->cur;
    gw->cur->refs++; /* the boot settings stay alive as long as the gateway */
    int rc = fg_lanes_new(gw->metrics, &gw->lanes);
    if (rc) goto fail;
    /* before any thread reads a socket through the recv hook */
    rc = fg_front_hook_init();
    if (rc) goto fail;
    gw->started_ms = fg_now_mono_ms();
    gw->store_group = fg_store_group_new();
    if (!gw->store_group) {
        rc = FG_ENOMEM;
        goto fail;
    }
    rc = check_durable(gw, err, err_len);
    if (rc) goto fail;
    fg_store_opts_t so = fg_gateway_store_opts(gw);
    gw->n_engines = engine_count(cfg);
    const fg_store_backend_t *be = fg_store_backend_for(cfg->state);
    fg_metrics_set_store(gw->metrics, be ? be->scheme : "");
    rc = fg_storepool_start(cfg->state, cfg->state_pool, (size_t)cfg->max_connections * 2 + 64, &so,
                            gw->metrics, &gw->pool, err, err_len);
    if (rc) goto fail;
    gw->engines = calloc(gw->n_engines, sizeof *gw->engines);
    if (!gw->engines) {
        rc = FG_ENOMEM;
        goto fail;
    }
    for (unsigned i = 0; i < gw->n_engines; i++) {
        rc = fg_engine_create(gw, i, &gw->engines[i], err, err_len);
        if (rc) goto fail;
    }
    if (cfg->admin_listen && cfg->admin_listen[0]) {
        rc = fg_admin_start(gw, &gw->admin, err, err_len);
        if (rc) goto fail;
    }
    rc = fg_janitor_start(gw, &gw->janitor, err, err_len);
    if (rc) goto fail;
    for (unsigned i = 0; i < gw->n_engines; i++) {
        rc = fg_engine_run(gw->engines[i]);
        if (rc) {
            snprintf(err, err_len, "cannot start engine thread");
            goto fail;
        }
    }
    *out = gw;
    return 0;
fail:
    fg_gateway_drain(gw, 0);
    fg_gateway_free(gw);
    return rc;
}

static void warn_changed(const char *key, const char *was, const char *now)
{
    if ((was ? was : "")[0] == '\0' && (now ? now : "")[0] == '\0') return;
    if (was && now && strcmp(was, now) == 0) return;
    json_t *f = json_pack("{s:s,s:s?,s:s?}", "key", key, "running", was, "file", now);
    fg_log(FG_LOG_WARN, "setting needs a restart to change; keeping the running value", f);
}

int fg_gateway_reload(fg_gateway_t *gw, fg_config_t *cfg)
{
    const fg_config_t *b = gw->boot;
    warn_changed("listen", b->listen, cfg->listen);
    warn_changed("admin_listen", b->admin_listen, cfg->admin_listen);
    warn_changed("state", b->state, cfg->state);
    fg_cfgref_t *n = cfgref_new(gw, cfg);
    if (!n) {
        fg_config_free(cfg);
        return FG_ENOMEM;
    }
    pthread_mutex_lock(&gw->cfg_mu);
    fg_cfgref_t *old = gw->cur;
    gw->cur = n;
    pthread_mutex_unlock(&gw->cfg_mu);
    fg_cfgref_put(old);
    if (gw->admin) fg_admin_reload(gw->admin, cfg);
    return 0;
}

void fg_gateway_drain(fg_gateway_t *gw, uint64_t timeout_ms)
{
    uint64_t deadline = fg_now_mono_ms() + timeout_ms;
    for (unsigned i = 0; gw->engines && i < gw->n_engines; i++)
        if (gw->engines[i]) fg_engine_quiesce(gw->engines[i], deadline);
    for (unsigned i = 0; gw->engines && i < gw->n_engines; i++)
        if (gw->engines[i]) fg_engine_join(gw->engines[i]);
}

void fg_gateway_free(fg_gateway_t *gw)
{
    if (!gw) return;
    if (gw->admin) fg_admin_stop(gw->admin);
    fg_janitor_stop(gw->janitor);
    fg_storepool_stop(gw->pool); /* finishes queued jobs; engines are still allocated */
    for (unsigned i = 0; gw->engines && i < gw->n_engines; i++) fg_engine_free(gw->engines[i]);
    free(gw->engines);
    fg_lanes_free(gw->lanes);
    fg_cfgref_put(gw->cur);
    fg_cfgref_put(gw->boot_ref);
    pthread_mutex_destroy(&gw->cfg_mu);
    fg_store_group_free(gw->store_group); /* after every handle is closed */
    fg_metrics_free(gw->metrics);         /* after every user of its rows */
    free(gw);
}
