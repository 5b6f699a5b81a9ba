/*
 * queue.c - the queue manager of a worker: scheduling, retries, outcomes, bounces, removal.
 *
 * Functions: queue_recover() (start-up, main thread), queue_worker_init(), queue_add(),
 * queue_segment_ready(), queue_segment_retired(), queue_ctl(), queue_job_take(),
 * queue_job_done(), queue_dest_failed(), queue_conn_gone(), queue_complete(),
 * queue_run_deferred(), and their helpers.
 *
 * A message is delivered in rounds. A round splits its open recipients by next hop (the
 * smarthost, or the recipient's domain) into jobs and puts each job on its destination's
 * ready list; connections to that destination (net/smtp_client.c) take the jobs one by one.
 * When every job of the round is back, failed recipients are bounced (one DSN per round) and
 * a message with recipients still open is scheduled again: retry_min doubling up to
 * retry_max, with +-25% jitter, until queue_lifetime, after which the rest is bounced.
 *
 * A destination that cannot be reached (refused, timed out, 4xx greeting, DNS failure) is
 * backed off as a whole: its waiting jobs are deferred without a connection and it is tried
 * again only after its own backoff, however many messages wait for it.
 *
 * Outcomes are STATUS records in the spool (spool.h). A recipient counts as done only once
 * its record is durable; a message is finished when all its recipients are. A record goes to
 * the message's own segment: through the writer while the writer has that segment open, else
 * appended by the queue (append_kick: the records waiting for a segment go out as one write
 * and one fdatasync). A segment then holds all there is to know about its messages and is
 * removed as soon as none of them is open, whatever came after it; one long-deferred message
 * keeps only its own segment. Only when a segment cannot take appends (a write to it failed)
 * does an outcome go to the current segment, which must then outlive the message's segment
 * (seg_depend: otherwise a restart would find the message without its outcome and deliver it
 * again). Removals are collected during a loop pass, unlinked together and made durable by one
 * directory fsync, after which the segments that waited for them may go in turn.
 *
 * Recovery (core/queue_recover.c) reads every segment once at start-up; take_share() gives
 * each worker its set of segments (closed under "holds outcomes for", so that the removal
 * rules never span two workers) and their open messages.
 *
 * SECURITY: envelopes come from our own spool, but their addresses came from the network;
 * they are only copied, never interpreted beyond the domain split, and are quoted in logs.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/control.h"
#include "core/dsn.h"
#include "core/log.h"
#include "core/queue.h"
#include "core/queue_int.h"
#include "core/queue_recover.h"
#include "core/spool_writer.h"

#define QUEUE_JITTER_PCT      25     /* retry delays vary by +-25% */
#define QUEUE_CTL_LINES_MAX   10000  /* messages one worker lists for ringctl queue */
#define QUEUE_DEST_TTL_MS     5000   /* a destination asks the resolver's cache again after */
#define QUEUE_WRITE_RETRY_MS  1000   /* a failed outcome write is tried again after */
#define QUEUE_JOB_RCPTS_MAX   50     /* recipients in one transaction (Postfix's default
                                        smtp_destination_recipient_limit) */
#define QUEUE_DEST_SWEEP_MS   60000  /* idle destinations are forgotten this often */

enum qseg_state { QS_PRESENT, QS_DOOMED, QS_UNLINKING, QS_SYNCING };

struct qseg {
    uint64_t id;
    int fd;                       /* read descriptor; -1 when none */
    uint32_t live;                /* messages with content here that are not finished */
    uint32_t blockers;            /* segments this one holds outcomes for, still present */
    struct qseg **dependents;     /* segments holding outcomes for messages here */
    uint32_t dep_count, dep_cap;
    bool writing;                 /* the spool writer may still append to it */
    bool appendable;              /* closed by the writer: the queue appends outcomes here */
    uint64_t append_off;          /* where the next appended record goes */
    uint32_t key;                 /* record CRC seed of the segment */
    struct qwrite *app_pend;      /* outcomes waiting for the next append */
    struct qwrite *app_flight;    /* outcomes in the append being written and synced */
    char *app_buf;                /* the bytes of that append */
    int app_slot;                 /* index in queue.appenders while an append runs, else -1 */
    enum qseg_state st;
    char name[32];                /* file name, for the unlink */
    struct qseg *hnext;           /* hash chain */
    struct qseg *gc_next;         /* in a removal list */
};

/* An outcome record on its way to the spool. */
struct qwrite {
    struct spool_msg_w mw;        /* first: the spool's done() gets this pointer */
    struct worker *w;
    struct qmsg *m;               /* the message it is about */
    enum spool_outcome outcome;
    struct ctl_job *job;          /* ringctl request to answer when durable, or NULL */
    struct qwrite *next;          /* in the pending list */
    uint32_t len;                 /* payload bytes */
    unsigned char payload[];      /* struct spool_status_hdr, then uint16_t indexes */
};

/* A bounce being built: original headers read back, DSN spooled, then outcomes written. */
struct qbounce {
    struct spool_msg_w mw;        /* first: the DSN message being spooled */
    struct qmsg *m;               /* the message that failed */
    uint32_t slot, gen;           /* for the read's user_data */
    uint16_t *idx;                /* failed recipients it reports */
    uint16_t count;
    char *head;                   /* first bytes of the message, for its header section */
    uint32_t head_len, head_cap;
    uint32_t chunk;               /* next chunk to read */
    char *text;                   /* the DSN */
    size_t text_len;
    char *env;                    /* its envelope */
    uint32_t env_len;
};

#define QUEUE_BOUNCES_MAX 256     /* bounces being built at once per worker */
#define QUEUE_APPENDERS_MAX 64    /* closed segments being appended to at once per worker */

struct queue {
    struct qmsg **mtab;           /* messages by qid, chained */
    size_t mcap, mcount;
    struct qmsg *head, *tail;     /* every message, oldest first */
    struct qmsg **due;            /* messages whose round starts at the end of this pass */
    size_t due_count, due_cap;
    struct qseg **stab;           /* segments by id, chained */
    size_t scap;
    struct qdest **dtab;          /* destinations by key, chained */
    size_t dcap, dcount;
    struct qwrite *pending;       /* outcome writes waiting for a write slot or a segment */
    struct qseg *gc_wait;         /* removable, not yet unlinked */
    struct qseg *gc_batch;        /* being unlinked and synced */
    uint32_t gc_unlinks;          /* unlinks of the batch in flight */
    bool gc_failed;               /* an unlink of the batch failed */
    struct qseg *gc_retry;        /* removals that failed, tried again from the tick */
    bool gc_syncing;              /* the directory fsync of the batch is in flight */
    struct qbounce *bounces[QUEUE_BOUNCES_MAX]; /* by slot */
    struct qseg *appenders[QUEUE_APPENDERS_MAX]; /* segments with an append in flight */
    uint32_t append_gen[QUEUE_APPENDERS_MAX];
    uint32_t bounce_gen;
    uint32_t ops;                 /* ring operations in flight */
    uint32_t writes;              /* outcome writes in flight */
    bool stopping;
    uint64_t rng;                 /* xorshift state for jitter */
    struct engine_timer tick;     /* pending writes and bounces retried from here */
    struct engine_timer sweep;    /* idle destinations forgotten from here */
};

static void msg_round_end(struct worker *w, struct qmsg *m);
static void dest_kick(struct worker *w, struct qdest *d);
static void status_submit(struct worker *w, struct qwrite *qw);
static void append_kick(struct worker *w, struct qseg *g);
static void seg_maybe_gc(struct worker *w, struct qseg *g);

/* ---- small helpers ---- */

/* hash_str - FNV-1a of a string. */
static size_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (size_t)h;
}

/* wall_ms - real time in milliseconds. */
static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* rnd - the next pseudo-random number (jitter only). */
static uint64_t rnd(struct queue *q)
{
    q->rng ^= q->rng << 13;
    q->rng ^= q->rng >> 7;
    q->rng ^= q->rng << 17;
    return q->rng;
}

/* backoff_ms - the delay before round n+1 (n >= 1): retry_min doubling to retry_max, with
 * jitter, never below one second. */
static uint64_t backoff_ms(struct worker *w, uint32_t n)
{
    const struct rr_config *cfg = w->cfg;
    uint64_t d = (uint64_t)cfg->retry_min_s * 1000;
    uint64_t max = (uint64_t)cfg->retry_max_s * 1000;
    int64_t j;

    for (uint32_t i = 1; i < n && d < max; i++)
        d *= 2;
    if (d > max)
        d = max;
    j = (int64_t)(rnd(w->queue) % (2 * QUEUE_JITTER_PCT + 1)) - QUEUE_JITTER_PCT;
    d = (uint64_t)((int64_t)d + (int64_t)d * j / 100);
    return d < 1000 ? 1000 : d;
}

/* copy_text - s into a bounded buffer, one line: CR, LF and NUL become spaces. */
static void copy_text(char *dst, size_t cap, const char *s)
{
    size_t i = 0;

    for (; s && *s && i + 1 < cap; s++)
        dst[i++] = (*s == '\r' || *s == '\n') ? ' ' : *s;
    dst[i] = 0;
}

