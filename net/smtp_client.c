/*
 * smtp_client.c - outbound SMTP connections on a worker's ring (RFC 5321 client side).
 *
 * Functions: smtp_client_open() and the connection table (smtp_client_init, _fini, _busy,
 * _stop, _complete). The queue (core/queue.c) decides what to send; a connection here carries
 * jobs for one destination, one transaction at a time, until the queue has none left for it
 * or messages_per_connection is reached, then says QUIT.
 *
 * A connection is a state machine: CONNECT, GREETING, EHLO (HELO when EHLO is refused),
 * STARTTLS and the TLS handshake when both sides want them, READY, then per job TXN (MAIL,
 * RCPT..., DATA; sent as one batch when the peer offers PIPELINING, else one at a time), BODY
 * (content read back from the spool segment with IORING_OP_READ, dot-stuffed by
 * net/smtp_stuff.c into iovecs that point into the read buffer), DOT (the reply to the final
 * dot), RSET, QUIT. Every wait has a deadline: connect_timeout for the connection and the
 * greeting, command_timeout for each reply after that and for the whole TLS handshake.
 *
 * Transports: the protocol code sends plaintext pieces and asks for reply bytes through one
 * small vtable (struct oconn_io) and hears back through send_done() and recv_done(). The
 * plaintext transport is the ring's send/sendmsg and receive on the socket, the pieces
 * pointing where they lie (no copy). The TLS transport (tls/tls.h over memory buffers)
 * encrypts the pieces into records - large pieces where they lie, small ones gathered into
 * one record of up to CLIENT_TLS_RECORD_BYTES - sends the ciphertext with the ring, and
 * decrypts received ciphertext into the bytes the reply parser reads. wolfSSL never sees the
 * socket and never blocks. One ring send is in flight at a time, as in plaintext; while it
 * is, more plaintext is encrypted behind it (tls_out() keeps the bytes being sent in place),
 * up to TLS_OUT_BYTES_MAX of ciphertext in all, which bounds what a connection holds.
 *
 * [relay] tls: none never says STARTTLS. may (the default) says STARTTLS when the peer offers
 * it; a refused STARTTLS continues in plaintext, and a failed or timed-out handshake is logged,
 * counted and retried once on a new connection to the same address without STARTTLS
 * (Postfix's "may"); a peer without STARTTLS gets plaintext. encrypt: no STARTTLS offered, a
 * refusal or a failed handshake fail the connection with a 4.7.x reason, like any connection
 * that did not get through EHLO (next address, then the destination is backed off and its
 * jobs deferred). verify: as encrypt, and the certificate chain must lead to a CA of
 * [relay] tls_ca_file and name the next hop: the MX host name, or the smarthost's host name.
 * An [address] smarthost has no name; its address text is the name to match (and no SNI is
 * sent), which a CA-issued certificate does not carry, so verify fails there, as with
 * Postfix's verify for an [address] next hop: name a smarthost by host name to verify it.
 *
 * Each operation carries {op, slot, gen}; at most one connect, one receive, one send and one
 * read are in flight per connection. A connection is freed in one place (conn_reap) once it
 * is closing and nothing is in flight.
 *
 * Next hops: the destination's targets, best first. A connection that cannot get past the
 * greeting and EHLO tries the next address (at most CLIENT_TARGET_TRIES); when they are
 * exhausted the destination as a whole failed (queue_dest_failed: it is backed off).
 *
 * Source addresses: [relay] source_addresses of the target's family, taken in turn per
 * worker (bind_source); an IPv6 target never gets an IPv4 source nor the reverse, and with
 * none of its family the kernel chooses. "ADDRESS%INTERFACE" also binds to the device.
 *
 * STANDARDS: RFC 5321 (3.3, 4.1, 4.2, 4.5.2 transparency, 4.5.3.2 timeouts), RFC 2920
 * PIPELINING, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3463 status codes,
 * RFC 3207 STARTTLS (4.2: what the server said before TLS is forgotten and EHLO is sent
 * again), RFC 7435 opportunistic security (may), RFC 6125 (host names in certificates).
 *
 * SECURITY: every reply byte is from the peer: net/smtp_reply.c parses it with bounded
 * buffers and a malformed reply drops the connection. The content sent is re-encoded by
 * smtp_stuff, so no bare CR or LF and no early end of data can leave the relay. Bytes that
 * follow the 220 to STARTTLS in the same read (plaintext injected ahead of TLS, the
 * CVE-2011-0411 pattern; a TLS server does not speak first) fail the start of TLS before the
 * handshake begins; nothing read before TLS is used after it. Ciphertext is parsed by wolfSSL;
 * a bad record, an alert or a failed check ends the connection. Every TLS outcome is logged
 * (event=relay_tls, event=relay_tls_failed) and counted (ringrelay_relay_tls_total).
 */
#include <errno.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/queue_int.h"
#include "net/smtp_reply.h"
#include "net/smtp_stuff.h"
#include "tls/tls.h"

#define CLIENT_IN_BYTES      4096    /* reply bytes received at once */
#define CLIENT_READ_BYTES    65536   /* content read from the spool at once */
#define CLIENT_IOV_MAX       64      /* iovecs in one body send */
#define CLIENT_TARGET_TRIES  5       /* addresses one connection tries (Postfix: 5) */
#define CLIENT_REPLY_BYTES   512     /* a reply kept for logs and bounces */
#define CLIENT_IDLE_MS       2000    /* an idle connection waits this long for a job (Postfix's
                                        smtp_connection_cache_time_limit) */
#define CLIENT_TLS_RX_BYTES  16384   /* ciphertext received at once */
#define CLIENT_TLS_RECORD_BYTES 16384 /* plaintext gathered into one TLS record (the maximum
                                        record, RFC 8446 5.1): fewer, larger records */

enum cstate {
    CS_CONNECT, CS_GREETING, CS_EHLO, CS_HELO, CS_STARTTLS, CS_TLS, CS_READY, CS_TXN, CS_BODY,
    CS_DOT, CS_RSET, CS_QUIT, CS_CLOSED
};

static const char *const state_name[] = {
    "connect", "greeting", "EHLO", "HELO", "STARTTLS", "TLS handshake", "ready",
    "MAIL/RCPT/DATA", "message content", "end of data", "RSET", "QUIT", "closed",
};

struct oconn;
struct otls;

/* The transport under the protocol code: how plaintext goes out and reply bytes come in.
 * Plaintext is the ring's send and receive on the socket; TLS encrypts and decrypts in
 * between. The protocol code calls send and recv and hears back through send_done() (the
 * plaintext bytes that went, or -errno) and recv_done() (reply bytes, or 0 / -errno at the
 * end); sent and received take the ring completions of the connection's send and receive. */
struct oconn_io {
    const char *name;             /* "plain", "tls" */
    /* send - send the plaintext pieces iov[0..n), which stay put until send_done() */
    void (*send)(struct worker *w, struct oconn *c, const struct iovec *iov, unsigned n);
    /* recv - the protocol wants reply bytes */
    void (*recv)(struct worker *w, struct oconn *c);
    /* sent, received - a ring send or receive of the connection completed with res */
    void (*sent)(struct worker *w, struct oconn *c, int res);
    void (*received)(struct worker *w, struct oconn *c, int res);
};

