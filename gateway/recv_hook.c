/*
 * recv_hook.c -- puts the strict wire check (wire.c, front.c) in front of
 * libmicrohttpd.
 *
 * libmicrohttpd 0.9.75 reads client sockets with recv(2) and offers no hook
 * for the raw bytes, and its own parser is too lenient to trust (wire.h says
 * how). This file defines recv() in the fencegate executable, which the
 * dynamic linker prefers to libc's for every library in the process, so each
 * socket read comes through fg_front_recv(): reads of client connections are
 * checked before MHD sees a byte, every other socket (the upstream client, hiredis, libpq,
 * the admin listener) goes straight to the system call.
 *
 * It is linked into the fencegate binary only (not into the libraries the
 * tests link), and the engine refuses to start without it: a build that lost
 * the hook fails closed instead of forwarding unchecked bytes.
 */
#include <sys/socket.h>
#include <sys/types.h>

#include "gateway/engine_int.h"

const int fg_recv_hook_present = 1;

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    return fg_front_recv(fd, buf, len, flags);
}
