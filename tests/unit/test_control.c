/*
 * test_control.c - the queue-request transport of the control socket (core/control_job.c)
 * without a daemon: the request and queue id parsers and the answer merging, table-driven;
 * then jobs travelling through real mailboxes to worker threads and back, including the
 * answers that come after the main thread gave up (run under ASan, a job freed too early or
 * never is a failure).
 *
 * queue_ctl() is this file's: what a worker does with a job is set per worker by `mode`.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/control_job.h"
#include "core/engine.h"
#include "core/queue.h"
#include "tests/unit/check.h"

#define WORKERS 4
#define ID "0123456789ABCDEF"
#define ID_VALUE 0x0123456789abcdefull

/* ---- parsers ---- */

static const struct qid_row {
    const char *in;
    int err;
    uint64_t qid;
} qid_rows[] = {
    { "0123456789abcdef", 0, ID_VALUE },
    { "0123456789ABCDEF", 0, ID_VALUE },
    { "0123456789aBcDeF", 0, ID_VALUE },
    { "FFFFFFFFFFFFFFFF", 0, UINT64_MAX },
    { "0000000000000000", 0, 0 },
    { "0123456789abcde", -EINVAL, 0 },     /* 15 digits */
    { "0123456789abcdef0", -EINVAL, 0 },   /* 17 */
    { "0x23456789abcdef", -EINVAL, 0 },
    { "0123456789abcdeg", -EINVAL, 0 },
    { " 123456789abcdef", -EINVAL, 0 },
    { "+123456789abcdef", -EINVAL, 0 },
    { "0123456789abcde\n", -EINVAL, 0 },
    { "", -EINVAL, 0 },
};

static const struct req_row {
    const char *in;
    enum ctl_req want;
    enum ctl_cmd cmd;
    uint64_t qid;
} req_rows[] = {
    { "queue", CTL_REQ_JOB, CTL_QUEUE, 0 },
    { "flush", CTL_REQ_JOB, CTL_FLUSH, 0 },
    { "delete 0123456789abcdef", CTL_REQ_JOB, CTL_DELETE, ID_VALUE },
    { "hold 0123456789ABCDEF", CTL_REQ_JOB, CTL_HOLD, ID_VALUE },
    { "release fedcba9876543210", CTL_REQ_JOB, CTL_RELEASE, 0xfedcba9876543210ull },
    { "stats", CTL_REQ_OTHER, 0, 0 },
    { "", CTL_REQ_OTHER, 0, 0 },
    { "queue x", CTL_REQ_OTHER, 0, 0 },     /* the daemon says unknown command */
    { "queue ", CTL_REQ_OTHER, 0, 0 },
    { "queues", CTL_REQ_OTHER, 0, 0 },
    { "QUEUE", CTL_REQ_OTHER, 0, 0 },
    { "deleted 0123456789abcdef", CTL_REQ_OTHER, 0, 0 },
    { "delete", CTL_REQ_BAD_ID, 0, 0 },
    { "delete ", CTL_REQ_BAD_ID, 0, 0 },
    { "delete  0123456789abcdef", CTL_REQ_BAD_ID, 0, 0 },
    { "delete 0123456789abcdef ", CTL_REQ_BAD_ID, 0, 0 },
    { "delete 0123456789abcdef 1", CTL_REQ_BAD_ID, 0, 0 },
    { "hold 0123456789abcde", CTL_REQ_BAD_ID, 0, 0 },
    { "hold 0123456789abcdeZ", CTL_REQ_BAD_ID, 0, 0 },
    { "release 0x0123456789abcd", CTL_REQ_BAD_ID, 0, 0 },
    { "release ALL", CTL_REQ_BAD_ID, 0, 0 },
};

static void test_parsers(void)
{
    for (size_t i = 0; i < RR_ARRAY_LEN(qid_rows); i++) {
        const struct qid_row *r = &qid_rows[i];
        uint64_t q = 42;
        int err = ctl_parse_qid(r->in, strlen(r->in), &q);
        CHECK(err == r->err, "qid \"%s\": %d, want %d", r->in, err, r->err);
        CHECK(err || q == r->qid, "qid \"%s\": %llx", r->in, (unsigned long long)q);
    }
    for (size_t i = 0; i < RR_ARRAY_LEN(req_rows); i++) {
        const struct req_row *r = &req_rows[i];
        enum ctl_cmd cmd = CTL_QUEUE;
        uint64_t q = 42;
        enum ctl_req got = ctl_parse_request(r->in, &cmd, &q);
        CHECK(got == r->want, "request \"%s\": %d, want %d", r->in, got, r->want);
        if (got == CTL_REQ_JOB && r->want == CTL_REQ_JOB)
            CHECK(cmd == r->cmd && q == r->qid, "request \"%s\": cmd %d qid %llx", r->in,
                  cmd, (unsigned long long)q);
    }
    CHECK(ctl_count_lines("", 0) == 0, "empty");
    CHECK(ctl_count_lines("a\n", 2) == 1, "one");
    CHECK(ctl_count_lines("a\nb", 3) == 2, "last line without end");
    CHECK(ctl_count_lines("\n\na\n\n", 5) == 1, "empty lines do not count");
}

