/*
 * junit.c - JUnit XML reports, read with a small XML reader of our own.
 *
 * Why not libxml2 or expat: a report is untrusted input (a build writes
 * it) and we need very little of XML, so the reader does exactly that and
 * refuses the rest: no DTD (a DOCTYPE with an internal subset is an
 * error, one without is skipped), no entities beyond the five predefined
 * ones and character references (so nothing can expand), no namespaces,
 * no encodings but UTF-8/ASCII. It checks well-formedness (one root,
 * matching tags, unique attributes, no '<' in attribute values) so a
 * truncated report is an error with a line number rather than a silent
 * half. Limits: TF__XML_DEPTH nested elements, TF__XML_ATTRS attributes,
 * names of TF__XML_NAME bytes; the caller caps the file's size. It runs
 * over one buffer without recursion and decodes only what the walker
 * keeps (a few KiB per test), so memory is the buffer plus a constant.
 *
 * The walker understands the shapes in the wild: <testsuites> or a bare
 * <testsuite> (nested ones too), <testcase name classname time> with
 * <failure>, <error>, <skipped> (pytest's xfail is type="pytest.xfail"),
 * Maven surefire's <flakyFailure>/<flakyError> (failed, then passed on a
 * rerun: flaky) and <rerunFailure>/<rerunError> (failed every rerun), and
 * GoogleTest's / ctest's status="notrun" or "disabled".
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tf_err.h"
#include "utf8.h"

#define TF__XML_DEPTH 64
#define TF__XML_ATTRS 64
#define TF__XML_NAME 256

typedef struct {
    const char *name;
    size_t nlen;
    const char *val; /* raw, between the quotes */
    size_t vlen;
} tf__xattr_t;

typedef struct {
    const char *buf;
    size_t len, pos;
    const char *stack[TF__XML_DEPTH];
    size_t stacklen[TF__XML_DEPTH];
    int depth;
    bool root_seen;
    char *err;
    size_t errlen;
    const char *label;
} tf__xml_t;

static int tf__xml_fail(tf__xml_t *x, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int tf__xml_fail(tf__xml_t *x, size_t at, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    unsigned long line = 1;
    for (size_t i = 0; i < at && i < x->len; i++)
        if (x->buf[i] == '\n')
            line++;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (x->err && x->errlen)
        snprintf(x->err, x->errlen, "%s%snot well-formed XML at line %lu: %s",
                 x->label ? x->label : "", x->label ? ": " : "", line, what);
    return TF_EINVAL;
}

static bool tf__xml_namestart(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
           c == ':' || c >= 0x80;
}

static bool tf__xml_namechar(unsigned char c)
{
    return tf__xml_namestart(c) || (c >= '0' && c <= '9') || c == '-' ||
           c == '.';
}

static bool tf__xml_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Reads the reference at s[0] == '&' (n bytes available): its length in
 * *used and its code point in *cp. Only predefined entities and character
 * references exist here. Returns 0 or TF_EINVAL with a sentence. */
static int tf__xml_ref(tf__xml_t *x, size_t at, const char *s, size_t n,
                       size_t *used, uint32_t *cp)
{
    const char *semi = memchr(s, ';', n < 40 ? n : 40);
    if (!semi)
        return tf__xml_fail(x, at, "'&' without a reference (write &amp;)");
    size_t rl = (size_t)(semi - s) - 1;
    const char *r = s + 1;
    *used = rl + 2;
    if (rl >= 2 && r[0] == '#') {
        uint64_t v = 0;
        bool hex = r[1] == 'x';
        size_t i = hex ? 2 : 1;
        if (i >= rl)
            return tf__xml_fail(x, at, "empty character reference");
        for (; i < rl; i++) {
            char c = r[i];
            int d = c >= '0' && c <= '9' ? c - '0'
                    : hex && c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : hex && c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                 : -1;
            if (d < 0)
                return tf__xml_fail(x, at, "bad character reference");
            v = v * (hex ? 16 : 10) + (uint64_t)d;
            if (v > 0x10ffff)
                return tf__xml_fail(x, at, "character reference out of "
                                    "range");
        }
        if (v == 0 || (v >= 0xd800 && v <= 0xdfff) ||
            (v < 0x20 && v != 0x9 && v != 0xa && v != 0xd))
            return tf__xml_fail(x, at, "character reference to a character "
                                "XML does not allow");
        *cp = (uint32_t)v;
        return 0;
    }
    static const struct {
        const char *n;
        char c;
    } pre[] = {{"lt", '<'}, {"gt", '>'}, {"amp", '&'}, {"quot", '"'},
               {"apos", '\''}};
    for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++) {
        if (strlen(pre[i].n) == rl && memcmp(pre[i].n, r, rl) == 0) {
            *cp = (uint32_t)(unsigned char)pre[i].c;
            return 0;
        }
    }
    return tf__xml_fail(x, at, "undefined entity &%.*s; (only the five "
                        "predefined ones are allowed)", (int)(rl < 32 ? rl : 32),
                        r);
}

