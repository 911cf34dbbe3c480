/*
 * fuzz_front.c -- the request front end: raw bytes in, decision out.
 *
 * The fence holds only if the strict wire check (gateway/wire.c) and
 * libmicrohttpd, which parses what passed, agree on every message: where it
 * starts and ends, its method, its target and its body. A disagreement is a
 * request smuggled past the check. For each input this harness
 *
 *  1. feeds the bytes to fg_wire whole, in two pieces split where the input
 *     says, and one byte at a time: the verdict (accepted bytes, error status,
 *     message counts) must not depend on how the bytes were cut;
 *  2. when the check accepts whole messages, sends those bytes through a real
 *     libmicrohttpd daemon (socketpair, external select, the gateway's
 *     no-unescape callback) and compares what MHD parsed, message by message,
 *     with the messages the wire check saw: MHD's messages must be a prefix of
 *     the wire's (MHD may stop early, on Connection: close), each with the
 *     same method, raw target and body length.
 */
#include <microhttpd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "gateway/wire.h"

#define MAX_MSGS 64

typedef struct msg {
    size_t start, end; /* offsets of the message in the input */
    uint64_t body;
} msg_t;

typedef struct seen {
    char method[40];
    char target[512];
    bool long_target;
    uint64_t body;
    bool completed; /* MHD finished it normally (its last call came, it was answered) */
    bool closes;    /* Connection: close, or HTTP/1.0 without keep-alive: MHD stops after it */
} seen_t;

typedef struct mhd_run {
    seen_t msgs[MAX_MSGS];
    size_t n, completed;
    bool closed;
} mhd_run_t;

/* ---- the wire check, three ways ---- */

typedef struct verdict {
    size_t accepted;
    int status;
    uint32_t begun, heads, done;
} verdict_t;

static verdict_t feed_split(const uint8_t *d, size_t n, size_t cut)
{
    fg_wire_t w;
    fg_wire_init(&w);
    verdict_t v = {0};
    size_t a = fg_wire_feed(&w, (const char *)d, cut);
    if (a == cut && cut < n) a = cut + fg_wire_feed(&w, (const char *)d + cut, n - cut);
    v.accepted = a;
    v.status = fg_wire_failed(&w) ? w.status : 0;
    v.begun = w.begun, v.heads = w.heads, v.done = w.done;
    return v;
}

/* Byte by byte, noting where messages start and end. */
static verdict_t feed_bytes(const uint8_t *d, size_t n, msg_t *msgs, size_t *nmsgs)
{
    fg_wire_t w;
    fg_wire_init(&w);
    verdict_t v = {0};
    *nmsgs = 0;
    size_t i = 0;
    for (; i < n; i++) {
        uint32_t begun = w.begun, done = w.done;
        if (fg_wire_feed(&w, (const char *)d + i, 1) != 1) break;
        if (w.begun != begun && *nmsgs < MAX_MSGS) msgs[*nmsgs].start = i;
        if (w.done != done && *nmsgs < MAX_MSGS) {
            msgs[*nmsgs].end = i + 1;
            msgs[*nmsgs].body = w.body;
            (*nmsgs)++;
        }
    }
    v.accepted = i;
    v.status = fg_wire_failed(&w) ? w.status : 0;
    v.begun = w.begun, v.heads = w.heads, v.done = w.done;
    return v;
}

/* ---- libmicrohttpd on the same bytes ---- */

typedef struct req {
    mhd_run_t *run;
    size_t idx;
    bool started;
} req_t;

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)c;
    mhd_run_t *run = cls;
    req_t *r = calloc(1, sizeof *r);
    CHECK(r);
    r->run = run;
    r->idx = run->n;
    if (run->n < MAX_MSGS) {
        seen_t *s = &run->msgs[run->n];
        memset(s, 0, sizeof *s);
        size_t ul = strlen(uri);
        s->long_target = ul >= sizeof s->target;
        memcpy(s->target, uri, s->long_target ? sizeof s->target - 1 : ul);
    }
    run->n++;
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)cls, (void)url, (void)version, (void)upload;
    req_t *r = *con_cls;
    if (!r) return MHD_NO;
    seen_t *s = r->idx < MAX_MSGS ? &r->run->msgs[r->idx] : NULL;
    if (!r->started) { /* the head: note it, let MHD read the body */
        r->started = true;
        if (s) {
            size_t ml = strlen(method);
            memcpy(s->method, method, ml < sizeof s->method ? ml : sizeof s->method - 1);
            const char *conn = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Connection");
            bool ka = conn && strcasestr(conn, "keep-alive");
            s->closes =
                (conn && strcasestr(conn, "close")) || (strcmp(version, "HTTP/1.0") == 0 && !ka);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (s) s->body += *upload_size;
        *upload_size = 0;
        return MHD_YES;
    }
    static const char ok[] = "ok"; /* the request is complete: answer it */
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(sizeof ok - 1, (void *)ok, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)c;
    req_t *r = *con_cls;
    if (r && r->idx < MAX_MSGS && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        r->run->msgs[r->idx].completed = true;
        r->run->completed++;
    }
    free(*con_cls);
    *con_cls = NULL;
}