struct oconn {
    uint32_t slot, gen;
    int fd;
    struct qdest *d;
    enum cstate st;
    unsigned target;              /* index in d->targets */
    unsigned tries;               /* addresses tried */
    bool greeted;                 /* got past EHLO/HELO once: failures are the job's */
    char remote[DNS_NAME_BYTES_MAX + 64]; /* "name[addr]:port", for logs */
    uint32_t ext;                 /* enum smtp_ext of the peer */
    uint64_t size_max;            /* peer's SIZE, 0 = none */
    uint32_t ops;                 /* operations in flight */
    uint32_t attempt;             /* connections made so far: a code path that finds it changed
                                     after a call knows its socket and TLS state are gone */
    bool recv_armed, wire_armed, read_armed, connect_armed; /* ring operations in flight */
    bool sending;                 /* a send of commands or content is under way (the transport
                                     may take several ring sends for it); ends in send_done */
    const struct oconn_io *io;    /* transport: plaintext, or TLS once STARTTLS got 220 */
    struct otls *tls;             /* the TLS transport's state, else NULL */
    bool tls_skip;                /* no STARTTLS on this address: the plaintext retry after a
                                     failed handshake in mode may (once per address) */
    struct iovec cmd_iov;         /* the command bytes being sent: out[out_off..out_len) */
    bool parsing;                 /* replies in c->in are being read: no receive into it now */
    bool want_recv;               /* a receive is wanted once parsing is over */
    bool closing;                 /* no new operations; reaped when ops reach 0 */
    struct engine_timer timer;    /* deadline of the current wait */
    struct smtp_reply_parser rp;
    struct smtp_reply reply;      /* the reply just completed */
    char in[CLIENT_IN_BYTES];
    char *out;                    /* commands to send; never changed while it is being sent
                                     (new commands wait in later) */
    size_t out_len, out_off, out_cap;
    char *later;                  /* commands queued while out is being sent */
    size_t later_len, later_cap;
    bool body_waits;              /* 354 came before our commands were all sent */
    bool restart;                 /* trying the next address once the operations drained */
    bool idle;                    /* in its destination's idle list (d->idle) */
    struct oconn *idle_next;
    /* the transaction */
    struct qjob *job;
    uint8_t *res;                 /* enum job_rcpt_result per recipient of the job */
    char **rtext;                 /* reply per recipient (malloc'd) */
    uint16_t sent;                /* commands of the transaction sent (without pipelining) */
    uint16_t replied;             /* replies of the transaction read: 0 MAIL, 1..n RCPT, n+1 DATA */
    uint16_t accepted;            /* recipients the peer took */
    bool mail_ok;
    uint32_t msgs;                /* transactions on this connection */
    /* the content */
    struct smtp_stuff stuff;
    uint32_t chunk;               /* next chunk of the message to read */
    uint64_t chunk_done;          /* bytes of that chunk read */
    char *rbuf;                   /* CLIENT_READ_BYTES */
    uint32_t rlen, rpos;          /* bytes read, bytes encoded */
    struct iovec iov[CLIENT_IOV_MAX];
    unsigned iov_n, iov_pos;      /* entries filled, first entry not fully sent */
    struct msghdr mh;
    bool finished;                /* the terminator is in iov */
    char why[CLIENT_REPLY_BYTES]; /* why the connection ended early */
};

struct client {
    struct oconn **conns;         /* by slot */
    uint32_t slots;
    uint32_t *free_slots;
    uint32_t free_count;
    uint32_t live;                /* connections not yet reaped */
    uint32_t gen_next;
    unsigned src_next;            /* next source address to bind */
    bool stopping;
};

static __thread struct client *cl;

