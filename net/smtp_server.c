/*
 * smtp_server.c - inbound SMTP sessions on a worker's ring: accept, receive, send, timers,
 * the input loop and the one way a session ends.
 *
 * Functions: smtp_server_init(), smtp_server_accept(), smtp_server_complete(),
 * smtp_server_timer(), smtp_server_buffers_back(), smtp_server_stop(), and the session
 * services of smtp_session.h used by the command table in smtp_commands.c.
 *
 * Input arrives by multishot receive into provided buffers. Each buffer joins the session's
 * input list and is consumed in place: command lines are parsed where they lie (copied only
 * when split across two buffers) and message content is handed to the spool as iovecs into
 * the buffer, which stays out of the kernel's hands until that write is done. Processing
 * pauses while the spool makes a message durable (so pipelined commands are answered in
 * order, after the 250), while the reply buffer is nearly full, and while write slots or
 * buffers run short; it resumes from the same byte.
 *
 * A new connection passes the per-source-IP limits first (core/iplimit.h; they do nothing
 * here when the kernel enforces them): one over a limit gets its 421 by a non-blocking send
 * on the fresh socket and is closed at once, with no session; one that is counted releases
 * its count when its session is freed, in conn_reap() (or smtp_server_fini() after a
 * forced stop), and only there.
 *
 * A session ends in conn_close(): it marks the session, cancels its receive and timer, lets
 * its transaction finish or orphans it to the spool. The memory goes in conn_reap(), which
 * every entry point (completion, timer, end of a loop pass, stop) calls as its very last
 * use of the session, and which frees only once no operation is in flight any more; so no
 * code path ever touches a freed session. Completions carrying an older generation than
 * the slot's are dropped (their buffers still go back).
 *
 * SECURITY: every byte is peer input. Command lines are bounded at 512 octets (AUTH lines at
 * RFC 4954's larger bound, in a buffer of their own only while split: smtp_auth.h), queued
 * input at CONN_IN_BUFS_MAX buffers, replies at CONN_OUT_BYTES; a peer that talks before the
 * greeting, pipelines where it may not, idles or trickles is cut off with a reply, a log line
 * and a counter. A flood of connections over the per-IP limits costs an accept, a send and
 * a close each, and at most one log line per worker per second (REFUSAL_LOG_MS), as does a
 * flood past the worker's own connection ceiling.
 *
 * STANDARDS: RFC 5321 (SMTP), RFC 2920 (PIPELINING), RFC 3030 (CHUNKING).
 */
#include <errno.h>
#include <inttypes.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/iplimit.h"
#include "core/log.h"
#include "net/smtp_auth.h"
#include "net/smtp_server.h"
#include "net/smtp_session.h"

const char *const smtp_state_name[ST_COUNT] = {
    "greeting", "init", "ready", "mail", "data", "bdat", "commit", "auth", "auth_wait",
    "closing",
};

#define REFUSAL_LOG_MS 1000       /* at most one line about refusals at accept this often */

/* Worker-private session bookkeeping beyond struct worker. */
struct server {
    struct conn *wait_head;       /* sessions waiting for buffers or write slots */
    struct txn *txn_free;         /* recycled transactions */
    struct iplimit *iplimit;      /* the per-IP accounting (process-wide) */
    uint64_t refusal_log_ms;      /* when a refusal at accept was last logged */
    uint64_t refusals_suppressed; /* refusals at accept not logged since */
};

static __thread struct server *srv;

static void process_input(struct conn *c);
static void arm_recv(struct conn *c);
static void cancel_recv(struct conn *c);
static void conn_release_ip(struct conn *c);

/* smtp_server_init - the session table and free slot stack. */
int smtp_server_init(struct worker *w)
{
    uint32_t n = w->cfg->connections_max ? w->cfg->connections_max : 1;

    srv = rr_calloc(1, sizeof(*srv));
    srv->iplimit = iplimit_shared();  /* made here, at set-up, not at a first accept */
    w->conn_slots = n;
    w->conns = rr_calloc(n, sizeof(*w->conns));
    w->conn_free = rr_calloc(n, sizeof(*w->conn_free));
    for (uint32_t i = 0; i < n; i++)
        w->conn_free[i] = n - 1 - i;
    w->conn_free_count = n;
    w->conn_gen_next = 1;
    return 0;
}

/* smtp_server_fini - release the session table and the transaction free list (on the
 * worker, after its loop: no session is left). */