static void on_conn(void *cls, struct MHD_Connection *c, void **sc,
                    enum MHD_ConnectionNotificationCode code)
{
    (void)c, (void)sc;
    mhd_run_t *run = cls;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) run->closed = true;
}

static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls, (void)c;
    return strlen(s);
}

/* Send the bytes to a fresh daemon and run it until it has finished `want`
 * messages or closed the connection. The client side stays open (an early
 * end-of-file would make MHD abort a request waiting for a 100-continue body
 * that the client never sends, which is not what this harness is about). */
static void run_mhd(const uint8_t *d, size_t n, size_t want, mhd_run_t *run)
{
    memset(run, 0, sizeof *run);
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    struct MHD_Daemon *dm = MHD_start_daemon(
        MHD_USE_NO_LISTEN_SOCKET, 0, NULL, NULL, on_request, NULL, MHD_OPTION_URI_LOG_CALLBACK,
        on_uri, run, MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, NULL, MHD_OPTION_NOTIFY_CONNECTION, on_conn, run,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(20 * 1024), MHD_OPTION_END);
    CHECK(dm);
    struct sockaddr_storage sa = {.ss_family = AF_UNIX};
    CHECK(MHD_add_connection(dm, sv[1], (struct sockaddr *)&sa, sizeof(sa_family_t)) == MHD_YES);
    size_t off = 0;
    char sink[4096];
    for (int round = 0; round < 2000 && !run->closed && run->completed < want; round++) {
        if (off < n) {
            ssize_t w = send(sv[0], d + off, n - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0) off += (size_t)w;
        }
        MHD_run(dm);
        while (recv(sv[0], sink, sizeof sink, MSG_DONTWAIT) > 0) {
        }
    }
    MHD_stop_daemon(dm);
    close(sv[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384) return 0;
    /* 1: the verdict does not depend on where the bytes are cut */
    msg_t msgs[MAX_MSGS];
    size_t nmsgs = 0;
    verdict_t whole = feed_split(data, size, size);
    verdict_t split = feed_split(data, size, size ? data[0] % size : 0);
    verdict_t bytes = feed_bytes(data, size, msgs, &nmsgs);
    CHECK(whole.accepted == split.accepted && whole.accepted == bytes.accepted);
    CHECK(whole.status == split.status && whole.status == bytes.status);
    CHECK(whole.done == bytes.done && whole.heads == bytes.heads && whole.begun == bytes.begun);
    CHECK(whole.done <= whole.heads && whole.heads <= whole.begun);
    CHECK(whole.accepted <= size);
    if (whole.status) CHECK(whole.status == 400 || whole.status == 414 || whole.status == 431);

    /* 2: MHD reads the accepted whole messages the same way */
    if (nmsgs == 0 || nmsgs >= MAX_MSGS) return 0;
    size_t end = msgs[nmsgs - 1].end;
    mhd_run_t run;
    run_mhd(data, end, nmsgs, &run);
    if (getenv("FUZZ_FRONT_DEBUG")) {
        fprintf(stderr, "wire: %zu messages; mhd: %zu\n", nmsgs, run.n);
        for (size_t i = 0; i < run.n && i < MAX_MSGS; i++)
            fprintf(stderr,
                    "  mhd %zu: method '%s' target '%s' body %llu completed %d closes %d "
                    "(wire body %llu)\n",
                    i, run.msgs[i].method, run.msgs[i].target, (unsigned long long)run.msgs[i].body,
                    run.msgs[i].completed, run.msgs[i].closes, (unsigned long long)msgs[i].body);
    }
    CHECK(run.n <= nmsgs); /* MHD never sees a message the check did not */
    CHECK(run.n > 0);
    for (size_t i = 0; i < run.n; i++) {
        const char *m = (const char *)data + msgs[i].start;
        size_t ml = msgs[i].end - msgs[i].start;
        while (ml >= 2 && m[0] == '\r' && m[1] == '\n') m += 2, ml -= 2; /* empty lines */
        const char *sp1 = memchr(m, ' ', ml);
        CHECK(sp1);
        const char *sp2 = memchr(sp1 + 1, ' ', ml - (size_t)(sp1 + 1 - m));
        CHECK(sp2);
        size_t meth = (size_t)(sp1 - m), tl = (size_t)(sp2 - sp1 - 1);
        /* every message MHD began, it parsed as the check did and finished */
        CHECK(run.msgs[i].completed);
        CHECK(strlen(run.msgs[i].method) == meth && memcmp(run.msgs[i].method, m, meth) == 0);
        if (!run.msgs[i].long_target)
            CHECK(strlen(run.msgs[i].target) == tl && memcmp(run.msgs[i].target, sp1 + 1, tl) == 0);
        CHECK(run.msgs[i].body == msgs[i].body);
    }
    /* MHD stops before the check's last message only after one that closes */
    if (run.n < nmsgs) CHECK(run.msgs[run.n - 1].closes);
    return 0;
}
