/* storage/redis_reply.c -- hiredis reply objects from a per-connection arena.
 * Why: see redis_reply.h. The create functions do what hiredis's own do
 * (hiredis.c createStringObject & co.: link the object into its parent array,
 * copy and NUL-terminate strings), with the object, its string or its element
 * array in one block, after a small header that says where the block lives.
 */
#include "storage/redis_reply.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct rr_obj {
    fg_rr_arena_t *arena; /* NULL: the block came from malloc */
    size_t pad;           /* keeps `rep` 16-byte aligned */
    redisReply rep;
} rr_obj_t;

#define RR_ROUND(n) (((n) + 15) & ~(size_t)15)

/* One block: the header, the reply, then `extra` bytes. NULL on ENOMEM. */
static redisReply *rr_new(const redisReadTask *task, int type, size_t extra)
{
    fg_rr_arena_t *a = task->privdata;
    size_t need = RR_ROUND(sizeof(rr_obj_t) + extra);
    rr_obj_t *o;
    if (a && need <= sizeof a->buf - a->used) {
        o = (rr_obj_t *)(void *)(a->buf + a->used);
        a->used += need;
        memset(o, 0, sizeof *o);
        o->arena = a;
    } else {
        o = calloc(1, sizeof *o + extra);
        if (!o) return NULL;
    }
    o->rep.type = type;
    if (task->parent) { /* hiredis has made the parent an array of the right size */
        redisReply *parent = task->parent->obj;
        parent->element[task->idx] = &o->rep;
    }
    return &o->rep;
}

static rr_obj_t *rr_of(redisReply *r)
{
    return (rr_obj_t *)(void *)((char *)r - offsetof(rr_obj_t, rep));
}

static void *rr_string(const redisReadTask *task, char *str, size_t len)
{
    if (len > SIZE_MAX - sizeof(rr_obj_t) - 32) return NULL;
    redisReply *r = rr_new(task, task->type, len + 1);
    if (!r) return NULL;
    r->str = (char *)(rr_of(r) + 1);
    memcpy(r->str, str, len);
    r->str[len] = '\0';
    r->len = len;
    return r;
}

static void *rr_array(const redisReadTask *task, int elements)
{
    size_t n = elements > 0 ? (size_t)elements : 0;
    if (n > (SIZE_MAX - sizeof(rr_obj_t) - 32) / sizeof(redisReply *)) return NULL;
    redisReply *r = rr_new(task, REDIS_REPLY_ARRAY, n * sizeof(redisReply *));
    if (!r) return NULL;
    if (n) {
        r->element = (redisReply **)(void *)(rr_of(r) + 1);
        memset(r->element, 0, n * sizeof(redisReply *));
    }
    r->elements = n;
    return r;
}

static void *rr_integer(const redisReadTask *task, long long value)
{
    redisReply *r = rr_new(task, REDIS_REPLY_INTEGER, 0);
    if (r) r->integer = value;
    return r;
}

static void *rr_nil(const redisReadTask *task)
{
    return rr_new(task, REDIS_REPLY_NIL, 0);
}

/* Free the heap blocks of a tree; arena blocks wait for the reset. */
static void rr_free_tree(void *p)
{
    if (!p) return;
    redisReply *r = p;
    if (r->type == REDIS_REPLY_ARRAY && r->element)
        for (size_t i = 0; i < r->elements; i++) rr_free_tree(r->element[i]);
    rr_obj_t *o = rr_of(r);
    if (!o->arena) free(o);
}

static redisReplyObjectFunctions rr_functions = {
    .createString = rr_string,
    .createArray = rr_array,
    .createInteger = rr_integer,
    .createNil = rr_nil,
    .freeObject = rr_free_tree,
};

void fg_rr_install(redisReader *rd, fg_rr_arena_t *a)
{
    a->used = 0;
    rd->fn = &rr_functions;
    rd->privdata = a;
}

int fg_rr_installed(const redisReader *rd)
{
    return rd->fn == &rr_functions;
}

void fg_rr_free(fg_rr_arena_t *a, void *reply)
{
    rr_free_tree(reply);
    if (a) a->used = 0;
}