void smtp_server_fini(struct worker *w)
{
    while (srv && srv->txn_free) {
        struct txn *t = srv->txn_free;
        srv->txn_free = t->free_next;
        spool_msg_release(&t->sm);
        free(t);
    }
    for (uint32_t i = 0; i < w->conn_slots; i++) {
        /* only after a forced stop: no operation is in flight any more */
        if (w->conns[i])
            conn_release_ip(w->conns[i]);
        free(w->conns[i]);
    }
    free(w->conns);
    free(w->conn_free);
    w->conns = NULL;
    w->conn_free = NULL;
    free(srv);
    srv = NULL;
}

/* conn_set_state - every state change passes here, so it can be traced. */
void conn_set_state(struct conn *c, enum smtp_state to)
{
    if (log_verbose && c->state != to)
        log_event(LOG_DEBUG, "event=state session=%u:%u from=%s to=%s", c->w->id, c->slot,
                  smtp_state_name[c->state], smtp_state_name[to]);
    c->state = to;
}

/* conn_reply - append one reply line (CRLF added). Room was checked before the command. */
void conn_reply(struct conn *c, const char *fmt, ...)
{
    va_list ap;
    size_t room = CONN_OUT_BYTES - c->out_len;
    int n;

    if (c->closing)
        return;
    va_start(ap, fmt);
    n = vsnprintf(c->out + c->out_len, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n + 2 > room) {
        /* Broken invariant: the input loop keeps CONN_OUT_ROOM free per command. */
        log_event(LOG_ERROR, "event=bug what=reply_overflow peer=%s", c->peer_text);
        c->out_len = CONN_OUT_BYTES;
        conn_close(c);
        return;
    }
    c->out_len += (uint16_t)n;
    c->out[c->out_len++] = '\r';
    c->out[c->out_len++] = '\n';
}

/* conn_flush - send what is in out[] through the transport. */
void conn_flush(struct conn *c)
{
    if (!c->closing)
        c->io->flush(c);
}

/* conn_send - one ring send of len bytes at p for the transport (the only send path). */
void conn_send(struct conn *c, const void *p, size_t len)
{
    struct io_uring_sqe *sqe;

    c->send_active = true;
    c->ops++;
    sqe = engine_sqe(c->w);
    io_uring_prep_send(sqe, c->fd, p, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_SEND, c->slot, c->gen));
}

/* plain_flush - plaintext: send out[] as it is, unless a send is in flight. */
static void plain_flush(struct conn *c)
{
    if (c->send_active || !c->out_len || c->fd < 0)
        return;
    c->send_len = c->out_len;
    conn_send(c, c->out, c->send_len);
}

/* plain_sent - plaintext: what went is what the kernel took. */
static int plain_sent(struct conn *c, int res)
{
    return res > 0 ? res : -EPIPE;
}

/* conn_rejected - log a refusal: event=rejected with the code and reason. */
void conn_rejected(struct conn *c, const char *reply, const char *reason)
{
    log_event(LOG_INFO, "event=rejected code=%.3s reason=%s peer=%s reply=%s", reply,
              log_q(reason), c->peer_text, log_q(reply));
}

/* conn_idle_deadline - the next command must be complete within idle_timeout. */
void conn_idle_deadline(struct conn *c)
{
    engine_timer_set(c->w, &c->timer, c->w->now_ms + c->w->cfg->idle_timeout_ms);
}

/* rate_window_ms - the minimum data rate is judged over windows of this length. */
static uint64_t rate_window_ms(const struct rr_config *cfg)
{
    return cfg->idle_timeout_ms < CONN_RATE_WINDOW_MS ? cfg->idle_timeout_ms : CONN_RATE_WINDOW_MS;
}

/* conn_data_deadline - start a DATA/BDAT phase: the rate window and the phase ceiling. */
void conn_data_deadline(struct conn *c)
{
    c->data_start_ms = c->w->now_ms;
    c->window_bytes = 0;
    engine_timer_set(c->w, &c->timer, c->w->now_ms + rate_window_ms(c->w->cfg));
}

/* txn_new - a transaction from the worker's free list, sized for max_recipients. */
struct txn *txn_new(struct conn *c)
{
    unsigned cap = c->w->cfg->rcpt_count_max;
    struct txn *t = srv->txn_free;

    if (t && t->rcpt_cap >= cap) {
        srv->txn_free = t->free_next;
    } else {
        t = rr_malloc(sizeof(*t) + cap * sizeof(struct smtp_addr));
        t->rcpt_cap = cap;
    }
    memset(t, 0, offsetof(struct txn, rcpt_cap));
    t->rcpt_count = 0;
    t->conn = c;
    c->txn = t;
    return t;
}

/* txn_free - back to the free list (or away when the list holds enough). */
void txn_free(struct txn *t)
{
    free(t->envelope);
    t->envelope = NULL;
    spool_msg_release(&t->sm);
    t->free_next = srv->txn_free;
    srv->txn_free = t;
}

