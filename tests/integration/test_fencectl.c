/*
 * test_fencectl.c -- every fencectl subcommand against a running gateway with
 * a real Redis, checked against what the store holds; exit codes; --follow;
 * and paging through 5,000 refusals, each listed exactly once.
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gw_common.h"
#include "storage/store.h"

static env_t E;
static char token_file[600];

typedef struct run {
    int code; /* exit status, or -1 */
    char *out, *err;
} run_t;

static void run_free(run_t *r)
{
    free(r->out);
    free(r->err);
}

/* Run fencectl with `args` (NULL-terminated), stdout and stderr captured. */
static run_t ctl(const char *const *args)
{
    const char *dir = fgt_tmpdir();
    char outp[600], errp[600];
    snprintf(outp, sizeof outp, "%s/out", dir);
    snprintf(errp, sizeof errp, "%s/err", dir);
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)FG_BIN_FENCECTL;
    for (; *args && n < 31; args++) argv[n++] = (char *)*args;
    argv[n] = NULL;
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(o, 1);
        dup2(e, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    run_t r = {WIFEXITED(st) ? WEXITSTATUS(st) : -1, fgt_read_file(outp), fgt_read_file(errp)};
    if (!r.out) r.out = strdup("");
    if (!r.err) r.err = strdup("");
    return r;
}

static void start(const char *extra)
{
    snprintf(token_file, sizeof token_file, "%s/admin.token", fgt_tmpdir());
    FILE *f = fopen(token_file, "w");
    fputs("s3cr3t-admin\n", f);
    fclose(f);
    chmod(token_file, 0600);
    char gw[1024];
    snprintf(gw, sizeof gw, "admin_token_file = %s\n%s", token_file, extra ? extra : "");
    env_start(&E, STORE_REDIS, 0, gw, NULL);
}

static char *redis_get(const char *key)
{
    const char *argv[] = {"GET", key, NULL};
    return fgt_redis_cmd(&E.redis, argv);
}

Test(fencectl, help_and_usage, .timeout = 60)
{
    const char *cmds[] = {"status", "hwm", "audit", "raise", "reset"};
    for (size_t i = 0; i < 5; i++) {
        const char *a[] = {cmds[i], "--help", NULL};
        run_t r = ctl(a);
        cr_assert_eq(r.code, 0, "%s --help", cmds[i]);
        cr_assert(strstr(r.out, "usage: fencectl") && strstr(r.out, cmds[i]), "%s", r.out);
        run_free(&r);
    }
    const char *h[] = {"--help", NULL};
    run_t r = ctl(h);
    cr_assert(r.code == 0 && strstr(r.out, "Exit codes"));
    run_free(&r);
    const char *bad[][5] = {{"frobnicate", NULL},
                            {"--admin", "http://127.0.0.1:1", "raise", NULL},
                            {"--admin", "http://127.0.0.1:1", NULL},
                            {"--admin", "http://127.0.0.1:1", "raise", "k"}};
    for (size_t i = 0; i < 4; i++) {
        r = ctl(bad[i]);
        cr_assert_eq(r.code, 2, "usage error %zu: %d %s", i, r.code, r.err);
        run_free(&r);
    }
    const char *gone[] = {"--admin", "http://127.0.0.1:1", "status", NULL};
    r = ctl(gone);
    cr_assert_eq(r.code, 3, "unreachable: %d %s", r.code, r.err);
    run_free(&r);
}

