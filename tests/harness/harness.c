/*
 * harness.c -- real processes and HTTP for the integration tests. See harness.h.
 *
 * Every child is recorded and killed by a destructor, and every temporary
 * directory is removed, so a failing (aborted) test leaves nothing behind.
 */
#include "harness/harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHILDREN 256
#define MAX_DIRS     256

static pid_t children[MAX_CHILDREN];
static char *dirs[MAX_DIRS];
static size_t n_dirs;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

__attribute__((destructor)) static void fgt_sweep(void)
{
    for (size_t i = 0; i < MAX_CHILDREN; i++)
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
    if (getenv("FGT_KEEP_DIRS")) return;
    for (size_t i = 0; i < n_dirs; i++) {
        nftw(dirs[i], rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(dirs[i]);
    }
    n_dirs = 0;
}

const char *fgt_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/fgt.XXXXXX", base && base[0] ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    cr_assert(d, "mkdtemp: %s", strerror(errno));
    cr_assert(n_dirs < MAX_DIRS);
    dirs[n_dirs] = strdup(d);
    return dirs[n_dirs++];
}

int fgt_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

bool fgt_wait_port(int port, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
        close(fd);
        if (rc == 0) return true;
        sleep_ms(20);
    }
    return false;
}

static fgt_proc_t spawn_as(char *const argv[], const char *logfile, uid_t uid, gid_t gid);

fgt_proc_t fgt_spawn(char *const argv[], const char *logfile)
{
    return spawn_as(argv, logfile, (uid_t)-1, (gid_t)-1);
}

static fgt_proc_t spawn_as(char *const argv[], const char *logfile, uid_t uid, gid_t gid)
{
    fgt_proc_t p = {0};
    snprintf(p.log, sizeof p.log, "%s", logfile);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        setpgid(0, 0); /* its own process group: tests may signal a whole client */
        if (uid != (uid_t)-1 && (setgid(gid) != 0 || setuid(uid) != 0)) _exit(126);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(argv[0], argv);
        _exit(127);
    }
    p.pid = pid;
    for (size_t i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == 0) {
            children[i] = pid;
            break;
        }
    return p;
}

int fgt_stop(fgt_proc_t *p, int sig)
{
    if (p->pid <= 0) return -1;
    kill(p->pid, sig);
    int status = -1;
    for (int waited = 0; waited < 10000; waited += 10) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid) break;
        if (waited >= 5000 && sig != SIGKILL) {
            kill(p->pid, SIGKILL);
            sig = SIGKILL;
        }
        sleep_ms(10);
    }
    for (size_t i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == p->pid) children[i] = 0;
    p->pid = 0;
    return status;
}

long fgt_vm_hwm_kib(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) {
            v = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

char *fgt_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[len] = '\0';
    return buf;
}

/* ---- upstream ---- */

void fgt_upstream_start(fgt_upstream_t *u, int delay_max_ms)
{
    memset(u, 0, sizeof *u);
    const char *dir = fgt_tmpdir();
    char listen[64], delay[16], log[512];
    u->port = fgt_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", u->port);
    snprintf(delay, sizeof delay, "%d", delay_max_ms);
    snprintf(log, sizeof log, "%s/demo-store.log", dir);
    char *argv[] = {(char *)FG_BIN_DEMO_STORE,
                    (char *)"--listen",
                    listen,
                    (char *)"--delay-max-ms",
                    delay,
                    NULL};
    u->proc = fgt_spawn(argv, log);
    snprintf(u->url, sizeof u->url, "http://127.0.0.1:%d", u->port);
    cr_assert(fgt_wait_port(u->port, 5000), "demo store did not start");
}

void fgt_upstream_stop(fgt_upstream_t *u)
{
    fgt_stop(&u->proc, SIGTERM);
}

json_t *fgt_upstream_log(fgt_upstream_t *u)
{
    char url[128];
    snprintf(url, sizeof url, "%s/_fg/log", u->url);
    fgt_resp_t r = fgt_http("GET", url, NULL, NULL, 0);
    cr_assert_eq(r.status, 200, "demo store log: %ld", r.status);
    json_t *j = fgt_resp_json(&r);
    fgt_resp_free(&r);
    cr_assert(json_is_array(j));
    return j;
}

long fgt_upstream_stat(fgt_upstream_t *u, const char *what)
{
    char url[128];
    snprintf(url, sizeof url, "%s/_fg/count", u->url);
    fgt_resp_t r = fgt_http("GET", url, NULL, NULL, 0);
    json_t *j = fgt_resp_json(&r);
    fgt_resp_free(&r);
    cr_assert(j);
    long n = (long)json_integer_value(json_object_get(j, what));
    json_decref(j);
    return n;
}

