/*
 * pattern.c -- `match` patterns and `key` templates. See pattern.h.
 *
 * A pattern compiles to a list of segments, each literal text or a capture.
 * Matching walks the canonical path segment by segment; no backtracking is
 * needed because only the last segment may take the rest of the path.
 */
#include "policy/pattern.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/error.h"
#include "policy/path.h"

/* Longest literal segment of a pattern (a config line is shorter anyway). */
#define FG_PATTERN_SEG_MAX 1024

typedef struct seg {
    char *text; /* literal text, or the capture name */
    size_t len;
    bool capture;
    bool rest; /* {name*} */
} seg_t;

struct fg_pattern {
    char *src;
    seg_t *segs;
    size_t n;
    bool trailing_slash; /* pattern ends in '/' */
    size_t ncap;
};

typedef struct piece {
    const char *text; /* literal (owned by the template) */
    size_t len;
    int cap; /* capture index, or -1 for literal */
} piece_t;

struct fg_keytmpl {
    char *src;
    piece_t *pieces;
    size_t n;
};

/* A literal segment must be spelled as fg_path_canonicalize spells it, or the
 * pattern could never match: `/%7euser` or `/a;b` is an operator's mistake. */
static int literal_canonical(const char *s, size_t len, const char **why)
{
    char buf[2 * FG_PATTERN_SEG_MAX + 4];
    if (len > FG_PATTERN_SEG_MAX) {
        *why = "literal segment too long";
        return FG_ECONFIG;
    }
    buf[0] = '/';
    memcpy(buf + 1, s, len);
    fg_path_t res;
    const char *pwhy = NULL;
    char *out = buf + len + 1;
    if (memchr(s, '?', len) || memchr(s, '#', len) ||
        fg_path_canonicalize(buf, len + 1, out, sizeof buf - len - 1, &res, &pwhy) != 0 ||
        res.path_len != len + 1 || memcmp(res.path, buf, len + 1) != 0) {
        *why = "literal segment is not a canonical path segment (decode %7e-style escapes, "
               "upper-case the rest, no ';', '.', '..', '?', '#' or spaces); it could never match";
        return FG_ECONFIG;
    }
    return 0;
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

void fg_pattern_free(fg_pattern_t *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) free(p->segs[i].text);
    free(p->segs);
    free(p->src);
    free(p);
}

int fg_pattern_compile(const char *src, fg_pattern_t **out, const char **why)
{
    *out = NULL;
    if (!src || src[0] != '/') {
        *why = "a pattern must start with '/'";
        return FG_ECONFIG;
    }
    fg_pattern_t *p = calloc(1, sizeof *p);
    if (!p) return FG_ENOMEM;
    p->src = strdup(src);
    size_t cap = 1;
    for (const char *s = src; *s; s++) cap += *s == '/';
    p->segs = calloc(cap, sizeof *p->segs);
    if (!p->src || !p->segs) {
        fg_pattern_free(p);
        return FG_ENOMEM;
    }
    const char *s = src + 1;
    size_t total = strlen(src);
    p->trailing_slash = total > 1 && src[total - 1] == '/';
    while (*s) {
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 0) {
            if (!e) break;
            fg_pattern_free(p);
            *why = "empty segment ('//') in pattern";
            return FG_ECONFIG;
        }
        seg_t *g = &p->segs[p->n];
        if (s[0] == '{') {
            if (s[len - 1] != '}' || len < 3) {
                fg_pattern_free(p);
                *why = "a capture must be a whole segment: {name} or {name*}";
                return FG_ECONFIG;
            }
            g->capture = true;
            size_t nl = len - 2;
            if (s[len - 2] == '*') {
                g->rest = true;
                nl--;
            }
            if (nl == 0) {
                fg_pattern_free(p);
                *why = "empty capture name";
                return FG_ECONFIG;
            }
            for (size_t i = 0; i < nl; i++)
                if (!name_char(s[1 + i])) {
                    fg_pattern_free(p);
                    *why = "capture names are letters, digits and '_'";
                    return FG_ECONFIG;
                }
            g->text = strndup(s + 1, nl);
            g->len = nl;
            if (g->rest && e && e[1]) {
                free(g->text);
                g->text = NULL;
                fg_pattern_free(p);
                *why = "{name*} must be the last segment";
                return FG_ECONFIG;
            }
            for (size_t k = 0; k < p->n; k++)
                if (p->segs[k].capture && p->segs[k].len == nl &&
                    memcmp(p->segs[k].text, s + 1, nl) == 0) {
                    free(g->text);
                    g->text = NULL;
                    fg_pattern_free(p);
                    *why = "the same capture name twice";
                    return FG_ECONFIG;
                }
            if (p->ncap >= FG_PATTERN_MAX_CAPTURES) {
                free(g->text);
                g->text = NULL;
                fg_pattern_free(p);
                *why = "too many captures (at most 16)";
                return FG_ECONFIG;
            }
            p->ncap++;
        } else {
            if (memchr(s, '{', len) || memchr(s, '}', len)) {
                fg_pattern_free(p);
                *why = "a capture must be a whole segment: {name} or {name*}";
                return FG_ECONFIG;
            }
            if (literal_canonical(s, len, why)) {
                fg_pattern_free(p);
                return FG_ECONFIG;
            }
            g->text = strndup(s, len);
            g->len = len;
        }
        if (!g->text) {
            fg_pattern_free(p);
            return FG_ENOMEM;
        }
        p->n++;
        if (!e) break;
        s = e + 1;
    }
    if (p->n && p->segs[p->n - 1].rest && p->trailing_slash) {
        fg_pattern_free(p);
        *why = "{name*} must be the last segment";
        return FG_ECONFIG;
    }
    *out = p;
    return 0;
}