/* reply_status - the RFC 3463 code of a reply text ("550 5.1.1 ..."), or dflt. */
static void reply_status(const char *reply, const char *dflt, char out[12])
{
    const char *p = reply && strlen(reply) > 4 ? reply + 4 : "";
    size_t n = strspn(p, "0123456789.");

    if (n >= 5 && n < 12 && (p[0] == '4' || p[0] == '5') && p[1] == '.') {
        memcpy(out, p, n);
        out[n] = 0;
        if (out[0] == '4')
            out[0] = '5';  /* a temporary code that ends in a bounce (expiry) */
        return;
    }
    snprintf(out, 12, "%s", dflt);
}

/* ---- segments ---- */

/* seg_find - the segment with id, or NULL. */
static struct qseg *seg_find(struct queue *q, uint64_t id)
{
    struct qseg *g = q->stab[hash64(id) & (q->scap - 1)];

    while (g && g->id != id)
        g = g->hnext;
    return g;
}

/* seg_new - track segment id (fd: the queue's own descriptor, or -1). */
static struct qseg *seg_new(struct queue *q, uint64_t id, int fd, bool writing)
{
    struct qseg *g = rr_calloc(1, sizeof(*g));
    size_t h = hash64(id) & (q->scap - 1);

    g->id = id;
    g->fd = fd;
    g->writing = writing;
    g->app_slot = -1;
    spool_seg_name(id, g->name, sizeof(g->name));
    g->hnext = q->stab[h];
    q->stab[h] = g;
    return g;
}

/* seg_depend - segment b holds an outcome for a message in a: b stays while a exists. */
static void seg_depend(struct qseg *a, struct qseg *b)
{
    if (a == b)
        return;
    for (uint32_t i = 0; i < a->dep_count; i++)
        if (a->dependents[i] == b)
            return;
    if (a->dep_count == a->dep_cap) {
        a->dep_cap = a->dep_cap ? a->dep_cap * 2 : 4;
        a->dependents = rr_realloc(a->dependents, a->dep_cap * sizeof(*a->dependents));
    }
    a->dependents[a->dep_count++] = b;
    b->blockers++;
}

/* seg_maybe_gc - queue g for removal when nothing keeps it. */
static void seg_maybe_gc(struct worker *w, struct qseg *g)
{
    struct queue *q = w->queue;

    if (g->st != QS_PRESENT || g->writing || g->live || g->blockers || g->app_slot >= 0 ||
        g->app_pend)
        return;
    g->st = QS_DOOMED;
    g->gc_next = q->gc_wait;
    q->gc_wait = g;
}

/* seg_free - g is gone from disk for good: release the segments that waited for it. */
static void seg_free(struct worker *w, struct qseg *g)
{
    struct queue *q = w->queue;
    struct qseg **pp = &q->stab[hash64(g->id) & (q->scap - 1)];

    while (*pp != g)
        pp = &(*pp)->hnext;
    *pp = g->hnext;
    for (uint32_t i = 0; i < g->dep_count; i++) {
        g->dependents[i]->blockers--;
        seg_maybe_gc(w, g->dependents[i]);
    }
    if (g->fd >= 0)
        close(g->fd);  /* a read-only descriptor of an unlinked file: nothing to flush */
    log_event(LOG_DEBUG, "event=segment_removed worker=%u segment=%016" PRIx64, w->id, g->id);
    free(g->dependents);
    free(g);
}

/* gc_start - unlink every segment waiting for removal, as one batch. */
static void gc_start(struct worker *w)
{
    struct queue *q = w->queue;

    if (q->gc_batch || !q->gc_wait)
        return;
    q->gc_batch = q->gc_wait;
    q->gc_wait = NULL;
    for (struct qseg *g = q->gc_batch; g; g = g->gc_next) {
        struct io_uring_sqe *sqe;
        g->st = QS_UNLINKING;
        if (io_uring_sq_space_left(&w->ring) < 2)
            io_uring_submit(&w->ring);
        if (g->fd >= 0) {
            /* Our descriptor goes first, so that the unlink (on a kernel worker) is the last
             * reference and frees the blocks there, not on this thread. */
            sqe = engine_sqe(w);
            io_uring_prep_close(sqe, g->fd);
            sqe->flags |= IOSQE_IO_HARDLINK;
            io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
            g->fd = -1;
        }
        sqe = engine_sqe(w);
        io_uring_prep_unlinkat(sqe, engine.spool_dir_fd, g->name, 0);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_QUEUE_UNLINK, 0, 0));
        q->gc_unlinks++;
        q->ops++;
    }
}

/* gc_unlinked - one unlink of the batch finished; after the last, sync the directory. */
static void gc_unlinked(struct worker *w, int res)
{
    struct queue *q = w->queue;
    struct io_uring_sqe *sqe;

    if (res < 0 && res != -ENOENT) {
        log_event(LOG_ERROR, "event=spool_error op=unlink error=%s", log_q(strerror(-res)));
        q->gc_failed = true;
    }
    if (--q->gc_unlinks)
        return;
    q->gc_syncing = true;
    sqe = engine_sqe(w);
    io_uring_prep_fsync(sqe, engine.spool_dir_fd, 0);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_QUEUE_DIRSYNC, 0, 0));
    q->ops++;
}

/* gc_synced - the batch's removals are durable: free them, start the next batch. */
static void gc_synced(struct worker *w, int res)
{
    struct queue *q = w->queue;
    struct qseg *g = q->gc_batch, *next;

    q->gc_syncing = false;
    q->gc_batch = NULL;
    if (res < 0)
        log_event(LOG_ERROR, "event=spool_error op=dirsync error=%s", log_q(strerror(-res)));
    if (res < 0 || q->gc_failed) {
        /* Not known to be gone: the whole batch is removed (and synced) again later; the
         * segments waiting for these keep waiting. */
        q->gc_failed = false;
        for (; g; g = next) {
            next = g->gc_next;
            g->st = QS_DOOMED;
            g->gc_next = q->gc_retry;
            q->gc_retry = g;
        }
        if (!q->tick.next)
            engine_timer_set(w, &q->tick, w->now_ms + QUEUE_WRITE_RETRY_MS);
        return;
    }
    for (; g; g = next) {
        next = g->gc_next;
        seg_free(w, g);
    }
}

/* queue_segment_ready - a new segment of the writer: keep a descriptor to read it. */
void queue_segment_ready(struct worker *w, uint64_t seg_id, int fd)
{
    struct queue *q = w->queue;
    struct qseg *g = seg_find(q, seg_id);
    int rfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);

    if (rfd < 0)
        log_event(LOG_ERROR, "event=queue_error op=dup error=%s", log_q(strerror(errno)));
    if (!g)
        seg_new(q, seg_id, rfd, true);
    else if (rfd >= 0)
        close(rfd);
}

/* queue_segment_retired - the writer closed seg_id: outcomes are appended by the queue from
 * now on; the segment may go once its messages are done. */
void queue_segment_retired(struct worker *w, uint64_t seg_id, uint64_t end_off, uint32_t key)
{
    struct qseg *g = seg_find(w->queue, seg_id);

    if (!g)
        return;
    g->writing = false;
    g->appendable = end_off != 0 && g->fd >= 0;
    g->append_off = end_off;
    g->key = key;
    seg_maybe_gc(w, g);
}

/* queue_seg_fd - where m's content is read from. */
int queue_seg_fd(const struct qmsg *m)
{
    return m->seg->fd;
}

/* ---- messages ---- */

/* msg_find - the message with qid, or NULL. */
static struct qmsg *msg_find(struct queue *q, uint64_t qid)
{
    struct qmsg *m = q->mtab[hash64(qid) & (q->mcap - 1)];

    while (m && m->qid != qid)
        m = m->hnext;
    return m;
}

/* msg_link - put m in the table (grown as needed) and at the end of the list. */
static void msg_link(struct queue *q, struct qmsg *m)
{
    size_t h;

    if ((q->mcount + 1) * 2 > q->mcap) {
        size_t cap = q->mcap * 2;
        struct qmsg **t = rr_calloc(cap, sizeof(*t));
        for (size_t i = 0; i < q->mcap; i++) {
            struct qmsg *x = q->mtab[i], *next;
            for (; x; x = next) {
                next = x->hnext;
                h = hash64(x->qid) & (cap - 1);
                x->hnext = t[h];
                t[h] = x;
            }
        }
        free(q->mtab);
        q->mtab = t;
        q->mcap = cap;
    }
    h = hash64(m->qid) & (q->mcap - 1);
    m->hnext = q->mtab[h];
    q->mtab[h] = m;
    q->mcount++;
    m->prev = q->tail;
    m->next = NULL;
    if (q->tail)
        q->tail->next = m;
    else
        q->head = m;
    q->tail = m;
}

