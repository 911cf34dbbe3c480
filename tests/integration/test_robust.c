/*
 * test_robust.c -- the gateway against a store that goes away, hangs or
 * trickles, and the secrets and limits around it (issue "No way around the
 * fence", items 5 and 6): writes after a store comes back, one deadline per
 * store call, /healthz while the store hangs, password redaction, the admin
 * token file, the admin connection budget, SQLite file modes, the audit text.
 * (The audit cap is in test_lifecycle.c.)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gw_common.h"
#include "storage/store.h"

static env_t E;

/* ---- writes after the store comes back ---- */

/* Poll /readyz until it answers `want` (deadline 30 s). */
static void wait_ready(env_t *e, long want)
{
    long st = 0;
    for (uint64_t end = fg_now_mono_ms() + 30000; fg_now_mono_ms() < end;) {
        json_decref(admin_get(e, "/readyz", &st));
        if (st == want) return;
        usleep(20 * 1000);
    }
    cr_assert_fail("/readyz did not become %ld (last %ld)", want, st);
}

static void back_then_writes(store_kind_t kind)
{
    env_start(&E, kind, 0, "state_pool = 4\nstate_timeout = 500ms\n", NULL);
    cr_assert_eq(put_tok(&E, "/orders/back", "1", "v"), 200);
    if (kind == STORE_REDIS)
        fgt_redis_stop(&E.redis);
    else
        fgt_pg_stop(&E.pg);
    /* writes during an 8 s outage: every pooled connection sees it, and its
     * backoff grows to the 5 s cap */
    int refused = 0;
    for (uint64_t end = fg_now_mono_ms() + 8000; fg_now_mono_ms() < end; refused++) {
        cr_assert_eq(put_tok(&E, "/orders/back", "2", "v"), 503);
        usleep(20 * 1000); /* pacing the load, not waiting for an event */
    }
    size_t before = upstream_writes(&E, "/orders/back");
    if (kind == STORE_REDIS)
        fgt_redis_restart(&E.redis);
    else
        fgt_pg_restart(&E.pg);
    wait_ready(&E, 200);
    enum { N = 40 };
    for (int i = 0; i < N; i++) {
        char t[16];
        snprintf(t, sizeof t, "%d", 10 + i);
        long st = put_tok(&E, "/orders/back", t, "v");
        cr_assert_eq(st, 200, "write %d after /readyz said 200 got %ld", i, st);
    }
    cr_assert_eq(upstream_writes(&E, "/orders/back"), before + N, "all %d reached the upstream", N);
    char hwm[32];
    cr_assert(hwm_of(&E, "order:back", hwm, sizeof hwm));
    cr_assert_str_eq(hwm, "49");
    env_stop(&E);
    if (kind == STORE_POSTGRES) fgt_pg_stop(&E.pg);
}

Test(back, redis, .timeout = 120)
{
    back_then_writes(STORE_REDIS);
}

Test(back, postgres, .timeout = 180)
{
    back_then_writes(STORE_POSTGRES);
}

/* ---- one deadline per store call, through the gateway ---- */

static fgt_proxy_t *start_via_proxy(bool redis, const char *extra);

static void trickled_writes(bool redis)
{
    fgt_proxy_t *px = start_via_proxy(redis, "state_timeout = 1s\nstate_pool = 1\n");
    cr_assert_eq(put_tok(&E, "/orders/tr", "1", "v"), 200);
    fgt_proxy_trickle(px, 100); /* one byte per 100 ms from the store */
    uint64_t worst = 0, sum = 0;
    enum { N = 10 };
    for (int i = 0; i < N; i++) {
        uint64_t t0 = fg_now_mono_ms();
        long st = put_tok(&E, "/orders/tr", "2", "v");
        uint64_t took = fg_now_mono_ms() - t0;
        cr_assert_eq(st, 503, "a trickling store is unavailable (got %ld)", st);
        if (took > worst) worst = took;
        sum += took;
    }
    fprintf(stderr,
            "%s trickling at 100 ms/byte, state_timeout 1s: %d writes, mean %llu ms, "
            "worst %llu ms\n",
            redis ? "redis" : "postgres", N, (unsigned long long)(sum / N),
            (unsigned long long)worst);
    cr_assert_lt(worst, 1500, "503 within about state_timeout");
    cr_assert_eq(upstream_writes(&E, "/orders/tr"), 1, "nothing forwarded unchecked");
    fgt_proxy_trickle(px, 0);
    env_stop(&E);
    fgt_proxy_stop(px);
    if (!redis) fgt_pg_stop(&E.pg);
}

