/*
 * test_store_contract.c -- one contract, run unchanged against every state
 * store (SQLite file, a real redis-server, a real Postgres): the same calls
 * must give the same answers, or the gateway would behave differently per
 * store.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness/harness.h"
#include "policy/error.h"
#include "storage/store.h"

typedef enum { K_SQLITE, K_REDIS, K_PG } kind_t;

typedef struct backing {
    kind_t kind;
    char url[512];
    fgt_redis_t redis;
    fgt_pg_t pg;
    bool private_pg;
} backing_t;

static void backing_start(backing_t *b, kind_t kind)
{
    memset(b, 0, sizeof *b);
    b->kind = kind;
    if (kind == K_SQLITE) {
        snprintf(b->url, sizeof b->url, "sqlite:%s/contract.db", fgt_tmpdir());
    } else if (kind == K_REDIS) {
        fgt_redis_start(&b->redis);
        snprintf(b->url, sizeof b->url, "%s", b->redis.url);
    } else {
        const char *shared = getenv("FG_TEST_PG_URL");
        if (shared && *shared) {
            /* a fresh database per test on the shared cluster */
            char db[64], sql[128];
            snprintf(db, sizeof db, "contract_%d_%ld", (int)getpid(), (long)random());
            snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
            free(fgt_pg_query(shared, sql));
            const char *slash = strrchr(shared, '/');
            snprintf(b->url, sizeof b->url, "%.*s/%s", (int)(slash - shared), shared, db);
        } else {
            fgt_pg_start(&b->pg);
            b->private_pg = true;
            snprintf(b->url, sizeof b->url, "%s", b->pg.url);
        }
    }
}

static void backing_stop(backing_t *b)
{
    if (b->kind == K_REDIS) fgt_redis_stop(&b->redis);
    if (b->private_pg) fgt_pg_stop(&b->pg);
}

static fg_store_t *open_store_t(const char *url, uint64_t timeout_ms)
{
    fg_store_t *s = NULL;
    char err[256] = "";
    fg_store_opts_t o = {.timeout_ms = timeout_ms, .backoff_min_ms = 50, .backoff_max_ms = 200};
    cr_assert_eq(fg_store_open(url, &o, &s, err, sizeof err), 0, "%s", err);
    return s;
}

static fg_store_t *open_store(const char *url)
{
    return open_store_t(url, 2000);
}

static fg_check_t mk(const char *res, uint64_t tok, bool strict)
{
    fg_check_t c;
    memset(&c, 0, sizeof c);
    c.resource = res;
    c.token = tok;
    c.strict = strict;
    c.audit.policy = "p";
    c.audit.method = "PUT";
    c.audit.path = "/x";
    c.audit.client = "127.0.0.1";
    c.audit.request_id = "rid";
    c.audit.reason = FG_REASON_STALE;
    return c;
}

static fg_check_result_t check1(fg_store_t *s, const char *res, uint64_t tok, bool strict,
                                uint64_t *highest)
{
    fg_check_t c = mk(res, tok, strict);
    cr_assert_eq(fg_store_check(s, &c, 1), 0, "check: %s", fg_store_errstr(s));
    if (highest) *highest = c.highest;
    return c.result;
}

static uint64_t hwm(fg_store_t *s, const char *res)
{
    uint64_t v = 0;
    cr_assert_eq(fg_store_get(s, res, &v), 0, "get %s: %s", res, fg_store_errstr(s));
    return v;
}

/* ---- the contract ---- */

static void c_compare(const char *url)
{
    fg_store_t *s = open_store(url);
    uint64_t v;
    cr_assert_eq(fg_store_get(s, "r", &v), FG_ENOTFOUND);
    cr_assert_eq(check1(s, "r", 10, false, NULL), FG_CHECK_ACCEPTED, "first token");
    cr_assert_eq(hwm(s, "r"), 10);
    cr_assert_eq(check1(s, "r", 10, false, NULL), FG_CHECK_ACCEPTED, "equal with >=");
    cr_assert_eq(check1(s, "r", 10, true, NULL), FG_CHECK_STALE, "equal with >");
    cr_assert_eq(check1(s, "r", 11, true, NULL), FG_CHECK_ACCEPTED, "higher with >");
    uint64_t h = 0;
    cr_assert_eq(check1(s, "r", 5, false, &h), FG_CHECK_STALE, "lower");
    cr_assert_eq(h, 11);
    cr_assert_eq(hwm(s, "r"), 11, "a stale check never moves the hwm");
    /* u64 exactness: doubles cannot tell these apart, signed 64-bit overflows */
    cr_assert_eq(check1(s, "big", 9007199254740993ULL, false, NULL), FG_CHECK_ACCEPTED);
    cr_assert_eq(check1(s, "big", 9007199254740992ULL, false, NULL), FG_CHECK_STALE);
    cr_assert_eq(check1(s, "big", 9223372036854775808ULL, false, NULL), FG_CHECK_ACCEPTED);
    cr_assert_eq(check1(s, "big", 9223372036854775807ULL, false, NULL), FG_CHECK_STALE);
    cr_assert_eq(check1(s, "big", UINT64_MAX, false, NULL), FG_CHECK_ACCEPTED);
    cr_assert_eq(check1(s, "big", UINT64_MAX - 1, false, NULL), FG_CHECK_STALE);
    cr_assert_eq(hwm(s, "big"), UINT64_MAX);
    /* decimal strings: 9 < 10 although "9" > "10" */
    cr_assert_eq(check1(s, "lex", 9, false, NULL), FG_CHECK_ACCEPTED);
    cr_assert_eq(check1(s, "lex", 10, false, NULL), FG_CHECK_ACCEPTED);
    cr_assert_eq(check1(s, "lex", 9, false, NULL), FG_CHECK_STALE);
    cr_assert_eq(check1(s, "zero", 0, false, NULL), FG_CHECK_ACCEPTED, "token 0 is a token");
    cr_assert_eq(check1(s, "zero", 0, true, NULL), FG_CHECK_STALE);
    fg_store_close(s);
}

