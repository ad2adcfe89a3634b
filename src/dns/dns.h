/* dns — the DNS wire format. Pure functions over byte buffers: no I/O, no
 * allocation, no global state. Every read and write of wire bytes goes through
 * struct dns_cur, whose error sticks, so a sequence of reads needs one check at
 * the end and a short packet can never be over-read.
 *
 * Upstream answers are as untrusted as client queries: they enter the shared
 * cache, so they are parsed with the same care. */
#ifndef DV_DNS_DNS_H
#define DV_DNS_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    DNS_HDR_LEN = 12,
    DNS_NAME_MAX = 255,  /* wire length, including the root label */
    DNS_LABEL_MAX = 63,
    DNS_MSG_MAX = 65535,
    DNS_UDP_CLASSIC = 512,   /* limit without EDNS (RFC 1035) */
    DNS_EDNS_DEFAULT = 1232, /* our advertised size (DNS flag day 2020) */
};

/* Header flag bits (second 16-bit word). */
enum {
    DNS_FLAG_QR = 0x8000,
    DNS_FLAG_AA = 0x0400,
    DNS_FLAG_TC = 0x0200,
    DNS_FLAG_RD = 0x0100,
    DNS_FLAG_RA = 0x0080,
    DNS_FLAG_AD = 0x0020,
    DNS_FLAG_CD = 0x0010,
};
#define DNS_OPCODE(flags) (((flags) >> 11) & 0xf)
#define DNS_RCODE(flags) ((flags) & 0xf)

enum { DNS_OPCODE_QUERY = 0 };

enum {
    DNS_RCODE_NOERROR = 0,
    DNS_RCODE_FORMERR = 1,
    DNS_RCODE_SERVFAIL = 2,
    DNS_RCODE_NXDOMAIN = 3,
    DNS_RCODE_NOTIMP = 4,
    DNS_RCODE_REFUSED = 5,
    DNS_RCODE_BADVERS = 16, /* extended: upper 8 bits live in the OPT TTL */
};

enum {
    DNS_TYPE_A = 1,
    DNS_TYPE_NS = 2,
    DNS_TYPE_CNAME = 5,
    DNS_TYPE_SOA = 6,
    DNS_TYPE_PTR = 12,
    DNS_TYPE_MX = 15,
    DNS_TYPE_TXT = 16,
    DNS_TYPE_AAAA = 28,
    DNS_TYPE_SRV = 33,
    DNS_TYPE_OPT = 41,
    DNS_TYPE_HTTPS = 65,
    DNS_TYPE_IXFR = 251,
    DNS_TYPE_AXFR = 252,
    DNS_TYPE_ANY = 255,
};
enum { DNS_CLASS_IN = 1 };

/* EDNS option codes. */
enum {
    DNS_OPT_ECS = 8,        /* client subnet (RFC 7871) */
    DNS_OPT_COOKIE = 10,
    DNS_OPT_KEEPALIVE = 11, /* edns-tcp-keepalive (RFC 7828) */
    DNS_OPT_PADDING = 12,   /* RFC 7830 */
};

enum { DNS_SEC_ANSWER = 0, DNS_SEC_AUTHORITY = 1, DNS_SEC_ADDITIONAL = 2 };

/* ---- cursor ------------------------------------------------------------ */

/* A bounds-checked view of one message. base is the start of the message:
 * compression pointers are offsets from it. For reading, len is the message
 * length; for writing, len is the buffer capacity and pos the bytes written.
 * err is 0 until the first failed access (DV_EMALFORMED on a read past the end,
 * DV_ESPACE on a write past the capacity); after that every access is a no-op
 * that reads as zero. A put on a read cursor fails with DV_ESPACE. */
struct dns_cur {
    uint8_t *base;
    size_t len;
    size_t pos;
    int err;
    bool writable; /* set only by dns_cur_init_w */
};

