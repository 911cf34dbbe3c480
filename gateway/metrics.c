/*
 * metrics.c -- counter rows and the Prometheus text rendering. See metrics.h.
 */
#include "gateway/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct fg_metrics_row {
    struct fg_metrics_row *next;
    char *policy; /* NULL for "no policy" */
    uint64_t count[FG_OUT_COUNT_];
};

static pthread_mutex_t rows_mu = PTHREAD_MUTEX_INITIALIZER;
static fg_metrics_row_t *rows;
static fg_metrics_row_t none_row;
static int64_t gauges[FG_GAUGE_COUNT_];
static int store_up = 1;

static const char *outcome_names[FG_OUT_COUNT_] = {
#define FG_OUTCOME_NAME(n, s) s,
    FG_OUTCOMES(FG_OUTCOME_NAME)
#undef FG_OUTCOME_NAME
};

fg_metrics_row_t *fg_metrics_row(const char *policy)
{
    if (!policy) return &none_row;
    pthread_mutex_lock(&rows_mu);
    fg_metrics_row_t *r;
    for (r = rows; r; r = r->next)
        if (strcmp(r->policy, policy) == 0) break;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (r && !(r->policy = strdup(policy))) {
            free(r);
            r = NULL;
        }
        if (r) {
            /* append, so /metrics lists policies in the order first seen */
            fg_metrics_row_t **tail = &rows;
            while (*tail) tail = &(*tail)->next;
            *tail = r;
        }
    }
    pthread_mutex_unlock(&rows_mu);
    return r;
}

/* One slot per second of the last minute: which second it counts, and how many. */
static struct {
    uint64_t sec, n;
} window[60];

static uint64_t now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec;
}

static void count_refusal(void)
{
    uint64_t sec = now_sec();
    size_t slot = sec % 60;
    uint64_t was = __atomic_load_n(&window[slot].sec, __ATOMIC_ACQUIRE);
    if (was != sec && __atomic_compare_exchange_n(&window[slot].sec, &was, sec, false,
                                                  __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        __atomic_store_n(&window[slot].n, 0, __ATOMIC_RELEASE);
    __atomic_fetch_add(&window[slot].n, 1, __ATOMIC_RELAXED);
}

uint64_t fg_metrics_refusals_last_minute(void)
{
    uint64_t sec = now_sec(), total = 0;
    for (size_t i = 0; i < 60; i++) {
        uint64_t s = __atomic_load_n(&window[i].sec, __ATOMIC_ACQUIRE);
        if (s + 60 > sec) total += __atomic_load_n(&window[i].n, __ATOMIC_RELAXED);
    }
    return total;
}

void fg_metrics_count(fg_metrics_row_t *row, fg_outcome_t o)
{
    if (!row) row = &none_row;
    __atomic_fetch_add(&row->count[o], 1, __ATOMIC_RELAXED);
    if (FG_OUTCOME_IS_REFUSAL(o)) count_refusal();
}

int64_t fg_metrics_gauge(int which)
{
    return __atomic_load_n(&gauges[which], __ATOMIC_RELAXED);
}

void fg_metrics_gauge_add(int which, int64_t delta)
{
    __atomic_fetch_add(&gauges[which], delta, __ATOMIC_RELAXED);
}

void fg_metrics_set_store_up(int up)
{
    __atomic_store_n(&store_up, up, __ATOMIC_RELAXED);
}

/* Append to a growing buffer; returns 0 or -1 on ENOMEM. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf_t;

__attribute__((format(printf, 2, 3))) static int sb_printf(sbuf_t *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return -1;
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return 0;
        }
        size_t ncap = b->cap ? b->cap * 2 : 4096;
        while (ncap < b->len + (size_t)n + 1) ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) return -1;
        b->p = np;
        b->cap = ncap;
    }
}

/* Prometheus label values escape \, " and newline. */
static int sb_label(sbuf_t *b, const char *v)
{
    for (; *v; v++) {
        int rc;
        if (*v == '\\' || *v == '"')
            rc = sb_printf(b, "\\%c", *v);
        else if (*v == '\n')
            rc = sb_printf(b, "\\n");
        else
            rc = sb_printf(b, "%c", *v);
        if (rc) return rc;
    }
    return 0;
}

static int render_row(sbuf_t *b, const fg_metrics_row_t *r)
{
    for (int o = 0; o < FG_OUT_COUNT_; o++) {
        uint64_t v = __atomic_load_n(&r->count[o], __ATOMIC_RELAXED);
        if (sb_printf(b, "fencegate_requests_total{policy=\"") ||
            sb_label(b, r->policy ? r->policy : "") ||
            sb_printf(b, "\",outcome=\"%s\"} %llu\n", outcome_names[o], (unsigned long long)v))
            return -1;
    }
    return 0;
}

char *fg_metrics_render(size_t *len)
{
    sbuf_t b = {0};
    int rc = sb_printf(&b, "# HELP fencegate_requests_total Requests by policy and outcome.\n"
                           "# TYPE fencegate_requests_total counter\n");
    pthread_mutex_lock(&rows_mu);
    for (const fg_metrics_row_t *r = rows; r && !rc; r = r->next) rc = render_row(&b, r);
    pthread_mutex_unlock(&rows_mu);
    if (!rc) rc = render_row(&b, &none_row);
    if (!rc) {
        uint64_t rej = 0;
        for (int o = FG_OUT_STALE; o <= FG_OUT_TOKEN_JUMP; o++) {
            pthread_mutex_lock(&rows_mu);
            for (const fg_metrics_row_t *r = rows; r; r = r->next)
                rej += __atomic_load_n(&r->count[o], __ATOMIC_RELAXED);
            pthread_mutex_unlock(&rows_mu);
            rej += __atomic_load_n(&none_row.count[o], __ATOMIC_RELAXED);
        }
        rc = sb_printf(
            &b,
            "# HELP fencegate_rejections_total Writes refused (stale, missing, malformed, "
            "unmatched, token_jump).\n# TYPE fencegate_rejections_total counter\n"
            "fencegate_rejections_total %llu\n"
            "# HELP fencegate_inflight_requests Requests being handled.\n"
            "# TYPE fencegate_inflight_requests gauge\nfencegate_inflight_requests %lld\n"
            "# HELP fencegate_lane_waiters Writes waiting for an earlier write of their "
            "resource.\n# TYPE fencegate_lane_waiters gauge\nfencegate_lane_waiters %lld\n"
            "# HELP fencegate_store_queue Store jobs queued.\n"
            "# TYPE fencegate_store_queue gauge\nfencegate_store_queue %lld\n"
            "# HELP fencegate_state_store_up 1 when the last store call succeeded.\n"
            "# TYPE fencegate_state_store_up gauge\nfencegate_state_store_up %d\n",
            (unsigned long long)rej,
            (long long)__atomic_load_n(&gauges[FG_GAUGE_INFLIGHT], __ATOMIC_RELAXED),
            (long long)__atomic_load_n(&gauges[FG_GAUGE_LANE_WAITERS], __ATOMIC_RELAXED),
            (long long)__atomic_load_n(&gauges[FG_GAUGE_STORE_QUEUE], __ATOMIC_RELAXED),
            __atomic_load_n(&store_up, __ATOMIC_RELAXED));
    }
    if (rc) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
