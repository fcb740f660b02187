/*
 * store_internal.h - test-only hooks into the store.
 *
 * Nothing in the master calls these; the unit tests use them to drive the
 * failure paths (a full disk, a close that gives up, a group that fails)
 * that cannot be produced through the interface without filling a real
 * disk. Integration tests reach the group failures through the
 * TF_TEST_STORE_FAIL environment variable instead (store.c), which only
 * builds with test hooks honour (meson option test_hooks).
 */
#ifndef TF_STORE_INTERNAL_H
#define TF_STORE_INTERNAL_H

#include "store/store.h"

/* Makes the writer cap the database at `pages` pages before its next
 * attempt at a batch (and wakes it if it is sleeping between retries). A
 * value at or below the current size pins the database at its current
 * size, so inserts fail with "disk full" (sqlite: SQLITE_FULL). */
void tf__store_test_hook_set_max_pages(tf_store_t *s, long pages);

/* How long tf_store_close keeps retrying a failing database before it
 * gives up and reports the queued writes as lost (default 30 s). Call
 * before tf_store_close. */
void tf__store_test_hook_set_close_grace_ms(tf_store_t *s, unsigned ms);

typedef enum {
    TF_STORE_FAIL_NONE = 0,
    TF_STORE_FAIL_STORE, /* the writer fails the group: TF_ESTORE */
    TF_STORE_FAIL_FULL,  /* tf_store_submit refuses it: TF_EFULL */
    TF_STORE_FAIL_NOMEM, /* tf_store_submit refuses it: TF_ENOMEM */
} tf_store_fail_t;

/* The nth group (counting from 1) submitted from now on that holds an op
 * of kind (its name: "output", "build_create", ...) fails as how says.
 * Returns 0, TF_EINVAL (unknown kind, nth 0) or TF_E2BIG (too many
 * rules). */
int tf__store_test_fail(tf_store_t *s, const char *kind, unsigned long nth,
                        tf_store_fail_t how);

/* The same from a TF_TEST_STORE_FAIL string: "KIND:N[:MODE],..." with
 * MODE store (default), full or nomem. */
int tf__store_test_fail_spec(tf_store_t *s, const char *spec);

#endif
