/*
 * spool_writer.c - a worker's side of the spool: segments, record writes, group commit.
 *
 * Functions: spool_worker_init(), spool_msg_begin(), spool_msg_write(), spool_msg_commit(),
 * spool_msg_abort(), spool_complete() and the small helpers around them.
 *
 * Life of a message: begin binds it to the current segment and gives it a queue id. Each
 * write reserves the next aligned range of the segment (a plain counter: the segment
 * belongs to this worker alone) as {record header, payload iovecs, padding}. Commit writes
 * the last piece of content and the COMMIT record in one write (a small message is thus
 * one write in all); when every write of the message has completed, the message goes on
 * the segment's wait list.
 *
 * The writes of one loop pass leave together (core/spool_wop.c).
 *
 * Records need not land in order: the fsync is what orders them, and it is only issued for
 * completed writes. At most one fdatasync per segment is in flight; when it completes,
 * everything it covered is durable and gets done(0), and the messages that queued up
 * meanwhile go into the next one. Under load one fsync thus serves many messages (group
 * commit).
 *
 * Segments are prepared ahead: when the current one is half full, the next is opened,
 * its header written and synced, and the directory synced, all through the ring; when the
 * current one is full and the next is ready, new messages go to the next. Old segments
 * close once their last message is done.
 *
 * SECURITY: peer bytes are only ever payload (records are built in core/spool_wop.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/crc32c.h"
#include "core/log.h"
#include "core/queue.h"
#include "core/spool_writer_int.h"

/* wall_ms - real-time milliseconds. */
static uint64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* next_id - a process-unique, restart-unique id: ms:44 | worker:6 | seq:14. When 16384 ids
 * are used within one ms the logical clock runs ahead of the wall clock by one ms. */
static uint64_t next_id(struct worker *w)
{
    struct spool_worker *s = w->spool;
    uint64_t now = wall_ms();

    if (now > s->id_ms) {
        s->id_ms = now;
        s->id_seq = 0;
    } else if (s->id_seq >= (1u << 14)) {
        s->id_ms++;
        s->id_seq = 0;
    }
    return s->id_ms << 20 | (uint64_t)(w->id & 63) << 14 | s->id_seq++;
}

/* seg_header_fill - a fresh header with a random key. */
static void seg_header_fill(struct worker *w, struct spool_seg *g)
{
    struct spool_seg_header *h = &g->header;

    memset(h, 0, sizeof(*h));
    memcpy(h->magic, SPOOL_SEG_MAGIC, 8);
    h->version = SPOOL_SEG_VERSION;
    h->worker = w->id;
    h->seg_id = g->id;
    h->created_ms = wall_ms();
    if (getrandom(&h->key, sizeof(h->key), 0) != sizeof(h->key))
        h->key = (uint32_t)(h->created_ms * 2654435761u) ^ (uint32_t)g->id;
    h->crc = crc32c(0, h, sizeof(*h));
    g->key = h->key;
    g->write_off = SPOOL_SEG_HEADER_BYTES;
}

/* seg_alloc - a free segment slot, or NULL. */
static struct spool_seg *seg_alloc(struct spool_worker *s)
{
    for (unsigned i = 0; i < SPOOL_SEGS_MAX; i++) {
        struct spool_seg *g = &s->segs[i];
        if (g->state == SEG_FREE) {
            memset(&g->state, 0, sizeof(*g) - offsetof(struct spool_seg, state));
            g->slot = i;
            g->gen++;
            g->fd = -1;
            return g;
        }
    }
    return NULL;
}

/* seg_maybe_close - close a retired or broken segment once nothing refers to it. */
static void seg_maybe_close(struct worker *w, struct spool_seg *g)
{
    struct spool_worker *s = w->spool;

    if ((g->state != SEG_RETIRED && g->state != SEG_BROKEN) || g == s->cur || g == s->next ||
        g->msgs_active || g->writes_inflight || g->fsync_inflight || g->delay_armed)
        return;
    if (g->fd >= 0) {
        struct io_uring_sqe *sqe = engine_sqe(w);
        io_uring_prep_close(sqe, g->fd);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
        g->fd = -1;
    }
    if (g->announced)  /* a broken segment takes no appends: end 0 */
        queue_segment_retired(w, g->id, g->state == SEG_BROKEN ? 0 : g->write_off, g->key);
    g->announced = false;
    g->state = SEG_FREE;
}

