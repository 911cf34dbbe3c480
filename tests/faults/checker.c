/*
 * checker.c -- judges a fault run once the faults are over.
 *
 * First it heals: the gateway must become ready and accept a fresh write per
 * resource (liveness), and the demo store must have finished every write it
 * received. Then it reads what really happened: the demo store's write log
 * (arrival order, and the order in which writes took effect) and the audit
 * trail and hwm straight from the state store (SQLite file, Redis stream,
 * Postgres tables, as storage/ writes them), not through the gateway. And it
 * checks, per resource, against the clients' history:
 *   order     tokens never decrease at the upstream, neither in arrival order
 *             nor in applied order (SPEC step 8, compare = >=)
 *   audit     every 409 stale-token has exactly one audit record with its
 *             request id and reason stale, and no audited stale write was
 *             forwarded (SPEC Audit: no rejection without its record)
 *   hwm       the admin API never showed an hwm going down, and the final hwm
 *             (admin API and store agree) is at least every token that reached
 *             the upstream
 *   refused   no write answered 400/403/409/428/503 reached the upstream, every
 *             2xx did (once, with its token), and nothing else did
 * A write in flight when the gateway was killed may land after a later one:
 * ordering is promised per gateway process ("What is promised"), so such an
 * inversion is counted as excused, not as a violation. So is a write that got
 * a 504 and was still held in quarantine (SPEC step 8) by a gateway that was
 * then killed before the later write went out: the quarantine lives in that
 * gateway process, and the next process knows nothing of it.
 */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faults.h"

#define HEAL_MS        30000 /* the gateway must be ready and writable again within this */
#define IDLE_MS        15000 /* the demo store must finish its last (delayed) write within this */
#define PRINT_PER_KIND 10

typedef enum {
    V_ORDER,
    V_AUDIT,
    V_HWM,
    V_REFUSED_FORWARDED,
    V_ACCEPTED_MISSING,
    V_UNEXPECTED,
    V_LIVENESS,
    V_KIND_COUNT
} vkind_t;

static const char *const vnames[V_KIND_COUNT] = {
    [V_ORDER] = "order",
    [V_AUDIT] = "audit",
    [V_HWM] = "hwm",
    [V_REFUSED_FORWARDED] = "refused-but-forwarded",
    [V_ACCEPTED_MISSING] = "accepted-but-missing",
    [V_UNEXPECTED] = "unexpected",
    [V_LIVENESS] = "liveness",
};

typedef struct report {
    fc_env_t *e;
    unsigned long n[V_KIND_COUNT];
    unsigned long excused;
    unsigned long late_by[FC_OUTCOME_COUNT + 1]; /* order violations by the late write's answer */
    unsigned long arrived, applied, audit_records;
    uint64_t *max_arrived; /* per resource: highest token that reached the upstream */
    uint64_t *store_hwm;   /* per resource, read from the store; 0 = none */
} report_t;

static const char *const outcome_names[FC_OUTCOME_COUNT] = {
    [FC_OK] = "ok",
    [FC_STALE] = "stale",
    [FC_JUMP] = "token-jump",
    [FC_REFUSED] = "refused",
    [FC_STATE_DOWN] = "state-unavailable",
    [FC_FENCE_BUSY] = "fence-busy",
    [FC_UP_TIMEOUT] = "upstream-timeout",
    [FC_UP_ERROR] = "upstream-error",
    [FC_NO_ANSWER] = "no-answer",
    [FC_OTHER] = "other",
};

const char *fc_outcome_name(fc_outcome_t o)
{
    return o < FC_OUTCOME_COUNT ? outcome_names[o] : "?";
}

__attribute__((format(printf, 3, 4))) static void violation(report_t *r, vkind_t k, const char *fmt,
                                                            ...)
{
    if (r->n[k]++ >= PRINT_PER_KIND) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "VIOLATION %s [seed %" PRIu64 ", store %s]: %s\n", vnames[k], r->e->o.seed,
            fc_store_name(r->e->o.store), msg);
}

/* The op a request id names ("fc-c<client>-<index>"), or NULL. */
static fc_op_t *op_of(fc_run_t *run, const char *rid)
{
    if (!rid || strncmp(rid, "fc-c", 4) != 0) return NULL;
    const char *p = rid + 4;
    size_t a = strspn(p, "0123456789");
    uint64_t client, idx;
    if (!fc_parse_u64(p, a, &client) || p[a] != '-') return NULL;
    p += a + 1;
    size_t b = strspn(p, "0123456789");
    if (p[b] != '\0' || !fc_parse_u64(p, b, &idx) || client > run->o->clients) return NULL;
    fc_client_t *c = &run->clients[client];
    return idx < c->n ? &c->ops[idx] : NULL;
}

