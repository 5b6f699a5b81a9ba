/*
 * ringsink.c - a fast SMTP sink on io_uring, for benchmarks and tests: it takes any
 * envelope, counts messages, recipients and bytes, can write each message to a file of its
 * own, and can fail or delay replies on request the way a real next hop does.
 *
 *   ringsink --listen HOST:PORT[,HOST:PORT...] [--listen ...] [--threads N] [--dump DIR]
 *            [--fail CMD:CODE:ODDS]... [--delay CMD:MS]... [--json] [--hostname NAME]
 *            [--max-size BYTES] [--max-connections N] [--idle-timeout DUR] [--seed N]
 *            [--no-chunking]
 *
 * Threads: one per CPU this process may run on (or --threads), each pinned, each with its
 * own ring (bench/loop.h) and its own SO_REUSEPORT listening socket per address, so the
 * kernel spreads connections over the threads and nothing is shared on the per-message path.
 * The main thread only sets up, waits for signals and prints the counts: SIGTERM or SIGINT
 * stops (each thread closes its sessions and ends), SIGUSR1 prints the counts so far.
 *
 * A session is a small state machine (CMD, DATA, BDAT, WAIT), fed by one receive at a time
 * into a provided buffer: a buffer is processed command by command and released as soon as
 * it is used up. The session holds on to it (and receives nothing more) while its replies cannot
 * be queued - the output buffer is full because the peer does not read, a reply is delayed
 * (--delay), or a message is being written (--dump) - so a session holds at most one receive
 * buffer and SINK_OUT_BYTES of replies whatever the peer does. Pipelined commands (RFC 2920)
 * are answered in order, all the replies of one buffer in one send. DATA content goes through
 * the relay's own reader (net/smtp_data.c): dot-unstuffed, bare line ends normalised, counted
 * up to --max-size; only <CRLF>.<CRLF> ends it.
 *
 * CHUNKING (RFC 3030; offered unless --no-chunking): BDAT n [LAST], n parsed by the relay's
 * own parser (smtp_parse_bdat: decimal, at most 19 digits, so 64 bits; anything else is 501
 * and the connection closes after it, since where the chunk ends is then unknown). The n
 * bytes after the line are read as the chunk whatever the verdict (a chunk without MAIL, or
 * without recipients, is read and refused, 503 / 554, and fails the transaction, so later
 * chunks of it get 503). Chunk content is counted and kept as it came, concatenated: nothing
 * is unstuffed, normalised or added (a message without a final CRLF is dumped without one),
 * so a dump shows exactly what the client sent. Messages over --max-size get 552 at LAST.
 * Each taken chunk but the last is answered "250 2.0.0 n octets received"; the reply to
 * BDAT LAST is the end-of-data reply.
 *
 * --dump DIR: the content of each accepted message (unstuffed, as it would be stored) goes to
 * DIR/PID-THREAD-SEQ.eml, written with ring operations (openat, write, close: the kernel's
 * workers block on the disk, never this thread), and the 250 for the message is sent only
 * once its file is closed - a 250 means the file is there, as a real MTA's 250 means the
 * message is stored. Content is gathered in the session (at most --max-size) until the end.
 *
 * Faults (--fail CMD:CODE:ODDS, repeatable): CMD is greeting, mail, rcpt, data or dot (the
 * end of data); CODE a 4xx or 5xx reply code, or "drop" to close the connection without a
 * reply; ODDS the chance per command, 0..1 or a percentage ("25%"). Rules are tried in the
 * order given, each with its own draw; the first that hits answers. A 421 closes the
 * connection after the reply. --delay CMD:MS holds the reply to CMD (success or injected
 * failure) for MS milliseconds, on a ring timeout; the session reads nothing meanwhile. With
 * BDAT, data is the first chunk of a message (drawn at its command; the chunk is read, then
 * refused; its reply is held when it is not also the last) and dot the reply to BDAT LAST.
 *
 * Counts: messages, recipients and bytes of the messages answered 250 at the end of data
 * (bytes = stored content, after unstuffing, without the terminator; with BDAT the chunks'
 * bytes), connections accepted, RCPT commands, BDAT chunks, and every reply sent, by code.
 *
 * SECURITY: every byte from the network is hostile. Command lines are bounded
 * (SINK_LINE_BYTES_MAX; longer ones are answered 500 and skipped to their line end), message
 * content by --max-size (and smtp_data.c's bounds; BDAT content is counted in 64 bits and
 * kept only up to --max-size, a chunk's size by its digit limit, its bytes are read and
 * dropped as they come), replies queued by SINK_OUT_BYTES, bad commands by SINK_ERRORS_MAX
 * per connection (then 421 and close), silence by --idle-timeout, connections by
 * --max-connections. Nothing from the peer reaches a file name; dump files are
 * created with O_EXCL under the directory given. AUTH is accepted with any credentials (this
 * is a sink, never a real server): the credentials are neither decoded nor kept.
 *
 * STANDARDS: RFC 5321 (commands, replies, 4.5.2 transparency), RFC 2920 PIPELINING, RFC 3030
 * CHUNKING, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 2034 enhanced status
 * codes, RFC 4954 AUTH (PLAIN and LOGIN exchanges, any credentials).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/loop.h"
#include "core/alloc.h"
#include "net/smtp_data.h"
#include "net/smtp_parse.h"

#define SINK_LISTEN_MAX        16        /* listening addresses */
#define SINK_THREADS_MAX       256       /* worker threads */
#define SINK_FAULTS_MAX        32        /* --fail rules */
#define SINK_CONNECTIONS_MAX   1000000   /* --max-connections ceiling */
#define SINK_CONNECTIONS_DEFAULT 10000   /* --max-connections default, all threads together */
#define SINK_LINE_BYTES_MAX    2048      /* one command line, CRLF included (AUTH lines fit) */
#define SINK_OUT_BYTES         4096      /* replies queued per session */
#define SINK_REPLY_BYTES_MAX   512       /* the longest reply (EHLO's, with every line) */
#define SINK_ERRORS_MAX        20        /* bad commands per connection, then 421 */
#define SINK_RCPTS_MAX         100000    /* recipients per transaction, then 452 */
#define SINK_IOV_MAX           64        /* content pieces per smtp_data_feed call */
#define SINK_BUF_COUNT         2048      /* receive buffers per thread (power of 2) */
#define SINK_BUF_BYTES         8192      /* bytes of one receive buffer */
#define SINK_DUMP_FIRST_BYTES  65536     /* first allocation of a session's dump buffer */
#define SINK_PATH_BYTES        96        /* "PID-THREAD-SEQ.eml" */
#define SINK_SIZE_DEFAULT      (64ull << 20) /* --max-size default */
#define SINK_IDLE_MS_DEFAULT   300000    /* --idle-timeout default */
#define SINK_TICK_MS           1000      /* idle checks, buffer-starved receives */
#define SINK_DELAY_MS_MAX      3600000   /* --delay ceiling */
#define SINK_HOSTNAME_BYTES    128       /* --hostname */
#define SINK_BACKLOG           4096      /* listen(2) backlog per socket */

/* The reply to a command the sink does not take (EXPN, unknown verbs, BDAT with --no-chunking). */
#define REPLY_NOT_IMPLEMENTED  "502 5.5.1 Command not implemented"

enum sink_op {
    OP_NONE = 0,      /* nobody waits: cancels, closes of sockets never used */
    OP_ACCEPT,        /* slot = listening socket index */
    OP_RECV,          /* slot = session */
    OP_SEND,          /* slot = session */
    OP_TIMER,         /* slot = session: a delayed reply is due */
    OP_CLOSE,         /* slot = session: its socket is closed */
    OP_DUMP_OPEN,     /* slot = session */
    OP_DUMP_WRITE,    /* slot = session */
    OP_DUMP_CLOSE,    /* slot = session */
    OP_TICK,          /* the thread's 1 s timer */
    OP_WAKE,          /* eventfd read: stop */
};

/* The commands whose replies can be failed or delayed. */
enum sink_cmd { CMD_GREETING, CMD_MAIL, CMD_RCPT, CMD_DATA, CMD_DOT, CMD_COUNT };
static const char *const cmd_names[CMD_COUNT] = { "greeting", "mail", "rcpt", "data", "dot" };

#define FAULT_DROP 0      /* code of a rule that closes the connection */

struct fault {
    uint8_t cmd;                  /* enum sink_cmd */
    uint16_t code;                /* 400..599, or FAULT_DROP */
    double odds;                  /* chance per command, 0..1 */
};

