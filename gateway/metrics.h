/*
 * metrics.h -- what GET /metrics shows: request counters per policy and
 * outcome, latency histograms, and a few gauges (README "Admin API" lists
 * every name; they are part of the contract).
 *
 * A fg_metrics_t is one gateway's set of metrics; the gateway owns it (like
 * its lanes) and hands it to the parts that count, so two gateways, or a unit
 * test, never share counters. Inside it a row of counters exists per policy
 * name (and one for requests that match no policy). Rows are created when a
 * config is loaded and live as long as the fg_metrics_t, so a request may
 * keep a row pointer across a SIGHUP reload; the number of rows is bounded by
 * the number of distinct policy names ever loaded. Counters, gauges and
 * histogram buckets are relaxed atomics: cheap on the hot path, exact in
 * total; nothing here allocates except fg_metrics_new(), fg_metrics_row()
 * and fg_metrics_render(). Every function is thread-safe.
 */
#ifndef FG_METRICS_H
#define FG_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define FG_OUTCOMES(X)                                                                             \
    X(FORWARDED, "forwarded")                                                                      \
    X(READ, "read")                                                                                \
    X(UNCHECKED, "unchecked")                                                                      \
    X(REPORT_ONLY, "report_only")                                                                  \
    X(STATE_ERROR_FORWARD, "state_error_forwarded")                                                \
    X(STALE, "stale")                                                                              \
    X(MISSING, "missing")                                                                          \
    X(MALFORMED, "malformed")                                                                      \
    X(UNMATCHED, "unmatched")                                                                      \
    X(TOKEN_JUMP, "token_jump")                                                                    \
    X(NON_CANONICAL, "non_canonical")                                                              \
    X(STATE_UNAVAILABLE, "state_unavailable")                                                      \
    X(FENCE_BUSY, "fence_busy")                                                                    \
    X(UPSTREAM_ERROR, "upstream_error")                                                            \
    X(UPSTREAM_TIMEOUT, "upstream_timeout")                                                        \
    X(MALFORMED_REQUEST, "malformed_request")                                                      \
    X(REQUEST_TIMEOUT, "request_timeout")

typedef enum fg_outcome {
#define FG_OUTCOME_ENUM(n, s) FG_OUT_##n,
    FG_OUTCOMES(FG_OUTCOME_ENUM)
#undef FG_OUTCOME_ENUM
        FG_OUT_COUNT_
} fg_outcome_t;

typedef struct fg_metrics fg_metrics_t;
typedef struct fg_metrics_row fg_metrics_row_t;

/* A new set of metrics, all zero (the store is "up", its label ""). The
 * caller owns it and frees it with fg_metrics_free(). NULL when out of memory. */
fg_metrics_t *fg_metrics_new(void);
/* Free `m` and its rows (NULL is fine). Only after every user stopped: row
 * pointers handed out by fg_metrics_row() die with it. */
void fg_metrics_free(fg_metrics_t *m);

/* The row for `policy` (NULL: the "no policy" row); created on first use and
 * owned by `m`. NULL only when out of memory. */
fg_metrics_row_t *fg_metrics_row(fg_metrics_t *m, const char *policy);

/* Count one request with this outcome. `row` may be NULL (then the "no policy" row).
 * A refusal (FG_OUT_STALE .. FG_OUT_TOKEN_JUMP) is also counted in a one-minute
 * window for fg_metrics_refusals_last_minute(). */
void fg_metrics_count(fg_metrics_t *m, fg_metrics_row_t *row, fg_outcome_t o);

/* True for the outcomes that are refused writes (stale, missing, malformed,
 * unmatched, token_jump): what fencegate_rejections_total counts. */
#define FG_OUTCOME_IS_REFUSAL(o) ((o) >= FG_OUT_STALE && (o) <= FG_OUT_TOKEN_JUMP)

/* Refused writes counted in the last 60 seconds (approximate at the edges). */
uint64_t fg_metrics_refusals_last_minute(fg_metrics_t *m);

/* Gauges maintained by the gateway: requests in flight, lane waiters, store
 * jobs queued, transfers in the 504 quarantine (upstream.c), open client
 * connections (front.c). */
