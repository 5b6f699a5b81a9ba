/*
 * metrics.h - counters kept per worker thread and summed when /metrics is read.
 *
 * Each worker owns one struct metrics, on cache lines of its own, and is its only writer:
 * an increment is a plain load and store (relaxed atomics), never a locked instruction, and
 * no two workers touch the same line. Readers (the /metrics responder, ringctl stats) add the
 * shards up with relaxed loads; a sum may be a few events behind, never torn.
 *
 * Process-wide tables keep their own counters and metrics_render() reads them as it renders:
 * the hourly limits (core/ratelimit.h) and the per-IP connection limits (core/iplimit.h,
 * which reads the BPF programs' counters when they enforce).
 */
#ifndef RR_METRICS_H
#define RR_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/alloc.h"
#include "core/config.h"

/* Why a message (MAIL or DATA stage) was refused: ringrelay_messages_rejected_total{reason}. */
#define METRICS_MSG_REASONS(X) \
    X(MSG_AUTH_REQUIRED, "auth_required") \
    X(MSG_BAD_SENDER,    "bad_sender") \
    X(MSG_NOT_OWNED,     "not_owned") \
    X(MSG_RELAYING_REFUSED, "relaying_refused") \
    X(MSG_RATE_LIMITED,  "rate_limited") \
    X(MSG_NO_RECIPIENTS, "no_recipients") \
    X(MSG_SIZE,          "size") \
    X(MSG_BARE_EOL,      "bare_line_ending") \
    X(MSG_NUL,           "nul") \
    X(MSG_LINE_TOO_LONG, "line_too_long") \
    X(MSG_SPOOL_FULL,    "spool_full") \
    X(MSG_SPOOL_ERROR,   "spool_error") \
    X(MSG_ABORTED,       "aborted")

/* Why a recipient was refused: ringrelay_recipients_rejected_total{reason}. */
#define METRICS_RCPT_REASONS(X) \
    X(RCPT_RELAY_DENIED,  "relay_denied") \
    X(RCPT_TOO_MANY,      "too_many_recipients") \
    X(RCPT_RATE_LIMITED,  "rate_limited") \
    X(RCPT_BAD_ADDRESS,   "bad_address")

/* Session-level protocol faults: ringrelay_protocol_errors_total{reason}. */
#define METRICS_PROTO_REASONS(X) \
    X(PROTO_UNKNOWN_COMMAND, "unknown_command") \
    X(PROTO_SYNTAX,          "syntax") \
    X(PROTO_SEQUENCE,        "bad_sequence") \
    X(PROTO_LINE_TOO_LONG,   "line_too_long") \
    X(PROTO_BAD_BYTES,       "bad_bytes") \
    X(PROTO_PIPELINING,      "improper_pipelining") \
    X(PROTO_PREGREET,        "pregreet") \
    X(PROTO_TIMEOUT,         "timeout") \
    X(PROTO_SLOW,            "too_slow") \
    X(PROTO_TOO_MANY_ERRORS, "too_many_errors") \
    X(PROTO_CONN_LIMIT,      "connection_limit") \
    X(PROTO_TLS,             "tls_error")

/* AUTH outcomes: ringrelay_auth_total{result}. */
#define METRICS_AUTH_RESULTS(X) \
    X(AUTHR_SUCCESS,   "success") \
    X(AUTHR_FAILURE,   "failure") \
    X(AUTHR_MALFORMED, "malformed") \
    X(AUTHR_CANCELLED, "cancelled") \
    X(AUTHR_REFUSED,   "refused") \
    X(AUTHR_ERROR,     "error")

/* Inbound TLS handshakes: ringrelay_tls_handshakes_total{result}; outbound STARTTLS:
 * ringrelay_relay_tls_total{result}. */
#define METRICS_TLS_RESULTS(X) \
    X(TLSR_SUCCESS,  "success") \
    X(TLSR_RESUMED,  "resumed") \
    X(TLSR_FAILURE,  "failure") \
    X(TLSR_TIMEOUT,  "timeout")

