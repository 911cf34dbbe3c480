/*
 * postgres.c -- the Postgres state store (`state = postgres://...`, any libpq
 * connection URI).
 *
 * A fence check is one call of the PL/pgSQL function fencegate_check(): it
 * creates or locks the resource's hwm row, compares, advances, or inserts the
 * audit record of a stale write, all in one statement. A batch of checks is
 * one libpq pipeline ending in one Sync: one round trip, one transaction, one
 * commit (fsync) for the batch. Tokens are numeric(20,0): exact over the whole
 * u64 range, never a float or a signed bigint. Every statement is prepared;
 * request data only ever travels as parameters.
 *
 * Every call is asynchronous underneath and waits at most opts.timeout_ms, so
 * a hung server is reported as unavailable instead of blocking a thread.
 *
 * Schema: fencegate_meta (schema_version), fencegate_hwm, fencegate_audit
 * (with indexes for the audit queries). Created on first connect under an
 * advisory lock; a newer schema version than this build knows is refused, and
 * nothing is ever dropped.
 */
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/error.h"
#include "policy/token.h"
#include "storage/store_int.h"

#define SCHEMA_VERSION 1

static const char schema_sql[] =
    "BEGIN;"
    "SELECT pg_advisory_xact_lock(4242424242);"
    "CREATE TABLE IF NOT EXISTS fencegate_meta(key text PRIMARY KEY, value text NOT NULL);"
    "INSERT INTO fencegate_meta VALUES ('schema_version', '1') ON CONFLICT DO NOTHING;"
    "CREATE TABLE IF NOT EXISTS fencegate_hwm("
    "  resource text PRIMARY KEY,"
    "  token numeric(20,0) NOT NULL CHECK (token >= 0 AND token <= 18446744073709551615),"
    "  updated timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE IF NOT EXISTS fencegate_audit("
    "  id bigserial PRIMARY KEY,"
    "  time timestamptz NOT NULL DEFAULT clock_timestamp(),"
    "  policy text, resource text, method text, path text, client text,"
    "  token numeric(20,0), highest numeric(20,0), reason text NOT NULL, request_id text);"
    "CREATE INDEX IF NOT EXISTS fencegate_audit_by_resource ON fencegate_audit(resource, id);"
    "CREATE INDEX IF NOT EXISTS fencegate_audit_by_reason ON fencegate_audit(reason, id);"
    "CREATE INDEX IF NOT EXISTS fencegate_audit_by_time ON fencegate_audit(time);"
    "CREATE OR REPLACE FUNCTION fencegate_check(p_resource text, p_token numeric,"
    "  p_strict boolean, p_policy text, p_method text, p_path text, p_client text,"
    "  p_reason text, p_request_id text)"
    " RETURNS TABLE(accepted boolean, had boolean, highest text, audit_id bigint,"
    "  audit_ms bigint) LANGUAGE plpgsql AS $fn$\n"
    "DECLARE cur numeric; aid bigint; ams bigint;\n"
    "BEGIN\n"
    "  INSERT INTO fencegate_hwm(resource, token) VALUES (p_resource, p_token)\n"
    "    ON CONFLICT (resource) DO NOTHING;\n"
    "  IF FOUND THEN\n"
    "    RETURN QUERY SELECT true, false, NULL::text, NULL::bigint, NULL::bigint; RETURN;\n"
    "  END IF;\n"
    "  SELECT h.token INTO cur FROM fencegate_hwm h WHERE h.resource = p_resource FOR UPDATE;\n"
    "  IF (p_strict AND p_token > cur) OR (NOT p_strict AND p_token >= cur) THEN\n"
    "    IF p_token > cur THEN\n"
    "      UPDATE fencegate_hwm SET token = p_token, updated = now()\n"
    "        WHERE resource = p_resource;\n"
    "    END IF;\n"
    "    RETURN QUERY SELECT true, true, cur::text, NULL::bigint, NULL::bigint; RETURN;\n"
    "  END IF;\n"
    "  INSERT INTO fencegate_audit(policy, resource, method, path, client, token, highest,\n"
    "      reason, request_id)\n"
    "    VALUES (p_policy, p_resource, p_method, p_path, p_client, p_token, cur, p_reason,\n"
    "      p_request_id)\n"
    "    RETURNING id, (extract(epoch from time) * 1000)::bigint INTO aid, ams;\n"
    "  RETURN QUERY SELECT false, true, cur::text, aid, ams;\n"
    "END $fn$;"
    "COMMIT;";

