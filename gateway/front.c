/*
 * front.c -- the client side of an engine: libmicrohttpd's callbacks, one
 * fg_conn_t per client connection, and SPEC step 0.
 *
 * Every byte a client sends passes fg_front_recv() (called by the recv hook,
 * recv_hook.c) before libmicrohttpd sees it. There the connection's fg_wire_t
 * checks it against the strict grammar and follows the message boundaries.
 * Bytes of a request that breaks the grammar never reach MHD: the bytes of
 * the requests before it are handed over, and when those are answered the
 * bad one gets its 400 written straight to the socket, the connection is
 * closed, and nothing pipelined behind it is answered. The same direct write
 * answers a head that does not arrive within header_timeout (408).
 *
 * A direct write is safe only while MHD is not writing to the socket: between
 * requests, or before a response was queued. Both cases are tracked here
 * (conn->started/completed, and the request's state).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "gateway/engine_int.h"
#include "gateway/log.h"
#include "policy/error.h"

/* ------------------------------------------------------------------ */
/* the fd -> connection table the recv hook looks in                    */

static fg_conn_t **hook_tab;
static size_t hook_len;

/* Defined by recv_hook.c, which only the fencegate binary links. */
extern const int fg_recv_hook_present __attribute__((weak));

bool fg_front_hook_linked(void)
{
    return &fg_recv_hook_present != NULL;
}

int fg_front_hook_init(void)
{
    if (__atomic_load_n(&hook_len, __ATOMIC_ACQUIRE)) return 0;
    /* Raise the soft file limit to the hard one (as nginx's
     * worker_rlimit_nofile does): every client connection needs an fd below
     * the table's size to be checked, and a connection that cannot be checked
     * is closed. */
    struct rlimit rl;
    size_t n = 1u << 16;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur != RLIM_INFINITY) n = rl.rlim_cur;
    }
    if (n > (1u << 20)) n = 1u << 20;
    fg_conn_t **t = calloc(n, sizeof *t);
    if (!t) return FG_ENOMEM;
    hook_tab = t;
    __atomic_store_n(&hook_len, n, __ATOMIC_RELEASE); /* readers see the table first */
    return 0;
}

static ssize_t raw_recv(int fd, void *buf, size_t len, int flags)
{
    return (ssize_t)syscall(SYS_recvfrom, fd, buf, len, flags, NULL, NULL);
}

/* ------------------------------------------------------------------ */
/* answers written straight to the socket                               */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 408:
        return "Request Timeout";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    default:
        return "Error";
    }
}

static void log_step0(const fg_conn_t *c, int status, const char *type, const char *detail,
                      const char *reqid)
{
    if (!fg_log_refusal_allowed()) return;
    json_t *f = json_pack("{s:i,s:s,s:s,s:s,s:s}", "status", status, "type", type, "detail", detail,
                          "client", c->client, "request_id", reqid);
    fg_log_refusal(FG_LOG_WARN, "request refused at step 0", f);
}

/* Write a complete problem answer and half-close; MHD must not be writing. */
static void write_problem(fg_conn_t *c, int status, const char *type, const char *title,
                          const char *detail)
{
    char reqid[40];
    fg_req_new_id(reqid);
    fg_problem_t p = {
        .status = status, .type = type, .title = title, .detail = detail, .request_id = reqid};
    size_t blen = 0;
    char *body = fg_problem_json(&p, &blen);
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: application/problem+json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\nX-Request-Id: %s\r\n\r\n",
                      status, reason_phrase(status), body ? blen : 0, reqid);
    struct iovec iov[2] = {{head, (size_t)hl}, {body, body ? blen : 0}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w; /* a client that does not read gets a cut answer; it is closing anyway */
    shutdown(c->fd, SHUT_WR);
    free(body);
    fg_metrics_count(c->e->gw->metrics, NULL,
                     status == 408 ? FG_OUT_REQUEST_TIMEOUT : FG_OUT_MALFORMED_REQUEST);
    log_step0(c, status, type, detail, reqid);
}

static void set_refused(fg_conn_t *c)
{
    c->state = CONN_REFUSED;
    c->err_pending = false;
    fg_tq_del(&c->timer);
    /* MHD closes on its next read (we answer it end-of-file); if it does not
     * read soon, the sweep makes it (q_refused) */
    fg_tq_put(&c->e->q_refused, &c->timer, fg_now_mono_ms());
}

