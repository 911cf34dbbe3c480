/*
 * wire.c -- the strict RFC 9112 request grammar, byte by byte. See wire.h.
 *
 * One switch over a small state enum; bodies (Content-Length bytes, chunk
 * data) are skipped in bulk. Every refusal names the rule that was broken,
 * because that text goes into the 400's problem detail and the log.
 */
#include "gateway/wire.h"

#include <string.h>

#include "policy/path.h"

enum {
    S_IDLE = 0, /* between messages, nothing of the next one seen */
    S_START,    /* message begun with an empty line; the request line comes next */
    S_EMPTY_LF, /* CR of an empty line before the request line */
    S_METHOD,
    S_TARGET,
    S_VERSION,
    S_RL_LF, /* CR after the version */
    S_FIELD, /* start of a field line, or of the empty line ending the section */
    S_NAME,
    S_OWS, /* whitespace after the colon */
    S_VALUE,
    S_FIELD_LF, /* CR at the end of a field line */
    S_END_LF,   /* CR of the empty line ending the head or the trailers */
    S_BODY,     /* Content-Length bytes */
    S_CSIZE,    /* chunk size */
    S_CEXT,     /* chunk extension */
    S_CSIZE_LF, /* CR after the chunk size line */
    S_CDATA,
    S_CDATA_CR,
    S_CDATA_LF,
    S_FAILED,
};

/* Framing fields we follow; FIELD_OTHER for the rest. */
enum { FIELD_OTHER = 0, FIELD_CL, FIELD_TE, FIELD_HOST, FIELD_EXPECT };

/* Progress inside a framing field's value. */
enum { FV_EMPTY = 0, FV_DIGITS };

#define CHUNK_EXT_MAX 4096

/* RFC 9110 tchar. */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

/* Bytes allowed inside a field value or chunk extension: VCHAR, obs-text, SP, HTAB. */
static inline bool value_byte(unsigned char c)
{
    return c == ' ' || c == '\t' || (c >= 0x21 && c != 0x7f);
}

static inline int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void fg_wire_init(fg_wire_t *w)
{
    memset(w, 0, sizeof *w);
    w->begin_off = SIZE_MAX;
}

bool fg_wire_failed(const fg_wire_t *w)
{
    return w->st == S_FAILED;
}

bool fg_wire_in_head(const fg_wire_t *w)
{
    return w->st != S_IDLE && w->st != S_FAILED && w->begun > w->heads;
}

bool fg_wire_in_body(const fg_wire_t *w)
{
    return w->st != S_FAILED && w->heads > w->done;
}

/* Refuse: remember why and stop for good. */
static size_t fail(fg_wire_t *w, size_t at, int status, const char *reason)
{
    w->st = S_FAILED;
    w->status = status;
    w->reason = reason;
    return at;
}

static void begin_message(fg_wire_t *w, size_t at)
{
    w->begun++;
    w->begin_off = at;
    w->head_len = 0;
    w->line_len = 0;
    w->nfields = 0;
    w->cl_seen = false;
    w->te_seen = 0;
    w->host_seen = 0;
    w->trailer = false;
    w->expect_seen = false;
    w->v10 = false;
    w->cl = 0;
    w->body = 0;
}

static void end_message(fg_wire_t *w)
{
    w->done++;
    w->st = S_IDLE;
}

/* Which framing field a finished name is (names are kept lower-cased). */
static uint8_t classify_name(const fg_wire_t *w, uint32_t full_len)
{
    if (w->trailer || full_len != w->name_len) return FIELD_OTHER;
    if (full_len == 14 && memcmp(w->name, "content-length", 14) == 0) return FIELD_CL;
    if (full_len == 17 && memcmp(w->name, "transfer-encoding", 17) == 0) return FIELD_TE;
    if (full_len == 4 && memcmp(w->name, "host", 4) == 0) return FIELD_HOST;
    if (full_len == 6 && memcmp(w->name, "expect", 6) == 0) return FIELD_EXPECT;
    return FIELD_OTHER;
}

/* One byte of a framing field's value (leading OWS already skipped). */
static const char *field_value_byte(fg_wire_t *w, unsigned char c)
{
    static const char chunked[] = "chunked";
    switch (w->field) {
    case FIELD_CL:
        /* no trailing OWS either: MHD reads the value as it stands */
        if (c < '0' || c > '9') return "Content-Length must be digits only";
        if (w->cur > (UINT64_C(0x7fffffffffffffff) - (uint64_t)(c - '0')) / 10)
            return "Content-Length is too large";
        w->cur = w->cur * 10 + (uint64_t)(c - '0');
        w->fstate = FV_DIGITS;
        return NULL;
    case FIELD_TE:
        /* fstate counts the letters of "chunked" matched. No trailing OWS:
         * MHD compares the whole value, and would read "chunked " as an
         * unknown coding (body until the connection closes). */
        if (w->fstate < 7 && (c | 0x20) == (unsigned char)chunked[w->fstate]) {
            w->fstate++;
            return NULL;
        }
        return "the only Transfer-Encoding accepted is chunked";
    case FIELD_HOST:
        if (c == '/' || c == '?' || c == '#' || c == '@' || c == '\\' || c >= 0x80)
            return "invalid character in Host";
        return NULL;
    default:
        return NULL;
    }
}

