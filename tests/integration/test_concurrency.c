/*
 * test_concurrency.c -- a slow upstream must not stop writes to other
 * resources: 1,000 client connections are open, 500 of them waiting on
 * writes the upstream holds until the test releases them, 500 idle; all 100
 * writes to other resources finish while the 500 are still held (an ordering
 * that holds on any machine, however loaded), then the held ones finish too.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gw_common.h"
#include "storage/store.h"

#define SLOW 500
#define IDLE 500

static env_t E;
static int slow_ok;

static void *drive_slow(void *arg)
{
    (void)arg;
    CURLM *m = curl_multi_init();
    CURL *h[SLOW];
    struct curl_slist *hdr[SLOW];
    for (int i = 0; i < SLOW; i++) {
        char url[128], tok[64];
        snprintf(url, sizeof url, "%s/orders/slow%d", E.gw.url, i);
        snprintf(tok, sizeof tok, "Fencing-Token: %d", i + 1);
        hdr[i] = curl_slist_append(NULL, tok);
        hdr[i] = curl_slist_append(hdr[i], "X-Hold: 1");
        hdr[i] = curl_slist_append(hdr[i], "Expect:");
        h[i] = curl_easy_init();
        curl_easy_setopt(h[i], CURLOPT_URL, url);
        curl_easy_setopt(h[i], CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(h[i], CURLOPT_POSTFIELDS, "slow");
        curl_easy_setopt(h[i], CURLOPT_HTTPHEADER, hdr[i]);
        curl_easy_setopt(h[i], CURLOPT_TIMEOUT, 120L);
        curl_easy_setopt(h[i], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h[i], CURLOPT_WRITEFUNCTION, NULL);
        FILE *devnull = fopen("/dev/null", "w");
        curl_easy_setopt(h[i], CURLOPT_WRITEDATA, devnull);
        curl_easy_setopt(h[i], CURLOPT_PRIVATE, devnull);
        curl_multi_add_handle(m, h[i]);
    }
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)SLOW);
    int running = 1, done = 0;
    CURLMsg *msg;
    int left;
    while (done < SLOW) {
        curl_multi_perform(m, &running);
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            done++;
            long st = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &st);
            if (msg->data.result == CURLE_OK && st == 200)
                slow_ok++;
            else
                fprintf(stderr, "slow write: curl %d status %ld\n", (int)msg->data.result, st);
        }
        if (done < SLOW) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < SLOW; i++) {
        FILE *f;
        curl_easy_getinfo(h[i], CURLINFO_PRIVATE, (char **)&f);
        fclose(f);
        curl_multi_remove_handle(m, h[i]);
        curl_easy_cleanup(h[i]);
        curl_slist_free_all(hdr[i]);
    }
    curl_multi_cleanup(m);
    return NULL;
}

Test(concurrency, slow_upstream_does_not_block_others, .timeout = 120)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
    setrlimit(RLIMIT_NOFILE, &rl);
    cr_assert_geq(rl.rlim_cur, 3000, "need file descriptors for 1,000 connections");
    env_start(&E, STORE_REDIS, 0,
              "max_connections = 4096\naccess_log = off\nupstream_timeout = 2m\n", NULL);
    /* 500 idle client connections */
    int idle[IDLE];
    for (int i = 0; i < IDLE; i++) {
        idle[i] = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)E.gw.port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        cr_assert_eq(connect(idle[i], (struct sockaddr *)&a, sizeof a), 0);
    }
    pthread_t th;
    pthread_create(&th, NULL, drive_slow, NULL);
    /* every slow write is at the upstream, held there until we release it */
    cr_assert(fgt_wait_upstream_stat(&E.up, "held", SLOW, 60000),
              "the slow writes did not all reach the upstream");
    uint64_t t0 = fg_now_mono_ms(), worst = 0;
    for (int i = 0; i < 100; i++) {
        char path[64], tok[16];
        snprintf(path, sizeof path, "/orders/fast%d", i % 10);
        snprintf(tok, sizeof tok, "%d", i + 1);
        uint64_t s = fg_now_mono_ms();
        cr_assert_eq(put_tok(&E, path, tok, "fast"), 200);
        if (fg_now_mono_ms() - s > worst) worst = fg_now_mono_ms() - s;
    }
    uint64_t took = fg_now_mono_ms() - t0;
    fprintf(stderr, "100 writes beside 500 held + 500 idle connections: %llu ms (worst %llu ms)\n",
            (unsigned long long)took, (unsigned long long)worst);
    /* the fast writes finished while every slow one was still held at the
     * upstream: none of them waited for the slow ones, however loaded the
     * machine is */
    cr_assert_eq(fgt_upstream_stat(&E.up, "held"), SLOW,
                 "a slow write finished before the fast ones: they were not independent");
    cr_assert_eq(slow_ok, 0);
    fgt_upstream_release(&E.up);
    pthread_join(th, NULL);
    cr_assert_eq(slow_ok, SLOW, "only %d of %d slow writes finished", slow_ok, SLOW);
    for (int i = 0; i < IDLE; i++) close(idle[i]);
    cr_assert_eq(upstream_writes(&E, NULL), SLOW + 100);
    env_stop(&E);
}
