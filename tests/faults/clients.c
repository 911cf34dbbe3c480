/*
 * clients.c -- the writers and the hwm poller of a fault run: they produce the
 * history the checker judges.
 *
 * A writer takes its token from one shared counter that only rises (what a lock
 * service hands out), PUTs to a random /orders/N with that token and a unique
 * X-Request-Id, and records what it was told. Some writes reuse a token the
 * writer took earlier (a client whose lock expired). Every request opens a fresh
 * connection, so libcurl never resends one on its own: a request id reaches the
 * gateway at most once. The poller reads every resource's hwm from the admin
 * API over and over and notes any value lower than one it saw before.
 */
#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "faults.h"

#define CLIENT_TIMEOUT_MS 15000 /* longer than any fault plus fence_wait and upstream_timeout */
#define BODY_KEEP         2048

int64_t fc_now_ms(const fc_run_t *run)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - run->t_start_ns) / 1000000;
}

uint64_t fc_rand(uint64_t *state) /* splitmix64 */
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void fc_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

bool fc_parse_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > 20) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        unsigned dgt = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - dgt) / 10) return false;
        v = v * 10 + dgt;
    }
    *out = v;
    return true;
}

typedef struct sink {
    char *p;
    size_t len, cap;
} sink_t;

static size_t keep(char *p, size_t size, size_t n, void *ud)
{
    sink_t *s = ud;
    size_t add = size * n, room = s->cap - 1 - s->len;
    if (add < room) room = add;
    memcpy(s->p + s->len, p, room);
    s->len += room;
    s->p[s->len] = '\0';
    return add; /* the rest is dropped, not an error */
}

/* One request on a fresh connection. Returns the status (0 without an answer). */
static long http(const char *method, const char *url, struct curl_slist *hdrs, const char *body,
                 long timeout_ms, char *out, size_t out_len)
{
    CURL *c = curl_easy_init();
    if (!c) return 0;
    sink_t s = {out, 0, out_len};
    out[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    if (hdrs) curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    if (body) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    return status;
}

long fc_admin_get(const fc_run_t *run, const char *path, char *buf, size_t len)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", run->admin_url, path);
    return http("GET", url, NULL, NULL, 3000, buf, len);
}

static fc_outcome_t classify(long status, const char *body)
{
    switch (status) {
    case 0:
        return FC_NO_ANSWER;
    case 409:
        if (strstr(body, "problem:stale-token")) return FC_STALE;
        if (strstr(body, "problem:token-jump")) return FC_JUMP;
        return FC_OTHER;
    case 503:
        if (strstr(body, "problem:state-unavailable")) return FC_STATE_DOWN;
        if (strstr(body, "problem:fence-busy")) return FC_FENCE_BUSY;
        return FC_OTHER;
    case 504:
        return FC_UP_TIMEOUT;
    case 502:
        return FC_UP_ERROR;
    case 400:
    case 403:
    case 428:
        return FC_REFUSED;
    default:
        return status >= 200 && status < 300 ? FC_OK : FC_OTHER;
    }
}

fc_op_t *fc_put(fc_client_t *c, uint32_t resource, uint64_t token, bool stale_writer,
                unsigned delay_ms)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        fc_op_t *ops = cap <= FC_OPS_MAX ? realloc(c->ops, cap * sizeof *ops) : NULL;
        if (!ops) return NULL;
        c->ops = ops;
        c->cap = cap;
    }
    fc_run_t *run = c->run;
    fc_op_t *op = &c->ops[c->n];
    memset(op, 0, sizeof *op);
    op->token = token;
    op->resource = resource;
    op->stale_writer = stale_writer;
    op->delay_ms = (uint16_t)delay_ms;
    char url[128], tok[64], rid[64], delay[48], body[96];
    snprintf(url, sizeof url, "%s/orders/%" PRIu32, run->gw_url, resource);
    snprintf(tok, sizeof tok, "Fencing-Token: %" PRIu64, token);
    snprintf(rid, sizeof rid, "X-Request-Id: fc-c%u-%zu", c->id, c->n);
    snprintf(delay, sizeof delay, "X-Delay-Ms: %u", delay_ms);
    snprintf(body, sizeof body, "fc-c%u-%zu token %" PRIu64 "\n", c->id, c->n, token);
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, tok);
    h = curl_slist_append(h, rid);
    h = curl_slist_append(h, "Content-Type: text/plain");
    h = curl_slist_append(h, "Expect:");
    if (delay_ms) h = curl_slist_append(h, delay);
    char answer[BODY_KEEP];
    op->t0 = fc_now_ms(run);
    long st = h ? http("PUT", url, h, body, CLIENT_TIMEOUT_MS, answer, sizeof answer) : 0;
    op->t1 = fc_now_ms(run);
    curl_slist_free_all(h);
    op->status = (uint16_t)st;
    op->outcome = (uint8_t)classify(st, answer);
    c->n++;
    return op;
}