static struct {
    struct sockaddr_storage listen[SINK_LISTEN_MAX]; /* resolved addresses */
    socklen_t listen_len[SINK_LISTEN_MAX]; /* bytes of each */
    unsigned nlisten;             /* addresses */
    unsigned threads;             /* worker threads */
    const char *dump_dir;         /* --dump, or NULL */
    int dump_fd;                  /* O_DIRECTORY of dump_dir, -1 without */
    struct fault faults[SINK_FAULTS_MAX]; /* --fail rules, in order */
    unsigned nfaults;             /* entries in faults */
    uint32_t delay_ms[CMD_COUNT]; /* --delay, 0 = none */
    bool json;                    /* --json */
    char hostname[SINK_HOSTNAME_BYTES]; /* greeting and EHLO name */
    uint64_t max_size;            /* content bytes per message */
    uint64_t max_connections;     /* all threads together */
    uint64_t idle_ms;             /* --idle-timeout */
    uint64_t seed;                /* 0 = from the clock */
    bool no_chunking;             /* --no-chunking: no CHUNKING in EHLO, BDAT refused */
} opt;

enum sess_state {
    SS_CMD,           /* reading command lines */
    SS_DATA,          /* reading message content */
    SS_BDAT,          /* reading a BDAT chunk */
    SS_WAIT,          /* a reply is held (delay, dump): nothing is read */
};

struct stats {
    uint64_t connections;         /* accepted and served */
    uint64_t refused;             /* accepted and closed at once: no free session */
    uint64_t messages;            /* answered 250 at the end of data */
    uint64_t recipients;          /* of those messages */
    uint64_t bytes;               /* content of those messages */
    uint64_t rcpt_commands;       /* RCPT commands answered 250 */
    uint64_t faults;              /* replies failed or connections dropped on purpose */
    uint64_t dumped;              /* files written */
    uint64_t dump_errors;         /* files that could not be written (451 sent) */
    uint64_t chunks;              /* BDAT chunks read (taken or refused) */
    uint64_t codes[BENCH_CODES];  /* replies sent, by code */
};

struct sess {
    uint32_t slot, gen;           /* index in the thread, session number */
    int fd;                       /* the socket, -1 when the slot is free */
    uint8_t st;                   /* enum sess_state */
    uint8_t ops;                  /* ring operations in flight */
    bool recv_armed, send_armed, timer_armed, dump_busy; /* in flight */
    bool closing;                 /* no new operations; freed when ops reach 0 */
    bool close_after_send;        /* QUIT or 421: close once the replies are out */
    bool starved;                 /* the last receive found no buffer: retried later */
    /* the receive buffer being worked through */
    bool held;                    /* a receive buffer is being worked through */
    uint16_t held_bid;            /* its id */
    uint32_t held_off, held_len;  /* bytes used, bytes received */
    /* the command line being assembled */
    uint32_t line_len;            /* bytes in line */
    bool line_long;               /* beyond SINK_LINE_BYTES_MAX: skipped to its LF */
    uint8_t auth_lines;           /* AUTH responses still expected */
    uint16_t errors;              /* bad commands so far */
    /* the transaction */
    bool mail;                    /* MAIL accepted */
    uint32_t rcpts;               /* RCPT accepted */
    struct smtp_data_reader dr;   /* the content of DATA */
    bool bdat;                    /* the content is coming by BDAT (RFC 3030) */
    bool chunk_last;              /* the chunk being read is the last (BDAT n LAST) */
    bool chunk_held;              /* its reply waits --delay data: the message's first chunk
                                     (not also its last), or one refused by --fail data */
    uint64_t chunk_left;          /* bytes of the chunk still to read */
    uint64_t chunk_bytes;         /* its size */
    uint64_t bdat_bytes;          /* content of the message so far, all its chunks (counted up
                                     to max_size + 1: beyond is refused anyway) */
    const char *chunk_refusal;    /* the reply the chunk gets once read; NULL: taken */
    uint64_t msg_bytes;           /* content of the message being answered 250 */
    /* the reply held by SS_WAIT */
    uint8_t wait_next;            /* enum sess_state after it */
    bool wait_counts;             /* it is the 250 of a message: count the message then */
    bool wait_dump;               /* the dump is still being written */
    bool wait_delay;              /* the delay has not run yet */
    char pending[SINK_REPLY_BYTES_MAX]; /* the held reply */
    struct __kernel_timespec ts;  /* the delay's timeout */
    /* --dump */
    char *dump;                   /* content gathered, at most opt.max_size */
    size_t dump_len, dump_cap, dump_off; /* content kept, allocated, written */
    int dump_file;                /* the file being written, -1 */
    char path[SINK_PATH_BYTES];   /* the dump file, under opt.dump_dir */
    /* replies */
    uint32_t out_len;             /* bytes queued in out */
    uint32_t out_off;             /* bytes of out already sent */
    uint32_t out_inflight;        /* bytes of the send in flight, from out_off */
    uint64_t idle_deadline_ms;    /* closed (421) when silent until then */
    struct sess *starved_next;    /* the thread's starved list */
    char line[SINK_LINE_BYTES_MAX]; /* the command line (sess_new clears up to here) */
    char out[SINK_OUT_BYTES];     /* replies queued */
    char refusal[SINK_REPLY_BYTES_MAX]; /* a chunk's drawn failure (chunk_refusal points here) */
};

struct thread {
    unsigned id;                  /* 0 .. threads-1 */
    int cpu;                      /* CPU it is pinned to, -1 if none */
    pthread_t th;                 /* the thread */
    struct loop lp;               /* its ring and receive buffers */
    int listen_fd[SINK_LISTEN_MAX]; /* one per address, -1 when closed */
    unsigned accepts_armed;       /* multishot accepts in flight */
    bool accept_paused[SINK_LISTEN_MAX]; /* an accept error: re-armed at the next tick */
    int wake_fd;                  /* eventfd the main thread writes at the stop */
    uint64_t wake_val;            /* read target of OP_WAKE */
    struct __kernel_timespec tick_ts; /* the tick's interval */
    struct sess **sess;           /* by slot; allocated at first use, kept */
    uint32_t nslots;              /* sessions at most */
    uint32_t *free_slots;         /* free slots (a stack) */
    uint32_t nfree;               /* entries in free_slots */
    uint32_t live;                /* sessions not yet freed */
    uint32_t gen_next;            /* generation of the next session */
    struct sess *starved;         /* sessions waiting for a receive buffer */
    uint64_t rng;                 /* fault draws */
    uint64_t seq;                 /* dump files made */
    uint64_t now_ms;              /* monotonic, once per loop pass */
    bool stopping;                /* SIGTERM: sessions are being closed */
    bool tick_armed;              /* the OP_TICK timeout is in flight */
    int err;                      /* set-up failure, -errno */
    struct stats st;              /* written by this thread only (BENCH_ADD) */
};

static struct thread *threads;
static atomic_bool stop_flag;
static pthread_barrier_t start_barrier;
static uint64_t start_ns;

static void sess_close(struct thread *t, struct sess *s);
static void sess_pump(struct thread *t, struct sess *s);
static void txn_reset(struct sess *s);
static void bdat_command(struct thread *t, struct sess *s, const char *arg, size_t len);

/* usage - the help text. */
static void usage(FILE *f)
{
    fprintf(f,
"usage: ringsink --listen HOST:PORT[,HOST:PORT...] [options]\n"
"A fast SMTP sink: accepts any envelope, counts messages, recipients and bytes.\n"
"  --listen HOST:PORT     address to listen on (repeatable, or a comma list; port 0 = any\n"
"                         free port, the same for every thread; see the ready line)\n"
"  --threads N            worker threads (default: one per CPU)\n"
"  --dump DIR             write each accepted message to DIR/PID-THREAD-SEQ.eml; the 250\n"
"                         is sent once the file is written\n"
"  --fail CMD:CODE:ODDS   fail CMD (greeting|mail|rcpt|data|dot) with CODE (4xx|5xx, or\n"
"                         drop: close without a reply) with chance ODDS (0..1 or N%%);\n"
"                         repeatable, first hit wins\n"
"  --delay CMD:MS         hold the reply to CMD for MS milliseconds (repeatable)\n"
"                         (with BDAT, CMD data is a message's first chunk: read, then\n"
"                         failed or held; dot is the reply to BDAT LAST)\n"
"  --no-chunking          do not offer CHUNKING (BDAT is then refused with 502)\n"
"  --json                 print the counts as one JSON object\n"
"  --hostname NAME        name in the greeting and EHLO (default ringsink.invalid)\n"
"  --max-size BYTES       content bytes per message, K/M/G suffixes (default 64M)\n"
"  --max-connections N    sessions at once, all threads together (default %d)\n"
"  --idle-timeout DUR     close a silent connection after DUR (default 300s)\n"
"  --seed N               seed of the fault draws (default: from the clock)\n"
"Prints \"ringsink: ready listen=ADDR,... threads=N\" on stderr once it accepts; the counts\n"
"on SIGTERM or SIGINT (then exits 0), and the counts so far on SIGUSR1.\n",
            SINK_CONNECTIONS_DEFAULT);
}