/* The end of a field line: apply what the framing fields said. */
static const char *finish_field(fg_wire_t *w)
{
    switch (w->field) {
    case FIELD_CL:
        if (w->fstate == FV_EMPTY) return "empty Content-Length";
        if (w->cl_seen && w->cl != w->cur) return "differing Content-Length values";
        w->cl_seen = true;
        w->cl = w->cur;
        break;
    case FIELD_TE:
        if (w->fstate < 7) return "the only Transfer-Encoding accepted is chunked";
        if (++w->te_seen > 1) return "more than one Transfer-Encoding";
        break;
    case FIELD_HOST:
        if (++w->host_seen > 1) return "more than one Host";
        break;
    case FIELD_EXPECT:
        w->expect_seen = true;
        break;
    default:
        break;
    }
    return NULL;
}

/* The empty line after the fields: the head (or the trailers) is complete. */
static const char *finish_head(fg_wire_t *w)
{
    if (w->trailer) {
        end_message(w);
        return NULL;
    }
    if (w->te_seen && w->cl_seen) return "both Transfer-Encoding and Content-Length";
    if (w->te_seen && w->v10) return "Transfer-Encoding in an HTTP/1.0 request";
    if (!w->v10 && !w->host_seen) return "an HTTP/1.1 request needs a Host";
    /* RFC 9110 section 10.1.1: no 100-continue without content. libmicrohttpd
     * 0.9.75 would answer it with 100 and then hand the next pipelined
     * request's bytes to this one as its body. */
    if (w->expect_seen && !w->te_seen && !(w->cl_seen && w->cl > 0))
        return "Expect on a request without a body";
    w->heads++;
    if (w->te_seen) {
        w->framing = FG_WIRE_CHUNKED;
        w->length = 0;
        w->st = S_CSIZE;
        w->line_len = 0;
        w->cur = 0;
    } else if (w->cl_seen && w->cl > 0) {
        w->framing = FG_WIRE_LENGTH;
        w->length = w->cl;
        w->left = w->cl;
        w->st = S_BODY;
    } else {
        w->framing = w->cl_seen ? FG_WIRE_LENGTH : FG_WIRE_NO_BODY;
        w->length = 0;
        end_message(w);
    }
    return NULL;
}

