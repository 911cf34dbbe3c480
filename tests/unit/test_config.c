/*
 * test_config.c -- the INI configuration: defaults, every value check, errors
 * that name the right line, and policy matching order.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy/config.h"
#include "policy/error.h"

#define GW "[gateway]\nupstream = http://127.0.0.1:9000\n"

static fg_config_t *load_ok(const char *text)
{
    fg_config_t *c = NULL;
    char err[FG_CONFIG_ERR_LEN] = "";
    cr_assert_eq(fg_config_load_string("t.conf", text, &c, err, sizeof err), 0, "%s", err);
    return c;
}

/* The config must be refused with an error that starts with `prefix`. */
static void load_err(const char *text, const char *prefix)
{
    fg_config_t *c = NULL;
    char err[FG_CONFIG_ERR_LEN] = "";
    int rc = fg_config_load_string("t.conf", text, &c, err, sizeof err);
    cr_expect_eq(rc, FG_ECONFIG, "accepted:\n%s", text);
    cr_expect_null(c);
    cr_expect(strncmp(err, prefix, strlen(prefix)) == 0, "error '%s', want prefix '%s'", err,
              prefix);
    fg_config_free(c);
}

Test(config, defaults)
{
    fg_config_t *c = load_ok(GW "[policy orders]\nmatch = /orders/{id}\nkey = order:{id}\n");
    cr_assert_str_eq(c->listen, "127.0.0.1:8080");
    cr_assert_str_eq(c->state, "sqlite:fencegate.db");
    cr_assert_str_eq(c->admin_listen, "127.0.0.1:8081");
    cr_assert_eq(c->upstream_timeout_ms, 30000);
    cr_assert_eq(c->fence_wait_ms, 5000);
    cr_assert_eq(c->max_connections, 1024);
    cr_assert_not(c->unmatched_forward);
    cr_assert(!c->admin_token_file || !c->admin_token_file[0]);
    cr_assert_eq(c->workers, 0);
    cr_assert_eq(c->state_pool, 4);
    cr_assert_eq(c->state_timeout_ms, 1000);
    cr_assert(c->access_log);
    cr_assert_eq(c->audit_retention_ms, 0);
    cr_assert_eq(c->audit_max, 1000000, "the default cap protects the disk");
    cr_assert_eq(c->upstream_grace_ms, 30000, "upstream_grace defaults to upstream_timeout");
    cr_assert_eq(c->header_timeout_ms, 10000);
    cr_assert_eq(c->body_timeout_ms, 10000);
    cr_assert_eq(c->body_min_rate, 1024);
    cr_assert_eq(c->admin_max_connections, 64);
    cr_assert_not(c->require_durable);
    cr_assert_str_eq(c->upstream, "http://127.0.0.1:9000");
    cr_assert_str_eq(c->file, "t.conf");
    cr_assert_eq(c->n_policies, 1);
    const fg_policy_t *p = &c->policies[0];
    cr_assert_str_eq(p->name, "orders");
    cr_assert_eq(p->line, 3);
    cr_assert_str_eq(p->key_src, "order:{id}");
    cr_assert_str_eq(fg_pattern_source(p->match), "/orders/{id}");
    cr_assert_eq(p->n_read_methods, 3);
    cr_assert_str_eq(p->token_header, "Fencing-Token");
    cr_assert_eq(p->compare, FG_COMPARE_GE);
    cr_assert_eq(p->mode, FG_MODE_ENFORCE);
    cr_assert_not(p->missing_forward);
    cr_assert_not(p->state_error_forward);
    cr_assert_null(p->upstream);
    cr_assert_not(p->has_max_jump);
    cr_assert(fg_policy_is_read(p, "GET"));
    cr_assert(fg_policy_is_read(p, "HEAD"));
    cr_assert(fg_policy_is_read(p, "OPTIONS"));
    cr_assert_not(fg_policy_is_read(p, "get"), "method names are case-sensitive");
    cr_assert_not(fg_policy_is_read(p, "PUT"));
    fg_config_free(c);
}

