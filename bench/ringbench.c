/*
 * ringbench.c - an SMTP load generator on io_uring: N concurrent sessions send messages to
 * one server as fast as it takes them (closed loop), or at a fixed rate on a fixed timeline
 * (open loop, --rate), and report the rate, the latency of the reply to the end of data, the
 * replies by code and the errors by kind.
 *
 *   ringbench --server HOST:PORT [--connections N] [--messages N | --duration S]
 *             [--size SPEC | --body FILE] [--recipients N] [--per-connection N]
 *             [--starttls | --tls] [--ca FILE] [--tls-name NAME] [--auth USER:PASS]
 *             [--from ADDR] [--to ADDR]
 *             [--rate N] [--json] [--threads N] [--timeout DUR] [--helo NAME]
 *             [--no-pipelining] [--quiet] [--seed N]
 *
 * THREADS AND THE RING
 *   One thread per CPU this process may run on (or --threads, never more than sessions),
 *   each pinned, each with its own ring (bench/loop.h) and its share of the sessions; the
 *   main thread only starts them, prints the progress line and the report. A session's
 *   socket is made with socket(2) and setsockopt(TCP_NODELAY) - two system calls per
 *   connection - and everything after is ring operations: connect, one multishot receive
 *   into the thread's provided buffers (replies are parsed as they come and the buffer goes
 *   straight back), sendmsg of pieces that point into text built once at start-up, close.
 *   Per message there is no allocation, no formatting and no system call of its own: the
 *   MAIL/RCPT/DATA group, the content and the terminator are the same bytes for every
 *   message of a size; one io_uring_enter per loop pass carries every session's work.
 *
 * A SESSION
 *   CONNECT, GREETING, EHLO (HELO if EHLO is refused), STARTTLS and the TLS handshake
 *   (--starttls; --tls starts TLS at connect and then waits for the greeting), AUTH PLAIN
 *   (--auth), READY, then per message TXN (MAIL, RCPT..., DATA: one write when the server
 *   offers PIPELINING, else one at a time), DOT (content and terminator, the reply to the
 *   end of data), QUIT. With PIPELINING, the QUIT of a connection's last message goes in the
 *   same write as its terminator (RFC 2920 allows content as the first and QUIT as the last
 *   command of a group), and after a failed transaction an RSET leads the next group.
 *   A connection carries --per-connection messages (0: as many as it can), then says QUIT;
 *   the session then connects again. TLS goes through the project's layer (tls/tls.h, a
 *   client context: no certificate check unless --ca, which checks the chain and the name of
 *   --tls-name or of the --server host).
 *
 * THE CLOSED LOOP (default)
 *   Each session takes the next message from a budget shared by all threads (--messages)
 *   or until --duration is over, and sends it as soon as it is ready. Latency: from the
 *   MAIL command's write to the reply to the end of data. A message is taken before its
 *   connection is made, so a connection that fails fails one message and every run ends.
 *
 * THE OPEN LOOP (--rate N messages/s, all threads together)
 *   Each thread's share of the rate is a fixed timeline: message k is due at
 *   start + k / rate_thread, whatever happened before. A due message goes to an idle,
 *   connected session; when none is idle it waits, and its latency - always measured from
 *   its due time, never from when it was sent - includes the wait (no coordinated
 *   omission: a stalled server shows as latency, not as a lower send rate). Sessions connect
 *   ahead of need and wait idle; a connection that fails before it is ready fails one due
 *   message, if any. With --duration, messages due after the end are not scheduled and
 *   those still waiting at the end are reported as messages_unsent (not reaching the rate).
 *
 * SIZES
 *   --size BYTES (K/M suffixes), MIN-MAX (uniform per message) or A,B,C (one of them per
 *   message, equal odds). The size is the message content exactly (what a server stores:
 *   headers, body, CRLFs; not the dot-stuffing or the terminator): From:, To: and Subject:
 *   headers, an empty line, 80-byte lines and one shorter (or longer, < 162 bytes) last
 *   line. The smallest size is the headers plus 2 bytes. --body FILE sends a file instead
 *   (LF or CRLF lines, sent with CRLF, dot-stuffed at start-up).
 *
 * WHAT IS COUNTED
 *   messages_ok: a 2xx to the end of data; messages_failed: every other end (a refused
 *   MAIL, no recipient taken, DATA refused, a failing end of data, a lost connection or a
 *   timeout while the message was under way). Replies by code: every reply to the end of
 *   data, and every 4xx/5xx reply to anything (greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT,
 *   DATA, RSET). Errors by kind: connect_refused, connect, reset, closed (the server closed
 *   mid-session), timeout (--timeout per wait, default 30 s), tls, protocol (a malformed or
 *   unexpected reply), auth (AUTH refused), aborted (a second SIGINT). A refused session -
 *   a 421 anywhere, a greeting other than 220, HELO refused - is counted by its reply code,
 *   not as an error; the connection is closed (and made again after RB_RETRY_MS when it
 *   never got ready). Latencies go to a log-linear
 *   histogram (bench/hist.h): p50, p90, p99, p99.9 and max, in milliseconds.
 *
 * SECURITY: every reply byte is from the peer and goes through the project's bounded reply
 *   parser (net/smtp_reply.c); a malformed reply ends the connection (error protocol), and
 *   plaintext behind the 220 to STARTTLS fails the start of TLS (CVE-2011-0411). Nothing a
 *   server sends is stored beyond the reply being read, or printed. The password given with
 *   --auth is encoded once at start-up and the command line copy wiped.
 *
 * STANDARDS: RFC 5321, RFC 2920 PIPELINING, RFC 3207 STARTTLS, RFC 4954 and RFC 4616
 *   AUTH PLAIN, RFC 8314 (implicit TLS).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/hist.h"
#include "bench/loop.h"
#include "core/alloc.h"
#include "net/sasl.h"
#include "net/smtp_reply.h"
#include "tls/tls.h"

#define RB_THREADS_MAX         256       /* worker threads */
#define RB_CONNECTIONS_MAX     100000    /* sessions, all threads together */
#define RB_RECIPIENTS_MAX      1000      /* --recipients */
#define RB_SIZE_BYTES_MAX      (64u << 20) /* a message's content */
#define RB_SIZES_MAX           64        /* entries of a --size list */
#define RB_ADDR_BYTES_MAX      250       /* --from, --to */
#define RB_HELO_BYTES_MAX      128       /* --helo */
#define RB_AUTH_BYTES_MAX      512       /* USER:PASS of --auth */
#define RB_BUF_COUNT           1024      /* receive buffers per thread (power of 2) */
#define RB_BUF_BYTES           4096      /* bytes of one receive buffer */
#define RB_TLS_PLAIN_BYTES     16384     /* decrypted reply bytes read at once */
#define RB_TLS_RECORD_BYTES    16384     /* plaintext encrypted at once (one TLS record) */
#define RB_PIECES_MAX          4         /* pieces of one send */
#define RB_LINE_BYTES          80        /* a content line, CRLF included */
#define RB_TAIL_BYTES          (2 * RB_LINE_BYTES + 2) /* the longest last line + spare */
#define RB_TICK_MS             100       /* timeouts, stop and duration checks */
#define RB_TIMEOUT_MS_DEFAULT  30000     /* --timeout: each wait for the server */
#define RB_RETRY_MS            100       /* pause after a connection failed before ready */
#define RB_QUIT_LINGER_MS      1000      /* after the 221, the server's close is awaited */
#define RB_MESSAGES_DEFAULT    1000      /* --messages without --duration */
#define RB_MESSAGES_MAX        1000000000000ull /* --messages (times RB_CONNECTIONS_MAX fits
                                                   64 bits: the open loop's shares) */
#define RB_CONNECTIONS_DEFAULT 10        /* --connections */
#define RB_PROGRESS_MS         1000      /* progress line interval */

enum rb_op {
    OP_NONE = 0,      /* nobody waits: cancels */
    OP_CONNECT,       /* slot = session */
    OP_RECV,          /* slot = session: the multishot receive */
    OP_SEND,          /* slot = session */
    OP_CLOSE,         /* slot = session: its socket is closed */
    OP_TICK,          /* the thread's RB_TICK_MS timer */
    OP_RATE,          /* the next due message of the open loop */
};

enum err_kind {
    E_CONNECT_REFUSED, E_CONNECT, E_RESET, E_CLOSED, E_TIMEOUT, E_TLS, E_PROTOCOL, E_AUTH,
    E_ABORTED, E_COUNT
};
static const char *const err_names[E_COUNT] = {
    "connect_refused", "connect", "reset", "closed", "timeout", "tls", "protocol", "auth",
    "aborted",
};

enum sstate {
    S_IDLE,           /* no connection */
    S_CONNECT,        /* connect in flight */
    S_GREETING,       /* waiting for the 220 */
    S_EHLO, S_HELO, S_STARTTLS,
    S_TLS,            /* handshake */
    S_AUTH,
    S_READY,          /* connected, no message */
    S_TXN,            /* MAIL, RCPT..., DATA (RSET first after a failure) */
    S_DOT,            /* content sent: the reply to the end of data */
    S_QUIT,           /* waiting for the 221 or the close */
    S_CLOSING,        /* cancels sent; the socket is closed once nothing is in flight */
};

enum tls_mode { TLSM_NONE, TLSM_STARTTLS, TLSM_IMPLICIT };

