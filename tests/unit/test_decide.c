/*
 * test_decide.c -- SPEC steps 1-6 from a table: method, raw target and
 * headers in; action, class, status, problem type, key and token out.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "policy/decide.h"
#include "policy/error.h"

/* "Name: value" lines, NULL-terminated */
typedef struct hdrs {
    const char *const *lines;
    char buf[8][128];
} hdrs_t;

static int count(void *ctx, const char *name, const char **first)
{
    hdrs_t *h = ctx;
    int n = 0;
    *first = NULL;
    for (size_t i = 0; h->lines && h->lines[i]; i++) {
        const char *colon = strchr(h->lines[i], ':');
        size_t nl = (size_t)(colon - h->lines[i]);
        if (nl != strlen(name) || strncasecmp(h->lines[i], name, nl) != 0) continue;
        if (n == 0) {
            const char *v = colon + 1;
            while (*v == ' ') v++;
            snprintf(h->buf[0], sizeof h->buf[0], "%s", v);
            *first = h->buf[0];
        }
        n++;
    }
    return n;
}

typedef struct dcase {
    const char *method, *target;
    const char *const *hdrs;
    fg_action_t action;
    fg_class_t cls;
    int status;
    const char *type;
    const char *key;
    uint64_t token;
    const char *path; /* canonical path, when not refused at step 1 */
} dcase_t;

#define HDRS(...) ((const char *const[]){__VA_ARGS__, NULL})

static const char *conf =
    "[gateway]\nupstream = http://127.0.0.1:9000\n"
    "[policy orders]\nmatch = /orders/{id}\nkey = order:{id}\n"
    "[policy docs]\nmatch = /docs/{tenant}/{rest*}\nkey = doc:{tenant}:{rest}\n"
    "token_header = X-Lock-Token\nread_methods = GET PROPFIND\n"
    "[policy soft]\nmatch = /soft/{id}\nkey = soft:{id}\non_missing = forward\n"
    "[policy trial]\nmatch = /trial/{id}\nkey = trial:{id}\nmode = report-only\n"
    "[policy open]\nmatch = /open/{id}\nkey = open:{id}\nmode = off\n";

