/*
 * smtp_client_tls.c - the outbound client's TLS transport (RFC 3207 STARTTLS to the next
 * hop): wolfSSL over memory buffers, the ciphertext on the connection's ring operations.
 *
 * Functions: otls_begin() (STARTTLS was answered 220: switch the connection to this
 * transport and start the handshake), otls_failed() (log, count, then the plaintext retry or
 * the failure), otls_free(); the transport itself is struct oconn_io tls_io, which the
 * protocol (net/smtp_client.c) calls like the plaintext one.
 *
 * How it works: the protocol hands over plaintext pieces (commands, message content) with
 * send() and asks for reply bytes with recv(). The pieces are encrypted into records - large
 * pieces where they lie, small ones gathered into one record of up to
 * CLIENT_TLS_RECORD_BYTES - and the ciphertext is sent with the ring, one ring send in flight
 * at a time; while it is, more plaintext is encrypted behind it (tls_out() keeps the bytes
 * being sent in place), up to TLS_OUT_BYTES_MAX of ciphertext in all, which bounds what a
 * connection holds. Only when every piece is out does the protocol hear oconn_send_done(),
 * with the plaintext byte count, as from the plaintext transport. Received ciphertext is lent
 * to the session (tls_feed) and decrypted into the bytes the reply parser reads. wolfSSL
 * never sees the socket and never blocks. The handshake is bounded by command_timeout (the
 * protocol's timer), and once it is done the protocol says EHLO again (oconn_ehlo_again).
 *
 * SECURITY: ciphertext is parsed by wolfSSL; a bad record, an alert or a failed check ends
 * the connection. Nothing read before TLS is used after it: the protocol forgets the
 * extensions (c->ext) when TLS begins, and refuses bytes behind the 220 to STARTTLS before
 * calling here. The peer name for verification is the MX host or smarthost name, or for an
 * [address] smarthost the address text, which no CA-issued certificate carries (verify then
 * fails, as with Postfix). Every outcome is logged (event=relay_tls, event=relay_tls_failed)
 * and counted (ringrelay_relay_tls_total).
 *
 * STANDARDS: RFC 3207 (4.2: EHLO again after TLS), RFC 7435 (opportunistic security: the
 * plaintext retry of mode may), RFC 6125 (host names in certificates, in tls/tls.c), RFC 8446
 * 5.1 (record size).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "net/smtp_client_int.h"
#include "tls/tls.h"

#define CLIENT_TLS_RX_BYTES  16384   /* ciphertext received at once */
#define CLIENT_TLS_RECORD_BYTES 16384 /* plaintext gathered into one TLS record (the maximum
                                        record, RFC 8446 5.1): fewer, larger records */

static void tls_up(struct worker *w, struct oconn *c);

struct otls {
    struct tls_conn *conn;        /* the session (its ciphertext buffers are in tls.c) */
    const struct iovec *src;      /* plaintext the protocol is sending (not owned), or NULL */
    unsigned src_n, src_i;        /* its pieces, and the piece being encrypted */
    size_t src_off;               /* bytes of that piece encrypted */
    size_t src_bytes;             /* plaintext bytes of this send: what oconn_send_done() hears */
    uint32_t stage_len;           /* bytes gathered in stage */
    bool want;                    /* the protocol wants reply bytes */
    bool pumping;                 /* inside tls_pump: a nested call only sets flags */
    char rx[CLIENT_TLS_RX_BYTES]; /* ciphertext received, lent to the session (tls_feed) */
    char plain[CLIENT_IN_BYTES];  /* decrypted reply bytes for the parser */
    char stage[CLIENT_TLS_RECORD_BYTES]; /* small pieces gathered into one record */
};

/* otls_free - end c's TLS state, if any (no close_notify: the socket closes next). */
void otls_free(struct oconn *c)
{
    if (!c->tls)
        return;
    tls_conn_free(c->tls->conn);
    free(c->tls);
    c->tls = NULL;
}

/* tls_arm_rx - receive ciphertext (the session has taken everything lent before). */
static void tls_arm_rx(struct worker *w, struct oconn *c)
{
    struct io_uring_sqe *sqe;

    if (c->recv_armed || c->closing || c->restart)
        return;
    c->recv_armed = true;
    c->ops++;
    sqe = engine_sqe(w);
    io_uring_prep_recv(sqe, c->fd, c->tls->rx, sizeof(c->tls->rx), 0);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_OUT_RECV, c->slot, c->gen));
}

/* tls_encrypt - turn as much of the send's plaintext into records as the session's output
 * buffer takes: a piece of a full record or more where it lies, smaller ones gathered in
 * stage first. 0 (done or the output is full), or TLS_ERROR. */
