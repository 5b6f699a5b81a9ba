/*
 * queue_int.h - what the queue manager (core/queue.c) and the SMTP client (net/smtp_client.c)
 * share: messages, their recipients, destinations and delivery jobs. Private to those two.
 *
 * Ownership: the queue owns messages, destinations and jobs. A connection holds at most one
 * job at a time (conn->job) and gives it back with queue_job_done(); a destination counts
 * its connections and learns of each one's end through queue_conn_gone().
 */
#ifndef RR_QUEUE_INT_H
#define RR_QUEUE_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/engine.h"
#include "core/spool.h"
#include "net/dns.h"

/* hash64 - spread a 64-bit key (queue tables). */
static inline size_t hash64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k;
}

#define QUEUE_REPLY_BYTES_MAX 512  /* a remote reply or an error kept for logs and bounces */
#define QUEUE_TARGETS_MAX     16   /* addresses one connection tries, best first */

enum rcpt_state {
    RS_PENDING = 0,               /* to be delivered */
    RS_ACTIVE,                    /* in a job being delivered */
    RS_FAILED,                    /* failed for good: waits for its bounce */
    RS_WRITING,                   /* an outcome is being written to the spool */
    RS_DONE,                      /* outcome durable (or message deleted) */
};

struct qseg;
struct qdest;
struct oconn;

struct qrcpt {
    const char *addr;             /* inside the message's envelope copy; NUL terminated */
    uint16_t addr_len;
    uint8_t state;                /* enum rcpt_state */
    bool delivered;               /* outcome: delivered (else failed) */
    char status[12];              /* failed: RFC 3463 code for the bounce */
    char *reason;                 /* failed: the reply or error (malloc'd), else NULL */
    char *remote;                 /* failed: the host that said so, NULL if none */
};

struct qmsg {
    uint64_t qid;
    struct qseg *seg;             /* segment holding the content */
    uint64_t size;                /* content bytes */
    int64_t arrival_ms;           /* wall clock when accepted (envelope "time") */
    char *env;                    /* envelope copy; rcpt addresses point into it */
    uint32_t env_len;
    const char *from;             /* envelope sender inside env, "" for <> */
    bool smtputf8;                /* SMTPUTF8 was used */
    bool body8;                   /* BODY=8BITMIME */
    struct spool_chunk *chunks;   /* content pieces in seg */
    uint32_t chunk_count;
    struct qrcpt *rcpts;
    uint16_t rcpt_count;
    uint16_t rcpt_open;           /* recipients not RS_DONE */
    uint16_t jobs;                /* jobs alive for this message */
    uint16_t writes;              /* outcome records in flight */
    uint32_t attempts;            /* delivery rounds so far */
    bool held;                    /* ringctl hold */
    bool deleted;                 /* ringctl delete: finish once nothing is in flight */
    uint16_t bouncing;            /* bounces being built or written */
    bool queued;                  /* in a round (jobs exist) */
    uint64_t next_ms;             /* monotonic time of the next round; 0 = none scheduled */
    char last[QUEUE_REPLY_BYTES_MAX]; /* last temporary error, for ringctl queue */
    struct engine_timer timer;    /* next round */
    struct qmsg *hnext;           /* hash chain */
    struct qmsg *prev, *next;     /* list of every message of the worker */
};

/* One delivery: some recipients of one message, for one destination. */
struct qjob {
    struct qmsg *m;
    struct qdest *d;
    uint16_t *idx;                /* recipient indexes in m */
    uint16_t count;
    struct qjob *next;            /* in the destination's ready list */
};

enum dest_state { DS_IDLE, DS_RESOLVING, DS_READY };

struct qdest {
    char key[DNS_NAME_BYTES_MAX]; /* lower-case domain, or "" for the smarthost */
    enum dest_state state;
    uint64_t expires_ms;          /* targets valid until (monotonic) */
    unsigned target_count;
    struct sockaddr_storage targets[QUEUE_TARGETS_MAX]; /* port set, best first */
    char target_names[QUEUE_TARGETS_MAX][DNS_NAME_BYTES_MAX]; /* host names: for logs, and
                                     the name a verified TLS certificate must carry */
    unsigned next_target;         /* rotates the start among equal preferences */
    struct qjob *ready_head, *ready_tail;
    uint32_t ready_count;
    uint32_t conns;               /* connections open or opening (idle ones included) */
    struct oconn *idle;           /* connections waiting for a job (net/smtp_client.c) */
    uint32_t fails;               /* consecutive failures: drives its backoff */
    uint64_t retry_ms;            /* backed off until (monotonic); 0 = not */
    char last[QUEUE_REPLY_BYTES_MAX]; /* why it failed last */
    struct qdest *hnext;          /* hash chain */
};

/* Per recipient result of a transaction, filled by the client. */
enum job_rcpt_result { JR_NONE = 0, JR_OK, JR_TEMP, JR_PERM };

/* queue_job_take - the next job for a connection to d, or NULL (the connection quits). */
struct qjob *queue_job_take(struct worker *w, struct qdest *d);

/* queue_job_done - a connection is finished with job j: res[i] and reply[i] for each of its
 * recipients (reply: the text to log and, for JR_PERM, to bounce with); remote = the host. */
void queue_job_done(struct worker *w, struct qjob *j, const uint8_t *res,
                    const char *const *reply, const char *remote);

/* queue_job_requeue - a connection gives j back untried: first in line again. */
void queue_job_requeue(struct worker *w, struct qjob *j);

/* queue_dest_failed - a connection to d could not deliver anything (connect refused, timed
 * out, 4xx/5xx greeting or EHLO): why, and whether it is permanent. */
void queue_dest_failed(struct worker *w, struct qdest *d, const char *why, bool permanent);

/* queue_conn_gone - a connection to d ended (after queue_job_done / queue_dest_failed). */
void queue_conn_gone(struct worker *w, struct qdest *d);

/* smtp_client_resume - give d's next job to one of its idle connections; false if none. */
bool smtp_client_resume(struct worker *w, struct qdest *d);

/* smtp_client_open - start a connection to d (its targets are resolved). */
void smtp_client_open(struct worker *w, struct qdest *d);

/* smtp_client_init / fini / busy / stop / complete - the connection table of a worker. */
int smtp_client_init(struct worker *w);
void smtp_client_fini(struct worker *w);
bool smtp_client_busy(struct worker *w);
void smtp_client_stop(struct worker *w, bool force);
void smtp_client_complete(struct worker *w, enum engine_op op, uint32_t slot, uint32_t gen,
                          int res);

/* queue_seg_fd - descriptor to read message m's content from. */
int queue_seg_fd(const struct qmsg *m);

#endif