static const dcase_t cases[] = {
    {"PUT", "/orders/42", HDRS("Fencing-Token: 7"), FG_ACT_CHECK, FG_CLASS_FENCED, 0, NULL,
     "order:42", 7, "/orders/42"},
    {"PUT", "/orders/42", HDRS("fencing-token: 18446744073709551615"), FG_ACT_CHECK,
     FG_CLASS_FENCED, 0, NULL, "order:42", UINT64_MAX, "/orders/42"},
    {"GET", "/orders/42", NULL, FG_ACT_FORWARD, FG_CLASS_READ, 0, NULL, NULL, 0, "/orders/42"},
    {"HEAD", "/orders/42?x=1", NULL, FG_ACT_FORWARD, FG_CLASS_READ, 0, NULL, NULL, 0, "/orders/42"},
    {"get", "/orders/42", NULL, FG_ACT_REFUSE, FG_CLASS_MISSING, 428, "missing-token", "order:42",
     0, "/orders/42"},
    {"put", "/orders/42", HDRS("Fencing-Token: 1"), FG_ACT_CHECK, FG_CLASS_FENCED, 0, NULL,
     "order:42", 1, "/orders/42"},
    {"MKCOL", "/orders/42", NULL, FG_ACT_REFUSE, FG_CLASS_MISSING, 428, "missing-token", "order:42",
     0, "/orders/42"},
    {"PUT", "/orders/42", HDRS("Fencing-Token: 1", "Fencing-Token: 1"), FG_ACT_REFUSE,
     FG_CLASS_MALFORMED, 400, "malformed-token", "order:42", 0, "/orders/42"},
    {"PUT", "/orders/42", HDRS("Fencing-Token: 1,2"), FG_ACT_REFUSE, FG_CLASS_MALFORMED, 400,
     "malformed-token", "order:42", 0, "/orders/42"},
    {"PUT", "/orders/42", HDRS("Fencing-Token: 18446744073709551616"), FG_ACT_REFUSE,
     FG_CLASS_MALFORMED, 400, "malformed-token", "order:42", 0, "/orders/42"},
    {"PUT", "/orders/42", HDRS("Fencing-Token: -1"), FG_ACT_REFUSE, FG_CLASS_MALFORMED, 400,
     "malformed-token", "order:42", 0, "/orders/42"},
    {"PUT", "/orders/42", HDRS("Fencing-Token: 0x10"), FG_ACT_REFUSE, FG_CLASS_MALFORMED, 400,
     "malformed-token", "order:42", 0, "/orders/42"},
    {"PUT", "/orders/42", HDRS("Fencing-Token: "), FG_ACT_REFUSE, FG_CLASS_MALFORMED, 400,
     "malformed-token", "order:42", 0, "/orders/42"},
    {"PUT", "/orders/%34%32", HDRS("Fencing-Token: 3"), FG_ACT_CHECK, FG_CLASS_FENCED, 0, NULL,
     "order:42", 3, "/orders/42"},
    {"PUT", "/orders/%c3%a9", HDRS("Fencing-Token: 3"), FG_ACT_CHECK, FG_CLASS_FENCED, 0, NULL,
     "order:%C3%A9", 3, "/orders/%C3%A9"},
    {"PUT", "/orders/../orders/42", HDRS("Fencing-Token: 3"), FG_ACT_REFUSE, FG_CLASS_NON_CANONICAL,
     400, "non-canonical-path", NULL, 0, NULL},
    {"PUT", "/orders//42", NULL, FG_ACT_REFUSE, FG_CLASS_NON_CANONICAL, 400, "non-canonical-path",
     NULL, 0, NULL},
    {"PUT", "http://h/orders/42", NULL, FG_ACT_REFUSE, FG_CLASS_NON_CANONICAL, 400,
     "non-canonical-path", NULL, 0, NULL},
    {"GET", "/orders/%2e%2e/x", NULL, FG_ACT_REFUSE, FG_CLASS_NON_CANONICAL, 400,
     "non-canonical-path", NULL, 0, NULL},
    {"PUT", "/ORDERS/42", NULL, FG_ACT_REFUSE, FG_CLASS_UNMATCHED, 403, "unmatched-write", NULL, 0,
     "/ORDERS/42"},
    {"PUT", "/orders/42/", NULL, FG_ACT_REFUSE, FG_CLASS_UNMATCHED, 403, "unmatched-write", NULL, 0,
     "/orders/42/"},
    {"GET", "/elsewhere", NULL, FG_ACT_FORWARD, FG_CLASS_READ, 0, NULL, NULL, 0, "/elsewhere"},
    {"OPTIONS", "/elsewhere", NULL, FG_ACT_FORWARD, FG_CLASS_READ, 0, NULL, NULL, 0, "/elsewhere"},
    {"PROPFIND", "/elsewhere", NULL, FG_ACT_REFUSE, FG_CLASS_UNMATCHED, 403, "unmatched-write",
     NULL, 0, "/elsewhere"},
    {"PROPFIND", "/docs/t/a/b", NULL, FG_ACT_FORWARD, FG_CLASS_READ, 0, NULL, NULL, 0,
     "/docs/t/a/b"},
    {"HEAD", "/docs/t/a/b", NULL, FG_ACT_REFUSE, FG_CLASS_MISSING, 428, "missing-token",
     "doc:t:a/b", 0, "/docs/t/a/b"},
    {"PUT", "/docs/t/a/b", HDRS("Fencing-Token: 5"), FG_ACT_REFUSE, FG_CLASS_MISSING, 428,
     "missing-token", "doc:t:a/b", 0, "/docs/t/a/b"},
    {"PUT", "/docs/t/a/b", HDRS("X-Lock-Token: 5"), FG_ACT_CHECK, FG_CLASS_FENCED, 0, NULL,
     "doc:t:a/b", 5, "/docs/t/a/b"},
    {"PUT", "/soft/1", NULL, FG_ACT_FORWARD, FG_CLASS_UNCHECKED, 0, NULL, "soft:1", 0, "/soft/1"},
    {"PUT", "/soft/1", HDRS("Fencing-Token: x"), FG_ACT_REFUSE, FG_CLASS_MALFORMED, 400,
     "malformed-token", "soft:1", 0, "/soft/1"},
    {"PUT", "/trial/1", NULL, FG_ACT_FORWARD, FG_CLASS_REPORT_ONLY, 0, NULL, "trial:1", 0,
     "/trial/1"},
    {"PUT", "/trial/1", HDRS("Fencing-Token: x"), FG_ACT_FORWARD, FG_CLASS_REPORT_ONLY, 0, NULL,
     "trial:1", 0, "/trial/1"},
    {"PUT", "/trial/1", HDRS("Fencing-Token: 9"), FG_ACT_CHECK, FG_CLASS_FENCED, 0, NULL, "trial:1",
     9, "/trial/1"},
    {"DELETE", "/open/1", NULL, FG_ACT_FORWARD, FG_CLASS_UNCHECKED, 0, NULL, NULL, 0, "/open/1"},
};