long fgt_upstream_count(fgt_upstream_t *u)
{
    return fgt_upstream_stat(u, "requests");
}

void fgt_upstream_release(fgt_upstream_t *u)
{
    char url[128];
    snprintf(url, sizeof url, "%s/_fg/release", u->url);
    fgt_resp_t r = fgt_http("POST", url, NULL, NULL, 0);
    cr_assert_eq(r.status, 204);
    fgt_resp_free(&r);
}

bool fgt_wait_upstream_stat(fgt_upstream_t *u, const char *what, long want, int timeout_ms)
{
    for (int waited = 0;; waited += 20) {
        if (fgt_upstream_stat(u, what) == want) return true;
        if (waited >= timeout_ms) return false;
        usleep(20 * 1000);
    }
}

/* ---- redis ---- */

static void redis_spawn(fgt_redis_t *r)
{
    char port[16], log[512];
    snprintf(port, sizeof port, "%d", r->port);
    snprintf(log, sizeof log, "%s/redis.log", r->dir);
    char *argv[] = {(char *)"/usr/bin/redis-server",
                    (char *)"--port",
                    port,
                    (char *)"--bind",
                    (char *)"127.0.0.1",
                    (char *)"--dir",
                    r->dir,
                    (char *)"--save",
                    (char *)"",
                    (char *)"--appendonly",
                    (char *)"yes",
                    (char *)"--appendfsync",
                    (char *)"always",
                    (char *)"--daemonize",
                    (char *)"no",
                    NULL};
    r->proc = fgt_spawn(argv, log);
    cr_assert(fgt_wait_port(r->port, 10000), "redis-server did not start (see %s)", log);
}

void fgt_redis_start(fgt_redis_t *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->dir, sizeof r->dir, "%s", fgt_tmpdir());
    r->port = fgt_free_port();
    snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d/0", r->port);
    redis_spawn(r);
}

void fgt_redis_restart(fgt_redis_t *r)
{
    redis_spawn(r);
}

void fgt_redis_stop(fgt_redis_t *r)
{
    fgt_stop(&r->proc, SIGTERM);
}

char *fgt_redis_cmd(const fgt_redis_t *r, const char *const argv[])
{
    redisContext *c = redisConnect("127.0.0.1", r->port);
    cr_assert(c && !c->err, "connect to redis :%d", r->port);
    int argc = 0;
    while (argv[argc]) argc++;
    redisReply *rep = redisCommandArgv(c, argc, (const char **)argv, NULL);
    cr_assert(rep, "redis command failed");
    char *out = NULL;
    if (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS ||
        rep->type == REDIS_REPLY_ERROR)
        out = strndup(rep->str, (size_t)rep->len);
    else if (rep->type == REDIS_REPLY_INTEGER) {
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", rep->integer);
        out = strdup(buf);
    } else if (rep->type == REDIS_REPLY_ARRAY) {
        char buf[32];
        snprintf(buf, sizeof buf, "%zu", rep->elements);
        out = strdup(buf);
    }
    freeReplyObject(rep);
    redisFree(c);
    return out;
}

/* ---- postgres ---- */

static bool pg_bin(const char *name, char *out, size_t len)
{
    glob_t g;
    char pat[128];
    snprintf(pat, sizeof pat, "/usr/lib/postgresql/*/bin/%s", name);
    bool ok = glob(pat, 0, NULL, &g) == 0 && g.gl_pathc > 0;
    if (ok) snprintf(out, len, "%s", g.gl_pathv[g.gl_pathc - 1]);
    globfree(&g);
    return ok;
}

static void pg_user(uid_t *uid, gid_t *gid)
{
    *uid = (uid_t)-1;
    *gid = (gid_t)-1;
    if (getuid() != 0) return;
    struct passwd *pw = getpwnam("postgres");
    cr_assert(pw, "running as root needs a 'postgres' user to run the server");
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
}

