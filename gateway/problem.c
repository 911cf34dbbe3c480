/*
 * problem.c -- problem+json bodies with exact u64 members. See problem.h.
 */
#include "gateway/problem.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *fg_json_dumps_u64(const json_t *o, const fg_u64_field_t *f, size_t n, size_t *len)
{
    char *base = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!base) return NULL;
    size_t blen = strlen(base);
    /* each member: ,"name":18446744073709551615 */
    size_t extra = 0;
    for (size_t i = 0; i < n; i++) extra += strlen(f[i].name) + 32;
    char *out = malloc(blen + extra + 2);
    if (!out) {
        free(base);
        return NULL;
    }
    memcpy(out, base, blen - 1); /* drop the closing brace */
    size_t at = blen - 1;
    bool empty = blen == 2;
    free(base);
    for (size_t i = 0; i < n; i++) {
        int w;
        if (f[i].present)
            w = snprintf(out + at, extra + 2, "%s\"%s\":%" PRIu64, empty ? "" : ",", f[i].name,
                         f[i].value);
        else
            w = snprintf(out + at, extra + 2, "%s\"%s\":null", empty ? "" : ",", f[i].name);
        at += (size_t)w;
        empty = false;
    }
    out[at++] = '}';
    out[at] = '\0';
    if (len) *len = at;
    return out;
}

char *fg_problem_json(const fg_problem_t *p, size_t *len)
{
    json_t *o = json_object();
    if (!o) return NULL;
    char type[128];
    snprintf(type, sizeof type, "urn:fencegate:problem:%s", p->type);
    json_object_set_new(o, "type", json_string(type));
    json_object_set_new(o, "title", json_string(p->title));
    json_object_set_new(o, "status", json_integer(p->status));
    if (p->detail) json_object_set_new(o, "detail", json_string(p->detail));
    if (p->policy) json_object_set_new(o, "policy", json_string(p->policy));
    if (p->resource) json_object_set_new(o, "resource", json_string(p->resource));
    if (p->request_id) json_object_set_new(o, "request_id", json_string(p->request_id));
    fg_u64_field_t f[2];
    size_t n = 0;
    if (p->has_token || p->has_highest || p->resource) {
        f[n++] = (fg_u64_field_t){"token", p->has_token, p->token};
        f[n++] = (fg_u64_field_t){"highest", p->has_highest, p->highest};
    }
    char *s = fg_json_dumps_u64(o, f, n, len);
    json_decref(o);
    return s;
}