/* txn_end - the session is done with its transaction: free it or leave it to the spool. */
void txn_end(struct conn *c)
{
    struct txn *t = c->txn;

    if (!t)
        return;
    c->txn = NULL;
    t->conn = NULL;
    /* Committing, or writes in flight: the spool calls done() later, and that frees it. */
    if (!t->spooling || (!t->sm.committing && spool_msg_abort(c->w, &t->sm)))
        txn_free(t);
}

/* conn_release_ip - give back the session's count in the per-IP accounting, once. */
static void conn_release_ip(struct conn *c)
{
    if (!c->ip_counted)
        return;
    c->ip_counted = false;
    iplimit_release(srv->iplimit, &c->peer.sa);
}

/* conn_reap - free the slot once closed and nothing is in flight. The caller's last use. */
void conn_reap(struct conn *c)
{
    struct worker *w = c->w;
    struct io_uring_sqe *sqe;

    if (!c->closing || c->ops || c->waiting || c->auth_pending)
        return;
    if (c->io->release)
        c->io->release(c);
    smtp_auth_release(c);
    if (c->fd >= 0) {
        sqe = engine_sqe(w);
        io_uring_prep_close(sqe, c->fd);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
        c->fd = -1;
    }
    conn_release_ip(c);
    w->conns[c->slot] = NULL;
    w->conn_free[w->conn_free_count++] = c->slot;
    w->conn_count--;
    metrics_sub(&w->m->connections_active, 1);
    free(c);
}

/* drop_input - give every queued buffer back (or leave it to the write that holds it). */
void conn_drop_input(struct conn *c)
{
    struct worker *w = c->w;

    while (c->in_head != ENGINE_BUF_NONE) {
        uint16_t bid = c->in_head;
        struct engine_buf *b = &w->bufs[bid];
        c->in_head = b->next;
        b->queued = false;
        if (!b->refs)
            engine_buf_release(w, bid);
    }
    c->in_tail = ENGINE_BUF_NONE;
    c->in_count = 0;
}

/* cancel_recv - stop the multishot receive (its last completion arrives later). */
static void cancel_recv(struct conn *c)
{
    struct io_uring_sqe *sqe;

    if (!c->recv_active)
        return;
    sqe = engine_sqe(c->w);
    io_uring_prep_cancel64(sqe, engine_ud(OP_RECV, c->slot, c->gen), 0);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
}

/* conn_close - the one way out: mark, cancel, finish or orphan the transaction, reap. */
void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    if (c->txn && (c->state == ST_DATA || c->state == ST_BDAT))
        metrics_add(&c->w->m->messages_rejected[MSG_ABORTED], 1);
    c->closing = true;
    conn_set_state(c, ST_CLOSING);
    engine_timer_set(c->w, &c->timer, 0);
    txn_end(c);
    conn_drop_input(c);
    cancel_recv(c);
    if (c->send_active && c->fd >= 0)
        shutdown(c->fd, SHUT_RDWR);  /* a peer that does not read must not pin the send */
    if (c->greet_timer) {
        struct io_uring_sqe *sqe = engine_sqe(c->w);
        io_uring_prep_timeout_remove(sqe, engine_ud(OP_GREET_TIMER, c->slot, c->gen), 0);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
    }
}

/* conn_close_after_reply - send what is queued, then close; a peer that does not take the
 * reply within CONN_LINGER_MS is closed anyway. */
void conn_close_after_reply(struct conn *c)
{
    c->close_after_send = true;
    conn_set_state(c, ST_CLOSING);
    conn_drop_input(c);
    cancel_recv(c);
    engine_timer_set(c->w, &c->timer, c->w->now_ms + CONN_LINGER_MS);
    if (c->out_len)
        conn_flush(c);
    else
        conn_close(c);
}

/* arm_recv - multishot receive into the worker's provided buffers. */
static void arm_recv(struct conn *c)
{
    struct io_uring_sqe *sqe;

    if (c->recv_active || c->closing || c->close_after_send || c->peer_eof)
        return;
    sqe = engine_sqe(c->w);
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = 0;
    io_uring_sqe_set_data64(sqe, engine_ud(OP_RECV, c->slot, c->gen));
    c->recv_active = true;
    c->recv_paused = false;
    c->ops++;
}

/* conn_wait_resources - park the session until buffers or write slots come back. */
void conn_wait_resources(struct conn *c)
{
    if (c->waiting)
        return;
    c->waiting = true;
    c->wait_next = srv->wait_head;
    srv->wait_head = c;
}

