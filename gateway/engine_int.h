/*
 * engine_int.h -- what the engine's files share, and nobody else sees.
 *
 * An engine is one event-loop thread. Its work is split by concern:
 *   engine.c    the loop: epoll, the inbox, timer queues, lingering closes
 *   front.c     the client side: libmicrohttpd's callbacks, one fg_conn_t per
 *               connection with its strict wire check (wire.c, fed by the
 *               recv hook), step-0 refusals written straight to the socket
 *   request.c   one request's state machine (req_on): decision, audit, lane,
 *               fence check, forwarding, the answer
 *   upstream.c  the upstream side (an HTTP/1.1 client with a keep-alive pool):
 *               one fg_upx_t per transfer, which may outlive its request (the
 *               504 quarantine, step 8)
 *
 * Ownership: the engine owns its connections, requests and transfers; all of
 * them are touched only by the engine's thread. Other threads (store threads,
 * other engines releasing a lane) reach a request only through the inbox.
 */
#ifndef FG_ENGINE_INT_H
#define FG_ENGINE_INT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "gateway/gateway_int.h"
#include "gateway/lanes.h"
#include "gateway/metrics.h"
#include "gateway/problem.h"
#include "gateway/storepool.h"
#include "gateway/wire.h"
#include "policy/decide.h"

typedef struct fg_conn fg_conn_t;
typedef struct fg_req fg_req_t;
typedef struct fg_upx fg_upx_t;
typedef struct fg_upconn fg_upconn_t;
typedef struct fg_upside fg_upside_t;
typedef struct fg_sloop fg_sloop_t;

/* ------------------------------------------------------------------ */
/* timer queues                                                         */

/*
 * A queue of things that each expire a fixed time after their own stamp
 * (header_timeout after a head began, fence_wait after a lane wait began...).
 * Items are appended with a rising stamp, so each queue is sorted by
 * construction and the sweep only looks at its head. Touching an item (a body
 * byte arrived) moves it to the tail.
 */
typedef struct fg_tq fg_tq_t;

typedef struct fg_tq_item {
    struct fg_tq_item *prev, *next;
    fg_tq_t *q;  /* the queue it is in, or NULL */
    uint64_t at; /* stamp, monotonic ms */
} fg_tq_item_t;

struct fg_tq {
    fg_tq_item_t *head, *tail;
    size_t n;
};

/* Take `it` out of whatever queue it is in (no-op when in none). */
static inline void fg_tq_del(fg_tq_item_t *it)
{
    fg_tq_t *q = it->q;
    if (!q) return;
    if (it->prev)
        it->prev->next = it->next;
    else
        q->head = it->next;
    if (it->next)
        it->next->prev = it->prev;
    else
        q->tail = it->prev;
    it->prev = it->next = NULL;
    it->q = NULL;
    q->n--;
}

/* Append `it` to `q` (moving it from wherever it was) with stamp `at`. */
static inline void fg_tq_put(fg_tq_t *q, fg_tq_item_t *it, uint64_t at)
{
    fg_tq_del(it);
    it->at = at;
    it->prev = q->tail;
    it->next = NULL;
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    it->q = q;
    q->n++;
}

#define FG_CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* ------------------------------------------------------------------ */
/* the engine                                                           */

enum { TAG_MHD = 1, TAG_INBOX, TAG_UPSTREAM, TAG_LINGER, TAG_STORE };

struct fg_engine {
    fg_gateway_t *gw;
    unsigned id;
    int ep, evfd, lfd, mhd_ep;
    struct MHD_Daemon *d;
    struct fg_upside *ups; /* upstream.c: origins and pooled connections */
    fg_sloop_t *sloop;     /* storeloop.c: checks on this loop (Redis), or NULL */
    pthread_t th;
    bool started;
    pthread_mutex_t inbox_mu;
    fg_req_t *inbox_head, *inbox_tail;
    int quiesce;          /* atomic: main asks to drain */
    uint64_t deadline_ms; /* atomic: hard stop when draining */
    bool quiesced;
    /* everything alive on this engine */
    fg_conn_t *conns;
    size_t nconns;
    fg_req_t *reqs;
    size_t nreqs;
    fg_req_t *req_free; /* recycled requests (request.c) */
    size_t n_req_free;
    fg_upx_t *upxs;
    size_t nupx;
    fg_upx_t *upx_free; /* recycled transfers, their buffers kept (upstream.c) */
    size_t n_upx_free;
    /* deadlines */
    fg_tq_t q_head;    /* connections: request head due (header_timeout) */
    fg_tq_t q_refused; /* connections answered at step 0, waiting for MHD to close */
    fg_tq_t q_body;    /* requests: next body byte due (body_timeout) */
    fg_tq_t q_lane;    /* requests: lane due (fence_wait) */
    fg_tq_t q_up;      /* transfers: upstream activity due (upstream_timeout) */
    fg_tq_t q_grace;   /* transfers after a 504: answer due (upstream_grace) */
    fg_tq_t q_linger;  /* lingering sockets */
    size_t nlinger;
};

