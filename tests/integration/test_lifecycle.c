/*
 * test_lifecycle.c -- the command line and signals: -t checks a file (and
 * names file:line on errors), SIGHUP swaps policies (a bad file keeps the old
 * ones), SIGTERM drains in-flight requests and exits 0; each step is told to
 * systemd (sd_notify) when the gateway runs as a Type=notify service.
 */
#include <poll.h>
#include <pthread.h>
#include <sqlite3.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw_common.h"
#include "storage/store.h"

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
    /* wait for the gateway to have read (and refused) the file: its log says so */
    char *log = NULL;
    for (int i = 0; i < 100; i++) {
        free(log);
        log = fgt_read_file(E.gw.proc.log);
        if (log && strstr(log, "reload failed")) break;
        usleep(50 * 1000);
    }
    cr_assert(log && strstr(log, "reload failed"), "the failed reload is logged");
    free(log);
    cr_assert_eq(put_tok(&E, "/items/1", "0", "v"), 409, "old policies still enforced");
    cr_assert_eq(put_tok(&E, "/items/1", "2", "v"), 200);
    free(conf);
    env_stop(&E);
}

/* The next sd_notify datagram on `fd` (deadline 10 s), NUL-terminated. */
static void next_notify(int fd, char *buf, size_t len)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 10000), 1, "no sd_notify message within 10 s");
    ssize_t n = recv(fd, buf, len - 1, 0);
    cr_assert_gt(n, 0);
    buf[n] = '\0';
}

/* systemd's notify protocol, with the test as the service manager: a
 * datagram socket named by $NOTIFY_SOCKET. */
Test(lifecycle, tells_systemd_each_step, .timeout = 60)
{
#ifndef FG_HAVE_SYSTEMD
    cr_skip_test("fencegate was built without libsystemd");
#endif
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/notify", fgt_tmpdir());
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    setenv("NOTIFY_SOCKET", sa.sun_path, 1);
    env_start(&E, STORE_SQLITE, 0, NULL, NULL);
    unsetenv("NOTIFY_SOCKET");
    char msg[1024];
    next_notify(fd, msg, sizeof msg);
    cr_assert(strstr(msg, "READY=1"), "%s", msg);
    /* READY only once the gateway serves (fgt_gateway_start waited for
     * /healthz; the proxy port must answer as well) */
    cr_assert_eq(put_tok(&E, "/orders/n", "1", "v"), 200);

    kill(E.gw.proc.pid, SIGHUP);
    next_notify(fd, msg, sizeof msg);
    cr_assert(strstr(msg, "RELOADING=1"), "%s", msg);
    const char *mono = strstr(msg, "MONOTONIC_USEC=");
    cr_assert(mono && mono[15] >= '1' && mono[15] <= '9', "%s", msg);
    next_notify(fd, msg, sizeof msg);
    cr_assert(strstr(msg, "READY=1"), "READY=1 after the reload: %s", msg);

    env_stop(&E);
    next_notify(fd, msg, sizeof msg);
    cr_assert(strstr(msg, "STOPPING=1"), "%s", msg);
    close(fd);
}

static void *slow_put(void *arg)
{
    long *st = arg;
    const char *h[] = {"Fencing-Token: 1", "X-Hold: 1", NULL};
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
    cr_assert(fgt_wait_upstream_stat(&E.up, "held", 1, 10000), "the PUT is at the upstream");
    kill(E.gw.proc.pid, SIGTERM);
    /* the gateway stops accepting while the held write drains */
    for (int i = 0; i < 200 && fgt_wait_port(E.gw.port, 0); i++) usleep(20 * 1000);
    cr_assert_not(fgt_wait_port(E.gw.port, 0), "still accepting while draining");
    fgt_upstream_release(&E.up);
    int status = fgt_gateway_stop(&E.gw);
    pthread_join(th, NULL);
    cr_assert_eq(st, 200, "the in-flight write finished during the drain (got %ld)", st);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
    cr_assert_eq(upstream_writes(&E, "/orders/drain"), 1);
    if (E.has_redis) fgt_redis_stop(&E.redis);
    fgt_upstream_stop(&E.up);
}

/* audit_retention and audit_max delete audit records in the background:
 * the oldest beyond the cap, and those older than the retention. */