/* seg_announce - the segment is usable: the queue keeps a descriptor to read messages back. */
static void seg_announce(struct worker *w, struct spool_seg *g)
{
    g->announced = true;
    queue_segment_ready(w, g->id, g->fd);
}

/* seg_prepare - start opening the next segment through the ring. */
static void seg_prepare(struct worker *w)
{
    struct spool_worker *s = w->spool;
    struct spool_seg *g;
    struct io_uring_sqe *sqe;

    if (s->next)
        return;
    g = seg_alloc(s);
    if (!g)
        return;  /* every slot busy with old segments: try again at the next message */
    g->id = next_id(w);
    g->state = SEG_OPENING;
    s->next = g;
    spool_seg_name(g->id, g->name, sizeof(g->name));
    sqe = engine_sqe(w);
    io_uring_prep_openat(sqe, engine.spool_dir_fd, g->name,
                         O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0640);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_SPOOL_OPEN, g->slot, g->gen));
    s->ops_inflight++;
}

/* seg_broken - a segment can no longer be trusted: nothing new goes there. */
static void seg_broken(struct worker *w, struct spool_seg *g, const char *what, int err)
{
    struct spool_worker *s = w->spool;

    if (g->state != SEG_BROKEN)
        log_event(LOG_ERROR, "event=spool_error worker=%u segment=%016" PRIx64 " op=%s error=%s",
                  w->id, g->id, what, log_q(strerror(-err)));
    g->state = SEG_BROKEN;
    if (s->cur == g)
        s->cur = NULL;
    if (s->next == g)
        s->next = NULL;
    seg_maybe_close(w, g);
}

/* spool_worker_init - allocate the write slots and open the first segment synchronously. */
int spool_worker_init(struct worker *w)
{
    struct spool_worker *s = rr_calloc(1, sizeof(*s));
    struct spool_seg *g;
    char name[32];
    int err;

    w->spool = s;
    s->wops = rr_calloc(SPOOL_WOPS_MAX, sizeof(*s->wops));
    s->wop_free = rr_calloc(SPOOL_WOPS_MAX, sizeof(*s->wop_free));
    for (uint32_t i = 0; i < SPOOL_WOPS_MAX; i++)
        s->wop_free[i] = SPOOL_WOPS_MAX - 1 - i;
    s->wop_free_count = SPOOL_WOPS_MAX;
    s->batches = rr_calloc(SPOOL_BATCHES, sizeof(*s->batches));
    for (uint32_t i = 0; i < SPOOL_BATCHES; i++)
        s->batch_free[i] = SPOOL_BATCHES - 1 - i;
    s->batch_free_count = SPOOL_BATCHES;

    g = seg_alloc(s);
    g->id = next_id(w);
    seg_header_fill(w, g);
    spool_seg_name(g->id, name, sizeof(name));
    g->fd = openat(engine.spool_dir_fd, name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0640);
    if (g->fd < 0)
        return -errno;
    /* Preallocated blocks make the group fdatasync cheaper (no size change to journal).
     * Failure is fine: writes then extend the file. */
    if (fallocate(g->fd, 0, 0, (off_t)w->cfg->segment_bytes_max) < 0)
        log_event(LOG_DEBUG, "event=spool_prealloc_skipped error=%s", log_q(strerror(errno)));
    if (pwrite(g->fd, &g->header, sizeof(g->header), 0) != sizeof(g->header) ||
        fsync(g->fd) < 0 || fsync(engine.spool_dir_fd) < 0) {
        err = errno ? -errno : -EIO;
        close(g->fd);
        g->fd = -1;
        unlinkat(engine.spool_dir_fd, name, 0);
        return err;
    }
    g->state = SEG_READY;
    s->cur = g;
    seg_announce(w, g);
    return 0;
}

