/*
 * smtp_client_int.h - what the outbound SMTP client's two files share: the connection
 * (struct oconn), its transport vtable, and the few calls between the protocol
 * (net/smtp_client.c) and the TLS transport (net/smtp_client_tls.c). Private to those two;
 * everyone else sees the client through core/queue_int.h.
 *
 * The protocol side calls the transport through c->io (send, recv) and hears back through
 * oconn_send_done() and oconn_recv_done(); the TLS side starts and ends TLS for the protocol
 * (otls_begin, otls_failed, otls_free) and hands the connection back once TLS is up
 * (oconn_ehlo_again). Failures go through oconn_fail(), which decides what becomes of the
 * connection and its job.
 */
#ifndef RR_SMTP_CLIENT_INT_H
#define RR_SMTP_CLIENT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "core/queue_int.h"
#include "net/smtp_reply.h"
#include "net/smtp_stuff.h"

#define CLIENT_IN_BYTES      4096    /* reply bytes received at once */
#define CLIENT_READ_BYTES    65536   /* content read from the spool at once */
#define CLIENT_IOV_MAX       64      /* iovecs in one body send */
#define CLIENT_REPLY_BYTES   512     /* a reply kept for logs and bounces */

enum cstate {
    CS_CONNECT, CS_GREETING, CS_EHLO, CS_HELO, CS_STARTTLS, CS_TLS, CS_READY, CS_TXN, CS_BODY,
    CS_DOT, CS_BDAT, CS_RSET, CS_QUIT, CS_CLOSED
};

struct oconn;
struct otls;

/* The transport under the protocol code: how plaintext goes out and reply bytes come in.
 * Plaintext is the ring's send and receive on the socket; TLS encrypts and decrypts in
 * between. The protocol code calls send and recv and hears back through oconn_send_done()
 * (the plaintext bytes that went, or -errno) and oconn_recv_done() (reply bytes, or 0 /
 * -errno at the end); sent and received take the ring completions of the connection's send
 * and receive. */
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
    bool sending_iov;             /* that send is of iov (content), not of out */
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
    bool body_waits;              /* the content waits for commands being sent: 354 came
                                     before they were all out, or (BDAT) an earlier send was
                                     still under way when the content was ready */
    bool restart;                 /* trying the next address once the operations drained */
    bool idle;                    /* in its destination's idle list (d->idle) */
    struct oconn *idle_next;
    /* the transaction */
    struct qjob *job;
    uint8_t *res;                 /* enum job_rcpt_result per recipient of the job */
    char **rtext;                 /* reply per recipient (malloc'd) */
    uint16_t sent;                /* commands of the transaction sent (without pipelining) */
    uint16_t replied;             /* replies of the transaction read: 0 MAIL, 1..n RCPT, n+1 DATA
                                     or BDAT */
    uint16_t accepted;            /* recipients the peer took */
    bool mail_ok;
    bool bdat;                    /* the content goes as one BDAT LAST chunk (RFC 3030), not
                                     with DATA */
    uint32_t msgs;                /* transactions on this connection */
    /* the content */
    struct smtp_stuff stuff;
    uint32_t chunk;               /* next chunk of the message to read */
    uint64_t chunk_done;          /* bytes of that chunk read */
    char *rbuf;                   /* CLIENT_READ_BYTES */
    uint32_t rlen, rpos;          /* bytes read, bytes encoded */
    struct iovec iov[CLIENT_IOV_MAX];
    unsigned iov_n, iov_pos;      /* entries filled, first entry not fully sent */
    bool iov_cmds;                /* iov[0] is out's unsent commands (BDAT: the commands and the
                                     first content go in one send) */
    struct msghdr mh;
    bool finished;                /* the terminator is in iov (BDAT: the last content is) */
    char why[CLIENT_REPLY_BYTES]; /* why the connection ended early */
};

/* oconn_set_deadline - the current wait ends in ms at the latest. */
static inline void oconn_set_deadline(struct worker *w, struct oconn *c, uint32_t ms)
{
    engine_timer_set(w, &c->timer, w->now_ms + ms);
}

/* ---- the protocol (smtp_client.c), for the transports ---- */

/* oconn_send_done - res plaintext bytes of commands or content went out (or -errno). */
void oconn_send_done(struct worker *w, struct oconn *c, int res);

/* oconn_recv_done - res reply bytes in buf (or the end of the connection: 0, or -errno). */
void oconn_recv_done(struct worker *w, struct oconn *c, const char *buf, int res);

/* oconn_fail, oconn_failf - the connection ends early (the next address, or the job is
 * deferred); why becomes the reason. */
void oconn_fail(struct worker *w, struct oconn *c, const char *why);
void oconn_failf(struct worker *w, struct oconn *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* oconn_next_target - close this socket and connect to c->target (the same address for the
 * plaintext retry); the TLS state of the old socket ends with it. */
void oconn_next_target(struct worker *w, struct oconn *c);

/* oconn_ehlo_again - TLS is up: EHLO again (RFC 3207 4.2). */
void oconn_ehlo_again(struct worker *w, struct oconn *c);

/* oconn_stopping - the worker is stopping: no retries. */
bool oconn_stopping(void);

/* ---- the TLS transport (smtp_client_tls.c) ---- */

/* otls_begin - STARTTLS got 220 and everything before it is settled: switch c to TLS and
 * start the handshake. */
void otls_begin(struct worker *w, struct oconn *c);

/* otls_failed - the TLS session failed: log, count, and retry in plaintext or fail. */
void otls_failed(struct worker *w, struct oconn *c, const char *err, bool timeout);

/* otls_free - end c's TLS state, if any. */
void otls_free(struct oconn *c);

#endif
