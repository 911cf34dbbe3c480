/* test_url.c -- fg_url_redact: no password survives, everything else does. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "policy/url.h"

static void expect(const char *in, const char *want)
{
    char *got = fg_url_redact(in);
    cr_assert_str_eq(got, want, "redact(%s)", in);
    free(got);
}

Test(url, redacts_passwords)
{
    expect("postgres://postgres:s3cret@db:5432/app", "postgres://postgres:***@db:5432/app");
    expect("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0");
    expect("redis://user:p:w@host/0", "redis://user:***@host/0");
    expect("postgres://u:a@b@host/db", "postgres://u:***@host/db");
    expect("postgres://host/db?sslmode=require&password=x&PASSWORD=y",
           "postgres://host/db?sslmode=require&password=***&PASSWORD=***");
    expect("postgres://u:pw@host/db?password=pw2", "postgres://u:***@host/db?password=***");
}

Test(url, keeps_the_rest)
{
    expect("sqlite:fencegate.db", "sqlite:fencegate.db");
    expect("postgres://user@host/db", "postgres://user@host/db");
    expect("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0");
    expect("http://host/a@b:c", "http://host/a@b:c");
    expect("postgres://host/db?passwordx=1", "postgres://host/db?passwordx=1");
    expect("", "");
    cr_assert_null(fg_url_redact(NULL));
}
