/* url.c -- password redaction for URLs in logs. See url.h. */
#include "policy/url.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MASK "***"

/* Append n bytes; the buffer was sized for the worst case by the caller. */
static char *put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

char *fg_url_redact(const char *url)
{
    if (!url) return NULL;
    size_t len = strlen(url);
    /* every masked part is at least one byte long or gains at most 3 bytes;
     * a URL has fewer than len/2 + 1 masked parts */
    char *out = malloc(len + 3 * (len / 2 + 1) + 1);
    if (!out) return NULL;
    char *o = out;
    const char *p = url;
    const char *ss = strstr(url, "://");
    if (ss) {
        const char *auth = ss + 3;
        size_t alen = strcspn(auth, "/?#");
        const char *at = NULL;
        for (const char *q = auth; q < auth + alen; q++)
            if (*q == '@') at = q; /* the last '@' ends the userinfo */
        const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        if (colon) {
            o = put(o, url, (size_t)(colon + 1 - url));
            o = put(o, MASK, 3);
            p = at;
        }
    }
    const char *query = strchr(p, '?');
    if (!query) {
        o = put(o, p, strlen(p));
        *o = '\0';
        return out;
    }
    o = put(o, p, (size_t)(query + 1 - p));
    for (const char *q = query + 1; *q;) {
        size_t n = strcspn(q, "&#");
        const char *eq = memchr(q, '=', n);
        if (eq && (size_t)(eq - q) == 8 && strncasecmp(q, "password", 8) == 0) {
            o = put(o, q, 9);
            o = put(o, MASK, 3);
        } else {
            o = put(o, q, n);
        }
        q += n;
        if (*q) *o++ = *q++;
    }
    *o = '\0';
    return out;
}
