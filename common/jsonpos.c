/*
 * jsonpos.c - a position index over a JSON document, by JSON Pointer.
 *
 * A small recursive-descent scanner walks the text once and appends one
 * entry per value in document order (pre-order). Each entry records where
 * the value starts, where its key starts when it is an object member, its
 * decoded key, and `end`: the index one past the last entry of its subtree.
 * Because entries are in pre-order, the children of entry i are i + 1,
 * then end[i + 1], then end[end[i + 1]], ... up to end[i]; a lookup walks
 * pointer tokens down that tree. Storing the tree rather than one pointer
 * string per value keeps memory linear in the text: full pointer strings
 * would be quadratic for deep or long-keyed documents.
 *
 * Pointer tokens are compared against the decoded keys with RFC 6901
 * unescaping (~1 is '/', ~0 is '~') done on the fly, so nothing is
 * allocated per lookup. Array tokens must be canonical decimal indexes
 * ("0", "12", never "01" or "-").
 *
 * The scanner is strict RFC 8259: UTF-8 is validated, control characters
 * in strings, bad escapes, leading zeros, trailing commas and trailing
 * garbage are all TF_EINVAL. Nesting is capped at the depth jansson
 * accepts, so anything jansson parsed can be indexed. Lines and columns
 * count from 1; a column is a byte offset in its line plus one, and only
 * '\n' starts a line, as in jansson.
 */
#include "jsonpos.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tf_err.h"
#include "utf8.h"

/* jansson's JSON_PARSER_MAX_DEPTH: nested arrays and objects it accepts. */
#define JP_MAX_DEPTH 2048

enum jp_kind { JP_SCALAR = 0, JP_OBJECT = 1, JP_ARRAY = 2 };

typedef struct jp_entry {
    uint32_t end;     /* one past the last entry of this value's subtree */
    uint32_t key_off; /* decoded key in tf_jsonpos.keys (members only) */
    uint32_t key_len;
    uint8_t kind;     /* enum jp_kind */
    uint8_t has_key;
    int line, col;
    int key_line, key_col;
} jp_entry_t;

struct tf_jsonpos {
    jp_entry_t *v;
    size_t n, cap;
    char *keys; /* decoded keys, concatenated, not NUL-separated */
    size_t keys_len, keys_cap;
};

typedef struct jp_scan {
    const unsigned char *p;
    size_t len;
    size_t i;          /* next byte */
    int line;          /* line of byte i */
    size_t line_start; /* offset of the first byte of that line */
    int depth;
    tf_jsonpos_t *idx;
} jp_scan_t;

/* Where the key of the value being scanned is; has_key false for array
 * elements and the root. */
typedef struct jp_key {
    bool has_key;
    uint32_t off, len;
    int line, col;
} jp_key_t;

static int jp_value(jp_scan_t *s, const jp_key_t *key);

static int jp_col(const jp_scan_t *s)
{
    return (int)(s->i - s->line_start + 1);
}

static void jp_skip_ws(jp_scan_t *s)
{
    while (s->i < s->len) {
        unsigned char c = s->p[s->i];
        if (c == '\n') {
            s->i++;
            s->line++;
            s->line_start = s->i;
        } else if (c == ' ' || c == '\t' || c == '\r') {
            s->i++;
        } else {
            break;
        }
    }
}

/* Grows an array to hold at least need elements of size sz (doubling). */
static int jp_grow(void **arr, size_t *cap, size_t need, size_t sz)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 64;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / sz)
            return TF_ENOMEM;
        ncap *= 2;
    }
    void *p = realloc(*arr, ncap * sz);
    if (!p)
        return TF_ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

static int jp_key_put(jp_scan_t *s, const unsigned char *bytes, size_t n)
{
    tf_jsonpos_t *idx = s->idx;
    void *keys = idx->keys;
    int rc = jp_grow(&keys, &idx->keys_cap, idx->keys_len + n, 1);
    idx->keys = keys;
    if (rc < 0)
        return rc;
    memcpy(idx->keys + idx->keys_len, bytes, n);
    idx->keys_len += n;
    return 0;
}

