/*
 * log.h -- one JSON object per line on stderr (SPEC "Command line").
 *
 * Log lines are built with jansson so that every string (paths, header
 * values, store errors) is escaped correctly; a line is written with one
 * write(2) so lines from different threads never interleave.
 */
#ifndef FG_LOG_H
#define FG_LOG_H

#include <jansson.h>
#include <stdbool.h>

typedef enum fg_log_level {
    FG_LOG_DEBUG = 0,
    FG_LOG_INFO,
    FG_LOG_WARN,
    FG_LOG_ERROR
} fg_log_level_t;

/* Minimum level written (default INFO). Not thread-safe against concurrent logging; set at start.
 */
void fg_log_set_level(fg_log_level_t lvl);

/*
 * Write one line: {"time","level","msg", ...fields}. `fields` may be NULL; the
 * reference is stolen (decref'd here). Never fails visibly: if the line cannot
 * be built, nothing is written.
 */
void fg_log(fg_log_level_t lvl, const char *msg, json_t *fields);

/*
 * Refusal lines are rate-limited, so that a flood of bad requests is not also
 * a flood on stderr: at most FG_LOG_REFUSALS_PER_S lines a second per thread
 * (each engine is one thread). Lines left out are counted, and the next line
 * written carries "suppressed_before": N. Takes `fields` like fg_log.
 */
#define FG_LOG_REFUSALS_PER_S 50
/* Whether the next refusal line may be written now; when not, it is counted
 * as left out. Ask before building the line: a flood costs no JSON. */
bool fg_log_refusal_allowed(void);
/* Write a refusal line (after fg_log_refusal_allowed said yes). */
void fg_log_refusal(fg_log_level_t lvl, const char *msg, json_t *fields);

/* Longest path written into a log line or an audit record; longer ones are
 * cut (and say so). */
#define FG_LOG_PATH_MAX 1024

/* printf-style convenience for lines without structured fields. */
void fg_logf(fg_log_level_t lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
