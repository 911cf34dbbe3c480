/* storage/redis_reply.h -- hiredis reply objects without malloc on the loop.
 *
 * hiredis builds every reply as a tree of malloc'd redisReply objects: a
 * fence check's answer (an array of an integer and one or two strings) costs
 * five allocations and five frees, a quarter of all the heap traffic of a
 * proxied write (bench/allocs.sh). The event-loop connection takes one reply
 * at a time and drops it before taking the next, so its objects can come from
 * one small arena per connection that is reset after each reply. The objects
 * are ordinary redisReply structs, so the parsing code reads them as before;
 * only the way they are freed changes.
 */
#ifndef FG_STORAGE_REDIS_REPLY_H
#define FG_STORAGE_REDIS_REPLY_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#define FG_RR_ARENA_BYTES 1024

typedef struct fg_rr_arena {
    size_t used;
    _Alignas(16) unsigned char buf[FG_RR_ARENA_BYTES];
} fg_rr_arena_t;

/* Make `rd` build its replies with these functions: from `a` while it has
 * room, else from the heap (one allocation per object, string or element
 * array included). Call it with no reply under way (just after the reader
 * was created, or after fg_rr_free of the last reply); resets `a`. From then
 * on, free every reply of `rd` with fg_rr_free, never freeReplyObject; the
 * reader's own frees (errors, redisReaderFree) go through the same code. */
void fg_rr_install(redisReader *rd, fg_rr_arena_t *a);

/* True when `rd` builds its replies with these functions. */
int fg_rr_installed(const redisReader *rd);

/* Free a reply tree built by these functions, and reset its arena (`a`, may
 * be NULL when no reply of it is alive any more). NULL `reply` is allowed. */
void fg_rr_free(fg_rr_arena_t *a, void *reply);

#endif
