/*
 * engine.c -- one event-loop thread: the HTTP front end and the forwarding.
 *
 * Each engine owns an epoll loop that drives three things without ever
 * blocking: a libmicrohttpd daemon in external-epoll mode (client side), a
 * libcurl multi handle in multi_socket mode (upstream side), and an eventfd
 * "inbox" on which store threads and other engines post results (a finished
 * fence check, a lane handed over). A request that waits -- for its lane, for
 * the store, for upstream bytes, for the client to read -- is a suspended MHD
 * connection and a paused curl transfer, not a blocked thread, so one slow
 * upstream or store never ties up the others.
 *
 * Request life (SPEC request flow):
 *   headers -> canonical path, policy, token (policy/) -> lane (lanes.c)
 *   -> fence check on a store thread (storepool.c) -> forward with curl,
 *   bodies streamed through two bounded 64 KiB buffers in each direction,
 *   with MHD suspend/resume and curl pause/unpause as back-pressure.
 * All per-request state lives in one fg_req_t, touched only by its engine's
 * thread; other threads reach it only through the inbox.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/gateway_int.h"
#include "gateway/lanes.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/problem.h"
#include "policy/error.h"
#include "policy/path.h"
#include "policy/token.h"

#define BUF_CAP      (64 * 1024) /* per direction, per request */
#define RESP_HDR_MAX (64 * 1024) /* upstream response header bytes */
#define EASY_CACHE   64
#define SWEEP_MS     100
#define KEY_INLINE   256

enum { TAG_MHD = 1, TAG_INBOX = 2, TAG_CURL = 3 };

enum req_state {
    ST_NEW = 0,
    ST_WAIT_AUDIT, /* refusal waits for its audit record */
    ST_WAIT_LANE,
    ST_WAIT_CHECK,
    ST_REFUSE,  /* refusal ready to queue */
    ST_FORWARD, /* ready to start, or started, the upstream transfer */
};

enum req_phase { PH_HEADERS = 0, PH_BODY, PH_WAIT_RESP, PH_RESP };
enum msg_kind { MSG_JOB = 1, MSG_LANE };

typedef struct ring {
    char *p;
    size_t head, len;
} ring_t;

typedef struct fg_req fg_req_t;

struct fg_engine {
    fg_gateway_t *gw;
    unsigned id;
    int ep, evfd, lfd, mhd_ep;
    struct MHD_Daemon *d;
    CURLM *multi;
    int64_t curl_deadline; /* monotonic ms, -1 none */
    pthread_t th;
    bool started;
    pthread_mutex_t inbox_mu;
    fg_req_t *inbox_head, *inbox_tail;
    int quiesce;          /* atomic: main asks to drain */
    uint64_t deadline_ms; /* atomic: hard stop when draining */
    bool quiesced;
    fg_req_t *reqs; /* every live request of this engine */
    size_t nreqs;
    uint64_t last_sweep;
    CURL *easy_cache[EASY_CACHE];
    size_t n_easy;
};

struct fg_req {
    fg_engine_t *e;
    fg_req_t *prev, *next; /* engine list */
    fg_req_t *msg_next;    /* inbox */
    int msg;
    struct MHD_Connection *conn;
    fg_cfgref_t *cfg;
    const fg_policy_t *pol;
    fg_metrics_row_t *row;
    enum req_state state;
    enum req_phase phase;
    int susp;    /* why the connection is suspended (0 = not) */
    bool orphan; /* MHD is done with the request; free when nothing is pending */
    int waits;   /* store jobs or lane grants in flight */
    bool lane_held, lane_queued;
    fg_lane_waiter_t lw;
    uint64_t t_start, t_wait;
    /* request */
    char *raw; /* raw request target, owned */
    size_t raw_len;
    char *path; /* canonical path, owned (same allocation as raw) */
    size_t path_len;
    const char *query;
    size_t query_len;
    char *method; /* owned copy */
    bool is_read;
    bool has_body;
    char *key;
    char key_inline[KEY_INLINE];
    bool has_token;
    uint64_t token;
    char reqid[72];
    char client[64];
    fg_job_t job;
    fg_outcome_t outcome;
    int status; /* what the client got, for the log */
    /* refusal */
    fg_problem_t prob;
    char detail[256];
    bool retry_after;
    /* forwarding */
    CURL *easy;
    struct curl_slist *hdrs;
    char *url;
    bool curl_active;
    bool curl_done;
    bool small_body; /* whole body (<= BUF_CAP) is read first, then sent with the headers */
    bool up_failed;
    int fail_status;
    ring_t up, down;
    bool up_eof, down_eof, down_err;
    bool read_paused, write_paused;
    uint64_t last_up_ms;
    long ustatus;
    bool resp_ready;
    int64_t resp_len;
    char *rh; /* "name\0value\0" pairs */
    size_t rh_len, rh_cap;
    bool rh_has_reqid;
};

enum { SUSP_WAIT = 1, SUSP_UP, SUSP_DOWN, SUSP_RESP };

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

static size_t ring_write(ring_t *r, const char *src, size_t n)
{
    size_t room = BUF_CAP - r->len;
    if (n > room) n = room;
    size_t tail = (r->head + r->len) % BUF_CAP;
    size_t first = BUF_CAP - tail < n ? BUF_CAP - tail : n;
    memcpy(r->p + tail, src, first);
    memcpy(r->p, src + first, n - first);
    r->len += n;
    return n;
}

static size_t ring_read(ring_t *r, char *dst, size_t n)
{
    if (n > r->len) n = r->len;
    size_t first = BUF_CAP - r->head < n ? BUF_CAP - r->head : n;
    memcpy(dst, r->p + r->head, first);
    memcpy(dst + first, r->p, n - first);
    r->head = (r->head + n) % BUF_CAP;
    r->len -= n;
    if (r->len == 0) r->head = 0;
    return n;
}

static void suspend(fg_req_t *r, int why)
{
    if (!r->susp && r->conn) {
        MHD_suspend_connection(r->conn);
        r->susp = why;
    }
}

static void resume(fg_req_t *r)
{
    if (r->susp && r->conn) {
        r->susp = 0;
        MHD_resume_connection(r->conn);
    }
}

static bool sane_request_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':'))
            return false;
        if (n >= 64) return false;
    }
    return n > 0;
}

static void new_request_id(char *out)
{
    static __thread uint64_t st;
    if (!st) {
        if (getrandom(&st, sizeof st, 0) != sizeof st)
            st = fg_now_mono_ms() ^ (uint64_t)(uintptr_t)out;
        st |= 1;
    }
    uint64_t a, b;
    st ^= st << 13, st ^= st >> 7, st ^= st << 17, a = st;
    st ^= st << 13, st ^= st >> 7, st ^= st << 17, b = st;
    snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, a, b);
}