static struct {
    struct sockaddr_storage server; /* --server, resolved */
    socklen_t server_len;         /* bytes of server */
    char server_host[BENCH_HOST_BYTES_MAX]; /* host of --server */
    char tls_name[BENCH_HOST_BYTES_MAX]; /* SNI and the name the certificate must carry
                                     (--tls-name, default server_host; no SNI for an
                                     address literal) */
    char server_text[BENCH_ADDR_TEXT_BYTES]; /* for the report */
    uint64_t connections;         /* sessions, all threads */
    unsigned threads;             /* worker threads */
    uint64_t messages;            /* 0 = until --duration */
    uint64_t duration_ms;         /* 0 = until --messages */
    uint32_t size_min, size_max;  /* --size MIN-MAX (equal: fixed) */
    uint32_t sizes[RB_SIZES_MAX]; /* --size A,B,C */
    unsigned nsizes;              /* entries in sizes; 0 = use size_min..size_max */
    const char *body_file;        /* --body, or NULL */
    uint64_t recipients;          /* RCPT per message */
    uint64_t per_connection;      /* 0 = unlimited */
    enum tls_mode tls;            /* --starttls, --tls */
    const char *ca_file;          /* --ca, or NULL: no verification */
    bool auth;                    /* --auth given (text.auth holds it) */
    char from[RB_ADDR_BYTES_MAX + 1], to[RB_ADDR_BYTES_MAX + 1]; /* envelope */
    double rate;                  /* messages/s, 0 = closed loop */
    bool json;                    /* --json */
    bool quiet;                   /* --quiet */
    bool no_pipelining;           /* --no-pipelining */
    uint64_t timeout_ms;          /* each wait for the server */
    char helo[RB_HELO_BYTES_MAX]; /* EHLO name */
    uint64_t seed;                /* --seed, 0 = from the clock */
} opt;

/* Text built once at start-up; every session sends from it. */
static struct {
    char *group;                  /* "MAIL FROM:<..>\r\nRCPT TO:<..>\r\n...DATA\r\n" */
    size_t group_len;             /* bytes of group */
    size_t *line_off;             /* start of line j of group (j = 0 MAIL, 1..n RCPT, n+1
                                     DATA), and group_len at [n+2] */
    char ehlo[RB_HELO_BYTES_MAX + 16], helo[RB_HELO_BYTES_MAX + 16]; /* the commands */
    size_t ehlo_len, helo_len;    /* their bytes */
    char *auth;                   /* "AUTH PLAIN base64\r\n" */
    size_t auth_len;              /* bytes of auth */
    char *content;                /* headers + lines, or the --body file's wire bytes */
    size_t hdr_len;               /* bytes of the headers, the empty line included */
    size_t content_len;           /* bytes in content */
    size_t body_bytes;            /* --body: the content's stored size (without stuffing) */
    char tail[RB_TAIL_BYTES];     /* "xxx...x\r\n": the last line is a suffix of it */
} text;

static const char term_only[] = ".\r\n";
static const char term_quit[] = ".\r\nQUIT\r\n";
static const char rset_line[] = "RSET\r\n";
static const char quit_line[] = "QUIT\r\n";
static const char starttls_line[] = "STARTTLS\r\n";

struct stats {
    uint64_t ok;                  /* messages answered 2xx at the end of data */
    uint64_t failed;              /* every other end of a message */
    uint64_t unsent;              /* open loop: due, never sent by the end */
    uint64_t rcpts_ok;            /* recipients accepted in the messages ok */
    uint64_t bytes;               /* content bytes of the messages ok */
    uint64_t connections;         /* connections made (connect succeeded) */
    uint64_t codes[BENCH_CODES];  /* replies by code (see the header comment) */
    uint64_t errors[E_COUNT];     /* by enum err_kind */
    struct hist latency;          /* microseconds: the reply to the end of data */
    struct hist setup;            /* microseconds: connect to ready (TLS and AUTH included) */
};

struct sess {
    uint32_t slot, gen;           /* index in the thread, connection number */
    int fd;                       /* the socket, -1 without a connection */
    uint8_t st;                   /* enum sstate */
    uint8_t ops;                  /* ring operations in flight */
    bool recv_armed;              /* the multishot receive is armed */
    bool wire_armed;              /* a ring send is in flight */
    bool wire_tls;                /* ... of ciphertext (else of plaintext pieces) */
    bool send_busy;               /* pieces are being sent (maybe over several ring sends) */
    bool has_msg;                 /* a message is under way (taken, not yet ended) */
    bool quit_sent;               /* QUIT went with the terminator */
    bool need_rset;               /* the last transaction failed after MAIL: RSET first */
    bool doomed;                  /* DATA got 354 though nothing was accepted */
    bool mail_ok;                 /* MAIL accepted in this transaction */
    bool pipelining;              /* the server offers it (and --no-pipelining is off) */
    bool tls_started;             /* TLS is up or being set up on this connection */
    bool ready_once;              /* this connection got to READY */
    bool idle;                    /* in the thread's idle stack (open loop) */
    bool finished;                /* will not connect again */
    bool retry_wait;              /* waiting for retry_at_ms before connecting */
    bool close_retry;             /* after this close, wait before connecting again */
    uint32_t step;                /* the transaction reply expected: 0 RSET, 1 MAIL,
                                     2..n+1 RCPT, n+2 DATA */
    uint32_t rcpt_ok;             /* recipients accepted in this transaction */
    uint32_t msgs_on_conn;        /* transactions started on this connection */
    uint32_t msg_size;            /* content bytes of the message under way */
    uint64_t msg_t0_ns;           /* latency start: MAIL write (closed) or due time (open) */
    uint64_t conn_t0_ns;          /* connect issued */
    uint64_t deadline_ms;         /* the current wait times out then; 0 = none */
    uint64_t retry_at_ms;         /* retry_wait: connect again then */
    struct iovec iov[RB_PIECES_MAX]; /* the send under way: what is left of it */
    unsigned iov_n, iov_pos;      /* pieces, the first not yet all sent */
    struct iovec pend[RB_PIECES_MAX]; /* the next send, made while one was under way */
    unsigned pend_n;              /* pieces in pend, 0 = none */
    struct msghdr mh;             /* the plaintext sendmsg */
    struct tls_conn *tls;         /* the TLS session, or NULL */
    struct smtp_reply_parser rp;  /* the reply being read */
};

struct thread {
    unsigned id;                  /* 0 .. threads-1 */
    int cpu;                      /* CPU it is pinned to, -1 if none */
    pthread_t th;                 /* the thread */
    struct loop lp;               /* its ring and receive buffers */
    struct sess *sess;            /* its sessions, nsess of them */
    uint32_t nsess;               /* sessions of this thread */
    uint32_t unfinished;          /* sessions not finished */
    uint32_t gen_next;            /* generation of the next connection */
    uint64_t rng;                 /* size draws */
    uint64_t now_ms;              /* lp.now_ns in milliseconds */
    struct smtp_reply reply;      /* the reply just read (scratch) */
    char *plain;                  /* decrypted reply bytes (scratch) */
    char *gather;                 /* plaintext gathered into one record (scratch) */
    /* the open loop */
    uint64_t rate_budget;         /* messages this thread schedules; UINT64_MAX: until stop */
    uint64_t rate_next;           /* index of the next message to hand out */
    double interval_ns;           /* between two due times */
    uint32_t *idle;               /* idle connected sessions (a stack of slots) */
    uint32_t nidle;               /* entries in idle */
    bool rate_armed;              /* the OP_RATE timeout is in flight */
    struct __kernel_timespec rate_ts; /* its absolute due time */
    struct __kernel_timespec tick_ts; /* the tick's interval */
    bool tick_armed;              /* the OP_TICK timeout is in flight */
    bool stopping;                /* no new messages */
    bool aborting;                /* everything is closed now */
    uint64_t stop_ms;             /* when stopping began */
    int err;                      /* set-up failure, -errno */
    uint64_t done_ns;             /* when the thread finished */
    uint64_t ok_live, failed_live, conns_live; /* progress, read by the main thread */
    struct stats st;              /* this thread's results (read after the join) */
};

static struct thread *threads;
static struct tls_ctx *tls_ctx;
static uint64_t start_ns;
static _Atomic uint64_t claimed;  /* closed loop: messages taken by all threads */
static atomic_bool stop_flag, abort_flag;
static _Atomic unsigned threads_done;
static pthread_t main_thread;     /* told by SIGUSR1 when a thread is done */
static pthread_barrier_t start_barrier;

static void sess_close(struct thread *t, struct sess *s);
static void sess_next(struct thread *t, struct sess *s);
static void sess_start(struct thread *t, struct sess *s);
static void on_bytes(struct thread *t, struct sess *s, const char *buf, size_t len);
static void tls_send_more(struct thread *t, struct sess *s);

/* usage - the help text. */
static void usage(FILE *f)
{
    fprintf(f,
"usage: ringbench --server HOST:PORT [options]\n"
"An SMTP load generator on io_uring.\n"
"  --connections N        concurrent sessions (default %d)\n"
"  --threads N            threads, each with its own ring (default: one per CPU)\n"
"  --messages N           messages to send, all sessions together (default %d)\n"
"  --duration DUR         send for DUR (30s, 2m) instead of a number of messages\n"
"  --size SPEC            content bytes: N, MIN-MAX (uniform) or A,B,C (K/M suffixes;\n"
"                         default 1K)\n"
"  --body FILE            send this file as every message's content instead\n"
"  --recipients N         recipients per message, distinct (N.ADDR when N > 1; default 1)\n"
"  --per-connection N     messages per connection, then QUIT and reconnect (0 = no limit,\n"
"                         the default; 1 = a new connection per message)\n"
"  --starttls | --tls     STARTTLS after EHLO, or TLS from the connect (implicit)\n"
"  --ca FILE              verify the server's certificate against these CAs (default: no\n"
"                         verification)\n"
"  --tls-name NAME        the name sent as SNI and checked in the certificate (default:\n"
"                         the host of --server)\n"
"  --auth USER:PASS       AUTH PLAIN after EHLO (and after TLS)\n"
"  --from ADDR --to ADDR  envelope (default bench@ringbench.example, sink@ringsink.example)\n"
"  --rate N               open loop: N messages/s on a fixed timeline; latency from each\n"
"                         message's due time\n"
"  --json                 the last line printed is one JSON object with the results\n"
"  --timeout DUR          each wait for the server (default 30s)\n"
"  --helo NAME            EHLO name (default ringbench.invalid)\n"
"  --no-pipelining        one command at a time even when PIPELINING is offered\n"
"  --quiet                no progress line (shown once a second when stderr is a terminal)\n"
"  --seed N               seed of the size draws\n"
"SIGINT stops sending and waits for the messages under way; a second one aborts.\n",
            RB_CONNECTIONS_DEFAULT, RB_MESSAGES_DEFAULT);
}

