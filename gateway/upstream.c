/*
 * upstream.c -- the upstream side: an HTTP/1.1 client of the gateway's own,
 * on the engine's epoll loop, with a keep-alive pool per upstream.
 *
 * Why not libcurl: a profile of the gateway under the bench load (callgrind,
 * bench/README.md) put 41% of its instructions, about 85,000 per request,
 * inside curl_multi_socket_action: easy-handle set-up and reset, the
 * connection cache, its header parser. Forwarding needs far less: send one
 * request head we build ourselves (and its body) on a pooled connection,
 * and frame the answer. The answer is framed by libhttp-parser (Debian's
 * libhttp-parser-dev), never by hand.
 *
 * The upstream request is rebuilt from what was checked, never copied from
 * the client's bytes: the method MHD parsed (a token, step 0), the canonical
 * path (step 1), the fields MHD parsed minus hop-by-hop, framing and
 * method-override fields (step 2) and minus every field whose name has an
 * underscore (CGI and WSGI servers read X_Foo and X-Foo as one variable), the
 * canonical token, and a body framed by what was actually read: the client's
 * validated Content-Length, or chunked. A small body of known length leaves
 * with its head in one writev(2).
 *
 * A transfer that holds a resource's lane keeps it until the upstream's answer
 * is complete (step 8). It can outlive its request: after a 504, or when the
 * client leaves once the whole request went out, the upstream may still apply
 * the write, so the transfer stays open (its answer discarded) for up to
 * upstream_grace and keeps the lane until then: the quarantine.
 *
 * Idle pooled connections stay in epoll, so an upstream closing one is seen at
 * once and the connection dropped, instead of failing the next request.
 */
#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "gateway/engine_int.h"
#include "gateway/log.h"
#include "policy/error.h"
#include "policy/token.h"

#define RESP_HDR_MAX  (8 * 1024)  /* upstream answer field bytes (nginx's proxy_buffer_size) */
#define READ_MAX      (16 * 1024) /* bytes per read(2) from an upstream */
#define IDLE_MAX      1024        /* idle pooled connections per engine */
#define CONNECT_MAXMS 10000
#define UPX_POOL_MAX  64 /* recycled transfers kept per engine, with their buffers */

typedef enum { UC_CONNECTING = 1, UC_BUSY, UC_IDLE } uc_state_t;

/* One upstream origin (scheme http, host, port, path prefix), per engine. */
typedef struct origin {
    struct origin *next;
    char *base; /* the upstream URL as configured: the lookup key */
    char *prefix;
    size_t prefix_len;
    char hostport[300]; /* the Host field */
    struct sockaddr_storage sa;
    socklen_t salen;
    fg_upconn_t *idle; /* LIFO */
} origin_t;

struct fg_upconn {
    fg_engine_t *e;
    origin_t *o;
    fg_upconn_t *next;          /* in the origin's idle list */
    fg_upconn_t *lprev, *lnext; /* the engine's list of every connection */
    int fd;
    uc_state_t st;
    uint32_t ev; /* epoll interest now registered */
    http_parser p;
    fg_upx_t *u;
    /* what the last parse said (handled after http_parser_execute returns) */
    bool got_head, got_end, in_field;
    bool reuse_ok; /* nothing but the answer came: the connection may be pooled */
};

struct fg_upside {
    origin_t *origins;
    fg_upconn_t *conns;
    size_t nconns, nidle;
    fg_upconn_t *dead; /* closed, freed after the round (an epoll batch may still name them) */
};

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

static void ring_drop(fg_ring_t *r, size_t n)
{
    r->head = (r->head + n) % FG_RING_CAP;
    r->len -= n;
    if (r->len == 0) r->head = 0;
}

/* Up to two iovecs for the first `n` bytes of the ring. */
static int ring_iov(const fg_ring_t *r, size_t n, struct iovec *iov)
{
    if (n > r->len) n = r->len;
    if (!n) return 0;
    size_t first = FG_RING_CAP - r->head < n ? FG_RING_CAP - r->head : n;
    iov[0] = (struct iovec){r->p + r->head, first};
    if (first == n) return 1;
    iov[1] = (struct iovec){r->p, n - first};
    return 2;
}

/* ------------------------------------------------------------------ */
/* connections                                                          */

static void set_interest(fg_upconn_t *c, uint32_t ev)
{
    if (c->ev == ev) return;
    struct epoll_event e = {.events = ev};
    e.data.u64 = ((uint64_t)(uintptr_t)c << 8) | TAG_UPSTREAM;
    epoll_ctl(c->e->ep, EPOLL_CTL_MOD, c->fd, &e);
    c->ev = ev;
}

