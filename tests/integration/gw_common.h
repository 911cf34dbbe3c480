/*
 * gw_common.h -- set-up shared by the gateway integration tests: a demo-store
 * upstream, a state store (SQLite file or a private redis-server), and the
 * real fencegate binary in front, all on free loopback ports.
 *
 * Header-only (static functions) so that each test file stays one executable.
 */
#ifndef FG_TEST_GW_COMMON_H
#define FG_TEST_GW_COMMON_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness/harness.h"

typedef enum { STORE_SQLITE, STORE_REDIS, STORE_POSTGRES } store_kind_t;

typedef struct env {
    fgt_upstream_t up;
    fgt_redis_t redis;
    bool has_redis;
    fgt_pg_t pg;
    bool has_pg;
    fgt_gateway_t gw;
    char state[256];
} env_t;

#define BASE_POLICIES                                                                              \
    "[policy orders]\n"                                                                            \
    "match = /orders/{id}\n"                                                                       \
    "key = order:{id}\n"                                                                           \
    "\n"                                                                                           \
    "[policy docs]\n"                                                                              \
    "match = /docs/{tenant}/{rest*}\n"                                                             \
    "key = doc:{tenant}:{rest}\n"                                                                  \
    "compare = >\n"                                                                                \
    "token_header = X-Lock-Token\n"

/* Start upstream (delay 0..delay_ms), store, and gateway with [gateway] extras
 * `gw_extra` and policies `policies` (NULL: BASE_POLICIES). */
static inline void env_start(env_t *e, store_kind_t kind, int delay_ms, const char *gw_extra,
                             const char *policies)
{
    memset(e, 0, sizeof *e);
    fgt_upstream_start(&e->up, delay_ms);
    if (kind == STORE_REDIS) {
        fgt_redis_start(&e->redis);
        e->has_redis = true;
        snprintf(e->state, sizeof e->state, "%s", e->redis.url);
    } else if (kind == STORE_POSTGRES) {
        fgt_pg_start(&e->pg);
        e->has_pg = true;
        snprintf(e->state, sizeof e->state, "%s", e->pg.url);
    } else {
        snprintf(e->state, sizeof e->state, "sqlite:{dir}/fg.db");
    }
    char conf[8192];
    snprintf(conf, sizeof conf,
             "[gateway]\nlisten = {listen}\nadmin_listen = {admin}\nupstream = %s\nstate = %s\n"
             "%s\n%s",
             e->up.url, e->state, gw_extra ? gw_extra : "", policies ? policies : BASE_POLICIES);
    fgt_gateway_start(&e->gw, conf);
}

/* Stop everything; the gateway must drain and exit 0 (under ASan this also
 * fails the test on a leak or any sanitizer report). */
static inline void env_stop(env_t *e)
{
    int st = fgt_gateway_stop(&e->gw);
    char *log = fgt_read_file(e->gw.proc.log[0] ? e->gw.proc.log : "/dev/null");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "gateway exit status %d; log:\n%s", st,
              log ? log : "");
    /* SPEC: logs are one JSON object per line */
    for (char *line = log, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        json_t *j = json_loads(line, 0, NULL);
        cr_assert(json_is_object(j), "log line is not a JSON object: %s", line);
        json_decref(j);
    }
    free(log);
    if (e->has_redis) fgt_redis_stop(&e->redis);
    fgt_upstream_stop(&e->up);
}

static inline fgt_resp_t gw_req(env_t *e, const char *method, const char *path,
                                const char *const headers[], const char *body)
{
    char url[9000];
    snprintf(url, sizeof url, "%s%s", e->gw.url, path);
    return fgt_http(method, url, headers, body, body ? strlen(body) : 0);
}

/* PUT `path` with Fencing-Token `token` (NULL: no token header). Returns the status. */
static inline long put_tok(env_t *e, const char *path, const char *token, const char *body)
{
    char h[128];
    snprintf(h, sizeof h, "Fencing-Token: %s", token ? token : "");
    const char *hdrs[] = {h, NULL};
    fgt_resp_t r = gw_req(e, "PUT", path, token ? hdrs : NULL, body ? body : "v");
    long st = r.status;
    fgt_resp_free(&r);
    return st;
}

/* GET an admin path; returns parsed JSON (caller decrefs) and the status in *status. */
static inline json_t *admin_get(env_t *e, const char *path, long *status)
{
    char url[1024];
    snprintf(url, sizeof url, "%s%s", e->gw.admin_url, path);
    fgt_resp_t r = fgt_http("GET", url, NULL, NULL, 0);
    if (status) *status = r.status;
    json_t *j = fgt_resp_json(&r);
    fgt_resp_free(&r);
    return j;
}

/* Audit entries for `resource` (or all when NULL), newest first. Caller decrefs. */
static inline json_t *audit_entries(env_t *e, const char *query)
{
    char path[512];
    snprintf(path, sizeof path, "/v1/audit%s%s", query ? "?" : "", query ? query : "");
    long st = 0;
    json_t *j = admin_get(e, path, &st);
    cr_assert_eq(st, 200, "GET %s -> %ld", path, st);
    json_t *entries = json_object_get(j, "entries");
    cr_assert(json_is_array(entries));
    json_incref(entries);
    json_decref(j);
    return entries;
}

/* Number of writes the upstream received for `path`. */
static inline size_t upstream_writes(env_t *e, const char *path)
{
    json_t *log = fgt_upstream_log(&e->up);
    size_t n = 0, i;
    json_t *w;
    json_array_foreach(log, i, w)
    {
        if (!path || strcmp(json_string_value(json_object_get(w, "path")), path) == 0) n++;
    }
    json_decref(log);
    return n;
}

/* hwm of `key` via the admin API; returns false when 404. */
static inline bool hwm_of(env_t *e, const char *key, char *out, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "/v1/resources/%s", key);
    char url[1024];
    snprintf(url, sizeof url, "%s%s", e->gw.admin_url, path);
    fgt_resp_t r = fgt_http("GET", url, NULL, NULL, 0);
    bool found = r.status == 200;
    if (found) {
        /* read "highest" as text: it may exceed 2^63 */
        const char *p = r.body ? strstr(r.body, "\"highest\":") : NULL;
        cr_assert(p, "no highest in %s", r.body);
        p += 10;
        size_t n = strspn(p, "0123456789");
        snprintf(out, len, "%.*s", (int)n, p);
    } else {
        cr_assert_eq(r.status, 404, "resources/%s -> %ld", key, r.status);
    }
    fgt_resp_free(&r);
    return found;
}

#endif