static void pg_spawn(fgt_pg_t *pg)
{
    char bin[256], port[16], data[300], sock[300], log[300];
    cr_assert(pg_bin("postgres", bin, sizeof bin));
    snprintf(port, sizeof port, "%d", pg->port);
    snprintf(data, sizeof data, "%s/data", pg->dir);
    snprintf(sock, sizeof sock, "unix_socket_directories=%s", pg->dir);
    snprintf(log, sizeof log, "%s/postgres.log", pg->dir);
    uid_t uid;
    gid_t gid;
    pg_user(&uid, &gid);
    char *argv[] = {bin,
                    (char *)"-D",
                    data,
                    (char *)"-p",
                    port,
                    (char *)"-c",
                    sock,
                    (char *)"-c",
                    (char *)"listen_addresses=127.0.0.1",
                    (char *)"-c",
                    (char *)"fsync=on",
                    NULL};
    pg->proc = spawn_as(argv, log, uid, gid);
    cr_assert(fgt_wait_port(pg->port, 20000), "postgres did not start (see %s)", log);
    /* the port opens before the server accepts logins; wait for a real answer */
    for (int i = 0; i < 200; i++) {
        PGconn *c = PQconnectdb(pg->url);
        bool ok = PQstatus(c) == CONNECTION_OK;
        PQfinish(c);
        if (ok) return;
        sleep_ms(50);
    }
    cr_assert_fail("postgres does not accept connections (see %s)", log);
}

void fgt_pg_start(fgt_pg_t *pg)
{
    memset(pg, 0, sizeof *pg);
    char initdb[256];
    if (!pg_bin("initdb", initdb, sizeof initdb))
        cr_skip_test("no postgres server binaries (/usr/lib/postgresql/*/bin)");
    snprintf(pg->dir, sizeof pg->dir, "%s", fgt_tmpdir());
    uid_t uid;
    gid_t gid;
    pg_user(&uid, &gid);
    if (uid != (uid_t)-1) cr_assert(chown(pg->dir, uid, gid) == 0);
    char data[300], log[300];
    snprintf(data, sizeof data, "%s/data", pg->dir);
    snprintf(log, sizeof log, "%s/initdb.log", pg->dir);
    char *argv[] = {initdb,       (char *)"-D",       data,         (char *)"-A", (char *)"trust",
                    (char *)"-U", (char *)"postgres", (char *)"-N", NULL};
    fgt_proc_t p = spawn_as(argv, log, uid, gid);
    int st = -1;
    waitpid(p.pid, &st, 0);
    for (size_t i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == p.pid) children[i] = 0;
    char *text = fgt_read_file(log);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "initdb failed:\n%s", text ? text : "");
    free(text);
    pg->port = fgt_free_port();
    snprintf(pg->url, sizeof pg->url, "postgres://postgres@127.0.0.1:%d/postgres", pg->port);
    pg_spawn(pg);
}

void fgt_pg_stop(fgt_pg_t *pg)
{
    fgt_stop(&pg->proc, SIGINT);
}

void fgt_pg_restart(fgt_pg_t *pg)
{
    pg_spawn(pg);
}

