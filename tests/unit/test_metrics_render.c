/*
 * test_metrics_render.c -- gateway/metrics.c without a gateway: what a
 * fg_metrics_t renders after known counts and observations (the exact series
 * lines an operator's dashboard reads), cumulative histogram buckets, the
 * refusal window, label escaping, and that two sets of metrics never share
 * a counter. The exposition format itself is checked by promtool in
 * tests/integration/test_metrics.c.
 */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/metrics.h"

/* The text of `m`, rendered; the caller frees it. */
static char *render(fg_metrics_t *m)
{
    size_t len = 0;
    char *s = fg_metrics_render(m, &len);
    cr_assert_not_null(s);
    cr_assert_eq(strlen(s), len, "the length given is the text's");
    return s;
}

/* `line` (a whole line, without its newline) appears in `text`. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n') return true;
    return false;
}

#define assert_line(text, line) cr_assert(has_line(text, line), "missing line: %s\n%s", line, text)

Test(metrics, counts_by_policy_and_outcome)
{
    fg_metrics_t *m = fg_metrics_new();
    cr_assert_not_null(m);
    fg_metrics_row_t *orders = fg_metrics_row(m, "orders");
    cr_assert_eq(fg_metrics_row(m, "orders"), orders, "one row per policy name");
    for (int i = 0; i < 3; i++) fg_metrics_count(m, orders, FG_OUT_FORWARDED);
    fg_metrics_count(m, orders, FG_OUT_STALE);
    fg_metrics_count(m, NULL, FG_OUT_MALFORMED_REQUEST);
    fg_metrics_count(m, NULL, FG_OUT_UNMATCHED);
    char *s = render(m);
    assert_line(s, "fencegate_requests_total{policy=\"orders\",outcome=\"forwarded\"} 3");
    assert_line(s, "fencegate_requests_total{policy=\"orders\",outcome=\"stale\"} 1");
    assert_line(s, "fencegate_requests_total{policy=\"orders\",outcome=\"read\"} 0");
    assert_line(s, "fencegate_requests_total{policy=\"\",outcome=\"malformed_request\"} 1");
    /* stale and unmatched are refused writes; a malformed request is not one */
    assert_line(s, "fencegate_rejections_total 2");
    cr_assert_eq(fg_metrics_refusals_last_minute(m), 2);
    free(s);
    fg_metrics_free(m);
}

Test(metrics, histograms_are_cumulative_with_sum_and_count)
{
    fg_metrics_t *m = fg_metrics_new();
    fg_metrics_row_t *r = fg_metrics_row(m, "p");
    fg_metrics_observe_request(m, r, FG_OUT_FORWARDED, 0.0004); /* le 0.0005 */
    fg_metrics_observe_request(m, r, FG_OUT_FORWARDED, 0.003);  /* le 0.005 */
    fg_metrics_observe_request(m, r, FG_OUT_FORWARDED, 60);     /* +Inf only */
    fg_metrics_observe_request(m, r, FG_OUT_FORWARDED, -1);     /* counts as 0 */
    char *s = render(m);
    const char *lab = "policy=\"p\",outcome=\"forwarded\"";
    char line[256];
    struct {
        const char *le;
        int cum;
    } want[] = {{"0.0005", 2}, {"0.001", 2}, {"0.0025", 2}, {"0.005", 3}, {"10", 3}, {"+Inf", 4}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        snprintf(line, sizeof line, "fencegate_request_duration_seconds_bucket{%s,le=\"%s\"} %d",
                 lab, want[i].le, want[i].cum);
        assert_line(s, line);
    }
    snprintf(line, sizeof line, "fencegate_request_duration_seconds_count{%s} 4", lab);
    assert_line(s, line);
    snprintf(line, sizeof line, "fencegate_request_duration_seconds_sum{%s} 60.003400000", lab);
    assert_line(s, line);
    cr_assert_null(strstr(s, "outcome=\"stale\",le="), "outcomes never seen have no histogram");
    free(s);
    fg_metrics_free(m);
}

Test(metrics, store_gauges_and_label_escaping)
{
    fg_metrics_t *m = fg_metrics_new();
    fg_metrics_set_store(m, "redis");
    fg_metrics_observe_store(m, FG_STORE_OP_CHECK, 0.002);
    fg_metrics_count_store_reconnect(m);
    fg_metrics_set_store_up(m, 0);
    fg_metrics_gauge_add(m, FG_GAUGE_LANE_WAITERS, 3);
    fg_metrics_gauge_add(m, FG_GAUGE_LANE_WAITERS, -1);
    fg_metrics_gauge_add(m, FG_GAUGE_QUARANTINED, 1);
    fg_metrics_count(m, fg_metrics_row(m, "a\"b\\c\nd"), FG_OUT_READ);
    char *s = render(m);
    assert_line(s, "fencegate_store_seconds_bucket{store=\"redis\",op=\"check\",le=\"0.0025\"} 1");
    assert_line(s, "fencegate_store_seconds_count{store=\"redis\",op=\"audit\"} 0");
    assert_line(s, "fencegate_store_reconnects_total 1");
    assert_line(s, "fencegate_state_store_up 0");
    assert_line(s, "fencegate_lane_waiters 2");
    assert_line(s, "fencegate_quarantined_resources 1");
    assert_line(s, "fencegate_requests_total{policy=\"a\\\"b\\\\c\\nd\",outcome=\"read\"} 1");
    free(s);
    fg_metrics_free(m);
}

Test(metrics, two_sets_share_nothing)
{
    fg_metrics_t *a = fg_metrics_new(), *b = fg_metrics_new();
    fg_metrics_count(a, fg_metrics_row(a, "p"), FG_OUT_STALE);
    fg_metrics_gauge_add(a, FG_GAUGE_INFLIGHT, 5);
    cr_assert_eq(fg_metrics_gauge(b, FG_GAUGE_INFLIGHT), 0);
    cr_assert_eq(fg_metrics_refusals_last_minute(b), 0);
    char *s = render(b);
    assert_line(s, "fencegate_rejections_total 0");
    cr_assert_null(strstr(s, "policy=\"p\""), "b never saw policy p");
    free(s);
    fg_metrics_free(a);
    fg_metrics_free(b);
}