Test(deadline, redis_trickle, .timeout = 120)
{
    trickled_writes(true);
}

Test(deadline, postgres_trickle, .timeout = 120)
{
    trickled_writes(false);
}

/* ---- /healthz while the store hangs ---- */

typedef struct prober {
    env_t *e;
    int stop;
    long readyz_done;
} prober_t;

static void *readyz_loop(void *arg)
{
    prober_t *p = arg;
    while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
        long st;
        json_decref(admin_get(p->e, "/readyz", &st));
        __atomic_fetch_add(&p->readyz_done, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

/* Start a gateway whose store is reached through a proxy (redis or postgres). */
static fgt_proxy_t *start_via_proxy(bool redis, const char *extra)
{
    memset(&E, 0, sizeof E);
    fgt_upstream_start(&E.up, 0);
    int port;
    if (redis) {
        fgt_redis_start(&E.redis);
        E.has_redis = true;
        port = E.redis.port;
    } else {
        fgt_pg_start(&E.pg);
        E.has_pg = true;
        port = E.pg.port;
    }
    fgt_proxy_t *px = fgt_proxy_start(port);
    char conf[2048];
    snprintf(conf, sizeof conf,
             "[gateway]\nlisten = {listen}\nadmin_listen = {admin}\nupstream = %s\n"
             "state = %s://%s127.0.0.1:%d/%s\n%s\n%s",
             E.up.url, redis ? "redis" : "postgres", redis ? "" : "postgres@", fgt_proxy_port(px),
             redis ? "0" : "postgres", extra, BASE_POLICIES);
    fgt_gateway_start(&E.gw, conf);
    return px;
}

/* The store stops answering entirely (connects included): /readyz says 503
 * within about state_timeout, and /healthz answers at once all along, even
 * while /readyz calls are waiting on the store. */
static void healthz_while_hung(bool redis)
{
    fgt_proxy_t *px = start_via_proxy(redis, "state_timeout = 2s\n");
    long st;
    json_decref(admin_get(&E, "/readyz", &st));
    cr_assert_eq(st, 200);
    fgt_proxy_trickle(px, 3600 * 1000);         /* nothing more comes back from the store */
    if (redis) kill(E.redis.proc.pid, SIGSTOP); /* and Redis itself stops */
    prober_t p = {.e = &E};
    pthread_t th[3];
    for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, readyz_loop, &p);
    usleep(100 * 1000);
    uint64_t worst = 0;
    for (int i = 0; i < 20; i++) {
        uint64_t t0 = fg_now_mono_ms();
        json_t *j = admin_get(&E, "/healthz", &st);
        uint64_t took = fg_now_mono_ms() - t0;
        json_decref(j);
        cr_assert_eq(st, 200);
        if (took > worst) worst = took;
        usleep(50 * 1000);
    }
    __atomic_store_n(&p.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    fprintf(stderr, "%s hung: /healthz worst %llu ms over 20 calls beside 3 /readyz loops\n",
            redis ? "redis" : "postgres", (unsigned long long)worst);
    cr_assert_lt(worst, 500, "/healthz never waits for the store");
    uint64_t t0 = fg_now_mono_ms();
    json_decref(admin_get(&E, "/readyz", &st));
    uint64_t took = fg_now_mono_ms() - t0;
    cr_assert_eq(st, 503);
    cr_assert_lt(took, 4500, "/readyz answers within about state_timeout (+ the lock wait)");
    if (redis) kill(E.redis.proc.pid, SIGCONT);
    fgt_proxy_trickle(px, 0);
    env_stop(&E);
    fgt_proxy_stop(px);
    if (!redis) fgt_pg_stop(&E.pg);
}

Test(hang, redis_healthz_answers, .timeout = 120)
{
    healthz_while_hung(true);
}

Test(hang, postgres_healthz_answers, .timeout = 120)
{
    healthz_while_hung(false);
}

/* ---- require_durable ---- */

Test(durable, refuses_redis_without_aof, .timeout = 60)
{
    fgt_redis_t r;
    memset(&r, 0, sizeof r);
    r.port = fgt_free_port();
    snprintf(r.dir, sizeof r.dir, "%s", fgt_tmpdir());
    char port[16], log[600];
    snprintf(port, sizeof port, "%d", r.port);
    snprintf(log, sizeof log, "%s/redis.log", r.dir);
    char *argv[] = {(char *)"/usr/bin/redis-server",
                    (char *)"--port",
                    port,
                    (char *)"--bind",
                    (char *)"127.0.0.1",
                    (char *)"--dir",
                    r.dir,
                    (char *)"--save",
                    (char *)"",
                    (char *)"--appendonly",
                    (char *)"no",
                    NULL};
    r.proc = fgt_spawn(argv, log);
    cr_assert(fgt_wait_port(r.port, 10000));
    memset(&E, 0, sizeof E);
    fgt_upstream_start(&E.up, 0);
    char conf[1024];
    snprintf(conf, sizeof conf,
             "[gateway]\nlisten = {listen}\nadmin_listen = {admin}\nupstream = %s\n"
             "state = redis://127.0.0.1:%d/0\nrequire_durable = on\n\n%s",
             E.up.url, r.port, BASE_POLICIES);
    char *text = NULL;
    int st = fgt_gateway_start_fail(&E.gw, conf, &text);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "refused to start");
    cr_assert(text && strstr(text, "not durable") && strstr(text, "appendonly yes") &&
                  strstr(text, "appendfsync always"),
              "the message names the settings to change:\n%s", text);
    free(text);
    /* the same store without require_durable: starts, and /readyz shows why
     * it would not be durable */
    snprintf(conf, sizeof conf,
             "[gateway]\nlisten = {listen}\nadmin_listen = {admin}\nupstream = %s\n"
             "state = redis://127.0.0.1:%d/0\n\n%s",
             E.up.url, r.port, BASE_POLICIES);
    fgt_gateway_start(&E.gw, conf);
    long code;
    json_t *j = admin_get(&E, "/readyz", &code);
    cr_assert_eq(code, 200);
    json_t *d = json_object_get(json_object_get(j, "store"), "durability");
    cr_assert_str_eq(json_string_value(json_object_get(d, "appendonly")), "no");
    cr_assert(json_is_false(json_object_get(d, "durable")));
    json_decref(j);
    fgt_gateway_stop(&E.gw);
    fgt_upstream_stop(&E.up);
    fgt_stop(&r.proc, SIGTERM);
}

/* A reconnect to a store that is no longer durable: /readyz 503, writes 503. */
Test(durable, reconnect_to_non_durable_store, .timeout = 60)
{
    env_start(&E, STORE_REDIS, 0, "require_durable = on\nstate_pool = 1\n", NULL);
    long code;
    json_t *j = admin_get(&E, "/readyz", &code);
    cr_assert_eq(code, 200);
    json_t *d = json_object_get(json_object_get(j, "store"), "durability");
    cr_assert_str_eq(json_string_value(json_object_get(d, "appendfsync")), "always");
    json_decref(j);
    cr_assert_eq(put_tok(&E, "/orders/dur", "1", "v"), 200);
    const char *set[] = {"CONFIG", "SET", "appendfsync", "everysec", NULL};
    free(fgt_redis_cmd(&E.redis, set));
    const char *kill_all[] = {"CLIENT", "KILL", "TYPE", "normal", NULL};
    free(fgt_redis_cmd(&E.redis, kill_all)); /* every gateway connection reconnects */
    for (uint64_t end = fg_now_mono_ms() + 10000; fg_now_mono_ms() < end; usleep(20 * 1000)) {
        json_decref(admin_get(&E, "/readyz", &code));
        if (code == 503) break;
    }
    cr_assert_eq(code, 503, "/readyz refuses a store that is not durable any more");
    cr_assert_eq(put_tok(&E, "/orders/dur", "2", "v"), 503, "and so do writes");
    cr_assert_eq(upstream_writes(&E, "/orders/dur"), 1);
    char *log = fgt_gateway_log(&E.gw);
    cr_assert(log && strstr(log, "appendfsync=everysec"), "the settings are logged:\n%s", log);
    free(log);
    env_stop(&E);
}

/* ---- secrets ---- */

Test(secrets, password_never_logged, .timeout = 120)
{
    fgt_pg_t pg;
    fgt_pg_start(&pg); /* trust auth: any password is accepted */
    memset(&E, 0, sizeof E);
    fgt_upstream_start(&E.up, 0);
    int dead = fgt_free_port();
    for (int round = 0; round < 2; round++) {
        char conf[2048];
        snprintf(conf, sizeof conf,
                 "[gateway]\nlisten = {listen}\nadmin_listen = {admin}\nupstream = %s\n"
                 "state = postgres://postgres:s3cret@127.0.0.1:%d/postgres?password=s3cret2\n"
                 "state_timeout = 300ms\n\n%s",
                 E.up.url, round ? dead : pg.port, BASE_POLICIES);
        fgt_gateway_start(&E.gw, conf);
        put_tok(&E, "/orders/pw", "1", "v");
        long st;
        json_t *j = admin_get(&E, "/readyz", &st);
        char *body = json_dumps(j, 0);
        json_decref(j);
        cr_assert(body && !strstr(body, "s3cret"), "readyz shows no password: %s", body);
        free(body);
        int rc = fgt_gateway_stop(&E.gw);
        (void)rc;
        char *log = fgt_gateway_log(&E.gw);
        cr_assert(log && strstr(log, "postgres://postgres:***@127.0.0.1"),
                  "the state is logged redacted:\n%s", log);
        cr_assert(!strstr(log, "s3cret"), "a password reached the log:\n%s", log);
        free(log);
    }
    fgt_upstream_stop(&E.up);
    fgt_pg_stop(&pg);
}

/* ---- admin token file ---- */

static const char *write_token(const char *bytes, size_t len, mode_t mode)
{
    static char path[600];
    snprintf(path, sizeof path, "%s/token", fgt_tmpdir());
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    fwrite(bytes, 1, len, f);
    fclose(f);
    chmod(path, mode);
    return path;
}

static int start_with_token(const char *path, char **log)
{
    char conf[1024];
    fgt_upstream_start(&E.up, 0);
    snprintf(conf, sizeof conf,
             "[gateway]\nlisten = {listen}\nadmin_listen = {admin}\nupstream = %s\n"
             "state = sqlite:{dir}/fg.db\nadmin_token_file = %s\n\n%s",
             E.up.url, path, BASE_POLICIES);
    int st = fgt_gateway_start_fail(&E.gw, conf, log);
    fgt_upstream_stop(&E.up);
    return st;
}

Test(token_file, bad_files_stop_the_start, .timeout = 120)
{
    static const struct {
        const char *name, *bytes;
        size_t len;
    } bad[] = {
        {"empty", "", 0},
        {"newline only", "\n", 1},
        {"leading NUL", "\0secret", 7},
        {"NUL inside", "sec\0ret", 7},
        {"space", "sec ret", 7},
        {"tab", "secret\t", 7},
        {"CR LF", "secret\r\n", 8},
        {"two newlines", "secret\n\n", 8},
        {"control byte", "sec\x01ret", 7},
        {"DEL", "secret\x7f", 7},
        {"non-ASCII",
         "s\xc3\xa9"
         "cret",
         7},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&E, 0, sizeof E);
        const char *path = write_token(bad[i].bytes, bad[i].len, 0600);
        char *log = NULL;
        int st = start_with_token(path, &log);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0, "%s: the gateway started", bad[i].name);
        cr_assert(log && strstr(log, path), "%s: the error names the file:\n%s", bad[i].name, log);
        free(log);
    }
    static char big[4098];
    memset(big, 'x', sizeof big);
    memset(&E, 0, sizeof E);
    char *log = NULL;
    int st = start_with_token(write_token(big, 4097, 0600), &log);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0, "4097 characters: too long");
    free(log);
}

