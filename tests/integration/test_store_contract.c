/*
 * test_store_contract.c -- one contract, run unchanged against every state
 * store (SQLite file, a real redis-server, a real Postgres): the same calls
 * must give the same answers, or the gateway would behave differently per
 * store.
 */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
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

static fg_store_t *open_store_o(const char *url, fg_store_opts_t o)
{
    fg_store_t *s = NULL;
    char err[256] = "";
    cr_assert_eq(fg_store_open(url, &o, &s, err, sizeof err), 0, "%s", err);
    return s;
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

/* Attacker-controlled audit text reaches every store escaped, and comes back
 * as valid UTF-8 that JSON accepts; a long path is cut at 1024 bytes. */
static void c_dirty_text(const char *url)
{
    fg_store_t *s = open_store(url);
    cr_assert_eq(check1(s, "dirty", 10, false, NULL), FG_CHECK_ACCEPTED);
    static char path[8193];
    memcpy(path, "/p/", 3);
    memset(path + 3, 'a', sizeof path - 4);
    path[sizeof path - 1] = '\0';
    fg_check_t c = mk("dirty", 3, false);
    c.audit.method = "P\xffT";
    c.audit.path = path;
    c.audit.client = "1.2.3.4\r\n\x01x";
    cr_assert_eq(fg_store_check(s, &c, 1), 0, "a dirty record is stored: %s", fg_store_errstr(s));
    cr_assert_eq(c.result, FG_CHECK_STALE);
    cr_assert_str_eq(c.audit.method, "P\xffT", "the caller's strings are left as they were");
    fg_audit_t rec = {0};
    rec.reason = FG_REASON_MISSING;
    rec.resource = "dirty";
    rec.method = "\x80\xc3(\\";
    rec.path = "/caf\xc3\xa9/\x7f";
    rec.client = "\xed\xa0\x80"; /* a surrogate: not valid UTF-8 */
    cr_assert_eq(fg_store_audit_append(s, &rec), 0, "%s", fg_store_errstr(s));
    fg_audit_list_t l;
    fg_audit_query_t q = {.resource = "dirty", .since_ms = -1, .limit = 10};
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0, "%s", fg_store_errstr(s));
    cr_assert_eq(l.n, 2);
    cr_assert_str_eq(l.items[0].method, "\\x80\\xC3(\\\\");
    cr_assert_str_eq(l.items[0].path, "/caf\xc3\xa9/\\x7F", "valid UTF-8 stays as it is");
    cr_assert_str_eq(l.items[0].client, "\\xED\\xA0\\x80");
    cr_assert_not(l.items[0].path_truncated);
    const fg_audit_t *st = &l.items[1];
    cr_assert_str_eq(st->method, "P\\xFFT");
    cr_assert_str_eq(st->client, "1.2.3.4\\x0D\\x0A\\x01x");
    cr_assert_eq(strlen(st->path), FG_AUDIT_PATH_MAX, "path cut at 1024 bytes");
    cr_assert(strncmp(st->path, path, FG_AUDIT_PATH_MAX) == 0);
    cr_assert(st->path_truncated, "a cut path says so");
    cr_assert(st->has_token && st->token == 3 && st->highest == 10);
    for (size_t i = 0; i < l.n; i++) {
        const char *f[] = {l.items[i].method, l.items[i].path, l.items[i].client};
        for (int k = 0; k < 3; k++) {
            json_t *j = json_string(f[k]);
            cr_assert(j, "JSON accepts %s", f[k]);
            json_decref(j);
        }
    }
    fg_audit_list_free(&l);
    fg_store_close(s);
}

/* max_jump: refused when more than max_jump above an existing hwm, exact
 * over u64, audited as jump in the same step, hwm unchanged. */
static fg_check_result_t jump1(fg_store_t *s, const char *res, uint64_t tok, uint64_t max,
                               uint64_t *highest)
{
    fg_check_t c = mk(res, tok, false);
    c.has_max_jump = true;
    c.max_jump = max;
    cr_assert_eq(fg_store_check(s, &c, 1), 0, "check: %s", fg_store_errstr(s));
    if (highest) *highest = c.highest;
    if (c.result == FG_CHECK_JUMP) cr_assert(c.audit_id[0], "a jump carries its audit id");
    return c.result;
}

