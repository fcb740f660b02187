/*
 * config_int.h - the inside of the config loader: key tables and the
 * walker that applies them (config.c), the tables themselves and the
 * checks that span keys (config_keys.c), the docs generator
 * (config_doc.c).
 *
 * Every key of master.json is one cfg_key_t row: its name, its kind (what
 * the value must be), its range or cap, its default, where the value goes
 * in the struct being filled, and a line for docs/config.md. One generic
 * walker (cfg_walk) reads an object with a table: unknown keys, missing
 * required keys, every value by its kind, each with the same sentence
 * wherever the kind appears. What one row cannot say (a key that needs
 * another, a default computed from elsewhere) is a hook on the row
 * (check, run after the row) or on the table (init before the rows, end
 * after them); the hooks are the only per-key code left.
 */
#ifndef TF_CONFIG_INT_H
#define TF_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config/config.h"
#include "jsonpos.h"

/* What reading a value reports: the default stays (absent), the field was
 * set, or a diagnostic was recorded. Negative: out of memory. A check
 * hook may also answer CFG_STOP: the rest of the object is not read (the
 * problem that stops it has been reported). */
enum { CFG_ABSENT = 0, CFG_OK = 1, CFG_BAD = 2, CFG_STOP = 3 };

#define CFG_NOMAX INT32_MAX /* "no upper bound" for integer settings */
#define CFG_NOFIELD SIZE_MAX /* a row that is checked but not stored */
#define CFG_MAX_ROWS 32      /* rows of one table */
#define CFG_SHOW_MAX 64      /* bytes of a user string quoted in a message */
#define CFG_SHOW_BUF (CFG_SHOW_MAX * 4 + 16)
#define CFG_STRINGS_MAX 100  /* entries of a CFG_STRINGS array */
#define CFG_STRING_BYTES 1024 /* bytes of one of them */
#define CFG_NAME_RULE                                                          \
    "use 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"

/* Where the walker is: a chain of frames on the C stack, one per object
 * member or array element, from which the JSON pointer (for positions)
 * and the dotted key shown to the admin are built when a diagnostic
 * needs them. */
typedef struct cfg_loc {
    const struct cfg_loc *up; /* NULL for the document root */
    const char *key;          /* member name; NULL for an array element */
    size_t index;
} cfg_loc_t;

#define CFG_MEMBER(parent, k) ((cfg_loc_t){.up = (parent), .key = (k)})
#define CFG_ELEMENT(parent, i) ((cfg_loc_t){.up = (parent), .index = (i)})

typedef struct cfg_ctx {
    const char *file;      /* path as given, for diagnostics */
    const char *dir;       /* absolute directory of the file */
    const char *text;      /* the document, for the positions index */
    size_t len;
    tf_jsonpos_t *pos;     /* made at the first diagnostic (a valid load
                              needs none); NULL if indexing failed:
                              positions are 0 */
    bool pos_tried;
    /* The placeholder that stands for the "slaves" value when the text
     * has the slaves of the last successful load (secrets.c), and what
     * that load kept of them; NULL otherwise. */
    json_t *reused_slaves;
    const struct cfg_slaves_kept *kept;
    tf_cfg_diags_t *diags; /* never NULL */
    tf_config_t *cfg;      /* what is built; hooks read earlier sections */
    tf_cfg_secrets_t *secrets; /* secret files kept across loads, or NULL */
    char **slaves;         /* sorted names of the configured slaves, for */
    size_t nslaves;        /* builders' "slaves"; built on first use */
    bool slaves_sorted;
    bool object_clean;     /* for an end hook: no diagnostic was recorded
                              while its object was read (checks that only
                              make sense on a valid object) */
} cfg_ctx_t;

typedef enum cfg_kind {
    CFG_BOOL,     /* true or false -> bool */
    CFG_INT,      /* an integer in min..max -> size bytes (CFG_SIGNED) */
    CFG_STR,      /* a string -> char *; see flags, valid and what/rule */
    CFG_NAME,     /* a name (names.h) -> char * */
    CFG_NAMES,    /* an array of distinct names -> char **, count */
    CFG_PATH,     /* a string resolved against the file's directory */
    CFG_ENUM,     /* one of words -> int */
    CFG_KV,       /* an object of string -> string, keys pass valid */
    CFG_STRINGS,  /* at most 100 strings of 1..1024 bytes -> char ** */
    CFG_REGEX,    /* a POSIX extended regex that compiles -> char * */
    CFG_REGEXES,  /* an array of at most max regexes -> char **, count */
    CFG_SECTION,  /* an object read with sub into the struct at off */
    CFG_LIST,     /* an array of objects read with sub -> items, count */
    CFG_CUSTOM,   /* fn reads the value */
} cfg_kind_t;