/* Read unless the client is behind; write interest only while blocked. */
static void update_interest(fg_upconn_t *c, bool want_out)
{
    uint32_t ev = want_out ? EPOLLOUT : 0;
    if (!c->u || !c->u->write_paused) ev |= EPOLLIN | EPOLLRDHUP;
    set_interest(c, ev);
}

static void conn_close(fg_upconn_t *c)
{
    fg_upside_t *s = c->e->ups;
    if (c->st == UC_IDLE) {
        for (fg_upconn_t **pp = &c->o->idle; *pp; pp = &(*pp)->next)
            if (*pp == c) {
                *pp = c->next;
                break;
            }
        s->nidle--;
    }
    if (c->u) c->u->c = NULL;
    c->u = NULL;
    epoll_ctl(c->e->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (c->lprev)
        c->lprev->lnext = c->lnext;
    else
        s->conns = c->lnext;
    if (c->lnext) c->lnext->lprev = c->lprev;
    s->nconns--;
    c->next = s->dead;
    s->dead = c;
}

void fg_upx_reap(fg_engine_t *e)
{
    fg_upside_t *s = e->ups;
    while (s && s->dead) {
        fg_upconn_t *c = s->dead;
        s->dead = c->next;
        free(c);
    }
}

/* The transfer is over with the connection in a clean state: pool it. */
static void conn_park(fg_upconn_t *c)
{
    fg_upside_t *s = c->e->ups;
    if (c->u) c->u->c = NULL;
    c->u = NULL;
    if (s->nidle >= IDLE_MAX) {
        conn_close(c);
        return;
    }
    c->st = UC_IDLE;
    c->next = c->o->idle;
    c->o->idle = c;
    s->nidle++;
    set_interest(c, EPOLLIN | EPOLLRDHUP);
}

/* True when nothing waits on the idle connection's socket, not even EOF. */
static bool idle_is_quiet(fg_upconn_t *c)
{
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static fg_upconn_t *conn_new(fg_engine_t *e, origin_t *o)
{
    int fd = socket(o->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fg_upconn_t *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return NULL;
    }
    c->e = e;
    c->o = o;
    c->fd = fd;
    c->st = UC_CONNECTING;
    if (connect(fd, (struct sockaddr *)&o->sa, o->salen) == 0)
        c->st = UC_BUSY;
    else if (errno != EINPROGRESS) {
        close(fd);
        free(c);
        return NULL;
    }
    c->ev = EPOLLIN | EPOLLOUT;
    struct epoll_event ev = {.events = c->ev};
    ev.data.u64 = ((uint64_t)(uintptr_t)c << 8) | TAG_UPSTREAM;
    if (epoll_ctl(e->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        free(c);
        return NULL;
    }
    fg_upside_t *s = e->ups;
    c->lnext = s->conns;
    if (s->conns) s->conns->lprev = c;
    s->conns = c;
    s->nconns++;
    return c;
}

/* An origin for upstream URL `base` (http://host[:port][/prefix]). */
static origin_t *origin_for(fg_engine_t *e, const char *base)
{
    fg_upside_t *s = e->ups;
    for (origin_t *o = s->origins; o; o = o->next)
        if (strcmp(o->base, base) == 0) return o;
    if (strncmp(base, "http://", 7) != 0) return NULL;
    const char *a = base + 7;
    size_t alen = strcspn(a, "/?#");
    if (alen == 0 || alen >= sizeof((origin_t *)0)->hostport) return NULL;
    char host[300], port[8] = "80";
    memcpy(host, a, alen);
    host[alen] = '\0';
    char *h = host, *colon = NULL;
    if (host[0] == '[') {
        char *rb = strchr(host, ']');
        if (!rb) return NULL;
        *rb = '\0';
        h = host + 1;
        if (rb[1] == ':') colon = rb + 1;
    } else {
        colon = strrchr(host, ':');
    }
    if (colon) {
        *colon = '\0';
        snprintf(port, sizeof port, "%.7s", colon + 1);
    }
    /* Resolved once per engine and origin; an IP literal costs nothing. */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(h, port, &hints, &ai) != 0 || !ai) return NULL;
    origin_t *o = calloc(1, sizeof *o);
    if (!o || !(o->base = strdup(base))) {
        free(o);
        freeaddrinfo(ai);
        return NULL;
    }
    memcpy(&o->sa, ai->ai_addr, ai->ai_addrlen);
    o->salen = ai->ai_addrlen;
    freeaddrinfo(ai);
    memcpy(o->hostport, a, alen);
    o->hostport[alen] = '\0';
    const char *pfx = a + alen;
    size_t pl = strcspn(pfx, "?#");
    while (pl && pfx[pl - 1] == '/') pl--;
    if (!(o->prefix = strndup(pfx, pl))) {
        free(o->base);
        free(o);
        return NULL;
    }
    o->prefix_len = pl;
    o->next = s->origins;
    s->origins = o;
    return o;
}

/* ------------------------------------------------------------------ */
/* transfers                                                            */

static const fg_config_t *cfg_of(const fg_upx_t *u)
{
    return u->req ? u->req->cfg->cfg : u->e->gw->boot;
}

/* Tell the request (if it still listens) that something happened. */
static void notify(fg_upx_t *u, req_event_t ev)
{
    if (u->req) fg_req_on(u->req, ev, NULL, NULL);
}

static bool output_pending(const fg_upx_t *u)
{
    return u->head_off < u->head_len || u->small_off < u->small_len || u->up.len ||
           u->frame_off < u->frame_len;
}

/* Is the transfer waiting on the upstream (rather than on the client)? */
static bool waits_on_upstream(const fg_upx_t *u)
{
    if (!u->c) return false;
    switch (u->st) {
    case UX_SENDING:
        return u->c->st == UC_CONNECTING || output_pending(u);
    case UX_SENT:
        return true;
    case UX_HEAD:
        return !u->write_paused;
    default:
        return false;
    }
}

/* Restart the upstream_timeout clock if the upstream is the one we wait on. */
static void touch(fg_upx_t *u)
{
    if (u->st == UX_QUARANTINE) return;
    if (waits_on_upstream(u))
        fg_tq_put(&u->e->q_up, &u->timer, fg_now_mono_ms());
    else
        fg_tq_del(&u->timer);
}

static void release_lane(fg_upx_t *u)
{
    if (!u->lane_key) return;
    fg_lanes_release(u->e->gw->lanes, u->lane_key);
    if (u->lane_key_owned) free(u->lane_key);
    u->lane_key = NULL;
    u->lane_key_owned = false;
}

static void upx_destroy(fg_upx_t *u)
{
    free(u->head);
    free(u->small);
    free(u->rh);
    free(u->up.p);
    free(u->down.p);
    free(u);
}

/* A transfer, from the free list when there is one. */
static fg_upx_t *upx_get(fg_engine_t *e)
{
    fg_upx_t *u = e->upx_free;
    if (!u) return calloc(1, sizeof *u);
    e->upx_free = u->next;
    e->n_upx_free--;
    fg_upx_t keep = *u; /* its buffers */
    memset(u, 0, sizeof *u);
    u->head = keep.head;
    u->head_cap = keep.head_cap;
    u->small = keep.small;
    u->small_cap = keep.small_cap;
    u->rh = keep.rh;
    u->rh_cap = keep.rh_cap;
    u->up.p = keep.up.p;
    u->down.p = keep.down.p;
    return u;
}

static void upx_free(fg_upx_t *u)
{
    fg_engine_t *e = u->e;
    if (u->st == UX_QUARANTINE) fg_metrics_gauge_add(e->gw->metrics, FG_GAUGE_QUARANTINED, -1);
    fg_tq_del(&u->timer);
    if (u->c)
        conn_close(u->c); /* a transfer that did not finish cleanly: the
                             upstream sees the connection close */
    release_lane(u);
    if (u->req) u->req->up = NULL;
    if (u->prev)
        u->prev->next = u->next;
    else
        e->upxs = u->next;
    if (u->next) u->next->prev = u->prev;
    e->nupx--;
    if (e->n_upx_free < UPX_POOL_MAX && !e->quiesced) {
        /* keep it, buffers included: the next transfer allocates nothing */
        u->next = e->upx_free;
        e->upx_free = u;
        e->n_upx_free++;
        return;
    }
    upx_destroy(u);
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

/* The connection broke (or the upstream misbehaved): end the transfer. */
static void broken(fg_upx_t *u, const char *why)
{
    fg_upconn_t *c = u->c;
    if (c) conn_close(c);
    fg_tq_del(&u->timer);
    release_lane(u);
    if (u->st == UX_HEAD) {
        u->st = UX_DONE;
        u->resp_err = true; /* the client's answer is cut off */
    } else if (u->st == UX_QUARANTINE) {
        if (!u->req) {
            upx_free(u);
            return;
        }
    } else if (u->st != UX_FAILED && u->st != UX_DONE) {
        fail(u, 502, "upstream: %s", why);
    }
    if (!u->req) {
        upx_free(u);
        return;
    }
    notify(u, EV_UP_END);
}

/* The answer is complete. */
static void finished(fg_upx_t *u)
{
    fg_upconn_t *c = u->c;
    fg_tq_del(&u->timer);
    release_lane(u); /* the next write of the resource may go */
    bool clean = c->reuse_ok && !output_pending(u) && u->body_eof &&
                 (!u->chunked || u->final_sent) && http_should_keep_alive(&c->p);
    if (clean)
        conn_park(c);
    else
        conn_close(c);
    if (u->st == UX_QUARANTINE) {
        json_t *f = json_pack("{s:s,s:i}", "upstream", u->o->base, "status", (int)u->status);
        fg_log(FG_LOG_WARN, "upstream answered after its request timed out (504)", f);
        if (!u->req) upx_free(u);
        return;
    }
    u->st = UX_DONE;
    u->resp_eof = true;
    if (!u->req) {
        upx_free(u);
        return;
    }
    notify(u, EV_UP_END);
}

/* ------------------------------------------------------------------ */
/* the answer: libhttp-parser callbacks                                 */

static bool hop_by_hop(const char *name, size_t len)
{
    static const char *const hop[] = {
        "connection", "keep-alive", "proxy-connection",   "transfer-encoding",  "te",
        "trailer",    "upgrade",    "proxy-authenticate", "proxy-authorization"};
    for (size_t i = 0; i < sizeof hop / sizeof *hop; i++)
        if (strlen(hop[i]) == len && strncasecmp(hop[i], name, len) == 0) return true;
    return false;
}

static int rh_add(fg_upx_t *u, const char *p, size_t n, bool nul)
{
    if (u->rh_len + n + 1 > RESP_HDR_MAX) return -1; /* an endless head: broken upstream */
    if (u->rh_cap < u->rh_len + n + 1) {
        size_t nc = u->rh_cap ? u->rh_cap * 2 : 1024;
        while (nc < u->rh_len + n + 1) nc *= 2;
        char *np = realloc(u->rh, nc);
        if (!np) return -1;
        u->rh = np;
        u->rh_cap = nc;
    }
    memcpy(u->rh + u->rh_len, p, n);
    u->rh_len += n;
    if (nul) u->rh[u->rh_len++] = '\0';
    return 0;
}

static int on_message_begin(http_parser *p)
{
    fg_upconn_t *c = p->data;
    if (c->u) c->u->rh_len = 0;
    c->in_field = false;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    fg_upconn_t *c = p->data;
    fg_upx_t *u = c->u;
    if (!u) return 0;
    if (!c->in_field) {
        if (u->rh_len && rh_add(u, "", 0, true)) return -1; /* end the previous value */
        u->field_at = u->rh_len;
        c->in_field = true;
    }
    return rh_add(u, at, n, false);
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    fg_upconn_t *c = p->data;
    fg_upx_t *u = c->u;
    if (!u) return 0;
    if (c->in_field) {
        if (rh_add(u, "", 0, true)) return -1; /* end the name */
        c->in_field = false;
    }
    return rh_add(u, at, n, false);
}

/* Drop what must not be passed on from the collected fields, and learn the
 * answer's length and whether it names a request id. */
static void filter_fields(fg_upx_t *u)
{
    size_t out = 0;
    u->resp_len = -1;
    u->rh_has_reqid = false;
    for (size_t at = 0; at < u->rh_len;) {
        const char *k = u->rh + at;
        size_t kl = strlen(k);
        const char *v = k + kl + 1;
        size_t vl = strlen(v);
        size_t next = at + kl + 1 + vl + 1;
        bool keep = !hop_by_hop(k, kl);
        if (kl == 14 && strncasecmp(k, "content-length", 14) == 0) {
            uint64_t cl;
            if (fg_token_parse(v, vl, &cl) == 0 && cl <= INT64_MAX) u->resp_len = (int64_t)cl;
            keep = false; /* MHD writes the length of what it sends */
        }
        if (kl == 12 && strncasecmp(k, "x-request-id", 12) == 0) u->rh_has_reqid = true;
        if (keep) {
            memmove(u->rh + out, k, next - at);
            out += next - at;
        }
        at = next;
    }
    u->rh_len = out;
}

static int on_headers_complete(http_parser *p)
{
    fg_upconn_t *c = p->data;
    fg_upx_t *u = c->u;
    if (!u) return 0;
    if (u->rh_len && !c->in_field && rh_add(u, "", 0, true)) return -1; /* the last value */
    c->in_field = false;
    /* 101 answers an Upgrade, which is never forwarded; below 100 is no status */
    if (p->status_code == 101 || p->status_code < 100) return -1;
    if (p->status_code < 200) { /* an interim answer: wait for the final one */
        u->rh_len = 0;
        return 0;
    }
    u->status = p->status_code;
    filter_fields(u);
    if (p->flags & F_CHUNKED) u->resp_len = -1;
    c->got_head = true;
    /* An answer to HEAD, a 204 and a 304 have no body, whatever their fields
     * say (RFC 9112 6.3; a 304 may carry the Content-Length of the resource).
     * When they announce one, a buggy upstream may send it anyway, after the
     * answer was taken: such a connection is never reused, or those bytes
     * would be read as the answer to the next request. */
    if (u->is_head || p->status_code == 204 || p->status_code == 304) {
        if ((p->flags & F_CHUNKED) || (p->content_length > 0 && p->content_length != ULLONG_MAX))
            c->reuse_ok = false;
        return 1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    fg_upconn_t *c = p->data;
    fg_upx_t *u = c->u;
    if (!u || !u->req || u->st == UX_QUARANTINE) return 0; /* nobody to deliver to: discard */
    if (!u->down.p && !(u->down.p = malloc(FG_RING_CAP))) return -1;
    /* reads are sized to the ring's room (conn_read), so this always fits */
    ring_write(&u->down, at, n);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    fg_upconn_t *c = p->data;
    if (p->status_code >= 200) {
        c->got_end = true;
        http_parser_pause(p, 1); /* one answer per request: anything after it is not ours */
    }
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ------------------------------------------------------------------ */
/* the request: writing                                                 */

/* Write what can be written now. Returns false when the transfer broke. */
static bool conn_write(fg_upconn_t *c)
{
    fg_upx_t *u = c->u;
    for (;;) {
        struct iovec iov[6];
        int n = 0;
        if (u->head_off < u->head_len)
            iov[n++] = (struct iovec){u->head + u->head_off, u->head_len - u->head_off};
        if (u->small_mode) {
            if (u->small_off < u->small_len)
                iov[n++] = (struct iovec){u->small + u->small_off, u->small_len - u->small_off};
        } else if (u->chunked) {
            if (u->frame_off == u->frame_len && u->chunk_left == 0) {
                /* start the next chunk, or the last one */
                const char *lead = u->chunks_sent ? "\r\n" : "";
                if (u->up.len) {
                    u->frame_len =
                        (size_t)snprintf(u->frame, sizeof u->frame, "%s%zx\r\n", lead, u->up.len);
                    u->frame_off = 0;
                    u->chunk_left = u->up.len;
                    u->chunks_sent = true;
                } else if (u->body_eof && !u->final_sent) {
                    u->frame_len = (size_t)snprintf(u->frame, sizeof u->frame, "%s0\r\n\r\n", lead);
                    u->frame_off = 0;
                    u->final_sent = true;
                }
            }
            if (u->frame_off < u->frame_len)
                iov[n++] = (struct iovec){u->frame + u->frame_off, u->frame_len - u->frame_off};
            if (u->chunk_left) n += ring_iov(&u->up, u->chunk_left, iov + n);
        } else if (u->up.len) {
            n += ring_iov(&u->up, u->up.len, iov + n);
        }
        if (n == 0) break;
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                update_interest(c, true);
                return true;
            }
            return false;
        }
        size_t left = (size_t)w, took_body = 0;
        size_t k = u->head_len - u->head_off < left ? u->head_len - u->head_off : left;
        u->head_off += k;
        left -= k;
        if (u->small_mode) {
            k = u->small_len - u->small_off < left ? u->small_len - u->small_off : left;
            u->small_off += k;
            left -= k;
        } else if (u->chunked) {
            k = u->frame_len - u->frame_off < left ? u->frame_len - u->frame_off : left;
            u->frame_off += k;
            left -= k;
            k = u->chunk_left < left ? u->chunk_left : left;
            u->chunk_left -= k;
            took_body = k;
            left -= k;
        } else {
            took_body = left;
        }
        if (took_body) {
            ring_drop(&u->up, took_body);
            if (u->req) u->body_room = true; /* the request may resume its upload */
        }
    }
    update_interest(c, false);
    bool done = u->body_eof && !output_pending(u) && (!u->chunked || u->final_sent);
    if (done && u->st == UX_SENDING) u->st = UX_SENT;
    return true;
}

/* ------------------------------------------------------------------ */
/* the answer: reading                                                  */

static void conn_read(fg_upconn_t *c)
{
    fg_upx_t *u = c->u;
    if (!u) { /* an idle pooled connection: the upstream closed it, or spoke out of turn */
        conn_close(c);
        return;
    }
    size_t want = READ_MAX;
    if (u->st == UX_HEAD && u->req) {
        size_t room = FG_RING_CAP - u->down.len;
        if (room == 0) { /* the client is slow: stop reading until it catches up */
            u->write_paused = true;
            update_interest(c, (c->ev & EPOLLOUT) != 0);
            touch(u);
            return;
        }
        if (want > room) want = room;
    }
    char buf[READ_MAX];
    ssize_t n = read(c->fd, buf, want);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        broken(u, strerror(errno));
        return;
    }
    bool had_head = u->st == UX_HEAD;
    size_t got = http_parser_execute(&c->p, &parser_settings, buf, (size_t)n);
    if (n == 0 && !c->got_end) /* the upstream closed: ends a read-until-close answer */
        http_parser_execute(&c->p, &parser_settings, NULL, 0);
    enum http_errno err = HTTP_PARSER_ERRNO(&c->p);
    if (c->got_head && (u->st == UX_SENDING || u->st == UX_SENT)) {
        u->st = UX_HEAD;
        fg_metrics_observe_upstream_first_byte(u->e->gw->metrics, fg_metrics_since(u->t_start_ns));
    }
    if (c->got_end) {
        /* bytes after the answer, an answer ended by the close, or a read that
         * filled its buffer (more may be waiting behind it): never reuse */
        if (got < (size_t)n || n == 0 || (size_t)n == want) c->reuse_ok = false;
        finished(u);
        return;
    }
    if (err != HPE_OK) {
        broken(u, http_errno_description(err));
        return;
    }
    if (n == 0) {
        broken(u, "the upstream closed the connection before its answer was complete");
        return;
    }
    touch(u);
    if (!had_head && u->st == UX_HEAD) notify(u, EV_UP_HEAD);
    if (u->down.len) notify(u, EV_UP_DATA);
}

void fg_upx_event(fg_upconn_t *c, uint32_t events)
{
    if (c->fd < 0) return; /* closed earlier in this round */
    if (c->st == UC_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            if (c->u)
                broken(c->u, err ? strerror(err) : "cannot connect");
            else
                conn_close(c);
            return;
        }
        c->st = UC_BUSY;
    }
    if (!c->u) {
        conn_read(c); /* idle: readable means closed (or garbage): drop it */
        return;
    }
    fg_upx_t *u = c->u;
    if (events & EPOLLOUT) {
        if (!conn_write(c)) {
            broken(u, strerror(errno));
            return;
        }
        touch(u);
        if (u->body_room) {
            u->body_room = false;
            notify(u, EV_UP_DATA);
        }
        if (u->c != c) return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) conn_read(c);
}

/* Push what is queued for the upstream now (or when it becomes writable). */
static void kick(fg_upx_t *u)
{
    fg_upconn_t *c = u->c;
    if (!c || c->st == UC_CONNECTING) return;
    if (!conn_write(c)) {
        broken(u, strerror(errno));
        return;
    }
    touch(u);
}

/* ------------------------------------------------------------------ */
/* the upstream request                                                 */

typedef struct hdr_ctx {
    const fg_req_t *r;
    char *buf;
    size_t len, cap;
    const char *conn_tokens; /* value of Connection: names more hop-by-hop fields */
    bool failed, checked;
    bool strip_tokens; /* drop the client's token fields (only a checked token goes on) */
    const char *xff;
} hdr_ctx_t;

static void put(hdr_ctx_t *h, const char *s, size_t n)
{
    if (h->failed) return;
    if (h->len + n > h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 1024;
        while (nc < h->len + n) nc *= 2;
        char *nb = realloc(h->buf, nc);
        if (!nb) {
            h->failed = true;
            return;
        }
        h->buf = nb;
        h->cap = nc;
    }
    memcpy(h->buf + h->len, s, n);
    h->len += n;
}

static void puts_(hdr_ctx_t *h, const char *s)
{
    put(h, s, strlen(s));
}

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
        strcasecmp(k, "X-Request-Id") == 0 || strcasecmp(k, "Host") == 0)
        return MHD_YES;
    if (strcasecmp(k, "X-Forwarded-For") == 0) {
        if (!h->xff) h->xff = v;
        return MHD_YES;
    }
    if (h->strip_tokens && (strcasecmp(k, "Fencing-Token") == 0 ||
                            (r->d.policy && strcasecmp(k, r->d.policy->token_header) == 0)))
        return MHD_YES; /* a checked token is added below, in canonical form */
    put(h, k, kl);
    put(h, ": ", 2);
    puts_(h, v);
    put(h, "\r\n", 2);
    return MHD_YES;
}

