/*
 * queue.h - the queue manager: every spooled message is delivered onward, retried or bounced.
 *
 * Each worker delivers the messages it spooled (and the spool segments it was given at
 * start-up) on its own ring: a message is split by next hop into jobs, jobs wait in their
 * destination's queue, and outbound SMTP connections (net/smtp_client.c) take them in turn,
 * several per connection. Per recipient the outcome is written to the spool as a STATUS
 * record (spool.h), in the message's own segment, before the message counts as finished, so a
 * restart redelivers exactly the recipients that have no durable outcome. A segment file is
 * removed once every message whose content it holds is finished; removals are batched and
 * followed by one directory sync.
 *
 * Delivery is at least once. The window for a duplicate: the next hop's 250 to the final dot
 * arrived, and the daemon died before the STATUS record that says so was synced (the next
 * group fdatasync, at most commit_delay plus one fdatasync later). After a restart those
 * recipients are delivered again.
 */
#ifndef RR_QUEUE_H
#define RR_QUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/engine.h"
#include "core/spool.h"

struct ctl_job;

/* Messages found in the spool at start-up, handed to the workers before they run. */
struct queue_recovered;

/* queue_recover - read every segment of the spool directory (blocking; start-up, main
 * thread): complete messages and outcome records; count = workers that will take them.
 * NULL and *err set on failure. *messages receives the count of undelivered messages. */
struct queue_recovered *queue_recover(int spool_dir_fd, unsigned count, uint64_t *messages,
                                      int *err);

/* queue_recovered_free - after every worker took its share. */
void queue_recovered_free(struct queue_recovered *r);

/* queue_worker_init - this worker's queue, with its share of r (may be NULL). 0 or -errno. */
int queue_worker_init(struct worker *w, struct queue_recovered *r);

/* queue_worker_fini - free everything (after the loop ended). */
void queue_worker_fini(struct worker *w);

/* queue_worker_busy - outbound connections or spool operations of the queue in flight. */
bool queue_worker_busy(struct worker *w);

/* queue_worker_stop - SIGTERM: no new deliveries; connections finish their transaction and
 * quit. Undelivered messages stay in the spool. */
void queue_worker_stop(struct worker *w);

/* queue_worker_stop_now - the stop deadline passed: close every connection now. */
void queue_worker_stop_now(struct worker *w);

/* queue_segment_ready - the spool writer of w opened segment seg_id (fd open for reading and
 * writing); the queue keeps its own descriptor for reading messages back. */
void queue_segment_ready(struct worker *w, uint64_t seg_id, int fd);

/* queue_segment_retired - the writer closed seg_id: no more messages go there. Outcome
 * records for its messages are appended by the queue from end_off on (records sealed with
 * key); end_off 0: the segment takes no appends. */
void queue_segment_retired(struct worker *w, uint64_t seg_id, uint64_t end_off, uint32_t key);

/* queue_add - a message just became durable in segment seg_id: schedule it. env is its
 * envelope (copied), chunks its content (copied). */
void queue_add(struct worker *w, uint64_t qid, uint64_t seg_id, const char *env,
               uint32_t env_len, const struct spool_chunk *chunks, uint32_t chunk_count,
               uint64_t size);

/* queue_ctl - a ringctl request; answers with ctl_job_answer(), now or once durable. */
void queue_ctl(struct worker *w, struct ctl_job *j);

/* queue_complete - completion of an OP_OUT_*, OP_QUEUE_* operation. */
void queue_complete(struct worker *w, enum engine_op op, uint32_t slot, uint32_t gen, int res);

/* queue_run_deferred - work that waits for the end of the loop pass (batched removals). */
void queue_run_deferred(struct worker *w);

#endif