static void *writer(void *arg)
{
    fc_client_t *c = arg;
    fc_run_t *run = c->run;
    const fc_opts_t *o = run->o;
    while (!atomic_load(&run->stop)) {
        fc_sleep_ms((unsigned)(fc_rand(&c->rng) % (2 * (uint64_t)o->think_ms + 1)));
        uint32_t res = 1 + (uint32_t)(fc_rand(&c->rng) % o->resources);
        bool stale = c->n_recent > 0 && (double)(fc_rand(&c->rng) >> 11) * 0x1.0p-53 < o->stale;
        uint64_t token;
        if (stale) {
            token = c->recent[fc_rand(&c->rng) % c->n_recent];
        } else {
            token = atomic_fetch_add(&run->next_token, 1) + 1;
            c->recent[c->n_recent < 16 ? c->n_recent++ : fc_rand(&c->rng) % 16] = token;
        }
        int dmax = atomic_load(&run->delay_max_ms);
        unsigned delay = dmax > 0 ? (unsigned)(fc_rand(&c->rng) % ((uint64_t)dmax + 1)) : 0;
        if (!fc_put(c, res, token, stale, delay)) break; /* history full */
    }
    return NULL;
}

/* Read `"highest": N` from an admin answer. */
static bool highest_of(const char *body, uint64_t *out)
{
    const char *p = strstr(body, "\"highest\"");
    if (!p) return false;
    p += strlen("\"highest\"");
    while (*p == ' ' || *p == ':') p++;
    return fc_parse_u64(p, strspn(p, "0123456789"), out);
}

static void *poller(void *arg)
{
    fc_run_t *run = arg;
    while (!atomic_load(&run->stop)) {
        for (uint32_t r = 1; r <= run->o->resources; r++) {
            char path[64], body[512];
            snprintf(path, sizeof path, "/v1/resources/order:%" PRIu32, r);
            uint64_t v;
            if (fc_admin_get(run, path, body, sizeof body) != 200 || !highest_of(body, &v))
                continue; /* gateway or store down: no sample */
            run->hwm_samples++;
            if (v < run->hwm_seen[r] && run->n_hwm_bad++ < FC_HWM_BAD_MAX)
                run->hwm_bad[run->n_hwm_bad - 1] =
                    (fc_hwm_bad_t){fc_now_ms(run), r, run->hwm_seen[r], v};
            if (v > run->hwm_seen[r]) run->hwm_seen[r] = v;
        }
        fc_sleep_ms(20); /* pacing, not synchronization */
    }
    return NULL;
}

bool fc_run_start(fc_run_t *run)
{
    if (pthread_create(&run->poller, NULL, poller, run) != 0) return false;
    run->n_started = 0;
    while (run->n_started < run->o->clients) {
        fc_client_t *c = &run->clients[run->n_started];
        if (pthread_create(&c->th, NULL, writer, c) != 0) {
            fc_run_stop(run);
            return false;
        }
        run->n_started++;
    }
    return true;
}

void fc_run_stop(fc_run_t *run)
{
    atomic_store(&run->stop, true);
    for (unsigned i = 0; i < run->n_started; i++) pthread_join(run->clients[i].th, NULL);
    pthread_join(run->poller, NULL);
}
