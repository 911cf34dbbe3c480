/*
 * store.c -- the backend table and the wrappers every caller goes through.
 *
 * The wrappers own the connection policy, so every backend gets it for free:
 * one deadline per call (connect included); connect lazily; when a call
 * reports FG_EUNAVAIL, drop the connection and refuse further calls without
 * touching the network until a reconnect deadline that doubles (with jitter)
 * up to a cap, cut short once per "store is back" epoch of the handle's group;
 * drop a connection that a backend left in an unknown state, or that the
 * server closed while it was idle, and make a new one at once. They also
 * escape the attacker-controlled audit fields once, before any backend sees
 * them. See store.h.
 */
#include "storage/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>

#include "policy/error.h"
#include "policy/url.h"
#include "storage/store_int.h"

/* A handle whose early (epoch) reconnect failed waits at least this long
 * before the next early one, however many epochs begin meanwhile. */
#define EPOCH_RETRY_GAP_MS 50

struct fg_store_group {
    uint64_t epoch; /* atomic: bumped when a handle sees the store answer after a failure */
    int down;       /* atomic: a handle saw the store fail since the last bump */
};

fg_store_group_t *fg_store_group_new(void)
{
    return calloc(1, sizeof(fg_store_group_t));
}

void fg_store_group_free(fg_store_group_t *g)
{
    free(g);
}

static const fg_store_backend_t *const backends[] = {&fg_store_sqlite, &fg_store_redis,
                                                     &fg_store_postgres};

static const char *const reason_names[] = {NULL,          "stale",     "missing",
                                           "malformed",   "unmatched", "report-only",
                                           "state-error", "jump",      "reset"};

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
    s->display = fg_url_redact(url);
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
        char *shown = fg_url_redact(url);
        snprintf(err, err_len, "unknown state store URL '%s'", shown ? shown : "?");
        free(shown);
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

static void log_event(fg_store_t *s, const char *event, const char *detail)
{
    if (s->opts.log) s->opts.log(s->opts.log_arg, event, s->display, detail);
}

static uint64_t group_epoch(const fg_store_t *s)
{
    return s->opts.group ? __atomic_load_n(&s->opts.group->epoch, __ATOMIC_ACQUIRE) : 0;
}

/* The store answered: if some handle of the group saw it fail since the last
 * epoch, begin a new one, which lets every handle in backoff retry once now. */
static void saw_answer(fg_store_t *s)
{
    fg_store_group_t *g = s->opts.group;
    int one = 1;
    if (g && __atomic_load_n(&g->down, __ATOMIC_RELAXED) &&
        __atomic_compare_exchange_n(&g->down, &one, 0, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        __atomic_fetch_add(&g->epoch, 1, __ATOMIC_ACQ_REL);
}

static void drop(fg_store_t *s)
{
    s->be->disconnect(s);
    s->connected = false;
    s->broken = false;
}

static void went_down(fg_store_t *s)
{
    drop(s);
    if (s->opts.group) __atomic_store_n(&s->opts.group->down, 1, __ATOMIC_RELEASE);
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
        log_event(s, "down", s->err);
    }
}

/* "appendonly=yes appendfsync=always" */
static void durability_text(const fg_durability_t *d, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < d->n && o < len; i++) {
        int w = snprintf(buf + o, len - o, "%s%s=%s", i ? " " : "", d->setting[i].name,
                         d->setting[i].value);
        if (w < 0) break;
        o += (size_t)w;
    }
}

/* Read the durability settings of a fresh connection; refuse it when the
 * handle requires a durable store and this one is not. */
static int check_durability(fg_store_t *s)
{
    if (!s->be->durability) return 0;
    fg_durability_t d;
    memset(&d, 0, sizeof d);
    int rc = s->be->durability(s, &d);
    if (rc) return rc;
    s->dur = d;
    char text[FG_STORE_ERR_LEN];
    durability_text(&d, text, sizeof text);
    log_event(s, d.durable ? "durability" : "not durable", text);
    if (s->opts.require_durable && !d.durable)
        return fg_store_seterr(s, FG_EUNAVAIL, "store is not durable (require_durable = on): %s",
                               d.advice);
    return 0;
}

