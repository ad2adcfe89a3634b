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

static inline void list_push_front(struct list *l, struct list_link *e)
{
    e->prev = NULL;
    e->next = l->head;
    *(l->head ? &l->head->prev : &l->tail) = e;
    l->head = e;
    l->n++;
}

/* Moves all of src in front of dst, keeping their order; src ends empty. */
static inline void list_splice_front(struct list *dst, struct list *src)
{
    if (!src->head)
        return;
    src->tail->next = dst->head;
    *(dst->head ? &dst->head->prev : &dst->tail) = src->tail;
    dst->head = src->head;
    dst->n += src->n;
    *src = (struct list){0};
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
