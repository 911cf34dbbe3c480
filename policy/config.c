/*
 * config.c -- read, validate and match the INI configuration. See config.h.
 *
 * inih does the INI syntax. Its handler is not told the line number, so the
 * reader we hand it counts lines, and also sees section headers first hand:
 * that is how an unknown or duplicate section is reported at its own line,
 * even when it holds no keys. Everything is validated here, once, so the
 * gateway never meets a value it has to second-guess.
 */
#include "policy/config.h"

#include <errno.h>
#include <ini.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/error.h"
#include "policy/token.h"
#include "policy/url.h"

#define MAX_POLICIES 1024

typedef struct pol_lines {
    int key_line, match_line;
    unsigned seen; /* bit per policy key, for duplicates */
} pol_lines_t;

typedef struct ctx {
    const char *file;
    fg_config_t *cfg;
    FILE *fp;         /* file reader */
    const char *text; /* string reader */
    size_t text_at;
    int line;
    int err_line; /* line of the first error in err */
    char section[256];
    int in_policy; /* index+1 of the current policy, 0 = [gateway] or none */
    bool in_gateway;
    unsigned gw_seen; /* bit per gateway key */
    pol_lines_t *pl;
    char err[FG_CONFIG_ERR_LEN];
} ctx_t;

__attribute__((format(printf, 2, 3))) static void fail(ctx_t *c, const char *fmt, ...)
{
    if (c->err[0]) return; /* keep the first error */
    char msg[FG_CONFIG_ERR_LEN - 112];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->err, sizeof c->err, "%.100s:%d: %s", c->file, c->line, msg);
    c->err_line = c->line;
}

static bool valid_name(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-' || *s == '.'))
            return false;
    return true;
}

/* A header name is an RFC 9110 token. */
static bool valid_header(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *s)))
            return false;
    return true;
}

static int set_policy_defaults(fg_policy_t *p)
{
    static const char *const reads[] = {"GET", "HEAD", "OPTIONS"};
    for (size_t i = 0; i < 3; i++)
        if (!(p->read_methods[i] = strdup(reads[i]))) return FG_ENOMEM;
    p->n_read_methods = 3;
    if (!(p->token_header = strdup("Fencing-Token"))) return FG_ENOMEM;
    return 0;
}

/* A section header line: "[gateway]" or "[policy NAME]". */
static void on_section(ctx_t *c, const char *line)
{
    const char *e = strchr(line, ']');
    if (!e) {
        fail(c, "section header without ']'");
        return;
    }
    const char *after = e + 1 + strspn(e + 1, " \t\r\n");
    if (*after && *after != ';') {
        fail(c, "unexpected text after the section header: '%.40s'", after);
        return;
    }
    size_t n = (size_t)(e - line - 1);
    if (n >= sizeof c->section) {
        fail(c, "section name too long");
        return;
    }
    memcpy(c->section, line + 1, n);
    c->section[n] = '\0';
    c->in_gateway = false;
    c->in_policy = 0;
    if (strcmp(c->section, "gateway") == 0) {
        c->in_gateway = true;
        return;
    }
    if (strncmp(c->section, "policy ", 7) != 0) {
        fail(c, "unknown section [%s] (expected [gateway] or [policy NAME])", c->section);
        return;
    }
    const char *name = c->section + 7;
    while (*name == ' ') name++;
    if (!valid_name(name)) {
        fail(c, "bad policy name '%s' (letters, digits, '_', '-', '.')", name);
        return;
    }
    fg_config_t *cfg = c->cfg;
    for (size_t i = 0; i < cfg->n_policies; i++)
        if (strcmp(cfg->policies[i].name, name) == 0) {
            fail(c, "duplicate policy '%s' (first defined at line %d)", name,
                 cfg->policies[i].line);
            return;
        }
    if (cfg->n_policies >= MAX_POLICIES) {
        fail(c, "too many policies (at most %d)", MAX_POLICIES);
        return;
    }
    fg_policy_t *p = &cfg->policies[cfg->n_policies];
    memset(p, 0, sizeof *p);
    memset(&c->pl[cfg->n_policies], 0, sizeof *c->pl);
    p->line = c->line;
    if (!(p->name = strdup(name)) || set_policy_defaults(p)) {
        fail(c, "out of memory");
        return;
    }
    cfg->n_policies++;
    c->in_policy = (int)cfg->n_policies;
}

