/*
 * fencectl.c -- the operator's client for the fencegate admin API (SPEC
 * "Command line"): status, hwm, audit (with follow), raise, reset.
 *
 * It finds the admin URL and bearer token in the gateway's own config
 * (`-c FILE`: admin_listen, admin_token_file, read by the same parser and the
 * same strict token-file reader as the gateway) or in flags (`--admin URL
 * --token-file F`). Output is a table for people and, with --json, one JSON
 * object per line for scripts. Tokens are u64: every number is carried as
 * exact decimal text, never through a double or a signed 64-bit integer.
 *
 * Exit codes: 0 ok; 1 not found or refused (404, 400, 409, a store that is
 * not ready); 2 usage; 3 the admin API is unreachable; 4 unauthorized or
 * forbidden (401, 403); 5 the state store is unavailable (503).
 */
#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "gateway/problem.h"
#include "gateway/token_file.h"
#include "policy/config.h"
#include "policy/token.h"

enum { EX_OK = 0, EX_REFUSED = 1, EX_USAGE = 2, EX_UNREACHABLE = 3, EX_AUTH = 4, EX_STORE = 5 };

#define PAGE_MAX 1000

static const char *const usage_main =
    "usage: fencectl [-c FILE | --admin URL [--token-file FILE]] [--timeout SECONDS] COMMAND ...\n"
    "\n"
    "Commands:\n"
    "  status                 readiness, store and its durability, version, uptime,\n"
    "                         requests in flight, refusals in the last minute\n"
    "  hwm KEY...             the high-water mark of each resource\n"
    "  audit [options]        the audit trail, newest first (--follow: tail it)\n"
    "  raise KEY TOKEN        raise a high-water mark (never lowers it)\n"
    "  reset KEY --to TOKEN --reason TEXT --force\n"
    "                         set a high-water mark, lower or higher (audited)\n"
    "\n"
    "Options:\n"
    "  -c FILE                read admin_listen and admin_token_file from the gateway config\n"
    "  --admin URL            the admin API, e.g. http://127.0.0.1:8081\n"
    "  --token-file FILE      the bearer token (the gateway's admin_token_file)\n"
    "  --timeout SECONDS      give up on one call after this long (default 10)\n"
    "  --help                 this text; COMMAND --help explains one command\n"
    "\n"
    "Exit codes: 0 ok, 1 not found or refused, 2 usage, 3 admin API unreachable,\n"
    "4 unauthorized or forbidden, 5 state store unavailable.\n";

static const char *const usage_status =
    "usage: fencectl status [--json]\n"
    "Readiness, the state store (URL without password, up or down, durability\n"
    "settings), version, uptime, requests in flight, refusals in the last minute.\n"
    "Exit 0 when the gateway is ready, 5 when its store is unavailable.\n";
static const char *const usage_hwm =
    "usage: fencectl hwm [--json] KEY...\n"
    "Print the high-water mark of each resource KEY (e.g. order:42).\n"
    "Exit 1 when any KEY has none.\n";
static const char *const usage_audit =
    "usage: fencectl audit [--resource KEY] [--reason REASON] [--since TIME] [--limit N]\n"
    "                      [--json] [--follow]\n"
    "List audit records, newest first, following the API's cursor across pages.\n"
    "  --resource KEY   only this resource\n"
    "  --reason REASON  stale, missing, malformed, unmatched, report-only, state-error,\n"
    "                   jump or reset\n"
    "  --since TIME     RFC 3339 (2026-11-28T12:00:00Z), Unix seconds, or an age: 90s, 10m,\n"
    "                   2h, 7d\n"
    "  --limit N        at most N records (default 100; 0 = all)\n"
    "  --json           one JSON object per line (the API's record), for scripts\n"
    "  --follow         print the newest records, then new ones as they come\n"
    "                   (oldest first), until interrupted\n";
static const char *const usage_raise =
    "usage: fencectl raise KEY TOKEN\n"
    "Raise the high-water mark of KEY to TOKEN; it never lowers one. Prints the\n"
    "high-water mark after the call. Needs the gateway's admin_token_file.\n";
