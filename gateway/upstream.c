/*
 * upstream.c -- the upstream side: one fg_upx_t per forwarded request, driven
 * by the engine's libcurl multi handle in socket mode.
 *
 * The upstream request is rebuilt from what was checked, never copied from
 * the client's bytes: the method MHD parsed (a token, step 0), the canonical
 * path (step 1), the fields MHD parsed minus hop-by-hop, framing and
 * method-override fields (step 2) and minus every field whose name has an
 * underscore (CGI and WSGI servers read X_Foo and X-Foo as one variable), the
 * canonical token, and a body framed by what was actually read: the client's
 * validated Content-Length, or chunked.
 *
 * A transfer that holds a resource's lane keeps it until the upstream's answer
 * is complete (step 8). It can outlive its request: after a 504, or when the
 * client leaves once the whole request went out, the upstream may still apply
 * the write, so the transfer stays open (its answer discarded) for up to
 * upstream_grace and keeps the lane until then: the quarantine.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>

#include "gateway/engine_int.h"
#include "gateway/log.h"
#include "policy/error.h"
#include "policy/token.h"

#define RESP_HDR_MAX (64 * 1024) /* upstream answer field bytes */

/* ------------------------------------------------------------------ */
/* rings                                                                */

static size_t ring_write(fg_ring_t *r, const char *src, size_t n)
{
    size_t room = FG_RING_CAP - r->len;
    if (n > room) n = room;
    size_t tail = (r->head + r->len) % FG_RING_CAP;
    size_t first = FG_RING_CAP - tail < n ? FG_RING_CAP - tail : n;
    memcpy(r->p + tail, src, first);
    memcpy(r->p, src + first, n - first);
    r->len += n;
    return n;
}

static size_t ring_read(fg_ring_t *r, char *dst, size_t n)
{
    if (n > r->len) n = r->len;
    size_t first = FG_RING_CAP - r->head < n ? FG_RING_CAP - r->head : n;
    memcpy(dst, r->p + r->head, first);
    memcpy(dst + first, r->p, n - first);
    r->head = (r->head + n) % FG_RING_CAP;
    r->len -= n;
    if (r->len == 0) r->head = 0;
    return n;
}

/* ------------------------------------------------------------------ */
/* life                                                                 */

static const fg_config_t *cfg_of(const fg_upx_t *u)
{
    return u->e->gw->boot;
}

/* Tell the request (if it still listens) that something happened. */
static void notify(fg_upx_t *u, req_event_t ev)
{
    if (u->req) fg_req_on(u->req, ev, NULL, NULL);
}

/* Is the transfer waiting on the upstream (rather than on the client)? */
static bool waits_on_upstream(const fg_upx_t *u)
{
    if (!u->active) return false;
    switch (u->st) {
    case UX_SENDING:
        return u->up.len > 0 && !u->read_paused;
    case UX_SENT:
        return true;
    case UX_HEAD:
        return !u->write_paused;
    default:
        return false;
    }
}

/* Activity: restart the upstream_timeout clock if the upstream is the one we wait on. */
static void touch(fg_upx_t *u)
{
    if (u->st == UX_QUARANTINE) return;
    if (waits_on_upstream(u))
        fg_tq_put(&u->e->q_up, &u->timer, fg_now_mono_ms());
    else
        fg_tq_del(&u->timer);
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
    if (e->n_easy < sizeof e->easy_cache / sizeof *e->easy_cache)
        e->easy_cache[e->n_easy++] = c;
    else
        curl_easy_cleanup(c);
}

static void release_lane(fg_upx_t *u)
{
    if (!u->lane_key) return;
    fg_lanes_release(u->lane_key);
    if (u->lane_key_owned) free(u->lane_key);
    u->lane_key = NULL;
    u->lane_key_owned = false;
}

/* Take the transfer off the network (the upstream connection is closed if
 * the transfer was not complete). */
static void stop(fg_upx_t *u)
{
    if (u->active) {
        curl_multi_remove_handle(u->e->multi, u->easy);
        u->active = false;
    }
    fg_tq_del(&u->timer);
    fg_tq_del(&u->timer);
}

