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
 * Every call is asynchronous underneath, connect and statement setup
 * included (PQconnectStartParams/PQconnectPoll, then nonblocking sends), and
 * ends by the one deadline of the store call (s->deadline_ms), so a hung or
 * trickling server is reported as unavailable instead of blocking a thread.
 *
 * Errors are told apart by SQLSTATE: connection, resource, operator and
 * system classes (08, 53, 57, 58, 40, 55, 25006) mean the store cannot serve
 * now (FG_EUNAVAIL, backoff); anything else means it refused this request's
 * data (FG_EDATA): the connection stays, and no backoff starts.
 *
 * Schema: fencegate_meta (schema_version), fencegate_hwm, fencegate_audit
 * (with indexes for the audit queries). Created on first connect under an
 * advisory lock and upgraded in place (v1 -> v2: path_truncated and detail
 * columns, fencegate_check2 with max_jump, fencegate_set_hwm); a newer schema
 * version than this build knows is refused, and nothing is ever dropped.
 */
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/error.h"
#include "policy/token.h"
#include "storage/store_int.h"

#define SCHEMA_VERSION 2

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
    /* v2 */
    "ALTER TABLE fencegate_audit ADD COLUMN IF NOT EXISTS path_truncated boolean NOT NULL "
    "  DEFAULT false;"
    "ALTER TABLE fencegate_audit ADD COLUMN IF NOT EXISTS detail text;"
    "CREATE OR REPLACE FUNCTION fencegate_check2(p_resource text, p_token numeric,"
    "  p_strict boolean, p_max_jump numeric, p_policy text, p_method text, p_path text,"
    "  p_path_truncated boolean, p_client text, p_reason text, p_request_id text)"
    " RETURNS TABLE(result int, had boolean, highest text, audit_id bigint, audit_ms bigint)"
    " LANGUAGE plpgsql AS $fn$\n"
    "DECLARE cur numeric; aid bigint; ams bigint; res int; why text;\n"
    "BEGIN\n"
    "  INSERT INTO fencegate_hwm(resource, token) VALUES (p_resource, p_token)\n"
    "    ON CONFLICT (resource) DO NOTHING;\n"
    "  IF FOUND THEN\n"
    "    RETURN QUERY SELECT 1, false, NULL::text, NULL::bigint, NULL::bigint; RETURN;\n"
    "  END IF;\n"
    "  SELECT h.token INTO cur FROM fencegate_hwm h WHERE h.resource = p_resource FOR UPDATE;\n"
    "  IF (p_strict AND p_token > cur) OR (NOT p_strict AND p_token >= cur) THEN\n"
    "    IF p_max_jump IS NULL OR p_token - cur <= p_max_jump THEN\n"
    "      IF p_token > cur THEN\n"
    "        UPDATE fencegate_hwm SET token = p_token, updated = now()\n"
    "          WHERE resource = p_resource;\n"
    "      END IF;\n"
    "      RETURN QUERY SELECT 1, true, cur::text, NULL::bigint, NULL::bigint; RETURN;\n"
    "    END IF;\n"
    "    res := 2; why := CASE WHEN p_reason = 'report-only' THEN p_reason ELSE 'jump' END;\n"
    "  ELSE\n"
    "    res := 0; why := p_reason;\n"
    "  END IF;\n"
    "  INSERT INTO fencegate_audit(policy, resource, method, path, path_truncated, client,\n"
    "      token, highest, reason, request_id)\n"
    "    VALUES (p_policy, p_resource, p_method, p_path, p_path_truncated, p_client, p_token,\n"
    "      cur, why, p_request_id)\n"
    "    RETURNING id, (extract(epoch from time) * 1000)::bigint INTO aid, ams;\n"
    "  RETURN QUERY SELECT res, true, cur::text, aid, ams;\n"
    "END $fn$;"
    "CREATE OR REPLACE FUNCTION fencegate_set_hwm(p_resource text, p_token numeric,"
    "  p_reset boolean, p_method text, p_path text, p_path_truncated boolean, p_client text,"
    "  p_request_id text, p_detail text)"
    " RETURNS TABLE(had boolean, highest text, newhwm text, audit_id bigint, audit_ms bigint)"
    " LANGUAGE plpgsql AS $fn$\n"
    "DECLARE cur numeric; nxt numeric; aid bigint; ams bigint; was boolean;\n"
    "BEGIN\n"
    "  INSERT INTO fencegate_hwm(resource, token) VALUES (p_resource, p_token)\n"
    "    ON CONFLICT (resource) DO NOTHING;\n"
    "  was := NOT FOUND;\n"
    "  nxt := p_token;\n"
    "  IF was THEN\n"
    "    SELECT h.token INTO cur FROM fencegate_hwm h WHERE h.resource = p_resource FOR UPDATE;\n"
    "    IF p_reset OR p_token > cur THEN\n"
    "      UPDATE fencegate_hwm SET token = p_token, updated = now() WHERE resource = p_resource;\n"
    "    ELSE\n"
    "      nxt := cur;\n"
    "    END IF;\n"
    "  END IF;\n"
    "  IF p_reset THEN\n"
    "    INSERT INTO fencegate_audit(resource, method, path, path_truncated, client, token,\n"
    "        highest, reason, request_id, detail)\n"
    "      VALUES (p_resource, p_method, p_path, p_path_truncated, p_client, p_token, cur,\n"
    "        'reset', p_request_id, p_detail)\n"
    "      RETURNING id, (extract(epoch from time) * 1000)::bigint INTO aid, ams;\n"
    "  END IF;\n"
    "  RETURN QUERY SELECT was, cur::text, nxt::text, aid, ams;\n"
    "END $fn$;"
    "UPDATE fencegate_meta SET value = '2' WHERE key = 'schema_version';"
    "COMMIT;";