static int jp_hex4(const unsigned char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = p[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return TF_EINVAL;
    }
    *out = v;
    return 0;
}

/* Decodes the escape after a backslash at s->i (which points past it) and
 * appends it to the key arena when keep is set. */
static int jp_escape(jp_scan_t *s, bool keep)
{
    if (s->i >= s->len)
        return TF_EINVAL;
    unsigned char c = s->p[s->i++];
    unsigned char out[4];
    size_t n = 1;
    switch (c) {
    case '"': case '\\': case '/':
        out[0] = c;
        break;
    case 'b': out[0] = '\b'; break;
    case 'f': out[0] = '\f'; break;
    case 'n': out[0] = '\n'; break;
    case 'r': out[0] = '\r'; break;
    case 't': out[0] = '\t'; break;
    case 'u': {
        uint32_t cp, lo;
        if (s->len - s->i < 4 || jp_hex4(s->p + s->i, &cp) < 0)
            return TF_EINVAL;
        s->i += 4;
        /* A high surrogate followed by an escaped low one is one code
         * point; anything else is kept as the lone surrogate it is. */
        if (cp >= 0xd800 && cp <= 0xdbff && s->len - s->i >= 6 &&
            s->p[s->i] == '\\' && s->p[s->i + 1] == 'u' &&
            jp_hex4(s->p + s->i + 2, &lo) == 0 && lo >= 0xdc00 &&
            lo <= 0xdfff) {
            s->i += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }
        n = tf_utf8_put(cp, out);
        break;
    }
    default:
        return TF_EINVAL;
    }
    return keep ? jp_key_put(s, out, n) : 0;
}

/* Scans a string whose opening quote is at s->i. When key is non-NULL the
 * decoded bytes are appended to the key arena and located in *key. */
static int jp_string(jp_scan_t *s, jp_key_t *key)
{
    int rc;
    s->i++; /* the opening quote */
    if (key) {
        if (s->idx->keys_len > UINT32_MAX)
            return TF_EINVAL;
        key->off = (uint32_t)s->idx->keys_len;
    }
    for (;;) {
        if (s->i >= s->len)
            return TF_EINVAL;
        unsigned char c = s->p[s->i];
        if (c == '"') {
            s->i++;
            break;
        }
        if (c < 0x20)
            return TF_EINVAL;
        if (c == '\\') {
            s->i++;
            rc = jp_escape(s, key != NULL);
            if (rc < 0)
                return rc;
            continue;
        }
        /* A run of plain bytes is validated and copied in one go. */
        size_t start = s->i;
        while (s->i < s->len) {
            c = s->p[s->i];
            if (c == '"' || c == '\\' || c < 0x20)
                break;
            size_t n = tf_utf8_len(s->p + s->i, s->len - s->i);
            if (n == 0)
                return TF_EINVAL;
            s->i += n;
        }
        if (key) {
            rc = jp_key_put(s, s->p + start, s->i - start);
            if (rc < 0)
                return rc;
        }
    }
    if (key) {
        size_t klen = s->idx->keys_len - key->off;
        if (klen > UINT32_MAX)
            return TF_EINVAL;
        key->len = (uint32_t)klen;
    }
    return 0;
}

static bool jp_digit(const jp_scan_t *s)
{
    return s->i < s->len && s->p[s->i] >= '0' && s->p[s->i] <= '9';
}

static int jp_number(jp_scan_t *s)
{
    if (s->p[s->i] == '-')
        s->i++;
    if (!jp_digit(s))
        return TF_EINVAL;
    if (s->p[s->i] == '0')
        s->i++;
    else
        while (jp_digit(s))
            s->i++;
    if (s->i < s->len && s->p[s->i] == '.') {
        s->i++;
        if (!jp_digit(s))
            return TF_EINVAL;
        while (jp_digit(s))
            s->i++;
    }
    if (s->i < s->len && (s->p[s->i] == 'e' || s->p[s->i] == 'E')) {
        s->i++;
        if (s->i < s->len && (s->p[s->i] == '+' || s->p[s->i] == '-'))
            s->i++;
        if (!jp_digit(s))
            return TF_EINVAL;
        while (jp_digit(s))
            s->i++;
    }
    return 0;
}