static void conn_fail(struct worker *w, struct oconn *c, const char *why);
static void conn_failf(struct worker *w, struct oconn *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void recv_done(struct worker *w, struct oconn *c, const char *buf, int res);
static void send_done(struct worker *w, struct oconn *c, int res);
static void next_target(struct worker *w, struct oconn *c);
static void tls_up(struct worker *w, struct oconn *c);
static void tls_failed(struct worker *w, struct oconn *c, const char *err, bool timeout);
static void otls_free(struct oconn *c);
static bool txn_start(struct worker *w, struct oconn *c);
static void idle_unlink(struct oconn *c);
static void body_next(struct worker *w, struct oconn *c);
static void try_connect(struct worker *w, struct oconn *c);

/* smtp_client_init - the connection table. */
int smtp_client_init(struct worker *w)
{
    cl = rr_calloc(1, sizeof(*cl));
    cl->slots = 1024;
    cl->conns = rr_calloc(cl->slots, sizeof(*cl->conns));
    cl->free_slots = rr_calloc(cl->slots, sizeof(*cl->free_slots));
    for (uint32_t i = 0; i < cl->slots; i++)
        cl->free_slots[i] = cl->slots - 1 - i;
    cl->free_count = cl->slots;
    return 0;
}

/* smtp_client_fini - free what is left (after the loop: nothing is in flight). */
void smtp_client_fini(struct worker *w)
{
    if (!cl)
        return;
    for (uint32_t i = 0; i < cl->slots; i++)
        if (cl->conns[i]) {
            struct oconn *c = cl->conns[i];
            if (c->fd >= 0)
                close(c->fd);
            free(c->out);
            free(c->later);
            free(c->rbuf);
            free(c->res);
            if (c->rtext && c->job)
                for (uint16_t k = 0; k < c->job->count; k++)
                    free(c->rtext[k]);
            free(c->rtext);
            otls_free(c);
            free(c);
        }
    free(cl->conns);
    free(cl->free_slots);
    free(cl);
    cl = NULL;
}

/* smtp_client_busy - connections still alive. */
bool smtp_client_busy(struct worker *w)
{
    return cl && cl->live;
}

/* ---- plumbing ---- */

/* set_deadline - the current wait ends in ms at the latest. */
static void set_deadline(struct worker *w, struct oconn *c, uint32_t ms)
{
    engine_timer_set(w, &c->timer, w->now_ms + ms);
}

/* conn_reap - free c when it is closing and nothing is in flight. */
static void conn_reap(struct worker *w, struct oconn *c)
{
    struct qdest *d = c->d;

    if (!c->closing || c->ops)
        return;
    engine_timer_set(w, &c->timer, 0);
    if (c->fd >= 0) {
        struct io_uring_sqe *sqe = engine_sqe(w);
        io_uring_prep_close(sqe, c->fd);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
        c->fd = -1;
    }
    cl->conns[c->slot] = NULL;
    cl->free_slots[cl->free_count++] = c->slot;
    cl->live--;
    free(c->out);
    free(c->later);
    free(c->rbuf);
    free(c->res);
    free(c->rtext);
    otls_free(c);
    free(c);
    queue_conn_gone(w, d);
}

/* conn_close - stop: cancel what is in flight. The caller reaps (its last use of c). */
static void conn_close(struct worker *w, struct oconn *c)
{
    if (c->closing)
        return;
    idle_unlink(c);
    c->closing = true;
    c->st = CS_CLOSED;
    engine_timer_set(w, &c->timer, 0);
    if (c->fd >= 0)
        shutdown(c->fd, SHUT_RDWR);  /* a pending receive or send completes at once */
    if (c->connect_armed) {
        struct io_uring_sqe *sqe = engine_sqe(w);
        io_uring_prep_cancel64(sqe, engine_ud(OP_OUT_CONNECT, c->slot, c->gen), 0);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
    }
}

/* arm_recv - wait for reply bytes (once the replies being parsed are done). */
static void arm_recv(struct worker *w, struct oconn *c)
{
    if (c->closing)
        return;
    if (c->parsing) {
        c->want_recv = true;
        return;
    }
    c->io->recv(w, c);
}

/* flush_out - send the queued command bytes. */
static void flush_out(struct worker *w, struct oconn *c)
{
    if (c->sending || c->closing || c->out_off == c->out_len)
        return;
    c->sending = true;
    c->cmd_iov.iov_base = c->out + c->out_off;
    c->cmd_iov.iov_len = c->out_len - c->out_off;
    c->io->send(w, c, &c->cmd_iov, 1);
}

/* out_add - queue one command line (without CRLF). */
static void out_add(struct oconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_add(struct oconn *c, const char *fmt, ...)
{
    va_list ap;
    int n;
    char **buf = c->sending ? &c->later : &c->out;
    size_t *len = c->sending ? &c->later_len : &c->out_len;
    size_t *cap = c->sending ? &c->later_cap : &c->out_cap;

    if (!c->sending && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    for (;;) {
        size_t room = *cap - *len;
        va_start(ap, fmt);
        n = vsnprintf(*buf ? *buf + *len : NULL, room, fmt, ap);
        va_end(ap);
        if (n >= 0 && *buf && (size_t)n + 2 < room)
            break;
        *cap = *cap * 2 + (size_t)n + 64;
        *buf = rr_realloc(*buf, *cap);
    }
    *len += (size_t)n;
    memcpy(*buf + *len, "\r\n", 2);
    *len += 2;
}

/* out_take_later - the send of out is over: what was queued meanwhile becomes out. */
static void out_take_later(struct oconn *c)
{
    char *t = c->out;
    size_t tc = c->out_cap;

    c->out = c->later;
    c->out_cap = c->later_cap;
    c->out_len = c->later_len;
    c->out_off = 0;
    c->later = t;
    c->later_cap = tc;
    c->later_len = 0;
}

/* reply_text - "CODE text" of the reply just read, into buf. */
static void reply_text(const struct oconn *c, char *buf, size_t cap)
{
    /* The text is cut to the buffer: a reply kept for a log line or a bounce. */
    int n = snprintf(buf, cap, "%03u ", c->reply.code);
    size_t room = cap - (size_t)n - 1, len = strlen(c->reply.text);

    if (len > room)
        len = room;
    memcpy(buf + n, c->reply.text, len);
    buf[(size_t)n + len] = 0;
}

/* ---- transport: plaintext ---- */

/* plain_send - the pieces go to the socket as they lie: one send, or one sendmsg. */
static void plain_send(struct worker *w, struct oconn *c, const struct iovec *iov, unsigned n)
{
    struct io_uring_sqe *sqe = engine_sqe(w);

    c->wire_armed = true;
    c->ops++;
    if (n == 1) {
        io_uring_prep_send(sqe, c->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
    } else {
        memset(&c->mh, 0, sizeof(c->mh));
        c->mh.msg_iov = (struct iovec *)iov;
        c->mh.msg_iovlen = n;
        io_uring_prep_sendmsg(sqe, c->fd, &c->mh, MSG_NOSIGNAL);
    }
    io_uring_sqe_set_data64(sqe, engine_ud(OP_OUT_SEND, c->slot, c->gen));
}

/* plain_sent - the kernel took res bytes of them (or failed). */
static void plain_sent(struct worker *w, struct oconn *c, int res)
{
    c->wire_armed = false;
    send_done(w, c, res);
}

/* plain_recv - receive reply bytes into c->in. */
static void plain_recv(struct worker *w, struct oconn *c)
{
    struct io_uring_sqe *sqe;

    if (c->recv_armed)
        return;
    c->recv_armed = true;
    c->ops++;
    sqe = engine_sqe(w);
    io_uring_prep_recv(sqe, c->fd, c->in, sizeof(c->in), 0);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_OUT_RECV, c->slot, c->gen));
}

/* plain_received - reply bytes (or the end of the connection). */
static void plain_received(struct worker *w, struct oconn *c, int res)
{
    c->recv_armed = false;
    recv_done(w, c, c->in, res);
}

static const struct oconn_io plain_io = {
    "plain", plain_send, plain_recv, plain_sent, plain_received,
};

/* ---- transport: TLS ---- */

struct otls {
    struct tls_conn *conn;        /* the session (its ciphertext buffers are in tls.c) */
    const struct iovec *src;      /* plaintext the protocol is sending (not owned), or NULL */
    unsigned src_n, src_i;        /* its pieces, and the piece being encrypted */
    size_t src_off;               /* bytes of that piece encrypted */
    size_t src_bytes;             /* plaintext bytes of this send: what send_done() hears */
    uint32_t stage_len;           /* bytes gathered in stage */
    bool want;                    /* the protocol wants reply bytes */
    bool pumping;                 /* inside tls_pump: a nested call only sets flags */
    char rx[CLIENT_TLS_RX_BYTES]; /* ciphertext received, lent to the session (tls_feed) */
    char plain[CLIENT_IN_BYTES];  /* decrypted reply bytes for the parser */
    char stage[CLIENT_TLS_RECORD_BYTES]; /* small pieces gathered into one record */
};

/* otls_free - end c's TLS state, if any (no close_notify: the socket closes next). */
static void otls_free(struct oconn *c)
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
 * (send_done). Called again by each send completion. */
static void tls_send_more(struct worker *w, struct oconn *c)
{
    struct otls *t = c->tls;
    struct io_uring_sqe *sqe;
    const void *out;
    size_t len, n;

    if (c->closing || c->restart)
        return;
    if (t->src && tls_encrypt(t) < 0) {
        tls_failed(w, c, tls_error(t->conn), false);
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
        send_done(w, c, (int)n);  /* last: the protocol may start the next send */
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
            tls_failed(w, c, r == TLS_WANT ? "handshake stalled with input left"
                                           : tls_error(t->conn), false);
            break;
        }
        if (!t->want)
            break;
        n = tls_read(t->conn, t->plain, sizeof(t->plain));
        if (n > 0) {
            t->want = false;  /* recv_done asks again (arm_recv) when it needs more */
            recv_done(w, c, t->plain, (int)n);
            continue;
        }
        if (n == TLS_WANT && !tls_fed_left(t->conn)) {
            tls_send_more(w, c);  /* a post-handshake message may have made output */
            if (c->attempt == attempt)
                tls_arm_rx(w, c);
            break;
        }
        if (n == TLS_CLOSED)
            recv_done(w, c, NULL, 0);  /* close_notify: the end of the connection */
        else
            tls_failed(w, c, n == TLS_WANT ? "read stalled with input left"
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
            tls_failed(w, c, strerror(-res), false);
        } else if (t->src) {
            t->src = NULL;
            send_done(w, c, res);
        } else {
            conn_failf(w, c, "lost connection with %s while sending: %s", c->remote,
                       strerror(-res));
        }
        return;
    }
    tls_out_done(t->conn, (size_t)res);
    tls_send_more(w, c);  /* the rest, what was encrypted behind it, or send_done */
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
            tls_failed(w, c, res ? strerror(-res) : "connection closed by the server", false);
        else
            recv_done(w, c, NULL, res);
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

/* tls_begin - STARTTLS was answered 220 and everything before it is settled: switch the
 * connection to the TLS transport and start the handshake, bounded by command_timeout. */
static void tls_begin(struct worker *w, struct oconn *c)
{
    struct tls_ctx *ctx = w->cfg->tls_client_ctx;
    char addr[INET6_ADDRSTRLEN] = "";
    struct otls *t;

    if (!ctx) {  /* the mode changed to none by a reload after STARTTLS was sent */
        conn_fail(w, c, "local error: no TLS client context");
        return;
    }
    t = rr_calloc(1, sizeof(*t));
    t->conn = tls_conn_new(ctx, tls_peer_name(c, addr, sizeof(addr)));
    if (!t->conn) {
        free(t);
        conn_fail(w, c, "local error: cannot start a TLS session");
        return;
    }
    c->tls = t;
    c->io = &tls_io;
    c->ext = 0;  /* RFC 3207 4.2: what the server said before TLS is forgotten */
    c->size_max = 0;
    set_deadline(w, c, w->cfg->command_timeout_ms);
    tls_pump(w, c);
}

/* tls_up - the handshake is done: log and count it, then EHLO again (RFC 3207 4.2). */
static void tls_up(struct worker *w, struct oconn *c)
{
    const struct tls_conn *s = c->tls->conn;

    metrics_add(&w->m->relay_tls[tls_resumed(s) ? TLSR_RESUMED : TLSR_SUCCESS], 1);
    log_event(LOG_INFO, "event=relay_tls remote=%s version=%s cipher=%s verified=%s resumed=%s",
              log_q(c->remote), log_q(tls_version(s)), log_q(tls_cipher(s)),
              tls_peer_verified(s) ? "yes" : "no", tls_resumed(s) ? "yes" : "no");
    c->st = CS_EHLO;
    smtp_reply_init(&c->rp);
    out_add(c, "EHLO %s", w->cfg->hostname);
    flush_out(w, c);
    arm_recv(w, c);
    set_deadline(w, c, w->cfg->command_timeout_ms);
}

/* tls_failed - the TLS session failed (handshake, timeout, bad record): log and count it.
 * A failed handshake in mode may is retried once on a new connection to the same address
 * without STARTTLS; otherwise the connection fails with a 4.7.5 reason (encrypt and verify:
 * the next address, then the destination is deferred). */
static void tls_failed(struct worker *w, struct oconn *c, const char *err, bool timeout)
{
    bool handshake = !c->tls || !tls_handshake_done(c->tls->conn);
    bool retry = handshake && w->cfg->relay_tls == RELAY_TLS_MAY && !cl->stopping;

    if (c->closing || c->restart)
        return;
    metrics_add(&w->m->relay_tls[timeout ? TLSR_TIMEOUT : TLSR_FAILURE], 1);
    log_event(LOG_INFO, "event=relay_tls_failed remote=%s stage=%s error=%s next=%s",
              log_q(c->remote), handshake ? "handshake" : "session",
              log_q(timeout ? "timeout" : err && *err ? err : "unknown"),
              retry ? "plaintext_retry" : "fail");
    if (retry) {
        c->tls_skip = true;
        next_target(w, c);  /* same address: c->target is unchanged */
        return;
    }
    if (handshake)
        conn_failf(w, c, "4.7.5 Cannot start TLS: handshake failure with %s: %s", c->remote,
                   timeout ? "timeout" : err);
    else
        conn_failf(w, c, "TLS error with %s: %s", c->remote, err);
}

/* ---- outcome of a transaction ---- */

/* job_finish - give the job back with the results so far; open recipients get why. */
static void job_finish(struct worker *w, struct oconn *c, const char *why)
{
    struct qjob *j = c->job;
    uint16_t n;

    if (!j)
        return;
    for (uint16_t k = 0; k < j->count; k++)
        if (c->res[k] == JR_NONE) {
            c->res[k] = JR_TEMP;
            free(c->rtext[k]);
            c->rtext[k] = rr_strdup(why);
        }
    c->job = NULL;
    n = j->count;  /* j is the queue's again after this call */
    queue_job_done(w, j, c->res, (const char *const *)c->rtext, c->remote);
    for (uint16_t k = 0; k < n; k++)
        free(c->rtext[k]);
    free(c->rtext);
    free(c->res);
    c->rtext = NULL;
    c->res = NULL;
}

/* job_abort - the transaction ends without the reply to the final dot: nobody was
 * delivered; recipients accepted or not yet answered are deferred with why. */
static void job_abort(struct worker *w, struct oconn *c, const char *why)
{
    if (!c->job)
        return;
    for (uint16_t k = 0; k < c->job->count; k++)
        if (c->res[k] == JR_OK)
            c->res[k] = JR_NONE;
    job_finish(w, c, why);
}

/* set_all - every recipient of the job not yet decided gets r and text. */
static void set_all(struct oconn *c, uint8_t r, const char *text, bool only_accepted)
{
    for (uint16_t k = 0; k < c->job->count; k++) {
        if (only_accepted ? c->res[k] != JR_OK : c->res[k] != JR_NONE)
            continue;
        c->res[k] = r;
        free(c->rtext[k]);
        c->rtext[k] = rr_strdup(text);
    }
}

/* next_job - the transaction is over: another job, or QUIT. */
/* take_and_start - the next job of the destination and its transaction; false when there is
 * none (or the connection's message limit is reached). A job refused before it starts (SIZE,
 * 8BITMIME, SMTPUTF8) ends at once: the next one is taken in this loop, not by recursion. */
static bool take_and_start(struct worker *w, struct oconn *c)
{
    while (c->msgs < w->cfg->msgs_per_conn) {
        c->job = queue_job_take(w, c->d);
        if (!c->job)
            return false;
        if (txn_start(w, c))
            return true;
        c->msgs++;
    }
    return false;
}

/* idle_unlink - c leaves its destination's idle list. */
static void idle_unlink(struct oconn *c)
{
    struct oconn **pp = (struct oconn **)&c->d->idle;

    if (!c->idle)
        return;
    while (*pp != c)
        pp = &(*pp)->idle_next;
    *pp = c->idle_next;
    c->idle = false;
    c->idle_next = NULL;
}

/* quit - say goodbye; the connection closes on the reply. */
static void quit(struct worker *w, struct oconn *c)
{
    idle_unlink(c);
    c->st = CS_QUIT;
    out_add(c, "QUIT");
    flush_out(w, c);
    arm_recv(w, c);
    set_deadline(w, c, w->cfg->command_timeout_ms);
}

/* next_job - a transaction is over: the next job, else wait a moment for one (connection
 * caching: under a steady trickle the queue is often empty for an instant, and a new session
 * per message costs more than the message), else QUIT. */
static void next_job(struct worker *w, struct oconn *c)
{
    c->msgs++;
    if (take_and_start(w, c))
        return;
    if (c->msgs >= w->cfg->msgs_per_conn || cl->stopping) {
        quit(w, c);
        return;
    }
    c->st = CS_READY;
    c->idle = true;
    c->idle_next = c->d->idle;
    c->d->idle = c;
    arm_recv(w, c);  /* a server that gives up on us meanwhile is noticed */
    set_deadline(w, c, CLIENT_IDLE_MS);
}

/* smtp_client_resume - an idle connection to d takes the next job; false when none idles. */
bool smtp_client_resume(struct worker *w, struct qdest *d)
{
    struct oconn *c = d->idle;

    if (!c)
        return false;
    idle_unlink(c);
    if (!take_and_start(w, c))
        quit(w, c);
    return true;
}

/* next_target - close this attempt's socket and connect to c->target (the next address, or
 * the same one for the plaintext retry), now or once the operations on the old socket have
 * drained (smtp_client_complete). The TLS state of the old socket ends with it. */
static void next_target(struct worker *w, struct oconn *c)
{
    if (c->recv_armed || c->wire_armed || c->connect_armed || c->read_armed) {
        c->restart = true;
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_RDWR);
        if (c->connect_armed) {
            struct io_uring_sqe *sqe = engine_sqe(w);
            io_uring_prep_cancel64(sqe, engine_ud(OP_OUT_CONNECT, c->slot, c->gen), 0);
            io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
        }
        engine_timer_set(w, &c->timer, 0);
        return;
    }
    c->restart = false;
    if (c->fd >= 0) {
        struct io_uring_sqe *sqe = engine_sqe(w);
        io_uring_prep_close(sqe, c->fd);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
        c->fd = -1;
    }
    c->out_len = c->out_off = c->later_len = 0;
    c->body_waits = false;
    c->sending = false;
    otls_free(c);
    c->io = &plain_io;
    try_connect(w, c);
}

/* conn_fail - the connection ends early. Before the greeting and EHLO were done, the next
 * address is tried, and when none is left the destination as a whole failed. After that, a
 * job in progress is deferred; on a connection that already delivered, the failure is the
 * connection's (servers limit messages per connection), so the job goes back to the front of
 * the destination's queue for a fresh connection and the destination is not backed off. */
static void conn_fail(struct worker *w, struct oconn *c, const char *why)
{
    struct qdest *d = c->d;

    if (c->closing || c->restart)
        return;
    snprintf(c->why, sizeof(c->why), "%s", why);
    log_event(LOG_INFO, "event=relay_connection_failed relay=%s state=%s reason=%s",
              log_q(c->remote), state_name[c->st], log_q(why));
    if (!c->greeted && c->st != CS_QUIT) {
        if (++c->tries < CLIENT_TARGET_TRIES && c->tries < d->target_count && !cl->stopping) {
            c->target = (c->target + 1) % d->target_count;
            c->tls_skip = false;  /* a new address gets STARTTLS again */
            next_target(w, c);
            return;
        }
        conn_close(w, c);
        queue_dest_failed(w, d, why, false);
        return;
    }
    if (c->job) {
        if (c->msgs > 0 && c->st != CS_DOT && c->st != CS_BODY) {
            struct qjob *j = c->job;
            c->job = NULL;
            for (uint16_t k = 0; k < j->count; k++)
                free(c->rtext[k]);
            free(c->rtext);
            free(c->res);
            c->rtext = NULL;
            c->res = NULL;
            queue_job_requeue(w, j);
        } else {
            job_abort(w, c, why);
            if (c->st != CS_QUIT)
                queue_dest_failed(w, d, why, false);
        }
    }
    conn_close(w, c);
}

/* conn_failf - conn_fail with a formatted reason. */
static void conn_failf(struct worker *w, struct oconn *c, const char *fmt, ...)
{
    char why[CLIENT_REPLY_BYTES];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    conn_fail(w, c, why);
}

/* ---- states ---- */

/* start_body - 354: send the content (once our commands are all out: a server that answers
 * DATA before it has read the batch must not get content interleaved with commands). */
static void start_body(struct worker *w, struct oconn *c)
{
    if (c->sending || c->out_off < c->out_len) {
        c->body_waits = true;
        c->st = CS_BODY;
        return;
    }
    c->st = CS_BODY;
    smtp_stuff_init(&c->stuff);
    c->chunk = 0;
    c->chunk_done = 0;
    c->rlen = c->rpos = 0;
    c->iov_n = c->iov_pos = 0;
    c->finished = false;
    if (!c->rbuf)
        c->rbuf = rr_malloc(CLIENT_READ_BYTES);
    set_deadline(w, c, w->cfg->command_timeout_ms);
    body_next(w, c);
}

/* send_iov - send iov[iov_pos..iov_n). */
static void send_iov(struct worker *w, struct oconn *c)
{
    c->sending = true;
    c->io->send(w, c, c->iov + c->iov_pos, c->iov_n - c->iov_pos);
}

/* body_next - encode what was read and send it, read more, or end with the dot. */
static void body_next(struct worker *w, struct oconn *c)
{
    struct qmsg *m = c->job->m;

    if (c->rpos < c->rlen || (c->chunk >= m->chunk_count && !c->finished)) {
        c->iov_n = c->iov_pos = 0;
        if (c->rpos < c->rlen)
            c->rpos += (uint32_t)smtp_stuff_feed(&c->stuff, c->rbuf + c->rpos, c->rlen - c->rpos,
                                                 c->iov, CLIENT_IOV_MAX, &c->iov_n);
        if (c->rpos == c->rlen && c->chunk >= m->chunk_count &&
            smtp_stuff_finish(&c->stuff, c->iov, CLIENT_IOV_MAX, &c->iov_n))
            c->finished = true;
        if (c->iov_n) {
            send_iov(w, c);
            return;
        }
    }
    if (c->finished) {
        /* RFC 5321 4.5.3.2.6: at least 10 minutes for the reply to the final dot, which is
         * the one a timeout turns into a duplicate. */
        c->st = CS_DOT;
        arm_recv(w, c);
        set_deadline(w, c, w->cfg->command_timeout_ms > 600000 ? w->cfg->command_timeout_ms
                                                                : 600000);
        return;
    }
    if (c->chunk < m->chunk_count) {
        const struct spool_chunk *k = &m->chunks[c->chunk];
        uint64_t left = k->len - c->chunk_done;
        uint32_t want = left < CLIENT_READ_BYTES ? (uint32_t)left : CLIENT_READ_BYTES;
        struct io_uring_sqe *sqe;

        if (!want) {  /* an empty chunk */
            c->chunk++;
            c->chunk_done = 0;
            body_next(w, c);
            return;
        }
        c->read_armed = true;
        c->ops++;
        sqe = engine_sqe(w);
        io_uring_prep_read(sqe, queue_seg_fd(m), c->rbuf, want, k->off + c->chunk_done);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_OUT_READ, c->slot, c->gen));
    }
}