/* "fc-c3-17 token 77 -> 504 upstream-timeout, +12.300..13.301s, delay 1800ms [faults...]" */
static void describe(const fc_run_t *run, const fc_op_t *op, char *out, size_t len)
{
    size_t client = 0, idx = 0;
    for (size_t i = 0; i <= run->o->clients; i++)
        if (op >= run->clients[i].ops && op < run->clients[i].ops + run->clients[i].n) {
            client = i;
            idx = (size_t)(op - run->clients[i].ops);
        }
    int n = snprintf(out, len, "fc-c%zu-%zu token %" PRIu64 "%s -> %u %s, +%.3f..%.3fs, delay %ums",
                     client, idx, op->token, op->stale_writer ? " (stale writer)" : "", op->status,
                     fc_outcome_name((fc_outcome_t)op->outcome), (double)op->t0 / 1000.0,
                     (double)op->t1 / 1000.0, op->delay_ms);
    for (size_t i = 0; i < run->n_events && n > 0 && (size_t)n < len; i++) {
        const fc_event_t *ev = &run->events[i];
        if (ev->t1 < op->t0 - 1000 || ev->t0 > op->t1) continue; /* and its after-effects */
        n += snprintf(out + n, len - (size_t)n, " [%s +%.3f..%.3fs]", fc_nemesis_name(ev->kind),
                      (double)ev->t0 / 1000.0, (double)ev->t1 / 1000.0);
    }
}

/* Was the gateway killed between t0 and t1 (ms of the run)? */
static bool killed_between(const fc_run_t *run, int64_t t0, int64_t t1)
{
    for (size_t i = 0; i < run->n_events; i++)
        if (run->events[i].kind == FC_GATEWAY_KILL && run->events[i].t0 >= t0 &&
            run->events[i].t0 <= t1)
            return true;
    return false;
}

static bool killed_during(const fc_run_t *run, const fc_op_t *op)
{
    for (size_t i = 0; i < run->n_events; i++)
        if (run->events[i].kind == FC_GATEWAY_KILL && run->events[i].t0 >= op->t0 &&
            run->events[i].t0 <= op->t1)
            return true;
    return false;
}

/* ---- heal ---- */

static bool heal(report_t *r)
{
    fc_env_t *e = r->e;
    fc_run_t *run = &e->run;
    char body[512];
    int64_t deadline = fc_now_ms(run) + HEAL_MS;
    while (fc_admin_get(run, "/readyz", body, sizeof body) != 200) {
        fc_gateway_watch(e);
        if (fc_now_ms(run) > deadline) {
            violation(r, V_LIVENESS, "the gateway is not ready %d s after the last fault (%s)",
                      HEAL_MS / 1000, body);
            return false;
        }
        fc_sleep_ms(50);
    }
    fc_client_t *fin = &run->clients[e->o.clients];
    for (uint32_t res = 1; res <= e->o.resources; res++) {
        for (;;) {
            uint64_t t = atomic_fetch_add(&run->next_token, 1) + 1;
            fc_op_t *op = fc_put(fin, res, t, false, 0);
            if (!op || op->outcome == FC_OK) break;
            bool retry = op->outcome == FC_STATE_DOWN || op->outcome == FC_FENCE_BUSY ||
                         op->outcome == FC_NO_ANSWER;
            if (!retry || fc_now_ms(run) > deadline) {
                char d[1024];
                describe(run, op, d, sizeof d);
                violation(r, V_LIVENESS, "a fresh write after the faults: %s", d);
                break;
            }
            fc_sleep_ms(100);
        }
    }
    return true;
}

/* Wait until the demo store has no write open (the last delayed ones took effect). */
static void upstream_idle(report_t *r)
{
    fc_env_t *e = r->e;
    char url[128];
    snprintf(url, sizeof url, "%s/_fg/count", e->up.url);
    int64_t deadline = fc_now_ms(&e->run) + IDLE_MS;
    for (;;) {
        fgt_resp_t resp = fgt_http("GET", url, NULL, NULL, 0);
        json_t *j = fgt_resp_json(&resp);
        fgt_resp_free(&resp);
        json_int_t active = json_integer_value(json_object_get(j, "active"));
        json_decref(j);
        if (j && active == 0) return;
        if (fc_now_ms(&e->run) > deadline) {
            violation(r, V_LIVENESS, "the demo store still has %lld writes open",
                      (long long)active);
            return;
        }
        fc_sleep_ms(50);
    }
}

