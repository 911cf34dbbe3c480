/*
 * test_quarantine.c -- SPEC step 8 after an upstream timeout: the write that
 * got a 504 may still be applied, so its resource stays quarantined until the
 * upstream answers (or upstream_grace ends), and the next write of that
 * resource reaches the upstream only after it. The demo store records when
 * each write arrived and when it took effect (one monotonic clock on this
 * machine), so the test checks the order the store saw, not wall times.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <unistd.h>

#include "gw_common.h"

static env_t E;

/* The demo store's log entry for `token` on `path` (borrowed from `log`). */
static json_t *entry_of(json_t *log, const char *path, const char *token)
{
    size_t i;
    json_t *w;
    json_array_foreach(log, i, w)
    {
        const char *p = json_string_value(json_object_get(w, "path"));
        const char *t = json_string_value(json_object_get(w, "token"));
        if (p && t && strcmp(p, path) == 0 && strcmp(t, token) == 0) return w;
    }
    return NULL;
}

static long long ms_of(json_t *w, const char *what)
{
    return (long long)json_integer_value(json_object_get(w, what));
}

static long put_delayed(const char *path, const char *token, int delay_ms, fgt_resp_t *out)
{
    char url[256], tok[64], delay[64];
    snprintf(url, sizeof url, "%s%s", E.gw.url, path);
    snprintf(tok, sizeof tok, "Fencing-Token: %s", token);
    snprintf(delay, sizeof delay, "X-Delay-Ms: %d", delay_ms);
    const char *h[] = {tok, delay, NULL};
    fgt_resp_t r = fgt_http("PUT", url, h, "v", 1);
    long st = r.status;
    if (out)
        *out = r;
    else
        fgt_resp_free(&r);
    return st;
}

Test(quarantine, a_write_after_a_504_waits_for_the_answer, .timeout = 60)
{
    env_start(&E, STORE_SQLITE, 0,
              "upstream_timeout = 1s\nupstream_grace = 10s\nfence_wait = 20s\n", NULL);
    fgt_resp_t r;
    cr_assert_eq(put_delayed("/orders/q", "10", 3000, &r), 504);
    cr_assert(strstr(r.body, "urn:fencegate:problem:upstream-timeout"), "%s", r.body);
    cr_assert(strstr(r.body, "may or may not have been applied"), "%s", r.body);
    cr_assert(strstr(r.body, "may still be applied"), "%s", r.body);
    fgt_resp_free(&r);
    /* the next write of the resource, sent right after the 504 */
    cr_assert_eq(put_delayed("/orders/q", "11", 0, NULL), 200);
    json_t *log = fgt_upstream_log(&E.up);
    json_t *w10 = entry_of(log, "/orders/q", "10"), *w11 = entry_of(log, "/orders/q", "11");
    cr_assert(w10 && w11, "both writes reached the upstream");
    cr_assert(ms_of(w10, "applied_ms") > 0, "token 10 was applied");
    cr_assert_geq(ms_of(w11, "arrived_ms"), ms_of(w10, "applied_ms"),
                  "token 11 reached the upstream before token 10 took effect");
    json_decref(log);
    /* a write of another resource is not held by the quarantine */
    cr_assert_eq(put_delayed("/orders/other", "1", 0, NULL), 200);
    char hwm[32];
    cr_assert(hwm_of(&E, "order:q", hwm, sizeof hwm));
    cr_assert_str_eq(hwm, "11");
    env_stop(&E);
}

Test(quarantine, the_grace_ends_the_quarantine, .timeout = 60)
{
    env_start(&E, STORE_SQLITE, 0, "upstream_timeout = 1s\nupstream_grace = 2s\nfence_wait = 20s\n",
              NULL);
    cr_assert_eq(put_delayed("/orders/g", "20", 8000, NULL), 504);
    cr_assert_eq(put_delayed("/orders/g", "21", 0, NULL), 200);
    json_t *log = fgt_upstream_log(&E.up);
    json_t *w20 = entry_of(log, "/orders/g", "20"), *w21 = entry_of(log, "/orders/g", "21");
    cr_assert(w20 && w21);
    /* 21 left only when the quarantine ended: upstream_timeout + upstream_grace
     * after 20 reached the upstream (a lower bound, whatever the load) */
    cr_assert_geq(ms_of(w21, "arrived_ms") - ms_of(w20, "arrived_ms"), 3000,
                  "token 21 arrived %lld ms after token 20",
                  ms_of(w21, "arrived_ms") - ms_of(w20, "arrived_ms"));
    json_decref(log);
    char *glog = fgt_read_file(E.gw.proc.log);
    cr_assert(strstr(glog, "upstream_grace"), "the end of the quarantine is logged");
    free(glog);
    env_stop(&E);
}

/* A write whose client leaves once the whole request went out may still be
 * applied: the next write of the resource waits for its answer too. */
static void *impatient(void *arg)
{
    (void)arg;
    char url[256];
    snprintf(url, sizeof url, "%s/orders/c", E.gw.url);
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Fencing-Token: 30");
    h = curl_slist_append(h, "X-Delay-Ms: 2000");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "v");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 300L); /* leaves before the answer */
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_perform(c);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

Test(quarantine, a_client_that_leaves_does_not_free_the_resource_early, .timeout = 60)
{
    env_start(&E, STORE_SQLITE, 0, "upstream_timeout = 10s\nfence_wait = 20s\n", NULL);
    pthread_t th;
    pthread_create(&th, NULL, impatient, NULL);
    pthread_join(th, NULL);
    /* the write is at the upstream (it arrived; it is not applied yet) */
    cr_assert(fgt_wait_upstream_stat(&E.up, "writes", 1, 10000));
    cr_assert_eq(put_delayed("/orders/c", "31", 0, NULL), 200);
    json_t *log = fgt_upstream_log(&E.up);
    json_t *w30 = entry_of(log, "/orders/c", "30"), *w31 = entry_of(log, "/orders/c", "31");
    cr_assert(w30 && w31);
    cr_assert_geq(ms_of(w31, "arrived_ms"), ms_of(w30, "applied_ms"),
                  "token 31 overtook token 30 at the upstream");
    json_decref(log);
    env_stop(&E);
}