/* ---- replies ---- */

/* out_room - bytes that can still be queued. */
static uint32_t out_room(const struct sess *s)
{
    return SINK_OUT_BYTES - s->out_len;
}

/* reply - queue one reply (text without CRLF; every line already formed) and count it by
 * code. The caller made sure of SINK_REPLY_BYTES_MAX of room. */
static void reply(struct thread *t, struct sess *s, const char *text)
{
    size_t n = strlen(text);
    unsigned code;

    if (n + 2 > out_room(s))  /* cannot happen: the callers check the room first */
        n = out_room(s) >= 2 ? out_room(s) - 2 : 0;
    memcpy(s->out + s->out_len, text, n);
    memcpy(s->out + s->out_len + n, "\r\n", 2);
    s->out_len += (uint32_t)n + 2;
    code = (unsigned)(text[0] - '0') * 100 + (unsigned)(text[1] - '0') * 10 +
           (unsigned)(text[2] - '0');
    if (code < BENCH_CODES)
        BENCH_ADD(t->st.codes[code], 1);
}

/* flush - send what is queued, unless a send is in flight (its completion sends the rest). */
static void flush(struct thread *t, struct sess *s)
{
    struct io_uring_sqe *sqe;

    if (s->send_armed || s->closing || s->out_off == s->out_len)
        return;
    s->out_inflight = s->out_len - s->out_off;
    s->send_armed = true;
    s->ops++;
    sqe = loop_sqe(&t->lp);
    io_uring_prep_send(sqe, s->fd, s->out + s->out_off, s->out_inflight, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, loop_ud(OP_SEND, s->slot, s->gen));
}

/* ---- faults and delays ---- */

enum verdict { V_OK, V_FAILED, V_DROPPED };

/* fault_draw - the reply for cmd: ok_text, or a failure a --fail rule drew into buf.
 * V_DROPPED: a drop rule hit (the caller closes the connection). */
static enum verdict fault_draw(struct thread *t, enum sink_cmd cmd, char *buf, size_t cap)
{
    for (unsigned i = 0; i < opt.nfaults; i++) {
        const struct fault *f = &opt.faults[i];
        if (f->cmd != cmd || bench_rand_unit(&t->rng) >= f->odds)
            continue;
        BENCH_ADD(t->st.faults, 1);
        if (f->code == FAULT_DROP)
            return V_DROPPED;
        snprintf(buf, cap, "%u %u.0.0 Injected %s failure (ringsink)%s", f->code,
                 f->code / 100, cmd_names[cmd], f->code == 421 ? ", closing" : "");
        return V_FAILED;
    }
    return V_OK;
}

/* drop - close the connection at once, without a reply (what was queued is not sent). */
static void drop(struct thread *t, struct sess *s)
{
    s->out_len = s->out_off + s->out_inflight;  /* only the send in flight may still go */
    sess_close(t, s);
}

/* arm_delay - run the delay of the held reply. */
static void arm_delay(struct thread *t, struct sess *s, uint32_t ms)
{
    s->timer_armed = true;
    s->ops++;
    loop_timeout(&t->lp, &s->ts, ms, loop_ud(OP_TIMER, s->slot, s->gen));
}

/* wait_step - move the held reply on: run its delay once its dump is over, then queue it.
 * true when it was queued (the session reads on); the caller pumps, unless it is the pump. */
static bool wait_step(struct thread *t, struct sess *s)
{
    if (s->wait_dump || s->closing)
        return false;
    if (s->wait_delay) {
        s->wait_delay = false;
        arm_delay(t, s, opt.delay_ms[CMD_DOT]);
        return false;
    }
    if (s->timer_armed)
        return false;
    if (s->wait_counts) {
        BENCH_ADD(t->st.messages, 1);
        BENCH_ADD(t->st.recipients, s->rcpts);
        BENCH_ADD(t->st.bytes, s->msg_bytes);
        txn_reset(s);
        s->wait_counts = false;
    }
    reply(t, s, s->pending);
    if (!strncmp(s->pending, "421", 3))
        s->close_after_send = true;
    s->st = s->wait_next;
    return true;
}

/* wait_done - a delay or a dump completed: the held reply may go, and the session on. */
static void wait_done(struct thread *t, struct sess *s)
{
    if (wait_step(t, s))
        sess_pump(t, s);
}

/* hold - answer text after the delay of cmd: the session reads nothing meanwhile. */
static void hold(struct thread *t, struct sess *s, enum sink_cmd cmd, const char *text,
                 enum sess_state next)
{
    snprintf(s->pending, sizeof(s->pending), "%s", text);
    s->wait_next = next;
    s->st = SS_WAIT;
    arm_delay(t, s, opt.delay_ms[cmd]);
}

/* respond - the reply to cmd: ok_text, or a drawn failure; delayed when --delay says so.
 * Returns the verdict; on V_DROPPED the session is closing. next is the state after a
 * successful reply (SS_DATA after the 354), failures go back to SS_CMD. */
static enum verdict respond(struct thread *t, struct sess *s, enum sink_cmd cmd,
                            const char *ok_text, enum sess_state next)
{
    char buf[SINK_REPLY_BYTES_MAX];
    enum verdict v = fault_draw(t, cmd, buf, sizeof(buf));
    const char *text = v == V_OK ? ok_text : buf;

    if (v == V_DROPPED) {
        drop(t, s);
        return v;
    }
    if (v == V_FAILED)
        next = SS_CMD;
    if (opt.delay_ms[cmd]) {
        hold(t, s, cmd, text, next);
        return v;
    }
    reply(t, s, text);
    if (v == V_FAILED && !strncmp(text, "421", 3))
        s->close_after_send = true;
    s->st = next;
    return v;
}

/* ---- dump files ---- */

/* dump_append - keep len content bytes for the dump (bounded by max_size: the reader never
 * emits more). */
static void dump_append(struct sess *s, const void *p, size_t len)
{
    if (s->dump_len + len > s->dump_cap) {
        size_t cap = s->dump_cap ? s->dump_cap : SINK_DUMP_FIRST_BYTES;
        while (cap < s->dump_len + len)
            cap *= 2;
        s->dump = rr_realloc(s->dump, cap);
        s->dump_cap = cap;
    }
    memcpy(s->dump + s->dump_len, p, len);
    s->dump_len += len;
}

/* dump_start - write the message's file: openat, then writes, then close, all on the ring. */
static void dump_start(struct thread *t, struct sess *s)
{
    struct io_uring_sqe *sqe = loop_sqe(&t->lp);

    snprintf(s->path, sizeof(s->path), "%d-%u-%llu.eml", (int)getpid(), t->id,
             (unsigned long long)++t->seq);
    s->wait_dump = true;
    s->dump_busy = true;
    s->dump_off = 0;
    s->ops++;
    io_uring_prep_openat(sqe, opt.dump_fd, s->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                         0644);
    io_uring_sqe_set_data64(sqe, loop_ud(OP_DUMP_OPEN, s->slot, s->gen));
}

/* dump_failed - the file could not be written: the message is refused with a 451. */
static void dump_failed(struct thread *t, struct sess *s, int err)
{
    BENCH_ADD(t->st.dump_errors, 1);
    fprintf(stderr, "ringsink: cannot write %s/%s: %s\n", opt.dump_dir, s->path, strerror(err));
    snprintf(s->pending, sizeof(s->pending), "451 4.3.0 Cannot write the message (ringsink)");
    s->wait_counts = false;
    s->wait_delay = false;
    txn_reset(s);
}

