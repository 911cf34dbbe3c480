/*
 * test_upstream.c -- the upstream side of the fence: answers that say one
 * thing and do another must not let a write out of order or hand one client
 * another request's answer, and a token nobody checked never reaches the
 * upstream. The upstream is harness/rawup.c, which records every byte and
 * misbehaves on marked targets (see there).
 */
#include "adv.h"

#include <strings.h>

static adv_t A;

static fgt_resp_t req(const char *method, const char *path, const char *token)
{
    char url[256], th[64];
    snprintf(url, sizeof url, "%s%s", A.gw.url, path);
    snprintf(th, sizeof th, "Fencing-Token: %s", token ? token : "");
    const char *h[] = {th, NULL};
    return fgt_http(method, url, token ? h : NULL, NULL, 0);
}

/* A 304 may carry the resource's Content-Length (RFC 9110 8.6) and has no
 * body. Waiting for those 1234 bytes held the resource's lane until
 * upstream_timeout: the next write got 503 fence-busy after fence_wait. */
Test(upstream, a_304_with_content_length_ends_at_its_head, .timeout = 60)
{
    adv_start(&A, "fence_wait = 2s\nupstream_timeout = 20s\n", NULL);
    for (int i = 1; i <= 3; i++) {
        char tok[8];
        snprintf(tok, sizeof tok, "%d", i);
        fgt_resp_t r = req("PUT", "/orders/up304", tok);
        cr_assert_eq(r.status, 304, "write %d: %ld %s", i, r.status, r.body);
        cr_assert_eq(r.body_len, 0);
        fgt_resp_free(&r);
        cr_assert_eq(fgt_rawup_requests(A.up), i, "write %d reached the upstream", i);
    }
    adv_stop(&A);
}

/* A server that sends a body after its answer to HEAD: those bytes arrive
 * after the gateway took the answer. Reusing that connection made them the
 * start of the next request's answer (502, or worse, a forged answer). */
Test(upstream, bytes_after_a_bodyless_answer_never_reach_the_next_request, .timeout = 60)
{
    adv_start(&A, NULL, NULL);
    for (int i = 0; i < 5; i++) {
        fgt_resp_t h = req("HEAD", "/orders/headbody", NULL);
        cr_assert_eq(h.status, 200, "HEAD %d: %ld", i, h.status);
        fgt_resp_free(&h);
        fgt_resp_t g = req("GET", "/orders/after", NULL);
        cr_assert_eq(g.status, 200, "GET %d after HEAD: %ld %s", i, g.status, g.body);
        cr_assert_str_eq(g.body, "ok\n", "GET %d got another answer's bytes", i);
        fgt_resp_free(&g);
    }
    /* each HEAD's connection was closed, not pooled */
    cr_assert_geq(fgt_rawup_connections(A.up), 6);
    adv_stop(&A);
}

/* An upstream answer that ends exactly where a read ends, followed in the
 * same write by an answer nobody asked for: the connection must not be
 * pooled, or the forged answer is handed to whoever comes next. */
Test(upstream, an_unasked_answer_behind_a_full_read_is_never_delivered, .timeout = 60)
{
    adv_start(&A, NULL, NULL);
    for (int i = 0; i < 50; i++) {
        fgt_resp_t f = req("GET", "/orders/forge16k", NULL);
        cr_assert_eq(f.status, 200, "%ld", f.status);
        cr_assert(f.body_len > 16000 && f.body[0] == 'b' && !strstr(f.body, "EVIL"));
        fgt_resp_free(&f);
        fgt_resp_t g = req("PUT", "/orders/next", "5");
        cr_assert_eq(g.status, 200, "write %d: %ld %s", i, g.status, g.body);
        cr_assert_str_eq(g.body, "ok\n", "write %d was answered by the forged answer", i);
        fgt_resp_free(&g);
    }
    adv_stop(&A);
}

/* Nothing asked the upstream to switch protocols (Upgrade is never
 * forwarded), and 000 is no status: both are a broken upstream, answered
 * 502 at once. They were waited on until upstream_timeout (504), and the
 * resource then stayed quarantined for upstream_grace. */
