/*
 * ostree.h - an intrusive order-statistic tree: a treap whose nodes know
 * their subtree sizes, so the rank of a node (its 1-based position in
 * key order) costs O(log n), as do insert and remove.
 *
 * The master keeps each builder's pending requests in one, so "what
 * position is this request in its queue" is answered without walking the
 * queue (GET /api/v1/requests asks it for every request). The node lives
 * inside the object, like tf_list_t: adding never allocates. Keys are
 * compared by the tree's cmp function; equal keys keep insertion order
 * (a new node goes after its equals). Priorities come from a small
 * generator seeded per tree, so the shape is random but repeatable.
 */
#ifndef TF_OSTREE_H
#define TF_OSTREE_H

#include <stddef.h>
#include <stdint.h>

typedef struct tf_osnode {
    struct tf_osnode *left, *right, *parent;
    uint32_t size; /* nodes in this subtree, itself included */
    uint32_t prio; /* heap order: a parent's prio is at most its children's */
} tf_osnode_t;

/* Negative when a sorts before b, 0 when equal, positive after. */
typedef int (*tf_os_cmp)(const tf_osnode_t *a, const tf_osnode_t *b);

typedef struct tf_ostree {
    tf_osnode_t *root;
    tf_os_cmp cmp;
    uint32_t seed;
} tf_ostree_t;

/* An empty tree ordered by cmp. */
void tf_os_init(tf_ostree_t *t, tf_os_cmp cmp);

/* Inserts n (not in any tree). O(log n) expected. */
void tf_os_insert(tf_ostree_t *t, tf_osnode_t *n);

/* Removes n (in t). O(log n) expected. */
void tf_os_remove(tf_ostree_t *t, tf_osnode_t *n);

/* The 1-based position of n (in t) in key order. O(log n) expected. */
size_t tf_os_rank(const tf_osnode_t *n);

/* The node before n in key order, or NULL. */
tf_osnode_t *tf_os_prev(const tf_osnode_t *n);

/* The first node in key order, or NULL. */
tf_osnode_t *tf_os_first(const tf_ostree_t *t);

/* The number of nodes. */
size_t tf_os_count(const tf_ostree_t *t);

#endif
