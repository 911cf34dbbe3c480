/*
 * error.h -- the one list of error codes every fencegate module returns.
 *
 * Functions return 0 on success or a negative FG_E* code; detail text, where a
 * module has any, lives in a fixed buffer on the object that failed (no
 * allocation is needed to report an error). The list is an X-macro so that the
 * enum, the short names and the messages cannot drift apart.
 */
#ifndef FG_ERROR_H
#define FG_ERROR_H

#define FG_ERRORS(X)                                                                               \
    X(NOMEM, "out of memory")                                                                      \
    X(INVAL, "invalid argument")                                                                   \
    X(CONFIG, "invalid configuration")                                                             \
    X(PATH, "non-canonical path")                                                                  \
    X(TOKEN, "malformed fencing token")                                                            \
    X(UNAVAIL, "state store unavailable")                                                          \
    X(PROTO, "unexpected answer from the state store")                                             \
    X(DATA, "the state store refused the data")                                                    \
    X(NOTFOUND, "not found")                                                                       \
    X(FULL, "bounded resource is full")                                                            \
    X(TIMEOUT, "timed out")                                                                        \
    X(IO, "input/output error")

typedef enum fg_err {
    FG_OK = 0,
#define FG_ERR_ENUM(name, msg) FG_E##name,
    FG_ERR_FIRST_ = -100,
    FG_ERRORS(FG_ERR_ENUM)
#undef FG_ERR_ENUM
} fg_err_t;

/* Human-readable message for a code (0 or negative). Static storage; never NULL. */
const char *fg_strerror(int err);

/* Short name ("UNAVAIL") for logs and metrics. Static storage; never NULL. */
const char *fg_err_name(int err);

#endif
