/*
 * admin.c -- the admin listener (SPEC "Admin API"): probes, status, metrics,
 * hwm look-ups, raise and reset, and the audit trail.
 *
 * It runs its own libmicrohttpd daemon and its own store connection, apart
 * from the request path, so that an operator's audit query never competes
 * with fence checks for a pooled connection. Its connections have their own
 * budget (admin_max_connections) and a per-connection timeout, and each has
 * its own thread: /healthz never touches the store or the store lock, so it
 * answers while the store hangs, while slow admin clients dawdle, and while
 * the client listener is flooded. Every store call has a deadline
 * (state_timeout), and the store lock is only ever waited for until a
 * deadline too.
 */
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
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
#include "gateway/token_file.h"
#include "policy/error.h"
#include "policy/path.h"
#include "policy/token.h"

#define ADMIN_BODY_MAX  16384 /* raise/reset bodies */
#define ADMIN_TIMEOUT_S 10    /* an admin connection idle this long is closed */

struct fg_admin {
    fg_gateway_t *gw;
    struct MHD_Daemon *d;
    pthread_mutex_t token_mu; /* guards token/token_len (SIGHUP swaps them) */
    char token[FG_TOKEN_FILE_MAX + 1];
    size_t token_len;         /* 0 = no admin_token_file: /metrics and /v1 reads are open */
    pthread_mutex_t store_mu; /* guards store; waited for only until a deadline */
    fg_store_t *store;
    uint64_t timeout_ms;
};

typedef struct admin_req {
    char *raw;
    bool started; /* the handler has seen this request once */
    char *body;
    size_t body_len;
    bool body_too_large;
} admin_req_t;

/* Read the token file by the rules of token_file.h; warn when it is readable
 * by group or others. An unset file leaves `out` empty (open API). */
static int read_token_file(const char *path, char *out, size_t *len, char *err, size_t err_len)
{
    out[0] = '\0';
    *len = 0;
    if (!path || !path[0]) return 0;
    bool loose = false;
    int rc = fg_token_file_read(path, out, len, &loose, err, err_len);
    if (!rc && loose)
        fg_log(FG_LOG_WARN, "admin_token_file is readable by group or others; chmod 600 it",
               json_pack("{s:s}", "file", path));
    return rc;
}

/* Lock the store until the call's deadline: 0, or FG_ETIMEOUT. */
static int lock_store(fg_admin_t *a)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (a->timeout_ms % 1000) * 1000000ULL;
    ts.tv_sec += (time_t)(a->timeout_ms / 1000 + ns / 1000000000ULL);
    ts.tv_nsec = (long)(ns % 1000000000ULL);
    return pthread_mutex_timedlock(&a->store_mu, &ts) == 0 ? 0 : FG_ETIMEOUT;
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

/* Is a token file configured (raise and reset need one)? */
static bool has_token(fg_admin_t *a)
{
    pthread_mutex_lock(&a->token_mu);
    bool set = a->token_len > 0;
    pthread_mutex_unlock(&a->token_mu);
    return set;
}