/* inih reader: one line per call; counts lines, sees section headers, and
 * refuses lines longer than inih's buffer instead of letting them be split. */
static char *reader(char *str, int num, void *stream)
{
    ctx_t *c = stream;
    if (c->err[0]) return NULL;
    size_t got = 0;
    bool eof = true;
    if (c->fp) {
        if (!fgets(str, num, c->fp)) return NULL;
        got = strlen(str);
        eof = feof(c->fp);
        if (!eof && got && str[got - 1] != '\n') {
            /* a full buffer: fine only if the file ends right here */
            int next = getc(c->fp);
            eof = next == EOF;
            if (!eof) ungetc(next, c->fp);
        }
    } else {
        if (!c->text[c->text_at]) return NULL;
        const char *s = c->text + c->text_at;
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) + 1 : strlen(s);
        if (len > (size_t)num - 1) len = (size_t)num - 1;
        memcpy(str, s, len);
        str[len] = '\0';
        c->text_at += len;
        got = len;
        eof = !c->text[c->text_at];
    }
    c->line++;
    if (got && str[got - 1] != '\n' && !eof) {
        fail(c, "line too long (at most %d characters)", num - 2);
        return NULL;
    }
    /* inih would skip a UTF-8 byte order mark; we look at the line first */
    if (c->line == 1 && strncmp(str, "\xEF\xBB\xBF", 3) == 0) memmove(str, str + 3, got - 2);
    /* no continuation lines: leading whitespace is just indentation. It is
     * every byte inih's lskip() skips (isspace: \v \f \r too), or a header
     * such as "\f[policy b]" would be a section to inih but not to us, and
     * its keys would land in the policy above it */
    size_t lead = strspn(str, " \t\v\f\r");
    if (lead) memmove(str, str + lead, strlen(str + lead) + 1);
    if (str[0] == '[') on_section(c, str);
    return str;
}

static int set_str(char **dst, const char *v)
{
    char *d = strdup(v);
    if (!d) return FG_ENOMEM;
    free(*dst);
    *dst = d;
    return 0;
}

/* No whitespace or control characters: a value is one word. */
static bool one_word(const char *v)
{
    for (; *v; v++)
        if ((unsigned char)*v <= 0x20 || *v == 0x7f) return false;
    return true;
}

/* http://host[:port][/prefix], host non-empty, port 1..65535 when given. The
 * gateway's upstream client speaks plain HTTP/1.1 (TLS to the store is a local
 * sidecar's job: the store sits next to the gateway) and sends no credentials
 * of its own, so https:// and user@ are refused with a reason. */
static const char *url_problem(const char *v)
{
    const char *a;
    if (strncmp(v, "https://", 8) == 0)
        return "https upstreams are not supported (the upstream client speaks plain HTTP; "
               "terminate TLS in a local proxy)";
    if (strncmp(v, "http://", 7) != 0) return "not an http:// URL";
    a = v + 7;
    if (!one_word(v)) return "not an http:// URL";
    size_t alen = strcspn(a, "/?#");
    if (memchr(a, '@', alen)) return "credentials in the upstream URL are not supported";
    const char *hend = a + alen;
    if (a[0] == '[') {
        const char *rb = memchr(a, ']', alen);
        if (!rb || rb == a + 1) return "not an http:// URL";
        hend = rb + 1;
        if (hend < a + alen && *hend != ':') return "not an http:// URL";
    } else {
        const char *colon = memchr(a, ':', alen);
        if (colon) hend = colon;
    }
    if (hend == a) return "not an http:// URL";
    if (hend < a + alen) { /* ":port" */
        uint64_t port;
        size_t plen = (size_t)(a + alen - hend - 1);
        if (fg_token_parse(hend + 1, plen, &port) != 0 || port == 0 || port > 65535)
            return "not an http:// URL";
    }
    if (a[alen] == '?' || a[alen] == '#') return "an upstream URL has no query or fragment";
    return NULL;
}

