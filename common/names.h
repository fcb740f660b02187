/*
 * names.h - validation of names that come from clients and config.
 *
 * Slave, builder, user and step names end up in paths, SQL parameters, URLs
 * and pages. A valid name is 1..64 bytes of [A-Za-z0-9._-], starts with a
 * letter or digit, and is never "." or "..". Checking once at the edge keeps
 * every later use safe.
 */
#ifndef TF_NAMES_H
#define TF_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#define TF_NAME_MAX 64

bool tf_name_valid(const char *s);

/* A relative path made of valid-name components separated by '/', no
 * leading '/', no "." or ".." components, at most 255 bytes. The empty
 * string is valid (meaning "here"). Used for step workdirs. */
bool tf_relpath_valid(const char *s);

#endif