/* ------------------------------------------------------------------ */
/* refusals                                                             */

static void refuse(fg_req_t *r, int status, const char *type, const char *title,
                   fg_outcome_t outcome)
{
    r->state = ST_REFUSE;
    r->outcome = outcome;
    r->prob.status = status;
    r->prob.type = type;
    r->prob.title = title;
    r->prob.detail = r->detail[0] ? r->detail : NULL;
    r->prob.request_id = r->reqid;
    r->retry_after = status == 503;
}

static enum MHD_Result queue_refusal(fg_req_t *r)
{
    size_t len = 0;
    char *body = fg_problem_json(&r->prob, &len);
    struct MHD_Response *resp =
        body ? MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/problem+json");
    MHD_add_response_header(resp, "X-Request-Id", r->reqid);
    if (r->retry_after) MHD_add_response_header(resp, "Retry-After", "1");
    r->status = r->prob.status;
    fg_metrics_count(r->row, r->outcome);
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->prob.status, resp);
    MHD_destroy_response(resp);
    r->phase = PH_RESP;
    return ret;
}

/* ------------------------------------------------------------------ */
/* the inbox: results from store threads and lane hand-overs            */

static void post(fg_req_t *r, int msg)
{
    fg_engine_t *e = r->e;
    pthread_mutex_lock(&e->inbox_mu);
    r->msg = msg;
    r->msg_next = NULL;
    bool was_empty = !e->inbox_head;
    if (e->inbox_tail)
        e->inbox_tail->msg_next = r;
    else
        e->inbox_head = r;
    e->inbox_tail = r;
    pthread_mutex_unlock(&e->inbox_mu);
    if (was_empty) {
        uint64_t one = 1;
        ssize_t w = write(e->evfd, &one, sizeof one);
        (void)w;
    }
}

static void on_job_done(fg_job_t *job)
{
    fg_req_t *r = (fg_req_t *)((char *)job - offsetof(fg_req_t, job));
    post(r, MSG_JOB);
}

static void on_lane_granted(fg_lane_waiter_t *w)
{
    fg_req_t *r = (fg_req_t *)((char *)w - offsetof(fg_req_t, lw));
    post(r, MSG_LANE);
}

static void fill_audit(fg_req_t *r, fg_audit_t *a, fg_reason_t reason)
{
    memset(a, 0, sizeof *a);
    a->policy = r->pol ? r->pol->name : NULL;
    a->resource = r->key;
    a->method = r->method;
    a->path = r->path ? r->path : r->raw;
    a->client = r->client;
    a->request_id = r->reqid;
    a->has_token = r->has_token;
    a->token = r->token;
    a->reason = reason;
}

static void log_unstored_audit(const fg_audit_t *a, int rc)
{
    json_t *f = json_pack("{s:s?,s:s?,s:s?,s:s?,s:s?,s:s?,s:s,s:s}", "policy", a->policy,
                          "resource", a->resource, "method", a->method, "path", a->path, "client",
                          a->client, "request_id", a->request_id, "reason",
                          fg_reason_name(a->reason) ? fg_reason_name(a->reason) : "", "error",
                          fg_strerror(rc));
    fg_log(FG_LOG_ERROR, "audit record could not be stored", f);
}

/* Submit a store job for `r`; on a full queue, refuse with 503. */
static void submit_job(fg_req_t *r, enum req_state st)
{
    r->job.done = on_job_done;
    r->job.rc = 0;
    if (fg_storepool_submit(r->e->gw->pool, &r->job) != 0) {
        if (r->job.kind == FG_JOB_AUDIT) {
            /* the refusal stands; only its record is lost, and that is logged */
            log_unstored_audit(&r->job.audit, FG_EFULL);
            r->state = ST_REFUSE;
            return;
        }
        snprintf(r->detail, sizeof r->detail, "the state store queue is full");
        refuse(r, 503, "state-unavailable", "State store unavailable", FG_OUT_STATE_UNAVAILABLE);
        return;
    }
    r->waits++;
    r->state = st;
}

/* Refuse `r` after its audit record is stored (SPEC "Audit"). */
static void refuse_audited(fg_req_t *r, fg_reason_t reason, int status, const char *type,
                           const char *title, fg_outcome_t outcome)
{
    refuse(r, status, type, title, outcome);
    r->job.kind = FG_JOB_AUDIT;
    fill_audit(r, &r->job.audit, reason);
    submit_job(r, ST_WAIT_AUDIT);
}

/* A write let through without a check (report-only, on_state_error=forward) is
 * audited without holding the request back: a self-owned job. */
typedef struct loose_audit {
    fg_job_t job;
    char mem[];
} loose_audit_t;

static void loose_audit_done(fg_job_t *job)
{
    if (job->rc) log_unstored_audit(&job->audit, job->rc);
    free(job);
}

static char *dup_into(char **at, const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = memcpy(*at, s, n);
    *at += n;
    return d;
}

static void audit_loose(fg_req_t *r, fg_reason_t reason)
{
    fg_audit_t a;
    fill_audit(r, &a, reason);
    const char *strs[] = {a.policy, a.resource, a.method, a.path, a.client, a.request_id};
    size_t need = 0;
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
        need += strs[i] ? strlen(strs[i]) + 1 : 0;
    loose_audit_t *la = calloc(1, sizeof *la + need);
    if (!la) {
        log_unstored_audit(&a, FG_ENOMEM);
        return;
    }
    char *at = la->mem;
    la->job.kind = FG_JOB_AUDIT;
    la->job.audit = a;
    la->job.audit.policy = dup_into(&at, a.policy);
    la->job.audit.resource = dup_into(&at, a.resource);
    la->job.audit.method = dup_into(&at, a.method);
    la->job.audit.path = dup_into(&at, a.path);
    la->job.audit.client = dup_into(&at, a.client);
    la->job.audit.request_id = dup_into(&at, a.request_id);
    la->job.done = loose_audit_done;
    if (fg_storepool_submit(r->e->gw->pool, &la->job) != 0) {
        log_unstored_audit(&a, FG_EFULL);
        free(la);
    }
}

/* ------------------------------------------------------------------ */
/* fence check                                                          */

static void start_check(fg_req_t *r)
{
    memset(&r->job.check, 0, sizeof r->job.check);
    r->job.kind = FG_JOB_CHECK;
    fg_check_t *c = &r->job.check;
    c->resource = r->key;
    c->token = r->token;
    c->strict = r->pol->compare == FG_COMPARE_GT;
    fill_audit(r, &c->audit,
               r->pol->mode == FG_MODE_REPORT_ONLY ? FG_REASON_REPORT_ONLY : FG_REASON_STALE);
    submit_job(r, ST_WAIT_CHECK);
    if (r->state == ST_REFUSE) fg_lanes_release(r->key), r->lane_held = false;
}

