/*
 * request.c -- one request's life, as one state machine (fg_req_on).
 *
 *   RS_NEW --call--> decide (policy/decide.c)
 *      refuse, audited   -> RS_AUDIT --audited--> RS_REFUSE
 *      refuse            -> RS_REFUSE --call--> [RS_DRAIN --last call-->] RS_RESPOND
 *      forward           -> RS_UPLOAD
 *      check             -> RS_LANE --lane--> RS_CHECK --checked--> RS_FORWARD | RS_REFUSE
 *   RS_FORWARD --call--> RS_UPLOAD --body..., last call--> RS_WAIT --answer--> RS_RESPOND
 *   any state --gone--> RS_DONE (freed once no store job or lane grant is out)
 *
 * "call" is libmicrohttpd calling the access handler without body bytes: the
 * first time for the head, again after every resume, and once more when the
 * body is complete. Only in a call may a response be queued or the connection
 * be suspended, so every waiting state suspends in a call and every event
 * that ends a wait resumes. The legal (state, event) pairs are the switch in
 * fg_req_on(); anything else is a bug, asserted in debug builds and answered
 * with a 502 in release builds.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "gateway/engine_int.h"
#include "gateway/log.h"
#include "policy/error.h"
#include "policy/token.h"

#define REQ_TARGET_INLINE 1024 /* targets up to this size use pooled requests */
#define REQ_POOL_MAX      256  /* free requests kept per engine */

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

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

void fg_req_new_id(char *out)
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

static void suspend(fg_req_t *r)
{
    if (r->suspended || !r->mc) return;
    MHD_suspend_connection(r->mc);
    r->suspended = true;
    if (r->timer.q && r->st == RS_UPLOAD) {
        /* waiting for the upstream is not the client being slow */
        r->body_active_ms += fg_now_mono_ms() - r->body_since;
        fg_tq_del(&r->timer);
    }
}

static void resume(fg_req_t *r)
{
    if (!r->suspended || !r->mc) return;
    r->suspended = false;
    MHD_resume_connection(r->mc);
    if (r->st == RS_UPLOAD && !r->body_end) {
        r->body_since = fg_now_mono_ms();
        fg_tq_put(&r->e->q_body, &r->timer, r->body_since);
    }
}

static const fg_config_t *cfg_of(const fg_req_t *r)
{
    return r->cfg->cfg;
}

static fg_metrics_row_t *row_of(const fg_req_t *r)
{
    return r->d.policy ? r->d.policy->metrics : NULL;
}

static void release_lane(fg_req_t *r)
{
    if (r->lane_held) {
        r->lane_held = false;
        fg_lanes_release(r->e->gw->lanes, r->d.key);
    }
}

static void req_free(fg_req_t *r)
{
    fg_engine_t *e = r->e;
    assert(!r->job_out && !r->lane_wait && !r->up);
    release_lane(r);
    fg_tq_del(&r->timer);
    fg_cfgref_put(r->cfg);
    if (r->prev)
        r->prev->next = r->next;
    else
        e->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    e->nreqs--;
    fg_metrics_gauge_add(e->gw->metrics, FG_GAUGE_INFLIGHT, -1);
    if (r->pooled && e->n_req_free < REQ_POOL_MAX) { /* keep it for the next request */
        r->next = e->req_free;
        e->req_free = r;
        e->n_req_free++;
        return;
    }
    free(r);
}

/* RS_DONE and nothing out: the request can go. */
static void maybe_free(fg_req_t *r)
{
    if (r->st == RS_DONE && !r->job_out && !r->lane_wait && !r->up) req_free(r);
}

/* ------------------------------------------------------------------ */
/* the audit trail                                                      */

