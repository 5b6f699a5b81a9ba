/*
 * loop.h - the small io_uring loop of the bench tools (ringbench, ringsink): one ring per
 * thread, a provided-buffer ring for receives, and the user_data convention of the relay's
 * engine (core/engine.h): {op:8, slot:24, gen:32}.
 *
 * The daemon's engine is tied to the relay (spool, queue, configuration); the bench tools
 * are separate programs with their own few operations, so they share this instead: ring
 * set-up with the same flags and fallback, receive buffers handed back in one batch per loop
 * pass, the clock, the socket operations both make the same way (a receive into the
 * provided buffers, a cancel of everything on a socket, a close, a timer) and the loop pass
 * itself. Everything here belongs to the one thread that owns the loop.
 *
 * Operation 0 is "none" in both tools: LOOP_UD_NONE marks an operation whose completion
 * nobody waits for (a cancel, the close of a socket never used); dispatchers drop it.
 */
#ifndef RB_LOOP_H
#define RB_LOOP_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#define LOOP_SQ_ENTRIES     4096   /* submission queue entries per thread */
#define LOOP_CQ_ENTRIES     16384  /* completion queue entries per thread */
#define LOOP_BUF_GROUP      0      /* the provided-buffer group of every receive */
#define LOOP_UD_NONE        0      /* user_data of op 0: a completion nobody waits for */

struct loop {
    struct io_uring ring;         /* the thread's ring */
    bool ring_ok;                 /* ring initialised */
    struct io_uring_buf_ring *br; /* provided-buffer ring, group LOOP_BUF_GROUP */
    char *buf_base;               /* buf_count * buf_bytes bytes */
    unsigned buf_count;           /* buffers (a power of 2) */
    unsigned buf_bytes;           /* bytes of one buffer */
    unsigned returned;            /* buffers given back since the last flush */
    uint64_t now_ns;              /* monotonic clock, refreshed once per loop pass */
};

/* loop_ud - pack an operation's name into user_data. */
static inline uint64_t loop_ud(unsigned op, uint32_t slot, uint32_t gen)
{
    return (uint64_t)(op & 0xff) << 56 | (uint64_t)(slot & 0xffffff) << 32 | gen;
}
static inline unsigned ud_op(uint64_t ud) { return (unsigned)(ud >> 56); }
static inline uint32_t ud_slot(uint64_t ud) { return (uint32_t)(ud >> 32) & 0xffffff; }
static inline uint32_t ud_gen(uint64_t ud) { return (uint32_t)ud; }

/* loop_init - a ring and buf_count (power of 2) receive buffers of buf_bytes; 0 or -errno. */
int loop_init(struct loop *l, unsigned buf_count, unsigned buf_bytes);

/* loop_fini - tear the ring and the buffers down (nothing may be in flight any more). */
void loop_fini(struct loop *l);

/* loop_sqe - a submission entry, handing the queue to the kernel first when it is full. */
struct io_uring_sqe *loop_sqe(struct loop *l);

/* loop_buf - the bytes of buffer bid. */
static inline char *loop_buf(const struct loop *l, unsigned bid)
{
    return l->buf_base + (size_t)bid * l->buf_bytes;
}

/* loop_buf_release - give buffer bid back (made visible to the kernel by loop_buf_flush). */
void loop_buf_release(struct loop *l, unsigned bid);

/* loop_buf_flush - publish the buffers given back in this pass; true if there were any. */
bool loop_buf_flush(struct loop *l);

/* loop_clock_ns - monotonic nanoseconds (CLOCK_MONOTONIC, the clock of ring timeouts). */
uint64_t loop_clock_ns(void);

/* loop_recv - a receive on fd into a buffer of LOOP_BUF_GROUP, one-shot or multishot (armed
 * until it completes without IORING_CQE_F_MORE). */
void loop_recv(struct loop *l, int fd, bool multishot, uint64_t ud);

/* loop_cancel_fd - cancel every operation in flight on fd (each completes, -ECANCELED or
 * done, with its own user_data; the cancel's own completion is LOOP_UD_NONE). */
void loop_cancel_fd(struct loop *l, int fd);

/* loop_cancel - cancel the operation whose user_data is ud (completion LOOP_UD_NONE). */
void loop_cancel(struct loop *l, uint64_t ud);

/* loop_close - close fd on the ring; ud names the completion (LOOP_UD_NONE: nobody waits). */
void loop_close(struct loop *l, int fd, uint64_t ud);

/* loop_timeout - a timer of ms milliseconds from now. ts is the caller's and must stay put
 * until the completion (the kernel reads it at submission, liburing only points at it). */
void loop_timeout(struct loop *l, struct __kernel_timespec *ts, uint64_t ms, uint64_t ud);

/* loop_cqe_buf_release - give back the provided buffer a completion carries, if any (for a
 * receive completion no session takes any more). */
static inline void loop_cqe_buf_release(struct loop *l, const struct io_uring_cqe *cqe)
{
    if (cqe->flags & IORING_CQE_F_BUFFER)
        loop_buf_release(l, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
}

/* loop_wait - submit what is queued, wait for at least one completion, refresh now_ns. */
void loop_wait(struct loop *l);

/* loop_dispatch - hand every completion ready now to fn(ctx, cqe), in order, then mark them
 * all seen; returns how many. Inline, so that fn is a direct call in each tool's loop. */
static inline unsigned loop_dispatch(struct loop *l,
                                     void (*fn)(void *ctx, struct io_uring_cqe *cqe), void *ctx)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;

    io_uring_for_each_cqe(&l->ring, head, cqe) {
        fn(ctx, cqe);
        n++;
    }
    io_uring_cq_advance(&l->ring, n);
    return n;
}

#endif
