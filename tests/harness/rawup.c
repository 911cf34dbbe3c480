/*
 * rawup.c -- an upstream that records the exact bytes it receives.
 *
 * The adversarial tests must prove what reached the upstream byte for byte,
 * so this upstream keeps every byte of every connection, in arrival order.
 * It frames requests with libhttp-parser (Debian's libhttp-parser-dev) and
 * answers each complete one with a small 200, so the gateway in front of it
 * behaves as with any store. One thread, poll(), loopback only.
 *
 * A few targets make it misbehave the way real servers do, for the tests of
 * the gateway's upstream client (the marker may appear anywhere in the target):
 *   up304     answers 304 with the Content-Length of a 1234-byte resource;
 *   up101, up000  answer 101 Switching Protocols (nothing asked to switch) or
 *             a status of 000;
 *   headbody  answers with Content-Length: 11 and no body, then sends the 11
 *             bytes ("hello world") late: just before its next answer on the
 *             same connection (a server that writes a body after HEAD);
 *   forge16k  answers a 200 of exactly 16384 bytes and, in the same write, a
 *             second, unasked-for answer whose body is "EVIL".
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness/harness.h"

#define RAWUP_CONNS 256

typedef struct rconn {
    int fd;
    http_parser p;
    struct fgt_rawup *up;
    bool broken;
    char url[512]; /* the current request's target (cut at 511 bytes) */
    size_t url_len;
    bool stray; /* owes "hello world" before its next answer (headbody) */
} rconn_t;

struct fgt_rawup {
    int lfd, port;
    int wake[2];
    pthread_t th;
    pthread_mutex_t mu;
    rconn_t conns[RAWUP_CONNS];
    size_t nconns;
    char *bytes; /* everything received, all connections, arrival order */
    size_t len, cap;
    long requests;    /* complete requests */
    long connections; /* accepted */
    bool stop;
    char resp[16384 + 128]; /* the answer being sent (rawup thread only) */
};