static const char *const usage_reset =
    "usage: fencectl reset KEY --to TOKEN --reason TEXT --force\n"
    "Set the high-water mark of KEY to TOKEN, lower or higher: for a poisoned\n"
    "token (a bogus huge token that locks every honest writer out). Recorded in\n"
    "the audit trail with reason \"reset\", the old and new values and TEXT.\n"
    "Refuses without --force. Needs the gateway's admin_token_file.\n";

typedef struct ctl {
    char admin[512];
    char token[FG_TOKEN_FILE_MAX + 1];
    long timeout_s;
} ctl_t;

typedef struct resp {
    long status; /* 0: unreachable */
    char *body;
    size_t len;
    char err[CURL_ERROR_SIZE];
} resp_t;

static size_t collect(char *p, size_t size, size_t n, void *ud)
{
    resp_t *r = ud;
    size_t add = size * n;
    char *nb = realloc(r->body, r->len + add + 1);
    if (!nb) return 0;
    memcpy(nb + r->len, p, add);
    r->body = nb;
    r->len += add;
    r->body[r->len] = '\0';
    return add;
}

/* One call of the admin API. `body` may be NULL (GET). */
static resp_t call(const ctl_t *c, const char *method, const char *path, const char *body)
{
    resp_t r = {0};
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(r.err, sizeof r.err, "out of memory");
        return r;
    }
    char url[4096 + 512];
    snprintf(url, sizeof url, "%s%s", c->admin, path);
    struct curl_slist *hdrs = NULL;
    char auth[FG_TOKEN_FILE_MAX + 32];
    if (c->token[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    if (body) hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, c->timeout_s);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r.err);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
    else
        r.status = 0;
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return r;
}

/*
 * Parse a JSON answer keeping every u64 exact: bare integers of 16 digits or
 * more are turned into strings before jansson sees them (jansson's integers
 * are signed 64-bit). Read numbers back with num().
 */
static json_t *parse_exact(const char *s)
{
    size_t n = strlen(s);
    char *t = malloc(n * 2 + 1), *o = t;
    if (!t) return NULL;
    bool in_str = false;
    for (size_t i = 0; i < n;) {
        char ch = s[i];
        if (in_str) {
            *o++ = ch;
            i++;
            if (ch == '\\' && i < n)
                *o++ = s[i++];
            else if (ch == '"')
                in_str = false;
            continue;
        }
        if (ch == '"') in_str = true;
        if (ch >= '0' && ch <= '9' && (i == 0 || strchr(":[, \t\n", s[i - 1]))) {
            size_t d = strspn(s + i, "0123456789");
            bool plain = !strchr(".eE", s[i + d] ? s[i + d] : ' ');
            if (plain && d >= 16) {
                *o++ = '"';
                memcpy(o, s + i, d);
                o += d;
                *o++ = '"';
                i += d;
                continue;
            }
        }
        *o++ = ch;
        i++;
    }
    *o = '\0';
    json_t *j = json_loads(t, 0, NULL);
    free(t);
    return j;
}

/* A u64 member read by parse_exact (integer or digit string). */
static bool num(json_t *o, const char *key, uint64_t *v)
{
    json_t *x = json_object_get(o, key);
    if (json_is_integer(x) && json_integer_value(x) >= 0) {
        *v = (uint64_t)json_integer_value(x);
        return true;
    }
    return json_is_string(x) && fg_token_parse(json_string_value(x), json_string_length(x), v) == 0;
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* Report a failed call on stderr and map it to an exit code. */
static int failed(const char *what, const resp_t *r)
{
    if (r->status == 0) {
        fprintf(stderr, "fencectl: %s: admin API unreachable: %s\n", what, r->err);
        return EX_UNREACHABLE;
    }
    json_t *j = r->body ? json_loads(r->body, 0, NULL) : NULL;
    const char *detail = j ? str(j, "detail") : "";
    fprintf(stderr, "fencectl: %s: HTTP %ld%s%s\n", what, r->status, detail[0] ? ": " : "", detail);
    json_decref(j);
    if (r->status == 401 || r->status == 403) return EX_AUTH;
    if (r->status == 503) return EX_STORE;
    return EX_REFUSED;
}

/* Percent-encode a resource key as one path segment. */
static void encode_key(const char *k, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)k; *p && o + 4 < cap; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~:", *p)) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
}