/* ---- merging ---- */

#define PART(status, text) { NULL, true, status, (char *)(text), sizeof(text) - 1, 0 }
#define NOANSWER { NULL, false, 0, NULL, 0, 0 }
#define L1 "00000000000000A1 1m <a@x> b@y - -\n"
#define L2 "00000000000000b2 2m <a@x> c@y - -\n"
#define L3 "00000000000000C3 3m <a@x> d@y - -\n"

static const struct merge_row {
    const char *name;
    enum ctl_cmd cmd;
    struct ctl_part parts[3];
    unsigned count;
    struct ctl_merge_limits lim;
    const char *want;
} merge_rows[] = {
    { "listing sorted across workers by id value, any case", CTL_QUEUE,
      { PART(0, L3 L1), PART(0, ""), PART(0, L2) }, 3, { 100, 1 << 20 },
      L1 L2 L3 "-- 3 messages\n" },
    { "empty queue", CTL_QUEUE, { PART(0, ""), PART(-ENOENT, "") }, 2, { 100, 1 << 20 },
      "-- 0 messages\n" },
    { "one message", CTL_QUEUE, { PART(0, L2) }, 1, { 100, 1 << 20 }, L2 "-- 1 message\n" },
    { "lines without an id last, in arrival order; last line end added", CTL_QUEUE,
      { PART(0, "zz\n" L2 "yy"), PART(0, "xx\n") }, 2, { 100, 1 << 20 },
      L2 "zz\nyy\nxx\n-- 4 messages\n" },
    { "id must be followed by a blank", CTL_QUEUE,
      { PART(0, "00000000000000A1x\n" L2) }, 1, { 100, 1 << 20 },
      L2 "00000000000000A1x\n-- 2 messages\n" },
    { "control characters shown as ?", CTL_QUEUE,
      { PART(0, "0000000000000001 <a\033[2J\r\x7f@x>\tz\n") }, 1, { 100, 1 << 20 },
      "0000000000000001 <a?[2J??@x>\tz\n-- 1 message\n" },
    { "truncated by lines", CTL_QUEUE, { PART(0, L3 L1), PART(0, L2) }, 2, { 2, 1 << 20 },
      L1 L2 "... truncated: 2 of 3 messages shown\n-- 3 messages\n" },
    { "truncated by bytes", CTL_QUEUE, { PART(0, L3 L1), PART(0, L2) }, 2,
      { 100, sizeof(L1) - 1 + 5 }, L1 "... truncated: 1 of 3 messages shown\n-- 3 messages\n" },
    { "listing: a worker failed", CTL_QUEUE, { PART(0, L1), PART(-EIO, "") }, 2,
      { 100, 1 << 20 }, "error: queue: worker 1: Input/output error\n" },
    { "listing: a worker did not answer", CTL_QUEUE, { PART(0, L1), NOANSWER, NOANSWER }, 3,
      { 100, 1 << 20 }, "error: timeout: 2 of 3 workers did not answer\n" },
    { "flush", CTL_FLUSH, { PART(0, ""), PART(-ENOENT, ""), PART(0, "") }, 3, { 1, 1 },
      "ok: flushed\n" },
    { "flush failed", CTL_FLUSH, { PART(0, ""), PART(-ENOSPC, "") }, 2, { 1, 1 },
      "error: flush: worker 1: No space left on device\n" },
    { "flush timeout", CTL_FLUSH, { PART(0, ""), NOANSWER }, 2, { 1, 1 },
      "error: timeout: 1 of 2 workers did not answer\n" },
    { "delete found", CTL_DELETE, { PART(-ENOENT, ""), PART(0, ""), PART(-ENOENT, "") }, 3,
      { 1, 1 }, "ok: deleted " ID "\n" },
    { "hold found while another is late", CTL_HOLD, { NOANSWER, PART(0, ""), NOANSWER }, 3,
      { 1, 1 }, "ok: held " ID "\n" },
    { "release found despite another's failure", CTL_RELEASE,
      { PART(-EIO, ""), PART(0, "") }, 2, { 1, 1 }, "ok: released " ID "\n" },
    { "no such message", CTL_DELETE, { PART(-ENOENT, ""), PART(-ENOENT, "") }, 2, { 1, 1 },
      "error: no such message " ID "\n" },
    { "not found yet, one late", CTL_HOLD, { PART(-ENOENT, ""), NOANSWER }, 2, { 1, 1 },
      "error: timeout: 1 of 2 workers did not answer\n" },
    { "a worker failed", CTL_HOLD, { PART(-ENOENT, ""), PART(-EIO, ""), NOANSWER }, 3, { 1, 1 },
      "error: hold " ID ": Input/output error\n" },
};

