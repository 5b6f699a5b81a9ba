/*
 * tls.c - wolfSSL contexts and sessions over memory buffers (see tls.h).
 *
 * Functions: tls_init(), tls_thread_done(), tls_server_ctx(), tls_client_ctx(),
 * tls_ctx_ref(), tls_ctx_unref(), tls_conn_new(), tls_conn_free(), tls_feed(),
 * tls_fed_left(), tls_handshake(), tls_handshake_done(), tls_read(), tls_pending(),
 * tls_write(), tls_shutdown(), tls_out(), tls_out_done(), and the accessors for logs
 * (tls_version(), tls_cipher(), tls_group(), tls_resumed(), tls_peer_verified(), tls_error()).
 *
 * wolfSSL is given two I/O callbacks instead of a socket. The receive callback copies from
 * the ciphertext the owner lent with tls_feed() and answers WANT_READ when that is used up;
 * the send callback appends to the session's output buffer and never answers WANT_WRITE
 * (tls_write checks the room first), so wolfSSL never holds a half-written record and every
 * call returns at once. The owner moves the bytes with its ring's receive and send.
 *
 * Settings, the same for every context: TLS 1.2 and 1.3 only; AEAD suites with forward
 * secrecy only (ECDHE with AES-GCM or ChaCha20-Poly1305, and the TLS 1.3 suites); the key
 * exchange groups of tls_groups[] (X25519 first, the NIST curves for the rest); session
 * tickets (wolfSSL's built-in ticket key, one per context, shared by every worker since the
 * context is) and the session-id cache for TLS 1.2 resumption.
 *
 * SECURITY: every byte fed in is from the network; wolfSSL parses it. The output buffer is
 * bounded by TLS_OUT_BYTES_MAX; a peer that makes us produce more (renegotiation storms,
 * endless alerts) gets an error, not memory. Renegotiation is not enabled.
 *
 * STANDARDS: RFC 8446 (TLS 1.3), RFC 5246 (TLS 1.2), RFC 5077 (tickets), RFC 6066 (SNI).
 */
#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfio.h>

#include "core/alloc.h"
#include "tls/tls.h"

#define TLS_OUT_BYTES_MIN     4096  /* first allocation of the output buffer */
#define TLS_RECORD_OVERHEAD   64    /* header, MAC/tag and padding of one record, at most */
#define TLS_RECORD_BYTES      16384 /* plaintext of one record */

/* Forward-secret AEAD suites only; TLS 1.3 first. ChaCha20-Poly1305 leads: Debian's wolfSSL
 * is built without AES-NI, where it runs at about 2.4 times the speed of AES-GCM (360 against
 * 150 MB/s measured on the bench VM). wolfSSL servers choose by their own order, so this is
 * what inbound sessions get from any client that offers it. */
static const char tls_ciphers[] =
    "TLS13-CHACHA20-POLY1305-SHA256:TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";

/* Key exchange groups (RFC 8446 4.2.7), most preferred first. A TLS 1.3 server takes the best
 * of the key shares the client sent that is on this list, and asks for another
 * (HelloRetryRequest) only when none is; a client sends one key share, for the first group.
 * X25519 leads because Debian's wolfSSL has no assembly for the NIST curves: its generic code
 * spends about 5.2 million instructions on one P-256 shared secret against 0.6 million for
 * X25519 (callgrind, 2026-11), which made P-256 two thirds of a full handshake. OpenSSL, NSS,
 * Go and rustls clients send X25519 first too. Without this list a wolfSSL server preferred
 * P-256 when a client sent both (NSS does: Thunderbird), and our client (the relay's outbound
 * TLS, ringbench) sent a P-256 key share. The rest keep interop: a TLS 1.3 client with only
 * P-256, P-384, P-521, X448 or an FFDHE group completes as before (TLS 1.2 curves are not
 * limited by this list on a server); our client no longer offers the brainpool curves,
 * secp256k1 and secp224r1 that wolfSSL's default list had. */
static int tls_groups[] = {
    WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1, WOLFSSL_ECC_SECP384R1, WOLFSSL_ECC_SECP521R1,
    WOLFSSL_ECC_X448, WOLFSSL_FFDHE_2048, WOLFSSL_FFDHE_3072,
};

struct tls_ctx {
    WOLFSSL_CTX *ctx;
    _Atomic unsigned refs;        /* holders: the configuration, each session */
    bool verify;                  /* client: peers' chains and names are checked */
};

