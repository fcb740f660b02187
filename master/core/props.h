/*
 * props.h - build properties in commands: %(prop:NAME)s.
 *
 * The syntax is Buildbot's Interpolate: %(prop:NAME)s is replaced by the
 * property's value, %(prop:NAME:-DEFAULT)s by DEFAULT when the property is
 * absent or empty. Anything else, a lone '%' included, is left as it is.
 * The master interpolates when a build starts, so the argv the slave runs
 * and the one the build page shows are the same.
 *
 * A value is data, never code. In an argv element or an environment value
 * (tf_interpolate) it stays inside that one element. In a shell string
 * (tf_interpolate_shell) each substitution becomes exactly one shell word
 * whatever it holds: the template is lexed for the quoting in force where
 * the placeholder stands (none, '...' or "...") and the value is quoted
 * for that context, so `echo x=%(prop:v)s`, `echo 'x=%(prop:v)s'` and
 * `echo "x=%(prop:v)s"` all print the value as it is.
 */
#ifndef TF_PROPS_H
#define TF_PROPS_H

#include <jansson.h>

/* Returns a malloc'd copy of s with properties (an object of string
 * values) interpolated, or NULL on OOM. */
char *tf_interpolate(const char *s, const json_t *props);

/* The same for a shell string: every substituted value (or default) is
 * quoted as one word for the quoting context it stands in. Returns a
 * malloc'd string or NULL on OOM (or past the 1 MiB output cap). */
char *tf_interpolate_shell(const char *s, const json_t *props);

#endif