Test(fencectl, every_subcommand, .timeout = 120)
{
    start(NULL);
    cr_assert_eq(put_tok(&E, "/orders/1", "10", "v"), 200);
    for (int t = 5; t <= 7; t++) {
        char tok[8];
        snprintf(tok, sizeof tok, "%d", t);
        cr_assert_eq(put_tok(&E, "/orders/1", tok, "v"), 409);
    }
    /* status, from the gateway's config file */
    const char *st[] = {"-c", E.gw.conf, "status", NULL};
    run_t r = ctl(st);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "ready") && strstr(r.out, "appendfsync=always") &&
                  strstr(r.out, "(durable)") && strstr(r.out, "refusals in the last minute: 3") &&
                  strstr(r.out, "redis://127.0.0.1"),
              "%s", r.out);
    run_free(&r);
    const char *stj[] = {"-c", E.gw.conf, "status", "--json", NULL};
    r = ctl(stj);
    json_t *j = json_loads(r.out, 0, NULL);
    cr_assert(j && json_integer_value(json_object_get(j, "refusals_last_minute")) == 3, "%s",
              r.out);
    json_decref(j);
    run_free(&r);
    /* flags instead of the config; a wrong token is 4 */
    char wrong[600];
    snprintf(wrong, sizeof wrong, "%s/wrong", fgt_tmpdir());
    FILE *f = fopen(wrong, "w");
    fputs("nope", f);
    fclose(f);
    const char *bad[] = {"--admin", E.gw.admin_url, "--token-file", wrong, "hwm", "order:1", NULL};
    r = ctl(bad);
    cr_assert_eq(r.code, 4, "%d %s", r.code, r.err);
    run_free(&r);
    /* hwm */
    const char *hw[] = {"--admin", E.gw.admin_url, "--token-file", token_file,
                        "hwm",     "order:1",      "order:none",   NULL};
    r = ctl(hw);
    cr_assert_eq(r.code, 1, "one key has no hwm");
    cr_assert(strstr(r.out, "order:1\t10\n") && strstr(r.out, "order:none\t(none)"), "%s", r.out);
    run_free(&r);
    /* audit, table and JSON lines, against the store's own stream */
    const char *au[] = {"-c", E.gw.conf, "audit", "--resource", "order:1", NULL};
    r = ctl(au);
    cr_assert_eq(r.code, 0);
    cr_assert(strstr(r.out, "REASON") && strstr(r.out, "stale"), "%s", r.out);
    run_free(&r);
    const char *aj[] = {"-c", E.gw.conf, "audit", "--json", "--reason", "stale", NULL};
    r = ctl(aj);
    cr_assert_eq(r.code, 0);
    int lines = 0;
    for (char *line = strtok(r.out, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        json_t *e = json_loads(line, 0, NULL);
        cr_assert(e, "a JSON line: %s", line);
        cr_assert_eq(json_integer_value(json_object_get(e, "token")), 7 - lines, "newest first");
        cr_assert_eq(json_integer_value(json_object_get(e, "highest")), 10);
        json_decref(e);
    }
    cr_assert_eq(lines, 3);
    run_free(&r);
    const char *xlen[] = {"XLEN", "fencegate:audit", NULL};
    char *n = fgt_redis_cmd(&E.redis, xlen);
    cr_assert_str_eq(n, "3", "the store holds those three records");
    free(n);
    /* raise: up, never down; checked in the store */
    const char *ra[] = {"-c", E.gw.conf, "raise", "order:1", "20", NULL};
    r = ctl(ra);
    cr_assert(r.code == 0 && strstr(r.out, "order:1\t20"), "%d %s %s", r.code, r.out, r.err);
    run_free(&r);
    const char *ra2[] = {"-c", E.gw.conf, "raise", "order:1", "15", NULL};
    r = ctl(ra2);
    cr_assert(r.code == 0 && strstr(r.out, "order:1\t20"), "raise never lowers: %s", r.out);
    run_free(&r);
    char *v = redis_get("fencegate:hwm:order:1");
    cr_assert_str_eq(v, "20");
    free(v);
    cr_assert_eq(put_tok(&E, "/orders/1", "19", "v"), 409, "the gateway enforces the raise");
    /* reset: refused without --force, then lowers, audited */
    const char *rs[] = {"-c", E.gw.conf,  "reset",    "order:1", "--to",
                        "3",  "--reason", "poisoned", NULL};
    r = ctl(rs);
    cr_assert_eq(r.code, 1, "reset without --force");
    cr_assert(strstr(r.err, "--force"));
    run_free(&r);
    v = redis_get("fencegate:hwm:order:1");
    cr_assert_str_eq(v, "20", "nothing changed without --force");
    free(v);
    const char *rsf[] = {"-c",      E.gw.conf, "reset",    "order:1",
                         "--to",    "3",       "--reason", "token poisoned by job 7",
                         "--force", NULL};
    r = ctl(rsf);
    cr_assert(r.code == 0 && strstr(r.out, "order:1\t3"), "%d %s %s", r.code, r.out, r.err);
    run_free(&r);
    v = redis_get("fencegate:hwm:order:1");
    cr_assert_str_eq(v, "3", "reset lowered the hwm in the store");
    free(v);
    cr_assert_eq(put_tok(&E, "/orders/1", "4", "v"), 200, "writers with newer tokens pass again");
    const char *ar[] = {"-c", E.gw.conf, "audit", "--json", "--reason", "reset", NULL};
    r = ctl(ar);
    j = json_loads(r.out, 0, NULL);
    cr_assert(j, "%s", r.out);
    cr_assert_eq(json_integer_value(json_object_get(j, "token")), 3);
    cr_assert_eq(json_integer_value(json_object_get(j, "highest")), 20);
    cr_assert_str_eq(json_string_value(json_object_get(j, "detail")), "token poisoned by job 7");
    cr_assert_str_eq(json_string_value(json_object_get(j, "method")), "POST");
    cr_assert_str_eq(json_string_value(json_object_get(j, "client")), "127.0.0.1");
    json_decref(j);
    run_free(&r);
    /* u64 exactness end to end */
    const char *big[] = {"-c", E.gw.conf, "raise", "order:big", "18446744073709551615", NULL};
    r = ctl(big);
    cr_assert(r.code == 0 && strstr(r.out, "order:big\t18446744073709551615"), "%s", r.out);
    run_free(&r);
    v = redis_get("fencegate:hwm:order:big");
    cr_assert_str_eq(v, "18446744073709551615");
    free(v);
    env_stop(&E);
}