struct tls_conn {
    WOLFSSL *ssl;
    struct tls_ctx *ctx;          /* one reference held */
    const unsigned char *in;      /* ciphertext lent by tls_feed(), not owned */
    size_t in_len;                /* bytes of it not taken yet */
    /* Ciphertext goes into pend; tls_out() hands it out as the flight, which stays put until
     * all of it was sent, so a send in flight never sees its bytes move. */
    unsigned char *pend;          /* produced, not handed out yet */
    size_t pend_len, pend_cap;
    unsigned char *flight;        /* handed out by tls_out(), being sent */
    size_t flight_len, flight_off, flight_cap;
    bool handshake_done;
    bool server;
    char err[TLS_ERROR_BYTES];    /* last error */
};

/* io_recv - wolfSSL wants sz bytes: give what was lent, or "want read". */
static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
    struct tls_conn *t = arg;
    size_t n;

    (void)ssl;
    if (!t->in_len)
        return WOLFSSL_CBIO_ERR_WANT_READ;
    n = (size_t)sz < t->in_len ? (size_t)sz : t->in_len;
    memcpy(buf, t->in, n);
    t->in += n;
    t->in_len -= n;
    return (int)n;
}

/* out_reserve - room for n more bytes of output; false beyond TLS_OUT_BYTES_MAX in all. */
static bool out_reserve(struct tls_conn *t, size_t n)
{
    size_t cap = t->pend_cap ? t->pend_cap : TLS_OUT_BYTES_MIN;

    if (t->pend_len + n + (t->flight_len - t->flight_off) > TLS_OUT_BYTES_MAX)
        return false;
    if (t->pend_len + n <= t->pend_cap)
        return true;
    while (cap < t->pend_len + n)
        cap *= 2;
    if (cap > TLS_OUT_BYTES_MAX)
        cap = TLS_OUT_BYTES_MAX;
    t->pend = rr_realloc(t->pend, cap);
    t->pend_cap = cap;
    return true;
}

/* io_send - wolfSSL produced sz bytes of ciphertext: keep them for the owner's send. */
static int io_send(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
    struct tls_conn *t = arg;

    (void)ssl;
    if (!out_reserve(t, (size_t)sz))
        return WOLFSSL_CBIO_ERR_GENERAL;
    memcpy(t->pend + t->pend_len, buf, (size_t)sz);
    t->pend_len += (size_t)sz;
    return sz;
}

/* tls_init - see tls.h. */
int tls_init(void)
{
    return wolfSSL_Init() == WOLFSSL_SUCCESS ? 0 : -1;
}

/* tls_thread_done - see tls.h. With FP_ECC and thread-local storage (Debian's build),
 * wolfSSL keeps fixed-point tables of the curves a thread used (about 800 KiB each) in that
 * thread's storage; nothing frees them when the thread ends. */
void tls_thread_done(void)
{
#if defined(FP_ECC) && defined(HAVE_ECC)
    wc_ecc_fp_free();
#endif
}

/* set_error - the text of wolfSSL error code e into buf. */
static void set_error(char *buf, size_t cap, const char *what, int e)
{
    char text[WOLFSSL_MAX_ERROR_SZ];

    wolfSSL_ERR_error_string_n((unsigned long)e, text, sizeof(text));
    snprintf(buf, cap, "%s: %s", what, text);
}

/* ctx_new - a context with the common settings, or NULL with err filled. */
static struct tls_ctx *ctx_new(bool server, char *err, size_t err_cap)
{
    struct tls_ctx *c = rr_calloc(1, sizeof(*c));

