/*
 * demo_store.c -- fencegate-demo-store: a small HTTP key-value store that the
 * quick start and the integration tests put behind the gateway.
 *
 * It applies PUT/POST/PATCH (store the body) and DELETE, answers GET/HEAD,
 * and logs every write in arrival order with the Fencing-Token it carried,
 * so tests can assert on what really reached the upstream:
 *   GET  /_fg/log     JSON array of writes {seq, method, path (raw), token,
 *                     size, fnv1a64, headers, arrived_ms, applied_ms, applied};
 *                     seq is the arrival order, applied the order in which
 *                     writes took effect (absent while a write is delayed, or
 *                     when its body never completed); the _ms times are
 *                     CLOCK_MONOTONIC ms (one clock per machine)
 *   GET  /_fg/count   {"requests": all requests seen, "writes": n,
 *                     "inflight": requests being handled, "held": requests
 *                     held, "active": writes arrived and not yet finished}
 *   POST /_fg/reset   forget values and log
 *   POST /_fg/release let every request held by X-Hold go on
 * Bodies are hashed while they stream in; only values up to 1 MiB are kept,
 * so a 256 MiB PUT costs no memory. `X-Delay-Ms: N` (or --delay-max-ms)
 * delays the answer, to play a slow upstream; `X-Hold: 1` holds it until the
 * next POST /_fg/release (at most 60 s), so a test can keep requests at the
 * upstream for as long as it needs, without guessing a delay.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define VALUE_MAX (1024 * 1024)
#define LOG_MAX   200000
#define NBUCKETS  4096

typedef struct item {
    struct item *next;
    char *path;
    char *value;
    size_t len;
    char *ctype;
} item_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static item_t *buckets[NBUCKETS];
static json_t *wlog;
static long requests, writes, inflight, held, applied, active;
static pthread_cond_t release_cv = PTHREAD_COND_INITIALIZER;
static unsigned long release_gen;
static unsigned delay_max_ms;
static bool keep_log = true;

typedef struct req {
    char *raw; /* raw request target */
    bool started;
    bool write;
    json_t *entry; /* log entry (borrowed from wlog) */
    uint64_t hash;
    size_t size;
    char *buf; /* value, up to VALUE_MAX */
    bool too_big;
    bool counted; /* in `inflight` */
} req_t;

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t fnv_step(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static size_t bucket_of(const char *s)
{
    return (size_t)(fnv_step(1469598103934665603ULL, s, strlen(s)) % NBUCKETS);
}

static item_t **find(const char *path)
{
    item_t **pp = &buckets[bucket_of(path)];
    while (*pp && strcmp((*pp)->path, path) != 0) pp = &(*pp)->next;
    return pp;
}

static void item_free(item_t *it)
{
    free(it->path);
    free(it->value);
    free(it->ctype);
    free(it);
}

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *k, const char *v)
{
    (void)kind;
    json_t *h = cls;
    char name[256];
    size_t n = strlen(k);
    if (n >= sizeof name) return MHD_YES;
    for (size_t i = 0; i <= n; i++)
        name[i] = (char)((k[i] >= 'A' && k[i] <= 'Z') ? k[i] + 32 : k[i]);
    json_object_set_new(h, name, json_string(v ? v : ""));
    return MHD_YES;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *ctype,
                             const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    if (ctype) MHD_add_response_header(r, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) return MHD_NO;
    enum MHD_Result ret = reply(c, status, "application/json", s, strlen(s));
    free(s);
    return ret;
}