/* msg_due - start a round for m at the end of this loop pass. */
static void msg_due(struct worker *w, struct qmsg *m)
{
    struct queue *q = w->queue;

    engine_timer_set(w, &m->timer, 0);
    if (m->next_ms == 1)
        return;  /* already on the due list */
    m->next_ms = 1;
    if (q->due_count == q->due_cap) {
        q->due_cap = q->due_cap ? q->due_cap * 2 : 256;
        q->due = rr_realloc(q->due, q->due_cap * sizeof(*q->due));
    }
    q->due[q->due_count++] = m;
}

/* msg_timer_fired - m's retry time came. */
static void msg_timer_fired(struct worker *w, struct engine_timer *t)
{
    struct qmsg *m = (struct qmsg *)((char *)t - offsetof(struct qmsg, timer));

    m->next_ms = 0;
    msg_due(w, m);
}

/* msg_new - a message from its envelope. NULL when the envelope makes no sense. */
static struct qmsg *msg_new(struct worker *w, uint64_t qid, struct qseg *g, const char *env,
                            uint32_t env_len, const struct spool_chunk *chunks,
                            uint32_t chunk_count, uint64_t size)
{
    struct qmsg *m = rr_calloc(1, sizeof(*m));
    const char *v = NULL;
    size_t vlen, n = 0;

    m->qid = qid;
    m->seg = g;
    m->size = size;
    m->env = rr_malloc(env_len + 1);
    memcpy(m->env, env, env_len);
    m->env[env_len] = 0;
    m->env_len = env_len;
    m->chunks = rr_malloc((chunk_count ? chunk_count : 1) * sizeof(*chunks));
    memcpy(m->chunks, chunks, chunk_count * sizeof(*chunks));
    m->chunk_count = chunk_count;
    m->timer.fire = msg_timer_fired;
    v = spool_env_get(m->env, env_len, "time", NULL, &vlen);
    m->arrival_ms = v ? strtoll(v, NULL, 10) : wall_ms();
    v = spool_env_get(m->env, env_len, "smtputf8", NULL, &vlen);
    m->smtputf8 = v && vlen && *v == '1';
    v = spool_env_get(m->env, env_len, "body", NULL, &vlen);
    m->body8 = v && vlen == 8 && !memcmp(v, "8BITMIME", 8);
    for (v = NULL; (v = spool_env_get(m->env, env_len, "rcpt", v, &vlen));)
        n++;
    if (!n || n > SPOOL_STATUS_RCPTS_MAX) {
        free(m->env);
        free(m->chunks);
        free(m);
        return NULL;
    }
    m->rcpts = rr_calloc(n, sizeof(*m->rcpts));
    m->rcpt_count = (uint16_t)n;
    m->rcpt_open = (uint16_t)n;
    /* Find every value first, then end each in a NUL (over its "\n": the copy is ours). */
    n = 0;
    for (v = NULL; (v = spool_env_get(m->env, env_len, "rcpt", v, &vlen));) {
        m->rcpts[n].addr = v;
        m->rcpts[n++].addr_len = (uint16_t)vlen;
    }
    v = spool_env_get(m->env, env_len, "from", NULL, &vlen);
    m->from = v ? v : "";
    if (v)
        ((char *)v)[vlen] = 0;
    for (size_t i = 0; i < n; i++)
        ((char *)m->rcpts[i].addr)[m->rcpts[i].addr_len] = 0;
    g->live++;
    msg_link(w->queue, m);
    metrics_add(&w->m->queue_size, 1);
    return m;
}

/* msg_free - m is finished: out of every list, its segment may go. */
static void msg_free(struct worker *w, struct qmsg *m)
{
    struct queue *q = w->queue;
    struct qmsg **pp = &q->mtab[hash64(m->qid) & (q->mcap - 1)];

    while (*pp != m)
        pp = &(*pp)->hnext;
    *pp = m->hnext;
    q->mcount--;
    if (m->prev)
        m->prev->next = m->next;
    else
        q->head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    else
        q->tail = m->prev;
    engine_timer_set(w, &m->timer, 0);
    for (size_t i = 0; i < q->due_count; i++)
        if (q->due[i] == m)
            q->due[i] = NULL;
    m->seg->live--;
    seg_maybe_gc(w, m->seg);
    metrics_sub(&w->m->queue_size, 1);
    for (uint16_t i = 0; i < m->rcpt_count; i++) {
        free(m->rcpts[i].reason);
        free(m->rcpts[i].remote);
    }
    free(m->rcpts);
    free(m->chunks);
    free(m->env);
    free(m);
}

/* msg_maybe_finish - free m when every recipient is done and nothing refers to it. */
static void msg_maybe_finish(struct worker *w, struct qmsg *m)
{
    if (m->rcpt_open || m->jobs || m->writes || m->bouncing)
        return;
    msg_free(w, m);
}

/* msg_schedule - after a round: the next one in the backoff, or at once when it is due. */
static void msg_schedule(struct worker *w, struct qmsg *m)
{
    uint64_t d = backoff_ms(w, m->attempts ? m->attempts : 1);

    if (m->held || m->deleted || w->queue->stopping)
        return;
    m->next_ms = w->now_ms + d;
    engine_timer_set(w, &m->timer, m->next_ms);
}

/* ---- outcome records ---- */

/* status_done - an outcome record is durable (or failed: then it is written again). */
static void status_done(struct worker *w, struct spool_msg_w *mw, int err)
{
    struct qwrite *qw = (struct qwrite *)mw;
    struct qmsg *m = qw->m;
    struct queue *q = w->queue;
    const unsigned char *ix = qw->payload + sizeof(struct spool_status_hdr);
    uint32_t n = (qw->len - (uint32_t)sizeof(struct spool_status_hdr)) / 2;

    q->writes--;
    spool_msg_release(mw);
    if (err) {
        if (qw->job) {
            ctl_job_answer(qw->job, w, err, NULL, 0);
            qw->job = NULL;
        }
        if (qw->outcome == SPOOL_OUT_DELIVERED || qw->outcome == SPOOL_OUT_FAILED ||
            qw->outcome == SPOOL_OUT_DELETED) {
            /* The outcome must reach the disk: try again (a duplicate record is harmless). */
            qw->next = q->pending;
            q->pending = qw;
            if (!q->tick.next)
                engine_timer_set(w, &q->tick, w->now_ms + QUEUE_WRITE_RETRY_MS);
            return;
        }
        /* A HOLD or RELEASE that is not on disk did not happen: the answer said so, and the
         * message goes back to what the disk says (a restart would find it that way). */
        if (qw->outcome == SPOOL_OUT_HOLD && m->held) {
            m->held = false;
            if (!m->jobs)
                msg_due(w, m);
        } else if (qw->outcome == SPOOL_OUT_RELEASE && !m->held) {
            m->held = true;
            engine_timer_set(w, &m->timer, 0);
        }
        m->writes--;
        free(qw);
        msg_maybe_finish(w, m);
        return;
    }
    switch (qw->outcome) {
    case SPOOL_OUT_DELIVERED:
    case SPOOL_OUT_FAILED:
        for (uint32_t i = 0; i < n; i++) {
            uint16_t k;
            memcpy(&k, ix + 2 * i, 2);
            if (k < m->rcpt_count && m->rcpts[k].state != RS_DONE) {
                m->rcpts[k].state = RS_DONE;
                m->rcpt_open--;
            }
        }
        break;
    case SPOOL_OUT_DELETED:
        for (uint16_t k = 0; k < m->rcpt_count; k++)
            if (m->rcpts[k].state != RS_DONE) {
                m->rcpts[k].state = RS_DONE;
                m->rcpt_open--;
            }
        break;
    default:
        break;
    }
    if (qw->job)
        ctl_job_answer(qw->job, w, 0, NULL, 0);
    m->writes--;
    free(qw);
    msg_maybe_finish(w, m);
}

/* append_kick - write the outcomes waiting for closed segment g, as one append followed by
 * one fdatasync, unless one is running (group commit, as the writer does). */
static void append_kick(struct worker *w, struct qseg *g)
{
    struct queue *q = w->queue;
    struct io_uring_sqe *sqe;
    size_t len = 0, off = 0;
    int slot;

    if (g->app_slot >= 0 || !g->app_pend)
        return;
    for (slot = 0; slot < QUEUE_APPENDERS_MAX && q->appenders[slot]; slot++)
        ;
    if (slot == QUEUE_APPENDERS_MAX)
        return;  /* retried when an append ends */
    g->app_flight = g->app_pend;
    g->app_pend = NULL;
    for (struct qwrite *qw = g->app_flight; qw; qw = qw->next)
        len += spool_rec_span(qw->len);
    g->app_buf = rr_calloc(1, len);
    for (struct qwrite *qw = g->app_flight; qw; qw = qw->next) {
        struct spool_rec rec = { .type = SPOOL_REC_STATUS, .len = qw->len, .qid = qw->m->qid,
                                 .seq = (uint32_t)qw->outcome };
        struct iovec iov = { qw->payload, qw->len };
        spool_rec_seal(&rec, g->key, &iov, 1);
        memcpy(g->app_buf + off, &rec, sizeof(rec));
        memcpy(g->app_buf + off + sizeof(rec), qw->payload, qw->len);
        off += spool_rec_span(qw->len);
    }
    g->app_slot = slot;
    q->appenders[slot] = g;
    q->append_gen[slot]++;
    if (io_uring_sq_space_left(&w->ring) < 2)
        io_uring_submit(&w->ring);
    sqe = engine_sqe(w);
    io_uring_prep_write(sqe, g->fd, g->app_buf, (unsigned)len, g->append_off);
    sqe->flags |= IOSQE_IO_LINK;  /* a failed or short write cancels the sync */
    io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
    sqe = engine_sqe(w);
    io_uring_prep_fsync(sqe, g->fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_QUEUE_APPEND, (uint32_t)slot, q->append_gen[slot]));
    g->append_off += len;
    q->ops++;
    metrics_add(&w->m->spool_fsyncs, 1);
}