static void c_jump(const char *url)
{
    fg_store_t *s = open_store(url);
    uint64_t h = 0;
    cr_assert_eq(jump1(s, "j", 1000, 10, NULL), FG_CHECK_ACCEPTED, "no limit without hwm");
    cr_assert_eq(jump1(s, "j", 1010, 10, NULL), FG_CHECK_ACCEPTED, "exactly max_jump above");
    cr_assert_eq(jump1(s, "j", 1021, 10, &h), FG_CHECK_JUMP, "max_jump + 1 above");
    cr_assert_eq(h, 1010);
    cr_assert_eq(hwm(s, "j"), 1010, "a refused jump never moves the hwm");
    cr_assert_eq(jump1(s, "j", 5, 10, NULL), FG_CHECK_STALE, "stale stays stale");
    cr_assert_eq(check1(s, "j", 5000, false, NULL), FG_CHECK_ACCEPTED, "no limit: accepted");
    /* exact u64 arithmetic: doubles and signed 64-bit would get these wrong */
    cr_assert_eq(check1(s, "jb", 9007199254740993ULL, false, NULL), FG_CHECK_ACCEPTED);
    cr_assert_eq(jump1(s, "jb", 9007199254740995ULL, 1, NULL), FG_CHECK_JUMP);
    cr_assert_eq(jump1(s, "jb", 9007199254740994ULL, 1, NULL), FG_CHECK_ACCEPTED);
    cr_assert_eq(check1(s, "jm", 0, false, NULL), FG_CHECK_ACCEPTED);
    cr_assert_eq(jump1(s, "jm", UINT64_MAX, UINT64_MAX - 1, NULL), FG_CHECK_JUMP);
    cr_assert_eq(jump1(s, "jm", UINT64_MAX, UINT64_MAX, NULL), FG_CHECK_ACCEPTED);
    cr_assert_eq(check1(s, "jt", UINT64_MAX - 5, false, NULL), FG_CHECK_ACCEPTED);
    cr_assert_eq(jump1(s, "jt", UINT64_MAX, 5, NULL), FG_CHECK_ACCEPTED, "hwm + max at u64 max");
    cr_assert_eq(jump1(s, "jt", UINT64_MAX, 0, NULL), FG_CHECK_ACCEPTED, "equal is no jump");
    /* report-only records a jump as report-only */
    fg_check_t r = mk("j", 9000, false);
    r.has_max_jump = true;
    r.max_jump = 1;
    r.audit.reason = FG_REASON_REPORT_ONLY;
    cr_assert_eq(fg_store_check(s, &r, 1), 0);
    cr_assert_eq(r.result, FG_CHECK_JUMP);
    fg_audit_list_t l;
    fg_audit_query_t q = {.resource = "j", .reason = FG_REASON_JUMP, .since_ms = -1, .limit = 10};
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0, "%s", fg_store_errstr(s));
    cr_assert_eq(l.n, 1, "one audit record per refused jump");
    cr_assert(l.items[0].token == 1021 && l.items[0].highest == 1010);
    cr_assert_str_eq(l.items[0].request_id, "rid");
    fg_audit_list_free(&l);
    q.reason = FG_REASON_REPORT_ONLY;
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0);
    cr_assert_eq(l.n, 1);
    fg_audit_list_free(&l);
    q = (fg_audit_query_t){.resource = "jb", .reason = FG_REASON_JUMP, .since_ms = -1, .limit = 1};
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0);
    cr_assert(l.n == 1 && l.items[0].token == 9007199254740995ULL &&
              l.items[0].highest == 9007199254740993ULL);
    fg_audit_list_free(&l);
    fg_store_close(s);
}

/* Cursor paging lists every matching record exactly once, newest first;
 * after_id lists what is newer than an id, oldest first. */