/* smtp_greeting - the banner, and from now on input is expected. */
void smtp_greeting(struct conn *c)
{
    conn_reply(c, "220 %s ESMTP ringrelay", c->w->cfg->hostname);
    conn_set_state(c, ST_INIT);
    conn_idle_deadline(c);
    conn_flush(c);
}

/* peer_read - the client's address of socket fd into *peer (a v4-mapped IPv6 address as
 * IPv4) and its text; false, with text "unknown", when the socket has none any more. */
static bool peer_read(int fd, union conn_addr *peer, char *text, size_t cap)
{
    socklen_t len = sizeof(*peer);

    memset(peer, 0, sizeof(*peer));
    if (getpeername(fd, &peer->sa, &len) < 0 ||
        (peer->sa.sa_family != AF_INET && peer->sa.sa_family != AF_INET6)) {
        peer->sa.sa_family = AF_UNSPEC;
        snprintf(text, cap, "unknown");
        return false;
    }
    if (peer->sa.sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&peer->in6.sin6_addr)) {
        struct sockaddr_in v4 = { .sin_family = AF_INET, .sin_port = peer->in6.sin6_port };
        memcpy(&v4.sin_addr, &peer->in6.sin6_addr.s6_addr[12], 4);
        peer->in = v4;
    }
    if (peer->sa.sa_family == AF_INET)
        inet_ntop(AF_INET, &peer->in.sin_addr, text, (socklen_t)cap);
    else
        inet_ntop(AF_INET6, &peer->in6.sin6_addr, text, (socklen_t)cap);
    return true;
}

/* refuse_at_accept - a connection turned away before it has a session (the worker's
 * ceiling, a per-IP limit): reply (a 421 line) by a non-blocking send, close, and a log
 * line unless one went out less than REFUSAL_LOG_MS ago (then it is counted into the next
 * one's suppressed=): a flood must not turn into a stream of lines that blocks the worker
 * on stderr. The callers count the refusal. */
static void refuse_at_accept(struct worker *w, int fd, const char *reply, size_t len,
                             const char *reason, const char *peer_text)
{
    /* A fresh socket's send buffer is empty: this non-blocking send cannot block. */
    if (send(fd, reply, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        (void)0;
    close(fd);
    if (srv->refusal_log_ms && w->now_ms - srv->refusal_log_ms < REFUSAL_LOG_MS) {
        srv->refusals_suppressed++;
        return;
    }
    log_event(LOG_WARN, "event=rejected code=421 reason=%s peer=%s worker=%u suppressed=%" PRIu64,
              reason, peer_text, w->id, srv->refusals_suppressed);
    srv->refusal_log_ms = w->now_ms ? w->now_ms : 1;
    srv->refusals_suppressed = 0;
}

/* smtp_server_accept - set up a session for a new socket: the worker's own ceiling, then the
 * per-IP limits, then the session. */
void smtp_server_accept(struct worker *w, unsigned li, int fd)
{
    const struct rr_config *cfg = w->cfg;
    enum iplimit_verdict ipv;
    union conn_addr peer;
    char peer_text[CONN_PEER_BYTES];
    bool have_peer;
    struct conn *c;

    metrics_add(&w->m->connections_total[li], 1);
    have_peer = peer_read(fd, &peer, peer_text, sizeof(peer_text));
    if (!w->conn_free_count || w->stopping) {
        static const char busy[] = "421 4.7.0 Too many connections, try again later\r\n";
        metrics_add(&w->m->protocol_errors[PROTO_CONN_LIMIT], 1);
        refuse_at_accept(w, fd, busy, sizeof(busy) - 1, "connection_limit", peer_text);
        return;
    }
    ipv = iplimit_accept(srv->iplimit, cfg, have_peer ? &peer.sa : NULL, w->now_ns);
    if (ipv == IPL_REFUSED_CONNECTIONS) {  /* counted by the accounting (iplimit_stats) */
        static const char conns[] =
            "421 4.7.0 Too many connections from your address, try again later\r\n";
        refuse_at_accept(w, fd, conns, sizeof(conns) - 1,
                         iplimit_limit_name[IPL_LIMIT_CONNECTIONS], peer_text);
        return;
    }
    if (ipv == IPL_REFUSED_RATE) {
        static const char rate[] =
            "421 4.7.0 Too many connection attempts from your address, try again later\r\n";
        refuse_at_accept(w, fd, rate, sizeof(rate) - 1, iplimit_limit_name[IPL_LIMIT_RATE],
                         peer_text);
        return;
    }
    c = rr_calloc(1, sizeof(*c));
    c->w = w;
    c->fd = fd;
    c->slot = w->conn_free[--w->conn_free_count];
    c->gen = w->conn_gen_next++;
    c->listener = (uint8_t)li;
    c->in_head = c->in_tail = ENGINE_BUF_NONE;
    c->timer.fire = smtp_server_timer;
    c->io = &conn_io_plain;
    c->peer = peer;
    c->ip_counted = ipv == IPL_COUNTED;
    memcpy(c->peer_text, peer_text, sizeof(c->peer_text));
    w->conns[c->slot] = c;
    w->conn_count++;
    metrics_add(&w->m->connections_active, 1);

    log_event(LOG_DEBUG, "event=connect session=%u:%u peer=%s listener=%s", w->id, c->slot,
              c->peer_text, cfg->listeners[li].name);

    arm_recv(c);
    if (cfg->listeners[li].tls == TLS_IMPLICIT) {
        conn_tls_accept(c);  /* the greeting follows the handshake */
    } else if (cfg->greeting_delay_ms) {
        struct io_uring_sqe *sqe = engine_sqe(w);
        c->greet_ts.tv_sec = cfg->greeting_delay_ms / 1000;
        c->greet_ts.tv_nsec = (long long)(cfg->greeting_delay_ms % 1000) * 1000000;
        io_uring_prep_timeout(sqe, &c->greet_ts, 0, 0);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_GREET_TIMER, c->slot, c->gen));
        c->ops++;
        c->greet_timer = true;
        conn_set_state(c, ST_GREETING);
        conn_idle_deadline(c);
    } else {
        smtp_greeting(c);
    }
}