/* append_done - an append and its sync finished: its outcomes are durable, or they are tried
 * again (through the current segment: after a failure this one takes no more appends). */
static void append_done(struct worker *w, uint32_t slot, uint32_t gen, int res)
{
    struct queue *q = w->queue;
    struct qseg *g = slot < QUEUE_APPENDERS_MAX ? q->appenders[slot] : NULL;
    struct qwrite *qw, *next;

    if (!g || q->append_gen[slot] != gen)
        return;
    q->appenders[slot] = NULL;
    g->app_slot = -1;
    free(g->app_buf);
    g->app_buf = NULL;
    if (res < 0) {
        char id[17];
        spool_qid_format(g->id, id);
        log_event(LOG_ERROR, "event=spool_error segment=%s op=append error=%s", id,
                  log_q(strerror(-res)));
        g->appendable = false;
    }
    for (qw = g->app_flight, g->app_flight = NULL; qw; qw = next) {
        next = qw->next;
        status_done(w, &qw->mw, res < 0 ? res : 0);
    }
    if (!g->appendable) {  /* what waited goes the other way */
        for (qw = g->app_pend, g->app_pend = NULL; qw; qw = next) {
            next = qw->next;
            q->writes--;
            status_submit(w, qw);
        }
    }
    append_kick(w, g);
    seg_maybe_gc(w, g);
}

/* appender_free - whether another segment can start an append now. */
static bool appender_free(const struct queue *q)
{
    for (unsigned i = 0; i < QUEUE_APPENDERS_MAX; i++)
        if (!q->appenders[i])
            return true;
    return false;
}

/* status_submit - put the record in the current segment, or wait for room. */
static void status_submit(struct worker *w, struct qwrite *qw)
{
    struct queue *q = w->queue;
    struct qseg *where, *own = qw->m->seg;

    /* Best: in the message's own segment, through the writer while it has the segment open,
     * else appended by the queue; the segment then holds all there is to know about its
     * messages and goes with them. */
    if (!own->appendable && spool_writes_available(w, 1) &&
        spool_msg_begin_in(w, &qw->mw, own->id) == 0) {
        qw->mw.done = status_done;
        q->writes++;
        spool_msg_status(w, &qw->mw, qw->m->qid, qw->outcome, qw->payload, qw->len);
        return;
    }
    if (own->appendable && own->fd >= 0 && (own->app_slot >= 0 || appender_free(q))) {
        qw->next = own->app_pend;
        own->app_pend = qw;
        q->writes++;
        append_kick(w, own);
        return;
    }
    /* The own segment takes no appends (its writes failed): the current one, which then
     * stays until the message's segment is gone. */
    if (!spool_writes_available(w, 1) || spool_msg_begin(w, &qw->mw) < 0) {
        qw->next = q->pending;
        q->pending = qw;
        if (!q->tick.next)
            engine_timer_set(w, &q->tick, w->now_ms + QUEUE_WRITE_RETRY_MS);
        return;
    }
    /* The record's segment must outlive the message's: note it before the write. */
    where = seg_find(q, qw->mw.seg_id);
    if (where)
        seg_depend(qw->m->seg, where);
    qw->mw.done = status_done;
    q->writes++;
    spool_msg_status(w, &qw->mw, qw->m->qid, qw->outcome, qw->payload, qw->len);
}

/* status_write - record an outcome for recipients idx[0..n) of m (n = 0: the whole message). */
static void status_write(struct worker *w, struct qmsg *m, enum spool_outcome outcome,
                         const uint16_t *idx, uint32_t n, struct ctl_job *job)
{
    uint32_t len = (uint32_t)sizeof(struct spool_status_hdr) + 2 * n;
    struct qwrite *qw = rr_calloc(1, sizeof(*qw) + len);
    struct spool_status_hdr h = { (uint64_t)wall_ms() };

    qw->w = w;
    qw->m = m;
    qw->outcome = outcome;
    qw->job = job;
    qw->len = len;
    memcpy(qw->payload, &h, sizeof(h));
    for (uint32_t i = 0; i < n; i++) {
        memcpy(qw->payload + sizeof(h) + 2 * i, &idx[i], 2);
        if (m->rcpts[idx[i]].state != RS_DONE)  /* a delete may have finished it meanwhile */
            m->rcpts[idx[i]].state = RS_WRITING;
    }
    m->writes++;
    status_submit(w, qw);
}

/* pending_retry - outcome writes that waited for room. */
static void pending_retry(struct worker *w)
{
    struct queue *q = w->queue;
    struct qwrite *qw = q->pending;

    q->pending = NULL;
    while (qw) {
        struct qwrite *next = qw->next;
        status_submit(w, qw);
        qw = next;
    }
}

/* ---- bounces ---- */

static void bounce_read_next(struct worker *w, struct qbounce *b);

/* bounce_give_up - the DSN could not be spooled now: its recipients wait for the next round. */
static void bounce_give_up(struct worker *w, struct qmsg *m, const uint16_t *idx, uint16_t n)
{
    for (uint16_t i = 0; i < n; i++)
        if (m->rcpts[idx[i]].state != RS_DONE)
            m->rcpts[idx[i]].state = RS_FAILED;
    m->bouncing--;
    if (!m->deleted && !m->jobs)
        msg_schedule(w, m);
}

/* bounce_free - the bounce is over (spooled or given up). */
static void bounce_free(struct worker *w, struct qbounce *b)
{
    struct queue *q = w->queue;

    q->bounces[b->slot] = NULL;
    spool_msg_release(&b->mw);
    free(b->idx);
    free(b->head);
    free(b->text);
    free(b->env);
    free(b);
}

/* bounce_outcomes - the failed recipients of a bounce get their outcome records. */
static void bounce_outcomes(struct worker *w, struct qmsg *m, const uint16_t *idx, uint16_t n)
{
    m->bouncing--;
    if (!m->deleted)  /* deleted meanwhile: its DELETED record says it all */
        status_write(w, m, SPOOL_OUT_FAILED, idx, n, NULL);
    msg_maybe_finish(w, m);
}

/* bounce_spooled - the DSN is durable: queue it and record the failures. */
static void bounce_spooled(struct worker *w, struct spool_msg_w *mw, int err)
{
    struct qbounce *b = (struct qbounce *)mw;
    struct qmsg *m = b->m;
    char qid[17], dqid[17];

    spool_qid_format(m->qid, qid);
    spool_qid_format(mw->qid, dqid);
    if (err) {
        log_event(LOG_WARN, "event=bounce_failed id=%s error=%s", qid, log_q(strerror(-err)));
        bounce_give_up(w, m, b->idx, b->count);
        bounce_free(w, b);
        msg_maybe_finish(w, m);
        return;
    }
    log_event(LOG_INFO, "event=bounce_queued id=%s dsn=%s to=<%s> nrcpt=%u", qid, dqid,
              log_q(m->from), b->count);
    queue_add(w, mw->qid, mw->seg_id, b->env, b->env_len, spool_msg_chunks(mw), mw->chunks,
              mw->bytes);
    bounce_outcomes(w, m, b->idx, b->count);
    bounce_free(w, b);
}

/* eight_bit - whether any byte of p is not 7-bit (the bounce's BODY= follows its bytes). */
static bool eight_bit(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)p[i] & 0x80)
            return true;
    return false;
}

