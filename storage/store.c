/*
 * store.c -- the backend table and the wrappers every caller goes through.
 *
 * The wrappers own the connection policy, so every backend gets it for free:
 * connect lazily; when a call reports FG_EUNAVAIL, drop the connection and
 * refuse further calls without touching the network until a reconnect
 * deadline that doubles (with jitter) up to a cap. A dead store therefore
 * costs each handle one connection attempt per backoff period, never a loop.
 */
#include "storage/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>

#include "policy/error.h"
#include "storage/store_int.h"

static const fg_store_backend_t *const backends[] = {&fg_store_sqlite, &fg_store_redis,
                                                     &fg_store_postgres};

static const char *const reason_names[] = {NULL,        "stale",       "missing",    "malformed",
                                           "unmatched", "report-only", "state-error"};

const char *fg_reason_name(fg_reason_t r)
{
    if ((size_t)r >= sizeof reason_names / sizeof *reason_names) return NULL;
    return reason_names[r];
}

fg_reason_t fg_reason_parse(const char *s)
{
    for (size_t i = 1; s && i < sizeof reason_names / sizeof *reason_names; i++)
        if (strcmp(reason_names[i], s) == 0) return (fg_reason_t)i;
    return FG_REASON_NONE;
}

typedef struct strmem {
    char **ptrs;
    size_t n, cap;
} strmem_t;

char *fg_audit_list_strndup(fg_audit_list_t *l, const char *s, size_t len)
{
    if (!s) return NULL;
    strmem_t *m = l->mem;
    if (!m) {
        m = l->mem = calloc(1, sizeof *m);
        if (!m) return NULL;
    }
    if (m->n == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 64;
        char **np = realloc(m->ptrs, nc * sizeof *np);
        if (!np) return NULL;
        m->ptrs = np;
        m->cap = nc;
    }
    char *d = strndup(s, len);
    if (d) m->ptrs[m->n++] = d;
    return d;
}

int fg_audit_list_reserve(fg_audit_list_t *l, size_t n)
{
    fg_audit_t *ni = realloc(l->items, (n ? n : 1) * sizeof *ni);
    if (!ni) return FG_ENOMEM;
    l->items = ni;
    return 0;
}

