/*
 * queue_recover.c - start-up recovery of the queue: read the spool, join messages and their
 * outcome records, and share the segments out to the workers.
 *
 * Functions: queue_recover(), queue_recovered_free(). Runs on the main thread before the
 * workers start: blocking file I/O is fine here.
 *
 * Outcomes are applied in the order they were written (segments by name, records by offset);
 * HOLD and RELEASE keep the newest by time. A message whose recipients all have an outcome,
 * or that was deleted, is finished: its segment only waits to be removed.
 *
 * SECURITY: the spool is ours, but records are checked by the scanner (spool.c) and every
 * recipient index from an outcome record is bounded by the message's recipient count.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/queue_int.h"
#include "core/queue_recover.h"

/* uf_find - root of segment i. */
static uint32_t uf_find(struct queue_recovered *r, uint32_t i)
{
    while (r->segs[i].parent != i) {
        r->segs[i].parent = r->segs[r->segs[i].parent].parent;
        i = r->segs[i].parent;
    }
    return i;
}

/* rec_msg_cb - one complete message of the segment being scanned. */
static int rec_msg_cb(const struct spool_msg *msg, int seg_fd, void *arg)
{
    struct queue_recovered *r = arg;
    struct rec_msg *m = rr_calloc(1, sizeof(*m));
    const char *v = NULL;
    size_t vlen, h;

    (void)seg_fd;
    m->qid = msg->qid;
    m->seg = r->cur_seg;
    m->size = msg->size;
    m->env = rr_malloc(msg->envelope_len + 1);
    memcpy(m->env, msg->envelope, msg->envelope_len);
    m->env_len = msg->envelope_len;
    m->chunks = rr_malloc((msg->chunk_count ? msg->chunk_count : 1) * sizeof(*m->chunks));
    memcpy(m->chunks, msg->chunks, msg->chunk_count * sizeof(*m->chunks));
    m->chunk_count = msg->chunk_count;
    while ((v = spool_env_get(m->env, m->env_len, "rcpt", v, &vlen)))
        m->rcpt_count++;
    m->done = rr_calloc(m->rcpt_count ? m->rcpt_count : 1, 1);
    if (r->msg_count == r->msg_cap) {
        r->msg_cap = r->msg_cap ? r->msg_cap * 2 : 1024;
        r->msgs = rr_realloc(r->msgs, r->msg_cap * sizeof(*r->msgs));
    }
    r->msgs[r->msg_count++] = m;
    if (r->msg_count * 2 > r->mcap) {
        size_t cap = r->mcap ? r->mcap * 4 : 4096;
        free(r->mtab);
        r->mtab = rr_calloc(cap, sizeof(*r->mtab));
        r->mcap = cap;
        for (size_t i = 0; i < r->msg_count; i++) {
            h = hash64(r->msgs[i]->qid) & (cap - 1);
            r->msgs[i]->hnext = r->mtab[h];
            r->mtab[h] = r->msgs[i];
        }
    } else {
        h = hash64(m->qid) & (r->mcap - 1);
        m->hnext = r->mtab[h];
        r->mtab[h] = m;
    }
    return 0;
}

/* rec_status_cb - one outcome record of the segment being scanned. */
static int rec_status_cb(const struct spool_status *st, void *arg)
{
    struct queue_recovered *r = arg;
    struct rec_status *s;

    if (r->st_count == r->st_cap) {
        r->st_cap = r->st_cap ? r->st_cap * 2 : 1024;
        r->sts = rr_realloc(r->sts, r->st_cap * sizeof(*r->sts));
    }
    s = &r->sts[r->st_count++];
    s->qid = st->qid;
    s->seg = r->cur_seg;
    s->outcome = st->outcome;
    s->time_ms = st->time_ms;
    s->count = st->rcpt_count;
    s->idx = rr_malloc((st->rcpt_count ? st->rcpt_count : 1) * sizeof(*s->idx));
    for (uint32_t i = 0; i < st->rcpt_count; i++)
        s->idx[i] = (uint16_t)(st->rcpts[2 * i] | st->rcpts[2 * i + 1] << 8);
    return 0;
}

/* rec_find - a recovered message by qid. */
static struct rec_msg *rec_find(struct queue_recovered *r, uint64_t qid)
{
    struct rec_msg *m = r->mcap ? r->mtab[hash64(qid) & (r->mcap - 1)] : NULL;

    while (m && m->qid != qid)
        m = m->hnext;
    return m;
}