/* bounce_write - build the DSN from the headers read and spool it. */
static void bounce_write(struct worker *w, struct qbounce *b)
{
    struct qmsg *m = b->m;
    struct dsn_rcpt *r = rr_calloc(b->count, sizeof(*r));
    struct dsn_in in = { 0 };
    char qid[17];
    struct iovec iov;
    size_t cap;
    bool expired = false;

    spool_qid_format(m->qid, qid);
    for (uint16_t i = 0; i < b->count; i++) {
        struct qrcpt *x = &m->rcpts[b->idx[i]];
        r[i].addr = x->addr;
        r[i].status = x->status;
        r[i].remote_mta = x->remote;
        r[i].diag = x->reason;
        r[i].diag_is_smtp = x->remote != NULL;
        expired |= !strcmp(x->status, "4.4.7") || !strcmp(x->status, "5.4.7");
    }
    in.reporting_mta = w->cfg->hostname;
    in.qid = qid;
    in.arrival = m->arrival_ms / 1000;
    in.now = wall_ms() / 1000;
    in.sender = m->from;
    in.rcpts = r;
    in.rcpt_count = b->count;
    in.headers = b->head;
    in.headers_len = dsn_header_end(b->head ? b->head : "", b->head_len);
    in.expired = expired;
    in.boundary_seed = (uint32_t)rnd(w->queue);
    b->text = dsn_build(&in, &b->text_len);
    free(r);
    if (!b->text || spool_msg_begin(w, &b->mw) < 0 || !spool_writes_available(w, 1)) {
        if (b->text && b->mw.seg)
            spool_msg_abort(w, &b->mw);
        bounce_give_up(w, m, b->idx, b->count);
        bounce_free(w, b);
        msg_maybe_finish(w, m);
        return;
    }
    cap = 256 + strlen(w->cfg->hostname) + strlen(m->from);
    b->env = rr_malloc(cap);
    spool_qid_format(b->mw.qid, qid);
    b->env_len = (uint32_t)snprintf(b->env, cap,
                                    "qid %s\ntime %lld\nsize %zu\nip 127.0.0.1\nhelo %s\n"
                                    "login \nlistener bounce\nproto local\nbody %s\n"
                                    "smtputf8 %d\nfrom \nrcpt %s\n",
                                    qid, (long long)wall_ms(), b->text_len, w->cfg->hostname,
                                    eight_bit(b->text, b->text_len) ? "8BITMIME" : "7BIT",
                                    m->smtputf8, m->from);
    iov = (struct iovec){ b->text, b->text_len };
    b->mw.done = bounce_spooled;
    spool_msg_commit(w, &b->mw, ENGINE_BUF_NONE, &iov, 1, b->env, b->env_len);
}

/* bounce_read_next - read the next piece of the original's beginning, or build the DSN. */
static void bounce_read_next(struct worker *w, struct qbounce *b)
{
    struct qmsg *m = b->m;
    struct io_uring_sqe *sqe;
    uint32_t want;

    if (b->chunk >= m->chunk_count || b->head_len >= DSN_HEADERS_BYTES_MAX ||
        m->seg->fd < 0 || (b->head_len && dsn_header_end(b->head, b->head_len) < b->head_len)) {
        bounce_write(w, b);
        return;
    }
    want = m->chunks[b->chunk].len;
    if (want > DSN_HEADERS_BYTES_MAX - b->head_len)
        want = DSN_HEADERS_BYTES_MAX - b->head_len;
    if (b->head_cap < b->head_len + want) {
        b->head_cap = b->head_len + want;
        b->head = rr_realloc(b->head, b->head_cap);
    }
    sqe = engine_sqe(w);
    io_uring_prep_read(sqe, m->seg->fd, b->head + b->head_len, want, m->chunks[b->chunk].off);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_QUEUE_READ, b->slot, b->gen));
    w->queue->ops++;
}

/* bounce_start - the failed recipients of m: a DSN to the sender, or (sender <>) nothing. */
static void bounce_start(struct worker *w, struct qmsg *m, uint16_t *idx, uint16_t n)
{
    struct queue *q = w->queue;
    struct qbounce *b;
    uint32_t slot;

    m->bouncing++;
    if (!m->from[0]) {
        bounce_outcomes(w, m, idx, n);  /* never bounce a bounce */
        free(idx);
        return;
    }
    for (slot = 0; slot < QUEUE_BOUNCES_MAX && q->bounces[slot]; slot++)
        ;
    if (slot == QUEUE_BOUNCES_MAX) {
        bounce_give_up(w, m, idx, n);  /* too many at once: the next round tries again */
        free(idx);
        return;
    }
    b = rr_calloc(1, sizeof(*b));
    b->m = m;
    b->slot = slot;
    b->gen = ++q->bounce_gen;
    b->idx = idx;
    b->count = n;
    q->bounces[slot] = b;
    for (uint16_t i = 0; i < n; i++)
        m->rcpts[idx[i]].state = RS_WRITING;  /* not bounced twice by a later round */
    bounce_read_next(w, b);
}

/* bounce_read_done - a piece of the original arrived. */
static void bounce_read_done(struct worker *w, uint32_t slot, uint32_t gen, int res)
{
    struct qbounce *b = slot < QUEUE_BOUNCES_MAX ? w->queue->bounces[slot] : NULL;

    if (!b || b->gen != gen)
        return;
    if (res <= 0) {
        b->chunk = b->m->chunk_count;  /* unreadable: bounce with what we have */
    } else {
        b->head_len += (uint32_t)res;
        b->chunk++;
    }
    bounce_read_next(w, b);
}

/* ---- rounds and jobs ---- */

/* dest_key - the destination of recipient r: its domain, lower-cased ("" = smarthost). */
static void dest_key(struct worker *w, const struct qrcpt *r, char *key, size_t cap)
{
    const char *at;
    size_t i = 0;

    key[0] = 0;
    if (w->cfg->smarthost[0])
        return;
    at = strrchr(r->addr, '@');
    for (at = at ? at + 1 : ""; *at && i + 1 < cap; at++)
        key[i++] = (char)tolower((unsigned char)*at);
    key[i] = 0;
}

/* dest_get - the destination for key, created when new. */
static struct qdest *dest_get(struct worker *w, const char *key)
{
    struct queue *q = w->queue;
    size_t h = hash_str(key) & (q->dcap - 1);
    struct qdest *d;

    for (d = q->dtab[h]; d; d = d->hnext)
        if (!strcmp(d->key, key))
            return d;
    d = rr_calloc(1, sizeof(*d));
    snprintf(d->key, sizeof(d->key), "%s", key);
    d->hnext = q->dtab[h];
    q->dtab[h] = d;
    q->dcount++;
    return d;
}

/* rcpt_fail - recipient k of m failed for good: it waits for the round's bounce. */
static void rcpt_fail(struct worker *w, struct qmsg *m, uint16_t k, const char *status,
                      const char *reason, const char *remote)
{
    struct qrcpt *r = &m->rcpts[k];
    char qid[17];

    spool_qid_format(m->qid, qid);
    r->state = RS_FAILED;
    snprintf(r->status, sizeof(r->status), "%s", status);
    free(r->reason);
    free(r->remote);
    r->reason = rr_strdup(reason ? reason : "");
    r->remote = remote ? rr_strdup(remote) : NULL;
    metrics_add(&w->m->deliveries[2], 1);
    log_event(LOG_INFO, "event=bounced id=%s to=<%s> relay=%s status=%s reason=%s", qid,
              log_q(r->addr), remote ? log_q(remote) : "none", status, log_q(r->reason));
}

/* rcpt_defer - recipient k of m stays open; why is kept for ringctl. */
static void rcpt_defer(struct worker *w, struct qmsg *m, uint16_t k, const char *why,
                       const char *remote)
{
    char qid[17];

    spool_qid_format(m->qid, qid);
    m->rcpts[k].state = RS_PENDING;
    copy_text(m->last, sizeof(m->last), why);
    metrics_add(&w->m->deliveries[1], 1);
    log_event(LOG_INFO, "event=deferred id=%s to=<%s> relay=%s reason=%s", qid,
              log_q(m->rcpts[k].addr), remote ? log_q(remote) : "none", log_q(why));
}

/* job_drop - stopping: the job's recipients stay open in the spool, no round ends. */
static void job_drop(struct qjob *j)
{
    for (uint16_t k = 0; k < j->count; k++)
        j->m->rcpts[j->idx[k]].state = RS_PENDING;
    j->m->jobs--;
    free(j->idx);
    free(j);
}

/* job_end - a job is over: free it; the round ends with the message's last job. */
static void job_end(struct worker *w, struct qjob *j)
{
    struct qmsg *m = j->m;

    free(j->idx);
    free(j);
    m->jobs--;
    if (!m->jobs)
        msg_round_end(w, m);
}

/* job_defer_all - every recipient of j stays open. */
static void job_defer_all(struct worker *w, struct qjob *j, const char *why)
{
    for (uint16_t i = 0; i < j->count; i++)
        if (!j->m->deleted)
            rcpt_defer(w, j->m, j->idx[i], why, NULL);
    job_end(w, j);
}

/* job_fail_all - every recipient of j failed for good (status, reason). */
static void job_fail_all(struct worker *w, struct qjob *j, const char *status,
                         const char *why)
{
    for (uint16_t i = 0; i < j->count; i++)
        if (!j->m->deleted)
            rcpt_fail(w, j->m, j->idx[i], status, why, NULL);
    job_end(w, j);
}

/* dest_take_all - unlink every ready job of d (to defer or fail them). */
static struct qjob *dest_take_all(struct qdest *d)
{
    struct qjob *j = d->ready_head;

    d->ready_head = d->ready_tail = NULL;
    d->ready_count = 0;
    return j;
}