typedef struct pg {
    struct fg_store base;
    PGconn *c;
} pg_t;

/* The connection failed (libpq's message): the store is unavailable. */
static int pg_fail(pg_t *p, const char *what)
{
    const char *m = p->c ? PQerrorMessage(p->c) : "no connection";
    size_t n = strlen(m);
    while (n && (m[n - 1] == '\n' || m[n - 1] == ' ')) n--;
    return fg_store_seterr(&p->base, FG_EUNAVAIL, "postgres %s: %.*s", what, (int)n, m);
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

/* Wait until the socket is ready for `events`, at most until the call's deadline. */
static int wait_sock(pg_t *p, short events)
{
    for (;;) {
        uint64_t now = fg_now_mono_ms();
        if (now >= p->base.deadline_ms)
            return fg_store_seterr(&p->base, FG_EUNAVAIL, "postgres: no answer within %llu ms",
                                   (unsigned long long)p->base.opts.timeout_ms);
        struct pollfd pfd = {PQsocket(p->c), events, 0};
        int rc = poll(&pfd, 1, (int)(p->base.deadline_ms - now));
        if (rc > 0) return 0;
        if (rc < 0 && errno != EINTR) return pg_fail(p, "poll");
    }
}

/* Flush what libpq has buffered, by the deadline. */
static int flush(pg_t *p)
{
    for (;;) {
        int f = PQflush(p->c);
        if (f == 0) return 0;
        if (f < 0) return pg_fail(p, "send");
        int rc = wait_sock(p, POLLOUT | POLLIN);
        if (rc) return rc;
        if (!PQconsumeInput(p->c)) return pg_fail(p, "receive");
    }
}

/* Next result (NULL at the end of one query's results), by the deadline.
 * *err is set on a connection failure. */
static PGresult *next_result(pg_t *p, int *err)
{
    *err = 0;
    while (PQisBusy(p->c)) {
        int rc = wait_sock(p, POLLIN);
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

/* Read every result of the query just sent; keep the last one. */
static PGresult *last_result(pg_t *p, int *err)
{
    *err = flush(p);
    if (*err) return NULL;
    PGresult *res = NULL, *r;
    while ((r = next_result(p, err))) {
        /* keep the first error, else the last result */
        if (res &&
            !(PQresultStatus(r) == PGRES_FATAL_ERROR && PQresultStatus(res) != PGRES_FATAL_ERROR)) {
            PQclear(r);
            continue;
        }
        PQclear(res);
        res = r;
    }
    if (*err) {
        PQclear(res);
        return NULL;
    }
    return res;
}

/* Run one prepared or text statement and return its single result. */
static PGresult *run(pg_t *p, const char *stmt, const char *sql, int n, const char *const *vals,
                     int *err)
{
    int ok = stmt ? PQsendQueryPrepared(p->c, stmt, n, vals, NULL, NULL, 0)
                  : PQsendQueryParams(p->c, sql, n, NULL, vals, NULL, NULL, 0);
    if (!ok) {
        *err = pg_fail(p, "send");
        return NULL;
    }
    return last_result(p, err);
}

static bool res_ok(PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
}

/* Is this SQLSTATE the server saying it cannot serve now (vs refusing data)? */
static bool unavailable_state(const char *st)
{
    if (!st || strlen(st) != 5) return true;
    static const char *const classes[] = {"08", "53", "57", "58", "40", "55", "XX"};
    for (size_t i = 0; i < sizeof classes / sizeof *classes; i++)
        if (strncmp(st, classes[i], 2) == 0) return true;
    return strcmp(st, "25006") == 0; /* read-only transaction: a standby */
}

/* A failed statement: FG_EUNAVAIL or FG_EDATA by its SQLSTATE (see the top). */
static int bad_result(pg_t *p, PGresult *r, const char *what)
{
    const char *m = r ? PQresultErrorMessage(r) : "";
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    int rc = r && PQstatus(p->c) == CONNECTION_OK && st && !unavailable_state(st) ? FG_EDATA
                                                                                  : FG_EUNAVAIL;
    if (r && !st && PQresultStatus(r) != PGRES_FATAL_ERROR) rc = FG_EPROTO; /* wrong shape */
    size_t n = strlen(m);
    while (n && m[n - 1] == '\n') n--;
    fg_store_seterr(&p->base, rc, "postgres %s: %s%s%.*s", what, st ? st : "", st ? " " : "",
                    (int)n, m);
    PQclear(r);
    return rc;
}

static const struct {
    const char *name, *sql;
    int n;
} prepared[] = {
    {"fg_check",
     "SELECT result, had, highest, audit_id, audit_ms FROM "
     "fencegate_check2($1, $2::numeric, $3::boolean, $4::numeric, $5, $6, $7, $8::boolean, $9, "
     "$10, $11)",
     11},
    {"fg_get", "SELECT token::text FROM fencegate_hwm WHERE resource = $1", 1},
    {"fg_audit",
     "INSERT INTO fencegate_audit(policy, resource, method, path, path_truncated, client, token, "
     "highest, reason, request_id, detail) VALUES ($1, $2, $3, $4, $5::boolean, $6, $7::numeric, "
     "$8::numeric, $9, $10, $11) RETURNING id, (extract(epoch from time) * 1000)::bigint",
     11},
    {"fg_set",
     "SELECT had, highest, newhwm, audit_id, audit_ms FROM fencegate_set_hwm($1, $2::numeric, "
     "$3::boolean, $4, $5, $6::boolean, $7, $8, $9)",
     9},
    {"fg_ping", "SELECT 1", 0},
    {"fg_durability",
     "SELECT current_setting('fsync'), current_setting('synchronous_commit'), "
     "current_setting('synchronous_standby_names'), "
     "CASE WHEN pg_is_in_recovery() THEN 'standby' ELSE 'primary' END",
     0},
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

/* PQconnectStartParams + PQconnectPoll, polled against the deadline. */
static int start_connection(pg_t *p)
{
    const char *keys[] = {"dbname", "application_name", NULL};
    const char *vals[] = {p->base.url, "fencegate", NULL};
    p->c = PQconnectStartParams(keys, vals, 1);
    if (!p->c) return fg_store_seterr(&p->base, FG_EUNAVAIL, "postgres: out of memory");
    if (PQstatus(p->c) == CONNECTION_BAD) return pg_fail(p, "connect");
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    for (;;) {
        if (st == PGRES_POLLING_OK) break;
        if (st == PGRES_POLLING_FAILED) return pg_fail(p, "connect");
        int rc = wait_sock(p, st == PGRES_POLLING_READING ? POLLIN : POLLOUT);
        if (rc) return rc;
        st = PQconnectPoll(p->c);
    }
    PQsetNoticeProcessor(p->c, quiet, NULL); /* "already exists, skipping" is not news */
    if (PQsetnonblocking(p->c, 1) != 0) return pg_fail(p, "nonblocking");
    return 0;
}

/* One text statement (several ;-separated commands allowed, no parameters). */
static int exec_simple(pg_t *p, const char *sql, const char *what)
{
    if (!PQsendQuery(p->c, sql)) return pg_fail(p, "send");
    int err;
    PGresult *r = last_result(p, &err);
    if (err) return err;
    if (!r || !res_ok(r)) return bad_result(p, r, what);
    PQclear(r);
    return 0;
}

static int pg_connect(fg_store_t *s)
{
    pg_t *p = (pg_t *)s;
    int rc = start_connection(p);
    int version = 0;
    if (!rc) {
        int err;
        PGresult *r = run(p, NULL, "SELECT value FROM fencegate_meta WHERE key = 'schema_version'",
                          0, NULL, &err);
        rc = err;
        /* no table yet (42P01) is version 0 */
        if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            version = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
    }
    if (!rc && version > SCHEMA_VERSION)
        rc = fg_store_seterr(s, FG_EUNAVAIL,
                             "postgres: schema version %d is newer than this fencegate (%d)",
                             version, SCHEMA_VERSION);
    if (!rc && version < SCHEMA_VERSION) {
        rc = exec_simple(p, schema_sql, "create schema");
        if (rc && PQstatus(p->c) == CONNECTION_OK) exec_simple(p, "ROLLBACK", "rollback");
    }
    /* every statement prepared in one pipeline: one round trip */
    if (!rc && !PQenterPipelineMode(p->c)) rc = pg_fail(p, "pipeline");
    size_t np = sizeof prepared / sizeof *prepared;
    for (size_t i = 0; i < np && !rc; i++)
        if (!PQsendPrepare(p->c, prepared[i].name, prepared[i].sql, prepared[i].n, NULL))
            rc = pg_fail(p, "prepare");
    if (!rc && !PQpipelineSync(p->c)) rc = pg_fail(p, "sync");
    if (!rc) rc = flush(p);
    for (size_t i = 0; i < np && !rc; i++) {
        int err;
        PGresult *r = next_result(p, &err);
        if (err) {
            rc = err;
            break;
        }
        if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
            rc = bad_result(p, r, "prepare");
            rc = FG_EUNAVAIL; /* a gateway that cannot prepare cannot work */
            break;
        }
        PQclear(r);
        PQclear(next_result(p, &err)); /* the NULL ending this statement */
        if (err) rc = err;
    }
    if (!rc) {
        int err;
        PQclear(next_result(p, &err)); /* the Sync */
        rc = err;
    }
    if (!rc && !PQexitPipelineMode(p->c)) rc = pg_fail(p, "pipeline end");
    if (rc) {
        pg_disconnect(s);
        return FG_EUNAVAIL;
    }
    return 0;
}

/* An idle connection with something to read was closed by the server (a
 * restart sends its FATAL and closes), unless libpq can read it and is fine. */
static bool pg_stale(fg_store_t *s)
{
    pg_t *p = (pg_t *)s;
    struct pollfd pfd = {PQsocket(p->c), POLLIN | POLLRDHUP, 0};
    if (poll(&pfd, 1, 0) == 0) return false;
    if (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
    if (!PQconsumeInput(p->c) || PQstatus(p->c) != CONNECTION_OK) return true;
    PGnotify *n;
    while ((n = PQnotifies(p->c))) PQfreemem(n);
    return false;
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

static int pg_check(fg_store_t *s, fg_check_t *checks, size_t n)
{
    pg_t *p = (pg_t *)s;
    if (!PQenterPipelineMode(p->c)) return pg_fail(p, "pipeline");
    char toks[FG_STORE_BATCH_MAX][FG_TOKEN_STRLEN], jumps[FG_STORE_BATCH_MAX][FG_TOKEN_STRLEN];
    for (size_t i = 0; i < n; i++) {
        fg_check_t *c = &checks[i];
        fg_token_format(c->token, toks[i]);
        if (c->has_max_jump) fg_token_format(c->max_jump, jumps[i]);
        fg_reason_t reason = c->audit.reason ? c->audit.reason : FG_REASON_STALE;
        const char *vals[11] = {c->resource,           toks[i],
                                c->strict ? "t" : "f", c->has_max_jump ? jumps[i] : NULL,
                                c->audit.policy,       nz(c->audit.method),
                                nz(c->audit.path),     c->audit.path_truncated ? "t" : "f",
                                c->audit.client,       fg_reason_name(reason),
                                c->audit.request_id};
        if (!PQsendQueryPrepared(p->c, "fg_check", 11, vals, NULL, NULL, 0))
            return pg_fail(p,
                           "send check"); /* the wrapper drops the connection, pipeline and all */
    }
    if (!PQpipelineSync(p->c)) return pg_fail(p, "sync");
    int rc = flush(p);
    if (rc) return rc;
    int first_err = 0;
    for (size_t i = 0; i < n; i++) {
        int err;
        PGresult *r = next_result(p, &err);
        if (err) return err;
        if (r && PQresultStatus(r) == PGRES_PIPELINE_ABORTED) {
            /* skipped after an earlier error of this batch, whose code stands */
            PQclear(r);
        } else if (!r || !res_ok(r) || PQntuples(r) != 1 || PQnfields(r) != 5) {
            int e = bad_result(p, r, "check");
            if (!first_err) first_err = e;
        } else {
            fg_check_t *c = &checks[i];
            int code = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
            c->result = code == 1 ? FG_CHECK_ACCEPTED : code == 2 ? FG_CHECK_JUMP : FG_CHECK_STALE;
            c->had_highest = PQgetvalue(r, 0, 1)[0] == 't';
            c->highest = 0;
            if (c->had_highest) {
                const char *h = PQgetvalue(r, 0, 2);
                fg_token_parse(h, strlen(h), &c->highest);
            }
            if (c->result != FG_CHECK_ACCEPTED) {
                snprintf(c->audit_id, sizeof c->audit_id, "%s", PQgetvalue(r, 0, 3));
                c->audit.time_ms = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
            }
            PQclear(r);
        }
        /* the NULL that ends this query's results */
        r = next_result(p, &err);
        if (err) return err;
        PQclear(r);
    }
    /* the Sync's result */
    int err;
    PGresult *r = next_result(p, &err);
    if (err) return err;
    PQclear(r);
    if (!PQexitPipelineMode(p->c)) return pg_fail(p, "pipeline end");
    /* an error rolled the whole batch back (one implicit transaction) */
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
                 : fg_store_seterr(s, FG_EDATA, "postgres: bad hwm for %s", resource);
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
    const char *vals[11] = {a->policy,
                            a->resource,
                            a->method,
                            a->path,
                            a->path_truncated ? "t" : "f",
                            a->client,
                            a->has_token ? tok : NULL,
                            a->has_highest ? hi : NULL,
                            fg_reason_name(a->reason) ? fg_reason_name(a->reason) : "stale",
                            a->request_id,
                            a->detail};
    int err;
    PGresult *r = run(p, "fg_audit", NULL, 11, vals, &err);
    if (err) return err;
    if (!r || !res_ok(r) || PQntuples(r) != 1) return bad_result(p, r, "audit append");
    snprintf(a->id, sizeof a->id, "%s", PQgetvalue(r, 0, 0));
    a->time_ms = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    return 0;
}

/* Append " AND <frag>$<n><tail>" with value `v` as the next parameter. */
static void add_param(char *sql, size_t cap, const char **vals, int *n, const char *frag,
                      const char *v, const char *tail)
{
    char pn[16];
    vals[(*n)++] = v;
    snprintf(pn, sizeof pn, "$%d", *n);
    strncat(sql, frag, cap - strlen(sql) - 1);
    strncat(sql, pn, cap - strlen(sql) - 1);
    strncat(sql, tail, cap - strlen(sql) - 1);
}

/* An audit id of this store: 1 to 19 digits. */
static bool pg_id(const char *id)
{
    size_t d = strspn(id, "0123456789");
    return d && d <= 19 && !id[d];
}

static int pg_audit_query(fg_store_t *s, const fg_audit_query_t *q, fg_audit_list_t *out)
{
    pg_t *p = (pg_t *)s;
    bool asc = q->after_id != NULL;
    const char *cursor = asc ? q->after_id : q->before_id;
    if (cursor && !pg_id(cursor))
        return fg_store_seterr(s, FG_EINVAL, "not an audit id of this store: %s", cursor);
    /* fixed fragments only; every value is a parameter */
    char sql[900] = "SELECT id, (extract(epoch from time) * 1000)::bigint, policy, resource, "
                    "method, path, client, token::text, highest::text, reason, request_id, "
                    "path_truncated, detail FROM fencegate_audit WHERE true";
    const char *vals[6];
    char since[32], limit[16];
    int n = 0;
    if (q->resource) add_param(sql, sizeof sql, vals, &n, " AND resource = ", q->resource, "");
    if (q->reason != FG_REASON_NONE)
        add_param(sql, sizeof sql, vals, &n, " AND reason = ", fg_reason_name(q->reason), "");
    if (q->since_ms >= 0) {
        snprintf(since, sizeof since, "%lld", (long long)q->since_ms);
        add_param(sql, sizeof sql, vals, &n, " AND time >= to_timestamp(", since,
                  "::bigint / 1000.0)");
    }
    if (cursor)
        add_param(sql, sizeof sql, vals, &n, asc ? " AND id > " : " AND id < ", cursor, "::bigint");
    unsigned lim = q->limit ? q->limit : 100;
    snprintf(limit, sizeof limit, "%u", lim + 1); /* one more: is there a next page? */
    strncat(sql, asc ? " ORDER BY id ASC" : " ORDER BY id DESC", sizeof sql - strlen(sql) - 1);
    add_param(sql, sizeof sql, vals, &n, " LIMIT ", limit, "::int");
    int err;
    PGresult *r = run(p, NULL, sql, n, vals, &err);
    if (err) return err;
    if (!r || !res_ok(r)) return bad_result(p, r, "audit query");
    int rows = PQntuples(r);
    bool more = rows > (int)lim;
    if (more) rows = (int)lim;
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
        COL(detail, 12);
#undef COL
        if (!PQgetisnull(r, i, 7))
            a->has_token =
                fg_token_parse(PQgetvalue(r, i, 7), (size_t)PQgetlength(r, i, 7), &a->token) == 0;
        if (!PQgetisnull(r, i, 8))
            a->has_highest =
                fg_token_parse(PQgetvalue(r, i, 8), (size_t)PQgetlength(r, i, 8), &a->highest) == 0;
        a->reason = fg_reason_parse(PQgetvalue(r, i, 9));
        a->path_truncated = PQgetvalue(r, i, 11)[0] == 't';
    }
    if (more && !asc) snprintf(out->next, sizeof out->next, "%s", out->items[rows - 1].id);
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

static int pg_set_hwm(fg_store_t *s, fg_set_hwm_t *op)
{
    pg_t *p = (pg_t *)s;
    char tok[FG_TOKEN_STRLEN];
    fg_token_format(op->token, tok);
    bool reset = op->mode == FG_SET_RESET;
    const fg_audit_t *a = &op->audit;
    const char *vals[9] = {op->resource, tok,           reset ? "t" : "f",
                           a->method,    a->path,       a->path_truncated ? "t" : "f",
                           a->client,    a->request_id, a->detail};
    int err;
    PGresult *r = run(p, "fg_set", NULL, 9, vals, &err);
    if (err) return err;
    if (!r || !res_ok(r) || PQntuples(r) != 1 || PQnfields(r) != 5)
        return bad_result(p, r, "set hwm");
    op->had_highest = PQgetvalue(r, 0, 0)[0] == 't';
    op->highest = 0;
    int rc = 0;
    if (op->had_highest &&
        fg_token_parse(PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1), &op->highest) != 0)
        rc = FG_EPROTO;
    if (fg_token_parse(PQgetvalue(r, 0, 2), (size_t)PQgetlength(r, 0, 2), &op->now) != 0)
        rc = FG_EPROTO;
    if (reset) {
        snprintf(op->audit_id, sizeof op->audit_id, "%s", PQgetvalue(r, 0, 3));
        op->audit.time_ms = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
    }
    PQclear(r);
    return rc ? fg_store_seterr(s, rc, "postgres set hwm: unexpected reply") : 0;
}

static int pg_durability(fg_store_t *s, fg_durability_t *d)
{
    pg_t *p = (pg_t *)s;
    int err;
    PGresult *r = run(p, "fg_durability", NULL, 0, NULL, &err);
    if (err) return err;
    if (!r || !res_ok(r) || PQntuples(r) != 1 || PQnfields(r) != 4)
        return bad_result(p, r, "durability");
    static const char *const names[] = {"fsync", "synchronous_commit", "synchronous_standby_names",
                                        "role"};
    for (int i = 0; i < 4; i++) {
        snprintf(d->setting[i].name, sizeof d->setting[i].name, "%s", names[i]);
        snprintf(d->setting[i].value, sizeof d->setting[i].value, "%s", PQgetvalue(r, 0, i));
    }
    d->n = 4;
    PQclear(r);
    bool fsync_on = strcmp(d->setting[0].value, "on") == 0;
    bool commit_on = strcmp(d->setting[1].value, "off") != 0;
    d->durable = fsync_on && commit_on;
    if (!fsync_on)
        snprintf(d->advice, sizeof d->advice, "set 'fsync = on' in postgresql.conf");
    else if (!commit_on)
        snprintf(d->advice, sizeof d->advice,
                 "set 'synchronous_commit = on' (or local, remote_write, remote_apply) for the "
                 "fencegate role or database");
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
    .set_hwm = pg_set_hwm,
    .durability = pg_durability,
    .stale = pg_stale,
};