/* queue_recover - read the spool: messages, outcomes, and which worker takes what. */
struct queue_recovered *queue_recover(int spool_dir_fd, unsigned count, uint64_t *messages,
                                      int *err)
{
    struct queue_recovered *r = rr_calloc(1, sizeof(*r));
    struct spool_scan_stats st = { 0 };
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int dfd = fcntl(spool_dir_fd, F_DUPFD_CLOEXEC, 0);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    uint64_t open_msgs = 0;
    unsigned next_worker = 0;

    *err = 0;
    r->workers = count ? count : 1;
    if (!d) {
        *err = -errno;
        if (dfd >= 0)
            close(dfd);
        free(r);
        return NULL;
    }
    while ((de = readdir(d))) {
        if (!spool_is_segment_name(de->d_name))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = rr_realloc(names, cap * sizeof(*names));
        }
        names[n++] = rr_strdup(de->d_name);
    }
    closedir(d);
    for (size_t i = 0; i < n; i++) {
        struct spool_seg_info info;
        int e;
        if (r->seg_count == r->seg_cap) {
            r->seg_cap = r->seg_cap ? r->seg_cap * 2 : 64;
            r->segs = rr_realloc(r->segs, r->seg_cap * sizeof(*r->segs));
        }
        r->cur_seg = r->seg_count;
        e = spool_scan_segment_status(spool_dir_fd, names[i], rec_msg_cb, rec_status_cb, r, &st,
                                      &info);
        if (e < 0) {
            log_event(LOG_ERROR, "event=spool_error segment=%s error=%s", log_q(names[i]),
                      log_q(strerror(-e)));
            *err = e;
        }
        r->segs[r->seg_count] = (struct rec_seg){ .id = strtoull(names[i], NULL, 16),
                                                  .parent = r->seg_count, .info = info };
        snprintf(r->segs[r->seg_count].name, sizeof(r->segs[0].name), "%s", names[i]);
        r->seg_count++;
        free(names[i]);
    }
    free(names);
    if (*err) {
        queue_recovered_free(r);
        return NULL;
    }
    /* Outcomes, in the order they were written (segments by name, records by offset), and
     * the dependency each one creates. HOLD and RELEASE keep the newest by time. */
    for (size_t i = 0; i < r->st_count; i++) {
        struct rec_status *s = &r->sts[i];
        struct rec_msg *m = rec_find(r, s->qid);
        if (!m)
            continue;  /* about a message that is gone: the record is dead weight */
        if (r->edge_count + 2 > r->edge_cap) {
            r->edge_cap = r->edge_cap ? r->edge_cap * 2 : 1024;
            r->edges = rr_realloc(r->edges, r->edge_cap * sizeof(*r->edges));
        }
        r->edges[r->edge_count++] = s->seg;
        r->edges[r->edge_count++] = m->seg;
        switch (s->outcome) {
        case SPOOL_OUT_DELIVERED:
        case SPOOL_OUT_FAILED:
            for (uint32_t k = 0; k < s->count; k++)
                if (s->idx[k] < m->rcpt_count)
                    m->done[s->idx[k]] = 1;
            break;
        case SPOOL_OUT_DELETED:
            m->deleted = true;
            break;
        case SPOOL_OUT_HOLD:
        case SPOOL_OUT_RELEASE:
            if (s->time_ms >= m->hold_ms) {
                m->hold_ms = s->time_ms;
                m->held = s->outcome == SPOOL_OUT_HOLD;
            }
            break;
        default:
            break;
        }
        uint32_t a = uf_find(r, r->edges[r->edge_count - 2]);
        uint32_t b = uf_find(r, r->edges[r->edge_count - 1]);
        if (a != b)
            r->segs[a].parent = b;
    }
    for (size_t i = 0; i < r->msg_count; i++) {
        struct rec_msg *m = r->msgs[i];
        uint32_t open = 0;
        for (uint32_t k = 0; k < m->rcpt_count; k++)
            open += !m->done[k];
        if (!m->deleted && open) {
            r->segs[m->seg].live++;
            open_msgs++;
        }
    }
    /* Connected segments go to one worker; components are dealt out in turn. */
    for (uint32_t i = 0; i < r->seg_count; i++)
        r->segs[i].worker = UINT32_MAX;
    for (uint32_t i = 0; i < r->seg_count; i++) {
        uint32_t root = uf_find(r, i);
        if (r->segs[root].worker == UINT32_MAX)
            r->segs[root].worker = next_worker++ % r->workers;
        r->segs[i].worker = r->segs[root].worker;
    }
    log_event(LOG_INFO, "event=spool_recovered messages=%" PRIu64 " segments=%u incomplete=%u "
              "outcomes=%zu skipped_bytes=%" PRIu64, open_msgs, r->seg_count, st.incomplete,
              r->st_count, st.bad_bytes);
    *messages = open_msgs;
    return r;
}

/* queue_recovered_free - release the recovery tables. */
void queue_recovered_free(struct queue_recovered *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->msg_count; i++) {
        free(r->msgs[i]->env);
        free(r->msgs[i]->chunks);
        free(r->msgs[i]->done);
        free(r->msgs[i]);
    }
    for (size_t i = 0; i < r->st_count; i++)
        free(r->sts[i].idx);
    free(r->msgs);
    free(r->mtab);
    free(r->sts);
    free(r->segs);
    free(r->edges);
    free(r);
}