/* txn_start - MAIL, RCPT..., DATA for c->job (all at once with PIPELINING). false when the
 * job was settled without a transaction (the caller takes the next). */
static bool txn_start(struct worker *w, struct oconn *c)
{
    struct qjob *j = c->job;
    struct qmsg *m = j->m;
    char size[40] = "";

    c->res = rr_calloc(j->count, sizeof(*c->res));
    c->rtext = rr_calloc(j->count, sizeof(*c->rtext));
    c->replied = 0;
    c->sent = 0;
    c->accepted = 0;
    c->mail_ok = false;
    /* What the next hop cannot take is bounced now rather than sent damaged. */
    if (c->size_max && m->size > c->size_max) {
        char why[CLIENT_REPLY_BYTES];
        snprintf(why, sizeof(why), "552 5.3.4 message size %" PRIu64 " exceeds the limit %"
                 PRIu64 " of %s", m->size, c->size_max, c->remote);
        set_all(c, JR_PERM, why, false);
    } else if (m->smtputf8 && !(c->ext & SMTP_EXT_SMTPUTF8)) {
        set_all(c, JR_PERM, "553 5.6.7 the next hop does not support SMTPUTF8", false);
    } else if (m->body8 && !(c->ext & SMTP_EXT_8BITMIME)) {
        set_all(c, JR_PERM, "554 5.6.3 the next hop does not support 8BITMIME", false);
    }
    if (c->res[0] == JR_PERM) {
        job_finish(w, c, "");
        return false;
    }
    if (c->ext & SMTP_EXT_SIZE)
        snprintf(size, sizeof(size), " SIZE=%" PRIu64, m->size);
    c->st = CS_TXN;
    out_add(c, "MAIL FROM:<%s>%s%s%s", m->from, size,
            m->body8 && (c->ext & SMTP_EXT_8BITMIME) ? " BODY=8BITMIME" : "",
            m->smtputf8 ? " SMTPUTF8" : "");
    c->sent = 1;
    if (c->ext & SMTP_EXT_PIPELINING) {
        for (uint16_t k = 0; k < j->count; k++)
            out_add(c, "RCPT TO:<%s>", m->rcpts[j->idx[k]].addr);
        out_add(c, "DATA");
        c->sent = (uint16_t)(j->count + 2);
    }
    flush_out(w, c);
    arm_recv(w, c);
    set_deadline(w, c, w->cfg->command_timeout_ms);
    return true;
}