const char *fg_pattern_source(const fg_pattern_t *p)
{
    return p->src;
}

int fg_pattern_capture_index(const fg_pattern_t *p, const char *name, size_t len)
{
    int idx = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (!p->segs[i].capture) continue;
        if (p->segs[i].len == len && memcmp(p->segs[i].text, name, len) == 0) return idx;
        idx++;
    }
    return -1;
}

int fg_pattern_match(const fg_pattern_t *p, const char *path, size_t len, fg_captures_t *caps)
{
    if (len == 0 || path[0] != '/') return 0;
    caps->n = 0;
    size_t at = 1;
    for (size_t i = 0; i < p->n; i++) {
        const seg_t *g = &p->segs[i];
        if (at > len) return 0;
        if (g->rest) {
            if (at >= len) return 0; /* the rest must be non-empty */
            caps->c[caps->n].at = path + at;
            caps->c[caps->n].len = len - at;
            caps->n++;
            return 1;
        }
        const char *e = memchr(path + at, '/', len - at);
        size_t sl = e ? (size_t)(e - (path + at)) : len - at;
        if (sl == 0) return 0;
        if (g->capture) {
            caps->c[caps->n].at = path + at;
            caps->c[caps->n].len = sl;
            caps->n++;
        } else if (sl != g->len || memcmp(path + at, g->text, sl) != 0) {
            return 0;
        }
        at += sl;
        /* a separator follows unless this was the last path segment */
        if (i + 1 < p->n) {
            if (at >= len || path[at] != '/') return 0;
            at++;
        }
    }
    /* everything consumed, with the trailing slash exactly as in the pattern */
    if (p->trailing_slash) return at + 1 == len && path[at] == '/';
    return at == len || (p->n == 0 && len == 1);
}

void fg_keytmpl_free(fg_keytmpl_t *k)
{
    if (!k) return;
    free(k->pieces);
    free(k->src);
    free(k);
}

int fg_keytmpl_compile(const char *src, const fg_pattern_t *p, fg_keytmpl_t **out, char *why,
                       size_t why_len)
{
    *out = NULL;
    fg_keytmpl_t *k = calloc(1, sizeof *k);
    if (!k) return FG_ENOMEM;
    k->src = strdup(src);
    k->pieces = calloc(2 * strlen(src) + 2, sizeof *k->pieces);
    if (!k->src || !k->pieces) {
        fg_keytmpl_free(k);
        return FG_ENOMEM;
    }
    if (!src[0]) {
        snprintf(why, why_len, "the key template is empty");
        fg_keytmpl_free(k);
        return FG_ECONFIG;
    }
    const char *s = k->src;
    while (*s) {
        if (*s == '{') {
            const char *e = strchr(s, '}');
            if (!e) {
                snprintf(why, why_len, "unclosed '{' in key template");
                fg_keytmpl_free(k);
                return FG_ECONFIG;
            }
            int idx = fg_pattern_capture_index(p, s + 1, (size_t)(e - s - 1));
            if (idx < 0) {
                snprintf(why, why_len, "key template names capture '{%.*s}' that pattern %s lacks",
                         (int)(e - s - 1), s + 1, p->src);
                fg_keytmpl_free(k);
                return FG_ECONFIG;
            }
            k->pieces[k->n++] = (piece_t){NULL, 0, idx};
            s = e + 1;
        } else {
            const char *e = s;
            while (*e && *e != '{') e++;
            if (memchr(s, '}', (size_t)(e - s))) {
                snprintf(why, why_len, "stray '}' in key template");
                fg_keytmpl_free(k);
                return FG_ECONFIG;
            }
            k->pieces[k->n++] = (piece_t){s, (size_t)(e - s), -1};
            s = e;
        }
    }
    *out = k;
    return 0;
}

int fg_keytmpl_expand(const fg_keytmpl_t *k, const fg_captures_t *caps, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < k->n; i++) {
        const char *t = k->pieces[i].text;
        size_t n = k->pieces[i].len;
        if (k->pieces[i].cap >= 0) {
            if ((size_t)k->pieces[i].cap >= caps->n) return FG_EFULL;
            t = caps->c[k->pieces[i].cap].at;
            n = caps->c[k->pieces[i].cap].len;
        }
        if (o + n + 1 > cap) return FG_EFULL;
        memcpy(out + o, t, n);
        o += n;
    }
    if (cap == 0) return FG_EFULL;
    out[o] = '\0';
    return (int)o;
}