/* Checks raw text (or an attribute value) and decodes at most cap-1 bytes
 * of it into out (NUL-terminated; out may be NULL to only check). In
 * attributes literal whitespace becomes a space, as XML says. */
static int tf__xml_decode(tf__xml_t *x, size_t at, const char *s, size_t n,
                          bool attr, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        char tmp[4];
        size_t tl = 1;
        if (s[i] == '&') {
            size_t used = 0;
            uint32_t cp = 0;
            int rc = tf__xml_ref(x, at + i, s + i, n - i, &used, &cp);
            if (rc)
                return rc;
            /* tf__xml_ref refused what UTF-8 cannot encode. */
            tl = tf_utf8_put(cp, (unsigned char *)tmp);
            i += used;
        } else {
            if (attr && s[i] == '<')
                return tf__xml_fail(x, at + i, "'<' in an attribute value");
            tmp[0] = attr && (s[i] == '\t' || s[i] == '\n' || s[i] == '\r')
                         ? ' '
                         : s[i];
            i++;
        }
        if (out && o + tl < cap) {
            memcpy(out + o, tmp, tl);
            o += tl;
        }
    }
    if (out && cap)
        out[o] = '\0';
    return 0;
}

/* Skips to just after `end` (e.g. "-->"); fails with what at `at`. */
static int tf__xml_skip_to(tf__xml_t *x, const char *end, const char *what)
{
    size_t el = strlen(end);
    size_t at = x->pos;
    for (size_t i = x->pos; i + el <= x->len; i++) {
        if (memcmp(x->buf + i, end, el) == 0) {
            x->pos = i + el;
            return 0;
        }
    }
    return tf__xml_fail(x, at, "unterminated %s", what);
}

static int tf__xml_name(tf__xml_t *x, const char **name, size_t *nlen)
{
    size_t start = x->pos;
    if (x->pos >= x->len ||
        !tf__xml_namestart((unsigned char)x->buf[x->pos]))
        return tf__xml_fail(x, start, "expected a name");
    while (x->pos < x->len && tf__xml_namechar((unsigned char)x->buf[x->pos]))
        x->pos++;
    if (x->pos - start > TF__XML_NAME)
        return tf__xml_fail(x, start, "name longer than %d bytes",
                            TF__XML_NAME);
    *name = x->buf + start;
    *nlen = x->pos - start;
    return 0;
}

static void tf__xml_ws(tf__xml_t *x)
{
    while (x->pos < x->len && tf__xml_space(x->buf[x->pos]))
        x->pos++;
}

/* ---- the walker: JUnit's elements ------------------------------------ */

typedef enum { TF__J_NONE, TF__J_FAIL, TF__J_SKIP, TF__J_FLAKY,
               TF__J_OUT } tf__jkind_t;

