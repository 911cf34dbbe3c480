/*
 * test_proxy.c -- what the gateway forwards, and how (SPEC steps 1-9), and the
 * admin API. Every assertion looks at what the upstream actually received.
 */
#include "gw_common.h"

static env_t E;

/* The last write the upstream logged. Caller decrefs. */
static json_t *last_write(void)
{
    json_t *log = fgt_upstream_log(&E.up);
    cr_assert(json_array_size(log) > 0, "upstream received no write");
    json_t *w = json_array_get(log, json_array_size(log) - 1);
    json_incref(w);
    json_decref(log);
    return w;
}

static const char *hdr(json_t *w, const char *name)
{
    return json_string_value(json_object_get(json_object_get(w, "headers"), name));
}

Test(proxy, headers_and_token, .timeout = 60)
{
    env_start(&E, STORE_SQLITE, 0, NULL, NULL);
    const char *h[] = {"Fencing-Token: 007",
                       "X-HTTP-Method-Override: DELETE",
                       "X-HTTP-Method: DELETE",
                       "X-Method-Override: DELETE",
                       "Connection: keep-alive, X-Secret-Hop",
                       "X-Secret-Hop: 1",
                       "Keep-Alive: timeout=5",
                       "X-Forwarded-For: 10.0.0.1",
                       "X-Request-Id: my-req-42",
                       "X-Custom: kept",
                       NULL};
    fgt_resp_t r = gw_req(&E, "PUT", "/orders/%7e1", h, "hello");
    cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
    char rid[64];
    cr_assert(fgt_resp_header(&r, "X-Request-Id", rid, sizeof rid));
    cr_assert_str_eq(rid, "my-req-42");
    fgt_resp_free(&r);
    json_t *w = last_write();
    cr_assert_str_eq(json_string_value(json_object_get(w, "method")), "PUT");
    cr_assert_str_eq(json_string_value(json_object_get(w, "path")), "/orders/~1",
                     "the canonical spelling is forwarded");
    cr_assert_str_eq(json_string_value(json_object_get(w, "token")), "7",
                     "the canonical token is passed on");
    cr_assert_eq(json_integer_value(json_object_get(w, "size")), 5);
    cr_assert_null(hdr(w, "x-http-method-override"));
    cr_assert_null(hdr(w, "x-http-method"));
    cr_assert_null(hdr(w, "x-method-override"));
    cr_assert_null(hdr(w, "x-secret-hop"), "headers named by Connection are hop-by-hop");
    cr_assert_null(hdr(w, "keep-alive"));
    cr_assert_str_eq(hdr(w, "x-forwarded-for"), "10.0.0.1, 127.0.0.1");
    cr_assert_str_eq(hdr(w, "x-request-id"), "my-req-42");
    cr_assert_str_eq(hdr(w, "x-custom"), "kept");
    cr_assert_null(hdr(w, "content-type"), "no Content-Type is invented for the client");
    cr_assert_str_eq(hdr(w, "content-length"), "5");
    json_decref(w);
    char hwm[32];
    cr_assert(hwm_of(&E, "order:~1", hwm, sizeof hwm));
    cr_assert_str_eq(hwm, "7");

    /* a generated request id when the client sends none (or a bad one) */
    const char *h2[] = {"Fencing-Token: 8", "X-Request-Id: bad id with spaces", NULL};
    r = gw_req(&E, "PUT", "/orders/~1", h2, "x");
    cr_assert_eq(r.status, 200);
    cr_assert(fgt_resp_header(&r, "X-Request-Id", rid, sizeof rid));
    cr_assert_eq(strlen(rid), 32);
    fgt_resp_free(&r);
    w = last_write();
    cr_assert_str_eq(hdr(w, "x-request-id"), rid);
    cr_assert_str_eq(json_string_value(json_object_get(w, "path")), "/orders/~1");
    json_decref(w);
    env_stop(&E);
}

Test(proxy, reads_need_no_token_and_bodies_come_back, .timeout = 60)
{
    env_start(&E, STORE_SQLITE, 0, NULL, NULL);
    cr_assert_eq(put_tok(&E, "/orders/9", "3", "the value"), 200);
    fgt_resp_t r = gw_req(&E, "GET", "/orders/9", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "the value");
    fgt_resp_free(&r);
    r = gw_req(&E, "GET", "/unmatched/read", NULL, NULL);
    cr_assert_eq(r.status, 404, "an unmatched read is forwarded (demo store: 404)");
    fgt_resp_free(&r);
    r = gw_req(&E, "DELETE", "/orders/9", (const char *[]){"Fencing-Token: 3", NULL}, NULL);
    cr_assert_eq(r.status, 204);
    fgt_resp_free(&r);
    r = gw_req(&E, "GET", "/orders/9", NULL, NULL);
    cr_assert_eq(r.status, 404, "the DELETE reached the store");
    fgt_resp_free(&r);
    env_stop(&E);
}