/* Row flags. */
#define CFG_REQUIRED 0x01u /* absent is an error */
#define CFG_EMPTY_OK 0x02u /* CFG_STR: "" is a value */
#define CFG_SIGNED 0x04u   /* CFG_INT: the field is signed */
#define CFG_EMAIL 0x08u    /* CFG_STR, CFG_STRINGS: plain addresses */
#define CFG_TERSE 0x10u    /* CFG_ENUM: "expected ..." without the value */
#define CFG_VIA 0x20u      /* the field is in the struct the pointer at via
                              points to (a step's modifiers) */

/* An enumeration word and the value it stands for, in the order the
 * error message lists them. */
typedef struct cfg_word {
    const char *word;
    int value;
} cfg_word_t;

struct cfg_key;
struct cfg_table;

/* Reads the present value v at loc into out (CFG_CUSTOM); parent is the
 * object v is a member of. */
typedef int cfg_value_fn(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                         json_t *parent, const struct cfg_key *k, void *out);
/* Runs after a row, whether its key was present or not; status is what
 * reading it reported. loc and obj are the object's. */
typedef int cfg_check_fn(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                         void *out, int status);
/* Before the rows: computed defaults, allocations. obj is NULL when the
 * object is absent (a section keeps its defaults then); ctx is NULL when
 * the docs generator asks for the defaults. */
typedef int cfg_init_fn(cfg_ctx_t *ctx, json_t *obj, void *out);
/* After the rows: checks between keys. st holds each row's status. */
typedef int cfg_end_fn(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                       void *out, const int *st);

typedef struct cfg_key {
    const char *name;
    cfg_kind_t kind;
    unsigned flags;
    unsigned only;       /* variant bits (1 << value) it belongs to; 0 all */
    long long min, max;  /* CFG_INT: range; arrays: min and max entries */
    long long def;       /* CFG_INT, CFG_BOOL: default; 0 = the zero field */
    const char *sdef;    /* CFG_STR, CFG_PATH: default, or NULL */
    size_t off;          /* the field, or CFG_NOFIELD */
    size_t noff;         /* arrays: the count (size_t) */
    size_t via;          /* CFG_VIA: the pointer to the struct off is in */
    size_t size;         /* CFG_INT: field bytes; CFG_LIST: element bytes */
    const struct cfg_table *sub; /* CFG_SECTION, CFG_LIST; CFG_CUSTOM's */
    const cfg_word_t *words;     /* CFG_ENUM, NULL-terminated */
    bool (*valid)(const char *); /* CFG_STR: the value's rule; CFG_KV: keys' */
    const char *what;     /* the noun in messages ("slave", "branch") */
    const char *rule;     /* what a valid value looks like */
    const char *type_msg; /* the sentence for a value of the wrong type */
    const char *plural;   /* arrays: "too many PLURAL (N; at most M)" */
    const char *empty_msg; /* CFG_LIST with min 1: the sentence for [] */
    cfg_value_fn *fn;      /* CFG_CUSTOM */
    cfg_check_fn *check;   /* after the row */
    const char *doc_type;  /* docs: the type column, when the kind's own
                              word is not enough */
    const char *doc_def;   /* docs: the default column, likewise */
    const char *doc;       /* docs: one line */
} cfg_key_t;

typedef struct cfg_table {
    const char *name;       /* docs/config.md's marker for its table */
    const cfg_key_t *keys;
    size_t nkeys;
    size_t size;            /* sizeof the struct it fills */
    const char *not_object; /* the sentence for a non-object value */
    const char *variant_key; /* the row that selects the variant (its field
                                is an int); unknown keys are checked once
                                it is read, against the rows of that
                                variant. NULL: one variant. */
    cfg_init_fn *init;
    cfg_end_fn *end;
    void (*clear)(void *out); /* frees what init allocated (docs only) */
} cfg_table_t;

/* config_keys.c: the tables. */
extern const cfg_table_t cfg_top_table;

/* config.c: the walker and what the hooks use. */

/* Reads obj (NULL: absent, defaults only) at loc with table t into out.
 * Returns 0, or a negative code when memory ran out. */
int cfg_walk(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
             const cfg_table_t *t, void *out);

/* Applies k's default to its field in out (docs, and the walker). */
int cfg_apply_default(cfg_ctx_t *ctx, const cfg_key_t *k, void *out);

/* A diagnostic about the value at loc, or about its key (at_key); they
 * return CFG_BAD or TF_ENOMEM, so hooks can `return cfg_bad(...)`. */
int cfg_bad(cfg_ctx_t *ctx, const cfg_loc_t *loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int cfg_bad_key(cfg_ctx_t *ctx, const cfg_loc_t *loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int cfg_missing(cfg_ctx_t *ctx, const cfg_loc_t *obj, const char *key);

/* Copies s for a message: control bytes as \xNN, cut after CFG_SHOW_MAX
 * bytes with "...". */
void cfg_show(char out[CFG_SHOW_BUF], const char *s);

/* The candidate closest to word within two edits, or NULL. */
const char *cfg_suggest(const char *word, const char *const *cands,
                        size_t n);

/* p if absolute, else dir/p, tidied; NULL when out of memory. */
char *cfg_resolve(const char *dir, const char *p);

/* Reads a secret file named rel (relative to the config's directory) at
 * loc into *out. CFG_OK, CFG_BAD (reported) or TF_ENOMEM. */
int cfg_secret_file(cfg_ctx_t *ctx, const cfg_loc_t *loc, const char *rel,
                    char **out);

/* secrets.c: a load begins (marks what it uses), a successful one prunes
 * the rest; read gives a copy of path's secret (*out malloc'd), from the
 * cache when the file is unchanged, else as tf_read_secret does (its
 * codes). s may be NULL. */
void cfg_secrets_begin(tf_cfg_secrets_t *s);
void cfg_secrets_prune(tf_cfg_secrets_t *s);
/* A load is over, whatever its outcome: closes the directory it held. */
void cfg_secrets_end(tf_cfg_secrets_t *s);
int cfg_secrets_read(tf_cfg_secrets_t *s, const char *path, char **out);

/* The top-level "slaves" of the last successful load through a cache
 * (secrets.c): its value's text as written, and the slaves it gave, each
 * with the "secret_file" it names (NULL: the secret is inline, kept in
 * slaves[i].secret; else slaves[i].secret is NULL). A load whose
 * "slaves" value is the same text gets the same slaves but for the
 * secret files, which it reads through the cache as usual. */
typedef struct cfg_slaves_kept {
    char *text;
    size_t len;
    tf_cfg_slave_t *slaves;
    char **files;
    size_t n;
} cfg_slaves_kept_t;

/* What s kept, when its text is v[0..n); else NULL. Borrowed. */
const cfg_slaves_kept_t *cfg_secrets_kept(tf_cfg_secrets_t *s,
                                          const char *v, size_t n);
/* Counts a load that copied them (tf_cfg_secrets_reuses). */
void cfg_secrets_reused(tf_cfg_secrets_t *s);
/* After a successful load that read the slaves from the text: keeps v
 * (its "slaves" value), c's slaves and their "secret_file" from arr (the
 * parsed value). Out of memory, s keeps nothing (the next load reads all
 * the text). */
void cfg_secrets_keep(tf_cfg_secrets_t *s, const char *v, size_t n,
                      const tf_config_t *c, json_t *arr);

/* config.c: a slave's strings (s itself is not freed), and a copy of src
 * into dst (zeroed first), the secret too when with_secret. 0 or
 * TF_ENOMEM (dst cleared). */
void cfg_slave_clear(tf_cfg_slave_t *s);
int cfg_slave_copy(tf_cfg_slave_t *dst, const tf_cfg_slave_t *src,
                   bool with_secret);

/* A string value at loc (not empty unless empty_ok); *out is borrowed
 * from the tree. CFG_OK or CFG_BAD (reported) or TF_ENOMEM. */
int cfg_string(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v, bool empty_ok,
               const char **out);

/* A regular expression value at loc, checked as CFG_REGEX does; *out is
 * borrowed from the tree, *groups gets its number of groups. */
int cfg_regex_value(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                    const char **out, size_t *groups);

/* Fills argv for a command written as an array of strings at loc. */
int cfg_argv_array(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *cmd,
                   char ***argv_out, size_t *argc_out);

/* The status the walker recorded for the row named key of t. */
int cfg_status(const cfg_table_t *t, const int *st, const char *key);

/* The struct a row's field is in: out, or what its via pointer holds. */
void *cfg_base(const cfg_key_t *k, void *out);

void cfg_strv_free(char **v, size_t n);
void cfg_kv_free(tf_kv_t *kv, size_t n);

/* config_doc.c: every table reachable from the top one, in docs order. */
size_t cfg_tables(const cfg_table_t **out, size_t max);

#endif
