/*
 * store_internal.h - test-only hooks into the store's writer thread.
 *
 * Nothing in the master calls these; the unit tests use them to drive the
 * failure paths (a full disk, a close that gives up) that cannot be
 * produced through the public API without filling a real disk.
 */
#ifndef TF_STORE_INTERNAL_H
#define TF_STORE_INTERNAL_H

#include "store/store.h"

/* Makes the writer run "PRAGMA max_page_count = pages" on the write
 * connection before its next attempt at a batch (and wakes it if it is
 * sleeping between retries). A value at or below the current size pins the
 * database at its current size, so inserts fail with SQLITE_FULL. */
void tf__store_test_hook_set_max_pages(tf_store_t *s, long pages);

/* How long tf_store_close keeps retrying a failing database before it gives
 * up and reports the queued writes as lost (default 30 s). Call before
 * tf_store_close. */
void tf__store_test_hook_set_close_grace_ms(tf_store_t *s, unsigned ms);

#endif
