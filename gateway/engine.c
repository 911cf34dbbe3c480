/*
 * engine.c -- one event-loop thread: epoll, the inbox, the deadlines.
 *
 * Each engine owns an epoll loop that drives, without ever blocking: a
 * libmicrohttpd daemon in external-epoll mode on its own SO_REUSEPORT socket
 * (front.c), the upstream connections of its keep-alive pool (upstream.c), an eventfd
 * inbox on which store threads and other engines post results (a finished
 * fence check, a lane handed over), and sockets lingering after a close.
 * A request that waits -- for its lane, the store, upstream bytes, the client
 * -- is a suspended MHD connection and a connection left out of epoll, not a blocked
 * thread.
 *
 * Deadlines live in timer queues (engine_int.h): each is sorted by
 * construction, so a sweep looks only at the heads. The sweep runs before
 * MHD_run in every round, so an answer it decides on leaves in the same round.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/engine_int.h"
#include "gateway/log.h"
#include "policy/error.h"

#define SWEEP_MS   100
#define LINGER_MS  2000 /* a lingering close waits at most this long for the client */
#define LINGER_MAX 1024 /* lingering sockets per engine; beyond, close at once */
#define REFUSED_MS 100  /* MHD gets this long to close a refused connection itself */
/* Per connection. MHD zeroes about 1.5 times this per request, so it is sized
 * for what it must hold: a 12 KiB head with its 100 field entries, then the
 * answer's head (upstream fields are capped at 8 KiB, upstream.c). */
#define MHD_POOL_SIZE (20 * 1024)

/* ------------------------------------------------------------------ */
/* the inbox                                                            */

void fg_engine_post(fg_req_t *r, int msg)
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

void fg_engine_wake(fg_engine_t *e)
{
    uint64_t one = 1;
    ssize_t w = write(e->evfd, &one, sizeof one);
    (void)w;
}

static void process_inbox(fg_engine_t *e)
{
    uint64_t v;
    ssize_t rd = read(e->evfd, &v, sizeof v);
    (void)rd;
    fg_sloop_connected(e->sloop);
    pthread_mutex_lock(&e->inbox_mu);
    fg_req_t *list = e->inbox_head;
    e->inbox_head = e->inbox_tail = NULL;
    pthread_mutex_unlock(&e->inbox_mu);
    while (list) {
        fg_req_t *r = list;
        list = r->msg_next;
        fg_req_inbox(r, r->msg);
    }
}

/* ------------------------------------------------------------------ */
/* lingering closes                                                     */

typedef struct lingerer {
    fg_tq_item_t timer;
    int fd;
} lingerer_t;

static void linger_end(fg_engine_t *e, lingerer_t *l)
{
    fg_tq_del(&l->timer);
    epoll_ctl(e->ep, EPOLL_CTL_DEL, l->fd, NULL);
    close(l->fd);
    e->nlinger--;
    free(l);
}

void fg_engine_linger(fg_engine_t *e, int fd)
{
    lingerer_t *l = e->nlinger < LINGER_MAX ? calloc(1, sizeof *l) : NULL;
    if (!l) {
        close(fd);
        return;
    }
    l->fd = fd;
    shutdown(fd, SHUT_WR);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP};
    ev.data.u64 = ((uint64_t)(uintptr_t)l << 8) | TAG_LINGER;
    if (epoll_ctl(e->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        free(l);
        return;
    }
    e->nlinger++;
    fg_tq_put(&e->q_linger, &l->timer, fg_now_mono_ms());
}

static void linger_read(fg_engine_t *e, lingerer_t *l)
{
    char sink[16384];
    for (int i = 0; i < 8; i++) {
        ssize_t n = recv(l->fd, sink, sizeof sink, MSG_DONTWAIT);
        if (n > 0) continue;
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        break; /* the client closed, or the socket broke */
    }
    linger_end(e, l);
}

/* ------------------------------------------------------------------ */
/* deadlines                                                            */

static void sweep(fg_engine_t *e, uint64_t now)
{
    fg_cfgref_t *ref = fg_gateway_cfg_get(e->gw);
    const fg_config_t *cfg = ref->cfg;
    fg_tq_item_t *it;
    /* Deadlines compare as `stamp + limit <= now`: a stamp taken after `now`
     * was read must not underflow into "expired". */
    while ((it = e->q_head.head) && it->at + cfg->header_timeout_ms <= now)
        fg_front_head_timeout(FG_CONTAINER(it, fg_conn_t, timer));
    while ((it = e->q_refused.head) && it->at + REFUSED_MS <= now)
        fg_front_refused_timeout(FG_CONTAINER(it, fg_conn_t, timer));
    while ((it = e->q_lane.head) && it->at + cfg->fence_wait_ms <= now)
        fg_req_lane_timeout(FG_CONTAINER(it, fg_req_t, timer));
    while ((it = e->q_body.head) && it->at + cfg->body_timeout_ms <= now)
        fg_req_body_timeout(FG_CONTAINER(it, fg_req_t, timer));
    while ((it = e->q_up.head) && it->at + cfg->upstream_timeout_ms <= now)
        fg_upx_timeout(FG_CONTAINER(it, fg_upx_t, timer));
    while ((it = e->q_grace.head) && it->at + cfg->upstream_grace_ms <= now)
        fg_upx_grace_over(FG_CONTAINER(it, fg_upx_t, timer));
    while ((it = e->q_linger.head) && it->at + LINGER_MS <= now)
        linger_end(e, FG_CONTAINER(it, lingerer_t, timer));
    fg_sloop_tick(e->sloop, now, cfg->state_timeout_ms);
    fg_cfgref_put(ref);
}

