/*
 * test_wire.c -- the strict request grammar of SPEC step 0 (gateway/wire.c):
 * one table of byte strings that must pass and one of strings that must be
 * refused (with the status and the rule named), each fed whole and also one
 * byte at a time, since a client decides where the packets break.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "gateway/wire.h"

typedef struct ok_case {
    const char *bytes;
    uint32_t msgs; /* complete messages expected */
} ok_case_t;

typedef struct bad_case {
    const char *bytes;
    int status;
    const char *reason; /* substring of the reason */
    size_t at;          /* offset of the offending byte; SIZE_MAX: don't check */
} bad_case_t;

#define H "Host: x\r\n"

static const ok_case_t ok_cases[] = {
    {"GET / HTTP/1.1\r\n" H "\r\n", 1},
    {"PUT /orders/42 HTTP/1.1\r\n" H "Fencing-Token: 5\r\nContent-Length: 2\r\n\r\nhi", 1},
    {"put /x HTTP/1.1\r\n" H "\r\n", 1},
    {"MKCOL /x HTTP/1.1\r\n" H "\r\n", 1},
    {"GET /x HTTP/1.0\r\n\r\n", 1},
    {"GET /x?a=b&c=%20 HTTP/1.1\r\n" H "\r\n", 1},
    {"GET / HTTP/1.1\r\nHost:x\r\nX-A:\r\nX-B:  \t v  w \t\r\n\r\n", 1},
    {"GET / HTTP/1.1\r\n" H "X-Utf8: \xc3\xa9\xff\r\n\r\n", 1},
    {"\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n", 1},
    {"POST /x HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n"
     "2\r\nhi\r\nA;ext=1 ; q=\"x\"\r\n0123456789\r\n0\r\n\r\n",
     1},
    {"POST /x HTTP/1.1\r\n" H "transfer-encoding: CHUNKED\r\n\r\n0\r\nX-Trailer: t\r\n\r\n", 1},
    {"POST /x HTTP/1.1\r\n" H "Content-Length: 3\r\ncontent-length: 3\r\n\r\nabc", 1},
    {"POST /x HTTP/1.1\r\n" H "Content-Length: 0\r\n\r\n", 1},
    {"GET /a HTTP/1.1\r\n" H "\r\nGET /b HTTP/1.1\r\n" H "\r\n"
     "PUT /c HTTP/1.1\r\n" H "Content-Length: 1\r\n\r\nz",
     3},
    {"GET / HTTP/1.1\r\nX-Host-Like: a/b@c\r\n" H "\r\n", 1},
    {"PUT / HTTP/1.1\r\n" H "Expect: 100-continue\r\nContent-Length: 1\r\n\r\nx", 1},
    {"PUT / HTTP/1.1\r\n" H "expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     1},
};

static const bad_case_t bad_cases[] = {
    /* framing (RFC 9112 section 6) */
    {"POST /x HTTP/1.1\r\n" H "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
     "both Transfer-Encoding and Content-Length", SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\n\r\n", 400, "only Transfer-Encoding",
     SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Transfer-Encoding: chunked, chunked\r\n\r\n", 400,
     "only Transfer-Encoding", SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Transfer-Encoding: chunked \r\n\r\n", 400, "only Transfer-Encoding",
     SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
     400, "more than one Transfer-Encoding", SIZE_MAX},
    {"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0", SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Content-Length: 3\r\nContent-Length: 4\r\n\r\n", 400,
     "differing Content-Length", SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Content-Length: 3, 3\r\n\r\n", 400, "digits only", SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Content-Length: +3\r\n\r\n", 400, "digits only", SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Content-Length: 3 \r\n\r\n", 400, "digits only", SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Content-Length:\r\n\r\n", 400, "empty Content-Length", SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Content-Length: 99999999999999999999\r\n\r\n", 400, "too large",
     SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\nZ\r\n", 400, "invalid chunk size",
     SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n2 ;x\r\nhi\r\n0\r\n\r\n", 400,
     "invalid chunk size", SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n2\r\nhiX\r\n", 400,
     "chunk data not followed by CRLF", SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n2\nhi\r\n", 400, "bare LF",
     SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n11111111111111111\r\n", 400,
     "chunk size too large", SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n0\r\nX: a\rb\r\n\r\n", 400,
     "CR not followed by LF", SIZE_MAX},
    {"POST /x HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n0\r\n x\r\n\r\n", 400, "obs-fold",
     SIZE_MAX},
    /* bytes of the head (RFC 9110/9112) */
    {"GET / HTTP/1.1\r\n" H "X-Note: a\rX-HTTP-Method-Override: DELETE\r\n\r\n", 400,
     "CR not followed by LF", 35},
    {"GET / HTTP/1.1\r\n" H "Fencing-Token : 5\r\n\r\n", 400, "whitespace before the colon", 38},
    {"GET / HTTP/1.1\r\n" H "Transfer-Encoding : chunked\r\n\r\n", 400,
     "whitespace before the colon", SIZE_MAX},
    {"GET / HTTP/1.1\r\n" H "X-Note: a\r\n b\r\n\r\n", 400, "obs-fold", 36},
    {"GET / HTTP/1.1\r\n" H "X-Note: a\r\n\tb\r\n\r\n", 400, "obs-fold", SIZE_MAX},
    {"GET / HTTP/1.1\r\n" H "X-Note: a\0b\r\n\r\n", 400, "NUL", SIZE_MAX},
    {"GET / HTTP/1.1\r\n" H "X-Note: a\x01"
     "b\r\n\r\n",
     400, "control character", SIZE_MAX},
    {"GET / HTTP/1.1\r\n" H "X-Note: a\x7f\r\n\r\n", 400, "control character", SIZE_MAX},
    {"GET / HTTP/1.1\r\n" H "X Note: a\r\n\r\n", 400, "whitespace before the colon", SIZE_MAX},
    {"GET / HTTP/1.1\r\n" H "X(Note): a\r\n\r\n", 400, "field name must be a token", SIZE_MAX},
    {"GET / HTTP/1.1\r\n" H ": a\r\n\r\n", 400, "field name must be a token", SIZE_MAX},
    {"GET / HTTP/1.1\r\n" H "X-Note: a\n\r\n", 400, "bare LF", SIZE_MAX},
    {"GET / HTTP/1.1\n" H "\r\n", 400, "bare LF", SIZE_MAX},
    {"GET / HTTP/1.1\r\n \r\n" H "\r\n", 400, "obs-fold", SIZE_MAX},
    {"PUT\t/orders/42\tHTTP/1.1\r\n" H "\r\n", 400, "tab in the request line", 3},
    {"P\xffT /x HTTP/1.1\r\n" H "\r\n", 400, "method must be a token", 1},
    {"PUT  /x HTTP/1.1\r\n" H "\r\n", 400, "more than one space", 4},
    {"PUT /x  HTTP/1.1\r\n" H "\r\n", 400, "more than one space", 7},
    {"PUT /x HTTP/1.1 \r\n" H "\r\n", 400, "unexpected bytes after the HTTP version", SIZE_MAX},
    {" PUT /x HTTP/1.1\r\n" H "\r\n", 400, "method must be a token", 0},
    {"PUT /x HTTP/2.0\r\n" H "\r\n", 400, "unsupported HTTP version", SIZE_MAX},
    {"PUT /x HTTP/1.2\r\n" H "\r\n", 400, "unsupported HTTP version", SIZE_MAX},
    {"PUT /x http/1.1\r\n" H "\r\n", 400, "unsupported HTTP version", SIZE_MAX},
    {"PUT /x\r\n" H "\r\n", 400, "invalid byte in the request target", SIZE_MAX},
    {"PUT /x#frag HTTP/1.1\r\n" H "\r\n", 400, "invalid byte in the request target", 6},
    {"PUT /\xc3\xa9 HTTP/1.1\r\n" H "\r\n", 400, "invalid byte in the request target", 5},
    {"PUT /x\x01y HTTP/1.1\r\n" H "\r\n", 400, "invalid byte in the request target", 6},
    {"GET / HTTP/1.1\r\n\r\n", 400, "needs a Host", SIZE_MAX},
    {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host", SIZE_MAX},
    {"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "invalid character in Host", SIZE_MAX},
    {"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, "invalid character in Host", SIZE_MAX},
    {"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n", 400, "too many empty lines", SIZE_MAX},
    {"\r\rGET / HTTP/1.1\r\n" H "\r\n", 400, "CR not followed by LF", 1},
    {"ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ / HTTP/1.1\r\n" H "\r\n", 400, "method too long",
     SIZE_MAX},
    /* RFC 9110 section 10.1.1: no 100-continue without content (MHD 0.9.75
     * would give the next pipelined request to this one as its body) */
    {"GET / HTTP/1.1\r\n" H "Expect: 100-continue\r\n\r\nDELETE /x HTTP/1.1\r\n" H "\r\n", 400,
     "Expect on a request without a body", SIZE_MAX},
    {"PUT / HTTP/1.1\r\n" H "Expect: 100-continue\r\nContent-Length: 0\r\n\r\n", 400,
     "Expect on a request without a body", SIZE_MAX},
    /* a good message, then a bad one: the error is in the second */
    {"GET /a HTTP/1.1\r\n" H "\r\nGET /b HTTP/1.1\r\n" H "X: \x01\r\n\r\n", 400,
     "control character", SIZE_MAX},
};

static void feed_all(fg_wire_t *w, const char *s, size_t len, bool bytewise, size_t *stop)
{
    *stop = SIZE_MAX;
    if (!bytewise) {
        size_t k = fg_wire_feed(w, s, len);
        if (k != len) *stop = k;
        return;
    }
    for (size_t i = 0; i < len; i++) {
        if (fg_wire_feed(w, s + i, 1) != 1) {
            *stop = i;
            return;
        }
    }
}

Test(wire, accepts_the_strict_grammar)
{
    for (size_t i = 0; i < sizeof ok_cases / sizeof *ok_cases; i++) {
        const char *s = ok_cases[i].bytes;
        size_t len = strlen(s);
        for (int bw = 0; bw < 2; bw++) {
            fg_wire_t w;
            fg_wire_init(&w);
            size_t stop;
            feed_all(&w, s, len, bw, &stop);
            cr_expect_eq(stop, SIZE_MAX, "case %zu (%s): refused at %zu: %s", i,
                         bw ? "bytewise" : "whole", stop, w.reason ? w.reason : "");
            cr_expect_eq(w.done, ok_cases[i].msgs, "case %zu: %u messages, want %u", i, w.done,
                         ok_cases[i].msgs);
            cr_expect_eq(w.heads, ok_cases[i].msgs, "case %zu: heads", i);
            cr_expect_not(fg_wire_in_head(&w), "case %zu", i);
            cr_expect_not(fg_wire_in_body(&w), "case %zu", i);
        }
    }
}

Test(wire, refuses_what_rfc_9112_refuses)
{
    for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
        const bad_case_t *c = &bad_cases[i];
        size_t len = strlen(c->bytes);
        /* NUL inside a case: the string continues after it */
        if (strstr(c->reason, "NUL")) len += 1 + strlen(c->bytes + len + 1);
        for (int bw = 0; bw < 2; bw++) {
            fg_wire_t w;
            fg_wire_init(&w);
            size_t stop;
            feed_all(&w, c->bytes, len, bw, &stop);
            cr_expect_neq(stop, SIZE_MAX, "case %zu accepted: %s", i, c->bytes);
            if (stop == SIZE_MAX) continue;
            cr_expect(fg_wire_failed(&w));
            cr_expect_eq(w.status, c->status, "case %zu: status %d", i, w.status);
            cr_expect(w.reason && strstr(w.reason, c->reason), "case %zu: reason '%s', want '%s'",
                      i, w.reason ? w.reason : "(null)", c->reason);
            if (c->at != SIZE_MAX)
                cr_expect_eq(stop, c->at, "case %zu: stopped at %zu, want %zu", i, stop, c->at);
            cr_expect_eq(fg_wire_feed(&w, "GET / HTTP/1.1\r\n", 16), 0,
                         "a failed connection never recovers");
        }
    }
}

Test(wire, limits)
{
    static char buf[40000];
    fg_wire_t w;
    /* a target of FG_PATH_MAX bytes passes, one more is 414 */
    size_t n = (size_t)snprintf(buf, sizeof buf, "GET /");
    memset(buf + n, 'a', 8191);
    n += 8191;
    n += (size_t)snprintf(buf + n, sizeof buf - n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    fg_wire_init(&w);
    cr_assert_eq(fg_wire_feed(&w, buf, n), n, "%s", w.reason ? w.reason : "");
    n = (size_t)snprintf(buf, sizeof buf, "GET /");
    memset(buf + n, 'a', 8192);
    n += 8192;
    n += (size_t)snprintf(buf + n, sizeof buf - n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    fg_wire_init(&w);
    cr_assert_lt(fg_wire_feed(&w, buf, n), n);
    cr_assert_eq(w.status, 414);
    /* a head over 12 KiB is 431 */
    n = (size_t)snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(buf + n, 'v', 17000);
    n += 17000;
    n += (size_t)snprintf(buf + n, sizeof buf - n, "\r\n\r\n");
    fg_wire_init(&w);
    cr_assert_lt(fg_wire_feed(&w, buf, n), n);
    cr_assert_eq(w.status, 431);
    /* more than 100 fields is 431 */
    n = (size_t)snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 100; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "X-%d: v\r\n", i);
    n += (size_t)snprintf(buf + n, sizeof buf - n, "\r\n");
    fg_wire_init(&w);
    cr_assert_lt(fg_wire_feed(&w, buf, n), n);
    cr_assert_eq(w.status, 431);
    cr_assert(strstr(w.reason, "100 header fields"));
}

Test(wire, counters_and_offsets_follow_pipelined_messages)
{
    fg_wire_t w;
    fg_wire_init(&w);
    const char *a = "PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab";
    cr_assert_eq(fg_wire_feed(&w, a, strlen(a)), strlen(a));
    cr_assert_eq(w.begun, 1);
    cr_assert_eq(w.begin_off, 0);
    cr_assert_eq(w.heads, 1);
    cr_assert_eq(w.done, 0);
    cr_assert(fg_wire_in_body(&w));
    cr_assert_eq(w.framing, FG_WIRE_LENGTH);
    cr_assert_eq(w.length, 4);
    const char *b = "cdGET /b HTTP/1.1\r\nHo";
    cr_assert_eq(fg_wire_feed(&w, b, strlen(b)), strlen(b));
    cr_assert_eq(w.done, 1);
    cr_assert_eq(w.begun, 2);
    cr_assert_eq(w.begin_off, 2, "the second message begins after the body");
    cr_assert(fg_wire_in_head(&w));
    const char *c = "st: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    cr_assert_eq(fg_wire_feed(&w, c, strlen(c)), strlen(c));
    cr_assert_eq(w.begin_off, SIZE_MAX, "it began in an earlier buffer");
    cr_assert_eq(w.heads, 2);
    cr_assert_eq(w.framing, FG_WIRE_CHUNKED);
    cr_assert(fg_wire_in_body(&w));
    const char *d = "3\r\nabc\r\n0\r\n\r\n";
    cr_assert_eq(fg_wire_feed(&w, d, strlen(d)), strlen(d));
    cr_assert_eq(w.done, 2);
    cr_assert_not(fg_wire_in_body(&w));
    cr_assert_not(fg_wire_in_head(&w));
}

Test(wire, the_smuggling_request_of_the_security_review)
{
    /* GET with both framings, carrying a tokenless DELETE inside a chunk */
    char buf[1024];
    const char *inner = "DELETE /orders/7 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    int n = snprintf(buf, sizeof buf,
                     "GET /anything HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
                     strlen(inner), inner);
    fg_wire_t w;
    fg_wire_init(&w);
    size_t at = fg_wire_feed(&w, buf, (size_t)n);
    cr_assert_lt(at, (size_t)n);
    cr_assert_eq(w.status, 400);
    cr_assert_eq(w.heads, 0, "the head is refused, so nothing of it is forwarded");
}