Test(config, the_spec_example_loads)
{
    fg_config_t *c = load_ok(
        "[gateway]\n"
        "listen = 127.0.0.1:8080\n"
        "upstream = http://127.0.0.1:9000\n"
        "state = sqlite:fencegate.db            ; redis://host:6379/0  postgres://user@host/db\n"
        "admin_listen = 127.0.0.1:8081\n"
        "admin_token_file =                      ; when set, admin calls need a token\n"
        "unmatched_writes = reject               ; reject | forward\n"
        "upstream_timeout = 30s\n"
        "fence_wait = 5s\n"
        "max_connections = 1024\n"
        "\n"
        "[policy orders]                         ; one section per policy\n"
        "match = /orders/{id}                    ; {name} = one segment\n"
        "key = order:{id}\n"
        "read_methods = GET HEAD OPTIONS         ; the default\n"
        "token_header = Fencing-Token            ; the default\n"
        "compare = >=                            ; >= (default) | >\n"
        "on_missing = reject                     ; reject | forward\n"
        "on_state_error = reject                 ; reject | forward\n"
        "mode = enforce                          ; enforce | report-only | off\n"
        "upstream = http://127.0.0.1:9001        ; optional\n");
    cr_assert_str_eq(c->policies[0].upstream, "http://127.0.0.1:9001");
    cr_assert(!c->admin_token_file || !c->admin_token_file[0]);
    fg_config_free(c);
}

Test(config, values)
{
    fg_config_t *c = load_ok("[gateway]\nupstream = http://store:443/prefix\n"
                             "state = redis://127.0.0.1:6379/2\nunmatched_writes = forward\n"
                             "upstream_timeout = 250ms\nfence_wait = 2m\nmax_connections = 7\n"
                             "[policy a]\nmatch = /a/{x}\nkey = a:{x}\ncompare = >\n"
                             "on_missing = forward\non_state_error = forward\n"
                             "mode = report-only\nread_methods = GET PROPFIND\n"
                             "token_header = X-Lock-Token\n"
                             "[policy b]\nmatch = /b/{x}\nkey = b:{x}\nmode = off\n");
    cr_assert(c->unmatched_forward);
    cr_assert_eq(c->upstream_timeout_ms, 250);
    cr_assert_eq(c->fence_wait_ms, 120000);
    cr_assert_eq(c->max_connections, 7);
    const fg_policy_t *a = &c->policies[0];
    cr_assert_eq(a->compare, FG_COMPARE_GT);
    cr_assert(a->missing_forward);
    cr_assert(a->state_error_forward);
    cr_assert_eq(a->mode, FG_MODE_REPORT_ONLY);
    cr_assert(fg_policy_is_read(a, "PROPFIND"));
    cr_assert_not(fg_policy_is_read(a, "HEAD"), "read_methods replaces the default");
    cr_assert_str_eq(a->token_header, "X-Lock-Token");
    cr_assert_eq(c->policies[1].mode, FG_MODE_OFF);
    fg_config_free(c);
}