/* msg_round - start a delivery round for m: one job per destination of its open rcpts. */
static void msg_round(struct worker *w, struct qmsg *m)
{
    const struct rr_config *cfg = w->cfg;
    struct qdest *touched[16];
    unsigned ntouched = 0;
    struct qdest **dests;

    if (m->held || m->deleted || m->jobs || w->queue->stopping)
        return;
    if (wall_ms() - m->arrival_ms > (int64_t)cfg->queue_lifetime_s * 1000) {
        char why[QUEUE_REPLY_BYTES_MAX + 64];
        snprintf(why, sizeof(why), "message expired after %us in the queue; last error: %s",
                 cfg->queue_lifetime_s, m->last[0] ? m->last : "none");
        for (uint16_t k = 0; k < m->rcpt_count; k++)
            if (m->rcpts[k].state == RS_PENDING)
                rcpt_fail(w, m, k, "4.4.7", why, NULL);
        msg_round_end(w, m);
        return;
    }
    m->attempts++;
    /* Each open recipient's destination once, then one job per destination (in the order
     * of first appearance), without comparing every pair of recipients. */
    dests = rr_calloc(m->rcpt_count, sizeof(*dests));
    for (uint16_t k = 0; k < m->rcpt_count; k++) {
        char key[DNS_NAME_BYTES_MAX];
        if (m->rcpts[k].state != RS_PENDING)
            continue;
        dest_key(w, &m->rcpts[k], key, sizeof(key));
        dests[k] = dest_get(w, key);
    }
    for (uint16_t k = 0; k < m->rcpt_count; k++) {
        struct qdest *d = dests[k];
        struct qjob *j;
        uint16_t n = 0;

        if (!d)
            continue;  /* not open, or already in an earlier job of this round */
        j = rr_calloc(1, sizeof(*j));
        j->m = m;
        j->d = d;
        j->idx = rr_malloc((size_t)(m->rcpt_count - k) * sizeof(*j->idx));
        for (uint16_t i = k; i < m->rcpt_count && n < QUEUE_JOB_RCPTS_MAX; i++) {
            if (dests[i] != d)
                continue;
            dests[i] = NULL;
            m->rcpts[i].state = RS_ACTIVE;
            j->idx[n++] = i;
        }
        j->count = n;
        m->jobs++;
        if (d->ready_tail)
            d->ready_tail->next = j;
        else
            d->ready_head = j;
        d->ready_tail = j;
        d->ready_count++;
        if (ntouched < 16)
            touched[ntouched++] = d;
        else
            dest_kick(w, d);
    }
    free(dests);
    if (!m->jobs) {  /* nothing to send (only failures waiting for their bounce) */
        msg_round_end(w, m);
        return;
    }
    for (unsigned i = 0; i < ntouched; i++)
        dest_kick(w, touched[i]);
}

/* msg_round_end - every job of the round is back: bounce the failed, schedule the open. */
static void msg_round_end(struct worker *w, struct qmsg *m)
{
    uint16_t *idx = NULL, n = 0;
    bool open = false;

    if (m->deleted) {
        msg_maybe_finish(w, m);
        return;
    }
    for (uint16_t k = 0; k < m->rcpt_count; k++) {
        if (m->rcpts[k].state == RS_FAILED) {
            if (!idx)
                idx = rr_malloc(m->rcpt_count * sizeof(*idx));
            idx[n++] = k;
        } else if (m->rcpts[k].state == RS_PENDING) {
            open = true;
        }
    }
    if (n)
        bounce_start(w, m, idx, n);
    if (open)
        msg_schedule(w, m);
    msg_maybe_finish(w, m);
}

/* ---- destinations ---- */

/* dest_backoff - d failed as a whole: no connection to it until its backoff ends. */
static void dest_backoff(struct worker *w, struct qdest *d, const char *why)
{
    struct qjob *j, *next;

    /* Many connections fail together in an outage: that is one failure of the destination,
     * not one per connection, or the backoff would jump to retry_max at once. */
    if (d->retry_ms <= w->now_ms) {
        d->fails++;
        d->retry_ms = w->now_ms + backoff_ms(w, d->fails);
    }
    copy_text(d->last, sizeof(d->last), why);
    for (j = dest_take_all(d); j; j = next) {
        next = j->next;
        job_defer_all(w, j, d->last);
    }
}

/* dest_resolved - the next hop's addresses (or why there are none). */
static void dest_resolved(struct worker *w, void *arg, const struct dns_result *r)
{
    struct qdest *d = arg;
    const struct rr_config *cfg = w->cfg;
    uint16_t port = (uint16_t)cfg->relay_port;
    struct qjob *j, *next;
    const char *colon;

    d->state = DS_IDLE;
    if (!d->key[0] && (colon = strrchr(cfg->smarthost, ':')))
        port = (uint16_t)atoi(colon + 1);
    if ((r->status == DNS_NXDOMAIN || r->status == DNS_NULLMX) && d->key[0]) {
        const char *status = r->status == DNS_NULLMX ? "5.1.10" : "5.1.2";
        char why[DNS_NAME_BYTES_MAX + 160];
        snprintf(why, sizeof(why), "%s: %s", d->key[0] ? d->key : cfg->smarthost, r->error);
        for (j = dest_take_all(d); j; j = next) {
            next = j->next;
            job_fail_all(w, j, status, why);
        }
        return;
    }
    if (r->status != DNS_OK) {
        dest_backoff(w, d, r->error);
        return;
    }
    d->target_count = 0;
    for (unsigned h = 0; h < r->host_count; h++)
        for (unsigned a = 0; a < r->hosts[h].addr_count && d->target_count < QUEUE_TARGETS_MAX;
             a++) {
            struct sockaddr_storage *ss = &d->targets[d->target_count];
            *ss = r->hosts[h].addrs[a];
            if (ss->ss_family == AF_INET)
                ((struct sockaddr_in *)ss)->sin_port = htons(port);
            else
                ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
            copy_text(d->target_names[d->target_count], sizeof(d->target_names[0]),
                      r->hosts[h].name);
            d->target_count++;
        }
    if (!d->target_count) {
        dest_backoff(w, d, "no address for the next hop");
        return;
    }
    d->state = DS_READY;
    d->expires_ms = w->now_ms + QUEUE_DEST_TTL_MS;
    dest_kick(w, d);
}

/* smarthost_literal - "[ip]:port" or "ip:port" smarthost into d's single target. */
static bool smarthost_literal(struct worker *w, struct qdest *d)
{
    const char *sh = w->cfg->smarthost;
    char host[DNS_NAME_BYTES_MAX];
    const char *colon = strrchr(sh, ':');
    size_t len = colon ? (size_t)(colon - sh) : strlen(sh);
    uint16_t port = colon ? (uint16_t)atoi(colon + 1) : 25;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&d->targets[0];
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&d->targets[0];

    if (sh[0] == '[' && len >= 2 && sh[len - 1] == ']') {
        sh++;
        len -= 2;
    }
    if (len >= sizeof(host))
        return false;
    memcpy(host, sh, len);
    host[len] = 0;
    memset(&d->targets[0], 0, sizeof(d->targets[0]));
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
    } else {
        return false;
    }
    copy_text(d->target_names[0], sizeof(d->target_names[0]), host);
    d->target_count = 1;
    d->state = DS_READY;
    d->expires_ms = w->now_ms + QUEUE_DEST_TTL_MS;  /* a reload may change it */
    return true;
}

/* dest_kick - open connections for d's ready jobs, resolving it first if needed. */
static void dest_kick(struct worker *w, struct qdest *d)
{
    const struct rr_config *cfg = w->cfg;

    if (!d->ready_count || w->queue->stopping)
        return;
    if (d->retry_ms > w->now_ms) {
        char why[QUEUE_REPLY_BYTES_MAX + 64];
        struct qjob *j, *next;
        snprintf(why, sizeof(why), "%s", d->last[0] ? d->last : "destination backed off");
        for (j = dest_take_all(d); j; j = next) {
            next = j->next;
            job_defer_all(w, j, why);
        }
        return;
    }
    if (d->state == DS_RESOLVING)
        return;
    if (!d->key[0] && !cfg->smarthost[0]) {
        struct qjob *j, *next;
        for (j = dest_take_all(d); j; j = next) {
            next = j->next;
            job_fail_all(w, j, "5.1.2", "recipient address has no domain");
        }
        return;
    }
    if (d->state != DS_READY || d->expires_ms <= w->now_ms) {
        if (!d->key[0] && smarthost_literal(w, d)) {
            /* ready at once */
        } else {
            char host[DNS_NAME_BYTES_MAX];
            d->state = DS_RESOLVING;
            if (!d->key[0]) {
                const char *colon = strrchr(cfg->smarthost, ':');
                size_t len = colon ? (size_t)(colon - cfg->smarthost) : strlen(cfg->smarthost);
                snprintf(host, sizeof(host), "%.*s", (int)len, cfg->smarthost);
                dns_resolve_host(w, host, dest_resolved, d);
            } else {
                dns_resolve_mx(w, d->key, dest_resolved, d);
            }
            return;
        }
    }
    while (d->ready_count && smtp_client_resume(w, d))
        ;
    while (d->conns < cfg->dest_concurrency && d->conns < d->ready_count) {
        d->conns++;
        smtp_client_open(w, d);
    }
}