static long admin_status_with(env_t *e, const char *path, const char *token)
{
    char url[256], auth[4200];
    snprintf(url, sizeof url, "%s%s", e->gw.admin_url, path);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token ? token : "");
    const char *h[] = {auth, NULL};
    fgt_resp_t r = fgt_http("GET", url, token ? h : NULL, NULL, 0);
    long st = r.status;
    fgt_resp_free(&r);
    return st;
}

Test(token_file, good_files_and_reload, .timeout = 120)
{
    static char big[4097];
    memset(big, 'A', 4096);
    big[4096] = '\n';
    const char *path = write_token(big, sizeof big, 0600);
    char extra[700];
    snprintf(extra, sizeof extra, "admin_token_file = %s\n", path);
    env_start(&E, STORE_SQLITE, 0, extra, NULL);
    big[4096] = '\0';
    cr_assert_eq(admin_status_with(&E, "/v1/audit", big), 200, "4096 characters and a newline");
    cr_assert_eq(admin_status_with(&E, "/v1/audit", NULL), 401);
    cr_assert_eq(admin_status_with(&E, "/v1/audit", ""), 401);
    /* SIGHUP with a bad file keeps the old token */
    FILE *f = fopen(path, "wb");
    fwrite("\0", 1, 1, f);
    fclose(f);
    kill(E.gw.proc.pid, SIGHUP);
    char *log = NULL;
    for (uint64_t end = fg_now_mono_ms() + 5000; fg_now_mono_ms() < end; usleep(20000)) {
        free(log);
        log = fgt_gateway_log(&E.gw);
        if (log && strstr(log, "admin token not reloaded")) break;
    }
    cr_assert(log && strstr(log, "admin token not reloaded"), "the reload says why:\n%s", log);
    free(log);
    cr_assert_eq(admin_status_with(&E, "/v1/audit", big), 200, "the old token still works");
    cr_assert_eq(admin_status_with(&E, "/v1/audit", ""), 401, "the API did not open");
    /* a good file is taken */
    f = fopen(path, "wb");
    fputs("n3w-T0ken!~", f);
    fclose(f);
    kill(E.gw.proc.pid, SIGHUP);
    long st = 0;
    for (uint64_t end = fg_now_mono_ms() + 5000; fg_now_mono_ms() < end && st != 200; usleep(20000))
        st = admin_status_with(&E, "/v1/audit", "n3w-T0ken!~");
    cr_assert_eq(st, 200);
    cr_assert_eq(admin_status_with(&E, "/v1/audit", big), 401);
    env_stop(&E);
}

