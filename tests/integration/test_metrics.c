/*
 * test_metrics.c -- GET /metrics as a Prometheus server sees it: the text is
 * checked by a real scraper's parser and linter (promtool check metrics, from
 * Debian's prometheus package), and every number asserted here moved because
 * of requests this test sent: histogram counts, gauges that go up and come
 * back down, the store reconnect counter.
 */
#include <unistd.h>

#include "gw_common.h"
#include "storage/store.h"

static env_t E;

static char *scrape(void)
{
    char url[256];
    snprintf(url, sizeof url, "%s/metrics", E.gw.admin_url);
    fgt_resp_t r = fgt_http("GET", url, NULL, NULL, 0);
    cr_assert_eq(r.status, 200, "GET /metrics -> %ld", r.status);
    char *body = r.body;
    r.body = NULL;
    fgt_resp_free(&r);
    return body;
}

/* The sum of every sample of `name` (exactly that name, any labels) whose
 * line contains `filter` (NULL: all). */
static double sample_sum(const char *text, const char *name, const char *filter)
{
    double sum = 0;
    size_t nl = strlen(name);
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[1024];
        snprintf(buf, sizeof buf, "%.*s", (int)len, line);
        if (strncmp(buf, name, nl) == 0 && (buf[nl] == '{' || buf[nl] == ' ') &&
            (!filter || strstr(buf, filter))) {
            const char *v = strrchr(buf, ' ');
            cr_assert(v, "no value in '%s'", buf);
            sum += strtod(v + 1, NULL);
        }
        line = end ? end + 1 : NULL;
    }
    return sum;
}

/* Poll /metrics until sample_sum(name, filter) == want (deadline 15 s);
 * returns the last scrape (caller frees). */
static char *wait_sample(const char *name, const char *filter, double want)
{
    char *m = NULL;
    double got = -1;
    for (uint64_t end = fg_now_mono_ms() + 15000; fg_now_mono_ms() < end;) {
        free(m);
        m = scrape();
        got = sample_sum(m, name, filter);
        if (got == want) return m;
        usleep(20 * 1000);
    }
    cr_assert_fail("%s{%s} stayed %g, want %g:\n%s", name, filter ? filter : "", got, want, m);
    return m;
}

/* promtool check metrics: parses the exposition and lints names, types and
 * help texts; exits non-zero on any problem. */
static void promtool_accepts(const char *text)
{
    cr_assert_eq(system("command -v promtool >/dev/null"), 0,
                 "promtool missing (apt-get install prometheus; tools/test.sh does)");
    char in[512], out[600], cmd[1300];
    snprintf(in, sizeof in, "%s/metrics.txt", fgt_tmpdir());
    snprintf(out, sizeof out, "%s.promtool", in);
    FILE *f = fopen(in, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "promtool check metrics <'%s' >'%s' 2>&1", in, out);
    int st = system(cmd);
    char *said = fgt_read_file(out);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "promtool check metrics failed (%d):\n%s", st,
              said ? said : "");
    free(said);
}

/* Every fencegate_requests_total{L} that is not zero has a duration
 * histogram with _count{L} equal to it (the same requests are counted). */
static void durations_match_counts(const char *text)
{
    const char *pfx = "fencegate_requests_total{";
    for (const char *p = strstr(text, pfx); p; p = strstr(p + 1, pfx)) {
        const char *close = strchr(p, '}');
        cr_assert(close);
        double n = strtod(close + 2, NULL);
        if (n == 0) continue;
        const char *open = p + strlen(pfx) - 1; /* "{...}" */
        char labels[512];
        snprintf(labels, sizeof labels, "%.*s", (int)(close - open + 1), open);
        double c = sample_sum(text, "fencegate_request_duration_seconds_count", labels);
        cr_assert_eq(c, n, "duration _count%s is %g, requests_total is %g", labels, c, n);
    }
}

/* The bucket series of one histogram are cumulative and end at _count. */
static void buckets_cumulative(const char *text, const char *name, const char *labels)
{
    char bucket[256], count[256];
    snprintf(bucket, sizeof bucket, "%s_bucket{%s", name, labels);
    snprintf(count, sizeof count, "%s_count", name);
    double prev = 0;
    int seen = 0;
    bool inf = false;
    for (const char *p = strstr(text, bucket); p; p = strstr(p + 1, bucket), seen++) {
        double v = strtod(strchr(p, '}') + 2, NULL);
        cr_assert_geq(v, prev, "buckets of %s{%s} are not cumulative", name, labels);
        prev = v;
        inf = strncmp(strstr(p, "le=\""), "le=\"+Inf\"", 9) == 0;
    }
    cr_assert_eq(seen, 15, "%s{%s}: 14 buckets and +Inf", name, labels);
    cr_assert(inf, "the last bucket is +Inf");
    cr_assert_eq(prev, sample_sum(text, count, labels[0] ? labels : NULL));
}

