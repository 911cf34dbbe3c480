/*
 * faultcheck.c -- build/tests/faultcheck: a seeded, randomized fault run against
 * the real gateway (see faults.h for the parts, tools/faults.sh for long runs).
 *
 *   faultcheck [--store sqlite|redis|postgres] [--seconds S] [--seed N] ...
 *
 * Set-up: the demo store as upstream, the state store (Redis and Postgres behind
 * linkproxy.c, so the link can be broken) and the gateway with short timeouts,
 * all started by the harness on free loopback ports. Then writers and the hwm
 * poller run while the nemesis injects faults for S seconds; then the checker
 * heals, reads and judges, printing counts and every violation with the seed.
 * Exit status: 0 clean, 1 violations (or a set-up failure), 2 bad usage.
 *
 * Why Criterion: the harness reports a failed start with cr_assert, which only
 * unwinds inside a Criterion test, and the test's end is what kills every
 * process the harness started. So main() checks the options, hands them to the
 * one test through the environment (Criterion runs a test in a fresh exec of
 * this binary, where main's variables are gone), and lets Criterion run it.
 * Criterion puts that test process in a session of its own, out of reach of
 * Ctrl-C, so main forwards SIGINT/SIGTERM to it: the faults end early and the
 * checker still judges what ran.
 */
#include <criterion/criterion.h>
#include <criterion/options.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "faults.h"

#define ARGS_ENV "FAULTCHECK_ARGS"
#define ARG_SEP  '\x1f'

volatile sig_atomic_t fc_interrupted;

const char *fc_store_name(fc_store_t s)
{
    return s == FC_REDIS ? "redis" : s == FC_POSTGRES ? "postgres" : "sqlite";
}

void fc_usage(FILE *f)
{
    fprintf(
        f,
        "usage: faultcheck [--store sqlite|redis|postgres] [--seconds S] [--seed N]\n"
        "                  [--clients N] [--resources N] [--stale F] [--think-ms N]\n"
        "                  [--nemesis LIST] [--verbose]\n"
        "  --seconds S     length of the faulty part (default 20)\n"
        "  --seed N        seeds the writers and the nemesis (default: from the clock; printed)\n"
        "  --clients N     writer threads (default 8); --resources N: /orders/1..N (default 5)\n"
        "  --stale F       fraction of writes that reuse an old token (default 0.1)\n"
        "  --think-ms N    each writer waits 0..2N ms between writes (default 25)\n"
        "  --nemesis LIST  comma-separated, read left to right: fault names, 'all', 'none',\n"
        "                  '-name' to leave one out (default all; '-x' first: all but x).\n"
        "                  Faults that do not apply to the store are skipped. Names:");
    for (int n = 0; n < FC_NEMESIS_COUNT; n++) fprintf(f, " %s", fc_nemesis_name((fc_nemesis_t)n));
    fprintf(f, "\n  --verbose       print every fault as it happens\n");
}

static bool number(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    return fc_parse_u64(s, strlen(s), out) && *out >= lo && *out <= hi;
}

static int nemesis_list(const char *list, bool want[FC_NEMESIS_COUNT], char *err, size_t len)
{
    /* "a,b" means just those; a list that starts by leaving one out starts from all */
    for (int k = 0; k < FC_NEMESIS_COUNT; k++) want[k] = *list == '-';
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        bool off = *p == '-';
        const char *name = off ? p + 1 : p;
        size_t nl = off ? n - 1 : n;
        if (nl == 3 && strncmp(name, "all", 3) == 0 && !off) {
            for (int k = 0; k < FC_NEMESIS_COUNT; k++) want[k] = true;
        } else if (nl == 4 && strncmp(name, "none", 4) == 0 && !off) {
            for (int k = 0; k < FC_NEMESIS_COUNT; k++) want[k] = false;
        } else {
            int k = 0;
            while (k < FC_NEMESIS_COUNT && (strlen(fc_nemesis_name((fc_nemesis_t)k)) != nl ||
                                            strncmp(fc_nemesis_name((fc_nemesis_t)k), name, nl)))
                k++;
            if (k == FC_NEMESIS_COUNT) {
                snprintf(err, len, "unknown fault '%.*s' in --nemesis", (int)nl, name);
                return -1;
            }
            want[k] = !off;
        }
        p += n;
        if (*p == ',') p++;
    }
    return 0;
}

