/*
 * badge.c - GET /badge/BUILDER.svg: a small status picture for READMEs
 * and wiki pages, like the ones CI services serve (docs/api.md).
 *
 * The badge says the tree's state of one builder: "failing" while its
 * last complete continuous build is red (FAILURE, EXCEPTION), else
 * "building" while a continuous build runs, else "passing" after a green
 * one (SUCCESS, WARNINGS), else "unknown" (no build yet, or only
 * cancelled or skipped ones). Try builds never count. The SVG carries its
 * text for screen readers (role="img", aria-label and a <title>), and is
 * cacheable for 30 s: image proxies (GitHub's camo) ask again soon.
 *
 * tf_badge_svg is pure (data in, text out) so it is tested alone; the
 * handler reads the builder's summary row off the loop thread.
 */
#include "api/handlers.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/master.h"
#include "names.h"
#include "store/queries.h"
#include "tf_err.h"

/* Approximate width of a text in the badge's 11 px sans-serif font: the
 * badge only needs to be roomy enough, not exact. */
static unsigned text_px(const char *s)
{
    unsigned w = 0;
    for (; *s; s++)
        w += strchr("il.,:;|!'", *s) ? 4 : strchr("mwMW", *s) ? 10 : 7;
    return w;
}

int tf_badge_svg(const char *label, const char *status, char *out,
                 size_t cap)
{
    /* Colours with at least 4.5:1 contrast against the text on them. */
    const char *bg = strcmp(status, "passing") == 0    ? "#2e7d32"
                     : strcmp(status, "failing") == 0  ? "#c62828"
                     : strcmp(status, "building") == 0 ? "#1565c0"
                                                       : "#5f6368";
    unsigned lw = text_px(label) + 12, sw = text_px(status) + 12;
    int n = snprintf(
        out, cap,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%u\" "
        "height=\"20\" role=\"img\" aria-label=\"%s: %s\">"
        "<title>%s: %s</title>"
        "<rect width=\"%u\" height=\"20\" fill=\"#3c3c3c\"/>"
        "<rect x=\"%u\" width=\"%u\" height=\"20\" fill=\"%s\"/>"
        "<g fill=\"#fff\" font-family=\"DejaVu Sans,Verdana,Geneva,sans-serif\" "
        "font-size=\"11\" text-anchor=\"middle\">"
        "<text x=\"%u\" y=\"14\">%s</text>"
        "<text x=\"%u\" y=\"14\" class=\"status\">%s</text>"
        "</g></svg>\n",
        lw + sw, label, status, label, status, lw, lw, sw, bg, lw / 2, label,
        lw + sw / 2, status);
    if (n < 0 || (size_t)n >= cap)
        return TF_E2BIG;
    return n;
}

typedef struct badge_q {
    tf_http_req_t *r;
    char name[TF_NAME_MAX + 1];
    char base[512];
    json_t *out;
} badge_q_t;

static int badge_run(tf_db_t *db, void *arg)
{
    badge_q_t *q = arg;
    return tf_q_builder(db, q->base, q->name, &q->out);
}

/* Whether a continuous build of builder runs now (loop thread). */
static bool ci_running(tf_master_t *m, const char *builder)
{
    size_t pos = 0;
    void *v;
    while (tf_map_next(m->builds, &pos, NULL, NULL, &v) == 0) {
        const tf_build_t *b = v;
        if (b->state != TF_BUILD_ENDING && !b->is_try &&
            strcmp(b->builder, builder) == 0)
            return true;
    }
    return false;
}

static void badge_done(void *arg, int rc)
{
    badge_q_t *q = arg;
    tf_http_req_t *r = q->r;
    if (!tf_http_async_end(r))
        goto out;
    if (rc == TF_ENOENT) {
        tf_http_error(r, 404, "no such builder \"%s\"", q->name);
        goto out;
    }
    if (rc || !q->out) {
        tf_http_error(r, 500, "database read failed: %s", tf_strerror(rc));
        goto out;
    }
    json_t *last = json_object_get(q->out, "last_complete");
    const char *res = json_string_value(json_object_get(last, "result"));
    bool red = res && (!strcmp(res, "FAILURE") || !strcmp(res, "EXCEPTION"));
    bool green = res && (!strcmp(res, "SUCCESS") || !strcmp(res, "WARNINGS"));
    const char *status = red                       ? "failing"
                         : ci_running(r->m, q->name) ? "building"
                         : green                     ? "passing"
                                                     : "unknown";
    char svg[2048];
    int n = tf_badge_svg(q->name, status, svg, sizeof(svg));
    if (n < 0) {
        tf_http_error(r, 500, "cannot draw the badge");
        goto out;
    }
    tf_http_cache(r, "max-age=30");
    tf_http_respond(r, 200, "image/svg+xml", svg, (size_t)n);
out:
    json_decref(q->out);
    free(q);
}

void tf_api_badge(tf_http_req_t *r, const tf_route_args_t *a)
{
    static const char *const none[] = {NULL};
    if (!tf_api_args_only(r, none))
        return;
    badge_q_t *q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    q->r = r;
    snprintf(q->name, sizeof(q->name), "%s", a->name);
    snprintf(q->base, sizeof(q->base), "%s", r->m->cfg->public_url);
    if (!tf_api_read_then(r, badge_run, badge_done, q))
        free(q);
}