static bool valid_state(const char *v)
{
    if (!one_word(v)) return false;
    return (strncmp(v, "sqlite:", 7) == 0 && v[7]) || strncmp(v, "redis://", 8) == 0 ||
           strncmp(v, "postgres://", 11) == 0 || strncmp(v, "postgresql://", 13) == 0;
}

static bool valid_hostport(const char *v)
{
    char host[256];
    unsigned port;
    return fg_config_split_hostport(v, host, sizeof host, &port) == 0;
}

static int parse_uint(const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    uint64_t n;
    if (fg_token_parse(v, strlen(v), &n) != 0 || n < lo || n > hi) return FG_ECONFIG;
    *out = n;
    return 0;
}

static const char *const gw_keys[] = {"listen",
                                      "upstream",
                                      "state",
                                      "admin_listen",
                                      "admin_token_file",
                                      "unmatched_writes",
                                      "upstream_timeout",
                                      "fence_wait",
                                      "max_connections",
                                      "workers",
                                      "state_pool",
                                      "state_timeout",
                                      "access_log",
                                      "audit_retention",
                                      "audit_max",
                                      "upstream_grace",
                                      "header_timeout",
                                      "body_timeout",
                                      "body_min_rate",
                                      "admin_max_connections",
                                      "require_durable"};

/* The [gateway] durations: where each is stored and its allowed range. */
typedef struct dur_key {
    const char *name;
    size_t off;
    uint64_t lo, hi;
} dur_key_t;

static const dur_key_t dur_keys[] = {
    {"upstream_timeout", offsetof(fg_config_t, upstream_timeout_ms), FG_TIMEOUT_MIN_MS,
     FG_TIMEOUT_MAX_MS},
    {"fence_wait", offsetof(fg_config_t, fence_wait_ms), FG_TIMEOUT_MIN_MS, FG_TIMEOUT_MAX_MS},
    {"state_timeout", offsetof(fg_config_t, state_timeout_ms), FG_TIMEOUT_MIN_MS,
     FG_TIMEOUT_MAX_MS},
    {"upstream_grace", offsetof(fg_config_t, upstream_grace_ms), FG_TIMEOUT_MIN_MS,
     FG_TIMEOUT_MAX_MS},
    {"header_timeout", offsetof(fg_config_t, header_timeout_ms), FG_TIMEOUT_MIN_MS,
     FG_TIMEOUT_MAX_MS},
    {"body_timeout", offsetof(fg_config_t, body_timeout_ms), FG_TIMEOUT_MIN_MS, FG_TIMEOUT_MAX_MS},
    {"audit_retention", offsetof(fg_config_t, audit_retention_ms), FG_RETENTION_MIN_MS,
     FG_RETENTION_MAX_MS},
};

/* "1d" for 86400000: the largest unit that divides `ms` exactly. */
static void format_duration(uint64_t ms, char *buf, size_t len)
{
    static const char *const u[] = {"d", "h", "m", "s"};
    static const uint64_t m[] = {86400000, 3600000, 60000, 1000};
    for (size_t i = 0; i < 4; i++)
        if (ms >= m[i] && ms % m[i] == 0) {
            snprintf(buf, len, "%llu%s", (unsigned long long)(ms / m[i]), u[i]);
            return;
        }
    snprintf(buf, len, "%llums", (unsigned long long)ms);
}

static bool on_off(ctx_t *c, const char *k, const char *v, bool *out)
{
    if (strcmp(v, "on") && strcmp(v, "off")) {
        fail(c, "%s must be on or off, not '%s'", k, v);
        return false;
    }
    *out = strcmp(v, "on") == 0;
    return true;
}

