/*
 * redis.c -- the Redis state store (`state = redis://[:password@]host:port/db`).
 *
 * A fence check is one EVALSHA of a Lua script that compares, advances the
 * hwm and, for a refused token (stale, or a jump above max_token_jump),
 * XADDs the audit record: Redis runs a script atomically, so a refusal never
 * exists without its record. A batch of checks is one pipeline: n EVALSHAs
 * written at once, n replies read back, one round trip. An operator's raise or
 * reset is a second script (a reset writes its audit record in the same step).
 *
 * Lua numbers are doubles, so the scripts never turn a token into a number:
 * tokens travel and are stored as canonical decimal strings and compared as
 * such (longer is larger; equal length compares byte-wise); hwm + max_jump is
 * added digit by digit. Exact over the whole u64 range.
 *
 * I/O: hiredis only builds commands and parses replies; the socket is ours,
 * nonblocking, and every call polls against the one deadline of the store
 * call (s->deadline_ms), connect included. A server that trickles its answer
 * a byte at a time therefore cannot hold a call longer than state_timeout.
 * Any error inside a pipeline, or a reply of the wrong count or type, drops
 * the connection: a later batch must never read an earlier batch's replies.
 *
 * Keys: fencegate:hwm:<resource> (string), fencegate:audit (stream, trimmed
 * with MAXLEN ~ audit_max, never below it, plus an exact trim by the janitor).
 * The stream id is the audit id; its millisecond part is the record's time.
 */
#include <assert.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "policy/error.h"
#include "policy/token.h"
#include "storage/redis_reply.h"
#include "storage/store_int.h"

#define AUDIT_STREAM "fencegate:audit"
#define HWM_PREFIX   "fencegate:hwm:"
#define SCAN_PAGE    1000
#define SCAN_MAX     100000 /* most stream entries one filtered query reads */

/* Shared by both scripts: decimal-string compare and add, and the XADD of an
 * audit record with optional fields. */
#define LUA_LIB                                                                                    \
    "local function gt(a, b)\n"                                                                    \
    "  if #a ~= #b then return #a > #b end\n"                                                      \
    "  return a > b\n"                                                                             \
    "end\n"                                                                                        \
    "local function add(a, b)\n"                                                                   \
    "  local r, carry, i, j = {}, 0, #a, #b\n"                                                     \
    "  while i > 0 or j > 0 or carry > 0 do\n"                                                     \
    "    local d = carry\n"                                                                        \
    "    if i > 0 then d = d + string.byte(a, i) - 48; i = i - 1 end\n"                            \
    "    if j > 0 then d = d + string.byte(b, j) - 48; j = j - 1 end\n"                            \
    "    r[#r + 1] = string.char(48 + d % 10); carry = (d - d % 10) / 10\n"                        \
    "  end\n"                                                                                      \
    "  return string.reverse(table.concat(r))\n"                                                   \
    "end\n"                                                                                        \
    "local function xadd(stream, maxlen, fields)\n"                                                \
    "  local a = {'XADD', stream}\n"                                                               \
    "  if maxlen ~= '' then a[#a+1] = 'MAXLEN'; a[#a+1] = '~'; a[#a+1] = maxlen end\n"             \
    "  a[#a+1] = '*'\n"                                                                            \
    "  for i = 1, #fields, 2 do\n"                                                                 \
    "    if fields[i+1] ~= '' then a[#a+1] = fields[i]; a[#a+1] = fields[i+1] end\n"               \
    "  end\n"                                                                                      \
    "  return redis.call(unpack(a))\n"                                                             \
    "end\n"

/* KEYS: hwm key, stream. ARGV: 1 token, 2 strict, 3 maxlen ('' = no cap),
 * 4 policy, 5 resource, 6 method, 7 path, 8 client, 9 reason, 10 request_id,
 * 11 max_jump ('' = none), 12 path_truncated ('1' or '').
 * Returns {1, hwm-before} accepted, {0, hwm, id} stale, {2, hwm, id} jump. */
static const char check_script[] = LUA_LIB
    "local cur = redis.call('GET', KEYS[1])\n"
    "local tok = ARGV[1]\n"
    "if not cur then\n"
    "  redis.call('SET', KEYS[1], tok)\n"
    "  return {1, ''}\n"
    "end\n"
    "local function audit(reason)\n"
    "  return xadd(KEYS[2], ARGV[3], {'policy', ARGV[4], 'resource', ARGV[5],\n"
    "    'method', ARGV[6], 'path', ARGV[7], 'path_truncated', ARGV[12], 'client', ARGV[8],\n"
    "    'token', tok, 'highest', cur, 'reason', reason, 'request_id', ARGV[10]})\n"
    "end\n"
    "local pass\n"
    "if ARGV[2] == '1' then pass = gt(tok, cur) else pass = (tok == cur) or gt(tok, cur) end\n"
    "if pass then\n"
    "  if ARGV[11] ~= '' and gt(tok, add(cur, ARGV[11])) then\n"
    "    local reason = 'jump'\n"
    "    if ARGV[9] == 'report-only' then reason = ARGV[9] end\n"
    "    return {2, cur, audit(reason)}\n"
    "  end\n"
    "  if gt(tok, cur) then redis.call('SET', KEYS[1], tok) end\n"
    "  return {1, cur}\n"
    "end\n"
    "return {0, cur, audit(ARGV[9])}\n";

/* KEYS: hwm key, stream. ARGV: 1 token, 2 'raise' | 'reset', 3 maxlen,
 * 4 resource, 5 method, 6 path, 7 client, 8 request_id, 9 detail,
 * 10 path_truncated. Returns {hwm-before or '', hwm-after[, audit id]}. */
