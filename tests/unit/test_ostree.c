/*
 * test_ostree.c - the order-statistic treap against a plain sorted array:
 * after random inserts and removes (with many equal keys), every node's
 * rank, predecessor, the first node and the count agree, and the tree's
 * invariants (search order, heap order, sizes, parent links) hold.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ostree.h"
#include "tf_test.h"

typedef struct item {
    tf_osnode_t node;
    int key;
    int order; /* insertion order, to check ties */
    bool in;
} item_t;

#define ITEM(n) ((item_t *)(void *)((char *)(n)-offsetof(item_t, node)))

static int cmp(const tf_osnode_t *a, const tf_osnode_t *b)
{
    int x = ITEM(a)->key, y = ITEM(b)->key;
    return x < y ? -1 : x > y;
}

/* Checks the invariants below n; returns its size (-1 on a violation). */
static long check(const tf_osnode_t *n, const tf_osnode_t *parent)
{
    if (!n)
        return 0;
    if (n->parent != parent)
        return -1;
    if (n->left && (n->left->prio < n->prio || cmp(n->left, n) > 0))
        return -1;
    if (n->right && (n->right->prio < n->prio || cmp(n->right, n) < 0))
        return -1;
    long l = check(n->left, n), r = check(n->right, n);
    if (l < 0 || r < 0 || (long)n->size != l + r + 1)
        return -1;
    return l + r + 1;
}

/* The reference: items in the tree sorted by (key, insertion order). */
static int ref_cmp(const void *a, const void *b)
{
    const item_t *x = *(item_t *const *)a, *y = *(item_t *const *)b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

TF_TEST(ranks_and_neighbours_match_a_sorted_array)
{
    enum { N = 3000 };
    item_t *items = calloc(N, sizeof(*items));
    item_t **ref = calloc(N, sizeof(*ref));
    tf_ostree_t t;
    unsigned seed = 12345;
    int order = 0;
    bool ok = true;

    tf_os_init(&t, cmp);
    TF_CHECK(tf_os_first(&t) == NULL);
    TF_CHECK_INT(tf_os_count(&t), 0);
    for (int round = 0; round < 40000 && ok; round++) {
        seed = seed * 1103515245u + 12345u;
        item_t *it = &items[(seed >> 8) % N];
        if (it->in) {
            tf_os_remove(&t, &it->node);
            it->in = false;
        } else {
            seed = seed * 1103515245u + 12345u;
            it->key = (int)((seed >> 10) % 50); /* many ties */
            it->order = order++;
            tf_os_insert(&t, &it->node);
            it->in = true;
        }
        if (round % 997 != 0 && round < 39990)
            continue;
        size_t n = 0;
        for (int i = 0; i < N; i++)
            if (items[i].in)
                ref[n++] = &items[i];
        qsort(ref, n, sizeof(*ref), ref_cmp);
        if (check(t.root, NULL) != (long)n || tf_os_count(&t) != n) {
            ok = false;
            break;
        }
        for (size_t k = 0; k < n; k++) {
            tf_osnode_t *prev = tf_os_prev(&ref[k]->node);
            if (tf_os_rank(&ref[k]->node) != k + 1 ||
                prev != (k ? &ref[k - 1]->node : NULL)) {
                ok = false;
                break;
            }
        }
        if (n && tf_os_first(&t) != &ref[0]->node)
            ok = false;
    }
    TF_CHECK(ok);
    free(items);
    free(ref);
}

TF_TEST(a_queue_of_one_and_removing_everything)
{
    item_t a = {.key = 1}, b = {.key = 1}, c = {.key = 0};
    tf_ostree_t t;

    tf_os_init(&t, cmp);
    tf_os_insert(&t, &a.node);
    TF_CHECK_INT(tf_os_rank(&a.node), 1);
    tf_os_insert(&t, &b.node); /* equal key: after a */
    tf_os_insert(&t, &c.node);
    TF_CHECK_INT(tf_os_rank(&c.node), 1);
    TF_CHECK_INT(tf_os_rank(&a.node), 2);
    TF_CHECK_INT(tf_os_rank(&b.node), 3);
    TF_CHECK(tf_os_first(&t) == &c.node);
    tf_os_remove(&t, &c.node);
    tf_os_remove(&t, &a.node);
    TF_CHECK_INT(tf_os_rank(&b.node), 1);
    tf_os_remove(&t, &b.node);
    TF_CHECK(t.root == NULL);
    TF_CHECK_INT(tf_os_count(&t), 0);
}

TF_TEST_MAIN()
