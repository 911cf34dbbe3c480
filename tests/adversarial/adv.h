/*
 * adv.h -- set-up for the adversarial tests: the real gateway in front of an
 * upstream that records every byte it receives (harness/rawup.c), and a raw
 * socket client, so each test can say exactly what an attacker sent, what
 * came back, and what reached the upstream, byte for byte.
 *
 * Header-only (static functions) so that each test file stays one executable.
 */
#ifndef FG_TEST_ADV_H
#define FG_TEST_ADV_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness/harness.h"

typedef struct adv {
    fgt_rawup_t *up;
    fgt_gateway_t gw;
} adv_t;

#define ADV_POLICIES                                                                               \
    "[policy orders]\n"                                                                            \
    "match = /orders/{id}\n"                                                                       \
    "key = order:{id}\n"

/* Start the recording upstream and the gateway with SQLite state, [gateway]
 * extras `gw_extra` and policies `policies` (NULL: ADV_POLICIES). */
static inline void adv_start(adv_t *a, const char *gw_extra, const char *policies)
{
    memset(a, 0, sizeof *a);
    a->up = fgt_rawup_start();
    char conf[4096];
    snprintf(conf, sizeof conf,
             "[gateway]\nlisten = {listen}\nadmin_listen = {admin}\n"
             "upstream = http://127.0.0.1:%d\nstate = sqlite:{dir}/fg.db\n%s\n%s",
             fgt_rawup_port(a->up), gw_extra ? gw_extra : "", policies ? policies : ADV_POLICIES);
    fgt_gateway_start(&a->gw, conf);
}

/* Stop both; the gateway must drain and exit 0 (under ASan: no leak, no report). */
static inline void adv_stop(adv_t *a)
{
    int st = fgt_gateway_stop(&a->gw);
    char *log = fgt_read_file(a->gw.proc.log);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "gateway exit status %d; log:\n%s", st,
              log ? log : "");
    free(log);
    fgt_rawup_stop(a->up);
    a->up = NULL;
}

/* Everything the upstream received (malloc'd). */
static inline char *adv_upstream(adv_t *a, size_t *len)
{
    return fgt_rawup_bytes(a->up, len);
}

/* Assert the upstream received no byte at all. */
static inline void adv_upstream_empty(adv_t *a, const char *what)
{
    size_t n = 0;
    char *b = adv_upstream(a, &n);
    cr_assert_eq(n, 0, "%s: the upstream received %zu bytes:\n%s", what, n, b);
    free(b);
}

/* Status code of the first response in `resp`, or 0. */
static inline int adv_status(const char *resp)
{
    int st = 0;
    if (sscanf(resp, "HTTP/1.1 %d ", &st) != 1) return 0;
    return st;
}

/* Number of responses (status lines) in `resp`. */
static inline int adv_responses(const char *resp)
{
    int n = 0;
    for (const char *p = resp; (p = strstr(p, "HTTP/1.1 ")); p++) n++;
    return n;
}

/* Send `bytes` raw and expect one problem answer `status`/`type` and a closed
 * connection. Returns the answer (malloc'd). */
static inline char *adv_refused(adv_t *a, const char *bytes, size_t len, int status,
                                const char *type)
{
    bool closed = false;
    char *resp = fgt_raw_exchange(a->gw.port, bytes, len, 5000, &closed);
    cr_assert_eq(adv_status(resp), status, "want %d, got:\n%s\nfor:\n%.*s", status, resp, (int)len,
                 bytes);
    char want[128];
    snprintf(want, sizeof want, "\"type\":\"urn:fencegate:problem:%s\"", type);
    cr_assert(strstr(resp, want), "want type %s in:\n%s", type, resp);
    cr_assert(strstr(resp, "application/problem+json"), "not a problem: %s", resp);
    cr_assert(closed, "the connection stayed open after a step-0 refusal:\n%s", resp);
    cr_assert_eq(adv_responses(resp), 1, "more than one answer:\n%s", resp);
    return resp;
}

#endif