static void c_resources_and_batches(const char *url)
{
    fg_store_t *s = open_store(url);
    char names[100][16];
    for (int i = 0; i < 100; i++) {
        snprintf(names[i], sizeof names[i], "res:%d", i);
        cr_assert_eq(check1(s, names[i], (uint64_t)i + 1, false, NULL), FG_CHECK_ACCEPTED);
    }
    for (int i = 0; i < 100; i++)
        cr_assert_eq(hwm(s, names[i]), (uint64_t)i + 1, "resources are independent");
    /* one batch, results in order, each atomic on its own */
    fg_check_t b[6] = {mk("bat", 5, false), mk("bat", 4, false),   mk("bat", 7, false),
                       mk("bat", 7, true),  mk("other", 1, false), mk("bat", 6, false)};
    cr_assert_eq(fg_store_check(s, b, 6), 0, "%s", fg_store_errstr(s));
    fg_check_result_t want[6] = {FG_CHECK_ACCEPTED, FG_CHECK_STALE,    FG_CHECK_ACCEPTED,
                                 FG_CHECK_STALE,    FG_CHECK_ACCEPTED, FG_CHECK_STALE};
    for (int i = 0; i < 6; i++) cr_assert_eq(b[i].result, want[i], "batch item %d", i);
    cr_assert_eq(b[1].highest, 5);
    cr_assert_eq(b[5].highest, 7);
    cr_assert(b[1].audit_id[0] && b[5].audit_id[0], "stale checks carry their audit id");
    cr_assert_eq(hwm(s, "bat"), 7);
    fg_store_close(s);
}

static void c_audit(const char *url)
{
    fg_store_t *s = open_store(url);
    int64_t t0 = fg_now_wall_ms();
    cr_assert_eq(check1(s, "a1", 10, false, NULL), FG_CHECK_ACCEPTED);
    fg_check_t c = mk("a1", 3, false);
    c.audit.request_id = "req-stale";
    cr_assert_eq(fg_store_check(s, &c, 1), 0);
    cr_assert_eq(c.result, FG_CHECK_STALE);
    fg_audit_t rec = {0};
    rec.policy = "p2";
    rec.resource = "a2";
    rec.method = "DELETE";
    rec.path = "/a/2";
    rec.client = "10.0.0.9";
    rec.request_id = "req-missing";
    rec.reason = FG_REASON_MISSING;
    cr_assert_eq(fg_store_audit_append(s, &rec), 0, "%s", fg_store_errstr(s));
    cr_assert(rec.id[0]);
    cr_assert_geq(rec.time_ms, t0 - 1000);
    rec.reason = FG_REASON_UNMATCHED;
    rec.resource = NULL;
    rec.request_id = "req-unmatched";
    cr_assert_eq(fg_store_audit_append(s, &rec), 0);

    fg_audit_list_t l;
    fg_audit_query_t q = {.since_ms = -1, .limit = 100};
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0, "%s", fg_store_errstr(s));
    cr_assert_eq(l.n, 3);
    cr_assert_str_eq(l.items[0].request_id, "req-unmatched", "newest first");
    cr_assert_str_eq(l.items[2].request_id, "req-stale");
    const fg_audit_t *st = &l.items[2];
    cr_assert_eq(st->reason, FG_REASON_STALE);
    cr_assert_str_eq(st->resource, "a1");
    cr_assert_str_eq(st->policy, "p");
    cr_assert_str_eq(st->method, "PUT");
    cr_assert_str_eq(st->path, "/x");
    cr_assert_str_eq(st->client, "127.0.0.1");
    cr_assert(st->has_token && st->token == 3);
    cr_assert(st->has_highest && st->highest == 10);
    cr_assert_str_eq(st->id, c.audit_id, "the check reported the id of its record");
    cr_assert_geq(st->time_ms, t0 - 1000);
    cr_assert_not(l.items[1].has_token, "a missing token is null");
    fg_audit_list_free(&l);

    q.resource = "a1";
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0);
    cr_assert_eq(l.n, 1);
    fg_audit_list_free(&l);
    q.resource = NULL;
    q.reason = FG_REASON_MISSING;
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0);
    cr_assert_eq(l.n, 1);
    cr_assert_str_eq(l.items[0].request_id, "req-missing");
    fg_audit_list_free(&l);
    q.reason = FG_REASON_NONE;
    q.limit = 2;
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0);
    cr_assert_eq(l.n, 2);
    fg_audit_list_free(&l);
    q.limit = 100;
    q.since_ms = fg_now_wall_ms() + 3600000;
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0);
    cr_assert_eq(l.n, 0, "since in the future: nothing");
    fg_audit_list_free(&l);
    q.since_ms = t0 - 1000;
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0);
    cr_assert_eq(l.n, 3);
    fg_audit_list_free(&l);

    /* report-only: a stale token is recorded as report-only and the hwm stays */
    fg_check_t r = mk("a1", 4, false);
    r.audit.reason = FG_REASON_REPORT_ONLY;
    cr_assert_eq(fg_store_check(s, &r, 1), 0);
    cr_assert_eq(r.result, FG_CHECK_STALE);
    cr_assert_eq(hwm(s, "a1"), 10);
    q = (fg_audit_query_t){.reason = FG_REASON_REPORT_ONLY, .since_ms = -1, .limit = 10};
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0);
    cr_assert_eq(l.n, 1);
    fg_audit_list_free(&l);
    fg_store_close(s);
}