void fg_front_abort(fg_conn_t *c, int status, const char *type, const char *title,
                    const char *detail, bool nothing_sent)
{
    if (c->state == CONN_REFUSED) return;
    if (status && nothing_sent) write_problem(c, status, type, title, detail);
    set_refused(c);
}

/* Wake MHD up on a connection we refused: its read now returns 0. */
static void wake_to_close(fg_conn_t *c)
{
    shutdown(c->fd, SHUT_RDWR);
}

/* The wire check failed on message number `m` (0-based); answer it if the
 * requests before it are done, else when they are (fg_front_on_completed). */
static bool answer_wire_error(fg_conn_t *c)
{
    uint32_t m = c->wire.begun - 1;
    if (c->completed < m) return false; /* requests ahead of it still run */
    bool nothing_sent = true;
    if (c->started > m && c->cur) nothing_sent = c->cur->st < RS_RESPOND;
    int st = c->wire.status;
    fg_front_abort(c, st,
                   st == 414   ? "uri-too-long"
                   : st == 431 ? "header-too-large"
                               : "malformed-request",
                   st == 414   ? "Request target too long"
                   : st == 431 ? "Request header too large"
                               : "Malformed request",
                   c->wire.reason, nothing_sent);
    return true;
}

/* ------------------------------------------------------------------ */
/* the hook                                                             */

/* A request was answered: if the next head has begun already (pipelined),
 * its clock starts now; the client could not be expected to finish it while
 * the request ahead of it was running. */
static void head_clock(fg_conn_t *c)
{
    if (fg_wire_in_head(&c->wire))
        fg_tq_put(&c->e->q_head, &c->timer, fg_now_mono_ms());
    else
        fg_tq_del(&c->timer);
}

static ssize_t conn_recv(fg_conn_t *c, char *buf, size_t len, int flags)
{
    if (c->state == CONN_REFUSED) return 0; /* MHD: the client closed; it closes too */
    if (c->err_pending) { /* a bad request waits for its turn: MHD gets nothing more */
        errno = EAGAIN;
        return -1;
    }
    ssize_t n = raw_recv(c->fd, buf, len, flags);
    if (n <= 0) return n;
    uint32_t begun = c->wire.begun;
    size_t ok = fg_wire_feed(&c->wire, buf, (size_t)n);
    if (c->wire.begun != begun && begun > 0 && c->started == c->completed && !c->cur) {
        /* a new head began on an idle keep-alive connection: its clock starts
         * now (the first head's clock started at the accept) */
        fg_tq_put(&c->e->q_head, &c->timer, fg_now_mono_ms());
    } else if (!fg_wire_in_head(&c->wire) && c->timer.q) {
        fg_tq_del(&c->timer);
    }
    if (ok == (size_t)n) return n;
    /* The bytes from the failing message on never reach MHD. */
    size_t deliver = c->wire.begin_off != SIZE_MAX ? c->wire.begin_off : 0;
    if (deliver) {
        c->err_pending = true; /* the requests before it are in this very buffer */
        return (ssize_t)deliver;
    }
    if (answer_wire_error(c)) return 0;
    c->err_pending = true;
    errno = EAGAIN;
    return -1;
}

ssize_t fg_front_recv(int fd, void *buf, size_t len, int flags)
{
    fg_conn_t *c = NULL;
    if (fd >= 0 && (size_t)fd < __atomic_load_n(&hook_len, __ATOMIC_ACQUIRE))
        c = __atomic_load_n(&hook_tab[fd], __ATOMIC_ACQUIRE);
    if (!c) return raw_recv(fd, buf, len, flags);
    return conn_recv(c, buf, len, flags);
}

/* ------------------------------------------------------------------ */
/* libmicrohttpd callbacks                                              */

static fg_conn_t *conn_of(struct MHD_Connection *mc)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void conn_open(fg_engine_t *e, struct MHD_Connection *mc, void **socket_context)
{
    fg_conn_t *c = calloc(1, sizeof *c);
    if (!c) return; /* no context: the URI callback refuses, MHD closes */
    c->e = e;
    c->mc = mc;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    c->fd = ci ? ci->connect_fd : -1;
    ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->client,
                      sizeof c->client);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->client,
                      sizeof c->client);
    }
    fg_wire_init(&c->wire);
    c->accepted_ms = fg_now_mono_ms();
    c->next = e->conns;
    if (e->conns) e->conns->prev = c;
    e->conns = c;
    e->nconns++;
    fg_metrics_gauge_add(e->gw->metrics, FG_GAUGE_CONNECTIONS, 1);
    *socket_context = c;
    if (c->fd < 0 || (size_t)c->fd >= hook_len) {
        c->state = CONN_REFUSED; /* cannot be checked: MHD closes it on its first read */
        return;
    }
    __atomic_store_n(&hook_tab[c->fd], c, __ATOMIC_RELEASE);
    /* SPEC step 0: for a new connection the head is due header_timeout after the accept */
    fg_tq_put(&e->q_head, &c->timer, c->accepted_ms);
}

