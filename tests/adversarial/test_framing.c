/*
 * test_framing.c -- SPEC step 0, body framing (RFC 9112 section 6), attacked
 * with raw sockets. Each case asserts the answer, that the connection was
 * closed, and what the upstream received, byte for byte.
 *
 * The first cases are the ones of the security review that walked around the
 * fence: a client Content-Length beside a chunked body made the gateway send
 * a smuggled tokenless DELETE upstream, or uninitialised heap, or wedged a
 * resource for good.
 */
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "adv.h"

static adv_t A;

Test(framing, smuggled_delete_in_a_chunk_never_reaches_the_upstream, .timeout = 60)
{
    adv_start(&A, NULL, NULL);
    /* a token-protected write first: hwm 100 for order:7 */
    const char *good = "PUT /orders/7 HTTP/1.1\r\nHost: x\r\nFencing-Token: 100\r\n"
                       "Content-Length: 2\r\n\r\nok";
    char *r = fgt_raw_request(A.gw.port, good, strlen(good), 2000);
    cr_assert_eq(adv_status(r), 200, "%s", r);
    free(r);
    size_t before = 0;
    free(adv_upstream(&A, &before));
    /* the attack: Content-Length 70000 with a chunked body carrying a DELETE */
    char inner[256];
    snprintf(inner, sizeof inner,
             "DELETE /orders/7 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
             "PUT /orders/7 HTTP/1.1\r\nHost: x\r\nFencing-Token: 1\r\nContent-Length: 0\r\n\r\n");
    static char attack[80000];
    size_t inl = strlen(inner);
    int n = snprintf(attack, sizeof attack,
                     "GET /anything HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n%zx\r\n",
                     (size_t)70000);
    memcpy(attack + n, inner, inl);
    memset(attack + n + inl, 'a', 70000 - inl);
    n += 70000;
    n += snprintf(attack + n, sizeof attack - (size_t)n, "\r\n0\r\n\r\n");
    free(adv_refused(&A, attack, (size_t)n, 400, "malformed-request"));
    size_t after = 0;
    char *up = adv_upstream(&A, &after);
    cr_assert_eq(after, before, "the upstream got more bytes after the attack:\n%s", up + before);
    cr_assert_null(strstr(up, "DELETE"), "the smuggled DELETE reached the upstream");
    free(up);
    /* and the next client is served normally on a fresh connection */
    const char *next = "GET /orders/7 HTTP/1.1\r\nHost: x\r\n\r\n";
    r = fgt_raw_request(A.gw.port, next, strlen(next), 1000);
    cr_assert_eq(adv_status(r), 200, "%s", r);
    cr_assert(strstr(r, "X-Upstream-Seq: 2"), "the answer is the upstream's own: %s", r);
    free(r);
    adv_stop(&A);
}

Test(framing, a_claimed_length_never_sends_unread_memory, .timeout = 60)
{
    adv_start(&A, "unmatched_writes = forward\n", NULL);
    const char *attack = "PUT /free/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
    free(adv_refused(&A, attack, strlen(attack), 400, "malformed-request"));
    adv_upstream_empty(&A, "CL + TE");
    adv_stop(&A);
}

Test(framing, a_refused_body_does_not_wedge_the_resource_or_the_drain, .timeout = 90)
{
    adv_start(&A, "fence_wait = 2s\n", NULL);
    /* Content-Length 100 with a chunked body larger than 64 KiB */
    static char attack[80000];
    int n = snprintf(attack, sizeof attack,
                     "PUT /orders/9 HTTP/1.1\r\nHost: x\r\nFencing-Token: 5\r\n"
                     "Content-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n",
                     70000);
    memset(attack + n, 'b', 70000);
    n += 70000;
    n += snprintf(attack + n, sizeof attack - (size_t)n, "\r\n0\r\n\r\n");
    free(adv_refused(&A, attack, (size_t)n, 400, "malformed-request"));
    adv_upstream_empty(&A, "CL 100 + big chunk");
    /* the resource is not left busy: the next write goes through at once */
    const char *w = "PUT /orders/9 HTTP/1.1\r\nHost: x\r\nFencing-Token: 6\r\n"
                    "Content-Length: 2\r\n\r\nok";
    char *r = fgt_raw_request(A.gw.port, w, strlen(w), 3000);
    cr_assert_eq(adv_status(r), 200, "%s", r);
    free(r);
    cr_assert_eq(fgt_rawup_requests(A.up), 1);
    adv_stop(&A); /* SIGTERM drains and exits 0 (it used to abort in MHD) */
}