/* spool_worker_fini - close every segment still open. */
void spool_worker_fini(struct worker *w)
{
    struct spool_worker *s = w->spool;

    if (!s)
        return;
    for (unsigned i = 0; i < SPOOL_SEGS_MAX; i++)
        if (s->segs[i].fd >= 0 && s->segs[i].state != SEG_FREE)
            close(s->segs[i].fd);
    free(s->wops);
    free(s->wop_free);
    free(s->batches);
    free(s);
    w->spool = NULL;
}

/* spool_worker_busy - operations still to complete. */
bool spool_worker_busy(struct worker *w)
{
    return w->spool && (w->spool->ops_inflight || w->spool->deferred);
}

/* spool_writes_available - room for n more writes. */
bool spool_writes_available(struct worker *w, unsigned n)
{
    return w->spool->wop_free_count >= n;
}

/* spool_msg_begin - bind a new message to the segment that takes new messages. */
int spool_msg_begin(struct worker *w, struct spool_msg_w *m)
{
    struct spool_worker *s = w->spool;
    uint64_t limit = w->cfg->segment_bytes_max;

    if (s->cur && s->cur->write_off >= limit && s->next && s->next->state == SEG_READY) {
        struct spool_seg *full = s->cur;
        full->state = SEG_RETIRED;
        s->cur = NULL;  /* first: seg_maybe_close leaves the current segment open */
        seg_maybe_close(w, full);
    }
    if (!s->cur && s->next && s->next->state == SEG_READY) {
        s->cur = s->next;
        s->next = NULL;
    }
    if (!s->cur || s->cur->write_off >= limit / 2)
        seg_prepare(w);
    if (!s->cur)
        return -EIO;
    memset(m, 0, offsetof(struct spool_msg_w, chunk_v));
    m->qid = next_id(w);
    m->seg = s->cur;
    m->seg_id = s->cur->id;
    s->cur->msgs_active++;
    return 0;
}

/* spool_msg_begin_in - bind m to segment seg_id while this writer still has it open. */
int spool_msg_begin_in(struct worker *w, struct spool_msg_w *m, uint64_t seg_id)
{
    struct spool_worker *s = w->spool;

    for (unsigned i = 0; i < SPOOL_SEGS_MAX; i++) {
        struct spool_seg *g = &s->segs[i];
        if (g->id != seg_id || (g->state != SEG_READY && g->state != SEG_RETIRED))
            continue;
        memset(m, 0, offsetof(struct spool_msg_w, chunk_v));
        m->seg = g;
        m->seg_id = g->id;
        g->msgs_active++;
        return 0;
    }
    return -ENOENT;
}

/* finish - the message is over: tell its owner once. */
static void finish(struct worker *w, struct spool_msg_w *m, int err)
{
    struct spool_seg *g = m->seg;

    g->msgs_active--;
    m->done(w, m, err);
    seg_maybe_close(w, g);
}

/* defer_finish - fail a message outside the caller's stack: its owner's done() must not
 * run inside spool_msg_commit (the owner is in the middle of reading input). */
static void defer_finish(struct worker *w, struct spool_msg_w *m, int err)
{
    m->err = err;
    m->next = w->spool->deferred;
    w->spool->deferred = m;
}

static void group_fsync(struct worker *w, struct spool_seg *g, bool delay_over);

/* spool_worker_run_deferred - end of a loop pass: the deferred done() calls, then the
 * group commits that became due during the pass. */
void spool_worker_run_deferred(struct worker *w)
{
    struct spool_worker *s = w->spool;
    struct spool_msg_w *m = s->deferred, *next;

    s->deferred = NULL;
    for (; m; m = next) {
        next = m->next;
        finish(w, m, m->err);
    }
    if (!s->commit_due)
        return;
    s->commit_due = false;
    for (unsigned i = 0; i < SPOOL_SEGS_MAX; i++) {
        struct spool_seg *g = &s->segs[i];
        if (g->commit_due) {
            g->commit_due = false;
            group_fsync(w, g, true);
        }
    }
}

