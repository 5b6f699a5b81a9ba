/*
 * control_job.c - queue requests between the control socket (main thread) and the workers.
 *
 * Functions: ctl_job_new(), ctl_job_post(), ctl_job_wait(), ctl_job_merge(), ctl_job_put()
 * for the main thread; ctl_job_answer(), ctl_job_cmd(), ctl_job_qid(), control_worker_init(),
 * control_worker_poll(), control_worker_fini() for the workers; ctl_parse_qid(),
 * ctl_parse_request(), ctl_count_lines(), ctl_merge_answers() (pure).
 *
 * A job is one request sent to every worker. It is reference counted: one reference for the
 * main thread, one for each worker it was posted to, dropped by that worker's answer. The
 * main thread waits at most CONTROL_JOB_TIMEOUT_MS and then lets go of its reference; a
 * worker that answers later (a hold waits for the spool) writes into a job that still
 * exists, and the last of them frees it. Each worker has a mailbox: a mutex-protected list
 * of jobs linked through the job's part for that worker, so posting allocates nothing.
 *
 * Threads: the job's fields below its lock are guarded by it; cmd, qid and count never
 * change. A part, once answered, never changes again, so the main thread merges a snapshot
 * of the parts outside the lock while late answers may still arrive.
 *
 * Answer formats (what ctl_merge_answers() writes; every line ends in "\n"):
 *   queue      the workers' lines, sorted by the queue id each starts with (lines without
 *              one last, in arrival order), control characters shown as '?'; then, when
 *              more than CTL_QUEUE_LINES_MAX lines or CTL_QUEUE_BYTES_MAX bytes came,
 *              "... truncated: S of N messages shown"; last "-- N messages" ("-- 1 message",
 *              "-- 0 messages" for an empty queue).
 *   flush      "ok: flushed".
 *   delete ID  "ok: deleted ID", "ok: held ID", "ok: released ID" when a worker answered 0
 *   hold ID    (ID in the canonical upper-case form); "error: no such message ID" when all
 *   release ID answered -ENOENT.
 *   failures   "error: CMD ID: strerror" (delete, hold, release), "error: CMD: worker N:
 *              strerror" (queue, flush) when a worker answered another -errno;
 *              "error: timeout: K of N workers did not answer" when answers are missing.
 *
 * SECURITY: the request line comes from the control socket (mode 0660) and is parsed
 * strictly: a queue id is exactly 16 hex digits. The listing contains addresses and error
 * texts that came from the network; control characters are replaced before a terminal
 * sees them. Every answer is bounded (lines, bytes; mailbox length).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/control_job.h"
#include "core/engine.h"
#include "core/log.h"
#include "core/queue.h"

struct ctl_job {
    enum ctl_cmd cmd;             /* what is asked (immutable) */
    uint64_t qid;                 /* the message, for delete, hold, release (immutable) */
    unsigned count;               /* workers, = parts (immutable) */
    pthread_mutex_t lock;         /* guards what follows */
    pthread_cond_t answered_cond; /* broadcast at every answer; CLOCK_MONOTONIC */
    unsigned refs;                /* the poster's, plus one per worker not answered yet */
    unsigned answered;            /* parts answered */
    bool decided;                 /* delete, hold, release: one worker answered 0 */
    struct ctl_part parts[];      /* by worker id */
};

/* One worker's mailbox: jobs the main thread posted and the worker has not taken yet. */
struct ctl_mailbox {
    pthread_mutex_t lock;         /* guards what follows */
    struct ctl_job *head, *tail;  /* FIFO, linked through parts[worker id].next */
    unsigned count;               /* jobs in the list, at most CTL_MAILBOX_JOBS_MAX */
    bool closed;                  /* control_worker_fini() ran: post answers at once */
};

/* A line of a "queue" answer while it is being sorted. */
struct ctl_line {
    uint64_t key;                 /* its queue id, UINT64_MAX when it has none */
    size_t order;                 /* arrival order: ties keep it */
    const char *p;                /* its bytes, without the "\n" */
    size_t len;
};

/* ctl_cmd_name - the request verb. */
const char *ctl_cmd_name(enum ctl_cmd cmd)
{
    switch (cmd) {
    case CTL_QUEUE:   return "queue";
    case CTL_FLUSH:   return "flush";
    case CTL_DELETE:  return "delete";
    case CTL_HOLD:    return "hold";
    case CTL_RELEASE: return "release";
    }
    return "?";
}

/* cmd_done - the past tense for an "ok:" answer. */
static const char *cmd_done(enum ctl_cmd cmd)
{
    return cmd == CTL_DELETE ? "deleted" : cmd == CTL_HOLD ? "held" : "released";
}

