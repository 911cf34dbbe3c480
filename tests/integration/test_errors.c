/*
 * test_errors.c -- every row of SPEC's error table, against the real gateway,
 * a real upstream and each state store, asserting on what reached the
 * upstream and on the audit trail, not only on the status code.
 */
#include <pthread.h>
#include <unistd.h>

#include "gw_common.h"

static env_t E;

static json_t *body_json(fgt_resp_t *r)
{
    json_t *j = fgt_resp_json(r);
    cr_assert(j, "body is not JSON: %s", r->body);
    char ct[128];
    cr_assert(fgt_resp_header(r, "Content-Type", ct, sizeof ct));
    cr_assert_str_eq(ct, "application/problem+json");
    return j;
}

static void expect_problem(fgt_resp_t *r, long status, const char *type)
{
    cr_assert_eq(r->status, status, "status %ld, want %ld: %s", r->status, status, r->body);
    json_t *j = body_json(r);
    char want[128];
    snprintf(want, sizeof want, "urn:fencegate:problem:%s", type);
    cr_assert_str_eq(json_string_value(json_object_get(j, "type")), want);
    cr_assert_eq(json_integer_value(json_object_get(j, "status")), status);
    cr_assert(json_string_value(json_object_get(j, "title")));
    char rid[128];
    cr_assert(fgt_resp_header(r, "X-Request-Id", rid, sizeof rid));
    cr_assert_str_eq(json_string_value(json_object_get(j, "request_id")), rid);
    json_decref(j);
}

/* The newest audit entry for `resource` must have these fields. */
static void expect_audit(const char *query, const char *reason, const char *resource,
                         const char *method, const char *path, json_t *token, const char *rid)
{
    json_t *es = audit_entries(&E, query);
    cr_assert_geq(json_array_size(es), 1, "no audit entry for %s", query);
    json_t *a = json_array_get(es, 0);
    cr_assert_str_eq(json_string_value(json_object_get(a, "reason")), reason);
    if (resource) cr_assert_str_eq(json_string_value(json_object_get(a, "resource")), resource);
    cr_assert_str_eq(json_string_value(json_object_get(a, "method")), method);
    cr_assert_str_eq(json_string_value(json_object_get(a, "path")), path);
    cr_assert_str_eq(json_string_value(json_object_get(a, "client")), "127.0.0.1");
    cr_assert(json_string_value(json_object_get(a, "id")));
    const char *t = json_string_value(json_object_get(a, "time"));
    cr_assert(t && strlen(t) == 24 && t[10] == 'T' && t[23] == 'Z', "time %s", t ? t : "null");
    if (token)
        cr_assert(json_equal(json_object_get(a, "token"), token), "token differs");
    else
        cr_assert(json_is_null(json_object_get(a, "token")));
    if (rid) cr_assert_str_eq(json_string_value(json_object_get(a, "request_id")), rid);
    json_decref(es);
}