/* group_fsync - start the segment's next group commit if one is due and none runs.
 * Messages that finish writing while an fsync runs wait for the next one, so under load the
 * groups grow by themselves. Without a commit delay the fsync starts at the end of the loop
 * pass, shared by every message whose writes completed in that pass. With a delay, the first
 * waiting message holds it back that long (or until SPOOL_GROUP_MAX messages wait). */
static void group_fsync(struct worker *w, struct spool_seg *g, bool delay_over)
{
    struct io_uring_sqe *sqe;
    uint32_t delay_us = w->cfg->commit_delay_us;

    if (g->fsync_inflight || !g->wait_head)
        return;
    if (g->state == SEG_BROKEN) {
        /* An earlier fsync failed: a new one could succeed without the lost pages. */
        struct spool_msg_w *m = g->wait_head, *next;
        g->wait_head = g->wait_tail = NULL;
        g->wait_count = 0;
        for (; m; m = next) {
            next = m->next;
            finish(w, m, -EIO);
        }
        return;
    }
    if (!delay_us && !delay_over && g->wait_count < SPOOL_GROUP_MAX) {
        g->commit_due = true;
        w->spool->commit_due = true;
        return;
    }
    if (delay_us && !delay_over && g->wait_count < SPOOL_GROUP_MAX) {
        if (!g->delay_armed) {
            g->delay_armed = true;
            g->delay_ts = (struct __kernel_timespec){ .tv_sec = delay_us / 1000000,
                                                      .tv_nsec = (delay_us % 1000000) * 1000 };
            sqe = engine_sqe(w);
            io_uring_prep_timeout(sqe, &g->delay_ts, 0, 0);
            io_uring_sqe_set_data64(sqe, engine_ud(OP_SPOOL_DELAY, g->slot, g->gen));
            w->spool->ops_inflight++;
        }
        return;
    }
    g->sync_list = g->wait_head;
    g->wait_head = g->wait_tail = NULL;
    g->wait_count = 0;
    g->fsync_inflight = true;
    w->spool->ops_inflight++;
    sqe = engine_sqe(w);
    io_uring_prep_fsync(sqe, g->fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_SPOOL_FSYNC, g->slot, g->gen));
    metrics_add(&w->m->spool_fsyncs, 1);
}

/* spool_msg_write - one DATA record from iovecs of one buffer. */
void spool_msg_write(struct worker *w, struct spool_msg_w *m, uint16_t bid,
                     const struct iovec *iov, unsigned n)
{
    struct spool_wop *o = spool_wop_get(w, m, bid);

    spool_wop_data(o, m, &o->rec, iov, n);
    if (bid != ENGINE_BUF_NONE)
        w->bufs[bid].refs++;
    spool_wop_submit(w, o);
}

/* spool_msg_commit - the last content (if any) and the COMMIT record in one write. The
 * message joins its segment's next group commit once all its writes have completed. */
void spool_msg_commit(struct worker *w, struct spool_msg_w *m, uint16_t bid,
                      const struct iovec *iov, unsigned n, const char *env, uint32_t len)
{
    struct spool_wop *o;
    struct iovec e = { (void *)env, len };

    m->envelope = env;
    m->envelope_len = len;
    m->committing = true;
    if (!m->err && m->seg->state == SEG_BROKEN)
        m->err = -EIO;
    if (!m->err && !spool_writes_available(w, 1))
        m->err = -EAGAIN;  /* every write slot busy: a temporary failure, 451 */
    if (m->err) {
        if (!m->inflight)
            defer_finish(w, m, m->err);
        return;  /* else the last write completion finishes it */
    }
    o = spool_wop_get(w, m, bid);
    o->commit = true;
    if (n) {
        spool_wop_data(o, m, &o->rec2, iov, n);
        if (bid != ENGINE_BUF_NONE)
            w->bufs[bid].refs++;
    }
    /* The commit claims every chunk, including the one just added; its size line was
     * written by the caller from the same count of bytes. */
    o->rec.type = SPOOL_REC_COMMIT;
    o->rec.qid = m->qid;
    o->rec.seq = m->chunks;
    spool_wop_record(o, &o->rec, m->seg->key, &e, 1);
    spool_wop_submit(w, o);
}

