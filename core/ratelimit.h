/*
 * ratelimit.h - the hourly limits per login and per client address ([policy]
 * user_hourly_messages, user_hourly_recipients, ip_hourly_messages over rate_window), and the
 * once-per-interval claim of the relaying notice, in one process-wide table that every worker
 * thread updates with compare-and-swap (see core/ratelimit.c for the design and why it is
 * exact).
 *
 * WIRING (net/smtp_commands.c); rl = ratelimit_shared(), now_ms = engine_now_ms():
 *   MAIL  last in check_mail (after 530, the parse, policy_sender and the spool-space check,
 *         so that nothing refused for another reason costs a token):
 *           hit = ratelimit_mail(rl, cfg, c->authenticated ? c->login : NULL, &c->peer.sa,
 *                                now_ms);
 *           if (hit) -> reply ratelimit_reply(hit, cfg, buf, sizeof(buf)) (451 4.7.1, the
 *                       reply names the limit: ratelimit_hit_name(hit)), count and log
 *                       MSG_RATE_LIMITED (event=rejected reason=rate_limited reply=...).
 *         A check that returns true is always followed by its proceed, so taking here is
 *         taking for the MAIL that gets its 250.
 *   RCPT  last in check_rcpt (after the 452 4.5.3 beyond max_recipients, the parse and the
 *         relay check, so that a refused recipient never costs a token):
 *           hit = ratelimit_rcpt(rl, cfg, c->authenticated ? c->login : NULL, now_ms);
 *           if (hit) -> 451 4.7.1 as above, count RCPT_RATE_LIMITED.
 *   After the 250 of DATA/BDAT LAST, for a transaction whose policy_result.notify was set:
 *           notify_relaying() (core/notify.c), which makes the ratelimit_claim_once() of
 *           (login, domain) for notify_interval itself; the session claims nothing.
 *   Tokens are not given back when a transaction later fails (RSET, 552, spool error): a
 *   MAIL or RCPT that got its 250 is an attempt, as Postfix's anvil counts them.
 */
#ifndef RR_RATELIMIT_H
#define RR_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/config.h"

#define RATELIMIT_ENTRIES_LOG2   17    /* the shared table: 2^17 keys (2 MiB) */
#define RATELIMIT_WAYS           8     /* entries a key may live in (one bucket, 128 bytes) */
#define RATELIMIT_LOCKS          256   /* insert locks, striped over the buckets */
#define RATELIMIT_CAS_TRIES_MAX  64    /* compare-and-swap attempts before giving up */
#define RATELIMIT_NAME_BYTES_MAX 255   /* login or domain bytes that go into a key */
#define RATELIMIT_REPLY_BYTES_MAX 200  /* ratelimit_reply() */

/* What a key counts. Part of the hashed key: the same login counts messages and recipients
 * in two entries. */
enum ratelimit_kind {
    RATELIMIT_KIND_USER_MESSAGES,
    RATELIMIT_KIND_USER_RECIPIENTS,
    RATELIMIT_KIND_IP_MESSAGES,
    RATELIMIT_KIND_NOTICE,        /* ratelimit_claim_once() */
};

/* The limit a MAIL or RCPT ran into; 0 = none. */
enum ratelimit_hit {
    RATELIMIT_OK = 0,
    RATELIMIT_USER_MESSAGES,      /* user_hourly_messages */
    RATELIMIT_USER_RECIPIENTS,    /* user_hourly_recipients */
    RATELIMIT_IP_MESSAGES,        /* ip_hourly_messages */
};

struct ratelimit;

/* Counters, for tests and stats: what the bounded design had to give up. */
struct ratelimit_stats {
    uint64_t inserts;             /* keys that took an entry */
    uint64_t evictions_live;      /* entries taken from a key whose state was still live */
    uint64_t contended;           /* operations that ran out of CAS tries (refused) */
};

/* ratelimit_shared - the process-wide table, made at the first call (thread-safe). Never
 * NULL (out of memory is fatal, core/alloc.h). Its state survives reloads: only the limits
 * are read from the configuration at each call. */
struct ratelimit *ratelimit_shared(void);

/* ratelimit_new - a table of 2^entries_log2 entries (at least RATELIMIT_WAYS), for tests;
 * ratelimit_free() releases it. */
struct ratelimit *ratelimit_new(unsigned entries_log2);

/* ratelimit_free - release a table from ratelimit_new(); no thread may be using it. */
void ratelimit_free(struct ratelimit *rl);

/*
 * ratelimit_mail - a MAIL: one message for login (user_hourly_messages; skipped when login
 * is NULL) and one for the client address (ip_hourly_messages; an IPv6 client counts by its
 * /64, a v4-mapped one as IPv4; skipped when peer is NULL). All or nothing: when the second
 * limit refuses, the first is given back. 0 limits are unlimited. Any thread.
 */
enum ratelimit_hit ratelimit_mail(struct ratelimit *rl, const struct rr_config *cfg,
                                  const char *login, const struct sockaddr *peer,
                                  uint64_t now_ms);

/* ratelimit_rcpt - a RCPT: one recipient for login (user_hourly_recipients); RATELIMIT_OK
 * for a NULL login. Any thread. */
enum ratelimit_hit ratelimit_rcpt(struct ratelimit *rl, const struct rr_config *cfg,
                                  const char *login, uint64_t now_ms);

/* ratelimit_hit_name - "user_hourly_messages" and so on (the key that set the limit). */
const char *ratelimit_hit_name(enum ratelimit_hit hit);

/* ratelimit_reply - the reply for hit: "451 4.7.1 Rate limit user_hourly_messages (100 per
 * 1h) exceeded, try again later", into buf (RATELIMIT_REPLY_BYTES_MAX + 1 suffice);
 * returns buf. */
const char *ratelimit_reply(enum ratelimit_hit hit, const struct rr_config *cfg, char *buf,
                            size_t size);

/*
 * ratelimit_claim_once - whether this caller is the first to claim (login, domain) in the
 * last interval_ms: true at most once per interval across all threads. login and domain
 * are compared without ASCII case. The claim is made (and the interval starts) when true is
 * returned. For the relaying notice: one per (login, sender domain) per notify_interval.
 */
bool ratelimit_claim_once(struct ratelimit *rl, const char *login, const char *domain,
                          uint64_t now_ms, uint64_t interval_ms);

/*
 * The primitives the calls above are made of, for other limits. key is len bytes (kind is
 * hashed in with it). take: one token of a bucket of limit tokens that fills up again over
 * window_ms; true when granted. give_back: return one token taken earlier (never beyond
 * full). claim: as ratelimit_claim_once().
 */
bool ratelimit_take(struct ratelimit *rl, enum ratelimit_kind kind, const void *key,
                    size_t len, uint32_t limit, uint64_t window_ms, uint64_t now_ms);
void ratelimit_give_back(struct ratelimit *rl, enum ratelimit_kind kind, const void *key,
                         size_t len, uint32_t limit, uint64_t window_ms, uint64_t now_ms);
bool ratelimit_claim(struct ratelimit *rl, enum ratelimit_kind kind, const void *key,
                     size_t len, uint64_t now_ms, uint64_t interval_ms);

/* ratelimit_stats - the counters so far (relaxed reads). */
void ratelimit_stats(const struct ratelimit *rl, struct ratelimit_stats *out);

#endif