static int jp_literal(jp_scan_t *s, const char *word)
{
    size_t n = strlen(word);
    if (s->len - s->i < n || memcmp(s->p + s->i, word, n) != 0)
        return TF_EINVAL;
    s->i += n;
    return 0;
}

static int jp_object(jp_scan_t *s)
{
    int rc;
    s->i++; /* '{' */
    jp_skip_ws(s);
    if (s->i < s->len && s->p[s->i] == '}') {
        s->i++;
        return 0;
    }
    for (;;) {
        jp_key_t key = {.has_key = true};
        if (s->i >= s->len || s->p[s->i] != '"')
            return TF_EINVAL;
        key.line = s->line;
        key.col = jp_col(s);
        rc = jp_string(s, &key);
        if (rc < 0)
            return rc;
        jp_skip_ws(s);
        if (s->i >= s->len || s->p[s->i] != ':')
            return TF_EINVAL;
        s->i++;
        jp_skip_ws(s);
        rc = jp_value(s, &key);
        if (rc < 0)
            return rc;
        jp_skip_ws(s);
        if (s->i >= s->len)
            return TF_EINVAL;
        if (s->p[s->i] == '}') {
            s->i++;
            return 0;
        }
        if (s->p[s->i] != ',')
            return TF_EINVAL;
        s->i++;
        jp_skip_ws(s);
    }
}

static int jp_array(jp_scan_t *s)
{
    static const jp_key_t no_key = {.has_key = false};
    int rc;
    s->i++; /* '[' */
    jp_skip_ws(s);
    if (s->i < s->len && s->p[s->i] == ']') {
        s->i++;
        return 0;
    }
    for (;;) {
        rc = jp_value(s, &no_key);
        if (rc < 0)
            return rc;
        jp_skip_ws(s);
        if (s->i >= s->len)
            return TF_EINVAL;
        if (s->p[s->i] == ']') {
            s->i++;
            return 0;
        }
        if (s->p[s->i] != ',')
            return TF_EINVAL;
        s->i++;
        jp_skip_ws(s);
    }
}

/* Records the value starting at s->i (whitespace already skipped), then
 * scans it and its children. */
static int jp_value(jp_scan_t *s, const jp_key_t *key)
{
    tf_jsonpos_t *idx = s->idx;
    int rc;
    if (s->i >= s->len)
        return TF_EINVAL;
    void *v = idx->v;
    rc = jp_grow(&v, &idx->cap, idx->n + 1, sizeof(jp_entry_t));
    idx->v = v;
    if (rc < 0)
        return rc;
    size_t e = idx->n++;
    jp_entry_t *ent = &idx->v[e];
    memset(ent, 0, sizeof(*ent));
    ent->line = s->line;
    ent->col = jp_col(s);
    if (key->has_key) {
        ent->has_key = 1;
        ent->key_off = key->off;
        ent->key_len = key->len;
        ent->key_line = key->line;
        ent->key_col = key->col;
    }
    unsigned char c = s->p[s->i];
    switch (c) {
    case '{':
    case '[':
        if (++s->depth > JP_MAX_DEPTH)
            return TF_EINVAL;
        idx->v[e].kind = c == '{' ? JP_OBJECT : JP_ARRAY;
        rc = c == '{' ? jp_object(s) : jp_array(s);
        s->depth--;
        break;
    case '"':
        rc = jp_string(s, NULL);
        break;
    case 't':
        rc = jp_literal(s, "true");
        break;
    case 'f':
        rc = jp_literal(s, "false");
        break;
    case 'n':
        rc = jp_literal(s, "null");
        break;
    default:
        rc = (c == '-' || (c >= '0' && c <= '9')) ? jp_number(s) : TF_EINVAL;
        break;
    }
    if (rc < 0)
        return rc;
    /* The vector may have moved while the children were appended. */
    idx->v[e].end = (uint32_t)idx->n;
    return 0;
}