int fc_opts_parse(int argc, char **argv, fc_opts_t *o, bool *seed_given, char *err, size_t len)
{
    *o = (fc_opts_t){.seconds = 20, .clients = 8, .resources = 5, .think_ms = 25, .stale = 0.1};
    *seed_given = false;
    bool want[FC_NEMESIS_COUNT];
    for (int k = 0; k < FC_NEMESIS_COUNT; k++) want[k] = true;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n = 0;
        bool takes = true, ok = v != NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return 1;
        if (strcmp(a, "--verbose") == 0) {
            o->verbose = true;
            takes = false;
            ok = true;
        } else if (strcmp(a, "--store") == 0) {
            ok = ok && (strcmp(v, "sqlite") == 0 || strcmp(v, "redis") == 0 ||
                        strcmp(v, "postgres") == 0);
            if (ok)
                o->store = strcmp(v, "redis") == 0      ? FC_REDIS
                           : strcmp(v, "postgres") == 0 ? FC_POSTGRES
                                                        : FC_SQLITE;
        } else if (strcmp(a, "--seconds") == 0) {
            ok = ok && number(v, 1, 86400, &n);
            o->seconds = (unsigned)n;
        } else if (strcmp(a, "--seed") == 0) {
            ok = ok && number(v, 0, UINT64_MAX, &o->seed);
            *seed_given = ok;
        } else if (strcmp(a, "--clients") == 0) {
            ok = ok && number(v, 1, 256, &n);
            o->clients = (unsigned)n;
        } else if (strcmp(a, "--resources") == 0) {
            ok = ok && number(v, 1, 1000, &n);
            o->resources = (unsigned)n;
        } else if (strcmp(a, "--think-ms") == 0) {
            ok = ok && number(v, 0, 10000, &n);
            o->think_ms = (unsigned)n;
        } else if (strcmp(a, "--stale") == 0) {
            char *end = NULL;
            o->stale = ok ? strtod(v, &end) : 0;
            ok = ok && end && *end == '\0' && end != v && o->stale >= 0 && o->stale <= 1;
        } else if (strcmp(a, "--nemesis") == 0) {
            if (ok && nemesis_list(v, want, err, len) != 0) return -1;
        } else {
            snprintf(err, len, "unknown option '%s'", a);
            return -1;
        }
        if (!ok) {
            snprintf(err, len, "bad or missing value for %s", a);
            return -1;
        }
        if (takes) i++;
    }
    for (int k = 0; k < FC_NEMESIS_COUNT; k++)
        o->nemesis[k] = want[k] && fc_nemesis_applies((fc_nemesis_t)k, o->store);
    return 0;
}

/* ---- the run (inside the Criterion test) ---- */

static void on_signal(int sig)
{
    (void)sig;
    fc_interrupted = 1;
}

static void env_start(fc_env_t *e)
{
    char state[300];
    fgt_upstream_start(&e->up, 0);
    if (e->o.store == FC_REDIS) {
        fgt_redis_start(&e->redis);
        e->link = fc_link_start(e->redis.port);
        cr_assert(e->link, "cannot start the link proxy");
        snprintf(state, sizeof state, "redis://127.0.0.1:%d/0", fc_link_port(e->link));
    } else if (e->o.store == FC_POSTGRES) {
        fgt_pg_start(&e->pg);
        e->link = fc_link_start(e->pg.port);
        cr_assert(e->link, "cannot start the link proxy");
        snprintf(state, sizeof state, "postgres://postgres@127.0.0.1:%d/postgres",
                 fc_link_port(e->link));
    } else {
        snprintf(state, sizeof state, "sqlite:{dir}/fg.db");
    }
    /* short timeouts so that faults show up fast; upstream_grace is the SPEC step 8
     * quarantine, and upstream-slow stays below upstream_timeout + upstream_grace */
    char conf[2048];
    snprintf(conf, sizeof conf,
             "[gateway]\nlisten = {listen}\nadmin_listen = {admin}\nupstream = %s\nstate = %s\n"
             "state_timeout = 300ms\nupstream_timeout = 1s\nupstream_grace = 2s\n"
             "fence_wait = 2s\naccess_log = off\n\n"
             "[policy orders]\nmatch = /orders/{id}\nkey = order:{id}\n",
             e->up.url, state);
    fgt_gateway_start(&e->gw, conf);
    snprintf(e->sqlite_path, sizeof e->sqlite_path, "%s/fg.db", e->gw.dir);
}

static unsigned long env_stop(fc_env_t *e)
{
    unsigned long bad = 0;
    int st = fgt_gateway_stop(&e->gw);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr,
                "VIOLATION unexpected [seed %" PRIu64 ", store %s]: the gateway did not drain "
                "and exit 0 on SIGTERM (wait status %d); see %s\n",
                e->o.seed, fc_store_name(e->o.store), st, e->gw.proc.log);
        bad++;
    }
    fc_link_stop(e->link);
    if (e->o.store == FC_REDIS) fgt_redis_stop(&e->redis);
    if (e->o.store == FC_POSTGRES) fgt_pg_stop(&e->pg);
    fgt_upstream_stop(&e->up);
    return bad;
}

