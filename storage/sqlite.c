/*
 * sqlite.c -- the embedded default state store (`state = sqlite:PATH`).
 *
 * One file, WAL journal, synchronous=FULL: when fg_store_check() returns, an
 * advanced hwm and a stale write's audit record are on disk, so they survive
 * kill -9 and power loss. A batch of checks is one BEGIN IMMEDIATE
 * transaction: many concurrent writers share one fsync (group commit).
 *
 * Tokens are stored as canonical decimal TEXT and compared in C after exact
 * u64 parsing: SQLite's INTEGER is signed 64-bit and its REAL is a double,
 * and neither can hold every u64 token faithfully.
 *
 * The database file is created mode 0600 before SQLite opens it (SQLite gives
 * its -wal, -shm and -journal files the mode of the database file), and an
 * existing one is tightened to 0600: the audit trail names clients and paths.
 *
 * Errors: busy, locked, I/O, full, unopenable or corrupt files mean the store
 * cannot serve (FG_EUNAVAIL); a constraint, type or size error refused this
 * request's data (FG_EDATA).
 */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy/error.h"
#include "policy/token.h"
#include "storage/store_int.h"

#define SCHEMA_VERSION 2

typedef struct sq {
    struct fg_store base;
    char *path;
    sqlite3 *db;
    sqlite3_stmt *get, *upsert, *ins_audit, *ping;
} sq_t;

static int sq_fail(sq_t *q, const char *what)
{
    int code = q->db ? sqlite3_errcode(q->db) & 0xff : SQLITE_CANTOPEN;
    bool data = code == SQLITE_CONSTRAINT || code == SQLITE_MISMATCH || code == SQLITE_TOOBIG ||
                code == SQLITE_RANGE;
    return fg_store_seterr(&q->base, data ? FG_EDATA : FG_EUNAVAIL, "sqlite %s: %s (%s)", what,
                           q->db ? sqlite3_errmsg(q->db) : "no database", q->path);
}

/* Let SQLite wait for a lock only until the deadline of this store call. */
static void arm_deadline(sq_t *q)
{
    uint64_t now = fg_now_mono_ms();
    uint64_t left = q->base.deadline_ms > now ? q->base.deadline_ms - now : 1;
    sqlite3_busy_timeout(q->db, left > 86400000 ? 86400000 : (int)left);
}

/* Create the database file 0600 (or tighten an existing one and its
 * companions) before SQLite opens it. */
static int private_files(sq_t *q)
{
    if (strcmp(q->path, ":memory:") == 0 || strncmp(q->path, "file:", 5) == 0) return 0;
    int fd = open(q->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return fg_store_seterr(&q->base, FG_EUNAVAIL, "sqlite open %s: %s", q->path,
                               strerror(errno));
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077)) fchmod(fd, st.st_mode & 0700);
    close(fd);
    static const char *const sfx[] = {"-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof sfx / sizeof *sfx; i++) {
        char side[4096];
        snprintf(side, sizeof side, "%s%s", q->path, sfx[i]);
        if (stat(side, &st) == 0 && (st.st_mode & 077)) chmod(side, st.st_mode & 0700);
    }
    return 0;
}

static int sq_create(const char *url, const fg_store_opts_t *o, fg_store_t **out, char *err,
                     size_t err_len)
{
    const char *path = url + strlen("sqlite:");
    if (strncmp(path, "//", 2) == 0) path += 2; /* sqlite://PATH is accepted too */
    if (!*path) {
        snprintf(err, err_len, "sqlite: URL needs a file path (sqlite:fencegate.db)");
        return FG_EINVAL;
    }
    sq_t *q = (sq_t *)fg_store_alloc(sizeof *q, &fg_store_sqlite, url, o);
    if (!q || !(q->path = strdup(path))) {
        fg_store_free_base(&q->base);
        return FG_ENOMEM;
    }
    *out = &q->base;
    return 0;
}

static void sq_disconnect(fg_store_t *s)
{
    sq_t *q = (sq_t *)s;
    sqlite3_finalize(q->get);
    sqlite3_finalize(q->upsert);
    sqlite3_finalize(q->ins_audit);
    sqlite3_finalize(q->ping);
    q->get = q->upsert = q->ins_audit = q->ping = NULL;
    if (q->db) sqlite3_close(q->db);
    q->db = NULL;
}

static void sq_destroy(fg_store_t *s)
{
    sq_t *q = (sq_t *)s;
    sq_disconnect(s);
    free(q->path);
    fg_store_free_base(s);
}