/* txn_reply - one reply in the transaction: index 0 MAIL, 1..n RCPT, n+1 DATA. */
static void txn_reply(struct worker *w, struct oconn *c)
{
    struct qjob *j = c->job;
    uint16_t i = c->replied++;
    uint16_t code = c->reply.code;

    if (i >= c->sent) {
        conn_fail(w, c, "more replies than commands (improper pipelining by the server)");
        return;
    }
    char text[CLIENT_REPLY_BYTES];
    bool pipelined = c->ext & SMTP_EXT_PIPELINING;

    reply_text(c, text, sizeof(text));
    if (i == 0) {
        c->mail_ok = code / 100 == 2;
        if (!c->mail_ok)
            set_all(c, code / 100 == 5 ? JR_PERM : JR_TEMP, text, false);
    } else if (i <= j->count) {
        uint16_t k = i - 1;
        if (c->mail_ok) {
            c->res[k] = code / 100 == 2 ? JR_OK : code / 100 == 5 ? JR_PERM : JR_TEMP;
            free(c->rtext[k]);
            c->rtext[k] = rr_strdup(text);
            c->accepted += code / 100 == 2;
        }
    } else {
        /* DATA */
        if (code == 354 && c->accepted) {
            start_body(w, c);
            return;
        }
        if (code == 354) {
            /* Pipelined DATA was taken though no recipient was: end it empty (RFC 2920). */
            c->st = CS_RSET;
            job_finish(w, c, text);
            out_add(c, ".");
            out_add(c, "RSET");
            c->replied = 0;
            c->sent = 2;
            flush_out(w, c);
            arm_recv(w, c);
            set_deadline(w, c, w->cfg->command_timeout_ms);
            return;
        }
        for (uint16_t k = 0; k < j->count; k++)
            if (c->res[k] == JR_OK) {
                c->res[k] = code / 100 == 5 ? JR_PERM : JR_TEMP;
                free(c->rtext[k]);
                c->rtext[k] = rr_strdup(text);
            }
        goto reset;
    }
    if (pipelined) {
        if (c->replied < c->sent) {
            arm_recv(w, c);
            set_deadline(w, c, w->cfg->command_timeout_ms);
        }
        return;
    }
    /* One command at a time. */
    if (!c->mail_ok)
        goto reset;
    if (c->sent <= j->count) {
        out_add(c, "RCPT TO:<%s>", j->m->rcpts[j->idx[c->sent - 1]].addr);
        c->sent++;
    } else if (c->accepted) {
        out_add(c, "DATA");
        c->sent++;
    } else {
        goto reset;
    }
    flush_out(w, c);
    arm_recv(w, c);
    set_deadline(w, c, w->cfg->command_timeout_ms);
    return;
reset:
    job_finish(w, c, text);
    c->st = CS_RSET;
    c->replied = 0;
    c->sent = 1;
    out_add(c, "RSET");
    flush_out(w, c);
    arm_recv(w, c);
    set_deadline(w, c, w->cfg->command_timeout_ms);
}

