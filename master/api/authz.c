/*
 * authz.c - who may act on what, once the route's role let the caller in
 * (docs/api.md, "Who may do what").
 *
 * The model: two roles, the admin (the token in DIR/admin.token) and
 * committers (tokens made by `tf-master user add`). A committer acts on
 * their own jobs, requests and builds: the owner of a request is the
 * email of whoever made it (a forced or rebuilt request: its caller; a
 * try job's: its author; the admin's: "admin"; a scheduler's: nobody).
 * Forcing a builder, or rebuilding a build that is not one's own, is for
 * the admin and the committers a builder names in force_allowed. A
 * committer forcing a build may set only the properties the builder
 * lists in force_properties; the admin may set any.
 *
 * Slaves authenticate their patch downloads with an HMAC of the request
 * made with their secret, valid for a few minutes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/handlers.h"
#include "clock.h"
#include "core/master.h"
#include "crypto.h"
#include "names.h"
#include "util.h"

#define SLAVE_AUTH_SKEW_S 300

bool tf_api_may_act(tf_http_req_t *r, const char *owner, const char *what)
{
    if (r->admin)
        return true;
    if (r->user.id != 0 && owner && owner[0] &&
        strcmp(owner, r->user.email) == 0)
        return true;
    tf_http_error(r, 403, "%s belongs to %s: only its owner or an admin "
                  "may act on it", what,
                  owner && owner[0] ? owner : "nobody (a scheduler)");
    return false;
}

static bool listed(char *const *v, size_t n, const char *email)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], "*") == 0 || strcmp(v[i], email) == 0)
            return true;
    return false;
}

bool tf_api_may_force(tf_http_req_t *r, const tf_cfg_builder_t *b,
                      const char *action)
{
    if (r->admin)
        return true;
    if (r->user.id != 0 &&
        listed(b->force_allowed, b->nforce_allowed, r->user.email))
        return true;
    tf_http_error(r, 403, "%s builder \"%s\" needs the admin token or a "
                  "committer named in its force_allowed list", action,
                  b->name);
    return false;
}

bool tf_api_props_allowed(tf_http_req_t *r, const tf_cfg_builder_t *b,
                          json_t *props)
{
    if (r->admin || !props)
        return true;
    const char *key;
    json_t *v;
    json_object_foreach(props, key, v)
    {
        bool ok = false;
        for (size_t i = 0; !ok && i < b->nforce_properties; i++)
            ok = strcmp(b->force_properties[i], key) == 0;
        if (ok)
            continue;
        tf_buf_t allowed;
        tf_buf_init(&allowed, 2048);
        for (size_t i = 0; i < b->nforce_properties; i++)
            tf_buf_printf(&allowed, "%s%s", i ? ", " : "",
                          b->force_properties[i]);
        tf_http_error(r, 400, "properties.%.64s: committers may not set "
                      "this property on builder \"%s\" (allowed: %.*s)",
                      key, b->name, allowed.len ? (int)allowed.len : 4,
                      allowed.len ? (char *)allowed.data : "none");
        tf_buf_free(&allowed);
        return false;
    }
    return true;
}

/* "TF-Slave name=N,time=T,sig=HEX" where sig is
 * HMAC-SHA256(secret, "GET PATH\nT") and T within a few minutes of now. */
bool tf_api_slave_auth_ok(tf_http_req_t *r)
{
    tf_master_t *m = r->m;
    const char *hdr = r->auth_raw, *path = r->path;
    char name[TF_NAME_MAX + 1] = "", t[24] = "", sig[TF_SHA256_HEX_LEN + 1] =
        "";
    if (strncmp(hdr, "TF-Slave ", 9) != 0)
        return false;
    const char *p = hdr + 9;
    while (*p) {
        const char *eq = strchr(p, '=');
        if (!eq)
            return false;
        const char *end = strchr(eq + 1, ',');
        size_t klen = (size_t)(eq - p);
        size_t vlen = end ? (size_t)(end - eq - 1) : strlen(eq + 1);
        char *dst = NULL;
        size_t cap = 0;
        if (klen == 4 && strncmp(p, "name", 4) == 0)
            dst = name, cap = sizeof(name);
        else if (klen == 4 && strncmp(p, "time", 4) == 0)
            dst = t, cap = sizeof(t);
        else if (klen == 3 && strncmp(p, "sig", 3) == 0)
            dst = sig, cap = sizeof(sig);
        if (dst) {
            if (vlen >= cap)
                return false;
            memcpy(dst, eq + 1, vlen);
            dst[vlen] = '\0';
        }
        p = end ? end + 1 : eq + 1 + vlen;
    }
    const tf_cfg_slave_t *s = tf_config_slave(m->cfg, name);
    int64_t when = 0;
    if (!s || tf_parse_i64(t, &when) != 0)
        return false;
    int64_t now = tf_now_ms() / 1000;
    if (when < now - SLAVE_AUTH_SKEW_S || when > now + SLAVE_AUTH_SKEW_S)
        return false;
    char msg[600], expect[TF_SHA256_HEX_LEN + 1];
    int n = snprintf(msg, sizeof(msg), "GET %s\n%s", path, t);
    tf_hmac_sha256_hex(s->secret, strlen(s->secret), msg, (size_t)n, expect);
    return tf_ct_streq(expect, sig);
}