/* ---- counting ---- */

/* count_code - one reply code. */
static void count_code(struct thread *t, unsigned code)
{
    if (code < BENCH_CODES)
        t->st.codes[code]++;
}

/* msg_end - the message under way ended: ok or failed. */
static void msg_end(struct thread *t, struct sess *s, bool ok)
{
    if (!s->has_msg)
        return;
    s->has_msg = false;
    if (ok) {
        uint64_t us = (t->lp.now_ns - s->msg_t0_ns) / 1000;
        t->st.ok++;
        t->st.rcpts_ok += s->rcpt_ok;
        t->st.bytes += s->msg_size;
        hist_record(&t->st.latency, t->lp.now_ns > s->msg_t0_ns ? us : 0);
        BENCH_ADD(t->ok_live, 1);
    } else {
        t->st.failed++;
        BENCH_ADD(t->failed_live, 1);
    }
}

/* sess_fail - an error of kind: count it, fail the message under way and close. In the
 * open loop, a connection that fails before it was ready fails a due message, so that a
 * dead server still makes the run end. */
static void sess_fail(struct thread *t, struct sess *s, enum err_kind kind)
{
    if (s->st == S_CLOSING || s->st == S_IDLE)
        return;
    t->st.errors[kind]++;
    if (!s->ready_once) {
        s->close_retry = true;
        if (opt.rate && !s->has_msg && t->rate_next < t->rate_budget &&
            t->lp.now_ns >= start_ns + (uint64_t)((double)t->rate_next * t->interval_ns)) {
            t->rate_next++;
            s->has_msg = true;
        }
    }
    msg_end(t, s, false);
    sess_close(t, s);
}

/* sess_refused - the server refused the session (a 421 anywhere, a greeting other than
 * 220, HELO refused): its code is counted, not an error; the message under way fails. A
 * connection refused before it was ready is made again only after RB_RETRY_MS. */
static void sess_refused(struct thread *t, struct sess *s, unsigned code)
{
    count_code(t, code);
    if (!s->ready_once)
        s->close_retry = true;
    msg_end(t, s, false);
    sess_close(t, s);
}

/* ---- taking messages ---- */

/* due_count - open loop: messages of this thread due by now. */
static uint64_t due_count(const struct thread *t)
{
    uint64_t n;

    if (t->lp.now_ns < start_ns)
        return 0;
    n = (uint64_t)((double)(t->lp.now_ns - start_ns) / t->interval_ns) + 1;
    return n < t->rate_budget ? n : t->rate_budget;
}

/* more_to_come - whether this thread will still hand out messages. */
static bool more_to_come(const struct thread *t)
{
    if (t->stopping)
        return false;
    if (opt.rate)
        return t->rate_next < t->rate_budget;
    return !opt.messages || atomic_load_explicit(&claimed, memory_order_relaxed) < opt.messages;
}

/* take_message - the next message for s, if there is one now. */
static bool take_message(struct thread *t, struct sess *s)
{
    if (t->stopping)
        return false;
    if (opt.rate) {
        if (t->rate_next >= due_count(t))
            return false;
        s->msg_t0_ns = start_ns + (uint64_t)((double)t->rate_next * t->interval_ns);
        t->rate_next++;
    } else {
        if (opt.duration_ms && t->lp.now_ns >= start_ns + opt.duration_ms * 1000000ull)
            return false;
        if (opt.messages &&
            atomic_fetch_add_explicit(&claimed, 1, memory_order_relaxed) >= opt.messages)
            return false;
    }
    s->has_msg = true;
    return true;
}

/* pick_size - the content size of the next message. */
static uint32_t pick_size(struct thread *t)
{
    if (opt.body_file)
        return (uint32_t)text.body_bytes;
    if (opt.nsizes)
        return opt.sizes[bench_rand(&t->rng) % opt.nsizes];
    if (opt.size_min == opt.size_max)
        return opt.size_min;
    return opt.size_min + (uint32_t)(bench_rand(&t->rng) % (opt.size_max - opt.size_min + 1));
}

/* ---- sending ---- */

/* plain_send - a ring sendmsg of what is left of s->iov. */
static void plain_send(struct thread *t, struct sess *s)
{
    struct io_uring_sqe *sqe = loop_sqe(&t->lp);

    s->mh.msg_iov = s->iov + s->iov_pos;
    s->mh.msg_iovlen = s->iov_n - s->iov_pos;
    s->wire_armed = true;
    s->wire_tls = false;
    s->ops++;
    io_uring_prep_sendmsg(sqe, s->fd, &s->mh, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, loop_ud(OP_SEND, s->slot, s->gen));
}

/* iov_advance - n bytes of s->iov went. */
static void iov_advance(struct sess *s, size_t n)
{
    while (s->iov_pos < s->iov_n && n >= s->iov[s->iov_pos].iov_len)
        n -= s->iov[s->iov_pos++].iov_len;
    if (s->iov_pos < s->iov_n) {
        s->iov[s->iov_pos].iov_base = (char *)s->iov[s->iov_pos].iov_base + n;
        s->iov[s->iov_pos].iov_len -= n;
    }
}

/* send_pieces - send n pieces (pointing into text built at start-up). While a send is under
 * way the pieces wait (one send can wait: every later one needs a reply to this one). */
static void send_pieces(struct thread *t, struct sess *s, const struct iovec *v, unsigned n)
{
    if (s->st == S_CLOSING)
        return;
    if (s->send_busy) {
        if (s->pend_n) {  /* replies faster than our commands: the server talks out of turn */
            sess_fail(t, s, E_PROTOCOL);
            return;
        }
        memcpy(s->pend, v, n * sizeof(*v));
        s->pend_n = n;
        return;
    }
    memcpy(s->iov, v, n * sizeof(*v));
    s->iov_n = n;
    s->iov_pos = 0;
    s->send_busy = true;
    s->deadline_ms = t->now_ms + opt.timeout_ms;
    if (s->tls)
        tls_send_more(t, s);
    else
        plain_send(t, s);
}

/* send1 - send one piece. */
static void send1(struct thread *t, struct sess *s, const char *p, size_t n)
{
    struct iovec v = { (void *)p, n };

    send_pieces(t, s, &v, 1);
}

/* send_done - every byte of the pieces went: start the send that waited, if any. */
static void send_done(struct thread *t, struct sess *s)
{
    s->send_busy = false;
    if (s->pend_n) {
        struct iovec v[RB_PIECES_MAX];
        unsigned n = s->pend_n;
        memcpy(v, s->pend, n * sizeof(*v));
        s->pend_n = 0;
        send_pieces(t, s, v, n);
    }
}

/* ---- TLS transport ---- */

/* tls_flush - send the ciphertext waiting, if no ring send is in flight. */
static void tls_flush(struct thread *t, struct sess *s)
{
    struct io_uring_sqe *sqe;
    const void *out;
    size_t len;

    if (s->wire_armed || s->st == S_CLOSING)
        return;
    out = tls_out(s->tls, &len);
    if (!len)
        return;
    s->wire_armed = true;
    s->wire_tls = true;
    s->ops++;
    sqe = loop_sqe(&t->lp);
    io_uring_prep_send(sqe, s->fd, out, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, loop_ud(OP_SEND, s->slot, s->gen));
}

/* tls_send_more - encrypt what the session's output takes of the pieces, a record of up to
 * RB_TLS_RECORD_BYTES at a time (small pieces gathered into one), and send the ciphertext;
 * when all of it went, the send is done. Called again by each ring send's completion. */
static void tls_send_more(struct thread *t, struct sess *s)
{
    while (s->send_busy && s->iov_pos < s->iov_n) {
        size_t n = 0;
        const char *src;
        ssize_t r;

        if (s->iov[s->iov_pos].iov_len >= RB_TLS_RECORD_BYTES) {
            src = s->iov[s->iov_pos].iov_base;  /* a full record where it lies */
            n = RB_TLS_RECORD_BYTES;
        } else {
            for (unsigned i = s->iov_pos; i < s->iov_n && n < RB_TLS_RECORD_BYTES; i++) {
                size_t k = s->iov[i].iov_len;
                if (k > RB_TLS_RECORD_BYTES - n)
                    k = RB_TLS_RECORD_BYTES - n;
                memcpy(t->gather + n, s->iov[i].iov_base, k);
                n += k;
            }
            src = t->gather;
        }
        r = tls_write(s->tls, src, n);
        if (r == TLS_WANT)
            break;  /* the output is full: the next completion goes on */
        if (r < 0) {
            sess_fail(t, s, E_TLS);
            return;
        }
        iov_advance(s, n);
    }
    tls_flush(t, s);
    if (!s->wire_armed && s->send_busy && s->iov_pos == s->iov_n && s->st != S_CLOSING)
        send_done(t, s);
}

/* tls_begin - start TLS on the connection (after the 220 to STARTTLS, or at connect). */
static void tls_begin(struct thread *t, struct sess *s)
{
    s->tls = tls_conn_new(tls_ctx, opt.tls_name);
    if (!s->tls) {
        sess_fail(t, s, E_TLS);
        return;
    }
    s->tls_started = true;
    s->st = S_TLS;
    s->deadline_ms = t->now_ms + opt.timeout_ms;
    if (tls_handshake(s->tls) == TLS_ERROR) {
        sess_fail(t, s, E_TLS);
        return;
    }
    tls_flush(t, s);  /* the ClientHello */
}