/* Append name=value (value percent-encoded) to a query string. */
static void add_query(char *q, size_t cap, const char *name, const char *value)
{
    char enc[2048];
    encode_key(value, enc, sizeof enc);
    size_t l = strlen(q);
    snprintf(q + l, cap - l, "%s%s=%s", l ? "&" : "?", name, enc);
}

static bool want_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return true;
    return false;
}

/* Print "fencectl: <message>" and the command's usage; returns EX_USAGE. */
__attribute__((format(printf, 2, 3))) static int usage_err(const char *text, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fencectl: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", text);
    return EX_USAGE;
}

/* ---- status ---- */

static void print_uptime(uint64_t s)
{
    if (s >= 86400) printf("%llud", (unsigned long long)(s / 86400));
    if (s >= 3600) printf("%lluh", (unsigned long long)(s % 86400 / 3600));
    printf("%llum%llus", (unsigned long long)(s % 3600 / 60), (unsigned long long)(s % 60));
}

static int cmd_status(const ctl_t *c, int argc, char **argv)
{
    bool as_json = false;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            as_json = true;
        else
            return usage_err(usage_status, "status: unknown argument '%s'", argv[i]);
    }
    resp_t r = call(c, "GET", "/v1/status", NULL);
    if (r.status != 200) {
        int rc = failed("status", &r);
        free(r.body);
        return rc;
    }
    json_t *j = parse_exact(r.body);
    if (!j) {
        fprintf(stderr, "fencectl: status: unreadable answer\n");
        free(r.body);
        return EX_REFUSED;
    }
    bool ready = strcmp(str(j, "status"), "ready") == 0;
    if (as_json) {
        printf("%s\n", r.body);
    } else {
        json_t *st = json_object_get(j, "store");
        uint64_t up = 0, inflight = 0, refusals = 0;
        num(j, "uptime_s", &up);
        num(j, "inflight", &inflight);
        num(j, "refusals_last_minute", &refusals);
        printf("fencegate %s, up ", str(j, "version"));
        print_uptime(up);
        printf(", %s\n", ready ? "ready" : "NOT READY");
        printf("store:       %s (%s)\n", str(st, "url"),
               json_is_true(json_object_get(st, "up")) ? "up" : "down");
        if (!ready && str(st, "detail")[0]) printf("             %s\n", str(st, "detail"));
        json_t *d = json_object_get(st, "durability");
        if (d) {
            printf("durability: ");
            const char *k;
            json_t *v;
            json_object_foreach(d, k, v)
            {
                if (json_is_string(v) && strcmp(k, "advice") != 0)
                    printf(" %s=%s", k, json_string_value(v));
            }
            bool durable = json_is_true(json_object_get(d, "durable"));
            printf(" (%s%s)\n", durable ? "durable" : "NOT durable",
                   json_is_true(json_object_get(j, "require_durable")) ? ", required" : "");
            if (!durable && str(d, "advice")[0]) printf("             %s\n", str(d, "advice"));
        }
        printf("in flight:   %llu\n", (unsigned long long)inflight);
        printf("refusals in the last minute: %llu\n", (unsigned long long)refusals);
    }
    json_decref(j);
    free(r.body);
    return ready ? EX_OK : EX_STORE;
}

/* ---- hwm ---- */