char *fgt_pg_query(const char *url, const char *sql)
{
    PGconn *c = PQconnectdb(url);
    cr_assert(PQstatus(c) == CONNECTION_OK, "connect %s: %s", url, PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    cr_assert(st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK, "%s: %s", sql,
              PQresultErrorMessage(r));
    char *out = NULL;
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        out = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return out;
}

/* ---- gateway ---- */

static char *replace_all(const char *s, const char *what, const char *with)
{
    size_t wl = strlen(what), nl = strlen(with), count = 0;
    for (const char *p = strstr(s, what); p; p = strstr(p + wl, what)) count++;
    char *out = malloc(strlen(s) + count * nl + 1);
    cr_assert(out);
    char *o = out;
    const char *p;
    while ((p = strstr(s, what))) {
        memcpy(o, s, (size_t)(p - s));
        o += p - s;
        memcpy(o, with, nl);
        o += nl;
        s = p + wl;
    }
    memcpy(o, s, strlen(s) + 1);
    return out;
}

/* FG_TEST_GATEWAY_BIN runs the tests against another build (e.g. to show
 * that a test fails without a fix). */
static const char *gateway_bin(void)
{
    const char *b = getenv("FG_TEST_GATEWAY_BIN");
    return b && b[0] ? b : FG_BIN_GATEWAY;
}

static void gateway_spawn(fgt_gateway_t *g)
{
    char log[600];
    snprintf(log, sizeof log, "%s/gateway.log", g->dir);
    char *argv[] = {(char *)gateway_bin(), (char *)"-c", g->conf, NULL};
    g->proc = fgt_spawn(argv, log);
    char url[128];
    snprintf(url, sizeof url, "%s/healthz", g->admin_url);
    for (int waited = 0; waited < 10000; waited += 20) {
        int status;
        if (waitpid(g->proc.pid, &status, WNOHANG) == g->proc.pid) {
            char *text = fgt_read_file(log);
            g->proc.pid = 0;
            cr_assert_fail("gateway exited at start:\n%s", text ? text : "");
        }
        fgt_resp_t r = fgt_http("GET", url, NULL, NULL, 0);
        long st = r.status;
        fgt_resp_free(&r);
        if (st == 200 && fgt_wait_port(g->port, 0)) return;
        sleep_ms(20);
    }
    char *text = fgt_read_file(log);
    cr_assert_fail("gateway did not come up:\n%s", text ? text : "");
}

static void gateway_write_conf(fgt_gateway_t *g, const char *config);

int fgt_gateway_start_fail(fgt_gateway_t *g, const char *config, char **log)
{
    gateway_write_conf(g, config);
    char logf[600];
    snprintf(logf, sizeof logf, "%s/gateway.log", g->dir);
    char *argv[] = {(char *)gateway_bin(), (char *)"-c", g->conf, NULL};
    g->proc = fgt_spawn(argv, logf);
    int status = -1;
    for (int waited = 0; waited < 10000; waited += 20) {
        if (waitpid(g->proc.pid, &status, WNOHANG) == g->proc.pid) {
            for (size_t i = 0; i < MAX_CHILDREN; i++)
                if (children[i] == g->proc.pid) children[i] = 0;
            g->proc.pid = 0;
            *log = fgt_read_file(logf);
            return status;
        }
        sleep_ms(20);
    }
    char *text = fgt_read_file(logf);
    cr_assert_fail("gateway did not refuse to start:\n%s", text ? text : "");
    return -1;
}

char *fgt_gateway_log(const fgt_gateway_t *g)
{
    char logf[600];
    snprintf(logf, sizeof logf, "%s/gateway.log", g->dir);
    return fgt_read_file(logf);
}

void fgt_gateway_start(fgt_gateway_t *g, const char *config)
{
    gateway_write_conf(g, config);
    gateway_spawn(g);
}

static void gateway_write_conf(fgt_gateway_t *g, const char *config)
{
    memset(g, 0, sizeof *g);
    snprintf(g->dir, sizeof g->dir, "%s", fgt_tmpdir());
    g->port = fgt_free_port();
    g->admin_port = fgt_free_port();
    while (g->admin_port == g->port) g->admin_port = fgt_free_port();
    char listen[64], admin[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", g->port);
    snprintf(admin, sizeof admin, "127.0.0.1:%d", g->admin_port);
    snprintf(g->url, sizeof g->url, "http://127.0.0.1:%d", g->port);
    snprintf(g->admin_url, sizeof g->admin_url, "http://127.0.0.1:%d", g->admin_port);
    char *a = replace_all(config, "{listen}", listen);
    char *b = replace_all(a, "{admin}", admin);
    char *c = replace_all(b, "{dir}", g->dir);
    snprintf(g->conf, sizeof g->conf, "%s/fencegate.conf", g->dir);
    FILE *f = fopen(g->conf, "w");
    cr_assert(f);
    fputs(c, f);
    fclose(f);
    free(a);
    free(b);
    free(c);
}

void fgt_gateway_restart(fgt_gateway_t *g)
{
    gateway_spawn(g);
}

int fgt_gateway_stop(fgt_gateway_t *g)
{
    return fgt_stop(&g->proc, SIGTERM);
}

/* ---- HTTP ---- */

typedef struct buf {
    char *p;
    size_t len;
} buf_t;

static size_t collect(char *p, size_t size, size_t n, void *ud)
{
    buf_t *b = ud;
    size_t add = size * n;
    char *np = realloc(b->p, b->len + add + 1);
    if (!np) return 0;
    memcpy(np + b->len, p, add);
    b->p = np;
    b->len += add;
    b->p[b->len] = '\0';
    return add;
}

typedef struct src {
    const char *p;
    size_t len, at;
} src_t;

static size_t feed(char *dst, size_t size, size_t n, void *ud)
{
    src_t *s = ud;
    size_t max = size * n, left = s->len - s->at;
    if (max > left) max = left;
    memcpy(dst, s->p + s->at, max);
    s->at += max;
    return max;
}

fgt_resp_t fgt_http(const char *method, const char *url, const char *const headers[],
                    const char *body, size_t body_len)
{
    fgt_resp_t r = {0};
    CURL *c = curl_easy_init();
    cr_assert(c);
    buf_t hb = {0}, bb = {0};
    src_t src = {body, body_len, 0};
    struct curl_slist *hl = NULL;
    for (size_t i = 0; headers && headers[i]; i++) hl = curl_slist_append(hl, headers[i]);
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hb);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &bb);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (body) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, feed);
        curl_easy_setopt(c, CURLOPT_READDATA, &src);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)body_len);
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    r.curl_err = (int)curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    r.headers = hb.p ? hb.p : strdup("");
    r.body = bb.p ? bb.p : strdup("");
    r.body_len = bb.len;
    return r;
}