Test(token_file, readable_by_others_warns, .timeout = 60)
{
    const char *path = write_token("tok\n", 4, 0644);
    char extra[700];
    snprintf(extra, sizeof extra, "admin_token_file = %s\n", path);
    env_start(&E, STORE_SQLITE, 0, extra, NULL);
    cr_assert_eq(admin_status_with(&E, "/v1/audit", "tok"), 200);
    char *log = fgt_gateway_log(&E.gw);
    cr_assert(log && strstr(log, "readable by group or others") && strstr(log, "\"warn\""),
              "a warning like ssh's:\n%s", log);
    free(log);
    env_stop(&E);
}

/* ---- the admin listener's own connection budget ---- */

static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

Test(budget, healthz_under_client_flood_and_slow_admin_clients, .timeout = 120)
{
    env_start(&E, STORE_SQLITE, 0, "max_connections = 32\nadmin_max_connections = 16\n", NULL);
    int fds[80], n = 0;
    for (int i = 0; i < 60; i++) { /* more than max_connections + admin_max_connections */
        int fd = connect_port(E.gw.port);
        if (fd >= 0) fds[n++] = fd;
    }
    for (int i = 0; i < 8; i++) { /* slowloris on the admin port: half a request head */
        int fd = connect_port(E.gw.admin_port);
        cr_assert_geq(fd, 0);
        ssize_t w = write(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n", 32);
        (void)w;
        fds[n++] = fd;
    }
    uint64_t worst = 0;
    for (int i = 0; i < 10; i++) {
        uint64_t t0 = fg_now_mono_ms();
        long st;
        json_decref(admin_get(&E, "/healthz", &st));
        uint64_t took = fg_now_mono_ms() - t0;
        cr_assert_eq(st, 200, "/healthz answers");
        if (took > worst) worst = took;
    }
    fprintf(stderr, "healthz with 60 idle client sockets and 8 slow admin clients: worst %llu ms\n",
            (unsigned long long)worst);
    cr_assert_lt(worst, 1000);
    for (int i = 0; i < n; i++) close(fds[i]);
    env_stop(&E);
}

/* ---- SQLite files are private ---- */

Test(files, sqlite_mode_0600, .timeout = 60)
{
    mode_t old = umask(022);
    env_start(&E, STORE_SQLITE, 0, NULL, NULL);
    umask(old);
    cr_assert_eq(put_tok(&E, "/orders/m", "5", "v"), 200);
    cr_assert_eq(put_tok(&E, "/orders/m", "4", "v"), 409);
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s/fg.db%s", E.gw.dir, sfx[i]);
        struct stat st;
        cr_assert_eq(stat(p, &st), 0, "%s exists", p);
        cr_assert_eq(st.st_mode & 0777, 0600, "%s is mode %o", p, st.st_mode & 0777);
    }
    env_stop(&E);
}

