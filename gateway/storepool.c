/*
 * storepool.c -- store threads with batched fence checks. See storepool.h.
 */
#include "gateway/storepool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "gateway/metrics.h"
#include "policy/error.h"

struct fg_storepool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fg_job_t *head, *tail;
    size_t len, max;
    bool stopping;
    unsigned n;       /* threads running */
    unsigned nstores; /* length of stores[] */
    pthread_t *threads;
    fg_store_t **stores;
    fg_metrics_t *metrics; /* borrowed from the gateway */
};

typedef struct worker_arg {
    fg_storepool_t *p;
    fg_store_t *s;
} worker_arg_t;

static void run_checks(fg_metrics_t *m, fg_store_t *s, fg_job_t **jobs, size_t n)
{
    fg_check_t checks[FG_STOREPOOL_BATCH];
    for (size_t i = 0; i < n; i++) checks[i] = jobs[i]->check;
    uint64_t t0 = fg_metrics_now_ns();
    int rc = fg_store_check(s, checks, n);
    fg_metrics_observe_store(m, FG_STORE_OP_CHECK, fg_metrics_since(t0));
    fg_metrics_set_store_up(m, rc != FG_EUNAVAIL);
    for (size_t i = 0; i < n; i++) {
        jobs[i]->check = checks[i];
        jobs[i]->rc = rc;
        jobs[i]->done(jobs[i]);
    }
}

static void *worker(void *arg)
{
    fg_storepool_t *p = ((worker_arg_t *)arg)->p;
    fg_store_t *s = ((worker_arg_t *)arg)->s;
    free(arg);
    fg_job_t *batch[FG_STOREPOOL_BATCH];
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->head && !p->stopping) pthread_cond_wait(&p->cv, &p->mu);
        if (!p->head) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        /* Take either one audit job, or every check queued (up to a batch). */
        size_t n = 0;
        fg_job_t *audit = NULL;
        if (p->head->kind == FG_JOB_AUDIT) {
            audit = p->head;
            p->head = audit->next;
        } else {
            while (p->head && p->head->kind == FG_JOB_CHECK && n < FG_STOREPOOL_BATCH) {
                batch[n++] = p->head;
                p->head = p->head->next;
            }
        }
        if (!p->head) p->tail = NULL;
        size_t taken = audit ? 1 : n;
        p->len -= taken;
        pthread_mutex_unlock(&p->mu);
        fg_metrics_gauge_add(p->metrics, FG_GAUGE_STORE_QUEUE, -(int64_t)taken);
        if (audit) {
            uint64_t t0 = fg_metrics_now_ns();
            audit->rc = fg_store_audit_append(s, &audit->audit);
            fg_metrics_observe_store(p->metrics, FG_STORE_OP_AUDIT, fg_metrics_since(t0));
            audit->done(audit);
        } else {
            run_checks(p->metrics, s, batch, n);
        }
    }
}

int fg_storepool_start(const char *url, unsigned size, size_t queue_max,
                       const fg_store_opts_t *opts, fg_metrics_t *metrics, fg_storepool_t **out,
                       char *err, size_t err_len)
{
    *out = NULL;
    fg_storepool_t *p = calloc(1, sizeof *p);
    if (!p) return FG_ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->max = queue_max ? queue_max : 1;
    p->metrics = metrics;
    /* Probe the backend's pool cap with a first handle. */
    fg_store_t *first = NULL;
    int rc = fg_store_open(url, opts, &first, err, err_len);
    if (rc) {
        free(p);
        return rc;
    }
    unsigned cap = fg_store_max_pool(first);
    if (size == 0) size = 1;
    if (cap && size > cap) size = cap;
    p->threads = calloc(size, sizeof *p->threads);
    p->stores = calloc(size, sizeof *p->stores);
    if (!p->threads || !p->stores) {
        fg_store_close(first);
        free(p->threads);
        free(p->stores);
        free(p);
        return FG_ENOMEM;
    }
    p->nstores = size;
    p->stores[0] = first;
    for (unsigned i = 1; i < size; i++) {
        rc = fg_store_open(url, opts, &p->stores[i], err, err_len);
        if (rc) break;
    }
    for (unsigned i = 0; i < size && !rc; i++) {
        worker_arg_t *a = malloc(sizeof *a);
        if (!a) {
            rc = FG_ENOMEM;
            break;
        }
        a->p = p;
        a->s = p->stores[i];
        if (pthread_create(&p->threads[i], NULL, worker, a) != 0) {
            free(a);
            rc = FG_ENOMEM;
            snprintf(err, err_len, "cannot start store thread");
            break;
        }
        p->n++;
    }
    if (rc) {
        fg_storepool_stop(p);
        return rc;
    }
    *out = p;
    return 0;
}

int fg_storepool_submit(fg_storepool_t *p, fg_job_t *job)
{
    pthread_mutex_lock(&p->mu);
    if (p->len >= p->max || p->stopping) {
        pthread_mutex_unlock(&p->mu);
        return FG_EFULL;
    }
    job->next = NULL;
    if (p->tail)
        p->tail->next = job;
    else
        p->head = job;
    p->tail = job;
    p->len++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fg_metrics_gauge_add(p->metrics, FG_GAUGE_STORE_QUEUE, 1);
    return 0;
}

void fg_storepool_stop(fg_storepool_t *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->n; i++) pthread_join(p->threads[i], NULL);
    for (unsigned i = 0; i < p->nstores; i++)
        if (p->stores[i]) fg_store_close(p->stores[i]);
    free(p->stores);
    free(p->threads);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
