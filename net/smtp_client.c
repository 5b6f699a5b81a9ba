/*
 * smtp_client.c - outbound SMTP connections on a worker's ring (RFC 5321 client side).
 *
 * Functions: smtp_client_open() and the connection table (smtp_client_init, _fini, _busy,
 * _stop, _complete). The queue (core/queue.c) decides what to send; a connection here carries
 * jobs for one destination, one transaction at a time, until the queue has none left for it
 * or messages_per_connection is reached, then says QUIT.
 *
 * A connection is a state machine: CONNECT, GREETING, EHLO (HELO when EHLO is refused),
 * STARTTLS and the TLS handshake when both sides want them, READY, then per job either
 *   - DATA: TXN (MAIL, RCPT..., DATA; sent as one batch when the peer offers PIPELINING,
 *     else one at a time), BODY (content read back from the spool segment with
 *     IORING_OP_READ, dot-stuffed by net/smtp_stuff.c into iovecs that point into the read
 *     buffer), DOT (the reply to the final dot); or
 *   - BDAT, when the peer offers CHUNKING and [relay] chunking is on (the default, as Exim's
 *     hosts_try_chunking = *): BDAT (MAIL, RCPT..., "BDAT n LAST" and the content as one
 *     chunk; with PIPELINING the commands and the first 64 KiB of content go in one send, so
 *     a small message costs one spool read, one send and one round trip). The content goes
 *     as it is stored: the spool holds it unstuffed with every line ended in CRLF (the DATA
 *     and BDAT readers of net/smtp_data.c, bounces and notices all store it so), which is
 *     what a chunk carries, so n is the sum of the stored pieces and nothing is encoded.
 *     The replies are read as they come, in order, while the content goes; the reply to BDAT
 *     is the end-of-data reply (RFC 3030 2, 4.2: a server that refused MAIL or every RCPT
 *     still reads the chunk and refuses it), and a BDAT refused is followed by RSET;
 * then RSET after a failed transaction, the next job, and QUIT. Every wait has a deadline:
 * connect_timeout for the connection and the greeting, command_timeout for each reply after
 * that and for the whole TLS handshake, at least CLIENT_DOT_MS_MIN for the end-of-data reply.
 *
 * Transports: the protocol code sends plaintext pieces and asks for reply bytes through one
 * small vtable (struct oconn_io, net/smtp_client_int.h) and hears back through
 * oconn_send_done() and oconn_recv_done(). The plaintext transport is here: the ring's
 * send/sendmsg and receive on the socket, the pieces pointing where they lie (no copy). The
 * TLS transport is net/smtp_client_tls.c (wolfSSL over memory buffers, the ciphertext on the
 * same ring operations).
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
 * PIPELINING, RFC 3030 CHUNKING (BDAT), RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8,
 * RFC 3463 status codes, RFC 3207 STARTTLS (4.2: what the server said before TLS is
 * forgotten and EHLO is sent again), RFC 7435 opportunistic security (may), RFC 6125 (host
 * names in certificates).
 *
 * SECURITY: every reply byte is from the peer: net/smtp_reply.c parses it with bounded
 * buffers and a malformed reply drops the connection. DATA content is re-encoded by
 * smtp_stuff, so no bare CR or LF and no early end of data can leave the relay. BDAT content
 * is counted, not delimited: whatever the bytes, the chunk ends where its size says, and the
 * size is the sum of the pieces that are read and sent (a short spool read fails the
 * connection before the chunk is complete, so the peer never takes a truncated message), so
 * no content can be taken for a command. A reply to BDAT that comes before the whole chunk
 * was sent is a broken peer: the connection fails and the job is deferred. Bytes that
 * follow the 220 to STARTTLS in the same read (plaintext injected ahead of TLS, the
 * CVE-2011-0411 pattern; a TLS server does not speak first) fail the start of TLS before the
 * handshake begins; nothing read before TLS is used after it (the TLS side, in
 * net/smtp_client_tls.c, is described there).
 */
#include <assert.h>
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
#include "net/smtp_client_int.h"

#define CLIENT_TARGET_TRIES  5       /* addresses one connection tries (Postfix: 5) */
#define CLIENT_IDLE_MS       2000    /* an idle connection waits this long for a job (Postfix's
                                        smtp_connection_cache_time_limit) */
