/*
 * test_ordering.c -- SPEC step 8: writes of one resource reach the upstream in
 * check order. An upstream that delays each answer by a random 0-30 ms, many
 * concurrent writers sending rising tokens to a few resources, and the
 * upstream's own arrival log must never show a lower token after a higher one
 * for a resource. Writes to other resources must not wait.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "gw_common.h"

#define WRITERS    16
#define RESOURCES  3
#define PER_WRITER 60

static env_t E;
static atomic_ullong next_token;
static atomic_int accepted, stale, other, late;

static void *writer(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 17u;
    for (int i = 0; i < PER_WRITER; i++) {
        unsigned long long t = atomic_fetch_add(&next_token, 1) + 1;
        /* a lock client that got its token may be slow to send: reorder a little */
        usleep((useconds_t)(rand_r(&seed) % 3000));
        char path[64], tok[32];
        snprintf(path, sizeof path, "/orders/r%llu", t % RESOURCES);
        snprintf(tok, sizeof tok, "%llu", t);
        long st = put_tok(&E, path, tok, tok);
        if (st == 200)
            atomic_fetch_add(&accepted, 1);
        else if (st == 409)
            atomic_fetch_add(&stale, 1);
        else
            atomic_fetch_add(&other, 1);
        /* A paused lock holder that wakes up late: once token t was accepted
         * the hwm of its resource is at least t, so t - RESOURCES (same
         * resource) must be refused whatever the timing. The random jitter
         * above may or may not produce stale writes; these always do. */
        if (st == 200 && t > RESOURCES && i % 8 == 0) {
            snprintf(tok, sizeof tok, "%llu", t - RESOURCES);
            st = put_tok(&E, path, tok, tok);
            atomic_fetch_add(st == 409 ? &stale : &other, 1);
            if (st == 409) atomic_fetch_add(&late, 1);
        }
    }
    return NULL;
}

static void run(store_kind_t kind)
{
    env_start(&E, kind, 30, "fence_wait = 20s\n", NULL);
    atomic_store(&next_token, 0);
    atomic_store(&accepted, 0);
    atomic_store(&stale, 0);
    atomic_store(&other, 0);
    atomic_store(&late, 0);
    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++) pthread_create(&th[i], NULL, writer, (void *)(uintptr_t)i);
    for (int i = 0; i < WRITERS; i++) pthread_join(th[i], NULL);
    int acc = atomic_load(&accepted), stl = atomic_load(&stale), oth = atomic_load(&other);
    fprintf(stderr, "ordering (%s): %d accepted, %d stale (%d of them late replays), %d other\n",
            kind == STORE_REDIS ? "redis" : "sqlite", acc, stl, atomic_load(&late), oth);
    cr_assert_eq(oth, 0, "every write is either accepted or stale");
    cr_assert_geq(acc, 200, "too few accepted writes (%d) for the test to mean something", acc);
    cr_assert_gt(atomic_load(&late), 0, "no late replay was sent: the test did not run");

    json_t *log = fgt_upstream_log(&E.up);
    cr_assert_eq((int)json_array_size(log), acc, "upstream got %zu writes, gateway accepted %d",
                 json_array_size(log), acc);
    unsigned long long last[RESOURCES] = {0};
    size_t i;
    json_t *w;
    json_array_foreach(log, i, w)
    {
        const char *path = json_string_value(json_object_get(w, "path"));
        unsigned long long t = strtoull(json_string_value(json_object_get(w, "token")), NULL, 10);
        int res = (int)strtol(path + strlen("/orders/r"), NULL, 10);
        cr_assert(t >= last[res], "resource r%d: token %llu arrived after %llu (seq %zu)", res, t,
                  last[res], i);
        last[res] = t;
    }
    json_decref(log);
    for (int r = 0; r < RESOURCES; r++) {
        char key[32], hwm[32];
        snprintf(key, sizeof key, "order:r%d", r);
        cr_assert(hwm_of(&E, key, hwm, sizeof hwm));
        cr_assert_eq(strtoull(hwm, NULL, 10), last[r], "hwm of %s is not the last forwarded", key);
    }
    json_t *es = audit_entries(&E, "reason=stale&limit=1000");
    cr_assert_eq((int)json_array_size(es), stl < 1000 ? stl : 1000,
                 "every stale refusal has its audit record");
    json_decref(es);
    env_stop(&E);
}

Test(ordering, sqlite, .timeout = 300)
{
    run(STORE_SQLITE);
}
Test(ordering, redis, .timeout = 300)
{
    run(STORE_REDIS);
}

/* With Redis, each engine runs its checks on a connection of its own, on its
 * event loop (gateway/storeloop.c): the log says so once per engine, and the
 * ordering test above ran through it. */
Test(ordering, redis_checks_run_on_the_loop, .timeout = 60)
{
    env_t e;
    env_start(&e, STORE_REDIS, 0, "workers = 2\n", NULL);
    int seen = 0;
    for (int i = 0; i < 200 && seen < 2; i++) {
        char *log = fgt_read_file(e.gw.proc.log);
        seen = 0;
        for (char *p = log; p && (p = strstr(p, "the engine's own store connection")); p++) seen++;
        free(log);
        if (seen < 2) usleep(50 * 1000);
    }
    cr_assert_eq(seen, 2, "each of the 2 engines connects on its loop");
    for (int t = 1; t <= 20; t++) {
        char tok[8];
        snprintf(tok, sizeof tok, "%d", t);
        cr_assert_eq(put_tok(&e, "/orders/loop", tok, "v"), 200);
    }
    cr_assert_eq(put_tok(&e, "/orders/loop", "3", "v"), 409);
    char hwm[32];
    cr_assert(hwm_of(&e, "order:loop", hwm, sizeof hwm));
    cr_assert_str_eq(hwm, "20");
    env_stop(&e);
}