static void conn_close(fg_engine_t *e, fg_conn_t *c)
{
    if (c->fd >= 0 && (size_t)c->fd < hook_len)
        __atomic_store_n(&hook_tab[c->fd], NULL, __ATOMIC_RELEASE);
    fg_tq_del(&c->timer);
    /* a client that may still be sending gets a lingering close, so that its
     * unread bytes do not turn the answer it is owed into a reset */
    if (c->fd >= 0 && (c->state == CONN_REFUSED || fg_wire_in_body(&c->wire) ||
                       (fg_wire_in_head(&c->wire) && !fg_wire_failed(&c->wire)))) {
        int d = dup(c->fd);
        if (d >= 0) fg_engine_linger(e, d);
    }
    if (c->cur) c->cur->conn = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        e->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    e->nconns--;
    fg_metrics_gauge_add(e->gw->metrics, FG_GAUGE_CONNECTIONS, -1);
    free(c);
}

void fg_front_notify_conn(void *cls, struct MHD_Connection *mc, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    fg_engine_t *e = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        conn_open(e, mc, socket_context);
    } else if (*socket_context) {
        conn_close(e, *socket_context);
        *socket_context = NULL;
    }
}

void *fg_front_on_uri(void *cls, const char *uri, struct MHD_Connection *mc)
{
    fg_engine_t *e = cls;
    fg_conn_t *c = conn_of(mc);
    if (!c) return NULL;
    c->started++;
    fg_req_t *r = fg_req_new(e, c, uri);
    c->cur = r;
    return r;
}

size_t fg_front_no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s); /* keep the raw target: the canonical check needs it undecoded */
}

enum MHD_Result fg_front_on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    (void)cls;
    (void)url;
    (void)version;
    fg_req_t *r = *con_cls;
    if (!r) return MHD_NO;
    if (r->st == RS_NEW && !r->mc) {
        fg_conn_t *c = r->conn;
        size_t ml = strlen(method);
        /* Fail closed: forward nothing the wire check has not seen whole. */
        if (!c || c->wire.heads < c->started || ml > FG_WIRE_METHOD_MAX) {
            if (c)
                fg_front_abort(c, 400, "malformed-request", "Malformed request",
                               "the request head was not checked", true);
            return MHD_NO;
        }
        memcpy(r->method, method, ml + 1);
        r->mc = mc;
    }
    if (*upload_data_size) return fg_req_on(r, EV_BODY, upload_data, upload_data_size);
    return fg_req_on(r, EV_CALL, NULL, NULL);
}

void fg_front_on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)toe;
    fg_req_t *r = *con_cls;
    *con_cls = NULL;
    fg_conn_t *c = r ? r->conn : conn_of(mc);
    if (c) {
        c->completed++;
        if (c->cur == r) c->cur = NULL;
    }
    if (r) fg_req_on(r, EV_GONE, NULL, NULL);
    if (!c || c->state != CONN_OPEN) return;
    if (c->err_pending) {
        if (answer_wire_error(c)) return; /* MHD reads next, gets end-of-file, closes */
    }
    head_clock(c);
}

/* ------------------------------------------------------------------ */
/* timers                                                               */

void fg_front_head_timeout(fg_conn_t *c)
{
    fg_tq_del(&c->timer);
    if (c->state != CONN_OPEN) return;
    char d[128];
    fg_cfgref_t *ref = fg_gateway_cfg_get(c->e->gw);
    snprintf(d, sizeof d, "the request head did not arrive within %" PRIu64 " ms",
             ref->cfg->header_timeout_ms);
    fg_cfgref_put(ref);
    fg_front_abort(c, 408, "request-timeout", "Request timeout", d, true);
    wake_to_close(c);
}

void fg_front_refused_timeout(fg_conn_t *c)
{
    /* MHD has not read since the answer went out: read what the client sent
     * (so closing does not reset the answer away), then make MHD read */
    fg_tq_del(&c->timer);
    char sink[4096];
    for (int i = 0; i < 16 && raw_recv(c->fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++) {
    }
    shutdown(c->fd, SHUT_RD);
}