/* Current monotonic ms (storage/store.h's clock). */
uint64_t fg_now_mono_ms(void);

/* ------------------------------------------------------------------ */
/* connections (front.c)                                                */

typedef enum conn_state {
    CONN_OPEN = 0, /* requests flow */
    CONN_REFUSED,  /* a step-0 answer was written; MHD is made to close */
} conn_state_t;

struct fg_conn {
    fg_engine_t *e;
    fg_conn_t *prev, *next;
    struct MHD_Connection *mc;
    int fd;
    conn_state_t state;
    fg_wire_t wire;
    uint32_t started;   /* requests MHD began (URI callback) */
    uint32_t completed; /* requests MHD finished */
    fg_req_t *cur;      /* the request MHD works on now, or NULL */
    /* a step-0 refusal waiting until the requests ahead of it are answered */
    bool err_pending;
    int err_status;
    const char *err_type, *err_title, *err_detail;
    fg_tq_item_t timer; /* in q_head or q_refused */
    uint64_t accepted_ms;
    char client[48];
};

/* ---- front.c ---- */
/* MHD callbacks (registered by fg_engine_create). */
void fg_front_notify_conn(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code);
void *fg_front_on_uri(void *cls, const char *uri, struct MHD_Connection *c);
enum MHD_Result fg_front_on_request(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls);
void fg_front_on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                           enum MHD_RequestTerminationCode toe);
size_t fg_front_no_unescape(void *cls, struct MHD_Connection *c, char *s);
/* Timer expiries (engine.c's sweep). */
void fg_front_head_timeout(fg_conn_t *c);
void fg_front_refused_timeout(fg_conn_t *c);
/* Cut the client connection of `c` now: write a problem answer first when
 * `status` is non-zero and nothing of a response was written yet. */
void fg_front_abort(fg_conn_t *c, int status, const char *type, const char *title,
                    const char *detail, bool nothing_sent);
/* The recv hook's entry: every socket read of the process comes here; reads
 * of client connections are checked (wire.c), others pass straight through. */
ssize_t fg_front_recv(int fd, void *buf, size_t len, int flags);
/* Start the hook table for fds up to the process's file limit. 0 or FG_ENOMEM. */
int fg_front_hook_init(void);
/* Whether the fencegate binary carries the recv hook (recv_hook.c). */
bool fg_front_hook_linked(void);

/* ---- engine.c ---- */
/* Keep a socket MHD is closing open for a while and drain it, so that a
 * client still sending does not turn our last answer into a reset. */
void fg_engine_linger(fg_engine_t *e, int fd);
/* Post `msg` for `r` to its engine's inbox (any thread) and wake the loop. */
void fg_engine_post(fg_req_t *r, int msg);
/* Wake the engine's loop (any thread). */
void fg_engine_wake(fg_engine_t *e);

/* ------------------------------------------------------------------ */
/* requests (request.c)                                                 */

typedef enum req_state {
    RS_NEW = 0, /* request line seen; head not yet handed to us */
    RS_AUDIT,   /* a refusal waits for its audit record */
    RS_LANE,    /* waits for the resource's lane (step 8) */
    RS_CHECK,   /* the fence check is at the store (step 7) */
    RS_REFUSE,  /* the answer is a problem, to be queued at MHD's next call */
    RS_DRAIN,   /* a refused request's small body is read and dropped; the
                   problem goes at the end, and the connection stays open */
    RS_FORWARD, /* the check passed: forwarding starts at MHD's next call */
    RS_UPLOAD,  /* forwarding: the body flows to the upstream */
    RS_WAIT,    /* the body is done; waiting for the upstream's answer */
    RS_RESPOND, /* an answer is queued with MHD and flowing to the client */
    RS_DONE,    /* MHD is done with it; freed once nothing is out (store job, lane) */
} req_state_t;