/* queue_job_take - the next ready job of d for a connection. */
struct qjob *queue_job_take(struct worker *w, struct qdest *d)
{
    struct qjob *j;

    if (w->queue->stopping || d->retry_ms > w->now_ms)
        return NULL;
    while ((j = d->ready_head)) {
        d->ready_head = j->next;
        if (!d->ready_head)
            d->ready_tail = NULL;
        d->ready_count--;
        j->next = NULL;
        if (!j->m->deleted)
            return j;
        job_end(w, j);
    }
    return NULL;
}

/* queue_job_done - per-recipient results of a transaction. */
void queue_job_done(struct worker *w, struct qjob *j, const uint8_t *res,
                    const char *const *reply, const char *remote)
{
    struct qmsg *m = j->m;
    uint16_t *ok = rr_malloc(j->count * sizeof(*ok));
    uint16_t n = 0;
    char qid[17];
    bool any_ok = false;

    spool_qid_format(m->qid, qid);
    for (uint16_t i = 0; i < j->count; i++) {
        uint16_t k = j->idx[i];
        struct qrcpt *r = &m->rcpts[k];
        if (m->deleted)
            break;
        if (res[i] == JR_OK) {
            int64_t lat = wall_ms() - m->arrival_ms;
            ok[n++] = k;
            any_ok = true;
            metrics_add(&w->m->deliveries[0], 1);
            metrics_observe_delivery(&w->m->delivery_latency, lat > 0 ? (uint64_t)lat * 1000000 : 0);
            log_event(LOG_INFO, "event=delivered id=%s to=<%s> relay=%s reply=%s", qid,
                      log_q(r->addr), log_q(remote), log_q(reply[i] ? reply[i] : ""));
        } else if (res[i] == JR_PERM) {
            char status[12];
            reply_status(reply[i], "5.0.0", status);
            rcpt_fail(w, m, k, status, reply[i] ? reply[i] : "rejected", remote);
        } else {
            rcpt_defer(w, m, k, reply[i] ? reply[i] : "not delivered", remote);
        }
    }
    if (any_ok)
        j->d->fails = 0;
    if (n)
        status_write(w, m, SPOOL_OUT_DELIVERED, ok, n, NULL);
    free(ok);
    job_end(w, j);
}

/* queue_job_requeue - back to the front of its destination's queue. */
void queue_job_requeue(struct worker *w, struct qjob *j)
{
    struct qdest *d = j->d;

    if (w->queue->stopping) {  /* nothing takes it any more */
        job_drop(j);
        return;
    }
    j->next = d->ready_head;
    d->ready_head = j;
    if (!d->ready_tail)
        d->ready_tail = j;
    d->ready_count++;
}

/* queue_dest_failed - a connection to d failed before delivering anything. */
void queue_dest_failed(struct worker *w, struct qdest *d, const char *why, bool permanent)
{
    struct qjob *j, *next;

    if (!permanent) {
        dest_backoff(w, d, why);
        return;
    }
    for (j = dest_take_all(d); j; j = next) {
        next = j->next;
        job_fail_all(w, j, "5.0.0", why);
    }
}

/* queue_conn_gone - one connection fewer; more may be needed for what waits. */
void queue_conn_gone(struct worker *w, struct qdest *d)
{
    d->conns--;
    dest_kick(w, d);
}

/* ---- entry points ---- */

/* queue_add - a newly spooled message. */
void queue_add(struct worker *w, uint64_t qid, uint64_t seg_id, const char *env,
               uint32_t env_len, const struct spool_chunk *chunks, uint32_t chunk_count,
               uint64_t size)
{
    struct queue *q = w->queue;
    struct qseg *g = seg_find(q, seg_id);
    struct qmsg *m;
    char id[17];

    spool_qid_format(qid, id);
    if (!g) {
        /* Every segment is announced when it opens; reaching here is a broken invariant. */
        log_event(LOG_ERROR, "event=bug what=queue_segment_unknown id=%s", id);
        g = seg_new(q, seg_id, -1, true);
    }
    m = msg_new(w, qid, g, env, env_len, chunks, chunk_count, size);
    if (!m) {
        log_event(LOG_ERROR, "event=queue_error id=%s error=bad_envelope", id);
        return;
    }
    msg_due(w, m);
}

/* sweep_fired - forget destinations nobody uses (their state is only a cache and a backoff
 * that has run out), so that the table does not grow with every domain ever seen. */
static void sweep_fired(struct worker *w, struct engine_timer *t)
{
    struct queue *q = w->queue;

    for (size_t i = 0; i < q->dcap; i++) {
        struct qdest **pp = &q->dtab[i];
        while (*pp) {
            struct qdest *d = *pp;
            if (!d->ready_count && !d->conns && d->state != DS_RESOLVING &&
                d->retry_ms <= w->now_ms) {
                *pp = d->hnext;
                q->dcount--;
                free(d);
            } else {
                pp = &d->hnext;
            }
        }
    }
    if (!q->stopping)
        engine_timer_set(w, t, w->now_ms + QUEUE_DEST_SWEEP_MS);
}

/* tick_fired - retry outcome writes that found no room, and keep retrying while some wait. */
static void tick_fired(struct worker *w, struct engine_timer *t)
{
    struct queue *q = w->queue;

    pending_retry(w);
    while (q->gc_retry) {
        struct qseg *g = q->gc_retry;
        q->gc_retry = g->gc_next;
        g->gc_next = q->gc_wait;
        q->gc_wait = g;
    }
}

/* queue_worker_busy - anything of the queue still in flight. */
bool queue_worker_busy(struct worker *w)
{
    struct queue *q = w->queue;

    return q && (q->ops || q->writes || q->pending || smtp_client_busy(w));
}

/* queue_worker_stop - stop delivering; what is open stays in the spool. */
void queue_worker_stop(struct worker *w)
{
    struct queue *q = w->queue;

    if (!q || q->stopping)
        return;
    q->stopping = true;
    for (struct qmsg *m = q->head; m; m = m->next)
        engine_timer_set(w, &m->timer, 0);
    for (size_t i = 0; i < q->dcap; i++)
        for (struct qdest *d = q->dtab[i]; d; d = d->hnext) {
            struct qjob *j, *next;
            for (j = dest_take_all(d); j; j = next) {
                next = j->next;
                job_drop(j);
            }
        }
    smtp_client_stop(w, false);
}

/* queue_worker_stop_now - past the stop deadline: connections close, waiting writes go (their
 * recipients are simply delivered again after the restart). */
void queue_worker_stop_now(struct worker *w)
{
    struct queue *q = w->queue;

    if (!q)
        return;
    smtp_client_stop(w, true);
    while (q->pending) {
        struct qwrite *qw = q->pending;
        q->pending = qw->next;
        if (qw->job)
            ctl_job_answer(qw->job, w, -ECANCELED, NULL, 0);
        qw->m->writes--;
        spool_msg_release(&qw->mw);
        free(qw);
    }
}

/* queue_run_deferred - end of a loop pass: start due rounds, removals, waiting writes. */
void queue_run_deferred(struct worker *w)
{
    struct queue *q = w->queue;

    if (q->due_count) {
        size_t n = q->due_count;
        struct qmsg **due = q->due;
        q->due = NULL;
        q->due_count = q->due_cap = 0;
        for (size_t i = 0; i < n; i++) {
            if (!due[i])
                continue;
            due[i]->next_ms = 0;
            msg_round(w, due[i]);
        }
        free(due);
    }
    if (q->pending && spool_writes_available(w, 1))
        pending_retry(w);
    gc_start(w);
}

/* queue_complete - ring completions of the queue's own operations. */
void queue_complete(struct worker *w, enum engine_op op, uint32_t slot, uint32_t gen, int res)
{
    struct queue *q = w->queue;

    switch (op) {
    case OP_QUEUE_READ:
        q->ops--;
        bounce_read_done(w, slot, gen, res);
        break;
    case OP_QUEUE_UNLINK:
        q->ops--;
        gc_unlinked(w, res);
        break;
    case OP_QUEUE_DIRSYNC:
        q->ops--;
        gc_synced(w, res);
        break;
    case OP_QUEUE_APPEND:
        q->ops--;
        append_done(w, slot, gen, res);
        break;
    default:
        smtp_client_complete(w, op, slot, gen, res);
        break;
    }
}

/* ---- ringctl ---- */

/* msg_state - how ringctl shows m. */
static const char *msg_state(const struct qmsg *m)
{
    if (m->deleted)
        return "deleting";
    if (m->held)
        return "held";
    if (m->jobs || m->bouncing || m->writes)
        return "active";
    return m->attempts ? "deferred" : "queued";
}