static void c_paging(const char *url)
{
    fg_store_t *s = open_store(url);
    char ids[25][FG_AUDIT_ID_LEN];
    for (int i = 0; i < 25; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "r%d", i);
        fg_audit_t rec = {0};
        rec.reason = FG_REASON_MISSING;
        rec.resource = i % 2 ? "pg1" : "pg2";
        rec.request_id = rid;
        cr_assert_eq(fg_store_audit_append(s, &rec), 0, "%s", fg_store_errstr(s));
        memcpy(ids[i], rec.id, sizeof ids[i]);
    }
    for (int pass = 0; pass < 2; pass++) {
        const char *res = pass ? "pg1" : NULL;
        int want_total = pass ? 12 : 25, seen = 0, pages = 0;
        int expect = 24 - (pass ? 1 : 0); /* the newest matching record's number */
        char cursor[FG_AUDIT_ID_LEN] = "";
        do {
            fg_audit_query_t q = {.resource = res, .since_ms = -1, .limit = pass ? 5 : 10};
            if (cursor[0]) q.before_id = cursor;
            fg_audit_list_t l;
            cr_assert_eq(fg_store_audit_query(s, &q, &l), 0, "%s", fg_store_errstr(s));
            for (size_t i = 0; i < l.n; i++, seen++, expect -= pass ? 2 : 1) {
                char rid[16];
                snprintf(rid, sizeof rid, "r%d", expect);
                cr_assert_str_eq(l.items[i].request_id, rid, "page %d item %zu", pages, i);
            }
            snprintf(cursor, sizeof cursor, "%s", l.next);
            if (seen < want_total) cr_assert(cursor[0], "a page before the last has next");
            fg_audit_list_free(&l);
            pages++;
        } while (cursor[0] && pages < 20);
        cr_assert_eq(seen, want_total, "every record exactly once");
        cr_assert_eq(pages, pass ? 3 : 3);
    }
    fg_audit_query_t q = {.since_ms = -1, .limit = 100, .after_id = ids[19]};
    fg_audit_list_t l;
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0, "%s", fg_store_errstr(s));
    cr_assert_eq(l.n, 5, "records newer than the 20th");
    for (size_t i = 0; i < l.n; i++) cr_assert_str_eq(l.items[i].id, ids[20 + i], "oldest first");
    cr_assert_eq(l.next[0], '\0');
    fg_audit_list_free(&l);
    q.after_id = ids[24];
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0);
    cr_assert_eq(l.n, 0, "nothing after the newest");
    fg_audit_list_free(&l);
    q.after_id = "not-an-id";
    cr_assert_eq(fg_store_audit_query(s, &q, &l), FG_EINVAL);
    q.after_id = NULL;
    q.before_id = "x";
    cr_assert_eq(fg_store_audit_query(s, &q, &l), FG_EINVAL);
    cr_assert_eq(fg_store_ping(s), 0, "a bad cursor is not an outage");
    fg_store_close(s);
}

/* Raise never lowers; reset sets any value and is audited in the same step. */
static void c_set_hwm(const char *url)
{
    fg_store_t *s = open_store(url);
    fg_set_hwm_t op = {.resource = "sh", .token = 50, .mode = FG_SET_RAISE};
    cr_assert_eq(fg_store_set_hwm(s, &op), 0, "%s", fg_store_errstr(s));
    cr_assert(!op.had_highest && op.now == 50);
    op.token = 40;
    cr_assert_eq(fg_store_set_hwm(s, &op), 0);
    cr_assert(op.had_highest && op.highest == 50 && op.now == 50, "raise never lowers");
    op.token = 60;
    cr_assert_eq(fg_store_set_hwm(s, &op), 0);
    cr_assert_eq(op.now, 60);
    cr_assert_eq(hwm(s, "sh"), 60);
    fg_audit_list_t l;
    fg_audit_query_t q = {.resource = "sh", .since_ms = -1, .limit = 10};
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0);
    cr_assert_eq(l.n, 0, "a raise is not audited");
    fg_audit_list_free(&l);
    fg_set_hwm_t rs = {.resource = "sh", .token = 5, .mode = FG_SET_RESET};
    rs.audit.method = "POST";
    rs.audit.path = "/v1/resources/sh/reset";
    rs.audit.client = "127.0.0.9";
    rs.audit.request_id = "op-1";
    rs.audit.detail = "poisoned by a bad client\x01";
    cr_assert_eq(fg_store_set_hwm(s, &rs), 0, "%s", fg_store_errstr(s));
    cr_assert(rs.had_highest && rs.highest == 60 && rs.now == 5 && rs.audit_id[0]);
    cr_assert_eq(hwm(s, "sh"), 5, "reset lowers");
    cr_assert_eq(check1(s, "sh", 6, false, NULL), FG_CHECK_ACCEPTED);
    q.reason = FG_REASON_RESET;
    cr_assert_eq(fg_store_audit_query(s, &q, &l), 0, "%s", fg_store_errstr(s));
    cr_assert_eq(l.n, 1);
    const fg_audit_t *a = &l.items[0];
    cr_assert_str_eq(a->id, rs.audit_id);
    cr_assert(a->has_token && a->token == 5 && a->has_highest && a->highest == 60);
    cr_assert_str_eq(a->detail, "poisoned by a bad client\\x01");
    cr_assert_str_eq(a->method, "POST");
    cr_assert_str_eq(a->path, "/v1/resources/sh/reset");
    cr_assert_str_eq(a->client, "127.0.0.9");
    cr_assert_str_eq(a->request_id, "op-1");
    fg_audit_list_free(&l);
    rs.resource = "sh-new";
    rs.token = UINT64_MAX;
    cr_assert_eq(fg_store_set_hwm(s, &rs), 0);
    cr_assert(!rs.had_highest && rs.now == UINT64_MAX);
    cr_assert_eq(hwm(s, "sh-new"), UINT64_MAX);
    fg_store_close(s);
}