/* dump_step - a dump operation completed with res. */
static void dump_step(struct thread *t, struct sess *s, unsigned op, int res)
{
    struct io_uring_sqe *sqe;

    if (op == OP_DUMP_OPEN) {
        if (res < 0) {
            dump_failed(t, s, -res);
            goto done;
        }
        s->dump_file = res;
    } else if (op == OP_DUMP_WRITE) {
        if (res <= 0) {
            dump_failed(t, s, res ? -res : ENOSPC);
            goto close;
        }
        s->dump_off += (size_t)res;
    } else {  /* OP_DUMP_CLOSE */
        s->dump_file = -1;
        if (res < 0 && s->wait_counts)
            dump_failed(t, s, -res);
        else if (s->wait_counts)
            BENCH_ADD(t->st.dumped, 1);
        goto done;
    }
    if (s->dump_off < s->dump_len) {
        size_t n = s->dump_len - s->dump_off;
        sqe = loop_sqe(&t->lp);
        s->ops++;
        io_uring_prep_write(sqe, s->dump_file, s->dump + s->dump_off,
                            n > 0x40000000 ? 0x40000000 : (unsigned)n, s->dump_off);
        io_uring_sqe_set_data64(sqe, loop_ud(OP_DUMP_WRITE, s->slot, s->gen));
        return;
    }
close:
    sqe = loop_sqe(&t->lp);
    s->ops++;
    io_uring_prep_close(sqe, s->dump_file);
    io_uring_sqe_set_data64(sqe, loop_ud(OP_DUMP_CLOSE, s->slot, s->gen));
    return;
done:
    s->dump_busy = false;
    s->wait_dump = false;
    if (s->closing) {
        sess_close(t, s);  /* it was waiting for this to be freed */
        return;
    }
    wait_done(t, s);
}

/* ---- commands ---- */

/* txn_reset - forget the transaction. */
static void txn_reset(struct sess *s)
{
    s->mail = false;
    s->rcpts = 0;
    s->bdat = false;
}

/* ehlo_reply - the EHLO reply. */
static void ehlo_reply(struct thread *t, struct sess *s)
{
    char buf[SINK_REPLY_BYTES_MAX];

    snprintf(buf, sizeof(buf),
             "250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
             "%s250-ENHANCEDSTATUSCODES\r\n250-AUTH PLAIN LOGIN\r\n250 HELP", opt.hostname,
             (unsigned long long)opt.max_size, opt.no_chunking ? "" : "250-CHUNKING\r\n");
    reply(t, s, buf);
}

/* bad_command - a command we cannot take: one reply, and too many of them end the session. */
static void bad_command(struct thread *t, struct sess *s, const char *text)
{
    if (++s->errors > SINK_ERRORS_MAX) {
        reply(t, s, "421 4.7.0 Too many errors, closing (ringsink)");
        s->close_after_send = true;
        return;
    }
    reply(t, s, text);
}

/* auth_start - AUTH MECH [initial]: any credentials are taken, nothing is decoded. */
static void auth_start(struct thread *t, struct sess *s, const char *arg, size_t len)
{
    size_t m = 0;
    bool initial;

    while (m < len && arg[m] != ' ')
        m++;
    initial = m < len;
    if (m == 5 && !strncasecmp(arg, "PLAIN", 5)) {
        if (initial) {
            reply(t, s, "235 2.7.0 Authentication successful");
        } else {
            s->auth_lines = 1;
            reply(t, s, "334 ");
        }
    } else if (m == 5 && !strncasecmp(arg, "LOGIN", 5)) {
        s->auth_lines = initial ? 1 : 2;
        reply(t, s, initial ? "334 UGFzc3dvcmQ6" : "334 VXNlcm5hbWU6");
    } else {
        bad_command(t, s, "504 5.5.4 Unrecognized authentication type");
    }
}

/* command - one command line (CRLF removed). */
static void command(struct thread *t, struct sess *s, const char *line, size_t len)
{
    struct smtp_cmd cmd;
    enum smtp_parse_err e;

    if (s->auth_lines) {  /* a response to a 334 */
        s->auth_lines--;
        if (len == 1 && line[0] == '*') {
            s->auth_lines = 0;
            reply(t, s, "501 5.0.0 Authentication cancelled");
        } else if (s->auth_lines) {
            reply(t, s, "334 UGFzc3dvcmQ6");
        } else {
            reply(t, s, "235 2.7.0 Authentication successful");
        }
        return;
    }
    e = smtp_cmd_parse(line, len, &cmd);
    if (e != SMTP_PARSE_OK) {
        bad_command(t, s, e == SMTP_PARSE_NUL ? "500 5.5.2 Bad character in the command"
                                              : "500 5.5.2 Command unrecognized");
        return;
    }
    switch (cmd.verb) {
    case SMTP_VERB_EHLO:
        txn_reset(s);
        ehlo_reply(t, s);
        break;
    case SMTP_VERB_HELO: {
        char buf[SINK_REPLY_BYTES_MAX];
        txn_reset(s);
        snprintf(buf, sizeof(buf), "250 %s", opt.hostname);
        reply(t, s, buf);
        break;
    }
    case SMTP_VERB_MAIL:
        if (s->mail) {
            bad_command(t, s, "503 5.5.1 Error: nested MAIL command");
        } else if (cmd.arg_len < 5 || strncasecmp(cmd.arg, "FROM:", 5)) {
            bad_command(t, s, "501 5.5.4 Syntax: MAIL FROM:<address>");
        } else if (respond(t, s, CMD_MAIL, "250 2.1.0 Ok", SS_CMD) == V_OK) {
            s->mail = true;
            s->rcpts = 0;
        }
        break;
    case SMTP_VERB_RCPT:
        if (!s->mail) {
            bad_command(t, s, "503 5.5.1 Error: need MAIL command");
        } else if (cmd.arg_len < 3 || strncasecmp(cmd.arg, "TO:", 3)) {
            bad_command(t, s, "501 5.5.4 Syntax: RCPT TO:<address>");
        } else if (s->rcpts >= SINK_RCPTS_MAX) {
            reply(t, s, "452 4.5.3 Too many recipients");
        } else if (respond(t, s, CMD_RCPT, "250 2.1.5 Ok", SS_CMD) == V_OK) {
            s->rcpts++;
            BENCH_ADD(t->st.rcpt_commands, 1);
        }
        break;
    case SMTP_VERB_DATA:
        if (!s->mail) {
            bad_command(t, s, "503 5.5.1 Error: need RCPT command");
        } else if (!s->rcpts) {
            reply(t, s, "554 5.5.1 Error: no valid recipients");
        } else if (s->bdat) {
            bad_command(t, s, "503 5.5.1 Error: DATA after BDAT");
        } else {
            /* The reader is set up before the verdict: SS_DATA may follow a delay. */
            smtp_data_init(&s->dr, SMTP_DATA_DOT, true, opt.max_size, 0);
            s->dump_len = 0;
            respond(t, s, CMD_DATA, "354 End data with <CR><LF>.<CR><LF>", SS_DATA);
        }
        break;
    case SMTP_VERB_RSET:
        txn_reset(s);
        reply(t, s, "250 2.0.0 Ok");
        break;
    case SMTP_VERB_NOOP:
        reply(t, s, "250 2.0.0 Ok");
        break;
    case SMTP_VERB_QUIT:
        reply(t, s, "221 2.0.0 Bye");
        s->close_after_send = true;
        break;
    case SMTP_VERB_HELP:
        reply(t, s, "214 2.0.0 ringsink: a benchmark sink");
        break;
    case SMTP_VERB_VRFY:
        reply(t, s, "252 2.0.0 Cannot VRFY user");
        break;
    case SMTP_VERB_STARTTLS:
        reply(t, s, "454 4.7.0 TLS not available");
        break;
    case SMTP_VERB_AUTH:
        auth_start(t, s, cmd.arg, cmd.arg_len);
        break;
    case SMTP_VERB_BDAT:
        bdat_command(t, s, cmd.arg, cmd.arg_len);
        break;
    default:  /* EXPN, anything else */
        bad_command(t, s, REPLY_NOT_IMPLEMENTED);
        break;
    }
}

/* end_of_data - the terminator came (or BDAT LAST was read): the verdict on the message of
 * bytes content bytes. err: too big (the reader stopped storing, or the chunks passed
 * --max-size). */
