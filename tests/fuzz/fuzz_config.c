/*
 * fuzz_config.c -- fg_config_load_string on arbitrary text (SPEC "Configuration").
 *
 * The input is the file's text (up to its first NUL byte). Whatever it holds:
 * no crash, no leak (libFuzzer runs LeakSanitizer on every input), and
 *  - a refusal returns no config and an error of the form "NAME:LINE: ..."
 *    with LINE a line of the text, or "NAME: ..." for a whole-file problem;
 *  - an accepted config is complete: every default filled in, every duration
 *    in its range, every policy with its pattern and key, every line inih
 *    reads as a section header one of its sections, and it can be matched
 *    against and freed.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "policy/config.h"
#include "policy/error.h"

#define NAME "fuzz.conf"

static void check_error(const char *err, size_t err_len, const char *text)
{
    CHECK(memchr(err, '\0', err_len));
    size_t nl = strlen(NAME);
    CHECK(strncmp(err, NAME, nl) == 0 && err[nl] == ':');
    const char *s = err + nl + 1;
    if (*s == ' ') { /* "NAME: problem" */
        CHECK(s[1] != '\0');
        return;
    }
    /* "NAME:LINE: problem", LINE one of the text's lines */
    long line = 0;
    const char *d = s;
    while (*d >= '0' && *d <= '9' && d - s < 9) line = line * 10 + (*d++ - '0');
    CHECK(d > s && *d == ':' && d[1] == ' ' && d[2] != '\0');
    long lines = 0;
    for (const char *t = text; *t; t++) lines += *t == '\n';
    if (text[0] && text[strlen(text) - 1] != '\n') lines++;
    CHECK(line >= 1 && line <= lines);
}

static bool in_range(uint64_t v, uint64_t lo, uint64_t hi)
{
    return v >= lo && v <= hi;
}

/* Lines that inih reads as a section header, by its rule: the first byte
 * after any C white space (after a byte order mark on line 1) is '['; and
 * how many of them name [gateway]. In an accepted config no line is a
 * continuation (a second value for a key is a duplicate), so each of them
 * must be a section of the config: there is no header it may silently skip. */
static void count_headers(const char *text, size_t *headers, size_t *gateway)
{
    *headers = *gateway = 0;
    bool first = true;
    for (const char *s = text; *s;) {
        if (first && strncmp(s, "\xEF\xBB\xBF", 3) == 0) s += 3;
        first = false;
        while (*s == ' ' || *s == '\t' || *s == '\v' || *s == '\f' || *s == '\r') s++;
        if (*s == '[') {
            (*headers)++;
            if (strncmp(s, "[gateway]", 9) == 0) (*gateway)++;
        }
        const char *nl = strchr(s, '\n');
        if (!nl) break;
        s = nl + 1;
    }
}

static void check_config(const fg_config_t *c, const char *text)
{
    size_t headers, gateway;
    count_headers(text, &headers, &gateway);
    CHECK(headers - gateway == c->n_policies);
    CHECK(c->file && strcmp(c->file, NAME) == 0);
    CHECK(c->listen && c->listen[0] && c->upstream && c->state && c->admin_listen);
    CHECK(in_range(c->upstream_timeout_ms, FG_TIMEOUT_MIN_MS, FG_TIMEOUT_MAX_MS));
    CHECK(in_range(c->fence_wait_ms, FG_TIMEOUT_MIN_MS, FG_TIMEOUT_MAX_MS));
    CHECK(in_range(c->upstream_grace_ms, FG_TIMEOUT_MIN_MS, FG_TIMEOUT_MAX_MS));
    CHECK(in_range(c->header_timeout_ms, FG_TIMEOUT_MIN_MS, FG_TIMEOUT_MAX_MS));
    CHECK(in_range(c->body_timeout_ms, FG_TIMEOUT_MIN_MS, FG_TIMEOUT_MAX_MS));
    CHECK(in_range(c->state_timeout_ms, FG_TIMEOUT_MIN_MS, FG_TIMEOUT_MAX_MS));
    CHECK(c->audit_retention_ms == 0 ||
          in_range(c->audit_retention_ms, FG_RETENTION_MIN_MS, FG_RETENTION_MAX_MS));
    CHECK(c->max_connections >= 1 && c->admin_max_connections >= 1);
    CHECK(c->state_pool >= 1 && c->state_pool <= 64 && c->workers <= 64);
    for (size_t i = 0; i < c->n_policies; i++) {
        const fg_policy_t *p = &c->policies[i];
        CHECK(p->name && p->name[0] && p->line >= 1);
        CHECK(p->match && p->key && p->key_src && p->token_header && p->token_header[0]);
        CHECK(p->n_read_methods <= FG_MAX_READ_METHODS);
        for (size_t k = 0; k < p->n_read_methods; k++) CHECK(p->read_methods[k][0]);
        for (size_t j = 0; j < i; j++) CHECK(strcmp(c->policies[j].name, p->name) != 0);
    }
    fg_captures_t caps;
    const fg_policy_t *p = fg_config_match(c, "/", 1, &caps);
    if (p) CHECK(p >= c->policies && p < c->policies + c->n_policies);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    CHECK(text);
    if (size) memcpy(text, data, size);
    text[size] = '\0';

    char *err = malloc(FG_CONFIG_ERR_LEN); /* exact: ASan sees a byte past the end */
    CHECK(err);
    err[0] = '\0';
    fg_config_t *cfg = (fg_config_t *)(uintptr_t)1;
    int rc = fg_config_load_string(NAME, text, &cfg, err, FG_CONFIG_ERR_LEN);
    if (rc != 0) {
        CHECK(rc == FG_ECONFIG || rc == FG_ENOMEM);
        CHECK(cfg == NULL);
        check_error(err, FG_CONFIG_ERR_LEN, text);
    } else {
        CHECK(cfg != NULL);
        check_config(cfg, text);
        fg_config_free(cfg);
    }
    free(err);
    free(text);
    return 0;
}