static const char *const schema[] = {
    "CREATE TABLE IF NOT EXISTS hwm(resource TEXT PRIMARY KEY, token TEXT NOT NULL) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS audit(id INTEGER PRIMARY KEY AUTOINCREMENT, time_ms INTEGER NOT "
    "NULL, policy TEXT, resource TEXT, method TEXT, path TEXT, client TEXT, token TEXT, highest "
    "TEXT, reason TEXT NOT NULL, request_id TEXT, path_truncated INTEGER NOT NULL DEFAULT 0, "
    "detail TEXT)",
    "CREATE INDEX IF NOT EXISTS audit_by_resource ON audit(resource, id)",
    "CREATE INDEX IF NOT EXISTS audit_by_reason ON audit(reason, id)",
    "CREATE INDEX IF NOT EXISTS audit_by_time ON audit(time_ms)",
};

/* v1 -> v2: the columns a v1 table lacks. */
static const char *const upgrade_v2[] = {
    "ALTER TABLE audit ADD COLUMN path_truncated INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE audit ADD COLUMN detail TEXT",
};

static int sq_connect(fg_store_t *s)
{
    sq_t *q = (sq_t *)s;
    if (private_files(q)) return FG_EUNAVAIL;
    int rc = sqlite3_open_v2(
        q->path, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        sq_fail(q, "open");
        sq_disconnect(s);
        return FG_EUNAVAIL;
    }
    arm_deadline(q);
    char *msg = NULL;
    if (sqlite3_exec(q->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL,
                     &msg) != SQLITE_OK)
        goto fail;
    int version = 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(q->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) goto fail;
    if (sqlite3_step(st) == SQLITE_ROW) version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version > SCHEMA_VERSION) {
        fg_store_seterr(s, 0, "sqlite %s: schema version %d is newer than this fencegate (%d)",
                        q->path, version, SCHEMA_VERSION);
        sq_disconnect(s);
        return FG_EUNAVAIL;
    }
    if (sqlite3_exec(q->db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK) goto fail;
    for (size_t i = 0; i < sizeof schema / sizeof *schema; i++)
        if (sqlite3_exec(q->db, schema[i], NULL, NULL, &msg) != SQLITE_OK) {
            sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
    for (size_t i = 0; version == 1 && i < sizeof upgrade_v2 / sizeof *upgrade_v2; i++)
        if (sqlite3_exec(q->db, upgrade_v2[i], NULL, NULL, &msg) != SQLITE_OK) {
            sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
    if (sqlite3_exec(q->db, "PRAGMA user_version = 2; COMMIT", NULL, NULL, &msg) != SQLITE_OK)
        goto fail;
    if (sqlite3_prepare_v2(q->db, "SELECT token FROM hwm WHERE resource = ?1", -1, &q->get, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(q->db,
                           "INSERT INTO hwm(resource, token) VALUES(?1, ?2) ON CONFLICT(resource) "
                           "DO UPDATE SET token = excluded.token",
                           -1, &q->upsert, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(q->db,
                           "INSERT INTO audit(time_ms, policy, resource, method, path, client, "
                           "token, highest, reason, request_id, path_truncated, detail) "
                           "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                           -1, &q->ins_audit, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(q->db, "SELECT 1", -1, &q->ping, NULL) != SQLITE_OK)
        goto fail;
    return 0;
fail:
    sq_fail(q, msg ? msg : "setup");
    sqlite3_free(msg);
    sq_disconnect(s);
    return FG_EUNAVAIL;
}

/* hwm of `resource`: 1 found, 0 none, <0 error. */
static int read_hwm(sq_t *q, const char *resource, uint64_t *hwm)
{
    sqlite3_reset(q->get);
    sqlite3_bind_text(q->get, 1, resource, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q->get);
    if (rc == SQLITE_DONE) return 0;
    if (rc != SQLITE_ROW) return sq_fail(q, "read hwm");
    const char *t = (const char *)sqlite3_column_text(q->get, 0);
    int n = sqlite3_column_bytes(q->get, 0);
    if (!t || fg_token_parse(t, (size_t)n, hwm) != 0) {
        sqlite3_reset(q->get);
        return fg_store_seterr(&q->base, FG_EDATA, "sqlite: bad hwm for %s", resource);
    }
    sqlite3_reset(q->get);
    return 1;
}

static void bind_opt(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static int insert_audit(sq_t *q, fg_audit_t *a)
{
    char tok[FG_TOKEN_STRLEN], hi[FG_TOKEN_STRLEN];
    sqlite3_stmt *st = q->ins_audit;
    sqlite3_reset(st);
    a->time_ms = fg_now_wall_ms();
    sqlite3_bind_int64(st, 1, a->time_ms);
    bind_opt(st, 2, a->policy);
    bind_opt(st, 3, a->resource);
    bind_opt(st, 4, a->method);
    bind_opt(st, 5, a->path);
    bind_opt(st, 6, a->client);
    if (a->has_token) fg_token_format(a->token, tok);
    bind_opt(st, 7, a->has_token ? tok : NULL);
    if (a->has_highest) fg_token_format(a->highest, hi);
    bind_opt(st, 8, a->has_highest ? hi : NULL);
    sqlite3_bind_text(st, 9, fg_reason_name(a->reason) ? fg_reason_name(a->reason) : "stale", -1,
                      SQLITE_STATIC);
    bind_opt(st, 10, a->request_id);
    sqlite3_bind_int(st, 11, a->path_truncated ? 1 : 0);
    bind_opt(st, 12, a->detail);
    if (sqlite3_step(st) != SQLITE_DONE) {
        sqlite3_reset(st);
        return sq_fail(q, "insert audit");
    }
    sqlite3_reset(st);
    snprintf(a->id, sizeof a->id, "%lld", (long long)sqlite3_last_insert_rowid(q->db));
    return 0;
}

/* Set the hwm of `resource` to `token` (insert or update). */
static int write_hwm(sq_t *q, const char *resource, uint64_t token)
{
    char tok[FG_TOKEN_STRLEN];
    fg_token_format(token, tok);
    sqlite3_reset(q->upsert);
    sqlite3_bind_text(q->upsert, 1, resource, -1, SQLITE_STATIC);
    sqlite3_bind_text(q->upsert, 2, tok, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(q->upsert);
    sqlite3_reset(q->upsert);
    return rc == SQLITE_DONE ? 0 : sq_fail(q, "write hwm");
}

static int one_check(sq_t *q, fg_check_t *c)
{
    uint64_t hwm = 0;
    int found = read_hwm(q, c->resource, &hwm);
    if (found < 0) return found;
    c->had_highest = found == 1;
    c->highest = hwm;
    bool pass = !found || (c->strict ? c->token > hwm : c->token >= hwm);
    /* exact u64: token >= hwm here, so token - hwm cannot wrap */
    bool jump = found && pass && c->has_max_jump && c->token - hwm > c->max_jump;
    if (pass && !jump) {
        c->result = FG_CHECK_ACCEPTED;
        if (!found || c->token > hwm) return write_hwm(q, c->resource, c->token);
        return 0;
    }
    c->result = jump ? FG_CHECK_JUMP : FG_CHECK_STALE;
    fg_audit_t a = c->audit;
    a.resource = c->resource;
    a.has_token = true;
    a.token = c->token;
    a.has_highest = true;
    a.highest = hwm;
    if (a.reason == FG_REASON_NONE) a.reason = FG_REASON_STALE;
    if (jump && a.reason != FG_REASON_REPORT_ONLY) a.reason = FG_REASON_JUMP;
    int rc = insert_audit(q, &a);
    if (rc) return rc;
    memcpy(c->audit_id, a.id, sizeof c->audit_id);
    c->audit.time_ms = a.time_ms;
    return 0;
}

static int sq_check(fg_store_t *s, fg_check_t *checks, size_t n)
{
    sq_t *q = (sq_t *)s;
    arm_deadline(q);
    if (sqlite3_exec(q->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return sq_fail(q, "begin");
    for (size_t i = 0; i < n; i++) {
        int rc = one_check(q, &checks[i]);
        if (rc) {
            sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
            return rc;
        }
    }
    if (sqlite3_exec(q->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        int rc = sq_fail(q, "commit");
        sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    return 0;
}

static int sq_get(fg_store_t *s, const char *resource, uint64_t *hwm)
{
    arm_deadline((sq_t *)s);
    int rc = read_hwm((sq_t *)s, resource, hwm);
    if (rc < 0) return rc;
    return rc ? 0 : FG_ENOTFOUND;
}

static int sq_audit_append(fg_store_t *s, fg_audit_t *rec)
{
    arm_deadline((sq_t *)s);
    return insert_audit((sq_t *)s, rec);
}

static const char *col(fg_audit_list_t *l, sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    return t ? fg_audit_list_strndup(l, t, (size_t)sqlite3_column_bytes(st, i)) : NULL;
}

/* An audit id of this store: 1 to 19 digits. */
static bool sq_id(const char *id, sqlite3_int64 *v)
{
    size_t d = strspn(id, "0123456789");
    if (!d || d > 18 || id[d]) return false;
    *v = strtoll(id, NULL, 10);
    return true;
}

static int sq_audit_query(fg_store_t *s, const fg_audit_query_t *qq, fg_audit_list_t *out)
{
    sq_t *q = (sq_t *)s;
    arm_deadline(q);
    bool asc = qq->after_id != NULL;
    const char *cursor = asc ? qq->after_id : qq->before_id;
    sqlite3_int64 cid = 0;
    if (cursor && !sq_id(cursor, &cid))
        return fg_store_seterr(s, FG_EINVAL, "not an audit id of this store: %s", cursor);
    /* The SQL is assembled from fixed fragments only; every value is bound. */
    char sql[512] = "SELECT id, time_ms, policy, resource, method, path, client, token, highest, "
                    "reason, request_id, path_truncated, detail FROM audit WHERE 1";
    if (qq->resource) strncat(sql, " AND resource = ?1", sizeof sql - strlen(sql) - 1);
    if (qq->reason != FG_REASON_NONE)
        strncat(sql, " AND reason = ?2", sizeof sql - strlen(sql) - 1);
    if (qq->since_ms >= 0) strncat(sql, " AND time_ms >= ?3", sizeof sql - strlen(sql) - 1);
    if (cursor) strncat(sql, asc ? " AND id > ?5" : " AND id < ?5", sizeof sql - strlen(sql) - 1);
    strncat(sql, asc ? " ORDER BY id ASC LIMIT ?4" : " ORDER BY id DESC LIMIT ?4",
            sizeof sql - strlen(sql) - 1);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
        return sq_fail(q, "audit query");
    if (qq->resource) sqlite3_bind_text(st, 1, qq->resource, -1, SQLITE_STATIC);
    if (qq->reason != FG_REASON_NONE)
        sqlite3_bind_text(st, 2, fg_reason_name(qq->reason), -1, SQLITE_STATIC);
    if (qq->since_ms >= 0) sqlite3_bind_int64(st, 3, qq->since_ms);
    if (cursor) sqlite3_bind_int64(st, 5, cid);
    unsigned limit = qq->limit ? qq->limit : 100;
    sqlite3_bind_int64(st, 4, (sqlite3_int64)limit + 1); /* one more: is there a next page? */
    if (fg_audit_list_reserve(out, limit)) {
        sqlite3_finalize(st);
        return FG_ENOMEM;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->n == limit) {
            if (!asc) snprintf(out->next, sizeof out->next, "%s", out->items[limit - 1].id);
            rc = SQLITE_DONE;
            break;
        }
        fg_audit_t *a = &out->items[out->n];
        memset(a, 0, sizeof *a);
        snprintf(a->id, sizeof a->id, "%lld", (long long)sqlite3_column_int64(st, 0));
        a->time_ms = sqlite3_column_int64(st, 1);
        a->policy = col(out, st, 2);
        a->resource = col(out, st, 3);
        a->method = col(out, st, 4);
        a->path = col(out, st, 5);
        a->client = col(out, st, 6);
        const char *t = (const char *)sqlite3_column_text(st, 7);
        a->has_token = t && fg_token_parse(t, strlen(t), &a->token) == 0;
        t = (const char *)sqlite3_column_text(st, 8);
        a->has_highest = t && fg_token_parse(t, strlen(t), &a->highest) == 0;
        a->reason = fg_reason_parse((const char *)sqlite3_column_text(st, 9));
        a->request_id = col(out, st, 10);
        a->path_truncated = sqlite3_column_int(st, 11) != 0;
        a->detail = col(out, st, 12);
        out->n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return sq_fail(q, "audit query");
    return 0;
}

static int purge_one(sq_t *q, const char *sql, int64_t a, size_t batch, size_t *deleted)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
        return sq_fail(q, "audit purge");
    sqlite3_bind_int64(st, 1, a);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)batch);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return sq_fail(q, "audit purge");
    *deleted += (size_t)sqlite3_changes(q->db);
    return 0;
}

static int sq_audit_purge(fg_store_t *s, int64_t older_than_ms, uint64_t keep_max, size_t batch,
                          size_t *deleted)
{
    sq_t *q = (sq_t *)s;
    arm_deadline(q);
    *deleted = 0;
    int rc = 0;
    if (older_than_ms >= 0)
        rc = purge_one(q,
                       "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE time_ms < ?1 "
                       "ORDER BY id LIMIT ?2)",
                       older_than_ms, batch, deleted);
    if (!rc && keep_max)
        rc = purge_one(q,
                       "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE id <= (SELECT "
                       "id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?1) ORDER BY id LIMIT ?2)",
                       keep_max > INT64_MAX ? INT64_MAX : (int64_t)keep_max, batch, deleted);
    return rc;
}

static int sq_ping(fg_store_t *s)
{
    sq_t *q = (sq_t *)s;
    arm_deadline(q);
    sqlite3_reset(q->ping);
    int rc = sqlite3_step(q->ping);
    sqlite3_reset(q->ping);
    return rc == SQLITE_ROW ? 0 : sq_fail(q, "ping");
}

static int set_hwm_tx(sq_t *q, fg_set_hwm_t *op)
{
    uint64_t hwm = 0;
    int found = read_hwm(q, op->resource, &hwm);
    if (found < 0) return found;
    op->had_highest = found == 1;
    op->highest = hwm;
    bool reset = op->mode == FG_SET_RESET;
    op->now = reset || !found || op->token > hwm ? op->token : hwm;
    if (!found || op->now != hwm) {
        int rc = write_hwm(q, op->resource, op->now);
        if (rc) return rc;
    }
    if (!reset) return 0;
    fg_audit_t a = op->audit;
    a.policy = NULL;
    a.resource = op->resource;
    a.has_token = true;
    a.token = op->token;
    a.has_highest = op->had_highest;
    a.highest = hwm;
    a.reason = FG_REASON_RESET;
    int rc = insert_audit(q, &a);
    if (rc) return rc;
    memcpy(op->audit_id, a.id, sizeof op->audit_id);
    op->audit.time_ms = a.time_ms;
    return 0;
}

static int sq_set_hwm(fg_store_t *s, fg_set_hwm_t *op)
{
    sq_t *q = (sq_t *)s;
    arm_deadline(q);
    if (sqlite3_exec(q->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return sq_fail(q, "begin");
    int rc = set_hwm_tx(q, op);
    if (!rc && sqlite3_exec(q->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        rc = sq_fail(q, "commit");
    if (rc) sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* One PRAGMA's value as text into d. */
static int pragma(sq_t *q, fg_durability_t *d, const char *name)
{
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA %s", name);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK) return sq_fail(q, name);
    const char *v = sqlite3_step(st) == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : "";
    size_t i = d->n++;
    snprintf(d->setting[i].name, sizeof d->setting[i].name, "%s", name);
    snprintf(d->setting[i].value, sizeof d->setting[i].value, "%s", v ? v : "");
    sqlite3_finalize(st);
    return 0;
}

static int sq_durability(fg_store_t *s, fg_durability_t *d)
{
    sq_t *q = (sq_t *)s;
    arm_deadline(q);
    int rc = pragma(q, d, "synchronous");
    if (!rc) rc = pragma(q, d, "journal_mode");
    if (rc) return rc;
    /* synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA */
    static const char *const sync_names[] = {"OFF", "NORMAL", "FULL", "EXTRA"};
    long sync = strtol(d->setting[0].value, NULL, 10);
    if (sync >= 0 && sync <= 3)
        snprintf(d->setting[0].value, sizeof d->setting[0].value, "%s", sync_names[sync]);
    const char *jm = d->setting[1].value;
    bool journal_on_disk = strcmp(jm, "wal") == 0 || strcmp(jm, "delete") == 0 ||
                           strcmp(jm, "truncate") == 0 || strcmp(jm, "persist") == 0;
    bool memory_db = strcmp(q->path, ":memory:") == 0 || strstr(q->path, "mode=memory");
    d->durable = sync >= 2 && journal_on_disk && !memory_db;
    if (!d->durable)
        snprintf(d->advice, sizeof d->advice, "%s",
                 memory_db          ? "use a database file on disk, not an in-memory database"
                 : !journal_on_disk ? "use PRAGMA journal_mode=WAL (or DELETE) on disk"
                                    : "use PRAGMA synchronous=FULL (or EXTRA)");
    return 0;
}

const fg_store_backend_t fg_store_sqlite = {
    .scheme = "sqlite",
    .max_pool = 1, /* one writer; batching gives the throughput */
    .create = sq_create,
    .connect = sq_connect,
    .disconnect = sq_disconnect,
    .destroy = sq_destroy,
    .check = sq_check,
    .get = sq_get,
    .audit_append = sq_audit_append,
    .audit_query = sq_audit_query,
    .audit_purge = sq_audit_purge,
    .ping = sq_ping,
    .set_hwm = sq_set_hwm,
    .durability = sq_durability,
};