static void end_of_data(struct thread *t, struct sess *s, enum smtp_data_err err,
                        uint64_t bytes)
{
    char buf[SINK_REPLY_BYTES_MAX];
    enum verdict v;

    if (err != SMTP_DATA_OK) {
        reply(t, s, smtp_data_reply(err));
        txn_reset(s);
        s->st = SS_CMD;
        return;
    }
    v = fault_draw(t, CMD_DOT, buf, sizeof(buf));
    if (v == V_DROPPED) {
        drop(t, s);
        return;
    }
    if (v == V_FAILED) {
        txn_reset(s);
        if (opt.delay_ms[CMD_DOT]) {
            hold(t, s, CMD_DOT, buf, SS_CMD);
            return;
        }
        reply(t, s, buf);
        if (!strncmp(buf, "421", 3))
            s->close_after_send = true;
        s->st = SS_CMD;
        return;
    }
    snprintf(s->pending, sizeof(s->pending), "250 2.0.0 Ok: queued as %u.%llu (ringsink)",
             t->id, (unsigned long long)(t->seq + 1));
    s->msg_bytes = bytes;
    s->wait_next = SS_CMD;
    s->wait_counts = true;
    s->wait_delay = opt.delay_ms[CMD_DOT] != 0;
    s->st = SS_WAIT;
    if (opt.dump_dir) {
        dump_start(t, s);
        return;
    }
    t->seq++;
    wait_step(t, s);  /* inside the pump: it reads on by itself */
}

/* data_feed - content bytes: count them (and keep them for --dump) up to the terminator.
 * Returns the bytes consumed. */
static size_t data_feed(struct thread *t, struct sess *s, const char *buf, size_t len)
{
    struct iovec iov[SINK_IOV_MAX];
    size_t off = 0;
    bool done = false;

    while (off < len && !done) {
        unsigned n = 0;
        off += smtp_data_feed(&s->dr, buf + off, len - off, iov, SINK_IOV_MAX, &n, &done);
        if (opt.dump_dir)
            for (unsigned i = 0; i < n; i++)
                dump_append(s, iov[i].iov_base, iov[i].iov_len);
    }
    if (done)
        end_of_data(t, s, (enum smtp_data_err)s->dr.err, s->dr.bytes);
    return off;
}

/* chunk_end - a BDAT chunk was read: its reply. A refused chunk fails the transaction (RFC
 * 3030 2: later chunks of it get 503); the last one taken is the end of the data. */
static void chunk_end(struct thread *t, struct sess *s)
{
    char buf[SINK_REPLY_BYTES_MAX];
    bool held = s->chunk_held && opt.delay_ms[CMD_DATA];

    BENCH_ADD(t->st.chunks, 1);
    s->st = SS_CMD;
    if (s->chunk_refusal) {
        snprintf(buf, sizeof(buf), "%s", s->chunk_refusal);
        txn_reset(s);
        if (held) {
            hold(t, s, CMD_DATA, buf, SS_CMD);
            return;
        }
        reply(t, s, buf);
        if (!strncmp(buf, "421", 3))
            s->close_after_send = true;
        return;
    }
    if (s->chunk_last) {
        end_of_data(t, s, s->bdat_bytes > opt.max_size ? SMTP_DATA_TOO_BIG : SMTP_DATA_OK,
                    s->bdat_bytes);
        return;
    }
    snprintf(buf, sizeof(buf), "250 2.0.0 %llu octets received (ringsink)",
             (unsigned long long)s->chunk_bytes);
    if (held)
        hold(t, s, CMD_DATA, buf, SS_CMD);
    else
        reply(t, s, buf);
}

/* chunk_feed - bytes of a BDAT chunk, up to its size: counted and (--dump) kept exactly as
 * they came, nothing added or changed; a refused chunk is only read. Returns the bytes
 * consumed. */
static size_t chunk_feed(struct thread *t, struct sess *s, const char *buf, size_t len)
{
    size_t take = len < s->chunk_left ? len : (size_t)s->chunk_left;

    s->chunk_left -= take;
    if (!s->chunk_refusal && s->bdat_bytes <= opt.max_size) {
        if (opt.dump_dir) {
            uint64_t room = opt.max_size - s->bdat_bytes;
            dump_append(s, buf, take < room ? take : (size_t)room);
        }
        s->bdat_bytes += take;  /* below 2^40 + SINK_BUF_BYTES: no overflow */
    }
    if (!s->chunk_left)
        chunk_end(t, s);
    return take;
}

/* bdat_command - BDAT n [LAST] (RFC 3030): the n bytes after the line are the chunk, read as
 * content whatever the verdict, which is its reply once they are in. The first chunk of a
 * message stands where DATA would: --fail data is drawn for it (the chunk is then read and
 * refused; drop closes at once) and --delay data holds its reply, unless it is also the last,
 * whose reply is the end of data's (--fail dot, --delay dot). */
static void bdat_command(struct thread *t, struct sess *s, const char *arg, size_t len)
{
    uint64_t size;
    bool last;

    if (opt.no_chunking) {
        bad_command(t, s, REPLY_NOT_IMPLEMENTED);
        return;
    }
    if (!smtp_parse_bdat(arg, len, &size, &last)) {
        /* Where the chunk ends is unknown: the rest of the stream cannot be followed. */
        reply(t, s, "501 5.5.4 Syntax: BDAT size [LAST]");
        s->close_after_send = true;
        return;
    }
    s->chunk_left = s->chunk_bytes = size;
    s->chunk_last = last;
    s->chunk_held = false;
    s->chunk_refusal = NULL;
    if (!s->mail) {
        s->chunk_refusal = "503 5.5.1 Error: need MAIL command";
    } else if (!s->rcpts) {
        s->chunk_refusal = "554 5.5.1 Error: no valid recipients";
    } else if (!s->bdat) {
        enum verdict v = fault_draw(t, CMD_DATA, s->refusal, sizeof(s->refusal));
        if (v == V_DROPPED) {
            drop(t, s);
            return;
        }
        s->bdat = true;
        s->chunk_held = !last;
        s->bdat_bytes = 0;
        s->dump_len = 0;
        if (v == V_FAILED) {
            s->chunk_held = true;
            s->chunk_refusal = s->refusal;
        }
    }
    s->st = SS_BDAT;
    if (!size)
        chunk_end(t, s);
}

/* line_feed - command bytes: complete one line and act on it. Returns the bytes consumed. */
static size_t line_feed(struct thread *t, struct sess *s, const char *buf, size_t len)
{
    const char *lf = memchr(buf, '\n', len);
    size_t take = lf ? (size_t)(lf - buf) + 1 : len;
    size_t n;

    if (!s->line_long) {
        if (s->line_len + take > SINK_LINE_BYTES_MAX)
            s->line_long = true;
        else {
            memcpy(s->line + s->line_len, buf, take);
            s->line_len += (uint32_t)take;
        }
    }
    if (!lf)
        return take;
    if (s->line_long) {
        bad_command(t, s, "500 5.5.6 Line too long");
    } else {
        n = s->line_len - 1;  /* without the LF */
        if (n && s->line[n - 1] == '\r')
            n--;
        command(t, s, s->line, n);
    }
    s->line_len = 0;
    s->line_long = false;
    return take;
}

/* ---- session life ---- */

/* arm_recv - receive into a provided buffer. */
static void arm_recv(struct thread *t, struct sess *s)
{
    s->recv_armed = true;
    s->ops++;
    loop_recv(&t->lp, s->fd, false, loop_ud(OP_RECV, s->slot, s->gen));
}

/* sess_pump - work through the held buffer as far as replies can be queued, send them,
 * and receive more when the buffer is used up. */
static void sess_pump(struct thread *t, struct sess *s)
{
    while (s->held && !s->closing && !s->close_after_send && s->st != SS_WAIT) {
        const char *buf = loop_buf(&t->lp, s->held_bid) + s->held_off;
        size_t len = s->held_len - s->held_off;
        if (out_room(s) < SINK_REPLY_BYTES_MAX) {
            flush(t, s);
            if (s->send_armed)
                return;  /* the send's completion frees the room and calls back */
        }
        s->held_off += (uint32_t)(s->st == SS_DATA   ? data_feed(t, s, buf, len)
                                  : s->st == SS_BDAT ? chunk_feed(t, s, buf, len)
                                                     : line_feed(t, s, buf, len));
        if (s->held_off >= s->held_len) {
            loop_buf_release(&t->lp, s->held_bid);
            s->held = false;
        }
    }
    if (s->closing)
        return;
    flush(t, s);
    if (s->close_after_send) {
        if (!s->send_armed)
            sess_close(t, s);
        return;
    }
    if (!s->held && !s->recv_armed && !s->starved)
        arm_recv(t, s);
}

