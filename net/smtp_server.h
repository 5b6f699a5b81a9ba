/*
 * smtp_server.h - the inbound SMTP sessions of a worker (RFC 5321 server side).
 *
 * The engine calls in with accepted sockets and with the completions and timers of
 * sessions; everything else about a session is private to net/smtp_*.c.
 */
#ifndef RR_SMTP_SERVER_H
#define RR_SMTP_SERVER_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/engine.h"

/* smtp_server_init - the session table of a worker. 0 or -errno. */
int smtp_server_init(struct worker *w);

/* smtp_server_fini - release what smtp_server_init allocated (after the worker's loop). */
void smtp_server_fini(struct worker *w);

/* smtp_server_accept - a new connection on listener index li. */
void smtp_server_accept(struct worker *w, unsigned li, int fd);

/* smtp_server_complete - OP_RECV, OP_SEND, OP_SHUTDOWN, OP_GREET_TIMER completions. */
void smtp_server_complete(struct worker *w, enum engine_op op, uint32_t slot, uint32_t gen,
                          const struct io_uring_cqe *cqe);

/* smtp_server_timer - a session's wheel timer fired. */
void smtp_server_timer(struct worker *w, struct engine_timer *t);

/* smtp_server_buffers_back - end of a loop pass: reap sessions that closed while waiting,
 * and when resources came back (receive buffers or spool write slots were freed), resume
 * the sessions that waited for them. */
void smtp_server_buffers_back(struct worker *w, bool resources);

/* smtp_server_stop - SIGTERM: idle sessions get 421 now, busy ones after their message. */
void smtp_server_stop(struct worker *w);

/* smtp_server_stop_now - the grace period is over: close every session. */
void smtp_server_stop_now(struct worker *w);

#endif
