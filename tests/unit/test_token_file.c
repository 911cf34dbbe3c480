/* test_token_file.c -- the strict admin token file reader (gateway/token_file.c). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "gateway/token_file.h"
#include "harness/harness.h"
#include "policy/error.h"

static int read_bytes(const char *bytes, size_t len, mode_t mode, char *out, bool *loose)
{
    char path[600], err[512];
    snprintf(path, sizeof path, "%s/t", fgt_tmpdir());
    FILE *f = fopen(path, "wb");
    fwrite(bytes, 1, len, f);
    fclose(f);
    chmod(path, mode);
    size_t n;
    int rc = fg_token_file_read(path, out, &n, loose, err, sizeof err);
    if (rc) cr_assert(strstr(err, path), "the error names the file: %s", err);
    if (!rc) cr_assert_eq(n, strlen(out));
    return rc;
}

Test(token_file, rules)
{
    static char out[FG_TOKEN_FILE_MAX + 1];
    bool loose;
    cr_assert_eq(read_bytes("abc\n", 4, 0600, out, &loose), 0);
    cr_assert_str_eq(out, "abc");
    cr_assert_not(loose);
    cr_assert_eq(read_bytes("!~x", 3, 0640, out, &loose), 0);
    cr_assert(loose, "group-readable");
    const char *bad[] = {"", "\n", "\0abc", "a\0bc", "a b", "ab\r\n", "ab\n\n", "\x01", "\x80"};
    size_t lens[] = {0, 1, 4, 4, 3, 4, 4, 1, 1};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_eq(read_bytes(bad[i], lens[i], 0600, out, &loose), FG_ECONFIG, "case %zu", i);
        cr_assert_eq(out[0], '\0', "nothing is kept from a bad file");
    }
    static char big[FG_TOKEN_FILE_MAX + 2];
    memset(big, 'x', sizeof big);
    cr_assert_eq(read_bytes(big, FG_TOKEN_FILE_MAX, 0600, out, &loose), 0);
    cr_assert_eq(read_bytes(big, FG_TOKEN_FILE_MAX + 1, 0600, out, &loose), FG_ECONFIG);
    char err[256];
    size_t n;
    cr_assert_eq(fg_token_file_read("/nonexistent/x", out, &n, &loose, err, sizeof err), FG_EIO);
}