/* ------------------------------------------------------------------ */
/* the loop                                                             */

static void *engine_main(void *arg)
{
    fg_engine_t *e = arg;
    struct epoll_event evs[128];
    uint64_t last_sweep = 0;
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
        int n = epoll_wait(e->ep, evs, 128, (int)timeout);
        for (int i = 0; i < n; i++) {
            uint64_t d = evs[i].data.u64;
            switch (d & 0xff) {
            case TAG_INBOX:
                process_inbox(e);
                break;
            case TAG_UPSTREAM:
                fg_upx_event((fg_upconn_t *)(uintptr_t)(d >> 8), evs[i].events);
                break;
            case TAG_LINGER:
                linger_read(e, (lingerer_t *)(uintptr_t)(d >> 8));
                break;
            case TAG_STORE:
                fg_sloop_event((fg_sloop_t *)(uintptr_t)(d >> 8), evs[i].events);
                break;
            default:
                break; /* TAG_MHD: MHD_run below */
            }
        }
        now = fg_now_mono_ms();
        if (now - last_sweep >= SWEEP_MS) {
            last_sweep = now;
            sweep(e, now);
        }
        /* Every round, and after everything that may resume a connection: in
         * external-epoll mode MHD only notices a resume inside MHD_run. */
        MHD_run(e->d);
        fg_sloop_flush(e->sloop); /* every check of this round leaves in one write */
        fg_upx_reap(e);
    }
    /* Past the drain deadline: end what is left so the daemon can stop cleanly
     * (MHD aborts on a suspended connection at stop). */
    fg_sloop_abort(e->sloop);
    for (fg_req_t *r = e->reqs, *next; r; r = next) {
        next = r->next;
        fg_req_shutdown(r);
    }
    MHD_run(e->d);
    MHD_stop_daemon(e->d);
    e->d = NULL;
    return NULL;
}

int fg_engine_create(fg_gateway_t *gw, unsigned id, fg_engine_t **out, char *err, size_t err_len)
{
    *out = NULL;
    if (!fg_front_hook_linked()) {
        snprintf(err, err_len, "this binary lacks the recv hook: requests cannot be checked");
        return FG_EINVAL;
    }
    int rc = fg_front_hook_init();
    if (rc) return rc;
    fg_engine_t *e = calloc(1, sizeof *e);
    if (!e) return FG_ENOMEM;
    e->gw = gw;
    e->id = id;
    e->lfd = e->evfd = -1;
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
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL, fg_front_on_request, e,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)e->lfd, MHD_OPTION_NOTIFY_CONNECTION,
        fg_front_notify_conn, e, MHD_OPTION_URI_LOG_CALLBACK, fg_front_on_uri, e,
        MHD_OPTION_UNESCAPE_CALLBACK, fg_front_no_unescape, NULL, MHD_OPTION_NOTIFY_COMPLETED,
        fg_front_on_completed, e, MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)75, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MHD_POOL_SIZE, MHD_OPTION_END);
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
    fg_store_opts_t so = fg_gateway_store_opts(gw);
    int src = fg_sloop_new(e, gw->boot->state, &so, &e->sloop);
    if (src) {
        snprintf(err, err_len, "cannot open the state store for the event loop");
        return src;
    }
    fg_sloop_start(e->sloop);
    return fg_upx_init(e);
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
    /* results that arrived after the loop ended: the requests are freed below */
    pthread_mutex_lock(&e->inbox_mu);
    e->inbox_head = e->inbox_tail = NULL;
    pthread_mutex_unlock(&e->inbox_mu);
    fg_upx_free_all(e);
    fg_sloop_free(e->sloop); /* the store threads are stopped: no connect job is out */
    e->sloop = NULL;
    while (e->reqs) {
        fg_req_t *r = e->reqs;
        r->job_out = r->lane_wait = false;
        r->lane_held = false; /* the lane table is torn down as a whole */
        r->st = RS_DONE;
        fg_req_on(r, EV_GONE, NULL, NULL);
    }
    while (e->q_linger.head) linger_end(e, FG_CONTAINER(e->q_linger.head, lingerer_t, timer));
    while (e->req_free) {
        fg_req_t *r = e->req_free;
        e->req_free = r->next;
        free(r);
    }
    if (e->lfd >= 0) close(e->lfd);
    if (e->evfd >= 0) close(e->evfd);
    if (e->ep >= 0) close(e->ep);
    pthread_mutex_destroy(&e->inbox_mu);
    free(e);
}