/* ready - greeting and EHLO done: the first job. */
static void ready(struct worker *w, struct oconn *c)
{
    c->greeted = true;
    c->st = CS_READY;
    c->msgs = 0;
    if (take_and_start(w, c))
        return;
    c->msgs = UINT32_MAX - 1;  /* nothing for it: QUIT rather than idle */
    next_job(w, c);
}

/* tls_required - whether the mode makes TLS a condition of delivery. */
static bool tls_required(const struct worker *w)
{
    return w->cfg->relay_tls == RELAY_TLS_ENCRYPT || w->cfg->relay_tls == RELAY_TLS_VERIFY;
}

/* tls_wanted - whether to say STARTTLS now: the peer offers it, the mode allows it, a client
 * context exists, TLS is not on already, and this is not the plaintext retry. */
static bool tls_wanted(const struct worker *w, const struct oconn *c)
{
    return (c->ext & SMTP_EXT_STARTTLS) && w->cfg->relay_tls != RELAY_TLS_NONE &&
           w->cfg->tls_client_ctx && !c->tls && !c->tls_skip;
}

/* ehlo_done - EHLO or HELO was accepted: STARTTLS, or the first job, or (TLS required but not
 * to be had) the connection fails like one that did not get through EHLO. */
static void ehlo_done(struct worker *w, struct oconn *c)
{
    if (tls_wanted(w, c)) {
        c->st = CS_STARTTLS;
        out_add(c, "STARTTLS");
        flush_out(w, c);
        arm_recv(w, c);
        set_deadline(w, c, w->cfg->command_timeout_ms);
        return;
    }
    if (!c->tls && tls_required(w)) {
        if (!(c->ext & SMTP_EXT_STARTTLS))
            conn_failf(w, c, "4.7.4 TLS is required, but was not offered by host %s",
                       c->remote);
        else
            conn_failf(w, c, "4.7.5 TLS is required, but no TLS client context is loaded");
        return;
    }
    ready(w, c);
}

/* starttls_reply - the reply to STARTTLS. 220: TLS starts once the reply is parsed and the
 * command is out (tls_begin_ready). Anything else: mode may goes on in plaintext on this
 * connection (RFC 3207 4: the server said no); encrypt and verify fail the connection. */
static void starttls_reply(struct worker *w, struct oconn *c, const char *text)
{
    if (c->reply.code == 220) {
        c->st = CS_TLS;
        return;
    }
    metrics_add(&w->m->relay_tls[TLSR_FAILURE], 1);
    log_event(LOG_INFO, "event=relay_tls_failed remote=%s stage=starttls error=%s next=%s",
              log_q(c->remote), log_q(text), tls_required(w) ? "fail" : "plaintext");
    if (tls_required(w)) {
        conn_failf(w, c, "4.7.5 TLS is required, but host %s refused to start TLS: %s",
                   c->remote, text);
        return;
    }
    c->tls_skip = true;
    ready(w, c);
}

/* tls_begin_ready - start TLS if STARTTLS got its 220, the reply parser is done with the
 * plaintext and the command has been sent. */
static void tls_begin_ready(struct worker *w, struct oconn *c)
{
    if (c->st == CS_TLS && !c->tls && !c->parsing && !c->sending && !c->closing && !c->restart)
        tls_begin(w, c);
}