static void fill_audit(const fg_req_t *r, fg_audit_t *a, fg_reason_t reason)
{
    memset(a, 0, sizeof *a);
    a->policy = r->d.policy ? r->d.policy->name : NULL;
    a->resource = r->d.key;
    a->method = r->method;
    a->path = r->d.path ? r->d.path : r->raw;
    a->client = r->client;
    a->request_id = r->reqid;
    a->has_token = r->d.has_token;
    a->token = r->d.token;
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

static void on_job_done(fg_job_t *job)
{
    fg_engine_post(FG_CONTAINER(job, fg_req_t, job), MSG_JOB);
}

static void on_lane_granted(fg_lane_waiter_t *w)
{
    fg_engine_post(FG_CONTAINER(w, fg_req_t, lw), MSG_LANE);
}

static int submit(fg_req_t *r)
{
    r->job.done = on_job_done;
    r->job.rc = 0;
    int rc = fg_storepool_submit(r->e->gw->pool, &r->job);
    if (rc == 0) r->job_out = true;
    return rc;
}

/* A write let through without a check (report-only, on_state_error = forward)
 * is audited without holding the request back: a job that owns itself. */
typedef struct loose_audit {
    fg_job_t job;
    char mem[];
} loose_audit_t;

static void loose_audit_done(fg_job_t *job)
{
    if (job->rc) log_unstored_audit(&job->audit, job->rc);
    free(job);
}

static const char *dup_into(char **at, const char *s)
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
/* answers                                                              */

/* The answer will be a problem: set it up (queued at MHD's next call). */
__attribute__((format(printf, 6, 7))) static void refuse(fg_req_t *r, int status, const char *type,
                                                         const char *title, fg_outcome_t outcome,
                                                         const char *fmt, ...)
{
    r->st = RS_REFUSE;
    r->outcome = outcome;
    r->prob.status = status;
    r->prob.type = type;
    r->prob.title = title;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->detail, sizeof r->detail, fmt, ap);
        va_end(ap);
    }
    r->prob.detail = r->detail[0] ? r->detail : NULL;
    r->prob.request_id = r->reqid;
    r->prob.resource = r->d.key;
    r->prob.policy = r->d.policy ? r->d.policy->name : NULL;
    if (r->d.has_token) {
        r->prob.has_token = true;
        r->prob.token = r->d.token;
    }
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
    if (r->prob.status == 503) MHD_add_response_header(resp, "Retry-After", "1");
    r->status = r->prob.status;
    fg_metrics_count(r->e->gw->metrics, row_of(r), r->outcome);
    r->st = RS_RESPOND;
    enum MHD_Result ret = MHD_queue_response(r->mc, (unsigned)r->prob.status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/*
 * Answer a refusal decided before MHD read the body. libmicrohttpd closes the
 * connection after an answer queued that early (it cannot know where the
 * unread body ends), so a keep-alive client would pay a new connection for
 * every 409. When the body is small (or absent) and the client did not ask
 * for 100-continue, let MHD read it first, discarded (RS_DRAIN), and answer at
 * its end: the connection stays open, as nginx does when it discards a body.
 */
#define DRAIN_MAX (64 * 1024)

static int64_t body_length(fg_req_t *r);

static enum MHD_Result answer_refusal(fg_req_t *r)
{
    int64_t len = body_length(r);
    if (len == -1 || len > DRAIN_MAX ||
        MHD_lookup_connection_value(r->mc, MHD_HEADER_KIND, "Expect"))
        return queue_refusal(r); /* early: MHD closes the connection after it */
    r->st = RS_DRAIN;
    r->body_len = len;
    if (len > 0) {
        r->body_since = fg_now_mono_ms();
        fg_tq_put(&r->e->q_body, &r->timer, r->body_since);
    }
    return MHD_YES;
}

/* MHD pulls the upstream's answer body through here. */
static ssize_t content_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    fg_req_t *r = cls;
    bool eof = false, err = false;
    size_t n = r->up ? fg_upx_read(r->up, buf, max, &eof, &err) : 0;
    if (n) return (ssize_t)n;
    if (eof) return MHD_CONTENT_READER_END_OF_STREAM;
    if (err || !r->up) return MHD_CONTENT_READER_END_WITH_ERROR;
    suspend(r);
    return 0;
}

