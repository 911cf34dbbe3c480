/*
 * test_token.c -- SPEC step 6: the strict token grammar and the u64 limits.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "policy/error.h"
#include "policy/token.h"

static int parse(const char *s, uint64_t *v)
{
    return fg_token_parse(s, strlen(s), v);
}

Test(token, accepts)
{
    uint64_t v;
    cr_assert_eq(parse("0", &v), 0);
    cr_assert_eq(v, 0);
    cr_assert_eq(parse("1", &v), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(parse("007", &v), 0);
    cr_assert_eq(v, 7);
    cr_assert_eq(parse("9007199254740993", &v), 0);
    cr_assert_eq(v, 9007199254740993ULL);
    cr_assert_eq(parse("18446744073709551615", &v), 0);
    cr_assert_eq(v, UINT64_MAX);
    cr_assert_eq(parse("18446744073709551610", &v), 0);
    cr_assert_eq(v, UINT64_MAX - 5);
    cr_assert_eq(parse("00000000000000000001", &v), 0, "20 digits with leading zeros");
    cr_assert_eq(v, 1);
}

Test(token, refuses_every_malformed_form)
{
    static const char *const bad[] = {
        "",
        " ",
        "18446744073709551616",
        "18446744073709551625",
        "99999999999999999999",
        "100000000000000000000",
        "000000000000000000001", /* 21 digits */
        "+1",
        "-1",
        "-0",
        " 1",
        "1 ",
        "1\t",
        "0x10",
        "0X10",
        "1e3",
        "1E3",
        "1.0",
        "1,2",
        "1, 2",
        "1;2",
        "abc",
        "1a",
        "\xef\xbc\x91", /* fullwidth 1 */
        "\xd9\xa1",     /* arabic-indic 1 */
        "1\n",
        "Infinity",
        "NaN",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint64_t v = 12345;
        cr_expect_eq(parse(bad[i], &v), FG_ETOKEN, "'%s' accepted as %llu", bad[i],
                     (unsigned long long)v);
    }
    uint64_t v;
    cr_assert_eq(fg_token_parse("12\0"
                                "3",
                                4, &v),
                 FG_ETOKEN, "embedded NUL");
}

Test(token, format_round_trip)
{
    static const uint64_t vals[] = {0, 1, 9, 10, 4294967296ULL, 9007199254740993ULL, UINT64_MAX};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        char buf[FG_TOKEN_STRLEN];
        size_t n = fg_token_format(vals[i], buf);
        cr_assert_eq(n, strlen(buf));
        uint64_t back;
        cr_assert_eq(fg_token_parse(buf, n, &back), 0);
        cr_assert_eq(back, vals[i]);
    }
    char buf[FG_TOKEN_STRLEN];
    fg_token_format(UINT64_MAX, buf);
    cr_assert_str_eq(buf, "18446744073709551615");
}