static void run_rows(store_kind_t kind)
{
    env_start(&E, kind, 0, "fence_wait = 300ms\nupstream_timeout = 700ms\n", NULL);

    /* 400 non-canonical-path: nothing forwarded, for every spelling */
    const char *bad[] = {"/orders/../orders/1", "/orders//1",  "/orders/%2e%2e/x", "/orders%2F1",
                         "/orders/1;x=1",       "/orders/%00", "/orders/a%zz"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *h[] = {"Fencing-Token: 5", NULL};
        fgt_resp_t r = gw_req(&E, "PUT", bad[i], h, "evil");
        expect_problem(&r, 400, "non-canonical-path");
        fgt_resp_free(&r);
    }
    /* absolute-form and raw bytes libcurl would not send as they are */
    const char *raws[] = {
        "PUT http://127.0.0.1/orders/1 HTTP/1.1\r\nHost: x\r\nFencing-Token: 5\r\n"
        "Content-Length: 1\r\nConnection: close\r\n\r\nx",
        "PUT /orders/a%2F..%2F1 HTTP/1.1\r\nHost: x\r\nFencing-Token: 5\r\n"
        "Content-Length: 1\r\nConnection: close\r\n\r\nx",
        "PUT /orders\\1 HTTP/1.1\r\nHost: x\r\nFencing-Token: 5\r\n"
        "Content-Length: 1\r\nConnection: close\r\n\r\nx",
    };
    for (size_t i = 0; i < sizeof raws / sizeof *raws; i++) {
        char *ans = fgt_raw_request(E.gw.port, raws[i], strlen(raws[i]), 3000);
        cr_assert(strncmp(ans, "HTTP/1.1 400", 12) == 0, "raw target %zu: %s", i, ans);
        cr_assert(strstr(ans, "non-canonical-path"), "%s", ans);
        free(ans);
    }
    cr_assert_eq(fgt_upstream_count(&E.up), 0, "a non-canonical request reached the upstream");

    /* 428 missing-token */
    const char *rid_missing[] = {"X-Request-Id: req-missing-1", NULL};
    fgt_resp_t r = gw_req(&E, "PUT", "/orders/1", rid_missing, "v");
    expect_problem(&r, 428, "missing-token");
    fgt_resp_free(&r);
    expect_audit("resource=order:1&reason=missing", "missing", "order:1", "PUT", "/orders/1", NULL,
                 "req-missing-1");

    /* 400 malformed-token: every malformed form */
    const char *malformed[] = {"Fencing-Token: -1",  "Fencing-Token: 0x10",
                               "Fencing-Token: 1e3", "Fencing-Token: 18446744073709551616",
                               "Fencing-Token: 1,2", "Fencing-Token: +1",
                               "Fencing-Token: 1.0", "Fencing-Token: abc"};
    for (size_t i = 0; i < sizeof malformed / sizeof *malformed; i++) {
        const char *h[] = {malformed[i], NULL};
        r = gw_req(&E, "PUT", "/orders/2", h, "v");
        expect_problem(&r, 400, "malformed-token");
        fgt_resp_free(&r);
    }
    const char *two[] = {"Fencing-Token: 5", "Fencing-Token: 6", NULL};
    r = gw_req(&E, "PUT", "/orders/2", two, "v");
    expect_problem(&r, 400, "malformed-token");
    fgt_resp_free(&r);
    expect_audit("resource=order:2&reason=malformed", "malformed", "order:2", "PUT", "/orders/2",
                 NULL, NULL);
    json_t *es = audit_entries(&E, "resource=order:2&reason=malformed&limit=1000");
    cr_assert_eq(json_array_size(es), 9, "one audit record per malformed write");
    json_decref(es);

    /* 403 unmatched-write */
    const char *tok[] = {"Fencing-Token: 5", NULL};
    r = gw_req(&E, "POST", "/nowhere/x", tok, "v");
    expect_problem(&r, 403, "unmatched-write");
    fgt_resp_free(&r);
    expect_audit("reason=unmatched", "unmatched", NULL, "POST", "/nowhere/x", NULL, NULL);
    /* lower-case put is a write too, and unmatched reads pass */
    r = gw_req(&E, "put", "/nowhere/y", tok, "v");
    expect_problem(&r, 403, "unmatched-write");
    fgt_resp_free(&r);
    cr_assert_eq(upstream_writes(&E, NULL), 0, "a refused write reached the upstream");

    /* 409 stale-token, with its audit record */
    cr_assert_eq(put_tok(&E, "/orders/3", "10", "ten"), 200);
    r = gw_req(&E, "PUT", "/orders/3", tok, "five");
    expect_problem(&r, 409, "stale-token");
    json_t *j = fgt_resp_json(&r);
    cr_assert_eq(json_integer_value(json_object_get(j, "token")), 5);
    cr_assert_eq(json_integer_value(json_object_get(j, "highest")), 10);
    cr_assert_str_eq(json_string_value(json_object_get(j, "resource")), "order:3");
    json_decref(j);
    fgt_resp_free(&r);
    json_t *five = json_integer(5);
    expect_audit("resource=order:3", "stale", "order:3", "PUT", "/orders/3", five, NULL);
    json_decref(five);
    es = audit_entries(&E, "resource=order:3");
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(es, 0), "highest")), 10);
    json_decref(es);
    cr_assert_eq(upstream_writes(&E, "/orders/3"), 1, "only the token-10 write may arrive");
    json_t *log = fgt_upstream_log(&E.up);
    json_t *last = json_array_get(log, json_array_size(log) - 1);
    cr_assert_str_eq(json_string_value(json_object_get(last, "token")), "10");
    json_decref(log);

    /* 502 upstream-error: a policy whose upstream is not listening */
    /* (uses the reserved port of a stopped upstream, see test_upstream.c for 504) */
    env_stop(&E);
}