/* A chunked request body (no Content-Length) arrives whole, re-chunked by the gateway. */
Test(proxy, chunked_request_body, .timeout = 60)
{
    env_start(&E, STORE_SQLITE, 0, NULL, NULL);
    const char *req = "PUT /orders/chunked HTTP/1.1\r\nHost: x\r\nFencing-Token: 1\r\n"
                      "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    char *ans = fgt_raw_request(E.gw.port, req, strlen(req), 5000);
    cr_assert(strncmp(ans, "HTTP/1.1 200", 12) == 0, "%s", ans);
    free(ans);
    json_t *w = last_write();
    cr_assert_eq(json_integer_value(json_object_get(w, "size")), 11, "the body was lost");
    json_decref(w);
    fgt_resp_t r = gw_req(&E, "GET", "/orders/chunked", NULL, NULL);
    cr_assert_str_eq(r.body, "hello world");
    fgt_resp_free(&r);
    r = gw_req(&E, "HEAD", "/orders/chunked", NULL, NULL);
    cr_assert_eq(r.status, 200);
    char cl[32];
    cr_assert(fgt_resp_header(&r, "Content-Length", cl, sizeof cl));
    cr_assert_str_eq(cl, "11", "HEAD keeps the upstream's length");
    fgt_resp_free(&r);
    env_stop(&E);
}

Test(proxy, u64_tokens_exact_every_store, .timeout = 90)
{
    const store_kind_t kinds[] = {STORE_SQLITE, STORE_REDIS, STORE_POSTGRES};
    for (int k = 0; k < 3; k++) {
        env_start(&E, kinds[k], 0, NULL, NULL);
        /* 2^53+1 vs 2^53: doubles cannot tell them apart */
        cr_assert_eq(put_tok(&E, "/orders/big", "9007199254740993", "a"), 200);
        cr_assert_eq(put_tok(&E, "/orders/big", "9007199254740992", "b"), 409,
                     "2^53 must be below 2^53+1");
        cr_assert_eq(put_tok(&E, "/orders/big", "18446744073709551614", "c"), 200);
        cr_assert_eq(put_tok(&E, "/orders/big", "18446744073709551613", "d"), 409);
        cr_assert_eq(put_tok(&E, "/orders/big", "18446744073709551615", "e"), 200);
        char hwm[32];
        cr_assert(hwm_of(&E, "order:big", hwm, sizeof hwm));
        cr_assert_str_eq(hwm, "18446744073709551615");
        /* string compare trap: "9" > "10" lexicographically */
        cr_assert_eq(put_tok(&E, "/orders/lex", "9", "a"), 200);
        cr_assert_eq(put_tok(&E, "/orders/lex", "10", "b"), 200);
        cr_assert_eq(put_tok(&E, "/orders/lex", "9", "c"), 409);
        cr_assert_eq(upstream_writes(&E, "/orders/big"), 3);
        cr_assert_eq(upstream_writes(&E, "/orders/lex"), 2);
        env_stop(&E);
    }
}

Test(proxy, policy_options, .timeout = 60)
{
    env_start(&E, STORE_SQLITE, 0, "unmatched_writes = forward\n",
              "[policy strict]\nmatch = /strict/{id}\nkey = s:{id}\ncompare = >\n"
              "[policy loose]\nmatch = /loose/{id}\nkey = l:{id}\non_missing = forward\n"
              "[policy report]\nmatch = /report/{id}\nkey = r:{id}\nmode = report-only\n"
              "[policy off]\nmatch = /off/{id}\nkey = o:{id}\nmode = off\n"
              "[policy first]\nmatch = /multi/{a}/{rest*}\nkey = m:{a}:{rest}\n"
              "token_header = X-Lock-Token\nread_methods = GET\n"
              "[policy second]\nmatch = /multi/{a}/x\nkey = never:{a}\n");
    /* compare = > : an equal token is stale */
    cr_assert_eq(put_tok(&E, "/strict/1", "5", "a"), 200);
    cr_assert_eq(put_tok(&E, "/strict/1", "5", "b"), 409);
    cr_assert_eq(put_tok(&E, "/strict/1", "6", "c"), 200);
    /* on_missing = forward */
    cr_assert_eq(put_tok(&E, "/loose/1", NULL, "a"), 200);
    cr_assert_eq(upstream_writes(&E, "/loose/1"), 1);
    /* report-only: stale writes pass but are audited */
    cr_assert_eq(put_tok(&E, "/report/1", "10", "a"), 200);
    cr_assert_eq(put_tok(&E, "/report/1", "3", "b"), 200);
    cr_assert_eq(upstream_writes(&E, "/report/1"), 2);
    json_t *es = audit_entries(&E, "resource=r:1");
    cr_assert_eq(json_array_size(es), 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(es, 0), "reason")),
                     "report-only");
    json_decref(es);
    char hwm[32];
    cr_assert(hwm_of(&E, "r:1", hwm, sizeof hwm));
    cr_assert_str_eq(hwm, "10", "a report-only stale write does not move the hwm");
    /* mode = off: no check, no hwm */
    cr_assert_eq(put_tok(&E, "/off/1", NULL, "a"), 200);
    cr_assert(!hwm_of(&E, "o:1", hwm, sizeof hwm));
    /* unmatched_writes = forward */
    cr_assert_eq(put_tok(&E, "/elsewhere", NULL, "a"), 200);
    cr_assert_eq(upstream_writes(&E, "/elsewhere"), 1);
    /* first policy wins; custom token header; rest capture; HEAD is a write here */
    const char *h[] = {"X-Lock-Token: 4", NULL};
    fgt_resp_t r = gw_req(&E, "PUT", "/multi/t1/x", h, "v");
    cr_assert_eq(r.status, 200, "%s", r.body);
    fgt_resp_free(&r);
    cr_assert(hwm_of(&E, "m:t1:x", hwm, sizeof hwm));
    cr_assert(!hwm_of(&E, "never:t1", hwm, sizeof hwm));
    r = gw_req(&E, "PUT", "/multi/t1/a/b/c", h, "v");
    cr_assert_eq(r.status, 200);
    fgt_resp_free(&r);
    cr_assert(hwm_of(&E, "m:t1:a%2Fb%2Fc", hwm, sizeof hwm), "{rest*} keeps its slashes");
    r = gw_req(&E, "PUT", "/multi/t1/x", NULL, "v");
    cr_assert_eq(r.status, 428, "Fencing-Token is not the header of this policy");
    fgt_resp_free(&r);
    env_stop(&E);
}