/* on_reply - a complete reply in state c->st. */
static void on_reply(struct worker *w, struct oconn *c)
{
    uint16_t code = c->reply.code;
    char text[CLIENT_REPLY_BYTES];

    reply_text(c, text, sizeof(text));
    if (code == 421 && c->st != CS_QUIT) {
        /* The server is going away (RFC 5321 3.8): whatever was open is deferred. */
        conn_fail(w, c, text);
        return;
    }
    switch (c->st) {
    case CS_GREETING:
        if (code / 100 != 2) {
            conn_fail(w, c, text);
            return;
        }
        c->st = CS_EHLO;
        out_add(c, "EHLO %s", w->cfg->hostname);
        break;
    case CS_EHLO:
        if (code / 100 == 2) {
            c->ext = c->reply.ehlo.ext;
            c->size_max = c->reply.ehlo.size_max;
            ehlo_done(w, c);
            return;
        }
        if (code / 100 == 4) {  /* temporary: no point in HELO */
            conn_fail(w, c, text);
            return;
        }
        c->st = CS_HELO;
        out_add(c, "HELO %s", w->cfg->hostname);
        break;
    case CS_HELO:
        if (code / 100 != 2) {
            conn_fail(w, c, text);
            return;
        }
        c->ext = 0;
        ehlo_done(w, c);
        return;
    case CS_STARTTLS:
        starttls_reply(w, c, text);
        return;
    case CS_TXN:
        txn_reply(w, c);
        return;
    case CS_DOT: {
        uint8_t r = code / 100 == 2 ? JR_OK : code / 100 == 5 ? JR_PERM : JR_TEMP;
        for (uint16_t k = 0; k < c->job->count; k++)
            if (c->res[k] == JR_OK) {
                c->res[k] = r;
                free(c->rtext[k]);
                c->rtext[k] = rr_strdup(text);
            }
        job_finish(w, c, text);
        next_job(w, c);
        return;
    }
    case CS_RSET:
        if (++c->replied < c->sent) {  /* the reply to "." before the one to RSET */
            arm_recv(w, c);
            return;
        }
        if (code / 100 != 2) {
            conn_fail(w, c, text);
            return;
        }
        next_job(w, c);
        return;
    case CS_QUIT:
        conn_close(w, c);
        return;
    default:
        conn_fail(w, c, "unexpected reply");
        return;
    }
    flush_out(w, c);
    arm_recv(w, c);
    set_deadline(w, c, c->st <= CS_GREETING ? w->cfg->connect_timeout_ms
                                             : w->cfg->command_timeout_ms);
}

/* ---- completions ---- */

/* recv_done - res reply bytes in buf, from the transport (or the end of the connection:
 * 0, or -errno). */
static void recv_done(struct worker *w, struct oconn *c, const char *buf, int res)
{
    size_t off = 0;
    uint32_t attempt = c->attempt;
    enum cstate before;

    if (c->closing || c->restart)
        return;
    if (res <= 0) {
        char why[CLIENT_REPLY_BYTES];
        snprintf(why, sizeof(why), "lost connection with %s while waiting for the reply to %s%s%s",
                 c->remote, state_name[c->st], res < 0 ? ": " : "",
                 res < 0 ? strerror(-res) : "");
        if (c->st == CS_QUIT)
            conn_close(w, c);
        else
            conn_fail(w, c, why);
        return;
    }
    c->parsing = true;
    c->want_recv = false;
    while (off < (size_t)res && !c->closing) {
        bool complete;
        off += smtp_reply_feed(&c->rp, buf + off, (size_t)res - off, &c->reply, &complete);
        if (!complete) {
            c->want_recv = true;  /* the rest of the reply is still to come */
            break;
        }
        if (c->reply.err != SMTP_REPLY_OK) {
            c->parsing = false;
            conn_failf(w, c, "protocol error from %s: %s", c->remote,
                       smtp_reply_err_name((enum smtp_reply_err)c->reply.err));
            return;
        }
        before = c->st;
        on_reply(w, c);  /* first: a 250 to the final dot counts even if junk follows */
        if (c->attempt != attempt || c->restart) {
            c->parsing = false;  /* a new connection is being made: the rest is the old one's */
            return;
        }
        if (off < (size_t)res && before == CS_STARTTLS && c->st == CS_TLS) {
            /* Bytes behind the 220: a TLS server does not speak before the ClientHello, and
             * plaintext there would be injected ahead of TLS. TLS failed to start. */
            c->parsing = false;
            tls_failed(w, c, "data after the 220 to STARTTLS", false);
            return;
        }
        if (off < (size_t)res && before != CS_TXN && before != CS_RSET && !c->closing) {
            /* Replies we did not ask for: a peer talking out of turn is not trusted. */
            c->parsing = false;
            conn_fail(w, c, "unexpected reply bytes (improper pipelining by the server)");
            return;
        }
    }
    c->parsing = false;
    if (c->want_recv && !c->closing)
        arm_recv(w, c);
    tls_begin_ready(w, c);
}

/* send_done - res plaintext bytes of commands or content went out (or -errno). */
static void send_done(struct worker *w, struct oconn *c, int res)
{
    c->sending = false;
    if (c->closing || c->restart)
        return;
    if (res < 0) {
        conn_failf(w, c, "lost connection with %s while sending %s: %s", c->remote,
                   state_name[c->st], strerror(-res));
        return;
    }
    if (c->st == CS_BODY) {
        size_t left = (size_t)res;
        while (c->iov_pos < c->iov_n && left >= c->iov[c->iov_pos].iov_len)
            left -= c->iov[c->iov_pos++].iov_len;
        if (c->iov_pos < c->iov_n) {
            c->iov[c->iov_pos].iov_base = (char *)c->iov[c->iov_pos].iov_base + left;
            c->iov[c->iov_pos].iov_len -= left;
            send_iov(w, c);
            return;
        }
        set_deadline(w, c, w->cfg->command_timeout_ms);
        body_next(w, c);
        return;
    }
    c->out_off += (size_t)res;
    if (c->out_off == c->out_len && c->later_len)
        out_take_later(c);
    if (c->out_off < c->out_len) {
        flush_out(w, c);
        return;
    }
    if (c->body_waits) {
        c->body_waits = false;
        start_body(w, c);
        return;
    }
    tls_begin_ready(w, c);
}

/* read_done - content from the spool. */
static void read_done(struct worker *w, struct oconn *c, int res)
{
    c->read_armed = false;
    if (c->closing)
        return;
    if (res <= 0) {
        char qid[17];
        spool_qid_format(c->job->m->qid, qid);
        log_event(LOG_ERROR, "event=spool_error id=%s op=read error=%s", qid,
                  log_q(res < 0 ? strerror(-res) : "short file"));
        conn_fail(w, c, "local error: the message could not be read from the spool");
        return;
    }
    c->rlen = (uint32_t)res;
    c->rpos = 0;
    c->chunk_done += (uint64_t)res;
    if (c->chunk_done >= c->job->m->chunks[c->chunk].len) {
        c->chunk++;
        c->chunk_done = 0;
    }
    body_next(w, c);
}

/* connect_done - the TCP connection is up (or not). */
static void connect_done(struct worker *w, struct oconn *c, int res)
{
    c->connect_armed = false;
    if (c->closing || c->restart)
        return;
    if (res < 0) {
        conn_failf(w, c, "connect to %s: %s", c->remote, strerror(-res));
        return;
    }
    c->st = CS_GREETING;
    smtp_reply_init(&c->rp);
    arm_recv(w, c);
    set_deadline(w, c, w->cfg->connect_timeout_ms);
}

