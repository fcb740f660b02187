/*
 * props.c - %(prop:NAME)s interpolation (see props.h).
 */
#include "core/props.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"

#define PROPS_OUT_MAX (1024 * 1024)

char *tf_interpolate(const char *s, const json_t *props)
{
    tf_buf_t b;
    tf_buf_init(&b, PROPS_OUT_MAX);
    const char *p = s;
    while (*p) {
        const char *open = strstr(p, "%(prop:");
        if (!open) {
            if (tf_buf_append_str(&b, p) != 0)
                goto fail;
            break;
        }
        const char *name = open + 7;
        const char *close = strstr(name, ")s");
        if (!close) {
            if (tf_buf_append_str(&b, p) != 0)
                goto fail;
            break;
        }
        if (tf_buf_append(&b, p, (size_t)(open - p)) != 0)
            goto fail;
        /* NAME or NAME:-DEFAULT */
        const char *dflt = NULL;
        size_t nlen = (size_t)(close - name);
        const char *sep = memchr(name, ':', nlen);
        if (sep && sep + 1 < close && sep[1] == '-') {
            dflt = sep + 2;
            nlen = (size_t)(sep - name);
        }
        char key[128];
        const char *val = NULL;
        if (nlen < sizeof(key)) {
            memcpy(key, name, nlen);
            key[nlen] = '\0';
            val = json_string_value(json_object_get(props, key));
        }
        if (val && *val) {
            if (tf_buf_append_str(&b, val) != 0)
                goto fail;
        } else if (dflt) {
            if (tf_buf_append(&b, dflt, (size_t)(close - dflt)) != 0)
                goto fail;
        }
        p = close + 2;
    }
    if (tf_buf_append(&b, "", 0) != 0)
        goto fail;
    if (!b.data) {
        char *empty = malloc(1);
        if (empty)
            empty[0] = '\0';
        return empty;
    }
    return (char *)tf_buf_steal(&b, NULL);
fail:
    tf_buf_free(&b);
    return NULL;
}
