/*
 * storeloop.c -- fence checks on the engine's own loop (Redis), pipelined.
 *
 * Handing every check to a store thread and back cost two context switches
 * per request: a quarter of the gateway's time in the kernel scheduler under
 * the bench load. With a store that has an event-loop mode (store.h:
 * fg_store_loop_*), each engine keeps one connection of its own, registered
 * in its epoll: a check is queued into the connection's output buffer as the
 * request asks for it, everything queued in one loop round leaves in one
 * write at the end of the round (a pipeline that forms by itself), and the
 * replies come back, in order, on the same thread.
 *
 * Failure semantics do not change. The connect (which may block up to
 * state_timeout) runs on a short-lived thread of its own, so it never holds up
 * the loop or a store thread's queue; until the connection is up, and whenever
 * it is down, checks take the store threads' path as before.
 * Every check has one deadline, state_timeout from when it was queued, that
 * covers the whole round trip: when the oldest one passes it, or the
 * connection fails in any way, every check still waiting fails (503
 * state-unavailable), the connection is dropped, and reconnects back off like
 * any outage (store.c). Checks waiting are bounded (FIFO_MAX; beyond, the
 * store threads' bounded queue takes them).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "gateway/engine_int.h"
#include "gateway/log.h"
#include "policy/error.h"

#define FIFO_MAX 4096

typedef enum { SL_DOWN = 0, SL_CONNECTING, SL_UP } sl_state_t;

struct fg_sloop {
    fg_engine_t *e;
    fg_store_t *s;
    sl_state_t st;
    pthread_t connector; /* runs fg_store_connect while st == SL_CONNECTING */
    int connect_rc;
    int connect_done; /* atomic: set by the connector when it is done */
    fg_req_t **fifo;  /* requests whose check is on the wire, oldest first */
    uint64_t *sent_at;
    size_t head, n;
    bool queued;   /* output waits to be written */
    bool want_out; /* the socket was full: EPOLLOUT is watched */
    int fd;
};

/* The connector: the only code that touches the handle while it runs. */
static void *connector(void *arg)
{
    fg_sloop_t *sl = arg;
    sl->connect_rc = fg_store_connect(sl->s);
    __atomic_store_n(&sl->connect_done, 1, __ATOMIC_RELEASE);
    fg_engine_wake(sl->e);
    return NULL;
}

/* Start a connect attempt (one at a time; store.c paces them with backoff). */
static void start_connect(fg_sloop_t *sl)
{
    if (sl->st != SL_DOWN) return;
    if (pthread_create(&sl->connector, NULL, connector, sl) == 0) sl->st = SL_CONNECTING;
}

static void set_interest(fg_sloop_t *sl, bool out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0)};
    ev.data.u64 = ((uint64_t)(uintptr_t)sl << 8) | TAG_STORE;
    epoll_ctl(sl->e->ep, EPOLL_CTL_MOD, sl->fd, &ev);
    sl->want_out = out;
}

/* Deliver the result of the oldest check to its request. */
static void deliver(fg_sloop_t *sl, int rc)
{
    fg_req_t *r = sl->fifo[sl->head];
    fg_metrics_observe_store(sl->e->gw->metrics, FG_STORE_OP_CHECK,
                             fg_metrics_since(sl->sent_at[sl->head]));
    fg_metrics_set_store_up(sl->e->gw->metrics, rc != FG_EUNAVAIL);
    sl->head = (sl->head + 1) % FIFO_MAX;
    sl->n--;
    r->job.rc = rc;
    fg_req_inbox(r, MSG_JOB); /* same thread: straight into the state machine */
}

/* The connection broke or timed out: fail what waits, drop it, back off. */
static void fail_all(fg_sloop_t *sl, const char *why)
{
    if (sl->st == SL_UP) { /* (a connect under way is the connector's to finish) */
        epoll_ctl(sl->e->ep, EPOLL_CTL_DEL, sl->fd, NULL);
        fg_store_loop_fail(sl->s, why);
        sl->st = SL_DOWN;
        sl->fd = -1;
    }
    sl->queued = sl->want_out = false;
    while (sl->n) deliver(sl, FG_EUNAVAIL);
}

int fg_sloop_new(fg_engine_t *e, const char *url, const fg_store_opts_t *o, fg_sloop_t **out)
{
    *out = NULL;
    fg_store_t *s = NULL;
    char err[256];
    int rc = fg_store_open(url, o, &s, err, sizeof err);
    if (rc) return rc;
    if (!fg_store_loop_capable(s)) { /* SQLite and Postgres keep the store threads */
        fg_store_close(s);
        return 0;
    }
    fg_sloop_t *sl = calloc(1, sizeof *sl);
    if (sl) {
        sl->fifo = calloc(FIFO_MAX, sizeof *sl->fifo);
        sl->sent_at = calloc(FIFO_MAX, sizeof *sl->sent_at);
    }
    if (!sl || !sl->fifo || !sl->sent_at) {
        if (sl) free(sl->fifo), free(sl->sent_at);
        free(sl);
        fg_store_close(s);
        return FG_ENOMEM;
    }
    sl->e = e;
    sl->s = s;
    sl->fd = -1;
    *out = sl;
    return 0;
}