static const char set_script[] = LUA_LIB
    "local cur = redis.call('GET', KEYS[1]) or ''\n"
    "local tok = ARGV[1]\n"
    "if ARGV[2] == 'raise' then\n"
    "  if cur == '' or gt(tok, cur) then redis.call('SET', KEYS[1], tok); return {cur, tok} end\n"
    "  return {cur, cur}\n"
    "end\n"
    "redis.call('SET', KEYS[1], tok)\n"
    "local id = xadd(KEYS[2], ARGV[3], {'resource', ARGV[4], 'method', ARGV[5], 'path', ARGV[6],\n"
    "  'path_truncated', ARGV[10], 'client', ARGV[7], 'token', tok, 'highest', cur,\n"
    "  'reason', 'reset', 'request_id', ARGV[8], 'detail', ARGV[9]})\n"
    "return {cur, tok, id}\n";

typedef struct rd {
    struct fg_store base;
    char host[256];
    int port;
    int db;
    char *password;
    redisContext *c;
    char sha[48], set_sha[48];
    char maxlen[24];     /* "" = no cap */
    fg_rr_arena_t arena; /* the loop's replies (redis_reply.h) */
} rd_t;

static int rd_io_err(rd_t *r, const char *what)
{
    return fg_store_seterr(&r->base, FG_EUNAVAIL, "redis %s:%d %s: %s", r->host, r->port, what,
                           r->c && r->c->err ? r->c->errstr : "no connection");
}

static int rd_timeout(rd_t *r, const char *what)
{
    return fg_store_seterr(&r->base, FG_EUNAVAIL, "redis %s:%d %s: no answer within %llu ms",
                           r->host, r->port, what, (unsigned long long)r->base.opts.timeout_ms);
}

/* Wait for `events` on fd until the call's deadline: 0, or FG_EUNAVAIL. */
static int wait_fd(rd_t *r, int fd, short events, const char *what)
{
    for (;;) {
        uint64_t now = fg_now_mono_ms();
        if (now >= r->base.deadline_ms) return rd_timeout(r, what);
        struct pollfd p = {fd, events, 0};
        int n = poll(&p, 1, (int)(r->base.deadline_ms - now));
        if (n > 0) return 0;
        if (n < 0 && errno != EINTR)
            return fg_store_seterr(&r->base, FG_EUNAVAIL, "redis %s: poll: %s", what,
                                   strerror(errno));
    }
}

/* A nonblocking TCP connection to host:port, made by the deadline: fd or <0. */
static int dial(rd_t *r)
{
    char port[8];
    snprintf(port, sizeof port, "%d", r->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    int g = getaddrinfo(r->host, port, &hints, &ai);
    if (g != 0)
        return fg_store_seterr(&r->base, FG_EUNAVAIL, "redis %s:%d: %s", r->host, r->port,
                               gai_strerror(g));
    int rc = fg_store_seterr(&r->base, FG_EUNAVAIL, "redis %s:%d: no address", r->host, r->port);
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) continue;
        int err = 0;
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            err = errno;
            if (err == EINPROGRESS) {
                rc = wait_fd(r, fd, POLLOUT, "connect");
                socklen_t el = sizeof err;
                if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) err = errno;
                if (rc) err = ETIMEDOUT;
            }
        }
        if (err == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            freeaddrinfo(ai);
            return fd;
        }
        close(fd);
        if (err != ETIMEDOUT)
            rc = fg_store_seterr(&r->base, FG_EUNAVAIL, "redis %s:%d connect: %s", r->host, r->port,
                                 strerror(err));
        if (fg_now_mono_ms() >= r->base.deadline_ms) break;
    }
    freeaddrinfo(ai);
    return rc;
}

/* Write everything hiredis has buffered, by the deadline. */
static int send_all(rd_t *r)
{
    for (;;) {
        int done = 0;
        if (redisBufferWrite(r->c, &done) != REDIS_OK) return rd_io_err(r, "send");
        if (done) return 0;
        int rc = wait_fd(r, r->c->fd, POLLOUT, "send");
        if (rc) return rc;
    }
}

/* The next reply, by the deadline; *out is the caller's to free. */
static int recv_reply(rd_t *r, redisReply **out)
{
    *out = NULL;
    /* its callers free with freeReplyObject: never on a loop connection */
    assert(!fg_rr_installed(r->c->reader));
    for (;;) {
        void *rep = NULL;
        if (redisGetReplyFromReader(r->c, &rep) != REDIS_OK) {
            r->base.broken = true;
            return fg_store_seterr(&r->base, FG_EPROTO, "redis: unreadable reply: %s",
                                   r->c->errstr);
        }
        if (rep) {
            *out = rep;
            return 0;
        }
        int rc = wait_fd(r, r->c->fd, POLLIN, "reply");
        if (rc) return rc;
        if (redisBufferRead(r->c) != REDIS_OK) return rd_io_err(r, "receive");
    }
}

/* Queue one command; hiredis copies the arguments. An append that fails (out
 * of memory) may leave part of the command buffered: the connection is dropped. */
static int append(rd_t *r, int argc, const char **argv, const size_t *lens)
{
    if (redisAppendCommandArgv(r->c, argc, argv, lens) == REDIS_OK) return 0;
    r->base.broken = true;
    return fg_store_seterr(&r->base, FG_ENOMEM, "redis: cannot queue a command");
}

/* Classify an error reply: a server that cannot serve now is unavailable;
 * anything else refused this request's data. */
static int reply_err(rd_t *r, const char *what, const redisReply *rep)
{
    static const char *const down[] = {"LOADING",  "BUSY",        "MASTERDOWN", "READONLY",
                                       "TRYAGAIN", "CLUSTERDOWN", "OOM",        "NOAUTH",
                                       "MISCONF",  "NOREPLICAS"};
    int rc = FG_EDATA;
    for (size_t i = 0; i < sizeof down / sizeof *down; i++)
        if (strncmp(rep->str, down[i], strlen(down[i])) == 0) rc = FG_EUNAVAIL;
    return fg_store_seterr(&r->base, rc, "redis %s: %s", what, rep->str);
}