    c->ctx = wolfSSL_CTX_new(server ? wolfSSLv23_server_method() : wolfSSLv23_client_method());
    if (!c->ctx) {
        snprintf(err, err_cap, "cannot create a TLS context");
        free(c);
        return NULL;
    }
    atomic_init(&c->refs, 1);
    if (wolfSSL_CTX_SetMinVersion(c->ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS ||
        wolfSSL_CTX_set_cipher_list(c->ctx, tls_ciphers) != WOLFSSL_SUCCESS ||
        wolfSSL_CTX_set_groups(c->ctx, tls_groups, (int)(sizeof(tls_groups) /
                                                         sizeof(tls_groups[0]))) !=
            WOLFSSL_SUCCESS) {
        snprintf(err, err_cap, "cannot set the TLS versions, ciphers and groups");
        tls_ctx_unref(c);
        return NULL;
    }
    wolfSSL_CTX_SetIORecv(c->ctx, io_recv);
    wolfSSL_CTX_SetIOSend(c->ctx, io_send);
    return c;
}

/* tls_server_ctx - see tls.h. */
struct tls_ctx *tls_server_ctx(const char *cert_file, const char *key_file, char *err,
                               size_t err_cap)
{
    struct tls_ctx *c = ctx_new(true, err, err_cap);
    int r;

    if (!c)
        return NULL;
    r = wolfSSL_CTX_use_certificate_chain_file(c->ctx, cert_file);
    if (r != WOLFSSL_SUCCESS) {
        set_error(err, err_cap, cert_file, r);
        goto err;
    }
    r = wolfSSL_CTX_use_PrivateKey_file(c->ctx, key_file, WOLFSSL_FILETYPE_PEM);
    if (r != WOLFSSL_SUCCESS) {
        set_error(err, err_cap, key_file, r);
        goto err;
    }
    if (wolfSSL_CTX_check_private_key(c->ctx) != WOLFSSL_SUCCESS) {
        snprintf(err, err_cap, "%s does not match the certificate in %s", key_file, cert_file);
        goto err;
    }
    /* Session ids (TLS 1.2) in wolfSSL's cache; tickets are on by default on a server. */
    wolfSSL_CTX_set_session_cache_mode(c->ctx, WOLFSSL_SESS_CACHE_SERVER);
    return c;
err:
    tls_ctx_unref(c);
    return NULL;
}

/* tls_client_ctx - see tls.h. */
struct tls_ctx *tls_client_ctx(const char *ca_file, char *err, size_t err_cap)
{
    struct tls_ctx *c = ctx_new(false, err, err_cap);
    int r;

    if (!c)
        return NULL;
    if (ca_file) {
        r = wolfSSL_CTX_load_verify_locations(c->ctx, ca_file, NULL);
        if (r != WOLFSSL_SUCCESS) {
            set_error(err, err_cap, ca_file, r);
            tls_ctx_unref(c);
            return NULL;
        }
        wolfSSL_CTX_set_verify(c->ctx, WOLFSSL_VERIFY_PEER, NULL);
        c->verify = true;
    } else {
        /* Opportunistic (RFC 7435): encrypt against passive listening, check nothing. */
        wolfSSL_CTX_set_verify(c->ctx, WOLFSSL_VERIFY_NONE, NULL);
    }
    return c;
}

/* tls_ctx_ref - see tls.h. */
struct tls_ctx *tls_ctx_ref(struct tls_ctx *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

/* tls_ctx_unref - see tls.h. */
void tls_ctx_unref(struct tls_ctx *c)
{
    if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    wolfSSL_CTX_free(c->ctx);
    free(c);
}

/* tls_conn_new - see tls.h. */
struct tls_conn *tls_conn_new(struct tls_ctx *ctx, const char *host)
{
    struct tls_conn *t = rr_calloc(1, sizeof(*t));

    t->ssl = wolfSSL_new(ctx->ctx);
    if (!t->ssl) {
        free(t);
        return NULL;
    }
    t->ctx = tls_ctx_ref(ctx);
    t->server = wolfSSL_is_server(t->ssl);
    wolfSSL_SetIOReadCtx(t->ssl, t);
    wolfSSL_SetIOWriteCtx(t->ssl, t);
    if (!t->server && host && *host) {
        unsigned char addr[16];
        /* RFC 6066 3: "Literal IPv4 and IPv6 addresses are not permitted in HostName". */
        if (inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1)
            wolfSSL_UseSNI(t->ssl, WOLFSSL_SNI_HOST_NAME, host, (unsigned short)strlen(host));
        if (ctx->verify)
            wolfSSL_check_domain_name(t->ssl, host);
    }
    return t;
}

/* tls_conn_free - see tls.h. */
void tls_conn_free(struct tls_conn *t)
{
    if (!t)
        return;
    wolfSSL_free(t->ssl);
    tls_ctx_unref(t->ctx);
    free(t->pend);
    free(t->flight);
    free(t);
}

/* tls_feed - see tls.h. */
void tls_feed(struct tls_conn *t, const void *data, size_t len)
{
    t->in = data;
    t->in_len = len;
}

size_t tls_fed_left(const struct tls_conn *t)
{
    return t->in_len;
}

/* failed - map a wolfSSL failure of call ret to a result; errors keep their text. */
static enum tls_result failed(struct tls_conn *t, int ret, const char *what)
{
    int e = wolfSSL_get_error(t->ssl, ret);

    if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE)
        return TLS_WANT;
    if (e == WOLFSSL_ERROR_ZERO_RETURN)
        return TLS_CLOSED;
    set_error(t->err, sizeof(t->err), what, e);
    return TLS_ERROR;
}

/* tls_handshake - see tls.h. */
enum tls_result tls_handshake(struct tls_conn *t)
{
    int r;