void fg_audit_list_free(fg_audit_list_t *l)
{
    strmem_t *m = l->mem;
    if (m) {
        for (size_t i = 0; i < m->n; i++) free(m->ptrs[i]);
        free(m->ptrs);
        free(m);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

int fg_store_seterr(fg_store_t *s, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    return rc;
}

const fg_store_backend_t *fg_store_backend_for(const char *url)
{
    for (size_t i = 0; i < sizeof backends / sizeof *backends; i++) {
        size_t n = strlen(backends[i]->scheme);
        if (strncmp(url, backends[i]->scheme, n) == 0 && url[n] == ':') return backends[i];
    }
    if (strncmp(url, "postgresql://", 13) == 0) return &fg_store_postgres;
    return NULL;
}

/* The URL with any password replaced by "***". */
static char *display_url(const char *url)
{
    const char *at = strchr(url, '@');
    const char *ss = strstr(url, "://");
    if (!at || !ss || at < ss) return strdup(url);
    const char *colon = memchr(ss + 3, ':', (size_t)(at - ss - 3));
    if (!colon) return strdup(url);
    size_t n = (size_t)(colon - url) + 1;
    char *d = malloc(n + 3 + strlen(at) + 1);
    if (!d) return NULL;
    memcpy(d, url, n);
    memcpy(d + n, "***", 3);
    memcpy(d + n + 3, at, strlen(at) + 1);
    return d;
}

fg_store_t *fg_store_alloc(size_t size, const fg_store_backend_t *be, const char *url,
                           const fg_store_opts_t *o)
{
    fg_store_t *s = calloc(1, size);
    if (!s) return NULL;
    s->be = be;
    if (o) s->opts = *o;
    if (!s->opts.timeout_ms) s->opts.timeout_ms = 1000;
    if (!s->opts.backoff_min_ms) s->opts.backoff_min_ms = 50;
    if (!s->opts.backoff_max_ms) s->opts.backoff_max_ms = 5000;
    s->url = strdup(url);
    s->display = display_url(url);
    if (!s->url || !s->display) {
        fg_store_free_base(s);
        return NULL;
    }
    return s;
}

void fg_store_free_base(fg_store_t *s)
{
    if (!s) return;
    free(s->url);
    free(s->display);
    free(s);
}

int fg_store_open(const char *url, const fg_store_opts_t *o, fg_store_t **out, char *err,
                  size_t err_len)
{
    *out = NULL;
    const fg_store_backend_t *be = fg_store_backend_for(url);
    if (!be) {
        snprintf(err, err_len, "unknown state store URL '%s'", url);
        return FG_EINVAL;
    }
    return be->create(url, o, out, err, err_len);
}

void fg_store_close(fg_store_t *s)
{
    if (!s) return;
    if (s->connected) s->be->disconnect(s);
    s->be->destroy(s);
}

static void log_event(fg_store_t *s, const char *event)
{
    if (s->opts.log) s->opts.log(s->opts.log_arg, event, s->display, s->err);
}

static void went_down(fg_store_t *s)
{
    s->be->disconnect(s);
    s->connected = false;
    uint64_t b = s->backoff_ms ? s->backoff_ms * 2 : s->opts.backoff_min_ms;
    if (b > s->opts.backoff_max_ms) b = s->opts.backoff_max_ms;
    s->backoff_ms = b;
    /* full jitter in [b/2, b]: handles of many gateways do not reconnect in step */
    static __thread unsigned seed;
    if (!seed) seed = (unsigned)fg_now_mono_ms() ^ (unsigned)(uintptr_t)s;
    uint64_t j = b / 2 + (b / 2 ? (uint64_t)rand_r(&seed) % (b / 2 + 1) : 0);
    s->retry_at_ms = fg_now_mono_ms() + j;
    if (!s->was_down) {
        s->was_down = true;
        log_event(s, "down");
    }
}

static int ensure(fg_store_t *s)
{
    if (s->connected) return 0;
    uint64_t now = fg_now_mono_ms();
    if (now < s->retry_at_ms) {
        /* keep the last real error text; the caller sees "unavailable" */
        return FG_EUNAVAIL;
    }
    int rc = s->be->connect(s);
    if (rc) {
        went_down(s);
        return FG_EUNAVAIL;
    }
    s->connected = true;
    s->backoff_ms = 0;
    if (s->was_down) {
        s->was_down = false;
        log_event(s, "up");
    }
    return 0;
}

static int after(fg_store_t *s, int rc)
{
    if (rc == FG_EUNAVAIL) went_down(s);
    return rc;
}

int fg_store_check(fg_store_t *s, fg_check_t *checks, size_t n)
{
    int rc = ensure(s);
    if (rc) return rc;
    if (n == 0) return 0;
    return after(s, s->be->check(s, checks, n));
}

int fg_store_get(fg_store_t *s, const char *resource, uint64_t *hwm)
{
    int rc = ensure(s);
    return rc ? rc : after(s, s->be->get(s, resource, hwm));
}

int fg_store_audit_append(fg_store_t *s, fg_audit_t *rec)
{
    int rc = ensure(s);
    return rc ? rc : after(s, s->be->audit_append(s, rec));
}

int fg_store_audit_query(fg_store_t *s, const fg_audit_query_t *q, fg_audit_list_t *out)
{
    memset(out, 0, sizeof *out);
    int rc = ensure(s);
    if (rc) return rc;
    rc = after(s, s->be->audit_query(s, q, out));
    if (rc) fg_audit_list_free(out);
    return rc;
}

int fg_store_audit_purge(fg_store_t *s, int64_t older_than_ms, uint64_t keep_max, size_t batch,
                         size_t *deleted)
{
    *deleted = 0;
    int rc = ensure(s);
    return rc ? rc : after(s, s->be->audit_purge(s, older_than_ms, keep_max, batch, deleted));
}

int fg_store_ping(fg_store_t *s)
{
    int rc = ensure(s);
    return rc ? rc : after(s, s->be->ping(s));
}

const char *fg_store_errstr(const fg_store_t *s)
{
    return s->err;
}
const char *fg_store_display(const fg_store_t *s)
{
    return s->display;
}
unsigned fg_store_max_pool(const fg_store_t *s)
{
    return s->be->max_pool;
}

uint64_t fg_now_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int64_t fg_now_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fg_format_time(int64_t ms, char *buf, size_t len)
{
    time_t secs = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    if (frac < 0) {
        frac += 1000;
        secs--;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}
