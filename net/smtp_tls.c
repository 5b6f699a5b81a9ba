/*
 * smtp_tls.c - TLS as a transport of the inbound session: STARTTLS (RFC 3207) and implicit
 * TLS (RFC 8314), with wolfSSL driven by the worker's ring.
 *
 * Functions: conn_starttls(), conn_tls_accept(), conn_is_tls(), conn_tls_offered(), and the
 * transport conn_io_tls behind struct conn_io (net/smtp_session.h).
 *
 * Received ciphertext buffers are kept on a list of their own and lent to wolfSSL
 * (tls/tls.c), which decrypts into local buffers (engine_local_buf) that join the session's
 * input list exactly as received plaintext would: the command loop, the DATA scanner and the
 * zero-copy spool writes cannot tell the difference. Replies stay in out[] until their
 * ciphertext has been sent, so the session's flow control is unchanged. Decryption stops
 * while the session has CONN_IN_BUFS_MAX buffers queued, and receiving stops while
 * CONN_IN_BUFS_MAX ciphertext buffers wait, so a fast client is bounded as in plaintext.
 *
 * STARTTLS: the 220 and any replies before it leave in plaintext (plain_left), input that
 * was pipelined behind the command is dropped (conn_discard_input via discard_input), and
 * every byte received after the command goes to the handshake; the command table has
 * already forgotten EHLO, transactions and logins.
 *
 * SECURITY: the handshake must finish within CONN_TLS_HANDSHAKE_MS (or idle_timeout if
 * shorter); a failed or stalled handshake, a bad record or an alert closes the session with
 * a log line and ringrelay_tls_handshakes_total{result}. No plaintext is ever read from a
 * TLS session before its handshake completed.
 *
 * STANDARDS: RFC 3207 (STARTTLS), RFC 8314 (implicit TLS for submission).
 */
#include <errno.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "net/smtp_session.h"
#include "tls/tls.h"

#define CONN_TLS_HANDSHAKE_MS  60000 /* longest a handshake may take (Postfix's
                                        smtpd_starttls_timeout is 300 s; a real client
                                        needs a few round trips) */

struct conn_tls {
    struct tls_conn *t;
    uint16_t cin_head, cin_tail;  /* received ciphertext buffers not fully taken */
    uint16_t cin_count;
    uint16_t plain_left;          /* bytes at the head of out[] to send in the clear (the
                                     220 to STARTTLS and what was queued before it) */
    uint16_t plain_sent;          /* out[] bytes whose ciphertext the flight carries */
    size_t flight;                /* bytes of the send in flight */
    bool flight_plain;            /* that send is cleartext out[] (plain_left) */
    bool done;                    /* handshake completed */
    bool notify_sent;             /* close_notify queued */
};

static const struct conn_io conn_io_tls;

/* conn_is_tls - see smtp_session.h. */
bool conn_is_tls(const struct conn *c)
{
    return c->tls && c->tls->done;
}

/* conn_tls_offered - see smtp_session.h. */
bool conn_tls_offered(const struct conn *c)
{
    return !c->tls && c->w->cfg->listeners[c->listener].tls == TLS_STARTTLS &&
           c->w->cfg->tls_server_ctx;
}

/* handshake_deadline - the handshake must end by then. */
static void handshake_deadline(struct conn *c)
{
    uint32_t ms = c->w->cfg->idle_timeout_ms;

    engine_timer_set(c->w, &c->timer, c->w->now_ms + (ms < CONN_TLS_HANDSHAKE_MS ? ms :
                                                      CONN_TLS_HANDSHAKE_MS));
}

/* tls_begin - the transport state on the current configuration's context. */
static bool tls_begin(struct conn *c)
{
    struct tls_ctx *ctx = c->w->cfg->tls_server_ctx;
    struct conn_tls *s;

    if (!ctx)
        return false;
    s = rr_calloc(1, sizeof(*s));
    s->t = tls_conn_new(ctx, NULL);
    if (!s->t) {
        free(s);
        return false;
    }
    s->cin_head = s->cin_tail = ENGINE_BUF_NONE;
    c->tls = s;
    c->io = &conn_io_tls;
    handshake_deadline(c);
    return true;
}

/* conn_starttls - see smtp_session.h. */
bool conn_starttls(struct conn *c)
{
    if (!tls_begin(c)) {
        conn_reply(c, "454 4.7.0 TLS not available due to temporary reason");
        conn_rejected(c, "454 4.7.0", "tls_unavailable");
        return false;
    }
    conn_reply(c, "220 2.0.0 Ready to start TLS");
    c->tls->plain_left = c->out_len;
    /* A send of earlier replies may still be in flight (STARTTLS came in a later receive of
     * the same pass): it is cleartext out[], and its completion comes to tls_sent now. */
    c->tls->flight_plain = c->send_active;
    c->discard_input = true;
    return true;
}