static enum MHD_Result queue_answer(fg_req_t *r)
{
    fg_upx_t *u = r->up;
    uint64_t size = MHD_SIZE_UNKNOWN;
    if (u->resp_len >= 0) size = (uint64_t)u->resp_len;
    if (u->status == 204 || u->status == 304) size = 0;
    struct MHD_Response *resp;
    if (u->resp_eof && !u->is_head && size != 0 && u->down.head + u->down.len <= FG_RING_CAP) {
        /* The whole answer is here, in one piece of the ring: MHD sends it
         * from there with the head. The transfer (and its ring) lives until
         * MHD is done with the request (EV_GONE), so no copy is needed. */
        resp = MHD_create_response_from_buffer(
            u->down.len, u->down.p ? u->down.p + u->down.head : (char *)"", MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_callback(size, 32 * 1024, content_reader, r, NULL);
    }
    if (!resp) return MHD_NO;
    for (size_t at = 0; at < u->rh_len;) {
        const char *k = u->rh + at;
        at += strlen(k) + 1;
        const char *v = u->rh + at;
        at += strlen(v) + 1;
        MHD_add_response_header(resp, k, v);
    }
    if (!u->rh_has_reqid) MHD_add_response_header(resp, "X-Request-Id", r->reqid);
    r->status = (int)u->status;
    fg_metrics_count(r->e->gw->metrics, row_of(r), r->outcome);
    r->st = RS_RESPOND;
    enum MHD_Result ret = MHD_queue_response(r->mc, (unsigned)u->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* The upstream failed (u->fail_status 502 or 504): answer with a problem. */
static enum MHD_Result queue_upstream_failure(fg_req_t *r)
{
    fg_upx_t *u = r->up;
    if (u->fail_status == 504)
        refuse(r, 504, "upstream-timeout", "Upstream timeout", FG_OUT_UPSTREAM_TIMEOUT, "%s",
               u->fail_detail);
    else
        refuse(r, 502, "upstream-error", "Upstream error", FG_OUT_UPSTREAM_ERROR, "%s",
               u->fail_detail);
    return queue_refusal(r);
}

/* ------------------------------------------------------------------ */
/* steps 6-8: lane and fence check                                      */

static void start_check(fg_req_t *r)
{
    const fg_policy_t *p = r->d.policy;
    memset(&r->job.check, 0, sizeof r->job.check);
    r->job.kind = FG_JOB_CHECK;
    fg_check_t *c = &r->job.check;
    c->resource = r->d.key;
    c->token = r->d.token;
    c->strict = p->compare == FG_COMPARE_GT;
    c->has_max_jump = p->has_max_jump;
    c->max_jump = p->max_jump;
    fill_audit(r, &c->audit,
               p->mode == FG_MODE_REPORT_ONLY ? FG_REASON_REPORT_ONLY : FG_REASON_STALE);
    if (fg_sloop_check(r->e->sloop, r) == 0) { /* on this loop's own connection */
        r->job_out = true;
        r->st = RS_CHECK;
        return;
    }
    if (submit(r) != 0) {
        release_lane(r);
        refuse(r, 503, "state-unavailable", "State store unavailable", FG_OUT_STATE_UNAVAILABLE,
               "the state store queue is full");
        return;
    }
    r->st = RS_CHECK;
}

static void take_lane(fg_req_t *r)
{
    r->lw.granted = on_lane_granted;
    int rc = fg_lanes_acquire(r->e->gw->lanes, r->d.key, &r->lw);
    if (rc == 1) {
        r->lane_held = true;
        start_check(r);
    } else if (rc == 0) {
        r->lane_wait = true;
        r->st = RS_LANE;
        fg_tq_put(&r->e->q_lane, &r->timer, fg_now_mono_ms());
    } else {
        refuse(r, 503, "fence-busy", "Resource busy", FG_OUT_FENCE_BUSY, "out of memory");
    }
}

static void on_check_result(fg_req_t *r)
{
    const fg_check_t *c = &r->job.check;
    const fg_policy_t *p = r->d.policy;
    if (r->job.rc == FG_EDATA) {
        /* the store answered and refused this request's data: not an
         * outage, so never a 503, and never forwarded unchecked */
        release_lane(r);
        refuse(r, 400, "malformed-request", "Malformed request", FG_OUT_MALFORMED_REQUEST,
               "the state store refused this request's data (%s)", fg_strerror(r->job.rc));
        return;
    }
    if (r->job.rc) {
        if (p->state_error_forward) {
            audit_loose(r, FG_REASON_STATE_ERROR);
            r->outcome = FG_OUT_STATE_ERROR_FORWARD;
            r->st = RS_FORWARD;
            return;
        }
        release_lane(r);
        refuse(r, 503, "state-unavailable", "State store unavailable", FG_OUT_STATE_UNAVAILABLE,
               "the state store did not answer (%s); retry later", fg_strerror(r->job.rc));
        return;
    }
    if (c->result == FG_CHECK_ACCEPTED) {
        r->outcome = FG_OUT_FORWARDED;
        r->st = RS_FORWARD;
        return;
    }
    if (p->mode == FG_MODE_REPORT_ONLY) {
        r->outcome = FG_OUT_REPORT_ONLY;
        r->st = RS_FORWARD;
        return;
    }
    release_lane(r);
    r->prob.has_highest = c->had_highest;
    r->prob.highest = c->highest;
    if (c->result == FG_CHECK_JUMP) {
        refuse(r, 409, "token-jump", "Fencing token jumps too far", FG_OUT_TOKEN_JUMP,
               "token %" PRIu64 " is more than %" PRIu64 " above the highest token %" PRIu64
               " for %s (max_token_jump); an operator can raise or reset the resource",
               r->d.token, p->max_jump, c->highest, r->d.key);
        return;
    }
    refuse(r, 409, "stale-token", "Stale fencing token", FG_OUT_STALE,
           "token %" PRIu64 " is %s the highest token %" PRIu64 " for %s", r->d.token,
           r->d.token == c->highest ? "not above" : "below", c->highest, r->d.key);
}

/* ------------------------------------------------------------------ */
/* steps 1-6: the decision                                              */

typedef struct count_ctx {
    const char *name;
    int n;
    const char *first;
} count_ctx_t;

static enum MHD_Result count_cb(void *cls, enum MHD_ValueKind kind, const char *k, const char *v)
{
    (void)kind;
    count_ctx_t *c = cls;
    if (k && strcasecmp(k, c->name) == 0 && c->n++ == 0) c->first = v;
    return MHD_YES;
}

/* fg_header_view_t over MHD's parsed fields: every occurrence counts. */
static int header_count(void *ctx, const char *name, const char **first)
{
    count_ctx_t c = {name, 0, NULL};
    MHD_get_connection_values(ctx, MHD_HEADER_KIND, count_cb, &c);
    *first = c.first;
    return c.n;
}

static const fg_outcome_t class_outcome[] = {
    [FG_CLASS_READ] = FG_OUT_READ,
    [FG_CLASS_UNCHECKED] = FG_OUT_UNCHECKED,
    [FG_CLASS_REPORT_ONLY] = FG_OUT_REPORT_ONLY,
    [FG_CLASS_FENCED] = FG_OUT_FORWARDED,
    [FG_CLASS_NON_CANONICAL] = FG_OUT_NON_CANONICAL,
    [FG_CLASS_UNMATCHED] = FG_OUT_UNMATCHED,
    [FG_CLASS_MISSING] = FG_OUT_MISSING,
    [FG_CLASS_MALFORMED] = FG_OUT_MALFORMED,
};

static const fg_reason_t class_reason[] = {
    [FG_CLASS_UNMATCHED] = FG_REASON_UNMATCHED,
    [FG_CLASS_MISSING] = FG_REASON_MISSING,
    [FG_CLASS_MALFORMED] = FG_REASON_MALFORMED,
};

/* ------------------------------------------------------------------ */
/* forwarding                                                           */

/* The body's length as the client's framing says (checked by wire.c): the
 * Content-Length, -1 for chunked, -2 when the request has no body framing. */
static int64_t body_length(fg_req_t *r)
{
    if (MHD_lookup_connection_value(r->mc, MHD_HEADER_KIND, "Transfer-Encoding")) return -1;
    const char *cl = MHD_lookup_connection_value(r->mc, MHD_HEADER_KIND, "Content-Length");
    uint64_t n = 0;
    if (!cl) return -2;
    if (fg_token_parse(cl, strlen(cl), &n) == 0 && n <= INT64_MAX) return (int64_t)n;
    return -2; /* cannot happen: wire.c refused it */
}

/* In an MHD call: start the upstream transfer and let MHD read the body. */
static enum MHD_Result start_forward(fg_req_t *r)
{
    int64_t len = body_length(r);
    r->body_len = len;
    if (fg_upx_start(r, len) != 0) {
        release_lane(r);
        refuse(r, 502, "upstream-error", "Upstream error", FG_OUT_UPSTREAM_ERROR,
               "cannot start the upstream request");
        return answer_refusal(r);
    }
    r->st = RS_UPLOAD;
    if (len > 0 || len == -1) {
        r->body_since = fg_now_mono_ms();
        fg_tq_put(&r->e->q_body, &r->timer, r->body_since);
    }
    return MHD_YES; /* MHD now sends 100-continue if asked, and reads the body */
}

/* A client that is too slow or broke its framing mid-body: answer straight on
 * the socket (nothing of a response has gone out yet) and cut it. */
static enum MHD_Result cut_client(fg_req_t *r, int status, const char *type, const char *title,
                                  const char *detail)
{
    if (r->up) {
        fg_upx_release(r->up); /* the upstream sees a short body and a closed connection */
        r->up = NULL;
    }
    fg_tq_del(&r->timer);
    r->status = status;
    r->outcome = status == 408 ? FG_OUT_REQUEST_TIMEOUT : FG_OUT_MALFORMED_REQUEST;
    fg_metrics_count(r->e->gw->metrics, row_of(r), r->outcome);
    if (r->conn) fg_front_abort(r->conn, status, type, title, detail, true);
    return MHD_NO;
}

static enum MHD_Result on_body(fg_req_t *r, const char *data, size_t *len)
{
    const fg_config_t *cfg = cfg_of(r);
    if (r->body_len == -2 || r->body_len == 0) {
        /* libmicrohttpd hands over body bytes for a request whose framing has
         * none (it did so for a bodyless Expect: 100-continue, now refused at
         * step 0): they can only be the next request's. Never forward them. */
        return cut_client(r, 400, "malformed-request", "Malformed request",
                          "body bytes on a request whose framing has no body");
    }
    uint64_t now = fg_now_mono_ms();
    r->body_bytes += *len;
    uint64_t active = r->body_active_ms + (now - r->body_since);
    if (cfg->body_min_rate && active >= cfg->body_timeout_ms &&
        r->body_bytes * 1000 / active < cfg->body_min_rate) {
        char d[160];
        snprintf(d, sizeof d, "the request body came slower than %" PRIu64 " bytes/s",
                 cfg->body_min_rate);
        return cut_client(r, 408, "request-timeout", "Request timeout", d);
    }
    fg_tq_put(&r->e->q_body, &r->timer, now);
    if (!r->up || r->up->st == UX_FAILED || r->up->st == UX_DONE || r->up->st == UX_QUARANTINE) {
        *len = 0; /* nobody upstream wants it any more: drain, answer at the end */
        return MHD_YES;
    }
    size_t n = fg_upx_body(r->up, data, *len);
    *len -= n;
    if (*len) suspend(r);
    return MHD_YES;
}

/* The body is complete (or there was none): answer when the upstream has. */
static enum MHD_Result on_wait_call(fg_req_t *r)
{
    fg_upx_t *u = r->up;
    if (!u) {
        refuse(r, 502, "upstream-error", "Upstream error", FG_OUT_UPSTREAM_ERROR,
               "the upstream transfer ended");
        return queue_refusal(r);
    }
    if (u->st == UX_FAILED || u->st == UX_QUARANTINE) return queue_upstream_failure(r);
    if (u->st == UX_HEAD || u->st == UX_DONE) return queue_answer(r);
    suspend(r);
    return MHD_YES;
}

/* ------------------------------------------------------------------ */
/* the head                                                             */

static enum MHD_Result on_head(fg_req_t *r)
{
    const char *rid = MHD_lookup_connection_value(r->mc, MHD_HEADER_KIND, "X-Request-Id");
    if (rid && sane_request_id(rid))
        snprintf(r->reqid, sizeof r->reqid, "%s", rid);
    else
        fg_req_new_id(r->reqid);
    fg_header_view_t hv = {header_count, r->mc};
    fg_decision_t *d = &r->d;
    if (fg_decide(cfg_of(r), r->method, r->raw, r->raw_len, &hv, r->path_buf, r->raw_len + 1,
                  r->key_buf, d) != 0) {
        refuse(r, 502, "upstream-error", "Upstream error", FG_OUT_UPSTREAM_ERROR, "internal error");
        return answer_refusal(r);
    }
    r->outcome = class_outcome[d->cls];
    switch (d->action) {
    case FG_ACT_REFUSE:
        refuse(r, d->status, d->type, d->title, r->outcome, "%s", d->detail);
        if (d->cls < sizeof class_reason / sizeof *class_reason && class_reason[d->cls]) {
            /* SPEC "Audit": no refusal without its record */
            r->job.kind = FG_JOB_AUDIT;
            fill_audit(r, &r->job.audit, class_reason[d->cls]);
            if (submit(r) == 0) {
                r->st = RS_AUDIT;
                suspend(r);
                return MHD_YES;
            }
            log_unstored_audit(&r->job.audit, FG_EFULL);
        }
        return answer_refusal(r);
    case FG_ACT_FORWARD:
        if (d->cls == FG_CLASS_REPORT_ONLY) audit_loose(r, FG_REASON_REPORT_ONLY);
        return start_forward(r);
    case FG_ACT_CHECK:
    default:
        take_lane(r);
        if (r->st == RS_REFUSE) return answer_refusal(r);
        suspend(r);
        return MHD_YES;
    }
}

/* ------------------------------------------------------------------ */
/* the end                                                              */

static void access_log(fg_req_t *r)
{
    const fg_config_t *cfg = cfg_of(r);
    bool refused = r->status >= 400;
    if (!cfg->access_log && !refused && r->status) return;
    if (refused && !fg_log_refusal_allowed()) return; /* over the rate: counted, not built */
    char tok[FG_TOKEN_STRLEN];
    if (r->d.has_token) fg_token_format(r->d.token, tok);
    static const char *const outcome_names[] = {
#define FG_OUTCOME_NAME(n, s) s,
        FG_OUTCOMES(FG_OUTCOME_NAME)
#undef FG_OUTCOME_NAME
    };
    const char *path = r->d.path ? r->d.path : r->raw;
    size_t plen = strlen(path);
    json_t *f = json_pack(
        "{s:s,s:s,s:s%,s:i,s:s,s:s?,s:s?,s:s?,s:s,s:I,s:s}", "request_id", r->reqid, "method",
        r->method, "path", path, plen > FG_LOG_PATH_MAX ? (size_t)FG_LOG_PATH_MAX : plen, "status",
        r->status, "outcome", outcome_names[r->outcome], "policy",
        r->d.policy ? r->d.policy->name : NULL, "resource", r->d.key, "token",
        r->d.has_token ? tok : NULL, "client", r->client, "ms",
        (json_int_t)(fg_now_mono_ms() - r->t_start), "end", r->status ? "ok" : "aborted");
    if (f && plen > FG_LOG_PATH_MAX) json_object_set_new(f, "path_truncated", json_true());
    if (refused)
        fg_log_refusal(FG_LOG_WARN, "request", f);
    else
        fg_log(FG_LOG_INFO, "request", f);
}

static void on_gone(fg_req_t *r)
{
    if (r->method[0]) access_log(r);
    if (r->status)
        fg_metrics_observe_request(r->e->gw->metrics, row_of(r), r->outcome,
                                   fg_metrics_since(r->t_start_ns));
    r->conn = NULL;
    r->mc = NULL;
    r->suspended = false;
    if (r->up) {
        fg_upx_release(r->up);
        r->up = NULL;
    }
    if (r->lane_wait && fg_lanes_cancel(r->e->gw->lanes, r->d.key, &r->lw)) r->lane_wait = false;
    release_lane(r);
    fg_tq_del(&r->timer);
    r->st = RS_DONE;
    maybe_free(r);
}

/* ------------------------------------------------------------------ */
/* the transition function                                              */

/* What must hold in each state (checked in builds with assertions: the
 * sanitizer build keeps them on). A violation is a bug in this file. */
static void check_invariants(const fg_req_t *r)
{
#ifndef NDEBUG
    switch (r->st) {
    case RS_NEW:
        assert(!r->up && !r->job_out && !r->lane_wait && !r->lane_held);
        break;
    case RS_AUDIT:
        assert(r->job_out && r->job.kind == FG_JOB_AUDIT && !r->up && !r->lane_held);
        break;
    case RS_LANE:
        assert(r->lane_wait && !r->lane_held && !r->job_out && !r->up);
        break;
    case RS_CHECK:
        assert(r->job_out && r->job.kind == FG_JOB_CHECK && r->lane_held && !r->up);
        break;
    case RS_REFUSE:
    case RS_DRAIN:
        assert(!r->up && !r->job_out && !r->lane_held && r->prob.status >= 400);
        break;
    case RS_FORWARD:
        assert(!r->job_out && !r->up && !r->lane_wait);
        break;
    case RS_UPLOAD:
    case RS_WAIT:
        assert(!r->job_out && !r->lane_wait && !r->lane_held);
        break;
    case RS_RESPOND:
        assert(!r->lane_wait && !r->lane_held);
        break;
    case RS_DONE:
        assert(!r->conn && !r->mc && !r->up && !r->lane_held);
        break;
    }
#else
    (void)r;
#endif
}

static enum MHD_Result transition(fg_req_t *r, req_event_t ev, const char *data, size_t *len);

enum MHD_Result fg_req_on(fg_req_t *r, req_event_t ev, const char *data, size_t *len)
{
    if (ev == EV_GONE) {
        on_gone(r); /* may free r */
        return MHD_YES;
    }
    enum MHD_Result ret = transition(r, ev, data, len);
    check_invariants(r);
    return ret;
}

static enum MHD_Result transition(fg_req_t *r, req_event_t ev, const char *data, size_t *len)
{
    switch (r->st) {
    case RS_NEW:
        if (ev == EV_CALL) return on_head(r);
        break;
    case RS_AUDIT:
    case RS_LANE:
    case RS_CHECK:
        if (ev == EV_CALL) { /* a spurious call while we wait: keep waiting */
            suspend(r);
            return MHD_YES;
        }
        break;
    case RS_REFUSE:
        if (ev == EV_CALL) return answer_refusal(r);
        break;
    case RS_DRAIN:
        if (ev == EV_BODY) { /* the refused request's body: read, and dropped */
            fg_tq_put(&r->e->q_body, &r->timer, fg_now_mono_ms());
            *len = 0;
            return MHD_YES;
        }
        if (ev == EV_CALL) { /* its end: answer, and the connection stays open */
            fg_tq_del(&r->timer);
            return queue_refusal(r);
        }
        break;
    case RS_FORWARD:
        if (ev == EV_CALL) return start_forward(r);
        break;
    case RS_UPLOAD:
        switch (ev) {
        case EV_BODY:
            return on_body(r, data, len);
        case EV_CALL:
            r->body_end = true;
            if (r->timer.q) fg_tq_del(&r->timer);
            if (r->up) fg_upx_body_end(r->up);
            r->st = RS_WAIT;
            return on_wait_call(r);
        case EV_UP_DATA:
        case EV_UP_HEAD:
        case EV_UP_END:
            resume(r); /* room for more body, or a failure: drain the rest */
            return MHD_YES;
        default:
            break;
        }
        break;
    case RS_WAIT:
        if (ev == EV_CALL) return on_wait_call(r);
        if (ev == EV_UP_HEAD || ev == EV_UP_END || ev == EV_UP_DATA) {
            resume(r);
            return MHD_YES;
        }
        break;
    case RS_RESPOND:
        if (ev == EV_UP_DATA || ev == EV_UP_END || ev == EV_UP_HEAD) {
            resume(r);
            return MHD_YES;
        }
        if (ev == EV_CALL || ev == EV_BODY) {
            if (len) *len = 0;
            return MHD_YES;
        }
        break;
    case RS_DONE:
        if (ev == EV_UP_DATA || ev == EV_UP_END || ev == EV_UP_HEAD) return MHD_YES;
        break;
    }
    assert(!"illegal request event");
    fg_logf(FG_LOG_ERROR, "request %s: event %d in state %d", r->reqid, (int)ev, (int)r->st);
    return MHD_NO;
}

static void inbox(fg_req_t *r, int msg);

void fg_req_inbox(fg_req_t *r, int msg)
{
    bool done = r->st == RS_DONE;
    inbox(r, msg);
    if (!done) check_invariants(r); /* (a request that was done may be freed now) */
}

static void inbox(fg_req_t *r, int msg)
{
    if (msg == MSG_LANE) {
        r->lane_wait = false;
        r->lane_held = true;
        fg_tq_del(&r->timer);
        if (r->st != RS_LANE) { /* gone, or ended by the drain */
            release_lane(r);
            maybe_free(r);
            return;
        }
        start_check(r);
        if (r->st == RS_REFUSE) resume(r);
        return;
    }
    r->job_out = false;
    if (r->st == RS_AUDIT) {
        if (r->job.rc) log_unstored_audit(&r->job.audit, r->job.rc);
        r->st = RS_REFUSE;
        resume(r);
    } else if (r->st == RS_CHECK) {
        on_check_result(r);
        resume(r);
    } else {
        if (r->job.kind == FG_JOB_CHECK) release_lane(r);
        maybe_free(r);
    }
}

void fg_req_lane_timeout(fg_req_t *r)
{
    fg_tq_del(&r->timer);
    if (r->st != RS_LANE || !r->lane_wait || !fg_lanes_cancel(r->e->gw->lanes, r->d.key, &r->lw))
        return;
    r->lane_wait = false;
    refuse(r, 503, "fence-busy", "Resource busy", FG_OUT_FENCE_BUSY,
           "an earlier write to %s is still at the upstream after %" PRIu64 " ms", r->d.key,
           cfg_of(r)->fence_wait_ms);
    resume(r);
}

void fg_req_body_timeout(fg_req_t *r)
{
    char d[128];
    snprintf(d, sizeof d, "no request body bytes for %" PRIu64 " ms", cfg_of(r)->body_timeout_ms);
    cut_client(r, 408, "request-timeout", "Request timeout", d);
}

void fg_req_shutdown(fg_req_t *r)
{
    switch (r->st) {
    case RS_LANE:
        if (r->lane_wait && fg_lanes_cancel(r->e->gw->lanes, r->d.key, &r->lw))
            r->lane_wait = false;
        /* fall through */
    case RS_AUDIT:
    case RS_CHECK:
    case RS_NEW:
        release_lane(r);
        refuse(r, 503, "state-unavailable", "Shutting down", FG_OUT_STATE_UNAVAILABLE,
               "the gateway is shutting down");
        resume(r);
        break;
    case RS_UPLOAD:
    case RS_WAIT:
    case RS_RESPOND:
        if (r->up) fg_upx_release(r->up), r->up = NULL;
        resume(r);
        break;
    default:
        resume(r);
        break;
    }
}

fg_req_t *fg_req_new(fg_engine_t *e, fg_conn_t *c, const char *uri)
{
    /* Requests whose target fits REQ_TARGET_INLINE come from the engine's free
     * list: no allocation per request in steady state. */
    size_t n = strlen(uri);
    bool pooled = n <= REQ_TARGET_INLINE;
    fg_req_t *r;
    if (pooled && e->req_free) {
        r = e->req_free;
        e->req_free = r->next;
        e->n_req_free--;
    } else {
        size_t tn = pooled ? REQ_TARGET_INLINE : n;
        r = malloc(sizeof *r + 2 * (tn + 1) + FG_KEY_MAX);
        if (!r) return NULL;
    }
    memset(r, 0, sizeof *r);
    r->pooled = pooled;
    char *raw = r->tail;
    memcpy(raw, uri, n + 1);
    r->raw = raw;
    r->raw_len = n;
    r->path_buf = r->tail + n + 1;
    r->key_buf = r->path_buf + n + 1;
    r->e = e;
    r->conn = c;
    r->cfg = fg_gateway_cfg_get(e->gw);
    r->t_start = fg_now_mono_ms();
    r->t_start_ns = fg_metrics_now_ns();
    r->st = RS_NEW;
    snprintf(r->client, sizeof r->client, "%s", c->client);
    r->next = e->reqs;
    if (e->reqs) e->reqs->prev = r;
    e->reqs = r;
    e->nreqs++;
    fg_metrics_gauge_add(r->e->gw->metrics, FG_GAUGE_INFLIGHT, 1);
    return r;
}