static int cmd_hwm(const ctl_t *c, int argc, char **argv)
{
    bool as_json = false;
    int nkeys = 0, rc = EX_OK;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            as_json = true;
        else if (argv[i][0] == '-' && argv[i][1] == '-')
            return usage_err(usage_hwm, "hwm: unknown option '%s'", argv[i]);
        else
            nkeys++;
    }
    if (!nkeys) return usage_err(usage_hwm, "hwm: %s", "name at least one KEY");
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) continue;
        char enc[4096], path[4200];
        encode_key(argv[i], enc, sizeof enc);
        snprintf(path, sizeof path, "/v1/resources/%s", enc);
        resp_t r = call(c, "GET", path, NULL);
        uint64_t h = 0;
        json_t *j = r.status == 200 ? parse_exact(r.body) : NULL;
        if (j && num(j, "highest", &h)) {
            if (as_json)
                printf("%s\n", r.body);
            else
                printf("%s\t%llu\n", argv[i], (unsigned long long)h);
        } else if (r.status == 404) {
            if (as_json) {
                json_t *o = json_pack("{s:s,s:n}", "resource", argv[i], "highest");
                char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
                printf("%s\n", s ? s : "");
                free(s);
                json_decref(o);
            } else {
                printf("%s\t(none)\n", argv[i]);
            }
            if (rc == EX_OK) rc = EX_REFUSED;
        } else {
            int e = failed(argv[i], &r);
            if (rc == EX_OK || e > rc) rc = e;
        }
        json_decref(j);
        free(r.body);
    }
    return rc;
}

/* ---- audit ---- */

static volatile sig_atomic_t stop_follow;

static void on_signal(int sig)
{
    (void)sig;
    stop_follow = 1;
}

/* "90s", "10m", "2h", "7d": an age, as Unix seconds of now minus it. */
static bool relative_since(const char *s, char *out, size_t cap)
{
    size_t d = strspn(s, "0123456789");
    if (!d || strlen(s) != d + 1 || !strchr("smhd", s[d])) return false;
    uint64_t v;
    if (fg_token_parse(s, d, &v) != 0) return false;
    uint64_t mul = s[d] == 's' ? 1 : s[d] == 'm' ? 60 : s[d] == 'h' ? 3600 : 86400;
    time_t now = time(NULL);
    uint64_t age = v * mul;
    snprintf(out, cap, "%lld", (long long)((uint64_t)now > age ? (uint64_t)now - age : 0));
    return true;
}

