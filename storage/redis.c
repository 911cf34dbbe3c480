/*
 * redis.c -- the Redis state store (`state = redis://[:password@]host:port/db`).
 *
 * A fence check is one EVALSHA of a Lua script that compares, advances the
 * hwm and, for a stale token, XADDs the audit record: Redis runs a script
 * atomically, so a rejection never exists without its record. A batch of
 * checks is one pipeline: n EVALSHAs written at once, n replies read back,
 * one round trip.
 *
 * Lua numbers are doubles, so the script never turns a token into a number:
 * tokens travel and are stored as canonical decimal strings and compared as
 * such (longer is larger; equal length compares byte-wise). Exact over the
 * whole u64 range.
 *
 * Keys: fencegate:hwm:<resource> (string), fencegate:audit (stream, trimmed
 * with MAXLEN ~ audit_max). The stream id is the audit id; its millisecond
 * part is the record's time.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "policy/error.h"
#include "policy/token.h"
#include "storage/store_int.h"

#define AUDIT_STREAM "fencegate:audit"
#define HWM_PREFIX   "fencegate:hwm:"
#define SCAN_PAGE    1000
#define SCAN_MAX     100000 /* most stream entries one filtered query reads */

static const char check_script[] =
    "local function gt(a, b)\n"
    "  if #a ~= #b then return #a > #b end\n"
    "  return a > b\n"
    "end\n"
    "local cur = redis.call('GET', KEYS[1])\n"
    "local tok = ARGV[1]\n"
    "if not cur then\n"
    "  redis.call('SET', KEYS[1], tok)\n"
    "  return {1, ''}\n"
    "end\n"
    "local pass\n"
    "if ARGV[2] == '1' then pass = gt(tok, cur) else pass = (tok == cur) or gt(tok, cur) end\n"
    "if pass then\n"
    "  if gt(tok, cur) then redis.call('SET', KEYS[1], tok) end\n"
    "  return {1, cur}\n"
    "end\n"
    "local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*',\n"
    "  'policy', ARGV[4], 'resource', ARGV[5], 'method', ARGV[6], 'path', ARGV[7],\n"
    "  'client', ARGV[8], 'token', tok, 'highest', cur, 'reason', ARGV[9],\n"
    "  'request_id', ARGV[10])\n"
    "return {0, cur, id}\n";

typedef struct rd {
    struct fg_store base;
    char host[256];
    int port;
    int db;
    char *password;
    redisContext *c;
    char sha[48];
    char maxlen[24];
} rd_t;

static int rd_fail(rd_t *r, const char *what)
{
    fg_store_seterr(&r->base, 0, "redis %s:%d %s: %s", r->host, r->port, what,
                    r->c && r->c->err ? r->c->errstr : "no connection");
    return FG_EUNAVAIL;
}

static int rd_create(const char *url, const fg_store_opts_t *o, fg_store_t **out, char *err,
                     size_t err_len)
{
    const char *p = url + strlen("redis://");
    rd_t *r = (rd_t *)fg_store_alloc(sizeof *r, &fg_store_redis, url, o);
    if (!r) return FG_ENOMEM;
    r->port = 6379;
    const char *at = strchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        r->password = strndup(pw, (size_t)(at - pw));
        if (!r->password) {
            fg_store_free_base(&r->base);
            return FG_ENOMEM;
        }
        p = at + 1;
    }
    const char *end = p + strcspn(p, ":/");
    size_t hl = (size_t)(end - p);
    if (hl == 0 || hl >= sizeof r->host) {
        snprintf(err, err_len, "redis URL needs a host: %s", url);
        free(r->password);
        fg_store_free_base(&r->base);
        return FG_EINVAL;
    }
    memcpy(r->host, p, hl);
    r->host[hl] = '\0';
    p = end;
    uint64_t v;
    if (*p == ':') {
        p++;
        size_t d = strspn(p, "0123456789");
        if (fg_token_parse(p, d, &v) != 0 || v == 0 || v > 65535) {
            snprintf(err, err_len, "bad port in redis URL: %s", url);
            free(r->password);
            fg_store_free_base(&r->base);
            return FG_EINVAL;
        }
        r->port = (int)v;
        p += d;
    }
    if (*p == '/') {
        p++;
        size_t d = strspn(p, "0123456789");
        if (d && (fg_token_parse(p, d, &v) != 0 || v > 1000000)) {
            snprintf(err, err_len, "bad database number in redis URL: %s", url);
            free(r->password);
            fg_store_free_base(&r->base);
            return FG_EINVAL;
        }
        r->db = d ? (int)v : 0;
        p += d;
    }
    if (*p) {
        snprintf(err, err_len, "unexpected '%s' in redis URL", p);
        free(r->password);
        fg_store_free_base(&r->base);
        return FG_EINVAL;
    }
    snprintf(r->maxlen, sizeof r->maxlen, "%llu",
             (unsigned long long)(r->base.opts.audit_max ? r->base.opts.audit_max : 1000000));
    *out = &r->base;
    return 0;
}