static void maybe_hold(struct MHD_Connection *c)
{
    if (!MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Hold")) return;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 60;
    pthread_mutex_lock(&mu);
    unsigned long gen = release_gen;
    held++;
    while (gen == release_gen)
        if (pthread_cond_timedwait(&release_cv, &mu, &until) != 0) break;
    held--;
    pthread_mutex_unlock(&mu);
}

static void maybe_delay(struct MHD_Connection *c)
{
    unsigned ms = 0;
    const char *d = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Delay-Ms");
    if (d)
        ms = (unsigned)strtoul(d, NULL, 10);
    else if (delay_max_ms)
        ms = (unsigned)(random() % (delay_max_ms + 1));
    if (ms > 60000) ms = 60000;
    if (ms) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static bool is_read(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "OPTIONS") == 0;
}

static enum MHD_Result admin(struct MHD_Connection *c, const char *path, const char *method)
{
    if (strcmp(path, "/_fg/log") == 0) {
        pthread_mutex_lock(&mu);
        char *s = json_dumps(wlog, JSON_COMPACT);
        pthread_mutex_unlock(&mu);
        if (!s) return MHD_NO;
        enum MHD_Result ret = reply(c, 200, "application/json", s, strlen(s));
        free(s);
        return ret;
    }
    if (strcmp(path, "/_fg/count") == 0) {
        pthread_mutex_lock(&mu);
        json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:I}", "requests", (json_int_t)requests, "writes",
                              (json_int_t)writes, "inflight", (json_int_t)inflight, "held",
                              (json_int_t)held, "active", (json_int_t)active);
        pthread_mutex_unlock(&mu);
        return reply_json(c, 200, o);
    }
    if (strcmp(path, "/_fg/reset") == 0 && strcmp(method, "POST") == 0) {
        pthread_mutex_lock(&mu);
        for (size_t i = 0; i < NBUCKETS; i++) {
            while (buckets[i]) {
                item_t *n = buckets[i]->next;
                item_free(buckets[i]);
                buckets[i] = n;
            }
        }
        json_array_clear(wlog);
        requests = writes = applied = 0;
        pthread_mutex_unlock(&mu);
        return reply(c, 204, NULL, "", 0);
    }
    if (strcmp(path, "/_fg/release") == 0 && strcmp(method, "POST") == 0) {
        pthread_mutex_lock(&mu);
        release_gen++;
        pthread_cond_broadcast(&release_cv);
        pthread_mutex_unlock(&mu);
        return reply(c, 204, NULL, "", 0);
    }
    return reply(c, 404, "text/plain", "no such endpoint\n", 17);
}