Test(config, errors_name_file_and_line)
{
    load_err("[gateway]\nupstream = http://x:1\nbogus = 1\n", "t.conf:3: unknown key 'bogus'");
    load_err(GW "[server]\n", "t.conf:3: unknown section [server]");
    load_err(GW "\n[policy a]\nmatch = /a/{x}\nkey = a:{y}\n", "t.conf:6:");
    load_err(GW "[policy a]\nmatch = /a/{x}\nkey = a:{x}\n[policy a]\nmatch = /b\nkey = b\n",
             "t.conf:6: duplicate policy 'a'");
    load_err(GW "[policy a]\nmatch = /a/{x}\nkey = a:{x}\ncompare = <\n", "t.conf:6:");
    load_err(GW "[policy a]\nmatch = /a/{x}\nkey = a:{x}\nmode = audit\n", "t.conf:6:");
    load_err(GW "[policy a]\nmatch = /a/{x}\nkey = a:{x}\non_missing = maybe\n", "t.conf:6:");
    load_err(GW "[policy a]\nmatch = /a/{x}\nkey = a:{x}\non_state_error = 1\n", "t.conf:6:");
    load_err(GW "[policy a]\nmatch = /a/{x}\nkey = a:{x}\ntoken_header = Bad Header\n",
             "t.conf:6:");
    load_err(GW "[policy a]\nmatch = a/{x}\nkey = a:{x}\n", "t.conf:4:");
    load_err(GW "[policy a]\nmatch = /a/{x}\nkey = a:{x}\nmatch = /b\n",
             "t.conf:6: duplicate key 'match'");
    load_err(GW "[policy a]\nkey = a\n", "t.conf:3: [policy a] needs 'match'");
    load_err(GW "[policy a]\nmatch = /a\n", "t.conf:3: [policy a] needs 'key'");
    load_err(GW "[policy a]\nmatch = /a\nkey = a\nfoo = 1\n", "t.conf:6: unknown key 'foo'");
    load_err(GW "upstream_timeout = 10 s\n", "t.conf:3:");
    load_err(GW "upstream_timeout = -1s\n", "t.conf:3:");
    load_err(GW "fence_wait = 5h5\n", "t.conf:3:");
    load_err(GW "max_connections = 0\n", "t.conf:3:");
    load_err(GW "max_connections = 1e3\n", "t.conf:3:");
    load_err(GW "listen = 8080\n", "t.conf:3:");
    load_err(GW "listen = 127.0.0.1:99999\n", "t.conf:3:");
    load_err(GW "state = mysql://x\n", "t.conf:3:");
    load_err(GW "unmatched_writes = allow\n", "t.conf:3:");
    load_err("[gateway]\nupstream = ftp://x\n", "t.conf:2:");
    load_err("[gateway]\nlisten = 127.0.0.1:1\n", "t.conf: [gateway] upstream is required");
    load_err("upstream = http://x:1\n", "t.conf:1:");
    load_err(GW "this line is not ini\n", "t.conf:3:");
    /* a line longer than inih's buffer is an error, never silently split */
    char text[1024];
    char longv[400];
    memset(longv, 'a', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    snprintf(text, sizeof text, GW "[policy a]\nmatch = /a/%s\nkey = a\n", longv);
    load_err(text, "t.conf:4: line too long");
}

Test(config, extension_keys)
{
    fg_config_t *c = load_ok("[gateway]\nupstream = http://[::1]:9000/base\nworkers = 64\n"
                             "state_pool = 1\nstate_timeout = 1500ms\naccess_log = off\n"
                             "audit_retention = 30d\naudit_max = 1000000\n"
                             "state = postgresql://u@h/db\nadmin_listen =\n"
                             "admin_token_file = /etc/fg/token\nlisten = [::1]:8080\n");
    cr_assert_eq(c->workers, 64);
    cr_assert_eq(c->state_pool, 1);
    cr_assert_eq(c->state_timeout_ms, 1500);
    cr_assert_not(c->access_log);
    cr_assert_eq(c->audit_retention_ms, 30ULL * 86400 * 1000);
    cr_assert_eq(c->audit_max, 1000000);
    cr_assert_str_eq(c->admin_listen, "", "an empty admin_listen disables the admin listener");
    cr_assert_str_eq(c->admin_token_file, "/etc/fg/token");
    cr_assert_eq(c->n_policies, 0);
    fg_config_free(c);
    c = load_ok(GW "audit_retention =\naudit_max = 0\nstate = sqlite:/var/lib/x.db\n");
    cr_assert_eq(c->audit_retention_ms, 0, "empty = keep forever");
    cr_assert_eq(c->audit_max, 0, "0 = no count limit");
    fg_config_free(c);
    c = load_ok(GW "upstream_timeout = 2s\nheader_timeout = 250ms\nbody_timeout = 1m\n"
                   "body_min_rate = 0\nadmin_max_connections = 8\nrequire_durable = on\n"
                   "[policy p]\nmatch = /p/{x}\nkey = p:{x}\nmax_token_jump = 1000\n"
                   "[policy q]\nmatch = /q\nkey = q\nmax_token_jump =\n");
    cr_assert_eq(c->upstream_grace_ms, 2000, "grace follows upstream_timeout");
    cr_assert_eq(c->header_timeout_ms, 250);
    cr_assert_eq(c->body_timeout_ms, 60000);
    cr_assert_eq(c->body_min_rate, 0);
    cr_assert_eq(c->admin_max_connections, 8);
    cr_assert(c->require_durable);
    cr_assert(c->policies[0].has_max_jump);
    cr_assert_eq(c->policies[0].max_jump, 1000);
    cr_assert_not(c->policies[1].has_max_jump, "an empty max_token_jump means no limit");
    fg_config_free(c);
    c = load_ok(GW "upstream_grace = 5s\nupstream_timeout = 24h\n");
    cr_assert_eq(c->upstream_grace_ms, 5000);
    cr_assert_eq(c->upstream_timeout_ms, 24ULL * 3600000);
    fg_config_free(c);
    /* every timeout lies between 1 ms and 24 h; a bigger one would overflow an int later */
    static const char *const timeouts[] = {"upstream_timeout", "fence_wait",     "state_timeout",
                                           "upstream_grace",   "header_timeout", "body_timeout"};
    for (size_t i = 0; i < sizeof timeouts / sizeof *timeouts; i++) {
        char text[256], want[128];
        snprintf(want, sizeof want, "t.conf:3: %s must lie between 1ms and 1d", timeouts[i]);
        snprintf(text, sizeof text, GW "%s = 25d\n", timeouts[i]);
        load_err(text, want);
        snprintf(text, sizeof text, GW "%s = 0ms\n", timeouts[i]);
        load_err(text, want);
        snprintf(text, sizeof text, GW "%s = 86400001ms\n", timeouts[i]);
        load_err(text, want);
        snprintf(text, sizeof text, GW "%s =\n", timeouts[i]);
        snprintf(want, sizeof want, "t.conf:3: %s: '' is not a duration", timeouts[i]);
        load_err(text, want);
    }
    load_err(GW "audit_retention = 59s\n",
             "t.conf:3: audit_retention must lie between 1m and 3650d");
    load_err(GW "audit_retention = 3651d\n", "t.conf:3: audit_retention must lie between");
    load_err(GW "audit_retention = 0\n", "t.conf:3: audit_retention must lie between");
    load_err(GW "audit_max = 9223372036854775808\n", "t.conf:3: audit_max must be");
    load_err(GW "admin_max_connections = 0\n", "t.conf:3: admin_max_connections must be");
    load_err(GW "require_durable = yes\n", "t.conf:3: require_durable must be on or off");
    load_err(GW "body_min_rate = fast\n", "t.conf:3: body_min_rate:");
    load_err(GW "[policy p]\nmatch = /p\nkey = p\nmax_token_jump = -1\n",
             "t.conf:6: max_token_jump must be");
    load_err(GW "[policy p]\nmatch = /p\nkey = p\nmax_token_jump = 18446744073709551616\n",
             "t.conf:6: max_token_jump must be");
    load_err(GW "workers = 65\n", "t.conf:3: workers must be");
    load_err(GW "state_pool = 0\n", "t.conf:3: state_pool must be");
    load_err(GW "state_pool = 65\n", "t.conf:3: state_pool must be");
    load_err(GW "state_timeout = 0ms\n", "t.conf:3: state_timeout must lie between");
    load_err(GW "fence_wait = 0\n", "t.conf:3: fence_wait must lie between");
    load_err(GW "audit_retention = forever\n", "t.conf:3: audit_retention:");
    load_err(GW "audit_max = -1\n", "t.conf:3: audit_max must be");
    load_err(GW "access_log = yes\n", "t.conf:3: access_log must be");
}

Test(config, more_errors_at_their_line)
{
    /* a syntax error is reported at its own line, not at the end of the file */
    load_err(GW "garbage\nlisten = 1.2.3.4:5\n\n[policy a]\nmatch = /a\nkey = a\n",
             "t.conf:3: syntax error");
    load_err(GW "[policy a\nmatch = /a\nkey = a\n", "t.conf:3:");
    load_err(GW "upstream = http://127.0.0.1:9001\n", "t.conf:3: duplicate key 'upstream'");
    load_err(GW "[gateway]\nlisten = 127.0.0.1:1\nlisten = 127.0.0.1:2\n",
             "t.conf:5: duplicate key 'listen'");
    load_err(GW "admin_listen = nope\n", "t.conf:3: admin_listen:");
    load_err(GW "listen =\n", "t.conf:3: listen must not be empty");
    load_err(GW "max_connections = 1000001\n", "t.conf:3: max_connections must be");
    load_err(GW "[policy]\nmatch = /a\nkey = a\n", "t.conf:3: unknown section [policy]");
    load_err(GW "[policy a b]\nmatch = /a\nkey = a\n", "t.conf:3: bad policy name");
    load_err(GW "[Gateway]\n", "t.conf:3: unknown section [Gateway]");
    load_err(GW "[policy a] x\nmatch = /a\nkey = a\n", "t.conf:3: unexpected text after");
    fg_config_free(load_ok(GW "[policy a]  ; comment [x]\nmatch = /a\nkey = a\n"));
    load_err(GW "[policy a]\nmatch = /a\nkey = a\nread_methods = GET P(T\n",
             "t.conf:6: read_methods:");
    load_err(GW "[policy a]\nmatch = /a\nkey = a\nupstream = tcp://x:1\n", "t.conf:6: upstream:");
    load_err(GW "[policy a]\nmatch = /a\nkey = a\ntoken_header =\n", "t.conf:6: token_header:");
    load_err(GW "[policy a]\nmatch = /a\nkey = a\ncompare = =>\n", "t.conf:6: compare must be");
    load_err(GW "[policy a]\nmatch = /a/%7e\nkey = a\n", "t.conf:4: match:");
    load_err(GW "[policy a]\nmatch = /a/{x}\n\n; comment\nkey = a:{x}:{y}\n",
             "t.conf:7: key template names capture '{y}'");
    load_err(GW "[policy a]\nkey = a:{y}\nmatch = /a/{x}\n", "t.conf:4: key template names");
    load_err(GW "[policy a]\nmatch = /a/{x}\nkey = a:{x}\n\n[policy b]\nmatch = /b\nkey = b\n"
                "[policy a]\n",
             "t.conf:10: duplicate policy 'a' (first defined at line 3)");
    load_err("", "t.conf: [gateway] upstream is required");
    static const char *const bad_urls[] = {
        "http://",        "https://",   "http://a b", "http://:80",     "http://h:0",
        "http://h:65536", "http://h:x", "http://h:",  "HTTP://h",       "http://[::1",
        "http://[]:1",    "//h:1",      "http:/h",    "http://h:1\x01", "https://h:443/p/q",
        "http://u@h:1/",  "http://h?x"};
    for (size_t i = 0; i < sizeof bad_urls / sizeof *bad_urls; i++) {
        char text[256];
        snprintf(text, sizeof text, "[gateway]\nupstream = %s\n", bad_urls[i]);
        load_err(text, "t.conf:2: upstream:");
    }
    load_err("[gateway]\nupstream = https://h\n",
             "t.conf:2: upstream: 'https://h': https upstreams are not supported");
    load_err("[gateway]\nupstream = http://user:pw@h\n",
             "t.conf:2: upstream: 'http://user:***@h': credentials in the upstream URL");
    static const char *const good_urls[] = {"http://h", "http://h:443/p/q", "http://h:1/",
                                            "http://[::1]:80", "http://h:65535"};
    for (size_t i = 0; i < sizeof good_urls / sizeof *good_urls; i++) {
        char text[256];
        snprintf(text, sizeof text, "[gateway]\nupstream = %s\n", good_urls[i]);
        fg_config_free(load_ok(text));
    }
    load_err(GW "state = sqlite:\n", "t.conf:3: state:");
    load_err(GW "state = redis\n", "t.conf:3: state:");
    load_err(GW "state = redis://h :1\n", "t.conf:3: state:");
}

Test(config, syntax_details)
{
    /* a byte order mark, CRLF line ends, indentation and comments are fine */
    fg_config_t *c = load_ok("\xEF\xBB\xBF[gateway]\r\n  upstream = http://h:1 ; c\r\n"
                             "# comment\r\n; comment\r\n[policy  p]\r\n\tmatch = /p/{x}\r\n"
                             "\tkey = p:{x}\r\n");
    cr_assert_str_eq(c->upstream, "http://h:1");
    cr_assert_str_eq(c->policies[0].name, "p");
    cr_assert_str_eq(c->policies[0].key_src, "p:{x}");
    fg_config_free(c);
    /* the longest line that fits in inih's buffer: 198 characters and a newline */
    char text[1024], v[256];
    memset(v, 'a', sizeof v);
    int pre = (int)strlen("admin_token_file = /");
    v[198 - pre] = '\0';
    snprintf(text, sizeof text, GW "admin_token_file = /%s\n", v);
    c = load_ok(text);
    cr_assert_eq(strlen(c->admin_token_file), 198 - strlen("admin_token_file = "));
    fg_config_free(c);
    v[198 - pre] = 'a';
    v[199 - pre] = '\0';
    snprintf(text, sizeof text, GW "admin_token_file = /%s\n", v);
    load_err(text, "t.conf:3: line too long (at most 198 characters)");
    /* a long comment is refused too: nothing is ever silently split */
    memset(v, ';', 250);
    v[250] = '\0';
    snprintf(text, sizeof text, GW "%s\n", v);
    load_err(text, "t.conf:3: line too long");
}

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/fg-test-config-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

Test(config, from_a_file)
{
    fg_config_t *c = NULL;
    char err[FG_CONFIG_ERR_LEN] = "";
    cr_assert_eq(fg_config_load("/nonexistent/fg.conf", &c, err, sizeof err), FG_EIO);
    cr_assert_null(c);
    cr_assert(strncmp(err, "/nonexistent/fg.conf: cannot open", 33) == 0, "%s", err);

    char *path = write_tmp(GW "[policy a]\nmatch = /a/{x}\nkey = a:{x}");
    cr_assert_eq(fg_config_load(path, &c, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(c->file, path);
    cr_assert_str_eq(c->policies[0].key_src, "a:{x}", "last line without newline");
    fg_config_free(c);
    unlink(path);

    /* a last line of 199 characters with no newline still fits the buffer */
    char text[512], v[256];
    memset(v, 'a', sizeof v);
    v[199 - strlen("admin_token_file = ")] = '\0';
    snprintf(text, sizeof text, GW "admin_token_file = %s", v);
    path = write_tmp(text);
    cr_assert_eq(fg_config_load(path, &c, err, sizeof err), 0, "%s", err);
    fg_config_free(c);
    unlink(path);
    /* ...but one more character does not, and the message names the file and line */
    snprintf(text, sizeof text, GW "admin_token_file = %sb", v);
    path = write_tmp(text);
    cr_assert_eq(fg_config_load(path, &c, err, sizeof err), FG_ECONFIG);
    char want[128];
    snprintf(want, sizeof want, "%s:3: line too long", path);
    cr_assert(strncmp(err, want, strlen(want)) == 0, "%s", err);
    unlink(path);
}

Test(config, is_read_is_case_sensitive)
{
    fg_config_t *c = load_ok(GW "[policy a]\nmatch = /a\nkey = a\nread_methods = GET  report\n");
    const fg_policy_t *p = &c->policies[0];
    cr_assert_eq(p->n_read_methods, 2);
    cr_assert(fg_policy_is_read(p, "GET"));
    cr_assert(fg_policy_is_read(p, "report"));
    cr_assert_not(fg_policy_is_read(p, "REPORT"));
    cr_assert_not(fg_policy_is_read(p, "Get"));
    cr_assert_not(fg_policy_is_read(p, "GET "));
    cr_assert_not(fg_policy_is_read(p, ""));
    cr_assert_not(fg_policy_is_read(p, "HEAD"));
    fg_config_free(c);
}

Test(config, durations_and_sizes)
{
    uint64_t v;
    cr_assert_eq(fg_config_parse_duration("250ms", &v), 0);
    cr_assert_eq(v, 250);
    cr_assert_eq(fg_config_parse_duration("5s", &v), 0);
    cr_assert_eq(v, 5000);
    cr_assert_eq(fg_config_parse_duration("2m", &v), 0);
    cr_assert_eq(v, 120000);
    cr_assert_eq(fg_config_parse_duration("7", &v), 0);
    cr_assert_eq(v, 7000);
    cr_assert_eq(fg_config_parse_duration("30d", &v), 0);
    cr_assert_eq(v, 30ULL * 86400000);
    cr_assert_eq(fg_config_parse_duration("5 s", &v), FG_ECONFIG);
    cr_assert_eq(fg_config_parse_duration("s", &v), FG_ECONFIG);
    cr_assert_eq(fg_config_parse_duration("1.5s", &v), FG_ECONFIG);
    cr_assert_eq(fg_config_parse_duration("99999999999999999999d", &v), FG_ECONFIG);
    cr_assert_eq(fg_config_parse_size("64k", &v), 0);
    cr_assert_eq(v, 65536);
    cr_assert_eq(fg_config_parse_size("10m", &v), 0);
    cr_assert_eq(v, 10485760);
    cr_assert_eq(fg_config_parse_size("1g", &v), 0);
    cr_assert_eq(v, 1073741824);
    cr_assert_eq(fg_config_parse_size("1t", &v), FG_ECONFIG);
}

Test(config, hostport)
{
    char h[64];
    unsigned p;
    cr_assert_eq(fg_config_split_hostport("127.0.0.1:8080", h, sizeof h, &p), 0);
    cr_assert_str_eq(h, "127.0.0.1");
    cr_assert_eq(p, 8080);
    cr_assert_eq(fg_config_split_hostport("[::1]:81", h, sizeof h, &p), 0);
    cr_assert_str_eq(h, "::1");
    cr_assert_eq(fg_config_split_hostport("::1:81", h, sizeof h, &p), FG_ECONFIG);
    cr_assert_eq(fg_config_split_hostport("host", h, sizeof h, &p), FG_ECONFIG);
    cr_assert_eq(fg_config_split_hostport("host:70000", h, sizeof h, &p), FG_ECONFIG);
}

Test(config, first_policy_in_file_order_wins)
{
    fg_config_t *c = load_ok(GW "[policy specific]\nmatch = /o/special\nkey = s\n"
                                "[policy general]\nmatch = /o/{id}\nkey = o:{id}\n"
                                "[policy shadowed]\nmatch = /o/{x}\nkey = never:{x}\n"
                                "[policy rest]\nmatch = /o/{a}/{r*}\nkey = r:{a}:{r}\n");
    fg_captures_t caps;
    const fg_policy_t *p = fg_config_match(c, "/o/special", 10, &caps);
    cr_assert_str_eq(p->name, "specific");
    p = fg_config_match(c, "/o/1", 4, &caps);
    cr_assert_str_eq(p->name, "general");
    p = fg_config_match(c, "/o/1/2/3", 8, &caps);
    cr_assert_str_eq(p->name, "rest");
    cr_assert_null(fg_config_match(c, "/x", 2, &caps));
    cr_assert_null(fg_config_match(c, "/o/1/", 5, &caps), "exact: no trailing-slash forgiveness");
    fg_config_free(c);
}

Test(config, header_after_vertical_whitespace_is_a_header)
{
    /* found by fuzz_config: inih skips \v \f \r before '[' as it skips spaces, so
     * "\f[policy b]" must open policy b here too, not leave its keys in policy a */
    static const char *const ws[] = {"\f", "\v", "\r", " \f\t"};
    for (size_t i = 0; i < sizeof ws / sizeof *ws; i++) {
        char text[256];
        snprintf(text, sizeof text,
                 GW "[policy a]\n%s[policy b]\nmatch = /b\nkey = b\nmode = off\n", ws[i]);
        load_err(text, "t.conf:3: [policy a] needs 'match'");
        snprintf(text, sizeof text,
                 GW "[policy a]\nmatch = /a\nkey = a\n%s[policy b]\nmatch = /b\n"
                    "key = b\nmode = off\n",
                 ws[i]);
        fg_config_t *c = load_ok(text);
        cr_assert_eq(c->n_policies, 2);
        cr_assert_str_eq(c->policies[1].name, "b");
        cr_assert_eq(c->policies[0].mode, FG_MODE_ENFORCE);
        cr_assert_eq(c->policies[1].mode, FG_MODE_OFF);
        fg_config_free(c);
    }
    /* the fuzzer's minimized input: "\v[]" was no section here, so it loaded */
    load_err("[gateway]\n\v[]\nupstream=http://c", "t.conf:2: unknown section []");
}