Test(upstream, a_101_or_000_answer_is_a_502_at_once, .timeout = 60)
{
    adv_start(&A, "upstream_timeout = 3s\nupstream_grace = 3s\nfence_wait = 1s\n", NULL);
    const char *paths[] = {"/orders/up101", "/orders/up000"};
    for (int i = 0; i < 2; i++) {
        fgt_resp_t r = req("PUT", paths[i], "1");
        cr_assert_eq(r.status, 502, "%s: %ld %s", paths[i], r.status, r.body);
        cr_assert(strstr(r.body, "upstream-error"), "%s", r.body);
        fgt_resp_free(&r);
        /* not quarantined: the next write of the resource goes on */
        r = req("PUT", paths[i], "2");
        cr_assert_eq(r.status, 502, "%s again: %ld %s", paths[i], r.status, r.body);
        fgt_resp_free(&r);
    }
    cr_assert_eq(fgt_rawup_requests(A.up), 4);
    adv_stop(&A);
}

#define TOKEN_POLICIES                                                                             \
    "[policy locked]\nmatch = /locked/{id}\nkey = locked:{id}\n"                                   \
    "token_header = X-Lock-Token\non_missing = forward\n"                                          \
    "[policy off]\nmatch = /off/{id}\nkey = off:{id}\nmode = off\n"                                \
    "[policy trial]\nmatch = /trial/{id}\nkey = trial:{id}\nmode = report-only\n" ADV_POLICIES

/* Only a token the gateway checked goes on, in canonical form (SPEC step 9).
 * A write forwarded unchecked carried the client's Fencing-Token, and an
 * upstream that fences on it could be pushed to 2^64-1 by anyone. */
Test(upstream, only_a_checked_token_reaches_the_upstream, .timeout = 60)
{
    adv_start(&A, NULL, TOKEN_POLICIES);
    const char *unchecked[][2] = {
        {"/locked/1", "18446744073709551615"}, /* on_missing = forward: X-Lock-Token absent */
        {"/off/1", "18446744073709551615"},    /* mode = off */
        {"/trial/1", "1, 99999"},              /* report-only, malformed */
    };
    for (size_t i = 0; i < 3; i++) {
        fgt_resp_t r = req("PUT", unchecked[i][0], unchecked[i][1]);
        cr_assert_eq(r.status, 200, "%s: %ld %s", unchecked[i][0], r.status, r.body);
        fgt_resp_free(&r);
    }
    cr_assert_eq(fgt_rawup_requests(A.up), 3);
    char *b = adv_upstream(&A, NULL);
    cr_assert_null(strcasestr(b, "fencing-token"), "an unchecked token went on:\n%s", b);
    free(b);

    /* checked: passed on, canonical (and under the policy's own name too) */
    fgt_resp_t r = req("PUT", "/orders/1", "007");
    cr_assert_eq(r.status, 200);
    fgt_resp_free(&r);
    char url[256];
    snprintf(url, sizeof url, "%s/locked/2", A.gw.url);
    const char *h[] = {"X-Lock-Token: 0042", "Fencing-Token: 18446744073709551615", NULL};
    r = fgt_http("PUT", url, h, NULL, 0);
    cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
    fgt_resp_free(&r);
    /* a read goes on unchanged (SPEC step 4) */
    r = req("GET", "/orders/1", "424242");
    cr_assert_eq(r.status, 200);
    fgt_resp_free(&r);
    b = adv_upstream(&A, NULL);
    const char *w1 = strstr(b, "PUT /orders/1 "), *w2 = strstr(b, "PUT /locked/2 "),
               *rd = strstr(b, "GET /orders/1 ");
    cr_assert(w1 && w2 && rd, "%s", b);
    cr_assert(strstr(w1, "Fencing-Token: 7\r\n") && strstr(w1, "Fencing-Token: 7\r\n") < w2, "%s",
              b);
    cr_assert(!strstr(w1, "Fencing-Token: 007") || strstr(w1, "Fencing-Token: 007") > w2, "%s", b);
    cr_assert(strstr(w2, "Fencing-Token: 42\r\n") && strstr(w2, "X-Lock-Token: 42\r\n"), "%s", b);
    cr_assert(!strstr(w2, "18446744073709551615"), "the unchecked value went on:\n%s", b);
    cr_assert(strstr(rd, "Fencing-Token: 424242\r\n"), "%s", b);
    free(b);
    adv_stop(&A);
}