static int on_begin(http_parser *p)
{
    rconn_t *c = p->data;
    c->url_len = 0;
    c->url[0] = '\0';
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    rconn_t *c = p->data;
    if (n > sizeof c->url - 1 - c->url_len) n = sizeof c->url - 1 - c->url_len;
    memcpy(c->url + c->url_len, at, n);
    c->url_len += n;
    c->url[c->url_len] = '\0';
    return 0;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

static int on_complete(http_parser *p)
{
    rconn_t *c = p->data;
    pthread_mutex_lock(&c->up->mu);
    long n = ++c->up->requests;
    pthread_mutex_unlock(&c->up->mu);
    char *resp = c->up->resp;
    const size_t cap = sizeof c->up->resp;
    int rl;
    if (strstr(c->url, "up101") || strstr(c->url, "up000")) {
        rl = snprintf(
            resp, cap, "HTTP/1.1 %s\r\nX-Upstream-Seq: %ld\r\n\r\n",
            strstr(c->url, "up101") ? "101 Switching Protocols\r\nUpgrade: x" : "000 Zero", n);
    } else if (strstr(c->url, "up304")) {
        rl = snprintf(resp, cap,
                      "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nX-Upstream-Seq: %ld\r\n"
                      "Content-Length: 1234\r\n\r\n",
                      n);
    } else if (strstr(c->url, "headbody")) {
        rl = snprintf(resp, cap,
                      "HTTP/1.1 200 OK\r\nX-Upstream-Seq: %ld\r\nContent-Length: 11\r\n\r\n", n);
    } else if (strstr(c->url, "forge16k")) {
        int hl = snprintf(resp, cap,
                          "HTTP/1.1 200 OK\r\nX-Upstream-Seq: %ld\r\nContent-Length: %05d\r\n\r\n",
                          n, 0);
        int body = 16384 - hl;
        snprintf(resp, cap,
                 "HTTP/1.1 200 OK\r\nX-Upstream-Seq: %ld\r\nContent-Length: %05d\r\n\r\n", n, body);
        memset(resp + hl, 'b', (size_t)body);
        rl = 16384 + snprintf(resp + 16384, cap - 16384,
                              "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Evil: 1\r\n\r\nEVIL\n");
    } else {
        rl = snprintf(resp, cap,
                      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Upstream-Seq: %ld\r\n"
                      "Content-Length: 3\r\n\r\nok\n",
                      n);
    }
    if (c->stray) send_all(c->fd, "hello world", 11);
    c->stray = strstr(c->url, "headbody") != NULL;
    send_all(c->fd, resp, (size_t)rl);
    return 0;
}

long fgt_rawup_connections(fgt_rawup_t *u)
{
    pthread_mutex_lock(&u->mu);
    long n = u->connections;
    pthread_mutex_unlock(&u->mu);
    return n;
}

static void record(fgt_rawup_t *u, const char *p, size_t n)
{
    pthread_mutex_lock(&u->mu);
    if (u->len + n + 1 > u->cap) {
        size_t nc = u->cap ? u->cap * 2 : 65536;
        while (nc < u->len + n + 1) nc *= 2;
        char *nb = realloc(u->bytes, nc);
        if (nb) {
            u->bytes = nb;
            u->cap = nc;
        }
    }
    if (u->len + n + 1 <= u->cap) {
        memcpy(u->bytes + u->len, p, n);
        u->len += n;
        u->bytes[u->len] = '\0';
    }
    pthread_mutex_unlock(&u->mu);
}

static void *rawup_main(void *arg)
{
    fgt_rawup_t *u = arg;
    http_parser_settings st;
    memset(&st, 0, sizeof st);
    st.on_message_begin = on_begin;
    st.on_url = on_url;
    st.on_message_complete = on_complete;
    struct pollfd pf[RAWUP_CONNS + 2];
    char buf[65536];
    while (!__atomic_load_n(&u->stop, __ATOMIC_ACQUIRE)) {
        size_t n = 0;
        pf[n++] = (struct pollfd){u->wake[0], POLLIN, 0};
        pf[n++] = (struct pollfd){u->lfd, POLLIN, 0};
        for (size_t i = 0; i < u->nconns; i++) pf[n++] = (struct pollfd){u->conns[i].fd, POLLIN, 0};
        if (poll(pf, n, 1000) < 0) continue;
        if (pf[1].revents & POLLIN) {
            int fd = accept(u->lfd, NULL, NULL);
            if (fd >= 0 && u->nconns < RAWUP_CONNS) {
                rconn_t *c = &u->conns[u->nconns++];
                memset(c, 0, sizeof *c);
                c->fd = fd;
                c->up = u;
                http_parser_init(&c->p, HTTP_REQUEST);
                c->p.data = c;
                pthread_mutex_lock(&u->mu);
                u->connections++;
                pthread_mutex_unlock(&u->mu);
            } else if (fd >= 0) {
                close(fd);
            }
        }
        for (size_t i = 2; i < n; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            rconn_t *c = &u->conns[i - 2];
            ssize_t r = recv(c->fd, buf, sizeof buf, 0);
            if (r > 0) {
                record(u, buf, (size_t)r);
                if (!c->broken && http_parser_execute(&c->p, &st, buf, (size_t)r) != (size_t)r)
                    c->broken = true; /* keep recording; answer nothing more */
                continue;
            }
            close(c->fd);
            c->fd = -1;
        }
        /* drop closed connections */
        size_t k = 0;
        for (size_t i = 0; i < u->nconns; i++) {
            if (u->conns[i].fd < 0) continue;
            if (k != i) {
                u->conns[k] = u->conns[i];
                u->conns[k].p.data = &u->conns[k];
            }
            k++;
        }
        u->nconns = k;
    }
    for (size_t i = 0; i < u->nconns; i++) close(u->conns[i].fd);
    return NULL;
}

fgt_rawup_t *fgt_rawup_start(void)
{
    fgt_rawup_t *u = calloc(1, sizeof *u);
    cr_assert(u);
    pthread_mutex_init(&u->mu, NULL);
    cr_assert_eq(pipe(u->wake), 0);
    u->lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(u->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(u->lfd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(u->lfd, (struct sockaddr *)&a, &al);
    u->port = ntohs(a.sin_port);
    cr_assert_eq(listen(u->lfd, 128), 0);
    cr_assert_eq(pthread_create(&u->th, NULL, rawup_main, u), 0);
    return u;
}

int fgt_rawup_port(const fgt_rawup_t *u)
{
    return u->port;
}

char *fgt_rawup_bytes(fgt_rawup_t *u, size_t *len)
{
    pthread_mutex_lock(&u->mu);
    char *copy = malloc(u->len + 1);
    cr_assert(copy);
    if (u->len) memcpy(copy, u->bytes, u->len);
    copy[u->len] = '\0';
    if (len) *len = u->len;
    pthread_mutex_unlock(&u->mu);
    return copy;
}

long fgt_rawup_requests(fgt_rawup_t *u)
{
    pthread_mutex_lock(&u->mu);
    long n = u->requests;
    pthread_mutex_unlock(&u->mu);
    return n;
}

void fgt_rawup_stop(fgt_rawup_t *u)
{
    if (!u) return;
    __atomic_store_n(&u->stop, true, __ATOMIC_RELEASE);
    ssize_t w = write(u->wake[1], "x", 1);
    (void)w;
    pthread_join(u->th, NULL);
    close(u->lfd);
    close(u->wake[0]);
    close(u->wake[1]);
    free(u->bytes);
    pthread_mutex_destroy(&u->mu);
    free(u);
}
