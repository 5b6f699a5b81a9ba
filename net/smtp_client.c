/*
 * smtp_client.c - outbound SMTP connections on a worker's ring (RFC 5321 client side).
 *
 * Functions: smtp_client_open() and the connection table (smtp_client_init, _fini, _busy,
 * _stop, _complete). The queue (core/queue.c) decides what to send; a connection here carries
 * jobs for one destination, one transaction at a time, until the queue has none left for it
 * or messages_per_connection is reached, then says QUIT.
 *
 * A connection is a state machine: CONNECT, GREETING, EHLO (HELO when EHLO is refused),
 * READY, then per job TXN (MAIL, RCPT..., DATA; sent as one batch when the peer offers
 * PIPELINING, else one at a time), BODY (content read back from the spool segment with
 * IORING_OP_READ, dot-stuffed by net/smtp_stuff.c into iovecs that point into the read
 * buffer, sent with IORING_OP_SENDMSG), DOT (the reply to the final dot), RSET, QUIT. Every
 * wait has a deadline: connect_timeout for the connection and the greeting, command_timeout
 * for each reply after that.
 *
 * Each operation carries {op, slot, gen}; at most one connect, one receive, one send and one
 * read are in flight per connection. A connection is freed in one place (conn_reap) once it
 * is closing and nothing is in flight.
 *
 * Next hops: the destination's targets, best first. A connection that cannot get past the
 * greeting and EHLO tries the next address (at most CLIENT_TARGET_TRIES); when they are
 * exhausted the destination as a whole failed (queue_dest_failed: it is backed off).
 *
 * STANDARDS: RFC 5321 (3.3, 4.1, 4.2, 4.5.2 transparency, 4.5.3.2 timeouts), RFC 2920
 * PIPELINING, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3463 status codes.
 *
 * SECURITY: every reply byte is from the peer: net/smtp_reply.c parses it with bounded
 * buffers and a malformed reply drops the connection. The content sent is re-encoded by
 * smtp_stuff, so no bare CR or LF and no early end of data can leave the relay.
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

#define CLIENT_IN_BYTES      4096    /* reply bytes received at once */
#define CLIENT_READ_BYTES    65536   /* content read from the spool at once */
#define CLIENT_IOV_MAX       64      /* iovecs in one body send */
#define CLIENT_TARGET_TRIES  5       /* addresses one connection tries (Postfix: 5) */
#define CLIENT_REPLY_BYTES   512     /* a reply kept for logs and bounces */
#define CLIENT_IDLE_MS       2000    /* an idle connection waits this long for a job (Postfix's
                                        smtp_connection_cache_time_limit) */

enum cstate {
    CS_CONNECT, CS_GREETING, CS_EHLO, CS_HELO, CS_READY, CS_TXN, CS_BODY, CS_DOT, CS_RSET,
    CS_QUIT, CS_CLOSED
};

static const char *const state_name[] = {
    "connect", "greeting", "EHLO", "HELO", "ready", "MAIL/RCPT/DATA", "message content",
    "end of data", "RSET", "QUIT", "closed",
};

struct oconn {
    uint32_t slot, gen;
    int fd;
    struct qdest *d;
    enum cstate st;
    unsigned target;              /* index in d->targets */
    unsigned tries;               /* addresses tried */
    bool greeted;                 /* got past EHLO/HELO once: failures are the job's */
    char remote[128];             /* "name[addr]:port", for logs */
    uint32_t ext;                 /* enum smtp_ext of the peer */
    uint64_t size_max;            /* peer's SIZE, 0 = none */
    uint32_t ops;                 /* operations in flight */
    bool recv_armed, send_armed, read_armed, connect_armed;
    bool parsing;                 /* replies in c->in are being read: no receive into it now */
    bool want_recv;               /* a receive is wanted once parsing is over */
    bool closing;                 /* no new operations; reaped when ops reach 0 */
    struct engine_timer timer;    /* deadline of the current wait */
    struct smtp_reply_parser rp;
    struct smtp_reply reply;      /* the reply just completed */
    char in[CLIENT_IN_BYTES];
    char *out;                    /* commands to send; never changed while a send of it is
                                     in flight (new commands wait in later) */
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

/* arm_recv - wait for reply bytes. */
static void arm_recv(struct worker *w, struct oconn *c)
{
    struct io_uring_sqe *sqe;

    if (c->recv_armed || c->closing)
        return;
    if (c->parsing) {
        c->want_recv = true;
        return;
    }
    c->recv_armed = true;
    c->ops++;
    sqe = engine_sqe(w);
    io_uring_prep_recv(sqe, c->fd, c->in, sizeof(c->in), 0);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_OUT_RECV, c->slot, c->gen));
}