/* cmd_has_id - whether the command names one message. */
static bool cmd_has_id(enum ctl_cmd cmd)
{
    return cmd == CTL_DELETE || cmd == CTL_HOLD || cmd == CTL_RELEASE;
}

/* hex_value - a hex digit's value, or -1. */
static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ctl_parse_qid - strict: no sign, no "0x", no spaces, exactly 16 digits. */
int ctl_parse_qid(const char *s, size_t len, uint64_t *qid)
{
    uint64_t v = 0;

    if (len != CTL_QID_DIGITS)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        int d = hex_value(s[i]);
        if (d < 0)
            return -EINVAL;
        v = v << 4 | (uint64_t)d;
    }
    *qid = v;
    return 0;
}

/* ctl_parse_request - "queue", "flush", or "delete|hold|release" SP ID; exact words, one space. */
enum ctl_req ctl_parse_request(const char *line, enum ctl_cmd *cmd, uint64_t *qid)
{
    static const struct { const char *verb; enum ctl_cmd cmd; } verbs[] = {
        { "queue", CTL_QUEUE }, { "flush", CTL_FLUSH }, { "delete", CTL_DELETE },
        { "hold", CTL_HOLD }, { "release", CTL_RELEASE },
    };

    for (size_t i = 0; i < RR_ARRAY_LEN(verbs); i++) {
        size_t n = strlen(verbs[i].verb);
        if (strncmp(line, verbs[i].verb, n) || (line[n] && line[n] != ' '))
            continue;
        *cmd = verbs[i].cmd;
        *qid = 0;
        if (!cmd_has_id(verbs[i].cmd))
            return line[n] ? CTL_REQ_OTHER : CTL_REQ_JOB;  /* "queue x" is unknown */
        if (!line[n] || ctl_parse_qid(line + n + 1, strlen(line + n + 1), qid) < 0)
            return CTL_REQ_BAD_ID;
        return CTL_REQ_JOB;
    }
    return CTL_REQ_OTHER;
}

/* ctl_count_lines - lines with at least one byte. */
size_t ctl_count_lines(const char *text, size_t len)
{
    size_t n = 0, start = 0;

    for (size_t i = 0; i <= len; i++)
        if (i == len || text[i] == '\n') {
            if (i > start)
                n++;
            start = i + 1;
        }
    return n;
}

/* line_key - the queue id a listing line starts with (then a space, a tab or its end). */
static uint64_t line_key(const char *p, size_t len)
{
    uint64_t qid;

    if (len < CTL_QID_DIGITS || (len > CTL_QID_DIGITS && p[CTL_QID_DIGITS] != ' ' &&
                                 p[CTL_QID_DIGITS] != '\t'))
        return UINT64_MAX;
    return ctl_parse_qid(p, CTL_QID_DIGITS, &qid) < 0 ? UINT64_MAX : qid;
}