/* conn_queue_input - a buffer of len input bytes joins the session's input list. */
void conn_queue_input(struct conn *c, uint16_t bid, int len)
{
    struct worker *w = c->w;
    struct engine_buf *b = &w->bufs[bid];

    b->off = 0;
    b->len = (uint16_t)len;
    b->refs = 0;
    b->next = ENGINE_BUF_NONE;
    b->queued = true;
    if (c->closing || c->close_after_send) {
        b->queued = false;
        engine_buf_release(w, bid);
        return;
    }
    if (c->in_tail == ENGINE_BUF_NONE)
        c->in_head = bid;
    else
        w->bufs[c->in_tail].next = bid;
    c->in_tail = bid;
    c->in_count++;
    if (c->in_count >= CONN_IN_BUFS_MAX)
        conn_recv_pause(c);
}

/* conn_recv_pause - a peer far ahead of us: stop reading until we catch up. */
void conn_recv_pause(struct conn *c)
{
    if (c->recv_paused)
        return;
    c->recv_paused = true;
    cancel_recv(c);
}

/* plain_received - plaintext: the received buffer is session input as it is. */
static void plain_received(struct conn *c, uint16_t bid, int len)
{
    conn_queue_input(c, bid, len);
}

const struct conn_io conn_io_plain = {
    .name = "plain",
    .received = plain_received,
    .flush = plain_flush,
    .sent = plain_sent,
};

/* line_held - where the part of a command line split across buffers is kept. */
static char *line_held(struct conn *c)
{
    return c->auth_line ? c->auth_line : c->line;
}

/* line_keep - keep n more bytes of a split line (the caller checked its bound); an AUTH line
 * longer than line[] moves to a buffer of its own, which lives until the line is handled. */
static void line_keep(struct conn *c, const char *data, size_t n)
{
    if (!c->auth_line && c->line_len + n > SMTP_COMMAND_LINE_BYTES_MAX) {
        c->auth_line = rr_malloc(SMTP_AUTH_LINE_BYTES);
        memcpy(c->auth_line, c->line, c->line_len);
    }
    memcpy(line_held(c) + c->line_len, data, n);
    c->line_len += (uint16_t)n;
}

/* command_in - consume bytes of a command line; returns bytes consumed. A line is at most
 * 512 octets, or for AUTH (RFC 4954) SMTP_AUTH_LINE_BYTES_MAX in one buffer and
 * SMTP_AUTH_LINE_BYTES when split (no longer split line can be valid credentials). */