/* ---- the upstream log ---- */

typedef struct entry {
    uint64_t token;
    int64_t applied; /* -1: never took effect */
    fc_op_t *op;
    const char *rid;
} entry_t;

static int by_applied(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    return (x->applied > y->applied) - (x->applied < y->applied);
}

static void check_order(report_t *r, entry_t *es, size_t n, uint32_t res, const char *order)
{
    fc_run_t *run = &r->e->run;
    const entry_t *top = NULL;
    for (size_t i = 0; i < n; i++) {
        entry_t *low = &es[i];
        if (!top || low->token >= top->token) {
            top = low;
            continue;
        }
        if (low->op && low->op->outcome == FC_NO_ANSWER && killed_during(run, low->op)) {
            r->excused++;
            continue;
        }
        if (low->op && low->op->outcome == FC_UP_TIMEOUT && top->op &&
            killed_between(run, low->op->t0, top->op->t0)) {
            r->excused++; /* its quarantine died with the gateway that held it */
            continue;
        }
        r->late_by[low->op ? low->op->outcome : FC_OUTCOME_COUNT]++;
        char a[1024], b[1024];
        if (low->op)
            describe(run, low->op, a, sizeof a);
        else
            snprintf(a, sizeof a, "%s token %" PRIu64, low->rid, low->token);
        if (top->op)
            describe(run, top->op, b, sizeof b);
        else
            snprintf(b, sizeof b, "%s token %" PRIu64, top->rid, top->token);
        violation(r, V_ORDER, "order:%" PRIu32 " %s out of order: %s; yet before it: %s", res,
                  order, a, b);
    }
}

static void check_upstream(report_t *r, json_t *log)
{
    fc_env_t *e = r->e;
    fc_run_t *run = &e->run;
    size_t n = json_array_size(log);
    entry_t *all = calloc(n ? n : 1, sizeof *all);
    entry_t *per = calloc(n ? n : 1, sizeof *per);
    cr_assert(all && per);
    size_t i;
    json_t *w;
    json_array_foreach(log, i, w)
    {
        entry_t *en = &all[i];
        const char *tok = json_string_value(json_object_get(w, "token"));
        en->rid = json_string_value(json_object_get(json_object_get(w, "headers"), "x-request-id"));
        json_t *ap = json_object_get(w, "applied");
        en->applied = json_is_integer(ap) ? (int64_t)json_integer_value(ap) : -1;
        r->arrived++;
        if (en->applied >= 0) r->applied++;
        en->op = op_of(run, en->rid);
        if (!tok || !fc_parse_u64(tok, strlen(tok), &en->token) || !en->op) {
            violation(r, V_UNEXPECTED, "the upstream got a write no client sent: seq %zu, %s %s", i,
                      en->rid ? en->rid : "(no request id)", tok ? tok : "(no token)");
            continue;
        }
        en->op->at_upstream++;
        if (en->token != en->op->token)
            violation(r, V_UNEXPECTED,
                      "%s reached the upstream with token %" PRIu64 ", sent %" PRIu64, en->rid,
                      en->token, en->op->token);
        if (en->token > r->max_arrived[en->op->resource])
            r->max_arrived[en->op->resource] = en->token;
    }
    for (uint32_t res = 1; res <= e->o.resources; res++) {
        size_t m = 0, k = 0;
        for (i = 0; i < n; i++)
            if (all[i].op && all[i].op->resource == res) per[m++] = all[i];
        check_order(r, per, m, res, "arrived");
        for (i = 0; i < m; i++)
            if (per[i].applied >= 0) per[k++] = per[i];
        qsort(per, k, sizeof *per, by_applied);
        check_order(r, per, k, res, "took effect");
    }
    free(all);
    free(per);
}

/* ---- the store itself ---- */

