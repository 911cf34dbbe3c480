/*
 * decide.c -- SPEC steps 1-6: path, policy, read or write, token. See decide.h.
 *
 * Step 7 (the store's atomic check) and step 8 (ordering) need the store and
 * the other requests, so they are the gateway's; everything before them is
 * here, in SPEC order, one early return per outcome.
 */
#include "policy/decide.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "policy/error.h"
#include "policy/path.h"
#include "policy/token.h"

bool fg_decide_default_read(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "OPTIONS") == 0;
}

static int forward(fg_decision_t *d, fg_class_t cls)
{
    d->action = FG_ACT_FORWARD;
    d->cls = cls;
    return 0;
}

__attribute__((format(printf, 6, 7))) static void refuse(fg_decision_t *d, fg_class_t cls,
                                                         int status, const char *type,
                                                         const char *title, const char *fmt, ...)
{
    d->action = FG_ACT_REFUSE;
    d->cls = cls;
    d->status = status;
    d->type = type;
    d->title = title;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->detail, sizeof d->detail, fmt, ap);
    va_end(ap);
}

int fg_decide(const fg_config_t *cfg, const char *method, const char *target, size_t target_len,
              const fg_header_view_t *hv, char *path_buf, size_t path_cap, char *key_buf,
              fg_decision_t *d)
{
    memset(d, 0, sizeof *d);
    if (path_cap < target_len + 1) return FG_EINVAL;

    /* step 1: one spelling per path, or a refusal */
    if (target_len > FG_PATH_MAX) {
        refuse(d, FG_CLASS_NON_CANONICAL, 414, "uri-too-long", "Request target too long",
               "the request target is longer than %d bytes", FG_PATH_MAX);
        return 0;
    }
    fg_path_t p;
    const char *why = "invalid request target";
    if (fg_path_canonicalize(target, target_len, path_buf, path_cap, &p, &why) != 0) {
        refuse(d, FG_CLASS_NON_CANONICAL, 400, "non-canonical-path", "Non-canonical request path",
               "%s", why);
        return 0;
    }
    d->path = p.path;
    d->path_len = p.path_len;
    d->query = p.query;
    d->query_len = p.query_len;

    /* steps 3-5: the first policy that matches, reads, unmatched writes */
    fg_captures_t caps;
    const fg_policy_t *pol = fg_config_match(cfg, d->path, d->path_len, &caps);
    if (!pol) {
        if (fg_decide_default_read(method)) return forward(d, FG_CLASS_READ);
        if (cfg->unmatched_forward) return forward(d, FG_CLASS_UNCHECKED);
        refuse(d, FG_CLASS_UNMATCHED, 403, "unmatched-write", "Write matches no policy",
               "no policy matches %s %.200s", method, d->path);
        return 0;
    }
    d->policy = pol;
    if (fg_policy_is_read(pol, method)) return forward(d, FG_CLASS_READ);
    if (pol->mode == FG_MODE_OFF) return forward(d, FG_CLASS_UNCHECKED);
    if (fg_keytmpl_expand(pol->key, &caps, key_buf, FG_KEY_MAX) < 0) {
        refuse(d, FG_CLASS_NON_CANONICAL, 400, "non-canonical-path", "Non-canonical request path",
               "the resource key would be longer than %d bytes", FG_KEY_MAX - 1);
        return 0;
    }
    d->key = key_buf;

    /* step 6: exactly one well-formed token */
    bool report = pol->mode == FG_MODE_REPORT_ONLY;
    const char *tv = NULL;
    int n = hv->count(hv->ctx, pol->token_header, &tv);
    if (n == 0) {
        if (pol->missing_forward) return forward(d, FG_CLASS_UNCHECKED);
        if (report) return forward(d, FG_CLASS_REPORT_ONLY);
        refuse(d, FG_CLASS_MISSING, 428, "missing-token", "Missing fencing token",
               "a write to %.200s needs a %s header", d->key, pol->token_header);
        return 0;
    }
    if (n > 1 || !tv || fg_token_parse(tv, strlen(tv), &d->token) != 0) {
        if (report) return forward(d, FG_CLASS_REPORT_ONLY);
        if (n > 1)
            refuse(d, FG_CLASS_MALFORMED, 400, "malformed-token", "Malformed fencing token",
                   "exactly one %s header is allowed, got %d", pol->token_header, n);
        else
            refuse(d, FG_CLASS_MALFORMED, 400, "malformed-token", "Malformed fencing token",
                   "%s must be 1 to 20 ASCII digits with a value at most 18446744073709551615",
                   pol->token_header);
        return 0;
    }
    d->has_token = true;
    d->action = FG_ACT_CHECK;
    d->cls = FG_CLASS_FENCED;
    return 0;
}