static void test_merge(void)
{
    for (size_t i = 0; i < RR_ARRAY_LEN(merge_rows); i++) {
        const struct merge_row *r = &merge_rows[i];
        struct ctl_part parts[3];
        char *out = NULL;
        size_t len;

        memcpy(parts, r->parts, sizeof(parts));
        for (unsigned k = 0; k < r->count; k++)
            parts[k].lines = ctl_count_lines(parts[k].text, parts[k].len);
        len = ctl_merge_answers(r->cmd, ID_VALUE, parts, r->count, &r->lim, &out);
        CHECK(out && len == strlen(out) && !strcmp(out, r->want), "%s:\n%s---\nwant:\n%s---",
              r->name, out ? out : "(null)", r->want);
        free(out);
    }
    {   /* a part cut at copy still counts every message it had */
        struct ctl_part p[1] = { PART(0, L1) };
        struct ctl_merge_limits lim = { 100, 1 << 20 };
        char *out;
        p[0].lines = 7;
        ctl_merge_answers(CTL_QUEUE, 0, p, 1, &lim, &out);
        CHECK(!strcmp(out, L1 "... truncated: 1 of 7 messages shown\n-- 7 messages\n"), "%s", out);
        free(out);
    }
}

/* ---- jobs through mailboxes and worker threads ---- */

enum mode { ANSWER_NOW, ANSWER_ENOENT, KEEP };

static struct worker *workers;
static enum mode mode[WORKERS];
static struct ctl_job *kept[WORKERS];   /* jobs a KEEP worker holds, answered later */
static unsigned polled[WORKERS];

/* queue_ctl - the test's worker: answer at once, or keep the job for later. */
void queue_ctl(struct worker *w, struct ctl_job *j)
{
    char line[64];
    int len;

    polled[w->id]++;
    switch (mode[w->id]) {
    case ANSWER_NOW:
        if (ctl_job_cmd(j) == CTL_QUEUE) {
            /* worker i holds message id 4-i, so the merge has to reorder */
            len = snprintf(line, sizeof(line), "%016X w%u\n", WORKERS - w->id, w->id);
            ctl_job_answer(j, w, 0, line, (size_t)len);
        } else {
            ctl_job_answer(j, w, ctl_job_qid(j) == w->id ? 0 : -ENOENT, NULL, 0);
        }
        break;
    case ANSWER_ENOENT:
        ctl_job_answer(j, w, -ENOENT, NULL, 0);
        break;
    case KEEP:
        kept[w->id] = j;
        break;
    }
}

/* poll_thread - one wake-up of a worker, on its own thread. */
static void *poll_thread(void *arg)
{
    control_worker_poll(arg);
    return NULL;
}

/* run_workers - every worker takes its jobs, concurrently. */
static void run_workers(void)
{
    pthread_t t[WORKERS];

    for (unsigned i = 0; i < WORKERS; i++)
        pthread_create(&t[i], NULL, poll_thread, &workers[i]);
    for (unsigned i = 0; i < WORKERS; i++)
        pthread_join(t[i], NULL);
}

/* ask - a job through all workers; the merged answer (caller frees). */
static char *ask(enum ctl_cmd cmd, uint64_t qid, uint64_t timeout_ms, bool *complete)
{
    struct ctl_job *j = ctl_job_new(cmd, qid, WORKERS);
    char *out;

    for (unsigned i = 0; i < WORKERS; i++)
        ctl_job_post(j, &workers[i]);
    run_workers();
    *complete = ctl_job_wait(j, timeout_ms);
    ctl_job_merge(j, &out);
    ctl_job_put(j);
    return out;
}

/* late_answers - the kept jobs answered after the main thread let go (freed by the last). */
static void *late_answers(void *arg)
{
    int status = (int)(intptr_t)arg;

    for (unsigned i = 0; i < WORKERS; i++)
        if (kept[i]) {
            struct ctl_job *j = kept[i];
            kept[i] = NULL;
            ctl_job_answer(j, &workers[i], status, "0000000000000009 late\n", 22);
        }
    return NULL;
}