static size_t command_in(struct conn *c, const char *data, size_t avail, bool more_buffers)
{
    const char *lf = memchr(data, '\n', avail);
    const char *line;
    size_t take = lf ? (size_t)(lf - data) + 1 : avail, len;
    bool auth = smtp_auth_line_long(c, line_held(c), c->line_len, data, take);
    size_t held_max = auth ? SMTP_AUTH_LINE_BYTES : SMTP_COMMAND_LINE_BYTES_MAX;
    bool bare_lf;

    if (!lf) {  /* partial line: keep it (bounded) until the rest arrives */
        if (c->line_len + avail <= held_max) {
            line_keep(c, data, avail);
        } else {
            /* Too long: discard to the end of the line, but keep what fits in line[], so
             * that the rest is still known as (say) an AUTH line when it comes. */
            c->line_overflow = true;
            if (c->line_len < SMTP_COMMAND_LINE_BYTES_MAX && !c->auth_line) {
                size_t n = SMTP_COMMAND_LINE_BYTES_MAX - c->line_len;
                line_keep(c, data, n < avail ? n : avail);
            }
        }
        return avail;
    }
    if (c->line_len) {
        len = c->line_len + take - 1;
        if (c->line_len + take > held_max)
            c->line_overflow = true;
        else
            line_keep(c, data, take - 1);
        line = line_held(c);
    } else {
        line = data;
        len = take - 1;
        if (take > (auth ? SMTP_AUTH_LINE_BYTES_MAX : SMTP_COMMAND_LINE_BYTES_MAX))
            c->line_overflow = true;
    }
    c->line_len = 0;
    if (c->line_overflow) {
        c->line_overflow = false;
        if (auth) {
            smtp_auth_refuse_line(c, sasl_status_reply(SASL_TOO_LONG), PROTO_LINE_TOO_LONG);
        } else {
            conn_reply(c, "500 5.5.2 Line too long");
            conn_rejected(c, "500 5.5.2", "line_too_long");
            smtp_protocol_error(c, PROTO_LINE_TOO_LONG);
        }
        goto out;
    }
    bare_lf = !(len && line[len - 1] == '\r');
    if (!bare_lf)
        len--;
    if (bare_lf && c->w->cfg->line_endings == LINE_ENDINGS_REJECT) {
        if (c->state == ST_AUTH) {  /* the exchange ends with the refusal */
            smtp_auth_refuse_line(c, "550 5.5.2 Bare LF in command; lines must end in CRLF",
                                  PROTO_BAD_BYTES);
            goto out;
        }
        conn_reply(c, "550 5.5.2 Bare LF in command; lines must end in CRLF");
        conn_rejected(c, "550 5.5.2", "bare_line_ending");
        smtp_protocol_error(c, PROTO_BAD_BYTES);
        goto out;
    }
    smtp_command(c, line, len, take < avail || more_buffers);
out:
    free(c->auth_line);  /* only while a line needs it */
    c->auth_line = NULL;
    return take;
}

/* content_in - consume DATA/BDAT content from buffer bid; returns bytes consumed. */
static size_t content_in(struct conn *c, uint16_t bid, const char *data, size_t avail)
{
    struct txn *t = c->txn;
    struct iovec iov[SPOOL_WOP_IOV_MAX];
    unsigned n = 0;
    bool done = false;
    size_t take = avail, used;

    if (c->state == ST_BDAT) {
        if (take > c->bdat_left)
            take = (size_t)c->bdat_left;
        if (c->bdat_discard || !t) {
            c->bdat_left -= take;
            c->window_bytes += take;
            if (!c->bdat_left)
                smtp_end_of_content(c, ENGINE_BUF_NONE, NULL, 0);
            return take;
        }
    }
    if (t->rd.err == SMTP_DATA_OK && !spool_writes_available(c->w, 2)) {
        conn_wait_resources(c);
        return 0;
    }
    used = smtp_data_feed(&t->rd, data, take, iov, SPOOL_WOP_IOV_MAX - 1, &n, &done);
    c->window_bytes += used;
    if (c->state == ST_BDAT) {
        c->bdat_left -= used;
        done = c->bdat_left == 0;
    }
    if (t->rd.err != SMTP_DATA_OK)
        n = 0;
    if (done) {
        /* The last content goes out with the commit record, in one write. */
        smtp_end_of_content(c, bid, iov, n);
        return used;
    }
    if (n)
        spool_msg_write(c->w, &t->sm, bid, iov, n);
    return used;
}

