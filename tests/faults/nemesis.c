/*
 * nemesis.c -- the faults of a fault run, chosen and timed by the seed.
 *
 * One fault at a time, each bounded (at most a few seconds) and undone before
 * the next quiet spell, so that the run ends with every process up and the link
 * open; what the checker then sees is what the faults left behind, not a fault
 * still going on. Every fault is recorded (kind, start, end) so that a violation
 * can be printed next to the faults that overlapped it.
 *
 * Runs on the test thread: restarting a process goes through the harness, which
 * asserts.
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faults.h"

#define SLOW_DELAY_MAX_MS 2000 /* below upstream_timeout + upstream_grace: ordering promised */

static const char *const names[FC_NEMESIS_COUNT] = {
    [FC_GATEWAY_KILL] = "gateway-kill",   [FC_GATEWAY_PAUSE] = "gateway-pause",
    [FC_UPSTREAM_SLOW] = "upstream-slow", [FC_STORE_KILL] = "store-kill",
    [FC_STORE_PAUSE] = "store-pause",     [FC_LINK_CUT] = "link-cut",
    [FC_LINK_STALL] = "link-stall",       [FC_LINK_TRICKLE] = "link-trickle",
};

const char *fc_nemesis_name(fc_nemesis_t n)
{
    return n < FC_NEMESIS_COUNT ? names[n] : "?";
}

bool fc_nemesis_applies(fc_nemesis_t n, fc_store_t s)
{
    return s != FC_SQLITE || n == FC_GATEWAY_KILL || n == FC_GATEWAY_PAUSE || n == FC_UPSTREAM_SLOW;
}

static unsigned between(uint64_t *rng, unsigned lo, unsigned hi)
{
    return lo + (unsigned)(fc_rand(rng) % (hi - lo + 1));
}

/* Sleep ms (the length of a fault or a quiet spell), less if interrupted. */
static void nap(unsigned ms)
{
    while (ms > 0 && !fc_interrupted) {
        unsigned step = ms < 50 ? ms : 50;
        fc_sleep_ms(step);
        ms -= step;
    }
}

void fc_gateway_watch(fc_env_t *e)
{
    siginfo_t si = {0};
    if (e->gw.proc.pid <= 0 ||
        waitid(P_PID, (id_t)e->gw.proc.pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0 ||
        si.si_pid == 0)
        return;
    e->run.crashes++;
    fprintf(stderr,
            "faultcheck: +%.3fs the gateway exited by itself (code %d, status %d); see %s\n",
            (double)fc_now_ms(&e->run) / 1000.0, si.si_code, si.si_status, e->gw.proc.log);
    fgt_stop(&e->gw.proc, SIGKILL); /* reaps it */
    fgt_gateway_restart(&e->gw);
}

unsigned fc_signal_children(pid_t parent, int sig)
{
    unsigned n = 0;
    DIR *d = opendir("/proc");
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char path[300], stat[512];
        uint64_t pid, ppid;
        if (!fc_parse_u64(de->d_name, strlen(de->d_name), &pid)) continue;
        snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        size_t len = f ? fread(stat, 1, sizeof stat - 1, f) : 0;
        if (f) fclose(f);
        stat[len] = '\0';
        const char *p = strrchr(stat, ')'); /* "pid (comm) state ppid ..." */
        if (!p || strlen(p) < 4) continue;
        p += 4;
        if (fc_parse_u64(p, strspn(p, "0123456789"), &ppid) && ppid == (uint64_t)parent &&
            kill((pid_t)pid, sig) == 0)
            n++;
    }
    if (d) closedir(d);
    return n;
}

/* The whole store: Postgres is a postmaster and the backends it forks, each in a
 * session of its own, so a signal to the postmaster's group would miss them. The
 * postmaster is stopped first so that it forks no new backend meanwhile. */
static void store_signal(fc_env_t *e, int sig)
{
    if (e->o.store == FC_REDIS) {
        kill(e->redis.proc.pid, sig);
    } else if (e->o.store == FC_POSTGRES) {
        pid_t pm = e->pg.proc.pid;
        if (sig != SIGCONT) kill(pm, SIGSTOP);
        fc_signal_children(pm, sig);
        kill(pm, sig);
    }
}

