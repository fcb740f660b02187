/*
 * ostree.c - the order-statistic treap (see ostree.h).
 *
 * Invariants, after every public call: the tree is a binary search tree
 * by cmp (ties: the older node on the left), a heap by prio (a parent's
 * prio <= its children's), every node's size is 1 + its children's, and
 * parent pointers match. Insertion walks down to a leaf position and
 * rotates the node up while its prio is below its parent's; removal
 * rotates the node down (towards the child of smaller prio) until it is
 * a leaf, then unlinks it. Sizes are fixed on the rotations and along
 * the path to the root.
 */
#include "ostree.h"

#include <stdbool.h>

static uint32_t sz(const tf_osnode_t *n)
{
    return n ? n->size : 0;
}

static void fix(tf_osnode_t *n)
{
    n->size = 1 + sz(n->left) + sz(n->right);
}

/* xorshift32: enough to randomise the shape. */
static uint32_t next_prio(tf_ostree_t *t)
{
    uint32_t x = t->seed;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    t->seed = x;
    return x;
}

void tf_os_init(tf_ostree_t *t, tf_os_cmp cmp)
{
    t->root = NULL;
    t->cmp = cmp;
    t->seed = 0x9e3779b9u;
}

/* Points whatever pointed at old (its parent's child link, or the root)
 * at new. */
static void replace_child(tf_ostree_t *t, tf_osnode_t *parent,
                          tf_osnode_t *old, tf_osnode_t *new)
{
    if (!parent)
        t->root = new;
    else if (parent->left == old)
        parent->left = new;
    else
        parent->right = new;
    if (new)
        new->parent = parent;
}

/* Rotates n up over its parent. */
static void rotate_up(tf_ostree_t *t, tf_osnode_t *n)
{
    tf_osnode_t *p = n->parent, *g = p->parent;

    if (p->left == n) {
        p->left = n->right;
        if (n->right)
            n->right->parent = p;
        n->right = p;
    } else {
        p->right = n->left;
        if (n->left)
            n->left->parent = p;
        n->left = p;
    }
    p->parent = n;
    replace_child(t, g, p, n);
    fix(p);
    fix(n);
}

void tf_os_insert(tf_ostree_t *t, tf_osnode_t *n)
{
    tf_osnode_t *p = NULL, **link = &t->root;

    n->left = n->right = NULL;
    n->size = 1;
    n->prio = next_prio(t);
    while (*link) {
        p = *link;
        p->size++;
        link = t->cmp(n, p) < 0 ? &p->left : &p->right;
    }
    *link = n;
    n->parent = p;
    while (n->parent && n->prio < n->parent->prio)
        rotate_up(t, n);
}

void tf_os_remove(tf_ostree_t *t, tf_osnode_t *n)
{
    /* Down to a leaf, keeping the heap order among the others. */
    while (n->left || n->right) {
        tf_osnode_t *c;
        if (!n->left)
            c = n->right;
        else if (!n->right)
            c = n->left;
        else
            c = n->left->prio < n->right->prio ? n->left : n->right;
        rotate_up(t, c);
    }
    tf_osnode_t *p = n->parent;
    replace_child(t, p, n, NULL);
    for (; p; p = p->parent)
        p->size--;
    n->parent = n->left = n->right = NULL;
    n->size = 0;
}

size_t tf_os_rank(const tf_osnode_t *n)
{
    size_t rank = sz(n->left) + 1;

    for (; n->parent; n = n->parent)
        if (n->parent->right == n)
            rank += sz(n->parent->left) + 1;
    return rank;
}

tf_osnode_t *tf_os_prev(const tf_osnode_t *n)
{
    if (n->left) {
        n = n->left;
        while (n->right)
            n = n->right;
        return (tf_osnode_t *)n;
    }
    while (n->parent && n->parent->left == n)
        n = n->parent;
    return n->parent;
}

tf_osnode_t *tf_os_first(const tf_ostree_t *t)
{
    tf_osnode_t *n = t->root;

    while (n && n->left)
        n = n->left;
    return n;
}

size_t tf_os_count(const tf_ostree_t *t)
{
    return sz(t->root);
}
