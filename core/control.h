/*
 * control.h - the control socket: ringctl talks to the running daemon through it.
 *
 * Served by the main thread (never by a worker): one request line per connection, a text
 * answer, then the daemon closes. Requests: "stats", "queue", "flush", "delete ID",
 * "hold ID", "release ID" (ID: 16 hex digits). The answers are described in control.c and
 * control_job.c.
 */
#ifndef RR_CONTROL_H
#define RR_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

struct worker;

#define CONTROL_REQUEST_BYTES_MAX 512
#define CONTROL_TIMEOUT_MS        1000  /* a client must send its request this fast */

/* control_open - listen on cfg->control_socket (its directory is created); fd or -errno. */
int control_open(const struct rr_config *cfg);

/* control_serve - accept and answer one pending client of listening socket fd. */
void control_serve(int fd, const struct rr_config *cfg, uint64_t started_ms);

/* control_close - stop listening and remove the socket file. */
void control_close(int fd, const struct rr_config *cfg);

/*
 * Queue requests ("queue", "flush", "delete ID", "hold ID", "release ID") are answered by the
 * workers, each for the messages it holds: the main thread hands a job to every worker's
 * mailbox and wakes it; each worker answers its part, perhaps later (a hold is answered once
 * it is on disk); the main thread joins the parts, or gives up after CONTROL_JOB_TIMEOUT_MS.
 * A job is reference counted (one reference per worker, dropped by its answer), so an answer
 * given after the main thread gave up is safe; an answer never given leaks the job, so a
 * worker that holds jobs when it shuts down (queue_worker_fini) answers them -ECANCELED.
 */
#define CONTROL_JOB_TIMEOUT_MS 10000

enum ctl_cmd { CTL_QUEUE, CTL_FLUSH, CTL_DELETE, CTL_HOLD, CTL_RELEASE };

struct ctl_job;

/* ctl_job_cmd - what the job asks. */
enum ctl_cmd ctl_job_cmd(const struct ctl_job *j);

/* ctl_job_qid - the message a DELETE, HOLD or RELEASE is about. */
uint64_t ctl_job_qid(const struct ctl_job *j);

/* ctl_job_answer - worker w's part of the answer, given exactly once per job: status 0 (done;
 * for CTL_QUEUE, text holds one line per message, each ending in "\n" and starting with the
 * 16-hex-digit queue id, by which the main thread sorts), -ENOENT (no such message on this
 * worker; for CTL_QUEUE and CTL_FLUSH the same as 0 with nothing to show) or another -errno
 * (failed). text is copied (a CTL_QUEUE text beyond 32 MiB is cut at a line end); it may be
 * NULL when len is 0. Callable from the worker thread at any time after it received the job;
 * j must not be touched after the call (it may be freed by it). */
void ctl_job_answer(struct ctl_job *j, struct worker *w, int status, const char *text,
                    size_t len);

/* control_worker_init - the worker's mailbox (set-up, before the loop). 0 or -errno. */
int control_worker_init(struct worker *w);

/* control_worker_fini - answer what is left with -ECANCELED and free the mailbox. Called by
 * engine_join() after the worker's thread ended (nothing polls it then, and only the main
 * thread posts). */
void control_worker_fini(struct worker *w);

/* control_worker_poll - at a wake-up (OP_WAKE): hand every job waiting for w to queue_ctl(),
 * oldest first. Also called while the worker is stopping. */
void control_worker_poll(struct worker *w);

#endif
