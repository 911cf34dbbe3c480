/*
 * test_stream.c -- bodies are streamed, never held whole: a 256 MiB PUT goes
 * through with the gateway's peak RSS (VmHWM) under 64 MiB, and arrives intact
 * (size and FNV-1a hash as the upstream computed them); a large response comes
 * back intact too.
 */
#include <inttypes.h>

#include "gw_common.h"

static env_t E;

static uint64_t fnv1a64(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

Test(stream, put_256mib_bounded_rss, .timeout = 300)
{
    env_start(&E, STORE_SQLITE, 0, NULL, NULL);
    size_t n = (size_t)256 << 20;
    unsigned char *body = malloc(n);
    cr_assert(body);
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < n; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(body + i, &x, 8);
    }
    uint64_t want = fnv1a64(body, n);
    char url[256];
    snprintf(url, sizeof url, "%s/orders/big", E.gw.url);
    const char *h[] = {"Fencing-Token: 1", NULL};
    fgt_resp_t r = fgt_http("PUT", url, h, (const char *)body, n);
    free(body);
    cr_assert_eq(r.status, 200, "status %ld curl %d %s", r.status, r.curl_err,
                 r.body ? r.body : "");
    fgt_resp_free(&r);
    long hwm_kib = fgt_vm_hwm_kib(E.gw.proc.pid);
    cr_log_info("gateway VmHWM after a 256 MiB PUT: %ld KiB", hwm_kib);
    fprintf(stderr, "gateway VmHWM after a 256 MiB PUT: %ld KiB\n", hwm_kib);
    cr_assert_gt(hwm_kib, 0);
    cr_assert_lt(hwm_kib, 64 * 1024, "peak RSS %ld KiB: the body was buffered", hwm_kib);
    json_t *log = fgt_upstream_log(&E.up);
    json_t *w = json_array_get(log, json_array_size(log) - 1);
    cr_assert_eq((uint64_t)json_integer_value(json_object_get(w, "size")), (uint64_t)n);
    char hex[17];
    snprintf(hex, sizeof hex, "%016" PRIx64, want);
    cr_assert_str_eq(json_string_value(json_object_get(w, "fnv1a64")), hex,
                     "the body arrived altered");
    json_decref(log);
    env_stop(&E);
}

Test(stream, response_body_intact, .timeout = 120)
{
    env_start(&E, STORE_SQLITE, 0, NULL, NULL);
    size_t n = 900 * 1024; /* the demo store keeps values up to 1 MiB */
    char *body = malloc(n + 1);
    for (size_t i = 0; i < n; i++) body[i] = (char)('a' + (i * 7 + i / 977) % 26);
    body[n] = '\0';
    char url[256];
    snprintf(url, sizeof url, "%s/orders/resp", E.gw.url);
    const char *h[] = {"Fencing-Token: 1", NULL};
    fgt_resp_t r = fgt_http("PUT", url, h, body, n);
    cr_assert_eq(r.status, 200);
    fgt_resp_free(&r);
    r = fgt_http("GET", url, NULL, NULL, 0);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body_len, n);
    cr_assert(memcmp(r.body, body, n) == 0, "response body altered");
    fgt_resp_free(&r);
    free(body);
    env_stop(&E);
}