/* ---- audit text and cap ---- */

Test(audit, dirty_requests_keep_audit_json_valid, .timeout = 60)
{
    env_start(&E, STORE_POSTGRES, 0, NULL, NULL);
    /* an unmatched write with an 8 KB path: audited, the path cut at 1024 */
    static char path[8200];
    strcpy(path, "/nowhere/");
    memset(path + 9, 'a', 8000);
    cr_assert_eq(put_tok(&E, path, "1", "v"), 403);
    /* a method that is not a token: refused before any policy (SPEC step 0) */
    const char req[] = "P\xffT /orders/1 HTTP/1.1\r\nHost: x\r\nFencing-Token: 1\r\n"
                       "Content-Length: 1\r\n\r\nv";
    free(fgt_raw_request(E.gw.port, req, sizeof req - 1, 2000));
    /* a stale write through the store after those */
    cr_assert_eq(put_tok(&E, "/orders/d", "5", "v"), 200);
    cr_assert_eq(put_tok(&E, "/orders/d", "4", "v"), 409, "the store still takes records");
    json_t *es = audit_entries(&E, "limit=1000");
    size_t i;
    json_t *e;
    bool seen_cut = false;
    json_array_foreach(es, i, e)
    {
        const char *p = json_string_value(json_object_get(e, "path"));
        cr_assert(p && strlen(p) <= 1024, "path at most 1024 bytes");
        if (json_is_true(json_object_get(e, "path_truncated"))) {
            seen_cut = true;
            cr_assert(strncmp(p, path, strlen(p)) == 0);
        }
    }
    cr_assert(seen_cut, "the unmatched write's record says its path was cut");
    json_decref(es);
    env_stop(&E);
    fgt_pg_stop(&E.pg);
}

