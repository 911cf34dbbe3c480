/* test_redis_reply.c -- the loop connection's reply objects (storage/redis_reply.c):
 * the trees hiredis's reader builds with them read like its own, small ones
 * live in the arena and reuse it reply after reply, big ones go to the heap,
 * and every way a tree is dropped (fg_rr_free, the reader's own free after a
 * protocol error) frees what it must; the ASan build checks the frees. */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "storage/redis_reply.h"

static fg_rr_arena_t arena;

static redisReader *reader(void)
{
    redisReader *rd = redisReaderCreate();
    cr_assert_not_null(rd);
    fg_rr_install(rd, &arena);
    cr_assert(fg_rr_installed(rd));
    return rd;
}

static redisReply *parse(redisReader *rd, const char *resp)
{
    cr_assert_eq(redisReaderFeed(rd, resp, strlen(resp)), REDIS_OK);
    void *rep = NULL;
    cr_assert_eq(redisReaderGetReply(rd, &rep), REDIS_OK, "%s", rd->errstr);
    cr_assert_not_null(rep, "a whole reply from %s", resp);
    return rep;
}

static int in_arena(const void *p)
{
    uintptr_t a = (uintptr_t)arena.buf, x = (uintptr_t)p;
    return x >= a && x < a + sizeof arena.buf;
}

Test(redis_reply, a_check_reply_reads_like_hiredis_own_and_lives_in_the_arena)
{
    redisReader *rd = reader();
    redisReply *r = parse(rd, "*3\r\n:0\r\n$2\r\n42\r\n$15\r\n1764000000000-0\r\n");
    cr_assert_eq(r->type, REDIS_REPLY_ARRAY);
    cr_assert_eq(r->elements, 3);
    cr_assert_eq(r->element[0]->type, REDIS_REPLY_INTEGER);
    cr_assert_eq(r->element[0]->integer, 0);
    cr_assert_eq(r->element[1]->type, REDIS_REPLY_STRING);
    cr_assert_eq(r->element[1]->len, 2);
    cr_assert_str_eq(r->element[1]->str, "42");
    cr_assert_str_eq(r->element[2]->str, "1764000000000-0");
    cr_assert(in_arena(r) && in_arena(r->element) && in_arena(r->element[2]->str));
    cr_assert_gt(arena.used, 0);
    fg_rr_free(&arena, r);
    cr_assert_eq(arena.used, 0, "the arena is reset with its reply");
    redisReaderFree(rd);
}

Test(redis_reply, the_next_reply_reuses_the_same_memory)
{
    redisReader *rd = reader();
    /* two replies arrive in one read: the second is parsed only when asked */
    cr_assert_eq(redisReaderFeed(rd, "*2\r\n:1\r\n$1\r\n5\r\n*2\r\n:1\r\n$0\r\n\r\n", 29),
                 REDIS_OK);
    void *a = NULL, *b = NULL;
    cr_assert_eq(redisReaderGetReply(rd, &a), REDIS_OK);
    size_t used = arena.used;
    cr_assert_str_eq(((redisReply *)a)->element[1]->str, "5");
    fg_rr_free(&arena, a);
    cr_assert_eq(redisReaderGetReply(rd, &b), REDIS_OK);
    cr_assert_eq(a, b, "same place in the arena");
    cr_assert_eq(arena.used, used);
    cr_assert_eq(((redisReply *)b)->element[1]->len, 0);
    cr_assert_str_eq(((redisReply *)b)->element[1]->str, "");
    fg_rr_free(&arena, b);
    redisReaderFree(rd);
}

Test(redis_reply, what_does_not_fit_goes_to_the_heap)
{
    redisReader *rd = reader();
    size_t n = FG_RR_ARENA_BYTES + 100;
    char *resp = malloc(n + 64), *big = malloc(n + 1);
    cr_assert(resp && big);
    memset(big, 'x', n);
    big[n] = '\0';
    snprintf(resp, n + 64, "*2\r\n-NOSCRIPT gone\r\n$%zu\r\n%s\r\n", n, big);
    redisReply *r = parse(rd, resp);
    cr_assert(in_arena(r));
    cr_assert_eq(r->element[0]->type, REDIS_REPLY_ERROR);
    cr_assert_str_eq(r->element[0]->str, "NOSCRIPT gone");
    cr_assert(!in_arena(r->element[1]), "too big for the arena");
    cr_assert_eq(r->element[1]->len, n);
    cr_assert_str_eq(r->element[1]->str, big);
    fg_rr_free(&arena, r); /* ASan: the heap block is freed, no leak */
    free(resp);
    free(big);
    redisReaderFree(rd);
}

Test(redis_reply, a_long_array_spills_over_and_nil_and_status_work)
{
    redisReader *rd = reader();
    char resp[4096];
    size_t at = (size_t)snprintf(resp, sizeof resp, "*102\r\n$-1\r\n+OK\r\n");
    for (int i = 0; i < 100; i++) at += (size_t)snprintf(resp + at, sizeof resp - at, ":%d\r\n", i);
    redisReply *r = parse(rd, resp);
    cr_assert_eq(r->elements, 102);
    cr_assert_eq(r->element[0]->type, REDIS_REPLY_NIL);
    cr_assert_eq(r->element[1]->type, REDIS_REPLY_STATUS);
    cr_assert_str_eq(r->element[1]->str, "OK");
    int heap = 0;
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(r->element[2 + i]->integer, i);
        heap += !in_arena(r->element[2 + i]);
    }
    cr_assert_gt(heap, 0, "the arena ran out part way");
    fg_rr_free(&arena, r);
    redisReaderFree(rd);
}

Test(redis_reply, a_protocol_error_mid_tree_frees_through_the_reader)
{
    redisReader *rd = reader();
    char resp[2048];
    memset(resp, 0, sizeof resp);
    /* an element on the heap, then garbage where the next type byte belongs */
    size_t n = FG_RR_ARENA_BYTES;
    int at = snprintf(resp, sizeof resp, "*3\r\n:7\r\n$%zu\r\n", n);
    memset(resp + at, 'y', n);
    memcpy(resp + at + n, "\r\n!oops\r\n", 9);
    cr_assert_eq(redisReaderFeed(rd, resp, (size_t)at + n + 9), REDIS_OK);
    void *rep = NULL;
    cr_assert_eq(redisReaderGetReply(rd, &rep), REDIS_ERR);
    cr_assert_null(rep);
    cr_assert(strstr(rd->errstr, "Protocol error"), "%s", rd->errstr);
    redisReaderFree(rd); /* frees the half-built tree: ASan checks the heap element */
}

Test(redis_reply, a_reply_cut_in_the_middle_completes_later)
{
    redisReader *rd = reader();
    const char *all = "*2\r\n:1\r\n$3\r\n123\r\n";
    cr_assert_eq(redisReaderFeed(rd, all, 10), REDIS_OK);
    void *rep = NULL;
    cr_assert_eq(redisReaderGetReply(rd, &rep), REDIS_OK);
    cr_assert_null(rep, "not whole yet");
    cr_assert_gt(arena.used, 0, "the parent array is built");
    cr_assert_eq(redisReaderFeed(rd, all + 10, strlen(all) - 10), REDIS_OK);
    cr_assert_eq(redisReaderGetReply(rd, &rep), REDIS_OK);
    cr_assert_not_null(rep);
    cr_assert_str_eq(((redisReply *)rep)->element[1]->str, "123");
    fg_rr_free(&arena, rep);
    redisReaderFree(rd);
}