static void take_lane(fg_req_t *r)
{
    r->lw.granted = on_lane_granted;
    int rc = fg_lanes_acquire(r->key, &r->lw);
    if (rc == 1) {
        r->lane_held = true;
        start_check(r);
    } else if (rc == 0) {
        r->lane_queued = true;
        r->waits++;
        r->state = ST_WAIT_LANE;
        r->t_wait = fg_now_mono_ms();
    } else {
        snprintf(r->detail, sizeof r->detail, "out of memory");
        refuse(r, 503, "fence-busy", "Resource busy", FG_OUT_FENCE_BUSY);
    }
}

static void release_lane(fg_req_t *r)
{
    if (r->lane_held) {
        r->lane_held = false;
        fg_lanes_release(r->key);
    }
}

static void on_check_result(fg_req_t *r)
{
    fg_check_t *c = &r->job.check;
    const fg_policy_t *p = r->pol;
    if (r->job.rc) {
        if (p->state_error_forward) {
            audit_loose(r, FG_REASON_STATE_ERROR);
            r->outcome = FG_OUT_STATE_ERROR_FORWARD;
            r->state = ST_FORWARD;
            return;
        }
        release_lane(r);
        snprintf(r->detail, sizeof r->detail, "the state store did not answer (%s); retry later",
                 fg_strerror(r->job.rc));
        r->prob.resource = r->key;
        r->prob.has_token = true;
        r->prob.token = r->token;
        refuse(r, 503, "state-unavailable", "State store unavailable", FG_OUT_STATE_UNAVAILABLE);
        return;
    }
    if (c->result == FG_CHECK_ACCEPTED) {
        r->outcome = FG_OUT_FORWARDED;
        r->state = ST_FORWARD;
        return;
    }
    if (p->mode == FG_MODE_REPORT_ONLY) {
        r->outcome = FG_OUT_REPORT_ONLY;
        r->state = ST_FORWARD;
        return;
    }
    release_lane(r);
    r->prob.resource = r->key;
    r->prob.policy = p->name;
    r->prob.has_token = true;
    r->prob.token = r->token;
    r->prob.has_highest = c->had_highest;
    r->prob.highest = c->highest;
    snprintf(r->detail, sizeof r->detail,
             "token %" PRIu64 " is %s the highest token %" PRIu64 " for %s", r->token,
             r->token == c->highest ? "not above" : "below", c->highest, r->key);
    refuse(r, 409, "stale-token", "Stale fencing token", FG_OUT_STALE);
}

static void req_free(fg_req_t *r);

static void process_inbox(fg_engine_t *e)
{
    uint64_t v;
    ssize_t rd = read(e->evfd, &v, sizeof v);
    (void)rd;
    pthread_mutex_lock(&e->inbox_mu);
    fg_req_t *list = e->inbox_head;
    e->inbox_head = e->inbox_tail = NULL;
    pthread_mutex_unlock(&e->inbox_mu);
    while (list) {
        fg_req_t *r = list;
        list = r->msg_next;
        r->waits--;
        if (r->msg == MSG_LANE) {
            r->lane_queued = false;
            r->lane_held = true;
            if (r->orphan) {
                release_lane(r);
            } else {
                start_check(r);
                if (r->state == ST_REFUSE) resume(r);
            }
        } else if (r->job.kind == FG_JOB_CHECK) {
            if (r->orphan)
                release_lane(r);
            else
                on_check_result(r), resume(r);
        } else { /* audit append behind a refusal */
            if (r->job.rc) log_unstored_audit(&r->job.audit, r->job.rc);
            r->state = ST_REFUSE;
            resume(r);
        }
        if (r->orphan && r->waits == 0) req_free(r);
    }
}

/* ------------------------------------------------------------------ */
/* curl side                                                            */

static size_t curl_read_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    fg_req_t *r = ud;
    r->last_up_ms = fg_now_mono_ms();
    if (r->up.len == 0) {
        if (r->up_eof) return 0;
        r->read_paused = true;
        return CURL_READFUNC_PAUSE;
    }
    size_t n = ring_read(&r->up, buf, size * nitems);
    if (r->susp == SUSP_UP) resume(r);
    return n;
}

static size_t curl_write_cb(char *p, size_t size, size_t n, void *ud)
{
    fg_req_t *r = ud;
    size_t total = size * n;
    r->last_up_ms = fg_now_mono_ms();
    if (!r->conn || r->phase == PH_HEADERS || r->up_failed)
        return total; /* nobody to deliver to: drain */
    if (total > BUF_CAP) return 0;
    if (BUF_CAP - r->down.len < total) {
        r->write_paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    ring_write(&r->down, p, total);
    if (r->susp == SUSP_DOWN) resume(r);
    return total;
}

static bool hop_by_hop(const char *name, size_t len)
{
    static const char *const hop[] = {
        "connection", "keep-alive", "proxy-connection",   "transfer-encoding",  "te",
        "trailer",    "upgrade",    "proxy-authenticate", "proxy-authorization"};
    for (size_t i = 0; i < sizeof hop / sizeof *hop; i++)
        if (strlen(hop[i]) == len && strncasecmp(hop[i], name, len) == 0) return true;
    return false;
}

static size_t curl_header_cb(char *p, size_t size, size_t n, void *ud)
{
    fg_req_t *r = ud;
    size_t len = size * n;
    r->last_up_ms = fg_now_mono_ms();
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        const char *sp = memchr(p, ' ', len);
        r->ustatus = sp ? strtol(sp + 1, NULL, 10) : 0;
        r->rh_len = 0;
        r->resp_len = -1;
        r->rh_has_reqid = false;
        return len;
    }
    size_t l = len;
    while (l && (p[l - 1] == '\r' || p[l - 1] == '\n')) l--;
    if (l == 0) {
        if (r->ustatus >= 200) {
            r->resp_ready = true;
            if (r->susp == SUSP_RESP) resume(r);
        }
        return len;
    }
    const char *colon = memchr(p, ':', l);
    if (!colon || r->ustatus < 200) return len;
    size_t nlen = (size_t)(colon - p);
    const char *v = colon + 1;
    while (v < p + l && (*v == ' ' || *v == '\t')) v++;
    size_t vlen = (size_t)(p + l - v);
    if (hop_by_hop(p, nlen)) return len;
    if (nlen == 14 && strncasecmp(p, "content-length", 14) == 0) {
        char tmp[32];
        uint64_t cl;
        if (vlen < sizeof tmp) {
            memcpy(tmp, v, vlen);
            tmp[vlen] = '\0';
            if (fg_token_parse(tmp, vlen, &cl) == 0 && cl <= INT64_MAX) r->resp_len = (int64_t)cl;
        }
        return len;
    }
    if (nlen == 12 && strncasecmp(p, "x-request-id", 12) == 0) r->rh_has_reqid = true;
    if (r->rh_len + nlen + vlen + 2 > RESP_HDR_MAX)
        return 0; /* abort: an upstream sending endless headers is broken */
    if (r->rh_cap < r->rh_len + nlen + vlen + 2) {
        size_t nc = r->rh_cap ? r->rh_cap * 2 : 1024;
        while (nc < r->rh_len + nlen + vlen + 2) nc *= 2;
        char *np = realloc(r->rh, nc);
        if (!np) return 0;
        r->rh = np;
        r->rh_cap = nc;
    }
    memcpy(r->rh + r->rh_len, p, nlen);
    r->rh[r->rh_len + nlen] = '\0';
    r->rh_len += nlen + 1;
    memcpy(r->rh + r->rh_len, v, vlen);
    r->rh[r->rh_len + vlen] = '\0';
    r->rh_len += vlen + 1;
    return len;
}