void fgt_resp_free(fgt_resp_t *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}

const char *fgt_resp_header(const fgt_resp_t *r, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    /* the last header block wins (after any 100 Continue) */
    const char *found = NULL;
    for (const char *p = r->headers; p && *p;) {
        const char *e = strstr(p, "\r\n");
        size_t ll = e ? (size_t)(e - p) : strlen(p);
        if (ll > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) found = p;
        p = e ? e + 2 : p + ll;
    }
    if (!found) return NULL;
    const char *v = found + nl + 1;
    while (*v == ' ') v++;
    const char *e = strstr(v, "\r\n");
    size_t vl = e ? (size_t)(e - v) : strlen(v);
    snprintf(buf, len, "%.*s", (int)vl, v);
    return buf;
}

json_t *fgt_resp_json(const fgt_resp_t *r)
{
    if (!r->body) return NULL;
    return json_loadb(r->body, r->body_len, 0, NULL);
}

int fgt_raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    return fd;
}

char *fgt_raw_read_all(int fd, int timeout_ms, bool *closed)
{
    buf_t b = {0};
    char tmp[4096];
    bool eof = false;
    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, timeout_ms) <= 0) break;
        ssize_t n = read(fd, tmp, sizeof tmp);
        if (n <= 0) {
            eof = true; /* end of stream, or reset: closed either way */
            break;
        }
        collect(tmp, 1, (size_t)n, &b);
    }
    if (closed) *closed = eof;
    return b.p ? b.p : strdup("");
}

char *fgt_raw_exchange(int port, const char *bytes, size_t len, int timeout_ms, bool *closed)
{
    int fd = fgt_raw_connect(port);
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, bytes + off, len - off, MSG_NOSIGNAL);
        if (w <= 0) break; /* the server may close early; read what it said */
        off += (size_t)w;
    }
    char *out = fgt_raw_read_all(fd, timeout_ms, closed);
    close(fd);
    return out;
}

char *fgt_raw_request(int port, const char *bytes, size_t len, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, bytes + off, len - off);
        cr_assert(w > 0);
        off += (size_t)w;
    }
    buf_t b = {0};
    char tmp[4096];
    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, timeout_ms) <= 0) break;
        ssize_t n = read(fd, tmp, sizeof tmp);
        if (n <= 0) break;
        collect(tmp, 1, (size_t)n, &b);
    }
    close(fd);
    return b.p ? b.p : strdup("");
}

/* ---- misbehaving TCP proxy ---- */

#define PROXY_CONNS 16

typedef struct pconn {
    int cfd, sfd; /* -1 when unused */
    char buf[65536];
    size_t len, off; /* server-to-client bytes waiting */
    uint64_t next_ms;
} pconn_t;

struct fgt_proxy {
    int lfd, port, target;
    int trickle_ms; /* atomic */
    pthread_mutex_t mu;
    char inject[256];
    size_t inject_len;
    bool inject_pending[PROXY_CONNS];
    bool stop; /* atomic */
    pthread_t th;
    pconn_t c[PROXY_CONNS];
};

static uint64_t proxy_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void pconn_close(pconn_t *c)
{
    if (c->cfd >= 0) close(c->cfd);
    if (c->sfd >= 0) close(c->sfd);
    c->cfd = c->sfd = -1;
    c->len = c->off = 0;
}

static void proxy_accept(fgt_proxy_t *p)
{
    int cfd = accept(p->lfd, NULL, NULL);
    if (cfd < 0) return;
    int sfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->target)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (sfd < 0 || connect(sfd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(cfd);
        if (sfd >= 0) close(sfd);
        return;
    }
    for (int i = 0; i < PROXY_CONNS; i++)
        if (p->c[i].cfd < 0) {
            p->c[i].cfd = cfd;
            p->c[i].sfd = sfd;
            p->c[i].len = p->c[i].off = 0;
            return;
        }
    close(cfd);
    close(sfd);
}

