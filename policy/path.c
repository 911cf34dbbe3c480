/*
 * path.c -- the canonical path check of SPEC step 1. See path.h.
 *
 * One pass over the raw target: every byte is either copied, decoded (an
 * escape of a character that may stand literally in a segment), re-encoded
 * with upper-case hex (every other escape, after UTF-8 validation), or the
 * whole target is refused. Dot segments are judged after decoding, so `%2e`
 * cannot smuggle `..` past the check.
 */
#include "policy/path.h"

#include <stdbool.h>
#include <string.h>

#include "policy/error.h"

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* May stand literally in a canonical segment: unreserved, sub-delims but ';', ':' and '@'. */
static bool is_literal_ok(unsigned char c)
{
    return is_unreserved(c) || (c && strchr("!$&'()*+,=:@", c) != NULL);
}

/* Decode the escape at raw[i] ('%'); -1 when it is not a valid escape. */
static int escape_at(const char *raw, size_t len, size_t i)
{
    if (i + 2 >= len) return -1;
    int h = hexval((unsigned char)raw[i + 1]), l = hexval((unsigned char)raw[i + 2]);
    if (h < 0 || l < 0) return -1;
    return h * 16 + l;
}

static void put_escape(char *out, size_t *o, unsigned b)
{
    static const char hex[] = "0123456789ABCDEF";
    out[(*o)++] = '%';
    out[(*o)++] = hex[b >> 4];
    out[(*o)++] = hex[b & 15];
}

/* Number of bytes of a UTF-8 sequence led by b, and the allowed range of its
 * second byte (shortest form, no surrogates, at most U+10FFFF); 0 if invalid. */
static int utf8_lead(unsigned b, unsigned *lo, unsigned *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0) *lo = 0xA0;
        if (b == 0xED) *hi = 0x9F;
        return 3;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0) *lo = 0x90;
        if (b == 0xF4) *hi = 0x8F;
        return 4;
    }
    return 0;
}

/* Check the finished segment out[seg..o): refuse "." and "..". */
static int check_segment(const char *out, size_t seg, size_t o, const char **why)
{
    size_t n = o - seg;
    if ((n == 1 && out[seg] == '.') || (n == 2 && out[seg] == '.' && out[seg + 1] == '.')) {
        *why = "dot segment ('.' or '..', in any encoding) in the path";
        return FG_EPATH;
    }
    return 0;
}

int fg_path_canonicalize(const char *raw, size_t raw_len, char *out, size_t out_cap, fg_path_t *res,
                         const char **why)
{
    static const char *dummy;
    if (!why) why = &dummy;
    if (out_cap < raw_len + 1) return FG_EINVAL;
    if (raw_len > FG_PATH_MAX) {
        *why = "request target too long";
        return FG_EPATH;
    }
    if (raw_len == 0 || raw[0] != '/') {
        *why = "the request target must be a path starting with '/' (no absolute or "
               "asterisk form)";
        return FG_EPATH;
    }
    if (memchr(raw, '#', raw_len)) {
        *why = "fragment ('#') in the request target";
        return FG_EPATH;
    }
    const char *q = memchr(raw, '?', raw_len);
    size_t plen = q ? (size_t)(q - raw) : raw_len;
    size_t o = 0, seg = 1;
    out[o++] = '/';
    for (size_t i = 1; i < plen; i++) {
        unsigned char c = (unsigned char)raw[i];
        if (c == '/') {
            if (o == seg) {
                *why = "empty path segment ('//')";
                return FG_EPATH;
            }
            if (check_segment(out, seg, o, why)) return FG_EPATH;
            out[o++] = '/';
            seg = o;
            continue;
        }
        if (c == '%') {
            int b = escape_at(raw, plen, i);
            if (b < 0) {
                *why = "invalid percent-escape";
                return FG_EPATH;
            }
            i += 2;
            if (b == '/' || b == '\\' || b == '%') {
                *why = "encoded '/', '\\' or '%' in the path";
                return FG_EPATH;
            }
            if (b == ';') {
                *why = "';' (path parameters) in the path";
                return FG_EPATH;
            }
            if (b < 0x20 || b == 0x7f) {
                *why = "NUL or control character in the path";
                return FG_EPATH;
            }
            if (b < 0x80) {
                if (is_literal_ok((unsigned char)b))
                    out[o++] = (char)b;
                else
                    put_escape(out, &o, (unsigned)b);
                continue;
            }
            unsigned lo, hi;
            int n = utf8_lead((unsigned)b, &lo, &hi);
            if (!n) {
                *why = "percent-encoded bytes are not valid shortest-form UTF-8";
                return FG_EPATH;
            }
            put_escape(out, &o, (unsigned)b);
            for (int k = 1; k < n; k++) {
                int cb = (i + 1 < plen && raw[i + 1] == '%') ? escape_at(raw, plen, i + 1) : -1;
                unsigned l2 = k == 1 ? lo : 0x80, h2 = k == 1 ? hi : 0xBF;
                if (cb < 0 || (unsigned)cb < l2 || (unsigned)cb > h2) {
                    *why = "percent-encoded bytes are not valid shortest-form UTF-8";
                    return FG_EPATH;
                }
                i += 3;
                put_escape(out, &o, (unsigned)cb);
            }
            continue;
        }
        if (c == '\\') {
            *why = "backslash in the path";
            return FG_EPATH;
        }
        if (c == ';') {
            *why = "';' (path parameters) in the path";
            return FG_EPATH;
        }
        if (c < 0x20 || c == 0x7f) {
            *why = "NUL or control character in the path";
            return FG_EPATH;
        }
        if (c >= 0x80) {
            *why = "raw non-ASCII byte in the path (percent-encode it)";
            return FG_EPATH;
        }
        if (!is_literal_ok(c)) {
            *why = "character not allowed in a path (percent-encode it)";
            return FG_EPATH;
        }
        out[o++] = (char)c;
    }
    /* the last segment; an empty one is the single trailing slash (or "/") */
    if (o > seg && check_segment(out, seg, o, why)) return FG_EPATH;
    out[o] = '\0';
    res->path = out;
    res->path_len = o;
    res->query = q ? q + 1 : NULL;
    res->query_len = q ? raw_len - plen - 1 : 0;
    return 0;
}

int fg_path_decode_segment(const char *in, size_t len, char *out, size_t out_cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '/' || c == '\0') return FG_EPATH;
        if (c == '%') {
            int b = escape_at(in, len, i);
            if (b <= 0) return FG_EPATH;
            c = (unsigned char)b;
            i += 2;
        }
        if (o + 1 >= out_cap) return FG_EPATH;
        out[o++] = (char)c;
    }
    if (out_cap == 0) return FG_EPATH;
    out[o] = '\0';
    return (int)o;
}