/* The request head, from what was checked. */
static int build_head(fg_upx_t *u, const fg_req_t *r, int64_t body_len)
{
    hdr_ctx_t h = {.r = r, .buf = u->head, .cap = u->head_cap};
    h.checked = r->d.has_token && r->d.policy && r->d.action == FG_ACT_CHECK;
    /* SPEC step 9 passes on the token that was checked. A write forwarded
     * without a check (mode = off, on_missing or unmatched_writes = forward,
     * report-only without a usable token) carries none: an upstream that
     * fences on the field must never see a value nobody checked (a client
     * could push its hwm to 2^64-1). Reads go on unchanged (step 4). */
    h.strip_tokens = h.checked || r->d.cls != FG_CLASS_READ;
    puts_(&h, r->method);
    put(&h, " ", 1);
    put(&h, u->o->prefix, u->o->prefix_len);
    put(&h, r->d.path, r->d.path_len);
    if (r->d.query) {
        put(&h, "?", 1);
        put(&h, r->d.query, r->d.query_len);
    }
    puts_(&h, " HTTP/1.1\r\nHost: ");
    puts_(&h, u->o->hostport);
    put(&h, "\r\n", 2);
    h.conn_tokens = MHD_lookup_connection_value(r->mc, MHD_HEADER_KIND, "Connection");
    MHD_get_connection_values(r->mc, MHD_HEADER_KIND, add_req_header, &h);
    if (h.xff && strlen(h.xff) > 900) h.failed = true;
    puts_(&h, "X-Forwarded-For: ");
    if (h.xff) {
        puts_(&h, h.xff);
        put(&h, ", ", 2);
    }
    puts_(&h, r->client);
    puts_(&h, "\r\nX-Request-Id: ");
    puts_(&h, r->reqid);
    put(&h, "\r\n", 2);
    if (h.checked) {
        char tok[FG_TOKEN_STRLEN];
        size_t tl = fg_token_format(r->d.token, tok);
        puts_(&h, "Fencing-Token: ");
        put(&h, tok, tl);
        put(&h, "\r\n", 2);
        if (strcasecmp(r->d.policy->token_header, "Fencing-Token") != 0) {
            puts_(&h, r->d.policy->token_header);
            put(&h, ": ", 2);
            put(&h, tok, tl);
            put(&h, "\r\n", 2);
        }
    }
    if (body_len >= 0) {
        char cl[48];
        int n = snprintf(cl, sizeof cl, "Content-Length: %" PRId64 "\r\n", body_len);
        put(&h, cl, (size_t)n);
    } else if (body_len == -1) {
        puts_(&h, "Transfer-Encoding: chunked\r\n");
    }
    put(&h, "\r\n", 2);
    u->head = h.buf; /* grown or not, it is the transfer's (freed with it) */
    u->head_cap = h.cap;
    if (h.failed) return FG_ENOMEM;
    u->head_len = h.len;
    return 0;
}

