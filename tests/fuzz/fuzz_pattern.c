/*
 * fuzz_pattern.c -- match patterns and key templates (policy/pattern.h).
 *
 * Input: byte 0 picks the expand buffer size, byte 1 the size of the `why`
 * buffer, and the rest is "pattern \n path \n template". Checked:
 *  - a compiled pattern has its literal segments in canonical spelling: with
 *    every capture replaced by a plain segment it is a canonical path, and
 *    that path matches it (completeness);
 *  - a match puts every capture inside the path, non-empty, one segment
 *    unless {name*}, and the pattern with its captures filled back in is the
 *    path itself (soundness);
 *  - a template is accepted exactly when a reference reading accepts it, its
 *    error fits `why`, and expand gives the reference key or FG_EFULL and
 *    never writes past its `cap`.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "policy/error.h"
#include "policy/path.h"
#include "policy/pattern.h"

/* Cut data[*at..size) at the next '\n' (or the end) and return its length. */
static size_t next_part(const uint8_t *data, size_t size, size_t *at, const uint8_t **part)
{
    const uint8_t *s = data + *at;
    const uint8_t *nl = memchr(s, '\n', size - *at);
    size_t len = nl ? (size_t)(nl - s) : size - *at;
    *part = s;
    *at += len + (nl ? 1 : 0);
    return len;
}

/* A capture segment of an accepted pattern starts at '{' and ends at '}'. */
static bool capture_is_rest(const char *open)
{
    return strchr(open, '}')[-1] == '*';
}

/* The pattern with capture i replaced by caps[i] (or, when caps is NULL, by
 * "v", and "v/w" for {name*}). Returns a malloc'd string; *n gets its length. */
static char *fill(const char *src, const fg_captures_t *caps, size_t *n)
{
    size_t cap = strlen(src) + 1;
    if (caps)
        for (size_t i = 0; i < caps->n; i++) cap += caps->c[i].len;
    else
        cap += 4 * FG_PATTERN_MAX_CAPTURES;
    char *out = malloc(cap);
    CHECK(out);
    size_t o = 0, k = 0;
    for (const char *s = src; *s;) {
        if (*s != '{') {
            out[o++] = *s++;
            continue;
        }
        const char *text = capture_is_rest(s) ? "v/w" : "v";
        size_t len = strlen(text);
        if (caps) {
            CHECK(k < caps->n);
            text = caps->c[k].at;
            len = caps->c[k].len;
        }
        memcpy(out + o, text, len);
        o += len;
        k++;
        s = strchr(s, '}') + 1;
    }
    if (caps) CHECK(k == caps->n);
    out[o] = '\0';
    *n = o;
    return out;
}

static void check_match(const fg_pattern_t *p, const char *path, size_t len,
                        const fg_captures_t *caps)
{
    const char *src = fg_pattern_source(p);
    size_t k = 0;
    for (const char *s = strchr(src, '{'); s; s = strchr(s + 1, '{'), k++) {
        CHECK(k < caps->n);
        const fg_capture_t *c = &caps->c[k];
        CHECK(c->at >= path && c->len > 0 && c->len <= len && c->at + c->len <= path + len);
        if (!capture_is_rest(s)) CHECK(!memchr(c->at, '/', c->len));
    }
    CHECK(k == caps->n);
    size_t n;
    char *back = fill(src, caps, &n);
    CHECK(n == len && memcmp(back, path, len) == 0);
    free(back);
}

/* The key a template should give, by a reading of its own; -1: refused. */
static long ref_expand(const char *tmpl, const fg_pattern_t *p, const fg_captures_t *caps,
                       char *out)
{
    if (!tmpl[0]) return -1;
    long o = 0;
    for (const char *s = tmpl; *s;) {
        if (*s == '}') return -1;
        if (*s != '{') {
            if (out) out[o] = *s;
            o++;
            s++;
            continue;
        }
        const char *e = strchr(s, '}');
        if (!e) return -1;
        int idx = fg_pattern_capture_index(p, s + 1, (size_t)(e - s - 1));
        if (idx < 0) return -1;
        if (caps) {
            if (out) memcpy(out + o, caps->c[idx].at, caps->c[idx].len);
            o += (long)caps->c[idx].len;
        }
        s = e + 1;
    }
    return o;
}