/* conn_tls_accept - see smtp_session.h. */
void conn_tls_accept(struct conn *c)
{
    conn_set_state(c, ST_GREETING);
    if (!tls_begin(c)) {
        log_event(LOG_ERROR, "event=tls_failed peer=%s error=no_certificate", c->peer_text);
        metrics_add(&c->w->m->tls_handshakes[TLSR_FAILURE], 1);
        conn_close(c);
    }
}

/* fail - a fatal TLS error: log, count, close (what the peer was owed is lost with it). */
static void fail(struct conn *c, enum metrics_tls_result r, const char *why)
{
    struct conn_tls *s = c->tls;

    log_event(LOG_INFO, "event=%s peer=%s error=%s", s->done ? "tls_error" : "tls_failed",
              c->peer_text, log_q(why));
    if (!s->done)
        metrics_add(&c->w->m->tls_handshakes[r], 1);
    else
        metrics_add(&c->w->m->protocol_errors[PROTO_TLS], 1);
    conn_close(c);
}

/* cin_take - the head ciphertext buffer gave used more bytes; release it when spent. */
static void cin_take(struct conn *c, size_t used)
{
    struct conn_tls *s = c->tls;
    struct worker *w = c->w;
    struct engine_buf *b = &w->bufs[s->cin_head];

    b->off += (uint16_t)used;
    if (b->off < b->len)
        return;
    uint16_t bid = s->cin_head;
    s->cin_head = b->next;
    if (s->cin_head == ENGINE_BUF_NONE)
        s->cin_tail = ENGINE_BUF_NONE;
    s->cin_count--;
    engine_buf_release(w, bid);
}

/* lend - lend the head ciphertext buffer to wolfSSL; false when none is left. */
static bool lend(struct conn *c)
{
    struct conn_tls *s = c->tls;
    struct engine_buf *b;

    if (s->cin_head == ENGINE_BUF_NONE)
        return false;
    b = &c->w->bufs[s->cin_head];
    tls_feed(s->t, engine_buf_ptr(c->w, s->cin_head) + b->off, (size_t)(b->len - b->off));
    return true;
}

/* handshake_done - log and count; the session goes on (implicit TLS: the greeting). */
static void handshake_done(struct conn *c)
{
    struct conn_tls *s = c->tls;
    bool resumed = tls_resumed(s->t);

    s->done = true;
    metrics_add(&c->w->m->tls_handshakes[resumed ? TLSR_RESUMED : TLSR_SUCCESS], 1);
    log_event(LOG_INFO, "event=tls peer=%s version=%s cipher=%s group=%s resumed=%s",
              c->peer_text, tls_version(s->t), tls_cipher(s->t), tls_group(s->t),
              resumed ? "yes" : "no");
    if (c->state == ST_GREETING)
        smtp_greeting(c);       /* implicit TLS; it sets the idle deadline */
    else
        conn_idle_deadline(c);  /* STARTTLS: a fresh EHLO is next */
}

/* pump - feed received ciphertext through the handshake, then decrypt into local buffers
 * until the session has enough queued; false while ciphertext is still held back. */
static bool pump(struct conn *c)
{
    struct conn_tls *s = c->tls;
    struct worker *w = c->w;

    while (!c->closing) {
        bool lent = lend(c);
        size_t before = lent ? tls_fed_left(s->t) : 0;
        ssize_t r;

        if (!s->done) {
            r = tls_handshake(s->t);
            if (lent)
                cin_take(c, before - tls_fed_left(s->t));
            if (r == TLS_OK) {
                handshake_done(c);
                continue;
            }
        } else {
            uint16_t pb;
            if (c->in_count >= CONN_IN_BUFS_MAX)
                break;          /* the session catches up first */
            pb = engine_local_buf(w);
            if (pb == ENGINE_BUF_NONE) {
                conn_wait_resources(c);
                break;
            }
            r = tls_read(s->t, engine_buf_ptr(w, pb), ENGINE_BUF_BYTES);
            if (lent)
                cin_take(c, before - tls_fed_left(s->t));
            if (r > 0) {
                conn_queue_input(c, pb, (int)r);
                continue;
            }
            engine_buf_release(w, pb);
        }
        if (r == TLS_WANT) {
            if (s->cin_head != ENGINE_BUF_NONE)
                continue;       /* the next received buffer */
            break;
        }
        if (r == TLS_CLOSED) {  /* close_notify: as the end of the stream */
            c->peer_eof = true;
            break;
        }
        fail(c, TLSR_FAILURE, tls_error(s->t));
        return true;
    }
    if (!c->closing)
        c->io->flush(c);        /* handshake flights, tickets, alerts */
    return s->cin_head == ENGINE_BUF_NONE;
}