static void on_audit(report_t *r, const char *rid, const char *reason, const char *resource,
                     const char *token)
{
    fc_run_t *run = &r->e->run;
    r->audit_records++;
    fc_op_t *op = op_of(run, rid);
    if (!op) {
        violation(r, V_AUDIT, "audit record for a request no client sent: %s %s %s",
                  rid ? rid : "-", reason ? reason : "-", resource ? resource : "-");
        return;
    }
    char want[64], d[1024];
    snprintf(want, sizeof want, "order:%" PRIu32, op->resource);
    uint64_t t = 0;
    bool tok_ok = token && fc_parse_u64(token, strlen(token), &t) && t == op->token;
    if (!reason || strcmp(reason, "stale") != 0 || !resource || strcmp(resource, want) != 0 ||
        !tok_ok) {
        describe(run, op, d, sizeof d);
        violation(r, V_AUDIT, "audit record (%s, %s, token %s) does not match %s",
                  reason ? reason : "-", resource ? resource : "-", token ? token : "-", d);
        return;
    }
    op->audited++;
}

static void on_hwm(report_t *r, const char *resource, const char *token)
{
    uint64_t res, t;
    if (!resource || strncmp(resource, "order:", 6) != 0 ||
        !fc_parse_u64(resource + 6, strlen(resource + 6), &res) || res < 1 ||
        res > r->e->o.resources || !token || !fc_parse_u64(token, strlen(token), &t)) {
        violation(r, V_HWM, "the store holds an hwm nobody wrote: %s = %s",
                  resource ? resource : "-", token ? token : "-");
        return;
    }
    r->store_hwm[res] = t;
}

static void read_sqlite(report_t *r)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(r->e->sqlite_path, &db, SQLITE_OPEN_READONLY, NULL);
    cr_assert(rc == SQLITE_OK, "open %s: %s", r->e->sqlite_path, sqlite3_errmsg(db));
    sqlite3_busy_timeout(db, 5000);
    static const char *const sql[2] = {
        "SELECT request_id, reason, resource, token FROM audit ORDER BY id",
        "SELECT resource, token FROM hwm",
    };
    for (int q = 0; q < 2; q++) {
        sqlite3_stmt *st = NULL;
        cr_assert(sqlite3_prepare_v2(db, sql[q], -1, &st, NULL) == SQLITE_OK, "%s: %s", sql[q],
                  sqlite3_errmsg(db));
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *c0 = (const char *)sqlite3_column_text(st, 0);
            const char *c1 = (const char *)sqlite3_column_text(st, 1);
            if (q == 0)
                on_audit(r, c0, c1, (const char *)sqlite3_column_text(st, 2),
                         (const char *)sqlite3_column_text(st, 3));
            else
                on_hwm(r, c0, c1);
        }
        cr_assert(rc == SQLITE_DONE, "%s: %s", sql[q], sqlite3_errmsg(db));
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
}

static const char *field(const redisReply *kv, const char *name)
{
    for (size_t i = 0; kv && i + 1 < kv->elements; i += 2)
        if (strcmp(kv->element[i]->str, name) == 0) return kv->element[i + 1]->str;
    return NULL;
}

static void read_redis(report_t *r)
{
    redisContext *c = redisConnect("127.0.0.1", r->e->redis.port);
    cr_assert(c && !c->err, "connect to redis :%d", r->e->redis.port);
    char start[80] = "-";
    for (;;) {
        redisReply *rep = redisCommand(c, "XRANGE fencegate:audit %s + COUNT 1000", start);
        cr_assert(rep && rep->type == REDIS_REPLY_ARRAY, "XRANGE: %s",
                  rep && rep->str ? rep->str : c->errstr);
        for (size_t i = 0; i < rep->elements; i++) {
            const redisReply *en = rep->element[i], *kv = en->element[1];
            on_audit(r, field(kv, "request_id"), field(kv, "reason"), field(kv, "resource"),
                     field(kv, "token"));
            snprintf(start, sizeof start, "(%s", en->element[0]->str);
        }
        size_t got = rep->elements;
        freeReplyObject(rep);
        if (got < 1000) break;
    }
    for (uint32_t res = 1; res <= r->e->o.resources; res++) {
        redisReply *rep = redisCommand(c, "GET fencegate:hwm:order:%" PRIu32, res);
        cr_assert(rep, "GET hwm: %s", c->errstr);
        char key[32];
        snprintf(key, sizeof key, "order:%" PRIu32, res);
        if (rep->type == REDIS_REPLY_STRING) on_hwm(r, key, rep->str);
        freeReplyObject(rep);
    }
    redisFree(c);
}

