/*
 * admin.c -- the admin listener (SPEC "Admin API"): probes, metrics, hwm
 * look-ups and the audit trail.
 *
 * It runs its own small libmicrohttpd daemon (one internal thread) and its own
 * store connection, apart from the request path, so that an operator's audit
 * query never competes with fence checks for a pooled connection, and a
 * flood of proxy traffic never hides /healthz.
 */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "gateway/gateway_int.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/problem.h"
#include "policy/error.h"
#include "policy/path.h"
#include "policy/token.h"

#define ADMIN_TOKEN_MAX 512

struct fg_admin {
    fg_gateway_t *gw;
    struct MHD_Daemon *d;
    pthread_mutex_t mu; /* guards store and token */
    fg_store_t *store;
    char token[ADMIN_TOKEN_MAX]; /* "" = open */
};

typedef struct admin_req {
    char *raw;
} admin_req_t;

static int read_token_file(const char *path, char *out, size_t cap, char *err, size_t err_len)
{
    out[0] = '\0';
    if (!path || !path[0]) return 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, err_len, "cannot read admin_token_file %s", path);
        return FG_EIO;
    }
    size_t n = fread(out, 1, cap - 1, f);
    fclose(f);
    out[n] = '\0';
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' ')) out[--n] = '\0';
    if (n == 0) {
        snprintf(err, err_len, "admin_token_file %s is empty", path);
        return FG_ECONFIG;
    }
    return 0;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *ctype,
                             char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer realm=\"fencegate\"");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!s) return MHD_NO;
    return reply(c, status, "application/json", s, strlen(s));
}

static enum MHD_Result problem(struct MHD_Connection *c, int status, const char *type,
                               const char *title, const char *detail)
{
    fg_problem_t p = {.status = status, .type = type, .title = title, .detail = detail};
    size_t len;
    char *s = fg_problem_json(&p, &len);
    if (!s) return MHD_NO;
    return reply(c, (unsigned)status, "application/problem+json", s, len);
}

/* Constant-time compare of the Authorization header against the token. */
static bool authorized(fg_admin_t *a, struct MHD_Connection *c)
{
    pthread_mutex_lock(&a->mu);
    char tok[ADMIN_TOKEN_MAX];
    memcpy(tok, a->token, sizeof tok);
    pthread_mutex_unlock(&a->mu);
    if (!tok[0]) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    h += 7;
    size_t hl = strlen(h), tl = strlen(tok);
    unsigned char diff = (unsigned char)(hl != tl);
    for (size_t i = 0; i < tl; i++) diff |= (unsigned char)(tok[i] ^ (i < hl ? h[i] : 0));
    return diff == 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decode one query value (%XX and '+'); refuses bad escapes and NUL. */
static int decode_qvalue(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '+') {
            ch = ' ';
        } else if (ch == '%') {
            if (i + 2 >= n) return FG_EINVAL;
            int h1 = hexval(s[i + 1]), h2 = hexval(s[i + 2]);
            if (h1 < 0 || h2 < 0) return FG_EINVAL;
            ch = (char)(h1 * 16 + h2);
            if (ch == 0) return FG_EINVAL;
            i += 2;
        }
        if (o + 1 >= cap) return FG_EFULL;
        out[o++] = ch;
    }
    out[o] = '\0';
    return (int)o;
}

/* Find query parameter `name` in the raw query; decoded into out. 1 found, 0 absent, <0 bad. */
static int query_param(const char *q, const char *name, char *out, size_t cap)
{
    if (!q) return 0;
    size_t nl = strlen(name);
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        size_t kl = eq ? (size_t)(eq - q) : len;
        if (kl == nl && memcmp(q, name, nl) == 0) {
            const char *v = eq ? eq + 1 : q + len;
            int rc = decode_qvalue(v, (size_t)(q + len - v), out, cap);
            return rc < 0 ? rc : 1;
        }
        q += len;
        if (*q == '&') q++;
    }
    return 0;
}