/* process_input - consume queued input until it runs out or the session must wait. */
static void process_input(struct conn *c)
{
    struct worker *w = c->w;
    bool drained = true;          /* the transport holds no input back */

    for (;;) {
        if (c->closing || c->close_after_send)
            break;
        if (c->in_head == ENGINE_BUF_NONE) {
            if (c->io->fill)
                drained = c->io->fill(c);  /* TLS: decrypt more of what was received */
            if (c->closing)
                return;
            if (c->in_head == ENGINE_BUF_NONE)
                break;
        }
        uint16_t bid = c->in_head;
        struct engine_buf *b = &w->bufs[bid];
        const char *data = engine_buf_ptr(w, bid) + b->off;
        size_t avail = (size_t)(b->len - b->off), used = 0;

        if (!avail) {
            c->in_head = b->next;
            if (c->in_head == ENGINE_BUF_NONE)
                c->in_tail = ENGINE_BUF_NONE;
            c->in_count--;
            b->queued = false;
            if (!b->refs)
                engine_buf_release(w, bid);
            continue;
        }
        if (c->state == ST_COMMIT || c->state == ST_AUTH_WAIT || c->waiting)
            break;
        if (c->state == ST_GREETING) {
            conn_reply(c, "554 5.5.0 Protocol error: talking before the greeting");
            conn_rejected(c, "554 5.5.0", "pregreet");
            metrics_add(&w->m->protocol_errors[PROTO_PREGREET], 1);
            conn_close_after_reply(c);
            return;
        }
        if (c->state == ST_DATA || c->state == ST_BDAT) {
            used = content_in(c, bid, data, avail);
        } else {
            if (c->out_len + CONN_OUT_ROOM > CONN_OUT_BYTES) {
                /* The client sends ahead without reading our replies: wait for the send,
                 * but not for long, since its queued input holds receive buffers. */
                if (!c->timer.next || c->timer.deadline_ms > c->w->now_ms + CONN_LINGER_MS)
                    engine_timer_set(c->w, &c->timer, c->w->now_ms + CONN_LINGER_MS);
                conn_flush(c);  /* resumes from the send completion */
                break;
            }
            used = command_in(c, data, avail, b->next != ENGINE_BUF_NONE);
        }
        if (c->closing)
            return;
        b->off += (uint16_t)used;
        if (c->discard_input) {
            /* RFC 3207: what was pipelined after STARTTLS is never executed */
            c->discard_input = false;
            conn_drop_input(c);
            break;
        }
        if (!used && c->waiting)
            break;
    }
    if (!c->closing && c->in_head == ENGINE_BUF_NONE && drained && c->recv_paused &&
        !c->recv_active)
        arm_recv(c);
    if (c->peer_eof && !c->closing && !c->close_after_send && c->in_head == ENGINE_BUF_NONE &&
        c->state != ST_COMMIT && c->state != ST_AUTH_WAIT && !c->waiting) {
        /* All the client sent is handled and answered: a message cut short is dropped. */
        if (c->state == ST_DATA || c->state == ST_BDAT)
            conn_close(c);
        else
            conn_close_after_reply(c);
        return;
    }
    conn_flush(c);
}

/* smtp_server_resume - continue with queued input after the session waited. */
void smtp_server_resume(struct conn *c)
{
    process_input(c);
}

/* recv_done - a multishot receive completion. */
static void recv_done(struct conn *c, const struct io_uring_cqe *cqe)
{
    bool more = cqe->flags & IORING_CQE_F_MORE;

    if (!more) {
        c->recv_active = false;
        c->ops--;
    }
    if (cqe->res > 0) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        c->w->bufs_out++;
        if (c->closing || c->close_after_send) {
            engine_buf_release(c->w, bid);
        } else {
            c->io->received(c, bid, cqe->res);
            if (!c->closing)
                process_input(c);
        }
    } else if (cqe->res == 0) {
        /* End of file: the client may have half-closed after its last command; answer
         * what it sent (and wait for a message being committed) before closing. */
        c->peer_eof = true;
        if (!c->closing)
            process_input(c);
    } else if (cqe->res == -ENOBUFS) {
        conn_wait_resources(c);  /* re-armed when buffers come back */
    } else if (cqe->res != -ECANCELED) {
        conn_close(c);
    }
    if (!more && !c->closing && !c->waiting && !c->close_after_send && !c->peer_eof) {
        /* A pause may have ended in the same pass that cancelled the receive. */
        if (c->recv_paused && c->in_count < CONN_IN_BUFS_MAX &&
            !(c->io->held_full && c->io->held_full(c)))
            c->recv_paused = false;
        if (!c->recv_paused)
            arm_recv(c);
    }
    conn_reap(c);
}

/* send_done - a send completed: shift out what went, send the rest, or close. */
static void send_done(struct conn *c, int res)
{
    int sent;

    c->send_active = false;
    c->ops--;
    sent = c->closing ? -ECANCELED : c->io->sent(c, res);
    if (sent < 0) {
        c->out_len = 0;
        conn_close(c);
        conn_reap(c);
        return;
    }
    if (sent) {
        memmove(c->out, c->out + sent, (size_t)(c->out_len - sent));
        c->out_len -= (uint16_t)sent;
    }
    if (c->send_active) {
        /* the transport is still sending (the rest of a TLS flight) */
    } else if (c->out_len) {
        conn_flush(c);
    } else if (c->close_after_send) {
        conn_close(c);
    } else if (!c->closing) {
        process_input(c);
    }
    conn_reap(c);
}