Test(fencectl, raise_and_reset_need_a_token_file, .timeout = 60)
{
    env_start(&E, STORE_REDIS, 0, NULL, NULL);
    const char *ra[] = {"-c", E.gw.conf, "raise", "order:1", "20", NULL};
    run_t r = ctl(ra);
    cr_assert_eq(r.code, 4, "403 without admin_token_file: %d %s", r.code, r.err);
    run_free(&r);
    char *v = redis_get("fencegate:hwm:order:1");
    cr_assert_null(v, "nothing was written");
    env_stop(&E);
}

Test(fencectl, follow, .timeout = 60)
{
    start(NULL);
    cr_assert_eq(put_tok(&E, "/orders/f", "100", "v"), 200);
    cr_assert_eq(put_tok(&E, "/orders/f", "1", "v"), 409);
    char outp[600];
    snprintf(outp, sizeof outp, "%s/follow.out", fgt_tmpdir());
    pid_t pid = fork();
    if (pid == 0) {
        int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(o, 1);
        execl(FG_BIN_FENCECTL, FG_BIN_FENCECTL, "-c", E.gw.conf, "audit", "--follow", "--json",
              (char *)NULL);
        _exit(127);
    }
    /* wait for the first record, then make three more */
    char *text = NULL;
    for (uint64_t end = fg_now_mono_ms() + 10000; fg_now_mono_ms() < end; usleep(20000)) {
        free(text);
        text = fgt_read_file(outp);
        if (text && strstr(text, "\"token\":1,")) break;
    }
    cr_assert(text && strstr(text, "\"token\":1,"), "the existing record is printed");
    for (int t = 2; t <= 4; t++) {
        char tok[8];
        snprintf(tok, sizeof tok, "%d", t);
        cr_assert_eq(put_tok(&E, "/orders/f", tok, "v"), 409);
    }
    for (uint64_t end = fg_now_mono_ms() + 10000; fg_now_mono_ms() < end; usleep(50000)) {
        free(text);
        text = fgt_read_file(outp);
        if (text && strstr(text, "\"token\":4,")) break;
    }
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "follow ends with 0 on SIGTERM");
    const char *p1 = strstr(text, "\"token\":1,"), *p2 = strstr(text, "\"token\":2,"),
               *p3 = strstr(text, "\"token\":3,"), *p4 = strstr(text, "\"token\":4,");
    cr_assert(p1 && p2 && p3 && p4 && p1 < p2 && p2 < p3 && p3 < p4,
              "new records oldest first, each once:\n%s", text);
    cr_assert_null(strstr(p4 + 1, "\"token\":4,"), "printed once");
    free(text);
    env_stop(&E);
}

