/*
 * test_locks.c -- clients holding locks from real lock services, fenced end to
 * end (docs/locks.md, examples/). For each service:
 *   - client A takes the lock and is paused (SIGSTOP) past its lease; client B
 *     takes the lock and writes; A is resumed and writes with its old token:
 *     A gets 409 and an audit record, the upstream holds B's value, and B's
 *     token is the resource's hwm;
 *   - one holder writing several times with one token: all accepted.
 * The example scripts are the clients, so what the docs show is what is tested.
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw_common.h"

static env_t E;

typedef struct client {
    fgt_proc_t proc;
    char log[600];
} client_t;

static char zk_hosts[64]; /* set by the ZooKeeper test */

static void client_start(client_t *c, const char *script, const char *res, const char *value)
{
    char path[512];
    snprintf(path, sizeof path, "%s/examples/%s", FG_SOURCE_DIR, script);
    snprintf(c->log, sizeof c->log, "%s/%s-%s.log", fgt_tmpdir(), script, value);
    if (strcmp(script, "zk-lock") == 0) {
#ifdef FG_BIN_ZK_LOCK
        char *argv[] = {(char *)FG_BIN_ZK_LOCK, zk_hosts, (char *)res, (char *)value, NULL};
        c->proc = fgt_spawn(argv, c->log);
        return;
#else
        cr_assert_fail("fencegate-zk-lock was not built (needs libzookeeper-mt-dev)");
#endif
    }
    char *argv[] = {(char *)"/bin/bash", path, (char *)res, (char *)value, NULL};
    c->proc = fgt_spawn(argv, c->log);
}

/* Wait for "locked token=N" in the client's output; returns N (as text). */
static void client_token(client_t *c, char *tok, size_t len)
{
    for (int i = 0; i < 600; i++) {
        char *out = fgt_read_file(c->log);
        const char *p = out ? strstr(out, "locked token=") : NULL;
        if (p) {
            p += 13;
            size_t n = strspn(p, "0123456789");
            snprintf(tok, len, "%.*s", (int)n, p);
            free(out);
            return;
        }
        free(out);
        usleep(50 * 1000);
    }
    char *out = fgt_read_file(c->log);
    cr_assert_fail("client never got the lock:\n%s", out ? out : "");
}

/* Wait for the client to exit; returns its output (caller frees). */
static char *client_wait(client_t *c)
{
    int st = -1;
    for (int i = 0; i < 600; i++) {
        if (waitpid(c->proc.pid, &st, WNOHANG) == c->proc.pid) break;
        usleep(50 * 1000);
    }
    char *out = fgt_read_file(c->log);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client failed (%d):\n%s", st, out ? out : "");
    c->proc.pid = 0;
    return out;
}

static int count_of(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

/* The paused-holder scenario against one lock service (env already set). */
static void paused_holder(const char *script, const char *res, int lease_ms)
{
    char lease[16];
    snprintf(lease, sizeof lease, "%d", lease_ms);
    setenv("GATEWAY", E.gw.url, 1);
    setenv("LEASE_MS", lease, 1);
    setenv("WRITES", "1", 1);
    setenv("HOLD_MS", "2000", 1);
    client_t a, b;
    client_start(&a, script, res, "value-from-A");
    char ta[32], tb[32];
    client_token(&a, ta, sizeof ta);
    kill(-a.proc.pid, SIGSTOP); /* a GC pause, a swap storm, a slow disk */
    usleep((useconds_t)(lease_ms + 1500) * 1000);
    setenv("HOLD_MS", "0", 1);
    client_start(&b, script, res, "value-from-B");
    client_token(&b, tb, sizeof tb);
    char *outb = client_wait(&b);
    cr_assert(strstr(outb, "write status=200"), "B's write:\n%s", outb);
    free(outb);
    kill(-a.proc.pid, SIGCONT);
    char *outa = client_wait(&a);
    cr_assert(strstr(outa, "write status=409"), "A wrote with its old token %s:\n%s", ta, outa);
    free(outa);
    cr_assert(strtoull(tb, NULL, 10) > strtoull(ta, NULL, 10), "B's token %s, A's %s", tb, ta);

    char key[128], query[256], hwm[32];
    snprintf(key, sizeof key, "order:%s", res);
    cr_assert(hwm_of(&E, key, hwm, sizeof hwm));
    cr_assert_str_eq(hwm, tb, "B's token is the hwm");
    snprintf(query, sizeof query, "resource=%s&reason=stale", key);
    json_t *es = audit_entries(&E, query);
    cr_assert_eq(json_array_size(es), 1);
    json_t *a0 = json_array_get(es, 0);
    cr_assert_eq((unsigned long long)json_integer_value(json_object_get(a0, "token")),
                 strtoull(ta, NULL, 10));
    cr_assert_eq((unsigned long long)json_integer_value(json_object_get(a0, "highest")),
                 strtoull(tb, NULL, 10));
    json_decref(es);
    char path[128];
    snprintf(path, sizeof path, "/orders/%s", res);
    fgt_resp_t r = gw_req(&E, "GET", path, NULL, NULL);
    cr_assert_str_eq(r.body, "value-from-B", "the upstream holds B's value");
    fgt_resp_free(&r);
}

/* One holder, several writes with one token: all accepted. */
static void one_holder(const char *script, const char *res)
{
    setenv("GATEWAY", E.gw.url, 1);
    setenv("LEASE_MS", "5000", 1);
    setenv("HOLD_MS", "0", 1);
    setenv("WRITES", "3", 1);
    client_t c;
    client_start(&c, script, res, "v");
    char *out = client_wait(&c);
    cr_assert_eq(count_of(out, "write status=200"), 3, "%s", out);
    free(out);
    char path[128];
    snprintf(path, sizeof path, "/orders/%s", res);
    cr_assert_eq(upstream_writes(&E, path), 3);
}

/* ---- Redis, single instance ---- */
Test(locks, redis, .timeout = 120)
{
    env_start(&E, STORE_SQLITE, 0, NULL, NULL);
    fgt_redis_t lock;
    fgt_redis_start(&lock);
    char port[16];
    snprintf(port, sizeof port, "%d", lock.port);
    setenv("REDIS_PORT", port, 1);
    paused_holder("redis-lock.sh", "r1", 800);
    one_holder("redis-lock.sh", "r2");
    fgt_redis_stop(&lock);
    env_stop(&E);
}

/* ---- Redlock: three independent nodes, token from a durable counter ---- */
Test(locks, redlock, .timeout = 120)
{
    env_start(&E, STORE_SQLITE, 0, NULL, NULL);
    fgt_redis_t n[3], counter;
    char ports[64] = "", cp[16];
    for (int i = 0; i < 3; i++) {
        fgt_redis_start(&n[i]);
        size_t l = strlen(ports);
        snprintf(ports + l, sizeof ports - l, "%s%d", i ? " " : "", n[i].port);
    }
    fgt_redis_start(&counter);
    snprintf(cp, sizeof cp, "%d", counter.port);
    setenv("REDLOCK_PORTS", ports, 1);
    setenv("COUNTER_PORT", cp, 1);
    paused_holder("redlock.sh", "rl1", 800);
    one_holder("redlock.sh", "rl2");
    for (int i = 0; i < 3; i++) fgt_redis_stop(&n[i]);
    fgt_redis_stop(&counter);
    env_stop(&E);
}

/* ---- Postgres lock table with a lease, token from a sequence ---- */
Test(locks, postgres, .timeout = 120)
{
    env_start(&E, STORE_SQLITE, 0, NULL, NULL);
    fgt_pg_t pg;
    fgt_pg_start(&pg);
    setenv("PG_URL", pg.url, 1);
    paused_holder("postgres-lock.sh", "p1", 800);
    one_holder("postgres-lock.sh", "p2");
    fgt_pg_stop(&pg);
    env_stop(&E);
}

/* ---- etcd v3 lock ---- */
static bool have(const char *bin)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", bin);
    return system(cmd) == 0;
}