static void rd_disconnect(fg_store_t *s)
{
    rd_t *r = (rd_t *)s;
    if (r->c) redisFree(r->c);
    r->c = NULL;
}

static void rd_destroy(fg_store_t *s)
{
    rd_t *r = (rd_t *)s;
    rd_disconnect(s);
    free(r->password);
    fg_store_free_base(s);
}

/* Run one command; returns the reply (caller frees) or NULL with the error set. */
static redisReply *cmd(rd_t *r, int argc, const char **argv, const size_t *lens)
{
    redisReply *rep = redisCommandArgv(r->c, argc, argv, lens);
    if (!rep) rd_fail(r, "command");
    return rep;
}

static int load_script(rd_t *r)
{
    const char *argv[] = {"SCRIPT", "LOAD", check_script};
    size_t lens[] = {6, 4, sizeof check_script - 1};
    redisReply *rep = cmd(r, 3, argv, lens);
    if (!rep) return FG_EUNAVAIL;
    int rc = 0;
    if (rep->type == REDIS_REPLY_STRING && rep->len < (int)sizeof r->sha)
        snprintf(r->sha, sizeof r->sha, "%s", rep->str);
    else
        rc = fg_store_seterr(&r->base, FG_EPROTO, "redis SCRIPT LOAD failed: %s",
                             rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    freeReplyObject(rep);
    return rc;
}

static int rd_connect(fg_store_t *s)
{
    rd_t *r = (rd_t *)s;
    struct timeval tv = {(time_t)(s->opts.timeout_ms / 1000),
                         (suseconds_t)(s->opts.timeout_ms % 1000) * 1000};
    r->c = redisConnectWithTimeout(r->host, r->port, tv);
    if (!r->c || r->c->err) {
        rd_fail(r, "connect");
        rd_disconnect(s);
        return FG_EUNAVAIL;
    }
    redisSetTimeout(r->c, tv);
    int rc = 0;
    if (r->password) {
        const char *argv[] = {"AUTH", r->password};
        size_t lens[] = {4, strlen(r->password)};
        redisReply *rep = cmd(r, 2, argv, lens);
        if (!rep)
            rc = FG_EUNAVAIL;
        else if (rep->type == REDIS_REPLY_ERROR)
            rc = fg_store_seterr(s, FG_EUNAVAIL, "redis AUTH: %s", rep->str);
        freeReplyObject(rep);
    }
    if (!rc && r->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->db);
        const char *argv[] = {"SELECT", db};
        size_t lens[] = {6, strlen(db)};
        redisReply *rep = cmd(r, 2, argv, lens);
        if (!rep)
            rc = FG_EUNAVAIL;
        else if (rep->type == REDIS_REPLY_ERROR)
            rc = fg_store_seterr(s, FG_EUNAVAIL, "redis SELECT: %s", rep->str);
        freeReplyObject(rep);
    }
    if (!rc) rc = load_script(r) ? FG_EUNAVAIL : 0;
    if (rc) rd_disconnect(s);
    return rc;
}