typedef struct pg {
    struct fg_store base;
    PGconn *c;
} pg_t;

static int pg_fail(pg_t *p, const char *what)
{
    const char *m = p->c ? PQerrorMessage(p->c) : "no connection";
    size_t n = strlen(m);
    while (n && (m[n - 1] == '\n' || m[n - 1] == ' ')) n--;
    fg_store_seterr(&p->base, 0, "postgres %s: %.*s", what, (int)n, m);
    return FG_EUNAVAIL;
}

static int pg_create(const char *url, const fg_store_opts_t *o, fg_store_t **out, char *err,
                     size_t err_len)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (!opts) {
        snprintf(err, err_len, "bad postgres URL: %s", perr ? perr : "parse error");
        PQfreemem(perr);
        return FG_EINVAL;
    }
    PQconninfoFree(opts);
    pg_t *p = (pg_t *)fg_store_alloc(sizeof *p, &fg_store_postgres, url, o);
    if (!p) return FG_ENOMEM;
    *out = &p->base;
    return 0;
}

static void pg_disconnect(fg_store_t *s)
{
    pg_t *p = (pg_t *)s;
    if (p->c) PQfinish(p->c);
    p->c = NULL;
}

static void pg_destroy(fg_store_t *s)
{
    pg_disconnect(s);
    fg_store_free_base(s);
}

/* Wait until the socket is ready for `events`, at most until `deadline`. */
static int wait_sock(pg_t *p, short events, uint64_t deadline)
{
    uint64_t now = fg_now_mono_ms();
    if (now >= deadline)
        return fg_store_seterr(&p->base, FG_EUNAVAIL, "postgres: no answer within %llu ms",
                               (unsigned long long)p->base.opts.timeout_ms);
    struct pollfd pfd = {PQsocket(p->c), events, 0};
    int rc = poll(&pfd, 1, (int)(deadline - now));
    if (rc == 0)
        return fg_store_seterr(&p->base, FG_EUNAVAIL, "postgres: no answer within %llu ms",
                               (unsigned long long)p->base.opts.timeout_ms);
    return rc < 0 ? pg_fail(p, "poll") : 0;
}

/* Flush what libpq has buffered, within the deadline. */
static int flush(pg_t *p, uint64_t deadline)
{
    for (;;) {
        int f = PQflush(p->c);
        if (f == 0) return 0;
        if (f < 0) return pg_fail(p, "send");
        int rc = wait_sock(p, POLLOUT | POLLIN, deadline);
        if (rc) return rc;
        if (!PQconsumeInput(p->c)) return pg_fail(p, "receive");
    }
}

/* Next result (NULL at the end of one query's results), within the deadline.
 * *err is set on a connection failure. */
static PGresult *next_result(pg_t *p, uint64_t deadline, int *err)
{
    *err = 0;
    while (PQisBusy(p->c)) {
        int rc = wait_sock(p, POLLIN, deadline);
        if (rc) {
            *err = rc;
            return NULL;
        }
        if (!PQconsumeInput(p->c)) {
            *err = pg_fail(p, "receive");
            return NULL;
        }
    }
    return PQgetResult(p->c);
}

/* Run one prepared or text statement and return its single result. */
static PGresult *run(pg_t *p, const char *stmt, const char *sql, int n, const char *const *vals,
                     int *err)
{
    uint64_t deadline = fg_now_mono_ms() + p->base.opts.timeout_ms;
    int ok = stmt ? PQsendQueryPrepared(p->c, stmt, n, vals, NULL, NULL, 0)
                  : PQsendQueryParams(p->c, sql, n, NULL, vals, NULL, NULL, 0);
    if (!ok) {
        *err = pg_fail(p, "send");
        return NULL;
    }
    *err = flush(p, deadline);
    if (*err) return NULL;
    PGresult *res = NULL, *r;
    while ((r = next_result(p, deadline, err))) {
        if (res) PQclear(res);
        res = r;
    }
    if (*err) {
        PQclear(res);
        return NULL;
    }
    return res;
}

static bool res_ok(PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
}

static int bad_result(pg_t *p, PGresult *r, const char *what)
{
    const char *m = r ? PQresultErrorMessage(r) : "";
    size_t n = strlen(m);
    while (n && m[n - 1] == '\n') n--;
    fg_store_seterr(&p->base, 0, "postgres %s: %.*s", what, (int)n, m);
    PQclear(r);
    return FG_EUNAVAIL;
}

