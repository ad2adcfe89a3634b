#include "upstream/frame.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"

void frame_init(struct frame_rd *f)
{
    memset(f, 0, sizeof(*f));
    f->state = FRAME_LEN_HI;
}

void frame_free(struct frame_rd *f)
{
    free(f->body);
    frame_init(f);
}

bool frame_partial(const struct frame_rd *f)
{
    return f->state != FRAME_LEN_HI;
}

void frame_put_len(uint8_t *out, size_t len)
{
    out[0] = (uint8_t)(len >> 8);
    out[1] = (uint8_t)len;
}

long frame_read(struct frame_rd *f, const uint8_t *in, size_t len, const uint8_t **pmsg,
                size_t *pmsglen)
{
    size_t used = 0;

    *pmsg = NULL;
    *pmsglen = 0;
    while (used < len) {
        switch (f->state) {
        case FRAME_LEN_HI:
            /* a whole frame already in the input needs no copy */
            if (len - used >= 2) {
                size_t n = (size_t)in[used] << 8 | in[used + 1];
                if (len - used - 2 >= n) {
                    *pmsg = in + used + 2;
                    *pmsglen = n;
                    return (long)(used + 2 + n);
                }
            }
            f->want = (size_t)in[used++] << 8;
            f->state = FRAME_LEN_LO;
            break;
        case FRAME_LEN_LO:
            f->want |= in[used++];
            f->have = 0;
            if (f->want == 0) {
                f->state = FRAME_LEN_HI;
                *pmsg = in + used; /* any valid pointer: length 0 */
                return (long)used;
            }
            if (f->cap < f->want) {
                uint8_t *nb = realloc(f->body, f->want);
                if (!nb)
                    return DV_ENOMEM;
                f->body = nb;
                f->cap = f->want;
            }
            f->state = FRAME_BODY;
            break;
        case FRAME_BODY: {
            size_t n = f->want - f->have;
            if (n > len - used)
                n = len - used;
            memcpy(f->body + f->have, in + used, n);
            f->have += n;
            used += n;
            if (f->have == f->want) {
                f->state = FRAME_LEN_HI;
                *pmsg = f->body;
                *pmsglen = f->want;
                return (long)used;
            }
            break;
        }
        }
    }
    return (long)used;
}