static void upx_free(fg_upx_t *u)
{
    fg_engine_t *e = u->e;
    stop(u);
    release_lane(u);
    if (u->req) u->req->up = NULL;
    if (u->easy) put_easy(e, u->easy);
    curl_slist_free_all(u->hdrs);
    free(u->url);
    free(u->rh);
    free(u->up.p);
    free(u->down.p);
    if (u->prev)
        u->prev->next = u->next;
    else
        e->upxs = u->next;
    if (u->next) u->next->prev = u->prev;
    e->nupx--;
    free(u);
}

/* The request lets go of the transfer: the lane key must survive it. */
static int detach(fg_upx_t *u)
{
    if (u->lane_key && !u->lane_key_owned) {
        char *k = strdup(u->lane_key);
        if (!k) return FG_ENOMEM;
        u->lane_key = k;
        u->lane_key_owned = true;
    }
    if (u->req) u->req->up = NULL;
    u->req = NULL;
    return 0;
}

__attribute__((format(printf, 3, 4))) static void fail(fg_upx_t *u, int status, const char *fmt,
                                                       ...)
{
    u->st = UX_FAILED;
    u->fail_status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(u->fail_detail, sizeof u->fail_detail, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ */
/* libcurl callbacks                                                    */

static size_t read_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    fg_upx_t *u = ud;
    if (u->up.len == 0) {
        if (u->body_eof) {
            if (u->st == UX_SENDING) u->st = UX_SENT;
            touch(u);
            return 0;
        }
        u->read_paused = true;
        touch(u);
        return CURL_READFUNC_PAUSE;
    }
    size_t n = ring_read(&u->up, buf, size * nitems);
    touch(u);
    notify(u, EV_UP_DATA); /* room for more of the client's body */
    return n;
}

static size_t write_cb(char *p, size_t size, size_t n, void *ud)
{
    fg_upx_t *u = ud;
    size_t total = size * n;
    if (!u->req || u->st == UX_QUARANTINE) return total; /* nobody to deliver to: discard */
    if (total > FG_RING_CAP) return 0;
    if (FG_RING_CAP - u->down.len < total) {
        u->write_paused = true;
        touch(u);
        return CURL_WRITEFUNC_PAUSE;
    }
    ring_write(&u->down, p, total);
    touch(u);
    notify(u, EV_UP_DATA);
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

static size_t header_cb(char *p, size_t size, size_t n, void *ud)
{
    fg_upx_t *u = ud;
    size_t len = size * n;
    touch(u);
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        const char *sp = memchr(p, ' ', len);
        u->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        u->rh_len = 0;
        u->resp_len = -1;
        u->rh_has_reqid = false;
        return len;
    }
    size_t l = len;
    while (l && (p[l - 1] == '\r' || p[l - 1] == '\n')) l--;
    if (l == 0) {
        if (u->status >= 200 && (u->st == UX_SENDING || u->st == UX_SENT)) {
            u->st = UX_HEAD;
            touch(u);
            notify(u, EV_UP_HEAD);
        }
        return len;
    }
    const char *colon = memchr(p, ':', l);
    if (!colon || u->status < 200) return len;
    size_t nlen = (size_t)(colon - p);
    const char *v = colon + 1;
    while (v < p + l && (*v == ' ' || *v == '\t')) v++;
    size_t vlen = (size_t)(p + l - v);
    if (hop_by_hop(p, nlen)) return len;
    if (nlen == 14 && strncasecmp(p, "content-length", 14) == 0) {
        uint64_t cl;
        if (fg_token_parse(v, vlen, &cl) == 0 && cl <= INT64_MAX) u->resp_len = (int64_t)cl;
        return len;
    }
    if (nlen == 12 && strncasecmp(p, "x-request-id", 12) == 0) u->rh_has_reqid = true;
    if (u->rh_len + nlen + vlen + 2 > RESP_HDR_MAX)
        return 0; /* abort: an upstream sending endless fields is broken */
    if (u->rh_cap < u->rh_len + nlen + vlen + 2) {
        size_t nc = u->rh_cap ? u->rh_cap * 2 : 1024;
        while (nc < u->rh_len + nlen + vlen + 2) nc *= 2;
        char *np = realloc(u->rh, nc);
        if (!np) return 0;
        u->rh = np;
        u->rh_cap = nc;
    }
    memcpy(u->rh + u->rh_len, p, nlen);
    u->rh[u->rh_len + nlen] = '\0';
    u->rh_len += nlen + 1;
    memcpy(u->rh + u->rh_len, v, vlen);
    u->rh[u->rh_len + vlen] = '\0';
    u->rh_len += vlen + 1;
    return len;
}

/* libcurl says the transfer is over. */
static void finished(fg_upx_t *u, CURLcode res)
{
    curl_multi_remove_handle(u->e->multi, u->easy);
    u->active = false;
    fg_tq_del(&u->timer);
    fg_tq_del(&u->timer);
    release_lane(u); /* the answer is complete: the next write of the resource may go */
    if (u->st == UX_QUARANTINE) {
        json_t *f = json_pack("{s:s,s:i,s:s}", "url", u->url, "status", (int)u->status, "result",
                              curl_easy_strerror(res));
        fg_log(FG_LOG_WARN, "upstream answered after its request timed out (504)", f);
        if (!u->req) upx_free(u);
        return;
    }
    if (u->st == UX_HEAD) {
        u->st = UX_DONE;
        if (res == CURLE_OK)
            u->resp_eof = true;
        else
            u->resp_err = true;
    } else if (u->st != UX_FAILED) {
        fail(u, res == CURLE_OPERATION_TIMEDOUT ? 504 : 502, "upstream: %s",
             curl_easy_strerror(res));
    }
    if (!u->req) {
        upx_free(u);
        return;
    }
    notify(u, EV_UP_END);
}

void fg_upx_check_done(fg_engine_t *e)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(e->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        fg_upx_t *u = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&u);
        if (u) finished(u, m->data.result);
    }
}