size_t fg_wire_feed(fg_wire_t *w, const char *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    const char *why;
    w->begin_off = SIZE_MAX;
    if (w->st == S_FAILED) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = b[i];
        bool in_head = w->st >= S_EMPTY_LF && w->st <= S_END_LF;
        if (in_head && ++w->head_len > FG_WIRE_HEAD_MAX)
            return fail(w, i, 431,
                        w->trailer ? "trailer section larger than 12 KiB"
                                   : "request head larger than 12 KiB");
        switch (w->st) {
        case S_IDLE:
            begin_message(w, i);
            /* fall through */
        case S_START:
            w->head_len = 1;
            if (c == '\r') {
                if (++w->line_len > FG_WIRE_EMPTY_MAX)
                    return fail(w, i, 400, "too many empty lines before the request line");
                w->st = S_EMPTY_LF;
            } else if (tchar[c]) {
                w->st = S_METHOD;
                w->line_len = 1;
            } else {
                return fail(w, i, 400,
                            c == '\n' ? "bare LF (lines end with CRLF)"
                                      : "the method must be a token");
            }
            break;
        case S_EMPTY_LF:
            if (c != '\n') return fail(w, i, 400, "CR not followed by LF");
            w->line_len++;
            w->st = S_START;
            break;
        case S_METHOD:
            if (tchar[c]) {
                if (++w->line_len > FG_WIRE_METHOD_MAX) return fail(w, i, 400, "method too long");
            } else if (c == ' ') {
                w->st = S_TARGET;
                w->line_len = 0;
            } else {
                return fail(w, i, 400,
                            c == '\t' ? "a tab in the request line (single spaces only)"
                                      : "the method must be a token");
            }
            break;
        case S_TARGET:
            if (c == ' ') {
                if (w->line_len == 0)
                    return fail(w, i, 400, "more than one space in the request line");
                w->st = S_VERSION;
                w->line_len = 0;
            } else if (c > 0x20 && c < 0x7f && c != '#') {
                if (++w->line_len > FG_PATH_MAX)
                    return fail(w, i, 414, "the request target is longer than 8192 bytes");
            } else {
                return fail(w, i, 400, "invalid byte in the request target");
            }
            break;
        case S_VERSION: {
            static const char v[] = "HTTP/1.";
            uint32_t k = w->line_len++;
            if (k < 7) {
                if (c != (unsigned char)v[k])
                    return fail(w, i, 400,
                                c == ' ' ? "more than one space in the request line"
                                         : "unsupported HTTP version (HTTP/1.1 or HTTP/1.0)");
            } else if (k == 7) {
                if (c != '1' && c != '0')
                    return fail(w, i, 400, "unsupported HTTP version (HTTP/1.1 or HTTP/1.0)");
                w->v10 = c == '0';
            } else if (c == '\r') {
                w->st = S_RL_LF;
            } else {
                return fail(w, i, 400,
                            c == '\n' ? "bare LF (lines end with CRLF)"
                                      : "unexpected bytes after the HTTP version");
            }
            break;
        }
        case S_RL_LF:
        case S_FIELD_LF:
            if (c != '\n') return fail(w, i, 400, "CR not followed by LF");
            if (w->st == S_FIELD_LF) {
                if ((why = finish_field(w))) return fail(w, i, 400, why);
                if (++w->nfields > FG_WIRE_FIELDS_MAX)
                    return fail(w, i, 431, "more than 100 header fields");
            }
            w->st = S_FIELD;
            break;
        case S_FIELD:
            if (c == '\r') {
                w->st = S_END_LF;
            } else if (tchar[c]) {
                w->st = S_NAME;
                w->name[0] = (char)(c | ((c >= 'A' && c <= 'Z') ? 0x20 : 0));
                w->name_len = 1;
                w->line_len = 1;
            } else if (c == ' ' || c == '\t') {
                return fail(w, i, 400, "obs-fold (a field line starting with whitespace)");
            } else {
                return fail(w, i, 400,
                            c == '\n' ? "bare LF (lines end with CRLF)"
                                      : "a field name must be a token");
            }
            break;
        case S_NAME:
            if (tchar[c]) {
                if (w->name_len < sizeof w->name)
                    w->name[w->name_len++] = (char)(c | ((c >= 'A' && c <= 'Z') ? 0x20 : 0));
                w->line_len++;
            } else if (c == ':') {
                w->field = classify_name(w, w->line_len);
                w->fstate = FV_EMPTY;
                w->cur = 0;
                w->st = S_OWS;
            } else if (c == ' ' || c == '\t') {
                return fail(w, i, 400, "whitespace before the colon of a header field");
            } else {
                return fail(w, i, 400, "a field name must be a token");
            }
            break;
        case S_OWS:
            if (c == ' ' || c == '\t') break;
            w->st = S_VALUE;
            /* fall through */
        case S_VALUE:
            if (c == '\r') {
                w->st = S_FIELD_LF;
            } else if (value_byte(c)) {
                if ((why = field_value_byte(w, c))) return fail(w, i, 400, why);
            } else {
                return fail(w, i, 400,
                            c == '\n'   ? "bare LF (lines end with CRLF)"
                            : c == '\0' ? "NUL in a header field value"
                                        : "control character in a header field value");
            }
            break;
        case S_END_LF:
            if (c != '\n') return fail(w, i, 400, "CR not followed by LF");
            if ((why = finish_head(w))) return fail(w, i, 400, why);
            break;
        case S_BODY: {
            size_t take = n - i;
            if (take > w->left) take = (size_t)w->left;
            w->left -= take;
            w->body += take;
            i += take - 1;
            if (w->left == 0) end_message(w);
            break;
        }
        case S_CSIZE: {
            int h = hexval(c);
            if (h >= 0) {
                if (++w->line_len > 16 || w->cur > (UINT64_C(0x7fffffffffffffff) >> 4))
                    return fail(w, i, 400, "chunk size too large");
                w->cur = (w->cur << 4) | (uint64_t)h;
            } else if (w->line_len == 0) {
                return fail(w, i, 400, "invalid chunk size");
            } else if (c == ';') {
                w->st = S_CEXT;
            } else if (c == '\r') {
                w->st = S_CSIZE_LF;
            } else {
                return fail(w, i, 400,
                            c == '\n' ? "bare LF (lines end with CRLF)" : "invalid chunk size");
            }
            break;
        }
        case S_CEXT:
            if (c == '\r') {
                w->st = S_CSIZE_LF;
            } else if (!value_byte(c) || ++w->line_len > CHUNK_EXT_MAX) {
                return fail(w, i, 400, "invalid chunk extension");
            }
            break;
        case S_CSIZE_LF:
            if (c != '\n') return fail(w, i, 400, "CR not followed by LF");
            if (w->cur == 0) {
                w->trailer = true;
                w->head_len = 0;
                w->nfields = 0;
                w->st = S_FIELD;
            } else {
                w->left = w->cur;
                w->st = S_CDATA;
            }
            break;
        case S_CDATA: {
            size_t take = n - i;
            if (take > w->left) take = (size_t)w->left;
            w->left -= take;
            w->body += take;
            i += take - 1;
            if (w->left == 0) w->st = S_CDATA_CR;
            break;
        }
        case S_CDATA_CR:
            if (c != '\r') return fail(w, i, 400, "chunk data not followed by CRLF");
            w->st = S_CDATA_LF;
            break;
        case S_CDATA_LF:
            if (c != '\n') return fail(w, i, 400, "CR not followed by LF");
            w->st = S_CSIZE;
            w->line_len = 0;
            w->cur = 0;
            break;
        default:
            return 0;
        }
    }
    return n;
}