typedef struct worker {
    const char *url;
    unsigned seed;
    int n;
    uint64_t accepted_max;
    int stale, bad_order, errors;
    char err[256];
} worker_t;

static void *race(void *arg)
{
    worker_t *w = arg;
    fg_store_t *s = open_store_t(w->url, 10000);
    for (int i = 0; i < w->n; i++) {
        uint64_t tok = (uint64_t)(rand_r(&w->seed) % 100000) + 1;
        fg_check_t c = mk("hot", tok, false);
        if (fg_store_check(s, &c, 1) != 0) {
            snprintf(w->err, sizeof w->err, "%s", fg_store_errstr(s));
            w->errors++;
            continue;
        }
        if (c.result == FG_CHECK_ACCEPTED) {
            if (c.had_highest && tok < c.highest)
                w->bad_order++; /* accepted below the hwm of its time */
            if (tok > w->accepted_max) w->accepted_max = tok;
        } else {
            if (tok >= c.highest) w->bad_order++; /* refused although not below */
            w->stale++;
        }
    }
    fg_store_close(s);
    return NULL;
}

static void c_concurrent(const char *url)
{
    enum { T = 8, N = 150 };
    worker_t w[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        w[i] = (worker_t){.url = url, .seed = (unsigned)i * 7919u + 1, .n = N};
        pthread_create(&th[i], NULL, race, &w[i]);
    }
    uint64_t max = 0;
    int stale = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(w[i].errors, 0, "worker %d: %d checks failed: %s", i, w[i].errors, w[i].err);
        cr_assert_eq(w[i].bad_order, 0, "worker %d saw a wrong answer", i);
        if (w[i].accepted_max > max) max = w[i].accepted_max;
        stale += w[i].stale;
    }
    fg_store_t *s = open_store(url);
    cr_assert_eq(hwm(s, "hot"), max, "final hwm is the largest accepted token");
    fg_audit_list_t l;
    fg_audit_query_t q = {.resource = "hot", .since_ms = -1, .limit = 1000};
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0);
    cr_assert_eq((int)l.n, stale < 1000 ? stale : 1000, "one audit record per stale check");
    fg_audit_list_free(&l);
    fg_store_close(s);
}

static void c_reopen(const char *url)
{
    fg_store_t *s = open_store(url);
    cr_assert_eq(check1(s, "keep", 77, false, NULL), FG_CHECK_ACCEPTED);
    fg_store_close(s);
    s = open_store(url);
    cr_assert_eq(hwm(s, "keep"), 77);
    cr_assert_eq(check1(s, "keep", 76, false, NULL), FG_CHECK_STALE);
    fg_store_close(s);
}

