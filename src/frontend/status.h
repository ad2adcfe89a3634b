/* status — the built-in status page: the HTML (compiled in from
 * status.html, no external assets) and the JSON it polls. Keeps a short
 * history of queries per second and the cache hit ratio, sampled on a
 * timer, so a page opened now still draws the last minutes. */
#ifndef DV_FRONTEND_STATUS_H
#define DV_FRONTEND_STATUS_H

#include <ev.h>
#include <stddef.h>

#include "core/buf.h"
#include "frontend/expo.h"

struct query_engine;
struct status;

enum {
    STATUS_SAMPLE_S = 2,  /* seconds between history samples */
    STATUS_HISTORY = 150, /* samples kept: five minutes */
    STATUS_TOP = 10,      /* names and clients shown */
};

extern const unsigned char status_page_html[];
extern const size_t status_page_html_len;

/* Samples qe's counters from now on. NULL on allocation failure. */
struct status *status_new(struct ev_loop *loop, const struct query_engine *qe);
void status_del(struct status *s);

/* The JSON document at /status.json. privacy: 0 shows client addresses,
 * names, applications and recent queries with their clients; 1 all but
 * client addresses; 2 aggregates only. */
void status_json(const struct status *s, const struct expo_view *v, unsigned privacy,
                 struct buf *b);

/* Appends s[0..len) as a JSON string, quotes included: ", \ and every byte
 * outside printable ASCII escaped, and <, >, & too so the text is inert in
 * HTML. The bytes are untrusted (query names). */
void status_json_str(struct buf *b, const char *s, size_t len);

#endif
