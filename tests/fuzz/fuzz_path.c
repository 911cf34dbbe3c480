/*
 * fuzz_path.c -- fg_path_canonicalize and fg_path_decode_segment (SPEC step 1).
 *
 * The input is a raw request target. The checks are written from the SPEC,
 * not from path.c, so that the two must agree:
 *  - an accepted path is canonical (is_canonical below: starts with '/', no
 *    '//', no '.'/'..' segment, no ';', '\', '?', '#', control or raw
 *    non-ASCII byte, every escape upper-case and of a byte that may not stand
 *    literally, never %2F/%5C/%25, decoded bytes valid shortest-form UTF-8),
 *    is a fixed point (canonicalizing it again gives the same bytes), is never
 *    longer than the input and means the same bytes once percent-decoded;
 *  - an input whose path is already canonical is accepted unchanged;
 *  - decode_segment agrees with a reference decoder and never writes past
 *    out_cap.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "policy/error.h"
#include "policy/path.h"

static int hex_upper(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int hex_any(unsigned char c)
{
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return hex_upper(c);
}

/* SPEC: unreserved, and the sub-delimiters other than ';', plus ':' and '@'. */
static bool stands_literally(unsigned char c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return true;
    return c && strchr("-._~!$&'()*+,=:@", c) != NULL;
}

/* Code point by code point: shortest form, no surrogates, at most U+10FFFF. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    static const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        size_t len;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xE0) == 0xC0) {
            len = 2;
            cp = b & 0x1F;
        } else if ((b & 0xF0) == 0xE0) {
            len = 3;
            cp = b & 0x0F;
        } else if ((b & 0xF8) == 0xF0) {
            len = 4;
            cp = b & 0x07;
        } else {
            return false;
        }
        if (i + len > n) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

/* Percent-decode s[0..n) into out (n bytes suffice); SIZE_MAX on a bad escape. */
static size_t pct_decode(const char *s, size_t n, unsigned char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = (unsigned char)s[i];
            continue;
        }
        if (i + 2 >= n) return SIZE_MAX;
        int h = hex_any((unsigned char)s[i + 1]), l = hex_any((unsigned char)s[i + 2]);
        if (h < 0 || l < 0) return SIZE_MAX;
        out[o++] = (unsigned char)(h * 16 + l);
        i += 2;
    }
    return o;
}

/* The SPEC's definition of a canonical path, checked on its own. */
static bool is_canonical(const char *p, size_t n)
{
    if (n == 0 || p[0] != '/' || n > FG_PATH_MAX) return false;
    size_t seg = 1;
    for (size_t i = 1; i <= n; i++) {
        unsigned char c = i < n ? (unsigned char)p[i] : '/';
        if (c == '/') {
            size_t sl = i - seg;
            if (sl == 0 && i < n) return false; /* '//' (one trailing '/' is fine) */
            if (sl == 1 && p[seg] == '.') return false;
            if (sl == 2 && p[seg] == '.' && p[seg + 1] == '.') return false;
            seg = i + 1;
            continue;
        }
        if (c == '%') {
            if (i + 2 >= n) return false;
            int h = hex_upper((unsigned char)p[i + 1]), l = hex_upper((unsigned char)p[i + 2]);
            if (h < 0 || l < 0) return false; /* bad or lower-case escape */
            unsigned b = (unsigned)(h * 16 + l);
            if (b < 0x80 && (stands_literally((unsigned char)b) || b < 0x20 || b == 0x7f ||
                             b == '/' || b == '\\' || b == '%' || b == ';'))
                return false; /* %2F %5C %25 %3B, controls, and needless escapes */
            i += 2;
            continue;
        }
        if (!stands_literally(c)) return false; /* ; \ ? # space, controls, raw >= 0x80 */
    }
    unsigned char *dec = malloc(n);
    CHECK(dec);
    size_t dn = pct_decode(p, n, dec);
    bool ok = dn != SIZE_MAX && utf8_valid(dec, dn);
    free(dec);
    return ok;
}

