/*
 * wire.h -- the strict check of the bytes a client sends (SPEC step 0).
 *
 * libmicrohttpd 0.9.75 (the Debian 12 package) parses requests leniently: a
 * bare LF ends a line, runs of spaces separate the parts of the request line,
 * a bare CR stays inside a header value, whitespace before a colon becomes
 * part of the field name, an obs-fold is glued onto the field *name*, and a
 * Transfer-Encoding it does not know makes it read the body until the
 * connection closes. Each of those is a request whose bytes can mean one
 * thing to the gateway and another to the upstream or to the next parser on
 * the way: the way around the fence.
 *
 * fg_wire_t runs in front of MHD on exactly the bytes MHD is about to read
 * (recv_hook.c hands them over) and checks them against the strict RFC 9112
 * grammar, message after message on a keep-alive connection, bodies included
 * (Content-Length counted, chunked framing followed), so it always knows where
 * the next request begins. MHD only ever parses bytes that passed; on those,
 * MHD's reading and the RFC's agree, and the gateway rebuilds the upstream
 * request from what MHD parsed.
 *
 * It is a validator, not a parser: no strings are kept, only the little state
 * the grammar needs, in a fixed-size struct. Checking costs no allocation, and
 * memory per connection is constant. Pure: no I/O, no clock.
 *
 * Accepted (anything else is an error with a status and a static reason):
 *   request-line = method SP request-target SP ("HTTP/1.1" | "HTTP/1.0") CRLF
 *     method: 1..FG_WIRE_METHOD_MAX tchar; target: 1..FG_PATH_MAX bytes of
 *     VCHAR except '#' (the path rules are policy/path.c's business);
 *   at most FG_WIRE_EMPTY_MAX bytes of empty lines (CRLF) before it;
 *   field-line = tchar+ ":" OWS *(VCHAR / obs-text / SP / HTAB) CRLF, no
 *     line starting with SP/HTAB (obs-fold), at most FG_WIRE_FIELDS_MAX;
 *   the whole head at most FG_WIRE_HEAD_MAX bytes;
 *   framing: at most one Transfer-Encoding, exactly "chunked" (any case, no
 *     other bytes), never with Content-Length and never in HTTP/1.0; every
 *     Content-Length all digits (nothing else, as MHD reads it), fitting in
 *     63 bits, and all of them equal; an HTTP/1.1 request has exactly one
 *     Host, HTTP/1.0 at most one; Expect only on a request with a body;
 *   chunked body: chunk-size = 1..16 HEXDIG, then optionally ";" and
 *     extension bytes (VCHAR / obs-text / SP / HTAB), CRLF; data; CRLF; the
 *     last chunk is followed by trailer field lines (same rules as fields) and
 *     an empty line.
 */
#ifndef FG_WIRE_H
#define FG_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FG_WIRE_HEAD_MAX   (12 * 1024) /* request line + fields + empty line */
#define FG_WIRE_FIELDS_MAX 100
#define FG_WIRE_METHOD_MAX 32
#define FG_WIRE_EMPTY_MAX  8 /* bytes of CRLF noise tolerated before a request line */

typedef enum fg_wire_framing {
    FG_WIRE_NO_BODY = 0,
    FG_WIRE_LENGTH, /* Content-Length */
    FG_WIRE_CHUNKED,
} fg_wire_framing_t;

/*
 * One connection's checker. Zero it with fg_wire_init(). The fields below the
 * "read-only" line may be read by the caller between calls; the rest is
 * private.
 */
typedef struct fg_wire {
    /* private */
    uint8_t st;       /* where in the grammar */
    uint8_t field;    /* which framing field the current line is (FIELD_*) */
    uint8_t fstate;   /* progress inside that field's value */
    uint8_t name_len; /* bytes of the field name kept in `name` */
    uint8_t te_seen, host_seen;
    bool cl_seen, trailer, v10, expect_seen;
    char name[20];     /* lower-cased start of the current field name */
    uint32_t line_len; /* bytes of the current line or part */
    uint32_t head_len; /* bytes of the current head */
    uint32_t nfields;
    uint64_t cl, cur; /* Content-Length of this message; value being read */
    uint64_t left;    /* body or chunk bytes still to come */
    /* read-only */
    uint32_t begun;            /* messages whose first byte has been seen */
    uint32_t heads;            /* messages whose head was complete and valid */
    uint32_t done;             /* messages complete, body included */
    size_t begin_off;          /* offset in the last fed buffer where message number
                                  `begun` began; SIZE_MAX if it began earlier */
    fg_wire_framing_t framing; /* of the last complete head */
    uint64_t length;           /* its Content-Length (FG_WIRE_LENGTH) */
    uint64_t body;             /* body bytes of the current (or last) message so far:
                                  Content-Length bytes, or chunk data without framing */
    int status;                /* after an error: 400, 414 or 431 */
    const char *reason;        /* after an error: static text for the problem detail */
} fg_wire_t;

void fg_wire_init(fg_wire_t *w);

/*
 * Check the next `n` bytes of the connection. Returns `n` when all of them
 * are fine so far, or the offset of the first byte that breaks the grammar
 * (then w->status and w->reason say why, and every later call returns 0: a
 * connection does not recover). Updates the read-only counters as messages
 * begin, finish their head and finish.
 */
size_t fg_wire_feed(fg_wire_t *w, const char *p, size_t n);

/* True once an error was found. */
bool fg_wire_failed(const fg_wire_t *w);

/* True while the head of the current message is incomplete (bytes of it seen). */
bool fg_wire_in_head(const fg_wire_t *w);

/* True while a message's body is being received (head done, body not). */
bool fg_wire_in_body(const fg_wire_t *w);

#endif
