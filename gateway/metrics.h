/*
 * metrics.h -- request counters per policy and outcome, for GET /metrics.
 *
 * A row of counters exists per policy name (and one for requests that match
 * no policy). Rows are created when a config is loaded and never freed, so a
 * request may keep a row pointer across a SIGHUP reload; the number of rows is
 * bounded by the number of distinct policy names ever loaded. Counters are
 * relaxed atomics: cheap on the hot path, exact in total.
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

typedef struct fg_metrics_row fg_metrics_row_t;

/* The row for `policy` (NULL: the "no policy" row); created on first use.
 * Never freed; NULL only when out of memory. Thread-safe. */
fg_metrics_row_t *fg_metrics_row(const char *policy);

/* Count one request with this outcome. `row` may be NULL (then the "no policy" row).
 * A refusal (FG_OUT_STALE .. FG_OUT_TOKEN_JUMP) is also counted in a one-minute
 * window for fg_metrics_refusals_last_minute(). */
void fg_metrics_count(fg_metrics_row_t *row, fg_outcome_t o);

/* True for the outcomes that are refused writes (stale, missing, malformed,
 * unmatched, token_jump): what fencegate_rejections_total counts. */
#define FG_OUTCOME_IS_REFUSAL(o) ((o) >= FG_OUT_STALE && (o) <= FG_OUT_TOKEN_JUMP)

/* Refused writes counted in the last 60 seconds (approximate at the edges). */
uint64_t fg_metrics_refusals_last_minute(void);

/* Gauges maintained by the gateway. */
void fg_metrics_gauge_add(int which, int64_t delta);
enum { FG_GAUGE_INFLIGHT = 0, FG_GAUGE_LANE_WAITERS, FG_GAUGE_STORE_QUEUE, FG_GAUGE_COUNT_ };
void fg_metrics_set_store_up(int up);
/* Current value of a gauge (FG_GAUGE_*). */
int64_t fg_metrics_gauge(int which);

/* Render the Prometheus text exposition into a malloc'd string (*len set). NULL on ENOMEM. */
char *fg_metrics_render(size_t *len);

#endif