Test(metrics, histograms_count_the_requests_sent, .timeout = 90)
{
    env_start(&E, STORE_SQLITE, 0, NULL, NULL);
    char *m0 = scrape();
    promtool_accepts(m0); /* before any traffic too: empty histograms are valid */
    double d0 = sample_sum(m0, "fencegate_request_duration_seconds_count", NULL);
    double chk0 = sample_sum(m0, "fencegate_store_seconds_count", "op=\"check\"");
    double aud0 = sample_sum(m0, "fencegate_store_seconds_count", "op=\"audit\"");
    double fb0 = sample_sum(m0, "fencegate_upstream_first_byte_seconds_count", NULL);
    cr_assert(strstr(m0, "fencegate_store_seconds_count{store=\"sqlite\",op=\"check\"}"), "%s", m0);
    free(m0);

    cr_assert_eq(put_tok(&E, "/orders/m", "10", "v"), 200);    /* a write */
    cr_assert_eq(put_tok(&E, "/orders/m", "5", "v"), 409);     /* a stale write */
    fgt_resp_t r = gw_req(&E, "GET", "/orders/m", NULL, NULL); /* a read */
    cr_assert_eq(r.status, 200, "%ld", r.status);
    fgt_resp_free(&r);
    cr_assert_eq(put_tok(&E, "/orders/m", NULL, "v"), 428); /* an audited refusal */

    /* a request is observed when the gateway is done with it, which may be
     * just after the client read its answer */
    char *m = wait_sample("fencegate_request_duration_seconds_count", NULL, d0 + 4);
    promtool_accepts(m);
    const char *outcomes[] = {"forwarded", "stale", "read", "missing"};
    for (size_t i = 0; i < 4; i++) {
        char l[128];
        snprintf(l, sizeof l, "policy=\"orders\",outcome=\"%s\"", outcomes[i]);
        cr_assert_eq(sample_sum(m, "fencegate_request_duration_seconds_count", l), 1, "%s", l);
        buckets_cumulative(m, "fencegate_request_duration_seconds", l);
        cr_assert_gt(sample_sum(m, "fencegate_request_duration_seconds_sum", l), 0, "%s", l);
    }
    durations_match_counts(m);
    /* two fence checks (one each, sent one after the other), one audit append
     * (the missing token; a stale write is audited inside its check) */
    cr_assert_eq(sample_sum(m, "fencegate_store_seconds_count", "op=\"check\""), chk0 + 2);
    cr_assert_eq(sample_sum(m, "fencegate_store_seconds_count", "op=\"audit\""), aud0 + 1);
    buckets_cumulative(m, "fencegate_store_seconds", "store=\"sqlite\",op=\"check\"");
    /* the write and the read went to the upstream */
    cr_assert_eq(sample_sum(m, "fencegate_upstream_first_byte_seconds_count", NULL), fb0 + 2);
    buckets_cumulative(m, "fencegate_upstream_first_byte_seconds", "");
    cr_assert_eq(sample_sum(m, "fencegate_rejections_total", NULL), 2, "stale + missing");
    free(m);
    env_stop(&E);
}

Test(metrics, gauges_come_and_go, .timeout = 90)
{
    env_start(&E, STORE_SQLITE, 0, "upstream_timeout = 1s\nupstream_grace = 10s\n", NULL);
    /* an open client connection */
    int fd = fgt_raw_connect(E.gw.port);
    free(wait_sample("fencegate_client_connections", NULL, 1));
    close(fd);
    free(wait_sample("fencegate_client_connections", NULL, 0));

    /* a write that times out (504) quarantines its resource until the
     * upstream answers, 3 s after it arrived */
    char url[256];
    snprintf(url, sizeof url, "%s/orders/q", E.gw.url);
    const char *h[] = {"Fencing-Token: 1", "X-Delay-Ms: 3000", NULL};
    fgt_resp_t r = fgt_http("PUT", url, h, "v", 1);
    cr_assert_eq(r.status, 504, "%ld %s", r.status, r.body);
    fgt_resp_free(&r);
    char *m = scrape();
    cr_assert_eq(sample_sum(m, "fencegate_quarantined_resources", NULL), 1, "%s", m);
    promtool_accepts(m);
    free(m);
    m = wait_sample("fencegate_quarantined_resources", NULL, 0);
    cr_assert_eq(
        sample_sum(m, "fencegate_request_duration_seconds_count", "outcome=\"upstream_timeout\""),
        1);
    free(m);
    env_stop(&E);
}

Test(metrics, store_reconnects_are_counted, .timeout = 120)
{
    env_start(&E, STORE_REDIS, 0, "state_pool = 1\nstate_timeout = 500ms\n", NULL);
    cr_assert_eq(put_tok(&E, "/orders/r", "1", "v"), 200);
    char *m = scrape();
    cr_assert_eq(sample_sum(m, "fencegate_store_reconnects_total", NULL), 0);
    cr_assert(strstr(m, "fencegate_store_seconds_count{store=\"redis\",op=\"check\"} 1"), "%s", m);
    free(m);
    fgt_redis_stop(&E.redis);
    cr_assert_eq(put_tok(&E, "/orders/r", "2", "v"), 503);
    fgt_redis_restart(&E.redis);
    /* the pooled connection is in backoff: write until it is back */
    long st = 0;
    for (uint64_t end = fg_now_mono_ms() + 30000; fg_now_mono_ms() < end && st != 200;) {
        st = put_tok(&E, "/orders/r", "3", "v");
        if (st != 200) usleep(50 * 1000); /* pacing the retries */
    }
    cr_assert_eq(st, 200, "writes work again after the store came back");
    m = scrape();
    cr_assert_geq(sample_sum(m, "fencegate_store_reconnects_total", NULL), 1, "%s", m);
    cr_assert_eq(sample_sum(m, "fencegate_state_store_up", NULL), 1);
    promtool_accepts(m);
    free(m);
    env_stop(&E);
}
