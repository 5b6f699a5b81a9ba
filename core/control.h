/*
 * control.h - the control socket: ringctl talks to the running daemon through it.
 *
 * Served by the main thread (never by a worker): one request line per connection, a text
 * answer, then the daemon closes. Requests: "stats".
 */
#ifndef RR_CONTROL_H
#define RR_CONTROL_H

#include "core/config.h"

#define CONTROL_REQUEST_BYTES_MAX 512
#define CONTROL_TIMEOUT_MS        1000  /* a client must send its request this fast */

/* control_open - listen on cfg->control_socket (its directory is created); fd or -errno. */
int control_open(const struct rr_config *cfg);

/* control_serve - accept and answer one pending client of listening socket fd. */
void control_serve(int fd, const struct rr_config *cfg, uint64_t started_ms);

/* control_close - stop listening and remove the socket file. */
void control_close(int fd, const struct rr_config *cfg);

#endif