Test(decide, the_table)
{
    fg_config_t *cfg = NULL;
    char err[FG_CONFIG_ERR_LEN];
    cr_assert_eq(fg_config_load_string("t.conf", conf, &cfg, err, sizeof err), 0, "%s", err);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const dcase_t *c = &cases[i];
        hdrs_t h = {.lines = c->hdrs};
        fg_header_view_t hv = {count, &h};
        char path[256], key[FG_KEY_MAX];
        fg_decision_t d;
        cr_assert_eq(fg_decide(cfg, c->method, c->target, strlen(c->target), &hv, path, sizeof path,
                               key, &d),
                     0);
        cr_expect_eq(d.action, c->action, "case %zu %s %s: action %d", i, c->method, c->target,
                     d.action);
        cr_expect_eq(d.cls, c->cls, "case %zu %s %s: class %d", i, c->method, c->target, d.cls);
        cr_expect_eq(d.status, c->status, "case %zu: status %d", i, d.status);
        if (c->type) cr_expect_str_eq(d.type, c->type, "case %zu", i);
        if (c->action == FG_ACT_REFUSE) cr_expect(d.detail[0], "case %zu: a refusal says why", i);
        if (c->key)
            cr_expect(d.key && strcmp(d.key, c->key) == 0, "case %zu: key %s", i,
                      d.key ? d.key : "(null)");
        if (c->action == FG_ACT_CHECK) {
            cr_expect(d.has_token, "case %zu", i);
            cr_expect_eq(d.token, c->token, "case %zu", i);
        } else {
            cr_expect_not(d.has_token, "case %zu", i);
        }
        if (c->path)
            cr_expect(d.path && d.path_len == strlen(c->path) &&
                          memcmp(d.path, c->path, d.path_len) == 0,
                      "case %zu: path %.*s", i, (int)d.path_len, d.path ? d.path : "");
        else
            cr_expect_null(d.path, "case %zu", i);
    }
    fg_config_free(cfg);
}

Test(decide, unmatched_writes_forward_and_the_query_is_kept_raw)
{
    fg_config_t *cfg = NULL;
    char err[FG_CONFIG_ERR_LEN];
    cr_assert_eq(fg_config_load_string("t.conf",
                                       "[gateway]\nupstream = http://h:1\n"
                                       "unmatched_writes = forward\n",
                                       &cfg, err, sizeof err),
                 0, "%s", err);
    hdrs_t h = {0};
    fg_header_view_t hv = {count, &h};
    char path[64], key[FG_KEY_MAX];
    fg_decision_t d;
    const char *t = "/any/%7ething?q=%2F&x";
    cr_assert_eq(fg_decide(cfg, "DELETE", t, strlen(t), &hv, path, sizeof path, key, &d), 0);
    cr_assert_eq(d.action, FG_ACT_FORWARD);
    cr_assert_eq(d.cls, FG_CLASS_UNCHECKED);
    cr_assert_eq(d.path_len, strlen("/any/~thing"));
    cr_assert(memcmp(d.path, "/any/~thing", d.path_len) == 0);
    cr_assert_eq(d.query_len, strlen("q=%2F&x"));
    cr_assert(memcmp(d.query, "q=%2F&x", d.query_len) == 0);
    cr_assert_eq(fg_decide(cfg, "GET", t, strlen(t), &hv, path, 4, key, &d), FG_EINVAL,
                 "a path buffer shorter than the target is refused");
    fg_config_free(cfg);
}
