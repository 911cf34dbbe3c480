/*
 * test_lanes.c -- per-resource FIFO lanes (SPEC step 8): one holder per key,
 * waiters granted in arrival order, cancel of a queued waiter, keys
 * independent, and two tables independent of each other.
 */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "gateway/lanes.h"
#include "gateway/metrics.h"

static int granted_order[8], n_granted;

typedef struct tagged {
    fg_lane_waiter_t w;
    int tag;
} tagged_t;

static void on_granted_tag(fg_lane_waiter_t *w)
{
    granted_order[n_granted++] = ((tagged_t *)w)->tag;
}

Test(lanes, fifo_per_key_and_cancel)
{
    fg_metrics_t *m = fg_metrics_new();
    fg_lanes_t *t = NULL;
    cr_assert_eq(fg_lanes_new(m, &t), 0);
    tagged_t w[4] = {0};
    for (int i = 0; i < 4; i++) w[i].tag = i, w[i].w.granted = on_granted_tag;
    n_granted = 0;
    cr_assert_eq(fg_lanes_acquire(t, "order:1", &w[0].w), 1, "a free lane is taken at once");
    cr_assert_eq(fg_lanes_acquire(t, "order:1", &w[1].w), 0, "then the next one waits");
    cr_assert_eq(fg_lanes_acquire(t, "order:1", &w[2].w), 0);
    cr_assert_eq(fg_lanes_acquire(t, "order:2", &w[3].w), 1, "other keys never wait");
    cr_assert_eq(fg_metrics_gauge(m, FG_GAUGE_LANE_WAITERS), 2, "two writes wait");
    cr_assert(fg_lanes_cancel(t, "order:1", &w[1].w), "a queued waiter can leave");
    cr_assert_eq(fg_metrics_gauge(m, FG_GAUGE_LANE_WAITERS), 1);
    cr_assert_eq(n_granted, 0);
    fg_lanes_release(t, "order:1");
    cr_assert_eq(n_granted, 1);
    cr_assert_eq(fg_metrics_gauge(m, FG_GAUGE_LANE_WAITERS), 0, "a granted waiter waits no more");
    cr_assert_eq(granted_order[0], 2, "the next waiter in line gets it (1 left)");
    cr_assert_not(fg_lanes_cancel(t, "order:1", &w[2].w), "a granted waiter cannot cancel");
    fg_lanes_release(t, "order:1");
    fg_lanes_release(t, "order:2");
    /* the lane is gone once released with nobody waiting: the next take is at once */
    cr_assert_eq(fg_lanes_acquire(t, "order:1", &w[0].w), 1);
    fg_lanes_release(t, "order:1");
    fg_lanes_free(t);
    fg_metrics_free(m);
}

Test(lanes, two_tables_do_not_share_lanes)
{
    fg_lanes_t *a = NULL, *b = NULL;
    cr_assert_eq(fg_lanes_new(NULL, &a), 0, "a table without metrics counts nothing");
    cr_assert_eq(fg_lanes_new(NULL, &b), 0);
    tagged_t w[2] = {{.tag = 0}, {.tag = 1}};
    w[0].w.granted = w[1].w.granted = on_granted_tag;
    cr_assert_eq(fg_lanes_acquire(a, "k", &w[0].w), 1);
    cr_assert_eq(fg_lanes_acquire(b, "k", &w[1].w), 1, "the same key in another table is free");
    fg_lanes_release(a, "k");
    fg_lanes_release(b, "k");
    fg_lanes_free(a);
    fg_lanes_free(b);
}

/* Freed short-key lanes are kept for reuse; a reused lane must behave like a
 * new one whatever key it held, and long keys never land in a kept lane (the
 * ASan build checks the key copies and that fg_lanes_free frees the spares). */
Test(lanes, reused_lanes_hold_any_key)
{
    fg_lanes_t *t = NULL;
    cr_assert_eq(fg_lanes_new(NULL, &t), 0);
    char keys[3][300];
    memset(keys[0], 'a', 119), keys[0][119] = '\0'; /* the longest kept key */
    memset(keys[1], 'b', 120), keys[1][120] = '\0'; /* one byte too long to keep */
    memset(keys[2], 'c', 299), keys[2][299] = '\0';
    tagged_t w[4] = {{.tag = 0}, {.tag = 1}, {.tag = 2}, {.tag = 3}};
    for (int i = 0; i < 4; i++) w[i].w.granted = on_granted_tag;
    for (int round = 0; round < 200; round++) {
        char shortkey[32];
        snprintf(shortkey, sizeof shortkey, "order:%d", round);
        const char *k = round % 4 == 3 ? shortkey : keys[round % 3];
        bool same = k == shortkey;
        n_granted = 0;
        cr_assert_eq(fg_lanes_acquire(t, k, &w[0].w), 1, "round %d: free lane", round);
        cr_assert_eq(fg_lanes_acquire(t, k, &w[1].w), 0, "round %d: same key waits", round);
        cr_assert_eq(fg_lanes_acquire(t, shortkey, &w[2].w), same ? 0 : 1);
        fg_lanes_release(t, k);
        cr_assert_eq(n_granted, 1, "round %d: the waiter got the lane", round);
        cr_assert_eq(granted_order[0], 1);
        fg_lanes_release(t, k);
        if (same) cr_assert_eq(granted_order[1], 2, "round %d: then the next", round);
        fg_lanes_release(t, shortkey);
    }
    fg_lanes_free(t);
}