static const struct {
    const char *name, *sql;
    int n;
} prepared[] = {
    {"fg_check",
     "SELECT accepted, had, highest, audit_id, audit_ms FROM "
     "fencegate_check($1, $2::numeric, $3::boolean, $4, $5, $6, $7, $8, $9)",
     9},
    {"fg_get", "SELECT token::text FROM fencegate_hwm WHERE resource = $1", 1},
    {"fg_audit",
     "INSERT INTO fencegate_audit(policy, resource, method, path, client, token, "
     "highest, reason, request_id) VALUES ($1, $2, $3, $4, $5, $6::numeric, "
     "$7::numeric, $8, $9) RETURNING id, (extract(epoch from time) * 1000)::bigint",
     9},
    {"fg_ping", "SELECT 1", 0},
    {"fg_purge_age",
     "DELETE FROM fencegate_audit WHERE id IN (SELECT id FROM fencegate_audit WHERE time < "
     "to_timestamp($1::bigint / 1000.0) ORDER BY id LIMIT $2::int)",
     2},
    {"fg_purge_count",
     "DELETE FROM fencegate_audit WHERE id IN (SELECT id FROM fencegate_audit WHERE id <= "
     "(SELECT id FROM fencegate_audit ORDER BY id DESC OFFSET $1::bigint LIMIT 1) ORDER BY id "
     "LIMIT $2::int)",
     2},
};

static void quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

