/*
 * test_bytes.c -- SPEC step 0 (header and method bytes) and step 2, attacked
 * with raw sockets: every rule refused with 400 before any policy decision,
 * nothing forwarded, and attacker bytes that do reach the audit trail stored
 * so that every store and the JSON writer accept them.
 */
#include <unistd.h>

#include "adv.h"

static adv_t A;

/* A stale DELETE is refused; the same DELETE hidden behind a bare CR in
 * another header, which an upstream splitting on CR would apply, is refused
 * at step 0 and never forwarded. */
Test(bytes, a_bare_cr_cannot_hide_a_method_override, .timeout = 60)
{
    adv_start(&A, NULL, NULL);
    const char *w = "PUT /orders/5 HTTP/1.1\r\nHost: x\r\nFencing-Token: 10\r\n"
                    "Content-Length: 1\r\n\r\na";
    char *r = fgt_raw_request(A.gw.port, w, strlen(w), 2000);
    cr_assert_eq(adv_status(r), 200, "%s", r);
    free(r);
    const char *stale = "DELETE /orders/5 HTTP/1.1\r\nHost: x\r\nFencing-Token: 3\r\n\r\n";
    r = fgt_raw_request(A.gw.port, stale, strlen(stale), 2000);
    cr_assert_eq(adv_status(r), 409, "%s", r);
    free(r);
    size_t before = 0;
    free(adv_upstream(&A, &before));
    const char *attack = "GET /orders/5 HTTP/1.1\r\nHost: x\r\n"
                         "X-Note: a\rX-HTTP-Method-Override: DELETE\r\n\r\n";
    free(adv_refused(&A, attack, strlen(attack), 400, "malformed-request"));
    size_t after = 0;
    free(adv_upstream(&A, &after));
    cr_assert_eq(after, before, "bytes reached the upstream after the attack");
    adv_stop(&A);
}

