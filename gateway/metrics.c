/*
 * metrics.c -- counter rows, histograms, gauges and the Prometheus text
 * rendering. See metrics.h.
 */
#include "gateway/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Bucket upper bounds in ns, and as `le` labels. */
static const uint64_t bucket_ns[] = {
#define FG_BUCKET_NS(ns, le) ns,
    FG_METRICS_BUCKETS(FG_BUCKET_NS)
#undef FG_BUCKET_NS
};
static const char *const bucket_le[] = {
#define FG_BUCKET_LE(ns, le) le,
    FG_METRICS_BUCKETS(FG_BUCKET_LE)
#undef FG_BUCKET_LE
};
#define NBUCKETS (sizeof bucket_ns / sizeof bucket_ns[0])

/* Per bucket (not cumulative; the last one is +Inf) and the sum. The count is
 * the buckets' total, so a scrape never shows a _count that disagrees with
 * its +Inf bucket. */
typedef struct hist {
    uint64_t bucket[NBUCKETS + 1];
    uint64_t sum_ns;
} hist_t;

struct fg_metrics_row {
    struct fg_metrics_row *next;
    char *policy; /* NULL for "no policy" */
    uint64_t count[FG_OUT_COUNT_];
    hist_t dur[FG_OUT_COUNT_];
};

/* One slot per second of the last minute: which second it counts, and how many. */
typedef struct window_slot {
    uint64_t sec, n;
} window_slot_t;

struct fg_metrics {
    pthread_mutex_t rows_mu; /* guards the rows list (not the counters: atomics) */
    fg_metrics_row_t *rows;
    fg_metrics_row_t none_row;
    int64_t gauges[FG_GAUGE_COUNT_];
    int store_up;
    hist_t store_hist[FG_STORE_OP_COUNT_];
    const char *store_scheme;
    hist_t first_byte_hist;
    uint64_t store_reconnects;
    window_slot_t window[60];
};

static const char *const store_op_names[FG_STORE_OP_COUNT_] = {"check", "audit"};

static const char *outcome_names[FG_OUT_COUNT_] = {
#define FG_OUTCOME_NAME(n, s) s,
    FG_OUTCOMES(FG_OUTCOME_NAME)
#undef FG_OUTCOME_NAME
};

fg_metrics_t *fg_metrics_new(void)
{
    fg_metrics_t *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    pthread_mutex_init(&m->rows_mu, NULL);
    m->store_up = 1;
    m->store_scheme = "";
    return m;
}

void fg_metrics_free(fg_metrics_t *m)
{
    if (!m) return;
    for (fg_metrics_row_t *r = m->rows, *next; r; r = next) {
        next = r->next;
        free(r->policy);
        free(r);
    }
    pthread_mutex_destroy(&m->rows_mu);
    free(m);
}

fg_metrics_row_t *fg_metrics_row(fg_metrics_t *m, const char *policy)
{
    if (!policy) return &m->none_row;
    pthread_mutex_lock(&m->rows_mu);
    fg_metrics_row_t *r;
    for (r = m->rows; r; r = r->next)
        if (strcmp(r->policy, policy) == 0) break;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (r && !(r->policy = strdup(policy))) {
            free(r);
            r = NULL;
        }
        if (r) {
            /* append, so /metrics lists policies in the order first seen */
            fg_metrics_row_t **tail = &m->rows;
            while (*tail) tail = &(*tail)->next;
            *tail = r;
        }
    }
    pthread_mutex_unlock(&m->rows_mu);
    return r;
}

static uint64_t now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec;
}

