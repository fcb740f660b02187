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

#define TF_REF_MAX 200
#define TF_REPO_MAX 1024

/* A git branch name as TestFarm accepts it: 1..200 bytes of
 * [A-Za-z0-9._/-], not starting with '-' or '/', no "..", "//" or "@{",
 * not ending in '/', '.' or ".lock". Stricter than git, so a valid one is
 * safe in an argv and never read as an option. */
bool tf_git_ref_valid(const char *s);

/* A revision: "" (meaning the branch head), or a ref as above that may
 * also use '^' and '~' (a commit id is a ref of hex digits). */
bool tf_git_rev_valid(const char *s);

/* A repository: a git URL or path, 1..1024 bytes, no spaces or control
 * characters, not starting with '-'. */
bool tf_repo_url_valid(const char *s);

#endif