typedef enum req_event {
    EV_CALL = 1, /* MHD calls without body bytes: the head, after a resume, the end */
    EV_BODY,     /* MHD calls with body bytes */
    EV_UP_HEAD,  /* the upstream's answer head is here */
    EV_UP_DATA,  /* the upstream made room for more body, or sent answer bytes */
    EV_UP_END,   /* the upstream transfer ended, well or not */
    EV_GONE,     /* MHD is done with the request (answered, aborted, timed out) */
} req_event_t;

enum { MSG_JOB = 1, MSG_LANE };

struct fg_req {
    fg_engine_t *e;
    fg_req_t *prev, *next; /* engine list */
    fg_req_t *msg_next;    /* inbox */
    int msg;
    fg_conn_t *conn; /* NULL once MHD is done with it */
    struct MHD_Connection *mc;
    req_state_t st;
    fg_cfgref_t *cfg;
    fg_decision_t d;
    bool job_out;   /* a store job (audit or check) is out */
    bool lane_wait; /* queued for the lane; a grant may be in the inbox */
    bool lane_held; /* holds the lane (handed to the transfer when forwarding starts) */
    bool suspended; /* we suspended the MHD connection */
    bool body_end;  /* the client's body is complete */
    bool pooled;    /* goes back to the engine's free list */
    fg_lane_waiter_t lw;
    fg_tq_item_t timer; /* in q_lane or q_body */
    fg_job_t job;
    fg_upx_t *up;     /* the upstream transfer while attached */
    int64_t body_len; /* the client's framing: Content-Length, -1 chunked, -2 none */
    /* the body clock (step 0): time spent waiting for the client */
    uint64_t body_bytes, body_active_ms, body_since;
    /* the answer */
    fg_outcome_t outcome;
    int status;
    fg_problem_t prob;
    char detail[256];
    uint64_t t_start;
    uint64_t t_start_ns; /* the same moment, for the duration histogram (fg_metrics_now_ns) */
    char method[FG_WIRE_METHOD_MAX + 1];
    char reqid[72];
    char client[48];
    const char *raw; /* raw request target, in tail */
    size_t raw_len;
    char *path_buf; /* in tail */
    char *key_buf;  /* in tail */
    char tail[];
};

/* A fresh random request id (32 hex digits) into `out` (>= 33 bytes). */
void fg_req_new_id(char *out);
/* Create the request for the request line MHD just read (raw target `uri`). */
fg_req_t *fg_req_new(fg_engine_t *e, fg_conn_t *c, const char *uri);
/* Move `r` with event `ev` (see req_event_t). `data`/`len` only for EV_BODY,
 * where *len is updated to what was not taken. Returns the MHD result for
 * EV_CALL/EV_BODY (MHD_NO closes the connection). After EV_GONE `r` may be
 * freed. */
enum MHD_Result fg_req_on(fg_req_t *r, req_event_t ev, const char *data, size_t *len);
/* The inbox delivered message `msg` for `r`. */
void fg_req_inbox(fg_req_t *r, int msg);
/* Timer expiries. */
void fg_req_lane_timeout(fg_req_t *r);
void fg_req_body_timeout(fg_req_t *r);
/* Drain deadline: end the request now. */
void fg_req_shutdown(fg_req_t *r);

/* ------------------------------------------------------------------ */
/* upstream transfers (upstream.c)                                      */

typedef enum upx_state {
    UX_SENDING = 1, /* request head and body going out */
    UX_SENT,        /* the whole request was written to the upstream */
    UX_HEAD,        /* the answer's head arrived */
    UX_DONE,        /* complete */
    UX_FAILED,      /* broke (or timed out) before an answer; fail_status says which */
    UX_QUARANTINE,  /* timed out (504) after the whole request went out; its answer
                       may still come and is discarded; the lane stays held */
} upx_state_t;

typedef struct fg_ring {
    char *p;
    size_t head, len;
} fg_ring_t;