/* One record: a table row, or the API's JSON (numbers exact) on one line. */
static void print_entry(json_t *e, bool as_json)
{
    uint64_t tok = 0, hi = 0;
    bool has_tok = num(e, "token", &tok), has_hi = num(e, "highest", &hi);
    if (as_json) {
        /* the API's field order: token and highest stand after client */
        json_t *head = json_object(), *tail = json_object();
        const char *k;
        json_t *v, *to = head;
        json_object_foreach(e, k, v)
        {
            if (strcmp(k, "token") == 0 || strcmp(k, "highest") == 0)
                to = tail;
            else
                json_object_set(to, k, v);
        }
        fg_u64_field_t f[2] = {{"token", has_tok, tok}, {"highest", has_hi, hi}};
        char *hs = fg_json_dumps_u64(head, f, 2, NULL);
        char *ts = json_dumps(tail, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(head);
        json_decref(tail);
        if (hs && ts && strlen(ts) > 2) {
            hs[strlen(hs) - 1] = '\0'; /* drop '}' and go on with the tail's members */
            printf("%s,%s\n", hs, ts + 1);
        } else {
            printf("%s\n", hs ? hs : "{}");
        }
        free(hs);
        free(ts);
        return;
    }
    char t[24] = "-", h[24] = "-";
    if (has_tok) fg_token_format(tok, t);
    if (has_hi) fg_token_format(hi, h);
    printf("%-24s  %-11s  %-20s  %20s  %20s  %-7s  %-30s  %s%s%s\n", str(e, "time"),
           str(e, "reason"), str(e, "resource"), t, h, str(e, "method"), str(e, "path"),
           str(e, "client"), str(e, "detail")[0] ? "  # " : "", str(e, "detail"));
}

static void print_header(bool as_json)
{
    if (!as_json)
        printf("%-24s  %-11s  %-20s  %20s  %20s  %-7s  %-30s  %s\n", "TIME", "REASON", "RESOURCE",
               "TOKEN", "HIGHEST", "METHOD", "PATH", "CLIENT");
}

/* Fetch one page; *entries borrowed from *j (caller decrefs *j). */
static int fetch(const ctl_t *c, const char *query, json_t **j, json_t **entries)
{
    char path[8192];
    snprintf(path, sizeof path, "/v1/audit%s", query);
    resp_t r = call(c, "GET", path, NULL);
    if (r.status != 200) {
        int rc = failed("audit", &r);
        free(r.body);
        return rc;
    }
    *j = parse_exact(r.body);
    free(r.body);
    *entries = json_object_get(*j, "entries");
    if (!json_is_array(*entries)) {
        fprintf(stderr, "fencectl: audit: unreadable answer\n");
        json_decref(*j);
        return EX_REFUSED;
    }
    return EX_OK;
}

static int cmd_audit(const ctl_t *c, int argc, char **argv)
{
    char filters[4096] = "", since[64];
    uint64_t limit = 100;
    bool as_json = false, follow = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (strcmp(a, "--json") == 0) {
            as_json = true;
        } else if (strcmp(a, "--follow") == 0 || strcmp(a, "-f") == 0) {
            follow = true;
        } else if (strcmp(a, "--resource") == 0 && has_val) {
            add_query(filters, sizeof filters, "resource", argv[++i]);
        } else if (strcmp(a, "--reason") == 0 && has_val) {
            add_query(filters, sizeof filters, "reason", argv[++i]);
        } else if (strcmp(a, "--since") == 0 && has_val) {
            const char *v = argv[++i];
            add_query(filters, sizeof filters, "since",
                      relative_since(v, since, sizeof since) ? since : v);
        } else if (strcmp(a, "--limit") == 0 && has_val) {
            if (fg_token_parse(argv[i + 1], strlen(argv[i + 1]), &limit) != 0)
                return usage_err(usage_audit, "audit: --limit takes a count, not '%s'",
                                 argv[i + 1]);
            i++;
        } else {
            return usage_err(usage_audit, "audit: unknown or incomplete argument '%s'", a);
        }
    }
    print_header(as_json);
    char query[8192], cursor[128] = "", last[128] = "";
    uint64_t shown = 0;
    json_t *newest_first = json_array();
    /* newest first, page after page, until the limit or the last page */
    do {
        uint64_t want = limit == 0 ? PAGE_MAX : limit - shown;
        if (want > PAGE_MAX) want = PAGE_MAX;
        snprintf(query, sizeof query, "%s", filters);
        char n[24];
        snprintf(n, sizeof n, "%llu", (unsigned long long)want);
        add_query(query, sizeof query, "limit", n);
        if (cursor[0]) add_query(query, sizeof query, "cursor", cursor);
        json_t *j, *entries;
        int rc = fetch(c, query, &j, &entries);
        if (rc) {
            json_decref(newest_first);
            return rc;
        }
        size_t i;
        json_t *e;
        json_array_foreach(entries, i, e)
        {
            if (follow)
                json_array_append(newest_first, e);
            else
                print_entry(e, as_json);
            if (!last[0]) snprintf(last, sizeof last, "%s", str(e, "id"));
            shown++;
        }
        snprintf(cursor, sizeof cursor, "%s", str(j, "next"));
        json_decref(j);
        fflush(stdout);
    } while (cursor[0] && !follow && (limit == 0 || shown < limit));
    if (!follow) {
        json_decref(newest_first);
        return EX_OK;
    }
    /* follow: what we have, oldest first, then every newer record as it comes */
    for (size_t i = json_array_size(newest_first); i-- > 0;)
        print_entry(json_array_get(newest_first, i), as_json);
    json_decref(newest_first);
    fflush(stdout);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, on_signal);
    while (!stop_follow) {
        snprintf(query, sizeof query, "%s", filters);
        add_query(query, sizeof query, "limit", "1000");
        if (last[0]) add_query(query, sizeof query, "after", last);
        json_t *j, *entries;
        int rc = fetch(c, query, &j, &entries);
        if (rc == EX_OK) {
            size_t i;
            json_t *e;
            json_array_foreach(entries, i, e)
            {
                print_entry(e, as_json);
                snprintf(last, sizeof last, "%s", str(e, "id"));
            }
            size_t got = json_array_size(entries);
            json_decref(j);
            fflush(stdout);
            if (got == PAGE_MAX) continue; /* more waiting: no pause */
        } else if (rc != EX_UNREACHABLE && rc != EX_STORE) {
            return rc;
        }
        for (int k = 0; k < 10 && !stop_follow; k++) usleep(100 * 1000); /* poll once a second */
    }
    return EX_OK;
}