typedef struct {
    tf_tr_emit_cb emit;
    void *arg;
    char suite[TF__XML_DEPTH][TF_TR_MAX_NAME + 1]; /* per depth */
    int case_depth;     /* depth of the open <testcase>, -1 none */
    char name[TF_TR_MAX_NAME + 1];
    char classname[TF_TR_MAX_NAME + 1];
    int64_t ms;
    bool failed, skipped, notrun;
    unsigned flaky, reruns;
    char outcome[TF_TR_MAX_OUTCOME + 1];
    tf__jkind_t text_kind; /* what text is collected for now */
    int text_depth;
    char attr_msg[TF_TR_MAX_MESSAGE + 1];
    char text[TF_TR_MAX_MESSAGE + 1];
    size_t textlen;
    char flaky_msg[TF_TR_MAX_MESSAGE + 1];
    char out_msg[TF_TR_MAX_MESSAGE + 1]; /* <system-out>, for ctest */
    char msg[2 * TF_TR_MAX_MESSAGE + 2];
} tf__junit_t;

static bool tf__is(const char *name, size_t n, const char *want)
{
    return strlen(want) == n && memcmp(name, want, n) == 0;
}

/* The decoded value of attribute `want`, or false. */
static bool tf__attr(tf__xml_t *x, const tf__xattr_t *a, size_t na,
                     const char *want, char *out, size_t cap)
{
    for (size_t i = 0; i < na; i++)
        if (tf__is(a[i].name, a[i].nlen, want))
            return tf__xml_decode(x, 0, a[i].val, a[i].vlen, true, out,
                                  cap) == 0;
    return false;
}

static void tf__junit_case_end(tf__junit_t *j, int depth)
{
    const char *suite = j->classname[0] ? j->classname : "";
    if (!*suite)
        for (int d = depth - 1; d >= 0 && !*suite; d--)
            suite = j->suite[d];
    tf_tr_res_t r = {
        .suite = suite, .name = j->name, .duration_ms = j->ms,
        .outcome = j->outcome[0] ? j->outcome : NULL,
    };
    if (!j->name[0])
        return;
    if (j->failed) {
        r.status = TF_TR_FAIL;
        /* ctest writes an empty <failure> and the output beside it. */
        r.message = j->msg[0] ? j->msg : j->out_msg[0] ? j->out_msg : NULL;
        for (unsigned i = 0; i <= j->reruns && i < 100; i++)
            j->emit(j->arg, TF_TR_ATTEMPT, &r);
    } else if (j->skipped || j->notrun) {
        r.status = TF_TR_SKIP;
        r.message = j->msg[0] ? j->msg : NULL;
        j->emit(j->arg, TF_TR_ATTEMPT, &r);
    } else {
        /* Passed, perhaps after failing (surefire's flakyFailure). */
        r.status = TF_TR_FAIL;
        r.message = j->flaky_msg[0] ? j->flaky_msg : NULL;
        r.outcome = j->outcome[0] ? j->outcome : NULL;
        for (unsigned i = 0; i < j->flaky && i < 100; i++)
            j->emit(j->arg, TF_TR_ATTEMPT, &r);
        r.status = TF_TR_PASS;
        r.message = NULL;
        j->emit(j->arg, TF_TR_ATTEMPT, &r);
    }
}

/* Joins the message attribute and the element's text: both when they
 * differ, the text alone when it repeats the attribute (GoogleTest). */
static void tf__junit_compose(tf__junit_t *j, char *dst, size_t cap)
{
    const char *a = j->attr_msg, *t = j->text;
    while (*t == '\n' || *t == ' ' || *t == '\r' || *t == '\t')
        t++;
    dst[0] = '\0';
    if (!*a || strncmp(t, a, strlen(a)) == 0) {
        tf__cat(dst, cap, t, strlen(t));
    } else if (!*t) {
        tf__cat(dst, cap, a, strlen(a));
    } else {
        tf__cat(dst, cap, a, strlen(a));
        tf__cat(dst, cap, "\n", 1);
        tf__cat(dst, cap, t, strlen(t));
    }
}