/* timer_fired - the current wait took too long. */
static void timer_fired(struct worker *w, struct engine_timer *t)
{
    struct oconn *c = (struct oconn *)((char *)t - offsetof(struct oconn, timer));
    char why[CLIENT_REPLY_BYTES];

    snprintf(why, sizeof(why), "timeout with %s in %s", c->remote, state_name[c->st]);
    if (c->idle) {
        quit(w, c);
        return;
    }
    if (c->st == CS_QUIT) {
        conn_close(w, c);
        conn_reap(w, c);
        return;
    }
    if (c->st == CS_TLS && c->tls) {
        tls_failed(w, c, why, true);  /* a peer that stalls in the handshake */
        conn_reap(w, c);
        return;
    }
    if (!c->greeted) {
        conn_fail(w, c, why);  /* the next address, or the destination failed */
        conn_reap(w, c);
        return;
    }
    if (c->fd >= 0)
        shutdown(c->fd, SHUT_RDWR);
    if (c->connect_armed) {
        struct io_uring_sqe *sqe = engine_sqe(w);
        io_uring_prep_cancel64(sqe, engine_ud(OP_OUT_CONNECT, c->slot, c->gen), 0);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
    }
    /* Close for good: the operations in flight end with errors and reaping follows. */
    if (c->job)
        job_abort(w, c, why);
    log_event(LOG_INFO, "event=relay_connection_failed relay=%s state=%s reason=%s",
              log_q(c->remote), state_name[c->st], log_q(why));
    queue_dest_failed(w, c->d, why, false);
    conn_close(w, c);
    conn_reap(w, c);
}

/* smtp_client_complete - dispatch a completion of an outbound connection. */
void smtp_client_complete(struct worker *w, enum engine_op op, uint32_t slot, uint32_t gen,
                          int res)
{
    struct oconn *c = cl && slot < cl->slots ? cl->conns[slot] : NULL;

    if (!c || c->gen != gen)
        return;
    c->ops--;
    switch (op) {
    case OP_OUT_CONNECT:
        connect_done(w, c, res);
        break;
    case OP_OUT_RECV:
        c->io->received(w, c, res);
        break;
    case OP_OUT_SEND:
        c->io->sent(w, c, res);
        break;
    case OP_OUT_READ:
        read_done(w, c, res);
        break;
    default:
        break;
    }
    if (c->restart && !c->closing && !c->recv_armed && !c->wire_armed && !c->connect_armed &&
        !c->read_armed)
        next_target(w, c);
    conn_reap(w, c);
}

/* ---- opening ---- */

/* format_remote - "name[addr]:port" of target i of d. */
static void format_remote(const struct qdest *d, unsigned i, char *buf, size_t cap)
{
    const struct sockaddr_storage *ss = &d->targets[i];
    char addr[INET6_ADDRSTRLEN] = "?";
    unsigned port;

    if (ss->ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, addr, sizeof(addr));
        port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
    } else {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, addr, sizeof(addr));
        port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    }
    if (d->target_names[i][0] && strcmp(d->target_names[i], addr))
        snprintf(buf, cap, "%s[%s]:%u", d->target_names[i], addr, port);
    else
        snprintf(buf, cap, "[%s]:%u", addr, port);
}

/* bind_source - bind fd to the next source address ([relay] source_addresses, taken in
 * turn) of the destination's family fam; an address of the other family is never used, and
 * with none of this family the kernel chooses, as without the key. The port is left to
 * connect() (IP_BIND_ADDRESS_NO_PORT): bound early, the address would need a port of its own
 * per connection, and ephemeral ports would run out at about 28,000 connections per address
 * instead of per destination. An entry with an interface binds the socket to that device
 * first (SO_BINDTODEVICE: it leaves there whatever the routing table says, and a link-local
 * address takes it as its scope). 0 or -errno, *src then names the entry for the message. */
static int bind_source(struct worker *w, int fd, int fam, const struct config_source **src)
{
    const struct rr_config *cfg = w->cfg;
    int one = 1;

    for (unsigned n = 0; n < cfg->source_address_count; n++) {
        const struct config_source *s = &cfg->source_addresses[cl->src_next++ %
                                                               cfg->source_address_count];
        if (s->addr.sa.ss_family != fam)
            continue;
        *src = s;
        if ((s->ifname[0] && setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, s->ifname,
                                        (socklen_t)strlen(s->ifname)) < 0) ||
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0 ||
            bind(fd, (const struct sockaddr *)&s->addr.sa, s->addr.len) < 0)
            return -errno;
        return 0;
    }
    return 0;
}

/* format_source - "192.0.2.10%eth1" / "[2001:db8::10]%eth1" of s, for messages. */
static void format_source(const struct config_source *s, char *buf, size_t cap)
{
    char addr[INET6_ADDRSTRLEN] = "?";

    if (s->addr.sa.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&s->addr.sa)->sin6_addr, addr,
                  sizeof(addr));
    else
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&s->addr.sa)->sin_addr, addr,
                  sizeof(addr));
    snprintf(buf, cap, "%s%s%s%s%s", s->addr.sa.ss_family == AF_INET6 ? "[" : "", addr,
             s->addr.sa.ss_family == AF_INET6 ? "]" : "", s->ifname[0] ? "%" : "", s->ifname);
}

/* try_connect - a socket and a connect to the current target. */
static void try_connect(struct worker *w, struct oconn *c)
{
    const struct sockaddr_storage *ss = &c->d->targets[c->target];
    socklen_t len = ss->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                             : sizeof(struct sockaddr_in6);
    const struct config_source *src = NULL;
    struct io_uring_sqe *sqe;
    int one = 1, err;

    format_remote(c->d, c->target, c->remote, sizeof(c->remote));
    c->attempt++;
    c->st = CS_CONNECT;
    smtp_reply_init(&c->rp);
    c->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        conn_failf(w, c, "socket: %s", strerror(errno));
        return;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    err = bind_source(w, c->fd, ss->ss_family, &src);
    if (err < 0) {
        char text[INET6_ADDRSTRLEN + CONFIG_IFNAME_BYTES_MAX + 4];
        format_source(src, text, sizeof(text));
        conn_failf(w, c, "bind to source address %s: %s", text, strerror(-err));
        return;
    }
    c->connect_armed = true;
    c->ops++;
    sqe = engine_sqe(w);
    io_uring_prep_connect(sqe, c->fd, (const struct sockaddr *)ss, len);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_OUT_CONNECT, c->slot, c->gen));
    set_deadline(w, c, w->cfg->connect_timeout_ms);
}

/* smtp_client_open - a new connection to d (d->conns was counted by the caller). */
void smtp_client_open(struct worker *w, struct qdest *d)
{
    struct oconn *c;

    if (!cl->free_count) {
        uint32_t old = cl->slots, n = old * 2;
        cl->conns = rr_realloc(cl->conns, n * sizeof(*cl->conns));
        memset(cl->conns + old, 0, old * sizeof(*cl->conns));
        cl->free_slots = rr_realloc(cl->free_slots, n * sizeof(*cl->free_slots));
        for (uint32_t i = 0; i < old; i++)
            cl->free_slots[cl->free_count++] = n - 1 - i;
        cl->slots = n;
    }
    c = rr_calloc(1, sizeof(*c));
    c->slot = cl->free_slots[--cl->free_count];
    c->gen = ++cl->gen_next;
    c->fd = -1;
    c->d = d;
    c->io = &plain_io;
    c->timer.fire = timer_fired;
    c->target = 0;
    cl->conns[c->slot] = c;
    cl->live++;
    try_connect(w, c);
    conn_reap(w, c);  /* the connection may have failed at once */
}

/* smtp_client_stop - SIGTERM: a connection waiting for the reply to its final dot gets it
 * (so the outcome is recorded, not sent twice); every other one closes now. force: the stop
 * deadline passed, all close. */
void smtp_client_stop(struct worker *w, bool force)
{
    if (!cl)
        return;
    cl->stopping = true;
    for (uint32_t i = 0; i < cl->slots; i++) {
        struct oconn *c = cl->conns[i];
        if (!c || c->closing || (c->st == CS_DOT && !force))
            continue;
        if (c->job)
            job_abort(w, c, "relay shutting down");
        conn_close(w, c);
        conn_reap(w, c);
    }
}