#define CLIENT_DOT_MS_MIN    600000  /* the wait for the reply to the end of data, at least
                                        (RFC 5321 4.5.3.2.6: 10 minutes) */

static const char *const state_name[] = {
    "connect", "greeting", "EHLO", "HELO", "STARTTLS", "TLS handshake", "ready",
    "MAIL/RCPT/DATA", "message content", "end of data", "MAIL/RCPT/BDAT", "RSET", "QUIT",
    "closed",
};
_Static_assert(sizeof(state_name) / sizeof(state_name[0]) == CS_CLOSED + 1, "state names");

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
    oconn_send_done(w, c, res);
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
    oconn_recv_done(w, c, c->in, res);
}

static const struct oconn_io plain_io = {
    "plain", plain_send, plain_recv, plain_sent, plain_received,
};

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
    oconn_set_deadline(w, c, w->cfg->command_timeout_ms);
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
    oconn_set_deadline(w, c, CLIENT_IDLE_MS);
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

/* oconn_next_target - close this attempt's socket and connect to c->target (the next address, or
 * the same one for the plaintext retry), now or once the operations on the old socket have
 * drained (smtp_client_complete). The TLS state of the old socket ends with it. */
void oconn_next_target(struct worker *w, struct oconn *c)
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
    c->sending_iov = false;
    c->iov_cmds = false;
    otls_free(c);
    c->io = &plain_io;
    try_connect(w, c);
}

/* content_taken - whether the peer may have taken the job's message: its content went, or
 * (BDAT, where the content goes with the commands) the peer answered MAIL. Before that a
 * failure is the connection's, not the message's. */
static bool content_taken(const struct oconn *c)
{
    return c->st == CS_BODY || c->st == CS_DOT || (c->st == CS_BDAT && c->replied > 0);
}

/* oconn_fail - the connection ends early. Before the greeting and EHLO were done, the next
 * address is tried, and when none is left the destination as a whole failed. After that, a
 * job in progress is deferred; on a connection that already delivered, a failure before the
 * peer may have taken the message is the connection's (servers limit messages per
 * connection), so the job goes back to the front of the destination's queue for a fresh
 * connection and the destination is not backed off. */