static void upstream_finished(fg_req_t *r, CURLcode res)
{
    fg_engine_t *e = r->e;
    curl_multi_remove_handle(e->multi, r->easy);
    r->curl_active = false;
    r->curl_done = true;
    release_lane(r);
    if (res == CURLE_OK && r->resp_ready) {
        r->down_eof = true;
    } else if (!r->resp_ready) {
        r->up_failed = true;
        r->fail_status = res == CURLE_OPERATION_TIMEDOUT ? 504 : 502;
        snprintf(r->detail, sizeof r->detail, "upstream: %s", curl_easy_strerror(res));
    } else {
        r->down_err = true;
    }
    if (r->orphan) {
        if (r->waits == 0) req_free(r);
        return;
    }
    resume(r);
}

static void curl_check_done(fg_engine_t *e)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(e->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        fg_req_t *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        if (r) upstream_finished(r, m->data.result);
    }
}

static int curl_sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    fg_engine_t *e = userp;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(e->ep, EPOLL_CTL_DEL, s, NULL);
        curl_multi_assign(e->multi, s, NULL);
        return 0;
    }
    struct epoll_event ev = {0};
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
    ev.data.u64 = ((uint64_t)(unsigned)s << 8) | TAG_CURL;
    if (!socketp) {
        if (epoll_ctl(e->ep, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
            epoll_ctl(e->ep, EPOLL_CTL_MOD, s, &ev);
        curl_multi_assign(e->multi, s, (void *)1);
    } else if (epoll_ctl(e->ep, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT) {
        epoll_ctl(e->ep, EPOLL_CTL_ADD, s, &ev);
    }
    return 0;
}

static int curl_timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    fg_engine_t *e = userp;
    e->curl_deadline = timeout_ms < 0 ? -1 : (int64_t)(fg_now_mono_ms() + (uint64_t)timeout_ms);
    return 0;
}

/* Header iteration context for building the upstream request. */
typedef struct hdr_ctx {
    fg_req_t *r;
    struct curl_slist *list;
    const char *conn_tokens; /* value of Connection: names more hop-by-hop headers */
    bool failed, has_accept, has_ctype;
    const char *xff;
} hdr_ctx_t;

static bool named_in_connection(const char *conn, const char *name)
{
    if (!conn) return false;
    size_t nl = strlen(name);
    const char *p = conn;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t') p++;
        const char *s = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t') p++;
        if ((size_t)(p - s) == nl && strncasecmp(s, name, nl) == 0) return true;
    }
    return false;
}

static bool is_override_header(const char *k)
{
    return strcasecmp(k, "X-HTTP-Method-Override") == 0 || strcasecmp(k, "X-HTTP-Method") == 0 ||
           strcasecmp(k, "X-Method-Override") == 0;
}

static enum MHD_Result add_req_header(void *cls, enum MHD_ValueKind kind, const char *k,
                                      const char *v)
{
    (void)kind;
    hdr_ctx_t *h = cls;
    fg_req_t *r = h->r;
    if (!k || !v) return MHD_YES;
    size_t kl = strlen(k);
    if (hop_by_hop(k, kl) || named_in_connection(h->conn_tokens, k) || is_override_header(k) ||
        strcasecmp(k, "Expect") == 0 || strcasecmp(k, "Content-Length") == 0 ||
        strcasecmp(k, "X-Request-Id") == 0)
        return MHD_YES;
    if (strcasecmp(k, "X-Forwarded-For") == 0) {
        if (!h->xff) h->xff = v;
        return MHD_YES;
    }
    bool checked = !r->is_read && r->has_token && r->pol;
    if (checked &&
        (strcasecmp(k, r->pol->token_header) == 0 || strcasecmp(k, "Fencing-Token") == 0))
        return MHD_YES; /* replaced by the canonical token below */
    if (strcasecmp(k, "Accept") == 0) h->has_accept = true;
    if (strcasecmp(k, "Content-Type") == 0) h->has_ctype = true;
    size_t vl = strlen(v);
    char *line = malloc(kl + vl + 3);
    if (!line) {
        h->failed = true;
        return MHD_NO;
    }
    memcpy(line, k, kl);
    line[kl] = ':';
    line[kl + 1] = ' ';
    memcpy(line + kl + 2, v, vl + 1);
    if (vl == 0) line[kl] = ';', line[kl + 1] = '\0'; /* curl: "Name;" sends an empty header */
    struct curl_slist *nl = curl_slist_append(h->list, line);
    free(line);
    if (!nl) {
        h->failed = true;
        return MHD_NO;
    }
    h->list = nl;
    return MHD_YES;
}

static bool slist_add(struct curl_slist **l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static bool slist_add(struct curl_slist **l, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) return false;
    struct curl_slist *nl = curl_slist_append(*l, buf);
    if (!nl) return false;
    *l = nl;
    return true;
}

static int build_headers(fg_req_t *r)
{
    hdr_ctx_t h = {.r = r};
    h.conn_tokens = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Connection");
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, add_req_header, &h);
    bool ok = !h.failed;
    if (ok && r->small_body && !h.has_ctype)
        ok = slist_add(&h.list, "Content-Type:"); /* curl would add a form type for POSTFIELDS */
    if (ok && !h.has_accept) ok = slist_add(&h.list, "Accept:"); /* curl would add Accept: */
    ok = ok && slist_add(&h.list, "Expect:"); /* curl sets Transfer-Encoding itself */
    if (ok) {
        size_t xl = h.xff ? strlen(h.xff) : 0;
        if (xl > 900)
            ok = false;
        else if (h.xff)
            ok = slist_add(&h.list, "X-Forwarded-For: %s, %s", h.xff, r->client);
        else
            ok = slist_add(&h.list, "X-Forwarded-For: %s", r->client);
    }
    ok = ok && slist_add(&h.list, "X-Request-Id: %s", r->reqid);
    if (ok && !r->is_read && r->has_token && r->pol) {
        char tok[FG_TOKEN_STRLEN];
        fg_token_format(r->token, tok);
        ok = slist_add(&h.list, "Fencing-Token: %s", tok);
        if (ok && strcasecmp(r->pol->token_header, "Fencing-Token") != 0)
            ok = slist_add(&h.list, "%s: %s", r->pol->token_header, tok);
    }
    if (!ok) {
        curl_slist_free_all(h.list);
        return FG_ENOMEM;
    }
    r->hdrs = h.list;
    return 0;
}

