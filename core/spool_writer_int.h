/*
 * spool_writer_int.h - what the spool writer's two files share: the segment, write slot,
 * batch and per-worker state, and the calls between them. core/spool_writer.c owns the
 * segments, the group commit and the public calls of core/spool_writer.h;
 * core/spool_wop.c builds the records of a write and submits writes, combined per loop pass.
 * Private to those two.
 */
#ifndef RR_SPOOL_WRITER_INT_H
#define RR_SPOOL_WRITER_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/engine.h"
#include "core/spool.h"
#include "core/spool_writer.h"

enum seg_state { SEG_FREE, SEG_OPENING, SEG_READY, SEG_RETIRED, SEG_BROKEN };

struct spool_seg {
    uint32_t slot;                /* index in spool_worker.segs */
    uint32_t gen;                 /* bumped at each use of the slot */
    enum seg_state state;
    uint64_t id;                  /* file name */
    int fd;                       /* open for writing, -1 when closed */
    uint32_t key;                 /* record CRC seed */
    uint64_t write_off;           /* next free byte */
    uint32_t msgs_active;         /* messages begun and not yet done */
    uint32_t writes_inflight;     /* writes (data or commit) not yet completed */
    bool fsync_inflight;          /* a group fdatasync is running */
    bool delay_armed;             /* a commit-delay timeout is running */
    bool commit_due;              /* without a delay: fsync at the end of this loop pass */
    bool announced;               /* the queue was told of it (queue_segment_ready) */
    struct spool_batch *open;     /* writes of this pass not yet submitted, or NULL */
    uint64_t last_write_ms;       /* monotonic time of the last write submitted */
    uint32_t wait_count;          /* messages on the wait list */
    struct __kernel_timespec delay_ts; /* commit delay */
    struct spool_msg_w *wait_head, *wait_tail; /* committed, waiting for the next fsync */
    struct spool_msg_w *sync_list;/* covered by the fsync in flight */
    struct spool_seg_header header; /* written at offset 0 */
    char name[32];                /* file name; the open reads it after submission */
};

struct spool_wop {
    uint32_t gen;                 /* bumped at each use */
    uint16_t bid;                 /* receive buffer held, ENGINE_BUF_NONE if none */
    bool commit;                  /* COMMIT record (else DATA) */
    uint32_t data_len;            /* payload of the DATA record it starts with; UINT32_MAX
                                     when it holds none */
    uint32_t len;                 /* bytes the write must put down */
    struct spool_msg_w *m;        /* message it belongs to */
    struct spool_seg *seg;        /* segment written */
    struct spool_rec rec;         /* first record header (DATA, or the COMMIT) */
    struct spool_rec rec2;        /* DATA record written together with a COMMIT */
    unsigned iov_count;           /* entries of iov in use */
    struct iovec iov[SPOOL_WOP_IOV_MAX + 6]; /* per record: header, payload, padding */
};

/* Writes of one segment made in one loop pass, submitted together. Any one write fits. */
_Static_assert(SPOOL_WOP_IOV_MAX + 6 <= SPOOL_BATCH_IOV, "a write must fit in a batch");
struct spool_batch {
    uint32_t gen;                 /* bumped at each use */
    uint64_t off;                 /* where the first write starts */
    uint32_t count;               /* writes in it */
    unsigned iov_count;           /* entries of iov in use */
    uint32_t wops[SPOOL_BATCH_WOPS]; /* its writes, in segment order */
    struct iovec iov[SPOOL_BATCH_IOV];
};

struct spool_worker {
    struct spool_seg segs[SPOOL_SEGS_MAX];
    struct spool_seg *cur;        /* new messages go here */
    struct spool_seg *next;       /* being prepared or ready, NULL if none */
    struct spool_wop *wops;       /* SPOOL_WOPS_MAX write slots */
    uint32_t *wop_free;           /* free slot stack */
    uint32_t wop_free_count;
    struct spool_batch *batches;  /* SPOOL_BATCHES combined writes */
    uint32_t batch_free[SPOOL_BATCHES]; /* free batch stack */
    uint32_t batch_free_count;
    uint32_t batches_open;        /* segments with an open batch */
    uint32_t ops_inflight;        /* everything submitted and not completed */
    struct spool_msg_w *deferred; /* failed before any write: done() at the end of the pass */
    bool commit_due;              /* some segment has commit_due set */
    uint64_t id_ms;               /* logical clock of the last id handed out */
    uint32_t id_seq;              /* ids handed out within id_ms */
};

/* spool_wop_get - a free write slot for m, holding receive buffer bid (the caller checked
 * spool_writes_available()). */
struct spool_wop *spool_wop_get(struct worker *w, struct spool_msg_w *m, uint16_t bid);

/* spool_wop_data - a DATA record of m with payload iov[0..n) into write o, headed by rec. */
void spool_wop_data(struct spool_wop *o, struct spool_msg_w *m, struct spool_rec *rec,
                    const struct iovec *iov, unsigned n);

/* spool_wop_record - append one sealed record (header, payload iovecs, padding) to o. */
void spool_wop_record(struct spool_wop *o, struct spool_rec *rec, uint32_t key,
                      const struct iovec *payload, unsigned n);

/* spool_wop_submit - reserve o's range of its segment and send it on its way. */
void spool_wop_submit(struct worker *w, struct spool_wop *o);

/* spool_batch_done - a combined write completed with res. */
void spool_batch_done(struct worker *w, struct spool_batch *b, int res);

/* spool_write_done - one write completed with res (spool_writer.c). */
void spool_write_done(struct worker *w, struct spool_wop *o, int res);

#endif