/* Put the transfer on a connection (pooled, or a new one) and start sending. */
static int launch(fg_upx_t *u)
{
    u->t_start_ns = fg_metrics_now_ns();
    fg_upconn_t *c;
    /* An idle connection that has something to read (bytes the upstream sent
     * out of turn, or its close) is dropped, not used: whatever it holds must
     * never be taken for the answer to this request. The epoll event that
     * would close it may still be queued behind this request in the round. */
    while ((c = u->o->idle) && !idle_is_quiet(c)) conn_close(c);
    if (c) {
        u->o->idle = c->next;
        u->e->ups->nidle--;
        c->st = UC_BUSY;
    } else if (!(c = conn_new(u->e, u->o))) {
        return FG_EIO;
    }
    c->u = u;
    u->c = c;
    http_parser_init(&c->p, HTTP_RESPONSE);
    c->p.data = c;
    c->got_head = c->got_end = c->in_field = false;
    c->reuse_ok = true;
    if (c->st == UC_CONNECTING) {
        touch(u);
        return 0;
    }
    kick(u);
    return 0;
}

int fg_upx_start(fg_req_t *r, int64_t content_length)
{
    fg_engine_t *e = r->e;
    const fg_config_t *cfg = r->cfg->cfg;
    const char *base =
        (r->d.policy && r->d.policy->upstream) ? r->d.policy->upstream : cfg->upstream;
    origin_t *o = origin_for(e, base);
    if (!o) return FG_EINVAL;
    fg_upx_t *u = upx_get(e);
    if (!u) return FG_ENOMEM;
    u->e = e;
    u->o = o;
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
    if (u->is_head) content_length = -2; /* a HEAD body would confuse the answer's framing */
    /* A small body of known length is read whole first, then sent with its
     * head in one writev: fewer writes and no half-sent request. */
    u->small_len = 0;
    u->chunked = content_length == -1;
    bool small = content_length >= 0 && content_length <= FG_RING_CAP;
    int rc = build_head(u, r, content_length);
    if (rc) goto fail;
    if (small) {
        size_t need = (size_t)content_length;
        if (need > u->small_cap || !u->small) {
            char *nb = realloc(u->small, need ? need : 1);
            if (!nb) goto fail;
            u->small = nb;
            u->small_cap = need;
        }
        u->small_len = 0;
        u->small_want = need;
        u->small_mode = true;
        u->waiting_body = true;
        return 0; /* launched when the body is complete */
    }
    if (content_length != -2 && !u->up.p && !(u->up.p = malloc(FG_RING_CAP))) goto fail;
    if (content_length == -2) u->body_eof = u->no_body = true;
    rc = launch(u);
    if (rc == 0) return 0;
fail:
    if (u->lane_key == r->key_buf) { /* give the lane back to the request */
        u->lane_key = NULL;
        r->lane_held = true;
    }
    upx_free(u);
    return rc ? rc : FG_ENOMEM;
}