static enum MHD_Result finish_write(struct MHD_Connection *c, req_t *r, const char *path,
                                    const char *method)
{
    char hex[17];
    snprintf(hex, sizeof hex, "%016" PRIx64, r->hash);
    const char *tok = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Fencing-Token");
    pthread_mutex_lock(&mu);
    if (r->entry) {
        json_object_set_new(r->entry, "size", json_integer((json_int_t)r->size));
        json_object_set_new(r->entry, "fnv1a64", json_string(hex));
        json_object_set_new(r->entry, "applied_ms", json_integer(mono_ms()));
        json_object_set_new(r->entry, "applied", json_integer((json_int_t)applied));
    }
    applied++;
    unsigned status = 200;
    if (strcmp(method, "DELETE") == 0) {
        item_t **pp = find(path);
        if (*pp) {
            item_t *it = *pp;
            *pp = it->next;
            item_free(it);
            status = 204;
        } else {
            status = 404;
        }
    } else if (strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0 ||
               strcmp(method, "PATCH") == 0) {
        item_t **pp = find(path);
        item_t *it = *pp;
        if (!it) {
            it = calloc(1, sizeof *it);
            if (it && (it->path = strdup(path))) {
                it->next = buckets[bucket_of(path)];
                buckets[bucket_of(path)] = it;
                status = 201;
            } else {
                free(it);
                it = NULL;
            }
        }
        if (it) {
            free(it->value);
            free(it->ctype);
            it->value = r->too_big ? NULL : r->buf;
            it->len = r->too_big ? 0 : r->size;
            if (!r->too_big) r->buf = NULL;
            const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
            it->ctype = ct ? strdup(ct) : NULL;
        }
        if (status == 201)
            status = 200; /* keep the answer simple for clients: 200 on every accepted PUT */
    }
    pthread_mutex_unlock(&mu);
    fprintf(stderr, "demo-store: %s %s token=%s size=%zu\n", method, path, tok ? tok : "-",
            r->size);
    if (status == 204 || status == 404)
        return reply(c, status, status == 404 ? "text/plain" : NULL,
                     status == 404 ? "not found\n" : "", status == 404 ? 10 : 0);
    json_t *o =
        json_pack("{s:s,s:I,s:s?}", "path", path, "size", (json_int_t)r->size, "token", tok);
    return reply_json(c, status, o);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    req_t *r = *con_cls;
    if (!r) return MHD_NO;
    const char *path = url; /* raw: the unescape callback keeps it undecoded */
    bool internal = strncmp(path, "/_fg/", 5) == 0;
    if (!r->started) {
        r->started = true;
        r->hash = 1469598103934665603ULL;
        pthread_mutex_lock(&mu);
        if (!internal) requests++, inflight++, r->counted = true;
        if (!internal && !is_read(method)) {
            r->write = true;
            writes++;
            active++;
            if (keep_log && json_array_size(wlog) < LOG_MAX) {
                json_t *h = json_object();
                MHD_get_connection_values(c, MHD_HEADER_KIND, add_header, h);
                const char *tok = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Fencing-Token");
                r->entry = json_pack("{s:I,s:s,s:s,s:s?,s:i,s:s,s:o,s:I}", "seq",
                                     (json_int_t)json_array_size(wlog), "method", method, "path",
                                     path, "token", tok, "size", 0, "fnv1a64", "", "headers", h,
                                     "arrived_ms", (json_int_t)mono_ms());
                if (r->entry) json_array_append_new(wlog, r->entry);
            }
        }
        pthread_mutex_unlock(&mu);
        return MHD_YES;
    }
    if (*upload_size) {
        r->hash = fnv_step(r->hash, upload, *upload_size);
        if (!r->too_big && r->size + *upload_size <= VALUE_MAX) {
            char *nb = realloc(r->buf, r->size + *upload_size);
            if (nb) {
                r->buf = nb;
                memcpy(r->buf + r->size, upload, *upload_size);
            } else {
                r->too_big = true;
            }
        } else {
            r->too_big = true;
        }
        r->size += *upload_size;
        *upload_size = 0;
        return MHD_YES;
    }
    if (internal) return admin(c, path, method);
    maybe_hold(c);
    maybe_delay(c);
    if (r->write) return finish_write(c, r, path, method);
    pthread_mutex_lock(&mu);
    item_t *it = *find(path);
    char *val = NULL, *ct = NULL;
    size_t len = 0;
    if (it) {
        len = it->len;
        val = malloc(len + 1);
        if (val) memcpy(val, it->value ? it->value : "", len);
        ct = it->ctype ? strdup(it->ctype) : NULL;
    }
    pthread_mutex_unlock(&mu);
    enum MHD_Result ret;
    if (!it)
        ret = reply(c, 404, "text/plain", "not found\n", 10);
    else
        ret = reply(c, 200, ct ? ct : "text/plain", val ? val : "", val ? len : 0);
    free(val);
    free(ct);
    return ret;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)cls;
    (void)c;
    req_t *r = calloc(1, sizeof *r);
    if (r) r->raw = strdup(uri);
    return r;
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    req_t *r = *con_cls;
    if (r) {
        if (r->counted || r->write) {
            pthread_mutex_lock(&mu);
            if (r->counted) inflight--;
            if (r->write) active--;
            pthread_mutex_unlock(&mu);
        }
        free(r->raw);
        free(r->buf);
        free(r);
    }
    *con_cls = NULL;
}

static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: fencegate-demo-store [--listen 127.0.0.1:9000] [--delay-max-ms N] "
               "[--no-log]\n");
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:9000";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen = argv[++i];
        } else if (strcmp(argv[i], "--delay-max-ms") == 0 && i + 1 < argc) {
            delay_max_ms = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--no-log") == 0) {
            keep_log = false;
        } else if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    const char *colon = strrchr(listen, ':');
    if (!colon) {
        usage(stderr);
        return 2;
    }
    unsigned port = (unsigned)strtoul(colon + 1, NULL, 10);
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());
    wlog = json_array();
    sigset_t set; /* blocked before any thread starts, so sigwait below gets them */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    char host[64];
    snprintf(host, sizeof host, "%.*s", (int)(colon - listen), listen);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "demo-store: bad listen address %s\n", listen);
        return 2;
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, (uint16_t)port, NULL, NULL,
        on_request, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_URI_LOG_CALLBACK,
        on_uri, NULL, MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, MHD_OPTION_NOTIFY_COMPLETED,
        on_done, NULL, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "demo-store: cannot listen on %s\n", listen);
        return 1;
    }
    fprintf(stderr, "demo-store: listening on %s\n", listen);
    int sig;
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    json_decref(wlog);
    return 0;
}