static void *proxy_main(void *arg)
{
    fgt_proxy_t *p = arg;
    while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
        struct pollfd fds[1 + 2 * PROXY_CONNS];
        int idx[1 + 2 * PROXY_CONNS], n = 0;
        fds[n] = (struct pollfd){p->lfd, POLLIN, 0};
        idx[n++] = -1;
        int trickle = __atomic_load_n(&p->trickle_ms, __ATOMIC_ACQUIRE);
        uint64_t now = proxy_now();
        int timeout = 20;
        for (int i = 0; i < PROXY_CONNS; i++) {
            pconn_t *c = &p->c[i];
            if (c->cfd < 0) continue;
            fds[n] = (struct pollfd){c->cfd, POLLIN, 0};
            idx[n++] = i;
            if (c->off == c->len) {
                fds[n] = (struct pollfd){c->sfd, POLLIN, 0};
                idx[n++] = 100 + i;
            }
        }
        poll(fds, (nfds_t)n, timeout);
        for (int k = 0; k < n; k++) {
            if (!fds[k].revents) continue;
            if (idx[k] == -1) {
                proxy_accept(p);
                continue;
            }
            int i = idx[k] % 100;
            pconn_t *c = &p->c[i];
            if (c->cfd < 0) continue;
            char tmp[65536];
            if (idx[k] < 100) { /* client to server: at once */
                ssize_t r = read(c->cfd, tmp, sizeof tmp);
                if (r <= 0 || write(c->sfd, tmp, (size_t)r) != r) pconn_close(c);
            } else { /* server to client: buffered */
                ssize_t r = read(c->sfd, c->buf, sizeof c->buf);
                if (r <= 0) {
                    pconn_close(c);
                    continue;
                }
                c->len = (size_t)r;
                c->off = 0;
                pthread_mutex_lock(&p->mu);
                if (p->inject_pending[i]) {
                    p->inject_pending[i] = false;
                    ssize_t w = write(c->cfd, p->inject, p->inject_len);
                    (void)w;
                }
                pthread_mutex_unlock(&p->mu);
            }
        }
        now = proxy_now();
        for (int i = 0; i < PROXY_CONNS; i++) {
            pconn_t *c = &p->c[i];
            if (c->cfd < 0 || c->off == c->len) continue;
            if (trickle == 0) {
                ssize_t w = write(c->cfd, c->buf + c->off, c->len - c->off);
                if (w <= 0)
                    pconn_close(c);
                else
                    c->off += (size_t)w;
            } else if (now >= c->next_ms) {
                ssize_t w = write(c->cfd, c->buf + c->off, 1);
                if (w <= 0)
                    pconn_close(c);
                else
                    c->off++;
                c->next_ms = now + (uint64_t)trickle;
            }
        }
    }
    return NULL;
}

fgt_proxy_t *fgt_proxy_start(int target_port)
{
    fgt_proxy_t *p = calloc(1, sizeof *p);
    cr_assert(p);
    for (int i = 0; i < PROXY_CONNS; i++) p->c[i].cfd = p->c[i].sfd = -1;
    p->target = target_port;
    pthread_mutex_init(&p->mu, NULL);
    p->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    cr_assert(bind(p->lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(p->lfd, 16) == 0);
    getsockname(p->lfd, (struct sockaddr *)&a, &al);
    p->port = ntohs(a.sin_port);
    cr_assert(pthread_create(&p->th, NULL, proxy_main, p) == 0);
    return p;
}

int fgt_proxy_port(const fgt_proxy_t *p)
{
    return p->port;
}

void fgt_proxy_trickle(fgt_proxy_t *p, int ms_per_byte)
{
    __atomic_store_n(&p->trickle_ms, ms_per_byte, __ATOMIC_RELEASE);
}

void fgt_proxy_inject(fgt_proxy_t *p, const char *bytes, size_t len)
{
    pthread_mutex_lock(&p->mu);
    if (len > sizeof p->inject) len = sizeof p->inject;
    memcpy(p->inject, bytes, len);
    p->inject_len = len;
    for (int i = 0; i < PROXY_CONNS; i++) p->inject_pending[i] = p->c[i].cfd >= 0;
    pthread_mutex_unlock(&p->mu);
}

void fgt_proxy_stop(fgt_proxy_t *p)
{
    __atomic_store_n(&p->stop, true, __ATOMIC_RELEASE);
    pthread_join(p->th, NULL);
    for (int i = 0; i < PROXY_CONNS; i++) pconn_close(&p->c[i]);
    close(p->lfd);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