static void tf__junit_start(tf__xml_t *x, tf__junit_t *j, const char *name,
                            size_t nlen, const tf__xattr_t *a, size_t na,
                            int depth)
{
    char buf[64];
    if (depth < TF__XML_DEPTH)
        j->suite[depth][0] = '\0';
    if (tf__is(name, nlen, "testsuite")) {
        if (depth < TF__XML_DEPTH)
            tf__attr(x, a, na, "name", j->suite[depth], TF_TR_MAX_NAME + 1);
        return;
    }
    if (tf__is(name, nlen, "testcase") && j->case_depth < 0) {
        j->case_depth = depth;
        j->name[0] = j->classname[0] = j->outcome[0] = '\0';
        j->msg[0] = j->flaky_msg[0] = j->out_msg[0] = '\0';
        j->failed = j->skipped = j->notrun = false;
        j->flaky = j->reruns = 0;
        j->ms = -1;
        tf__attr(x, a, na, "name", j->name, sizeof j->name);
        tf__attr(x, a, na, "classname", j->classname, sizeof j->classname);
        if (tf__attr(x, a, na, "time", buf, sizeof buf))
            j->ms = tf__seconds_to_ms(buf, strlen(buf));
        if (tf__attr(x, a, na, "status", buf, sizeof buf) &&
            (strcmp(buf, "notrun") == 0 || strcmp(buf, "disabled") == 0)) {
            j->notrun = true;
            snprintf(j->outcome, sizeof j->outcome, "%s", buf);
        }
        return;
    }
    if (j->case_depth < 0 || depth != j->case_depth + 1)
        return;
    tf__jkind_t kind = TF__J_NONE;
    const char *word = NULL;
    if (tf__is(name, nlen, "failure") || tf__is(name, nlen, "error")) {
        kind = TF__J_FAIL;
        word = tf__is(name, nlen, "error") ? "error" : "failure";
        if (j->failed)
            kind = TF__J_NONE; /* the first one is the message */
        j->failed = true;
    } else if (tf__is(name, nlen, "skipped")) {
        kind = TF__J_SKIP;
        j->skipped = true;
        word = "skipped";
        if (tf__attr(x, a, na, "type", buf, sizeof buf) &&
            strcmp(buf, "pytest.xfail") == 0)
            word = "xfail";
    } else if (tf__is(name, nlen, "flakyFailure") ||
               tf__is(name, nlen, "flakyError")) {
        kind = j->flaky ? TF__J_NONE : TF__J_FLAKY;
        j->flaky++;
    } else if (tf__is(name, nlen, "rerunFailure") ||
               tf__is(name, nlen, "rerunError")) {
        j->reruns++;
    } else if (tf__is(name, nlen, "system-out") && !j->out_msg[0]) {
        kind = TF__J_OUT;
    }
    if (word && !(j->failed && kind == TF__J_SKIP))
        snprintf(j->outcome, sizeof j->outcome, "%s", word);
    if (kind == TF__J_NONE)
        return;
    j->text_kind = kind;
    j->text_depth = depth;
    j->text[0] = '\0';
    j->textlen = 0;
    j->attr_msg[0] = '\0';
    tf__attr(x, a, na, "message", j->attr_msg, sizeof j->attr_msg);
}

static void tf__junit_end(tf__junit_t *j, int depth)
{
    if (j->text_kind != TF__J_NONE && depth == j->text_depth) {
        if (j->text_kind == TF__J_FLAKY)
            tf__junit_compose(j, j->flaky_msg, sizeof j->flaky_msg);
        else if (j->text_kind == TF__J_OUT)
            tf__junit_compose(j, j->out_msg, sizeof j->out_msg);
        else
            tf__junit_compose(j, j->msg, TF_TR_MAX_MESSAGE + 1);
        j->text_kind = TF__J_NONE;
        return;
    }
    if (depth == j->case_depth) {
        tf__junit_case_end(j, depth);
        j->case_depth = -1;
    }
}

static int tf__junit_text(tf__xml_t *x, tf__junit_t *j, size_t at,
                          const char *s, size_t n, bool cdata)
{
    bool keep = j->text_kind != TF__J_NONE &&
                j->textlen + 1 < sizeof j->text;
    char *out = keep ? j->text + j->textlen : NULL;
    size_t cap = keep ? sizeof j->text - j->textlen : 0;
    if (cdata) {
        if (keep) {
            size_t c = n < cap - 1 ? n : cap - 1;
            memcpy(out, s, c);
            out[c] = '\0';
        }
    } else {
        int rc = tf__xml_decode(x, at, s, n, false, out, cap);
        if (rc)
            return rc;
    }
    if (keep)
        j->textlen += strlen(out);
    return 0;
}