static void test_jobs(void)
{
    struct timespec t0, t1;
    bool complete;
    char *out;
    pthread_t t;

    workers = calloc(WORKERS, sizeof(*workers));
    for (unsigned i = 0; i < WORKERS; i++) {
        workers[i].id = i;
        CHECK(control_worker_init(&workers[i]) == 0, "init %u", i);
    }

    out = ask(CTL_QUEUE, 0, 5000, &complete);
    CHECK(complete && !strcmp(out, "0000000000000001 w3\n0000000000000002 w2\n"
                              "0000000000000003 w1\n0000000000000004 w0\n-- 4 messages\n"),
          "queue: %s", out);
    free(out);
    for (unsigned i = 0; i < WORKERS; i++)
        CHECK(polled[i] == 1, "worker %u polled %u times", i, polled[i]);

    out = ask(CTL_DELETE, 2, 5000, &complete);
    CHECK(complete && !strcmp(out, "ok: deleted 0000000000000002\n"), "delete: %s", out);
    free(out);
    out = ask(CTL_HOLD, 77, 5000, &complete);
    CHECK(complete && !strcmp(out, "error: no such message 000000000000004D\n"), "hold: %s", out);
    free(out);

    /* Worker 3 keeps the job: the main thread times out, lets go, and the late answer frees
     * the job (ASan would see a use after free or a leak otherwise). */
    mode[3] = KEEP;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    out = ask(CTL_QUEUE, 0, 100, &complete);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(!complete && !strcmp(out, "error: timeout: 1 of 4 workers did not answer\n"), "%s", out);
    CHECK(t1.tv_sec - t0.tv_sec < 3, "the wait is bounded");
    free(out);
    CHECK(kept[3] != NULL, "worker 3 kept the job");
    pthread_create(&t, NULL, late_answers, (void *)(intptr_t)0);
    pthread_join(t, NULL);

    /* A delete is decided by the worker that had the message; late ones do not hold it up. */
    mode[0] = mode[2] = KEEP;
    mode[1] = ANSWER_NOW;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    out = ask(CTL_DELETE, 1, 5000, &complete);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(complete && !strcmp(out, "ok: deleted 0000000000000001\n"), "early delete: %s", out);
    CHECK(t1.tv_sec - t0.tv_sec < 3, "decided without waiting for the others");
    free(out);
    pthread_create(&t, NULL, late_answers, (void *)(intptr_t)-ENOENT);
    pthread_join(t, NULL);
    for (unsigned i = 0; i < WORKERS; i++)
        mode[i] = ANSWER_NOW;

    {   /* Jobs a worker never took are answered -ECANCELED by its fini; a full mailbox
         * answers -EBUSY at once; a worker without a mailbox -ECANCELED. */
        struct ctl_job *j[CTL_MAILBOX_JOBS_MAX + 1];
        struct worker *w = &workers[0];
        for (unsigned i = 0; i <= CTL_MAILBOX_JOBS_MAX; i++) {
            j[i] = ctl_job_new(CTL_FLUSH, 0, 1);
            ctl_job_post(j[i], w);
        }
        CHECK(ctl_job_wait(j[CTL_MAILBOX_JOBS_MAX], 0), "65th answered at once");
        ctl_job_merge(j[CTL_MAILBOX_JOBS_MAX], &out);
        CHECK(!strcmp(out, "error: flush: worker 0: Device or resource busy\n"), "%s", out);
        free(out);
        CHECK(!ctl_job_wait(j[0], 0), "first still waiting");
        control_worker_fini(w);
        CHECK(w->ctl == NULL, "mailbox freed");
        for (unsigned i = 0; i < CTL_MAILBOX_JOBS_MAX; i++)
            CHECK(ctl_job_wait(j[i], 0), "job %u answered by fini", i);
        ctl_job_merge(j[0], &out);
        CHECK(!strcmp(out, "error: flush: worker 0: Operation canceled\n"), "%s", out);
        free(out);
        for (unsigned i = 0; i <= CTL_MAILBOX_JOBS_MAX; i++)
            ctl_job_put(j[i]);

        out = ask(CTL_FLUSH, 0, 5000, &complete);  /* worker 0 has no mailbox now */
        CHECK(complete && !strcmp(out, "error: flush: worker 0: Operation canceled\n"), "%s",
              out);
        free(out);
    }
    for (unsigned i = 0; i < WORKERS; i++)
        control_worker_fini(&workers[i]);
    free(workers);
}

int main(void)
{
    test_parsers();
    test_merge();
    test_jobs();
    return check_done("test_control");
}