Test(lifecycle, audit_retention, .timeout = 90)
{
    env_start(&E, STORE_SQLITE, 0, "audit_retention = 1m\naudit_max = 3\n", NULL);
    cr_assert_eq(put_tok(&E, "/orders/ret", "50", "v"), 200);
    for (int t = 40; t < 45; t++) {
        char tok[8];
        snprintf(tok, sizeof tok, "%d", t);
        cr_assert_eq(put_tok(&E, "/orders/ret", tok, "v"), 409);
    }
    /* a record from two minutes ago, written straight into the state file */
    char db[600];
    snprintf(db, sizeof db, "%s/fg.db", E.gw.dir);
    sqlite3 *h = NULL;
    cr_assert_eq(sqlite3_open(db, &h), SQLITE_OK);
    sqlite3_busy_timeout(h, 5000);
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO audit(time_ms, resource, method, path, reason, token) "
             "VALUES (%lld, 'order:old', 'PUT', '/orders/old', 'stale', '1')",
             (long long)fg_now_wall_ms() - 120000);
    cr_assert_eq(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(h));
    sqlite3_close(h);
    json_t *es = audit_entries(&E, "resource=order:old");
    cr_assert_eq(json_array_size(es), 1);
    json_decref(es);
    /* the janitor runs every few seconds: poll until it has, with a deadline */
    size_t old = 1, kept = 5;
    for (int i = 0; i < 600 && (old || kept > 3); i++) {
        usleep(100 * 1000);
        es = audit_entries(&E, "resource=order:old");
        old = json_array_size(es);
        json_decref(es);
        es = audit_entries(&E, "resource=order:ret");
        kept = json_array_size(es);
        json_decref(es);
    }
    cr_assert_eq(old, 0, "the record older than audit_retention was deleted");
    cr_assert_eq(kept, 3, "audit_max keeps the newest 3");
    es = audit_entries(&E, "resource=order:ret");
    for (size_t i = 0; i < 3; i++) {
        json_int_t t = json_integer_value(json_object_get(json_array_get(es, i), "token"));
        cr_assert_eq(t, 44 - (json_int_t)i, "entry %zu has token %lld: the newest are kept", i,
                     (long long)t);
    }
    json_decref(es);
    char hwm[32];
    cr_assert(hwm_of(&E, "order:ret", hwm, sizeof hwm));
    cr_assert_str_eq(hwm, "50", "retention never touches high-water marks");
    env_stop(&E);
}

/* A flood of refused writes does not flood stderr: at most 50 refusal lines a
 * second, and the next line written says how many were left out. */
Test(lifecycle, refusal_logs_are_rate_limited, .timeout = 120)
{
    env_start(&E, STORE_SQLITE, 0, "access_log = off\nworkers = 1\n", NULL); /* one limiter */
    /* the gateway counts per second of the same monotonic clock */
    uint64_t first_sec = fg_now_mono_ms() / 1000;
    int sent = 0;
    for (; sent < 600; sent++) cr_assert_eq(put_tok(&E, "/orders/flood", NULL, "v"), 428);
    /* one more refusal, in a later second, carries the count of the left-out lines */
    uint64_t t1 = fg_now_mono_ms() / 1000;
    while (fg_now_mono_ms() / 1000 == t1) usleep(10 * 1000);
    cr_assert_eq(put_tok(&E, "/orders/flood", NULL, "v"), 428);
    uint64_t secs = fg_now_mono_ms() / 1000 - first_sec + 1; /* seconds the flood touched */
    int lines = 0;
    long suppressed = 0;
    for (int tries = 0; tries < 100; tries++) {
        char *log = fgt_read_file(E.gw.proc.log);
        lines = 0;
        suppressed = 0;
        for (char *p = log; p && (p = strstr(p, "\"msg\":\"request\"")); p++) lines++;
        for (char *p = log; p && (p = strstr(p, "\"suppressed_before\":")); p++)
            suppressed += strtol(p + 20, NULL, 10);
        free(log);
        if (lines + suppressed >= sent + 1) break;
        usleep(50 * 1000);
    }
    fprintf(stderr, "%d refusals over %llu clock seconds: %d lines, %ld suppressed\n", sent + 1,
            (unsigned long long)secs, lines, suppressed);
    cr_assert_leq(lines, (int)(50 * secs), "more than 50 refusal lines a second");
    cr_assert_eq(lines + suppressed, sent + 1, "every refusal is a line or counted");
    env_stop(&E);
}