static void count_refusal(fg_metrics_t *m)
{
    window_slot_t *window = m->window;
    uint64_t sec = now_sec();
    size_t slot = sec % 60;
    uint64_t was = __atomic_load_n(&window[slot].sec, __ATOMIC_ACQUIRE);
    if (was != sec && __atomic_compare_exchange_n(&window[slot].sec, &was, sec, false,
                                                  __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        __atomic_store_n(&window[slot].n, 0, __ATOMIC_RELEASE);
    __atomic_fetch_add(&window[slot].n, 1, __ATOMIC_RELAXED);
}

uint64_t fg_metrics_refusals_last_minute(fg_metrics_t *m)
{
    const window_slot_t *window = m->window;
    uint64_t sec = now_sec(), total = 0;
    for (size_t i = 0; i < 60; i++) {
        uint64_t s = __atomic_load_n(&window[i].sec, __ATOMIC_ACQUIRE);
        if (s + 60 > sec) total += __atomic_load_n(&window[i].n, __ATOMIC_RELAXED);
    }
    return total;
}

void fg_metrics_count(fg_metrics_t *m, fg_metrics_row_t *row, fg_outcome_t o)
{
    if (!row) row = &m->none_row;
    __atomic_fetch_add(&row->count[o], 1, __ATOMIC_RELAXED);
    if (FG_OUTCOME_IS_REFUSAL(o)) count_refusal(m);
}

int64_t fg_metrics_gauge(fg_metrics_t *m, int which)
{
    return __atomic_load_n(&m->gauges[which], __ATOMIC_RELAXED);
}

void fg_metrics_gauge_add(fg_metrics_t *m, int which, int64_t delta)
{
    __atomic_fetch_add(&m->gauges[which], delta, __ATOMIC_RELAXED);
}

void fg_metrics_set_store_up(fg_metrics_t *m, int up)
{
    __atomic_store_n(&m->store_up, up, __ATOMIC_RELAXED);
}

uint64_t fg_metrics_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double fg_metrics_since(uint64_t t0_ns)
{
    if (!t0_ns) return 0;
    uint64_t now = fg_metrics_now_ns();
    return now > t0_ns ? (double)(now - t0_ns) / 1e9 : 0;
}

static void observe(hist_t *h, double seconds)
{
    /* NaN and negatives count as 0; anything past ~584 years as the maximum */
    uint64_t ns = 0;
    if (seconds > 0) ns = seconds < 1.8e10 ? (uint64_t)(seconds * 1e9) : UINT64_MAX / 2;
    size_t i = 0;
    while (i < NBUCKETS && ns > bucket_ns[i]) i++;
    __atomic_fetch_add(&h->bucket[i], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->sum_ns, ns, __ATOMIC_RELAXED);
}

void fg_metrics_observe_request(fg_metrics_t *m, fg_metrics_row_t *row, fg_outcome_t o,
                                double seconds)
{
    if (!row) row = &m->none_row;
    observe(&row->dur[o], seconds);
}

void fg_metrics_observe_store(fg_metrics_t *m, fg_store_op_t op, double seconds)
{
    observe(&m->store_hist[op], seconds);
}

void fg_metrics_set_store(fg_metrics_t *m, const char *scheme)
{
    __atomic_store_n(&m->store_scheme, scheme ? scheme : "", __ATOMIC_RELEASE);
}

void fg_metrics_observe_upstream_first_byte(fg_metrics_t *m, double seconds)
{
    observe(&m->first_byte_hist, seconds);
}

void fg_metrics_count_store_reconnect(fg_metrics_t *m)
{
    __atomic_fetch_add(&m->store_reconnects, 1, __ATOMIC_RELAXED);
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

/* `policy="...",outcome="..."` of one row's outcome, into `lab` (emptied first). */
static int row_labels(sbuf_t *lab, const fg_metrics_row_t *r, int o)
{
    lab->len = 0;
    return sb_printf(lab, "policy=\"") || sb_label(lab, r->policy ? r->policy : "") ||
           sb_printf(lab, "\",outcome=\"%s\"", outcome_names[o]);
}

/* One histogram's series; `labels` without braces ("" for none). */
static int render_hist(sbuf_t *b, const char *name, const char *labels, const hist_t *h)
{
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (size_t i = 0; i <= NBUCKETS; i++) {
        cum += __atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED);
        if (sb_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, sep,
                      i < NBUCKETS ? bucket_le[i] : "+Inf", (unsigned long long)cum))
            return -1;
    }
    uint64_t sum = __atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED);
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    return sb_printf(b, "%s_sum%s%s%s %llu.%09llu\n%s_count%s%s%s %llu\n", name, open, labels,
                     close, (unsigned long long)(sum / 1000000000u),
                     (unsigned long long)(sum % 1000000000u), name, open, labels, close,
                     (unsigned long long)cum);
}

static uint64_t hist_count(const hist_t *h)
{
    uint64_t n = 0;
    for (size_t i = 0; i <= NBUCKETS; i++) n += __atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED);
    return n;
}

/* A row's request counters (every outcome, zeros included: the set of series
 * stays stable) or its duration histograms (only outcomes seen: 17 series of
 * buckets per policy would mostly be zeros). */
static int render_row(sbuf_t *b, sbuf_t *lab, const fg_metrics_row_t *r, bool histograms)
{
    for (int o = 0; o < FG_OUT_COUNT_; o++) {
        if (histograms && !hist_count(&r->dur[o])) continue;
        if (row_labels(lab, r, o)) return -1;
        int rc =
            histograms
                ? render_hist(b, "fencegate_request_duration_seconds", lab->p, &r->dur[o])
                : sb_printf(b, "fencegate_requests_total{%s} %llu\n", lab->p,
                            (unsigned long long)__atomic_load_n(&r->count[o], __ATOMIC_RELAXED));
        if (rc) return -1;
    }
    return 0;
}

static int render_rows(fg_metrics_t *m, sbuf_t *b, sbuf_t *lab, bool histograms)
{
    int rc = 0;
    pthread_mutex_lock(&m->rows_mu);
    for (const fg_metrics_row_t *r = m->rows; r && !rc; r = r->next)
        rc = render_row(b, lab, r, histograms);
    pthread_mutex_unlock(&m->rows_mu);
    return rc ? rc : render_row(b, lab, &m->none_row, histograms);
}