    if (t->handshake_done)
        return TLS_OK;
    r = t->server ? wolfSSL_accept(t->ssl) : wolfSSL_connect(t->ssl);
    if (r == WOLFSSL_SUCCESS) {
        t->handshake_done = true;
        return TLS_OK;
    }
    return failed(t, r, "handshake");
}

bool tls_handshake_done(const struct tls_conn *t)
{
    return t->handshake_done;
}

/* tls_read - see tls.h. */
ssize_t tls_read(struct tls_conn *t, void *buf, size_t cap)
{
    int r;

    if (cap > INT32_MAX)
        cap = INT32_MAX;
    r = wolfSSL_read(t->ssl, buf, (int)cap);
    if (r > 0)
        return r;
    return failed(t, r, "read");
}

bool tls_pending(const struct tls_conn *t)
{
    return wolfSSL_pending(t->ssl) > 0;
}

/* tls_write - see tls.h. */
ssize_t tls_write(struct tls_conn *t, const void *buf, size_t len)
{
    size_t records = len / TLS_RECORD_BYTES + 1;
    int r;

    if (!len)
        return 0;
    if (len > INT32_MAX / 2 || !out_reserve(t, len + records * TLS_RECORD_OVERHEAD)) {
        snprintf(t->err, sizeof(t->err), "write: %zu bytes of ciphertext wait to be sent",
                 t->pend_len + t->flight_len - t->flight_off);
        return TLS_WANT;
    }
    r = wolfSSL_write(t->ssl, buf, (int)len);
    if (r == (int)len)
        return r;
    if (r > 0) {  /* cannot happen: the room was there, so wolfSSL wrote everything */
        snprintf(t->err, sizeof(t->err), "write: short write of %d of %zu bytes", r, len);
        return TLS_ERROR;
    }
    r = failed(t, r, "write");
    if (r == TLS_WANT) {  /* the send callback never wants: treat as an error */
        snprintf(t->err, sizeof(t->err), "write: unexpected retry");
        return TLS_ERROR;
    }
    return r;
}

/* tls_shutdown - see tls.h. */
void tls_shutdown(struct tls_conn *t)
{
    if (t->handshake_done)
        (void)wolfSSL_shutdown(t->ssl);
}

/* tls_out - see tls.h: the rest of the flight, or what is pending as a new flight. */
const void *tls_out(struct tls_conn *t, size_t *len)
{
    if (t->flight_off == t->flight_len && t->pend_len) {
        unsigned char *b = t->flight;
        size_t cap = t->flight_cap;
        t->flight = t->pend;
        t->flight_cap = t->pend_cap;
        t->flight_len = t->pend_len;
        t->flight_off = 0;
        t->pend = b;
        t->pend_cap = cap;
        t->pend_len = 0;
    }
    *len = t->flight_len - t->flight_off;
    return *len ? t->flight + t->flight_off : NULL;
}

/* tls_out_done - see tls.h. A drained buffer larger than the first allocation (a handshake
 * flight, a big write) is given back, so an idle session holds little. */
void tls_out_done(struct tls_conn *t, size_t n)
{
    t->flight_off += n < t->flight_len - t->flight_off ? n : t->flight_len - t->flight_off;
    if (t->flight_off < t->flight_len)
        return;
    t->flight_off = t->flight_len = 0;
    if (t->flight_cap > TLS_OUT_BYTES_MIN) {
        free(t->flight);
        t->flight = NULL;
        t->flight_cap = 0;
    }
    if (!t->pend_len && t->pend_cap > TLS_OUT_BYTES_MIN) {
        free(t->pend);
        t->pend = NULL;
        t->pend_cap = 0;
    }
}

const char *tls_version(const struct tls_conn *t)
{
    return wolfSSL_get_version(t->ssl);
}

const char *tls_cipher(const struct tls_conn *t)
{
    return wolfSSL_get_cipher_name(t->ssl);
}

/* tls_group - see tls.h. */
const char *tls_group(const struct tls_conn *t)
{
    const char *name = wolfSSL_get_curve_name(t->ssl);

    return name && *name ? name : "-";
}

bool tls_resumed(const struct tls_conn *t)
{
    return wolfSSL_session_reused(t->ssl) == 1;
}

bool tls_peer_verified(const struct tls_conn *t)
{
    return t->handshake_done && t->ctx->verify;
}

const char *tls_error(const struct tls_conn *t)
{
    return t->err;
}