static void read_postgres(report_t *r)
{
    PGconn *c = PQconnectdb(r->e->pg.url);
    cr_assert(PQstatus(c) == CONNECTION_OK, "connect %s: %s", r->e->pg.url, PQerrorMessage(c));
    static const char *const sql[2] = {
        "SELECT request_id, reason, resource, token::text FROM fencegate_audit ORDER BY id",
        "SELECT resource, token::text FROM fencegate_hwm",
    };
    for (int q = 0; q < 2; q++) {
        PGresult *res = PQexec(c, sql[q]);
        cr_assert(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql[q],
                  PQresultErrorMessage(res));
        for (int i = 0; i < PQntuples(res); i++) {
#define COL(j) (PQgetisnull(res, i, j) ? NULL : PQgetvalue(res, i, j))
            if (q == 0)
                on_audit(r, COL(0), COL(1), COL(2), COL(3));
            else
                on_hwm(r, COL(0), COL(1));
#undef COL
        }
        PQclear(res);
    }
    PQfinish(c);
}

/* ---- per request ---- */

static void op_violation(report_t *r, vkind_t k, const fc_op_t *op, const char *what)
{
    char d[1024];
    describe(&r->e->run, op, d, sizeof d);
    violation(r, k, "%s%s", what, d);
}

static void check_ops(report_t *r)
{
    fc_run_t *run = &r->e->run;
    for (unsigned ci = 0; ci <= r->e->o.clients; ci++) {
        fc_client_t *c = &run->clients[ci];
        for (size_t i = 0; i < c->n; i++) {
            const fc_op_t *op = &c->ops[i];
            fc_outcome_t oc = (fc_outcome_t)op->outcome;
            bool refused = oc == FC_STALE || oc == FC_JUMP || oc == FC_REFUSED ||
                           oc == FC_STATE_DOWN || oc == FC_FENCE_BUSY;
            if (op->at_upstream > 1)
                op_violation(r, V_UNEXPECTED, op, "reached the upstream more than once: ");
            if (refused && op->at_upstream) op_violation(r, V_REFUSED_FORWARDED, op, "");
            if (oc == FC_OK && !op->at_upstream) op_violation(r, V_ACCEPTED_MISSING, op, "");
            if (oc == FC_STALE && op->audited == 0)
                op_violation(r, V_AUDIT, op, "no stale audit record for ");
            if (oc == FC_STALE && op->audited > 1)
                op_violation(r, V_AUDIT, op, "more than one stale audit record for ");
            if (op->audited && op->at_upstream)
                op_violation(r, V_AUDIT, op, "audited as stale, yet it reached the upstream: ");
            if (oc == FC_OTHER || oc == FC_JUMP || oc == FC_REFUSED)
                op_violation(r, V_UNEXPECTED, op, "an answer this traffic never asks for: ");
        }
    }
}

static void check_hwm(report_t *r)
{
    fc_run_t *run = &r->e->run;
    for (unsigned long i = 0; i < run->n_hwm_bad && i < FC_HWM_BAD_MAX; i++) {
        const fc_hwm_bad_t *b = &run->hwm_bad[i];
        violation(r, V_HWM,
                  "order:%" PRIu32 " hwm went down from %" PRIu64 " to %" PRIu64 " at +%.3fs",
                  b->resource, b->before, b->after, (double)b->t / 1000.0);
    }
    if (run->n_hwm_bad > FC_HWM_BAD_MAX) r->n[V_HWM] += run->n_hwm_bad - FC_HWM_BAD_MAX;
    for (uint32_t res = 1; res <= r->e->o.resources; res++) {
        char path[64], body[512];
        snprintf(path, sizeof path, "/v1/resources/order:%" PRIu32, res);
        long st = fc_admin_get(run, path, body, sizeof body);
        const char *p = strstr(body, "\"highest\"");
        uint64_t v = 0;
        if (p) p += strlen("\"highest\"");
        while (p && (*p == ' ' || *p == ':')) p++;
        if (st != 200 || !p || !fc_parse_u64(p, strspn(p, "0123456789"), &v)) {
            violation(r, V_HWM, "order:%" PRIu32 ": admin API answered %ld %s", res, st, body);
            continue;
        }
        if (v != r->store_hwm[res])
            violation(r, V_HWM, "order:%" PRIu32 ": admin API says %" PRIu64 ", the store %" PRIu64,
                      res, v, r->store_hwm[res]);
        if (v < r->max_arrived[res])
            violation(r, V_HWM,
                      "order:%" PRIu32 ": final hwm %" PRIu64 " is below token %" PRIu64
                      " that reached the upstream",
                      res, v, r->max_arrived[res]);
        if (v < run->hwm_seen[res])
            violation(r, V_HWM,
                      "order:%" PRIu32 ": final hwm %" PRIu64 " is below %" PRIu64
                      " seen during the run",
                      res, v, run->hwm_seen[res]);
    }
}