static void gateway_key(ctx_t *c, const char *k, const char *v)
{
    fg_config_t *g = c->cfg;
    size_t idx = 0;
    for (; idx < sizeof gw_keys / sizeof *gw_keys; idx++)
        if (strcmp(gw_keys[idx], k) == 0) break;
    if (idx == sizeof gw_keys / sizeof *gw_keys) {
        fail(c, "unknown key '%s' in [gateway]", k);
        return;
    }
    if (c->gw_seen & (1u << idx)) {
        fail(c, "duplicate key '%s' in [gateway]", k);
        return;
    }
    c->gw_seen |= 1u << idx;
    uint64_t n;
    int rc = 0;
    for (size_t i = 0; i < sizeof dur_keys / sizeof *dur_keys; i++) {
        const dur_key_t *d = &dur_keys[i];
        if (strcmp(k, d->name) != 0) continue;
        char lo[32], hi[32];
        if (!v[0] && d->lo == FG_RETENTION_MIN_MS) return; /* audit_retention = : keep */
        format_duration(d->lo, lo, sizeof lo);
        format_duration(d->hi, hi, sizeof hi);
        if (fg_config_parse_duration(v, &n) != 0)
            fail(c, "%s: '%s' is not a duration (e.g. 250ms, 5s, 2m, 1h, 30d)", k, v);
        else if (n < d->lo || n > d->hi)
            fail(c, "%s must lie between %s and %s, not '%s'", k, lo, hi, v);
        else
            *(uint64_t *)(void *)((char *)g + d->off) = n;
        return;
    }
    if (strcmp(k, "listen") == 0 || strcmp(k, "admin_listen") == 0) {
        if (v[0] && !valid_hostport(v)) {
            fail(c, "%s: '%s' is not host:port", k, v);
            return;
        }
        if (!v[0] && strcmp(k, "listen") == 0) {
            fail(c, "listen must not be empty");
            return;
        }
        rc = set_str(k[0] == 'l' ? &g->listen : &g->admin_listen, v);
    } else if (strcmp(k, "upstream") == 0) {
        const char *why = url_problem(v);
        if (why) {
            char *shown = fg_url_redact(v);
            fail(c, "upstream: '%s': %s", shown ? shown : "", why);
            free(shown);
            return;
        }
        rc = set_str(&g->upstream, v);
    } else if (strcmp(k, "state") == 0) {
        if (!valid_state(v)) {
            char *shown = fg_url_redact(v);
            fail(c, "state: '%s' is not sqlite:PATH, redis://... or postgres://...",
                 shown ? shown : "");
            free(shown);
            return;
        }
        rc = set_str(&g->state, v);
    } else if (strcmp(k, "admin_token_file") == 0) {
        rc = set_str(&g->admin_token_file, v);
    } else if (strcmp(k, "unmatched_writes") == 0) {
        if (strcmp(v, "reject") && strcmp(v, "forward")) {
            fail(c, "unmatched_writes must be reject or forward, not '%s'", v);
            return;
        }
        g->unmatched_forward = strcmp(v, "forward") == 0;
    } else if (strcmp(k, "access_log") == 0) {
        on_off(c, k, v, &g->access_log);
    } else if (strcmp(k, "require_durable") == 0) {
        on_off(c, k, v, &g->require_durable);
    } else if (strcmp(k, "max_connections") == 0 || strcmp(k, "admin_max_connections") == 0) {
        if (parse_uint(v, 1, 1000000, &n)) {
            fail(c, "%s must be 1 to 1000000, not '%s'", k, v);
            return;
        }
        *(k[0] == 'm' ? &g->max_connections : &g->admin_max_connections) = (unsigned)n;
    } else if (strcmp(k, "body_min_rate") == 0) {
        if (fg_config_parse_size(v, &n) != 0 || n > (1ULL << 40)) {
            fail(c, "body_min_rate: '%s' is not a size per second (e.g. 1k; 0 = no check)", v);
            return;
        }
        g->body_min_rate = n;
    } else if (strcmp(k, "workers") == 0) {
        if (parse_uint(v, 0, 64, &n)) {
            fail(c, "workers must be 0 (one per CPU) to 64, not '%s'", v);
            return;
        }
        g->workers = (unsigned)n;
    } else if (strcmp(k, "state_pool") == 0) {
        if (parse_uint(v, 1, 64, &n)) {
            fail(c, "state_pool must be 1 to 64, not '%s'", v);
            return;
        }
        g->state_pool = (unsigned)n;
    } else if (strcmp(k, "audit_max") == 0) {
        if (parse_uint(v, 0, INT64_MAX, &n)) {
            fail(c, "audit_max must be a count (0 = no limit), not '%s'", v);
            return;
        }
        g->audit_max = n;
    }
    if (rc) fail(c, "out of memory");
}