/* Read cursor over msg[0..len). The cursor never writes through base. */
void dns_cur_init(struct dns_cur *c, const uint8_t *msg, size_t len);
/* Write cursor over buf[0..cap), positioned at 0. */
void dns_cur_init_w(struct dns_cur *c, uint8_t *buf, size_t cap);

size_t dns_cur_left(const struct dns_cur *c);
uint8_t dns_cur_u8(struct dns_cur *c);
uint16_t dns_cur_u16(struct dns_cur *c);
uint32_t dns_cur_u32(struct dns_cur *c);
void dns_cur_read(struct dns_cur *c, void *dst, size_t n);
void dns_cur_skip(struct dns_cur *c, size_t n);
/* Moves to absolute offset pos (must be <= len). */
void dns_cur_seek(struct dns_cur *c, size_t pos);
void dns_cur_put_u8(struct dns_cur *c, uint8_t v);
void dns_cur_put_u16(struct dns_cur *c, uint16_t v);
void dns_cur_put_u32(struct dns_cur *c, uint32_t v);
void dns_cur_put(struct dns_cur *c, const void *src, size_t n);

/* Unchecked big-endian helpers for callers that already checked the length. */
static inline uint16_t dns_get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline void dns_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

/* ---- header -------------------------------------------------------------- */

struct dns_hdr {
    uint16_t id, flags, qdcount, ancount, nscount, arcount;
};

void dns_hdr_read(struct dns_cur *c, struct dns_hdr *h);
void dns_hdr_write(struct dns_cur *c, const struct dns_hdr *h);

/* ---- names --------------------------------------------------------------- */

/* Reads the name at the cursor, following compression pointers (only
 * backwards, at most 127 hops, total wire length <= 255, labels <= 63), into
 * out in uncompressed wire form, and advances the cursor past the name as
 * it appears in place. Returns the wire length of out (>= 1), or 0 with
 * c->err set to DV_EMALFORMED. out may be NULL to validate and skip. */
size_t dns_name_read(struct dns_cur *c, uint8_t *out /* [DNS_NAME_MAX] */);

/* ASCII lower-casing of an uncompressed wire name in place. */
void dns_name_lower(uint8_t *name, size_t len);
/* Case-insensitive equality of two uncompressed wire names. */
bool dns_name_eq(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);
/* True when name equals parent or is below it (case-insensitive, label-wise). */
bool dns_name_is_sub(const uint8_t *name, size_t len, const uint8_t *parent, size_t plen);
/* Presentation form ("www.example.com.", "." for the root; bytes outside
 * letters/digits/-/_ escaped as \DDD) of an uncompressed wire name, for logs.
 * Always NUL-terminates when cap > 0; returns the string length, truncated. */
size_t dns_name_to_str(const uint8_t *name, size_t len, char *out, size_t cap);
/* Parses a presentation name ("example.com", "example.com.", ".") into wire
 * form. Returns the wire length, or DV_EINVAL. */
int dns_name_from_str(const char *s, uint8_t *out /* [DNS_NAME_MAX] */);

/* ---- question ------------------------------------------------------------ */

struct dns_question {
    uint8_t name[DNS_NAME_MAX]; /* uncompressed wire form, case as received */
    uint16_t name_len;
    uint16_t qtype, qclass;
};

/* Reads one question entry at the cursor. 0 or DV_EMALFORMED. */
int dns_question_read(struct dns_cur *c, struct dns_question *q);

/* ---- EDNS(0) -------------------------------------------------------------- */

struct dns_edns {
    bool present;
    uint16_t udp_size;       /* as sent (a value below 512 means 512) */
    uint8_t ext_rcode;       /* upper 8 bits of the extended RCODE */
    uint8_t version;
    bool do_bit;
    size_t rr_off, rr_len;   /* the whole OPT RR inside the message */
    bool has_ecs, has_padding, has_cookie;
    bool has_keepalive;
    uint16_t keepalive;      /* in 100 ms units; valid when has_keepalive and keepalive_len == 2 */
    uint16_t keepalive_len;  /* 0 in a query, 2 in a response */
};