/* line_cmp - by queue id, then by arrival (qsort is not stable by itself). */
static int line_cmp(const void *a, const void *b)
{
    const struct ctl_line *x = a, *y = b;

    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* merge_listing - the "queue" answer from parts that all answered 0 or -ENOENT. */
static size_t merge_listing(const struct ctl_part *parts, unsigned count,
                            const struct ctl_merge_limits *lim, char **out)
{
    struct ctl_line *lines;
    size_t n = 0, total = 0, shown = 0, bytes = 0, len = 0;
    char *buf;

    for (unsigned i = 0; i < count; i++)
        if (parts[i].status == 0) {
            n += ctl_count_lines(parts[i].text, parts[i].len);
            total += parts[i].lines;
        }
    lines = rr_malloc(n * sizeof(*lines));
    n = 0;
    for (unsigned i = 0; i < count; i++) {
        const char *t = parts[i].text;
        size_t start = 0;
        if (parts[i].status != 0)
            continue;
        for (size_t k = 0; k <= parts[i].len; k++)
            if (k == parts[i].len || t[k] == '\n') {
                if (k > start) {
                    lines[n] = (struct ctl_line){ line_key(t + start, k - start), n, t + start,
                                                  k - start };
                    n++;
                }
                start = k + 1;
            }
    }
    qsort(lines, n, sizeof(*lines), line_cmp);
    while (shown < n && shown < lim->lines_max && bytes + lines[shown].len + 1 <= lim->bytes_max)
        bytes += lines[shown++].len + 1;
    if (total < n)
        total = n;  /* a part's count cannot be below what it sent; be safe anyway */
    buf = rr_malloc(bytes + 160);
    for (size_t i = 0; i < shown; i++) {
        for (size_t k = 0; k < lines[i].len; k++) {
            unsigned char c = (unsigned char)lines[i].p[k];
            buf[len++] = (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c;
        }
        buf[len++] = '\n';
    }
    if (shown < total)
        len += (size_t)snprintf(buf + len, 80, "... truncated: %zu of %zu messages shown\n",
                                shown, total);
    len += (size_t)snprintf(buf + len, 80, "-- %zu message%s\n", total, total == 1 ? "" : "s");
    free(lines);
    *out = buf;
    return len;
}

/* ctl_merge_answers - the precedence: success, then a worker's error, then a timeout. */
size_t ctl_merge_answers(enum ctl_cmd cmd, uint64_t qid, const struct ctl_part *parts,
                         unsigned count, const struct ctl_merge_limits *lim, char **out)
{
    char line[256];
    unsigned missing = 0, failed = UINT_MAX;
    bool found = false;
    int len;

    for (unsigned i = 0; i < count; i++) {
        if (!parts[i].answered)
            missing++;
        else if (parts[i].status == 0)
            found = true;
        else if (parts[i].status != -ENOENT && failed == UINT_MAX)
            failed = i;
    }
    if (cmd == CTL_QUEUE && failed == UINT_MAX && !missing)
        return merge_listing(parts, count, lim, out);
    if (cmd_has_id(cmd) && found)
        len = snprintf(line, sizeof(line), "ok: %s %016" PRIX64 "\n", cmd_done(cmd), qid);
    else if (failed != UINT_MAX && cmd_has_id(cmd))
        len = snprintf(line, sizeof(line), "error: %s %016" PRIX64 ": %s\n", ctl_cmd_name(cmd),
                       qid, strerror(-parts[failed].status));
    else if (failed != UINT_MAX)
        len = snprintf(line, sizeof(line), "error: %s: worker %u: %s\n", ctl_cmd_name(cmd),
                       failed, strerror(-parts[failed].status));
    else if (missing)
        len = snprintf(line, sizeof(line), "error: timeout: %u of %u workers did not answer\n",
                       missing, count);
    else if (cmd == CTL_FLUSH)
        len = snprintf(line, sizeof(line), "ok: flushed\n");
    else
        len = snprintf(line, sizeof(line), "error: no such message %016" PRIX64 "\n", qid);
    *out = rr_strdup(line);
    return (size_t)len;
}

/* ctl_job_new - refs = 1 (the caller); parts all unanswered. */
struct ctl_job *ctl_job_new(enum ctl_cmd cmd, uint64_t qid, unsigned count)
{
    struct ctl_job *j = rr_calloc(1, sizeof(*j) + (size_t)count * sizeof(struct ctl_part));
    pthread_condattr_t ca;

    j->cmd = cmd;
    j->qid = qid;
    j->count = count;
    j->refs = 1;
    pthread_mutex_init(&j->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->answered_cond, &ca);
    pthread_condattr_destroy(&ca);
    return j;
}

/* job_free - with the last reference. */
static void job_free(struct ctl_job *j)
{
    for (unsigned i = 0; i < j->count; i++)
        free(j->parts[i].text);
    pthread_cond_destroy(&j->answered_cond);
    pthread_mutex_destroy(&j->lock);
    free(j);
}

/* ctl_job_put - drop one reference. */
void ctl_job_put(struct ctl_job *j)
{
    bool last;

    pthread_mutex_lock(&j->lock);
    last = --j->refs == 0;
    pthread_mutex_unlock(&j->lock);
    if (last)
        job_free(j);
}

/* ctl_job_cmd - immutable, no lock. */
enum ctl_cmd ctl_job_cmd(const struct ctl_job *j)
{
    return j->cmd;
}

/* ctl_job_qid - immutable, no lock. */
uint64_t ctl_job_qid(const struct ctl_job *j)
{
    return j->qid;
}

/* ctl_job_answer - copy outside the lock (it may be large), record, wake, drop w's reference. */
void ctl_job_answer(struct ctl_job *j, struct worker *w, int status, const char *text,
                    size_t len)
{
    size_t lines = text ? ctl_count_lines(text, len) : 0, keep = text ? len : 0;
    char *copy = NULL;
    bool last;

    if (keep > CTL_QUEUE_BYTES_MAX) {  /* cut at the last line end that fits */
        keep = CTL_QUEUE_BYTES_MAX;
        while (keep && text[keep - 1] != '\n')
            keep--;
    }
    if (keep) {
        copy = rr_malloc(keep);
        memcpy(copy, text, keep);
    }
    pthread_mutex_lock(&j->lock);
    if (w->id >= j->count || j->parts[w->id].answered) {
        /* A second answer would drop a reference that is not its own. */
        pthread_mutex_unlock(&j->lock);
        log_event(LOG_ERROR, "event=bug what=ctl_job_answered_twice worker=%u", w->id);
        free(copy);
        return;
    }
    j->parts[w->id] = (struct ctl_part){ .answered = true, .status = status, .text = copy,
                                         .len = keep, .lines = lines };
    j->answered++;
    if (status == 0 && cmd_has_id(j->cmd))
        j->decided = true;
    pthread_cond_broadcast(&j->answered_cond);
    last = --j->refs == 0;
    pthread_mutex_unlock(&j->lock);
    if (last)
        job_free(j);
}

/* ctl_job_post - a reference for w first: the worker may answer before this returns. */
void ctl_job_post(struct ctl_job *j, struct worker *w)
{
    struct ctl_mailbox *mb = w->ctl;
    int refused = -ECANCELED;

    pthread_mutex_lock(&j->lock);
    j->refs++;
    pthread_mutex_unlock(&j->lock);
    if (mb) {
        pthread_mutex_lock(&mb->lock);
        if (!mb->closed && mb->count < CTL_MAILBOX_JOBS_MAX) {
            j->parts[w->id].next = NULL;
            if (mb->tail)
                mb->tail->parts[w->id].next = j;
            else
                mb->head = j;
            mb->tail = j;
            mb->count++;
            refused = 0;
        } else if (!mb->closed) {
            refused = -EBUSY;  /* this worker has not taken its last 64 jobs: it is stuck */
        }
        pthread_mutex_unlock(&mb->lock);
    }
    if (refused)
        ctl_job_answer(j, w, refused, NULL, 0);
}

/* ctl_job_wait - timed wait on the monotonic clock. */
bool ctl_job_wait(struct ctl_job *j, uint64_t timeout_ms)
{
    struct timespec until;
    bool complete;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(timeout_ms / 1000);
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&j->lock);
    while (j->answered < j->count && !j->decided)
        if (pthread_cond_timedwait(&j->answered_cond, &j->lock, &until) == ETIMEDOUT)
            break;
    complete = j->answered == j->count || j->decided;
    pthread_mutex_unlock(&j->lock);
    return complete;
}

/* ctl_job_merge - snapshot the parts under the lock, merge outside it: a worker answering
 * late never waits for a big listing to be sorted. Answered parts are immutable and live as
 * long as the caller's reference. */
size_t ctl_job_merge(struct ctl_job *j, char **out)
{
    static const struct ctl_merge_limits lim = { CTL_QUEUE_LINES_MAX, CTL_QUEUE_BYTES_MAX };
    struct ctl_part *snap = rr_malloc((size_t)j->count * sizeof(*snap));
    size_t len;

    pthread_mutex_lock(&j->lock);
    memcpy(snap, j->parts, (size_t)j->count * sizeof(*snap));
    pthread_mutex_unlock(&j->lock);
    len = ctl_merge_answers(j->cmd, j->qid, snap, j->count, &lim, out);
    free(snap);
    return len;
}

/* control_worker_init - an empty, open mailbox. */
int control_worker_init(struct worker *w)
{
    struct ctl_mailbox *mb = rr_calloc(1, sizeof(*mb));
    int err = pthread_mutex_init(&mb->lock, NULL);

    if (err) {
        free(mb);
        return -err;
    }
    w->ctl = mb;
    return 0;
}

/* take_all - empty w's mailbox, closing it if asked; the jobs in FIFO order. */
static struct ctl_job *take_all(struct ctl_mailbox *mb, bool close_it)
{
    struct ctl_job *list;

    pthread_mutex_lock(&mb->lock);
    list = mb->head;
    mb->head = mb->tail = NULL;
    mb->count = 0;
    if (close_it)
        mb->closed = true;
    pthread_mutex_unlock(&mb->lock);
    return list;
}

/* control_worker_poll - the link is read before queue_ctl(): it may answer, and the answer
 * may free the job. */
void control_worker_poll(struct worker *w)
{
    struct ctl_job *j, *next;

    if (!w->ctl)
        return;
    for (j = take_all(w->ctl, false); j; j = next) {
        next = j->parts[w->id].next;
        queue_ctl(w, j);
    }
}

/* control_worker_fini - call once no thread can post to or poll w any more (after the
 * worker's thread ended, from the thread that posts). */
void control_worker_fini(struct worker *w)
{
    struct ctl_job *j, *next;

    if (!w->ctl)
        return;
    for (j = take_all(w->ctl, true); j; j = next) {
        next = j->parts[w->id].next;
        ctl_job_answer(j, w, -ECANCELED, NULL, 0);
    }
    pthread_mutex_destroy(&w->ctl->lock);
    free(w->ctl);
    w->ctl = NULL;
}