/* Run one command: the reply (caller frees) or a negative code. */
static int cmd(rd_t *r, int argc, const char **argv, const size_t *lens, redisReply **out)
{
    *out = NULL;
    int rc = append(r, argc, argv, lens);
    if (!rc) rc = send_all(r);
    if (!rc) rc = recv_reply(r, out);
    return rc;
}

/* cmd() for a command with NUL-terminated arguments. */
static int cmdv(rd_t *r, int argc, const char **argv, redisReply **out)
{
    size_t lens[8];
    for (int i = 0; i < argc && i < 8; i++) lens[i] = strlen(argv[i]);
    return cmd(r, argc, argv, lens, out);
}

static int rd_create(const char *url, const fg_store_opts_t *o, fg_store_t **out, char *err,
                     size_t err_len)
{
    const char *p = url + strlen("redis://");
    rd_t *r = (rd_t *)fg_store_alloc(sizeof *r, &fg_store_redis, url, o);
    if (!r) return FG_ENOMEM;
    r->port = 6379;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        r->password = strndup(pw, (size_t)(at - pw));
        if (!r->password) {
            fg_store_free_base(&r->base);
            return FG_ENOMEM;
        }
        p = at + 1;
    }
    const char *end = p + strcspn(p, ":/");
    size_t hl = (size_t)(end - p);
    const char *bad = NULL;
    uint64_t v;
    if (hl == 0 || hl >= sizeof r->host) bad = "redis URL needs a host";
    if (!bad) {
        memcpy(r->host, p, hl);
        r->host[hl] = '\0';
        p = end;
        if (*p == ':') {
            p++;
            size_t d = strspn(p, "0123456789");
            if (fg_token_parse(p, d, &v) != 0 || v == 0 || v > 65535)
                bad = "bad port in redis URL";
            else
                r->port = (int)v;
            p += d;
        }
    }
    if (!bad && *p == '/') {
        p++;
        size_t d = strspn(p, "0123456789");
        if (d && (fg_token_parse(p, d, &v) != 0 || v > 1000000))
            bad = "bad database number in redis URL";
        else
            r->db = d ? (int)v : 0;
        p += d;
    }
    if (!bad && *p) bad = "unexpected text after the database number in redis URL";
    if (bad) {
        snprintf(err, err_len, "%s: %s", bad, r->base.display);
        free(r->password);
        fg_store_free_base(&r->base);
        return FG_EINVAL;
    }
    if (r->base.opts.audit_max)
        snprintf(r->maxlen, sizeof r->maxlen, "%llu", (unsigned long long)r->base.opts.audit_max);
    *out = &r->base;
    return 0;
}

static void rd_disconnect(fg_store_t *s)
{
    rd_t *r = (rd_t *)s;
    if (r->c) redisFree(r->c); /* closes the fd */
    r->c = NULL;
}

static void rd_destroy(fg_store_t *s)
{
    rd_t *r = (rd_t *)s;
    rd_disconnect(s);
    free(r->password);
    fg_store_free_base(s);
}

/* An idle connection has nothing to read: readable means closed (or garbage). */
static bool rd_stale(fg_store_t *s)
{
    rd_t *r = (rd_t *)s;
    struct pollfd p = {r->c->fd, POLLIN | POLLRDHUP, 0};
    return poll(&p, 1, 0) != 0;
}

/* Load both scripts, pipelined. */
static int load_scripts(rd_t *r)
{
    const char *a1[] = {"SCRIPT", "LOAD", check_script};
    size_t l1[] = {6, 4, sizeof check_script - 1};
    const char *a2[] = {"SCRIPT", "LOAD", set_script};
    size_t l2[] = {6, 4, sizeof set_script - 1};
    int rc = append(r, 3, a1, l1);
    if (!rc) rc = append(r, 3, a2, l2);
    if (!rc) rc = send_all(r);
    char *shas[2] = {r->sha, r->set_sha};
    for (int i = 0; i < 2 && !rc; i++) {
        redisReply *rep;
        rc = recv_reply(r, &rep);
        if (rc) break;
        if (rep->type == REDIS_REPLY_STRING && rep->len < (int)sizeof r->sha)
            snprintf(shas[i], sizeof r->sha, "%s", rep->str);
        else if (rep->type == REDIS_REPLY_ERROR)
            rc = reply_err(r, "SCRIPT LOAD", rep);
        else
            rc = fg_store_seterr(&r->base, FG_EPROTO, "redis SCRIPT LOAD: unexpected reply");
        freeReplyObject(rep);
    }
    if (rc) r->base.broken = true;
    return rc;
}

/* AUTH / SELECT: an error reply means this connection cannot be used. */
static int setup_cmd(rd_t *r, int argc, const char **argv, const char *what)
{
    redisReply *rep;
    int rc = cmdv(r, argc, argv, &rep);
    if (!rc && rep->type == REDIS_REPLY_ERROR)
        rc = fg_store_seterr(&r->base, FG_EUNAVAIL, "redis %s: %s", what, rep->str);
    freeReplyObject(rep);
    return rc;
}

static int rd_connect(fg_store_t *s)
{
    rd_t *r = (rd_t *)s;
    int fd = dial(r);
    if (fd < 0) return FG_EUNAVAIL;
    r->c = redisConnectFd(fd);
    if (!r->c || r->c->err) {
        if (!r->c) close(fd);
        rd_disconnect(s);
        return fg_store_seterr(s, FG_EUNAVAIL, "redis: out of memory");
    }
    r->c->flags &= ~REDIS_BLOCK; /* our socket, our polling: EAGAIN is not an error */
    int rc = 0;
    if (r->password) {
        const char *argv[] = {"AUTH", r->password};
        rc = setup_cmd(r, 2, argv, "AUTH");
    }
    if (!rc && r->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->db);
        const char *argv[] = {"SELECT", db};
        rc = setup_cmd(r, 2, argv, "SELECT");
    }
    if (!rc) rc = load_scripts(r);
    if (rc) {
        rd_disconnect(s);
        return FG_EUNAVAIL;
    }
    return 0;
}

