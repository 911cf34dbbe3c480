/*
 * malloc_count.c -- an LD_PRELOAD counter of heap allocations, for
 * bench/allocs.sh: how many times per proxied request the gateway asks the
 * allocator for memory (a steady state should need almost none).
 *
 *   gcc -O2 -shared -fPIC -o malloc_count.so bench/malloc_count.c -lpthread
 *   MALLOC_COUNT_FILE=/tmp/mc LD_PRELOAD=$PWD/malloc_count.so fencegate -c ...
 *
 * Counts malloc, calloc, realloc, posix_memalign, aligned_alloc and memalign
 * (free is not counted) and hands each call to glibc's own allocator
 * (__libc_malloc and friends, so no dlsym bootstrapping). Each call is also
 * charged to the loaded object that called it (by return address, against
 * the objects mapped at start-up): a strdup() inside libc is charged to libc,
 * not to whoever called strdup. Every 100 ms a thread (all signals blocked,
 * so it never takes the gateway's SIGTERM) rewrites MALLOC_COUNT_FILE
 * atomically (write + rename):
 *   total <n>
 *   <object basename> <n>        one line per object with a non-zero count
 *   (before-init-or-unmapped) <n>  calls made before this library was initialised, or
 *                                  from code mapped later (dlopen)
 * Reads of the file are therefore at most 100 ms stale: sample it while the
 * process is idle and the numbers are exact.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

#define MAX_OBJ 96
#define MAX_SEG 4

typedef struct {
    char name[64];
    uintptr_t lo[MAX_SEG], hi[MAX_SEG];
    int nseg;
} obj_t;

static obj_t objs[MAX_OBJ];
static int nobj; /* written once, before `ready` is set */
static int ready;
static unsigned long total;
static unsigned long per_obj[MAX_OBJ + 1]; /* [MAX_OBJ] = not in any object mapped at start */
static char out_path[512];

static void count(uintptr_t ra)
{
    __atomic_fetch_add(&total, 1, __ATOMIC_RELAXED);
    int n = __atomic_load_n(&ready, __ATOMIC_ACQUIRE) ? nobj : 0, which = MAX_OBJ;
    for (int i = 0; i < n && which == MAX_OBJ; i++)
        for (int s = 0; s < objs[i].nseg; s++)
            if (ra >= objs[i].lo[s] && ra < objs[i].hi[s]) {
                which = i;
                break;
            }
    __atomic_fetch_add(&per_obj[which], 1, __ATOMIC_RELAXED);
}

#define RA ((uintptr_t)__builtin_return_address(0))

void *malloc(size_t n)
{
    count(RA);
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
    count(RA);
    return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
    count(RA);
    return __libc_realloc(p, n);
}

void *memalign(size_t al, size_t n)
{
    count(RA);
    return __libc_memalign(al, n);
}

void *aligned_alloc(size_t al, size_t n)
{
    count(RA);
    return __libc_memalign(al, n);
}

int posix_memalign(void **out, size_t al, size_t n)
{
    count(RA);
    if (al < sizeof(void *) || (al & (al - 1)) != 0) return EINVAL;
    void *p = __libc_memalign(al, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

/* ---- the objects mapped at start-up (executable segments) ---- */
static int add_obj(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    (void)data;
    if (nobj >= MAX_OBJ) return 1;
    obj_t *o = &objs[nobj];
    const char *name =
        info->dlpi_name && info->dlpi_name[0] ? info->dlpi_name : program_invocation_short_name;
    const char *slash = strrchr(name, '/');
    snprintf(o->name, sizeof o->name, "%s", slash ? slash + 1 : name);
    o->nseg = 0;
    for (int i = 0; i < info->dlpi_phnum && o->nseg < MAX_SEG; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
        o->lo[o->nseg] = info->dlpi_addr + ph->p_vaddr;
        o->hi[o->nseg] = o->lo[o->nseg] + ph->p_memsz;
        o->nseg++;
    }
    if (o->nseg) nobj++;
    return 0;
}

/* ---- the file, without stdio or malloc ---- */
static size_t put_str(char *b, size_t at, size_t cap, const char *s)
{
    while (*s && at + 1 < cap) b[at++] = *s++;
    return at;
}

static size_t put_num(char *b, size_t at, size_t cap, unsigned long v)
{
    char t[24];
    int n = 0;
    do t[n++] = (char)('0' + v % 10), v /= 10;
    while (v);
    while (n && at + 1 < cap) b[at++] = t[--n];
    return at;
}

static void write_file(void)
{
    char buf[8192], tmp[sizeof out_path + 8];
    size_t at = put_str(buf, 0, sizeof buf, "total ");
    at = put_num(buf, at, sizeof buf, __atomic_load_n(&total, __ATOMIC_RELAXED));
    at = put_str(buf, at, sizeof buf, "\n");
    for (int i = 0; i <= nobj; i++) {
        int k = i < nobj ? i : MAX_OBJ;
        unsigned long v = __atomic_load_n(&per_obj[k], __ATOMIC_RELAXED);
        if (!v) continue;
        at = put_str(buf, at, sizeof buf, i < nobj ? objs[k].name : "(before-init-or-unmapped)");
        at = put_str(buf, at, sizeof buf, " ");
        at = put_num(buf, at, sizeof buf, v);
        at = put_str(buf, at, sizeof buf, "\n");
    }
    size_t tl = put_str(tmp, 0, sizeof tmp, out_path);
    tl = put_str(tmp, tl, sizeof tmp, ".tmp");
    tmp[tl] = '\0';
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    ssize_t w = write(fd, buf, at);
    close(fd);
    if (w == (ssize_t)at) rename(tmp, out_path);
}

static void *writer(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        write_file();
    }
    return NULL;
}

__attribute__((constructor)) static void start(void)
{
    dl_iterate_phdr(add_obj, NULL);
    __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    const char *p = getenv("MALLOC_COUNT_FILE");
    if (!p || !*p || strlen(p) >= sizeof out_path) return;
    memcpy(out_path, p, strlen(p) + 1);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the thread inherits "everything blocked" */
    pthread_t t;
    if (pthread_create(&t, NULL, writer, NULL) == 0) pthread_detach(t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    write_file();
}
