/*
 * spool_wop.c - a worker's spool writes: the records of one write, the write slots, and the
 * batches that carry a loop pass's writes to the kernel together.
 *
 * A write (struct spool_wop) is the iovecs of whole records, {header, payload, padding}
 * each, for one contiguous range of a segment that spool_wop_submit() reserves. Writes
 * reserved during one loop pass are adjacent in their segment, so they go into the
 * segment's open batch and leave as one IORING_OP_WRITEV when the pass ends
 * (spool_worker_flush). ext4 cannot take a buffered write without blocking, so io_uring
 * hands every spool write to one of its worker threads; one hand-off per pass instead of
 * one per record is what the batch saves. A batch's completion is shared out over its
 * writes in order, as if each had been submitted alone: a short write completes the writes
 * it covers and leaves the rest short. With every batch in flight, a write goes alone.
 *
 * SECURITY: peer bytes are only ever payload; lengths come from the receive buffers and are
 * bounded by ENGINE_BUF_BYTES per write and SPOOL_BATCH_IOV iovecs per batch.
 */
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/spool_writer_int.h"

static const char zero_pad[SPOOL_REC_ALIGN];

/* spool_wop_record - append one sealed record (header, payload iovecs, padding) to a write. */
void spool_wop_record(struct spool_wop *o, struct spool_rec *rec, uint32_t key,
                      const struct iovec *payload, unsigned n)
{
    uint64_t len = 0, span;

    for (unsigned i = 0; i < n; i++)
        len += payload[i].iov_len;
    rec->len = (uint32_t)len;
    spool_rec_seal(rec, key, payload, n);
    span = spool_rec_span(len);
    o->iov[o->iov_count++] = (struct iovec){ rec, sizeof(*rec) };
    for (unsigned i = 0; i < n; i++)
        o->iov[o->iov_count++] = payload[i];
    if (span > SPOOL_REC_BYTES + len)
        o->iov[o->iov_count++] = (struct iovec){ (void *)zero_pad, span - SPOOL_REC_BYTES - len };
    o->len += (uint32_t)span;
}

/* chunk_note - remember where a piece of m's content is in the segment. */
static void chunk_note(struct spool_msg_w *m, uint64_t off, uint32_t len)
{
    uint32_t n = m->chunks - 1;  /* spool_wop_data counted it already */

    if (n >= SPOOL_CHUNKS_INLINE && n >= m->chunk_cap) {
        uint32_t cap = m->chunk_cap ? m->chunk_cap * 2 : SPOOL_CHUNKS_INLINE * 4;
        struct spool_chunk *v = rr_malloc(cap * sizeof(*v));
        memcpy(v, spool_msg_chunks(m), n * sizeof(*v));
        if (m->chunk_cap)
            free(m->chunk_v);
        m->chunk_v = v;
        m->chunk_cap = cap;
    }
    (m->chunk_cap ? m->chunk_v : m->chunk_inline)[n] = (struct spool_chunk){ off, len };
}

/* spool_msg_release - free the chunk list if it outgrew the inline room. */
void spool_msg_release(struct spool_msg_w *m)
{
    if (m->chunk_cap)
        free(m->chunk_v);
    m->chunk_v = NULL;
    m->chunk_cap = 0;
}

/* spool_wop_get - a free write slot (the caller checked availability). */
struct spool_wop *spool_wop_get(struct worker *w, struct spool_msg_w *m, uint16_t bid)
{
    struct spool_worker *s = w->spool;
    struct spool_wop *o;

    if (!s->wop_free_count) {
        /* Callers check spool_writes_available(); reaching here is a broken invariant. */
        log_event(LOG_FATAL, "event=bug what=spool_write_slots_exhausted");
        abort();
    }
    o = &s->wops[s->wop_free[--s->wop_free_count]];
    o->gen++;
    o->bid = bid;
    o->m = m;
    o->seg = m->seg;
    o->commit = false;
    o->data_len = UINT32_MAX;
    o->len = 0;
    o->iov_count = 0;
    memset(&o->rec, 0, sizeof(o->rec));
    memset(&o->rec2, 0, sizeof(o->rec2));
    return o;
}

/* spool_wop_data - a DATA record for payload iov[0..n) into write o. */
void spool_wop_data(struct spool_wop *o, struct spool_msg_w *m, struct spool_rec *rec,
                    const struct iovec *iov, unsigned n)
{
    rec->type = SPOOL_REC_DATA;
    rec->qid = m->qid;
    rec->seq = m->chunks++;
    spool_wop_record(o, rec, m->seg->key, iov, n);
    m->bytes += rec->len;
    o->data_len = rec->len;
}

