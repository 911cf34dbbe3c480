/*
 * log.c -- JSON log lines on stderr. See log.h.
 */
#include "gateway/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/store.h"

static fg_log_level_t min_level = FG_LOG_INFO;

static const char *level_name(fg_log_level_t l)
{
    switch (l) {
    case FG_LOG_DEBUG:
        return "debug";
    case FG_LOG_INFO:
        return "info";
    case FG_LOG_WARN:
        return "warn";
    default:
        return "error";
    }
}

void fg_log_set_level(fg_log_level_t lvl)
{
    min_level = lvl;
}

void fg_log(fg_log_level_t lvl, const char *msg, json_t *fields)
{
    if (lvl < min_level) {
        json_decref(fields);
        return;
    }
    char ts[40];
    fg_format_time(fg_now_wall_ms(), ts, sizeof ts);
    json_t *o = json_object();
    if (!o) {
        json_decref(fields);
        return;
    }
    json_object_set_new(o, "time", json_string(ts));
    json_object_set_new(o, "level", json_string(level_name(lvl)));
    json_object_set_new(o, "msg", json_string(msg));
    if (fields) json_object_update(o, fields);
    json_decref(fields);
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!line) return;
    size_t n = strlen(line);
    char *buf = realloc(line, n + 2);
    if (!buf) {
        free(line);
        return;
    }
    buf[n] = '\n';
    size_t off = 0;
    while (off < n + 1) {
        ssize_t w = write(STDERR_FILENO, buf + off, n + 1 - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    free(buf);
}

static __thread uint64_t refusal_window;
static __thread unsigned refusals_in_window, refusals_suppressed;

bool fg_log_refusal_allowed(void)
{
    uint64_t sec = fg_now_mono_ms() / 1000;
    if (sec != refusal_window) {
        refusal_window = sec;
        refusals_in_window = 0;
    }
    if (++refusals_in_window > FG_LOG_REFUSALS_PER_S) {
        refusals_suppressed++;
        return false;
    }
    return true;
}

void fg_log_refusal(fg_log_level_t lvl, const char *msg, json_t *fields)
{
    if (fields && refusals_suppressed) {
        json_object_set_new(fields, "suppressed_before", json_integer(refusals_suppressed));
        refusals_suppressed = 0;
    }
    fg_log(lvl, msg, fields);
}

void fg_logf(fg_log_level_t lvl, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fg_log(lvl, msg, NULL);
}
