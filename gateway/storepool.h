/*
 * storepool.h -- a bounded pool of store connections, each driven by its own
 * thread, so that event-loop threads never block on the state store.
 *
 * Engines submit jobs (a fence check or an audit append) and get them back
 * through the job's `done` callback, called on the pool thread. A pool thread
 * takes every queued fence check at once (up to FG_STOREPOOL_BATCH) and runs
 * them as one store batch: one transaction (SQLite) or one pipeline (Redis),
 * which is what lets many concurrent writers share few connections.
 *
 * Bounds: `size` connections (capped by the backend's max_pool), a queue of at
 * most `queue_max` jobs (submit fails with FG_EFULL beyond it), reconnects
 * paced by the store's own backoff.
 */
#ifndef FG_STOREPOOL_H
#define FG_STOREPOOL_H

#include <stddef.h>

#include "storage/store.h"

struct fg_metrics;

#define FG_STOREPOOL_BATCH FG_STORE_BATCH_MAX

typedef enum fg_job_kind { FG_JOB_CHECK = 1, FG_JOB_AUDIT } fg_job_kind_t;

typedef struct fg_job fg_job_t;
struct fg_job {
    fg_job_t *next; /* pool private */
    fg_job_kind_t kind;
    fg_check_t check;            /* FG_JOB_CHECK: in/out */
    fg_audit_t audit;            /* FG_JOB_AUDIT: the record (strings borrowed until done) */
    int rc;                      /* out: 0 or FG_E* */
    void (*done)(fg_job_t *job); /* called on a pool thread; must not block */
};

typedef struct fg_storepool fg_storepool_t;

/*
 * Start `size` threads, each with its own handle on `url`. `metrics`
 * (borrowed; it must outlive the pool) gets the store round trips and the
 * queue length. Connections are made
 * lazily, so a store that is down at start does not fail this. Returns 0 and
 * *out, or FG_EINVAL (bad URL, message in err) / FG_ENOMEM.
 */
int fg_storepool_start(const char *url, unsigned size, size_t queue_max,
                       const fg_store_opts_t *opts, struct fg_metrics *metrics,
                       fg_storepool_t **out, char *err, size_t err_len);

/* Queue `job`. Returns 0, or FG_EFULL when the queue is at its bound (the job
 * is then not queued and `done` will not be called). Thread-safe. */
int fg_storepool_submit(fg_storepool_t *p, fg_job_t *job);

/* Finish queued jobs, stop the threads, close the connections, free `p`. */
void fg_storepool_stop(fg_storepool_t *p);

#endif