/* ---- raise / reset ---- */

static int set_hwm(const ctl_t *c, const char *key, uint64_t tok, const char *reason)
{
    char enc[4096], path[4200], t[FG_TOKEN_STRLEN];
    encode_key(key, enc, sizeof enc);
    snprintf(path, sizeof path, "/v1/resources/%s/%s", enc, reason ? "reset" : "raise");
    fg_token_format(tok, t);
    /* the token as a string of digits: exact for every u64 */
    json_t *b = reason ? json_pack("{s:s,s:s}", "token", t, "reason", reason)
                       : json_pack("{s:s}", "token", t);
    char *body = b ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    if (!body) return EX_REFUSED;
    resp_t r = call(c, "POST", path, body);
    free(body);
    int rc = EX_OK;
    json_t *j = r.status == 200 ? parse_exact(r.body) : NULL;
    uint64_t h;
    if (j && num(j, "highest", &h))
        printf("%s\t%llu\n", key, (unsigned long long)h);
    else
        rc = failed(reason ? "reset" : "raise", &r);
    json_decref(j);
    free(r.body);
    return rc;
}

static int cmd_raise(const ctl_t *c, int argc, char **argv)
{
    uint64_t tok;
    if (argc != 2) return usage_err(usage_raise, "raise: %s", "needs KEY and TOKEN");
    if (fg_token_parse(argv[1], strlen(argv[1]), &tok) != 0)
        return usage_err(usage_raise, "raise: '%s' is not a token (1-20 digits, a u64)", argv[1]);
    return set_hwm(c, argv[0], tok, NULL);
}

static int cmd_reset(const ctl_t *c, int argc, char **argv)
{
    const char *key = NULL, *to = NULL, *reason = NULL;
    bool force = false;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--to") == 0 && i + 1 < argc)
            to = argv[++i];
        else if (strcmp(argv[i], "--reason") == 0 && i + 1 < argc)
            reason = argv[++i];
        else if (strcmp(argv[i], "--force") == 0)
            force = true;
        else if (!key && argv[i][0] != '-')
            key = argv[i];
        else
            return usage_err(usage_reset, "reset: unknown or incomplete argument '%s'", argv[i]);
    }
    uint64_t tok;
    if (!key || !to || !reason)
        return usage_err(usage_reset, "reset: %s", "needs KEY, --to TOKEN and --reason TEXT");
    if (fg_token_parse(to, strlen(to), &tok) != 0)
        return usage_err(usage_reset, "reset: '%s' is not a token (1-20 digits, a u64)", to);
    if (!reason[0]) return usage_err(usage_reset, "reset: %s", "--reason must not be empty");
    if (!force) {
        fprintf(stderr,
                "fencectl: reset can LOWER a high-water mark, which lets writers with older "
                "tokens through again.\nCheck that no holder of a lock newer than %s is still "
                "writing, then repeat with --force.\n",
                to);
        return EX_REFUSED;
    }
    return set_hwm(c, key, tok, reason);
}

/* ---- set-up ---- */

/* admin_listen "host:port" -> a URL to reach it from this host. */
static void admin_url(const char *listen, char *out, size_t cap)
{
    char host[256];
    unsigned port;
    if (fg_config_split_hostport(listen, host, sizeof host, &port) != 0) {
        snprintf(out, cap, "http://%s", listen);
        return;
    }
    const char *h = host;
    if (!h[0] || strcmp(h, "0.0.0.0") == 0) h = "127.0.0.1";
    if (strcmp(h, "::") == 0) h = "::1";
    snprintf(out, cap, strchr(h, ':') ? "http://[%s]:%u" : "http://%s:%u", h, port);
}

