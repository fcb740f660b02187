/*
 * list.h - an intrusive doubly-linked list (header only).
 *
 * The node lives inside the object (as in libuv's queue and the Linux
 * kernel's list), so putting an object on a list never allocates and
 * removing it is O(1). An unlinked node points at itself, which makes
 * tf_list_unlink idempotent.
 */
#ifndef TF_LIST_H
#define TF_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tf_list {
    struct tf_list *next;
    struct tf_list *prev;
} tf_list_t;

#define tf_list_entry(ptr, type, member)                                       \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

static inline void tf_list_init(tf_list_t *l)
{
    l->next = l;
    l->prev = l;
}

static inline bool tf_list_empty(const tf_list_t *l)
{
    return l->next == l;
}

/* Inserts n before pos (at the tail when pos is the head). */
static inline void tf_list_insert_before(tf_list_t *pos, tf_list_t *n)
{
    n->prev = pos->prev;
    n->next = pos;
    pos->prev->next = n;
    pos->prev = n;
}

static inline void tf_list_push_back(tf_list_t *head, tf_list_t *n)
{
    tf_list_insert_before(head, n);
}

static inline void tf_list_unlink(tf_list_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n;
    n->prev = n;
}

static inline bool tf_list_linked(const tf_list_t *n)
{
    return n->next != n;
}

#define tf_list_foreach(it, head) for (it = (head)->next; it != (head); it = it->next)
/* Safe against unlinking `it` inside the loop. */
#define tf_list_foreach_safe(it, tmp, head)                                    \
    for (it = (head)->next, tmp = it->next; it != (head); it = tmp, tmp = it->next)

#endif