/* The durability settings are read at connect; the test stores are durable. */
static void c_durability(const char *url)
{
    fg_store_t *s = open_store(url);
    fg_durability_t d;
    cr_assert_eq(fg_store_durability(s, &d), 0, "%s", fg_store_errstr(s));
    cr_assert_geq(d.n, 2);
    cr_assert(d.durable, "%s=%s %s=%s: %s", d.setting[0].name, d.setting[0].value,
              d.setting[1].name, d.setting[1].value, d.advice);
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
    CONTRACT(kind, retention, c_retention)                                                         \
    CONTRACT(kind, dirty_text, c_dirty_text)                                                       \
    CONTRACT(kind, jump, c_jump)                                                                   \
    CONTRACT(kind, paging, c_paging)                                                               \
    CONTRACT(kind, set_hwm, c_set_hwm)                                                             \
    CONTRACT(kind, durability, c_durability)

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

/* ---- a store that comes back, hangs, trickles or garbles ---- */

/* Item "store is back": handles of one group in backoff reconnect as soon as
 * any of them sees the store answer, and an idle connection the server closed
 * is replaced before use, so no call fails just because its handle has not
 * retried yet. Still bounded: no connect attempt inside a backoff period
 * unless a new epoch began. */
static void back_epoch(const char *url, void (*stop)(void *), void (*start)(void *), void *arg)
{
    fg_store_group_t *g = fg_store_group_new();
    fg_store_opts_t fast = {
        .timeout_ms = 1000, .backoff_min_ms = 20, .backoff_max_ms = 50, .group = g};
    fg_store_opts_t slow = fast;
    slow.backoff_min_ms = slow.backoff_max_ms = 60000; /* would wait a minute alone */
    fg_store_t *probe = open_store_o(url, fast), *h[3], *idle = open_store_o(url, slow);
    for (int i = 0; i < 3; i++) h[i] = open_store_o(url, slow);
    cr_assert_eq(fg_store_ping(idle), 0, "%s", fg_store_errstr(idle)); /* connected, then idle */
    stop(arg);
    for (int i = 0; i < 3; i++) cr_assert_eq(fg_store_ping(h[i]), FG_EUNAVAIL);
    cr_assert_eq(fg_store_ping(probe), FG_EUNAVAIL);
    uint64_t t0 = fg_now_mono_ms();
    for (int i = 0; i < 300; i++) cr_assert_eq(fg_store_ping(h[i % 3]), FG_EUNAVAIL);
    cr_assert_lt(fg_now_mono_ms() - t0, 200, "no connect attempt within the backoff");
    start(arg);
    int rc = FG_EUNAVAIL;
    for (uint64_t end = fg_now_mono_ms() + 20000; rc && fg_now_mono_ms() < end;) {
        rc = fg_store_ping(probe);
        if (rc) usleep(20 * 1000);
    }
    cr_assert_eq(rc, 0, "the probe reconnects: %s", fg_store_errstr(probe));
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 3; i++) {
            char res[16];
            snprintf(res, sizeof res, "back%d", i);
            fg_check_t c = mk(res, (uint64_t)round + 1, false);
            cr_assert_eq(fg_store_check(h[i], &c, 1), 0, "handle %d in backoff, round %d: %s", i,
                         round, fg_store_errstr(h[i]));
            cr_assert_eq(c.result, FG_CHECK_ACCEPTED);
        }
    fg_check_t c = mk("back-idle", 1, false);
    cr_assert_eq(fg_store_check(idle, &c, 1), 0, "idle connection closed by the server: %s",
                 fg_store_errstr(idle));
    fg_store_close(probe);
    fg_store_close(idle);
    for (int i = 0; i < 3; i++) fg_store_close(h[i]);
    fg_store_group_free(g);
}

