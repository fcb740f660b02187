/*
 * props.h - build properties in commands: %(prop:NAME)s.
 *
 * The syntax is Buildbot's Interpolate: %(prop:NAME)s is replaced by the
 * property's value, %(prop:NAME:-DEFAULT)s by DEFAULT when the property is
 * absent or empty. Anything else, a lone '%' included, is left as it is.
 * The master interpolates when a build starts, so the argv the slave runs
 * and the one the build page shows are the same.
 */
#ifndef TF_PROPS_H
#define TF_PROPS_H

#include <jansson.h>

/* Returns a malloc'd copy of s with properties (an object of string
 * values) interpolated, or NULL on OOM. */
char *tf_interpolate(const char *s, const json_t *props);

#endif