static int ensure(fg_store_t *s)
{
    if (s->connected) {
        if (!s->be->stale || !s->be->stale(s)) return 0;
        /* the server closed this idle connection (restart, idle timeout): no
         * request was in flight, so make a new one now, without backoff */
        drop(s);
    }
    uint64_t now = fg_now_mono_ms();
    uint64_t epoch = group_epoch(s);
    bool early = now < s->retry_at_ms;
    if (early && (epoch == s->seen_epoch ||
                  (s->epoch_retry && now < s->attempt_at_ms + EPOCH_RETRY_GAP_MS))) {
        /* keep the last real error text; the caller sees "unavailable" */
        return FG_EUNAVAIL;
    }
    s->epoch_retry = early; /* a second early attempt in a row waits the gap */
    s->attempt_at_ms = now;
    s->seen_epoch = epoch;
    int rc = s->be->connect(s);
    if (!rc) rc = check_durability(s);
    if (rc) {
        went_down(s);
        return FG_EUNAVAIL;
    }
    s->connected = true;
    s->backoff_ms = 0;
    s->retry_at_ms = 0;
    saw_answer(s);
    if (s->was_down) {
        s->was_down = false;
        log_event(s, "up", s->err);
    }
    return 0;
}

static int begin(fg_store_t *s)
{
    s->deadline_ms = fg_now_mono_ms() + s->opts.timeout_ms;
    return ensure(s);
}

static int after(fg_store_t *s, int rc)
{
    if (rc == FG_EUNAVAIL) {
        went_down(s);
        return rc;
    }
    /* an answer we could not read, or memory running out half way, leaves the
     * connection in an unknown state: never reuse it (replies could be stale) */
    if (rc == FG_EPROTO || rc == FG_ENOMEM) s->broken = true;
    if (s->broken) drop(s);
    if (rc != FG_EPROTO && rc != FG_ENOMEM) saw_answer(s);
    return rc;
}

/* ---- audit text: escaped once, here, for every backend ---- */

typedef struct saved_text {
    const char *method, *path, *client, *detail;
    bool path_truncated;
} saved_text_t;

static int clean_field(const char **f, size_t max, bool *truncated, char **owned)
{
    *owned = NULL;
    if (truncated) *truncated = false;
    if (!*f) return 0;
    size_t len = strlen(*f);
    if (fg_audit_is_clean(*f, len, max)) return 0;
    *owned = fg_audit_escape(*f, len, max, truncated);
    if (!*owned) return FG_ENOMEM;
    *f = *owned;
    return 0;
}

/* Point the fields of `a` at escaped copies (kept in owned[4]); `sv` keeps the
 * caller's pointers for restore_text. */
static int clean_text(fg_audit_t *a, saved_text_t *sv, char *owned[4])
{
    for (int i = 0; i < 4; i++) owned[i] = NULL;
    sv->method = a->method;
    sv->path = a->path;
    sv->client = a->client;
    sv->detail = a->detail;
    sv->path_truncated = a->path_truncated;
    bool cut = false;
    int rc = clean_field(&a->method, 0, NULL, &owned[0]);
    if (!rc) rc = clean_field(&a->path, FG_AUDIT_PATH_MAX, &cut, &owned[1]);
    if (!rc) rc = clean_field(&a->client, 0, NULL, &owned[2]);
    if (!rc) rc = clean_field(&a->detail, FG_AUDIT_DETAIL_MAX, NULL, &owned[3]);
    a->path_truncated = a->path_truncated || cut;
    return rc;
}

static void restore_text(fg_audit_t *a, const saved_text_t *sv, char *owned[4])
{
    a->method = sv->method;
    a->path = sv->path;
    a->client = sv->client;
    a->detail = sv->detail;
    a->path_truncated = sv->path_truncated;
    for (int i = 0; i < 4; i++) free(owned[i]);
}

/* ---- event-loop mode ---- */

bool fg_store_loop_capable(const fg_store_t *s)
{
    return s->be->loop_send != NULL;
}

int fg_store_connect(fg_store_t *s)
{
    return begin(s);
}

bool fg_store_connected(const fg_store_t *s)
{
    return s->connected;
}

int fg_store_loop_fd(fg_store_t *s)
{
    return s->connected ? s->be->loop_fd(s) : -1;
}