/* tls_up - the handshake is done: EHLO again (STARTTLS), or wait for the greeting. */
static void tls_up(struct thread *t, struct sess *s)
{
    /* Every connection costs the server a full handshake: ringbench never offers a session
     * (no ticket, no id is kept), so a resumed one would mean the server skipped the work a
     * TLS scenario measures. Counted as a TLS error, which fails the run. */
    if (tls_resumed(s->tls)) {
        sess_fail(t, s, E_TLS);
        return;
    }
    smtp_reply_init(&s->rp);
    s->deadline_ms = t->now_ms + opt.timeout_ms;
    if (opt.tls == TLSM_IMPLICIT) {
        s->st = S_GREETING;
        return;
    }
    s->st = S_EHLO;
    send1(t, s, text.ehlo, text.ehlo_len);
}

/* tls_pump - ciphertext was fed: advance the handshake, then read replies out of it. */
static void tls_pump(struct thread *t, struct sess *s)
{
    uint32_t gen = s->gen;

    while (s->st != S_CLOSING && s->gen == gen) {
        ssize_t n;

        if (!tls_handshake_done(s->tls)) {
            enum tls_result r = tls_handshake(s->tls);
            if (r == TLS_OK) {
                tls_up(t, s);
                continue;
            }
            if (r == TLS_WANT && !tls_fed_left(s->tls)) {
                tls_flush(t, s);
                return;
            }
            sess_fail(t, s, E_TLS);
            return;
        }
        n = tls_read(s->tls, t->plain, RB_TLS_PLAIN_BYTES);
        if (n > 0) {
            on_bytes(t, s, t->plain, (size_t)n);
            continue;
        }
        if (n == TLS_WANT && !tls_fed_left(s->tls)) {
            tls_flush(t, s);  /* a post-handshake message may have made output */
            return;
        }
        if (n == TLS_CLOSED) {
            if (s->st == S_QUIT || (s->st == S_READY && !s->has_msg))
                sess_close(t, s);
            else
                sess_fail(t, s, E_CLOSED);
        } else {
            sess_fail(t, s, E_TLS);
        }
        return;
    }
}

/* ---- the SMTP dialogue ---- */

/* start_txn - send the next message's MAIL, RCPT... and DATA. */
static void start_txn(struct thread *t, struct sess *s)
{
    s->msgs_on_conn++;
    s->msg_size = pick_size(t);
    s->mail_ok = false;
    s->doomed = false;
    s->rcpt_ok = 0;
    s->quit_sent = false;
    s->st = S_TXN;
    if (!opt.rate)
        s->msg_t0_ns = t->lp.now_ns;
    s->step = s->need_rset ? 0 : 1;
    s->need_rset = false;
    if (s->pipelining) {
        struct iovec v[2];
        unsigned n = 0;
        if (s->step == 0)
            v[n++] = (struct iovec){ (void *)rset_line, sizeof(rset_line) - 1 };
        v[n++] = (struct iovec){ text.group, text.group_len };
        send_pieces(t, s, v, n);
    } else if (s->step == 0) {
        send1(t, s, rset_line, sizeof(rset_line) - 1);
    } else {
        send1(t, s, text.group, text.line_off[1]);
    }
}

/* send_line - without pipelining: the command of transaction step (1 MAIL, ...). */
static void send_line(struct thread *t, struct sess *s, uint32_t step)
{
    send1(t, s, text.group + text.line_off[step - 1],
          text.line_off[step] - text.line_off[step - 1]);
}

/* last_on_conn - whether the message under way is the connection's last. */
static bool last_on_conn(const struct thread *t, const struct sess *s)
{
    return (opt.per_connection && s->msgs_on_conn >= opt.per_connection) || !more_to_come(t);
}

/* send_body - the 354 came: content and terminator (with QUIT when this is the last message
 * and the server pipelines), or the terminator alone when nothing was accepted. */
static void send_body(struct thread *t, struct sess *s)
{
    struct iovec v[RB_PIECES_MAX];
    unsigned n = 0;
    bool quit = s->pipelining && last_on_conn(t, s);

    s->st = S_DOT;
    if (!s->doomed) {
        if (opt.body_file) {
            v[n++] = (struct iovec){ text.content, text.content_len };
        } else {
            size_t b = s->msg_size - text.hdr_len;
            size_t k = b / RB_LINE_BYTES, rem = b % RB_LINE_BYTES;
            if (rem == 1) {  /* no line is 1 byte: the last one takes a full line more */
                k--;
                rem += RB_LINE_BYTES;
            }
            v[n++] = (struct iovec){ text.content, text.hdr_len + k * RB_LINE_BYTES };
            if (rem)
                v[n++] = (struct iovec){ text.tail + sizeof(text.tail) - rem, rem };
        }
    }
    if (quit)
        v[n++] = (struct iovec){ (void *)term_quit, sizeof(term_quit) - 1 };
    else
        v[n++] = (struct iovec){ (void *)term_only, sizeof(term_only) - 1 };
    s->quit_sent = quit;
    send_pieces(t, s, v, n);
}

/* txn_failed - the transaction ended without a message sent; RSET first next time when
 * the server holds a MAIL. */
static void txn_failed(struct thread *t, struct sess *s)
{
    s->need_rset = s->mail_ok;
    msg_end(t, s, false);
    sess_next(t, s);
}

/* txn_reply - a reply in S_TXN, at s->step. */
static void txn_reply(struct thread *t, struct sess *s, unsigned code)
{
    uint32_t n = (uint32_t)opt.recipients;
    uint32_t step = s->step++;

    if (code >= 400)
        count_code(t, code);
    if (step == 0) {  /* RSET */
        if (!s->pipelining)
            send_line(t, s, 1);
        return;
    }
    if (step == 1) {  /* MAIL */
        s->mail_ok = code < 400;
        if (!s->pipelining) {
            if (s->mail_ok)
                send_line(t, s, 2);
            else
                txn_failed(t, s);
        }
        return;
    }
    if (step <= n + 1) {  /* RCPT */
        if (code < 400)
            s->rcpt_ok++;
        if (!s->pipelining) {
            if (step < n + 1)
                send_line(t, s, step + 1);
            else if (s->rcpt_ok)
                send_line(t, s, n + 2);
            else
                txn_failed(t, s);
        }
        return;
    }
    /* DATA */
    if (code == 354) {
        s->doomed = !s->mail_ok || !s->rcpt_ok;
        send_body(t, s);
        return;
    }
    if (code < 400)
        count_code(t, code);  /* a 2xx to DATA is a protocol error of the server's */
    txn_failed(t, s);
}

/* dot_reply - the reply to the end of data. */
static void dot_reply(struct thread *t, struct sess *s, unsigned code)
{
    count_code(t, code);
    msg_end(t, s, code >= 200 && code < 300 && !s->doomed);
    if (s->quit_sent) {
        s->st = S_QUIT;
        s->deadline_ms = t->now_ms + opt.timeout_ms;
        return;
    }
    sess_next(t, s);
}

/* ready - greeted, EHLO'd, TLS and AUTH done: messages may go. */
static void ready(struct thread *t, struct sess *s)
{
    s->ready_once = true;
    hist_record(&t->st.setup, (t->lp.now_ns - s->conn_t0_ns) / 1000);
    sess_next(t, s);
}

/* after_ehlo - EHLO or HELO was accepted: STARTTLS, AUTH, or ready. */
static void after_ehlo(struct thread *t, struct sess *s)
{
    if (opt.tls == TLSM_STARTTLS && !s->tls_started) {
        s->st = S_STARTTLS;
        send1(t, s, starttls_line, sizeof(starttls_line) - 1);
    } else if (opt.auth) {
        s->st = S_AUTH;
        send1(t, s, text.auth, text.auth_len);
    } else {
        ready(t, s);
    }
}

/* on_reply - one complete, well-formed reply. */
static void on_reply(struct thread *t, struct sess *s, const struct smtp_reply *r)
{
    unsigned code = r->code;

    if (code == 421 && s->st != S_QUIT) {  /* the server is closing (any state, the end of
                                              data included: the message failed) */
        sess_refused(t, s, code);
        return;
    }
    switch (s->st) {
    case S_GREETING:
        if (code != 220) {
            sess_refused(t, s, code);
            return;
        }
        s->st = S_EHLO;
        send1(t, s, text.ehlo, text.ehlo_len);
        break;
    case S_EHLO:
        if (code / 100 != 2) {
            count_code(t, code);
            s->st = S_HELO;
            send1(t, s, text.helo, text.helo_len);
            return;
        }
        s->pipelining = (r->ehlo.ext & SMTP_EXT_PIPELINING) && !opt.no_pipelining;
        after_ehlo(t, s);
        break;
    case S_HELO:
        if (code / 100 != 2) {
            sess_refused(t, s, code);
            return;
        }
        s->pipelining = false;
        after_ehlo(t, s);
        break;
    case S_STARTTLS:
        if (code != 220) {
            count_code(t, code);
            sess_fail(t, s, E_TLS);
            return;
        }
        tls_begin(t, s);
        break;
    case S_AUTH:
        if (code / 100 != 2) {
            count_code(t, code);
            sess_fail(t, s, E_AUTH);
            return;
        }
        ready(t, s);
        break;
    case S_TXN:
        txn_reply(t, s, code);
        break;
    case S_DOT:
        dot_reply(t, s, code);
        break;
    case S_QUIT:  /* the server closes next: its end of the stream ends the receive,
                     so the socket closes without a cancel (or at the deadline) */
        if (code >= 400)
            count_code(t, code);
        s->deadline_ms = t->now_ms + RB_QUIT_LINGER_MS;
        break;
    default:  /* a reply nobody asked for */
        count_code(t, code);
        sess_fail(t, s, E_PROTOCOL);
        break;
    }
}

