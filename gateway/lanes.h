/*
 * lanes.h -- per-resource ordering (SPEC step 8).
 *
 * A lane is a FIFO of writes to one resource key. A write takes its lane
 * before its fence check and gives it back when its upstream transfer is over,
 * so writes of one resource are checked and reach the upstream one at a time,
 * in check order, while writes to other resources never touch each other's
 * lane. Lanes exist only while someone holds or waits for them; memory is
 * bounded by the number of requests in flight (itself bounded by
 * max_connections). Thread-safe: engines on different threads share one
 * fg_lanes_t, which the gateway owns (two of them can coexist, e.g. in a test).
 */
#ifndef FG_LANES_H
#define FG_LANES_H

#include <stdbool.h>

typedef struct fg_lane_waiter fg_lane_waiter_t;
typedef struct fg_lanes fg_lanes_t;

/* Called (outside any lane lock, on the releasing thread) when a queued
 * waiter becomes the holder. Must only hand the news to the waiter's thread. */
typedef void (*fg_lane_granted_fn)(fg_lane_waiter_t *w);

struct fg_lane_waiter {
    fg_lane_waiter_t *next; /* lanes.c private */
    fg_lane_granted_fn granted;
    int state; /* lanes.c private */
};

struct fg_metrics;

/* A new, empty lane table in *out. `metrics` (borrowed, may be NULL) gets the
 * lane-waiters gauge and must outlive the table. Returns 0 or FG_ENOMEM. */
int fg_lanes_new(struct fg_metrics *metrics, fg_lanes_t **out);
/* Free the table and any lane still in it (after every user stopped). */
void fg_lanes_free(fg_lanes_t *t);

/*
 * Take the lane of `key` (copied) for `w`. Returns 1 when `w` holds it now,
 * 0 when `w` was queued (w->granted will be called later), FG_ENOMEM.
 */
int fg_lanes_acquire(fg_lanes_t *t, const char *key, fg_lane_waiter_t *w);

/* Give back the lane `key` held by the caller; the next waiter, if any,
 * becomes holder and its `granted` callback runs. */
void fg_lanes_release(fg_lanes_t *t, const char *key);

/* Take queued waiter `w` out of lane `key`. Returns true when it was still
 * waiting (now removed), false when it had already been granted (then the
 * caller holds the lane and must release it). */
bool fg_lanes_cancel(fg_lanes_t *t, const char *key, fg_lane_waiter_t *w);

#endif
