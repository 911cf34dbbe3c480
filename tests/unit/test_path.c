/*
 * test_path.c -- SPEC step 1 against a table of every bypass trick we know.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "policy/error.h"
#include "policy/path.h"

typedef struct row {
    const char *raw;
    const char *want; /* canonical path, or NULL: refused */
} row_t;

static const row_t rows[] = {
    /* accepted, unchanged */
    {"/", "/"},
    {"/orders/1", "/orders/1"},
    {"/orders/1/", "/orders/1/"},
    {"/ORDERS/1", "/ORDERS/1"},
    {"/a/b-c_d.e~f", "/a/b-c_d.e~f"},
    {"/a/!$&'()*+,=:@", "/a/!$&'()*+,=:@"},
    {"/a/...", "/a/..."},
    {"/a/.b", "/a/.b"},
    {"/a?b=%zz", "/a"},
    {"/a?b=%zz&c=/../", "/a"},
    {"/a?", "/a"},
    /* accepted, rewritten to the one spelling */
    {"/a/%7euser", "/a/~user"},
    {"/a/%41%62c", "/a/Abc"},
    {"/x/%c3%a9", "/x/%C3%A9"},
    {"/x/%C3%A9", "/x/%C3%A9"},
    {"/x/%20y", "/x/%20y"},
    {"/x/%3f", "/x/%3F"},
    {"/x/%23", "/x/%23"},
    {"/x/%3a%40", "/x/:@"},
    {"/x/%e2%82%ac", "/x/%E2%82%AC"},
    {"/x/%f0%9f%98%80", "/x/%F0%9F%98%80"},
    /* refused: not origin-form */
    {"", NULL},
    {"*", NULL},
    {"?a", NULL},
    {"%2fa", NULL},
    {"orders/1", NULL},
    {"http://h/x", NULL},
    {"HTTP://h/x", NULL},
    /* refused: empty segments */
    {"//x", NULL},
    {"/a//b", NULL},
    {"/a/b//", NULL},
    /* refused: dot segments in any encoding */
    {"/.", NULL},
    {"/..", NULL},
    {"/a/./b", NULL},
    {"/a/../b", NULL},
    {"/a/..", NULL},
    {"/a/.", NULL},
    {"/a/%2e/b", NULL},
    {"/a/%2E%2E/b", NULL},
    {"/%2e%2e/x", NULL},
    {"/a/.%2E/b", NULL},
    {"/a/%2e./b", NULL},
    {"/a/%2e%2e", NULL},
    {"/a/%2E", NULL},
    {"/a/%2e%2e/", NULL},
    {"/a/.%2e?x=1", NULL},
    /* refused: encoded separators and percent */
    {"/a%2fb", NULL},
    {"/a%2Fb", NULL},
    {"/a%5cb", NULL},
    {"/a%5Cb", NULL},
    {"/a%25b", NULL},
    {"/a%252fb", NULL},
    {"/a%2f", NULL},
    /* refused: path parameters */
    {"/a;b", NULL},
    {"/a/b;jsessionid=1", NULL},
    {"/a%3bb", NULL},
    {"/a%3Bb", NULL},
    /* refused: NUL, control characters, backslash */
    {"/a%00", NULL},
    {"/a%00.json", NULL},
    {"/a%0a", NULL},
    {"/a%0D%0Ab", NULL},
    {"/a%7f", NULL},
    {"/a%7F", NULL},
    {"/a\x7f", NULL},
    {"/a\x01", NULL},
    {"/a%1f", NULL},
    {"/a\\b", NULL},
    {"/a\\..\\b", NULL},
    {"/a\tb", NULL},
    {"/a b", NULL},
    /* refused: bad escapes */
    {"/a%", NULL},
    {"/a%4", NULL},
    {"/a%zz", NULL},
    {"/a%g1", NULL},
    {"/a%%41", NULL},
    {"/a%4g", NULL},
    {"/a%-1", NULL},
    /* refused: raw bytes that need encoding */
    {"/a\"b", NULL},
    {"/a<b>", NULL},
    {"/a{b}", NULL},
    {"/a|b", NULL},
    {"/a^b", NULL},
    {"/a`b", NULL},
    {"/a#frag", NULL},
    {"/a?b#frag", NULL},
    {"/#", NULL},
    {"/caf\xc3\xa9", NULL},
    /* refused: invalid or overlong UTF-8 */
    {"/a%c0%af", NULL},
    {"/a%c0%ae%c0%ae/x", NULL},
    {"/a%e0%80%af", NULL},
    {"/a%f0%80%80%af", NULL},
    {"/a%c1%bf", NULL},
    {"/a%ed%a0%80", NULL},
    {"/a%f4%90%80%80", NULL},
    {"/a%f5%80%80%80", NULL},
    {"/a%ff", NULL},
    {"/a%80", NULL},
    {"/a%bf", NULL},
    {"/a%e2%82", NULL},
    {"/a%e2%82x", NULL},
    {"/a%c3", NULL},
    {"/a%c3%41", NULL},
    {"/a%c3%c3%a9", NULL},
    {"/a%e0%a0", NULL},
    {"/a%f0%9f%98", NULL},
    {"/a%f8%88%80%80%80", NULL},
    {"/a%fe", NULL},
};