/* The hwm key of `resource`: into buf when it fits, else malloc'd (*heap set). */
static char *hwm_key(const char *resource, char *buf, size_t cap, size_t *len, char **heap)
{
    size_t pl = sizeof HWM_PREFIX - 1, rl = strlen(resource);
    char *k = buf;
    *heap = NULL;
    if (pl + rl + 1 > cap) {
        k = *heap = malloc(pl + rl + 1);
        if (!k) return NULL;
    }
    memcpy(k, HWM_PREFIX, pl);
    memcpy(k + pl, resource, rl + 1);
    *len = pl + rl;
    return k;
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

static int append_check(rd_t *r, fg_check_t *c, char **heap)
{
    char kb[512], tok[FG_TOKEN_STRLEN];
    size_t kl;
    char *key = hwm_key(c->resource, kb, sizeof kb, &kl, heap);
    if (!key) return FG_ENOMEM;
    fg_token_format(c->token, tok);
    fg_reason_t reason = c->audit.reason ? c->audit.reason : FG_REASON_STALE;
    const char *argv[] = {"EVALSHA",
                          r->sha,
                          "2",
                          key,
                          AUDIT_STREAM,
                          tok,
                          c->strict ? "1" : "0",
                          r->maxlen,
                          nz(c->audit.policy),
                          c->resource,
                          nz(c->audit.method),
                          nz(c->audit.path),
                          nz(c->audit.client),
                          fg_reason_name(reason),
                          nz(c->audit.request_id)};
    size_t lens[15];
    for (size_t i = 0; i < 15; i++) lens[i] = i == 3 ? kl : strlen(argv[i]);
    /* hiredis copies the arguments into its output buffer */
    if (redisAppendCommandArgv(r->c, 15, argv, lens) != REDIS_OK) return rd_fail(r, "pipeline");
    return 0;
}

static int parse_check_reply(rd_t *r, fg_check_t *c, redisReply *rep)
{
    if (rep->type == REDIS_REPLY_ERROR)
        return fg_store_seterr(&r->base,
                               strncmp(rep->str, "NOSCRIPT", 8) == 0 ? FG_ENOTFOUND : FG_EPROTO,
                               "redis check: %s", rep->str);
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER)
        return fg_store_seterr(&r->base, FG_EPROTO, "redis check: unexpected reply");
    redisReply *cur = rep->element[1];
    c->had_highest = cur->type == REDIS_REPLY_STRING && cur->len > 0;
    c->highest = 0;
    if (c->had_highest && fg_token_parse(cur->str, (size_t)cur->len, &c->highest) != 0)
        return fg_store_seterr(&r->base, FG_EPROTO, "redis: bad hwm for %s", c->resource);
    if (rep->element[0]->integer == 1) {
        c->result = FG_CHECK_ACCEPTED;
        return 0;
    }
    c->result = FG_CHECK_STALE;
    if (rep->elements >= 3 && rep->element[2]->type == REDIS_REPLY_STRING) {
        snprintf(c->audit_id, sizeof c->audit_id, "%s", rep->element[2]->str);
        c->audit.time_ms = strtoll(rep->element[2]->str, NULL, 10);
    }
    return 0;
}

static int run_batch(rd_t *r, fg_check_t *checks, size_t n, bool *noscript)
{
    *noscript = false;
    for (size_t i = 0; i < n; i++) {
        char *heap = NULL;
        int rc = append_check(r, &checks[i], &heap);
        free(heap);
        if (rc) return rc == FG_ENOMEM ? rc : FG_EUNAVAIL;
    }
    int first_err = 0;
    for (size_t i = 0; i < n; i++) {
        void *vr = NULL;
        if (redisGetReply(r->c, &vr) != REDIS_OK || !vr) return rd_fail(r, "check");
        int rc = parse_check_reply(r, &checks[i], vr);
        freeReplyObject(vr);
        if (rc == FG_ENOTFOUND)
            *noscript = true;
        else if (rc && !first_err)
            first_err = rc;
    }
    return first_err;
}