/* sess_free - nothing is in flight and the socket is closed: the slot is free again. */
static void sess_free(struct thread *t, struct sess *s)
{
    if (s->held)
        loop_buf_release(&t->lp, s->held_bid);
    s->held = false;
    if (s->dump_cap > SINK_DUMP_FIRST_BYTES) {  /* a big message's buffer is not kept */
        free(s->dump);
        s->dump = NULL;
        s->dump_cap = 0;
    }
    s->fd = -1;
    t->free_slots[t->nfree++] = s->slot;
    t->live--;
}

/* sess_close - end the session: cancel what is in flight on its socket; the socket is
 * closed once nothing is, and the session freed when that close completes. A dump in
 * progress finishes first (file operations are not cancelled). */
static void sess_close(struct thread *t, struct sess *s)
{
    if (!s->closing) {
        s->closing = true;
        if (s->recv_armed || s->send_armed)
            loop_cancel_fd(&t->lp, s->fd);
        if (s->timer_armed)
            loop_cancel(&t->lp, loop_ud(OP_TIMER, s->slot, s->gen));
    }
    if (s->ops || s->fd < 0)
        return;
    s->ops++;
    loop_close(&t->lp, s->fd, loop_ud(OP_CLOSE, s->slot, s->gen));
}

/* sess_new - a session for the accepted socket fd, greeted; or the socket closed when the
 * table is full or the thread is stopping. */
static void sess_new(struct thread *t, int fd)
{
    struct sess *s;
    uint32_t slot;
    char greet[SINK_REPLY_BYTES_MAX];

    if (!t->nfree || t->stopping) {
        BENCH_ADD(t->st.refused, 1);
        loop_close(&t->lp, fd, LOOP_UD_NONE);
        return;
    }
    slot = t->free_slots[--t->nfree];
    s = t->sess[slot];
    if (!s) {
        s = rr_calloc(1, sizeof(*s));
        t->sess[slot] = s;
    }
    {
        char *dump = s->dump;  /* kept across sessions */
        size_t dump_cap = s->dump_cap;
        memset(s, 0, offsetof(struct sess, line));
        s->dump = dump;
        s->dump_cap = dump_cap;
    }
    s->slot = slot;
    s->gen = ++t->gen_next;
    s->fd = fd;
    s->dump_file = -1;
    s->st = SS_CMD;
    s->idle_deadline_ms = t->now_ms + opt.idle_ms;
    t->live++;
    BENCH_ADD(t->st.connections, 1);
    snprintf(greet, sizeof(greet), "220 %s ESMTP ringsink", opt.hostname);
    if (respond(t, s, CMD_GREETING, greet, SS_CMD) == V_DROPPED)
        return;
    sess_pump(t, s);
}

/* ---- completions ---- */

/* recv_done - a receive completed. */
static void recv_done(struct thread *t, struct sess *s, struct io_uring_cqe *cqe)
{
    s->recv_armed = false;
    s->ops--;
    if (cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        if (s->closing) {
            loop_buf_release(&t->lp, bid);
        } else {
            s->held = true;
            s->held_bid = bid;
            s->held_off = 0;
            s->held_len = (uint32_t)cqe->res;
            s->idle_deadline_ms = t->now_ms + opt.idle_ms;
        }
    } else if (cqe->res == -ENOBUFS && !s->closing) {
        s->starved = true;  /* retried when buffers come back; counts as an operation, so the
                               session is not freed while it is listed */
        s->ops++;
        s->starved_next = t->starved;
        t->starved = s;
        return;
    } else if (!s->closing) {
        sess_close(t, s);  /* the peer closed, reset, or the receive failed */
    }
    if (s->closing) {
        sess_close(t, s);
        return;
    }
    sess_pump(t, s);
}

/* send_done - a send of replies completed. */
static void send_done(struct thread *t, struct sess *s, int res)
{
    s->send_armed = false;
    s->ops--;
    if (s->closing) {
        sess_close(t, s);
        return;
    }
    if (res <= 0) {
        sess_close(t, s);
        return;
    }
    s->out_off += (uint32_t)res;
    s->out_inflight = 0;
    if (s->out_off == s->out_len) {
        s->out_off = s->out_len = 0;
    } else if (s->out_off > SINK_OUT_BYTES / 2) {
        memmove(s->out, s->out + s->out_off, s->out_len - s->out_off);
        s->out_len -= s->out_off;
        s->out_off = 0;
    }
    sess_pump(t, s);
}

/* complete - one completion of a session. */
static void complete(struct thread *t, unsigned op, uint32_t slot, uint32_t gen,
                     struct io_uring_cqe *cqe)
{
    struct sess *s = slot < t->nslots ? t->sess[slot] : NULL;

    if (!s || s->gen != gen) {  /* cannot happen: a slot is reused only when ops are 0 */
        if (op == OP_RECV)
            loop_cqe_buf_release(&t->lp, cqe);
        return;
    }
    switch (op) {
    case OP_RECV:
        recv_done(t, s, cqe);
        break;
    case OP_SEND:
        send_done(t, s, cqe->res);
        break;
    case OP_TIMER:
        s->timer_armed = false;
        s->ops--;
        if (s->closing)
            sess_close(t, s);
        else
            wait_done(t, s);
        break;
    case OP_DUMP_OPEN:
    case OP_DUMP_WRITE:
    case OP_DUMP_CLOSE:
        s->ops--;
        dump_step(t, s, op, cqe->res);
        break;
    case OP_CLOSE:
        s->ops--;
        sess_free(t, s);
        break;
    default:
        break;
    }
}

/* arm_accept - multishot accept on listening socket i. */
static void arm_accept(struct thread *t, unsigned i)
{
    struct io_uring_sqe *sqe = loop_sqe(&t->lp);

    io_uring_prep_multishot_accept(sqe, t->listen_fd[i], NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, loop_ud(OP_ACCEPT, i, 0));
    t->accepts_armed++;
}

/* arm_tick - the 1 s timer. */
static void arm_tick(struct thread *t)
{
    loop_timeout(&t->lp, &t->tick_ts, SINK_TICK_MS, loop_ud(OP_TICK, 0, 0));
    t->tick_armed = true;
}

/* arm_wake - wait for the main thread's stop. */
static void arm_wake(struct thread *t)
{
    struct io_uring_sqe *sqe = loop_sqe(&t->lp);

    io_uring_prep_read(sqe, t->wake_fd, &t->wake_val, sizeof(t->wake_val), 0);
    io_uring_sqe_set_data64(sqe, loop_ud(OP_WAKE, 0, 0));
}

/* retry_starved - receives that found no buffer try again. */
static void retry_starved(struct thread *t)
{
    struct sess *s = t->starved;

    t->starved = NULL;
    while (s) {
        struct sess *next = s->starved_next;
        s->starved = false;
        s->ops--;
        if (s->closing)
            sess_close(t, s);
        else
            sess_pump(t, s);
        s = next;
    }
}

/* tick - once a second: idle sessions are closed, paused accepts re-armed. */
static void tick(struct thread *t)
{
    for (uint32_t i = 0; i < t->nslots && t->live; i++) {
        struct sess *s = t->sess[i];
        if (!s || s->fd < 0 || s->closing || s->st == SS_WAIT ||
            t->now_ms < s->idle_deadline_ms)
            continue;
        if (out_room(s) >= SINK_REPLY_BYTES_MAX && !s->close_after_send) {
            reply(t, s, "421 4.4.2 Idle timeout, closing (ringsink)");
            s->close_after_send = true;
            s->idle_deadline_ms = t->now_ms + opt.idle_ms;  /* the reply gets one more period */
            sess_pump(t, s);
        } else {
            sess_close(t, s);
        }
    }
    for (unsigned i = 0; i < opt.nlisten; i++)
        if (t->accept_paused[i] && !t->stopping) {
            t->accept_paused[i] = false;
            arm_accept(t, i);
        }
    retry_starved(t);
}

/* begin_stop - no more connections; every session is closed. */
static void begin_stop(struct thread *t)
{
    if (t->stopping)
        return;
    t->stopping = true;
    for (unsigned i = 0; i < opt.nlisten; i++)
        loop_cancel(&t->lp, loop_ud(OP_ACCEPT, i, 0));
    if (t->tick_armed)
        loop_cancel(&t->lp, loop_ud(OP_TICK, 0, 0));
    for (uint32_t i = 0; i < t->nslots; i++)
        if (t->sess[i] && t->sess[i]->fd >= 0)
            sess_close(t, t->sess[i]);
}