static int load_token(ctl_t *c, const char *file)
{
    char err[512];
    size_t len;
    bool loose;
    if (fg_token_file_read(file, c->token, &len, &loose, err, sizeof err) != 0) {
        fprintf(stderr, "fencectl: %s\n", err);
        return EX_USAGE;
    }
    return EX_OK;
}

int main(int argc, char **argv)
{
    ctl_t c = {.timeout_s = 10};
    const char *conf = NULL, *token_file = NULL, *admin = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_main, stdout);
            return EX_OK;
        } else if (strcmp(a, "--version") == 0) {
            printf("fencectl %s\n", FG_VERSION);
            return EX_OK;
        } else if (strcmp(a, "-c") == 0 && has_val) {
            conf = argv[++i];
        } else if (strcmp(a, "--admin") == 0 && has_val) {
            admin = argv[++i];
        } else if (strcmp(a, "--token-file") == 0 && has_val) {
            token_file = argv[++i];
        } else if (strcmp(a, "--timeout") == 0 && has_val) {
            uint64_t t;
            if (fg_token_parse(argv[i + 1], strlen(argv[i + 1]), &t) != 0 || t == 0 || t > 3600)
                return usage_err(usage_main, "--timeout takes 1 to 3600 seconds, not '%s'",
                                 argv[i + 1]);
            c.timeout_s = (long)t;
            i++;
        } else {
            return usage_err(usage_main, "unknown or incomplete option '%s'", a);
        }
    }
    if (i >= argc) return usage_err(usage_main, "%s", "no command");
    const char *cmd = argv[i++];
    int sub_argc = argc - i;
    char **sub_argv = argv + i;
    static const struct {
        const char *name, *help;
        int (*fn)(const ctl_t *, int, char **);
    } cmds[] = {{"status", usage_status, cmd_status},
                {"hwm", usage_hwm, cmd_hwm},
                {"audit", usage_audit, cmd_audit},
                {"raise", usage_raise, cmd_raise},
                {"reset", usage_reset, cmd_reset}};
    size_t k = 0;
    while (k < sizeof cmds / sizeof *cmds && strcmp(cmds[k].name, cmd) != 0) k++;
    if (k == sizeof cmds / sizeof *cmds) return usage_err(usage_main, "unknown command '%s'", cmd);
    if (want_help(sub_argc, sub_argv)) {
        fputs(cmds[k].help, stdout);
        return EX_OK;
    }
    if (conf) {
        char err[FG_CONFIG_ERR_LEN];
        fg_config_t *cfg = NULL;
        if (fg_config_load(conf, &cfg, err, sizeof err) != 0) {
            fprintf(stderr, "fencectl: %s\n", err);
            return EX_USAGE;
        }
        if (!admin) {
            if (!cfg->admin_listen || !cfg->admin_listen[0]) {
                fprintf(stderr, "fencectl: %s has no admin_listen: the admin API is off\n", conf);
                fg_config_free(cfg);
                return EX_USAGE;
            }
            admin_url(cfg->admin_listen, c.admin, sizeof c.admin);
        }
        int rc = !token_file && cfg->admin_token_file && cfg->admin_token_file[0]
                     ? load_token(&c, cfg->admin_token_file)
                     : EX_OK;
        fg_config_free(cfg);
        if (rc) return rc;
    }
    if (admin) snprintf(c.admin, sizeof c.admin, "%s", admin);
    size_t al = strlen(c.admin);
    while (al && c.admin[al - 1] == '/') c.admin[--al] = '\0';
    if (!c.admin[0])
        return usage_err(usage_main, "%s", "say where the gateway is: -c FILE or --admin URL");
    if (token_file && load_token(&c, token_file)) return EX_USAGE;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmds[k].fn(&c, sub_argc, sub_argv);
    curl_global_cleanup();
    return rc;
}