static int rd_check(fg_store_t *s, fg_check_t *checks, size_t n)
{
    rd_t *r = (rd_t *)s;
    bool noscript;
    int rc = run_batch(r, checks, n, &noscript);
    if (rc == 0 && noscript) {
        /* the script cache was flushed: no check of the batch ran; load and redo */
        if (load_script(r)) return FG_EUNAVAIL;
        rc = run_batch(r, checks, n, &noscript);
        if (rc == 0 && noscript) rc = fg_store_seterr(s, FG_EPROTO, "redis: script vanished twice");
    }
    return rc;
}

static int rd_get(fg_store_t *s, const char *resource, uint64_t *hwm)
{
    rd_t *r = (rd_t *)s;
    char kb[512], *heap;
    size_t kl;
    char *key = hwm_key(resource, kb, sizeof kb, &kl, &heap);
    if (!key) return FG_ENOMEM;
    const char *argv[] = {"GET", key};
    size_t lens[] = {3, kl};
    redisReply *rep = cmd(r, 2, argv, lens);
    free(heap);
    if (!rep) return FG_EUNAVAIL;
    int rc;
    if (rep->type == REDIS_REPLY_NIL)
        rc = FG_ENOTFOUND;
    else if (rep->type == REDIS_REPLY_STRING &&
             fg_token_parse(rep->str, (size_t)rep->len, hwm) == 0)
        rc = 0;
    else
        rc = fg_store_seterr(s, FG_EPROTO, "redis: bad hwm for %s", resource);
    freeReplyObject(rep);
    return rc;
}

static int rd_audit_append(fg_store_t *s, fg_audit_t *a)
{
    rd_t *r = (rd_t *)s;
    char tok[FG_TOKEN_STRLEN], hi[FG_TOKEN_STRLEN];
    if (a->has_token) fg_token_format(a->token, tok);
    if (a->has_highest) fg_token_format(a->highest, hi);
    const char *argv[24];
    size_t n = 0;
    argv[n++] = "XADD";
    argv[n++] = AUDIT_STREAM;
    argv[n++] = "MAXLEN";
    argv[n++] = "~";
    argv[n++] = r->maxlen;
    argv[n++] = "*";
#define FIELD(k, v)                                                                                \
    if (v) {                                                                                       \
        argv[n++] = k;                                                                             \
        argv[n++] = v;                                                                             \
    }
    FIELD("policy", a->policy)
    FIELD("resource", a->resource)
    FIELD("method", a->method)
    FIELD("path", a->path)
    FIELD("client", a->client)
    const char *tokp = a->has_token ? tok : NULL, *hip = a->has_highest ? hi : NULL;
    FIELD("token", tokp)
    FIELD("highest", hip)
    FIELD("reason", fg_reason_name(a->reason))
    FIELD("request_id", a->request_id)
#undef FIELD
    size_t lens[24];
    for (size_t i = 0; i < n; i++) lens[i] = strlen(argv[i]);
    redisReply *rep = cmd(r, (int)n, argv, lens);
    if (!rep) return FG_EUNAVAIL;
    int rc = 0;
    if (rep->type == REDIS_REPLY_STRING) {
        snprintf(a->id, sizeof a->id, "%s", rep->str);
        a->time_ms = strtoll(rep->str, NULL, 10);
    } else {
        rc = fg_store_seterr(s, FG_EPROTO, "redis XADD: %s",
                             rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    }
    freeReplyObject(rep);
    return rc;
}

/* Fill `a` from one stream entry [id, [k, v, ...]]; returns true when it passes the filters. */
static bool entry_to_audit(fg_audit_list_t *l, redisReply *e, const fg_audit_query_t *q,
                           fg_audit_t *a)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_ARRAY)
        return false;
    memset(a, 0, sizeof *a);
    snprintf(a->id, sizeof a->id, "%s", e->element[0]->str);
    a->time_ms = strtoll(e->element[0]->str, NULL, 10);
    redisReply *f = e->element[1];
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
        const char *ks = k->str;
        if (strcmp(ks, "resource") == 0) {
            if (q->resource && strcmp(v->str, q->resource) != 0) return false;
            a->resource = fg_audit_list_strndup(l, v->str, (size_t)v->len);
        } else if (strcmp(ks, "reason") == 0) {
            a->reason = fg_reason_parse(v->str);
            if (q->reason != FG_REASON_NONE && a->reason != q->reason) return false;
        } else if (strcmp(ks, "policy") == 0) {
            a->policy = fg_audit_list_strndup(l, v->str, (size_t)v->len);
        } else if (strcmp(ks, "method") == 0) {
            a->method = fg_audit_list_strndup(l, v->str, (size_t)v->len);
        } else if (strcmp(ks, "path") == 0) {
            a->path = fg_audit_list_strndup(l, v->str, (size_t)v->len);
        } else if (strcmp(ks, "client") == 0) {
            a->client = fg_audit_list_strndup(l, v->str, (size_t)v->len);
        } else if (strcmp(ks, "request_id") == 0) {
            a->request_id = fg_audit_list_strndup(l, v->str, (size_t)v->len);
        } else if (strcmp(ks, "token") == 0) {
            a->has_token = fg_token_parse(v->str, (size_t)v->len, &a->token) == 0;
        } else if (strcmp(ks, "highest") == 0) {
            a->has_highest = fg_token_parse(v->str, (size_t)v->len, &a->highest) == 0;
        }
    }
    if (q->resource && !a->resource) return false;
    if (q->reason != FG_REASON_NONE && a->reason != q->reason) return false;
    return true;
}

