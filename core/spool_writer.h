/*
 * spool_writer.h - appending messages to a worker's spool segment through its ring.
 *
 * A session starts a message (spool_msg_begin), hands over content as it arrives
 * (spool_msg_write: iovecs into a receive buffer, which stays held until the write is done),
 * and commits it with its envelope (spool_msg_commit, usually in the same write as the last
 * content). Once every write of the message has completed it joins the segment's next group
 * fdatasync, after which the message's done() is called with 0 (durable: send 250) or
 * -errno (send 451/452). Writes may complete in any order: recovery checks each record.
 * Nothing here blocks: open, write, fsync and the directory sync are ring operations.
 */
#ifndef RR_SPOOL_WRITER_H
#define RR_SPOOL_WRITER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/engine.h"
#include "core/spool.h"

#define SPOOL_SEGS_MAX        8     /* segments open at once per worker */
#define SPOOL_WOPS_MAX        2048  /* spool writes in flight per worker */
#define SPOOL_WOP_IOV_MAX     32    /* payload iovecs in one write */
#define SPOOL_BATCHES         8     /* combined writes in flight per worker */
#define SPOOL_BATCH_WOPS      64    /* writes combined into one */
#define SPOOL_BATCH_IOV       512   /* iovecs of a combined write (IOV_MAX is 1024) */
#define SPOOL_GROUP_MAX       256   /* messages waiting that start a delayed fsync at once */
#define SPOOL_CHUNKS_INLINE   4     /* content pieces kept without an allocation */
#define SPOOL_IDLE_ROTATE_MS  10000 /* a segment idle this long is closed for new messages, so
                                       that it can be removed once its messages are delivered */

struct spool_seg;

/* A message being written; embedded in its owner's transaction. */
struct spool_msg_w {
    uint64_t qid;                 /* assigned by spool_msg_begin */
    struct spool_seg *seg;        /* segment it goes to */
    uint32_t chunks;              /* DATA records submitted */
    uint64_t bytes;               /* content bytes submitted */
    uint32_t inflight;            /* writes not yet completed */
    int err;                      /* first failure, -errno */
    bool committing;              /* spool_msg_commit called */
    bool aborted;                 /* owner gave up: no commit, done() when writes drain */
    const char *envelope;         /* commit payload, owned by the caller until done() */
    uint32_t envelope_len;
    struct spool_msg_w *next;     /* in a segment's commit list */
    uint64_t seg_id;              /* id of seg */
    uint64_t status_qid;          /* a STATUS record: the message it is about (else 0) */
    uint8_t status_outcome;       /* a STATUS record: enum spool_outcome */
    struct spool_chunk *chunk_v;  /* where each DATA record's payload went: chunk_inline, or
                                     an allocation once more are needed (spool_msg_release) */
    uint32_t chunk_cap;           /* entries chunk_v can take; 0 = chunk_inline */
    struct spool_chunk chunk_inline[SPOOL_CHUNKS_INLINE];
    void (*done)(struct worker *w, struct spool_msg_w *m, int err); /* called exactly once */
};

/* spool_msg_chunks - where the content of m went (valid once it is committed). */
static inline const struct spool_chunk *spool_msg_chunks(const struct spool_msg_w *m)
{
    return m->chunk_cap ? m->chunk_v : m->chunk_inline;
}

/* spool_msg_release - free what m allocated (after done(), before m's memory is reused). */
void spool_msg_release(struct spool_msg_w *m);

/* spool_msg_begin_in - begin m (a STATUS record to come) in segment seg_id rather than the
 * current one: 0, or -ENOENT when this writer no longer has it open (the queue appends to it
 * itself then: see queue_segment_retired). */
int spool_msg_begin_in(struct worker *w, struct spool_msg_w *m, uint64_t seg_id);

/* spool_msg_status - write a STATUS record (see spool.h) about message qid instead of a
 * message: m was begun with spool_msg_begin and gets no content. payload (len bytes, owned
 * by the caller until done()) follows the record header. done() once the record is durable,
 * as for a message. The caller checked spool_writes_available(). */
void spool_msg_status(struct worker *w, struct spool_msg_w *m, uint64_t qid,
                      enum spool_outcome outcome, const void *payload, uint32_t len);

/* spool_worker_tick - once a second: close an idle segment for new messages. */
void spool_worker_tick(struct worker *w);

/* spool_worker_init - open this worker's first segment (blocking: set-up time). 0 or -errno. */
int spool_worker_init(struct worker *w);

/* spool_worker_fini - close what is left (after the loop ended). */
void spool_worker_fini(struct worker *w);

/* spool_worker_run_deferred - call the done() of messages that failed before any write
 * (at the end of each loop pass, never inside a session's input processing). */
void spool_worker_run_deferred(struct worker *w);

/* spool_worker_busy - whether spool operations are still in flight. */
bool spool_worker_busy(struct worker *w);

/* spool_writes_available - whether n more writes can be submitted now. */
bool spool_writes_available(struct worker *w, unsigned n);

/* spool_msg_begin - start a message in the current segment; assigns m->qid. 0 or -errno. */
int spool_msg_begin(struct worker *w, struct spool_msg_w *m);

/* spool_msg_write - append iov[0..n) (pointing into buffer bid, or static memory when bid
 * is ENGINE_BUF_NONE) as one DATA record. n <= SPOOL_WOP_IOV_MAX; the caller checked
 * spool_writes_available(). */
void spool_msg_write(struct worker *w, struct spool_msg_w *m, uint16_t bid,
                     const struct iovec *iov, unsigned n);

/* spool_msg_commit - write the last content iov[0..n) (n may be 0; from buffer bid or static
 * memory) and the COMMIT record with the envelope in one write; once every write of the
 * message is done it joins the next group fdatasync, then done() is called. */
void spool_msg_commit(struct worker *w, struct spool_msg_w *m, uint16_t bid,
                      const struct iovec *iov, unsigned n, const char *env, uint32_t len);

/* spool_msg_abort - give the message up. Returns true when it is finished now (the caller
 * may free it); false when writes are in flight (done() comes later with -ECANCELED). */
bool spool_msg_abort(struct worker *w, struct spool_msg_w *m);

/* spool_worker_flush - submit the writes combined during this loop pass; called before the
 * ring is entered. */
void spool_worker_flush(struct worker *w);

/* spool_complete - completion of an OP_SPOOL_* operation. */
void spool_complete(struct worker *w, enum engine_op op, uint32_t slot, uint32_t gen, int res);

#endif
