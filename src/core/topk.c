#include "core/topk.h"

#include <stdlib.h>
#include <string.h>

/* Slots are found through a small chained hash index, and a new key takes
 * over a least counted slot found by a scan that resumes where the last one
 * stopped and ends at the first slot at the known minimum (counts only grow,
 * so the minimum never falls): with a stream of one-off names every query is
 * such a takeover, and a full scan of the table each time was the costliest
 * part of counting a query. */
struct slot {
    uint64_t count, error;
    uint32_t hash;
    uint16_t len;
    uint16_t next; /* index chain: slot number + 1, 0 at the end */
    char key[TOPK_KEY_MAX];
};

struct topk {
    size_t k, used;
    size_t mask;     /* index buckets - 1 */
    size_t cursor;   /* where the next search for a minimum starts */
    uint64_t floor;  /* no count is below it */
    uint16_t *index; /* bucket -> slot number + 1, 0 when empty */
    struct slot s[];
};

enum { TOPK_SLOTS_MAX = 65535 }; /* slot numbers + 1 fit 16 bits */

static uint32_t hash(const char *p, size_t len)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

static size_t buckets_for(size_t k)
{
    size_t b = 2;

    while (b < 2 * k)
        b *= 2;
    return b;
}

struct topk *topk_new(size_t k)
{
    if (k > TOPK_SLOTS_MAX)
        return NULL;
    size_t nb = buckets_for(k);
    struct topk *t = calloc(1, sizeof(*t) + k * sizeof(struct slot) + nb * sizeof(uint16_t));

    if (!t)
        return NULL;
    t->k = k;
    t->mask = nb - 1;
    t->index = (uint16_t *)(void *)&t->s[k];
    return t;
}

void topk_del(struct topk *t)
{
    free(t);
}

static void unindex(struct topk *t, struct slot *s)
{
    uint16_t *pp = &t->index[s->hash & t->mask];
    uint16_t me = (uint16_t)(s - t->s + 1);

    while (*pp != me)
        pp = &t->s[*pp - 1].next;
    *pp = s->next;
}

/* A slot with the smallest count. */
static struct slot *least(struct topk *t)
{
    size_t best = t->cursor;

    for (size_t n = 0, i = t->cursor; n < t->k; n++, i = i + 1 == t->k ? 0 : i + 1) {
        if (t->s[i].count <= t->floor) {
            best = i;
            break;
        }
        if (t->s[i].count < t->s[best].count)
            best = i;
    }
    t->floor = t->s[best].count;
    t->cursor = best + 1 == t->k ? 0 : best + 1;
    return &t->s[best];
}

void topk_add(struct topk *t, const char *key, size_t len)
{
    struct slot *s;

    if (!t || !t->k)
        return;
    if (len > TOPK_KEY_MAX - 1)
        len = TOPK_KEY_MAX - 1;
    uint32_t h = hash(key, len);
    for (uint16_t i = t->index[h & t->mask]; i; i = s->next) {
        s = &t->s[i - 1];
        if (s->hash == h && s->len == len && !memcmp(s->key, key, len)) {
            s->count++;
            return;
        }
    }
    if (t->used < t->k) {
        s = &t->s[t->used++];
        s->count = s->error = 0;
    } else {
        s = least(t);
        unindex(t, s);
        s->error = s->count;
    }
    s->count++;
    s->hash = h;
    s->len = (uint16_t)len;
    memcpy(s->key, key, len);
    s->key[len] = 0;
    s->next = t->index[h & t->mask];
    t->index[h & t->mask] = (uint16_t)(s - t->s + 1);
}

static int by_count(const void *a, const void *b)
{
    const struct topk_item *x = a, *y = b;

    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return strcmp(x->key, y->key);
}

size_t topk_list(const struct topk *t, struct topk_item *out, size_t n)
{
    size_t m = 0;

    if (!t)
        return 0;
    struct topk_item *all = malloc((t->used ? t->used : 1) * sizeof(*all));
    if (!all)
        return 0;
    for (size_t i = 0; i < t->used; i++)
        all[i] = (struct topk_item){t->s[i].key, t->s[i].count, t->s[i].error};
    qsort(all, t->used, sizeof(*all), by_count);
    m = t->used < n ? t->used : n;
    memcpy(out, all, m * sizeof(*all));
    free(all);
    return m;
}

size_t topk_memory(const struct topk *t)
{
    return t ? sizeof(*t) + t->k * sizeof(struct slot) + (t->mask + 1) * sizeof(uint16_t) : 0;
}