static void check_decode_segment(const char *in, size_t size)
{
    /* reference: no raw '/' or NUL, escapes valid and not %00 */
    unsigned char *want = malloc(size + 1);
    CHECK(want);
    int ref = 0;
    for (size_t i = 0; i < size && ref >= 0; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '/' || c == '\0') {
            ref = -1;
        } else if (c != '%') {
            want[ref++] = c;
        } else if (i + 2 >= size || hex_any((unsigned char)in[i + 1]) < 0 ||
                   hex_any((unsigned char)in[i + 2]) < 0) {
            ref = -1;
        } else {
            int b = hex_any((unsigned char)in[i + 1]) * 16 + hex_any((unsigned char)in[i + 2]);
            if (b == 0)
                ref = -1;
            else
                want[ref++] = (unsigned char)b;
            i += 2;
        }
    }
    char *out = malloc(size + 1);
    CHECK(out);
    int n = fg_path_decode_segment(in, size, out, size + 1);
    if (ref < 0) {
        CHECK(n == FG_EPATH);
    } else {
        CHECK(n == ref);
        CHECK(memcmp(out, want, (size_t)n) == 0 && out[n] == '\0');
        /* exactly n + 1 bytes fit; n bytes do not (and nothing is written past them) */
        char *tight = malloc((size_t)n);
        CHECK(tight || n == 0);
        CHECK(fg_path_decode_segment(in, size, tight, (size_t)n) == FG_EPATH);
        free(tight);
        tight = malloc((size_t)n + 1);
        CHECK(tight);
        CHECK(fg_path_decode_segment(in, size, tight, (size_t)n + 1) == n);
        free(tight);
    }
    free(out);
    free(want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *raw = (const char *)data;
    const char *q = memchr(raw, '?', size);
    size_t plen = q ? (size_t)(q - raw) : size;

    char *out = malloc(size + 1); /* the documented bound: raw_len + 1 */
    CHECK(out);
    fg_path_t res;
    const char *why = NULL;
    int rc = fg_path_canonicalize(raw, size, out, size + 1, &res, &why);
    if (rc != 0) {
        CHECK(rc == FG_EPATH && why && why[0]);
        /* a target whose path is already canonical has nothing to refuse */
        CHECK(!(is_canonical(raw, plen) && !memchr(raw, '#', size) && size <= FG_PATH_MAX));
    } else {
        size_t n = res.path_len;
        CHECK(res.path == out && n <= plen && out[n] == '\0');
        CHECK(is_canonical(out, n));
        if (q)
            CHECK(res.query == q + 1 && res.query_len == size - plen - 1);
        else
            CHECK(res.query == NULL && res.query_len == 0);
        /* the rewrite only changes spelling: both decode to the same bytes */
        unsigned char *d1 = malloc(plen + 1), *d2 = malloc(n + 1);
        CHECK(d1 && d2);
        size_t n1 = pct_decode(raw, plen, d1), n2 = pct_decode(out, n, d2);
        CHECK(n1 != SIZE_MAX && n1 == n2 && memcmp(d1, d2, n1) == 0);
        free(d1);
        free(d2);
        /* the raw input was canonical already: then nothing may change */
        if (is_canonical(raw, plen)) CHECK(n == plen && memcmp(out, raw, n) == 0);
        /* one spelling: the canonical form is a fixed point */
        char *again = malloc(n + 1);
        CHECK(again);
        fg_path_t res2;
        CHECK(fg_path_canonicalize(out, n, again, n + 1, &res2, &why) == 0);
        CHECK(res2.path_len == n && memcmp(again, out, n) == 0 && res2.query == NULL);
        free(again);
    }
    if (size > FG_PATH_MAX) CHECK(rc == FG_EPATH);
    /* a buffer below the documented bound is refused or suffices, never overrun */
    if (size > 0) {
        char *small = malloc(size);
        CHECK(small);
        rc = fg_path_canonicalize(raw, size, small, size, &res, &why);
        CHECK(rc == FG_EINVAL || rc == FG_EPATH || (rc == 0 && res.path_len < size));
        free(small);
    }
    free(out);

    check_decode_segment(raw, size);
    return 0;
}