size_t fg_upx_body(fg_upx_t *u, const char *data, size_t len)
{
    if (u->small_mode) {
        size_t room = u->small_want - u->small_len;
        size_t n = len < room ? len : room; /* never more than the framing said */
        memcpy(u->small + u->small_len, data, n);
        u->small_len += n;
        return n;
    }
    if (u->no_body || !u->up.p) return 0; /* a transfer without a body takes none */
    /* Take all that fits; writing to the upstream may make more room. Stop
     * only with the ring full and the socket blocked: then EPOLLOUT comes,
     * and with it the request's resume (fg_upx_event). */
    size_t taken = 0;
    while (taken < len) {
        size_t n = ring_write(&u->up, data + taken, len - taken);
        taken += n;
        size_t before = u->up.len;
        kick(u);
        if (!u->c || u->up.len == before) break;
    }
    u->body_room = false;
    return taken;
}

void fg_upx_body_end(fg_upx_t *u)
{
    u->body_eof = true;
    if (u->waiting_body) {
        u->waiting_body = false;
        if (launch(u) != 0) {
            release_lane(u);
            fail(u, 502, "cannot connect to the upstream");
        }
        return;
    }
    kick(u);
}

size_t fg_upx_read(fg_upx_t *u, char *buf, size_t max, bool *eof, bool *err)
{
    *eof = *err = false;
    if (u->down.len) {
        size_t n = ring_read(&u->down, buf, max);
        if (u->write_paused && u->c) { /* room again: read the upstream on */
            u->write_paused = false;
            update_interest(u->c, (u->c->ev & EPOLLOUT) != 0);
            touch(u);
        }
        return n;
    }
    if (u->resp_eof)
        *eof = true;
    else if (u->resp_err || u->st == UX_FAILED || !u->c)
        *err = true;
    return 0;
}