/* Parses the RDATA of an OPT RR (options list) into e: sets the has_* flags
 * and keepalive. 0 or DV_EMALFORMED (an option overruns the RDATA). */
int dns_edns_parse_opts(const uint8_t *rdata, size_t rdlen, struct dns_edns *e);

/* Writes an OPT RR (root owner) at the cursor with no options. */
void dns_edns_write(struct dns_cur *c, uint16_t udp_size, bool do_bit, uint8_t ext_rcode);

/* Appends option code with data to the OPT RR that starts at opt_rr_off and
 * ends the message msg[0..*len) (the RR's RDLENGTH is updated). The message
 * grows in place up to cap. 0, DV_ESPACE or DV_EMALFORMED. */
int dns_edns_add_opt(uint8_t *msg, size_t *len, size_t cap, size_t opt_rr_off,
                     uint16_t code, const void *data, uint16_t dlen);

/* Pads a query (RFC 8467 block-length padding): makes the total message length
 * a multiple of block by adding a padding option to its OPT RR, adding an OPT
 * RR first (UDP size DNS_EDNS_DEFAULT) if the message has none, and removing
 * any existing padding option. Also removes any client-subnet option, which
 * must never leave through an encrypted transport. The OPT RR must be the last
 * RR of the message (true for queries we forward). 0, DV_ESPACE, DV_EMALFORMED,
 * or DV_EINVAL when block is 0 or above DNS_MSG_MAX. On an error the message is
 * unchanged. */
int dns_edns_pad_query(uint8_t *msg, size_t *len, size_t cap, size_t block);

/* Removes every option with code from the message's OPT RR, shrinking *len.
 * Records after the OPT move down with their compression pointers adjusted.
 * 0 (also when there is nothing to remove) or DV_EMALFORMED (also when a later
 * name points into the OPT RR); on an error the message is unchanged. */
int dns_edns_strip_opt(uint8_t *msg, size_t *len, uint16_t code);

struct dns_rr;
/* Fills e from the OPT RR rr of msg (found with dns_msg_find_opt): size, DO,
 * version, extended rcode, rr_off/rr_len, options. 0 or DV_EMALFORMED. */
int dns_edns_read(const uint8_t *msg, size_t len, const struct dns_rr *rr, struct dns_edns *e);

/* ---- resource records --------------------------------------------------- */

struct dns_rr {
    int section;          /* DNS_SEC_* */
    size_t off;           /* start of the RR (its owner name) */
    size_t name_end;      /* offset just past the owner name in place */
    uint16_t type, rclass;
    uint32_t ttl;
    size_t ttl_off;       /* offset of the 32-bit TTL field */
    uint16_t rdlen;
    size_t rdata_off;
};

struct dns_rr_iter {
    struct dns_cur cur;
    uint16_t left[3];
    int section;
};

/* Positions it after the header and question section of msg. 0 or
 * DV_EMALFORMED (short header or unparsable question). */
int dns_rr_iter_init(struct dns_rr_iter *it, const uint8_t *msg, size_t len);
/* 1 with *rr filled, 0 at the end of the additional section, or
 * DV_EMALFORMED. Owner names are validated (compression-safe). */
int dns_rr_next(struct dns_rr_iter *it, struct dns_rr *rr);

/* Walks the whole message and finds its OPT RR. 1 with *opt filled, 0 when
 * there is none, DV_EMALFORMED when any RR does not parse, bytes trail the
 * last section, or the OPT rules are broken (OPT outside the additional
 * section, more than one, an owner other than the root, or an option that
 * overruns the RDATA). dns_response_check applies the same rules. */
int dns_msg_find_opt(const uint8_t *msg, size_t len, struct dns_rr *opt /* may be NULL */);

/* Subtracts elapsed seconds from every TTL in the answer, authority and
 * additional sections (floor 0), never touching OPT. The message must have
 * passed dns_response_check. */