/* Constant-time compare of the Authorization header against the token. */
static bool authorized(fg_admin_t *a, struct MHD_Connection *c)
{
    char tok[FG_TOKEN_FILE_MAX + 1];
    pthread_mutex_lock(&a->token_mu);
    size_t tl = a->token_len;
    memcpy(tok, a->token, tl + 1);
    pthread_mutex_unlock(&a->token_mu);
    if (tl == 0) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    h += 7;
    size_t hl = strlen(h);
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

/* A JSON string for text read back from a store: records written before the
 * audit text was escaped may hold invalid UTF-8, which jansson refuses. */
static json_t *safe_string(const char *v)
{
    if (!v) return json_null();
    json_t *j = json_string(v);
    if (j) return j;
    char *e = fg_audit_escape(v, strlen(v), 0, NULL);
    j = e ? json_string(e) : NULL;
    free(e);
    return j ? j : json_null();
}

/* Run `what` under the store lock, with the store's error text copied out. */
#define WITH_STORE(a, rc, why, call)                                                               \
    do {                                                                                           \
        (rc) = lock_store(a);                                                                      \
        if ((rc) == 0) {                                                                           \
            (rc) = (call);                                                                         \
            snprintf((why), sizeof(why), "%s", fg_store_errstr((a)->store));                       \
            pthread_mutex_unlock(&(a)->store_mu);                                                  \
        } else {                                                                                   \
            snprintf((why), sizeof(why), "the admin store connection is busy");                    \
            (rc) = FG_EUNAVAIL;                                                                    \
        }                                                                                          \
    } while (0)

static enum MHD_Result store_problem(struct MHD_Connection *c, int rc, const char *why)
{
    if (rc == FG_EDATA || rc == FG_EINVAL)
        return problem(c, 400, "bad-request", "The state store refused the request", why);
    return problem(c, 503, "state-unavailable", "State store unavailable", why);
}

/* {"resource": key, "highest": N} */
static enum MHD_Result reply_hwm(struct MHD_Connection *c, const char *key, uint64_t hwm)
{
    json_t *o = json_object();
    if (!o || json_object_set_new(o, "resource", safe_string(key))) {
        json_decref(o);
        return MHD_NO;
    }
    fg_u64_field_t f = {"highest", true, hwm};
    size_t n;
    char *s = fg_json_dumps_u64(o, &f, 1, &n);
    json_decref(o);
    if (!s) return MHD_NO;
    return reply(c, 200, "application/json", s, n);
}

static enum MHD_Result get_resource(fg_admin_t *a, struct MHD_Connection *c, const char *key)
{
    uint64_t hwm = 0;
    char why[FG_STORE_ERR_LEN];
    int rc;
    WITH_STORE(a, rc, why, fg_store_get(a->store, key, &hwm));
    if (rc == FG_ENOTFOUND)
        return problem(c, 404, "not-found", "No such resource", "no write was accepted for it");
    if (rc) return store_problem(c, rc, why);
    return reply_hwm(c, key, hwm);
}

static char *audit_entry(const fg_audit_t *e)
{
    char ts[40];
    fg_format_time(e->time_ms, ts, sizeof ts);
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "id", json_string(e->id));
    json_object_set_new(o, "time", json_string(ts));
    json_object_set_new(o, "policy", safe_string(e->policy));
    json_object_set_new(o, "resource", safe_string(e->resource));
    json_object_set_new(o, "method", safe_string(e->method));
    json_object_set_new(o, "path", safe_string(e->path));
    json_object_set_new(o, "client", safe_string(e->client));
    /* keep the SPEC's field order: token and highest, then reason and request_id */
    fg_u64_field_t f[2] = {{"token", e->has_token, e->token},
                           {"highest", e->has_highest, e->highest}};
    char *head = fg_json_dumps_u64(o, f, 2, NULL);
    json_decref(o);
    if (!head) return NULL;
    json_t *tail = json_object();
    if (tail) {
        const char *rn = fg_reason_name(e->reason);
        json_object_set_new(tail, "reason", rn ? json_string(rn) : json_null());
        json_object_set_new(tail, "request_id", safe_string(e->request_id));
        if (e->path_truncated) json_object_set_new(tail, "path_truncated", json_true());
        if (e->detail) json_object_set_new(tail, "detail", safe_string(e->detail));
    }
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

/* Growing output buffer; ok turns false on ENOMEM and stays false. */
typedef struct obuf {
    char *p;
    size_t len, cap;
    bool ok;
} obuf_t;

static void ob_put(obuf_t *b, const char *s, size_t n)
{
    if (!b->ok) return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (b->len + n + 1 > nc) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->ok = false;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

#define REASONS_TEXT                                                                               \
    "reason must be one of stale, missing, malformed, unmatched, report-only, state-error, "       \
    "jump, reset"

static enum MHD_Result get_audit(fg_admin_t *a, struct MHD_Connection *c, const char *query)
{
    char resource[4 * FG_PATH_MAX], reason[32], since[64], limit[32];
    char cursor[FG_AUDIT_ID_LEN + 1], after_id[FG_AUDIT_ID_LEN + 1];
    fg_audit_query_t q = {.since_ms = -1, .limit = 100};
    int rc = query_param(query, "resource", resource, sizeof resource);
    if (rc < 0) return problem(c, 400, "bad-request", "Bad query", "bad escape in 'resource'");
    if (rc == 1 && resource[0]) q.resource = resource;
    rc = query_param(query, "reason", reason, sizeof reason);
    if (rc < 0 || (rc == 1 && reason[0] && fg_reason_parse(reason) == FG_REASON_NONE))
        return problem(c, 400, "bad-request", "Bad query", REASONS_TEXT);
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
    rc = query_param(query, "cursor", cursor, sizeof cursor);
    if (rc < 0) return problem(c, 400, "bad-request", "Bad query", "bad cursor");
    if (rc == 1 && cursor[0]) q.before_id = cursor;
    rc = query_param(query, "after", after_id, sizeof after_id);
    if (rc < 0) return problem(c, 400, "bad-request", "Bad query", "bad value of 'after'");
    if (rc == 1 && after_id[0]) q.after_id = after_id;
    if (q.before_id && q.after_id)
        return problem(c, 400, "bad-request", "Bad query", "cursor and after exclude each other");
    fg_audit_list_t list = {0};
    char why[FG_STORE_ERR_LEN];
    WITH_STORE(a, rc, why, fg_store_audit_query(a->store, &q, &list));
    if (rc == FG_EINVAL)
        return problem(c, 400, "bad-request", "Bad query",
                       "cursor/after is not an audit id of this store");
    if (rc) return store_problem(c, rc, why);
    obuf_t b = {.ok = true};
    ob_put(&b, "{\"entries\":[", 12);
    for (size_t i = 0; b.ok && i < list.n; i++) {
        char *e = audit_entry(&list.items[i]);
        if (!e) {
            b.ok = false;
            break;
        }
        if (i) ob_put(&b, ",", 1);
        ob_put(&b, e, strlen(e));
        free(e);
    }
    ob_put(&b, "]", 1);
    if (list.next[0]) {
        json_t *n = json_string(list.next);
        char *ns = n ? json_dumps(n, JSON_ENCODE_ANY) : NULL;
        json_decref(n);
        if (!ns) b.ok = false;
        ob_put(&b, ",\"next\":", 8);
        if (ns) ob_put(&b, ns, strlen(ns));
        free(ns);
    }
    ob_put(&b, "}", 1);
    fg_audit_list_free(&list);
    if (!b.ok) {
        free(b.p);
        return MHD_NO;
    }
    return reply(c, 200, "application/json", b.p, b.len);
}

/* The JSON object of a durability read. */
static json_t *durability_json(const fg_durability_t *d)
{
    json_t *o = json_object();
    if (!o) return NULL;
    for (size_t i = 0; i < d->n; i++)
        json_object_set_new(o, d->setting[i].name, safe_string(d->setting[i].value));
    json_object_set_new(o, "durable", json_boolean(d->durable));
    if (!d->durable && d->advice[0]) json_object_set_new(o, "advice", json_string(d->advice));
    return o;
}

/* Ping the store and read its durability: what /readyz and /v1/status show. */
static json_t *store_state(fg_admin_t *a, bool *ready)
{
    char why[FG_STORE_ERR_LEN];
    fg_durability_t d;
    memset(&d, 0, sizeof d);
    int rc;
    WITH_STORE(a, rc, why, fg_store_ping(a->store));
    if (rc == 0) {
        int drc;
        char why2[FG_STORE_ERR_LEN];
        WITH_STORE(a, drc, why2, fg_store_durability(a->store, &d));
        (void)drc;
    } else {
        /* a store refused as not durable still shows what it has */
        if (lock_store(a) == 0) {
            d = a->store->dur;
            pthread_mutex_unlock(&a->store_mu);
        }
    }
    fg_metrics_set_store_up(a->gw->metrics, rc == 0);
    *ready = rc == 0;
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "url", json_string(fg_store_display(a->store)));
    json_object_set_new(o, "up", json_boolean(rc == 0));
    if (rc) json_object_set_new(o, "detail", safe_string(why));
    if (d.n) json_object_set_new(o, "durability", durability_json(&d));
    return o;
}

/* {"status": "ready"|"unavailable", "detail"?: ...} with the store's state;
 * NULL on ENOMEM. */
static json_t *status_object(fg_admin_t *a, bool *ready)
{
    json_t *st = store_state(a, ready);
    json_t *o = json_object();
    if (!o || !st) {
        json_decref(o);
        json_decref(st);
        return NULL;
    }
    json_object_set_new(o, "status", json_string(*ready ? "ready" : "unavailable"));
    json_t *detail = json_object_get(st, "detail");
    if (detail) json_object_set(o, "detail", detail);
    json_object_set_new(o, "store", st);
    return o;
}

static enum MHD_Result get_readyz(fg_admin_t *a, struct MHD_Connection *c)
{
    bool ready;
    json_t *o = status_object(a, &ready);
    return o ? reply_json(c, ready ? 200 : 503, o) : MHD_NO;
}

static enum MHD_Result get_status(fg_admin_t *a, struct MHD_Connection *c)
{
    bool ready;
    json_t *o = status_object(a, &ready);
    if (!o) return MHD_NO;
    json_object_set_new(o, "version", json_string(FG_VERSION));
    json_object_set_new(o, "uptime_s",
                        json_integer((json_int_t)((fg_now_mono_ms() - a->gw->started_ms) / 1000)));
    json_object_set_new(o, "inflight",
                        json_integer(fg_metrics_gauge(a->gw->metrics, FG_GAUGE_INFLIGHT)));
    json_object_set_new(o, "refusals_last_minute",
                        json_integer((json_int_t)fg_metrics_refusals_last_minute(a->gw->metrics)));
    json_object_set_new(o, "require_durable", json_boolean(a->gw->boot->require_durable));
    return reply_json(c, 200, o);
}

/* The caller's address, numeric, for the audit record of a reset. */
static void client_addr(struct MHD_Connection *c, char *buf, size_t len)
{
    snprintf(buf, len, "unknown");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr) return;
    const struct sockaddr *sa = ci->client_addr;
    socklen_t sl =
        sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    char host[NI_MAXHOST];
    if (getnameinfo(sa, sl, host, sizeof host, NULL, 0, NI_NUMERICHOST) == 0)
        snprintf(buf, len, "%s", host);
}

