/*
 * test_jump.c -- the token-poisoning guard through the gateway, on every
 * store: with max_token_jump = 100, a token more than 100 above the hwm gets
 * 409 token-jump, an audit record with reason "jump", leaves the hwm alone and
 * never reaches the upstream; a resource without hwm takes any token; and in
 * report-only mode the same write is audited and forwarded.
 */
#include "gw_common.h"

static env_t E;

#define JUMP_POLICIES                                                                              \
    "[policy orders]\nmatch = /orders/{id}\nkey = order:{id}\nmax_token_jump = 100\n"              \
    "[policy trial]\nmatch = /trial/{id}\nkey = trial:{id}\nmax_token_jump = 100\n"                \
    "mode = report-only\n"

static void run(store_kind_t kind)
{
    env_start(&E, kind, 0, NULL, JUMP_POLICIES);
    /* no hwm yet: any token */
    cr_assert_eq(put_tok(&E, "/orders/j", "1000", "a"), 200);
    cr_assert_eq(put_tok(&E, "/orders/j", "1100", "b"), 200, "exactly 100 above is fine");
    const char *poison[] = {"Fencing-Token: 999999999", NULL};
    fgt_resp_t r = gw_req(&E, "PUT", "/orders/j", poison, "c");
    cr_assert_eq(r.status, 409, "%s", r.body);
    json_t *j = fgt_resp_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "type")),
                     "urn:fencegate:problem:token-jump");
    cr_assert_eq(json_integer_value(json_object_get(j, "highest")), 1100);
    json_decref(j);
    fgt_resp_free(&r);
    cr_assert_eq(put_tok(&E, "/orders/j", "1201", "d"), 409, "101 above is a jump");
    char hwm[32];
    cr_assert(hwm_of(&E, "order:j", hwm, sizeof hwm));
    cr_assert_str_eq(hwm, "1100", "a refused jump leaves the hwm alone");
    cr_assert_eq(upstream_writes(&E, "/orders/j"), 2, "only the accepted writes arrived");
    json_t *es = audit_entries(&E, "resource=order:j");
    cr_assert_eq(json_array_size(es), 2);
    for (size_t i = 0; i < 2; i++)
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(es, i), "reason")),
                         "jump");
    json_decref(es);
    /* report-only: audited, forwarded, and the hwm still does not jump */
    cr_assert_eq(put_tok(&E, "/trial/t", "5", "a"), 200);
    cr_assert_eq(put_tok(&E, "/trial/t", "500", "b"), 200);
    cr_assert_eq(upstream_writes(&E, "/trial/t"), 2);
    es = audit_entries(&E, "resource=trial:t");
    cr_assert_eq(json_array_size(es), 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(es, 0), "reason")),
                     "report-only");
    json_decref(es);
    env_stop(&E);
}

Test(jump, sqlite, .timeout = 60)
{
    run(STORE_SQLITE);
}
Test(jump, redis, .timeout = 60)
{
    run(STORE_REDIS);
}
Test(jump, postgres, .timeout = 120)
{
    run(STORE_POSTGRES);
}
