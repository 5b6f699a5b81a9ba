/*
 * smtp_session.h - the state of one inbound SMTP session, shared by smtp_server.c (I/O,
 * lifecycle, input loop) and smtp_commands.c (the command table). Private to net/.
 */
#ifndef RR_SMTP_SESSION_H
#define RR_SMTP_SESSION_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/engine.h"
#include "core/spool_writer.h"
#include "net/sasl.h"
#include "net/smtp_data.h"
#include "net/smtp_parse.h"

#define CONN_OUT_BYTES       1536  /* pending replies; a pipelined group fits */
#define CONN_OUT_ROOM        600   /* free room needed before handling one more command */
#define CONN_IN_BUFS_MAX     8     /* queued receive buffers before receiving pauses */
#define CONN_RATE_WINDOW_MS  30000 /* longest window the minimum data rate is judged over
                                      (shorter when idle_timeout is) */
#define CONN_PEER_BYTES      48    /* printable peer address */
#define CONN_LINGER_MS       10000 /* most time a closing reply may take to be sent */

enum smtp_state {
    ST_GREETING,                  /* connected, greeting not sent yet */
    ST_INIT,                      /* greeted, waiting for HELO/EHLO */
    ST_READY,                     /* HELO/EHLO done, no transaction */
    ST_MAIL,                      /* MAIL accepted, collecting RCPT */
    ST_DATA,                      /* reading DATA content */
    ST_BDAT,                      /* reading a BDAT chunk */
    ST_COMMIT,                    /* content complete, waiting for stable storage */
    ST_AUTH,                      /* AUTH exchange: a response line to a 334 is next */
    ST_AUTH_WAIT,                 /* AUTH credentials being checked, or the reply held back
                                     (net/smtp_auth.c); input waits, as in ST_COMMIT */
    ST_CLOSING,                   /* on the way out; input is dropped */
    ST_COUNT
};

/* A client address as getpeername gives it (a v4-mapped IPv6 one rewritten as IPv4). */
union conn_addr {
    struct sockaddr sa;           /* the family, to tell which of the two it is */
    struct sockaddr_in in;        /* AF_INET (v4-mapped IPv6 included) */
    struct sockaddr_in6 in6;      /* AF_INET6 */
};

struct conn;
struct conn_tls;
struct conn_io;
struct smtp_auth;

/* A mail transaction: from MAIL to the reply after its content. */
struct txn {
    struct spool_msg_w sm;        /* spool side; its done() ends the transaction */
    struct conn *conn;            /* owning session, NULL once the session closed */
    struct smtp_addr from;        /* reverse-path */
    struct smtp_mail_params params; /* MAIL parameters */
    struct smtp_data_reader rd;   /* content scanner */
    bool spooling;                /* spool_msg_begin done */
    bool bdat;                    /* content comes by BDAT */
    bool notify;                  /* relaying in notify mode: the notice follows the 250 */
    uint64_t end_ns;              /* end of content, for the accept latency */
    char *envelope;               /* COMMIT payload, built at the end */
    uint32_t envelope_len;
    struct txn *free_next;        /* worker free list */
    unsigned rcpt_cap;            /* entries of rcpts */
    unsigned rcpt_count;          /* accepted recipients */
    struct smtp_addr rcpts[];     /* forward-paths */
};

struct conn {
    struct worker *w;             /* owning worker */
    uint32_t slot;                /* index in w->conns */
    uint32_t gen;                 /* generation in every user_data of this session */
    int fd;                       /* socket */
    enum smtp_state state;
    uint8_t listener;             /* index into cfg->listeners */
    uint8_t ops;                  /* ring operations in flight (recv, send, timer, ...) */
    bool recv_active;             /* multishot receive armed */
    bool recv_paused;             /* receive cancelled: too much input queued */
    bool send_active;             /* a send is in flight */
    bool closing;                 /* conn_close() ran */
    bool close_after_send;        /* close once the output is sent */
    bool esmtp;                   /* EHLO (not HELO) given: PIPELINING was offered */
    bool waiting;                 /* on the worker's wait list */
    bool peer_eof;                /* the client shut its sending side: finish, then close */
    bool stop_after_txn;          /* shutting down: 421 after the current message */
    bool line_overflow;           /* command line beyond 512 octets: discarding */
    bool bdat_discard;            /* current BDAT chunk is read and dropped */
    bool bdat_last;               /* current BDAT chunk is the LAST */
    bool greet_timer;             /* greeting delay timeout in flight */
    bool discard_input;           /* drop the rest of the input after this command */
    const char *bdat_refusal;     /* reply after a discarded BDAT chunk */
    uint16_t in_head, in_tail;    /* queued receive buffers (engine_buf.next list) */
    uint16_t in_count;
    uint16_t line_len;            /* bytes in line[] of a command split across buffers */
    uint16_t out_len;             /* bytes in out[] */
    uint16_t send_len;            /* bytes of out[] in the send in flight */
    uint16_t errors;              /* protocol errors so far */
    uint64_t bdat_left;           /* bytes of the current chunk still to read */
    uint64_t bdat_size;           /* size the current chunk announced */
    uint64_t data_start_ms;       /* DATA/BDAT phase began */
    uint64_t window_bytes;        /* content bytes in the current rate window */
    struct engine_timer timer;    /* idle / rate / data deadlines */
    struct conn *wait_next;       /* worker wait list (buffers, write slots) */
    struct txn *txn;              /* current transaction or NULL */
    const struct conn_io *io;     /* transport: plaintext or TLS (net/smtp_tls.c) */
    struct conn_tls *tls;         /* TLS state once STARTTLS or implicit TLS began, else NULL */
    struct __kernel_timespec greet_ts; /* greeting delay */
    bool ip_counted;              /* holds a count in the per-IP accounting (core/iplimit.h):
                                     released once, when the session is freed */
    union conn_addr peer;         /* client address */
    char peer_text[CONN_PEER_BYTES]; /* printable client address */
    char helo[SMTP_DOMAIN_BYTES_MAX + 1]; /* HELO/EHLO argument */
    char line[SMTP_COMMAND_LINE_BYTES_MAX + 1]; /* command split across buffers */
    char out[CONN_OUT_BYTES];     /* replies waiting to be sent */

