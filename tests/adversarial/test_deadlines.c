/*
 * test_deadlines.c -- SPEC step 0 deadlines: a request head must arrive whole
 * within header_timeout, a body must keep flowing (body_timeout between bytes,
 * body_min_rate on average). A client that trickles gets a 408, its
 * connection is closed, the resource's place in line is given back, and
 * nothing of its write completes at the upstream. Every wait here polls for
 * what the test expects with a deadline; nothing sleeps to synchronise.
 */
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "adv.h"

static adv_t A;

#define TRICKLERS 64

typedef struct trickler {
    int fd;
    int status;  /* of the answer, when it came */
    bool closed; /* the gateway closed the connection */
} trickler_t;

/* Send `msg` one byte every `every_ms`, until the gateway answers or closes
 * (or `max_ms` passes). The pauses are the attack itself, not synchronisation. */
static void trickle(trickler_t *t, const char *msg, int every_ms, int max_ms)
{
    size_t len = strlen(msg), at = 0;
    char buf[4096];
    size_t got = 0;
    for (int waited = 0; waited < max_ms; waited += every_ms) {
        if (at < len) {
            if (send(t->fd, msg + at, 1, MSG_NOSIGNAL) != 1) {
                t->closed = true;
                break;
            }
            at++;
        }
        struct pollfd p = {t->fd, POLLIN, 0};
        if (poll(&p, 1, every_ms) > 0) {
            ssize_t n = recv(t->fd, buf + got, sizeof buf - 1 - got, 0);
            if (n <= 0) {
                t->closed = true;
                break;
            }
            got += (size_t)n;
            buf[got] = '\0';
            t->status = adv_status(buf);
        }
    }
}

typedef struct slowloris_arg {
    trickler_t *t;
} slowloris_arg_t;

static void *slowloris(void *arg)
{
    trickler_t *t = arg;
    trickle(t, "GET /orders/1 HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n\r\n", 150, 20000);
    return NULL;
}

Test(deadlines, slow_heads_are_cut_and_others_still_served, .timeout = 120)
{
    adv_start(&A, "header_timeout = 1s\nmax_connections = 1024\n", NULL);
    trickler_t t[TRICKLERS];
    pthread_t th[TRICKLERS];
    for (int i = 0; i < TRICKLERS; i++) {
        t[i] = (trickler_t){.fd = fgt_raw_connect(A.gw.port)};
        pthread_create(&th[i], NULL, slowloris, &t[i]);
    }
    /* while they trickle, a normal client and the admin probe are served */
    const char *g = "GET /orders/2 HTTP/1.1\r\nHost: x\r\n\r\n";
    char *r = fgt_raw_request(A.gw.port, g, strlen(g), 3000);
    cr_assert_eq(adv_status(r), 200, "%s", r);
    free(r);
    char url[128];
    snprintf(url, sizeof url, "%s/healthz", A.gw.admin_url);
    fgt_resp_t h = fgt_http("GET", url, NULL, NULL, 0);
    cr_assert_eq(h.status, 200);
    fgt_resp_free(&h);
    for (int i = 0; i < TRICKLERS; i++) {
        pthread_join(th[i], NULL);
        cr_expect_eq(t[i].status, 408, "trickler %d got %d", i, t[i].status);
        cr_expect(t[i].closed, "trickler %d was not disconnected", i);
        close(t[i].fd);
    }
    size_t len = 0;
    char *up = adv_upstream(&A, &len);
    cr_assert_null(strstr(up, "X-Slow"), "a trickled head reached the upstream");
    cr_assert_eq(fgt_rawup_requests(A.up), 1);
    free(up);
    adv_stop(&A);
}

/* A connection that sends nothing at all is closed after header_timeout. */
Test(deadlines, a_silent_connection_gets_408, .timeout = 60)
{
    adv_start(&A, "header_timeout = 500ms\n", NULL);
    int fd = fgt_raw_connect(A.gw.port);
    bool closed = false;
    char *r = fgt_raw_read_all(fd, 10000, &closed);
    cr_assert(closed, "still open");
    cr_assert_eq(adv_status(r), 408, "%s", r);
    cr_assert(strstr(r, "urn:fencegate:problem:request-timeout"), "%s", r);
    free(r);
    close(fd);
    adv_stop(&A);
}

