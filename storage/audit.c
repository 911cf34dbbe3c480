/*
 * audit.c -- the escaping of attacker-controlled audit fields (SPEC "Audit").
 *
 * A request's method, path and client address end up in the audit trail of
 * every store and in the JSON of GET /v1/audit. Postgres refuses invalid
 * UTF-8 in text, JSON cannot carry it, and control bytes have no business in a
 * log. So before any backend sees a record (store.c), these fields are turned
 * into printable, valid UTF-8 by fg_audit_escape(); see store.h for the rules.
 */
#include <stdlib.h>
#include <string.h>

#include "storage/store.h"

/* Length of the valid UTF-8 character of U+00A0 or above at s[0..n), or 0. */
static size_t utf8_char(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return 0; /* overlong */
    if (cp < 0xA0 || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return 0;
    return len;
}

/* One unit of input at s[i]: *in bytes consumed, returns the bytes it takes escaped. */
static size_t unit(const unsigned char *s, size_t len, size_t i, size_t *in)
{
    unsigned c = s[i];
    *in = 1;
    if (c == '\\') return 2;
    if (c >= 0x20 && c < 0x7F) return 1;
    size_t u = c >= 0x80 ? utf8_char(s + i, len - i) : 0;
    if (u) {
        *in = u;
        return u;
    }
    return 4; /* \xHH */
}

bool fg_audit_is_clean(const char *s, size_t len, size_t max)
{
    if (max && len > max) return false;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t in, out = unit(u, len, i, &in);
        if (out != in || u[i] == '\\') return false;
        i += in;
    }
    return true;
}

char *fg_audit_escape(const char *s, size_t len, size_t max, bool *truncated)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *u = (const unsigned char *)s;
    size_t need = 0, i = 0;
    bool cut = false;
    while (i < len) {
        size_t in, out = unit(u, len, i, &in);
        if (max && need + out > max) {
            cut = true;
            break;
        }
        need += out;
        i += in;
    }
    size_t end = i;
    char *d = malloc(need + 1), *o = d;
    if (!d) return NULL;
    for (i = 0; i < end;) {
        size_t in, out = unit(u, len, i, &in);
        if (out == 4 && in == 1) {
            *o++ = '\\';
            *o++ = 'x';
            *o++ = hex[u[i] >> 4];
            *o++ = hex[u[i] & 15];
        } else if (u[i] == '\\') {
            *o++ = '\\';
            *o++ = '\\';
        } else {
            memcpy(o, u + i, in);
            o += in;
        }
        i += in;
    }
    *o = '\0';
    if (truncated) *truncated = cut;
    return d;
}