static CURL *get_easy(fg_engine_t *e)
{
    if (e->n_easy) {
        CURL *c = e->easy_cache[--e->n_easy];
        curl_easy_reset(c);
        return c;
    }
    return curl_easy_init();
}

static void put_easy(fg_engine_t *e, CURL *c)
{
    if (e->n_easy < EASY_CACHE)
        e->easy_cache[e->n_easy++] = c;
    else
        curl_easy_cleanup(c);
}

/* Hand the prepared transfer to the multi handle. */
static int launch_upstream(fg_req_t *r)
{
    r->last_up_ms = fg_now_mono_ms();
    if (curl_multi_add_handle(r->e->multi, r->easy) != CURLM_OK) return FG_ENOMEM;
    r->curl_active = true;
    return 0;
}

static int start_upstream(fg_req_t *r)
{
    fg_engine_t *e = r->e;
    const fg_config_t *cfg = r->cfg->cfg;
    const char *base = (r->pol && r->pol->upstream) ? r->pol->upstream : cfg->upstream;
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/') bl--;
    size_t ul = bl + r->path_len + (r->query ? r->query_len + 1 : 0) + 1;
    r->url = malloc(ul);
    if (!r->url) return FG_ENOMEM;
    memcpy(r->url, base, bl);
    memcpy(r->url + bl, r->path, r->path_len);
    size_t at = bl + r->path_len;
    if (r->query) {
        r->url[at++] = '?';
        memcpy(r->url + at, r->query, r->query_len);
        at += r->query_len;
    }
    r->url[at] = '\0';
    uint64_t clen = 0;
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    bool has_cl = cl && fg_token_parse(cl, strlen(cl), &clen) == 0 && clen <= INT64_MAX;
    /* A small body with a known length is read whole first and then sent in
     * one piece with the headers: fewer writes and no pause/unpause round. */
    r->small_body = r->has_body && has_cl && clen <= BUF_CAP && strcmp(r->method, "HEAD") != 0;
    if (build_headers(r)) return FG_ENOMEM;
    if (!r->down.p && !(r->down.p = malloc(BUF_CAP))) return FG_ENOMEM;
    if (r->has_body && !r->up.p && !(r->up.p = malloc(BUF_CAP))) return FG_ENOMEM;
    CURL *c = r->easy = get_easy(e);
    if (!c) return FG_ENOMEM;
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_PRIVATE, (char *)r);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, curl_header_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, curl_write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HTTP_CONTENT_DECODING, 0L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    uint64_t to = cfg->upstream_timeout_ms ? cfg->upstream_timeout_ms : 30000;
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(to < 10000 ? to : 10000));
    if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (r->small_body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)clen);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->up.p); /* filled before launch */
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    } else if (r->has_body) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, curl_read_cb);
        curl_easy_setopt(c, CURLOPT_READDATA, r);
        if (has_cl) curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)clen);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    } else if (strcmp(r->method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    }
    r->resp_len = -1;
    return r->small_body ? 0 : launch_upstream(r);
}

static void upstream_abort(fg_req_t *r, int status)
{
    if (!r->curl_active) return;
    curl_multi_remove_handle(r->e->multi, r->easy);
    r->curl_active = false;
    r->curl_done = true;
    release_lane(r);
    if (!r->resp_ready || r->phase != PH_RESP) {
        r->up_failed = true;
        r->fail_status = status;
    } else {
        r->down_err = true;
    }
}

/* ------------------------------------------------------------------ */
/* MHD side                                                             */

static ssize_t content_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    fg_req_t *r = cls;
    if (r->down.len) {
        size_t n = ring_read(&r->down, buf, max);
        if (r->write_paused && r->curl_active) {
            r->write_paused = false;
            curl_easy_pause(r->easy, CURLPAUSE_CONT);
        }
        return (ssize_t)n;
    }
    if (r->down_eof) return MHD_CONTENT_READER_END_OF_STREAM;
    if (r->down_err || !r->curl_active) return MHD_CONTENT_READER_END_WITH_ERROR;
    suspend(r, SUSP_DOWN);
    return 0;
}

static enum MHD_Result queue_upstream_response(fg_req_t *r)
{
    uint64_t size = MHD_SIZE_UNKNOWN;
    if (r->resp_len >= 0) size = (uint64_t)r->resp_len;
    if (r->ustatus == 204 || r->ustatus == 304) size = 0;
    struct MHD_Response *resp;
    if (r->down_eof && strcmp(r->method, "HEAD") != 0 && size != 0) {
        /* the whole answer is here: one buffer, sent with the headers */
        size_t n = r->down.len;
        char *body = malloc(n ? n : 1);
        if (!body) return MHD_NO;
        ring_read(&r->down, body, n);
        resp = MHD_create_response_from_buffer(n, body, MHD_RESPMEM_MUST_FREE);
        if (!resp) free(body);
    } else {
        resp = MHD_create_response_from_callback(size, 32 * 1024, content_reader, r, NULL);
    }
    if (!resp) return MHD_NO;
    for (size_t at = 0; at < r->rh_len;) {
        const char *k = r->rh + at;
        at += strlen(k) + 1;
        const char *v = r->rh + at;
        at += strlen(v) + 1;
        MHD_add_response_header(resp, k, v);
    }
    if (!r->rh_has_reqid) MHD_add_response_header(resp, "X-Request-Id", r->reqid);
    r->status = (int)r->ustatus;
    fg_metrics_count(r->row, r->outcome);
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->ustatus, resp);
    MHD_destroy_response(resp);
    r->phase = PH_RESP;
    return ret;
}

static enum MHD_Result queue_upstream_failure(fg_req_t *r)
{
    if (r->fail_status == 504)
        refuse(r, 504, "upstream-timeout", "Upstream timeout", FG_OUT_UPSTREAM_TIMEOUT);
    else
        refuse(r, 502, "upstream-error", "Upstream error", FG_OUT_UPSTREAM_ERROR);
    return queue_refusal(r);
}

typedef struct count_ctx {
    const char *name;
    int n;
    const char *first;
} count_ctx_t;