/* tls_held_full - CONN_IN_BUFS_MAX ciphertext buffers wait: receiving stays paused. */
static bool tls_held_full(const struct conn *c)
{
    return c->tls->cin_count >= CONN_IN_BUFS_MAX;
}

/* tls_received - ciphertext arrived: keep it, then decrypt what the session can take. */
static void tls_received(struct conn *c, uint16_t bid, int len)
{
    struct conn_tls *s = c->tls;
    struct engine_buf *b = &c->w->bufs[bid];

    b->off = 0;
    b->len = (uint16_t)len;
    b->refs = 0;
    b->next = ENGINE_BUF_NONE;
    b->queued = false;
    if (s->cin_tail == ENGINE_BUF_NONE)
        s->cin_head = bid;
    else
        c->w->bufs[s->cin_tail].next = bid;
    s->cin_tail = bid;
    s->cin_count++;
    if (tls_held_full(c))
        conn_recv_pause(c);
    if (c->in_head == ENGINE_BUF_NONE)
        pump(c);                /* else the session's input loop asks through fill */
}

/* tls_fill - the session took its input: decrypt more. */
static bool tls_fill(struct conn *c)
{
    return pump(c);
}

/* tls_flush - send: cleartext still owed first, then ciphertext of out[] and of the
 * handshake. One send in flight at a time. */
static void tls_flush(struct conn *c)
{
    struct conn_tls *s = c->tls;
    const void *p;
    size_t len;

    if (c->send_active || c->fd < 0)
        return;
    if (s->plain_left) {
        s->flight = s->plain_left;
        s->flight_plain = true;
        conn_send(c, c->out, s->flight);
        return;
    }
    if (s->done && c->out_len && !s->plain_sent) {
        ssize_t r = tls_write(s->t, c->out, c->out_len);
        if (r < 0) {
            fail(c, TLSR_FAILURE, tls_error(s->t));
            return;
        }
        s->plain_sent = c->out_len;
    }
    if (s->done && c->close_after_send && !s->notify_sent && c->out_len == s->plain_sent) {
        tls_shutdown(s->t);      /* close_notify after the last reply */
        s->notify_sent = true;
    }
    p = tls_out(s->t, &len);
    if (!len) {
        /* Leaving in the middle of the handshake (SIGTERM): no reply can be given inside
         * it, and none may go in the clear. Close now rather than linger. */
        if (!s->done && c->close_after_send)
            conn_close(c);
        return;
    }
    s->flight = len;
    s->flight_plain = false;
    conn_send(c, p, len);
}

/* tls_sent - a send completed: send the rest of it, or say how much of out[] went. */
static int tls_sent(struct conn *c, int res)
{
    struct conn_tls *s = c->tls;
    uint16_t n;

    if (res <= 0)
        return -EPIPE;
    if (s->flight_plain) {
        s->plain_left -= (uint16_t)res;
        return res;
    }
    tls_out_done(s->t, (size_t)res);
    if ((size_t)res < s->flight) {
        size_t len;
        const void *p = tls_out(s->t, &len);  /* the rest of the same flight */
        s->flight = len;
        conn_send(c, p, len);
        return 0;
    }
    n = s->plain_sent;
    s->plain_sent = 0;
    return n;
}

/* tls_timeout - a handshake that did not finish in time; the session's own deadlines
 * apply once it has. */
static bool tls_timeout(struct conn *c)
{
    if (c->tls->done)
        return false;
    fail(c, TLSR_TIMEOUT, "handshake timeout");
    return true;
}

/* tls_release - free the TLS state and any ciphertext still held. */
static void tls_release(struct conn *c)
{
    struct conn_tls *s = c->tls;

    while (s->cin_head != ENGINE_BUF_NONE) {
        uint16_t bid = s->cin_head;
        s->cin_head = c->w->bufs[bid].next;
        engine_buf_release(c->w, bid);
    }
    tls_conn_free(s->t);
    free(s);
    c->tls = NULL;
}

static const struct conn_io conn_io_tls = {
    .name = "tls",
    .received = tls_received,
    .fill = tls_fill,
    .held_full = tls_held_full,
    .flush = tls_flush,
    .sent = tls_sent,
    .timeout = tls_timeout,
    .release = tls_release,
};