/* 5,000 refusals, listed through the cursor exactly once each. */
Test(fencectl, paging_5000_refusals, .timeout = 300)
{
    start(NULL);
    cr_assert_eq(put_tok(&E, "/orders/p", "1000000", "v"), 200);
    enum { N = 5000 };
    for (int i = 1; i <= N; i++) {
        char tok[16];
        snprintf(tok, sizeof tok, "%d", i);
        cr_assert_eq(put_tok(&E, "/orders/p", tok, "v"), 409);
    }
    cr_assert_eq(put_tok(&E, "/orders/other", "1", "v"), 200);
    cr_assert_eq(put_tok(&E, "/orders/other", "0", "v"), 409, "a record the filter leaves out");
    const char *a[] = {"-c",      E.gw.conf, "audit",  "--resource", "order:p",
                       "--limit", "0",       "--json", NULL};
    run_t r = ctl(a);
    cr_assert_eq(r.code, 0, "%s", r.err);
    static bool seen[N + 1];
    int lines = 0, prev = N + 1;
    for (char *line = strtok(r.out, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        json_t *e = json_loads(line, 0, NULL);
        cr_assert(e);
        int t = (int)json_integer_value(json_object_get(e, "token"));
        cr_assert(t >= 1 && t <= N && !seen[t], "token %d listed once", t);
        cr_assert_lt(t, prev, "newest first");
        cr_assert_str_eq(json_string_value(json_object_get(e, "resource")), "order:p");
        seen[t] = true;
        prev = t;
        json_decref(e);
    }
    cr_assert_eq(lines, N, "every refusal exactly once");
    run_free(&r);
    const char *xlen[] = {"XLEN", "fencegate:audit", NULL};
    char *n = fgt_redis_cmd(&E.redis, xlen);
    cr_assert_eq(strtol(n, NULL, 10), N + 1, "the store holds N + 1 records");
    free(n);
    env_stop(&E);
}

static fgt_resp_t api(const char *method, const char *path, const char *body, bool auth)
{
    char url[512], h[128];
    snprintf(url, sizeof url, "%s%s", E.gw.admin_url, path);
    snprintf(h, sizeof h, "Authorization: Bearer s3cr3t-admin");
    const char *hdrs[] = {h, NULL};
    return fgt_http(method, url, auth ? hdrs : NULL, body, body ? strlen(body) : 0);
}

/* The admin API itself: errors of raise/reset, and the cursor's `next`. */
Test(admin_api, raise_reset_errors_and_cursor, .timeout = 60)
{
    start(NULL);
    struct {
        const char *method, *path, *body;
        bool auth;
        long want;
    } cases[] = {
        {"POST", "/v1/resources/order:1/reset", "{\"token\": 5}", true, 400},
        {"POST", "/v1/resources/order:1/reset", "{\"token\": 5, \"reason\": \"\"}", true, 400},
        {"POST", "/v1/resources/order:1/raise", "{\"token\": -1}", true, 400},
        {"POST", "/v1/resources/order:1/raise", "{\"token\": \"1e3\"}", true, 400},
        {"POST", "/v1/resources/order:1/raise", "not json", true, 400},
        {"POST", "/v1/resources/order:1/raise", "{\"token\": 5}", false, 401},
        {"GET", "/v1/resources/order:1/raise", NULL, true, 405},
        {"POST", "/v1/resources/order:1/lower", "{\"token\": 5}", true, 404},
        {"GET", "/v1/audit?cursor=abc", NULL, true, 400},
        {"GET", "/v1/audit?cursor=1-0&after=1-0", NULL, true, 400},
        {"GET", "/v1/audit?reason=jump", NULL, true, 200},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fgt_resp_t r = api(cases[i].method, cases[i].path, cases[i].body, cases[i].auth);
        cr_assert_eq(r.status, cases[i].want, "%s %s %s -> %ld %s", cases[i].method, cases[i].path,
                     cases[i].body ? cases[i].body : "", r.status, r.body);
        fgt_resp_free(&r);
    }
    char *v = redis_get("fencegate:hwm:order:1");
    cr_assert_null(v, "no refused call changed the store");
    fgt_resp_t r = api("POST", "/v1/resources/order:1/raise", "{\"token\": 9}", true);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "{\"resource\":\"order:1\",\"highest\":9}");
    fgt_resp_free(&r);
    for (int t = 1; t <= 5; t++) {
        char tok[8];
        snprintf(tok, sizeof tok, "%d", t);
        cr_assert_eq(put_tok(&E, "/orders/1", tok, "v"), 409);
    }
    /* limit 2: pages of 2, 2, 1; `next` absent on the last */
    char path[256] = "/v1/audit?limit=2";
    int pages = 0, total = 0;
    for (;;) {
        long st;
        json_t *j = admin_get(&E, path, &st);
        cr_assert_eq(st, 401, "/v1/audit needs the token");
        json_decref(j);
        r = api("GET", path, NULL, true);
        cr_assert_eq(r.status, 200);
        j = fgt_resp_json(&r);
        fgt_resp_free(&r);
        total += (int)json_array_size(json_object_get(j, "entries"));
        pages++;
        const char *next = json_string_value(json_object_get(j, "next"));
        if (!next) {
            json_decref(j);
            break;
        }
        snprintf(path, sizeof path, "/v1/audit?limit=2&cursor=%s", next);
        json_decref(j);
        cr_assert_lt(pages, 10);
    }
    cr_assert_eq(pages, 3);
    cr_assert_eq(total, 5);
    env_stop(&E);
}