/* "token": a JSON integer, or a string of 1-20 digits (for tokens above 2^63-1,
 * which JSON parsers commonly cannot hold). */
static bool body_token(json_t *body, uint64_t *tok)
{
    json_t *t = json_object_get(body, "token");
    if (json_is_integer(t) && json_integer_value(t) >= 0) {
        *tok = (uint64_t)json_integer_value(t);
        return true;
    }
    return json_is_string(t) &&
           fg_token_parse(json_string_value(t), json_string_length(t), tok) == 0;
}

static enum MHD_Result post_set(fg_admin_t *a, struct MHD_Connection *c, admin_req_t *ar,
                                const char *key, fg_set_mode_t mode)
{
    if (!has_token(a))
        return problem(c, 403, "forbidden", "Forbidden",
                       "raise and reset need admin_token_file to be set");
    if (ar->body_too_large) return problem(c, 413, "too-large", "Body too large", "at most 16 KiB");
    json_error_t je;
    json_t *body = ar->body ? json_loadb(ar->body, ar->body_len, 0, &je) : NULL;
    uint64_t tok = 0;
    if (!json_is_object(body) || !body_token(body, &tok)) {
        json_decref(body);
        return problem(c, 400, "bad-request", "Bad body",
                       "send {\"token\": N} (N a u64; as a string of digits above 2^63-1)");
    }
    const char *reason = json_string_value(json_object_get(body, "reason"));
    if (mode == FG_SET_RESET && (!reason || !reason[0])) {
        json_decref(body);
        return problem(c, 400, "bad-request", "Missing reason",
                       "a reset needs {\"token\": N, \"reason\": \"why\"}; it is audited");
    }
    char addr[NI_MAXHOST + 8], rid[40];
    client_addr(c, addr, sizeof addr);
    const char *hrid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (hrid && hrid[0] && strlen(hrid) < sizeof rid)
        snprintf(rid, sizeof rid, "%s", hrid);
    else
        snprintf(rid, sizeof rid, "admin-%llx%04x", (unsigned long long)fg_now_wall_ms(),
                 (unsigned)(fg_now_mono_ms() & 0xffff));
    fg_set_hwm_t op;
    memset(&op, 0, sizeof op);
    op.resource = key;
    op.token = tok;
    op.mode = mode;
    op.audit.method = "POST";
    op.audit.path = ar->raw;
    op.audit.client = addr;
    op.audit.request_id = rid;
    op.audit.detail = reason;
    char why[FG_STORE_ERR_LEN];
    int rc;
    WITH_STORE(a, rc, why, fg_store_set_hwm(a->store, &op));
    json_decref(body); /* `reason` pointed into it */
    if (rc) return store_problem(c, rc, why);
    json_t *f = json_pack("{s:s,s:s,s:s,s:s}", "action", mode == FG_SET_RESET ? "reset" : "raise",
                          "resource", key, "client", addr, "request_id", rid);
    char from[FG_TOKEN_STRLEN] = "none", to[FG_TOKEN_STRLEN];
    if (op.had_highest) fg_token_format(op.highest, from);
    fg_token_format(op.now, to);
    if (f) {
        json_object_set_new(f, "from", json_string(from));
        json_object_set_new(f, "to", json_string(to));
    }
    fg_log(FG_LOG_WARN, "high-water mark changed by an operator", f);
    return reply_hwm(c, key, op.now);
}