static int sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
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

static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    fg_engine_t *e = userp;
    e->curl_deadline = timeout_ms < 0 ? -1 : (int64_t)(fg_now_mono_ms() + (uint64_t)timeout_ms);
    return 0;
}

int fg_upx_multi_init(fg_engine_t *e, long maxconnects)
{
    e->multi = curl_multi_init();
    if (!e->multi) return FG_ENOMEM;
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, maxconnects);
    return 0;
}

/* ------------------------------------------------------------------ */
/* the upstream request                                                 */

typedef struct hdr_ctx {
    const fg_req_t *r;
    struct curl_slist *list;
    const char *conn_tokens; /* value of Connection: names more hop-by-hop fields */
    bool failed, has_accept, has_ctype, checked;
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

/* SPEC step 2: method-override fields never reach the upstream (the
 * underscore spellings are dropped with every other underscore name). */
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
    const fg_req_t *r = h->r;
    if (!k || !v) return MHD_YES;
    size_t kl = strlen(k);
    if (hop_by_hop(k, kl) || named_in_connection(h->conn_tokens, k) || is_override_header(k) ||
        strchr(k, '_') || strcasecmp(k, "Expect") == 0 || strcasecmp(k, "Content-Length") == 0 ||
        strcasecmp(k, "X-Request-Id") == 0)
        return MHD_YES;
    if (strcasecmp(k, "X-Forwarded-For") == 0) {
        if (!h->xff) h->xff = v;
        return MHD_YES;
    }
    if (h->checked &&
        (strcasecmp(k, r->d.policy->token_header) == 0 || strcasecmp(k, "Fencing-Token") == 0))
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
    if (vl == 0) line[kl] = ';', line[kl + 1] = '\0'; /* curl: "Name;" sends an empty field */
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

static int build_headers(fg_upx_t *u, const fg_req_t *r)
{
    hdr_ctx_t h = {.r = r};
    h.checked = r->d.has_token && r->d.policy && r->d.action == FG_ACT_CHECK;
    h.conn_tokens = MHD_lookup_connection_value(r->mc, MHD_HEADER_KIND, "Connection");
    MHD_get_connection_values(r->mc, MHD_HEADER_KIND, add_req_header, &h);
    bool ok = !h.failed;
    if (ok && u->small && !h.has_ctype)
        ok = slist_add(&h.list, "Content-Type:"); /* curl would add a form type for POSTFIELDS */
    if (ok && !h.has_accept) ok = slist_add(&h.list, "Accept:"); /* curl would add Accept: */
    ok = ok && slist_add(&h.list, "Expect:"); /* no 100-continue round trip upstream */
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
    if (ok && h.checked) {
        char tok[FG_TOKEN_STRLEN];
        fg_token_format(r->d.token, tok);
        ok = slist_add(&h.list, "Fencing-Token: %s", tok);
        if (ok && strcasecmp(r->d.policy->token_header, "Fencing-Token") != 0)
            ok = slist_add(&h.list, "%s: %s", r->d.policy->token_header, tok);
    }
    if (!ok) {
        curl_slist_free_all(h.list);
        return FG_ENOMEM;
    }
    u->hdrs = h.list;
    return 0;
}

static int launch(fg_upx_t *u)
{
    if (curl_multi_add_handle(u->e->multi, u->easy) != CURLM_OK) return FG_ENOMEM;
    u->active = true;
    touch(u);
    return 0;
}

int fg_upx_start(fg_req_t *r, int64_t content_length)
{
    fg_engine_t *e = r->e;
    const fg_config_t *cfg = r->cfg->cfg;
    fg_upx_t *u = calloc(1, sizeof *u);
    if (!u) return FG_ENOMEM;
    u->e = e;
    u->req = r;
    u->st = UX_SENDING;
    u->resp_len = -1;
    u->next = e->upxs;
    if (e->upxs) e->upxs->prev = u;
    e->upxs = u;
    e->nupx++;
    r->up = u;
    if (r->lane_held) { /* the lane now lives as long as the transfer */
        u->lane_key = r->key_buf;
        r->lane_held = false;
    }
    u->is_head = strcmp(r->method, "HEAD") == 0;
    bool has_body = content_length != -2 && !u->is_head;
    /* A small body of known length is read whole first, then sent in one
     * piece with the head: fewer writes and no pause/unpause round. */
    u->small = has_body && content_length >= 0 && content_length <= FG_RING_CAP;

    const char *base =
        (r->d.policy && r->d.policy->upstream) ? r->d.policy->upstream : cfg->upstream;
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/') bl--;
    size_t ul = bl + r->d.path_len + (r->d.query ? r->d.query_len + 1 : 0) + 1;
    int rc = FG_ENOMEM;
    if (!(u->url = malloc(ul))) goto fail;
    memcpy(u->url, base, bl);
    memcpy(u->url + bl, r->d.path, r->d.path_len);
    size_t at = bl + r->d.path_len;
    if (r->d.query) {
        u->url[at++] = '?';
        memcpy(u->url + at, r->d.query, r->d.query_len);
        at += r->d.query_len;
    }
    u->url[at] = '\0';
    if (build_headers(u, r)) goto fail;
    if (!(u->down.p = malloc(FG_RING_CAP))) goto fail;
    if (has_body && !(u->up.p = malloc(FG_RING_CAP))) goto fail;
    CURL *c = u->easy = get_easy(e);
    if (!c) goto fail;
    curl_easy_setopt(c, CURLOPT_URL, u->url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_PRIVATE, (char *)u);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, u->hdrs);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, u);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, u);
    curl_easy_setopt(c, CURLOPT_HTTP_CONTENT_DECODING, 0L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    uint64_t to = cfg->upstream_timeout_ms;
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(to < 10000 ? to : 10000));
    if (u->is_head) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (u->small) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method); /* body set at launch */
    } else if (has_body) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
        curl_easy_setopt(c, CURLOPT_READDATA, u);
        if (content_length >= 0)
            curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)content_length);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    } else if (strcmp(r->method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    }
    if (u->small) return 0; /* launched when the body is complete */
    if (!has_body) u->st = UX_SENT;
    rc = launch(u);
    if (rc == 0) return 0;
fail:
    if (u->lane_key == r->key_buf) { /* give the lane back to the request */
        u->lane_key = NULL;
        r->lane_held = true;
    }
    upx_free(u);
    return rc;
}