/* The hwm key of `resource`: into buf when it fits, else malloc'd (*heap set). */
static char *hwm_key(const char *resource, char *buf, size_t cap, size_t *len, char **heap)
{
    size_t pl = sizeof HWM_PREFIX - 1, rl = strlen(resource);
    char *k = buf;
    *heap = NULL;
    if (pl + rl + 1 > cap) {
        k = *heap = malloc(pl + rl + 1);
        if (!k) return NULL;
    }
    memcpy(k, HWM_PREFIX, pl);
    memcpy(k + pl, resource, rl + 1);
    *len = pl + rl;
    return k;
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

/* One RESP bulk string into `out` (room checked by the caller). */
static char *resp_bulk(char *out, const char *s, size_t n)
{
    int k = snprintf(out, 24, "$%zu\r\n", n);
    out += k;
    memcpy(out, s, n);
    out += n;
    *out++ = '\r';
    *out++ = '\n';
    return out;
}

/*
 * A check is one EVALSHA with 17 arguments. hiredis's redisAppendCommandArgv
 * builds it through a dozen sds allocations (the profile put it at 11,000
 * instructions a check), so the command is laid out here in RESP, the
 * protocol's plain framing (*argc, then $len and bytes per argument), into one
 * buffer, and handed over with redisAppendFormattedCommand: hiredis still does
 * the connection and every reply.
 */
static int append_check(rd_t *r, fg_check_t *c)
{
    char kb[512], tok[FG_TOKEN_STRLEN], jump[FG_TOKEN_STRLEN] = "", *heap;
    size_t kl;
    char *key = hwm_key(c->resource, kb, sizeof kb, &kl, &heap);
    if (!key) {
        r->base.broken = true; /* earlier checks of the batch are queued already */
        return fg_store_seterr(&r->base, FG_ENOMEM, "redis: out of memory");
    }
    fg_token_format(c->token, tok);
    if (c->has_max_jump) fg_token_format(c->max_jump, jump);
    fg_reason_t reason = c->audit.reason ? c->audit.reason : FG_REASON_STALE;
    const char *argv[] = {"EVALSHA",
                          r->sha,
                          "2",
                          key,
                          AUDIT_STREAM,
                          tok,
                          c->strict ? "1" : "0",
                          r->maxlen,
                          nz(c->audit.policy),
                          c->resource,
                          nz(c->audit.method),
                          nz(c->audit.path),
                          nz(c->audit.client),
                          fg_reason_name(reason),
                          nz(c->audit.request_id),
                          jump,
                          c->audit.path_truncated ? "1" : ""};
    enum { ARGC = sizeof argv / sizeof *argv };
    size_t lens[ARGC], need = 16;
    for (size_t i = 0; i < ARGC; i++) {
        lens[i] = i == 3 ? kl : strlen(argv[i]);
        need += lens[i] + 32;
    }
    char sbuf[2048], *buf = need <= sizeof sbuf ? sbuf : malloc(need);
    int rc = 0;
    if (!buf) {
        r->base.broken = true;
        rc = fg_store_seterr(&r->base, FG_ENOMEM, "redis: out of memory");
    } else {
        char *at = buf + snprintf(buf, 16, "*%d\r\n", (int)ARGC);
        for (size_t i = 0; i < ARGC; i++) at = resp_bulk(at, argv[i], lens[i]);
        if (redisAppendFormattedCommand(r->c, buf, (size_t)(at - buf)) != REDIS_OK) {
            r->base.broken = true;
            rc = fg_store_seterr(&r->base, FG_ENOMEM, "redis: cannot queue a command");
        }
        if (buf != sbuf) free(buf);
    }
    free(heap);
    return rc;
}

/* 0, FG_ENOTFOUND for NOSCRIPT, or an error (wrong shape: FG_EPROTO). */
static int parse_check_reply(rd_t *r, fg_check_t *c, redisReply *rep)
{
    if (rep->type == REDIS_REPLY_ERROR) {
        if (strncmp(rep->str, "NOSCRIPT", 8) == 0) return FG_ENOTFOUND;
        return reply_err(r, "check", rep);
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER || rep->element[1]->type != REDIS_REPLY_STRING)
        return fg_store_seterr(&r->base, FG_EPROTO, "redis check: unexpected reply");
    redisReply *cur = rep->element[1];
    long long code = rep->element[0]->integer;
    c->had_highest = cur->len > 0;
    c->highest = 0;
    if (c->had_highest && fg_token_parse(cur->str, (size_t)cur->len, &c->highest) != 0)
        return fg_store_seterr(&r->base, FG_EDATA, "redis: bad hwm for %s", c->resource);
    if (code == 1) {
        c->result = FG_CHECK_ACCEPTED;
        return 0;
    }
    if ((code != 0 && code != 2) || rep->elements < 3 ||
        rep->element[2]->type != REDIS_REPLY_STRING)
        return fg_store_seterr(&r->base, FG_EPROTO, "redis check: unexpected reply");
    c->result = code == 0 ? FG_CHECK_STALE : FG_CHECK_JUMP;
    snprintf(c->audit_id, sizeof c->audit_id, "%s", rep->element[2]->str);
    c->audit.time_ms = strtoll(rep->element[2]->str, NULL, 10);
    return 0;
}

/* One pipeline of the checks whose `todo` is set; clears it for each that
 * ran. Any error but NOSCRIPT drops the connection. */
static int run_batch(rd_t *r, fg_check_t *checks, size_t n, bool *todo, bool *noscript)
{
    *noscript = false;
    int rc = 0;
    size_t sent = 0;
    for (size_t i = 0; i < n && !rc; i++)
        if (todo[i]) {
            rc = append_check(r, &checks[i]);
            sent++;
        }
    if (!rc) rc = send_all(r);
    int first_err = rc;
    for (size_t i = 0; i < n && !rc; i++) {
        if (!todo[i]) continue;
        redisReply *rep;
        rc = recv_reply(r, &rep);
        if (rc) {
            first_err = rc;
            break;
        }
        int prc = parse_check_reply(r, &checks[i], rep);
        freeReplyObject(rep);
        if (prc == FG_ENOTFOUND) {
            *noscript = true;
        } else {
            todo[i] = false;
            if (prc && !first_err) first_err = prc;
        }
    }
    (void)sent;
    if (first_err) r->base.broken = true;
    return first_err;
}

static int rd_check(fg_store_t *s, fg_check_t *checks, size_t n)
{
    rd_t *r = (rd_t *)s;
    bool todo[FG_STORE_BATCH_MAX], noscript;
    for (size_t i = 0; i < n; i++) todo[i] = true;
    int rc = run_batch(r, checks, n, todo, &noscript);
    if (rc == 0 && noscript) {
        /* the script cache was flushed: redo exactly the checks that did not run */
        rc = load_scripts(r);
        if (!rc) rc = run_batch(r, checks, n, todo, &noscript);
        if (rc == 0 && noscript) {
            s->broken = true;
            rc = fg_store_seterr(s, FG_EPROTO, "redis: script vanished twice");
        }
    }
    return rc;
}

static int rd_get(fg_store_t *s, const char *resource, uint64_t *hwm)
{
    rd_t *r = (rd_t *)s;
    char kb[512], *heap;
    size_t kl;
    char *key = hwm_key(resource, kb, sizeof kb, &kl, &heap);
    if (!key) return FG_ENOMEM;
    const char *argv[] = {"GET", key};
    size_t lens[] = {3, kl};
    redisReply *rep;
    int rc = cmd(r, 2, argv, lens, &rep);
    free(heap);
    if (rc) return rc;
    if (rep->type == REDIS_REPLY_NIL)
        rc = FG_ENOTFOUND;
    else if (rep->type == REDIS_REPLY_STRING &&
             fg_token_parse(rep->str, (size_t)rep->len, hwm) == 0)
        rc = 0;
    else if (rep->type == REDIS_REPLY_ERROR)
        rc = reply_err(r, "GET", rep);
    else
        rc = fg_store_seterr(s, FG_EDATA, "redis: bad hwm for %s", resource);
    freeReplyObject(rep);
    return rc;
}

static int rd_audit_append(fg_store_t *s, fg_audit_t *a)
{
    rd_t *r = (rd_t *)s;
    char tok[FG_TOKEN_STRLEN], hi[FG_TOKEN_STRLEN];
    if (a->has_token) fg_token_format(a->token, tok);
    if (a->has_highest) fg_token_format(a->highest, hi);
    const char *argv[32];
    size_t n = 0;
    argv[n++] = "XADD";
    argv[n++] = AUDIT_STREAM;
    if (r->maxlen[0]) {
        argv[n++] = "MAXLEN";
        argv[n++] = "~";
        argv[n++] = r->maxlen;
    }
    argv[n++] = "*";
#define FIELD(k, v)                                                                                \
    if (v) {                                                                                       \
        argv[n++] = k;                                                                             \
        argv[n++] = v;                                                                             \
    }
    FIELD("policy", a->policy)
    FIELD("resource", a->resource)
    FIELD("method", a->method)
    FIELD("path", a->path)
    const char *cut = a->path_truncated ? "1" : NULL;
    FIELD("path_truncated", cut)
    FIELD("client", a->client)
    const char *tokp = a->has_token ? tok : NULL, *hip = a->has_highest ? hi : NULL;
    FIELD("token", tokp)
    FIELD("highest", hip)
    FIELD("reason", fg_reason_name(a->reason))
    FIELD("request_id", a->request_id)
    FIELD("detail", a->detail)
#undef FIELD
    size_t lens[32];
    for (size_t i = 0; i < n; i++) lens[i] = strlen(argv[i]);
    redisReply *rep;
    int rc = cmd(r, (int)n, argv, lens, &rep);
    if (rc) return rc;
    if (rep->type == REDIS_REPLY_STRING) {
        snprintf(a->id, sizeof a->id, "%s", rep->str);
        a->time_ms = strtoll(rep->str, NULL, 10);
    } else if (rep->type == REDIS_REPLY_ERROR) {
        rc = reply_err(r, "XADD", rep);
    } else {
        rc = fg_store_seterr(s, FG_EPROTO, "redis XADD: unexpected reply");
    }
    freeReplyObject(rep);
    return rc;
}

/* Fill `a` from one stream entry [id, [k, v, ...]]; returns true when it passes the filters. */
static bool entry_to_audit(fg_audit_list_t *l, redisReply *e, const fg_audit_query_t *q,
                           fg_audit_t *a)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_ARRAY)
        return false;
    memset(a, 0, sizeof *a);
    snprintf(a->id, sizeof a->id, "%s", e->element[0]->str);
    a->time_ms = strtoll(e->element[0]->str, NULL, 10);
    if (q->since_ms >= 0 && a->time_ms < q->since_ms) return false;
    redisReply *f = e->element[1];
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
        const char *ks = k->str;
        const char **str = NULL;
        if (strcmp(ks, "resource") == 0) {
            if (q->resource && strcmp(v->str, q->resource) != 0) return false;
            str = &a->resource;
        } else if (strcmp(ks, "reason") == 0) {
            a->reason = fg_reason_parse(v->str);
            if (q->reason != FG_REASON_NONE && a->reason != q->reason) return false;
        } else if (strcmp(ks, "policy") == 0) {
            str = &a->policy;
        } else if (strcmp(ks, "method") == 0) {
            str = &a->method;
        } else if (strcmp(ks, "path") == 0) {
            str = &a->path;
        } else if (strcmp(ks, "path_truncated") == 0) {
            a->path_truncated = strcmp(v->str, "1") == 0;
        } else if (strcmp(ks, "client") == 0) {
            str = &a->client;
        } else if (strcmp(ks, "request_id") == 0) {
            str = &a->request_id;
        } else if (strcmp(ks, "detail") == 0) {
            str = &a->detail;
        } else if (strcmp(ks, "token") == 0) {
            a->has_token = fg_token_parse(v->str, (size_t)v->len, &a->token) == 0;
        } else if (strcmp(ks, "highest") == 0) {
            a->has_highest = fg_token_parse(v->str, (size_t)v->len, &a->highest) == 0;
        }
        if (str) *str = fg_audit_list_strndup(l, v->str, (size_t)v->len);
    }
    if (q->resource && !a->resource) return false;
    if (q->reason != FG_REASON_NONE && a->reason != q->reason) return false;
    return true;
}

