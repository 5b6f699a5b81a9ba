/*
 * engine.h - worker threads, one io_uring each, and what runs on them.
 *
 * A worker owns a ring, a provided-buffer ring for receives, its listening sockets (one
 * SO_REUSEPORT socket per listen address), its sessions, its spool segments, its queue and
 * outbound connections, and its metrics shard. Nothing is shared between workers on the
 * per-message path; the only cross-thread traffic is the configuration pointer (read at a
 * reload), a wake-up eventfd, the ringctl mailbox (core/control_job.c) and the password
 * checks lent to the auth pool, which come back through an eventfd of their own
 * (core/auth_pool.h, OP_AUTH_DONE).
 *
 * Every operation in flight carries user_data = {op:8, slot:24, gen:32}: op picks the handler,
 * slot the object (session, spool write, segment), gen rejects completions that arrive after
 * the object was freed and its slot reused.
 */
#ifndef RR_ENGINE_H
#define RR_ENGINE_H

#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/metrics.h"

#define ENGINE_RING_ENTRIES     4096   /* submission queue entries per worker */
#define ENGINE_CQ_ENTRIES       16384  /* completion queue entries per worker */
#define ENGINE_BUF_COUNT        2048   /* provided receive buffers per worker (power of 2) */
#define ENGINE_BUF_BYTES        8192   /* bytes of one receive buffer */
#define ENGINE_LOCAL_BUF_COUNT  1024   /* buffers the worker fills itself (TLS plaintext);
                                          ids ENGINE_BUF_COUNT.. after the provided ones */
#define ENGINE_BUF_NONE         0xffff /* "no buffer" in a buffer list */
#define ENGINE_TICK_MS          1000   /* timer wheel resolution */
#define ENGINE_WHEEL_SLOTS      64     /* timer wheel slots (seconds) */
#define ENGINE_LISTEN_MAX       (CONFIG_LISTENERS_MAX * CONFIG_ADDRS_MAX)

enum engine_op {
    OP_NONE = 0,      /* completion nobody waits for (close of a socket, cancels) */
    OP_ACCEPT,        /* slot = listening socket index */
    OP_RECV,          /* slot = session */
    OP_SEND,          /* slot = session */
    OP_SHUTDOWN,      /* slot = session */
    OP_GREET_TIMER,   /* slot = session */
    OP_TICK,          /* the worker's 1 s timer */
    OP_WAKE,          /* eventfd read: reload or stop */
    OP_SPOOL_WRITE,   /* slot = spool write */
    OP_SPOOL_BATCH,   /* slot = combined spool write */
    OP_SPOOL_FSYNC,   /* slot = segment */
    OP_SPOOL_OPEN,    /* slot = segment */
    OP_SPOOL_HEADER,  /* slot = segment */
    OP_SPOOL_DIRSYNC, /* slot = segment */
    OP_SPOOL_DELAY,   /* slot = segment: commit delay over */
    OP_HTTP_ACCEPT,   /* metrics listener */
    OP_HTTP_RECV,     /* slot = http client */
    OP_HTTP_SEND,     /* slot = http client */
    OP_DNS_POLL,      /* slot = resolver socket: readable or writable */
    OP_DNS_TIMER,     /* the resolver's retransmit timeout */
    OP_OUT_CONNECT,   /* slot = outbound connection */
    OP_OUT_RECV,      /* slot = outbound connection */
    OP_OUT_SEND,      /* slot = outbound connection */
    OP_OUT_READ,      /* slot = outbound connection: message content from the spool */
    OP_OUT_CLOSE,     /* slot = outbound connection: its socket is closed */
    OP_QUEUE_READ,    /* slot = bounce being built: original headers from the spool */
    OP_QUEUE_UNLINK,  /* slot = queue segment: its file is removed */
    OP_QUEUE_DIRSYNC, /* the spool directory is synced after removals */
    OP_QUEUE_APPEND,  /* slot = appending segment: outcome records written and synced */
    OP_AUTH_DONE,     /* the worker's auth-pool eventfd: slot 0 = read, 1 = poll */
    OP_COUNT
};

/* engine_ud - pack an operation's name into user_data. */
static inline uint64_t engine_ud(enum engine_op op, uint32_t slot, uint32_t gen)
{
    return (uint64_t)op << 56 | (uint64_t)(slot & 0xffffff) << 32 | gen;
}
static inline enum engine_op ud_op(uint64_t ud) { return (enum engine_op)(ud >> 56); }
static inline uint32_t ud_slot(uint64_t ud) { return (uint32_t)(ud >> 32) & 0xffffff; }
static inline uint32_t ud_gen(uint64_t ud) { return (uint32_t)ud; }

/* Bookkeeping of one provided receive buffer, indexed by buffer id. */
struct engine_buf {
    uint16_t next;                /* next buffer in the owning session's input list */
    uint16_t off;                 /* bytes of it consumed */
    uint16_t len;                 /* bytes received into it */
    uint16_t refs;                /* spool writes in flight that point into it */
    bool queued;                  /* still in a session's input list */
};

/* An intrusive timer: sessions embed one and sit in the wheel slot of their deadline. */
struct worker;
struct engine_timer {
    struct engine_timer *next, *prev; /* wheel slot list; NULL when not armed */
    uint64_t deadline_ms;         /* monotonic time it fires */
    void (*fire)(struct worker *w, struct engine_timer *t); /* called once when it fires */
};

struct conn;
struct spool_worker;
struct http_server;
struct dns_worker;
struct queue;
struct queue_recovered;
struct ctl_mailbox;
struct notify_worker;

struct worker {
    unsigned id;                  /* 0 .. workers-1 */
    int cpu;                      /* CPU it is pinned to, -1 if none */
    pthread_t thread;
    struct io_uring ring;
    bool ring_ok;                 /* ring initialised */