void fg_sloop_start(fg_sloop_t *sl)
{
    if (sl) start_connect(sl);
}

int fg_sloop_check(fg_sloop_t *sl, fg_req_t *r)
{
    if (!sl) return FG_EUNAVAIL;
    if (sl->st == SL_DOWN) start_connect(sl);
    if (sl->st != SL_UP || sl->n == FIFO_MAX) return FG_EUNAVAIL; /* take the threads' path */
    int rc = fg_store_loop_send(sl->s, &r->job.check);
    if (rc) {
        fail_all(sl, "cannot queue a check");
        return FG_EUNAVAIL;
    }
    size_t at = (sl->head + sl->n) % FIFO_MAX;
    sl->fifo[at] = r;
    sl->sent_at[at] = fg_metrics_now_ns();
    sl->n++;
    sl->queued = true;
    return 0;
}

void fg_sloop_flush(fg_sloop_t *sl)
{
    if (!sl || sl->st != SL_UP || !sl->queued || sl->want_out) return;
    bool more = false;
    if (fg_store_loop_write(sl->s, &more) != 0) {
        fail_all(sl, "write failed");
        return;
    }
    sl->queued = more;
    if (more) set_interest(sl, true);
}

void fg_sloop_event(fg_sloop_t *sl, uint32_t events)
{
    if (sl->st != SL_UP) return;
    if (events & EPOLLOUT) {
        sl->want_out = false;
        bool more = false;
        if (fg_store_loop_write(sl->s, &more) != 0) {
            fail_all(sl, "write failed");
            return;
        }
        sl->queued = more;
        set_interest(sl, more);
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;
    if (fg_store_loop_read(sl->s) != 0) {
        fail_all(sl, "read failed");
        return;
    }
    while (sl->n) {
        fg_req_t *r = sl->fifo[sl->head];
        int check_rc = 0;
        int got = fg_store_loop_reply(sl->s, &r->job.check, &check_rc);
        if (got == 0) break;
        if (got < 0) {
            fail_all(sl, "bad reply");
            return;
        }
        deliver(sl, check_rc);
        if (check_rc == FG_EUNAVAIL) { /* the server cannot serve (LOADING, ...) */
            fail_all(sl, "the store refused to serve");
            return;
        }
    }
}

/* The connector is done (woken through the engine's eventfd). */
void fg_sloop_connected(fg_sloop_t *sl)
{
    if (!sl || !__atomic_exchange_n(&sl->connect_done, 0, __ATOMIC_ACQ_REL)) return;
    pthread_join(sl->connector, NULL);
    if (sl->connect_rc != 0 || !fg_store_connected(sl->s)) {
        sl->st = SL_DOWN; /* the next check asks again; store.c paces the attempts */
        return;
    }
    sl->fd = fg_store_loop_fd(sl->s);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.u64 = ((uint64_t)(uintptr_t)sl << 8) | TAG_STORE;
    if (sl->fd < 0 || epoll_ctl(sl->e->ep, EPOLL_CTL_ADD, sl->fd, &ev) != 0) {
        fg_store_loop_fail(sl->s, "cannot watch the connection");
        sl->st = SL_DOWN;
        return;
    }
    sl->st = SL_UP;
    json_t *f = json_pack("{s:i,s:s}", "engine", (int)sl->e->id, "store", fg_store_display(sl->s));
    fg_log(FG_LOG_INFO, "fence checks run on the engine's own store connection", f);
}

void fg_sloop_tick(fg_sloop_t *sl, uint64_t now, uint64_t state_timeout_ms)
{
    if (!sl || !sl->n) return;
    if (sl->sent_at[sl->head] / 1000000 + state_timeout_ms <= now)
        fail_all(sl, "no answer within state_timeout");
}

void fg_sloop_abort(fg_sloop_t *sl)
{
    if (sl) fail_all(sl, "shutting down");
}

void fg_sloop_free(fg_sloop_t *sl)
{
    if (!sl) return;
    if (sl->st == SL_CONNECTING) { /* let the connector finish with the handle */
        pthread_join(sl->connector, NULL);
        sl->st = SL_DOWN; /* never registered in epoll: fg_store_close drops it */
    }
    fail_all(sl, NULL);
    fg_store_close(sl->s);
    free(sl->fifo);
    free(sl->sent_at);
    free(sl);
}