void oconn_fail(struct worker *w, struct oconn *c, const char *why)
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
            oconn_next_target(w, c);
            return;
        }
        conn_close(w, c);
        queue_dest_failed(w, d, why, false);
        return;
    }
    if (c->job) {
        if (c->msgs > 0 && !content_taken(c)) {
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

/* oconn_failf - oconn_fail with a formatted reason. */
void oconn_failf(struct worker *w, struct oconn *c, const char *fmt, ...)
{
    char why[CLIENT_REPLY_BYTES];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    oconn_fail(w, c, why);
}

/* ---- states ---- */

/* content_start - the content of c->job from its first byte. */
static void content_start(struct oconn *c)
{
    smtp_stuff_init(&c->stuff);
    c->chunk = 0;
    c->chunk_done = 0;
    c->rlen = c->rpos = 0;
    c->iov_n = c->iov_pos = 0;
    c->iov_cmds = false;
    c->finished = false;
    if (!c->rbuf)
        c->rbuf = rr_malloc(CLIENT_READ_BYTES);
}

/* content_bytes - the size of a BDAT chunk holding all of m: its content exactly as stored
 * (unstuffed, CRLF line ends, no terminator; net/smtp_data.h), the sum of its pieces in the
 * spool, which are what body_next() reads and sends. */
static uint64_t content_bytes(const struct qmsg *m)
{
    uint64_t n = 0;

    for (uint32_t k = 0; k < m->chunk_count; k++)
        n += m->chunks[k].len;
    return n;
}

/* end_reply_ms - how long the reply to the end of the data may take: the reply that a
 * timeout turns into a duplicate (RFC 5321 4.5.3.2.6: at least 10 minutes). */
static uint32_t end_reply_ms(const struct worker *w)
{
    return w->cfg->command_timeout_ms > CLIENT_DOT_MS_MIN ? w->cfg->command_timeout_ms
                                                          : CLIENT_DOT_MS_MIN;
}

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
    content_start(c);
    oconn_set_deadline(w, c, w->cfg->command_timeout_ms);
    body_next(w, c);
}

/* send_iov - send iov[iov_pos..iov_n). */
static void send_iov(struct worker *w, struct oconn *c)
{
    c->sending = true;
    c->sending_iov = true;
    c->io->send(w, c, c->iov + c->iov_pos, c->iov_n - c->iov_pos);
}

/* fill_data - DATA: what was read, dot-stuffed, and after the last of it the terminator. */
static void fill_data(struct oconn *c, const struct qmsg *m)
{
    if (c->rpos < c->rlen)
        c->rpos += (uint32_t)smtp_stuff_feed(&c->stuff, c->rbuf + c->rpos, c->rlen - c->rpos,
                                             c->iov, CLIENT_IOV_MAX, &c->iov_n);
    if (c->rpos == c->rlen && c->chunk >= m->chunk_count &&
        smtp_stuff_finish(&c->stuff, c->iov, CLIENT_IOV_MAX, &c->iov_n))
        c->finished = true;
}

/* fill_bdat - BDAT: the commands not sent yet (MAIL, RCPT... and BDAT itself with
 * PIPELINING), then what was read as it lies: the chunk is the stored content, unchanged. */
static void fill_bdat(struct oconn *c, const struct qmsg *m)
{
    if (c->out_off < c->out_len) {
        c->iov[c->iov_n++] = (struct iovec){ c->out + c->out_off, c->out_len - c->out_off };
        c->iov_cmds = true;
    }
    if (c->rpos < c->rlen) {
        c->iov[c->iov_n++] = (struct iovec){ c->rbuf + c->rpos, c->rlen - c->rpos };
        c->rpos = c->rlen;
    }
    if (c->chunk >= m->chunk_count)
        c->finished = true;
}

/* body_next - send what was read (DATA: stuffed; BDAT: as it is, the first piece behind the
 * commands), read more, or wait for the end-of-data reply. Reads and sends take turns. */
static void body_next(struct worker *w, struct oconn *c)
{
    struct qmsg *m = c->job->m;

    if (c->sending) {  /* BDAT only: an earlier send of commands is still going */
        c->body_waits = true;
        return;
    }
    if (c->rpos < c->rlen || (c->chunk >= m->chunk_count && !c->finished)) {
        c->iov_n = c->iov_pos = 0;
        if (c->st == CS_BDAT)
            fill_bdat(c, m);
        else
            fill_data(c, m);
        if (c->iov_n) {
            send_iov(w, c);
            return;
        }
    }
    if (c->finished) {
        if (c->st == CS_BDAT) {
            /* The chunk is out; its reply is the last of the transaction's, read in order. */
            oconn_set_deadline(w, c, c->replied + 1 == c->sent ? end_reply_ms(w)
                                                               : w->cfg->command_timeout_ms);
            return;
        }
        c->st = CS_DOT;
        arm_recv(w, c);
        oconn_set_deadline(w, c, end_reply_ms(w));
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

/* bdat_begin - "BDAT n LAST" behind the commands in out, and the content as that one chunk
 * (RFC 3030): nothing goes until the first content is read, then the commands and it go in
 * one send. */
static void bdat_begin(struct worker *w, struct oconn *c)
{
    out_add(c, "BDAT %" PRIu64 " LAST", content_bytes(c->job->m));
    c->sent++;
    c->st = CS_BDAT;
    content_start(c);
    arm_recv(w, c);
    oconn_set_deadline(w, c, w->cfg->command_timeout_ms);
    body_next(w, c);
}

/* end_reply - the reply to the end of the content (the final dot, or BDAT LAST) decides for
 * every recipient the peer took. */
static void end_reply(struct oconn *c, const char *text)
{
    uint16_t code = c->reply.code;
    uint8_t r = code / 100 == 2 ? JR_OK : code / 100 == 5 ? JR_PERM : JR_TEMP;

    for (uint16_t k = 0; k < c->job->count; k++)
        if (c->res[k] == JR_OK) {
            c->res[k] = r;
            free(c->rtext[k]);
            c->rtext[k] = rr_strdup(text);
        }
}

/* rset - the transaction failed (its job is settled): RSET, then the next job. */
static void rset(struct worker *w, struct oconn *c)
{
    c->st = CS_RSET;
    c->replied = 0;
    c->sent = 1;
    out_add(c, "RSET");
    flush_out(w, c);
    arm_recv(w, c);
    oconn_set_deadline(w, c, w->cfg->command_timeout_ms);
}

/* bdat_reply - the reply to BDAT LAST: the end-of-data reply (RFC 3030 2). It is due only
 * once the whole chunk went; one sooner comes from a peer that did not read the chunk, and
 * the rest of it would reach that peer as commands: the connection fails (the job is
 * deferred). A refusal - of the message, or of the chunk of a transaction whose MAIL or
 * every RCPT was refused - is followed by RSET, as a refused DATA is. */
static void bdat_reply(struct worker *w, struct oconn *c, const char *text)
{
    if (c->sending || !c->finished) {
        oconn_failf(w, c, "reply to BDAT from %s before the chunk was sent: %s", c->remote,
                    text);
        return;
    }
    end_reply(c, text);
    job_finish(w, c, text);
    if (c->reply.code / 100 == 2)
        next_job(w, c);
    else
        rset(w, c);
}

/* txn_start - MAIL, RCPT..., DATA or BDAT for c->job (all at once with PIPELINING). false
 * when the job was settled without a transaction (the caller takes the next). */
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
    c->bdat = (c->ext & SMTP_EXT_CHUNKING) && w->cfg->relay_chunking;
    c->st = CS_TXN;
    out_add(c, "MAIL FROM:<%s>%s%s%s", m->from, size,
            m->body8 && (c->ext & SMTP_EXT_8BITMIME) ? " BODY=8BITMIME" : "",
            m->smtputf8 ? " SMTPUTF8" : "");
    c->sent = 1;
    if (c->ext & SMTP_EXT_PIPELINING) {
        for (uint16_t k = 0; k < j->count; k++)
            out_add(c, "RCPT TO:<%s>", m->rcpts[j->idx[k]].addr);
        c->sent = (uint16_t)(j->count + 1);
        if (c->bdat) {
            bdat_begin(w, c);
            return true;
        }
        out_add(c, "DATA");
        c->sent++;
    }
    flush_out(w, c);
    arm_recv(w, c);
    oconn_set_deadline(w, c, w->cfg->command_timeout_ms);
    return true;
}

/* txn_reply - one reply in the transaction: index 0 MAIL, 1..n RCPT, n+1 DATA or BDAT. */
static void txn_reply(struct worker *w, struct oconn *c)
{
    struct qjob *j = c->job;
    uint16_t i = c->replied++;
    uint16_t code = c->reply.code;

    if (i >= c->sent) {
        oconn_fail(w, c, "more replies than commands (improper pipelining by the server)");
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
    } else if (c->st == CS_BDAT) {
        bdat_reply(w, c, text);
        return;
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
            oconn_set_deadline(w, c, w->cfg->command_timeout_ms);
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
            bool last = c->st == CS_BDAT && c->finished && c->replied + 1 == c->sent;
            arm_recv(w, c);
            oconn_set_deadline(w, c, last ? end_reply_ms(w) : w->cfg->command_timeout_ms);
        }
        return;
    }
    /* One command at a time. */
    if (!c->mail_ok)
        goto reset;
    if (c->sent <= j->count) {
        out_add(c, "RCPT TO:<%s>", j->m->rcpts[j->idx[c->sent - 1]].addr);
        c->sent++;
    } else if (c->accepted && c->bdat) {
        bdat_begin(w, c);
        return;
    } else if (c->accepted) {
        out_add(c, "DATA");
        c->sent++;
    } else {
        goto reset;
    }
    flush_out(w, c);
    arm_recv(w, c);
    oconn_set_deadline(w, c, w->cfg->command_timeout_ms);
    return;
reset:
    job_finish(w, c, text);
    rset(w, c);
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
        oconn_set_deadline(w, c, w->cfg->command_timeout_ms);
        return;
    }
    if (!c->tls && tls_required(w)) {
        if (!(c->ext & SMTP_EXT_STARTTLS))
            oconn_failf(w, c, "4.7.4 TLS is required, but was not offered by host %s",
                        c->remote);
        else
            oconn_failf(w, c, "4.7.5 TLS is required, but no TLS client context is loaded");
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
        oconn_failf(w, c, "4.7.5 TLS is required, but host %s refused to start TLS: %s",
                    c->remote, text);
        return;
    }
    c->tls_skip = true;
    ready(w, c);
}

