/*
 * zk_lock.c -- fencegate-zk-lock: the ZooKeeper lock recipe with a fencing
 * token, writing through fencegate (docs/locks.md).
 *
 *   fencegate-zk-lock HOSTS RESOURCE VALUE
 *   env: GATEWAY (http://127.0.0.1:8080), HOLD_MS (0), LEASE_MS (session
 *        timeout, 5000), WRITES (1)
 *
 * Lock: an ephemeral sequential node /locks/<res>/lock-NNNNNNNNNN; the holder
 * is the lowest sequence. The node vanishes when the session expires (client
 * paused or partitioned past the session timeout), which hands the lock on.
 *
 * Token: the lock node's czxid (the zxid of the transaction that created it),
 * a 64-bit number that grows with every write to the ensemble. NOT the
 * sequence suffix: that is a signed 32-bit counter per parent node, which
 * wraps at 2^31 and restarts if the parent is deleted and re-created.
 */
#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int connected;

static void watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh;
    (void)path;
    (void)ctx;
    if (type == ZOO_SESSION_EVENT && state == ZOO_CONNECTED_STATE) {
        pthread_mutex_lock(&mu);
        connected = 1;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
}

static long env_long(const char *name, long def)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : def;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static size_t discard(char *p, size_t s, size_t n, void *u)
{
    (void)p;
    (void)u;
    return s * n;
}

/* PUT GATEWAY/orders/<res> with the token; prints "write status=NNN". */
static void fenced_write(const char *gw, const char *res, int64_t token, const char *value)
{
    char url[1024], hdr[64];
    snprintf(url, sizeof url, "%s/orders/%s", gw, res);
    snprintf(hdr, sizeof hdr, "Fencing-Token: %" PRId64, token);
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, hdr);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, value);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    printf("write status=%ld\n", status);
    fflush(stdout);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: fencegate-zk-lock HOSTS RESOURCE VALUE\n");
        return 2;
    }
    const char *hosts = argv[1], *res = argv[2], *value = argv[3];
    const char *gw = getenv("GATEWAY") ? getenv("GATEWAY") : "http://127.0.0.1:8080";
    long hold = env_long("HOLD_MS", 0), lease = env_long("LEASE_MS", 5000);
    long writes = env_long("WRITES", 1);
    zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    zhandle_t *zh = zookeeper_init(hosts, watcher, (int)lease, NULL, NULL, 0);
    if (!zh) {
        perror("zookeeper_init");
        return 1;
    }
    pthread_mutex_lock(&mu);
    for (int i = 0; i < 100 && !connected; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&cv, &mu, &ts);
    }
    pthread_mutex_unlock(&mu);
    if (!connected) {
        fprintf(stderr, "cannot connect to %s\n", hosts);
        return 1;
    }
    char parent[512], prefix[600], mine[700];
    snprintf(parent, sizeof parent, "/locks/%s", res);
    zoo_create(zh, "/locks", "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
    zoo_create(zh, parent, "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
    snprintf(prefix, sizeof prefix, "%s/lock-", parent);
    int rc = zoo_create(zh, prefix, "", 0, &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL | ZOO_SEQUENCE, mine,
                        sizeof mine);
    if (rc != ZOK) {
        fprintf(stderr, "create: %s\n", zerror(rc));
        return 1;
    }
    const char *my_name = strrchr(mine, '/') + 1;
    int locked = 0;
    for (int i = 0; i < 400 && !locked; i++) { /* bounded wait: 20 s */
        struct String_vector kids = {0, NULL};
        if (zoo_get_children(zh, parent, 0, &kids) == ZOK && kids.count > 0) {
            qsort(kids.data, (size_t)kids.count, sizeof *kids.data, cmp);
            locked = strcmp(kids.data[0], my_name) == 0;
            deallocate_String_vector(&kids);
        }
        if (!locked) sleep_ms(50);
    }
    if (!locked) {
        fprintf(stderr, "lock busy\n");
        return 1;
    }
    struct Stat st;
    if (zoo_exists(zh, mine, 0, &st) != ZOK) {
        fprintf(stderr, "lock node vanished\n");
        return 1;
    }
    int64_t token = st.czxid;
    printf("locked token=%" PRId64 "\n", token);
    fflush(stdout);
    sleep_ms(hold);
    for (long i = 0; i < writes; i++) fenced_write(gw, res, token, value);
    zoo_delete(zh, mine, -1); /* fails harmlessly if the session already expired */
    zookeeper_close(zh);
    printf("released\n");
    curl_global_cleanup();
    return 0;
}