/* RFC 3339 ("2026-11-28T12:00:00Z", fraction and offset allowed) or Unix seconds. */
static int parse_since(const char *s, int64_t *ms)
{
    uint64_t secs;
    if (fg_token_parse(s, strlen(s), &secs) == 0) {
        if (secs > (uint64_t)INT64_MAX / 1000) return FG_EINVAL;
        *ms = (int64_t)secs * 1000;
        return 0;
    }
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p) p = strptime(s, "%Y-%m-%dt%H:%M:%S", &tm);
    if (!p) return FG_EINVAL;
    int64_t frac_ms = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (digits < 3) frac_ms = frac_ms * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (!digits) return FG_EINVAL;
        for (; digits < 3; digits++) frac_ms *= 10;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
        int hh = (p[1] - '0') * 10 + (p[2] - '0'), mm = (p[4] - '0') * 10 + (p[5] - '0');
        off = (int64_t)(hh * 3600 + mm * 60) * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return FG_EINVAL;
    }
    if (*p) return FG_EINVAL;
    time_t t = timegm(&tm);
    *ms = ((int64_t)t - off) * 1000 + frac_ms;
    return 0;
}

static enum MHD_Result get_resource(fg_admin_t *a, struct MHD_Connection *c, const char *seg,
                                    size_t len)
{
    char key[4 * FG_PATH_MAX];
    if (len == 0 || fg_path_decode_segment(seg, len, key, sizeof key) < 0)
        return problem(c, 400, "bad-request", "Bad resource key",
                       "{key} must be one percent-encoded path segment");
    uint64_t hwm = 0;
    pthread_mutex_lock(&a->mu);
    int rc = fg_store_get(a->store, key, &hwm);
    char why[FG_STORE_ERR_LEN];
    snprintf(why, sizeof why, "%s", fg_store_errstr(a->store));
    pthread_mutex_unlock(&a->mu);
    if (rc == FG_ENOTFOUND)
        return problem(c, 404, "not-found", "No such resource", "no write was accepted for it");
    if (rc) return problem(c, 503, "state-unavailable", "State store unavailable", why);
    json_t *o = json_pack("{s:s}", "resource", key);
    if (!o) return MHD_NO;
    fg_u64_field_t f = {"highest", true, hwm};
    size_t n;
    char *s = fg_json_dumps_u64(o, &f, 1, &n);
    json_decref(o);
    if (!s) return MHD_NO;
    return reply(c, 200, "application/json", s, n);
}

