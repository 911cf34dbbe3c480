/*
 * holdconns.c -- open N keep-alive client connections, do one GET on each,
 * and hold them all idle until told to stop: bench/memory.sh measures the
 * gateway's resident memory while they are held.
 *
 *   gcc -O2 -o holdconns bench/holdconns.c
 *   holdconns HOST PORT N [PATH_PREFIX]        (PATH_PREFIX default /orders/)
 *
 * Connection i sends "GET <PATH_PREFIX><i> HTTP/1.1" and reads the whole
 * answer (Content-Length or chunked). When all N are done it prints
 *   held N statuses 200=... 404=...
 * and waits for SIGTERM or SIGINT; then it
 * checks, without blocking, that every connection is still open (the server
 * neither closed it nor sent anything) and prints
 *   open K of N
 * exiting 0 when K == N, 1 otherwise. Any error while opening or reading
 * prints the connection number and errno text and exits 2.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int fail(long i, const char *what)
{
    fprintf(stderr, "holdconns: connection %ld: %s: %s\n", i, what, errno ? strerror(errno) : "");
    return 2;
}

/* Reads one answer on fd; returns its status or -1. */
static int read_answer(int fd)
{
    char buf[16384];
    size_t have = 0;
    char *eoh = NULL;
    while (!eoh) {
        if (have == sizeof buf - 1) return -1;
        ssize_t n = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        if (n <= 0) return -1;
        have += (size_t)n;
        buf[have] = '\0';
        eoh = strstr(buf, "\r\n\r\n");
    }
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) return -1;
    size_t head = (size_t)(eoh + 4 - buf), body = have - head;
    long clen = -1;
    int chunked = 0;
    for (char *l = strstr(buf, "\r\n"); l && l < eoh; l = strstr(l + 2, "\r\n")) {
        if (strncasecmp(l + 2, "Content-Length:", 15) == 0) clen = strtol(l + 17, NULL, 10);
        if (strncasecmp(l + 2, "Transfer-Encoding:", 18) == 0 && strcasestr(l, "chunked"))
            chunked = 1;
    }
    if (chunked) { /* small bodies only: read until the last chunk */
        memmove(buf, eoh + 4, body);
        buf[body] = '\0';
        while (!strstr(buf, "0\r\n\r\n")) {
            if (body == sizeof buf - 1) return -1;
            ssize_t n = recv(fd, buf + body, sizeof buf - 1 - body, 0);
            if (n <= 0) return -1;
            body += (size_t)n;
            buf[body] = '\0';
        }
        return status;
    }
    if (clen < 0) clen = 0; /* a keep-alive answer without length has no body (204/304) */
    while ((long)body < clen) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) return -1;
        body += (size_t)n;
    }
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: holdconns HOST PORT N [PATH_PREFIX]\n");
        return 2;
    }
    const char *host = argv[1], *prefix = argc > 4 ? argv[4] : "/orders/";
    int port = atoi(argv[2]);
    long n = strtol(argv[3], NULL, 10);
    if (n < 1 || port < 1 || port > 65535) return 2;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return 2;
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, NULL);

    int *fds = calloc((size_t)n, sizeof *fds);
    long counts[6] = {0};
    if (!fds) return 2;
    for (long i = 0; i < n; i++) {
        errno = 0;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return fail(i, "socket");
        struct timeval tv = {10, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) return fail(i, "connect");
        char req[512];
        int len = snprintf(req, sizeof req, "GET %s%ld HTTP/1.1\r\nHost: %s:%d\r\n\r\n", prefix, i,
                           host, port);
        if (send(fd, req, (size_t)len, MSG_NOSIGNAL) != len) return fail(i, "send");
        int st = read_answer(fd);
        if (st < 100 || st > 599) return fail(i, "read answer");
        counts[st / 100]++;
        fds[i] = fd;
    }
    printf("held %ld statuses 1xx=%ld 2xx=%ld 3xx=%ld 4xx=%ld 5xx=%ld\n", n, counts[1], counts[2],
           counts[3], counts[4], counts[5]);
    fflush(stdout);

    int sig;
    sigwait(&stop, &sig);

    long open = 0;
    struct pollfd *p = calloc((size_t)n, sizeof *p);
    if (!p) return 2;
    for (long i = 0; i < n; i++) p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN | POLLRDHUP};
    if (poll(p, (nfds_t)n, 0) < 0) return fail(-1, "poll");
    for (long i = 0; i < n; i++) {
        if (!(p[i].revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR))) open++;
        close(fds[i]);
    }
    printf("open %ld of %ld\n", open, n);
    return open == n ? 0 : 1;
}
