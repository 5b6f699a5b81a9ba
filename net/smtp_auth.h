/*
 * smtp_auth.h - SMTP AUTH (RFC 4954) in the inbound session: the SASL exchange, the password
 * check lent to the auth pool, the verdict, and the brakes on password guessing.
 *
 * The session side (smtp_commands.c, smtp_server.c) calls the smtp_auth_* session functions;
 * the engine calls smtp_auth_worker_done() when its auth-pool eventfd fires (OP_AUTH_DONE).
 * Private to net/ and the engine's dispatcher.
 */
#ifndef RR_SMTP_AUTH_H
#define RR_SMTP_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "core/engine.h"
#include "core/metrics.h"
#include "net/sasl.h"

struct conn;

/* Longest AUTH line kept when it arrives split across input buffers, CRLF included:
 * "AUTH", a mechanism name, the longest response PLAIN or LOGIN can use. A split line beyond
 * it cannot hold valid credentials and is answered 500 5.5.6 without being kept. */
#define SMTP_AUTH_LINE_BYTES     (32 + SASL_B64_ENCODED_BYTES(SASL_PLAIN_BYTES_MAX))
/* Longest AUTH line read at all, CRLF included (RFC 4954 4: responses of 12288 octets). */
#define SMTP_AUTH_LINE_BYTES_MAX (SASL_LINE_BYTES_MAX + 2)

/* Brakes on guessing, per worker (see smtp_auth.c). */
#define AUTH_BRAKE_BUCKETS        256    /* sets of the per-worker failure table (power of 2) */
#define AUTH_BRAKE_WAYS           4      /* entries per set */
#define AUTH_BRAKE_FREE_FAILURES  3      /* recent failures of an address or login before its
                                            AUTH replies are held back */
#define AUTH_BRAKE_DELAY_MS_MIN   1000   /* the first hold; doubles with each further failure */
#define AUTH_BRAKE_DELAY_MS_MAX   15000  /* the longest hold */
#define AUTH_BRAKE_DECAY_MS       60000  /* one failure is forgotten per minute */

/* smtp_auth_available - the listener offers AUTH (auth = optional | required) and a password
 * backend is configured. Independent of TLS. */
bool smtp_auth_available(const struct conn *c);

/* smtp_auth_offered - EHLO advertises AUTH: available, and TLS is up or [auth] plaintext. */
bool smtp_auth_offered(const struct conn *c);

/* smtp_auth_start - AUTH mech [initial]: run the exchange's first step (the caller checked
 * the command: in sequence, mech known, encryption as required). initial is NULL when the
 * command had no initial response. Replies 334, or ends in a verdict or a refusal. */
void smtp_auth_start(struct conn *c, enum sasl_mech mech, const char *initial, size_t len);

/* smtp_auth_response - in ST_AUTH: the client's response line (CRLF removed). */
void smtp_auth_response(struct conn *c, const char *line, size_t len);

/* smtp_auth_refused - an AUTH command refused before any exchange (503, 538, 501, 504, 502):
 * reply, log (event=rejected and event=auth, both with reason), count in
 * ringrelay_auth_total{result}; with proto >= 0 also as that protocol error. */
void smtp_auth_refused(struct conn *c, const char *reply, const char *reason,
                       enum metrics_auth_result result, int proto);

/* smtp_auth_line_long - whether the line starting with held[0..held_len) then
 * data[0..len) is an AUTH line (a response in ST_AUTH, or an AUTH command on a listener that
 * offers it), which may be longer than 512 octets: up to SMTP_AUTH_LINE_BYTES_MAX in one
 * buffer, SMTP_AUTH_LINE_BYTES when split. */
bool smtp_auth_line_long(const struct conn *c, const char *held, size_t held_len,
                         const char *data, size_t len);

/* smtp_auth_refuse_line - the input loop refuses an AUTH line (too long, bare LF): end any
 * exchange, reply, log, count as malformed and as protocol error proto. */
void smtp_auth_refuse_line(struct conn *c, const char *reply, enum metrics_proto_reason proto);

/* smtp_auth_forget - STARTTLS (RFC 3207 4.2): forget the login. The failure count stays:
 * it is what the server learned, not what the client told. */
void smtp_auth_forget(struct conn *c);

/* smtp_auth_release - the session is being freed (conn_reap): drop the exchange and any
 * long-line buffer. Never while auth_pending. */
void smtp_auth_release(struct conn *c);

/* smtp_auth_worker_done - the worker's auth-pool eventfd fired: take every check that came
 * back and give each its session's verdict (engine, OP_AUTH_DONE). */
void smtp_auth_worker_done(struct worker *w);

#endif