    struct io_uring_buf_ring *br; /* provided-buffer ring, group 0 */
    char *buf_base;               /* ENGINE_BUF_COUNT * ENGINE_BUF_BYTES bytes */
    struct engine_buf bufs[ENGINE_BUF_COUNT + ENGINE_LOCAL_BUF_COUNT];
    unsigned bufs_returned;       /* buffers added since the last advance */
    uint16_t local_free[ENGINE_LOCAL_BUF_COUNT]; /* free local buffer ids (a stack) */
    unsigned local_free_count;
    unsigned local_returned;      /* local buffers freed in this loop pass */
    unsigned bufs_out;            /* buffers held by sessions or spool writes */
    unsigned spool_slots_freed;   /* spool write slots freed in this loop pass */

    int listen_fd[ENGINE_LISTEN_MAX];   /* listening sockets of this worker, -1 when closed */
    uint8_t listen_listener[ENGINE_LISTEN_MAX]; /* index of the [listener] it belongs to */
    unsigned listen_count;
    bool accepting;               /* accepts armed */
    unsigned accepts_armed;       /* multishot accepts in flight */
    bool listen_paused[ENGINE_LISTEN_MAX]; /* accept stopped until the next tick (EMFILE...) */
    uint64_t accept_error_second; /* last second an accept error was logged */

    struct conn **conns;          /* session table, connections_max slots */
    uint32_t *conn_free;          /* free slot stack */
    uint32_t conn_free_count;
    uint32_t conn_count;          /* sessions alive, zombies included */
    uint32_t conn_slots;          /* size of the table */
    uint32_t conn_gen_next;       /* generation for the next session */
    struct conn *starved;         /* sessions whose receive stopped for lack of buffers */

    int wake_fd;                  /* eventfd the main thread writes to */
    uint64_t wake_value;          /* read target of the pending OP_WAKE */
    uint64_t auth_value;          /* read target of the pending OP_AUTH_DONE */
    uint64_t cfg_gen;             /* configuration generation in use */
    const struct rr_config *cfg;  /* configuration in use (published by main) */

    struct engine_timer wheel[ENGINE_WHEEL_SLOTS]; /* list heads */
    uint64_t now_ms;              /* monotonic clock, refreshed every loop */
    uint64_t now_ns;
    struct __kernel_timespec tick_ts;

    struct metrics *m;            /* this worker's shard */
    struct spool_worker *spool;   /* spool segments and writes */
    struct http_server *http;     /* /metrics responder (worker 0 only) */
    struct dns_worker *dns;       /* c-ares channel on this ring */
    struct queue *queue;          /* messages this worker delivers, outbound connections */
    struct ctl_mailbox *ctl;      /* ringctl requests handed over by the main thread */
    struct notify_worker *notify; /* relaying notices being made (core/notify.c), made at
                                     the first one */

    bool stopping;                /* SIGTERM seen: stop accepting, drain */
    uint64_t stop_deadline_ms;    /* sessions still open then are closed */
    bool done;                    /* loop finished */
    int exit_error;               /* set-up failure, -errno */
};

/* Shared state of the process: read by workers, written by the main thread. */
/* Read-mostly: workers read cfg_gen every loop pass and spool_free_bytes at every MAIL; the
 * main thread writes them rarely. Each sits on its own cache line. */
struct engine_shared {
    struct worker *workers;       /* workers[0..count) */
    unsigned count;
    int spool_dir_fd;             /* O_DIRECTORY fd of spool_dir */
    struct queue_recovered *recovered; /* the spool read at start-up, shared out by the
                                     workers at set-up, freed once they run */
    _Alignas(RR_CACHELINE) const struct rr_config *_Atomic cfg; /* newest configuration */
    _Atomic uint64_t cfg_gen;     /* bumped on every publish */
    _Atomic bool stop;            /* SIGTERM */
    _Alignas(RR_CACHELINE) _Atomic uint64_t spool_free_bytes; /* refreshed each second */
};

extern struct engine_shared engine;

/* engine_sqe - a submission entry, flushing the queue to the kernel when it is full. */
struct io_uring_sqe *engine_sqe(struct worker *w);

/* engine_buf_ptr - the bytes of buffer bid. */
static inline char *engine_buf_ptr(struct worker *w, uint16_t bid)
{
    return w->buf_base + (size_t)bid * ENGINE_BUF_BYTES;
}

/* engine_buf_release - give buffer bid back: to the kernel (batched until the loop's end),
 * or a local buffer to the worker's free stack. */
void engine_buf_release(struct worker *w, uint16_t bid);

/* engine_local_buf - take a local buffer (same size and bookkeeping as a received one, and
 * released the same way), or ENGINE_BUF_NONE when all are in use. */
uint16_t engine_local_buf(struct worker *w);

/* engine_timer_set - (re)arm t to fire at deadline_ms; 0 disarms. */
void engine_timer_set(struct worker *w, struct engine_timer *t, uint64_t deadline_ms);

/* engine_assign_cpus - choose each worker's CPU (before the listeners are opened). */
void engine_assign_cpus(struct engine_shared *e);

/* engine_start - set up and start one thread per worker; returns 0 or -errno. */
int engine_start(struct engine_shared *e, const struct rr_config *cfg, unsigned count);

/* engine_go - let the workers run (call after engine_start and the privilege drop). */
void engine_go(struct engine_shared *e);

/* engine_wake - tell every worker to look at the shared state (reload, stop). */
void engine_wake(struct engine_shared *e);

/* engine_join - wait for every worker to finish; returns the first error. */
int engine_join(struct engine_shared *e);

/* engine_now_ms - monotonic milliseconds. */
uint64_t engine_now_ms(void);

#endif