/* ---- the reader's loop -------------------------------------------------- */

static int tf__xml_tag(tf__xml_t *x, tf__junit_t *j)
{
    tf__xattr_t attrs[TF__XML_ATTRS];
    size_t na = 0;
    const char *name;
    size_t nlen;
    size_t at = x->pos;
    int rc;

    x->pos++; /* '<' */
    if (x->pos < x->len && x->buf[x->pos] == '/') {
        x->pos++;
        if ((rc = tf__xml_name(x, &name, &nlen)))
            return rc;
        tf__xml_ws(x);
        if (x->pos >= x->len || x->buf[x->pos] != '>')
            return tf__xml_fail(x, at, "expected '>' to end </%.*s",
                                (int)nlen, name);
        x->pos++;
        if (x->depth == 0)
            return tf__xml_fail(x, at, "</%.*s> without an open element",
                                (int)nlen, name);
        int d = x->depth - 1;
        if (x->stacklen[d] != nlen || memcmp(x->stack[d], name, nlen) != 0)
            return tf__xml_fail(x, at, "</%.*s> does not close <%.*s>",
                                (int)nlen, name, (int)x->stacklen[d],
                                x->stack[d]);
        x->depth--;
        tf__junit_end(j, x->depth);
        return 0;
    }
    if ((rc = tf__xml_name(x, &name, &nlen)))
        return rc;
    if (x->depth == 0 && x->root_seen)
        return tf__xml_fail(x, at, "a second root element <%.*s>", (int)nlen,
                            name);
    for (;;) {
        size_t before = x->pos;
        tf__xml_ws(x);
        if (x->pos >= x->len)
            return tf__xml_fail(x, at, "unterminated <%.*s> tag", (int)nlen,
                                name);
        char c = x->buf[x->pos];
        if (c == '>' || c == '/')
            break;
        if (x->pos == before)
            return tf__xml_fail(x, x->pos, "expected a space before an "
                                "attribute");
        tf__xattr_t *a = &attrs[na];
        if (na == TF__XML_ATTRS)
            return tf__xml_fail(x, x->pos, "more than %d attributes",
                                TF__XML_ATTRS);
        if ((rc = tf__xml_name(x, &a->name, &a->nlen)))
            return rc;
        tf__xml_ws(x);
        if (x->pos >= x->len || x->buf[x->pos] != '=')
            return tf__xml_fail(x, x->pos, "expected '=' after attribute "
                                "%.*s", (int)a->nlen, a->name);
        x->pos++;
        tf__xml_ws(x);
        if (x->pos >= x->len ||
            (x->buf[x->pos] != '"' && x->buf[x->pos] != '\''))
            return tf__xml_fail(x, x->pos, "expected a quoted value");
        char q = x->buf[x->pos++];
        const char *end = memchr(x->buf + x->pos, q, x->len - x->pos);
        if (!end)
            return tf__xml_fail(x, x->pos, "unterminated attribute value");
        a->val = x->buf + x->pos;
        a->vlen = (size_t)(end - a->val);
        if ((rc = tf__xml_decode(x, x->pos, a->val, a->vlen, true, NULL, 0)))
            return rc;
        x->pos = (size_t)(end - x->buf) + 1;
        for (size_t k = 0; k < na; k++)
            if (attrs[k].nlen == a->nlen &&
                memcmp(attrs[k].name, a->name, a->nlen) == 0)
                return tf__xml_fail(x, at, "attribute %.*s given twice",
                                    (int)a->nlen, a->name);
        na++;
    }
    bool empty = x->buf[x->pos] == '/';
    if (empty) {
        x->pos++;
        if (x->pos >= x->len || x->buf[x->pos] != '>')
            return tf__xml_fail(x, at, "expected '>' after '/'");
    }
    x->pos++;
    if (x->depth >= TF__XML_DEPTH)
        return tf__xml_fail(x, at, "elements nested deeper than %d",
                            TF__XML_DEPTH);
    x->root_seen = true;
    tf__junit_start(x, j, name, nlen, attrs, na, x->depth);
    if (empty) {
        tf__junit_end(j, x->depth);
        return 0;
    }
    x->stack[x->depth] = name;
    x->stacklen[x->depth] = nlen;
    x->depth++;
    return 0;
}