static const char *const pol_keys[] = {
    "match",          "key",  "read_methods", "token_header",  "compare", "on_missing",
    "on_state_error", "mode", "upstream",     "max_token_jump"};

static void policy_key(ctx_t *c, const char *k, const char *v)
{
    fg_policy_t *p = &c->cfg->policies[c->in_policy - 1];
    pol_lines_t *pl = &c->pl[c->in_policy - 1];
    size_t idx = 0;
    for (; idx < sizeof pol_keys / sizeof *pol_keys; idx++)
        if (strcmp(pol_keys[idx], k) == 0) break;
    if (idx == sizeof pol_keys / sizeof *pol_keys) {
        fail(c, "unknown key '%s' in [policy %s]", k, p->name);
        return;
    }
    if (pl->seen & (1u << idx)) {
        fail(c, "duplicate key '%s' in [policy %s]", k, p->name);
        return;
    }
    pl->seen |= 1u << idx;
    if (strcmp(k, "match") == 0) {
        const char *why = "bad pattern";
        int rc = fg_pattern_compile(v, &p->match, &why);
        if (rc) fail(c, "match: %s: '%s'", rc == FG_ENOMEM ? "out of memory" : why, v);
        pl->match_line = c->line;
    } else if (strcmp(k, "key") == 0) {
        if (set_str(&p->key_src, v)) fail(c, "out of memory");
        pl->key_line = c->line;
    } else if (strcmp(k, "read_methods") == 0) {
        for (size_t i = 0; i < p->n_read_methods; i++) free(p->read_methods[i]);
        p->n_read_methods = 0;
        const char *s = v;
        while (*s) {
            while (*s == ' ' || *s == '\t') s++;
            if (!*s) break;
            const char *e = s;
            while (*e && *e != ' ' && *e != '\t') e++;
            char *m = strndup(s, (size_t)(e - s));
            if (!m || !valid_header(m)) {
                fail(c, "read_methods: '%.*s' is not a method name", (int)(e - s), s);
                free(m);
                return;
            }
            if (p->n_read_methods >= FG_MAX_READ_METHODS) {
                free(m);
                fail(c, "read_methods: at most %d methods", FG_MAX_READ_METHODS);
                return;
            }
            p->read_methods[p->n_read_methods++] = m;
            s = e;
        }
    } else if (strcmp(k, "token_header") == 0) {
        if (!valid_header(v)) {
            fail(c, "token_header: '%s' is not a header name", v);
            return;
        }
        if (set_str(&p->token_header, v)) fail(c, "out of memory");
    } else if (strcmp(k, "compare") == 0) {
        if (strcmp(v, ">=") == 0)
            p->compare = FG_COMPARE_GE;
        else if (strcmp(v, ">") == 0)
            p->compare = FG_COMPARE_GT;
        else
            fail(c, "compare must be >= or >, not '%s'", v);
    } else if (strcmp(k, "on_missing") == 0 || strcmp(k, "on_state_error") == 0) {
        if (strcmp(v, "reject") && strcmp(v, "forward")) {
            fail(c, "%s must be reject or forward, not '%s'", k, v);
            return;
        }
        if (k[3] == 'm')
            p->missing_forward = strcmp(v, "forward") == 0;
        else
            p->state_error_forward = strcmp(v, "forward") == 0;
    } else if (strcmp(k, "mode") == 0) {
        if (strcmp(v, "enforce") == 0)
            p->mode = FG_MODE_ENFORCE;
        else if (strcmp(v, "report-only") == 0)
            p->mode = FG_MODE_REPORT_ONLY;
        else if (strcmp(v, "off") == 0)
            p->mode = FG_MODE_OFF;
        else
            fail(c, "mode must be enforce, report-only or off, not '%s'", v);
    } else if (strcmp(k, "upstream") == 0) {
        const char *why = url_problem(v);
        if (why) {
            char *shown = fg_url_redact(v);
            fail(c, "upstream: '%s': %s", shown ? shown : "", why);
            free(shown);
            return;
        }
        if (set_str(&p->upstream, v)) fail(c, "out of memory");
    } else if (strcmp(k, "max_token_jump") == 0) {
        if (!v[0]) return; /* empty: no limit */
        if (fg_token_parse(v, strlen(v), &p->max_jump) != 0) {
            fail(c, "max_token_jump must be a count from 0 to 18446744073709551615, not '%s'", v);
            return;
        }
        p->has_max_jump = true;
    }
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    (void)section;
    ctx_t *c = user;
    if (c->err[0]) return 0;
    if (c->in_gateway)
        gateway_key(c, name, value ? value : "");
    else if (c->in_policy)
        policy_key(c, name, value ? value : "");
    else
        fail(c, "key '%s' outside any section", name);
    return c->err[0] ? 0 : 1;
}

