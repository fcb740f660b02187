/*
 * follow.c - the read behind a live log follower (see follow.h): one
 * tf_q_log_follow on a store reader. It keeps nothing between reads; the
 * follower (net/live.c) keeps the offset and allows one read in flight
 * per step.
 */
#include "api/follow.h"

#include "store/queries.h"
#include "store/store_sqlite.h" /* tf_store_read */

static int follow_fn(tf_db_t *db, void *arg)
{
    tf_api_follow_t *f = arg;
    return tf_q_log_follow(db, f->build_id, f->step, f->from,
                           sizeof(f->buf), f->buf, &f->got, &f->size,
                           &f->ended);
}

int tf_api_follow_read(tf_master_t *m, tf_api_follow_t *f,
                       tf_store_done_cb done)
{
    f->size = 0;
    f->ended = false;
    f->got = 0;
    return tf_store_read(m->store, follow_fn, done, f);
}