int tf_tr_junit_parse(const char *buf, size_t len, const char *label,
                      tf_tr_emit_cb emit, void *arg, char *err, size_t errlen)
{
    tf__xml_t x = {.buf = buf, .len = len, .err = err, .errlen = errlen,
                   .label = label};
    tf__junit_t *j = calloc(1, sizeof *j);
    int rc = 0;
    if (err && errlen)
        err[0] = '\0';
    if (!j)
        return TF_ENOMEM;
    j->emit = emit;
    j->arg = arg;
    j->case_depth = -1;
    if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
        x.pos = 3;
    while (x.pos < x.len) {
        const char *s = x.buf + x.pos;
        size_t left = x.len - x.pos;
        if (s[0] != '<') {
            const char *lt = memchr(s, '<', left);
            size_t n = lt ? (size_t)(lt - s) : left;
            if (x.depth == 0) {
                for (size_t i = 0; i < n; i++)
                    if (!tf__xml_space(s[i])) {
                        rc = tf__xml_fail(&x, x.pos + i, "text outside "
                                          "the root element");
                        goto out;
                    }
            } else if ((rc = tf__junit_text(&x, j, x.pos, s, n, false))) {
                goto out;
            }
            x.pos += n;
            continue;
        }
        if (left >= 4 && memcmp(s, "<!--", 4) == 0) {
            x.pos += 4;
            if ((rc = tf__xml_skip_to(&x, "-->", "comment")))
                goto out;
        } else if (left >= 9 && memcmp(s, "<![CDATA[", 9) == 0) {
            if (x.depth == 0) {
                rc = tf__xml_fail(&x, x.pos, "CDATA outside the root "
                                  "element");
                goto out;
            }
            size_t start = x.pos + 9;
            x.pos = start;
            if ((rc = tf__xml_skip_to(&x, "]]>", "CDATA section")))
                goto out;
            tf__junit_text(&x, j, start, x.buf + start, x.pos - 3 - start,
                           true);
        } else if (left >= 9 && memcmp(s, "<!DOCTYPE", 9) == 0) {
            if (x.root_seen) {
                rc = tf__xml_fail(&x, x.pos, "DOCTYPE after the root "
                                  "element");
                goto out;
            }
            const char *gt = memchr(s, '>', left);
            const char *br = memchr(s, '[', gt ? (size_t)(gt - s) : left);
            if (br) {
                rc = tf__xml_fail(&x, x.pos, "a DOCTYPE with an internal "
                                  "subset (entity declarations) is refused");
                goto out;
            }
            if (!gt) {
                rc = tf__xml_fail(&x, x.pos, "unterminated DOCTYPE");
                goto out;
            }
            x.pos = (size_t)(gt - x.buf) + 1;
        } else if (left >= 2 && s[1] == '?') {
            x.pos += 2;
            if ((rc = tf__xml_skip_to(&x, "?>", "processing instruction")))
                goto out;
        } else if (left >= 2 && s[1] == '!') {
            rc = tf__xml_fail(&x, x.pos, "markup declarations are not "
                              "allowed");
            goto out;
        } else if ((rc = tf__xml_tag(&x, j))) {
            goto out;
        }
    }
    if (x.depth > 0)
        rc = tf__xml_fail(&x, x.len, "the document ends inside <%.*s> "
                          "(truncated?)", (int)x.stacklen[x.depth - 1],
                          x.stack[x.depth - 1]);
    else if (!x.root_seen)
        rc = tf__xml_fail(&x, x.len, "no root element");
out:
    free(j);
    return rc;
}