/* dispatch - one completion to its handler (arg: the thread). */
static void dispatch(void *arg, struct io_uring_cqe *cqe)
{
    struct thread *t = arg;
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    unsigned op = ud_op(ud);
    uint32_t slot = ud_slot(ud);

    switch (op) {
    case OP_NONE:
        break;
    case OP_ACCEPT:
        if (cqe->res >= 0)
            sess_new(t, cqe->res);
        if (!(cqe->flags & IORING_CQE_F_MORE)) {
            t->accepts_armed--;
            if (!t->stopping && cqe->res != -ECANCELED) {
                if (cqe->res < 0)
                    t->accept_paused[slot] = true;  /* EMFILE and the like: at the tick */
                else
                    arm_accept(t, slot);
            }
        }
        break;
    case OP_TICK:
        t->tick_armed = false;
        if (!t->stopping) {
            tick(t);
            arm_tick(t);
        }
        break;
    case OP_WAKE:
        if (atomic_load(&stop_flag))
            begin_stop(t);
        else
            arm_wake(t);
        break;
    default:
        complete(t, op, slot, ud_gen(ud), cqe);
        break;
    }
}

/* thread_main - set up, then serve until stopped and every session is gone. */
static void *thread_main(void *arg)
{
    struct thread *t = arg;

    bench_pin(t->cpu);
    t->err = loop_init(&t->lp, SINK_BUF_COUNT, SINK_BUF_BYTES);
    pthread_barrier_wait(&start_barrier);
    if (t->err)
        goto out;
    t->now_ms = t->lp.now_ns / 1000000;
    for (unsigned i = 0; i < opt.nlisten; i++)
        arm_accept(t, i);
    arm_tick(t);
    arm_wake(t);
    for (;;) {
        if (t->stopping && !t->live && !t->accepts_armed && !t->tick_armed)
            break;
        loop_wait(&t->lp);
        t->now_ms = t->lp.now_ns / 1000000;
        loop_dispatch(&t->lp, dispatch, t);
        if (loop_buf_flush(&t->lp) && t->starved)
            retry_starved(t);
    }
    io_uring_submit(&t->lp.ring);
out:
    for (unsigned i = 0; i < opt.nlisten; i++)
        if (t->listen_fd[i] >= 0)
            close(t->listen_fd[i]);
    loop_fini(&t->lp);
    return NULL;
}

/* ---- set-up and the main thread ---- */

/* parse_fault - CMD:CODE:ODDS. */
static void parse_fault(const char *arg)
{
    char buf[128], *cmd, *code, *odds;
    struct fault f = { 0 };
    uint64_t c;
    unsigned i;

    if (opt.nfaults >= SINK_FAULTS_MAX)
        bench_die("at most %d --fail rules", SINK_FAULTS_MAX);
    snprintf(buf, sizeof(buf), "%s", arg);
    cmd = buf;
    code = strchr(cmd, ':');
    odds = code ? strchr(code + 1, ':') : NULL;
    if (!code || !odds)
        bench_die("--fail %s: want CMD:CODE:ODDS", arg);
    *code++ = '\0';
    *odds++ = '\0';
    for (i = 0; i < CMD_COUNT && strcmp(cmd, cmd_names[i]); i++)
        ;
    if (i == CMD_COUNT && !strcmp(cmd, "connect"))
        i = CMD_GREETING;
    if (i == CMD_COUNT)
        bench_die("--fail %s: CMD is greeting, mail, rcpt, data or dot", arg);
    f.cmd = (uint8_t)i;
    if (!strcmp(code, "drop"))
        f.code = FAULT_DROP;
    else if (bench_parse_u64(code, 400, 599, &c) && strlen(code) == 3)
        f.code = (uint16_t)c;
    else
        bench_die("--fail %s: CODE is 400..599 or drop", arg);
    if (!bench_parse_odds(odds, &f.odds))
        bench_die("--fail %s: ODDS is 0..1 or a percentage", arg);
    opt.faults[opt.nfaults++] = f;
}

/* parse_delay - CMD:MS. */
static void parse_delay(const char *arg)
{
    const char *colon = strchr(arg, ':');
    uint64_t ms;
    unsigned i;

    if (!colon)
        bench_die("--delay %s: want CMD:MS", arg);
    for (i = 0; i < CMD_COUNT; i++)
        if (strlen(cmd_names[i]) == (size_t)(colon - arg) &&
            !strncmp(arg, cmd_names[i], (size_t)(colon - arg)))
            break;
    if (i == CMD_COUNT)
        bench_die("--delay %s: CMD is greeting, mail, rcpt, data or dot", arg);
    if (!bench_parse_u64(colon + 1, 0, SINK_DELAY_MS_MAX, &ms))
        bench_die("--delay %s: MS is 0..%d", arg, SINK_DELAY_MS_MAX);
    opt.delay_ms[i] = (uint32_t)ms;
}

/* parse_listen - one or more HOST:PORT, comma separated. */
static void parse_listen(const char *arg)
{
    char buf[1024], *save = NULL, *tok;
    char host[BENCH_HOST_BYTES_MAX], err[512];

    snprintf(buf, sizeof(buf), "%s", arg);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (opt.nlisten >= SINK_LISTEN_MAX)
            bench_die("at most %d listening addresses", SINK_LISTEN_MAX);
        if (!bench_resolve(tok, &opt.listen[opt.nlisten], &opt.listen_len[opt.nlisten], host,
                           sizeof(host), err, sizeof(err)))
            bench_die("--listen %s", err);
        opt.nlisten++;
    }
}

/* parse_args - the command line into opt. */
static void parse_args(int argc, char **argv)
{
    uint64_t v;

    opt.max_size = SINK_SIZE_DEFAULT;
    opt.max_connections = SINK_CONNECTIONS_DEFAULT;
    opt.idle_ms = SINK_IDLE_MS_DEFAULT;
    opt.dump_fd = -1;
    snprintf(opt.hostname, sizeof(opt.hostname), "ringsink.invalid");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = true;

        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--json")) {
            opt.json = true;
            takes = false;
        } else if (!strcmp(a, "--no-chunking")) {
            opt.no_chunking = true;
            takes = false;
        } else if (!val) {
            bench_die("%s: missing value (or unknown option; see --help)", a);
        } else if (!strcmp(a, "--listen")) {
            parse_listen(val);
        } else if (!strcmp(a, "--threads")) {
            if (!bench_parse_u64(val, 1, SINK_THREADS_MAX, &v))
                bench_die("--threads: 1..%d", SINK_THREADS_MAX);
            opt.threads = (unsigned)v;
        } else if (!strcmp(a, "--dump")) {
            opt.dump_dir = val;
        } else if (!strcmp(a, "--fail")) {
            parse_fault(val);
        } else if (!strcmp(a, "--delay")) {
            parse_delay(val);
        } else if (!strcmp(a, "--hostname")) {
            if (!*val || strlen(val) >= sizeof(opt.hostname) || strpbrk(val, " \r\n"))
                bench_die("--hostname: a name without spaces, below %d bytes",
                          SINK_HOSTNAME_BYTES);
            snprintf(opt.hostname, sizeof(opt.hostname), "%s", val);
        } else if (!strcmp(a, "--max-size")) {
            if (!bench_parse_bytes(val, &opt.max_size) || !opt.max_size ||
                opt.max_size > (1ull << 40))
                bench_die("--max-size: BYTES with K/M/G, 1..1T");
        } else if (!strcmp(a, "--max-connections")) {
            if (!bench_parse_u64(val, 1, SINK_CONNECTIONS_MAX, &opt.max_connections))
                bench_die("--max-connections: 1..%d", SINK_CONNECTIONS_MAX);
        } else if (!strcmp(a, "--idle-timeout")) {
            if (!bench_parse_ms(val, &opt.idle_ms) || !opt.idle_ms)
                bench_die("--idle-timeout: a duration such as 300s");
        } else if (!strcmp(a, "--seed")) {
            if (!bench_parse_u64(val, 1, UINT64_MAX, &opt.seed))
                bench_die("--seed: a positive number");
        } else {
            bench_die("unknown option %s (see --help)", a);
        }
        if (takes)
            i++;
    }
    if (!opt.nlisten)
        bench_die("--listen HOST:PORT is required (see --help)");
}

/* open_listeners - one SO_REUSEPORT socket per address per thread. Port 0 takes the port the
 * first socket got, so every thread listens on the same one. */