/* /v1/resources/{key}[/raise|/reset]: the decoded key and the action. */
static int resource_route(const char *p, size_t len, char *key, size_t cap, const char **action)
{
    const char *slash = memchr(p, '/', len);
    size_t kl = slash ? (size_t)(slash - p) : len;
    *action = NULL;
    if (slash) {
        size_t al = len - kl - 1;
        if (al == 5 && memcmp(slash + 1, "raise", 5) == 0)
            *action = "raise";
        else if (al == 5 && memcmp(slash + 1, "reset", 5) == 0)
            *action = "reset";
        else
            return -1;
    }
    if (kl == 0 || fg_path_decode_segment(p, kl, key, cap) < 0) return -2;
    return 0;
}

static enum MHD_Result on_admin(void *cls, struct MHD_Connection *c, const char *url,
                                const char *method, const char *version, const char *upload,
                                size_t *upload_size, void **con_cls)
{
    (void)version;
    fg_admin_t *a = cls;
    admin_req_t *ar = *con_cls;
    if (!ar) return MHD_NO;
    bool is_post = strcmp(method, "POST") == 0;
    if (!ar->started) {
        ar->started = true;
        if (is_post) return MHD_YES; /* the body comes in the next calls */
    }
    if (*upload_size) {
        if (is_post && !ar->body_too_large && ar->body_len + *upload_size <= ADMIN_BODY_MAX) {
            char *nb = realloc(ar->body, ar->body_len + *upload_size + 1);
            if (!nb) return MHD_NO;
            memcpy(nb + ar->body_len, upload, *upload_size);
            ar->body = nb;
            ar->body_len += *upload_size;
        } else {
            ar->body_too_large = is_post;
        }
        *upload_size = 0; /* other calls take no body */
        return MHD_YES;
    }
    const char *raw = ar->raw ? ar->raw : url;
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
        return get_readyz(a, c);
    }
    bool is_res = plen > 14 && memcmp(raw, "/v1/resources/", 14) == 0;
    bool known = PATH_IS("/metrics") || PATH_IS("/v1/audit") || PATH_IS("/v1/status") || is_res;
    if (!known) return problem(c, 404, "not-found", "Not found", "no such admin endpoint");
    if (!authorized(a, c))
        return problem(c, 401, "unauthorized", "Unauthorized",
                       "send Authorization: Bearer <token from admin_token_file>");
    if (is_res) {
        char key[4 * FG_PATH_MAX];
        const char *action;
        int rr = resource_route(raw + 14, plen - 14, key, sizeof key, &action);
        if (rr == -1) return problem(c, 404, "not-found", "Not found", "no such admin endpoint");
        if (rr < 0)
            return problem(c, 400, "bad-request", "Bad resource key",
                           "{key} must be one percent-encoded path segment");
        if (!action) {
            if (!is_get)
                return problem(c, 405, "method-not-allowed", "Method not allowed", "use GET");
            return get_resource(a, c, key);
        }
        if (!is_post)
            return problem(c, 405, "method-not-allowed", "Method not allowed", "use POST");
        return post_set(a, c, ar, key, action[2] == 'i' ? FG_SET_RAISE : FG_SET_RESET);
    }
    if (!is_get) return problem(c, 405, "method-not-allowed", "Method not allowed", "use GET");
    if (PATH_IS("/metrics")) {
        size_t len;
        char *s = fg_metrics_render(a->gw->metrics, &len);
        return s ? reply(c, 200, "text/plain; version=0.0.4", s, len) : MHD_NO;
    }
    if (PATH_IS("/v1/status")) return get_status(a, c);
    return get_audit(a, c, query);
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
        free(ar->body);
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
    pthread_mutex_init(&a->token_mu, NULL);
    pthread_mutex_init(&a->store_mu, NULL);
    a->timeout_ms = cfg->state_timeout_ms;
    int rc = read_token_file(cfg->admin_token_file, a->token, &a->token_len, err, err_len);
    fg_store_opts_t so = fg_gateway_store_opts(gw);
    so.backoff_max_ms = 500; /* probes should see a store that is back soon */
    so.log = NULL;           /* the pool's handles report the store going down and up */
    if (!rc) rc = fg_store_open(cfg->state, &so, &a->store, err, err_len);
    int fd = rc ? -1 : fg_listen_socket(cfg->admin_listen, false, err, err_len);
    if (!rc && fd < 0) rc = FG_EIO;
    if (!rc) {
        unsigned limit = cfg->admin_max_connections ? cfg->admin_max_connections : 64;
        a->d = MHD_start_daemon(
            MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL,
            NULL, on_admin, a, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
            MHD_OPTION_URI_LOG_CALLBACK, admin_uri, NULL, MHD_OPTION_UNESCAPE_CALLBACK, no_unescape,
            NULL, MHD_OPTION_NOTIFY_COMPLETED, admin_done, NULL, MHD_OPTION_CONNECTION_LIMIT, limit,
            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)0, MHD_OPTION_CONNECTION_TIMEOUT,
            (unsigned)ADMIN_TIMEOUT_S, MHD_OPTION_END);
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
    static char tok[FG_TOKEN_FILE_MAX + 1]; /* SIGHUP is handled on one thread */
    char err[512];
    size_t len = 0;
    if (read_token_file(cfg->admin_token_file, tok, &len, err, sizeof err) != 0) {
        fg_log(FG_LOG_ERROR, "admin token not reloaded; keeping the old one",
               json_pack("{s:s}", "error", err));
        return;
    }
    pthread_mutex_lock(&a->token_mu);
    memcpy(a->token, tok, len + 1);
    a->token_len = len;
    pthread_mutex_unlock(&a->token_mu);
}

void fg_admin_stop(fg_admin_t *a)
{
    if (!a) return;
    if (a->d) MHD_stop_daemon(a->d);
    if (a->store) fg_store_close(a->store);
    pthread_mutex_destroy(&a->token_mu);
    pthread_mutex_destroy(&a->store_mu);
    free(a);
}
