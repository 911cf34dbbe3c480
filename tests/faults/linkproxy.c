/*
 * linkproxy.c -- a TCP relay between the gateway and its state store, so the
 * nemesis can break the link while both processes keep running: cut it (close
 * every connection, refuse new ones), stall it (keep the connections, move no
 * bytes) or trickle it (one byte per direction every TRICKLE_MS).
 *
 * One thread and one poll loop; a pipe wakes it when the mode changes. Bounded:
 * at most LINK_MAX_PAIRS connections (more are closed at once) and LINK_BUF
 * bytes held per direction. A connection whose either side ends is closed on
 * both sides, as a broken link would be.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "faults.h"

#define LINK_MAX_PAIRS 64
#define LINK_BUF       16384
#define TRICKLE_MS     100

typedef struct dir {
    char buf[LINK_BUF];
    size_t off, len;
    int64_t next_ms; /* trickle: earliest time of the next byte */
} dir_t;

/* fd[0] is the gateway's side, fd[1] the store's; d[k] carries bytes read from
 * fd[k] to fd[1 - k]. */
typedef struct pair {
    int fd[2];
    bool connecting;
    dir_t d[2];
} pair_t;

struct fc_link {
    pthread_t th;
    int lfd, wake[2], target_port, port;
    atomic_int mode;
    atomic_bool stop;
    pair_t *pairs[LINK_MAX_PAIRS];
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pair_close(fc_link_t *l, size_t i)
{
    pair_t *p = l->pairs[i];
    if (!p) return;
    close(p->fd[0]);
    close(p->fd[1]);
    free(p);
    l->pairs[i] = NULL;
}

static void close_all(fc_link_t *l)
{
    for (size_t i = 0; i < LINK_MAX_PAIRS; i++) pair_close(l, i);
}

static void on_accept(fc_link_t *l, fc_link_mode_t mode)
{
    int cfd = accept4(l->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0) return;
    size_t slot = LINK_MAX_PAIRS;
    for (size_t i = 0; i < LINK_MAX_PAIRS && slot == LINK_MAX_PAIRS; i++)
        if (!l->pairs[i]) slot = i;
    int sfd = -1;
    if (mode != FC_LINK_CUT_MODE && slot < LINK_MAX_PAIRS)
        sfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    pair_t *p = sfd >= 0 ? calloc(1, sizeof *p) : NULL;
    if (!p) {
        if (sfd >= 0) close(sfd);
        close(cfd);
        return;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)l->target_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(sfd, (struct sockaddr *)&a, sizeof a);
    if (rc != 0 && errno != EINPROGRESS) { /* the store is down: so is the link */
        close(sfd);
        close(cfd);
        free(p);
        return;
    }
    p->fd[0] = cfd;
    p->fd[1] = sfd;
    p->connecting = rc != 0;
    l->pairs[slot] = p;
}

/* Move bytes of one pair after poll. Returns false when the pair must close. */
static bool pair_io(pair_t *p, const short revents[2], fc_link_mode_t mode, int64_t now)
{
    if (p->connecting) {
        if (!(revents[1] & (POLLOUT | POLLERR | POLLHUP))) return true;
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(p->fd[1], SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err) return false;
        p->connecting = false;
        return true;
    }
    for (int k = 0; k < 2; k++) {
        dir_t *d = &p->d[k];
        int src = p->fd[k], dst = p->fd[1 - k];
        if (d->len == 0 && (revents[k] & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = recv(src, d->buf, sizeof d->buf, 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return false;
            if (n > 0) {
                d->off = 0;
                d->len = (size_t)n;
            }
        }
        if (d->len > 0 && (revents[1 - k] & (POLLOUT | POLLERR | POLLHUP))) {
            size_t want = mode == FC_LINK_TRICKLE_MODE ? 1 : d->len;
            ssize_t n = send(dst, d->buf + d->off, want, MSG_NOSIGNAL);
            if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
            if (n > 0) {
                d->off += (size_t)n;
                d->len -= (size_t)n;
                d->next_ms = now + TRICKLE_MS;
            }
        }
    }
    return true;
}

static void *link_main(void *arg)
{
    fc_link_t *l = arg;
    struct pollfd pfd[2 + 2 * LINK_MAX_PAIRS];
    size_t owner[2 + 2 * LINK_MAX_PAIRS];
    while (!atomic_load(&l->stop)) {
        fc_link_mode_t mode = (fc_link_mode_t)atomic_load(&l->mode);
        if (mode == FC_LINK_CUT_MODE) close_all(l);
        int64_t now = mono_ms();
        int timeout = 1000;
        nfds_t n = 0;
        pfd[n++] = (struct pollfd){l->wake[0], POLLIN, 0};
        pfd[n++] = (struct pollfd){l->lfd, POLLIN, 0};
        for (size_t i = 0; i < LINK_MAX_PAIRS; i++) {
            pair_t *p = l->pairs[i];
            if (!p || mode == FC_LINK_STALL_MODE) continue; /* stalled: not even polled */
            short ev[2] = {0, 0};
            if (p->connecting) {
                ev[1] = POLLOUT;
            } else {
                for (int k = 0; k < 2; k++) {
                    const dir_t *d = &p->d[k];
                    if (d->len == 0)
                        ev[k] |= POLLIN;
                    else if (mode == FC_LINK_PASS || now >= d->next_ms)
                        ev[1 - k] |= POLLOUT;
                    else if (d->next_ms - now < timeout)
                        timeout = (int)(d->next_ms - now);
                }
            }
            for (int k = 0; k < 2; k++) {
                owner[n] = i;
                pfd[n++] = (struct pollfd){ev[k] ? p->fd[k] : -1, ev[k], 0};
            }
        }
        if (poll(pfd, n, timeout) < 0 && errno != EINTR) break;
        if (pfd[0].revents & POLLIN) {
            char drain[64];
            while (read(l->wake[0], drain, sizeof drain) > 0) {
            }
            continue; /* the mode may have changed: rebuild the poll set */
        }
        now = mono_ms();
        for (nfds_t j = 2; j + 1 < n; j += 2) {
            size_t i = owner[j];
            short rev[2] = {pfd[j].revents, pfd[j + 1].revents};
            if (l->pairs[i] && (rev[0] || rev[1]) && !pair_io(l->pairs[i], rev, mode, now))
                pair_close(l, i);
        }
        if (pfd[1].revents & POLLIN) on_accept(l, mode);
    }
    close_all(l);
    return NULL;
}

fc_link_t *fc_link_start(int target_port)
{
    fc_link_t *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->target_port = target_port;
    l->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (l->lfd < 0 || bind(l->lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(l->lfd, 128) != 0 || getsockname(l->lfd, (struct sockaddr *)&a, &al) != 0 ||
        pipe2(l->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        if (l->lfd >= 0) close(l->lfd);
        free(l);
        return NULL;
    }
    l->port = ntohs(a.sin_port);
    atomic_init(&l->mode, FC_LINK_PASS);
    atomic_init(&l->stop, false);
    if (pthread_create(&l->th, NULL, link_main, l) != 0) {
        close(l->lfd);
        close(l->wake[0]);
        close(l->wake[1]);
        free(l);
        return NULL;
    }
    return l;
}

int fc_link_port(const fc_link_t *l)
{
    return l->port;
}

void fc_link_set(fc_link_t *l, fc_link_mode_t mode)
{
    atomic_store(&l->mode, (int)mode);
    ssize_t w = write(l->wake[1], "m", 1);
    (void)w; /* a full pipe already wakes the thread */
}

void fc_link_stop(fc_link_t *l)
{
    if (!l) return;
    atomic_store(&l->stop, true);
    fc_link_set(l, FC_LINK_PASS);
    pthread_join(l->th, NULL);
    close(l->lfd);
    close(l->wake[0]);
    close(l->wake[1]);
    free(l);
}
