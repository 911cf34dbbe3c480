/*
 * main.c -- the fencegate command line (SPEC "Command line").
 *
 * Parses arguments, loads the config, starts the gateway, then waits for
 * signals on this thread: SIGHUP reloads (a bad file keeps the old policies),
 * SIGTERM/SIGINT drain and exit 0.
 *
 * Under systemd (Type=notify, conf/fencegate.service) each of these steps is
 * also told to the service manager through sd_notify: READY=1 once serving,
 * RELOADING=1 then READY=1 around a reload, STOPPING=1 when draining. Built
 * without libsystemd, or run outside a notify service, that is a no-op.
 */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef FG_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "gateway/gateway.h"
#include "gateway/log.h"
#include "gateway/token_file.h"
#include "policy/config.h"
#include "policy/error.h"
#include "policy/url.h"

#define DRAIN_MS 30000

/* Tell the service manager `fmt` (newline-separated VAR=value lines). Errors
 * are ignored: a manager that cannot be told times the service out itself. */
__attribute__((format(printf, 1, 2))) static void notify(const char *fmt, ...)
{
#ifdef FG_HAVE_SYSTEMD
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sd_notify(0, msg);
#else
    (void)fmt;
#endif
}

/* CLOCK_MONOTONIC in µs: with RELOADING=1, systemd (253 and later) matches
 * the READY=1 that follows to this reload. */
static unsigned long long monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000u + (unsigned long long)ts.tv_nsec / 1000u;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: fencegate -c FILE [-t]\n"
               "  -c FILE     run with the configuration FILE\n"
               "  -t          only check the configuration and exit (0 = valid)\n"
               "  --version   print the version\n"
               "  --help      this text\n"
               "Signals: SIGHUP reloads policies, SIGTERM drains and exits.\n");
}

int main(int argc, char **argv)
{
    const char *conf = NULL;
    bool test_only = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            conf = argv[++i];
        } else if (strcmp(argv[i], "-t") == 0) {
            test_only = true;
        } else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0) {
            printf("fencegate %s\n", FG_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "fencegate: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!conf) {
        usage(stderr);
        return 2;
    }
    char err[FG_CONFIG_ERR_LEN];
    fg_config_t *cfg = NULL;
    if (fg_config_load(conf, &cfg, err, sizeof err) != 0) {
        if (test_only)
            fprintf(stderr, "fencegate: %s\n", err);
        else
            fg_log(FG_LOG_ERROR, "invalid configuration", json_pack("{s:s}", "error", err));
        return 1;
    }
    if (test_only) {
        /* the token file is part of what a start would refuse */
        if (cfg->admin_token_file && cfg->admin_token_file[0]) {
            static char tok[FG_TOKEN_FILE_MAX + 1];
            size_t len;
            bool loose;
            int trc = fg_token_file_read(cfg->admin_token_file, tok, &len, &loose, err, sizeof err);
            memset(tok, 0, sizeof tok);
            if (trc) {
                fprintf(stderr, "fencegate: %s\n", err);
                fg_config_free(cfg);
                return 1;
            }
            if (loose)
                fprintf(stderr,
                        "fencegate: warning: admin_token_file %s is readable by group or "
                        "others\n",
                        cfg->admin_token_file);
        }
        printf("fencegate: configuration %s is valid (%zu policies)\n", conf, cfg->n_policies);
        fg_config_free(cfg);
        return 0;
    }

    /* Signals are taken synchronously on this thread; every other thread
     * inherits the blocked mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    char listen[256], admin[256], state[512];
    snprintf(listen, sizeof listen, "%s", cfg->listen);
    snprintf(admin, sizeof admin, "%s", cfg->admin_listen ? cfg->admin_listen : "");
    char *shown = fg_url_redact(cfg->state); /* never log a password */
    snprintf(state, sizeof state, "%s", shown ? shown : "");
    free(shown);
    fg_gateway_t *gw = NULL;
    char serr[512] = "";
    int rc = fg_gateway_start(cfg, &gw, serr, sizeof serr);
    if (rc) {
        fg_log(FG_LOG_ERROR, "cannot start",
               json_pack("{s:s,s:s}", "error", serr[0] ? serr : fg_strerror(rc), "code",
                         fg_err_name(rc)));
        return 1;
    }
    fg_log(FG_LOG_INFO, "fencegate started",
           json_pack("{s:s,s:s,s:s,s:s,s:s}", "version", FG_VERSION, "listen", listen, "admin",
                     admin, "state", state, "config", conf));
    notify("READY=1\nSTATUS=serving on %s", listen);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0) continue;
        if (sig == SIGHUP) {
            notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading %s", monotonic_usec(), conf);
            fg_config_t *ncfg = NULL;
            if (fg_config_load(conf, &ncfg, err, sizeof err) != 0) {
                fg_log(FG_LOG_ERROR, "reload failed; keeping the running policies",
                       json_pack("{s:s}", "error", err));
                notify("READY=1\nSTATUS=serving on %s; reload failed, see the log", listen);
                continue;
            }
            size_t np = ncfg->n_policies;
            fg_gateway_reload(gw, ncfg);
            fg_log(FG_LOG_INFO, "configuration reloaded",
                   json_pack("{s:s,s:I}", "config", conf, "policies", (json_int_t)np));
            notify("READY=1\nSTATUS=serving on %s", listen);
            continue;
        }
        fg_log(FG_LOG_INFO, "draining", json_pack("{s:s}", "signal", strsignal(sig)));
        notify("STOPPING=1\nSTATUS=draining");
        break;
    }
    fg_gateway_drain(gw, DRAIN_MS);
    fg_gateway_free(gw);
    fg_log(FG_LOG_INFO, "stopped", NULL);
    return 0;
}