/* oconn_ehlo_again - the TLS handshake is done (logged and counted by the transport): the
 * server's extensions were forgotten, so EHLO again (RFC 3207 4.2). */
void oconn_ehlo_again(struct worker *w, struct oconn *c)
{
    c->st = CS_EHLO;
    smtp_reply_init(&c->rp);
    out_add(c, "EHLO %s", w->cfg->hostname);
    flush_out(w, c);
    arm_recv(w, c);
    oconn_set_deadline(w, c, w->cfg->command_timeout_ms);
}

/* oconn_stopping - the worker is stopping (smtp_client_stop): nothing is retried. */
bool oconn_stopping(void)
{
    return cl->stopping;
}

/* tls_begin_ready - start TLS if STARTTLS got its 220, the reply parser is done with the
 * plaintext and the command has been sent. */
static void tls_begin_ready(struct worker *w, struct oconn *c)
{
    if (c->st == CS_TLS && !c->tls && !c->parsing && !c->sending && !c->closing && !c->restart)
        otls_begin(w, c);
}

/* on_reply - a complete reply in state c->st. */
static void on_reply(struct worker *w, struct oconn *c)
{
    uint16_t code = c->reply.code;
    char text[CLIENT_REPLY_BYTES];

    reply_text(c, text, sizeof(text));
    if (code == 421 && c->st != CS_QUIT) {
        /* The server is going away (RFC 5321 3.8): whatever was open is deferred. */
        oconn_fail(w, c, text);
        return;
    }
    switch (c->st) {
    case CS_GREETING:
        if (code / 100 != 2) {
            oconn_fail(w, c, text);
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
            oconn_fail(w, c, text);
            return;
        }
        c->st = CS_HELO;
        out_add(c, "HELO %s", w->cfg->hostname);
        break;
    case CS_HELO:
        if (code / 100 != 2) {
            oconn_fail(w, c, text);
            return;
        }
        c->ext = 0;
        ehlo_done(w, c);
        return;
    case CS_STARTTLS:
        starttls_reply(w, c, text);
        return;
    case CS_TXN:
    case CS_BDAT:
        txn_reply(w, c);
        return;
    case CS_DOT:
        end_reply(c, text);
        job_finish(w, c, text);
        next_job(w, c);
        return;
    case CS_RSET:
        if (++c->replied < c->sent) {  /* the reply to "." before the one to RSET */
            arm_recv(w, c);
            return;
        }
        if (code / 100 != 2) {
            oconn_fail(w, c, text);
            return;
        }
        next_job(w, c);
        return;
    case CS_QUIT:
        conn_close(w, c);
        return;
    default:
        oconn_fail(w, c, "unexpected reply");
        return;
    }
    flush_out(w, c);
    arm_recv(w, c);
    oconn_set_deadline(w, c, c->st <= CS_GREETING ? w->cfg->connect_timeout_ms
                                             : w->cfg->command_timeout_ms);
}