static char *audit_entry(const fg_audit_t *e)
{
    char ts[40];
    fg_format_time(e->time_ms, ts, sizeof ts);
    json_t *o = json_pack("{s:s,s:s,s:s?,s:s?,s:s?,s:s?,s:s?}", "id", e->id, "time", ts, "policy",
                          e->policy, "resource", e->resource, "method", e->method, "path", e->path,
                          "client", e->client);
    if (!o) return NULL;
    /* keep the SPEC's field order: token and highest, then reason and request_id */
    fg_u64_field_t f[2] = {{"token", e->has_token, e->token},
                           {"highest", e->has_highest, e->highest}};
    char *head = fg_json_dumps_u64(o, f, 2, NULL);
    json_decref(o);
    if (!head) return NULL;
    json_t *tail =
        json_pack("{s:s?,s:s?}", "reason", fg_reason_name(e->reason), "request_id", e->request_id);
    char *ts2 = tail ? json_dumps(tail, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(tail);
    if (!ts2) {
        free(head);
        return NULL;
    }
    size_t hl = strlen(head), tl = strlen(ts2);
    char *out = malloc(hl + tl + 1);
    if (out) {
        memcpy(out, head, hl - 1);
        out[hl - 1] = ',';
        memcpy(out + hl, ts2 + 1, tl); /* drop '{', keep the rest incl. NUL */
    }
    free(head);
    free(ts2);
    return out;
}

static enum MHD_Result get_audit(fg_admin_t *a, struct MHD_Connection *c, const char *query)
{
    char resource[4 * FG_PATH_MAX], reason[32], since[64], limit[32];
    fg_audit_query_t q = {.since_ms = -1, .limit = 100};
    int rc = query_param(query, "resource", resource, sizeof resource);
    if (rc < 0) return problem(c, 400, "bad-request", "Bad query", "bad escape in 'resource'");
    if (rc == 1 && resource[0]) q.resource = resource;
    rc = query_param(query, "reason", reason, sizeof reason);
    if (rc < 0 || (rc == 1 && reason[0] && fg_reason_parse(reason) == FG_REASON_NONE))
        return problem(c, 400, "bad-request", "Bad query",
                       "reason must be one of stale, missing, malformed, unmatched, report-only, "
                       "state-error");
    if (rc == 1 && reason[0]) q.reason = fg_reason_parse(reason);
    rc = query_param(query, "since", since, sizeof since);
    if (rc < 0 || (rc == 1 && since[0] && parse_since(since, &q.since_ms) != 0))
        return problem(c, 400, "bad-request", "Bad query",
                       "since must be RFC 3339 (2026-11-28T12:00:00Z) or Unix seconds");
    rc = query_param(query, "limit", limit, sizeof limit);
    if (rc == 1 && limit[0]) {
        uint64_t l;
        if (fg_token_parse(limit, strlen(limit), &l) != 0 || l < 1 || l > 1000)
            return problem(c, 400, "bad-request", "Bad query", "limit must be 1 to 1000");
        q.limit = (unsigned)l;
    } else if (rc < 0) {
        return problem(c, 400, "bad-request", "Bad query", "limit must be 1 to 1000");
    }
    fg_audit_list_t list = {0};
    pthread_mutex_lock(&a->mu);
    rc = fg_store_audit_query(a->store, &q, &list);
    char why[FG_STORE_ERR_LEN];
    snprintf(why, sizeof why, "%s", fg_store_errstr(a->store));
    pthread_mutex_unlock(&a->mu);
    if (rc) return problem(c, 503, "state-unavailable", "State store unavailable", why);
    size_t cap = 64, len = 0;
    char *out = malloc(cap);
    bool ok = out != NULL;
    const char *open = "{\"entries\":[";
    if (ok) {
        memcpy(out, open, strlen(open));
        len = strlen(open);
    }
    for (size_t i = 0; ok && i < list.n; i++) {
        char *e = audit_entry(&list.items[i]);
        if (!e) {
            ok = false;
            break;
        }
        size_t el = strlen(e);
        if (len + el + 4 > cap) {
            while (len + el + 4 > cap) cap *= 2;
            char *np = realloc(out, cap);
            if (!np) {
                free(e);
                ok = false;
                break;
            }
            out = np;
        }
        if (i) out[len++] = ',';
        memcpy(out + len, e, el);
        len += el;
        free(e);
    }
    fg_audit_list_free(&list);
    if (!ok) {
        free(out);
        return MHD_NO;
    }
    memcpy(out + len, "]}", 3);
    len += 2;
    return reply(c, 200, "application/json", out, len);
}

static enum MHD_Result on_admin(void *cls, struct MHD_Connection *c, const char *url,
                                const char *method, const char *version, const char *upload,
                                size_t *upload_size, void **con_cls)
{
    (void)url;
    (void)version;
    (void)upload;
    fg_admin_t *a = cls;
    admin_req_t *ar = *con_cls;
    if (*upload_size) {
        *upload_size = 0; /* the admin API takes no bodies */
        return MHD_YES;
    }
    const char *raw = ar && ar->raw ? ar->raw : url;
    const char *qm = strchr(raw, '?');
    size_t plen = qm ? (size_t)(qm - raw) : strlen(raw);
    const char *query = qm ? qm + 1 : NULL;
#define PATH_IS(s) (plen == strlen(s) && memcmp(raw, s, plen) == 0)
    bool is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (PATH_IS("/healthz")) {
        if (!is_get) return problem(c, 405, "method-not-allowed", "Method not allowed", "use GET");
        char *s = strdup("{\"status\":\"ok\"}");
        return s ? reply(c, 200, "application/json", s, strlen(s)) : MHD_NO;
    }
    if (PATH_IS("/readyz")) {
        if (!is_get) return problem(c, 405, "method-not-allowed", "Method not allowed", "use GET");
        pthread_mutex_lock(&a->mu);
        int rc = fg_store_ping(a->store);
        char why[FG_STORE_ERR_LEN];
        snprintf(why, sizeof why, "%s", fg_store_errstr(a->store));
        pthread_mutex_unlock(&a->mu);
        fg_metrics_set_store_up(rc == 0);
        if (rc)
            return reply_json(c, 503,
                              json_pack("{s:s,s:s}", "status", "unavailable", "detail", why));
        return reply_json(c, 200, json_pack("{s:s}", "status", "ready"));
    }
    bool known = PATH_IS("/metrics") || PATH_IS("/v1/audit") ||
                 (plen > 14 && memcmp(raw, "/v1/resources/", 14) == 0);
    if (!known) return problem(c, 404, "not-found", "Not found", "no such admin endpoint");
    if (!authorized(a, c))
        return problem(c, 401, "unauthorized", "Unauthorized",
                       "send Authorization: Bearer <token from admin_token_file>");
    if (!is_get) return problem(c, 405, "method-not-allowed", "Method not allowed", "use GET");
    if (PATH_IS("/metrics")) {
        size_t len;
        char *s = fg_metrics_render(&len);
        return s ? reply(c, 200, "text/plain; version=0.0.4", s, len) : MHD_NO;
    }
    if (PATH_IS("/v1/audit")) return get_audit(a, c, query);
    return get_resource(a, c, raw + 14, plen - 14);
#undef PATH_IS
}

static void *admin_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)cls;
    (void)c;
    admin_req_t *ar = calloc(1, sizeof *ar);
    if (ar && !(ar->raw = strdup(uri))) {
        free(ar);
        ar = NULL;
    }
    return ar;
}

