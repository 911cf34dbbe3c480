/*
 * test_pattern.c -- match patterns, captures and key templates.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "policy/error.h"
#include "policy/pattern.h"

static fg_pattern_t *compile(const char *src)
{
    fg_pattern_t *p = NULL;
    const char *why = NULL;
    cr_assert_eq(fg_pattern_compile(src, &p, &why), 0, "%s: %s", src, why ? why : "");
    return p;
}

static char *key_for(const char *pat, const char *tmpl, const char *path, char *out, size_t cap)
{
    fg_pattern_t *p = compile(pat);
    fg_keytmpl_t *k = NULL;
    char why[256];
    cr_assert_eq(fg_keytmpl_compile(tmpl, p, &k, why, sizeof why), 0, "%s", why);
    fg_captures_t caps;
    char *res = NULL;
    if (fg_pattern_match(p, path, strlen(path), &caps) &&
        fg_keytmpl_expand(k, &caps, out, cap) >= 0)
        res = out;
    fg_keytmpl_free(k);
    fg_pattern_free(p);
    return res;
}

Test(pattern, matching_is_exact)
{
    fg_pattern_t *p = compile("/orders/{id}");
    fg_captures_t c;
    cr_assert(fg_pattern_match(p, "/orders/1", 9, &c));
    cr_assert_eq(c.n, 1);
    cr_assert_eq(c.c[0].len, 1);
    cr_assert_not(fg_pattern_match(p, "/orders/1/", 10, &c), "trailing slash is another path");
    cr_assert_not(fg_pattern_match(p, "/ORDERS/1", 9, &c), "no case folding");
    cr_assert_not(fg_pattern_match(p, "/orders/", 8, &c), "a capture is never empty");
    cr_assert_not(fg_pattern_match(p, "/orders", 7, &c));
    cr_assert_not(fg_pattern_match(p, "/orders/1/2", 11, &c), "{id} is one segment");
    cr_assert_not(fg_pattern_match(p, "/ordersx/1", 10, &c));
    fg_pattern_free(p);
    p = compile("/orders/");
    cr_assert(fg_pattern_match(p, "/orders/", 8, &c));
    cr_assert_not(fg_pattern_match(p, "/orders", 7, &c));
    fg_pattern_free(p);
    p = compile("/");
    cr_assert(fg_pattern_match(p, "/", 1, &c));
    cr_assert_not(fg_pattern_match(p, "/a", 2, &c));
    fg_pattern_free(p);
}

Test(pattern, rest_capture)
{
    fg_pattern_t *p = compile("/docs/{tenant}/{path*}");
    fg_captures_t c;
    cr_assert(fg_pattern_match(p, "/docs/t1/a/b/c", 14, &c));
    cr_assert_eq(c.n, 2);
    cr_assert_eq(c.c[1].len, 5);
    cr_assert(memcmp(c.c[1].at, "a/b/c", 5) == 0);
    cr_assert(fg_pattern_match(p, "/docs/t1/a/", 11, &c), "the rest keeps a trailing slash");
    cr_assert_not(fg_pattern_match(p, "/docs/t1/", 9, &c), "the rest is never empty");
    cr_assert_not(fg_pattern_match(p, "/docs/t1", 8, &c));
    fg_pattern_free(p);
}

Test(pattern, compile_errors)
{
    static const char *const bad[] = {
        "orders/{id}", "/a//b",     "/a{id}", "/{id}x", "/{}",       "/{*}", "/{a-b}", "/{rest*}/x",
        "/{a}/{a}",    "/{rest*}/", "/a}",    "/{a",    "/{a}/{a*}", "",     "x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        fg_pattern_t *p = NULL;
        const char *why = NULL;
        cr_expect_eq(fg_pattern_compile(bad[i], &p, &why), FG_ECONFIG, "'%s' compiled", bad[i]);
        cr_expect(why && *why);
        fg_pattern_free(p);
    }
}

Test(pattern, literal_segments_must_be_canonical)
{
    /* a literal that no canonical path can contain is a mistake, not a dead policy */
    static const char *const bad[] = {"/%7euser/{id}", "/a;b/{id}", "/./{id}", "/a/../{id}",
                                      "/x%2fy",        "/%c3%a9",   "/a b",    "/a?x",
                                      "/a#x",          "/a%zz",     "/a\\b"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        fg_pattern_t *p = NULL;
        const char *why = NULL;
        cr_expect_eq(fg_pattern_compile(bad[i], &p, &why), FG_ECONFIG, "'%s' compiled", bad[i]);
        cr_expect(why && strstr(why, "canonical"), "'%s': %s", bad[i], why ? why : "");
        fg_pattern_free(p);
    }
    fg_pattern_t *p = compile("/caf%C3%A9/~u/{id}");
    fg_captures_t c;
    cr_assert(fg_pattern_match(p, "/caf%C3%A9/~u/7", 15, &c));
    fg_pattern_free(p);
}

Test(pattern, capture_index_and_source)
{
    fg_pattern_t *p = compile("/t/{a}/x/{b}/{c*}");
    cr_assert_str_eq(fg_pattern_source(p), "/t/{a}/x/{b}/{c*}");
    cr_assert_eq(fg_pattern_capture_index(p, "a", 1), 0);
    cr_assert_eq(fg_pattern_capture_index(p, "b", 1), 1);
    cr_assert_eq(fg_pattern_capture_index(p, "c", 1), 2);
    cr_assert_eq(fg_pattern_capture_index(p, "x", 1), -1);
    cr_assert_eq(fg_pattern_capture_index(p, "c*", 2), -1);
    fg_pattern_free(p);
}

Test(pattern, key_templates)
{
    char out[128];
    cr_assert_str_eq(key_for("/orders/{id}", "order:{id}", "/orders/42", out, sizeof out),
                     "order:42");
    cr_assert_str_eq(key_for("/t/{a}/x/{b}", "{b}-{a}-{a}", "/t/1/x/2", out, sizeof out), "2-1-1");
    cr_assert_str_eq(key_for("/d/{t}/{p*}", "doc:{t}:{p}", "/d/x/a/%C3%A9", out, sizeof out),
                     "doc:x:a/%C3%A9", "captures are copied as they stand in the path");
    cr_assert_str_eq(key_for("/static", "the-one", "/static", out, sizeof out), "the-one");
    cr_assert_null(key_for("/orders/{id}", "order:{id}", "/orders/123456789", out, 8),
                   "a key that does not fit is an error, not a truncation");
}

Test(pattern, key_template_errors)
{
    fg_pattern_t *p = compile("/orders/{id}");
    static const char *const bad[] = {"order:{nope}", "order:{id", "order:id}", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        fg_keytmpl_t *k = NULL;
        char why[256] = "";
        cr_expect_eq(fg_keytmpl_compile(bad[i], p, &k, why, sizeof why), FG_ECONFIG, "'%s'",
                     bad[i]);
        fg_keytmpl_free(k);
    }
    fg_keytmpl_t *k = NULL;
    char why[256] = "";
    fg_keytmpl_compile("order:{nope}", p, &k, why, sizeof why);
    cr_assert(strstr(why, "nope"), "the error names the capture: %s", why);
    fg_pattern_free(p);
}
