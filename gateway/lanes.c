/*
 * lanes.c -- the per-resource FIFO table behind SPEC step 8. See lanes.h.
 *
 * A fixed array of buckets, each with its own mutex (striped locking), holding
 * chains of lanes. A lane has a holder flag and a FIFO of waiters; it is freed
 * when released with nobody waiting. Lanes with short keys (nearly all) go to
 * a small spare list of their stripe instead, so a write to a resource nobody
 * else writes costs no malloc/free pair (bench/allocs.sh).
 */
#include "gateway/lanes.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/metrics.h"
#include "policy/error.h"

#define NBUCKETS   4096
#define NSTRIPES   64
#define LANE_SMALL 120 /* key bytes (NUL included) of a lane that can be kept */
#define SPARE_MAX  16  /* kept lanes per stripe */

enum { W_WAITING = 1, W_GRANTED = 2 };

typedef struct lane {
    struct lane *next;
    fg_lane_waiter_t *head, *tail; /* waiters, oldest first */
    size_t cap;                    /* bytes in key[] */
    char key[];
} lane_t;

struct fg_lanes {
    lane_t **buckets;
    pthread_mutex_t stripes[NSTRIPES];
    lane_t *spare[NSTRIPES]; /* freed small lanes, under their stripe's mutex */
    unsigned nspare[NSTRIPES];
    fg_metrics_t *metrics; /* borrowed; NULL: no lane-waiters gauge */
};

static void waiters_add(fg_lanes_t *t, int64_t delta)
{
    if (t->metrics) fg_metrics_gauge_add(t->metrics, FG_GAUGE_LANE_WAITERS, delta);
}

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

int fg_lanes_new(fg_metrics_t *metrics, fg_lanes_t **out)
{
    *out = NULL;
    fg_lanes_t *t = calloc(1, sizeof *t);
    if (!t) return FG_ENOMEM;
    t->metrics = metrics;
    t->buckets = calloc(NBUCKETS, sizeof *t->buckets);
    if (!t->buckets) {
        free(t);
        return FG_ENOMEM;
    }
    for (int i = 0; i < NSTRIPES; i++) pthread_mutex_init(&t->stripes[i], NULL);
    *out = t;
    return 0;
}

void fg_lanes_free(fg_lanes_t *t)
{
    if (!t) return;
    for (size_t i = 0; i < NBUCKETS; i++) {
        lane_t *l = t->buckets[i];
        while (l) {
            lane_t *n = l->next;
            free(l);
            l = n;
        }
    }
    for (int i = 0; i < NSTRIPES; i++) {
        for (lane_t *l = t->spare[i], *n; l; l = n) {
            n = l->next;
            free(l);
        }
        pthread_mutex_destroy(&t->stripes[i]);
    }
    free(t->buckets);
    free(t);
}

static lane_t **find(fg_lanes_t *t, const char *key, size_t b)
{
    lane_t **pp = &t->buckets[b];
    while (*pp && strcmp((*pp)->key, key) != 0) pp = &(*pp)->next;
    return pp;
}

int fg_lanes_acquire(fg_lanes_t *t, const char *key, fg_lane_waiter_t *w)
{
    size_t b = hash_key(key) % NBUCKETS;
    pthread_mutex_t *mu = &t->stripes[b % NSTRIPES];
    pthread_mutex_lock(mu);
    lane_t **pp = find(t, key, b);
    w->next = NULL;
    if (!*pp) {
        size_t len = strlen(key), st = b % NSTRIPES;
        lane_t *l = NULL;
        if (len < LANE_SMALL && t->spare[st]) {
            l = t->spare[st];
            t->spare[st] = l->next;
            t->nspare[st]--;
        } else {
            size_t cap = len < LANE_SMALL ? LANE_SMALL : len + 1;
            l = malloc(sizeof *l + cap);
            if (!l) {
                pthread_mutex_unlock(mu);
                return FG_ENOMEM;
            }
            l->cap = cap;
        }
        l->next = NULL;
        l->head = l->tail = NULL;
        memcpy(l->key, key, len + 1);
        *pp = l;
        w->state = W_GRANTED;
        pthread_mutex_unlock(mu);
        return 1;
    }
    lane_t *l = *pp;
    w->state = W_WAITING;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
    pthread_mutex_unlock(mu);
    waiters_add(t, 1);
    return 0;
}

void fg_lanes_release(fg_lanes_t *t, const char *key)
{
    size_t b = hash_key(key) % NBUCKETS;
    pthread_mutex_t *mu = &t->stripes[b % NSTRIPES];
    pthread_mutex_lock(mu);
    lane_t **pp = find(t, key, b);
    lane_t *l = *pp;
    fg_lane_waiter_t *next = NULL;
    if (l) {
        next = l->head;
        if (next) {
            l->head = next->next;
            if (!l->head) l->tail = NULL;
            next->next = NULL;
            next->state = W_GRANTED;
        } else {
            *pp = l->next;
            size_t st = b % NSTRIPES;
            if (l->cap == LANE_SMALL && t->nspare[st] < SPARE_MAX) {
                l->next = t->spare[st];
                t->spare[st] = l;
                t->nspare[st]++;
            } else {
                free(l);
            }
        }
    }
    pthread_mutex_unlock(mu);
    if (next) {
        waiters_add(t, -1);
        next->granted(next);
    }
}

bool fg_lanes_cancel(fg_lanes_t *t, const char *key, fg_lane_waiter_t *w)
{
    size_t b = hash_key(key) % NBUCKETS;
    pthread_mutex_t *mu = &t->stripes[b % NSTRIPES];
    pthread_mutex_lock(mu);
    bool removed = false;
    if (w->state == W_WAITING) {
        lane_t *l = *find(t, key, b);
        fg_lane_waiter_t *prev = NULL;
        for (fg_lane_waiter_t *it = l ? l->head : NULL; it; prev = it, it = it->next) {
            if (it != w) continue;
            if (prev)
                prev->next = it->next;
            else
                l->head = it->next;
            if (l->tail == it) l->tail = prev;
            removed = true;
            break;
        }
        w->state = 0;
    }
    pthread_mutex_unlock(mu);
    if (removed) waiters_add(t, -1);
    return removed;
}