    /* ---- AUTH (RFC 4954): net/smtp_auth.c owns these ---- */
    bool authenticated;           /* AUTH succeeded; forgotten at STARTTLS (RFC 3207 4.2) */
    bool auth_pending;            /* a password check is out in the auth pool: the session
                                     is not freed before it comes back (a zombie if closed) */
    uint8_t auth_failures;        /* failed AUTH exchanges on this connection */
    struct smtp_auth *auth;       /* the exchange under way, NULL between exchanges */
    char *auth_line;              /* an AUTH line split across input buffers and longer than
                                     line[]: SMTP_AUTH_LINE_BYTES, only while it is read */
    char login[SASL_USER_BYTES_MAX + 1]; /* the authenticated login, "" before (policy) */
};

/* The transport under a session: how bytes come in and go out. Plaintext is the ring's
 * receive and send on the socket; TLS (net/smtp_tls.c) decrypts received buffers into
 * plaintext buffers and encrypts out[] before the send. The protocol code sees neither. */
struct conn_io {
    const char *name;             /* "plain", "tls" */
    /* received - len bytes arrived in receive buffer bid: make them session input */
    void (*received)(struct conn *c, uint16_t bid, int len);
    /* fill - the session took its queued input: offer more if the transport holds some;
     * false while it still holds received bytes back (receiving stays paused). NULL: none */
    bool (*fill)(struct conn *c);
    /* held_full - the transport itself holds CONN_IN_BUFS_MAX received buffers (TLS
     * ciphertext not decrypted yet): receiving stays paused until fill() drained them, as
     * it does while the session's own list is full. NULL: it holds none */
    bool (*held_full)(const struct conn *c);
    /* flush - send what is in out[] (c->send_len bytes of it go with this send) */
    void (*flush)(struct conn *c);
    /* sent - a send completed with res; returns the plaintext bytes of out[] now sent
     * (0: nothing yet, the transport sends more), or a negative errno to close */
    int (*sent)(struct conn *c, int res);
    /* timeout - the session's deadline passed: true when the transport dealt with it (a
     * handshake that stalled) and the session is closed. NULL: none */
    bool (*timeout)(struct conn *c);
    /* release - the session is being freed: drop the transport's state. NULL: none */
    void (*release)(struct conn *c);
};

extern const struct conn_io conn_io_plain;

/* session services, smtp_server.c */
void conn_reply(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void conn_flush(struct conn *c);
void conn_send(struct conn *c, const void *p, size_t len);
void conn_queue_input(struct conn *c, uint16_t bid, int len);
void conn_drop_input(struct conn *c);
void conn_recv_pause(struct conn *c);
void conn_wait_resources(struct conn *c);
void conn_close(struct conn *c);
void conn_reap(struct conn *c);
void conn_close_after_reply(struct conn *c);
void conn_set_state(struct conn *c, enum smtp_state to);
void conn_idle_deadline(struct conn *c);
void conn_data_deadline(struct conn *c);
struct txn *txn_new(struct conn *c);
void txn_end(struct conn *c);
void txn_free(struct txn *t);
void conn_rejected(struct conn *c, const char *reply, const char *reason);
void smtp_server_resume(struct conn *c);

/* TLS services, net/smtp_tls.c */

/* conn_is_tls - the session runs over a completed TLS handshake. */
bool conn_is_tls(const struct conn *c);

/* conn_tls_offered - STARTTLS may be offered: a starttls listener, a certificate loaded,
 * and the session is not yet TLS. */
bool conn_tls_offered(const struct conn *c);

/* conn_starttls - RFC 3207: reply 220, throw away any input pipelined after the command,
 * and start the handshake. The caller has reset the session (no transaction, no EHLO, no
 * login) and set state ST_INIT. Replies 454 4.7.0 and returns false if TLS is unavailable. */
bool conn_starttls(struct conn *c);

/* conn_tls_accept - implicit TLS listener: start the handshake before the greeting. */
void conn_tls_accept(struct conn *c);

/* the command table, smtp_commands.c */

/* smtp_command - handle one complete command line (CRLF removed); pending says whether more
 * input already followed it. */
void smtp_command(struct conn *c, const char *line, size_t len, bool pending);

/* smtp_end_of_content - the DATA terminator or the end of a BDAT chunk was read; iov[0..n)
 * is the content still to write, in buffer bid (n may be 0). Commits or refuses. iov must
 * have room for one more entry (BDAT LAST may add a final CRLF). */
void smtp_end_of_content(struct conn *c, uint16_t bid, struct iovec *iov, unsigned n);

/* smtp_protocol_error - count a peer fault; past max_errors, 421 and close. */
void smtp_protocol_error(struct conn *c, enum metrics_proto_reason reason);

/* smtp_greeting - the 220 banner. */
void smtp_greeting(struct conn *c);

extern const char *const smtp_state_name[ST_COUNT];

#endif