/* A stream id "<ms>-<seq>" (digits only): true, with its ms. */
static bool stream_id(const char *id, int64_t *ms)
{
    size_t d1 = strspn(id, "0123456789");
    if (!d1 || d1 > 19 || id[d1] != '-') return false;
    size_t d2 = strspn(id + d1 + 1, "0123456789");
    if (!d2 || d2 > 20 || id[d1 + 1 + d2]) return false;
    *ms = strtoll(id, NULL, 10);
    return true;
}

static int rd_audit_query(fg_store_t *s, const fg_audit_query_t *q, fg_audit_list_t *out)
{
    rd_t *r = (rd_t *)s;
    unsigned limit = q->limit ? q->limit : 100;
    bool asc = q->after_id != NULL;
    const char *cursor = asc ? q->after_id : q->before_id;
    int64_t cursor_ms = 0;
    if (cursor && !stream_id(cursor, &cursor_ms))
        return fg_store_seterr(s, FG_EINVAL, "not an audit id of this store: %s", cursor);
    /* one more than the limit, to know whether there is a next page */
    if (fg_audit_list_reserve(out, (size_t)limit + 1)) return FG_ENOMEM;
    char hi[48] = "+", lo[48] = "-", count[16];
    if (q->since_ms >= 0) snprintf(lo, sizeof lo, "%lld", (long long)q->since_ms);
    if (cursor && !asc) snprintf(hi, sizeof hi, "(%s", cursor);
    if (cursor && asc && (q->since_ms < 0 || cursor_ms >= q->since_ms))
        snprintf(lo, sizeof lo, "(%s", cursor);
    bool filtered = q->resource || q->reason != FG_REASON_NONE;
    unsigned page = filtered ? SCAN_PAGE : limit + 1;
    snprintf(count, sizeof count, "%u", page);
    size_t scanned = 0;
    char last_seen[FG_AUDIT_ID_LEN] = "";
    bool more = true;
    while (out->n <= limit && scanned < SCAN_MAX) {
        const char *argv[] = {asc ? "XRANGE" : "XREVRANGE",
                              AUDIT_STREAM,
                              asc ? lo : hi,
                              asc ? hi : lo,
                              "COUNT",
                              count};
        redisReply *rep;
        int rc = cmdv(r, 6, argv, &rep);
        if (rc) return rc;
        if (rep->type != REDIS_REPLY_ARRAY) {
            rc = rep->type == REDIS_REPLY_ERROR
                     ? reply_err(r, "XREVRANGE", rep)
                     : fg_store_seterr(s, FG_EPROTO, "redis XREVRANGE: unexpected reply");
            freeReplyObject(rep);
            return rc;
        }
        size_t got = rep->elements, i;
        for (i = 0; i < got && out->n <= limit; i++) {
            redisReply *e = rep->element[i];
            if (entry_to_audit(out, e, q, &out->items[out->n])) out->n++;
            if (e->type == REDIS_REPLY_ARRAY && e->elements >= 1 &&
                e->element[0]->type == REDIS_REPLY_STRING)
                snprintf(last_seen, sizeof last_seen, "%s", e->element[0]->str);
        }
        scanned += i;
        /* continue strictly past the last id seen: "(" exclusive range */
        if (last_seen[0]) snprintf(asc ? lo : hi, sizeof hi, "(%s", last_seen);
        freeReplyObject(rep);
        if (got < page) {
            more = false;
            break;
        }
    }
    out->next[0] = '\0';
    if (out->n > limit) {
        out->n = limit; /* the extra one only said that a next page exists */
        snprintf(out->next, sizeof out->next, "%s", out->items[limit - 1].id);
    } else if (more && scanned >= SCAN_MAX && last_seen[0]) {
        /* scan budget spent on a filtered query: go on from where it stopped */
        snprintf(out->next, sizeof out->next, "%s", last_seen);
    }
    if (asc) out->next[0] = '\0'; /* a follower goes on with after = its last id */
    return 0;
}

