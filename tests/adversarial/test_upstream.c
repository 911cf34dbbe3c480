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