Test(path, table)
{
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        const row_t *r = &rows[i];
        char out[256];
        fg_path_t p;
        const char *why = NULL;
        int rc = fg_path_canonicalize(r->raw, strlen(r->raw), out, sizeof out, &p, &why);
        if (r->want) {
            cr_expect_eq(rc, 0, "'%s' refused (%s), want '%s'", r->raw, why ? why : "", r->want);
            if (rc == 0)
                cr_expect_str_eq(p.path, r->want, "'%s' -> '%s', want '%s'", r->raw, p.path,
                                 r->want);
        } else {
            cr_expect_eq(rc, FG_EPATH, "'%s' accepted as '%s'", r->raw, rc == 0 ? p.path : "");
            if (rc == FG_EPATH) cr_expect(why && *why, "refusal of '%s' has no reason", r->raw);
        }
    }
}

Test(path, query_untouched)
{
    const char *raw = "/a/%7e?x=%2e%2e/../;&y";
    char out[64];
    fg_path_t p;
    const char *why;
    cr_assert_eq(fg_path_canonicalize(raw, strlen(raw), out, sizeof out, &p, &why), 0);
    cr_assert_str_eq(p.path, "/a/~");
    cr_assert_eq(p.query_len, strlen("x=%2e%2e/../;&y"));
    cr_assert(memcmp(p.query, "x=%2e%2e/../;&y", p.query_len) == 0);
}

Test(path, canonical_is_a_fixed_point)
{
    /* canonicalizing a canonical path changes nothing: one spelling */
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        if (!rows[i].want) continue;
        char out[256];
        fg_path_t p;
        const char *why;
        cr_assert_eq(
            fg_path_canonicalize(rows[i].want, strlen(rows[i].want), out, sizeof out, &p, &why), 0,
            "%s", rows[i].want);
        cr_assert_str_eq(p.path, rows[i].want);
    }
}

Test(path, small_buffer_and_length_limit)
{
    char out[4];
    fg_path_t p;
    const char *why;
    cr_assert_eq(fg_path_canonicalize("/abcdef", 7, out, sizeof out, &p, &why), FG_EINVAL);
    static char big[FG_PATH_MAX + 2], bout[FG_PATH_MAX + 3];
    memset(big, 'a', sizeof big - 1);
    big[0] = '/';
    cr_assert_eq(fg_path_canonicalize(big, sizeof big - 1, bout, sizeof bout, &p, &why), FG_EPATH);
}

Test(path, decode_segment)
{
    char out[64];
    cr_assert_eq(fg_path_decode_segment("order%3A42", 10, out, sizeof out), 8);
    cr_assert_str_eq(out, "order:42");
    cr_assert_eq(fg_path_decode_segment("a%2Fb", 5, out, sizeof out), 3);
    cr_assert_str_eq(out, "a/b");
    cr_assert_eq(fg_path_decode_segment("a/b", 3, out, sizeof out), FG_EPATH);
    cr_assert_eq(fg_path_decode_segment("a%00", 4, out, sizeof out), FG_EPATH);
    cr_assert_eq(fg_path_decode_segment("a%zz", 4, out, sizeof out), FG_EPATH);
    cr_assert_eq(fg_path_decode_segment("a%2", 3, out, sizeof out), FG_EPATH);
    cr_assert_eq(fg_path_decode_segment("a\0b", 3, out, sizeof out), FG_EPATH, "raw NUL");
    cr_assert_eq(fg_path_decode_segment("abcd", 4, out, 4), FG_EPATH, "does not fit");
    cr_assert_eq(fg_path_decode_segment("abc", 3, out, 4), 3);
}