/* Delete the oldest entries up to (excluding) `end_excl` ("+" for no bound),
 * at most `count`: XRANGE then XDEL, exact and bounded by `count`. */
static int delete_oldest(rd_t *r, const char *end, size_t count, size_t *deleted)
{
    char cnt[24];
    snprintf(cnt, sizeof cnt, "%zu", count);
    const char *argv[] = {"XRANGE", AUDIT_STREAM, "-", end, "COUNT", cnt};
    redisReply *rep;
    int rc = cmdv(r, 6, argv, &rep);
    if (rc) return rc;
    if (rep->type != REDIS_REPLY_ARRAY) {
        rc = rep->type == REDIS_REPLY_ERROR
                 ? reply_err(r, "XRANGE", rep)
                 : fg_store_seterr(&r->base, FG_EPROTO, "redis XRANGE: unexpected reply");
        freeReplyObject(rep);
        return rc;
    }
    size_t n = rep->elements;
    if (n) {
        const char **dargv = malloc((n + 2) * sizeof *dargv);
        size_t *dlens = malloc((n + 2) * sizeof *dlens);
        if (!dargv || !dlens) {
            rc = FG_ENOMEM;
        } else {
            dargv[0] = "XDEL";
            dargv[1] = AUDIT_STREAM;
            size_t k = 2;
            for (size_t i = 0; i < n; i++) {
                redisReply *e = rep->element[i];
                if (e->type == REDIS_REPLY_ARRAY && e->elements >= 1 &&
                    e->element[0]->type == REDIS_REPLY_STRING)
                    dargv[k++] = e->element[0]->str;
            }
            for (size_t i = 0; i < k; i++) dlens[i] = strlen(dargv[i]);
            redisReply *d;
            rc = cmd(r, (int)k, dargv, dlens, &d);
            if (!rc && d->type == REDIS_REPLY_INTEGER)
                *deleted += (size_t)d->integer;
            else if (!rc)
                rc = fg_store_seterr(&r->base, FG_EPROTO, "redis XDEL failed");
            freeReplyObject(d);
        }
        free(dargv);
        free(dlens);
    }
    freeReplyObject(rep);
    return rc;
}