static void run_init(fc_env_t *e)
{
    fc_run_t *run = &e->run;
    run->o = &e->o;
    snprintf(run->gw_url, sizeof run->gw_url, "%s", e->gw.url);
    snprintf(run->admin_url, sizeof run->admin_url, "%s", e->gw.admin_url);
    run->clients = calloc(e->o.clients + 1, sizeof *run->clients);
    run->events = calloc(FC_EVENTS_MAX, sizeof *run->events);
    run->hwm_seen = calloc(e->o.resources + 1, sizeof *run->hwm_seen);
    cr_assert(run->clients && run->events && run->hwm_seen);
    for (unsigned i = 0; i <= e->o.clients; i++) {
        run->clients[i].id = i;
        run->clients[i].run = run;
        run->clients[i].rng = e->o.seed * 0x100000001B3ULL + i + 1;
    }
    atomic_init(&run->stop, false);
    atomic_init(&run->next_token, 0);
    atomic_init(&run->delay_max_ms, 0);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    run->t_start_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void run_free(fc_run_t *run)
{
    for (unsigned i = 0; run->clients && i <= run->o->clients; i++) free(run->clients[i].ops);
    free(run->clients);
    free(run->events);
    free(run->hwm_seen);
}

static fc_env_t E;

Test(faults, run)
{
    const char *packed = getenv(ARGS_ENV);
    cr_assert(packed, "run build/tests/faultcheck itself (its main passes the options)");
    char *buf = strdup(packed);
    char *argv[64];
    int argc = 0;
    cr_assert(buf);
    for (char *p = buf; *p && argc < 64;) {
        argv[argc++] = p;
        char *sep = strchr(p, ARG_SEP);
        if (!sep) break;
        *sep = '\0';
        p = sep + 1;
    }
    bool seed_given;
    char err[256];
    cr_assert(fc_opts_parse(argc, argv, &E.o, &seed_given, err, sizeof err) == 0, "%s", err);
    free(buf);

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigset_t stop_sigs; /* main blocked them for its own signal thread */
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGINT);
    sigaddset(&stop_sigs, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &stop_sigs, NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    fprintf(stderr,
            "faultcheck: store %s, seed %" PRIu64 ", %u s, %u clients, %u resources, "
            "stale %.2f, nemesis",
            fc_store_name(E.o.store), E.o.seed, E.o.seconds, E.o.clients, E.o.resources, E.o.stale);
    for (int k = 0; k < FC_NEMESIS_COUNT; k++)
        if (E.o.nemesis[k]) fprintf(stderr, " %s", fc_nemesis_name((fc_nemesis_t)k));
    fprintf(stderr, "\n");

    env_start(&E);
    run_init(&E);
    cr_assert(fc_run_start(&E.run), "cannot start the writer threads");
    fc_nemesis_run(&E);
    fc_run_stop(&E.run);
    if (fc_interrupted) fprintf(stderr, "faultcheck: interrupted; checking what ran\n");
    unsigned long bad = fc_check(&E);
    bad += env_stop(&E);
    run_free(&E.run);
    curl_global_cleanup();
    cr_assert_eq(bad, 0, "%lu violations; store %s, seed %" PRIu64, bad, fc_store_name(E.o.store),
                 E.o.seed);
}

/* Forward SIGINT/SIGTERM to our children (the Criterion test process). */
static void *forward_signals(void *arg)
{
    const sigset_t *set = arg;
    for (;;) {
        int sig;
        if (sigwait(set, &sig) == 0) fc_signal_children(getpid(), sig);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    fc_opts_t o;
    bool seed_given;
    char err[256];
    int rc = fc_opts_parse(argc - 1, argv + 1, &o, &seed_given, err, sizeof err);
    if (rc == 1) {
        fc_usage(stdout);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "faultcheck: %s\n", err);
        fc_usage(stderr);
        return 2;
    }
    if (!seed_given) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        o.seed = ((uint64_t)ts.tv_sec * 1000000007ULL) ^ (uint64_t)ts.tv_nsec ^
                 ((uint64_t)getpid() << 32);
    }
    size_t cap = 64;
    for (int i = 1; i < argc; i++) cap += strlen(argv[i]) + 1;
    char *packed = malloc(cap);
    if (!packed || argc > 60) {
        fprintf(stderr, "faultcheck: too many arguments\n");
        return 2;
    }
    size_t at = 0;
    for (int i = 1; i < argc; i++)
        at += (size_t)snprintf(packed + at, cap - at, "%s%c", argv[i], ARG_SEP);
    if (!seed_given)
        snprintf(packed + at, cap - at, "--seed%c%" PRIu64, ARG_SEP, o.seed);
    else if (at > 0)
        packed[at - 1] = '\0';
    setenv(ARGS_ENV, packed, 1);
    free(packed);
    /* the test process handles these (it ends the faults early and still checks);
     * blocked here and in what we start, until the test unblocks them */
    static sigset_t stop_sigs;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGINT);
    sigaddset(&stop_sigs, SIGTERM);
    signal(SIGINT, SIG_DFL); /* a shell starts background jobs with SIGINT ignored */
    pthread_sigmask(SIG_BLOCK, &stop_sigs, NULL);
    pthread_t fwd;
    if (pthread_create(&fwd, NULL, forward_signals, &stop_sigs) == 0) pthread_detach(fwd);

    struct criterion_test_set *tests = criterion_initialize();
    char *cargv[] = {argv[0], NULL};
    int result = 1;
    if (criterion_handle_args(1, cargv, true)) {
        criterion_options.jobs = 1;
        criterion_options.timeout = o.seconds + 900.0; /* heal, checks, slow starts */
        result = !criterion_run_all_tests(tests);
    }
    criterion_finalize(tests);
    return result;
}