size_t fg_upx_body(fg_upx_t *u, const char *data, size_t len)
{
    size_t n = ring_write(&u->up, data, len);
    if (u->read_paused && u->up.len && u->active) {
        u->read_paused = false;
        curl_easy_pause(u->easy, CURLPAUSE_CONT);
    }
    touch(u);
    return n;
}

void fg_upx_body_end(fg_upx_t *u)
{
    u->body_eof = true;
    if (u->small && !u->active && u->st == UX_SENDING) {
        /* the ring was filled from empty, so the body is contiguous */
        curl_easy_setopt(u->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)u->up.len);
        curl_easy_setopt(u->easy, CURLOPT_POSTFIELDS, u->up.p);
        u->st = UX_SENT;
        if (launch(u) != 0) {
            release_lane(u);
            fail(u, 502, "cannot start the upstream request");
        }
        return;
    }
    if (u->read_paused && u->active) {
        u->read_paused = false;
        curl_easy_pause(u->easy, CURLPAUSE_CONT);
    }
    touch(u);
}

size_t fg_upx_read(fg_upx_t *u, char *buf, size_t max, bool *eof, bool *err)
{
    *eof = *err = false;
    if (u->down.len) {
        size_t n = ring_read(&u->down, buf, max);
        if (u->write_paused && u->active) {
            u->write_paused = false;
            curl_easy_pause(u->easy, CURLPAUSE_CONT);
            touch(u);
        }
        return n;
    }
    if (u->resp_eof) {
        *eof = true;
    } else if (u->resp_err || u->st == UX_FAILED || (!u->active && u->st != UX_HEAD)) {
        *err = true;
    }
    return 0;
}