void dns_msg_age(uint8_t *msg, size_t len, uint32_t elapsed);

/* The smallest TTL over answer/authority/additional (OPT excluded); for an
 * answer without records, UINT32_MAX. The message must have passed
 * dns_response_check. */
uint32_t dns_msg_min_ttl(const uint8_t *msg, size_t len);

/* ---- messages ----------------------------------------------------------- */

/* What the data path needs to know about a client query. */
struct dns_query_info {
    struct dns_hdr hdr;
    struct dns_question q;
    size_t question_end;    /* offset just past the question */
    struct dns_edns edns;
};

/* Parses a client query.
 *   0              one well-formed QUERY with QDCOUNT 1
 *   DV_ENOTQUERY   shorter than a header, or QR set: drop it silently
 *   DV_ENOTIMP     opcode other than QUERY (hdr filled)
 *   DV_EMALFORMED  header present but the rest is malformed: FORMERR
 *                  (hdr filled; q filled only if the question parsed,
 *                  else q.name_len is 0)
 *   DV_EBADVERS    EDNS version other than 0 (everything filled)
 * The OPT RR, if any, must be in the additional section; more than one OPT is
 * malformed. Answer/authority records in a query are tolerated if well-formed. */
int dns_query_parse(const uint8_t *msg, size_t len, struct dns_query_info *qi);

/* Checks an upstream answer before it is used or cached: a whole well-formed
 * message, QR set, opcode QUERY, exactly one question equal
 * (case-insensitively) to q's name, type and class, every RR parsable, at
 * most one OPT. 0, DV_EMALFORMED or DV_EMISMATCH. */
int dns_response_check(const uint8_t *msg, size_t len, const struct dns_question *q);

/* An upstream's final answer for q: dns_response_check, and no TC. Plain
 * DNS retries a truncated UDP answer over TCP before it gets this far, and
 * over TCP, TLS, HTTP/2 or QUIC there is nothing to truncate: a TC answer
 * is a broken one (it must not be forwarded or cached). 0, DV_EMALFORMED,
 * DV_EMISMATCH or DV_EPROTO (TC). */
int dns_upstream_answer_check(const uint8_t *msg, size_t len, const struct dns_question *q);

/* Builds an error reply (header + the question if qi->q parsed + an OPT RR if
 * the query had one) with rcode into out. qi may have come from a failed
 * dns_query_parse (only hdr is then trusted; the question is echoed only when
 * it parsed, which the caller says with have_question). Extended rcodes
 * (BADVERS) go to the OPT RR. Returns the length, DV_ESPACE, or DV_EINVAL for
 * an rcode outside 0..4095 or an extended rcode when the query had no EDNS. */
int dns_reply_error(const struct dns_query_info *qi, bool have_question, int rcode,
                    uint8_t *out, size_t cap);

/* If len > limit, rewrites msg in place into a truncated reply: the header
 * with TC set and the record counts zeroed, the question, and the original
 * OPT RR if any (fits: it was in the answer). Returns the new length (or len
 * unchanged when it fits). */
size_t dns_msg_truncate(uint8_t *msg, size_t len, size_t limit);

/* Restores the client's view in an answer built for a normalised question:
 * sets the ID and copies the question name bytes (same length, differing only
 * in case) from q. The answer must have passed dns_response_check against q. */
void dns_msg_restore(uint8_t *msg, size_t len, uint16_t id, const struct dns_question *q);

/* Shapes the EDNS of an answer for the client that will receive it: when the
 * client sent no OPT, removes the answer's OPT RR (only when it is the last
 * RR, as it always is in practice); otherwise sets the OPT's UDP size to
 * udp_size. Returns the new length. The message must have passed
 * dns_response_check. (src/dns/msg.c) */
size_t dns_msg_fit_edns(uint8_t *msg, size_t len, bool client_edns, uint16_t udp_size);

#endif