static enum MHD_Result count_cb(void *cls, enum MHD_ValueKind kind, const char *k, const char *v)
{
    (void)kind;
    count_ctx_t *c = cls;
    if (k && strcasecmp(k, c->name) == 0) {
        if (c->n++ == 0) c->first = v;
    }
    return MHD_YES;
}

/* Occurrences of header `name` (MHD keeps each one); *first gets the first value. */
static int count_header(struct MHD_Connection *c, const char *name, const char **first)
{
    count_ctx_t ct = {name, 0, NULL};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_cb, &ct);
    *first = ct.first;
    return ct.n;
}

/* Decide what to do with a new request (SPEC steps 1-7). Sets r->state. */
static void classify(fg_req_t *r, const char *method);

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)cls;
    (void)url;
    (void)version;
    fg_req_t *r = *con_cls;
    if (!r) return MHD_NO;
    r->conn = conn;
    if (r->phase == PH_HEADERS) {
        if (r->state == ST_NEW) classify(r, method);
        switch (r->state) {
        case ST_REFUSE:
            return queue_refusal(r);
        case ST_FORWARD:
            if (start_upstream(r) != 0) {
                release_lane(r);
                snprintf(r->detail, sizeof r->detail, "cannot start the upstream request");
                refuse(r, 502, "upstream-error", "Upstream error", FG_OUT_UPSTREAM_ERROR);
                return queue_refusal(r);
            }
            r->phase = PH_BODY;
            return MHD_YES; /* MHD now sends 100-continue if asked, and reads the body */
        default:
            suspend(r, SUSP_WAIT);
            return MHD_YES;
        }
    }
    if (r->phase == PH_BODY) {
        if (*upload_data_size) {
            if (r->up_failed) return queue_upstream_failure(r);
            bool waiting_launch = r->small_body && !r->curl_done;
            if ((!r->curl_active && !waiting_launch) || !r->up.p) {
                *upload_data_size = 0; /* upstream already answered: drain */
                return MHD_YES;
            }
            size_t n = ring_write(&r->up, upload_data, *upload_data_size);
            *upload_data_size -= n;
            if (r->read_paused && r->up.len) {
                r->read_paused = false;
                curl_easy_pause(r->easy, CURLPAUSE_CONT);
            }
            if (*upload_data_size) suspend(r, SUSP_UP);
            return MHD_YES;
        }
        r->up_eof = true;
        if (r->small_body && !r->curl_active && !r->curl_done && launch_upstream(r) != 0) {
            r->up_failed = true;
            r->fail_status = 502;
            snprintf(r->detail, sizeof r->detail, "cannot start the upstream request");
        }
        if (r->read_paused && r->curl_active) {
            r->read_paused = false;
            curl_easy_pause(r->easy, CURLPAUSE_CONT);
        }
        r->phase = PH_WAIT_RESP;
    }
    if (r->phase == PH_WAIT_RESP) {
        if (r->up_failed) return queue_upstream_failure(r);
        if (r->resp_ready) return queue_upstream_response(r);
        suspend(r, SUSP_RESP);
        return MHD_YES;
    }
    return MHD_YES;
}

static bool default_read(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "OPTIONS") == 0;
}

static void forward_as(fg_req_t *r, fg_outcome_t o, bool is_read)
{
    r->outcome = o;
    r->is_read = is_read;
    r->state = ST_FORWARD;
}

static int expand_key(fg_req_t *r, const fg_captures_t *caps)
{
    int n = fg_keytmpl_expand(r->pol->key, caps, r->key_inline, sizeof r->key_inline);
    if (n >= 0) {
        r->key = r->key_inline;
        return 0;
    }
    size_t cap = 4 * FG_PATH_MAX;
    char *k = malloc(cap);
    if (!k) return FG_ENOMEM;
    n = fg_keytmpl_expand(r->pol->key, caps, k, cap);
    if (n < 0) {
        free(k);
        return n;
    }
    r->key = k;
    return 0;
}

static void classify(fg_req_t *r, const char *method)
{
    const fg_config_t *cfg = r->cfg->cfg;
    struct MHD_Connection *c = r->conn;

    const char *rid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (rid && sane_request_id(rid))
        snprintf(r->reqid, sizeof r->reqid, "%s", rid);
    else
        new_request_id(r->reqid);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->client,
                      sizeof r->client);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->client,
                      sizeof r->client);
    }
    r->method = strdup(method);
    if (!r->method) {
        refuse(r, 503, "state-unavailable", "Out of memory", FG_OUT_STATE_UNAVAILABLE);
        return;
    }
    r->has_body = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length") ||
                  MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding");

    /* step 1: one spelling per path, or a refusal */
    fg_path_t p;
    const char *why = "invalid request target";
    char *pathbuf = r->path;
    r->path = NULL;
    if (r->raw_len > FG_PATH_MAX) {
        snprintf(r->detail, sizeof r->detail, "the request target is longer than %d bytes",
                 FG_PATH_MAX);
        refuse(r, 414, "uri-too-long", "Request target too long", FG_OUT_NON_CANONICAL);
        return;
    }
    if (fg_path_canonicalize(r->raw, r->raw_len, pathbuf, r->raw_len + 1, &p, &why) != 0) {
        snprintf(r->detail, sizeof r->detail, "%s", why);
        refuse(r, 400, "non-canonical-path", "Non-canonical request path", FG_OUT_NON_CANONICAL);
        return;
    }
    r->path = pathbuf;
    r->path_len = p.path_len;
    r->query = p.query;
    r->query_len = p.query_len;

    /* steps 3-5: policy */
    fg_captures_t caps;
    const fg_policy_t *pol = fg_config_match(cfg, r->path, r->path_len, &caps);
    if (!pol) {
        if (default_read(method)) return forward_as(r, FG_OUT_READ, true);
        if (cfg->unmatched_forward) return forward_as(r, FG_OUT_UNCHECKED, false);
        snprintf(r->detail, sizeof r->detail, "no policy matches %s %s", method, r->path);
        refuse_audited(r, FG_REASON_UNMATCHED, 403, "unmatched-write", "Write matches no policy",
                       FG_OUT_UNMATCHED);
        return;
    }
    r->pol = pol;
    r->row = pol->metrics;
    r->prob.policy = pol->name;
    if (fg_policy_is_read(pol, method)) return forward_as(r, FG_OUT_READ, true);
    if (pol->mode == FG_MODE_OFF) return forward_as(r, FG_OUT_UNCHECKED, false);
    if (expand_key(r, &caps) != 0) {
        snprintf(r->detail, sizeof r->detail, "the resource key is too long");
        refuse(r, 400, "non-canonical-path", "Non-canonical request path", FG_OUT_NON_CANONICAL);
        return;
    }
    r->prob.resource = r->key;

    /* step 6: the token */
    bool report = pol->mode == FG_MODE_REPORT_ONLY;
    const char *tv = NULL;
    int n = count_header(c, pol->token_header, &tv);
    if (n == 0) {
        if (pol->missing_forward) return forward_as(r, FG_OUT_UNCHECKED, false);
        if (report) {
            audit_loose(r, FG_REASON_REPORT_ONLY);
            return forward_as(r, FG_OUT_REPORT_ONLY, false);
        }
        snprintf(r->detail, sizeof r->detail, "a write to %s needs a %s header", r->key,
                 pol->token_header);
        refuse_audited(r, FG_REASON_MISSING, 428, "missing-token", "Missing fencing token",
                       FG_OUT_MISSING);
        return;
    }
    if (n > 1 || !tv || fg_token_parse(tv, strlen(tv), &r->token) != 0) {
        if (report) {
            audit_loose(r, FG_REASON_REPORT_ONLY);
            return forward_as(r, FG_OUT_REPORT_ONLY, false);
        }
        if (n > 1)
            snprintf(r->detail, sizeof r->detail, "exactly one %s header is allowed, got %d",
                     pol->token_header, n);
        else
            snprintf(r->detail, sizeof r->detail,
                     "%s must be 1 to 20 ASCII digits with a value at most "
                     "18446744073709551615",
                     pol->token_header);
        refuse_audited(r, FG_REASON_MALFORMED, 400, "malformed-token", "Malformed fencing token",
                       FG_OUT_MALFORMED);
        return;
    }
    r->has_token = true;
    r->prob.has_token = true;
    r->prob.token = r->token;

    /* steps 7-8: lane, then the atomic check */
    take_lane(r);
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)conn;
    fg_engine_t *e = cls;
    size_t n = strlen(uri);
    fg_req_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->raw = malloc(2 * n + 2);
    if (!r->raw) {
        free(r);
        return NULL;
    }
    memcpy(r->raw, uri, n + 1);
    r->raw_len = n;
    r->path = r->raw + n + 1;
    r->e = e;
    r->cfg = fg_gateway_cfg_get(e->gw);
    r->t_start = fg_now_mono_ms();
    r->next = e->reqs;
    if (e->reqs) e->reqs->prev = r;
    e->reqs = r;
    e->nreqs++;
    fg_metrics_gauge_add(FG_GAUGE_INFLIGHT, 1);
    return r;
}