/* list_append - one line for m. */
static void list_append(struct worker *w, const struct qmsg *m, char **buf, size_t *len,
                        size_t *cap)
{
    char qid[17];
    int64_t age = (wall_ms() - m->arrival_ms) / 1000;
    size_t need = 512 + strlen(m->from) + m->env_len + strlen(m->last) * 4;
    char next[32];
    int n;

    if (*len + need > *cap) {
        *cap = (*cap + need) * 2;
        *buf = rr_realloc(*buf, *cap);
    }
    spool_qid_format(m->qid, qid);
    if (m->held || m->deleted)
        snprintf(next, sizeof(next), "-");
    else if (m->next_ms > 1)
        snprintf(next, sizeof(next), "%" PRIu64 "s",
                 m->next_ms > w->now_ms ? (m->next_ms - w->now_ms + 999) / 1000 : 0);
    else
        snprintf(next, sizeof(next), "now");
    n = snprintf(*buf + *len, *cap - *len,
                 "%s age=%llds size=%" PRIu64 " from=<%s> state=%s attempts=%u next=%s rcpts=",
                 qid, (long long)(age < 0 ? 0 : age), m->size, log_q(m->from), msg_state(m),
                 m->attempts, next);
    *len += (size_t)n;
    for (uint16_t k = 0, first = 1; k < m->rcpt_count; k++) {
        if (m->rcpts[k].state == RS_DONE)
            continue;
        n = snprintf(*buf + *len, *cap - *len, "%s<%s>", first ? "" : ",",
                     log_q(m->rcpts[k].addr));
        *len += (size_t)n;
        first = 0;
        if (*len + 600 > *cap) {
            *cap *= 2;
            *buf = rr_realloc(*buf, *cap);
        }
    }
    n = snprintf(*buf + *len, *cap - *len, " last=\"%s\"\n", m->last);
    *len += (size_t)n;
}

/* queue_ctl - a ringctl request for this worker's messages. */
void queue_ctl(struct worker *w, struct ctl_job *j)
{
    struct queue *q = w->queue;
    struct qmsg *m;

    switch (ctl_job_cmd(j)) {
    case CTL_QUEUE: {
        char *buf = NULL;
        size_t len = 0, cap = 0, lines = 0;
        for (m = q->head; m && lines < QUEUE_CTL_LINES_MAX; m = m->next, lines++)
            list_append(w, m, &buf, &len, &cap);
        ctl_job_answer(j, w, 0, buf, len);
        free(buf);
        return;
    }
    case CTL_FLUSH:
        for (size_t i = 0; i < q->dcap; i++)
            for (struct qdest *d = q->dtab[i]; d; d = d->hnext) {
                d->retry_ms = 0;
                d->fails = 0;
            }
        for (m = q->head; m; m = m->next)
            if (!m->held && !m->deleted && !m->jobs)
                msg_due(w, m);
        ctl_job_answer(j, w, 0, NULL, 0);
        return;
    default:
        break;
    }
    m = msg_find(q, ctl_job_qid(j));
    if (!m || m->deleted) {
        ctl_job_answer(j, w, -ENOENT, NULL, 0);
        return;
    }
    switch (ctl_job_cmd(j)) {
    case CTL_DELETE: {
        char qid[17];
        spool_qid_format(m->qid, qid);
        m->deleted = true;
        engine_timer_set(w, &m->timer, 0);
        log_event(LOG_INFO, "event=deleted id=%s", qid);
        status_write(w, m, SPOOL_OUT_DELETED, NULL, 0, j);
        break;
    }
    case CTL_HOLD:
        m->held = true;
        engine_timer_set(w, &m->timer, 0);
        status_write(w, m, SPOOL_OUT_HOLD, NULL, 0, j);
        break;
    case CTL_RELEASE:
        m->held = false;
        status_write(w, m, SPOOL_OUT_RELEASE, NULL, 0, j);
        if (!m->jobs)
            msg_due(w, m);
        break;
    default:
        ctl_job_answer(j, w, -EINVAL, NULL, 0);
        break;
    }
}

/* take_share - this worker's segments, dependencies and open messages from r. */
static void take_share(struct worker *w, struct queue_recovered *r)
{
    struct queue *q = w->queue;
    struct qseg **map = rr_calloc(r->seg_count ? r->seg_count : 1, sizeof(*map));

    for (uint32_t i = 0; i < r->seg_count; i++) {
        int fd;
        if (r->segs[i].worker != w->id)
            continue;
        fd = openat(engine.spool_dir_fd, r->segs[i].name, O_RDWR | O_CLOEXEC);
        map[i] = seg_new(q, r->segs[i].id, fd, false);
        /* Outcomes are appended after its last valid record (a torn tail is overwritten). */
        map[i]->appendable = fd >= 0 && r->segs[i].info.seg_id == r->segs[i].id;
        map[i]->append_off = r->segs[i].info.end_off;
        map[i]->key = r->segs[i].info.key;
    }
    for (size_t e = 0; e + 1 < r->edge_count; e += 2) {
        struct qseg *rec = map[r->edges[e]], *msg = map[r->edges[e + 1]];
        if (rec && msg)
            seg_depend(msg, rec);
    }
    for (size_t i = 0; i < r->msg_count; i++) {
        struct rec_msg *rm = r->msgs[i];
        struct qmsg *m;
        uint32_t open = 0;
        for (uint32_t k = 0; k < rm->rcpt_count; k++)
            open += !rm->done[k];
        /* Finished ones are not created at all: freeing one here could leave its segment
         * looking empty while an open message of it is still to come. */
        if (!map[rm->seg] || rm->deleted || !open)
            continue;
        m = msg_new(w, rm->qid, map[rm->seg], rm->env, rm->env_len, rm->chunks, rm->chunk_count,
                    rm->size);
        if (!m)
            continue;
        for (uint16_t k = 0; k < m->rcpt_count && k < rm->rcpt_count; k++)
            if (rm->done[k]) {
                m->rcpts[k].state = RS_DONE;
                m->rcpt_open--;
            }
        m->held = rm->held;
        if (!m->held)
            msg_due(w, m);
    }
    for (uint32_t i = 0; i < r->seg_count; i++)
        if (map[i])
            seg_maybe_gc(w, map[i]);
    free(map);
}

/* queue_worker_init - tables, the worker's share of the recovered spool, the client. */
int queue_worker_init(struct worker *w, struct queue_recovered *r)
{
    struct queue *q = rr_calloc(1, sizeof(*q));
    int err;

    w->queue = q;
    q->mcap = 1024;
    q->mtab = rr_calloc(q->mcap, sizeof(*q->mtab));
    q->scap = 256;
    q->stab = rr_calloc(q->scap, sizeof(*q->stab));
    q->dcap = 1024;
    q->dtab = rr_calloc(q->dcap, sizeof(*q->dtab));
    q->tick.fire = tick_fired;
    q->sweep.fire = sweep_fired;
    engine_timer_set(w, &q->sweep, engine_now_ms() + QUEUE_DEST_SWEEP_MS);
    if (getrandom(&q->rng, sizeof(q->rng), 0) != sizeof(q->rng) || !q->rng)
        q->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)w->id;
    err = smtp_client_init(w);
    if (err < 0)
        return err;
    if (r)
        take_share(w, r);
    return 0;
}

/* queue_worker_fini - free what is left after the loop. */
void queue_worker_fini(struct worker *w)
{
    struct queue *q = w->queue;

    if (!q)
        return;
    smtp_client_fini(w);
    while (q->head) {
        struct qmsg *m = q->head;
        m->rcpt_open = 0;
        m->jobs = m->writes = 0;
        m->bouncing = 0;
        msg_free(w, m);
    }
    for (size_t i = 0; i < q->dcap; i++)
        while (q->dtab[i]) {
            struct qdest *d = q->dtab[i];
            q->dtab[i] = d->hnext;
            free(d);
        }
    for (size_t i = 0; i < q->scap; i++)
        while (q->stab[i]) {
            struct qseg *g = q->stab[i];
            q->stab[i] = g->hnext;
            if (g->fd >= 0)
                close(g->fd);
            for (int k = 0; k < 2; k++)
                while (k ? g->app_flight : g->app_pend) {
                    struct qwrite *qw = k ? g->app_flight : g->app_pend;
                    if (k)
                        g->app_flight = qw->next;
                    else
                        g->app_pend = qw->next;
                    if (qw->job)
                        ctl_job_answer(qw->job, w, -ECANCELED, NULL, 0);
                    free(qw);
                }
            free(g->app_buf);
            free(g->dependents);
            free(g);
        }
    while (q->pending) {
        struct qwrite *qw = q->pending;
        q->pending = qw->next;
        if (qw->job)
            ctl_job_answer(qw->job, w, -ECANCELED, NULL, 0);
        spool_msg_release(&qw->mw);
        free(qw);
    }
    for (unsigned i = 0; i < QUEUE_BOUNCES_MAX; i++)
        if (q->bounces[i])
            bounce_free(w, q->bounces[i]);
    free(q->due);
    free(q->mtab);
    free(q->stab);
    free(q->dtab);
    free(q);
    w->queue = NULL;
}