static void open_listeners(void)
{
    int one = 1;

    for (unsigned a = 0; a < opt.nlisten; a++) {
        for (unsigned i = 0; i < opt.threads; i++) {
            struct sockaddr_storage *ss = &opt.listen[a];
            int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
            char text[BENCH_ADDR_TEXT_BYTES];

            if (fd < 0)
                bench_die("socket: %s", strerror(errno));
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            if (ss->ss_family == AF_INET6)
                setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
            bench_addr_text(ss, text, sizeof(text));
            if (bind(fd, (struct sockaddr *)ss, opt.listen_len[a]) < 0)
                bench_die("bind %s: %s", text, strerror(errno));
            if (listen(fd, SINK_BACKLOG) < 0)
                bench_die("listen %s: %s", text, strerror(errno));
            if (i == 0) {  /* port 0: the others take the port this one got */
                socklen_t len = opt.listen_len[a];
                getsockname(fd, (struct sockaddr *)ss, &len);
            }
            threads[i].listen_fd[a] = fd;
        }
    }
}

/* sum_stats - every thread's counts added up (the threads may be running). */
static void sum_stats(struct stats *sum)
{
    memset(sum, 0, sizeof(*sum));
    for (unsigned i = 0; i < opt.threads; i++) {
        struct stats *s = &threads[i].st;
        sum->connections += BENCH_GET(s->connections);
        sum->refused += BENCH_GET(s->refused);
        sum->messages += BENCH_GET(s->messages);
        sum->recipients += BENCH_GET(s->recipients);
        sum->bytes += BENCH_GET(s->bytes);
        sum->rcpt_commands += BENCH_GET(s->rcpt_commands);
        sum->faults += BENCH_GET(s->faults);
        sum->dumped += BENCH_GET(s->dumped);
        sum->dump_errors += BENCH_GET(s->dump_errors);
        sum->chunks += BENCH_GET(s->chunks);
        for (unsigned c = 0; c < BENCH_CODES; c++)
            sum->codes[c] += BENCH_GET(s->codes[c]);
    }
}

/* print_stats - the counts, as text or one JSON object, on stdout. */
static void print_stats(void)
{
    struct stats s;
    double secs = (double)(loop_clock_ns() - start_ns) / 1e9;

    sum_stats(&s);
    if (opt.json) {
        printf("{\"messages\":%llu,\"recipients\":%llu,\"bytes\":%llu,\"connections\":%llu,"
               "\"refused_connections\":%llu,\"rcpt_commands\":%llu,\"faults\":%llu,"
               "\"dumped\":%llu,\"dump_errors\":%llu,\"bdat_chunks\":%llu,\"seconds\":%.3f,",
               (unsigned long long)s.messages, (unsigned long long)s.recipients,
               (unsigned long long)s.bytes, (unsigned long long)s.connections,
               (unsigned long long)s.refused, (unsigned long long)s.rcpt_commands,
               (unsigned long long)s.faults, (unsigned long long)s.dumped,
               (unsigned long long)s.dump_errors, (unsigned long long)s.chunks, secs);
        bench_json_codes(stdout, "replies", s.codes);
        printf("}\n");
    } else {
        printf("ringsink: %.1f s  connections %llu  messages %llu  recipients %llu  bytes %llu\n",
               secs, (unsigned long long)s.connections, (unsigned long long)s.messages,
               (unsigned long long)s.recipients, (unsigned long long)s.bytes);
        printf("ringsink: rcpt commands %llu  bdat chunks %llu  faults %llu  refused "
               "connections %llu", (unsigned long long)s.rcpt_commands,
               (unsigned long long)s.chunks, (unsigned long long)s.faults,
               (unsigned long long)s.refused);
        if (opt.dump_dir)
            printf("  dumped %llu  dump errors %llu", (unsigned long long)s.dumped,
                   (unsigned long long)s.dump_errors);
        printf("\nringsink: replies ");
        bench_text_codes(stdout, s.codes);
        printf("\n");
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int cpus[BENCH_CPUS_MAX];
    unsigned ncpu;
    sigset_t set;
    int sig, err = 0;
    char ready[1024];
    size_t rlen;

    bench_prog = "ringsink";
    parse_args(argc, argv);
    ncpu = bench_cpus(cpus, BENCH_CPUS_MAX);
    if (!opt.threads)
        opt.threads = ncpu ? ncpu : 1;
    bench_raise_nofile();  /* a descriptor per connection, and one per dump being written */
    if (opt.dump_dir) {
        if (mkdir(opt.dump_dir, 0755) < 0 && errno != EEXIST)
            bench_die("--dump %s: %s", opt.dump_dir, strerror(errno));
        opt.dump_fd = open(opt.dump_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (opt.dump_fd < 0)
            bench_die("--dump %s: %s", opt.dump_dir, strerror(errno));
    }
    threads = rr_calloc(opt.threads, sizeof(*threads));
    for (unsigned i = 0; i < opt.threads; i++) {
        struct thread *t = &threads[i];
        uint32_t per = (uint32_t)((opt.max_connections + opt.threads - 1) / opt.threads);
        t->id = i;
        t->cpu = ncpu && opt.threads > 1 ? cpus[i % ncpu] : -1;
        t->nslots = per;
        t->sess = rr_calloc(per, sizeof(*t->sess));
        t->free_slots = rr_calloc(per, sizeof(*t->free_slots));
        for (uint32_t k = 0; k < per; k++)
            t->free_slots[k] = per - 1 - k;
        t->nfree = per;
        t->rng = opt.seed ? opt.seed * 0x9E3779B97F4A7C15ull + i + 1 : bench_seed(i);
        if (!t->rng)
            t->rng = 1;
        for (unsigned a = 0; a < SINK_LISTEN_MAX; a++)
            t->listen_fd[a] = -1;
        t->wake_fd = eventfd(0, EFD_CLOEXEC);
        if (t->wake_fd < 0)
            bench_die("eventfd: %s", strerror(errno));
    }
    open_listeners();

    /* Signals are taken by the main thread only (sigwait); the threads inherit the mask. */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_barrier_init(&start_barrier, NULL, opt.threads + 1);
    for (unsigned i = 0; i < opt.threads; i++)
        if (pthread_create(&threads[i].th, NULL, thread_main, &threads[i]) != 0)
            bench_die("cannot start a thread");
    pthread_barrier_wait(&start_barrier);
    start_ns = loop_clock_ns();
    for (unsigned i = 0; i < opt.threads; i++)
        if (threads[i].err && !err)
            err = threads[i].err;
    if (err) {
        fprintf(stderr, "ringsink: cannot set up a ring: %s\n", strerror(-err));
        atomic_store(&stop_flag, true);
    } else {
        rlen = (size_t)snprintf(ready, sizeof(ready), "ringsink: ready listen=");
        for (unsigned a = 0; a < opt.nlisten && rlen < sizeof(ready) - BENCH_ADDR_TEXT_BYTES;
             a++) {
            char text[BENCH_ADDR_TEXT_BYTES];
            bench_addr_text(&opt.listen[a], text, sizeof(text));
            rlen += (size_t)snprintf(ready + rlen, sizeof(ready) - rlen, "%s%s", a ? "," : "",
                                     text);
        }
        fprintf(stderr, "%s threads=%u\n", ready, opt.threads);
        for (;;) {
            if (sigwait(&set, &sig) != 0)
                continue;
            if (sig == SIGUSR1) {
                print_stats();
                continue;
            }
            break;
        }
        atomic_store(&stop_flag, true);
    }
    for (unsigned i = 0; i < opt.threads; i++) {
        uint64_t one = 1;
        if (write(threads[i].wake_fd, &one, sizeof(one)) < 0)
            fprintf(stderr, "ringsink: cannot wake a thread: %s\n", strerror(errno));
    }
    for (unsigned i = 0; i < opt.threads; i++)
        pthread_join(threads[i].th, NULL);
    if (!err)
        print_stats();
    for (unsigned i = 0; i < opt.threads; i++) {
        struct thread *t = &threads[i];
        for (uint32_t k = 0; k < t->nslots; k++)
            if (t->sess[k]) {
                free(t->sess[k]->dump);
                free(t->sess[k]);
            }
        free(t->sess);
        free(t->free_slots);
        close(t->wake_fd);
    }
    free(threads);
    if (opt.dump_fd >= 0)
        close(opt.dump_fd);
    return err ? 1 : 0;
}