/* ---- completions ---- */

/* oconn_recv_done - res reply bytes in buf, from the transport (or the end of the connection:
 * 0, or -errno). */
void oconn_recv_done(struct worker *w, struct oconn *c, const char *buf, int res)
{
    size_t off = 0;
    uint32_t attempt = c->attempt;
    uint32_t msgs;
    enum cstate before;
    bool more;

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
            oconn_fail(w, c, why);
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
            oconn_failf(w, c, "protocol error from %s: %s", c->remote,
                        smtp_reply_err_name((enum smtp_reply_err)c->reply.err));
            return;
        }
        before = c->st;
        msgs = c->msgs;
        on_reply(w, c);  /* first: a 250 to the final dot counts even if junk follows */
        if (c->attempt != attempt || c->restart) {
            c->parsing = false;  /* a new connection is being made: the rest is the old one's */
            return;
        }
        if (off < (size_t)res && before == CS_STARTTLS && c->st == CS_TLS) {
            /* Bytes behind the 220: a TLS server does not speak before the ClientHello, and
             * plaintext there would be injected ahead of TLS. TLS failed to start. */
            c->parsing = false;
            otls_failed(w, c, "data after the 220 to STARTTLS", false);
            return;
        }
        /* More replies may follow in a batch: of a pipelined transaction (BDAT: not past
         * the one to BDAT, which ends the transaction), of "." and RSET. */
        more = before == CS_TXN || before == CS_RSET ||
               (before == CS_BDAT && c->st == CS_BDAT && c->msgs == msgs);
        if (off < (size_t)res && !more && !c->closing) {
            /* Replies we did not ask for: a peer talking out of turn is not trusted. */
            c->parsing = false;
            oconn_fail(w, c, "unexpected reply bytes (improper pipelining by the server)");
            return;
        }
    }
    c->parsing = false;
    if (c->want_recv && !c->closing)
        arm_recv(w, c);
    tls_begin_ready(w, c);
}