static int rd_audit_query(fg_store_t *s, const fg_audit_query_t *q, fg_audit_list_t *out)
{
    rd_t *r = (rd_t *)s;
    unsigned limit = q->limit ? q->limit : 100;
    if (fg_audit_list_reserve(out, limit)) return FG_ENOMEM;
    char end[48] = "+", start[48] = "-", count[16];
    if (q->since_ms >= 0) snprintf(start, sizeof start, "%lld", (long long)q->since_ms);
    bool filtered = q->resource || q->reason != FG_REASON_NONE;
    snprintf(count, sizeof count, "%u", filtered ? SCAN_PAGE : limit);
    size_t scanned = 0;
    while (out->n < limit && scanned < SCAN_MAX) {
        const char *argv[] = {"XREVRANGE", AUDIT_STREAM, end, start, "COUNT", count};
        size_t lens[6];
        for (int i = 0; i < 6; i++) lens[i] = strlen(argv[i]);
        redisReply *rep = cmd(r, 6, argv, lens);
        if (!rep) return FG_EUNAVAIL;
        if (rep->type != REDIS_REPLY_ARRAY) {
            int rc = fg_store_seterr(s, FG_EPROTO, "redis XREVRANGE: %s",
                                     rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected");
            freeReplyObject(rep);
            return rc;
        }
        size_t got = rep->elements;
        for (size_t i = 0; i < got && out->n < limit; i++)
            if (entry_to_audit(out, rep->element[i], q, &out->items[out->n])) out->n++;
        scanned += got;
        if (got) {
            /* continue strictly before the last id seen: "(" exclusive range */
            redisReply *last = rep->element[got - 1];
            if (last->type == REDIS_REPLY_ARRAY && last->elements >= 1 &&
                last->element[0]->type == REDIS_REPLY_STRING)
                snprintf(end, sizeof end, "(%s", last->element[0]->str);
        }
        freeReplyObject(rep);
        if (got < (size_t)strtoul(count, NULL, 10)) break;
    }
    return 0;
}

/* Delete the oldest entries up to (excluding) `end_excl` ("+" for no bound),
 * at most `count`: XRANGE then XDEL, exact and bounded by `count`. */
static int delete_oldest(rd_t *r, const char *end, size_t count, size_t *deleted)
{
    char cnt[24];
    snprintf(cnt, sizeof cnt, "%zu", count);
    const char *argv[] = {"XRANGE", AUDIT_STREAM, "-", end, "COUNT", cnt};
    size_t lens[6];
    for (int i = 0; i < 6; i++) lens[i] = strlen(argv[i]);
    redisReply *rep = cmd(r, 6, argv, lens);
    if (!rep) return FG_EUNAVAIL;
    if (rep->type != REDIS_REPLY_ARRAY) {
        int rc = fg_store_seterr(&r->base, FG_EPROTO, "redis XRANGE: %s",
                                 rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected");
        freeReplyObject(rep);
        return rc;
    }
    size_t n = rep->elements;
    int rc = 0;
    if (n) {
        const char **dargv = malloc((n + 2) * sizeof *dargv);
        size_t *dlens = malloc((n + 2) * sizeof *dlens);
        if (!dargv || !dlens) {
            rc = FG_ENOMEM;
        } else {
            dargv[0] = "XDEL";
            dargv[1] = AUDIT_STREAM;
            size_t k = 2;
            for (size_t i = 0; i < n; i++) {
                redisReply *e = rep->element[i];
                if (e->type == REDIS_REPLY_ARRAY && e->elements >= 1 &&
                    e->element[0]->type == REDIS_REPLY_STRING)
                    dargv[k++] = e->element[0]->str;
            }
            for (size_t i = 0; i < k; i++) dlens[i] = strlen(dargv[i]);
            redisReply *d = cmd(r, (int)k, dargv, dlens);
            if (!d)
                rc = FG_EUNAVAIL;
            else if (d->type == REDIS_REPLY_INTEGER)
                *deleted += (size_t)d->integer;
            else
                rc = fg_store_seterr(&r->base, FG_EPROTO, "redis XDEL failed");
            freeReplyObject(d);
        }
        free(dargv);
        free(dlens);
    }
    freeReplyObject(rep);
    return rc;
}

static int rd_audit_purge(fg_store_t *s, int64_t older_than_ms, uint64_t keep_max, size_t batch,
                          size_t *deleted)
{
    rd_t *r = (rd_t *)s;
    *deleted = 0;
    int rc = 0;
    if (older_than_ms >= 0) {
        char end[32]; /* ids are "<ms>-<seq>": everything before <ms>-0 is older */
        snprintf(end, sizeof end, "(%lld-0", (long long)older_than_ms);
        rc = delete_oldest(r, end, batch, deleted);
    }
    if (!rc && keep_max) {
        const char *argv[] = {"XLEN", AUDIT_STREAM};
        size_t lens[] = {4, strlen(AUDIT_STREAM)};
        redisReply *rep = cmd(r, 2, argv, lens);
        if (!rep) return FG_EUNAVAIL;
        long long len = rep->type == REDIS_REPLY_INTEGER ? rep->integer : 0;
        freeReplyObject(rep);
        if ((uint64_t)len > keep_max) {
            uint64_t excess = (uint64_t)len - keep_max;
            rc = delete_oldest(r, "+", excess < batch ? (size_t)excess : batch, deleted);
        }
    }
    return rc;
}

static int rd_ping(fg_store_t *s)
{
    rd_t *r = (rd_t *)s;
    const char *argv[] = {"PING"};
    size_t lens[] = {4};
    redisReply *rep = cmd(r, 1, argv, lens);
    if (!rep) return FG_EUNAVAIL;
    int rc = rep->type == REDIS_REPLY_ERROR
                 ? fg_store_seterr(s, FG_EUNAVAIL, "redis PING: %s", rep->str)
                 : 0;
    freeReplyObject(rep);
    return rc;
}

const fg_store_backend_t fg_store_redis = {
    .scheme = "redis",
    .max_pool = 64,
    .create = rd_create,
    .connect = rd_connect,
    .disconnect = rd_disconnect,
    .destroy = rd_destroy,
    .check = rd_check,
    .get = rd_get,
    .audit_append = rd_audit_append,
    .audit_query = rd_audit_query,
    .audit_purge = rd_audit_purge,
    .ping = rd_ping,
};