static void print_counts(const report_t *r)
{
    const fc_env_t *e = r->e;
    const fc_run_t *run = &e->run;
    unsigned long by[FC_OUTCOME_COUNT] = {0}, total = 0, stale_writers = 0;
    for (unsigned ci = 0; ci <= e->o.clients; ci++)
        for (size_t i = 0; i < run->clients[ci].n; i++) {
            by[run->clients[ci].ops[i].outcome]++;
            stale_writers += run->clients[ci].ops[i].stale_writer;
            total++;
        }
    fprintf(stderr, "faultcheck: requests %lu (stale writers %lu):", total, stale_writers);
    for (int o = 0; o < FC_OUTCOME_COUNT; o++)
        fprintf(stderr, " %s %lu", fc_outcome_name((fc_outcome_t)o), by[o]);
    unsigned long faults = 0;
    fprintf(stderr, "\nfaultcheck: faults");
    for (int n = 0; n < FC_NEMESIS_COUNT; n++) {
        if (!e->o.nemesis[n]) continue;
        fprintf(stderr, " %s %lu", fc_nemesis_name((fc_nemesis_t)n), run->faults[n]);
        faults += run->faults[n];
    }
    fprintf(stderr, " (total %lu); gateway crashes %lu\n", faults, run->crashes);
    fprintf(stderr,
            "faultcheck: upstream writes arrived %lu, applied %lu; audit records %lu; hwm samples "
            "%lu; excused inversions %lu (in flight or quarantined across a gateway kill -9)\n",
            r->arrived, r->applied, r->audit_records, run->hwm_samples, r->excused);
}

unsigned long fc_check(fc_env_t *e)
{
    report_t r = {.e = e};
    r.max_arrived = calloc(e->o.resources + 1, sizeof *r.max_arrived);
    r.store_hwm = calloc(e->o.resources + 1, sizeof *r.store_hwm);
    cr_assert(r.max_arrived && r.store_hwm);
    if (e->run.crashes)
        violation(&r, V_UNEXPECTED, "the gateway exited %lu times by itself", e->run.crashes);
    bool healed = heal(&r);
    upstream_idle(&r);
    json_t *log = fgt_upstream_log(&e->up);
    char url[128];
    snprintf(url, sizeof url, "%s/_fg/count", e->up.url);
    fgt_resp_t resp = fgt_http("GET", url, NULL, NULL, 0);
    json_t *count = fgt_resp_json(&resp);
    fgt_resp_free(&resp);
    json_int_t writes = json_integer_value(json_object_get(count, "writes"));
    json_decref(count);
    cr_assert((size_t)writes == json_array_size(log),
              "the demo store's log holds %zu of %lld writes: pace the writers (--think-ms)",
              json_array_size(log), (long long)writes);
    check_upstream(&r, log);
    json_decref(log);
    if (e->o.store == FC_SQLITE) read_sqlite(&r);
    if (e->o.store == FC_REDIS) read_redis(&r);
    if (e->o.store == FC_POSTGRES) read_postgres(&r);
    check_ops(&r);
    if (healed) check_hwm(&r);
    print_counts(&r);
    unsigned long total = 0;
    for (int k = 0; k < V_KIND_COUNT; k++) {
        if (r.n[k]) fprintf(stderr, "faultcheck: %lu %s violations\n", r.n[k], vnames[k]);
        total += r.n[k];
    }
    if (r.n[V_ORDER]) {
        fprintf(stderr, "faultcheck: order violations by what the late write was told:");
        for (int o = 0; o <= FC_OUTCOME_COUNT; o++)
            if (r.late_by[o])
                fprintf(stderr, " %s %lu",
                        o < FC_OUTCOME_COUNT ? fc_outcome_name((fc_outcome_t)o) : "unknown",
                        r.late_by[o]);
        fprintf(stderr, "\n");
    }
    fprintf(stderr, "faultcheck: %s, store %s, seed %" PRIu64 ": %lu violations\n",
            total ? "FAIL" : "ok", fc_store_name(e->o.store), e->o.seed, total);
    free(r.max_arrived);
    free(r.store_hwm);
    return total;
}
