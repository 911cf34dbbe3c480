/*
 * test_durability.c -- the hwm survives kill -9 of the gateway (every store)
 * and a restart of Redis with AOF; a store that goes away mid-run makes writes
 * fail closed (503, nothing forwarded) and they work again when it is back.
 */
#include <signal.h>
#include <unistd.h>

#include "gw_common.h"

static env_t E;

static void kill9_keeps_hwm(store_kind_t kind)
{
    env_start(&E, kind, 0, NULL, NULL);
    for (int i = 1; i <= 50; i++) {
        char t[16];
        snprintf(t, sizeof t, "%d", i * 10);
        cr_assert_eq(put_tok(&E, "/orders/k9", t, "v"), 200);
    }
    fgt_stop(&E.gw.proc, SIGKILL);
    fgt_gateway_restart(&E.gw);
    char hwm[32];
    cr_assert(hwm_of(&E, "order:k9", hwm, sizeof hwm));
    cr_assert_str_eq(hwm, "500");
    cr_assert_eq(put_tok(&E, "/orders/k9", "499", "stale"), 409, "hwm lost by kill -9");
    cr_assert_eq(put_tok(&E, "/orders/k9", "500", "same"), 200);
    cr_assert_eq(upstream_writes(&E, "/orders/k9"), 51);
    json_t *es = audit_entries(&E, "resource=order:k9");
    cr_assert_eq(json_array_size(es), 1);
    json_decref(es);
    env_stop(&E);
}

Test(durability, sqlite_kill9, .timeout = 90)
{
    kill9_keeps_hwm(STORE_SQLITE);
}
Test(durability, redis_kill9, .timeout = 90)
{
    kill9_keeps_hwm(STORE_REDIS);
}

Test(durability, redis_restart_with_aof, .timeout = 90)
{
    env_start(&E, STORE_REDIS, 0, NULL, NULL);
    cr_assert_eq(put_tok(&E, "/orders/aof", "77", "v"), 200);
    cr_assert_eq(put_tok(&E, "/orders/aof", "70", "v"), 409);
    fgt_redis_stop(&E.redis);
    fgt_redis_restart(&E.redis);
    /* the gateway reconnects by itself (backoff is capped well below this wait) */
    long st = 0;
    for (int i = 0; i < 100; i++) {
        st = put_tok(&E, "/orders/aof", "76", "v");
        if (st != 503) break;
        usleep(100 * 1000);
    }
    cr_assert_eq(st, 409, "hwm 77 must survive the Redis restart, got %ld", st);
    json_t *es = audit_entries(&E, "resource=order:aof");
    cr_assert_eq(json_array_size(es), 2, "the audit trail survives too");
    json_decref(es);
    env_stop(&E);
}

Test(durability, store_goes_away_and_comes_back, .timeout = 90)
{
    env_start(&E, STORE_REDIS, 0, "state_timeout = 300ms\n",
              "[policy orders]\nmatch = /orders/{id}\nkey = order:{id}\n"
              "[policy lenient]\nmatch = /lenient/{id}\nkey = len:{id}\n"
              "on_state_error = forward\n");
    cr_assert_eq(put_tok(&E, "/orders/1", "1", "v"), 200);
    size_t before = upstream_writes(&E, NULL);
    fgt_redis_stop(&E.redis);
    for (int i = 0; i < 20; i++) {
        char t[16];
        snprintf(t, sizeof t, "%d", 100 + i);
        fgt_resp_t r =
            gw_req(&E, "PUT", "/orders/1", (const char *[]){"Fencing-Token: 5", NULL}, "v");
        cr_assert_eq(r.status, 503, "store down must fail closed, got %ld", r.status);
        char ra[16];
        cr_assert(fgt_resp_header(&r, "Retry-After", ra, sizeof ra));
        json_t *j = fgt_resp_json(&r);
        cr_assert_str_eq(json_string_value(json_object_get(j, "type")),
                         "urn:fencegate:problem:state-unavailable");
        json_decref(j);
        fgt_resp_free(&r);
    }
    cr_assert_eq(upstream_writes(&E, NULL), before, "nothing forwarded while the store is down");
    long st;
    json_t *j = admin_get(&E, "/readyz", &st);
    json_decref(j);
    cr_assert_eq(st, 503);
    /* on_state_error = forward lets it through */
    cr_assert_eq(put_tok(&E, "/lenient/1", "1", "v"), 200);
    cr_assert_eq(upstream_writes(&E, "/lenient/1"), 1);
    fgt_redis_restart(&E.redis);
    st = 0;
    for (int i = 0; i < 100; i++) {
        st = put_tok(&E, "/orders/1", "2", "v");
        if (st != 503) break;
        usleep(100 * 1000);
    }
    cr_assert_eq(st, 200, "writes work again once the store is back");
    /* the admin listener has its own connection and its own (short) backoff */
    for (int i = 0; i < 50; i++) {
        j = admin_get(&E, "/readyz", &st);
        json_decref(j);
        if (st == 200) break;
        usleep(100 * 1000);
    }
    cr_assert_eq(st, 200, "/readyz is ready again");
    env_stop(&E);
}

/* Postgres restarted under a running gateway: 503 while it is down (nothing
 * forwarded), normal again after, and the refusal is visible with SQL. */
Test(durability, postgres_restart_under_gateway, .timeout = 120)
{
    env_start(&E, STORE_POSTGRES, 0, "state_timeout = 500ms\n", NULL);
    cr_assert_eq(put_tok(&E, "/orders/pg", "40", "v"), 200);
    size_t before = upstream_writes(&E, NULL);
    fgt_pg_stop(&E.pg);
    for (int i = 0; i < 5; i++) cr_assert_eq(put_tok(&E, "/orders/pg", "41", "v"), 503);
    cr_assert_eq(upstream_writes(&E, NULL), before, "nothing forwarded while Postgres is down");
    fgt_pg_restart(&E.pg);
    long st = 0;
    for (int i = 0; i < 100; i++) {
        st = put_tok(&E, "/orders/pg", "39", "v");
        if (st != 503) break;
        usleep(100 * 1000);
    }
    cr_assert_eq(st, 409, "hwm 40 kept across the Postgres restart, got %ld", st);
    char *n = fgt_pg_query(E.pg.url, "SELECT count(*) FROM fencegate_audit WHERE resource = "
                                     "'order:pg' AND reason = 'stale' AND token = 39");
    cr_assert_str_eq(n, "1");
    free(n);
    cr_assert_eq(put_tok(&E, "/orders/pg", "41", "v"), 200);
    env_stop(&E);
}