/* on_bytes - reply bytes (plaintext, or decrypted): every complete reply in them. */
static void on_bytes(struct thread *t, struct sess *s, const char *buf, size_t len)
{
    uint32_t gen = s->gen;
    size_t off = 0;

    while (off < len && s->st != S_CLOSING && s->gen == gen) {
        bool complete;
        uint8_t before = s->st;

        off += smtp_reply_feed(&s->rp, buf + off, len - off, &t->reply, &complete);
        if (!complete)
            break;
        if (t->reply.err != SMTP_REPLY_OK) {
            sess_fail(t, s, E_PROTOCOL);
            return;
        }
        on_reply(t, s, &t->reply);
        if (before == S_STARTTLS && s->st == S_TLS && off < len) {
            sess_fail(t, s, E_TLS);  /* plaintext behind the 220: injected ahead of TLS */
            return;
        }
    }
}

/* sess_next - connected and between messages: the next message, idle, or QUIT. */
static void sess_next(struct thread *t, struct sess *s)
{
    if (s->st == S_CLOSING)
        return;
    if (opt.per_connection && s->msgs_on_conn >= opt.per_connection) {
        s->st = S_QUIT;
        send1(t, s, quit_line, sizeof(quit_line) - 1);
        return;
    }
    if (s->has_msg || take_message(t, s)) {
        start_txn(t, s);
        return;
    }
    if (opt.rate && more_to_come(t)) {  /* wait for the next due message */
        s->st = S_READY;
        s->deadline_ms = 0;
        s->idle = true;
        t->idle[t->nidle++] = s->slot;
        return;
    }
    s->st = S_QUIT;
    send1(t, s, quit_line, sizeof(quit_line) - 1);
}

/* ---- connections ---- */

/* sess_connect - a new connection for s. */
static void sess_connect(struct thread *t, struct sess *s)
{
    struct io_uring_sqe *sqe;
    int one = 1;
    int fd = socket(opt.server.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        fprintf(stderr, "ringbench: socket: %s\n", strerror(errno));
        t->st.errors[E_CONNECT]++;
        msg_end(t, s, false);
        s->retry_wait = true;
        s->retry_at_ms = t->now_ms + RB_RETRY_MS;
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->fd = fd;
    s->gen = ++t->gen_next;
    s->st = S_CONNECT;
    s->ops = 0;
    s->recv_armed = s->wire_armed = s->send_busy = false;
    s->pipelining = s->tls_started = s->ready_once = s->need_rset = false;
    s->close_retry = false;
    s->pend_n = 0;
    s->msgs_on_conn = 0;
    s->conn_t0_ns = t->lp.now_ns;
    s->deadline_ms = t->now_ms + opt.timeout_ms;
    smtp_reply_init(&s->rp);
    s->ops++;
    sqe = loop_sqe(&t->lp);
    io_uring_prep_connect(sqe, fd, (struct sockaddr *)&opt.server, opt.server_len);
    io_uring_sqe_set_data64(sqe, loop_ud(OP_CONNECT, s->slot, s->gen));
}

/* sess_start - s has no connection: make one if there is work for it, else it is done. */
static void sess_start(struct thread *t, struct sess *s)
{
    if (s->finished)
        return;
    s->retry_wait = false;
    if (!t->stopping && (s->has_msg || (opt.rate ? more_to_come(t) : take_message(t, s)))) {
        sess_connect(t, s);
        return;
    }
    msg_end(t, s, false);
    s->finished = true;
    t->unfinished--;
}

/* arm_recv - the connection's multishot receive into the provided buffers. */
static void arm_recv(struct thread *t, struct sess *s)
{
    s->recv_armed = true;
    s->ops++;
    loop_recv(&t->lp, s->fd, true, loop_ud(OP_RECV, s->slot, s->gen));
}

/* idle_remove - take s out of the idle stack. */
static void idle_remove(struct thread *t, struct sess *s)
{
    if (!s->idle)
        return;
    s->idle = false;
    for (uint32_t i = 0; i < t->nidle; i++)
        if (t->idle[i] == s->slot) {
            t->idle[i] = t->idle[--t->nidle];
            break;
        }
}

/* sess_close - end the connection: cancel what is in flight on the socket, close it once
 * nothing is (then connect again, or finish). */
static void sess_close(struct thread *t, struct sess *s)
{
    if (s->st == S_IDLE)
        return;
    if (s->st != S_CLOSING) {
        msg_end(t, s, false);  /* callers count why; a message never outlives its connection */
        idle_remove(t, s);
        s->st = S_CLOSING;
        s->deadline_ms = 0;
        if (s->ops)
            loop_cancel_fd(&t->lp, s->fd);
    }
    if (s->ops)
        return;
    s->ops++;
    loop_close(&t->lp, s->fd, loop_ud(OP_CLOSE, s->slot, s->gen));
}

/* closed - the socket is closed: the session connects again, later or now, or finishes. */
static void closed(struct thread *t, struct sess *s)
{
    tls_conn_free(s->tls);
    s->tls = NULL;
    s->fd = -1;
    s->st = S_IDLE;
    if (s->close_retry && !t->stopping) {
        s->retry_wait = true;
        s->retry_at_ms = t->now_ms + RB_RETRY_MS;
        return;
    }
    sess_start(t, s);
}

/* ---- completions ---- */

/* connect_done - the connect completed. */
static void connect_done(struct thread *t, struct sess *s, int res)
{
    if (s->st == S_CLOSING) {
        sess_close(t, s);
        return;
    }
    if (res < 0) {
        sess_fail(t, s, res == -ECONNREFUSED ? E_CONNECT_REFUSED
                        : res == -ETIMEDOUT ? E_TIMEOUT : E_CONNECT);
        return;
    }
    t->st.connections++;
    BENCH_ADD(t->conns_live, 1);
    arm_recv(t, s);
    if (opt.tls == TLSM_IMPLICIT) {
        tls_begin(t, s);
        return;
    }
    s->st = S_GREETING;
}

/* recv_done - a completion of the multishot receive. */
static void recv_done(struct thread *t, struct sess *s, struct io_uring_cqe *cqe)
{
    int res = cqe->res;

    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        s->recv_armed = false;
        s->ops--;
    }
    if (res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (s->st != S_CLOSING) {
            if (s->tls) {
                tls_feed(s->tls, loop_buf(&t->lp, bid), (size_t)res);
                tls_pump(t, s);
                if (s->tls && tls_fed_left(s->tls))  /* only when the session ended */
                    tls_feed(s->tls, NULL, 0);
            } else {
                on_bytes(t, s, loop_buf(&t->lp, bid), (size_t)res);
            }
        }
        loop_buf_release(&t->lp, bid);
    } else if (s->st != S_CLOSING && res != -ENOBUFS) {
        if (res == 0) {  /* the server closed */
            if (s->st == S_QUIT || (s->st == S_READY && !s->has_msg))
                sess_close(t, s);
            else
                sess_fail(t, s, E_CLOSED);
        } else {
            sess_fail(t, s, E_RESET);
        }
    }
    if (s->st == S_CLOSING) {
        sess_close(t, s);
        return;
    }
    if (!s->recv_armed && s->st != S_IDLE)  /* out of buffers (ENOBUFS): they come back at
                                              the end of this pass, before the next submit */
        arm_recv(t, s);
}

/* wire_done - a ring send completed. */
static void wire_done(struct thread *t, struct sess *s, int res)
{
    s->wire_armed = false;
    s->ops--;
    if (s->st == S_CLOSING) {
        sess_close(t, s);
        return;
    }
    if (res < 0) {
        sess_fail(t, s, E_RESET);
        return;
    }
    if (s->wire_tls) {
        tls_out_done(s->tls, (size_t)res);
        tls_send_more(t, s);
        return;
    }
    iov_advance(s, (size_t)res);
    if (s->iov_pos < s->iov_n) {
        plain_send(t, s);
        return;
    }
    send_done(t, s);
    if (s->tls)  /* the STARTTLS line was still going when TLS began: the ClientHello now */
        tls_send_more(t, s);
}

/* complete - one completion of a session. */
static void complete(struct thread *t, unsigned op, uint32_t slot, uint32_t gen,
                     struct io_uring_cqe *cqe)
{
    struct sess *s = slot < t->nsess ? &t->sess[slot] : NULL;

    if (!s || s->gen != gen) {  /* cannot happen: a session is reused only at ops 0 */
        if (op == OP_RECV)
            loop_cqe_buf_release(&t->lp, cqe);
        return;
    }
    switch (op) {
    case OP_CONNECT:
        s->ops--;
        connect_done(t, s, cqe->res);
        break;
    case OP_RECV:
        recv_done(t, s, cqe);
        break;
    case OP_SEND:
        wire_done(t, s, cqe->res);
        break;
    case OP_CLOSE:
        s->ops--;
        closed(t, s);
        break;
    default:
        break;
    }
}

/* ---- the thread ---- */

/* arm_tick - the RB_TICK_MS timer. */
static void arm_tick(struct thread *t)
{
    loop_timeout(&t->lp, &t->tick_ts, RB_TICK_MS, loop_ud(OP_TICK, 0, 0));
    t->tick_armed = true;
}

/* begin_stop - no new messages; what waits in the open loop is unsent. */
static void begin_stop(struct thread *t)
{
    if (t->stopping)
        return;
    t->stopping = true;
    t->stop_ms = t->now_ms;
    if (opt.rate) {
        uint64_t due = due_count(t);
        if (due > t->rate_next)
            t->st.unsent += due - t->rate_next;
        t->rate_budget = t->rate_next;
    }
}

/* abort_all - close every connection now; messages under way fail as aborted. */
static void abort_all(struct thread *t)
{
    t->aborting = true;
    begin_stop(t);
    for (uint32_t i = 0; i < t->nsess; i++) {
        struct sess *s = &t->sess[i];
        if (s->st != S_IDLE && s->st != S_CLOSING) {
            if (s->has_msg)
                t->st.errors[E_ABORTED]++;
            sess_close(t, s);
        }
        if (s->retry_wait)
            sess_start(t, s);
    }
}

