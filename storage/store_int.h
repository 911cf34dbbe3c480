/*
 * store_int.h -- helpers shared by the store backends (not for callers).
 */
#ifndef FG_STORE_INT_H
#define FG_STORE_INT_H

#include <stdarg.h>

#include "storage/store.h"

/* Backends, registered in store.c's table. */
extern const fg_store_backend_t fg_store_sqlite;
extern const fg_store_backend_t fg_store_redis;
extern const fg_store_backend_t fg_store_postgres;

/* Copy `s` (`len` bytes, not NUL-terminated) into memory owned by `l`
 * (freed by fg_audit_list_free). Returns NULL on ENOMEM; NULL in, NULL out. */
char *fg_audit_list_strndup(fg_audit_list_t *l, const char *s, size_t len);

/* Grow l->items to hold at least `n` records. 0 or FG_ENOMEM. */
int fg_audit_list_reserve(fg_audit_list_t *l, size_t n);

/* printf into s->err. Returns `rc` so that `return store_err(s, FG_EUNAVAIL, ...)` reads well. */
int fg_store_seterr(fg_store_t *s, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Allocate a zeroed handle of `size` bytes with the base fields set. */
fg_store_t *fg_store_alloc(size_t size, const fg_store_backend_t *be, const char *url,
                           const fg_store_opts_t *o);
void fg_store_free_base(fg_store_t *s);

#endif