static void admin_done(void *cls, struct MHD_Connection *c, void **con_cls,
                       enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    admin_req_t *ar = *con_cls;
    if (ar) {
        free(ar->raw);
        free(ar);
    }
    *con_cls = NULL;
}

static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

int fg_admin_start(fg_gateway_t *gw, fg_admin_t **out, char *err, size_t err_len)
{
    *out = NULL;
    const fg_config_t *cfg = gw->boot;
    fg_admin_t *a = calloc(1, sizeof *a);
    if (!a) return FG_ENOMEM;
    a->gw = gw;
    pthread_mutex_init(&a->mu, NULL);
    int rc = read_token_file(cfg->admin_token_file, a->token, sizeof a->token, err, err_len);
    fg_store_opts_t so = {
        .timeout_ms = cfg->state_timeout_ms, .backoff_min_ms = 50, .backoff_max_ms = 500};
    if (!rc) rc = fg_store_open(cfg->state, &so, &a->store, err, err_len);
    int fd = rc ? -1 : fg_listen_socket(cfg->admin_listen, false, err, err_len);
    if (!rc && fd < 0) rc = FG_EIO;
    if (!rc) {
        a->d = MHD_start_daemon(
            MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL, on_admin, a,
            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_URI_LOG_CALLBACK, admin_uri, NULL,
            MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, MHD_OPTION_NOTIFY_COMPLETED,
            admin_done, NULL, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
        if (!a->d) {
            snprintf(err, err_len, "cannot start the admin listener on %s", cfg->admin_listen);
            rc = FG_EIO;
        }
    }
    if (rc) {
        if (fd >= 0 && !a->d) close(fd);
        fg_admin_stop(a);
        return rc;
    }
    *out = a;
    return 0;
}

void fg_admin_reload(fg_admin_t *a, const fg_config_t *cfg)
{
    char tok[ADMIN_TOKEN_MAX], err[256];
    if (read_token_file(cfg->admin_token_file, tok, sizeof tok, err, sizeof err) != 0) {
        fg_log(FG_LOG_ERROR, "admin token not reloaded; keeping the old one",
               json_pack("{s:s}", "error", err));
        return;
    }
    pthread_mutex_lock(&a->mu);
    memcpy(a->token, tok, sizeof tok);
    pthread_mutex_unlock(&a->mu);
}

void fg_admin_stop(fg_admin_t *a)
{
    if (!a) return;
    if (a->d) MHD_stop_daemon(a->d);
    if (a->store) fg_store_close(a->store);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