/* tick - timeouts, retries, the end of the duration, the stop and abort flags. */
static void tick(struct thread *t)
{
    if (atomic_load(&abort_flag) && !t->aborting)
        abort_all(t);
    if (!t->stopping && (atomic_load(&stop_flag) ||
        (opt.duration_ms && t->lp.now_ns >= start_ns + opt.duration_ms * 1000000ull)))
        begin_stop(t);
    if (t->stopping && !t->aborting && t->now_ms >= t->stop_ms + opt.timeout_ms)
        abort_all(t);  /* the grace for messages under way is over */
    for (uint32_t i = 0; i < t->nsess; i++) {
        struct sess *s = &t->sess[i];
        if (s->deadline_ms && t->now_ms >= s->deadline_ms && s->st != S_CLOSING &&
            s->st != S_IDLE) {
            if (s->st == S_QUIT)
                sess_close(t, s);
            else
                sess_fail(t, s, E_TIMEOUT);
        }
        if (s->retry_wait && (t->now_ms >= s->retry_at_ms || t->stopping))
            sess_start(t, s);
    }
}

/* rate_run - open loop, after each pass: due messages to idle sessions; idle sessions quit
 * when nothing more will come; the timer for the next due time. */
static void rate_run(struct thread *t)
{
    struct io_uring_sqe *sqe;
    uint64_t next_ns;

    while (t->nidle && t->rate_next < due_count(t) && !t->stopping) {
        struct sess *s = &t->sess[t->idle[--t->nidle]];
        s->idle = false;
        sess_next(t, s);
    }
    if (!more_to_come(t)) {
        while (t->nidle) {
            struct sess *s = &t->sess[t->idle[--t->nidle]];
            s->idle = false;
            s->st = S_QUIT;
            send1(t, s, quit_line, sizeof(quit_line) - 1);
        }
        return;
    }
    if (!t->nidle || t->rate_armed)
        return;
    next_ns = start_ns + (uint64_t)((double)t->rate_next * t->interval_ns);
    t->rate_ts.tv_sec = (long long)(next_ns / 1000000000ull);
    t->rate_ts.tv_nsec = (long long)(next_ns % 1000000000ull);
    sqe = loop_sqe(&t->lp);
    io_uring_prep_timeout(sqe, &t->rate_ts, 0, IORING_TIMEOUT_ABS);
    io_uring_sqe_set_data64(sqe, loop_ud(OP_RATE, 0, 0));
    t->rate_armed = true;
}

/* dispatch - one completion to its handler (arg: the thread). */
static void dispatch(void *arg, struct io_uring_cqe *cqe)
{
    struct thread *t = arg;
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    unsigned op = ud_op(ud);

    switch (op) {
    case OP_NONE:
        break;
    case OP_TICK:
        t->tick_armed = false;
        tick(t);
        if (t->unfinished)
            arm_tick(t);
        break;
    case OP_RATE:
        t->rate_armed = false;
        break;
    default:
        complete(t, op, ud_slot(ud), ud_gen(ud), cqe);
        break;
    }
}

/* thread_main - set up, start every session, run until each has finished. */
static void *thread_main(void *arg)
{
    struct thread *t = arg;

    bench_pin(t->cpu);
    t->err = loop_init(&t->lp, RB_BUF_COUNT, RB_BUF_BYTES);
    pthread_barrier_wait(&start_barrier);  /* 1: set up */
    pthread_barrier_wait(&start_barrier);  /* 2: start_ns is set */
    if (t->err)
        goto out;
    t->lp.now_ns = loop_clock_ns();
    t->now_ms = t->lp.now_ns / 1000000;
    arm_tick(t);
    for (uint32_t i = 0; i < t->nsess; i++)
        sess_start(t, &t->sess[i]);
    while (t->unfinished || t->tick_armed || t->rate_armed) {
        if (!t->unfinished) {  /* only the timers are left: cancel them */
            loop_cancel(&t->lp, loop_ud(OP_TICK, 0, 0));
            loop_cancel(&t->lp, loop_ud(OP_RATE, 0, 0));
        }
        loop_wait(&t->lp);
        t->now_ms = t->lp.now_ns / 1000000;
        loop_dispatch(&t->lp, dispatch, t);
        if (opt.rate && t->unfinished)
            rate_run(t);
        loop_buf_flush(&t->lp);
    }
    t->done_ns = loop_clock_ns();
out:
    tls_thread_done();
    loop_fini(&t->lp);
    atomic_fetch_add(&threads_done, 1);
    pthread_kill(main_thread, SIGUSR1);  /* the main thread waits in sigtimedwait */
    return NULL;
}

/* ---- set-up ---- */

/* parse_size_spec - --size N, MIN-MAX or A,B,C. */
static void parse_size_spec(const char *arg)
{
    char buf[1024], *dash, *save = NULL, *tok;
    uint64_t a, b;

    snprintf(buf, sizeof(buf), "%s", arg);
    opt.nsizes = 0;
    if (strchr(buf, ',')) {
        for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            if (opt.nsizes >= RB_SIZES_MAX)
                bench_die("--size: at most %d sizes in a list", RB_SIZES_MAX);
            if (!bench_parse_bytes(tok, &a) || a > RB_SIZE_BYTES_MAX)
                bench_die("--size %s: bad size %s", arg, tok);
            opt.sizes[opt.nsizes++] = (uint32_t)a;
        }
        opt.size_min = UINT32_MAX;
        opt.size_max = 0;
        for (unsigned i = 0; i < opt.nsizes; i++) {
            if (opt.sizes[i] < opt.size_min)
                opt.size_min = opt.sizes[i];
            if (opt.sizes[i] > opt.size_max)
                opt.size_max = opt.sizes[i];
        }
        return;
    }
    dash = strchr(buf, '-');
    if (dash)
        *dash = '\0';
    if (!bench_parse_bytes(buf, &a) || a > RB_SIZE_BYTES_MAX)
        bench_die("--size %s: want BYTES, MIN-MAX or A,B,C (at most 64M)", arg);
    b = a;
    if (dash && (!bench_parse_bytes(dash + 1, &b) || b > RB_SIZE_BYTES_MAX || b < a))
        bench_die("--size %s: want MIN-MAX with MIN <= MAX <= 64M", arg);
    opt.size_min = (uint32_t)a;
    opt.size_max = (uint32_t)b;
}

/* check_addr - an envelope address we are willing to put on the wire. */
static void check_addr(const char *what, const char *a)
{
    if (!*a || strlen(a) > RB_ADDR_BYTES_MAX - 8 || strpbrk(a, "<> \r\n\t"))
        bench_die("%s %s: an address without <>, spaces or line ends, below %d bytes", what, a,
                  RB_ADDR_BYTES_MAX - 8);
}

/* parse_args - the command line into opt. */
static void parse_args(int argc, char **argv)
{
    char err[512];
    uint64_t v;
    bool have_server = false;

    opt.connections = RB_CONNECTIONS_DEFAULT;
    opt.recipients = 1;
    opt.timeout_ms = RB_TIMEOUT_MS_DEFAULT;
    opt.size_min = opt.size_max = 1024;
    snprintf(opt.from, sizeof(opt.from), "bench@ringbench.example");
    snprintf(opt.to, sizeof(opt.to), "sink@ringsink.example");
    snprintf(opt.helo, sizeof(opt.helo), "ringbench.invalid");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = true;

        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--json")) {
            opt.json = true;
            takes = false;
        } else if (!strcmp(a, "--quiet")) {
            opt.quiet = true;
            takes = false;
        } else if (!strcmp(a, "--starttls")) {
            opt.tls = TLSM_STARTTLS;
            takes = false;
        } else if (!strcmp(a, "--tls")) {
            opt.tls = TLSM_IMPLICIT;
            takes = false;
        } else if (!strcmp(a, "--no-pipelining")) {
            opt.no_pipelining = true;
            takes = false;
        } else if (!val) {
            bench_die("%s: missing value (or unknown option; see --help)", a);
        } else if (!strcmp(a, "--server")) {
            if (!bench_resolve(val, &opt.server, &opt.server_len, opt.server_host,
                               sizeof(opt.server_host), err, sizeof(err)))
                bench_die("--server %s", err);
            have_server = true;
        } else if (!strcmp(a, "--connections")) {
            if (!bench_parse_u64(val, 1, RB_CONNECTIONS_MAX, &opt.connections))
                bench_die("--connections: 1..%d", RB_CONNECTIONS_MAX);
        } else if (!strcmp(a, "--threads")) {
            if (!bench_parse_u64(val, 1, RB_THREADS_MAX, &v))
                bench_die("--threads: 1..%d", RB_THREADS_MAX);
            opt.threads = (unsigned)v;
        } else if (!strcmp(a, "--messages")) {
            if (!bench_parse_u64(val, 1, RB_MESSAGES_MAX, &opt.messages))
                bench_die("--messages: 1..%llu", RB_MESSAGES_MAX);
        } else if (!strcmp(a, "--duration")) {
            if (!bench_parse_ms(val, &opt.duration_ms) || !opt.duration_ms)
                bench_die("--duration: a duration such as 30s");
        } else if (!strcmp(a, "--size")) {
            parse_size_spec(val);
        } else if (!strcmp(a, "--body")) {
            opt.body_file = val;
        } else if (!strcmp(a, "--recipients")) {
            if (!bench_parse_u64(val, 1, RB_RECIPIENTS_MAX, &opt.recipients))
                bench_die("--recipients: 1..%d", RB_RECIPIENTS_MAX);
        } else if (!strcmp(a, "--per-connection")) {
            if (!bench_parse_u64(val, 0, UINT32_MAX, &opt.per_connection))
                bench_die("--per-connection: a number (0 = no limit)");
        } else if (!strcmp(a, "--ca")) {
            opt.ca_file = val;
        } else if (!strcmp(a, "--tls-name")) {
            if (!*val || strlen(val) >= sizeof(opt.tls_name))
                bench_die("--tls-name: a host name below %d bytes", BENCH_HOST_BYTES_MAX);
            snprintf(opt.tls_name, sizeof(opt.tls_name), "%s", val);
        } else if (!strcmp(a, "--auth")) {
            /* encoded at once (build_text) and wiped here: ps shows it no longer */
            if (!strchr(val, ':') || strlen(val) > RB_AUTH_BYTES_MAX)
                bench_die("--auth: want USER:PASS");
            opt.auth = true;
            i++;
            continue;
        } else if (!strcmp(a, "--from")) {
            check_addr("--from", val);
            snprintf(opt.from, sizeof(opt.from), "%s", val);
        } else if (!strcmp(a, "--to")) {
            check_addr("--to", val);
            snprintf(opt.to, sizeof(opt.to), "%s", val);
        } else if (!strcmp(a, "--rate")) {
            char *end;
            opt.rate = strtod(val, &end);
            if (*end || !(opt.rate > 0) || opt.rate > 1e8)
                bench_die("--rate: messages per second, above 0");
        } else if (!strcmp(a, "--timeout")) {
            if (!bench_parse_ms(val, &opt.timeout_ms) || opt.timeout_ms < 10)
                bench_die("--timeout: a duration of at least 10ms");
        } else if (!strcmp(a, "--helo")) {
            if (!*val || strlen(val) >= sizeof(opt.helo) || strpbrk(val, " \r\n\t"))
                bench_die("--helo: a name without spaces, below %d bytes", RB_HELO_BYTES_MAX);
            snprintf(opt.helo, sizeof(opt.helo), "%s", val);
        } else if (!strcmp(a, "--seed")) {
            if (!bench_parse_u64(val, 1, UINT64_MAX, &opt.seed))
                bench_die("--seed: a positive number");
        } else {
            bench_die("unknown option %s (see --help)", a);
        }
        if (takes)
            i++;
    }
    if (!have_server)
        bench_die("--server HOST:PORT is required (see --help)");
    if (!opt.messages && !opt.duration_ms)
        opt.messages = RB_MESSAGES_DEFAULT;
    if ((opt.ca_file || opt.tls_name[0]) && opt.tls == TLSM_NONE)
        bench_die("--ca and --tls-name go with --starttls or --tls");
    if (!opt.tls_name[0])
        snprintf(opt.tls_name, sizeof(opt.tls_name), "%s", opt.server_host);
}