struct fg_upx {
    fg_engine_t *e;
    fg_upx_t *prev, *next;
    fg_req_t *req; /* NULL once detached (quarantine) or when the request ended */
    upx_state_t st;
    struct origin *o;
    fg_upconn_t *c;      /* the connection it runs on, NULL before launch or after */
    char *lane_key;      /* the lane this transfer holds, or NULL */
    bool lane_key_owned; /* lane_key is our copy (else the request's key_buf) */
    bool is_head;        /* HEAD request: no answer body */
    uint64_t t_start_ns; /* launched on a connection (fg_metrics_now_ns): the first-byte clock */
    int fail_status;
    char fail_detail[160];
    /* the request: head, then the body (small and whole, or streamed) */
    char *head;
    size_t head_len, head_off, head_cap;
    char *small; /* a known-length body of at most FG_RING_CAP, sent whole */
    size_t small_len, small_cap, small_off, small_want;
    bool small_mode;
    bool waiting_body; /* small: launched when the body is complete */
    fg_ring_t up;      /* a streamed body */
    bool chunked;      /* the streamed body goes out chunked */
    char frame[32];    /* chunk framing being written */
    size_t frame_len, frame_off, chunk_left;
    bool chunks_sent, final_sent;
    bool body_eof;  /* the client's body is complete */
    bool no_body;   /* the request has no body at all */
    bool body_room; /* body bytes left the ring: the request may go on */
    /* the answer */
    fg_ring_t down;
    bool write_paused;  /* the client is behind: the upstream is not read */
    fg_tq_item_t timer; /* in q_up or q_grace */
    long status;
    int64_t resp_len;
    char *rh; /* answer fields as "name\0value\0" pairs */
    size_t rh_len, rh_cap, field_at;
    bool rh_has_reqid;
    bool resp_eof, resp_err;
};

#define FG_RING_CAP (64 * 1024)

/*
 * Start the transfer for request `r` (its decision says where). Takes over
 * the request's lane. `small_len` >= 0: the body is that long and will be
 * handed over whole (fg_upx_body + eof) before the transfer starts. Returns 0
 * or FG_ENOMEM.
 */
int fg_upx_start(fg_req_t *r, int64_t content_length);
/* Hand client body bytes over; returns how many were taken (the rest waits). */
size_t fg_upx_body(fg_upx_t *u, const char *data, size_t len);
/* The client's body is complete. */
void fg_upx_body_end(fg_upx_t *u);
/* Read answer body bytes for MHD; 0 with *eof or *err set when none. */
size_t fg_upx_read(fg_upx_t *u, char *buf, size_t max, bool *eof, bool *err);
/* The request is gone (client left, or finished): end or detach the transfer. */
void fg_upx_release(fg_upx_t *u);
/* Timer expiries. */
void fg_upx_timeout(fg_upx_t *u);
void fg_upx_grace_over(fg_upx_t *u);
/* The loop: set up, an epoll event on an upstream connection, tear down. */
int fg_upx_init(fg_engine_t *e);
void fg_upx_event(fg_upconn_t *c, uint32_t events);
void fg_upx_reap(fg_engine_t *e); /* free connections closed in this round */
void fg_upx_free_all(fg_engine_t *e);

/* ------------------------------------------------------------------ */
/* checks on the loop (storeloop.c)                                     */

/* For a store with an event-loop mode (Redis): a connection of this engine's
 * own. *out stays NULL (and 0 is returned) for a store without one. */
int fg_sloop_new(fg_engine_t *e, const char *url, const fg_store_opts_t *o, fg_sloop_t **out);
/* Ask for the first connection (a store thread makes it). */
void fg_sloop_start(fg_sloop_t *sl);
/* Queue r->job.check on the loop's connection: 0 (the answer comes through
 * fg_req_inbox), or FG_EUNAVAIL when the connection is not up (then take the
 * store threads' path). */
int fg_sloop_check(fg_sloop_t *sl, fg_req_t *r);
/* End of a loop round: write what was queued. */
void fg_sloop_flush(fg_sloop_t *sl);
/* An epoll event on the connection. */
void fg_sloop_event(fg_sloop_t *sl, uint32_t events);
/* Take up a connection a store thread made (from the inbox wake-up). */
void fg_sloop_connected(fg_sloop_t *sl);
/* Deadlines: fail everything when the oldest check waited state_timeout. */
void fg_sloop_tick(fg_sloop_t *sl, uint64_t now, uint64_t state_timeout_ms);
/* Fail every check still waiting (at shutdown, while MHD still runs). */
void fg_sloop_abort(fg_sloop_t *sl);
void fg_sloop_free(fg_sloop_t *sl);

#endif