static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s); /* keep the raw target: the canonical check needs it undecoded */
}

static void req_free(fg_req_t *r)
{
    fg_engine_t *e = r->e;
    if (r->curl_active) {
        curl_multi_remove_handle(e->multi, r->easy);
        r->curl_active = false;
    }
    if (r->easy) put_easy(e, r->easy);
    release_lane(r);
    curl_slist_free_all(r->hdrs);
    free(r->url);
    free(r->rh);
    free(r->up.p);
    free(r->down.p);
    free(r->method);
    if (r->key && r->key != r->key_inline) free(r->key);
    free(r->raw);
    fg_cfgref_put(r->cfg);
    if (r->prev)
        r->prev->next = r->next;
    else
        e->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    e->nreqs--;
    fg_metrics_gauge_add(FG_GAUGE_INFLIGHT, -1);
    free(r);
}

static void access_log(fg_req_t *r, enum MHD_RequestTerminationCode toe)
{
    const fg_config_t *cfg = r->cfg->cfg;
    bool refused = r->status >= 400 && r->state == ST_REFUSE;
    if (!cfg->access_log && !refused && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) return;
    char tok[FG_TOKEN_STRLEN];
    if (r->has_token) fg_token_format(r->token, tok);
    static const char *const outcome_names[] = {
#define FG_OUTCOME_NAME(n, s) s,
        FG_OUTCOMES(FG_OUTCOME_NAME)
#undef FG_OUTCOME_NAME
    };
    json_t *f =
        json_pack("{s:s,s:s?,s:s?,s:i,s:s,s:s?,s:s?,s:s?,s:s,s:I,s:s}", "request_id", r->reqid,
                  "method", r->method, "path", r->path ? r->path : r->raw, "status", r->status,
                  "outcome", outcome_names[r->outcome], "policy", r->pol ? r->pol->name : NULL,
                  "resource", r->key, "token", r->has_token ? tok : NULL, "client", r->client, "ms",
                  (json_int_t)(fg_now_mono_ms() - r->t_start), "end",
                  toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "ok" : "aborted");
    fg_log(refused ? FG_LOG_WARN : FG_LOG_INFO, "request", f);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    fg_req_t *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    if (r->method) access_log(r, toe);
    r->orphan = true;
    r->conn = NULL;
    r->susp = 0;
    if (r->curl_active) {
        curl_multi_remove_handle(r->e->multi, r->easy);
        r->curl_active = false;
        release_lane(r);
    }
    if (r->lane_queued && fg_lanes_cancel(r->key, &r->lw)) {
        r->lane_queued = false;
        r->waits--;
    }
    if (r->waits == 0) req_free(r);
}

/* ------------------------------------------------------------------ */
/* the loop                                                             */

/* Deadlines are compared as `start + limit < now`: a start stamped after
 * `now` was read (callbacks run between) must not underflow into "expired". */
static void sweep(fg_engine_t *e, uint64_t now)
{
    for (fg_req_t *r = e->reqs; r; r = r->next) {
        if (r->orphan) continue;
        uint64_t fw = r->cfg->cfg->fence_wait_ms;
        if (r->state == ST_WAIT_LANE && r->lane_queued && r->t_wait + fw < now) {
            if (fg_lanes_cancel(r->key, &r->lw)) {
                r->lane_queued = false;
                r->waits--;
                snprintf(r->detail, sizeof r->detail,
                         "an earlier write to %s is still at the upstream after %" PRIu64 " ms",
                         r->key, fw);
                refuse(r, 503, "fence-busy", "Resource busy", FG_OUT_FENCE_BUSY);
                resume(r);
            }
        }
        uint64_t ut = r->cfg->cfg->upstream_timeout_ms;
        if (r->curl_active && !r->read_paused && !r->write_paused && r->last_up_ms + ut < now) {
            snprintf(r->detail, sizeof r->detail,
                     "no answer from the upstream within %" PRIu64 " ms", ut);
            upstream_abort(r, 504);
            resume(r);
        }
    }
}

static void run_curl(fg_engine_t *e, curl_socket_t s, int flags)
{
    int running;
    curl_multi_socket_action(e->multi, s, flags, &running);
}