static int pg_connect(fg_store_t *s)
{
    pg_t *p = (pg_t *)s;
    char ct[16];
    unsigned secs = (unsigned)((s->opts.timeout_ms + 999) / 1000);
    snprintf(ct, sizeof ct, "%u", secs < 2 ? 2 : secs);
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {s->url, ct, "fencegate", NULL};
    p->c = PQconnectdbParams(keys, vals, 1);
    if (!p->c || PQstatus(p->c) != CONNECTION_OK) {
        pg_fail(p, "connect");
        pg_disconnect(s);
        return FG_EUNAVAIL;
    }
    PQsetNoticeProcessor(p->c, quiet, NULL); /* "already exists, skipping" is not news */
    PGresult *r = PQexec(p->c, "SELECT value FROM fencegate_meta WHERE key = 'schema_version'");
    int version = 0;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        version = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    if (version > SCHEMA_VERSION) {
        fg_store_seterr(s, 0, "postgres: schema version %d is newer than this fencegate (%d)",
                        version, SCHEMA_VERSION);
        pg_disconnect(s);
        return FG_EUNAVAIL;
    }
    if (version < SCHEMA_VERSION) {
        r = PQexec(p->c, schema_sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            bad_result(p, r, "create schema");
            PQclear(PQexec(p->c, "ROLLBACK"));
            pg_disconnect(s);
            return FG_EUNAVAIL;
        }
        PQclear(r);
    }
    for (size_t i = 0; i < sizeof prepared / sizeof *prepared; i++) {
        r = PQprepare(p->c, prepared[i].name, prepared[i].sql, prepared[i].n, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            bad_result(p, r, "prepare");
            pg_disconnect(s);
            return FG_EUNAVAIL;
        }
        PQclear(r);
    }
    if (PQsetnonblocking(p->c, 1) != 0) {
        pg_fail(p, "nonblocking");
        pg_disconnect(s);
        return FG_EUNAVAIL;
    }
    return 0;
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

static int pg_check(fg_store_t *s, fg_check_t *checks, size_t n)
{
    pg_t *p = (pg_t *)s;
    uint64_t deadline = fg_now_mono_ms() + s->opts.timeout_ms;
    if (n > FG_STORE_BATCH_MAX)
        return fg_store_seterr(s, FG_EINVAL, "postgres: batch of %zu checks is too large", n);
    if (!PQenterPipelineMode(p->c)) return pg_fail(p, "pipeline");
    char toks[FG_STORE_BATCH_MAX][FG_TOKEN_STRLEN];
    for (size_t i = 0; i < n; i++) {
        fg_check_t *c = &checks[i];
        fg_token_format(c->token, toks[i]);
        fg_reason_t reason = c->audit.reason ? c->audit.reason : FG_REASON_STALE;
        const char *vals[9] = {
            c->resource,         toks[i],           c->strict ? "t" : "f", c->audit.policy,
            nz(c->audit.method), nz(c->audit.path), c->audit.client,       fg_reason_name(reason),
            c->audit.request_id};
        if (!PQsendQueryPrepared(p->c, "fg_check", 9, vals, NULL, NULL, 0)) {
            pg_fail(p, "send check");
            return FG_EUNAVAIL; /* the wrapper drops the connection, pipeline and all */
        }
    }
    if (!PQpipelineSync(p->c)) return pg_fail(p, "sync");
    int rc = flush(p, deadline);
    if (rc) return rc;
    int first_err = 0;
    for (size_t i = 0; i < n; i++) {
        int err;
        PGresult *r = next_result(p, deadline, &err);
        if (err) return err;
        if (!r || !res_ok(r) || PQntuples(r) != 1) {
            if (!first_err)
                first_err = bad_result(p, r, "check");
            else
                PQclear(r);
        } else {
            fg_check_t *c = &checks[i];
            c->result = PQgetvalue(r, 0, 0)[0] == 't' ? FG_CHECK_ACCEPTED : FG_CHECK_STALE;
            c->had_highest = PQgetvalue(r, 0, 1)[0] == 't';
            c->highest = 0;
            if (c->had_highest) {
                const char *h = PQgetvalue(r, 0, 2);
                fg_token_parse(h, strlen(h), &c->highest);
            }
            if (c->result == FG_CHECK_STALE) {
                snprintf(c->audit_id, sizeof c->audit_id, "%s", PQgetvalue(r, 0, 3));
                c->audit.time_ms = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
            }
            PQclear(r);
        }
        /* the NULL that ends this query's results */
        r = next_result(p, deadline, &err);
        if (err) return err;
        PQclear(r);
    }
    /* the Sync's result */
    int err;
    PGresult *r = next_result(p, deadline, &err);
    if (err) return err;
    PQclear(r);
    if (!PQexitPipelineMode(p->c)) return pg_fail(p, "pipeline end");
    return first_err;
}

static int pg_get(fg_store_t *s, const char *resource, uint64_t *hwm)
{
    pg_t *p = (pg_t *)s;
    int err;
    const char *vals[] = {resource};
    PGresult *r = run(p, "fg_get", NULL, 1, vals, &err);
    if (err) return err;
    if (!r || !res_ok(r)) return bad_result(p, r, "get");
    int rc = FG_ENOTFOUND;
    if (PQntuples(r) == 1) {
        const char *t = PQgetvalue(r, 0, 0);
        rc = fg_token_parse(t, strlen(t), hwm) == 0
                 ? 0
                 : fg_store_seterr(s, FG_EPROTO, "postgres: bad hwm for %s", resource);
    }
    PQclear(r);
    return rc;
}

static int pg_audit_append(fg_store_t *s, fg_audit_t *a)
{
    pg_t *p = (pg_t *)s;
    char tok[FG_TOKEN_STRLEN], hi[FG_TOKEN_STRLEN];
    if (a->has_token) fg_token_format(a->token, tok);
    if (a->has_highest) fg_token_format(a->highest, hi);
    const char *vals[9] = {a->policy,
                           a->resource,
                           a->method,
                           a->path,
                           a->client,
                           a->has_token ? tok : NULL,
                           a->has_highest ? hi : NULL,
                           fg_reason_name(a->reason) ? fg_reason_name(a->reason) : "stale",
                           a->request_id};
    int err;
    PGresult *r = run(p, "fg_audit", NULL, 9, vals, &err);
    if (err) return err;
    if (!r || !res_ok(r) || PQntuples(r) != 1) return bad_result(p, r, "audit append");
    snprintf(a->id, sizeof a->id, "%s", PQgetvalue(r, 0, 0));
    a->time_ms = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    return 0;
}

static int pg_audit_query(fg_store_t *s, const fg_audit_query_t *q, fg_audit_list_t *out)
{
    pg_t *p = (pg_t *)s;
    /* fixed fragments only; every value is a parameter */
    char sql[640] = "SELECT id, (extract(epoch from time) * 1000)::bigint, policy, resource, "
                    "method, path, client, token::text, highest::text, reason, request_id "
                    "FROM fencegate_audit WHERE true";
    const char *vals[4];
    char since[32], limit[16], pn[8];
    int n = 0;
    if (q->resource) {
        vals[n++] = q->resource;
        snprintf(pn, sizeof pn, "$%d", n);
        strncat(sql, " AND resource = ", sizeof sql - strlen(sql) - 1);
        strncat(sql, pn, sizeof sql - strlen(sql) - 1);
    }
    if (q->reason != FG_REASON_NONE) {
        vals[n++] = fg_reason_name(q->reason);
        snprintf(pn, sizeof pn, "$%d", n);
        strncat(sql, " AND reason = ", sizeof sql - strlen(sql) - 1);
        strncat(sql, pn, sizeof sql - strlen(sql) - 1);
    }
    if (q->since_ms >= 0) {
        snprintf(since, sizeof since, "%lld", (long long)q->since_ms);
        vals[n++] = since;
        snprintf(pn, sizeof pn, "$%d", n);
        strncat(sql, " AND time >= to_timestamp(", sizeof sql - strlen(sql) - 1);
        strncat(sql, pn, sizeof sql - strlen(sql) - 1);
        strncat(sql, "::bigint / 1000.0)", sizeof sql - strlen(sql) - 1);
    }
    unsigned lim = q->limit ? q->limit : 100;
    snprintf(limit, sizeof limit, "%u", lim);
    vals[n++] = limit;
    snprintf(pn, sizeof pn, "$%d", n);
    strncat(sql, " ORDER BY id DESC LIMIT ", sizeof sql - strlen(sql) - 1);
    strncat(sql, pn, sizeof sql - strlen(sql) - 1);
    strncat(sql, "::int", sizeof sql - strlen(sql) - 1);
    int err;
    PGresult *r = run(p, NULL, sql, n, vals, &err);
    if (err) return err;
    if (!r || !res_ok(r)) return bad_result(p, r, "audit query");
    int rows = PQntuples(r);
    if (fg_audit_list_reserve(out, (size_t)rows)) {
        PQclear(r);
        return FG_ENOMEM;
    }
    for (int i = 0; i < rows; i++) {
        fg_audit_t *a = &out->items[out->n++];
        memset(a, 0, sizeof *a);
        snprintf(a->id, sizeof a->id, "%s", PQgetvalue(r, i, 0));
        a->time_ms = strtoll(PQgetvalue(r, i, 1), NULL, 10);
#define COL(f, k)                                                                                  \
    a->f = PQgetisnull(r, i, k)                                                                    \
               ? NULL                                                                              \
               : fg_audit_list_strndup(out, PQgetvalue(r, i, k), (size_t)PQgetlength(r, i, k))
        COL(policy, 2);
        COL(resource, 3);
        COL(method, 4);
        COL(path, 5);
        COL(client, 6);
        COL(request_id, 10);
#undef COL
        if (!PQgetisnull(r, i, 7))
            a->has_token =
                fg_token_parse(PQgetvalue(r, i, 7), (size_t)PQgetlength(r, i, 7), &a->token) == 0;
        if (!PQgetisnull(r, i, 8))
            a->has_highest =
                fg_token_parse(PQgetvalue(r, i, 8), (size_t)PQgetlength(r, i, 8), &a->highest) == 0;
        a->reason = fg_reason_parse(PQgetvalue(r, i, 9));
    }
    PQclear(r);
    return 0;
}

static int pg_audit_purge(fg_store_t *s, int64_t older_than_ms, uint64_t keep_max, size_t batch,
                          size_t *deleted)
{
    pg_t *p = (pg_t *)s;
    char a[32], b[16];
    snprintf(b, sizeof b, "%zu", batch);
    *deleted = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0 && older_than_ms < 0) continue;
        if (pass == 1 && keep_max == 0) continue;
        if (pass == 0)
            snprintf(a, sizeof a, "%lld", (long long)older_than_ms);
        else
            snprintf(a, sizeof a, "%llu", (unsigned long long)keep_max);
        const char *vals[] = {a, b};
        int err;
        PGresult *r = run(p, pass == 0 ? "fg_purge_age" : "fg_purge_count", NULL, 2, vals, &err);
        if (err) return err;
        if (!r || !res_ok(r)) return bad_result(p, r, "audit purge");
        *deleted += (size_t)strtoull(PQcmdTuples(r), NULL, 10);
        PQclear(r);
    }
    return 0;
}

static int pg_ping(fg_store_t *s)
{
    pg_t *p = (pg_t *)s;
    int err;
    PGresult *r = run(p, "fg_ping", NULL, 0, NULL, &err);
    if (err) return err;
    if (!r || !res_ok(r)) return bad_result(p, r, "ping");
    PQclear(r);
    return 0;
}

const fg_store_backend_t fg_store_postgres = {
    .scheme = "postgres",
    .max_pool = 64,
    .create = pg_create,
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .destroy = pg_destroy,
    .check = pg_check,
    .get = pg_get,
    .audit_append = pg_audit_append,
    .audit_query = pg_audit_query,
    .audit_purge = pg_audit_purge,
    .ping = pg_ping,
};