static void check_expand(const fg_keytmpl_t *k, const char *tmpl, const fg_pattern_t *p,
                         const fg_captures_t *caps, size_t cap)
{
    long want_len = ref_expand(tmpl, p, caps, NULL);
    CHECK(want_len >= 0);
    char *want = malloc((size_t)want_len + 1);
    CHECK(want);
    ref_expand(tmpl, p, caps, want);
    char *out = malloc(cap); /* exact: ASan sees any byte past cap */
    CHECK(out || cap == 0);
    int rc = fg_keytmpl_expand(k, caps, out, cap);
    if ((size_t)want_len + 1 <= cap) {
        CHECK(rc == want_len && memcmp(out, want, (size_t)want_len) == 0 && out[rc] == '\0');
    } else {
        CHECK(rc == FG_EFULL);
    }
    free(out);
    free(want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    size_t cap = data[0] == 255 ? 4096 : data[0];
    size_t why_len = (size_t)data[1] + 1;
    size_t at = 2;
    const uint8_t *part;
    size_t plen = next_part(data, size, &at, &part);
    char *src = strndup((const char *)part, plen);
    plen = next_part(data, size, &at, &part);
    char *path = malloc(plen ? plen : 1); /* exact size, not NUL-terminated */
    CHECK(src && path);
    if (plen) memcpy(path, part, plen);
    char *tmpl = strndup((const char *)(data + at), size - at);
    CHECK(tmpl);

    fg_pattern_t *p = NULL;
    const char *why = NULL;
    int rc = fg_pattern_compile(src, &p, &why);
    if (rc != 0) {
        CHECK(rc == FG_ECONFIG && p == NULL && why && why[0]);
        goto out;
    }
    CHECK(p && strcmp(fg_pattern_source(p), src) == 0);

    /* completeness: the pattern filled with plain segments is canonical and matches */
    size_t gen_len;
    char *gen = fill(src, NULL, &gen_len);
    char *canon = malloc(gen_len + 1);
    CHECK(canon);
    fg_path_t res;
    const char *pwhy;
    CHECK(fg_path_canonicalize(gen, gen_len, canon, gen_len + 1, &res, &pwhy) == 0);
    CHECK(res.path_len == gen_len && memcmp(canon, gen, gen_len) == 0);
    free(canon);
    fg_captures_t gcaps;
    CHECK(fg_pattern_match(p, gen, gen_len, &gcaps) == 1);
    check_match(p, gen, gen_len, &gcaps);

    /* soundness on the fuzzed path */
    fg_captures_t caps;
    int matched = fg_pattern_match(p, path, plen, &caps);
    CHECK(matched == 0 || matched == 1);
    if (matched) check_match(p, path, plen, &caps);

    char *wbuf = malloc(why_len);
    CHECK(wbuf);
    fg_keytmpl_t *k = NULL;
    rc = fg_keytmpl_compile(tmpl, p, &k, wbuf, why_len);
    bool want_ok = ref_expand(tmpl, p, NULL, NULL) >= 0;
    if (rc != 0) {
        CHECK(rc == FG_ECONFIG && k == NULL && !want_ok);
        CHECK(memchr(wbuf, '\0', why_len) && (why_len == 1 || wbuf[0]));
    } else {
        CHECK(k && want_ok);
        check_expand(k, tmpl, p, &gcaps, cap);
        if (matched) check_expand(k, tmpl, p, &caps, cap);
        fg_keytmpl_free(k);
    }
    free(wbuf);
    free(gen);
out:
    fg_pattern_free(p);
    free(tmpl);
    free(path);
    free(src);
    return 0;
}