/* Every framing rule of SPEC step 0, each refused with nothing forwarded. */
Test(framing, every_ambiguous_framing_is_refused, .timeout = 120)
{
    adv_start(&A, "unmatched_writes = forward\n", NULL);
    static const char *const cases[] = {
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        "3\r\nabc\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked \r\n\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
        "POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc",
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: abc\r\n\r\nabc",
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        bool closed = false;
        char *r = fgt_raw_exchange(A.gw.port, cases[i], strlen(cases[i]), 5000, &closed);
        cr_expect_eq(adv_status(r), 400, "case %zu: %s\nanswer:\n%s", i, cases[i], r);
        cr_expect(strstr(r, "urn:fencegate:problem:malformed-request"), "case %zu: %s", i, r);
        cr_expect(closed, "case %zu: connection left open", i);
        free(r);
    }
    adv_upstream_empty(&A, "ambiguous framing");
    adv_stop(&A);
}

/* A chunk that breaks the grammar half-way through a body that is already
 * streaming: the upstream sees a short body and a closed connection, never a
 * complete request. */
Test(framing, a_body_broken_mid_stream_never_completes_upstream, .timeout = 60)
{
    adv_start(&A, "unmatched_writes = forward\n", NULL);
    static char big[100000];
    int n =
        snprintf(big, sizeof big,
                 "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n", 70000);
    memset(big + n, 'c', 70000);
    n += 70000;
    n += snprintf(big + n, sizeof big - (size_t)n, "\r\nZZ\r\n0\r\n\r\n");
    bool closed = false;
    char *r = fgt_raw_exchange(A.gw.port, big, (size_t)n, 5000, &closed);
    cr_assert(closed, "connection left open");
    cr_assert(adv_status(r) == 400 || adv_status(r) == 0, "%s", r);
    free(r);
    cr_assert_eq(fgt_rawup_requests(A.up), 0, "a complete request reached the upstream");
    size_t len = 0;
    char *up = adv_upstream(&A, &len);
    cr_assert_null(strstr(up, "\r\n0\r\n\r\n"), "the upstream saw the last chunk");
    free(up);
    adv_stop(&A);
}

/* Pipelining: the requests before a bad one are answered, the bad one gets
 * its 400, the connection closes, and nothing behind it is answered. */
Test(framing, pipelined_requests_stop_at_the_bad_one, .timeout = 60)
{
    adv_start(&A, NULL, NULL);
    const char *bytes = "GET /orders/1 HTTP/1.1\r\nHost: x\r\n\r\n"
                        "GET /orders/2 HTTP/1.1\r\nHost: x\r\n\r\n"
                        "GET /orders/3 HTTP/1.1\r\nHost: x\r\nX-Bad: a\rb\r\n\r\n"
                        "DELETE /orders/4 HTTP/1.1\r\nHost: x\r\nFencing-Token: 9\r\n\r\n";
    bool closed = false;
    char *r = fgt_raw_exchange(A.gw.port, bytes, strlen(bytes), 5000, &closed);
    cr_assert(closed, "the connection stayed open:\n%s", r);
    cr_assert_eq(adv_responses(r), 3, "want 200, 200, 400:\n%s", r);
    const char *third = strstr(strstr(strstr(r, "HTTP/1.1 ") + 1, "HTTP/1.1 ") + 1, "HTTP/1.1 ");
    cr_assert_eq(adv_status(third), 400, "%s", r);
    cr_assert(strstr(third, "malformed-request"));
    free(r);
    size_t len = 0;
    char *up = adv_upstream(&A, &len);
    cr_assert_eq(fgt_rawup_requests(A.up), 2, "upstream got:\n%s", up);
    cr_assert(strstr(up, "GET /orders/1 HTTP/1.1\r\n") && strstr(up, "GET /orders/2 HTTP/1.1\r\n"));
    cr_assert_null(strstr(up, "/orders/3"));
    cr_assert_null(strstr(up, "DELETE"));
    free(up);
    adv_stop(&A);
}

/* A request that was checked is rebuilt for the upstream, framed by what was
 * read: exactly the bytes the test predicts. */
Test(framing, the_upstream_gets_the_checked_request, .timeout = 60)
{
    adv_start(&A, NULL, NULL);
    const char *req = "PUT /orders/%34%32 HTTP/1.1\r\nHost: client.example\r\n"
                      "Fencing-Token: 0042\r\nContent-Type: text/plain\r\nX-Request-Id: rid-1\r\n"
                      "X-HTTP-Method-Override: DELETE\r\nX_HTTP_Method_Override: DELETE\r\n"
                      "Fencing_Token: 1\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n"
                      "Content-Length: 5\r\n\r\nhello";
    char *r = fgt_raw_request(A.gw.port, req, strlen(req), 2000);
    cr_assert_eq(adv_status(r), 200, "%s", r);
    free(r);
    size_t len = 0;
    char *up = adv_upstream(&A, &len);
    cr_assert(strncmp(up, "PUT /orders/42 HTTP/1.1\r\n", 25) == 0, "request line: %.40s", up);
    char *body = strstr(up, "\r\n\r\n");
    cr_assert(body);
    cr_assert_str_eq(body + 4, "hello", "the body is exactly what was read");
    body[2] = '\0'; /* keep the last field's CRLF */
    cr_assert(strstr(up, "\r\nFencing-Token: 42\r\n"), "canonical token:\n%s", up);
    cr_assert(strstr(up, "\r\nContent-Length: 5\r\n"), "%s", up);
    cr_assert(strstr(up, "\r\nX-Request-Id: rid-1\r\n"), "%s", up);
    cr_assert(strstr(up, "\r\nContent-Type: text/plain\r\n"), "%s", up);
    cr_assert_null(strcasestr(up, "method"), "an override header reached the upstream:\n%s", up);
    cr_assert_null(strstr(up, "Fencing_Token"), "%s", up);
    cr_assert_null(strstr(up, "X-Secret"), "a field named by Connection was forwarded:\n%s", up);
    cr_assert_null(strstr(up, "Transfer-Encoding"), "%s", up);
    int tokens = 0;
    for (const char *p = up; (p = strcasestr(p, "fencing-token")); p++) tokens++;
    cr_assert_eq(tokens, 1, "exactly one token field upstream:\n%s", up);
    free(up);
    adv_stop(&A);
}