static void redis_stop_cb(void *a)
{
    fgt_redis_stop(a);
}
static void redis_start_cb(void *a)
{
    fgt_redis_restart(a);
}
static void pg_stop_cb(void *a)
{
    fgt_pg_stop(a);
}
static void pg_start_cb(void *a)
{
    fgt_pg_restart(a);
}

Test(down, redis_back_epoch, .timeout = 60)
{
    fgt_redis_t r;
    fgt_redis_start(&r);
    back_epoch(r.url, redis_stop_cb, redis_start_cb, &r);
    fgt_redis_stop(&r);
}

Test(down, postgres_back_epoch, .timeout = 120)
{
    fgt_pg_t pg;
    fgt_pg_start(&pg);
    back_epoch(pg.url, pg_stop_cb, pg_start_cb, &pg);
    fgt_pg_stop(&pg);
}

/* One deadline per call: a server that trickles its answer one byte per
 * 200 ms is unavailable after state_timeout, not after one timeout per byte. */
static void trickle(bool redis, int port)
{
    fgt_proxy_t *px = fgt_proxy_start(port);
    char url[256];
    if (redis)
        snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", fgt_proxy_port(px));
    else
        snprintf(url, sizeof url, "postgres://postgres@127.0.0.1:%d/postgres", fgt_proxy_port(px));
    fg_store_opts_t o = {.timeout_ms = 1000, .backoff_min_ms = 1, .backoff_max_ms = 1};
    fg_store_t *s = open_store_o(url, o);
    cr_assert_eq(check1(s, "tr", 1, false, NULL), FG_CHECK_ACCEPTED);
    fgt_proxy_trickle(px, 200);
    uint64_t worst = 0;
    for (int i = 0; i < 5; i++) {
        fg_check_t c = mk("tr", 2 + (uint64_t)i, false);
        uint64_t t0 = fg_now_mono_ms();
        int rc = fg_store_check(s, &c, 1);
        uint64_t took = fg_now_mono_ms() - t0;
        if (took > worst) worst = took;
        cr_assert_eq(rc, FG_EUNAVAIL, "a trickling store is unavailable");
        usleep(5 * 1000); /* past the 1 ms backoff: the next call reconnects */
    }
    fprintf(stderr, "trickle %s: worst call %llu ms with state_timeout 1000 ms\n", url,
            (unsigned long long)worst);
    cr_assert_lt(worst, 1300, "one deadline covers the whole call, connect included");
    fgt_proxy_trickle(px, 0);
    fg_store_close(s);
    fgt_proxy_stop(px);
}

Test(down, redis_trickle, .timeout = 60)
{
    fgt_redis_t r;
    fgt_redis_start(&r);
    trickle(true, r.port);
    fgt_redis_stop(&r);
}

Test(down, postgres_trickle, .timeout = 120)
{
    fgt_pg_t pg;
    fgt_pg_start(&pg);
    trickle(false, pg.port);
    fgt_pg_stop(&pg);
}

/* A reply of the wrong type drops the connection: the next batch must never
 * read the replies of the one before (that applied results to the wrong
 * resources). */
