#include "core/topk.h"

#include <stdlib.h>
#include <string.h>

struct slot {
    uint64_t count, error;
    uint32_t hash;
    uint16_t len;
    char key[TOPK_KEY_MAX];
};

struct topk {
    size_t k, used;
    struct slot s[];
};

static uint32_t hash(const char *p, size_t len)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

struct topk *topk_new(size_t k)
{
    struct topk *t = calloc(1, sizeof(*t) + k * sizeof(struct slot));

    if (t)
        t->k = k;
    return t;
}

void topk_del(struct topk *t)
{
    free(t);
}

void topk_add(struct topk *t, const char *key, size_t len)
{
    struct slot *min = NULL;

    if (!t || !t->k)
        return;
    if (len > TOPK_KEY_MAX - 1)
        len = TOPK_KEY_MAX - 1;
    uint32_t h = hash(key, len);
    for (size_t i = 0; i < t->used; i++) {
        struct slot *s = &t->s[i];
        if (s->hash == h && s->len == len && !memcmp(s->key, key, len)) {
            s->count++;
            return;
        }
        if (!min || s->count < min->count)
            min = s;
    }
    if (t->used < t->k) {
        min = &t->s[t->used++];
        min->count = min->error = 0;
    } else {
        min->error = min->count;
    }
    min->count++;
    min->hash = h;
    min->len = (uint16_t)len;
    memcpy(min->key, key, len);
    min->key[len] = 0;
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
    return t ? sizeof(*t) + t->k * sizeof(struct slot) : 0;
}