/* smtp_server_complete - session completions from the dispatcher. */
void smtp_server_complete(struct worker *w, enum engine_op op, uint32_t slot, uint32_t gen,
                          const struct io_uring_cqe *cqe)
{
    struct conn *c = slot < w->conn_slots ? w->conns[slot] : NULL;

    if (!c || c->gen != gen) {
        /* Stale: the session is gone. A buffer it carries must still go back. */
        if (op == OP_RECV && cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
            w->bufs_out++;
            engine_buf_release(w, (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
        }
        return;
    }
    switch (op) {
    case OP_RECV:
        recv_done(c, cqe);
        break;
    case OP_SEND:
        send_done(c, cqe->res);
        break;
    case OP_GREET_TIMER:
        c->ops--;
        c->greet_timer = false;
        if (c->state == ST_GREETING && !c->closing)
            smtp_greeting(c);
        conn_reap(c);
        break;
    default:
        break;
    }
}

/* smtp_server_timer - idle timeout, data rate check or DATA ceiling. */
void smtp_server_timer(struct worker *w, struct engine_timer *t)
{
    struct conn *c = (struct conn *)((char *)t - offsetof(struct conn, timer));
    const struct rr_config *cfg = w->cfg;

    if (c->closing || c->state == ST_COMMIT)
        return;
    if (c->io->timeout && c->io->timeout(c)) {  /* a stalled TLS handshake */
        conn_reap(c);
        return;
    }
    if (c->close_after_send) {  /* the last reply could not be delivered in time */
        conn_close(c);
        conn_reap(c);
        return;
    }
    if (c->state == ST_DATA || c->state == ST_BDAT) {
        uint64_t window = rate_window_ms(cfg);
        uint64_t need = (uint64_t)cfg->min_data_rate * window / 1000;
        bool slow = c->window_bytes < need;
        bool over = cfg->data_timeout_ms && w->now_ms - c->data_start_ms >= cfg->data_timeout_ms;
        if (!slow && !over) {
            c->window_bytes = 0;
            engine_timer_set(w, &c->timer, w->now_ms + window);
            return;
        }
        conn_reply(c, "421 4.4.2 %s Error: %s", cfg->hostname,
                   slow ? "data arrives too slowly" : "data timeout exceeded");
        conn_rejected(c, "421 4.4.2", slow ? "too_slow" : "timeout");
        metrics_add(&w->m->protocol_errors[slow ? PROTO_SLOW : PROTO_TIMEOUT], 1);
        metrics_add(&w->m->messages_rejected[MSG_ABORTED], 1);
    } else {
        if (c->out_len + CONN_OUT_ROOM / 4 <= CONN_OUT_BYTES)  /* a client not reading has no room */
            conn_reply(c, "421 4.4.2 %s Error: timeout exceeded", cfg->hostname);
        conn_rejected(c, "421 4.4.2", "timeout");
        metrics_add(&w->m->protocol_errors[PROTO_TIMEOUT], 1);
    }
    conn_close_after_reply(c);
    conn_reap(c);
}

/* smtp_server_buffers_back - reap closed waiters; resume the others if resources came back. */
void smtp_server_buffers_back(struct worker *w, bool resources)
{
    struct conn *list = srv->wait_head, *c, *next;

    if (!list)
        return;
    srv->wait_head = NULL;
    for (c = list; c; c = next) {
        next = c->wait_next;
        c->waiting = false;
        if (c->closing) {
            conn_reap(c);
            continue;
        }
        if (!resources) {
            conn_wait_resources(c);  /* back on the list, nothing changed for it */
            continue;
        }
        process_input(c);
        if (!c->recv_active && !c->recv_paused && !c->closing && !c->close_after_send &&
            !c->waiting)
            arm_recv(c);
        conn_reap(c);
    }
    (void)w;
}

/* smtp_server_stop - SIGTERM: say goodbye to idle sessions; busy ones finish first. */
void smtp_server_stop(struct worker *w)
{
    for (uint32_t i = 0; i < w->conn_slots; i++) {
        struct conn *c = w->conns[i];
        if (!c || c->closing || c->close_after_send)
            continue;
        if (c->state == ST_DATA || c->state == ST_BDAT || c->state == ST_COMMIT) {
            c->stop_after_txn = true;
            continue;
        }
        txn_end(c);
        if (c->out_len + CONN_OUT_ROOM <= CONN_OUT_BYTES)
            conn_reply(c, "421 4.3.2 %s Service shutting down", w->cfg->hostname);
        conn_close_after_reply(c);
        conn_reap(c);
    }
}

/* smtp_server_stop_now - close whatever is still open. */
void smtp_server_stop_now(struct worker *w)
{
    for (uint32_t i = 0; i < w->conn_slots; i++) {
        struct conn *c = w->conns[i];
        if (c) {
            conn_close(c);
            conn_reap(c);
        }
    }
}