/* build_auth - "AUTH PLAIN base64(\0USER\0PASS)\r\n" from the --auth argument, which is then
 * wiped from the command line. */
static void build_auth(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i++) {
        unsigned char msg[RB_AUTH_BYTES_MAX + 2];
        char *val, *colon;
        size_t ulen, plen, n, b64;

        if (strcmp(argv[i], "--auth"))
            continue;
        val = argv[i + 1];
        colon = strchr(val, ':');
        ulen = (size_t)(colon - val);
        plen = strlen(colon + 1);
        msg[0] = '\0';
        memcpy(msg + 1, val, ulen);
        msg[1 + ulen] = '\0';
        memcpy(msg + 2 + ulen, colon + 1, plen);
        n = 2 + ulen + plen;
        free(text.auth);
        text.auth = rr_malloc(SASL_B64_ENCODED_BYTES(n) + 16);
        memcpy(text.auth, "AUTH PLAIN ", 11);
        if (sasl_b64_encode(msg, n, text.auth + 11, SASL_B64_ENCODED_BYTES(n) + 1, &b64) !=
            SASL_B64_OK)
            bench_die("--auth: cannot encode");
        memcpy(text.auth + 11 + b64, "\r\n", 2);
        text.auth_len = 11 + b64 + 2;
        explicit_bzero(msg, sizeof(msg));
        explicit_bzero(val, strlen(val));
    }
}

/* build_group - the MAIL/RCPT/DATA group and its line offsets. */
static void build_group(void)
{
    size_t cap = 64 + strlen(opt.from) + opt.recipients * (32 + strlen(opt.to));
    size_t len = 0;
    uint32_t n = (uint32_t)opt.recipients;

    text.group = rr_malloc(cap);
    text.line_off = rr_calloc(n + 3, sizeof(*text.line_off));
    text.line_off[0] = 0;
    len += (size_t)snprintf(text.group + len, cap - len, "MAIL FROM:<%s>\r\n", opt.from);
    for (uint32_t i = 1; i <= n; i++) {
        text.line_off[i] = len;
        if (n == 1)
            len += (size_t)snprintf(text.group + len, cap - len, "RCPT TO:<%s>\r\n", opt.to);
        else
            len += (size_t)snprintf(text.group + len, cap - len, "RCPT TO:<%u.%s>\r\n", i,
                                    opt.to);
    }
    text.line_off[n + 1] = len;
    len += (size_t)snprintf(text.group + len, cap - len, "DATA\r\n");
    text.line_off[n + 2] = len;
    text.group_len = len;
}

/* read_body - --body FILE: its lines with CRLF ends, dot-stuffed; the stored size apart. */
static void read_body(void)
{
    FILE *f = fopen(opt.body_file, "rb");
    size_t cap, len = 0, stored = 0;
    bool bol = true;
    int c;

    if (!f)
        bench_die("--body %s: %s", opt.body_file, strerror(errno));
    cap = 4096;
    text.content = rr_malloc(cap);
    while ((c = fgetc(f)) != EOF) {
        if (len + 4 > cap) {
            cap *= 2;
            text.content = rr_realloc(text.content, cap);
        }
        if (stored >= RB_SIZE_BYTES_MAX)
            bench_die("--body %s: larger than 64M", opt.body_file);
        if (c == '\r') {
            int d = fgetc(f);
            if (d != '\n' && d != EOF)
                ungetc(d, f);
            c = '\n';
        }
        if (c == '\n') {
            memcpy(text.content + len, "\r\n", 2);
            len += 2;
            stored += 2;
            bol = true;
            continue;
        }
        if (bol && c == '.')
            text.content[len++] = '.';  /* stuffed: not stored by the server */
        text.content[len++] = (char)c;
        stored++;
        bol = false;
    }
    fclose(f);
    if (!bol) {
        memcpy(text.content + len, "\r\n", 2);
        len += 2;
        stored += 2;
    }
    text.content_len = len;
    text.body_bytes = stored;
    opt.size_min = opt.size_max = (uint32_t)stored;
    opt.nsizes = 0;
}

/* build_content - headers and the body lines of the largest message. */
static void build_content(void)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t lines, len;
    char hdr[3 * RB_ADDR_BYTES_MAX];

    memset(text.tail, 'x', sizeof(text.tail));
    memcpy(text.tail + sizeof(text.tail) - 2, "\r\n", 2);
    if (opt.body_file) {
        read_body();
        return;
    }
    text.hdr_len = (size_t)snprintf(hdr, sizeof(hdr),
                                    "From: <%s>\r\nTo: <%s>\r\nSubject: ringbench\r\n\r\n",
                                    opt.from, opt.to);
    if (opt.size_min < text.hdr_len + 2)
        bench_die("--size: at least %zu bytes with these addresses (the headers and a line)",
                  text.hdr_len + 2);
    lines = (opt.size_max - text.hdr_len) / RB_LINE_BYTES + 1;
    text.content_len = text.hdr_len + lines * RB_LINE_BYTES;
    text.content = rr_malloc(text.content_len);
    memcpy(text.content, hdr, text.hdr_len);
    len = text.hdr_len;
    for (size_t i = 0; i < lines; i++) {
        for (unsigned k = 0; k < RB_LINE_BYTES - 2; k++)
            text.content[len + k] = alphabet[(i + k) % (sizeof(alphabet) - 1)];
        memcpy(text.content + len + RB_LINE_BYTES - 2, "\r\n", 2);
        len += RB_LINE_BYTES;
    }
}

/* build_text - everything sessions send, once. */
static void build_text(int argc, char **argv)
{
    build_group();
    build_content();
    text.ehlo_len = (size_t)snprintf(text.ehlo, sizeof(text.ehlo), "EHLO %s\r\n", opt.helo);
    text.helo_len = (size_t)snprintf(text.helo, sizeof(text.helo), "HELO %s\r\n", opt.helo);
    if (opt.auth)
        build_auth(argc, argv);
}

/* ---- results ---- */

/* sum_stats - every thread's results in one. */
static void sum_stats(struct stats *sum)
{
    memset(sum, 0, sizeof(*sum));
    hist_init(&sum->latency);
    hist_init(&sum->setup);
    for (unsigned i = 0; i < opt.threads; i++) {
        const struct stats *s = &threads[i].st;
        sum->ok += s->ok;
        sum->failed += s->failed;
        sum->unsent += s->unsent;
        sum->rcpts_ok += s->rcpts_ok;
        sum->bytes += s->bytes;
        sum->connections += s->connections;
        for (unsigned c = 0; c < BENCH_CODES; c++)
            sum->codes[c] += s->codes[c];
        for (unsigned e = 0; e < E_COUNT; e++)
            sum->errors[e] += s->errors[e];
        hist_merge(&sum->latency, &s->latency);
        hist_merge(&sum->setup, &s->setup);
    }
}

/* ms - microseconds as milliseconds. */
static double ms(uint64_t us)
{
    return (double)us / 1000.0;
}

/* json_hist - `"key":{"p50":..,...}` in milliseconds. */
static void json_hist(FILE *f, const char *key, const struct hist *h)
{
    fprintf(f, "\"%s\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f,"
               "\"mean\":%.3f,\"count\":%llu}", key, ms(hist_quantile(h, 0.5)),
            ms(hist_quantile(h, 0.9)), ms(hist_quantile(h, 0.99)), ms(hist_quantile(h, 0.999)),
            ms(h->max), hist_mean(h) / 1000.0, (unsigned long long)h->count);
}