static int rd_audit_purge(fg_store_t *s, int64_t older_than_ms, uint64_t keep_max, size_t batch,
                          size_t *deleted)
{
    rd_t *r = (rd_t *)s;
    *deleted = 0;
    int rc = 0;
    if (older_than_ms >= 0) {
        char end[32]; /* ids are "<ms>-<seq>": everything before <ms>-0 is older */
        snprintf(end, sizeof end, "(%lld-0", (long long)older_than_ms);
        rc = delete_oldest(r, end, batch, deleted);
    }
    if (!rc && keep_max) {
        const char *argv[] = {"XLEN", AUDIT_STREAM};
        redisReply *rep;
        rc = cmdv(r, 2, argv, &rep);
        if (rc) return rc;
        long long len = rep->type == REDIS_REPLY_INTEGER ? rep->integer : 0;
        freeReplyObject(rep);
        if (len > 0 && (uint64_t)len > keep_max) {
            uint64_t excess = (uint64_t)len - keep_max;
            rc = delete_oldest(r, "+", excess < batch ? (size_t)excess : batch, deleted);
        }
    }
    return rc;
}

static int rd_ping(fg_store_t *s)
{
    rd_t *r = (rd_t *)s;
    const char *argv[] = {"PING"};
    redisReply *rep;
    int rc = cmdv(r, 1, argv, &rep);
    if (rc) return rc;
    if (rep->type == REDIS_REPLY_ERROR) rc = reply_err(r, "PING", rep);
    freeReplyObject(rep);
    return rc;
}

static int rd_set_hwm(fg_store_t *s, fg_set_hwm_t *op)
{
    rd_t *r = (rd_t *)s;
    char kb[512], tok[FG_TOKEN_STRLEN], *heap;
    size_t kl;
    char *key = hwm_key(op->resource, kb, sizeof kb, &kl, &heap);
    if (!key) return FG_ENOMEM;
    fg_token_format(op->token, tok);
    fg_audit_t *a = &op->audit;
    const char *argv[] = {"EVALSHA",
                          r->set_sha,
                          "2",
                          key,
                          AUDIT_STREAM,
                          tok,
                          op->mode == FG_SET_RESET ? "reset" : "raise",
                          r->maxlen,
                          op->resource,
                          nz(a->method),
                          nz(a->path),
                          nz(a->client),
                          nz(a->request_id),
                          nz(a->detail),
                          a->path_truncated ? "1" : ""};
    enum { ARGC = sizeof argv / sizeof *argv };
    size_t lens[ARGC];
    for (size_t i = 0; i < ARGC; i++) lens[i] = i == 3 ? kl : strlen(argv[i]);
    redisReply *rep;
    int rc = cmd(r, ARGC, argv, lens, &rep);
    if (!rc && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(rep);
        rc = load_scripts(r);
        if (!rc) rc = cmd(r, ARGC, argv, lens, &rep);
    }
    free(heap);
    if (rc) return rc;
    if (rep->type == REDIS_REPLY_ERROR) {
        rc = reply_err(r, "set hwm", rep);
    } else if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 ||
               rep->element[0]->type != REDIS_REPLY_STRING ||
               rep->element[1]->type != REDIS_REPLY_STRING ||
               fg_token_parse(rep->element[1]->str, (size_t)rep->element[1]->len, &op->now) ||
               (op->mode == FG_SET_RESET &&
                (rep->elements < 3 || rep->element[2]->type != REDIS_REPLY_STRING))) {
        s->broken = true;
        rc = fg_store_seterr(s, FG_EPROTO, "redis set hwm: unexpected reply");
    } else {
        redisReply *cur = rep->element[0];
        op->had_highest = cur->len > 0;
        op->highest = 0;
        if (op->had_highest && fg_token_parse(cur->str, (size_t)cur->len, &op->highest) != 0)
            rc = fg_store_seterr(s, FG_EDATA, "redis: bad hwm for %s", op->resource);
        if (op->mode == FG_SET_RESET) {
            snprintf(op->audit_id, sizeof op->audit_id, "%s", rep->element[2]->str);
            a->time_ms = strtoll(rep->element[2]->str, NULL, 10);
        }
    }
    freeReplyObject(rep);
    return rc;
}

