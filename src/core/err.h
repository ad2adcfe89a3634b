/* dnsveil error codes: every fallible function returns 0 (or a length) on
 * success and one of these negative values on failure. The functions list the
 * codes they can return above their prototypes. */
#ifndef DV_CORE_ERR_H
#define DV_CORE_ERR_H

enum {
    DV_OK = 0,
    DV_ENOMEM = -1,     /* allocation failed */
    DV_EMALFORMED = -2, /* bytes do not form a valid DNS message (FORMERR) */
    DV_ENOTQUERY = -3,  /* not a DNS query at all: drop, do not answer */
    DV_ENOTIMP = -4,    /* opcode we do not implement (NOTIMP) */
    DV_EBADVERS = -5,   /* EDNS version we do not speak (BADVERS) */
    DV_ESPACE = -6,     /* output buffer too small */
    DV_ETIMEOUT = -7,   /* deadline passed */
    DV_ECONN = -8,      /* connection refused, reset or lost */
    DV_EPROTO = -9,     /* peer violated its protocol */
    DV_ETLS = -10,      /* TLS handshake or certificate verification failed */
    DV_ECANCEL = -11,   /* cancelled by the owner */
    DV_EMISMATCH = -12, /* answer does not match the question asked */
    DV_EIO = -13,       /* a system call failed; errno says why */
    DV_EINVAL = -14,    /* invalid argument or configuration value */
    DV_ESERVFAIL = -15, /* upstream answered SERVFAIL/REFUSED: try another */
    DV_EAGAIN = -16,    /* non-blocking I/O would block: wait for readiness */
    DV_EHTTP = -17,     /* DoH server answered with an HTTP error status */
};

/* A short English description of code, never NULL. */
const char *dv_strerror(int code);

#endif