static int tls_encrypt(struct otls *t)
{
    ssize_t r;

    for (;;) {
        if (t->src_i < t->src_n) {
            const struct iovec *v = &t->src[t->src_i];
            size_t left = v->iov_len - t->src_off;
            if (!left) {
                t->src_i++;
                t->src_off = 0;
                continue;
            }
            if (!t->stage_len && left >= CLIENT_TLS_RECORD_BYTES) {
                r = tls_write(t->conn, (const char *)v->iov_base + t->src_off,
                              CLIENT_TLS_RECORD_BYTES);
                if (r < 0)
                    return r == TLS_WANT ? 0 : TLS_ERROR;
                t->src_off += CLIENT_TLS_RECORD_BYTES;
                continue;
            }
            if (t->stage_len < CLIENT_TLS_RECORD_BYTES) {
                size_t n = CLIENT_TLS_RECORD_BYTES - t->stage_len;
                if (n > left)
                    n = left;
                memcpy(t->stage + t->stage_len, (const char *)v->iov_base + t->src_off, n);
                t->stage_len += (uint32_t)n;
                t->src_off += n;
                continue;
            }
        } else if (!t->stage_len) {
            return 0;
        }
        /* stage is full, or the pieces are all in it */
        r = tls_write(t->conn, t->stage, t->stage_len);
        if (r < 0)
            return r == TLS_WANT ? 0 : TLS_ERROR;
        t->stage_len = 0;
    }
}

/* tls_send_more - encrypt what the output buffer takes of the protocol's plaintext, send
 * the ciphertext (one ring send at a time), and when all of it is out tell the protocol
 * (oconn_send_done). Called again by each send completion. */
static void tls_send_more(struct worker *w, struct oconn *c)
{
    struct otls *t = c->tls;
    struct io_uring_sqe *sqe;
    const void *out;
    size_t len, n;

    if (c->closing || c->restart)
        return;
    if (t->src && tls_encrypt(t) < 0) {
        otls_failed(w, c, tls_error(t->conn), false);
        return;
    }
    if (c->wire_armed)
        return;
    out = tls_out(t->conn, &len);
    if (len) {
        c->wire_armed = true;
        c->ops++;
        sqe = engine_sqe(w);
        io_uring_prep_send(sqe, c->fd, out, len, MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_OUT_SEND, c->slot, c->gen));
        return;
    }
    if (t->src && t->src_i == t->src_n && !t->stage_len) {
        n = t->src_bytes;
        t->src = NULL;
        oconn_send_done(w, c, (int)n);  /* last: the protocol may start the next send */
    }
}

/* tls_pump - drive the session with what was received: the handshake, then reply bytes for
 * the parser while the protocol wants them. Asks for ciphertext when the session needs it.
 * Every call out of here may end or restart the connection; the loop re-checks, and a
 * changed attempt means c->tls (t) is freed. */
static void tls_pump(struct worker *w, struct oconn *c)
{
    struct otls *t = c->tls;
    uint32_t attempt = c->attempt;
    ssize_t n;

    if (t->pumping)
        return;
    t->pumping = true;
    while (c->attempt == attempt && !c->closing && !c->restart) {
        if (!tls_handshake_done(t->conn)) {
            enum tls_result r = tls_handshake(t->conn);
            if (r == TLS_OK) {
                tls_up(w, c);  /* logs, counts, sends EHLO */
                continue;
            }
            if (r == TLS_WANT && !tls_fed_left(t->conn)) {
                tls_send_more(w, c);  /* the next flight */
                if (c->attempt == attempt)
                    tls_arm_rx(w, c);
                break;
            }
            otls_failed(w, c, r == TLS_WANT ? "handshake stalled with input left"
                                           : tls_error(t->conn), false);
            break;
        }
        if (!t->want)
            break;
        n = tls_read(t->conn, t->plain, sizeof(t->plain));
        if (n > 0) {
            t->want = false;  /* oconn_recv_done asks again (arm_recv) when it needs more */
            oconn_recv_done(w, c, t->plain, (int)n);
            continue;
        }
        if (n == TLS_WANT && !tls_fed_left(t->conn)) {
            tls_send_more(w, c);  /* a post-handshake message may have made output */
            if (c->attempt == attempt)
                tls_arm_rx(w, c);
            break;
        }
        if (n == TLS_CLOSED)
            oconn_recv_done(w, c, NULL, 0);  /* close_notify: the end of the connection */
        else
            otls_failed(w, c, n == TLS_WANT ? "read stalled with input left"
                                           : tls_error(t->conn), false);
        break;
    }
    if (c->attempt == attempt)
        t->pumping = false;
}

/* tls_send - encrypt and send the plaintext pieces iov[0..n). */
static void tls_send(struct worker *w, struct oconn *c, const struct iovec *iov, unsigned n)
{
    struct otls *t = c->tls;

    t->src = iov;
    t->src_n = n;
    t->src_i = 0;
    t->src_off = 0;
    t->src_bytes = 0;
    for (unsigned i = 0; i < n; i++)
        t->src_bytes += iov[i].iov_len;
    tls_send_more(w, c);
}

/* tls_sent - ciphertext went (or the connection is lost). */
static void tls_sent(struct worker *w, struct oconn *c, int res)
{
    struct otls *t = c->tls;

    c->wire_armed = false;
    if (c->closing || c->restart)
        return;
    if (res < 0) {
        if (!tls_handshake_done(t->conn)) {
            otls_failed(w, c, strerror(-res), false);
        } else if (t->src) {
            t->src = NULL;
            oconn_send_done(w, c, res);
        } else {
            oconn_failf(w, c, "lost connection with %s while sending: %s", c->remote,
                        strerror(-res));
        }
        return;
    }
    tls_out_done(t->conn, (size_t)res);
    tls_send_more(w, c);  /* the rest, what was encrypted behind it, or oconn_send_done */
}