Test(proxy, admin_api, .timeout = 60)
{
    /* admin token file */
    const char *dir = fgt_tmpdir();
    char tf[512];
    snprintf(tf, sizeof tf, "%s/admin.token", dir);
    FILE *f = fopen(tf, "w");
    cr_assert(f);
    fputs("s3cret\n", f);
    fclose(f);
    char extra[1024];
    snprintf(extra, sizeof extra, "admin_token_file = %s\n", tf);
    env_start(&E, STORE_SQLITE, 0, extra, NULL);
    long st;
    json_t *j = admin_get(&E, "/healthz", &st);
    cr_assert_eq(st, 200);
    json_decref(j);
    j = admin_get(&E, "/readyz", &st);
    cr_assert_eq(st, 200);
    json_decref(j);
    j = admin_get(&E, "/v1/audit", &st);
    cr_assert_eq(st, 401, "audit needs the bearer token");
    json_decref(j);
    j = admin_get(&E, "/metrics", &st);
    cr_assert_eq(st, 401);
    json_decref(j);
    cr_assert_eq(put_tok(&E, "/orders/1", "10", "a"), 200);
    cr_assert_eq(put_tok(&E, "/orders/1", "9", "a"), 409);
    cr_assert_eq(put_tok(&E, "/orders/2", NULL, "a"), 428);
    char url[512];
    snprintf(url, sizeof url, "%s/v1/audit?limit=1", E.gw.admin_url);
    const char *auth[] = {"Authorization: Bearer s3cret", NULL};
    fgt_resp_t r = fgt_http("GET", url, auth, NULL, 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    j = fgt_resp_json(&r);
    cr_assert_eq(json_array_size(json_object_get(j, "entries")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(j, "entries"), 0), "reason")),
                     "missing", "newest first");
    json_decref(j);
    fgt_resp_free(&r);
    const char *wrong[] = {"Authorization: Bearer nope", NULL};
    r = fgt_http("GET", url, wrong, NULL, 0);
    cr_assert_eq(r.status, 401);
    fgt_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/audit?reason=stale&since=2000-01-01T00:00:00Z",
             E.gw.admin_url);
    r = fgt_http("GET", url, auth, NULL, 0);
    j = fgt_resp_json(&r);
    cr_assert_eq(json_array_size(json_object_get(j, "entries")), 1);
    json_decref(j);
    fgt_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/audit?since=4102444800", E.gw.admin_url);
    r = fgt_http("GET", url, auth, NULL, 0);
    j = fgt_resp_json(&r);
    cr_assert_eq(json_array_size(json_object_get(j, "entries")), 0, "since 2100: nothing");
    json_decref(j);
    fgt_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/audit?limit=1001", E.gw.admin_url);
    r = fgt_http("GET", url, auth, NULL, 0);
    cr_assert_eq(r.status, 400);
    fgt_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/resources/order%%3A1", E.gw.admin_url);
    r = fgt_http("GET", url, auth, NULL, 0);
    cr_assert_eq(r.status, 200);
    j = fgt_resp_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "resource")), "order:1");
    cr_assert_eq(json_integer_value(json_object_get(j, "highest")), 10);
    json_decref(j);
    fgt_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/resources/order:404", E.gw.admin_url);
    r = fgt_http("GET", url, auth, NULL, 0);
    cr_assert_eq(r.status, 404);
    fgt_resp_free(&r);
    snprintf(url, sizeof url, "%s/metrics", E.gw.admin_url);
    r = fgt_http("GET", url, auth, NULL, 0);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "fencegate_requests_total{policy=\"orders\",outcome=\"stale\"} 1"),
              "%s", r.body);
    cr_assert(
        strstr(r.body, "fencegate_requests_total{policy=\"orders\",outcome=\"forwarded\"} 1"));
    cr_assert(strstr(r.body, "fencegate_requests_total{policy=\"orders\",outcome=\"missing\"} 1"));
    fgt_resp_free(&r);
    env_stop(&E);
}