int tf_jsonpos_index(const char *text, size_t len, tf_jsonpos_t **out)
{
    static const jp_key_t no_key = {.has_key = false};
    int rc;
    tf_jsonpos_t *idx = NULL;

    if (!out)
        return TF_EINVAL;
    *out = NULL;
    /* Entry offsets are 32-bit and lines and columns are ints. */
    if (!text || len > INT_MAX)
        return TF_EINVAL;
    idx = calloc(1, sizeof(*idx));
    if (!idx)
        return TF_ENOMEM;
    jp_scan_t s = {
        .p = (const unsigned char *)text,
        .len = len,
        .line = 1,
        .idx = idx,
    };
    jp_skip_ws(&s);
    rc = jp_value(&s, &no_key);
    if (rc < 0)
        goto out;
    jp_skip_ws(&s);
    if (s.i != s.len) {
        rc = TF_EINVAL;
        goto out;
    }
    *out = idx;
    idx = NULL;
    rc = 0;
out:
    tf_jsonpos_free(idx);
    return rc;
}

/* Whether the escaped pointer token tok[0..toklen) names the key
 * key[0..keylen) once ~1 and ~0 are unescaped. */
static bool jp_token_is_key(const char *tok, size_t toklen, const char *key,
                            size_t keylen)
{
    size_t k = 0;
    for (size_t t = 0; t < toklen; t++) {
        char c = tok[t];
        if (c == '~') {
            if (t + 1 >= toklen)
                return false;
            t++;
            if (tok[t] == '0')
                c = '~';
            else if (tok[t] == '1')
                c = '/';
            else
                return false;
        }
        if (k >= keylen || key[k] != c)
            return false;
        k++;
    }
    return k == keylen;
}

/* Parses a canonical array index token; false for anything else. */
static bool jp_token_index(const char *tok, size_t toklen, size_t *out)
{
    size_t v = 0;
    if (toklen == 0 || (toklen > 1 && tok[0] == '0'))
        return false;
    for (size_t t = 0; t < toklen; t++) {
        if (tok[t] < '0' || tok[t] > '9')
            return false;
        size_t d = (size_t)(tok[t] - '0');
        if (v > (SIZE_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* The child of entry cur named by one token, or SIZE_MAX. */
static size_t jp_child(const tf_jsonpos_t *idx, size_t cur, const char *tok,
                       size_t toklen)
{
    const jp_entry_t *v = idx->v;
    size_t want = 0;
    if (v[cur].kind == JP_SCALAR)
        return SIZE_MAX;
    if (v[cur].kind == JP_ARRAY && !jp_token_index(tok, toklen, &want))
        return SIZE_MAX;
    size_t nth = 0;
    for (size_t c = cur + 1; c < v[cur].end; c = v[c].end, nth++) {
        if (v[cur].kind == JP_ARRAY) {
            if (nth == want)
                return c;
        } else if (jp_token_is_key(tok, toklen,
                                   /* no arena when every key is "" */
                                   idx->keys ? idx->keys + v[c].key_off : "",
                                   v[c].key_len)) {
            return c; /* the first of duplicate keys wins */
        }
    }
    return SIZE_MAX;
}

int tf_jsonpos_find(const tf_jsonpos_t *idx, const char *pointer, int *line,
                    int *col, int *key_line, int *key_col)
{
    if (!idx || !pointer || idx->n == 0)
        return TF_ENOENT;
    if (pointer[0] != '\0' && pointer[0] != '/')
        return TF_ENOENT;
    size_t cur = 0;
    const char *p = pointer;
    while (*p == '/') {
        p++;
        size_t toklen = strcspn(p, "/");
        cur = jp_child(idx, cur, p, toklen);
        if (cur == SIZE_MAX)
            return TF_ENOENT;
        p += toklen;
    }
    const jp_entry_t *e = &idx->v[cur];
    if (line)
        *line = e->line;
    if (col)
        *col = e->col;
    if (key_line)
        *key_line = e->has_key ? e->key_line : 0;
    if (key_col)
        *key_col = e->has_key ? e->key_col : 0;
    return 0;
}

void tf_jsonpos_free(tf_jsonpos_t *idx)
{
    if (!idx)
        return;
    free(idx->v);
    free(idx->keys);
    free(idx);
}