Test(down, redis_reply_mismatch_drops_connection, .timeout = 60)
{
    fgt_redis_t r;
    fgt_redis_start(&r);
    fgt_proxy_t *px = fgt_proxy_start(r.port);
    char url[128];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", fgt_proxy_port(px));
    fg_store_t *s = open_store(url);
    cr_assert_eq(check1(s, "mx", 10, false, NULL), FG_CHECK_ACCEPTED);
    fgt_proxy_inject(px, "+OK\r\n", 5); /* one reply too many, of the wrong type */
    fg_check_t a = mk("mx", 3, false);
    int rc = fg_store_check(s, &a, 1);
    cr_assert(rc != 0, "a status reply to EVALSHA is an error");
    cr_assert_neq(rc, FG_EUNAVAIL, "the store answered: no backoff");
    fg_check_t b[2] = {mk("my", 1, false), mk("mz", 7, false)};
    cr_assert_eq(fg_store_check(s, b, 2), 0, "%s", fg_store_errstr(s));
    cr_assert_eq(b[0].result, FG_CHECK_ACCEPTED, "my is new: not the stale reply of mx");
    cr_assert_not(b[0].had_highest);
    cr_assert_eq(b[1].result, FG_CHECK_ACCEPTED);
    cr_assert_eq(hwm(s, "my"), 1);
    cr_assert_eq(hwm(s, "mx"), 10);
    fg_store_close(s);
    fgt_proxy_stop(px);
    fgt_redis_stop(&r);
}

/* A data error is reported as such and never starts a backoff: the next call
 * on the same handle works at once. */
static void data_error_then_ok(const char *url, const char *bad_resource, int want)
{
    fg_store_opts_t o = {.timeout_ms = 2000, .backoff_min_ms = 60000, .backoff_max_ms = 60000};
    fg_store_t *s = open_store_o(url, o);
    fg_check_t c = mk(bad_resource, 5, false);
    int rc = fg_store_check(s, &c, 1);
    cr_assert_eq(rc, want, "data error: %d (%s)", rc, fg_store_errstr(s));
    fg_check_t ok = mk("good", 1, false);
    cr_assert_eq(fg_store_check(s, &ok, 1), 0, "no backoff after a data error: %s",
                 fg_store_errstr(s));
    fg_store_close(s);
}

Test(data_error, redis_bad_hwm, .timeout = 60)
{
    fgt_redis_t r;
    fgt_redis_start(&r);
    const char *argv[] = {"SET", "fencegate:hwm:bad", "not-a-token", NULL};
    free(fgt_redis_cmd(&r, argv));
    data_error_then_ok(r.url, "bad", FG_EDATA);
    const char *argv2[] = {"HSET", "fencegate:hwm:hash", "a", "b", NULL};
    free(fgt_redis_cmd(&r, argv2));
    data_error_then_ok(r.url, "hash", FG_EDATA); /* WRONGTYPE inside the script */
    fgt_redis_stop(&r);
}

Test(data_error, postgres_invalid_utf8_resource, .timeout = 120)
{
    backing_t b;
    backing_start(&b, K_PG);
    data_error_then_ok(b.url, "r\xff", FG_EDATA);
    backing_stop(&b);
}

Test(data_error, sqlite_bad_hwm, .timeout = 60)
{
    backing_t b;
    backing_start(&b, K_SQLITE);
    fg_store_t *s = open_store(b.url);
    cr_assert_eq(fg_store_ping(s), 0);
    fg_store_close(s);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(b.url + 7, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "INSERT INTO hwm VALUES('bad', 'x1')", NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(db);
    data_error_then_ok(b.url, "bad", FG_EDATA);
    backing_stop(&b);
}

/* Redis trims the stream at audit_max approximately, never below; 0 = no cap. */
Test(audit_cap, redis_maxlen, .timeout = 60)
{
    fgt_redis_t r;
    fgt_redis_start(&r);
    fg_store_opts_t o = {.timeout_ms = 2000, .audit_max = 50};
    fg_store_t *s = open_store_o(r.url, o);
    fg_audit_t rec = {0};
    rec.reason = FG_REASON_MISSING;
    for (int i = 0; i < 500; i++) cr_assert_eq(fg_store_audit_append(s, &rec), 0);
    const char *xlen[] = {"XLEN", "fencegate:audit", NULL};
    char *n = fgt_redis_cmd(&r, xlen);
    long len = strtol(n, NULL, 10);
    free(n);
    cr_assert(len >= 50 && len < 500, "trimmed near the cap, never below: %ld", len);
    fg_store_close(s);
    o.audit_max = 0;
    s = open_store_o(r.url, o);
    for (int i = 0; i < 300; i++) cr_assert_eq(fg_store_audit_append(s, &rec), 0);
    n = fgt_redis_cmd(&r, xlen);
    cr_assert_eq(strtol(n, NULL, 10), len + 300, "audit_max = 0: no cap");
    free(n);
    fg_store_close(s);
    fgt_redis_stop(&r);
}