static void store_kill(fc_env_t *e, unsigned down_ms)
{
    if (e->o.store == FC_REDIS) {
        fgt_stop(&e->redis.proc, SIGKILL);
        nap(down_ms);
        fgt_redis_restart(&e->redis);
    } else if (e->o.store == FC_POSTGRES) {
        store_signal(e, SIGKILL); /* like the machine losing power: crash recovery next */
        fgt_stop(&e->pg.proc, SIGKILL);
        nap(down_ms);
        fgt_pg_restart(&e->pg);
    }
}

static void link_fault(fc_env_t *e, fc_link_mode_t mode, unsigned ms)
{
    fc_link_set(e->link, mode);
    nap(ms);
    fc_link_set(e->link, FC_LINK_PASS);
}

/* Carry out one fault and undo it; returns its length parameter. */
static unsigned inject(fc_env_t *e, fc_nemesis_t kind, uint64_t *rng)
{
    unsigned ms = 0;
    switch (kind) {
    case FC_GATEWAY_KILL:
        fgt_stop(&e->gw.proc, SIGKILL);
        fgt_gateway_restart(&e->gw);
        break;
    case FC_GATEWAY_PAUSE:
        ms = between(rng, 100, 1500);
        kill(e->gw.proc.pid, SIGSTOP);
        nap(ms);
        kill(e->gw.proc.pid, SIGCONT);
        break;
    case FC_UPSTREAM_SLOW:
        /* the writers ask the demo store (X-Delay-Ms) to wait before it applies the
         * write: restarting it with --delay-max-ms would lose its write log */
        ms = between(rng, 1000, 3000);
        atomic_store(&e->run.delay_max_ms, SLOW_DELAY_MAX_MS);
        nap(ms);
        atomic_store(&e->run.delay_max_ms, 0);
        break;
    case FC_STORE_KILL:
        ms = between(rng, 0, 1000);
        store_kill(e, ms);
        break;
    case FC_STORE_PAUSE:
        ms = between(rng, 100, 1500);
        store_signal(e, SIGSTOP);
        nap(ms);
        store_signal(e, SIGCONT);
        break;
    case FC_LINK_CUT:
        ms = between(rng, 100, 1500);
        link_fault(e, FC_LINK_CUT_MODE, ms);
        break;
    case FC_LINK_STALL:
        ms = between(rng, 100, 1500);
        link_fault(e, FC_LINK_STALL_MODE, ms);
        break;
    case FC_LINK_TRICKLE:
        ms = between(rng, 500, 2000);
        link_fault(e, FC_LINK_TRICKLE_MODE, ms);
        break;
    case FC_NEMESIS_COUNT:
        break;
    }
    return ms;
}

void fc_nemesis_run(fc_env_t *e)
{
    fc_run_t *run = &e->run;
    uint64_t rng = e->o.seed ^ 0x6E656D6573697321ULL;
    fc_nemesis_t kinds[FC_NEMESIS_COUNT];
    size_t nk = 0;
    for (int n = 0; n < FC_NEMESIS_COUNT; n++)
        if (e->o.nemesis[n]) kinds[nk++] = (fc_nemesis_t)n;
    int64_t end = (int64_t)e->o.seconds * 1000;
    while (!fc_interrupted) {
        int64_t left = end - fc_now_ms(run);
        unsigned quiet = between(&rng, 200, 1500);
        if (left <= 0) break;
        nap(quiet < left ? quiet : (unsigned)left);
        fc_gateway_watch(e);
        if (nk == 0 || fc_interrupted || fc_now_ms(run) >= end) continue;
        fc_nemesis_t kind = kinds[fc_rand(&rng) % nk];
        fc_event_t ev = {.t0 = fc_now_ms(run), .kind = kind};
        ev.param_ms = inject(e, kind, &rng);
        ev.t1 = fc_now_ms(run);
        run->faults[kind]++;
        if (run->n_events < FC_EVENTS_MAX) run->events[run->n_events++] = ev;
        if (e->o.verbose)
            fprintf(stderr, "faultcheck: +%.3fs %s %ums (%.3fs)\n", (double)ev.t0 / 1000.0,
                    fc_nemesis_name(kind), ev.param_ms, (double)(ev.t1 - ev.t0) / 1000.0);
    }
    fc_gateway_watch(e);
}
