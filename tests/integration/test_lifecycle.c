/*
 * test_lifecycle.c -- the command line and signals: -t checks a file (and
 * names file:line on errors), SIGHUP swaps policies (a bad file keeps the old
 * ones), SIGTERM drains in-flight requests and exits 0.
 */
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw_common.h"

static env_t E;

static int run_check(const char *text, char *out, size_t outlen)
{
    char path[512];
    snprintf(path, sizeof path, "%s/check.conf", fgt_tmpdir());
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s -t -c %s 2>&1", FG_BIN_GATEWAY, path);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(lifecycle, check_config, .timeout = 30)
{
    char out[2048];
    cr_assert_eq(run_check("[gateway]\nupstream = http://127.0.0.1:1\n[policy a]\nmatch = /a/{x}\n"
                           "key = a:{x}\n",
                           out, sizeof out),
                 0, "%s", out);
    cr_assert_eq(run_check("[gateway]\nupstream = http://127.0.0.1:1\n[policy a]\nmatch = /a/{x}\n"
                           "key = a:{y}\n",
                           out, sizeof out),
                 1);
    cr_assert(strstr(out, "check.conf:5"), "the error names file:line: %s", out);
    cr_assert_eq(
        run_check("[gateway]\nupstream = http://127.0.0.1:1\nbogus = 1\n", out, sizeof out), 1);
    cr_assert(strstr(out, "check.conf:3"), "%s", out);
}

Test(lifecycle, sighup_reload, .timeout = 60)
{
    env_start(&E, STORE_SQLITE, 0, NULL,
              "[policy orders]\nmatch = /orders/{id}\nkey = order:{id}\n");
    cr_assert_eq(put_tok(&E, "/items/1", "1", "v"), 403, "no policy for /items yet");
    /* add a policy and reload */
    char *conf = fgt_read_file(E.gw.conf);
    cr_assert(conf);
    FILE *f = fopen(E.gw.conf, "w");
    fprintf(f, "%s\n[policy items]\nmatch = /items/{id}\nkey = item:{id}\n", conf);
    fclose(f);
    kill(E.gw.proc.pid, SIGHUP);
    long st = 0;
    for (int i = 0; i < 50 && st != 200; i++) {
        usleep(100 * 1000);
        st = put_tok(&E, "/items/1", "1", "v");
    }
    cr_assert_eq(st, 200, "the new policy is live after SIGHUP");
    /* a bad file keeps the running policies */
    f = fopen(E.gw.conf, "w");
    fprintf(f, "%s\n[policy items]\nmatch = /items/{id}\nkey = item:{nope}\n", conf);
    fclose(f);
    kill(E.gw.proc.pid, SIGHUP);
    usleep(300 * 1000);
    cr_assert_eq(put_tok(&E, "/items/1", "0", "v"), 409, "old policies still enforced");
    cr_assert_eq(put_tok(&E, "/items/1", "2", "v"), 200);
    char *log = fgt_read_file(E.gw.proc.log);
    cr_assert(log && strstr(log, "reload failed"), "the failed reload is logged");
    free(log);
    free(conf);
    env_stop(&E);
}

static void *slow_put(void *arg)
{
    long *st = arg;
    const char *h[] = {"Fencing-Token: 1", "X-Delay-Ms: 800", NULL};
    fgt_resp_t r = gw_req(&E, "PUT", "/orders/drain", h, "v");
    *st = r.status;
    fgt_resp_free(&r);
    return NULL;
}

Test(lifecycle, sigterm_drains, .timeout = 60)
{
    env_start(&E, STORE_SQLITE, 0, NULL, NULL);
    long st = 0;
    pthread_t th;
    pthread_create(&th, NULL, slow_put, &st);
    usleep(300 * 1000); /* the PUT is now waiting at the upstream */
    int status = fgt_gateway_stop(&E.gw);
    pthread_join(th, NULL);
    cr_assert_eq(st, 200, "the in-flight write finished during the drain (got %ld)", st);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
    cr_assert_eq(upstream_writes(&E, "/orders/drain"), 1);
    if (E.has_redis) fgt_redis_stop(&E.redis);
    fgt_upstream_stop(&E.up);
}

/* The janitor keeps the audit trail bounded in the background: audit_max
 * (default 1000000) keeps the newest records and never touches a hwm.
 * (audit_retention's minimum is 1m since the config bounds; its rule is
 * covered against every store by the contract suite's retention case.) */
Test(lifecycle, audit_cap, .timeout = 90)
{
    env_start(&E, STORE_SQLITE, 0, "audit_max = 5\n", NULL);
    cr_assert_eq(put_tok(&E, "/orders/ret", "100", "v"), 200);
    for (int i = 0; i < 30; i++) cr_assert_eq(put_tok(&E, "/orders/ret", "4", "v"), 409);
    size_t n = 30;
    for (int i = 0; i < 300 && n > 5; i++) {
        usleep(100 * 1000);
        json_t *es = audit_entries(&E, "resource=order:ret&limit=1000");
        n = json_array_size(es);
        json_decref(es);
    }
    cr_assert_eq(n, 5, "the janitor keeps the newest audit_max records");
    char hwm[32];
    cr_assert(hwm_of(&E, "order:ret", hwm, sizeof hwm));
    cr_assert_str_eq(hwm, "100", "retention never touches high-water marks");
    env_stop(&E);
}
