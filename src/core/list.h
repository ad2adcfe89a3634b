/* list — an intrusive doubly linked list with a count, for the request
 * queues of the transports: the link is embedded in the element, so moving
 * a request between lists never allocates. */
#ifndef DV_CORE_LIST_H
#define DV_CORE_LIST_H

#include <stddef.h>

struct list_link {
    struct list_link *prev, *next;
};

/* Zero-initialized is empty. */
struct list {
    struct list_link *head, *tail;
    size_t n;
};

/* The element that holds link l as its member m. */
#define list_elem(l, type, m) ((type *)(void *)((char *)(l) - offsetof(type, m)))

static inline void list_push(struct list *l, struct list_link *e)
{
    e->next = NULL;
    e->prev = l->tail;
    if (l->tail)
        l->tail->next = e;
    else
        l->head = e;
    l->tail = e;
    l->n++;
}

/* e must be in l. */
static inline void list_unlink(struct list *l, struct list_link *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->prev = e->next = NULL;
    l->n--;
}

#endif