/* report - the results: text (on stdout, or on stderr with --json) and the JSON line. */
static void report(double secs)
{
    struct stats s;
    FILE *f = opt.json ? stderr : stdout;
    bool any = false;

    sum_stats(&s);
    if (!opt.quiet || !opt.json) {
        fprintf(f, "ringbench: %llu messages ok, %llu failed", (unsigned long long)s.ok,
                (unsigned long long)s.failed);
        if (opt.rate)
            fprintf(f, ", %llu unsent", (unsigned long long)s.unsent);
        fprintf(f, " in %.3f s: %.1f msg/s", secs, secs > 0 ? (double)s.ok / secs : 0);
        if (opt.rate)
            fprintf(f, " (target %.1f)", opt.rate);
        fprintf(f, "\nringbench: %s, %llu sessions on %u threads, %llu connections, %llu "
                   "recipient%s, size %u", opt.server_text,
                (unsigned long long)opt.connections, opt.threads,
                (unsigned long long)s.connections, (unsigned long long)opt.recipients,
                opt.recipients == 1 ? "" : "s", opt.size_min);
        if (opt.size_max != opt.size_min)
            fprintf(f, "%s%u", opt.nsizes ? ".." : "-", opt.size_max);
        fprintf(f, ", %s\n", opt.tls == TLSM_IMPLICIT ? "TLS" :
                             opt.tls == TLSM_STARTTLS ? "STARTTLS" : "no TLS");
        fprintf(f, "ringbench: latency ms (%s): p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  "
                   "max %.3f\n", opt.rate ? "due time to end-of-data reply"
                                         : "MAIL to end-of-data reply",
                ms(hist_quantile(&s.latency, 0.5)), ms(hist_quantile(&s.latency, 0.9)),
                ms(hist_quantile(&s.latency, 0.99)), ms(hist_quantile(&s.latency, 0.999)),
                ms(s.latency.max));
        fprintf(f, "ringbench: session set-up ms: p50 %.3f  p99 %.3f  max %.3f\n",
                ms(hist_quantile(&s.setup, 0.5)), ms(hist_quantile(&s.setup, 0.99)),
                ms(s.setup.max));
        fprintf(f, "ringbench: replies ");
        bench_text_codes(f, s.codes);
        fprintf(f, "\nringbench: errors");
        for (unsigned e = 0; e < E_COUNT; e++)
            if (s.errors[e]) {
                fprintf(f, " %s=%llu", err_names[e], (unsigned long long)s.errors[e]);
                any = true;
            }
        fprintf(f, "%s\n", any ? "" : " none");
        fflush(f);
    }
    if (!opt.json)
        return;
    printf("{\"messages_ok\":%llu,\"messages_failed\":%llu,\"messages_unsent\":%llu,"
           "\"seconds\":%.3f,\"msgs_per_s\":%.1f,", (unsigned long long)s.ok,
           (unsigned long long)s.failed, (unsigned long long)s.unsent, secs,
           secs > 0 ? (double)s.ok / secs : 0);
    json_hist(stdout, "latency_ms", &s.latency);
    putchar(',');
    json_hist(stdout, "setup_ms", &s.setup);
    putchar(',');
    bench_json_codes(stdout, "replies", s.codes);
    printf(",\"errors\":{");
    any = false;
    for (unsigned e = 0; e < E_COUNT; e++)
        if (s.errors[e]) {
            printf("%s\"%s\":%llu", any ? "," : "", err_names[e],
                   (unsigned long long)s.errors[e]);
            any = true;
        }
    printf("},\"connections\":%llu,\"bytes\":%llu,\"recipients_ok\":%llu,\"sessions\":%llu,"
           "\"threads\":%u,\"rate\":%.1f}\n", (unsigned long long)s.connections,
           (unsigned long long)s.bytes, (unsigned long long)s.rcpts_ok,
           (unsigned long long)opt.connections, opt.threads, opt.rate);
    fflush(stdout);
}

/* progress - the live line on stderr. */
static void progress(double secs, uint64_t *last_ok, double *last_secs)
{
    uint64_t ok = 0, failed = 0, conns = 0;

    for (unsigned i = 0; i < opt.threads; i++) {
        ok += BENCH_GET(threads[i].ok_live);
        failed += BENCH_GET(threads[i].failed_live);
        conns += BENCH_GET(threads[i].conns_live);
    }
    fprintf(stderr, "\r\033[Kringbench: %6.1f s  ok %llu  failed %llu  connections %llu  "
                    "%.0f msg/s", secs, (unsigned long long)ok, (unsigned long long)failed,
            (unsigned long long)conns,
            secs > *last_secs ? (double)(ok - *last_ok) / (secs - *last_secs) : 0.0);
    *last_ok = ok;
    *last_secs = secs;
}

int main(int argc, char **argv)
{
    int cpus[BENCH_CPUS_MAX];
    unsigned ncpu;
    sigset_t set;
    char err[256];
    int r = 0;
    bool live;
    uint64_t last_ok = 0, end_ns = 0, sessions_before = 0;
    double last_secs = 0, next_progress = RB_PROGRESS_MS / 1000.0, secs;

    bench_prog = "ringbench";
    parse_args(argc, argv);
    build_text(argc, argv);
    bench_addr_text(&opt.server, opt.server_text, sizeof(opt.server_text));
    if (bench_raise_nofile() < opt.connections + 64)
        fprintf(stderr, "ringbench: warning: the open-file limit is below --connections\n");
    ncpu = bench_cpus(cpus, BENCH_CPUS_MAX);
    if (!opt.threads)
        opt.threads = ncpu ? ncpu : 1;
    if (opt.threads > opt.connections)
        opt.threads = (unsigned)opt.connections;
    if (opt.tls != TLSM_NONE) {
        if (tls_init() < 0)
            bench_die("cannot initialise wolfSSL");
        tls_ctx = tls_client_ctx(opt.ca_file, err, sizeof(err));
        if (!tls_ctx)
            bench_die("TLS: %s", err);
    }
    threads = rr_calloc(opt.threads, sizeof(*threads));
    for (unsigned i = 0; i < opt.threads; i++) {
        struct thread *t = &threads[i];
        uint32_t n = (uint32_t)(opt.connections / opt.threads +
                                (i < opt.connections % opt.threads));
        t->id = i;
        t->cpu = ncpu && opt.threads > 1 ? cpus[i % ncpu] : -1;
        t->nsess = t->unfinished = n;
        t->sess = rr_calloc(n, sizeof(*t->sess));
        for (uint32_t k = 0; k < n; k++) {
            t->sess[k].slot = k;
            t->sess[k].fd = -1;
        }
        t->idle = rr_calloc(n, sizeof(*t->idle));
        t->rng = opt.seed ? opt.seed * 0x9E3779B97F4A7C15ull + i + 1 : bench_seed(i);
        if (!t->rng)
            t->rng = 1;
        t->plain = rr_malloc(RB_TLS_PLAIN_BYTES);
        t->gather = rr_malloc(RB_TLS_RECORD_BYTES);
        hist_init(&t->st.latency);
        hist_init(&t->st.setup);
        if (opt.rate) {
            double share = opt.rate * (double)n / (double)opt.connections;
            t->interval_ns = 1e9 / share;
            if (opt.messages) {  /* this thread's share of the messages, by its sessions */
                uint64_t upto = sessions_before + n;
                t->rate_budget = opt.messages * upto / opt.connections -
                                 opt.messages * sessions_before / opt.connections;
            } else {
                t->rate_budget = (uint64_t)((double)opt.duration_ms / 1000.0 * share);
                if (!t->rate_budget)
                    t->rate_budget = 1;
            }
        }
        sessions_before += n;
    }

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    main_thread = pthread_self();
    signal(SIGPIPE, SIG_IGN);
    pthread_barrier_init(&start_barrier, NULL, opt.threads + 1);
    for (unsigned i = 0; i < opt.threads; i++)
        if (pthread_create(&threads[i].th, NULL, thread_main, &threads[i]) != 0)
            bench_die("cannot start a thread");
    pthread_barrier_wait(&start_barrier);
    for (unsigned i = 0; i < opt.threads; i++)
        if (threads[i].err && !r)
            r = threads[i].err;
    if (r) {
        fprintf(stderr, "ringbench: cannot set up a ring: %s\n", strerror(-r));
        atomic_store(&abort_flag, true);
        atomic_store(&stop_flag, true);
    }
    start_ns = loop_clock_ns() + 1000000;  /* 1 ms ahead: every thread starts on time */
    pthread_barrier_wait(&start_barrier);

    live = !opt.quiet && isatty(2);
    while (atomic_load(&threads_done) < opt.threads) {
        struct timespec ts = { 0, 100 * 1000000L };
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM) {
            if (atomic_load(&stop_flag))
                atomic_store(&abort_flag, true);
            atomic_store(&stop_flag, true);
        }
        secs = (double)(loop_clock_ns() - start_ns) / 1e9;
        if (live && secs >= next_progress) {
            progress(secs, &last_ok, &last_secs);
            next_progress += RB_PROGRESS_MS / 1000.0;
        }
    }
    if (live)
        fprintf(stderr, "\r\033[K");
    for (unsigned i = 0; i < opt.threads; i++) {
        pthread_join(threads[i].th, NULL);
        if (threads[i].done_ns > end_ns)
            end_ns = threads[i].done_ns;
    }
    if (r)
        return 1;
    secs = end_ns > start_ns ? (double)(end_ns - start_ns) / 1e9 : 0;
    report(secs);
    for (unsigned i = 0; i < opt.threads; i++) {
        free(threads[i].sess);
        free(threads[i].idle);
        free(threads[i].plain);
        free(threads[i].gather);
    }
    free(threads);
    free(text.group);
    free(text.line_off);
    free(text.content);
    free(text.auth);
    tls_ctx_unref(tls_ctx);
    return 0;
}