/* tls_recv - the protocol wants reply bytes: decrypt what is there, or receive more. */
static void tls_recv(struct worker *w, struct oconn *c)
{
    c->tls->want = true;
    tls_pump(w, c);  /* inside tls_pump already: its loop sees want */
}

/* tls_received - ciphertext arrived (or the end of the connection). */
static void tls_received(struct worker *w, struct oconn *c, int res)
{
    struct otls *t = c->tls;

    c->recv_armed = false;
    if (c->closing || c->restart)
        return;
    if (res <= 0) {
        if (!tls_handshake_done(t->conn))
            otls_failed(w, c, res ? strerror(-res) : "connection closed by the server", false);
        else
            oconn_recv_done(w, c, NULL, res);
        return;
    }
    tls_feed(t->conn, t->rx, (size_t)res);
    tls_pump(w, c);
}

static const struct oconn_io tls_io = {
    "tls", tls_send, tls_recv, tls_sent, tls_received,
};

/* tls_peer_name - the name the certificate must carry: the MX host or smarthost name; for an
 * [address] smarthost (or a target without a name) the address text, into buf (tls.c sends
 * no SNI for an address, and a verifying context then matches the text, which fails). */
static const char *tls_peer_name(const struct oconn *c, char *buf, size_t cap)
{
    const struct sockaddr_storage *ss = &c->d->targets[c->target];

    if (c->d->target_names[c->target][0])
        return c->d->target_names[c->target];
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf, (socklen_t)cap);
    else
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, buf, (socklen_t)cap);
    return buf;
}

/* otls_begin - STARTTLS was answered 220 and everything before it is settled: switch the
 * connection to the TLS transport and start the handshake, bounded by command_timeout. */
void otls_begin(struct worker *w, struct oconn *c)
{
    struct tls_ctx *ctx = w->cfg->tls_client_ctx;
    char addr[INET6_ADDRSTRLEN] = "";
    struct otls *t;

    if (!ctx) {  /* the mode changed to none by a reload after STARTTLS was sent */
        oconn_fail(w, c, "local error: no TLS client context");
        return;
    }
    t = rr_calloc(1, sizeof(*t));
    t->conn = tls_conn_new(ctx, tls_peer_name(c, addr, sizeof(addr)));
    if (!t->conn) {
        free(t);
        oconn_fail(w, c, "local error: cannot start a TLS session");
        return;
    }
    c->tls = t;
    c->io = &tls_io;
    c->ext = 0;  /* RFC 3207 4.2: what the server said before TLS is forgotten */
    c->size_max = 0;
    oconn_set_deadline(w, c, w->cfg->command_timeout_ms);
    tls_pump(w, c);
}

/* tls_up - the handshake is done: log and count it, then the protocol says EHLO again. */
static void tls_up(struct worker *w, struct oconn *c)
{
    const struct tls_conn *s = c->tls->conn;

    metrics_add(&w->m->relay_tls[tls_resumed(s) ? TLSR_RESUMED : TLSR_SUCCESS], 1);
    log_event(LOG_INFO, "event=relay_tls remote=%s version=%s cipher=%s verified=%s resumed=%s",
              log_q(c->remote), log_q(tls_version(s)), log_q(tls_cipher(s)),
              tls_peer_verified(s) ? "yes" : "no", tls_resumed(s) ? "yes" : "no");
    oconn_ehlo_again(w, c);
}

/* otls_failed - the TLS session failed (handshake, timeout, bad record): log and count it.
 * A failed handshake in mode may is retried once on a new connection to the same address
 * without STARTTLS; otherwise the connection fails with a 4.7.5 reason (encrypt and verify:
 * the next address, then the destination is deferred). */
void otls_failed(struct worker *w, struct oconn *c, const char *err, bool timeout)
{
    bool handshake = !c->tls || !tls_handshake_done(c->tls->conn);
    bool retry = handshake && w->cfg->relay_tls == RELAY_TLS_MAY && !oconn_stopping();

    if (c->closing || c->restart)
        return;
    metrics_add(&w->m->relay_tls[timeout ? TLSR_TIMEOUT : TLSR_FAILURE], 1);
    log_event(LOG_INFO, "event=relay_tls_failed remote=%s stage=%s error=%s next=%s",
              log_q(c->remote), handshake ? "handshake" : "session",
              log_q(timeout ? "timeout" : err && *err ? err : "unknown"),
              retry ? "plaintext_retry" : "fail");
    if (retry) {
        c->tls_skip = true;
        oconn_next_target(w, c);  /* same address: c->target is unchanged */
        return;
    }
    if (handshake)
        oconn_failf(w, c, "4.7.5 Cannot start TLS: handshake failure with %s: %s", c->remote,
                    timeout ? "timeout" : err);
    else
        oconn_failf(w, c, "TLS error with %s: %s", c->remote, err);
}
