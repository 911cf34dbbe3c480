/*
 * url.h -- the one place that turns a URL with a secret into one fit for a log.
 *
 * State URLs carry passwords (`redis://:pw@host`, `postgres://u:pw@host/db`,
 * `postgres://host/db?password=pw`). Every log line, error text and /readyz
 * detail that names a URL goes through fg_url_redact() (SPEC STYLE 14).
 */
#ifndef FG_URL_H
#define FG_URL_H

#include <stddef.h>

/*
 * A copy of `url` with the password of its userinfo (`user:PASSWORD@`) and the
 * value of every `password=` query parameter (any case) replaced by "***".
 * Anything else is kept. Returns a malloc'd string the caller frees, or NULL
 * when out of memory. NULL in, NULL out.
 */
char *fg_url_redact(const char *url);

#endif