static void c_retention(const char *url)
{
    fg_store_t *s = open_store(url);
    fg_audit_t rec = {0};
    rec.reason = FG_REASON_MISSING;
    rec.resource = "ret";
    for (int i = 0; i < 30; i++) cr_assert_eq(fg_store_audit_append(s, &rec), 0);
    size_t del = 0;
    cr_assert_eq(fg_store_audit_purge(s, -1, 10, 1000, &del), 0, "%s", fg_store_errstr(s));
    cr_assert_eq(del, 20, "keep the newest 10");
    fg_audit_list_t l;
    fg_audit_query_t q = {.since_ms = -1, .limit = 100};
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0);
    cr_assert_eq(l.n, 10);
    fg_audit_list_free(&l);
    usleep(20 * 1000);
    cr_assert_eq(fg_store_audit_purge(s, fg_now_wall_ms(), 0, 4, &del), 0);
    cr_assert_eq(del, 4, "a purge deletes at most one batch");
    cr_assert_eq(fg_store_audit_purge(s, fg_now_wall_ms(), 0, 1000, &del), 0);
    cr_assert_eq(del, 6);
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0);
    cr_assert_eq(l.n, 0);
    fg_audit_list_free(&l);
    fg_store_close(s);
}

#define CONTRACT(kind, name, fn)                                                                   \
    Test(kind, name, .timeout = 120)                                                               \
    {                                                                                              \
        backing_t b;                                                                               \
        uint64_t t0 = fg_now_mono_ms();                                                            \
        backing_start(&b, k_##kind);                                                               \
        fn(b.url);                                                                                 \
        backing_stop(&b);                                                                          \
        fprintf(stderr, "contract %s.%s: %llu ms\n", #kind, #name,                                 \
                (unsigned long long)(fg_now_mono_ms() - t0));                                      \
    }

static const kind_t k_sqlite = K_SQLITE, k_redis = K_REDIS, k_postgres = K_PG;

#define ALL(kind)                                                                                  \
    CONTRACT(kind, compare, c_compare)                                                             \
    CONTRACT(kind, resources_and_batches, c_resources_and_batches)                                 \
    CONTRACT(kind, audit, c_audit)                                                                 \
    CONTRACT(kind, concurrent, c_concurrent)                                                       \
    CONTRACT(kind, reopen, c_reopen)                                                               \
    CONTRACT(kind, retention, c_retention)

ALL(sqlite)
ALL(redis)
ALL(postgres)

/* A store that is down answers FG_EUNAVAIL at once, and within the backoff
 * period without even trying to connect; it works again when it is back. */
Test(down, redis_backoff_and_back, .timeout = 60)
{
    fgt_redis_t r;
    fgt_redis_start(&r);
    fg_store_t *s = open_store(r.url);
    cr_assert_eq(check1(s, "d", 5, false, NULL), FG_CHECK_ACCEPTED);
    fgt_redis_stop(&r);
    fg_check_t c = mk("d", 6, false);
    cr_assert_eq(fg_store_check(s, &c, 1), FG_EUNAVAIL);
    uint64_t t0 = fg_now_mono_ms();
    for (int i = 0; i < 1000; i++) cr_assert_eq(fg_store_check(s, &c, 1), FG_EUNAVAIL);
    cr_assert_lt(fg_now_mono_ms() - t0, 100, "calls within the backoff must not reconnect");
    fgt_redis_restart(&r);
    int rc = FG_EUNAVAIL;
    for (int i = 0; i < 100 && rc; i++) {
        usleep(50 * 1000);
        rc = fg_store_check(s, &c, 1);
    }
    cr_assert_eq(rc, 0, "reconnects after the backoff");
    cr_assert_eq(hwm(s, "d"), 6, "the AOF kept the hwm across the restart");
    fg_store_close(s);
    fgt_redis_stop(&r);
}

Test(down, postgres_restart, .timeout = 120)
{
    fgt_pg_t pg;
    fgt_pg_start(&pg);
    fg_store_t *s = open_store(pg.url);
    cr_assert_eq(check1(s, "pgd", 50, false, NULL), FG_CHECK_ACCEPTED);
    fgt_pg_stop(&pg);
    fg_check_t c = mk("pgd", 49, false);
    cr_assert_eq(fg_store_check(s, &c, 1), FG_EUNAVAIL);
    fgt_pg_restart(&pg);
    int rc = FG_EUNAVAIL;
    for (int i = 0; i < 100 && rc; i++) {
        usleep(50 * 1000);
        rc = fg_store_check(s, &c, 1);
    }
    cr_assert_eq(rc, 0, "%s", fg_store_errstr(s));
    cr_assert_eq(c.result, FG_CHECK_STALE, "hwm 50 survived the Postgres restart");
    char *n = fgt_pg_query(pg.url, "SELECT count(*) FROM fencegate_audit WHERE resource = 'pgd' "
                                   "AND reason = 'stale' AND token = 49 AND highest = 50");
    cr_assert_str_eq(n, "1", "the refusal is visible with SQL");
    free(n);
    fg_store_close(s);
    fgt_pg_stop(&pg);
}