static void *engine_main(void *arg)
{
    fg_engine_t *e = arg;
    struct epoll_event evs[128];
    for (;;) {
        uint64_t now = fg_now_mono_ms();
        if (__atomic_load_n(&e->quiesce, __ATOMIC_ACQUIRE) && !e->quiesced) {
            MHD_socket fd = MHD_quiesce_daemon(e->d);
            if (fd != MHD_INVALID_SOCKET) close(fd);
            e->lfd = -1;
            e->quiesced = true;
        }
        if (e->quiesced &&
            (e->nreqs == 0 || now >= __atomic_load_n(&e->deadline_ms, __ATOMIC_ACQUIRE)))
            break;
        int64_t timeout = SWEEP_MS;
        MHD_UNSIGNED_LONG_LONG mt;
        if (MHD_get_timeout(e->d, &mt) == MHD_YES && (int64_t)mt < timeout) timeout = (int64_t)mt;
        if (e->curl_deadline >= 0) {
            int64_t ct = e->curl_deadline - (int64_t)now;
            if (ct < timeout) timeout = ct < 0 ? 0 : ct;
        }
        int n = epoll_wait(e->ep, evs, 128, (int)timeout);
        for (int i = 0; i < n; i++) {
            uint64_t d = evs[i].data.u64;
            switch (d & 0xff) {
            case TAG_INBOX:
                process_inbox(e);
                break;
            case TAG_CURL: {
                int fl = 0;
                if (evs[i].events & EPOLLIN) fl |= CURL_CSELECT_IN;
                if (evs[i].events & EPOLLOUT) fl |= CURL_CSELECT_OUT;
                if (evs[i].events & (EPOLLERR | EPOLLHUP)) fl |= CURL_CSELECT_ERR;
                run_curl(e, (curl_socket_t)(d >> 8), fl);
                break;
            }
            default:
                break; /* TAG_MHD: MHD_run below */
            }
        }
        now = fg_now_mono_ms();
        if (e->curl_deadline >= 0 && (int64_t)now >= e->curl_deadline) {
            e->curl_deadline = -1;
            run_curl(e, CURL_SOCKET_TIMEOUT, 0);
        }
        curl_check_done(e);
        if (now - e->last_sweep >= SWEEP_MS) {
            e->last_sweep = now;
            sweep(e, now);
        }
        /* Every round, and after everything that may resume a connection: in
         * external-epoll mode MHD only notices a resume inside MHD_run. */
        MHD_run(e->d);
        curl_check_done(e);
    }
    /* Past the drain deadline: end what is left so the daemon can stop cleanly. */
    for (fg_req_t *r = e->reqs; r; r = r->next) {
        if (r->curl_active) upstream_abort(r, 502);
        if (r->state == ST_WAIT_LANE || r->state == ST_WAIT_CHECK || r->state == ST_WAIT_AUDIT)
            refuse(r, 503, "state-unavailable", "Shutting down", FG_OUT_STATE_UNAVAILABLE);
        resume(r);
    }
    MHD_run(e->d);
    MHD_stop_daemon(e->d);
    e->d = NULL;
    return NULL;
}

int fg_engine_create(fg_gateway_t *gw, unsigned id, fg_engine_t **out, char *err, size_t err_len)
{
    *out = NULL;
    fg_engine_t *e = calloc(1, sizeof *e);
    if (!e) return FG_ENOMEM;
    e->gw = gw;
    e->id = id;
    e->lfd = e->evfd = -1;
    e->curl_deadline = -1;
    pthread_mutex_init(&e->inbox_mu, NULL);
    *out = e; /* from here on, fg_engine_free cleans up a half-made engine */
    e->ep = epoll_create1(EPOLL_CLOEXEC);
    e->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e->ep < 0 || e->evfd < 0) {
        snprintf(err, err_len, "epoll/eventfd: %s", strerror(errno));
        return FG_EIO;
    }
    e->lfd = fg_listen_socket(gw->boot->listen, true, err, err_len);
    if (e->lfd < 0) return FG_EIO;
    unsigned limit = gw->boot->max_connections / gw->n_engines;
    if (limit < 1) limit = 1;
    e->d = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL, on_request, e,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)e->lfd, MHD_OPTION_URI_LOG_CALLBACK, on_uri, e,
        MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
        e, MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)75,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024), MHD_OPTION_END);
    if (!e->d) {
        close(e->lfd);
        e->lfd = -1;
        snprintf(err, err_len, "cannot start the HTTP listener on %s", gw->boot->listen);
        return FG_EIO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(e->d, MHD_DAEMON_INFO_EPOLL_FD);
    e->mhd_ep = di ? di->epoll_fd : -1;
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.u64 = TAG_MHD;
    if (e->mhd_ep < 0 || epoll_ctl(e->ep, EPOLL_CTL_ADD, e->mhd_ep, &ev) != 0) {
        snprintf(err, err_len, "cannot watch the HTTP listener");
        return FG_EIO;
    }
    ev.data.u64 = TAG_INBOX;
    if (epoll_ctl(e->ep, EPOLL_CTL_ADD, e->evfd, &ev) != 0) {
        snprintf(err, err_len, "cannot watch the inbox");
        return FG_EIO;
    }
    e->multi = curl_multi_init();
    if (!e->multi) return FG_ENOMEM;
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, curl_sock_cb);
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
    /* keep enough idle upstream connections for the client concurrency we allow */
    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)(limit < 1024 ? limit : 1024));
    return 0;
}

static void *engine_thread(void *arg)
{
    return engine_main(arg);
}

int fg_engine_run(fg_engine_t *e)
{
    if (pthread_create(&e->th, NULL, engine_thread, e) != 0) return FG_ENOMEM;
    e->started = true;
    return 0;
}

void fg_engine_quiesce(fg_engine_t *e, uint64_t deadline_ms)
{
    __atomic_store_n(&e->deadline_ms, deadline_ms, __ATOMIC_RELEASE);
    __atomic_store_n(&e->quiesce, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    ssize_t w = write(e->evfd, &one, sizeof one);
    (void)w;
}

void fg_engine_join(fg_engine_t *e)
{
    if (e->started) {
        pthread_join(e->th, NULL);
        e->started = false;
    }
}

void fg_engine_free(fg_engine_t *e)
{
    if (!e) return;
    fg_engine_join(e);
    if (e->d) MHD_stop_daemon(e->d);
    e->d = NULL;
    /* results that arrived after the loop ended */
    pthread_mutex_lock(&e->inbox_mu);
    e->inbox_head = e->inbox_tail = NULL;
    pthread_mutex_unlock(&e->inbox_mu);
    while (e->reqs) {
        e->reqs->waits = 0;
        e->reqs->lane_held = false; /* the lane table is torn down as a whole */
        req_free(e->reqs);
    }
    while (e->n_easy) curl_easy_cleanup(e->easy_cache[--e->n_easy]);
    if (e->multi) curl_multi_cleanup(e->multi);
    if (e->lfd >= 0) close(e->lfd);
    if (e->evfd >= 0) close(e->evfd);
    if (e->ep >= 0) close(e->ep);
    pthread_mutex_destroy(&e->inbox_mu);
    free(e);
}