static int finish(ctx_t *c)
{
    fg_config_t *g = c->cfg;
    if (c->err[0]) return FG_ECONFIG;
    int rc = 0;
#define DEFAULT_STR(f, v)                                                                          \
    if (!rc && !g->f && !(g->f = strdup(v))) rc = FG_ENOMEM;
    DEFAULT_STR(listen, "127.0.0.1:8080")
    DEFAULT_STR(state, "sqlite:fencegate.db")
    DEFAULT_STR(admin_listen, "127.0.0.1:8081")
#undef DEFAULT_STR
    if (rc) {
        snprintf(c->err, sizeof c->err, "%s: out of memory", c->file);
        return rc;
    }
    if (!g->upstream) {
        snprintf(c->err, sizeof c->err, "%s: [gateway] upstream is required", c->file);
        return FG_ECONFIG;
    }
    if (!g->upstream_grace_ms) g->upstream_grace_ms = g->upstream_timeout_ms;
    for (size_t i = 0; i < g->n_policies; i++) {
        fg_policy_t *p = &g->policies[i];
        if (!p->match) {
            snprintf(c->err, sizeof c->err, "%s:%d: [policy %s] needs 'match'", c->file, p->line,
                     p->name);
            return FG_ECONFIG;
        }
        if (!p->key_src) {
            snprintf(c->err, sizeof c->err, "%s:%d: [policy %s] needs 'key'", c->file, p->line,
                     p->name);
            return FG_ECONFIG;
        }
        char why[256];
        rc = fg_keytmpl_compile(p->key_src, p->match, &p->key, why, sizeof why);
        if (rc) {
            snprintf(c->err, sizeof c->err, "%s:%d: %s", c->file, c->pl[i].key_line,
                     rc == FG_ENOMEM ? "out of memory" : why);
            return rc;
        }
    }
    return 0;
}

