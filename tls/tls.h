/*
 * tls.h - wolfSSL over memory: contexts (certificate, key, CA) and TLS sessions that never
 * touch a socket. The owner feeds received ciphertext in and takes ciphertext out to send
 * with its own ring operations; wolfSSL's I/O callbacks only copy between those buffers and
 * answer "want read" / "want write", so nothing in here ever blocks.
 *
 * A session, from the owner's side:
 *   tls_feed(t, bytes, len)      lend received ciphertext (not copied; see tls_feed)
 *   tls_handshake(t)             TLS_OK once done; TLS_WANT: feed more or send what is out
 *   tls_read(t, buf, cap)        plaintext, or TLS_WANT / TLS_CLOSED / TLS_ERROR
 *   tls_write(t, buf, len)       plaintext in; ciphertext appears in tls_out()
 *   tls_out(t, &len) / tls_out_done(t, n)   ciphertext to send, and how much went
 * The layer knows nothing of SMTP: the inbound session (net/smtp_tls.c) and the relay
 * client (net/smtp_client.c) are its two users.
 *
 * Contexts are reference counted: a reload makes a new one and publishes it; sessions keep
 * the one they started with until they end.
 */
#ifndef RR_TLS_H
#define RR_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TLS_OUT_BYTES_MAX   65536  /* ciphertext waiting to be sent, per session: a full
                                      handshake flight with a certificate chain fits */
#define TLS_ERROR_BYTES     128    /* text of the last error */

enum tls_result {
    TLS_OK = 0,                   /* done (handshake) */
    TLS_WANT = -1,                /* needs more ciphertext in, or tls_out() drained */
    TLS_CLOSED = -2,              /* the peer sent close_notify */
    TLS_ERROR = -3,               /* fatal: alert, bad record, failed verification */
};

struct tls_ctx;
struct tls_conn;

/* tls_init - load wolfSSL once per process (main thread, before any context). */
int tls_init(void);

/* tls_thread_done - free what wolfSSL keeps per thread (ECC tables); call it on a thread
 * that ran handshakes, as the last TLS call before the thread ends. */
void tls_thread_done(void);

/* tls_server_ctx - a server context from a PEM certificate chain and key (RSA or ECDSA);
 * TLS 1.2 and 1.3 only, modern AEAD suites, session tickets. NULL with err filled when the
 * files do not load or do not match. */
struct tls_ctx *tls_server_ctx(const char *cert_file, const char *key_file, char *err,
                               size_t err_cap);

/* tls_client_ctx - a client context. ca_file non-NULL: peers must present a chain to one of
 * its CAs ("verify"); NULL: any certificate is taken (opportunistic encryption). */
struct tls_ctx *tls_client_ctx(const char *ca_file, char *err, size_t err_cap);

/* tls_ctx_ref / tls_ctx_unref - reference counting; any thread. The last unref frees. */
struct tls_ctx *tls_ctx_ref(struct tls_ctx *ctx);
void tls_ctx_unref(struct tls_ctx *ctx);

/* tls_conn_new - a session on ctx (a reference is taken). For a client, host (may be NULL)
 * is sent as SNI (unless it is an IP address literal, RFC 6066 3) and, on a verifying
 * context, checked against the certificate. NULL when out of memory. */
struct tls_conn *tls_conn_new(struct tls_ctx *ctx, const char *host);

/* tls_conn_free - end the session (no close_notify: see tls_shutdown) and drop its ctx. */
void tls_conn_free(struct tls_conn *t);

/* tls_feed - lend len bytes of received ciphertext. They are not copied: the session reads
 * from them during the next tls_handshake/tls_read calls, and tls_fed_left() says how many
 * it has not taken yet; the caller keeps the bytes alive until that is 0 (or feeds again,
 * which replaces what is left). */
void tls_feed(struct tls_conn *t, const void *data, size_t len);
size_t tls_fed_left(const struct tls_conn *t);

/* tls_handshake - advance the handshake. */
enum tls_result tls_handshake(struct tls_conn *t);
bool tls_handshake_done(const struct tls_conn *t);

/* tls_read - up to cap bytes of plaintext (> 0), or TLS_WANT, TLS_CLOSED, TLS_ERROR.
 * Plaintext already decrypted but not taken stays inside; tls_pending() says so. */
ssize_t tls_read(struct tls_conn *t, void *buf, size_t cap);
bool tls_pending(const struct tls_conn *t);

/* tls_write - encrypt len bytes (all or nothing): len, TLS_WANT when the ciphertext would
 * not fit in TLS_OUT_BYTES_MAX (send what is out first), or TLS_ERROR. */
ssize_t tls_write(struct tls_conn *t, const void *buf, size_t len);

/* tls_shutdown - queue a close_notify alert in tls_out(). */
void tls_shutdown(struct tls_conn *t);

/* tls_out - ciphertext waiting to be sent (NULL, *len 0 when none); tls_out_done - n bytes
 * of it were sent. The bytes handed out stay where they are until tls_out_done() reports all
 * of them sent, whatever else is called on t meanwhile (so a ring send may be in flight while
 * more is read or written); call tls_out() again for the rest or for what came since. */
const void *tls_out(struct tls_conn *t, size_t *len);
void tls_out_done(struct tls_conn *t, size_t n);

/* For logs and metrics, after the handshake. */
const char *tls_version(const struct tls_conn *t);   /* "TLSv1.3" */
const char *tls_cipher(const struct tls_conn *t);    /* "TLS13-AES256-GCM-SHA384" */
const char *tls_group(const struct tls_conn *t);     /* key exchange: "X25519", "SECP256R1";
                                                        "-" when wolfSSL does not say */
bool tls_resumed(const struct tls_conn *t);          /* by ticket or session id */
bool tls_peer_verified(const struct tls_conn *t);    /* client: chain and name checked */
const char *tls_error(const struct tls_conn *t);     /* last error, "" if none */

#endif