#define METRICS_ENUM(id, name) id,
enum metrics_msg_reason   { METRICS_MSG_REASONS(METRICS_ENUM) MSG_REASON_COUNT };
enum metrics_rcpt_reason  { METRICS_RCPT_REASONS(METRICS_ENUM) RCPT_REASON_COUNT };
enum metrics_proto_reason { METRICS_PROTO_REASONS(METRICS_ENUM) PROTO_REASON_COUNT };
enum metrics_auth_result  { METRICS_AUTH_RESULTS(METRICS_ENUM) AUTHR_COUNT };
enum metrics_tls_result   { METRICS_TLS_RESULTS(METRICS_ENUM) TLSR_COUNT };
#undef METRICS_ENUM

extern const char *const metrics_msg_reason_name[MSG_REASON_COUNT];
extern const char *const metrics_rcpt_reason_name[RCPT_REASON_COUNT];
extern const char *const metrics_proto_reason_name[PROTO_REASON_COUNT];
extern const char *const metrics_auth_result_name[AUTHR_COUNT];
extern const char *const metrics_tls_result_name[TLSR_COUNT];

/* Latency histogram bucket upper bounds, seconds (Prometheus "le"); +Inf is implicit. */
#define METRICS_LATENCY_BUCKETS 14
extern const double metrics_latency_bounds[METRICS_LATENCY_BUCKETS];

struct metrics_hist {
    uint64_t bucket[METRICS_LATENCY_BUCKETS + 1]; /* non-cumulative counts; last is +Inf */
    uint64_t count;               /* observations */
    uint64_t sum_ns;              /* sum of observations, nanoseconds */
};

struct metrics {
    uint64_t connections_total[CONFIG_LISTENERS_MAX]; /* accepted, by listener index */
    uint64_t connections_active;  /* gauge: sessions open on this worker */
    uint64_t messages_accepted;   /* 250 after DATA / BDAT LAST */
    uint64_t bytes_accepted;      /* stored message bytes */
    uint64_t recipients_accepted; /* recipients of accepted messages */
    uint64_t messages_rejected[MSG_REASON_COUNT];
    uint64_t recipients_rejected[RCPT_REASON_COUNT];
    uint64_t protocol_errors[PROTO_REASON_COUNT];
    uint64_t spool_fsyncs;        /* fdatasync calls on spool segments */
    uint64_t spool_writes;        /* spool write operations */
    uint64_t auth[AUTHR_COUNT];   /* AUTH exchanges, by outcome */
    uint64_t auth_delays;         /* AUTH replies held back for earlier failures */
    uint64_t tls_handshakes[TLSR_COUNT]; /* inbound TLS handshakes, by outcome */
    uint64_t relay_tls[TLSR_COUNT]; /* outbound STARTTLS handshakes, by outcome */
    uint64_t deliveries[3];       /* delivery attempts: delivered, deferred, bounced */
    uint64_t relay_notifications; /* relaying notices generated */
    uint64_t queue_size;          /* gauge: messages this worker holds (wraps per shard; the
                                     sum over the shards is right) */
    struct metrics_hist accept_latency; /* end of DATA to the 250 */
    struct metrics_hist delivery_latency; /* accepted to the next hop's 250, slow buckets */
    /* metrics_sum() adds every word up to the end of delivery_latency: new fields go above. */
} __attribute__((aligned(RR_CACHELINE)));

/* metrics_add - add n to a counter this thread owns. */
static inline void metrics_add(uint64_t *c, uint64_t n)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/* metrics_sub - subtract n from a gauge this thread owns. */
static inline void metrics_sub(uint64_t *c, uint64_t n)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) - n, __ATOMIC_RELAXED);
}

/* Delivery latency bucket bounds, seconds. */
extern const double metrics_delivery_bounds[METRICS_LATENCY_BUCKETS];

/* metrics_observe - record one latency observation of ns nanoseconds. */
void metrics_observe(struct metrics_hist *h, uint64_t ns);

/* metrics_observe_delivery - the same with the delivery latency buckets. */
void metrics_observe_delivery(struct metrics_hist *h, uint64_t ns);

/* metrics_sum - add every shard of shards[0..count) into out (zeroed first). */
void metrics_sum(struct metrics *out, struct metrics *const *shards, unsigned count);

/*
 * metrics_render - the Prometheus text exposition (format 0.0.4) of sum into buf (at most
 * cap bytes). listener names label connections_total.
 * Returns the length written; output is cut (never overrun) when cap is too small.
 */
size_t metrics_render(char *buf, size_t cap, const struct metrics *sum,
                      const struct rr_config *cfg);

#endif