/* On a keep-alive connection the next head's clock starts at its first byte:
 * a client that is idle between requests is not cut for being idle. */
Test(deadlines, keep_alive_idle_time_is_not_head_time, .timeout = 60)
{
    adv_start(&A, "header_timeout = 1s\n", NULL);
    int fd = fgt_raw_connect(A.gw.port);
    const char *g = "GET /orders/2 HTTP/1.1\r\nHost: x\r\n\r\n";
    cr_assert_eq(send(fd, g, strlen(g), 0), (ssize_t)strlen(g));
    /* wait for the first answer, then stay idle past header_timeout: the
     * upstream's count tells when the first request went through */
    char buf[2048];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    cr_assert_gt(n, 0);
    buf[n] = '\0';
    cr_assert_eq(adv_status(buf), 200, "%s", buf);
    struct pollfd p = {fd, POLLIN, 0};
    cr_assert_eq(poll(&p, 1, 1500), 0, "the gateway spoke or closed during keep-alive idle");
    cr_assert_eq(send(fd, g, strlen(g), 0), (ssize_t)strlen(g));
    n = recv(fd, buf, sizeof buf - 1, 0);
    cr_assert_gt(n, 0);
    buf[n] = '\0';
    cr_assert_eq(adv_status(buf), 200, "%s", buf);
    close(fd);
    cr_assert_eq(fgt_rawup_requests(A.up), 2);
    adv_stop(&A);
}

/* A write whose body trickles gets a 408, nothing of it completes upstream,
 * and its resource is free again at once. */
Test(deadlines, a_trickled_body_gives_back_the_lane, .timeout = 60)
{
    adv_start(&A, "body_timeout = 1s\nbody_min_rate = 100\nfence_wait = 30s\n", NULL);
    trickler_t t = {.fd = fgt_raw_connect(A.gw.port)};
    const char *head = "PUT /orders/7 HTTP/1.1\r\nHost: x\r\nFencing-Token: 5\r\n"
                       "Content-Length: 1000\r\n\r\n";
    cr_assert_eq(send(t.fd, head, strlen(head), 0), (ssize_t)strlen(head));
    static char body[1001];
    memset(body, 'z', 1000);
    trickle(&t, body, 200, 20000); /* 5 bytes/s: far under 100 bytes/s */
    cr_assert_eq(t.status, 408);
    cr_assert(t.closed);
    close(t.fd);
    /* the lane is free: the next write of the resource is forwarded */
    const char *w = "PUT /orders/7 HTTP/1.1\r\nHost: x\r\nFencing-Token: 6\r\n"
                    "Content-Length: 2\r\n\r\nok";
    char *r = fgt_raw_request(A.gw.port, w, strlen(w), 5000);
    cr_assert_eq(adv_status(r), 200, "%s", r);
    free(r);
    size_t len = 0;
    char *up = adv_upstream(&A, &len);
    cr_assert_eq(fgt_rawup_requests(A.up), 1, "upstream:\n%s", up);
    cr_assert_null(strstr(up, "Fencing-Token: 5\r\n"), "the trickled write reached the upstream");
    free(up);
    adv_stop(&A);
}

/* A body that stops half-way (a large one, already streaming upstream): 408,
 * and the upstream sees a short body and a closed connection. */
Test(deadlines, a_stalled_streaming_body_is_cut, .timeout = 60)
{
    adv_start(&A, "body_timeout = 500ms\nunmatched_writes = forward\n", NULL);
    int fd = fgt_raw_connect(A.gw.port);
    static char part[150000];
    int n = snprintf(part, sizeof part,
                     "PUT /free/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n");
    memset(part + n, 'q', 100000);
    n += 100000;
    size_t off = 0;
    while (off < (size_t)n) {
        ssize_t w = send(fd, part + off, (size_t)n - off, 0);
        cr_assert_gt(w, 0);
        off += (size_t)w;
    }
    bool closed = false;
    char *r = fgt_raw_read_all(fd, 10000, &closed);
    cr_assert(closed);
    cr_assert_eq(adv_status(r), 408, "%s", r);
    free(r);
    close(fd);
    cr_assert_eq(fgt_rawup_requests(A.up), 0, "a complete request reached the upstream");
    adv_stop(&A);
}