/* spool_msg_status - one STATUS record, durable like a commit. */
void spool_msg_status(struct worker *w, struct spool_msg_w *m, uint64_t qid,
                      enum spool_outcome outcome, const void *payload, uint32_t len)
{
    struct spool_wop *o;
    struct iovec e = { (void *)payload, len };

    m->committing = true;
    m->status_qid = qid;
    m->status_outcome = (uint8_t)outcome;
    if (m->seg->state == SEG_BROKEN || !spool_writes_available(w, 1)) {
        defer_finish(w, m, m->seg->state == SEG_BROKEN ? -EIO : -EAGAIN);
        return;
    }
    o = spool_wop_get(w, m, ENGINE_BUF_NONE);
    o->commit = true;
    o->rec.type = SPOOL_REC_STATUS;
    o->rec.qid = qid;
    o->rec.seq = (uint32_t)outcome;
    spool_wop_record(o, &o->rec, m->seg->key, &e, 1);
    spool_wop_submit(w, o);
}

/* spool_worker_tick - close the segment for new messages when it has been idle a while (the
 * next message opens a fresh one), so that it can be removed once its messages are gone. */
void spool_worker_tick(struct worker *w)
{
    struct spool_worker *s = w->spool;
    struct spool_seg *g = s ? s->cur : NULL;

    if (!g || g->write_off <= SPOOL_SEG_HEADER_BYTES || g->msgs_active ||
        w->now_ms - g->last_write_ms < SPOOL_IDLE_ROTATE_MS)
        return;
    if (!s->next) {
        seg_prepare(w);
        return;
    }
    if (s->next->state != SEG_READY)
        return;
    g->state = SEG_RETIRED;
    s->cur = s->next;
    s->next = NULL;
    s->cur->last_write_ms = w->now_ms;
    seg_maybe_close(w, g);
}

/* spool_msg_abort - abandon a message that will not be committed. */
bool spool_msg_abort(struct worker *w, struct spool_msg_w *m)
{
    if (m->inflight) {
        m->aborted = true;
        return false;
    }
    m->seg->msgs_active--;
    seg_maybe_close(w, m->seg);
    return true;
}

/* spool_write_done - a write completed with res. */
void spool_write_done(struct worker *w, struct spool_wop *o, int res)
{
    struct spool_msg_w *m = o->m;
    struct spool_seg *g = o->seg;
    int err = 0;

    if (res < 0)
        err = res;
    else if ((uint32_t)res != o->len)
        err = -ENOSPC;  /* a short write to a regular file means the device is full */
    if (o->bid != ENGINE_BUF_NONE) {
        struct engine_buf *b = &w->bufs[o->bid];
        if (--b->refs == 0 && !b->queued)
            engine_buf_release(w, o->bid);
    }
    w->spool->wop_free[w->spool->wop_free_count++] = (uint32_t)(o - w->spool->wops);
    w->spool_slots_freed++;
    g->writes_inflight--;
    m->inflight--;
    if (err && err != -ENOSPC && err != -EDQUOT)
        seg_broken(w, g, "write", err);
    if (err && !m->err)
        m->err = err;
    if (m->inflight)
        return;
    if (m->aborted) {
        finish(w, m, -ECANCELED);
    } else if (m->committing) {
        if (m->err || g->state == SEG_BROKEN) {
            finish(w, m, m->err ? m->err : -EIO);
            return;
        }
        /* Every record of the message is written: the next fsync makes it durable. */
        m->next = NULL;
        if (g->wait_tail)
            g->wait_tail->next = m;
        else
            g->wait_head = m;
        g->wait_tail = m;
        g->wait_count++;
        group_fsync(w, g, false);
    }
}