static int load(ctx_t *c, fg_config_t **out, char *err, size_t err_len)
{
    fg_config_t *g = calloc(1, sizeof *g);
    c->pl = calloc(MAX_POLICIES, sizeof *c->pl);
    if (g) g->policies = calloc(MAX_POLICIES, sizeof *g->policies);
    if (!g || !c->pl || !g->policies || !(g->file = strdup(c->file))) {
        if (g) free(g->policies);
        free(g);
        free(c->pl);
        snprintf(err, err_len, "%s: out of memory", c->file);
        return FG_ENOMEM;
    }
    g->upstream_timeout_ms = 30000;
    g->fence_wait_ms = 5000;
    g->header_timeout_ms = 10000;
    g->body_timeout_ms = 10000;
    g->body_min_rate = 1024;
    g->audit_max = 1000000;
    g->max_connections = 1024;
    g->admin_max_connections = 64;
    g->state_pool = 4;
    g->state_timeout_ms = 1000;
    g->access_log = true;
    c->cfg = g;
    int r = ini_parse_stream(reader, c, handler, c);
    /* inih reports the first line it refused (syntax or handler); a syntax
     * error before our first error is the one to report */
    if (r > 0 && (!c->err[0] || r < c->err_line)) {
        c->err[0] = '\0';
        c->line = r;
        fail(c, "syntax error (expected 'key = value' or '[section]')");
    } else if (r != 0 && !c->err[0]) {
        fail(c, "cannot parse (inih error %d)", r);
    }
    int rc = finish(c);
    free(c->pl);
    if (rc) {
        snprintf(err, err_len, "%s", c->err);
        fg_config_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

int fg_config_load(const char *path, fg_config_t **out, char *err, size_t err_len)
{
    *out = NULL;
    ctx_t c = {.file = path};
    c.fp = fopen(path, "r");
    if (!c.fp) {
        snprintf(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return FG_EIO;
    }
    int rc = load(&c, out, err, err_len);
    fclose(c.fp);
    return rc;
}

int fg_config_load_string(const char *name, const char *text, fg_config_t **out, char *err,
                          size_t err_len)
{
    *out = NULL;
    ctx_t c = {.file = name, .text = text};
    return load(&c, out, err, err_len);
}

void fg_config_free(fg_config_t *g)
{
    if (!g) return;
    for (size_t i = 0; i < g->n_policies; i++) {
        fg_policy_t *p = &g->policies[i];
        free(p->name);
        fg_pattern_free(p->match);
        fg_keytmpl_free(p->key);
        free(p->key_src);
        for (size_t k = 0; k < p->n_read_methods; k++) free(p->read_methods[k]);
        free(p->token_header);
        free(p->upstream);
    }
    free(g->policies);
    free(g->file);
    free(g->listen);
    free(g->upstream);
    free(g->state);
    free(g->admin_listen);
    free(g->admin_token_file);
    free(g);
}

const fg_policy_t *fg_config_match(const fg_config_t *cfg, const char *path, size_t len,
                                   fg_captures_t *caps)
{
    for (size_t i = 0; i < cfg->n_policies; i++)
        if (fg_pattern_match(cfg->policies[i].match, path, len, caps)) return &cfg->policies[i];
    return NULL;
}

bool fg_policy_is_read(const fg_policy_t *p, const char *method)
{
    for (size_t i = 0; i < p->n_read_methods; i++)
        if (strcmp(p->read_methods[i], method) == 0) return true;
    return false;
}

static int parse_scaled(const char *s, const char *const *units, const uint64_t *mult,
                        size_t nunits, uint64_t *out)
{
    size_t d = strspn(s, "0123456789");
    uint64_t n;
    if (d == 0 || fg_token_parse(s, d, &n) != 0) return FG_ECONFIG;
    const char *u = s + d;
    for (size_t i = 0; i < nunits; i++)
        if (strcmp(u, units[i]) == 0) {
            if (mult[i] && n > UINT64_MAX / mult[i]) return FG_ECONFIG;
            *out = n * mult[i];
            return 0;
        }
    return FG_ECONFIG;
}

int fg_config_parse_duration(const char *s, uint64_t *ms)
{
    static const char *const u[] = {"", "ms", "s", "m", "h", "d"};
    static const uint64_t m[] = {1000, 1, 1000, 60000, 3600000, 86400000};
    return parse_scaled(s, u, m, 6, ms);
}

int fg_config_parse_size(const char *s, uint64_t *bytes)
{
    static const char *const u[] = {"", "k", "m", "g", "K", "M", "G"};
    static const uint64_t m[] = {1,    1024,        1024 * 1024,       1024 * 1024 * 1024,
                                 1024, 1024 * 1024, 1024 * 1024 * 1024};
    return parse_scaled(s, u, m, 7, bytes);
}

int fg_config_split_hostport(const char *s, char *host, size_t host_len, unsigned *port)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    if (s[0] == '[') {
        const char *e = strchr(s, ']');
        if (!e || e[1] != ':') return FG_ECONFIG;
        h = s + 1;
        hl = (size_t)(e - h);
        colon = e + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) return FG_ECONFIG;
        hl = (size_t)(colon - s);
        if (memchr(s, ':', hl)) return FG_ECONFIG; /* bare IPv6 needs brackets */
    }
    uint64_t p;
    if (fg_token_parse(colon + 1, strlen(colon + 1), &p) != 0 || p > 65535) return FG_ECONFIG;
    if (hl + 1 > host_len) return FG_ECONFIG;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (unsigned)p;
    return 0;
}
