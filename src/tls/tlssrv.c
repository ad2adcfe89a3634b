/* tlssrv — wolfSSL server contexts and connections; see tlssrv.h. */
#include "tls/tlssrv.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"

#ifdef DV_HAVE_TLS

#include <limits.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>

#include <ngtcp2/ngtcp2_crypto_wolfssl.h>

#include "tls/quic_crypto.h"

struct tlssrv_ctx {
    WOLFSSL_CTX *ctx;
    unsigned refs;
};

struct tlssrv_conn {
    struct tlssrv_ctx *t;
    WOLFSSL *ssl;
    bool want_write;
    bool ready;
    bool shut;
};

static int ctx_new(const char *cert, const char *key, bool quic, struct tlssrv_ctx **pctx)
{
    struct tlssrv_ctx *t;
    int rc = DV_EINVAL;

    *pctx = NULL;
    if (wolfSSL_Init() != WOLFSSL_SUCCESS)
        return DV_ETLS;
    if (!(t = calloc(1, sizeof(*t))))
        return DV_ENOMEM;
    t->refs = 1;
    if (!(t->ctx = wolfSSL_CTX_new(wolfSSLv23_server_method()))) {
        free(t);
        return DV_ENOMEM;
    }
    if (wolfSSL_CTX_SetMinVersion(t->ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS ||
        (quic && (ngtcp2_crypto_wolfssl_configure_server_context(t->ctx) != 0 ||
                  quic_crypto_configure(t->ctx) != 0))) {
        rc = DV_ETLS;
        goto fail;
    }
    if (quic) {
        /* QUIC's early data is unbounded here; flow control bounds it */
        (void)wolfSSL_CTX_set_max_early_data(t->ctx, UINT32_MAX);
    }
    if (wolfSSL_CTX_use_certificate_chain_file(t->ctx, cert) != WOLFSSL_SUCCESS) {
        log_err("tls listener: cannot load the certificate chain from %s "
                "(unreadable, or not PEM certificates)", cert);
        goto fail;
    }
    if (wolfSSL_CTX_use_PrivateKey_file(t->ctx, key, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS) {
        log_err("tls listener: cannot load the private key from %s (unreadable, or not a PEM key)",
                key);
        goto fail;
    }
    if (wolfSSL_CTX_check_private_key(t->ctx) != WOLFSSL_SUCCESS) {
        log_err("tls listener: the key in %s does not belong to the certificate in %s", key, cert);
        goto fail;
    }
    *pctx = t;
    return 0;
fail:
    wolfSSL_CTX_free(t->ctx);
    free(t);
    return rc;
}

int tlssrv_ctx_new(const char *cert, const char *key, struct tlssrv_ctx **pctx)
{
    return ctx_new(cert, key, false, pctx);
}

int tlssrv_ctx_new_quic(const char *cert, const char *key, struct tlssrv_ctx **pctx)
{
    return ctx_new(cert, key, true, pctx);
}

void *tlssrv_ctx_native(struct tlssrv_ctx *t)
{
    return t->ctx;
}

void tlssrv_ctx_ref(struct tlssrv_ctx *t)
{
    t->refs++;
}

void tlssrv_ctx_unref(struct tlssrv_ctx *t)
{
    if (!t || --t->refs > 0)
        return;
    wolfSSL_CTX_free(t->ctx);
    free(t);
}

int tlssrv_conn_new(struct tlssrv_ctx *t, int fd, const char *alpn, struct tlssrv_conn **pconn)
{
    struct tlssrv_conn *c = calloc(1, sizeof(*c));

    *pconn = NULL;
    if (!c)
        return DV_ENOMEM;
    if (!(c->ssl = wolfSSL_new(t->ctx))) {
        free(c);
        return DV_ENOMEM;
    }
    if (wolfSSL_set_fd(c->ssl, fd) != WOLFSSL_SUCCESS ||
        (alpn && wolfSSL_UseALPN(c->ssl, (char *)alpn, (unsigned)strlen(alpn),
                                 WOLFSSL_ALPN_FAILED_ON_MISMATCH) != WOLFSSL_SUCCESS)) {
        wolfSSL_free(c->ssl);
        free(c);
        return DV_ETLS;
    }
    c->t = t;
    t->refs++;
    *pconn = c;
    return 0;
}

void tlssrv_conn_free(struct tlssrv_conn *c)
{
    if (!c)
        return;
    wolfSSL_free(c->ssl);
    tlssrv_ctx_unref(c->t);
    free(c);
}

/* Maps a failed wolfSSL call; failures are the client's, logged at debug. */
static int tlssrv_conn_error(struct tlssrv_conn *c, int ret, const char *what)
{
    int err = wolfSSL_get_error(c->ssl, ret);

    c->want_write = false;
    switch (err) {
    case WOLFSSL_ERROR_WANT_READ:
        return DV_EAGAIN;
    case WOLFSSL_ERROR_WANT_WRITE:
        c->want_write = true;
        return DV_EAGAIN;
    case WOLFSSL_ERROR_ZERO_RETURN:
    case SOCKET_PEER_CLOSED_E:
    case SOCKET_ERROR_E:
        return DV_ECONN;
    default:
        log_debug("tls listener: %s: %s (%d)", what,
                  wolfSSL_ERR_reason_error_string((unsigned long)err), err);
        return DV_ETLS;
    }
}

int tlssrv_conn_handshake(struct tlssrv_conn *c)
{
    int ret;

    if (c->ready)
        return 0;
    ret = wolfSSL_accept(c->ssl);
    if (ret != WOLFSSL_SUCCESS)
        return tlssrv_conn_error(c, ret, "handshake");
    c->want_write = false;
    c->ready = true;
    return 0;
}

long tlssrv_conn_read(struct tlssrv_conn *c, void *buf, size_t len)
{
    int n = wolfSSL_read(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);

    if (n > 0) {
        c->want_write = false;
        return n;
    }
    return tlssrv_conn_error(c, n, "read");
}

long tlssrv_conn_write(struct tlssrv_conn *c, const void *buf, size_t len)
{
    int n = wolfSSL_write(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);

    if (n > 0) {
        c->want_write = false;
        return n;
    }
    return tlssrv_conn_error(c, n, "write");
}

bool tlssrv_conn_pending(const struct tlssrv_conn *c)
{
    /* records already read from the socket but not yet decrypted count
     * too: the socket will not say readable for them again */
    return wolfSSL_pending((WOLFSSL *)c->ssl) > 0 || wolfSSL_has_pending(c->ssl);
}

bool tlssrv_conn_wants_write(const struct tlssrv_conn *c)
{
    return c->want_write;
}

bool tlssrv_conn_resumed(const struct tlssrv_conn *c)
{
    return c->ready && wolfSSL_session_reused(c->ssl);
}

void tlssrv_conn_shutdown(struct tlssrv_conn *c)
{
    if (c->ready && !c->shut) {
        c->shut = true;
        (void)wolfSSL_shutdown(c->ssl);
    }
}

#else /* !DV_HAVE_TLS: the listeners cannot be configured to start */

int tlssrv_ctx_new(const char *cert, const char *key, struct tlssrv_ctx **pctx)
{
    (void)cert;
    (void)key;
    *pctx = NULL;
    log_err("tls listener: built without wolfSSL");
    return DV_ETLS;
}
int tlssrv_ctx_new_quic(const char *cert, const char *key, struct tlssrv_ctx **pctx)
{
    return tlssrv_ctx_new(cert, key, pctx);
}
void *tlssrv_ctx_native(struct tlssrv_ctx *t) { (void)t; return NULL; }
void tlssrv_ctx_ref(struct tlssrv_ctx *t) { (void)t; }
void tlssrv_ctx_unref(struct tlssrv_ctx *t) { (void)t; }
int tlssrv_conn_new(struct tlssrv_ctx *t, int fd, const char *alpn, struct tlssrv_conn **pconn)
{
    (void)t;
    (void)fd;
    (void)alpn;
    *pconn = NULL;
    return DV_ETLS;
}
void tlssrv_conn_free(struct tlssrv_conn *c) { (void)c; }
int tlssrv_conn_handshake(struct tlssrv_conn *c) { (void)c; return DV_ETLS; }
long tlssrv_conn_read(struct tlssrv_conn *c, void *b, size_t l) { (void)c; (void)b; (void)l; return DV_ETLS; }
long tlssrv_conn_write(struct tlssrv_conn *c, const void *b, size_t l) { (void)c; (void)b; (void)l; return DV_ETLS; }
bool tlssrv_conn_pending(const struct tlssrv_conn *c) { (void)c; return false; }
bool tlssrv_conn_wants_write(const struct tlssrv_conn *c) { (void)c; return false; }
bool tlssrv_conn_resumed(const struct tlssrv_conn *c) { (void)c; return false; }
void tlssrv_conn_shutdown(struct tlssrv_conn *c) { (void)c; }

#endif
