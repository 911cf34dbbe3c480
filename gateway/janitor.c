/*
 * janitor.c -- audit retention: `audit_retention` (age) and `audit_max`
 * (count) in [gateway], applied in the background so the audit trail cannot
 * grow without bound.
 *
 * audit_max is 1000000 by default (0 = no cap), so the janitor normally runs.
 * One thread with its own store connection wakes every tenth of the retention
 * period (between 1 s and 60 s; every 10 s without a retention), so both
 * rules are applied at least once a minute. It deletes records in batches of 1000,
 * at most 100 batches per round, and sleeps again: the store never sees one
 * huge DELETE, and a store that is down only costs the usual backoff.
 */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "gateway/gateway_int.h"
#include "gateway/log.h"
#include "policy/error.h"

#define BATCH       1000
#define MAX_BATCHES 100

struct fg_janitor {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    fg_store_t *store;
    uint64_t retention_ms, keep_max, interval_ms;
};

static void round_once(fg_janitor_t *j)
{
    size_t total = 0;
    for (int i = 0; i < MAX_BATCHES; i++) {
        int64_t older = j->retention_ms ? fg_now_wall_ms() - (int64_t)j->retention_ms : -1;
        size_t deleted = 0;
        int rc = fg_store_audit_purge(j->store, older, j->keep_max, BATCH, &deleted);
        if (rc) {
            if (rc != FG_EUNAVAIL) /* down is already logged by the store layer */
                fg_log(FG_LOG_WARN, "audit retention failed",
                       json_pack("{s:s}", "error", fg_store_errstr(j->store)));
            break;
        }
        total += deleted;
        if (deleted == 0) break;
    }
    if (total)
        fg_log(FG_LOG_INFO, "audit retention", json_pack("{s:I}", "deleted", (json_int_t)total));
}

static void *janitor_main(void *arg)
{
    fg_janitor_t *j = arg;
    pthread_mutex_lock(&j->mu);
    while (!j->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (j->interval_ms % 1000) * 1000000ULL;
        ts.tv_sec += (time_t)(j->interval_ms / 1000 + ns / 1000000000ULL);
        ts.tv_nsec = (long)(ns % 1000000000ULL);
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (j->stop) break;
        pthread_mutex_unlock(&j->mu);
        round_once(j);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

int fg_janitor_start(fg_gateway_t *gw, fg_janitor_t **out, char *err, size_t err_len)
{
    *out = NULL;
    const fg_config_t *cfg = gw->boot;
    if (!cfg->audit_retention_ms && !cfg->audit_max) return 0;
    fg_janitor_t *j = calloc(1, sizeof *j);
    if (!j) return FG_ENOMEM;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->retention_ms = cfg->audit_retention_ms;
    j->keep_max = cfg->audit_max;
    uint64_t iv = j->retention_ms ? j->retention_ms / 10 : 10000;
    j->interval_ms = iv < 1000 ? 1000 : iv > 60000 ? 60000 : iv;
    fg_store_opts_t so = fg_gateway_store_opts(gw);
    so.timeout_ms = cfg->state_timeout_ms * 5; /* a purge batch is bigger than a check */
    so.backoff_min_ms = 1000;
    so.backoff_max_ms = 60000;
    so.log = NULL; /* the pool's handles report the store going down and up */
    int rc = fg_store_open(cfg->state, &so, &j->store, err, err_len);
    if (!rc && pthread_create(&j->th, NULL, janitor_main, j) != 0) rc = FG_ENOMEM;
    if (rc) {
        fg_store_close(j->store);
        free(j);
        return rc;
    }
    *out = j;
    return 0;
}

void fg_janitor_stop(fg_janitor_t *j)
{
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    j->stop = true;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->th, NULL);
    fg_store_close(j->store);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}