static uint64_t rejections(fg_metrics_t *m)
{
    uint64_t rej = 0;
    pthread_mutex_lock(&m->rows_mu);
    for (int o = FG_OUT_STALE; o <= FG_OUT_TOKEN_JUMP; o++) {
        for (const fg_metrics_row_t *r = m->rows; r; r = r->next)
            rej += __atomic_load_n(&r->count[o], __ATOMIC_RELAXED);
        rej += __atomic_load_n(&m->none_row.count[o], __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&m->rows_mu);
    return rej;
}

static long long gauge(fg_metrics_t *m, int which)
{
    return (long long)fg_metrics_gauge(m, which);
}

static int render_store(fg_metrics_t *m, sbuf_t *b, sbuf_t *lab)
{
    const char *scheme = __atomic_load_n(&m->store_scheme, __ATOMIC_ACQUIRE);
    for (int op = 0; op < FG_STORE_OP_COUNT_; op++) {
        lab->len = 0;
        if (sb_printf(lab, "store=\"") || sb_label(lab, scheme) ||
            sb_printf(lab, "\",op=\"%s\"", store_op_names[op]) ||
            render_hist(b, "fencegate_store_seconds", lab->p, &m->store_hist[op]))
            return -1;
    }
    return 0;
}

char *fg_metrics_render(fg_metrics_t *m, size_t *len)
{
    sbuf_t b = {0}, lab = {0};
    int rc = sb_printf(&b, "# HELP fencegate_requests_total Requests by policy and outcome "
                           "(refusals by reason are the refusal outcomes).\n"
                           "# TYPE fencegate_requests_total counter\n");
    if (!rc) rc = render_rows(m, &b, &lab, false);
    if (!rc)
        rc = sb_printf(&b, "# HELP fencegate_request_duration_seconds Time from the request "
                           "line to the end of the answer, by policy and outcome.\n"
                           "# TYPE fencegate_request_duration_seconds histogram\n");
    if (!rc) rc = render_rows(m, &b, &lab, true);
    if (!rc)
        rc = sb_printf(&b, "# HELP fencegate_store_seconds State store round trips (a batch of "
                           "fence checks is one), failed ones included.\n"
                           "# TYPE fencegate_store_seconds histogram\n");
    if (!rc) rc = render_store(m, &b, &lab);
    if (!rc)
        rc = sb_printf(&b, "# HELP fencegate_upstream_first_byte_seconds Time from a transfer's "
                           "start to the upstream's answer head.\n"
                           "# TYPE fencegate_upstream_first_byte_seconds histogram\n");
    if (!rc) rc = render_hist(&b, "fencegate_upstream_first_byte_seconds", "", &m->first_byte_hist);
    if (!rc)
        rc = sb_printf(
            &b,
            "# HELP fencegate_rejections_total Writes refused (stale, missing, malformed, "
            "unmatched, token_jump).\n# TYPE fencegate_rejections_total counter\n"
            "fencegate_rejections_total %llu\n"
            "# HELP fencegate_store_reconnects_total Store connections made again after the "
            "store failed.\n# TYPE fencegate_store_reconnects_total counter\n"
            "fencegate_store_reconnects_total %llu\n"
            "# HELP fencegate_inflight_requests Requests being handled.\n"
            "# TYPE fencegate_inflight_requests gauge\nfencegate_inflight_requests %lld\n"
            "# HELP fencegate_lane_waiters Writes waiting for an earlier write of their "
            "resource.\n# TYPE fencegate_lane_waiters gauge\nfencegate_lane_waiters %lld\n"
            "# HELP fencegate_quarantined_resources Resources held after a 504 until the "
            "upstream answers or upstream_grace ends.\n"
            "# TYPE fencegate_quarantined_resources gauge\n"
            "fencegate_quarantined_resources %lld\n"
            "# HELP fencegate_client_connections Open client connections.\n"
            "# TYPE fencegate_client_connections gauge\nfencegate_client_connections %lld\n"
            "# HELP fencegate_store_queue Store jobs queued.\n"
            "# TYPE fencegate_store_queue gauge\nfencegate_store_queue %lld\n"
            "# HELP fencegate_state_store_up 1 when the last store call succeeded.\n"
            "# TYPE fencegate_state_store_up gauge\nfencegate_state_store_up %d\n",
            (unsigned long long)rejections(m),
            (unsigned long long)__atomic_load_n(&m->store_reconnects, __ATOMIC_RELAXED),
            gauge(m, FG_GAUGE_INFLIGHT), gauge(m, FG_GAUGE_LANE_WAITERS),
            gauge(m, FG_GAUGE_QUARANTINED), gauge(m, FG_GAUGE_CONNECTIONS),
            gauge(m, FG_GAUGE_STORE_QUEUE), __atomic_load_n(&m->store_up, __ATOMIC_RELAXED));
    free(lab.p);
    if (rc) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