/* Found by the front-end fuzzer (tests/fuzz/fuzz_front.c): libmicrohttpd
 * 0.9.75 answers a bodyless request's Expect: 100-continue and then hands the
 * next pipelined request's bytes to it as body, so a tokenless DELETE rode
 * upstream inside a GET. Such a request is refused at step 0 now. */
Test(framing, expect_without_a_body_cannot_carry_the_next_request, .timeout = 60)
{
    adv_start(&A, NULL, NULL);
    const char *attack = "GET /orders/7 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"
                         "DELETE /orders/7 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    free(adv_refused(&A, attack, strlen(attack), 400, "malformed-request"));
    adv_upstream_empty(&A, "Expect without a body");
    /* with a body, Expect: 100-continue is fine and the body goes through */
    const char *put = "PUT /orders/7 HTTP/1.1\r\nHost: x\r\nFencing-Token: 3\r\n"
                      "Expect: 100-continue\r\nContent-Length: 2\r\n\r\nok";
    char *r = fgt_raw_request(A.gw.port, put, strlen(put), 2000);
    cr_assert(strstr(r, "HTTP/1.1 200"), "%s", r);
    free(r);
    size_t len = 0;
    char *up = adv_upstream(&A, &len);
    cr_assert_eq(fgt_rawup_requests(A.up), 1);
    cr_assert_null(strstr(up, "DELETE"));
    cr_assert_null(strcasestr(up, "Expect:"), "Expect is not forwarded:\n%s", up);
    free(up);
    adv_stop(&A);
}

/* A refused write with a small body keeps its keep-alive connection: the body
 * is read and dropped, the problem answers it, and the next request on the
 * same connection is served. The dropped body is only a body, even when its
 * bytes look like a request. */
Test(framing, a_refusal_keeps_the_connection_and_drops_only_the_body, .timeout = 60)
{
    adv_start(&A, NULL, NULL);
    const char *w = "PUT /orders/9 HTTP/1.1\r\nHost: x\r\nFencing-Token: 50\r\n"
                    "Content-Length: 2\r\n\r\nok";
    char *r = fgt_raw_request(A.gw.port, w, strlen(w), 2000);
    cr_assert_eq(adv_status(r), 200, "%s", r);
    free(r);
    const char *inner = "DELETE /orders/9 HTTP/1.1\r\nHost: x\r\n\r\n";
    char bytes[1024];
    snprintf(bytes, sizeof bytes,
             "PUT /orders/9 HTTP/1.1\r\nHost: x\r\nFencing-Token: 7\r\nContent-Length: %zu\r\n\r\n"
             "%s"
             "PUT /orders/9 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz"
             "GET /orders/9 HTTP/1.1\r\nHost: x\r\n\r\n",
             strlen(inner), inner);
    int fd = fgt_raw_connect(A.gw.port);
    cr_assert_eq(send(fd, bytes, strlen(bytes), 0), (ssize_t)strlen(bytes));
    /* three answers on one connection: 409 (stale), 428 (no token), 200 */
    char *resp = NULL;
    bool closed = false;
    for (int i = 0; i < 100; i++) {
        free(resp);
        resp = fgt_raw_read_all(fd, 100, &closed);
        if (adv_responses(resp) >= 3 || closed) break;
    }
    close(fd);
    cr_assert_eq(adv_responses(resp), 3, "want 409, 428, 200 on one connection:\n%s", resp);
    cr_assert(strstr(resp, "HTTP/1.1 409") && strstr(resp, "HTTP/1.1 428") &&
                  strstr(resp, "HTTP/1.1 200"),
              "%s", resp);
    cr_assert_not(closed, "the refusals closed the keep-alive connection");
    free(resp);
    size_t len = 0;
    char *up = adv_upstream(&A, &len);
    cr_assert_eq(fgt_rawup_requests(A.up), 2, "only the first PUT and the GET:\n%s", up);
    cr_assert_null(strstr(up, "DELETE"), "the dropped body reached the upstream as a request");
    free(up);
    adv_stop(&A);
}