/* A record stored before the audit text was escaped (raw invalid UTF-8 in
 * Redis) must not break GET /v1/audit: the answer is valid JSON. */
Test(audit, old_dirty_records_still_valid_json, .timeout = 60)
{
    env_start(&E, STORE_REDIS, 0, NULL, NULL);
    const char *xadd[] = {"XADD",   "fencegate:audit", "*",       "resource",   "order:old",
                          "method", "P\xffT",          "path",    "/a\x01\xc3", "reason",
                          "stale",  "client",          "1.2.3.4", NULL};
    free(fgt_redis_cmd(&E.redis, xadd));
    char url[256];
    snprintf(url, sizeof url, "%s/v1/audit?resource=order:old", E.gw.admin_url);
    fgt_resp_t r = fgt_http("GET", url, NULL, NULL, 0);
    cr_assert_eq(r.status, 200, "an answer, not a closed connection (%d)", r.curl_err);
    json_t *j = fgt_resp_json(&r);
    cr_assert(j, "valid JSON: %s", r.body);
    json_t *e = json_array_get(json_object_get(j, "entries"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(e, "method")), "P\\xFFT");
    cr_assert_str_eq(json_string_value(json_object_get(e, "path")), "/a\\x01\\xC3");
    json_decref(j);
    fgt_resp_free(&r);
    env_stop(&E);
}

/* fencegate -t checks the token file too: what a start would refuse, -t refuses. */
Test(token_file, check_mode_reads_it, .timeout = 30)
{
    const char *dir = fgt_tmpdir();
    const char *tok = write_token("\0open", 5, 0600);
    char conf[1024], cmd[2048], out[600];
    snprintf(conf, sizeof conf, "%s/fg.conf", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    FILE *f = fopen(conf, "w");
    fprintf(f,
            "[gateway]\nupstream = http://127.0.0.1:9\nadmin_token_file = %s\n\n"
            "[policy p]\nmatch = /x/{id}\nkey = x:{id}\n",
            tok);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -t -c %s >%s 2>&1", FG_BIN_GATEWAY, conf, out);
    int st = system(cmd);
    char *text = fgt_read_file(out);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "-t refuses a NUL token: %s", text);
    cr_assert(text && strstr(text, tok), "and names the file: %s", text);
    free(text);
    f = fopen(tok, "w");
    fputs("fine\n", f);
    fclose(f);
    st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