/* wop_issue - submit write o alone at off. */
static void wop_issue(struct worker *w, struct spool_wop *o, uint64_t off)
{
    struct io_uring_sqe *sqe = engine_sqe(w);

    io_uring_prep_writev(sqe, o->seg->fd, o->iov, o->iov_count, off);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_SPOOL_WRITE, (uint32_t)(o - w->spool->wops),
                                           o->gen));
    metrics_add(&w->m->spool_writes, 1);
}

/* batch_submit - submit g's open batch: one write, or the only write it holds. */
static void batch_submit(struct worker *w, struct spool_seg *g)
{
    struct spool_worker *s = w->spool;
    struct spool_batch *b = g->open;
    struct io_uring_sqe *sqe;

    g->open = NULL;
    s->batches_open--;
    if (b->count == 1) {
        wop_issue(w, &s->wops[b->wops[0]], b->off);
        s->batch_free[s->batch_free_count++] = (uint32_t)(b - s->batches);
        return;
    }
    sqe = engine_sqe(w);
    io_uring_prep_writev(sqe, g->fd, b->iov, b->iov_count, b->off);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_SPOOL_BATCH, (uint32_t)(b - s->batches), b->gen));
    metrics_add(&w->m->spool_writes, 1);
}

/* spool_worker_flush - end of a loop pass: submit every open batch. */
void spool_worker_flush(struct worker *w)
{
    struct spool_worker *s = w->spool;

    for (unsigned i = 0; s && s->batches_open && i < SPOOL_SEGS_MAX; i++)
        if (s->segs[i].open)
            batch_submit(w, &s->segs[i]);
}

/* batch_add - put write o (reserved at off) in its segment's open batch; false when no
 * batch can take it. */
static bool batch_add(struct worker *w, struct spool_wop *o, uint64_t off)
{
    struct spool_worker *s = w->spool;
    struct spool_seg *g = o->seg;
    struct spool_batch *b = g->open;

    if (b && (b->count == SPOOL_BATCH_WOPS || b->iov_count + o->iov_count > SPOOL_BATCH_IOV)) {
        batch_submit(w, g);
        b = NULL;
    }
    if (!b) {
        if (!s->batch_free_count)
            return false;
        b = &s->batches[s->batch_free[--s->batch_free_count]];
        b->gen++;
        b->off = off;
        b->count = 0;
        b->iov_count = 0;
        g->open = b;
        s->batches_open++;
    }
    b->wops[b->count++] = (uint32_t)(o - s->wops);
    memcpy(b->iov + b->iov_count, o->iov, o->iov_count * sizeof(*o->iov));
    b->iov_count += o->iov_count;
    return true;
}

/* spool_wop_submit - reserve the write's range of the segment; it leaves with the pass's
 * batch, or alone when every batch is in flight. */
void spool_wop_submit(struct worker *w, struct spool_wop *o)
{
    struct spool_seg *g = o->seg;
    uint64_t off = g->write_off;

    /* A DATA record is always first in its write: note where its payload lands. */
    if (o->data_len != UINT32_MAX)
        chunk_note(o->m, off + SPOOL_REC_BYTES, o->data_len);
    g->last_write_ms = w->now_ms;
    g->write_off += o->len;
    g->writes_inflight++;
    o->m->inflight++;
    w->spool->ops_inflight++;
    if (!batch_add(w, o, off))
        wop_issue(w, o, off);
}

/* spool_batch_done - a combined write completed with res: share it out over its writes in
 * order. A short write completes the writes it covers and leaves the rest short. A failed
 * write answers its message at once, and the session may then write again: the batch is
 * only free for that after its last write is done. */
void spool_batch_done(struct worker *w, struct spool_batch *b, int res)
{
    struct spool_worker *s = w->spool;
    uint32_t left = res > 0 ? (uint32_t)res : 0;

    s->ops_inflight -= b->count - 1;  /* one write each; spool_complete took one */
    for (uint32_t i = 0; i < b->count; i++) {
        struct spool_wop *o = &s->wops[b->wops[i]];
        uint32_t got = left < o->len ? left : o->len;
        left -= got;
        spool_write_done(w, o, res < 0 ? res : (int)got);
    }
    s->batch_free[s->batch_free_count++] = (uint32_t)(b - s->batches);
}
