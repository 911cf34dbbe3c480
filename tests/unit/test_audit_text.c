/* test_audit_text.c -- fg_audit_escape / fg_audit_is_clean (storage/audit.c). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "storage/store.h"

static void expect(const char *in, size_t len, size_t max, const char *want, bool want_cut)
{
    bool cut = !want_cut;
    char *got = fg_audit_escape(in, len, max, &cut);
    cr_assert_str_eq(got, want);
    cr_assert_eq(cut, want_cut, "truncated flag for %s", want);
    cr_assert_eq(fg_audit_is_clean(in, len, max), strcmp(in, want) == 0 && !want_cut);
    free(got);
}

Test(audit_text, escapes)
{
    expect("PUT", sizeof("PUT") - 1, 0, "PUT", false);
    expect("P\xffT", sizeof("P\xffT") - 1, 0, "P\\xFFT", false);
    expect("a\\b", sizeof("a\\b") - 1, 0, "a\\\\b", false);
    expect("\t\r\n\x7f", sizeof("\t\r\n\x7f") - 1, 0, "\\x09\\x0D\\x0A\\x7F", false);
    expect("nul\0x", sizeof("nul\0x") - 1, 0, "nul\\x00x", false);
    expect("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
           sizeof("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") - 1, 0,
           "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", false);
    expect("\xc0\xaf", sizeof("\xc0\xaf") - 1, 0, "\\xC0\\xAF", false); /* overlong '/' */
    expect("\xed\xa0\x80", sizeof("\xed\xa0\x80") - 1, 0, "\\xED\\xA0\\x80", false); /* surrogate */
    expect("\xc2\x85", sizeof("\xc2\x85") - 1, 0, "\\xC2\\x85", false); /* C1 control NEL */
    expect("\xf4\x90\x80\x80", sizeof("\xf4\x90\x80\x80") - 1, 0, "\\xF4\\x90\\x80\\x80",
           false);                                                      /* above U+10FFFF */
    expect("\xe2\x82", sizeof("\xe2\x82") - 1, 0, "\\xE2\\x82", false); /* cut short */
}

Test(audit_text, cuts_between_units)
{
    expect("abcdef", sizeof("abcdef") - 1, 4, "abcd", true);
    expect("abcd", sizeof("abcd") - 1, 4, "abcd", false);
    expect("ab\xff", sizeof("ab\xff") - 1, 4, "ab", true);      /* \xFF needs 4 bytes, 2 left */
    expect("a\xc3\xa9", sizeof("a\xc3\xa9") - 1, 2, "a", true); /* never half a character */
    expect("a\\b", sizeof("a\\b") - 1, 2, "a", true);           /* never half an escape */
}