static void set_setting(fg_durability_t *d, const char *name, const char *value, size_t len)
{
    if (d->n >= FG_DURABILITY_MAX) return;
    snprintf(d->setting[d->n].name, sizeof d->setting[0].name, "%s", name);
    snprintf(d->setting[d->n].value, sizeof d->setting[0].value, "%.*s", (int)len, value);
    d->n++;
}

/* CONFIG GET name -> its value into d (or "unknown" when CONFIG is refused). */
static void config_value(fg_durability_t *d, const char *name, const redisReply *rep)
{
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[1]->type == REDIS_REPLY_STRING)
        set_setting(d, name, rep->element[1]->str, (size_t)rep->element[1]->len);
    else
        set_setting(d, name, "unknown", 7);
}

/* "key:value" line of an INFO section into d. */
static void info_value(fg_durability_t *d, const char *info, const char *key)
{
    size_t kl = strlen(key);
    for (const char *p = info; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, kl) == 0 && p[kl] == ':') {
            const char *v = p + kl + 1;
            set_setting(d, key, v, strcspn(v, "\r\n"));
            return;
        }
    }
    set_setting(d, key, "unknown", 7);
}

static int rd_durability(fg_store_t *s, fg_durability_t *d)
{
    rd_t *r = (rd_t *)s;
    const char *a1[] = {"CONFIG", "GET", "appendonly"};
    const char *a2[] = {"CONFIG", "GET", "appendfsync"};
    const char *a3[] = {"INFO", "replication"};
    size_t l1[] = {6, 3, 10}, l2[] = {6, 3, 11}, l3[] = {4, 11};
    int rc = append(r, 3, a1, l1);
    if (!rc) rc = append(r, 3, a2, l2);
    if (!rc) rc = append(r, 2, a3, l3);
    if (!rc) rc = send_all(r);
    redisReply *rep[3] = {0};
    for (int i = 0; i < 3 && !rc; i++) rc = recv_reply(r, &rep[i]);
    if (!rc) {
        config_value(d, "appendonly", rep[0]);
        config_value(d, "appendfsync", rep[1]);
        const char *info = rep[2]->type == REDIS_REPLY_STRING ? rep[2]->str : "";
        info_value(d, info, "role");
        info_value(d, info, "connected_slaves");
        bool aof = strcmp(d->setting[0].value, "yes") == 0;
        bool always = strcmp(d->setting[1].value, "always") == 0;
        d->durable = aof && always;
        if (!d->durable)
            snprintf(d->advice, sizeof d->advice, "%s",
                     !aof     ? "set 'appendonly yes' and 'appendfsync always' in redis.conf "
                                "(CONFIG SET appendonly yes; CONFIG SET appendfsync always)"
                     : always ? ""
                              : "set 'appendfsync always' in redis.conf (CONFIG SET "
                                "appendfsync always)");
    } else {
        r->base.broken = true;
    }
    for (int i = 0; i < 3; i++) freeReplyObject(rep[i]);
    return rc;
}

/* ---- event-loop mode: the same commands and replies, the loop's I/O ---- */

static int rd_loop_fd(fg_store_t *s)
{
    rd_t *r = (rd_t *)s;
    return r->c ? r->c->fd : -1;
}

static int rd_loop_send(fg_store_t *s, fg_check_t *c)
{
    return append_check((rd_t *)s, c);
}

static int rd_loop_write(fg_store_t *s, bool *more)
{
    rd_t *r = (rd_t *)s;
    int done = 0;
    /* the socket is nonblocking and REDIS_BLOCK is off: EAGAIN leaves output */
    if (redisBufferWrite(r->c, &done) != REDIS_OK) return rd_io_err(r, "send");
    *more = !done;
    return 0;
}

static int rd_loop_read(fg_store_t *s)
{
    rd_t *r = (rd_t *)s;
    if (redisBufferRead(r->c) != REDIS_OK) return rd_io_err(r, "read");
    return 0;
}

static int rd_loop_reply(fg_store_t *s, fg_check_t *c, int *check_rc)
{
    rd_t *r = (rd_t *)s;
    void *rep = NULL;
    redisReader *rd = r->c->reader;
    /* first reply on this connection in loop mode, nothing half read: from
     * now on its replies come from the arena (a reconnect makes a new reader) */
    if (!fg_rr_installed(rd) && rd->ridx == -1 && !rd->reply) fg_rr_install(rd, &r->arena);
    if (redisGetReplyFromReader(r->c, &rep) != REDIS_OK) {
        fg_store_seterr(s, FG_EPROTO, "redis: unreadable reply: %s", r->c->errstr);
        return FG_EPROTO;
    }
    if (!rep) return 0;
    int prc = parse_check_reply(r, c, rep);
    if (fg_rr_installed(rd))
        fg_rr_free(&r->arena, rep);
    else
        freeReplyObject(rep);
    if (prc == FG_ENOTFOUND) { /* SCRIPT FLUSH under us: reconnect reloads it */
        fg_store_seterr(s, FG_EUNAVAIL, "redis: the fence script vanished (NOSCRIPT)");
        return FG_EUNAVAIL;
    }
    if (prc == FG_EPROTO) return FG_EPROTO; /* the replies are out of step: drop */
    *check_rc = prc;
    return 1;
}

const fg_store_backend_t fg_store_redis = {
    .scheme = "redis",
    .max_pool = 64,
    .create = rd_create,
    .connect = rd_connect,
    .disconnect = rd_disconnect,
    .destroy = rd_destroy,
    .check = rd_check,
    .get = rd_get,
    .audit_append = rd_audit_append,
    .audit_query = rd_audit_query,
    .audit_purge = rd_audit_purge,
    .ping = rd_ping,
    .set_hwm = rd_set_hwm,
    .durability = rd_durability,
    .stale = rd_stale,
    .loop_fd = rd_loop_fd,
    .loop_send = rd_loop_send,
    .loop_write = rd_loop_write,
    .loop_read = rd_loop_read,
    .loop_reply = rd_loop_reply,
};