void fg_metrics_gauge_add(fg_metrics_t *m, int which, int64_t delta);
enum {
    FG_GAUGE_INFLIGHT = 0,
    FG_GAUGE_LANE_WAITERS,
    FG_GAUGE_STORE_QUEUE,
    FG_GAUGE_QUARANTINED,
    FG_GAUGE_CONNECTIONS,
    FG_GAUGE_COUNT_
};
/* fencegate_state_store_up: 1 when the last store call succeeded. */
void fg_metrics_set_store_up(fg_metrics_t *m, int up);
/* Current value of a gauge (FG_GAUGE_*). */
int64_t fg_metrics_gauge(fg_metrics_t *m, int which);

/* ---- latency histograms ----
 * Every histogram has the same fixed buckets: upper bounds in nanoseconds and
 * as Prometheus' `le` label (seconds). An observation is two relaxed atomic
 * adds (its bucket and the sum); /metrics renders the buckets cumulative.
 * The functions below are thread-safe, never fail and allocate nothing;
 * `seconds` below 0 (or NaN) counts as 0. */
#define FG_METRICS_BUCKETS(X)                                                                      \
    X(500000ull, "0.0005")                                                                         \
    X(1000000ull, "0.001")                                                                         \
    X(2500000ull, "0.0025")                                                                        \
    X(5000000ull, "0.005")                                                                         \
    X(10000000ull, "0.01")                                                                         \
    X(25000000ull, "0.025")                                                                        \
    X(50000000ull, "0.05")                                                                         \
    X(100000000ull, "0.1")                                                                         \
    X(250000000ull, "0.25")                                                                        \
    X(500000000ull, "0.5")                                                                         \
    X(1000000000ull, "1")                                                                          \
    X(2500000000ull, "2.5")                                                                        \
    X(5000000000ull, "5")                                                                          \
    X(10000000000ull, "10")

/* The monotonic clock in nanoseconds: the start stamp to give fg_metrics_since(). */
uint64_t fg_metrics_now_ns(void);

/* Seconds from `t0_ns` (a fg_metrics_now_ns() stamp) to now; 0 when `t0_ns`
 * is 0 (never stamped). */
double fg_metrics_since(uint64_t t0_ns);

/* One request ended after `seconds` (from its request line to the end):
 * fencegate_request_duration_seconds{policy,outcome}. Call it for exactly the
 * requests given to fg_metrics_count(), so that the histogram's _count equals
 * fencegate_requests_total for the same labels. `row` as in fg_metrics_count. */
void fg_metrics_observe_request(fg_metrics_t *m, fg_metrics_row_t *row, fg_outcome_t o,
                                double seconds);

typedef enum fg_store_op {
    FG_STORE_OP_CHECK = 0, /* one fence-check call (a batch of checks is one round trip) */
    FG_STORE_OP_AUDIT,     /* one audit append */
    FG_STORE_OP_COUNT_
} fg_store_op_t;

/* One round trip to the state store took `seconds`, failed calls included:
 * fencegate_store_seconds{store,op}. Any thread (a pool thread, or an event
 * loop that talks to the store itself). */
void fg_metrics_observe_store(fg_metrics_t *m, fg_store_op_t op, double seconds);

/* The `store` label of fencegate_store_seconds: the backend's scheme
 * ("sqlite", "redis", "postgres"). `scheme` is borrowed for the life of the
 * process (a backend's static name). Set once by the gateway at start. */
void fg_metrics_set_store(fg_metrics_t *m, const char *scheme);

/* The upstream's answer head arrived `seconds` after the transfer started
 * (a connection was taken for it): fencegate_upstream_first_byte_seconds. */
void fg_metrics_observe_upstream_first_byte(fg_metrics_t *m, double seconds);

/* A store connection came back after the store had failed:
 * fencegate_store_reconnects_total. */
void fg_metrics_count_store_reconnect(fg_metrics_t *m);

/* Render the Prometheus text exposition of `m` into a malloc'd string (*len
 * set); the caller frees it. NULL when out of memory. */
char *fg_metrics_render(fg_metrics_t *m, size_t *len);

#endif