/* flush_out - send the queued command bytes. */
static void flush_out(struct worker *w, struct oconn *c)
{
    struct io_uring_sqe *sqe;

    if (c->send_armed || c->closing || c->out_off == c->out_len)
        return;
    c->send_armed = true;
    c->ops++;
    sqe = engine_sqe(w);
    io_uring_prep_send(sqe, c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_OUT_SEND, c->slot, c->gen));
}

/* out_add - queue one command line (without CRLF). */
static void out_add(struct oconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_add(struct oconn *c, const char *fmt, ...)
{
    va_list ap;
    int n;
    char **buf = c->send_armed ? &c->later : &c->out;
    size_t *len = c->send_armed ? &c->later_len : &c->out_len;
    size_t *cap = c->send_armed ? &c->later_cap : &c->out_cap;

    if (!c->send_armed && c->out_off == c->out_len)
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

/* next_target - close this attempt's socket and connect to the next address, now or once
 * the operations on the old socket have drained (smtp_client_complete). */
static void next_target(struct worker *w, struct oconn *c)
{
    if (c->recv_armed || c->send_armed || c->connect_armed || c->read_armed) {
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
    __attribute__((format(printf, 3, 4)));
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
    if (c->send_armed || c->out_off < c->out_len) {
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
    struct io_uring_sqe *sqe;

    memset(&c->mh, 0, sizeof(c->mh));
    c->mh.msg_iov = c->iov + c->iov_pos;
    c->mh.msg_iovlen = c->iov_n - c->iov_pos;
    c->send_armed = true;
    c->ops++;
    sqe = engine_sqe(w);
    io_uring_prep_sendmsg(sqe, c->fd, &c->mh, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_OUT_SEND, c->slot, c->gen));
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
        char why[320];
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
            ready(w, c);
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
        ready(w, c);
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

/* recv_done - reply bytes (or the end of the connection). */
static void recv_done(struct worker *w, struct oconn *c, int res)
{
    size_t off = 0;
    enum cstate before;

    c->recv_armed = false;
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
        off += smtp_reply_feed(&c->rp, c->in + off, (size_t)res - off, &c->reply, &complete);
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
}

/* send_done - command bytes or content went out. */
static void send_done(struct worker *w, struct oconn *c, int res)
{
    c->send_armed = false;
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
    }
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
        recv_done(w, c, res);
        break;
    case OP_OUT_SEND:
        send_done(w, c, res);
        break;
    case OP_OUT_READ:
        read_done(w, c, res);
        break;
    default:
        break;
    }
    if (c->restart && !c->closing && !c->recv_armed && !c->send_armed && !c->connect_armed &&
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

/* bind_source - bind fd to the next source address of family fam, if any are set. */
static int bind_source(struct worker *w, int fd, int fam)
{
    const struct rr_config *cfg = w->cfg;

    for (unsigned n = 0; n < cfg->source_address_count; n++) {
        const struct config_addr *a = &cfg->source_addresses[cl->src_next++ %
                                                              cfg->source_address_count];
        if (a->sa.ss_family != fam)
            continue;
        if (bind(fd, (const struct sockaddr *)&a->sa, a->len) < 0)
            return -errno;
        return 0;
    }
    return 0;
}

/* try_connect - a socket and a connect to the current target. */
static void try_connect(struct worker *w, struct oconn *c)
{
    const struct sockaddr_storage *ss = &c->d->targets[c->target];
    socklen_t len = ss->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                             : sizeof(struct sockaddr_in6);
    struct io_uring_sqe *sqe;
    int one = 1, err;

    format_remote(c->d, c->target, c->remote, sizeof(c->remote));
    c->st = CS_CONNECT;
    smtp_reply_init(&c->rp);
    c->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        conn_failf(w, c, "socket: %s", strerror(errno));
        return;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    err = bind_source(w, c->fd, ss->ss_family);
    if (err < 0) {
        conn_failf(w, c, "bind to a source address: %s", strerror(-err));
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