Test(bytes, every_bad_byte_rule_is_refused_before_any_policy, .timeout = 120)
{
    adv_start(&A, "unmatched_writes = forward\n", NULL);
    typedef struct {
        const char *bytes;
        size_t len; /* 0: strlen */
    } bc_t;
    static const bc_t cases[] = {
        {"PUT /orders/1 HTTP/1.1\r\nHost: x\r\nFencing-Token : 5\r\n\r\n", 0},
        {"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 0},
        {"GET /x HTTP/1.1\r\nHost: x\r\nX-HTTP-Method-Override : PUT\r\n\r\n", 0},
        {"GET /x HTTP/1.1\r\nHost: x\r\nX-HTTP-Method-Override\t: PUT\r\n\r\n", 0},
        {"PUT\t/orders/42\tHTTP/1.1\r\nHost: x\r\n\r\n", 0},
        {"PUT /orders/42\tHTTP/1.1\r\nHost: x\r\n\r\n", 0},
        {"P\xffT /orders/1 HTTP/1.1\r\nHost: x\r\nFencing-Token: 1\r\n\r\n", 0},
        {"PU(T /orders/1 HTTP/1.1\r\nHost: x\r\n\r\n", 0},
        {"PUT  /orders/1 HTTP/1.1\r\nHost: x\r\n\r\n", 0},
        {"PUT /orders/1  HTTP/1.1\r\nHost: x\r\n\r\n", 0},
        {"PUT /orders/1 HTTP/1.1 \r\nHost: x\r\n\r\n", 0},
        {"GET /x HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n X-HTTP-Method-Override: DELETE\r\n\r\n", 0},
        {"GET /x HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\tmore\r\n\r\n", 0},
        {"GET /x HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 38},
        {"GET /x HTTP/1.1\r\nHost: x\r\nX-A: a\x01z\r\n\r\n", 0},
        {"GET /x HTTP/1.1\r\nHost: x\r\nX-A: a\x7fz\r\n\r\n", 0},
        {"GET /x HTTP/1.1\r\nHost: x\r\nX-A: a\nX-B: b\r\n\r\n", 0},
        {"GET /x HTTP/1.1\nHost: x\n\n", 0},
        {"GET /x HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n", 0},
        {"GET /x HTTP/1.1\r\nHost: x\r\nX\"A: b\r\n\r\n", 0},
        {"GET /x HTTP/2.0\r\nHost: x\r\n\r\n", 0},
        {"GET /x\r\nHost: x\r\n\r\n", 0},
        {"GET /x#y HTTP/1.1\r\nHost: x\r\n\r\n", 0},
        {"GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 0},
        {"GET /x HTTP/1.1\r\n\r\n", 0},
        {"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].bytes);
        bool closed = false;
        char *r = fgt_raw_exchange(A.gw.port, cases[i].bytes, len, 5000, &closed);
        cr_expect_eq(adv_status(r), 400, "case %zu: %.*s\nanswer:\n%s", i, (int)len, cases[i].bytes,
                     r);
        cr_expect(strstr(r, "urn:fencegate:problem:malformed-request"), "case %zu: %s", i, r);
        cr_expect(closed, "case %zu: connection left open", i);
        free(r);
    }
    adv_upstream_empty(&A, "bad bytes");
    /* step-0 refusals are not audited (no policy was consulted) and the trail
     * still answers valid JSON */
    char url[128];
    snprintf(url, sizeof url, "%s/v1/audit", A.gw.admin_url);
    fgt_resp_t ar = fgt_http("GET", url, NULL, NULL, 0);
    cr_assert_eq(ar.status, 200, "audit: %ld %s", ar.status, ar.body);
    json_t *j = fgt_resp_json(&ar);
    cr_assert(j, "the audit trail is not valid JSON: %s", ar.body);
    cr_assert_eq(json_array_size(json_object_get(j, "entries")), 0);
    json_decref(j);
    fgt_resp_free(&ar);
    /* every log line is still one JSON object (checked by adv_stop's caller
     * contract in gw_common.h for the other suites; here: no blank line) */
    char *log = fgt_read_file(A.gw.proc.log);
    cr_assert(log);
    cr_assert_null(strstr(log, "\n\n"), "a blank log line");
    cr_assert(strstr(log, "request refused at step 0"), "step-0 refusals are logged");
    free(log);
    adv_stop(&A);
}

/* Lower-case and unknown methods are tokens: fine at step 0, and writes. */
Test(bytes, token_methods_pass_step_0_and_are_writes, .timeout = 60)
{
    adv_start(&A, NULL, NULL);
    const char *put = "put /orders/3 HTTP/1.1\r\nHost: x\r\n\r\n";
    char *r = fgt_raw_request(A.gw.port, put, strlen(put), 2000);
    cr_assert_eq(adv_status(r), 428, "%s", r);
    free(r);
    const char *mk = "MKCOL /orders/3 HTTP/1.1\r\nHost: x\r\nFencing-Token: 4\r\n\r\n";
    r = fgt_raw_request(A.gw.port, mk, strlen(mk), 2000);
    cr_assert_eq(adv_status(r), 200, "%s", r);
    free(r);
    size_t len = 0;
    char *up = adv_upstream(&A, &len);
    cr_assert(strncmp(up, "MKCOL /orders/3 HTTP/1.1\r\n", 26) == 0, "%s", up);
    cr_assert_null(strstr(up, "put /orders"));
    free(up);
    adv_stop(&A);
}

/* Underscore spellings (CGI/WSGI read them as the dashed name) never reach
 * the upstream, and do not count as the token either. */
Test(bytes, underscore_headers_are_dropped, .timeout = 60)
{
    adv_start(&A, NULL, NULL);
    const char *g = "GET /orders/8 HTTP/1.1\r\nHost: x\r\nX_HTTP_Method_Override: DELETE\r\n"
                    "X_Method_Override: DELETE\r\nx_http_method: DELETE\r\nX-Keep: yes\r\n\r\n";
    char *r = fgt_raw_request(A.gw.port, g, strlen(g), 2000);
    cr_assert_eq(adv_status(r), 200, "%s", r);
    free(r);
    const char *p = "PUT /orders/8 HTTP/1.1\r\nHost: x\r\nFencing_Token: 5\r\n\r\n";
    r = fgt_raw_request(A.gw.port, p, strlen(p), 2000);
    cr_assert_eq(adv_status(r), 428, "an underscore spelling is not the token: %s", r);
    free(r);
    size_t len = 0;
    char *up = adv_upstream(&A, &len);
    cr_assert_eq(fgt_rawup_requests(A.up), 1);
    cr_assert(strstr(up, "\r\nX-Keep: yes\r\n"), "%s", up);
    cr_assert_null(strchr(up, '_'), "an underscore field reached the upstream:\n%s", up);
    cr_assert_null(strcasestr(up, "override"), "%s", up);
    free(up);
    adv_stop(&A);
}

/* The largest head accepted (just under 12 KiB, 99 fields besides Host) goes
 * through whole: the limits of step 0 and libmicrohttpd's memory agree. */
Test(bytes, the_largest_accepted_head_goes_through, .timeout = 60)
{
    adv_start(&A, NULL, NULL);
    static char big[16384];
    int n = snprintf(big, sizeof big, "GET /orders/1 HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 98; i++)
        n += snprintf(big + n, sizeof big - (size_t)n, "X-F%02d: v\r\n", i);
    int fill = 12 * 1024 - n - (int)strlen("X-Pad: \r\n\r\n") - 1;
    n += snprintf(big + n, sizeof big - (size_t)n, "X-Pad: ");
    memset(big + n, 'p', (size_t)fill);
    n += fill;
    n += snprintf(big + n, sizeof big - (size_t)n, "\r\n\r\n");
    cr_assert_lt(n, 12 * 1024);
    char *r = fgt_raw_request(A.gw.port, big, (size_t)n, 3000);
    cr_assert_eq(adv_status(r), 200, "%s", r);
    free(r);
    size_t len = 0;
    char *up = adv_upstream(&A, &len);
    cr_assert(strstr(up, "\r\nX-F97: v\r\n"), "the last field is missing upstream");
    cr_assert(strstr(up, "X-Pad: ppp"));
    free(up);
    adv_stop(&A);
}

/* A head over 12 KiB and a target over 8 KiB are refused with problems. */
Test(bytes, oversized_heads_get_problems, .timeout = 60)
{
    adv_start(&A, NULL, NULL);
    static char big[40000];
    int n = snprintf(big, sizeof big, "GET /orders/1 HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(big + n, 'v', 20000);
    n += 20000;
    n += snprintf(big + n, sizeof big - (size_t)n, "\r\n\r\n");
    free(adv_refused(&A, big, (size_t)n, 431, "header-too-large"));
    n = snprintf(big, sizeof big, "GET /");
    memset(big + n, 'a', 9000);
    n += 9000;
    n += snprintf(big + n, sizeof big - (size_t)n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    free(adv_refused(&A, big, (size_t)n, 414, "uri-too-long"));
    adv_upstream_empty(&A, "oversized");
    adv_stop(&A);
}