void fg_upx_release(fg_upx_t *u)
{
    /* A fenced write that went out whole may still be applied: keep its
     * transfer (and lane) until the answer comes or its time is up. */
    bool sent = u->st == UX_SENT || u->st == UX_HEAD || u->st == UX_QUARANTINE;
    if (u->active && u->lane_key && sent && detach(u) == 0) return;
    if (u->req) u->req->up = NULL;
    u->req = NULL;
    upx_free(u);
}

void fg_upx_timeout(fg_upx_t *u)
{
    const fg_config_t *cfg = cfg_of(u);
    uint64_t ut = u->req ? u->req->cfg->cfg->upstream_timeout_ms : cfg->upstream_timeout_ms;
    uint64_t grace = u->req ? u->req->cfg->cfg->upstream_grace_ms : cfg->upstream_grace_ms;
    fg_tq_del(&u->timer);
    if (u->st == UX_SENT && u->lane_key) {
        /* SPEC step 8: the write may still be applied; keep waiting, discard
         * the answer, hold the lane */
        u->st = UX_QUARANTINE;
        u->fail_status = 504;
        snprintf(u->fail_detail, sizeof u->fail_detail,
                 "no answer from the upstream within %" PRIu64
                 " ms; the write may or may not have been applied, and may still be applied "
                 "within the next %" PRIu64 " ms",
                 ut, grace);
        fg_tq_put(&u->e->q_grace, &u->timer, fg_now_mono_ms());
        if (!u->req) return;
        notify(u, EV_UP_END);
        return;
    }
    bool had_head = u->st == UX_HEAD;
    stop(u);
    release_lane(u);
    if (had_head) {
        u->st = UX_DONE;
        u->resp_err = true; /* the answer stalled half-way: cut it */
    } else {
        fail(u, 504,
             "no answer from the upstream within %" PRIu64 " ms; the write was not sent whole, "
             "so it was not applied",
             ut);
    }
    if (!u->req) {
        upx_free(u);
        return;
    }
    notify(u, EV_UP_END);
}

void fg_upx_grace_over(fg_upx_t *u)
{
    json_t *f = json_pack("{s:s}", "url", u->url);
    fg_log(FG_LOG_WARN,
           "no answer from the upstream within upstream_grace after a 504; closing its "
           "connection and releasing the resource",
           f);
    if (u->req) u->req->up = NULL;
    u->req = NULL;
    upx_free(u);
}

void fg_upx_free_all(fg_engine_t *e)
{
    while (e->upxs) {
        fg_upx_t *u = e->upxs;
        if (u->req) u->req->up = NULL;
        u->req = NULL;
        upx_free(u);
    }
    while (e->n_easy) curl_easy_cleanup(e->easy_cache[--e->n_easy]);
}