Test(locks, etcd, .timeout = 120)
{
    cr_assert(have("etcd") && have("etcdctl"), "etcd-server and etcd-client are required");
    env_start(&E, STORE_SQLITE, 0, NULL, NULL);
    const char *dir = fgt_tmpdir();
    int cport = fgt_free_port(), pport = fgt_free_port();
    char data[512], curl_[64], purl[64], cluster[128], log[512];
    snprintf(data, sizeof data, "%s/etcd", dir);
    snprintf(curl_, sizeof curl_, "http://127.0.0.1:%d", cport);
    snprintf(purl, sizeof purl, "http://127.0.0.1:%d", pport);
    snprintf(cluster, sizeof cluster, "default=%s", purl);
    snprintf(log, sizeof log, "%s/etcd.log", dir);
    char *argv[] = {(char *)"/usr/bin/etcd",
                    (char *)"--name",
                    (char *)"default",
                    (char *)"--data-dir",
                    data,
                    (char *)"--listen-client-urls",
                    curl_,
                    (char *)"--advertise-client-urls",
                    curl_,
                    (char *)"--listen-peer-urls",
                    purl,
                    (char *)"--initial-advertise-peer-urls",
                    purl,
                    (char *)"--initial-cluster",
                    cluster,
                    NULL};
    fgt_proc_t etcd = fgt_spawn(argv, log);
    cr_assert(fgt_wait_port(cport, 20000), "etcd did not start");
    char ep[64];
    snprintf(ep, sizeof ep, "127.0.0.1:%d", cport);
    setenv("ETCD_ENDPOINTS", ep, 1);
    paused_holder("etcd-lock.sh", "e1", 1000);
    one_holder("etcd-lock.sh", "e2");
    fgt_stop(&etcd, SIGTERM);
    env_stop(&E);
}

/* ---- ZooKeeper: ephemeral sequential node, token = its czxid ---- */
Test(locks, zookeeper, .timeout = 120)
{
    cr_assert(access("/usr/share/java/zookeeper.jar", R_OK) == 0,
              "the zookeeper package is required");
    env_start(&E, STORE_SQLITE, 0, NULL, NULL);
    const char *dir = fgt_tmpdir();
    int port = fgt_free_port();
    char data[512], ports[16], log[512];
    snprintf(data, sizeof data, "%s/zk", dir);
    snprintf(ports, sizeof ports, "%d", port);
    snprintf(log, sizeof log, "%s/zookeeper.log", dir);
    /* tickTime 200 ms: session timeouts may then be 400 ms to 4 s */
    char *argv[] = {(char *)"/usr/bin/java",
                    (char *)"-cp",
                    (char *)"/etc/zookeeper/conf:/usr/share/java/zookeeper.jar",
                    (char *)"-Dzookeeper.admin.enableServer=false",
                    (char *)"org.apache.zookeeper.server.ZooKeeperServerMain",
                    ports,
                    data,
                    (char *)"200",
                    NULL};
    fgt_proc_t zk = fgt_spawn(argv, log);
    cr_assert(fgt_wait_port(port, 30000), "zookeeper did not start");
    snprintf(zk_hosts, sizeof zk_hosts, "127.0.0.1:%d", port);
    paused_holder("zk-lock", "z1", 1000);
    one_holder("zk-lock", "z2");
    fgt_stop(&zk, SIGTERM);
    env_stop(&E);
}