/* fsync_done - a group commit finished: answer everything it covered. */
static void fsync_done(struct worker *w, struct spool_seg *g, int res)
{
    struct spool_msg_w *m = g->sync_list, *next;

    g->sync_list = NULL;
    g->fsync_inflight = false;
    if (res < 0)
        seg_broken(w, g, "fdatasync", res);  /* after a failed fsync the pages are suspect */
    for (; m; m = next) {
        next = m->next;
        finish(w, m, res < 0 ? res : 0);
    }
    if (res < 0) {
        for (m = g->wait_head, g->wait_head = g->wait_tail = NULL; m; m = next) {
            next = m->next;
            finish(w, m, res);
        }
    } else {
        group_fsync(w, g, false);
    }
    seg_maybe_close(w, g);
}

/* seg_opened - the next segment's file exists: write its header and sync it. */
static void seg_opened(struct worker *w, struct spool_seg *g, int res)
{
    struct io_uring_sqe *sqe;

    if (res < 0) {
        seg_broken(w, g, "open", res);
        return;
    }
    g->fd = res;
    seg_header_fill(w, g);
    /* The three linked entries must reach the kernel in one submission. */
    if (io_uring_sq_space_left(&w->ring) < 3)
        io_uring_submit(&w->ring);
    sqe = engine_sqe(w);
    /* Preallocate (see spool_worker_init); a hard link goes on even if it fails. */
    io_uring_prep_fallocate(sqe, g->fd, 0, 0, (off_t)w->cfg->segment_bytes_max);
    sqe->flags |= IOSQE_IO_HARDLINK;
    io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
    sqe = engine_sqe(w);
    io_uring_prep_write(sqe, g->fd, &g->header, sizeof(g->header), 0);
    sqe->flags |= IOSQE_IO_LINK;
    io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
    sqe = engine_sqe(w);
    io_uring_prep_fsync(sqe, g->fd, 0);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_SPOOL_HEADER, g->slot, g->gen));
    w->spool->ops_inflight++;
}

/* spool_complete - dispatch a spool completion. */
void spool_complete(struct worker *w, enum engine_op op, uint32_t slot, uint32_t gen, int res)
{
    struct spool_worker *s = w->spool;
    struct spool_seg *g;

    s->ops_inflight--;
    if (op == OP_SPOOL_WRITE) {
        struct spool_wop *o = &s->wops[slot];
        if (slot < SPOOL_WOPS_MAX && o->gen == gen)
            spool_write_done(w, o, res);
        return;
    }
    if (op == OP_SPOOL_BATCH) {
        if (slot < SPOOL_BATCHES && s->batches[slot].gen == gen)
            spool_batch_done(w, &s->batches[slot], res);
        return;
    }
    if (slot >= SPOOL_SEGS_MAX || s->segs[slot].gen != gen)
        return;
    g = &s->segs[slot];
    switch (op) {
    case OP_SPOOL_FSYNC:
        fsync_done(w, g, res);
        break;
    case OP_SPOOL_OPEN:
        seg_opened(w, g, res);
        break;
    case OP_SPOOL_HEADER: {
        struct io_uring_sqe *sqe;
        if (res < 0) {
            seg_broken(w, g, "header", res);
            break;
        }
        sqe = engine_sqe(w);
        io_uring_prep_fsync(sqe, engine.spool_dir_fd, 0);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_SPOOL_DIRSYNC, g->slot, g->gen));
        s->ops_inflight++;
        break;
    }
    case OP_SPOOL_DELAY:
        g->delay_armed = false;
        group_fsync(w, g, true);
        break;
    case OP_SPOOL_DIRSYNC:
        if (res < 0)
            seg_broken(w, g, "dirsync", res);
        else if (g->state == SEG_OPENING) {
            g->state = SEG_READY;
            seg_announce(w, g);
        }
        break;
    default:
        break;
    }
}