int fg_store_loop_send(fg_store_t *s, fg_check_t *c)
{
    saved_text_t sv;
    char *owned[4];
    int rc = clean_text(&c->audit, &sv, owned);
    if (!rc) rc = s->be->loop_send(s, c); /* the command copies the text */
    restore_text(&c->audit, &sv, owned);
    return rc;
}

int fg_store_loop_write(fg_store_t *s, bool *more)
{
    return s->be->loop_write(s, more);
}

int fg_store_loop_read(fg_store_t *s)
{
    return s->be->loop_read(s);
}

int fg_store_loop_reply(fg_store_t *s, fg_check_t *c, int *check_rc)
{
    int n = s->be->loop_reply(s, c, check_rc);
    if (n == 1 && *check_rc != FG_EPROTO) saw_answer(s);
    return n;
}

void fg_store_loop_fail(fg_store_t *s, const char *why)
{
    if (why) fg_store_seterr(s, FG_EUNAVAIL, "%s: %s", fg_store_display(s), why);
    if (s->connected) went_down(s);
}

int fg_store_check(fg_store_t *s, fg_check_t *checks, size_t n)
{
    if (n > FG_STORE_BATCH_MAX)
        return fg_store_seterr(s, FG_EINVAL, "a batch of %zu checks is too large", n);
    int rc = begin(s);
    if (rc || n == 0) return rc;
    saved_text_t sv[FG_STORE_BATCH_MAX];
    char *owned[FG_STORE_BATCH_MAX][4];
    size_t cleaned = 0;
    for (; cleaned < n && !rc; cleaned++)
        rc = clean_text(&checks[cleaned].audit, &sv[cleaned], owned[cleaned]);
    if (!rc)
        rc = after(s, s->be->check(s, checks, n));
    else
        fg_store_seterr(s, rc, "out of memory escaping audit text");
    for (size_t i = 0; i < cleaned; i++) {
        /* keep what the store assigned to the template */
        int64_t t = checks[i].audit.time_ms;
        restore_text(&checks[i].audit, &sv[i], owned[i]);
        checks[i].audit.time_ms = t;
    }
    return rc;
}

int fg_store_get(fg_store_t *s, const char *resource, uint64_t *hwm)
{
    int rc = begin(s);
    return rc ? rc : after(s, s->be->get(s, resource, hwm));
}

int fg_store_audit_append(fg_store_t *s, fg_audit_t *rec)
{
    int rc = begin(s);
    if (rc) return rc;
    saved_text_t sv;
    char *owned[4] = {0};
    rc = clean_text(rec, &sv, owned);
    bool cut = rec->path_truncated;
    if (!rc) rc = after(s, s->be->audit_append(s, rec));
    restore_text(rec, &sv, owned);
    rec->path_truncated = cut;
    return rc;
}

int fg_store_audit_query(fg_store_t *s, const fg_audit_query_t *q, fg_audit_list_t *out)
{
    memset(out, 0, sizeof *out);
    if (q->before_id && q->after_id)
        return fg_store_seterr(s, FG_EINVAL, "cursor and after cannot be combined");
    int rc = begin(s);
    if (rc) return rc;
    rc = after(s, s->be->audit_query(s, q, out));
    if (rc) fg_audit_list_free(out);
    return rc;
}

int fg_store_audit_purge(fg_store_t *s, int64_t older_than_ms, uint64_t keep_max, size_t batch,
                         size_t *deleted)
{
    *deleted = 0;
    int rc = begin(s);
    return rc ? rc : after(s, s->be->audit_purge(s, older_than_ms, keep_max, batch, deleted));
}

int fg_store_ping(fg_store_t *s)
{
    int rc = begin(s);
    return rc ? rc : after(s, s->be->ping(s));
}

int fg_store_set_hwm(fg_store_t *s, fg_set_hwm_t *op)
{
    int rc = begin(s);
    if (rc) return rc;
    saved_text_t sv;
    char *owned[4] = {0};
    op->audit.reason = FG_REASON_RESET;
    rc = clean_text(&op->audit, &sv, owned);
    if (!rc) rc = after(s, s->be->set_hwm(s, op));
    restore_text(&op->audit, &sv, owned);
    return rc;
}

int fg_store_durability(fg_store_t *s, fg_durability_t *d)
{
    int rc = begin(s);
    /* a store refused as not durable still tells what it has */
    *d = s->dur;
    return rc;
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