void fg_upx_release(fg_upx_t *u)
{
    /* A fenced write that went out whole may still be applied: keep its
     * transfer (and lane) until the answer comes or its time is up. */
    bool sent = u->st == UX_SENT || u->st == UX_HEAD || u->st == UX_QUARANTINE;
    if (u->c && u->lane_key && sent && detach(u) == 0) return;
    if (u->req) u->req->up = NULL;
    u->req = NULL;
    upx_free(u);
}

void fg_upx_timeout(fg_upx_t *u)
{
    const fg_config_t *cfg = cfg_of(u);
    uint64_t ut = cfg->upstream_timeout_ms, grace = cfg->upstream_grace_ms;
    fg_tq_del(&u->timer);
    if (u->st == UX_SENT && u->lane_key) {
        /* SPEC step 8: the write may still be applied; keep waiting, discard
         * the answer, hold the lane */
        u->st = UX_QUARANTINE;
        fg_metrics_gauge_add(u->e->gw->metrics, FG_GAUGE_QUARANTINED, 1); /* until upx_free */
        u->fail_status = 504;
        snprintf(u->fail_detail, sizeof u->fail_detail,
                 "no answer from the upstream within %" PRIu64
                 " ms; the write may or may not have been applied, and may still be applied "
                 "within the next %" PRIu64 " ms",
                 ut, grace);
        fg_tq_put(&u->e->q_grace, &u->timer, fg_now_mono_ms());
        notify(u, EV_UP_END);
        return;
    }
    bool had_head = u->st == UX_HEAD;
    if (u->c) conn_close(u->c);
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
    json_t *f = json_pack("{s:s}", "upstream", u->o->base);
    fg_log(FG_LOG_WARN,
           "no answer from the upstream within upstream_grace after a 504; closing its "
           "connection and releasing the resource",
           f);
    if (u->req) u->req->up = NULL;
    u->req = NULL;
    upx_free(u);
}

int fg_upx_init(fg_engine_t *e)
{
    e->ups = calloc(1, sizeof *e->ups);
    return e->ups ? 0 : FG_ENOMEM;
}

void fg_upx_free_all(fg_engine_t *e)
{
    while (e->upxs) {
        fg_upx_t *u = e->upxs;
        if (u->req) u->req->up = NULL;
        u->req = NULL;
        upx_free(u);
    }
    while (e->upx_free) {
        fg_upx_t *u = e->upx_free;
        e->upx_free = u->next;
        upx_destroy(u);
    }
    e->n_upx_free = 0;
    fg_upside_t *s = e->ups;
    if (!s) return;
    while (s->conns) conn_close(s->conns);
    fg_upx_reap(e);
    while (s->origins) {
        origin_t *o = s->origins;
        s->origins = o->next;
        free(o->base);
        free(o->prefix);
        free(o);
    }
    free(s);
    e->ups = NULL;
}