/* oconn_send_done - res plaintext bytes of commands or content went out (or -errno). */
void oconn_send_done(struct worker *w, struct oconn *c, int res)
{
    c->sending = false;
    if (c->closing || c->restart)
        return;
    if (res < 0) {
        oconn_failf(w, c, "lost connection with %s while sending %s: %s", c->remote,
                    state_name[c->st], strerror(-res));
        return;
    }
    if (c->sending_iov) {
        size_t left = (size_t)res;
        c->sending_iov = false;
        while (c->iov_pos < c->iov_n && left >= c->iov[c->iov_pos].iov_len)
            left -= c->iov[c->iov_pos++].iov_len;
        if (c->iov_pos < c->iov_n) {
            c->iov[c->iov_pos].iov_base = (char *)c->iov[c->iov_pos].iov_base + left;
            c->iov[c->iov_pos].iov_len -= left;
            send_iov(w, c);
            return;
        }
        if (c->iov_cmds) {  /* BDAT: the commands went with the content */
            c->iov_cmds = false;
            c->out_off = c->out_len;
            assert(!c->later_len);  /* nothing adds commands while a chunk is being sent */
        }
        oconn_set_deadline(w, c, w->cfg->command_timeout_ms);
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
        if (c->st == CS_BDAT)
            body_next(w, c);
        else
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
        oconn_fail(w, c, "local error: the message could not be read from the spool");
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
        oconn_failf(w, c, "connect to %s: %s", c->remote, strerror(-res));
        return;
    }
    c->st = CS_GREETING;
    smtp_reply_init(&c->rp);
    arm_recv(w, c);
    oconn_set_deadline(w, c, w->cfg->connect_timeout_ms);
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
        otls_failed(w, c, why, true);  /* a peer that stalls in the handshake */
        conn_reap(w, c);
        return;
    }
    if (!c->greeted) {
        oconn_fail(w, c, why);  /* the next address, or the destination failed */
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
        oconn_next_target(w, c);
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
        oconn_failf(w, c, "socket: %s", strerror(errno));
        return;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    err = bind_source(w, c->fd, ss->ss_family, &src);
    if (err < 0) {
        char text[INET6_ADDRSTRLEN + CONFIG_IFNAME_BYTES_MAX + 4];
        format_source(src, text, sizeof(text));
        oconn_failf(w, c, "bind to source address %s: %s", text, strerror(-err));
        return;
    }
    c->connect_armed = true;
    c->ops++;
    sqe = engine_sqe(w);
    io_uring_prep_connect(sqe, c->fd, (const struct sockaddr *)ss, len);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_OUT_CONNECT, c->slot, c->gen));
    oconn_set_deadline(w, c, w->cfg->connect_timeout_ms);
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

/* smtp_client_stop - SIGTERM: a connection waiting for the reply to the end of its data
 * (the final dot, or a BDAT chunk sent whole) gets it (so the outcome is recorded, not sent
 * twice); every other one closes now. force: the stop deadline passed, all close. */
void smtp_client_stop(struct worker *w, bool force)
{
    if (!cl)
        return;
    cl->stopping = true;
    for (uint32_t i = 0; i < cl->slots; i++) {
        struct oconn *c = cl->conns[i];
        if (!c || c->closing ||
            ((c->st == CS_DOT || (c->st == CS_BDAT && c->finished)) && !force))
            continue;
        if (c->job)
            job_abort(w, c, "relay shutting down");
        conn_close(w, c);
        conn_reap(w, c);
    }
}
