/*
 * control_job.h - a queue request on its way from the control socket to the workers and
 * back: the job, the workers' mailboxes, and the pure parts (request parsing, answer
 * merging) that unit tests reach without a daemon.
 *
 * The public half (ctl_job_answer() and the control_worker_*() calls a worker makes) is in
 * control.h; this header is for control.c, which serves the socket, and for the tests.
 */
#ifndef RR_CONTROL_JOB_H
#define RR_CONTROL_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/control.h"

#define CTL_QID_DIGITS       16            /* a queue id is 16 hex digits */
#define CTL_QUEUE_LINES_MAX  100000        /* lines of one "queue" answer */
#define CTL_QUEUE_BYTES_MAX  (32u << 20)   /* bytes of one "queue" answer, and of one part */
#define CTL_MAILBOX_JOBS_MAX 64            /* jobs waiting for one worker; more get -EBUSY */

/* One worker's part of a job's answer. */
struct ctl_part {
    struct ctl_job *next;         /* next job in this worker's mailbox (control_job.c only) */
    bool answered;                /* ctl_job_answer() was called for this worker */
    int status;                   /* 0, -ENOENT or -errno */
    char *text;                   /* copy of the worker's text, cut at a line end to
                                     CTL_QUEUE_BYTES_MAX; NULL when empty */
    size_t len;                   /* bytes of text */
    size_t lines;                 /* non-empty lines of the whole text, before any cut */
};

/* Bounds of a merged "queue" answer. */
struct ctl_merge_limits {
    size_t lines_max;             /* message lines shown */
    size_t bytes_max;             /* bytes of the lines shown */
};

/* What ctl_parse_request() found. */
enum ctl_req {
    CTL_REQ_OTHER = 0,            /* not a queue request ("stats", unknown...) */
    CTL_REQ_JOB = 1,              /* a queue request: *cmd (and *qid) are set */
    CTL_REQ_BAD_ID = -1,          /* delete, hold or release without a valid queue id */
};

/* ctl_cmd_name - "queue", "flush", "delete", "hold" or "release". */
const char *ctl_cmd_name(enum ctl_cmd cmd);

/* ctl_parse_qid - exactly CTL_QID_DIGITS hex digits (either case) in s[0..len). 0 or -EINVAL. */
int ctl_parse_qid(const char *s, size_t len, uint64_t *qid);

/* ctl_parse_request - classify one request line (no line end). */
enum ctl_req ctl_parse_request(const char *line, enum ctl_cmd *cmd, uint64_t *qid);

/* ctl_count_lines - non-empty lines of text[0..len) (a last line may lack its "\n"). */
size_t ctl_count_lines(const char *text, size_t len);

/* ctl_merge_answers - the client's answer from count workers' parts (see control.c for the
 * formats); *out receives a malloc'd NUL-terminated text that the caller frees. Returns its
 * length. Pure: touches nothing but its arguments. */
size_t ctl_merge_answers(enum ctl_cmd cmd, uint64_t qid, const struct ctl_part *parts,
                         unsigned count, const struct ctl_merge_limits *lim, char **out);

/* ctl_job_new - a job for workers 0..count-1, held once by the caller. */
struct ctl_job *ctl_job_new(enum ctl_cmd cmd, uint64_t qid, unsigned count);

/* ctl_job_post - put j in w's mailbox (w->id < the job's count) and take a reference for w,
 * which ctl_job_answer() drops. A worker without a mailbox, or a full or closed one, is
 * answered at once (-ECANCELED, -EBUSY). The caller wakes the worker. */
void ctl_job_post(struct ctl_job *j, struct worker *w);

/* ctl_job_wait - wait until every worker answered, or (delete, hold, release) one answered
 * 0, or timeout_ms passed. true when the answer is complete. */
bool ctl_job_wait(struct ctl_job *j, uint64_t timeout_ms);

/* ctl_job_merge - ctl_merge_answers() over what arrived so far, with the standard limits. */
size_t ctl_job_merge(struct ctl_job *j, char **out);

/* ctl_job_put - drop the caller's reference; the job is freed with the last one. */
void ctl_job_put(struct ctl_job *j);

#endif