Test(errors, sqlite, .timeout = 120)
{
    run_rows(STORE_SQLITE);
}
Test(errors, redis, .timeout = 120)
{
    run_rows(STORE_REDIS);
}

static long slow_first_status;

/* A write of /orders/busy that the upstream holds until the test releases it. */
static void *slow_first(void *arg)
{
    (void)arg;
    static int n;
    char tok[32];
    snprintf(tok, sizeof tok, "Fencing-Token: %d", 5 + 2 * n++);
    const char *h[] = {tok, "X-Hold: 1", NULL};
    fgt_resp_t r = gw_req(&E, "PUT", "/orders/busy", h, "first");
    slow_first_status = r.status;
    fgt_resp_free(&r);
    return NULL;
}

/* 502 and 504 need a dead or slow upstream. */
Test(errors, upstream_failures, .timeout = 120)
{
    env_start(&E, STORE_SQLITE, 0, "upstream_timeout = 700ms\n",
              "[policy orders]\nmatch = /orders/{id}\nkey = order:{id}\n"
              "[policy dead]\nmatch = /dead/{id}\nkey = dead:{id}\n"
              "upstream = http://127.0.0.1:9\n"
              "[policy slow]\nmatch = /slow/{id}\nkey = slow:{id}\n");
    const char *tok[] = {"Fencing-Token: 1", NULL};
    fgt_resp_t r = gw_req(&E, "PUT", "/dead/1", tok, "v");
    expect_problem(&r, 502, "upstream-error");
    fgt_resp_free(&r);
    /* the check passed, so the hwm moved even though the upstream was gone */
    char hwm[32];
    cr_assert(hwm_of(&E, "dead:1", hwm, sizeof hwm));
    cr_assert_str_eq(hwm, "1");

    /* 504 upstream-timeout: the upstream takes 2 s, upstream_timeout is 700 ms */
    const char *slow[] = {"Fencing-Token: 1", "X-Delay-Ms: 2000", NULL};
    r = gw_req(&E, "PUT", "/slow/1", slow, "v");
    expect_problem(&r, 504, "upstream-timeout");
    fgt_resp_free(&r);
    env_stop(&E);
}

/* 503 fence-busy: a second write of one resource waits behind the first,
 * held at the upstream, longer than fence_wait. No timing guesses: the first
 * is held until the test releases it. */
Test(errors, fence_busy, .timeout = 120)
{
    env_start(&E, STORE_SQLITE, 0, "fence_wait = 300ms\n", NULL);
    pthread_t th;
    pthread_create(&th, NULL, slow_first, NULL);
    cr_assert(fgt_wait_upstream_stat(&E.up, "held", 1, 10000), "the first write is held");
    const char *second[] = {"Fencing-Token: 6", NULL};
    fgt_resp_t r = gw_req(&E, "PUT", "/orders/busy", second, "second");
    expect_problem(&r, 503, "fence-busy");
    char ra[16];
    cr_assert(fgt_resp_header(&r, "Retry-After", ra, sizeof ra));
    fgt_resp_free(&r);
    /* a write to another resource does not wait behind it */
    cr_assert_eq(put_tok(&E, "/orders/other", "1", "v"), 200);
    fgt_upstream_release(&E.up);
    pthread_join(th, NULL);
    cr_assert_eq(slow_first_status, 200);
    cr_assert_eq(upstream_writes(&E, "/orders/busy"), 1, "the busy write was not forwarded");
    env_stop(&E);
}
